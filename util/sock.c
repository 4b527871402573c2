/* sock.c - stream sockets; see sock.h. */
#include "util/sock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/util.h"

static int activated_take_addr(const struct sockaddr *sa, socklen_t len);
static bool listen_fd(int fd, SockListenerVec *out, Error **errp);

/* ---- unix ------------------------------------------------------------- */

static bool unix_fill(struct sockaddr_un *sun, const char *path,
                      Error **errp)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (*path == '\0') {
        error_setg(errp, "Empty UNIX socket path");
        return false;
    }
    if (strlen(path) >= sizeof(sun->sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return false;
    }
    strcpy(sun->sun_path, path);
    return true;
}

static const char *sock_file_kind(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "a regular file";
    case S_IFDIR:
        return "a directory";
    case S_IFLNK:
        return "a symbolic link";
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
    case S_IFBLK:
        return "a device";
    default:
        return "not a socket";
    }
}

/* Is someone listening on the socket file at sun?  0: no (a stale
 * socket, or gone), -EADDRINUSE: yes, other -errno: cannot tell. */
static int unix_probe(const struct sockaddr_un *sun)
{
    CLEANUP_CLOSE int fd = socket(AF_UNIX,
                                  SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                  0);

    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
        return -EADDRINUSE;
    }
    switch (errno) {
    case ECONNREFUSED:        /* bound once, nobody listens: stale */
    case ENOENT:              /* removed meanwhile */
        return 0;
    case EAGAIN:              /* a full backlog: alive */
    case EPROTOTYPE:          /* a live datagram/seqpacket socket */
        return -EADDRINUSE;
    default:
        return -errno;
    }
}

/* Make way for binding sun: only a stale socket is removed. */
static bool unix_clear_path(const struct sockaddr_un *sun, Error **errp)
{
    const char *path = sun->sun_path;
    struct stat st;
    int rc;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) {
            return true;
        }
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        error_setg(errp, "Failed to bind socket to %s: %s is there, not a "
                   "socket (only a stale socket is replaced)", path,
                   sock_file_kind(st.st_mode));
        return false;
    }
    rc = unix_probe(sun);
    if (rc == -EADDRINUSE) {
        error_setg_errno(errp, EADDRINUSE, "Failed to bind socket to %s "
                         "(a server is listening on it)", path);
        return false;
    }
    if (rc < 0) {
        error_setg_errno(errp, -rc, "Failed to bind socket to %s (cannot "
                         "tell whether the socket there is in use)", path);
        return false;
    }
    /* Nobody listens: a leftover of an earlier run, as QEMU would
     * replace it.  (Someone binding it between the probe and here is a
     * race we accept; bind then fails or they lose the name.) */
    if (unlink(path) < 0 && errno != ENOENT) {
        error_setg_errno(errp, errno, "Failed to remove stale socket %s",
                         path);
        return false;
    }
    return true;
}

/* The path to remember for removal at close: absolute, since the
 * daemon may change directory (--daemonize) before it exits. */
static char *unix_abs_path(const char *path)
{
    char cwd[PATH_MAX];

    if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL) {
        return xstrdup(path);
    }
    return xasprintf("%s/%s", cwd, path);
}

static bool listen_unix(const char *path, SockListenerVec *out,
                        Error **errp)
{
    struct sockaddr_un sun;
    CLEANUP_CLOSE int fd = -1;
    SockListener l = { .fd = -1 };
    struct stat st;
    int passed;

    if (!unix_fill(&sun, path, errp)) {
        return false;
    }
    /* Socket activation: the supervisor bound this path for us. */
    passed = activated_take_addr((struct sockaddr *)&sun, sizeof(sun));
    if (passed >= 0) {
        if (!listen_fd(passed, out, errp)) {
            close(passed);
            return false;
        }
        return true;
    }
    if (!unix_clear_path(&sun, errp)) {
        return false;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return false;
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        return false;
    }
    if (lstat(path, &st) < 0 || listen(fd, SOCK_BACKLOG) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket %s",
                         path);
        unlink(path);
        return false;
    }
    l.fd = TAKE_FD(fd);
    l.unix_path = unix_abs_path(path);
    l.dev = st.st_dev;
    l.ino = st.st_ino;
    SockListenerVec_append(out, l);
    return true;
}

/* ---- inet ------------------------------------------------------------- */

static void sa_set_port(struct sockaddr *sa, in_port_t port)
{
    if (sa->sa_family == AF_INET) {
        ((struct sockaddr_in *)sa)->sin_port = port;
    } else if (sa->sa_family == AF_INET6) {
        ((struct sockaddr_in6 *)sa)->sin6_port = port;
    }
}

