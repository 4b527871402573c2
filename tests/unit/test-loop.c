/* test-loop.c - util/loop.c's posts: from the loop thread (the event
 * made active, no eventfd) and from other threads (the eventfd), in
 * FIFO order, never inside the caller, and not spinning afterwards; and
 * control watches, which a busy loop serves between its other work, but
 * never ahead of a hang-up that came before them. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cunit-main.h"
#include "util/loop.h"
#include "util/util.h"
#include "util/worker.h"

typedef struct Rec {
    Loop *loop;
    int order[64];
    int n;
    bool in_caller;          /* set while loop_post() is being called */
    bool ran_inside;         /* a post ran while in_caller */
} Rec;

typedef struct Item {
    Rec *r;
    int id;
} Item;

static void record(void *opaque)
{
    Item *it = opaque;

    if (it->r->in_caller) {
        it->r->ran_inside = true;
    }
    it->r->order[it->r->n++] = it->id;
}

static void stop_loop(void *opaque)
{
    loop_stop(opaque);
}

static double cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* On the loop thread: three posts from inside a callback run after it,
 * in order, and one of them posting again runs after those. */
static Item local_items[5];

static void post_again(void *opaque)
{
    Item *it = opaque;

    record(it);
    it->r->in_caller = true;
    loop_post(it->r->loop, record, &local_items[4]);
    it->r->in_caller = false;
}

static void post_three(void *opaque)
{
    Rec *r = opaque;

    r->in_caller = true;
    loop_post(r->loop, record, &local_items[1]);
    loop_post(r->loop, post_again, &local_items[2]);
    loop_post(r->loop, record, &local_items[3]);
    r->in_caller = false;
    r->order[r->n++] = 0;
}

static void test_post_from_loop_thread(void)
{
    Rec r = { .loop = loop_new() };
    LoopTimer *kick = loop_timer_new(r.loop, post_three, &r);
    LoopTimer *stop = loop_timer_new(r.loop, stop_loop, r.loop);
    double cpu;

    CU_ASSERT_FATAL(r.loop != NULL);
    for (int i = 0; i < 5; i++) {
        local_items[i] = (Item){ &r, i };
    }
    loop_timer_arm(kick, 1000);
    loop_timer_arm(stop, 300 * 1000);
    cpu = cpu_seconds();
    CU_ASSERT(loop_run(r.loop) == 0);
    cpu = cpu_seconds() - cpu;
    CU_ASSERT_FALSE(r.ran_inside);
    CU_ASSERT_EQUAL_FATAL(r.n, 5);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(r.order[i], i);
    }
    /* Nothing left readable: the loop slept until the stop timer. */
    if (cpu >= 0.1) {
        fprintf(stderr, "\nthe loop used %.3f s of CPU idle\n", cpu);
    }
    CU_ASSERT(cpu < 0.1);
    loop_timer_free(kick);
    loop_timer_free(stop);
    loop_free(r.loop);
}

/* From other threads: every post runs on the loop, each thread's in
 * its own order, mixed with posts the loop thread makes meanwhile. */
typedef struct Poster {
    Rec *r;
    Item items[16];
} Poster;

static int remote_seen[2];
static int remote_last[2] = { -1, -1 };
static bool remote_out_of_order;
static int local_seen;

static void remote_record(void *opaque)
{
    Item *it = opaque;
    int t = it->id / 100, k = it->id % 100;

    if (k <= remote_last[t]) {
        remote_out_of_order = true;
    }
    remote_last[t] = k;
    remote_seen[t]++;
    if (remote_seen[0] == 16 && remote_seen[1] == 16 && local_seen >= 16) {
        loop_stop(it->r->loop);
    }
}

static void local_tick(void *opaque)
{
    Rec *r = opaque;

    local_seen++;
    if (local_seen < 16) {
        loop_post(r->loop, local_tick, r);
    } else if (remote_seen[0] == 16 && remote_seen[1] == 16) {
        loop_stop(r->loop);
    }
}

