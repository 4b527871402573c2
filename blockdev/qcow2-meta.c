/* qcow2-meta.c - pure qcow2 metadata parsing; see qcow2-meta.h. */
#include "blockdev/qcow2-meta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/cleanup.h"
#include "util/util.h"

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                           uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

static void copy_name(char *dst, const uint8_t *src, size_t len)
{
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Walk the header extensions from start up to limit (exclusive). */
static bool parse_extensions(const uint8_t *buf, size_t start, size_t limit,
                             Qcow2Header *h, Error **errp)
{
    size_t off = start;
    uint32_t seen = 0;   /* bit per known extension */

    while (true) {
        uint32_t type, elen;

        if (off + 8 > limit) {
            error_setg(errp, "qcow2: header extensions run past the end "
                       "of the header cluster");
            return false;
        }
        type = get_be32(buf + off);
        elen = get_be32(buf + off + 4);
        off += 8;
        if (type == QCOW2_EXT_END) {
            return true;
        }
        if (elen > limit - off) {
            error_setg(errp, "qcow2: header extension 0x%08x too large "
                       "(%u bytes)", type, elen);
            return false;
        }
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (seen & 1) {
                goto dup;
            }
            seen |= 1;
            if (elen > QCOW2_MAX_BACKING_NAME) {
                error_setg(errp, "qcow2: backing format name too long "
                           "(%u bytes)", elen);
                return false;
            }
            if (memchr(buf + off, 0, elen) != NULL) {
                error_setg(errp, "qcow2: backing format name contains "
                           "a NUL byte");
                return false;
            }
            copy_name(h->backing_format, buf + off, elen);
            h->has_backing_format = true;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            if (seen & 2) {
                goto dup;
            }
            seen |= 2;
            for (size_t i = 0; i + 48 <= elen; i += 48) {
                Qcow2FeatureName *f;

                if (h->nb_feature_names == QCOW2_MAX_FEATURE_NAMES) {
                    break;
                }
                f = &h->feature_names[h->nb_feature_names++];
                f->type = buf[off + i];
                f->bit = buf[off + i + 1];
                memcpy(f->name, buf + off + i + 2, 46);
                f->name[46] = '\0';
            }
            break;
        case QCOW2_EXT_BITMAPS:
            if (seen & 4) {
                goto dup;
            }
            seen |= 4;
            if (elen != 24) {
                error_setg(errp, "qcow2: bitmaps extension has length %u, "
                           "expected 24", elen);
                return false;
            }
            h->has_bitmaps_ext = true;
            h->nb_bitmaps = get_be32(buf + off);
            h->bitmaps_reserved = get_be32(buf + off + 4);
            h->bitmap_directory_size = get_be64(buf + off + 8);
            h->bitmap_directory_offset = get_be64(buf + off + 16);
            break;
        case QCOW2_EXT_CRYPTO:
            h->has_crypto_ext = true;
            break;
        case QCOW2_EXT_DATA_FILE:
            h->has_data_file_ext = true;
            break;
        default:
            /* Unknown extensions are ignored (and never rewritten). */
            break;
        }
        off += ALIGN_UP((uint64_t)elen, 8);
        if (off > limit) {
            off = limit;
        }
    }

dup:
    error_setg(errp, "qcow2: duplicate header extension");
    return false;
}

bool qcow2_header_parse(const uint8_t *buf, size_t len, Qcow2Header *h,
                        Error **errp)
{
    size_t limit;

    memset(h, 0, sizeof(*h));
    if (len < QCOW2_V2_HEADER_LEN) {
        error_setg(errp, "qcow2: image too short for a header (%zu bytes)",
                   len);
        return false;
    }
    if (get_be32(buf) != QCOW2_MAGIC) {
        error_setg(errp, "qcow2: image is not in qcow2 format (bad magic)");
        return false;
    }
    h->version = get_be32(buf + 4);
    if (h->version != 2 && h->version != 3) {
        error_setg(errp, "qcow2: unsupported version %u", h->version);
        return false;
    }
    h->backing_file_offset = get_be64(buf + 8);
    h->backing_file_size = get_be32(buf + 16);
    h->cluster_bits = get_be32(buf + 20);
    h->size = get_be64(buf + 24);
    h->crypt_method = get_be32(buf + 32);
    h->l1_size = get_be32(buf + 36);
    h->l1_table_offset = get_be64(buf + 40);
    h->refcount_table_offset = get_be64(buf + 48);
    h->refcount_table_clusters = get_be32(buf + 56);
    h->nb_snapshots = get_be32(buf + 60);
    h->snapshots_offset = get_be64(buf + 64);

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "qcow2: unsupported cluster size: 2^%u (must be "
                   "512 bytes to 2 MiB)", h->cluster_bits);
        return false;
    }
    h->cluster_size = 1ULL << h->cluster_bits;

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
    } else {
        if (len < QCOW2_V3_HEADER_LEN) {
            error_setg(errp, "qcow2: image too short for a v3 header");
            return false;
        }
        h->incompatible_features = get_be64(buf + 72);
        h->compatible_features = get_be64(buf + 80);
        h->autoclear_features = get_be64(buf + 88);
        h->refcount_order = get_be32(buf + 96);
        h->header_length = get_be32(buf + 100);
        if (h->header_length < QCOW2_V3_HEADER_LEN ||
            h->header_length % 8 != 0 ||
            h->header_length > h->cluster_size) {
            error_setg(errp, "qcow2: invalid header length %u",
                       h->header_length);
            return false;
        }
        if (h->header_length > len) {
            error_setg(errp, "qcow2: header truncated (%u bytes declared, "
                       "%zu available)", h->header_length, len);
            return false;
        }
        if (h->header_length > QCOW2_V3_HEADER_LEN) {
            h->compression_type = buf[104];
        }
    }
    if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER) {
        error_setg(errp, "qcow2: refcount width 2^%u bits is too large "
                   "(at most 64 bits)", h->refcount_order);
        return false;
    }
    h->refcount_bits = 1u << h->refcount_order;
    h->rb_bits = h->cluster_bits + 3 - h->refcount_order;

    h->extended_l2 = h->incompatible_features & QCOW2_INCOMPAT_EXTL2;
    if (h->extended_l2 && h->cluster_bits < 14) {
        error_setg(errp, "qcow2: extended L2 entries need clusters of at "
                   "least 16 KiB");
        return false;
    }
    h->l2_entry_size = h->extended_l2 ? 16 : 8;
    h->l2_bits = h->cluster_bits - (h->extended_l2 ? 4 : 3);
    h->subcluster_bits = h->extended_l2 ? h->cluster_bits - 5
                                        : h->cluster_bits;

    if (h->size > INT64_MAX) {
        error_setg(errp, "qcow2: virtual size %llu too large",
                   (unsigned long long)h->size);
        return false;
    }

    /* Extensions live in cluster 0, before the backing file name. */
    limit = MIN(len, (size_t)h->cluster_size);
    if (h->backing_file_offset != 0) {
        if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
            h->backing_file_size == 0) {
            error_setg(errp, "qcow2: invalid backing file name length %u",
                       h->backing_file_size);
            return false;
        }
        if (h->backing_file_offset < h->header_length ||
            h->backing_file_offset > h->cluster_size ||
            h->backing_file_size > h->cluster_size - h->backing_file_offset) {
            error_setg(errp, "qcow2: backing file name is outside the "
                       "header cluster");
            return false;
        }
        if (h->backing_file_offset + h->backing_file_size > len) {
            error_setg(errp, "qcow2: header truncated before the backing "
                       "file name");
            return false;
        }
        if (memchr(buf + h->backing_file_offset, 0,
                   h->backing_file_size) != NULL) {
            error_setg(errp, "qcow2: backing file name contains a NUL "
                       "byte");
            return false;
        }
        copy_name(h->backing_file, buf + h->backing_file_offset,
                  h->backing_file_size);
        h->has_backing_file = true;
        limit = MIN(limit, (size_t)h->backing_file_offset);
    }
    return parse_extensions(buf, h->header_length, limit, h, errp);
}

