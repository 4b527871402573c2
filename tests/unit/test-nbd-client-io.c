/* test-nbd-client-io.c - the NBD client's transmission engine over a
 * socketpair, against a scripted server thread in this file: pipelined
 * replies out of order, simple, structured and extended replies, split
 * requests, error chunks, protocol violations, and reconnects. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cunit-main.h"
#include "nbd/client-io.h"
#include "nbd/proto.h"
#include "util/util.h"

#define MEM_SIZE (1 << 20)

typedef enum Misbehave {
    OK,
    REVERSE,            /* collect `batch` requests, answer last first */
    DROP_FIRST,         /* hang up on the first request, unanswered */
    BAD_COOKIE,         /* answer with a cookie nobody sent */
    DATA_OUTSIDE,       /* a data chunk past the requested range */
    SHORT_READ,         /* chunks cover half the read, then DONE */
    ERROR_CHUNK,        /* NBD_EPERM in an error chunk */
    SIMPLE_ERROR,       /* NBD_ENOSPC in a simple reply */
    EARLY_ERROR,        /* refuse a write before draining its payload */
    SILENT,             /* take every request, answer none (hung) */
} Misbehave;

typedef struct Srv {
    int fd;
    bool structured, extended;
    Misbehave mode;
    int batch;
    uint32_t ctx_id;
    pthread_t th;
    uint8_t *mem;       /* MEM_SIZE, shared by the test's servers */
    int nreq;           /* requests seen (not DISC) */
    uint64_t max_len;   /* longest request seen */
    bool disc;          /* NBD_CMD_DISC arrived */
    /* Servers sharing this counter (mode OK) hold their replies until
     * they received `batch` requests between them. */
    int *shared;
} Srv;

