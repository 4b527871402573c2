/* error.h - the one error idiom of blockd.
 *
 * A function reports *whether* it failed with its return value (bool,
 * NULL pointer or -errno) and *why* through an Error ** passed last:
 *
 *     if (!blk_node_open(n, o, errp)) {
 *         return false;                      pass it on untouched
 *     }
 *     error_setg_errno(errp, errno, "Could not open '%s'", path);
 *
 * Rules: set an error at most once; errp may be NULL (the caller does not
 * care why); never branch on *errp to learn whether a callee failed; do
 * not log an error you also return.  QMP dispatch turns an Error into
 * {"error": {"class": ..., "desc": ...}}.
 */
#ifndef BLOCKD_UTIL_ERROR_H
#define BLOCKD_UTIL_ERROR_H

#include <stdarg.h>
#include <stdbool.h>

/* The QMP error classes (QEMU's QapiErrorClass); almost everything is
 * GenericError. */
typedef enum ErrorClass {
    ERROR_CLASS_GENERIC_ERROR,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_ACTIVE,
    ERROR_CLASS_DEVICE_NOT_FOUND,
    ERROR_CLASS_KVM_MISSING_CAP,
} ErrorClass;

typedef struct Error {
    ErrorClass cls;
    char *msg;          /* human-readable, never NULL */
} Error;

/* Set *errp (if errp is not NULL) to a new GenericError. */
void error_setg(Error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Same, with ": strerror(err)" appended (err is a positive errno). */
void error_setg_errno(Error **errp, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set an error of a given class. */
void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void error_vset(Error **errp, ErrorClass cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Prefix an existing error's message ("Could not open 'x': " + msg).
 * Does nothing when errp or *errp is NULL. */
void error_prepend(Error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Move src into *dst (dst may be NULL: src is freed).  If *dst is
 * already set, src is freed and the first error wins. */
void error_propagate(Error **dst, Error *src);
void error_free(Error *err);
const char *error_get_pretty(const Error *err);
/* "GenericError", "CommandNotFound", ... */
const char *error_class_name(ErrorClass cls);
/* Print "PREFIX: message\n" to stderr and free the error. */
void error_report_err(const char *prefix, Error *err);

#endif
