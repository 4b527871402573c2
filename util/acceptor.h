/* acceptor.h - accept connections on listening sockets, with back-off.
 *
 * What the QMP monitors and the NBD server share: a set of listeners
 * (from sock_listen) watched on the loop, each connection handed to a
 * callback, and what to do when accept() fails for lack of resources.
 *
 * Out of descriptors (EMFILE/ENFILE, or ENOBUFS/ENOMEM) the pending
 * connection stays in the backlog and the listener stays readable: a
 * level-triggered watch would call us again at once, forever.  So the
 * acceptor stops watching its listeners and retries when the owner says
 * a descriptor was freed (acceptor_fd_freed) or a short timer fires
 * (ACCEPTOR_RETRY_MIN_US, doubling up to ACCEPTOR_RETRY_MAX_US while the
 * shortage lasts: descriptors freed by another part of the daemon are
 * noticed without a hook).  One warning when an episode starts, one
 * line when it ends; existing connections are served all along.
 *
 *   accepting ──accept fails (EMFILE...)──> waiting: unwatched,
 *       ^       warning, once per episode      timer armed
 *       │                                        │ timer fires, or
 *       │                                        v acceptor_fd_freed
 *       └──accept succeeds──────────────────  retrying: watched again;
 *          "accepting again"                  fails: waiting, delay x2
 *
 * Loop thread only.
 */
#ifndef BLOCKD_UTIL_ACCEPTOR_H
#define BLOCKD_UTIL_ACCEPTOR_H

#include <stdbool.h>

#include "util/loop.h"
#include "util/sock.h"

#define ACCEPTOR_RETRY_MIN_US (50 * 1000)
#define ACCEPTOR_RETRY_MAX_US (1000 * 1000)

typedef struct Acceptor Acceptor;

/* A new connection: fd (non-blocking, close-on-exec) is the callee's.
 * The callee may pause the acceptor, not free it. */
typedef void AcceptorFn(void *opaque, int fd);

/* name prefixes log lines ("nbd", "monitor"); borrowed, must outlive
 * the acceptor (a string literal). */
Acceptor *acceptor_new(Loop *loop, const char *name, AcceptorFn *fn,
                       void *opaque);
/* Take over every listener of *ls (which is left empty) and watch them. */
void acceptor_add(Acceptor *a, SockListenerVec *ls);
/* Stop or resume accepting, e.g. at a connection limit: clients then
 * wait in the backlog. */
void acceptor_set_paused(Acceptor *a, bool paused);
/* The owner closed a descriptor: if backing off, retry now. */
void acceptor_fd_freed(Acceptor *a);
/* True while backing off after a failed accept (for tests and logs). */
bool acceptor_backing_off(const Acceptor *a);
/* Close the listeners (removing our socket files) and free.  NULL-safe;
 * not from inside the acceptor's own callback. */
void acceptor_free(Acceptor *a);

#endif
