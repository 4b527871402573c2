/* test-nbd-proto.c - NBD wire encoding and the option parsers, fed from
 * buffers (well-formed, truncated, oversized and hostile). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cunit-main.h"
#include "nbd/proto.h"
#include "util/util.h"

/* Build an INFO/GO payload: name, then n info items. */
static size_t build_info(uint8_t *buf, const char *name, size_t namelen,
                         const uint16_t *items, uint16_t n)
{
    size_t pos = 0;

    put_be32(buf, (uint32_t)namelen);
    pos += 4;
    memcpy(buf + pos, name, namelen);
    pos += namelen;
    put_be16(buf + pos, n);
    pos += 2;
    for (uint16_t i = 0; i < n; i++, pos += 2) {
        put_be16(buf + pos, items[i]);
    }
    return pos;
}

static size_t build_meta(uint8_t *buf, const char *name,
                         const char *const *queries, uint32_t n)
{
    size_t pos = 0;
    size_t namelen = strlen(name);

    put_be32(buf, (uint32_t)namelen);
    pos += 4;
    memcpy(buf + pos, name, namelen);
    pos += namelen;
    put_be32(buf + pos, n);
    pos += 4;
    for (uint32_t i = 0; i < n; i++) {
        size_t ql = strlen(queries[i]);

        put_be32(buf + pos, (uint32_t)ql);
        memcpy(buf + pos + 4, queries[i], ql);
        pos += 4 + ql;
    }
    return pos;
}

static void test_errno(void)
{
    CU_ASSERT_EQUAL(nbd_errno(0), 0);
    CU_ASSERT_EQUAL(nbd_errno(EPERM), NBD_EPERM);
    CU_ASSERT_EQUAL(nbd_errno(-EROFS), NBD_EPERM);
    CU_ASSERT_EQUAL(nbd_errno(-EIO), NBD_EIO);
    CU_ASSERT_EQUAL(nbd_errno(EDQUOT), NBD_ENOSPC);
    CU_ASSERT_EQUAL(nbd_errno(EFBIG), NBD_ENOSPC);
    CU_ASSERT_EQUAL(nbd_errno(-ENOTSUP), NBD_ENOTSUP);
    CU_ASSERT_EQUAL(nbd_errno(EOPNOTSUPP), NBD_ENOTSUP);
    CU_ASSERT_EQUAL(nbd_errno(ESHUTDOWN), NBD_ESHUTDOWN);
    /* Never leak other errno values. */
    CU_ASSERT_EQUAL(nbd_errno(-ENOENT), NBD_EINVAL);
    CU_ASSERT_EQUAL(nbd_errno(EBADF), NBD_EINVAL);
    CU_ASSERT_EQUAL(nbd_errno(100000), NBD_EINVAL);
}

static void test_request_roundtrip(void)
{
    uint8_t buf[NBD_EXT_REQ_SIZE];
    NbdRequest in = {
        .flags = NBD_CMD_FLAG_FUA, .type = NBD_CMD_WRITE,
        .cookie = 0x0123456789abcdefULL, .offset = 1ULL << 40,
        .length = 0x12345678,
    };
    NbdRequest out;

    CU_ASSERT_EQUAL(nbd_encode_request(buf, false, &in), NBD_REQ_SIZE);
    CU_ASSERT_TRUE(nbd_decode_request(buf, false, &out));
    CU_ASSERT_EQUAL(out.flags, in.flags);
    CU_ASSERT_EQUAL(out.type, in.type);
    CU_ASSERT_EQUAL(out.cookie, in.cookie);
    CU_ASSERT_EQUAL(out.offset, in.offset);
    CU_ASSERT_EQUAL(out.length, in.length);
    /* A compact request is not an extended one. */
    CU_ASSERT_FALSE(nbd_decode_request(buf, true, &out));

    in.length = 5ULL << 33;
    CU_ASSERT_EQUAL(nbd_encode_request(buf, true, &in), NBD_EXT_REQ_SIZE);
    CU_ASSERT_TRUE(nbd_decode_request(buf, true, &out));
    CU_ASSERT_EQUAL(out.length, 5ULL << 33);
    CU_ASSERT_FALSE(nbd_decode_request(buf, false, &out));

    memset(buf, 0xff, sizeof(buf));
    CU_ASSERT_FALSE(nbd_decode_request(buf, false, &out));
    CU_ASSERT_FALSE(nbd_decode_request(buf, true, &out));
}

static void test_encoders(void)
{
    uint8_t buf[64];

    nbd_encode_greeting(buf);
    CU_ASSERT_EQUAL(memcmp(buf, "NBDMAGICIHAVEOPT", 16), 0);
    CU_ASSERT_EQUAL(get_be16(buf + 16), 3);

    CU_ASSERT_EQUAL(nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO,
                                             NBD_REP_ERR_UNKNOWN, 7), 20);
    CU_ASSERT_EQUAL(get_be64(buf), NBD_REP_MAGIC);
    CU_ASSERT_EQUAL(get_be32(buf + 8), NBD_OPT_GO);
    CU_ASSERT_EQUAL(get_be32(buf + 12), 0x80000006U);
    CU_ASSERT_EQUAL(get_be32(buf + 16), 7);

    CU_ASSERT_EQUAL(nbd_encode_simple_reply(buf, NBD_EIO, 42), 16);
    CU_ASSERT_EQUAL(get_be32(buf), NBD_SIMPLE_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be32(buf + 4), 5);
    CU_ASSERT_EQUAL(get_be64(buf + 8), 42);

    CU_ASSERT_EQUAL(nbd_encode_chunk_hdr(buf, false, NBD_REPLY_FLAG_DONE,
                                         NBD_REPLY_TYPE_OFFSET_HOLE, 9, 0,
                                         12), 20);
    CU_ASSERT_EQUAL(get_be32(buf), NBD_STRUCTURED_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be16(buf + 4), 1);
    CU_ASSERT_EQUAL(get_be16(buf + 6), 2);
    CU_ASSERT_EQUAL(get_be64(buf + 8), 9);
    CU_ASSERT_EQUAL(get_be32(buf + 16), 12);

    CU_ASSERT_EQUAL(nbd_encode_chunk_hdr(buf, true, 0,
                                         NBD_REPLY_TYPE_OFFSET_DATA, 9,
                                         4096, 1ULL << 33), 32);
    CU_ASSERT_EQUAL(get_be32(buf), NBD_EXTENDED_REPLY_MAGIC);
    CU_ASSERT_EQUAL(get_be64(buf + 16), 4096);
    CU_ASSERT_EQUAL(get_be64(buf + 24), 1ULL << 33);
}

static void test_info_ok(void)
{
    uint8_t buf[128];
    uint16_t items[] = { NBD_INFO_BLOCK_SIZE, 77, NBD_INFO_NAME,
                         NBD_INFO_BLOCK_SIZE };
    NbdOptInfo info;
    NbdOptError err = { 0 };
    size_t len = build_info(buf, "disk", 4, items, 4);

    CU_ASSERT_TRUE(nbd_parse_opt_info(buf, len, &info, &err));
    CU_ASSERT_STRING_EQUAL(info.name, "disk");
    CU_ASSERT_TRUE(info.want_block_size);
    CU_ASSERT_TRUE(info.want_name);
    CU_ASSERT_FALSE(info.want_description);
    CU_ASSERT_EQUAL(info.ninfos, 4);

    /* Empty name, no items: the default export. */
    len = build_info(buf, "", 0, NULL, 0);
    CU_ASSERT_EQUAL(len, 6);
    CU_ASSERT_TRUE(nbd_parse_opt_info(buf, len, &info, &err));
    CU_ASSERT_STRING_EQUAL(info.name, "");
}

static void test_info_bad(void)
{
    uint8_t buf[128];
    uint16_t items[] = { NBD_INFO_NAME };
    NbdOptInfo info;
    NbdOptError err = { 0 };
    size_t len = build_info(buf, "disk", 4, items, 1);

    /* Every truncation is refused with ERR_INVALID. */
    for (size_t l = 0; l < len; l++) {
        err.rep = 0;
        CU_ASSERT_FALSE(nbd_parse_opt_info(buf, l, &info, &err));
        CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(err.msg);
    }
    /* Trailing garbage. */
    buf[len] = 0;
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len + 1, &info, &err));
    /* Name length pointing past the end, including 0xffffffff. */
    put_be32(buf, 0xffffffffU);
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len, &info, &err));
    put_be32(buf, 5);
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len, &info, &err));
    /* Item count lying about the payload. */
    len = build_info(buf, "disk", 4, items, 1);
    put_be16(buf + 8, 0xffff);
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len, &info, &err));
    /* Embedded NUL in the name. */
    len = build_info(buf, "di\0k", 4, items, 1);
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len, &info, &err));
    CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
}

static void test_info_long_name(void)
{
    static uint8_t buf[NBD_MAX_STRING + 64];
    static char name[NBD_MAX_STRING + 2];
    NbdOptInfo info;
    NbdOptError err = { 0 };
    size_t len;

    memset(name, 'a', sizeof(name));
    len = build_info(buf, name, NBD_MAX_STRING, NULL, 0);
    CU_ASSERT_TRUE(nbd_parse_opt_info(buf, len, &info, &err));
    CU_ASSERT_EQUAL(strlen(info.name), NBD_MAX_STRING);
    len = build_info(buf, name, NBD_MAX_STRING + 1, NULL, 0);
    CU_ASSERT_FALSE(nbd_parse_opt_info(buf, len, &info, &err));
    CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
}

static void test_export_name(void)
{
    char name[NBD_MAX_STRING + 1];
    static uint8_t big[NBD_MAX_STRING + 1];
    NbdOptError err = { 0 };

    CU_ASSERT_TRUE(nbd_parse_opt_export_name((const uint8_t *)"x1", 2, name,
                                             &err));
    CU_ASSERT_STRING_EQUAL(name, "x1");
    CU_ASSERT_TRUE(nbd_parse_opt_export_name(big, 0, name, &err));
    CU_ASSERT_STRING_EQUAL(name, "");
    CU_ASSERT_FALSE(nbd_parse_opt_export_name((const uint8_t *)"a\0b", 3,
                                              name, &err));
    memset(big, 'z', sizeof(big));
    CU_ASSERT_FALSE(nbd_parse_opt_export_name(big, sizeof(big), name, &err));
}

