/*
 * map.c: the string hash map behind vhosts' exchange and queue names. Linear probing keeps a
 * lookup to one or two cache lines; deletion shifts the following entries back so no
 * tombstones accumulate under declare/delete churn.
 */
#include "map.h"

#include <stdlib.h>
#include <string.h>

uint64_t map_hash(const char *key, size_t len)
{
    /* FNV-1a with a final mix: names are short, and this is not exposed to hash flooding
     * beyond what a client that may declare queues can do anyway. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static size_t find(const struct map *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const struct map_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
            return i;
    }
}

void *map_get(const struct map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t i = find(m, key, map_hash(key, strlen(key)));
    return m->slots[i].key ? m->slots[i].val : NULL;
}

static int grow(struct map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct map_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    struct map old = *m;
    m->cap = cap;
    m->slots = slots;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            m->slots[find(m, old.slots[i].key, old.slots[i].hash)] = old.slots[i];
    free(old.slots);
    return 0;
}

int map_put(struct map *m, const char *key, void *val)
{
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return -1;
    uint64_t h = map_hash(key, strlen(key));
    struct map_slot *s = &m->slots[find(m, key, h)];
    if (!s->key)
        m->count++;
    *s = (struct map_slot){key, h, val};
    return 0;
}

void *map_del(struct map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = find(m, key, map_hash(key, strlen(key)));
    if (!m->slots[i].key)
        return NULL;
    void *val = m->slots[i].val;
    /* Backward-shift: move later entries of the probe run into the hole when their home slot
     * does not lie cyclically between the hole and their position. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->count--;
    return val;
}

void map_fini(struct map *m)
{
    free(m->slots);
    *m = (struct map){0};
}
