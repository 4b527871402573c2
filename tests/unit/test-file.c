/* test-file.c - the "file" driver: open errors, I/O, growing, O_DIRECT
 * alignment, zero detection, discard, write_zeroes, resize, block
 * status on sparse files, OFD locking (against ourselves and qemu-io),
 * and data exchanged with qemu-io. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "cunit-main.h"
#include "unit-block.h"
#include "util/cleanup.h"
#include "util/loop.h"
#include "util/worker.h"
#include "util/util.h"

/* A fresh sparse file of size bytes in the test directory. */
static char *make_file(const char *name, uint64_t size)
{
    char *path = xasprintf("%s/%s", unit_tmpdir(), name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(ftruncate(fd, (off_t)size) == 0);
    close(fd);
    return path;
}

static BlockNode *open_file(BlockGraph *g, const char *path,
                            const char *extra, Error **errp)
{
    char json[4096];

    snprintf(json, sizeof(json),
             "{\"driver\":\"file\",\"filename\":\"%s\"%s%s}", path,
             extra ? "," : "", extra ? extra : "");
    return unit_open_json(g, json, errp);
}

static void count_node(BlockNode *bs, void *opaque)
{
    (void)bs;
    (*(int *)opaque)++;
}

static bool have_prog(const char *name)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static void test_file_open_errors(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    Error *err = NULL;
    CLEANUP_FREE char *missing = xasprintf("%s/nope.img", unit_tmpdir());
    CLEANUP_FREE char *expect = xasprintf("Could not open '%s': No such file "
                                          "or directory", missing);
    CLEANUP_FREE char *dirmsg = NULL;

    CU_ASSERT_PTR_NULL(open_file(g, missing, NULL, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), expect);
    error_free(err);
    err = NULL;

    /* a directory: read-write open fails with EISDIR... */
    CU_ASSERT_PTR_NULL(open_file(g, unit_tmpdir(), NULL, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "Is a directory"));
    error_free(err);
    err = NULL;
    /* ...and read-only is refused as not a regular file */
    CU_ASSERT_PTR_NULL(open_file(g, unit_tmpdir(), "\"read-only\":true",
                                 &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    dirmsg = xasprintf("'file' driver requires '%s' to be a regular file",
                       unit_tmpdir());
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), dirmsg);
    error_free(err);
    err = NULL;

    {
        CLEANUP_FREE char *p = make_file("hd.img", 4096);
        CLEANUP_FREE char *m = xasprintf("'host_device' driver requires "
                                         "'%s' to be either a character or "
                                         "block device", p);
        char json[4096];
        snprintf(json, sizeof(json), "{\"driver\":\"host_device\","
                 "\"filename\":\"%s\"}", p);
        CU_ASSERT_PTR_NULL(unit_open_json(g, json, &err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_STRING_EQUAL(error_get_pretty(err), m);
        error_free(err);
        err = NULL;
    }
    CU_ASSERT_PTR_NULL(open_file(g, "", NULL, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    err = NULL;

    /* aio=native needs cache.direct, as in QEMU */
    {
        CLEANUP_FREE char *p = make_file("aio.img", 4096);
        CU_ASSERT_PTR_NULL(open_file(g, p, "\"aio\":\"native\"", &err));
        CU_ASSERT_PTR_NOT_NULL_FATAL(err);
        CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
                                      "requires cache.direct=on"));
        error_free(err);
        err = NULL;
        BlockNode *bs = open_file(g, p, "\"aio\":\"io_uring\"", &err);
        CU_ASSERT_PTR_NOT_NULL(bs);
        blk_unref(bs);
    }
    /* nothing was left behind by the failures */
    {
        int n = 0;
        blk_foreach_node(g, count_node, &n);
        CU_ASSERT_EQUAL(n, 0);
    }
    blk_graph_free(g);
}

static void test_file_io_grow(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("io.img", 65536);
    BlockNode *bs = open_file(g, path, NULL, NULL);
    uint8_t w[8192], r[8192];
    struct stat st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_getlength(bs), 65536);
    for (size_t i = 0; i < sizeof(w); i++) {
        w[i] = (uint8_t)(i * 7 + 3);
    }
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1000, sizeof(w), w, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 1000, sizeof(r), r, 0), 0);
    CU_ASSERT_EQUAL(memcmp(w, r, sizeof(w)), 0);
    /* FUA writes work too */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, w, BLK_REQ_FUA), 0);
    /* a protocol node reads zeroes past the end... */
    memset(r, 0xee, sizeof(r));
    CU_ASSERT_EQUAL(blk_pread(bs, 65536 - 100, 200, r, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(r, 200));
    /* ...and grows on a write past it */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 70000, 100, w, 0), 0);
    CU_ASSERT_EQUAL(blk_getlength(bs), 70100);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 70100);
    /* overflow is still refused */
    CU_ASSERT_EQUAL(blk_pwrite(bs, UINT64_MAX - 5, 100, w, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_pread(bs, INT64_MAX, 2, r, 0), -EINVAL);
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    CU_ASSERT_TRUE(bs->wr_ops >= 3);
    CU_ASSERT_TRUE(bs->rd_bytes >= sizeof(r));
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_file_read_only(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("ro.img", 65536);
    BlockNode *bs = open_file(g, path, "\"read-only\":true", NULL);
    uint8_t buf[512] = { 1 };
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 512, buf, 0), -EPERM);
    CU_ASSERT_FALSE(blk_truncate(bs, 4096, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(blk_node_add_user(bs, "export 'e'", true, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), "Block node is read-only");
    error_free(err);
    blk_unref(bs);
    blk_graph_free(g);
}

/* Is [off, off+len) of path a hole (SEEK_DATA skips it)? */
static bool is_hole(const char *path, off_t off, off_t len)
{
    int fd = open(path, O_RDONLY);
    off_t data;

    CU_ASSERT_FATAL(fd >= 0);
    data = lseek(fd, off, SEEK_DATA);
    close(fd);
    return data < 0 || data >= off + len;
}

static void test_file_block_status(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("sparse.img", 4 << 20);
    BlockNode *bs = open_file(g, path, NULL, NULL);
    uint8_t *buf = xmalloc(1 << 20);
    uint64_t pnum = 0;
    int ret;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    memset(buf, 0x5a, 1 << 20);
    /* data at [1M, 2M), holes elsewhere */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1 << 20, 1 << 20, buf, 0), 0);
    if (!is_hole(path, 0, 1 << 20)) {
        printf("\n  (file system does not keep holes: skipped)\n");
        goto out;
    }
    ret = blk_block_status(bs, 0, 4 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    CU_ASSERT_EQUAL(pnum, 1 << 20);
    ret = blk_block_status(bs, 1 << 20, 3 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, BLK_STATUS_DATA | BLK_STATUS_ALLOCATED);
    CU_ASSERT_EQUAL(pnum, 1 << 20);
    ret = blk_block_status(bs, 2 << 20, 2 << 20, &pnum);
    CU_ASSERT_EQUAL(ret, BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    CU_ASSERT_EQUAL(pnum, 2 << 20);
    /* the request length bounds pnum */
    ret = blk_block_status(bs, 1 << 20, 4096, &pnum);
    CU_ASSERT_EQUAL(pnum, 4096);
    /* a protocol node allocates everything: depth 1 */
    CU_ASSERT_EQUAL(blk_allocation_depth(bs, 0, 4 << 20, &pnum), 1);
out:
    free(buf);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_file_discard_zeroes(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("discard.img", 4 << 20);
    BlockNode *bs = open_file(g, path, "\"discard\":\"unmap\"", NULL);
    BlockNode *ign;
    uint8_t *buf = xmalloc(1 << 20);
    uint64_t pnum;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    memset(buf, 0x33, 1 << 20);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 1 << 20, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 2 << 20, 1 << 20, buf, 0), 0);
    CU_ASSERT_FALSE(is_hole(path, 0, 1 << 20));
    /* discard punches a hole that reads back as zeroes */
    CU_ASSERT_EQUAL(blk_pdiscard(bs, 0, 1 << 20), 0);
    CU_ASSERT_TRUE(is_hole(path, 0, 1 << 20));
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 1 << 20, buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 1 << 20));
    CU_ASSERT_EQUAL(blk_block_status(bs, 0, 1 << 20, &pnum),
                    BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED);
    /* write_zeroes with MAY_UNMAP punches too; without it the range is
     * zeroed in place (ZERO_RANGE) */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 2 << 20, 65536,
                                      BLK_REQ_MAY_UNMAP), 0);
    CU_ASSERT_TRUE(is_hole(path, 2 << 20, 65536));
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, (2 << 20) + 65536, 65536, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 2 << 20, 1 << 20, buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 131072));
    CU_ASSERT_EQUAL(buf[131072], 0x33);
    /* unaligned zeroing keeps the bytes around it */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, (2 << 20) + 200000, 3, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, (2 << 20) + 199999, 5, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x33);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf + 1, 3));
    CU_ASSERT_EQUAL(buf[4], 0x33);
    CU_ASSERT_TRUE(bs->discard_ops >= 1);
    blk_unref(bs);

    /* discard=ignore (the default) drops discards */
    ign = open_file(g, path, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ign);
    CU_ASSERT_EQUAL(blk_pdiscard(ign, (2 << 20) + 131072, 65536), 0);
    CU_ASSERT_FALSE(is_hole(path, (2 << 20) + 131072, 65536));
    /* and write_zeroes does not punch even when asked to */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(ign, (2 << 20) + 131072, 65536,
                                      BLK_REQ_MAY_UNMAP), 0);
    CU_ASSERT_EQUAL(blk_pread(ign, (2 << 20) + 131072, 65536, buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 65536));
    blk_unref(ign);
    free(buf);
    blk_graph_free(g);
}

