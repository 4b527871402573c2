/* blockctl.c - the QMP client for people and scripts.
 *
 *     blockctl -s SOCK COMMAND [key=value ...]   one command
 *     blockctl -s SOCK --json '{"execute": ...}' one raw request
 *     blockctl -s SOCK -                         requests on stdin
 *     blockctl -s SOCK --events                  print events
 *     blockctl -s SOCK                           interactive shell
 *
 * Exit status: 0 success, 1 an error reply or bad input, 2 the
 * connection failed (see usage()).  docs/blockctl.md is the manual.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "client/qmpc.h"
#include "config.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/util.h"
#include "util/vector.h"

enum {
    EXIT_REPLY_ERROR = 1,   /* an error reply, bad arguments, usage */
    EXIT_CONNECTION = 2,    /* could not connect, or the link failed */
};

/* How long to wait for the greeting when no --timeout is given. */
#define GREETING_TIMEOUT_MS (30 * 1000)

typedef struct Options {
    const char *addr;       /* -s */
    const char *json;       /* --json TEXT, or NULL */
    bool pretty;
    bool events;
    int timeout_ms;         /* --timeout; -1 = none */
    unsigned count;         /* --count; 0 = no limit */
    char **words;           /* COMMAND key=value ... (argv, borrowed) */
    int nwords;
} Options;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: blockctl [OPTIONS] -s SOCKET COMMAND [KEY=VALUE ...]\n"
"       blockctl [OPTIONS] -s SOCKET --json REQUEST\n"
"       blockctl [OPTIONS] -s SOCKET -\n"
"       blockctl [OPTIONS] -s SOCKET --events\n"
"       blockctl [OPTIONS] -s SOCKET\n"
"\n"
"Send QMP commands to blockd (or any QMP server) and print the replies.\n"
"\n"
"With COMMAND, run it and print its return value as JSON.  Arguments\n"
"are KEY=VALUE words:\n"
"  - dotted keys build nested objects:  file.driver=file file.filename=a.img\n"
"  - numeric keys build arrays:         bitmaps.0=b0 bitmaps.1=b1\n"
"  - values are converted by the command's schema: size=1G is an\n"
"    integer, read-only=on a boolean (on/off/yes/no/true/false)\n"
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
"names; events are printed as they arrive.  End it with Ctrl-D.\n"
"\n"
"Options:\n"
"  -s, --socket ADDR    the QMP socket: PATH, unix:PATH or tcp:HOST:PORT\n"
"                       (default: $BLOCKCTL_SOCKET)\n"
"  -j, --json REQUEST   send one raw request\n"
"  -p, --pretty         indent the JSON printed\n"
"  -e, --events         after the command (if any), print events as they\n"
"                       arrive, one JSON object a line\n"
"  -t, --timeout SECS   stop waiting for events after SECS seconds (also\n"
"                       bounds the wait for the server's greeting)\n"
"  -n, --count N        with --events: exit after N events\n"
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
"  blockctl -s /tmp/qmp.sock --events --count 1 --timeout 10\n");
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

