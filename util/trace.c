/* trace.c - see trace.h. */
#include "util/trace.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/util.h"

bool trace_event_state[TRACE_EVENT_COUNT];

static const char *const trace_names[TRACE_EVENT_COUNT] = {
#define TRACE_EVENT_NAME_(name) [TRACE_##name] = #name,
    TRACE_EVENT_LIST(TRACE_EVENT_NAME_)
#undef TRACE_EVENT_NAME_
};

/* NULL: stderr.  Line-buffered, never closed (the last line of a
 * process that exits is still written). */
static FILE *trace_out;

const char *trace_event_name(TraceEventId id)
{
    return trace_names[id];
}

void trace_emit(TraceEventId id, const char *fmt, ...)
{
    FILE *f = trace_out != NULL ? trace_out : stderr;
    va_list ap;

    va_start(ap, fmt);
    flockfile(f);
    fputs(trace_names[id], f);
    fputc(' ', f);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    funlockfile(f);
    va_end(ap);
}

bool trace_pattern_is_glob(const char *pattern)
{
    return strpbrk(pattern, "*?[") != NULL;
}

size_t trace_enable_pattern(const char *pattern)
{
    bool on = true;
    size_t n = 0;

    if (pattern[0] == '-') {
        on = false;
        pattern++;
    }
    for (size_t i = 0; i < TRACE_EVENT_COUNT; i++) {
        if (fnmatch(pattern, trace_names[i], 0) == 0) {
            trace_event_state[i] = on;
            n++;
        }
    }
    return n;
}

bool trace_enable_events_file(const char *path,
                              void (*unknown)(const char *name,
                                              void *opaque),
                              void *opaque, Error **errp)
{
    FILE *f = fopen(path, "r");
    CLEANUP_FREE char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    bool ok;

    if (f == NULL) {
        error_setg_errno(errp, errno, "%s", path);
        return false;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (len == 0 || line[0] == '#') {
            continue;
        }
        if (trace_enable_pattern(line) == 0 && unknown != NULL &&
            !trace_pattern_is_glob(line)) {
            unknown(line[0] == '-' ? line + 1 : line, opaque);
        }
    }
    ok = !ferror(f);
    if (!ok) {
        error_setg_errno(errp, errno, "%s", path);
    }
    fclose(f);
    return ok;
}

bool trace_set_output(const char *path, Error **errp)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        error_setg_errno(errp, errno, "Error opening logfile %s", path);
        return false;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    if (trace_out != NULL) {
        fclose(trace_out);
    }
    trace_out = f;
    return true;
}

void trace_list_events(FILE *out)
{
    for (size_t i = 0; i < TRACE_EVENT_COUNT; i++) {
        fprintf(out, "%s\n", trace_names[i]);
    }
}

bool trace_any_enabled(void)
{
    for (size_t i = 0; i < TRACE_EVENT_COUNT; i++) {
        if (trace_event_state[i]) {
            return true;
        }
    }
    return false;
}
