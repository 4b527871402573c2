/* monitor.c - QMP control sockets; see monitor.h.
 *
 * Per connection:
 *
 *   accept ──> greeting ──> NEGOTIATION ──qmp_capabilities──> COMMAND
 *                              │ any other command:                │
 *                              │ CommandNotFound                   │ events
 *                              v                                   v
 *                           (EOF / error / output overflow) ──> closed
 *
 * Input is cut into messages by qmp/framing.c.
 *
 * While a command of the monitor is deferred (qmp_defer: its work runs
 * on the pool), or while the client has not read MONITOR_OUTPUT_PAUSE
 * bytes of replies, further messages wait in the monitor's queue, in
 * order, and run when the reply has gone out and the output drained;
 * past MONITOR_MAX_QUEUED of them the monitor stops reading its socket.
 * So one read of many small commands cannot make the loop build
 * megabytes of replies nobody reads.  exec-oob requests do not wait.
 */
#include "qmp/monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "qmp/framing.h"
#include "util/acceptor.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/util.h"
#include "util/vector.h"

/* Stop reading a client whose unread replies exceed this. */
#define MONITOR_OUTPUT_PAUSE (1024 * 1024)
/* Descriptors a client passed (SCM_RIGHTS) in one message, at most,
 * for getfd to claim; more are closed at once. */
#define MONITOR_MAX_RECV_FDS 8
/* Descriptors kept by getfd, per monitor. */
#define MONITOR_MAX_NAMED_FDS 64

/* Stop reading a client with this many messages waiting behind a
 * deferred command (QEMU's limit too). */
#define MONITOR_MAX_QUEUED 8

/* A message (or a framing error) waiting behind a deferred command. */
typedef struct MonitorInput {
    json_object *msg;         /* owned, or NULL for an error */
    char *err;                /* the framer's error text, or NULL */
    struct MonitorInput *next;
} MonitorInput;

typedef struct MonitorFd {
    char *name;
    int fd;
} MonitorFd;
DEFINE_VECTOR_TYPE(MonitorFdVec, MonitorFd);
DEFINE_VECTOR_TYPE(MonitorIntVec, int);

/* One server=on chardev: its listening socket(s). */
typedef struct Listener {
    MonitorSet *ms;
    Acceptor *acceptor;       /* removes our socket file when freed */
    bool pretty;
    struct Listener *next;
} Listener;

struct Monitor {
    MonitorSet *ms;
    int fd;
    LoopFd *watch;
    QmpFramer *framer;
    bool command_mode;
    bool oob;
    bool pretty;
    bool closing;
    QmpPending *pending;      /* the deferred command, or NULL */
    MonitorInput *queue, *queue_tail;   /* waiting behind pending */
    size_t nqueued;
    char *out;                /* pending output, out[out_pos..out_len) */
    size_t out_len, out_pos, out_cap;
    MonitorIntVec recv_fds;   /* passed with SCM_RIGHTS, oldest first */
    MonitorFdVec fds;         /* kept by getfd */
    Monitor *prev, *next;
};

struct MonitorSet {
    Loop *loop;
    const QmpCtx *base;           /* the template of every command's ctx */
    Listener *listeners;
    Monitor *monitors;
};

static void monitor_update_events(Monitor *mon);
static void monitor_close(Monitor *mon);

/* ---- chardev specs ------------------------------------------------- */

void chardev_spec_free(ChardevSpec *spec)
{
    if (spec != NULL) {
        free(spec->id);
        free(spec->path);
        free(spec->host);
        free(spec->port);
        free(spec->fd);
        free(spec);
    }
}

