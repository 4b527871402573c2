/* test-xport-tls.c - the TLS transport (nbd/xport-tls.c) over a
 * non-blocking socketpair, both ends in one thread: the handshake
 * driven step by step as the event loop would, a write far bigger than
 * the socket buffer (every -EAGAIN resend must continue the record
 * gnutls buffered), decrypted bytes pending in the record layer,
 * handshakes that must fail (wrong key, garbage, junk records in one
 * write), and, through a relay that cuts the client's bytes as it
 * likes, records split across reads, several in one read, half a
 * record then EOF, and an oversized record header. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "cunit-main.h"
#include "nbd/internal.h"

typedef struct End {
    Xport xp;
    gnutls_psk_server_credentials_t scred;
    gnutls_psk_client_credentials_t ccred;
} End;

static const unsigned char key_a[16] = "0123456789abcdef";
static const unsigned char key_b[16] = "fedcba9876543210";

static int psk_server_cb(gnutls_session_t s, const char *user,
                         gnutls_datum_t *key)
{
    const unsigned char *k = gnutls_session_get_ptr(s);

    (void)user;
    key->data = gnutls_malloc(16);
    memcpy(key->data, k, 16);
    key->size = 16;
    return 0;
}

static void end_init(End *e, int fd, bool server, const unsigned char *k)
{
    gnutls_session_t s;
    gnutls_datum_t key = { (unsigned char *)k, 16 };

    memset(e, 0, sizeof(*e));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    CU_ASSERT_EQUAL_FATAL(gnutls_init(&s, server ? GNUTLS_SERVER
                                                 : GNUTLS_CLIENT), 0);
    CU_ASSERT_EQUAL(gnutls_priority_set_direct(
        s, "NORMAL:-VERS-SSL3.0:+PSK:+DHE-PSK:+ECDHE-PSK", NULL), 0);
    if (server) {
        gnutls_psk_allocate_server_credentials(&e->scred);
        gnutls_psk_set_server_credentials_function(e->scred,
                                                   psk_server_cb);
        gnutls_session_set_ptr(s, (void *)k);
        gnutls_credentials_set(s, GNUTLS_CRD_PSK, e->scred);
    } else {
        gnutls_psk_allocate_client_credentials(&e->ccred);
        gnutls_psk_set_client_credentials(e->ccred, "alice", &key,
                                          GNUTLS_PSK_KEY_RAW);
        gnutls_credentials_set(s, GNUTLS_CRD_PSK, e->ccred);
    }
    xport_init_plain(&e->xp, fd);
    xport_tls_start(&e->xp, s);
}

static void end_free(End *e)
{
    xport_close(&e->xp);
    if (e->scred) {
        gnutls_psk_free_server_credentials(e->scred);
    }
    if (e->ccred) {
        gnutls_psk_free_client_credentials(e->ccred);
    }
}

/* Step both handshakes until each is done or failed: 1 both done, else
 * the first failure (-errno). */
static int handshake_both(End *a, End *b)
{
    int ra = 0, rb = 0;

    for (int i = 0; i < 1000 && (ra == 0 || rb == 0); i++) {
        bool ww;
        Error *err = NULL;

        if (ra == 0) {
            ra = xport_tls_handshake(&a->xp, &ww, &err);
        }
        if (rb == 0) {
            rb = xport_tls_handshake(&b->xp, &ww, &err);
        }
        error_free(err);
        if (ra < 0 || rb < 0) {
            return ra < 0 ? ra : rb;
        }
    }
    return ra == 1 && rb == 1 ? 1 : -ETIMEDOUT;
}

/* xport_recv as the event loop drives it: on -EAGAIN wait (up to 5 s)
 * for the socket to be readable, then ask again. */
