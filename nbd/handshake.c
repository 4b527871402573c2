/* handshake.c - the option phase of a connection (doc/proto.md
 * "Handshake", fixed newstyle): the greeting, the client flags, and one
 * handler per option.  It ends in transmission (GO, EXPORT_NAME), in a
 * soft disconnect (ABORT) or in a hard one.  STARTTLS plugs in here.
 *
 * Every option's replies are built in c->hs and sent with one write;
 * option payloads are parsed by the pure parsers in proto.c.  Payloads
 * up to NBD_OPT_BUF_MAX are buffered; longer ones are skipped through
 * the input buffer in bounded chunks and answered NBD_REP_ERR_TOO_BIG,
 * so the stream stays in sync and nothing big is allocated.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/trace.h"
#include "util/util.h"

/* The largest option we buffer: the largest legal NBD_OPT_INFO/GO (a
 * name of NBD_MAX_STRING bytes and 65535 info requests).  Every other
 * option within the spec's string limits fits too, except a meta
 * context query list so long that the spec allows ERR_TOO_BIG. */
#define NBD_OPT_BUF_MAX (4 + NBD_MAX_STRING + 2 + 2 * UINT16_MAX)
/* Keep an option buffer up to this size for the next option. */
#define NBD_OPT_BUF_KEEP (16 * 1024)

/* ---- replies ------------------------------------------------------------- */

static void hs_append(NbdConn *c, const void *p, size_t len)
{
    if (c->hs_len + len > c->hs_cap) {
        size_t cap = MAX(c->hs_cap * 2, c->hs_len + len + 256);

        c->hs = xrealloc(c->hs, cap);
        c->hs_cap = cap;
    }
    memcpy(c->hs + c->hs_len, p, len);
    c->hs_len += len;
}

static void opt_reply(NbdConn *c, uint32_t type, const void *data,
                      uint32_t len)
{
    uint8_t h[NBD_OPT_REPLY_HDR_SIZE];

    TRACE(nbd_negotiate_send_rep_len, "reply to opt=%u (%s): type=%u, "
          "len=%u", c->opt, nbd_opt_name(c->opt), type, len);
    nbd_encode_opt_reply_hdr(h, c->opt, type, len);
    hs_append(c, h, sizeof(h));
    if (len) {
        hs_append(c, data, len);
    }
}

