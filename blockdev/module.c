/* module.c - block drivers built as loadable modules (see block.h).
 *
 * A driver over a heavy library (rbd: librbd, librados and their
 * dozens of C++ libraries) is a shared object of its own,
 * block-<name>.so, so that a process that never opens such a node does
 * not pay for loading, relocating and constructing those libraries at
 * every start (most of blockd-nbd's start-up time before this).  The
 * first open of a node with that driver dlopen()s the module; it stays
 * loaded for the life of the process.  The module takes the few
 * symbols it needs from the executable (which exports exactly those:
 * the build generates the list from the module's undefined symbols).
 *
 * Where the module is looked for:
 *   $BLOCKD_MODULE_DIR     when set, and nowhere else
 *   the executable's dir   the build tree (tests run from there)
 *   BLOCKD_MODULE_DIR      the install dir ($libdir/blockd)
 */
#include "blockdev/block.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/block-drivers.h"
#include "config.h"
#include "util/cleanup.h"
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

/* The directory of the running executable, or NULL. */
static char *blk_module_exe_dir(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (n <= 0) {
        return NULL;
    }
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash == NULL) {
        return NULL;
    }
    *slash = '\0';
    return xstrdup(self);
}

/* The path to try for file: a new string. */
static char *blk_module_path(const char *file)
{
    const char *env = getenv("BLOCKD_MODULE_DIR");
    CLEANUP_FREE char *exe_dir = NULL;

    if (env != NULL && env[0] != '\0') {
        return xasprintf("%s/%s", env, file);
    }
    exe_dir = blk_module_exe_dir();
    if (exe_dir != NULL) {
        char *p = xasprintf("%s/%s", exe_dir, file);

        if (access(p, F_OK) == 0) {
            return p;
        }
        free(p);
    }
    return xasprintf("%s/%s", BLOCKD_MODULE_DIR, file);
}

static const BlockDriver *blk_module_open(const BlockModule *m,
                                          Error **errp)
{
    CLEANUP_FREE char *path = blk_module_path(m->file);
    const char *stamp;
    const BlockDriver *drv;
    void *h;

    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        error_setg(errp, "Driver '%s' is not available: could not load "
                   "its module: %s", m->driver, dlerror());
        return NULL;
    }
    /* A module from another build would read our structures wrong. */
    stamp = dlsym(h, "blk_module_stamp");
    if (stamp == NULL || strcmp(stamp, BLK_MODULE_STAMP) != 0) {
        error_setg(errp, "Driver '%s' is not available: module '%s' is "
                   "from another build of blockd (%s, this is %s)",
                   m->driver, path, stamp != NULL ? stamp : "no stamp",
                   BLK_MODULE_STAMP);
        dlclose(h);
        return NULL;
    }
    drv = dlsym(h, m->symbol);
    if (drv == NULL) {
        error_setg(errp, "Driver '%s' is not available: module '%s' "
                   "lacks '%s'", m->driver, path, m->symbol);
        dlclose(h);
        return NULL;
    }
    return drv;
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
