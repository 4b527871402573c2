/* qnbd-options.c - qemu-nbd's command line (see qnbd.h).
 *
 * The options, their errors and the order of the checks follow qemu-nbd
 * 7.2 (Debian's, the oracle of tests/integration/test-blockd-nbd*.py);
 * --handshake-limit is QEMU 10.0's; --print-qmp and --backing-root are
 * blockd's own.
 */
#include "daemon/qnbd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nbd/proto.h"
#include "util/cleanup.h"
#include "util/trace.h"
#include "util/util.h"

enum {
    QOPT_OBJECT = 256,
    QOPT_CACHE,
    QOPT_AIO,
    QOPT_DISCARD,
    QOPT_DETECT_ZEROES,
    QOPT_IMAGE_OPTS,
    QOPT_TLSCREDS,
    QOPT_TLSHOSTNAME,
    QOPT_TLSAUTHZ,
    QOPT_FORK,
    QOPT_PID_FILE,
    QOPT_SELINUX_LABEL,
    QOPT_HANDSHAKE_LIMIT,
    QOPT_PRINT_QMP,
    QOPT_BACKING_ROOT,
    QOPT_SANDBOX,
};

static const char short_options[] = "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L";

static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "bind", required_argument, NULL, 'b' },
    { "port", required_argument, NULL, 'p' },
    { "socket", required_argument, NULL, 'k' },
    { "offset", required_argument, NULL, 'o' },
    { "read-only", no_argument, NULL, 'r' },
    { "allocation-depth", no_argument, NULL, 'A' },
    { "bitmap", required_argument, NULL, 'B' },
    { "connect", required_argument, NULL, 'c' },
    { "disconnect", no_argument, NULL, 'd' },
    { "list", no_argument, NULL, 'L' },
    { "snapshot", no_argument, NULL, 's' },
    { "load-snapshot", required_argument, NULL, 'l' },
    { "nocache", no_argument, NULL, 'n' },
    { "cache", required_argument, NULL, QOPT_CACHE },
    { "aio", required_argument, NULL, QOPT_AIO },
    { "discard", required_argument, NULL, QOPT_DISCARD },
    { "detect-zeroes", required_argument, NULL, QOPT_DETECT_ZEROES },
    { "shared", required_argument, NULL, 'e' },
    { "format", required_argument, NULL, 'f' },
    { "persistent", no_argument, NULL, 't' },
    { "verbose", no_argument, NULL, 'v' },
    { "object", required_argument, NULL, QOPT_OBJECT },
    { "export-name", required_argument, NULL, 'x' },
    { "description", required_argument, NULL, 'D' },
    { "tls-creds", required_argument, NULL, QOPT_TLSCREDS },
    { "tls-hostname", required_argument, NULL, QOPT_TLSHOSTNAME },
    { "tls-authz", required_argument, NULL, QOPT_TLSAUTHZ },
    { "image-opts", no_argument, NULL, QOPT_IMAGE_OPTS },
    { "trace", required_argument, NULL, 'T' },
    { "fork", no_argument, NULL, QOPT_FORK },
    { "pid-file", required_argument, NULL, QOPT_PID_FILE },
    { "selinux-label", required_argument, NULL, QOPT_SELINUX_LABEL },
    { "handshake-limit", required_argument, NULL, QOPT_HANDSHAKE_LIMIT },
    { "print-qmp", no_argument, NULL, QOPT_PRINT_QMP },
    { "backing-root", required_argument, NULL, QOPT_BACKING_ROOT },
    { "sandbox", required_argument, NULL, QOPT_SANDBOX },
    { NULL, 0, NULL, 0 },
};

