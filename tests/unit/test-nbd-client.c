/* test-nbd-client.c - the client handshake and list mode (nbd/client.c)
 * against a small scripted server on a thread, over a socketpair (and
 * once over unix and TCP sockets): the good path, each fallback, and
 * hostile replies, each of which must fail with a clear Error.
 *
 * The server thread never calls CUnit: it records what it saw in its
 * Srv and the test asserts after joining it. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cunit-main.h"
#include "nbd/client.h"
#include "nbd/proto.h"
#include "util/cleanup.h"
#include "util/util.h"

#define T_TIMEOUT_MS 30000   /* generous: the machine is loaded */
#define MAX_OPTS 64

/* ---- the scripted server ---------------------------------------------- */

typedef struct SrvExport {
    const char *name;
    const char *desc;           /* NULL: none */
    uint64_t size;
    uint16_t flags;
} SrvExport;

typedef enum Hostile {
    H_NONE,
    H_BAD_GREETING,             /* not NBDMAGIC */
    H_OLDSTYLE,                 /* oldstyle second magic */
    H_NOT_FIXED,                /* newstyle without FIXED_NEWSTYLE */
    H_OVERSIZED,                /* reply length past NBD_MAX_OPTION_LEN */
    H_WRONG_OPT,                /* reply names another option */
    H_BAD_MAGIC,                /* reply with a wrong magic */
    H_TRUNCATED,                /* reply payload cut short, then EOF */
    H_ACK_WITH_DATA,            /* NBD_REP_ACK that carries data */
    H_ENDLESS_LIST,             /* OPT_LIST never ends */
    H_ENDLESS_META,             /* LIST_META_CONTEXT never ends */
    H_LIST_NAME_NUL,            /* NBD_REP_SERVER name with a NUL */
    H_INFO_NAME_NUL,            /* NBD_INFO_NAME with a NUL */
    H_BS_MIN_GT_MAX,            /* block sizes: min > max */
    H_BS_NOT_POW2,              /* block sizes: min not a power of 2 */
    H_SIZE_CHANGE,              /* INFO_EXPORT twice, different sizes */
    H_NO_INFO_EXPORT,           /* GO acknowledged without INFO_EXPORT */
    H_UNASKED_CONTEXT,          /* SET_META selects a context not asked */
    H_SILENT,                   /* greeting, then nothing */
    H_UNEXPECTED_TYPE,          /* NBD_REP_SERVER in reply to GO */
    H_META_NUL,                 /* meta context name with a NUL */
    H_ENDLESS_INFO,             /* INFO/GO answered by NBD_REP_INFO
                                 * forever, never NBD_REP_ACK */
} Hostile;

typedef struct Srv {
    /* script */
    uint16_t hflags;
    bool ext, sr, go, info;     /* options the server knows */
    bool list;                  /* knows OPT_LIST */
    bool starttls;              /* ACK STARTTLS, else ERR_POLICY */
    bool hide_qemu;             /* query-less LIST_META skips "qemu:" */
    const char *const *contexts;
    size_t n_contexts;
    const SrvExport *exports;
    size_t n_exports;
    Hostile hostile;
    /* record */
    uint32_t cflags;
    uint32_t opts[MAX_OPTS];
    size_t n_opts;
    char go_name[NBD_MAX_STRING + 1];
    bool go_wanted_name, go_wanted_desc, go_wanted_bs;
    bool in_transmission;       /* reached GO / EXPORT_NAME */
    /* thread */
    int fd;                     /* the server's end; closed by the thread */
    int listen_fd;              /* >= 0: accept fd from this first */
    pthread_t th;
} Srv;

/* The client may hang up on the script: suite_init ignores SIGPIPE, so
 * a write to it fails with EPIPE instead. */
static bool s_write(int fd, const void *buf, size_t len)
{
    return write_full(fd, buf, len) == 0;
}

static bool s_read(int fd, void *buf, size_t len)
{
    return read_full(fd, buf, len) == 0;
}

static bool s_reply(int fd, uint32_t opt, uint32_t type, const void *data,
                    size_t len)
{
    uint8_t hdr[NBD_OPT_REPLY_HDR_SIZE];

    nbd_encode_opt_reply_hdr(hdr, opt, type, (uint32_t)len);
    return s_write(fd, hdr, sizeof(hdr)) && (len == 0 ||
                                             s_write(fd, data, len));
}

static bool s_err(int fd, uint32_t opt, uint32_t type, const char *msg)
{
    return s_reply(fd, opt, type, msg, msg ? strlen(msg) : 0);
}

static bool s_info(int fd, uint32_t opt, const NbdRepInfo *ri)
{
    uint8_t buf[NBD_MAX_STRING + 16];
    ssize_t len = nbd_encode_rep_info(buf, sizeof(buf), ri);

    return len > 0 && s_reply(fd, opt, NBD_REP_INFO, buf, (size_t)len);
}

static bool s_info_str(int fd, uint32_t opt, uint16_t type, const char *s,
                       size_t len)
{
    NbdRepInfo ri = { .type = type, .str = { .ptr = s,
                                             .len = (uint32_t)len } };
    return s_info(fd, opt, &ri);
}

static const SrvExport *s_find(const Srv *s, const char *name)
{
    for (size_t i = 0; i < s->n_exports; i++) {
        if (strcmp(s->exports[i].name, name) == 0) {
            return &s->exports[i];
        }
    }
    return NULL;
}

