/* proto.c - NBD wire encoding, decoding and option parsers (pure). */
#include <errno.h>
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

void nbd_encode_greeting(uint8_t buf[NBD_GREETING_SIZE])
{
    put_be64(buf, NBD_INIT_MAGIC);
    put_be64(buf + 8, NBD_OPTS_MAGIC);
    put_be16(buf + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

size_t nbd_encode_opt_reply_hdr(uint8_t *buf, uint32_t opt, uint32_t type,
                                uint32_t len)
{
    put_be64(buf, NBD_REP_MAGIC);
    put_be32(buf + 8, opt);
    put_be32(buf + 12, type);
    put_be32(buf + 16, len);
    return NBD_OPT_REPLY_HDR_SIZE;
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

static bool opt_fail(NbdOptError *err, uint32_t rep, const char *msg)
{
    err->rep = rep;
    err->msg = msg;
    return false;
}

/* Copy a wire string into a NUL-terminated buffer of NBD_MAX_STRING + 1
 * bytes, refusing over-long strings and embedded NULs.  An empty string
 * may come with s == NULL (an option without data has no buffer), and
 * memchr/memcpy must not see a NULL pointer even for zero bytes. */
static bool copy_name(const uint8_t *s, size_t len, char *out,
                      NbdOptError *err)
{
    if (len > NBD_MAX_STRING) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name is longer than 4096 bytes");
    }
    if (len && memchr(s, 0, len)) {
        return opt_fail(err, NBD_REP_ERR_INVALID,
                        "export name contains a NUL byte");
    }
    if (len) {
        memcpy(out, s, len);
    }
    out[len] = '\0';
    return true;
}

bool nbd_parse_opt_export_name(const uint8_t *buf, size_t len,
                               char name[NBD_MAX_STRING + 1],
                               NbdOptError *err)
{
    return copy_name(buf, len, name, err);
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
        if (memchr(buf + pos, 0, qlen)) {
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

bool nbd_str_eq(const char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

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
