/* test-block.c - the node graph: node names, references to children,
 * users, deletion rules, no half-open nodes after failures, lookups,
 * path combination, async requests on a file node, and opens and
 * resizes on the pool. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "blockdev/block-drivers.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/loop.h"
#include "util/worker.h"
#include "util/cleanup.h"
#include "util/util.h"

/* Open as blockdev-add does: the monitor owns the reference. */
static BlockNode *add_json(BlockGraph *g, const char *json, Error **errp)
{
    BlockNode *bs = unit_open_json(g, json, errp);

    if (bs != NULL) {
        bs->monitor_owned = true;
    }
    return bs;
}

static void count_cb(BlockNode *bs, void *opaque)
{
    (void)bs;
    (*(int *)opaque)++;
}

static int node_count(BlockGraph *g)
{
    int n = 0;

    blk_foreach_node(g, count_cb, &n);
    return n;
}

static void expect_error(Error *err, const char *msg)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strcmp(error_get_pretty(err), msg) != 0) {
        printf("\n  got '%s'\n  expected '%s'\n", error_get_pretty(err), msg);
        CU_FAIL("wrong error message");
    }
    error_free(err);
}

static void test_node_names(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;
    BlockNode *a, *b;
    char json[256];

    a = add_json(g, "{\"driver\":\"null-co\",\"node-name\":\"n0\"}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_EQUAL(blk_find_node(g, "n0"), a);
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"n0\"}", &err));
    expect_error(err, "Duplicate nodes with node-name='n0'");
    err = NULL;
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"0bad\"}", &err));
    expect_error(err, "Invalid node-name: '0bad'");
    err = NULL;
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"#block1\"}", &err));
    expect_error(err, "Invalid node-name: '#block1'");
    err = NULL;
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"a b\"}", &err));
    expect_error(err, "Invalid node-name: 'a b'");
    err = NULL;
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"\"}", &err));
    expect_error(err, "Invalid node-name: ''");
    err = NULL;
    snprintf(json, sizeof(json), "{\"driver\":\"null-co\",\"node-name\":"
             "\"a%040d\"}", 0);
    CU_ASSERT_PTR_NULL(add_json(g, json, &err));
    expect_error(err, "Node name too long");
    err = NULL;
    /* the longest allowed: 31 characters, with - . _ */
    b = add_json(g, "{\"driver\":\"null-co\",\"node-name\":"
                 "\"A-b.c_d012345678901234567890123\"}", &err);
    CU_ASSERT_PTR_NOT_NULL(b);
    /* auto names for nodes without one, all different */
    {
        BlockNode *x = unit_open_json(g, "{\"driver\":\"null-co\"}", NULL);
        BlockNode *y = unit_open_json(g, "{\"driver\":\"null-co\"}", NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(x);
        CU_ASSERT_PTR_NOT_NULL_FATAL(y);
        CU_ASSERT_EQUAL(x->node_name[0], '#');
        CU_ASSERT_STRING_NOT_EQUAL(x->node_name, y->node_name);
        blk_unref(x);
        blk_unref(y);
    }
    CU_ASSERT_EQUAL(node_count(g), 2);
    blk_graph_free(g);
}

static void test_children_and_delete(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;
    BlockNode *base, *top, *inl;

    base = add_json(g, "{\"driver\":\"null-co\",\"node-name\":\"base\","
                    "\"size\":1048576}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(base);
    /* a child by reference is shared */
    top = add_json(g, "{\"driver\":\"raw\",\"node-name\":\"top\","
                   "\"file\":\"base\"}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(top);
    CU_ASSERT_PTR_EQUAL(top->file, base);
    CU_ASSERT_EQUAL(base->refcnt, 2);
    CU_ASSERT_EQUAL(blk_getlength(top), 1048576);

    /* the child cannot go while its parent uses it */
    CU_ASSERT_FALSE(blk_node_delete(g, "base", &err));
    expect_error(err, "Block device base is in use by node 'top' (as its "
                 "file child)");
    err = NULL;
    /* unknown and not monitor-owned */
    CU_ASSERT_FALSE(blk_node_delete(g, "nope", &err));
    expect_error(err, "Failed to find node with node-name='nope'");
    err = NULL;
    inl = add_json(g, "{\"driver\":\"raw\",\"node-name\":\"inl\","
                   "\"file\":{\"driver\":\"null-co\",\"node-name\":"
                   "\"inl-file\"}}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(inl);
    CU_ASSERT_FALSE(blk_node_delete(g, "inl-file", &err));
    expect_error(err, "Node inl-file is not owned by the monitor");
    err = NULL;
    /* deleting the parent closes its inline child */
    CU_ASSERT_TRUE(blk_node_delete(g, "inl", &err));
    CU_ASSERT_PTR_NULL(blk_find_node(g, "inl-file"));

    /* a user (an export) keeps a node busy */
    CU_ASSERT_TRUE(blk_node_add_user(top, "export 'e0'", true, &err));
    CU_ASSERT_FALSE(blk_node_delete(g, "top", &err));
    expect_error(err, "Block device top is in use by export 'e0'");
    err = NULL;
    blk_node_remove_user(top, "export 'e0'");
    CU_ASSERT_TRUE(blk_node_delete(g, "top", &err));
    CU_ASSERT_EQUAL(base->refcnt, 1);
    CU_ASSERT_TRUE(blk_node_delete(g, "base", &err));
    CU_ASSERT_EQUAL(node_count(g), 0);
    blk_graph_free(g);
}

static void test_failed_open_leaves_nothing(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;

    /* the inline child opens, then the parent's name clashes */
    CU_ASSERT_PTR_NOT_NULL(add_json(g, "{\"driver\":\"null-co\","
                                    "\"node-name\":\"taken\"}", NULL));
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"raw\",\"node-name\":"
                                "\"taken\",\"file\":{\"driver\":\"null-co\","
                                "\"node-name\":\"child\"}}", &err));
    expect_error(err, "Duplicate nodes with node-name='taken'");
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_find_node(g, "child"));
    /* a child and its parent with one name */
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"raw\",\"node-name\":"
                                "\"same\",\"file\":{\"driver\":\"null-co\","
                                "\"node-name\":\"same\"}}", &err));
    expect_error(err, "Duplicate nodes with node-name='same'");
    err = NULL;
    /* a missing reference */
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"raw\",\"node-name\":"
                                "\"r\",\"file\":\"ghost\"}", &err));
    expect_error(err, "Cannot find device='' nor node-name='ghost'");
    err = NULL;
    /* the child opens, the raw window does not fit */
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"raw\",\"node-name\":"
                                "\"r\",\"offset\":4096,\"file\":{\"driver\":"
                                "\"null-co\",\"size\":512,\"node-name\":"
                                "\"small\"}}", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_find_node(g, "small"));
    /* a writable parent over a read-only child by reference */
    CU_ASSERT_PTR_NOT_NULL(add_json(g, "{\"driver\":\"null-co\","
                                    "\"node-name\":\"ro\",\"read-only\":true}",
                                    NULL));
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"raw\",\"node-name\":"
                                "\"w\",\"file\":\"ro\"}", &err));
    expect_error(err, "Block node is read-only");
    err = NULL;
    /* force-share needs read-only */
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\",\"node-name\":"
                                "\"fs\",\"force-share\":true}", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    CU_ASSERT_EQUAL(node_count(g), 2);
    CU_ASSERT_EQUAL(blk_find_node(g, "taken")->refcnt, 1);
    CU_ASSERT_EQUAL(blk_find_node(g, "ro")->refcnt, 1);
    blk_graph_free(g);
}

