/*
 * topic.c: the `topic` exchange type. Routing keys and binding patterns are lists of words
 * separated by dots; in a pattern `*` stands for exactly one word and `#` for zero or more
 * (AMQP 0-9-1 3.1.3.3, with RabbitMQ's reading of the corner cases below).
 *
 * The index is a trie of pattern words, as RabbitMQ's rabbit_db_topic_exchange keeps it: a
 * node per pattern prefix, a hash map of literal children per node plus one `*` and one `#`
 * child, and at each node the bindings whose pattern ends there. A route walks the trie
 * with the routing key's words, so it touches only the patterns that can still match, never
 * every binding.
 *
 * Words, as RabbitMQ splits them (split_topic_key): the empty key "" has ZERO words; any
 * other key is split at every dot, so "a..b" is "a", "", "b", ".a" is "", "a" and "a." is
 * "a", "". Hence `*` matches the empty word of "a..b" (through `a.*.b`) and of "a." (through
 * `a.*`), but `*` does not match the key "": there is no word for it to take. `#` matches
 * "", as it takes zero words; so do `#.#` and the pattern "" itself (whose zero words end at
 * the root). Binding patterns are split the same way, and a pattern word is a wildcard only
 * when it is exactly `*` or `#`.
 *
 * Matching (RabbitMQ's trie_match): at node n with words w[i..], follow n's literal child
 * for w[i] and its `*` child with w[i+1..], and let n's `#` child h take any number of
 * words: match h with w[j..] for every j >= i. With no words left, n's bindings match and
 * a `#` child may still take zero words. Several `#` in a pattern make that naive walk
 * explode (`#.#.#.#.x` against a long key tries every split), so each `#` node remembers,
 * for the current route, the lowest position it was already expanded from: expanding from
 * position i covers every j >= i, so a later request at j >= that mark is skipped and one at
 * a lower position only does the new part. Every node is then visited at most once per word
 * position, and a route costs O(nodes reached * words) at worst, without allocating.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

#define TOPIC_KIDS_MIN_CAP 4

struct topic_node {
    struct topic_node *parent;
    struct topic_node *star;           /* the child for a `*` word */
    struct topic_node *hash;           /* the child for a `#` word */
    struct topic_node **kids;          /* literal children: open addressing, kid_cap slots */
    uint32_t kid_cap;
    uint32_t kid_count;
    struct wr_binding **bindings;      /* patterns that end here */
    uint32_t nbind;
    uint32_t bind_cap;
    uint64_t memo_gen;                 /* the route in which memo_from holds */
    size_t memo_from;                  /* `#` nodes: lowest position expanded in that route */
    uint64_t word_hash;                /* literal nodes: the word on the edge from parent */
    size_t word_len;
    char word[];
};

struct topic {
    struct topic_node *root;
    uint64_t gen; /* counts routes, for the `#` memo */
};

/* One route in progress. A position is the byte offset where a word starts; len + 1 means
 * no word is left (so the key "" starts there, at zero words). */
struct topic_walk {
    const char *key;
    size_t len;
    uint64_t gen;
    struct wr_route *out;
};

static uint64_t topic_hash(const char *p, size_t len)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a, 64 bits */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- literal children: a small open-addressing map per node ------------------------ */

static size_t topic_kid_slot(const struct topic_node *n, const char *word, size_t len,
                             uint64_t hash)
{
    size_t mask = n->kid_cap - 1;
    size_t i = hash & mask;
    for (;;) {
        const struct topic_node *k = n->kids[i];
        if (!k || (k->word_hash == hash && k->word_len == len &&
                   memcmp(k->word, word, len) == 0))
            return i;
        i = (i + 1) & mask;
    }
}

static struct topic_node *topic_kid_find(const struct topic_node *n, const char *word,
                                         size_t len, uint64_t hash)
{
    if (n->kid_count == 0)
        return NULL;
    return n->kids[topic_kid_slot(n, word, len, hash)];
}

