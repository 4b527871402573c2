/* proto.h - the NBD wire protocol: constants and one pure codec for both
 * ends (server and client) of every message.
 *
 * Nothing here does I/O or allocates: every function works on caller
 * buffers, so the decoders can be fed hostile bytes in unit tests.
 * Reference: NetworkBlockDevice/nbd doc/proto.md (plus the extended
 * headers extension); all integers are big-endian on the wire.
 *
 * Conventions
 *   Encoders write one message (or payload) into buf and return its size
 *   in bytes.  Fixed-size messages need buf to hold the NBD_*_SIZE named
 *   in their comment.  Variable-size ones take the capacity cap and work
 *   like snprintf: they return the size the message needs and write only
 *   if it fits (buf may be NULL with cap 0 to size a buffer); they
 *   return -EINVAL for input that would not be a valid message (a string
 *   over NBD_MAX_STRING bytes, a zero error, ...).  They do not look
 *   for NUL bytes inside NbdStr strings: keeping them out is the
 *   caller's job (the decoders refuse them).
 *
 *   Decoders take (buf, len), the bytes available.  They never read past
 *   len, never write anything but *out, and return false on truncated or
 *   malformed input: wrong magic, lengths that disagree with each other,
 *   non-zero reserved bytes, strings over NBD_MAX_STRING bytes or with a
 *   NUL.  On false, *out is unspecified.  A fixed-size header needs len
 *   >= its size and ignores what follows; a payload whose size an
 *   enclosing header gave needs len == that size exactly.  Strings in
 *   decoded structs (NbdStr) point into buf, are not NUL-terminated and
 *   live as long as buf.  buf may be NULL when len is 0.
 *
 *   The older server-side parsers (nbd_parse_opt_*) copy names into a
 *   NUL-terminated buffer and report an NbdOptError for the reply.
 */
#ifndef BLOCKD_NBD_PROTO_H
#define BLOCKD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
#define NBD_CLIENT_FLAGS_SIZE   4
#define NBD_OPT_HDR_SIZE        16
#define NBD_OPT_REPLY_HDR_SIZE  20
#define NBD_REQ_SIZE            28
#define NBD_EXT_REQ_SIZE        32
#define NBD_SIMPLE_REPLY_SIZE   16
#define NBD_CHUNK_HDR_SIZE      20
#define NBD_EXT_CHUNK_HDR_SIZE  32
#define NBD_MAX_CHUNK_HDR_SIZE  32
/* NBD_OPT_EXPORT_NAME reply: size, flags and 124 zero bytes (10 bytes
 * when the client set NBD_FLAG_C_NO_ZEROES). */
#define NBD_EXPORT_NAME_REPLY_SIZE      134
#define NBD_EXPORT_NAME_REPLY_SHORT     10
#define NBD_OFFSET_DATA_HDR_SIZE        8   /* u64 offset before the data */
#define NBD_OFFSET_HOLE_SIZE            12

/* Strings (export names, queries, messages): the spec's hard limit. */
#define NBD_MAX_STRING          4096
/* Largest option payload the codec builds, and the largest option reply
 * a client takes.  An option request header may announce more: the
 * server reads what it can use and answers longer ones
 * NBD_REP_ERR_TOO_BIG after skipping them (nbd/handshake.c). */
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
/* Error chunk types have bit 15 set (doc/proto.md "Structured reply
 * types"); all start with u32 error, u16 message length, message. */
#define NBD_REPLY_TYPE_IS_ERR(t)    (((t) & 0x8000) != 0)

/* base:allocation flags */
#define NBD_STATE_HOLE              (1 << 0)
#define NBD_STATE_ZERO              (1 << 1)
/* qemu:dirty-bitmap:NAME flag (QEMU docs/interop/nbd.txt) */
#define NBD_STATE_DIRTY             (1 << 0)

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

/* A string on the wire: not NUL-terminated, len bytes at ptr (ptr may be
 * NULL when len is 0).  Decoders point ptr into their input buffer. */
typedef struct NbdStr {
    const char *ptr;
    uint32_t len;
} NbdStr;

/* An NbdStr for a C string (which must outlive the result). */
NbdStr nbd_str(const char *s);
/* True if the string (len bytes) equals lit. */
bool nbd_str_eq(const char *s, size_t len, const char *lit);

/* ---- handshake ------------------------------------------------------ */

/* The server greeting (NBD_GREETING_SIZE): NBDMAGIC, IHAVEOPT and the
 * 16-bit handshake flags (NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES). */
