/* module.c - block drivers built as loadable modules (see block.h).
 *
 * A driver over a heavy library (rbd: librbd, librados and their
 * dozens of C++ libraries) is a shared object of its own,
 * block-<name>.so, so that a process that never opens such a node does
 * not pay for loading, relocating and constructing those libraries at
 * every start (most of blockd-nbd's start-up time before this).  The
 * first open of a node with that driver loads the module
 * (util/module.h: where it is looked for, what it exports).
 */
#include "blockdev/block.h"

#include <pthread.h>
#include <string.h>

#include "blockdev/block-drivers.h"
#include "util/module.h"
#include "util/util.h"

typedef struct BlockModule {
    const char *driver;          /* format_name */
    const char *file;            /* block-<driver>.so */
    const char *symbol;          /* its const BlockDriver */
} BlockModule;

static const BlockModule blk_modules[] = {
#ifdef BLK_RBD_MODULE
    { "rbd", "block-rbd.so", "blk_drv_rbd" },
#endif
    { NULL, NULL, NULL },
};

/* What each module gave, once loaded (never unloaded). */
static pthread_mutex_t blk_module_lock = PTHREAD_MUTEX_INITIALIZER;
static const BlockDriver *blk_module_drivers[ARRAY_SIZE(blk_modules)];

static const BlockDriver *blk_module_open(const BlockModule *m,
                                          Error **errp)
{
    void *h = module_open(m->file, errp);
    const BlockDriver *drv;

    if (h != NULL) {
        drv = module_symbol(h, m->file, m->symbol, errp);
        if (drv != NULL) {
            return drv;
        }
    }
    error_prepend(errp, "Driver '%s' is not available: ", m->driver);
    return NULL;
}

int blk_module_load(const char *name, const BlockDriver **drv,
                    Error **errp)
{
    size_t i;

    for (i = 0; blk_modules[i].driver != NULL; i++) {
        if (strcmp(blk_modules[i].driver, name) == 0) {
            break;
        }
    }
    if (blk_modules[i].driver == NULL) {
        return 0;
    }
    pthread_mutex_lock(&blk_module_lock);
    if (blk_module_drivers[i] == NULL) {
        blk_module_drivers[i] = blk_module_open(&blk_modules[i], errp);
    }
    *drv = blk_module_drivers[i];
    pthread_mutex_unlock(&blk_module_lock);
    return *drv != NULL ? 1 : -1;
}
