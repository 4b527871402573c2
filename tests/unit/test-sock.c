/* test-sock.c - util/sock.c: listening, connecting, socket files,
 * descriptors by number. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cunit-main.h"
#include "util/cleanup.h"
#include "util/sock.h"
#include "util/util.h"

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", unit_tmpdir(), name);
}

static bool has_fd_flag(int fd, int flag)
{
    return (fcntl(fd, F_GETFD) & flag) != 0;
}

static bool has_fl_flag(int fd, int flag)
{
    return (fcntl(fd, F_GETFL) & flag) != 0;
}

/* Expect err set with msg containing want; free it. */
static void expect_error(Error **err, const char *want)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(*err);
    if (strstr((*err)->msg, want) == NULL) {
        fprintf(stderr, "\nerror '%s', want '%s'\n", (*err)->msg, want);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr((*err)->msg, want));
    error_free(*err);
    *err = NULL;
}

/* Connect to l, accept, and pass a byte each way. */
static void check_round_trip(const SockAddr *to, const SockListener *l)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_CLOSE int c = sock_connect(to, 2000, &err);
    CLEANUP_CLOSE int s = -1;
    char b = 0;

    CU_ASSERT_PTR_NULL(err);
    CU_ASSERT_FATAL(c >= 0);
    CU_ASSERT(has_fd_flag(c, FD_CLOEXEC));
    CU_ASSERT(!has_fl_flag(c, O_NONBLOCK));
    for (int i = 0; i < 200 && s < 0; i++) {
        s = sock_accept(l);
        if (s == -EAGAIN) {
            usleep(5000);
        }
    }
    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT(has_fd_flag(s, FD_CLOEXEC));
    CU_ASSERT(has_fl_flag(s, O_NONBLOCK));
    if (l->is_inet) {
        int v = 0;
        socklen_t len = sizeof(v);

        CU_ASSERT(getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0);
        CU_ASSERT(v != 0);
    }
    CU_ASSERT(write(c, "x", 1) == 1);
    for (int i = 0; i < 200 && read(s, &b, 1) != 1; i++) {
        usleep(5000);
    }
    CU_ASSERT(b == 'x');
    CU_ASSERT(write(s, "y", 1) == 1);
    CU_ASSERT(read(c, &b, 1) == 1 && b == 'y');
}

/* A unix socket bound at path, listening or not. */
static int raw_unix(const char *path, bool listening)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(sun.sun_path, path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0);
    if (listening) {
        CU_ASSERT_FATAL(listen(fd, 4) == 0);
    }
    return fd;
}

static ino_t inode_of(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 ? st.st_ino : 0;
}

static void test_unix_listen_connect(void)
{
    CLEANUP_FREE char *path = tmp_path("a.sock");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = path };
    SockListenerVec ls = { 0 };
    struct stat st;

    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    CU_ASSERT_EQUAL_FATAL(ls.len, 1);
    CU_ASSERT(!ls.ptr[0].is_inet);
    CU_ASSERT_STRING_EQUAL(ls.ptr[0].unix_path, path);
    CU_ASSERT(has_fd_flag(ls.ptr[0].fd, FD_CLOEXEC));
    CU_ASSERT(has_fl_flag(ls.ptr[0].fd, O_NONBLOCK));
    CU_ASSERT(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    CU_ASSERT(sock_accept(&ls.ptr[0]) == -EAGAIN);
    check_round_trip(&sa, &ls.ptr[0]);
    sock_listeners_close(&ls);
    CU_ASSERT(lstat(path, &st) < 0 && errno == ENOENT);
    CU_ASSERT_EQUAL(ls.len, 0);
}

static void test_unix_stale_replaced(void)
{
    CLEANUP_FREE char *path = tmp_path("stale.sock");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = path };
    SockListenerVec ls = { 0 };
    ino_t old;

    /* Bound, then closed without unlink: what a crash leaves. */
    close(raw_unix(path, true));
    old = inode_of(path);
    CU_ASSERT_FATAL(old != 0);
    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    CU_ASSERT(inode_of(path) != 0);
    check_round_trip(&sa, &ls.ptr[0]);
    sock_listeners_close(&ls);
    CU_ASSERT(inode_of(path) == 0);
}

static void test_unix_live_refused(void)
{
    CLEANUP_FREE char *path = tmp_path("live.sock");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = path };
    SockListenerVec ls = { 0 };
    CLEANUP_CLOSE int owner = raw_unix(path, true);
    CLEANUP_CLOSE int c = -1, s = -1;
    ino_t ino = inode_of(path);

    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    CU_ASSERT_EQUAL(ls.len, 0);
    expect_error(&err, "Address already in use");
    /* Not stolen: the owner still has its file and its clients (the
     * probe's connection is the first in its backlog). */
    CU_ASSERT(inode_of(path) == ino);
    close(accept(owner, NULL, NULL));
    c = sock_connect(&sa, -1, &err);
    CU_ASSERT(c >= 0);
    s = accept(owner, NULL, NULL);
    CU_ASSERT(s >= 0);
    unlink(path);
}