/* The client may hang up on a misbehaving server: no SIGPIPE. */
static void srv_send(Srv *s, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(s->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

static void srv_chunk(Srv *s, const NbdRequest *r, uint16_t flags,
                      uint16_t type, const void *pl, size_t len,
                      const void *data, size_t dlen)
{
    uint8_t hdr[NBD_MAX_CHUNK_HDR_SIZE];
    size_t n = nbd_encode_chunk_hdr(hdr, s->extended, flags, type,
                                    r->cookie, r->offset, len + dlen);

    srv_send(s, hdr, n);
    srv_send(s, pl, len);
    if (dlen > 0) {
        srv_send(s, data, dlen);
    }
}

/* Answer one request as mode says. */
static void srv_answer(Srv *s, const NbdRequest *r)
{
    uint8_t hdr[NBD_SIMPLE_REPLY_SIZE];
    uint8_t pl[64];
    bool structured = s->structured || s->extended;
    uint64_t half = r->length / 2;

    if (s->mode == SIMPLE_ERROR) {
        srv_send(s, hdr, nbd_encode_simple_reply(hdr, NBD_ENOSPC,
                                                 r->cookie));
        return;
    }
    if (s->mode == ERROR_CHUNK && structured) {
        NbdChunkError ce = { .error = NBD_EPERM, .msg = nbd_str("no") };
        ssize_t n = nbd_encode_chunk_error(pl, sizeof(pl),
                                           NBD_REPLY_TYPE_ERROR, &ce);
        srv_chunk(s, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, pl,
                  (size_t)n, NULL, 0);
        return;
    }
    if (r->type == NBD_CMD_READ && structured) {
        NbdChunkHole hole = { r->offset + half, (uint32_t)(r->length -
                                                           half) };
        uint64_t doff = s->mode == DATA_OUTSIDE ? r->offset + r->length
                                                : r->offset;
        if (s->mode != SHORT_READ) {
            nbd_encode_offset_hole(pl, &hole);
            srv_chunk(s, r, 0, NBD_REPLY_TYPE_OFFSET_HOLE, pl,
                      NBD_OFFSET_HOLE_SIZE, NULL, 0);
        }
        nbd_encode_offset_data_hdr(pl, doff);
        srv_chunk(s, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, pl,
                  NBD_OFFSET_DATA_HDR_SIZE, s->mem + r->offset, half);
        return;
    }
    if (r->type == NBD_CMD_BLOCK_STATUS) {
        NbdExtent ext = {
            .length = MIN(r->length, (uint64_t)4096),
            .flags = r->offset >= 65536 ? NBD_STATE_HOLE | NBD_STATE_ZERO
                                        : 0,
        };
        ssize_t n = nbd_encode_block_status(pl, sizeof(pl), s->extended,
                                            s->ctx_id, &ext, 1);
        srv_chunk(s, r, NBD_REPLY_FLAG_DONE,
                  s->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                              : NBD_REPLY_TYPE_BLOCK_STATUS,
                  pl, (size_t)n, NULL, 0);
        return;
    }
    if (structured && r->type != NBD_CMD_READ) {
        srv_chunk(s, r, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, NULL, 0,
                  NULL, 0);
        return;
    }
    srv_send(s, hdr, nbd_encode_simple_reply(hdr, 0, s->mode == BAD_COOKIE
                                             ? r->cookie ^ 0x55
                                             : r->cookie));
    if (r->type == NBD_CMD_READ) {
        srv_send(s, s->mem + r->offset, r->length);
    }
}

static void *srv_thread(void *opaque)
{
    Srv *s = opaque;
    NbdRequest held[64];
    int nheld = 0;

    for (;;) {
        uint8_t buf[NBD_EXT_REQ_SIZE];
        size_t hlen = s->extended ? NBD_EXT_REQ_SIZE : NBD_REQ_SIZE;
        NbdRequest r;

        if (s->shared != NULL) {
            struct pollfd p = { .fd = s->fd, .events = POLLIN };

            if (nheld > 0 &&
                __atomic_load_n(s->shared, __ATOMIC_SEQ_CST) >= s->batch) {
                for (int i = 0; i < nheld; i++) {
                    srv_answer(s, &held[i]);
                }
                nheld = 0;
            }
            if (poll(&p, 1, 20) == 0) {
                continue;
            }
        }
        if (read_full(s->fd, buf, hlen) < 0 ||
            !nbd_decode_request(buf, s->extended, &r)) {
            break;
        }
        if (s->extended && r.type == NBD_CMD_WRITE &&
            !(r.flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
            break;              /* doc/proto.md: mandatory on writes */
        }
        if (r.type == NBD_CMD_DISC) {
            s->disc = true;
            break;
        }
        s->nreq++;
        s->max_len = MAX(s->max_len, r.length);
        if (r.offset + r.length > MEM_SIZE) {
            break;
        }
        if (r.type == NBD_CMD_WRITE && s->mode == EARLY_ERROR) {
            uint8_t hdr[NBD_SIMPLE_REPLY_SIZE];
            uint8_t *junk = xmalloc(r.length);

            srv_send(s, hdr, nbd_encode_simple_reply(hdr, NBD_ENOSPC,
                                                     r.cookie));
            if (read_full(s->fd, junk, r.length) < 0) {
                free(junk);
                break;
            }
            free(junk);
            continue;
        }
        if (r.type == NBD_CMD_WRITE &&
            read_full(s->fd, s->mem + r.offset, r.length) < 0) {
            break;
        }
        if (s->mode == DROP_FIRST) {
            break;
        }
        if (s->mode == SILENT) {
            continue;
        }
        if (s->shared != NULL) {
            held[nheld++] = r;
            __atomic_add_fetch(s->shared, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        if (s->mode == REVERSE) {
            held[nheld++] = r;
            if (nheld == s->batch) {
                while (nheld > 0) {
                    srv_answer(s, &held[--nheld]);
                }
            }
            continue;
        }
        if (r.type == NBD_CMD_WRITE_ZEROES) {
            memset(s->mem + r.offset, 0, r.length);
        }
        srv_answer(s, &r);
    }
    shutdown(s->fd, SHUT_RDWR);
    return NULL;
}

static void plain_close(NbdClientXport *xp)
{
    if (xp->fd >= 0) {
        close(xp->fd);
        xp->fd = -1;
    }
}

static const NbdClientXportOps plain_ops = { .close = plain_close };

/* Start a server thread on one end of a socketpair and fill link with
 * the other end. */
static void srv_start(Srv *s, NbdcLink *link)
{
    int sv[2];

    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                               sv) == 0);
    s->fd = sv[0];
    s->ctx_id = 7;
    *link = (NbdcLink) {
        .xp = { .ops = &plain_ops, .fd = sv[1], .timeout_ms = -1 },
        .size = MEM_SIZE,
        .flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH,
        .structured = s->structured || s->extended,
        .extended = s->extended,
        .has_context = s->structured || s->extended,
        .context_id = s->ctx_id,
    };
    pthread_create(&s->th, NULL, srv_thread, s);
}

static void srv_join(Srv *s)
{
    pthread_join(s->th, NULL);
    close(s->fd);
}

static NbdcEngine *engine_on(Srv *s, uint8_t *mem, uint32_t max_payload)
{
    NbdcConfig cfg = { .name = "test", .max_payload = max_payload };
    NbdcLink link;
    NbdcEngine *e;

    s->mem = mem;
    srv_start(s, &link);
    e = nbdc_engine_new(&cfg, &link, 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    return e;
}

static uint8_t *pattern_mem(void)
{
    uint8_t *m = xmalloc(MEM_SIZE);

    for (size_t i = 0; i < MEM_SIZE; i++) {
        m[i] = (uint8_t)(i * 7 + i / 4096);
    }
    return m;
}

/* ---- async completions ------------------------------------------- */

typedef struct Waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} Waiter;

static Waiter waiter = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                         0 };

static void waiter_done(NbdcCmd *cmd)
{
    (void)cmd;
    pthread_mutex_lock(&waiter.lock);
    waiter.done++;
    pthread_cond_broadcast(&waiter.cond);
    pthread_mutex_unlock(&waiter.lock);
}

static void waiter_wait(int n)
{
    pthread_mutex_lock(&waiter.lock);
    while (waiter.done < n) {
        pthread_cond_wait(&waiter.cond, &waiter.lock);
    }
    waiter.done = 0;
    pthread_mutex_unlock(&waiter.lock);
}

static int run_cmd(NbdcEngine *e, uint16_t type, uint64_t off, uint64_t len,
                   void *buf)
{
    NbdcCmd cmd = { .type = type, .offset = off, .length = len,
                    .buf = buf };

    return nbdc_run(e, &cmd);
}

/* ---- tests -------------------------------------------------------- */

/* Eight reads in flight at once, answered last first: each lands in its
 * own buffer (matched by cookie); then writes and a flush. */
static void test_pipelined_simple(void)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = REVERSE, .batch = 8 };
    NbdcEngine *e = engine_on(&s, mem, 0);
    static uint8_t bufs[8][4096];
    NbdcCmd cmds[8];

    for (int i = 0; i < 8; i++) {
        cmds[i] = (NbdcCmd) { .type = NBD_CMD_READ, .offset = i * 8192u,
                              .length = 4096, .buf = bufs[i],
                              .done = waiter_done };
        nbdc_submit(e, &cmds[i]);
    }
    waiter_wait(8);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(cmds[i].ret, 0);
        CU_ASSERT_EQUAL(memcmp(bufs[i], mem + i * 8192, 4096), 0);
    }
    CU_ASSERT_EQUAL(s.nreq, 8);
    nbdc_engine_free(e);
    srv_join(&s);
    CU_ASSERT_TRUE(s.disc);
    free(mem);
}

