/* blkdebug.c - a test tool: the "blkdebug" filter fails, delays or holds
 * the requests its rules match, and passes everything else to its
 * "image" child untouched (QEMU's blkdebug, with a compact rule form).
 *
 *   export ──> [blkdebug] ──image──> [qcow2] ──file──> [file]
 *   [qcow2] ──file──> [blkdebug] ──image──> [file]     (metadata errors)
 *
 * A request meets its node's rules in this order: every stall rule that
 * fires holds it until x-blkdebug-resume releases the rule's tag, every
 * delay rule that fires sleeps, then the first error rule that fires
 * fails it with the rule's errno (the child never sees it).  A rule
 * matches by kind (iotype), by a 512-byte sector the request covers,
 * lets `skip` matching requests through first, and with `once` fires
 * one time only.
 *
 * Requests run on worker threads (the node is never aio_inline), so a
 * held request holds a worker: the per-node limit of blk_aio_submit()
 * keeps the others serving.  A rule's counters and the held requests
 * are under the node's mutex; x-blkdebug-resume runs on the loop thread.
 * A synchronous request made on the loop thread itself (opening a
 * qcow2 over the node from the command line) is never held: nothing
 * could release it, the daemon would hang.  Stall rules let it by
 * without counting it (skip, once, fired) and the node logs a warning
 * once; delay and error rules apply as everywhere.
 */
#include "blockdev/block.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qapi-commands.h"
#include "util/log.h"
#include "util/loop.h"
#include "util/util.h"

#define BLKDEBUG_SECTOR 512

typedef enum BlkdebugAction {
    BLKDEBUG_ERROR,
    BLKDEBUG_DELAY,
    BLKDEBUG_STALL,
} BlkdebugAction;

typedef struct BlkdebugRuleState {
    BlkdebugAction action;
    int iotype;                  /* BlkdebugIOType, or -1 for any */
    int64_t sector;              /* -1: any */
    uint64_t skip;               /* matching requests still to let by */
    bool once;
    bool off;                    /* fires no more (once, or released) */
    bool released;               /* STALL: x-blkdebug-resume let go */
    int err;                     /* ERROR: positive errno */
    uint64_t delay_ns;           /* DELAY */
    char *tag;                   /* STALL */
} BlkdebugRuleState;

typedef struct BlkdebugState {
    pthread_mutex_t lock;
    pthread_cond_t released;     /* a stall rule was turned off */
    BlkdebugRuleState *rules;
    size_t nrules;
    int64_t stalled;             /* requests held now */
    int64_t fired;
    bool warned_loop;            /* a stall was skipped on the loop */
} BlkdebugState;

/* The members every rule has (BlkdebugRule, the schema base). */
#define BLKDEBUG_ADD_RULE(s, action, r) \
    blkdebug_add_rule((s), (action), (r)->has_iotype, (r)->iotype, \
                      (r)->sector, (r)->skip, (r)->once)

static void blkdebug_add_rule(BlkdebugState *s, BlkdebugAction action,
                              bool has_iotype, BlkdebugIOType iotype,
                              int64_t sector, uint64_t skip, bool once)
{
    BlkdebugRuleState *rs;

    s->rules = xrealloc(s->rules, (s->nrules + 1) * sizeof(*s->rules));
    rs = &s->rules[s->nrules++];
    memset(rs, 0, sizeof(*rs));
    rs->action = action;
    rs->iotype = has_iotype ? (int)iotype : -1;
    rs->sector = sector;
    rs->skip = skip;
    rs->once = once;
}

static void blkdebug_close(BlockNode *bs);

static bool blkdebug_open(BlockNode *bs, const void *opts, Error **errp)
{
    const BlockdevOptionsBlkdebug *o = opts;
    BlkdebugState *s = bs->opaque;

    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->released, NULL);
    for (size_t i = 0; o->stall != NULL && i < o->stall->n; i++) {
        const BlkdebugStallOptions *r = o->stall->v[i];
        BLKDEBUG_ADD_RULE(s, BLKDEBUG_STALL, r);
        s->rules[s->nrules - 1].tag = xstrdup(r->tag);
    }
    for (size_t i = 0; o->inject_delay != NULL && i < o->inject_delay->n;
         i++) {
        const BlkdebugInjectDelayOptions *r = o->inject_delay->v[i];
        BLKDEBUG_ADD_RULE(s, BLKDEBUG_DELAY, r);
        s->rules[s->nrules - 1].delay_ns = (uint64_t)r->delay_ms * 1000000u;
    }
    for (size_t i = 0; o->inject_error != NULL && i < o->inject_error->n;
         i++) {
        const BlkdebugInjectErrorOptions *r = o->inject_error->v[i];
        if (r->q_errno <= 0 || r->q_errno >= 4096) {
            error_setg(errp, "Parameter 'errno' expects a positive error "
                       "number below 4096");
            blkdebug_close(bs);   /* not opened: close will not run */
            return false;
        }
        BLKDEBUG_ADD_RULE(s, BLKDEBUG_ERROR, r);
        s->rules[s->nrules - 1].err = (int)r->q_errno;
    }
    if (!blk_open_child(bs, "file", o->image, errp)) {
        blkdebug_close(bs);
        return false;
    }
    bs->request_alignment = bs->file->request_alignment;
    bs->max_transfer = bs->file->max_transfer;
    return true;
}

