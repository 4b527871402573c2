/* proto.c - NBD wire encoding, decoding and option parsers (pure). */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "nbd/proto.h"
#include "util/util.h"

uint32_t nbd_errno(int err)
{
    if (err < 0) {
        err = -err;
    }
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EINVAL;
    }
}

const char *nbd_opt_name(uint32_t opt)
{
    static const char *const names[] = {
        [NBD_OPT_EXPORT_NAME] = "NBD_OPT_EXPORT_NAME",
        [NBD_OPT_ABORT] = "NBD_OPT_ABORT",
        [NBD_OPT_LIST] = "NBD_OPT_LIST",
        [NBD_OPT_PEEK_EXPORT] = "NBD_OPT_PEEK_EXPORT",
        [NBD_OPT_STARTTLS] = "NBD_OPT_STARTTLS",
        [NBD_OPT_INFO] = "NBD_OPT_INFO",
        [NBD_OPT_GO] = "NBD_OPT_GO",
        [NBD_OPT_STRUCTURED_REPLY] = "NBD_OPT_STRUCTURED_REPLY",
        [NBD_OPT_LIST_META_CONTEXT] = "NBD_OPT_LIST_META_CONTEXT",
        [NBD_OPT_SET_META_CONTEXT] = "NBD_OPT_SET_META_CONTEXT",
        [NBD_OPT_EXTENDED_HEADERS] = "NBD_OPT_EXTENDED_HEADERS",
    };
    if (opt < ARRAY_SIZE(names) && names[opt]) {
        return names[opt];
    }
    return "unknown option";
}

const char *nbd_cmd_name(uint16_t type)
{
    static const char *const names[] = {
        [NBD_CMD_READ] = "NBD_CMD_READ",
        [NBD_CMD_WRITE] = "NBD_CMD_WRITE",
        [NBD_CMD_DISC] = "NBD_CMD_DISC",
        [NBD_CMD_FLUSH] = "NBD_CMD_FLUSH",
        [NBD_CMD_TRIM] = "NBD_CMD_TRIM",
        [NBD_CMD_CACHE] = "NBD_CMD_CACHE",
        [NBD_CMD_WRITE_ZEROES] = "NBD_CMD_WRITE_ZEROES",
        [NBD_CMD_BLOCK_STATUS] = "NBD_CMD_BLOCK_STATUS",
    };
    if (type < ARRAY_SIZE(names) && names[type]) {
        return names[type];
    }
    return "unknown command";
}

/* ---- strings ------------------------------------------------------------ */

NbdStr nbd_str(const char *s)
{
    size_t n = strlen(s);

    return (NbdStr){ .ptr = s, .len = n > UINT32_MAX ? UINT32_MAX
                                                     : (uint32_t)n };
}

bool nbd_str_eq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && (len == 0 || memcmp(s, lit, len) == 0);
}

/* True if len bytes at p are a valid protocol string: at most
 * NBD_MAX_STRING bytes and no NUL.  p may be NULL when len is 0 (memchr
 * must not see a NULL pointer even then). */
static bool wire_str_ok(const void *p, size_t len)
{
    return len <= NBD_MAX_STRING && (len == 0 || !memchr(p, 0, len));
}

static NbdStr wire_str(const uint8_t *p, size_t len)
{
    return (NbdStr){ .ptr = len ? (const char *)p : NULL,
                     .len = (uint32_t)len };
}

/* memcpy that accepts a NULL source for zero bytes. */
static void put_bytes(uint8_t *dst, const void *src, size_t len)
{
    if (len) {
        memcpy(dst, src, len);
    }
}

/* Whether a variable-size encoder may write its size bytes: only into a
 * buffer that holds the whole message (snprintf-like sizing). */
static bool enc_fits(const uint8_t *buf, size_t cap, size_t size)
{
    return buf && size <= cap;
}

/* ---- handshake ---------------------------------------------------------- */

size_t nbd_encode_server_greeting(uint8_t *buf, uint16_t hflags)
{
    put_be64(buf, NBD_INIT_MAGIC);
    put_be64(buf + 8, NBD_OPTS_MAGIC);
    put_be16(buf + 16, hflags);
    return NBD_GREETING_SIZE;
}