size_t nbd_encode_server_greeting(uint8_t *buf, uint16_t hflags);
/* False unless both magics are right (an oldstyle server, whose second
 * magic differs, is refused).  Unknown handshake flags are kept: the
 * client must ignore them. */
bool nbd_decode_server_greeting(const uint8_t *buf, size_t len,
                                uint16_t *hflags);
/* The greeting blockd sends: FIXED_NEWSTYLE | NO_ZEROES. */
void nbd_encode_greeting(uint8_t buf[NBD_GREETING_SIZE]);

/* The 32-bit client flags (NBD_CLIENT_FLAGS_SIZE). */
size_t nbd_encode_client_flags(uint8_t *buf, uint32_t flags);
/* False also for flags other than NBD_FLAG_C_FIXED_NEWSTYLE and
 * NBD_FLAG_C_NO_ZEROES: the server must then hang up. */
bool nbd_decode_client_flags(const uint8_t *buf, size_t len,
                             uint32_t *flags);

/* ---- option requests (client -> server) ----------------------------- */

/* The option header (NBD_OPT_HDR_SIZE): IHAVEOPT, option, data length;
 * the len bytes of data follow. */
typedef struct NbdOptHdr {
    uint32_t opt;       /* NBD_OPT_* */
    uint32_t len;       /* bytes of option data */
} NbdOptHdr;

size_t nbd_encode_opt_hdr(uint8_t *buf, uint32_t opt, uint32_t len);
/* False on a wrong magic.  Any length decodes: what is too big to
 * buffer is the reader's decision (the server skips the payload and
 * answers NBD_REP_ERR_TOO_BIG). */
bool nbd_decode_opt_hdr(const uint8_t *buf, size_t len, NbdOptHdr *out);

/* Result of a server-side parser: the NBD_REP_ERR_* to send with a
 * message (a static string). */
typedef struct NbdOptError {
    uint32_t rep;
    const char *msg;
} NbdOptError;

/* NBD_OPT_EXPORT_NAME data: the whole payload is the name.
 * Encode: -EINVAL for a name over NBD_MAX_STRING bytes.
 * Parse: copies the name (NUL-terminated) into name; an empty payload
 * is the empty name (the default export), and buf may then be NULL.
 * False with NBD_REP_ERR_INVALID for a NUL or an over-long name. */
ssize_t nbd_encode_opt_export_name(uint8_t *buf, size_t cap,
                                   const char *name);
bool nbd_parse_opt_export_name(const uint8_t *buf, size_t len,
                               char name[NBD_MAX_STRING + 1],
                               NbdOptError *err);

/* NBD_OPT_INFO / NBD_OPT_GO data: u32 namelen, name, u16 n, n x u16
 * NBD_INFO_* requests. */
typedef struct NbdOptInfo {
    char name[NBD_MAX_STRING + 1];  /* NUL-terminated export name */
    bool want_name, want_description, want_block_size;
    uint16_t ninfos;                /* number of requested items */
} NbdOptInfo;

/* Encode: requests NBD_INFO_NAME, _DESCRIPTION, _BLOCK_SIZE (in that
 * order) for each want_* set; ninfos is ignored (the parser sets it to
 * the number of items on the wire).  -EINVAL if name is not
 * NUL-terminated within NBD_MAX_STRING + 1 bytes. */
ssize_t nbd_encode_opt_info(uint8_t *buf, size_t cap, const NbdOptInfo *in);
/* Parse: unknown and NBD_INFO_EXPORT items are counted in ninfos but
 * otherwise ignored, as the spec asks.  False with NBD_REP_ERR_INVALID. */
bool nbd_parse_opt_info(const uint8_t *buf, size_t len, NbdOptInfo *out,
                        NbdOptError *err);

/* NBD_OPT_LIST/SET_META_CONTEXT data:
 * u32 namelen, name, u32 nqueries, nqueries x (u32 len, query).
 * Encode: -EINVAL if the name or a query is over NBD_MAX_STRING bytes. */
ssize_t nbd_encode_opt_meta(uint8_t *buf, size_t cap, const char *name,
                            const char *const *queries, uint32_t nqueries);

/* Parse: the whole structure is checked (lengths consistent, no trailing
 * bytes, no NUL in the name or the queries); queries may be longer than
 * NBD_MAX_STRING (the server skips those).  Queries are then walked with
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

/* Options without data: NBD_OPT_LIST, _STARTTLS, _STRUCTURED_REPLY,
 * _EXTENDED_HEADERS (and NBD_OPT_ABORT, whose data the server ignores).
 * The client sends just nbd_encode_opt_hdr(buf, opt, 0).  The parser is
 * false with NBD_REP_ERR_INVALID if len is not 0 (always true for
 * NBD_OPT_ABORT). */
