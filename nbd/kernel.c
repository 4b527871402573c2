/* kernel.c - Linux kernel NBD devices served by the daemon (kernel.h):
 * the netlink and ioctl ways of binding /dev/nbdN, the device registry
 * and the QMP handlers nbd-device-connect / nbd-device-disconnect /
 * query-nbd-devices with the NBD_DEVICE_DISCONNECTED event.
 *
 *   NbdKernel (ctx->kernel)   netlink family id, multicast watch
 *    └── NbdDevice            /dev/nbdN: export (referenced), our ends
 *         └── NbdConn x n     of the socketpairs, in transmission
 *
 * A device ends when its last connection closes: after
 * nbd-device-disconnect (the kernel shuts its sockets down), when the
 * kernel drops it on its own, at hard block-export-del and at server
 * stop.  The ioctl way also waits for its NBD_DO_IT thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>

#include "nbd/internal.h"
#include "nbd/kernel-nl.h"
#include "nbd/kernel.h"
#include "qapi-commands.h"
#include "qapi-events.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

/* linux/nbd.h's ioctls and client flag; that header's protocol
 * constants would clash with nbd/proto.h's. */
#define KNBD_SET_SOCK _IO(0xab, 0)
#define KNBD_SET_BLKSIZE _IO(0xab, 1)
#define KNBD_DO_IT _IO(0xab, 3)
#define KNBD_CLEAR_SOCK _IO(0xab, 4)
#define KNBD_CLEAR_QUE _IO(0xab, 5)
#define KNBD_SET_SIZE_BLOCKS _IO(0xab, 7)
#define KNBD_DISCONNECT _IO(0xab, 8)
#define KNBD_SET_TIMEOUT _IO(0xab, 9)
#define KNBD_SET_FLAGS _IO(0xab, 10)
#define KNBD_CFLAG_DISCONNECT_ON_CLOSE (1 << 1)

#define NBD_MAJOR_NUMBER 43
#define NBD_MAX_KERNEL_CONNS 16
/* The logical block size when none is asked for: qemu-nbd -c's (the
 * netlink interface's own default is 1024, which would hide the last
 * 512 bytes of an odd-sector image and refuse 512-byte direct I/O). */
#define NBD_DEFAULT_BLOCK_SIZE 512
#define NBD_NL_TIMEOUT_S 30
/* How long a device whose connections all died waits for the kernel's
 * link-dead notification before it is disconnected anyway. */
#define NBD_LINK_DEAD_WAIT_US (10ULL * 1000 * 1000)

typedef struct NbdDevice NbdDevice;
DEFINE_VECTOR_TYPE(NbdDeviceVec, NbdDevice *);

struct NbdKernel {
    NbdContext *ctx;
    NbdDeviceVec devices;
    uint16_t family;             /* 0 until resolved */
    uint32_t mcgrp;
    int mc_fd;                   /* multicast (link dead) socket, -1 */
    LoopFd *mc_watch;
    uint32_t seq;
};

struct NbdDevice {
    NbdKernel *k;
    char *path;                  /* /dev/nbdN */
    uint32_t index;
    NbdExport *exp;              /* referenced */
    bool read_only;
    bool netlink;
    uint64_t size;
    uint32_t nconns;
    NbdConn **conns;             /* ours; NULL once closed */
    unsigned open_conns;
    const char *reason;          /* why it ends (static string) */
    bool ending;                 /* disconnect asked or under way */
    bool disc_pending;           /* DiscJob on a worker */
    bool finalizing;
    /* A connection of ours ended with nobody asking (no NBD_CMD_DISC
     * from the kernel, no disconnect from us): the kernel marks that
     * link dead and says so on its multicast group. */
    bool lost;
    bool link_dead;              /* the kernel said so */
    bool awaiting_link_dead;     /* every link lost; dead_timer armed */
    LoopTimer *dead_timer;       /* NULL until first needed */
    /* ioctl way */
    int dev_fd;
    pthread_t thread;
    bool thread_running;         /* NBD_DO_IT not yet returned+joined */
};

/* ---- checks -------------------------------------------------------------- */

bool nbd_kernel_check_module(const char *sysfs_root, Error **errp)
{
    CLEANUP_FREE char *p = xasprintf("%s/module/nbd", sysfs_root);

    if (access(p, F_OK) != 0) {
        error_setg(errp, "The Linux NBD driver is not loaded (no %s): "
                   "modprobe nbd", p);
        return false;
    }
    return true;
}

