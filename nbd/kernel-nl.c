/* kernel-nl.c - encode and decode the generic netlink messages of the
 * Linux "nbd" family (see kernel-nl.h).  Pure: buffers in, buffers out.
 *
 * A message is a struct nlmsghdr, a struct genlmsghdr, then attributes
 * (struct nlattr: length, type, payload padded to 4 bytes); a nested
 * attribute's payload is more attributes.
 */
#include <errno.h>
#include <string.h>

#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>

#include "nbd/kernel-nl.h"

/* ---- encoding ---------------------------------------------------------- */

typedef struct NlBuf {
    uint8_t *buf;
    size_t cap, len;
    bool overflow;
} NlBuf;

static void *nl_put(NlBuf *b, size_t len)
{
    size_t alen = NLMSG_ALIGN(len);
    void *p;

    if (b->overflow || b->len + alen > b->cap) {
        b->overflow = true;
        return NULL;
    }
    p = b->buf + b->len;
    memset(p, 0, alen);
    b->len += alen;
    return p;
}

static void nl_begin(NlBuf *b, uint16_t type, uint32_t seq, uint8_t cmd,
                     uint8_t version)
{
    struct nlmsghdr *h = nl_put(b, NLMSG_HDRLEN);
    struct genlmsghdr *g = nl_put(b, GENL_HDRLEN);

    if (!h || !g) {
        return;
    }
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    h->nlmsg_seq = seq;
    g->cmd = cmd;
    g->version = version;
}

static size_t nl_end(NlBuf *b)
{
    if (b->overflow) {
        return 0;
    }
    ((struct nlmsghdr *)b->buf)->nlmsg_len = (uint32_t)b->len;
    return b->len;
}

static void nl_attr(NlBuf *b, uint16_t type, const void *data, size_t len)
{
    struct nlattr *a = nl_put(b, NLA_HDRLEN + len);

    if (!a) {
        return;
    }
    a->nla_len = (uint16_t)(NLA_HDRLEN + len);
    a->nla_type = type;
    memcpy((uint8_t *)a + NLA_HDRLEN, data, len);
}

static void nl_u32(NlBuf *b, uint16_t type, uint32_t v)
{
    nl_attr(b, type, &v, sizeof(v));
}

static void nl_u64(NlBuf *b, uint16_t type, uint64_t v)
{
    nl_attr(b, type, &v, sizeof(v));
}

/* Open a nested attribute: returns its offset for nl_nest_end(). */
static size_t nl_nest_begin(NlBuf *b, uint16_t type)
{
    size_t off = b->len;
    struct nlattr *a = nl_put(b, NLA_HDRLEN);

    if (a) {
        a->nla_type = type | NLA_F_NESTED;
    }
    return off;
}

static void nl_nest_end(NlBuf *b, size_t off)
{
    if (!b->overflow) {
        ((struct nlattr *)(b->buf + off))->nla_len = (uint16_t)(b->len - off);
    }
}

size_t nbd_nl_encode_getfamily(uint8_t *buf, size_t cap, uint32_t seq)
{
    NlBuf b = { .buf = buf, .cap = cap };

    nl_begin(&b, GENL_ID_CTRL, seq, CTRL_CMD_GETFAMILY, 1);
    nl_attr(&b, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME,
            sizeof(NBD_GENL_FAMILY_NAME));
    return nl_end(&b);
}