static void opt_error(NbdConn *c, uint32_t type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void opt_error(NbdConn *c, uint32_t type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    TRACE(nbd_negotiate_send_rep_err, "error message \"%s\"", msg);
    opt_reply(c, type, msg, (uint32_t)MIN((size_t)n, sizeof(msg) - 1));
}

/* ---- exports ------------------------------------------------------------- */

static NbdExport *conn_find_export(NbdConn *c, const char *name)
{
    NbdExport *exp = c->srv ? nbd_export_find_name(c->srv, name) : NULL;

    return exp && !exp->shutting_down ? exp : NULL;
}

static uint64_t export_size(NbdExport *exp)
{
    int64_t len = blk_getlength(exp->node);

    return len < 0 ? 0 : (uint64_t)len;
}

void nbd_conn_meta_clear(NbdConn *c)
{
    c->meta_sel.len = 0;
    c->meta_exp = NULL;
}

/* Entering transmission on exp: a selection made on another export
 * object (another name, or a deleted export re-added under the same
 * name) does not carry over. */
static void conn_go(NbdConn *c, NbdExport *exp)
{
    if (c->meta_exp != exp) {
        nbd_conn_meta_clear(c);
    }
    if (c->hs_timer) {
        loop_timer_free(c->hs_timer);
        c->hs_timer = NULL;
    }
    free(c->optbuf);
    c->optbuf = NULL;
    c->optbuf_cap = 0;
    TRACE(nbd_negotiate_success, "negotiation succeeded: export '%s'",
          exp->name);
    nbd_conn_enter_transmission(c, exp);
}

/* ---- option handlers ----------------------------------------------------- */

static void opt_export_name(NbdConn *c)
{
    char name[NBD_MAX_STRING + 1];
    NbdOptError err;
    NbdExport *exp;
    uint8_t reply[8 + 2 + 124] = { 0 };

    /* No error reply exists for EXPORT_NAME: every failure hangs up. */
    if (c->extended) {
        log_debug("nbd: NBD_OPT_EXPORT_NAME after extended headers");
        nbd_conn_close(c);
        return;
    }
    if (!nbd_parse_opt_export_name(c->optbuf, c->optlen, name, &err) ||
        !(exp = conn_find_export(c, name))) {
        TRACE(nbd_negotiate_handle_export_name_request,
              "export '%s' (unknown)", name);
        log_debug("nbd: NBD_OPT_EXPORT_NAME for unknown export");
        nbd_conn_close(c);
        return;
    }
    TRACE(nbd_negotiate_handle_export_name_request, "export '%s'", name);
    c->size = export_size(exp);
    c->tflags = nbd_export_tflags(exp, c->structured);
    TRACE(nbd_negotiate_new_style_size_flags, "size %" PRIu64
          ", flags 0x%x", c->size, c->tflags);
    put_be64(reply, c->size);
    put_be16(reply + 8, c->tflags);
    hs_append(c, reply, c->no_zeroes ? 10 : sizeof(reply));
    conn_go(c, exp);
}

static void opt_info_go(NbdConn *c)
{
    NbdOptInfo info;
    NbdOptError err;
    NbdExport *exp;
    uint8_t buf[14];
    uint32_t align, min_block;

    if (!nbd_parse_opt_info(c->optbuf, c->optlen, &info, &err)) {
        opt_error(c, err.rep, "%s: %s", nbd_opt_name(c->opt), err.msg);
        return;
    }
    TRACE(nbd_negotiate_handle_export_name_request, "export '%s'",
          info.name);
    TRACE(nbd_negotiate_handle_info_requests, "%u info items:%s%s%s",
          info.ninfos, info.want_name ? " name" : "",
          info.want_description ? " description" : "",
          info.want_block_size ? " block size" : "");
    exp = conn_find_export(c, info.name);
    if (!exp) {
        opt_error(c, NBD_REP_ERR_UNKNOWN, "export '%.80s' not present",
                  info.name);
        return;
    }
    align = blk_get_request_alignment(exp->node);
    if (c->opt == NBD_OPT_INFO && !info.want_block_size && align > 1) {
        opt_error(c, NBD_REP_ERR_BLOCK_SIZE_REQD,
                  "export '%.80s' requires a block size of %u",
                  info.name, align);
        return;
    }
    c->size = export_size(exp);
    c->tflags = nbd_export_tflags(exp, c->structured);
    TRACE(nbd_negotiate_new_style_size_flags, "size %" PRIu64
          ", flags 0x%x", c->size, c->tflags);

    put_be16(buf, NBD_INFO_EXPORT);
    put_be64(buf + 2, c->size);
    put_be16(buf + 10, c->tflags);
    opt_reply(c, NBD_REP_INFO, buf, 12);
    if (info.want_name) {
        size_t n = strlen(exp->name);
        uint8_t *p = xmalloc(2 + n);

        put_be16(p, NBD_INFO_NAME);
        memcpy(p + 2, exp->name, n);
        opt_reply(c, NBD_REP_INFO, p, (uint32_t)(2 + n));
        free(p);
    }
    if (exp->description) {
        size_t n = MIN(strlen(exp->description), (size_t)NBD_MAX_STRING);
        uint8_t *p = xmalloc(2 + n);

        put_be16(p, NBD_INFO_DESCRIPTION);
        memcpy(p + 2, exp->description, n);
        opt_reply(c, NBD_REP_INFO, p, (uint32_t)(2 + n));
        free(p);
    }
    /* Always send BLOCK_SIZE; a client that did not ask for it gets a
     * minimum of 1 on GO (it cannot honour more), as QEMU does. */
    min_block = (c->opt == NBD_OPT_GO && !info.want_block_size) ? 1 : align;
    TRACE(nbd_negotiate_handle_info_block_size, "block size: minimum %u, "
          "preferred %u, maximum %u", min_block, MAX(4096u, min_block),
          (unsigned)NBD_MAX_PAYLOAD);
    put_be16(buf, NBD_INFO_BLOCK_SIZE);
    put_be32(buf + 2, min_block);
    put_be32(buf + 6, MAX(4096u, min_block));
    put_be32(buf + 10, NBD_MAX_PAYLOAD);
    opt_reply(c, NBD_REP_INFO, buf, 14);
    opt_reply(c, NBD_REP_ACK, NULL, 0);

    if (c->opt == NBD_OPT_GO) {
        conn_go(c, exp);
    }
}

static void opt_list(NbdConn *c)
{
    if (c->optlen) {
        opt_error(c, NBD_REP_ERR_INVALID,
                  "NBD_OPT_LIST must not carry data");
        return;
    }
    for (size_t i = 0; c->srv && i < c->srv->exports.len; i++) {
        NbdExport *exp = c->srv->exports.ptr[i];
        size_t nl = strlen(exp->name);
        size_t dl = exp->description ? strlen(exp->description) : 0;
        uint8_t *p;

        if (exp->shutting_down) {
            continue;
        }
        TRACE(nbd_negotiate_send_rep_list, "export '%s' description '%s'",
              exp->name, exp->description ? exp->description : "");
        p = xmalloc(4 + nl + dl);
        put_be32(p, (uint32_t)nl);
        memcpy(p + 4, exp->name, nl);
        if (dl) {
            memcpy(p + 4 + nl, exp->description, dl);
        }
        opt_reply(c, NBD_REP_SERVER, p, (uint32_t)(4 + nl + dl));
        free(p);
    }
    opt_reply(c, NBD_REP_ACK, NULL, 0);
}

/* Mark in found[] the contexts of exp a query selects.  SET takes exact
 * names; LIST also takes a namespace wildcard, a query ending in ':'
 * ("base:", "qemu:", "qemu:dirty-bitmap:") that selects every context
 * whose name starts with it.  Unknown queries select nothing. */
static void meta_match(const NbdExport *exp, bool list, const char *q,
                       uint32_t qlen, bool *found)
{
    bool wildcard = list && qlen > 0 && q[qlen - 1] == ':';

    for (size_t i = 0; i < exp->meta.len; i++) {
        const char *name = exp->meta.ptr[i].name;

        if (wildcard ? strncmp(name, q, qlen) == 0 && strlen(name) > qlen
                     : nbd_str_eq(q, qlen, name)) {
            found[i] = true;
        }
    }
}

static void opt_meta(NbdConn *c)
{
    bool list = c->opt == NBD_OPT_LIST_META_CONTEXT;
    NbdOptMeta m;
    NbdOptError err;
    NbdExport *exp;
    bool *found;
    size_t pos;

    if (!list) {
        /* SET replaces the selection, even when it fails. */
        nbd_conn_meta_clear(c);
        if (!c->structured) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "NBD_OPT_SET_META_CONTEXT needs structured replies "
                      "first");
            return;
        }
    }
    if (!nbd_parse_opt_meta(c->optbuf, c->optlen, &m, &err)) {
        opt_error(c, err.rep, "%s: %s", nbd_opt_name(c->opt), err.msg);
        return;
    }
    TRACE(nbd_negotiate_meta_context, "%s for export '%s', %u queries",
          nbd_opt_name(c->opt), m.name, m.nqueries);
    exp = conn_find_export(c, m.name);
    if (!exp) {
        opt_error(c, NBD_REP_ERR_UNKNOWN, "export '%.80s' not present",
                  m.name);
        return;
    }
    found = xzalloc(exp->meta.len + 1);
    if (list && m.nqueries == 0) {
        for (size_t i = 0; i < exp->meta.len; i++) {
            found[i] = true;
        }
    }
    pos = m.queries_off;
    for (uint32_t i = 0; i < m.nqueries; i++) {
        const char *q;
        uint32_t qlen;

        nbd_meta_next_query(c->optbuf, &pos, &q, &qlen);
        if (qlen <= NBD_MAX_STRING) {
            meta_match(exp, list, q, qlen, found);
        }
    }
    for (size_t id = 0; id < exp->meta.len; id++) {
        const char *name = exp->meta.ptr[id].name;
        size_t n = strlen(name);
        uint8_t *p;

        if (!found[id]) {
            continue;
        }
        TRACE(nbd_negotiate_meta_query_reply, "context '%s' id %u", name,
              list ? 0 : (unsigned)id);
        p = xmalloc(4 + n);
        put_be32(p, list ? 0 : (uint32_t)id);
        memcpy(p + 4, name, n);
        opt_reply(c, NBD_REP_META_CONTEXT, p, (uint32_t)(4 + n));
        free(p);
        if (!list) {
            NbdMetaSel_append(&c->meta_sel, (uint32_t)id);
        }
    }
    free(found);
    opt_reply(c, NBD_REP_ACK, NULL, 0);
    if (!list) {
        c->meta_exp = exp;
    }
}

