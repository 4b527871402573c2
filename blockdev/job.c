/* job.c - the job model: states, verbs, events, rate limit, error
 * actions (see job.h).  Loop thread only.
 */
#include "blockdev/job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qapi-events.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

/* QEMU's transition table (job.c JobSTT): may status a become b? */
static const bool job_stt[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    /*                        U  C  R  P  Y  S  W  D  X  E  N */
    [JOB_STATUS_UNDEFINED] = {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    [JOB_STATUS_CREATED]   = {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    [JOB_STATUS_RUNNING]   = {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    [JOB_STATUS_PAUSED]    = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    [JOB_STATUS_READY]     = {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    [JOB_STATUS_STANDBY]   = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    [JOB_STATUS_WAITING]   = {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    [JOB_STATUS_PENDING]   = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [JOB_STATUS_ABORTING]  = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    [JOB_STATUS_CONCLUDED] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    [JOB_STATUS_NULL]      = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

/* QEMU's verb table (job.c JobVerbTable): which states take a verb. */
static const bool job_verbs[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    /*                       U  C  R  P  Y  S  W  D  X  E  N */
    [JOB_VERB_CANCEL]     = {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    [JOB_VERB_PAUSE]      = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_RESUME]     = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_SET_SPEED]  = {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_COMPLETE]   = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    [JOB_VERB_FINALIZE]   = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    [JOB_VERB_DISMISS]    = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
    [JOB_VERB_CHANGE]     = {0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0},
};

static void job_set_status(Job *job, JobStatus s)
{
    /* A transition outside the table is a bug in this file. */
    if (!job_stt[job->status][s]) {
        log_warn("job '%s': unexpected transition %s -> %s", job->id,
                 JobStatus_str(job->status), JobStatus_str(s));
    }
    job->status = s;
    qapi_event_send_job_status_change(job->events, job->id, s);
}

/* QEMU's id_wellformed(): a letter, then letters, digits, -._ */
static bool job_id_wellformed(const char *id)
{
    if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z'))) {
        return false;
    }
    for (const char *p = id + 1; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_')) {
            return false;
        }
    }
    return true;
}

Job *job_first(BlockGraph *g)
{
    return *blk_graph_jobs(g);
}

Job *job_find(BlockGraph *g, const char *id)
{
    for (Job *j = job_first(g); j != NULL; j = j->next) {
        if (strcmp(j->id, id) == 0) {
            return j;
        }
    }
    return NULL;
}

Job *job_get(BlockGraph *g, const char *id, Error **errp)
{
    Job *job = job_find(g, id);

    if (job == NULL) {
        error_setg(errp, "Job not found");
    }
    return job;
}

Job *block_job_get(BlockGraph *g, const char *id, Error **errp)
{
    Job *job = job_find(g, id);

    if (job == NULL) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
                  "Block job '%s' not found", id);
    }
    return job;
}

static void job_timer_cb(void *opaque)
{
    job_kick(opaque);
}

Job *job_create(BlockGraph *g, const JobDriver *drv, size_t size,
                const char *id, bool auto_finalize, bool auto_dismiss,
                Error **errp)
{
    Job *job, **tail;

    if (!job_id_wellformed(id)) {
        error_setg(errp, "Invalid job ID '%s'", id);
        return NULL;
    }
    if (job_find(g, id) != NULL) {
        error_setg(errp, "Job ID '%s' already in use", id);
        return NULL;
    }
    job = xzalloc(size);
    job->id = xstrdup(id);
    job->drv = drv;
    job->graph = g;
    job->events = blk_graph_host(g)->events;
    job->status = JOB_STATUS_UNDEFINED;
    job->auto_finalize = auto_finalize;
    job->auto_dismiss = auto_dismiss;
    job->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
    job->on_source_error = BLOCKDEV_ON_ERROR_REPORT;
    job->on_target_error = BLOCKDEV_ON_ERROR_REPORT;
    if (blk_graph_host(g)->loop != NULL) {
        job->timer = loop_timer_new(blk_graph_host(g)->loop,
                                    job_timer_cb, job);
    }
    for (tail = blk_graph_jobs(g); *tail != NULL; tail = &(*tail)->next) {
        /* find the end */
    }
    *tail = job;
    job_set_status(job, JOB_STATUS_CREATED);
    return job;
}

static void job_unlink(Job *job)
{
    for (Job **p = blk_graph_jobs(job->graph); *p != NULL; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            return;
        }
    }
}

/* The driver lets go of what it holds, then the filter goes. */
static void job_clean(Job *job)
{
    if (job->drv->clean != NULL) {
        job->drv->clean(job);
    }
    job_remove_filter(job);
}