uint64_t qcow2_l1_entries_for_size(const Qcow2Header *h, uint64_t size)
{
    uint32_t shift = h->cluster_bits + h->l2_bits;

    /* shift is at most 21 + 18 = 39: no overflow for sizes < 2^63. */
    return (size + (1ULL << shift) - 1) >> shift;
}

static bool check_table(const Qcow2Header *h, const char *what,
                        uint64_t off, uint64_t bytes, uint64_t file_size,
                        Error **errp)
{
    if (!IS_ALIGNED(off, h->cluster_size)) {
        error_setg(errp, "qcow2: %s offset 0x%llx is not cluster "
                   "aligned", what, (unsigned long long)off);
        return false;
    }
    if (off < h->cluster_size) {
        error_setg(errp, "qcow2: %s overlaps the image header", what);
        return false;
    }
    if (off > file_size || bytes > file_size - off) {
        error_setg(errp, "qcow2: %s (offset 0x%llx, %llu bytes) is past "
                   "the end of the image file", what,
                   (unsigned long long)off, (unsigned long long)bytes);
        return false;
    }
    return true;
}

bool qcow2_header_check_layout(const Qcow2Header *h, uint64_t file_size,
                               Error **errp)
{
    uint64_t need_l1 = qcow2_l1_entries_for_size(h, h->size);
    uint64_t l1_bytes = (uint64_t)h->l1_size * 8;
    uint64_t rt_bytes = (uint64_t)h->refcount_table_clusters << h->cluster_bits;
    uint64_t sn_min = (uint64_t)h->nb_snapshots * 40;

    if (l1_bytes > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "qcow2: active L1 table too large (%u entries)",
                   h->l1_size);
        return false;
    }
    if (h->l1_size < need_l1) {
        error_setg(errp, "qcow2: L1 table (%u entries) too small for the "
                   "virtual size %llu", h->l1_size,
                   (unsigned long long)h->size);
        return false;
    }
    if (need_l1 > QCOW2_MAX_L1_BYTES / 8) {
        error_setg(errp, "qcow2: virtual size %llu too large for the "
                   "cluster size", (unsigned long long)h->size);
        return false;
    }
    if (h->l1_size > 0 &&
        !check_table(h, "L1 table", h->l1_table_offset, l1_bytes,
                     file_size, errp)) {
        return false;
    }
    if (h->refcount_table_clusters == 0) {
        error_setg(errp, "qcow2: image has no refcount table");
        return false;
    }
    if (rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "qcow2: refcount table too large (%u clusters)",
                   h->refcount_table_clusters);
        return false;
    }
    if (!check_table(h, "refcount table", h->refcount_table_offset,
                     rt_bytes, file_size, errp)) {
        return false;
    }
    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "qcow2: too many snapshots (%u)",
                   h->nb_snapshots);
        return false;
    }
    if (h->nb_snapshots > 0 &&
        !check_table(h, "snapshot table", h->snapshots_offset, sn_min,
                     file_size, errp)) {
        return false;
    }
    if (h->l1_size > 0 &&
        ranges_overlap(h->l1_table_offset, l1_bytes,
                       h->refcount_table_offset, rt_bytes)) {
        error_setg(errp, "qcow2: L1 table overlaps the refcount table");
        return false;
    }
    if (h->nb_snapshots > 0 &&
        (ranges_overlap(h->snapshots_offset, sn_min, h->l1_table_offset,
                        l1_bytes) ||
         ranges_overlap(h->snapshots_offset, sn_min,
                        h->refcount_table_offset, rt_bytes))) {
        error_setg(errp, "qcow2: snapshot table overlaps other metadata");
        return false;
    }
    return qcow2_bitmap_ext_check(h, file_size, errp);
}

static const char *feature_name(const Qcow2Header *h, unsigned bit)
{
    for (unsigned i = 0; i < h->nb_feature_names; i++) {
        if (h->feature_names[i].type == 0 && h->feature_names[i].bit == bit &&
            h->feature_names[i].name[0] != '\0') {
            return h->feature_names[i].name;
        }
    }
    return NULL;
}