static bool s_meta_ctx(int fd, uint32_t opt, uint32_t id, const char *name,
                       size_t len)
{
    uint8_t buf[NBD_MAX_STRING + 4];

    put_be32(buf, id);
    memcpy(buf + 4, name, len);
    return s_reply(fd, opt, NBD_REP_META_CONTEXT, buf, 4 + len);
}

/* LIST/SET_META_CONTEXT: each known context that a query names (or,
 * listing with no query, all of them). */
static bool s_meta(Srv *s, uint32_t opt, const uint8_t *p, size_t len)
{
    CLEANUP_FREE NbdOptMeta *m = XNEW(NbdOptMeta);
    NbdOptError err;

    if (!nbd_parse_opt_meta(p, len, m, &err)) {
        return s_err(s->fd, opt, err.rep, err.msg);
    }
    if (s->hostile == H_ENDLESS_META) {
        for (;;) {
            if (!s_meta_ctx(s->fd, opt, 0, "x:y", 3)) {
                return false;
            }
        }
    }
    if (s->hostile == H_META_NUL) {
        return s_meta_ctx(s->fd, opt, 1, "base\0x", 6) &&
               s_reply(s->fd, opt, NBD_REP_ACK, NULL, 0);
    }
    if (s->hostile == H_UNASKED_CONTEXT) {
        return s_meta_ctx(s->fd, opt, 9, "other:ctx", 9) &&
               s_reply(s->fd, opt, NBD_REP_ACK, NULL, 0);
    }
    for (size_t i = 0; i < s->n_contexts; i++) {
        const char *c = s->contexts[i];
        bool match = false;
        size_t pos = m->queries_off;

        if (m->nqueries == 0 && opt == NBD_OPT_LIST_META_CONTEXT) {
            match = !(s->hide_qemu && strncmp(c, "qemu:", 5) == 0);
        }
        for (uint32_t q = 0; q < m->nqueries; q++) {
            const char *qs;
            uint32_t ql;

            nbd_meta_next_query(p, &pos, &qs, &ql);
            if ((ql == strlen(c) && memcmp(qs, c, ql) == 0) ||
                (ql > 0 && qs[ql - 1] == ':' && strncmp(c, qs, ql) == 0)) {
                match = true;
            }
        }
        if (match && !s_meta_ctx(s->fd, opt,
                                 opt == NBD_OPT_SET_META_CONTEXT ? i + 1 : 0,
                                 c, strlen(c))) {
            return false;
        }
    }
    return s_reply(s->fd, opt, NBD_REP_ACK, NULL, 0);
}

/* INFO/GO.  Returns 1 when GO entered transmission, 0 to go on, -1 on
 * an I/O error. */
static int s_info_go(Srv *s, uint32_t opt, const uint8_t *p, size_t len)
{
    CLEANUP_FREE NbdOptInfo *in = XNEW(NbdOptInfo);
    NbdOptError err;
    const SrvExport *e;
    NbdRepInfo ri = { .type = NBD_INFO_EXPORT };
    NbdRepInfo bs = { .type = NBD_INFO_BLOCK_SIZE, .min_block = 1,
                      .pref_block = 4096, .max_payload = 32 << 20 };
    int fd = s->fd;

    if (!(opt == NBD_OPT_GO ? s->go : s->info)) {
        return s_err(fd, opt, NBD_REP_ERR_UNSUP, NULL) ? 0 : -1;
    }
    if (!nbd_parse_opt_info(p, len, in, &err)) {
        return s_err(fd, opt, err.rep, err.msg) ? 0 : -1;
    }
    if (opt == NBD_OPT_GO) {
        strcpy(s->go_name, in->name);
        s->go_wanted_name = in->want_name;
        s->go_wanted_desc = in->want_description;
        s->go_wanted_bs = in->want_block_size;
    }
    e = s_find(s, in->name);
    if (!e) {
        return s_err(fd, opt, NBD_REP_ERR_UNKNOWN, "no such export") ? 0
                                                                      : -1;
    }
    switch (s->hostile) {
    case H_BS_MIN_GT_MAX:
        bs.min_block = 4096;
        bs.max_payload = 512;
        break;
    case H_BS_NOT_POW2:
        bs.min_block = 3;
        break;
    case H_UNEXPECTED_TYPE:
        return s_reply(fd, opt, NBD_REP_SERVER, "\0\0\0\0", 4) ? 0 : -1;
    case H_INFO_NAME_NUL:
        return s_info_str(fd, opt, NBD_INFO_NAME, "a\0b", 3) &&
               s_reply(fd, opt, NBD_REP_ACK, NULL, 0) ? 0 : -1;
    case H_ENDLESS_INFO:
        for (;;) {
            if (!s_info(fd, opt, &bs)) {
                return -1;
            }
        }
    default:
        break;
    }
    ri.size = e->size;
    ri.tflags = e->flags;
    if (s->hostile != H_NO_INFO_EXPORT && !s_info(fd, opt, &ri)) {
        return -1;
    }
    if (s->hostile == H_SIZE_CHANGE) {
        ri.size += 512;
        if (!s_info(fd, opt, &ri)) {
            return -1;
        }
    }
    if (in->want_block_size && !s_info(fd, opt, &bs)) {
        return -1;
    }
    if (in->want_name &&
        !s_info_str(fd, opt, NBD_INFO_NAME, e->name, strlen(e->name))) {
        return -1;
    }
    if (in->want_description && e->desc &&
        !s_info_str(fd, opt, NBD_INFO_DESCRIPTION, e->desc,
                    strlen(e->desc))) {
        return -1;
    }
    /* An unknown information type must be ignored. */
    if (!s_info_str(fd, opt, 0x4242, "junk", 4)) {
        return -1;
    }
    if (!s_reply(fd, opt, NBD_REP_ACK, NULL, 0)) {
        return -1;
    }
    if (opt == NBD_OPT_GO) {
        s->in_transmission = true;
        return 1;
    }
    return 0;
}

