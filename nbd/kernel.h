/* kernel.h - binding exports to Linux kernel NBD devices (/dev/nbdN).
 *
 * The daemon serves the kernel itself: for each of a device's
 * connections it makes a socketpair, starts its own end in transmission
 * on the export (nbd_conn_start_transmission(), no handshake) and hands
 * the other end to the kernel, through the generic netlink family "nbd"
 * (NBD_CMD_CONNECT; kernel-nl.h) or, where that is missing, the classic
 * ioctls (NBD_SET_SOCK ... NBD_DO_IT in a thread of its own).
 *
 * A bound device holds its export: a safe block-export-del refuses, a
 * hard one disconnects the device first.  nbd_server_free() disconnects
 * every device before anything else.  The device is gone (and
 * NBD_DEVICE_DISCONNECTED sent) once every one of its connections has
 * closed, whoever closed them.  Loop thread only.
 */
#ifndef BLOCKD_NBD_KERNEL_H
#define BLOCKD_NBD_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "nbd/server.h"
#include "util/error.h"

typedef struct NbdKernel NbdKernel;

/* Fail with the clear message ("... modprobe nbd") when sysfs_root
 * (normally "/sys") shows no nbd module. */
bool nbd_kernel_check_module(const char *sysfs_root, Error **errp);

/* "/dev/nbd3" -> 3; false (errp set) for anything else. */
bool nbd_kernel_parse_device(const char *path, uint32_t *index,
                             Error **errp);

/* The index N of the /dev/nbdN that fd is open on: a block device of
 * the nbd major whose /sys/dev/block/MAJ:MIN entry is "nbdN" (not one
 * of its partitions).  false for anything else. */
bool nbd_kernel_fd_index(int fd, uint32_t *index);

/* Disconnect a device whoever bound it (blockd-nbd -d, qemu-nbd -d):
 * NBD_DISCONNECT and NBD_CLEAR_SOCK on the device, which the kernel
 * accepts on netlink-bound devices too.  errp: "Cannot open ...". */
bool nbd_kernel_disconnect_device(const char *path, Error **errp);

/* exp is about to be deleted: refuse (safe) when a device is bound to
 * it, or disconnect those devices (hard). */
bool nbd_kernel_export_del(NbdContext *ctx, NbdExport *exp, bool hard,
                           Error **errp);

/* Disconnect every bound device now and free the registry (at
 * nbd_server_free(); the loop may no longer run). */
void nbd_kernel_shutdown(NbdContext *ctx);

#endif