bool nbd_kernel_parse_device(const char *path, uint32_t *index,
                             Error **errp)
{
    const char *p = path;
    uint64_t v;

    if (strncmp(p, "/dev/", 5) == 0) {
        p += 5;
    }
    if (strncmp(p, "nbd", 3) != 0 || !parse_uint64(p + 3, &v) ||
        v > INT32_MAX || p[3] < '0' || p[3] > '9') {
        error_setg(errp, "'%s' is not an NBD device (/dev/nbdN)", path);
        return false;
    }
    *index = (uint32_t)v;
    return true;
}

bool nbd_kernel_fd_index(int fd, uint32_t *index)
{
    struct stat st;
    char link[64], target[256];
    const char *base;
    ssize_t n;

    if (fstat(fd, &st) != 0 || !S_ISBLK(st.st_mode) ||
        major(st.st_rdev) != NBD_MAJOR_NUMBER) {
        return false;
    }
    /* The minor is index << part_shift, and part_shift follows the
     * module's max_part: sysfs knows the name. */
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u",
             major(st.st_rdev), minor(st.st_rdev));
    n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0) {
        return false;
    }
    target[n] = '\0';
    base = strrchr(target, '/');
    base = base ? base + 1 : target;
    return nbd_kernel_parse_device(base, index, NULL);
}

/* The kernel has a device bound (ours or anyone's) when its pid file
 * exists. */
static bool device_busy(uint32_t index)
{
    char p[64];

    snprintf(p, sizeof(p), "/sys/block/nbd%u/pid", index);
    return access(p, F_OK) == 0;
}

/* /sys/block/nbdN/size: 0 until the kernel started the device. */
static uint64_t device_sectors(uint32_t index)
{
    char p[64];
    unsigned long long v = 0;
    FILE *f;

    snprintf(p, sizeof(p), "/sys/block/nbd%u/size", index);
    f = fopen(p, "re");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) {
            v = 0;
        }
        fclose(f);
    }
    return v;
}

static bool device_exists(const char *path, Error **errp)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        error_setg_errno(errp, errno, "Device '%s' does not exist", path);
        return false;
    }
    if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != NBD_MAJOR_NUMBER) {
        error_setg(errp, "'%s' is not an NBD block device", path);
        return false;
    }
    return true;
}

static void error_perm(Error **errp, int err, const char *what)
{
    if (err == EPERM || err == EACCES) {
        error_setg_errno(errp, err, "%s needs root (CAP_SYS_ADMIN)", what);
    } else {
        error_setg_errno(errp, err, "%s failed", what);
    }
}

/* ---- netlink ------------------------------------------------------------- */

static int nl_socket(Error **errp)
{
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
    struct timeval tv = { .tv_sec = NBD_NL_TIMEOUT_S };
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not open a netlink socket");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        error_setg_errno(errp, errno, "Could not bind a netlink socket");
        close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Send req and read until its ack: *out gets the last data message of
 * the reply (family's).  Returns 0, or -errno (the kernel's answer or a
 * socket error). */
static int nl_transact(int fd, const uint8_t *req, size_t len,
                       uint16_t family, NbdNlMsg *out)
{
    uint32_t seq;
    uint8_t buf[NBD_NL_BUF_SIZE];

    memcpy(&seq, req + offsetof(struct nlmsghdr, nlmsg_seq), sizeof(seq));
    memset(out, 0, sizeof(*out));
    if (send(fd, req, len, 0) != (ssize_t)len) {
        return -errno;
    }
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        size_t off = 0;

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        while (off < (size_t)n) {
            NbdNlMsg m;
            long r = nbd_nl_decode(buf + off, (size_t)n - off, family, &m);

            if (r <= 0) {
                return -EPROTO;
            }
            off += (size_t)r;
            if (m.seq != seq) {
                continue;
            }
            if (m.is_error) {
                return m.error;
            }
            if (!m.is_done) {
                *out = m;
            }
        }
    }
}

static bool kernel_resolve_family(NbdKernel *k, Error **errp)
{
    uint8_t req[256];
    NbdNlMsg m;
    size_t len;
    int fd, r;

    if (k->family) {
        return true;
    }
    fd = nl_socket(errp);
    if (fd < 0) {
        return false;
    }
    len = nbd_nl_encode_getfamily(req, sizeof(req), ++k->seq);
    r = nl_transact(fd, req, len, 0, &m);
    close(fd);
    if (r == -ENOENT) {
        error_setg(errp, "The kernel has no 'nbd' netlink family: "
                   "modprobe nbd");
        return false;
    }
    if (r < 0 || m.family_id == 0) {
        error_setg_errno(errp, r < 0 ? -r : EPROTO,
                         "Could not resolve the 'nbd' netlink family");
        return false;
    }
    k->family = m.family_id;
    k->mcgrp = m.mcgrp_id;
    return true;
}

