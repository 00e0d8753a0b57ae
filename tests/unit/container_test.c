/*
 * container_test.c: the ring deque and the id table of container.h, each checked against a
 * plain reference (a sorted array, an array indexed by key) over 100,000 random operations,
 * plus the cases random operations rarely reach: growth with the contents wrapped around the
 * end of the buffer, inserts at both ends and in the middle, deletion chains that wrap around
 * the end of the table, and iteration.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warren/container.h>

#define OPS 100000

/* xorshift64: the same sequence on every run, so a failure can be replayed. */
static uint64_t rnd_state = 0x2545F4914F6CDD1DULL;

static uint64_t rnd(uint64_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state % n;
}

/* An element of 24 bytes, so neither container can lean on a power-of-two size. */
struct item {
    uint64_t key;
    uint64_t value;
    uint32_t check;
};

static struct item item_of(uint64_t key)
{
    return (struct item){key, key * 7 + 1, (uint32_t)(key ^ 0x5a5a5a5a)};
}

static void assert_item(const struct item *it, uint64_t key)
{
    cr_assert_eq(it->key, key);
    cr_assert_eq(it->value, key * 7 + 1, "the element of key %llu was damaged",
                 (unsigned long long)key);
    cr_assert_eq(it->check, (uint32_t)(key ^ 0x5a5a5a5a));
}

/* ---- the ring ------------------------------------------------------------------------- */

static void ring_push(struct wr_ring *r, uint64_t key)
{
    cr_assert_eq(wr_ring_reserve(r, r->count + 1), WR_OK);
    *(struct item *)wr_ring_push_back(r) = item_of(key);
}

static void ring_insert(struct wr_ring *r, uint64_t key)
{
    cr_assert_eq(wr_ring_reserve(r, r->count + 1), WR_OK);
    *(struct item *)wr_ring_insert_ordered(r, key) = item_of(key);
}

static uint64_t ring_pop(struct wr_ring *r)
{
    cr_assert_gt(r->count, 0);
    uint64_t key = ((struct item *)wr_ring_at(r, 0))->key;
    wr_ring_pop_front(r);
    return key;
}

static void ring_expect(const struct wr_ring *r, const uint64_t *keys, size_t n)
{
    cr_assert_eq(r->count, n, "the ring holds %zu elements, expected %zu", r->count, n);
    for (size_t i = 0; i < n; i++)
        assert_item(wr_ring_at(r, i), keys[i]);
}

/* A queue's life: new keys appended, the head taken, taken keys put back at their place. */
Test(ring, model)
{
    struct wr_ring r;
    wr_ring_init(&r, sizeof(struct item));
    uint64_t *model = malloc(OPS * sizeof *model); /* the ring's keys, in order */
    uint64_t *taken = malloc(OPS * sizeof *taken);
    cr_assert(model && taken);
    size_t n = 0, ntaken = 0;
    uint64_t next_key = 1;
    for (int op = 0; op < OPS; op++) {
        uint64_t what = rnd(10);
        if (what < 4) {
            ring_push(&r, next_key);
            model[n++] = next_key++;
        } else if (what < 7 && n > 0) {
            cr_assert_eq(ring_pop(&r), model[0]);
            taken[ntaken++] = model[0];
            memmove(model, model + 1, --n * sizeof *model);
        } else if (ntaken > 0) {
            size_t k = (size_t)rnd(ntaken);
            uint64_t key = taken[k];
            taken[k] = taken[--ntaken];
            ring_insert(&r, key);
            size_t at = 0;
            while (at < n && model[at] < key)
                at++;
            memmove(model + at + 1, model + at, (n - at) * sizeof *model);
            model[at] = key;
            n++;
        }
        cr_assert_eq(r.count, n);
        if (n > 0) {
            size_t i = (size_t)rnd(n);
            assert_item(wr_ring_at(&r, i), model[i]);
        }
        if (op % 997 == 0)
            ring_expect(&r, model, n);
    }
    ring_expect(&r, model, n);
    wr_ring_fini(&r);
    cr_assert_eq(r.count, 0);
    free(model);
    free(taken);
}

