/* seqwfloor - what a stream of 256 KiB writes costs the server side of
 * a bare unix socket, for each way a server could be shaped, with no
 * NBD code at all: the floor under blockd's "seqwrite" row.
 *
 *   seqwfloor [--rounds N] [--seconds S] [--shapes LIST] [--pin S:C]
 *             [--file PATH] [--bs BYTES] [--qd N]
 *
 * A client (two threads: one sends, one reads replies) keeps QD
 * requests in flight, each a 28-byte header (an NBD request header's
 * size) followed by BS bytes of payload; the server writes each payload
 * into the file at the next sequential offset (wrapping at its end) and
 * answers with 16 bytes (a simple reply's size).  The server is a
 * forked child; its shapes, with their system calls per request:
 *
 *   blocking   recv(MSG_WAITALL) of header and payload, pwrite, send (3)
 *   mmap       recv(MSG_WAITALL) of the header, then of the payload
 *              straight into a shared mapping of the file (one kernel
 *              copy instead of two), send (3)
 *   epoll      epoll_wait, non-blocking recvs until the request is in
 *              (the last one also asks for the next header, so a short
 *              read says the socket is empty), pwrite, send: blockd's
 *              loop (about 5 with a payload larger than the socket
 *              buffer)
 *   uring      one io_uring_enter sends the last reply and waits for the
 *              next whole request (recv MSG_WAITALL), then pwrite (2)
 *   uring1     one io_uring_enter per request: the file write with the
 *              reply's send linked behind it, and the next recv (1)
 *
 * The rings are SINGLE_ISSUER | DEFER_TASKRUN and sends post no
 * completion on success.  An io_uring write that cannot finish without
 * blocking runs on the kernel's io-wq threads, which are the server's
 * own threads: their CPU counts.
 *
 * Rounds interleave the shapes so the machine's drift hits all alike;
 * each run prints MiB/s and the server's CPU (getrusage of the child,
 * all its threads) per GiB, and the summary gives medians and each
 * shape's CPU against epoll's, paired by round.  The file (default:
 * 1 GiB on /dev/shm, written once first so every run overwrites
 * resident pages, removed at the end) is what load.sh's seqwrite
 * writes into.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#include "floor.h"

#define REQ_HDR 28
#define REP_HDR 16
#define MAX_ROUNDS FLOOR_MAX_ROUNDS
#define MAX_QD 64

typedef struct Shape {
    const char *name;
    void (*serve)(int sock, int file, long *ops);
    /* Run in the server before its CPU time starts counting, if set. */
    void (*prepare)(int file);
} Shape;

static int pin_server = -1, pin_client = -1;
static size_t bs = 256 * 1024;
static unsigned qd = 8;
static off_t file_size;

/* The next sequential offset for a payload, wrapping at the file's end. */
static off_t next_offset(off_t *pos)
{
    off_t off = *pos;

    if (off + (off_t)bs > file_size) {
        off = 0;
    }
    *pos = off + (off_t)bs;
    return off;
}

static bool write_payload(int file, const char *data, off_t *pos)
{
    return pwrite(file, data, bs, next_offset(pos)) == (ssize_t)bs;
}

static void serve_blocking(int sock, int file, long *ops)
{
    char *req = malloc(REQ_HDR + bs);
    char rep[REP_HDR] = { 0 };
    off_t pos = 0;

    while (recv(sock, req, REQ_HDR + bs, MSG_WAITALL) ==
           (ssize_t)(REQ_HDR + bs)) {
        if (!write_payload(file, req + REQ_HDR, &pos) ||
            !floor_write_full(sock, rep, sizeof(rep))) {
            break;
        }
        (*ops)++;
    }
    free(req);
}

static char *file_map = MAP_FAILED;

/* Map every page of the file before the clock starts, as a
 * long-running server would have them mapped after its first pass. */
static void prepare_mmap(int file)
{
    file_map = mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                    file, 0);
    if (file_map == MAP_FAILED) {
        perror("seqwfloor: mmap");
        return;
    }
    madvise(file_map, file_size, MADV_POPULATE_WRITE);
}

static void serve_mmap(int sock, int file, long *ops)
{
    char hdr[REQ_HDR], rep[REP_HDR] = { 0 };
    char *map = file_map;
    off_t pos = 0;

    (void)file;
    if (map == MAP_FAILED) {
        return;
    }
    while (recv(sock, hdr, REQ_HDR, MSG_WAITALL) == REQ_HDR &&
           recv(sock, map + next_offset(&pos), bs, MSG_WAITALL) ==
               (ssize_t)bs &&
           floor_write_full(sock, rep, sizeof(rep))) {
        (*ops)++;
    }
    /* No munmap: the child exits once its CPU time is taken. */
}