size_t nbd_nl_encode_connect(uint8_t *buf, size_t cap, uint16_t family,
                             uint32_t seq, const NbdNlConnect *c)
{
    NlBuf b = { .buf = buf, .cap = cap };
    size_t socks;

    nl_begin(&b, family, seq, NBD_CMD_CONNECT, NBD_GENL_VERSION);
    if (c->has_index) {
        nl_u32(&b, NBD_ATTR_INDEX, c->index);
    }
    nl_u64(&b, NBD_ATTR_SIZE_BYTES, c->size_bytes);
    if (c->block_size) {
        nl_u64(&b, NBD_ATTR_BLOCK_SIZE_BYTES, c->block_size);
    }
    if (c->timeout) {
        nl_u64(&b, NBD_ATTR_TIMEOUT, c->timeout);
    }
    if (c->dead_conn_timeout) {
        nl_u64(&b, NBD_ATTR_DEAD_CONN_TIMEOUT, c->dead_conn_timeout);
    }
    nl_u64(&b, NBD_ATTR_SERVER_FLAGS, c->server_flags);
    if (c->client_flags) {
        nl_u64(&b, NBD_ATTR_CLIENT_FLAGS, c->client_flags);
    }
    if (c->backend_id) {
        nl_attr(&b, NBD_ATTR_BACKEND_IDENTIFIER, c->backend_id,
                strlen(c->backend_id) + 1);
    }
    socks = nl_nest_begin(&b, NBD_ATTR_SOCKETS);
    for (size_t i = 0; i < c->nfds; i++) {
        size_t item = nl_nest_begin(&b, NBD_SOCK_ITEM);

        nl_u32(&b, NBD_SOCK_FD, (uint32_t)c->fds[i]);
        nl_nest_end(&b, item);
    }
    nl_nest_end(&b, socks);
    return nl_end(&b);
}

size_t nbd_nl_encode_index_cmd(uint8_t *buf, size_t cap, uint16_t family,
                               uint32_t seq, uint8_t cmd, uint32_t index)
{
    NlBuf b = { .buf = buf, .cap = cap };

    nl_begin(&b, family, seq, cmd, NBD_GENL_VERSION);
    nl_u32(&b, NBD_ATTR_INDEX, index);
    return nl_end(&b);
}

/* ---- decoding ---------------------------------------------------------- */

/* Walk the attributes in [p, p+len): each call returns the next one
 * (type without flags, payload, payload length) or false at the end;
 * *bad is set when an attribute overruns. */
typedef struct NlIter {
    const uint8_t *p;
    size_t left;
    bool bad;
} NlIter;

static bool nl_next(NlIter *it, uint16_t *type, const uint8_t **data,
                    size_t *dlen)
{
    struct nlattr a;

    if (it->left < NLA_HDRLEN) {
        it->bad = it->bad || it->left != 0;
        return false;
    }
    memcpy(&a, it->p, sizeof(a));
    if (a.nla_len < NLA_HDRLEN || a.nla_len > it->left) {
        it->bad = true;
        return false;
    }
    *type = a.nla_type & NLA_TYPE_MASK;
    *data = it->p + NLA_HDRLEN;
    *dlen = a.nla_len - NLA_HDRLEN;
    if ((size_t)NLA_ALIGN(a.nla_len) >= it->left) {
        it->left = 0;
    } else {
        it->p += NLA_ALIGN(a.nla_len);
        it->left -= NLA_ALIGN(a.nla_len);
    }
    return true;
}

static bool get_u32(const uint8_t *d, size_t len, uint32_t *v)
{
    if (len < sizeof(*v)) {
        return false;
    }
    memcpy(v, d, sizeof(*v));
    return true;
}

static bool decode_mcgroups(const uint8_t *d, size_t len, NbdNlMsg *m)
{
    NlIter groups = { .p = d, .left = len };
    const uint8_t *gd;
    size_t glen;
    uint16_t t;

    while (nl_next(&groups, &t, &gd, &glen)) {
        NlIter g = { .p = gd, .left = glen };
        const uint8_t *ad;
        size_t alen;
        bool ours = false;
        uint32_t id = 0;

        while (nl_next(&g, &t, &ad, &alen)) {
            if (t == CTRL_ATTR_MCAST_GRP_NAME &&
                alen >= sizeof(NBD_GENL_MCAST_GROUP_NAME) &&
                memcmp(ad, NBD_GENL_MCAST_GROUP_NAME,
                       sizeof(NBD_GENL_MCAST_GROUP_NAME)) == 0) {
                ours = true;
            } else if (t == CTRL_ATTR_MCAST_GRP_ID && !get_u32(ad, alen,
                                                               &id)) {
                return false;
            }
        }
        if (g.bad) {
            return false;
        }
        if (ours) {
            m->mcgrp_id = id;
        }
    }
    return !groups.bad;
}

