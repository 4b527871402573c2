/* log.h - diagnostics on stderr (or syslog once daemonized).
 * Levels: error, warn, info, debug (debug only with -v / BLOCKD_DEBUG). */
#ifndef BLOCKD_UTIL_LOG_H
#define BLOCKD_UTIL_LOG_H

#include <stdbool.h>

typedef enum LogLevel {
    LOG_LEVEL_OFF = -1,     /* log_set_level() only: nothing (fuzzers) */
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
} LogLevel;

void log_set_level(LogLevel level);
bool log_enabled(LogLevel level);
void log_msg(LogLevel level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                \
    do {                                              \
        if (log_enabled(LOG_LEVEL_DEBUG)) {           \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);    \
        }                                             \
    } while (0)

#endif
