/* qnbd-device.c - blockd-nbd -c DEV / -d DEV: the Linux kernel's NBD
 * device (/dev/nbdX).
 *
 * The kernel-device issue (14) fills these two in with
 * nbd-device-connect / nbd-device-disconnect; until then both answer
 * with a clear error, and nothing else in blockd-nbd changes when they
 * do.
 */
#include "daemon/qnbd.h"

bool qnbd_device_supported(const QnbdOptions *o, Error **errp)
{
    error_setg(errp, "Kernel /dev/nbdN support not available in this "
               "binary yet (-c %s)", o->device);
    return false;
}

int qnbd_device_disconnect(const QnbdOptions *o)
{
    qnbd_report(o, "Kernel /dev/nbdN support not available in this "
                "binary yet (-d %s)", o->filename);
    return 1;
}

bool qnbd_device_connect(const QnbdOptions *o, void *qmp,
                         const char *export_name, Error **errp)
{
    (void)qmp;
    (void)export_name;
    error_setg(errp, "Kernel /dev/nbdN support not available in this "
               "binary yet (-c %s)", o->device);
    return false;
}
