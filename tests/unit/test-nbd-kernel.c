/* test-nbd-kernel.c - the kernel NBD netlink messages (nbd/kernel-nl.c)
 * and the checks of nbd/kernel.c that need no kernel: the requests are
 * walked attribute by attribute, the replies are built by hand the way
 * the kernel lays them out. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>

#include "cunit-main.h"
#include "nbd/kernel-nl.h"
#include "nbd/kernel.h"
#include "util/cleanup.h"
#include "util/util.h"

/* ---- a small attribute reader for the requests --------------------------- */

static const struct nlattr *attr_find(const uint8_t *p, size_t len,
                                      uint16_t type)
{
    while (len >= NLA_HDRLEN) {
        const struct nlattr *a = (const struct nlattr *)p;

        if (a->nla_len < NLA_HDRLEN || a->nla_len > len) {
            return NULL;
        }
        if ((a->nla_type & NLA_TYPE_MASK) == type) {
            return a;
        }
        if ((size_t)NLA_ALIGN(a->nla_len) >= len) {
            break;
        }
        p += NLA_ALIGN(a->nla_len);
        len -= NLA_ALIGN(a->nla_len);
    }
    return NULL;
}

static const uint8_t *attr_data(const struct nlattr *a)
{
    return (const uint8_t *)a + NLA_HDRLEN;
}

static size_t attr_len(const struct nlattr *a)
{
    return a->nla_len - NLA_HDRLEN;
}

static uint64_t attr_u64(const struct nlattr *a)
{
    uint64_t v;

    CU_ASSERT_EQUAL_FATAL(attr_len(a), 8);
    memcpy(&v, attr_data(a), 8);
    return v;
}

static uint32_t attr_u32(const struct nlattr *a)
{
    uint32_t v;

    CU_ASSERT_EQUAL_FATAL(attr_len(a), 4);
    memcpy(&v, attr_data(a), 4);
    return v;
}

/* ---- a small writer for the replies -------------------------------------- */

typedef struct Msg {
    uint8_t buf[1024];
    size_t len;
} Msg;

static void msg_begin(Msg *m, uint16_t type, uint32_t seq, uint8_t cmd)
{
    struct nlmsghdr h = { .nlmsg_type = type, .nlmsg_seq = seq };
    struct genlmsghdr g = { .cmd = cmd, .version = 1 };

    memset(m, 0, sizeof(*m));
    memcpy(m->buf, &h, sizeof(h));
    memcpy(m->buf + NLMSG_HDRLEN, &g, sizeof(g));
    m->len = NLMSG_HDRLEN + GENL_HDRLEN;
}

static size_t msg_attr(Msg *m, uint16_t type, const void *data, size_t len)
{
    struct nlattr a = { .nla_len = (uint16_t)(NLA_HDRLEN + len),
                        .nla_type = type };
    size_t off = m->len;

    memcpy(m->buf + m->len, &a, sizeof(a));
    if (len) {
        memcpy(m->buf + m->len + NLA_HDRLEN, data, len);
    }
    m->len += NLA_ALIGN(NLA_HDRLEN + len);
    return off;
}

static void msg_nest_end(Msg *m, size_t off)
{
    struct nlattr *a = (struct nlattr *)(m->buf + off);

    a->nla_len = (uint16_t)(m->len - off);
}

static void msg_end(Msg *m)
{
    uint32_t len = (uint32_t)m->len;

    memcpy(m->buf, &len, sizeof(len));
}

/* ---- requests ------------------------------------------------------------ */