static bool opt_no_data(NbdConn *c)
{
    if (c->optlen) {
        opt_error(c, NBD_REP_ERR_INVALID, "%s must not carry data",
                  nbd_opt_name(c->opt));
        return false;
    }
    return true;
}

/* STARTTLS (doc/proto.md "TLS support"): ACK in clear, then the TLS
 * handshake (nbd_hs_tls_step, once the ACK is out). */
static void opt_starttls(NbdConn *c)
{
    if (!opt_no_data(c)) {
        return;
    }
    if (c->xp.tls_established) {
        opt_error(c, NBD_REP_ERR_INVALID, "TLS is already negotiated");
        return;
    }
    if (!c->srv || !c->srv->tls) {
        opt_error(c, NBD_REP_ERR_POLICY,
                  "TLS is not enabled on this server");
        return;
    }
    TRACE(nbd_negotiate_handle_starttls, "setting up TLS");
    opt_reply(c, NBD_REP_ACK, NULL, 0);
    nbd_conn_want(c, NBD_CS_TLS_HANDSHAKE, NULL, 0);
}

/* The option is answered: read the next one. */
static void opt_done(NbdConn *c)
{
    if (c->closed) {
        return;
    }
    if (c->state == NBD_CS_OPT_DATA || c->state == NBD_CS_OPT_DISCARD) {
        if (c->optbuf_cap > NBD_OPT_BUF_KEEP) {
            free(c->optbuf);
            c->optbuf = NULL;
            c->optbuf_cap = 0;
        }
        nbd_conn_want(c, NBD_CS_OPT_HDR, c->hdrbuf, NBD_OPT_HDR_SIZE);
    }
    nbd_conn_flush_output(c);
}

