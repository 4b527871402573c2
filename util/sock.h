/* sock.h - stream sockets: listening, connecting, inherited descriptors.
 *
 * The one place where blockd creates sockets (QMP monitors, the NBD
 * server, blockctl), so that they all behave the same:
 *
 *  - every descriptor is close-on-exec; listening ones are non-blocking;
 *  - one backlog, SOCK_BACKLOG: clients over a connection limit wait in
 *    it (the kernel caps it at net.core.somaxconn);
 *  - inet listens on every address the host resolves to ("localhost":
 *    127.0.0.1 and ::1), each IPv6 socket IPV6_V6ONLY, and fails only
 *    if none can be bound; with port 0 the kernel picks a port for the
 *    first address and the others get the same one;
 *  - a unix path: a stale socket (one nobody listens on any more) is
 *    replaced; a socket someone still listens on is refused with
 *    EADDRINUSE, as a second QEMU on the same path fails to bind; a
 *    regular file, a directory or anything else is refused and left as
 *    it is;
 *  - at close, the socket file is removed only if it is still the one
 *    we bound (same device and inode): a path taken over meanwhile by
 *    someone else is not ours to remove.
 *
 * Descriptors by number (addr.type=fd): only a descriptor handed to
 * blockd from outside may become a listener -- inherited at start-up
 * (sock_inherited_scan() records them) or passed over QMP -- and each
 * is used once.  A number that is one of blockd's own sockets (say the
 * QMP listener) is refused, so nothing is served twice or closed twice.
 *
 * sock_connect() blocks (up to its timeout), and resolving a host name
 * may wait for DNS; nothing else blocks.  Any thread, except the
 * inherited set, which belongs to the loop thread (main() before the
 * loop, then QMP handlers).
 */
#ifndef BLOCKD_UTIL_SOCK_H
#define BLOCKD_UTIL_SOCK_H

#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "util/error.h"
#include "util/vector.h"

/* The listen() backlog of every listening socket we create. */
#define SOCK_BACKLOG SOMAXCONN

typedef enum SockAddrType {
    SOCK_ADDR_UNIX,
    SOCK_ADDR_INET,
    SOCK_ADDR_FD,
} SockAddrType;

/* Where to listen or connect.  Strings are borrowed for the call. */
typedef struct SockAddr {
    SockAddrType type;
    const char *path;         /* UNIX: socket file path */
    const char *host;         /* INET: name or address; NULL or "" = any
                               * local address (listen only) */
    const char *port;         /* INET: number or service name */
    int fd;                   /* FD: a listening socket (sock_listen) */
} SockAddr;

/* One listening socket from sock_listen(). */
typedef struct SockListener {
    int fd;                   /* non-blocking, close-on-exec */
    bool is_inet;             /* TCP: sock_accept() sets TCP_NODELAY */
    char *unix_path;          /* the socket file we bound, or NULL */
    dev_t dev;                /* ... and its identity when bound */
    ino_t ino;
} SockListener;
DEFINE_VECTOR_TYPE(SockListenerVec, SockListener);

/* Listen on addr and append the listening socket(s) to *out (one for
 * unix and fd, one per address for inet).  For SOCK_ADDR_FD the
 * descriptor must be a listening stream socket (see sock_check_listening;
 * ownership is the caller's check, see sock_inherited_take) and becomes
 * the listener's.  Returns false with errp set, appending nothing. */
bool sock_listen(const SockAddr *addr, SockListenerVec *out, Error **errp);

/* Close l's socket and remove its socket file if that is still the one
 * we bound.  l->fd becomes -1; safe to call twice. */
void sock_listener_close(SockListener *l);
/* Close every listener of v and empty it. */
void sock_listeners_close(SockListenerVec *v);

/* Accept one connection on l: a non-blocking close-on-exec socket
 * (TCP_NODELAY for inet), or -errno (-EAGAIN when none is waiting). */
int sock_accept(const SockListener *l);

/* Connect to addr (unix or inet) and return a blocking close-on-exec
 * socket, or -1 with errp set.  For inet every address is tried, each
 * for at most timeout_ms milliseconds (-1: the kernel's own limit), and
 * TCP_NODELAY is set: our peers exchange small messages. */
int sock_connect(const SockAddr *addr, int timeout_ms, Error **errp);

/* Check that fd is a listening stream socket; otherwise false with
 * errp saying why ("not open", "not a socket", "not a stream socket",
 * "not listening"). */
bool sock_check_listening(int fd, Error **errp);

/* ---- descriptors inherited at start-up -------------------------------- */

/* Record which descriptors above stderr are open now.  Call first thing
 * in main(), before blockd opens anything: what is open then was
 * inherited (a supervisor's listening socket, say).  Calling it again
 * starts over.  Returns how many were found. */
size_t sock_inherited_scan(void);

/* Take inherited descriptor fd to listen on: true if fd was inherited,
 * not taken before, and is a listening stream socket; it is then no
 * longer offered (each inherited descriptor is used once, by whoever
 * took it, which closes it).  Otherwise false with errp saying why:
 * not open, one of blockd's own descriptors (not inherited, or already
 * taken), not a socket, not a stream socket, not listening. */
bool sock_inherited_take(int fd, Error **errp);

/* ---- socket activation (systemd's LISTEN_FDS protocol) ---------------- */

/* Read $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES (sd_listen_fds(3)):
 * when LISTEN_PID is our PID, descriptors 3 .. 3+LISTEN_FDS-1 were
 * passed by a socket-activating supervisor, named by the colon-separated
 * LISTEN_FDNAMES (a socket unit's FileDescriptorName=, else the unit's
 * name).  Call after sock_inherited_scan(); the variables are removed
 * from the environment.  Returns how many were recorded; false-y input
 * (no variables, another PID, bad numbers) records none.
 *
 * An activated socket is used in one of two ways, once:
 *  - by name: sock_activated_take() (--chardev ...,fd=NAME, and
 *    nbd-server-start's addr.type=fd,addr.str=NAME);
 *  - by address: sock_listen() on a unix path or an inet address that
 *    an activated socket is already bound to takes that socket instead
 *    of binding a new one, so a unit's command line can name the same
 *    paths with and without socket activation.  The socket file of such
 *    a listener belongs to the supervisor: it is not removed at close. */
size_t sock_activation_scan(void);

/* Take the first activated socket named name that is not taken yet
 * (several may share a name: a socket unit with two ListenStream=).
 * Returns the descriptor, now the caller's, or -1 with errp set. */
int sock_activated_take(const char *name, Error **errp);

/* Whether an activated socket named name is still there to take. */
bool sock_activated_has(const char *name);

#endif
