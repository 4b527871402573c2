/* internal.h - what the nbd/ files share: the transport ops, the export
 * and server structs, the connection struct and the entry points the
 * connection files call in each other.
 *
 *   listener --accept--> NbdConn --GO--> NbdExport --> BlockNode
 *                         │  xport (plain fd; TLS swaps the ops)
 *                         └─ 16 NbdSlot (request + buffers + reply iov)
 *
 * The connection is split by phase:
 *
 *   conn.c          the byte engine (input, output, events), request
 *                   slots and their buffers, lifetime
 *   handshake.c     greeting and option phase (STARTTLS goes here)
 *   transmission.c  requests, replies, block status, and the public
 *                   entry that starts a connection in transmission
 *   export.c        the export registry and each export's meta
 *                   context table
 *
 * Lifetimes: the server lists every connection and export.  A connection
 * holds a reference on its export; an export holds its node.  Closing a
 * connection stops its I/O at once but the struct lives until its last
 * in-flight request completes; an export is freed (and
 * BLOCK_EXPORT_DELETED sent) when the registry and all connections have
 * dropped it.
 */
#ifndef BLOCKD_NBD_INTERNAL_H
#define BLOCKD_NBD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "blockdev/block.h"
#include "crypto/tls.h"
#include "util/loop.h"
#include "nbd/proto.h"
#include "nbd/server.h"
#include "util/acceptor.h"
#include "util/vector.h"

/* ---- xport: the byte stream under a connection ----------------------- */

typedef struct Xport Xport;
typedef struct XportOps {
    const char *name;                       /* "plain", "tls" */
    /* > 0 bytes read, 0 on EOF, -errno (-EAGAIN when nothing yet). */
    ssize_t (*recv)(Xport *xp, void *buf, size_t len);
    /* recv into several buffers in turn (one recvmsg); NULL when the
     * transport has no cheaper way than recv (TLS). */
    ssize_t (*recvv)(Xport *xp, const struct iovec *iov, int iovcnt);
    /* >= 0 bytes sent (may be short), -errno (-EAGAIN). */
    ssize_t (*sendv)(Xport *xp, const struct iovec *iov, int iovcnt);
    /* Bytes already received and decrypted but not yet read (TLS
     * records); NULL for the plain socket. */
    size_t (*pending)(Xport *xp);
    /* Close the transport (the fd too). */
    void (*close)(Xport *xp);
    /* Move up to len bytes from the pipe pipe_fd to the peer without
     * copying them: >= 0 bytes moved, -errno (-EAGAIN).  NULL when the
     * transport must see the bytes (TLS encrypts them). */
    ssize_t (*splice)(Xport *xp, int pipe_fd, size_t len);
} XportOps;

struct Xport {
    const XportOps *ops;
    int fd;
    void *opaque;                           /* ops-specific (TLS session) */
    bool tls_established;                   /* TLS handshake done */
};

struct gnutls_session_int;
void xport_init_plain(Xport *xp, int fd);
/* xport-tls.c: put xp (a plain transport on a non-blocking socket)
 * under TLS with session (taken over: deinit at close; its credentials
 * and priority already set).  Bytes read ahead in clear are the
 * caller's to drop, never TLS input. */
void xport_tls_start(Xport *xp, struct gnutls_session_int *session);
/* Drive the TLS handshake as far as the socket allows: 1 done; 0 in
 * progress, wait for writability when *want_write else readability;
 * -errno failed, with errp set to gnutls's reason.  Call it only when
 * the socket is ready: once the server's Finished is out, every call
 * that ends in "would block" costs gnutls about 70,000 instructions
 * (it hashes the transcript again; a quarter of an X25519 key
 * exchange), measured with a gnutls-only loop under callgrind. */
int xport_tls_handshake(Xport *xp, bool *want_write, Error **errp);
/* The session of a TLS transport, NULL for a plain one (borrowed). */
struct gnutls_session_int *xport_tls_session(Xport *xp);
static inline size_t xport_pending(Xport *xp)
{
    return xp->ops && xp->ops->pending ? xp->ops->pending(xp) : 0;
}
static inline ssize_t xport_recv(Xport *xp, void *buf, size_t len)
{
    return xp->ops->recv(xp, buf, len);
}
static inline ssize_t xport_sendv(Xport *xp, const struct iovec *iov,
                                  int iovcnt)
{
    return xp->ops->sendv(xp, iov, iovcnt);
}
static inline ssize_t xport_splice(Xport *xp, int pipe_fd, size_t len)
{
    return xp->ops->splice(xp, pipe_fd, len);
}
static inline void xport_close(Xport *xp)
{
    if (xp->ops) {
        xp->ops->close(xp);
    }
    xp->ops = NULL;
}

