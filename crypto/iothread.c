/* iothread.c - the iothread object: a thread that runs its own event
 * loop (util/loop.h), for the connections of the exports that name it.
 *
 *   object-add qom-type=iothread,id=io0
 *        │ pthread_create ──> iothread_main: loop_run(io->loop)
 *        │ waits until the thread has said its thread-id
 *   block-export-add iothread=io0 ──> object_use_iothread(): the loop,
 *        pinned (object-del refuses it while an export uses it)
 *   object-del / daemon exit ──> loop_post(loop_stop) and join; what
 *        is still posted runs on the deleting thread (nothing is: its
 *        users are gone first)
 *
 * Unlike QEMU there is no global lock: whatever runs on the loop owns
 * what it touches (a connection), and the rest is atomic or under the
 * lock of the object it belongs to (nbd/, blockdev/io.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "crypto/internal.h"
#include "util/log.h"
#include "util/loop.h"
#include "util/util.h"

typedef struct IoThread {
    Object obj;
    Loop *loop;
    pthread_t thread;
    int64_t thread_id;           /* gettid() of the thread; 0 until known */
    pthread_mutex_t lock;        /* for the start hand-shake */
    pthread_cond_t started;
    IothreadProperties props;    /* as given (ignored beyond the query) */
} IoThread;

static void *iothread_main(void *opaque)
{
    IoThread *io = opaque;

    pthread_mutex_lock(&io->lock);
    io->thread_id = (int64_t)syscall(SYS_gettid);
    pthread_cond_signal(&io->started);
    pthread_mutex_unlock(&io->lock);
    if (loop_run(io->loop) < 0) {
        log_error("iothread '%s': its event loop failed", io->obj.id);
    }
    return NULL;
}

Object *iothread_new(ObjectSet *set, const ObjectOptions *opts,
                     Error **errp)
{
    IoThread *io = XNEW(IoThread);
    int err;

    (void)set;
    io->props = opts->u.iothread;
    io->loop = loop_new();
    if (io->loop == NULL) {
        error_setg(errp, "Could not create the event loop of iothread "
                   "'%s'", opts->id);
        free(io);
        return NULL;
    }
    pthread_mutex_init(&io->lock, NULL);
    pthread_cond_init(&io->started, NULL);
    io->obj.id = (char *)opts->id;   /* for the thread's messages; the
                                      * caller sets its own copy */
    err = pthread_create(&io->thread, NULL, iothread_main, io);
    if (err != 0) {
        error_setg_errno(errp, err, "Could not start iothread '%s'",
                         opts->id);
        pthread_cond_destroy(&io->started);
        pthread_mutex_destroy(&io->lock);
        loop_free(io->loop);
        free(io);
        return NULL;
    }
    /* query-iothreads answers at once afterwards, and the thread owns
     * its loop (loop_is_current) before anything is posted to it. */
    pthread_mutex_lock(&io->lock);
    while (io->thread_id == 0) {
        pthread_cond_wait(&io->started, &io->lock);
    }
    pthread_mutex_unlock(&io->lock);
    return &io->obj;
}

static void iothread_stop_cb(void *opaque)
{
    loop_stop(opaque);
}

void iothread_free(Object *obj)
{
    IoThread *io = (IoThread *)obj;

    /* loop_stop() is the loop's own business: ask it from its thread. */
    loop_post(io->loop, iothread_stop_cb, io->loop);
    pthread_join(io->thread, NULL);
    loop_free(io->loop);
    pthread_cond_destroy(&io->started);
    pthread_mutex_destroy(&io->lock);
    free(io);
}

Loop *object_use_iothread(ObjectSet *set, const char *id, const char *user,
                          Error **errp)
{
    Object *obj;
    Loop *loop = NULL;

    pthread_mutex_lock(&set->lock);
    obj = object_find(set, id);
    if (obj == NULL || obj->type != OBJECT_TYPE_IOTHREAD) {
        /* QEMU's words (block/export/export.c) */
        error_setg(errp, "iothread \"%s\" not found", id);
    } else if (object_add_user(set, id, user, errp)) {
        loop = ((IoThread *)obj)->loop;
    }
    pthread_mutex_unlock(&set->lock);
    return loop;
}

IOThreadInfoList *object_iothread_list(ObjectSet *set)
{
    IOThreadInfoList *l = xzalloc(sizeof(*l));
    size_t n = 0;

    pthread_mutex_lock(&set->lock);
    l->v = xcalloc(set->objs.len ? set->objs.len : 1, sizeof(*l->v));
    for (size_t i = 0; i < set->objs.len; i++) {
        const IoThread *io = (const IoThread *)set->objs.ptr[i];
        IOThreadInfo *info;

        if (set->objs.ptr[i]->type != OBJECT_TYPE_IOTHREAD) {
            continue;
        }
        info = xzalloc(sizeof(*info));
        info->id = xstrdup(io->obj.id);
        info->thread_id = io->thread_id;
        info->poll_max_ns = io->props.has_poll_max_ns
                            ? io->props.poll_max_ns : 0;
        info->poll_grow = io->props.has_poll_grow ? io->props.poll_grow : 0;
        info->poll_shrink = io->props.has_poll_shrink
                            ? io->props.poll_shrink : 0;
        info->aio_max_batch = io->props.has_aio_max_batch
                              ? io->props.aio_max_batch : 0;
        l->v[n++] = info;
    }
    pthread_mutex_unlock(&set->lock);
    l->n = n;
    return l;
}
