/* qmp-nbd.c - QMP handlers of the NBD server and block exports:
 * nbd-server-start/stop, block-export-add/del, query-block-exports and
 * the legacy nbd-server-add/remove. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/bitmap.h"
#include "blockdev/block.h"
#include "nbd/server.h"
#include "qapi-commands.h"
#include "qapi-events.h"
#include "qmp/qmp.h"
#include "util/cleanup.h"
#include "util/sock.h"
#include "util/util.h"

/* addr.type=fd: only a descriptor handed to us for this -- passed with
 * getfd on this monitor (by name), passed by socket activation (by its
 * LISTEN_FDNAMES name), or inherited at start-up (by number)
 * -- never one of our own sockets; see util/sock.h.  Either is used
 * once: the server owns it from now on. */
static bool server_listen_fd(NbdServer *srv, Monitor *mon, const char *str,
                             Error **errp)
{
    SockAddr sa = { .type = SOCK_ADDR_FD };
    uint64_t fd;

    sa.fd = monitor_fd_find(mon, str);
    if (sa.fd < 0 && sock_activated_has(str)) {
        /* A socket unit's FileDescriptorName= (util/sock.h). */
        sa.fd = sock_activated_take(str, errp);
        if (sa.fd < 0) {
            return false;
        }
    } else if (sa.fd >= 0) {
        if (!sock_check_listening(sa.fd, errp)) {
            error_prepend(errp, "'%s': ", str);
            return false;
        }
        sa.fd = monitor_fd_take(mon, str);
    } else if (!parse_uint64(str, &fd) || fd > INT32_MAX) {
        error_setg(errp, "File descriptor named '%s' has not been found",
                   str);
        return false;
    } else if (!sock_inherited_take((int)fd, errp)) {
        return false;
    } else {
        sa.fd = (int)fd;
    }
    if (!nbd_server_listen(srv, &sa, errp)) {
        /* Taken: it is ours now, and nobody else may have it. */
        close(sa.fd);
        return false;
    }
    return true;
}

static void add_client_info(void *opaque, const NbdClientInfo *c)
{
    NbdExportClientInfoList *l = opaque;
    NbdExportClientInfo *ci = XNEW(NbdExportClientInfo);

    ci->has_id = true;
    ci->id = c->serial;
    ci->addr = xstrdup(c->addr);
    ci->has_tls_identity = c->tls_identity != NULL;
    ci->tls_identity = c->tls_identity ? xstrdup(c->tls_identity) : NULL;
    ci->has_rd_bytes = ci->has_wr_bytes = true;
    ci->rd_bytes = c->rd_bytes;
    ci->wr_bytes = c->wr_bytes;
    ci->has_rd_operations = ci->has_wr_operations = true;
    ci->rd_operations = c->rd_ops;
    ci->wr_operations = c->wr_ops;
    ci->has_other_operations = true;
    ci->other_operations = c->other_ops;
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = ci;
}

/* The export's counters by kind, in query-blockstats' shape. */
static BlockOpStatsList *export_op_stats(const NbdOpCounters *o)
{
    BlockOpStatsList *l = XNEW(BlockOpStatsList);

    l->n = BLOCK_STATS_OP__MAX;
    l->v = xcalloc(BLOCK_STATS_OP__MAX, sizeof(*l->v));
    for (int op = 0; op < BLOCK_STATS_OP__MAX; op++) {
        BlockOpStats *s = XNEW(BlockOpStats);

        s->latency = blk_lathist_info(&o->lat[op], &s->operations,
                                      &s->total_time_ns);
        s->op = (BlockStatsOp)op;
        s->failed = __atomic_load_n(&o->failed[op], __ATOMIC_RELAXED);
        s->invalid = __atomic_load_n(&o->invalid[op], __ATOMIC_RELAXED);
        s->in_flight = __atomic_load_n(&o->in_flight[op], __ATOMIC_RELAXED);
        l->v[op] = s;
    }
    return l;
}