static bool s_list(Srv *s)
{
    uint8_t buf[2 * NBD_MAX_STRING + 4];
    int fd = s->fd;

    if (!s->list) {
        return s_err(fd, NBD_OPT_LIST, NBD_REP_ERR_UNSUP, NULL);
    }
    if (s->hostile == H_ENDLESS_LIST) {
        NbdRepServer rs = { .name = nbd_str("again") };
        ssize_t len = nbd_encode_rep_server(buf, sizeof(buf), &rs);

        for (;;) {
            if (!s_reply(fd, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                         (size_t)len)) {
                return false;
            }
        }
    }
    if (s->hostile == H_LIST_NAME_NUL) {
        return s_reply(fd, NBD_OPT_LIST, NBD_REP_SERVER,
                       "\0\0\0\3a\0b", 7);
    }
    for (size_t i = 0; i < s->n_exports; i++) {
        NbdRepServer rs = { .name = nbd_str(s->exports[i].name),
                            .desc = nbd_str(s->exports[i].desc
                                                ? s->exports[i].desc
                                                : "") };
        ssize_t len = nbd_encode_rep_server(buf, sizeof(buf), &rs);

        if (!s_reply(fd, NBD_OPT_LIST, NBD_REP_SERVER, buf, (size_t)len)) {
            return false;
        }
    }
    return s_reply(fd, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* Hostile replies to the first option the client sends. */
static void s_first_reply_hostile(Srv *s, uint32_t opt)
{
    uint8_t hdr[NBD_OPT_REPLY_HDR_SIZE];

    switch (s->hostile) {
    case H_OVERSIZED:
        nbd_encode_opt_reply_hdr(hdr, opt, NBD_REP_INFO,
                                 NBD_MAX_OPTION_LEN + 1);
        s_write(s->fd, hdr, sizeof(hdr));
        break;
    case H_WRONG_OPT:
        s_reply(s->fd, opt + 1, NBD_REP_ACK, NULL, 0);
        break;
    case H_BAD_MAGIC:
        nbd_encode_opt_reply_hdr(hdr, opt, NBD_REP_ACK, 0);
        hdr[0] ^= 0xff;
        s_write(s->fd, hdr, sizeof(hdr));
        break;
    case H_TRUNCATED:
        nbd_encode_opt_reply_hdr(hdr, opt, NBD_REP_ERR_POLICY, 100);
        s_write(s->fd, hdr, sizeof(hdr));
        s_write(s->fd, "short", 5);
        break;
    case H_ACK_WITH_DATA:
        s_reply(s->fd, opt, NBD_REP_ACK, "data", 4);
        break;
    default:
        break;
    }
}

static void *srv_main(void *opaque)
{
    Srv *s = opaque;
    CLEANUP_FREE uint8_t *buf = xmalloc(NBD_MAX_OPTION_LEN);
    uint8_t g[NBD_GREETING_SIZE];
    uint8_t cf[NBD_CLIENT_FLAGS_SIZE];
    int fd = s->fd;

    nbd_encode_server_greeting(g, s->hflags);
    if (s->hostile == H_BAD_GREETING) {
        memcpy(g, "HTTP/1.1", 8);
    } else if (s->hostile == H_OLDSTYLE) {
        put_be64(g + 8, 0x00420281861253ULL);
    }
    if (!s_write(fd, g, sizeof(g)) || !s_read(fd, cf, sizeof(cf))) {
        return NULL;
    }
    s->cflags = get_be32(cf);
    for (;;) {
        uint8_t hdr[NBD_OPT_HDR_SIZE];
        NbdOptHdr h;
        int rc = 0;
        bool ok = true;

        if (!s_read(fd, hdr, sizeof(hdr)) ||
            !nbd_decode_opt_hdr(hdr, sizeof(hdr), &h) ||
            h.len > NBD_MAX_OPTION_LEN || !s_read(fd, buf, h.len)) {
            return NULL;
        }
        if (s->n_opts < MAX_OPTS) {
            s->opts[s->n_opts++] = h.opt;
        }
        if (s->hostile == H_SILENT) {
            continue;
        }
        if (s->n_opts == 1 && s->hostile >= H_OVERSIZED &&
            s->hostile <= H_ACK_WITH_DATA) {
            s_first_reply_hostile(s, h.opt);
            return NULL;
        }
        switch (h.opt) {
        case NBD_OPT_STARTTLS:
            ok = s->starttls ? s_reply(fd, h.opt, NBD_REP_ACK, NULL, 0)
                             : s_err(fd, h.opt, NBD_REP_ERR_POLICY,
                                     "TLS is not for you");
            break;
        case NBD_OPT_EXTENDED_HEADERS:
            ok = s->ext ? s_reply(fd, h.opt, NBD_REP_ACK, NULL, 0)
                        : s_err(fd, h.opt, NBD_REP_ERR_UNSUP, NULL);
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            ok = s->sr ? s_reply(fd, h.opt, NBD_REP_ACK, NULL, 0)
                       : s_err(fd, h.opt, NBD_REP_ERR_UNSUP, "no");
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            ok = s_meta(s, h.opt, buf, h.len);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            rc = s_info_go(s, h.opt, buf, h.len);
            ok = rc >= 0;
            break;
        case NBD_OPT_LIST:
            ok = s_list(s);
            break;
        case NBD_OPT_EXPORT_NAME: {
            uint8_t r[NBD_EXPORT_NAME_REPLY_SIZE];
            NbdExportNameReply er;
            const SrvExport *e;

            memcpy(s->go_name, buf, MIN(h.len, (uint32_t)NBD_MAX_STRING));
            e = s_find(s, s->go_name);
            if (!e) {
                return NULL;        /* hang up, as the spec says */
            }
            er.size = e->size;
            er.tflags = e->flags;
            s_write(fd, r, nbd_encode_export_name_reply(
                        r, s->cflags & NBD_FLAG_C_NO_ZEROES, &er));
            s->in_transmission = true;
            return NULL;
        }
        case NBD_OPT_ABORT:
            s_reply(fd, h.opt, NBD_REP_ACK, NULL, 0);
            return NULL;
        default:
            ok = s_err(fd, h.opt, NBD_REP_ERR_UNSUP, NULL);
            break;
        }
        if (!ok || rc == 1) {
            return NULL;
        }
    }
}

/* The thread: accept first when listening, run the script, then close
 * (a client waiting for more sees EOF). */
static void *srv_thread(void *opaque)
{
    Srv *s = opaque;

    if (s->listen_fd >= 0) {
        struct pollfd pfd = { .fd = s->listen_fd, .events = POLLIN };
        SockListener l = { .fd = s->listen_fd };

        if (poll(&pfd, 1, T_TIMEOUT_MS) != 1) {
            return NULL;
        }
        s->fd = sock_accept(&l);
        if (s->fd < 0) {
            return NULL;
        }
        /* sock_accept gives a non-blocking socket; the script blocks. */
        fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) & ~O_NONBLOCK);
    }
    srv_main(s);
    close(s->fd);
    s->fd = -1;
    return NULL;
}