bool qcow2_header_check_features(const Qcow2Header *h, bool writable,
                                 bool can_repair, Error **errp)
{
    uint64_t unknown = h->incompatible_features &
                       ~(uint64_t)QCOW2_INCOMPAT_KNOWN;

    if (unknown) {
        char list[512] = "";
        size_t n = 0;

        for (unsigned bit = 0; bit < 64; bit++) {
            const char *name;

            if (!(unknown & (1ULL << bit))) {
                continue;
            }
            name = feature_name(h, bit);
            if (name != NULL) {
                n += snprintf(list + n, sizeof(list) - MIN(n, sizeof(list)),
                              "%s%s", n ? ", " : "", name);
            } else {
                n += snprintf(list + n, sizeof(list) - MIN(n, sizeof(list)),
                              "%sUnknown incompatible feature: %u",
                              n ? ", " : "", bit);
            }
            if (n >= sizeof(list)) {
                break;
            }
        }
        error_setg(errp, "qcow2: unsupported qcow2 feature(s): %s", list);
        return false;
    }
    if (h->crypt_method != 0 || h->has_crypto_ext) {
        error_setg(errp, "qcow2: encrypted images are not supported");
        return false;
    }
    if ((h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) ||
        h->has_data_file_ext) {
        error_setg(errp, "qcow2: images with an external data file are not "
                   "supported");
        return false;
    }
    if (h->compression_type > 1) {
        error_setg(errp, "qcow2: unknown compression type %u",
                   h->compression_type);
        return false;
    }
    if (h->compression_type != 0 &&
        !(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        error_setg(errp, "qcow2: compression type set without the "
                   "compression incompatible feature bit");
        return false;
    }
    if (h->compression_type == 0 &&
        (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        error_setg(errp, "qcow2: compression type feature bit set for "
                   "zlib compression");
        return false;
    }
    if (writable && (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        error_setg(errp, "qcow2: image is corrupt; cannot be opened "
                   "read/write (run 'qemu-img check -r all')");
        return false;
    }
    if (writable && !can_repair &&
        (h->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        error_setg(errp, "qcow2: image is dirty (lazy refcounts were not "
                   "flushed); blockd does not repair refcounts: run "
                   "'qemu-img check -r all' or open it read-only");
        return false;
    }
    return true;
}

/* ---- L1/L2 ----------------------------------------------------------- */

int qcow2_l1_decode(const Qcow2Header *h, uint64_t entry, uint64_t *l2_off)
{
    uint64_t off = entry & QCOW2_L1E_OFFSET_MASK;

    if (!IS_ALIGNED(off, h->cluster_size)) {
        return -EIO;
    }
    *l2_off = off;
    return 0;
}

int qcow2_l2_decode(const Qcow2Header *h, uint64_t entry, Qcow2Mapping *m)
{
    memset(m, 0, sizeof(*m));
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint32_t x = 62 - (h->cluster_bits - 8);
        uint64_t nb = ((entry >> x) & ((1ULL << (h->cluster_bits - 8)) - 1))
                      + 1;

        m->type = QCOW2_CLUSTER_COMPRESSED;
        m->host_offset = entry & ((1ULL << x) - 1);
        m->compressed_size = nb * 512 - (m->host_offset & 511);
        if (m->host_offset == 0 || (entry & QCOW2_OFLAG_COPIED)) {
            return -EIO;
        }
        return 0;
    }
    m->copied = entry & QCOW2_OFLAG_COPIED;
    m->host_offset = entry & QCOW2_L2E_OFFSET_MASK;
    if (!IS_ALIGNED(m->host_offset, h->cluster_size)) {
        return -EIO;
    }
    if ((entry & QCOW2_OFLAG_ZERO) && !h->extended_l2) {
        if (h->version < 3) {
            return -EIO;
        }
        m->type = m->host_offset ? QCOW2_CLUSTER_ZERO_ALLOC
                                 : QCOW2_CLUSTER_ZERO_PLAIN;
        return 0;
    }
    if (m->host_offset == 0) {
        m->type = QCOW2_CLUSTER_UNALLOCATED;
        return m->copied ? -EIO : 0;
    }
    m->type = QCOW2_CLUSTER_NORMAL;
    return 0;
}

int qcow2_subcluster_type(const Qcow2Mapping *m, uint64_t bitmap,
                          unsigned sc)
{
    bool alloc = bitmap & (1ULL << sc);
    bool zero = bitmap & (1ULL << (sc + 32));

    if (m->type == QCOW2_CLUSTER_COMPRESSED) {
        return bitmap ? -EIO : QCOW2_CLUSTER_COMPRESSED;
    }
    if (alloc && zero) {
        return -EIO;
    }
    if (m->host_offset == 0) {
        if (alloc) {
            return -EIO;
        }
        return zero ? QCOW2_CLUSTER_ZERO_PLAIN : QCOW2_CLUSTER_UNALLOCATED;
    }
    if (zero) {
        return QCOW2_CLUSTER_ZERO_ALLOC;
    }
    return alloc ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED_ALLOC;
}

/* ---- refcounts ------------------------------------------------------- */

uint64_t qcow2_refcount_max(uint32_t order)
{
    return order >= 6 ? UINT64_MAX : (1ULL << (1u << order)) - 1;
}

uint64_t qcow2_refcount_get(const void *block, uint32_t order,
                            uint64_t index)
{
    const uint8_t *b = block;

    switch (order) {
    case 0:
    case 1:
    case 2: {
        uint32_t per_byte_shift = 3 - order;
        uint32_t shift = (index & ((1u << per_byte_shift) - 1)) << order;

        return (b[index >> per_byte_shift] >> shift) &
               ((1u << (1u << order)) - 1);
    }
    case 3:
        return b[index];
    case 4:
        return get_be16(b + index * 2);
    case 5:
        return get_be32(b + index * 4);
    default:
        return get_be64(b + index * 8);
    }
}

void qcow2_refcount_set(void *block, uint32_t order, uint64_t index,
                        uint64_t value)
{
    uint8_t *b = block;

    switch (order) {
    case 0:
    case 1:
    case 2: {
        uint32_t per_byte_shift = 3 - order;
        uint32_t shift = (index & ((1u << per_byte_shift) - 1)) << order;
        uint8_t mask = ((1u << (1u << order)) - 1) << shift;
        uint8_t *p = &b[index >> per_byte_shift];

        *p = (*p & ~mask) | ((value << shift) & mask);
        break;
    }
    case 3:
        b[index] = value;
        break;
    case 4:
        put_be16(b + index * 2, value);
        break;
    case 5:
        put_be32(b + index * 4, value);
        break;
    default:
        put_be64(b + index * 8, value);
        break;
    }
}

/* ---- snapshots ------------------------------------------------------- */

void qcow2_snapshots_free(Qcow2Snapshot *s, uint32_t n)
{
    if (s == NULL) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        free(s[i].id);
        free(s[i].name);
    }
    free(s);
}

bool qcow2_snapshots_parse(const Qcow2Header *h, const uint8_t *buf,
                           size_t len, uint64_t file_size,
                           Qcow2Snapshot **out, size_t *table_len,
                           Error **errp)
{
    Qcow2Snapshot *s;
    size_t off = 0;

    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "qcow2: too many snapshots (%u)", h->nb_snapshots);
        return false;
    }
    s = xcalloc(h->nb_snapshots ? h->nb_snapshots : 1, sizeof(*s));
    for (uint32_t i = 0; i < h->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s[i];
        uint32_t id_len, name_len;
        uint64_t l1_bytes;

        if (len - off < 40) {
            error_setg(errp, "qcow2: snapshot table truncated (entry %u)", i);
            goto fail;
        }
        sn->l1_table_offset = get_be64(buf + off);
        sn->l1_size = get_be32(buf + off + 8);
        id_len = get_be16(buf + off + 12);
        name_len = get_be16(buf + off + 14);
        sn->date_sec = get_be32(buf + off + 16);
        sn->date_nsec = get_be32(buf + off + 20);
        sn->vm_clock_nsec = get_be64(buf + off + 24);
        sn->vm_state_size = get_be32(buf + off + 32);
        sn->extra_size = get_be32(buf + off + 36);
        off += 40;
        if (sn->extra_size > len - off) {
            error_setg(errp, "qcow2: snapshot %u extra data truncated", i);
            goto fail;
        }
        if (sn->extra_size >= 8) {
            sn->vm_state_size = get_be64(buf + off);
        }
        if (sn->extra_size >= 16) {
            sn->disk_size = get_be64(buf + off + 8);
            sn->has_disk_size = true;
        }
        off += sn->extra_size;
        if (id_len + (size_t)name_len > len - off) {
            error_setg(errp, "qcow2: snapshot %u name truncated", i);
            goto fail;
        }
        sn->id = xstrndup((const char *)buf + off, id_len);
        off += id_len;
        sn->name = xstrndup((const char *)buf + off, name_len);
        off += name_len;
        off = ALIGN_UP(off, (size_t)8);
        if (off > QCOW2_MAX_SNAPSHOTS_BYTES) {
            error_setg(errp, "qcow2: snapshot table too large");
            goto fail;
        }
        if (off > len) {
            off = len;
        }

        l1_bytes = (uint64_t)sn->l1_size * 8;
        if (l1_bytes > QCOW2_MAX_L1_BYTES) {
            error_setg(errp, "qcow2: snapshot %u L1 table too large", i);
            goto fail;
        }
        if (sn->l1_size > 0 &&
            !check_table(h, "snapshot L1 table", sn->l1_table_offset,
                         l1_bytes, file_size, errp)) {
            error_prepend(errp, "snapshot %u: ", i);
            goto fail;
        }
        if (sn->has_disk_size && sn->disk_size > INT64_MAX) {
            error_setg(errp, "qcow2: snapshot %u disk size too large", i);
            goto fail;
        }
        if (qcow2_l1_entries_for_size(h, sn->has_disk_size ? sn->disk_size
                                                           : h->size) >
            sn->l1_size && sn->has_disk_size) {
            error_setg(errp, "qcow2: snapshot %u L1 table too small for "
                       "its disk size", i);
            goto fail;
        }
    }
    *out = s;
    *table_len = off;
    return true;

fail:
    qcow2_snapshots_free(s, h->nb_snapshots);
    return false;
}