static void test_write_flush_simple(void)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = OK };
    NbdcEngine *e = engine_on(&s, mem, 0);
    uint8_t buf[10000];

    memset(buf, 0x5a, sizeof(buf));
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE, 3, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_FLUSH, 0, 0, NULL), 0);
    CU_ASSERT_EQUAL(mem[3], 0x5a);
    CU_ASSERT_EQUAL(mem[3 + sizeof(buf) - 1], 0x5a);
    CU_ASSERT_NOT_EQUAL(mem[3 + sizeof(buf)], 0x5a);
    memset(buf, 0, sizeof(buf));
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 3, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(buf[0], 0x5a);
    CU_ASSERT_EQUAL(buf[sizeof(buf) - 1], 0x5a);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE_ZEROES, 3, 100, NULL), 0);
    CU_ASSERT_EQUAL(mem[50], 0);
    nbdc_engine_free(e);
    srv_join(&s);
    free(mem);
}

/* Structured (and extended) replies: a hole chunk then a data chunk,
 * reassembled; requests split at max_payload; block status. */
static void check_structured(bool extended)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = OK, .structured = true, .extended = extended };
    NbdcEngine *e = engine_on(&s, mem, 4096);
    size_t len = 3 * 4096 + 100;
    uint8_t *buf = xmalloc(len);
    NbdcCmd st = { .type = NBD_CMD_BLOCK_STATUS, .offset = 65536,
                   .length = 1 << 20 };

    memset(buf, 0xee, len);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 100, len, buf), 0);
    CU_ASSERT_EQUAL(s.nreq, 4);
    CU_ASSERT_EQUAL(s.max_len, 4096);
    /* each 4096-byte piece: data in its first half, a hole after */
    CU_ASSERT_EQUAL(memcmp(buf, mem + 100, 2048), 0);
    CU_ASSERT_EQUAL(buf[2048], 0);
    CU_ASSERT_EQUAL(buf[4095], 0);
    CU_ASSERT_EQUAL(memcmp(buf + 4096, mem + 100 + 4096, 2048), 0);
    CU_ASSERT_EQUAL(buf[len - 1], 0);
    CU_ASSERT_EQUAL(memcmp(buf + 3 * 4096, mem + 100 + 3 * 4096, 50), 0);

    memset(buf, 0x3c, len);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE, 200000, len, buf), 0);
    CU_ASSERT_EQUAL(mem[200000], 0x3c);
    CU_ASSERT_EQUAL(mem[200000 + len - 1], 0x3c);
    st.length = MEM_SIZE - 65536;
    CU_ASSERT_EQUAL(nbdc_run(e, &st), 0);
    CU_ASSERT_EQUAL(st.status_length, 4096);
    CU_ASSERT_EQUAL(st.status_flags, NBD_STATE_HOLE | NBD_STATE_ZERO);
    st.offset = 0;
    CU_ASSERT_EQUAL(nbdc_run(e, &st), 0);
    CU_ASSERT_EQUAL(st.status_flags, 0);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_FLUSH, 0, 0, NULL), 0);
    nbdc_engine_free(e);
    srv_join(&s);
    free(buf);
    free(mem);
}