static ssize_t recv_ready(End *e, void *buf, size_t len)
{
    for (int i = 0; i < 100; i++) {
        struct pollfd pfd = { .fd = e->xp.fd, .events = POLLIN };
        ssize_t n = xport_recv(&e->xp, buf, len);

        if (n != -EAGAIN) {
            return n;
        }
        if (poll(&pfd, 1, 5000) != 1) {
            return -ETIMEDOUT;
        }
    }
    return -ETIMEDOUT;
}

static void pair(End *srv, End *cli, const unsigned char *ckey)
{
    int sv[2];

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    end_init(srv, sv[0], true, key_a);
    end_init(cli, sv[1], false, ckey);
}

static void test_handshake_and_big_write(void)
{
    End srv, cli;
    size_t big = 8 * 1024 * 1024 + 3;
    uint8_t hdr[16], tail[10];
    uint8_t *data = malloc(big);
    size_t total = sizeof(hdr) + big + sizeof(tail);
    uint8_t *got = malloc(total);
    size_t sent = 0, rcvd = 0;
    int eagain = 0;                 /* blocked or short sends */

    for (size_t i = 0; i < big; i++) {
        data[i] = (uint8_t)(i * 7 + (i >> 13));
    }
    memset(hdr, 0x11, sizeof(hdr));
    memset(tail, 0x22, sizeof(tail));
    pair(&srv, &cli, key_a);
    CU_ASSERT_EQUAL_FATAL(handshake_both(&srv, &cli), 1);
    CU_ASSERT_PTR_NOT_NULL(xport_tls_session(&srv.xp));

    /* The server writes header + payload + tail as one iovec array; on
     * a short send it resubmits what is left, as conn.c does. */
    while (rcvd < total) {
        if (sent < total) {
            struct iovec iov[3] = {
                { hdr, sizeof(hdr) }, { data, big }, { tail, sizeof(tail) },
            };
            struct iovec *v = iov;
            int cnt = 3;
            size_t skip = sent;
            ssize_t n;

            while (skip >= v->iov_len) {
                skip -= v->iov_len;
                v++;
                cnt--;
            }
            v->iov_base = (uint8_t *)v->iov_base + skip;
            v->iov_len -= skip;
            n = xport_sendv(&srv.xp, v, cnt);
            if (n == -EAGAIN || (n > 0 && sent + n < total)) {
                eagain++;
            }
            if (n != -EAGAIN) {
                CU_ASSERT_FATAL(n > 0);
                sent += n;
            }
        }
        while (rcvd < total) {
            ssize_t n = xport_recv(&cli.xp, got + rcvd,
                                   MIN(total - rcvd, (size_t)100000));

            if (n == -EAGAIN) {
                break;
            }
            CU_ASSERT_FATAL(n > 0);
            rcvd += n;
        }
    }
    CU_ASSERT(eagain > 0);          /* the socket buffer did fill up */
    CU_ASSERT(memcmp(got, hdr, sizeof(hdr)) == 0);
    CU_ASSERT(memcmp(got + sizeof(hdr), data, big) == 0);
    CU_ASSERT(memcmp(got + sizeof(hdr) + big, tail, sizeof(tail)) == 0);
    end_free(&srv);
    end_free(&cli);
    free(data);
    free(got);
}

static void test_pending_and_eof(void)
{
    End srv, cli;
    struct iovec iov = { "hello, record", 13 };
    char c;
    char rest[32];

    pair(&srv, &cli, key_a);
    CU_ASSERT_EQUAL_FATAL(handshake_both(&srv, &cli), 1);
    CU_ASSERT_EQUAL(xport_sendv(&cli.xp, &iov, 1), 13);
    CU_ASSERT_EQUAL(xport_recv(&srv.xp, &c, 1), 1);
    CU_ASSERT_EQUAL(c, 'h');
    /* The rest of the record is inside gnutls, not in the socket. */
    CU_ASSERT_EQUAL(xport_pending(&srv.xp), 12);
    CU_ASSERT_EQUAL(xport_recv(&srv.xp, rest, sizeof(rest)), 12);
    CU_ASSERT(memcmp(rest, "ello, record", 12) == 0);
    CU_ASSERT_EQUAL(xport_pending(&srv.xp), 0);
    CU_ASSERT_EQUAL(xport_recv(&srv.xp, rest, sizeof(rest)), -EAGAIN);
    /* A clean close (close_notify) reads as EOF. */
    end_free(&cli);
    CU_ASSERT_EQUAL(xport_recv(&srv.xp, rest, sizeof(rest)), 0);
    end_free(&srv);
}