const Qcow2Snapshot *qcow2_snapshot_find(const Qcow2Snapshot *s, uint32_t n,
                                         const char *id_or_name)
{
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(s[i].id, id_or_name) == 0) {
            return &s[i];
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(s[i].name, id_or_name) == 0) {
            return &s[i];
        }
    }
    return NULL;
}

/* ---- persistent dirty bitmaps ------------------------------------------ */

static bool bitmaps_valid(const Qcow2Header *h)
{
    return h->has_bitmaps_ext &&
           (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS);
}

bool qcow2_bitmap_ext_check(const Qcow2Header *h, uint64_t file_size,
                            Error **errp)
{
    /* Without autoclear bit 0 an older writer touched the image: the
     * extension is stale and ignored (qcow2.txt "autoclear_features"). */
    if (!bitmaps_valid(h)) {
        return true;
    }
    if (h->version < 3) {
        error_setg(errp, "qcow2: bitmaps extension in a version 2 image");
        return false;
    }
    if (h->nb_bitmaps == 0) {
        error_setg(errp, "qcow2: bitmaps extension with zero bitmaps");
        return false;
    }
    if (h->nb_bitmaps > QCOW2_MAX_BITMAPS) {
        error_setg(errp, "qcow2: image has %u bitmaps, more than the %u "
                   "allowed", h->nb_bitmaps, QCOW2_MAX_BITMAPS);
        return false;
    }
    if (h->bitmaps_reserved != 0) {
        error_setg(errp, "qcow2: bitmaps extension reserved field is not "
                   "zero");
        return false;
    }
    if (h->bitmap_directory_size < QCOW2_BME_FIXED ||
        h->bitmap_directory_size > QCOW2_MAX_BITMAP_DIR_BYTES) {
        error_setg(errp, "qcow2: invalid bitmap directory size %llu "
                   "(24 bytes to 64 MiB)",
                   (unsigned long long)h->bitmap_directory_size);
        return false;
    }
    return check_table(h, "bitmap directory", h->bitmap_directory_offset,
                       h->bitmap_directory_size, file_size, errp);
}

void qcow2_bitmap_dir_free(Qcow2BitmapEntry *e, uint32_t n)
{
    if (e == NULL) {
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].extra_data);
    }
    free(e);
}

void qcow2_bitmap_entry_copy(Qcow2BitmapEntry *dst,
                             const Qcow2BitmapEntry *src)
{
    *dst = *src;
    dst->name = xstrdup(src->name);
    dst->extra_data = NULL;
    if (src->extra_data_size > 0) {
        dst->extra_data = xmalloc(src->extra_data_size);
        memcpy(dst->extra_data, src->extra_data, src->extra_data_size);
    }
}

uint64_t qcow2_bitmap_table_entries(const Qcow2Header *h, uint64_t size,
                                    uint32_t gran_bits)
{
    uint64_t granules = size == 0 ? 0 : ((size - 1) >> gran_bits) + 1;
    uint64_t bytes = DIV_ROUND_UP(granules, 8);

    return DIV_ROUND_UP(bytes, h->cluster_size);
}

