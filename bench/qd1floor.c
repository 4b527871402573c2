/* qd1floor - what a QD1 4 KiB read round trip costs the server side of
 * a bare unix socket, for each way a server could be shaped, with no
 * NBD code at all: the floor under blockd's "randread1" row.
 *
 *   qd1floor [--rounds N] [--seconds S] [--shapes LIST] [--pin S:C]
 *            [--file PATH]
 *
 * A client (blocking, like tceil's) sends a 28-byte request (an NBD
 * request header) and reads a 16 + 4096-byte reply (simple reply and
 * payload), one at a time, over a socketpair; the server is a forked
 * child.  The server shapes, and their system calls per round trip:
 *
 *   bare       read, write, no file: tceil's ping-pong (2)
 *   blocking   read, pread of a random page of the file, writev (3)
 *   epoll      epoll_wait, recv, pread, sendmsg: blockd's loop (4)
 *   uring      one io_uring_enter that sends the reply and waits for
 *              the next request, then pread (2)
 *   uring1     one io_uring_enter per round trip: the file read and the
 *              send linked behind it, the next recv, wait (1)
 *
 * The io_uring rings are SINGLE_ISSUER | DEFER_TASKRUN (task work runs
 * only in io_uring_enter), and the send posts no completion on success
 * (CQE_SKIP_SUCCESS), so the wait is for the recv alone.
 *
 * Rounds interleave the shapes (round 1 of each, then round 2, ...) so
 * the machine's drift hits all alike.  Each run prints a line with the
 * round trips per second and the server's CPU (user + system, from
 * getrusage in the child) per round trip; the summary gives medians
 * and each shape's CPU against epoll's (paired by round).  The file
 * (default: 64 MiB of random bytes made on /dev/shm and removed at the
 * end; --file: any file of a page or more) is read whole first so
 * every pread hits the page cache.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#include "floor.h"

#define REQ_SIZE 28
#define REP_HDR 16
#define PAGE 4096
#define INBUF (64 * 1024)
#define FILE_SIZE (64 * 1024 * 1024)
#define MAX_ROUNDS FLOOR_MAX_ROUNDS

typedef struct Shape {
    const char *name;
    int syscalls;
    void (*serve)(int sock, int file, long *ops);
} Shape;

static int pin_server = -1, pin_client = -1;
static uint64_t file_pages;          /* whole pages in the file */

/* false on end of file or error */
static bool read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* A page of the file, at random (xorshift), as a byte offset. */
static off_t next_offset(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (off_t)(x % file_pages) * PAGE;
}

static void serve_bare(int sock, int file, long *ops)
{
    char req[REQ_SIZE];
    char *rep = calloc(1, REP_HDR + PAGE);

    (void)file;
    while (read_full(sock, req, sizeof(req)) &&
           floor_write_full(sock, rep, REP_HDR + PAGE)) {
        (*ops)++;
    }
    free(rep);
}

static void serve_blocking(int sock, int file, long *ops)
{
    char req[REQ_SIZE], hdr[REP_HDR] = { 0 };
    char *data = malloc(PAGE);
    struct iovec iov[2] = { { hdr, REP_HDR }, { data, PAGE } };
    uint64_t rnd = 88172645463325252u;

    while (read_full(sock, req, sizeof(req))) {
        if (pread(file, data, PAGE, next_offset(&rnd)) != PAGE ||
            writev(sock, iov, 2) != REP_HDR + PAGE) {
            break;
        }
        (*ops)++;
    }
    free(data);
}

