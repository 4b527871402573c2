/* nbdload - an NBD load generator that costs its host as little as
 * possible, so the server is the limit.
 *
 * The third-party clients (nbdcopy, fio's nbd engine) spend a core of
 * their own per stream: on a 2-core machine they are the bottleneck and
 * hide what a server spends.  nbdload does no data handling at all: one
 * thread per connection, a blocking socket, requests pipelined up to the
 * queue depth and sent in batches with one sendmsg, replies parsed from
 * a large receive buffer (many per recv) and read payloads skipped in
 * place, never copied.  Write payloads come from one preallocated
 * buffer.  Replies are checked: cookie, magic, error.
 *
 *   nbdload (--unix PATH | --tcp HOST:PORT) [--export NAME]
 *           [--op read|write] [--pattern seq|rand] [--bs BYTES]
 *           [--qd N] [--conns N] [--seconds S] [--simple]
 *           [--server-pid PID] [--json]
 *
 * Prints one line: ops, bytes, MiB/s, IOPS, latency p50/p99 (µs), the
 * client's CPU, and with --server-pid the server's CPU per GiB and per
 * request (the sum over its threads and child processes, from
 * /proc/PID/task/N/schedstat).
 */
#include <errno.h>
#include <getopt.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "nbd/client.h"
#include "nbd/proto.h"
#include "util/error.h"

#define RBUF_SIZE (4u << 20)        /* receive buffer per connection */
#define HIST_US 100000              /* 1 µs buckets up to 100 ms */
#define MAX_QD 1024

typedef struct Config {
    SockAddr addr;
    const char *export_name;
    bool write;
    bool random;
    uint32_t bs;
    unsigned qd;
    unsigned conns;
    double seconds;
    bool simple;
    long server_pid;
    bool json;
} Config;

typedef struct Slot {
    uint64_t t0;                    /* ns, when sent */
    bool busy;
} Slot;

typedef struct Worker {
    const Config *cfg;
    unsigned id;
    int fd;
    bool structured, extended;
    uint64_t size;                  /* export size */
    uint64_t region_start, region_len, next_seq;
    uint64_t rng;
    pthread_t thread;
    Slot slots[MAX_QD];
    unsigned inflight;
    uint8_t *rbuf;
    size_t rstart, rend;
    uint64_t skip;                  /* payload bytes still to skip */
    uint64_t ops, bytes, errors;
    uint32_t *hist;                 /* HIST_US + 1 buckets */
    const char *failure;
} Worker;

static atomic_bool stopping;
static const uint8_t *write_data;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t next_offset(Worker *w)
{
    uint64_t blocks = w->region_len / w->cfg->bs;
    uint64_t off;

    if (w->cfg->random) {
        return (rng_next(&w->rng) % blocks) * w->cfg->bs + w->region_start;
    }
    off = w->next_seq;
    w->next_seq += w->cfg->bs;
    if (w->next_seq >= w->region_start + blocks * w->cfg->bs) {
        w->next_seq = w->region_start;
    }
    return off;
}

/* Queue one request into the batch (iov/hdrs); returns the iovecs
 * used. */
static int queue_request(Worker *w, unsigned slot, uint8_t *hdr,
                         struct iovec *iov)
{
    NbdRequest req = {
        .type = w->cfg->write ? NBD_CMD_WRITE : NBD_CMD_READ,
        .cookie = slot,
        .offset = next_offset(w),
        .length = w->cfg->bs,
    };
    size_t n = nbd_encode_request(hdr, w->extended, &req);

    w->slots[slot].busy = true;
    w->slots[slot].t0 = now_ns();
    w->inflight++;
    iov[0] = (struct iovec) { .iov_base = hdr, .iov_len = n };
    if (w->cfg->write) {
        iov[1] = (struct iovec) { .iov_base = (void *)write_data,
                                  .iov_len = w->cfg->bs };
        return 2;
    }
    return 1;
}

static bool send_all(Worker *w, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr m = { .msg_iov = iov,
                            .msg_iovlen = (size_t)(n > 1024 ? 1024 : n) };
        ssize_t r = sendmsg(w->fd, &m, MSG_NOSIGNAL);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            w->failure = "send failed";
            return false;
        }
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return true;
}

