/*
 * exchange_headers_test.c: the `headers` exchange type, through the real plugin loaded by
 * the real broker, as RabbitMQ's rabbit_exchange_type_headers behaves: x-match all (the
 * default), any, all-with-x and any-with-x; "x-" arguments left out unless -with-x; a void
 * argument meaning "present"; integers equal across widths; bad x-match refused at bind.
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
    ex = tu_exchange(&tb, "hx", "headers");
}

static void teardown(void)
{
    tu_broker_fini(&tb);
}

TestSuite(exchange_headers, .init = setup, .fini = teardown);

/* ---- building tables ---------------------------------------------------------------- */

/* A table with x-match = x_match first (none if NULL). */
static struct wr_table *table(const char *x_match)
{
    struct wr_table *t = wr_table_new();
    cr_assert_not_null(t);
    if (x_match) {
        struct wr_value v = wr_value_str(x_match);
        cr_assert_eq(wr_table_add(t, "x-match", &v), WR_OK);
    }
    return t;
}

static struct wr_table *add_str(struct wr_table *t, const char *name, const char *s)
{
    struct wr_value v = wr_value_str(s);
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
    return t;
}

static struct wr_table *add_int(struct wr_table *t, const char *name, enum wr_value_type type,
                                int64_t i)
{
    struct wr_value v = {.type = type, .u.i = i};
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
    return t;
}

static struct wr_table *add_void(struct wr_table *t, const char *name)
{
    struct wr_value v = {.type = WR_V_VOID};
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
    return t;
}

/* ---- binding and routing ------------------------------------------------------------ */

/* Binds a new queue called name with args (then freed: the broker keeps its own copy). */
static struct wr_queue *bind_new(const char *name, struct wr_table *args)
{
    struct wr_queue *q = tu_queue(&tb, name);
    struct wr_error err = {0};
    cr_assert_eq(wr_bind_queue(ex, q, "", args, &err), WR_OK, "%s", err.msg);
    wr_table_free(args);
    return q;
}

/* The queues a message with headers hdrs (then freed) reaches, as tu_routed gives them. */
static const char *routed(struct wr_table *hdrs)
{
    const char *out = tu_routed(ex, "ignored.key", hdrs);
    wr_table_free(hdrs);
    return out;
}

/* ---- tests -------------------------------------------------------------------------- */

Test(exchange_headers, all_is_the_default_and_needs_every_field)
{
    bind_new("implicit", add_str(add_str(table(NULL), "format", "pdf"), "type", "report"));
    bind_new("explicit", add_str(add_str(table("all"), "format", "pdf"), "type", "report"));
    cr_assert_str_eq(routed(add_str(add_str(table(NULL), "type", "report"), "format", "pdf")),
                     "explicit,implicit");
    cr_assert_str_eq(routed(add_int(add_str(add_str(table(NULL), "format", "pdf"), "type",
                                            "report"), "extra", WR_V_I32, 1)),
                     "explicit,implicit");
    cr_assert_str_eq(routed(add_str(table(NULL), "format", "pdf")), "");
    cr_assert_str_eq(routed(add_str(add_str(table(NULL), "format", "zip"), "type", "report")),
                     "");
    cr_assert_str_eq(routed(table(NULL)), "");
}

Test(exchange_headers, any_needs_one_field)
{
    bind_new("q", add_str(add_str(table("any"), "format", "pdf"), "type", "log"));
    cr_assert_str_eq(routed(add_str(table(NULL), "format", "pdf")), "q");
    cr_assert_str_eq(routed(add_str(table(NULL), "type", "log")), "q");
    cr_assert_str_eq(routed(add_str(add_str(table(NULL), "format", "zip"), "type", "log")), "q");
    cr_assert_str_eq(routed(add_str(table(NULL), "format", "zip")), "");
    cr_assert_str_eq(routed(table(NULL)), "");
}

Test(exchange_headers, x_arguments_are_left_out_without_with_x)
{
    bind_new("all", add_str(add_str(table("all"), "x-tag", "t"), "a", "1"));
    bind_new("any", add_str(add_str(table("any"), "x-tag", "t"), "a", "1"));
    /* The message lacks x-tag, and neither binding asks for it. */
    cr_assert_str_eq(routed(add_str(table(NULL), "a", "1")), "all,any");
    /* x-tag alone is not a reason for `any` either. */
    cr_assert_str_eq(routed(add_str(table(NULL), "x-tag", "t")), "");
}

/* RabbitMQ starts `all` true and `any` false; with no field left to test they stay so. */
Test(exchange_headers, no_field_to_test_means_all_matches_and_any_does_not)
{
    bind_new("all-empty", table("all"));
    bind_new("all-only-x", add_str(table("all"), "x-only", "v"));
    bind_new("any-empty", table("any"));
    bind_new("any-only-x", add_str(table("any"), "x-only", "v"));
    bind_new("no-args", table(NULL));
    cr_assert_str_eq(routed(table(NULL)), "all-empty,all-only-x,no-args");
    cr_assert_str_eq(routed(add_str(table(NULL), "x-only", "v")), "all-empty,all-only-x,no-args");
}

