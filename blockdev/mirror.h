/* mirror.h - the mirror job (blockdev-mirror, active block-commit):
 * see mirror.c.  Loop thread.
 */
#ifndef BLOCKD_BLOCKDEV_MIRROR_H
#define BLOCKD_BLOCKDEV_MIRROR_H

#include <stdbool.h>
#include <stdint.h>

#include "blockdev/block.h"
#include "qapi-types.h"
#include "util/error.h"

/* Active commit: a mirror of top (the node exports and parents use)
 * into base, a node of its backing chain, copying what the layers
 * above base allocate; ready once copied, job-complete pivots every
 * user of top to base (QEMU's commit_active_start).  The caller
 * checked the chain and that base is writable and not smaller.
 * filter_node_name (or NULL): a mirror_top node above top meanwhile. */
bool mirror_start_active_commit(BlockGraph *g, const char *id,
                                BlockNode *top, BlockNode *base,
                                const char *filter_node_name,
                                int64_t speed, BlockdevOnError on_error,
                                bool auto_finalize, bool auto_dismiss,
                                Error **errp);

#endif
