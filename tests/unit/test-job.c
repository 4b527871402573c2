/* test-job.c - the job model (blockdev/job.c): states, QEMU's verb
 * table and its errors, ids, node claims, error actions.  A graph with
 * no loop runs a job's driver inline. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/job.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/util.h"

typedef struct TestJob {
    Job job;
    bool done;                   /* the next run finishes with 0 */
    int runs;
    int commits, aborts, cleans;
} TestJob;

static void test_run(Job *job)
{
    TestJob *t = container_of(job, TestJob, job);

    t->runs++;
    if (job_is_cancelled(job)) {
        job_finish(job, -ECANCELED, NULL);
    } else if (t->done && job_may_issue(job)) {
        job_finish(job, 0, NULL);
    }
}

static bool test_complete(Job *job, Error **errp)
{
    (void)errp;
    container_of(job, TestJob, job)->done = true;
    return true;
}

static void test_commit(Job *job)
{
    container_of(job, TestJob, job)->commits++;
}

static void test_abort(Job *job)
{
    container_of(job, TestJob, job)->aborts++;
}

static void test_clean(Job *job)
{
    container_of(job, TestJob, job)->cleans++;
}

static const JobDriver test_driver = {
    .type = JOB_TYPE_BACKUP,
    .run = test_run,
    .complete = test_complete,
    .commit = test_commit,
    .abort = test_abort,
    .clean = test_clean,
};

static TestJob *new_job(BlockGraph *g, const char *id, bool fin, bool dis)
{
    Error *err = NULL;
    Job *job = job_create(g, &test_driver, sizeof(TestJob), id, fin, dis,
                          &err);

    CU_ASSERT_PTR_NULL(err);
    error_free(err);
    return job != NULL ? container_of(job, TestJob, job) : NULL;
}

/* err's message equals want; frees err. */
static void check_err(Error *err, const char *want)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), want);
    error_free(err);
}

static void test_job_ids(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;

    CU_ASSERT_PTR_NULL(job_create(g, &test_driver, sizeof(TestJob), "1x",
                                  true, true, &err));
    check_err(err, "Invalid job ID '1x'");
    err = NULL;
    CU_ASSERT_PTR_NULL(job_create(g, &test_driver, sizeof(TestJob), "a b",
                                  true, true, &err));
    check_err(err, "Invalid job ID 'a b'");
    CU_ASSERT_PTR_NOT_NULL(new_job(g, "j-0.x_1", true, true));
    err = NULL;
    CU_ASSERT_PTR_NULL(job_create(g, &test_driver, sizeof(TestJob),
                                  "j-0.x_1", true, true, &err));
    check_err(err, "Job ID 'j-0.x_1' already in use");
    err = NULL;
    CU_ASSERT_PTR_NULL(job_get(g, "nope", &err));
    check_err(err, "Job not found");
    err = NULL;
    CU_ASSERT_PTR_NULL(block_job_get(g, "nope", &err));
    CU_ASSERT_EQUAL(err->cls, ERROR_CLASS_DEVICE_NOT_ACTIVE);
    check_err(err, "Block job 'nope' not found");
    blk_graph_free(g);
}

static void test_job_auto(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    TestJob *t = new_job(g, "j", true, true);

    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_CREATED);
    t->done = true;
    job_start(&t->job);
    /* finished, committed, concluded and dismissed: gone */
    CU_ASSERT_PTR_NULL(job_first(g));
    blk_graph_free(g);
}

static void test_job_manual_finalize(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    TestJob *t = new_job(g, "j", false, false);
    Error *err = NULL;

    job_start(&t->job);
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_RUNNING);
    CU_ASSERT_FALSE(job_user_finalize(&t->job, &err));
    check_err(err, "Job 'j' in state 'running' cannot accept command "
                   "verb 'finalize'");
    err = NULL;
    CU_ASSERT_FALSE(job_user_complete(&t->job, &err));
    check_err(err, "Job 'j' in state 'running' cannot accept command "
                   "verb 'complete'");
    t->done = true;
    job_kick(&t->job);
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_PENDING);
    CU_ASSERT_EQUAL(t->commits, 0);
    err = NULL;
    CU_ASSERT_FALSE(job_user_dismiss(&t->job, &err));
    check_err(err, "Job 'j' in state 'pending' cannot accept command "
                   "verb 'dismiss'");
    CU_ASSERT_TRUE(job_user_finalize(&t->job, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_CONCLUDED);
    CU_ASSERT_EQUAL(t->commits, 1);
    CU_ASSERT_EQUAL(t->cleans, 1);
    err = NULL;
    CU_ASSERT_FALSE(job_user_cancel(&t->job, true, &err));
    check_err(err, "Job 'j' in state 'concluded' cannot accept command "
                   "verb 'cancel'");
    CU_ASSERT_TRUE(job_user_dismiss(&t->job, NULL));
    CU_ASSERT_PTR_NULL(job_first(g));
    blk_graph_free(g);
}

