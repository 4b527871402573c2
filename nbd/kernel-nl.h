/* kernel-nl.h - the few generic netlink messages of the Linux "nbd"
 * family, encoded and decoded as pure functions over buffers (no socket
 * here: nbd/kernel.c sends them, the unit tests round-trip them).
 *
 * Messages (linux/nbd-netlink.h):
 *   CTRL_CMD_GETFAMILY "nbd"  -> family id, "nbd_mc_group" id
 *   NBD_CMD_CONNECT           -> reply carries NBD_ATTR_INDEX
 *   NBD_CMD_DISCONNECT, NBD_CMD_STATUS (INDEX)
 *   NBD_CMD_LINK_DEAD         <- multicast, carries NBD_ATTR_INDEX
 */
#ifndef BLOCKD_NBD_KERNEL_NL_H
#define BLOCKD_NBD_KERNEL_NL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_NL_BUF_SIZE 8192

typedef struct NbdNlConnect {
    bool has_index;               /* false: the kernel picks a device */
    uint32_t index;
    uint64_t size_bytes;
    uint64_t block_size;          /* 0: not sent (kernel default) */
    uint64_t timeout;             /* seconds, 0: not sent */
    uint64_t dead_conn_timeout;   /* seconds, 0: not sent */
    uint64_t server_flags;        /* NBD_FLAG_* transmission flags */
    uint64_t client_flags;        /* NBD_CFLAG_* */
    const int *fds;               /* the kernel's ends of the sockets */
    size_t nfds;
    const char *backend_id;       /* NULL: not sent */
} NbdNlConnect;

/* Each encoder writes one request (NLM_F_REQUEST | NLM_F_ACK) into buf
 * and returns its length, 0 if cap is too small. */
size_t nbd_nl_encode_getfamily(uint8_t *buf, size_t cap, uint32_t seq);
size_t nbd_nl_encode_connect(uint8_t *buf, size_t cap, uint16_t family,
                             uint32_t seq, const NbdNlConnect *c);
/* cmd: NBD_CMD_DISCONNECT or NBD_CMD_STATUS. */
size_t nbd_nl_encode_index_cmd(uint8_t *buf, size_t cap, uint16_t family,
                               uint32_t seq, uint8_t cmd, uint32_t index);

/* One decoded netlink message. */
typedef struct NbdNlMsg {
    uint16_t type;                /* nlmsg_type */
    uint32_t seq;
    bool is_error;                /* NLMSG_ERROR: an ack when error == 0 */
    int error;                    /* -errno from the kernel, 0 = ack */
    bool is_done;                 /* NLMSG_DONE */
    uint8_t cmd;                  /* generic netlink command */
    /* CTRL_CMD_NEWFAMILY */
    uint16_t family_id;
    uint32_t mcgrp_id;            /* "nbd_mc_group", 0 when absent */
    /* nbd family */
    bool has_index;
    uint32_t index;
    bool has_connected;           /* NBD_CMD_STATUS: first device item */
    bool connected;
} NbdNlMsg;

/* Decode the message at the start of buf (len bytes), for which family
 * (0: the controller's reply to GETFAMILY).  Returns its aligned length
 * (> 0; the next message follows), 0 when buf holds no whole message,
 * -EPROTO when it is malformed. */
long nbd_nl_decode(const uint8_t *buf, size_t len, uint16_t family,
                   NbdNlMsg *msg);

#endif
