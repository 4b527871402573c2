/* qmp-transaction.c - the transaction command: block operations done
 * at one point in time, all or none (QEMU's qapi/transaction.json).
 *
 *   transaction ──close the write gate──> writes in flight finish
 *       (the reply waits; new writes queue)
 *   ──prepare each action in order──> one fails: abort the prepared
 *       ones in reverse order; the error is the failed action's
 *   ──all prepared: commit each──> open the gate ──> reply
 *
 * prepare does the action's work where it can be undone (a bitmap is
 * added, cleared, merged into, enabled or disabled with the old state
 * kept; a backup job is set up, its copy-before-write hook on the
 * source from this point in time); commit cannot fail (a removed
 * bitmap is released, a backup job starts).  Everything here runs on
 * the loop thread; only the guests' writes are held (blk_write_gate),
 * reads and jobs go on. */
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "blockdev/job.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/util.h"

typedef struct TxnAction {
    const TransactionAction *a;
    DirtyBitmap *bm;             /* the bitmap the action changed */
    HBitmap *saved;              /* clear, merge: its bits before */
    bool was_enabled;            /* enable, disable: its state before */
    Job *job;                    /* blockdev-backup: set up, not started */
} TxnAction;

typedef struct Txn {
    QmpCtx ctx;
    QmpPending *reply;           /* NULL: answered synchronously */
    TransactionActionList *actions;   /* a copy when deferred */
    bool own_actions;
    bool finished;               /* txn_drained ran */
    bool ok;                     /* its result, and err */
    Error *err;
} Txn;

/* The actions' own bitmap commands, split into prepare and undo. */
static DirtyBitmap *txn_bitmap(QmpCtx *ctx, const BlockDirtyBitmap *b,
                               unsigned check, Error **errp)
{
    DirtyBitmap *bm = blk_dirty_bitmap_lookup(ctx->graph, b->node, b->name,
                                              errp);

    if (bm == NULL || !dirty_bitmap_check(bm, check, errp)) {
        return NULL;
    }
    return bm;
}

static HBitmap *txn_save_bits(DirtyBitmap *bm)
{
    BlockNode *bs = dirty_bitmap_node(bm);
    HBitmap *copy;

    blk_dirty_bitmap_lock(bs);
    copy = hbm_copy(dirty_bitmap_bits(bm));
    blk_dirty_bitmap_unlock(bs);
    return copy;
}

static void txn_restore_bits(DirtyBitmap *bm, const HBitmap *saved)
{
    BlockNode *bs = dirty_bitmap_node(bm);

    blk_dirty_bitmap_lock(bs);
    hbm_reset_all(dirty_bitmap_bits(bm));
    hbm_merge(dirty_bitmap_bits(bm), saved);
    blk_dirty_bitmap_unlock(bs);
}

static bool txn_prepare(QmpCtx *ctx, TxnAction *t, Error **errp)
{
    const TransactionAction *a = t->a;
    const BlockDirtyBitmap *b;

    switch (a->type) {
    case TRANSACTION_ACTION_KIND_ABORT:
        error_setg(errp, "Transaction aborted using Abort action");
        return false;
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD: {
        const BlockDirtyBitmapAdd *add = a->u.block_dirty_bitmap_add.data;

        if (!qmp_block_dirty_bitmap_add(ctx, add, errp)) {
            return false;
        }
        t->bm = blk_dirty_bitmap_lookup(ctx->graph, add->node, add->name,
                                        NULL);
        return true;
    }
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE:
        b = a->u.block_dirty_bitmap_remove.data;
        t->bm = blk_dirty_bitmap_remove_prepare(ctx->graph, b->node,
                                                b->name, errp);
        if (t->bm == NULL) {
            return false;
        }
        /* Nothing else uses it until the commit releases it. */
        dirty_bitmap_set_busy(t->bm, true);
        return true;
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_CLEAR:
        b = a->u.block_dirty_bitmap_clear.data;
        t->bm = txn_bitmap(ctx, b, BM_CHECK_DEFAULT, errp);
        if (t->bm == NULL) {
            return false;
        }
        t->saved = txn_save_bits(t->bm);
        return qmp_block_dirty_bitmap_clear(ctx, b, errp);
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE:
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_DISABLE: {
        bool enable =
            a->type == TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE;

        b = enable ? a->u.block_dirty_bitmap_enable.data
                   : a->u.block_dirty_bitmap_disable.data;
        t->bm = txn_bitmap(ctx, b, BM_CHECK_ALLOW_RO, errp);
        if (t->bm == NULL) {
            return false;
        }
        t->was_enabled = dirty_bitmap_enabled(t->bm);
        dirty_bitmap_set_enabled(t->bm, enable);
        return true;
    }
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_MERGE: {
        const BlockDirtyBitmapMerge *m = a->u.block_dirty_bitmap_merge.data;

        t->bm = blk_dirty_bitmap_lookup(ctx->graph, m->node, m->target,
                                        errp);
        if (t->bm == NULL) {
            return false;
        }
        t->saved = txn_save_bits(t->bm);
        return qmp_block_dirty_bitmap_merge(ctx, m, errp);
    }
    case TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP:
        t->job = backup_prepare(ctx, a->u.blockdev_backup.data, errp);
        return t->job != NULL;
    default:
        break;
    }
    error_setg(errp, "Unknown transaction action");
    return false;
}