static void test_inherit(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs;

    bs = add_json(g, "{\"driver\":\"raw\",\"node-name\":\"t\",\"read-only\":"
                  "true,\"discard\":\"unmap\",\"file\":{\"driver\":"
                  "\"null-co\"}}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(bs->file->read_only);
    CU_ASSERT_EQUAL(bs->file->discard, BLOCKDEV_DISCARD_OPTIONS_UNMAP);
    CU_ASSERT_EQUAL(bs->file->node_name[0], '#');
    blk_graph_free(g);
}

static void test_lookup_and_paths(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;
    char *p;

    CU_ASSERT_PTR_NULL(blk_lookup_bs(g, "d", NULL, &err));
    expect_error(err, "Cannot find device='d' nor node-name=''");
    err = NULL;
    CU_ASSERT_PTR_NULL(blk_lookup_node(g, "x", &err));
    expect_error(err, "Failed to find node with node-name='x'");
    p = blk_path_combine("/a/b/top.qcow2", "base.qcow2");
    CU_ASSERT_STRING_EQUAL(p, "/a/b/base.qcow2");
    free(p);
    p = blk_path_combine("/a/b/top.qcow2", "/abs/base.raw");
    CU_ASSERT_STRING_EQUAL(p, "/abs/base.raw");
    free(p);
    p = blk_path_combine("top.qcow2", "base.qcow2");
    CU_ASSERT_STRING_EQUAL(p, "base.qcow2");
    free(p);
    p = blk_path_combine("dir/top.qcow2", "../base.qcow2");
    CU_ASSERT_STRING_EQUAL(p, "dir/../base.qcow2");
    free(p);
    CU_ASSERT_PTR_NOT_NULL(blk_find_driver("file"));
    CU_ASSERT_PTR_NOT_NULL(blk_find_driver("null-aio"));
    CU_ASSERT_PTR_NULL(blk_find_driver("vmdk"));
    blk_graph_free(g);
}

static void test_zero_detection(void)
{
    uint8_t buf[8192];

    memset(buf, 0, sizeof(buf));
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 0));
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 1));
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, sizeof(buf)));
    for (size_t i = 0; i < sizeof(buf); i += 997) {
        buf[i] = 1;
        CU_ASSERT_FALSE(blk_buffer_is_zero(buf, sizeof(buf)));
        CU_ASSERT_TRUE(blk_buffer_is_zero(buf, i));
        buf[i] = 0;
    }
    buf[sizeof(buf) - 1] = 0x80;
    CU_ASSERT_FALSE(blk_buffer_is_zero(buf, sizeof(buf)));
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, sizeof(buf) - 1));
}

/* ---- async on a file node ----------------------------------------- */

#define NREQ 32

typedef struct AioFile {
    Loop *loop;
    int done, failed;
    BlockRequest req[NREQ];
    uint8_t buf[NREQ][4096];
} AioFile;

static void aio_file_cb(BlockRequest *req)
{
    AioFile *t = req->opaque;

    if (req->ret != 0) {
        t->failed++;
    }
    if (++t->done == NREQ) {
        loop_stop(t->loop);
    }
}

static void run_batch(AioFile *t, WorkerPool *pool, BlockNode *bs,
                      BlockRequestType type)
{
    t->done = 0;
    for (int i = 0; i < NREQ; i++) {
        BlockRequest *r = &t->req[i];
        r->bs = bs;
        r->type = type;
        r->flags = 0;
        r->offset = (uint64_t)i * 4096;
        r->bytes = 4096;
        r->buf = t->buf[i];
        r->cb = aio_file_cb;
        r->opaque = t;
        blk_aio_submit(pool, r);
    }
    loop_run(t->loop);
}