static void serve_epoll(int sock, int file, long *ops)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    char rep[REP_HDR] = { 0 };
    /* One request plus room for the next header: a recv asks for the
     * rest of this request and the next header, so a short read means
     * the socket is empty and the loop may sleep. */
    size_t want = REQ_HDR + bs;
    char *buf = malloc(want + REQ_HDR);
    size_t have = 0;
    off_t pos = 0;

    fcntl(sock, F_SETFL, O_NONBLOCK);
    epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev);
    for (;;) {
        struct epoll_event out;
        bool drained = false;

        if (epoll_wait(ep, &out, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        while (!drained) {
            size_t ask = want + REQ_HDR - have;
            ssize_t n = recv(sock, buf + have, ask, 0);

            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                goto out;
            }
            if (n < 0) {
                break;
            }
            have += (size_t)n;
            drained = (size_t)n < ask;
            if (have < want) {
                continue;
            }
            if (!write_payload(file, buf + REQ_HDR, &pos) ||
                send(sock, rep, sizeof(rep), MSG_NOSIGNAL) != REP_HDR) {
                goto out;
            }
            (*ops)++;
            /* Keep what came of the next request. */
            memmove(buf, buf + want, have - want);
            have -= want;
        }
    }
out:
    free(buf);
    close(ep);
}

#ifdef HAVE_LIBURING
static bool ring_init(struct io_uring *ring)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    };

    if (io_uring_queue_init_params(64, ring, &p) < 0) {
        fprintf(stderr, "seqwfloor: io_uring_queue_init failed\n");
        return false;
    }
    return true;
}

static void serve_uring(int sock, int file, long *ops)
{
    struct io_uring ring;
    char *req = malloc(REQ_HDR + bs);
    char rep[REP_HDR] = { 0 };
    off_t pos = 0;
    bool reply = false;

    if (!ring_init(&ring)) {
        free(req);
        return;
    }
    for (;;) {
        struct io_uring_sqe *sqe;
        struct io_uring_cqe *cqe;
        int res;

        if (reply) {
            sqe = io_uring_get_sqe(&ring);
            io_uring_prep_send(sqe, sock, rep, sizeof(rep), MSG_NOSIGNAL);
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
            sqe->user_data = 1;
        }
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_recv(sqe, sock, req, REQ_HDR + bs, MSG_WAITALL);
        sqe->user_data = 2;
        if (io_uring_submit_and_wait(&ring, 1) < 0) {
            break;
        }
        if (io_uring_wait_cqe(&ring, &cqe) < 0) {
            break;
        }
        res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (res != (int)(REQ_HDR + bs)) {
            break;         /* a failed send, end of stream or an error */
        }
        if (!write_payload(file, req + REQ_HDR, &pos)) {
            break;
        }
        reply = true;
        (*ops)++;
    }
    io_uring_queue_exit(&ring);
    free(req);
}

static void serve_uring1(int sock, int file, long *ops)
{
    /* A buffer per request the client may have in flight and one more:
     * request n + qd comes only after reply n, which follows the write
     * of n, so buffer n is free again by then. */
    unsigned nbuf = qd + 1, cur = 0;
    char **req = calloc(nbuf, sizeof(*req));
    char rep[REP_HDR] = { 0 };
    struct io_uring ring;
    off_t pos = 0;

    for (unsigned i = 0; i < nbuf; i++) {
        req[i] = malloc(REQ_HDR + bs);
    }
    if (!ring_init(&ring)) {
        goto out;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, sock, req[cur], REQ_HDR + bs, MSG_WAITALL);
    sqe->user_data = 2;
    for (;;) {
        struct io_uring_cqe *cqe;
        bool got = false, failed = false;

        if (io_uring_submit_and_wait(&ring, 1) < 0) {
            break;
        }
        /* Only the recv completes on success; a failed write or send
         * posts its error. */
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            if (cqe->user_data == 2) {
                got = cqe->res == (int)(REQ_HDR + bs);
                failed |= !got;
            } else {
                failed = true;
            }
            io_uring_cqe_seen(&ring, cqe);
        }
        if (failed) {
            break;
        }
        if (!got) {
            continue;
        }
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_write(sqe, file, req[cur] + REQ_HDR, bs,
                            next_offset(&pos));
        sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = 3;
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_send(sqe, sock, rep, sizeof(rep), MSG_NOSIGNAL);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = 1;
        cur = (cur + 1) % nbuf;
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_recv(sqe, sock, req[cur], REQ_HDR + bs, MSG_WAITALL);
        sqe->user_data = 2;
        (*ops)++;
    }
    io_uring_queue_exit(&ring);
