/* metrics.c - see metrics.h. */
#include "daemon/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "qmp/monitor.h"
#include "util/acceptor.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/sock.h"
#include "util/util.h"
#include "util/vector.h"

/* A request is small; anything larger is not a scrape. */
#define METRICS_MAX_REQUEST 8192

typedef struct MetricsConn MetricsConn;

struct Metrics {
    Loop *loop;
    const QmpCtx *ctx;
    Acceptor *acceptor;
    MetricsConn *conns;       /* open connections, a list */
};

struct MetricsConn {
    Metrics *m;
    int fd;
    LoopFd *watch;
    LoopTimer *timer;         /* drops a client that stalls */
    char in[METRICS_MAX_REQUEST];
    size_t in_len;
    char *out;                /* the whole response, once built */
    size_t out_len, out_pos;
    MetricsConn *next;
};

/* ---- the text ---------------------------------------------------------- */

typedef struct Text {
    char *buf;
    size_t len, cap;
} Text;

static void __attribute__((format(printf, 2, 3)))
text_add(Text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->buf == NULL) {
        t->cap = 4096;
        t->buf = xmalloc(t->cap);
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        t->cap = t->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        t->buf = xrealloc(t->buf, t->cap);
    }
}

/* A label value with \, " and newline escaped (exposition format). */
static char *label_escape(const char *s)
{
    char *out = xmalloc(strlen(s) * 2 + 1), *p = out;

    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"') {
            *p++ = '\\';
            *p++ = *s;
        } else if (*s == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else {
            *p++ = *s;
        }
    }
    *p = '\0';
    return out;
}

static int64_t int_member(json_object *o, const char *name)
{
    json_object *v;

    if (!json_object_object_get_ex(o, name, &v)) {
        return 0;
    }
    return json_object_get_int64(v);
}

static json_object *query(const QmpCtx *ctx, const char *name,
                          const char *args_json)
{
    CLEANUP_JSON json_object *args =
        args_json != NULL ? json_tokener_parse(args_json) : NULL;
    json_object *ret = NULL;
    QmpCtx c = *ctx;

    c.defer = NULL;
    c.committed = NULL;
    c.mon = NULL;
    if (!qmp_execute(&c, name, args, 0, &ret, NULL)) {
        return NULL;
    }
    return ret;
}

