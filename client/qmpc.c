/* qmpc.c - a small blocking QMP client library; see qmpc.h. */
#include "client/qmpc.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qapi-cmdtable.h"
#include "util/cleanup.h"
#include "util/json.h"
#include "util/keyval.h"
#include "util/sock.h"
#include "util/util.h"
#include "util/vector.h"

DEFINE_VECTOR_TYPE(QmpcMsgVec, json_object *);

struct QmpClient {
    int fd;
    json_tokener *tok;
    char buf[65536];        /* bytes read, not yet given to tok */
    size_t buf_pos;         /* next byte to parse */
    size_t buf_len;         /* end of valid bytes */
    size_t msg_bytes;       /* bytes of the message being parsed */
    json_object *greeting;  /* owned */
    QmpcMsgVec events;      /* queued events, oldest first; owned */
    bool eof;
    uint64_t next_id;       /* for qmpc_execute's "id" */
};

/*
 * Connecting.
 */

/* "HOST:PORT" or "[V6ADDR]:PORT". */
static int qmpc_connect_tcp(const char *hostport, int timeout_ms,
                            Error **errp)
{
    CLEANUP_FREE char *host = NULL;
    const char *port;
    SockAddr sa = { .type = SOCK_ADDR_INET };

    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        if (!end || end[1] != ':') {
            error_setg(errp, "Bad address 'tcp:%s', expected "
                       "tcp:[ADDR]:PORT", hostport);
            return -1;
        }
        host = xstrndup(hostport + 1, end - hostport - 1);
        port = end + 2;
    } else {
        const char *colon = strrchr(hostport, ':');
        if (!colon) {
            error_setg(errp, "Bad address 'tcp:%s', expected "
                       "tcp:HOST:PORT", hostport);
            return -1;
        }
        host = xstrndup(hostport, colon - hostport);
        port = colon + 1;
    }
    if (*host == '\0' || *port == '\0') {
        error_setg(errp, "Bad address 'tcp:%s', expected tcp:HOST:PORT",
                   hostport);
        return -1;
    }
    sa.host = host;
    sa.port = port;
    return sock_connect(&sa, timeout_ms, errp);
}

static bool qmpc_check_greeting(json_object *msg, Error **errp)
{
    json_object *qmp;

    if (!json_object_object_get_ex(msg, "QMP", &qmp) ||
        !json_object_is_type(qmp, json_type_object)) {
        CLEANUP_FREE char *text = qjson_format(msg, false);
        error_setg(errp, "Not a QMP greeting: %.200s", text);
        return false;
    }
    return true;
}

QmpClient *qmpc_connect(const char *addr, int timeout_ms, Error **errp)
{
    QmpClient *c;
    json_object *msg = NULL;
    int fd;
    int rc;

    if (strncmp(addr, "tcp:", 4) == 0) {
        fd = qmpc_connect_tcp(addr + 4, timeout_ms, errp);
    } else {
        SockAddr sa = { .type = SOCK_ADDR_UNIX, .path = addr };

        if (strncmp(addr, "unix:", 5) == 0) {
            sa.path = addr + 5;
        }
        fd = sock_connect(&sa, timeout_ms, errp);
    }
    if (fd < 0) {
        return NULL;
    }
    c = XNEW(QmpClient);
    c->fd = fd;
    c->tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH * 4);
    c->next_id = 1;
    rc = qmpc_read(c, timeout_ms, &msg, errp);
    if (rc == 0) {
        error_setg(errp, "Timed out waiting for the QMP greeting");
    }
    if (rc <= 0) {
        error_prepend(errp, "%s: ", addr);
        qmpc_close(c);
        return NULL;
    }
    if (!qmpc_check_greeting(msg, errp)) {
        json_object_put(msg);
        qmpc_close(c);
        return NULL;
    }
    c->greeting = msg;
    return c;
}