void nbd_hs_on_opt_data(NbdConn *c)
{
    if (c->tls_required && !c->xp.tls_established &&
        c->opt != NBD_OPT_STARTTLS && c->opt != NBD_OPT_ABORT) {
        /* FORCEDTLS (doc/proto.md "TLS support"): nothing but STARTTLS
         * and ABORT before TLS, and no export name in the refusal. */
        if (c->srv) {
            c->srv->stats.tls_required++;
        }
        opt_error(c, NBD_REP_ERR_TLS_REQD,
                  "TLS is required on this server: send NBD_OPT_STARTTLS "
                  "first");
        opt_done(c);
        return;
    }
    switch (c->opt) {
    case NBD_OPT_EXPORT_NAME:
        opt_export_name(c);
        break;
    case NBD_OPT_ABORT:
        opt_reply(c, NBD_REP_ACK, NULL, 0);
        nbd_conn_flush_output(c);
        nbd_conn_start_closing(c);
        return;
    case NBD_OPT_LIST:
        opt_list(c);
        break;
    case NBD_OPT_STARTTLS:
        opt_starttls(c);
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        opt_info_go(c);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (!opt_no_data(c)) {
            break;
        }
        if (c->extended) {
            opt_error(c, NBD_REP_ERR_EXT_HEADER_REQD,
                      "extended headers already negotiated");
        } else if (c->structured) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "structured replies already negotiated");
        } else {
            c->structured = true;
            opt_reply(c, NBD_REP_ACK, NULL, 0);
        }
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        opt_meta(c);
        break;
    case NBD_OPT_EXTENDED_HEADERS:
        if (!opt_no_data(c)) {
            break;
        }
        if (c->extended) {
            opt_error(c, NBD_REP_ERR_INVALID,
                      "extended headers already negotiated");
        } else {
            c->extended = c->structured = true;
            opt_reply(c, NBD_REP_ACK, NULL, 0);
        }
        break;
    default:
        opt_error(c, NBD_REP_ERR_UNSUP, "option %u (%s) is not supported",
                  c->opt, nbd_opt_name(c->opt));
        break;
    }
    opt_done(c);
}