/* ---- exports and their meta contexts ---------------------------------- */

/* One meta context an export offers: its name and the function that
 * answers a block status request for it.  extent() runs on a worker
 * thread (through the block layer's BLK_OP_BLOCK_STATUS walk): it
 * returns the context's flags (>= 0, e.g. NBD_STATE_HOLE for
 * base:allocation) for the first *pnum bytes of [offset, offset+bytes),
 * or -errno.  opaque belongs to the entry (a bitmap, say) and lives as
 * long as the export. */
typedef struct NbdMetaContext {
    char *name;                  /* "base:allocation", owned */
    BlockStatusFn *extent;
    void *opaque;
} NbdMetaContext;
DEFINE_VECTOR_TYPE(NbdMetaContextVec, NbdMetaContext);

struct NbdExport {
    NbdServer *srv;              /* NULL once the server is gone */
    NbdContext *ctx;          /* what the layer above handed us */
    char *id;
    char *name;
    char *description;           /* NULL allowed */
    char *user;                  /* "export 'id'": the node user tag */
    BlockNode *node;             /* referenced */
    bool writable, writethrough;
    /* The contexts a client may select, fixed at creation; a context id
     * is an index in this table (ids are per connection in the spec;
     * a connection's selection names the export object it is for). */
    NbdMetaContextVec meta;
    /* Exported dirty bitmaps (busy while here); bitmap_users[i] is the
     * user registered on bitmaps[i]'s node when that is not node. */
    struct DirtyBitmap **bitmaps;
    char **bitmap_users;         /* entries NULL when on node itself */
    size_t n_bitmaps;
    bool shutting_down;          /* deleted: no new clients */
    bool in_registry;
    unsigned refcnt;             /* registry + connections (main loop) */
    unsigned nconns;             /* connections that did GO on it */
    /* The iothreads whose loops serve its clients in transmission
     * (the objects pinned by user), n_loops of them: none, the main
     * loop; several, in turn (next_loop, main loop). */
    char **iothreads;
    Loop **loops;
    size_t n_loops, next_loop;
    /* Counters: connections on several loops add to them (NBD_STAT_ADD),
     * queries read them with relaxed loads. */
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, other_ops;
    NbdOpCounters ops;
};

/* A counter that connections on several loops add to (an export's). */
#define NBD_STAT_ADD(field, v) \
    ((void)__atomic_fetch_add(&(field), (v), __ATOMIC_RELAXED))
/* A counter only its connection's loop writes and a query on the main
 * loop reads: a plain add, stored whole (no lock prefix). */
#define NBD_CONN_STAT_ADD(field, v) \
    __atomic_store_n(&(field), (field) + (v), __ATOMIC_RELAXED)
#define NBD_STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* The node exp serves now: a job's pivot (nbd_exports_replace_node, on
 * the main loop) may change it while a connection on an iothread reads
 * it. */
static inline BlockNode *nbd_export_node(const NbdExport *exp)
{
    return __atomic_load_n(&exp->node, __ATOMIC_ACQUIRE);
}

void nbd_export_ref(NbdExport *exp);
/* The loop a client entering transmission on exp goes to: NULL, the
 * main loop's; else the next of its iothreads (its name in *name).
 * Main loop. */
Loop *nbd_export_next_loop(NbdExport *exp, const char **name);
void nbd_export_unref(NbdExport *exp);
/* Transmission flags for a connection that negotiated structured/
 * extended replies (DF depends on it). */
uint16_t nbd_export_tflags(const NbdExport *exp, bool structured);
/* Index of the context called name (len bytes) in exp->meta, or -1. */
int nbd_export_meta_find(const NbdExport *exp, const char *name,
                         size_t len);

/* ---- connections ------------------------------------------------------ */

typedef struct NbdConn NbdConn;

