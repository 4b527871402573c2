/* config-log.c - see config-log.h. */
#include "daemon/config-log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "qapi-commands.h"
#include "qapi-types.h"
#include "util/cleanup.h"
#include "util/util.h"
#include "util/vector.h"

typedef struct ConfigRecord {
    char *key;                /* "node:NAME", ... (config-log.h) */
    char *command;
    json_object *args;        /* owned; normalized */
    bool inline_secret;       /* a secret given with data=: not savable
                               * (its data is not kept here) */
} ConfigRecord;
DEFINE_VECTOR_TYPE(ConfigRecordVec, ConfigRecord);

struct ConfigLog {
    ConfigRecordVec recs;     /* in the order they were created */
};

ConfigLog *config_log_new(void)
{
    return XNEW(ConfigLog);
}

static void record_clear(ConfigRecord *r)
{
    free(r->key);
    free(r->command);
    json_object_put(r->args);
}

void config_log_free(ConfigLog *log)
{
    if (log == NULL) {
        return;
    }
    for (size_t i = 0; i < log->recs.len; i++) {
        record_clear(&log->recs.ptr[i]);
    }
    ConfigRecordVec_reset(&log->recs);
    free(log);
}

static ssize_t find(ConfigLog *log, const char *key)
{
    for (size_t i = 0; i < log->recs.len; i++) {
        if (strcmp(log->recs.ptr[i].key, key) == 0) {
            return (ssize_t)i;
        }
    }
    return -1;
}

static void forget(ConfigLog *log, const char *key)
{
    ssize_t i = find(log, key);

    if (i >= 0) {
        record_clear(&log->recs.ptr[i]);
        ConfigRecordVec_remove(&log->recs, (size_t)i);
    }
}

/* Append (a key created again goes last: after what it may now use). */
static void remember(ConfigLog *log, char *key, const char *command,
                     json_object *args)
{
    ConfigRecord r = { .key = key, .command = xstrdup(command),
                       .args = args };
    json_object *type, *data;

    forget(log, key);
    /* Secrets are written as file= references only: inline data is not
     * kept, and saving refuses it (config_log_save). */
    if (strcmp(command, "object-add") == 0 &&
        json_object_object_get_ex(args, "qom-type", &type) &&
        strcmp(json_object_get_string(type), "secret") == 0 &&
        json_object_object_get_ex(args, "data", &data)) {
        json_object_object_del(args, "data");
        r.inline_secret = true;
    }
    ConfigRecordVec_append(&log->recs, r);
}

static const char *str_member(json_object *o, const char *name)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, name, &v) ||
        !json_object_is_type(v, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(v);
}

/* Parse args as the command's type and print it back: typed JSON
 * whatever the input was (JSON or key=value strings).  NULL if the
 * arguments do not parse (cannot happen after the command ran). */
#define NORMALIZE(Type, args, flags)                                      \
    ({                                                                    \
        Type *v_ = NULL;                                                  \
        json_object *j_ = NULL;                                           \
        if (qapi_parse_##Type(args, NULL, flags, &v_, NULL)) {            \
            j_ = qapi_##Type##_to_json(v_);                               \
        }                                                                 \
        qapi_free_##Type(v_);                                             \
        j_;                                                               \
    })

