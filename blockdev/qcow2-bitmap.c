/* qcow2-bitmap.c - persistent dirty bitmaps in qcow2 images.
 *
 * qcow2.txt "Bitmaps extension": a directory of bitmaps, each with a
 * one-level table of data clusters.  The parsing is pure and lives in
 * qcow2-meta.c; this file moves bitmaps between the image and the
 * node's DirtyBitmaps (blockdev/bitmap.h), the way QEMU does:
 *
 *   open      every bitmap becomes a persistent DirtyBitmap.  One
 *             flagged in_use (not saved cleanly), or with extra data it
 *             does not declare compatible, is inconsistent: listed,
 *             removable, never used.  The others get their bits and
 *             record iff their `auto` flag is set.  On a writable open
 *             in_use is then set on them all in the file (directory
 *             rewritten in place and flushed), so that a crash leaves
 *             them marked.
 *   close     (writable) each persistent, consistent bitmap is written
 *             to new clusters (data, then its table), then a new
 *             directory without in_use; once those and their refcounts
 *             are durable the header switches to it in one write; only
 *             then are the old directory, tables and data freed.  A
 *             crash before the switch leaves the old directory (in_use
 *             set: inconsistent) and leaked clusters, never a bitmap
 *             that claims to be clean.
 *   remove    block-dirty-bitmap-remove: a new directory without the
 *             bitmap, the header switch, then its clusters are freed.
 *
 * s->bm holds the directory as it is on disk (s->h.nb_bitmaps entries
 * while the extension is valid), changed only on the loop thread (open,
 * remove, close) under s->lock; query reads it from the loop thread.
 */
#include "blockdev/qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/bitmap.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

static bool bitmaps_valid(const BDRVQcow2 *s)
{
    return s->h.has_bitmaps_ext && s->h.nb_bitmaps > 0 &&
           (s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
}

static uint32_t ctz32(uint32_t v)
{
    return (uint32_t)__builtin_ctz(v);
}

/* Read and decode bitmap e's table into *out (table_size host-endian
 * entries), checking every entry.  0 or -errno (-EIO: a bad entry,
 * *bad its index). */
static int read_bitmap_table(BDRVQcow2 *s, const Qcow2BitmapEntry *e,
                             uint64_t file_size, uint64_t **out,
                             uint32_t *bad)
{
    uint64_t *t = xcalloc(e->table_size, 8);
    int ret = blk_pread(s->bs->file, e->table_offset,
                        (uint64_t)e->table_size * 8, t, 0);

    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t off;
        bool ones;

        t[i] = be64toh(t[i]);
        if (qcow2_bitmap_table_decode(&s->h, t[i], file_size, &off,
                                      &ones) < 0) {
            *bad = i;
            free(t);
            return -EIO;
        }
    }
    *out = t;
    return 0;
}

/* Fill hb from a checked table: data clusters are deserialized,
 * all-ones entries set whole, zero entries left clean. */
static int load_bits(BDRVQcow2 *s, const Qcow2BitmapEntry *e,
                     const uint64_t *table, HBitmap *hb)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t granules = hbm_granules(hb);
    uint64_t per = cs * 8;          /* granules per data cluster */
    uint64_t gran = hbm_granularity(hb);
    CLEANUP_FREE uint8_t *buf = xmalloc(cs);

    for (uint64_t i = 0; i < e->table_size && i * per < granules; i++) {
        uint64_t first = i * per;
        uint64_t count = MIN(per, granules - first);
        uint64_t off = table[i] & QCOW2_BMT_OFFSET_MASK;
        int ret;

        if (off == 0) {
            if (table[i] & QCOW2_BMT_ALL_ONES) {
                hbm_set(hb, first * gran, count * gran);
            }
            continue;
        }
        ret = blk_pread(s->bs->file, off, cs, buf, 0);
        if (ret < 0) {
            return ret;
        }
        hbm_deserialize(hb, first, count, buf);
    }
    return 0;
}

/* Write the directory in s->bm back where it is (same size: only flags
 * changed) and flush. */
