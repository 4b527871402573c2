/* main.c - the blockd daemon: options, start-up, the loop, shut-down. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockdev/block.h"
#include "config.h"
#include "daemon/daemon.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "daemon/options.h"
#include "nbd/server.h"
#include "qmp/monitor.h"
#include "qmp/qmp.h"
#include "qapi-types.h"
#include "util/cleanup.h"
#include "util/keyval.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/util.h"

typedef struct StartState {
    ChardevSpec **chardevs;   /* --chardev specs by id, until used */
    size_t nchardevs;
    char *pidfile;            /* absolute path we created, or NULL */
    int notify_fd;            /* --daemonize: pipe to the waiting parent */
    char *scratch;            /* the defaults' scratch image, removed */
} StartState;

static void on_signal(void *opaque)
{
    daemon_request_quit(opaque, NULL);
}

static ChardevSpec *find_chardev(StartState *st, const char *id)
{
    for (size_t i = 0; i < st->nchardevs; i++) {
        if (st->chardevs[i] != NULL && strcmp(st->chardevs[i]->id, id) == 0) {
            return st->chardevs[i];
        }
    }
    return NULL;
}

static bool add_chardev(StartState *st, const char *value, Error **errp)
{
    ChardevSpec *spec = chardev_spec_parse(value, errp);

    if (spec == NULL) {
        return false;
    }
    if (find_chardev(st, spec->id) != NULL) {
        error_setg(errp, "attempt to add duplicate chardev '%s'", spec->id);
        chardev_spec_free(spec);
        return false;
    }
    st->chardevs = xrealloc(st->chardevs,
                            (st->nchardevs + 1) * sizeof(*st->chardevs));
    st->chardevs[st->nchardevs++] = spec;
    return true;
}

/* --monitor [chardev=]ID[,mode=control][,pretty=on|off] */
static bool add_monitor(Daemon *d, StartState *st, const char *value,
                        Error **errp)
{
    CLEANUP_FREE char *copy = xstrdup(value);
    char *save = NULL, *item;
    const char *id = NULL;
    bool pretty = false, first = true;
    ChardevSpec *spec;

    for (item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save), first = false) {
        char *eq = strchr(item, '=');
        if (eq == NULL && first) {
            id = item;
            continue;
        }
        if (eq == NULL) {
            error_setg(errp, "--monitor: option '%s' needs a value", item);
            return false;
        }
        *eq = '\0';
        if (strcmp(item, "chardev") == 0) {
            id = eq + 1;
        } else if (strcmp(item, "mode") == 0) {
            if (strcmp(eq + 1, "control") != 0) {
                error_setg(errp, "Only QMP (mode=control) monitors are "
                           "supported");
                return false;
            }
        } else if (strcmp(item, "pretty") == 0) {
            if (!parse_bool(eq + 1, &pretty)) {
                error_setg(errp, "Parameter 'pretty' expects 'on' or "
                           "'off'");
                return false;
            }
        } else {
            error_setg(errp, "Parameter '%s' is unexpected", item);
            return false;
        }
    }
    if (id == NULL) {
        error_setg(errp, "Parameter 'chardev' is missing");
        return false;
    }
    spec = find_chardev(st, id);
    if (spec == NULL) {
        error_setg(errp, "chardev \"%s\" not found", id);
        return false;
    }
    return monitor_add(d->monitors, spec, pretty, errp);
}

/* QSD's --nbd-server takes NbdServerOptions, whose addr is a flat
 * SocketAddress; nbd-server-start wants SocketAddressLegacy, where the
 * members sit under "data".  Move them. */
