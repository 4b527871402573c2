/* options.h - blockd's command line, qemu-storage-daemon compatible.
 *
 * Options that create things (--chardev, --monitor, --qmp, --blockdev,
 * --object, --nbd-server, --export) are kept in command-line order and
 * carried out in that order once the daemon exists; each of the last four
 * is the QMP command of the same name, given as JSON ('{...}') or as
 * QEMU's key=value,... syntax with dotted keys.
 */
#ifndef BLOCKD_DAEMON_OPTIONS_H
#define BLOCKD_DAEMON_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/sandbox.h"
#include "util/error.h"

typedef enum OptionKind {
    OPT_CHARDEV,
    OPT_MONITOR,
    OPT_QMP,
    OPT_BLOCKDEV,
    OPT_OBJECT,
    OPT_NBD_SERVER,
    OPT_EXPORT,
    OPT_CONFIG,               /* --config FILE: QMP commands, one a line */
} OptionKind;

typedef struct OptionAction {
    OptionKind kind;
    char *value;              /* the option's argument, as given */
} OptionAction;

typedef struct Options {
    OptionAction *actions;    /* in command-line order */
    size_t nactions;
    char *pidfile;            /* NULL: none */
    char *metrics;            /* --metrics unix:PATH|tcp:HOST:PORT */
    char *log_format;         /* --log-format text|journal|json, or NULL:
                               * journal when stderr is it, else text */
    /* --backing-root DIR, repeatable: the only directories backing files
     * named in image headers may come from (blk_graph_set_backing_roots;
     * blockd-nbd takes the same option).  Empty: anywhere. */
    char **backing_roots;
    size_t nbacking_roots;
    bool daemonize;
    SandboxMode sandbox;      /* --sandbox on|off|log; default on */
    char *runas;              /* --runas USER[:GROUP]; NULL: stay */
    int job_nice;             /* --job-nice N: block jobs copy N (0..19)
                               * nice steps below the daemon; default
                               * DAEMON_JOB_NICE */
    bool sandbox_selftest;    /* --x-sandbox-selftest: test only */
    bool help, version;
    bool verbose;
    bool defaults;            /* no options at all: the embedded default */
} Options;

/* Parse argv.  false with errp set on a bad option. */
bool options_parse(Options *o, int argc, char **argv, Error **errp);
void options_free(Options *o);
/* The QMP command an action runs ("blockdev-add", ...); NULL for
 * chardev/monitor/qmp. */
const char *option_command(OptionKind kind);
const char *option_name(OptionKind kind);
void options_usage(const char *prog);

#endif
