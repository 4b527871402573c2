/* fuzz-nbd-proto.c - libFuzzer target for the NBD codec (nbd/proto.c),
 * both ends: every decoder a server or a client feeds with a peer's
 * bytes, then the request check.
 *
 * The first input byte picks a decoder, the second the negotiated mode
 * (structured, extended, no-zeroes); the rest is the message.  Beyond
 * "no crash, no read past len" (ASan), a message that decodes must
 * encode back to the same bytes: a decoder that accepts something its
 * own encoder would write differently has misread a field.
 *
 *   CC=clang meson setup build-fuzz -Dfuzzing=true
 *   build-fuzz/tests/fuzz/fuzz-nbd-proto -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/proto.h"

/* Abort (a finding) unless the re-encoded message equals the input. */
static void same(const uint8_t *want, size_t want_len, const uint8_t *got,
                 ssize_t got_len)
{
    if (got_len < 0 || (size_t)got_len != want_len ||
        memcmp(want, got, want_len) != 0) {
        abort();
    }
}

static uint8_t out[NBD_MAX_OPTION_LEN + 64];

static void fuzz_options(unsigned which, const uint8_t *buf, size_t len,
                         bool no_zeroes)
{
    uint16_t hflags;
    uint32_t cflags;
    NbdOptHdr oh;
    NbdOptReplyHdr rh;
    NbdRepServer srv;
    NbdRepInfo info;
    NbdRepMeta meta;
    NbdStr msg;
    NbdExportNameReply enr;
    NbdOptError err;
    static NbdOptInfo oi;
    static NbdOptMeta om;
    static char name[NBD_MAX_STRING + 1];

    switch (which) {
    case 0:
        if (nbd_decode_server_greeting(buf, len, &hflags)) {
            same(buf, NBD_GREETING_SIZE, out,
                 nbd_encode_server_greeting(out, hflags));
        }
        break;
    case 1:
        if (nbd_decode_client_flags(buf, len, &cflags)) {
            same(buf, NBD_CLIENT_FLAGS_SIZE, out,
                 nbd_encode_client_flags(out, cflags));
        }
        break;
    case 2:
        if (nbd_decode_opt_hdr(buf, len, &oh)) {
            same(buf, NBD_OPT_HDR_SIZE, out,
                 nbd_encode_opt_hdr(out, oh.opt, oh.len));
        }
        break;
    case 3:
        if (nbd_decode_opt_reply_hdr(buf, len, &rh)) {
            if (rh.len > NBD_MAX_OPTION_LEN) {
                abort();
            }
            same(buf, NBD_OPT_REPLY_HDR_SIZE, out,
                 nbd_encode_opt_reply_hdr(out, rh.opt, rh.type, rh.len));
        }
        break;
    case 4:
        if (nbd_decode_rep_server(buf, len, &srv)) {
            same(buf, len, out, nbd_encode_rep_server(out, sizeof(out),
                                                      &srv));
        }
        break;
    case 5:
        if (nbd_decode_rep_info(buf, len, &info)) {
            same(buf, len, out, nbd_encode_rep_info(out, sizeof(out),
                                                    &info));
        }
        break;
    case 6:
        if (nbd_decode_rep_meta(buf, len, &meta)) {
            if (meta.name.len == 0) {
                abort();
            }
            same(buf, len, out, nbd_encode_rep_meta(out, sizeof(out),
                                                    &meta));
        }
        break;
    case 7:
        if (nbd_decode_rep_error(buf, len, &msg)) {
            same(buf, len, out, nbd_encode_rep_error(out, sizeof(out), msg));
        }
        break;
    case 8:
        if (nbd_decode_export_name_reply(buf, len, no_zeroes, &enr)) {
            size_t n = no_zeroes ? NBD_EXPORT_NAME_REPLY_SHORT
                                 : NBD_EXPORT_NAME_REPLY_SIZE;

            same(buf, n, out,
                 nbd_encode_export_name_reply(out, no_zeroes, &enr));
        }
        break;
    case 9:
        /* Server-side option parsers copy into fixed buffers. */
        if (nbd_parse_opt_export_name(buf, len, name, &err) &&
            strlen(name) != len) {
            abort();
        }
        break;
    case 10:
        if (nbd_parse_opt_info(buf, len, &oi, &err) &&
            strlen(oi.name) > NBD_MAX_STRING) {
            abort();
        }
        break;
    case 11:
        if (nbd_parse_opt_meta(buf, len, &om, &err)) {
            size_t pos = om.queries_off;

            for (uint32_t i = 0; i < om.nqueries; i++) {
                const char *q;
                uint32_t qlen;

                nbd_meta_next_query(buf, &pos, &q, &qlen);
                if (pos > len || q < (const char *)buf ||
                    q + qlen > (const char *)buf + len) {
                    abort();
                }
            }
            if (pos != len) {
                abort();
            }
        }
        break;
    default:
        (void)nbd_parse_opt_empty(buf[0], len, &err);
        break;
    }
}

