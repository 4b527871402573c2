/* metrics.h - a Prometheus text endpoint (--metrics unix:PATH |
 * tcp:HOST:PORT), served by the daemon's own loop.
 *
 * Each connection sends one HTTP/1.x request ("GET /metrics"; "GET /"
 * too); the answer is the exposition format 0.0.4, after which the
 * connection closes.  Nothing blocks: a client that sends nothing is
 * dropped after METRICS_TIMEOUT_US.  The numbers come from the same
 * queries QMP clients use (query-blockstats, query-block-exports,
 * query-nbd-server), so the two never disagree:
 *
 *   blockd_info{version="..."} 1
 *   blockd_node_read_bytes_total{node="..."}        (also write, discard)
 *   blockd_node_operations_total{node="...",op="read|write|flush|discard"}
 *   blockd_node_failed_operations_total{node="...",op="..."}
 *   blockd_node_operation_seconds_total{node="...",op="..."}
 *   blockd_export_clients{export="..."}
 *   blockd_export_read_bytes_total{export="..."}     (also write)
 *   blockd_export_operations_total{export="...",op="read|write"}
 *   blockd_node_latency_seconds_bucket{node,op,le} / _sum / _count
 *   blockd_node_in_flight{node,op}, blockd_node_invalid_operations_total
 *   blockd_export_latency_seconds_bucket{export,op,le} / _sum / _count
 *   blockd_export_in_flight{export,op}, ..._failed/invalid_operations_total
 *   blockd_export_client_info{export,client,addr,tls_identity} 1
 *   blockd_export_client_read_bytes_total{export,client}  (also write)
 *   blockd_export_client_operations_total{export,client,op=read|write|other}
 *   blockd_nbd_server_clients, blockd_nbd_tls_sessions_total, ...
 *
 * Loop thread only.
 */
#ifndef BLOCKD_DAEMON_METRICS_H
#define BLOCKD_DAEMON_METRICS_H

#include "qmp/qmp.h"
#include "util/error.h"
#include "util/loop.h"

#define METRICS_TIMEOUT_US (10 * 1000 * 1000)

typedef struct Metrics Metrics;

/* Listen on addr ("unix:PATH" or "tcp:HOST:PORT"); queries run with a
 * copy of *ctx (which must outlive the endpoint).  NULL with errp set. */
Metrics *metrics_new(Loop *loop, const QmpCtx *ctx, const char *addr,
                     Error **errp);
/* Close the listener and every connection.  NULL-safe. */
void metrics_free(Metrics *m);

/* The exposition text now (malloc'd), for the endpoint and for tests. */
char *metrics_render(const QmpCtx *ctx);

#endif
