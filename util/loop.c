/* loop.c - libevent behind the loop.h interface.
 *
 * loop_post() is the only cross-thread entry: it appends to a mutex-
 * protected queue and writes to an eventfd the loop watches.  Posted
 * calls run in FIFO order on the loop thread.  A post from the loop
 * thread itself (an inline request's completion, a deferred free) makes
 * the same event active instead: no eventfd write, wake-up and read,
 * three system calls per request saved.
 *
 * Control watches (QMP monitors, loop_fd_add_control()) are not
 * libevent events: they live in an epoll set of their own (ctl_fd),
 * which libevent watches like any fd so that an idle loop wakes for
 * them.  A busy loop also checks that set, without blocking, every
 * LOOP_CTL_EVERY callbacks (fd callbacks and posted calls alike):
 * libevent runs every event one epoll_wait returned before it polls
 * again, and then the burst of completions those posted, and on a loop
 * serving 200 busy NBD connections that turn takes milliseconds, all of
 * which a command would otherwise wait.
 *
 * Serving a command before the rest of the turn must not let it
 * overtake what a client did before sending it.  The case that
 * matters is a hang-up: a script closes its NBD connection, then asks
 * for a safe block-export-del, which fails with "still in use" if the
 * end of file has not been read yet.  So every other watch is also in
 * a hang-up set (hup_fd: EPOLLRDHUP, reported once), and before a
 * control watch is served out of turn the watches that hung up are
 * served first.  The hang-up set exists from the loop's first control
 * watch on: loops without one (I/O threads, blockd-nbd) pay nothing.
 */
#include "util/loop.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"

typedef struct LoopPost {
    LoopFn *fn;
    void *opaque;
    struct LoopPost *next;
} LoopPost;

struct Loop {
    struct event_base *base;
    bool stopping;
    int post_fd;                   /* eventfd poked by loop_post() */
    struct event *post_ev;
    pthread_mutex_t post_lock;
    LoopPost *post_head, *post_tail;
    LoopPost *post_free;           /* recycled nodes (under post_lock) */
    pthread_t thread;              /* running loop_run(), if running */
    bool running;
    struct event *signals[65];
    LoopFn *signal_fn[65];
    void *signal_opaque[65];
    pthread_t owner;               /* the thread that runs it */
    uint64_t poll_ns;              /* loop_poll_hint() since the last
                                    * wait: poll this long first, ns */
    unsigned dispatched;           /* fd callbacks run (wraps): what
                                    * polling waits to see change */
    int ctl_fd;                    /* epoll set of the control watches,
                                    * -1 until the first one */
    struct event *ctl_ev;          /* ctl_fd in the libevent base */
    int hup_fd;                    /* epoll set of the other watches'
                                    * hang-ups, -1 while ctl_fd is */
    unsigned nctl;                 /* control watches now */
    unsigned since_ctl;            /* callbacks since ctl_fd was
                                    * checked */
    bool ctl_blocked;              /* a command's posts still to run */
    uint64_t posts;                /* loop_post() calls (post_lock) */
    struct LoopFd *fds;            /* every other watch (for hup_fd) */
};

/* Callbacks (fd callbacks and posted calls) between two checks of the
 * control set: a command waits for at most this many, about 16 4 KiB
 * requests (a read and its posted completion, 20 us together at QD 1,
 * 0.3 ms), and the check, one epoll_wait that finds nothing (about
 * 1 us here), adds 60-70 ns to a request (0.3-0.5%, under 1% at QD 1
 * and 16). */
#define LOOP_CTL_EVERY 32
/* Hang-ups served before a control watch, at most. */
#define LOOP_HUP_BATCH 64

struct LoopFd {
    Loop *loop;
    struct event *ev;
    int fd;
    int events;
    LoopFdFn *fn;
    void *opaque;
    bool control;                  /* in loop->ctl_fd, not libevent */
    bool in_ctl;                   /* registered there (events != 0) */
    bool in_hup;                   /* registered in loop->hup_fd */
    struct LoopFd *prev, *next;    /* loop->fds (not control) */
};

struct LoopTimer {
    struct event *ev;
    LoopFn *fn;
    void *opaque;
};

static void loop_ctl_serve(Loop *loop);

/* One callback (an fd's or a posted call) done: every LOOP_CTL_EVERY,
 * serve the control watches that are ready. */