static bool server_listen(NbdServer *srv, Monitor *mon,
                          const SocketAddressLegacy *addr, Error **errp)
{
    SockAddr sa = { 0 };

    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_INET:
        sa.type = SOCK_ADDR_INET;
        sa.host = addr->u.inet.data->host;
        sa.port = addr->u.inet.data->port;
        return nbd_server_listen(srv, &sa, errp);
    case SOCKET_ADDRESS_TYPE_UNIX:
        if (addr->u.q_unix.data->abstract) {
            error_setg(errp, "Abstract UNIX sockets are not supported");
            return false;
        }
        sa.type = SOCK_ADDR_UNIX;
        sa.path = addr->u.q_unix.data->path;
        return nbd_server_listen(srv, &sa, errp);
    case SOCKET_ADDRESS_TYPE_FD:
        return server_listen_fd(srv, mon, addr->u.fd.data->str, errp);
    default:
        error_setg(errp, "Socket address type '%s' is not supported",
                   SocketAddressType_str(addr->type));
        return false;
    }
}

bool qmp_nbd_server_start(QmpCtx *ctx, const QmpNbdServerStartArgs *args,
                          Error **errp)
{
    NbdContext *nc = ctx->nbd;
    NbdServerConfig cfg = {
        .max_connections = args->max_connections,
        .handshake_limit_us =
            (uint64_t)args->handshake_max_seconds * 1000 * 1000,
        .handshake_poll_max_ns = args->handshake_poll_max_ns,
        .tls_creds = args->has_tls_creds ? args->tls_creds : NULL,
        .tls_authz = args->has_tls_authz ? args->tls_authz : NULL,
    };
    NbdServer *srv;

    if (nc->server) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    srv = nbd_server_new(nc, &cfg, errp);
    if (!srv) {
        return false;
    }
    if (!server_listen(srv, ctx->mon, args->addr, errp)) {
        nbd_server_free(srv);
        return false;
    }
    nc->server = srv;
    return true;
}

bool qmp_nbd_server_stop(QmpCtx *ctx, const QmpNbdServerStopArgs *args,
                         Error **errp)
{
    NbdContext *nc = ctx->nbd;

    (void)args;
    if (!nc->server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    nbd_server_free(nc->server);
    nc->server = NULL;
    return true;
}

bool qmp_query_nbd_server(QmpCtx *ctx, const QmpQueryNbdServerArgs *args,
                          NbdServerInfo **ret, Error **errp)
{
    NbdServer *srv = ctx->nbd->server;
    NbdServerInfo *info;
    NbdServerStats st;

    (void)args;
    if (!srv) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    nbd_server_stats(srv, &st);
    info = XNEW(NbdServerInfo);
    info->clients = st.clients;
    info->has_tls_creds = st.tls_creds != NULL;
    info->tls_creds = st.tls_creds ? xstrdup(st.tls_creds) : NULL;
    info->has_tls_authz = st.tls_authz != NULL;
    info->tls_authz = st.tls_authz ? xstrdup(st.tls_authz) : NULL;
    info->tls_sessions = st.tls_sessions;
    info->tls_handshake_failures = st.tls_failed;
    info->tls_peer_refused = st.tls_peer_refused;
    info->tls_authz_denied = st.tls_authz_denied;
    info->tls_required_refusals = st.tls_required;
    info->handshake_poll_ns = st.handshake_poll_ns;
    *ret = info;
    return true;
}

/* One bitmap of an export, QEMU's way (nbd_export_create()): a plain
 * name is looked for on the node and down its backing chain, a
 * {node, name} on that node; it must be neither busy (another export
 * has it) nor inconsistent, and a read-only export of a writable node
 * takes only a disabled bitmap (an enabled one would change under the
 * client while it reads). */
static DirtyBitmap *resolve_bitmap(BlockGraph *g, BlockNode *node,
                                   bool writable,
                                   const BlockDirtyBitmapOrStr *b,
                                   Error **errp)
{
    DirtyBitmap *bm = NULL;
    const char *name;

    if (b->type == QTYPE_QSTRING) {
        name = b->u.local;
        for (BlockNode *n = node; n != NULL && bm == NULL; n = n->backing) {
            bm = blk_dirty_bitmap_find(n, name);
        }
        if (bm == NULL) {
            error_setg(errp, "Bitmap '%s' is not found", name);
            return NULL;
        }
    } else {
        name = b->u.external->name;
        bm = blk_dirty_bitmap_lookup(g, b->u.external->node, name, errp);
        if (bm == NULL) {
            return NULL;
        }
    }
    if (!dirty_bitmap_check(bm, BM_CHECK_ALLOW_RO, errp)) {
        return NULL;
    }
    if (!writable && !dirty_bitmap_node(bm)->read_only &&
        dirty_bitmap_enabled(bm)) {
        error_setg(errp, "Enabled bitmap '%s' incompatible with readonly "
                   "export", name);
        return NULL;
    }
    return bm;
}

/* Resolve every bitmap of list into *out (a new array the caller
 * frees); the context names (the bitmap names) must be unique. */
static bool resolve_bitmaps(BlockGraph *g, BlockNode *node, bool writable,
                            const BlockDirtyBitmapOrStrList *list,
                            DirtyBitmap ***out, Error **errp)
{
    DirtyBitmap **v = xcalloc(list->n ? list->n : 1, sizeof(*v));

    for (size_t i = 0; i < list->n; i++) {
        v[i] = resolve_bitmap(g, node, writable, list->v[i], errp);
        if (v[i] == NULL) {
            free(v);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(dirty_bitmap_name(v[j]),
                       dirty_bitmap_name(v[i])) == 0) {
                error_setg(errp, "Bitmap name '%s' is given twice: "
                           "qemu:dirty-bitmap:%s would be ambiguous",
                           dirty_bitmap_name(v[i]), dirty_bitmap_name(v[i]));
                free(v);
                return false;
            }
        }
    }
    *out = v;
    return true;
}

