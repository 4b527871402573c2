/* dispatch.c - check a QMP request and run it.
 *
 * The envelope is checked here ("execute", "arguments", "id"); the
 * arguments are checked by the generated marshal function of the
 * command before its handler runs, so a bad argument has no side
 * effect.  Error wording follows QEMU's qmp-dispatch.c.
 *
 * A handler may defer its reply (qmp_defer, qmp.h): dispatch then
 * sends nothing and the monitor waits for qmp_complete().
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "qapi-commands.h"
#include "qmp/monitor.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/util.h"

/* Where a command's reply goes while dispatch runs it. */
struct QmpDeferSlot {
    Monitor *mon;
    bool has_id;
    json_object *id;          /* borrowed from the request (NULL is the
                               * JSON null) */
    QmpPending *pending;      /* set by qmp_defer */
    /* The command running, for the pending's commit (qmp_defer copies
     * them: the handler may complete, and so free, it before returning). */
    const char *name;
    json_object *args;        /* borrowed */
    unsigned flags;
    void (*committed)(void *host, const char *name, json_object *args,
                      unsigned flags);
    void *host;
};

/* A deferred command: where its reply goes and the id it carries. */
struct QmpPending {
    Monitor *mon;             /* NULL once the monitor closed */
    bool has_id;
    json_object *id;          /* owned */
    /* QmpCtx.committed, called at a successful completion: */
    void (*committed)(void *host, const char *name, json_object *args,
                      unsigned flags);
    void *host;
    char *name;               /* owned */
    json_object *args;        /* owned reference, or NULL */
    unsigned flags;
};

bool qmp_execute(QmpCtx *ctx, const char *name, json_object *args,
                 unsigned flags, json_object **ret, Error **errp)
{
    const QmpCommand *cmd = qmp_find_command(name);
    json_object *result = NULL;

    if (cmd == NULL) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "The command %s has not been found", name);
        return false;
    }
    if (ctx->defer != NULL) {
        ctx->defer->name = name;
        ctx->defer->args = args;
        ctx->defer->flags = flags;
        ctx->defer->committed = ctx->committed;
        ctx->defer->host = ctx->host;
    }
    if (!qmp_command_marshal(cmd)(ctx, args, flags, &result, errp)) {
        return false;
    }
    /* A deferred command commits when it completes (qmp_complete); the
     * pending may be gone already, so it is not looked at here. */
    if ((ctx->defer == NULL || ctx->defer->pending == NULL) &&
        ctx->committed != NULL) {
        ctx->committed(ctx->host, name, args, flags);
    }
    if (ret != NULL) {
        *ret = result;
    } else {
        json_object_put(result);
    }
    return true;
}


static json_object *error_reply(Error *err)
{
    json_object *reply = json_object_new_object();
    json_object *e = json_object_new_object();

    json_object_object_add(e, "class",
                           json_object_new_string(error_class_name(err->cls)));
    json_object_object_add(e, "desc", json_object_new_string(err->msg));
    json_object_object_add(reply, "error", e);
    return reply;
}

/* The command name s as sent, when it holds a NUL (\u0000) that C
 * would cut it at: each NUL written as the six characters \u0000.  No
 * command has a backslash in its name, so it matches none (QEMU keeps
 * the NUL and finds no command either). */
static char *name_with_nul(json_object *s)
{
    const char *p = json_object_get_string(s);
    size_t len = json_object_get_string_len(s);
    char *out = xmalloc(len * 6 + 1);
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\0') {
            memcpy(out + n, "\\u0000", 6);
            n += 6;
        } else {
            out[n++] = p[i];
        }
    }
    out[n] = '\0';
    return out;
}

/* Check the request envelope; on success *name and *args point into
 * req, or *name into *name_buf (owned by the caller).  Mirrors QEMU's
 * qmp_dispatch_check_obj(). */
static bool check_envelope(json_object *req, bool oob_ok, const char **name,
                           char **name_buf, json_object **args,
                           bool *is_oob, Error **errp)
{
    json_object *exec = NULL, *exec_oob = NULL;

    *args = NULL;
    json_object_object_foreach(req, key, val) {
        if (strcmp(key, "execute") == 0 ||
            (oob_ok && strcmp(key, "exec-oob") == 0)) {
            if (!json_object_is_type(val, json_type_string)) {
                error_setg(errp, "QMP input member '%s' must be a string",
                           key);
                return false;
            }
            if (key[4] == '-') {
                exec_oob = val;
            } else {
                exec = val;
            }
        } else if (strcmp(key, "arguments") == 0) {
            if (!json_object_is_type(val, json_type_object)) {
                error_setg(errp, "QMP input member 'arguments' must be an "
                           "object");
                return false;
            }
            *args = val;
        } else if (strcmp(key, "id") != 0) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return false;
        }
    }
    if (exec != NULL && exec_oob != NULL) {
        error_setg(errp, "QMP input member 'execute' clashes with "
                   "'exec-oob'");
        return false;
    }
    if (exec == NULL && exec_oob == NULL) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return false;
    }
    *is_oob = exec_oob != NULL;
    exec = exec ? exec : exec_oob;
    *name = json_object_get_string(exec);
    if (strlen(*name) != (size_t)json_object_get_string_len(exec)) {
        *name = *name_buf = name_with_nul(exec);
    }
    return true;
}