static int nl_index_cmd(NbdKernel *k, uint8_t cmd, uint32_t index,
                        NbdNlMsg *m)
{
    uint8_t req[256];
    size_t len;
    int fd = nl_socket(NULL);
    int r;

    if (fd < 0) {
        return -errno;
    }
    len = nbd_nl_encode_index_cmd(req, sizeof(req), k->family, ++k->seq,
                                  cmd, index);
    r = nl_transact(fd, req, len, k->family, m);
    close(fd);
    return r;
}

/* ---- the device lifetime ------------------------------------------------- */

static NbdKernel *kernel_get(NbdContext *ctx)
{
    if (!ctx->kernel) {
        ctx->kernel = XNEW(NbdKernel);
        ctx->kernel->ctx = ctx;
        ctx->kernel->mc_fd = -1;
    }
    return ctx->kernel;
}

static NbdDevice *kernel_find(NbdKernel *k, uint32_t index)
{
    for (size_t i = 0; k && i < k->devices.len; i++) {
        if (k->devices.ptr[i]->index == index) {
            return k->devices.ptr[i];
        }
    }
    return NULL;
}

static NbdDevice *kernel_find_export(NbdKernel *k, const NbdExport *exp)
{
    for (size_t i = 0; k && i < k->devices.len; i++) {
        if (k->devices.ptr[i]->exp == exp) {
            return k->devices.ptr[i];
        }
    }
    return NULL;
}

static void device_free(NbdDevice *d)
{
    if (d->exp) {
        nbd_export_unref(d->exp);
    }
    if (d->dev_fd >= 0) {
        close(d->dev_fd);
    }
    if (d->dead_timer) {
        loop_timer_free(d->dead_timer);
    }
    free(d->conns);
    free(d->path);
    free(d);
}

/* Every connection is closed and the DO_IT thread (if any) is back:
 * the device is unbound.  Drop it from the registry and tell. */
static void device_maybe_end(NbdDevice *d)
{
    NbdKernel *k = d->k;

    if (d->open_conns > 0 || d->thread_running || d->disc_pending ||
        d->finalizing || d->awaiting_link_dead) {
        return;
    }
    d->finalizing = true;
    for (size_t i = 0; i < k->devices.len; i++) {
        if (k->devices.ptr[i] == d) {
            k->devices.ptr[i] = k->devices.ptr[k->devices.len - 1];
            k->devices.len--;
            break;
        }
    }
    log_info("%s disconnected (%s)", d->path,
             d->reason ? d->reason : "closed by the kernel");
    qapi_event_send_nbd_device_disconnected(
        k->ctx->events, d->path,
        d->reason ? d->reason : "closed by the kernel");
    device_free(d);
}

static void device_all_lost(NbdDevice *d);

static void device_conn_closed(void *opaque, NbdConn *c)
{
    NbdDevice *d = opaque;
    bool lost = !d->ending && !d->finalizing && !c->disc_received;

    for (uint32_t i = 0; i < d->nconns; i++) {
        if (d->conns[i] == c) {
            d->conns[i] = NULL;
            d->open_conns--;
        }
    }
    if (lost) {
        log_warn("%s: a connection ended with no disconnect asked "
                 "(%u of %u left)", d->path, d->open_conns, d->nconns);
        d->lost = true;
        if (d->open_conns == 0) {
            device_all_lost(d);
        }
    }
    device_maybe_end(d);
}

/* Close our ends (the kernel sees EOF). */
static void device_close_conns(NbdDevice *d)
{
    for (uint32_t i = 0; i < d->nconns; i++) {
        if (d->conns[i]) {
            nbd_conn_close(d->conns[i]);   /* device_conn_closed() */
        }
    }
}

/* The ioctl way: NBD_DO_IT blocks until the device is disconnected. */
static void device_thread_done(void *opaque)
{
    NbdDevice *d = opaque;

    pthread_join(d->thread, NULL);
    d->thread_running = false;
    device_maybe_end(d);
}

static void *device_thread(void *opaque)
{
    NbdDevice *d = opaque;

    if (ioctl(d->dev_fd, KNBD_DO_IT) < 0 && errno != EPIPE) {
        log_info("%s: NBD_DO_IT: %s", d->path, strerror(errno));
    }
    ioctl(d->dev_fd, KNBD_CLEAR_QUE);
    ioctl(d->dev_fd, KNBD_CLEAR_SOCK);
    loop_post(d->k->ctx->loop, device_thread_done, d);
    return NULL;
}

/* Ask the kernel to let go of d (it then sends NBD_CMD_DISC and shuts
 * its sockets down).  Returns 0 or -errno.  Any thread. */