static const char *const std_contexts[] = {
    "base:allocation", "qemu:allocation-depth",
};
static const SrvExport std_exports[] = {
    { .name = "disk", .desc = "the disk", .size = 1 << 20,
      .flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH },
    { .name = "ro", .size = 65536,
      .flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY },
};

/* A well-behaved modern server. */
static void srv_init(Srv *s)
{
    memset(s, 0, sizeof(*s));
    s->hflags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
    s->ext = s->sr = s->go = s->info = s->list = true;
    s->contexts = std_contexts;
    s->n_contexts = ARRAY_SIZE(std_contexts);
    s->exports = std_exports;
    s->n_exports = ARRAY_SIZE(std_exports);
    s->fd = s->listen_fd = -1;
}

/* Start s on one end of a socketpair; returns the other end. */
static int srv_start(Srv *s)
{
    int sv[2];

    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                               sv) == 0);
    s->fd = sv[0];
    CU_ASSERT_FATAL(pthread_create(&s->th, NULL, srv_thread, s) == 0);
    return sv[1];
}

static void srv_join(Srv *s)
{
    pthread_join(s->th, NULL);
}

/* Run the handshake against s; the client end is closed before the
 * server is joined (a server stuck writing then sees EPIPE). */
static bool run_handshake(Srv *s, const NbdClientOpts *o,
                          NbdExportInfo *info, Error **errp)
{
    NbdClientXport xp;
    bool ok;

    nbd_client_xport_init_plain(&xp, srv_start(s), o->timeout_ms);
    ok = nbd_client_handshake(&xp, o, info, errp);
    xp.ops->close(&xp);
    srv_join(s);
    return ok;
}

static bool run_list(Srv *s, NbdExportList *l, Error **errp)
{
    NbdClientOpts o = { .timeout_ms = T_TIMEOUT_MS };
    SockAddr addr = { .type = SOCK_ADDR_FD };
    bool ok;

    addr.fd = srv_start(s);
    ok = nbd_client_list(&addr, &o, l, errp);
    srv_join(s);
    return ok;
}

static bool err_has(const Error *err, const char *needle)
{
    if (!err) {
        fprintf(stderr, "no error, wanted '%s'\n", needle);
        return false;
    }
    if (!strstr(error_get_pretty(err), needle)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", error_get_pretty(err),
                needle);
        return false;
    }
    return true;
}

/* A handshake that must fail with an error containing needle. */
static void expect_fail(Srv *s, const NbdClientOpts *o, const char *needle)
{
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;

    CU_ASSERT_FALSE(run_handshake(s, o, &info, &err));
    CU_ASSERT_TRUE(err_has(err, needle));
    /* Cleared on failure. */
    CU_ASSERT_PTR_NULL(info.name);
    CU_ASSERT_EQUAL(info.n_contexts, 0);
}

static void expect_hostile(Hostile h, const char *needle)
{
    static const char *const want[] = { "base:allocation" };
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS,
                        .meta_contexts = want, .n_meta_contexts = 1 };
    Srv s;

    srv_init(&s);
    s.hostile = h;
    expect_fail(&s, &o, needle);
}