static void fuzz_transmission(unsigned which, const uint8_t *buf,
                              size_t len, bool structured, bool extended)
{
    NbdRequest req;
    NbdReplyHdr rh;
    NbdChunkHole hole;
    NbdBlockStatus bs;
    NbdChunkError ce;
    uint64_t off, dlen, effect;
    uint32_t n;

    switch (which) {
    case 0:
        if (nbd_decode_request_len(buf, len, extended, &req)) {
            NbdReqLimits lim = {
                .structured = structured || extended,
                .extended = extended,
                .read_only = len & 1,
                .have_contexts = len & 2,
                .size = 1ULL << 30,
                .max_payload = NBD_MAX_PAYLOAD,
            };
            uint64_t payload;
            const char *why = NULL;
            uint32_t verdict = nbd_check_request(&req, &lim, &payload, &why);

            if (verdict != 0 && why == NULL) {
                abort();
            }
            if (!extended) {
                /* Compact requests carry a 32-bit length. */
                same(buf, NBD_REQ_SIZE, out,
                     nbd_encode_request(out, false, &req));
            }
        }
        break;
    case 1: {
        size_t hl = nbd_reply_hdr_size(buf, len);

        if (nbd_decode_reply_hdr(buf, len, structured, extended, &rh)) {
            if (hl == 0 || hl > len) {
                abort();
            }
            same(buf, hl, out, nbd_encode_reply_hdr(out, &rh));
        }
        break;
    }
    case 2:
        if (len >= 8 && nbd_decode_offset_data_hdr(buf, len, len, &off,
                                                   &dlen)) {
            if (dlen == 0 || dlen + NBD_OFFSET_DATA_HDR_SIZE != len) {
                abort();
            }
        }
        break;
    case 3:
        if (nbd_decode_offset_hole(buf, len, &hole)) {
            if (hole.length == 0) {
                abort();
            }
            same(buf, NBD_OFFSET_HOLE_SIZE, out,
                 nbd_encode_offset_hole(out, &hole));
        }
        break;
    case 4:
        if (nbd_decode_block_status(buf, len, extended, &bs)) {
            if (nbd_block_status_size(extended, bs.count) != len) {
                abort();
            }
            for (uint32_t i = 0; i < bs.count; i++) {
                NbdExtent e;

                nbd_block_status_extent(buf, extended, i, &e);
                if (e.length == 0) {
                    abort();
                }
            }
        }
        break;
    case 5: {
        uint16_t type = len ? (uint16_t)(0x8000 | buf[0]) : 0x8001;

        if (len && nbd_decode_chunk_error(buf + 1, len - 1, type, &ce)) {
            if (ce.error == 0 || ce.msg.len > NBD_MAX_STRING ||
                (ce.msg.len &&
                 (ce.msg.ptr < (const char *)buf + 1 ||
                  ce.msg.ptr + ce.msg.len > (const char *)buf + len))) {
                abort();
            }
        }
        break;
    }
    default:
        if (nbd_decode_bs_payload(buf, len, &effect, &n)) {
            for (uint32_t i = 0; i < n; i++) {
                (void)nbd_bs_payload_id(buf, i);
            }
            if (8 + (size_t)n * 4 != len) {
                abort();
            }
        }
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned which, mode;
    uint8_t *buf;
    size_t len;

    if (size < 2) {
        return 0;
    }
    which = data[0];
    mode = data[1];
    len = size - 2;
    /* A copy of exactly len bytes, so ASan sees any read past it. */
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data + 2, len);
    if (which & 0x80) {
        fuzz_transmission((which & 0x7f) % 7, buf, len, mode & 1, mode & 2);
    } else {
        fuzz_options(which % 13, buf, len, mode & 4);
    }
    free(buf);
    return 0;
}
