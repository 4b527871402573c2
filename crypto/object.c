/* object.c - the ObjectSet: user-creatable objects by id, their users,
 * and object-add / object-del / query-objects. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/internal.h"
#include "util/cleanup.h"
#include "util/log.h"
#include "util/util.h"

ObjectSet *object_set_new(void)
{
    ObjectSet *set = xzalloc(sizeof(ObjectSet));
    pthread_mutexattr_t a;

    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&set->lock, &a);
    pthread_mutexattr_destroy(&a);
    return set;
}

static void object_free(Object *obj)
{
    if (!obj) {
        return;
    }
    for (size_t i = 0; i < obj->users.len; i++) {
        free(obj->users.ptr[i]);
    }
    StrVec_reset(&obj->users);
    free(obj->id);
    switch (obj->type) {
    case OBJECT_TYPE_SECRET:
        secret_free(obj);
        break;
    case OBJECT_TYPE_TLS_CREDS_ANON:
    case OBJECT_TYPE_TLS_CREDS_PSK:
    case OBJECT_TYPE_TLS_CREDS_X509:
        tls_creds_free(obj);
        break;
    case OBJECT_TYPE_IOTHREAD:
        iothread_free(obj);
        break;
    default:
        authz_free(obj);
        break;
    }
}

void object_set_free(ObjectSet *set)
{
    if (!set) {
        return;
    }
    /* Newest first: an object may pin an older one (a key's secret) and
     * unpins it as it goes, so each leaves the set before it is freed. */
    while (set->objs.len) {
        object_free(set->objs.ptr[--set->objs.len]);
    }
    ObjectVec_reset(&set->objs);
    pthread_mutex_destroy(&set->lock);
    free(set);
}

Object *object_find(ObjectSet *set, const char *id)
{
    for (size_t i = 0; i < set->objs.len; i++) {
        if (strcmp(set->objs.ptr[i]->id, id) == 0) {
            return set->objs.ptr[i];
        }
    }
    return NULL;
}

/* QEMU's rule for ids (id_wellformed): a letter first, then letters,
 * digits, '-', '.' and '_'. */
static bool id_wellformed(const char *id)
{
    if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z'))) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!strchr("abcdefghijklmnopqrstuvwxyz"
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._", *p)) {
            return false;
        }
    }
    return true;
}

static bool object_add_locked(ObjectSet *set, const ObjectOptions *opts,
                              Error **errp)
{
    Object *obj;

    if (!id_wellformed(opts->id)) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    if (object_find(set, opts->id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object "
                   "(type 'container')", opts->id);
        return false;
    }
    switch (opts->qom_type) {
    case OBJECT_TYPE_SECRET:
        obj = secret_new(set, opts, errp);
        break;
    case OBJECT_TYPE_TLS_CREDS_ANON:
    case OBJECT_TYPE_TLS_CREDS_PSK:
    case OBJECT_TYPE_TLS_CREDS_X509:
        obj = tls_creds_new(set, opts, errp);
        break;
    case OBJECT_TYPE_AUTHZ_LIST:
    case OBJECT_TYPE_AUTHZ_LISTFILE:
    case OBJECT_TYPE_AUTHZ_SIMPLE:
        obj = authz_new(set, opts, errp);
        break;
    case OBJECT_TYPE_IOTHREAD:
        obj = iothread_new(set, opts, errp);
        break;
    default:
        error_setg(errp, "Invalid object type '%s'",
                   ObjectType_str(opts->qom_type));
        return false;
    }
    if (!obj) {
        return false;
    }
    obj->id = xstrdup(opts->id);
    obj->type = opts->qom_type;
    obj->set = set;
    ObjectVec_append(&set->objs, obj);
    log_debug("object '%s' (%s) added", obj->id, ObjectType_str(obj->type));
    return true;
}

static bool object_del_locked(ObjectSet *set, const char *id,
                              Error **errp)
{
    for (size_t i = 0; i < set->objs.len; i++) {
        Object *obj = set->objs.ptr[i];

        if (strcmp(obj->id, id) != 0) {
            continue;
        }
        if (obj->users.len) {
            error_setg(errp, "object '%s' is in use, can not be deleted "
                       "(used by %s)", id, obj->users.ptr[0]);
            return false;
        }
        ObjectVec_remove(&set->objs, i);
        object_free(obj);
        return true;
    }
    error_setg(errp, "object '%s' not found", id);
    return false;
}