static void test_getfamily(void)
{
    uint8_t buf[256];
    size_t len = nbd_nl_encode_getfamily(buf, sizeof(buf), 42);
    const struct nlmsghdr *h = (const struct nlmsghdr *)buf;
    const struct genlmsghdr *g = (const void *)(buf + NLMSG_HDRLEN);
    const struct nlattr *a;

    CU_ASSERT_TRUE_FATAL(len > 0);
    CU_ASSERT_EQUAL(h->nlmsg_len, len);
    CU_ASSERT_EQUAL(h->nlmsg_type, GENL_ID_CTRL);
    CU_ASSERT_EQUAL(h->nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK);
    CU_ASSERT_EQUAL(h->nlmsg_seq, 42);
    CU_ASSERT_EQUAL(g->cmd, CTRL_CMD_GETFAMILY);
    a = attr_find(buf + NLMSG_HDRLEN + GENL_HDRLEN,
                  len - NLMSG_HDRLEN - GENL_HDRLEN, CTRL_ATTR_FAMILY_NAME);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(attr_len(a), 4);
    CU_ASSERT_STRING_EQUAL((const char *)attr_data(a), "nbd");
    /* Too small a buffer: nothing. */
    CU_ASSERT_EQUAL(nbd_nl_encode_getfamily(buf, 20, 1), 0);
}

static void test_connect(void)
{
    uint8_t buf[NBD_NL_BUF_SIZE];
    int fds[3] = { 7, 9, 11 };
    NbdNlConnect c = {
        .has_index = true, .index = 5, .size_bytes = 1ULL << 40,
        .block_size = 4096, .timeout = 30, .dead_conn_timeout = 10,
        .server_flags = 0x1234, .client_flags = 2, .fds = fds, .nfds = 3,
        .backend_id = "blockd:e0",
    };
    size_t len = nbd_nl_encode_connect(buf, sizeof(buf), 0x1b, 9, &c);
    const uint8_t *attrs = buf + NLMSG_HDRLEN + GENL_HDRLEN;
    size_t alen = len - NLMSG_HDRLEN - GENL_HDRLEN;
    const struct genlmsghdr *g = (const void *)(buf + NLMSG_HDRLEN);
    const struct nlattr *a, *socks, *item;
    const uint8_t *p;
    size_t left;
    int n = 0;

    CU_ASSERT_TRUE_FATAL(len > 0);
    CU_ASSERT_EQUAL(((struct nlmsghdr *)buf)->nlmsg_type, 0x1b);
    CU_ASSERT_EQUAL(g->cmd, NBD_CMD_CONNECT);
    CU_ASSERT_EQUAL(g->version, NBD_GENL_VERSION);
    CU_ASSERT_EQUAL(attr_u32(attr_find(attrs, alen, NBD_ATTR_INDEX)), 5);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen, NBD_ATTR_SIZE_BYTES)),
                    1ULL << 40);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen,
                                       NBD_ATTR_BLOCK_SIZE_BYTES)), 4096);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen, NBD_ATTR_TIMEOUT)), 30);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen,
                                       NBD_ATTR_DEAD_CONN_TIMEOUT)), 10);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen,
                                       NBD_ATTR_SERVER_FLAGS)), 0x1234);
    CU_ASSERT_EQUAL(attr_u64(attr_find(attrs, alen,
                                       NBD_ATTR_CLIENT_FLAGS)), 2);
    a = attr_find(attrs, alen, NBD_ATTR_BACKEND_IDENTIFIER);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_STRING_EQUAL((const char *)attr_data(a), "blockd:e0");
    socks = attr_find(attrs, alen, NBD_ATTR_SOCKETS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(socks);
    CU_ASSERT_TRUE(socks->nla_type & NLA_F_NESTED);
    /* Three NBD_SOCK_ITEMs, each holding one NBD_SOCK_FD, in order. */
    p = attr_data(socks);
    left = attr_len(socks);
    while (left >= NLA_HDRLEN) {
        item = (const struct nlattr *)p;
        CU_ASSERT_EQUAL_FATAL(item->nla_type & NLA_TYPE_MASK, NBD_SOCK_ITEM);
        a = attr_find(attr_data(item), attr_len(item), NBD_SOCK_FD);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT_EQUAL(attr_u32(a), (uint32_t)fds[n]);
        n++;
        left -= NLA_ALIGN(item->nla_len);
        p += NLA_ALIGN(item->nla_len);
    }
    CU_ASSERT_EQUAL(n, 3);

    /* No index ("first free"), no optional values: not sent at all. */
    memset(&c, 0, sizeof(c));
    c.size_bytes = 512;
    c.fds = fds;
    c.nfds = 1;
    len = nbd_nl_encode_connect(buf, sizeof(buf), 0x1b, 10, &c);
    attrs = buf + NLMSG_HDRLEN + GENL_HDRLEN;
    alen = len - NLMSG_HDRLEN - GENL_HDRLEN;
    CU_ASSERT_PTR_NULL(attr_find(attrs, alen, NBD_ATTR_INDEX));
    CU_ASSERT_PTR_NULL(attr_find(attrs, alen, NBD_ATTR_TIMEOUT));
    CU_ASSERT_PTR_NULL(attr_find(attrs, alen, NBD_ATTR_BLOCK_SIZE_BYTES));
    CU_ASSERT_PTR_NULL(attr_find(attrs, alen, NBD_ATTR_BACKEND_IDENTIFIER));
    CU_ASSERT_PTR_NOT_NULL(attr_find(attrs, alen, NBD_ATTR_SERVER_FLAGS));
    /* Overflow: 0, never a partial message. */
    CU_ASSERT_EQUAL(nbd_nl_encode_connect(buf, 40, 0x1b, 11, &c), 0);
}