static void complete(Worker *w, uint64_t cookie, bool ok)
{
    Slot *s = &w->slots[cookie];
    uint64_t us = (now_ns() - s->t0) / 1000;

    s->busy = false;
    w->inflight--;
    w->ops++;
    if (ok) {
        w->bytes += w->cfg->bs;
    } else {
        w->errors++;
    }
    w->hist[us < HIST_US ? us : HIST_US]++;
}

/* Parse every complete reply header in rbuf; skip payloads in place.
 * Completed slots are appended to done[]; returns their count or -1. */
static int parse_replies(Worker *w, unsigned *done)
{
    int ndone = 0;

    for (;;) {
        size_t avail = w->rend - w->rstart;
        const uint8_t *p = w->rbuf + w->rstart;
        NbdReplyHdr h;
        size_t hsz;

        if (w->skip) {
            size_t n = avail < w->skip ? avail : (size_t)w->skip;

            w->rstart += n;
            w->skip -= n;
            if (w->skip) {
                return ndone;
            }
            continue;
        }
        if (avail < 4) {
            return ndone;
        }
        hsz = nbd_reply_hdr_size(p, avail);
        if (hsz == 0) {
            w->failure = "bad reply magic";
            return -1;
        }
        if (avail < hsz) {
            return ndone;
        }
        if (!nbd_decode_reply_hdr(p, avail, w->structured, w->extended,
                                  &h) ||
            h.cookie >= w->cfg->qd || !w->slots[h.cookie].busy) {
            w->failure = "bad reply header";
            return -1;
        }
        w->rstart += hsz;
        if (h.magic == NBD_SIMPLE_REPLY_MAGIC) {
            if (!w->cfg->write && h.error == 0) {
                w->skip = w->cfg->bs;
            }
            complete(w, h.cookie, h.error == 0);
            done[ndone++] = (unsigned)h.cookie;
            continue;
        }
        /* A chunk: its payload (data, hole, error) is skipped; an error
         * chunk fails the request; the DONE chunk ends it. */
        if (NBD_REPLY_TYPE_IS_ERR(h.type)) {
            w->errors++;
        }
        w->skip = h.length;
        if (h.flags & NBD_REPLY_FLAG_DONE) {
            complete(w, h.cookie, true);
            done[ndone++] = (unsigned)h.cookie;
        }
    }
}

static void *worker_run(void *opaque)
{
    Worker *w = opaque;
    unsigned qd = w->cfg->qd;
    uint8_t (*hdrs)[NBD_EXT_REQ_SIZE] = calloc(qd, NBD_EXT_REQ_SIZE);
    struct iovec *iov = calloc(2 * qd, sizeof(*iov));
    unsigned *done = calloc(qd, sizeof(*done));
    int niov = 0;

    for (unsigned i = 0; i < qd; i++) {
        niov += queue_request(w, i, hdrs[i], iov + niov);
    }
    if (!send_all(w, iov, niov)) {
        goto out;
    }
    while (w->inflight) {
        ssize_t r;
        int n;
        bool stop = atomic_load_explicit(&stopping, memory_order_relaxed);

        if (w->rstart == w->rend) {
            w->rstart = w->rend = 0;
        } else if (w->rend > RBUF_SIZE / 2) {
            memmove(w->rbuf, w->rbuf + w->rstart, w->rend - w->rstart);
            w->rend -= w->rstart;
            w->rstart = 0;
        }
        r = recv(w->fd, w->rbuf + w->rend, RBUF_SIZE - w->rend, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            w->failure = r == 0 ? "server closed the connection"
                                : "recv failed";
            goto out;
        }
        w->rend += (size_t)r;
        n = parse_replies(w, done);
        if (n < 0) {
            goto out;
        }
        if (stop || n == 0) {
            continue;
        }
        niov = 0;
        for (int i = 0; i < n; i++) {
            niov += queue_request(w, done[i], hdrs[done[i]], iov + niov);
        }
        if (!send_all(w, iov, niov)) {
            goto out;
        }
    }
out:
    free(hdrs);
    free(iov);
    free(done);
    return NULL;
}