static void loop_ctl_tick(Loop *loop)
{
    if (loop->nctl > 0 && ++loop->since_ctl >= LOOP_CTL_EVERY) {
        loop_ctl_serve(loop);
    }
}

static void loop_post_cb(evutil_socket_t fd, short what, void *opaque)
{
    Loop *loop = opaque;
    uint64_t cnt;
    LoopPost *list, *p;

    /* EV_READ: the eventfd was poked (by another thread); a post from
     * the loop thread activates the event with EV_TIMEOUT only. */
    if ((what & EV_READ) && read(fd, &cnt, sizeof(cnt)) < 0 &&
        errno != EAGAIN) {
        log_warn("eventfd read failed: %m");
    }
    pthread_mutex_lock(&loop->post_lock);
    list = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_lock);

    while (list != NULL) {
        p = list;
        list = p->next;
        p->fn(p->opaque);
        pthread_mutex_lock(&loop->post_lock);
        p->next = loop->post_free;
        loop->post_free = p;
        pthread_mutex_unlock(&loop->post_lock);
        /* Inline requests' completions (their replies) come here in a
         * burst, one per connection served in the turn. */
        if (__atomic_load_n(&loop->running, __ATOMIC_RELAXED)) {
            loop_ctl_tick(loop);
        }
    }
}

Loop *loop_new(void)
{
    Loop *loop = XNEW(Loop);

    loop->base = event_base_new();
    if (loop->base == NULL) {
        free(loop);
        return NULL;
    }
    pthread_mutex_init(&loop->post_lock, NULL);
    loop->post_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->post_fd < 0) {
        event_base_free(loop->base);
        free(loop);
        return NULL;
    }
    loop->post_ev = event_new(loop->base, loop->post_fd,
                              EV_READ | EV_PERSIST, loop_post_cb, loop);
    event_add(loop->post_ev, NULL);
    loop->ctl_fd = -1;
    loop->hup_fd = -1;
    /* The creator runs the command line's opens on it before
     * loop_run(), which takes it over again. */
    loop->owner = pthread_self();
    return loop;
}

bool loop_is_current(const Loop *loop)
{
    return loop != NULL && pthread_equal(loop->owner, pthread_self());
}

void loop_free(Loop *loop)
{
    LoopPost *p;
    size_t i;

    if (loop == NULL) {
        return;
    }
    /* Deferred frees posted during teardown still have to happen. */
    loop_run_posted(loop);
    for (i = 0; i < ARRAY_SIZE(loop->signals); i++) {
        if (loop->signals[i] != NULL) {
            event_free(loop->signals[i]);
        }
    }
    if (loop->ctl_ev != NULL) {
        event_free(loop->ctl_ev);
        close(loop->ctl_fd);
        close(loop->hup_fd);
    }
    event_free(loop->post_ev);
    close(loop->post_fd);
    while ((p = loop->post_head) != NULL) {
        loop->post_head = p->next;
        free(p);
    }
    while ((p = loop->post_free) != NULL) {
        loop->post_free = p->next;
        free(p);
    }
    pthread_mutex_destroy(&loop->post_lock);
    event_base_free(loop->base);
    free(loop);
}

void loop_run_posted(Loop *loop)
{
    while (loop->post_head != NULL) {
        loop_post_cb(loop->post_fd, EV_READ, loop);
    }
}

/* Before sleeping, as loop_poll_hint() asked: check the watches
 * without blocking until one fires or the time is up.  false if
 * libevent failed. */
static bool loop_poll(Loop *loop)
{
    uint64_t until = loop_now_ns() + loop->poll_ns;
    unsigned seen = loop->dispatched;

    loop->poll_ns = 0;
    do {
        if (event_base_loop(loop->base, EVLOOP_NONBLOCK) < 0) {
            return false;
        }
    } while (seen == loop->dispatched && loop->poll_ns == 0 &&
             !loop->stopping && loop_now_ns() < until);
    return true;
}

int loop_run(Loop *loop)
{
    int ret = 0;

    loop->owner = pthread_self();
    loop->stopping = false;
    loop->thread = pthread_self();
    __atomic_store_n(&loop->running, true, __ATOMIC_RELEASE);
    while (!loop->stopping) {
        if (loop->poll_ns) {
            if (!loop_poll(loop)) {
                ret = -1;
                break;
            }
            continue;
        }
        if (event_base_loop(loop->base, EVLOOP_ONCE) < 0) {
            ret = -1;
            break;
        }
    }
    __atomic_store_n(&loop->running, false, __ATOMIC_RELEASE);
    return ret;
}

