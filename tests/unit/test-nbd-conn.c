/* test-nbd-conn.c - nbd_conn_start_transmission(): a connection that
 * starts in the transmission phase, as the kernel's /dev/nbdX binding
 * needs.  One end of a socketpair goes to the server; the test speaks
 * requests from the other end with no handshake at all, running the
 * daemon's loop until each reply is there. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cunit-main.h"
#include "daemon/daemon.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "unit-block.h"
#include "util/cleanup.h"
#include "util/util.h"

#define DISK_SIZE (1024 * 1024)

typedef struct Fixture {
    Daemon *d;
    BlockNode *bs;
    NbdServer *srv;
    NbdExport *exp;
    int fd;                      /* the client's end */
} Fixture;

static void fixture_setup(Fixture *f)
{
    CLEANUP_FREE char *path = xasprintf("%s/conn.img", unit_tmpdir());
    char json[4200];
    NbdServerConfig scfg = { .max_connections = 0 };
    NbdExportConfig ecfg = {
        .id = "e0",
        .name = "disk",
        .writable = true,
        .allocation_depth = true,
    };
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    CU_ASSERT_FATAL(fd >= 0 && ftruncate(fd, DISK_SIZE) == 0);
    close(fd);
    memset(f, 0, sizeof(*f));
    f->d = daemon_new(DAEMON_JOB_NICE, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->d);
    snprintf(json, sizeof(json), "{\"driver\":\"file\",\"node-name\":"
             "\"f0\",\"filename\":\"%s\"}", path);
    f->bs = unit_open_json(f->d->graph, json, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->bs);
    f->srv = nbd_server_new(&f->d->nbd, &scfg, NULL);
    f->d->nbd.server = f->srv;
    ecfg.node = f->bs;
    f->exp = nbd_export_add(f->srv, &ecfg, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->exp);
    f->fd = -1;
}

static void fixture_teardown(Fixture *f)
{
    if (f->fd >= 0) {
        close(f->fd);
    }
    nbd_server_free(f->srv);
    f->d->nbd.server = NULL;
    blk_unref(f->bs);
    daemon_free(f->d);
}

/* Hand one end of a fresh socketpair to the server; keep the other. */
static NbdConn *fixture_connect(Fixture *f, const NbdConnOptions *opts,
                                Error **errp)
{
    int sv[2];
    NbdConn *c;

    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                               sv) == 0);
    CU_ASSERT_FATAL(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    c = nbd_conn_start_transmission(f->srv, sv[0], f->exp, opts, errp);
    if (!c) {
        close(sv[0]);
        close(sv[1]);
        return NULL;
    }
    f->fd = sv[1];
    return c;
}

static void stop_cb(int fd, int events, void *opaque)
{
    (void)fd;
    (void)events;
    loop_stop(opaque);
}

/* Run the daemon's loop until the client's end has something to read
 * (or the server hung up). */
static void wait_reply(Fixture *f)
{
    LoopFd *w = loop_fd_add(f->d->loop, f->fd, LOOP_READ, stop_cb,
                            f->d->loop);

    loop_run(f->d->loop);
    loop_fd_del(w);
}

