/* qmp-job.c - the job verbs and queries (QEMU's qapi/job.json and the
 * block-job-* commands of qapi/block-core.json).  Loop thread.
 */
#include <stdlib.h>

#include "blockdev/job.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/util.h"

static JobInfo *job_info(const Job *job)
{
    JobInfo *info = XNEW(JobInfo);

    info->id = xstrdup(job->id);
    info->type = job->drv->type;
    info->status = job->status;
    info->current_progress = job->progress_current;
    info->total_progress = job->progress_total;
    if (job->status == JOB_STATUS_CONCLUDED && job->error != NULL) {
        info->has_error = true;
        info->error = xstrdup(job->error);
    }
    return info;
}

bool qmp_query_jobs(QmpCtx *ctx, const QmpQueryJobsArgs *args,
                    JobInfoList **ret, Error **errp)
{
    JobInfoList *l = XNEW(JobInfoList);

    (void)args;
    (void)errp;
    for (Job *j = job_first(ctx->graph); j != NULL; j = j->next) {
        l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
        l->v[l->n++] = job_info(j);
    }
    *ret = l;
    return true;
}

static BlockJobInfo *block_job_info(const Job *job)
{
    BlockJobInfo *info = XNEW(BlockJobInfo);

    info->type = xstrdup(JobType_str(job->drv->type));
    info->device = xstrdup(job->id);
    info->len = job->progress_total;
    info->offset = job->progress_current;
    info->busy = job->inflight > 0;
    info->paused = job->user_paused;
    info->speed = job->speed;
    info->io_status = job->iostatus;
    info->ready = job->status == JOB_STATUS_READY ||
                  job->status == JOB_STATUS_STANDBY;
    info->status = job->status;
    info->auto_finalize = job->auto_finalize;
    info->auto_dismiss = job->auto_dismiss;
    if (job->error != NULL) {
        info->has_error = true;
        info->error = xstrdup(job->error);
    }
    return info;
}

bool qmp_query_block_jobs(QmpCtx *ctx, const QmpQueryBlockJobsArgs *args,
                          BlockJobInfoList **ret, Error **errp)
{
    BlockJobInfoList *l = XNEW(BlockJobInfoList);

    (void)args;
    (void)errp;
    for (Job *j = job_first(ctx->graph); j != NULL; j = j->next) {
        /* QEMU lists block jobs until they are concluded. */
        if (j->status == JOB_STATUS_CONCLUDED || !job_is_block_job(j)) {
            continue;
        }
        l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
        l->v[l->n++] = block_job_info(j);
    }
    *ret = l;
    return true;
}

bool qmp_job_pause(QmpCtx *ctx, const QmpJobPauseArgs *args, Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_pause(job, errp);
}

bool qmp_job_resume(QmpCtx *ctx, const QmpJobResumeArgs *args, Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_resume(job, errp);
}

bool qmp_job_cancel(QmpCtx *ctx, const QmpJobCancelArgs *args, Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_cancel(job, true, errp);
}

bool qmp_job_complete(QmpCtx *ctx, const QmpJobCompleteArgs *args,
                      Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_complete(job, errp);
}

bool qmp_job_finalize(QmpCtx *ctx, const QmpJobFinalizeArgs *args,
                      Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_finalize(job, errp);
}

bool qmp_job_dismiss(QmpCtx *ctx, const QmpJobDismissArgs *args,
                     Error **errp)
{
    Job *job = job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_dismiss(job, errp);
}

bool qmp_block_job_set_speed(QmpCtx *ctx,
                             const QmpBlockJobSetSpeedArgs *args,
                             Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->device, errp);

    return job != NULL && job_set_speed(job, args->speed, errp);
}

bool qmp_block_job_cancel(QmpCtx *ctx, const QmpBlockJobCancelArgs *args,
                          Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->device, errp);

    return job != NULL && job_user_cancel(job, args->force, errp);
}

bool qmp_block_job_pause(QmpCtx *ctx, const QmpBlockJobPauseArgs *args,
                         Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->device, errp);

    return job != NULL && job_user_pause(job, errp);
}

bool qmp_block_job_resume(QmpCtx *ctx, const QmpBlockJobResumeArgs *args,
                          Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->device, errp);

    return job != NULL && job_user_resume(job, errp);
}

bool qmp_block_job_complete(QmpCtx *ctx,
                            const QmpBlockJobCompleteArgs *args,
                            Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->device, errp);

    return job != NULL && job_user_complete(job, errp);
}

bool qmp_block_job_finalize(QmpCtx *ctx,
                            const QmpBlockJobFinalizeArgs *args,
                            Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_finalize(job, errp);
}

bool qmp_block_job_dismiss(QmpCtx *ctx, const QmpBlockJobDismissArgs *args,
                           Error **errp)
{
    Job *job = block_job_get(ctx->graph, args->id, errp);

    return job != NULL && job_user_dismiss(job, errp);
}
