/* qcow2-meta.h - pure qcow2 metadata parsing (no I/O, no globals).
 *
 * Everything here works on memory buffers so that unit tests and the
 * libFuzzer target can drive it directly.  Every byte is treated as
 * hostile: each parser either fills its output or fails with a clear
 * Error (or -EIO for the per-entry decoders used on the data path).
 *
 * Field layout: QEMU docs/interop/qcow2.txt ("Header", "Host cluster
 * management", "Cluster mapping", "Snapshots").  All fields big-endian.
 */
#ifndef BLOCKD_BLOCKDEV_QCOW2_META_H
#define BLOCKD_BLOCKDEV_QCOW2_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104

/* Limits, as QEMU enforces them. */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_REFCOUNT_ORDER 6
#define QCOW2_MAX_L1_BYTES (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_SNAPSHOTS_BYTES (64u * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_FEATURE_NAMES 64

/* Incompatible feature bits (header bytes 72..79). */
enum {
    QCOW2_INCOMPAT_DIRTY = 1u << 0,
    QCOW2_INCOMPAT_CORRUPT = 1u << 1,
    QCOW2_INCOMPAT_DATA_FILE = 1u << 2,
    QCOW2_INCOMPAT_COMPRESSION = 1u << 3,
    QCOW2_INCOMPAT_EXTL2 = 1u << 4,
    QCOW2_INCOMPAT_KNOWN = 0x1f,
};
enum { QCOW2_COMPAT_LAZY_REFCOUNTS = 1u << 0 };
enum {
    QCOW2_AUTOCLEAR_BITMAPS = 1u << 0,
    QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1u << 1,
};

/* Header extension magics. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* Table entry bits. */
#define QCOW2_OFLAG_COPIED (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO (1ULL << 0)
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ULL

typedef struct Qcow2FeatureName {
    uint8_t type;           /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[47];          /* NUL-terminated copy */
} Qcow2FeatureName;

/* A parsed and validated header (cluster 0).  Derived fields follow the
 * on-disk ones. */
typedef struct Qcow2Header {
    uint32_t version;                 /* 2 or 3 */
    uint64_t backing_file_offset;     /* 0: no backing file */
    uint32_t backing_file_size;       /* bytes, <= 1023 */
    uint32_t cluster_bits;            /* 9..21 */
    uint64_t size;                    /* virtual size, bytes */
    uint32_t crypt_method;
    uint32_t l1_size;                 /* entries */
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;          /* 0..6; 4 for v2 */
    uint32_t header_length;           /* 72 for v2 */
    uint8_t compression_type;         /* 0 zlib, 1 zstd */

    /* Derived. */
    uint64_t cluster_size;
    bool extended_l2;
    uint32_t l2_entry_size;           /* 8, or 16 with extended L2 */
    uint32_t l2_bits;                 /* log2(entries per L2 table) */
    uint32_t refcount_bits;
    uint32_t rb_bits;                 /* log2(entries per refblock) */
    uint32_t subcluster_bits;         /* log2(subcluster size) */

    /* Header extensions. */
    bool has_backing_file;
    char backing_file[QCOW2_MAX_BACKING_NAME + 1];
    bool has_backing_format;
    char backing_format[QCOW2_MAX_BACKING_NAME + 1];
    bool has_data_file_ext;
    bool has_crypto_ext;
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint32_t bitmaps_reserved;        /* must be 0 */
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    unsigned nb_feature_names;
    Qcow2FeatureName feature_names[QCOW2_MAX_FEATURE_NAMES];
} Qcow2Header;

/* Parse cluster 0.  buf holds the first len bytes of the image (the
 * caller passes at least min(cluster size, 2 MiB) bytes when it has
 * them, zero-filled past the end of the file).  Checks the header's own
 * consistency (version, sizes, cluster_bits, refcount_order, extensions,
 * backing file name) but not the tables against the file: see
 * qcow2_header_check_layout().  Returns false with errp set on any
 * problem. */
bool qcow2_header_parse(const uint8_t *buf, size_t len, Qcow2Header *h,
                        Error **errp);

/* Check the metadata tables named by the header against a file of
 * file_size bytes: alignment, inside the file, not in cluster 0, no
 * overlap with each other, L1 big enough for the virtual size and within
 * QEMU's limits. */
bool qcow2_header_check_layout(const Qcow2Header *h, uint64_t file_size,
                               Error **errp);

/* Check the feature bits for opening (writable or not): unknown
 * incompatible bits (named from the feature table when possible), dirty
 * (refused writable unless can_repair: the refcounts must be rebuilt
 * first), corrupt (read-only only), external data file, encryption,
 * compression type. */
bool qcow2_header_check_features(const Qcow2Header *h, bool writable,
                                 bool can_repair, Error **errp);

