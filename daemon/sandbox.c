/* sandbox.c - see sandbox.h.
 *
 * The allow-list below names every system call blockd and blockd-nbd
 * make once start-up is done, grouped by who needs it.  Calls are named
 * (libseccomp resolves them for the running architecture) and a name the
 * architecture lacks is skipped.  Everything not listed is denied; the
 * calls in `sandbox_deadly` are denied with a kill in every mode, the
 * debug mode (SANDBOX_LOG) included.
 */
#include "daemon/sandbox.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

/* Sanitizer builds (the ASan+UBSan tree): the runtime's own calls, at
 * start, when reporting and at exit.  LeakSanitizer stops the world
 * with a tracer thread that ptraces the others: only these builds allow
 * ptrace, never a release build. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define SANDBOX_SANITIZER 1
#endif
#endif

static const char *const sandbox_allowed[] = {
    /* Memory: malloc, thread stacks, request buffers given back after a
     * second idle (madvise), the NBD client's buffers. */
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
    /* Threads: the worker pool and the nbd driver's I/O threads start
     * after start-up (a node added by QMP); glibc's pthread_create and
     * mutexes/condition variables (futex), thread exit. */
    "clone", "clone3", "futex", "set_robust_list", "get_robust_list",
    "rseq", "gettid", "exit", "exit_group", "sched_yield",
    "sched_getaffinity", "membarrier", "getpriority", "setpriority",
    /* Signals: libevent's SIGTERM/SIGINT/SIGHUP handlers, glibc's abort
     * and raise (a failed assert must still dump), SIGPIPE ignored. */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "tgkill", "getpid", "getppid", "restart_syscall",
    /* Time: timeouts, statistics, gnutls, the nbd driver's back-off. */
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep",
    "clock_nanosleep",
    /* The event loop (libevent: epoll, eventfd for loop_post, a
     * socketpair for signals) and the nbd driver's engine (poll over
     * its connections and an eventfd). */
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "eventfd2", "poll", "ppoll", "select",
    "pselect6", "pipe", "pipe2", "timerfd_create", "timerfd_settime",
    "timerfd_gettime",
    /* Descriptors and files: images opened by blockdev-add (open,
     * fstat, O_DIRECT probing, locks), their data path (preadv &
     * co, fallocate for holes and zeroes, fdatasync), sizes (lseek),
     * backing files resolved with realpath() (readlink), socket files
     * removed at exit, getfd/add-fd descriptors. */
    "openat", "open", "close", "close_range", "dup", "dup2", "dup3",
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
    "pwritev", "preadv2", "pwritev2", "lseek", "fstat", "newfstatat",
    "stat", "lstat", "statx", "fstatfs", "statfs", "fcntl", "flock",
    "fsync", "fdatasync", "fallocate", "fadvise64", "readahead",
    "ftruncate", "readlink",
    /* Big NBD reads of raw files: page cache -> pipe -> socket. */
    "splice",
    /* A job's copy between two image files (blk_copy_range), its
     * writeback started as it goes (BLK_REQ_STREAM). */
    "copy_file_range", "sync_file_range",
    "readlinkat", "getcwd", "chdir", "access", "faccessat", "faccessat2",
    "unlink", "unlinkat", "getdents", "getdents64", "umask", "fchmod", "chmod",
    "fchmodat", "uname", "sysinfo",
    /* x-blockd-save-config replaces its file atomically (a temporary
     * file renamed over it). */
    "rename", "renameat", "renameat2",
    /* Sockets: the NBD server, QMP monitors (accept, peer credentials
     * for authz), the nbd driver's connects (unix and TCP, name lookup
     * through glibc: DNS over UDP, nscd over a unix socket), the kernel
     * NBD device's netlink (socket() is narrowed below by domain). */
    "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom",
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "socketpair",
    /* gnutls and OpenSSL-free randomness; ids for credentials and
     * logs; resource limits (the acceptor's EMFILE back-off). */
    "getrandom", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getrlimit", "prlimit64", "getrusage",
#ifdef SANDBOX_SANITIZER
    /* ASan/LSan/UBSan runtime only (see SANDBOX_SANITIZER above). */
    "ptrace", "wait4", "waitid", "kill", "prctl", "sched_getparam",
    "sched_getscheduler", "getpgid", "setpgid", "mlock", "munlock",
    "msync", "pipe2", "process_vm_readv",