/* A clean goodbye, after the server's CPU was read: a server that
 * forks per client (nbd-server) ends that process on NBD_CMD_DISC. */
static void send_disc(Worker *w)
{
    uint8_t disc[NBD_EXT_REQ_SIZE];
    NbdRequest req = { .type = NBD_CMD_DISC, .cookie = w->cfg->qd };
    size_t len = nbd_encode_request(disc, w->extended, &req);
    struct iovec d = { .iov_base = disc, .iov_len = len };

    send_all(w, &d, 1);
}

static bool worker_connect(Worker *w, Error **errp)
{
    NbdClientOpts o = {
        .export_name = w->cfg->export_name,
        .no_structured = w->cfg->simple,
        .no_extended = true,
        .timeout_ms = 30000,
    };
    NbdClientXport xp;
    NbdExportInfo info = { 0 };

    if (!nbd_client_connect(&w->cfg->addr, &o, &xp, &info, errp)) {
        return false;
    }
    w->fd = xp.fd;
    w->structured = info.structured;
    w->extended = info.extended;
    w->size = info.size;
    nbd_export_info_clear(&info);
    return true;
}

/* CPU time of every thread of pid, ns (schedstat's first field). */
static uint64_t proc_cpu_ns(long pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    uint64_t sum = 0;

    snprintf(path, sizeof(path), "/proc/%ld/task", pid);
    d = opendir(path);
    if (!d) {
        return 0;
    }
    while ((e = readdir(d))) {
        char p[320];
        unsigned long long ns;
        FILE *f;

        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(p, sizeof(p), "/proc/%ld/task/%s/schedstat", pid,
                 e->d_name);
        f = fopen(p, "r");
        if (f) {
            if (fscanf(f, "%llu", &ns) == 1) {
                sum += ns;
            }
            fclose(f);
        }
    }
    closedir(d);
    return sum;
}

/* The parent of pid, or -1. */
static long proc_ppid(long pid)
{
    char path[64], buf[512];
    FILE *f;
    char *rp;
    long ppid = -1;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')'))) {
        char state;

        if (sscanf(rp + 1, " %c %ld", &state, &ppid) != 2) {
            ppid = -1;
        }
    }
    fclose(f);
    return ppid;
}

/* CPU time of pid and every process below it (nbd-server forks one
 * per client), ns. */
static uint64_t proc_tree_cpu_ns(long root)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    uint64_t sum = 0;

    if (!d) {
        return 0;
    }
    while ((e = readdir(d))) {
        long pid = strtol(e->d_name, NULL, 10);
        long p = pid;

        for (int depth = 0; p > 1 && depth < 16; depth++) {
            if (p == root) {
                sum += proc_cpu_ns(pid);
                break;
            }
            p = proc_ppid(p);
        }
    }
    closedir(d);
    return sum;
}

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint64_t hist_pct(const uint32_t *h, uint64_t total, double pct)
{
    uint64_t want = (uint64_t)(total * pct / 100.0);
    uint64_t seen = 0;

    for (unsigned i = 0; i <= HIST_US; i++) {
        seen += h[i];
        if (seen > want) {
            return i;
        }
    }
    return HIST_US;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nbdload (--unix PATH | --tcp HOST:PORT) [--export NAME]\n"
            "               [--op read|write] [--pattern seq|rand] "
            "[--bs BYTES]\n"
            "               [--qd N] [--conns N] [--seconds S] [--simple]\n"
            "               [--server-pid PID] [--json]\n");
}