void qnbd_report(const QnbdOptions *o, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "%s: ", o->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

static void set_str(char **dst, const char *val)
{
    free(*dst);
    *dst = xstrdup(val);
}

static void append_str(char ***v, size_t *n, const char *val)
{
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = xstrdup(val);
}

/* A number in C syntax (0x hex, 0 octal), the whole string. */
static bool parse_number(const char *s, uint64_t *out)
{
    char *end;

    if (s[0] == '\0' || s[0] == '-' || s[0] == ' ') {
        return false;
    }
    errno = 0;
    *out = strtoull(s, &end, 0);
    return errno == 0 && *end == '\0';
}

/* bdrv_parse_cache_mode()'s modes. */
static bool parse_cache(QnbdOptions *o, const char *mode)
{
    o->cache_direct = o->cache_no_flush = o->writethrough = false;
    if (strcmp(mode, "off") == 0 || strcmp(mode, "none") == 0) {
        o->cache_direct = true;
    } else if (strcmp(mode, "directsync") == 0) {
        o->cache_direct = true;
        o->writethrough = true;
    } else if (strcmp(mode, "writeback") == 0) {
        /* the default */
    } else if (strcmp(mode, "unsafe") == 0) {
        o->cache_no_flush = true;
    } else if (strcmp(mode, "writethrough") == 0) {
        o->writethrough = true;
    } else {
        return false;
    }
    set_str(&o->cache_mode, mode);
    return true;
}

/* -l: "snapshot.id=ID,snapshot.name=NAME" (QemuOpts, either key may be
 * missing) or a bare ID_OR_NAME. */
static bool parse_load_snapshot(QnbdOptions *o, const char *arg)
{
    CLEANUP_FREE char *copy = NULL;
    char *save = NULL, *item;

    if (strncmp(arg, "snapshot.", 9) != 0) {
        set_str(&o->sn_id_or_name, arg);
        return true;
    }
    copy = xstrdup(arg);
    for (item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');

        if (eq != NULL) {
            *eq = '\0';
        }
        if (strcmp(item, "snapshot.id") == 0 && eq != NULL) {
            set_str(&o->sn_id, eq + 1);
        } else if (strcmp(item, "snapshot.name") == 0 && eq != NULL) {
            set_str(&o->sn_name, eq + 1);
        } else {
            qnbd_report(o, "Invalid parameter '%s'", item);
            return false;
        }
    }
    return true;
}

static void trace_unknown(const char *name, void *opaque)
{
    qnbd_report(opaque, "warning: trace event '%s' does not exist", name);
}

/* Turn on the points matching pattern, as QEMU's trace_enable_events
 * (a leading '-' turns them off). */
static void trace_apply(const QnbdOptions *o, const char *pattern)
{
    if (trace_enable_pattern(pattern) == 0 &&
        !trace_pattern_is_glob(pattern)) {
        trace_unknown(pattern[0] == '-' ? pattern + 1 : pattern, (void *)o);
    }
}

/* -T [enable=]PATTERN[,events=FILE][,file=FILE], QEMU's "trace" option
 * group in QemuOpts syntax (",," is a comma, an item without "=" after
 * the first is a short-form boolean).  Applied at once, in command-line
 * order, as qemu-nbd does; "help" as the pattern lists the points.
 * Returns 0, -1 for "list printed, exit 0", or the exit status after
 * printing qemu-nbd's message. */
static int parse_trace(QnbdOptions *o, const char *arg)
{
    CLEANUP_FREE char *enable = NULL;
    CLEANUP_FREE char *events = NULL;
    CLEANUP_FREE char *buf = xmalloc(strlen(arg) + 1);
    const char *p = arg;
    bool first = true;

    while (*p != '\0') {
        size_t n = 0;
        char *eq, *key, *val;

        /* One item, ",," unescaped. */
        while (*p != '\0' && !(*p == ',' && p[1] != ',')) {
            if (*p == ',') {
                p++;
            }
            buf[n++] = *p++;
        }
        buf[n] = '\0';
        if (*p == ',') {
            p++;
        }
        eq = strchr(buf, '=');
        if (eq != NULL) {
            *eq = '\0';
            key = buf;
            val = eq + 1;
        } else if (first) {
            key = "enable";
            val = buf;
        } else {
            qnbd_report(o, "warning: short-form boolean option '%s' "
                        "deprecated", buf);
            fprintf(stderr, "Please use %s=on instead\n", buf);
            key = buf;
            val = "on";
        }
        first = false;
        if (strcmp(key, "enable") == 0) {
            set_str(&enable, val);
        } else if (strcmp(key, "events") == 0) {
            set_str(&events, val);
        } else if (strcmp(key, "file") == 0) {
            set_str(&o->trace_file, val);
        } else {
            qnbd_report(o, "Invalid parameter '%s'", key);
            return 1;
        }
    }
    if (enable != NULL) {
        if (strcmp(enable, "help") == 0 || strcmp(enable, "?") == 0) {
            trace_list_events(stdout);
            return -1;
        }
        trace_apply(o, enable);
    }
    if (events != NULL) {
        CLEANUP_ERROR Error *err = NULL;

        if (!trace_enable_events_file(events, trace_unknown, o, &err)) {
            /* qemu-nbd 7.2 prints no space after the program name. */
            fprintf(stderr, "%s:%s\n", o->prog, error_get_pretty(err));
            return 1;
        }
    }
    return 0;
}

static int try_help(const QnbdOptions *o)
{
    qnbd_report(o, "Try `%s --help' for more information.", o->argv0);
    return 1;
}

int qnbd_parse(QnbdOptions *o, int argc, char **argv)
{
    const char *slash = strrchr(argv[0], '/');
    uint64_t num;
    int c;

    memset(o, 0, sizeof(*o));
    o->prog = slash ? slash + 1 : argv[0];
    o->argv0 = argv[0];
    o->shared = 1;
    /* optind = 0 restarts glibc's getopt completely, also its place
     * inside a cluster of short options ("-rst") that a previous call
     * left with an error: blockd-nbd parses once, the fuzzer
     * (tests/fuzz/fuzz-qnbd-cli.c) many times. */
    optind = 0;
    opterr = 1;            /* getopt's own messages, as qemu-nbd */
    while ((c = getopt_long(argc, argv, short_options, long_options,
                            NULL)) != -1) {
        switch (c) {
        case 's':
            o->snapshot = true;
            break;
        case 'n':
            optarg = (char *)"none";
            /* fall through */
        case QOPT_CACHE:
            if (o->seen_cache) {
                qnbd_report(o, "-n and --cache can only be specified once");
                return 1;
            }
            o->seen_cache = true;
            if (!parse_cache(o, optarg)) {
                qnbd_report(o, "Invalid cache mode `%s'", optarg);
                return 1;
            }
            break;
        case QOPT_AIO:
            if (o->seen_aio) {
                qnbd_report(o, "--aio can only be specified once");
                return 1;
            }
            o->seen_aio = true;
            if (strcmp(optarg, "native") != 0 &&
                strcmp(optarg, "threads") != 0 &&
                strcmp(optarg, "io_uring") != 0) {
                qnbd_report(o, "Invalid aio mode '%s'", optarg);
                return 1;
            }
            set_str(&o->aio, optarg);
            break;
        case QOPT_DISCARD:
            if (o->seen_discard) {
                qnbd_report(o, "--discard can only be specified once");
                return 1;
            }
            o->seen_discard = true;
            if (strcmp(optarg, "off") == 0 ||
                strcmp(optarg, "ignore") == 0) {
                o->discard_unmap = false;
            } else if (strcmp(optarg, "on") == 0 ||
                       strcmp(optarg, "unmap") == 0) {
                o->discard_unmap = true;
            } else {
                qnbd_report(o, "Invalid discard mode `%s'", optarg);
                return 1;
            }
            break;
        case QOPT_DETECT_ZEROES:
            if (strcmp(optarg, "off") != 0 && strcmp(optarg, "on") != 0 &&
                strcmp(optarg, "unmap") != 0) {
                qnbd_report(o, "Failed to parse detect_zeroes mode: "
                            "invalid parameter value: %s", optarg);
                return 1;
            }
            /* Checked here, as qemu-nbd: --discard=unmap must come
             * first. */
            if (strcmp(optarg, "unmap") == 0 && !o->discard_unmap) {
                qnbd_report(o, "setting detect-zeroes to unmap is not "
                            "allowed without setting discard operation "
                            "to unmap");
                return 1;
            }
            set_str(&o->detect_zeroes, optarg);
            break;
        case 'b':
            set_str(&o->bind, optarg);
            break;
        case 'p':
            set_str(&o->port, optarg);
            break;
        case 'o':
            if (!parse_number(optarg, &num) || num > INT64_MAX) {
                qnbd_report(o, "Invalid offset '%s'", optarg);
                return 1;
            }
            o->offset = num;
            break;
        case 'l':
            if (!parse_load_snapshot(o, optarg)) {
                qnbd_report(o, "Failed in parsing snapshot param `%s'",
                            optarg);
                return 1;
            }
            /* A snapshot is exported read-only. */
            /* fall through */
        case 'r':
            o->read_only = true;
            break;
        case 'k':
            if (optarg[0] != '/') {
                qnbd_report(o, "socket path must be absolute");
                return 1;
            }
            set_str(&o->sockpath, optarg);
            break;
        case 'd':
            o->disconnect = true;
            break;
        case 'c':
            set_str(&o->device, optarg);
            break;
        case 'e': {
            char *end;
            long v;

            errno = 0;
            v = strtol(optarg, &end, 0);
            if (optarg[0] == '\0' || *end != '\0' || errno != 0 ||
                v < 0 || v > INT_MAX) {
                qnbd_report(o, "Invalid shared device number '%s'", optarg);
                return 1;
            }
            o->shared = (int)v;
            break;
        }
        case 'f':
            set_str(&o->format, optarg);
            break;
        case 't':
            o->persistent = true;
            break;
        case 'x':
            if (strlen(optarg) > NBD_MAX_STRING) {
                qnbd_report(o, "export name '%s' too long", optarg);
                return 1;
            }
            set_str(&o->export_name, optarg);
            break;
        case 'D':
            if (strlen(optarg) > NBD_MAX_STRING) {
                qnbd_report(o, "export description '%s' too long", optarg);
                return 1;
            }
            set_str(&o->description, optarg);
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'V':
            o->action = QNBD_VERSION;
            return 0;
        case 'B':
            append_str(&o->bitmaps, &o->nbitmaps, optarg);
            break;
        case 'A':
            o->alloc_depth = true;
            break;
        case 'L':
            o->list = true;
            break;
        case QOPT_OBJECT:
            append_str(&o->objects, &o->nobjects, optarg);
            break;
        case QOPT_TLSCREDS:
            set_str(&o->tls_creds, optarg);
            break;
        case QOPT_TLSHOSTNAME:
            set_str(&o->tls_hostname, optarg);
            break;
        case QOPT_TLSAUTHZ:
            set_str(&o->tls_authz, optarg);
            break;
        case QOPT_IMAGE_OPTS:
            o->image_opts = true;
            break;
        case 'T': {
            int r = parse_trace(o, optarg);

            if (r < 0) {
                o->action = QNBD_TRACE_HELP;
                return 0;
            }
            if (r > 0) {
                return r;
            }
            break;
        }
        case QOPT_FORK:
            o->fork_process = true;
            break;
        case QOPT_PID_FILE:
            set_str(&o->pid_file, optarg);
            break;
        case QOPT_SELINUX_LABEL:
            set_str(&o->selinux_label, optarg);
            break;
        case QOPT_HANDSHAKE_LIMIT:
            if (!parse_number(optarg, &num) || num > UINT32_MAX) {
                qnbd_report(o, "Invalid handshake limit '%s'", optarg);
                return 1;
            }
            o->has_handshake_limit = true;
            o->handshake_limit = (uint32_t)num;
            break;
        case QOPT_PRINT_QMP:
            o->print_qmp = true;
            break;
        case QOPT_BACKING_ROOT:
            append_str(&o->backing_roots, &o->nbacking_roots, optarg);
            break;
        case QOPT_SANDBOX: {
            Error *err = NULL;

            if (!sandbox_parse_mode(optarg, &o->sandbox, &err)) {
                qnbd_report(o, "%s", error_get_pretty(err));
                error_free(err);
                return 1;
            }
            break;
        }
        case 'h':
            o->action = QNBD_HELP;
            return 0;
        default:               /* '?': getopt said why */
            return try_help(o);
        }
    }

    if (o->list) {
        o->action = QNBD_LIST;
        if (argc != optind) {
            qnbd_report(o, "List mode is incompatible with a file name");
            return 1;
        }
        if (o->export_name || o->description || o->offset || o->device ||
            o->disconnect || o->format || o->sn_id || o->sn_name ||
            o->sn_id_or_name || o->nbitmaps || o->alloc_depth ||
            o->seen_aio || o->seen_discard || o->seen_cache) {
            qnbd_report(o, "List mode is incompatible with per-device "
                        "settings");
            return 1;
        }
        if (o->fork_process) {
            qnbd_report(o, "List mode is incompatible with forking");
            return 1;
        }
    } else if (argc - optind != 1) {
        fprintf(stderr, "%s: Invalid number of arguments\n", o->prog);
        fprintf(stderr, "Try `%s --help' for more information.\n",
                o->argv0);
        return 1;
    } else {
        o->filename = xstrdup(argv[optind]);
        o->action = o->disconnect ? QNBD_DISCONNECT : QNBD_SERVE;
        if (o->export_name == NULL) {
            o->export_name = xstrdup("");
        }
    }
    return 0;
}

/* systemd's sd_listen_fds() protocol, as QEMU's check_socket_activation:
 * LISTEN_PID must be our pid; the variables are then removed so that no
 * child sees them, and the descriptors made close-on-exec.  Returns
 * LISTEN_FDS, 0 when not for us, -1 (reported) when one is not open. */
static int socket_activation(const QnbdOptions *o)
{
    const char *s = getenv("LISTEN_PID");
    uint64_t pid, nfds;

    if (s == NULL || !parse_number(s, &pid) || pid != (uint64_t)getpid()) {
        return 0;
    }
    s = getenv("LISTEN_FDS");
    if (s == NULL || !parse_number(s, &nfds) || nfds == 0 ||
        nfds > INT_MAX - 3) {
        return 0;
    }
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    for (uint64_t i = 0; i < nfds; i++) {
        int fd = 3 + (int)i;
        int fl = fcntl(fd, F_GETFD);

        if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) {
            qnbd_report(o, "Socket activation failed: invalid file "
                        "descriptor fd = %d: %s", fd, strerror(errno));
            return -1;
        }
    }
    return (int)nfds;
}

