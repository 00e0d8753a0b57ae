/*
 * headers.c: the `headers` exchange type. A binding's arguments are a pattern over the
 * message's headers; the routing key is ignored (AMQP 0-9-1 3.1.3.4). We follow RabbitMQ's
 * rabbit_exchange_type_headers:
 *
 * - `x-match` chooses the rule: `all` (the default when absent) needs every pattern field to
 *   match, `any` needs one. With `all` or `any`, pattern fields whose name starts with "x-"
 *   are left out; `all-with-x` and `any-with-x` keep them. `x-match` itself never counts.
 * - A field matches when the message has a header of that name whose value is equal
 *   (wr_value_equal: integers by value whatever their width, anything else by type and
 *   contents). RabbitMQ compares with Erlang's `==`, which also equates a string with a byte
 *   array of the same bytes and 1 with 1.0; we keep types apart there, as AMQP types them.
 * - A pattern field of type void matches when the header is present, whatever its value.
 * - With no field left to test, `all` matches every message and `any` none: RabbitMQ starts
 *   "all" at true and "any" at false and nothing changes them.
 * - `x-match` of another value is refused at bind with RabbitMQ's message ("Invalid x-match
 *   field value ...; expected all, any, all-with-x, or any-with-x"), and one that is not a
 *   long string with "Invalid x-match field type ...; expected longstr". AMQP turns both
 *   into 406 PRECONDITION_FAILED.
 *
 * Matching needs every binding's pattern checked against the message, so route is a scan;
 * bind parses each pattern once into the fields that count, so a route does no parsing and
 * no allocation. If the message has a header twice, the first one counts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

enum headers_rule { HEADERS_ALL, HEADERS_ANY };

/* A pattern field that counts. Name and value point into the binding's args, which live as
 * long as the binding. */
struct headers_field {
    const char *name;
    const struct wr_value *value; /* WR_V_VOID: presence is enough */
};

/* A binding's parsed pattern, also kept in its plugin_data. The exchange holds specs, not
 * bindings, so destroy never touches a binding the core may already have freed. */
struct headers_spec {
    const struct wr_binding *b;
    enum headers_rule rule;
    size_t index; /* position in the exchange's array, for unbind */
    size_t count;
    struct headers_field fields[];
};

struct headers {
    struct headers_spec **specs;
    size_t count;
    size_t cap;
};

/* RabbitMQ's names for the field types, for the message refusing x-match's type. */
static const char *const headers_type_names[] = {
    [WR_V_VOID] = "void",        [WR_V_BOOL] = "bool",           [WR_V_I8] = "byte",
    [WR_V_U8] = "unsignedbyte",  [WR_V_I16] = "short",           [WR_V_U16] = "unsignedshort",
    [WR_V_I32] = "signedint",    [WR_V_U32] = "unsignedint",     [WR_V_I64] = "long",
    [WR_V_FLOAT] = "float",      [WR_V_DOUBLE] = "double",       [WR_V_DECIMAL] = "decimal",
    [WR_V_STR] = "longstr",      [WR_V_BYTES] = "binary",        [WR_V_TIMESTAMP] = "timestamp",
    [WR_V_TABLE] = "table",      [WR_V_ARRAY] = "array",
};

static bool headers_str_is(const struct wr_value *v, const char *s)
{
    size_t len = strlen(s);
    return v->u.s.len == len && memcmp(v->u.s.ptr, s, len) == 0;
}

