/* test-nbd-client-tls.c - the NBD client through TLS (nbd/client-tls.c)
 * against a real server: Debian's qemu-nbd with --tls-creds, x509 and
 * PSK, credentials made with certtool and psktool.  The client's
 * credentials are tls-creds-* objects of the crypto/ layer, as the nbd
 * driver will hold them.  Good paths (handshake, a read in
 * transmission, list mode) and refusals (wrong host name, another CA,
 * wrong PSK key).  Without qemu-nbd or gnutls-bin every test says
 * "SKIP" and why. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "cunit-main.h"
#include "crypto/tls.h"
#include "nbd/client-tls.h"
#include "nbd/proto.h"
#include "util/util.h"

#define DISK_SIZE (1024 * 1024)
#define TIMEOUT_MS 20000

static char dir[4096];
static const char *skip_reason;

static bool have(const char *prog)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

static bool sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool sh(const char *fmt, ...)
{
    char *cmd;
    va_list ap;
    bool ok;

    va_start(ap, fmt);
    cmd = xvasprintf(fmt, ap);
    va_end(ap);
    ok = system(cmd) == 0;
    if (!ok) {
        fprintf(stderr, "failed: %s\n", cmd);
    }
    free(cmd);
    return ok;
}

/* Directories under dir: srv (qemu-nbd's), cli (good), rogue (trusts
 * another CA), psksrv (alice), psk (alice), pskbad (alice, other key). */
static const char pki_script[] =
    "set -e; cd '%s'; mkdir -p srv cli rogue psksrv psk pskbad;"
    "ct() { certtool \"$@\" >/dev/null 2>&1; };"
    "printf 'cn = \"test CA\"\\nca\\ncert_signing_key\\n' > ca.t;"
    "printf 'cn = \"other CA\"\\nca\\ncert_signing_key\\n' > ca2.t;"
    "printf 'cn = \"localhost\"\\ndns_name = \"localhost\"\\n"
    "tls_www_server\\nsigning_key\\nencryption_key\\n' > s.t;"
    "printf 'cn = \"c\"\\ntls_www_client\\nsigning_key\\n"
    "encryption_key\\n' > c.t;"
    "for k in ca ca2 s c; do ct --generate-privkey --key-type=ecdsa "
    "--outfile $k-key.pem; done;"
    "ct --generate-self-signed --load-privkey ca-key.pem --template ca.t "
    "--outfile ca-cert.pem;"
    "ct --generate-self-signed --load-privkey ca2-key.pem --template ca2.t "
    "--outfile ca2-cert.pem;"
    "for k in s c; do ct --generate-certificate --load-privkey $k-key.pem "
    "--load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem "
    "--template $k.t --outfile $k-cert.pem; done;"
    "cp ca-cert.pem srv/; cp s-cert.pem srv/server-cert.pem;"
    "cp s-key.pem srv/server-key.pem;"
    "cp ca-cert.pem cli/; cp c-cert.pem cli/client-cert.pem;"
    "cp c-key.pem cli/client-key.pem;"
    "cp ca2-cert.pem rogue/ca-cert.pem; cp c-cert.pem rogue/client-cert.pem;"
    "cp c-key.pem rogue/client-key.pem;"
    "psktool -u alice -p psksrv/keys.psk >/dev/null 2>&1;"
    "cp psksrv/keys.psk psk/keys.psk;"
    "echo alice:00112233445566778899aabbccddeeff > pskbad/keys.psk;"
    "head -c 65536 /dev/urandom > disk.raw; truncate -s %d disk.raw";

typedef struct Server {
    pid_t pid;
    char sock[4200];
} Server;

/* qemu-nbd serving disk.raw read-only as "disk" with TLS objects. */
static bool server_start(Server *s, const char *name, const char *objects,
                         const char *creds)
{
    char *cmd;
    struct stat st;

    snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", dir, name);
    unlink(s->sock);
    cmd = xasprintf(
             "exec qemu-nbd -r -x disk -f raw -t -k '%s' %s "
             "--tls-creds %s '%s/disk.raw' 2>'%s/%s.log'",
             s->sock, objects, creds, dir, dir, name);
    s->pid = fork();
    if (s->pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    free(cmd);
    for (int i = 0; i < 3000; i++) {      /* 30 s */
        if (stat(s->sock, &st) == 0) {
            return true;
        }
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = -1;
            break;
        }
        usleep(10000);
    }
    fprintf(stderr, "qemu-nbd did not start: see %s/%s.log\n", dir, name);
    return false;
}

