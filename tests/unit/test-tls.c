/* test-tls.c - crypto/tls.h end to end: credentials made by certtool
 * and psktool, both ends of a TLS session over a socketpair (server on
 * a thread), then tls_creds_check_peer and authz_is_allowed.  Exits 77
 * (skipped) when gnutls-bin is not installed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "crypto/object.h"
#include "crypto/tls.h"
#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/util.h"

static const char *dir;       /* unit_tmpdir() */

/* Suite set-up runs outside any test: failures are counted here, not
 * asserted. */
static unsigned setup_failures;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    va_list ap;
    char *cmd;
    int r;

    va_start(ap, fmt);
    cmd = xvasprintf(fmt, ap);
    va_end(ap);
    r = system(cmd);
    if (r != 0) {
        fprintf(stderr, "\n'%s' failed (%d)\n", cmd, r);
        setup_failures++;
    }
    free(cmd);
}

/* A CA in DIR/NAME, and certificates it signs into creds directories. */
static void make_ca(const char *name)
{
    sh("mkdir -p %s/%s && cd %s/%s && "
       "printf 'cn = \"%s\"\\nca\\ncert_signing_key\\nexpiration_days = 9\\n'"
       " > ca.info && "
       "certtool --generate-privkey --outfile ca-key.pem >/dev/null 2>&1 && "
       "certtool --generate-self-signed --load-privkey ca-key.pem "
       "--template ca.info --outfile ca-cert.pem >/dev/null 2>&1",
       dir, name, dir, name, name);
}

static void make_creds(const char *ca, const char *sub, const char *who,
                       const char *cn)
{
    const char *purpose = strcmp(who, "server") == 0
        ? "tls_www_server\\ndns_name = localhost\\nip_address = 127.0.0.1"
        : "tls_www_client";

    sh("mkdir -p %s/%s && cd %s/%s && cp ../%s/ca-cert.pem . && "
       "printf 'organization = \"Example\"\\ncn = \"%s\"\\n%s\\n"
       "encryption_key\\nsigning_key\\nexpiration_days = 9\\n' > t.info && "
       "certtool --generate-privkey --outfile %s-key.pem >/dev/null 2>&1 &&"
       " certtool --generate-certificate --load-privkey %s-key.pem "
       "--load-ca-certificate ../%s/ca-cert.pem --load-ca-privkey "
       "../%s/ca-key.pem --template t.info --outfile %s-cert.pem "
       ">/dev/null 2>&1", dir, sub, dir, sub, ca, cn, purpose, who, who,
       ca, ca, who);
}

static int suite_init(void)
{
    if (system("command -v certtool >/dev/null && "
               "command -v psktool >/dev/null && "
               "command -v gnutls-cli >/dev/null") != 0) {
        printf("SKIP: certtool, psktool and gnutls-cli (gnutls-bin) are "
               "not installed\n");
        exit(77);
    }
    /* As in blockd: a peer that went away is an error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    dir = unit_tmpdir();
    make_ca("ca");
    make_ca("ca2");
    make_creds("ca", "srv", "server", "localhost");
    make_creds("ca", "cli", "client", "client1");
    make_creds("ca2", "cli2", "client", "intruder");
    /* A client that presents a certificate made for a server. */
    make_creds("ca", "cli-srvcert", "server", "localhost");
    sh("cd %s/cli-srvcert && mv server-cert.pem client-cert.pem && "
       "mv server-key.pem client-key.pem", dir);
    sh("mkdir -p %s/nocert && cp %s/ca/ca-cert.pem %s/nocert/", dir, dir,
       dir);
    /* A server whose CRL revokes client1's certificate. */
    sh("cp -r %s/srv %s/srv-crl && cd %s/srv-crl && "
       "printf 'crl_next_update = 9\\ncrl_number = 1\\n' > crl.info && "
       "certtool --generate-crl --load-ca-privkey ../ca/ca-key.pem "
       "--load-ca-certificate ../ca/ca-cert.pem --load-certificate "
       "../cli/client-cert.pem --template crl.info --outfile ca-crl.pem "
       ">/dev/null 2>&1", dir, dir, dir);
    sh("mkdir -p %s/psk %s/psk2 && "
       "psktool -u alice -p %s/psk/keys.psk >/dev/null && "
       "psktool -u alice -p %s/psk2/keys.psk >/dev/null", dir, dir, dir,
       dir);
    return setup_failures ? 1 : 0;
}