/* Growth copies the elements in order when they wrap around the end of the buffer. */
Test(ring, grows_while_wrapped)
{
    struct wr_ring r;
    wr_ring_init(&r, sizeof(struct item));
    uint64_t key = 1;
    for (int i = 0; i < 10; i++)
        ring_push(&r, key++);
    size_t cap = r.cap;
    for (int i = 0; i < 8; i++)
        ring_pop(&r);
    while (r.count < cap)
        ring_push(&r, key++); /* the last ones land at the start of the buffer */
    cr_assert_eq(r.cap, cap, "the ring grew before it was full");
    cr_assert_gt(r.head + r.count, r.cap, "the contents do not wrap");
    ring_push(&r, key++);
    cr_assert_gt(r.cap, cap);
    uint64_t want[64];
    size_t n = 0;
    for (uint64_t k = 9; k < key; k++)
        want[n++] = k;
    ring_expect(&r, want, n);
    wr_ring_fini(&r);
}

/* Inserts at the front, at the back and in the middle of a wrapped ring, each shifting the
 * shorter side. */
Test(ring, insert_ordered_everywhere)
{
    struct wr_ring r;
    wr_ring_init(&r, sizeof(struct item));
    for (uint64_t k = 1; k <= 8; k++)
        ring_push(&r, k * 10);
    for (int i = 0; i < 6; i++)
        ring_pop(&r); /* 70 80: head near the end of a 16-slot buffer */
    for (uint64_t k = 9; k <= 18; k++)
        ring_push(&r, k * 10); /* 70..180, wrapped */
    ring_insert(&r, 5);     /* the front */
    ring_insert(&r, 1000);  /* the back */
    ring_insert(&r, 95);    /* near the front: the front side shifts */
    ring_insert(&r, 165);   /* near the back: the back side shifts */
    uint64_t want[] = {5, 70, 80, 90, 95, 100, 110, 120, 130, 140, 150, 160, 165, 170, 180,
                       1000};
    ring_expect(&r, want, sizeof want / sizeof *want);
    wr_ring_fini(&r);
}

/* A ring that cannot grow says so and keeps what it holds. */
Test(ring, reserve_too_much)
{
    struct wr_ring r;
    wr_ring_init(&r, sizeof(struct item));
    ring_push(&r, 1);
    ring_push(&r, 2);
    cr_assert_eq(wr_ring_reserve(&r, SIZE_MAX / 4), WR_ENOMEM);
    uint64_t want[] = {1, 2};
    ring_expect(&r, want, 2);
    wr_ring_fini(&r);
}

/* ---- the id table --------------------------------------------------------------------- */

#define KEYS 3000 /* a small key space, so puts meet present keys and chains form */

static size_t table_walk(const struct wr_idtable *t, const bool *present)
{
    size_t seen = 0;
    struct item *it;
    bool *visited = calloc(KEYS + 1, 1);
    cr_assert(visited);
    for (size_t i = 0; (it = wr_idtable_next(t, &i));) {
        cr_assert(it->key >= 1 && it->key <= KEYS && present[it->key],
                  "iteration met key %llu, which is not in the table",
                  (unsigned long long)it->key);
        cr_assert(!visited[it->key], "iteration met key %llu twice",
                  (unsigned long long)it->key);
        visited[it->key] = true;
        assert_item(it, it->key);
        seen++;
    }
    free(visited);
    return seen;
}

Test(idtable, model)
{
    struct wr_idtable t;
    wr_idtable_init(&t, sizeof(struct item));
    bool present[KEYS + 1] = {0};
    size_t n = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t key = 1 + rnd(KEYS);
        uint64_t what = rnd(10);
        struct item *it = wr_idtable_find(&t, key);
        cr_assert_eq(it != NULL, present[key], "find(%llu) disagrees with the model",
                     (unsigned long long)key);
        if (it)
            assert_item(it, key);
        if (what < 5) {
            struct item *put = wr_idtable_put(&t, key);
            cr_assert_not_null(put);
            if (present[key]) {
                assert_item(put, key); /* an existing element comes back untouched */
            } else {
                cr_assert_eq(put->key, key);
                *put = item_of(key);
                present[key] = true;
                n++;
            }
        } else if (what < 9 && present[key]) {
            wr_idtable_del(&t, it);
            present[key] = false;
            n--;
            cr_assert_null(wr_idtable_find(&t, key));
        }
        cr_assert_eq(t.count, n);
        cr_assert_leq(t.count * 4, t.cap * 3, "the table is more than 3/4 full");
        if (op % 997 == 0) {
            cr_assert_eq(table_walk(&t, present), n);
            for (uint64_t k = 1; k <= KEYS; k++)
                cr_assert_eq(wr_idtable_find(&t, k) != NULL, present[k]);
        }
    }
    cr_assert_eq(table_walk(&t, present), n);
    cr_assert_null(wr_idtable_find(&t, 0), "0 is never a key");
    wr_idtable_fini(&t);
    cr_assert_eq(t.count, 0);
    cr_assert_null(wr_idtable_find(&t, 1));
}

