/* server.c - listeners and the connection registry. */
#include <stdlib.h>
#include <string.h>

#include "nbd/internal.h"
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

NbdServer *nbd_server_new(NbdContext *ctx, const NbdServerConfig *cfg)
{
    NbdServer *srv = XNEW(NbdServer);

    srv->ctx = ctx;
    srv->max_connections = cfg->max_connections;
    srv->handshake_limit_us = cfg->handshake_limit_us;
    srv->tls_creds = cfg->tls_creds ? xstrdup(cfg->tls_creds) : NULL;
    srv->tls_authz = cfg->tls_authz ? xstrdup(cfg->tls_authz) : NULL;
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
    (void)c;
    srv->nclients--;
    if (srv->stopping) {
        return;
    }
    acceptor_set_paused(srv->acceptor, server_full(srv));
    acceptor_fd_freed(srv->acceptor);
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

void nbd_server_free(NbdServer *srv)
{
    NbdExportVec exports = { 0 };

    if (!srv) {
        return;
    }
    srv->stopping = true;
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
    free(srv->tls_creds);
    free(srv->tls_authz);
    free(srv);
}