void qmpc_close(QmpClient *c)
{
    if (!c) {
        return;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    if (c->tok) {
        json_tokener_free(c->tok);
    }
    json_object_put(c->greeting);
    for (size_t i = 0; i < c->events.len; i++) {
        json_object_put(c->events.ptr[i]);
    }
    QmpcMsgVec_reset(&c->events);
    free(c);
}

json_object *qmpc_greeting(const QmpClient *c)
{
    return c->greeting;
}

int qmpc_fd(const QmpClient *c)
{
    return c->fd;
}

bool qmpc_eof(const QmpClient *c)
{
    return c->eof;
}

/*
 * Reading: bytes → json_tokener → one object at a time.
 */

static int64_t qmpc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Parse from the buffered bytes.  1: *msg set; 0: need more bytes;
 * -1: protocol error. */
static int qmpc_parse_buffered(QmpClient *c, json_object **msg,
                               Error **errp)
{
    while (c->buf_pos < c->buf_len) {
        size_t avail = c->buf_len - c->buf_pos;
        json_object *obj;
        enum json_tokener_error jerr;
        size_t used;

        /* Skip the blanks between messages ("\r\n") without counting
         * them as part of the next message. */
        if (c->msg_bytes == 0 && isspace((unsigned char)c->buf[c->buf_pos])) {
            c->buf_pos++;
            continue;
        }
        obj = json_tokener_parse_ex(c->tok, c->buf + c->buf_pos,
                                    (int)MIN(avail, (size_t)INT32_MAX));
        jerr = json_tokener_get_error(c->tok);
        used = json_tokener_get_parse_end(c->tok);
        c->buf_pos += used;
        c->msg_bytes += used;
        if (obj || jerr == json_tokener_success) {
            /* (A JSON null is a success without an object.) */
            c->msg_bytes = 0;
            if (!json_object_is_type(obj, json_type_object)) {
                json_object_put(obj);
                error_setg(errp, "The server sent a JSON value that is "
                           "not an object");
                return -1;
            }
            *msg = obj;
            return 1;
        }
        if (jerr != json_tokener_continue) {
            error_setg(errp, "The server sent malformed JSON: %s",
                       json_tokener_error_desc(jerr));
            json_tokener_reset(c->tok);
            c->msg_bytes = 0;
            return -1;
        }
        if (c->msg_bytes > QMPC_MAX_MESSAGE) {
            error_setg(errp, "The server sent a message over %d bytes",
                       QMPC_MAX_MESSAGE);
            json_tokener_reset(c->tok);
            c->msg_bytes = 0;
            return -1;
        }
    }
    c->buf_pos = c->buf_len = 0;
    return 0;
}

int qmpc_read(QmpClient *c, int timeout_ms, json_object **msg,
              Error **errp)
{
    int64_t deadline = timeout_ms >= 0 ? qmpc_now_ms() + timeout_ms : -1;

    *msg = NULL;
    for (;;) {
        int rc = qmpc_parse_buffered(c, msg, errp);
        ssize_t n;

        if (rc != 0) {
            return rc;
        }
        if (c->eof) {
            error_setg(errp, "Connection closed by the server");
            return -1;
        }
        if (timeout_ms >= 0) {
            int64_t left = deadline - qmpc_now_ms();
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

            if (left < 0) {
                left = 0;
            }
            rc = poll(&pfd, 1, (int)MIN(left, (int64_t)INT32_MAX));
            if (rc < 0 && errno == EINTR) {
                continue;
            }
            if (rc < 0) {
                error_setg_errno(errp, errno, "poll");
                return -1;
            }
            if (rc == 0) {
                return 0;
            }
        }
        n = read(c->fd, c->buf, sizeof(c->buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != ECONNRESET) {
            error_setg_errno(errp, errno, "Could not read from the server");
            return -1;
        }
        if (n <= 0) {
            /* A reset (the server closed with our request unread) is
             * an end of stream too. */
            c->eof = true;
            if (c->msg_bytes > 0) {
                error_setg(errp, "Connection closed by the server in the "
                           "middle of a message");
                return -1;
            }
            error_setg(errp, "Connection closed by the server");
            return -1;
        }
        c->buf_pos = 0;
        c->buf_len = n;
    }
}

bool qmpc_pending(QmpClient *c)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

    if (c->events.len > 0) {
        return true;
    }
    /* Buffered bytes other than blanks may hold a whole message. */
    for (size_t i = c->buf_pos; i < c->buf_len; i++) {
        if (!isspace((unsigned char)c->buf[i])) {
            return true;
        }
    }
    return poll(&pfd, 1, 0) > 0;
}

/*
 * Sending and calling.
 */

bool qmpc_send_raw(QmpClient *c, const char *buf, size_t len, Error **errp)
{
    int rc = write_full(c->fd, buf, len);

    if (rc < 0) {
        error_setg_errno(errp, -rc, "Could not send to the server");
        return false;
    }
    return true;
}

bool qmpc_send(QmpClient *c, json_object *request, Error **errp)
{
    CLEANUP_FREE char *text = qjson_format(request, false);
    CLEANUP_FREE char *line = xasprintf("%s\n", text);

    return qmpc_send_raw(c, line, strlen(line), errp);
}

static bool qmpc_is_event(json_object *msg)
{
    return json_object_object_get_ex(msg, "event", NULL);
}

static bool qmpc_is_reply(json_object *msg)
{
    return json_object_object_get_ex(msg, "return", NULL) ||
           json_object_object_get_ex(msg, "error", NULL);
}

bool qmpc_call(QmpClient *c, json_object *request, json_object **reply,
               Error **errp)
{
    *reply = NULL;
    if (!qmpc_send(c, request, errp)) {
        return false;
    }
    for (;;) {
        json_object *msg;

        if (qmpc_read(c, -1, &msg, errp) < 0) {
            return false;
        }
        if (qmpc_is_event(msg)) {
            if (c->events.len >= QMPC_MAX_QUEUED_EVENTS) {
                /* Nobody reads them: keep the newest. */
                json_object_put(c->events.ptr[0]);
                QmpcMsgVec_remove(&c->events, 0);
            }
            QmpcMsgVec_append(&c->events, msg);
            continue;
        }
        if (qmpc_is_reply(msg)) {
            *reply = msg;
            return true;
        }
        /* Neither: a second greeting or garbage; not ours to answer. */
        json_object_put(msg);
    }
}

bool qmpc_execute(QmpClient *c, const char *command, json_object *args,
                  json_object **reply, Error **errp)
{
    CLEANUP_JSON json_object *req = json_object_new_object();

    json_object_object_add(req, "execute", json_object_new_string(command));
    if (args) {
        json_object_object_add(req, "arguments", json_object_get(args));
    }
    json_object_object_add(req, "id", json_object_new_int64(c->next_id++));
    return qmpc_call(c, req, reply, errp);
}

bool qmpc_negotiate(QmpClient *c, Error **errp)
{
    CLEANUP_JSON json_object *reply = NULL;
    const char *cls, *desc;

    if (!qmpc_execute(c, "qmp_capabilities", NULL, &reply, errp)) {
        return false;
    }
    if (qmpc_reply_is_error(reply, &cls, &desc)) {
        error_setg(errp, "Capabilities negotiation failed: %s: %s", cls,
                   desc);
        return false;
    }
    return true;
}

int qmpc_next_event(QmpClient *c, int timeout_ms, json_object **event,
                    Error **errp)
{
    int64_t deadline = timeout_ms >= 0 ? qmpc_now_ms() + timeout_ms : -1;

    *event = NULL;
    if (c->events.len > 0) {
        *event = c->events.ptr[0];
        QmpcMsgVec_remove(&c->events, 0);
        return 1;
    }
    for (;;) {
        int left = -1;
        json_object *msg;
        int rc;

        if (timeout_ms >= 0) {
            int64_t l = deadline - qmpc_now_ms();
            left = l < 0 ? 0 : (int)MIN(l, (int64_t)INT32_MAX);
        }
        rc = qmpc_read(c, left, &msg, errp);
        if (rc <= 0) {
            return rc;
        }
        if (qmpc_is_event(msg)) {
            *event = msg;
            return 1;
        }
        json_object_put(msg);
    }
}

bool qmpc_reply_is_error(json_object *reply, const char **cls,
                         const char **desc)
{
    json_object *err, *v;

    if (!json_object_object_get_ex(reply, "error", &err)) {
        return false;
    }
    *cls = "GenericError";
    *desc = "";
    if (json_object_object_get_ex(err, "class", &v) &&
        json_object_is_type(v, json_type_string)) {
        *cls = json_object_get_string(v);
    }
    if (json_object_object_get_ex(err, "desc", &v) &&
        json_object_is_type(v, json_type_string)) {
        *desc = json_object_get_string(v);
    }
    return true;
}

/*
 * Building requests from words.
 */

DEFINE_VECTOR_TYPE(QmpcCharVec, char);
DEFINE_VECTOR_TYPE(QmpcWordVec, char *);

static void qmpc_charvec_putc(QmpcCharVec *v, char ch)
{
    QmpcCharVec_append(v, ch);
}

/* Copy a JSON text that starts at *pp ('{' or '[') up to its matching
 * bracket into w, honouring JSON strings.  False when it never ends. */
static bool qmpc_scan_json(const char **pp, QmpcCharVec *w)
{
    const char *p = *pp;
    unsigned depth = 0;
    bool in_str = false;

    for (; *p; p++) {
        qmpc_charvec_putc(w, *p);
        if (in_str) {
            if (*p == '\\' && p[1]) {
                qmpc_charvec_putc(w, *++p);
            } else if (*p == '"') {
                in_str = false;
            }
        } else if (*p == '"') {
            in_str = true;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0) {
                *pp = p + 1;
                return true;
            }
        }
    }
    *pp = p;
    return false;
}

