/* xport-tls.c - the TLS transport: gnutls over the connection's
 * non-blocking socket.  STARTTLS (handshake.c) swaps conn->xp to these
 * ops once its ACK is on the wire; the engine in conn.c and the
 * transmission code read and write through the same XportOps as in
 * clear, so the data path has no TLS conditionals and no copies beyond
 * gnutls's record layer.
 *
 * Non-blocking rules (gnutls manual, "Asynchronous operation"):
 *  - GNUTLS_E_AGAIN / GNUTLS_E_INTERRUPTED become -EAGAIN; the engine
 *    waits for the event gnutls_record_get_direction() names (the
 *    handshake) or for readability/writability (records);
 *  - a record send that returned GNUTLS_E_AGAIN is already encrypted
 *    and partly buffered inside gnutls: the next send must pass the same
 *    data again (gnutls then finishes the buffered record and reports
 *    its length).  The engine does: a short or EAGAIN send leaves its
 *    iovecs where they were, and only appends behind them;
 *  - gnutls may hold decrypted bytes of a record the caller has not
 *    read yet (gnutls_record_check_pending): the engine reads until
 *    recv says -EAGAIN, which gnutls only says with its buffer empty,
 *    and every place that pauses input resumes by calling the input
 *    loop directly, not by waiting for the socket.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "nbd/internal.h"
#include "util/util.h"

static gnutls_session_t tls_session(Xport *xp)
{
    return xp->opaque;
}

/* gnutls's own push would send() without MSG_NOSIGNAL: a client that
 * vanished must not raise SIGPIPE in whoever embeds us. */
static ssize_t tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov,
                        int iovcnt)
{
    Xport *xp = ptr;
    struct msghdr msg = {
        .msg_iov = (struct iovec *)iov,
        .msg_iovlen = iovcnt,
    };
    ssize_t n;

    do {
        n = sendmsg(xp->fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        gnutls_transport_set_errno(tls_session(xp), errno);
    }
    return n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    Xport *xp = ptr;
    ssize_t n;

    do {
        n = recv(xp->fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        gnutls_transport_set_errno(tls_session(xp), errno);
    }
    return n;
}

static ssize_t tls_err(ssize_t r)
{
    switch (r) {
    case GNUTLS_E_AGAIN:
    case GNUTLS_E_INTERRUPTED:
        return -EAGAIN;
    case GNUTLS_E_PREMATURE_TERMINATION:
        return -ECONNRESET;
    case GNUTLS_E_PUSH_ERROR:
        return -EPIPE;
    default:
        return -EPROTO;
    }
}

static ssize_t tls_recv(Xport *xp, void *buf, size_t len)
{
    ssize_t n = gnutls_record_recv(tls_session(xp), buf, len);

    return n >= 0 ? n : tls_err(n);
}

static ssize_t tls_sendv(Xport *xp, const struct iovec *iov, int iovcnt)
{
    gnutls_session_t s = tls_session(xp);
    size_t total = 0;

    /* One record per call of at most the record size: the iovecs are
     * sent in order, stopping at the first short or blocked send. */
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;

        while (left) {
            ssize_t n = gnutls_record_send(s, p, left);

            if (n < 0) {
                if (total) {
                    return total;
                }
                return tls_err(n);
            }
            total += n;
            p += n;
            left -= n;
        }
    }
    return total;
}

static size_t tls_pending(Xport *xp)
{
    return gnutls_record_check_pending(tls_session(xp));
}

static void tls_close(Xport *xp)
{
    gnutls_session_t s = tls_session(xp);

    /* Best effort close_notify; never wait for the peer's.  The socket
     * closes before the session is freed: a client waiting for the end
     * of the connection (libnbd after NBD_CMD_DISC) need not wait for
     * gnutls_deinit, which takes tens of microseconds. */
    if (s && xp->tls_established) {
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    if (xp->fd >= 0) {
        close(xp->fd);
        xp->fd = -1;
    }
    if (s) {
        gnutls_deinit(s);
        xp->opaque = NULL;
    }
}

static const XportOps tls_ops = {
    .name = "tls",
    .recv = tls_recv,
    .sendv = tls_sendv,
    .pending = tls_pending,
    .close = tls_close,
};

void xport_tls_start(Xport *xp, struct gnutls_session_int *session)
{
    xp->ops = &tls_ops;
    xp->opaque = session;
    xp->tls_established = false;
    gnutls_transport_set_ptr(session, xp);
    gnutls_transport_set_vec_push_function(session, tls_push);
    gnutls_transport_set_pull_function(session, tls_pull);
}

int xport_tls_handshake(Xport *xp, bool *want_write, Error **errp)
{
    gnutls_session_t s = tls_session(xp);
    int r, tries = 0;

    /* Non-fatal results other than "would block" (a warning alert, say)
     * mean: call again.  A few times, not forever. */
    do {
        r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN &&
             r != GNUTLS_E_INTERRUPTED && ++tries < 8);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
        *want_write = gnutls_record_get_direction(s) == 1;
        return 0;
    }
    if (r < 0) {
        error_setg(errp, "TLS handshake failed: %s", gnutls_strerror(r));
        return tls_err(r) == -EAGAIN ? -EPROTO : (int)tls_err(r);
    }
    xp->tls_established = true;
    return 1;
}

struct gnutls_session_int *xport_tls_session(Xport *xp)
{
    return xp->ops == &tls_ops ? tls_session(xp) : NULL;
}