static void test_unix_file_and_dir_refused(void)
{
    CLEANUP_FREE char *file = tmp_path("regular");
    CLEANUP_FREE char *dir = tmp_path("dir");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = file };
    SockListenerVec ls = { 0 };
    char buf[16] = "";
    struct stat st;
    int fd;

    fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "precious", 8) == 8);
    close(fd);
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "a regular file is there, not a socket");
    fd = open(file, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(read(fd, buf, sizeof(buf)) == 8);
    CU_ASSERT(memcmp(buf, "precious", 8) == 0);
    close(fd);

    CU_ASSERT_FATAL(mkdir(dir, 0700) == 0);
    sa.path = dir;
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "a directory is there, not a socket");
    CU_ASSERT(lstat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    CU_ASSERT_EQUAL(ls.len, 0);
    unlink(file);
    rmdir(dir);
}

/* At close, a path that is no longer our socket stays. */
static void test_unix_close_keeps_replacement(void)
{
    CLEANUP_FREE char *path = tmp_path("moved.sock");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = path };
    SockListenerVec ls = { 0 };
    struct stat st;
    int fd;

    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    sock_listeners_close(&ls);
    CU_ASSERT(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
    unlink(path);

    /* Another socket in its place (someone else's server) stays too. */
    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    unlink(path);
    close(raw_unix(path, false));
    sock_listeners_close(&ls);
    CU_ASSERT(lstat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    unlink(path);
}

static void test_unix_bad_paths(void)
{
    CLEANUP_ERROR Error *err = NULL;
    char longpath[200];
    SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = "/nonexistent/x.sock" };
    SockListenerVec ls = { 0 };

    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "Failed to bind socket to /nonexistent/x.sock");
    CU_ASSERT(sock_connect(&sa, -1, &err) < 0);
    expect_error(&err, "Failed to connect to '/nonexistent/x.sock'");
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    sa.path = longpath;
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "too long");
    sa.path = "";
    CU_ASSERT(sock_connect(&sa, -1, &err) < 0);
    expect_error(&err, "Empty UNIX socket path");
}

static in_port_t port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Listen on host port 0, connect to what was chosen. */
static void check_inet(const char *host)
{
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_INET, .host = host, .port = "0" };
    SockListenerVec ls = { 0 };
    CLEANUP_FREE char *port = NULL;

    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    CU_ASSERT_FATAL(ls.len >= 1);
    CU_ASSERT(ls.ptr[0].is_inet);
    CU_ASSERT_PTR_NULL(ls.ptr[0].unix_path);
    CU_ASSERT(has_fd_flag(ls.ptr[0].fd, FD_CLOEXEC));
    CU_ASSERT(has_fl_flag(ls.ptr[0].fd, O_NONBLOCK));
    port = xasprintf("%u", port_of(ls.ptr[0].fd));
    CU_ASSERT(strcmp(port, "0") != 0);
    /* Every address of the name listens on the one chosen port. */
    for (size_t i = 1; i < ls.len; i++) {
        CU_ASSERT_EQUAL(port_of(ls.ptr[i].fd), port_of(ls.ptr[0].fd));
    }
    sa.port = port;
    if (ls.len == 1) {
        check_round_trip(&sa, &ls.ptr[0]);
    }
    sock_listeners_close(&ls);
}

static void test_inet_ipv4(void)
{
    check_inet("127.0.0.1");
}

static void test_inet_ipv6(void)
{
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6,
                                 .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&sin6,
                                sizeof(sin6));
    int e = errno;

    if (fd >= 0) {
        close(fd);
    }
    if (rc < 0) {
        printf("\n  skipped: this machine has no IPv6 loopback (::1: %s) ",
               strerror(e));
        return;
    }
    check_inet("::1");
}

static void test_inet_localhost(void)
{
    check_inet("localhost");
}

static void test_inet_bad(void)
{
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_INET, .host = "no-such-host.invalid",
                    .port = "10809" };
    SockListenerVec ls = { 0 };

    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "address resolution failed for "
                 "no-such-host.invalid:10809");
    CU_ASSERT(sock_connect(&sa, 1000, &err) < 0);
    expect_error(&err, "address resolution failed");
    sa.host = "127.0.0.1";
    sa.port = "";
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "No port");
    sa.port = "no-such-service";
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "address resolution failed");
    CU_ASSERT_EQUAL(ls.len, 0);
}

