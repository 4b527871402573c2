/* module.h - shared objects of blockd's own that a process loads the
 * first time it needs them: block drivers over heavy libraries
 * (block-rbd.so, blockdev/module.c) and everything that calls gnutls
 * (crypto-tls.so, crypto/tls-module.h).  A process that never uses
 * them does not pay for loading, relocating and constructing those
 * libraries at start-up.  A loaded module stays loaded for the life of
 * the process.  The module takes the few symbols it needs from the
 * executable, which exports exactly those (the build makes the list
 * from the modules' undefined symbols: blockdev/module-syms.py).
 *
 * Where a module is looked for:
 *   $BLOCKD_MODULE_DIR     when set, and nowhere else
 *   the executable's dir   the build tree (tests run from there)
 *   BLOCKD_MODULE_DIR      the install dir ($libdir/blockd)
 */
#ifndef BLOCKD_UTIL_MODULE_H
#define BLOCKD_UTIL_MODULE_H

#include "util/error.h"

/* Every module defines `const char blockd_module_stamp[] =
 * MODULE_STAMP;` (needs config.h), which module_open compares with the
 * executable's: a module of another build would read our structures
 * wrong. */
#define MODULE_STAMP "blockd " BLOCKD_VERSION

/* dlopen() the module file (a name: "crypto-tls.so") from the places
 * above and check its stamp.  The handle (never closed), or NULL with
 * errp set to "could not load its module: DLERROR" or "module 'PATH'
 * is from another build of blockd (...)"; callers prepend what is not
 * available.  Any thread; callers serialize loading the same module. */
void *module_open(const char *file, Error **errp);

/* The address of symbol in the module h: NULL with errp set ("module
 * 'FILE' lacks 'SYMBOL'") when it has none. */
void *module_symbol(void *h, const char *file, const char *symbol,
                    Error **errp);

#endif
