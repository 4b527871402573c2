/* qmp-objects.c - object-add, object-del and query-objects. */
#include "crypto/object.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"

bool qmp_object_add(QmpCtx *ctx, const ObjectOptions *args, Error **errp)
{
    return object_add(ctx->objects, args, errp);
}

bool qmp_object_del(QmpCtx *ctx, const QmpObjectDelArgs *args,
                    Error **errp)
{
    return object_del(ctx->objects, args->id, errp);
}

bool qmp_query_objects(QmpCtx *ctx, const QmpQueryObjectsArgs *args,
                       ObjectInfoList **ret, Error **errp)
{
    (void)args;
    (void)errp;
    *ret = object_set_list(ctx->objects);
    return true;
}