void config_log_commit(ConfigLog *log, const char *name, json_object *args,
                       unsigned flags)
{
    json_object *norm = NULL;
    const char *id;

    if (strcmp(name, "object-add") == 0) {
        norm = NORMALIZE(ObjectOptions, args, flags);
        id = str_member(norm, "id");
        if (id != NULL) {
            remember(log, xasprintf("object:%s", id), name, norm);
            return;
        }
    } else if (strcmp(name, "object-del") == 0) {
        if ((id = str_member(args, "id")) != NULL) {
            CLEANUP_FREE char *key = xasprintf("object:%s", id);
            forget(log, key);
        }
    } else if (strcmp(name, "blockdev-add") == 0) {
        norm = NORMALIZE(BlockdevOptions, args, flags);
        /* Without a node-name the node cannot be named again anyway. */
        id = str_member(norm, "node-name");
        if (id != NULL) {
            remember(log, xasprintf("node:%s", id), name, norm);
            return;
        }
    } else if (strcmp(name, "blockdev-del") == 0) {
        if ((id = str_member(args, "node-name")) != NULL) {
            CLEANUP_FREE char *key = xasprintf("node:%s", id);
            forget(log, key);
        }
    } else if (strcmp(name, "nbd-server-start") == 0) {
        norm = NORMALIZE(QmpNbdServerStartArgs, args, flags);
        if (norm != NULL) {
            remember(log, xstrdup("nbd-server"), name, norm);
            return;
        }
    } else if (strcmp(name, "nbd-server-stop") == 0) {
        forget(log, "nbd-server");
    } else if (strcmp(name, "block-export-add") == 0) {
        norm = NORMALIZE(BlockExportOptions, args, flags);
        id = str_member(norm, "id");
        if (id != NULL) {
            remember(log, xasprintf("export:%s", id), name, norm);
            return;
        }
    } else if (strcmp(name, "block-export-del") == 0 ||
               strcmp(name, "nbd-server-remove") == 0) {
        id = str_member(args, strcmp(name, "block-export-del") == 0
                              ? "id" : "name");
        if (id != NULL) {
            CLEANUP_FREE char *key = xasprintf("export:%s", id);
            forget(log, key);
        }
    } else if (strcmp(name, "nbd-server-add") == 0 && flags == 0) {
        id = str_member(args, "name");
        if (id == NULL) {
            id = str_member(args, "device");
        }
        if (id != NULL) {
            remember(log, xasprintf("export:%s", id), name,
                     json_object_get(args));
        }
    }
    /* Dirty bitmaps are not logged: what block-dirty-bitmap-add,
     * -remove, -enable, -disable, -merge and transactions leave is read
     * back from the nodes when saving (save_bitmaps). */
    json_object_put(norm);
}

/* ---- dirty bitmaps --------------------------------------------------
 *
 * A non-persistent bitmap is written as the block-dirty-bitmap-add that
 * makes it again: its node, name, granularity and, when it does not
 * record, disabled.  Its bits are not (a restarted daemon's bitmap
 * starts clean); persistent bitmaps are loaded by their image and need
 * no line.  A bitmap's line follows the record that creates its node:
 * the node's own blockdev-add, or the one that names it as a child
 * inline (so before any export that exposes it).  Bitmaps of nodes
 * without a name given by the user (#blockN) cannot be named again and
 * are left out. */

/* Every named node's answer in query-named-block-nodes, by name; NULL
 * if the query fails. */
static json_object *query_nodes(QmpCtx *ctx)
{
    CLEANUP_JSON json_object *ret = NULL;
    json_object *by_name;
    QmpCtx c = *ctx;

    c.defer = NULL;
    c.committed = NULL;
    if (!qmp_execute(&c, "query-named-block-nodes", NULL, 0, &ret, NULL) ||
        !json_object_is_type(ret, json_type_array)) {
        return NULL;
    }
    by_name = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        json_object *n = json_object_array_get_idx(ret, i);
        const char *name = str_member(n, "node-name");

        if (name != NULL) {
            json_object_object_add(by_name, name, json_object_get(n));
        }
    }
    return by_name;
}

/* The block-dirty-bitmap-add lines of node's non-persistent bitmaps
 * (info: its query-named-block-nodes entry), appended to out. */