void loop_stop(Loop *loop)
{
    loop->stopping = true;
    event_base_loopbreak(loop->base);
}

/* ---- control watches and hang-ups (see the top of the file) ---------- */

static uint32_t loop_epoll_events(int events)
{
    return ((events & LOOP_READ) ? EPOLLIN : 0) |
           ((events & LOOP_WRITE) ? EPOLLOUT : 0);
}

/* Run w's callback for what epoll reported, within what w watches
 * (an error or hang-up wakes both directions, as in libevent).  w may
 * be freed by it. */
static void loop_fd_call(LoopFd *w, uint32_t got)
{
    int events = 0;

    if (got & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        events |= LOOP_READ;
    }
    if (got & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        events |= LOOP_WRITE;
    }
    events &= w->events;
    if (events != 0) {
        w->loop->dispatched++;
        w->fn(w->fd, events, w->opaque);
    }
}

/* Put w in the hang-up set: reported once (EPOLLONESHOT), when its
 * peer shuts down or the socket fails.  Descriptors epoll cannot watch
 * (regular files) just stay out. */
static void loop_hup_add(Loop *loop, LoopFd *w)
{
    struct epoll_event ev = {
        .events = EPOLLRDHUP | EPOLLONESHOT,
        .data.ptr = w,
    };

    w->in_hup = epoll_ctl(loop->hup_fd, EPOLL_CTL_ADD, w->fd, &ev) == 0;
}

/* Serve the watches that hung up since they were registered, before a
 * control watch is served out of turn.  A watch not reading now finds
 * its end of file once it reads again, as it would have anyway. */
static void loop_hup_serve(Loop *loop)
{
    struct epoll_event ev;

    /* One at a time: a callback may free any other watch. */
    for (int i = 0; i < LOOP_HUP_BATCH && !loop->stopping; i++) {
        if (epoll_wait(loop->hup_fd, &ev, 1, 0) != 1) {
            break;
        }
        loop_fd_call(ev.data.ptr, EPOLLRDHUP | (ev.events & EPOLLERR));
    }
}

static uint64_t loop_posts_made(Loop *loop)
{
    uint64_t n;

    pthread_mutex_lock(&loop->post_lock);
    n = loop->posts;
    pthread_mutex_unlock(&loop->post_lock);
    return n;
}

static void loop_ctl_unblock(void *opaque)
{
    Loop *loop = opaque;

    loop->ctl_blocked = false;
}

/* Serve one control watch that is ready, hang-ups first.  Called
 * between two callbacks, never inside one.
 *
 * What a command posted (deferred frees: block-export-del's export,
 * say) runs before the next command, as it did when every event went
 * through libevent: posts are FIFO, behind the turn's completions, so
 * the control set stays blocked until a marker posted after them
 * runs.  Commands that post nothing (queries) do not block it. */
static void loop_ctl_serve(Loop *loop)
{
    struct epoll_event ev;
    uint64_t posts;

    loop->since_ctl = 0;
    if (loop->ctl_blocked || epoll_wait(loop->ctl_fd, &ev, 1, 0) != 1) {
        return;
    }
    posts = loop_posts_made(loop);
    loop_hup_serve(loop);
    /* Again: a hang-up's callback may have changed the control set. */
    if (!loop->stopping && epoll_wait(loop->ctl_fd, &ev, 1, 0) == 1) {
        loop_fd_call(ev.data.ptr, ev.events);
    }
    if (loop_posts_made(loop) != posts) {
        loop->ctl_blocked = true;
        loop_post(loop, loop_ctl_unblock, loop);
    }
}

static void loop_ctl_cb(evutil_socket_t fd, short what, void *opaque)
{
    (void)fd;
    (void)what;
    loop_ctl_serve(opaque);
}

/* The loop's first control watch: its epoll set, watched by libevent,
 * and the hang-up set with every watch there already is. */
static bool loop_ctl_init(Loop *loop)
{
    loop->ctl_fd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->ctl_fd < 0) {
        return false;
    }
    loop->hup_fd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->hup_fd < 0) {
        close(loop->ctl_fd);
        loop->ctl_fd = -1;
        return false;
    }
    loop->ctl_ev = event_new(loop->base, loop->ctl_fd, EV_READ | EV_PERSIST,
                             loop_ctl_cb, loop);
    event_add(loop->ctl_ev, NULL);
    for (LoopFd *w = loop->fds; w != NULL; w = w->next) {
        loop_hup_add(loop, w);
    }
    return true;
}