out:
    for (unsigned i = 0; i < nbuf; i++) {
        free(req[i]);
    }
    free(req);
}
#endif

static const Shape shapes_all[] = {
    { "blocking", serve_blocking },
    { "mmap", serve_mmap, prepare_mmap },
    { "epoll", serve_epoll },
#ifdef HAVE_LIBURING
    { "uring", serve_uring },
    { "uring1", serve_uring1 },
#endif
};
#define N_SHAPES (sizeof(shapes_all) / sizeof(shapes_all[0]))

/* ---- the client ---------------------------------------------------- */

typedef struct Client {
    int sock;
    sem_t slots;                  /* requests that may still be sent */
    volatile bool stop;
    long sent, answered;
} Client;

static void *client_replies(void *opaque)
{
    Client *c = opaque;
    char rep[REP_HDR];

    while (recv(c->sock, rep, sizeof(rep), MSG_WAITALL) == REP_HDR) {
        c->answered++;
        sem_post(&c->slots);
    }
    return NULL;
}

/* Send for seconds, then end the stream; returns the requests answered. */
static long client_run(int sock, double seconds)
{
    Client c = { .sock = sock };
    char *req = calloc(1, REQ_HDR + bs);
    pthread_t replies;
    double end = floor_now_s() + seconds;

    memset(req + REQ_HDR, 0x5a, bs);
    sem_init(&c.slots, 0, qd);
    pthread_create(&replies, NULL, client_replies, &c);
    while (floor_now_s() < end) {
        sem_wait(&c.slots);
        if (!floor_write_full(sock, req, REQ_HDR + bs)) {
            break;
        }
        c.sent++;
    }
    shutdown(sock, SHUT_WR);
    pthread_join(replies, NULL);
    sem_destroy(&c.slots);
    free(req);
    return c.answered;
}

typedef struct Result {
    double mib_s, s_per_gib;
} Result;

static bool run_one(const Shape *s, int file, double seconds, Result *r)
{
    int sv[2], pipefd[2];
    pid_t pid;
    double t0, t1, srv[2];
    long ops;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe(pipefd) < 0) {
        perror("seqwfloor: socketpair");
        return false;
    }
    pid = fork();
    if (pid == 0) {
        long n = 0;
        double c0, out[2];

        close(sv[1]);
        close(pipefd[0]);
        floor_pin("seqwfloor", pin_server);
        if (s->prepare != NULL) {
            s->prepare(file);
        }
        c0 = floor_cpu_s();
        s->serve(sv[0], file, &n);
        out[0] = floor_cpu_s() - c0;
        out[1] = (double)n;
        if (write(pipefd[1], out, sizeof(out)) != sizeof(out)) {
            _exit(1);
        }
        _exit(0);
    }
    close(sv[0]);
    close(pipefd[1]);
    floor_pin("seqwfloor", pin_client);
    t0 = floor_now_s();
    ops = client_run(sv[1], seconds);
    t1 = floor_now_s();
    close(sv[1]);
    if (read(pipefd[0], srv, sizeof(srv)) != sizeof(srv)) {
        fprintf(stderr, "seqwfloor: %s: the server gave no figures\n",
                s->name);
        close(pipefd[0]);
        waitpid(pid, NULL, 0);
        return false;
    }
    close(pipefd[0]);
    waitpid(pid, NULL, 0);
    if (ops == 0 || (long)srv[1] < ops) {
        fprintf(stderr, "seqwfloor: %s: %ld answered, %ld served\n",
                s->name, ops, (long)srv[1]);
        return false;
    }
    r->mib_s = (double)ops * bs / (1024.0 * 1024) / (t1 - t0);
    r->s_per_gib = srv[0] / ((double)ops * bs / (1024.0 * 1024 * 1024));
    return true;
}