static void test_structured(void)
{
    check_structured(false);
}

static void test_extended(void)
{
    check_structured(true);
}

/* Error replies fail the request with their errno; the connection
 * stays. */
static void test_errors(void)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = ERROR_CHUNK, .structured = true };
    Srv s2 = { .mode = SIMPLE_ERROR };
    NbdcEngine *e = engine_on(&s, mem, 0);
    uint8_t buf[512];

    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, 512, buf), -EPERM);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE, 0, 512, buf), -EPERM);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    nbdc_engine_free(e);
    srv_join(&s);
    e = engine_on(&s2, mem, 0);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE, 0, 512, buf), -ENOSPC);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, 512, buf), -ENOSPC);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    nbdc_engine_free(e);
    srv_join(&s2);
    free(mem);
}

/* A write refused before its payload was read (the server drains it
 * after replying): the error arrives while the client still sends; the
 * connection stays usable. */
static void test_early_error(void)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = EARLY_ERROR };
    NbdcEngine *e = engine_on(&s, mem, 0);
    size_t len = 4 << 20;
    uint8_t *buf = xmalloc(len);

    memset(buf, 1, len);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_WRITE, 0, MEM_SIZE / 2, buf),
                    -ENOSPC);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, 4096, buf), 0);
    CU_ASSERT_EQUAL(memcmp(buf, mem, 4096), 0);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    nbdc_engine_free(e);
    srv_join(&s);
    free(buf);
    free(mem);
}