static int write_dir_in_place(BDRVQcow2 *s)
{
    uint64_t size = qcow2_bitmap_dir_size(s->bm, s->h.nb_bitmaps);
    CLEANUP_FREE uint8_t *buf = NULL;
    int ret;

    if (size != s->h.bitmap_directory_size) {
        return -EIO;
    }
    buf = xmalloc(size);
    qcow2_bitmap_dir_encode(s->bm, s->h.nb_bitmaps, buf);
    ret = blk_pwrite(s->bs->file, s->h.bitmap_directory_offset, size, buf,
                     0);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    return ret;
}

static bool entry_usable(const Qcow2BitmapEntry *e)
{
    return !(e->flags & QCOW2_BME_IN_USE) &&
           (e->extra_data_size == 0 ||
            (e->flags & QCOW2_BME_EXTRA_DATA_COMPATIBLE));
}

bool qcow2_bitmaps_load(BDRVQcow2 *s, uint64_t file_size, Error **errp)
{
    BlockNode *bs = s->bs;
    uint64_t size = s->h.bitmap_directory_size;
    CLEANUP_FREE uint8_t *dir = NULL;
    bool changed = false;
    int ret;

    if (!bitmaps_valid(s) || s->snapshot_view != NULL) {
        return true;
    }
    dir = xmalloc(size);
    ret = blk_pread(bs->file, s->h.bitmap_directory_offset, size, dir, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        return false;
    }
    if (!qcow2_bitmap_dir_parse(&s->h, dir, size, file_size, &s->bm,
                                errp)) {
        return false;
    }
    for (uint32_t i = 0; i < s->h.nb_bitmaps; i++) {
        Qcow2BitmapEntry *e = &s->bm[i];
        CLEANUP_FREE uint64_t *table = NULL;
        DirtyBitmap *bm;
        uint32_t bad = 0;

        ret = read_bitmap_table(s, e, file_size, &table, &bad);
        if (ret == -EIO) {
            error_setg(errp, "qcow2: bitmap '%s': invalid bitmap table "
                       "entry %u", e->name, bad);
            goto fail;
        } else if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: bitmap '%s': could not "
                             "read its table", e->name);
            goto fail;
        }
        bm = blk_dirty_bitmap_create(bs, e->name, 1u << e->granularity_bits,
                                     errp);
        if (bm == NULL) {
            error_prepend(errp, "qcow2: bitmap '%s': ", e->name);
            goto fail;
        }
        dirty_bitmap_set_persistent(bm, true);
        if (!entry_usable(e)) {
            dirty_bitmap_set_inconsistent(bm);
            continue;
        }
        ret = load_bits(s, e, table, dirty_bitmap_bits(bm));
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: bitmap '%s': could not "
                             "read its data", e->name);
            goto fail;
        }
        dirty_bitmap_set_enabled(bm, e->flags & QCOW2_BME_AUTO);
        if (!s->read_only) {
            e->flags |= QCOW2_BME_IN_USE;
            changed = true;
        }
    }
    if (changed) {
        ret = write_dir_in_place(s);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not mark the "
                             "bitmaps in use");
            goto fail;
        }
    }
    return true;

fail:
    blk_dirty_bitmaps_release_all(bs);
    qcow2_bitmap_dir_free(s->bm, s->h.nb_bitmaps);
    s->bm = NULL;
    return false;
}

void qcow2_bitmaps_free(BDRVQcow2 *s)
{
    qcow2_bitmap_dir_free(s->bm, s->bm != NULL ? s->h.nb_bitmaps : 0);
    s->bm = NULL;
}

/* Write bm's bits to new clusters: data clusters (none for a clean
 * cluster's worth), then the table.  Fills e (table, size, flags,
 * granularity); the caller sets the name and extra data. */
