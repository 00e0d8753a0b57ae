/*
 * container.h: the two containers the queue storages and the core share, so each exists once.
 *
 * struct wr_ring: a deque of fixed-size elements in a ring buffer whose capacity is a power
 * of two. Elements are reached by index from the front; a push at the back or a pop at the
 * front moves nothing. A ring kept in key order (the uint64_t in each element's first 8 bytes,
 * as a queue keeps its messages by sequence number) takes an insert at the key's place,
 * shifting the shorter side, so an insert at either end moves nothing.
 *
 * struct wr_idtable: a hash table of fixed-size elements keyed by the non-zero uint64_t in
 * their first 8 bytes (a delivery tag, a sequence number). Open addressing with linear
 * probing, at most 3/4 full, and backward-shift deletion: no tombstones, so a lookup stops
 * at the first empty slot however many deletions came before. An empty slot has key 0.
 *
 * Both live in the caller's storage (_init/_fini); their members are read-only to the caller.
 * Both move elements about by copying their bytes (growth, inserts, deletions), so a pointer
 * to an element is good until the next change, and an element must not point into its own
 * container. The hot functions are inline: the storages call them millions of times a
 * second.
 */
#ifndef WARREN_CONTAINER_H
#define WARREN_CONTAINER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "warren/error.h"
#include "warren/export.h"

WR_BEGIN_DECLS

struct wr_ring {
    unsigned char *elems;
    size_t elem_size; /* rounded up to whole words */
    size_t head;      /* index in elems of the front element */
    size_t count;     /* elements held */
    size_t cap;       /* a power of two, or 0 */
};

WR_API void wr_ring_init(struct wr_ring *r, size_t elem_size);
/* Frees the buffer (the elements' own resources are the caller's) and leaves r empty. */
WR_API void wr_ring_fini(struct wr_ring *r);
/* Grows the buffer to hold n elements in all; WR_ENOMEM leaves r as it was. */
WR_API int wr_ring_grow(struct wr_ring *r, size_t n);
/* Opens a place for an element whose key is key in a ring kept in ascending key order, after
 * any element with the same key, and returns it for the caller to fill. The caller has made
 * room (wr_ring_reserve). */
WR_API void *wr_ring_insert_ordered(struct wr_ring *r, uint64_t key);

/* Makes room for n elements in all, so the pushes and inserts up to n never fail. */
static inline int wr_ring_reserve(struct wr_ring *r, size_t n)
{
    return n <= r->cap ? WR_OK : wr_ring_grow(r, n);
}

/* The element at index i from the front; i < count, or i == count for the next push. */
static inline void *wr_ring_at(const struct wr_ring *r, size_t i)
{
    return r->elems + ((r->head + i) & (r->cap - 1)) * r->elem_size;
}

/* Appends an element and returns it for the caller to fill. The caller has made room. */
static inline void *wr_ring_push_back(struct wr_ring *r)
{
    return wr_ring_at(r, r->count++);
}

/* Drops the front element; read it first with wr_ring_at(r, 0). count > 0. */
static inline void wr_ring_pop_front(struct wr_ring *r)
{
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
}

struct wr_idtable {
    unsigned char *slots;
    size_t elem_size; /* at least 8, the key first; rounded up to whole words */
    size_t count;     /* elements held */
    size_t cap;       /* slots: a power of two, or 0 */
};

WR_API void wr_idtable_init(struct wr_idtable *t, size_t elem_size);
/* Frees the slots (the elements' own resources are the caller's) and leaves t empty. */
WR_API void wr_idtable_fini(struct wr_idtable *t);
/* Makes room for n more elements, so the next n wr_idtable_put of new keys never fail. */
WR_API int wr_idtable_reserve(struct wr_idtable *t, size_t n);
/* Iteration: for (size_t i = 0; (e = wr_idtable_next(t, &i));) visits every element once,
 * in no order. No put or del while it runs. */
WR_API void *wr_idtable_next(const struct wr_idtable *t, size_t *i);

static inline uint64_t wr_idtable_key(const void *elem)
{
    uint64_t key;
    memcpy(&key, elem, sizeof key);
    return key;
}

/* The home slot of a key in a table of mask + 1 slots: Fibonacci hashing, so consecutive
 * keys spread over the table. */
static inline size_t wr_idtable_home(uint64_t key, size_t mask)
{
    return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & mask;
}

/* The slot of key if it is there, else the empty slot that ends its probe run. cap > 0. */
static inline void *wr_idtable_probe(const struct wr_idtable *t, uint64_t key)
{
    size_t mask = t->cap - 1;
    for (size_t i = wr_idtable_home(key, mask);; i = (i + 1) & mask) {
        unsigned char *slot = t->slots + i * t->elem_size;
        uint64_t k = wr_idtable_key(slot);
        if (k == key || k == 0)
            return slot;
    }
}

/* The element with key, or NULL. */
static inline void *wr_idtable_find(const struct wr_idtable *t, uint64_t key)
{
    if (key == 0 || t->cap == 0)
        return NULL;
    void *slot = wr_idtable_probe(t, key);
    return wr_idtable_key(slot) ? slot : NULL;
}

/* The element with key (non-zero). If there is none, one is added with its key set and the
 * rest of it for the caller to fill; NULL when that needs memory that cannot be had. The
 * pointer is good until the next put or del. */
static inline void *wr_idtable_put(struct wr_idtable *t, uint64_t key)
{
    if ((t->count + 1) * 4 > t->cap * 3 && wr_idtable_reserve(t, 1) != WR_OK)
        return wr_idtable_find(t, key);
    void *slot = wr_idtable_probe(t, key);
    if (wr_idtable_key(slot) == 0) {
        memcpy(slot, &key, sizeof key);
        t->count++;
    }
    return slot;
}

/* The distance from byte offset a forward to byte offset b in a table of total bytes. */
static inline size_t wr_idtable_dist(size_t a, size_t b, size_t total)
{
    return b >= a ? b - a : b + total - a;
}

/* Removes an element, found by wr_idtable_find or wr_idtable_put; others may move. It works
 * in byte offsets rather than slot indexes: the index of elem would take a division. */
static inline void wr_idtable_del(struct wr_idtable *t, void *elem)
{
    unsigned char *slots = t->slots;
    size_t size = t->elem_size, mask = t->cap - 1, total = t->cap * size;
    size_t hole = (size_t)((unsigned char *)elem - slots);
    for (size_t i = hole + size;; i += size) {
        if (i == total)
            i = 0;
        uint64_t key = wr_idtable_key(slots + i);
        if (!key)
            break;
        /* Pull it back into the hole unless its home lies in (hole, i], cyclically: then a
         * lookup of it would start past the hole and find it where it is. */
        size_t home = wr_idtable_home(key, mask) * size;
        if (wr_idtable_dist(home, i, total) >= wr_idtable_dist(hole, i, total)) {
            for (size_t w = 0; w < size; w += sizeof(uint64_t))
                memcpy(slots + hole + w, slots + i + w, sizeof(uint64_t));
            hole = i;
        }
    }
    memset(slots + hole, 0, sizeof(uint64_t)); /* the key: the rest is the next put's */
    t->count--;
}

WR_END_DECLS

#endif
