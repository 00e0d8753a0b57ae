/*
 * value.c: typed values and tables (headers, arguments, options). A table owns deep copies
 * of everything added to it, so a caller's buffers (a receive buffer, a YAML document) may go
 * away right after.
 */
#include "warren/value.h"

#include <stdlib.h>
#include <string.h>

struct wr_value wr_value_str(const char *s)
{
    return wr_value_strn(s, strlen(s));
}

struct wr_value wr_value_strn(const char *s, size_t len)
{
    struct wr_value v = {.type = WR_V_STR};
    v.u.s.ptr = s;
    v.u.s.len = len;
    return v;
}

struct wr_value wr_value_i64(int64_t i)
{
    struct wr_value v = {.type = WR_V_I64};
    v.u.i = i;
    return v;
}

struct wr_value wr_value_bool(bool b)
{
    struct wr_value v = {.type = WR_V_BOOL};
    v.u.b = b;
    return v;
}

bool wr_value_is_int(const struct wr_value *v)
{
    return v->type >= WR_V_I8 && v->type <= WR_V_I64;
}

static bool table_equal(const struct wr_table *a, const struct wr_table *b);

static bool array_equal(const struct wr_array *a, const struct wr_array *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (!wr_value_equal(&a->items[i], &b->items[i]))
            return false;
    return true;
}

bool wr_value_equal(const struct wr_value *a, const struct wr_value *b)
{
    if (wr_value_is_int(a) && wr_value_is_int(b))
        return a->u.i == b->u.i;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case WR_V_VOID: return true;
    case WR_V_BOOL: return a->u.b == b->u.b;
    case WR_V_FLOAT:
    case WR_V_DOUBLE: return a->u.d == b->u.d;
    case WR_V_DECIMAL: return a->u.dec.scale == b->u.dec.scale && a->u.dec.value == b->u.dec.value;
    case WR_V_STR:
    case WR_V_BYTES:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.ptr, b->u.s.ptr, a->u.s.len) == 0;
    case WR_V_TIMESTAMP: return a->u.i == b->u.i;
    case WR_V_TABLE: return table_equal(a->u.table, b->u.table);
    case WR_V_ARRAY: return array_equal(a->u.array, b->u.array);
    default: return false; /* integers handled above */
    }
}

static bool table_equal(const struct wr_table *a, const struct wr_table *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++) {
        const struct wr_field *fa = &a->fields[i], *fb = &b->fields[i];
        if (fa->name_len != fb->name_len || memcmp(fa->name, fb->name, fa->name_len) != 0 ||
            !wr_value_equal(&fa->value, &fb->value))
            return false;
    }
    return true;
}

/* Frees what a value owns (strings, nested tables and arrays), not the value itself. */
static void value_fini(struct wr_value *v)
{
    switch (v->type) {
    case WR_V_STR:
    case WR_V_BYTES: free((void *)v->u.s.ptr); break;
    case WR_V_TABLE: wr_table_free((struct wr_table *)v->u.table); break;
    case WR_V_ARRAY: wr_array_free((struct wr_array *)v->u.array); break;
    default: break;
    }
}

/* Deep-copies src into dst. Returns WR_OK or WR_ENOMEM (dst then owns nothing). */
static int value_copy(struct wr_value *dst, const struct wr_value *src)
{
    *dst = *src;
    switch (src->type) {
    case WR_V_STR:
    case WR_V_BYTES: {
        char *p = malloc(src->u.s.len + 1);
        if (!p)
            return WR_ENOMEM;
        if (src->u.s.len)
            memcpy(p, src->u.s.ptr, src->u.s.len);
        p[src->u.s.len] = '\0';
        dst->u.s.ptr = p;
        return WR_OK;
    }
    case WR_V_TABLE:
        dst->u.table = wr_table_dup(src->u.table);
        return dst->u.table ? WR_OK : WR_ENOMEM;
    case WR_V_ARRAY: {
        struct wr_array *a = wr_array_new();
        if (!a)
            return WR_ENOMEM;
        for (size_t i = 0; src->u.array && i < src->u.array->count; i++) {
            if (wr_array_add(a, &src->u.array->items[i]) != WR_OK) {
                wr_array_free(a);
                return WR_ENOMEM;
            }
        }
        dst->u.array = a;
        return WR_OK;
    }
    default: return WR_OK;
    }
}