static ObjectSet *set;

static void add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add(const char *fmt, ...)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *json = NULL;
    CLEANUP_JSON json_object *obj = NULL;
    ObjectOptions *opts = NULL;
    va_list ap;

    va_start(ap, fmt);
    json = xvasprintf(fmt, ap);
    va_end(ap);
    obj = json_tokener_parse(json);
    if (!obj || !qapi_parse_ObjectOptions(obj, NULL, 0, &opts, &err) ||
        !object_add(set, opts, &err)) {
        fprintf(stderr, "\nobject_add %s: %s\n", json,
                err ? err->msg : "bad JSON");
        setup_failures++;
    }
    qapi_free_ObjectOptions(opts);
}

static int objects_init(void)
{
    if (suite_init() != 0) {
        return 1;
    }
    set = object_set_new();
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"srv\", "
        "\"endpoint\": \"server\", \"dir\": \"%s/srv\"}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"srv-noverify\", "
        "\"endpoint\": \"server\", \"dir\": \"%s/srv\", "
        "\"verify-peer\": false}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"srv-crl\", "
        "\"endpoint\": \"server\", \"dir\": \"%s/srv-crl\"}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"cli\", "
        "\"dir\": \"%s/cli\"}", dir);
    /* A client with gnutls's plain NORMAL, as libnbd and qemu-nbd are:
     * SECP256R1 first among its groups. */
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"cli-normal\", "
        "\"dir\": \"%s/cli\", \"priority\": \"NORMAL\"}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"cli2\", "
        "\"dir\": \"%s/cli2\", \"sanity-check\": false}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"cli-srvcert\", "
        "\"dir\": \"%s/cli-srvcert\", \"sanity-check\": false}", dir);
    add("{\"qom-type\": \"tls-creds-x509\", \"id\": \"nocert\", "
        "\"dir\": \"%s/nocert\"}", dir);
    add("{\"qom-type\": \"tls-creds-psk\", \"id\": \"psrv\", "
        "\"endpoint\": \"server\", \"dir\": \"%s/psk\"}", dir);
    add("{\"qom-type\": \"tls-creds-psk\", \"id\": \"pcli\", "
        "\"username\": \"alice\", \"dir\": \"%s/psk\"}", dir);
    add("{\"qom-type\": \"tls-creds-psk\", \"id\": \"pcli-wrong\", "
        "\"username\": \"alice\", \"dir\": \"%s/psk2\"}", dir);
    add("{\"qom-type\": \"tls-creds-anon\", \"id\": \"asrv\", "
        "\"endpoint\": \"server\"}");
    add("{\"qom-type\": \"tls-creds-anon\", \"id\": \"acli\"}");
    add("{\"qom-type\": \"authz-simple\", \"id\": \"only-client1\", "
        "\"identity\": \"O=Example,CN=client1\"}");
    add("{\"qom-type\": \"authz-list\", \"id\": \"no-alice\", "
        "\"policy\": \"allow\", \"rules\": [{\"match\": \"al*\", "
        "\"policy\": \"deny\", \"format\": \"glob\"}]}");
    return setup_failures ? 1 : 0;
}

static int objects_clean(void)
{
    object_set_free(set);
    return 0;
}

/* ---- one handshake ---------------------------------------------------- */

typedef struct End {
    TlsCreds *creds;
    const char *hostname;     /* client: checked against the cert */
    int fd;
    bool handshake_ok;
    bool peer_ok;
    gnutls_group_t group;     /* the key exchange group negotiated */
    gnutls_cipher_algorithm_t cipher; /* the cipher negotiated */
    char *identity;
    char *why;                /* the first failure */
} End;