static void *poster_main(void *opaque)
{
    Poster *p = opaque;

    for (int i = 0; i < 16; i++) {
        struct timespec ts = { 0, 200 * 1000 };

        loop_post(p->r->loop, remote_record, &p->items[i]);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_post_from_threads(void)
{
    Rec r = { .loop = loop_new() };
    Poster p[2];
    pthread_t th[2];
    LoopTimer *stop = loop_timer_new(r.loop, stop_loop, r.loop);

    CU_ASSERT_FATAL(r.loop != NULL);
    for (int t = 0; t < 2; t++) {
        p[t].r = &r;
        for (int i = 0; i < 16; i++) {
            p[t].items[i] = (Item){ &r, t * 100 + i };
        }
    }
    loop_timer_arm(stop, 20 * 1000 * 1000);      /* a guard, not a wait */
    loop_post(r.loop, local_tick, &r);
    for (int t = 0; t < 2; t++) {
        CU_ASSERT_FATAL(pthread_create(&th[t], NULL, poster_main,
                                       &p[t]) == 0);
    }
    CU_ASSERT(loop_run(r.loop) == 0);
    for (int t = 0; t < 2; t++) {
        pthread_join(th[t], NULL);
    }
    loop_run_posted(r.loop);
    CU_ASSERT_EQUAL(remote_seen[0], 16);
    CU_ASSERT_EQUAL(remote_seen[1], 16);
    CU_ASSERT_EQUAL(local_seen, 16);
    CU_ASSERT_FALSE(remote_out_of_order);
    loop_timer_free(stop);
    loop_free(r.loop);
}

/* Posted before the loop runs (a unit test's graph, start-up): run by
 * loop_run_posted(), or by the loop once it runs. */
static void test_post_before_run(void)
{
    Rec r = { .loop = loop_new() };
    Item a = { &r, 1 }, b = { &r, 2 };
    LoopTimer *stop = loop_timer_new(r.loop, stop_loop, r.loop);

    loop_post(r.loop, record, &a);
    loop_run_posted(r.loop);
    CU_ASSERT_EQUAL(r.n, 1);
    loop_post(r.loop, record, &b);
    loop_timer_arm(stop, 50 * 1000);
    CU_ASSERT(loop_run(r.loop) == 0);
    CU_ASSERT_EQUAL_FATAL(r.n, 2);
    CU_ASSERT_EQUAL(r.order[1], 2);
    loop_timer_free(stop);
    loop_free(r.loop);
}

/* Two loops on two threads, as with an iothread: an fd watched on the
 * first is handed to the second (watch dropped, a post, watched again
 * there), whose requests to the worker pool complete on it
 * (worker_submit_to), and which reports back to the first by a post. */
typedef struct Handoff {
    Loop *main, *io;
    WorkerPool *pool;
    int fds[2];
    LoopFd *watch;
    pthread_t main_thread, io_thread;
    pthread_t read_on, run_on, done_on;
    char got;
    bool io_current_in_io, main_current_in_io;
    WorkerJob job;
} Handoff;

static void *io_main(void *opaque)
{
    Handoff *h = opaque;

    loop_run(h->io);
    return NULL;
}

static void handoff_finish(void *opaque)
{
    Handoff *h = opaque;

    loop_stop(h->main);
}

static void handoff_job_run(WorkerJob *job)
{
    Handoff *h = container_of(job, Handoff, job);

    h->run_on = pthread_self();
}

static void handoff_job_done(WorkerJob *job)
{
    Handoff *h = container_of(job, Handoff, job);

    h->done_on = pthread_self();
    loop_post(h->main, handoff_finish, h);
}

static void handoff_io_read(int fd, int events, void *opaque)
{
    Handoff *h = opaque;

    (void)events;
    CU_ASSERT(read(fd, &h->got, 1) == 1);
    h->read_on = pthread_self();
    h->io_current_in_io = loop_is_current(h->io);
    h->main_current_in_io = loop_is_current(h->main);
    loop_fd_del(h->watch);
    h->watch = NULL;
    h->job.run = handoff_job_run;
    h->job.done = handoff_job_done;
    worker_submit_to(h->pool, &h->job, h->io);
}

static void handoff_adopt(void *opaque)
{
    Handoff *h = opaque;

    h->watch = loop_fd_add(h->io, h->fds[0], LOOP_READ, handoff_io_read, h);
}

static void handoff_main_read(int fd, int events, void *opaque)
{
    Handoff *h = opaque;

    (void)fd;
    (void)events;
    /* Readable on the main loop: hand it over without reading. */
    loop_fd_del(h->watch);
    h->watch = NULL;
    loop_post(h->io, handoff_adopt, h);
}

static void handoff_stop_io(void *opaque)
{
    loop_stop(opaque);
}

static void test_handoff_between_loops(void)
{
    Handoff h = { .main = loop_new(), .io = loop_new() };
    LoopTimer *guard;
    pthread_t th;

    CU_ASSERT_FATAL(h.main != NULL && h.io != NULL);
    CU_ASSERT_FATAL(pipe(h.fds) == 0);
    h.pool = worker_pool_new(h.main, 2);
    CU_ASSERT_FATAL(h.pool != NULL);
    h.main_thread = pthread_self();
    CU_ASSERT_FATAL(pthread_create(&th, NULL, io_main, &h) == 0);
    h.io_thread = th;
    guard = loop_timer_new(h.main, stop_loop, h.main);
    loop_timer_arm(guard, 20 * 1000 * 1000);      /* a guard, not a wait */
    h.watch = loop_fd_add(h.main, h.fds[0], LOOP_READ, handoff_main_read,
                          &h);
    CU_ASSERT(write(h.fds[1], "x", 1) == 1);
    CU_ASSERT(loop_run(h.main) == 0);
    loop_post(h.io, handoff_stop_io, h.io);
    pthread_join(th, NULL);
    worker_pool_free(h.pool);
    loop_run_posted(h.main);
    CU_ASSERT_EQUAL(h.got, 'x');
    CU_ASSERT(pthread_equal(h.read_on, h.io_thread));
    CU_ASSERT(h.io_current_in_io);
    CU_ASSERT_FALSE(h.main_current_in_io);
    CU_ASSERT_FALSE(pthread_equal(h.run_on, h.io_thread));
    CU_ASSERT_FALSE(pthread_equal(h.run_on, h.main_thread));
    CU_ASSERT(pthread_equal(h.done_on, h.io_thread));
    CU_ASSERT(h.watch == NULL);
    loop_timer_free(guard);
    close(h.fds[0]);
    close(h.fds[1]);
    loop_free(h.io);
    loop_free(h.main);
}

/* ---- the adaptive poll window ---- */

static void test_poll_window_adapts(void)
{
    LoopPollWindow w;
    unsigned full = 0;

    loop_poll_window_init(&w, 0);
    CU_ASSERT_EQUAL(loop_poll_window_next(&w), 0);

    loop_poll_window_init(&w, 50000);
    CU_ASSERT_EQUAL(loop_poll_window_next(&w), 50000);
    /* Caught while polling, or already there: the window stays. */
    loop_poll_window_update(&w, 50000, 20000);
    loop_poll_window_update(&w, 50000, 0);
    CU_ASSERT_EQUAL(w.cur_ns, 50000);
    /* Answers slower than the maximum halve it, down to nothing. */
    for (int i = 0; i < 40; i++) {
        loop_poll_window_update(&w, loop_poll_window_next(&w), 900000);
    }
    CU_ASSERT_EQUAL(w.cur_ns, 0);
    /* A wait that slept but came within the maximum grows it. */
    loop_poll_window_update(&w, 0, 3000);
    CU_ASSERT_EQUAL(w.cur_ns, LOOP_POLL_GROW_MIN_NS);
    loop_poll_window_update(&w, w.cur_ns, 30000);
    CU_ASSERT_EQUAL(w.cur_ns, 30000);
    loop_poll_window_update(&w, w.cur_ns, 45000);
    CU_ASSERT_EQUAL(w.cur_ns, 50000);      /* never past the maximum */

    /* Shrunk to nothing, one wait in LOOP_POLL_PROBE still polls the
     * whole window; one such probe that catches the answer opens it. */
    w.cur_ns = 0;
    for (int i = 0; i < 4 * LOOP_POLL_PROBE; i++) {
        if (loop_poll_window_next(&w) == 50000) {
            full++;
        }
    }
    CU_ASSERT_EQUAL(full, 4);
    loop_poll_window_update(&w, 50000, 12000);
    CU_ASSERT_EQUAL(w.cur_ns, 24000);
}

static int poll_fds[2];
static int poll_seen;

static void poll_read(int fd, int events, void *opaque)
{
    char b;

    (void)events;
    CU_ASSERT(read(fd, &b, 1) == 1);
    poll_seen++;
    loop_stop(opaque);
}

static void *poll_writer(void *opaque)
{
    (void)opaque;
    usleep(2000);
    CU_ASSERT(write(poll_fds[1], "x", 1) == 1);
    return NULL;
}

static void *poll_writer_late(void *opaque)
{
    (void)opaque;
    usleep(200 * 1000);
    CU_ASSERT(write(poll_fds[1], "x", 1) == 1);
    return NULL;
}

/* A hint makes the loop poll, not sleep, for that long; what arrives
 * while it polls is handled, and a hint spent without an event leaves
 * the loop asleep as before (its CPU time stays far below the wait). */
static void test_poll_hint(void)
{
    Loop *loop = loop_new();
    LoopFd *w;
    pthread_t t;
    double cpu0;

    CU_ASSERT_FATAL(pipe(poll_fds) == 0);
    w = loop_fd_add(loop, poll_fds[0], LOOP_READ, poll_read, loop);

    /* The event comes 2 ms in, within a 1 s hint: caught by polling. */
    loop_poll_hint(loop, 1000ULL * 1000 * 1000);
    pthread_create(&t, NULL, poll_writer, NULL);
    loop_run(loop);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(poll_seen, 1);

    /* A 1 ms hint, then 200 ms of nothing: the loop sleeps. */
    cpu0 = cpu_seconds();
    loop_poll_hint(loop, 1000 * 1000);
    loop_poll_hint(loop, 1000);            /* the longest one counts */
    pthread_create(&t, NULL, poll_writer_late, NULL);
    loop_run(loop);
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(poll_seen, 2);
    CU_ASSERT(cpu_seconds() - cpu0 < 0.1);

    loop_fd_del(w);
    close(poll_fds[0]);
    close(poll_fds[1]);
    loop_free(loop);
}

/* ---- control watches ----------------------------------------------------- */

/* More than the loop's check interval (LOOP_CTL_EVERY, 32 callbacks).
 * libevent asks epoll for 32 events at first: the control fd, ready
 * after that poll, comes after the other 16 in the next, so in
 * libevent's order every busy fd runs before it. */
#define BUSY_FDS 48

typedef struct Busy {
    Loop *loop;
    int socks[BUSY_FDS][2];      /* [0] watched, [1] the peer */
    LoopFd *watches[BUSY_FDS];
    bool ran[BUSY_FDS];
    int ctl[2];
    LoopFd *ctl_watch;
    int runs;                    /* busy callbacks so far */
    int ctl_at;                  /* runs when the control one ran */
    int hangup;                  /* the busy fd whose peer closes, or -1 */
    bool eof_seen;               /* its callback read the end of file */
    bool eof_before_ctl;
} Busy;

static Busy busy;

static void busy_fd_cb(int fd, int events, void *opaque)
{
    int i = (int)(intptr_t)opaque;
    char buf[16];
    ssize_t n;

    (void)events;
    busy.ran[i] = true;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        continue;
    }
    if (n == 0) {
        /* As a connection does: the end of file tears it down. */
        CU_ASSERT(i == busy.hangup);
        busy.eof_seen = true;
        loop_fd_del(busy.watches[i]);
        busy.watches[i] = NULL;
    } else {
        CU_ASSERT(errno == EAGAIN);
    }
    if (busy.runs++ > 0) {
        return;
    }
    /* The first one: the control socket becomes readable while the
     * data path still has a turn over the others to serve; with
     * hangup, the last of those not served yet has hung up first. */
    if (busy.hangup >= 0) {
        for (int j = BUSY_FDS - 1; j >= 0; j--) {
            if (!busy.ran[j]) {
                busy.hangup = j;
                break;
            }
        }
        close(busy.socks[busy.hangup][1]);
        busy.socks[busy.hangup][1] = -1;
    }
    CU_ASSERT(write(busy.ctl[1], "q", 1) == 1);
}

static void busy_ctl_cb(int fd, int events, void *opaque)
{
    char c;

    (void)opaque;
    CU_ASSERT(events == LOOP_READ);
    CU_ASSERT(read(fd, &c, 1) == 1);
    busy.ctl_at = busy.runs;
    busy.eof_before_ctl = busy.eof_seen;
    loop_stop(busy.loop);
}

static void busy_run(bool hangup)
{
    memset(&busy, 0, sizeof(busy));
    busy.loop = loop_new();
    busy.ctl_at = -1;
    busy.hangup = hangup ? 0 : -1;
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                               busy.ctl) == 0);
    busy.ctl_watch = loop_fd_add_control(busy.loop, busy.ctl[0], LOOP_READ,
                                         busy_ctl_cb, NULL);
    for (int i = 0; i < BUSY_FDS; i++) {
        CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                                   busy.socks[i]) == 0);
        CU_ASSERT(write(busy.socks[i][1], "x", 1) == 1);
        busy.watches[i] = loop_fd_add(busy.loop, busy.socks[i][0],
                                      LOOP_READ, busy_fd_cb,
                                      (void *)(intptr_t)i);
    }
    CU_ASSERT(loop_run(busy.loop) == 0);
    for (int i = 0; i < BUSY_FDS; i++) {
        loop_fd_del(busy.watches[i]);
        close(busy.socks[i][0]);
        if (busy.socks[i][1] >= 0) {
            close(busy.socks[i][1]);
        }
    }
    loop_fd_del(busy.ctl_watch);
    close(busy.ctl[0]);
    close(busy.ctl[1]);
    loop_free(busy.loop);
}