static void test_wrong_key(void)
{
    End srv, cli;

    pair(&srv, &cli, key_b);
    CU_ASSERT(handshake_both(&srv, &cli) < 0);
    end_free(&srv);
    end_free(&cli);
}

static void test_garbage(void)
{
    End srv;
    int sv[2];
    bool ww = true;
    Error *err = NULL;
    static const char junk[] = "GET / HTTP/1.0\r\n\r\n this is not TLS";

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    end_init(&srv, sv[0], true, key_a);
    /* Nothing yet: the server waits to read, without blocking. */
    CU_ASSERT_EQUAL(xport_tls_handshake(&srv.xp, &ww, &err), 0);
    CU_ASSERT_FALSE(ww);
    CU_ASSERT_PTR_NULL(err);
    CU_ASSERT_EQUAL(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
    CU_ASSERT(xport_tls_handshake(&srv.xp, &ww, &err) < 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT(strstr(error_get_pretty(err), "TLS handshake failed") !=
              NULL);
    error_free(err);
    end_free(&srv);
    close(sv[1]);
}

/* Drive e's handshake as the event loop does: on "in progress" wait
 * (up to 2 s) for the direction it names.  1 done, -errno failed,
 * -ETIMEDOUT when it waits for bytes that never come (a stall). */
static int handshake_loop(End *e)
{
    for (int i = 0; i < 100; i++) {
        bool ww = false;
        Error *err = NULL;
        int r = xport_tls_handshake(&e->xp, &ww, &err);
        struct pollfd pfd = { .fd = e->xp.fd,
                              .events = ww ? POLLOUT : POLLIN };

        error_free(err);
        if (r != 0) {
            return r;
        }
        if (poll(&pfd, 1, 2000) != 1) {
            return -ETIMEDOUT;
        }
    }
    return -ETIMEDOUT;
}

/* Record headers that claim 5 bytes of handshake, junk behind each,
 * all in one write.  gnutls drops some of them and says "would block"
 * with the rest still unread: driven as the loop drives it, the
 * handshake must fail, not wait for the handshake limit. */
static void test_garbage_records(void)
{
    End srv;
    int sv[2];
    static const char rec[] = "\x16\x03\x01\x00\x05hello, this is not TLS";
    char junk[8 * (sizeof(rec) - 1)];

    for (int i = 0; i < 8; i++) {
        memcpy(junk + i * (sizeof(rec) - 1), rec, sizeof(rec) - 1);
    }
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    end_init(&srv, sv[0], true, key_a);
    CU_ASSERT_EQUAL(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
    CU_ASSERT_EQUAL(handshake_loop(&srv), -EPROTO);
    end_free(&srv);
    close(sv[1]);
}

/* ---- a relay between the two ends: the bytes cut as a test likes ---- */

typedef struct Relay {
    End srv, cli;
    int to_srv;                  /* write here: the server reads it */
    int to_cli;                  /* write here: the client reads it */
} Relay;

static void relay_init(Relay *r)
{
    int sv[2], cv[2];

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, cv), 0);
    end_init(&r->srv, sv[0], true, key_a);
    end_init(&r->cli, cv[0], false, key_a);
    r->to_srv = sv[1];
    r->to_cli = cv[1];
}

static void relay_free(Relay *r)
{
    end_free(&r->srv);
    end_free(&r->cli);
    if (r->to_srv >= 0) {
        close(r->to_srv);
    }
    close(r->to_cli);
}

/* Take what is waiting on fd (up to cap bytes, non-blocking). */
static size_t drain(int fd, uint8_t *buf, size_t cap)
{
    ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);

    return n > 0 ? (size_t)n : 0;
}

