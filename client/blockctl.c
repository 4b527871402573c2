/* blockctl.c - the QMP client for people and scripts.
 *
 *     blockctl -s SOCK COMMAND [key=value ...]   one command
 *     blockctl -s SOCK --json '{"execute": ...}' one raw request
 *     blockctl -s SOCK -                         requests on stdin
 *     blockctl -s SOCK --events                  print events
 *     blockctl -s SOCK                           interactive shell
 *     blockctl list -s PATH | --host HOST ...    an NBD server's exports
 *
 * Exit status: 0 success, 1 an error reply or bad input, 2 the
 * connection failed (see usage()).  docs/blockctl.md is the manual.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>

#include "client/blockctl-opts.h"
#include "client/qmpc.h"
#include "config.h"
#include "nbd/client.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/util.h"
#include "util/vector.h"

enum {
    EXIT_REPLY_ERROR = BLOCKCTL_EXIT_REPLY_ERROR,
    EXIT_CONNECTION = BLOCKCTL_EXIT_CONNECTION,
};

typedef BlockctlOptions Options;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: blockctl [OPTIONS] -s SOCKET COMMAND [KEY=VALUE ...]\n"
"       blockctl [OPTIONS] -s SOCKET --json REQUEST\n"
"       blockctl [OPTIONS] -s SOCKET -\n"
"       blockctl [OPTIONS] -s SOCKET --events\n"
"       blockctl [OPTIONS] -s SOCKET\n"
"       blockctl [OPTIONS] -s SOCKET save-config FILE\n"
"       blockctl [OPTIONS] -s SOCKET job-wait ID\n"
"       blockctl list [-s PATH | --host HOST [--port PORT] | --fd N]\n"
"                     [--timeout SECS]\n"
"\n"
"Send QMP commands to blockd (or any QMP server) and print the replies.\n"
"\n"
"With COMMAND, run it and print its return value as JSON.  Arguments\n"
"are KEY=VALUE words:\n"
"  - dotted keys build nested objects:  file.driver=file file.filename=a.img\n"
"  - numeric keys build arrays:         bitmaps.0=b0 bitmaps.1=b1\n"
"  - values are converted by the command's schema: size=0x1000 is an\n"
"    integer, read-only=on a boolean (on/off/yes/no/true/false);\n"
"    members of type 'size' also take suffixes (64k, 1G)\n"
"  - a value starting with '{' or '[' is JSON, used as it is:\n"
"    'bitmaps=[\"b0\", \"b1\"]'\n"
"Commands blockctl does not know are sent with string values.\n"
"\n"
"With --json, REQUEST is a whole QMP request ('{\"execute\": ...}') or a\n"
"command name without arguments.  With '-', requests are read from\n"
"standard input, one a line (JSON or COMMAND KEY=VALUE...; blank lines\n"
"and '#' comments are skipped), and each reply is printed whole on one\n"
"line.  With no command at all, blockctl is an interactive shell with\n"
"line editing, history (~/.blockctl_history) and completion of command\n"
"and argument names; events are printed as they arrive.  End it with\n"
"Ctrl-D.\n"
"\n"
"'blockctl save-config FILE' writes the daemon's state as a file for\n"
"'blockd --config FILE' (x-blockd-save-config; FILE relative to here).\n"
"\n"
"'blockctl job-wait ID' follows the job ID (query-jobs and its events)\n"
"with a progress bar on standard error (done, rate, time left) until\n"
"it concludes, and exits 0 when it succeeded, 1 when it failed or was\n"
"cancelled (the error on standard error).  --wait does the same after\n"
"a command that starts a job (its job-id argument).\n"
"\n"
"'blockctl list' lists the exports of an NBD server (blockd, qemu-nbd,\n"
"nbdkit, nbd-server...) with their size, flags, block sizes and meta\n"
"contexts, printed as 'qemu-nbd -L' prints them.  Its options: -s,\n"
"--socket PATH (a unix socket), --host HOST and --port PORT (TCP, port\n"
"10809 by default), --fd N (an inherited, connected socket), -t,\n"
"--timeout SECS (each step; 30 by default).  It exits 0 on success and\n"
"1 on any failure, with 'blockctl: ERROR' on standard error.\n"
"\n"
"Options:\n"
"  -s, --socket ADDR    the QMP socket: PATH, unix:PATH or tcp:HOST:PORT\n"
"                       (default: $BLOCKCTL_SOCKET)\n"
"  -j, --json REQUEST   send one raw request\n"
"  -p, --pretty         indent the JSON printed\n"
"  -e, --events         after the command (if any), print events as they\n"
"                       arrive, one JSON object a line\n"
"  -t, --timeout SECS   stop waiting for events after SECS seconds (also\n"
"                       bounds connecting and the wait for the greeting;\n"
"                       30 seconds by default)\n"
"  -n, --count N        with --events: exit after N events\n"
"  -w, --wait           after a command with a job-id argument, wait for\n"
"                       the job as job-wait does\n"
"  -h, --help           show this help and exit\n"
"  -V, --version        show the version and exit\n"
"\n"
"Exit status:\n"
"  0  success\n"
"  1  the server answered with an error (printed as CLASS: desc on\n"
"     standard error), bad arguments, or --count events did not come\n"
"  2  the connection failed or broke, or the server is not a QMP server\n"
"\n"
"Examples:\n"
"  blockctl -s /tmp/qmp.sock query-version\n"
"  blockctl -s /tmp/qmp.sock blockdev-add driver=qcow2 node-name=d0 \\\n"
"      file.driver=file file.filename=disk.qcow2 read-only=on\n"
"  blockctl -s /tmp/qmp.sock --json '{\"execute\": \"query-commands\"}'\n"
"  blockctl -s /tmp/qmp.sock --events --count 1 --timeout 10\n"
"  blockctl -s /tmp/qmp.sock --wait blockdev-create job-id=c0 \\\n"
"      options.driver=file options.filename=new.img options.size=1G\n"
"  blockctl list -s /tmp/nbd.sock\n"
"  blockctl list --host 127.0.0.1 --port 10809\n");
}

static void print_json(json_object *obj, bool pretty)
{
    CLEANUP_FREE char *text = qjson_format(obj, pretty);

    printf("%s\n", text);
    fflush(stdout);
}

/* Print a reply the way command mode does: the return value on stdout,
 * or CLASS: desc on stderr.  Returns the exit status it deserves. */
