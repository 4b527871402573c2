/* sandbox.h - the seccomp sandbox and --runas: what a daemon may still
 * do once start-up is over.
 *
 * Call order, in a main(): parse options; do everything the command
 * line asks (sockets bound, devices opened, --blockdev run, pidfile
 * written); then runas_apply() (needs setuid/setgid, which the filter
 * forbids) and last sandbox_install().  Both are one-way.
 *
 * The filter is an allow-list: every system call the daemon makes after
 * start-up, grouped by subsystem in sandbox.c with why.  Anything else
 * (execve, ptrace, mount, module loading, kexec, bpf, keyctl,
 * userfaultfd, perf_event_open, setuid, ...) kills the whole process
 * (SECCOMP_RET_KILL_PROCESS); PR_SET_NO_NEW_PRIVS is set first.
 */
#ifndef BLOCKD_DAEMON_SANDBOX_H
#define BLOCKD_DAEMON_SANDBOX_H

#include <stdbool.h>
#include <sys/types.h>

#include "util/error.h"

typedef enum SandboxMode {
    SANDBOX_ON,               /* default: forbidden calls kill */
    SANDBOX_OFF,              /* no filter */
    SANDBOX_LOG,              /* debugging: forbidden calls are logged by
                               * the kernel (SECCOMP_RET_LOG, dmesg's
                               * "audit: type=1326 ... syscall=N") and
                               * go through; the dangerous ones listed in
                               * sandbox.c still kill */
} SandboxMode;

typedef struct SandboxConfig {
    SandboxMode mode;
} SandboxConfig;

/* Parse "on", "off" or "log" (an --sandbox argument). */
bool sandbox_parse_mode(const char *s, SandboxMode *mode, Error **errp);
/* Install the filter for the calling process (all threads: it is
 * synchronised to those already running).  SANDBOX_OFF does nothing.
 * Fails (nothing installed) when the kernel refuses. */
bool sandbox_install(const SandboxConfig *cfg, Error **errp);

/* --runas USER[:GROUP]: the ids to become.  Resolved by name (or a
 * number) at parse time, before anything else runs. */
typedef struct RunAs {
    uid_t uid;
    gid_t gid;
    char *user;               /* for initgroups(); owned */
} RunAs;

/* Parse "USER[:GROUP]" (GROUP defaults to USER's primary group). */
bool runas_parse(const char *spec, RunAs *ra, Error **errp);
/* Drop to ra's user, group and that user's supplementary groups, for
 * good (root cannot come back).  NULL ra does nothing. */
bool runas_apply(const RunAs *ra, Error **errp);
void runas_free(RunAs *ra);

#endif
