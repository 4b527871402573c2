/* options.c - see options.h. */
#include "daemon/options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"
#include "util/util.h"

enum {
    LONG_CHARDEV = 256,
    LONG_MONITOR,
    LONG_QMP,
    LONG_BLOCKDEV,
    LONG_OBJECT,
    LONG_NBD_SERVER,
    LONG_EXPORT,
    LONG_PIDFILE,
    LONG_DAEMONIZE,
    LONG_BACKING_ROOT,
    LONG_SANDBOX,
    LONG_RUNAS,
    LONG_SANDBOX_SELFTEST,
    LONG_CONFIG,
    LONG_LOG_FORMAT,
    LONG_METRICS,
    LONG_JOB_NICE,
};

static const struct option long_options[] = {
    { "chardev", required_argument, NULL, LONG_CHARDEV },
    { "monitor", required_argument, NULL, LONG_MONITOR },
    { "qmp", required_argument, NULL, LONG_QMP },
    { "blockdev", required_argument, NULL, LONG_BLOCKDEV },
    { "object", required_argument, NULL, LONG_OBJECT },
    { "nbd-server", required_argument, NULL, LONG_NBD_SERVER },
    { "export", required_argument, NULL, LONG_EXPORT },
    { "pidfile", required_argument, NULL, LONG_PIDFILE },
    { "daemonize", no_argument, NULL, LONG_DAEMONIZE },
    { "backing-root", required_argument, NULL, LONG_BACKING_ROOT },
    { "sandbox", required_argument, NULL, LONG_SANDBOX },
    { "runas", required_argument, NULL, LONG_RUNAS },
    /* Test only, not in --help: once the sandbox is on, make a forbidden
     * call (execve), which must kill the daemon. */
    { "x-sandbox-selftest", no_argument, NULL, LONG_SANDBOX_SELFTEST },
    { "config", required_argument, NULL, LONG_CONFIG },
    { "log-format", required_argument, NULL, LONG_LOG_FORMAT },
    { "metrics", required_argument, NULL, LONG_METRICS },
    { "job-nice", required_argument, NULL, LONG_JOB_NICE },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

static const struct {
    const char *option;
    const char *command;
} kinds[] = {
    [OPT_CHARDEV] = { "--chardev", NULL },
    [OPT_MONITOR] = { "--monitor", NULL },
    [OPT_QMP] = { "--qmp", NULL },
    [OPT_BLOCKDEV] = { "--blockdev", "blockdev-add" },
    [OPT_OBJECT] = { "--object", "object-add" },
    [OPT_NBD_SERVER] = { "--nbd-server", "nbd-server-start" },
    [OPT_EXPORT] = { "--export", "block-export-add" },
    [OPT_CONFIG] = { "--config", NULL },
};

const char *option_command(OptionKind kind)
{
    return kinds[kind].command;
}

const char *option_name(OptionKind kind)
{
    return kinds[kind].option;
}

static void add_action(Options *o, OptionKind kind, const char *value)
{
    o->actions = xrealloc(o->actions,
                          (o->nactions + 1) * sizeof(*o->actions));
    o->actions[o->nactions].kind = kind;
    o->actions[o->nactions].value = xstrdup(value);
    o->nactions++;
}

/* --job-nice N: decimal digits only (no sign, space or 0x), 0 to
 * DAEMON_JOB_NICE_MAX (19 is the lowest priority a thread can have). */
static bool parse_job_nice(const char *s, int *out, Error **errp)
{
    unsigned long v;
    char *end;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 ||
        v > DAEMON_JOB_NICE_MAX) {
        error_setg(errp, "--job-nice: '%s' is not an integer from 0 to %d",
                   s, DAEMON_JOB_NICE_MAX);
        return false;
    }
    *out = (int)v;
    return true;
}

bool options_parse(Options *o, int argc, char **argv, Error **errp)
{
    int c;

    memset(o, 0, sizeof(*o));
    o->defaults = argc <= 1;
    o->job_nice = DAEMON_JOB_NICE;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hVv", long_options, NULL)) != -1) {
        switch (c) {
        case LONG_CHARDEV:
            add_action(o, OPT_CHARDEV, optarg);
            break;
        case LONG_MONITOR:
            add_action(o, OPT_MONITOR, optarg);
            break;
        case LONG_QMP:
            add_action(o, OPT_QMP, optarg);
            break;
        case LONG_BLOCKDEV:
            add_action(o, OPT_BLOCKDEV, optarg);
            break;
        case LONG_OBJECT:
            add_action(o, OPT_OBJECT, optarg);
            break;
        case LONG_NBD_SERVER:
            add_action(o, OPT_NBD_SERVER, optarg);
            break;
        case LONG_EXPORT:
            add_action(o, OPT_EXPORT, optarg);
            break;
        case LONG_PIDFILE:
            free(o->pidfile);
            o->pidfile = xstrdup(optarg);
            break;
        case LONG_CONFIG:
            add_action(o, OPT_CONFIG, optarg);
            break;
        case LONG_LOG_FORMAT:
            free(o->log_format);
            o->log_format = xstrdup(optarg);
            break;
        case LONG_METRICS:
            free(o->metrics);
            o->metrics = xstrdup(optarg);
            break;
        case LONG_JOB_NICE:
            if (!parse_job_nice(optarg, &o->job_nice, errp)) {
                return false;
            }
            break;
        case LONG_DAEMONIZE:
            o->daemonize = true;
            break;
        case LONG_BACKING_ROOT:
            o->backing_roots = xrealloc(o->backing_roots,
                                        (o->nbacking_roots + 1) *
                                        sizeof(*o->backing_roots));
            o->backing_roots[o->nbacking_roots++] = xstrdup(optarg);
            break;
        case LONG_SANDBOX:
            if (!sandbox_parse_mode(optarg, &o->sandbox, errp)) {
                return false;
            }
            break;
        case LONG_RUNAS:
            free(o->runas);
            o->runas = xstrdup(optarg);
            break;
        case LONG_SANDBOX_SELFTEST:
            o->sandbox_selftest = true;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'h':
            o->help = true;
            break;
        case 'V':
            o->version = true;
            break;
        case ':':
            error_setg(errp, "option '%s' requires an argument",
                       argv[optind - 1]);
            return false;
        default:
            if (optopt != 0) {
                error_setg(errp, "invalid option -- '%c'", optopt);
            } else {
                error_setg(errp, "unrecognized option '%s'",
                           argv[optind - 1]);
            }
            return false;
        }
    }
    if (optind < argc) {
        error_setg(errp, "Unexpected argument: %s", argv[optind]);
        return false;
    }
    return true;
}