/* Bytes of the L1 table needed for a virtual size (entries). */
uint64_t qcow2_l1_entries_for_size(const Qcow2Header *h, uint64_t size);

/* ---- L1/L2 entries --------------------------------------------------- */

typedef enum Qcow2ClusterType {
    QCOW2_CLUSTER_UNALLOCATED,   /* read from backing, or zeroes */
    QCOW2_CLUSTER_ZERO_PLAIN,    /* reads as zero, no host cluster */
    QCOW2_CLUSTER_ZERO_ALLOC,    /* reads as zero, host cluster kept */
    QCOW2_CLUSTER_NORMAL,        /* data at host_offset */
    QCOW2_CLUSTER_COMPRESSED,    /* compressed data at host_offset */
    /* Extended L2 only: subcluster not allocated but the cluster has a
     * host cluster (reads from backing). */
    QCOW2_CLUSTER_UNALLOCATED_ALLOC,
} Qcow2ClusterType;

typedef struct Qcow2Mapping {
    Qcow2ClusterType type;
    uint64_t host_offset;      /* NORMAL/ZERO_ALLOC: cluster-aligned;
                                * COMPRESSED: byte offset */
    uint64_t compressed_size;  /* COMPRESSED: bytes to read */
    bool copied;               /* bit 63: refcount is exactly 1 */
} Qcow2Mapping;

/* Decode an L1 entry into the L2 table offset (0 = no L2 table).
 * Returns 0 or -EIO (misaligned offset). */
int qcow2_l1_decode(const Qcow2Header *h, uint64_t entry, uint64_t *l2_off);

/* Decode a standard L2 entry (the first word with extended L2).
 * Returns 0 or -EIO (misaligned offset, zero flag on v2, ...). */
int qcow2_l2_decode(const Qcow2Header *h, uint64_t entry, Qcow2Mapping *m);

/* Extended L2: the type of subcluster sc (0..31) given the decoded first
 * word m and the bitmap word.  Returns the type (>= 0) or -EIO when the
 * bitmap is inconsistent (allocated and zero at once, allocated without
 * a host cluster, bits on a compressed cluster). */
int qcow2_subcluster_type(const Qcow2Mapping *m, uint64_t bitmap,
                          unsigned sc);

/* Encode a standard L2 entry. */
static inline uint64_t qcow2_l2_entry_normal(uint64_t host, bool copied)
{
    return host | (copied ? QCOW2_OFLAG_COPIED : 0);
}

/* ---- refcounts ------------------------------------------------------- */

/* Largest refcount representable with 1 << order bits. */
uint64_t qcow2_refcount_max(uint32_t order);
/* Entry index of a refcount block (which holds cluster_size * 8 >> order
 * entries; the caller keeps index in range). */
uint64_t qcow2_refcount_get(const void *block, uint32_t order,
                            uint64_t index);
/* value must be <= qcow2_refcount_max(order). */
void qcow2_refcount_set(void *block, uint32_t order, uint64_t index,
                        uint64_t value);

/* ---- snapshots ------------------------------------------------------- */

typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id;                   /* owned, NUL-terminated */
    char *name;                 /* owned */
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    bool has_disk_size;
    uint64_t disk_size;         /* virtual size at snapshot time */
    uint32_t extra_size;
} Qcow2Snapshot;

/* Parse the snapshot table of h->nb_snapshots entries from buf (len
 * bytes starting at h->snapshots_offset).  On success *out is an array
 * of h->nb_snapshots snapshots (free with qcow2_snapshots_free) and
 * *table_len the table's size in bytes.  file_size bounds the L1
 * offsets. */
bool qcow2_snapshots_parse(const Qcow2Header *h, const uint8_t *buf,
                           size_t len, uint64_t file_size,
                           Qcow2Snapshot **out, size_t *table_len,
                           Error **errp);
void qcow2_snapshots_free(Qcow2Snapshot *s, uint32_t n);
/* Find a snapshot by id, else by name; NULL when none matches. */
const Qcow2Snapshot *qcow2_snapshot_find(const Qcow2Snapshot *s,
                                         uint32_t n, const char *id_or_name);

