/* test-acceptor.c - util/acceptor.c on a real loop: accepting, pausing,
 * and backing off when out of descriptors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cunit-main.h"
#include "util/loop.h"
#include "util/acceptor.h"
#include "util/cleanup.h"
#include "util/util.h"

typedef struct Fixture {
    Loop *loop;
    Acceptor *a;
    char *path;
    int accepted[16];
    size_t naccepted;
} Fixture;

static void on_accept(void *opaque, int fd)
{
    Fixture *f = opaque;

    CU_ASSERT_FATAL(f->naccepted < 16);
    f->accepted[f->naccepted++] = fd;
}

static void stop_loop(void *opaque)
{
    loop_stop(opaque);
}

/* Run the loop for usec. */
static void run_for(Fixture *f, uint64_t usec)
{
    LoopTimer *t = loop_timer_new(f->loop, stop_loop, f->loop);

    loop_timer_arm(t, usec);
    CU_ASSERT(loop_run(f->loop) == 0);
    loop_timer_free(t);
}

static void fixture_init(Fixture *f, const char *name)
{
    CLEANUP_ERROR Error *err = NULL;
    SockListenerVec ls = { 0 };
    SockAddr sa = { .type = SOCK_ADDR_UNIX };

    memset(f, 0, sizeof(*f));
    f->path = xasprintf("%s/%s", unit_tmpdir(), name);
    sa.path = f->path;
    f->loop = loop_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->loop);
    CU_ASSERT_FATAL(sock_listen(&sa, &ls, &err));
    f->a = acceptor_new(f->loop, "test", on_accept, f);
    acceptor_add(f->a, &ls);
    CU_ASSERT_EQUAL(ls.len, 0);
}

static void fixture_fini(Fixture *f)
{
    for (size_t i = 0; i < f->naccepted; i++) {
        close(f->accepted[i]);
    }
    acceptor_free(f->a);
    CU_ASSERT(access(f->path, F_OK) < 0);       /* our socket is gone */
    loop_free(f->loop);
    free(f->path);
}

static int client(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strcpy(sun.sun_path, path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sun,
                            sizeof(sun)) == 0);
    return fd;
}

static void test_accept_and_pause(void)
{
    Fixture f;
    int c[4];

    fixture_init(&f, "a.sock");
    for (int i = 0; i < 3; i++) {
        c[i] = client(f.path);
    }
    run_for(&f, 100 * 1000);
    CU_ASSERT_EQUAL(f.naccepted, 3);

    /* Paused: the client waits in the backlog. */
    acceptor_set_paused(f.a, true);
    c[3] = client(f.path);
    run_for(&f, 100 * 1000);
    CU_ASSERT_EQUAL(f.naccepted, 3);
    acceptor_set_paused(f.a, false);
    run_for(&f, 100 * 1000);
    CU_ASSERT_EQUAL(f.naccepted, 4);
    CU_ASSERT_FALSE(acceptor_backing_off(f.a));
    for (int i = 0; i < 4; i++) {
        close(c[i]);
    }
    fixture_fini(&f);
}

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void test_back_off(void)
{
    struct rlimit old, low;
    Fixture f;
    int c, probe;
    double cpu;

    fixture_init(&f, "b.sock");
    CU_ASSERT_FATAL(getrlimit(RLIMIT_NOFILE, &old) == 0);
    c = client(f.path);
    /* No descriptor left above the ones open now. */
    probe = dup(c);
    CU_ASSERT_FATAL(probe >= 0);
    close(probe);
    low = old;
    low.rlim_cur = probe;
    CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &low) == 0);

    cpu = cpu_seconds();
    run_for(&f, 500 * 1000);
    cpu = cpu_seconds() - cpu;
    CU_ASSERT(acceptor_backing_off(f.a));
    CU_ASSERT_EQUAL(f.naccepted, 0);
    /* Woken at most a few times (50 ms doubling), not spinning. */
    if (cpu >= 0.1) {
        fprintf(stderr, "\nbacking off used %.3f s of CPU\n", cpu);
    }
    CU_ASSERT(cpu < 0.1);

    /* A descriptor is free again: accepted at once. */
    CU_ASSERT_FATAL(setrlimit(RLIMIT_NOFILE, &old) == 0);
    acceptor_fd_freed(f.a);
    run_for(&f, 20 * 1000);
    CU_ASSERT_EQUAL(f.naccepted, 1);
    CU_ASSERT_FALSE(acceptor_backing_off(f.a));
    close(c);
    fixture_fini(&f);
}

static CU_TestInfo acceptor_tests[] = {
    { "accept_and_pause", test_accept_and_pause },
    { "back_off", test_back_off },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "acceptor", .pTests = acceptor_tests },
    CU_SUITE_INFO_NULL,
};