static void job_release_nodes(Job *job)
{
    for (unsigned i = 0; i < job->n_nodes; i++) {
        BlockNode *bs = job->nodes[i];
        char *user = xasprintf("block job '%s'", job->id);

        blk_node_remove_user(bs, user);
        free(user);
        if (bs->job == job) {
            bs->job = NULL;
        }
        if (bs->reopened_rw) {
            /* Opened read-write for the job (block-commit's base). */
            Error *err = NULL;
            if (!blk_reopen(bs, true, &err)) {
                log_error("block job '%s': %s", job->id,
                          error_get_pretty(err));
                error_free(err);
            }
        }
        blk_unref(bs);
    }
    job->n_nodes = 0;
}

/* Free the memory; a run still posted to the loop frees it instead. */
static void job_free_memory(Job *job)
{
    if (job->run_posted) {
        job->free_pending = true;
        return;
    }
    free(job->error);
    free(job->id);
    free(job);
}

static void job_free(Job *job)
{
    job_unlink(job);
    if (job->drv->free != NULL) {
        job->drv->free(job);
    }
    job_release_nodes(job);
    if (job->timer != NULL) {
        loop_timer_free(job->timer);
        job->timer = NULL;
    }
    job_free_memory(job);
}

bool job_claim_node(Job *job, BlockNode *bs, bool write, Error **errp)
{
    CLEANUP_FREE char *user = NULL;

    if (bs->job != NULL) {
        error_setg(errp, "Node '%s' is busy: block device is in use by "
                   "block job: %s", blk_node_name(bs),
                   JobType_str(bs->job->drv->type));
        return false;
    }
    if (bs->iothread_users > 0) {
        error_setg(errp, "Node '%s' is busy: an export serves it from an "
                   "iothread (a block job needs its clients on the main "
                   "loop)", blk_node_name(bs));
        return false;
    }
    if (job->n_nodes >= ARRAY_SIZE(job->nodes)) {
        error_setg(errp, "Too many nodes in one job");
        return false;
    }
    user = xasprintf("block job '%s'", job->id);
    if (!blk_node_add_user(bs, user, write, errp)) {
        return false;
    }
    blk_ref(bs);
    bs->job = job;
    job->nodes[job->n_nodes++] = bs;
    return true;
}

bool job_truncate_node(Job *job, BlockNode *bs, uint64_t size,
                       Error **errp)
{
    CLEANUP_FREE char *user = xasprintf("block job '%s'", job->id);

    return blk_truncate_for_user(bs, size, user, errp);
}

static void job_run_posted(void *opaque)
{
    Job *job = opaque;

    job->run_posted = false;
    if (job->free_pending) {
        job_free_memory(job);
        return;
    }
    if (!job->finished && job->status != JOB_STATUS_CREATED) {
        job->drv->run(job);
    }
}

void job_kick(Job *job)
{
    Loop *loop = blk_graph_host(job->graph)->loop;

    if (job->finished || job->run_posted) {
        return;
    }
    if (loop == NULL) {
        job->drv->run(job);
        return;
    }
    job->run_posted = true;
    loop_post(loop, job_run_posted, job);
}

void job_start(Job *job)
{
    job_set_status(job, JOB_STATUS_RUNNING);
    job_kick(job);
}

bool job_may_issue(const Job *job)
{
    return !job->finished && !job->cancelled && !job->user_paused &&
           (job->status == JOB_STATUS_RUNNING ||
            job->status == JOB_STATUS_READY);
}

bool job_is_cancelled(const Job *job)
{
    return job->cancelled && job->force_cancel;
}

uint64_t job_rate_check(Job *job, uint64_t bytes)
{
    uint64_t now = loop_now_us();

    if (job->speed <= 0) {
        return 0;
    }
    /* A leaky bucket: what was issued is paid off at speed bytes per
     * second; new bytes go out once the debt is paid. */
    if (job->rl_paid_us > now) {
        return job->rl_paid_us - now;
    }
    job->rl_paid_us = now + bytes * 1000000u / (uint64_t)job->speed;
    return 0;
}

void job_sleep(Job *job, uint64_t usec)
{
    if (job->timer != NULL) {
        loop_timer_arm(job->timer, usec);
    } else {
        job_kick(job);
    }
}

void job_progress_add(Job *job, int64_t done)
{
    job->progress_current += done;
}

bool job_is_block_job(const Job *job)
{
    return job->drv->type != JOB_TYPE_CREATE;
}

void job_progress_add_total(Job *job, int64_t more)
{
    job->progress_total += more;
}

