/* proto.h - the NBD wire protocol: constants, header decoding, reply
 * encoding and the pure option-payload parsers.
 *
 * Nothing here does I/O or allocates: every function works on caller
 * buffers, so the parsers can be fed hostile bytes in unit tests.
 * Reference: NetworkBlockDevice/nbd doc/proto.md (plus the extended
 * headers extension); all integers are big-endian on the wire.
 */
#ifndef BLOCKD_NBD_PROTO_H
#define BLOCKD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- magics --------------------------------------------------------- */
#define NBD_INIT_MAGIC              0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC              0x49484156454F5054ULL /* "IHAVEOPT" */
#define NBD_REP_MAGIC               0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC           0x25609513U
#define NBD_EXTENDED_REQUEST_MAGIC  0x21e41c71U
#define NBD_SIMPLE_REPLY_MAGIC      0x67446698U
#define NBD_STRUCTURED_REPLY_MAGIC  0x668e33efU
#define NBD_EXTENDED_REPLY_MAGIC    0x6e8a278cU

/* ---- sizes ---------------------------------------------------------- */
#define NBD_GREETING_SIZE       18
#define NBD_OPT_HDR_SIZE        16
#define NBD_OPT_REPLY_HDR_SIZE  20
#define NBD_REQ_SIZE            28
#define NBD_EXT_REQ_SIZE        32
#define NBD_SIMPLE_REPLY_SIZE   16
#define NBD_CHUNK_HDR_SIZE      20
#define NBD_EXT_CHUNK_HDR_SIZE  32
#define NBD_MAX_CHUNK_HDR_SIZE  32

/* Strings (export names, queries, messages): the spec's hard limit. */
#define NBD_MAX_STRING          4096
/* Largest option payload we accept at all; bigger options drop the
 * connection before anything is allocated (a DoS guard: every legal
 * option fits easily). */
#define NBD_MAX_OPTION_LEN      (64 * 1024)
/* Largest request payload (READ/WRITE/CACHE length), advertised as the
 * BLOCK_SIZE maximum: 32 MiB like QEMU. */
#define NBD_MAX_PAYLOAD         (32 * 1024 * 1024)
/* Cap on extents per block status chunk (QEMU: 1 MiB of descriptors). */
#define NBD_MAX_EXTENTS         (128 * 1024)

/* ---- handshake flags ------------------------------------------------ */
#define NBD_FLAG_FIXED_NEWSTYLE     (1 << 0)
#define NBD_FLAG_NO_ZEROES          (1 << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE   (1 << 0)
#define NBD_FLAG_C_NO_ZEROES        (1 << 1)

/* ---- options -------------------------------------------------------- */
#define NBD_OPT_EXPORT_NAME         1
#define NBD_OPT_ABORT               2
#define NBD_OPT_LIST                3
#define NBD_OPT_PEEK_EXPORT         4
#define NBD_OPT_STARTTLS            5
#define NBD_OPT_INFO                6
#define NBD_OPT_GO                  7
#define NBD_OPT_STRUCTURED_REPLY    8
#define NBD_OPT_LIST_META_CONTEXT   9
#define NBD_OPT_SET_META_CONTEXT    10
#define NBD_OPT_EXTENDED_HEADERS    11

#define NBD_REP_ACK                 1
#define NBD_REP_SERVER              2
#define NBD_REP_INFO                3
#define NBD_REP_META_CONTEXT        4
#define NBD_REP_ERR(n)              (0x80000000U | (n))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)
#define NBD_REP_ERR_EXT_HEADER_REQD NBD_REP_ERR(10)

#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* ---- transmission flags (u16) --------------------------------------- */
#define NBD_FLAG_HAS_FLAGS          (1 << 0)
#define NBD_FLAG_READ_ONLY          (1 << 1)
#define NBD_FLAG_SEND_FLUSH         (1 << 2)
#define NBD_FLAG_SEND_FUA           (1 << 3)
#define NBD_FLAG_ROTATIONAL         (1 << 4)
#define NBD_FLAG_SEND_TRIM          (1 << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES  (1 << 6)
#define NBD_FLAG_SEND_DF            (1 << 7)
#define NBD_FLAG_CAN_MULTI_CONN     (1 << 8)
#define NBD_FLAG_SEND_RESIZE        (1 << 9)
#define NBD_FLAG_SEND_CACHE         (1 << 10)
#define NBD_FLAG_SEND_FAST_ZERO     (1 << 11)
#define NBD_FLAG_BLOCK_STAT_PAYLOAD (1 << 12)

/* ---- commands ------------------------------------------------------- */
#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_CACHE               5
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_BLOCK_STATUS        7

#define NBD_CMD_FLAG_FUA            (1 << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1 << 1)
#define NBD_CMD_FLAG_DF             (1 << 2)
#define NBD_CMD_FLAG_REQ_ONE        (1 << 3)
#define NBD_CMD_FLAG_FAST_ZERO      (1 << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN    (1 << 5)

/* ---- structured / extended replies ---------------------------------- */
#define NBD_REPLY_FLAG_DONE         (1 << 0)

#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR        32769
#define NBD_REPLY_TYPE_ERROR_OFFSET 32770

/* base:allocation flags */
#define NBD_STATE_HOLE              (1 << 0)
#define NBD_STATE_ZERO              (1 << 1)

/* ---- errors (the only values that go on the wire) -------------------- */
#define NBD_EPERM       1
#define NBD_EIO         5
#define NBD_ENOMEM      12
#define NBD_EINVAL      22
#define NBD_ENOSPC      28
#define NBD_EOVERFLOW   75
#define NBD_ENOTSUP     95
#define NBD_ESHUTDOWN   108