/* A control watch that becomes ready while BUSY_FDS other watches are
 * ready runs after some of them, not after all (a QMP command does not
 * wait for a turn over every busy NBD connection). */
static void test_control_between_busy_fds(void)
{
    busy_run(false);
    CU_ASSERT(busy.ctl_at > 0);
    CU_ASSERT(busy.ctl_at < BUSY_FDS);
}

/* A watch whose peer hung up before the control watch became ready is
 * served first, though its turn in the batch comes later: a safe
 * block-export-del sent after a client closed finds the client gone. */
static void test_control_after_hangup(void)
{
    busy_run(true);
    CU_ASSERT(busy.eof_before_ctl);
    CU_ASSERT(busy.ctl_at > 0);
    CU_ASSERT(busy.ctl_at < BUSY_FDS);
}

/* The same for a burst of posted calls (inline requests' completions
 * come so, one per connection served in a turn): the control watch
 * runs within the burst, and the rest of it still runs afterwards, in
 * order. */
#define BUSY_POSTS 256

static int post_seq[BUSY_POSTS];

static void busy_noop(void *opaque)
{
    (void)opaque;
}

static void busy_post(void *opaque)
{
    post_seq[busy.runs] = (int)(intptr_t)opaque;
    if (busy.runs++ == 0) {
        CU_ASSERT(write(busy.ctl[1], "q", 1) == 1);
    }
    if (busy.runs == BUSY_POSTS) {
        loop_stop(busy.loop);
    }
}