ChardevSpec *chardev_spec_parse(const char *opts, Error **errp)
{
    ChardevSpec *spec = XNEW(ChardevSpec);
    CLEANUP_FREE char *copy = xstrdup(opts);
    char *save = NULL, *item;
    bool first = true;

    spec->server = false;
    for (item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save), first = false) {
        char *eq = strchr(item, '=');
        const char *val = eq ? eq + 1 : NULL;
        bool b;

        if (eq != NULL) {
            *eq = '\0';
        }
        if (first && eq == NULL) {
            if (strcmp(item, "socket") != 0) {
                error_setg(errp, "chardev backend '%s' is not supported "
                           "(only 'socket')", item);
                goto fail;
            }
            continue;
        }
        if (first) {
            error_setg(errp, "chardev: the backend type must come first "
                       "(socket,id=...)");
            goto fail;
        }
        if (val == NULL) {
            /* QEMU accepts bare "server" / "nowait" (deprecated). */
            if (strcmp(item, "server") == 0) {
                spec->server = true;
            } else if (strcmp(item, "nowait") == 0) {
                spec->wait = false;
            } else {
                error_setg(errp, "chardev: option '%s' needs a value",
                           item);
                goto fail;
            }
            continue;
        }
        if (strcmp(item, "id") == 0) {
            free(spec->id);
            spec->id = xstrdup(val);
        } else if (strcmp(item, "path") == 0) {
            free(spec->path);
            spec->path = xstrdup(val);
        } else if (strcmp(item, "host") == 0) {
            free(spec->host);
            spec->host = xstrdup(val);
        } else if (strcmp(item, "port") == 0) {
            free(spec->port);
            spec->port = xstrdup(val);
        } else if (strcmp(item, "fd") == 0) {
            free(spec->fd);
            spec->fd = xstrdup(val);
        } else if (strcmp(item, "server") == 0 ||
                   strcmp(item, "wait") == 0) {
            if (!parse_bool(val, &b)) {
                error_setg(errp, "chardev: parameter '%s' expects 'on' or "
                           "'off'", item);
                goto fail;
            }
            if (item[0] == 's') {
                spec->server = b;
            } else {
                spec->wait = b;
            }
        } else {
            error_setg(errp, "Invalid parameter '%s'", item);
            goto fail;
        }
    }
    if (spec->id == NULL) {
        error_setg(errp, "chardev: no id specified");
        goto fail;
    }
    if ((spec->path != NULL) + (spec->host != NULL || spec->port != NULL) +
        (spec->fd != NULL) != 1) {
        error_setg(errp, "chardev: socket needs one of 'path', "
                   "'host'+'port' or 'fd'");
        goto fail;
    }
    if (spec->fd != NULL && !spec->server) {
        error_setg(errp, "chardev: 'fd' is a listening socket: it needs "
                   "server=on");
        goto fail;
    }
    if (spec->path == NULL && spec->fd == NULL && spec->port == NULL) {
        error_setg(errp, "chardev: tcp socket needs a 'port'");
        goto fail;
    }
    if (spec->path != NULL &&
        strlen(spec->path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", spec->path);
        goto fail;
    }
    return spec;

fail:
    chardev_spec_free(spec);
    return NULL;
}

ChardevSpec *chardev_spec_parse_qmp(const char *addr, Error **errp)
{
    ChardevSpec *spec = XNEW(ChardevSpec);
    const char *colon;

    spec->id = xstrdup("qmp");
    spec->server = true;
    if (strncmp(addr, "unix:", 5) == 0 && addr[5] != '\0') {
        spec->path = xstrdup(addr + 5);
        if (strlen(spec->path) >=
            sizeof(((struct sockaddr_un *)0)->sun_path)) {
            error_setg(errp, "UNIX socket path '%s' is too long",
                       spec->path);
            chardev_spec_free(spec);
            return NULL;
        }
        return spec;
    }
    if (strncmp(addr, "tcp:", 4) == 0 &&
        (colon = strrchr(addr + 4, ':')) != NULL && colon[1] != '\0') {
        const char *host = addr + 4;
        size_t hl = colon - host;
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
            host++;
            hl -= 2;
        }
        spec->host = xstrndup(host, hl);
        spec->port = xstrdup(colon + 1);
        return spec;
    }
    error_setg(errp, "--qmp: expected unix:PATH or tcp:HOST:PORT, got '%s'",
               addr);
    chardev_spec_free(spec);
    return NULL;
}

