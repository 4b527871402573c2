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
/* The same for a control-plane fd (a QMP monitor): a busy loop serves
 * it within a few callbacks of it becoming ready, not after a turn over
 * every other ready fd; before that, the other watches whose peers
 * hung up meanwhile are served (a command does not overtake a client's
 * close that came before it).  Remove it with loop_fd_del(). */
LoopFd *loop_fd_add_control(Loop *loop, int fd, int events, LoopFdFn *fn,
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

/* An event is expected within ns nanoseconds (a client's answer in a
 * ping-pong): before it next sleeps, the loop keeps checking its watches
 * without blocking for up to ns, and sleeps only if none fired by then.
 * Waking a sleeping thread costs tens of microseconds on a virtual
 * machine; polling costs the CPU it spins.  The longest hint since the
 * last wait is used once.  0: no effect. */
void loop_poll_hint(Loop *loop, uint64_t ns);

/* How long to poll for an answer, learnt from how long answers took
 * (the idea of QEMU's adaptive poll-max-ns): a wait that polling would
 * have caught within max_ns grows the window, a wait longer than max_ns
 * halves it, one caught keeps it.  One wait in LOOP_POLL_PROBE polls
 * for max_ns whatever the window, so a window that shrank to nothing
 * learns again that answers are quick (a wait that slept also counts
 * the wake-up, which alone may exceed max_ns).  Loop thread only. */
typedef struct LoopPollWindow {
    uint64_t max_ns;               /* 0: never poll */
    uint64_t cur_ns;               /* the window now, <= max_ns */
    unsigned waits;                /* for the probes */
} LoopPollWindow;

#define LOOP_POLL_PROBE 16
#define LOOP_POLL_GROW_MIN_NS 4000 /* growing from 0 starts here */

/* Start with the whole window (0: polling off). */
void loop_poll_window_init(LoopPollWindow *w, uint64_t max_ns);
/* How long to poll for the next answer (then loop_poll_hint()). */
uint64_t loop_poll_window_next(LoopPollWindow *w);
/* The answer came waited_ns after the wait began; polled_ns is what
 * loop_poll_window_next() gave that wait. */
void loop_poll_window_update(LoopPollWindow *w, uint64_t polled_ns,
                             uint64_t waited_ns);

/* Nanoseconds on the monotonic clock. */
uint64_t loop_now_ns(void);
/* Microseconds on the monotonic clock. */
uint64_t loop_now_us(void);

#endif