static void busy_ctl_post_cb(int fd, int events, void *opaque)
{
    char c;

    (void)opaque;
    (void)events;
    CU_ASSERT(read(fd, &c, 1) == 1);
    busy.ctl_at = busy.runs;
}

static void busy_kick(void *opaque)
{
    (void)opaque;
    for (int i = 0; i < BUSY_POSTS; i++) {
        loop_post(busy.loop, busy_post, (void *)(intptr_t)i);
    }
}

static void test_control_between_posts(void)
{
    LoopTimer *kick;

    memset(&busy, 0, sizeof(busy));
    busy.loop = loop_new();
    busy.ctl_at = -1;
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                               busy.ctl) == 0);
    busy.ctl_watch = loop_fd_add_control(busy.loop, busy.ctl[0], LOOP_READ,
                                         busy_ctl_post_cb, NULL);
    kick = loop_timer_new(busy.loop, busy_kick, NULL);
    loop_timer_arm(kick, 1000);
    CU_ASSERT(loop_run(busy.loop) == 0);
    CU_ASSERT(busy.ctl_at > 0);
    CU_ASSERT(busy.ctl_at < BUSY_POSTS);
    CU_ASSERT_EQUAL(busy.runs, BUSY_POSTS);
    for (int i = 0; i < BUSY_POSTS; i++) {
        CU_ASSERT_EQUAL(post_seq[i], i);
    }
    loop_timer_free(kick);
    loop_fd_del(busy.ctl_watch);
    close(busy.ctl[0]);
    close(busy.ctl[1]);
    loop_run_posted(busy.loop);
    loop_free(busy.loop);
}