#endif
};

/* Denied with a kill in every mode: what an attacker running code in the
 * daemon would reach for first. */
static const char *const sandbox_deadly[] = {
    "execve", "execveat", "ptrace", "process_vm_writev", "mount", "umount2",
    "pivot_root", "chroot", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "bpf", "keyctl", "add_key",
    "request_key", "userfaultfd", "perf_event_open", "setuid", "setgid",
    "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "unshare", "setns", "open_by_handle_at", "reboot", "swapon",
    "swapoff", "iopl", "ioperm", "personality", "fork", "vfork",
};

/* ioctl requests: block devices (size, sector size, discard, zeroes, as
 * file.c asks) and the kernel NBD device (NBD_SET_SOCK ... NBD_SET_FLAGS
 * are _IO(0xab, 0..10)); FIONREAD/FIONBIO/TCGETS for glibc and
 * libevent. */
static const unsigned long sandbox_ioctls[] = {
    0x80081272,               /* BLKGETSIZE64 */
    0x1268,                   /* BLKSSZGET */
    0x127b,                   /* BLKPBSZGET */
    0x1277,                   /* BLKDISCARD */
    0x127f,                   /* BLKZEROOUT */
    0x125e,                   /* BLKROGET */
    0x1260,                   /* BLKGETSIZE */
    0x125f,                   /* BLKRRPART: partitions of a kernel NBD
                               * device once it is bound */
    0x80086601,               /* FS_IOC_GETFLAGS, */
    0x40086602,               /* FS_IOC_SETFLAGS: blockdev-create's nocow */
    0x801c581f,               /* FS_IOC_FSGETXATTR, */
    0x401c5820,               /* FS_IOC_FSSETXATTR: its extent size hint */
    0x541b,                   /* FIONREAD */
    0x5421,                   /* FIONBIO */
    0x5401,                   /* TCGETS: isatty() */
    0x5411,                   /* SIOCOUTQ: a spliced qcow2 reply read by
                               * the peer (nbd/conn.c) */
};

/* socket() domains: unix (QMP, NBD), IPv4/IPv6 (NBD over TCP, the nbd
 * driver), netlink (the kernel NBD device's generic netlink). */
static const int sandbox_domains[] = {
    AF_UNIX, AF_INET, AF_INET6, AF_NETLINK,
};

bool sandbox_parse_mode(const char *s, SandboxMode *mode, Error **errp)
{
    if (strcmp(s, "on") == 0) {
        *mode = SANDBOX_ON;
    } else if (strcmp(s, "off") == 0) {
        *mode = SANDBOX_OFF;
    } else if (strcmp(s, "log") == 0) {
        *mode = SANDBOX_LOG;
    } else {
        error_setg(errp, "--sandbox expects 'on', 'off' or 'log', not '%s'",
                   s);
        return false;
    }
    return true;
}

/* Add a rule for a call by name; a name this architecture lacks is
 * skipped.  0 or -errno. */
static int sandbox_rule(scmp_filter_ctx ctx, uint32_t action,
                        const char *name)
{
    int nr = seccomp_syscall_resolve_name(name);

    if (nr == __NR_SCMP_ERROR) {
        return 0;
    }
    return seccomp_rule_add(ctx, action, nr, 0);
}

static int sandbox_rules(scmp_filter_ctx ctx, uint32_t dflt)
{
    uint32_t kill = SCMP_ACT_KILL_PROCESS;
    int ret = 0;

    for (size_t i = 0; i < ARRAY_SIZE(sandbox_allowed) && ret == 0; i++) {
        ret = sandbox_rule(ctx, SCMP_ACT_ALLOW, sandbox_allowed[i]);
    }
    /* The default already kills (libseccomp refuses a rule that repeats
     * the default action). */
    for (size_t i = 0; i < ARRAY_SIZE(sandbox_deadly) && ret == 0 &&
                       dflt != kill; i++) {
#ifdef SANDBOX_SANITIZER
        if (strcmp(sandbox_deadly[i], "ptrace") == 0) {
            continue;
        }
#endif
        ret = sandbox_rule(ctx, kill, sandbox_deadly[i]);
    }
    for (size_t i = 0; i < ARRAY_SIZE(sandbox_ioctls) && ret == 0; i++) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                               SCMP_A1(SCMP_CMP_EQ, sandbox_ioctls[i]));
    }
    if (ret == 0) {
        /* the kernel NBD device: _IO(0xab, 0..15) */
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                               SCMP_A1(SCMP_CMP_MASKED_EQ, 0xfffffff0u,
                                       0xab00));
    }
    for (size_t i = 0; i < ARRAY_SIZE(sandbox_domains) && ret == 0; i++) {
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                               SCMP_A0(SCMP_CMP_EQ,
                                       (scmp_datum_t)sandbox_domains[i]));
    }
    if (ret == 0) {
        /* thread names (pthread_setname_np) and nothing else of prctl */
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
                               SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
    }
    return ret;
}

