/* util.c - see util.h. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "blockd: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        oom(n);
    }
    return p;
}

void *xzalloc(size_t n)
{
    return xcalloc(1, n);
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

    if (p == NULL) {
        oom(nmemb * size);
    }
    return p;
}

void *xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);

    if (p == NULL) {
        oom(n);
    }
    return p;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);

    if (p == NULL) {
        oom(strlen(s));
    }
    return p;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);

    if (p == NULL) {
        oom(n);
    }
    return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;

    if (vasprintf(&s, fmt, ap) < 0) {
        oom(strlen(fmt));
    }
    return s;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

bool parse_uint64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

bool parse_int64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0' || *s == ' ' || *s == '+') {
        return false;
    }
    errno = 0;
    v = strtoll(s, &end, 0);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    double d;
    uint64_t mult = 1;
    unsigned long long whole;

    if (s == NULL || *s == '\0' || *s == '-' || *s == ' ' || *s == '+') {
        return false;
    }
    /* Integers are parsed exactly; only fractions go through double. */
    errno = 0;
    whole = strtoull(s, &end, 10);
    if (errno != 0 || end == s) {
        return false;
    }
    d = (double)whole;
    if (*end == '.') {
        const char *frac = end;
        d = strtod(s, &end);
        if (end == frac + 1) {
            return false;
        }
    }
    switch (*end) {
    case '\0':
        break;
    case 'b': case 'B': mult = 1; end++; break;
    case 'k': case 'K': mult = 1ULL << 10; end++; break;
    case 'm': case 'M': mult = 1ULL << 20; end++; break;
    case 'g': case 'G': mult = 1ULL << 30; end++; break;
    case 't': case 'T': mult = 1ULL << 40; end++; break;
    case 'p': case 'P': mult = 1ULL << 50; end++; break;
    case 'e': case 'E': mult = 1ULL << 60; end++; break;
    default:
        return false;
    }
    if (*end != '\0') {
        return false;
    }
    if (d == (double)whole) {
        if (whole > UINT64_MAX / mult) {
            return false;
        }
        *out = whole * mult;
        return true;
    }
    if (mult == 1) {
        return false;            /* fractional bytes make no sense */
    }
    d *= (double)mult;
    if (!(d < 18446744073709549568.0)) {
        return false;
    }
    *out = (uint64_t)d;
    return true;
}

bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int pidfile_write(const char *path, const char **what)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    char buf[32];
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int r;

    if (fd < 0) {
        *what = "Cannot open pid file";
        return -errno;
    }
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        *what = "Cannot lock pid file";
        r = -errno;
        close(fd);
        return r;
    }
    snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0) {
        r = -errno;
    } else {
        r = write_full(fd, buf, strlen(buf));
    }
    if (r < 0) {
        *what = "Failed to write pid file";
        close(fd);
        return r;
    }
    return 0;                /* fd stays open: it holds the lock */
}
