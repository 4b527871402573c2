/* test-worker.c - the worker pool (util/worker.c): one thread at
 * creation, more as queued jobs need them, up to the pool's size. */
#include <dirent.h>
#include <pthread.h>
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

static CU_TestInfo worker_tests[] = {
    { "threads_on_demand", test_threads_on_demand },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "worker", .pTests = worker_tests },
    CU_SUITE_INFO_NULL,
};
