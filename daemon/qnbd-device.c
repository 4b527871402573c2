/* qnbd-device.c - blockd-nbd -c DEV / -d DEV: the Linux kernel's NBD
 * device (/dev/nbdX), with nbd-device-connect and nbd/kernel.h.
 *
 * -c: the image is served on a unix socket only (qemu-nbd's
 * /var/lock/qemu-nbd-nbdX, set in qnbd_check()), the export is bound to DEV over socketpairs
 * (no TCP round trip), and the process lives until the device is
 * disconnected: its connection closing is the last client going, which
 * ends blockd-nbd as it ends qemu-nbd (not with -t).  Stopping it
 * (SIGTERM) disconnects the device first.
 * -d: "DEV disconnected", as qemu-nbd prints it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/qnbd.h"
#include "nbd/kernel.h"
#include "qapi-commands.h"
#include "util/cleanup.h"
#include "util/util.h"

bool qnbd_device_supported(const QnbdOptions *o, Error **errp)
{
    uint32_t index;

    /* The rest (module, root, busy) is known once we try: the same
     * messages as nbd-device-connect's. */
    return nbd_kernel_parse_device(o->device, &index, errp);
}

int qnbd_device_disconnect(const QnbdOptions *o)
{
    Error *err = NULL;

    if (!nbd_kernel_disconnect_device(o->filename, &err)) {
        qnbd_report(o, "%s", error_get_pretty(err));
        error_free(err);
        return 1;
    }
    printf("%s disconnected\n", o->filename);
    return 0;
}

bool qnbd_device_connect(const QnbdOptions *o, void *qmp,
                         const char *export_name, Error **errp)
{
    QmpNbdDeviceConnectArgs args = {
        .has_device = true, .device = o->device,
        .export = (char *)QNBD_EXPORT_ID,
        .has_read_only = true, .read_only = o->read_only,
    };
    NbdDeviceConnectInfo *info = NULL;

    (void)export_name;
    if (!qmp_nbd_device_connect(qmp, &args, &info, errp)) {
        error_prepend(errp, "Failed to set up %s: ", o->device);
        return false;
    }
    if (o->verbose) {
        fprintf(stderr, "NBD device %s is now connected to %s\n",
                info->device, o->filename);
    }
    qapi_free_NbdDeviceConnectInfo(info);
    return true;
}