static void test_inet_port_in_use(void)
{
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_INET, .host = "127.0.0.1",
                    .port = "0" };
    SockListenerVec ls = { 0 }, ls2 = { 0 };
    CLEANUP_FREE char *port = NULL;

    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    port = xasprintf("%u", port_of(ls.ptr[0].fd));
    sa.port = port;
    CU_ASSERT_FALSE(sock_listen(&sa, &ls2, &err));
    expect_error(&err, "Address already in use");
    sock_listeners_close(&ls);
}

static void test_fd(void)
{
    CLEANUP_FREE char *path = tmp_path("fd.sock");
    CLEANUP_ERROR Error *err = NULL;
    SockAddr sa = { .type = SOCK_ADDR_FD };
    SockAddr to = { .type = SOCK_ADDR_UNIX, .path = path };
    SockListenerVec ls = { 0 };
    int fd;

    /* A listening socket: taken as it is (its file is not ours). */
    sa.fd = raw_unix(path, true);
    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    CU_ASSERT_EQUAL_FATAL(ls.len, 1);
    CU_ASSERT_EQUAL(ls.ptr[0].fd, sa.fd);
    CU_ASSERT_PTR_NULL(ls.ptr[0].unix_path);
    CU_ASSERT(has_fl_flag(sa.fd, O_NONBLOCK));
    check_round_trip(&to, &ls.ptr[0]);
    sock_listeners_close(&ls);
    CU_ASSERT(inode_of(path) != 0);
    unlink(path);

    /* What is refused, and why. */
    sa.fd = open(unit_tmpdir(), O_RDONLY | O_DIRECTORY);
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "is not a socket");
    close(sa.fd);
    sa.fd = socket(AF_INET, SOCK_DGRAM, 0);
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "is not a stream socket");
    close(sa.fd);
    sa.fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "is a socket that is not listening");
    fd = sa.fd;
    close(fd);
    CU_ASSERT_FALSE(sock_listen(&sa, &ls, &err));
    expect_error(&err, "is not open");
    CU_ASSERT(sock_connect(&sa, -1, &err) < 0);
    expect_error(&err, "Cannot connect");
    CU_ASSERT_EQUAL(ls.len, 0);
}

static void test_inherited(void)
{
    CLEANUP_FREE char *path = tmp_path("inh.sock");
    CLEANUP_ERROR Error *err = NULL;
    int lfd = raw_unix(path, true);
    int file = open(unit_tmpdir(), O_RDONLY | O_DIRECTORY);
    int plain = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un autobind = { .sun_family = AF_UNIX };
    int late;

    CU_ASSERT_FATAL(file >= 0 && plain >= 0);
    /* Opened before the scan: inherited. */
    CU_ASSERT(sock_inherited_scan() >= 3);
    late = socket(AF_UNIX, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(late >= 0);
    /* Bound to an abstract name the kernel picks, and listening. */
    CU_ASSERT_FATAL(bind(late, (struct sockaddr *)&autobind,
                         sizeof(sa_family_t)) == 0);
    CU_ASSERT_FATAL(listen(late, 1) == 0);
    CU_ASSERT_FALSE(sock_inherited_take(late, &err));
    expect_error(&err, "belongs to blockd itself");
    CU_ASSERT_FALSE(sock_inherited_take(file, &err));
    expect_error(&err, "is not a socket");
    CU_ASSERT_FALSE(sock_inherited_take(plain, &err));
    expect_error(&err, "not listening");
    CU_ASSERT_FALSE(sock_inherited_take(9999, &err));
    expect_error(&err, "is not open");
    CU_ASSERT_TRUE(sock_inherited_take(lfd, &err));
    CU_ASSERT_PTR_NULL(err);
    /* Used once. */
    CU_ASSERT_FALSE(sock_inherited_take(lfd, &err));
    expect_error(&err, "belongs to blockd itself");
    close(late);
    close(plain);
    close(file);
    close(lfd);
    unlink(path);
}

static CU_TestInfo sock_tests[] = {
    { "unix_listen_connect", test_unix_listen_connect },
    { "unix_stale_replaced", test_unix_stale_replaced },
    { "unix_live_refused", test_unix_live_refused },
    { "unix_file_and_dir_refused", test_unix_file_and_dir_refused },
    { "unix_close_keeps_replacement", test_unix_close_keeps_replacement },
    { "unix_bad_paths", test_unix_bad_paths },
    { "inet_ipv4", test_inet_ipv4 },
    { "inet_ipv6", test_inet_ipv6 },
    { "inet_localhost", test_inet_localhost },
    { "inet_bad", test_inet_bad },
    { "inet_port_in_use", test_inet_port_in_use },
    { "fd", test_fd },
    { "inherited", test_inherited },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "sock", .pTests = sock_tests },
    CU_SUITE_INFO_NULL,
};