/* Undo a prepared action (reverse order). */
static void txn_abort(TxnAction *t)
{
    switch (t->a->type) {
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD:
        if (t->bm != NULL) {
            blk_dirty_bitmap_release(t->bm);
        }
        break;
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE:
        /* Its stored copy is gone; it stays persistent, so closing the
         * node stores it again. */
        dirty_bitmap_set_busy(t->bm, false);
        break;
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_CLEAR:
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_MERGE:
        txn_restore_bits(t->bm, t->saved);
        break;
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE:
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_DISABLE:
        dirty_bitmap_set_enabled(t->bm, t->was_enabled);
        break;
    case TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP:
        job_abort_created(t->job);
        break;
    default:
        break;
    }
}

static void txn_commit(TxnAction *t)
{
    switch (t->a->type) {
    case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE:
        blk_dirty_bitmap_release(t->bm);
        break;
    case TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP:
        job_start(t->job);
        break;
    default:
        break;
    }
}

/* The gate is closed and nothing written is in flight: do it all. */
static bool txn_run(Txn *txn, Error **errp)
{
    size_t n = txn->actions->n, done;
    CLEANUP_FREE TxnAction *t = xcalloc(n ? n : 1, sizeof(*t));

    for (done = 0; done < n; done++) {
        t[done].a = txn->actions->v[done];
        if (!txn_prepare(&txn->ctx, &t[done], errp)) {
            break;
        }
    }
    if (done < n) {
        /* The failed one may have changed something before failing
         * (a merge into a copy does not; a clear checked first). */
        while (done-- > 0) {
            txn_abort(&t[done]);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            txn_commit(&t[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        hbm_free(t[i].saved);
    }
    return done == n;
}

static void txn_free(Txn *txn)
{
    if (txn->own_actions) {
        qapi_free_TransactionActionList(txn->actions);
    }
    error_free(txn->err);
    free(txn);
}

/* The gate is closed and the last write in flight finished: inside
 * blk_write_gate_close() when none was, else later from the loop. */
static void txn_drained(void *opaque)
{
    Txn *txn = opaque;

    txn->ok = txn_run(txn, &txn->err);
    blk_write_gate_open(txn->ctx.graph);
    txn->finished = true;
    if (txn->reply != NULL) {
        qmp_complete(txn->reply, NULL, txn->err);
        txn->err = NULL;
        txn_free(txn);
    }
}

/* Nodes the actions name that an export on an I/O thread uses: its
 * writes do not pass the gate (block.h). */
static bool txn_check_iothreads(QmpCtx *ctx, const TransactionActionList *l,
                                Error **errp)
{
    for (size_t i = 0; i < l->n; i++) {
        const TransactionAction *a = l->v[i];
        const char *names[2] = { NULL, NULL };

        switch (a->type) {
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD:
            names[0] = a->u.block_dirty_bitmap_add.data->node;
            break;
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE:
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_CLEAR:
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE:
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_DISABLE:
            /* The same wrapper type for all four. */
            names[0] = a->u.block_dirty_bitmap_clear.data->node;
            break;
        case TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_MERGE:
            names[0] = a->u.block_dirty_bitmap_merge.data->node;
            break;
        case TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP:
            names[0] = a->u.blockdev_backup.data->device;
            names[1] = a->u.blockdev_backup.data->target;
            break;
        default:
            break;
        }
        for (int k = 0; k < 2; k++) {
            BlockNode *bs = names[k] != NULL
                            ? blk_find_node(ctx->graph, names[k]) : NULL;

            if (bs != NULL && bs->iothread_users > 0) {
                error_setg(errp, "Node '%s' is used by an export on an "
                           "I/O thread: a transaction cannot hold its "
                           "writes", names[k]);
                return false;
            }
        }
    }
    return true;
}

static TransactionActionList *txn_copy(const TransactionActionList *l)
{
    CLEANUP_JSON json_object *j = qapi_TransactionActionList_to_json(l);
    TransactionActionList *copy = NULL;

    if (!qapi_parse_TransactionActionList(j, NULL, 0, &copy, NULL)) {
        return NULL;
    }
    return copy;
}

bool qmp_transaction(QmpCtx *ctx, const QmpTransactionArgs *args,
                     Error **errp)
{
    Txn *txn;
    bool ok;

    if (args->has_properties && args->properties->has_completion_mode &&
        args->properties->completion_mode !=
            ACTION_COMPLETION_MODE_INDIVIDUAL) {
        error_setg(errp, "completion-mode 'grouped' is not supported");
        return false;
    }
    if (!txn_check_iothreads(ctx, args->actions, errp)) {
        return false;
    }
    txn = XNEW(Txn);
    txn->ctx = *ctx;
    txn->actions = args->actions;          /* borrowed for now */
    if (!blk_write_gate_close(ctx->graph, txn_drained, txn)) {
        error_setg(errp, "Another transaction is running");
        txn_free(txn);
        return false;
    }
    if (!txn->finished) {
        /* Writes in flight: answer once they are done. */
        txn->reply = qmp_defer(ctx);
        txn->actions = txn_copy(args->actions);
        txn->own_actions = true;
        if (txn->reply != NULL && txn->actions != NULL) {
            return true;
        }
        /* The command line or a script cannot wait (no monitor). */
        blk_write_gate_open(ctx->graph);
        if (txn->reply != NULL) {
            Error *err = NULL;

            error_setg(&err, "Could not copy the transaction's actions");
            qmp_complete(txn->reply, NULL, err);
            txn_free(txn);
            return true;
        }
        txn_free(txn);
        error_setg(errp, "Writes are in flight: a transaction from here "
                   "cannot wait for them");
        return false;
    }
    ok = txn->ok;
    if (!ok) {
        error_propagate(errp, txn->err);
        txn->err = NULL;
    }
    txn_free(txn);
    return ok;
}