/* ---- sockets ------------------------------------------------------- */

/* fd=NAME|N: a socket passed by socket activation under NAME, or an
 * inherited descriptor by number; taken (it is ours from now on). */
static bool spec_take_fd(const char *str, int *fd, Error **errp)
{
    uint64_t n;

    if (sock_activated_has(str) || !parse_uint64(str, &n) ||
        n > INT32_MAX) {
        *fd = sock_activated_take(str, errp);
        return *fd >= 0;
    }
    if (!sock_inherited_take((int)n, errp)) {
        return false;
    }
    *fd = (int)n;
    return true;
}

static void spec_to_addr(const ChardevSpec *spec, SockAddr *sa)
{
    if (spec->path != NULL) {
        *sa = (SockAddr){ .type = SOCK_ADDR_UNIX, .path = spec->path };
    } else {
        *sa = (SockAddr){ .type = SOCK_ADDR_INET, .host = spec->host,
                          .port = spec->port };
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl >= 0) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

/* ---- output -------------------------------------------------------- */

static void monitor_flush(Monitor *mon)
{
    while (mon->out_pos < mon->out_len) {
        ssize_t n = send(mon->fd, mon->out + mon->out_pos,
                         mon->out_len - mon->out_pos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            log_debug("monitor: write failed: %s", strerror(errno));
            monitor_close(mon);
            return;
        }
        mon->out_pos += n;
    }
    if (mon->out_pos == mon->out_len) {
        mon->out_pos = mon->out_len = 0;
    }
    monitor_update_events(mon);
}

/* Queue one JSON message (one line, \r\n-terminated, as QEMU sends). */
static void monitor_send(Monitor *mon, json_object *obj)
{
    if (mon->closing) {
        return;
    }
    /* (monitor_flush rewinds the buffer whenever it empties it.) */
    qjson_append(&mon->out, &mon->out_len, &mon->out_cap, obj,
                 mon->pretty);
    if (mon->out_len + 3 > mon->out_cap) {
        mon->out_cap = mon->out_len + 64;
        mon->out = xrealloc(mon->out, mon->out_cap);
    }
    memcpy(mon->out + mon->out_len, "\r\n", 3);
    mon->out_len += 2;
    if (mon->out_len - mon->out_pos > MONITOR_MAX_OUTPUT) {
        log_warn("monitor: client does not read its replies; closing");
        monitor_close(mon);
        return;
    }
    monitor_flush(mon);
}

static void monitor_send_error(Monitor *mon, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void monitor_send_error(Monitor *mon, const char *fmt, ...)
{
    CLEANUP_JSON json_object *reply = json_object_new_object();
    json_object *err = json_object_new_object();
    CLEANUP_FREE char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    json_object_object_add(err, "class",
                           json_object_new_string("GenericError"));
    json_object_object_add(err, "desc", json_object_new_string(msg));
    json_object_object_add(reply, "error", err);
    monitor_send(mon, reply);
}

static void monitor_send_greeting(Monitor *mon)
{
    CLEANUP_JSON json_object *g = json_object_new_object();
    json_object *qmp = json_object_new_object();
    json_object *version = json_object_new_object();
    json_object *qemu = json_object_new_object();
    json_object *caps = json_object_new_array();

    /* The QEMU level whose QMP we speak; our own identity in package. */
    json_object_object_add(qemu, "micro", json_object_new_int(0));
    json_object_object_add(qemu, "minor", json_object_new_int(1));
    json_object_object_add(qemu, "major", json_object_new_int(10));
    json_object_object_add(version, "qemu", qemu);
    json_object_object_add(version, "package",
                           json_object_new_string("blockd-" BLOCKD_VERSION));
    json_object_object_add(qmp, "version", version);
    json_object_array_add(caps, json_object_new_string("oob"));
    json_object_object_add(qmp, "capabilities", caps);
    json_object_object_add(g, "QMP", qmp);
    monitor_send(mon, g);
}

/* ---- input --------------------------------------------------------- */

static void monitor_handle(Monitor *mon, json_object *req)
{
    QmpCtx ctx = *mon->ms->base;
    CLEANUP_JSON json_object *reply = NULL;

    ctx.mon = mon;
    ctx.text_replies = !mon->pretty;
    reply = qmp_dispatch(&ctx, req);
    if (reply != NULL) {
        monitor_send(mon, reply);
    }
}

/* Whether a new message must wait in the queue: a command is deferred,
 * or the client is behind on reading its replies. */
static bool monitor_busy(const Monitor *mon)
{
    return mon->pending != NULL ||
           mon->out_len - mon->out_pos >= MONITOR_OUTPUT_PAUSE;
}

/* Run one message, or answer one framing error. */
static void monitor_process(Monitor *mon, json_object *msg, const char *err)
{
    if (msg != NULL) {
        monitor_handle(mon, msg);
    } else {
        monitor_send_error(mon, "%s", err);
    }
}

static bool is_exec_oob(json_object *msg)
{
    return json_object_is_type(msg, json_type_object) &&
           json_object_object_get_ex(msg, "exec-oob", NULL);
}

/* A message or an error from the framer (see framing.h). */
static bool monitor_on_frame(void *opaque, json_object *msg, const char *err)
{
    Monitor *mon = opaque;

    if ((!monitor_busy(mon) && mon->queue == NULL) ||
        (mon->oob && msg != NULL && is_exec_oob(msg))) {
        monitor_process(mon, msg, err);
    } else {
        MonitorInput *in = XNEW(MonitorInput);

        in->msg = msg != NULL ? json_object_get(msg) : NULL;
        in->err = msg == NULL ? xstrdup(err) : NULL;
        if (mon->queue_tail != NULL) {
            mon->queue_tail->next = in;
        } else {
            mon->queue = in;
        }
        mon->queue_tail = in;
        mon->nqueued++;
        monitor_update_events(mon);
    }
    return !mon->closing;
}

static void monitor_queue_clear(Monitor *mon)
{
    MonitorInput *in;

    while ((in = mon->queue) != NULL) {
        mon->queue = in->next;
        json_object_put(in->msg);
        free(in->err);
        free(in);
    }
    mon->queue_tail = NULL;
    mon->nqueued = 0;
}

void monitor_command_deferred(Monitor *mon, QmpPending *p)
{
    mon->pending = p;
}

/* Run what waited in the queue, until a command defers again or the
 * output backs up. */
static void monitor_run_queue(Monitor *mon)
{
    while (!mon->closing && !monitor_busy(mon) && mon->queue != NULL) {
        MonitorInput *in = mon->queue;

        mon->queue = in->next;
        if (mon->queue == NULL) {
            mon->queue_tail = NULL;
        }
        mon->nqueued--;
        monitor_process(mon, in->msg, in->err);
        json_object_put(in->msg);
        free(in->err);
        free(in);
    }
    monitor_update_events(mon);     /* reading may resume */
}

void monitor_command_done(Monitor *mon, QmpPending *p, json_object *reply)
{
    (void)p;
    mon->pending = NULL;
    monitor_send(mon, reply);
    monitor_run_queue(mon);
}

static void monitor_update_events(Monitor *mon)
{
    int ev = 0;

    if (mon->closing) {
        return;
    }
    if (mon->out_len - mon->out_pos < MONITOR_OUTPUT_PAUSE &&
        mon->nqueued < MONITOR_MAX_QUEUED) {
        ev |= LOOP_READ;
    }
    if (mon->out_pos < mon->out_len) {
        ev |= LOOP_WRITE;
    }
    loop_fd_set_events(mon->watch, ev);
}

/* Read like recv(), keeping the descriptors passed along (SCM_RIGHTS,
 * unix sockets) for getfd.  The kernel ends a read at a message that
 * carries descriptors, so they come with the request sent with them. */
static ssize_t monitor_recv(Monitor *mon, char *buf, size_t len)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * MONITOR_MAX_RECV_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = ctl.buf,
        .msg_controllen = sizeof(ctl.buf),
    };
    ssize_t n = recvmsg(mon->fd, &msg, MSG_CMSG_CLOEXEC);

    if (n < 0) {
        return n;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL;
         c = CMSG_NXTHDR(&msg, c)) {
        size_t nfds;
        int *fds;

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        fds = (int *)CMSG_DATA(c);
        /* As QEMU: what a read brings replaces what earlier reads
         * brought and no getfd claimed. */
        for (size_t i = 0; i < mon->recv_fds.len; i++) {
            close(mon->recv_fds.ptr[i]);
        }
        mon->recv_fds.len = 0;
        for (size_t i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, &fds[i], sizeof(fd));
            if (mon->recv_fds.len >= MONITOR_MAX_RECV_FDS) {
                close(fd);
            } else {
                MonitorIntVec_append(&mon->recv_fds, fd);
            }
        }
    }
    return n;
}