Test(exchange_headers, with_x_counts_x_arguments)
{
    bind_new("all", add_str(add_str(table("all-with-x"), "x-tag", "t"), "a", "1"));
    bind_new("any", add_str(add_str(table("any-with-x"), "x-tag", "t"), "b", "2"));
    cr_assert_str_eq(routed(add_str(table(NULL), "a", "1")), "");
    cr_assert_str_eq(routed(add_str(add_str(table(NULL), "a", "1"), "x-tag", "t")), "all,any");
    cr_assert_str_eq(routed(add_str(table(NULL), "x-tag", "t")), "any");
    cr_assert_str_eq(routed(add_str(table(NULL), "b", "2")), "any");
    cr_assert_str_eq(routed(add_str(table(NULL), "x-tag", "other")), "");
    /* x-match itself is never a field to match, even with -with-x. */
    cr_assert_str_eq(routed(add_str(add_str(add_str(table(NULL), "a", "1"), "x-tag", "t"),
                                    "x-match", "nothing")),
                     "all,any");
}

Test(exchange_headers, void_argument_means_present_with_any_value)
{
    bind_new("all", add_void(add_str(table("all"), "k", "v"), "flag"));
    bind_new("any", add_void(table("any"), "flag"));
    cr_assert_str_eq(routed(add_str(add_str(table(NULL), "k", "v"), "flag", "x")), "all,any");
    cr_assert_str_eq(routed(add_int(add_str(table(NULL), "k", "v"), "flag", WR_V_I64, 0)),
                     "all,any");
    cr_assert_str_eq(routed(add_void(table(NULL), "flag")), "any");
    cr_assert_str_eq(routed(add_str(table(NULL), "k", "v")), "");
    cr_assert_str_eq(routed(add_str(table(NULL), "flags", "x")), "");
}

Test(exchange_headers, integers_compare_by_value_across_widths)
{
    bind_new("five", add_int(table(NULL), "n", WR_V_I8, 5));
    bind_new("big", add_int(table(NULL), "n", WR_V_I64, 70000));
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_I64, 5)), "five");
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_U32, 5)), "five");
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_I16, 5)), "five");
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_U8, 5)), "five");
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_I32, 70000)), "big");
    cr_assert_str_eq(routed(add_int(table(NULL), "n", WR_V_I16, 6)), "");
    /* A string is not an integer, even one that reads like it. */
    cr_assert_str_eq(routed(add_str(table(NULL), "n", "5")), "");
}

Test(exchange_headers, routing_key_is_ignored_and_publish_stores_once)
{
    struct wr_queue *q = bind_new("q", add_str(table("any"), "a", "1"));
    struct wr_error err = {0};
    /* A second binding of the same queue that also matches: one copy all the same. */
    struct wr_table *args = add_str(table("all"), "b", "2");
    cr_assert_eq(wr_bind_queue(ex, q, "some.key", args, &err), WR_OK, "%s", err.msg);
    wr_table_free(args);
    struct wr_table *hdrs = add_str(add_str(table(NULL), "a", "1"), "b", "2");
    cr_assert_eq(tu_publish(&tb, "hx", "whatever", "m", hdrs), 1);
    wr_table_free(hdrs);
    cr_assert_eq(wr_queue_depth(q), 1);
    char *body = tu_get_body(q);
    cr_assert_str_eq(body, "m");
    free(body);
}

Test(exchange_headers, invalid_x_match_is_refused_with_rabbitmq_message)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    struct wr_error err = {0};
    struct wr_table *args = add_str(table("some"), "a", "1");
    cr_assert_eq(wr_bind_queue(ex, q, "", args, &err), WR_EINVAL);
    cr_assert_not_null(strstr(err.msg, "Invalid x-match field value"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "some"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "expected all, any, all-with-x, or any-with-x"), "%s",
                       err.msg);
    wr_table_free(args);

    /* x-match must be a string: RabbitMQ wants a longstr. */
    args = add_int(wr_table_new(), "x-match", WR_V_I32, 1);
    wr_error_clear(&err);
    cr_assert_eq(wr_bind_queue(ex, q, "", args, &err), WR_EINVAL);
    cr_assert_not_null(strstr(err.msg, "Invalid x-match field type"), "%s", err.msg);
    wr_table_free(args);

    /* Matching is case-sensitive, as in RabbitMQ. */
    args = table("ALL");
    wr_error_clear(&err);
    cr_assert_eq(wr_bind_queue(ex, q, "", args, &err), WR_EINVAL);
    wr_table_free(args);

    /* Nothing was bound by the refusals. */
    cr_assert_eq(wr_exchange_binding_count(ex), 0);
    struct wr_table *hdrs = add_str(table(NULL), "a", "1");
    cr_assert_eq(tu_publish(&tb, "hx", "", "m", hdrs), 0);
    wr_table_free(hdrs);
}

Test(exchange_headers, unbind_removes_only_that_binding)
{
    struct wr_queue *a = bind_new("a", add_str(table("any"), "k", "1"));
    bind_new("b", add_str(table("any"), "k", "1"));
    bind_new("c", add_str(table("any"), "k", "1"));
    struct wr_table *args = add_str(table("any"), "k", "1");
    struct wr_error err = {0};
    cr_assert_eq(wr_unbind_queue(ex, a, "", args, &err), WR_OK, "%s", err.msg);
    wr_table_free(args);
    cr_assert_str_eq(routed(add_str(table(NULL), "k", "1")), "b,c");
    /* Other arguments make another binding: unbinding it leaves b's. */
    struct wr_queue *b = wr_queue_find(tb.vh, "b");
    args = add_str(table("any"), "k", "2");
    cr_assert_eq(wr_unbind_queue(ex, b, "", args, &err), WR_OK, "%s", err.msg);
    wr_table_free(args);
    cr_assert_str_eq(routed(add_str(table(NULL), "k", "1")), "b,c");
    cr_assert_eq(wr_exchange_binding_count(ex), 2);
}