static int device_disconnect_now(NbdDevice *d, uint16_t family)
{
    if (d->netlink) {
        uint8_t req[256];
        NbdNlMsg m;
        size_t len = nbd_nl_encode_index_cmd(req, sizeof(req), family, 1,
                                             NBD_CMD_DISCONNECT, d->index);
        int fd = nl_socket(NULL);
        int r;

        if (fd < 0) {
            return -errno;
        }
        r = nl_transact(fd, req, len, family, &m);
        close(fd);
        return r;
    }
    if (d->dev_fd >= 0 && ioctl(d->dev_fd, KNBD_DISCONNECT) < 0) {
        return -errno;
    }
    return 0;
}

/* On a worker: the kernel may have to write to our socket before it
 * lets go (NBD_CMD_DISC, the rest of a request), and only the loop
 * reads it. */
typedef struct DiscJob {
    WorkerJob job;
    NbdDevice *d;
    uint16_t family;
    int r;
} DiscJob;

static void disc_run(WorkerJob *job)
{
    DiscJob *j = (DiscJob *)job;

    j->r = device_disconnect_now(j->d, j->family);
}

static void disc_done(WorkerJob *job)
{
    DiscJob *j = (DiscJob *)job;
    NbdDevice *d = j->d;

    if (j->r < 0) {
        log_warn("%s: disconnect: %s", d->path, strerror(-j->r));
    }
    d->disc_pending = false;
    free(j);
    device_maybe_end(d);
}

static void device_request_disconnect(NbdDevice *d, const char *reason)
{
    DiscJob *j;

    if (!d->reason) {
        d->reason = reason;
    }
    if (d->ending) {
        return;
    }
    d->ending = true;
    j = XNEW(DiscJob);
    j->job.run = disc_run;
    j->job.done = disc_done;
    j->d = d;
    j->family = d->k->family;
    d->disc_pending = true;
    worker_submit(d->k->ctx->pool, &j->job);
}

static void device_dead_timeout(void *opaque)
{
    NbdDevice *d = opaque;

    d->awaiting_link_dead = false;
    log_warn("%s: no link-dead notification from the kernel; "
             "disconnecting", d->path);
    device_request_disconnect(d, "link dead");
}

/* Every connection of ours is gone and nobody asked for it: the kernel
 * still holds the device, its links dead (it fails I/O, or holds it for
 * dead-conn-timeout for a reconfiguration that will not come).  The
 * ioctl way ends by itself (NBD_DO_IT returns once the kernel's
 * receivers saw the sockets die); a netlink device is disconnected, so
 * that nothing stays half-bound, once the kernel's link-dead
 * notification is in (it says why), or NBD_LINK_DEAD_WAIT_US later. */
static void device_all_lost(NbdDevice *d)
{
    if (!d->reason) {
        d->reason = "link dead";
    }
    if (!d->netlink) {
        return;
    }
    if (d->link_dead || d->k->mc_fd < 0) {
        device_request_disconnect(d, "link dead");
        return;
    }
    d->awaiting_link_dead = true;
    if (!d->dead_timer) {
        d->dead_timer = loop_timer_new(d->k->ctx->loop, device_dead_timeout,
                                       d);
    }
    loop_timer_arm(d->dead_timer, NBD_LINK_DEAD_WAIT_US);
}

/* Link-dead notifications from the kernel's multicast group. */
static void kernel_mc_ready(int fd, int events, void *opaque)
{
    NbdKernel *k = opaque;
    uint8_t buf[NBD_NL_BUF_SIZE];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    size_t off = 0;

    (void)events;
    while (n > 0 && off < (size_t)n) {
        NbdNlMsg m;
        long r = nbd_nl_decode(buf + off, (size_t)n - off, k->family, &m);
        NbdDevice *d;

        if (r <= 0) {
            break;
        }
        off += (size_t)r;
        if (m.cmd == NBD_CMD_LINK_DEAD && m.has_index &&
            (d = kernel_find(k, m.index)) != NULL) {
            log_warn("%s: the kernel reports a dead link", d->path);
            d->link_dead = true;
            if (d->awaiting_link_dead) {
                /* No fallback needed: the word came. */
                loop_timer_free(d->dead_timer);
                d->dead_timer = NULL;
                d->awaiting_link_dead = false;
                device_request_disconnect(d, "link dead");
            }
        }
    }
}