/* A server breaking the protocol loses the connection; with no
 * reconnect the request fails with EIO, and so does the next. */
static void check_violation(Misbehave mode, bool structured)
{
    uint8_t *mem = pattern_mem();
    Srv s = { .mode = mode, .structured = structured };
    NbdcEngine *e = engine_on(&s, mem, 0);
    uint8_t buf[4096];

    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), -EIO);
    if (mode == SHORT_READ) {
        /* The stream was in sync: only the request failed. */
        CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    } else {
        CU_ASSERT_EQUAL(nbdc_connections_up(e), 0);
        CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_FLUSH, 0, 0, NULL), -EIO);
    }
    nbdc_engine_free(e);
    srv_join(&s);
    free(mem);
}

static void test_violations(void)
{
    check_violation(BAD_COOKIE, false);
    check_violation(DATA_OUTSIDE, true);
    check_violation(SHORT_READ, true);
    check_violation(DROP_FIRST, false);
    /* A structured chunk when none was negotiated. */
    {
        uint8_t *mem = pattern_mem();
        Srv s = { .mode = OK, .structured = true };
        NbdcConfig cfg = { .name = "test" };
        NbdcLink link;
        NbdcEngine *e;
        uint8_t buf[512];

        s.mem = mem;
        srv_start(&s, &link);
        link.structured = false;
        link.has_context = false;
        e = nbdc_engine_new(&cfg, &link, 1, NULL);
        CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, 512, buf), -EIO);
        CU_ASSERT_EQUAL(nbdc_connections_up(e), 0);
        nbdc_engine_free(e);
        srv_join(&s);
        free(mem);
    }
}

/* ---- reconnect ----------------------------------------------------- */

typedef struct Reco {
    uint8_t *mem;
    Srv srv[64];
    int nsrv;
    Misbehave mode;     /* of the servers reconnects find */
    uint64_t size;      /* what reconnects report */
    int downs, ups;
} Reco;

static bool reco_connect(void *opaque, unsigned idx, NbdcLink *link,
                         Error **errp)
{
    Reco *r = opaque;
    Srv *s;

    (void)idx;
    if (r->nsrv == (int)ARRAY_SIZE(r->srv)) {
        error_setg(errp, "no more test servers");
        return false;
    }
    s = &r->srv[r->nsrv++];
    s->mode = r->mode;
    s->mem = r->mem;
    srv_start(s, link);
    link->size = r->size;
    return true;
}

static void reco_state(void *opaque, bool up, const char *reason)
{
    Reco *r = opaque;

    CU_ASSERT_PTR_NOT_NULL(reason);
    if (up) {
        r->ups++;
    } else {
        r->downs++;
    }
}

/* r's first server (mode first, over pattern_mem()) and an engine on
 * it with cfg; reconnects find r->mode servers reporting r->size. */