static void loop_ctl_apply(LoopFd *w)
{
    struct epoll_event ev = {
        .events = loop_epoll_events(w->events),
        .data.ptr = w,
    };

    /* Registered only while watching something: epoll reports errors
     * and hang-ups even with an empty mask. */
    if (w->events == 0) {
        if (w->in_ctl) {
            epoll_ctl(w->loop->ctl_fd, EPOLL_CTL_DEL, w->fd, NULL);
            w->in_ctl = false;
        }
        return;
    }
    if (epoll_ctl(w->loop->ctl_fd, w->in_ctl ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                  w->fd, &ev) < 0) {
        log_warn("epoll_ctl on a control watch failed: %m");
        return;
    }
    w->in_ctl = true;
}

static void loop_fd_cb(evutil_socket_t fd, short what, void *opaque)
{
    LoopFd *w = opaque;
    Loop *loop = w->loop;          /* w may be gone after its callback */
    int events = 0;

    loop->dispatched++;
    if (what & EV_READ) {
        events |= LOOP_READ;
    }
    if (what & EV_WRITE) {
        events |= LOOP_WRITE;
    }
    w->fn(fd, events, w->opaque);
    loop_ctl_tick(loop);
}

static void loop_fd_apply(LoopFd *w)
{
    short what = EV_PERSIST;

    if (w->control) {
        loop_ctl_apply(w);
        return;
    }

    if (w->events & LOOP_READ) {
        what |= EV_READ;
    }
    if (w->events & LOOP_WRITE) {
        what |= EV_WRITE;
    }
    if (w->ev != NULL) {
        event_del(w->ev);
        event_assign(w->ev, w->loop->base, w->fd, what, loop_fd_cb, w);
    } else {
        w->ev = event_new(w->loop->base, w->fd, what, loop_fd_cb, w);
    }
    if (w->events != 0) {
        event_add(w->ev, NULL);
    }
}

/* A watch of fd for events, on no list and in no event set yet. */
static LoopFd *loop_fd_new(Loop *loop, int fd, int events, LoopFdFn *fn,
                           void *opaque)
{
    LoopFd *w = XNEW(LoopFd);

    w->loop = loop;
    w->fd = fd;
    w->events = events;
    w->fn = fn;
    w->opaque = opaque;
    return w;
}

LoopFd *loop_fd_add(Loop *loop, int fd, int events, LoopFdFn *fn,
                    void *opaque)
{
    LoopFd *w = loop_fd_new(loop, fd, events, fn, opaque);

    loop_fd_apply(w);
    w->next = loop->fds;
    if (loop->fds != NULL) {
        loop->fds->prev = w;
    }
    loop->fds = w;
    if (loop->hup_fd >= 0) {
        loop_hup_add(loop, w);
    }
    return w;
}

LoopFd *loop_fd_add_control(Loop *loop, int fd, int events, LoopFdFn *fn,
                            void *opaque)
{
    LoopFd *w;

    if (loop->ctl_fd < 0 && !loop_ctl_init(loop)) {
        log_warn("no epoll set for control watches (%m): a plain watch");
        return loop_fd_add(loop, fd, events, fn, opaque);
    }
    w = loop_fd_new(loop, fd, events, fn, opaque);
    w->control = true;
    loop->nctl++;
    loop_ctl_apply(w);
    return w;
}

void loop_fd_set_events(LoopFd *w, int events)
{
    if (w->events != events) {
        w->events = events;
        loop_fd_apply(w);
    }
}

int loop_fd_events(const LoopFd *w)
{
    return w->events;
}