static void kernel_watch_mcgroup(NbdKernel *k)
{
    int fd;

    if (k->mc_fd >= 0 || k->mcgrp == 0) {
        return;
    }
    fd = nl_socket(NULL);
    if (fd < 0) {
        return;
    }
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &k->mcgrp,
                   sizeof(k->mcgrp)) != 0) {
        close(fd);
        return;
    }
    k->mc_fd = fd;
    k->mc_watch = loop_fd_add(k->ctx->loop, fd, LOOP_READ, kernel_mc_ready,
                              k);
}

/* ---- partitions ---------------------------------------------------------- */

typedef struct RescanJob {
    WorkerJob job;
    char *path;
    uint32_t index;
} RescanJob;

static void rescan_run(WorkerJob *job)
{
    RescanJob *j = (RescanJob *)job;
    int fd;

    /* The ioctl way applies the size only once NBD_DO_IT runs (in its
     * thread, maybe not yet), after the device shows its pid: wait for
     * the size, up to 10 s. */
    for (int i = 0; i < 1000 && device_sectors(j->index) == 0; i++) {
        usleep(10 * 1000);
    }
    fd = open(j->path, O_RDONLY | O_CLOEXEC);

    /* Opening reads the partition table when the kernel asks for a
     * scan; BLKRRPART makes sure.  Both need the loop serving us, so
     * this runs on a worker. */
    if (fd >= 0) {
        ioctl(fd, BLKRRPART);
        close(fd);
    }
}

static void rescan_done(WorkerJob *job)
{
    RescanJob *j = (RescanJob *)job;

    free(j->path);
    free(j);
}

static void device_rescan(NbdKernel *k, const char *path, uint32_t index)
{
    RescanJob *j = XNEW(RescanJob);

    j->index = index;

    j->job.run = rescan_run;
    j->job.done = rescan_done;
    j->path = xstrdup(path);
    worker_submit(k->ctx->pool, &j->job);
}

/* ---- connect ------------------------------------------------------------- */

typedef struct NbdDeviceConfig {
    bool has_index;
    uint32_t index;
    bool read_only;
    uint32_t connections;
    uint32_t block_size;
    uint32_t timeout, dead_conn_timeout;
    bool disconnect_on_close;
    const char *backend_id;
    NbdDeviceInterface iface;
} NbdDeviceConfig;

static uint64_t device_flags(NbdExport *exp, bool read_only)
{
    uint64_t f = nbd_export_tflags(exp, false);

    if (read_only) {
        f &= ~(uint64_t)(NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
                         NBD_FLAG_SEND_WRITE_ZEROES |
                         NBD_FLAG_SEND_FAST_ZERO);
        f |= NBD_FLAG_READ_ONLY;
    }
    return f;
}

static bool connect_netlink(NbdKernel *k, NbdDevice *d,
                            const NbdDeviceConfig *cfg, const int *fds,
                            Error **errp)
{
    uint8_t req[NBD_NL_BUF_SIZE];
    NbdNlConnect c = {
        .has_index = cfg->has_index, .index = cfg->index,
        .size_bytes = d->size,
        .block_size = cfg->block_size ? cfg->block_size :
            NBD_DEFAULT_BLOCK_SIZE,
        .timeout = cfg->timeout, .dead_conn_timeout = cfg->dead_conn_timeout,
        .server_flags = device_flags(d->exp, d->read_only),
        .client_flags = cfg->disconnect_on_close ?
            KNBD_CFLAG_DISCONNECT_ON_CLOSE : 0,
        .fds = fds, .nfds = d->nconns, .backend_id = cfg->backend_id,
    };
    size_t len = nbd_nl_encode_connect(req, sizeof(req), k->family,
                                       ++k->seq, &c);
    NbdNlMsg m;
    int fd = nl_socket(errp);
    int r;

    if (fd < 0) {
        return false;
    }
    r = nl_transact(fd, req, len, k->family, &m);
    close(fd);
    if (r == -EBUSY) {
        error_setg(errp, "Device /dev/nbd%u is busy", cfg->index);
        return false;
    }
    if (r < 0) {
        error_perm(errp, -r, "Netlink NBD_CMD_CONNECT");
        return false;
    }
    if (!m.has_index) {
        error_setg(errp, "The kernel's NBD_CMD_CONNECT reply has no index");
        return false;
    }
    d->index = m.index;
    return true;
}

