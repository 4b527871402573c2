/* server.c - listeners and the connection registry. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd/internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

NbdServer *nbd_server_new(NbdContext *ctx, const NbdServerConfig *cfg)
{
    NbdServer *srv = XNEW(NbdServer);

    srv->ctx = ctx;
    srv->max_connections = cfg->max_connections;
    srv->handshake_limit_us = cfg->handshake_limit_us;
    srv->tls_creds = cfg->tls_creds ? xstrdup(cfg->tls_creds) : NULL;
    srv->tls_authz = cfg->tls_authz ? xstrdup(cfg->tls_authz) : NULL;
    srv->accepting = true;
    return srv;
}

static void server_set_accepting(NbdServer *srv, bool on)
{
    if (srv->accepting == on) {
        return;
    }
    srv->accepting = on;
    for (size_t i = 0; i < srv->listeners.len; i++) {
        loop_fd_set_events(srv->listeners.ptr[i].watch, on ? LOOP_READ : 0);
    }
}

static bool server_full(const NbdServer *srv)
{
    return srv->max_connections && srv->nclients >= srv->max_connections;
}

static void server_accept_cb(int fd, int events, void *opaque)
{
    NbdServer *srv = opaque;
    bool is_inet = false;

    (void)events;
    for (size_t i = 0; i < srv->listeners.len; i++) {
        if (srv->listeners.ptr[i].fd == fd) {
            is_inet = srv->listeners.ptr[i].is_inet;
        }
    }
    while (!srv->stopping) {
        int cfd;

        if (server_full(srv)) {
            /* Like QEMU: stop accepting; extra clients wait in the
             * listen backlog until someone leaves. */
            server_set_accepting(srv, false);
            return;
        }
        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_warn("nbd: accept failed: %s", strerror(errno));
            }
            return;
        }
        if (is_inet) {
            int one = 1;

            /* Negotiation replies are small: never wait for Nagle. */
            setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        srv->nclients++;
        NbdConnVec_append(&srv->conns, nbd_conn_new(srv, cfd));
    }
}

static void server_add_listener(NbdServer *srv, int fd, bool is_inet,
                                const char *unix_path)
{
    NbdListener l = {
        .fd = fd,
        .is_inet = is_inet,
        .unix_path = unix_path ? xstrdup(unix_path) : NULL,
    };

    l.watch = loop_fd_add(srv->ctx->loop, fd,
                          srv->accepting ? LOOP_READ : 0,
                          server_accept_cb, srv);
    NbdListenerVec_append(&srv->listeners, l);
}

bool nbd_server_listen_unix(NbdServer *srv, const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    CLEANUP_CLOSE int fd = -1;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return false;
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return false;
    }
    /* As QEMU: a stale socket file from an earlier run is replaced. */
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        return false;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        unlink(path);
        return false;
    }
    server_add_listener(srv, TAKE_FD(fd), false, path);
    return true;
}

bool nbd_server_listen_inet(NbdServer *srv, const char *host,
                            const char *port, Error **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
    };
    struct addrinfo *res = NULL;
    int err, saved = 0;
    size_t bound = 0;

    err = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
    if (err != 0) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(err));
        return false;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        int one = 1;

        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, SOMAXCONN) < 0) {
            saved = errno;
            close(fd);
            continue;
        }
        server_add_listener(srv, fd, true, NULL);
        bound++;
    }
    freeaddrinfo(res);
    if (bound == 0) {
        error_setg_errno(errp, saved ? saved : EADDRNOTAVAIL,
                         "Failed to bind socket to %s:%s",
                         host ? host : "", port);
        return false;
    }
    return true;
}

bool nbd_server_listen_fd(NbdServer *srv, int fd, Error **errp)
{
    int val = 0, domain = 0;
    socklen_t len = sizeof(val);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &val, &len) < 0 || !val) {
        error_setg(errp, "File descriptor %d is not a listening socket", fd);
        return false;
    }
    len = sizeof(domain);
    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    server_add_listener(srv, fd, domain == AF_INET || domain == AF_INET6,
                        NULL);
    return true;
}

void nbd_server_conn_closed(NbdServer *srv, NbdConn *c)
{
    (void)c;
    srv->nclients--;
    if (srv->stopping) {
        return;
    }
    if (!server_full(srv)) {
        server_set_accepting(srv, true);
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
    for (size_t i = 0; i < srv->listeners.len; i++) {
        NbdListener *l = &srv->listeners.ptr[i];

        loop_fd_del(l->watch);
        close(l->fd);
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
    }
    NbdListenerVec_reset(&srv->listeners);

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