bool nbd_decode_server_greeting(const uint8_t *buf, size_t len,
                                uint16_t *hflags)
{
    if (len < NBD_GREETING_SIZE || get_be64(buf) != NBD_INIT_MAGIC ||
        get_be64(buf + 8) != NBD_OPTS_MAGIC) {
        return false;
    }
    *hflags = get_be16(buf + 16);
    return true;
}

void nbd_encode_greeting(uint8_t buf[NBD_GREETING_SIZE])
{
    nbd_encode_server_greeting(buf, NBD_FLAG_FIXED_NEWSTYLE |
                                    NBD_FLAG_NO_ZEROES);
}

size_t nbd_encode_client_flags(uint8_t *buf, uint32_t flags)
{
    put_be32(buf, flags);
    return NBD_CLIENT_FLAGS_SIZE;
}

bool nbd_decode_client_flags(const uint8_t *buf, size_t len,
                             uint32_t *flags)
{
    if (len < NBD_CLIENT_FLAGS_SIZE) {
        return false;
    }
    *flags = get_be32(buf);
    return !(*flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
                                  NBD_FLAG_C_NO_ZEROES));
}

/* ---- option requests ---------------------------------------------------- */

size_t nbd_encode_opt_hdr(uint8_t *buf, uint32_t opt, uint32_t len)
{
    put_be64(buf, NBD_OPTS_MAGIC);
    put_be32(buf + 8, opt);
    put_be32(buf + 12, len);
    return NBD_OPT_HDR_SIZE;
}

bool nbd_decode_opt_hdr(const uint8_t *buf, size_t len, NbdOptHdr *out)
{
    if (len < NBD_OPT_HDR_SIZE || get_be64(buf) != NBD_OPTS_MAGIC) {
        return false;
    }
    out->opt = get_be32(buf + 8);
    out->len = get_be32(buf + 12);
    return true;
}

static bool opt_fail(NbdOptError *err, uint32_t rep, const char *msg)
{
    err->rep = rep;
    err->msg = msg;
    return false;
}

/* Copy a wire string into a NUL-terminated buffer of NBD_MAX_STRING + 1
 * bytes, refusing over-long strings and embedded NULs.  An empty string
 * may come with s == NULL (an option without data has no buffer). */
static bool copy_name(const uint8_t *s, size_t len, char *out,
                      NbdOptError *err)
{
    if (len > NBD_MAX_STRING) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name is longer than 4096 bytes");
    }
    if (!wire_str_ok(s, len)) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name contains a NUL byte");
    }
    put_bytes((uint8_t *)out, s, len);
    out[len] = '\0';
    return true;
}

ssize_t nbd_encode_opt_export_name(uint8_t *buf, size_t cap,
                                   const char *name)
{
    size_t n = strlen(name);

    if (n > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, n)) {
        put_bytes(buf, name, n);
    }
    return (ssize_t)n;
}

bool nbd_parse_opt_export_name(const uint8_t *buf, size_t len,
                               char name[NBD_MAX_STRING + 1],
                               NbdOptError *err)
{
    return copy_name(buf, len, name, err);
}

ssize_t nbd_encode_opt_info(uint8_t *buf, size_t cap, const NbdOptInfo *in)
{
    uint16_t items[3];
    uint16_t n = 0;
    size_t namelen = strnlen(in->name, sizeof(in->name));
    size_t size;

    if (namelen > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (in->want_name) {
        items[n++] = NBD_INFO_NAME;
    }
    if (in->want_description) {
        items[n++] = NBD_INFO_DESCRIPTION;
    }
    if (in->want_block_size) {
        items[n++] = NBD_INFO_BLOCK_SIZE;
    }
    size = 4 + namelen + 2 + 2 * (size_t)n;
    if (enc_fits(buf, cap, size)) {
        put_be32(buf, (uint32_t)namelen);
        put_bytes(buf + 4, in->name, namelen);
        put_be16(buf + 4 + namelen, n);
        for (uint16_t i = 0; i < n; i++) {
            put_be16(buf + 4 + namelen + 2 + 2 * i, items[i]);
        }
    }
    return (ssize_t)size;
}

bool nbd_parse_opt_info(const uint8_t *buf, size_t len, NbdOptInfo *out,
                        NbdOptError *err)
{
    uint32_t namelen;
    size_t pos;

    memset(out, 0, sizeof(*out));
    if (len < 6) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "option is too short for a name length and an "
                        "information request count");
    }
    namelen = get_be32(buf);
    if (namelen > len - 6) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name length exceeds the option length");
    }
    if (!copy_name(buf + 4, namelen, out->name, err)) {
        return false;
    }
    pos = 4 + (size_t)namelen;
    out->ninfos = get_be16(buf + pos);
    pos += 2;
    if (len - pos != (size_t)out->ninfos * 2) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "information request count does not match the "
                        "option length");
    }
    for (uint16_t i = 0; i < out->ninfos; i++, pos += 2) {
        switch (get_be16(buf + pos)) {
        case NBD_INFO_NAME:
            out->want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            out->want_description = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            out->want_block_size = true;
            break;
        default:
            /* NBD_INFO_EXPORT is always sent; unknown items are
             * ignored as the spec asks. */
            break;
        }
    }
    return true;
}