static bool connect_ioctl(NbdDevice *d, const NbdDeviceConfig *cfg,
                          int fd, Error **errp)
{
    uint32_t bs = cfg->block_size ? cfg->block_size : NBD_DEFAULT_BLOCK_SIZE;

    d->dev_fd = open(d->path, O_RDWR | O_CLOEXEC);
    if (d->dev_fd < 0) {
        error_perm(errp, errno, "Opening the device");
        error_prepend(errp, "%s: ", d->path);
        return false;
    }
    if (ioctl(d->dev_fd, KNBD_SET_BLKSIZE, (unsigned long)bs) < 0 ||
        ioctl(d->dev_fd, KNBD_SET_SIZE_BLOCKS,
              (unsigned long)(d->size / bs)) < 0 ||
        ioctl(d->dev_fd, KNBD_SET_FLAGS,
              (unsigned long)device_flags(d->exp, d->read_only)) < 0 ||
        (cfg->timeout &&
         ioctl(d->dev_fd, KNBD_SET_TIMEOUT, (unsigned long)cfg->timeout) < 0)) {
        error_perm(errp, errno, "Configuring the device");
        error_prepend(errp, "%s: ", d->path);
        goto fail;
    }
    if (ioctl(d->dev_fd, KNBD_SET_SOCK, (unsigned long)fd) < 0) {
        if (errno == EBUSY) {
            error_setg(errp, "Device %s is busy", d->path);
        } else {
            error_perm(errp, errno, "NBD_SET_SOCK");
        }
        goto fail;
    }
    if (pthread_create(&d->thread, NULL, device_thread, d) != 0) {
        error_setg(errp, "Could not start the NBD_DO_IT thread");
        ioctl(d->dev_fd, KNBD_CLEAR_SOCK);
        goto fail;
    }
    d->thread_running = true;
    return true;

fail:
    close(d->dev_fd);
    d->dev_fd = -1;
    return false;
}

static NbdDevice *device_connect(NbdContext *ctx, const char *export_id,
                                 const NbdDeviceConfig *cfg, Error **errp)
{
    NbdExport *exp = ctx->server ?
        nbd_export_find_id(ctx->server, export_id) : NULL;
    NbdKernel *k;
    NbdDevice *d;
    int kfds[NBD_MAX_KERNEL_CONNS];
    bool netlink;
    uint64_t tflags;
    int64_t len;
    bool ok = false;

    if (!exp || exp->shutting_down) {
        error_setg(errp, "Export '%s' is not found", export_id);
        return NULL;
    }
    if (!nbd_kernel_check_module("/sys", errp)) {
        return NULL;
    }
    if (cfg->connections < 1 || cfg->connections > NBD_MAX_KERNEL_CONNS) {
        error_setg(errp, "connections must be 1 to %d",
                   NBD_MAX_KERNEL_CONNS);
        return NULL;
    }
    if (cfg->block_size && (cfg->block_size < 512 ||
                            cfg->block_size > 4096 ||
                            (cfg->block_size & (cfg->block_size - 1)))) {
        error_setg(errp, "block-size must be a power of two from 512 to "
                   "4096");
        return NULL;
    }
    if (!cfg->read_only && !exp->writable) {
        error_setg(errp, "Export '%s' is read-only: use read-only=true",
                   export_id);
        return NULL;
    }
    tflags = nbd_export_tflags(exp, false);
    if (cfg->connections > 1 && !(tflags & NBD_FLAG_CAN_MULTI_CONN)) {
        error_setg(errp, "Export '%s' is not safe for several connections "
                   "(no multi-conn)", export_id);
        return NULL;
    }
    k = kernel_get(ctx);
    if (cfg->has_index) {
        CLEANUP_FREE char *path = xasprintf("/dev/nbd%u", cfg->index);

        if (kernel_find(k, cfg->index) || device_busy(cfg->index)) {
            error_setg(errp, "Device %s is busy", path);
            return NULL;
        }
        if (!device_exists(path, errp)) {
            return NULL;
        }
    }
    netlink = cfg->iface != NBD_DEVICE_INTERFACE_IOCTL;
    if (netlink) {
        Error *err = NULL;

        if (!kernel_resolve_family(k, &err)) {
            if (cfg->iface == NBD_DEVICE_INTERFACE_NETLINK) {
                error_propagate(errp, err);
                return NULL;
            }
            error_free(err);
            netlink = false;
        }
    }
    if (!netlink) {
        if (!cfg->has_index) {
            error_setg(errp, "'device' is needed with the ioctl interface");
            return NULL;
        }
        if (cfg->connections > 1) {
            error_setg(errp, "Several connections need the netlink "
                       "interface");
            return NULL;
        }
        if (cfg->dead_conn_timeout || cfg->disconnect_on_close ||
            cfg->backend_id) {
            error_setg(errp, "dead-conn-timeout, disconnect-on-close and "
                       "backend-id need the netlink interface");
            return NULL;
        }
    }
    len = blk_getlength(exp->node);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the export's size");
        return NULL;
    }

    d = XNEW(NbdDevice);
    d->k = k;
    d->exp = exp;
    nbd_export_ref(exp);
    d->read_only = cfg->read_only;
    d->netlink = netlink;
    d->size = (uint64_t)len;
    d->index = cfg->index;
    d->dev_fd = -1;
    d->nconns = cfg->connections;
    d->conns = xcalloc(d->nconns, sizeof(*d->conns));
    if (cfg->has_index) {
        d->path = xasprintf("/dev/nbd%u", cfg->index);
    }
    for (uint32_t i = 0; i < d->nconns; i++) {
        kfds[i] = -1;
    }
    for (uint32_t i = 0; i < d->nconns; i++) {
        NbdConnOptions opts = {
            .read_only = d->read_only,
            .on_close = device_conn_closed, .close_opaque = d,
        };
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            error_setg_errno(errp, errno, "socketpair");
            goto out;
        }
        kfds[i] = sv[1];
        fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
        d->conns[i] = nbd_conn_start_transmission(ctx->server, sv[0], exp,
                                                  &opts, errp);
        if (!d->conns[i]) {
            close(sv[0]);
            goto out;
        }
        d->open_conns++;
    }
    if (netlink) {
        if (!connect_netlink(k, d, cfg, kfds, errp)) {
            goto out;
        }
        if (!d->path) {
            d->path = xasprintf("/dev/nbd%u", d->index);
        }
        kernel_watch_mcgroup(k);
    } else if (!connect_ioctl(d, cfg, kfds[0], errp)) {
        goto out;
    }
    ok = true;

