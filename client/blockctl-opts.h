/* blockctl-opts.h - blockctl's command line, parsed without side effects.
 *
 *   argv ──blockctl_parse()──────> BlockctlOptions ──blockctl_build_request()
 *        ──blockctl_parse_list()─> BlockctlListOptions        ──> request
 *
 * Nothing here connects, exits or reads stdin, so the fuzzer
 * (tests/fuzz/fuzz-keyval-cli.c) and tests can call it many times;
 * client/blockctl.c acts on the result.  Messages go to stderr exactly
 * as blockctl prints them (getopt's own for unknown options).
 */
#ifndef BLOCKD_CLIENT_BLOCKCTL_OPTS_H
#define BLOCKD_CLIENT_BLOCKCTL_OPTS_H

#include <stdbool.h>

#include <json-c/json.h>

#include "nbd/client.h"
#include "util/error.h"
#include "util/sock.h"

enum {
    BLOCKCTL_EXIT_REPLY_ERROR = 1,  /* an error reply, bad arguments */
    BLOCKCTL_EXIT_CONNECTION = 2,   /* could not connect, link failed */
};

/* How long to wait for the greeting when no --timeout is given. */
#define BLOCKCTL_GREETING_TIMEOUT_MS (30 * 1000)

/* What parsing decided. */
typedef enum BlockctlParse {
    BLOCKCTL_PARSE_RUN,         /* go on with the options */
    BLOCKCTL_PARSE_HELP,        /* -h: print usage on stdout, exit 0 */
    BLOCKCTL_PARSE_VERSION,     /* -V: print the version, exit 0 */
    BLOCKCTL_PARSE_ERROR,       /* reported on stderr: exit 1 */
} BlockctlParse;

typedef struct BlockctlOptions {
    const char *addr;       /* -s or $BLOCKCTL_SOCKET (borrowed) */
    const char *json;       /* --json TEXT, or NULL (borrowed) */
    bool pretty;
    bool events;
    int timeout_ms;         /* --timeout; -1 = none */
    unsigned count;         /* --count; 0 = no limit */
    bool wait;              /* --wait: a job command waits for its job */
    char **words;           /* COMMAND key=value ... (argv, borrowed) */
    int nwords;
} BlockctlOptions;

/* blockctl [OPTIONS] [COMMAND ...]: argv[0] is the program.  Restarts
 * getopt, so it may be called again with another argv. */
BlockctlParse blockctl_parse(BlockctlOptions *o, int argc, char **argv);

/* The one request o asks for (save-config FILE, --json, COMMAND
 * key=value...) in *req, owned by the caller; *req = NULL when there is
 * none (script on stdin, --events, the shell, job-wait ID).  false with
 * errp set on bad arguments. */
bool blockctl_build_request(const BlockctlOptions *o, json_object **req,
                            Error **errp);

/* "blockctl list ...": argv[0] is "list". */
typedef struct BlockctlListOptions {
    SockAddr addr;          /* strings borrowed from argv */
    NbdClientOpts nbd;      /* timeout_ms set */
} BlockctlListOptions;

BlockctlParse blockctl_parse_list(BlockctlListOptions *o, int argc,
                                  char **argv);

#endif