/* Many consecutive keys, as delivery tags come: all found after every growth. */
Test(idtable, growth)
{
    struct wr_idtable t;
    wr_idtable_init(&t, sizeof(struct item));
    for (uint64_t k = 1; k <= OPS; k++) {
        struct item *it = wr_idtable_put(&t, k);
        cr_assert_not_null(it);
        *it = item_of(k);
    }
    cr_assert_eq(t.count, OPS);
    cr_assert_eq(t.cap & (t.cap - 1), 0, "the capacity is not a power of two");
    for (uint64_t k = 1; k <= OPS; k++)
        assert_item(wr_idtable_find(&t, k), k);
    cr_assert_null(wr_idtable_find(&t, OPS + 1));
    for (uint64_t k = 1; k <= OPS; k += 2)
        wr_idtable_del(&t, wr_idtable_find(&t, k));
    for (uint64_t k = 1; k <= OPS; k++)
        cr_assert_eq(wr_idtable_find(&t, k) != NULL, k % 2 == 0);
    wr_idtable_fini(&t);
}

/* After reserve(n), n puts of new keys move nothing: pointers into the table stay good. */
Test(idtable, reserve)
{
    struct wr_idtable t;
    wr_idtable_init(&t, sizeof(struct item));
    cr_assert_eq(wr_idtable_reserve(&t, 100), WR_OK);
    unsigned char *slots = t.slots;
    for (uint64_t k = 1; k <= 100; k++)
        *(struct item *)wr_idtable_put(&t, k) = item_of(k);
    cr_assert_eq(t.slots, slots, "a put after reserve grew the table");
    cr_assert_eq(wr_idtable_reserve(&t, SIZE_MAX / 4), WR_ENOMEM);
    for (uint64_t k = 1; k <= 100; k++)
        assert_item(wr_idtable_find(&t, k), k);
    wr_idtable_fini(&t);
}

/* Keys whose home slot is the last one of a 16-slot table: their probe run wraps to slot 0.
 * Deleting from the head, the middle and the end of such a run, with keys of the next homes
 * mixed in, must leave every other key findable. */
Test(idtable, deletion_chains_wrap)
{
    uint64_t last[6], first[3];
    size_t nl = 0, nf = 0;
    for (uint64_t k = 1; nl < 6 || nf < 3; k++) {
        size_t home = wr_idtable_home(k, 15);
        if (home == 15 && nl < 6)
            last[nl++] = k;
        else if (home == 0 && nf < 3)
            first[nf++] = k;
    }
    for (int victim = 0; victim < 9; victim++) {
        struct wr_idtable t;
        wr_idtable_init(&t, sizeof(uint64_t)); /* bare keys, as a consumer's tags */
        uint64_t keys[9];
        size_t n = 0;
        for (size_t i = 0; i < 6; i++) {
            keys[n++] = last[i];
            if (i < 3)
                keys[n++] = first[i];
        }
        for (size_t i = 0; i < n; i++)
            cr_assert_not_null(wr_idtable_put(&t, keys[i]));
        cr_assert_eq(t.cap, 16, "the test needs the 16-slot table");
        wr_idtable_del(&t, wr_idtable_find(&t, keys[victim]));
        cr_assert_eq(t.count, n - 1);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(wr_idtable_find(&t, keys[i]) != NULL, (int)i != victim,
                         "after deleting key %llu, key %llu is %s",
                         (unsigned long long)keys[victim], (unsigned long long)keys[i],
                         (int)i == victim ? "still there" : "lost");
        wr_idtable_fini(&t);
    }
}
