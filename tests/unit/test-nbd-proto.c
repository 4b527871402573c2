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
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-proto", .pTests = proto_tests },
    CU_SUITE_INFO_NULL,
};