ssize_t nbd_encode_opt_meta(uint8_t *buf, size_t cap, const char *name,
                            const char *const *queries, uint32_t nqueries)
{
    size_t namelen = strlen(name);
    size_t size = 4 + namelen + 4;
    size_t pos;

    if (namelen > NBD_MAX_STRING) {
        return -EINVAL;
    }
    for (uint32_t i = 0; i < nqueries; i++) {
        size_t ql = strlen(queries[i]);

        if (ql > NBD_MAX_STRING) {
            return -EINVAL;
        }
        size += 4 + ql;
    }
    if (!enc_fits(buf, cap, size)) {
        return (ssize_t)size;
    }
    put_be32(buf, (uint32_t)namelen);
    put_bytes(buf + 4, name, namelen);
    pos = 4 + namelen;
    put_be32(buf + pos, nqueries);
    pos += 4;
    for (uint32_t i = 0; i < nqueries; i++) {
        size_t ql = strlen(queries[i]);

        put_be32(buf + pos, (uint32_t)ql);
        put_bytes(buf + pos + 4, queries[i], ql);
        pos += 4 + ql;
    }
    return (ssize_t)size;
}

bool nbd_parse_opt_meta(const uint8_t *buf, size_t len, NbdOptMeta *out,
                        NbdOptError *err)
{
    uint32_t namelen;
    size_t pos;

    memset(out, 0, sizeof(*out));
    if (len < 8) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "option is too short for a name length and a "
                        "query count");
    }
    namelen = get_be32(buf);
    if (namelen > len - 8) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name length exceeds the option length");
    }
    if (!copy_name(buf + 4, namelen, out->name, err)) {
        return false;
    }
    pos = 4 + (size_t)namelen;
    out->nqueries = get_be32(buf + pos);
    pos += 4;
    out->queries_off = pos;
    /* Each query needs at least its 4-byte length: reject absurd counts
     * before walking. */
    if (out->nqueries > (len - pos) / 4) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "query count exceeds the option length");
    }
    for (uint32_t i = 0; i < out->nqueries; i++) {
        uint32_t qlen;

        if (len - pos < 4) {
            return opt_fail(err, NBD_REP_ERR_INVALID,
                            "query length is truncated");
        }
        qlen = get_be32(buf + pos);
        pos += 4;
        if (qlen > len - pos) {
            return opt_fail(err, NBD_REP_ERR_INVALID,
                            "query length exceeds the option length");
        }
        if (qlen && memchr(buf + pos, 0, qlen)) {
            return opt_fail(err, NBD_REP_ERR_INVALID,
                            "query contains a NUL byte");
        }
        pos += qlen;
    }
    if (pos != len) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "trailing bytes after the last query");
    }
    return true;
}

void nbd_meta_next_query(const uint8_t *buf, size_t *pos, const char **q,
                         uint32_t *qlen)
{
    *qlen = get_be32(buf + *pos);
    *q = (const char *)buf + *pos + 4;
    *pos += 4 + (size_t)*qlen;
}

bool nbd_parse_opt_empty(uint32_t opt, size_t len, NbdOptError *err)
{
    if (len && opt != NBD_OPT_ABORT) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "option must not carry data");
    }
    return true;
}

/* ---- option replies ----------------------------------------------------- */

size_t nbd_encode_opt_reply_hdr(uint8_t *buf, uint32_t opt, uint32_t type,
                                uint32_t len)
{
    put_be64(buf, NBD_REP_MAGIC);
    put_be32(buf + 8, opt);
    put_be32(buf + 12, type);
    put_be32(buf + 16, len);
    return NBD_OPT_REPLY_HDR_SIZE;
}

