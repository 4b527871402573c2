/* blockd-nbd.c - a drop-in qemu-nbd on blockd's engine.
 *
 * qemu-nbd's command line becomes a QMP script (daemon/qnbd.h) that
 * runs in-process through qmp_execute(), as blockd's --blockdev and
 * --export do; then the one-shot rules: the process exits when the
 * last client that reached transmission leaves (unless -t), and at
 * most -e clients are connected at once (nbd-server-start's
 * max-connections: the listener pauses when full).
 *
 * --fork as qemu-nbd: the parent copies what the child writes on
 * stderr until the child runs (listening, pid file written) and exits 1
 * if anything arrived, else 0; a child that dies first fails it too.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "config.h"
#include "crypto/tls.h"
#include "daemon/daemon.h"
#include "daemon/qnbd.h"
#include "nbd/server.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/trace.h"
#include "util/util.h"

typedef struct QnbdRun {
    Daemon *d;
    const QnbdOptions *o;
    int ready_fd;               /* --fork: tell the parent we run, or -1 */
} QnbdRun;

static void on_signal(void *opaque)
{
    QnbdRun *r = opaque;

    daemon_request_quit(r->d, NULL);
}

/* qemu-nbd's nbd_client_closed: the last client that negotiated ends
 * the server, unless -t. */
static void on_client_closed(void *opaque, bool negotiated,
                             unsigned remaining)
{
    QnbdRun *r = opaque;

    if (negotiated && remaining == 0 && !r->o->persistent) {
        daemon_request_quit(r->d, NULL);
    }
}

/* --fork: returns in the child (stderr goes to the parent until
 * fork_done); the parent never returns. */
static void fork_start(QnbdRun *r)
{
    int errp[2], readyp[2];
    pid_t pid;

    if (pipe2(errp, O_CLOEXEC) < 0 || pipe2(readyp, O_CLOEXEC) < 0) {
        qnbd_report(r->o, "Error setting up communication pipe: %s",
                    strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        qnbd_report(r->o, "Failed to fork: %s", strerror(errno));
        exit(1);
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);

        close(errp[0]);
        close(readyp[0]);
        setsid();
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
            close(null);
        }
        dup2(errp[1], STDERR_FILENO);
        close(errp[1]);
        r->ready_fd = readyp[1];
        return;
    }
    close(errp[1]);
    close(readyp[1]);
    {
        char buf[1024];
        bool errors = false;
        ssize_t n;

        while ((n = read(errp[0], buf, sizeof(buf))) != 0) {
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                qnbd_report(r->o, "Cannot read from daemon: %s",
                            strerror(errno));
                exit(1);
            }
            errors = true;
            if (write_full(STDERR_FILENO, buf, (size_t)n) < 0) {
                exit(1);
            }
        }
        /* Closed: the child runs (it said so) or died. */
        do {
            n = read(readyp[0], buf, 1);
        } while (n < 0 && errno == EINTR);
        exit(n == 1 ? errors : 1);
    }
}