static void header(Text *t, const char *name, const char *type,
                   const char *help)
{
    text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One family over every node: member of each node's stats, by op. */
typedef struct NodeOp {
    const char *op;
    const char *member;
} NodeOp;

static void node_family(Text *t, json_object *stats, const char *name,
                        const char *help, const NodeOp *ops, size_t nops,
                        double scale)
{
    header(t, name, "counter", help);
    for (size_t i = 0; i < json_object_array_length(stats); i++) {
        json_object *bs = json_object_array_get_idx(stats, i);
        json_object *nn, *st;
        CLEANUP_FREE char *node = NULL;

        if (!json_object_object_get_ex(bs, "node-name", &nn) ||
            !json_object_object_get_ex(bs, "stats", &st)) {
            continue;
        }
        node = label_escape(json_object_get_string(nn));
        for (size_t k = 0; k < nops; k++) {
            int64_t v = int_member(st, ops[k].member);
            if (ops[k].op != NULL) {
                text_add(t, "%s{node=\"%s\",op=\"%s\"} ", name, node,
                         ops[k].op);
            } else {
                text_add(t, "%s{node=\"%s\"} ", name, node);
            }
            if (scale != 1.0) {
                text_add(t, "%.9f\n", (double)v * scale);
            } else {
                text_add(t, "%" PRId64 "\n", v);
            }
        }
    }
}

/* ---- by kind of request (op-stats) ------------------------------------ */

/* One object's op-stats (a node's, an export's) and the labels that
 * name the object ("node=\"n0\"", escaped), for the families below. */
typedef struct OpSource {
    char *labels;
    json_object *ops;            /* borrowed from the query's answer */
} OpSource;

DEFINE_VECTOR_TYPE(OpSourceVec, OpSource);

static void op_sources_free(OpSourceVec *v)
{
    for (size_t i = 0; i < v->len; i++) {
        free(v->ptr[i].labels);
    }
    OpSourceVec_reset(v);
}

static const char *op_name(json_object *o)
{
    json_object *v;

    return json_object_object_get_ex(o, "op", &v)
           ? json_object_get_string(v) : "";
}

/* A counter or gauge family: member of every op of every source. */
static void op_family(Text *t, const OpSourceVec *src, const char *name,
                      const char *type, const char *help,
                      const char *member)
{
    header(t, name, type, help);
    for (size_t i = 0; i < src->len; i++) {
        json_object *ops = src->ptr[i].ops;

        for (size_t k = 0; k < json_object_array_length(ops); k++) {
            json_object *o = json_object_array_get_idx(ops, k);

            text_add(t, "%s{%s,op=\"%s\"} %" PRId64 "\n", name,
                     src->ptr[i].labels, op_name(o), int_member(o, member));
        }
    }
}

/* A histogram family (name_bucket/_sum/_count, in seconds) from the
 * latency histograms, whose boundaries are in ns. */
static void op_histogram(Text *t, const OpSourceVec *src, const char *name,
                         const char *help)
{
    header(t, name, "histogram", help);
    for (size_t i = 0; i < src->len; i++) {
        json_object *ops = src->ptr[i].ops;
        const char *labels = src->ptr[i].labels;

        for (size_t k = 0; k < json_object_array_length(ops); k++) {
            json_object *o = json_object_array_get_idx(ops, k);
            json_object *lat, *bounds, *bins;
            const char *op = op_name(o);
            int64_t cum = 0;
            size_t nb;

            if (!json_object_object_get_ex(o, "latency", &lat) ||
                !json_object_object_get_ex(lat, "boundaries", &bounds) ||
                !json_object_object_get_ex(lat, "bins", &bins)) {
                continue;
            }
            nb = json_object_array_length(bounds);
            for (size_t b = 0; b < nb; b++) {
                cum += json_object_get_int64(
                    json_object_array_get_idx(bins, b));
                text_add(t, "%s_bucket{%s,op=\"%s\",le=\"%.9g\"} %" PRId64
                         "\n", name, labels, op,
                         (double)json_object_get_int64(
                             json_object_array_get_idx(bounds, b)) * 1e-9,
                         cum);
            }
            cum += json_object_get_int64(json_object_array_get_idx(bins, nb));
            text_add(t, "%s_bucket{%s,op=\"%s\",le=\"+Inf\"} %" PRId64 "\n",
                     name, labels, op, cum);
            text_add(t, "%s_sum{%s,op=\"%s\"} %.9f\n", name, labels, op,
                     (double)int_member(o, "total-time-ns") * 1e-9);
            text_add(t, "%s_count{%s,op=\"%s\"} %" PRId64 "\n", name,
                     labels, op, cum);
        }
    }
}

/* The op-stats of every entry of list (query-blockstats' or
 * query-block-exports' answer): key is the member naming the entry,
 * label the label it becomes; sub the object holding op-stats (NULL:
 * the entry itself). */
static void op_sources(OpSourceVec *v, json_object *list, const char *key,
                       const char *label, const char *sub)
{
    for (size_t i = 0; list != NULL && i < json_object_array_length(list);
         i++) {
        json_object *e = json_object_array_get_idx(list, i);
        json_object *id, *holder = e, *ops;
        CLEANUP_FREE char *esc = NULL;

        if (!json_object_object_get_ex(e, key, &id) ||
            (sub != NULL && !json_object_object_get_ex(e, sub, &holder)) ||
            !json_object_object_get_ex(holder, "op-stats", &ops)) {
            continue;
        }
        esc = label_escape(json_object_get_string(id));
        OpSourceVec_append(v, (OpSource){
            .labels = xasprintf("%s=\"%s\"", label, esc),
            .ops = ops,
        });
    }
}

static void render_ops(Text *t, json_object *stats, json_object *exports)
{
    OpSourceVec nodes = { 0 }, exps = { 0 };

    op_sources(&nodes, stats, "node-name", "node", "stats");
    op_sources(&exps, exports, "id", "export", NULL);
    op_histogram(t, &nodes, "blockd_node_latency_seconds",
                 "Latency of the node's requests that succeeded, by "
                 "kind.");
    op_family(t, &nodes, "blockd_node_in_flight", "gauge",
              "Requests the node's driver runs now, by kind.", "in-flight");
    op_family(t, &nodes, "blockd_node_invalid_operations_total", "counter",
              "Requests refused before they ran (range, read-only), by "
              "kind.", "invalid");
    op_histogram(t, &exps, "blockd_export_latency_seconds",
                 "Latency of the export's requests that succeeded, from "
                 "the request read to its reply queued, by kind.");
    op_family(t, &exps, "blockd_export_in_flight", "gauge",
              "Requests of the export's clients running now, by kind.",
              "in-flight");
    op_family(t, &exps, "blockd_export_failed_operations_total", "counter",
              "Requests of the export's clients that failed, by kind.",
              "failed");
    op_family(t, &exps, "blockd_export_invalid_operations_total", "counter",
              "Requests of the export's clients refused by the checks, by "
              "kind.", "invalid");
    op_sources_free(&nodes);
    op_sources_free(&exps);
}

/* ---- per client ------------------------------------------------------- */

typedef void ClientFn(Text *t, const char *export, const char *client,
                      json_object *ci, const void *arg);

/* Call fn for every client of every export (labels escaped). */
static void each_client(Text *t, json_object *exports, ClientFn *fn,
                        const void *arg)
{
    for (size_t i = 0; i < json_object_array_length(exports); i++) {
        json_object *e = json_object_array_get_idx(exports, i);
        json_object *id, *clients;
        CLEANUP_FREE char *eid = NULL;

        if (!json_object_object_get_ex(e, "id", &id) ||
            !json_object_object_get_ex(e, "connected-clients", &clients)) {
            continue;
        }
        eid = label_escape(json_object_get_string(id));
        for (size_t k = 0; k < json_object_array_length(clients); k++) {
            json_object *ci = json_object_array_get_idx(clients, k);
            char client[24];

            snprintf(client, sizeof(client), "%" PRId64,
                     int_member(ci, "id"));
            fn(t, eid, client, ci, arg);
        }
    }
}

static void client_info(Text *t, const char *export, const char *client,
                        json_object *ci, const void *arg)
{
    json_object *v;
    CLEANUP_FREE char *addr = NULL;
    CLEANUP_FREE char *tls = NULL;

    (void)arg;
    addr = label_escape(json_object_object_get_ex(ci, "addr", &v)
                        ? json_object_get_string(v) : "");
    tls = label_escape(json_object_object_get_ex(ci, "tls-identity", &v)
                       ? json_object_get_string(v) : "");
    text_add(t, "blockd_export_client_info{export=\"%s\",client=\"%s\","
             "addr=\"%s\",tls_identity=\"%s\"} 1\n", export, client, addr,
             tls);
}

typedef struct ClientMember {
    const char *name, *member, *op;
} ClientMember;

static void client_value(Text *t, const char *export, const char *client,
                         json_object *ci, const void *arg)
{
    const ClientMember *m = arg;

    for (; m->name != NULL; m++) {
        if (m->op != NULL) {
            text_add(t, "%s{export=\"%s\",client=\"%s\",op=\"%s\"} %"
                     PRId64 "\n", m->name, export, client, m->op,
                     int_member(ci, m->member));
        } else {
            text_add(t, "%s{export=\"%s\",client=\"%s\"} %" PRId64 "\n",
                     m->name, export, client, int_member(ci, m->member));
        }
    }
}

static void render_clients(Text *t, json_object *exports)
{
    static const ClientMember rd[] = {
        { "blockd_export_client_read_bytes_total", "rd-bytes", NULL },
        { NULL, NULL, NULL },
    };
    static const ClientMember wr[] = {
        { "blockd_export_client_write_bytes_total", "wr-bytes", NULL },
        { NULL, NULL, NULL },
    };
    static const ClientMember ops[] = {
        { "blockd_export_client_operations_total", "rd-operations",
          "read" },
        { "blockd_export_client_operations_total", "wr-operations",
          "write" },
        { "blockd_export_client_operations_total", "other-operations",
          "other" },
        { NULL, NULL, NULL },
    };

    if (exports == NULL) {
        return;
    }
    header(t, "blockd_export_client_info", "gauge",
           "A client connected to an export: its address and TLS "
           "identity (client is its connection number).");
    each_client(t, exports, client_info, NULL);
    header(t, "blockd_export_client_read_bytes_total", "counter",
           "Bytes read by the client.");
    each_client(t, exports, client_value, rd);
    header(t, "blockd_export_client_write_bytes_total", "counter",
           "Bytes written by the client.");
    each_client(t, exports, client_value, wr);
    header(t, "blockd_export_client_operations_total", "counter",
           "Requests the client made, by kind (read, write, other).");
    each_client(t, exports, client_value, ops);
}

static void render_nodes(Text *t, json_object *stats)
{
    static const NodeOp rd[] = { { NULL, "rd_bytes" } };
    static const NodeOp wr[] = { { NULL, "wr_bytes" } };
    static const NodeOp dc[] = { { NULL, "unmap_bytes" } };
    static const NodeOp ops[] = {
        { "read", "rd_operations" }, { "write", "wr_operations" },
        { "flush", "flush_operations" }, { "discard", "unmap_operations" },
    };
    static const NodeOp failed[] = {
        { "read", "failed_rd_operations" },
        { "write", "failed_wr_operations" },
        { "flush", "failed_flush_operations" },
        { "discard", "failed_unmap_operations" },
    };
    static const NodeOp times[] = {
        { "read", "rd_total_time_ns" }, { "write", "wr_total_time_ns" },
        { "flush", "flush_total_time_ns" },
        { "discard", "unmap_total_time_ns" },
    };

    if (stats == NULL) {
        return;
    }
    node_family(t, stats, "blockd_node_read_bytes_total",
                "Bytes read from the node.", rd, 1, 1.0);
    node_family(t, stats, "blockd_node_write_bytes_total",
                "Bytes written to the node.", wr, 1, 1.0);
    node_family(t, stats, "blockd_node_discard_bytes_total",
                "Bytes discarded on the node.", dc, 1, 1.0);
    node_family(t, stats, "blockd_node_operations_total",
                "Requests completed by the node, by kind.", ops,
                ARRAY_SIZE(ops), 1.0);
    node_family(t, stats, "blockd_node_failed_operations_total",
                "Requests that failed, by kind.", failed,
                ARRAY_SIZE(failed), 1.0);
    node_family(t, stats, "blockd_node_operation_seconds_total",
                "Time spent in requests, by kind.", times,
                ARRAY_SIZE(times), 1e-9);
}

static void export_family(Text *t, json_object *exports, const char *name,
                          const char *type, const char *help,
                          const char *member, const char *op)
{
    header(t, name, type, help);
    for (size_t i = 0; i < json_object_array_length(exports); i++) {
        json_object *e = json_object_array_get_idx(exports, i);
        json_object *id;
        CLEANUP_FREE char *eid = NULL;

        if (!json_object_object_get_ex(e, "id", &id)) {
            continue;
        }
        eid = label_escape(json_object_get_string(id));
        if (op != NULL) {
            text_add(t, "%s{export=\"%s\",op=\"%s\"} %" PRId64 "\n", name,
                     eid, op, int_member(e, member));
        } else {
            text_add(t, "%s{export=\"%s\"} %" PRId64 "\n", name, eid,
                     int_member(e, member));
        }
    }
}

static void render_exports(Text *t, json_object *exports)
{
    if (exports == NULL) {
        return;
    }
    export_family(t, exports, "blockd_export_clients", "gauge",
                  "Clients connected to the export.", "clients", NULL);
    export_family(t, exports, "blockd_export_read_bytes_total", "counter",
                  "Bytes read by the export's clients.", "rd-bytes", NULL);
    export_family(t, exports, "blockd_export_write_bytes_total", "counter",
                  "Bytes written by the export's clients.", "wr-bytes",
                  NULL);
    /* Both ops of one family under one header. */
    header(t, "blockd_export_operations_total", "counter",
           "Requests served by the export, by kind.");
    for (size_t i = 0; i < json_object_array_length(exports); i++) {
        json_object *e = json_object_array_get_idx(exports, i);
        json_object *id;
        CLEANUP_FREE char *eid = NULL;

        if (!json_object_object_get_ex(e, "id", &id)) {
            continue;
        }
        eid = label_escape(json_object_get_string(id));
        text_add(t, "blockd_export_operations_total{export=\"%s\","
                 "op=\"read\"} %" PRId64 "\n", eid,
                 int_member(e, "rd-operations"));
        text_add(t, "blockd_export_operations_total{export=\"%s\","
                 "op=\"write\"} %" PRId64 "\n", eid,
                 int_member(e, "wr-operations"));
    }
}

static void render_server(Text *t, json_object *srv)
{
    static const struct {
        const char *name, *type, *member, *help;
    } fields[] = {
        { "blockd_nbd_server_clients", "gauge", "clients",
          "Clients connected to the NBD server." },
        { "blockd_nbd_tls_sessions_total", "counter", "tls-sessions",
          "TLS sessions established." },
        { "blockd_nbd_tls_handshake_failures_total", "counter",
          "tls-handshake-failures", "TLS handshakes that failed." },
        { "blockd_nbd_tls_peer_refused_total", "counter",
          "tls-peer-refused", "Clients whose certificate was refused." },
        { "blockd_nbd_tls_authz_denied_total", "counter",
          "tls-authz-denied", "Clients denied by tls-authz." },
        { "blockd_nbd_tls_required_refusals_total", "counter",
          "tls-required-refusals", "Options refused before STARTTLS." },
    };

    header(t, "blockd_nbd_server_up", "gauge",
           "1 when the NBD server runs.");
    text_add(t, "blockd_nbd_server_up %d\n", srv != NULL);
    if (srv == NULL) {
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
        header(t, fields[i].name, fields[i].type, fields[i].help);
        text_add(t, "%s %" PRId64 "\n", fields[i].name,
                 int_member(srv, fields[i].member));
    }
}

char *metrics_render(const QmpCtx *ctx)
{
    CLEANUP_JSON json_object *stats =
        query(ctx, "query-blockstats", "{\"query-nodes\": true}");
    CLEANUP_JSON json_object *exports =
        query(ctx, "query-block-exports", "{\"op-stats\": true}");
    CLEANUP_JSON json_object *srv = query(ctx, "query-nbd-server", NULL);
    Text t = { 0 };

    header(&t, "blockd_info", "gauge", "blockd's version.");
    text_add(&t, "blockd_info{version=\"%s\"} 1\n", BLOCKD_VERSION);
    render_nodes(&t, stats);
    render_exports(&t, exports);
    render_ops(&t, stats, exports);
    render_clients(&t, exports);
    render_server(&t, srv);
    return t.buf;
}

/* ---- connections ------------------------------------------------------- */

static void conn_close(MetricsConn *c)
{
    Metrics *m = c->m;

    for (MetricsConn **pp = &m->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    loop_fd_del(c->watch);
    loop_timer_free(c->timer);
    close(c->fd);
    free(c->out);
    free(c);
    acceptor_fd_freed(m->acceptor);
}

static void conn_respond(MetricsConn *c)
{
    CLEANUP_FREE char *body = NULL;
    const char *status = "200 OK";
    bool get = strncmp(c->in, "GET ", 4) == 0;
    bool head = strncmp(c->in, "HEAD ", 5) == 0;
    const char *path = c->in + (head ? 5 : 4);

    if (!get && !head) {
        status = "405 Method Not Allowed";
        body = xstrdup("only GET\n");
    } else if (strncmp(path, "/metrics ", 9) == 0 ||
               strncmp(path, "/ ", 2) == 0 ||
               strncmp(path, "/metrics?", 9) == 0) {
        body = metrics_render(c->m->ctx);
    } else {
        status = "404 Not Found";
        body = xstrdup("try /metrics\n");
    }
    c->out = xasprintf("HTTP/1.0 %s\r\n"
                       "Content-Type: text/plain; version=0.0.4; "
                       "charset=utf-8\r\n"
                       "Content-Length: %zu\r\n"
                       "Connection: close\r\n\r\n%s",
                       status, strlen(body), head ? "" : body);
    c->out_len = strlen(c->out);
    loop_fd_set_events(c->watch, LOOP_WRITE);
}

static void conn_io(int fd, int events, void *opaque)
{
    MetricsConn *c = opaque;

    (void)events;
    if (c->out == NULL) {
        ssize_t n = recv(fd, c->in + c->in_len,
                         sizeof(c->in) - 1 - c->in_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
        if (strstr(c->in, "\r\n\r\n") != NULL ||
            strstr(c->in, "\n\n") != NULL) {
            conn_respond(c);
        } else if (c->in_len == sizeof(c->in) - 1) {
            conn_close(c);
        }
        return;
    }
    while (c->out_pos < c->out_len) {
        ssize_t n = send(fd, c->out + c->out_pos, c->out_len - c->out_pos,
                         MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n <= 0) {
            break;
        }
        c->out_pos += (size_t)n;
    }
    conn_close(c);
}

static void conn_timeout(void *opaque)
{
    conn_close(opaque);
}

static void metrics_accept(void *opaque, int fd)
{
    Metrics *m = opaque;
    MetricsConn *c = XNEW(MetricsConn);

    c->m = m;
    c->fd = fd;
    c->watch = loop_fd_add(m->loop, fd, LOOP_READ, conn_io, c);
    c->timer = loop_timer_new(m->loop, conn_timeout, c);
    loop_timer_arm(c->timer, METRICS_TIMEOUT_US);
    c->next = m->conns;
    m->conns = c;
}

Metrics *metrics_new(Loop *loop, const QmpCtx *ctx, const char *addr,
                     Error **errp)
{
    ChardevSpec *spec;
    SockListenerVec ls = { 0 };
    SockAddr sa;
    Metrics *m;

    if (strncmp(addr, "unix:", 5) != 0 && strncmp(addr, "tcp:", 4) != 0) {
        error_setg(errp, "--metrics: expected unix:PATH or tcp:HOST:PORT, "
                   "got '%s'", addr);
        return NULL;
    }
    spec = chardev_spec_parse_qmp(addr, errp);
    if (spec == NULL) {
        error_prepend(errp, "--metrics: ");
        return NULL;
    }
    if (spec->path != NULL) {
        sa = (SockAddr){ .type = SOCK_ADDR_UNIX, .path = spec->path };
    } else {
        sa = (SockAddr){ .type = SOCK_ADDR_INET, .host = spec->host,
                         .port = spec->port };
    }
    if (!sock_listen(&sa, &ls, errp)) {
        error_prepend(errp, "--metrics: ");
        chardev_spec_free(spec);
        return NULL;
    }
    chardev_spec_free(spec);
    m = XNEW(Metrics);
    m->loop = loop;
    m->ctx = ctx;
    m->acceptor = acceptor_new(loop, "metrics", metrics_accept, m);
    acceptor_add(m->acceptor, &ls);
    return m;
}

void metrics_free(Metrics *m)
{
    if (m == NULL) {
        return;
    }
    while (m->conns != NULL) {
        conn_close(m->conns);
    }
    acceptor_free(m->acceptor);
    free(m);
}