bool nbd_decode_opt_reply_hdr(const uint8_t *buf, size_t len,
                              NbdOptReplyHdr *out)
{
    if (len < NBD_OPT_REPLY_HDR_SIZE || get_be64(buf) != NBD_REP_MAGIC) {
        return false;
    }
    out->opt = get_be32(buf + 8);
    out->type = get_be32(buf + 12);
    out->len = get_be32(buf + 16);
    if (out->len > NBD_MAX_OPTION_LEN) {
        return false;
    }
    return out->type != NBD_REP_ACK || out->len == 0;
}

ssize_t nbd_encode_rep_server(uint8_t *buf, size_t cap,
                              const NbdRepServer *in)
{
    size_t size = 4 + (size_t)in->name.len + in->desc.len;

    if (in->name.len > NBD_MAX_STRING || in->desc.len > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, size)) {
        put_be32(buf, in->name.len);
        put_bytes(buf + 4, in->name.ptr, in->name.len);
        put_bytes(buf + 4 + in->name.len, in->desc.ptr, in->desc.len);
    }
    return (ssize_t)size;
}

bool nbd_decode_rep_server(const uint8_t *buf, size_t len,
                           NbdRepServer *out)
{
    uint32_t namelen;
    size_t desclen;

    if (len < 4) {
        return false;
    }
    namelen = get_be32(buf);
    if (namelen > len - 4) {
        return false;
    }
    desclen = len - 4 - namelen;
    if (!wire_str_ok(buf + 4, namelen) ||
        !wire_str_ok(buf + 4 + namelen, desclen)) {
        return false;
    }
    out->name = wire_str(buf + 4, namelen);
    out->desc = wire_str(buf + 4 + namelen, desclen);
    return true;
}

ssize_t nbd_encode_rep_info(uint8_t *buf, size_t cap, const NbdRepInfo *in)
{
    size_t size;

    switch (in->type) {
    case NBD_INFO_EXPORT:
        size = 12;
        break;
    case NBD_INFO_BLOCK_SIZE:
        size = 14;
        break;
    case NBD_INFO_NAME:
    case NBD_INFO_DESCRIPTION:
        if (in->str.len > NBD_MAX_STRING) {
            return -EINVAL;
        }
        /* fall through */
    default:
        if (in->str.len > NBD_MAX_OPTION_LEN - 2) {
            return -EINVAL;
        }
        size = 2 + (size_t)in->str.len;
        break;
    }
    if (!enc_fits(buf, cap, size)) {
        return (ssize_t)size;
    }
    put_be16(buf, in->type);
    switch (in->type) {
    case NBD_INFO_EXPORT:
        put_be64(buf + 2, in->size);
        put_be16(buf + 10, in->tflags);
        break;
    case NBD_INFO_BLOCK_SIZE:
        put_be32(buf + 2, in->min_block);
        put_be32(buf + 6, in->pref_block);
        put_be32(buf + 10, in->max_payload);
        break;
    default:
        put_bytes(buf + 2, in->str.ptr, in->str.len);
        break;
    }
    return (ssize_t)size;
}

bool nbd_decode_rep_info(const uint8_t *buf, size_t len, NbdRepInfo *out)
{
    memset(out, 0, sizeof(*out));
    if (len < 2) {
        return false;
    }
    out->type = get_be16(buf);
    switch (out->type) {
    case NBD_INFO_EXPORT:
        if (len != 12) {
            return false;
        }
        out->size = get_be64(buf + 2);
        out->tflags = get_be16(buf + 10);
        return true;
    case NBD_INFO_BLOCK_SIZE:
        if (len != 14) {
            return false;
        }
        out->min_block = get_be32(buf + 2);
        out->pref_block = get_be32(buf + 6);
        out->max_payload = get_be32(buf + 10);
        return true;
    case NBD_INFO_NAME:
    case NBD_INFO_DESCRIPTION:
        if (!wire_str_ok(buf + 2, len - 2)) {
            return false;
        }
        break;
    default:
        /* Kept raw, as long as the encoder would write it back. */
        if (len > NBD_MAX_OPTION_LEN) {
            return false;
        }
        break;
    }
    out->str = wire_str(buf + 2, len - 2);
    return true;
}