/* The reply to a command: {"return": ret} (ret taken) or {"error": ...},
 * with id (borrowed) if has_id. */
static json_object *make_reply(json_object *ret, Error *err, bool has_id,
                               json_object *id)
{
    json_object *reply;

    if (err != NULL) {
        json_object_put(ret);
        reply = error_reply(err);
    } else {
        reply = json_object_new_object();
        json_object_object_add(reply, "return",
                               ret ? ret : json_object_new_object());
    }
    if (has_id) {
        json_object_object_add(reply, "id", json_object_get(id));
    }
    return reply;
}

QmpPending *qmp_defer(QmpCtx *ctx)
{
    QmpDeferSlot *slot = ctx->defer;
    QmpPending *p;

    if (slot == NULL || slot->mon == NULL) {
        return NULL;
    }
    assert(slot->pending == NULL);
    p = XNEW(QmpPending);
    p->mon = slot->mon;
    p->has_id = slot->has_id;
    p->id = json_object_get(slot->id);
    p->committed = slot->committed;
    p->host = slot->host;
    p->name = xstrdup(slot->name != NULL ? slot->name : "");
    p->args = json_object_get(slot->args);
    p->flags = slot->flags;
    slot->pending = p;
    monitor_command_deferred(slot->mon, p);
    return p;
}

void qmp_complete(QmpPending *p, json_object *ret, Error *err)
{
    json_object *reply = make_reply(ret, err, p->has_id, p->id);

    if (err == NULL && p->committed != NULL) {
        p->committed(p->host, p->name, p->args, p->flags);
    }
    free(p->name);
    json_object_put(p->args);
    error_free(err);
    if (p->mon != NULL) {
        monitor_command_done(p->mon, p, reply);
    }
    json_object_put(reply);
    json_object_put(p->id);
    free(p);
}

void qmp_pending_detach(QmpPending *p)
{
    p->mon = NULL;
}

json_object *qmp_dispatch(QmpCtx *ctx, json_object *req)
{
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *name_buf = NULL;
    json_object *args = NULL, *id = NULL, *ret = NULL;
    const char *name = NULL;
    bool is_oob = false, has_id = false;
    QmpDeferSlot slot = { .mon = ctx->mon };

    if (!json_object_is_type(req, json_type_object)) {
        error_setg(&err, "QMP input must be a JSON object");
        return error_reply(err);
    }
    has_id = json_object_object_get_ex(req, "id", &id);
    if (!check_envelope(req, monitor_oob_enabled(ctx->mon), &name,
                        &name_buf, &args, &is_oob, &err)) {
        goto done;
    }
    if (ctx->mon != NULL) {
        bool negotiating = !monitor_in_command_mode(ctx->mon);
        bool is_caps = strcmp(name, "qmp_capabilities") == 0;
        if (negotiating && !is_caps) {
            error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                      "Expecting capabilities negotiation with "
                      "'qmp_capabilities'");
            goto done;
        }
        if (!negotiating && is_caps) {
            error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                      "Capabilities negotiation is already complete, "
                      "command ignored");
            goto done;
        }
    }
    if (is_oob) {
        const QmpCommand *cmd = qmp_find_command(name);
        if (cmd != NULL && !cmd->allow_oob) {
            error_setg(&err, "The command %s does not support OOB", name);
            goto done;
        }
    }
    /* Out-of-band commands answer at once: they never defer. */
    slot.has_id = has_id;
    slot.id = id;
    ctx->defer = is_oob ? NULL : &slot;
    qmp_execute(ctx, name, args, 0, &ret, &err);
    ctx->defer = NULL;
    if (slot.pending != NULL) {
        /* qmp_complete() answers; the handler had nothing to return. */
        assert(err == NULL);
        json_object_put(ret);
        return NULL;
    }

done:
    return make_reply(ret, err, has_id, id);
}