static void test_index_cmd(void)
{
    uint8_t buf[256];
    size_t len = nbd_nl_encode_index_cmd(buf, sizeof(buf), 0x1b, 3,
                                         NBD_CMD_DISCONNECT, 12);
    const struct genlmsghdr *g = (const void *)(buf + NLMSG_HDRLEN);

    CU_ASSERT_TRUE_FATAL(len > 0);
    CU_ASSERT_EQUAL(g->cmd, NBD_CMD_DISCONNECT);
    CU_ASSERT_EQUAL(attr_u32(attr_find(buf + NLMSG_HDRLEN + GENL_HDRLEN,
                                       len - NLMSG_HDRLEN - GENL_HDRLEN,
                                       NBD_ATTR_INDEX)), 12);
}

/* ---- replies ------------------------------------------------------------- */

static void test_family_reply(void)
{
    Msg m;
    NbdNlMsg r;
    uint16_t id = 0x1b;
    uint32_t grp = 9, other = 4;
    size_t groups, g;

    msg_begin(&m, GENL_ID_CTRL, 77, CTRL_CMD_NEWFAMILY);
    msg_attr(&m, CTRL_ATTR_FAMILY_NAME, "nbd", 4);
    msg_attr(&m, CTRL_ATTR_FAMILY_ID, &id, sizeof(id));
    groups = msg_attr(&m, CTRL_ATTR_MCAST_GROUPS | NLA_F_NESTED, NULL, 0);
    g = msg_attr(&m, 1 | NLA_F_NESTED, NULL, 0);
    msg_attr(&m, CTRL_ATTR_MCAST_GRP_NAME, "other", 6);
    msg_attr(&m, CTRL_ATTR_MCAST_GRP_ID, &other, sizeof(other));
    msg_nest_end(&m, g);
    g = msg_attr(&m, 2 | NLA_F_NESTED, NULL, 0);
    msg_attr(&m, CTRL_ATTR_MCAST_GRP_ID, &grp, sizeof(grp));
    msg_attr(&m, CTRL_ATTR_MCAST_GRP_NAME, "nbd_mc_group", 13);
    msg_nest_end(&m, g);
    msg_nest_end(&m, groups);
    msg_end(&m);

    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0, &r), (long)m.len);
    CU_ASSERT_EQUAL(r.seq, 77);
    CU_ASSERT_FALSE(r.is_error);
    CU_ASSERT_EQUAL(r.family_id, 0x1b);
    CU_ASSERT_EQUAL(r.mcgrp_id, 9);
    /* Not all there yet: 0, read more. */
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len - 4, 0, &r), 0);
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, 10, 0, &r), 0);
}

