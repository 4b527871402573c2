/* qnbd.h - blockd-nbd: qemu-nbd's command line turned into a QMP script.
 *
 *   argv ──qnbd_parse()──> QnbdOptions ──qnbd_check()──> (errors as
 *   qemu-nbd 7.2 prints them) ──qnbd_build_script()──> QnbdScript:
 *
 *     object-add ...            one per --object
 *     nbd-server-start          -k / -b -p / LISTEN_FDS, -e, TLS
 *     blockdev-add file node    FILE (or --image-opts)
 *     blockdev-add format node  -f or probed; -l snapshot; -r
 *     blockdev-add (overlay)    -s: a temporary qcow2 over the image
 *     blockdev-add raw window   -o
 *     block-export-add          -x -D -r -A -B, --cache's writethrough
 *
 * daemon/blockd-nbd.c runs the script in-process with qmp_execute()
 * (as blockd's --blockdev/--export) or prints it (--print-qmp), then
 * applies the one-shot rules (exit after the last client unless -t).
 * The listener comes before the image, as in qemu-nbd, so a busy port
 * is reported before a bad image.
 */
#ifndef BLOCKD_DAEMON_QNBD_H
#define BLOCKD_DAEMON_QNBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "daemon/sandbox.h"
#include "util/error.h"

/* What is left to do once parsing stopped without an error. */
typedef enum QnbdAction {
    QNBD_SERVE,                 /* serve FILE */
    QNBD_LIST,                  /* -L */
    QNBD_DISCONNECT,            /* -d DEV */
    QNBD_HELP,
    QNBD_VERSION,
    QNBD_TRACE_HELP,            /* -T help: the list is printed, exit 0 */
} QnbdAction;

typedef struct QnbdOptions {
    QnbdAction action;
    const char *prog;           /* basename of argv[0], for messages */
    const char *argv0;          /* as given, for "Try `...'" */
    char *filename;             /* FILE (or the --image-opts string) */
    char *port, *bind, *sockpath;
    uint64_t offset;            /* -o, 0 = none */
    bool image_opts;
    char *format;               /* -f; NULL: probe */
    bool read_only;
    bool alloc_depth;
    char **bitmaps;             /* -B, repeatable */
    size_t nbitmaps;
    bool snapshot;              /* -s */
    char *sn_id, *sn_name;      /* -l snapshot.id=,snapshot.name= */
    char *sn_id_or_name;        /* -l ID_OR_NAME */
    bool seen_cache, seen_aio, seen_discard;
    bool cache_direct, cache_no_flush, writethrough;
    char *cache_mode;           /* as given (-n: "none"); NULL: writeback */
    char *aio;                  /* NULL: threads */
    bool discard_unmap;
    char *detect_zeroes;        /* NULL: off */
    char *device;               /* -c DEV */
    bool disconnect;            /* -d */
    int shared;                 /* -e, default 1, 0 = unlimited */
    bool persistent;            /* -t */
    char *export_name;          /* -x; NULL until checked: then "" */
    char *description;          /* -D */
    bool list;                  /* -L */
    char **objects;             /* --object, in order */
    size_t nobjects;
    char *tls_creds, *tls_authz, *tls_hostname;
    bool fork_process;          /* --fork */
    char *pid_file;
    char *selinux_label;
    bool has_handshake_limit;
    uint32_t handshake_limit;   /* seconds, --handshake-limit */
    bool verbose;               /* -v: foreground with -c */
    char *trace_file;           /* -T file=: trace output; NULL: stderr */
    bool print_qmp;             /* --print-qmp */
    char **backing_roots;       /* --backing-root, repeatable */
    size_t nbacking_roots;
    unsigned socket_activation; /* LISTEN_FDS for us, 0: none */
    SandboxMode sandbox;        /* --sandbox, default on */
} QnbdOptions;

/* Parse argv with getopt_long as qemu-nbd does.  Returns 0 to go on,
 * or the exit status after printing qemu-nbd's message (getopt's own
 * for unknown options, then "PROG: Try `ARGV0 --help' for more
 * information.").  o is filled in either case (qnbd_options_free). */
int qnbd_parse(QnbdOptions *o, int argc, char **argv);

/* The checks qemu-nbd makes after parsing, in its order: list mode's
 * exclusions, the number of arguments, socket activation (reads and
 * unsets LISTEN_PID/LISTEN_FDS), TLS options, --selinux-label.
 * Returns 0 to go on or the exit status after printing the error. */
int qnbd_check(QnbdOptions *o);

void qnbd_options_free(QnbdOptions *o);
void qnbd_usage(const QnbdOptions *o);

/* Print a message as qemu's tools do: "PROG: MESSAGE". */
void qnbd_report(const QnbdOptions *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- the script -------------------------------------------------------- */

typedef struct QnbdCmd {
    const char *name;           /* "blockdev-add", ... (static) */
    json_object *args;          /* typed, normalized by the schema */
    const char *error_prefix;   /* prepended to its error, or NULL */
} QnbdCmd;

typedef struct QnbdScript {
    QnbdCmd *cmds;
    size_t n;
    char *export_node;          /* node-name the export serves */
    char *probed_raw_node;      /* probed as raw: guard sector 0; NULL */
    char *probed_raw_path;      /* ... the file, for the warning */
    char *overlay;              /* -s: the temporary qcow2 to remove */
    const char *format;         /* the image's: -f or probed (static or
                                 * the options'); NULL: --image-opts */
} QnbdScript;

/* Build the script for QNBD_SERVE.  With create_overlay (false for
 * --print-qmp) -s creates its temporary qcow2 file now (in $TMPDIR,
 * default /var/tmp), else names a placeholder.  false with errp set
 * (the message qemu-nbd prints) on a bad --object/--image-opts string
 * or a file it cannot probe. */
bool qnbd_build_script(const QnbdOptions *o, bool create_overlay,
                       QnbdScript *s, Error **errp);
void qnbd_script_free(QnbdScript *s);

/* The -s step is not a QMP command: the runner writes the overlay file
 * (args "filename", "backing": the node it goes over, "backing-file"
 * and "backing-fmt" for its header when known) once that node is open,
 * with qnbd_overlay_create(). */
bool qnbd_script_is_overlay(const QnbdCmd *c);
/* Write an empty qcow2 (v3, 64 KiB clusters) of size bytes (rounded up
 * to 512, as QEMU) at path, naming backing_file (may be NULL) of format
 * backing_fmt (may be NULL) in its header. */
bool qnbd_overlay_create(const char *path, uint64_t size,
                         const char *backing_file, const char *backing_fmt,
                         Error **errp);

/* --print-qmp: the script as QMP lines, a blank line, and the
 * equivalent blockd command line. */
void qnbd_script_print(const QnbdScript *s, const QnbdOptions *o, FILE *f);

/* -L (daemon/qnbd-list.c): returns the exit status. */
int qnbd_list(const QnbdOptions *o);

/* ---- the kernel device (-c / -d): daemon/qnbd-device.c ------------- */

/* The id of the one export the script adds. */
#define QNBD_EXPORT_ID "qemu-nbd-export"

/* -d DEV: disconnect the device; returns the exit status. */
int qnbd_device_disconnect(const QnbdOptions *o);
/* -c DEV: bind the export to the device once it is served (loop
 * thread, after the script ran); DEV is checked only then, as qemu-nbd
 * does, and errp says what qemu-nbd says.  qmp: the context to run commands on
 * (a QmpCtx *). */
bool qnbd_device_connect(const QnbdOptions *o, void *qmp,
                         const char *export_name, Error **errp);

#endif