/* Issue 9 item 8: an option without data has no buffer at all (conn.c
 * never allocates one), and the empty name is the default export.  The
 * parser must not hand that NULL to memchr/memcpy (UBSan:
 * nonnull-attribute). */
static void test_export_name_empty_null(void)
{
    char name[NBD_MAX_STRING + 1];
    NbdOptError err = { 0 };
    NbdOptInfo info;
    NbdOptMeta m;

    memset(name, 'x', sizeof(name));
    CU_ASSERT_TRUE(nbd_parse_opt_export_name(NULL, 0, name, &err));
    CU_ASSERT_STRING_EQUAL(name, "");
    /* The other parsers refuse a missing payload without touching it. */
    CU_ASSERT_FALSE(nbd_parse_opt_info(NULL, 0, &info, &err));
    CU_ASSERT_FALSE(nbd_parse_opt_meta(NULL, 0, &m, &err));
}

static void test_meta_ok(void)
{
    uint8_t buf[256];
    const char *q[] = { "base:allocation", "qemu:", "" };
    NbdOptMeta m;
    NbdOptError err = { 0 };
    size_t len = build_meta(buf, "e0", q, 3);
    size_t pos;
    const char *s;
    uint32_t sl;

    CU_ASSERT_TRUE(nbd_parse_opt_meta(buf, len, &m, &err));
    CU_ASSERT_STRING_EQUAL(m.name, "e0");
    CU_ASSERT_EQUAL(m.nqueries, 3);
    pos = m.queries_off;
    for (int i = 0; i < 3; i++) {
        nbd_meta_next_query(buf, &pos, &s, &sl);
        CU_ASSERT_TRUE(nbd_str_eq(s, sl, q[i]));
    }
    CU_ASSERT_EQUAL(pos, len);

    len = build_meta(buf, "", NULL, 0);
    CU_ASSERT_TRUE(nbd_parse_opt_meta(buf, len, &m, &err));
    CU_ASSERT_EQUAL(m.nqueries, 0);
}

static void test_meta_bad(void)
{
    uint8_t buf[256];
    const char *q[] = { "base:allocation", "qemu:allocation-depth" };
    NbdOptMeta m;
    NbdOptError err = { 0 };
    size_t len = build_meta(buf, "e0", q, 2);

    for (size_t l = 0; l < len; l++) {
        err.rep = 0;
        CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, l, &m, &err));
        CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
    }
    buf[len] = 'x';
    CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, len + 1, &m, &err));

    /* A hostile query count (4 billion) fails without walking. */
    len = build_meta(buf, "e0", q, 2);
    put_be32(buf + 6, 0xffffffffU);
    CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, len, &m, &err));
    /* A query length that wraps. */
    len = build_meta(buf, "e0", q, 2);
    put_be32(buf + 10, 0xfffffff0U);
    CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, len, &m, &err));
    /* A NUL inside a query. */
    len = build_meta(buf, "e0", q, 2);
    buf[16] = 0;
    CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, len, &m, &err));
    /* Name length past the end. */
    len = build_meta(buf, "e0", q, 2);
    put_be32(buf, (uint32_t)len);
    CU_ASSERT_FALSE(nbd_parse_opt_meta(buf, len, &m, &err));
}

static void test_check_request(void)
{
    NbdReqLimits lim = {
        .structured = true, .extended = false, .read_only = false,
        .have_contexts = true, .size = 1 << 20,
        .max_payload = NBD_MAX_PAYLOAD,
    };
    NbdRequest r = { .type = NBD_CMD_READ, .offset = 0, .length = 4096 };
    uint64_t payload;
    const char *why = NULL;

    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    CU_ASSERT_EQUAL(payload, 0);
    r.flags = NBD_CMD_FLAG_DF;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    lim.structured = false;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    lim.structured = true;
    r.flags = NBD_CMD_FLAG_REQ_ONE;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    r.flags = 0x8000;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    r.flags = 0;

    /* Bounds, overflow-safe. */
    r.offset = (1 << 20) - 4096;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    r.offset = (1 << 20) - 4095;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    r.offset = UINT64_MAX - 100;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    r.type = NBD_CMD_WRITE;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_ENOSPC);
    CU_ASSERT_EQUAL(payload, 4096);
    r.type = NBD_CMD_WRITE_ZEROES;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_ENOSPC);
    CU_ASSERT_EQUAL(payload, 0);
    r.offset = 0;

    /* Oversized payload. */
    r.type = NBD_CMD_WRITE;
    r.length = NBD_MAX_PAYLOAD + 1;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    CU_ASSERT_EQUAL(payload, NBD_MAX_PAYLOAD + 1);
    r.type = NBD_CMD_READ;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    /* Payload-free commands may exceed it (but not the export). */
    r.type = NBD_CMD_TRIM;
    r.length = 1 << 20;
    lim.max_payload = 4096;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    lim.max_payload = NBD_MAX_PAYLOAD;

    /* Read-only export. */
    lim.read_only = true;
    r.length = 512;
    r.type = NBD_CMD_WRITE;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EPERM);
    CU_ASSERT_EQUAL(payload, 512);
    r.type = NBD_CMD_TRIM;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EPERM);
    r.type = NBD_CMD_WRITE_ZEROES;
    r.flags = NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_NO_HOLE;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EPERM);
    lim.read_only = false;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    r.flags = 0;

    /* Unknown command, block status rules. */
    r.type = 99;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    CU_ASSERT_STRING_EQUAL(why, "unknown command");
    r.type = NBD_CMD_BLOCK_STATUS;
    r.flags = NBD_CMD_FLAG_REQ_ONE;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    r.length = 0;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    r.length = 512;
    lim.have_contexts = false;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    lim.have_contexts = true;
    r.flags = 0;

    /* DISC and FLUSH ignore offset and length. */
    r.type = NBD_CMD_DISC;
    r.offset = UINT64_MAX;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    r.type = NBD_CMD_FLUSH;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    r.offset = 0;

    /* Extended headers: payload only with PAYLOAD_LEN. */
    lim.extended = true;
    r.type = NBD_CMD_WRITE;
    r.length = 4096;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    CU_ASSERT_EQUAL(payload, 0);
    r.flags = NBD_CMD_FLAG_PAYLOAD_LEN;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), 0);
    CU_ASSERT_EQUAL(payload, 4096);
    r.type = NBD_CMD_READ;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
    CU_ASSERT_EQUAL(payload, 4096);
    lim.extended = false;
    CU_ASSERT_EQUAL(nbd_check_request(&r, &lim, &payload, &why), NBD_EINVAL);
}


/* Hostile bytes: random buffers and bit-flipped valid payloads must be
 * either accepted consistently or refused with ERR_INVALID, never read
 * out of bounds (run under ASan/valgrind for the full effect). */
static void test_parsers_random(void)
{
    uint8_t buf[512];
    const char *q[] = { "base:allocation", "qemu:allocation-depth" };
    uint16_t items[] = { NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE };
    unsigned seed = 12345;

    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        NbdOptInfo info;
        NbdOptMeta m;
        NbdOptError err = { 0 };
        uint8_t *copy;

        seed = seed * 1103515245 + 12345;
        if (iter % 2) {
            len = build_meta(buf, "export", q, 2);
        } else {
            len = build_info(buf, "export", 6, items, 2);
        }
        /* flip a few bits, maybe truncate */
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245 + 12345;
            buf[(seed >> 8) % len] ^= 1 << ((seed >> 4) % 8);
        }
        seed = seed * 1103515245 + 12345;
        if (seed % 3 == 0) {
            len = (seed >> 8) % (len + 1);
        }
        /* An exact-size heap copy so overreads are caught by tools. */
        copy = malloc(len ? len : 1);
        memcpy(copy, buf, len);
        if (nbd_parse_opt_info(copy, len, &info, &err)) {
            CU_ASSERT(strlen(info.name) <= NBD_MAX_STRING);
            CU_ASSERT_EQUAL(len, 4 + strlen(info.name) + 2 +
                            2 * (size_t)info.ninfos);
        } else {
            CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
        }
        if (nbd_parse_opt_meta(copy, len, &m, &err)) {
            size_t pos = m.queries_off;

            for (uint32_t i = 0; i < m.nqueries; i++) {
                const char *s;
                uint32_t sl;

                nbd_meta_next_query(copy, &pos, &s, &sl);
                CU_ASSERT(pos <= len);
            }
            CU_ASSERT_EQUAL(pos, len);
        } else {
            CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
        }
        free(copy);
    }
}

/* ---- codec: both directions ------------------------------------------ */

/* Copy len bytes to an exact-size heap block, so that a decoder reading
 * past len is caught by ASan/valgrind. */
static uint8_t *exact(const uint8_t *buf, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);

    memcpy(p, buf, len);
    return p;
}