static void test_connect_reply_and_ack(void)
{
    Msg m;
    NbdNlMsg r;
    uint32_t index = 3;
    struct nlmsghdr h = { .nlmsg_len = NLMSG_HDRLEN + sizeof(struct nlmsgerr),
                          .nlmsg_type = NLMSG_ERROR, .nlmsg_seq = 5 };
    struct nlmsgerr e = { .error = -EBUSY };
    uint8_t two[2048];
    long n;

    msg_begin(&m, 0x1b, 5, NBD_CMD_CONNECT);
    msg_attr(&m, NBD_ATTR_INDEX, &index, sizeof(index));
    msg_end(&m);
    /* The reply, then an error message, in one read. */
    memcpy(two, m.buf, m.len);
    memcpy(two + m.len, &h, sizeof(h));
    memcpy(two + m.len + NLMSG_HDRLEN, &e, sizeof(e));
    n = nbd_nl_decode(two, m.len + h.nlmsg_len, 0x1b, &r);
    CU_ASSERT_EQUAL_FATAL(n, (long)m.len);
    CU_ASSERT_EQUAL(r.cmd, NBD_CMD_CONNECT);
    CU_ASSERT_TRUE(r.has_index);
    CU_ASSERT_EQUAL(r.index, 3);
    n = nbd_nl_decode(two + n, h.nlmsg_len, 0x1b, &r);
    CU_ASSERT_EQUAL(n, (long)NLMSG_ALIGN(h.nlmsg_len));
    CU_ASSERT_TRUE(r.is_error);
    CU_ASSERT_EQUAL(r.error, -EBUSY);
    /* An ack is an error message with 0. */
    e.error = 0;
    memcpy(two + NLMSG_HDRLEN, &e, sizeof(e));
    memcpy(two, &h, sizeof(h));
    CU_ASSERT_TRUE(nbd_nl_decode(two, h.nlmsg_len, 0x1b, &r) > 0);
    CU_ASSERT_TRUE(r.is_error);
    CU_ASSERT_EQUAL(r.error, 0);
    /* Another family's message carries nothing for us. */
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1c, &r), (long)m.len);
    CU_ASSERT_FALSE(r.has_index);
}

static void test_status_and_link_dead(void)
{
    Msg m;
    NbdNlMsg r;
    uint32_t index = 6;
    uint8_t connected = 1;
    size_t list, item;

    msg_begin(&m, 0x1b, 8, NBD_CMD_STATUS);
    list = msg_attr(&m, NBD_ATTR_DEVICE_LIST | NLA_F_NESTED, NULL, 0);
    item = msg_attr(&m, NBD_DEVICE_ITEM | NLA_F_NESTED, NULL, 0);
    msg_attr(&m, NBD_DEVICE_INDEX, &index, sizeof(index));
    msg_attr(&m, NBD_DEVICE_CONNECTED, &connected, 1);
    msg_nest_end(&m, item);
    msg_nest_end(&m, list);
    msg_end(&m);
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), (long)m.len);
    CU_ASSERT_TRUE(r.has_index);
    CU_ASSERT_EQUAL(r.index, 6);
    CU_ASSERT_TRUE(r.has_connected);
    CU_ASSERT_TRUE(r.connected);

    msg_begin(&m, 0x1b, 0, NBD_CMD_LINK_DEAD);
    msg_attr(&m, NBD_ATTR_INDEX, &index, sizeof(index));
    msg_end(&m);
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), (long)m.len);
    CU_ASSERT_EQUAL(r.cmd, NBD_CMD_LINK_DEAD);
    CU_ASSERT_EQUAL(r.index, 6);
}

static void test_malformed(void)
{
    Msg m;
    NbdNlMsg r;
    uint32_t index = 1;
    struct nlattr *a;
    uint16_t small = 1;

    /* An attribute that overruns its message. */
    msg_begin(&m, 0x1b, 1, NBD_CMD_CONNECT);
    msg_attr(&m, NBD_ATTR_INDEX, &index, sizeof(index));
    msg_end(&m);
    a = (struct nlattr *)(m.buf + NLMSG_HDRLEN + GENL_HDRLEN);
    a->nla_len = 200;
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), -EPROTO);
    /* An index too short for a u32. */
    msg_begin(&m, 0x1b, 1, NBD_CMD_CONNECT);
    msg_attr(&m, NBD_ATTR_INDEX, &small, sizeof(small));
    msg_end(&m);
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), -EPROTO);
    /* A length smaller than the header. */
    msg_begin(&m, 0x1b, 1, NBD_CMD_CONNECT);
    ((struct nlmsghdr *)m.buf)->nlmsg_len = 8;
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), -EPROTO);
    /* A generic message without its genl header. */
    ((struct nlmsghdr *)m.buf)->nlmsg_len = NLMSG_HDRLEN + 2;
    CU_ASSERT_EQUAL(nbd_nl_decode(m.buf, m.len, 0x1b, &r), -EPROTO);
}