static int print_reply_value(json_object *reply, bool pretty)
{
    const char *cls, *desc;
    json_object *ret;

    if (qmpc_reply_is_error(reply, &cls, &desc)) {
        fflush(stdout);
        fprintf(stderr, "%s: %s\n", cls, desc);
        return EXIT_REPLY_ERROR;
    }
    if (json_object_object_get_ex(reply, "return", &ret)) {
        print_json(ret, pretty);
    }
    return 0;
}

static int fail_connection(Error *err)
{
    fflush(stdout);
    fprintf(stderr, "blockctl: %s\n", error_get_pretty(err));
    error_free(err);
    return EXIT_CONNECTION;
}

static void print_queued_events(QmpClient *c, bool pretty)
{
    json_object *ev;

    while (qmpc_next_event(c, 0, &ev, NULL) == 1) {
        print_json(ev, pretty);
        json_object_put(ev);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --events: print events until --count, --timeout or end of stream. */
static int run_events(QmpClient *c, const Options *o)
{
    int64_t deadline = o->timeout_ms >= 0 ? now_ms() + o->timeout_ms : -1;
    unsigned got = 0;

    while (o->count == 0 || got < o->count) {
        CLEANUP_ERROR Error *err = NULL;
        json_object *ev;
        int left = -1;
        int rc;

        if (deadline >= 0) {
            int64_t now = now_ms();
            left = now >= deadline ? 0 : (int)MIN(deadline - now, INT_MAX);
        }
        rc = qmpc_next_event(c, left, &ev, &err);
        if (rc == 0) {
            break;
        }
        if (rc < 0) {
            if (qmpc_eof(c)) {
                break;
            }
            return fail_connection(TAKE_PTR(err));
        }
        print_json(ev, o->pretty);
        json_object_put(ev);
        got++;
    }
    if (o->count > 0 && got < o->count) {
        fprintf(stderr, "blockctl: %s after %u of %u events\n",
                qmpc_eof(c) ? "connection closed" : "timed out", got,
                o->count);
        return EXIT_REPLY_ERROR;
    }
    return 0;
}

/*
 * blockctl job-wait ID: follow a job to its end.
 */

#define JOB_WAIT_POLL_MS 500

typedef struct JobWait {
    const char *id;
    bool tty;                    /* stderr is a terminal: redraw a line */
    int64_t t0_ms, last_print_ms;
    int64_t cur0;                /* progress when we started */
    int64_t cur, total;
    char status[32];
    bool seen;                   /* the job was in query-jobs once */
    bool ended;                  /* concluded, or gone with a result */
    bool failed;
    char *error;                 /* why it failed; owned */
} JobWait;

static void job_wait_set_error(JobWait *w, const char *msg)
{
    free(w->error);
    w->error = xstrdup(msg);
    w->failed = true;
}

static void human_bytes(char *buf, size_t len, double v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    unsigned u = 0;

    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
}

/* One progress line: [####....]  45.0%  1.2 GiB/2.0 GiB  30.5 MiB/s
 * ETA 0:27  running */
static void job_wait_draw(JobWait *w, bool final)
{
    int64_t now = now_ms();
    double secs = (double)(now - w->t0_ms) / 1000.0;
    double frac = w->total > 0 ? (double)w->cur / (double)w->total : 0;
    double rate = secs > 0 ? (double)(w->cur - w->cur0) / secs : 0;
    char bar[31], done[32], total[32], speed[32], eta[32] = "--:--";
    int fill;

    if (!final && !w->tty && now - w->last_print_ms < 1000) {
        return;
    }
    w->last_print_ms = now;
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    fill = (int)(frac * 30);
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(30 - fill));
    bar[30] = '\0';
    human_bytes(done, sizeof(done), (double)w->cur);
    human_bytes(total, sizeof(total), (double)w->total);
    human_bytes(speed, sizeof(speed), rate);
    if (rate > 0 && w->total >= w->cur) {
        int64_t left = (int64_t)((double)(w->total - w->cur) / rate);

        snprintf(eta, sizeof(eta), "%" PRId64 ":%02" PRId64, left / 60,
                 left % 60);
    }
    fprintf(stderr, "%s%s: [%s] %5.1f%%  %s/%s  %s/s  ETA %s  %s%s",
            w->tty ? "\r" : "", w->id, bar, frac * 100, done, total, speed,
            eta, w->status, w->tty ? "\033[K" : "\n");
    if (final && w->tty) {
        fputc('\n', stderr);
    }
    fflush(stderr);
}

/* An event about the job: its end when it is dismissed at once. */
static void job_wait_event(JobWait *w, json_object *ev)
{
    const char *name = json_object_get_string(json_object_object_get(ev,
                                                                     "event"));
    json_object *data = json_object_object_get(ev, "data");
    json_object *dev = json_object_object_get(data, "device");
    json_object *e;

    if (dev == NULL || strcmp(json_object_get_string(dev), w->id) != 0) {
        return;
    }
    if (strcmp(name, "BLOCK_JOB_CANCELLED") == 0) {
        job_wait_set_error(w, "cancelled");
    } else if (strcmp(name, "BLOCK_JOB_COMPLETED") == 0 &&
               (e = json_object_object_get(data, "error")) != NULL) {
        job_wait_set_error(w, json_object_get_string(e));
    }
}

/* query-jobs: update w from the job's entry.  False on a connection
 * failure (*status set). */
static bool job_wait_query(QmpClient *c, JobWait *w, int *status)
{
    CLEANUP_JSON json_object *reply = NULL;
    Error *err = NULL;
    json_object *list, *job = NULL;
    const char *cls, *desc;

    if (!qmpc_execute(c, "query-jobs", NULL, &reply, &err)) {
        *status = fail_connection(err);
        return false;
    }
    if (qmpc_reply_is_error(reply, &cls, &desc)) {
        fprintf(stderr, "blockctl: %s: %s\n", cls, desc);
        *status = EXIT_REPLY_ERROR;
        return false;
    }
    list = json_object_object_get(reply, "return");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *j = json_object_array_get_idx(list, i);
        json_object *id = json_object_object_get(j, "id");

        if (id != NULL && strcmp(json_object_get_string(id), w->id) == 0) {
            job = j;
        }
    }
    if (job == NULL) {
        if (!w->seen) {
            fprintf(stderr, "blockctl: Job '%s' not found\n", w->id);
            *status = EXIT_REPLY_ERROR;
            return false;
        }
        /* Dismissed (auto-dismiss): its events (queued before this
         * reply) tell the result. */
        json_object *ev;

        while (qmpc_next_event(c, 0, &ev, NULL) == 1) {
            job_wait_event(w, ev);
            json_object_put(ev);
        }
        snprintf(w->status, sizeof(w->status), "%s",
                 w->failed ? "failed" : "done");
        w->ended = true;
        return true;
    }
    w->seen = true;
    w->cur = json_object_get_int64(json_object_object_get(job,
                                                          "current-progress"));
    w->total = json_object_get_int64(json_object_object_get(job,
                                                            "total-progress"));
    snprintf(w->status, sizeof(w->status), "%s",
             json_object_get_string(json_object_object_get(job, "status")));
    if (strcmp(w->status, "ready") == 0) {
        /* A mirror (or active commit) in sync: it runs until someone
         * sends job-complete, so waiting ends here, successfully. */
        w->ended = true;
    } else if (strcmp(w->status, "concluded") == 0) {
        json_object *e = json_object_object_get(job, "error");

        w->ended = true;
        if (e != NULL) {
            job_wait_set_error(w, json_object_get_string(e));
        }
    }
    return true;
}

