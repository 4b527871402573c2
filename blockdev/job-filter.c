/* job-filter.c - the pass-through node a job puts above a node while it
 * runs, when the user names one with filter-node-name.
 *
 * QEMU inserts a filter node for each job (mirror_top for mirror and
 * active commit, commit_top for commit, copy-on-read for stream,
 * copy-before-write for backup) and lets filter-node-name name it.
 * blockd's jobs see writes through a BlockWriteHook on the node itself,
 * so the filter does no work: it passes every request down and exists
 * so that the graph, the queries and the user's node names look as in
 * QEMU.  It is inserted only when named.  It has no block_status: for
 * block status it is no layer, the node below is. */
#include "blockdev/job.h"

#include <assert.h>
#include <stddef.h>

#include "util/util.h"

static int64_t job_filter_get_length(BlockNode *bs)
{
    return blk_getlength(bs->file);
}

static int job_filter_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                            void *buf, uint32_t flags)
{
    return blk_pread(bs->file, offset, bytes, buf, flags);
}

static int job_filter_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                             const void *buf, uint32_t flags)
{
    return blk_pwrite(bs->file, offset, bytes, buf, flags);
}

static int job_filter_pwrite_zeroes(BlockNode *bs, uint64_t offset,
                                    uint64_t bytes, uint32_t flags)
{
    return blk_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int job_filter_pdiscard(BlockNode *bs, uint64_t offset,
                               uint64_t bytes)
{
    return blk_pdiscard(bs->file, offset, bytes);
}

static void job_filter_get_caps(BlockNode *bs, BlockCaps *caps)
{
    blk_get_caps(bs->file, caps);
    caps->splice_read = false;
}

#define JOB_FILTER_DRIVER(name) {                                       \
    .format_name = (name),                                              \
    .is_filter = true,                                                  \
    .get_length = job_filter_get_length,                                \
    .pread = job_filter_pread,                                          \
    .pwrite = job_filter_pwrite,                                        \
    .pwrite_zeroes = job_filter_pwrite_zeroes,                          \
    .pdiscard = job_filter_pdiscard,                                    \
    .get_caps = job_filter_get_caps,                                    \
}

/* Indexed by JobFilterKind; the names are QEMU's drivers'.  None is a
 * blockdev-add driver. */
static const BlockDriver job_filter_drivers[] = {
    [JOB_FILTER_MIRROR_TOP] = JOB_FILTER_DRIVER("mirror_top"),
    [JOB_FILTER_COMMIT_TOP] = JOB_FILTER_DRIVER("commit_top"),
    [JOB_FILTER_COPY_ON_READ] = JOB_FILTER_DRIVER("copy-on-read"),
    [JOB_FILTER_COPY_BEFORE_WRITE] = JOB_FILTER_DRIVER("copy-before-write"),
};

bool job_insert_filter(Job *job, BlockNode *bs, JobFilterKind kind,
                       const char *node_name, Error **errp)
{
    BlockNode *f;

    assert(job->filter == NULL && kind < ARRAY_SIZE(job_filter_drivers));
    f = blk_insert_filter(bs, &job_filter_drivers[kind], node_name, errp);
    if (f == NULL) {
        return false;
    }
    job->filter = f;
    /* Cannot fail: a new node has no job and no resize. */
    job_claim_node(job, f, false, NULL);
    return true;
}

void job_remove_filter(Job *job)
{
    BlockNode *f = job->filter;

    if (f == NULL) {
        return;
    }
    /* Whatever still uses the filter (all its parents and exports, or
     * none after a pivot) goes back to the node below; the job's claim
     * holds the filter until the job lets its nodes go. */
    job->filter = NULL;
    blk_replace_node(f, f->file);
    blk_unref(f);
}
