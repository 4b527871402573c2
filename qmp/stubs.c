/* stubs.c - placeholder handlers for commands whose module has not
 * landed yet.  Each one fails with "Command 'x' is not implemented
 * yet".  A module that implements a command deletes its stub here
 * (one function each, so the deletion is easy). */
#include <stdbool.h>

#include "qapi-commands.h"
#include "util/util.h"

/* ---- Block core: owned by blockdev/ (block layer helper) ---- */

bool qmp_block_dirty_bitmap_add(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmapAdd *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-add' is not implemented yet");
    return false;
}

bool qmp_block_dirty_bitmap_remove(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmap *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-remove' is not implemented yet");
    return false;
}

bool qmp_block_dirty_bitmap_clear(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmap *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-clear' is not implemented yet");
    return false;
}

bool qmp_block_dirty_bitmap_enable(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmap *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-enable' is not implemented yet");
    return false;
}

bool qmp_block_dirty_bitmap_disable(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmap *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-disable' is not implemented yet");
    return false;
}

bool qmp_block_dirty_bitmap_merge(QmpCtx *ctx UNUSED,
    const BlockDirtyBitmapMerge *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'block-dirty-bitmap-merge' is not implemented yet");
    return false;
}

/* ---- Objects: owned by daemon/ objects (lead or objects helper) ---- */

bool qmp_object_add(QmpCtx *ctx UNUSED, const ObjectOptions *args UNUSED,
    Error **errp)
{
    error_setg(errp, "Command 'object-add' is not implemented yet");
    return false;
}

bool qmp_object_del(QmpCtx *ctx UNUSED, const QmpObjectDelArgs *args UNUSED,
    Error **errp)
{
    error_setg(errp, "Command 'object-del' is not implemented yet");
    return false;
}

/* ---- NBD devices: owned by nbd/ kernel device binding ---- */

bool qmp_nbd_device_connect(QmpCtx *ctx UNUSED,
    const QmpNbdDeviceConnectArgs *args UNUSED,
    NbdDeviceConnectInfo **ret UNUSED, Error **errp)
{
    error_setg(errp, "Command 'nbd-device-connect' is not implemented yet");
    return false;
}

bool qmp_nbd_device_disconnect(QmpCtx *ctx UNUSED,
    const QmpNbdDeviceDisconnectArgs *args UNUSED, Error **errp)
{
    error_setg(errp, "Command 'nbd-device-disconnect' is not implemented yet");
    return false;
}

bool qmp_query_nbd_devices(QmpCtx *ctx UNUSED,
    const QmpQueryNbdDevicesArgs *args UNUSED, NbdDeviceInfoList **ret UNUSED,
    Error **errp)
{
    error_setg(errp, "Command 'query-nbd-devices' is not implemented yet");
    return false;
}