int qnbd_check(QnbdOptions *o)
{
    const char *msg = NULL;

    if (o->action == QNBD_HELP || o->action == QNBD_VERSION) {
        return 0;
    }
    int n = socket_activation(o);

    if (n < 0) {
        return 1;
    }
    o->socket_activation = (unsigned)n;
    if (o->socket_activation == 0 && o->device != NULL &&
        o->sockpath == NULL) {
        /* -c without -k: qemu-nbd's socket for the device. */
        const char *slash = strrchr(o->device, '/');

        o->sockpath = xasprintf("/var/lock/qemu-nbd-%s",
                                slash ? slash + 1 : o->device);
    }
    if (o->socket_activation == 0) {
        if (o->sockpath == NULL) {
            if (o->bind == NULL) {
                o->bind = xstrdup("0.0.0.0");
            }
            if (o->port == NULL) {
                o->port = xstrdup("10809");
            }
        }
    } else {
        if (o->device != NULL) {
            msg = "NBD device can't be set when using socket activation";
        } else if (o->sockpath != NULL) {
            msg = "Unix socket can't be set when using socket activation";
        } else if (o->bind != NULL) {
            msg = "The interface can't be set when using socket activation";
        } else if (o->port != NULL) {
            msg = "TCP port number can't be set when using socket "
                  "activation";
        } else if (o->selinux_label != NULL) {
            msg = "SELinux label can't be set when using socket activation";
        } else if (o->list) {
            msg = "List mode is incompatible with socket activation";
        }
        if (msg != NULL) {
            qnbd_report(o, "%s", msg);
            return 1;
        }
        if (o->socket_activation > 1) {
            qnbd_report(o, "%s does not support socket activation with "
                        "LISTEN_FDS > 1", o->prog);
            return 1;
        }
    }
    if (o->tls_creds != NULL) {
        if (o->device != NULL) {
            qnbd_report(o, "TLS is not supported with a host device");
            return 1;
        }
        if (o->tls_authz != NULL && o->list) {
            qnbd_report(o, "TLS authorization is incompatible with export "
                        "list");
            return 1;
        }
    } else {
        if (o->tls_authz != NULL) {
            qnbd_report(o, "--tls-authz is not permitted without "
                        "--tls-creds");
            return 1;
        }
        if (o->tls_hostname != NULL) {
            qnbd_report(o, "--tls-hostname is not permitted without "
                        "--tls-creds");
            return 1;
        }
    }
    if (o->selinux_label != NULL) {
        if (o->sockpath == NULL && o->device == NULL) {
            qnbd_report(o, "--selinux-label is not permitted without "
                        "--socket");
        } else {
            qnbd_report(o, "SELinux support not enabled in this binary");
        }
        return 1;
    }
    return 0;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

void qnbd_options_free(QnbdOptions *o)
{
    free(o->filename);
    free(o->port);
    free(o->bind);
    free(o->sockpath);
    free(o->format);
    free_strv(o->bitmaps, o->nbitmaps);
    free(o->sn_id);
    free(o->sn_name);
    free(o->sn_id_or_name);
    free(o->cache_mode);
    free(o->aio);
    free(o->detect_zeroes);
    free(o->device);
    free(o->export_name);
    free(o->description);
    free_strv(o->objects, o->nobjects);
    free(o->tls_creds);
    free(o->tls_authz);
    free(o->tls_hostname);
    free(o->pid_file);
    free(o->selinux_label);
    free(o->trace_file);
    free_strv(o->backing_roots, o->nbacking_roots);
    memset(o, 0, sizeof(*o));
}

void qnbd_usage(const QnbdOptions *o)
{
    printf(
"Usage: %s [OPTIONS] FILE\n"
"  or:  %s -L [OPTIONS]\n"
"blockd's drop-in for qemu-nbd: serve FILE over NBD on blockd's engine\n"
"\n"
"  -h, --help                display this help and exit\n"
"  -V, --version             output version information and exit\n"
"\n"
"Connection properties:\n"
"  -p, --port=PORT           port to listen on (default `10809')\n"
"  -b, --bind=IFACE          interface to bind to (default `0.0.0.0')\n"
"  -k, --socket=PATH         path to the unix socket\n"
"  -e, --shared=NUM          device can be shared by NUM clients (default '1')\n"
"  -t, --persistent          don't exit on the last connection\n"
"  -v, --verbose             display extra debugging information\n"
"  -x, --export-name=NAME    expose export by name (default is empty string)\n"
"  -D, --description=TEXT    export a human-readable description\n"
"      --handshake-limit=N   seconds a client may take to negotiate\n"
"                            (default 10, 0 = no limit)\n"
"\n"
"Exposing part of the image:\n"
"  -o, --offset=OFFSET       offset into the image\n"
"  -A, --allocation-depth    expose the allocation depth\n"
"  -B, --bitmap=NAME         expose a persistent dirty bitmap\n"
"\n"
"General purpose options:\n"
"  -L, --list                list exports available from another NBD server\n"
"  --object type,id=ID,...   define an object such as 'secret' for providing\n"
"                            passwords and/or encryption keys\n"
"  --tls-creds=ID            use id of an earlier --object to provide TLS\n"
"  --tls-authz=ID            use id of an earlier --object to provide\n"
"                            authorization\n"
"  --tls-hostname=NAME       (with -L) the name the server's certificate\n"
"                            must carry\n"
"  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
"                            specify tracing options (-T help lists the\n"
"                            trace points)\n"
"  --fork                    fork off the server process and exit the parent\n"
"                            once the server is running\n"
"  --pid-file=PATH           store the server's process ID in the given file\n"
"  --selinux-label=LABEL     (not supported by this binary)\n"
"  --print-qmp               print the QMP commands this command line runs\n"
"                            and the equivalent blockd command line, then\n"
"                            exit\n"
"  --backing-root=DIR        backing files named inside images must be in\n"
"                            DIR (repeatable; default: anywhere)\n"
"  --sandbox=on|off|log      seccomp allow-list once the server runs\n"
"                            (default on; see blockd --sandbox)\n"
"\n"
"Kernel NBD client support:\n"
"  -c, --connect=DEV         connect FILE to the local NBD device DEV\n"
"  -d, --disconnect          disconnect the specified device\n"
"\n"
"Block device options:\n"
"  -f, --format=FORMAT       set image format (raw, qcow2, ...)\n"
"  -r, --read-only           export read-only\n"
"  -s, --snapshot            use FILE as an external snapshot, create a temporary\n"
"                            file with backing_file=FILE, redirect the write to\n"
"                            the temporary one\n"
"  -l, --load-snapshot=SNAPSHOT_PARAM\n"
"                            load an internal snapshot inside FILE and export it\n"
"                            as an read-only device, SNAPSHOT_PARAM format is\n"
"                            'snapshot.id=[ID],snapshot.name=[NAME]', or\n"
"                            '[ID_OR_NAME]'\n"
"  -n, --nocache             disable host cache\n"
"      --cache=MODE          set cache mode used to access the disk image, the\n"
"                            valid options are: 'none', 'writeback' (default),\n"
"                            'writethrough', 'directsync' and 'unsafe'\n"
"      --aio=MODE            set AIO mode (native, io_uring or threads)\n"
"      --discard=MODE        set discard mode (ignore, unmap)\n"
"      --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)\n"
"      --image-opts          treat FILE as a full set of image options\n"
"\n"
"See docs/blockd-nbd.md for how each option becomes a QMP command.\n",
    o->prog, o->prog);
}
