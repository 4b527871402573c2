/* test-caps.c - blk_get_caps() per driver: what null-co, file (on a disk
 * filesystem and on tmpfs), raw and qcow2 (v2 and v3) say they do, what
 * read-only and discard=ignore take away, and that a claim holds (fast
 * zeroes succeed with NO_FALLBACK, a discard leaves a hole). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/cleanup.h"
#include "util/util.h"

#define IMG_SIZE (1 << 20)

static BlockNode *open_fmt(BlockGraph *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static BlockNode *open_fmt(BlockGraph *g, const char *fmt, ...)
{
    CLEANUP_FREE char *json = NULL;
    BlockNode *bs;
    Error *err = NULL;
    va_list ap;

    va_start(ap, fmt);
    json = xvasprintf(fmt, ap);
    va_end(ap);
    bs = unit_open_json(g, json, &err);
    if (bs == NULL) {
        fprintf(stderr, "\nopen %s: %s\n", json, error_get_pretty(err));
        error_free(err);
    }
    return bs;
}

/* A file of IMG_SIZE bytes of data in dir. */
static char *make_file(const char *dir, const char *name)
{
    char *path = xasprintf("%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    uint8_t buf[4096];

    CU_ASSERT_FATAL(fd >= 0);
    memset(buf, 0xaa, sizeof(buf));
    for (off_t off = 0; off < IMG_SIZE; off += (off_t)sizeof(buf)) {
        CU_ASSERT_FATAL(pwrite(fd, buf, sizeof(buf), off) ==
                        (ssize_t)sizeof(buf));
    }
    close(fd);
    return path;
}

/* Whether the filesystem of dir does fallocate mode (the oracle for the
 * file driver's own probe). */
static bool fs_does(const char *dir, int mode)
{
    CLEANUP_FREE char *path = xasprintf("%s/probe.tmp", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    bool ok;

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(pwrite(fd, "x", 1, 65535) == 1);
    ok = fallocate(fd, mode | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    close(fd);
    unlink(path);
    return ok;
}

static BlockCaps caps_of(BlockNode *bs)
{
    BlockCaps c;

    blk_get_caps(bs, &c);
    return c;
}

static void expect_no_write_caps(BlockNode *bs)
{
    BlockCaps c = caps_of(bs);

    CU_ASSERT_FALSE(c.fua);
    CU_ASSERT_FALSE(c.zero);
    CU_ASSERT_FALSE(c.fast_zero);
    CU_ASSERT_FALSE(c.discard);
}

static void test_caps_null(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    BlockNode *bs = open_fmt(g, "{\"driver\":\"null-co\",\"discard\":"
                             "\"unmap\"}");
    BlockCaps c;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.fua && c.zero && c.fast_zero && c.discard && c.cache &&
                   c.multi_conn);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 4096, BLK_REQ_NO_FALLBACK), 0);
    blk_unref(bs);

    /* discard=ignore (the default): discards are dropped. */
    bs = open_fmt(g, "{\"driver\":\"null-co\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_FALSE(c.discard);
    CU_ASSERT_TRUE(c.fua && c.fast_zero && c.cache && c.multi_conn);
    blk_unref(bs);

    bs = open_fmt(g, "{\"driver\":\"null-aio\",\"read-only\":true,"
                  "\"discard\":\"unmap\"}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    expect_no_write_caps(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.cache && c.multi_conn);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_caps_file(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file(unit_tmpdir(), "f.img");
    BlockNode *bs;
    BlockCaps c;
    uint64_t pnum;

    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\","
                  "\"discard\":\"unmap\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.fua && c.zero && c.cache && c.multi_conn);
    CU_ASSERT_EQUAL(c.discard, fs_does(unit_tmpdir(), FALLOC_FL_PUNCH_HOLE));
    CU_ASSERT_EQUAL(c.fast_zero,
                    c.discard || fs_does(unit_tmpdir(),
                                         FALLOC_FL_ZERO_RANGE));
    if (!c.discard || !c.fast_zero) {
        printf("(no hole punching here: the rest skipped) ");
        blk_unref(bs);
        blk_graph_free(g);
        return;
    }
    /* The claims hold. */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 65536, 65536,
                                      BLK_REQ_NO_FALLBACK), 0);
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 0, 65536), 0);
    CU_ASSERT_EQUAL(blk_block_status(bs, 0, 65536, &pnum) &
                    (BLK_STATUS_DATA | BLK_STATUS_ZERO), BLK_STATUS_ZERO);
    CU_ASSERT_EQUAL(blk_prefetch(bs, 0, 65536), 0);
    CU_ASSERT_EQUAL(blk_prefetch(bs, 0, (uint64_t)INT64_MAX + 1), -EINVAL);
    /* The probe past the end left the size alone. */
    CU_ASSERT_EQUAL(blk_getlength(bs), IMG_SIZE);
    blk_unref(bs);

    /* discard=ignore: no discard (the zeroes may still be fast). */
    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_FALSE(caps_of(bs).discard);
    blk_unref(bs);

    /* O_DIRECT: no page cache to prefetch into. */
    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\","
                  "\"cache\":{\"direct\":true}}", path);
    if (bs != NULL) {
        CU_ASSERT_FALSE(caps_of(bs).cache);
        blk_unref(bs);
    } else {
        printf("(skipped cache.direct: O_DIRECT unsupported here) ");
    }

    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\","
                  "\"read-only\":true,\"discard\":\"unmap\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    expect_no_write_caps(bs);
    CU_ASSERT_TRUE(caps_of(bs).cache && caps_of(bs).multi_conn);
    blk_unref(bs);
    blk_graph_free(g);
}

