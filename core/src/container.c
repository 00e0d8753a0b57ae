/*
 * container.c: the ring deque and the id table of container.h, their slow paths (growth,
 * ordered insert, iteration); the hot ones are inline in the header.
 */
#include <stdlib.h>
#include <string.h>

#include "warren/container.h"

#define CONTAINER_MIN_CAP 16

/* Elements are laid out at a stride of whole words, so they are copied word by word: for the
 * few words of an element that is far cheaper than a call to memcpy with a size unknown at
 * compile time, and these copies are on the queues' hot paths. */
static size_t container_stride(size_t elem_size)
{
    return (elem_size + sizeof(uint64_t) - 1) / sizeof(uint64_t) * sizeof(uint64_t);
}

static void container_copy(void *dst, const void *src, size_t size)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (size_t i = 0; i < size / sizeof(uint64_t); i++)
        d[i] = s[i];
}

/* ---- the ring ------------------------------------------------------------------------- */

void wr_ring_init(struct wr_ring *r, size_t elem_size)
{
    *r = (struct wr_ring){.elem_size = container_stride(elem_size)};
}

void wr_ring_fini(struct wr_ring *r)
{
    free(r->elems);
    wr_ring_init(r, r->elem_size);
}

int wr_ring_grow(struct wr_ring *r, size_t n)
{
    if (n <= r->cap)
        return WR_OK;
    size_t cap = r->cap ? r->cap : CONTAINER_MIN_CAP;
    while (cap < n) {
        if (cap > SIZE_MAX / 2 / r->elem_size)
            return WR_ENOMEM;
        cap *= 2;
    }
    unsigned char *elems = malloc(cap * r->elem_size);
    if (!elems)
        return WR_ENOMEM;
    /* The elements from head to the end of the buffer, then those wrapped to its start. */
    size_t first = r->cap - r->head < r->count ? r->cap - r->head : r->count;
    if (r->count > 0) {
        memcpy(elems, r->elems + r->head * r->elem_size, first * r->elem_size);
        memcpy(elems + first * r->elem_size, r->elems, (r->count - first) * r->elem_size);
    }
    free(r->elems);
    r->elems = elems;
    r->head = 0;
    r->cap = cap;
    return WR_OK;
}

void *wr_ring_insert_ordered(struct wr_ring *r, uint64_t key)
{
    size_t lo = 0, hi = r->count;
    if (r->count > 0 && key >= wr_idtable_key(wr_ring_at(r, r->count - 1)))
        lo = r->count; /* after everything: an append, the usual case */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (wr_idtable_key(wr_ring_at(r, mid)) <= key)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Shift the shorter side: at the front (the usual requeue) nothing moves at all. */
    size_t size = r->elem_size;
    if (lo < r->count - lo) {
        r->head = (r->head - 1) & (r->cap - 1);
        for (size_t i = 0; i < lo; i++)
            container_copy(wr_ring_at(r, i), wr_ring_at(r, i + 1), size);
    } else {
        for (size_t i = r->count; i > lo; i--)
            container_copy(wr_ring_at(r, i), wr_ring_at(r, i - 1), size);
    }
    r->count++;
    return wr_ring_at(r, lo);
}

/* ---- the id table --------------------------------------------------------------------- */

void wr_idtable_init(struct wr_idtable *t, size_t elem_size)
{
    *t = (struct wr_idtable){.elem_size = container_stride(elem_size)};
}

void wr_idtable_fini(struct wr_idtable *t)
{
    free(t->slots);
    wr_idtable_init(t, t->elem_size);
}

int wr_idtable_reserve(struct wr_idtable *t, size_t n)
{
    if (n > SIZE_MAX / 4 / t->elem_size - t->count) /* so want * 4 cannot overflow */
        return WR_ENOMEM;
    size_t want = t->count + n;
    if (want * 4 <= t->cap * 3)
        return WR_OK;
    size_t cap = t->cap ? t->cap : CONTAINER_MIN_CAP;
    while (want * 4 > cap * 3) {
        if (cap > SIZE_MAX / 2 / t->elem_size)
            return WR_ENOMEM;
        cap *= 2;
    }
    unsigned char *slots = calloc(cap, t->elem_size);
    if (!slots)
        return WR_ENOMEM;
    struct wr_idtable grown = {slots, t->elem_size, t->count, cap};
    for (size_t i = 0; i < t->cap; i++) {
        unsigned char *slot = t->slots + i * t->elem_size;
        uint64_t key = wr_idtable_key(slot);
        if (key)
            container_copy(wr_idtable_probe(&grown, key), slot, t->elem_size);
    }
    free(t->slots);
    *t = grown;
    return WR_OK;
}

void *wr_idtable_next(const struct wr_idtable *t, size_t *i)
{
    for (; *i < t->cap; (*i)++) {
        unsigned char *slot = t->slots + *i * t->elem_size;
        if (wr_idtable_key(slot)) {
            (*i)++;
            return slot;
        }
    }
    return NULL;
}
