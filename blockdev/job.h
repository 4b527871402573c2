/* job.h - long-running jobs on block nodes, with QEMU's job model
 * (qapi/job.json): states, verbs, events.
 *
 * A job is a state machine on the loop thread.  Its driver issues
 * asynchronous I/O (the worker pool, blockdev/io.c) in bounded chunks
 * and never blocks the loop, so QMP and the exports keep being served
 * while it works.  The states and who moves the job between them:
 *
 *   created ──job_start──> running ──driver: job_ready──> ready
 *                           │  ^                           │  ^
 *                 job-pause │  │ job-resume     job-pause │  │ job-resume
 *        (or error "stop")  v  │                           v  │
 *                          paused                        standby
 *
 *   running/ready ──driver: job_finish(0)──> waiting ──> pending
 *   pending ──auto-finalize or job-finalize──> (commit) ──> concluded
 *   any ──job_finish(<0) or cancel──> aborting ──> (abort) ──> concluded
 *   concluded ──auto-dismiss or job-dismiss──> null (freed)
 *
 * Each change emits JOB_STATUS_CHANGE; block jobs also emit
 * BLOCK_JOB_READY, BLOCK_JOB_PENDING, BLOCK_JOB_COMPLETED (success or
 * error), BLOCK_JOB_CANCELLED and BLOCK_JOB_ERROR, as QEMU does.  The
 * verbs are accepted in QEMU's states only (job_verb_check), else:
 * "Job 'ID' in state 'S' cannot accept command verb 'V'".
 *
 * Threads: everything here runs on the loop thread.
 */
#ifndef BLOCKD_BLOCKDEV_JOB_H
#define BLOCKD_BLOCKDEV_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "blockdev/block.h"
#include "qapi-types.h"
#include "util/error.h"
#include "util/loop.h"

typedef struct Job Job;
typedef struct JobDriver JobDriver;

/* What a kind of job does.  Every callback runs on the loop thread. */
struct JobDriver {
    JobType type;
    /* Do (more of) the work: issue I/O while job_may_issue() says so,
     * and call job_finish() once the work is done (or failed, or the job
     * is cancelled: job_is_cancelled()) and nothing is in flight.
     * Called when the job starts, on resume, cancel and set-speed, after
     * a job_sleep(), and whenever the driver calls job_kick().  Called
     * again while I/O is in flight: it must only issue what is missing. */
    void (*run)(Job *job);
    /* job-complete on a ready job: accept it (the driver then finishes
     * with job_finish(job, 0)) or fail.  NULL: the job cannot be
     * completed ("The active block job 'ID' cannot be completed"). */
    bool (*complete)(Job *job, Error **errp);
    /* The job succeeded (commit) or failed / was cancelled (abort):
     * apply or undo its effect on the graph.  Either may be NULL. */
    void (*commit)(Job *job);
    void (*abort)(Job *job);
    /* Release what the job holds (nodes, hooks, bitmaps); then the job
     * is concluded.  Runs once, after commit or abort.  May be NULL. */
    void (*clean)(Job *job);
    /* Free the driver's own fields (the Job itself is freed by the
     * core).  May be NULL. */
    void (*free)(Job *job);
};

/* A job.  A driver allocates a bigger struct with Job first
 * (job_create's size) and reaches its own fields with container_of. */
struct Job {
    char *id;                    /* unique among the graph's jobs */
    const JobDriver *drv;
    BlockGraph *graph;
    MonitorSet *events;          /* NULL: events go nowhere */
    JobStatus status;
    bool auto_finalize, auto_dismiss;
    bool cancelled;              /* cancel requested */
    bool force_cancel;           /* not a ready mirror's soft cancel */
    bool user_paused;            /* job-pause, or an error with "stop" */
    bool finished;               /* job_finish ran */
    int ret;                     /* 0 or -errno once finished */
    char *error;                 /* why it failed; NULL if it did not */
    /* Progress in bytes: done and the (growing) estimate of the total. */
    int64_t progress_current, progress_total;
    int64_t speed;               /* bytes per second; 0 = no limit */
    uint64_t rl_paid_us;         /* rate limit: when the bytes issued so
                                  * far are paid off (loop_now_us) */
    unsigned inflight;           /* driver's requests in flight ("busy") */
    BlockDeviceIoStatus iostatus;
    BlockdevOnError on_source_error, on_target_error;
    LoopTimer *timer;            /* job_sleep() */
    bool run_posted;             /* a run is posted to the loop */
    bool free_pending;           /* freed: the posted run frees memory */
    BlockNode *filter;           /* job_insert_filter()'s node, or NULL */
    BlockNode *nodes[4];         /* nodes claimed by job_claim_node() */
    unsigned n_nodes;
    Job *next;                   /* the graph's list, creation order */
};

/* A new job of the driver's kind, status created, on g's list: size
 * bytes (>= sizeof(Job)) zeroed, Job first.  Fails with QEMU's
 * messages when id is malformed ("Invalid job ID 'X'": a letter, then
 * letters, digits, '-', '.', '_') or taken ("Job ID 'X' already in
 * use").  The job is the graph's until it is dismissed. */
Job *job_create(BlockGraph *g, const JobDriver *drv, size_t size,
                const char *id, bool auto_finalize, bool auto_dismiss,
                Error **errp);
/* The driver is set up: created -> running, and run is called from the
 * loop. */
void job_start(Job *job);
/* Undo a job_create() whose setup failed before job_start() (no
 * events beyond "created"; clean and free run). */
void job_early_fail(Job *job);
/* blockdev-backup's job set up but not started (backup.c): from now
 * on writes to the source copy their old data first; job_start() starts
 * it, job_abort_created() undoes it (the transaction command).  NULL
 * with errp set, with blockdev-backup's messages. */
