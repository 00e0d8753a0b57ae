/*
 * map.h (internal): a string-keyed hash map, open addressing with linear probing and
 * backward-shift deletion (no tombstones). Keys are borrowed: each value owns its key (an
 * exchange's name, a queue's name) and the map points at it.
 */
#ifndef WARREN_MAP_H
#define WARREN_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_slot {
    const char *key; /* NULL: empty */
    uint64_t hash;
    void *val;
};

struct map {
    size_t cap;   /* a power of two, or 0 */
    size_t count;
    struct map_slot *slots;
};

uint64_t map_hash(const char *key, size_t len);
void *map_get(const struct map *m, const char *key);
/* Inserts or replaces. Returns 0, or -1 out of memory. */
int map_put(struct map *m, const char *key, void *val);
/* Removes key if present; returns its value or NULL. */
void *map_del(struct map *m, const char *key);
void map_fini(struct map *m);

/* Iterate: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... Do not modify the
 * map while iterating; collect first. */

#endif