/* What a command posts (a deferred free) runs before the next command,
 * though the loop serves commands amid a turn over busy fds whose
 * completions are posted too: two commands are in the control socket
 * at once, the first posts, the second must see that post done. */
#define STREAM_FDS 100

static bool cmd_post_ran;
static int cmds_seen;
static bool post_before_second;

static void stream_fd_cb(int fd, int events, void *opaque)
{
    (void)fd;
    (void)events;
    (void)opaque;
    /* Left readable: ready again in every poll, as a busy client. */
    if (busy.runs++ == 0) {
        CU_ASSERT(write(busy.ctl[1], "12", 2) == 2);
    }
    loop_post(busy.loop, busy_noop, NULL);
}

static void cmd_post(void *opaque)
{
    (void)opaque;
    cmd_post_ran = true;
}

static void stream_ctl_cb(int fd, int events, void *opaque)
{
    char c;

    (void)opaque;
    (void)events;
    CU_ASSERT(read(fd, &c, 1) == 1);
    if (++cmds_seen == 1) {
        loop_post(busy.loop, cmd_post, NULL);
        return;
    }
    post_before_second = cmd_post_ran;
    loop_stop(busy.loop);
}

static void test_control_posts_before_next(void)
{
    int fds[STREAM_FDS][2];
    LoopFd *w[STREAM_FDS];

    memset(&busy, 0, sizeof(busy));
    cmd_post_ran = post_before_second = false;
    cmds_seen = 0;
    busy.loop = loop_new();
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                               busy.ctl) == 0);
    busy.ctl_watch = loop_fd_add_control(busy.loop, busy.ctl[0], LOOP_READ,
                                         stream_ctl_cb, NULL);
    for (int i = 0; i < STREAM_FDS; i++) {
        CU_ASSERT_FATAL(pipe(fds[i]) == 0);
        CU_ASSERT(write(fds[i][1], "x", 1) == 1);
        w[i] = loop_fd_add(busy.loop, fds[i][0], LOOP_READ, stream_fd_cb,
                           NULL);
    }
    CU_ASSERT(loop_run(busy.loop) == 0);
    CU_ASSERT_EQUAL(cmds_seen, 2);
    CU_ASSERT(post_before_second);
    for (int i = 0; i < STREAM_FDS; i++) {
        loop_fd_del(w[i]);
        close(fds[i][0]);
        close(fds[i][1]);
    }
    loop_fd_del(busy.ctl_watch);
    close(busy.ctl[0]);
    close(busy.ctl[1]);
    loop_run_posted(busy.loop);
    loop_free(busy.loop);
}

static CU_TestInfo loop_tests[] = {
    { "poll_window_adapts", test_poll_window_adapts },
    { "poll_hint", test_poll_hint },
    { "handoff_between_loops", test_handoff_between_loops },
    { "post_from_loop_thread", test_post_from_loop_thread },
    { "post_from_threads", test_post_from_threads },
    { "post_before_run", test_post_before_run },
    { "control_between_busy_fds", test_control_between_busy_fds },
    { "control_after_hangup", test_control_after_hangup },
    { "control_between_posts", test_control_between_posts },
    { "control_posts_before_next", test_control_posts_before_next },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "loop", .pTests = loop_tests },
    CU_SUITE_INFO_NULL,
};
