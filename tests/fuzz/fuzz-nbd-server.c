/* fuzz-nbd-server.c - libFuzzer target for the NBD server: handshake
 * and transmission as one byte stream from a hostile client.
 *
 * A real NbdConn (nbd/conn.c, handshake.c, transmission.c) is created
 * on one end of a socketpair as if a listener had accepted it; the
 * input (after its first byte) is written into the other end, whose
 * sending side is then shut down, and the daemon's loop runs until the
 * server has hung up and freed the connection.  Everything the server
 * answers is read and dropped.  The first byte picks the set-up:
 *
 *   bit 0  TLS required (a tls-creds-anon server object): options
 *          before STARTTLS are refused, STARTTLS starts a real gnutls
 *          handshake that reads the rest of the input as TLS records
 *
 * Exports: "disk" (raw over a 1 MiB memfd: writable, real data, with
 * qemu:allocation-depth) and "zero" (null-co, read-zeroes, read-only).
 * Every option, structured and extended replies, meta contexts
 * (base:allocation, qemu:allocation-depth) and every command are
 * reachable; seeds captured from nbdinfo, nbdcopy, qemu-img, qemu-io
 * and qemu-nbd (tests/fuzz/capture.py) answer the server's greeting
 * correctly.  Must never crash, hang, leak or read past a buffer.
 *
 *   build-asan/tests/fuzz/fuzz-nbd-server -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz-nbd-server
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "daemon/daemon.h"
#include "nbd/internal.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DISK_SIZE (1024 * 1024)
/* Inputs fit the socket buffer: writing them never blocks. */
#define FUZZ_MAX (64 * 1024)

static Daemon *d;
static NbdServer *srv;
static TlsCreds *tls;           /* the server's, kept aside in plain mode */

static BlockNode *open_node(const char *json)
{
    json_object *obj = json_tokener_parse(json);
    BlockdevOptions *o = NULL;
    BlockNode *bs = NULL;

    if (obj && qapi_parse_BlockdevOptions(obj, NULL, 0, &o, NULL)) {
        bs = blk_open(d->graph, o, NULL);
        qapi_free_BlockdevOptions(o);
    }
    json_object_put(obj);
    if (!bs) {
        abort();
    }
    return bs;
}

static void add_export(const char *id, BlockNode *bs, bool writable)
{
    NbdExportConfig cfg = {
        .id = id,
        .name = id,
        .description = "fuzz",
        .node = bs,
        .writable = writable,
        .allocation_depth = true,
    };

    if (!nbd_export_add(srv, &cfg, NULL)) {
        abort();
    }
    blk_unref(bs);               /* the export holds it */
}

static void setup(void)
{
    json_object *obj = json_tokener_parse(
        "{\"qom-type\": \"tls-creds-anon\", \"id\": \"tls0\","
        " \"endpoint\": \"server\"}");
    ObjectOptions *oo = NULL;
    NbdServerConfig scfg = { .tls_creds = "tls0" };
    char json[256];
    int fd;

    log_set_level(LOG_LEVEL_OFF);
    d = daemon_new(DAEMON_JOB_NICE, NULL);
    if (!d || !obj || !qapi_parse_ObjectOptions(obj, NULL, 0, &oo, NULL) ||
        !object_add(d->objects, oo, NULL)) {
        abort();
    }
    qapi_free_ObjectOptions(oo);
    json_object_put(obj);
    srv = nbd_server_new(&d->nbd, &scfg, NULL);
    if (!srv) {
        abort();
    }
    d->nbd.server = srv;
    tls = srv->tls;

    fd = memfd_create("fuzz-nbd-server", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0) {
        abort();
    }
    /* The memfd stays open for the life of the process. */
    snprintf(json, sizeof(json),
             "{\"driver\": \"raw\", \"node-name\": \"disk\","
             " \"file\": {\"driver\": \"file\","
             " \"filename\": \"/proc/self/fd/%d\"}}", fd);
    add_export("disk", open_node(json), true);
    add_export("zero", open_node("{\"driver\": \"null-co\","
                                 " \"node-name\": \"zero\","
                                 " \"size\": 1048576,"
                                 " \"read-zeroes\": true}"), false);
}

typedef struct Run {
    int fd;                      /* the client's end */
    LoopFd *watch;
    LoopTimer *timer;
    bool eof;
} Run;

/* Drop what the server says; note when it has hung up. */
static void client_cb(int fd, int events, void *opaque)
{
    static uint8_t buf[65536];
    Run *r = opaque;
    ssize_t n;

    (void)events;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        r->eof = true;
        loop_fd_set_events(r->watch, 0);
    }
}

/* Done once the server hung up and freed the connection (its in-flight
 * requests all answered). */
static void check_cb(void *opaque)
{
    Run *r = opaque;

    if (r->eof && srv->conns.len == 0) {
        loop_stop(d->loop);
        return;
    }
    loop_timer_arm(r->timer, 200);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Run r = { .fd = -1 };
    int sv[2];

    if (size < 1 || size > FUZZ_MAX) {
        return 0;
    }
    if (!d) {
        setup();
    }
    /* The server was made with TLS; plain mode hides the credentials
     * from the connection (tls_required and STARTTLS look at
     * srv->tls), restored before the next input. */
    srv->tls = (data[0] & 1) ? tls : NULL;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
                   sv) < 0) {
        abort();
    }
    if (size > 1) {
        int sz = FUZZ_MAX * 2;

        setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        if (write(sv[1], data + 1, size - 1) != (ssize_t)(size - 1)) {
            abort();
        }
    }
    shutdown(sv[1], SHUT_WR);
    r.fd = sv[1];

    srv->nclients++;
    NbdConnVec_append(&srv->conns, nbd_conn_new(srv, sv[0]));

    r.watch = loop_fd_add(d->loop, r.fd, LOOP_READ, client_cb, &r);
    r.timer = loop_timer_new(d->loop, check_cb, &r);
    loop_timer_arm(r.timer, 200);
    loop_run(d->loop);
    loop_timer_free(r.timer);
    loop_fd_del(r.watch);
    close(r.fd);
    srv->tls = tls;
    return 0;
}
