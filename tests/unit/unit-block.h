/* unit-block.h - helpers for the block-layer unit tests (linked into every
 * unit test program). */
#ifndef BLOCKD_TESTS_UNIT_BLOCK_H
#define BLOCKD_TESTS_UNIT_BLOCK_H

#include "blockdev/block.h"

/* Open a node graph from blockdev-add options given as JSON text, as
 * QMP would (schema parsing, then blk_open).  NULL with errp set. */
BlockNode *unit_open_json(BlockGraph *g, const char *json, Error **errp);

/* A suite's set-up and tear-down for tests that check their images with
 * qemu-img and qemu-io: init returns 1 (CUnit then reports the suite as
 * not run) when either tool is missing, else makes *g a new graph. */
int unit_qemu_graph_init(BlockGraph **g);
int unit_graph_cleanup(BlockGraph **g);

#endif