static in_port_t sa_get_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        return ((const struct sockaddr_in *)sa)->sin_port;
    }
    if (sa->sa_family == AF_INET6) {
        return ((const struct sockaddr_in6 *)sa)->sin6_port;
    }
    return 0;
}

/* Bind and listen on one address; the socket or -errno. */
static int listen_one(const struct addrinfo *ai, in_port_t port)
{
    struct sockaddr_storage ss;
    CLEANUP_CLOSE int fd = -1;
    int one = 1;

    if (ai->ai_addrlen > sizeof(ss)) {
        return -EAFNOSUPPORT;
    }
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (port != 0) {
        sa_set_port((struct sockaddr *)&ss, port);
    }
    fd = socket(ai->ai_family,
                ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
        /* "::" and "0.0.0.0" are two listeners, not one dual socket. */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) < 0 ||
        listen(fd, SOCK_BACKLOG) < 0) {
        return -errno;
    }
    return TAKE_FD(fd);
}

static bool listen_inet(const char *host, const char *port,
                        SockListenerVec *out, Error **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res = NULL;
    in_port_t chosen = 0;
    size_t first = out->len;
    int rc, err = 0;

    if (port == NULL || *port == '\0') {
        error_setg(errp, "No port given for %s", host ? host : "");
        return false;
    }
    rc = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port,
                   rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return false;
    }
    /* Socket activation: addresses the supervisor bound for us are
     * taken as they are, and then nothing else is bound. */
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int passed = activated_take_addr(ai->ai_addr, ai->ai_addrlen);

        if (passed >= 0 && !listen_fd(passed, out, errp)) {
            close(passed);
            freeaddrinfo(res);
            return false;
        }
    }
    if (out->len > first) {
        freeaddrinfo(res);
        return true;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        SockListener l = { .is_inet = true };
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        l.fd = listen_one(ai, chosen);
        if (l.fd < 0) {
            err = -l.fd;
            continue;
        }
        /* Port 0: the kernel picked one; the other addresses share it. */
        if (chosen == 0 && sa_get_port(ai->ai_addr) == 0 &&
            getsockname(l.fd, (struct sockaddr *)&ss, &len) == 0) {
            chosen = sa_get_port((struct sockaddr *)&ss);
        }
        SockListenerVec_append(out, l);
    }
    freeaddrinfo(res);
    if (out->len == first) {
        error_setg_errno(errp, err ? err : EADDRNOTAVAIL,
                         "Failed to bind socket to %s:%s",
                         host ? host : "", port);
        return false;
    }
    return true;
}

/* ---- descriptors ------------------------------------------------------ */

bool sock_check_listening(int fd, Error **errp)
{
    struct stat st;
    int val = 0;
    socklen_t len = sizeof(val);

    if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
        error_setg(errp, "File descriptor %d is not open", fd);
        return false;
    }
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        error_setg(errp, "File descriptor %d is not a socket", fd);
        return false;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &val, &len) < 0 ||
        val != SOCK_STREAM) {
        error_setg(errp, "File descriptor %d is not a stream socket", fd);
        return false;
    }
    len = sizeof(val);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) < 0 || !val) {
        error_setg(errp, "File descriptor %d is a socket that is not "
                   "listening", fd);
        return false;
    }
    return true;
}

static bool listen_fd(int fd, SockListenerVec *out, Error **errp)
{
    SockListener l = { .fd = fd };
    int domain = 0, fl;
    socklen_t len = sizeof(domain);

    if (!sock_check_listening(fd, errp)) {
        return false;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0) {
        l.is_inet = domain == AF_INET || domain == AF_INET6;
    }
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        error_setg_errno(errp, errno, "File descriptor %d", fd);
        return false;
    }
    SockListenerVec_append(out, l);
    return true;
}

/* ---- listening -------------------------------------------------------- */

bool sock_listen(const SockAddr *addr, SockListenerVec *out, Error **errp)
{
    switch (addr->type) {
    case SOCK_ADDR_UNIX:
        return listen_unix(addr->path, out, errp);
    case SOCK_ADDR_INET:
        return listen_inet(addr->host, addr->port, out, errp);
    case SOCK_ADDR_FD:
        return listen_fd(addr->fd, out, errp);
    }
    error_setg(errp, "Unknown socket address type %d", (int)addr->type);
    return false;
}