bool nbd_parse_opt_empty(uint32_t opt, size_t len, NbdOptError *err);

/* ---- option replies (server -> client) ------------------------------ */

/* The reply header (NBD_OPT_REPLY_HDR_SIZE): NBD_REP_MAGIC, option,
 * reply type, data length. */
typedef struct NbdOptReplyHdr {
    uint32_t opt;       /* the option this answers */
    uint32_t type;      /* NBD_REP_* */
    uint32_t len;       /* bytes of reply data that follow */
} NbdOptReplyHdr;

size_t nbd_encode_opt_reply_hdr(uint8_t *buf, uint32_t opt, uint32_t type,
                                uint32_t len);
/* False on a wrong magic, a length over NBD_MAX_OPTION_LEN (no valid
 * reply is that big) or an NBD_REP_ACK that carries data. */
bool nbd_decode_opt_reply_hdr(const uint8_t *buf, size_t len,
                              NbdOptReplyHdr *out);

/* NBD_REP_SERVER data (one NBD_OPT_LIST entry): u32 namelen, name, then
 * an optional description filling the rest.  Encode: -EINVAL if either
 * string is over NBD_MAX_STRING bytes. */
typedef struct NbdRepServer {
    NbdStr name;
    NbdStr desc;        /* len 0: none */
} NbdRepServer;

ssize_t nbd_encode_rep_server(uint8_t *buf, size_t cap,
                              const NbdRepServer *in);
bool nbd_decode_rep_server(const uint8_t *buf, size_t len,
                           NbdRepServer *out);

/* NBD_REP_INFO data: u16 NBD_INFO_* type, then
 *   EXPORT:      u64 size, u16 transmission flags   (12 bytes in all)
 *   NAME:        the canonical export name
 *   DESCRIPTION: human-readable text
 *   BLOCK_SIZE:  u32 minimum, u32 preferred, u32 maximum payload (14)
 * Other types are kept as raw bytes in str (a client must ignore them),
 * up to NBD_MAX_OPTION_LEN bytes in all.
 * Only the fields of the type are used; the decoder zeroes the others.
 * Block sizes are not checked against each other (that is policy).
 * Encode: -EINVAL for a NAME or DESCRIPTION over NBD_MAX_STRING bytes. */
typedef struct NbdRepInfo {
    uint16_t type;          /* NBD_INFO_* */
    uint64_t size;          /* EXPORT: bytes */
    uint16_t tflags;        /* EXPORT: NBD_FLAG_* transmission flags */
    uint32_t min_block;     /* BLOCK_SIZE: bytes */
    uint32_t pref_block;    /* BLOCK_SIZE: bytes */
    uint32_t max_payload;   /* BLOCK_SIZE: bytes */
    NbdStr str;             /* NAME, DESCRIPTION; raw data if unknown */
} NbdRepInfo;

ssize_t nbd_encode_rep_info(uint8_t *buf, size_t cap, const NbdRepInfo *in);
bool nbd_decode_rep_info(const uint8_t *buf, size_t len, NbdRepInfo *out);

/* NBD_REP_META_CONTEXT data: u32 context id, name (the rest).  The id
 * is 0 and meaningless in NBD_OPT_LIST_META_CONTEXT replies.  An empty
 * name is refused. */
typedef struct NbdRepMeta {
    uint32_t id;
    NbdStr name;
} NbdRepMeta;

ssize_t nbd_encode_rep_meta(uint8_t *buf, size_t cap, const NbdRepMeta *in);
bool nbd_decode_rep_meta(const uint8_t *buf, size_t len, NbdRepMeta *out);

/* NBD_REP_ERR_* data: an optional message (the whole payload), at most
 * NBD_MAX_STRING bytes. */
ssize_t nbd_encode_rep_error(uint8_t *buf, size_t cap, NbdStr msg);
bool nbd_decode_rep_error(const uint8_t *buf, size_t len, NbdStr *msg);

/* The NBD_OPT_EXPORT_NAME reply: u64 size, u16 transmission flags, then
 * 124 zero bytes unless NO_ZEROES was negotiated.  Encode returns
 * NBD_EXPORT_NAME_REPLY_SHORT or _SIZE; decode needs that many bytes and
 * refuses non-zero padding. */
typedef struct NbdExportNameReply {
    uint64_t size;          /* bytes */
    uint16_t tflags;        /* NBD_FLAG_* transmission flags */
} NbdExportNameReply;