DEFINE_VECTOR_TYPE(NbdExportVec, NbdExport *);
DEFINE_VECTOR_TYPE(NbdConnVec, NbdConn *);

struct NbdServer {
    NbdContext *ctx;          /* what the layer above handed us */
    Acceptor *acceptor;          /* the listeners (util/acceptor.h) */
    NbdExportVec exports;        /* the registry, in creation order */
    NbdConnVec conns;            /* every live struct, closed ones too */
    unsigned nclients;           /* connections not yet closed */
    uint32_t max_connections;
    uint64_t handshake_limit_us;
    LoopPollWindow hs_poll;      /* negotiating clients' answers */
    char *tls_creds, *tls_authz; /* object ids, NULL when not set */
    TlsCreds *tls;               /* pinned (user "nbd-server"); NULL:
                                  * no TLS */
    Authz *authz;                /* pinned; NULL: no authorization */
    NbdServerStats stats;        /* the counters; ids unused */
    uint64_t conn_serial;        /* the last connection's serial */
    bool stopping;
};

/* Create a connection for an accepted socket (takes the fd): the
 * greeting is sent and the handshake starts. */
NbdConn *nbd_conn_new(NbdServer *srv, int fd);
/* Disconnect now (in-flight requests finish in the background). */
void nbd_conn_close(NbdConn *c);
/* The export the connection is attached to, or NULL while negotiating. */
NbdExport *nbd_conn_export(const NbdConn *c);
bool nbd_conn_closed(const NbdConn *c);
/* exp is being deleted: a selection of meta contexts made for it (by a
 * client still negotiating) no longer holds. */
void nbd_conn_forget_export(NbdConn *c, const NbdExport *exp);
/* The server is being freed: disconnect, forget the server, and free
 * the connection at once unless requests are still in flight. */
void nbd_conn_shutdown(NbdConn *c);

/* Server callbacks from the connection code. */
void nbd_server_conn_closed(NbdServer *srv, NbdConn *c);
void nbd_server_conn_freed(NbdServer *srv, NbdConn *c);
/* Count and list a connection that did not come from a listener. */
void nbd_server_conn_added(NbdServer *srv, NbdConn *c);

/* ---- the connection struct (conn.c, handshake.c, transmission.c) ---- */

#define NBD_SLOTS 16                 /* requests in flight per connection */
#define NBD_INBUF_SIZE (64 * 1024)
/* The input buffer inside the struct, while negotiating: every option a
 * client sends in one go and a first request header fit. */
#define NBD_INBUF_SMALL 256
#define NBD_MAX_SEGS 16              /* chunks per sparse read reply */
#define NBD_ERRMSG_MAX 200
#define NBD_SLOT_IOV (2 * NBD_MAX_SEGS + 4)
/* Keep request buffers up to this size between requests; bigger ones
 * go back at once. */
#define NBD_BUF_KEEP (4 * 1024 * 1024)
/* A connection with no request in flight for this long gives its
 * buffers back to the system (NBD_BUF_KEEP is a burst cache, not a
 * reservation). */
#define NBD_IDLE_RELEASE_US (1000 * 1000)
/* While an idle connection holds pins of spliced replies its peer has
 * not read yet: how often to look again (conn_release_pins). */
#define NBD_PIN_CHECK_US (100 * 1000)
/* Reads this big or bigger go from the page cache to the socket by
 * splice(2) through a pipe of the slot's, when the export's node and
 * the transport allow it (a raw file without O_DIRECT, no TLS): no
 * copy through the daemon.  Smaller ones are cheaper copied (two
 * system calls instead of four). */
#define NBD_SPLICE_MIN (64 * 1024)
#define NBD_PIPE_SIZE (1024 * 1024)  /* asked of F_SETPIPE_SZ */
#define NBD_PIPES_MAX 256            /* pipes open in the process */