static void test_aio_file(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = xasprintf("%s/aio.img", unit_tmpdir());
    char json[4096];
    AioFile *t = XNEW(AioFile);
    WorkerPool *pool;
    BlockNode *bs;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, NREQ * 4096) == 0);
    close(fd);
    snprintf(json, sizeof(json), "{\"driver\":\"raw\",\"file\":{\"driver\":"
             "\"file\",\"filename\":\"%s\"}}", path);
    bs = unit_open_json(g, json, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    t->loop = loop_new();
    pool = worker_pool_new(t->loop, 4);
    for (int i = 0; i < NREQ; i++) {
        memset(t->buf[i], i + 1, 4096);
    }
    run_batch(t, pool, bs, BLK_OP_WRITE);
    CU_ASSERT_EQUAL(t->done, NREQ);
    CU_ASSERT_EQUAL(t->failed, 0);
    run_batch(t, pool, bs, BLK_OP_FLUSH);
    CU_ASSERT_EQUAL(t->failed, 0);
    memset(t->buf, 0, sizeof(t->buf));
    run_batch(t, pool, bs, BLK_OP_READ);
    CU_ASSERT_EQUAL(t->failed, 0);
    for (int i = 0; i < NREQ; i++) {
        CU_ASSERT_EQUAL(t->buf[i][0], i + 1);
        CU_ASSERT_EQUAL(t->buf[i][4095], i + 1);
    }
    CU_ASSERT_EQUAL(bs->refcnt, 1);
    CU_ASSERT_EQUAL(bs->wr_ops, NREQ);
    CU_ASSERT_EQUAL(bs->file->wr_ops, NREQ);
    worker_pool_free(pool);
    loop_free(t->loop);
    free(t);
    blk_unref(bs);
    blk_graph_free(g);
}

/* Status merged across a real qcow2 chain made by qemu-img (64k
 * clusters):
 *   base.raw  [0, 256k) 0x11, the rest a hole
 *   mid.qcow2 [64k, 128k) 0x22
 *   top.qcow2 [128k, 192k) 0x33, and a zero cluster at [0, 64k)
 */
static void test_chain_status(void)
{
    const char *dir = unit_tmpdir();
    BlockGraph *g;
    BlockNode *bs;
    char cmd[4096];
    uint64_t pnum = 0;
    uint8_t buf[512];
    int ret;

    if (blk_find_driver("qcow2") == NULL ||
        system("command -v qemu-img >/dev/null && "
               "command -v qemu-io >/dev/null") != 0) {
        printf("\n  (no qcow2 driver or no qemu-img: skipped)\n");
        return;
    }
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && qemu-img create -q -f raw base.raw 1M && "
             "qemu-io -f raw -c 'write -P 0x11 0 256k' base.raw >/dev/null "
             "&& qemu-img create -q -f qcow2 -F raw -b base.raw mid.qcow2 && "
             "qemu-io -f qcow2 -c 'write -P 0x22 64k 64k' mid.qcow2 "
             ">/dev/null && "
             "qemu-img create -q -f qcow2 -F qcow2 -b mid.qcow2 top.qcow2 && "
             "qemu-io -f qcow2 -c 'write -P 0x33 128k 64k' "
             "-c 'write -z 0 64k' top.qcow2 >/dev/null", dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    g = blk_graph_new(NULL);
    snprintf(cmd, sizeof(cmd), "%s/top.qcow2", dir);
    bs = blk_open_image(g, cmd, "qcow2", "top", true, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->backing);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->backing->backing);

    /* [0, 64k): a zero cluster in top */
    ret = blk_allocation_depth(bs, 0, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, 1);
    CU_ASSERT_EQUAL(pnum, 65536);
    ret = blk_block_status(bs, 0, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    CU_ASSERT_EQUAL(pnum, 65536);
    /* [64k, 128k): mid, depth 2 */
    ret = blk_allocation_depth(bs, 65536, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, 2);
    CU_ASSERT_EQUAL(pnum, 65536);
    ret = blk_block_status(bs, 65536, 65536, &pnum);
    CU_ASSERT_TRUE(ret >= 0 && (ret & BLK_STATUS_DATA) &&
                   (ret & BLK_STATUS_ALLOCATED));
    /* [128k, 192k): top */
    ret = blk_allocation_depth(bs, 131072, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, 1);
    CU_ASSERT_EQUAL(pnum, 65536);
    /* [192k, 1M): the raw base (a protocol layer allocates all) */
    ret = blk_allocation_depth(bs, 196608, 1 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, 3);
    CU_ASSERT_TRUE(pnum >= 65536);
    ret = blk_block_status(bs, 196608, 65536, &pnum);
    CU_ASSERT_TRUE(ret >= 0 && (ret & BLK_STATUS_DATA));
    CU_ASSERT_EQUAL(pnum, 65536);
    /* the data is what the chain says */
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 65536, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x22);
    CU_ASSERT_EQUAL(blk_pread(bs, 131072, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x33);
    CU_ASSERT_EQUAL(blk_pread(bs, 196608, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x11);
    /* the backing nodes cannot be deleted under top */
    {
        Error *err = NULL;
        bs->backing->monitor_owned = true;
        CU_ASSERT_FALSE(blk_node_delete(g, bs->backing->node_name, &err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
                                      "is busy: node is used as backing "
                                      "hd of 'top'"));
        error_free(err);
        bs->backing->monitor_owned = false;
    }
    blk_unref(bs);
    CU_ASSERT_EQUAL(node_count(g), 0);
    blk_graph_free(g);
}

/* BLK_OP_BLOCK_STATUS: the walk asks the caller's status function
 * step by step on a worker and stops where extent_cb says. */
typedef struct StatusWalk {
    Loop *loop;
    unsigned steps;
    uint64_t covered;
    unsigned stop_after;         /* 0 = never */
    bool done;
} StatusWalk;

static int walk_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                       uint64_t *pnum, void *opaque)
{
    (void)bs;
    (void)opaque;
    *pnum = MIN(bytes, (uint64_t)4096);
    return (int)((offset / 4096) & 1);
}