static void expect_list_fail(Srv *s, const char *needle)
{
    NbdExportList l;
    CLEANUP_ERROR Error *err = NULL;

    CU_ASSERT_FALSE(run_list(s, &l, &err));
    CU_ASSERT_TRUE(err_has(err, needle));
    CU_ASSERT_EQUAL(l.n, 0);
    CU_ASSERT_PTR_NULL(l.exports);
}

/* ---- good paths ------------------------------------------------------- */

static void test_go_extended(void)
{
    static const char *const want[] = {
        "base:allocation", "qemu:dirty-bitmap:b0", "qemu:allocation-depth",
    };
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS,
                        .meta_contexts = want, .n_meta_contexts = 3 };
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    Srv s;

    srv_init(&s);
    CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
    CU_ASSERT_EQUAL(s.cflags, NBD_FLAG_C_FIXED_NEWSTYLE |
                              NBD_FLAG_C_NO_ZEROES);
    /* Extended headers accepted: no STRUCTURED_REPLY asked. */
    CU_ASSERT_EQUAL(s.n_opts, 3);
    CU_ASSERT_EQUAL(s.opts[0], NBD_OPT_EXTENDED_HEADERS);
    CU_ASSERT_EQUAL(s.opts[1], NBD_OPT_SET_META_CONTEXT);
    CU_ASSERT_EQUAL(s.opts[2], NBD_OPT_GO);
    CU_ASSERT_TRUE(s.in_transmission);
    CU_ASSERT_STRING_EQUAL(s.go_name, "disk");
    CU_ASSERT_TRUE(s.go_wanted_name && s.go_wanted_desc && s.go_wanted_bs);
    CU_ASSERT_TRUE(info.extended);
    CU_ASSERT_TRUE(info.structured);
    CU_ASSERT_STRING_EQUAL(info.name, "disk");
    CU_ASSERT_STRING_EQUAL(info.description, "the disk");
    CU_ASSERT_TRUE(info.has_size);
    CU_ASSERT_EQUAL(info.size, 1 << 20);
    CU_ASSERT_EQUAL(info.flags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH);
    CU_ASSERT_TRUE(info.has_block_size);
    CU_ASSERT_EQUAL(info.min_block, 1);
    CU_ASSERT_EQUAL(info.opt_block, 4096);
    CU_ASSERT_EQUAL(info.max_block, 32 << 20);
    /* The bitmap the server does not have is simply not selected. */
    CU_ASSERT_EQUAL_FATAL(info.n_contexts, 2);
    CU_ASSERT_STRING_EQUAL(info.contexts[0].name, "base:allocation");
    CU_ASSERT_EQUAL(info.contexts[0].id, 1);
    CU_ASSERT_STRING_EQUAL(info.contexts[1].name, "qemu:allocation-depth");
    CU_ASSERT_EQUAL(info.contexts[1].id, 2);
    nbd_export_info_clear(&info);
}

static void test_go_structured_fallback(void)
{
    NbdClientOpts o = { .export_name = "ro", .timeout_ms = T_TIMEOUT_MS };
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    Srv s;

    srv_init(&s);
    s.ext = false;
    CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
    CU_ASSERT_EQUAL(s.n_opts, 3);
    CU_ASSERT_EQUAL(s.opts[0], NBD_OPT_EXTENDED_HEADERS);
    CU_ASSERT_EQUAL(s.opts[1], NBD_OPT_STRUCTURED_REPLY);
    CU_ASSERT_EQUAL(s.opts[2], NBD_OPT_GO);
    CU_ASSERT_FALSE(info.extended);
    CU_ASSERT_TRUE(info.structured);
    CU_ASSERT_PTR_NULL(info.description);
    CU_ASSERT_EQUAL(info.flags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY);
    CU_ASSERT_EQUAL(info.n_contexts, 0);
    nbd_export_info_clear(&info);
}

static void test_go_simple_only(void)
{
    static const char *const want[] = { "base:allocation" };
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS,
                        .no_structured = true, .meta_contexts = want,
                        .n_meta_contexts = 1 };
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    Srv s;

    /* Asked for nothing: neither negotiation nor contexts are sent. */
    srv_init(&s);
    CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
    CU_ASSERT_EQUAL(s.n_opts, 1);
    CU_ASSERT_EQUAL(s.opts[0], NBD_OPT_GO);
    CU_ASSERT_FALSE(info.structured || info.extended);
    CU_ASSERT_EQUAL(info.n_contexts, 0);
    nbd_export_info_clear(&info);

    /* A server with neither extension. */
    o.no_structured = false;
    srv_init(&s);
    s.ext = s.sr = false;
    CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
    CU_ASSERT_EQUAL(s.n_opts, 3);
    CU_ASSERT_EQUAL(s.opts[2], NBD_OPT_GO);
    CU_ASSERT_FALSE(info.structured || info.extended);
    CU_ASSERT_EQUAL(info.n_contexts, 0);
    nbd_export_info_clear(&info);
}

/* No OPT_GO (nbd-server's older behaviour): OPT_EXPORT_NAME, with the
 * short reply after NO_ZEROES and the padded one without. */
