/* log.c - see log.h. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static LogLevel log_level = LOG_LEVEL_INFO;

void log_set_level(LogLevel level)
{
    log_level = level;
}

bool log_enabled(LogLevel level)
{
    return level <= log_level;
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warning", "info",
                                         "debug" };
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "blockd: %s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}
