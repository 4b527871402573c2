/* test-null.c - the null-co / null-aio drivers, the generic bounds
 * checks, and asynchronous requests on the worker pool. */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blockdev/block.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/loop.h"
#include "util/worker.h"
#include "util/util.h"

static void test_null_defaults(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\"}", NULL);
    uint8_t buf[4096];

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 1ll << 30);
    CU_ASSERT_STRING_EQUAL(bs->drv->format_name, "null-co");
    CU_ASSERT_EQUAL(strncmp(bs->node_name, "#block", 6), 0);
    /* read-zeroes defaults to off, yet reads return zeroes: a buffer
     * left as it was could hold another client's data (issue 9) */
    memset(buf, 0xa5, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, sizeof(buf)));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 4096, sizeof(buf), buf, 0), 0);
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    /* without read-zeroes: neither data nor zero, and no layer
     * allocates it (QEMU: "hole", allocation depth 0) */
    {
        uint64_t pnum = 0;
        CU_ASSERT_EQUAL(blk_block_status(bs, 0, 65536, &pnum), 0);
        CU_ASSERT_EQUAL(pnum, 65536);
        CU_ASSERT_EQUAL(blk_allocation_depth(bs, 0, 65536, &pnum), 0);
    }
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_null_read_zeroes(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-aio\",\"size\":65536,"
                              "\"read-zeroes\":true}", NULL);
    uint8_t buf[512];
    uint64_t pnum = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 65536);
    memset(buf, 0xa5, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pread(bs, 512, sizeof(buf), buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, sizeof(buf)));
    CU_ASSERT_EQUAL(blk_block_status(bs, 0, 65536, &pnum),
                    BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    CU_ASSERT_EQUAL(pnum, 65536);
    CU_ASSERT_EQUAL(blk_allocation_depth(bs, 0, 65536, &pnum), 1);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_null_bounds(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":1048576}",
                              NULL);
    uint8_t buf[1024];
    uint64_t pnum = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    /* the last byte is fine, one more is not */
    CU_ASSERT_EQUAL(blk_pread(bs, 1048576 - 1024, 1024, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 1048576 - 1023, 1024, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pread(bs, 1048576, 1, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1048576 - 1023, 1024, buf, 0), -ENOSPC);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 1048576, 1, 0), -ENOSPC);
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 2 * 1048576, 1), -ENOSPC);
    /* offset + length overflowing 64 bits, or beyond INT64_MAX */
    CU_ASSERT_EQUAL(blk_pread(bs, UINT64_MAX - 10, 1024, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 512, UINT64_MAX, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, INT64_MAX, 2, 0), -EINVAL);
    /* zero length is a no-op, even at the end */
    CU_ASSERT_EQUAL(blk_pread(bs, 1048576, 0, buf, 0), 0);
    /* block status past the end fails; crossing it is clamped */
    CU_ASSERT_EQUAL(blk_block_status(bs, 1048576, 512, &pnum), -EINVAL);
    CU_ASSERT_TRUE(blk_block_status(bs, 1048576 - 512, 4096, &pnum) >= 0);
    CU_ASSERT_EQUAL(pnum, 512);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_null_read_only(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"read-only\":true}",
                              NULL);
    uint8_t buf[512] = { 0 };

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, buf, 0), -EPERM);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 512, 0), -EPERM);
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 0, 512), -EPERM);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), 0);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_null_bad_size(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":-1}", &err);

    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "size"));
    error_free(err);
    err = NULL;
    bs = unit_open_json(g, "{\"driver\":\"null-co\",\"latency-ns\":-5}", &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    blk_graph_free(g);
}

static void test_null_latency(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\","
                              "\"latency-ns\":20000000}", NULL);
    uint8_t buf[512];
    uint64_t t0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    t0 = loop_now_us();
    CU_ASSERT_EQUAL(blk_pread(bs, 0, sizeof(buf), buf, 0), 0);
    CU_ASSERT_TRUE(loop_now_us() - t0 >= 20000);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_null_resize(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":4096}",
                              NULL);
    uint8_t buf[512];
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 8192, 512, buf, 0), -EINVAL);
    CU_ASSERT_TRUE(blk_truncate(bs, 16384, &err));
    CU_ASSERT_EQUAL(blk_getlength(bs), 16384);
    CU_ASSERT_EQUAL(blk_pread(bs, 8192, 512, buf, 0), 0);
    blk_unref(bs);
    blk_graph_free(g);
}

/* ---- asynchronous requests ---------------------------------------- */

#define NREQ 64

