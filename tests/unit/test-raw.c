/* test-raw.c - the raw format driver: the offset/size window over its
 * file child, checked and clamped; bad window options; probing. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/cleanup.h"
#include "util/util.h"

/* A file of size bytes where byte i holds (i / 512) & 0xff. */
static char *make_pattern_file(const char *name, uint64_t size)
{
    char *path = xasprintf("%s/%s", unit_tmpdir(), name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    uint8_t sector[512];

    CU_ASSERT_FATAL(fd >= 0);
    for (uint64_t off = 0; off < size; off += 512) {
        memset(sector, (int)((off / 512) & 0xff), sizeof(sector));
        CU_ASSERT_FATAL(pwrite(fd, sector, 512, (off_t)off) == 512);
    }
    close(fd);
    return path;
}

static BlockNode *open_raw(BlockGraph *g, const char *path,
                           const char *extra, Error **errp)
{
    char json[4096];

    snprintf(json, sizeof(json), "{\"driver\":\"raw\",\"file\":{\"driver\":"
             "\"file\",\"filename\":\"%s\"}%s%s}", path, extra ? "," : "",
             extra ? extra : "");
    return unit_open_json(g, json, errp);
}

static void test_raw_window(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_pattern_file("win.img", 1 << 20);
    BlockNode *bs = open_raw(g, path, "\"offset\":65536,\"size\":131072",
                             NULL);
    uint8_t buf[1024];
    uint64_t pnum;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 131072);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs->file);
    CU_ASSERT_STRING_EQUAL(bs->filename, path);
    /* offset 0 of the window is byte 65536 of the file: sector 128 */
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 128);
    CU_ASSERT_EQUAL(blk_pread(bs, 131072 - 512, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], (128 + 255) & 0xff);
    /* nothing outside the window, even though the file goes on */
    CU_ASSERT_EQUAL(blk_pread(bs, 131072 - 512, 1024, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pread(bs, 131072, 1, buf, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 131072 - 1, 2, buf, 0), -ENOSPC);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 131072, 512, 0), -ENOSPC);
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 65536, 131072), -ENOSPC);
    CU_ASSERT_EQUAL(blk_pread(bs, UINT64_MAX - 100, 512, buf, 0), -EINVAL);
    /* writes land inside the window only */
    memset(buf, 0xee, sizeof(buf));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 512, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs->file, 65536 + 512, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0xee);
    CU_ASSERT_EQUAL(blk_pread(bs->file, 65536 - 512, 512, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 127);
    /* the file did not grow */
    CU_ASSERT_EQUAL(blk_getlength(bs->file), 1 << 20);
    /* block status is clamped to the window */
    CU_ASSERT_TRUE(blk_block_status(bs, 0, 1 << 20, &pnum) >= 0);
    CU_ASSERT_TRUE(pnum <= 131072);
    CU_ASSERT_EQUAL(blk_block_status(bs, 131072, 512, &pnum), -EINVAL);
    /* a raw node on a file: depth 1 everywhere */
    CU_ASSERT_EQUAL(blk_allocation_depth(bs, 0, 131072, &pnum), 1);
    CU_ASSERT_EQUAL(pnum, 131072);
    blk_unref(bs);
    blk_graph_free(g);
}

static void expect_open_error(BlockGraph *g, const char *path,
                              const char *extra, const char *msg)
{
    Error *err = NULL;

    CU_ASSERT_PTR_NULL(open_raw(g, path, extra, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    if (strstr(error_get_pretty(err), msg) == NULL) {
        printf("\n  got '%s', expected '%s'\n", error_get_pretty(err), msg);
        CU_FAIL("wrong message");
    }
    error_free(err);
}

static void count_node(BlockNode *bs, void *opaque)
{
    (void)bs;
    (*(int *)opaque)++;
}

static void test_raw_bad_window(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_pattern_file("bad.img", 65536);
    int n = 0;

    expect_open_error(g, path, "\"offset\":65537",
                      "Offset (65537) cannot be greater than size of the "
                      "containing file (65536)");
    expect_open_error(g, path, "\"offset\":512,\"size\":65536",
                      "The sum of offset (512) and size (65536) has to be "
                      "smaller or equal to the  actual size of the "
                      "containing file (65536)");
    expect_open_error(g, path, "\"size\":1000",
                      "Specified size is not multiple of 512");
    expect_open_error(g, path, "\"offset\":-1", "offset");
    expect_open_error(g, path, "\"size\":-512", "size");
    expect_open_error(g, path, "\"offset\":9223372036854775807,"
                      "\"size\":512", "cannot be greater");
    /* every failed open closed its file child again */
    blk_foreach_node(g, count_node, &n);
    CU_ASSERT_EQUAL(n, 0);
    blk_graph_free(g);
}

static void test_raw_resize(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_pattern_file("rs.img", 65536);
    BlockNode *bs = open_raw(g, path, "\"size\":4096", NULL);
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_FALSE(blk_truncate(bs, 8192, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err),
                           "Cannot resize fixed-size raw disks");
    error_free(err);
    err = NULL;
    blk_unref(bs);
    bs = open_raw(g, path, "\"offset\":4096", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 65536 - 4096);
    CU_ASSERT_TRUE(blk_truncate(bs, 1 << 20, &err));
    CU_ASSERT_EQUAL(blk_getlength(bs), 1 << 20);
    CU_ASSERT_EQUAL(blk_getlength(bs->file), (1 << 20) + 4096);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_raw_probe(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_pattern_file("probe.img", 65536);
    BlockNode *bs = blk_open_image(g, path, NULL, "p0", false, NULL);
    uint8_t sector[512];

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_STRING_EQUAL(bs->drv->format_name, "raw");
    CU_ASSERT_TRUE(bs->probed_raw);
    CU_ASSERT_STRING_EQUAL(bs->node_name, "p0");
    memset(sector, 0x42, sizeof(sector));
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, sector, 0), 0);
    if (blk_find_driver("qcow2") != NULL) {
        /* turning sector 0 into a qcow2 header is refused... */
        memcpy(sector, "QFI\xfb\0\0\0\3", 8);
        CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, sector, 0), -EPERM);
        /* ...also when only the magic is written */
        CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 8, sector, 0), -EPERM);
        /* but not past sector 0 */
        CU_ASSERT_EQUAL(blk_pwrite(bs, 512, 512, sector, 0), 0);
    } else {
        printf("\n  (no qcow2 driver: sector-0 guard not exercised)\n");
    }
    blk_unref(bs);
    /* "file" as the format: the protocol node itself */
    bs = blk_open_image(g, path, "file", "pf", true, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_STRING_EQUAL(bs->drv->format_name, "file");
    CU_ASSERT_STRING_EQUAL(bs->node_name, "pf");
    CU_ASSERT_PTR_EQUAL(blk_find_node(g, "pf"), bs);
    blk_unref(bs);
    /* with the format given, no guard */
    bs = blk_open_image(g, path, "raw", NULL, false, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_FALSE(bs->probed_raw);
    blk_unref(bs);
    blk_graph_free(g);
}

static CU_TestInfo raw_tests[] = {
    { "window", test_raw_window },
    { "bad_window", test_raw_bad_window },
    { "resize", test_raw_resize },
    { "probe", test_raw_probe },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "raw", .pTests = raw_tests },
    CU_SUITE_INFO_NULL,
};