static void server_stop(Server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = -1;
    }
}

static Server x509_srv, psk_srv;
static ObjectSet *objects;

static void add_object(const char *json)
{
    json_object *j = json_tokener_parse(json);
    ObjectOptions *o = NULL;
    Error *err = NULL;

    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    if (!qapi_parse_ObjectOptions(j, "object", 0, &o, &err) ||
        !object_add(objects, o, &err)) {
        fprintf(stderr, "object %s: %s\n", json, error_get_pretty(err));
        CU_FAIL_FATAL("object-add failed");
    }
    qapi_free_ObjectOptions(o);
    json_object_put(j);
}

static int suite_init(void)
{
    char *objs;
    bool ok;

    snprintf(dir, sizeof(dir), "%s", unit_tmpdir());
    if (!have("qemu-nbd") || !have("certtool") || !have("psktool")) {
        skip_reason = "qemu-nbd (qemu-utils) or certtool/psktool "
                      "(gnutls-bin) is not installed";
        return 0;
    }
    if (!sh(pki_script, dir, DISK_SIZE)) {
        return 1;
    }
    objs = xasprintf("--object tls-creds-x509,id=t0,endpoint=server,"
                     "dir=%s/srv,verify-peer=on", dir);
    ok = server_start(&x509_srv, "x509", objs, "t0");
    free(objs);
    if (!ok) {
        return 1;
    }
    objs = xasprintf("--object tls-creds-psk,id=t0,endpoint=server,"
                     "dir=%s/psksrv", dir);
    ok = server_start(&psk_srv, "psk", objs, "t0");
    free(objs);
    if (!ok) {
        return 1;
    }
    objects = object_set_new();
    return 0;
}

static int suite_clean(void)
{
    server_stop(&x509_srv);
    server_stop(&psk_srv);
    object_set_free(objects);
    return 0;
}

#define SKIP_IF_NEEDED()                                   \
    do {                                                   \
        if (skip_reason) {                                 \
            printf("SKIP: %s ", skip_reason);              \
            return;                                        \
        }                                                  \
    } while (0)

/* A client tls-creds-TYPE object id over dir/sub (extra: more JSON
 * members, "" or ", ..."). */
static TlsCreds *creds(const char *id, const char *type, const char *sub,
                       const char *extra)
{
    char *json;
    Error *err = NULL;
    TlsCreds *c;

    json = xasprintf(
             "{\"qom-type\": \"tls-creds-%s\", \"id\": \"%s\", "
             "\"endpoint\": \"client\", \"dir\": \"%s/%s\"%s}",
             type, id, dir, sub, extra);
    add_object(json);
    free(json);
    c = object_get_tls_creds(objects, id, TLS_ENDPOINT_CLIENT, &err);
    CU_ASSERT_PTR_NOT_NULL(c);
    error_free(err);
    return c;
}

/* Connect to srv through TLS; true on success, else *msg is the error
 * (caller frees). */
static bool tls_connect(Server *srv, TlsCreds *c, const char *host,
                        NbdClientXport *xp, NbdExportInfo *info,
                        char **msg)
{
    NbdClientTls tls = { .creds = c, .hostname = host };
    NbdClientOpts o = {
        .export_name = "disk",
        .no_structured = true,
        .no_extended = true,
        .timeout_ms = TIMEOUT_MS,
        .starttls = nbd_client_starttls,
        .starttls_opaque = &tls,
    };
    SockAddr addr = { .type = SOCK_ADDR_UNIX, .path = srv->sock };
    Error *err = NULL;

    if (!nbd_client_connect(&addr, &o, xp, info, &err)) {
        *msg = xstrdup(error_get_pretty(err));
        error_free(err);
        return false;
    }
    return true;
}

