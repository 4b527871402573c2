/* acceptor.c - accept connections, backing off when out of descriptors;
 * see acceptor.h. */
#include "util/acceptor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/util.h"

/* Connections taken per wake-up, so one busy listener does not starve
 * the other watches of the loop. */
#define ACCEPTOR_BATCH 64

typedef struct AcceptorWatch {
    Acceptor *a;
    SockListener l;
    LoopFd *watch;
} AcceptorWatch;

DEFINE_VECTOR_TYPE(AcceptorWatchVec, AcceptorWatch *);

struct Acceptor {
    Loop *loop;
    const char *name;
    AcceptorFn *fn;
    void *opaque;
    AcceptorWatchVec watches;
    LoopTimer *retry;
    uint64_t retry_us;        /* current back-off delay; 0 = accepting */
    bool waiting;             /* unwatched until the retry */
    bool paused;              /* by the owner */
};

static int acceptor_events(const Acceptor *a)
{
    return a->paused || a->waiting ? 0 : LOOP_READ;
}

static void acceptor_update(Acceptor *a)
{
    for (size_t i = 0; i < a->watches.len; i++) {
        loop_fd_set_events(a->watches.ptr[i]->watch, acceptor_events(a));
    }
}

/* accept() failed with err for want of a resource: unwatch, retry
 * later.  Logged once per episode (until an accept succeeds). */
static void acceptor_back_off(Acceptor *a, int err)
{
    if (a->retry_us == 0) {
        log_warn("%s: cannot accept connections: %s; retrying when a "
                 "descriptor is freed", a->name, strerror(err));
        a->retry_us = ACCEPTOR_RETRY_MIN_US;
    } else {
        a->retry_us = MIN(a->retry_us * 2, (uint64_t)ACCEPTOR_RETRY_MAX_US);
    }
    a->waiting = true;
    acceptor_update(a);
    loop_timer_arm(a->retry, a->retry_us);
}

static void acceptor_recovered(Acceptor *a)
{
    if (a->retry_us != 0) {
        a->retry_us = 0;
        log_info("%s: accepting connections again", a->name);
    }
}

static void acceptor_ready(int fd, int events, void *opaque)
{
    AcceptorWatch *w = opaque;
    Acceptor *a = w->a;

    (void)fd;
    (void)events;
    for (int n = 0; n < ACCEPTOR_BATCH && !a->paused && !a->waiting; n++) {
        int cfd = sock_accept(&w->l);

        if (cfd >= 0) {
            acceptor_recovered(a);
            a->fn(a->opaque, cfd);
            continue;
        }
        switch (-cfd) {
        case EINTR:
        case ECONNABORTED:        /* the client gave up first */
        case EPROTO:
            continue;
        case EAGAIN:
            return;
        default:
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything that would
             * fail the same way at once: never spin on it. */
            acceptor_back_off(a, -cfd);
            return;
        }
    }
}

/* Watch again: the next wake-up tries accept() and either succeeds or
 * backs off longer. */
static void acceptor_retry(void *opaque)
{
    Acceptor *a = opaque;

    if (a->waiting) {
        a->waiting = false;
        acceptor_update(a);
    }
}

Acceptor *acceptor_new(Loop *loop, const char *name, AcceptorFn *fn,
                       void *opaque)
{
    Acceptor *a = XNEW(Acceptor);

    a->loop = loop;
    a->name = name;
    a->fn = fn;
    a->opaque = opaque;
    a->retry = loop_timer_new(loop, acceptor_retry, a);
    return a;
}

void acceptor_add(Acceptor *a, SockListenerVec *ls)
{
    for (size_t i = 0; i < ls->len; i++) {
        AcceptorWatch *w = XNEW(AcceptorWatch);

        w->a = a;
        w->l = ls->ptr[i];
        w->watch = loop_fd_add(a->loop, w->l.fd, acceptor_events(a),
                               acceptor_ready, w);
        AcceptorWatchVec_append(&a->watches, w);
    }
    SockListenerVec_reset(ls);
}

void acceptor_set_paused(Acceptor *a, bool paused)
{
    if (a->paused != paused) {
        a->paused = paused;
        acceptor_update(a);
    }
}

void acceptor_fd_freed(Acceptor *a)
{
    /* (A timer still armed finds nothing to do when it fires.) */
    if (a != NULL && a->waiting) {
        acceptor_retry(a);
    }
}

bool acceptor_backing_off(const Acceptor *a)
{
    return a->retry_us != 0;
}

void acceptor_free(Acceptor *a)
{
    if (a == NULL) {
        return;
    }
    for (size_t i = 0; i < a->watches.len; i++) {
        AcceptorWatch *w = a->watches.ptr[i];

        loop_fd_del(w->watch);
        sock_listener_close(&w->l);
        free(w);
    }
    AcceptorWatchVec_reset(&a->watches);
    loop_timer_free(a->retry);
    free(a);
}
