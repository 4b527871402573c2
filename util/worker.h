/* worker.h - a pool of threads for blocking work (disk I/O).
 *
 * A WorkerJob is embedded in the caller's request (no allocation per
 * job).  run() executes on a pool thread; done() is then posted to the
 * loop thread.  Workers never touch the event loop themselves: they only
 * call loop_post().
 */
#ifndef BLOCKD_UTIL_WORKER_H
#define BLOCKD_UTIL_WORKER_H

#include <stddef.h>

#include "util/loop.h"

typedef struct WorkerPool WorkerPool;
typedef struct WorkerJob WorkerJob;

struct WorkerJob {
    void (*run)(WorkerJob *job);     /* on a pool thread */
    void (*done)(WorkerJob *job);    /* on the loop thread, after run */
    WorkerJob *next;                 /* private to the pool */
    Loop *loop;                      /* private: where done() runs */
};

/* A pool of up to nthreads threads (at least 1) that complete to
 * loop: one starts now, the others when queued jobs find no idle one. */
WorkerPool *worker_pool_new(Loop *loop, size_t nthreads);
/* The same, its threads running nice steps (1..19) below the calling
 * thread's CPU priority (setpriority(2); at most 19; 0: the same). */
WorkerPool *worker_pool_new_nice(Loop *loop, size_t nthreads, int nice);
/* Wait for queued and running jobs, run their done() callbacks' posts
 * are dropped; stop the threads and free the pool. */
void worker_pool_free(WorkerPool *pool);
/* The pool's size: the most threads it runs (at least 1). */
size_t worker_pool_size(const WorkerPool *pool);
/* Queue job; may be called from the loop thread or a worker.  Its
 * done() runs on the pool's loop. */
void worker_submit(WorkerPool *pool, WorkerJob *job);
/* The same, with done() posted to loop instead (an I/O thread's loop
 * submitting its own requests; NULL: the pool's).  Any thread. */
void worker_submit_to(WorkerPool *pool, WorkerJob *job, Loop *loop);

#endif