static bool walk_extent(BlockRequest *req, uint64_t len, uint32_t flags)
{
    StatusWalk *w = req->opaque;

    CU_ASSERT_EQUAL(flags, w->steps & 1);
    w->steps++;
    w->covered += len;
    return w->stop_after == 0 || w->steps < w->stop_after;
}

static void walk_done(BlockRequest *req)
{
    StatusWalk *w = req->opaque;

    w->done = true;
    loop_stop(w->loop);
}

static int run_walk(StatusWalk *w, WorkerPool *pool, BlockNode *bs,
                    uint64_t offset, uint64_t bytes)
{
    BlockRequest r = {
        .bs = bs,
        .type = BLK_OP_BLOCK_STATUS,
        .offset = offset,
        .bytes = bytes,
        .status_fn = walk_status,
        .extent_cb = walk_extent,
        .cb = walk_done,
        .opaque = w,
    };

    w->steps = 0;
    w->covered = 0;
    w->done = false;
    blk_aio_submit(pool, &r);
    loop_run(w->loop);
    CU_ASSERT(w->done);
    return r.ret;
}

static void test_aio_status_walk(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    StatusWalk w = { .loop = loop_new() };
    WorkerPool *pool = worker_pool_new(w.loop, 2);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\","
                                   "\"size\":65536}", NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(run_walk(&w, pool, bs, 0, 65536), 0);
    CU_ASSERT_EQUAL(w.steps, 16);
    CU_ASSERT_EQUAL(w.covered, 65536);
    w.stop_after = 3;
    CU_ASSERT_EQUAL(run_walk(&w, pool, bs, 0, 65536), 0);
    CU_ASSERT_EQUAL(w.steps, 3);
    CU_ASSERT_EQUAL(w.covered, 3 * 4096);
    CU_ASSERT_EQUAL(run_walk(&w, pool, bs, 65536, 4096), -EINVAL);
    CU_ASSERT_EQUAL(w.steps, 0);
    CU_ASSERT_EQUAL(bs->refcnt, 1);
    CU_ASSERT_EQUAL(blk_get_request_alignment(bs), 1);
    worker_pool_free(pool);
    loop_free(w.loop);
    blk_unref(bs);
    blk_graph_free(g);
}

/* Backing files named in headers: opened through typed options (a
 * format node over a file node), loops found through inline children
 * too (the open carries the chain, no global state: the next open is
 * unaffected), and blk_graph_set_backing_roots() confining them. */
static void test_header_backing(void)
{
    const char *dir = unit_tmpdir();
    BlockGraph *g;
    BlockNode *bs;
    Error *err = NULL;
    char cmd[4096], json[4096];
    char *roots[2];

    if (blk_find_driver("qcow2") == NULL ||
        system("command -v qemu-img >/dev/null") != 0) {
        printf("\n  (no qcow2 driver or no qemu-img: skipped)\n");
        return;
    }
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && mkdir -p hb/in hb/out && cd hb && "
             "qemu-img create -q -f raw out/base.raw 1M && "
             "qemu-img create -q -f qcow2 -u -b ../out/base.raw -F raw "
             "in/np.qcow2 1M && "
             "qemu-img create -q -f qcow2 -u -b np.qcow2 -F qcow2 "
             "in/top.qcow2 1M && "
             "qemu-img create -q -f qcow2 -u -b lb.qcow2 -F qcow2 "
             "in/la.qcow2 1M && "
             "qemu-img create -q -f qcow2 -u -b la.qcow2 -F qcow2 "
             "in/lb.qcow2 1M", dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    g = blk_graph_new(NULL);

    /* top -> np.qcow2 -> base.raw, each format named in the header. */
    snprintf(cmd, sizeof(cmd), "%s/hb/in/top.qcow2", dir);
    bs = blk_open_image(g, cmd, "qcow2", NULL, true, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->backing);
    CU_ASSERT_STRING_EQUAL(bs->backing->drv->format_name, "qcow2");
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->backing->backing);
    CU_ASSERT_STRING_EQUAL(bs->backing->backing->drv->format_name, "raw");
    CU_ASSERT_PTR_NOT_NULL(bs->backing->backing->file);
    CU_ASSERT_TRUE(bs->backing->read_only);
    CU_ASSERT_PTR_NULL(bs->opening_parent);
    CU_ASSERT_PTR_NULL(bs->backing->opening_parent);
    blk_unref(bs);

    /* la -> lb -> la, entered through an inline backing definition. */
    snprintf(json, sizeof(json),
             "{\"driver\":\"qcow2\",\"read-only\":true,\"file\":{\"driver\":"
             "\"file\",\"filename\":\"%s/hb/in/la.qcow2\"},\"backing\":"
             "{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\","
             "\"filename\":\"%s/hb/in/lb.qcow2\"}}}", dir, dir);
    bs = unit_open_json(g, json, &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "loop detected"));
    error_free(err);
    err = NULL;
    /* Nothing of the failed chain lingers. */
    snprintf(json, sizeof(json),
             "{\"driver\":\"qcow2\",\"read-only\":true,\"backing\":null,"
             "\"file\":{\"driver\":\"file\",\"filename\":"
             "\"%s/hb/in/la.qcow2\"}}", dir);
    bs = unit_open_json(g, json, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_PTR_NULL(bs->backing);
    blk_unref(bs);

    /* Roots: np's backing (../out/base.raw) is outside hb/in. */
    snprintf(cmd, sizeof(cmd), "%s/hb/in", dir);
    roots[0] = cmd;
    CU_ASSERT_TRUE_FATAL(blk_graph_set_backing_roots(g, roots, 1, NULL));
    snprintf(json, sizeof(json), "%s/hb/in/top.qcow2", dir);
    bs = blk_open_image(g, json, "qcow2", NULL, true, &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
                                  "'../out/base.raw'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
                                  "outside the allowed backing roots"));
    error_free(err);
    err = NULL;
    /* A second root lets it in; a missing root is refused, keeping the
     * old list. */
    snprintf(json, sizeof(json), "%s/hb/out", dir);
    roots[1] = json;
    CU_ASSERT_TRUE_FATAL(blk_graph_set_backing_roots(g, roots, 2, NULL));
    snprintf(json, sizeof(json), "%s/hb/nope", dir);
    roots[0] = json;
    CU_ASSERT_FALSE(blk_graph_set_backing_roots(g, roots, 1, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "hb/nope"));
    error_free(err);
    err = NULL;
    snprintf(cmd, sizeof(cmd), "%s/hb/in/top.qcow2", dir);
    bs = blk_open_image(g, cmd, "qcow2", NULL, true, &err);
    CU_ASSERT_PTR_NOT_NULL(bs);
    blk_unref(bs);
    blk_graph_free(g);
}