void sock_listener_close(SockListener *l)
{
    struct stat st;

    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (l->unix_path != NULL) {
        /* Remove the file only if it is still the socket we bound. */
        if (lstat(l->unix_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
            st.st_dev == l->dev && st.st_ino == l->ino) {
            unlink(l->unix_path);
        }
        free(l->unix_path);
        l->unix_path = NULL;
    }
}

void sock_listeners_close(SockListenerVec *v)
{
    for (size_t i = 0; i < v->len; i++) {
        sock_listener_close(&v->ptr[i]);
    }
    SockListenerVec_reset(v);
}

int sock_accept(const SockListener *l)
{
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int one = 1;

    if (fd < 0) {
        return -errno;
    }
    if (l->is_inet) {
        /* Requests and replies are small: never wait for Nagle. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

/* ---- connecting ------------------------------------------------------- */

/* connect() that gives up after timeout_ms (-1: the kernel's own), so
 * an address that drops packets does not hang us for minutes.  Returns
 * 0 or -errno; fd is blocking again on success. */
static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len,
                           int timeout_ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int flags = fcntl(fd, F_GETFL);
    int err = 0, rc;
    socklen_t errlen = sizeof(err);

    if (timeout_ms < 0 || flags < 0) {
        return connect(fd, sa, len) == 0 ? 0 : -errno;
    }
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS) {
            return -errno;
        }
        do {
            rc = poll(&pfd, 1, timeout_ms);
        } while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            return -ETIMEDOUT;
        }
        if (rc < 0) {
            return -errno;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0) {
            return -errno;
        }
        if (err) {
            return -err;
        }
    }
    fcntl(fd, F_SETFL, flags);
    return 0;
}

static int connect_unix(const char *path, Error **errp)
{
    struct sockaddr_un sun;
    CLEANUP_CLOSE int fd = -1;

    if (!unix_fill(&sun, path, errp)) {
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg_errno(errp, errno, "Failed to connect to '%s'", path);
        return -1;
    }
    return TAKE_FD(fd);
}

static int connect_inet(const char *host, const char *port, int timeout_ms,
                        Error **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res = NULL;
    int fd = -1, rc, err = 0, one = 1;

    if (host == NULL || *host == '\0' || port == NULL || *port == '\0') {
        error_setg(errp, "Connecting needs a host and a port, got '%s:%s'",
                   host ? host : "", port ? port : "");
        return -1;
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        error_setg(errp, "address resolution failed for %s:%s: %s", host,
                   port,
                   rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        rc = connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
        if (rc == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            break;
        }
        err = -rc;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, err ? err : EADDRNOTAVAIL,
                         "Failed to connect to %s:%s", host, port);
    }
    return fd;
}

int sock_connect(const SockAddr *addr, int timeout_ms, Error **errp)
{
    switch (addr->type) {
    case SOCK_ADDR_UNIX:
        return connect_unix(addr->path, errp);
    case SOCK_ADDR_INET:
        return connect_inet(addr->host, addr->port, timeout_ms, errp);
    case SOCK_ADDR_FD:
        break;
    }
    error_setg(errp, "Cannot connect to a socket address of type %d",
               (int)addr->type);
    return -1;
}

/* ---- inherited descriptors ------------------------------------------- */

/* The descriptors open when main() started (above stderr), not yet
 * taken.  Process-wide like the descriptor table it describes; only
 * the loop thread touches it. */
DEFINE_VECTOR_TYPE(SockFdVec, int);
static SockFdVec sock_inherited;

static void inherited_add(int fd, int skip)
{
    if (fd > STDERR_FILENO && fd != skip) {
        SockFdVec_append(&sock_inherited, fd);
    }
}

size_t sock_inherited_scan(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *de;

    SockFdVec_reset(&sock_inherited);
    if (dir != NULL) {
        while ((de = readdir(dir)) != NULL) {
            uint64_t n;

            if (parse_uint64(de->d_name, &n) && n <= INT_MAX) {
                inherited_add((int)n, dirfd(dir));
            }
        }
        closedir(dir);
    } else {
        /* No /proc: ask every number up to the limit (capped). */
        struct rlimit rl = { 0 };
        int max = 1024;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536) {
            max = (int)rl.rlim_cur;
        }
        for (int fd = STDERR_FILENO + 1; fd < max; fd++) {
            if (fcntl(fd, F_GETFD) >= 0) {
                inherited_add(fd, -1);
            }
        }
    }
    return sock_inherited.len;
}

bool sock_inherited_take(int fd, Error **errp)
{
    size_t i;

    if (fd < 0 || fcntl(fd, F_GETFD) < 0) {
        error_setg(errp, "File descriptor %d is not open", fd);
        return false;
    }
    for (i = 0; i < sock_inherited.len; i++) {
        if (sock_inherited.ptr[i] == fd) {
            break;
        }
    }
    if (i == sock_inherited.len) {
        error_setg(errp, "File descriptor %d belongs to blockd itself (it "
                   "was not inherited at start-up, or is already in use)",
                   fd);
        return false;
    }
    if (!sock_check_listening(fd, errp)) {
        return false;
    }
    SockFdVec_remove(&sock_inherited, i);
    return true;
}

