/*
 * exchange_topic_test.c: the `topic` exchange type, through the real plugin loaded by the
 * real broker. RabbitMQ's word rules (the key "" has zero words, every dot separates two
 * words, `*` takes exactly one word and `#` zero or more), the examples of RabbitMQ's
 * tutorial and of the AMQP spec, unbind, once-only delivery, many `#` without blowup, and a
 * seeded comparison against a plain recursive matcher over random patterns and keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "testutil.h"

static struct tu_broker tb;
static struct wr_exchange *ex;

static void setup(void)
{
    tu_broker_init(&tb);
    ex = tu_exchange(&tb, "tx", "topic");
}

static void teardown(void)
{
    tu_broker_fini(&tb);
}

TestSuite(exchange_topic, .init = setup, .fini = teardown);

static void bind(struct wr_queue *q, const char *pattern) { tu_bind(ex, q, pattern, NULL); }

static void unbind(struct wr_queue *q, const char *pattern) { tu_unbind(ex, q, pattern, NULL); }

/* How many queues a message with routing key rk reaches from ex (qs gets up to max). */
static size_t route(const char *rk, struct wr_queue **qs, size_t max)
{
    struct wr_msg *msg = tu_msg(rk, NULL, NULL);
    size_t n = wr_exchange_route(ex, msg, qs, max);
    wr_msg_unref(msg);
    return n;
}

/* Does pattern match key? One queue bound with the pattern alone, then unbound again. */
static bool matches(struct wr_queue *q, const char *pattern, const char *key)
{
    struct wr_queue *got[2];
    bind(q, pattern);
    size_t n = route(key, got, 2);
    unbind(q, pattern);
    cr_assert_leq(n, 1);
    cr_assert(n == 0 || got[0] == q);
    cr_assert_eq(route(key, got, 2), 0, "unbind of '%s' left it routing", pattern);
    return n == 1;
}

struct topic_case {
    const char *pattern;
    const char *key;
    bool match;
};

static void check_cases(const struct topic_case *cases, size_t n)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(matches(q, cases[i].pattern, cases[i].key), cases[i].match,
                     "pattern '%s' key '%s': expected %s", cases[i].pattern, cases[i].key,
                     cases[i].match ? "a match" : "no match");
}

#define CHECK(cases) check_cases(cases, sizeof cases / sizeof cases[0])

Test(exchange_topic, literal_words_match_exactly)
{
    static const struct topic_case cases[] = {
        {"a.b.c", "a.b.c", true},   {"a.b.c", "a.b", false},   {"a.b.c", "a.b.c.d", false},
        {"a.b", "a.bc", false},     {"a", "A", false},         {"a*", "ab", false},
        {"a*", "a*", true},         {"a.#b", "a.x", false},    {"a.#b", "a.#b", true},
        {"a.b", "*.b", false},      {"a", "#", false},
    };
    CHECK(cases);
}

Test(exchange_topic, star_takes_exactly_one_word)
{
    static const struct topic_case cases[] = {
        {"*", "a", true},           {"*", "a.b", false},       {"a.*", "a.b", true},
        {"a.*", "a", false},        {"a.*", "a.b.c", false},   {"*.b", "a.b", true},
        {"*.b", "b", false},        {"a.*.c", "a.b.c", true},  {"a.*.c", "a.c", false},
        {"*.*", "a.b", true},       {"*.*", "a", false},       {"*", "*", true},
        {"*", "#", true},
    };
    CHECK(cases);
}

Test(exchange_topic, hash_takes_zero_or_more_words)
{
    static const struct topic_case cases[] = {
        {"#", "", true},            {"#", "a", true},          {"#", "a.b.c", true},
        {"#", ".", true},           {"#", "..", true},         {"a.#", "a", true},
        {"a.#", "a.b", true},       {"a.#", "a.b.c", true},    {"a.#", "ab", false},
        {"a.#", "b.a", false},      {"#.a", "a", true},        {"#.a", "x.y.a", true},
        {"#.a", "a.x", false},      {"a.#.b", "a.b", true},    {"a.#.b", "a.x.b", true},
        {"a.#.b", "a.x.y.b", true}, {"a.#.b", "a.b.c", false}, {"a.#.b", "b", false},
        {"a.#.b", "a", false},      {"#.#", "", true},         {"#.#", "a", true},
        {"#.#", "a.b.c", true},     {"#.*", "", false},        {"#.*", "a", true},
        {"#.*", "a.b", true},       {"*.#", "", false},        {"*.#", "a", true},
        {"#.*.#", "a", true},       {"#.*.#", "", false},      {"a.*.#.b", "a.b", false},
        {"a.*.#.b", "a.x.b", true}, {"a.#.#.b", "a.b", true},  {"#.b.#", "a.b.c", true},
        {"#.b.#", "b", true},       {"#.b.#", "a.c", false},
    };
    CHECK(cases);
}