void qmpc_free_words(char **words)
{
    if (!words) {
        return;
    }
    for (char **w = words; *w; w++) {
        free(*w);
    }
    free(words);
}

char **qmpc_split_words(const char *line, size_t *count, Error **errp)
{
    QmpcWordVec words = { 0 };
    const char *p = line;

    for (;;) {
        QmpcCharVec w = { 0 };
        bool value_start = true;    /* at the word's or the value's start */
        bool seen_eq = false;

        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            p++;
        }
        if (!*p) {
            break;
        }
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            bool was_value_start = value_start;

            value_start = false;
            if (was_value_start && (*p == '{' || *p == '[')) {
                if (!qmpc_scan_json(&p, &w)) {
                    error_setg(errp, "Unterminated JSON value in '%s'",
                               line);
                    goto fail_word;
                }
            } else if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');
                if (!end) {
                    error_setg(errp, "Unterminated ' quote in '%s'", line);
                    goto fail_word;
                }
                for (p++; p < end; p++) {
                    qmpc_charvec_putc(&w, *p);
                }
                p++;
            } else if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) {
                        p++;
                    }
                    qmpc_charvec_putc(&w, *p);
                }
                if (!*p) {
                    error_setg(errp, "Unterminated \" quote in '%s'", line);
                    goto fail_word;
                }
                p++;
            } else if (*p == '\\') {
                if (!p[1]) {
                    error_setg(errp, "Trailing backslash in '%s'", line);
                    goto fail_word;
                }
                qmpc_charvec_putc(&w, p[1]);
                p += 2;
            } else {
                if (*p == '=' && !seen_eq) {
                    seen_eq = true;
                    value_start = true;
                }
                qmpc_charvec_putc(&w, *p++);
            }
        }
        qmpc_charvec_putc(&w, '\0');
        QmpcWordVec_append(&words, w.ptr);
        continue;

    fail_word:
        free(w.ptr);
        for (size_t i = 0; i < words.len; i++) {
            free(words.ptr[i]);
        }
        QmpcWordVec_reset(&words);
        return NULL;
    }
    *count = words.len;
    QmpcWordVec_append(&words, NULL);
    return words.ptr;
}