struct wr_table *wr_table_new(void)
{
    return calloc(1, sizeof(struct wr_table));
}

struct wr_table *wr_table_dup(const struct wr_table *t)
{
    struct wr_table *copy = wr_table_new();
    if (!copy || !t)
        return copy;
    for (size_t i = 0; i < t->count; i++) {
        if (wr_table_add(copy, t->fields[i].name, &t->fields[i].value) != WR_OK) {
            wr_table_free(copy);
            return NULL;
        }
    }
    return copy;
}

void wr_table_free(struct wr_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->count; i++) {
        free((void *)t->fields[i].name);
        value_fini(&t->fields[i].value);
    }
    free(t->fields);
    free(t);
}

int wr_table_add(struct wr_table *t, const char *name, const struct wr_value *v)
{
    /* Grow by doubling at powers of two: count alone tells the capacity. */
    if ((t->count & (t->count - 1)) == 0) {
        size_t cap = t->count ? t->count * 2 : 4;
        if (t->count >= 4 || t->count == 0) {
            struct wr_field *f = realloc(t->fields, cap * sizeof *f);
            if (!f)
                return WR_ENOMEM;
            t->fields = f;
        }
    }
    struct wr_field *f = &t->fields[t->count];
    f->name_len = strlen(name);
    f->name = strdup(name);
    if (!f->name)
        return WR_ENOMEM;
    if (value_copy(&f->value, v) != WR_OK) {
        free((void *)f->name);
        return WR_ENOMEM;
    }
    t->count++;
    return WR_OK;
}

int wr_table_set(struct wr_table *t, const char *name, const struct wr_value *v)
{
    for (size_t i = 0; i < t->count; i++) {
        if (strcmp(t->fields[i].name, name) == 0) {
            struct wr_value copy;
            if (value_copy(&copy, v) != WR_OK)
                return WR_ENOMEM;
            value_fini(&t->fields[i].value);
            t->fields[i].value = copy;
            return WR_OK;
        }
    }
    return wr_table_add(t, name, v);
}

const struct wr_value *wr_table_get(const struct wr_table *t, const char *name)
{
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->fields[i].name, name) == 0)
            return &t->fields[i].value;
    return NULL;
}

bool wr_table_get_int(const struct wr_table *t, const char *name, int64_t *out)
{
    const struct wr_value *v = wr_table_get(t, name);
    if (!v || !wr_value_is_int(v))
        return false;
    *out = v->u.i;
    return true;
}

bool wr_table_get_bool(const struct wr_table *t, const char *name, bool *out)
{
    const struct wr_value *v = wr_table_get(t, name);
    if (!v || v->type != WR_V_BOOL)
        return false;
    *out = v->u.b;
    return true;
}

bool wr_table_get_str(const struct wr_table *t, const char *name, const char **ptr, size_t *len)
{
    const struct wr_value *v = wr_table_get(t, name);
    if (!v || (v->type != WR_V_STR && v->type != WR_V_BYTES))
        return false;
    *ptr = v->u.s.ptr;
    *len = v->u.s.len;
    return true;
}

struct wr_array *wr_array_new(void)
{
    return calloc(1, sizeof(struct wr_array));
}

void wr_array_free(struct wr_array *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++)
        value_fini(&a->items[i]);
    free(a->items);
    free(a);
}

int wr_array_add(struct wr_array *a, const struct wr_value *v)
{
    if ((a->count & (a->count - 1)) == 0) {
        size_t cap = a->count ? a->count * 2 : 4;
        if (a->count >= 4 || a->count == 0) {
            struct wr_value *items = realloc(a->items, cap * sizeof *items);
            if (!items)
                return WR_ENOMEM;
            a->items = items;
        }
    }
    if (value_copy(&a->items[a->count], v) != WR_OK)
        return WR_ENOMEM;
    a->count++;
    return WR_OK;
}