/* Whether fd has bytes to read now. */
static bool readable(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    return poll(&pfd, 1, 0) == 1;
}

/* The handshake with every byte from the client reaching the server in
 * a write of its own (each record split across many reads); the
 * server's flights go over whole. */
static void relay_handshake_bytewise(Relay *r)
{
    int rs = 0, rc = 0;
    uint8_t buf[65536];

    for (int i = 0; i < 1000 && (rs != 1 || rc != 1); i++) {
        bool ww;
        Error *err = NULL;
        size_t n;

        if (rc == 0) {
            rc = xport_tls_handshake(&r->cli.xp, &ww, &err);
        }
        n = drain(r->to_cli, buf, sizeof(buf));
        for (size_t k = 0; k < n; k++) {
            CU_ASSERT_EQUAL_FATAL(write(r->to_srv, buf + k, 1), 1);
            if (rs == 0) {
                rs = xport_tls_handshake(&r->srv.xp, &ww, &err);
            }
        }
        if (rs == 0) {
            rs = xport_tls_handshake(&r->srv.xp, &ww, &err);
        }
        n = drain(r->to_srv, buf, sizeof(buf));
        if (n) {
            CU_ASSERT_EQUAL_FATAL(write(r->to_cli, buf, n), (ssize_t)n);
        }
        error_free(err);
        CU_ASSERT_FATAL(rs >= 0 && rc >= 0);
    }
    CU_ASSERT_EQUAL_FATAL(rs, 1);
    CU_ASSERT_EQUAL_FATAL(rc, 1);
}

/* The client's records as the server would read them: what the client
 * sent since the last call, taken off the wire. */
static size_t client_send(Relay *r, const char *text, uint8_t *wire,
                          size_t cap)
{
    struct iovec iov = { (void *)text, strlen(text) };

    CU_ASSERT_EQUAL(xport_sendv(&r->cli.xp, &iov, 1),
                    (ssize_t)strlen(text));
    return drain(r->to_cli, wire, cap);
}

static void test_records_split_across_reads(void)
{
    Relay r;
    uint8_t wire[4096];
    char got[64];
    size_t n;

    relay_init(&r);
    relay_handshake_bytewise(&r);
    /* One record, a byte per write: nothing until the last byte. */
    n = client_send(&r, "split record", wire, sizeof(wire));
    CU_ASSERT_FATAL(n > 12);
    for (size_t k = 0; k + 1 < n; k++) {
        CU_ASSERT_EQUAL_FATAL(write(r.to_srv, wire + k, 1), 1);
        CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), -EAGAIN);
    }
    CU_ASSERT_EQUAL_FATAL(write(r.to_srv, wire + n - 1, 1), 1);
    CU_ASSERT_EQUAL(recv_ready(&r.srv, got, sizeof(got)), 12);
    CU_ASSERT(memcmp(got, "split record", 12) == 0);
    CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), -EAGAIN);
    relay_free(&r);
}

