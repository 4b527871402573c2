/* blockctl-opts.c - blockctl's command line (see blockctl-opts.h). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/blockctl-opts.h"
#include "client/qmpc.h"
#include "util/cleanup.h"
#include "util/util.h"

#define NBD_DEFAULT_PORT "10809"

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

static void usage_hint(void)
{
    fprintf(stderr, "Try 'blockctl --help' for more information.\n");
}

BlockctlParse blockctl_parse(BlockctlOptions *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", required_argument, NULL, 'j' },
        { "pretty", no_argument, NULL, 'p' },
        { "events", no_argument, NULL, 'e' },
        { "timeout", required_argument, NULL, 't' },
        { "count", required_argument, NULL, 'n' },
        { "wait", no_argument, NULL, 'w' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t u;
    int opt;

    *o = (BlockctlOptions){ .timeout_ms = -1 };
    /* optind = 0 restarts glibc's getopt completely (also its place
     * inside a cluster of short options), so a second call starts
     * afresh.  '+': options end at COMMAND, so a value may start with
     * '-'. */
    optind = 0;
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "+s:j:pet:n:whV", longopts,
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
                return BLOCKCTL_PARSE_ERROR;
            }
            break;
        case 'n':
            if (!parse_uint64(optarg, &u) || u == 0 || u > UINT_MAX) {
                fprintf(stderr, "blockctl: invalid --count '%s'\n", optarg);
                return BLOCKCTL_PARSE_ERROR;
            }
            o->count = (unsigned)u;
            break;
        case 'w':
            o->wait = true;
            break;
        case 'h':
            return BLOCKCTL_PARSE_HELP;
        case 'V':
            return BLOCKCTL_PARSE_VERSION;
        default:
            usage_hint();
            return BLOCKCTL_PARSE_ERROR;
        }
    }
    o->words = argv + optind;
    o->nwords = argc - optind;
    if (!o->addr) {
        o->addr = getenv("BLOCKCTL_SOCKET");
    }
    if (!o->addr || !*o->addr) {
        fprintf(stderr, "blockctl: no QMP socket given (-s SOCKET or "
                "$BLOCKCTL_SOCKET)\n");
        usage_hint();
        return BLOCKCTL_PARSE_ERROR;
    }
    if (o->json && o->nwords > 0) {
        fprintf(stderr, "blockctl: --json takes no COMMAND\n");
        return BLOCKCTL_PARSE_ERROR;
    }
    if (o->count && !o->events) {
        fprintf(stderr, "blockctl: --count needs --events\n");
        return BLOCKCTL_PARSE_ERROR;
    }
    return BLOCKCTL_PARSE_RUN;
}

/* "save-config FILE": x-blockd-save-config with FILE made absolute here
 * (the daemon's working directory is not ours). */
static json_object *save_config_request(const char *file)
{
    json_object *req = json_object_new_object();
    json_object *args = json_object_new_object();
    char cwd[PATH_MAX];
    CLEANUP_FREE char *abs = NULL;

    if (file[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL) {
        abs = xasprintf("%s/%s", cwd, file);
    } else {
        abs = xstrdup(file);
    }
    json_object_object_add(args, "filename", json_object_new_string(abs));
    json_object_object_add(req, "execute",
                           json_object_new_string("x-blockd-save-config"));
    json_object_object_add(req, "arguments", args);
    return req;
}

bool blockctl_build_request(const BlockctlOptions *o, json_object **req,
                            Error **errp)
{
    bool script = o->nwords == 1 && strcmp(o->words[0], "-") == 0;
    json_object *args;

    *req = NULL;
    if (o->nwords == 2 && strcmp(o->words[0], "save-config") == 0 &&
        strchr(o->words[1], '=') == NULL) {
        *req = save_config_request(o->words[1]);
    } else if (o->nwords > 0 && strcmp(o->words[0], "job-wait") == 0) {
        if (o->nwords != 2 || strchr(o->words[1], '=') != NULL) {
            error_setg(errp, "job-wait takes one job ID");
            return false;
        }
        return true;             /* no request: blockctl follows the job */
    } else if (o->json) {
        *req = qmpc_parse_raw(o->json, errp);
    } else if (o->nwords > 0 && !script) {
        args = qmpc_build_args(o->words[0], o->words + 1, o->nwords - 1,
                               errp);
        if (args) {
            *req = json_object_new_object();
            json_object_object_add(*req, "execute",
                                   json_object_new_string(o->words[0]));
            json_object_object_add(*req, "arguments", args);
        }
    } else {
        return true;
    }
    return *req != NULL;
}

BlockctlParse blockctl_parse_list(BlockctlListOptions *o, int argc,
                                  char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'P' },
        { "fd", required_argument, NULL, 'F' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = NULL, *host = NULL, *port = NULL;
    uint64_t u;
    bool have_fd = false;
    int opt;

    *o = (BlockctlListOptions){
        .addr = { .type = SOCK_ADDR_UNIX },
        .nbd = { .timeout_ms = BLOCKCTL_GREETING_TIMEOUT_MS },
    };
    optind = 0;             /* a fresh getopt, as in blockctl_parse() */
    opterr = 1;
    while ((opt = getopt_long(argc, argv, "s:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case 'H':
            host = optarg;
            break;
        case 'P':
            port = optarg;
            break;
        case 'F':
            if (!parse_uint64(optarg, &u) || u > INT_MAX) {
                fprintf(stderr, "blockctl: invalid --fd '%s'\n", optarg);
                return BLOCKCTL_PARSE_ERROR;
            }
            o->addr.fd = (int)u;
            have_fd = true;
            break;
        case 't':
            if (!parse_seconds(optarg, &o->nbd.timeout_ms)) {
                fprintf(stderr, "blockctl: invalid --timeout '%s' "
                        "(seconds expected)\n", optarg);
                return BLOCKCTL_PARSE_ERROR;
            }
            break;
        case 'h':
            return BLOCKCTL_PARSE_HELP;
        default:
            usage_hint();
            return BLOCKCTL_PARSE_ERROR;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "blockctl: list: unexpected argument '%s'\n",
                argv[optind]);
        usage_hint();
        return BLOCKCTL_PARSE_ERROR;
    }
    if ((path != NULL) + (host != NULL || port != NULL) + have_fd != 1) {
        fprintf(stderr, "blockctl: list needs one server address: "
                "-s PATH, --host HOST [--port PORT] or --fd N\n");
        usage_hint();
        return BLOCKCTL_PARSE_ERROR;
    }
    if (path) {
        o->addr.path = path;
    } else if (have_fd) {
        o->addr.type = SOCK_ADDR_FD;
    } else {
        o->addr.type = SOCK_ADDR_INET;
        o->addr.host = host ? host : "localhost";
        o->addr.port = port ? port : NBD_DEFAULT_PORT;
    }
    return BLOCKCTL_PARSE_RUN;
}