static void *run_end(void *opaque)
{
    End *e = opaque;
    CLEANUP_ERROR Error *err = NULL;
    gnutls_session_t s;
    int r;

    if (!tls_creds_session_new(e->creds, tls_creds_endpoint(e->creds),
                               e->hostname, &s, &err)) {
        e->why = xstrdup(err->msg);
        shutdown(e->fd, SHUT_RDWR);
        return NULL;
    }
    gnutls_transport_set_int(s, e->fd);
    gnutls_handshake_set_timeout(s, 30000);
    do {
        r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    e->handshake_ok = r >= 0;
    if (r < 0) {
        e->why = xstrdup(gnutls_strerror(r));
    } else {
        e->group = gnutls_group_get(s);
        e->cipher = gnutls_cipher_get(s);
        e->peer_ok = tls_creds_check_peer(e->creds, s, e->hostname,
                                          &e->identity, &err);
        if (!e->peer_ok) {
            e->why = xstrdup(err->msg);
        }
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    /* The other end must not wait for us after a failure. */
    shutdown(e->fd, SHUT_RDWR);
    gnutls_deinit(s);
    return NULL;
}

static TlsCreds *creds(const char *id, TlsEndpoint ep)
{
    CLEANUP_ERROR Error *err = NULL;
    TlsCreds *c = object_get_tls_creds(set, id, ep, &err);

    if (!c) {
        fprintf(stderr, "\n%s: %s\n", id, err->msg);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    return c;
}

static void handshake(const char *srv, const char *cli, const char *host,
                      End *se, End *ce)
{
    int sv[2];
    pthread_t t;

    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                                     sv), 0);
    *se = (End) { .creds = creds(srv, TLS_ENDPOINT_SERVER), .fd = sv[0] };
    *ce = (End) { .creds = creds(cli, TLS_ENDPOINT_CLIENT), .fd = sv[1],
                  .hostname = host };
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, run_end, se), 0);
    run_end(ce);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
}

static void end_clear(End *e)
{
    free(e->identity);
    free(e->why);
}