/* Map a positive (or negative) errno to the NBD error that goes on the
 * wire; anything unknown becomes NBD_EINVAL, 0 stays 0. */
uint32_t nbd_errno(int err);

/* Names for logs and messages ("NBD_OPT_GO", "NBD_CMD_READ"); never NULL. */
const char *nbd_opt_name(uint32_t opt);
const char *nbd_cmd_name(uint16_t type);

/* ---- requests ------------------------------------------------------- */

typedef struct NbdRequest {
    uint16_t flags;     /* NBD_CMD_FLAG_* */
    uint16_t type;      /* NBD_CMD_* */
    uint64_t cookie;    /* echoed verbatim */
    uint64_t offset;    /* bytes */
    uint64_t length;    /* bytes; 32-bit on compact requests */
} NbdRequest;

/* Decode one request header from buf (NBD_REQ_SIZE bytes, or
 * NBD_EXT_REQ_SIZE with extended headers).  False if the magic is wrong,
 * which is fatal for the connection. */
bool nbd_decode_request(const uint8_t *buf, bool extended, NbdRequest *req);
/* Encode a request (used by tests and the client side). Returns bytes. */
size_t nbd_encode_request(uint8_t *buf, bool extended, const NbdRequest *req);

/* ---- handshake encoding ------------------------------------------- */

/* The 18-byte server greeting with FIXED_NEWSTYLE | NO_ZEROES. */
void nbd_encode_greeting(uint8_t buf[NBD_GREETING_SIZE]);
/* An option reply header; returns NBD_OPT_REPLY_HDR_SIZE. */
size_t nbd_encode_opt_reply_hdr(uint8_t *buf, uint32_t opt, uint32_t type,
                                uint32_t len);

/* ---- reply encoding ------------------------------------------------- */

/* A simple reply header (16 bytes); error is an NBD_E* value. */
size_t nbd_encode_simple_reply(uint8_t *buf, uint32_t error,
                               uint64_t cookie);
/* A structured (20 bytes) or extended (32 bytes) chunk header; offset is
 * the request offset (extended headers only).  Returns the size.  For a
 * compact header, len must fit in 32 bits. */
size_t nbd_encode_chunk_hdr(uint8_t *buf, bool extended, uint16_t flags,
                            uint16_t type, uint64_t cookie, uint64_t offset,
                            uint64_t len);

/* ---- option payload parsers ----------------------------------------- */

/* Result of a parser: 0 on success, or the NBD_REP_ERR_* to send with a
 * message (a static string). */
typedef struct NbdOptError {
    uint32_t rep;
    const char *msg;
} NbdOptError;

/* NBD_OPT_INFO / NBD_OPT_GO payload: u32 namelen, name, u16 n, n x u16. */
typedef struct NbdOptInfo {
    char name[NBD_MAX_STRING + 1];  /* NUL-terminated export name */
    bool want_name, want_description, want_block_size;
    uint16_t ninfos;                /* number of requested items */
} NbdOptInfo;

bool nbd_parse_opt_info(const uint8_t *buf, size_t len, NbdOptInfo *out,
                        NbdOptError *err);

/* NBD_OPT_EXPORT_NAME payload: the whole payload is the name. */
bool nbd_parse_opt_export_name(const uint8_t *buf, size_t len,
                               char name[NBD_MAX_STRING + 1],
                               NbdOptError *err);

/* NBD_OPT_LIST/SET_META_CONTEXT payload:
 * u32 namelen, name, u32 nqueries, nqueries x (u32 len, query).
 * The whole structure is checked (lengths consistent, no trailing
 * bytes, no NUL in the name).  Queries are then walked with
 * nbd_meta_next_query(). */
typedef struct NbdOptMeta {
    char name[NBD_MAX_STRING + 1];
    uint32_t nqueries;
    size_t queries_off;            /* offset of the first query in buf */
} NbdOptMeta;

bool nbd_parse_opt_meta(const uint8_t *buf, size_t len, NbdOptMeta *out,
                        NbdOptError *err);
/* Return the next query at *pos (start with out->queries_off): sets
 * *q and *qlen (not NUL-terminated) and advances *pos.  The payload must
 * have been validated by nbd_parse_opt_meta(). */
void nbd_meta_next_query(const uint8_t *buf, size_t *pos, const char **q,
                         uint32_t *qlen);

/* True if the string (len bytes) equals lit. */
bool nbd_str_eq(const char *s, size_t len, const char *lit);

/* ---- request validation ------------------------------------------- */

/* What a connection negotiated and what the export allows: the input of
 * nbd_check_request(). */
typedef struct NbdReqLimits {
    bool structured;        /* structured or extended replies */
    bool extended;
    bool read_only;
    bool have_contexts;     /* at least one meta context selected */
    uint64_t size;          /* export size, bytes */
    uint64_t max_payload;   /* bytes */
} NbdReqLimits;

/* Validate a decoded request.  Returns 0 if it may run, else the NBD
 * error for the reply (NBD_EINVAL, NBD_EPERM, NBD_ENOSPC, NBD_EOVERFLOW)
 * and *why a static message.  *payload is set to the number of payload
 * bytes that follow the header on the wire (which the caller must read or
 * drain whatever the verdict). */
uint32_t nbd_check_request(const NbdRequest *req, const NbdReqLimits *lim,
                           uint64_t *payload, const char **why);

#endif