static bool str_same(NbdStr a, NbdStr b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* A decoded string must point inside the decoded buffer. */
static bool str_inside(NbdStr s, const uint8_t *buf, size_t len)
{
    const uint8_t *p = (const uint8_t *)s.ptr;

    return s.len == 0 || (p >= buf && p + s.len <= buf + len);
}

static void test_greeting(void)
{
    static const uint8_t want[NBD_GREETING_SIZE] = {
        'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C',
        'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0x00, 0x03,
    };
    uint8_t buf[NBD_GREETING_SIZE];
    uint16_t hflags;

    nbd_encode_greeting(buf);
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_EQUAL(nbd_encode_server_greeting(buf, 0x8001),
                    NBD_GREETING_SIZE);
    CU_ASSERT_TRUE(nbd_decode_server_greeting(buf, sizeof(buf), &hflags));
    CU_ASSERT_EQUAL(hflags, 0x8001);           /* unknown bits are kept */
    CU_ASSERT_TRUE(nbd_decode_server_greeting(want, sizeof(want), &hflags));
    CU_ASSERT_EQUAL(hflags, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    for (size_t l = 0; l < sizeof(want); l++) {
        uint8_t *p = exact(want, l);

        CU_ASSERT_FALSE(nbd_decode_server_greeting(p, l, &hflags));
        free(p);
    }
    /* Any flipped magic byte, and the oldstyle cliserv magic. */
    for (size_t i = 0; i < 16; i++) {
        memcpy(buf, want, sizeof(want));
        buf[i] ^= 0x20;
        CU_ASSERT_FALSE(nbd_decode_server_greeting(buf, sizeof(buf),
                                                   &hflags));
    }
    memcpy(buf, want, sizeof(want));
    put_be64(buf + 8, 0x00420281861253ULL);
    CU_ASSERT_FALSE(nbd_decode_server_greeting(buf, sizeof(buf), &hflags));
}

static void test_client_flags(void)
{
    static const uint8_t want[] = { 0, 0, 0, 3 };
    uint8_t buf[NBD_CLIENT_FLAGS_SIZE];
    uint32_t flags;

    CU_ASSERT_EQUAL(nbd_encode_client_flags(buf, 3), NBD_CLIENT_FLAGS_SIZE);
    CU_ASSERT_EQUAL(memcmp(buf, want, 4), 0);
    for (uint32_t f = 0; f < 4; f++) {
        nbd_encode_client_flags(buf, f);
        CU_ASSERT_TRUE(nbd_decode_client_flags(buf, sizeof(buf), &flags));
        CU_ASSERT_EQUAL(flags, f);
    }
    for (size_t l = 0; l < sizeof(buf); l++) {
        CU_ASSERT_FALSE(nbd_decode_client_flags(want, l, &flags));
    }
    nbd_encode_client_flags(buf, 0x80000003);
    CU_ASSERT_FALSE(nbd_decode_client_flags(buf, sizeof(buf), &flags));
    nbd_encode_client_flags(buf, 4);
    CU_ASSERT_FALSE(nbd_decode_client_flags(buf, sizeof(buf), &flags));
}

static void test_opt_hdr(void)
{
    /* IHAVEOPT, NBD_OPT_GO, length 6 */
    static const uint8_t want[NBD_OPT_HDR_SIZE] = {
        'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T',
        0, 0, 0, 7, 0, 0, 0, 6,
    };
    uint8_t buf[NBD_OPT_HDR_SIZE];
    NbdOptHdr h;

    CU_ASSERT_EQUAL(nbd_encode_opt_hdr(buf, NBD_OPT_GO, 6),
                    NBD_OPT_HDR_SIZE);
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_TRUE(nbd_decode_opt_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.opt, NBD_OPT_GO);
    CU_ASSERT_EQUAL(h.len, 6);
    nbd_encode_opt_hdr(buf, 0xdeadbeef, NBD_MAX_OPTION_LEN);
    CU_ASSERT_TRUE(nbd_decode_opt_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.opt, 0xdeadbeef);
    CU_ASSERT_EQUAL(h.len, NBD_MAX_OPTION_LEN);
    for (size_t l = 0; l < sizeof(want); l++) {
        uint8_t *p = exact(want, l);

        CU_ASSERT_FALSE(nbd_decode_opt_hdr(p, l, &h));
        free(p);
    }
    /* Any length decodes (the server skips what it cannot buffer and
     * answers NBD_REP_ERR_TOO_BIG): past the codec's cap, and 32 bits. */
    nbd_encode_opt_hdr(buf, NBD_OPT_GO, NBD_MAX_OPTION_LEN + 1);
    CU_ASSERT_TRUE(nbd_decode_opt_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.len, NBD_MAX_OPTION_LEN + 1);
    nbd_encode_opt_hdr(buf, NBD_OPT_GO, UINT32_MAX);
    CU_ASSERT_TRUE(nbd_decode_opt_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.len, UINT32_MAX);
    /* Wrong magic: the reply magic is not an option magic. */
    memcpy(buf, want, sizeof(want));
    put_be64(buf, NBD_REP_MAGIC);
    CU_ASSERT_FALSE(nbd_decode_opt_hdr(buf, sizeof(buf), &h));
}

static void test_opt_export_name_codec(void)
{
    static char longname[NBD_MAX_STRING + 2];
    static uint8_t big[NBD_MAX_STRING + 1];
    char name[NBD_MAX_STRING + 1];
    NbdOptError err = { 0 };
    uint8_t buf[16];

    memset(buf, 0xaa, sizeof(buf));
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(buf, sizeof(buf), ""), 0);
    CU_ASSERT_EQUAL(buf[0], 0xaa);
    CU_ASSERT_TRUE(nbd_parse_opt_export_name(buf, 0, name, &err));
    CU_ASSERT_STRING_EQUAL(name, "");
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(buf, sizeof(buf), "disk"), 4);
    CU_ASSERT_EQUAL(memcmp(buf, "disk", 4), 0);
    CU_ASSERT_TRUE(nbd_parse_opt_export_name(buf, 4, name, &err));
    CU_ASSERT_STRING_EQUAL(name, "disk");
    /* Sizing, and a buffer that is too small stays untouched. */
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(NULL, 0, "abc"), 3);
    memset(buf, 0xaa, sizeof(buf));
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(buf, 2, "abc"), 3);
    CU_ASSERT_EQUAL(buf[0], 0xaa);
    /* The longest name round-trips; one more byte is refused both ways. */
    memset(longname, 'n', NBD_MAX_STRING);
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(big, sizeof(big), longname),
                    NBD_MAX_STRING);
    CU_ASSERT_TRUE(nbd_parse_opt_export_name(big, NBD_MAX_STRING, name,
                                             &err));
    CU_ASSERT_EQUAL(strcmp(name, longname), 0);
    longname[NBD_MAX_STRING] = 'n';
    CU_ASSERT_EQUAL(nbd_encode_opt_export_name(big, sizeof(big), longname),
                    -EINVAL);
}

static void test_opt_info_codec(void)
{
    static const char *const names[] = { "", "disk", "a/b c" };
    uint8_t buf[64];
    NbdOptError err = { 0 };

    /* Every combination of requests, for a few names. */
    for (size_t n = 0; n < ARRAY_SIZE(names); n++) {
        for (unsigned mask = 0; mask < 8; mask++) {
            NbdOptInfo in = { 0 }, out;
            ssize_t len;
            uint8_t *p;

            strcpy(in.name, names[n]);
            in.want_name = mask & 1;
            in.want_description = mask & 2;
            in.want_block_size = mask & 4;
            len = nbd_encode_opt_info(buf, sizeof(buf), &in);
            CU_ASSERT_EQUAL(len, (ssize_t)(4 + strlen(names[n]) + 2 +
                                           2 * __builtin_popcount(mask)));
            CU_ASSERT_EQUAL(nbd_encode_opt_info(NULL, 0, &in), len);
            p = exact(buf, (size_t)len);
            CU_ASSERT_TRUE(nbd_parse_opt_info(p, (size_t)len, &out, &err));
            CU_ASSERT_STRING_EQUAL(out.name, in.name);
            CU_ASSERT_EQUAL(out.want_name, in.want_name);
            CU_ASSERT_EQUAL(out.want_description, in.want_description);
            CU_ASSERT_EQUAL(out.want_block_size, in.want_block_size);
            CU_ASSERT_EQUAL(out.ninfos, __builtin_popcount(mask));
            for (size_t l = 0; l < (size_t)len; l++) {
                CU_ASSERT_FALSE(nbd_parse_opt_info(p, l, &out, &err));
            }
            free(p);
        }
    }
    /* Byte-exact: "sda", NAME and BLOCK_SIZE. */
    {
        static const uint8_t want[] = {
            0, 0, 0, 3, 's', 'd', 'a', 0, 2, 0, 1, 0, 3,
        };
        NbdOptInfo in = { .name = "sda", .want_name = true,
                          .want_block_size = true };

        CU_ASSERT_EQUAL(nbd_encode_opt_info(buf, sizeof(buf), &in),
                        sizeof(want));
        CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    }
}

static void test_opt_meta_codec(void)
{
    static const char *const q[] = { "base:allocation", "",
                                     "qemu:dirty-bitmap:b0" };
    static char longq[NBD_MAX_STRING + 2];
    const char *lq[] = { longq };
    uint8_t buf[256];
    NbdOptMeta m;
    NbdOptError err = { 0 };

    for (uint32_t nq = 0; nq <= ARRAY_SIZE(q); nq++) {
        ssize_t len = nbd_encode_opt_meta(buf, sizeof(buf), "exp", q, nq);
        size_t pos;
        uint8_t *p;

        CU_ASSERT_TRUE(len > 0);
        CU_ASSERT_EQUAL(nbd_encode_opt_meta(NULL, 0, "exp", q, nq), len);
        p = exact(buf, (size_t)len);
        CU_ASSERT_TRUE(nbd_parse_opt_meta(p, (size_t)len, &m, &err));
        CU_ASSERT_STRING_EQUAL(m.name, "exp");
        CU_ASSERT_EQUAL(m.nqueries, nq);
        pos = m.queries_off;
        for (uint32_t i = 0; i < nq; i++) {
            const char *s;
            uint32_t sl;

            nbd_meta_next_query(p, &pos, &s, &sl);
            CU_ASSERT_TRUE(nbd_str_eq(s, sl, q[i]));
        }
        CU_ASSERT_EQUAL(pos, (size_t)len);
        for (size_t l = 0; l < (size_t)len; l++) {
            CU_ASSERT_FALSE(nbd_parse_opt_meta(p, l, &m, &err));
        }
        free(p);
    }
    /* Byte-exact: export "", one query "base:". */
    {
        static const uint8_t want[] = {
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 'b', 'a', 's', 'e', ':',
        };
        const char *one[] = { "base:" };

        CU_ASSERT_EQUAL(nbd_encode_opt_meta(buf, sizeof(buf), "", one, 1),
                        sizeof(want));
        CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    }
    memset(longq, 'q', NBD_MAX_STRING + 1);
    CU_ASSERT_EQUAL(nbd_encode_opt_meta(NULL, 0, "e", lq, 1), -EINVAL);
    CU_ASSERT_EQUAL(nbd_encode_opt_meta(NULL, 0, longq, NULL, 0), -EINVAL);
}

static void test_opt_empty(void)
{
    static const uint32_t opts[] = {
        NBD_OPT_LIST, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
        NBD_OPT_EXTENDED_HEADERS,
    };
    NbdOptError err = { 0 };

    for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
        CU_ASSERT_TRUE(nbd_parse_opt_empty(opts[i], 0, &err));
        err.rep = 0;
        CU_ASSERT_FALSE(nbd_parse_opt_empty(opts[i], 1, &err));
        CU_ASSERT_EQUAL(err.rep, NBD_REP_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(err.msg);
    }
    /* ABORT's data is ignored. */
    CU_ASSERT_TRUE(nbd_parse_opt_empty(NBD_OPT_ABORT, 0, &err));
    CU_ASSERT_TRUE(nbd_parse_opt_empty(NBD_OPT_ABORT, 100, &err));
}