ssize_t nbd_encode_rep_meta(uint8_t *buf, size_t cap, const NbdRepMeta *in)
{
    size_t size = 4 + (size_t)in->name.len;

    if (in->name.len == 0 || in->name.len > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, size)) {
        put_be32(buf, in->id);
        put_bytes(buf + 4, in->name.ptr, in->name.len);
    }
    return (ssize_t)size;
}

bool nbd_decode_rep_meta(const uint8_t *buf, size_t len, NbdRepMeta *out)
{
    if (len < 5 || !wire_str_ok(buf + 4, len - 4)) {
        return false;
    }
    out->id = get_be32(buf);
    out->name = wire_str(buf + 4, len - 4);
    return true;
}

ssize_t nbd_encode_rep_error(uint8_t *buf, size_t cap, NbdStr msg)
{
    if (msg.len > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, msg.len)) {
        put_bytes(buf, msg.ptr, msg.len);
    }
    return (ssize_t)msg.len;
}

bool nbd_decode_rep_error(const uint8_t *buf, size_t len, NbdStr *msg)
{
    if (!wire_str_ok(buf, len)) {
        return false;
    }
    *msg = wire_str(buf, len);
    return true;
}

size_t nbd_encode_export_name_reply(uint8_t *buf, bool no_zeroes,
                                    const NbdExportNameReply *in)
{
    put_be64(buf, in->size);
    put_be16(buf + 8, in->tflags);
    if (no_zeroes) {
        return NBD_EXPORT_NAME_REPLY_SHORT;
    }
    memset(buf + NBD_EXPORT_NAME_REPLY_SHORT, 0,
           NBD_EXPORT_NAME_REPLY_SIZE - NBD_EXPORT_NAME_REPLY_SHORT);
    return NBD_EXPORT_NAME_REPLY_SIZE;
}

bool nbd_decode_export_name_reply(const uint8_t *buf, size_t len,
                                  bool no_zeroes, NbdExportNameReply *out)
{
    size_t need = no_zeroes ? NBD_EXPORT_NAME_REPLY_SHORT
                            : NBD_EXPORT_NAME_REPLY_SIZE;

    if (len < need) {
        return false;
    }
    for (size_t i = NBD_EXPORT_NAME_REPLY_SHORT; i < need; i++) {
        if (buf[i]) {
            return false;
        }
    }
    out->size = get_be64(buf);
    out->tflags = get_be16(buf + 8);
    return true;
}

/* ---- requests ----------------------------------------------------------- */

bool nbd_decode_request(const uint8_t *buf, bool extended, NbdRequest *req)
{
    uint32_t magic = get_be32(buf);

    if (magic != (extended ? NBD_EXTENDED_REQUEST_MAGIC
                           : NBD_REQUEST_MAGIC)) {
        return false;
    }
    req->flags = get_be16(buf + 4);
    req->type = get_be16(buf + 6);
    req->cookie = get_be64(buf + 8);
    req->offset = get_be64(buf + 16);
    req->length = extended ? get_be64(buf + 24) : get_be32(buf + 24);
    return true;
}

bool nbd_decode_request_len(const uint8_t *buf, size_t len, bool extended,
                            NbdRequest *req)
{
    return len >= (extended ? NBD_EXT_REQ_SIZE : NBD_REQ_SIZE) &&
           nbd_decode_request(buf, extended, req);
}

size_t nbd_encode_request(uint8_t *buf, bool extended, const NbdRequest *req)
{
    put_be32(buf, extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
    put_be16(buf + 4, req->flags);
    put_be16(buf + 6, req->type);
    put_be64(buf + 8, req->cookie);
    put_be64(buf + 16, req->offset);
    if (extended) {
        put_be64(buf + 24, req->length);
        return NBD_EXT_REQ_SIZE;
    }
    put_be32(buf + 24, (uint32_t)req->length);
    return NBD_REQ_SIZE;
}

ssize_t nbd_encode_bs_payload(uint8_t *buf, size_t cap, uint64_t effect_len,
                              const uint32_t *ids, uint32_t n)
{
    size_t size = 8 + 4 * (size_t)n;

    if (n == 0) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, size)) {
        put_be64(buf, effect_len);
        for (uint32_t i = 0; i < n; i++) {
            put_be32(buf + 8 + 4 * (size_t)i, ids[i]);
        }
    }
    return (ssize_t)size;
}