static void nbd_server_legacy_addr(json_object *args)
{
    json_object *addr, *legacy, *data;

    if (!json_object_object_get_ex(args, "addr", &addr) ||
        !json_object_is_type(addr, json_type_object) ||
        json_object_object_get_ex(addr, "data", NULL)) {
        return;
    }
    legacy = json_object_new_object();
    data = json_object_new_object();
    json_object_object_foreach(addr, key, val) {
        json_object_object_add(strcmp(key, "type") == 0 ? legacy : data,
                               key, json_object_get(val));
    }
    json_object_object_add(legacy, "data", data);
    json_object_object_add(args, "addr", legacy);    /* drops the old one */
}

static bool run_command_option(Daemon *d, const OptionAction *a,
                               Error **errp)
{
    QmpCtx ctx = d->qmp;
    CLEANUP_JSON json_object *args = NULL;
    CLEANUP_JSON json_object *ret = NULL;
    unsigned flags = 0;

    if (a->value[0] == '{') {
        enum json_tokener_error jerr;
        args = json_tokener_parse_verbose(a->value, &jerr);
        if (args == NULL || !json_object_is_type(args, json_type_object)) {
            error_setg(errp, "%s: JSON parse error, %s", option_name(a->kind),
                       args == NULL ? json_tokener_error_desc(jerr)
                                    : "expected an object");
            return false;
        }
    } else {
        /* As qemu-storage-daemon: "--object secret,id=..." and "--export
         * nbd,id=..." name the type first, without its key. */
        const char *implied = a->kind == OPT_OBJECT ? "qom-type"
                              : a->kind == OPT_EXPORT ? "type" : NULL;
        args = keyval_parse(a->value, implied, errp);
        if (args == NULL) {
            error_prepend(errp, "%s: ", option_name(a->kind));
            return false;
        }
        flags = QAPI_PARSE_KEYVAL;
    }
    if (a->kind == OPT_NBD_SERVER) {
        nbd_server_legacy_addr(args);
    }
    return qmp_execute(&ctx, option_command(a->kind), args, flags, &ret,
                       errp);
}

/* --config FILE: one QMP command a line, {"execute": NAME, "arguments":
 * {...}}; blank lines and lines starting with '#' are skipped.  Each runs
 * as the command-line options do; the first failure stops start-up with
 * FILE:LINE in its message. */
static bool run_config(Daemon *d, const char *path, Error **errp)
{
    FILE *f = fopen(path, "re");
    CLEANUP_FREE char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    bool ok = true;

    if (f == NULL) {
        error_setg_errno(errp, errno, "--config: Could not open '%s'", path);
        return false;
    }
    while (ok && getline(&line, &cap, f) >= 0) {
        CLEANUP_JSON json_object *req = NULL;
        CLEANUP_JSON json_object *ret = NULL;
        json_object *name = NULL, *args = NULL;
        QmpCtx ctx = d->qmp;
        const char *p = line;

        lineno++;
        p += strspn(p, " \t\r\n");
        if (*p == '\0' || *p == '#') {
            continue;
        }
        req = json_tokener_parse(p);
        if (req == NULL || !json_object_is_type(req, json_type_object) ||
            !json_object_object_get_ex(req, "execute", &name) ||
            !json_object_is_type(name, json_type_string)) {
            error_setg(errp, "%s:%u: expected a QMP command, {\"execute\": "
                       "NAME, \"arguments\": {...}}", path, lineno);
            ok = false;
            break;
        }
        if (json_object_object_get_ex(req, "arguments", &args) &&
            !json_object_is_type(args, json_type_object)) {
            error_setg(errp, "%s:%u: \"arguments\" must be an object", path,
                       lineno);
            ok = false;
            break;
        }
        if (!qmp_execute(&ctx, json_object_get_string(name), args, 0, &ret,
                         errp)) {
            error_prepend(errp, "%s:%u: ", path, lineno);
            ok = false;
        }
    }
    if (ok && ferror(f)) {
        error_setg_errno(errp, errno, "--config: Could not read '%s'", path);
        ok = false;
    }
    fclose(f);
    return ok;
}