static json_object *qmpc_parse_json_value(const char *text, const char *key,
                                          Error **errp)
{
    json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH * 4);
    size_t len = strlen(text);
    json_object *v;

    /* Strict: what the user typed goes to the server as JSON, so no
     * trailing commas or single quotes that json-c would let by. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    v = json_tokener_parse_ex(tok, text, (int)MIN(len, (size_t)INT32_MAX));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);

    json_tokener_free(tok);
    if (!v || jerr != json_tokener_success) {
        error_setg(errp, "Invalid JSON value for '%s': %s", key,
                   v ? "trailing characters"
                   : jerr == json_tokener_continue ||
                     jerr == json_tokener_success
                       ? "unexpected end of input"
                       : json_tokener_error_desc(jerr));
        json_object_put(v);
        return NULL;
    }
    for (; end < len; end++) {
        if (!isspace((unsigned char)text[end])) {
            error_setg(errp, "Invalid JSON value for '%s': trailing "
                       "characters", key);
            json_object_put(v);
            return NULL;
        }
    }
    return v;
}

/* Convert args by the schema of command (strings to the members'
 * types).  Returns a new reference, or NULL with errp set. */
static json_object *qmpc_normalize(const char *command, json_object *args,
                                   Error **errp)
{
    const QmpCommand *cmd = qmp_find_command(command);
    json_object *out = NULL;

    if (!cmd || !cmd->normalize) {
        return json_object_get(args);
    }
    if (!cmd->normalize(args, QAPI_PARSE_KEYVAL, &out, errp)) {
        return NULL;
    }
    return out;
}