static int topic_kid_insert(struct topic_node *n, struct topic_node *kid)
{
    if ((n->kid_count + 1) * 4 > n->kid_cap * 3) {
        uint32_t cap = n->kid_cap ? n->kid_cap * 2 : TOPIC_KIDS_MIN_CAP;
        struct topic_node **kids = calloc(cap, sizeof *kids);
        if (!kids)
            return WR_ENOMEM;
        for (uint32_t i = 0; i < n->kid_cap; i++) {
            struct topic_node *k = n->kids[i];
            if (!k)
                continue;
            size_t j = k->word_hash & (cap - 1);
            while (kids[j])
                j = (j + 1) & (cap - 1);
            kids[j] = k;
        }
        free(n->kids);
        n->kids = kids;
        n->kid_cap = cap;
    }
    n->kids[topic_kid_slot(n, kid->word, kid->word_len, kid->word_hash)] = kid;
    n->kid_count++;
    return WR_OK;
}

/* Removes kid, shifting back the entries after it that would no longer be found. */
static void topic_kid_remove(struct topic_node *n, struct topic_node *kid)
{
    size_t mask = n->kid_cap - 1;
    size_t i = topic_kid_slot(n, kid->word, kid->word_len, kid->word_hash);
    size_t j = i;
    n->kids[i] = NULL;
    n->kid_count--;
    for (;;) {
        j = (j + 1) & mask;
        struct topic_node *k = n->kids[j];
        if (!k)
            return;
        size_t home = k->word_hash & mask;
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            n->kids[i] = k;
            n->kids[j] = NULL;
            i = j;
        }
    }
}

/* ---- the trie ----------------------------------------------------------------------- */

static struct topic_node *topic_node_new(struct topic_node *parent, const char *word,
                                         size_t len)
{
    struct topic_node *n = calloc(1, sizeof *n + len + 1);
    if (!n)
        return NULL;
    n->parent = parent;
    n->word_len = len;
    n->word_hash = topic_hash(word, len);
    memcpy(n->word, word, len);
    return n;
}

static void topic_node_free(struct topic_node *n)
{
    if (!n)
        return;
    topic_node_free(n->star);
    topic_node_free(n->hash);
    for (uint32_t i = 0; i < n->kid_cap; i++)
        topic_node_free(n->kids[i]);
    free(n->kids);
    free(n->bindings);
    free(n);
}

/* The child of n for one pattern word, made if create is set; NULL if absent or out of
 * memory. */
static struct topic_node *topic_child(struct topic_node *n, const char *word, size_t len,
                                      bool create)
{
    struct topic_node **wild = NULL;
    if (len == 1 && word[0] == '*')
        wild = &n->star;
    else if (len == 1 && word[0] == '#')
        wild = &n->hash;
    if (wild) {
        if (!*wild && create)
            *wild = topic_node_new(n, "", 0);
        return *wild;
    }
    struct topic_node *kid = topic_kid_find(n, word, len, topic_hash(word, len));
    if (kid || !create)
        return kid;
    kid = topic_node_new(n, word, len);
    if (kid && topic_kid_insert(n, kid) != WR_OK) {
        free(kid);
        return NULL;
    }
    return kid;
}

/* Frees n and its ancestors for as long as they hold nothing, the root excepted. */
static void topic_prune(struct topic *t, struct topic_node *n)
{
    while (n != t->root && n->nbind == 0 && !n->star && !n->hash && n->kid_count == 0) {
        struct topic_node *parent = n->parent;
        if (parent->star == n)
            parent->star = NULL;
        else if (parent->hash == n)
            parent->hash = NULL;
        else
            topic_kid_remove(parent, n);
        free(n->kids);
        free(n->bindings);
        free(n);
        n = parent;
    }
}

static int topic_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                        void **state, struct wr_error *err)
{
    (void)ctx;
    struct topic *t = calloc(1, sizeof *t);
    if (t)
        t->root = topic_node_new(NULL, "", 0);
    if (!t || !t->root) {
        free(t);
        return wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    }
    *state = t;
    return WR_OK;
}

static void topic_destroy(void *state)
{
    struct topic *t = state;
    topic_node_free(t->root);
    free(t);
}