static void test_file_detect_zeroes(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("dz.img", 2 << 20);
    Error *err = NULL;
    BlockNode *bs;
    uint8_t *buf = xzalloc(1 << 20);

    /* unmap needs discard=unmap (QEMU's rule) */
    bs = open_file(g, path, "\"detect-zeroes\":\"unmap\"", &err);
    CU_ASSERT_PTR_NULL(bs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err),
                                  "detect-zeroes to unmap"));
    error_free(err);
    bs = open_file(g, path, "\"detect-zeroes\":\"unmap\","
                   "\"discard\":\"unmap\"", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    memset(buf, 0x11, 1 << 20);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 1 << 20, buf, 0), 0);
    CU_ASSERT_FALSE(is_hole(path, 0, 1 << 20));
    CU_ASSERT_EQUAL(bs->zero_ops, 0);
    /* a buffer of zeroes becomes a punched hole */
    memset(buf, 0, 1 << 20);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 1 << 20, buf, 0), 0);
    CU_ASSERT_EQUAL(bs->zero_ops, 1);
    CU_ASSERT_TRUE(is_hole(path, 0, 1 << 20));
    /* a single non-zero byte at the end is data */
    buf[(1 << 20) - 1] = 1;
    CU_ASSERT_EQUAL(blk_pwrite(bs, 0, 1 << 20, buf, 0), 0);
    CU_ASSERT_EQUAL(bs->zero_ops, 1);
    blk_unref(bs);
    free(buf);
    blk_graph_free(g);
}