static int run_job_wait(QmpClient *c, const char *id, const Options *o)
{
    JobWait w = { .id = id, .tty = isatty(STDERR_FILENO) == 1 };
    int64_t deadline = o->timeout_ms >= 0 ? now_ms() + o->timeout_ms : -1;
    int status = 0;

    w.t0_ms = now_ms();
    if (!job_wait_query(c, &w, &status)) {
        return status;
    }
    w.cur0 = w.cur;
    while (!w.ended) {
        CLEANUP_ERROR Error *err = NULL;
        int64_t until = now_ms() + JOB_WAIT_POLL_MS;
        json_object *ev;
        int rc;

        job_wait_draw(&w, false);
        if (deadline >= 0 && now_ms() >= deadline) {
            fprintf(stderr, "blockctl: timed out waiting for job '%s'\n",
                    id);
            free(w.error);
            return EXIT_REPLY_ERROR;
        }
        /* Events until the next poll: a status change polls at once. */
        while ((rc = qmpc_next_event(c, (int)MAX(0, until - now_ms()), &ev,
                                     &err)) == 1) {
            json_object *data = json_object_object_get(ev, "data");
            json_object *jid = json_object_object_get(data, "id");
            bool changed = jid != NULL &&
                strcmp(json_object_get_string(jid), id) == 0;

            job_wait_event(&w, ev);
            json_object_put(ev);
            if (changed) {
                break;
            }
        }
        if (rc < 0) {
            free(w.error);
            return fail_connection(TAKE_PTR(err));
        }
        if (!job_wait_query(c, &w, &status)) {
            free(w.error);
            return status;
        }
    }
    job_wait_draw(&w, true);
    if (w.failed) {
        fprintf(stderr, "blockctl: job '%s' failed: %s\n", id, w.error);
        status = EXIT_REPLY_ERROR;
    }
    free(w.error);
    return status;
}

