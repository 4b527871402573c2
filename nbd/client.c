/* client.c - the client end of the NBD handshake, and list mode; see
 * client.h.
 *
 * One handshake is a straight line of blocking steps on one transport:
 *
 *   greeting ──> client flags ──> [STARTTLS] ──> [EXTENDED_HEADERS
 *   (refused: STRUCTURED_REPLY)] ──> [SET_META_CONTEXT] ──> GO
 *   (NBD_REP_ERR_UNSUP: EXPORT_NAME) ──> transmission
 *
 * and list mode is the same start followed by LIST, then INFO and
 * LIST_META_CONTEXT per export, then ABORT.  Every option reply goes
 * through nbdc_recv_reply(), which checks the magic, the option it
 * answers and its length before reading a byte of payload into a
 * buffer of NBD_MAX_OPTION_LEN; the payload is then decoded by
 * nbd/proto.c.  Error messages name what the server sent.
 */
#include "nbd/client.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/proto.h"
#include "util/cleanup.h"
#include "util/util.h"

/* The second magic of an oldstyle server (no options at all). */
#define NBD_OLDSTYLE_MAGIC 0x00420281861253ULL

/* ---- the plain transport ---------------------------------------------- */

/* Wait until fd is ready for events, up to timeout_ms; 0 or -errno. */
static int plain_wait(int fd, short events, int timeout_ms)
{
    struct pollfd pfd = { .fd = fd, .events = events };
    int rc;

    do {
        rc = poll(&pfd, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        return -errno;
    }
    return rc == 0 ? -ETIMEDOUT : 0;
}

static int plain_read_full(NbdClientXport *xp, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n;
        int rc = plain_wait(xp->fd, POLLIN, xp->timeout_ms);

        if (rc < 0) {
            return rc;
        }
        n = read(xp->fd, p, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int plain_writev_full(NbdClientXport *xp, const struct iovec *iov,
                             int iovcnt)
{
    struct iovec local[16];
    struct iovec *v = local;
    CLEANUP_FREE struct iovec *heap = NULL;
    int n = iovcnt;

    if (iovcnt > (int)ARRAY_SIZE(local)) {
        v = heap = xcalloc((size_t)iovcnt, sizeof(*v));
    }
    memcpy(v, iov, (size_t)iovcnt * sizeof(*v));
    while (n > 0) {
        struct msghdr msg = { .msg_iov = v, .msg_iovlen = (size_t)n };
        ssize_t done;
        int rc = plain_wait(xp->fd, POLLOUT, xp->timeout_ms);

        if (rc < 0) {
            return rc;
        }
        /* sendmsg for MSG_NOSIGNAL: a server that hung up must not kill
         * us with SIGPIPE.  writev for an fd that is not a socket. */
        done = sendmsg(xp->fd, &msg, MSG_NOSIGNAL);
        if (done < 0 && errno == ENOTSOCK) {
            done = writev(xp->fd, v, n);
        }
        if (done < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return -errno;
        }
        while (n > 0 && (size_t)done >= v->iov_len) {
            done -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + done;
            v->iov_len -= (size_t)done;
        }
    }
    return 0;
}

static void plain_close(NbdClientXport *xp)
{
    if (xp->fd >= 0) {
        close(xp->fd);
        xp->fd = -1;
    }
}

static const NbdClientXportOps plain_ops = {
    .read_full = plain_read_full,
    .writev_full = plain_writev_full,
    .close = plain_close,
};

void nbd_client_xport_init_plain(NbdClientXport *xp, int fd, int timeout_ms)
{
    *xp = (NbdClientXport){
        .ops = &plain_ops, .fd = fd, .timeout_ms = timeout_ms,
    };
}

/* ---- results ---------------------------------------------------------- */

void nbd_export_info_clear(NbdExportInfo *info)
{
    free(info->name);
    free(info->description);
    for (size_t i = 0; i < info->n_contexts; i++) {
        free(info->contexts[i].name);
    }
    free(info->contexts);
    memset(info, 0, sizeof(*info));
}

void nbd_export_list_clear(NbdExportList *l)
{
    for (size_t i = 0; i < l->n; i++) {
        nbd_export_info_clear(&l->exports[i]);
    }
    free(l->exports);
    l->exports = NULL;
    l->n = 0;
}

/* ---- one handshake's state -------------------------------------------- */

typedef struct Nbdc {
    NbdClientXport *xp;
    uint8_t *buf;           /* NBD_MAX_OPTION_LEN: one reply's payload */
    bool no_zeroes;         /* NBD_FLAG_C_NO_ZEROES sent */
    bool options;           /* in the option phase: ABORT is possible */
    bool broken;            /* the stream failed: send nothing more */
} Nbdc;

/* One option reply: its header and payload (in c->buf). */
typedef struct NbdcReply {
    NbdOptReplyHdr h;
    const uint8_t *data;
} NbdcReply;

static bool nbdc_read(Nbdc *c, void *buf, size_t len, const char *what,
                      Error **errp)
{
    int rc = c->xp->ops->read_full(c->xp, buf, len);

    if (rc == 0) {
        return true;
    }
    c->broken = true;
    if (rc == -ETIMEDOUT) {
        error_setg(errp, "Timed out reading %s from the server", what);
    } else if (rc == -ECONNRESET) {
        error_setg(errp, "Server closed the connection while the client "
                   "waited for %s", what);
    } else {
        error_setg_errno(errp, -rc, "Failed to read %s", what);
    }
    return false;
}

static bool nbdc_write(Nbdc *c, const struct iovec *iov, int iovcnt,
                       const char *what, Error **errp)
{
    int rc = c->xp->ops->writev_full(c->xp, iov, iovcnt);

    if (rc == 0) {
        return true;
    }
    c->broken = true;
    if (rc == -ETIMEDOUT) {
        error_setg(errp, "Timed out sending %s to the server", what);
    } else {
        error_setg_errno(errp, -rc, "Failed to send %s", what);
    }
    return false;
}

/* Send option opt with len bytes of data. */
static bool nbdc_send_opt(Nbdc *c, uint32_t opt, const void *data,
                          size_t len, Error **errp)
{
    uint8_t hdr[NBD_OPT_HDR_SIZE];
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    nbd_encode_opt_hdr(hdr, opt, (uint32_t)len);
    return nbdc_write(c, iov, len ? 2 : 1, nbd_opt_name(opt), errp);
}

/* Courtesy NBD_OPT_ABORT before hanging up on a server in the option
 * phase (the spec lets the client close without waiting for the
 * ACK). */
static void nbdc_abort(Nbdc *c)
{
    if (c->options && !c->broken) {
        nbdc_send_opt(c, NBD_OPT_ABORT, NULL, 0, NULL);
    }
    c->options = false;
}

/* Read one reply to option opt: header checked (magic, option, length)
 * before its payload is read into c->buf. */
static bool nbdc_recv_reply(Nbdc *c, uint32_t opt, NbdcReply *r,
                            Error **errp)
{
    uint8_t hdr[NBD_OPT_REPLY_HDR_SIZE];
    char what[64];

    snprintf(what, sizeof(what), "the reply to %s", nbd_opt_name(opt));
    if (!nbdc_read(c, hdr, sizeof(hdr), what, errp)) {
        return false;
    }
    if (!nbd_decode_opt_reply_hdr(hdr, sizeof(hdr), &r->h)) {
        uint32_t type = get_be32(hdr + 12);
        uint32_t len = get_be32(hdr + 16);

        if (get_be64(hdr) != NBD_REP_MAGIC) {
            error_setg(errp, "Unexpected option reply magic 0x%016" PRIx64
                       " in the reply to %s", get_be64(hdr),
                       nbd_opt_name(opt));
        } else if (len > NBD_MAX_OPTION_LEN) {
            error_setg(errp, "Server's reply to %s is %" PRIu32 " bytes "
                       "long, more than the %u a reply may have",
                       nbd_opt_name(opt), len, NBD_MAX_OPTION_LEN);
        } else {
            error_setg(errp, "Server's NBD_REP_ACK to %s carries %" PRIu32
                       " bytes of data (type %" PRIu32 ")",
                       nbd_opt_name(opt), len, type);
        }
        c->broken = true;   /* the stream is out of step */
        return false;
    }
    if (r->h.opt != opt) {
        error_setg(errp, "Unexpected option type %" PRIu32 " (%s) in the "
                   "reply, expected %" PRIu32 " (%s)", r->h.opt,
                   nbd_opt_name(r->h.opt), opt, nbd_opt_name(opt));
        return false;
    }
    if (!nbdc_read(c, c->buf, r->h.len, what, errp)) {
        return false;
    }
    r->data = c->buf;
    return true;
}

/* Room for element n of an array of n elements of size elem, growing
 * it geometrically (8, 16, 32, ...): a server that lists thousands of
 * exports must not cost a copy of the whole array per entry. */
static void *nbdc_grow(void *p, size_t n, size_t elem)
{
    if (n == 0 || (n >= 8 && IS_POWER_OF_2(n))) {
        return xrealloc(p, (n ? 2 * n : 8) * elem);
    }
    return p;
}

static bool nbdc_is_err(const NbdcReply *r)
{
    return (r->h.type & 0x80000000U) != 0;
}

/* An error reply as an Error, with the server's message if it sent a
 * valid one. */
static void nbdc_reply_error(const NbdcReply *r, Error **errp)
{
    NbdStr msg = { 0 };
    CLEANUP_FREE char *m = NULL;
    uint32_t opt = r->h.opt;
    const char *name = nbd_opt_name(opt);

    if (nbd_decode_rep_error(r->data, r->h.len, &msg) && msg.len > 0) {
        m = xasprintf(" (server reported: %.*s)", (int)msg.len, msg.ptr);
    }
    switch (r->h.type) {
    case NBD_REP_ERR_UNSUP:
        error_setg(errp, "Server does not support %s%s", name, m ? m : "");
        break;
    case NBD_REP_ERR_POLICY:
        error_setg(errp, "Denied by server for option %" PRIu32 " (%s)%s",
                   opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_INVALID:
        error_setg(errp, "Invalid parameters for option %" PRIu32 " (%s)%s",
                   opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_PLATFORM:
        error_setg(errp, "Server lacks support for option %" PRIu32
                   " (%s)%s", opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_TLS_REQD:
        error_setg(errp, "TLS negotiation required before option %" PRIu32
                   " (%s)%s", opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_UNKNOWN:
        error_setg(errp, "Requested export not available%s", m ? m : "");
        break;
    case NBD_REP_ERR_SHUTDOWN:
        error_setg(errp, "Server shutting down before option %" PRIu32
                   " (%s)%s", opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
        error_setg(errp, "Server requires INFO_BLOCK_SIZE for option %"
                   PRIu32 " (%s)%s", opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_TOO_BIG:
        error_setg(errp, "Server says option %" PRIu32 " (%s) is too "
                   "big%s", opt, name, m ? m : "");
        break;
    case NBD_REP_ERR_EXT_HEADER_REQD:
        error_setg(errp, "Server requires extended headers for option %"
                   PRIu32 " (%s)%s", opt, name, m ? m : "");
        break;
    default:
        error_setg(errp, "Unknown error 0x%" PRIx32 " when asking for "
                   "option %" PRIu32 " (%s)%s", r->h.type, opt, name,
                   m ? m : "");
        break;
    }
}

static void nbdc_unexpected(const NbdcReply *r, Error **errp)
{
    error_setg(errp, "Unexpected reply type %" PRIu32 " to %s",
               r->h.type, nbd_opt_name(r->h.opt));
}

/* ---- the steps -------------------------------------------------------- */

static bool nbdc_greeting(Nbdc *c, Error **errp)
{
    uint8_t g[NBD_GREETING_SIZE];
    uint8_t flags[NBD_CLIENT_FLAGS_SIZE];
    struct iovec iov = { .iov_base = flags, .iov_len = sizeof(flags) };
    uint16_t hflags;
    uint32_t cflags = NBD_FLAG_C_FIXED_NEWSTYLE;

    /* Magic first: an oldstyle greeting is longer, and a server that is
     * not NBD at all should not leave us waiting for 18 bytes. */
    if (!nbdc_read(c, g, 16, "the server greeting", errp)) {
        return false;
    }
    if (get_be64(g) != NBD_INIT_MAGIC) {
        error_setg(errp, "Invalid magic received: not an NBD server "
                   "(0x%016" PRIx64 ")", get_be64(g));
        return false;
    }
    if (get_be64(g + 8) == NBD_OLDSTYLE_MAGIC) {
        error_setg(errp, "Server uses the oldstyle protocol, which is not "
                   "supported");
        return false;
    }
    if (get_be64(g + 8) != NBD_OPTS_MAGIC) {
        error_setg(errp, "Invalid second magic received: 0x%016" PRIx64,
                   get_be64(g + 8));
        return false;
    }
    if (!nbdc_read(c, g + 16, 2, "the server flags", errp)) {
        return false;
    }
    if (!nbd_decode_server_greeting(g, sizeof(g), &hflags)) {
        error_setg(errp, "Invalid greeting from the server");
        return false;
    }
    if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE)) {
        error_setg(errp, "Server does not support fixed newstyle "
                   "negotiation (flags 0x%x)", hflags);
        return false;
    }
    if (hflags & NBD_FLAG_NO_ZEROES) {
        cflags |= NBD_FLAG_C_NO_ZEROES;
        c->no_zeroes = true;
    }
    nbd_encode_client_flags(flags, cflags);
    if (!nbdc_write(c, &iov, 1, "the client flags", errp)) {
        return false;
    }
    c->options = true;
    return true;
}

static bool nbdc_starttls(Nbdc *c, const NbdClientOpts *o, Error **errp)
{
    NbdcReply r;

    if (!nbdc_send_opt(c, NBD_OPT_STARTTLS, NULL, 0, errp) ||
        !nbdc_recv_reply(c, NBD_OPT_STARTTLS, &r, errp)) {
        return false;
    }
    if (r.h.type != NBD_REP_ACK) {
        if (nbdc_is_err(&r)) {
            nbdc_reply_error(&r, errp);
            error_prepend(errp, "Server rejected request to start TLS: ");
        } else {
            nbdc_unexpected(&r, errp);
        }
        return false;
    }
    if (!o->starttls(c->xp, o->starttls_opaque, errp)) {
        c->broken = true;   /* half a TLS handshake: nothing more */
        return false;
    }
    return true;
}

/* An option without data answered by ACK: 1 acknowledged, 0 refused
 * (any error: the caller falls back), -1 failed. */
static int nbdc_opt_ack(Nbdc *c, uint32_t opt, Error **errp)
{
    NbdcReply r;

    if (!nbdc_send_opt(c, opt, NULL, 0, errp) ||
        !nbdc_recv_reply(c, opt, &r, errp)) {
        return -1;
    }
    if (r.h.type == NBD_REP_ACK) {
        return 1;
    }
    if (nbdc_is_err(&r)) {
        return 0;
    }
    nbdc_unexpected(&r, errp);
    return -1;
}

/* Whether a context the server selected is one we asked for: the same
 * name, or a name in a namespace we queried ("qemu:dirty-bitmap:"). */
static bool nbdc_context_asked(const NbdStr *name,
                               const char *const *queries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t ql = strlen(queries[i]);

        if (nbd_str_eq(name->ptr, name->len, queries[i])) {
            return true;
        }
        if (ql > 0 && queries[i][ql - 1] == ':' && name->len > ql &&
            memcmp(name->ptr, queries[i], ql) == 0) {
            return true;
        }
    }
    return false;
}

static bool nbdc_has_context(const NbdExportInfo *info, const NbdStr *name)
{
    for (size_t i = 0; i < info->n_contexts; i++) {
        if (nbd_str_eq(name->ptr, name->len, info->contexts[i].name)) {
            return true;
        }
    }
    return false;
}

/* LIST_ or SET_META_CONTEXT for export name with queries, appending the
 * contexts to info.  1 done, 0 the server refused (an error reply:
 * nothing added by this call), -1 failed. */
static int nbdc_meta(Nbdc *c, uint32_t opt, const char *name,
                     const char *const *queries, size_t n,
                     NbdExportInfo *info, Error **errp)
{
    CLEANUP_FREE uint8_t *req = NULL;
    ssize_t len = nbd_encode_opt_meta(NULL, 0, name, queries, (uint32_t)n);
    size_t first = info->n_contexts;
    NbdcReply r;

    if (len < 0 || len > NBD_MAX_OPTION_LEN) {
        error_setg(errp, "Meta context request for export '%s' is too "
                   "long", name);
        return -1;
    }
    req = xmalloc((size_t)len);
    nbd_encode_opt_meta(req, (size_t)len, name, queries, (uint32_t)n);
    if (!nbdc_send_opt(c, opt, req, (size_t)len, errp)) {
        return -1;
    }
    for (;;) {
        NbdRepMeta m;
        NbdMetaContext *ctx;

        if (!nbdc_recv_reply(c, opt, &r, errp)) {
            return -1;
        }
        if (r.h.type == NBD_REP_ACK) {
            return 1;
        }
        if (nbdc_is_err(&r)) {
            /* Listing, take what came (as QEMU does); selecting, an
             * error after selected contexts leaves us unsure which
             * the server holds. */
            if (opt == NBD_OPT_SET_META_CONTEXT &&
                info->n_contexts > first) {
                error_setg(errp, "Server sent an error after meta "
                           "contexts in its reply to %s",
                           nbd_opt_name(opt));
                return -1;
            }
            return info->n_contexts > first ? 1 : 0;
        }
        if (r.h.type != NBD_REP_META_CONTEXT) {
            nbdc_unexpected(&r, errp);
            return -1;
        }
        if (!nbd_decode_rep_meta(r.data, r.h.len, &m)) {
            error_setg(errp, "Server sent an invalid meta context in its "
                       "reply to %s (%" PRIu32 " bytes)",
                       nbd_opt_name(opt), r.h.len);
            return -1;
        }
        if (info->n_contexts >= NBD_CLIENT_MAX_CONTEXTS) {
            error_setg(errp, "Server sent more than %d meta contexts",
                       NBD_CLIENT_MAX_CONTEXTS);
            return -1;
        }
        if (opt == NBD_OPT_SET_META_CONTEXT) {
            if (!nbdc_context_asked(&m.name, queries, n)) {
                error_setg(errp, "Server selected meta context '%.*s', "
                           "which the client did not ask for",
                           (int)m.name.len, m.name.ptr);
                return -1;
            }
            if (nbdc_has_context(info, &m.name)) {
                error_setg(errp, "Server selected meta context '%.*s' "
                           "twice", (int)m.name.len, m.name.ptr);
                return -1;
            }
        }
        info->contexts = nbdc_grow(info->contexts, info->n_contexts,
                                   sizeof(*info->contexts));
        ctx = &info->contexts[info->n_contexts++];
        ctx->name = xstrndup(m.name.ptr, m.name.len);
        ctx->id = opt == NBD_OPT_SET_META_CONTEXT ? m.id : 0;
    }
}

static bool nbdc_check_block_size(const NbdRepInfo *ri, Error **errp)
{
    if (!IS_POWER_OF_2(ri->min_block) || ri->min_block > 64 * 1024) {
        error_setg(errp, "Server minimum block size %" PRIu32 " is not a "
                   "power of two up to 65536", ri->min_block);
        return false;
    }
    if (!IS_POWER_OF_2(ri->pref_block) || ri->pref_block < ri->min_block) {
        error_setg(errp, "Server preferred block size %" PRIu32 " is not "
                   "a power of two at least the minimum %" PRIu32,
                   ri->pref_block, ri->min_block);
        return false;
    }
    if (ri->max_payload < ri->min_block ||
        (ri->max_payload != UINT32_MAX &&
         ri->max_payload % ri->min_block != 0)) {
        error_setg(errp, "Server maximum block size %" PRIu32 " is not a "
                   "multiple of the minimum %" PRIu32, ri->max_payload,
                   ri->min_block);
        return false;
    }
    return true;
}

/* What nbdc_info_or_go() asks for and keeps. */
typedef struct NbdcInfoWant {
    bool name;              /* ask for and keep NBD_INFO_NAME */
    bool description;       /* ask for and keep NBD_INFO_DESCRIPTION */
} NbdcInfoWant;

/* Take one NBD_REP_INFO into info. */
static bool nbdc_take_info(const NbdcReply *r, const NbdcInfoWant *want,
                           NbdExportInfo *info, Error **errp)
{
    NbdRepInfo ri;

    if (!nbd_decode_rep_info(r->data, r->h.len, &ri)) {
        error_setg(errp, "Server sent an invalid NBD_REP_INFO of type %u "
                   "and %" PRIu32 " bytes in its reply to %s",
                   r->h.len >= 2 ? get_be16(r->data) : 0, r->h.len,
                   nbd_opt_name(r->h.opt));
        return false;
    }
    switch (ri.type) {
    case NBD_INFO_EXPORT:
        if (info->has_size &&
            (info->size != ri.size || info->flags != ri.tflags)) {
            error_setg(errp, "Server changed the export size or flags "
                       "within one reply (%" PRIu64 "/0x%x, then %" PRIu64
                       "/0x%x)", info->size, info->flags, ri.size,
                       ri.tflags);
            return false;
        }
        info->has_size = true;
        info->size = ri.size;
        info->flags = ri.tflags;
        break;
    case NBD_INFO_BLOCK_SIZE:
        if (!nbdc_check_block_size(&ri, errp)) {
            return false;
        }
        info->has_block_size = true;
        info->min_block = ri.min_block;
        info->opt_block = ri.pref_block;
        info->max_block = ri.max_payload;
        break;
    case NBD_INFO_NAME:
        if (want->name) {
            free(info->name);
            info->name = xstrndup(ri.str.ptr ? ri.str.ptr : "", ri.str.len);
        }
        break;
    case NBD_INFO_DESCRIPTION:
        if (want->description) {
            free(info->description);
            info->description = xstrndup(ri.str.ptr ? ri.str.ptr : "",
                                         ri.str.len);
        }
        break;
    default:
        break;              /* the spec: ignore what we do not know */
    }
    return true;
}

/* NBD_OPT_INFO or NBD_OPT_GO for export name, block sizes always asked
 * for.  1 done (info filled), 0 the server answered NBD_REP_ERR_UNSUP,
 * -1 failed (another error reply: errp says which). */
static int nbdc_info_or_go(Nbdc *c, uint32_t opt, const char *name,
                           const NbdcInfoWant *want, NbdExportInfo *info,
                           Error **errp)
{
    CLEANUP_FREE NbdOptInfo *req = XNEW(NbdOptInfo);
    uint8_t buf[4 + NBD_MAX_STRING + 2 + 6];
    ssize_t len;
    NbdcReply r;
    unsigned ninfos = 0;

    if (strlen(name) > NBD_MAX_STRING) {
        error_setg(errp, "Export name is longer than %d bytes",
                   NBD_MAX_STRING);
        return -1;
    }
    strcpy(req->name, name);
    req->want_name = want->name;
    req->want_description = want->description;
    req->want_block_size = true;
    len = nbd_encode_opt_info(buf, sizeof(buf), req);
    if (len < 0 || (size_t)len > sizeof(buf)) {
        error_setg(errp, "Could not encode %s", nbd_opt_name(opt));
        return -1;
    }
    if (!nbdc_send_opt(c, opt, buf, (size_t)len, errp)) {
        return -1;
    }
    for (;;) {
        if (!nbdc_recv_reply(c, opt, &r, errp)) {
            return -1;
        }
        if (r.h.type == NBD_REP_ACK) {
            break;
        }
        if (nbdc_is_err(&r)) {
            if (r.h.type == NBD_REP_ERR_UNSUP) {
                return 0;
            }
            nbdc_reply_error(&r, errp);
            return -1;
        }
        if (r.h.type != NBD_REP_INFO) {
            nbdc_unexpected(&r, errp);
            return -1;
        }
        if (++ninfos > NBD_CLIENT_MAX_INFOS) {
            error_setg(errp, "Server sent more than %d NBD_REP_INFO "
                       "replies to %s", NBD_CLIENT_MAX_INFOS,
                       nbd_opt_name(opt));
            return -1;
        }
        if (!nbdc_take_info(&r, want, info, errp)) {
            return -1;
        }
    }
    if (!info->has_size) {
        error_setg(errp, "Broken server omitted NBD_INFO_EXPORT in its "
                   "reply to %s", nbd_opt_name(opt));
        return -1;
    }
    if (info->has_block_size && info->size % info->min_block != 0) {
        error_setg(errp, "Export size %" PRIu64 " is not a multiple of "
                   "the minimum block size %" PRIu32, info->size,
                   info->min_block);
        return -1;
    }
    return 1;
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, the server just hangs
 * up on a name it does not know. */
static bool nbdc_export_name(Nbdc *c, const char *name, NbdExportInfo *info,
                             Error **errp)
{
    uint8_t reply[NBD_EXPORT_NAME_REPLY_SIZE];
    size_t need = c->no_zeroes ? NBD_EXPORT_NAME_REPLY_SHORT
                               : NBD_EXPORT_NAME_REPLY_SIZE;
    NbdExportNameReply er;
    Error *local = NULL;

    if (!nbdc_send_opt(c, NBD_OPT_EXPORT_NAME, name, strlen(name), errp)) {
        return false;
    }
    c->options = false;     /* no way back to the option phase */
    if (!nbdc_read(c, reply, need, "the export size and flags", &local)) {
        error_setg(errp, "Requested export not available (server closed "
                   "the connection after NBD_OPT_EXPORT_NAME: %s)",
                   error_get_pretty(local));
        error_free(local);
        return false;
    }
    if (!nbd_decode_export_name_reply(reply, need, c->no_zeroes, &er)) {
        error_setg(errp, "Server sent non-zero padding after the export "
                   "size and flags");
        return false;
    }
    info->has_size = true;
    info->size = er.size;
    info->flags = er.tflags;
    return true;
}

static bool nbdc_handshake(Nbdc *c, const NbdClientOpts *o,
                           NbdExportInfo *info, Error **errp)
{
    const char *name = o->export_name ? o->export_name : "";
    NbdcInfoWant want = { .name = true, .description = true };
    int rc;

    if (strlen(name) > NBD_MAX_STRING) {
        error_setg(errp, "Export name is longer than %d bytes",
                   NBD_MAX_STRING);
        return false;
    }
    info->name = xstrdup(name);
    if (!nbdc_greeting(c, errp)) {
        return false;
    }
    if (o->starttls && !nbdc_starttls(c, o, errp)) {
        return false;
    }
    /* Extended headers first; a server that refuses them (any error
     * reply) may still do structured replies. */
    if (!o->no_extended && !o->no_structured) {
        rc = nbdc_opt_ack(c, NBD_OPT_EXTENDED_HEADERS, errp);
        if (rc < 0) {
            return false;
        }
        info->extended = info->structured = rc == 1;
    }
    if (!info->structured && !o->no_structured) {
        rc = nbdc_opt_ack(c, NBD_OPT_STRUCTURED_REPLY, errp);
        if (rc < 0) {
            return false;
        }
        info->structured = rc == 1;
    }
    /* Meta contexts need structured replies; a refusal leaves none
     * selected (the caller sees that in info->contexts). */
    if (info->structured && o->n_meta_contexts > 0) {
        rc = nbdc_meta(c, NBD_OPT_SET_META_CONTEXT, name, o->meta_contexts,
                       o->n_meta_contexts, info, errp);
        if (rc < 0) {
            return false;
        }
    }
    rc = nbdc_info_or_go(c, NBD_OPT_GO, name, &want, info, errp);
    if (rc < 0) {
        return false;
    }
    if (rc == 0) {
        /* A server without NBD_OPT_GO (older nbd-server, say). */
        return nbdc_export_name(c, name, info, errp);
    }
    c->options = false;
    return true;
}

bool nbd_client_handshake(NbdClientXport *xp, const NbdClientOpts *o,
                          NbdExportInfo *info, Error **errp)
{
    CLEANUP_FREE uint8_t *buf = xmalloc(NBD_MAX_OPTION_LEN);
    Nbdc c = { .xp = xp, .buf = buf };

    memset(info, 0, sizeof(*info));
    if (!nbdc_handshake(&c, o, info, errp)) {
        nbdc_abort(&c);
        nbd_export_info_clear(info);
        return false;
    }
    return true;
}

bool nbd_client_connect(const SockAddr *addr, const NbdClientOpts *o,
                        NbdClientXport *xp, NbdExportInfo *info,
                        Error **errp)
{
    int fd;

    if (addr->type == SOCK_ADDR_FD) {
        fd = addr->fd;
    } else {
        fd = sock_connect(addr, o->timeout_ms, errp);
        if (fd < 0) {
            memset(info, 0, sizeof(*info));
            return false;
        }
    }
    nbd_client_xport_init_plain(xp, fd, o->timeout_ms);
    if (!nbd_client_handshake(xp, o, info, errp)) {
        xp->ops->close(xp);
        return false;
    }
    return true;
}

/* ---- list mode -------------------------------------------------------- */

/* OPT_LIST into out.  NBD_REP_ERR_UNSUP is an empty list (as QEMU
 * takes it); another error fails. */
static bool nbdc_list_exports(Nbdc *c, NbdExportList *out, Error **errp)
{
    NbdcReply r;

    if (!nbdc_send_opt(c, NBD_OPT_LIST, NULL, 0, errp)) {
        return false;
    }
    for (;;) {
        NbdRepServer s;
        NbdExportInfo *e;

        if (!nbdc_recv_reply(c, NBD_OPT_LIST, &r, errp)) {
            return false;
        }
        if (r.h.type == NBD_REP_ACK) {
            return true;
        }
        if (nbdc_is_err(&r)) {
            if (r.h.type == NBD_REP_ERR_UNSUP && out->n == 0) {
                return true;
            }
            nbdc_reply_error(&r, errp);
            return false;
        }
        if (r.h.type != NBD_REP_SERVER) {
            nbdc_unexpected(&r, errp);
            return false;
        }
        if (!nbd_decode_rep_server(r.data, r.h.len, &s)) {
            error_setg(errp, "Server sent an invalid NBD_REP_SERVER "
                       "(%" PRIu32 " bytes: a name or description too "
                       "long, with a NUL, or past the reply)", r.h.len);
            return false;
        }
        if (out->n >= NBD_CLIENT_MAX_EXPORTS) {
            error_setg(errp, "Server listed more than %d exports",
                       NBD_CLIENT_MAX_EXPORTS);
            return false;
        }
        out->exports = nbdc_grow(out->exports, out->n,
                                 sizeof(*out->exports));
        e = &out->exports[out->n++];
        memset(e, 0, sizeof(*e));
        e->name = xstrndup(s.name.ptr ? s.name.ptr : "", s.name.len);
        if (s.desc.len > 0) {
            e->description = xstrndup(s.desc.ptr, s.desc.len);
        }
    }
}

/* Meta contexts of one export, as qemu-nbd -L finds them: all of them,
 * then, if none starts with "qemu:", the query "qemu:" (QEMU 3.0
 * servers left those out of a query-less list).  Error replies leave
 * the list as it is. */
static bool nbdc_list_contexts(Nbdc *c, NbdExportInfo *e, Error **errp)
{
    static const char *const qemu_ns[] = { "qemu:" };
    bool seen_qemu = false;
    int rc;

    rc = nbdc_meta(c, NBD_OPT_LIST_META_CONTEXT, e->name, NULL, 0, e, errp);
    if (rc <= 0) {
        return rc == 0;
    }
    for (size_t i = 0; i < e->n_contexts; i++) {
        seen_qemu |= strncmp(e->contexts[i].name, "qemu:", 5) == 0;
    }
    if (e->n_contexts > 0 && !seen_qemu) {
        rc = nbdc_meta(c, NBD_OPT_LIST_META_CONTEXT, e->name, qemu_ns, 1,
                       e, errp);
        if (rc < 0) {
            return false;
        }
    }
    return true;
}

static bool nbdc_list(Nbdc *c, const NbdClientOpts *o, NbdExportList *out,
                      Error **errp)
{
    NbdcInfoWant want = { 0 };   /* name and description from LIST */
    bool structured;
    int rc;

    if (!nbdc_greeting(c, errp)) {
        return false;
    }
    if (o->starttls && !nbdc_starttls(c, o, errp)) {
        return false;
    }
    /* Structured replies only, like QEMU 7.2's qemu-nbd -L: the flags
     * a server advertises may depend on what was negotiated. */
    rc = nbdc_opt_ack(c, NBD_OPT_STRUCTURED_REPLY, errp);
    if (rc < 0) {
        return false;
    }
    structured = rc == 1;
    if (!nbdc_list_exports(c, out, errp)) {
        return false;
    }
    for (size_t i = 0; i < out->n; i++) {
        NbdExportInfo *e = &out->exports[i];

        e->structured = structured;
        rc = nbdc_info_or_go(c, NBD_OPT_INFO, e->name, &want, e, errp);
        if (rc < 0) {
            error_prepend(errp, "Export '%s': ", e->name);
            return false;
        }
        if (rc == 0) {
            /* No NBD_OPT_INFO: no point asking about the others. */
            break;
        }
        if (structured && !nbdc_list_contexts(c, e, errp)) {
            return false;
        }
    }
    nbdc_abort(c);
    return true;
}

bool nbd_client_list(const SockAddr *addr, const NbdClientOpts *o,
                     NbdExportList *out, Error **errp)
{
    static const NbdClientOpts defaults = { .timeout_ms = -1 };
    CLEANUP_FREE uint8_t *buf = NULL;
    NbdClientXport xp;
    Nbdc c;
    int fd;

    memset(out, 0, sizeof(*out));
    if (!o) {
        o = &defaults;
    }
    if (addr->type == SOCK_ADDR_FD) {
        fd = addr->fd;
    } else {
        fd = sock_connect(addr, o->timeout_ms, errp);
        if (fd < 0) {
            return false;
        }
    }
    nbd_client_xport_init_plain(&xp, fd, o->timeout_ms);
    buf = xmalloc(NBD_MAX_OPTION_LEN);
    c = (Nbdc){ .xp = &xp, .buf = buf };
    if (!nbdc_list(&c, o, out, errp)) {
        nbdc_abort(&c);
        xp.ops->close(&xp);
        nbd_export_list_clear(out);
        return false;
    }
    xp.ops->close(&xp);
    return true;
}

/* Transmission flag names by bit, as qemu-nbd -L prints them (bit 0,
 * HAS_FLAGS, never is). */
static const char *const nbd_flag_names[] = {
    [1] = "readonly",
    [2] = "flush",
    [3] = "fua",
    [4] = "rotational",
    [5] = "trim",
    [6] = "zeroes",
    [7] = "df",
    [8] = "multi",
    [9] = "resize",
    [10] = "cache",
    [11] = "fast-zero",
    [12] = "block-status-payload",
};

void nbd_export_list_print(FILE *f, const NbdExportList *l)
{
    fprintf(f, "exports available: %zu\n", l->n);
    for (size_t i = 0; i < l->n; i++) {
        const NbdExportInfo *e = &l->exports[i];

        fprintf(f, " export: '%s'\n", e->name);
        if (e->description && e->description[0]) {
            fprintf(f, "  description: %s\n", e->description);
        }
        if (e->has_size && (e->flags & NBD_FLAG_HAS_FLAGS)) {
            fprintf(f, "  size:  %" PRIu64 "\n", e->size);
            fprintf(f, "  flags: 0x%x (", e->flags);
            for (size_t bit = 0; bit < ARRAY_SIZE(nbd_flag_names); bit++) {
                if (nbd_flag_names[bit] && (e->flags & (1U << bit))) {
                    fprintf(f, " %s", nbd_flag_names[bit]);
                }
            }
            fprintf(f, " )\n");
        }
        if (e->has_block_size) {
            fprintf(f, "  min block: %" PRIu32 "\n", e->min_block);
            fprintf(f, "  opt block: %" PRIu32 "\n", e->opt_block);
            fprintf(f, "  max block: %" PRIu32 "\n", e->max_block);
        }
        if (e->n_contexts > 0) {
            fprintf(f, "  available meta contexts: %zu\n", e->n_contexts);
            for (size_t j = 0; j < e->n_contexts; j++) {
                fprintf(f, "   %s\n", e->contexts[j].name);
            }
        }
    }
}