static bool object_add_user_locked(ObjectSet *set, const char *id,
                                   const char *user, Error **errp)
{
    Object *obj = object_find(set, id);

    if (!obj) {
        error_setg(errp, "object '%s' not found", id);
        return false;
    }
    for (size_t i = 0; i < obj->users.len; i++) {
        if (strcmp(obj->users.ptr[i], user) == 0) {
            error_setg(errp, "object '%s' is already used by %s", id, user);
            return false;
        }
    }
    StrVec_append(&obj->users, xstrdup(user));
    return true;
}

static void object_remove_user_locked(ObjectSet *set, const char *id,
                                      const char *user)
{
    Object *obj = object_find(set, id);

    if (!obj) {
        return;
    }
    for (size_t i = 0; i < obj->users.len; i++) {
        if (strcmp(obj->users.ptr[i], user) == 0) {
            free(obj->users.ptr[i]);
            StrVec_remove(&obj->users, i);
            return;
        }
    }
}

const uint8_t *object_get_secret(ObjectSet *set, const char *id,
                                 size_t *len, Error **errp)
{
    Object *obj = object_find(set, id);
    Secret *s;

    if (!obj) {
        error_setg(errp, "No secret with id '%s'", id);
        return NULL;
    }
    if (obj->type != OBJECT_TYPE_SECRET) {
        error_setg(errp, "Object '%s' is not a secret", id);
        return NULL;
    }
    s = (Secret *)obj;
    if (len) {
        *len = s->len;
    }
    return s->data;
}

ObjectInfoList *object_set_list(ObjectSet *set)
{
    ObjectInfoList *l = xzalloc(sizeof(*l));

    l->n = set->objs.len;
    l->v = xcalloc(l->n ? l->n : 1, sizeof(*l->v));
    for (size_t i = 0; i < l->n; i++) {
        l->v[i] = xzalloc(sizeof(ObjectInfo));
        l->v[i]->id = xstrdup(set->objs.ptr[i]->id);
        l->v[i]->qom_type = set->objs.ptr[i]->type;
    }
    return l;
}

bool crypto_read_file(const char *path, size_t max, char **out,
                      size_t *len, Error **errp)
{
    CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC);
    CLEANUP_FREE char *buf = NULL;
    struct stat st;
    size_t n = 0;

    if (fd < 0 || fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "Unable to read '%s'", path);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        error_setg(errp, "Unable to read '%s': not a regular file", path);
        return false;
    }
    if ((uint64_t)st.st_size > max) {
        error_setg(errp, "Unable to read '%s': larger than %zu bytes",
                   path, max);
        return false;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            error_setg_errno(errp, errno, "Unable to read '%s'", path);
            return false;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    *out = TAKE_PTR(buf);
    return true;
}

/* The entry points that change the set or its users, under its lock
 * (object.h: an nbd node pins its credentials from a worker). */
bool object_add(ObjectSet *set, const ObjectOptions *opts, Error **errp)
{
    bool ok;

    pthread_mutex_lock(&set->lock);
    ok = object_add_locked(set, opts, errp);
    pthread_mutex_unlock(&set->lock);
    return ok;
}

bool object_del(ObjectSet *set, const char *id, Error **errp)
{
    bool ok;

    pthread_mutex_lock(&set->lock);
    ok = object_del_locked(set, id, errp);
    pthread_mutex_unlock(&set->lock);
    return ok;
}

bool object_add_user(ObjectSet *set, const char *id, const char *user,
                     Error **errp)
{
    bool ok;

    pthread_mutex_lock(&set->lock);
    ok = object_add_user_locked(set, id, user, errp);
    pthread_mutex_unlock(&set->lock);
    return ok;
}

void object_remove_user(ObjectSet *set, const char *id, const char *user)
{
    pthread_mutex_lock(&set->lock);
    object_remove_user_locked(set, id, user);
    pthread_mutex_unlock(&set->lock);
}

TlsCreds *object_use_tls_creds(ObjectSet *set, const char *id,
                               TlsEndpoint want, const char *user,
                               Error **errp)
{
    TlsCreds *c;

    pthread_mutex_lock(&set->lock);
    c = object_get_tls_creds(set, id, want, errp);
    if (c && !object_add_user_locked(set, id, user, errp)) {
        c = NULL;
    }
    pthread_mutex_unlock(&set->lock);
    return c;
}