size_t nbd_encode_export_name_reply(uint8_t *buf, bool no_zeroes,
                                    const NbdExportNameReply *in);
bool nbd_decode_export_name_reply(const uint8_t *buf, size_t len,
                                  bool no_zeroes, NbdExportNameReply *out);

/* ---- requests ------------------------------------------------------- */

typedef struct NbdRequest {
    uint16_t flags;     /* NBD_CMD_FLAG_* */
    uint16_t type;      /* NBD_CMD_* */
    uint64_t cookie;    /* echoed verbatim */
    uint64_t offset;    /* bytes */
    uint64_t length;    /* bytes; 32-bit on compact requests */
} NbdRequest;

/* Encode a request header: NBD_REQ_SIZE bytes (length truncated to 32
 * bits), or NBD_EXT_REQ_SIZE with extended headers.  Returns the size. */
size_t nbd_encode_request(uint8_t *buf, bool extended, const NbdRequest *req);
/* Decode a request header; buf must hold NBD_REQ_SIZE bytes, or
 * NBD_EXT_REQ_SIZE with extended headers (the server reads exactly
 * that).  False if the magic is wrong, which is fatal for the
 * connection. */
bool nbd_decode_request(const uint8_t *buf, bool extended, NbdRequest *req);
/* The same with the (buf, len) contract: also false if len is shorter
 * than the header. */
bool nbd_decode_request_len(const uint8_t *buf, size_t len, bool extended,
                            NbdRequest *req);

/* NBD_CMD_BLOCK_STATUS payload (extended headers, with
 * NBD_CMD_FLAG_PAYLOAD_LEN, once the server advertised
 * NBD_FLAG_BLOCK_STAT_PAYLOAD): u64 effect length, then n >= 1 u32
 * context ids to report.  Encode: -EINVAL if n is 0.  Decode checks the
 * layout only (duplicate or unknown ids are the server's EINVAL); read
 * id i < *n with nbd_bs_payload_id() from the same buffer. */
ssize_t nbd_encode_bs_payload(uint8_t *buf, size_t cap, uint64_t effect_len,
                              const uint32_t *ids, uint32_t n);
bool nbd_decode_bs_payload(const uint8_t *buf, size_t len,
                           uint64_t *effect_len, uint32_t *n);
uint32_t nbd_bs_payload_id(const uint8_t *buf, uint32_t i);

/* ---- transmission replies (server -> client) ------------------------ */

/* Any reply header: simple (NBD_SIMPLE_REPLY_SIZE), structured chunk
 * (NBD_CHUNK_HDR_SIZE) or extended chunk (NBD_EXT_CHUNK_HDR_SIZE); the
 * magic says which. */
typedef struct NbdReplyHdr {
    uint32_t magic;     /* NBD_{SIMPLE,STRUCTURED,EXTENDED}_REPLY_MAGIC */
    uint32_t error;     /* simple: NBD_E*, 0 = success; else 0 */
    uint16_t flags;     /* chunk: NBD_REPLY_FLAG_*; else 0 */
    uint16_t type;      /* chunk: NBD_REPLY_TYPE_*; else 0 */
    uint64_t cookie;    /* the request's */
    uint64_t offset;    /* extended: the request offset; else 0 */
    uint64_t length;    /* chunk: payload bytes that follow; else 0 */
} NbdReplyHdr;

/* The size of the header that starts with the magic at buf: 16, 20 or
 * 32; 0 if len < 4 or the magic is unknown.  A client reads 4 bytes,
 * then the rest. */
size_t nbd_reply_hdr_size(const uint8_t *buf, size_t len);
/* Encode by in->magic; returns the size, 0 for an unknown magic.  A
 * structured length is truncated to 32 bits. */
size_t nbd_encode_reply_hdr(uint8_t *buf, const NbdReplyHdr *in);
/* Decode what the negotiated mode allows: with extended headers only
 * extended chunks; with structured replies simple replies or structured
 * chunks; otherwise simple replies.  Also false for an
 * NBD_REPLY_TYPE_NONE chunk with data or without NBD_REPLY_FLAG_DONE. */
bool nbd_decode_reply_hdr(const uint8_t *buf, size_t len, bool structured,
                          bool extended, NbdReplyHdr *out);

/* Shorthands the server uses.  A simple reply header; error is an
 * NBD_E* value.  Returns NBD_SIMPLE_REPLY_SIZE. */
size_t nbd_encode_simple_reply(uint8_t *buf, uint32_t error,
                               uint64_t cookie);
