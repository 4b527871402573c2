/* worker.c - see worker.h.
 *
 * One FIFO queue, one mutex, one condition variable.  Threads sleep on
 * the condition when the queue is empty; a submit wakes one of them.
 * One thread starts with the pool, the others as the queue needs them
 * (a submit that finds more queued jobs than idle threads starts one,
 * up to the pool's size): a start-up that queues nothing, like
 * blockd-nbd's, does not pay for creating ncpu * 4 threads.
 *
 * A pool made with a nice increment runs its threads that many steps
 * below its creator's CPU priority (each thread sets its own on start:
 * Linux keeps nice per thread): block jobs copy there, so that the
 * clients of the nodes they copy keep their share of the cores.  A new
 * thread inherits the nice of the thread that creates it, and only a
 * privileged one could go back up, so a thread of a lower-priority pool
 * never starts threads for another pool (its job waits for the threads
 * that pool has).
 */
#include "util/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "util/util.h"

struct WorkerPool {
    Loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    WorkerJob *head, *tail;
    size_t queued;              /* jobs in head..tail */
    size_t idle;
    bool stop;
    size_t max;                 /* the pool's size */
    size_t nthreads;            /* started so far (1..max) */
    pthread_t *threads;         /* max of them */
    int nice;                   /* the threads' nice value */
    bool set_nice;              /* they set it (else: inherited) */
};

static __thread const WorkerPool *worker_self;  /* on a pool thread */

static void worker_job_done(void *opaque)
{
    WorkerJob *job = opaque;

    job->done(job);
}

static void *worker_main(void *opaque)
{
    WorkerPool *pool = opaque;
    WorkerJob *job;

    /* Raising the value never needs a privilege; if it fails the
     * thread only runs at the normal priority. */
    if (pool->set_nice) {
        (void)setpriority(PRIO_PROCESS, 0, pool->nice);
    }
    worker_self = pool;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->head == NULL && !pool->stop) {
            pool->idle++;
            pthread_cond_wait(&pool->cond, &pool->lock);
            pool->idle--;
        }
        if (pool->head == NULL) {
            break;                      /* stop requested, queue drained */
        }
        job = pool->head;
        pool->queued--;
        pool->head = job->next;
        if (pool->head == NULL) {
            pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);

        job->run(job);
        if (job->done != NULL) {
            loop_post(job->loop, worker_job_done, job);
        }

        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

WorkerPool *worker_pool_new(Loop *loop, size_t nthreads)
{
    return worker_pool_new_nice(loop, nthreads, 0);
}

WorkerPool *worker_pool_new_nice(Loop *loop, size_t nthreads, int nice)
{
    WorkerPool *pool = XNEW(WorkerPool);
    int base;

    errno = 0;
    base = getpriority(PRIO_PROCESS, 0);
    if (base == -1 && errno != 0) {
        base = 0;
    }

    if (nthreads == 0) {
        nthreads = 1;
    }
    pool->loop = loop;
    pool->nice = nice > 0 ? MIN(base + nice, 19) : base;
    pool->set_nice = nice > 0;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    pool->threads = xcalloc(nthreads, sizeof(pthread_t));
    pool->max = nthreads;
    /* The first thread now, so that a pool that exists can run jobs;
     * the others in worker_submit. */
    if (pthread_create(&pool->threads[0], NULL, worker_main, pool) != 0) {
        free(pool->threads);
        free(pool);
        return NULL;
    }
    pool->nthreads = 1;
    return pool;
}

void worker_pool_free(WorkerPool *pool)
{
    size_t i;

    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (i = 0; i < pool->nthreads; i++) {
        pthread_join(pool->threads[i], NULL);
    }
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

size_t worker_pool_size(const WorkerPool *pool)
{
    return pool->max;
}

void worker_submit(WorkerPool *pool, WorkerJob *job)
{
    worker_submit_to(pool, job, pool->loop);
}

void worker_submit_to(WorkerPool *pool, WorkerJob *job, Loop *loop)
{
    job->next = NULL;
    job->loop = loop != NULL ? loop : pool->loop;
    pthread_mutex_lock(&pool->lock);
    if (pool->tail != NULL) {
        pool->tail->next = job;
    } else {
        pool->head = job;
    }
    pool->tail = job;
    pool->queued++;
    if (pool->idle > 0) {
        pthread_cond_signal(&pool->cond);
    }
    /* A thread already signalled still counts as idle until it takes
     * its job, so this starts one only for jobs no thread is coming
     * for.  If it cannot start, the running threads take the job. */
    if (pool->queued > pool->idle && pool->nthreads < pool->max &&
        !pool->stop &&
        (worker_self == NULL || worker_self->nice <= pool->nice) &&
        pthread_create(&pool->threads[pool->nthreads], NULL, worker_main,
                       pool) == 0) {
        pool->nthreads++;
    }
    pthread_mutex_unlock(&pool->lock);
}