static void serve_epoll(int sock, int file, long *ops)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    char hdr[REP_HDR] = { 0 };
    char *in = malloc(INBUF), *data = malloc(PAGE);
    struct iovec iov[2] = { { hdr, REP_HDR }, { data, PAGE } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    uint64_t rnd = 88172645463325252u;

    fcntl(sock, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev);
    for (;;) {
        struct epoll_event out;
        ssize_t n;

        if (epoll_wait(ep, &out, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        n = recv(sock, in, INBUF, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        /* One request at a time: the 28 bytes came whole (a unix
         * socket does not split a small write). */
        if (pread(file, data, PAGE, next_offset(&rnd)) != PAGE ||
            sendmsg(sock, &msg, MSG_NOSIGNAL) != REP_HDR + PAGE) {
            break;
        }
        (*ops)++;
    }
    close(ep);
    free(in);
    free(data);
}

#ifdef HAVE_LIBURING
enum { UD_RECV = 1, UD_SEND, UD_READ };

static bool ring_init(struct io_uring *ring)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    };
    int ret = io_uring_queue_init_params(8, ring, &p);

    if (ret < 0) {
        fprintf(stderr, "qd1floor: io_uring_queue_init: %s\n",
                strerror(-ret));
        return false;
    }
    return true;
}

static void prep_recv(struct io_uring *ring, int sock, char *in)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

    io_uring_prep_recv(sqe, sock, in, INBUF, 0);
    sqe->user_data = UD_RECV;
}

static void prep_send(struct io_uring *ring, int sock, struct msghdr *msg,
                      unsigned flags)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

    io_uring_prep_sendmsg(sqe, sock, msg, MSG_NOSIGNAL);
    sqe->user_data = UD_SEND;
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS | flags;
}

/* Submit what is queued and wait for the recv: its result (> 0 bytes,
 * 0 end of file, -errno), or -EIO when another operation failed. */
static int ring_wait_recv(struct io_uring *ring)
{
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        int res = 0;
        bool got = false;
        int ret = io_uring_submit_and_wait(ring, 1);

        if (ret < 0 && ret != -EINTR) {
            return -EIO;
        }
        io_uring_for_each_cqe(ring, head, cqe) {
            seen++;
            if (cqe->user_data == UD_RECV) {
                got = true;
                res = cqe->res;
            } else if (cqe->res < 0) {
                res = -EIO;
                got = true;
            }
        }
        io_uring_cq_advance(ring, seen);
        if (got) {
            return res;
        }
    }
}

static void serve_uring(int sock, int file, long *ops)
{
    struct io_uring ring;
    char hdr[REP_HDR] = { 0 };
    char *in = malloc(INBUF), *data = malloc(PAGE);
    struct iovec iov[2] = { { hdr, REP_HDR }, { data, PAGE } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    uint64_t rnd = 88172645463325252u;

    if (ring_init(&ring)) {
        prep_recv(&ring, sock, in);
        while (ring_wait_recv(&ring) > 0) {
            if (pread(file, data, PAGE, next_offset(&rnd)) != PAGE) {
                break;
            }
            prep_send(&ring, sock, &msg, 0);
            prep_recv(&ring, sock, in);
            (*ops)++;
        }
        io_uring_queue_exit(&ring);
    }
    free(in);
    free(data);
}

static void serve_uring1(int sock, int file, long *ops)
{
    struct io_uring ring;
    char hdr[REP_HDR] = { 0 };
    char *in = malloc(INBUF), *data = malloc(PAGE);
    struct iovec iov[2] = { { hdr, REP_HDR }, { data, PAGE } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 2 };
    uint64_t rnd = 88172645463325252u;

    if (ring_init(&ring)) {
        prep_recv(&ring, sock, in);
        while (ring_wait_recv(&ring) > 0) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

            /* The send runs only once the read completed whole (a
             * short read breaks the link and fails the send). */
            io_uring_prep_read(sqe, file, data, PAGE, next_offset(&rnd));
            sqe->user_data = UD_READ;
            sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
            prep_send(&ring, sock, &msg, 0);
            prep_recv(&ring, sock, in);
            (*ops)++;
        }
        io_uring_queue_exit(&ring);
    }
    free(in);
    free(data);
}
#endif

static const Shape shapes[] = {
    { "bare", 2, serve_bare },
    { "blocking", 3, serve_blocking },
    { "epoll", 4, serve_epoll },
#ifdef HAVE_LIBURING
    { "uring", 2, serve_uring },
    { "uring1", 1, serve_uring1 },
#endif
};
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

