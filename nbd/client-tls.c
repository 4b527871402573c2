/* client-tls.c - the client's TLS transport and STARTTLS hook; see
 * client-tls.h.
 *
 * The socket stays blocking for the handshake code in client.c, but
 * every wait is a poll() bounded by xp->timeout_ms, in our own push and
 * pull functions: gnutls then never blocks longer than a step may, and
 * a timeout comes back as ETIMEDOUT.  The push uses MSG_NOSIGNAL (a
 * server that hung up must not raise SIGPIPE).
 */
#include "nbd/client-tls.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/util.h"

typedef struct ClientTls {
    gnutls_session_t session;
    NbdClientXport *xp;
    int err;                    /* errno of the last failed push/pull */
    bool established;
    bool nonblocking;           /* push/pull never wait: EAGAIN */
} ClientTls;

static int tls_wait(ClientTls *t, short events)
{
    struct pollfd pfd = { .fd = t->xp->fd, .events = events };
    int rc;

    do {
        rc = poll(&pfd, 1, t->xp->timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc <= 0) {
        t->err = rc == 0 ? ETIMEDOUT : errno;
        return -1;
    }
    return 0;
}

/* After a send or receive failed with errno: true to try again (EINTR,
 * or a blocking session's socket became ready for events); false after
 * telling gnutls why it failed. */
static bool tls_io_again(ClientTls *t, short events)
{
    if (errno == EINTR) {
        return true;
    }
    if (errno == EAGAIN && t->nonblocking) {
        gnutls_transport_set_errno(t->session, EAGAIN);
        return false;
    }
    if (errno != EAGAIN || tls_wait(t, events) < 0) {
        t->err = errno == EAGAIN ? t->err : errno;
        gnutls_transport_set_errno(t->session, EIO);
        return false;
    }
    return true;
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov,
                        int iovcnt)
{
    ClientTls *t = ptr;
    struct msghdr msg = {
        .msg_iov = (struct iovec *)iov,
        .msg_iovlen = iovcnt,
    };

    for (;;) {
        ssize_t n = sendmsg(t->xp->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n >= 0) {
            return n;
        }
        if (!tls_io_again(t, POLLOUT)) {
            return -1;
        }
    }
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    ClientTls *t = ptr;

    for (;;) {
        ssize_t n = recv(t->xp->fd, buf, len, MSG_DONTWAIT);

        if (n >= 0) {
            return n;
        }
        if (!tls_io_again(t, POLLIN)) {
            return -1;
        }
    }
}

/* -errno for a failed gnutls call. */
static int tls_errno(ClientTls *t, ssize_t r)
{
    if (r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) {
        return t->err ? -t->err : -EIO;
    }
    if (r == GNUTLS_E_PREMATURE_TERMINATION) {
        return -ECONNRESET;
    }
    return -EPROTO;
}

static int tls_read_full(NbdClientXport *xp, void *buf, size_t len)
{
    ClientTls *t = xp->opaque;
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = gnutls_record_recv(t->session, p, len);

        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            continue;
        }
        if (n < 0) {
            return tls_errno(t, n);
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int tls_writev_full(NbdClientXport *xp, const struct iovec *iov,
                           int iovcnt)
{
    ClientTls *t = xp->opaque;

    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        while (left > 0) {
            ssize_t n = gnutls_record_send(t->session, p, left);

            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                /* Blocking: gnutls finishes the buffered record when
                 * called again with the same data. */
                continue;
            }
            if (n < 0) {
                return tls_errno(t, n);
            }
            p += n;
            left -= (size_t)n;
        }
    }
    return 0;
}

static void tls_close(NbdClientXport *xp)
{
    ClientTls *t = xp->opaque;

    if (t) {
        if (t->established) {
            /* close_notify, bounded by the step timeout; no waiting for
             * the server's. */
            gnutls_bye(t->session, GNUTLS_SHUT_WR);
        }
        gnutls_deinit(t->session);
        free(t);
        xp->opaque = NULL;
    }
    if (xp->fd >= 0) {
        close(xp->fd);
        xp->fd = -1;
    }
}

static const NbdClientXportOps tls_ops = {
    .read_full = tls_read_full,
    .writev_full = tls_writev_full,
    .close = tls_close,
};

bool nbd_client_xport_tls_start(NbdClientXport *xp, gnutls_session_t session,
                                Error **errp)
{
    ClientTls *t = XNEW(ClientTls);
    int r;

    t->session = session;
    t->xp = xp;
    gnutls_transport_set_ptr(session, t);
    gnutls_transport_set_vec_push_function(session, tls_push);
    gnutls_transport_set_pull_function(session, tls_pull);
    do {
        r = gnutls_handshake(session);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
        if ((r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) &&
            t->err) {
            error_setg_errno(errp, t->err, "TLS handshake failed");
        } else {
            error_setg(errp, "TLS handshake failed: %s", gnutls_strerror(r));
        }
        gnutls_deinit(session);
        free(t);
        return false;
    }
    t->established = true;
    xp->ops = &tls_ops;
    xp->opaque = t;
    return true;
}

void nbd_client_xport_tls_set_nonblocking(NbdClientXport *xp, bool on)
{
    ((ClientTls *)xp->opaque)->nonblocking = on;
}

void nbd_client_xport_tls_moved(NbdClientXport *xp)
{
    ((ClientTls *)xp->opaque)->xp = xp;
}

ssize_t nbd_client_xport_tls_recv(NbdClientXport *xp, void *buf, size_t len)
{
    ClientTls *t = xp->opaque;
    ssize_t n = gnutls_record_recv(t->session, buf, len);

    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
        return -EAGAIN;
    }
    return n >= 0 ? n : tls_errno(t, n);
}

ssize_t nbd_client_xport_tls_sendv(NbdClientXport *xp,
                                   const struct iovec *iov, int iovcnt)
{
    ClientTls *t = xp->opaque;
    size_t total = 0;

    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        while (left > 0) {
            ssize_t n = gnutls_record_send(t->session, p, left);

            if (n < 0) {
                if (total > 0) {
                    return (ssize_t)total;
                }
                if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                    return -EAGAIN;
                }
                return tls_errno(t, n);
            }
            total += (size_t)n;
            p += n;
            left -= (size_t)n;
        }
    }
    return (ssize_t)total;
}

size_t nbd_client_xport_tls_pending(NbdClientXport *xp)
{
    return gnutls_record_check_pending(((ClientTls *)xp->opaque)->session);
}

gnutls_session_t nbd_client_xport_tls_session(NbdClientXport *xp)
{
    return xp->ops == &tls_ops ? ((ClientTls *)xp->opaque)->session : NULL;
}

bool nbd_client_starttls(NbdClientXport *xp, void *opaque, Error **errp)
{
    NbdClientTls *tls = opaque;
    gnutls_session_t s;

    if (!tls_creds_session_new(tls->creds, TLS_ENDPOINT_CLIENT,
                               tls->hostname, &s, errp) ||
        !nbd_client_xport_tls_start(xp, s, errp)) {
        return false;
    }
    /* The check's own message, as QEMU's clients print it ("Certificate
     * does not match the hostname ..."). */
    return tls_creds_check_peer(tls->creds, s, tls->hostname, NULL, errp);
}