static void test_opt_reply_hdr(void)
{
    /* NBD_REP_MAGIC, NBD_OPT_LIST, NBD_REP_SERVER, length 9 */
    static const uint8_t want[NBD_OPT_REPLY_HDR_SIZE] = {
        0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
        0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 9,
    };
    uint8_t buf[NBD_OPT_REPLY_HDR_SIZE];
    NbdOptReplyHdr h;

    CU_ASSERT_EQUAL(nbd_encode_opt_reply_hdr(buf, NBD_OPT_LIST,
                                             NBD_REP_SERVER, 9),
                    sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_TRUE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.opt, NBD_OPT_LIST);
    CU_ASSERT_EQUAL(h.type, NBD_REP_SERVER);
    CU_ASSERT_EQUAL(h.len, 9);
    nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO, NBD_REP_ERR_TOO_BIG, 100);
    CU_ASSERT_TRUE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.type, 0x80000009U);
    CU_ASSERT_EQUAL(h.len, 100);
    nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO, NBD_REP_ACK, 0);
    CU_ASSERT_TRUE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    CU_ASSERT_EQUAL(h.type, NBD_REP_ACK);
    for (size_t l = 0; l < sizeof(want); l++) {
        uint8_t *p = exact(want, l);

        CU_ASSERT_FALSE(nbd_decode_opt_reply_hdr(p, l, &h));
        free(p);
    }
    /* An ACK with data, a huge length, a wrong magic. */
    nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO, NBD_REP_ACK, 1);
    CU_ASSERT_FALSE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO, NBD_REP_INFO, UINT32_MAX);
    CU_ASSERT_FALSE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    nbd_encode_opt_reply_hdr(buf, NBD_OPT_GO, NBD_REP_INFO,
                             NBD_MAX_OPTION_LEN + 1);
    CU_ASSERT_FALSE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
    memcpy(buf, want, sizeof(want));
    put_be64(buf, NBD_OPTS_MAGIC);
    CU_ASSERT_FALSE(nbd_decode_opt_reply_hdr(buf, sizeof(buf), &h));
}

static void test_rep_server(void)
{
    static const uint8_t want[] = {
        0, 0, 0, 2, 'e', '0', 'd', 'i', 's', 'k',
    };
    static const NbdRepServer cases[] = {
        { .name = { "e0", 2 }, .desc = { "disk", 4 } },
        { .name = { "e0", 2 } },
        { .name = { NULL, 0 } },
        { .name = { NULL, 0 }, .desc = { "only a description", 18 } },
    };
    static char big[NBD_MAX_STRING + 1];
    uint8_t buf[64];
    NbdRepServer out;

    CU_ASSERT_EQUAL(nbd_encode_rep_server(buf, sizeof(buf), &cases[0]),
                    sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
        ssize_t len = nbd_encode_rep_server(buf, sizeof(buf), &cases[c]);
        uint8_t *p = exact(buf, (size_t)len);

        CU_ASSERT_EQUAL(nbd_encode_rep_server(NULL, 0, &cases[c]), len);
        CU_ASSERT_TRUE(nbd_decode_rep_server(p, (size_t)len, &out));
        CU_ASSERT_TRUE(str_same(out.name, cases[c].name));
        CU_ASSERT_TRUE(str_same(out.desc, cases[c].desc));
        CU_ASSERT_TRUE(str_inside(out.name, p, (size_t)len));
        CU_ASSERT_TRUE(str_inside(out.desc, p, (size_t)len));
        /* Cutting into the name fails; cutting the description (the
         * rest of the payload) only shortens it. */
        for (size_t l = 0; l < (size_t)len; l++) {
            bool ok = nbd_decode_rep_server(p, l, &out);

            CU_ASSERT_EQUAL(ok, l >= 4 + cases[c].name.len);
            if (ok) {
                CU_ASSERT_EQUAL(out.desc.len, l - 4 - cases[c].name.len);
            }
        }
        free(p);
    }
    /* Name length past the end (also 0xffffffff), NULs, too long. */
    memcpy(buf, want, sizeof(want));
    put_be32(buf, sizeof(want) - 3);
    CU_ASSERT_FALSE(nbd_decode_rep_server(buf, sizeof(want), &out));
    put_be32(buf, UINT32_MAX);
    CU_ASSERT_FALSE(nbd_decode_rep_server(buf, sizeof(want), &out));
    memcpy(buf, want, sizeof(want));
    buf[5] = 0;
    CU_ASSERT_FALSE(nbd_decode_rep_server(buf, sizeof(want), &out));
    memcpy(buf, want, sizeof(want));
    buf[8] = 0;
    CU_ASSERT_FALSE(nbd_decode_rep_server(buf, sizeof(want), &out));
    {
        NbdRepServer in = { .name = { big, NBD_MAX_STRING + 1 } };
        static uint8_t large[4 + NBD_MAX_STRING + 1];

        memset(big, 'x', sizeof(big));
        CU_ASSERT_EQUAL(nbd_encode_rep_server(NULL, 0, &in), -EINVAL);
        put_be32(large, NBD_MAX_STRING + 1);
        memset(large + 4, 'x', NBD_MAX_STRING + 1);
        CU_ASSERT_FALSE(nbd_decode_rep_server(large, sizeof(large), &out));
    }
}

static void test_rep_info(void)
{
    /* INFO_EXPORT: 1 GiB, HAS_FLAGS | SEND_FLUSH */
    static const uint8_t want_export[] = {
        0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 5,
    };
    /* INFO_BLOCK_SIZE: 512, 4096, 32 MiB */
    static const uint8_t want_bs[] = {
        0, 3, 0, 0, 2, 0, 0, 0, 0x10, 0, 0x02, 0, 0, 0,
    };
    static const NbdRepInfo cases[] = {
        { .type = NBD_INFO_EXPORT, .size = 1ULL << 30,
          .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH },
        { .type = NBD_INFO_EXPORT, .size = UINT64_MAX, .tflags = 0xffff },
        { .type = NBD_INFO_NAME, .str = { "disk", 4 } },
        { .type = NBD_INFO_NAME },
        { .type = NBD_INFO_DESCRIPTION, .str = { "a test disk", 11 } },
        { .type = NBD_INFO_BLOCK_SIZE, .min_block = 512,
          .pref_block = 4096, .max_payload = 32 << 20 },
        { .type = 77, .str = { "\0raw\0", 5 } },
    };
    uint8_t buf[64];
    NbdRepInfo out;

    CU_ASSERT_EQUAL(nbd_encode_rep_info(buf, sizeof(buf), &cases[0]), 12);
    CU_ASSERT_EQUAL(memcmp(buf, want_export, 12), 0);
    CU_ASSERT_EQUAL(nbd_encode_rep_info(buf, sizeof(buf), &cases[5]), 14);
    CU_ASSERT_EQUAL(memcmp(buf, want_bs, 14), 0);
    for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
        const NbdRepInfo *in = &cases[c];
        ssize_t len = nbd_encode_rep_info(buf, sizeof(buf), in);
        uint8_t *p = exact(buf, (size_t)len);

        CU_ASSERT_EQUAL(nbd_encode_rep_info(NULL, 0, in), len);
        CU_ASSERT_TRUE(nbd_decode_rep_info(p, (size_t)len, &out));
        CU_ASSERT_EQUAL(out.type, in->type);
        CU_ASSERT_EQUAL(out.size, in->size);
        CU_ASSERT_EQUAL(out.tflags, in->tflags);
        CU_ASSERT_EQUAL(out.min_block, in->min_block);
        CU_ASSERT_EQUAL(out.pref_block, in->pref_block);
        CU_ASSERT_EQUAL(out.max_payload, in->max_payload);
        CU_ASSERT_TRUE(str_same(out.str, in->str));
        CU_ASSERT_TRUE(str_inside(out.str, p, (size_t)len));
        /* Fixed-size items refuse any other length; strings (and unknown
         * items) are the rest of the payload. */
        for (size_t l = 0; l < (size_t)len; l++) {
            bool ok = nbd_decode_rep_info(p, l, &out);
            bool fixed = in->type == NBD_INFO_EXPORT ||
                         in->type == NBD_INFO_BLOCK_SIZE;

            CU_ASSERT_EQUAL(ok, !fixed && l >= 2);
        }
        free(p);
    }
    /* Oversized fixed items, NUL in a name, a name too long. */
    memcpy(buf, want_export, 12);
    buf[12] = 0;
    CU_ASSERT_FALSE(nbd_decode_rep_info(buf, 13, &out));
    memcpy(buf, want_bs, 14);
    buf[14] = 0;
    CU_ASSERT_FALSE(nbd_decode_rep_info(buf, 15, &out));
    memcpy(buf, "\0\1di\0k", 6);
    CU_ASSERT_FALSE(nbd_decode_rep_info(buf, 6, &out));
    buf[1] = NBD_INFO_DESCRIPTION;
    CU_ASSERT_FALSE(nbd_decode_rep_info(buf, 6, &out));
    {
        static uint8_t large[2 + NBD_MAX_STRING + 1];
        NbdRepInfo in = { .type = NBD_INFO_NAME,
                          .str = { (const char *)large + 2,
                                   NBD_MAX_STRING + 1 } };

        memset(large, 'x', sizeof(large));
        put_be16(large, NBD_INFO_NAME);
        CU_ASSERT_FALSE(nbd_decode_rep_info(large, sizeof(large), &out));
        CU_ASSERT_TRUE(nbd_decode_rep_info(large, sizeof(large) - 1, &out));
        CU_ASSERT_EQUAL(nbd_encode_rep_info(NULL, 0, &in), -EINVAL);
    }
    /* An unknown item is kept raw up to the option reply cap. */
    {
        static uint8_t large[NBD_MAX_OPTION_LEN + 1];
        NbdRepInfo in = { .type = 99,
                          .str = { (const char *)large + 2,
                                   NBD_MAX_OPTION_LEN - 2 } };

        put_be16(large, 99);
        CU_ASSERT_TRUE(nbd_decode_rep_info(large, NBD_MAX_OPTION_LEN, &out));
        CU_ASSERT_EQUAL(out.str.len, NBD_MAX_OPTION_LEN - 2);
        CU_ASSERT_FALSE(nbd_decode_rep_info(large, sizeof(large), &out));
        CU_ASSERT_EQUAL(nbd_encode_rep_info(NULL, 0, &in),
                        NBD_MAX_OPTION_LEN);
        in.str.len++;
        CU_ASSERT_EQUAL(nbd_encode_rep_info(NULL, 0, &in), -EINVAL);
    }
}