static void test_file_resize(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("resize.img", 65536);
    BlockNode *bs = open_file(g, path, NULL, NULL);
    Error *err = NULL;
    struct stat st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(blk_truncate(bs, 1 << 20, &err));
    CU_ASSERT_EQUAL(blk_getlength(bs), 1 << 20);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 1 << 20);
    CU_ASSERT_TRUE(blk_truncate(bs, 4096, &err));
    CU_ASSERT_EQUAL(blk_getlength(bs), 4096);
    CU_ASSERT_FALSE(blk_truncate(bs, (uint64_t)INT64_MAX + 1, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_file_direct(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("direct.img", 1 << 20);
    Error *err = NULL;
    BlockNode *bs = open_file(g, path, "\"cache\":{\"direct\":true}", &err);
    BlockNode *plain;
    uint8_t *w, *r, *raw;

    if (bs == NULL) {
        printf("\n  (O_DIRECT refused here: %s: skipped)\n",
               error_get_pretty(err));
        error_free(err);
        blk_graph_free(g);
        return;
    }
    CU_ASSERT_TRUE(bs->cache_direct);
    CU_ASSERT_TRUE(IS_POWER_OF_2(bs->request_alignment));
    CU_ASSERT_TRUE(bs->request_alignment >= 512);
    w = xmalloc(70000);
    r = xmalloc(70000);
    raw = xmalloc(70000);
    for (int i = 0; i < 70000; i++) {
        w[i] = (uint8_t)(i % 251);
    }
    /* unaligned offset, length and buffer address */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 1001, 65537, w + 3, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 1001, 65537, r + 1, 0), 0);
    CU_ASSERT_EQUAL(memcmp(w + 3, r + 1, 65537), 0);
    /* the bytes around the write were kept */
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 1001, r, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(r, 1001));
    /* an aligned request goes straight through */
    {
        void *abuf = NULL;
        CU_ASSERT_EQUAL(posix_memalign(&abuf, 4096, 65536), 0);
        memcpy(abuf, w, 65536);
        CU_ASSERT_EQUAL(blk_pwrite(bs, 131072, 65536, abuf, BLK_REQ_FUA), 0);
        memset(abuf, 0, 65536);
        CU_ASSERT_EQUAL(blk_pread(bs, 131072, 65536, abuf, 0), 0);
        CU_ASSERT_EQUAL(memcmp(abuf, w, 65536), 0);
        free(abuf);
    }
    /* an unaligned write at the end does not grow the file beyond it */
    CU_ASSERT_EQUAL(blk_pwrite(bs, (1 << 20) + 10, 100, w, 0), 0);
    CU_ASSERT_EQUAL(blk_getlength(bs), (1 << 20) + 110);
    {
        struct stat st;
        CU_ASSERT_EQUAL(stat(path, &st), 0);
        CU_ASSERT_EQUAL(st.st_size, (1 << 20) + 110);
    }
    /* a cached reader sees the same bytes */
    plain = open_file(g, path, "\"read-only\":true,\"locking\":\"off\"",
                      NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    CU_ASSERT_EQUAL(blk_pread(plain, 1001, 65537, raw, 0), 0);
    CU_ASSERT_EQUAL(memcmp(w + 3, raw, 65537), 0);
    blk_unref(plain);
    free(w);
    free(r);
    free(raw);
    blk_unref(bs);
    blk_graph_free(g);
}

