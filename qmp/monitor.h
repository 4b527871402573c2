/* monitor.h - QMP control sockets.
 *
 * A MonitorSet holds listeners (server=on chardevs) and monitors (one
 * per connected client, or one outgoing connection for server=off).
 *
 * Each monitor: greeting → negotiation mode (only qmp_capabilities) →
 * command mode (commands, events).  Input is a byte stream of JSON
 * objects: several per read and one over many reads both work.  A
 * message over MONITOR_MAX_MESSAGE bytes, or malformed JSON, gets a
 * GenericError without "id"; the stream then resynchronises at the next
 * newline.
 */
#ifndef BLOCKD_QMP_MONITOR_H
#define BLOCKD_QMP_MONITOR_H

#include <stdbool.h>

#include "qmp/qmp.h"
#include "util/error.h"
#include "util/loop.h"

#define MONITOR_MAX_MESSAGE (1024 * 1024)
/* A client that does not read its replies is dropped past this. */
#define MONITOR_MAX_OUTPUT (16 * 1024 * 1024)

/* A set of monitors on loop.  Commands run with a copy of *base (which
 * must outlive the set) whose mon is the monitor they came from. */
MonitorSet *monitor_set_new(Loop *loop, const QmpCtx *base);
/* Close every monitor and listener (after one last try at sending what
 * is queued).  Events broadcast afterwards reach nobody; the set stays
 * valid until monitor_set_free(). */
void monitor_set_close(MonitorSet *ms);
/* Close (if not yet) and free the set.  NULL-safe. */
void monitor_set_free(MonitorSet *ms);

/* A chardev: where a monitor's socket is.  From --chardev socket,...
 * or --qmp unix:PATH / tcp:HOST:PORT. */
typedef struct ChardevSpec {
    char *id;
    char *path;            /* unix socket path, or NULL */
    char *host, *port;     /* tcp, or NULL */
    char *fd;              /* fd=: a listening socket handed to us, by
                            * socket-activation name or inherited number
                            * (util/sock.h); or NULL */
    bool server;           /* listen (true) or connect out (false) */
    bool wait;             /* server=on,wait=on: block until a client */
} ChardevSpec;

/* Parse "socket,id=ID,path=PATH,server=on,wait=off" (QEMU --chardev).
 * Returns NULL with errp set. */
ChardevSpec *chardev_spec_parse(const char *opts, Error **errp);
/* Parse "unix:PATH" or "tcp:HOST:PORT" (blockd --qmp). */
ChardevSpec *chardev_spec_parse_qmp(const char *addr, Error **errp);
void chardev_spec_free(ChardevSpec *spec);

/* Start a monitor on spec: listen on it (server) or connect to it.
 * pretty: indent replies.  The paths of listening unix sockets are
 * removed when the set is freed. */
bool monitor_add(MonitorSet *ms, const ChardevSpec *spec, bool pretty,
                 Error **errp);

/* Called by qmp_capabilities. */
bool monitor_in_command_mode(const Monitor *mon);
void monitor_enter_command_mode(Monitor *mon, bool oob);
bool monitor_oob_enabled(const Monitor *mon);

/* Deferred commands (qmp.h), between dispatch and the monitor.
 * monitor_command_deferred: mon's command p answers later; mon queues
 * its further input until monitor_command_done(), which sends reply
 * (borrowed) and runs what was queued.  When mon closes first it calls
 * qmp_pending_detach(p): the reply then goes nowhere. */
void monitor_command_deferred(Monitor *mon, QmpPending *p);
void monitor_command_done(Monitor *mon, QmpPending *p, json_object *reply);
void qmp_pending_detach(QmpPending *p);

#endif