bool sandbox_install(const SandboxConfig *cfg, Error **errp)
{
    scmp_filter_ctx ctx;
    uint32_t dflt;
    int ret;

    if (cfg->mode == SANDBOX_OFF) {
        return true;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        error_setg_errno(errp, errno, "Could not set PR_SET_NO_NEW_PRIVS");
        return false;
    }
    dflt = cfg->mode == SANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
    ctx = seccomp_init(dflt);
    if (ctx == NULL) {
        error_setg(errp, "Could not create the seccomp filter");
        return false;
    }
    /* Every thread, those already running too (the worker pool). */
    ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (ret == 0) {
        ret = sandbox_rules(ctx, dflt);
    }
    if (ret == 0) {
        ret = seccomp_load(ctx);
    }
    seccomp_release(ctx);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not install the seccomp sandbox");
        return false;
    }
    if (cfg->mode == SANDBOX_LOG) {
        log_warn("sandbox: seccomp filter installed in log mode: unlisted "
                 "system calls are only logged (dmesg)");
    } else {
        log_debug("sandbox: seccomp filter installed");
    }
    return true;
}

/* A user or group: a name, or a number. */
static bool runas_number(const char *s, unsigned long *out)
{
    char *end;

    if (*s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    *out = strtoul(s, &end, 10);
    return errno == 0 && *end == '\0';
}

bool runas_parse(const char *spec, RunAs *ra, Error **errp)
{
    CLEANUP_FREE char *user = xstrdup(spec);
    char *group = strchr(user, ':');
    struct passwd *pw;
    unsigned long n;

    memset(ra, 0, sizeof(*ra));
    if (group != NULL) {
        *group++ = '\0';
    }
    pw = runas_number(user, &n) ? getpwuid((uid_t)n) : getpwnam(user);
    if (pw == NULL) {
        error_setg(errp, "--runas: user '%s' not found", user);
        return false;
    }
    ra->uid = pw->pw_uid;
    ra->gid = pw->pw_gid;
    ra->user = xstrdup(pw->pw_name);
    if (group != NULL) {
        struct group *gr = runas_number(group, &n) ? getgrgid((gid_t)n)
                                                   : getgrnam(group);
        if (gr == NULL) {
            error_setg(errp, "--runas: group '%s' not found", group);
            runas_free(ra);
            return false;
        }
        ra->gid = gr->gr_gid;
    }
    return true;
}

bool runas_apply(const RunAs *ra, Error **errp)
{
    if (ra == NULL || ra->user == NULL) {
        return true;
    }
    if (initgroups(ra->user, ra->gid) != 0) {
        error_setg_errno(errp, errno, "--runas: could not set the groups "
                         "of '%s'", ra->user);
        return false;
    }
    if (setresgid(ra->gid, ra->gid, ra->gid) != 0) {
        error_setg_errno(errp, errno, "--runas: could not set group %u",
                         (unsigned)ra->gid);
        return false;
    }
    if (setresuid(ra->uid, ra->uid, ra->uid) != 0) {
        error_setg_errno(errp, errno, "--runas: could not set user %u",
                         (unsigned)ra->uid);
        return false;
    }
    /* For good: a root that can come back has not dropped anything. */
    if (ra->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        error_setg(errp, "--runas: could regain root after dropping it");
        return false;
    }
    log_info("running as user %u, group %u", (unsigned)ra->uid,
             (unsigned)ra->gid);
    return true;
}

void runas_free(RunAs *ra)
{
    free(ra->user);
    memset(ra, 0, sizeof(*ra));
}