static void monitor_io(int fd, int events, void *opaque)
{
    Monitor *mon = opaque;
    char buf[65536];

    (void)fd;
    if (events & LOOP_WRITE) {
        monitor_flush(mon);
        if (mon->closing) {
            return;
        }
        monitor_run_queue(mon);
    }
    if (events & LOOP_READ) {
        ssize_t n = monitor_recv(mon, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            monitor_close(mon);
            return;
        }
        if (n == 0) {
            monitor_close(mon);
            return;
        }
        qmp_framer_feed(mon->framer, buf, n, monitor_on_frame, mon);
    }
}

/* ---- passed descriptors (getfd) ----------------------------------- */

static void monitor_close_fds(Monitor *mon)
{
    for (size_t i = 0; i < mon->recv_fds.len; i++) {
        close(mon->recv_fds.ptr[i]);
    }
    MonitorIntVec_reset(&mon->recv_fds);
    for (size_t i = 0; i < mon->fds.len; i++) {
        close(mon->fds.ptr[i].fd);
        free(mon->fds.ptr[i].name);
    }
    MonitorFdVec_reset(&mon->fds);
}

static ssize_t monitor_fd_index(const Monitor *mon, const char *name)
{
    for (size_t i = 0; i < mon->fds.len; i++) {
        if (strcmp(mon->fds.ptr[i].name, name) == 0) {
            return (ssize_t)i;
        }
    }
    return -1;
}