static bool decode_devices(const uint8_t *d, size_t len, NbdNlMsg *m)
{
    NlIter items = { .p = d, .left = len };
    const uint8_t *id;
    size_t ilen;
    uint16_t t;

    while (nl_next(&items, &t, &id, &ilen)) {
        NlIter it = { .p = id, .left = ilen };
        const uint8_t *ad;
        size_t alen;

        if (t != NBD_DEVICE_ITEM || m->has_connected) {
            continue;
        }
        while (nl_next(&it, &t, &ad, &alen)) {
            if (t == NBD_DEVICE_INDEX) {
                if (!get_u32(ad, alen, &m->index)) {
                    return false;
                }
                m->has_index = true;
            } else if (t == NBD_DEVICE_CONNECTED && alen >= 1) {
                m->has_connected = true;
                m->connected = ad[0] != 0;
            }
        }
        if (it.bad) {
            return false;
        }
    }
    return !items.bad;
}

long nbd_nl_decode(const uint8_t *buf, size_t len, uint16_t family,
                   NbdNlMsg *m)
{
    struct nlmsghdr h;
    struct genlmsghdr g;
    NlIter it;
    const uint8_t *d;
    size_t dlen;
    uint16_t t;

    memset(m, 0, sizeof(*m));
    if (len < NLMSG_HDRLEN) {
        return 0;
    }
    memcpy(&h, buf, sizeof(h));
    if (h.nlmsg_len < NLMSG_HDRLEN) {
        return -EPROTO;
    }
    if (h.nlmsg_len > len) {
        return 0;
    }
    m->type = h.nlmsg_type;
    m->seq = h.nlmsg_seq;
    if (h.nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr e;

        if (h.nlmsg_len < NLMSG_HDRLEN + sizeof(e.error)) {
            return -EPROTO;
        }
        memcpy(&e.error, buf + NLMSG_HDRLEN, sizeof(e.error));
        m->is_error = true;
        m->error = e.error > 0 ? -e.error : e.error;
        return (long)NLMSG_ALIGN(h.nlmsg_len);
    }
    if (h.nlmsg_type == NLMSG_DONE) {
        m->is_done = true;
        return (long)NLMSG_ALIGN(h.nlmsg_len);
    }
    if (h.nlmsg_type == NLMSG_NOOP || h.nlmsg_type == NLMSG_OVERRUN) {
        return (long)NLMSG_ALIGN(h.nlmsg_len);
    }
    if (h.nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN) {
        return -EPROTO;
    }
    memcpy(&g, buf + NLMSG_HDRLEN, sizeof(g));
    m->cmd = g.cmd;
    it.p = buf + NLMSG_HDRLEN + GENL_HDRLEN;
    it.left = h.nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
    it.bad = false;
    while (nl_next(&it, &t, &d, &dlen)) {
        if (family == 0 && h.nlmsg_type == GENL_ID_CTRL) {
            if (t == CTRL_ATTR_FAMILY_ID) {
                if (dlen < sizeof(m->family_id)) {
                    return -EPROTO;
                }
                memcpy(&m->family_id, d, sizeof(m->family_id));
            } else if (t == CTRL_ATTR_MCAST_GROUPS &&
                       !decode_mcgroups(d, dlen, m)) {
                return -EPROTO;
            }
        } else if (family != 0 && h.nlmsg_type == family) {
            if (t == NBD_ATTR_INDEX) {
                if (!get_u32(d, dlen, &m->index)) {
                    return -EPROTO;
                }
                m->has_index = true;
            } else if (t == NBD_ATTR_DEVICE_LIST &&
                       !decode_devices(d, dlen, m)) {
                return -EPROTO;
            }
        }
    }
    if (it.bad) {
        return -EPROTO;
    }
    return (long)NLMSG_ALIGN(h.nlmsg_len);
}