/* JSON values go through keyval_parse() as placeholder strings, so the
 * dotted-key rules are keyval's alone; the placeholders are then
 * replaced by the parsed values.  Nobody types a \x01. */
#define QMPC_JSON_MARK "\x01json-value:"

DEFINE_VECTOR_TYPE(QmpcJsonVec, json_object *);

/* Replace the placeholder strings under *obj by the values in jv.
 * Returns the (possibly new) value for this position. */
static json_object *qmpc_put_json_values(json_object *obj, QmpcJsonVec *jv)
{
    const char *str;
    uint64_t idx;

    switch (json_object_get_type(obj)) {
    case json_type_object: {
        json_object_object_foreach(obj, k, v) {
            json_object *nv = qmpc_put_json_values(v, jv);
            if (nv != v) {
                /* The entry stays, only its value changes: safe while
                 * iterating. */
                json_object_object_add(obj, k, nv);
            }
        }
        return obj;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(obj); i++) {
            json_object *v = json_object_array_get_idx(obj, i);
            json_object *nv = qmpc_put_json_values(v, jv);
            if (nv != v) {
                json_object_array_put_idx(obj, i, nv);
            }
        }
        return obj;
    case json_type_string:
        str = json_object_get_string(obj);
        if (strncmp(str, QMPC_JSON_MARK, strlen(QMPC_JSON_MARK)) == 0 &&
            parse_uint64(str + strlen(QMPC_JSON_MARK), &idx) &&
            idx < jv->len && jv->ptr[idx]) {
            return TAKE_PTR(jv->ptr[idx]);
        }
        return obj;
    default:
        return obj;
    }
}

json_object *qmpc_build_args(const char *command, char *const *words,
                             size_t n, Error **errp)
{
    CLEANUP_JSON json_object *args = NULL;
    QmpcJsonVec jv = { 0 };
    QmpcCharVec kv = { 0 };
    json_object *ret = NULL;

    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(words[i], '=');
        CLEANUP_FREE char *key = NULL;
        const char *val;

        if (!eq || eq == words[i]) {
            error_setg(errp, "Expected key=value, got '%s'", words[i]);
            goto out;
        }
        key = xstrndup(words[i], eq - words[i]);
        if (strchr(key, ',')) {
            error_setg(errp, "Invalid parameter name '%s'", key);
            goto out;
        }
        val = eq + 1;
        for (const char *p = key; *p; p++) {
            qmpc_charvec_putc(&kv, *p);
        }
        qmpc_charvec_putc(&kv, '=');
        if (*val == '{' || *val == '[') {
            json_object *v = qmpc_parse_json_value(val, key, errp);
            char mark[64];

            if (!v) {
                goto out;
            }
            snprintf(mark, sizeof(mark), QMPC_JSON_MARK "%zu", jv.len);
            QmpcJsonVec_append(&jv, v);
            for (const char *p = mark; *p; p++) {
                qmpc_charvec_putc(&kv, *p);
            }
        } else {
            for (const char *p = val; *p; p++) {
                qmpc_charvec_putc(&kv, *p);
                if (*p == ',') {
                    qmpc_charvec_putc(&kv, ',');   /* ",," is a comma */
                }
            }
        }
        qmpc_charvec_putc(&kv, ',');
    }
    qmpc_charvec_putc(&kv, '\0');
    if (kv.ptr[0] == '\0') {
        args = json_object_new_object();
    } else {
        args = keyval_parse(kv.ptr, NULL, errp);
        if (!args) {
            goto out;
        }
    }
    qmpc_put_json_values(args, &jv);
    ret = qmpc_normalize(command, args, errp);