int qcow2_bitmap_table_decode(const Qcow2Header *h, uint64_t entry,
                              uint64_t file_size, uint64_t *data_off,
                              bool *all_ones)
{
    uint64_t off = entry & QCOW2_BMT_OFFSET_MASK;

    *data_off = 0;
    *all_ones = false;
    if (entry & ~(QCOW2_BMT_OFFSET_MASK | QCOW2_BMT_ALL_ONES)) {
        return -EIO;
    }
    if (off == 0) {
        *all_ones = entry & QCOW2_BMT_ALL_ONES;
        return 0;
    }
    /* Bit 0 with an offset is reserved too ("must be 0"). */
    if ((entry & QCOW2_BMT_ALL_ONES) || !IS_ALIGNED(off, h->cluster_size) ||
        off < h->cluster_size || off > file_size ||
        h->cluster_size > file_size - off) {
        return -EIO;
    }
    *data_off = off;
    return 0;
}

/* A host range for the overlap check: [start, end) in clusters. */
typedef struct BmRange {
    uint64_t start, end;
    const char *what;      /* "bitmap table" or another table's name */
    uint32_t index;        /* bitmap index, for messages */
} BmRange;

static int bm_range_cmp(const void *a, const void *b)
{
    const BmRange *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

static int bm_name_cmp(const void *a, const void *b)
{
    const Qcow2BitmapEntry *const *x = a, *const *y = b;

    return strcmp((*x)->name, (*y)->name);
}

/* Parse one entry at buf[off..len): fills e, *next = the next entry's
 * offset. */
static bool bitmap_entry_parse(const Qcow2Header *h, const uint8_t *buf,
                               size_t len, size_t off, uint32_t i,
                               uint64_t file_size, Qcow2BitmapEntry *e,
                               size_t *next, Error **errp)
{
    uint16_t name_size;
    uint64_t end, need;

    if (len - off < QCOW2_BME_FIXED) {
        error_setg(errp, "qcow2: bitmap directory truncated at entry %u",
                   i);
        return false;
    }
    e->table_offset = get_be64(buf + off);
    e->table_size = get_be32(buf + off + 8);
    e->flags = get_be32(buf + off + 12);
    e->type = buf[off + 16];
    e->granularity_bits = buf[off + 17];
    name_size = get_be16(buf + off + 18);
    e->extra_data_size = get_be32(buf + off + 20);
    if (name_size == 0 || name_size > QCOW2_MAX_BITMAP_NAME) {
        error_setg(errp, "qcow2: bitmap directory entry %u: invalid name "
                   "length %u (1 to %u bytes)", i, name_size,
                   QCOW2_MAX_BITMAP_NAME);
        return false;
    }
    end = (uint64_t)off + QCOW2_BME_FIXED + e->extra_data_size + name_size;
    if (end > len) {
        error_setg(errp, "qcow2: bitmap directory entry %u runs past the "
                   "end of the directory", i);
        return false;
    }
    if (memchr(buf + end - name_size, 0, name_size) != NULL) {
        error_setg(errp, "qcow2: bitmap directory entry %u: name contains "
                   "a NUL byte", i);
        return false;
    }
    e->name = xstrndup((const char *)buf + end - name_size, name_size);
    if (e->extra_data_size > 0) {
        e->extra_data = xmalloc(e->extra_data_size);
        memcpy(e->extra_data, buf + off + QCOW2_BME_FIXED,
               e->extra_data_size);
    }
    *next = ALIGN_UP(end, (uint64_t)8);

    if (e->flags & ~(uint32_t)QCOW2_BME_KNOWN_FLAGS) {
        error_setg(errp, "qcow2: bitmap '%s': unknown flags 0x%x", e->name,
                   e->flags & ~(uint32_t)QCOW2_BME_KNOWN_FLAGS);
        return false;
    }
    if (e->type != QCOW2_BITMAP_TYPE_DIRTY) {
        error_setg(errp, "qcow2: bitmap '%s': unknown type %u", e->name,
                   e->type);
        return false;
    }
    if (e->granularity_bits < QCOW2_BITMAP_MIN_GRAN_BITS ||
        e->granularity_bits > QCOW2_BITMAP_MAX_GRAN_BITS) {
        error_setg(errp, "qcow2: bitmap '%s': granularity 2^%u out of range "
                   "(2^%u to 2^%u bytes)", e->name, e->granularity_bits,
                   QCOW2_BITMAP_MIN_GRAN_BITS, QCOW2_BITMAP_MAX_GRAN_BITS);
        return false;
    }
    if (e->table_size == 0 ||
        (uint64_t)e->table_size * h->cluster_size >
        QCOW2_MAX_BITMAP_DATA_BYTES) {
        error_setg(errp, "qcow2: bitmap '%s': invalid bitmap table size %u",
                   e->name, e->table_size);
        return false;
    }
    if (!check_table(h, "bitmap table", e->table_offset,
                     (uint64_t)e->table_size * 8, file_size, errp)) {
        error_prepend(errp, "bitmap '%s': ", e->name);
        return false;
    }
    need = qcow2_bitmap_table_entries(h, h->size, e->granularity_bits);
    if (!(e->flags & QCOW2_BME_IN_USE) && e->table_size < need) {
        error_setg(errp, "qcow2: bitmap '%s': table of %u entries too small "
                   "for the virtual size (%llu needed)", e->name,
                   e->table_size, (unsigned long long)need);
        return false;
    }
    return true;
}

/* Tables overlapping each other, the directory, the L1 table or the
 * refcount table (whole clusters: two tables never share one). */
static bool bitmap_check_overlaps(const Qcow2Header *h,
                                  const Qcow2BitmapEntry *e, uint32_t n,
                                  Error **errp)
{
    CLEANUP_FREE BmRange *r = xcalloc((size_t)n + 3, sizeof(*r));
    uint32_t nr = 0;
    uint64_t cs = h->cluster_size;

    for (uint32_t i = 0; i < n; i++) {
        r[nr++] = (BmRange){
            e[i].table_offset / cs,
            DIV_ROUND_UP(e[i].table_offset + (uint64_t)e[i].table_size * 8,
                         cs),
            "bitmap table", i };
    }
    r[nr++] = (BmRange){
        h->bitmap_directory_offset / cs,
        DIV_ROUND_UP(h->bitmap_directory_offset + h->bitmap_directory_size,
                     cs), "bitmap directory", 0 };
    r[nr++] = (BmRange){
        h->refcount_table_offset / cs,
        h->refcount_table_offset / cs + h->refcount_table_clusters,
        "refcount table", 0 };
    if (h->l1_size > 0) {
        r[nr++] = (BmRange){
            h->l1_table_offset / cs,
            DIV_ROUND_UP(h->l1_table_offset + (uint64_t)h->l1_size * 8, cs),
            "L1 table", 0 };
    }
    qsort(r, nr, sizeof(*r), bm_range_cmp);
    for (uint32_t i = 1; i < nr; i++) {
        const BmRange *a = &r[i - 1], *b = &r[i];
        const BmRange *t = strcmp(a->what, "bitmap table") == 0 ? a : b;
        const BmRange *o = t == a ? b : a;

        if (b->start >= a->end) {
            continue;
        }
        if (strcmp(o->what, "bitmap table") == 0) {
            error_setg(errp, "qcow2: the tables of bitmaps '%s' and '%s' "
                       "overlap", e[t->index].name, e[o->index].name);
        } else if (strcmp(t->what, "bitmap table") == 0) {
            error_setg(errp, "qcow2: the table of bitmap '%s' overlaps the "
                       "%s", e[t->index].name, o->what);
        } else {
            error_setg(errp, "qcow2: the %s overlaps the %s", a->what,
                       b->what);
        }
        return false;
    }
    return true;
}

bool qcow2_bitmap_dir_parse(const Qcow2Header *h, const uint8_t *buf,
                            size_t len, uint64_t file_size,
                            Qcow2BitmapEntry **out, Error **errp)
{
    Qcow2BitmapEntry *e = NULL;
    CLEANUP_FREE const Qcow2BitmapEntry **sorted = NULL;
    uint32_t n = h->nb_bitmaps;
    size_t off = 0;

    if (!qcow2_bitmap_ext_check(h, file_size, errp)) {
        return false;
    }
    if (!bitmaps_valid(h)) {
        error_setg(errp, "qcow2: image has no valid bitmaps extension");
        return false;
    }
    if (len != h->bitmap_directory_size) {
        error_setg(errp, "qcow2: bitmap directory buffer has %zu bytes, "
                   "expected %llu", len,
                   (unsigned long long)h->bitmap_directory_size);
        return false;
    }
    e = xcalloc(n, sizeof(*e));
    for (uint32_t i = 0; i < n; i++) {
        size_t next;

        if (off >= len) {
            error_setg(errp, "qcow2: bitmap directory holds %u bitmaps, "
                       "the header says %u", i, n);
            goto fail;
        }
        if (!bitmap_entry_parse(h, buf, len, off, i, file_size, &e[i],
                                &next, errp)) {
            goto fail;
        }
        off = next;
    }
    if (off < len) {
        error_setg(errp, "qcow2: bitmap directory has %zu bytes after its "
                   "%u entries", len - off, n);
        goto fail;
    }
    sorted = xcalloc(n, sizeof(*sorted));
    for (uint32_t i = 0; i < n; i++) {
        sorted[i] = &e[i];
    }
    qsort(sorted, n, sizeof(*sorted), bm_name_cmp);
    for (uint32_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            error_setg(errp, "qcow2: duplicate bitmap name '%s'",
                       sorted[i]->name);
            goto fail;
        }
    }
    if (!bitmap_check_overlaps(h, e, n, errp)) {
        goto fail;
    }
    *out = e;
    return true;

fail:
    qcow2_bitmap_dir_free(e, n);
    return false;
}

