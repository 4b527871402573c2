/* control.c - the commands of QMP itself: negotiation, version,
 * introspection and quit. */
#include <string.h>

#include "config.h"
#include "qapi-commands.h"
#include "qmp/monitor.h"
#include "util/util.h"

bool qmp_qmp_capabilities(QmpCtx *ctx, const QmpQmpCapabilitiesArgs *args,
                          Error **errp)
{
    bool oob = false;

    (void)errp;
    if (args->has_enable) {
        /* The schema only lets offered capabilities through (the enum
         * QMPCapability holds exactly what the greeting offers). */
        for (size_t i = 0; i < args->enable->n; i++) {
            if (args->enable->v[i] == QMP_CAPABILITY_OOB) {
                oob = true;
            }
        }
    }
    monitor_enter_command_mode(ctx->mon, oob);
    return true;
}

bool qmp_query_version(QmpCtx *ctx, const QmpQueryVersionArgs *args,
                       VersionInfo **ret, Error **errp)
{
    VersionInfo *v = XNEW(VersionInfo);

    (void)ctx;
    (void)args;
    (void)errp;
    v->qemu = XNEW(VersionTriple);
    /* The QEMU level whose QMP we speak (the greeting says the same). */
    v->qemu->major = 10;
    v->qemu->minor = 1;
    v->qemu->micro = 0;
    v->package = xstrdup("blockd-" BLOCKD_VERSION);
    *ret = v;
    return true;
}

bool qmp_query_commands(QmpCtx *ctx, const QmpQueryCommandsArgs *args,
                        CommandInfoList **ret, Error **errp)
{
    CommandInfoList *list = XNEW(CommandInfoList);

    (void)ctx;
    (void)args;
    (void)errp;
    list->n = qmp_commands_count;
    list->v = xcalloc(list->n, sizeof(*list->v));
    for (size_t i = 0; i < list->n; i++) {
        list->v[i] = XNEW(CommandInfo);
        list->v[i]->name = xstrdup(qmp_commands[i].name);
    }
    *ret = list;
    return true;
}

bool qmp_query_qmp_schema(QmpCtx *ctx, const QmpQueryQmpSchemaArgs *args,
                          json_object **ret, Error **errp)
{
    (void)ctx;
    (void)args;
    *ret = json_tokener_parse(qapi_introspect_json);
    if (*ret == NULL) {
        error_setg(errp, "internal error: the built-in schema is not JSON");
        return false;
    }
    return true;
}

bool qmp_quit(QmpCtx *ctx, const QmpQuitArgs *args, Error **errp)
{
    (void)args;
    (void)errp;
    if (ctx->request_quit != NULL) {
        ctx->request_quit(ctx->host, qmp_defer(ctx));
    }
    return true;
}

bool qmp_getfd(QmpCtx *ctx, const QmpGetfdArgs *args, Error **errp)
{
    return monitor_getfd(ctx->mon, args->fdname, errp);
}

bool qmp_closefd(QmpCtx *ctx, const QmpClosefdArgs *args, Error **errp)
{
    return monitor_closefd(ctx->mon, args->fdname, errp);
}