out:
    for (size_t i = 0; i < jv.len; i++) {
        json_object_put(jv.ptr[i]);
    }
    QmpcJsonVec_reset(&jv);
    QmpcCharVec_reset(&kv);
    return ret;
}

static const char *qmpc_skip_blanks(const char *p)
{
    while (isspace((unsigned char)*p)) {
        p++;
    }
    return p;
}

static bool qmpc_valid_command_name(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' &&
            *s != '.') {
            return false;
        }
    }
    return true;
}

json_object *qmpc_parse_raw(const char *text, Error **errp)
{
    const char *p = qmpc_skip_blanks(text);
    CLEANUP_FREE char *name = NULL;
    json_object *req;
    size_t len;

    if (*p == '{') {
        req = qmpc_parse_json_value(p, "request", errp);
        if (!req) {
            return NULL;
        }
        if (!json_object_is_type(req, json_type_object)) {
            json_object_put(req);
            error_setg(errp, "A request must be a JSON object");
            return NULL;
        }
        return req;
    }
    if (*p == '"') {
        json_object *s = qmpc_parse_json_value(p, "request", errp);
        if (!s) {
            return NULL;
        }
        if (!json_object_is_type(s, json_type_string)) {
            json_object_put(s);
            error_setg(errp, "A request must be a JSON object or a "
                       "command name");
            return NULL;
        }
        name = xstrdup(json_object_get_string(s));
        json_object_put(s);
        if (!qmpc_valid_command_name(name)) {
            error_setg(errp, "Invalid command name '%s'", name);
            return NULL;
        }
    } else {
        len = strlen(p);
        while (len > 0 && isspace((unsigned char)p[len - 1])) {
            len--;
        }
        name = xstrndup(p, len);
        if (!qmpc_valid_command_name(name)) {
            error_setg(errp, "A request must be a JSON object or a "
                       "command name, got '%s'", name);
            return NULL;
        }
    }
    req = json_object_new_object();
    json_object_object_add(req, "execute", json_object_new_string(name));
    return req;
}

json_object *qmpc_parse_line(const char *line, bool *empty, Error **errp)
{
    const char *p = qmpc_skip_blanks(line);
    char **words;
    size_t n;
    json_object *args, *req;

    *empty = false;
    if (*p == '\0' || *p == '#') {
        *empty = true;
        return NULL;
    }
    if (*p == '{' || *p == '"') {
        return qmpc_parse_raw(p, errp);
    }
    words = qmpc_split_words(p, &n, errp);
    if (!words) {
        return NULL;
    }
    if (!qmpc_valid_command_name(words[0])) {
        error_setg(errp, "Invalid command name '%s'", words[0]);
        qmpc_free_words(words);
        return NULL;
    }
    args = qmpc_build_args(words[0], words + 1, n - 1, errp);
    if (!args) {
        qmpc_free_words(words);
        return NULL;
    }
    req = json_object_new_object();
    json_object_object_add(req, "execute", json_object_new_string(words[0]));
    if (n > 1) {
        json_object_object_add(req, "arguments", args);
    } else {
        json_object_put(args);
    }
    qmpc_free_words(words);
    return req;
}