/* Reads x-match into *rule and *with_x, or refuses it as RabbitMQ's validate_binding does. */
static int headers_parse_rule(const struct wr_table *args, enum headers_rule *rule,
                              bool *with_x, struct wr_error *err)
{
    const struct wr_value *v = wr_table_get(args, "x-match");
    *rule = HEADERS_ALL;
    *with_x = false;
    if (!v)
        return WR_OK;
    if (v->type != WR_V_STR) {
        const char *type = (size_t)v->type < sizeof headers_type_names / sizeof(char *)
                               ? headers_type_names[v->type]
                               : "unknown";
        return wr_error_set(err, WR_EINVAL, "Invalid x-match field type %s; expected longstr",
                            type);
    }
    if (headers_str_is(v, "all")) {
        *rule = HEADERS_ALL;
    } else if (headers_str_is(v, "any")) {
        *rule = HEADERS_ANY;
    } else if (headers_str_is(v, "all-with-x")) {
        *rule = HEADERS_ALL;
        *with_x = true;
    } else if (headers_str_is(v, "any-with-x")) {
        *rule = HEADERS_ANY;
        *with_x = true;
    } else {
        int len = v->u.s.len > 200 ? 200 : (int)v->u.s.len;
        return wr_error_set(err, WR_EINVAL,
                            "Invalid x-match field value \"%.*s\"; expected all, any, "
                            "all-with-x, or any-with-x", len, v->u.s.ptr);
    }
    return WR_OK;
}

static int headers_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                          void **state, struct wr_error *err)
{
    (void)ctx;
    struct headers *h = calloc(1, sizeof *h);
    if (!h)
        return wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    *state = h;
    return WR_OK;
}

static void headers_destroy(void *state)
{
    struct headers *h = state;
    for (size_t i = 0; i < h->count; i++)
        free(h->specs[i]);
    free(h->specs);
    free(h);
}

static int headers_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct headers *h = state;
    enum headers_rule rule;
    bool with_x;
    int rc = headers_parse_rule(b->args, &rule, &with_x, err);
    if (rc != WR_OK)
        return rc;
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        struct headers_spec **specs = realloc(h->specs, cap * sizeof *specs);
        if (!specs)
            goto nomem;
        h->specs = specs;
        h->cap = cap;
    }
    struct headers_spec *spec = malloc(sizeof *spec + b->args->count * sizeof spec->fields[0]);
    if (!spec)
        goto nomem;
    spec->b = b;
    spec->rule = rule;
    spec->count = 0;
    for (size_t i = 0; i < b->args->count; i++) {
        const struct wr_field *f = &b->args->fields[i];
        if (strcmp(f->name, "x-match") == 0)
            continue;
        if (!with_x && strncmp(f->name, "x-", 2) == 0)
            continue;
        spec->fields[spec->count].name = f->name;
        spec->fields[spec->count].value = &f->value;
        spec->count++;
    }
    spec->index = h->count;
    b->plugin_data = spec;
    h->specs[h->count++] = spec;
    return WR_OK;
nomem:
    return wr_error_set(err, WR_ENOMEM, "headers binding: out of memory");
}

static void headers_unbind(void *state, struct wr_binding *b)
{
    struct headers *h = state;
    struct headers_spec *spec = b->plugin_data;
    if (!spec)
        return;
    size_t i = spec->index;
    if (i < h->count && h->specs[i] == spec) {
        h->specs[i] = h->specs[--h->count];
        h->specs[i]->index = i;
    }
    free(spec);
    b->plugin_data = NULL;
}

static bool headers_field_matches(const struct headers_field *f, const struct wr_table *hdrs)
{
    const struct wr_value *v = wr_table_get(hdrs, f->name);
    if (!v)
        return false;
    return f->value->type == WR_V_VOID || wr_value_equal(f->value, v);
}

static bool headers_match(const struct headers_spec *spec, const struct wr_table *hdrs)
{
    for (size_t i = 0; i < spec->count; i++) {
        bool hit = headers_field_matches(&spec->fields[i], hdrs);
        if (spec->rule == HEADERS_ANY && hit)
            return true;
        if (spec->rule == HEADERS_ALL && !hit)
            return false;
    }
    return spec->rule == HEADERS_ALL;
}

static void headers_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    const struct headers *h = state;
    for (size_t i = 0; i < h->count; i++) {
        if (headers_match(h->specs[i], msg->headers))
            wr_route_add(out, h->specs[i]->b);
    }
}

static const struct wr_exchange_ops headers_ops = {
    .size = sizeof(struct wr_exchange_ops),
    .create = headers_create,
    .destroy = headers_destroy,
    .bind = headers_bind,
    .unbind = headers_unbind,
    .route = headers_route,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "headers", .version = WR_VERSION_STRING,
                 .ops = &headers_ops);