/* RabbitMQ's split_topic_key: "" is zero words, any other key is split at every dot, so an
 * empty word is a word ("a..b" has three, ".a" and "a." two). */
Test(exchange_topic, empty_key_and_empty_words_follow_rabbitmq)
{
    static const struct topic_case cases[] = {
        {"", "", true},             {"", "a", false},          {"", ".", false},
        {"*", "", false},           {"*", ".", false},         {"*.*", ".", true},
        {"a.*.b", "a..b", true},    {"a..b", "a..b", true},    {"a..b", "a.b", false},
        {"a.b", "a..b", false},     {"a.*", "a.", true},       {"a.", "a.", true},
        {"a.", "a", false},         {"*.a", ".a", true},       {".a", ".a", true},
        {".a", "a", false},         {"a.#.b", "a..b", true},   {"#.b", ".b", true},
        {"a.#", "a.", true},        {"*", "", false},
    };
    CHECK(cases);
}

/* The AMQP 0-9-1 spec's example: "*.stock.#" matches "usd.stock" and "eur.stock.db" but not
 * "stock.nasdaq". */
Test(exchange_topic, amqp_spec_example)
{
    static const struct topic_case cases[] = {
        {"*.stock.#", "usd.stock", true},
        {"*.stock.#", "eur.stock.db", true},
        {"*.stock.#", "stock.nasdaq", false},
    };
    CHECK(cases);
}

/* RabbitMQ tutorial 5: Q1 binds "*.orange.*", Q2 binds "*.*.rabbit" and "lazy.#". */
Test(exchange_topic, rabbitmq_tutorial_example)
{
    struct wr_queue *q1 = tu_queue(&tb, "Q1");
    struct wr_queue *q2 = tu_queue(&tb, "Q2");
    bind(q1, "*.orange.*");
    bind(q2, "*.*.rabbit");
    bind(q2, "lazy.#");
    static const struct {
        const char *key;
        int q1, q2;
    } want[] = {
        {"quick.orange.rabbit", 1, 1},   {"lazy.orange.elephant", 1, 1},
        {"quick.orange.fox", 1, 0},      {"lazy.brown.fox", 0, 1},
        {"lazy.pink.rabbit", 0, 1},      {"quick.brown.fox", 0, 0},
        {"orange", 0, 0},                {"quick.orange.new.rabbit", 0, 0},
        {"lazy.orange.new.rabbit", 0, 1}, {"lazy", 0, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint64_t d1 = wr_queue_depth(q1), d2 = wr_queue_depth(q2);
        cr_assert_eq(tu_publish(&tb, "tx", want[i].key, want[i].key, NULL),
                     want[i].q1 + want[i].q2, "key %s", want[i].key);
        /* "lazy.pink.rabbit" matches both of Q2's patterns and is stored there once. */
        cr_assert_eq(wr_queue_depth(q1) - d1, (uint64_t)want[i].q1, "key %s", want[i].key);
        cr_assert_eq(wr_queue_depth(q2) - d2, (uint64_t)want[i].q2, "key %s", want[i].key);
    }
    char *body = tu_get_body(q1);
    cr_assert_str_eq(body, "quick.orange.rabbit");
    free(body);
}

Test(exchange_topic, a_queue_matched_by_two_patterns_gets_one_copy)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    bind(q, "a.*");
    bind(q, "#");
    bind(q, "a.b");
    bind(q, "*.b");
    cr_assert_eq(tu_publish(&tb, "tx", "a.b", "m", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(exchange_topic, unbind_removes_only_that_pattern)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    struct wr_queue *r = tu_queue(&tb, "r");
    struct wr_queue *got[4];
    bind(q, "a.*");
    bind(q, "a.#");
    bind(r, "a.b.c");
    bind(r, "a.b");
    unbind(q, "a.*");
    cr_assert_eq(route("a.x", got, 4), 1);
    cr_assert_eq(got[0], q);
    cr_assert_eq(route("a", got, 4), 1);
    unbind(q, "a.#");
    cr_assert_eq(route("a.x", got, 4), 0);
    cr_assert_eq(route("a", got, 4), 0);
    /* "a.b.c" goes, its prefix "a.b" (another binding's whole pattern) keeps routing. */
    unbind(r, "a.b.c");
    cr_assert_eq(route("a.b.c", got, 4), 0);
    cr_assert_eq(route("a.b", got, 4), 1);
    cr_assert_eq(got[0], r);
    unbind(r, "a.b");
    cr_assert_eq(route("a.b", got, 4), 0);
    /* Unbinding a pattern never bound is harmless, and the trie can grow back. */
    unbind(r, "a.b.c.d");
    bind(r, "a.b.c");
    cr_assert_eq(route("a.b.c", got, 4), 1);
    cr_assert_eq(wr_exchange_binding_count(ex), 1);
}

Test(exchange_topic, same_pattern_for_two_queues_and_unbinding_one)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    struct wr_queue *r = tu_queue(&tb, "r");
    struct wr_queue *got[4];
    bind(q, "x.#");
    bind(r, "x.#");
    cr_assert_eq(route("x.y", got, 4), 2);
    unbind(q, "x.#");
    cr_assert_eq(route("x.y", got, 4), 1);
    cr_assert_eq(got[0], r);
}

/* Each `#` could take any number of words; a naive matcher tries every split of 300 words
 * among 20 `#`, which never ends. The memo makes it instant. */
Test(exchange_topic, many_hashes_against_a_long_key_do_not_blow_up, .timeout = 20)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    char pattern[128] = "";
    for (int i = 0; i < 20; i++)
        strcat(pattern, "#.");
    strcat(pattern, "z");
    bind(q, pattern);
    char key[1024] = "";
    for (int i = 0; i < 300; i++)
        strcat(key, "a.");
    strcat(key, "y");
    struct wr_queue *got[2];
    for (int i = 0; i < 100; i++)
        cr_assert_eq(route(key, got, 2), 0);
    key[strlen(key) - 1] = 'z';
    cr_assert_eq(route(key, got, 2), 1);
    cr_assert_eq(route("z", got, 2), 1);
}

