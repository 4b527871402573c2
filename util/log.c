/* log.c - see log.h. */
#include "util/log.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/util.h"

static LogLevel log_level = LOG_LEVEL_INFO;
static LogFormat log_format = LOG_FORMAT_TEXT;

static const char *const level_names[] = { "error", "warning", "info",
                                           "debug" };
/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_syslog[] = { 3, 4, 6, 7 };

void log_set_level(LogLevel level)
{
    log_level = level;
}

bool log_enabled(LogLevel level)
{
    return level <= log_level;
}

void log_set_format(LogFormat format)
{
    log_format = format;
}

LogFormat log_get_format(void)
{
    return log_format;
}

LogFormat log_format_detect(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 ||
        fstat(STDERR_FILENO, &st) < 0) {
        return LOG_FORMAT_TEXT;
    }
    return (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino ? LOG_FORMAT_JOURNAL
                                                : LOG_FORMAT_TEXT;
}

bool log_format_parse(const char *name, LogFormat *out)
{
    static const char *const names[] = {
        [LOG_FORMAT_TEXT] = "text",
        [LOG_FORMAT_JOURNAL] = "journal",
        [LOG_FORMAT_JSON] = "json",
    };

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (LogFormat)i;
            return true;
        }
    }
    return false;
}

static void log_json(LogLevel level, const char *text)
{
    CLEANUP_JSON json_object *o = json_object_new_object();
    struct timespec ts;
    struct tm tm;
    char secs[40], when[64];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when, sizeof(when), "%s.%03dZ", secs,
             (int)(ts.tv_nsec / 1000000) % 1000);
    json_object_object_add(o, "time", json_object_new_string(when));
    json_object_object_add(o, "level",
                           json_object_new_string(level_names[level]));
    json_object_object_add(o, "program", json_object_new_string("blockd"));
    json_object_object_add(o, "message", json_object_new_string(text));
    fprintf(stderr, "%s\n",
            json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                           JSON_C_TO_STRING_NOSLASHESCAPE));
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    va_start(ap, fmt);
    flockfile(stderr);
    if (log_format == LOG_FORMAT_TEXT) {
        fprintf(stderr, "blockd: %s: ", level_names[level]);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    } else {
        CLEANUP_FREE char *text = NULL;

        if (vasprintf(&text, fmt, ap) < 0) {
            text = NULL;
        }
        if (log_format == LOG_FORMAT_JSON) {
            log_json(level, text != NULL ? text : fmt);
        } else {
            /* One entry per line: a message with newlines gets the
             * prefix on each. */
            const char *p = text != NULL ? text : fmt;
            do {
                const char *nl = strchr(p, '\n');
                int len = nl != NULL ? (int)(nl - p) : (int)strlen(p);
                fprintf(stderr, "<%d>%.*s\n", level_syslog[level], len, p);
                p = nl != NULL ? nl + 1 : NULL;
            } while (p != NULL && *p != '\0');
        }
    }
    funlockfile(stderr);
    va_end(ap);
}