static int store_bitmap(BDRVQcow2 *s, DirtyBitmap *bm, Qcow2BitmapEntry *e)
{
    uint64_t cs = s->h.cluster_size;
    HBitmap *hb = dirty_bitmap_bits(bm);
    uint32_t gbits = ctz32(dirty_bitmap_granularity(bm));
    uint64_t gran = dirty_bitmap_granularity(bm);
    uint64_t granules = hbm_granules(hb);
    uint64_t per = cs * 8;
    uint64_t n = qcow2_bitmap_table_entries(&s->h, s->size, gbits);
    uint64_t tbytes;
    CLEANUP_FREE uint64_t *table = NULL;
    CLEANUP_FREE uint8_t *buf = xmalloc(cs);
    int ret;

    if (n == 0) {
        n = 1;                  /* an empty image still has a table */
    }
    tbytes = ALIGN_UP(n * 8, cs);
    table = xzalloc(tbytes);
    for (uint64_t i = 0; i < n && i * per < granules; i++) {
        uint64_t first = i * per;
        uint64_t count = MIN(per, granules - first);
        uint64_t off;

        if (hbm_next_dirty(hb, first * gran, count * gran) < 0) {
            continue;
        }
        memset(buf, 0, cs);
        hbm_serialize(hb, first, count, buf);
        ret = qcow2_alloc(s, 1, &off);
        if (ret == 0) {
            ret = blk_pwrite(s->bs->file, off, cs, buf, 0);
        }
        if (ret < 0) {
            return ret;
        }
        table[i] = htobe64(off);
    }
    ret = qcow2_alloc(s, tbytes / cs, &e->table_offset);
    if (ret == 0) {
        ret = blk_pwrite(s->bs->file, e->table_offset, tbytes, table, 0);
    }
    if (ret < 0) {
        return ret;
    }
    e->table_size = n;
    e->type = QCOW2_BITMAP_TYPE_DIRTY;
    e->granularity_bits = gbits;
    e->flags = dirty_bitmap_enabled(bm) ? QCOW2_BME_AUTO : 0;
    return 0;
}

/* Drop the references of e's table and data clusters. */
static int free_bitmap_clusters(BDRVQcow2 *s, const Qcow2BitmapEntry *e)
{
    int64_t flen = blk_getlength(s->bs->file);
    CLEANUP_FREE uint64_t *table = NULL;
    uint32_t bad;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    ret = read_bitmap_table(s, e, flen, &table, &bad);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t off = table[i] & QCOW2_BMT_OFFSET_MASK;

        if (off != 0) {
            ret = qcow2_unref(s, off, s->h.cluster_size);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return qcow2_unref(s, e->table_offset, (uint64_t)e->table_size * 8);
}

/* Make entries (n of them, owned by the caller until success) the
 * image's directory: write it to new clusters, make it and every
 * cluster allocated so far durable, switch the header in one write,
 * then free the old directory (failing that only leaks its clusters).
 * On success s->bm takes entries. */
static int switch_directory(BDRVQcow2 *s, Qcow2BitmapEntry *entries,
                            uint32_t n, Error **errp)
{
    uint64_t cs = s->h.cluster_size;
    uint64_t size = qcow2_bitmap_dir_size(entries, n);
    uint64_t off = 0, old_off = s->h.bitmap_directory_offset;
    uint64_t old_size = s->h.bitmap_directory_size;
    bool old_valid = bitmaps_valid(s);
    int64_t flen;
    size_t hlen, end;
    CLEANUP_FREE uint8_t *hdr = NULL;
    int ret;

    if (size > QCOW2_MAX_BITMAP_DIR_BYTES) {
        error_setg(errp, "qcow2: bitmap directory too large");
        return -EFBIG;
    }
    if (n > 0) {
        CLEANUP_FREE uint8_t *buf = xzalloc(ALIGN_UP(size, cs));

        qcow2_bitmap_dir_encode(entries, n, buf);
        ret = qcow2_alloc(s, DIV_ROUND_UP(size, cs), &off);
        if (ret == 0) {
            ret = blk_pwrite(s->bs->file, off, ALIGN_UP(size, cs), buf, 0);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not write the bitmap "
                             "directory");
            return ret;
        }
    }
    /* Refcounts of the new clusters, then the file: durable before the
     * header points to them. */
    ret = qcow2_flush_meta(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not flush the bitmaps");
        return ret;
    }
    flen = blk_getlength(s->bs->file);
    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "qcow2: could not get the file "
                         "size");
        return (int)flen;
    }
    hlen = MIN((uint64_t)flen, cs);
    hdr = xzalloc(cs);
    ret = blk_pread(s->bs->file, 0, hlen, hdr, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the header");
        return ret;
    }
    if (!qcow2_header_update_bitmaps(hdr, hlen, n, size, off, &end, errp)) {
        return -EINVAL;
    }
    ret = blk_pwrite(s->bs->file, 0, end, hdr, 0);
    if (ret == 0) {
        ret = blk_flush(s->bs->file);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not update the header");
        return ret;
    }
    /* Switched: the new directory is the image's. */
    {
        Qcow2Header nh;

        if (qcow2_header_parse(hdr, hlen, &nh, NULL)) {
            s->h.backing_file_offset = nh.backing_file_offset;
        }
    }
    qcow2_bitmaps_free(s);
    s->bm = entries;
    s->h.has_bitmaps_ext = n > 0;
    s->h.nb_bitmaps = n;
    s->h.bitmap_directory_offset = off;
    s->h.bitmap_directory_size = n > 0 ? size : 0;
    if (n > 0) {
        s->h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        s->h.autoclear_features &= ~(uint64_t)QCOW2_AUTOCLEAR_BITMAPS;
    }
    /* entries are s->bm now: from here on the switch has happened, and
     * failing would make the caller free them a second time.  Old
     * clusters that cannot be freed (refcounts a hostile image got
     * wrong) only leak. */
    if (old_valid) {
        ret = qcow2_unref(s, old_off, old_size);
        if (ret < 0) {
            log_error("qcow2 '%s': could not free the old bitmap "
                      "directory: %s", s->bs->filename, strerror(-ret));
        }
    }
    return 0;
}

