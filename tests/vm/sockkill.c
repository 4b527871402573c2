/* sockkill.c - kill the server side of a kernel NBD device's
 * connections from outside the daemon (tests/vm/kernel-nbd.sh, the
 * link-dead checks).
 *
 *   sockkill PID [COUNT]
 *
 * The daemon serves the kernel over socketpairs whose other end only
 * the kernel holds.  Those are process PID's unnamed AF_UNIX stream
 * sockets whose peer credentials name PID itself (a socketpair's do;
 * an accepted QMP connection's name the client, and is named after its
 * listener).  sockkill takes each with pidfd_getfd() and shuts it down
 * (SHUT_RDWR) in descriptor order, the first COUNT of them (default:
 * all): the daemon reads end-of-file, the kernel sees the link die.
 * Prints how many it shut down; exits 1 when none.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static int is_socketpair_end(int fd, pid_t pid)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    int v;
    socklen_t vlen = sizeof(v);

    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vlen) != 0 ||
        v != AF_UNIX) {
        return 0;
    }
    vlen = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vlen) != 0 ||
        v != SOCK_STREAM) {
        return 0;
    }
    memset(&sa, 0, sizeof(sa));
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
        len > sizeof(sa_family_t)) {
        return 0;                       /* named: a listener's */
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        return 0;
    }
    return cred.pid == pid;
}

int main(int argc, char **argv)
{
    pid_t pid;
    long count;
    int pidfd, done = 0;
    char dir[64];
    struct dirent **ents;
    int n;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: sockkill PID [COUNT]\n");
        return 2;
    }
    pid = (pid_t)atoi(argv[1]);
    count = argc > 2 ? atol(argv[2]) : -1;
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        fprintf(stderr, "sockkill: pidfd_open %d: %s\n", (int)pid,
                strerror(errno));
        return 1;
    }
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    n = scandir(dir, &ents, NULL, versionsort);
    if (n < 0) {
        fprintf(stderr, "sockkill: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        int target, fd;

        if (ents[i]->d_name[0] == '.' ||
            (count >= 0 && done >= count)) {
            free(ents[i]);
            continue;
        }
        target = atoi(ents[i]->d_name);
        free(ents[i]);
        fd = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
        if (fd < 0) {
            continue;                   /* closed meanwhile */
        }
        if (is_socketpair_end(fd, pid) && shutdown(fd, SHUT_RDWR) == 0) {
            done++;
        }
        close(fd);
    }
    free(ents);
    printf("%d\n", done);
    return done > 0 ? 0 : 1;
}