static void blkdebug_close(BlockNode *bs)
{
    BlkdebugState *s = bs->opaque;

    for (size_t i = 0; i < s->nrules; i++) {
        free(s->rules[i].tag);
    }
    free(s->rules);
    pthread_cond_destroy(&s->released);
    pthread_mutex_destroy(&s->lock);
}

/* Does rule r fire for this request (and count it)?  Under s->lock. */
static bool blkdebug_fires(BlkdebugState *s, BlkdebugRuleState *r,
                           BlkdebugIOType type, uint64_t offset,
                           uint64_t bytes)
{
    if (r->off || (r->iotype >= 0 && r->iotype != (int)type)) {
        return false;
    }
    if (r->sector >= 0) {
        uint64_t pos = (uint64_t)r->sector * BLKDEBUG_SECTOR;
        /* A flush covers everything; other requests their range. */
        if (type != BLKDEBUG_IO_TYPE_FLUSH &&
            (pos + BLKDEBUG_SECTOR <= offset || pos >= offset + bytes)) {
            return false;
        }
    }
    if (r->skip > 0) {
        r->skip--;
        return false;
    }
    if (r->once) {
        r->off = true;
    }
    s->fired++;
    return true;
}

static void blkdebug_sleep_ns(uint64_t ns)
{
    struct timespec ts = {
        .tv_sec = (time_t)(ns / 1000000000u),
        .tv_nsec = (long)(ns % 1000000000u),
    };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* the rest of the time is in ts */
    }
}

/* Apply the rules to one request: 0 (pass it on) or -errno.  Worker
 * thread (may block), or the loop thread (never held, see above). */