typedef struct Run {
    double iops, cpu_us;
} Run;

/* One run of shape for secs seconds; false if it failed. */
static bool run_one(const Shape *shape, const char *path, double secs,
                    Run *out)
{
    int sv[2], res[2];
    char req[REQ_SIZE] = { 0 };
    char *rep = malloc(REP_HDR + PAGE);
    long done = 0, ops = 0;
    double t0, t, cpu = 0;
    pid_t child;
    int status;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(res, O_CLOEXEC) < 0) {
        perror("qd1floor: socketpair");
        exit(1);
    }
    child = fork();
    if (child < 0) {
        perror("qd1floor: fork");
        exit(1);
    }
    if (child == 0) {
        int file = open(path, O_RDONLY | O_CLOEXEC);
        double c0;
        char line[64];
        int len;

        close(sv[1]);
        close(res[0]);
        floor_pin("qd1floor", pin_server);
        c0 = floor_cpu_s();
        if (file >= 0) {
            shape->serve(sv[0], file, &ops);
        }
        len = snprintf(line, sizeof(line), "%ld %.6f\n", ops,
                       floor_cpu_s() - c0);
        floor_write_full(res[1], line, (size_t)len);
        _exit(file >= 0 ? 0 : 1);
    }
    close(sv[0]);
    close(res[1]);
    floor_pin("qd1floor", pin_client);
    t0 = floor_now_s();
    for (;;) {
        if (!floor_write_full(sv[1], req, sizeof(req)) ||
            !read_full(sv[1], rep, REP_HDR + PAGE)) {
            break;
        }
        done++;
        if ((done & 255) == 0 && floor_now_s() - t0 >= secs) {
            break;
        }
    }
    t = floor_now_s() - t0;
    shutdown(sv[1], SHUT_WR);
    {
        char line[64] = { 0 };

        if (!read_full(res[0], line, 1) ||
            read(res[0], line + 1, sizeof(line) - 2) < 0 ||
            sscanf(line, "%ld %lf", &ops, &cpu) != 2) {
            ops = 0;
        }
    }
    waitpid(child, &status, 0);
    close(sv[1]);
    close(res[0]);
    free(rep);
    if (ops <= 0 || done <= 0) {
        return false;
    }
    out->iops = done / t;
    out->cpu_us = cpu / (double)ops * 1e6;
    return true;
}

/* Read path through once, so the runs find it in the page cache, and
 * count its pages. */
static void warm_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = malloc(1 << 20);
    ssize_t n;
    uint64_t size = 0;

    if (fd < 0) {
        perror("qd1floor: open");
        exit(1);
    }
    while ((n = read(fd, buf, 1 << 20)) > 0) {
        size += (uint64_t)n;
    }
    close(fd);
    file_pages = size / PAGE;
    if (file_pages == 0) {
        fprintf(stderr, "qd1floor: %s is shorter than a page\n", path);
        exit(1);
    }
    free(buf);
}