static void test_file_locking(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("lock.img", 1 << 20);
    CLEANUP_FREE char *expect = NULL;
    Error *err = NULL;
    BlockNode *a, *b;

    a = open_file(g, path, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    /* OFD locks belong to the open file description: a second writable
     * open in the same process conflicts like another process would */
    b = open_file(g, path, NULL, &err);
    CU_ASSERT_PTR_NULL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    expect = xasprintf("Failed to get \"write\" lock: Is another process "
                       "using the image [%s]?", path);
    CU_ASSERT_STRING_EQUAL(error_get_pretty(err), expect);
    error_free(err);
    err = NULL;
    /* a reader is fine (it shares write), and so is locking=off */
    b = open_file(g, path, "\"read-only\":true", &err);
    CU_ASSERT_PTR_NOT_NULL(b);
    blk_unref(b);
    b = open_file(g, path, "\"locking\":\"off\"", &err);
    CU_ASSERT_PTR_NOT_NULL(b);
    blk_unref(b);

    if (have_prog("qemu-io")) {
        char cmd[4096];
        FILE *f;
        char out[4096] = "";
        size_t n;

        /* qemu-io cannot open it for writing while we hold it */
        snprintf(cmd, sizeof(cmd), "qemu-io -f raw -c 'write 0 512' '%s' "
                 "2>&1", path);
        f = popen(cmd, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        CU_ASSERT_NOT_EQUAL(pclose(f), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "Failed to get \"write\" lock"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "Is another process using the "
                                           "image"));
        blk_unref(a);
        /* once we let go, it can */
        f = popen(cmd, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        CU_ASSERT_EQUAL(pclose(f), 0);
    } else {
        printf("\n  (qemu-io not installed: interop part skipped)\n");
        blk_unref(a);
    }
    /* after close, a writer opens again */
    a = open_file(g, path, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL(a);
    blk_unref(a);
    blk_graph_free(g);
}

/* Data written by us is what qemu-io reads, and the reverse. */
static void test_file_qemu_io_data(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("interop.img", 1 << 20);
    BlockNode *bs;
    uint8_t *buf = xmalloc(65536);
    char cmd[4096];

    if (!have_prog("qemu-io")) {
        printf("\n  (qemu-io not installed: skipped)\n");
        free(buf);
        blk_graph_free(g);
        return;
    }
    bs = open_file(g, path, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    memset(buf, 0xab, 65536);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 65536, 65536, buf, 0), 0);
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    blk_unref(bs);
    snprintf(cmd, sizeof(cmd), "qemu-io -f raw -c 'read -P 0xab 64k 64k' "
             "-c 'read -P 0 0 64k' -c 'read -P 0 128k 64k' '%s' "
             "| grep -q 'read 65536/65536' && ! qemu-io -f raw "
             "-c 'read -P 0xab 64k 64k' '%s' | grep -q 'Pattern verification "
             "failed'", path, path);
    CU_ASSERT_EQUAL(system(cmd), 0);

    snprintf(cmd, sizeof(cmd), "qemu-io -f raw -c 'write -P 0xcd 4k 8k' "
             "'%s' >/dev/null", path);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    bs = open_file(g, path, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, 16384, buf, 0), 0);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf, 4096));
    for (int i = 4096; i < 12288; i++) {
        if (buf[i] != 0xcd) {
            CU_FAIL("qemu-io's pattern not read back");
            break;
        }
    }
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf + 12288, 4096));
    blk_unref(bs);
    free(buf);
    blk_graph_free(g);
}