static bool run_action(Daemon *d, StartState *st, const OptionAction *a,
                       Error **errp)
{
    switch (a->kind) {
    case OPT_CONFIG:
        return run_config(d, a->value, errp);
    case OPT_CHARDEV:
        return add_chardev(st, a->value, errp);
    case OPT_MONITOR:
        return add_monitor(d, st, a->value, errp);
    case OPT_QMP: {
        ChardevSpec *spec = chardev_spec_parse_qmp(a->value, errp);
        bool ok = spec != NULL && monitor_add(d->monitors, spec, false, errp);
        chardev_spec_free(spec);
        return ok;
    }
    default:
        return run_command_option(d, a, errp);
    }
}

/* Write our PID to path and keep a lock on it, as QEMU does, so a second
 * instance with the same pidfile fails instead of overwriting it. */
static bool write_pidfile(StartState *st, const char *path, Error **errp)
{
    char abspath[PATH_MAX];
    const char *what;
    int r = pidfile_write(path, &what);

    if (r < 0) {
        if (strcmp(what, "Cannot lock pid file") == 0) {
            error_setg(errp, "Cannot lock pid file '%s': another blockd may "
                       "be using it", path);
        } else {
            error_setg_errno(errp, -r, "%s", what);
        }
        return false;
    }
    /* The descriptor stays open (and locked) for the life of the
     * process. */
    st->pidfile = xstrdup(realpath(path, abspath) ? abspath : path);
    return true;
}

/* --daemonize: fork now; the parent waits until the child reports that
 * every socket listens (status 0) or dies. */
static int daemonize_start(void)
{
    int fds[2];
    pid_t pid;
    char status;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        perror("blockd: pipe");
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("blockd: fork");
        exit(1);
    }
    if (pid > 0) {
        close(fds[1]);
        for (;;) {
            ssize_t n = read(fds[0], &status, 1);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            /* EOF without a byte: the child failed (it printed why). */
            _exit(n == 1 && status == 0 ? 0 : 1);
        }
    }
    close(fds[0]);
    setsid();
    return fds[1];
}

/* Every socket listens: stdin, stdout and stderr go to /dev/null, as
 * qemu-storage-daemon --daemonize (and qemu-nbd --fork) do; the log
 * goes on only where one was asked for, and a sanitizer build reports
 * to its log_path (ASAN_OPTIONS / UBSAN_OPTIONS), which tests set. */
static void daemonize_finish(int fd)
{
    char ok = 0;
    int null = open("/dev/null", O_RDWR);

    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) {
            close(null);
        }
    }
    if (chdir("/") < 0) {
        /* not fatal */
    }
    if (write(fd, &ok, 1) != 1) {
        /* the parent is gone; nothing to tell */
    }
    close(fd);
}

static const char *default_runtime_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");

    if (xdg != NULL && xdg[0] == '/') {
        snprintf(buf, len, "%s/blockd", xdg);
    } else {
        snprintf(buf, len, "/tmp/blockd-%u", (unsigned)getuid());
    }
    return buf;
}

/* blockctl beside our own executable (a build tree or an install), else
 * whatever is on PATH. */
static const char *blockctl_path(char *buf, size_t len)
{
    char self[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (n > 0) {
        self[n] = '\0';
        slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            if ((size_t)snprintf(buf, len, "%s/blockctl", self) < len &&
                access(buf, X_OK) == 0) {
                return buf;
            }
        }
    }
    return "blockctl";
}

/* Run one QMP command given as JSON text (for the built-in defaults). */
static bool run_json(Daemon *d, const char *name, const char *json,
                     Error **errp)
{
    QmpCtx ctx = d->qmp;
    CLEANUP_JSON json_object *args = json_tokener_parse(json);

    return qmp_execute(&ctx, name, args, 0, NULL, errp);
}

/* No options at all: a QMP socket in the runtime directory, and a 1 GiB
 * sparse scratch disk exported as "scratch" over NBD on a unix socket
 * and on 127.0.0.1:10809.  The scratch file is removed at exit. */