/* The states; the handler of each reading state runs when its bytes
 * are in (handshake.c for the option phase, transmission.c for
 * requests):
 *
 *  accept ─> greeting sent         nbd_conn_start_transmission()
 *             │                                │
 *   CLIENT_FLAGS (4 B) ──bad flags──> DEAD     │
 *             │                                │
 *   OPT_HDR (16 B) ──bad magic──> DEAD         │
 *      ^      ├─ length > buffer cap ─> OPT_DISCARD ─ ERR_TOO_BIG ─┐
 *      │   OPT_DATA (length B) ─ option handler, one write of replies
 *      └──────┤ <───────────────────────────────────────────────────┘
 *             ├─ ABORT ──> CLOSING ──(output drained)──> DEAD
 *             ├─ STARTTLS ──(ACK sent)──> TLS_HANDSHAKE ──fails──> DEAD
 *             │     (read-ahead dropped)        │ peer + authz ok
 *             │     OPT_HDR, inside TLS <───────┘
 *             └─ GO / EXPORT_NAME              │
 *                   │ <────────────────────────┘
 *   REQ_HDR (28/32 B) <──────────────┐   (paused while 16 slots busy)
 *      │ ├─ WRITE ─> REQ_PAYLOAD ────┤
 *      │ ├─ bad request w/ payload ─> REQ_DRAIN ─┤
 *      │ └─ others: submit / reply ──┘
 *      └─ DISC ──> CLOSING ──(in-flight done, output drained)──> DEAD
 */
typedef enum NbdConnState {
    NBD_CS_CLIENT_FLAGS,
    NBD_CS_OPT_HDR,
    NBD_CS_OPT_DATA,
    NBD_CS_OPT_DISCARD,
    NBD_CS_REQ_HDR,
    NBD_CS_REQ_PAYLOAD,
    NBD_CS_REQ_DRAIN,
    NBD_CS_TLS_HANDSHAKE,        /* no NBD bytes: gnutls owns the socket */
    NBD_CS_CLOSING,
    NBD_CS_DEAD,
} NbdConnState;

typedef struct NbdSeg {
    uint64_t off;                /* from the request offset, bytes */
    uint64_t len;
    bool hole;
} NbdSeg;

/* A block status chunk payload being built: wire bytes, with room for
 * the context id (and count when extended) at the start.  p is pages
 * from nbd_mem_*() (zeroed when mapped), cap bytes. */
typedef struct NbdExtBuf {
    uint8_t *p;
    size_t len, cap;
    uint32_t count;
    uint64_t last_len;           /* length of the last extent */
    uint32_t last_flags;
    bool extended;               /* 16-byte descriptors */
    bool one;                    /* NBD_CMD_FLAG_REQ_ONE */
} NbdExtBuf;

typedef struct NbdSlot {
    NbdConn *conn;
    struct NbdSlot *next;        /* free list or output queue */
    NbdRequest req;
    BlockRequest breq;
    uint8_t *buf;                /* payload buffer (nbd_mem), buf_cap B */
    size_t buf_cap;
    uint32_t err;                /* NBD_E* of the pending error reply */
    char errmsg[NBD_ERRMSG_MAX];
    bool flush_after;            /* TRIM with FUA: flush when done */
    uint64_t start_ns;           /* when the request was read (stats) */
    NbdSeg segs[NBD_MAX_SEGS];
    unsigned nsegs;
    /* Block status: one buffer per selected context (ext_n of them,
     * allocated on first use), and the one being walked. */
    NbdExtBuf *ext;
    unsigned ext_n, ext_cur;
    uint8_t hdr[NBD_MAX_SEGS * 48 + 128 + NBD_ERRMSG_MAX];
    size_t hdr_len;
    struct iovec iov[NBD_SLOT_IOV];
    int niov, iov_idx;
    /* A spliced read: the slot's pipe (-1 until first used; kept with
     * the slot, freed with its buffers), its capacity, whether a
     * BLK_REQ_PIPE read is filling it, and how many bytes of the reply
     * wait in it once the iovecs (the header) are sent. */
    int pipe_fd[2];
    size_t pipe_cap;
    bool splicing;
    uint64_t pipe_fill;
    /* The spliced read's pin (BlockSplicePin; node NULL: none) while its
     * bytes are in the pipe; then the connection's (NbdConn.pins). */
    BlockSplicePin pin;
} NbdSlot;

/* A spliced reply's pin, kept until the socket's peer consumed it:
 * end is NbdConn.sent once its last byte was in the socket. */
typedef struct NbdPinRec {
    BlockSplicePin pin;
    uint64_t end;
} NbdPinRec;

DEFINE_VECTOR_TYPE(NbdMetaSel, uint32_t);

