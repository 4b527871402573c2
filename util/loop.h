/* loop.h - the event loop (a thin wrapper over libevent).
 *
 * Only loop.c includes libevent: the rest of blockd sees file-descriptor
 * watches, timers, deferred calls, signals and a thread-safe "post"
 * for completions from worker threads.  Everything here except
 * loop_post() must be called on the loop thread.
 */
#ifndef BLOCKD_UTIL_LOOP_H
#define BLOCKD_UTIL_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct Loop Loop;
typedef struct LoopFd LoopFd;
typedef struct LoopTimer LoopTimer;

enum {
    LOOP_READ = 1 << 0,
    LOOP_WRITE = 1 << 1,
};

/* Called on the loop thread with the events that fired (LOOP_READ and/or
 * LOOP_WRITE). */
typedef void LoopFdFn(int fd, int events, void *opaque);
typedef void LoopFn(void *opaque);

Loop *loop_new(void);
/* Run what is still posted (deferred frees), then free the loop; every
 * watch must be gone already. */
void loop_free(Loop *loop);
/* Run until loop_stop(); returns 0, or -1 if libevent failed. */
int loop_run(Loop *loop);
/* Ask loop_run() to return after the current callbacks. */
void loop_stop(Loop *loop);

/* Watch fd for events (a level-triggered, persistent watch).  events may
 * be 0 (watch registered but idle).  The fd stays owned by the caller. */
LoopFd *loop_fd_add(Loop *loop, int fd, int events, LoopFdFn *fn,
                    void *opaque);
void loop_fd_set_events(LoopFd *w, int events);
int loop_fd_events(const LoopFd *w);
/* Remove and free the watch (safe from inside its own callback). */
void loop_fd_del(LoopFd *w);

/* One-shot timers; re-arm from the callback for periodic work. */
LoopTimer *loop_timer_new(Loop *loop, LoopFn *fn, void *opaque);
void loop_timer_arm(LoopTimer *t, uint64_t usec);
void loop_timer_free(LoopTimer *t);

/* Call fn(opaque) on the loop thread soon, after the current callback
 * returns: for deferred frees and "finish this later".  Any thread. */
void loop_post(Loop *loop, LoopFn *fn, void *opaque);

/* Run everything posted so far (and what those calls post), now: for
 * teardown, when loop_run() is over but deferred work must finish. */
void loop_run_posted(Loop *loop);

/* Whether the calling thread is loop's (the one that created or runs
 * it): code that may block waiting for the loop must not run there.
 * false for a NULL loop.  Any thread. */
bool loop_is_current(const Loop *loop);

/* Call fn(opaque) on the loop thread when signal signum arrives. */
bool loop_signal(Loop *loop, int signum, LoopFn *fn, void *opaque);

/* Microseconds on the monotonic clock. */
uint64_t loop_now_us(void);

#endif
