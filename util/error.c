/* error.c - see error.h. */
#include "util/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/util.h"

static const char *const class_names[] = {
    [ERROR_CLASS_GENERIC_ERROR] = "GenericError",
    [ERROR_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [ERROR_CLASS_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
    [ERROR_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
    [ERROR_CLASS_KVM_MISSING_CAP] = "KVMMissingCap",
};

const char *error_class_name(ErrorClass cls)
{
    if ((unsigned)cls >= ARRAY_SIZE(class_names)) {
        return "GenericError";
    }
    return class_names[cls];
}

static void error_install(Error **errp, ErrorClass cls, char *msg)
{
    Error *err;

    if (errp == NULL || *errp != NULL) {
        /* Nobody wants it, or the first error wins. */
        free(msg);
        return;
    }
    err = xmalloc(sizeof(*err));
    err->cls = cls;
    err->msg = msg;
    *errp = err;
}

void error_vset(Error **errp, ErrorClass cls, const char *fmt, va_list ap)
{
    if (errp == NULL) {
        return;
    }
    error_install(errp, cls, xvasprintf(fmt, ap));
}

void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(errp, cls, fmt, ap);
    va_end(ap);
}

void error_setg(Error **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(errp, ERROR_CLASS_GENERIC_ERROR, fmt, ap);
    va_end(ap);
}

void error_setg_errno(Error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    char *head;

    if (errp == NULL) {
        return;
    }
    va_start(ap, fmt);
    head = xvasprintf(fmt, ap);
    va_end(ap);
    error_install(errp, ERROR_CLASS_GENERIC_ERROR,
                  xasprintf("%s: %s", head, strerror(err)));
    free(head);
}

void error_prepend(Error **errp, const char *fmt, ...)
{
    va_list ap;
    char *head, *msg;

    if (errp == NULL || *errp == NULL) {
        return;
    }
    va_start(ap, fmt);
    head = xvasprintf(fmt, ap);
    va_end(ap);
    msg = xasprintf("%s%s", head, (*errp)->msg);
    free(head);
    free((*errp)->msg);
    (*errp)->msg = msg;
}

void error_propagate(Error **dst, Error *src)
{
    if (src == NULL) {
        return;
    }
    if (dst == NULL || *dst != NULL) {
        error_free(src);
        return;
    }
    *dst = src;
}

void error_free(Error *err)
{
    if (err != NULL) {
        free(err->msg);
        free(err);
    }
}

const char *error_get_pretty(const Error *err)
{
    return err->msg;
}

void error_report_err(const char *prefix, Error *err)
{
    if (err == NULL) {
        return;
    }
    if (log_get_format() != LOG_FORMAT_TEXT) {
        /* The journal or JSON lines: one entry with its level. */
        log_msg(LOG_LEVEL_ERROR, "%s", err->msg);
        error_free(err);
        return;
    }
    if (prefix != NULL) {
        fprintf(stderr, "%s: %s\n", prefix, err->msg);
    } else {
        fprintf(stderr, "%s\n", err->msg);
    }
    error_free(err);
}
