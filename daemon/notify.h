/* notify.h - systemd's readiness protocol (sd_notify(3)), for
 * Type=notify units.
 *
 * The protocol is one datagram of "KEY=VALUE" lines to the unix socket
 * named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
 * namespace).  It is a dozen lines, so blockd writes them itself rather
 * than linking libsystemd for one function: no new dependency, and the
 * same binary works where libsystemd is not installed.
 */
#ifndef BLOCKD_DAEMON_NOTIFY_H
#define BLOCKD_DAEMON_NOTIFY_H

#include <stdbool.h>

/* Send state ("READY=1", "STOPPING=1", "STATUS=...") to $NOTIFY_SOCKET.
 * Returns true when sent, false when there is no $NOTIFY_SOCKET or the
 * send failed (not an error for the caller: nobody is listening). */
bool daemon_notify(const char *state);

#endif