static void test_rep_meta(void)
{
    static const uint8_t want[] = {
        0, 0, 0, 1, 'b', 'a', 's', 'e', ':', 'a', 'l', 'l', 'o', 'c',
        'a', 't', 'i', 'o', 'n',
    };
    NbdRepMeta in = { .id = 1, .name = { "base:allocation", 15 } };
    NbdRepMeta out;
    uint8_t buf[64];
    uint8_t *p;

    CU_ASSERT_EQUAL(nbd_encode_rep_meta(buf, sizeof(buf), &in),
                    sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    p = exact(buf, sizeof(want));
    CU_ASSERT_TRUE(nbd_decode_rep_meta(p, sizeof(want), &out));
    CU_ASSERT_EQUAL(out.id, 1);
    CU_ASSERT_TRUE(str_same(out.name, in.name));
    CU_ASSERT_TRUE(str_inside(out.name, p, sizeof(want)));
    for (size_t l = 0; l < 5; l++) {
        CU_ASSERT_FALSE(nbd_decode_rep_meta(p, l, &out));
    }
    free(p);
    in.id = UINT32_MAX;
    CU_ASSERT_EQUAL(nbd_encode_rep_meta(buf, sizeof(buf), &in),
                    sizeof(want));
    CU_ASSERT_TRUE(nbd_decode_rep_meta(buf, sizeof(want), &out));
    CU_ASSERT_EQUAL(out.id, UINT32_MAX);
    buf[8] = 0;
    CU_ASSERT_FALSE(nbd_decode_rep_meta(buf, sizeof(want), &out));
    in.name = (NbdStr){ NULL, 0 };
    CU_ASSERT_EQUAL(nbd_encode_rep_meta(buf, sizeof(buf), &in), -EINVAL);
}

static void test_rep_error(void)
{
    static char big[NBD_MAX_STRING + 1];
    NbdStr msg = nbd_str("export 'x' not present");
    NbdStr out;
    uint8_t buf[64];
    ssize_t len;
    uint8_t *p;

    len = nbd_encode_rep_error(buf, sizeof(buf), msg);
    CU_ASSERT_EQUAL(len, (ssize_t)msg.len);
    CU_ASSERT_EQUAL(memcmp(buf, msg.ptr, msg.len), 0);
    p = exact(buf, (size_t)len);
    CU_ASSERT_TRUE(nbd_decode_rep_error(p, (size_t)len, &out));
    CU_ASSERT_TRUE(str_same(out, msg));
    CU_ASSERT_TRUE(str_inside(out, p, (size_t)len));
    free(p);
    CU_ASSERT_EQUAL(nbd_encode_rep_error(buf, sizeof(buf), nbd_str("")), 0);
    CU_ASSERT_TRUE(nbd_decode_rep_error(NULL, 0, &out));
    CU_ASSERT_EQUAL(out.len, 0);
    CU_ASSERT_FALSE(nbd_decode_rep_error((const uint8_t *)"a\0b", 3, &out));
    memset(big, 'm', sizeof(big));
    CU_ASSERT_FALSE(nbd_decode_rep_error((const uint8_t *)big, sizeof(big),
                                         &out));
    CU_ASSERT_EQUAL(nbd_encode_rep_error(NULL, 0,
                                         (NbdStr){ big, sizeof(big) }),
                    -EINVAL);
}

static void test_export_name_reply(void)
{
    static const uint8_t want[NBD_EXPORT_NAME_REPLY_SHORT] = {
        0, 0, 0, 0, 0, 0x10, 0, 0, 0x01, 0x03,
    };
    NbdExportNameReply in = { .size = 1 << 20,
                              .tflags = NBD_FLAG_HAS_FLAGS |
                                        NBD_FLAG_READ_ONLY |
                                        NBD_FLAG_CAN_MULTI_CONN };
    NbdExportNameReply out;
    uint8_t buf[NBD_EXPORT_NAME_REPLY_SIZE];

    for (int nz = 0; nz < 2; nz++) {
        size_t len;
        uint8_t *p;

        memset(buf, 0xaa, sizeof(buf));
        len = nbd_encode_export_name_reply(buf, nz, &in);
        CU_ASSERT_EQUAL(len, nz ? NBD_EXPORT_NAME_REPLY_SHORT
                                : NBD_EXPORT_NAME_REPLY_SIZE);
        CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
        for (size_t i = sizeof(want); i < len; i++) {
            CU_ASSERT_EQUAL(buf[i], 0);
        }
        p = exact(buf, len);
        CU_ASSERT_TRUE(nbd_decode_export_name_reply(p, len, nz, &out));
        CU_ASSERT_EQUAL(out.size, in.size);
        CU_ASSERT_EQUAL(out.tflags, in.tflags);
        for (size_t l = 0; l < len; l++) {
            CU_ASSERT_FALSE(nbd_decode_export_name_reply(p, l, nz, &out));
        }
        free(p);
    }
    /* The reserved padding must be zero. */
    nbd_encode_export_name_reply(buf, false, &in);
    buf[NBD_EXPORT_NAME_REPLY_SIZE - 1] = 1;
    CU_ASSERT_FALSE(nbd_decode_export_name_reply(buf, sizeof(buf), false,
                                                 &out));
    CU_ASSERT_TRUE(nbd_decode_export_name_reply(buf, sizeof(buf), true,
                                                &out));
}

static void test_request_bytes(void)
{
    /* WRITE | FUA, cookie 0x0102030405060708, offset 4096, length 512 */
    static const uint8_t want[NBD_REQ_SIZE] = {
        0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1,
        1, 2, 3, 4, 5, 6, 7, 8,
        0, 0, 0, 0, 0, 0, 0x10, 0,
        0, 0, 2, 0,
    };
    /* the same, extended, length 8 GiB */
    static const uint8_t want_ext[NBD_EXT_REQ_SIZE] = {
        0x21, 0xe4, 0x1c, 0x71, 0, 1, 0, 1,
        1, 2, 3, 4, 5, 6, 7, 8,
        0, 0, 0, 0, 0, 0, 0x10, 0,
        0, 0, 0, 2, 0, 0, 0, 0,
    };
    NbdRequest in = { .flags = NBD_CMD_FLAG_FUA, .type = NBD_CMD_WRITE,
                      .cookie = 0x0102030405060708ULL, .offset = 4096,
                      .length = 512 };
    NbdRequest out;
    uint8_t buf[NBD_EXT_REQ_SIZE];

    CU_ASSERT_EQUAL(nbd_encode_request(buf, false, &in), NBD_REQ_SIZE);
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_TRUE(nbd_decode_request(want, false, &out));
    CU_ASSERT_EQUAL(out.length, 512);
    in.length = 8ULL << 30;
    CU_ASSERT_EQUAL(nbd_encode_request(buf, true, &in), NBD_EXT_REQ_SIZE);
    CU_ASSERT_EQUAL(memcmp(buf, want_ext, sizeof(want_ext)), 0);
    CU_ASSERT_TRUE(nbd_decode_request(want_ext, true, &out));
    CU_ASSERT_EQUAL(out.flags, in.flags);
    CU_ASSERT_EQUAL(out.type, in.type);
    CU_ASSERT_EQUAL(out.cookie, in.cookie);
    CU_ASSERT_EQUAL(out.offset, in.offset);
    CU_ASSERT_EQUAL(out.length, 8ULL << 30);

    /* The (buf, len) form: round trip both widths, every truncation. */
    for (int x = 0; x < 2; x++) {
        size_t len = nbd_encode_request(buf, x, &in);
        uint8_t *p = exact(buf, len);

        memset(&out, 0, sizeof(out));
        CU_ASSERT_TRUE(nbd_decode_request_len(p, len, x, &out));
        CU_ASSERT_EQUAL(out.flags, in.flags);
        CU_ASSERT_EQUAL(out.type, in.type);
        CU_ASSERT_EQUAL(out.cookie, in.cookie);
        CU_ASSERT_EQUAL(out.offset, in.offset);
        CU_ASSERT_EQUAL(out.length, x ? in.length : (uint32_t)in.length);
        for (size_t l = 0; l < len; l++) {
            CU_ASSERT_FALSE(nbd_decode_request_len(p, l, x, &out));
        }
        CU_ASSERT_FALSE(nbd_decode_request_len(p, len, !x, &out));
        free(p);
    }
}

static void test_bs_payload(void)
{
    /* effect length 1 MiB, ids 0 and 2 */
    static const uint8_t want[] = {
        0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    };
    static const uint32_t ids[] = { 0, 2, UINT32_MAX };
    uint8_t buf[32];
    uint64_t effect;
    uint32_t n;

    CU_ASSERT_EQUAL(nbd_encode_bs_payload(buf, sizeof(buf), 1 << 20, ids, 2),
                    sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    for (uint32_t k = 1; k <= ARRAY_SIZE(ids); k++) {
        ssize_t len = nbd_encode_bs_payload(buf, sizeof(buf), UINT64_MAX - k,
                                            ids, k);
        uint8_t *p = exact(buf, (size_t)len);

        CU_ASSERT_EQUAL(len, (ssize_t)(8 + 4 * k));
        CU_ASSERT_EQUAL(nbd_encode_bs_payload(NULL, 0, 0, ids, k), len);
        CU_ASSERT_TRUE(nbd_decode_bs_payload(p, (size_t)len, &effect, &n));
        CU_ASSERT_EQUAL(effect, UINT64_MAX - k);
        CU_ASSERT_EQUAL(n, k);
        for (uint32_t i = 0; i < n; i++) {
            CU_ASSERT_EQUAL(nbd_bs_payload_id(p, i), ids[i]);
        }
        /* Only cuts at an id boundary that keep one id are valid. */
        for (size_t l = 0; l < (size_t)len; l++) {
            bool ok = nbd_decode_bs_payload(p, l, &effect, &n);

            CU_ASSERT_EQUAL(ok, l >= 12 && (l - 8) % 4 == 0);
        }
        free(p);
    }
    CU_ASSERT_EQUAL(nbd_encode_bs_payload(buf, sizeof(buf), 1, ids, 0),
                    -EINVAL);
    CU_ASSERT_FALSE(nbd_decode_bs_payload(want, 8, &effect, &n));
    CU_ASSERT_FALSE(nbd_decode_bs_payload(want, 13, &effect, &n));
}

static void check_reply_roundtrip(const NbdReplyHdr *in, bool structured,
                                  bool extended)
{
    uint8_t buf[NBD_MAX_CHUNK_HDR_SIZE];
    NbdReplyHdr out;
    size_t len = nbd_encode_reply_hdr(buf, in);
    uint8_t *p = exact(buf, len);

    CU_ASSERT_EQUAL(nbd_reply_hdr_size(p, len), len);
    CU_ASSERT_TRUE(nbd_decode_reply_hdr(p, len, structured, extended, &out));
    CU_ASSERT_EQUAL(out.magic, in->magic);
    CU_ASSERT_EQUAL(out.error, in->error);
    CU_ASSERT_EQUAL(out.flags, in->flags);
    CU_ASSERT_EQUAL(out.type, in->type);
    CU_ASSERT_EQUAL(out.cookie, in->cookie);
    CU_ASSERT_EQUAL(out.offset, in->offset);
    CU_ASSERT_EQUAL(out.length, in->length);
    for (size_t l = 0; l < len; l++) {
        CU_ASSERT_FALSE(nbd_decode_reply_hdr(p, l, structured, extended,
                                             &out));
    }
    free(p);
}

static void test_reply_hdr(void)
{
    /* A structured OFFSET_DATA chunk, DONE, cookie 9, length 4104. */
    static const uint8_t want[NBD_CHUNK_HDR_SIZE] = {
        0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 1,
        0, 0, 0, 0, 0, 0, 0, 9,
        0, 0, 0x10, 0x08,
    };
    /* A simple reply, EIO, cookie 9. */
    static const uint8_t want_simple[NBD_SIMPLE_REPLY_SIZE] = {
        0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5,
        0, 0, 0, 0, 0, 0, 0, 9,
    };
    NbdReplyHdr simple = { .magic = NBD_SIMPLE_REPLY_MAGIC,
                           .error = NBD_EIO, .cookie = 9 };
    NbdReplyHdr chunk = { .magic = NBD_STRUCTURED_REPLY_MAGIC,
                          .flags = NBD_REPLY_FLAG_DONE,
                          .type = NBD_REPLY_TYPE_OFFSET_DATA,
                          .cookie = 9, .length = 4104 };
    NbdReplyHdr ext = { .magic = NBD_EXTENDED_REPLY_MAGIC,
                        .flags = 0, .type = NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
                        .cookie = UINT64_MAX, .offset = 1ULL << 50,
                        .length = 5ULL << 32 };
    NbdReplyHdr none = { .magic = NBD_EXTENDED_REPLY_MAGIC,
                         .flags = NBD_REPLY_FLAG_DONE,
                         .type = NBD_REPLY_TYPE_NONE, .cookie = 1,
                         .offset = 512 };
    uint8_t buf[NBD_MAX_CHUNK_HDR_SIZE];
    NbdReplyHdr out;

    CU_ASSERT_EQUAL(nbd_encode_reply_hdr(buf, &chunk), sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_EQUAL(nbd_encode_reply_hdr(buf, &simple), sizeof(want_simple));
    CU_ASSERT_EQUAL(memcmp(buf, want_simple, sizeof(want_simple)), 0);
    CU_ASSERT_TRUE(nbd_decode_reply_hdr(want, sizeof(want), true, false,
                                        &out));
    CU_ASSERT_EQUAL(out.length, 4104);

    check_reply_roundtrip(&simple, false, false);
    check_reply_roundtrip(&simple, true, false);
    check_reply_roundtrip(&chunk, true, false);
    check_reply_roundtrip(&ext, true, true);
    check_reply_roundtrip(&none, true, true);
    simple.error = 0;
    check_reply_roundtrip(&simple, false, false);

    /* What each negotiated mode allows. */
    nbd_encode_reply_hdr(buf, &simple);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 16, true, true, &out));
    nbd_encode_reply_hdr(buf, &chunk);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 20, false, false, &out));
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 20, true, true, &out));
    nbd_encode_reply_hdr(buf, &ext);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, true, false, &out));
    /* Wrong magics: the request magics and a flipped bit. */
    put_be32(buf, NBD_REQUEST_MAGIC);
    CU_ASSERT_EQUAL(nbd_reply_hdr_size(buf, 32), 0);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, true, false, &out));
    put_be32(buf, NBD_EXTENDED_REQUEST_MAGIC);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, true, true, &out));
    put_be32(buf, NBD_SIMPLE_REPLY_MAGIC ^ 1);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, false, false, &out));
    CU_ASSERT_EQUAL(nbd_reply_hdr_size(buf, 3), 0);
    none.magic = 0;
    CU_ASSERT_EQUAL(nbd_encode_reply_hdr(buf, &none), 0);
    /* NONE must be empty and final. */
    none.magic = NBD_EXTENDED_REPLY_MAGIC;
    none.length = 1;
    nbd_encode_reply_hdr(buf, &none);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, true, true, &out));
    none.length = 0;
    none.flags = 0;
    nbd_encode_reply_hdr(buf, &none);
    CU_ASSERT_FALSE(nbd_decode_reply_hdr(buf, 32, true, true, &out));
}