uint64_t qcow2_bitmap_dir_size(const Qcow2BitmapEntry *e, uint32_t n)
{
    uint64_t size = 0;

    for (uint32_t i = 0; i < n; i++) {
        size += ALIGN_UP(QCOW2_BME_FIXED + (uint64_t)e[i].extra_data_size +
                         strlen(e[i].name), (uint64_t)8);
    }
    return size;
}

void qcow2_bitmap_dir_encode(const Qcow2BitmapEntry *e, uint32_t n,
                             uint8_t *buf)
{
    size_t off = 0;

    for (uint32_t i = 0; i < n; i++) {
        size_t name_size = strlen(e[i].name);
        size_t sz = ALIGN_UP(QCOW2_BME_FIXED + (size_t)e[i].extra_data_size +
                             name_size, (size_t)8);

        memset(buf + off, 0, sz);
        put_be64(buf + off, e[i].table_offset);
        put_be32(buf + off + 8, e[i].table_size);
        put_be32(buf + off + 12, e[i].flags);
        buf[off + 16] = e[i].type;
        buf[off + 17] = e[i].granularity_bits;
        put_be16(buf + off + 18, name_size);
        put_be32(buf + off + 20, e[i].extra_data_size);
        if (e[i].extra_data_size > 0) {
            memcpy(buf + off + QCOW2_BME_FIXED, e[i].extra_data,
                   e[i].extra_data_size);
        }
        memcpy(buf + off + QCOW2_BME_FIXED + e[i].extra_data_size,
               e[i].name, name_size);
        off += sz;
    }
}