static void test_export_name_fallback(void)
{
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS };
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    Srv s;

    for (int zeroes = 0; zeroes < 2; zeroes++) {
        srv_init(&s);
        s.go = s.info = s.ext = s.sr = false;
        if (zeroes) {
            s.hflags = NBD_FLAG_FIXED_NEWSTYLE;
        }
        CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
        CU_ASSERT_EQUAL(s.cflags, zeroes ? NBD_FLAG_C_FIXED_NEWSTYLE
                                         : NBD_FLAG_C_FIXED_NEWSTYLE |
                                           NBD_FLAG_C_NO_ZEROES);
        CU_ASSERT_EQUAL(s.opts[s.n_opts - 2], NBD_OPT_GO);
        CU_ASSERT_EQUAL(s.opts[s.n_opts - 1], NBD_OPT_EXPORT_NAME);
        CU_ASSERT_STRING_EQUAL(s.go_name, "disk");
        CU_ASSERT_TRUE(info.has_size);
        CU_ASSERT_EQUAL(info.size, 1 << 20);
        CU_ASSERT_EQUAL(info.flags, NBD_FLAG_HAS_FLAGS |
                                    NBD_FLAG_SEND_FLUSH);
        CU_ASSERT_FALSE(info.has_block_size);
        nbd_export_info_clear(&info);
    }

    /* An unknown name: the server hangs up, which is all it can do. */
    o.export_name = "nope";
    srv_init(&s);
    s.go = false;
    expect_fail(&s, &o, "Requested export not available");
}

static bool fake_starttls(NbdClientXport *xp, void *opaque, Error **errp)
{
    (void)xp;
    (void)errp;
    (*(int *)opaque)++;
    return true;
}

static void test_starttls_hook(void)
{
    int calls = 0;
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS,
                        .starttls = fake_starttls,
                        .starttls_opaque = &calls };
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    Srv s;

    srv_init(&s);
    s.starttls = true;
    CU_ASSERT_TRUE_FATAL(run_handshake(&s, &o, &info, &err));
    CU_ASSERT_EQUAL(calls, 1);
    CU_ASSERT_EQUAL(s.opts[0], NBD_OPT_STARTTLS);
    CU_ASSERT_TRUE(s.in_transmission);
    nbd_export_info_clear(&info);

    /* A refusal fails the handshake: no clear-text fallback. */
    srv_init(&s);
    expect_fail(&s, &o, "Server rejected request to start TLS");
    CU_ASSERT_EQUAL(calls, 1);
    CU_ASSERT_EQUAL(s.n_opts, 2);
    CU_ASSERT_EQUAL(s.opts[1], NBD_OPT_ABORT);
}

static void test_go_errors(void)
{
    NbdClientOpts o = { .export_name = "nope", .timeout_ms = T_TIMEOUT_MS };
    Srv s;

    srv_init(&s);
    expect_fail(&s, &o, "Requested export not available (server "
                        "reported: no such export)");
    /* The client said goodbye. */
    CU_ASSERT_EQUAL(s.opts[s.n_opts - 1], NBD_OPT_ABORT);

    o.export_name = NULL;   /* "" */
    srv_init(&s);
    expect_fail(&s, &o, "Requested export not available");
    CU_ASSERT_STRING_EQUAL(s.go_name, "");
}

/* Over real sockets, through nbd_client_connect(): unix and TCP. */
static void connect_one(const SockAddr *listen_addr, bool tcp)
{
    SockListenerVec v = { 0 };
    CLEANUP_ERROR Error *err = NULL;
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = T_TIMEOUT_MS };
    NbdClientXport xp;
    NbdExportInfo info;
    SockAddr addr = *listen_addr;
    char port[16];
    Srv s;

    if (!sock_listen(listen_addr, &v, &err)) {
        fprintf(stderr, "skipped: cannot listen on %s (%s)\n",
                tcp ? listen_addr->host : "a unix socket",
                error_get_pretty(err));
        return;
    }
    if (tcp) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        CU_ASSERT_FATAL(getsockname(v.ptr[0].fd, (struct sockaddr *)&ss,
                                    &sl) == 0);
        snprintf(port, sizeof(port), "%u",
                 ss.ss_family == AF_INET6
                     ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                     : ntohs(((struct sockaddr_in *)&ss)->sin_port));
        addr.port = port;
    }
    srv_init(&s);
    s.listen_fd = v.ptr[0].fd;
    CU_ASSERT_FATAL(pthread_create(&s.th, NULL, srv_thread, &s) == 0);
    CU_ASSERT_TRUE(nbd_client_connect(&addr, &o, &xp, &info, &err));
    if (!err) {
        CU_ASSERT_EQUAL(info.size, 1 << 20);
        CU_ASSERT_TRUE(info.extended);
        xp.ops->close(&xp);
        nbd_export_info_clear(&info);
    }
    srv_join(&s);
    CU_ASSERT_TRUE(s.in_transmission);
    sock_listeners_close(&v);
    SockListenerVec_reset(&v);
}