bool monitor_getfd(Monitor *mon, const char *name, Error **errp)
{
    ssize_t i;
    int fd;

    if (mon == NULL) {
        error_setg(errp, "getfd needs a QMP monitor connection");
        return false;
    }
    if (name[0] >= '0' && name[0] <= '9') {
        error_setg(errp, "Parameter 'fdname' expects a name not starting "
                   "with a digit");
        return false;
    }
    if (mon->recv_fds.len == 0) {
        error_setg(errp, "No file descriptor supplied via SCM_RIGHTS");
        return false;
    }
    i = monitor_fd_index(mon, name);
    if (i < 0 && mon->fds.len >= MONITOR_MAX_NAMED_FDS) {
        error_setg(errp, "Too many file descriptors kept (%d): close some "
                   "with closefd", MONITOR_MAX_NAMED_FDS);
        return false;
    }
    fd = mon->recv_fds.ptr[0];
    MonitorIntVec_remove(&mon->recv_fds, 0);
    if (i >= 0) {
        close(mon->fds.ptr[i].fd);
        mon->fds.ptr[i].fd = fd;
    } else {
        MonitorFdVec_append(&mon->fds,
                            (MonitorFd){ .name = xstrdup(name), .fd = fd });
    }
    return true;
}

bool monitor_closefd(Monitor *mon, const char *name, Error **errp)
{
    ssize_t i = mon ? monitor_fd_index(mon, name) : -1;

    if (i < 0) {
        error_setg(errp, "File descriptor named '%s' not found", name);
        return false;
    }
    close(mon->fds.ptr[i].fd);
    free(mon->fds.ptr[i].name);
    MonitorFdVec_remove(&mon->fds, i);
    return true;
}

