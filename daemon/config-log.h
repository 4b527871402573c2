/* config-log.h - the daemon's configuration as QMP commands: what
 * x-blockd-save-config writes and blockd --config reads.
 *
 * A ConfigLog follows every command that succeeds (QmpCtx.committed) and
 * keeps, in order, the creating commands of what exists now, each with
 * its arguments normalized through the schema's types (so command-line
 * key=value input is written as typed JSON):
 *
 *   object-add        "object:ID"      removed by object-del
 *   blockdev-add      "node:NAME"      removed by blockdev-del
 *   nbd-server-start  "nbd-server"     removed by nbd-server-stop
 *   block-export-add  "export:ID"      removed by block-export-del
 *   nbd-server-add    "export:NAME"    removed by nbd-server-remove
 *
 * Dirty bitmaps are not logged but read from the nodes when saving:
 * each non-persistent one is written as a block-dirty-bitmap-add (node,
 * name, granularity, disabled) right after the blockdev-add that creates
 * its node; its bits are not saved.  Persistent ones come back with
 * their image.
 *
 * Saving keeps only records whose thing still exists (asked with the
 * query-* commands), so what went away by other means (an export closed
 * with nbd-server-stop) is not written.  Loop thread only.
 */
#ifndef BLOCKD_DAEMON_CONFIG_LOG_H
#define BLOCKD_DAEMON_CONFIG_LOG_H

#include <json-c/json.h>
#include <stdbool.h>

#include "qmp/qmp.h"
#include "util/error.h"

typedef struct ConfigLog ConfigLog;

ConfigLog *config_log_new(void);
void config_log_free(ConfigLog *log);

/* Record a command that succeeded (args borrowed, may be NULL; flags as
 * qmp_execute's).  Commands that create or remove nothing are ignored. */
void config_log_commit(ConfigLog *log, const char *name, json_object *args,
                       unsigned flags);

/* Write the configuration to filename (replaced atomically, mode 0600),
 * asking the live state through ctx.  False with errp set, and nothing
 * written, on an I/O error or when a secret holds inline data. */
bool config_log_save(ConfigLog *log, QmpCtx *ctx, const char *filename,
                     Error **errp);

#endif