typedef struct NbdConnWait NbdConnWait;

/* Which thread touches a connection:
 *
 *   main loop ── handshake ── GO on an export with an iothread ──┐
 *     (everything, as without iothreads)       conn_move: watch and
 *                                              timers dropped, loop_post
 *   iothread loop <─────────── conn_adopt ─────────────────────┘
 *     the connection's fields, its slots, its requests (completing
 *     to this loop: blk_aio_submit_on)
 *
 * Once moved (remote), the main loop reads only what no longer changes
 * (exp, serial, peer, tls_identity), the NBD_CONN_STAT_ADD counters,
 * and the main-only fields below.  What the main loop owns (the
 * server's lists, the export's nconns and refcnt, events) the iothread
 * posts to it: the close (conn_closed_main) and the free.  The main
 * loop posts a close the other way (nbd_conn_close from the main loop)
 * and, at nbd-server-stop and exit, waits for the connection to
 * quiesce (nbd_conn_shutdown). */
struct NbdConn {
    NbdServer *srv;              /* NULL once the server is gone (main) */
    NbdContext *ctx;             /* what the layer above handed us */
    Loop *loop;                  /* the loop that owns it: ctx->loop
                                  * until moved to its export's */
    bool handoff;                /* GO on an iothread export: move once
                                  * the input loop unwinds */
    bool remote;                 /* moved (set before the move) */
    /* main loop only, for a remote connection: closes posted to its
     * loop and not yet acknowledged (the struct must outlive them), a
     * free that waits for them, the close's main half done, and who
     * waits for it to quiesce */
    unsigned close_posts;
    bool free_pending;
    bool main_closed;
    NbdConnWait *wait_req;       /* set by nbd_conn_shutdown, main */
    NbdConnWait *wait;           /* the owner's copy: signalled when the
                                  * free is posted */
    Xport xp;
    LoopFd *watch;
    LoopTimer *hs_timer;         /* handshake limit; NULL after GO */
    LoopTimer *idle_timer;       /* buffer release, see conn_idle_cb */
    bool idle_armed;
    uint64_t last_active_us;     /* last request completion */
    NbdConnState state;
    bool closed;
    bool free_posted;
    bool in_input, input_again, input_paused;
    bool in_flush;
    bool flush_posted;           /* conn_flush_posted() queued: replies
                                  * wait for it (see nbd_conn_queue) */
    bool want_write;
    /* From accept until the first request's header: the input goes
     * through insmall, and the loop polls for the client's answers
     * (conn.c, conn_poll_arm); when the wait for an answer began (0:
     * not waiting) and how long the loop was asked to poll, ns */
    bool negotiating;
    uint64_t poll_start_ns, poll_used_ns;

    /* negotiation */
    bool fixed, no_zeroes, structured, extended;
    bool can_splice;             /* big reads by splice (transmission) */
    bool sees_consumed;          /* conn_release_pins can work (AF_UNIX) */
    /* Pins of spliced replies in the socket, maybe unread, oldest first
     * (conn_release_pins), and the bytes written to the socket so far
     * (transmission; nothing but their differences matters). */
    NbdPinRec *pins;
    size_t npins, cap_pins;
    uint64_t sent;
    bool tls_required;           /* the server has tls-creds */
    bool tls_want_write;         /* TLS handshake waits to write */
    /* Selected meta contexts: indexes in meta_exp->meta, ascending.
     * meta_exp is the export object they were selected on (not
     * referenced: export deletion clears it, nbd_conn_forget_export). */
    NbdMetaSel meta_sel;
    const NbdExport *meta_exp;
    uint32_t opt, optlen;
    uint8_t *optbuf;
    size_t optbuf_cap;

    /* who: for NBD_EXPORT_CLIENT_CONNECTED/DISCONNECTED */
    char *peer;                  /* "HOST:PORT", "unix:pid=N" or "unix" */
    char *tls_identity;          /* after TLS: DN or PSK user, or NULL */
    uint64_t serial;             /* 1, 2, ...: unique in the server */
    bool announced;              /* CONNECTED sent; DISCONNECTED due */