static void test_x509_mutual(void)
{
    End se, ce;

    handshake("srv", "cli", "localhost", &se, &ce);
    CU_ASSERT_TRUE(se.handshake_ok && ce.handshake_ok);
    CU_ASSERT_TRUE(se.peer_ok);
    CU_ASSERT_TRUE(ce.peer_ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(se.identity);
    /* The client's distinguished name, as QEMU's authz sees it. */
    CU_ASSERT_STRING_EQUAL(se.identity, "O=Example,CN=client1");
    CU_ASSERT_PTR_NOT_NULL(ce.identity);   /* the server's DN */
    CU_ASSERT_TRUE(authz_is_allowed(object_get_authz(set, "only-client1",
                                                     NULL), se.identity));
    end_clear(&se);
    end_clear(&ce);

    /* An address: no SNI, the certificate's IP is checked. */
    handshake("srv", "cli", "127.0.0.1", &se, &ce);
    CU_ASSERT_TRUE(ce.peer_ok && se.peer_ok);
    end_clear(&se);
    end_clear(&ce);
}

/* The default server priority picks X25519 over SECP256R1 when a
 * client offers both in the other order, and AES-128-GCM (whose SHA-256
 * key schedule is cheaper) over NORMAL's first, AES-256-GCM with SHA-384
 * (crypto/tlscreds.c). */
static void test_x509_default_group(void)
{
    End se, ce;

    handshake("srv", "cli-normal", "localhost", &se, &ce);
    CU_ASSERT_TRUE(se.handshake_ok && ce.handshake_ok);
    CU_ASSERT_EQUAL(se.group, GNUTLS_GROUP_X25519);
    CU_ASSERT_EQUAL(ce.group, GNUTLS_GROUP_X25519);
    CU_ASSERT_EQUAL(se.cipher, GNUTLS_CIPHER_AES_128_GCM);
    CU_ASSERT_EQUAL(ce.cipher, GNUTLS_CIPHER_AES_128_GCM);
    end_clear(&se);
    end_clear(&ce);
}

static void test_x509_wrong_hostname(void)
{
    End se, ce;

    handshake("srv", "cli", "elsewhere.example", &se, &ce);
    CU_ASSERT_TRUE(ce.handshake_ok);
    CU_ASSERT_FALSE(ce.peer_ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ce.why);
    CU_ASSERT_STRING_EQUAL(ce.why, "Certificate does not match the "
                                   "hostname elsewhere.example");
    CU_ASSERT_PTR_NULL(ce.identity);
    end_clear(&se);
    end_clear(&ce);
}

static void test_x509_client_without_cert(void)
{
    End se, ce;

    handshake("srv", "nocert", "localhost", &se, &ce);
    /* verify-peer: the server refuses the anonymous client */
    CU_ASSERT_FALSE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    end_clear(&se);
    end_clear(&ce);

    /* without verify-peer it is let in, with no identity: an authz
     * denies it */
    handshake("srv-noverify", "nocert", "localhost", &se, &ce);
    CU_ASSERT_TRUE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_TRUE(ce.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    CU_ASSERT_FALSE(authz_is_allowed(object_get_authz(set, "no-alice",
                                                      NULL), se.identity));
    end_clear(&se);
    end_clear(&ce);
}

static void test_x509_foreign_ca(void)
{
    End se, ce;

    handshake("srv", "cli2", "localhost", &se, &ce);
    CU_ASSERT_FALSE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    end_clear(&se);
    end_clear(&ce);
}

static void test_x509_wrong_purpose(void)
{
    End se, ce;

    handshake("srv", "cli-srvcert", "localhost", &se, &ce);
    CU_ASSERT_FALSE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    end_clear(&se);
    end_clear(&ce);
}

static void test_x509_revoked(void)
{
    End se, ce;

    handshake("srv-crl", "cli", "localhost", &se, &ce);
    CU_ASSERT_FALSE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    if (se.handshake_ok) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(se.why);
        CU_ASSERT_PTR_NOT_NULL(strstr(se.why, "revoked"));
    }
    end_clear(&se);
    end_clear(&ce);
}

static void test_psk(void)
{
    End se, ce;

    handshake("psrv", "pcli", NULL, &se, &ce);
    CU_ASSERT_TRUE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_TRUE(ce.handshake_ok && ce.peer_ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(se.identity);
    CU_ASSERT_STRING_EQUAL(se.identity, "alice");
    CU_ASSERT_PTR_NULL(ce.identity);
    CU_ASSERT_FALSE(authz_is_allowed(object_get_authz(set, "no-alice",
                                                      NULL), se.identity));
    end_clear(&se);
    end_clear(&ce);

    /* the same username with another key */
    handshake("psrv", "pcli-wrong", NULL, &se, &ce);
    CU_ASSERT_FALSE(se.handshake_ok);
    CU_ASSERT_FALSE(ce.handshake_ok);
    end_clear(&se);
    end_clear(&ce);
}

static void test_anon(void)
{
    End se, ce;

    handshake("asrv", "acli", NULL, &se, &ce);
    CU_ASSERT_TRUE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_TRUE(ce.handshake_ok && ce.peer_ok);
    CU_ASSERT_PTR_NULL(se.identity);
    end_clear(&se);
    end_clear(&ce);
}

static void test_endpoints(void)
{
    CLEANUP_ERROR Error *err = NULL;
    gnutls_session_t s;

    CU_ASSERT_PTR_NULL(object_get_tls_creds(set, "cli", TLS_ENDPOINT_SERVER,
                                            &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_STRING_EQUAL(err->msg, "Expected TLS credentials for a "
                                     "server endpoint");
    error_free(err);
    err = NULL;
    CU_ASSERT_PTR_NULL(object_get_tls_creds(set, "psrv",
                                            TLS_ENDPOINT_CLIENT, &err));
    CU_ASSERT_STRING_EQUAL(err->msg, "Expected TLS credentials for a "
                                     "client endpoint");
    error_free(err);
    err = NULL;
    CU_ASSERT_FALSE(tls_creds_session_new(creds("cli", TLS_ENDPOINT_CLIENT),
                                          TLS_ENDPOINT_SERVER, NULL, &s,
                                          &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    CU_ASSERT_STRING_EQUAL(tls_creds_id(creds("srv", TLS_ENDPOINT_SERVER)),
                           "srv");
}

/* ---- gnutls-cli as the client: another implementation reads the same
 * keys.psk and certificates --------------------------------------------- */

/* Run gnutls-cli (argv, with -p PORT 127.0.0.1 appended) against one
 * server session of srv on 127.0.0.1; the client's exit status in
 * *status. */
static void serve_gnutls_cli(const char *srv, char **argv, End *se,
                             int *status)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t salen = sizeof(sa);
    struct pollfd pfd;
    char port[16];
    char *args[32];
    size_t n = 0;
    int lfd, fd;
    pid_t pid;

    *status = -1;
    *se = (End) { .creds = creds(srv, TLS_ENDPOINT_SERVER), .fd = -1 };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_TRUE_FATAL(lfd >= 0);
    CU_ASSERT_EQUAL_FATAL(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    CU_ASSERT_EQUAL_FATAL(listen(lfd, 1), 0);
    CU_ASSERT_EQUAL_FATAL(getsockname(lfd, (struct sockaddr *)&sa, &salen),
                          0);
    snprintf(port, sizeof(port), "%u", ntohs(sa.sin_port));
    while (argv[n]) {
        args[n] = argv[n];
        n++;
    }
    args[n++] = (char *)"-p";
    args[n++] = port;
    args[n++] = (char *)"127.0.0.1";
    args[n] = NULL;
    pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);

        /* stdin at EOF: the client closes once the handshake is done. */
        dup2(devnull, 0);
        dup2(devnull, 1);
        execvp(args[0], args);
        _exit(127);
    }
    pfd = (struct pollfd) { .fd = lfd, .events = POLLIN };
    if (poll(&pfd, 1, 60000) == 1) {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        CU_ASSERT_TRUE(fd >= 0);
        if (fd >= 0) {
            se->fd = fd;
            run_end(se);
            close(fd);
        }
    } else {
        kill(pid, SIGTERM);
    }
    close(lfd);
    waitpid(pid, status, 0);
}

static void test_gnutls_cli_x509(void)
{
    CLEANUP_FREE char *ca = xasprintf("--x509cafile=%s/ca/ca-cert.pem", dir);
    CLEANUP_FREE char *cert = xasprintf("--x509certfile=%s/cli/"
                                        "client-cert.pem", dir);
    CLEANUP_FREE char *key = xasprintf("--x509keyfile=%s/cli/client-key.pem",
                                       dir);
    char *argv[] = { (char *)"gnutls-cli", ca, cert, key,
                     (char *)"--verify-hostname=localhost", NULL };
    End se;
    int status;

    serve_gnutls_cli("srv", argv, &se, &status);
    if (se.why) {
        fprintf(stderr, "\nserver: %s\n", se.why);
    }
    CU_ASSERT_TRUE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(se.identity);
    CU_ASSERT_STRING_EQUAL(se.identity, "O=Example,CN=client1");
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    end_clear(&se);
}

static void test_gnutls_cli_psk(void)
{
    char line[512], *colon;
    CLEANUP_FREE char *path = xasprintf("%s/psk/keys.psk", dir);
    CLEANUP_FREE char *keyarg = NULL;
    FILE *f = fopen(path, "r");
    End se;
    int status;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fgets(line, sizeof(line), f));
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    colon = strchr(line, ':');
    CU_ASSERT_PTR_NOT_NULL_FATAL(colon);
    keyarg = xasprintf("--pskkey=%s", colon + 1);
    {
        char *argv[] = { (char *)"gnutls-cli", (char *)"--pskusername=alice",
                         keyarg, (char *)"--priority="
                         "NORMAL:-KX-ALL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL };

        serve_gnutls_cli("psrv", argv, &se, &status);
    }
    if (se.why) {
        fprintf(stderr, "\nserver: %s\n", se.why);
    }
    CU_ASSERT_TRUE(se.handshake_ok && se.peer_ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(se.identity);
    CU_ASSERT_STRING_EQUAL(se.identity, "alice");
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    end_clear(&se);

    /* a key one bit off */
    colon[1] = colon[1] == '0' ? '1' : '0';
    free(keyarg);
    keyarg = xasprintf("--pskkey=%s", colon + 1);
    {
        char *argv[] = { (char *)"gnutls-cli", (char *)"--pskusername=alice",
                         keyarg, (char *)"--priority="
                         "NORMAL:-KX-ALL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL };

        serve_gnutls_cli("psrv", argv, &se, &status);
    }
    CU_ASSERT_TRUE(se.fd >= 0);          /* it connected, and failed */
    CU_ASSERT_FALSE(se.handshake_ok);
    CU_ASSERT_PTR_NOT_NULL(se.why);
    CU_ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    end_clear(&se);
}

static CU_TestInfo tls_tests[] = {
    { "x509_mutual", test_x509_mutual },
    { "x509_default_group", test_x509_default_group },
    { "x509_wrong_hostname", test_x509_wrong_hostname },
    { "x509_client_without_cert", test_x509_client_without_cert },
    { "x509_foreign_ca", test_x509_foreign_ca },
    { "x509_revoked", test_x509_revoked },
    { "x509_wrong_purpose", test_x509_wrong_purpose },
    { "psk", test_psk },
    { "anon", test_anon },
    { "endpoints", test_endpoints },
    { "gnutls_cli_x509", test_gnutls_cli_x509 },
    { "gnutls_cli_psk", test_gnutls_cli_psk },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "tls", .pInitFunc = objects_init,
      .pCleanupFunc = objects_clean, .pTests = tls_tests },
    CU_SUITE_INFO_NULL,
};