void loop_fd_del(LoopFd *w)
{
    if (w == NULL) {
        return;
    }
    if (w->control) {
        if (w->in_ctl) {
            epoll_ctl(w->loop->ctl_fd, EPOLL_CTL_DEL, w->fd, NULL);
        }
        w->loop->nctl--;
        free(w);
        return;
    }
    if (w->in_hup) {
        epoll_ctl(w->loop->hup_fd, EPOLL_CTL_DEL, w->fd, NULL);
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        w->loop->fds = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    /* event_free() on a running callback's event is safe in libevent 2. */
    event_free(w->ev);
    free(w);
}

static void loop_timer_cb(evutil_socket_t fd, short what, void *opaque)
{
    LoopTimer *t = opaque;

    (void)fd;
    (void)what;
    t->fn(t->opaque);
}

LoopTimer *loop_timer_new(Loop *loop, LoopFn *fn, void *opaque)
{
    LoopTimer *t = XNEW(LoopTimer);

    t->fn = fn;
    t->opaque = opaque;
    t->ev = evtimer_new(loop->base, loop_timer_cb, t);
    return t;
}

void loop_timer_arm(LoopTimer *t, uint64_t usec)
{
    struct timeval tv = {
        .tv_sec = usec / 1000000,
        .tv_usec = usec % 1000000,
    };

    evtimer_add(t->ev, &tv);
}

void loop_timer_free(LoopTimer *t)
{
    if (t != NULL) {
        event_free(t->ev);
        free(t);
    }
}

void loop_post(Loop *loop, LoopFn *fn, void *opaque)
{
    static const uint64_t one = 1;
    LoopPost *p;
    bool was_empty;

    pthread_mutex_lock(&loop->post_lock);
    p = loop->post_free;
    if (p != NULL) {
        loop->post_free = p->next;
    } else {
        p = xmalloc(sizeof(*p));
    }
    p->fn = fn;
    p->opaque = opaque;
    p->next = NULL;
    loop->posts++;
    was_empty = loop->post_head == NULL;
    if (loop->post_tail != NULL) {
        loop->post_tail->next = p;
    } else {
        loop->post_head = p;
    }
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_lock);

    /* Only the first post of a batch needs to wake the loop; the loop
     * thread is awake and only has to find the event active when the
     * current callback returns. */
    if (!was_empty) {
        return;
    }
    if (__atomic_load_n(&loop->running, __ATOMIC_ACQUIRE) &&
        pthread_equal(pthread_self(), loop->thread)) {
        event_active(loop->post_ev, EV_TIMEOUT, 0);
        return;
    }
    if (write(loop->post_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_warn("eventfd write failed: %m");
    }
}

static void loop_signal_cb(evutil_socket_t sig, short what, void *opaque)
{
    Loop *loop = opaque;

    (void)what;
    loop->signal_fn[sig](loop->signal_opaque[sig]);
}

bool loop_signal(Loop *loop, int signum, LoopFn *fn, void *opaque)
{
    if (signum <= 0 || (size_t)signum >= ARRAY_SIZE(loop->signals)) {
        return false;
    }
    if (loop->signals[signum] != NULL) {
        event_free(loop->signals[signum]);
    }
    loop->signal_fn[signum] = fn;
    loop->signal_opaque[signum] = opaque;
    loop->signals[signum] = evsignal_new(loop->base, signum,
                                         loop_signal_cb, loop);
    return loop->signals[signum] != NULL &&
           evsignal_add(loop->signals[signum], NULL) == 0;
}

void loop_poll_hint(Loop *loop, uint64_t ns)
{
    if (ns > loop->poll_ns) {
        loop->poll_ns = ns;
    }
}

void loop_poll_window_init(LoopPollWindow *w, uint64_t max_ns)
{
    w->max_ns = max_ns;
    w->cur_ns = max_ns;
    w->waits = 0;
}

uint64_t loop_poll_window_next(LoopPollWindow *w)
{
    if (w->max_ns == 0) {
        return 0;
    }
    if (w->cur_ns < w->max_ns && ++w->waits % LOOP_POLL_PROBE == 0) {
        return w->max_ns;
    }
    return w->cur_ns;
}

void loop_poll_window_update(LoopPollWindow *w, uint64_t polled_ns,
                             uint64_t waited_ns)
{
    uint64_t grown;

    if (waited_ns <= polled_ns) {
        /* Caught (a probe's catch opens the window that far). */
        if (waited_ns > w->cur_ns) {
            w->cur_ns = MIN(w->max_ns, 2 * waited_ns);
        }
        return;
    }
    if (waited_ns > w->max_ns) {
        w->cur_ns /= 2;            /* too slow to poll for */
        return;
    }
    grown = MAX(2 * w->cur_ns, (uint64_t)LOOP_POLL_GROW_MIN_NS);
    w->cur_ns = MIN(w->max_ns, MAX(grown, waited_ns));
}

uint64_t loop_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t loop_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