static void test_job_pause_resume(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    TestJob *t = new_job(g, "j", true, false);
    Error *err = NULL;

    job_start(&t->job);
    CU_ASSERT_TRUE(job_user_pause(&t->job, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_PAUSED);
    CU_ASSERT_FALSE(job_may_issue(&t->job));
    CU_ASSERT_FALSE(job_user_pause(&t->job, &err));
    check_err(err, "Job is already paused");
    t->done = true;
    job_kick(&t->job);                 /* paused: must not finish */
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_PAUSED);
    CU_ASSERT_TRUE(job_user_resume(&t->job, NULL));
    /* resumed, ran, finished with 0 and concluded */
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_CONCLUDED);
    CU_ASSERT_PTR_NULL(t->job.error);
    err = NULL;
    CU_ASSERT_FALSE(job_user_resume(&t->job, &err));
    check_err(err, "Job 'j' in state 'concluded' cannot accept command "
                   "verb 'resume'");
    blk_graph_free(g);
}

static void test_job_ready_complete(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    TestJob *t = new_job(g, "j", true, false);
    Error *err = NULL;

    job_start(&t->job);
    job_ready(&t->job);
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_READY);
    CU_ASSERT_TRUE(job_user_pause(&t->job, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_STANDBY);
    CU_ASSERT_FALSE(job_user_complete(&t->job, &err));
    check_err(err, "Job 'j' in state 'standby' cannot accept command "
                   "verb 'complete'");
    CU_ASSERT_TRUE(job_user_resume(&t->job, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_READY);
    CU_ASSERT_TRUE(job_user_complete(&t->job, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_CONCLUDED);
    CU_ASSERT_EQUAL(t->commits, 1);
    blk_graph_free(g);
}

static void test_job_cancel_and_errors(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    TestJob *t = new_job(g, "j", true, false);
    TestJob *u;
    Error *err = NULL;

    job_start(&t->job);
    t->job.on_target_error = BLOCKDEV_ON_ERROR_STOP;
    CU_ASSERT_EQUAL(job_io_error(&t->job, false, -EIO),
                    BLOCK_ERROR_ACTION_STOP);
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_PAUSED);
    CU_ASSERT_EQUAL(t->job.iostatus, BLOCK_DEVICE_IO_STATUS_FAILED);
    CU_ASSERT_EQUAL(job_io_error(&t->job, true, -EIO),
                    BLOCK_ERROR_ACTION_REPORT);
    t->job.on_source_error = BLOCKDEV_ON_ERROR_ENOSPC;
    CU_ASSERT_EQUAL(job_io_error(&t->job, true, -EIO),
                    BLOCK_ERROR_ACTION_REPORT);
    /* cancel a paused job: it goes through running to aborting */
    CU_ASSERT_TRUE(job_user_cancel(&t->job, true, NULL));
    CU_ASSERT_EQUAL(t->job.status, JOB_STATUS_CONCLUDED);
    CU_ASSERT_EQUAL(t->aborts, 1);
    CU_ASSERT_EQUAL(t->commits, 0);
    CU_ASSERT_PTR_NULL(t->job.error);      /* cancelled is no error */

    u = new_job(g, "k", true, false);
    job_start(&u->job);
    job_finish(&u->job, -ENOSPC, NULL);
    CU_ASSERT_EQUAL(u->job.status, JOB_STATUS_CONCLUDED);
    CU_ASSERT_STRING_EQUAL(u->job.error, strerror(ENOSPC));
    CU_ASSERT_FALSE(job_set_speed(&u->job, 1, &err));
    check_err(err, "Job 'k' in state 'concluded' cannot accept command "
                   "verb 'set-speed'");
    blk_graph_free(g);
}

static void test_job_claim(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\","
                                      "\"node-name\":\"n0\"}", NULL);
    TestJob *t = new_job(g, "j", true, true);
    TestJob *u = new_job(g, "k", true, true);
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(job_claim_node(&t->job, bs, true, NULL));
    CU_ASSERT_FALSE(job_claim_node(&u->job, bs, false, &err));
    check_err(err, "Node 'n0' is busy: block device is in use by block "
                   "job: backup");
    job_early_fail(&u->job);
    t->done = true;
    job_start(&t->job);
    CU_ASSERT_PTR_NULL(bs->job);
    CU_ASSERT_PTR_NULL(job_first(g));
    blk_unref(bs);
    blk_graph_free(g);
}

static CU_TestInfo job_tests[] = {
    { "ids", test_job_ids },
    { "auto", test_job_auto },
    { "manual_finalize", test_job_manual_finalize },
    { "pause_resume", test_job_pause_resume },
    { "ready_complete", test_job_ready_complete },
    { "cancel_and_errors", test_job_cancel_and_errors },
    { "claim", test_job_claim },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "job", .pTests = job_tests },
    CU_SUITE_INFO_NULL,
};