static void test_records_in_one_read(void)
{
    Relay r;
    uint8_t wire[16384];
    char got[64];
    size_t n = 0;

    relay_init(&r);
    relay_handshake_bytewise(&r);
    /* Three records in one write: each read returns one record, in
     * order, none lost behind the first. */
    n += client_send(&r, "one", wire + n, sizeof(wire) - n);
    n += client_send(&r, "two", wire + n, sizeof(wire) - n);
    n += client_send(&r, "three", wire + n, sizeof(wire) - n);
    CU_ASSERT_EQUAL_FATAL(write(r.to_srv, wire, n), (ssize_t)n);
    CU_ASSERT_EQUAL(recv_ready(&r.srv, got, sizeof(got)), 3);
    CU_ASSERT(memcmp(got, "one", 3) == 0);
    CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), 3);
    CU_ASSERT(memcmp(got, "two", 3) == 0);
    CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), 5);
    CU_ASSERT(memcmp(got, "three", 5) == 0);
    CU_ASSERT_EQUAL(xport_pending(&r.srv.xp), 0);
    CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), -EAGAIN);
    /* A 12 KB record behind a small one, in one write. */
    {
        static char big[12001];

        memset(big, 'b', sizeof(big) - 1);
        n = client_send(&r, "x", wire, sizeof(wire));
        n += client_send(&r, big, wire + n, sizeof(wire) - n);
        CU_ASSERT_EQUAL_FATAL(write(r.to_srv, wire, n), (ssize_t)n);
        CU_ASSERT_EQUAL(recv_ready(&r.srv, got, 1), 1);
        CU_ASSERT_EQUAL(got[0], 'x');
        n = 0;
        while (n < sizeof(big) - 1) {
            char chunk[4096];
            ssize_t k = recv_ready(&r.srv, chunk, sizeof(chunk));

            CU_ASSERT_FATAL(k > 0);
            CU_ASSERT(chunk[0] == 'b' && chunk[k - 1] == 'b');
            n += k;
        }
        CU_ASSERT_EQUAL(n, sizeof(big) - 1);
    }
    relay_free(&r);
}

/* Half a record, then the peer goes: an error, neither data nor a
 * wait for bytes that cannot come. */
static void test_partial_record_then_eof(void)
{
    Relay r;
    uint8_t wire[4096];
    char got[64];
    size_t n;
    ssize_t k;

    relay_init(&r);
    relay_handshake_bytewise(&r);
    n = client_send(&r, "never whole", wire, sizeof(wire));
    CU_ASSERT_EQUAL_FATAL(write(r.to_srv, wire, n / 2), (ssize_t)(n / 2));
    /* "Would block", with the half taken off the socket: gnutls holds
     * it. */
    CU_ASSERT_EQUAL(xport_recv(&r.srv.xp, got, sizeof(got)), -EAGAIN);
    CU_ASSERT_FALSE(readable(r.srv.xp.fd));
    close(r.to_srv);
    r.to_srv = -1;
    k = recv_ready(&r.srv, got, sizeof(got));
    CU_ASSERT(k < 0 && k != -ETIMEDOUT);
    relay_free(&r);
}

/* A record header that claims more than TLS allows (64 KiB - 1). */
static void test_oversized_record(void)
{
    Relay r;
    static const uint8_t hdr[] = { 0x17, 0x03, 0x03, 0xff, 0xff };
    static uint8_t body[20000];
    char got[64];

    relay_init(&r);
    relay_handshake_bytewise(&r);
    CU_ASSERT_EQUAL_FATAL(write(r.to_srv, hdr, sizeof(hdr)),
                          (ssize_t)sizeof(hdr));
    CU_ASSERT_EQUAL_FATAL(write(r.to_srv, body, sizeof(body)),
                          (ssize_t)sizeof(body));
    CU_ASSERT_EQUAL(recv_ready(&r.srv, got, sizeof(got)), -EPROTO);
    relay_free(&r);
}

static CU_TestInfo xport_tls_tests[] = {
    { "handshake_and_big_write", test_handshake_and_big_write },
    { "pending_and_eof", test_pending_and_eof },
    { "wrong_key", test_wrong_key },
    { "garbage", test_garbage },
    { "garbage_records", test_garbage_records },
    { "records_split_across_reads", test_records_split_across_reads },
    { "records_in_one_read", test_records_in_one_read },
    { "partial_record_then_eof", test_partial_record_then_eof },
    { "oversized_record", test_oversized_record },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "xport-tls", .pTests = xport_tls_tests },
    CU_SUITE_INFO_NULL,
};