static void fork_done(QnbdRun *r)
{
    char ok = 0;

    if (r->ready_fd < 0) {
        return;
    }
    if (write(r->ready_fd, &ok, 1) != 1) {
        /* the parent is gone */
    }
    close(r->ready_fd);
    r->ready_fd = -1;
    /* Closing the pipe lets the parent go; from now on, as qemu-nbd's
     * daemon, nothing is printed. */
    {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

        if (null >= 0) {
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
}

/* As qemu_write_pidfile: locked, so that two servers do not share one;
 * the descriptor stays open for the life of the process. */
static bool write_pid_file(const char *path, Error **errp)
{
    const char *what;
    int r = pidfile_write(path, &what);

    if (r < 0) {
        error_setg_errno(errp, -r, "%s", what);
        return false;
    }
    return true;
}

static bool run_overlay_step(Daemon *d, const QnbdCmd *c, Error **errp)
{
    json_object *v;
    const char *get[4] = { NULL };
    static const char *const keys[4] = {
        "filename", "backing", "backing-file", "backing-fmt",
    };
    BlockNode *bs;
    int64_t size;

    for (int i = 0; i < 4; i++) {
        if (json_object_object_get_ex(c->args, keys[i], &v)) {
            get[i] = json_object_get_string(v);
        }
    }
    bs = blk_lookup_node(d->graph, get[1], errp);
    if (bs == NULL) {
        return false;
    }
    size = blk_getlength(bs);
    if (size < 0) {
        error_setg_errno(errp, (int)-size, "Could not get the size of "
                         "'%s'", get[1]);
        return false;
    }
    return qnbd_overlay_create(get[0], (uint64_t)size, get[2], get[3], errp);
}

/* Run one command of the script. */
static bool run_cmd(QnbdRun *r, const QnbdCmd *c, Error **errp)
{
    Daemon *d = r->d;
    QmpCtx ctx = d->qmp;

    if (qnbd_script_is_overlay(c)) {
        return run_overlay_step(d, c, errp);
    }
    if (strcmp(c->name, "nbd-server-start") == 0 &&
        r->o->tls_creds != NULL &&
        !object_get_tls_creds(d->objects, r->o->tls_creds,
                              TLS_ENDPOINT_SERVER, errp)) {
        /* qemu-nbd looks the credentials up before listening. */
        error_prepend(errp, "Failed to get TLS creds: ");
        return false;
    }
    return qmp_execute(&ctx, c->name, c->args, 0, NULL, errp);
}

/* QEMU's words: scripts grep for them. */
static void warn_probed_raw(const char *path)
{
    fprintf(stderr,
"WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
"         Automatically detecting the format is dangerous for raw images, "
"write operations on block 0 will be restricted.\n"
"         Specify the 'raw' format explicitly to remove the restrictions.\n",
            path);
}

/* The node was opened from a probed raw image: warn, and guard its
 * first sector as QEMU does (a write that would make it probe as
 * another format fails), with QEMU's 512-byte request alignment when
 * the size allows it.  (QEMU counts sizes in sectors and exports a
 * 1000-byte file as 1024 bytes; blockd exports the file's size, which
 * an alignment of 512 would not divide, and the export would be
 * refused: qemu-iotests 241.) */
static void mark_probed_raw(QnbdRun *r, const QnbdScript *s)
{
    BlockNode *bs = blk_lookup_node(r->d->graph, s->probed_raw_node, NULL);

    warn_probed_raw(s->probed_raw_path);
    if (bs != NULL) {
        bs->probed_raw = true;
        if (bs->request_alignment < 512 && blk_getlength(bs) % 512 == 0) {
            bs->request_alignment = 512;
        }
    }
}

/* Run the script on d; errors say what qemu-nbd says. */
static bool run_script(QnbdRun *r, const QnbdScript *s, Error **errp)
{
    const QnbdOptions *o = r->o;
    bool load_snapshot = o->sn_id || o->sn_name || o->sn_id_or_name;

    for (size_t i = 0; i < s->n; i++) {
        const QnbdCmd *c = &s->cmds[i];
        Error *err = NULL;

        if (run_cmd(r, c, &err)) {
            if (s->probed_raw_node != NULL &&
                strcmp(c->name, "blockdev-add") == 0 &&
                strcmp(json_object_get_string(json_object_object_get(
                           c->args, "node-name")),
                       s->probed_raw_node) == 0) {
                mark_probed_raw(r, s);
            }
            continue;
        }
        if (c->error_prefix != NULL && load_snapshot &&
            strstr(error_get_pretty(err), "snapshot '") != NULL) {
            error_prepend(&err, "Failed to load snapshot: ");
        } else if (c->error_prefix != NULL) {
            error_prepend(&err, "%s '%s': ", c->error_prefix, o->filename);
        }
        error_propagate(errp, err);
        return false;
    }
    return true;
}

static int serve(QnbdRun *r)
{
    const QnbdOptions *o = r->o;
    QnbdScript s = { 0 };
    Error *err = NULL;
    int status = 1;

    r->d = daemon_new(DAEMON_JOB_NICE, &err);
    if (r->d == NULL) {
        goto out;
    }
    if (!blk_graph_set_backing_roots(r->d->graph, o->backing_roots,
                                     o->nbacking_roots, &err)) {
        goto out;
    }
    r->d->nbd.client_closed = on_client_closed;
    r->d->nbd.client_closed_opaque = r;
    loop_signal(r->d->loop, SIGTERM, on_signal, r);
    loop_signal(r->d->loop, SIGINT, on_signal, r);
    loop_signal(r->d->loop, SIGHUP, on_signal, r);

    if (!qnbd_build_script(o, true, &s, &err) || !run_script(r, &s, &err)) {
        goto out;
    }
    /* The overlay stays open; nobody else needs its name. */
    if (s.overlay != NULL) {
        unlink(s.overlay);
        free(s.overlay);
        s.overlay = NULL;
    }
    if (o->device != NULL &&
        !qnbd_device_connect(o, &r->d->qmp, o->export_name, &err)) {
        goto out;
    }
    if (o->pid_file != NULL && !write_pid_file(o->pid_file, &err)) {
        goto out;
    }
    /* Start-up is over: from here only what serving needs (sandbox.h). */
    if (!sandbox_install(&(SandboxConfig) { .mode = o->sandbox }, &err)) {
        goto out;
    }
    fork_done(r);
    status = loop_run(r->d->loop) == 0 ? 0 : 1;

out:
    if (err != NULL) {
        error_report_err(o->prog, err);
        status = 1;
    }
    if (s.overlay != NULL) {
        unlink(s.overlay);
    }
    qnbd_script_free(&s);
    daemon_free(r->d);
    r->d = NULL;
    return status;
}

int main(int argc, char **argv)
{
    QnbdOptions o;
    QnbdRun r = { .o = &o, .ready_fd = -1 };
    Error *err = NULL;
    int status;

    /* Before we open anything: what is open now was handed to us (the
     * socket of systemd's socket activation). */
    sock_inherited_scan();
    status = qnbd_parse(&o, argc, argv);
    if (status == 0 && o.action != QNBD_TRACE_HELP) {
        status = qnbd_check(&o);
    }
    if (status != 0) {
        goto done;
    }
    switch (o.action) {
    case QNBD_HELP:
        qnbd_usage(&o);
        goto done;
    case QNBD_TRACE_HELP:
        goto done;
    case QNBD_VERSION:
        printf("%s %s (blockd)\n"
               "A qemu-nbd compatible command on blockd's engine.\n",
               o.prog, BLOCKD_VERSION);
        goto done;
    default:
        break;
    }
    /* qemu-nbd -v prints nothing more while serving (scripts and
     * qemu-iotests compare its output); -T turns on trace points
     * (util/trace.h), written to -T file= when given. */
    log_set_level(LOG_LEVEL_WARN);
    if (o.trace_file != NULL && !trace_set_output(o.trace_file, &err)) {
        error_report_err(o.prog, err);
        err = NULL;
        status = 1;
        goto done;
    }
    signal(SIGPIPE, SIG_IGN);

    if (o.action == QNBD_LIST) {
        status = qnbd_list(&o);
        goto done;
    }
    if (o.action == QNBD_DISCONNECT) {
        status = qnbd_device_disconnect(&o);
        goto done;
    }
    if (o.image_opts && o.format != NULL) {
        qnbd_report(&o, "--image-opts and -f are mutually exclusive");
        status = 1;
        goto done;
    }
    if (o.print_qmp) {
        QnbdScript s;

        if (!qnbd_build_script(&o, false, &s, &err)) {
            error_report_err(o.prog, err);
            status = 1;
        } else {
            qnbd_script_print(&s, &o, stdout);
        }
        qnbd_script_free(&s);
        goto done;
    }
    if (o.fork_process || (o.device != NULL && !o.verbose)) {
        fork_start(&r);
    }
    status = serve(&r);
done:
    qnbd_options_free(&o);
    return status;
}
