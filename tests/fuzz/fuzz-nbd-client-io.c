/* fuzz-nbd-client-io.c - libFuzzer target for the NBD client's
 * transmission engine (nbd/client-io.c): the input is everything a
 * server sends after the handshake.  The first byte picks the reply
 * mode (simple, structured, extended headers); the rest is written into
 * one end of a socketpair, whose sending side is then shut down, and an
 * engine on the other end runs a few commands (a read split in two
 * pieces, another read, block status, a write, a flush).  Every command
 * must end -- with the server's answer, or EIO once the stream breaks
 * the protocol or ends -- and the engine must stop cleanly: never a
 * crash, a hang, a leak or a read past a buffer.  Cookies are
 * predictable (the first piece has cookie 0, the next 1, ...), so
 * inputs can answer them.
 *
 *   build-asan/tests/fuzz/fuzz-nbd-client-io -max_total_time=60 \
 *       tests/fuzz/corpus/fuzz-nbd-client-io
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/client-io.h"
#include "nbd/proto.h"
#include "util/log.h"
#include "util/util.h"

/* Inputs fit the socket buffer: writing them never blocks. */
#define FUZZ_MAX 32768
#define NCMDS 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;

static void cmd_done(NbdcCmd *cmd)
{
    (void)cmd;
    pthread_mutex_lock(&lock);
    done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void fd_close(NbdClientXport *xp)
{
    close(xp->fd);
    xp->fd = -1;
}

static const NbdClientXportOps fuzz_ops = { .close = fd_close };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t rbuf[3][8192];
    static uint8_t wbuf[512];
    NbdcConfig cfg = { .name = "fuzz", .max_payload = 4096 };
    NbdcCmd cmds[NCMDS];
    NbdcLink link;
    NbdcEngine *e;
    int sv[2];
    uint8_t mode;

    if (size < 1 || size > FUZZ_MAX) {
        return 0;
    }
    log_set_level(LOG_LEVEL_ERROR);
    mode = data[0] % 3;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    if (size > 1 && write(sv[0], data + 1, size - 1) != (ssize_t)(size - 1)) {
        abort();
    }
    shutdown(sv[0], SHUT_WR);
    link = (NbdcLink) {
        .xp = { .ops = &fuzz_ops, .fd = sv[1], .timeout_ms = -1 },
        .size = 1 << 20,
        .flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH,
        .structured = mode >= 1, .extended = mode == 2,
        .has_context = mode >= 1, .context_id = 1,
    };
    e = nbdc_engine_new(&cfg, &link, 1, NULL);
    if (e == NULL) {
        abort();
    }
    cmds[0] = (NbdcCmd) { .type = NBD_CMD_READ, .offset = 0,
                          .length = 8192, .buf = rbuf[0] };
    cmds[1] = (NbdcCmd) { .type = NBD_CMD_READ, .offset = 65536,
                          .length = 4096, .buf = rbuf[1] };
    cmds[2] = (NbdcCmd) { .type = NBD_CMD_BLOCK_STATUS,
                          .flags = NBD_CMD_FLAG_REQ_ONE, .offset = 0,
                          .length = 1 << 20 };
    cmds[3] = (NbdcCmd) { .type = NBD_CMD_WRITE, .offset = 512,
                          .length = sizeof(wbuf), .buf = wbuf };
    cmds[4] = (NbdcCmd) { .type = NBD_CMD_FLUSH };
    done = 0;
    for (int i = 0; i < NCMDS; i++) {
        if (mode == 0 && cmds[i].type == NBD_CMD_BLOCK_STATUS) {
            cmds[i].type = NBD_CMD_FLUSH;   /* needs a context */
            cmds[i].flags = 0;
            cmds[i].length = 0;
        }
        cmds[i].done = cmd_done;
        nbdc_submit(e, &cmds[i]);
    }
    pthread_mutex_lock(&lock);
    while (done < NCMDS) {
        pthread_cond_wait(&cond, &lock);
    }
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < NCMDS; i++) {
        if (cmds[i].ret > 0 || (cmds[i].type == NBD_CMD_BLOCK_STATUS &&
                                cmds[i].ret == 0 &&
                                (cmds[i].status_length == 0 ||
                                 cmds[i].status_length > (1 << 20)))) {
            abort();
        }
    }
    nbdc_engine_free(e);
    close(sv[0]);
    return 0;
}