static void bitmap_lines(const char *node, json_object *info,
                         json_object *out)
{
    json_object *bitmaps;

    if (node[0] == '#' ||
        !json_object_object_get_ex(info, "dirty-bitmaps", &bitmaps)) {
        return;
    }
    for (size_t i = 0; i < json_object_array_length(bitmaps); i++) {
        json_object *b = json_object_array_get_idx(bitmaps, i);
        json_object *v, *args, *cmd;
        const char *name = str_member(b, "name");

        if (name == NULL ||
            (json_object_object_get_ex(b, "persistent", &v) &&
             json_object_get_boolean(v))) {
            continue;
        }
        args = json_object_new_object();
        json_object_object_add(args, "node", json_object_new_string(node));
        json_object_object_add(args, "name", json_object_new_string(name));
        if (json_object_object_get_ex(b, "granularity", &v)) {
            json_object_object_add(args, "granularity",
                                   json_object_get(v));
        }
        if (json_object_object_get_ex(b, "recording", &v) &&
            !json_object_get_boolean(v)) {
            json_object_object_add(args, "disabled",
                                   json_object_new_boolean(true));
        }
        cmd = json_object_new_object();
        json_object_object_add(cmd, "execute",
                               json_object_new_string(
                                   "block-dirty-bitmap-add"));
        json_object_object_add(cmd, "arguments", args);
        json_object_array_add(out, cmd);
    }
}

/* Add to names every "node-name" string in the options tree o. */
static void collect_node_names(json_object *o, json_object *names)
{
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++) {
            collect_node_names(json_object_array_get_idx(o, i), names);
        }
        return;
    }
    if (!json_object_is_type(o, json_type_object)) {
        return;
    }
    json_object_object_foreach(o, key, val) {
        if (strcmp(key, "node-name") == 0 &&
            json_object_is_type(val, json_type_string)) {
            json_object_object_add(names, json_object_get_string(val),
                                   NULL);
        } else {
            collect_node_names(val, names);
        }
    }
}

/* Append to out the bitmap lines that follow rec (a blockdev-add
 * record): those of the nodes it creates, its own and its inline
 * children, except those that have their own record.  Each node once:
 * done keeps the names already written. */
static void record_bitmaps(ConfigLog *log, const ConfigRecord *rec,
                           json_object *nodes, json_object *done,
                           json_object *out)
{
    CLEANUP_JSON json_object *names = json_object_new_object();

    if (nodes == NULL || strncmp(rec->key, "node:", 5) != 0) {
        return;
    }
    collect_node_names(rec->args, names);
    json_object_object_foreach(names, name, unused) {
        json_object *info;
        bool own = strcmp(name, rec->key + 5) == 0;

        (void)unused;
        if (json_object_object_get_ex(done, name, NULL) ||
            !json_object_object_get_ex(nodes, name, &info)) {
            continue;
        }
        if (!own) {
            CLEANUP_FREE char *key = xasprintf("node:%s", name);
            if (find(log, key) >= 0) {
                continue;
            }
        }
        json_object_object_add(done, name, NULL);
        bitmap_lines(name, info, out);
    }
}

/* The names a query returns in member (one list of objects); NULL when
 * the query is not available (then nothing is filtered by it). */
static json_object *query_names(QmpCtx *ctx, const char *query,
                                const char *member)
{
    CLEANUP_JSON json_object *ret = NULL;
    json_object *names;
    QmpCtx c = *ctx;

    c.defer = NULL;
    c.committed = NULL;
    if (!qmp_execute(&c, query, NULL, 0, &ret, NULL) ||
        !json_object_is_type(ret, json_type_array)) {
        return NULL;
    }
    names = json_object_new_object();
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        const char *n = str_member(json_object_array_get_idx(ret, i),
                                   member);
        if (n != NULL) {
            json_object_object_add(names, n, NULL);
        }
    }
    return names;
}

static bool name_live(json_object *names, const char *name)
{
    return names == NULL || json_object_object_get_ex(names, name, NULL);
}

/* Whether the thing rec created is still there. */
static bool record_live(const ConfigRecord *r, json_object *nodes,
                        json_object *objects, json_object *exports,
                        bool server)
{
    const char *colon = strchr(r->key, ':');
    const char *name = colon != NULL ? colon + 1 : "";

    if (strncmp(r->key, "node:", 5) == 0) {
        return name_live(nodes, name);
    }
    if (strncmp(r->key, "object:", 7) == 0) {
        return name_live(objects, name);
    }
    if (strncmp(r->key, "export:", 7) == 0) {
        return server && name_live(exports, name);
    }
    if (strcmp(r->key, "nbd-server") == 0) {
        return server;
    }
    return true;
}