/* An option too long to buffer has been skipped: say so. */
void nbd_hs_on_opt_discard(NbdConn *c)
{
    opt_error(c, NBD_REP_ERR_TOO_BIG,
              "%s: option length %u is over this server's limit of %u",
              nbd_opt_name(c->opt), c->optlen, (unsigned)NBD_OPT_BUF_MAX);
    opt_done(c);
}

void nbd_hs_on_opt_hdr(NbdConn *c)
{
    TRACE(nbd_negotiate_options_check_magic, "option magic 0x%" PRIx64,
          get_be64(c->hdrbuf));
    if (get_be64(c->hdrbuf) != NBD_OPTS_MAGIC) {
        log_debug("nbd: bad option magic, disconnecting");
        nbd_conn_close(c);
        return;
    }
    c->opt = get_be32(c->hdrbuf + 8);
    c->optlen = get_be32(c->hdrbuf + 12);
    TRACE(nbd_negotiate_options_check_option, "option %u (%s), length %u",
          c->opt, nbd_opt_name(c->opt), c->optlen);
    if (c->opt == NBD_OPT_EXPORT_NAME && c->tls_required &&
        !c->xp.tls_established) {
        /* It has no error reply: hang up before reading its name. */
        log_info("nbd: NBD_OPT_EXPORT_NAME before STARTTLS on a TLS "
                 "server, disconnecting");
        if (c->srv) {
            c->srv->stats.tls_required++;
        }
        nbd_conn_close(c);
        return;
    }
    if (!c->fixed && c->opt != NBD_OPT_EXPORT_NAME) {
        nbd_conn_close(c);
        return;
    }
    if (c->optlen > NBD_OPT_BUF_MAX) {
        if (c->opt == NBD_OPT_EXPORT_NAME) {
            /* No error reply exists for it (and no legal name is this
             * long): hang up before reading any of it. */
            log_debug("nbd: NBD_OPT_EXPORT_NAME of %u bytes, "
                      "disconnecting", c->optlen);
            nbd_conn_close(c);
            return;
        }
        /* doc/proto.md: the server must be able to skip any option by
         * its length.  Skip it in input-buffer chunks, then answer
         * NBD_REP_ERR_TOO_BIG ("the request is too large to process").
         * The handshake limit bounds how long this may take. */
        nbd_conn_want(c, NBD_CS_OPT_DISCARD, NULL, c->optlen);
        return;
    }
    if (c->optbuf_cap < c->optlen) {
        c->optbuf = xrealloc(c->optbuf, c->optlen);
        c->optbuf_cap = c->optlen;
    }
    nbd_conn_want(c, NBD_CS_OPT_DATA, c->optbuf, c->optlen);
}

void nbd_hs_on_client_flags(NbdConn *c)
{
    uint32_t flags = get_be32(c->hdrbuf);

    TRACE(nbd_negotiate_options_flags, "client flags 0x%x", flags);
    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
                            NBD_FLAG_C_NO_ZEROES)) {
        log_debug("nbd: unknown client flags 0x%x, disconnecting", flags);
        nbd_conn_close(c);
        return;
    }
    c->fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    nbd_conn_want(c, NBD_CS_OPT_HDR, c->hdrbuf, NBD_OPT_HDR_SIZE);
}

/* ---- TLS ----------------------------------------------------------------- */

/* The first step swaps the transport: from here the socket carries TLS
 * records only. */