void job_ready(Job *job)
{
    if (job->status != JOB_STATUS_RUNNING) {
        return;
    }
    job_set_status(job, JOB_STATUS_READY);
    qapi_event_send_block_job_ready(job->events, job->drv->type, job->id,
                                    job->progress_total,
                                    job->progress_current, job->speed);
}

static void job_pause_now(Job *job)
{
    job->user_paused = true;
    if (job->status == JOB_STATUS_RUNNING) {
        job_set_status(job, JOB_STATUS_PAUSED);
    } else if (job->status == JOB_STATUS_READY) {
        job_set_status(job, JOB_STATUS_STANDBY);
    }
}

BlockErrorAction job_io_error(Job *job, bool is_read, int err)
{
    BlockdevOnError on = is_read ? job->on_source_error
                                 : job->on_target_error;
    BlockErrorAction action;

    switch (on) {
    case BLOCKDEV_ON_ERROR_ENOSPC:
        action = err == -ENOSPC ? BLOCK_ERROR_ACTION_STOP
                                : BLOCK_ERROR_ACTION_REPORT;
        break;
    case BLOCKDEV_ON_ERROR_STOP:
        action = BLOCK_ERROR_ACTION_STOP;
        break;
    case BLOCKDEV_ON_ERROR_IGNORE:
        action = BLOCK_ERROR_ACTION_IGNORE;
        break;
    default:
        action = BLOCK_ERROR_ACTION_REPORT;
        break;
    }
    /* A cancelled job only reports: it is going away. */
    if (job->cancelled && action == BLOCK_ERROR_ACTION_STOP) {
        action = BLOCK_ERROR_ACTION_REPORT;
    }
    qapi_event_send_block_job_error(job->events, job->id,
                                    is_read ? IO_OPERATION_TYPE_READ
                                            : IO_OPERATION_TYPE_WRITE,
                                    action);
    if (action == BLOCK_ERROR_ACTION_STOP) {
        job->iostatus = err == -ENOSPC ? BLOCK_DEVICE_IO_STATUS_NOSPACE
                                       : BLOCK_DEVICE_IO_STATUS_FAILED;
        if (!job->user_paused) {
            job_pause_now(job);
        }
    }
    return action;
}

/* The end of a job: commit or abort, clean, the block job events,
 * concluded, and dismissed when auto-dismiss. */
static void job_conclude(Job *job)
{
    bool cancelled = job->cancelled && job->force_cancel;

    if (job->ret == 0 && !cancelled) {
        if (job->drv->commit != NULL) {
            job->drv->commit(job);
        }
    } else if (job->drv->abort != NULL) {
        job->drv->abort(job);
    }
    job_clean(job);
    job_release_nodes(job);
    if (!job_is_block_job(job)) {
        /* No BLOCK_JOB_* events for the others (create), as QEMU. */
    } else if (cancelled) {
        qapi_event_send_block_job_cancelled(job->events, job->drv->type,
                                            job->id, job->progress_total,
                                            job->progress_current,
                                            job->speed);
    } else {
        qapi_event_send_block_job_completed(job->events, job->drv->type,
                                            job->id, job->progress_total,
                                            job->progress_current,
                                            job->speed, job->error != NULL,
                                            job->error);
    }
    job_set_status(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss) {
        job_set_status(job, JOB_STATUS_NULL);
        job_free(job);
    }
}

void job_finish(Job *job, int ret, const char *msg)
{
    if (job->finished) {
        return;
    }
    job->finished = true;
    if (job->cancelled && job->force_cancel && ret == 0) {
        ret = -ECANCELED;
    }
    job->ret = ret;
    if (ret < 0 && ret != -ECANCELED) {
        job->error = xstrdup(msg != NULL ? msg : strerror(-ret));
    }
    if (job->status == JOB_STATUS_PAUSED ||
        job->status == JOB_STATUS_STANDBY) {
        /* A stopped job that is cancelled goes through running first. */
        job_set_status(job, job->status == JOB_STATUS_PAUSED
                            ? JOB_STATUS_RUNNING : JOB_STATUS_READY);
    }
    if (ret < 0) {
        job_set_status(job, JOB_STATUS_ABORTING);
        job_conclude(job);
        return;
    }
    job_set_status(job, JOB_STATUS_WAITING);
    job_set_status(job, JOB_STATUS_PENDING);
    if (job_is_block_job(job)) {
        qapi_event_send_block_job_pending(job->events, job->drv->type,
                                          job->id);
    }
    if (job->auto_finalize) {
        job_conclude(job);
    }
}

void job_abort_created(Job *job)
{
    if (job->drv->abort != NULL) {
        job->drv->abort(job);
    }
    job_early_fail(job);
}