out:
    for (uint32_t i = 0; i < d->nconns; i++) {
        if (kfds[i] >= 0) {
            close(kfds[i]);          /* the kernel holds its own */
        }
    }
    if (!ok) {
        d->finalizing = true;        /* no event for what never was */
        device_close_conns(d);
        device_free(d);
        return NULL;
    }
    NbdDeviceVec_append(&k->devices, d);
    device_rescan(k, d->path, d->index);
    log_info("%s bound to export '%s' (%s, %u connection%s%s)", d->path,
             exp->id, netlink ? "netlink" : "ioctl", d->nconns,
             d->nconns > 1 ? "s" : "", d->read_only ? ", read-only" : "");
    return d;
}

/* ---- what the rest of nbd/ calls ----------------------------------------- */

bool nbd_kernel_disconnect_device(const char *path, Error **errp)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        error_setg(errp, "Cannot open %s: %s", path, strerror(errno));
        return false;
    }
    if (ioctl(fd, KNBD_DISCONNECT) < 0) {
        error_setg(errp, "Cannot disconnect %s: %s", path, strerror(errno));
        close(fd);
        return false;
    }
    /* Refused on netlink-bound devices after a disconnect: harmless. */
    ioctl(fd, KNBD_CLEAR_SOCK);
    close(fd);
    return true;
}

bool nbd_kernel_export_del(NbdContext *ctx, NbdExport *exp, bool hard,
                           Error **errp)
{
    NbdKernel *k = ctx->kernel;
    NbdDevice *d = kernel_find_export(k, exp);

    if (!d) {
        return true;
    }
    if (!hard) {
        error_setg(errp, "Export '%s' is bound to %s: nbd-device-disconnect "
                   "it first (or use mode=hard)", exp->id, d->path);
        return false;
    }
    for (size_t i = 0; i < k->devices.len; i++) {
        d = k->devices.ptr[i];
        if (d->exp == exp) {
            device_request_disconnect(d, "export deleted");
        }
    }
    return true;
}