/* A structured (20 bytes) or extended (32 bytes) chunk header; offset is
 * the request offset (extended headers only).  Returns the size.  For a
 * compact header, len must fit in 32 bits. */
size_t nbd_encode_chunk_hdr(uint8_t *buf, bool extended, uint16_t flags,
                            uint16_t type, uint64_t cookie, uint64_t offset,
                            uint64_t len);

/* ---- chunk payloads --------------------------------------------------- */

/* NBD_REPLY_TYPE_OFFSET_DATA: u64 offset, then the data.  Only the
 * offset is encoded here (NBD_OFFSET_DATA_HDR_SIZE); the data follows
 * from the caller's buffer.  Decode reads the offset (len >= 8) and
 * derives *data_len from the chunk's length, which must leave at least
 * one byte of data. */
size_t nbd_encode_offset_data_hdr(uint8_t *buf, uint64_t offset);
bool nbd_decode_offset_data_hdr(const uint8_t *buf, size_t len,
                                uint64_t chunk_len, uint64_t *offset,
                                uint64_t *data_len);

/* NBD_REPLY_TYPE_OFFSET_HOLE: u64 offset, u32 hole size (non-zero);
 * NBD_OFFSET_HOLE_SIZE bytes. */
typedef struct NbdChunkHole {
    uint64_t offset;    /* bytes */
    uint32_t length;    /* bytes, > 0 */
} NbdChunkHole;

size_t nbd_encode_offset_hole(uint8_t *buf, const NbdChunkHole *in);
bool nbd_decode_offset_hole(const uint8_t *buf, size_t len,
                            NbdChunkHole *out);

/* Block status chunks, one per selected meta context:
 *   NBD_REPLY_TYPE_BLOCK_STATUS (compact):
 *       u32 context id, n x (u32 length, u32 flags)
 *   NBD_REPLY_TYPE_BLOCK_STATUS_EXT (extended headers):
 *       u32 context id, u32 n, n x (u64 length, u64 flags)
 * n >= 1 and every length is non-zero. */
typedef struct NbdExtent {
    uint64_t length;    /* bytes, > 0; 32-bit in compact chunks */
    uint64_t flags;     /* context-defined (NBD_STATE_*); 32-bit compact */
} NbdExtent;

typedef struct NbdBlockStatus {
    uint32_t context_id;
    uint32_t count;     /* descriptors that follow */
} NbdBlockStatus;

/* Payload size for count descriptors. */
size_t nbd_block_status_size(bool extended, uint32_t count);
/* The pieces, for a server that builds the payload as it walks: the
 * prefix (4 or 8 bytes) and one descriptor (8 or 16 bytes; compact
 * values are truncated to 32 bits).  Return the bytes written. */
size_t nbd_encode_block_status_hdr(uint8_t *buf, bool extended,
                                   uint32_t context_id, uint32_t count);
size_t nbd_encode_extent(uint8_t *buf, bool extended, const NbdExtent *e);
/* The whole payload; -EINVAL if n is 0, a length is 0 or (compact) a
 * length or flags value needs more than 32 bits. */
ssize_t nbd_encode_block_status(uint8_t *buf, size_t cap, bool extended,
                                uint32_t context_id, const NbdExtent *ext,
                                uint32_t n);
/* Checks the whole payload (count matching the length, no zero-length
 * descriptor); then read descriptor i < out->count with
 * nbd_block_status_extent() from the same buffer. */
bool nbd_decode_block_status(const uint8_t *buf, size_t len, bool extended,
                             NbdBlockStatus *out);
void nbd_block_status_extent(const uint8_t *buf, bool extended, uint32_t i,
                             NbdExtent *e);

/* Error chunks: u32 error (non-zero), u16 message length, message; then
 * for NBD_REPLY_TYPE_ERROR_OFFSET a u64 offset.  type is the chunk type
 * from the header and must be an error type.  For unknown error types
 * the decoder reads the common prefix and ignores the rest. */
typedef struct NbdChunkError {
    uint32_t error;     /* NBD_E*, != 0 */
    NbdStr msg;         /* <= NBD_MAX_STRING bytes */
    uint64_t offset;    /* ERROR_OFFSET only; else 0 */
} NbdChunkError;

ssize_t nbd_encode_chunk_error(uint8_t *buf, size_t cap, uint16_t type,
                               const NbdChunkError *in);
bool nbd_decode_chunk_error(const uint8_t *buf, size_t len, uint16_t type,
                            NbdChunkError *out);

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