static void test_offset_chunks(void)
{
    static const uint8_t want_hole[NBD_OFFSET_HOLE_SIZE] = {
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0x01, 0, 0,
    };
    NbdChunkHole hole = { .offset = 1ULL << 32, .length = 65536 }, hout;
    uint8_t buf[NBD_OFFSET_HOLE_SIZE];
    uint64_t off, dlen;
    uint8_t *p;

    CU_ASSERT_EQUAL(nbd_encode_offset_hole(buf, &hole), sizeof(want_hole));
    CU_ASSERT_EQUAL(memcmp(buf, want_hole, sizeof(want_hole)), 0);
    p = exact(buf, sizeof(buf));
    CU_ASSERT_TRUE(nbd_decode_offset_hole(p, sizeof(buf), &hout));
    CU_ASSERT_EQUAL(hout.offset, hole.offset);
    CU_ASSERT_EQUAL(hout.length, hole.length);
    for (size_t l = 0; l < sizeof(buf); l++) {
        CU_ASSERT_FALSE(nbd_decode_offset_hole(p, l, &hout));
    }
    free(p);
    hole.length = 0;
    nbd_encode_offset_hole(buf, &hole);
    CU_ASSERT_FALSE(nbd_decode_offset_hole(buf, sizeof(buf), &hout));

    CU_ASSERT_EQUAL(nbd_encode_offset_data_hdr(buf, 0x123456789aULL),
                    NBD_OFFSET_DATA_HDR_SIZE);
    CU_ASSERT_EQUAL(get_be64(buf), 0x123456789aULL);
    p = exact(buf, NBD_OFFSET_DATA_HDR_SIZE);
    CU_ASSERT_TRUE(nbd_decode_offset_data_hdr(p, 8, 8 + 4096, &off, &dlen));
    CU_ASSERT_EQUAL(off, 0x123456789aULL);
    CU_ASSERT_EQUAL(dlen, 4096);
    CU_ASSERT_TRUE(nbd_decode_offset_data_hdr(p, 8, UINT64_MAX, &off,
                                              &dlen));
    CU_ASSERT_EQUAL(dlen, UINT64_MAX - 8);
    for (size_t l = 0; l < 8; l++) {
        CU_ASSERT_FALSE(nbd_decode_offset_data_hdr(p, l, 9, &off, &dlen));
    }
    /* A data chunk needs at least one byte of data. */
    CU_ASSERT_FALSE(nbd_decode_offset_data_hdr(p, 8, 8, &off, &dlen));
    CU_ASSERT_FALSE(nbd_decode_offset_data_hdr(p, 8, 0, &off, &dlen));
    free(p);
}

static void check_bs_roundtrip(bool extended, uint32_t id,
                               const NbdExtent *ext, uint32_t n)
{
    uint8_t buf[256], piece[256];
    NbdBlockStatus bs;
    ssize_t len = nbd_encode_block_status(buf, sizeof(buf), extended, id,
                                          ext, n);
    size_t pos;
    uint8_t *p;

    CU_ASSERT_EQUAL(len, (ssize_t)nbd_block_status_size(extended, n));
    CU_ASSERT_EQUAL(nbd_encode_block_status(NULL, 0, extended, id, ext, n),
                    len);
    /* The incremental pieces give the same bytes. */
    pos = nbd_encode_block_status_hdr(piece, extended, id, n);
    for (uint32_t i = 0; i < n; i++) {
        pos += nbd_encode_extent(piece + pos, extended, &ext[i]);
    }
    CU_ASSERT_EQUAL(pos, (size_t)len);
    CU_ASSERT_EQUAL(memcmp(piece, buf, pos), 0);

    p = exact(buf, (size_t)len);
    CU_ASSERT_TRUE(nbd_decode_block_status(p, (size_t)len, extended, &bs));
    CU_ASSERT_EQUAL(bs.context_id, id);
    CU_ASSERT_EQUAL(bs.count, n);
    for (uint32_t i = 0; i < n; i++) {
        NbdExtent e;

        nbd_block_status_extent(p, extended, i, &e);
        CU_ASSERT_EQUAL(e.length, ext[i].length);
        CU_ASSERT_EQUAL(e.flags, ext[i].flags);
    }
    /* Compact: a cut at a descriptor boundary is a shorter valid list;
     * extended: the count no longer matches. */
    for (size_t l = 0; l < (size_t)len; l++) {
        bool ok = nbd_decode_block_status(p, l, extended, &bs);

        CU_ASSERT_EQUAL(ok, !extended && l >= 12 && (l - 4) % 8 == 0);
        if (ok) {
            CU_ASSERT_EQUAL(bs.count, (l - 4) / 8);
        }
    }
    free(p);
}