typedef struct AioTest {
    Loop *loop;
    int done;
    int failed;
    BlockRequest req[NREQ];
    uint8_t buf[NREQ][4096];
} AioTest;

static void aio_cb(BlockRequest *req)
{
    AioTest *t = req->opaque;

    if (req->ret != (req->offset >= (1 << 20) ? -EINVAL : 0)) {
        t->failed++;
    }
    if (++t->done == NREQ) {
        loop_stop(t->loop);
    }
}

static void test_null_aio(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":1048576,"
                              "\"read-zeroes\":true,\"latency-ns\":1000000}",
                              NULL);
    AioTest *t = XNEW(AioTest);
    WorkerPool *pool;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    t->loop = loop_new();
    pool = worker_pool_new(t->loop, 4);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    for (int i = 0; i < NREQ; i++) {
        BlockRequest *r = &t->req[i];
        memset(t->buf[i], 0xff, 4096);
        r->bs = bs;
        r->type = i % 8 == 7 ? BLK_OP_FLUSH
                  : (i % 2 ? BLK_OP_WRITE : BLK_OP_READ);
        /* the last one is out of range: it completes with -EINVAL */
        r->offset = i == NREQ - 2 ? (1 << 20) : (uint64_t)i * 4096;
        r->bytes = 4096;
        r->buf = t->buf[i];
        r->cb = aio_cb;
        r->opaque = t;
        if (i == NREQ - 2) {
            r->type = BLK_OP_READ;
        }
    }
    for (int i = 0; i < NREQ; i++) {
        blk_aio_submit(pool, &t->req[i]);
    }
    /* the loop thread is free while the workers sleep */
    CU_ASSERT_EQUAL(bs->refcnt, (unsigned)(1 + NREQ - t->done));
    /* and the requests run in parallel: the node's share of the 4
     * threads (completions, which hand a share on, run only in
     * loop_run) took one each at once; the rest wait their turn.  A
     * condition rather than a duration: the machine may be loaded. */
    CU_ASSERT_TRUE(blk_pool_share(pool) > 1);
    CU_ASSERT_EQUAL(bs->pool_inflight, blk_pool_share(pool));
    loop_run(t->loop);
    CU_ASSERT_EQUAL(t->done, NREQ);
    CU_ASSERT_EQUAL(t->failed, 0);
    CU_ASSERT_EQUAL(bs->pool_inflight, 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(t->buf[0], 4096));
    CU_ASSERT_EQUAL(bs->refcnt, 1);
    worker_pool_free(pool);
    loop_free(t->loop);
    free(t);
    blk_unref(bs);
    blk_graph_free(g);
}

/* null-co without latency completes on the loop thread, never inside
 * submit, without the worker pool. */
static void test_null_aio_inline(void)
{
    BlockHost host = { 0 };
    BlockGraph *g;
    BlockNode *bs;
    AioTest *t = XNEW(AioTest);

    t->loop = loop_new();
    host.loop = t->loop;
    g = blk_graph_new(&host);
    bs = unit_open_json(g, "{\"driver\":\"null-co\",\"size\":1048576,"
                   "\"read-zeroes\":true}", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(bs->aio_inline);
    for (int i = 0; i < NREQ; i++) {
        BlockRequest *r = &t->req[i];
        memset(t->buf[i], 0xff, 4096);
        r->bs = bs;
        r->type = BLK_OP_READ;
        r->offset = i == NREQ - 2 ? (1 << 20) : (uint64_t)i * 4096;
        r->bytes = 4096;
        r->buf = t->buf[i];
        r->cb = aio_cb;
        r->opaque = t;
        blk_aio_submit(NULL, r);        /* no pool needed */
    }
    CU_ASSERT_EQUAL(t->done, 0);
    loop_run(t->loop);
    CU_ASSERT_EQUAL(t->done, NREQ);
    CU_ASSERT_EQUAL(t->failed, 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(t->buf[3], 4096));
    CU_ASSERT_EQUAL(bs->refcnt, 1);
    blk_unref(bs);
    blk_graph_free(g);
    loop_free(t->loop);
    free(t);
}

static CU_TestInfo null_tests[] = {
    { "aio_inline", test_null_aio_inline },
    { "defaults", test_null_defaults },
    { "read_zeroes", test_null_read_zeroes },
    { "bounds", test_null_bounds },
    { "read_only", test_null_read_only },
    { "bad_size", test_null_bad_size },
    { "latency", test_null_latency },
    { "resize", test_null_resize },
    { "aio", test_null_aio },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "null", .pTests = null_tests },
    CU_SUITE_INFO_NULL,
};