static bool parse_args(int argc, char **argv, Config *c)
{
    static const struct option opts[] = {
        { "unix", required_argument, NULL, 'u' },
        { "tcp", required_argument, NULL, 't' },
        { "export", required_argument, NULL, 'e' },
        { "op", required_argument, NULL, 'o' },
        { "pattern", required_argument, NULL, 'p' },
        { "bs", required_argument, NULL, 'b' },
        { "qd", required_argument, NULL, 'q' },
        { "conns", required_argument, NULL, 'c' },
        { "seconds", required_argument, NULL, 's' },
        { "simple", no_argument, NULL, 'S' },
        { "server-pid", required_argument, NULL, 'P' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    static char host[256];
    int ch;

    *c = (Config) { .bs = 4096, .qd = 16, .conns = 1, .seconds = 5,
                    .export_name = "" };
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            c->addr = (SockAddr) { .type = SOCK_ADDR_UNIX, .path = optarg };
            break;
        case 't': {
            char *colon = strrchr(optarg, ':');

            if (!colon || (size_t)(colon - optarg) >= sizeof(host)) {
                fprintf(stderr, "nbdload: --tcp wants HOST:PORT\n");
                return false;
            }
            memcpy(host, optarg, (size_t)(colon - optarg));
            host[colon - optarg] = '\0';
            c->addr = (SockAddr) { .type = SOCK_ADDR_INET, .host = host,
                                   .port = colon + 1 };
            break;
        }
        case 'e':
            c->export_name = optarg;
            break;
        case 'o':
            if (strcmp(optarg, "read") && strcmp(optarg, "write")) {
                fprintf(stderr, "nbdload: --op is read or write\n");
                return false;
            }
            c->write = !strcmp(optarg, "write");
            break;
        case 'p':
            if (strcmp(optarg, "seq") && strcmp(optarg, "rand")) {
                fprintf(stderr, "nbdload: --pattern is seq or rand\n");
                return false;
            }
            c->random = !strcmp(optarg, "rand");
            break;
        case 'b':
            c->bs = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'q':
            c->qd = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 'c':
            c->conns = (unsigned)strtoul(optarg, NULL, 0);
            break;
        case 's':
            c->seconds = strtod(optarg, NULL);
            break;
        case 'S':
            c->simple = true;
            break;
        case 'P':
            c->server_pid = strtol(optarg, NULL, 0);
            break;
        case 'j':
            c->json = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return false;
        }
    }
    if (optind != argc || (c->addr.type != SOCK_ADDR_UNIX &&
                           c->addr.type != SOCK_ADDR_INET)) {
        usage(stderr);
        return false;
    }
    if (c->bs == 0 || c->bs > (32u << 20) || c->qd == 0 ||
        c->qd > MAX_QD || c->conns == 0 || c->conns > 256 ||
        !(c->seconds > 0)) {
        fprintf(stderr, "nbdload: --bs 1..32 MiB, --qd 1..%d, "
                "--conns 1..256, --seconds > 0\n", MAX_QD);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    Config cfg;
    Worker *w;
    uint64_t ops = 0, bytes = 0, errors = 0, t0, t1, srv0 = 0, srv1 = 0;
    uint32_t *hist;
    double cpu0, cpu1, secs, srv_s;
    const char *op;
    int rc = 0;

    if (!parse_args(argc, argv, &cfg)) {
        return 2;
    }
    write_data = calloc(1, cfg.bs);
    memset((void *)write_data, 0xa5, cfg.bs);
    w = calloc(cfg.conns, sizeof(*w));
    hist = calloc(HIST_US + 1, sizeof(*hist));
    for (unsigned i = 0; i < cfg.conns; i++) {
        w[i].fd = -1;
    }
    for (unsigned i = 0; i < cfg.conns; i++) {
        Error *err = NULL;

        w[i].cfg = &cfg;
        w[i].id = i;
        w[i].rng = 0x9E3779B97F4A7C15ULL * (i + 1);
        w[i].rbuf = malloc(RBUF_SIZE);
        w[i].hist = calloc(HIST_US + 1, sizeof(*w[i].hist));
        if (!worker_connect(&w[i], &err)) {
            fprintf(stderr, "nbdload: %s\n", error_get_pretty(err));
            error_free(err);
            rc = 1;
            goto out;
        }
        if (w[i].size < cfg.bs * (uint64_t)cfg.conns) {
            fprintf(stderr, "nbdload: the export (%" PRIu64 " bytes) is "
                    "smaller than --bs times --conns\n", w[i].size);
            rc = 1;
            goto out;
        }
        /* Sequential streams take one slice of the export each. */
        w[i].region_len = cfg.random ? w[i].size : w[i].size / cfg.conns;
        w[i].region_start = cfg.random ? 0 : w[i].region_len * i;
        w[i].next_seq = w[i].region_start;
    }
    cpu0 = self_cpu_s();
    if (cfg.server_pid) {
        srv0 = proc_tree_cpu_ns(cfg.server_pid);
    }
    t0 = now_ns();
    for (unsigned i = 0; i < cfg.conns; i++) {
        pthread_create(&w[i].thread, NULL, worker_run, &w[i]);
    }
    {
        struct timespec ts = {
            .tv_sec = (time_t)cfg.seconds,
            .tv_nsec = (long)((cfg.seconds - (double)(time_t)cfg.seconds) *
                              1e9),
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
    atomic_store(&stopping, true);
    for (unsigned i = 0; i < cfg.conns; i++) {
        pthread_join(w[i].thread, NULL);
    }
    t1 = now_ns();
    cpu1 = self_cpu_s();
    if (cfg.server_pid) {
        srv1 = proc_tree_cpu_ns(cfg.server_pid);
    }
    for (unsigned i = 0; i < cfg.conns; i++) {
        ops += w[i].ops;
        bytes += w[i].bytes;
        errors += w[i].errors;
        for (unsigned j = 0; j <= HIST_US; j++) {
            hist[j] += w[i].hist[j];
        }
        if (w[i].failure) {
            fprintf(stderr, "nbdload: connection %u: %s\n", i,
                    w[i].failure);
            rc = 1;
        } else {
            send_disc(&w[i]);
        }
        close(w[i].fd);
        w[i].fd = -1;
    }
    if (errors) {
        fprintf(stderr, "nbdload: %" PRIu64 " requests failed\n", errors);
        rc = 1;
    }
    secs = (double)(t1 - t0) / 1e9;
    srv_s = (double)(srv1 - srv0) / 1e9;
    op = cfg.write ? "write" : "read";
    if (cfg.json) {
        printf("{\"op\": \"%s\", \"pattern\": \"%s\", \"bs\": %u, "
               "\"qd\": %u, \"conns\": %u, \"seconds\": %.3f, "
               "\"ops\": %" PRIu64 ", \"bytes\": %" PRIu64 ", "
               "\"mib_s\": %.1f, \"iops\": %.0f, \"p50_us\": %" PRIu64
               ", \"p99_us\": %" PRIu64 ", \"client_cpu_s\": %.3f",
               op, cfg.random ? "rand" : "seq", cfg.bs, cfg.qd, cfg.conns,
               secs, ops, bytes, bytes / secs / 1048576.0, ops / secs,
               hist_pct(hist, ops, 50), hist_pct(hist, ops, 99),
               cpu1 - cpu0);
        if (cfg.server_pid) {
            printf(", \"server_cpu_s\": %.3f, \"server_s_per_gib\": %.4f, "
                   "\"server_us_per_op\": %.2f", srv_s,
                   bytes ? srv_s / (bytes / 1073741824.0) : 0.0,
                   ops ? srv_s * 1e6 / ops : 0.0);
        }
        printf("}\n");
    } else {
        printf("%s %s bs=%u qd=%u conns=%u: %" PRIu64 " ops in %.2f s, "
               "%.1f MiB/s, %.0f IOPS, p50 %" PRIu64 " us, p99 %" PRIu64
               " us, client CPU %.2f s", op, cfg.random ? "rand" : "seq",
               cfg.bs, cfg.qd, cfg.conns, ops, secs,
               bytes / secs / 1048576.0, ops / secs,
               hist_pct(hist, ops, 50), hist_pct(hist, ops, 99),
               cpu1 - cpu0);
        if (cfg.server_pid) {
            printf(", server CPU %.2f s (%.3f s/GiB, %.2f us/op)", srv_s,
                   bytes ? srv_s / (bytes / 1073741824.0) : 0.0,
                   ops ? srv_s * 1e6 / ops : 0.0);
        }
        printf("\n");
    }
out:
    for (unsigned i = 0; i < cfg.conns; i++) {
        if (w[i].fd >= 0) {
            close(w[i].fd);
        }
        free(w[i].rbuf);
        free(w[i].hist);
    }
    free(w);
    free(hist);
    free((void *)write_data);
    return rc;
}
