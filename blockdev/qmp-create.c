/* qmp-create.c - blockdev-create: image creation as a job of type
 * create (QEMU's blockdev-create).
 *
 * The command checks only what QEMU checks before the job exists (the
 * driver can create images, the job id); everything else is the job's
 * error, seen in query-jobs, as in QEMU.  The job writes the image on
 * the worker pool in one blocking run (blk_create_run) and, on the
 * loop, copies the run's byte counters into its progress every
 * CREATE_POLL_US until the run is done:
 *
 *   loop   blk_create_new ──> job_start ──> run: submit the work
 *   pool                                    blk_create_run (writes)
 *   loop   run every 100 ms: progress ...   work done: job_finish
 *
 * A cancel sets the run's cancel flag: it stops at the next chunk and
 * the job aborts.  Pause is accepted but does not stop a run already
 * writing (QEMU's create job does not pause either).  Auto-finalize,
 * manual dismiss: the job stays concluded until job-dismiss.
 */
#include <errno.h>
#include <stdlib.h>

#include "blockdev/block.h"
#include "blockdev/create.h"
#include "blockdev/job.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/util.h"

#define CREATE_POLL_US 100000

typedef struct CreateJob {
    Job job;
    BlockCreate *c;              /* NULL: the set-up failed (setup_err) */
    Error *setup_err;            /* why blk_create_new failed */
    WorkerJob work;
    bool submitted;              /* the run is on the pool */
    bool done;                   /* the run ended (loop thread) */
    bool ok;                     /* its result */
    Error *err;                  /* its error when !ok */
    uint64_t seen_done, seen_total;  /* progress already reported */
} CreateJob;

static CreateJob *create_job(Job *job)
{
    return container_of(job, CreateJob, job);
}

/* Pool thread. */
static void create_work_run(WorkerJob *w)
{
    CreateJob *cj = container_of(w, CreateJob, work);

    cj->ok = blk_create_run(cj->c, &cj->err);
}

/* Loop thread. */
static void create_work_done(WorkerJob *w)
{
    CreateJob *cj = container_of(w, CreateJob, work);

    cj->done = true;
    job_kick(&cj->job);
}

static void create_sync_progress(CreateJob *cj)
{
    BlockCreateProgress *pr = blk_create_progress(cj->c);
    uint64_t done = __atomic_load_n(&pr->done, __ATOMIC_RELAXED);
    uint64_t total = __atomic_load_n(&pr->total, __ATOMIC_RELAXED);

    if (total > cj->seen_total) {
        job_progress_add_total(&cj->job, (int64_t)(total - cj->seen_total));
        cj->seen_total = total;
    }
    if (done > cj->seen_done) {
        job_progress_add(&cj->job, (int64_t)(done - cj->seen_done));
        cj->seen_done = done;
    }
}

/* A job that wrote nothing (an empty file, a failed check) ends at 1
 * of 1, as QEMU's create jobs always do. */
static void create_progress_done(Job *job)
{
    if (job->progress_total == 0) {
        job_progress_add_total(job, 1);
        job_progress_add(job, 1);
    }
}

static void create_job_run(Job *job)
{
    CreateJob *cj = create_job(job);
    WorkerPool *pool = blk_graph_job_pool(job->graph);

    if (cj->c == NULL) {
        create_progress_done(job);
        job_finish(job, -EINVAL, error_get_pretty(cj->setup_err));
        return;
    }
    if (!cj->submitted) {
        cj->submitted = true;
        if (pool == NULL) {
            /* A graph without a pool (unit tests): run here. */
            create_work_run(&cj->work);
            cj->done = true;
        } else {
            cj->work.run = create_work_run;
            cj->work.done = create_work_done;
            worker_submit(pool, &cj->work);
        }
    }
    if (job_is_cancelled(job)) {
        __atomic_store_n(&blk_create_progress(cj->c)->cancel, true,
                         __ATOMIC_RELEASE);
    }
    create_sync_progress(cj);
    if (!cj->done) {
        job_sleep(job, CREATE_POLL_US);
        return;
    }
    if (job_is_cancelled(job)) {
        job_finish(job, -ECANCELED, NULL);
    } else if (cj->ok) {
        create_progress_done(job);
        job_finish(job, 0, NULL);
    } else {
        create_progress_done(job);
        job_finish(job, -EIO, error_get_pretty(cj->err));
    }
}

static void create_job_clean(Job *job)
{
    CreateJob *cj = create_job(job);

    blk_create_free(cj->c);
    cj->c = NULL;
}

static void create_job_free(Job *job)
{
    CreateJob *cj = create_job(job);

    blk_create_free(cj->c);
    error_free(cj->setup_err);
    error_free(cj->err);
}

static const JobDriver create_job_driver = {
    .type = JOB_TYPE_CREATE,
    .run = create_job_run,
    .clean = create_job_clean,
    .free = create_job_free,
};

bool qmp_blockdev_create(QmpCtx *ctx, const QmpBlockdevCreateArgs *args,
                         Error **errp)
{
    const BlockdevCreateOptions *o = args->options;
    CreateJob *cj;
    Job *job;

    if (o->driver != BLOCKDEV_DRIVER_FILE &&
        o->driver != BLOCKDEV_DRIVER_RAW &&
        o->driver != BLOCKDEV_DRIVER_QCOW2) {
        error_setg(errp, "Driver does not support blockdev-create");
        return false;
    }
    job = job_create(ctx->graph, &create_job_driver, sizeof(CreateJob),
                     args->job_id, true, false, errp);
    if (job == NULL) {
        return false;
    }
    cj = create_job(job);
    cj->c = blk_create_new(ctx->graph, o, &cj->setup_err);
    job_start(job);
    return true;
}