static bool setup_defaults(Daemon *d, StartState *st, Error **errp)
{
    char dir[PATH_MAX - 32], qmp[PATH_MAX], nbd[PATH_MAX], img[PATH_MAX];
    char ctl[PATH_MAX];
    CLEANUP_FREE char *spec = NULL, *json = NULL;
    CLEANUP_ERROR Error *tcp_err = NULL;
    OptionAction a = { .kind = OPT_QMP };
    int fd;

    default_runtime_dir(dir, sizeof(dir));
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        error_setg_errno(errp, errno, "Could not create '%s'", dir);
        return false;
    }
    snprintf(qmp, sizeof(qmp), "%s/qmp.sock", dir);
    snprintf(nbd, sizeof(nbd), "%s/nbd.sock", dir);
    snprintf(img, sizeof(img), "%s/scratch.img", dir);
    spec = xasprintf("unix:%s", qmp);
    a.value = spec;
    if (!run_action(d, st, &a, errp)) {
        return false;
    }

    fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 1ULL << 30) < 0) {
        error_setg_errno(errp, errno, "Could not create '%s'", img);
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    close(fd);
    st->scratch = xstrdup(img);

    /* discard=unmap: a client's trim gives the scratch file's space back
     * (and the export offers TRIM only where it does something). */
    json = xasprintf("{\"driver\": \"raw\", \"node-name\": \"scratch\", "
                     "\"discard\": \"unmap\", "
                     "\"file\": {\"driver\": \"file\", \"filename\": "
                     "\"%s\", \"discard\": \"unmap\"}}", img);
    if (!run_json(d, "blockdev-add", json, errp)) {
        return false;
    }
    free(json);
    json = xasprintf("{\"addr\": {\"type\": \"unix\", \"data\": "
                     "{\"path\": \"%s\"}}}", nbd);
    if (!run_json(d, "nbd-server-start", json, errp) ||
        !run_json(d, "block-export-add",
                  "{\"type\": \"nbd\", \"id\": \"scratch\", "
                  "\"node-name\": \"scratch\", \"name\": \"scratch\", "
                  "\"writable\": true, \"allocation-depth\": true}",
                  errp)) {
        return false;
    }
    /* QEMU's NBD server has one listener; the defaults add TCP beside
     * the unix socket.  A busy port is not fatal. */
    SockAddr tcp_addr = { .type = SOCK_ADDR_INET, .host = "127.0.0.1",
                          .port = "10809" };
    bool tcp = nbd_server_listen(d->nbd.server, &tcp_addr, &tcp_err);

    printf("blockd %s is running with its built-in defaults.\n"
           "  QMP:  %s\n"
           "  NBD:  export 'scratch' (1 GiB scratch disk, writable) on\n"
           "        nbd+unix:///scratch?socket=%s\n",
           BLOCKD_VERSION, qmp, nbd);
    if (tcp) {
        printf("        nbd://127.0.0.1:10809/scratch\n");
    } else {
        printf("        (not on TCP: %s)\n", tcp_err->msg);
    }
    printf("Try:\n"
           "  %s -s %s query-block-exports\n"
           "  nbdinfo 'nbd+unix:///scratch?socket=%s'\n"
           "Ctrl-C stops it.\n", blockctl_path(ctl, sizeof(ctl)), qmp, nbd);
    fflush(stdout);
    return true;
}

/* --x-sandbox-selftest: a call the sandbox forbids, on the loop once
 * it runs.  With the sandbox on the kernel kills the daemon here. */
static void sandbox_selftest(void *opaque)
{
    char *const argv[] = { (char *)"/bin/true", NULL };

    (void)opaque;
    log_warn("sandbox self-test: calling execve, which must be fatal");
    execve(argv[0], argv, environ);
    log_error("sandbox self-test: execve returned (%s)", strerror(errno));
}