static int make_file(const char *path)
{
    const off_t size = 1024 * 1024 * 1024;
    size_t chunk = 1024 * 1024;
    char *buf = malloc(chunk);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0) {
        perror(path);
        free(buf);
        return -1;
    }
    memset(buf, 0xa5, chunk);
    for (off_t off = 0; off < size; off += (off_t)chunk) {
        if (pwrite(fd, buf, chunk, off) != (ssize_t)chunk) {
            perror(path);
            close(fd);
            free(buf);
            return -1;
        }
    }
    free(buf);
    return fd;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: seqwfloor [--rounds N] [--seconds S] [--shapes LIST]\n"
            "                 [--pin S:C] [--file PATH] [--bs BYTES] "
            "[--qd N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "rounds", required_argument, NULL, 'r' },
        { "seconds", required_argument, NULL, 's' },
        { "shapes", required_argument, NULL, 'S' },
        { "pin", required_argument, NULL, 'p' },
        { "file", required_argument, NULL, 'f' },
        { "bs", required_argument, NULL, 'b' },
        { "qd", required_argument, NULL, 'q' },
        { NULL, 0, NULL, 0 },
    };
    int rounds = 5, nsel = 0, file, c;
    double seconds = 2;
    const char *shapes_arg = NULL, *path = NULL;
    char made[64] = "";
    const Shape *sel[N_SHAPES];
    static double cpu[N_SHAPES][MAX_ROUNDS], rate[N_SHAPES][MAX_ROUNDS];
    bool ok = true;

    pin_server = 0;
    pin_client = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': rounds = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'S': shapes_arg = optarg; break;
        case 'p':
            if (sscanf(optarg, "%d:%d", &pin_server, &pin_client) != 2) {
                usage();
            }
            break;
        case 'f': path = optarg; break;
        case 'b': bs = strtoul(optarg, NULL, 0); break;
        case 'q': qd = (unsigned)atoi(optarg); break;
        default: usage();
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || seconds <= 0 || bs < 512 ||
        bs > 64 * 1024 * 1024 || qd < 1 || qd > MAX_QD) {
        usage();
    }
    for (size_t i = 0; i < N_SHAPES; i++) {
        const char *name = shapes_all[i].name;
        const char *p = shapes_arg;
        bool want = shapes_arg == NULL;

        while (p != NULL && !want) {
            size_t len = strcspn(p, ",");

            want = len == strlen(name) && strncmp(p, name, len) == 0;
            p = p[len] ? p + len + 1 : NULL;
        }
        if (want) {
            sel[nsel++] = &shapes_all[i];
        }
    }
    if (nsel == 0) {
        fprintf(stderr, "seqwfloor: no such shape in %s\n", shapes_arg);
        return 2;
    }
    if (path == NULL) {
        snprintf(made, sizeof(made), "/dev/shm/seqwfloor.%d", getpid());
        file = make_file(made);
    } else {
        file = open(path, O_RDWR | O_CLOEXEC);
        if (file < 0) {
            perror(path);
        }
    }
    if (file < 0) {
        return 1;
    }
    file_size = lseek(file, 0, SEEK_END);
    if (file_size < (off_t)bs) {
        fprintf(stderr, "seqwfloor: the file is smaller than --bs\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("# seqwfloor: %zu-byte writes at QD %u, %d rounds of %.1f s, "
           "server CPU %d, client CPU %d\n",
           bs, qd, rounds, seconds, pin_server, pin_client);
    for (int r = 0; r < rounds && ok; r++) {
        for (int i = 0; i < nsel; i++) {
            Result res;

            if (!run_one(sel[i], file, seconds, &res)) {
                ok = false;
                break;
            }
            rate[i][r] = res.mib_s;
            cpu[i][r] = res.s_per_gib;
            printf("round %d %-8s %8.1f MiB/s %7.4f s/GiB\n", r + 1,
                   sel[i]->name, res.mib_s, res.s_per_gib);
            fflush(stdout);
        }
    }
    if (ok) {
        int base = -1;

        for (int i = 0; i < nsel; i++) {
            if (strcmp(sel[i]->name, "epoll") == 0) {
                base = i;
            }
        }
        printf("# medians of %d rounds\n", rounds);
        for (int i = 0; i < nsel; i++) {
            double ratio[MAX_ROUNDS], rt[MAX_ROUNDS], cp[MAX_ROUNDS];

            for (int r = 0; r < rounds; r++) {
                rt[r] = rate[i][r];
                cp[r] = cpu[i][r];
                ratio[r] = base >= 0 ? cpu[i][r] / cpu[base][r] : 0;
            }
            printf("%-8s %8.1f MiB/s %7.4f s/GiB", sel[i]->name,
                   floor_median(rt, rounds), floor_median(cp, rounds));
            if (base >= 0) {
                printf("  CPU vs epoll %.3f", floor_median(ratio, rounds));
            }
            printf("\n");
        }
    }
    close(file);
    if (made[0]) {
        unlink(made);
    }
    return ok ? 0 : 1;
}