void options_free(Options *o)
{
    for (size_t i = 0; i < o->nactions; i++) {
        free(o->actions[i].value);
    }
    free(o->actions);
    free(o->pidfile);
    free(o->runas);
    free(o->log_format);
    free(o->metrics);
    for (size_t i = 0; i < o->nbacking_roots; i++) {
        free(o->backing_roots[i]);
    }
    free(o->backing_roots);
    memset(o, 0, sizeof(*o));
}

void options_usage(const char *prog)
{
    printf(
"Usage: %s [options]\n"
"blockd - a storage daemon that serves disk images over NBD, controlled\n"
"with QMP.  With no options it serves a scratch disk on a default socket.\n"
"\n"
"  -h, --help             print this help and exit\n"
"  -V, --version          print the version and exit\n"
"  -v, --verbose          log debug messages\n"
"\n"
"  --chardev socket,id=ID,path=PATH[,server=on|off][,wait=on|off]\n"
"  --chardev socket,id=ID,host=HOST,port=PORT[,server=on|off][,wait=on|off]\n"
"                         a socket for a monitor (server=off: connect out)\n"
"  --monitor [chardev=]ID[,mode=control][,pretty=on|off]\n"
"                         a QMP monitor on the chardev ID\n"
"  --qmp unix:PATH | tcp:HOST:PORT\n"
"                         short for --chardev + --monitor (listening)\n"
"\n"
"  --blockdev OPTIONS     blockdev-add\n"
"  --object OPTIONS       object-add\n"
"  --nbd-server OPTIONS   nbd-server-start (addr.type=unix,addr.path=...)\n"
"  --export OPTIONS       block-export-add\n"
"                         OPTIONS is JSON ('{\"driver\": ...}') or\n"
"                         key=value,... with dotted keys for members of\n"
"                         members (file.filename=disk.img)\n"
"  --config FILE          run the QMP commands in FILE, one JSON object a\n"
"                         line ({\"execute\": ..., \"arguments\": ...});\n"
"                         '#' starts a comment line (x-blockd-save-config\n"
"                         writes such a file)\n"
"\n"
"  --pidfile PATH         write the process id to PATH\n"
"  --daemonize            run in the background once every socket listens\n"
"  --backing-root DIR     backing files named inside images must be in DIR\n"
"                         (repeatable; default: anywhere, as QEMU)\n"
"  --sandbox on|off|log   seccomp allow-list once start-up is done\n"
"                         (default on; log: unlisted calls are logged by\n"
"                         the kernel instead of killing the daemon)\n"
"  --runas USER[:GROUP]   drop to USER once the sockets are bound\n"
"  --metrics unix:PATH | tcp:HOST:PORT\n"
"                         serve Prometheus metrics (GET /metrics) there\n"
"  --job-nice N           block jobs (mirror, backup, stream, commit,\n"
"                         blockdev-create) copy N nice steps below the\n"
"                         daemon's CPU priority, 0 to 19 (default 10;\n"
"                         0: at the daemon's own)\n"
"  --log-format FORMAT    text, journal (<N> level prefixes) or json (one\n"
"                         object a line); default: journal when stderr is\n"
"                         the systemd journal, else text\n"
"\n"
"Under systemd: READY=1 goes to $NOTIFY_SOCKET once every socket listens\n"
"(Type=notify), STOPPING=1 at shutdown; sockets passed by socket\n"
"activation (LISTEN_FDS) are used where an option names their path or\n"
"address, or by name: --chardev socket,id=ID,fd=NAME,server=on and\n"
"--nbd-server addr.type=fd,addr.str=NAME (FileDescriptorName=NAME).\n"
"\n"
"Options are carried out in the order given; the daemon exits with status\n"
"1 if one of them fails.  SIGTERM, SIGINT and the QMP command 'quit' stop\n"
"it cleanly.\n", prog);
}