/* tmpfs punches holes but has no ZERO_RANGE: zeroes are fast only when
 * they may unmap (discard=unmap). */
static void test_caps_file_tmpfs(void)
{
    struct statfs sfs;
    CLEANUP_FREE char *dir = NULL;
    CLEANUP_FREE char *path = NULL;
    BlockGraph *g;
    BlockNode *bs;
    BlockCaps c;

    if (statfs("/dev/shm", &sfs) != 0 || sfs.f_type != TMPFS_MAGIC) {
        printf("(skipped: /dev/shm is not tmpfs) ");
        return;
    }
    dir = xstrdup("/dev/shm/blockd-caps-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    path = make_file(dir, "t.img");
    g = blk_graph_new(NULL);

    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_FALSE(c.fast_zero);
    CU_ASSERT_FALSE(c.discard);
    CU_ASSERT_TRUE(c.zero && c.fua);
    /* ... and without the claim the request says so at once. */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 65536, BLK_REQ_NO_FALLBACK |
                                      BLK_REQ_MAY_UNMAP), -ENOTSUP);
    blk_unref(bs);

    bs = open_fmt(g, "{\"driver\":\"file\",\"filename\":\"%s\","
                  "\"discard\":\"unmap\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.fast_zero && c.discard);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 65536, BLK_REQ_NO_FALLBACK |
                                      BLK_REQ_MAY_UNMAP), 0);
    blk_unref(bs);

    /* raw over it: the child's answers, through a window. */
    bs = open_fmt(g, "{\"driver\":\"raw\",\"offset\":4096,\"size\":65536,"
                  "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}",
                  path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_FALSE(c.fast_zero);
    CU_ASSERT_FALSE(c.discard);
    CU_ASSERT_TRUE(c.zero && c.fua && c.cache && c.multi_conn);
    blk_unref(bs);
    blk_graph_free(g);
    unlink(path);
    rmdir(dir);
}