/* ---- opens and resizes on the pool ---------------------------------- */

typedef struct AsyncDone {
    Loop *loop;
    bool called;
    BlockNode *bs;
    Error *err;
} AsyncDone;

static void async_open_cb(BlockNode *bs, Error *err, void *opaque)
{
    AsyncDone *d = opaque;

    d->called = true;
    d->bs = bs;
    d->err = err;
    loop_stop(d->loop);
}

static void async_done_cb(Error *err, void *opaque)
{
    AsyncDone *d = opaque;

    d->called = true;
    d->err = err;
    loop_stop(d->loop);
}

static bool open_async_json(BlockGraph *g, const char *json, AsyncDone *d,
                            Error **errp)
{
    json_object *obj = json_tokener_parse(json);
    BlockdevOptions *o = NULL;
    bool ok = false;

    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    if (qapi_parse_BlockdevOptions(obj, NULL, 0, &o, errp)) {
        ok = blk_open_async(g, o, async_open_cb, d, errp);
        qapi_free_BlockdevOptions(o);   /* the open has its own copy */
    }
    json_object_put(obj);
    return ok;
}

static void test_open_async(void)
{
    Loop *loop = loop_new();
    WorkerPool *pool = worker_pool_new(loop, 2);
    BlockGraph *g = blk_graph_new(&(BlockHost){ .loop = loop,
                                                .pool = pool });
    AsyncDone d = { .loop = loop }, d2 = { .loop = loop };
    Error *err = NULL;
    BlockNode *f0, *anon, *top;
    int before;

    f0 = add_json(g, "{\"driver\":\"null-co\",\"node-name\":\"f0\","
                  "\"read-zeroes\":true}", NULL);
    anon = unit_open_json(g, "{\"driver\":\"null-co\"}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(anon);
    CU_ASSERT_STRING_EQUAL(anon->node_name, "#block0");
    before = node_count(g);

    /* top (raw) over an inline raw node over f0, named. */
    CU_ASSERT_TRUE_FATAL(open_async_json(g, "{\"driver\":\"raw\","
        "\"node-name\":\"top\",\"file\":{\"driver\":\"raw\",\"file\":"
        "\"f0\"}}", &d, NULL));
    /* Until it completes: the name is reserved, f0 is held, and the
     * graph does not show the new nodes. */
    CU_ASSERT_PTR_NULL(add_json(g, "{\"driver\":\"null-co\","
                                "\"node-name\":\"top\"}", &err));
    expect_error(err, "Duplicate nodes with node-name='top'");
    err = NULL;
    CU_ASSERT_FALSE(open_async_json(g, "{\"driver\":\"null-co\","
                                    "\"node-name\":\"top\"}", &d2, &err));
    expect_error(err, "Duplicate nodes with node-name='top'");
    err = NULL;
    CU_ASSERT_FALSE(blk_node_delete(g, "f0", &err));
    expect_error(err, "Block device f0 is in use by requests in flight");
    err = NULL;
    CU_ASSERT_EQUAL(node_count(g), before);
    CU_ASSERT_PTR_NULL(blk_find_node(g, "top"));

    CU_ASSERT_EQUAL(loop_run(loop), 0);
    CU_ASSERT_TRUE_FATAL(d.called);
    CU_ASSERT_PTR_NULL(d.err);
    top = d.bs;
    CU_ASSERT_PTR_NOT_NULL_FATAL(top);
    top->monitor_owned = true;
    CU_ASSERT_PTR_EQUAL(blk_find_node(g, "top"), top);
    CU_ASSERT_EQUAL(node_count(g), before + 2);
    CU_ASSERT_PTR_EQUAL(top->graph, g);
    CU_ASSERT_PTR_EQUAL(top->file->graph, g);
    /* The inline node's auto name follows the graph's. */
    CU_ASSERT_STRING_EQUAL(top->file->node_name, "#block1");
    CU_ASSERT_PTR_EQUAL(top->file->file, f0);
    CU_ASSERT_EQUAL(f0->refcnt, 2);     /* monitor + the inline raw */
    CU_ASSERT_EQUAL(blk_getlength(top), blk_getlength(f0));

    /* A failed open adds nothing and frees its name. */
    d = (AsyncDone){ .loop = loop };
    CU_ASSERT_TRUE_FATAL(open_async_json(g, "{\"driver\":\"raw\","
        "\"node-name\":\"bad\",\"file\":\"nope\"}", &d, NULL));
    CU_ASSERT_EQUAL(loop_run(loop), 0);
    CU_ASSERT_TRUE_FATAL(d.called);
    CU_ASSERT_PTR_NULL(d.bs);
    expect_error(d.err, "Cannot find device='' nor node-name='nope'");
    CU_ASSERT_EQUAL(node_count(g), before + 2);
    CU_ASSERT_PTR_NOT_NULL(add_json(g, "{\"driver\":\"null-co\","
                                    "\"node-name\":\"bad\"}", NULL));

    /* A resize: the node is busy meanwhile. */
    d = (AsyncDone){ .loop = loop };
    CU_ASSERT_TRUE_FATAL(blk_truncate_async(f0, 1 << 20, async_done_cb, &d,
                                            NULL));
    CU_ASSERT_FALSE(blk_truncate_async(f0, 1 << 21, async_done_cb, &d2,
                                       &err));
    expect_error(err, "Node 'f0' is busy: node is used by block_resize");
    err = NULL;
    CU_ASSERT_FALSE(blk_node_add_user(f0, "export 'e0'", false, &err));
    expect_error(err, "Node 'f0' is busy: node is being resized");
    err = NULL;
    CU_ASSERT_EQUAL(loop_run(loop), 0);
    CU_ASSERT_TRUE_FATAL(d.called);
    CU_ASSERT_PTR_NULL(d.err);
    CU_ASSERT_EQUAL(blk_getlength(f0), 1 << 20);
    CU_ASSERT_FALSE(d2.called);
    CU_ASSERT_TRUE(blk_node_add_user(f0, "export 'e0'", false, NULL));
    blk_node_remove_user(f0, "export 'e0'");

    CU_ASSERT_TRUE(blk_node_delete(g, "top", NULL));
    CU_ASSERT_TRUE(blk_node_delete(g, "f0", NULL));
    blk_unref(anon);
    worker_pool_free(pool);
    loop_run_posted(loop);
    blk_graph_free(g);
    loop_free(loop);
}

/* ---- the asynchronous driver hook ----------------------------------
 *
 * A null-co node whose driver gains aio_submit: requests the hook takes
 * reach it (and not the pool), each completed from a thread of its own
 * with blk_aio_complete(); the generic checks answer without it; block
 * status still runs the synchronous callback on the pool. */

#define AIO_MAX 16

typedef struct AioHook {
    Loop *loop;
    int expect, done;
    int submitted[BLK_OP_BLOCK_STATUS + 1];  /* by type, via the hook */
    bool on_loop_thread;                     /* cb ran on the loop */
    pthread_t loop_thread;
    pthread_t threads[AIO_MAX];
    int nthreads;
    int ret[AIO_MAX];
    BlockRequest req[AIO_MAX];
    uint8_t buf[AIO_MAX][512];
} AioHook;

static AioHook *aio_hook;
static BlockDriver aio_hook_drv;

static void *aio_hook_thread(void *opaque)
{
    BlockRequest *req = opaque;

    if (req->type == BLK_OP_READ) {
        memset(req->buf, 0xab, req->bytes);
    }
    blk_aio_complete(req, req->type == BLK_OP_DISCARD ? -EIO
                          : req->type == BLK_OP_WRITE_ZEROES ? -ENOTSUP : 0);
    return NULL;
}

static void aio_hook_submit(BlockNode *bs, BlockRequest *req)
{
    AioHook *t = aio_hook;

    (void)bs;
    t->submitted[req->type]++;
    CU_ASSERT_FATAL(t->nthreads < AIO_MAX);
    pthread_create(&t->threads[t->nthreads++], NULL, aio_hook_thread, req);
}

static void aio_hook_cb(BlockRequest *req)
{
    AioHook *t = req->opaque;

    t->ret[req - t->req] = req->ret;
    t->on_loop_thread = pthread_equal(pthread_self(), t->loop_thread);
    if (++t->done == t->expect) {
        loop_stop(t->loop);
    }
}

static bool aio_hook_extent(BlockRequest *req, uint64_t len, uint32_t flags)
{
    (void)req;
    (void)len;
    (void)flags;
    return true;
}

static int aio_hook_status(BlockNode *bs, uint64_t offset, uint64_t bytes,
                           uint64_t *pnum, void *opaque)
{
    (void)opaque;
    return blk_block_status(bs, offset, bytes, pnum);
}

/* Submit one request (slot i) and run the loop until it completes. */
static int aio_hook_one(WorkerPool *pool, BlockNode *bs, int i,
                        BlockRequestType type, uint64_t offset,
                        uint64_t bytes)
{
    AioHook *t = aio_hook;
    BlockRequest *r = &t->req[i];

    memset(r, 0, sizeof(*r));
    r->bs = bs;
    r->type = type;
    r->offset = offset;
    r->bytes = bytes;
    r->buf = t->buf[i];
    r->cb = aio_hook_cb;
    r->opaque = t;
    r->status_fn = aio_hook_status;
    r->extent_cb = aio_hook_extent;
    t->expect = t->done + 1;
    t->on_loop_thread = false;
    blk_aio_submit(pool, r);
    CU_ASSERT_EQUAL(t->done, t->expect - 1);   /* never inside submit */
    loop_run(t->loop);
    CU_ASSERT_TRUE(t->on_loop_thread);
    return t->ret[i];
}

static void test_aio_driver_hook(void)
{
    AioHook *t = XNEW(AioHook);
    Loop *loop = loop_new();
    WorkerPool *pool = worker_pool_new(loop, 2);
    BlockGraph *g = blk_graph_new(&(BlockHost) { .loop = loop,
                                                 .pool = pool });
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":"
                                   "65536,\"read-zeroes\":true}", NULL);

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    aio_hook = t;
    t->loop = loop;
    t->loop_thread = pthread_self();
    aio_hook_drv = *bs->drv;
    aio_hook_drv.aio_submit = aio_hook_submit;
    bs->drv = &aio_hook_drv;
    bs->aio_inline = false;

    /* Taken by the driver, completed from its thread on the loop. */
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 0, BLK_OP_READ, 512, 512), 0);
    CU_ASSERT_EQUAL(t->buf[0][0], 0xab);
    CU_ASSERT_EQUAL(t->buf[0][511], 0xab);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 1, BLK_OP_WRITE, 0, 512), 0);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 2, BLK_OP_FLUSH, 0, 0), 0);
    /* -ENOTSUP from the driver: the pool's fallback zeroes. */
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 3, BLK_OP_WRITE_ZEROES, 0,
                                 4096), 0);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 4, BLK_OP_CACHE, 0, 4096), 0);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_READ], 1);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_WRITE], 1);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_FLUSH], 1);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_WRITE_ZEROES], 1);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_CACHE], 1);
    CU_ASSERT_EQUAL(bs->rd_ops, 1);
    CU_ASSERT_EQUAL(bs->rd_bytes, 512);
    CU_ASSERT_EQUAL(bs->wr_ops, 1);
    CU_ASSERT_EQUAL(bs->flush_ops, 1);
    CU_ASSERT_EQUAL(bs->zero_ops, 1);
    CU_ASSERT_EQUAL(bs->wr_highest_offset, 4096);

    /* The generic checks answer without the driver. */
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 5, BLK_OP_READ, 65536, 512),
                    -EINVAL);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 6, BLK_OP_WRITE, 65024, 1024),
                    -ENOSPC);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 7, BLK_OP_READ, 0, 0), 0);
    /* discard=ignore (the default): dropped. */
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 8, BLK_OP_DISCARD, 0, 512), 0);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_DISCARD], 0);
    bs->discard = BLOCKDEV_DISCARD_OPTIONS_UNMAP;
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 9, BLK_OP_DISCARD, 0, 512),
                    -EIO);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_DISCARD], 1);
    CU_ASSERT_EQUAL(bs->failed_discard_ops, 1);
    bs->read_only = true;
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 10, BLK_OP_WRITE, 0, 512),
                    -EPERM);
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 11, BLK_OP_FLUSH, 0, 0), 0);
    bs->read_only = false;
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_WRITE], 1);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_FLUSH], 1);

    /* Block status stays on the pool (the synchronous callback). */
    CU_ASSERT_EQUAL(aio_hook_one(pool, bs, 12, BLK_OP_BLOCK_STATUS, 0,
                                 65536), 0);
    CU_ASSERT_EQUAL(t->submitted[BLK_OP_BLOCK_STATUS], 0);

    for (int i = 0; i < t->nthreads; i++) {
        pthread_join(t->threads[i], NULL);
    }
    CU_ASSERT_EQUAL(bs->refcnt, 1);
    worker_pool_free(pool);
    loop_run_posted(loop);
    blk_unref(bs);
    blk_graph_free(g);
    loop_free(loop);
    free(t);
}