/* The on-disk entry called name, or -1. */
static int64_t find_entry(const BDRVQcow2 *s, const char *name)
{
    if (s->bm == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < s->h.nb_bitmaps; i++) {
        if (strcmp(s->bm[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

void qcow2_bitmaps_store(BDRVQcow2 *s)
{
    BlockNode *bs = s->bs;
    uint32_t old_n = s->bm != NULL ? s->h.nb_bitmaps : 0;
    Qcow2BitmapEntry *entries = NULL;
    CLEANUP_FREE Qcow2BitmapEntry *old = NULL;
    CLEANUP_FREE bool *keep = NULL;
    uint32_t n = 0, cap = 0;
    Error *err = NULL;
    int ret = 0;

    if (s->read_only || s->corrupt || s->snapshot_view != NULL) {
        return;
    }
    for (DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL); bm != NULL;
         bm = blk_dirty_bitmap_next(bs, bm)) {
        cap += dirty_bitmap_persistent(bm);
    }
    if (cap == 0 && old_n == 0) {
        return;
    }
    entries = xcalloc(cap ? cap : 1, sizeof(*entries));
    keep = xcalloc(old_n ? old_n : 1, sizeof(*keep));
    blk_dirty_bitmap_lock(bs);
    for (DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL); bm != NULL;
         bm = blk_dirty_bitmap_next(bs, bm)) {
        int64_t i;
        Qcow2BitmapEntry *e;

        if (!dirty_bitmap_persistent(bm) || n == cap) {
            continue;
        }
        i = find_entry(s, dirty_bitmap_name(bm));
        e = &entries[n];
        if (dirty_bitmap_inconsistent(bm)) {
            if (i >= 0) {
                /* Kept as it is: still in use, still removable. */
                qcow2_bitmap_entry_copy(e, &s->bm[i]);
                keep[i] = true;
                n++;
            }
            continue;
        }
        ret = store_bitmap(s, bm, e);
        if (ret < 0) {
            break;
        }
        e->name = xstrdup(dirty_bitmap_name(bm));
        if (i >= 0 && s->bm[i].extra_data_size > 0) {
            /* Extra data it declared compatible: carried along. */
            e->extra_data_size = s->bm[i].extra_data_size;
            e->extra_data = xmalloc(e->extra_data_size);
            memcpy(e->extra_data, s->bm[i].extra_data, e->extra_data_size);
            e->flags |= QCOW2_BME_EXTRA_DATA_COMPATIBLE;
        }
        n++;
    }
    blk_dirty_bitmap_unlock(bs);
    if (ret < 0) {
        error_setg_errno(&err, -ret, "qcow2: could not write the bitmaps");
        goto fail;
    }
    /* The old entries (and their clusters) outlive the switch. */
    old = xcalloc(old_n ? old_n : 1, sizeof(*old));
    for (uint32_t i = 0; i < old_n; i++) {
        qcow2_bitmap_entry_copy(&old[i], &s->bm[i]);
    }
    ret = switch_directory(s, entries, n, &err);
    if (ret < 0) {
        for (uint32_t i = 0; i < old_n; i++) {
            free(old[i].name);
            free(old[i].extra_data);
        }
        goto fail;
    }
    entries = NULL;
    for (uint32_t i = 0; i < old_n; i++) {
        if (!keep[i] && ret == 0) {
            ret = free_bitmap_clusters(s, &old[i]);
        }
        free(old[i].name);
        free(old[i].extra_data);
    }
    if (ret == 0) {
        ret = qcow2_flush_meta(s);
    }
    if (ret < 0) {
        log_error("qcow2 '%s': could not free the old bitmap clusters: %s",
                  bs->filename, strerror(-ret));
    }
    return;

fail:
    /* The old directory (bitmaps in use) stays: they will be found
     * inconsistent, never wrong.  Clusters written so far leak. */
    log_error("qcow2 '%s': persistent bitmaps not stored: %s", bs->filename,
              error_get_pretty(err));
    error_free(err);
    qcow2_bitmap_dir_free(entries, n);
}

bool qcow2_bitmap_can_store(BlockNode *bs, const char *name,
                            uint32_t granularity, Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    uint32_t count = 1;
    uint64_t dir = ALIGN_UP(QCOW2_BME_FIXED + strlen(name), (size_t)8);
    const char *why = NULL;

    for (DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL); bm != NULL;
         bm = blk_dirty_bitmap_next(bs, bm)) {
        if (dirty_bitmap_persistent(bm)) {
            count++;
            dir += ALIGN_UP(QCOW2_BME_FIXED + strlen(dirty_bitmap_name(bm)),
                            (size_t)8);
        }
    }
    if (s->h.version < 3) {
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    } else if (s->read_only) {
        why = "the image is read-only";
    } else if (s->snapshot_view != NULL) {
        why = "the image is opened at a snapshot";
    } else if (strlen(name) > QCOW2_MAX_BITMAP_NAME) {
        why = "Name length exceeds maximum (1023 characters)";
    } else if (granularity < (1u << QCOW2_BITMAP_MIN_GRAN_BITS)) {
        why = "Granularity is under minimum (512 bytes)";
    } else if ((uint64_t)granularity >
               (1ULL << QCOW2_BITMAP_MAX_GRAN_BITS)) {
        why = "Granularity exceeds maximum (2147483648 bytes)";
    } else if (qcow2_bitmap_table_entries(&s->h, s->size,
                                          ctz32(granularity)) *
               s->h.cluster_size > QCOW2_MAX_BITMAP_DATA_BYTES) {
        why = "Too much space will be occupied by the bitmap. Use larger "
              "granularity";
    } else if (count > QCOW2_MAX_BITMAPS) {
        why = "Maximum number of persistent bitmaps is already reached";
    } else if (dir > QCOW2_MAX_BITMAP_DIR_BYTES) {
        why = "Not enough space in the bitmap directory";
    }
    if (why != NULL) {
        error_setg(errp, "Can't make bitmap '%s' persistent in '%s': %s",
                   name, bs->node_name ? bs->node_name : bs->filename, why);
        return false;
    }
    return true;
}

bool qcow2_bitmap_remove_persistent(BlockNode *bs, const char *name,
                                    Error **errp)
{
    BDRVQcow2 *s = bs->opaque;
    int64_t idx;
    uint32_t n, k = 0;
    Qcow2BitmapEntry *entries;
    Qcow2BitmapEntry gone;
    int ret;

    qcow2_lock(s);
    idx = find_entry(s, name);
    if (idx < 0) {
        qcow2_unlock(s);
        return true;            /* never stored */
    }
    if (s->read_only) {
        qcow2_unlock(s);
        error_setg(errp, "Bitmap '%s' is stored in read-only image '%s' "
                   "and cannot be removed", name, bs->filename);
        return false;
    }
    n = s->h.nb_bitmaps;
    entries = xcalloc(n, sizeof(*entries));
    for (uint32_t i = 0; i < n; i++) {
        if (i != idx) {
            qcow2_bitmap_entry_copy(&entries[k++], &s->bm[i]);
        }
    }
    qcow2_bitmap_entry_copy(&gone, &s->bm[idx]);
    ret = switch_directory(s, entries, k, errp);
    if (ret < 0) {
        qcow2_bitmap_dir_free(entries, k);
    } else {
        ret = free_bitmap_clusters(s, &gone);
        if (ret == 0) {
            ret = qcow2_flush_meta(s);
        }
        if (ret < 0) {
            /* Removed from the image; only its clusters leak. */
            log_error("qcow2 '%s': could not free the clusters of bitmap "
                      "'%s': %s", bs->filename, name, strerror(-ret));
            ret = 0;
        }
    }
    free(gone.name);
    free(gone.extra_data);
    qcow2_unlock(s);
    if (ret < 0) {
        error_prepend(errp, "Could not remove bitmap '%s' from '%s': ",
                      name, bs->filename);
    }
    return ret == 0;
}

Qcow2BitmapInfoList *qcow2_bitmaps_info(BDRVQcow2 *s)
{
    Qcow2BitmapInfoList *l;

    if (s->bm == NULL || s->h.nb_bitmaps == 0) {
        return NULL;
    }
    l = XNEW(Qcow2BitmapInfoList);
    l->v = xcalloc(s->h.nb_bitmaps, sizeof(*l->v));
    for (uint32_t i = 0; i < s->h.nb_bitmaps; i++) {
        const Qcow2BitmapEntry *e = &s->bm[i];
        Qcow2BitmapInfo *bi = XNEW(Qcow2BitmapInfo);

        bi->name = xstrdup(e->name);
        bi->granularity = 1u << e->granularity_bits;
        bi->flags = XNEW(Qcow2BitmapInfoFlagsList);
        bi->flags->v = xcalloc(2, sizeof(*bi->flags->v));
        if (e->flags & QCOW2_BME_IN_USE) {
            bi->flags->v[bi->flags->n++] = QCOW2_BITMAP_INFO_FLAGS_IN_USE;
        }
        if (e->flags & QCOW2_BME_AUTO) {
            bi->flags->v[bi->flags->n++] = QCOW2_BITMAP_INFO_FLAGS_AUTO;
        }
        l->v[l->n++] = bi;
    }
    return l;
}

bool qcow2_bitmaps_can_resize(BlockNode *bs, Error **errp)
{
    for (DirtyBitmap *bm = blk_dirty_bitmap_next(bs, NULL); bm != NULL;
         bm = blk_dirty_bitmap_next(bs, bm)) {
        if (dirty_bitmap_persistent(bm) && dirty_bitmap_inconsistent(bm)) {
            error_setg(errp, "Cannot resize qcow2 image '%s' with the "
                       "inconsistent bitmap '%s' (remove it first)",
                       bs->filename, dirty_bitmap_name(bm));
            return false;
        }
    }
    return true;
}