/* host_device on a loop device, when this machine lets us make one. */
static void test_host_device(void)
{
    BlockGraph *g;
    CLEANUP_FREE char *path = make_file("loop.img", 4 << 20);
    char cmd[4096], dev[256] = "";
    BlockNode *bs;
    FILE *f;
    uint8_t *buf;
    void *abuf = NULL;
    Error *err = NULL;

    snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>/dev/null", path);
    f = popen(cmd, "r");
    if (f == NULL || fgets(dev, sizeof(dev), f) == NULL ||
        strncmp(dev, "/dev/", 5) != 0) {
        if (f != NULL) {
            pclose(f);
        }
        printf("\n  (cannot set up a loop device here: skipped)\n");
        return;
    }
    pclose(f);
    dev[strcspn(dev, "\n")] = '\0';
    g = blk_graph_new(NULL);
    bs = blk_open_image(g, dev, NULL, "dev0", false, &err);
    if (bs == NULL) {
        printf("\n  (%s: %s: skipped)\n", dev, error_get_pretty(err));
        error_free(err);
        goto out;
    }
    CU_ASSERT_STRING_EQUAL(bs->file->drv->format_name, "host_device");
    CU_ASSERT_EQUAL(blk_getlength(bs), 4 << 20);
    buf = xmalloc(65536);
    memset(buf, 0x77, 65536);
    CU_ASSERT_EQUAL(blk_pwrite(bs, 4096, 65536, buf, BLK_REQ_FUA), 0);
    /* zeroes in the middle (BLKZEROOUT), unaligned ones by writes */
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 8192, 8192, 0), 0);
    CU_ASSERT_EQUAL(blk_pwrite_zeroes(bs, 20000, 3, 0), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 4096, 65536, buf, 0), 0);
    CU_ASSERT_EQUAL(buf[0], 0x77);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf + 4096, 8192));
    CU_ASSERT_EQUAL(buf[4096 + 8192], 0x77);
    CU_ASSERT_TRUE(blk_buffer_is_zero(buf + 20000 - 4096, 3));
    CU_ASSERT_EQUAL(buf[20003 - 4096], 0x77);
    /* a device does not grow */
    CU_ASSERT_EQUAL(blk_pwrite(bs, 4 << 20, 512, buf, 0), -ENOSPC);
    CU_ASSERT_FALSE(blk_truncate(bs, 8 << 20, &err));
    error_free(err);
    err = NULL;
    CU_ASSERT_EQUAL(blk_flush(bs), 0);
    free(buf);
    blk_unref(bs);

    /* O_DIRECT on the device: the sector size from the kernel */
    snprintf(cmd, sizeof(cmd), "{\"driver\":\"host_device\",\"filename\":"
             "\"%s\",\"cache\":{\"direct\":true}}", dev);
    bs = unit_open_json(g, cmd, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_TRUE(bs->request_alignment >= 512);
    CU_ASSERT_EQUAL(posix_memalign(&abuf, 4096, 8192), 0);
    CU_ASSERT_EQUAL(blk_pread(bs, 4097, 100, abuf, 0), 0);
    CU_ASSERT_EQUAL(((uint8_t *)abuf)[0], 0x77);
    free(abuf);
    blk_unref(bs);
out:
    blk_graph_free(g);
    snprintf(cmd, sizeof(cmd), "losetup -d '%s'", dev);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

/* Many small unaligned O_DIRECT writes in flight at once, several in
 * each sector: the read-modify-write cycles must not lose any. */
#define NSMALL 200

typedef struct SmallWrites {
    Loop *loop;
    int done, failed;
    BlockRequest req[NSMALL];
    uint8_t data[NSMALL][100];
} SmallWrites;

static void small_cb(BlockRequest *req)
{
    SmallWrites *t = req->opaque;

    t->failed += req->ret != 0;
    if (++t->done == NSMALL) {
        loop_stop(t->loop);
    }
}

static void test_direct_concurrent_rmw(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *path = make_file("rmw.img", 65536);
    Error *err = NULL;
    BlockNode *bs = open_file(g, path, "\"cache\":{\"direct\":true}", &err);
    SmallWrites *t;
    WorkerPool *pool;
    uint8_t *back;

    if (bs == NULL) {
        printf("\n  (O_DIRECT refused here: skipped)\n");
        error_free(err);
        blk_graph_free(g);
        return;
    }
    t = XNEW(SmallWrites);
    t->loop = loop_new();
    pool = worker_pool_new(t->loop, 4);
    for (int i = 0; i < NSMALL; i++) {
        BlockRequest *r = &t->req[i];
        memset(t->data[i], i + 1, 100);
        r->bs = bs;
        r->type = BLK_OP_WRITE;
        r->offset = (uint64_t)i * 100;
        r->bytes = 100;
        r->buf = t->data[i];
        r->cb = small_cb;
        r->opaque = t;
        blk_aio_submit(pool, r);
    }
    loop_run(t->loop);
    CU_ASSERT_EQUAL(t->done, NSMALL);
    CU_ASSERT_EQUAL(t->failed, 0);
    back = xmalloc(NSMALL * 100);
    CU_ASSERT_EQUAL(blk_pread(bs, 0, NSMALL * 100, back, 0), 0);
    for (int i = 0; i < NSMALL * 100; i++) {
        if (back[i] != i / 100 + 1) {
            printf("\n  byte %d is %d\n", i, back[i]);
            CU_FAIL("a concurrent unaligned write was lost");
            break;
        }
    }
    free(back);
    worker_pool_free(pool);
    loop_free(t->loop);
    free(t);
    blk_unref(bs);
    blk_graph_free(g);
}

/* A file in memory (tmpfs) runs small requests on the loop thread, and a
 * raw node over it does too; a file on a disk filesystem never does. */
static void test_file_in_memory_inline(void)
{
    BlockGraph *g = blk_graph_new(NULL);
    CLEANUP_FREE char *disk = make_file("disk.img", 65536);
    char shm[] = "/dev/shm/blockd-unit-XXXXXX";
    char json[512];
    struct statfs sfs;
    BlockNode *bs, *raw;
    int fd;

    bool disk_in_memory = statfs(unit_tmpdir(), &sfs) == 0 &&
                          sfs.f_type == TMPFS_MAGIC;

    bs = open_file(g, disk, NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bs);
    CU_ASSERT_EQUAL(bs->aio_inline, disk_in_memory);
    blk_unref(bs);

    fd = mkstemp(shm);
    if (fd < 0 || statfs("/dev/shm", &sfs) != 0 ||
        sfs.f_type != TMPFS_MAGIC) {
        printf("(skipped: no tmpfs at /dev/shm) ");
        if (fd >= 0) {
            close(fd);
            unlink(shm);
        }
        blk_graph_free(g);
        return;
    }
    CU_ASSERT_EQUAL(ftruncate(fd, 65536), 0);
    close(fd);
    snprintf(json, sizeof(json), "{\"driver\":\"raw\",\"file\":"
             "{\"driver\":\"file\",\"filename\":\"%s\"}}", shm);
    raw = unit_open_json(g, json, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
    CU_ASSERT_TRUE(raw->file->aio_inline);
    CU_ASSERT_TRUE(raw->aio_inline);
    blk_unref(raw);
    unlink(shm);

    /* qcow2 over a file in memory: inline too, with or without backing
     * in memory; a backing file on disk makes the overlay wait. */
    char base_shm[] = "/dev/shm/blockd-unit-base-XXXXXX";
    char cmd[1024];
    fd = mkstemp(base_shm);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M && "
             "qemu-img create -q -f qcow2 -b %s -F qcow2 %s", base_shm,
             base_shm, shm);
    if (system(cmd) == 0) {
        snprintf(json, sizeof(json), "{\"driver\":\"qcow2\",\"file\":"
                 "{\"driver\":\"file\",\"filename\":\"%s\"}}", shm);
        raw = unit_open_json(g, json, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
        CU_ASSERT_PTR_NOT_NULL(raw->backing);
        CU_ASSERT_TRUE(raw->aio_inline);
        blk_unref(raw);
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -b %s "
                 "-F raw %s", disk, shm);
        CU_ASSERT_EQUAL(system(cmd), 0);
        raw = unit_open_json(g, json, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
        CU_ASSERT_EQUAL(raw->aio_inline, disk_in_memory);
        blk_unref(raw);
    } else {
        printf("(qcow2 part skipped: qemu-img failed) ");
    }
    unlink(shm);
    unlink(base_shm);
    blk_graph_free(g);
}

static CU_TestInfo file_tests[] = {
    { "in_memory_inline", test_file_in_memory_inline },
    { "direct_concurrent_rmw", test_direct_concurrent_rmw },
    { "host_device", test_host_device },
    { "open_errors", test_file_open_errors },
    { "io_grow", test_file_io_grow },
    { "read_only", test_file_read_only },
    { "block_status", test_file_block_status },
    { "discard_zeroes", test_file_discard_zeroes },
    { "detect_zeroes", test_file_detect_zeroes },
    { "resize", test_file_resize },
    { "direct", test_file_direct },
    { "locking", test_file_locking },
    { "qemu_io_data", test_file_qemu_io_data },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "file", .pTests = file_tests },
    CU_SUITE_INFO_NULL,
};
