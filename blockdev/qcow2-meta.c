/* qcow2-meta.c - pure qcow2 metadata parsing; see qcow2-meta.h. */
#include "blockdev/qcow2-meta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (h->has_bitmaps_ext && h->nb_bitmaps > 0 &&
        (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) &&
        !check_table(h, "bitmap directory", h->bitmap_directory_offset,
                     h->bitmap_directory_size, file_size, errp)) {
        return false;
    }
    return true;
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
