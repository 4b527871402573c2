/* qmp-objects.c - object-add, object-del, query-objects, qom-list. */
#include <string.h>

#include "crypto/object.h"
#include "qapi-commands.h"
#include "qmp/qmp.h"
#include "util/util.h"

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

bool qmp_query_iothreads(QmpCtx *ctx, const QmpQueryIothreadsArgs *args,
                         IOThreadInfoList **ret, Error **errp)
{
    (void)args;
    (void)errp;
    *ret = object_iothread_list(ctx->objects);
    return true;
}

/* QEMU's QOM tree reduced to what blockd has: the container "/objects"
 * and its children.  Tools that look objects up with qom-list (libvirt
 * does) see what qemu-storage-daemon shows them. */
bool qmp_qom_list(QmpCtx *ctx, const QmpQomListArgs *args,
                  ObjectPropertyInfoList **ret, Error **errp)
{
    ObjectInfoList *objs;
    ObjectPropertyInfoList *l;

    if (strcmp(args->path, "/objects") != 0 &&
        strcmp(args->path, "/objects/") != 0) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found",
                  args->path);
        return false;
    }
    objs = object_set_list(ctx->objects);
    l = xzalloc(sizeof(*l));
    l->n = objs->n + 1;
    l->v = xcalloc(l->n, sizeof(*l->v));
    l->v[0] = xzalloc(sizeof(ObjectPropertyInfo));
    l->v[0]->name = xstrdup("type");
    l->v[0]->type = xstrdup("string");
    for (size_t i = 0; i < objs->n; i++) {
        l->v[i + 1] = xzalloc(sizeof(ObjectPropertyInfo));
        l->v[i + 1]->name = xstrdup(objs->v[i]->id);
        l->v[i + 1]->type = xasprintf("child<%s>",
                                      ObjectType_str(objs->v[i]->qom_type));
    }
    qapi_free_ObjectInfoList(objs);
    *ret = l;
    return true;
}