void job_early_fail(Job *job)
{
    job->finished = true;
    job->ret = -ECANCELED;
    job_clean(job);
    job_set_status(job, JOB_STATUS_NULL);
    job_free(job);
}

/* ---- verbs ---------------------------------------------------------- */

bool job_verb_check(const Job *job, JobVerb verb, Error **errp)
{
    if (!job_verbs[verb][job->status]) {
        error_setg(errp, "Job '%s' in state '%s' cannot accept command "
                   "verb '%s'", job->id, JobStatus_str(job->status),
                   JobVerb_str(verb));
        return false;
    }
    return true;
}

bool job_user_pause(Job *job, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_PAUSE, errp)) {
        return false;
    }
    if (job->user_paused) {
        error_setg(errp, "Job is already paused");
        return false;
    }
    job_pause_now(job);
    return true;
}

bool job_user_resume(Job *job, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_RESUME, errp)) {
        return false;
    }
    if (!job->user_paused) {
        error_setg(errp, "Can't resume a job that was not paused");
        return false;
    }
    job->user_paused = false;
    job->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
    if (job->status == JOB_STATUS_PAUSED) {
        job_set_status(job, JOB_STATUS_RUNNING);
    } else if (job->status == JOB_STATUS_STANDBY) {
        job_set_status(job, JOB_STATUS_READY);
    }
    job_kick(job);
    return true;
}

bool job_user_cancel(Job *job, bool force, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_CANCEL, errp)) {
        return false;
    }
    if (job->status == JOB_STATUS_CREATED) {
        job->cancelled = job->force_cancel = true;
        job_finish(job, -ECANCELED, NULL);
        return true;
    }
    if (job->status == JOB_STATUS_PENDING) {
        /* Done working, not finalized: abort. */
        job->cancelled = job->force_cancel = true;
        job->ret = -ECANCELED;
        job_set_status(job, JOB_STATUS_ABORTING);
        job_conclude(job);
        return true;
    }
    job->cancelled = true;
    /* Only a ready job that can complete has a soft cancel. */
    job->force_cancel = force || job->status != JOB_STATUS_READY ||
                        job->drv->complete == NULL;
    if (job->user_paused) {
        job->user_paused = false;
        job->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
        job_set_status(job, job->status == JOB_STATUS_STANDBY
                            ? JOB_STATUS_READY : JOB_STATUS_RUNNING);
    }
    job_kick(job);
    return true;
}

bool job_user_complete(Job *job, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_COMPLETE, errp)) {
        return false;
    }
    if (job->user_paused || job->cancelled || job->drv->complete == NULL) {
        error_setg(errp, "The active block job '%s' cannot be completed",
                   job->id);
        return false;
    }
    if (!job->drv->complete(job, errp)) {
        return false;
    }
    job_kick(job);
    return true;
}

bool job_user_finalize(Job *job, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_FINALIZE, errp)) {
        return false;
    }
    job_conclude(job);
    return true;
}

bool job_user_dismiss(Job *job, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_DISMISS, errp)) {
        return false;
    }
    job_set_status(job, JOB_STATUS_NULL);
    job_free(job);
    return true;
}

bool job_set_speed(Job *job, int64_t speed, Error **errp)
{
    if (!job_verb_check(job, JOB_VERB_SET_SPEED, errp)) {
        return false;
    }
    if (speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    job->speed = speed;
    job->rl_paid_us = 0;
    job_kick(job);
    return true;
}

int job_walk_depth(BlockNode *bs, uint64_t len,
                   void (*fn)(void *opaque, uint64_t pos, uint64_t n,
                              int depth),
                   void *opaque)
{
    uint64_t pos = 0;

    while (pos < len) {
        uint64_t pnum = 0;
        int depth = blk_allocation_depth(bs, pos, len - pos, &pnum);

        if (depth < 0) {
            return depth;
        }
        fn(opaque, pos, pnum, depth);
        pos += pnum;
    }
    return 0;
}

void job_cancel_all(BlockGraph *g)
{
    Job *next;

    for (Job *j = job_first(g); j != NULL; j = next) {
        next = j->next;          /* run may conclude and free j */
        if (!j->finished) {
            j->cancelled = j->force_cancel = true;
            j->user_paused = false;
            if (j->inflight == 0) {
                j->drv->run(j);
            }
        }
    }
}

void job_free_all(BlockGraph *g)
{
    Job *j;

    job_cancel_all(g);
    while ((j = job_first(g)) != NULL) {
        /* Concluded jobs were cleaned; a pending one (auto-finalize
         * off) or one stuck in flight was not. */
        if (j->status != JOB_STATUS_CONCLUDED) {
            job_clean(j);
        }
        job_free(j);
    }
}
