/* fuzz-qcow2-open.c - libFuzzer target for a hostile qcow2 image: the
 * input is the whole image file.  It is opened by the real qcow2 driver
 * over the real file driver (the bytes sit in a memfd, opened by its
 * /proc/self/fd name), then read, mapped and, when it opened writable,
 * written, zeroed and discarded a little, as an NBD client would.
 *
 * What must hold: no crash, no read or write past a buffer (ASan), no
 * leak, no hang; a bad image fails the open or the request with an
 * error.  The header's backing file is never followed ("backing": null):
 * the input must not make the target open files it names.
 *
 *   CC=clang meson setup build-fuzz -Dfuzzing=true
 *   build-fuzz/tests/fuzz/fuzz-qcow2-open -max_total_time=60
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "util/log.h"
#include "util/util.h"

/* Requests stay small: the point is the metadata, not the copying. */
#define IO_MAX (64 * 1024)

static BlockNode *open_image(BlockGraph *g, int fd, bool writable)
{
    char json[256];
    json_object *obj;
    BlockdevOptions *o = NULL;
    BlockNode *bs = NULL;
    Error *err = NULL;

    snprintf(json, sizeof(json),
             "{\"driver\": \"qcow2\", \"node-name\": \"fz\","
             " \"read-only\": %s, \"backing\": null,"
             " \"file\": {\"driver\": \"file\","
             " \"filename\": \"/proc/self/fd/%d\"}}",
             writable ? "false" : "true", fd);
    obj = json_tokener_parse(json);
    if (obj == NULL) {
        abort();
    }
    if (qapi_parse_BlockdevOptions(obj, NULL, 0, &o, &err)) {
        bs = blk_open(g, o, &err);
        qapi_free_BlockdevOptions(o);
    }
    json_object_put(obj);
    error_free(err);
    return bs;
}

/* Persistent bitmaps (writable opens): remove the first one the image
 * holds from it, add a new persistent one; the rest is stored when the
 * node closes. */
static void exercise_bitmaps(BlockNode *bs)
{
    DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL);
    Error *err = NULL;

    if (bs->drv->bitmap_can_store == NULL) {
        return;
    }
    if (bm != NULL && dirty_bitmap_persistent(bm) &&
        bs->drv->bitmap_remove_persistent(bs, dirty_bitmap_name(bm),
                                          &err)) {
        blk_dirty_bitmap_release(bm);
    }
    error_free(err);
    err = NULL;
    if (bs->drv->bitmap_can_store(bs, "fz", 4096, &err)) {
        bm = blk_dirty_bitmap_create(bs, "fz", 4096, &err);
        if (bm != NULL) {
            dirty_bitmap_set_persistent(bm, true);
            blk_dirty_mark(bs, 0, 8192);
        }
    }
    error_free(err);
}

static void exercise(BlockNode *bs, const uint8_t *data, size_t size,
                     bool writable)
{
    static uint8_t buf[IO_MAX];
    int64_t len = blk_getlength(bs);
    uint64_t pos = 0, pnum;
    int steps = 0;

    if (len <= 0) {
        return;
    }
    /* Map the first extents, as a client's block status walk would. */
    while (pos < (uint64_t)len && steps++ < 64) {
        if (blk_block_status(bs, pos, (uint64_t)len - pos, &pnum) < 0 ||
            pnum == 0) {
            break;
        }
        if (blk_allocation_depth(bs, pos, (uint64_t)len - pos, &pnum) < 0) {
            break;
        }
        pos += pnum;
    }
    /* Reads at offsets the input picks (so the fuzzer can aim at any
     * cluster), plus the start and the end. */
    for (size_t i = 0; i + 8 <= size && i < 8 * 8; i += 8) {
        uint64_t off;

        memcpy(&off, data + size - 8 - i, 8);
        off %= (uint64_t)len;
        (void)blk_pread(bs, off, MIN((uint64_t)len - off, IO_MAX), buf, 0);
    }
    (void)blk_pread(bs, 0, MIN((uint64_t)len, IO_MAX), buf, 0);
    if (writable) {
        uint64_t off = (uint64_t)len / 2;
        uint64_t n = MIN((uint64_t)len - off, 4096);

        memset(buf, 0xa5, n);
        (void)blk_pwrite(bs, off, n, buf, 0);
        (void)blk_pwrite_zeroes(bs, 0, MIN((uint64_t)len, IO_MAX),
                                BLK_REQ_MAY_UNMAP);
        (void)blk_pdiscard(bs, off, n);
        (void)blk_flush(bs);
        (void)blk_pread(bs, off, n, buf, 0);
        exercise_bitmaps(bs);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static BlockGraph *g;
    int fd;

    if (g == NULL) {
        /* Every bad image logs why: millions of lines, no finding. */
        log_set_level(LOG_LEVEL_OFF);
        g = blk_graph_new(NULL);
    }
    fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0) {
        abort();
    }
    if (size > 0 && write(fd, data, size) != (ssize_t)size) {
        abort();
    }
    /* First read-only (the most common open), then writable: a dirty or
     * repairable image takes the repair path there. */
    for (int w = 0; w <= 1; w++) {
        BlockNode *bs = open_image(g, fd, w);

        if (bs != NULL) {
            exercise(bs, data, size, w);
            blk_unref(bs);
        }
    }
    close(fd);
    return 0;
}