void nbd_kernel_shutdown(NbdContext *ctx)
{
    NbdKernel *k = ctx->kernel;
    uint64_t deadline;

    if (!k) {
        return;
    }
    /* Our ends first: the kernel's writes then fail at once instead of
     * waiting for a loop that no longer runs, and its disconnect cannot
     * block on our socket.  A device whose last connection closes ends
     * here (unless its DO_IT thread or a disconnect job is still out). */
    for (size_t i = 0; i < k->devices.len; i++) {
        k->devices.ptr[i]->reason = k->devices.ptr[i]->reason ?
            k->devices.ptr[i]->reason : "server stopped";
        k->devices.ptr[i]->finalizing = true;   /* held for now */
        k->devices.ptr[i]->awaiting_link_dead = false;
    }
    for (size_t i = 0; i < k->devices.len; i++) {
        NbdDevice *d = k->devices.ptr[i];
        int r;

        device_close_conns(d);
        if (!d->ending) {
            d->ending = true;
            r = device_disconnect_now(d, k->family);
            if (r < 0) {
                log_warn("%s: disconnect: %s", d->path, strerror(-r));
            }
        }
    }
    for (size_t i = 0; i < k->devices.len; i++) {
        k->devices.ptr[i]->finalizing = false;
    }
    /* DO_IT threads return once the kernel sees the sockets closed;
     * disconnect jobs complete through posts. */
    deadline = loop_now_us() + 10ULL * 1000 * 1000;
    for (;;) {
        size_t i = 0;

        loop_run_posted(ctx->loop);
        while (i < k->devices.len) {
            NbdDevice *d = k->devices.ptr[i];
            size_t before = k->devices.len;

            device_maybe_end(d);
            if (k->devices.len == before) {
                i++;
            }
        }
        if (k->devices.len == 0 || loop_now_us() > deadline) {
            break;
        }
        usleep(10 * 1000);
    }
    for (size_t i = 0; i < k->devices.len; i++) {
        log_error("%s: still bound at shutdown", k->devices.ptr[i]->path);
    }
    if (k->mc_watch) {
        loop_fd_del(k->mc_watch);
    }
    if (k->mc_fd >= 0) {
        close(k->mc_fd);
    }
    NbdDeviceVec_reset(&k->devices);
    free(k);
    ctx->kernel = NULL;
}

/* ---- QMP ----------------------------------------------------------------- */

bool qmp_nbd_device_connect(QmpCtx *ctx, const QmpNbdDeviceConnectArgs *args,
                            NbdDeviceConnectInfo **ret, Error **errp)
{
    NbdContext *nc = ctx->nbd;
    NbdExport *exp = nc->server ?
        nbd_export_find_id(nc->server, args->export) : NULL;
    NbdDeviceConfig cfg = {
        .connections = args->has_connections ? args->connections : 1,
        .block_size = args->has_block_size ? args->block_size : 0,
        .timeout = args->has_timeout ? args->timeout : 0,
        .dead_conn_timeout = args->has_dead_conn_timeout ?
            args->dead_conn_timeout : 0,
        .disconnect_on_close = args->has_disconnect_on_close &&
            args->disconnect_on_close,
        .backend_id = args->has_backend_id ? args->backend_id : NULL,
        .iface = args->has_interface ? args->interface :
            NBD_DEVICE_INTERFACE_AUTO,
    };
    NbdDevice *d;

    if (args->has_device &&
        !nbd_kernel_parse_device(args->device, &cfg.index, errp)) {
        return false;
    }
    cfg.has_index = args->has_device;
    cfg.read_only = args->has_read_only ? args->read_only :
        !(exp && exp->writable);
    d = device_connect(nc, args->export, &cfg, errp);
    if (!d) {
        return false;
    }
    *ret = XNEW(NbdDeviceConnectInfo);
    (*ret)->device = xstrdup(d->path);
    (*ret)->index = d->index;
    return true;
}

bool qmp_nbd_device_disconnect(QmpCtx *ctx,
                               const QmpNbdDeviceDisconnectArgs *args,
                               Error **errp)
{
    NbdDevice *d;
    uint32_t index;

    if (!nbd_kernel_parse_device(args->device, &index, errp)) {
        return false;
    }
    d = kernel_find(ctx->nbd->kernel, index);
    if (!d) {
        error_setg(errp, "%s is not bound by this daemon", args->device);
        return false;
    }
    device_request_disconnect(d, "disconnect requested");
    return true;
}

bool qmp_query_nbd_devices(QmpCtx *ctx, const QmpQueryNbdDevicesArgs *args,
                           NbdDeviceInfoList **ret, Error **errp)
{
    NbdKernel *k = ctx->nbd->kernel;
    size_t n = k ? k->devices.len : 0;
    NbdDeviceInfoList *list = XNEW(NbdDeviceInfoList);

    (void)args;
    (void)errp;
    list->n = n;
    list->v = xcalloc(n ? n : 1, sizeof(*list->v));
    for (size_t i = 0; i < n; i++) {
        NbdDevice *d = k->devices.ptr[i];
        NbdDeviceInfo *info = XNEW(NbdDeviceInfo);
        bool connected = !d->ending && d->open_conns > 0;

        if (connected && d->netlink) {
            NbdNlMsg m;

            if (nl_index_cmd(k, NBD_CMD_STATUS, d->index, &m) == 0 &&
                m.has_connected) {
                connected = m.connected;
            }
        }
        info->device = xstrdup(d->path);
        info->index = d->index;
        info->export = xstrdup(d->exp->id);
        info->connected = connected;
        info->read_only = d->read_only;
        info->size = d->size;
        info->connections = d->open_conns;
        list->v[i] = info;
    }
    *ret = list;
    return true;
}