/* The job-id argument of a request, or NULL (borrowed). */
static const char *request_job_id(json_object *req)
{
    json_object *args = json_object_object_get(req, "arguments");
    json_object *id = json_object_object_get(args, "job-id");

    return id != NULL ? json_object_get_string(id) : NULL;
}

/* Send one request and print its return value (command and --json). */
static int run_one(QmpClient *c, json_object *req, const Options *o)
{
    CLEANUP_JSON json_object *reply = NULL;
    Error *err = NULL;
    int status;

    if (!qmpc_call(c, req, &reply, &err)) {
        return fail_connection(err);
    }
    status = print_reply_value(reply, o->pretty);
    if (status == 0 && o->wait && request_job_id(req) != NULL) {
        return run_job_wait(c, request_job_id(req), o);
    }
    if (o->events) {
        int st = run_events(c, o);
        if (st != 0) {
            return st;
        }
    }
    return status;
}

/* "-": requests on stdin, each reply printed whole. */
static int run_script(QmpClient *c, const Options *o)
{
    CLEANUP_FREE char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int status = 0;

    while (getline(&line, &cap, stdin) >= 0) {
        CLEANUP_JSON json_object *req = NULL;
        CLEANUP_JSON json_object *reply = NULL;
        Error *err = NULL;
        const char *cls, *desc;
        bool empty;

        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        req = qmpc_parse_line(line, &empty, &err);
        if (!req) {
            if (!empty) {
                fflush(stdout);
                fprintf(stderr, "blockctl: line %u: %s\n", lineno,
                        error_get_pretty(err));
                error_free(err);
                status = EXIT_REPLY_ERROR;
            }
            continue;
        }
        if (!qmpc_call(c, req, &reply, &err)) {
            return fail_connection(err);
        }
        if (o->events) {
            print_queued_events(c, o->pretty);
        }
        print_json(reply, o->pretty);
        if (qmpc_reply_is_error(reply, &cls, &desc)) {
            status = EXIT_REPLY_ERROR;
        }
    }
    if (o->events) {
        int st = run_events(c, o);
        if (st != 0) {
            return st;
        }
    }
    return status;
}

/*
 * The interactive shell.
 *
 * libedit's readline() blocks in its own loop, so the shell hands it a
 * getc function that waits on both the terminal and the QMP socket: an
 * event that arrives while the user types is printed above the prompt
 * and the line is redrawn.  readline's callbacks carry no user data,
 * hence this one file-static state.
 */

DEFINE_VECTOR_TYPE(NameVec, char *);

typedef struct Shell {
    QmpClient *client;
    const Options *opts;
    bool interactive;       /* stdin is a terminal: libedit */
    bool closed;            /* the server closed the connection */
    Error *link_err;        /* a broken connection (not a clean close) */
    NameVec commands;       /* command names for completion, sorted */
    NameVec cands;          /* candidates of the completion under way */
    json_object *schema;    /* query-qmp-schema by entity name, or NULL */
    bool schema_tried;
    sigset_t wait_mask;     /* the signal mask while waiting for input */
    sigset_t sigint_set;    /* just SIGINT */
} Shell;

static Shell shell;

/* Set by SIGINT in the shell: Ctrl-C drops the line being typed. */
static volatile sig_atomic_t shell_interrupted;

static void shell_on_sigint(int sig)
{
    (void)sig;
    shell_interrupted = 1;
}

static void shell_print_events(void)
{
    json_object *ev;
    bool any = false;

    while (qmpc_pending(shell.client)) {
        Error *err = NULL;
        int rc = qmpc_next_event(shell.client, 0, &ev, &err);

        if (rc == 0) {
            break;
        }
        if (rc < 0) {
            if (qmpc_eof(shell.client)) {
                error_free(err);
                shell.closed = true;
            } else {
                error_propagate(&shell.link_err, err);
            }
            break;
        }
        if (!any && shell.interactive) {
            /* Erase the prompt line; it is redrawn below. */
            fputs("\r\033[K", stdout);
        }
        any = true;
        print_json(ev, shell.opts->pretty);
        json_object_put(ev);
    }
    if (any && shell.interactive && !shell.closed && !shell.link_err) {
        rl_forced_update_display();
    }
}

/* readline's input: one byte from the terminal, printing events while
 * waiting.  EOF when the connection is gone. */
