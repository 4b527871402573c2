/* qnbd-device.c - blockd-nbd -c DEV / -d DEV: the Linux kernel's NBD
 * device (/dev/nbdX), with nbd-device-connect and nbd/kernel.h.
 *
 * -c: the image is served on a unix socket only (qemu-nbd's
 * /var/lock/qemu-nbd-nbdX, set in qnbd_check()), the export is bound to
 * DEV over socketpairs (no TCP round trip), and the process lives until
 * the device is disconnected: its connection closing is the last client
 * going, which ends blockd-nbd as it ends qemu-nbd (not with -t).
 * Stopping it (SIGTERM) disconnects the device first.
 * -d: "DEV disconnected", as qemu-nbd prints it.
 *
 * Failures of -c say what qemu-nbd 7.2 says for the same case, so that
 * scripts matching its messages keep working (the exit status is 1 for
 * all of them, as qemu-nbd's):
 *
 *   DEV cannot be opened read-write    Failed to open DEV: <strerror>
 *   DEV is not an NBD device, or busy,  Failed to set NBD socket
 *   or the kernel refuses the binding   (its NBD_SET_SOCK ioctl failed)
 *
 * Our own reason for the second group (busy, not root, ...) is logged at
 * info level: blockd-nbd -T shows it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/qnbd.h"
#include "nbd/kernel.h"
#include "qapi-commands.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

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

/* qemu-nbd opens DEV read-write before anything else touches it: the
 * same open gives the same errno.  The descriptor is not kept: the
 * kernel refuses a netlink binding while anyone holds the device open. */
static bool device_index(const char *device, uint32_t *index, Error **errp)
{
    CLEANUP_CLOSE int fd = open(device, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        error_setg(errp, "Failed to open %s: %s", device, strerror(errno));
        return false;
    }
    if (!nbd_kernel_fd_index(fd, index)) {
        log_info("%s is not an NBD device", device);
        error_setg(errp, "Failed to set NBD socket");
        return false;
    }
    return true;
}

bool qnbd_device_connect(const QnbdOptions *o, void *qmp,
                         const char *export_name, Error **errp)
{
    CLEANUP_FREE char *path = NULL;
    QmpNbdDeviceConnectArgs args = {
        .has_device = true,
        .export = (char *)QNBD_EXPORT_ID,
        .has_read_only = true, .read_only = o->read_only,
    };
    NbdDeviceConnectInfo *info = NULL;
    Error *err = NULL;
    uint32_t index;

    (void)export_name;
    if (!device_index(o->device, &index, errp)) {
        return false;
    }
    path = xasprintf("/dev/nbd%u", index);
    args.device = path;
    if (!qmp_nbd_device_connect(qmp, &args, &info, &err)) {
        log_info("%s: %s", o->device, error_get_pretty(err));
        error_free(err);
        error_setg(errp, "Failed to set NBD socket");
        return false;
    }
    if (o->verbose) {
        fprintf(stderr, "NBD device %s is now connected to %s\n",
                o->device, o->filename);
    }
    qapi_free_NbdDeviceConnectInfo(info);
    return true;
}
