/* client-io.h - the NBD client's transmission engine (internal to nbd/).
 *
 * One engine per "nbd" node: a thread of its own ("I/O thread") runs
 * poll() over the node's connections and an eventfd for new commands,
 * so it makes progress whichever thread waits on it (a worker, or the
 * loop thread opening a qcow2 on top from the command line).  Requests
 * are pipelined: many in flight per connection, matched by cookie, with
 * no thread held per request.
 *
 *   submitter (any thread)          I/O thread
 *   nbdc_submit(cmd) ─eventfd──>  split into pieces (max block size),
 *                                 one cookie each, on the connection
 *                                 with the fewest in flight
 *                   <─────────── replies reassembled and checked;
 *   cmd->done(cmd) (I/O thread)   the last piece completes the command
 *   or nbdc_run() wakes
 *
 * Every reply is hostile input: a reply that breaks the protocol
 * (unknown cookie, chunk outside the request or not allowed for it,
 * more data than asked, structured chunks not negotiated, ...) kills
 * the connection with a log line; the stream is never read past what
 * a header announced into a caller's buffer.
 *
 * Connection loss (EOF, error, protocol violation): the pieces in
 * flight on it are sent again on another connection, or after a
 * reconnect, until reconnect_delay seconds after their first loss
 * and at least once on each connection; then they fail with -EIO
 * (one connection and reconnect_delay 0: at once).  While no connection is
 * up, new commands wait until reconnect_delay seconds after the loss;
 * then they fail with -EIO and new ones fail at once until a
 * connection is back.  The I/O thread reconnects in the background: at
 * once after a plain loss, with a back-off of 50 ms doubling to 1 s
 * after failed attempts and after protocol violations (reset by a
 * well-formed reply); a reconnect must find the same size and flags.
 */
#ifndef BLOCKD_NBD_CLIENT_IO_H
#define BLOCKD_NBD_CLIENT_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "nbd/client.h"
#include "util/error.h"

typedef struct NbdcEngine NbdcEngine;

/* One connection in transmission, as the handshake left it. */
typedef struct NbdcLink {
    NbdClientXport xp;          /* taken over by the engine */
    uint64_t size;              /* export size, bytes */
    uint16_t flags;             /* NBD_FLAG_* transmission flags */
    bool structured, extended;  /* negotiated reply modes */
    bool has_context;           /* the block-status context is selected */
    uint32_t context_id;        /* ... under this id (per connection) */
} NbdcLink;

/* Reconnect connection idx (I/O thread; may block, with timeouts):
 * fill *link or return false with errp set. */
typedef bool NbdcConnectFn(void *opaque, unsigned idx, NbdcLink *link,
                           Error **errp);
/* The engine lost its first connection (up = false, reason says why),
 * or has every connection back (up = true).  I/O thread. */
typedef void NbdcStateFn(void *opaque, bool up, const char *reason);

typedef struct NbdcConfig {
    const char *name;           /* for log lines (copied) */
    uint32_t min_block;         /* bytes, power of two; 0 = 1 */
    uint32_t max_payload;       /* READ/WRITE/CACHE piece, bytes; 0 =
                                 * NBD_MAX_PAYLOAD */
    uint32_t reconnect_delay;   /* seconds */
    NbdcConnectFn *connect;     /* NULL: never reconnect */
    /* Called by nbdc_engine_stop() (stop = true) before it waits for
     * the I/O thread, and by nbdc_engine_abort() (stop = false), on
     * their caller's thread: make a connect in progress fail now; after
     * a stop, every later one too.  Must not block.  NULL: none. */
    void (*cancel)(void *opaque, bool stop);
    NbdcStateFn *state;         /* NULL: not told */
    void *opaque;
} NbdcConfig;

/* One command.  The caller fills type ... buf; the engine the rest. */
typedef struct NbdcCmd NbdcCmd;
struct NbdcCmd {
    uint16_t type;              /* NBD_CMD_* (not DISC) */
    uint16_t flags;             /* NBD_CMD_FLAG_* */
    uint64_t offset, length;    /* bytes */
    void *buf;                  /* READ/WRITE: length bytes */
    /* Results (valid in done / after nbdc_run). */
    int ret;                    /* 0 or -errno */
    uint64_t status_length;     /* BLOCK_STATUS: first extent, bytes */
    uint32_t status_flags;      /* ... and its flags */
    /* NULL: nbdc_run() waits for it.  Else called once on the I/O
     * thread (or, with -EIO, in nbdc_submit() after the engine stopped);
     * the cmd is the caller's again. */
    void (*done)(NbdcCmd *cmd);
    void *opaque;
    /* private */
    NbdcCmd *next;
    uint64_t split;             /* bytes handed to pieces so far */
    unsigned pieces;            /* pieces in flight */
    int err;
    bool completed;
};

/* Start an engine over links[0..n) (n >= 1, taken over; all of the
 * same export).  NULL with errp set if the thread cannot start (the
 * links are closed then too). */
NbdcEngine *nbdc_engine_new(const NbdcConfig *cfg, NbdcLink *links,
                            unsigned n, Error **errp);
/* Stop the engine: commands queued or in flight fail with -EIO, live
 * connections get NBD_CMD_DISC, no reconnect is tried again, the
 * thread is joined; commands submitted later fail with -EIO at once.
 * Idempotent; not concurrently with itself or nbdc_engine_free(). */
void nbdc_engine_stop(NbdcEngine *e);
/* nbdc_engine_stop(), then free everything.  The caller must not
 * submit concurrently. */
void nbdc_engine_free(NbdcEngine *e);

/* Abort (any thread; does not wait): the I/O thread drops every live
 * connection (the sockets are closed, so no reply can arrive into a
 * buffer any more) and fails every command queued or in flight with
 * -EIO, without waiting for the server; a connect in progress is cut
 * short.  Then the engine goes on as after a connection loss
 * (reconnects after the back-off, reconnect_delay for new commands).
 * For a node whose last user goes while a server hangs.  With nothing
 * queued or in flight it does nothing. */
void nbdc_engine_abort(NbdcEngine *e);

/* Queue cmd (any thread).  cmd lives until done runs. */
void nbdc_submit(NbdcEngine *e, NbdcCmd *cmd);
/* Queue cmd and wait for it (any thread but the I/O thread); returns
 * cmd->ret. */
int nbdc_run(NbdcEngine *e, NbdcCmd *cmd);

/* Connections up now (any thread; a snapshot). */
unsigned nbdc_connections_up(NbdcEngine *e);

#endif