/* One NBD_CMD_READ with a simple reply, through xp. */
static void read_and_compare(NbdClientXport *xp, uint64_t off, uint32_t len)
{
    uint8_t req[28], rep[16];
    uint8_t *buf = xmalloc(len), *want = xmalloc(len);
    struct iovec iov = { req, sizeof(req) };
    char path[4200];
    FILE *f;

    put_be32(req, NBD_REQUEST_MAGIC);
    put_be16(req + 4, 0);
    put_be16(req + 6, NBD_CMD_READ);
    put_be64(req + 8, 42);
    put_be64(req + 16, off);
    put_be32(req + 24, len);
    CU_ASSERT_EQUAL_FATAL(xp->ops->writev_full(xp, &iov, 1), 0);
    CU_ASSERT_EQUAL_FATAL(xp->ops->read_full(xp, rep, sizeof(rep)), 0);
    CU_ASSERT_EQUAL(get_be32(rep), NBD_SIMPLE_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be32(rep + 4), 0);
    CU_ASSERT_EQUAL(get_be64(rep + 8), 42);
    CU_ASSERT_EQUAL_FATAL(xp->ops->read_full(xp, buf, len), 0);
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, (long)off, SEEK_SET);
    CU_ASSERT_EQUAL(fread(want, 1, len, f), len);
    fclose(f);
    CU_ASSERT(memcmp(buf, want, len) == 0);
    free(buf);
    free(want);
}

static void test_x509_read(void)
{
    NbdClientXport xp;
    NbdExportInfo info = { 0 };
    char *msg = NULL;
    TlsCreds *c;

    SKIP_IF_NEEDED();
    c = creds("c0", "x509", "cli", "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    if (!tls_connect(&x509_srv, c, "localhost", &xp, &info, &msg)) {
        fprintf(stderr, "connect: %s\n", msg);
        CU_FAIL_FATAL("TLS connect to qemu-nbd failed");
    }
    CU_ASSERT_PTR_NOT_NULL(nbd_client_xport_tls_session(&xp));
    CU_ASSERT_EQUAL(info.size, DISK_SIZE);
    read_and_compare(&xp, 0, 65536);
    read_and_compare(&xp, 4096 * 3 + 7, 300000);
    xp.ops->close(&xp);
    nbd_export_info_clear(&info);
}

/* The non-blocking interface an event-driven engine uses: a 1 MiB
 * read with poll() between the steps, and pending bytes drained before
 * polling again. */
static void test_x509_nonblocking(void)
{
    NbdClientXport xp;
    NbdExportInfo info = { 0 };
    char *msg = NULL;
    TlsCreds *c;
    uint8_t req[28];
    size_t total = 16 + DISK_SIZE, got = 0, sent = 0;
    uint8_t *buf = xmalloc(total);
    uint8_t *want = xmalloc(DISK_SIZE);
    char path[4200];
    FILE *f;

    SKIP_IF_NEEDED();
    c = object_get_tls_creds(objects, "c0", TLS_ENDPOINT_CLIENT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_TRUE_FATAL(tls_connect(&x509_srv, c, "localhost", &xp, &info,
                                     &msg));
    fcntl(xp.fd, F_SETFL, fcntl(xp.fd, F_GETFL) | O_NONBLOCK);
    nbd_client_xport_tls_set_nonblocking(&xp, true);
    CU_ASSERT_EQUAL(nbd_client_xport_tls_recv(&xp, buf, 16), -EAGAIN);

    put_be32(req, NBD_REQUEST_MAGIC);
    put_be16(req + 4, 0);
    put_be16(req + 6, NBD_CMD_READ);
    put_be64(req + 8, 7);
    put_be64(req + 16, 0);
    put_be32(req + 24, DISK_SIZE);
    while (got < total) {
        struct pollfd pfd = { .fd = xp.fd, .events = POLLIN };
        ssize_t n;

        if (sent < sizeof(req)) {
            struct iovec iov = { req + sent, sizeof(req) - sent };

            n = nbd_client_xport_tls_sendv(&xp, &iov, 1);
            CU_ASSERT_FATAL(n >= 0 || n == -EAGAIN);
            sent += n > 0 ? (size_t)n : 0;
            if (sent < sizeof(req)) {
                pfd.events |= POLLOUT;
            }
        }
        if (nbd_client_xport_tls_pending(&xp) == 0) {
            CU_ASSERT_FATAL(poll(&pfd, 1, TIMEOUT_MS) == 1);
        }
        n = nbd_client_xport_tls_recv(&xp, buf + got, total - got);
        if (n == -EAGAIN) {
            continue;
        }
        CU_ASSERT_FATAL(n > 0);
        got += (size_t)n;
    }
    CU_ASSERT_EQUAL(get_be32(buf), NBD_SIMPLE_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be32(buf + 4), 0);
    CU_ASSERT_EQUAL(get_be64(buf + 8), 7);
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fread(want, 1, DISK_SIZE, f), DISK_SIZE);
    fclose(f);
    CU_ASSERT(memcmp(buf + 16, want, DISK_SIZE) == 0);
    nbd_client_xport_tls_set_nonblocking(&xp, false);
    xp.ops->close(&xp);
    nbd_export_info_clear(&info);
    free(buf);
    free(want);
}