int main(int argc, char **argv)
{
    Options o;
    StartState st = { .notify_fd = -1 };
    Error *err = NULL;
    Daemon *d = NULL;
    RunAs runas = { 0 };
    Metrics *metrics = NULL;
    int status = 1;

    /* Before we open anything: what is open now was handed to us
     * (addr.type=fd may use it, once). */
    sock_inherited_scan();
    /* ... and which of them a supervisor passed by socket activation. */
    sock_activation_scan();
    log_set_format(log_format_detect());
    if (!options_parse(&o, argc, argv, &err)) {
        error_report_err("blockd", err);
        fprintf(stderr, "Try 'blockd --help' for more information.\n");
        return 1;
    }
    if (o.help) {
        options_usage(argv[0]);
        options_free(&o);
        return 0;
    }
    if (o.version) {
        printf("blockd %s\n", BLOCKD_VERSION);
        options_free(&o);
        return 0;
    }
    if (o.verbose) {
        log_set_level(LOG_LEVEL_DEBUG);
    }
    if (o.log_format != NULL) {
        LogFormat fmt;

        if (!log_format_parse(o.log_format, &fmt)) {
            error_setg(&err, "--log-format: '%s' is not one of text, "
                       "journal, json", o.log_format);
            error_report_err("blockd", err);
            options_free(&o);
            return 1;
        }
        log_set_format(fmt);
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.daemonize) {
        st.notify_fd = daemonize_start();
    }

    d = daemon_new(o.job_nice, &err);
    if (d == NULL) {
        goto out;
    }
    if (!blk_graph_set_backing_roots(d->graph, o.backing_roots,
                                     o.nbacking_roots, &err)) {
        goto out;
    }
    loop_signal(d->loop, SIGTERM, on_signal, d);
    loop_signal(d->loop, SIGINT, on_signal, d);
    loop_signal(d->loop, SIGHUP, on_signal, d);

    if (o.defaults && !setup_defaults(d, &st, &err)) {
        goto out;
    }
    for (size_t i = 0; i < o.nactions; i++) {
        if (!run_action(d, &st, &o.actions[i], &err)) {
            goto out;
        }
    }
    if (o.metrics != NULL) {
        metrics = metrics_new(d->loop, &d->qmp, o.metrics, &err);
        if (metrics == NULL) {
            goto out;
        }
    }
    if (o.pidfile != NULL && !write_pidfile(&st, o.pidfile, &err)) {
        goto out;
    }
    /* Start-up is over: sockets bound, images open, pidfile written.
     * Drop root, then the system calls nobody needs from here on. */
    if (o.runas != NULL) {
        if (!runas_parse(o.runas, &runas, &err) ||
            !runas_apply(&runas, &err)) {
            goto out;
        }
    }
    if (!sandbox_install(&(SandboxConfig) { .mode = o.sandbox }, &err)) {
        goto out;
    }
    if (st.notify_fd >= 0) {
        daemonize_finish(st.notify_fd);
        st.notify_fd = -1;
    }
    if (o.sandbox_selftest) {
        loop_post(d->loop, sandbox_selftest, NULL);
    }
    /* systemd Type=notify: every socket listens now. */
    daemon_notify("READY=1");

    status = loop_run(d->loop) == 0 ? 0 : 1;
    daemon_notify("STOPPING=1");

out:
    if (err != NULL) {
        error_report_err("blockd", err);
        status = 1;
    }
    metrics_free(metrics);
    daemon_free(d);
    if (st.pidfile != NULL) {
        unlink(st.pidfile);
        free(st.pidfile);
    }
    if (st.scratch != NULL) {
        unlink(st.scratch);
        free(st.scratch);
    }
    for (size_t i = 0; i < st.nchardevs; i++) {
        chardev_spec_free(st.chardevs[i]);
    }
    free(st.chardevs);
    runas_free(&runas);
    options_free(&o);
    return status;
}
