/* module.c - loading blockd's own modules; see module.h. */
#include "util/module.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "util/cleanup.h"
#include "util/util.h"

/* The directory of the running executable, or NULL. */
static char *module_exe_dir(void)
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
static char *module_path(const char *file)
{
    const char *env = getenv("BLOCKD_MODULE_DIR");
    CLEANUP_FREE char *exe_dir = NULL;

    if (env != NULL && env[0] != '\0') {
        return xasprintf("%s/%s", env, file);
    }
    exe_dir = module_exe_dir();
    if (exe_dir != NULL) {
        char *p = xasprintf("%s/%s", exe_dir, file);

        if (access(p, F_OK) == 0) {
            return p;
        }
        free(p);
    }
    return xasprintf("%s/%s", BLOCKD_MODULE_DIR, file);
}

void *module_open(const char *file, Error **errp)
{
    CLEANUP_FREE char *path = module_path(file);
    const char *stamp;
    void *h;

    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        error_setg(errp, "could not load its module: %s", dlerror());
        return NULL;
    }
    stamp = dlsym(h, "blockd_module_stamp");
    if (stamp == NULL || strcmp(stamp, MODULE_STAMP) != 0) {
        error_setg(errp, "module '%s' is from another build of blockd "
                   "(%s, this is %s)", path,
                   stamp != NULL ? stamp : "no stamp", MODULE_STAMP);
        dlclose(h);
        return NULL;
    }
    return h;
}

void *module_symbol(void *h, const char *file, const char *symbol,
                    Error **errp)
{
    void *p = dlsym(h, symbol);

    if (p == NULL) {
        error_setg(errp, "module '%s' lacks '%s'", file, symbol);
    }
    return p;
}