/* ---- the checks that need no kernel -------------------------------------- */

static void test_check_module(void)
{
    CLEANUP_FREE char *root = xasprintf("%s/sys", unit_tmpdir());
    CLEANUP_FREE char *mod = xasprintf("%s/module", root);
    CLEANUP_FREE char *nbd = xasprintf("%s/module/nbd", root);
    Error *err = NULL;

    CU_ASSERT_EQUAL_FATAL(mkdir(root, 0755), 0);
    CU_ASSERT_EQUAL_FATAL(mkdir(mod, 0755), 0);
    CU_ASSERT_FALSE(nbd_kernel_check_module(root, &err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(err);
    CU_ASSERT_PTR_NOT_NULL(strstr(error_get_pretty(err), "modprobe nbd"));
    error_free(err);
    err = NULL;
    CU_ASSERT_EQUAL_FATAL(mkdir(nbd, 0755), 0);
    CU_ASSERT_TRUE(nbd_kernel_check_module(root, &err));
    CU_ASSERT_PTR_NULL(err);
}

static void test_parse_device(void)
{
    static const char *const bad[] = {
        "/dev/sda", "/dev/nbd", "/dev/nbd-1", "/dev/nbd1p1", "nbdx",
        "/dev/nbd 1", "/dev/nbd99999999999", "",
    };
    uint32_t index;
    Error *err = NULL;

    CU_ASSERT_TRUE(nbd_kernel_parse_device("/dev/nbd0", &index, NULL));
    CU_ASSERT_EQUAL(index, 0);
    CU_ASSERT_TRUE(nbd_kernel_parse_device("/dev/nbd15", &index, NULL));
    CU_ASSERT_EQUAL(index, 15);
    CU_ASSERT_TRUE(nbd_kernel_parse_device("nbd3", &index, NULL));
    CU_ASSERT_EQUAL(index, 3);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_FALSE(nbd_kernel_parse_device(bad[i], &index, &err));
        CU_ASSERT_PTR_NOT_NULL(err);
        error_free(err);
        err = NULL;
    }
}

/* Only a block device of the nbd major is one (what blockd-nbd -c
 * answers "Failed to set NBD socket" for otherwise). */
static void test_fd_index(void)
{
    static const char *const paths[] = { "/dev/null", "/dev/zero", "/" };
    char tmpl[] = "/tmp/test-nbd-kernel-XXXXXX";
    uint32_t index = 77;
    int fd;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        CU_ASSERT_TRUE_FATAL(fd >= 0);
        CU_ASSERT_FALSE(nbd_kernel_fd_index(fd, &index));
        close(fd);
    }
    fd = mkstemp(tmpl);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    unlink(tmpl);
    CU_ASSERT_FALSE(nbd_kernel_fd_index(fd, &index));
    close(fd);
    CU_ASSERT_FALSE(nbd_kernel_fd_index(-1, &index));
    CU_ASSERT_EQUAL(index, 77);
}

static CU_TestInfo nl_tests[] = {
    { "getfamily", test_getfamily },
    { "connect", test_connect },
    { "index_cmd", test_index_cmd },
    { "family_reply", test_family_reply },
    { "connect_reply_and_ack", test_connect_reply_and_ack },
    { "status_and_link_dead", test_status_and_link_dead },
    { "malformed", test_malformed },
    CU_TEST_INFO_NULL,
};

static CU_TestInfo kernel_tests[] = {
    { "check_module", test_check_module },
    { "parse_device", test_parse_device },
    { "fd_index", test_fd_index },
    CU_TEST_INFO_NULL,
};

const CU_SuiteInfo unit_suites[] = {
    { .pName = "nbd-kernel-nl", .pTests = nl_tests },
    { .pName = "nbd-kernel", .pTests = kernel_tests },
    CU_SUITE_INFO_NULL,
};
