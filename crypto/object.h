/* object.h - the daemon's user-creatable objects (QEMU's "/objects"):
 * secrets, TLS credentials and authorization lists, by id.
 *
 *   ObjectSet (one per daemon: daemon/ creates it, QmpCtx.objects and
 *    │         NbdContext.objects point to it)
 *    ├── "sec0"  secret          bytes, decoded and decrypted at add
 *    ├── "tls0"  tls-creds-x509  gnutls credentials, files read at add
 *    ├── "psk0"  tls-creds-psk   keys.psk read at add
 *    ├── "az0"   authz-list      rules
 *    └── "io0"   iothread        a thread running its own event loop
 *
 * An object is complete when object_add returns: every file it names was
 * read and checked then, so a bad file is an error at object-add and the
 * id stays free.  Whoever keeps a pointer to an object (the NBD server
 * its creds and authz, an nbd node its creds, a tls-creds-x509 the
 * secret of its key) registers as a user with object_add_user;
 * object_del refuses an object with users (QEMU allows deleting in-use
 * credentials, blockd does not).  Loop thread only, except
 * object_add_user / object_remove_user and object_use_tls_creds
 * (tls.h), which an nbd node's open and close may call from a worker:
 * they and object_add / object_del take the set's lock.
 */
#ifndef BLOCKD_CRYPTO_OBJECT_H
#define BLOCKD_CRYPTO_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qapi-types.h"
#include "util/error.h"

typedef struct ObjectSet ObjectSet;

ObjectSet *object_set_new(void);
/* Free every object, users or not (daemon shutdown, after the NBD
 * server is gone).  NULL-safe. */
void object_set_free(ObjectSet *set);

/* Create an object from object-add's options (opts is only read).
 * Errors: a duplicate id ("attempt to add duplicate property 'X' to
 * object (type 'container')", QEMU's words), an invalid property, a file
 * that is missing, unreadable or malformed. */
bool object_add(ObjectSet *set, const ObjectOptions *opts, Error **errp);
/* Delete an object: "object 'X' not found", or refused while it has
 * users ("object 'X' is in use, can not be deleted"). */
bool object_del(ObjectSet *set, const char *id, Error **errp);

/* Register user (a short description: "nbd-server", "node 'n0'") of
 * object id; false with errp set when there is no such object.  The
 * same user may register once per object.  object_remove_user forgets
 * it (no-op when absent or when the object is gone). */
bool object_add_user(ObjectSet *set, const char *id, const char *user,
                     Error **errp);
void object_remove_user(ObjectSet *set, const char *id, const char *user);

/* The objects for query-objects, in the order they were added (caller
 * frees it with qapi_free_ObjectInfoList). */
ObjectInfoList *object_set_list(ObjectSet *set);

/* The loop of iothread id, pinned by user until object_remove_user:
 * "iothread \"X\" not found" when there is no such iothread.  The
 * loop lives as long as the object. */
struct Loop;
struct Loop *object_use_iothread(ObjectSet *set, const char *id,
                                 const char *user, Error **errp);
/* The iothreads for query-iothreads, in the order they were added
 * (caller frees it with qapi_free_IOThreadInfoList). */
IOThreadInfoList *object_iothread_list(ObjectSet *set);

/* The bytes of secret id (borrowed: valid while the object exists; a
 * NUL follows them).  "No secret with id 'X'" / "Object 'X' is not a
 * secret". */
const uint8_t *object_get_secret(ObjectSet *set, const char *id,
                                 size_t *len, Error **errp);

#endif