static bool export_add(NbdContext *nc, const NbdExportConfig *cfg, Error **errp)
{
    if (!nc->server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    return nbd_export_add(nc->server, cfg, errp) != NULL;
}

bool qmp_block_export_add(QmpCtx *ctx, const BlockExportOptions *args,
                          Error **errp)
{
    NbdContext *nc = ctx->nbd;
    const BlockExportOptionsNbd *o = &args->u.nbd;
    NbdExportConfig cfg = { 0 };
    CLEANUP_FREE DirtyBitmap **bitmaps = NULL;
    BlockNode *node;

    if (args->type != BLOCK_EXPORT_TYPE_NBD) {
        error_setg(errp, "Block export type '%s' is not supported",
                   BlockExportType_str(args->type));
        return false;
    }
    if (!nc->server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    if (nc->server && nbd_export_find_id(nc->server, args->id)) {
        error_setg(errp, "Block export id '%s' is already in use", args->id);
        return false;
    }
    node = blk_lookup_node(nc->graph, args->node_name, errp);
    if (!node) {
        return false;
    }
    if (o->has_bitmaps && o->bitmaps != NULL) {
        if (!resolve_bitmaps(nc->graph, node, args->writable, o->bitmaps,
                             &bitmaps, errp)) {
            return false;
        }
        cfg.bitmaps = bitmaps;
        cfg.n_bitmaps = o->bitmaps->n;
    }
    cfg.id = args->id;
    cfg.name = o->has_name ? o->name : NULL;
    cfg.description = o->has_description ? o->description : NULL;
    cfg.node = node;
    cfg.writable = args->writable;
    cfg.writethrough = args->writethrough;
    cfg.allocation_depth = o->allocation_depth;
    if (args->has_iothread && args->iothread->type == QTYPE_QSTRING) {
        cfg.iothreads = (const char *const *)&args->iothread->u.single;
        cfg.n_iothreads = 1;
    } else if (args->has_iothread) {
        cfg.iothreads = (const char *const *)args->iothread->u.multi->v;
        cfg.n_iothreads = args->iothread->u.multi->n;
    }
    cfg.fixed_iothread = args->has_fixed_iothread && args->fixed_iothread;
    return export_add(nc, &cfg, errp);
}

static bool export_del(NbdContext *nc, const char *id, bool has_mode,
                       BlockExportRemoveMode mode, Error **errp)
{
    NbdExport *exp = nc->server ? nbd_export_find_id(nc->server, id) : NULL;

    if (!exp) {
        error_setg(errp, "Export '%s' is not found", id);
        return false;
    }
    return nbd_export_del(exp,
                          has_mode && mode == BLOCK_EXPORT_REMOVE_MODE_HARD,
                          errp);
}

bool qmp_block_export_del(QmpCtx *ctx, const QmpBlockExportDelArgs *args,
                          Error **errp)
{
    return export_del(ctx->nbd, args->id, args->has_mode, args->mode,
                      errp);
}

bool qmp_query_block_exports(QmpCtx *ctx, const QmpQueryBlockExportsArgs *args,
                             BlockExportInfoList **ret, Error **errp)
{
    NbdServer *srv = ctx->nbd->server;
    size_t n = nbd_export_count(srv);
    BlockExportInfoList *list = XNEW(BlockExportInfoList);

    (void)errp;
    list->n = n;
    list->v = xcalloc(n ? n : 1, sizeof(*list->v));
    for (size_t i = 0; i < n; i++) {
        BlockExportInfo *info = XNEW(BlockExportInfo);
        NbdExportInfo ei;

        nbd_export_info(srv, i, &ei);
        info->id = xstrdup(ei.id);
        info->type = BLOCK_EXPORT_TYPE_NBD;
        info->node_name = xstrdup(ei.node_name);
        info->shutting_down = ei.shutting_down;
        info->has_name = true;
        info->name = xstrdup(ei.name);
        info->has_writable = true;
        info->writable = ei.writable;
        info->has_clients = true;
        info->clients = ei.clients;
        info->has_rd_bytes = info->has_wr_bytes = true;
        info->rd_bytes = ei.rd_bytes;
        info->wr_bytes = ei.wr_bytes;
        info->has_rd_operations = info->has_wr_operations = true;
        info->rd_operations = ei.rd_ops;
        info->wr_operations = ei.wr_ops;
        info->has_connected_clients = true;
        info->connected_clients = XNEW(NbdExportClientInfoList);
        nbd_export_each_client(srv, ei.id, add_client_info,
                               info->connected_clients);
        if (args->op_stats) {
            info->has_op_stats = true;
            info->op_stats = export_op_stats(ei.ops);
        }
        list->v[i] = info;
    }
    *ret = list;
    return true;
}

bool qmp_nbd_server_add(QmpCtx *ctx, const NbdServerAddOptions *args,
                        Error **errp)
{
    NbdContext *nc = ctx->nbd;
    const char *name = args->has_name ? args->name : args->device;
    NbdExportConfig cfg = { 0 };
    DirtyBitmap *bm = NULL;
    BlockNode *node;

    if (!nc->server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    node = blk_lookup_node(nc->graph, args->device, errp);
    if (!node) {
        return false;
    }
    if (args->has_bitmap) {
        BlockDirtyBitmapOrStr b = {
            .type = QTYPE_QSTRING,
            .u.local = args->bitmap,
        };
        bm = resolve_bitmap(nc->graph, node, args->writable, &b, errp);
        if (bm == NULL) {
            return false;
        }
        cfg.bitmaps = &bm;
        cfg.n_bitmaps = 1;
    }
    /* Legacy exports use their name as the export id (QEMU does). */
    cfg.id = name;
    cfg.name = name;
    cfg.description = args->has_description ? args->description : NULL;
    cfg.node = node;
    cfg.writable = args->writable;
    return export_add(nc, &cfg, errp);
}

bool qmp_nbd_server_remove(QmpCtx *ctx, const QmpNbdServerRemoveArgs *args,
                           Error **errp)
{
    NbdContext *nc = ctx->nbd;

    if (!nc->server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    return export_del(nc, args->name, args->has_mode, args->mode, errp);
}