bool qcow2_header_update_bitmaps(uint8_t *buf, size_t len, uint32_t nb,
                                 uint64_t dir_size, uint64_t dir_offset,
                                 size_t *end, Error **errp)
{
    Qcow2Header h;
    CLEANUP_FREE uint8_t *ext = NULL;
    CLEANUP_FREE uint8_t *backing = NULL;
    size_t limit, off, out = 0, cap;
    uint64_t autoclear;
    bool placed = false;

    if (!qcow2_header_parse(buf, len, &h, errp)) {
        return false;
    }
    if (h.version < 3) {
        error_setg(errp, "qcow2: version 2 images cannot hold bitmaps");
        return false;
    }
    limit = MIN(len, (size_t)h.cluster_size);
    if (h.has_backing_file) {
        backing = xmalloc(h.backing_file_size);
        memcpy(backing, buf + h.backing_file_offset, h.backing_file_size);
        limit = MIN(limit, (size_t)h.backing_file_offset);
    }
    cap = MIN(len, (size_t)h.cluster_size);
    ext = xzalloc(cap + 32);

    /* Copy every extension but the bitmaps one; put the new bitmaps
     * extension where the old one was, else just before the end. */
    off = h.header_length;
    for (;;) {
        uint32_t type = get_be32(buf + off);
        uint32_t elen = get_be32(buf + off + 4);
        size_t sz;

        if (type == QCOW2_EXT_END) {
            break;
        }
        sz = 8 + ALIGN_UP((size_t)elen, (size_t)8);
        if (type == QCOW2_EXT_BITMAPS) {
            placed = true;
            if (nb > 0) {
                if (out + 32 > cap) {
                    goto too_big;
                }
                put_be32(ext + out, QCOW2_EXT_BITMAPS);
                put_be32(ext + out + 4, 24);
                put_be32(ext + out + 8, nb);
                put_be32(ext + out + 12, 0);
                put_be64(ext + out + 16, dir_size);
                put_be64(ext + out + 24, dir_offset);
                out += 32;
            }
        } else {
            /* The parser accepted it: off + 8 + elen <= limit. */
            size_t copy = MIN(sz, limit - off);

            if (out + sz > cap) {
                goto too_big;
            }
            memcpy(ext + out, buf + off, copy);
            out += sz;
        }
        off += sz;
        if (off + 8 > limit) {
            break;
        }
    }
    if (!placed && nb > 0) {
        if (out + 32 > cap) {
            goto too_big;
        }
        put_be32(ext + out, QCOW2_EXT_BITMAPS);
        put_be32(ext + out + 4, 24);
        put_be32(ext + out + 8, nb);
        put_be32(ext + out + 12, 0);
        put_be64(ext + out + 16, dir_size);
        put_be64(ext + out + 24, dir_offset);
        out += 32;
    }
    out += 8;    /* end marker: zeroes */
    if (h.header_length + out + (backing ? h.backing_file_size : 0) >
        cap) {
        goto too_big;
    }
    {
        size_t old_end = off + 8;
        size_t used = h.header_length + out;

        if (backing != NULL) {
            old_end = MAX(old_end, (size_t)(h.backing_file_offset +
                                             h.backing_file_size));
            put_be64(buf + 8, used);
        }
        memcpy(buf + h.header_length, ext, out);
        if (backing != NULL) {
            memcpy(buf + used, backing, h.backing_file_size);
            used += h.backing_file_size;
        }
        /* Stale bytes of the old layout become zero padding. */
        if (used < old_end) {
            memset(buf + used, 0, old_end - used);
        }
        *end = MAX(old_end, used);
    }
    autoclear = h.autoclear_features;
    if (nb > 0) {
        autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        autoclear &= ~(uint64_t)QCOW2_AUTOCLEAR_BITMAPS;
    }
    put_be64(buf + 88, autoclear);
    return true;

too_big:
    error_setg(errp, "qcow2: no room for the bitmaps extension in the "
               "header cluster");
    return false;
}

bool qcow2_header_set_backing(uint8_t *buf, size_t len, const char *name,
                              const char *fmt, size_t *end, Error **errp)
{
    Qcow2Header h;
    CLEANUP_FREE uint8_t *ext = NULL;
    size_t limit, off, out = 0, cap, old_end, used;
    size_t nlen = name != NULL ? strlen(name) : 0;
    size_t flen = fmt != NULL && name != NULL ? strlen(fmt) : 0;

    if (!qcow2_header_parse(buf, len, &h, errp)) {
        return false;
    }
    if (nlen > QCOW2_MAX_BACKING_NAME || flen > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "qcow2: backing file name too long");
        return false;
    }
    limit = MIN(len, (size_t)h.cluster_size);
    old_end = limit;
    if (h.has_backing_file) {
        limit = MIN(limit, (size_t)h.backing_file_offset);
        old_end = (size_t)(h.backing_file_offset + h.backing_file_size);
    }
    cap = MIN(len, (size_t)h.cluster_size);
    ext = xzalloc(cap + 16 + ALIGN_UP(flen, (size_t)8));

    /* Every extension but the backing format; the new one first. */
    if (flen > 0) {
        put_be32(ext, QCOW2_EXT_BACKING_FORMAT);
        put_be32(ext + 4, (uint32_t)flen);
        memcpy(ext + 8, fmt, flen);
        out = 8 + ALIGN_UP(flen, (size_t)8);
    }
    off = h.header_length;
    while (off + 8 <= limit) {
        uint32_t type = get_be32(buf + off);
        uint32_t elen = get_be32(buf + off + 4);
        size_t sz;

        if (type == QCOW2_EXT_END) {
            break;
        }
        sz = 8 + ALIGN_UP((size_t)elen, (size_t)8);
        if (type != QCOW2_EXT_BACKING_FORMAT) {
            if (out + sz > cap) {
                goto too_big;
            }
            memcpy(ext + out, buf + off, MIN(sz, limit - off));
            out += sz;
        }
        off += sz;
    }
    out += 8;                  /* the end marker */
    used = h.header_length + out;
    if (used + nlen > cap) {
        goto too_big;
    }
    old_end = MAX(old_end, off + 8);
    memcpy(buf + h.header_length, ext, out);
    if (nlen > 0) {
        memcpy(buf + used, name, nlen);
        put_be64(buf + 8, used);
        put_be32(buf + 16, (uint32_t)nlen);
        used += nlen;
    } else {
        put_be64(buf + 8, 0);
        put_be32(buf + 16, 0);
    }
    if (used < old_end) {
        memset(buf + used, 0, MIN(old_end, cap) - used);
    }
    *end = MAX(MIN(old_end, cap), used);
    return true;

too_big:
    error_setg(errp, "qcow2: no room for the backing file name in the "
               "header cluster");
    return false;
}

/* ---- creating an image ----------------------------------------------- */

