/* util.h - small helpers every module uses: allocation that cannot
 * fail silently, formatted strings, number parsing, byte order. */
#ifndef BLOCKD_UTIL_UTIL_H
#define BLOCKD_UTIL_UTIL_H

#include <endian.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
/* Alignment helpers; a must be a power of two. */
#define ALIGN_DOWN(n, a) ((n) & ~((__typeof__(n))(a) - 1))
#define ALIGN_UP(n, a) ALIGN_DOWN((n) + (a) - 1, (a))
#define IS_ALIGNED(n, a) (((n) & ((__typeof__(n))(a) - 1)) == 0)
#define IS_POWER_OF_2(n) ((n) != 0 && ((n) & ((n) - 1)) == 0)
#define container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))
#define UNUSED __attribute__((unused))

/* Allocation: abort() with a message on out-of-memory.  Memory is a
 * resource we size ourselves (request payloads are capped), so an
 * allocation failure is a bug or a machine in trouble. */
void *xmalloc(size_t n);
void *xzalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));
#define XNEW(type) ((type *)xzalloc(sizeof(type)))

/* Parse a whole string as a number; false on junk, overflow or empty. */
bool parse_uint64(const char *s, uint64_t *out);
bool parse_int64(const char *s, int64_t *out);
/* Parse a size with an optional suffix (k, M, G, T, P, E; powers of
 * 1024; "B" for bytes), as QEMU's qemu_strtosz.  "1.5G" is accepted. */
bool parse_size(const char *s, uint64_t *out);
/* Parse on/off/yes/no/true/false. */
bool parse_bool(const char *s, bool *out);

/* Write all of buf to fd, retrying on EINTR/short writes (blocking fds).
 * Returns 0 or -errno. */
int write_full(int fd, const void *buf, size_t len);
/* Read exactly len bytes from fd, retrying on EINTR/short reads
 * (blocking fds).  Returns 0, -ECONNRESET at end of file, or -errno. */
int read_full(int fd, void *buf, size_t len);

/* Write our PID to path and keep it locked (F_SETLK, the descriptor
 * stays open for the life of the process), as QEMU's pidfiles, so a
 * second server with the same pidfile fails instead of overwriting
 * it.  Returns 0, or -errno with *what set to QEMU's message for the
 * step that failed ("Cannot open pid file", "Cannot lock pid file",
 * "Failed to write pid file"). */
int pidfile_write(const char *path, const char **what);

/* Big-endian accessors for wire formats and on-disk metadata. */
static inline uint16_t get_be16(const void *p)
{
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return be16toh(v);
}
static inline uint32_t get_be32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return be32toh(v);
}
static inline uint64_t get_be64(const void *p)
{
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return be64toh(v);
}
static inline void put_be16(void *p, uint16_t v)
{
    v = htobe16(v);
    __builtin_memcpy(p, &v, 2);
}
static inline void put_be32(void *p, uint32_t v)
{
    v = htobe32(v);
    __builtin_memcpy(p, &v, 4);
}
static inline void put_be64(void *p, uint64_t v)
{
    v = htobe64(v);
    __builtin_memcpy(p, &v, 8);
}

#endif