/* ---- persistent dirty bitmaps ------------------------------------------
 *
 * qcow2.txt "Bitmaps extension", "Bitmap directory", "Bitmap table".
 * The extension (24 bytes: nb_bitmaps, reserved, directory size and
 * offset) is valid only while autoclear bit 0 is set.  The directory is
 * nb_bitmaps variable-length entries, each padded to 8 bytes:
 *
 *     0  u64 bitmap_table_offset   cluster aligned
 *     8  u32 bitmap_table_size     entries
 *    12  u32 flags                 bit0 in_use, bit1 auto,
 *                                  bit2 extra_data_compatible
 *    16  u8  type                  1 = dirty tracking
 *    17  u8  granularity_bits      9..31
 *    18  u16 name_size             1..1023, no NUL
 *    20  u32 extra_data_size
 *    24  extra data, then the name, then zero padding
 *
 * A bitmap table entry holds the host offset of one cluster of bitmap
 * data (bits 9..55), or 0 with bit 0 saying "all zeroes" (0) or "all
 * ones" (1); other bits are reserved.  Granule i is bit i % 8 of byte
 * i / 8 of the data. */

#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_DIR_BYTES (64u * 1024 * 1024)
#define QCOW2_MAX_BITMAP_NAME 1023
#define QCOW2_BITMAP_MIN_GRAN_BITS 9
#define QCOW2_BITMAP_MAX_GRAN_BITS 31
/* Bitmap data clusters one bitmap may have (QEMU: 512 MiB of data). */
#define QCOW2_MAX_BITMAP_DATA_BYTES (512ULL * 1024 * 1024)
#define QCOW2_BITMAP_TYPE_DIRTY 1
#define QCOW2_BME_FIXED 24          /* bytes before the extra data */

enum {
    QCOW2_BME_IN_USE = 1u << 0,
    QCOW2_BME_AUTO = 1u << 1,
    QCOW2_BME_EXTRA_DATA_COMPATIBLE = 1u << 2,
    QCOW2_BME_KNOWN_FLAGS = 0x7,
};

#define QCOW2_BMT_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW2_BMT_ALL_ONES 1ULL

typedef struct Qcow2BitmapEntry {
    uint64_t table_offset;      /* host offset, cluster aligned */
    uint32_t table_size;        /* entries (8 bytes each), >= 1 */
    uint32_t flags;             /* QCOW2_BME_* */
    uint8_t type;               /* QCOW2_BITMAP_TYPE_DIRTY */
    uint8_t granularity_bits;   /* 9..31 */
    uint32_t extra_data_size;   /* bytes */
    uint8_t *extra_data;        /* owned copy, kept verbatim; NULL if 0 */
    char *name;                 /* owned, NUL-terminated, unique */
} Qcow2BitmapEntry;

/* Check the bitmaps extension of h (when present and autoclear bit 0
 * is set) against a file of file_size bytes: count 1..65535, reserved
 * field zero, directory size 1..64 MiB, directory cluster aligned,
 * after the header and inside the file. */
bool qcow2_bitmap_ext_check(const Qcow2Header *h, uint64_t file_size,
                            Error **errp);

/* Parse the bitmap directory: buf holds h->bitmap_directory_size
 * bytes read at h->bitmap_directory_offset.  Every entry is checked
 * (see the layout above): fields in range, unknown flags, names
 * (length, NUL bytes, duplicates), extra data and the entry inside the
 * directory; the directory must hold exactly h->nb_bitmaps entries and
 * end with the last one.  Tables must be cluster aligned, after the
 * header, inside the file, big enough for the virtual size (unless the
 * bitmap is in use: its contents are not read), and overlap neither
 * each other nor the directory, the L1 table or the refcount table.
 * On success *out is an array of h->nb_bitmaps entries (free with
 * qcow2_bitmap_dir_free). */
bool qcow2_bitmap_dir_parse(const Qcow2Header *h, const uint8_t *buf,
                            size_t len, uint64_t file_size,
                            Qcow2BitmapEntry **out, Error **errp);
void qcow2_bitmap_dir_free(Qcow2BitmapEntry *e, uint32_t n);
/* Deep copy of one entry into dst (dst's old contents are not freed). */
void qcow2_bitmap_entry_copy(Qcow2BitmapEntry *dst,
                             const Qcow2BitmapEntry *src);

/* Bytes the n entries take encoded (each padded to 8). */
uint64_t qcow2_bitmap_dir_size(const Qcow2BitmapEntry *e, uint32_t n);
/* Encode n entries into buf (qcow2_bitmap_dir_size() bytes). */
void qcow2_bitmap_dir_encode(const Qcow2BitmapEntry *e, uint32_t n,
                             uint8_t *buf);

/* Bitmap table entries a bitmap of granularity 1 << gran_bits needs
 * for a virtual size (one per cluster of bitmap data). */
uint64_t qcow2_bitmap_table_entries(const Qcow2Header *h, uint64_t size,
                                    uint32_t gran_bits);

/* Decode a bitmap table entry: *data_off = the data cluster (0: none,
 * then *all_ones says what the cluster reads as).  -EIO for reserved
 * bits, a misaligned offset, the header cluster or an offset past
 * file_size. */
