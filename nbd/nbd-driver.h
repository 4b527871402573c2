/* nbd-driver.h - the "nbd" block driver (the NBD client as a node).
 *
 * daemon/ registers it with each graph it creates; the block layer
 * never includes this.  The driver lives in nbd-driver.c over the
 * handshake (client.h) and the transmission engine (client-io.h).
 */
#ifndef BLOCKD_NBD_NBD_DRIVER_H
#define BLOCKD_NBD_NBD_DRIVER_H

#include "blockdev/block.h"

/* Connections an nbd node opens when the server advertises
 * NBD_FLAG_CAN_MULTI_CONN (one otherwise). */
#define NBD_DRIVER_MULTI_CONN 4

extern const BlockDriver nbd_block_driver;

/* Make "nbd" available to blockdev-add in g (loop thread, once). */
void nbd_driver_register(BlockGraph *g);
/* At exit (loop thread, after the NBD server stopped): every nbd node
 * of g drops its connections, and its requests -- those waiting for a
 * server that is gone too -- fail with EIO now, so that the pool
 * drains and no request or I/O thread outlives the graph. */
void nbd_driver_shutdown(BlockGraph *g);

#endif