/* ---- socket activation ------------------------------------------------ */

/* sd_listen_fds(3): passed descriptors start at 3. */
#define SOCK_LISTEN_FDS_START 3

typedef struct SockActivated {
    int fd;
    char *name;               /* LISTEN_FDNAMES entry, or "unknown" */
    bool taken;
} SockActivated;
DEFINE_VECTOR_TYPE(SockActivatedVec, SockActivated);
/* Loop thread only, like sock_inherited. */
static SockActivatedVec sock_activated;

size_t sock_activation_scan(void)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *fds_s = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    uint64_t pid, n;

    for (size_t i = 0; i < sock_activated.len; i++) {
        free(sock_activated.ptr[i].name);
    }
    SockActivatedVec_reset(&sock_activated);
    if (pid_s != NULL && fds_s != NULL && parse_uint64(pid_s, &pid) &&
        pid == (uint64_t)getpid() && parse_uint64(fds_s, &n) &&
        n <= 4096) {
        CLEANUP_FREE char *copy = xstrdup(names != NULL ? names : "");
        char *rest = copy;

        for (uint64_t i = 0; i < n; i++) {
            char *name = rest != NULL ? strsep(&rest, ":") : NULL;
            SockActivated a = {
                .fd = SOCK_LISTEN_FDS_START + (int)i,
                .name = xstrdup(name != NULL && *name ? name : "unknown"),
            };
            SockActivatedVec_append(&sock_activated, a);
        }
    }
    /* Not for anything we might start. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return sock_activated.len;
}

static int activated_take_at(size_t i, Error **errp)
{
    SockActivated *a = &sock_activated.ptr[i];

    if (!sock_inherited_take(a->fd, errp)) {
        error_prepend(errp, "Socket '%s' passed by socket activation: ",
                      a->name);
        return -1;
    }
    a->taken = true;
    return a->fd;
}

bool sock_activated_has(const char *name)
{
    for (size_t i = 0; i < sock_activated.len; i++) {
        if (!sock_activated.ptr[i].taken &&
            strcmp(sock_activated.ptr[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

int sock_activated_take(const char *name, Error **errp)
{
    for (size_t i = 0; i < sock_activated.len; i++) {
        if (!sock_activated.ptr[i].taken &&
            strcmp(sock_activated.ptr[i].name, name) == 0) {
            return activated_take_at(i, errp);
        }
    }
    error_setg(errp, "No socket named '%s' was passed by socket activation "
               "(LISTEN_FDNAMES)", name);
    return -1;
}

/* Whether two socket addresses are the same place: family, unix path,
 * or inet address and port. */
static bool sockaddr_same(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family) {
        return false;
    }
    switch (a->sa_family) {
    case AF_UNIX: {
        const struct sockaddr_un *ua = (const struct sockaddr_un *)a;
        const struct sockaddr_un *ub = (const struct sockaddr_un *)b;
        return ua->sun_path[0] != '\0' &&
               strncmp(ua->sun_path, ub->sun_path,
                       sizeof(ua->sun_path)) == 0;
    }
    case AF_INET: {
        const struct sockaddr_in *ia = (const struct sockaddr_in *)a;
        const struct sockaddr_in *ib = (const struct sockaddr_in *)b;
        return ia->sin_port == ib->sin_port &&
               ia->sin_addr.s_addr == ib->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *ia = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *ib = (const struct sockaddr_in6 *)b;
        return ia->sin6_port == ib->sin6_port &&
               memcmp(&ia->sin6_addr, &ib->sin6_addr,
                      sizeof(ia->sin6_addr)) == 0;
    }
    default:
        return false;
    }
}

/* An activated socket bound to sa (not taken yet): taken and returned,
 * else -1. */
static int activated_take_addr(const struct sockaddr *sa, socklen_t len)
{
    (void)len;
    for (size_t i = 0; i < sock_activated.len; i++) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);

        memset(&ss, 0, sizeof(ss));
        if (sock_activated.ptr[i].taken ||
            getsockname(sock_activated.ptr[i].fd, (struct sockaddr *)&ss,
                        &sslen) < 0 ||
            !sockaddr_same((struct sockaddr *)&ss, sa)) {
            continue;
        }
        return activated_take_at(i, NULL);
    }
    return -1;
}