static int topic_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct topic *t = state;
    struct topic_node *n = t->root;
    const char *p = b->key.ptr;
    const char *end = p + b->key.len;
    /* "" has no words and ends at the root; otherwise every dot separates two words. */
    while (b->key.len > 0) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *wend = dot ? dot : end;
        struct topic_node *next = topic_child(n, p, (size_t)(wend - p), true);
        if (!next) {
            topic_prune(t, n);
            goto nomem;
        }
        n = next;
        if (!dot)
            break;
        p = dot + 1;
    }
    if (n->nbind == n->bind_cap) {
        uint32_t cap = n->bind_cap ? n->bind_cap * 2 : 2;
        struct wr_binding **bs = realloc(n->bindings, cap * sizeof *bs);
        if (!bs) {
            topic_prune(t, n);
            goto nomem;
        }
        n->bindings = bs;
        n->bind_cap = cap;
    }
    n->bindings[n->nbind++] = b;
    b->plugin_data = n;
    return WR_OK;
nomem:
    return wr_error_set(err, WR_ENOMEM, "topic binding '%s': out of memory", b->key.ptr);
}

static void topic_unbind(void *state, struct wr_binding *b)
{
    struct topic *t = state;
    struct topic_node *n = b->plugin_data;
    if (!n)
        return;
    for (uint32_t i = 0; i < n->nbind; i++) {
        if (n->bindings[i] == b) {
            n->bindings[i] = n->bindings[--n->nbind];
            break;
        }
    }
    b->plugin_data = NULL;
    topic_prune(t, n);
}

/* The position after the word at pos (len + 1 after the last word). */
static size_t topic_next(const struct topic_walk *w, size_t pos)
{
    const char *dot = memchr(w->key + pos, '.', w->len - pos);
    return dot ? (size_t)(dot - w->key) + 1 : w->len + 1;
}

static void topic_match(const struct topic_walk *w, struct topic_node *n, size_t pos);

/* h is a `#` node: let it take zero or more words from pos, each split tried once per
 * route (see the memo above). */
static void topic_match_hash(const struct topic_walk *w, struct topic_node *h, size_t pos)
{
    size_t stop = w->len + 2; /* past the "no word left" position */
    if (h->memo_gen == w->gen) {
        if (pos >= h->memo_from)
            return;
        stop = h->memo_from;
    }
    h->memo_gen = w->gen;
    h->memo_from = pos;
    for (;;) {
        topic_match(w, h, pos);
        if (pos > w->len)
            break;
        pos = topic_next(w, pos);
        if (pos >= stop)
            break;
    }
}

static void topic_match(const struct topic_walk *w, struct topic_node *n, size_t pos)
{
    if (pos > w->len) {
        for (uint32_t i = 0; i < n->nbind; i++)
            wr_route_add(w->out, n->bindings[i]);
        if (n->hash)
            topic_match_hash(w, n->hash, pos);
        return;
    }
    size_t next = topic_next(w, pos);
    if (n->kid_count > 0) {
        const char *word = w->key + pos;
        size_t len = next - pos - 1;
        struct topic_node *kid = topic_kid_find(n, word, len, topic_hash(word, len));
        if (kid)
            topic_match(w, kid, next);
    }
    if (n->star)
        topic_match(w, n->star, next);
    if (n->hash)
        topic_match_hash(w, n->hash, pos);
}

static void topic_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    struct topic *t = state;
    struct topic_walk w = {
        .key = msg->routing_key.ptr ? msg->routing_key.ptr : "",
        .len = msg->routing_key.len,
        .gen = ++t->gen,
        .out = out,
    };
    topic_match(&w, t->root, w.len == 0 ? 1 : 0);
}

static const struct wr_exchange_ops topic_ops = {
    .size = sizeof(struct wr_exchange_ops),
    .create = topic_create,
    .destroy = topic_destroy,
    .bind = topic_bind,
    .unbind = topic_unbind,
    .route = topic_route,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "topic", .version = WR_VERSION_STRING,
                 .ops = &topic_ops);