static bool tls_begin(NbdConn *c)
{
    CLEANUP_ERROR Error *err = NULL;
    gnutls_session_t s;
    size_t dropped = c->in_end - c->in_start;

    if (!tls_creds_session_new(c->srv->tls, TLS_ENDPOINT_SERVER, NULL, &s,
                               &err)) {
        log_error("nbd: cannot start TLS: %s", error_get_pretty(err));
        return false;
    }
    /* Bytes the client sent in clear after NBD_OPT_STARTTLS are neither
     * TLS input nor options (the plaintext injection of CVE-2021-3716):
     * drop them.  A client that follows the protocol sent nothing. */
    if (dropped) {
        log_info("nbd: dropping %zu bytes sent in clear after "
                 "NBD_OPT_STARTTLS", dropped);
    }
    c->in_start = c->in_end = 0;
    TRACE(nbd_negotiate_handle_starttls_handshake, "starting the TLS "
          "handshake");
    xport_tls_start(&c->xp, s);
    return true;
}

/* The handshake is done: the peer's credentials, then its identity
 * against tls-authz. */
static bool tls_accept_peer(NbdConn *c)
{
    NbdServer *srv = c->srv;
    gnutls_session_t s = xport_tls_session(&c->xp);
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *identity = NULL;
    CLEANUP_FREE char *peer = NULL;

    if (!tls_creds_check_peer(srv->tls, s, NULL, &identity, &err)) {
        peer = tls_session_peer_name(s);
        srv->stats.tls_peer_refused++;
        log_info("nbd: TLS client '%s' refused: %s",
                 peer ? peer : "(no identity)", error_get_pretty(err));
        return false;
    }
    if (srv->authz && !authz_is_allowed(srv->authz, identity)) {
        srv->stats.tls_authz_denied++;
        log_info("nbd: TLS client '%s' is not authorized by '%s'",
                 identity ? identity : "(no identity)",
                 authz_id(srv->authz));
        return false;
    }
    srv->stats.tls_sessions++;
    log_debug("nbd: TLS client '%s' accepted",
              identity ? identity : "(no identity)");
    free(c->tls_identity);
    c->tls_identity = TAKE_PTR(identity);
    return true;
}

void nbd_hs_tls_step(NbdConn *c)
{
    CLEANUP_ERROR Error *err = NULL;
    int r;

    if (c->closed) {
        return;
    }
    if (!c->srv || (!xport_tls_session(&c->xp) && !tls_begin(c))) {
        nbd_conn_close(c);
        return;
    }
    r = xport_tls_handshake(&c->xp, &c->tls_want_write, &err);
    if (r == 0) {
        nbd_conn_update_events(c);
        return;
    }
    if (r < 0) {
        c->srv->stats.tls_failed++;
        log_info("nbd: client %s", error_get_pretty(err));
        nbd_conn_close(c);
        return;
    }
    if (!tls_accept_peer(c)) {
        nbd_conn_close(c);
        return;
    }
    /* Nothing negotiated in clear holds inside TLS (doc/proto.md: the
     * client must negotiate again; cf. CVE-2021-3716). */
    c->structured = c->extended = false;
    nbd_conn_meta_clear(c);
    nbd_conn_want(c, NBD_CS_OPT_HDR, c->hdrbuf, NBD_OPT_HDR_SIZE);
    nbd_conn_input(c);
}

static void conn_hs_timeout(void *opaque)
{
    NbdConn *c = opaque;

    TRACE(nbd_handshake_timer_cb, "handshake limit reached");
    log_info("nbd: client did not finish the handshake in time, "
             "disconnecting");
    nbd_conn_close(c);
}

void nbd_hs_start(NbdConn *c)
{
    uint8_t greeting[NBD_GREETING_SIZE];

    if (c->srv->handshake_limit_us) {
        c->hs_timer = loop_timer_new(c->ctx->loop, conn_hs_timeout, c);
        loop_timer_arm(c->hs_timer, c->srv->handshake_limit_us);
    }
    TRACE(nbd_negotiate_begin, "beginning negotiation");
    nbd_encode_greeting(greeting);
    hs_append(c, greeting, sizeof(greeting));
    nbd_conn_want(c, NBD_CS_CLIENT_FLAGS, c->hdrbuf, 4);
}