/* A driver from above the block layer (as the NBD client's will be)
 * registers with a graph: that graph finds it, another does not, and a
 * built-in name still means the built-in driver. */
static void test_register_driver(void)
{
    static const BlockDriver fake = { .format_name = "fake-proto" };
    BlockGraph *g = blk_graph_new(NULL);
    BlockGraph *other = blk_graph_new(NULL);

    CU_ASSERT_PTR_NULL(blk_graph_find_driver(g, "fake-proto"));
    blk_graph_register_driver(g, &fake);
    CU_ASSERT_PTR_EQUAL(blk_graph_find_driver(g, "fake-proto"), &fake);
    CU_ASSERT_PTR_NULL(blk_graph_find_driver(other, "fake-proto"));
    CU_ASSERT_PTR_NULL(blk_find_driver("fake-proto"));
    CU_ASSERT_PTR_EQUAL(blk_graph_find_driver(g, "file"), &blk_drv_file);
    blk_graph_free(other);
    blk_graph_free(g);
}

/* Module drivers (blockdev/module.c): a name no module has is not an
 * error (0: the caller says "not supported"); a module that cannot be
 * loaded is, with the path tried in the message. */
static void test_module_load(void)
{
    const BlockDriver *drv = NULL;
    Error *err = NULL;

    CU_ASSERT_EQUAL(blk_module_load("vmdk", &drv, &err), 0);
    CU_ASSERT_PTR_NULL(err);
#ifdef BLK_RBD_MODULE
    setenv("BLOCKD_MODULE_DIR", "/nonexistent-blockd-modules", 1);
    CU_ASSERT_EQUAL(blk_module_load("rbd", &drv, &err), -1);
    CU_ASSERT_PTR_NULL(drv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
        "Driver 'rbd' is not available: could not load its module: "
        "/nonexistent-blockd-modules/block-rbd.so"));
    error_free(err);
    unsetenv("BLOCKD_MODULE_DIR");
