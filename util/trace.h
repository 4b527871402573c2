/* trace.h - named trace points, switched on by glob patterns.
 *
 * The way qemu-nbd's -T works (QEMU's "log" trace backend): every trace
 * point has a name, `-T PATTERN` turns on the points whose names match
 * the glob (fnmatch(3)), and an enabled point writes one line
 *
 *     NAME MESSAGE
 *
 * to the trace output (stderr, or the file of trace_set_output()).  The
 * names are QEMU's where blockd has the same point (nbd_negotiate_*,
 * nbd_receive_request, nbd_co_send_*, blk_co_*), so a qemu-nbd pattern
 * selects the same kind of lines.  A disabled point costs one load and
 * a branch.
 *
 * TRACE_EVENT_LIST is the one list of points (`blockd-nbd -T help`
 * prints it); a new point is added there and used as
 *     TRACE(nbd_trip, "Reading request");
 * The enable state is process-wide: set it before threads start.
 */
#ifndef BLOCKD_UTIL_TRACE_H
#define BLOCKD_UTIL_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/error.h"

#define TRACE_EVENT_LIST(X)                                     \
    /* nbd/handshake.c: the server's option haggling */         \
    X(nbd_negotiate_begin)                                      \
    X(nbd_negotiate_options_flags)                              \
    X(nbd_negotiate_options_check_magic)                        \
    X(nbd_negotiate_options_check_option)                       \
    X(nbd_negotiate_send_rep_len)                               \
    X(nbd_negotiate_send_rep_err)                               \
    X(nbd_negotiate_send_rep_list)                              \
    X(nbd_negotiate_handle_export_name_request)                 \
    X(nbd_negotiate_handle_info_requests)                       \
    X(nbd_negotiate_handle_info_block_size)                      \
    X(nbd_negotiate_handle_starttls)                            \
    X(nbd_negotiate_handle_starttls_handshake)                  \
    X(nbd_negotiate_meta_context)                               \
    X(nbd_negotiate_meta_query_reply)                           \
    X(nbd_negotiate_new_style_size_flags)                       \
    X(nbd_negotiate_success)                                    \
    X(nbd_handshake_timer_cb)                                   \
    /* nbd/transmission.c: requests and replies */              \
    X(nbd_trip)                                                 \
    X(nbd_receive_request)                                      \
    X(nbd_co_receive_request_decode_type)                       \
    X(nbd_co_receive_request_payload_received)                  \
    X(nbd_co_send_simple_reply)                                 \
    X(nbd_co_send_structured_done)                              \
    X(nbd_co_send_structured_read)                              \
    X(nbd_co_send_structured_read_hole)                         \
    X(nbd_co_send_extents)                                      \
    X(nbd_co_send_structured_error)                             \
    /* blockdev/io.c: requests entering and leaving a node */   \
    X(blk_co_preadv)                                            \
    X(blk_co_pwritev)                                           \
    X(blk_co_pwrite_zeroes)                                     \
    X(blk_co_pdiscard)                                          \
    X(blk_co_flush)                                             \
    X(blk_co_cache)                                             \
    X(blk_co_block_status)                                      \
    X(blk_aio_complete)

typedef enum TraceEventId {
#define TRACE_EVENT_ENUM_(name) TRACE_##name,
    TRACE_EVENT_LIST(TRACE_EVENT_ENUM_)
#undef TRACE_EVENT_ENUM_
    TRACE_EVENT_COUNT
} TraceEventId;

/* Indexed by TraceEventId; read through TRACE() only. */
extern bool trace_event_state[TRACE_EVENT_COUNT];

/* Write "NAME MESSAGE\n" to the trace output, as one line even with
 * several threads tracing. */
void trace_emit(TraceEventId id, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define TRACE(name, ...)                                            \
    do {                                                            \
        if (__builtin_expect(trace_event_state[TRACE_##name], 0)) { \
            trace_emit(TRACE_##name, __VA_ARGS__);                  \
        }                                                           \
    } while (0)

/* The name of a point. */
const char *trace_event_name(TraceEventId id);

/* Turn the points matching the glob on, or off with a leading '-' (as
 * in QEMU's events files).  Returns how many points matched. */
size_t trace_enable_pattern(const char *pattern);

/* True if pattern has glob characters: a pattern without any that
 * matches nothing names a point that does not exist (QEMU warns). */
bool trace_pattern_is_glob(const char *pattern);

/* Apply each line of an events file: one pattern a line, blank lines
 * and lines starting with '#' skipped.  unknown(name, opaque) is called
 * for a line without glob characters that matched nothing.  False with
 * errp set if the file cannot be read. */
bool trace_enable_events_file(const char *path,
                              void (*unknown)(const char *name,
                                              void *opaque),
                              void *opaque, Error **errp);

/* Send the trace lines to path (created or truncated) instead of
 * stderr.  False with errp set if it cannot be opened. */
bool trace_set_output(const char *path, Error **errp);

/* Print every point's name, one a line. */
void trace_list_events(FILE *out);

/* True if any point is on. */
bool trace_any_enabled(void);

#endif
