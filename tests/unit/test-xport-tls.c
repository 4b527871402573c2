/* test-xport-tls.c - the TLS transport (nbd/xport-tls.c) over a
 * non-blocking socketpair, both ends in one thread: the handshake
 * driven step by step as the event loop would, a write far bigger than
 * the socket buffer (every -EAGAIN resend must continue the record
 * gnutls buffered), decrypted bytes pending in the record layer, and
 * handshakes that must fail (wrong key, garbage). */
#include <errno.h>
#include <fcntl.h>
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

static CU_TestInfo xport_tls_tests[] = {
    { "handshake_and_big_write", test_handshake_and_big_write },
    { "pending_and_eof", test_pending_and_eof },
    { "wrong_key", test_wrong_key },
    { "garbage", test_garbage },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "xport-tls", .pTests = xport_tls_tests },
    CU_SUITE_INFO_NULL,
};