static void test_block_status(void)
{
    /* context 1, extents (4096, HOLE|ZERO), (512, 0) */
    static const uint8_t want[] = {
        0, 0, 0, 1,
        0, 0, 0x10, 0, 0, 0, 0, 3,
        0, 0, 0x02, 0, 0, 0, 0, 0,
    };
    static const uint8_t want_ext[] = {
        0, 0, 0, 1, 0, 0, 0, 2,
        0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 3,
        0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    };
    static const NbdExtent two[] = {
        { 4096, NBD_STATE_HOLE | NBD_STATE_ZERO }, { 512, 0 },
    };
    static const NbdExtent big[] = {
        { 1ULL << 40, 1 }, { 1, UINT64_MAX }, { UINT64_MAX, 0 },
    };
    static const NbdExtent wide32[] = {
        { UINT32_MAX, UINT32_MAX }, { 1, 0 }, { 7, 2 },
    };
    uint8_t buf[64];
    NbdBlockStatus bs;
    NbdExtent e;

    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), false, 1,
                                            two, 2), sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), true, 1,
                                            two, 2), sizeof(want_ext));
    CU_ASSERT_EQUAL(memcmp(buf, want_ext, sizeof(want_ext)), 0);

    check_bs_roundtrip(false, 1, two, 2);
    check_bs_roundtrip(true, 1, two, 2);
    check_bs_roundtrip(false, UINT32_MAX, wide32, 3);
    check_bs_roundtrip(true, 0, wide32, 3);
    check_bs_roundtrip(true, 7, big, 3);
    check_bs_roundtrip(false, 0, two, 1);

    /* The encoder refuses what would not be a valid chunk. */
    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), false, 0,
                                            two, 0), -EINVAL);
    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), false, 0,
                                            big, 1), -EINVAL);
    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), false, 0,
                                            big + 1, 1), -EINVAL);
    e = (NbdExtent){ 0, 0 };
    CU_ASSERT_EQUAL(nbd_encode_block_status(buf, sizeof(buf), true, 0,
                                            &e, 1), -EINVAL);

    /* The decoder: zero-length extent, count mismatch, count 0, a
     * length that is not prefix + n descriptors. */
    memcpy(buf, want, sizeof(want));
    put_be32(buf + 12, 0);
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, sizeof(want), false, &bs));
    memcpy(buf, want_ext, sizeof(want_ext));
    put_be64(buf + 24, 0);
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, sizeof(want_ext), true,
                                            &bs));
    memcpy(buf, want_ext, sizeof(want_ext));
    put_be32(buf + 4, 3);
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, sizeof(want_ext), true,
                                            &bs));
    put_be32(buf + 4, UINT32_MAX);
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, sizeof(want_ext), true,
                                            &bs));
    put_be32(buf + 4, 0);
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, 8, true, &bs));
    CU_ASSERT_FALSE(nbd_decode_block_status(want, 4, false, &bs));
    memcpy(buf, want, sizeof(want));
    buf[sizeof(want)] = 0;
    CU_ASSERT_FALSE(nbd_decode_block_status(buf, sizeof(want) + 1, false,
                                            &bs));
    /* A compact payload read as extended (and the reverse) fails. */
    CU_ASSERT_FALSE(nbd_decode_block_status(want, sizeof(want), true, &bs));
    CU_ASSERT_FALSE(nbd_decode_block_status(want_ext, sizeof(want_ext),
                                            false, &bs));
}

static void test_chunk_error(void)
{
    /* ERROR_OFFSET: EIO, "bad", offset 512 */
    static const uint8_t want[] = {
        0, 0, 0, 5, 0, 3, 'b', 'a', 'd', 0, 0, 0, 0, 0, 0, 2, 0,
    };
    static const struct {
        uint16_t type;
        NbdChunkError e;
    } cases[] = {
        { NBD_REPLY_TYPE_ERROR, { NBD_EINVAL, { "bad flag", 8 }, 0 } },
        { NBD_REPLY_TYPE_ERROR, { NBD_ENOSPC, { NULL, 0 }, 0 } },
        { NBD_REPLY_TYPE_ERROR_OFFSET, { NBD_EIO, { "bad", 3 }, 512 } },
        { NBD_REPLY_TYPE_ERROR_OFFSET, { UINT32_MAX, { NULL, 0 },
                                         UINT64_MAX } },
        { 0x8123, { NBD_EPERM, { "future", 6 }, 0 } },
    };
    static char big[NBD_MAX_STRING + 1];
    uint8_t buf[64];
    NbdChunkError out;

    CU_ASSERT_EQUAL(nbd_encode_chunk_error(buf, sizeof(buf),
                                           NBD_REPLY_TYPE_ERROR_OFFSET,
                                           &cases[2].e), sizeof(want));
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(want)), 0);
    for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
        uint16_t type = cases[c].type;
        const NbdChunkError *in = &cases[c].e;
        ssize_t len = nbd_encode_chunk_error(buf, sizeof(buf), type, in);
        uint8_t *p = exact(buf, (size_t)len);

        CU_ASSERT_EQUAL(nbd_encode_chunk_error(NULL, 0, type, in), len);
        CU_ASSERT_TRUE(nbd_decode_chunk_error(p, (size_t)len, type, &out));
        CU_ASSERT_EQUAL(out.error, in->error);
        CU_ASSERT_TRUE(str_same(out.msg, in->msg));
        CU_ASSERT_TRUE(str_inside(out.msg, p, (size_t)len));
        CU_ASSERT_EQUAL(out.offset, in->offset);
        for (size_t l = 0; l < (size_t)len; l++) {
            CU_ASSERT_FALSE(nbd_decode_chunk_error(p, l, type, &out));
        }
        free(p);
    }
    /* Trailing bytes: refused for the two known types, ignored for an
     * unknown error type. */
    nbd_encode_chunk_error(buf, sizeof(buf), NBD_REPLY_TYPE_ERROR,
                           &cases[0].e);
    CU_ASSERT_FALSE(nbd_decode_chunk_error(buf, 15, NBD_REPLY_TYPE_ERROR,
                                           &out));
    CU_ASSERT_FALSE(nbd_decode_chunk_error(buf, 15,
                                           NBD_REPLY_TYPE_ERROR_OFFSET,
                                           &out));
    CU_ASSERT_TRUE(nbd_decode_chunk_error(buf, 15, 0x8123, &out));
    CU_ASSERT_EQUAL(out.msg.len, 8);
    /* Message length past the end, error 0, NUL, not an error type. */
    memcpy(buf, want, sizeof(want));
    put_be16(buf + 4, 0xffff);
    CU_ASSERT_FALSE(nbd_decode_chunk_error(buf, sizeof(want),
                                           NBD_REPLY_TYPE_ERROR_OFFSET,
                                           &out));
    memcpy(buf, want, sizeof(want));
    put_be32(buf, 0);
    CU_ASSERT_FALSE(nbd_decode_chunk_error(buf, sizeof(want),
                                           NBD_REPLY_TYPE_ERROR_OFFSET,
                                           &out));
    memcpy(buf, want, sizeof(want));
    buf[7] = 0;
    CU_ASSERT_FALSE(nbd_decode_chunk_error(buf, sizeof(want),
                                           NBD_REPLY_TYPE_ERROR_OFFSET,
                                           &out));
    CU_ASSERT_FALSE(nbd_decode_chunk_error(want, sizeof(want),
                                           NBD_REPLY_TYPE_OFFSET_HOLE,
                                           &out));
    /* Encoder refusals. */
    CU_ASSERT_EQUAL(nbd_encode_chunk_error(buf, sizeof(buf),
                                           NBD_REPLY_TYPE_NONE, &cases[0].e),
                    -EINVAL);
    out = (NbdChunkError){ .error = 0 };
    CU_ASSERT_EQUAL(nbd_encode_chunk_error(buf, sizeof(buf),
                                           NBD_REPLY_TYPE_ERROR, &out),
                    -EINVAL);
    out = (NbdChunkError){ .error = NBD_EIO,
                           .msg = { big, NBD_MAX_STRING + 1 } };
    CU_ASSERT_EQUAL(nbd_encode_chunk_error(NULL, 0, NBD_REPLY_TYPE_ERROR,
                                           &out), -EINVAL);
}

/* Run every decoder on p[0..len) and, where one accepts, encode what it
 * decoded again: the bytes must come back (encode(decode(b)) == b), so
 * no decoder accepts anything it would not produce itself, and nothing
 * it decoded points outside the buffer.  Returns how many accepted. */