static void test_x509_list(void)
{
    NbdExportList l = { 0 };
    Error *err = NULL;
    NbdClientTls tls = { .hostname = "localhost" };
    NbdClientOpts o = {
        .timeout_ms = TIMEOUT_MS,
        .starttls = nbd_client_starttls,
        .starttls_opaque = &tls,
    };
    SockAddr addr = { .type = SOCK_ADDR_UNIX };

    SKIP_IF_NEEDED();
    addr.path = x509_srv.sock;
    tls.creds = object_get_tls_creds(objects, "c0", TLS_ENDPOINT_CLIENT,
                                     NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tls.creds);
    if (!nbd_client_list(&addr, &o, &l, &err)) {
        fprintf(stderr, "list: %s\n", error_get_pretty(err));
        error_free(err);
        CU_FAIL_FATAL("list mode through TLS failed");
    }
    CU_ASSERT_EQUAL_FATAL(l.n, 1);
    CU_ASSERT_STRING_EQUAL(l.exports[0].name, "disk");
    CU_ASSERT_EQUAL(l.exports[0].size, DISK_SIZE);
    nbd_export_list_clear(&l);
}

static void test_x509_refusals(void)
{
    NbdClientXport xp;
    NbdExportInfo info = { 0 };
    char *msg = NULL;
    TlsCreds *good, *rogue;

    SKIP_IF_NEEDED();
    good = object_get_tls_creds(objects, "c0", TLS_ENDPOINT_CLIENT, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    /* The certificate does not name this host. */
    CU_ASSERT_FALSE(tls_connect(&x509_srv, good, "wrong.example", &xp,
                                &info, &msg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT_STRING_EQUAL(msg, "Certificate does not match the hostname "
                           "wrong.example");
    free(msg);
    msg = NULL;
    /* The server's certificate is from a CA this client does not
     * trust. */
    rogue = creds("c1", "x509", "rogue", ", \"sanity-check\": false");
    CU_ASSERT_PTR_NOT_NULL_FATAL(rogue);
    CU_ASSERT_FALSE(tls_connect(&x509_srv, rogue, "localhost", &xp, &info,
                                &msg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strstr(msg, "issuer is unknown") != NULL);
    /* gnutls ends its status text with a space; the message must not. */
    CU_ASSERT(msg[0] != '\0' && msg[strlen(msg) - 1] != ' ');
    free(msg);
    msg = NULL;
    /* And the good client still gets in. */
    CU_ASSERT_TRUE_FATAL(tls_connect(&x509_srv, good, "localhost", &xp,
                                     &info, &msg));
    read_and_compare(&xp, 0, 4096);
    xp.ops->close(&xp);
    nbd_export_info_clear(&info);
}

static void test_psk(void)
{
    NbdClientXport xp;
    NbdExportInfo info = { 0 };
    char *msg = NULL;
    TlsCreds *good, *bad;

    SKIP_IF_NEEDED();
    good = creds("p0", "psk", "psk", ", \"username\": \"alice\"");
    bad = creds("p1", "psk", "pskbad", ", \"username\": \"alice\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    CU_ASSERT_FALSE(tls_connect(&psk_srv, bad, NULL, &xp, &info, &msg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(msg);
    CU_ASSERT(strstr(msg, "TLS handshake failed") != NULL);
    free(msg);
    msg = NULL;
    if (!tls_connect(&psk_srv, good, NULL, &xp, &info, &msg)) {
        fprintf(stderr, "connect: %s\n", msg);
        CU_FAIL_FATAL("PSK connect to qemu-nbd failed");
    }
    read_and_compare(&xp, 65536 - 100, 200);
    xp.ops->close(&xp);
    nbd_export_info_clear(&info);
}

static CU_TestInfo client_tls_tests[] = {
    { "x509_read", test_x509_read },
    { "x509_nonblocking", test_x509_nonblocking },
    { "x509_list", test_x509_list },
    { "x509_refusals", test_x509_refusals },
    { "psk", test_psk },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-client-tls", .pInitFunc = suite_init,
      .pCleanupFunc = suite_clean, .pTests = client_tls_tests },
    CU_SUITE_INFO_NULL,
};
