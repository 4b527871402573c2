/* vector.h - typed growable arrays.
 *
 *     DEFINE_VECTOR_TYPE(NodeVec, BlockNode *);
 *     NodeVec v = { 0 };
 *     NodeVec_append(&v, node);
 *     for (size_t i = 0; i < v.len; i++) { ... v.ptr[i] ... }
 *     NodeVec_reset(&v);                    frees the array, not elements
 */
#ifndef BLOCKD_UTIL_VECTOR_H
#define BLOCKD_UTIL_VECTOR_H

#include <string.h>

#include "util/util.h"

#define DEFINE_VECTOR_TYPE(name, type)                                        \
    typedef struct name {                                                     \
        type *ptr;                                                            \
        size_t len;                                                           \
        size_t cap;                                                           \
    } name;                                                                   \
    static inline UNUSED void name##_reserve(name *v, size_t n)               \
    {                                                                         \
        if (v->len + n > v->cap) {                                            \
            size_t cap = v->cap ? v->cap * 2 : 8;                             \
            while (cap < v->len + n) {                                        \
                cap *= 2;                                                     \
            }                                                                 \
            v->ptr = xrealloc(v->ptr, cap * sizeof(type));                    \
            v->cap = cap;                                                     \
        }                                                                     \
    }                                                                         \
    static inline UNUSED void name##_append(name *v, type elem)               \
    {                                                                         \
        name##_reserve(v, 1);                                                 \
        v->ptr[v->len++] = elem;                                              \
    }                                                                         \
    static inline UNUSED void name##_remove(name *v, size_t i)                \
    {                                                                         \
        memmove(&v->ptr[i], &v->ptr[i + 1],                                   \
                (v->len - i - 1) * sizeof(type));                             \
        v->len--;                                                             \
    }                                                                         \
    static inline UNUSED void name##_reset(name *v)                           \
    {                                                                         \
        free(v->ptr);                                                         \
        v->ptr = NULL;                                                        \
        v->len = v->cap = 0;                                                  \
    }                                                                         \
    struct name##_dummy_for_semicolon_

#endif