static NbdcEngine *reco_start(Reco *r, const NbdcConfig *cfg,
                              Misbehave first)
{
    NbdcLink link;
    NbdcEngine *e;

    r->mem = pattern_mem();
    r->srv[0].mode = first;
    r->srv[0].mem = r->mem;
    r->nsrv = 1;
    srv_start(&r->srv[0], &link);
    e = nbdc_engine_new(cfg, &link, 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    return e;
}

/* Free e, join r's servers, free r. */
static void reco_end(Reco *r, NbdcEngine *e)
{
    nbdc_engine_free(e);
    for (int i = 0; i < r->nsrv; i++) {
        srv_join(&r->srv[i]);
    }
    free(r->mem);
    free(r);
}

/* The server hangs up on a request: it is sent again on the new
 * connection and completes; the state callback saw down, then up. */
static void test_reconnect(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .reconnect_delay = 30,
                       .connect = reco_connect, .state = reco_state,
                       .opaque = r };
    NbdcEngine *e;
    uint8_t buf[4096];

    r->size = MEM_SIZE;
    e = reco_start(r, &cfg, DROP_FIRST);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 4096, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(memcmp(buf, r->mem + 4096, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(r->nsrv, 2);
    CU_ASSERT_EQUAL(r->downs, 1);
    CU_ASSERT_EQUAL(r->ups, 1);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    reco_end(r, e);
}

/* A reconnect that finds another size is refused; with
 * reconnect-delay 0 the request fails at once. */
static void test_reconnect_size_changed(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .reconnect_delay = 0,
                       .connect = reco_connect, .state = reco_state,
                       .opaque = r };
    NbdcEngine *e;
    uint8_t buf[512];

    r->size = MEM_SIZE / 2;
    e = reco_start(r, &cfg, DROP_FIRST);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), -EIO);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), -EIO);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 0);
    CU_ASSERT_EQUAL(r->ups, 0);
    reco_end(r, e);
}

/* Two connections (multi-conn): requests spread over both; one hangs
 * up on a request, which is sent again on the other. */
static void test_two_connections(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .state = reco_state, .opaque = r };
    NbdcLink links[2];
    NbdcEngine *e;
    static uint8_t bufs[8][4096];
    NbdcCmd cmds[8];

    int received = 0;

    r->mem = pattern_mem();
    /* no reply before all 8 were sent: the fewest in flight is 4 each */
    r->srv[0] = (Srv) { .batch = 8, .shared = &received, .mem = r->mem };
    r->srv[1] = (Srv) { .batch = 8, .shared = &received, .mem = r->mem };
    srv_start(&r->srv[0], &links[0]);
    srv_start(&r->srv[1], &links[1]);
    e = nbdc_engine_new(&cfg, links, 2, NULL);
    for (int i = 0; i < 8; i++) {
        cmds[i] = (NbdcCmd) { .type = NBD_CMD_READ, .offset = i * 4096u,
                              .length = 4096, .buf = bufs[i],
                              .done = waiter_done };
        nbdc_submit(e, &cmds[i]);
    }
    waiter_wait(8);
    for (int i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(cmds[i].ret, 0);
        CU_ASSERT_EQUAL(memcmp(bufs[i], r->mem + i * 4096, 4096), 0);
    }
    CU_ASSERT_EQUAL(r->srv[0].nreq, 4);
    CU_ASSERT_EQUAL(r->srv[1].nreq, 4);
    nbdc_engine_free(e);
    srv_join(&r->srv[0]);
    srv_join(&r->srv[1]);

    /* connection 0 drops its first request: connection 1 answers it,
     * even with reconnect-delay 0 */
    r->srv[0] = (Srv) { .mode = DROP_FIRST, .mem = r->mem };
    r->srv[1] = (Srv) { .mode = OK, .mem = r->mem };
    srv_start(&r->srv[0], &links[0]);
    srv_start(&r->srv[1], &links[1]);
    e = nbdc_engine_new(&cfg, links, 2, NULL);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 8192, 4096, bufs[0]), 0);
    CU_ASSERT_EQUAL(memcmp(bufs[0], r->mem + 8192, 4096), 0);
    CU_ASSERT_EQUAL(r->srv[0].nreq, 1);
    CU_ASSERT_EQUAL(r->srv[1].nreq, 1);
    CU_ASSERT_EQUAL(nbdc_connections_up(e), 1);
    CU_ASSERT_EQUAL(r->downs, 1);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_FLUSH, 0, 0, NULL), 0);
    nbdc_engine_free(e);
    srv_join(&r->srv[0]);
    srv_join(&r->srv[1]);
    free(r->mem);
    free(r);
}

/* A server that breaks the protocol on every attempt: each reconnect
 * works, but the request may be resent only until reconnect-delay
 * after its first loss, then fails with EIO; violations back off the
 * reconnects (no flood of connections). */