static void test_caps_raw(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file(unit_tmpdir(), "r.img");
    BlockNode *bs;
    BlockCaps c, fc;

    bs = open_fmt(g, "{\"driver\":\"raw\",\"offset\":65536,\"discard\":"
                  "\"unmap\",\"file\":{\"driver\":\"file\",\"filename\":"
                  "\"%s\"}}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    fc = caps_of(bs->file);
    CU_ASSERT_EQUAL(memcmp(&c, &fc, sizeof(c)), 0);
    CU_ASSERT_TRUE(c.fua && c.zero && c.fast_zero && c.discard && c.cache &&
                   c.multi_conn);
    CU_ASSERT_EQUAL(blk_prefetch(bs, 0, 4096), 0);
    blk_unref(bs);

    /* The raw node's own discard=ignore drops discards even though its
     * file child (given by name) would release space. */
    bs = open_fmt(g, "{\"driver\":\"file\",\"node-name\":\"rf\","
                  "\"filename\":\"%s\",\"discard\":\"unmap\"}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    {
        BlockNode *r = open_fmt(g, "{\"driver\":\"raw\",\"file\":\"rf\"}");

        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_TRUE(caps_of(bs).discard);
        CU_ASSERT_FALSE(caps_of(r).discard);
        blk_unref(r);
    }
    blk_unref(bs);

    /* Over null-co. */
    bs = open_fmt(g, "{\"driver\":\"raw\",\"file\":{\"driver\":"
                  "\"null-co\"}}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.fua && c.fast_zero && c.cache && c.multi_conn);
    blk_unref(bs);

    bs = open_fmt(g, "{\"driver\":\"raw\",\"read-only\":true,\"file\":"
                  "{\"driver\":\"file\",\"filename\":\"%s\"}}", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    expect_no_write_caps(bs);
    blk_unref(bs);
    blk_graph_free(g);
}

static bool qemu_img(const char *args)
{
    CLEANUP_FREE char *cmd = xasprintf("qemu-img %s >/dev/null 2>&1", args);
    int st = system(cmd);

    return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void test_caps_qcow2(void)
{
    BlockGraph *g;
    CLEANUP_FREE char *v3 = xasprintf("%s/v3.qcow2", unit_tmpdir());
    CLEANUP_FREE char *v2 = xasprintf("%s/v2.qcow2", unit_tmpdir());
    CLEANUP_FREE char *a1 = xasprintf("create -f qcow2 %s 1M", v3);
    CLEANUP_FREE char *a2 = xasprintf("create -f qcow2 -o compat=0.10 %s 1M",
                                      v2);
    BlockNode *bs;
    BlockCaps c;

    if (!qemu_img(a1) || !qemu_img(a2)) {
        printf("(skipped: qemu-img cannot create qcow2 images) ");
        return;
    }
    g = blk_graph_new(NULL);
    bs = open_fmt(g, "{\"driver\":\"qcow2\",\"discard\":\"unmap\","
                  "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}", v3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_TRUE(c.fua && c.zero && c.fast_zero && c.discard &&
                   c.multi_conn);
    CU_ASSERT_FALSE(c.cache);
    /* A whole cluster becomes a zero cluster without writing data. */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 65536, BLK_REQ_NO_FALLBACK),
                    0);
    blk_unref(bs);

    /* v2 has no zero clusters: no fast zeroes, and NO_FALLBACK fails. */
    bs = open_fmt(g, "{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\","
                  "\"filename\":\"%s\"}}", v2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    c = caps_of(bs);
    CU_ASSERT_FALSE(c.fast_zero);
    CU_ASSERT_FALSE(c.discard);
    CU_ASSERT_TRUE(c.fua && c.zero);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 0, 65536, BLK_REQ_NO_FALLBACK),
                    -ENOTSUP);
    blk_unref(bs);

    bs = open_fmt(g, "{\"driver\":\"qcow2\",\"read-only\":true,"
                  "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}", v3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    expect_no_write_caps(bs);
    CU_ASSERT_TRUE(caps_of(bs).multi_conn);
    blk_unref(bs);
    blk_graph_free(g);
}

static CU_TestInfo caps_tests[] = {
    { "null", test_caps_null },
    { "file", test_caps_file },
    { "file_tmpfs", test_caps_file_tmpfs },
    { "raw", test_caps_raw },
    { "qcow2", test_caps_qcow2 },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "caps", .pTests = caps_tests },
    CU_SUITE_INFO_NULL,
};
