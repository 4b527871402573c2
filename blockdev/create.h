/* create.h - image creation (blockdev-create) for file, raw and qcow2.
 *
 * A creation runs in three steps so that the long part never holds the
 * loop thread:
 *
 *     loop    blk_create_new()    check the options (QEMU's rules and
 *                                 messages), resolve and reference the
 *                                 node the image goes on
 *     worker  blk_create_run()    write the image; progress in bytes is
 *                                 readable meanwhile from any thread
 *     loop    blk_create_free()   drop the references
 *
 * What is written (QEMU's qcow2.txt and its qcow2/file-posix create):
 *   file   the file is created (or emptied) and sized; preallocation off
 *          (sparse), falloc (fallocate) or full (zeroes written)
 *   raw    the node is resized to size, then preallocated as for file
 *          (a blockd extension: QEMU's blockdev-create has no raw branch)
 *   qcow2  header, refcount table and blocks, L1 table (and with
 *          preallocation every L2 table and data cluster) written to the
 *          node, which is truncated to the image's length first; see
 *          qcow2-meta.h for the layout
 */
#ifndef BLOCKD_BLOCKDEV_CREATE_H
#define BLOCKD_BLOCKDEV_CREATE_H

#include <stdbool.h>
#include <stdint.h>

#include "blockdev/block.h"
#include "qapi-types.h"
#include "util/error.h"

/* Progress of one creation, shared between the worker that writes and
 * whoever watches (a job). */
typedef struct BlockCreateProgress {
    uint64_t done;               /* bytes written (atomic) */
    uint64_t total;              /* bytes to write (atomic; grows once,
                                  * when the layout is known) */
    bool cancel;                 /* set (atomic) to stop early: the run
                                  * fails with "Operation canceled" */
} BlockCreateProgress;

typedef struct BlockCreate BlockCreate;

/* Loop thread.  Check opts and resolve the node it names (by node-name,
 * or an inline definition opened now); opts is copied.  NULL with errp
 * set on bad options, an unknown node, or a driver without creation
 * ("Driver does not support blockdev-create"). */
BlockCreate *blk_create_new(BlockGraph *g, const BlockdevCreateOptions *opts,
                            Error **errp);
/* Any thread but the loop's while it runs: write the image.  Blocking
 * I/O.  Call once. */
bool blk_create_run(BlockCreate *c, Error **errp);
/* The progress counters of c (valid until blk_create_free). */
BlockCreateProgress *blk_create_progress(BlockCreate *c);
/* Loop thread, after the run (or instead of it). */
void blk_create_free(BlockCreate *c);

/* The QEMU checks of a driver's options, without any node (pure; unit
 * tests).  qcow2: fills *p from o (defaults applied); p's strings point
 * into o. */
struct Qcow2CreateParams;
bool blk_create_qcow2_params(const BlockdevCreateOptionsQcow2 *o,
                             struct Qcow2CreateParams *p, Error **errp);

/* file.c: create (or empty) the file o->filename and size it with o's
 * preallocation, counting the bytes it writes in pr (may be NULL).
 * QEMU's file-posix create: the same locks and messages. */
bool blk_file_create(const BlockdevCreateOptionsFile *o,
                     BlockCreateProgress *pr, Error **errp);
/* file.c: allocate [offset, offset+bytes) of a file node, growing it:
 * falloc with fallocate(), full by writing zeroes (counted in pr).
 * 0 or -errno: -ENODEV when bs is not a file node on a regular file,
 * -ECANCELED when pr->cancel was set. */
int blk_file_preallocate(BlockNode *bs, uint64_t offset, uint64_t bytes,
                         PreallocMode mode, BlockCreateProgress *pr);

#endif
