/* test-worker.c - the worker pool (util/worker.c): one thread at
 * creation, more as queued jobs need them, up to the pool's size; a
 * pool's nice increment, and no thread inheriting a lower priority. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

#include "cunit-main.h"
#include "util/worker.h"

/* Threads of this process. */
static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* Jobs that each wait until `want` of them run at once: they finish
 * only if the pool started a thread for each. */
typedef struct Gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int running, want;
    bool timed_out;
} Gate;

typedef struct GateJob {
    WorkerJob job;
    Gate *gate;
} GateJob;

static void gate_run(WorkerJob *job)
{
    Gate *g = ((GateJob *)job)->gate;
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&g->lock);
    g->running++;
    pthread_cond_broadcast(&g->cond);
    while (g->running < g->want && !g->timed_out) {
        if (pthread_cond_timedwait(&g->cond, &g->lock, &until) != 0) {
            g->timed_out = true;
        }
    }
    pthread_mutex_unlock(&g->lock);
}

static void test_threads_on_demand(void)
{
    enum { SIZE = 4 };
    Loop *loop = loop_new();
    Gate g = { .want = SIZE };
    GateJob jobs[SIZE];
    int before = task_count();
    WorkerPool *pool = worker_pool_new(loop, SIZE);

    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    /* One thread until there is work. */
    CU_ASSERT_EQUAL(task_count(), before + 1);
    CU_ASSERT_EQUAL(worker_pool_size(pool), SIZE);
    for (int i = 0; i < SIZE; i++) {
        jobs[i] = (GateJob) { .job = { .run = gate_run }, .gate = &g };
        worker_submit(pool, &jobs[i].job);
    }
    /* Freeing waits for the jobs: they all ran side by side. */
    worker_pool_free(pool);
    CU_ASSERT_EQUAL(g.running, SIZE);
    CU_ASSERT_FALSE(g.timed_out);
    CU_ASSERT_EQUAL(task_count(), before);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
    loop_free(loop);
}

/* A job that records its thread's nice value and, optionally, submits
 * a job to another pool from there. */
typedef struct NiceJob {
    WorkerJob job;
    int nice;
    WorkerPool *other;
    struct NiceJob *inner;
} NiceJob;

static int thread_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0);

    CU_ASSERT_EQUAL(errno, 0);
    return n;
}

static void nice_run(WorkerJob *job)
{
    NiceJob *nj = (NiceJob *)job;

    nj->nice = thread_nice();
    if (nj->other != NULL) {
        worker_submit(nj->other, &nj->inner->job);
    }
}

static void test_nice(void)
{
    Loop *loop = loop_new();
    int base = thread_nice();
    WorkerPool *plain = worker_pool_new(loop, 4);
    WorkerPool *low = worker_pool_new_nice(loop, 4, 5);
    WorkerPool *lowest = worker_pool_new_nice(loop, 1, 40);
    NiceJob a = { .job = { .run = nice_run }, .nice = -100 };
    NiceJob b = { .job = { .run = nice_run }, .nice = -100 };
    NiceJob c = { .job = { .run = nice_run }, .nice = -100 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    CU_ASSERT_PTR_NOT_NULL_FATAL(low);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lowest);
    worker_submit(plain, &a.job);
    worker_submit(low, &b.job);
    worker_submit(lowest, &c.job);
    worker_pool_free(plain);
    worker_pool_free(low);
    worker_pool_free(lowest);
    CU_ASSERT_EQUAL(a.nice, base);              /* inherited */
    CU_ASSERT_EQUAL(b.nice, base + 5 > 19 ? 19 : base + 5);
    CU_ASSERT_EQUAL(c.nice, 19);                /* capped */
    CU_ASSERT_EQUAL(thread_nice(), base);       /* the caller's is kept */
    loop_free(loop);
}

/* A job that holds its thread until released. */
typedef struct HoldJob {
    WorkerJob job;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running, release;
} HoldJob;

static void hold_run(WorkerJob *job)
{
    HoldJob *h = (HoldJob *)job;

    pthread_mutex_lock(&h->lock);
    h->running = true;
    pthread_cond_broadcast(&h->cond);
    while (!h->release) {
        pthread_cond_wait(&h->cond, &h->lock);
    }
    pthread_mutex_unlock(&h->lock);
}

static void hold_wait_running(HoldJob *h)
{
    pthread_mutex_lock(&h->lock);
    while (!h->running) {
        pthread_cond_wait(&h->cond, &h->lock);
    }
    pthread_mutex_unlock(&h->lock);
}

/* A low-priority worker submitting to a normal pool whose threads are
 * all busy starts none (a new thread would inherit the low priority
 * for good): the job waits for the normal pool's own thread and runs
 * at the normal priority. */
static void test_nice_no_inherit(void)
{
    Loop *loop = loop_new();
    int base = thread_nice();
    WorkerPool *plain = worker_pool_new(loop, 4);
    WorkerPool *low = worker_pool_new_nice(loop, 4, 5);
    HoldJob hold = { .job = { .run = hold_run } };
    NiceJob inner = { .job = { .run = nice_run }, .nice = -100 };
    NiceJob outer = { .job = { .run = nice_run }, .nice = -100,
                      .other = plain, .inner = &inner };
    int before;

    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    CU_ASSERT_PTR_NOT_NULL_FATAL(low);
    pthread_mutex_init(&hold.lock, NULL);
    pthread_cond_init(&hold.cond, NULL);
    /* Let plain's first thread go to sleep, so that the hold job takes
     * it rather than a second one (if not, inner runs on that second
     * thread and the test proves less, but still passes). */
    nanosleep(&(struct timespec) { .tv_nsec = 50 * 1000 * 1000 }, NULL);
    worker_submit(plain, &hold.job);
    hold_wait_running(&hold);
    before = task_count();
    worker_submit(low, &outer.job);
    worker_pool_free(low);                  /* outer has run */
    CU_ASSERT_EQUAL(outer.nice, base + 5 > 19 ? 19 : base + 5);
    /* No thread of plain was started for inner: only low's one thread
     * is gone. */
    CU_ASSERT_EQUAL(task_count(), before - 1);
    pthread_mutex_lock(&hold.lock);
    hold.release = true;
    pthread_cond_broadcast(&hold.cond);
    pthread_mutex_unlock(&hold.lock);
    worker_pool_free(plain);
    CU_ASSERT_EQUAL(inner.nice, base);
    pthread_cond_destroy(&hold.cond);
    pthread_mutex_destroy(&hold.lock);
    loop_free(loop);
}

static CU_TestInfo worker_tests[] = {
    { "threads_on_demand", test_threads_on_demand },
    { "nice", test_nice },
    { "nice_no_inherit", test_nice_no_inherit },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "worker", .pTests = worker_tests },
    CU_SUITE_INFO_NULL,
};
