/* cleanup.h - scope-bound cleanup with __attribute__((cleanup)).
 *
 *     CLEANUP_FREE char *s = NULL;      freed when s leaves scope
 *     CLEANUP_CLOSE int fd = -1;        closed unless still -1
 *     return TAKE_PTR(s);               hand ownership out, s = NULL
 *
 * Always initialise: the cleanup runs on every path out of the scope.
 */
#ifndef BLOCKD_UTIL_CLEANUP_H
#define BLOCKD_UTIL_CLEANUP_H

#include <pthread.h>

#include "util/error.h"

void cleanup_free(void *ptr);
void cleanup_close(int *fd);
void cleanup_json(void *ptr);     /* json_object_put(*(json_object **)) */
void cleanup_error(Error **err);
void cleanup_unlock(pthread_mutex_t **m);

#define CLEANUP_FREE __attribute__((cleanup(cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close)))
#define CLEANUP_JSON __attribute__((cleanup(cleanup_json)))
#define CLEANUP_ERROR __attribute__((cleanup(cleanup_error)))

#define TAKE_PTR(p)                          \
    ({                                       \
        __typeof__(p) take_ptr_tmp_ = (p);   \
        (p) = NULL;                          \
        take_ptr_tmp_;                       \
    })

#define TAKE_FD(fd)                          \
    ({                                       \
        int take_fd_tmp_ = (fd);             \
        (fd) = -1;                           \
        take_fd_tmp_;                        \
    })

#define CLEANUP_CONCAT_(a, b) a##b
#define CLEANUP_CONCAT(a, b) CLEANUP_CONCAT_(a, b)
/* Hold mutex m until the end of the enclosing scope. */
#define LOCK_GUARD(m)                                                    \
    pthread_mutex_t *CLEANUP_CONCAT(lock_guard_, __LINE__)               \
        __attribute__((cleanup(cleanup_unlock), unused)) =              \
            (pthread_mutex_lock(m), (m))

#endif