int monitor_fd_find(const Monitor *mon, const char *name)
{
    ssize_t i = mon ? monitor_fd_index(mon, name) : -1;

    return i < 0 ? -1 : mon->fds.ptr[i].fd;
}

int monitor_fd_take(Monitor *mon, const char *name)
{
    ssize_t i = mon ? monitor_fd_index(mon, name) : -1;
    int fd;

    if (i < 0) {
        return -1;
    }
    fd = mon->fds.ptr[i].fd;
    free(mon->fds.ptr[i].name);
    MonitorFdVec_remove(&mon->fds, i);
    return fd;
}

static void monitor_free_deferred(void *opaque)
{
    Monitor *mon = opaque;

    qmp_framer_free(mon->framer);
    monitor_queue_clear(mon);
    free(mon->out);
    free(mon);
}

static void monitor_close(Monitor *mon)
{
    MonitorSet *ms = mon->ms;

    if (mon->closing) {
        return;
    }
    mon->closing = true;
    if (mon->pending != NULL) {
        /* The work goes on; its reply goes nowhere. */
        qmp_pending_detach(mon->pending);
        mon->pending = NULL;
    }
    loop_fd_del(mon->watch);
    mon->watch = NULL;
    close(mon->fd);
    mon->fd = -1;
    monitor_close_fds(mon);
    if (mon->prev != NULL) {
        mon->prev->next = mon->next;
    } else {
        ms->monitors = mon->next;
    }
    if (mon->next != NULL) {
        mon->next->prev = mon->prev;
    }
    for (Listener *l = ms->listeners; l != NULL; l = l->next) {
        acceptor_fd_freed(l->acceptor);
    }
    /* The caller may still be inside monitor_feed() for this monitor. */
    loop_post(ms->loop, monitor_free_deferred, mon);
}

static Monitor *monitor_new(MonitorSet *ms, int fd, bool pretty)
{
    Monitor *mon = XNEW(Monitor);

    mon->ms = ms;
    mon->fd = fd;
    mon->pretty = pretty;
    mon->framer = qmp_framer_new(MONITOR_MAX_MESSAGE);
    set_nonblock(fd);
    /* A command waits for a few NBD callbacks, not for a turn of the
     * loop over every busy client. */
    mon->watch = loop_fd_add_control(ms->loop, fd, LOOP_READ, monitor_io,
                                     mon);
    mon->next = ms->monitors;
    if (ms->monitors != NULL) {
        ms->monitors->prev = mon;
    }
    ms->monitors = mon;
    monitor_send_greeting(mon);
    return mon;
}

static void listener_accept(void *opaque, int fd)
{
    Listener *l = opaque;

    monitor_new(l->ms, fd, l->pretty);
}

