/* client.h - the client end of the NBD handshake, and list mode.
 *
 * Shared by blockctl (client/, list mode) and the "nbd" block driver
 * (nbd/nbd-driver.c), so it uses only util/ and the codec (proto.h):
 * no loop, no block layer.  Everything here blocks on one socket, with
 * a timeout per step; the driver runs it on a worker (open) or on its
 * connection thread (reconnect), never on the loop thread.
 *
 * A connection is a byte stream (NbdClientXport): a plain socket now;
 * STARTTLS (the TLS issue) swaps in a TLS stream after NBD_OPT_STARTTLS
 * without the rest of the handshake noticing.
 *
 * Every reply from the server is hostile input: lengths are checked
 * before anything is read into memory, strings are bounded by
 * NBD_MAX_STRING, lists (OPT_LIST, meta contexts) are bounded, and a
 * server that breaks the protocol fails the handshake with an Error
 * saying what it sent, never a crash.
 */
#ifndef BLOCKD_NBD_CLIENT_H
#define BLOCKD_NBD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "util/error.h"
#include "util/sock.h"

/* Most exports an OPT_LIST may return, and most meta contexts one
 * LIST/SET_META_CONTEXT may return, before the client gives up on the
 * server (an endless list must not eat memory). */
#define NBD_CLIENT_MAX_EXPORTS  65536
#define NBD_CLIENT_MAX_CONTEXTS 4096
/* Most NBD_REP_INFO replies one OPT_INFO/OPT_GO may bring: a server
 * sends a few (export, name, description, block size); one that never
 * sends NBD_REP_ACK must not hold the handshake forever. */
#define NBD_CLIENT_MAX_INFOS    1024

/* ---- transport ------------------------------------------------------ */

typedef struct NbdClientXport NbdClientXport;
typedef struct NbdClientXportOps {
    /* Read exactly len bytes, or -errno (-ETIMEDOUT after timeout_ms
     * without progress, -ECONNRESET on EOF). */
    int (*read_full)(NbdClientXport *xp, void *buf, size_t len);
    /* Write every byte of iov[0..iovcnt), or -errno. */
    int (*writev_full)(NbdClientXport *xp, const struct iovec *iov,
                       int iovcnt);
    void (*close)(NbdClientXport *xp);
} NbdClientXportOps;

struct NbdClientXport {
    const NbdClientXportOps *ops;
    int fd;                     /* blocking socket, close-on-exec */
    int timeout_ms;             /* per read/write step; -1: none */
    void *opaque;               /* the TLS session, later */
};

/* A plain socket transport on fd (taken over; closed by close()). */
void nbd_client_xport_init_plain(NbdClientXport *xp, int fd, int timeout_ms);

/* ---- the handshake -------------------------------------------------- */

/* What the client asks for. */
typedef struct NbdClientOpts {
    const char *export_name;    /* NULL = "" (the default export) */
    bool no_structured;         /* do not ask for structured replies */
    bool no_extended;           /* do not ask for extended headers */
    /* Meta contexts to select with SET_META_CONTEXT (needs structured
     * replies), e.g. "base:allocation", "qemu:allocation-depth",
     * "qemu:dirty-bitmap:b0".  A context the server does not know is
     * simply not selected (see NbdExportInfo.contexts). */
    const char *const *meta_contexts;
    size_t n_meta_contexts;
    int timeout_ms;             /* per step; -1: none */
    /* TLS (set by the caller that has credentials: the nbd driver).
     * When starttls is not NULL, the client sends NBD_OPT_STARTTLS
     * right after the flags and, on NBD_REP_ACK, calls starttls(xp,
     * starttls_opaque, errp), which runs the TLS handshake on xp->fd
     * and replaces xp->ops (and xp->opaque) with a TLS stream; the rest
     * of the handshake then runs inside TLS.  A server that refuses
     * STARTTLS fails the handshake (no fallback to clear text).  This
     * file knows no TLS library. */
    bool (*starttls)(NbdClientXport *xp, void *starttls_opaque,
                     Error **errp);
    void *starttls_opaque;
} NbdClientOpts;

typedef struct NbdMetaContext {
    char *name;
    uint32_t id;                /* the server's id (SET), 0 in list mode */
} NbdMetaContext;

/* One export as the server describes it (OPT_GO/OPT_INFO replies, or
 * OPT_LIST + OPT_INFO in list mode). */
typedef struct NbdExportInfo {
    char *name;                 /* as listed / as asked; never NULL */
    char *description;          /* NULL when the server sent none */
    bool has_size;              /* INFO_EXPORT arrived (size and flags) */
    uint64_t size;
    uint16_t flags;             /* NBD_FLAG_* transmission flags */
    bool has_block_size;        /* INFO_BLOCK_SIZE arrived */
    uint32_t min_block, opt_block, max_block;
    bool structured;            /* structured replies negotiated */
    bool extended;              /* extended headers negotiated */
    /* Selected (or, in list mode, available) meta contexts. */
    NbdMetaContext *contexts;
    size_t n_contexts;
} NbdExportInfo;

void nbd_export_info_clear(NbdExportInfo *info);

/* Run the whole handshake on xp, up to transmission: the greeting
 * (fixed newstyle required), client flags, then STRUCTURED_REPLY /
 * EXTENDED_HEADERS, SET_META_CONTEXT and OPT_GO (asking for name,
 * description and block sizes), falling back to OPT_EXPORT_NAME for a
 * server that does not know OPT_GO.  Fills *info (cleared on failure).
 * On failure the server's error message, if any, is in errp, e.g.
 * "Requested export not available" for NBD_REP_ERR_UNKNOWN; xp is left
 * open (the caller closes it).  Extended headers are asked for only
 * when structured replies are too. */
bool nbd_client_handshake(NbdClientXport *xp, const NbdClientOpts *o,
                          NbdExportInfo *info, Error **errp);

/* sock_connect(addr, o->timeout_ms) then nbd_client_handshake();
 * addr->type SOCK_ADDR_FD means an already connected socket (taken
 * over).  On success xp is ready for transmission. */
bool nbd_client_connect(const SockAddr *addr, const NbdClientOpts *o,
                        NbdClientXport *xp, NbdExportInfo *info,
                        Error **errp);

/* ---- list mode ------------------------------------------------------ */

typedef struct NbdExportList {
    NbdExportInfo *exports;
    size_t n;
} NbdExportList;

void nbd_export_list_clear(NbdExportList *l);

/* List a server's exports the way qemu-nbd -L does: OPT_LIST, then per
 * export OPT_INFO (block sizes asked for) and, with structured replies,
 * LIST_META_CONTEXT (all contexts; again with the query "qemu:" when
 * none of the answers starts with "qemu:"), then OPT_ABORT.  From o
 * (NULL: no timeout, no TLS) only timeout_ms and starttls are used.
 * An addr of type SOCK_ADDR_FD is taken over and closed. */
bool nbd_client_list(const SockAddr *addr, const NbdClientOpts *o,
                     NbdExportList *out, Error **errp);

/* Print the list exactly as qemu-nbd -L prints it ("exports available:
 * N", then each export): QEMU 7.2's format, the one Debian ships and
 * the tests compare with, so no "transaction size" line (QEMU 8.2). */
void nbd_export_list_print(FILE *f, const NbdExportList *l);

#endif