#endif
}

/* ---- write hooks: before and after --------------------------------- */

typedef struct HookSeen {
    BlockWriteHook hook;
    int before, after;
    bool before_ran;
    const void *buf;
    uint64_t offset, bytes;
    int ret;                     /* after returns this when < 0 */
    bool done;
} HookSeen;

static int hook_seen_before(BlockWriteHook *hook, BlockNode *bs,
                            uint64_t offset, uint64_t bytes)
{
    HookSeen *h = container_of(hook, HookSeen, hook);

    (void)bs;
    h->before++;
    h->offset = offset;
    h->bytes = bytes;
    return 0;
}

static int hook_seen_after(BlockWriteHook *hook, BlockNode *bs,
                           uint64_t offset, uint64_t bytes, const void *buf,
                           bool discard, int ret, bool before_ran)
{
    HookSeen *h = container_of(hook, HookSeen, hook);

    (void)bs;
    (void)discard;
    CU_ASSERT_EQUAL(offset, h->offset);
    CU_ASSERT_EQUAL(bytes, h->bytes);
    CU_ASSERT_EQUAL(ret, 0);
    /* fn ran, and the hook is still counted as in use */
    CU_ASSERT_EQUAL(hook->users, 1);
    h->after++;
    h->buf = buf;
    h->before_ran = before_ran;
    return h->ret < 0 ? h->ret : ret;
}