static void test_connect_sockets(void)
{
    CLEANUP_FREE char *path = xasprintf("%s/nbd.sock", unit_tmpdir());
    SockAddr ux = { .type = SOCK_ADDR_UNIX, .path = path };
    SockAddr v4 = { .type = SOCK_ADDR_INET, .host = "127.0.0.1",
                    .port = "0" };
    SockAddr v6 = { .type = SOCK_ADDR_INET, .host = "::1", .port = "0" };
    NbdClientOpts o = { .timeout_ms = T_TIMEOUT_MS };
    NbdClientXport xp;
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;

    connect_one(&ux, false);
    connect_one(&v4, true);
    connect_one(&v6, true);

    /* Nobody listening: the connect error, and *info cleared. */
    unlink(path);
    CU_ASSERT_FALSE(nbd_client_connect(&ux, &o, &xp, &info, &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    CU_ASSERT_PTR_NULL(info.name);
}

/* A real server: nbdkit -s (serving on its stdin/stdout) on one end of
 * a socketpair, the handshake on the other. */
static void test_nbdkit(void)
{
    static const char *const want[] = {
        "base:allocation", "qemu:allocation-depth",
    };
    NbdClientOpts o = { .export_name = "", .timeout_ms = T_TIMEOUT_MS,
                        .meta_contexts = want, .n_meta_contexts = 2 };
    NbdClientXport xp;
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    int sv[2], status;
    pid_t pid;

    if (system("command -v nbdkit >/dev/null 2>&1") != 0) {
        fprintf(stderr, "skipped: nbdkit is not installed\n");
        return;
    }
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
                               sv) == 0);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        dup2(sv[0], 0);
        dup2(sv[0], 1);
        execlp("nbdkit", "nbdkit", "-s", "--filter=exportname", "memory",
               "3M", "exportdesc=fixed:kit", (char *)NULL);
        _exit(127);
    }
    close(sv[0]);
    nbd_client_xport_init_plain(&xp, sv[1], T_TIMEOUT_MS);
    CU_ASSERT_TRUE(nbd_client_handshake(&xp, &o, &info, &err));
    if (err) {
        fprintf(stderr, "nbdkit: %s\n", error_get_pretty(err));
    } else {
        CU_ASSERT_EQUAL(info.size, 3 << 20);
        CU_ASSERT_TRUE(info.flags & NBD_FLAG_HAS_FLAGS);
        CU_ASSERT_TRUE(info.structured);
        CU_ASSERT_STRING_EQUAL(info.name, "");
        CU_ASSERT_PTR_NOT_NULL(info.description);
        if (info.description) {
            CU_ASSERT_STRING_EQUAL(info.description, "kit");
        }
        /* nbdkit has no qemu: contexts. */
        CU_ASSERT_EQUAL_FATAL(info.n_contexts, 1);
        CU_ASSERT_STRING_EQUAL(info.contexts[0].name, "base:allocation");
        nbd_export_info_clear(&info);
    }
    xp.ops->close(&xp);     /* nbdkit -s exits at the end of its input */
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
}

/* ---- hostile servers -------------------------------------------------- */

static void test_bad_greetings(void)
{
    NbdClientOpts o = { .timeout_ms = T_TIMEOUT_MS };
    Srv s;

    srv_init(&s);
    s.hostile = H_BAD_GREETING;
    expect_fail(&s, &o, "Invalid magic received");
    srv_init(&s);
    s.hostile = H_OLDSTYLE;
    expect_fail(&s, &o, "oldstyle");
    srv_init(&s);
    s.hflags = NBD_FLAG_NO_ZEROES;
    expect_fail(&s, &o, "does not support fixed newstyle");
}

static void test_hostile_replies(void)
{
    expect_hostile(H_OVERSIZED, "65537 bytes long, more than the 65536");
    expect_hostile(H_WRONG_OPT, "Unexpected option type 12 (unknown "
                                "option) in the reply, expected 11 "
                                "(NBD_OPT_EXTENDED_HEADERS)");
    expect_hostile(H_BAD_MAGIC, "Unexpected option reply magic");
    expect_hostile(H_TRUNCATED, "Server closed the connection");
    expect_hostile(H_ACK_WITH_DATA, "NBD_REP_ACK to "
                                    "NBD_OPT_EXTENDED_HEADERS carries 4");
    expect_hostile(H_INFO_NAME_NUL, "invalid NBD_REP_INFO of type 1");
    expect_hostile(H_BS_MIN_GT_MAX, "maximum block size 512");
    expect_hostile(H_BS_NOT_POW2, "minimum block size 3 is not a power");
    expect_hostile(H_SIZE_CHANGE, "changed the export size");
    expect_hostile(H_NO_INFO_EXPORT, "omitted NBD_INFO_EXPORT");
    expect_hostile(H_UNASKED_CONTEXT, "'other:ctx', which the client did "
                                      "not ask for");
    expect_hostile(H_UNEXPECTED_TYPE, "Unexpected reply type 2 to "
                                      "NBD_OPT_GO");
    expect_hostile(H_META_NUL, "invalid meta context");
    expect_hostile(H_ENDLESS_INFO, "Server sent more than 1024 "
                                   "NBD_REP_INFO replies to NBD_OPT_GO");
}

static void test_timeout(void)
{
    NbdClientOpts o = { .timeout_ms = 200 };
    Srv s;

    srv_init(&s);
    s.hostile = H_SILENT;
    expect_fail(&s, &o, "Timed out reading the reply to "
                        "NBD_OPT_EXTENDED_HEADERS");
}