/* server=on,wait=on: like QEMU, block until the first client. */
static int listener_wait_first(const SockListenerVec *ls, Error **errp)
{
    struct pollfd pfd[ls->len];

    for (size_t i = 0; i < ls->len; i++) {
        pfd[i] = (struct pollfd){ .fd = ls->ptr[i].fd, .events = POLLIN };
    }
    for (;;) {
        if (poll(pfd, ls->len, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            error_setg_errno(errp, errno, "Failed to wait for a monitor "
                             "client");
            return -1;
        }
        for (size_t i = 0; i < ls->len; i++) {
            int cfd;

            if (!(pfd[i].revents & POLLIN)) {
                continue;
            }
            cfd = sock_accept(&ls->ptr[i]);
            if (cfd >= 0) {
                return cfd;
            }
            if (cfd != -EAGAIN && cfd != -ECONNABORTED && cfd != -EINTR) {
                error_setg_errno(errp, -cfd, "Failed to accept a monitor "
                                 "client");
                return -1;
            }
        }
    }
}

bool monitor_add(MonitorSet *ms, const ChardevSpec *spec, bool pretty,
                 Error **errp)
{
    SockListenerVec ls = { 0 };
    SockAddr sa;
    Listener *l;
    int fd = -1;

    spec_to_addr(spec, &sa);
    if (spec->fd != NULL) {
        sa = (SockAddr){ .type = SOCK_ADDR_FD };
        if (!spec_take_fd(spec->fd, &sa.fd, errp)) {
            return false;
        }
    }
    if (!spec->server) {
        fd = sock_connect(&sa, -1, errp);
        if (fd < 0) {
            return false;
        }
        monitor_new(ms, fd, pretty);
        return true;
    }
    if (!sock_listen(&sa, &ls, errp)) {
        if (sa.type == SOCK_ADDR_FD) {
            close(sa.fd);     /* taken: nobody else may have it */
        }
        return false;
    }
    if (spec->wait) {
        fd = listener_wait_first(&ls, errp);
        if (fd < 0) {
            sock_listeners_close(&ls);
            return false;
        }
    }
    l = XNEW(Listener);
    l->ms = ms;
    l->pretty = pretty;
    l->acceptor = acceptor_new(ms->loop, "monitor", listener_accept, l);
    acceptor_add(l->acceptor, &ls);
    l->next = ms->listeners;
    ms->listeners = l;
    if (fd >= 0) {
        monitor_new(ms, fd, pretty);
    }
    return true;
}

/* ---- the set ------------------------------------------------------- */

MonitorSet *monitor_set_new(Loop *loop, const QmpCtx *base)
{
    MonitorSet *ms = XNEW(MonitorSet);

    ms->loop = loop;
    ms->base = base;
    return ms;
}

void monitor_set_close(MonitorSet *ms)
{
    Listener *l;

    if (ms == NULL) {
        return;
    }
    while ((l = ms->listeners) != NULL) {
        ms->listeners = l->next;
        acceptor_free(l->acceptor);
        free(l);
    }
    while (ms->monitors != NULL) {
        Monitor *mon = ms->monitors;
        /* Last chance for queued replies (the shutdown events, quit's
         * reply): one non-blocking attempt. */
        if (mon->out_pos < mon->out_len) {
            ssize_t n = send(mon->fd, mon->out + mon->out_pos,
                             mon->out_len - mon->out_pos,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)n;
        }
        monitor_close(mon);
    }
}

void monitor_set_free(MonitorSet *ms)
{
    monitor_set_close(ms);
    free(ms);
}

bool monitor_in_command_mode(const Monitor *mon)
{
    return mon == NULL || mon->command_mode;
}

void monitor_enter_command_mode(Monitor *mon, bool oob)
{
    if (mon != NULL) {
        mon->command_mode = true;
        mon->oob = oob;
    }
}

bool monitor_oob_enabled(const Monitor *mon)
{
    return mon != NULL && mon->oob;
}

void monitor_broadcast_event(MonitorSet *ms, const char *name,
                             json_object *data)
{
    CLEANUP_JSON json_object *ev = json_object_new_object();
    json_object *ts = json_object_new_object();
    struct timeval tv;
    Monitor *mon, *next;

    if (gettimeofday(&tv, NULL) == 0) {
        json_object_object_add(ts, "seconds",
                               json_object_new_int64(tv.tv_sec));
        json_object_object_add(ts, "microseconds",
                               json_object_new_int64(tv.tv_usec));
    } else {
        json_object_object_add(ts, "seconds", json_object_new_int(-1));
        json_object_object_add(ts, "microseconds", json_object_new_int(-1));
    }
    json_object_object_add(ev, "timestamp", ts);
    json_object_object_add(ev, "event", json_object_new_string(name));
    if (data != NULL) {
        json_object_object_add(ev, "data", data);
    }
    if (ms == NULL) {
        return;
    }
    for (mon = ms->monitors; mon != NULL; mon = next) {
        next = mon->next;
        if (mon->command_mode) {
            monitor_send(mon, ev);
        }
    }
}