static void hook_seen_done(BlockWriteHook *hook)
{
    container_of(hook, HookSeen, hook)->done = true;
}

/* A write runs fn, then the driver, then after with the data; the
 * hook's users cover the whole request; after's error fails it;
 * BLK_REQ_NO_HOOK skips both. */
static void test_write_hook_after(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = add_json(g, "{\"driver\": \"null-co\", "
                             "\"node-name\": \"n\", \"size\": 1048576}",
                             NULL);
    HookSeen h = {
        .hook = { .fn = hook_seen_before, .after = hook_seen_after,
                  .done = hook_seen_done },
    };
    uint8_t buf[4096] = { 1 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    blk_write_hook_add(bs, &h.hook);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 8192, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(h.before, 1);
    CU_ASSERT_EQUAL(h.after, 1);
    CU_ASSERT_PTR_EQUAL(h.buf, buf);
    CU_ASSERT_TRUE(h.before_ran);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 65536, 0), 0);
    CU_ASSERT_EQUAL(h.after, 2);
    CU_ASSERT_PTR_NULL(h.buf);
    h.ret = -EIO;
    CU_ASSERT_EQUAL(blk_pwrite(bs, 8192, sizeof(buf), buf, 0), -EIO);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 8192, sizeof(buf), buf,
                               BLK_REQ_NO_HOOK), 0);
    CU_ASSERT_EQUAL(h.before, 3);
    CU_ASSERT_EQUAL(h.after, 3);
    CU_ASSERT_EQUAL(h.hook.users, 0);
    blk_write_hook_remove(bs, &h.hook);
    CU_ASSERT_TRUE(h.done);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(h.after, 3);
    blk_graph_free(g);
}

typedef struct ReplaceSeen {
    BlockNode *from, *to;
    int calls;
} ReplaceSeen;

static void replace_seen(BlockNode *from, BlockNode *to, void *opaque)
{
    ReplaceSeen *r = opaque;

    r->from = from;
    r->to = to;
    r->calls++;
}

/* A pivot moves parents (not the new node's own subtree) and tells the
 * layers above. */
static void test_replace_node(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    ReplaceSeen r = { 0 };
    BlockNode *a, *b, *top, *wrap;

    a = add_json(g, "{\"driver\": \"null-co\", \"node-name\": \"a\"}",
                 NULL);
    top = add_json(g, "{\"driver\": \"raw\", \"node-name\": \"top\", "
                   "\"file\": \"a\"}", NULL);
    /* b's own child is a: b must not end up over itself */
    b = add_json(g, "{\"driver\": \"raw\", \"node-name\": \"b\", "
                 "\"file\": \"a\"}", NULL);
    wrap = add_json(g, "{\"driver\": \"raw\", \"node-name\": \"w\", "
                    "\"file\": \"top\"}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(wrap);
    blk_graph_set_replace_fn(g, replace_seen, &r);
    blk_replace_node(a, b);
    CU_ASSERT_PTR_EQUAL(top->file, b);
    CU_ASSERT_PTR_EQUAL(b->file, a);
    CU_ASSERT_PTR_EQUAL(wrap->file, top);
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT_PTR_EQUAL(r.from, a);
    CU_ASSERT_PTR_EQUAL(r.to, b);
    blk_graph_free(g);
}

static CU_TestInfo block_tests[] = {
    { "register_driver", test_register_driver },
    { "module_load", test_module_load },
    { "write_hook_after", test_write_hook_after },
    { "replace_node", test_replace_node },
    { "aio_driver_hook", test_aio_driver_hook },
    { "header_backing", test_header_backing },
    { "chain_status", test_chain_status },
    { "node_names", test_node_names },
    { "children_and_delete", test_children_and_delete },
    { "failed_open_leaves_nothing", test_failed_open_leaves_nothing },
    { "inherit", test_inherit },
    { "lookup_and_paths", test_lookup_and_paths },
    { "zero_detection", test_zero_detection },
    { "aio_file", test_aio_file },
    { "aio_status_walk", test_aio_status_walk },
    { "open_async", test_open_async },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "block", .pTests = block_tests },
    CU_SUITE_INFO_NULL,
};