static uint64_t div_round_up(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

bool qcow2_create_layout(const Qcow2CreateParams *p, Qcow2CreateLayout *l,
                         Error **errp)
{
    uint64_t cs, rb_entries, fixed, total, refblocks, rt_clusters;
    uint32_t l2_entry = p->extended_l2 ? 16 : 8;
    size_t blen = p->backing_file ? strlen(p->backing_file) : 0;

    memset(l, 0, sizeof(*l));
    if ((p->version != 2 && p->version != 3) ||
        p->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        p->cluster_bits > QCOW2_MAX_CLUSTER_BITS ||
        p->refcount_order > QCOW2_MAX_REFCOUNT_ORDER ||
        p->compression_type > 1 || p->size % 512 != 0 ||
        (p->version == 2 && (p->refcount_order != 4 || p->extended_l2 ||
                             p->lazy_refcounts ||
                             p->compression_type != 0)) ||
        (p->backing_format != NULL && p->backing_file == NULL)) {
        error_setg(errp, "qcow2: invalid parameters for a new image");
        return false;
    }
    if (blen > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "Backing file name too long");
        return false;
    }
    cs = 1ULL << p->cluster_bits;
    l->cluster_size = cs;
    l->l2_entries = (uint32_t)(cs / l2_entry);
    /* Header, extensions (backing format, end) and the name must fit in
     * cluster 0. */
    if (QCOW2_CREATE_HEADER_LEN + 8 +
        (p->backing_format ? 8 + ((strlen(p->backing_format) + 7) & ~7u)
                           : 0) + blen > cs) {
        error_setg(errp, "Could not assign backing file '%s': the name "
                   "does not fit in the header cluster", p->backing_file);
        return false;
    }
    l->l1_entries = div_round_up(p->size, cs * l->l2_entries);
    if (l->l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Could not resize image: Failed to grow the L1 "
                   "table: File too large");
        return false;
    }
    l->l1_clusters = div_round_up(l->l1_entries * 8, cs);
    if (p->preallocate) {
        l->data_clusters = div_round_up(p->size, cs);
        l->l2_tables = l->l1_entries;
    }
    /* Every cluster but the refcount structures, then the fixed point
     * of: refcount blocks cover every cluster including themselves and
     * the table, which covers every block. */
    fixed = 1 + l->l1_clusters + l->l2_tables + l->data_clusters;
    rb_entries = (cs * 8) >> p->refcount_order;
    rt_clusters = 1;
    refblocks = 1;
    for (int i = 0; i < 64; i++) {
        uint64_t rb, rt;

        total = fixed + rt_clusters + refblocks;
        rb = div_round_up(total, rb_entries);
        rt = div_round_up(rb * 8, cs);
        if (rb == refblocks && rt == rt_clusters) {
            break;
        }
        refblocks = MAX(rb, refblocks);
        rt_clusters = MAX(rt, rt_clusters);
    }
    if (rt_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "Could not resize image: Failed to grow the "
                   "refcount table: File too large");
        return false;
    }
    l->reftable_offset = cs;
    l->reftable_clusters = rt_clusters;
    l->refblocks_offset = l->reftable_offset + rt_clusters * cs;
    l->refblocks = refblocks;
    l->l1_offset = l->refblocks_offset + refblocks * cs;
    if (p->preallocate) {
        l->l2_offset = l->l1_offset + l->l1_clusters * cs;
        l->data_offset = l->l2_offset + l->l2_tables * cs;
    }
    l->total_clusters = 1 + rt_clusters + refblocks + l->l1_clusters +
                        l->l2_tables + l->data_clusters;
    return true;
}

uint64_t qcow2_create_meta_clusters(const Qcow2CreateLayout *l)
{
    return l->total_clusters - l->data_clusters;
}

/* Cluster 0: qcow2.txt "Header" and "Header extensions". */
static void create_header(const Qcow2CreateParams *p,
                          const Qcow2CreateLayout *l, uint8_t *buf)
{
    size_t pos = p->version >= 3 ? QCOW2_CREATE_HEADER_LEN
                                 : QCOW2_V2_HEADER_LEN;

    put_be32(buf, QCOW2_MAGIC);
    put_be32(buf + 4, p->version);
    put_be32(buf + 20, p->cluster_bits);
    put_be64(buf + 24, p->size);
    put_be32(buf + 36, (uint32_t)l->l1_entries);
    put_be64(buf + 40, l->l1_entries ? l->l1_offset : 0);
    put_be64(buf + 48, l->reftable_offset);
    put_be32(buf + 56, (uint32_t)l->reftable_clusters);
    if (p->version >= 3) {
        uint64_t incompat = 0;

        if (p->extended_l2) {
            incompat |= QCOW2_INCOMPAT_EXTL2;
        }
        if (p->compression_type != 0) {
            incompat |= QCOW2_INCOMPAT_COMPRESSION;
        }
        put_be64(buf + 72, incompat);
        put_be64(buf + 80, p->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS
                                             : 0);
        put_be32(buf + 96, p->refcount_order);
        put_be32(buf + 100, QCOW2_CREATE_HEADER_LEN);
        buf[104] = p->compression_type;
    }
    if (p->backing_format != NULL) {
        size_t flen = strlen(p->backing_format);

        put_be32(buf + pos, QCOW2_EXT_BACKING_FORMAT);
        put_be32(buf + pos + 4, (uint32_t)flen);
        memcpy(buf + pos + 8, p->backing_format, flen);
        pos += 8 + ((flen + 7) & ~(size_t)7);
    }
    pos += 8;                   /* the end extension: zeroes */
    if (p->backing_file != NULL) {
        size_t blen = strlen(p->backing_file);

        put_be64(buf + 8, pos);
        put_be32(buf + 16, (uint32_t)blen);
        memcpy(buf + pos, p->backing_file, blen);
    }
}

void qcow2_create_cluster(const Qcow2CreateParams *p,
                          const Qcow2CreateLayout *l, uint64_t index,
                          uint8_t *buf)
{
    uint64_t cs = l->cluster_size;
    uint64_t off = index * cs;

    memset(buf, 0, cs);
    if (index == 0) {
        create_header(p, l, buf);
    } else if (off < l->refblocks_offset) {
        /* Refcount table: entry i points to block i. */
        uint64_t first = (off - l->reftable_offset) / 8;

        for (uint64_t i = 0; i < cs / 8 && first + i < l->refblocks; i++) {
            put_be64(buf + 8 * i, l->refblocks_offset + (first + i) * cs);
        }
    } else if (off < l->l1_offset) {
        /* Refcount block: every cluster of the image counted once. */
        uint64_t per = (cs * 8) >> p->refcount_order;
        uint64_t first = (off - l->refblocks_offset) / cs * per;

        for (uint64_t i = 0; i < per && first + i < l->total_clusters; i++) {
            qcow2_refcount_set(buf, p->refcount_order, i, 1);
        }
    } else if (off < l->l1_offset + l->l1_clusters * cs) {
        /* L1: with preallocation entry i points to L2 table i. */
        uint64_t first = (off - l->l1_offset) / 8;

        for (uint64_t i = 0; i < cs / 8 && first + i < l->l2_tables; i++) {
            put_be64(buf + 8 * i, (l->l2_offset + (first + i) * cs) |
                     QCOW2_OFLAG_COPIED);
        }
    } else if (l->l2_tables > 0 && off >= l->l2_offset &&
               off < l->data_offset) {
        /* L2 table t maps data clusters t * l2_entries onwards. */
        uint64_t first = (off - l->l2_offset) / cs * l->l2_entries;
        size_t step = p->extended_l2 ? 16 : 8;

        for (uint64_t i = 0; i < l->l2_entries &&
             first + i < l->data_clusters; i++) {
            put_be64(buf + step * i,
                     qcow2_l2_entry_normal(l->data_offset + (first + i) * cs,
                                           true));
        }
    }
}