/* ^U: libedit's emacs "em-kill-line" (vi insert mode: kill to the
 * line's start), how Ctrl-C empties the line being typed. */
#define SHELL_KILL_LINE 0x15

static int shell_getc(FILE *in)
{
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = fileno(in), .events = POLLIN },
            { .fd = qmpc_fd(shell.client), .events = POLLIN },
        };
        unsigned char ch;
        ssize_t n;

        if (shell_interrupted) {
            /* Redraw the line below "^C", then have libedit cut it. */
            shell_interrupted = 0;
            fputs("^C\r\n", stdout);
            rl_forced_update_display();
            return SHELL_KILL_LINE;
        }
        shell_print_events();
        if (shell.closed || shell.link_err) {
            return EOF;
        }
        /* SIGINT is blocked except inside ppoll(), so a Ctrl-C cannot
         * slip in between the check above and the wait. */
        if (ppoll(pfd, 2, NULL, &shell.wait_mask) < 0) {
            if (errno != EINTR) {
                return EOF;
            }
            continue;
        }
        if (pfd[0].revents) {
            n = read(fileno(in), &ch, 1);
            if (n == 1) {
                return ch;
            }
            if (n < 0 && errno == EINTR) {
                continue;
            }
            return EOF;
        }
    }
}

/*
 * Completion: command names from query-commands; argument names and
 * enum/bool values from query-qmp-schema (fetched at the first use).
 * The introspection data has QEMU's shape: entities with "name" and
 * "meta-type"; objects list "members" and, for unions, "tag" and
 * "variants"; alternates list their branch types in "members"; arrays
 * have an "element-type".
 */

/* The entity named name in the schema, or NULL (borrowed). */
static json_object *schema_entity(const char *name)
{
    json_object *e = NULL;

    if (!shell.schema || !name) {
        return NULL;
    }
    json_object_object_get_ex(shell.schema, name, &e);
    return e;
}

static const char *entity_str(json_object *e, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(e, key, &v) ||
        !json_object_is_type(v, json_type_string)) {
        return "";
    }
    return json_object_get_string(v);
}

static void shell_load_schema(void)
{
    CLEANUP_JSON json_object *reply = NULL;
    json_object *ret;

    if (shell.schema_tried) {
        return;
    }
    shell.schema_tried = true;
    if (!qmpc_execute(shell.client, "query-qmp-schema", NULL, &reply,
                      NULL) ||
        !json_object_object_get_ex(reply, "return", &ret) ||
        !json_object_is_type(ret, json_type_array)) {
        return;
    }
    shell.schema = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        json_object *e = json_object_array_get_idx(ret, i);
        const char *name = entity_str(e, "name");

        if (*name) {
            json_object_object_add(shell.schema, name, json_object_get(e));
        }
    }
}

/* Follow an alternate to its object branch, if it has one. */
static json_object *schema_unalternate(json_object *e)
{
    json_object *members;

    if (strcmp(entity_str(e, "meta-type"), "alternate") != 0) {
        return e;
    }
    if (!json_object_object_get_ex(e, "members", &members)) {
        return NULL;
    }
    for (size_t i = 0; i < json_object_array_length(members); i++) {
        json_object *b = schema_entity(
            entity_str(json_object_array_get_idx(members, i), "type"));
        if (b && strcmp(entity_str(b, "meta-type"), "object") == 0) {
            return b;
        }
    }
    return NULL;
}

/* Call fn on every member of object e: its own, and those of the
 * variants (only the one selected when the tag's value was given,
 * found under prefix+tag in given). */
typedef void MemberFn(json_object *member, void *opaque);

static void schema_each_member(json_object *e, const char *prefix,
                               json_object *given, MemberFn *fn,
                               void *opaque)
{
    json_object *members, *variants, *tagval = NULL;
    const char *tag = entity_str(e, "tag");

    if (json_object_object_get_ex(e, "members", &members)) {
        for (size_t i = 0; i < json_object_array_length(members); i++) {
            fn(json_object_array_get_idx(members, i), opaque);
        }
    }
    if (*tag) {
        CLEANUP_FREE char *key = xasprintf("%s%s", prefix, tag);
        json_object_object_get_ex(given, key, &tagval);
    }
    if (!json_object_object_get_ex(e, "variants", &variants)) {
        return;
    }
    for (size_t i = 0; i < json_object_array_length(variants); i++) {
        json_object *v = json_object_array_get_idx(variants, i);
        json_object *ve;

        if (tagval && strcmp(entity_str(v, "case"),
                             json_object_get_string(tagval)) != 0) {
            continue;
        }
        ve = schema_entity(entity_str(v, "type"));
        if (ve) {
            schema_each_member(ve, prefix, given, fn, opaque);
        }
    }
}

typedef struct FindMember {
    const char *name;
    json_object *found;
} FindMember;

static void find_member_fn(json_object *member, void *opaque)
{
    FindMember *f = opaque;

    if (!f->found && strcmp(entity_str(member, "name"), f->name) == 0) {
        f->found = member;
    }
}

/* The type entity at dotted path (a "key" without its value) under the
 * arguments type args_type, or NULL. */