static int blkdebug_check(BlockNode *bs, BlkdebugIOType type,
                          uint64_t offset, uint64_t bytes)
{
    BlkdebugState *s = bs->opaque;
    bool on_loop = bs->graph != NULL &&
                   loop_is_current(blk_graph_host(bs->graph)->loop);
    uint64_t delay_ns = 0;
    int err = 0;

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nrules; i++) {
        BlkdebugRuleState *r = &s->rules[i];

        if (r->action == BLKDEBUG_ERROR && err != 0) {
            continue;                 /* the first error rule wins */
        }
        if (r->action == BLKDEBUG_STALL && on_loop) {
            if (!s->warned_loop) {
                s->warned_loop = true;
                log_warn("blkdebug '%s': a request on the loop thread is "
                         "not stalled (nothing could release it)",
                         blk_node_name(bs));
            }
            continue;
        }
        if (!blkdebug_fires(s, r, type, offset, bytes)) {
            continue;
        }
        switch (r->action) {
        case BLKDEBUG_STALL:
            /* The rules array never moves after open: r stays valid. */
            s->stalled++;
            while (!r->released) {
                pthread_cond_wait(&s->released, &s->lock);
            }
            s->stalled--;
            break;
        case BLKDEBUG_DELAY:
            delay_ns += r->delay_ns;
            break;
        case BLKDEBUG_ERROR:
            err = r->err;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (delay_ns > 0) {
        blkdebug_sleep_ns(delay_ns);
    }
    return -err;
}

static int64_t blkdebug_get_length(BlockNode *bs)
{
    return blk_getlength(bs->file);
}

static int blkdebug_pread(BlockNode *bs, uint64_t offset, uint64_t bytes,
                          void *buf, uint32_t flags)
{
    int ret = blkdebug_check(bs, BLKDEBUG_IO_TYPE_READ, offset, bytes);

    return ret < 0 ? ret : blk_pread(bs->file, offset, bytes, buf, flags);
}

static int blkdebug_pwrite(BlockNode *bs, uint64_t offset, uint64_t bytes,
                           const void *buf, uint32_t flags)
{
    int ret = blkdebug_check(bs, BLKDEBUG_IO_TYPE_WRITE, offset, bytes);

    return ret < 0 ? ret : blk_pwrite(bs->file, offset, bytes, buf, flags);
}

static int blkdebug_pwrite_zeroes(BlockNode *bs, uint64_t offset,
                                  uint64_t bytes, uint32_t flags)
{
    int ret = blkdebug_check(bs, BLKDEBUG_IO_TYPE_WRITE_ZEROES, offset,
                             bytes);

    return ret < 0 ? ret : blk_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int blkdebug_pdiscard(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = blkdebug_check(bs, BLKDEBUG_IO_TYPE_DISCARD, offset, bytes);

    return ret < 0 ? ret : blk_pdiscard(bs->file, offset, bytes);
}

/* The generic blk_flush() flushes the child after this. */
static int blkdebug_flush(BlockNode *bs)
{
    return blkdebug_check(bs, BLKDEBUG_IO_TYPE_FLUSH, 0, 0);
}

static int blkdebug_prefetch(BlockNode *bs, uint64_t offset, uint64_t bytes)
{
    int ret = blkdebug_check(bs, BLKDEBUG_IO_TYPE_READ, offset, bytes);

    return ret < 0 ? ret : blk_prefetch(bs->file, offset, bytes);
}

static int blkdebug_block_status(BlockNode *bs, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint64_t *map, BlockNode **file)
{
    int ret = blk_block_status(bs->file, offset, bytes, pnum);

    if (ret < 0) {
        return ret;
    }
    *map = offset;
    *file = bs->file;
    return (ret & (BLK_STATUS_DATA | BLK_STATUS_ZERO)) |
           BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
}

static bool blkdebug_truncate(BlockNode *bs, uint64_t size, Error **errp)
{
    return blk_truncate(bs->file, size, errp);
}

/* A filter: what the child does. */
static void blkdebug_get_caps(BlockNode *bs, BlockCaps *caps)
{
    blk_get_caps(bs->file, caps);
}

const BlockDriver blk_drv_blkdebug = {
    .format_name = "blkdebug",
    .instance_size = sizeof(BlkdebugState),
    /* Bounds are the child's: over a file, reads past the end return
     * zeroes and writes grow it (a qcow2 above appends clusters). */
    .is_protocol = true,
    .is_filter = true,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .get_length = blkdebug_get_length,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .pdiscard = blkdebug_pdiscard,
    .flush = blkdebug_flush,
    .block_status = blkdebug_block_status,
    .truncate = blkdebug_truncate,
    .get_caps = blkdebug_get_caps,
    .prefetch = blkdebug_prefetch,
};

/* ---- QMP (loop thread) ------------------------------------------- */

static BlkdebugState *blkdebug_lookup(QmpCtx *ctx, const char *node_name,
                                      Error **errp)
{
    BlockNode *bs = blk_lookup_node(ctx->graph, node_name, errp);

    if (bs == NULL) {
        return NULL;
    }
    if (bs->drv != &blk_drv_blkdebug) {
        error_setg(errp, "Node '%s' is not a blkdebug node", node_name);
        return NULL;
    }
    return bs->opaque;
}

static BlkdebugInfo *blkdebug_state_info(BlkdebugState *s)
{
    BlkdebugInfo *info = XNEW(BlkdebugInfo);

    info->stalled = s->stalled;
    info->fired = s->fired;
    return info;
}

bool qmp_x_blkdebug_resume(QmpCtx *ctx, const QmpXBlkdebugResumeArgs *args,
                           BlkdebugInfo **ret, Error **errp)
{
    BlkdebugState *s = blkdebug_lookup(ctx, args->node_name, errp);
    bool found = false;

    if (s == NULL) {
        return false;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nrules; i++) {
        BlkdebugRuleState *r = &s->rules[i];
        if (r->action == BLKDEBUG_STALL && strcmp(r->tag, args->tag) == 0) {
            r->released = r->off = true;
            found = true;
        }
    }
    pthread_cond_broadcast(&s->released);
    *ret = blkdebug_state_info(s);
    pthread_mutex_unlock(&s->lock);
    if (!found) {
        qapi_free_BlkdebugInfo(*ret);
        *ret = NULL;
        error_setg(errp, "No stall rule with tag '%s' on node '%s'",
                   args->tag, args->node_name);
        return false;
    }
    return true;
}

bool qmp_x_query_blkdebug(QmpCtx *ctx, const QmpXQueryBlkdebugArgs *args,
                          BlkdebugInfo **ret, Error **errp)
{
    BlkdebugState *s = blkdebug_lookup(ctx, args->node_name, errp);

    if (s == NULL) {
        return false;
    }
    pthread_mutex_lock(&s->lock);
    *ret = blkdebug_state_info(s);
    pthread_mutex_unlock(&s->lock);
    return true;
}