static bool nbd_server_running(QmpCtx *ctx)
{
    CLEANUP_JSON json_object *ret = NULL;
    QmpCtx c = *ctx;

    c.defer = NULL;
    c.committed = NULL;
    return qmp_execute(&c, "query-nbd-server", NULL, 0, &ret, NULL);
}

static bool write_all(int fd, const char *s, Error **errp)
{
    if (write_full(fd, s, strlen(s)) < 0) {
        error_setg_errno(errp, errno, "Could not write the configuration");
        return false;
    }
    return true;
}

bool config_log_save(ConfigLog *log, QmpCtx *ctx, const char *filename,
                     Error **errp)
{
    CLEANUP_JSON json_object *nodes =
        query_names(ctx, "query-named-block-nodes", "node-name");
    CLEANUP_JSON json_object *node_info = query_nodes(ctx);
    CLEANUP_JSON json_object *bitmaps_done = json_object_new_object();
    CLEANUP_JSON json_object *objects =
        query_names(ctx, "query-objects", "id");
    CLEANUP_JSON json_object *exports =
        query_names(ctx, "query-block-exports", "id");
    bool server = nbd_server_running(ctx);
    CLEANUP_FREE char *tmp = xasprintf("%s.XXXXXX", filename);
    CLEANUP_CLOSE int fd = -1;
    char when[64];
    time_t now = time(NULL);
    struct tm tm;

    for (size_t i = 0; i < log->recs.len; i++) {
        const ConfigRecord *r = &log->recs.ptr[i];
        if (r->inline_secret &&
            record_live(r, nodes, objects, exports, server)) {
            error_setg(errp, "Secret '%s' was given inline (data=): "
                       "x-blockd-save-config writes secrets only as file= "
                       "references; create it with file= to save the "
                       "configuration", strchr(r->key, ':') + 1);
            return false;
        }
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not create '%s'", tmp);
        return false;
    }
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    CLEANUP_FREE char *head = xasprintf(
        "# blockd configuration, written by blockd %s (x-blockd-save-config)"
        "\n# at %s.  Run with: blockd --config FILE\n", BLOCKD_VERSION, when);
    if (!write_all(fd, head, errp)) {
        goto fail;
    }
    for (size_t i = 0; i < log->recs.len; i++) {
        const ConfigRecord *r = &log->recs.ptr[i];
        CLEANUP_JSON json_object *cmds = NULL;
        json_object *cmd;

        if (!record_live(r, nodes, objects, exports, server)) {
            continue;
        }
        cmds = json_object_new_array();
        cmd = json_object_new_object();
        json_object_object_add(cmd, "execute",
                               json_object_new_string(r->command));
        json_object_object_add(cmd, "arguments", json_object_get(r->args));
        json_object_array_add(cmds, cmd);
        record_bitmaps(log, r, node_info, bitmaps_done, cmds);
        for (size_t k = 0; k < json_object_array_length(cmds); k++) {
            CLEANUP_FREE char *line = xasprintf(
                "%s\n", json_object_to_json_string_ext(
                    json_object_array_get_idx(cmds, k),
                    JSON_C_TO_STRING_SPACED |
                    JSON_C_TO_STRING_NOSLASHESCAPE));
            if (!write_all(fd, line, errp)) {
                goto fail;
            }
        }
    }
    if (fsync(fd) < 0) {
        error_setg_errno(errp, errno, "Could not write the configuration");
        goto fail;
    }
    if (rename(tmp, filename) < 0) {
        error_setg_errno(errp, errno, "Could not replace '%s'", filename);
        goto fail;
    }
    return true;

fail:
    unlink(tmp);
    return false;
}