static json_object *schema_resolve(const char *args_type, const char *path,
                                   json_object *given)
{
    json_object *e = schema_entity(args_type);
    CLEANUP_FREE char *copy = xstrdup(path);
    CLEANUP_FREE char *prefix = xstrdup("");
    char *save = NULL;

    for (char *comp = strtok_r(copy, ".", &save); comp && e;
         comp = strtok_r(NULL, ".", &save)) {
        char *np;

        e = schema_unalternate(e);
        if (!e) {
            return NULL;
        }
        if (strcmp(entity_str(e, "meta-type"), "array") == 0) {
            e = schema_entity(entity_str(e, "element-type"));
        } else {
            FindMember f = { .name = comp };
            schema_each_member(e, prefix, given, find_member_fn, &f);
            e = f.found ? schema_entity(entity_str(f.found, "type")) : NULL;
        }
        np = xasprintf("%s%s.", prefix, comp);
        free(prefix);
        prefix = np;
    }
    return e;
}

typedef struct AddKey {
    const char *prefix;     /* "file." */
} AddKey;

static void add_key_fn(json_object *member, void *opaque)
{
    AddKey *a = opaque;
    const char *name = entity_str(member, "name");
    json_object *t = schema_entity(entity_str(member, "type"));
    const char *meta = entity_str(t, "meta-type");

    if (strcmp(meta, "object") != 0) {
        NameVec_append(&shell.cands, xasprintf("%s%s=", a->prefix, name));
    }
    if (strcmp(meta, "object") == 0 || strcmp(meta, "array") == 0 ||
        (strcmp(meta, "alternate") == 0 && schema_unalternate(t))) {
        NameVec_append(&shell.cands, xasprintf("%s%s.", a->prefix, name));
    }
}

/* Fill shell.cands for an argument word text ("key" or "key=val"),
 * with the words before it already typed (words[0] is the command). */
static void shell_complete_arg(const char *text, char **words, size_t n)
{
    CLEANUP_JSON json_object *given = json_object_new_object();
    const char *eq = strchr(text, '=');
    const char *dot = strrchr(text, '.');
    json_object *cmd, *t;

    shell_load_schema();
    cmd = schema_entity(words[0]);
    if (!cmd || strcmp(entity_str(cmd, "meta-type"), "command") != 0) {
        return;
    }
    for (size_t i = 1; i < n; i++) {
        char *weq = strchr(words[i], '=');
        if (weq) {
            CLEANUP_FREE char *k = xstrndup(words[i], weq - words[i]);
            json_object_object_add(given, k,
                                   json_object_new_string(weq + 1));
        }
    }
    if (eq) {
        /* A value: enum members or booleans. */
        CLEANUP_FREE char *key = xstrndup(text, eq - text);
        json_object *members;

        t = schema_resolve(entity_str(cmd, "arg-type"), key, given);
        if (!t) {
            return;
        }
        if (strcmp(entity_str(t, "json-type"), "boolean") == 0) {
            NameVec_append(&shell.cands, xasprintf("%s=on", key));
            NameVec_append(&shell.cands, xasprintf("%s=off", key));
        } else if (strcmp(entity_str(t, "meta-type"), "enum") == 0 &&
                   json_object_object_get_ex(t, "members", &members)) {
            for (size_t i = 0; i < json_object_array_length(members); i++) {
                NameVec_append(&shell.cands, xasprintf("%s=%s", key,
                    entity_str(json_object_array_get_idx(members, i),
                               "name")));
            }
        }
        return;
    }
    /* A key: the members of the object at its path. */
    {
        CLEANUP_FREE char *path = dot ? xstrndup(text, dot - text)
                                      : xstrdup("");
        CLEANUP_FREE char *prefix = dot ? xstrndup(text, dot - text + 1)
                                        : xstrdup("");
        AddKey a = { .prefix = prefix };

        t = *path ? schema_resolve(entity_str(cmd, "arg-type"), path, given)
                  : schema_entity(entity_str(cmd, "arg-type"));
        t = schema_unalternate(t);
        if (t && strcmp(entity_str(t, "meta-type"), "object") == 0) {
            schema_each_member(t, prefix, given, add_key_fn, &a);
        }
        rl_completion_append_character = '\0';
    }
}

static char *shell_generator(const char *text, int state)
{
    static size_t next;
    size_t len = strlen(text);

    if (state == 0) {
        next = 0;
    }
    while (next < shell.cands.len) {
        const char *name = shell.cands.ptr[next++];
        if (strncmp(name, text, len) == 0) {
            return strdup(name);
        }
    }
    return NULL;
}

static void shell_clear_cands(void)
{
    for (size_t i = 0; i < shell.cands.len; i++) {
        free(shell.cands.ptr[i]);
    }
    shell.cands.len = 0;
}

static int cmp_names(const void *a, const void *b);