    /* transmission */
    NbdExport *exp;              /* referenced after GO */
    uint64_t size;
    uint16_t tflags;
    bool read_only;              /* refuse writes even if exp allows */
    bool disc_received;          /* the client sent NBD_CMD_DISC */
    /* this client's requests served (query-block-exports, metrics) */
    uint64_t rd_bytes, wr_bytes, rd_ops, wr_ops, other_ops;
    void (*on_close)(void *opaque, NbdConn *c);  /* NbdConnOptions */
    void *close_opaque;

    /* input */
    uint8_t *inbuf;              /* NBD_INBUF_SIZE (nbd_mem), insmall
                                  * or NULL */
    uint8_t insmall[NBD_INBUF_SMALL];
    size_t in_start, in_end;
    uint8_t *rd_dst;             /* NULL: discard */
    uint64_t rd_len, rd_got;
    uint8_t hdrbuf[NBD_EXT_REQ_SIZE];

    /* handshake output (one write per option's replies) */
    uint8_t *hs;
    size_t hs_off, hs_len, hs_cap;

    /* request slots: allocated as requests need them (at most
     * NBD_SLOTS), kept on the free list while requests flow, freed
     * with the buffers once the connection idles, so an idle
     * connection holds none */
    NbdSlot *free_slots;
    unsigned nslots;             /* allocated, free or busy */
    unsigned busy;               /* slots not on the free list */
    NbdSlot *cur;                /* slot for the request being read */
    NbdSlot *out_head, *out_tail;
};

/* conn.c: the engine. */
NbdConn *nbd_conn_alloc(NbdServer *srv, int fd);
void nbd_conn_want(NbdConn *c, NbdConnState st, uint8_t *dst,
                   uint64_t len);
void nbd_conn_flush_output(NbdConn *c);
void nbd_conn_update_events(NbdConn *c);
/* Read and dispatch whatever input is there (after a state change that
 * the engine did not make, e.g. the TLS handshake done). */
void nbd_conn_input(NbdConn *c);
void nbd_conn_maybe_finish(NbdConn *c);
/* Unmap the input buffer if it holds no unread bytes (it comes back
 * when input needs it). */
void nbd_conn_release_inbuf(NbdConn *c);
/* Stop reading; close once in-flight requests are answered. */
void nbd_conn_start_closing(NbdConn *c);
/* Queue a slot's reply; it is sent once the loop has run what is
 * already posted (the other completions of the batch), so one sendmsg
 * carries many replies. */
void nbd_conn_queue(NbdConn *c, NbdSlot *s);
void nbd_slot_put(NbdSlot *s);
/* Make s->buf at least len bytes (zeroed when newly mapped). */
void nbd_slot_ensure_buf(NbdSlot *s, uint64_t len);
/* Give s a pipe with room for len bytes (false: none to be had: the
 * process's NBD_PIPES_MAX are open, or len is too big). */
bool nbd_slot_get_pipe(NbdSlot *s, uint64_t len);
/* Close s's pipe (and forget what was in it). */
void nbd_slot_drop_pipe(NbdSlot *s);
/* Page-backed buffers that go back to the system when freed: new pages
 * read as zeroes.  Any thread.  Sizes are rounded up to pages. */
void *nbd_mem_alloc(size_t len);
void *nbd_mem_grow(void *p, size_t old_len, size_t new_len);
void nbd_mem_free(void *p, size_t len);

/* handshake.c: the option phase. */
void nbd_hs_start(NbdConn *c);
void nbd_hs_on_client_flags(NbdConn *c);
void nbd_hs_on_opt_hdr(NbdConn *c);
void nbd_hs_on_opt_data(NbdConn *c);
void nbd_hs_on_opt_discard(NbdConn *c);
/* TLS_HANDSHAKE: start or continue the TLS handshake (the STARTTLS ACK
 * is sent), then check the peer and enter the option phase in TLS. */
void nbd_hs_tls_step(NbdConn *c);
/* Drop the selection of meta contexts. */
void nbd_conn_meta_clear(NbdConn *c);

/* transmission.c: requests. */
/* Attach to exp (takes a reference) and wait for the first request. */
void nbd_conn_enter_transmission(NbdConn *c, NbdExport *exp);
void nbd_tx_next_request(NbdConn *c);
void nbd_tx_on_req_hdr(NbdConn *c);
void nbd_tx_on_req_payload(NbdConn *c);
void nbd_tx_on_req_drain(NbdConn *c);

#endif