static void test_long_export_name(void)
{
    CLEANUP_FREE char *name = xmalloc(NBD_MAX_STRING + 2);
    NbdClientOpts o = { .timeout_ms = T_TIMEOUT_MS };
    NbdClientXport xp;
    NbdExportInfo info;
    CLEANUP_ERROR Error *err = NULL;
    int sv[2];

    memset(name, 'x', NBD_MAX_STRING + 1);
    name[NBD_MAX_STRING + 1] = '\0';
    o.export_name = name;
    /* Refused before a byte is read or sent. */
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    nbd_client_xport_init_plain(&xp, sv[1], o.timeout_ms);
    CU_ASSERT_FALSE(nbd_client_handshake(&xp, &o, &info, &err));
    CU_ASSERT_TRUE(err_has(err, "longer than 4096"));
    xp.ops->close(&xp);
    close(sv[0]);
}

/* ---- list mode -------------------------------------------------------- */

static char *print_list(const NbdExportList *l)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    nbd_export_list_print(f, l);
    fclose(f);
    return text;
}

static void test_list(void)
{
    NbdExportList l;
    CLEANUP_ERROR Error *err = NULL;
    CLEANUP_FREE char *text = NULL;
    Srv s;

    srv_init(&s);
    /* A QEMU 3.0-like server: the query-less list lacks "qemu:". */
    s.hide_qemu = true;
    CU_ASSERT_TRUE_FATAL(run_list(&s, &l, &err));
    CU_ASSERT_EQUAL(s.opts[0], NBD_OPT_STRUCTURED_REPLY);
    CU_ASSERT_EQUAL(s.opts[1], NBD_OPT_LIST);
    CU_ASSERT_EQUAL(s.opts[s.n_opts - 1], NBD_OPT_ABORT);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_TRUE(l.exports[0].structured);
    text = print_list(&l);
    CU_ASSERT_STRING_EQUAL(text,
        "exports available: 2\n"
        " export: 'disk'\n"
        "  description: the disk\n"
        "  size:  1048576\n"
        "  flags: 0x5 ( flush )\n"
        "  min block: 1\n"
        "  opt block: 4096\n"
        "  max block: 33554432\n"
        "  available meta contexts: 2\n"
        "   base:allocation\n"
        "   qemu:allocation-depth\n"
        " export: 'ro'\n"
        "  size:  65536\n"
        "  flags: 0x3 ( readonly )\n"
        "  min block: 1\n"
        "  opt block: 4096\n"
        "  max block: 33554432\n"
        "  available meta contexts: 2\n"
        "   base:allocation\n"
        "   qemu:allocation-depth\n");
    nbd_export_list_clear(&l);
}

static void test_list_fallbacks(void)
{
    NbdExportList l;
    CLEANUP_ERROR Error *err = NULL;
    char *text;
    Srv s;

    /* No OPT_INFO: names and descriptions only; no structured replies:
     * no meta contexts asked. */
    srv_init(&s);
    s.info = false;
    s.sr = false;
    CU_ASSERT_TRUE_FATAL(run_list(&s, &l, &err));
    text = print_list(&l);
    CU_ASSERT_STRING_EQUAL(text,
        "exports available: 2\n"
        " export: 'disk'\n"
        "  description: the disk\n"
        " export: 'ro'\n");
    free(text);
    nbd_export_list_clear(&l);
    for (size_t i = 0; i < s.n_opts; i++) {
        CU_ASSERT_NOT_EQUAL(s.opts[i], NBD_OPT_LIST_META_CONTEXT);
    }

    /* No OPT_LIST: an empty list, as qemu-nbd -L shows it. */
    srv_init(&s);
    s.list = false;
    CU_ASSERT_TRUE_FATAL(run_list(&s, &l, &err));
    CU_ASSERT_EQUAL(l.n, 0);
    text = print_list(&l);
    CU_ASSERT_STRING_EQUAL(text, "exports available: 0\n");
    free(text);
    nbd_export_list_clear(&l);
}

static void test_list_hostile(void)
{
    Srv s;

    srv_init(&s);
    s.hostile = H_ENDLESS_LIST;
    expect_list_fail(&s, "Server listed more than 65536 exports");
    srv_init(&s);
    s.hostile = H_ENDLESS_META;
    expect_list_fail(&s, "Server sent more than 4096 meta contexts");
    srv_init(&s);
    s.hostile = H_LIST_NAME_NUL;
    expect_list_fail(&s, "invalid NBD_REP_SERVER");
    srv_init(&s);
    s.hostile = H_BS_NOT_POW2;
    expect_list_fail(&s, "Export 'disk': Server minimum block size 3");
    srv_init(&s);
    s.hostile = H_OVERSIZED;
    expect_list_fail(&s, "more than the 65536");
}

static int suite_init(void)
{
    /* A client that hangs up on the script must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static CU_TestInfo client_tests[] = {
    { "go_extended", test_go_extended },
    { "go_structured_fallback", test_go_structured_fallback },
    { "go_simple_only", test_go_simple_only },
    { "export_name_fallback", test_export_name_fallback },
    { "starttls_hook", test_starttls_hook },
    { "go_errors", test_go_errors },
    { "connect_sockets", test_connect_sockets },
    { "nbdkit", test_nbdkit },
    { "bad_greetings", test_bad_greetings },
    { "hostile_replies", test_hostile_replies },
    { "timeout", test_timeout },
    { "long_export_name", test_long_export_name },
    { "list", test_list },
    { "list_fallbacks", test_list_fallbacks },
    { "list_hostile", test_list_hostile },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-client", .pInitFunc = suite_init,
      .pTests = client_tests },
    CU_SUITE_INFO_NULL,
};