/* Sort the candidates and drop duplicates (variants share members). */
static void shell_uniq_cands(void)
{
    size_t out = 0;

    if (shell.cands.len == 0) {
        return;
    }
    qsort(shell.cands.ptr, shell.cands.len, sizeof(char *), cmp_names);
    for (size_t i = 0; i < shell.cands.len; i++) {
        if (out > 0 && strcmp(shell.cands.ptr[out - 1],
                              shell.cands.ptr[i]) == 0) {
            free(shell.cands.ptr[i]);
        } else {
            shell.cands.ptr[out++] = shell.cands.ptr[i];
        }
    }
    shell.cands.len = out;
}

static char **shell_complete(const char *text, int start, int end)
{
    CLEANUP_FREE char *before = xstrndup(rl_line_buffer, start);
    CLEANUP_ERROR Error *err = NULL;
    char **words;
    size_t n = 0;

    (void)end;
    rl_attempted_completion_over = 1;
    rl_completion_append_character = ' ';
    shell_clear_cands();
    words = qmpc_split_words(before, &n, &err);
    if (!words) {
        return NULL;
    }
    if (n == 0) {
        for (size_t i = 0; i < shell.commands.len; i++) {
            NameVec_append(&shell.cands, xstrdup(shell.commands.ptr[i]));
        }
    } else {
        shell_complete_arg(text, words, n);
        shell_uniq_cands();
    }
    qmpc_free_words(words);
    return rl_completion_matches(text, shell_generator);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Ask the server for its command names (for completion). */
static void shell_load_commands(void)
{
    CLEANUP_JSON json_object *reply = NULL;
    json_object *ret;

    if (!qmpc_execute(shell.client, "query-commands", NULL, &reply, NULL) ||
        !json_object_object_get_ex(reply, "return", &ret) ||
        !json_object_is_type(ret, json_type_array)) {
        return;
    }
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        json_object *name;
        if (json_object_object_get_ex(json_object_array_get_idx(ret, i),
                                      "name", &name) &&
            json_object_is_type(name, json_type_string)) {
            NameVec_append(&shell.commands,
                           xstrdup(json_object_get_string(name)));
        }
    }
    if (shell.commands.len > 0) {
        qsort(shell.commands.ptr, shell.commands.len, sizeof(char *),
              cmp_names);
    }
}

static void shell_help(void)
{
    printf("Type a QMP command and its arguments, e.g.\n"
           "  query-version\n"
           "  blockdev-add driver=null-co node-name=n0 size=0x40000000\n"
           "  {\"execute\": \"query-named-block-nodes\"}\n"
           "KEY=VALUE: dotted keys nest (file.filename=x), numeric keys\n"
           "make arrays (bitmaps.0=b0), values starting with { or [ are\n"
           "JSON; quote with '...' or \"...\".  Tab completes command and\n"
           "argument names, Ctrl-C drops the line, Ctrl-D leaves.  Events\n"
           "are printed as they arrive.\n");
    fflush(stdout);
}

/* Run one shell line; false when the connection is gone. */
static bool shell_run_line(const char *line, int *status)
{
    CLEANUP_JSON json_object *req = NULL;
    CLEANUP_JSON json_object *reply = NULL;
    Error *err = NULL;
    bool empty, ok;

    if (strcmp(line, "help") == 0 || strcmp(line, "?") == 0) {
        shell_help();
        return true;
    }
    req = qmpc_parse_line(line, &empty, &err);
    if (!req) {
        if (!empty) {
            fprintf(stderr, "blockctl: %s\n", error_get_pretty(err));
            error_free(err);
            *status = EXIT_REPLY_ERROR;
        }
        return true;
    }
    if (shell.interactive) {
        /* A server that never answers: Ctrl-C ends blockctl (readline
         * has already given the terminal back its normal mode). */
        signal(SIGINT, SIG_DFL);
        sigprocmask(SIG_UNBLOCK, &shell.sigint_set, NULL);
    }
    ok = qmpc_call(shell.client, req, &reply, &err);
    if (shell.interactive) {
        struct sigaction sa = { .sa_handler = shell_on_sigint };

        sigprocmask(SIG_BLOCK, &shell.sigint_set, NULL);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
    }
    if (!ok) {
        if (qmpc_eof(shell.client)) {
            shell.closed = true;
            error_free(err);
        } else {
            shell.link_err = err;
        }
        return false;
    }
    /* Events that came before the reply are printed first. */
    print_queued_events(shell.client, shell.opts->pretty);
    if (print_reply_value(reply, shell.opts->pretty) != 0) {
        *status = EXIT_REPLY_ERROR;
    }
    return true;
}

static char *shell_history_path(void)
{
    const char *home = getenv("HOME");

    if (!home || !*home) {
        return NULL;
    }
    return xasprintf("%s/.blockctl_history", home);
}