struct QmpCtx;
Job *backup_prepare(struct QmpCtx *ctx, const BlockdevBackup *args,
                    Error **errp);
/* Undo a job fully set up but not started (a transaction that failed
 * later): its driver's abort runs first, then as job_early_fail. */
void job_abort_created(Job *job);

/* Make bs the job's: it holds a reference and the user "block job
 * 'ID'" (blockdev-del refuses), and a second job on bs is refused with
 * "Node 'N' is busy: block device is in use by block job: TYPE".
 * write: the job writes bs (fails on a read-only node).  Released when
 * the job is cleaned up. */
bool job_claim_node(Job *job, BlockNode *bs, bool write, Error **errp);
/* Grow (or shrink) bs, which job claimed, to size: block commit's base
 * when it is smaller than top, as QEMU grows it.  Fails like
 * block_resize when anyone but the job uses bs (loop thread). */
bool job_truncate_node(Job *job, BlockNode *bs, uint64_t size,
                       Error **errp);

/* filter-node-name (job-filter.c): QEMU's filter driver a job puts
 * above the node it works on. */
typedef enum JobFilterKind {
    JOB_FILTER_MIRROR_TOP,       /* blockdev-mirror, active commit */
    JOB_FILTER_COMMIT_TOP,       /* block-commit below the active layer */
    JOB_FILTER_COPY_ON_READ,     /* block-stream */
    JOB_FILTER_COPY_BEFORE_WRITE,/* blockdev-backup */
} JobFilterKind;

/* Put a pass-through node named node_name, of kind's driver, above bs
 * (blk_insert_filter: bs's parents and exports use it).  The job claims
 * it; after the driver's clean it is taken out again, and what still
 * uses it goes back to bs (after a pivot that moved its users, nothing
 * does).  Fails (errp) on a bad or taken node name.  One per job. */
bool job_insert_filter(Job *job, BlockNode *bs, JobFilterKind kind,
                       const char *node_name, Error **errp);
/* The job's filter out now (job.c calls it after the driver's clean). */
void job_remove_filter(Job *job);

/* ---- for drivers ---------------------------------------------------- */

/* May the driver issue new I/O?  Not when paused, cancelled or
 * finished. */
bool job_may_issue(const Job *job);
/* Cancel requested (a forced cancel: stop and abort). */
bool job_is_cancelled(const Job *job);
/* Call run again soon (from the loop, once). */
void job_kick(Job *job);
/* Rate limit: the driver is about to issue bytes.  Returns 0 when it
 * may, else the microseconds to job_sleep() before it may issue them
 * (the bytes are not counted then). */
uint64_t job_rate_check(Job *job, uint64_t bytes);
/* Call run after usec (one timer per job; re-arming replaces). */
void job_sleep(Job *job, uint64_t usec);
/* A block job (every type but create): it emits the BLOCK_JOB_*
 * events and query-block-jobs lists it, as in QEMU. */
bool job_is_block_job(const Job *job);
/* On a worker, before a job's copy starts: fn(opaque, pos, n, depth)
 * for each extent of [0, len) of bs with its allocation depth
 * (blk_allocation_depth: 0 unallocated, 1 in bs itself, ...).  Returns
 * 0, or the first error of blk_allocation_depth. */
int job_walk_depth(BlockNode *bs, uint64_t len,
                   void (*fn)(void *opaque, uint64_t pos, uint64_t n,
                              int depth),
                   void *opaque);
void job_progress_add(Job *job, int64_t done);
void job_progress_add_total(Job *job, int64_t more);
/* A mirror-like job copied everything: running -> ready and
 * BLOCK_JOB_READY. */
void job_ready(Job *job);
/* An I/O request of the job failed with -err (< 0): is_read = reading
 * the source (on-source-error applies) else writing the target
 * (on-target-error).  Emits BLOCK_JOB_ERROR and returns the action:
 * ignore (go on), report (finish with the error), stop (the job is now
 * paused; resume calls run again, which should retry). */
BlockErrorAction job_io_error(Job *job, bool is_read, int err);
/* The driver is done and has nothing in flight: ret 0 = success, else
 * -errno (msg: the error text; NULL = strerror(-ret)).  A cancelled job
 * aborts whatever ret is. */
void job_finish(Job *job, int ret, const char *msg);

/* ---- verbs (QMP, loop thread) --------------------------------------- */

/* The job called id, or NULL.  job_get fails with "Job not found";
 * block_job_get with class DeviceNotActive "Block job 'ID' not found". */
Job *job_find(BlockGraph *g, const char *id);
Job *job_get(BlockGraph *g, const char *id, Error **errp);
Job *block_job_get(BlockGraph *g, const char *id, Error **errp);
/* QEMU's verb table: false with its message when status refuses verb. */
bool job_verb_check(const Job *job, JobVerb verb, Error **errp);
bool job_user_pause(Job *job, Error **errp);
bool job_user_resume(Job *job, Error **errp);
/* force false: a ready job that has a soft cancel (mirror) completes
 * without pivoting instead. */
bool job_user_cancel(Job *job, bool force, Error **errp);
bool job_user_complete(Job *job, Error **errp);
bool job_user_finalize(Job *job, Error **errp);
bool job_user_dismiss(Job *job, Error **errp);
bool job_set_speed(Job *job, int64_t speed, Error **errp);

/* The graph's jobs, creation order (NULL = none). */
Job *job_first(BlockGraph *g);
/* Cancel every job (quit, SIGTERM): they stop issuing I/O; each
 * aborts once its in-flight requests complete (the caller drains the
 * pool and runs the posted completions). */
void job_cancel_all(BlockGraph *g);
/* Graph teardown, after the drain: free every job left, cleaning any
 * that did not conclude (their nodes are released). */
void job_free_all(BlockGraph *g);

#endif