static void send_request(Fixture *f, uint16_t type, uint16_t flags,
                         uint64_t cookie, uint64_t offset, uint32_t length,
                         const void *payload)
{
    uint8_t hdr[NBD_REQ_SIZE];
    NbdRequest req = {
        .flags = flags,
        .type = type,
        .cookie = cookie,
        .offset = offset,
        .length = length,
    };

    CU_ASSERT_EQUAL(nbd_encode_request(hdr, false, &req), NBD_REQ_SIZE);
    CU_ASSERT_EQUAL(write(f->fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
    if (payload) {
        CU_ASSERT_EQUAL(write(f->fd, payload, length), (ssize_t)length);
    }
}

static void recv_all(Fixture *f, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = recv(f->fd, (uint8_t *)buf + got, len - got, 0);

        if (n <= 0) {
            CU_FAIL_FATAL("short reply");
        }
        got += n;
    }
}

/* A simple reply: returns its error; checks the cookie. */
static uint32_t recv_simple(Fixture *f, uint64_t cookie)
{
    uint8_t r[NBD_SIMPLE_REPLY_SIZE];

    wait_reply(f);
    recv_all(f, r, sizeof(r));
    CU_ASSERT_EQUAL(get_be32(r), NBD_SIMPLE_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be64(r + 8), cookie);
    return get_be32(r + 4);
}

/* One structured chunk: header fields out, payload into buf (cap). */
static void recv_chunk(Fixture *f, uint64_t cookie, uint16_t *flags,
                       uint16_t *type, uint8_t *buf, uint32_t cap,
                       uint32_t *len)
{
    uint8_t h[NBD_CHUNK_HDR_SIZE];

    recv_all(f, h, sizeof(h));
    CU_ASSERT_EQUAL_FATAL(get_be32(h), NBD_STRUCTURED_REPLY_MAGIC);
    *flags = get_be16(h + 4);
    *type = get_be16(h + 6);
    CU_ASSERT_EQUAL(get_be64(h + 8), cookie);
    *len = get_be32(h + 16);
    CU_ASSERT_FATAL(*len <= cap);
    recv_all(f, buf, *len);
}

static void test_transmission_without_handshake(void)
{
    static const char *const ctx[] = {
        "qemu:allocation-depth", "base:allocation",
    };
    NbdConnOptions opts = {
        .structured = true,
        .contexts = ctx,
        .ncontexts = 2,
    };
    static uint8_t data[4096], buf[8192];
    uint16_t flags, type;
    uint32_t len;
    Fixture f;
    bool seen[2] = { false, false };

    fixture_setup(&f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fixture_connect(&f, &opts, NULL));
    CU_ASSERT_EQUAL(nbd_server_client_count(f.srv), 1);

    /* WRITE then FLUSH: simple replies (no extended headers). */
    memset(data, 0xab, sizeof(data));
    send_request(&f, NBD_CMD_WRITE, 0, 1, 8192, sizeof(data), data);
    CU_ASSERT_EQUAL(recv_simple(&f, 1), 0);
    send_request(&f, NBD_CMD_FLUSH, 0, 2, 0, 0, NULL);
    CU_ASSERT_EQUAL(recv_simple(&f, 2), 0);

    /* READ it back: one OFFSET_DATA chunk (structured replies on). */
    send_request(&f, NBD_CMD_READ, 0, 3, 8192, sizeof(data), NULL);
    wait_reply(&f);
    recv_chunk(&f, 3, &flags, &type, buf, sizeof(buf), &len);
    CU_ASSERT_EQUAL(type, NBD_REPLY_TYPE_OFFSET_DATA);
    CU_ASSERT(flags & NBD_REPLY_FLAG_DONE);
    CU_ASSERT_EQUAL(len, 8 + sizeof(data));
    CU_ASSERT_EQUAL(get_be64(buf), 8192);
    CU_ASSERT(memcmp(buf + 8, data, sizeof(data)) == 0);

    /* BLOCK_STATUS: one chunk per given context, ids from the export's
     * table, each covering the whole disk. */
    send_request(&f, NBD_CMD_BLOCK_STATUS, 0, 4, 0, DISK_SIZE, NULL);
    wait_reply(&f);
    for (int i = 0; i < 2; i++) {
        uint64_t total = 0;
        uint32_t id;

        recv_chunk(&f, 4, &flags, &type, buf, sizeof(buf), &len);
        CU_ASSERT_EQUAL(type, NBD_REPLY_TYPE_BLOCK_STATUS);
        CU_ASSERT_EQUAL(!!(flags & NBD_REPLY_FLAG_DONE), i == 1);
        CU_ASSERT_FATAL(len >= 12 && (len - 4) % 8 == 0);
        id = get_be32(buf);
        CU_ASSERT_FATAL(id < 2);
        seen[id] = true;
        for (uint32_t off = 4; off < len; off += 8) {
            total += get_be32(buf + off);
        }
        CU_ASSERT_EQUAL(total, DISK_SIZE);
    }
    CU_ASSERT(seen[0] && seen[1]);

    /* A bad request keeps the connection: structured error chunk. */
    send_request(&f, NBD_CMD_READ, 0, 5, DISK_SIZE, 4096, NULL);
    wait_reply(&f);
    recv_chunk(&f, 5, &flags, &type, buf, sizeof(buf), &len);
    CU_ASSERT_EQUAL(type, NBD_REPLY_TYPE_ERROR);
    CU_ASSERT_EQUAL(get_be32(buf), NBD_EINVAL);

    /* DISC: the server hangs up. */
    send_request(&f, NBD_CMD_DISC, 0, 6, 0, 0, NULL);
    wait_reply(&f);
    CU_ASSERT_EQUAL(recv(f.fd, buf, 1, 0), 0);
    CU_ASSERT_EQUAL(nbd_server_client_count(f.srv), 0);
    fixture_teardown(&f);
}

static void test_transmission_simple_read_only(void)
{
    NbdConnOptions opts = { .read_only = true };
    static uint8_t buf[4096];
    Fixture f;

    fixture_setup(&f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fixture_connect(&f, &opts, NULL));
    /* Simple replies: READ data follows the 16-byte reply. */
    send_request(&f, NBD_CMD_READ, 0, 9, 0, sizeof(buf), NULL);
    CU_ASSERT_EQUAL(recv_simple(&f, 9), 0);
    recv_all(&f, buf, sizeof(buf));
    CU_ASSERT(blk_buffer_is_zero(buf, sizeof(buf)));
    /* Read-only: WRITE is refused (payload skipped), no contexts: no
     * BLOCK_STATUS. */
    send_request(&f, NBD_CMD_WRITE, 0, 10, 0, sizeof(buf), buf);
    CU_ASSERT_EQUAL(recv_simple(&f, 10), NBD_EPERM);
    send_request(&f, NBD_CMD_BLOCK_STATUS, 0, 11, 0, 4096, NULL);
    CU_ASSERT_EQUAL(recv_simple(&f, 11), NBD_EINVAL);
    fixture_teardown(&f);
}

static void test_transmission_bad_options(void)
{
    static const char *const bad[] = { "qemu:dirty-bitmap:nope" };
    static const char *const good[] = { "base:allocation" };
    NbdConnOptions unknown = {
        .structured = true, .contexts = bad, .ncontexts = 1,
    };
    NbdConnOptions simple = { .contexts = good, .ncontexts = 1 };
    Error *err = NULL;
    Fixture f;

    fixture_setup(&f);
    CU_ASSERT_PTR_NULL(fixture_connect(&f, &unknown, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT(strstr(error_get_pretty(err), "no meta context") != NULL);
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(fixture_connect(&f, &simple, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    error_free(err);
    CU_ASSERT_EQUAL(nbd_server_client_count(f.srv), 0);
    fixture_teardown(&f);
}

static CU_TestInfo nbd_conn_tests[] = {
    { "transmission_without_handshake",
      test_transmission_without_handshake },
    { "transmission_simple_read_only", test_transmission_simple_read_only },
    { "transmission_bad_options", test_transmission_bad_options },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-conn", .pTests = nbd_conn_tests },
    CU_SUITE_INFO_NULL,
};