static void test_persistent_violation(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .reconnect_delay = 1,
                       .connect = reco_connect, .state = reco_state,
                       .opaque = r };
    NbdcEngine *e;
    uint8_t buf[512];

    r->size = MEM_SIZE;
    r->mode = BAD_COOKIE;
    e = reco_start(r, &cfg, BAD_COOKIE);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), -EIO);
    /* 1 s of back-off from 50 ms doubling: a handful, not thousands */
    CU_ASSERT(r->nsrv < 20);
    reco_end(r, e);
}

/* reconnect-delay 0: a request lost with its connection fails at once,
 * even when a reconnect would work. */
static void test_delay_zero_fails_lost_request(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .connect = reco_connect,
                       .state = reco_state, .opaque = r };
    NbdcEngine *e;
    uint8_t buf[512];

    r->size = MEM_SIZE;
    e = reco_start(r, &cfg, DROP_FIRST);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), -EIO);
    /* the node recovers: the next request goes to the new connection */
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(memcmp(buf, r->mem, sizeof(buf)), 0);
    reco_end(r, e);
}

/* A server that takes requests and never answers: nbdc_engine_abort()
 * fails the ones in flight (sent or still queued) with EIO at once, the
 * connection is dropped and comes back after the back-off, and the
 * engine serves again; an abort with nothing in flight drops nothing. */
static void test_abort_hung(void)
{
    Reco *r = XNEW(Reco);
    NbdcConfig cfg = { .name = "test", .reconnect_delay = 30,
                       .connect = reco_connect, .state = reco_state,
                       .opaque = r };
    static uint8_t bufs[6][4096];
    NbdcCmd cmds[6];
    NbdcEngine *e;
    uint8_t buf[512];

    r->size = MEM_SIZE;
    e = reco_start(r, &cfg, SILENT);
    for (int i = 0; i < 6; i++) {
        cmds[i] = (NbdcCmd) {
            .type = i == 5 ? NBD_CMD_WRITE : NBD_CMD_READ,
            .offset = i * 4096u, .length = 4096, .buf = bufs[i],
            .done = waiter_done,
        };
        nbdc_submit(e, &cmds[i]);
    }
    /* the server has them (it never answers): then give up on them */
    while (__atomic_load_n(&r->srv[0].nreq, __ATOMIC_SEQ_CST) < 6) {
        usleep(1000);
    }
    nbdc_engine_abort(e);
    waiter_wait(6);
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(cmds[i].ret, -EIO);
    }
    CU_ASSERT_EQUAL(r->downs, 1);
    /* the node serves again over a new connection */
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 0, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(memcmp(buf, r->mem, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(r->nsrv, 2);
    CU_ASSERT_EQUAL(r->ups, 1);
    /* nothing in flight: the connection stays */
    nbdc_engine_abort(e);
    CU_ASSERT_EQUAL(run_cmd(e, NBD_CMD_READ, 512, sizeof(buf), buf), 0);
    CU_ASSERT_EQUAL(memcmp(buf, r->mem + 512, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(r->downs, 1);
    CU_ASSERT_EQUAL(r->nsrv, 2);
    reco_end(r, e);
}

static CU_TestInfo client_io_tests[] = {
    { "abort_hung", test_abort_hung },
    { "persistent_violation", test_persistent_violation },
    { "delay_zero_fails_lost_request", test_delay_zero_fails_lost_request },
    { "two_connections", test_two_connections },
    { "pipelined_simple", test_pipelined_simple },
    { "write_flush_simple", test_write_flush_simple },
    { "structured", test_structured },
    { "extended", test_extended },
    { "errors", test_errors },
    { "early_error", test_early_error },
    { "violations", test_violations },
    { "reconnect", test_reconnect },
    { "reconnect_size_changed", test_reconnect_size_changed },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-client-io", .pTests = client_io_tests },
    CU_SUITE_INFO_NULL,
};