/* --events: print events until --count, --timeout or end of stream. */
static int run_events(QmpClient *c, const Options *o)
{
    int64_t deadline = -1;
    unsigned got = 0;
    struct timespec ts;

    if (o->timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
                   o->timeout_ms;
    }
    while (o->count == 0 || got < o->count) {
        CLEANUP_ERROR Error *err = NULL;
        json_object *ev;
        int left = -1;
        int rc;

        if (deadline >= 0) {
            int64_t now;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
} Shell;

static Shell shell;

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
static int shell_getc(FILE *in)
{
    for (;;) {
        struct pollfd pfd[2] = {
            { .fd = fileno(in), .events = POLLIN },
            { .fd = qmpc_fd(shell.client), .events = POLLIN },
        };
        unsigned char ch;
        ssize_t n;

        shell_print_events();
        if (shell.closed || shell.link_err) {
            return EOF;
        }
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return EOF;
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

static char *shell_command_generator(const char *text, int state)
{
    static size_t next;
    size_t len = strlen(text);

    if (state == 0) {
        next = 0;
    }
    while (next < shell.commands.len) {
        const char *name = shell.commands.ptr[next++];
        if (strncmp(name, text, len) == 0) {
            return strdup(name);
        }
    }
    return NULL;
}

static char **shell_complete(const char *text, int start, int end)
{
    (void)end;
    rl_attempted_completion_over = 1;
    if (start != 0) {
        return NULL;
    }
    return rl_completion_matches(text, shell_command_generator);
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
    qsort(shell.commands.ptr, shell.commands.len, sizeof(char *),
          cmp_names);
}

static void shell_help(void)
{
    printf("Type a QMP command and its arguments, e.g.\n"
           "  query-version\n"
           "  blockdev-add driver=null-co node-name=n0 size=1G\n"
           "  {\"execute\": \"query-named-block-nodes\"}\n"
           "KEY=VALUE: dotted keys nest (file.filename=x), numeric keys\n"
           "make arrays (bitmaps.0=b0), values starting with { or [ are\n"
           "JSON; quote with '...' or \"...\".  Tab completes command\n"
           "names, Ctrl-D leaves.  Events are printed as they arrive.\n");
    fflush(stdout);
}

/* Run one shell line; false when the connection is gone. */
static bool shell_run_line(const char *line, int *status)
{
    CLEANUP_JSON json_object *req = NULL;
    CLEANUP_JSON json_object *reply = NULL;
    Error *err = NULL;
    bool empty;

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
    if (!qmpc_call(shell.client, req, &reply, &err)) {
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
        char *line;

        shell_load_commands();
        history = shell_history_path();
        rl_readline_name = "blockctl";
        rl_getc_function = shell_getc;
        rl_attempted_completion_function = shell_complete;
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

static bool parse_seconds(const char *s, int *ms)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= 0) || d > INT_MAX / 1000) {
        return false;
    }
    *ms = (int)(d * 1000);
    return true;
}

static bool parse_options(int argc, char **argv, Options *o)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", required_argument, NULL, 'j' },
        { "pretty", no_argument, NULL, 'p' },
        { "events", no_argument, NULL, 'e' },
        { "timeout", required_argument, NULL, 't' },
        { "count", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t u;
    int opt;

    *o = (Options){ .timeout_ms = -1 };
    /* '+': options end at COMMAND, so a value may start with '-'. */
    while ((opt = getopt_long(argc, argv, "+s:j:pet:n:hV", longopts,
                              NULL)) != -1) {
        switch (opt) {
        case 's':
            o->addr = optarg;
            break;
        case 'j':
            o->json = optarg;
            break;
        case 'p':
            o->pretty = true;
            break;
        case 'e':
            o->events = true;
            break;
        case 't':
            if (!parse_seconds(optarg, &o->timeout_ms)) {
                fprintf(stderr, "blockctl: invalid --timeout '%s' "
                        "(seconds expected)\n", optarg);
                return false;
            }
            break;
        case 'n':
            if (!parse_uint64(optarg, &u) || u == 0 || u > UINT_MAX) {
                fprintf(stderr, "blockctl: invalid --count '%s'\n", optarg);
                return false;
            }
            o->count = (unsigned)u;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("blockctl %s\n", BLOCKD_VERSION);
            exit(0);
        default:
            fprintf(stderr, "Try 'blockctl --help' for more information.\n");
            return false;
        }
    }
    o->words = argv + optind;
    o->nwords = argc - optind;
    if (!o->addr) {
        o->addr = getenv("BLOCKCTL_SOCKET");
    }
    if (!o->addr || !*o->addr) {
        fprintf(stderr, "blockctl: no QMP socket given (-s SOCKET or "
                "$BLOCKCTL_SOCKET)\n"
                "Try 'blockctl --help' for more information.\n");
        return false;
    }
    if (o->json && o->nwords > 0) {
        fprintf(stderr, "blockctl: --json takes no COMMAND\n");
        return false;
    }
    if (o->count && !o->events) {
        fprintf(stderr, "blockctl: --count needs --events\n");
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    CLEANUP_JSON json_object *req = NULL;
    Options o;
    QmpClient *c;
    Error *err = NULL;
    bool script;
    int status;

    if (!parse_options(argc, argv, &o)) {
        return EXIT_REPLY_ERROR;
    }
    script = o.nwords == 1 && strcmp(o.words[0], "-") == 0;

    /* Bad arguments fail before connecting. */
    if (o.json) {
        req = qmpc_parse_raw(o.json, &err);
    } else if (o.nwords > 0 && !script) {
        json_object *args = qmpc_build_args(o.words[0], o.words + 1,
                                            o.nwords - 1, &err);
        if (args) {
            req = json_object_new_object();
            json_object_object_add(req, "execute",
                                   json_object_new_string(o.words[0]));
            json_object_object_add(req, "arguments", args);
        }
    }
    if ((o.json || (o.nwords > 0 && !script)) && !req) {
        fprintf(stderr, "blockctl: %s\n", error_get_pretty(err));
        error_free(err);
        return EXIT_REPLY_ERROR;
    }

    signal(SIGPIPE, SIG_IGN);
    c = qmpc_connect(o.addr, o.timeout_ms >= 0 ? o.timeout_ms
                                               : GREETING_TIMEOUT_MS, &err);
    if (!c) {
        return fail_connection(err);
    }
    if (!qmpc_negotiate(c, &err)) {
        qmpc_close(c);
        return fail_connection(err);
    }

    if (req) {
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
