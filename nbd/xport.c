/* xport.c - the plain socket transport.  TLS (xport-tls.c) provides a
 * second XportOps and swaps conn->xp.ops after STARTTLS. */
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "nbd/internal.h"

static ssize_t plain_recv(Xport *xp, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(xp->fd, buf, len, 0);

        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == ENOTSOCK) {
            n = read(xp->fd, buf, len);
            if (n >= 0) {
                return n;
            }
        }
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static ssize_t plain_recvv(Xport *xp, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {
        .msg_iov = (struct iovec *)iov,
        .msg_iovlen = iovcnt,
    };

    for (;;) {
        ssize_t n = recvmsg(xp->fd, &msg, 0);

        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == ENOTSOCK) {
            n = readv(xp->fd, iov, iovcnt);
            if (n >= 0) {
                return n;
            }
        }
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static ssize_t plain_sendv(Xport *xp, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {
        .msg_iov = (struct iovec *)iov,
        .msg_iovlen = iovcnt,
    };

    for (;;) {
        /* MSG_NOSIGNAL: a vanished client must not kill the daemon. */
        ssize_t n = sendmsg(xp->fd, &msg, MSG_NOSIGNAL);

        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == ENOTSOCK) {
            n = writev(xp->fd, iov, iovcnt);
            if (n >= 0) {
                return n;
            }
        }
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static ssize_t plain_splice(Xport *xp, int pipe_fd, size_t len)
{
    for (;;) {
        /* The socket is non-blocking; NONBLOCK makes the pipe side so
         * too (it is never empty here). */
        ssize_t n = splice(pipe_fd, NULL, xp->fd, NULL, len,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

static void plain_close(Xport *xp)
{
    if (xp->fd >= 0) {
        close(xp->fd);
        xp->fd = -1;
    }
}

static const XportOps plain_ops = {
    .name = "plain",
    .recv = plain_recv,
    .recvv = plain_recvv,
    .sendv = plain_sendv,
    .close = plain_close,
    .splice = plain_splice,
};

void xport_init_plain(Xport *xp, int fd)
{
    xp->ops = &plain_ops;
    xp->fd = fd;
    xp->opaque = NULL;
    xp->tls_established = false;
}