/* ---- against a reference ------------------------------------------------------------ */

/* Splits s into words as RabbitMQ does; returns the count. */
static int split_words(const char *s, const char **w, int *len)
{
    int n = 0;
    if (!*s)
        return 0;
    for (;;) {
        const char *dot = strchr(s, '.');
        w[n] = s;
        len[n] = dot ? (int)(dot - s) : (int)strlen(s);
        n++;
        if (!dot)
            return n;
        s = dot + 1;
    }
}

/* The definition, written as plainly as possible: exponential, fine for short inputs. */
static bool ref_match(const char **pw, const int *pl, int pn, const char **kw, const int *kl,
                      int kn)
{
    if (pn == 0)
        return kn == 0;
    if (pl[0] == 1 && pw[0][0] == '#') {
        for (int j = 0; j <= kn; j++)
            if (ref_match(pw + 1, pl + 1, pn - 1, kw + j, kl + j, kn - j))
                return true;
        return false;
    }
    if (kn == 0)
        return false;
    bool word = (pl[0] == 1 && pw[0][0] == '*') ||
                (pl[0] == kl[0] && memcmp(pw[0], kw[0], (size_t)kl[0]) == 0);
    return word && ref_match(pw + 1, pl + 1, pn - 1, kw + 1, kl + 1, kn - 1);
}

static void random_words(char *out, int max_words, const char *const *vocab, int nvocab)
{
    int n = rand() % (max_words + 1);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(out, ".");
        strcat(out, vocab[rand() % nvocab]);
    }
}

Test(exchange_topic, random_patterns_agree_with_the_reference)
{
    static const char *const pvocab[] = {"a", "b", "", "*", "#", "#", "*"};
    static const char *const kvocab[] = {"a", "b", "", "c"};
    enum { NQ = 60, NKEYS = 400 };
    static char patterns[NQ][64];
    struct wr_queue *qs[NQ];
    bool bound[NQ];
    char name[16];
    srand(7);
    for (int i = 0; i < NQ; i++) {
        snprintf(name, sizeof name, "q%d", i);
        qs[i] = tu_queue(&tb, name);
        random_words(patterns[i], 5, pvocab, 7);
        bind(qs[i], patterns[i]);
        bound[i] = true;
    }
    for (int i = 0; i < NQ; i += 3) {
        unbind(qs[i], patterns[i]);
        bound[i] = false;
    }
    for (int k = 0; k < NKEYS; k++) {
        char key[64];
        random_words(key, 6, kvocab, 4);
        struct wr_queue *got[NQ];
        size_t n = route(key, got, NQ);
        const char *kw[16], *pw[16];
        int kl[16], pl[16];
        int kn = split_words(key, kw, kl);
        size_t want = 0;
        for (int i = 0; i < NQ; i++) {
            int pn = split_words(patterns[i], pw, pl);
            bool m = bound[i] && ref_match(pw, pl, pn, kw, kl, kn);
            bool hit = false;
            for (size_t j = 0; j < n; j++)
                hit = hit || got[j] == qs[i];
            cr_assert_eq(hit, m, "key '%s' pattern '%s'", key, patterns[i]);
            want += m;
        }
        cr_assert_eq(n, want, "key '%s': a queue was reached twice", key);
    }
}