static int check_reencode(const uint8_t *p, size_t len)
{
    uint8_t out[4 + 2 * NBD_MAX_STRING + 64];
    NbdExtent ext[64];
    uint32_t ids[64];
    int accepted = 0;
    uint16_t h16;
    uint32_t h32;
    uint64_t a, b;
    NbdOptHdr oh;
    NbdOptReplyHdr orh;
    NbdRepServer rs;
    NbdRepInfo ri;
    NbdRepMeta rm;
    NbdStr s;
    NbdExportNameReply er;
    NbdReplyHdr rh;
    NbdChunkHole ch;
    NbdBlockStatus bs;
    NbdChunkError ce;
    char name[NBD_MAX_STRING + 1];
    NbdOptError oe;

#define SAME(n) do {                                                    \
        CU_ASSERT((size_t)(n) <= len && (size_t)(n) <= sizeof(out));    \
        if ((size_t)(n) <= len && (size_t)(n) <= sizeof(out)) {         \
            CU_ASSERT_EQUAL(memcmp(out, p, (size_t)(n)), 0);            \
        }                                                               \
        accepted++;                                                     \
    } while (0)

    if (nbd_decode_server_greeting(p, len, &h16)) {
        SAME(nbd_encode_server_greeting(out, h16));
    }
    if (nbd_decode_client_flags(p, len, &h32)) {
        SAME(nbd_encode_client_flags(out, h32));
    }
    if (nbd_decode_opt_hdr(p, len, &oh)) {
        SAME(nbd_encode_opt_hdr(out, oh.opt, oh.len));
    }
    if (nbd_parse_opt_export_name(p, len, name, &oe)) {
        CU_ASSERT_EQUAL(nbd_encode_opt_export_name(out, sizeof(out), name),
                        (ssize_t)len);
        SAME(len);
    }
    for (int x = 0; x < 2; x++) {
        NbdRequest rq;

        if (nbd_decode_request_len(p, len, x, &rq)) {
            SAME(nbd_encode_request(out, x, &rq));
        }
    }
    if (nbd_decode_opt_reply_hdr(p, len, &orh)) {
        SAME(nbd_encode_opt_reply_hdr(out, orh.opt, orh.type, orh.len));
    }
    if (nbd_decode_rep_server(p, len, &rs)) {
        CU_ASSERT_TRUE(str_inside(rs.name, p, len));
        CU_ASSERT_TRUE(str_inside(rs.desc, p, len));
        CU_ASSERT_EQUAL(nbd_encode_rep_server(out, sizeof(out), &rs),
                        (ssize_t)len);
        SAME(len);
    }
    if (nbd_decode_rep_info(p, len, &ri)) {
        CU_ASSERT_TRUE(str_inside(ri.str, p, len));
        CU_ASSERT_EQUAL(nbd_encode_rep_info(out, sizeof(out), &ri),
                        (ssize_t)len);
        SAME(len);
    }
    if (nbd_decode_rep_meta(p, len, &rm)) {
        CU_ASSERT_TRUE(str_inside(rm.name, p, len));
        CU_ASSERT_EQUAL(nbd_encode_rep_meta(out, sizeof(out), &rm),
                        (ssize_t)len);
        SAME(len);
    }
    if (nbd_decode_rep_error(p, len, &s)) {
        CU_ASSERT_TRUE(str_inside(s, p, len));
        CU_ASSERT_EQUAL(nbd_encode_rep_error(out, sizeof(out), s),
                        (ssize_t)len);
        SAME(len);
    }
    for (int nz = 0; nz < 2; nz++) {
        if (nbd_decode_export_name_reply(p, len, nz, &er)) {
            SAME(nbd_encode_export_name_reply(out, nz, &er));
        }
    }
    for (int mode = 0; mode < 3; mode++) {
        if (nbd_decode_reply_hdr(p, len, mode > 0, mode > 1, &rh)) {
            CU_ASSERT_EQUAL(nbd_reply_hdr_size(p, len),
                            nbd_encode_reply_hdr(out, &rh));
            SAME(nbd_reply_hdr_size(p, len));
        }
    }
    if (nbd_decode_offset_data_hdr(p, len, len, &a, &b)) {
        CU_ASSERT_EQUAL(a, get_be64(p));
        CU_ASSERT_EQUAL(b, len - 8);
        SAME(nbd_encode_offset_data_hdr(out, a));
    }
    if (nbd_decode_offset_hole(p, len, &ch)) {
        SAME(nbd_encode_offset_hole(out, &ch));
    }
    for (int x = 0; x < 2; x++) {
        if (nbd_decode_block_status(p, len, x, &bs)) {
            CU_ASSERT_FATAL(bs.count <= ARRAY_SIZE(ext));
            for (uint32_t i = 0; i < bs.count; i++) {
                nbd_block_status_extent(p, x, i, &ext[i]);
            }
            CU_ASSERT_EQUAL(nbd_encode_block_status(out, sizeof(out), x,
                                                    bs.context_id, ext,
                                                    bs.count),
                            (ssize_t)len);
            SAME(len);
        }
    }
    for (uint16_t t = NBD_REPLY_TYPE_ERROR; t <= NBD_REPLY_TYPE_ERROR_OFFSET;
         t++) {
        if (nbd_decode_chunk_error(p, len, t, &ce)) {
            CU_ASSERT_TRUE(str_inside(ce.msg, p, len));
            CU_ASSERT_EQUAL(nbd_encode_chunk_error(out, sizeof(out), t, &ce),
                            (ssize_t)len);
            SAME(len);
        }
    }
    if (nbd_decode_bs_payload(p, len, &a, &h32)) {
        CU_ASSERT_FATAL(h32 <= ARRAY_SIZE(ids));
        for (uint32_t i = 0; i < h32; i++) {
            ids[i] = nbd_bs_payload_id(p, i);
        }
        CU_ASSERT_EQUAL(nbd_encode_bs_payload(out, sizeof(out), a, ids, h32),
                        (ssize_t)len);
        SAME(len);
    }
#undef SAME
    return accepted;
}

/* Random bytes, and mutated valid messages of every kind, into every
 * decoder, each from an exact-size heap copy (ASan catches a read past
 * len); check_reencode() checks what is accepted. */
static void test_decoders_random(void)
{
    static const NbdExtent ext[] = { { 512, 1 }, { 4096, 3 } };
    static const uint32_t ids[] = { 0, 1 };
    uint8_t samples[20][64];
    size_t sample_len[20];
    size_t nsamples = 0;
    unsigned seed = 4242;
    long accepted = 0;

#define SAMPLE(expr) do {                                               \
        sample_len[nsamples] = (size_t)(expr);                          \
        nsamples++;                                                     \
    } while (0)
    {
        NbdRepServer rs = { .name = { "e0", 2 }, .desc = { "d", 1 } };
        NbdRepInfo ri = { .type = NBD_INFO_BLOCK_SIZE, .min_block = 1,
                          .pref_block = 4096, .max_payload = 1 << 25 };
        NbdRepInfo rn = { .type = NBD_INFO_NAME, .str = { "disk", 4 } };
        NbdRepMeta rm = { .id = 3, .name = { "base:allocation", 15 } };
        NbdExportNameReply er = { .size = 1 << 20, .tflags = 3 };
        NbdReplyHdr rh = { .magic = NBD_STRUCTURED_REPLY_MAGIC,
                           .flags = 1, .type = 2, .cookie = 5,
                           .length = 12 };
        NbdChunkHole ch = { .offset = 4096, .length = 512 };
        NbdChunkError ce = { .error = NBD_EIO, .msg = { "x", 1 },
                             .offset = 7 };
        NbdRequest rq = { .type = NBD_CMD_READ, .cookie = 1,
                          .offset = 512, .length = 4096 };
        uint8_t *sp;

        sp = samples[nsamples];
        SAMPLE(nbd_encode_server_greeting(sp, 3));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_opt_hdr(sp, NBD_OPT_GO, 10));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_opt_reply_hdr(sp, NBD_OPT_GO, NBD_REP_INFO, 12));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_rep_server(sp, 64, &rs));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_rep_info(sp, 64, &ri));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_rep_info(sp, 64, &rn));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_rep_meta(sp, 64, &rm));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_export_name_reply(sp, true, &er));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_reply_hdr(sp, &rh));
        rh.magic = NBD_EXTENDED_REPLY_MAGIC;
        sp = samples[nsamples];
        SAMPLE(nbd_encode_reply_hdr(sp, &rh));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_offset_hole(sp, &ch));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_block_status(sp, 64, false, 1, ext, 2));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_block_status(sp, 64, true, 1, ext, 2));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_chunk_error(sp, 64, NBD_REPLY_TYPE_ERROR_OFFSET,
                                      &ce));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_bs_payload(sp, 64, 1 << 20, ids, 2));
        sp = samples[nsamples];
        SAMPLE(nbd_encode_request(sp, true, &rq));
    }
#undef SAMPLE

    /* Every sample as it is is accepted by at least its own decoder. */
    for (size_t i = 0; i < nsamples; i++) {
        uint8_t *p = exact(samples[i], sample_len[i]);

        CU_ASSERT(check_reencode(p, sample_len[i]) > 0);
        free(p);
    }
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t raw[96];
        size_t len;
        uint8_t *p;

        seed = seed * 1103515245 + 12345;
        if (iter % 2) {
            size_t k = (seed >> 8) % nsamples;

            len = sample_len[k];
            memcpy(raw, samples[k], len);
            for (int f = 0; f < 2; f++) {
                seed = seed * 1103515245 + 12345;
                raw[(seed >> 8) % len] ^= 1 << ((seed >> 4) % 8);
            }
            seed = seed * 1103515245 + 12345;
            if (seed % 4 == 0) {
                len = (seed >> 8) % (len + 1);
            }
        } else {
            for (size_t i = 0; i < sizeof(raw); i++) {
                seed = seed * 1103515245 + 12345;
                /* mostly small values so that lengths often fit */
                raw[i] = (seed >> 16) % 4 ? (uint8_t)((seed >> 8) % 8)
                                          : (uint8_t)(seed >> 8);
            }
            seed = seed * 1103515245 + 12345;
            len = (seed >> 8) % (sizeof(raw) + 1);
        }
        p = exact(raw, len);
        accepted += check_reencode(p, len);
        free(p);
    }
    /* The generator must reach the accepting paths, not only errors. */
    CU_ASSERT(accepted > 5000);
}

static CU_TestInfo proto_tests[] = {
    { "errno", test_errno },
    { "request_roundtrip", test_request_roundtrip },
    { "encoders", test_encoders },
    { "info_ok", test_info_ok },
    { "info_bad", test_info_bad },
    { "info_long_name", test_info_long_name },
    { "export_name", test_export_name },
    { "export_name_empty_null", test_export_name_empty_null },
    { "meta_ok", test_meta_ok },
    { "meta_bad", test_meta_bad },
    { "check_request", test_check_request },
    { "parsers_random", test_parsers_random },
    { "greeting", test_greeting },
    { "client_flags", test_client_flags },
    { "opt_hdr", test_opt_hdr },
    { "opt_export_name_codec", test_opt_export_name_codec },
    { "opt_info_codec", test_opt_info_codec },
    { "opt_meta_codec", test_opt_meta_codec },
    { "opt_empty", test_opt_empty },
    { "opt_reply_hdr", test_opt_reply_hdr },
    { "rep_server", test_rep_server },
    { "rep_info", test_rep_info },
    { "rep_meta", test_rep_meta },
    { "rep_error", test_rep_error },
    { "export_name_reply", test_export_name_reply },
    { "request_bytes", test_request_bytes },
    { "bs_payload", test_bs_payload },
    { "reply_hdr", test_reply_hdr },
    { "offset_chunks", test_offset_chunks },
    { "block_status", test_block_status },
    { "chunk_error", test_chunk_error },
    { "decoders_random", test_decoders_random },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-proto", .pTests = proto_tests },
    CU_SUITE_INFO_NULL,
};