/* A terminal gets libedit; a pipe is read line by line. */
static int run_shell(QmpClient *c, const Options *o)
{
    CLEANUP_FREE char *history = NULL;
    int status = 0;

    shell.client = c;
    shell.opts = o;
    shell.interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);

    if (shell.interactive) {
        struct sigaction sa = { .sa_handler = shell_on_sigint };
        char *line;

        shell_load_commands();
        history = shell_history_path();
        /* At the prompt, Ctrl-C drops the line (shell_getc); SIGINT is
         * blocked except while waiting for input (see shell_run_line
         * for the wait for a reply).  libedit must not catch signals
         * itself: it would put the terminal back in cooked mode and
         * re-raise SIGINT. */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigemptyset(&shell.sigint_set);
        sigaddset(&shell.sigint_set, SIGINT);
        sigprocmask(SIG_BLOCK, &shell.sigint_set, &shell.wait_mask);
        sigdelset(&shell.wait_mask, SIGINT);
        rl_catch_signals = 0;
        rl_readline_name = "blockctl";
        rl_getc_function = shell_getc;
        rl_attempted_completion_function = shell_complete;
        /* Words are blank-separated: "file.driver=fi" is one word. */
        rl_completer_word_break_characters = (char *)" \t\n";
        rl_basic_word_break_characters = " \t\n";
        using_history();
        stifle_history(1000);
        if (history) {
            read_history(history);
        }
        printf("Connected to %s.  Type 'help' for help, Ctrl-D to leave.\n",
               o->addr);
        fflush(stdout);
        while ((line = readline("(blockd) ")) != NULL) {
            bool ok;

            if (*line) {
                add_history(line);
            }
            ok = shell_run_line(line, &status);
            free(line);
            if (!ok) {
                break;
            }
        }
        if (!shell.closed && !shell.link_err) {
            putchar('\n');
        }
        if (history) {
            write_history(history);
        }
        /* A person saw each error already; leaving is a success. */
        status = 0;
    } else {
        CLEANUP_FREE char *line = NULL;
        size_t cap = 0;

        while (getline(&line, &cap, stdin) >= 0) {
            line[strcspn(line, "\r\n")] = '\0';
            print_queued_events(c, o->pretty);
            if (!shell_run_line(line, &status)) {
                break;
            }
        }
    }
    for (size_t i = 0; i < shell.commands.len; i++) {
        free(shell.commands.ptr[i]);
    }
    NameVec_reset(&shell.commands);
    shell_clear_cands();
    NameVec_reset(&shell.cands);
    json_object_put(shell.schema);
    if (shell.link_err) {
        return fail_connection(TAKE_PTR(shell.link_err));
    }
    if (shell.closed) {
        printf("Connection closed by the server.\n");
    }
    return status;
}

/*
 * main
 */

/*
 * blockctl list: an NBD server's exports, as qemu-nbd -L prints them.
 */

static int run_list(int argc, char **argv)
{
    BlockctlListOptions o;
    NbdExportList l;
    Error *err = NULL;

    switch (blockctl_parse_list(&o, argc, argv)) {
    case BLOCKCTL_PARSE_RUN:
        break;
    case BLOCKCTL_PARSE_HELP:
        usage(stdout);
        return 0;
    default:
        return EXIT_REPLY_ERROR;
    }
    if (!nbd_client_list(&o.addr, &o.nbd, &l, &err)) {
        fprintf(stderr, "blockctl: %s\n", error_get_pretty(err));
        error_free(err);
        return EXIT_REPLY_ERROR;
    }
    nbd_export_list_print(stdout, &l);
    nbd_export_list_clear(&l);
    return fflush(stdout) == 0 ? 0 : EXIT_REPLY_ERROR;
}

int main(int argc, char **argv)
{
    CLEANUP_JSON json_object *req = NULL;
    Options o;
    QmpClient *c;
    Error *err = NULL;
    bool script, job_wait;
    int status;

    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        return run_list(argc - 1, argv + 1);
    }
    switch (blockctl_parse(&o, argc, argv)) {
    case BLOCKCTL_PARSE_RUN:
        break;
    case BLOCKCTL_PARSE_HELP:
        usage(stdout);
        return 0;
    case BLOCKCTL_PARSE_VERSION:
        printf("blockctl %s\n", BLOCKD_VERSION);
        return 0;
    default:
        return EXIT_REPLY_ERROR;
    }
    script = o.nwords == 1 && strcmp(o.words[0], "-") == 0;

    /* Bad arguments fail before connecting. */
    job_wait = o.nwords == 2 && strcmp(o.words[0], "job-wait") == 0;
    if (!blockctl_build_request(&o, &req, &err)) {
        fprintf(stderr, "blockctl: %s\n", error_get_pretty(err));
        error_free(err);
        return EXIT_REPLY_ERROR;
    }

    c = qmpc_connect(o.addr, o.timeout_ms >= 0 ? o.timeout_ms
                                               : BLOCKCTL_GREETING_TIMEOUT_MS, &err);
    if (!c) {
        return fail_connection(err);
    }
    if (!qmpc_negotiate(c, &err)) {
        qmpc_close(c);
        return fail_connection(err);
    }

    if (job_wait) {
        status = run_job_wait(c, o.words[1], &o);
    } else if (req) {
        status = run_one(c, req, &o);
    } else if (script) {
        status = run_script(c, &o);
    } else if (o.events) {
        status = run_events(c, &o);
    } else {
        status = run_shell(c, &o);
    }
    qmpc_close(c);
    return status;
}
