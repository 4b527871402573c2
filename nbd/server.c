/* server.c - listeners and the connection registry. */
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"
#include "nbd/kernel.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

static bool server_full(const NbdServer *srv)
{
    return srv->max_connections && srv->nclients >= srv->max_connections;
}

static void server_accept(void *opaque, int fd)
{
    NbdServer *srv = opaque;

    srv->nclients++;
    NbdConnVec_append(&srv->conns, nbd_conn_new(srv, fd));
    if (server_full(srv)) {
        /* Like QEMU: stop accepting; extra clients wait in the listen
         * backlog until someone leaves. */
        acceptor_set_paused(srv->acceptor, true);
    }
}

#define NBD_SERVER_USER "nbd-server"

/* Look up and pin the TLS objects cfg names. */
static bool server_get_tls(NbdServer *srv, const NbdServerConfig *cfg,
                           Error **errp)
{
    ObjectSet *set = srv->ctx->objects;

    if (cfg->tls_authz && !cfg->tls_creds) {
        error_setg(errp, "tls-authz is not supported without tls-creds");
        return false;
    }
    if (!cfg->tls_creds) {
        return true;
    }
    srv->tls = object_get_tls_creds(set, cfg->tls_creds,
                                    TLS_ENDPOINT_SERVER, errp);
    if (!srv->tls ||
        !object_add_user(set, cfg->tls_creds, NBD_SERVER_USER, errp)) {
        srv->tls = NULL;
        return false;
    }
    srv->tls_creds = xstrdup(cfg->tls_creds);
    if (cfg->tls_authz) {
        srv->authz = object_get_authz(set, cfg->tls_authz, errp);
        if (!srv->authz ||
            !object_add_user(set, cfg->tls_authz, NBD_SERVER_USER, errp)) {
            srv->authz = NULL;
            return false;
        }
        srv->tls_authz = xstrdup(cfg->tls_authz);
    }
    return true;
}

static void server_put_tls(NbdServer *srv)
{
    if (srv->tls) {
        object_remove_user(srv->ctx->objects, srv->tls_creds,
                           NBD_SERVER_USER);
        srv->tls = NULL;
    }
    if (srv->authz) {
        object_remove_user(srv->ctx->objects, srv->tls_authz,
                           NBD_SERVER_USER);
        srv->authz = NULL;
    }
    free(srv->tls_creds);
    free(srv->tls_authz);
    srv->tls_creds = srv->tls_authz = NULL;
}

NbdServer *nbd_server_new(NbdContext *ctx, const NbdServerConfig *cfg,
                          Error **errp)
{
    NbdServer *srv = XNEW(NbdServer);

    srv->ctx = ctx;
    if (!server_get_tls(srv, cfg, errp)) {
        server_put_tls(srv);
        free(srv);
        return NULL;
    }
    srv->max_connections = cfg->max_connections;
    srv->handshake_limit_us = cfg->handshake_limit_us;
    loop_poll_window_init(&srv->hs_poll, cfg->handshake_poll_max_ns);
    srv->acceptor = acceptor_new(ctx->loop, "nbd", server_accept, srv);
    return srv;
}

bool nbd_server_listen(NbdServer *srv, const SockAddr *addr, Error **errp)
{
    SockListenerVec ls = { 0 };

    if (!sock_listen(addr, &ls, errp)) {
        return false;
    }
    acceptor_add(srv->acceptor, &ls);
    return true;
}

void nbd_server_conn_closed(NbdServer *srv, NbdConn *c)
{
    NbdContext *ctx = srv->ctx;

    srv->nclients--;
    if (srv->stopping) {
        return;
    }
    acceptor_set_paused(srv->acceptor, server_full(srv));
    acceptor_fd_freed(srv->acceptor);
    if (ctx->client_closed) {
        ctx->client_closed(ctx->client_closed_opaque,
                           nbd_conn_export(c) != NULL, srv->nclients);
    }
}

void nbd_server_conn_added(NbdServer *srv, NbdConn *c)
{
    srv->nclients++;
    NbdConnVec_append(&srv->conns, c);
    if (server_full(srv)) {
        /* Full: the listeners wait, as for their own clients. */
        acceptor_set_paused(srv->acceptor, true);
    }
}

void nbd_server_conn_freed(NbdServer *srv, NbdConn *c)
{
    for (size_t i = 0; i < srv->conns.len; i++) {
        if (srv->conns.ptr[i] == c) {
            NbdConnVec_remove(&srv->conns, i);
            return;
        }
    }
}

unsigned nbd_server_client_count(const NbdServer *srv)
{
    return srv ? srv->nclients : 0;
}

void nbd_server_stats(const NbdServer *srv, NbdServerStats *st)
{
    *st = srv->stats;
    st->tls_creds = srv->tls_creds;
    st->tls_authz = srv->tls_authz;
    st->clients = srv->nclients;
    st->handshake_poll_ns = srv->hs_poll.cur_ns;
}

void nbd_server_free(NbdServer *srv)
{
    NbdExportVec exports = { 0 };

    if (!srv) {
        return;
    }
    srv->stopping = true;
    /* Kernel devices first: they are disconnected, not just cut off. */
    nbd_kernel_shutdown(srv->ctx);
    /* Our socket files go too, if they are still ours. */
    acceptor_free(srv->acceptor);
    srv->acceptor = NULL;

    /* Every client goes, negotiating ones included (CVE-2024-7409). */
    for (size_t i = 0; i < srv->conns.len; i++) {
        nbd_conn_shutdown(srv->conns.ptr[i]);
    }
    NbdConnVec_reset(&srv->conns);

    /* Then every export; those still referenced by finishing requests
     * are freed (and reported deleted) when the requests end. */
    for (size_t i = 0; i < srv->exports.len; i++) {
        NbdExportVec_append(&exports, srv->exports.ptr[i]);
    }
    for (size_t i = 0; i < exports.len; i++) {
        NbdExport *exp = exports.ptr[i];

        exp->srv = NULL;
        exp->in_registry = false;
        if (!exp->shutting_down) {
            exp->shutting_down = true;
            nbd_export_unref(exp);
        }
    }
    NbdExportVec_reset(&exports);
    NbdExportVec_reset(&srv->exports);
    /* Every session is gone with its connection: unpin the objects. */
    server_put_tls(srv);
    free(srv);
}

void nbd_export_each_client(const NbdServer *srv, const char *id,
                            void (*fn)(void *opaque,
                                       const NbdClientInfo *ci),
                            void *opaque)
{
    if (srv == NULL) {
        return;
    }
    for (size_t i = 0; i < srv->conns.len; i++) {
        const NbdConn *c = srv->conns.ptr[i];

        if (c->announced && c->exp != NULL && strcmp(c->exp->id, id) == 0) {
            NbdClientInfo ci = {
                .serial = c->serial,
                .addr = c->peer,
                .tls_identity = c->tls_identity,
                .rd_bytes = NBD_STAT_GET(c->rd_bytes),
                .wr_bytes = NBD_STAT_GET(c->wr_bytes),
                .rd_ops = NBD_STAT_GET(c->rd_ops),
                .wr_ops = NBD_STAT_GET(c->wr_ops),
                .other_ops = NBD_STAT_GET(c->other_ops),
            };
            fn(opaque, &ci);
        }
    }
}