int qcow2_bitmap_table_decode(const Qcow2Header *h, uint64_t entry,
                              uint64_t file_size, uint64_t *data_off,
                              bool *all_ones);

/* Rewrite cluster 0 (buf, len bytes: the image's first cluster, or all
 * of the file when it is shorter) so that the bitmaps extension names
 * nb bitmaps in a directory of dir_size bytes at dir_offset, and
 * autoclear bit 0 is set; nb == 0 removes the extension and clears the
 * bit.  The other extensions are kept as they are, in order, and the
 * backing file name moves to follow them.  *end is the number of bytes
 * of buf to write back.  False when the result would not fit in the
 * cluster. */
bool qcow2_header_update_bitmaps(uint8_t *buf, size_t len, uint32_t nb,
                                 uint64_t dir_size, uint64_t dir_offset,
                                 size_t *end, Error **errp);
/* Rewrite cluster 0 (as above) so that the image's backing file is name
 * with the backing format extension fmt (fmt NULL: none), or no backing
 * file at all (name NULL).  The other extensions are kept in order;
 * the name follows them.  *end: bytes of buf to write back.  False when
 * it would not fit in the cluster. */
bool qcow2_header_set_backing(uint8_t *buf, size_t len, const char *name,
                              const char *fmt, size_t *end, Error **errp);

/* ---- creating an image ------------------------------------------------
 *
 * What blockdev-create (and qemu-img create) writes, as pure functions
 * over cluster buffers.  A new image is laid out in one run of clusters:
 *
 *     0                     header, extensions, backing file name
 *     reftable_offset       refcount table (reftable_clusters)
 *     refblocks_offset      refcount blocks (refblocks), covering every
 *                           cluster of the image, each counted once
 *     l1_offset             L1 table (l1_clusters; none for size 0)
 *     l2_offset             preallocated only: every L2 table, in L1 order
 *     data_offset           preallocated only: every data cluster, in
 *                           guest order, mapped by the L2 tables
 *
 * Without preallocation the L1 table is all zeroes (nothing allocated).
 * With it, L2 entries are normal clusters with the COPIED bit (with
 * extended L2: the host cluster is set and every subcluster left
 * unallocated, which reads as zeroes or from the backing file, as QEMU
 * does).  The clusters past the metadata are data: zeroes. */

#define QCOW2_CREATE_HEADER_LEN 112  /* v3 header with compression type */

typedef struct Qcow2CreateParams {
    uint64_t size;              /* virtual size, bytes, multiple of 512 */
    uint32_t version;           /* 2 or 3 */
    uint32_t cluster_bits;      /* 9..21 (14..21 with extended L2) */
    uint32_t refcount_order;    /* 0..6; 4 for version 2 */
    bool extended_l2;           /* version 3 only */
    bool lazy_refcounts;        /* version 3 only */
    uint8_t compression_type;   /* 0 zlib, 1 zstd (version 3 only) */
    const char *backing_file;   /* NULL: none; <= 1023 bytes */
    const char *backing_format; /* NULL: none; needs backing_file */
    bool preallocate;           /* allocate every L2 table and cluster */
} Qcow2CreateParams;

typedef struct Qcow2CreateLayout {
    uint64_t cluster_size;      /* bytes */
    uint32_t l2_entries;        /* entries per L2 table */
    uint64_t l1_entries;        /* header l1_size */
    uint64_t reftable_offset, reftable_clusters;
    uint64_t refblocks_offset, refblocks;
    uint64_t l1_offset, l1_clusters;
    uint64_t l2_offset, l2_tables;         /* 0 without preallocation */
    uint64_t data_offset, data_clusters;   /* 0 without preallocation */
    uint64_t total_clusters;    /* the image file's length / cluster */
} Qcow2CreateLayout;

/* Compute the layout of the new image.  p must hold valid parameters
 * (blockdev/create.c checks the user's options with QEMU's messages
 * first); this fails on parameters out of range and when the image
 * would need an L1 table or a refcount table beyond QEMU's limits
 * ("Could not resize image: Failed to grow the L1 table: File too
 * large"). */
bool qcow2_create_layout(const Qcow2CreateParams *p, Qcow2CreateLayout *l,
                         Error **errp);

/* Fill buf (one cluster) with the contents of metadata cluster index
 * (0 .. l->data_offset / cluster_size - 1, or total_clusters without
 * preallocation): the header, a refcount table or block, an L1 or an L2
 * table.  Any other index is data and reads as zeroes. */
void qcow2_create_cluster(const Qcow2CreateParams *p,
                          const Qcow2CreateLayout *l, uint64_t index,
                          uint8_t *buf);

/* Clusters of metadata at the start of the image (everything before
 * the data clusters). */
uint64_t qcow2_create_meta_clusters(const Qcow2CreateLayout *l);

#endif
