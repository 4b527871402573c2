/* fuzz-nbd-client.c - libFuzzer target for the client side of the NBD
 * handshake (nbd/client.c): the input is everything a server sends.
 * The first byte picks the mode (handshake with meta contexts,
 * handshake without structured replies, or list mode); the rest is
 * written into one end of a socketpair, which is then shut down, and
 * the client runs on the other end.  Every input must end in success
 * or a clean Error: never a crash, a leak or a read past a buffer.
 *
 *   build-asan/tests/fuzz/fuzz-nbd-client -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz-nbd-client
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/client.h"
#include "util/util.h"

/* Inputs fit the socket buffer: the client's writes and the server's
 * bytes never block. */
#define FUZZ_MAX 32768

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const want[] = {
        "base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:",
    };
    NbdClientOpts o = { .export_name = "disk", .timeout_ms = -1,
                        .meta_contexts = want, .n_meta_contexts = 3 };
    Error *err = NULL;
    int sv[2];
    uint8_t mode;

    if (size < 1 || size > FUZZ_MAX) {
        return 0;
    }
    mode = data[0] % 3;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        abort();
    }
    if (write_full(sv[0], data + 1, size - 1) != 0) {
        abort();
    }
    shutdown(sv[0], SHUT_WR);
    if (mode == 2) {
        SockAddr addr = { .type = SOCK_ADDR_FD, .fd = sv[1] };
        NbdExportList l;

        if (nbd_client_list(&addr, &o, &l, &err)) {
            FILE *f = fopen("/dev/null", "w");

            nbd_export_list_print(f, &l);
            fclose(f);
            nbd_export_list_clear(&l);
        }
    } else {
        NbdClientXport xp;
        NbdExportInfo info;

        o.no_structured = mode == 1;
        nbd_client_xport_init_plain(&xp, sv[1], -1);
        if (nbd_client_handshake(&xp, &o, &info, &err)) {
            nbd_export_info_clear(&info);
        }
        xp.ops->close(&xp);
    }
    error_free(err);
    close(sv[0]);
    return 0;
}
