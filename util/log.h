/* log.h - diagnostics on stderr.
 * Levels: error, warn, info, debug (debug only with -v / BLOCKD_DEBUG).
 *
 * Three forms of line:
 *   text     "blockd: error: MESSAGE"
 *   journal  "<3>MESSAGE": sd-daemon(3)'s level prefix, which journald
 *            turns into the entry's PRIORITY (error 3, warning 4, info 6,
 *            debug 7).  Chosen by log_format_detect() when stderr is the
 *            journal: $JOURNAL_STREAM ("DEV:INODE") names stderr's file.
 *   json     one object a line: {"time": "2026-12-05T17:25:00.123Z",
 *            "level": "error", "program": "blockd", "message": "..."}
 */
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

typedef enum LogFormat {
    LOG_FORMAT_TEXT,
    LOG_FORMAT_JOURNAL,
    LOG_FORMAT_JSON,
} LogFormat;

void log_set_level(LogLevel level);
bool log_enabled(LogLevel level);
void log_msg(LogLevel level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Set the form of every following line (process-wide, set before
 * threads start). */
void log_set_format(LogFormat format);
LogFormat log_get_format(void);
/* LOG_FORMAT_JOURNAL when $JOURNAL_STREAM names the file stderr is,
 * else LOG_FORMAT_TEXT. */
LogFormat log_format_detect(void);
/* "text", "journal" or "json" into *out; false for anything else. */
bool log_format_parse(const char *name, LogFormat *out);

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