bool nbd_decode_bs_payload(const uint8_t *buf, size_t len,
                           uint64_t *effect_len, uint32_t *n)
{
    if (len < 12 || (len - 8) % 4 != 0 || (len - 8) / 4 > UINT32_MAX) {
        return false;
    }
    *effect_len = get_be64(buf);
    *n = (uint32_t)((len - 8) / 4);
    return true;
}

uint32_t nbd_bs_payload_id(const uint8_t *buf, uint32_t i)
{
    return get_be32(buf + 8 + 4 * (size_t)i);
}

/* ---- transmission replies ----------------------------------------------- */

size_t nbd_reply_hdr_size(const uint8_t *buf, size_t len)
{
    if (len < 4) {
        return 0;
    }
    switch (get_be32(buf)) {
    case NBD_SIMPLE_REPLY_MAGIC:
        return NBD_SIMPLE_REPLY_SIZE;
    case NBD_STRUCTURED_REPLY_MAGIC:
        return NBD_CHUNK_HDR_SIZE;
    case NBD_EXTENDED_REPLY_MAGIC:
        return NBD_EXT_CHUNK_HDR_SIZE;
    default:
        return 0;
    }
}

size_t nbd_encode_simple_reply(uint8_t *buf, uint32_t error, uint64_t cookie)
{
    put_be32(buf, NBD_SIMPLE_REPLY_MAGIC);
    put_be32(buf + 4, error);
    put_be64(buf + 8, cookie);
    return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_encode_chunk_hdr(uint8_t *buf, bool extended, uint16_t flags,
                            uint16_t type, uint64_t cookie, uint64_t offset,
                            uint64_t len)
{
    put_be32(buf, extended ? NBD_EXTENDED_REPLY_MAGIC
                           : NBD_STRUCTURED_REPLY_MAGIC);
    put_be16(buf + 4, flags);
    put_be16(buf + 6, type);
    put_be64(buf + 8, cookie);
    if (extended) {
        put_be64(buf + 16, offset);
        put_be64(buf + 24, len);
        return NBD_EXT_CHUNK_HDR_SIZE;
    }
    put_be32(buf + 16, (uint32_t)len);
    return NBD_CHUNK_HDR_SIZE;
}

size_t nbd_encode_reply_hdr(uint8_t *buf, const NbdReplyHdr *in)
{
    switch (in->magic) {
    case NBD_SIMPLE_REPLY_MAGIC:
        return nbd_encode_simple_reply(buf, in->error, in->cookie);
    case NBD_STRUCTURED_REPLY_MAGIC:
    case NBD_EXTENDED_REPLY_MAGIC:
        return nbd_encode_chunk_hdr(buf,
                                    in->magic == NBD_EXTENDED_REPLY_MAGIC,
                                    in->flags, in->type, in->cookie,
                                    in->offset, in->length);
    default:
        return 0;
    }
}

bool nbd_decode_reply_hdr(const uint8_t *buf, size_t len, bool structured,
                          bool extended, NbdReplyHdr *out)
{
    size_t size = nbd_reply_hdr_size(buf, len);

    memset(out, 0, sizeof(*out));
    if (size == 0 || len < size) {
        return false;
    }
    out->magic = get_be32(buf);
    out->cookie = get_be64(buf + 8);
    switch (out->magic) {
    case NBD_SIMPLE_REPLY_MAGIC:
        /* Extended headers forbid simple replies entirely. */
        out->error = get_be32(buf + 4);
        return !extended;
    case NBD_STRUCTURED_REPLY_MAGIC:
        if (extended || !structured) {
            return false;
        }
        out->length = get_be32(buf + 16);
        break;
    default:
        if (!extended) {
            return false;
        }
        out->offset = get_be64(buf + 16);
        out->length = get_be64(buf + 24);
        break;
    }
    out->flags = get_be16(buf + 4);
    out->type = get_be16(buf + 6);
    if (out->type == NBD_REPLY_TYPE_NONE &&
        (out->length != 0 || !(out->flags & NBD_REPLY_FLAG_DONE))) {
        return false;
    }
    return true;
}

/* ---- chunk payloads ----------------------------------------------------- */

size_t nbd_encode_offset_data_hdr(uint8_t *buf, uint64_t offset)
{
    put_be64(buf, offset);
    return NBD_OFFSET_DATA_HDR_SIZE;
}

bool nbd_decode_offset_data_hdr(const uint8_t *buf, size_t len,
                                uint64_t chunk_len, uint64_t *offset,
                                uint64_t *data_len)
{
    if (len < NBD_OFFSET_DATA_HDR_SIZE ||
        chunk_len <= NBD_OFFSET_DATA_HDR_SIZE) {
        return false;
    }
    *offset = get_be64(buf);
    *data_len = chunk_len - NBD_OFFSET_DATA_HDR_SIZE;
    return true;
}

size_t nbd_encode_offset_hole(uint8_t *buf, const NbdChunkHole *in)
{
    put_be64(buf, in->offset);
    put_be32(buf + 8, in->length);
    return NBD_OFFSET_HOLE_SIZE;
}

bool nbd_decode_offset_hole(const uint8_t *buf, size_t len,
                            NbdChunkHole *out)
{
    if (len != NBD_OFFSET_HOLE_SIZE) {
        return false;
    }
    out->offset = get_be64(buf);
    out->length = get_be32(buf + 8);
    return out->length != 0;
}

/* Block status layout: a prefix (context id, plus the count in the
 * extended form) and fixed-size descriptors. */
static size_t bs_prefix(bool extended)
{
    return extended ? 8 : 4;
}

static size_t bs_desc(bool extended)
{
    return extended ? 16 : 8;
}

size_t nbd_block_status_size(bool extended, uint32_t count)
{
    return bs_prefix(extended) + (size_t)count * bs_desc(extended);
}

size_t nbd_encode_block_status_hdr(uint8_t *buf, bool extended,
                                   uint32_t context_id, uint32_t count)
{
    put_be32(buf, context_id);
    if (extended) {
        put_be32(buf + 4, count);
    }
    return bs_prefix(extended);
}

size_t nbd_encode_extent(uint8_t *buf, bool extended, const NbdExtent *e)
{
    if (extended) {
        put_be64(buf, e->length);
        put_be64(buf + 8, e->flags);
    } else {
        put_be32(buf, (uint32_t)e->length);
        put_be32(buf + 4, (uint32_t)e->flags);
    }
    return bs_desc(extended);
}

ssize_t nbd_encode_block_status(uint8_t *buf, size_t cap, bool extended,
                                uint32_t context_id, const NbdExtent *ext,
                                uint32_t n)
{
    size_t size = nbd_block_status_size(extended, n);
    size_t pos;

    if (n == 0 || size > SSIZE_MAX) {
        return -EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (ext[i].length == 0 ||
            (!extended && (ext[i].length > UINT32_MAX ||
                           ext[i].flags > UINT32_MAX))) {
            return -EINVAL;
        }
    }
    if (!enc_fits(buf, cap, size)) {
        return (ssize_t)size;
    }
    pos = nbd_encode_block_status_hdr(buf, extended, context_id, n);
    for (uint32_t i = 0; i < n; i++) {
        pos += nbd_encode_extent(buf + pos, extended, &ext[i]);
    }
    return (ssize_t)size;
}

bool nbd_decode_block_status(const uint8_t *buf, size_t len, bool extended,
                             NbdBlockStatus *out)
{
    size_t prefix = bs_prefix(extended);
    size_t desc = bs_desc(extended);
    size_t n;

    if (len < prefix + desc || (len - prefix) % desc != 0) {
        return false;
    }
    n = (len - prefix) / desc;
    if (n > UINT32_MAX) {
        return false;
    }
    out->context_id = get_be32(buf);
    out->count = (uint32_t)n;
    if (extended && get_be32(buf + 4) != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d = buf + prefix + i * desc;

        if ((extended ? get_be64(d) : get_be32(d)) == 0) {
            return false;
        }
    }
    return true;
}

void nbd_block_status_extent(const uint8_t *buf, bool extended, uint32_t i,
                             NbdExtent *e)
{
    const uint8_t *d = buf + bs_prefix(extended) + (size_t)i *
                       bs_desc(extended);

    if (extended) {
        e->length = get_be64(d);
        e->flags = get_be64(d + 8);
    } else {
        e->length = get_be32(d);
        e->flags = get_be32(d + 4);
    }
}

ssize_t nbd_encode_chunk_error(uint8_t *buf, size_t cap, uint16_t type,
                               const NbdChunkError *in)
{
    bool with_offset = type == NBD_REPLY_TYPE_ERROR_OFFSET;
    size_t size = 6 + (size_t)in->msg.len + (with_offset ? 8 : 0);

    if (!NBD_REPLY_TYPE_IS_ERR(type) || in->error == 0 ||
        in->msg.len > NBD_MAX_STRING) {
        return -EINVAL;
    }
    if (enc_fits(buf, cap, size)) {
        put_be32(buf, in->error);
        put_be16(buf + 4, (uint16_t)in->msg.len);
        put_bytes(buf + 6, in->msg.ptr, in->msg.len);
        if (with_offset) {
            put_be64(buf + 6 + in->msg.len, in->offset);
        }
    }
    return (ssize_t)size;
}

bool nbd_decode_chunk_error(const uint8_t *buf, size_t len, uint16_t type,
                            NbdChunkError *out)
{
    uint16_t msglen;
    size_t need;

    memset(out, 0, sizeof(*out));
    if (!NBD_REPLY_TYPE_IS_ERR(type) || len < 6) {
        return false;
    }
    out->error = get_be32(buf);
    msglen = get_be16(buf + 4);
    need = 6 + (size_t)msglen;
    if (type == NBD_REPLY_TYPE_ERROR_OFFSET) {
        need += 8;
    }
    /* ERROR and ERROR_OFFSET have an exact layout; other error types
     * may carry more after the message. */
    if (out->error == 0 || len < need ||
        (len != need && (type == NBD_REPLY_TYPE_ERROR ||
                         type == NBD_REPLY_TYPE_ERROR_OFFSET)) ||
        !wire_str_ok(buf + 6, msglen)) {
        return false;
    }
    out->msg = wire_str(buf + 6, msglen);
    if (type == NBD_REPLY_TYPE_ERROR_OFFSET) {
        out->offset = get_be64(buf + 6 + msglen);
    }
    return true;
}

/* ---- request validation ------------------------------------------------- */

uint32_t nbd_check_request(const NbdRequest *req, const NbdReqLimits *lim,
                           uint64_t *payload, const char **why)
{
    uint16_t allowed = NBD_CMD_FLAG_FUA;
    bool is_write = false;

    if (lim->extended) {
        allowed |= NBD_CMD_FLAG_PAYLOAD_LEN;
        *payload = (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) ? req->length : 0;
    } else {
        *payload = req->type == NBD_CMD_WRITE ? req->length : 0;
    }

    switch (req->type) {
    case NBD_CMD_READ:
        if (lim->structured) {
            allowed |= NBD_CMD_FLAG_DF;
        }
        break;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
        is_write = true;
        break;
    case NBD_CMD_WRITE_ZEROES:
        is_write = true;
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        break;
    case NBD_CMD_DISC:
    case NBD_CMD_FLUSH:
    case NBD_CMD_CACHE:
        break;
    default:
        *why = "unknown command";
        return NBD_EINVAL;
    }

    if (req->flags & ~allowed) {
        *why = "unsupported flag for this command";
        return NBD_EINVAL;
    }
    if (req->type == NBD_CMD_DISC) {
        return 0;
    }
    if (req->type == NBD_CMD_WRITE) {
        if (lim->extended && !(req->flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
            *why = "write without NBD_CMD_FLAG_PAYLOAD_LEN";
            return NBD_EINVAL;
        }
    } else if (*payload) {
        *why = "unexpected payload";
        return NBD_EINVAL;
    }
    if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE ||
         req->type == NBD_CMD_CACHE) && req->length > lim->max_payload) {
        *why = "request length exceeds the maximum payload";
        return NBD_EINVAL;
    }
    if (is_write && lim->read_only) {
        *why = "export is read-only";
        return NBD_EPERM;
    }
    if (req->type == NBD_CMD_FLUSH) {
        return 0;
    }
    if (req->type == NBD_CMD_BLOCK_STATUS) {
        if (!lim->have_contexts) {
            *why = "no meta context was negotiated";
            return NBD_EINVAL;
        }
        if (req->length == 0) {
            *why = "block status needs a non-zero length";
            return NBD_EINVAL;
        }
    }
    if (req->offset > lim->size || req->length > lim->size - req->offset) {
        *why = "request is past the end of the export";
        return (req->type == NBD_CMD_WRITE ||
                req->type == NBD_CMD_WRITE_ZEROES) ? NBD_ENOSPC : NBD_EINVAL;
    }
    return 0;
}
