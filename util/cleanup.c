/* cleanup.c - see cleanup.h. */
#include "util/cleanup.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <unistd.h>

void cleanup_free(void *ptr)
{
    free(*(void **)ptr);
}

void cleanup_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
    }
}

void cleanup_json(void *ptr)
{
    json_object_put(*(json_object **)ptr);
}

void cleanup_error(Error **err)
{
    error_free(*err);
}

void cleanup_unlock(pthread_mutex_t **m)
{
    pthread_mutex_unlock(*m);
}