/* A 64 MiB file of random bytes, read once into the page cache. */
static char *make_file(void)
{
    char *path = strdup("/dev/shm/qd1floor.XXXXXX");
    int fd = mkstemp(path);
    char *buf = malloc(1 << 20);
    int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0 || rnd < 0 || !read_full(rnd, buf, 1 << 20)) {
        perror("qd1floor: making the file");
        exit(1);
    }
    for (int i = 0; i < FILE_SIZE >> 20; i++) {
        buf[i] ^= (char)i;
        if (!floor_write_full(fd, buf, 1 << 20)) {
            perror("qd1floor: writing the file");
            exit(1);
        }
    }
    close(rnd);
    close(fd);
    free(buf);
    return path;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: qd1floor [--rounds N] [--seconds S] "
            "[--shapes LIST] [--pin S:C] [--file PATH]\n"
            "shapes:");
    for (size_t i = 0; i < NSHAPES; i++) {
        fprintf(f, " %s", shapes[i].name);
    }
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "rounds", required_argument, NULL, 'r' },
        { "seconds", required_argument, NULL, 's' },
        { "shapes", required_argument, NULL, 'S' },
        { "pin", required_argument, NULL, 'p' },
        { "file", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int rounds = 5, opt;
    double secs = 1.0;
    bool want[NSHAPES];
    char *path = NULL;
    bool own_file = false;
    static double iops[NSHAPES][MAX_ROUNDS], cpu[NSHAPES][MAX_ROUNDS];
    static double ratio[MAX_ROUNDS];
    int nrun[NSHAPES] = { 0 };
    int failed = 0;

    for (size_t i = 0; i < NSHAPES; i++) {
        want[i] = true;
    }
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            rounds = atoi(optarg);
            if (rounds < 1 || rounds > MAX_ROUNDS) {
                fprintf(stderr, "qd1floor: --rounds 1..%d\n", MAX_ROUNDS);
                return 2;
            }
            break;
        case 's':
            secs = atof(optarg);
            break;
        case 'S': {
            char *list = strdup(optarg), *save = NULL;

            for (size_t i = 0; i < NSHAPES; i++) {
                want[i] = false;
            }
            for (char *t = strtok_r(list, ",", &save); t;
                 t = strtok_r(NULL, ",", &save)) {
                size_t i;

                for (i = 0; i < NSHAPES; i++) {
                    if (strcmp(t, shapes[i].name) == 0) {
                        want[i] = true;
                        break;
                    }
                }
                if (i == NSHAPES) {
                    fprintf(stderr, "qd1floor: no shape '%s'%s\n", t,
                            strncmp(t, "uring", 5) == 0
                            ? " (built without liburing)" : "");
                    return 2;
                }
            }
            free(list);
            break;
        }
        case 'p':
            if (sscanf(optarg, "%d:%d", &pin_server, &pin_client) != 2) {
                fprintf(stderr, "qd1floor: --pin S:C\n");
                return 2;
            }
            break;
        case 'f':
            path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL) {
        path = make_file();
        own_file = true;
    }
    warm_file(path);
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < NSHAPES; i++) {
            Run run;

            if (!want[i]) {
                continue;
            }
            if (!run_one(&shapes[i], path, secs, &run)) {
                fprintf(stderr, "qd1floor: shape %s failed\n",
                        shapes[i].name);
                failed++;
                continue;
            }
            iops[i][nrun[i]] = run.iops;
            cpu[i][nrun[i]] = run.cpu_us;
            nrun[i]++;
            printf("QD1FLOOR shape=%s round=%d iops=%.0f "
                   "srv_cpu_us_per_op=%.2f syscalls_per_op=%d\n",
                   shapes[i].name, r + 1, run.iops, run.cpu_us,
                   shapes[i].syscalls);
            fflush(stdout);
        }
    }
    printf("%-9s %5s %9s %14s %14s %s\n", "shape", "calls", "IOPS",
           "srv CPU us/op", "vs epoll CPU", "(medians)");
    for (size_t i = 0; i < NSHAPES; i++) {
        size_t e = 2;            /* epoll */
        int n = nrun[i], m = 0;
        double vs = 0;

        if (n == 0) {
            continue;
        }
        if (want[e] && nrun[e] == n) {
            for (int k = 0; k < n; k++) {
                ratio[m++] = cpu[i][k] / cpu[e][k];
            }
            vs = floor_median(ratio, m);
        }
        printf("%-9s %5d %9.0f %14.2f ", shapes[i].name, shapes[i].syscalls,
               floor_median(iops[i], n), floor_median(cpu[i], n));
        if (m) {
            printf("%14.3f\n", vs);
        } else {
            printf("%14s\n", "-");
        }
    }
    if (own_file) {
        unlink(path);
        free(path);
    }
    return failed ? 1 : 0;
}
