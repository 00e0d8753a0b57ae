/*
 * value.h: typed values and tables, the one representation of message headers, binding
 * arguments, declare arguments and plugin options.
 *
 * The types are AMQP 0-9-1's field-table types as RabbitMQ uses them, so a header read from
 * the wire goes back out with the same type letter; Kafka headers are WR_V_BYTES and YAML
 * options become BOOL, I64, DOUBLE, STR, TABLE or ARRAY.
 *
 * Memory: a table built with wr_table_* owns deep copies of its names and values and is freed
 * with wr_table_free(). A value borrowed from a table is valid while the table is.
 */
#ifndef WARREN_VALUE_H
#define WARREN_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"

WR_BEGIN_DECLS

enum wr_value_type {
    WR_V_VOID = 0,  /* 'V' no value */
    WR_V_BOOL,      /* 't' */
    WR_V_I8,        /* 'b' */
    WR_V_U8,        /* 'B' */
    WR_V_I16,       /* 's' */
    WR_V_U16,       /* 'u' */
    WR_V_I32,       /* 'I' */
    WR_V_U32,       /* 'i' */
    WR_V_I64,       /* 'l' */
    WR_V_FLOAT,     /* 'f' */
    WR_V_DOUBLE,    /* 'd' */
    WR_V_DECIMAL,   /* 'D' scale + 32-bit value */
    WR_V_STR,       /* 'S' long string (bytes, usually UTF-8) */
    WR_V_BYTES,     /* 'x' byte array */
    WR_V_TIMESTAMP, /* 'T' seconds since the epoch */
    WR_V_TABLE,     /* 'F' nested table */
    WR_V_ARRAY,     /* 'A' array of values */
};

struct wr_table;
struct wr_array;

struct wr_value {
    enum wr_value_type type;
    union {
        bool b;
        int64_t i;   /* every integer type and TIMESTAMP, sign-extended or zero-extended */
        double d;    /* FLOAT and DOUBLE */
        struct {
            uint8_t scale;
            uint32_t value;
        } dec;
        struct {
            const char *ptr;
            size_t len;
        } s;          /* STR and BYTES; not NUL-terminated in general */
        const struct wr_table *table;
        const struct wr_array *array;
    } u;
};

struct wr_field {
    const char *name; /* NUL-terminated; names are short strings in AMQP (<= 255 bytes) */
    size_t name_len;
    struct wr_value value;
};

struct wr_table {
    size_t count;
    struct wr_field *fields; /* in insertion order; lookups are linear, tables are small */
};

struct wr_array {
    size_t count;
    struct wr_value *items;
};

/* Convenience constructors for values that borrow their data. */
WR_API struct wr_value wr_value_str(const char *s);
WR_API struct wr_value wr_value_strn(const char *s, size_t len);
WR_API struct wr_value wr_value_i64(int64_t i);
WR_API struct wr_value wr_value_bool(bool b);

/* True for the integer types (I8..I64) and TIMESTAMP is excluded. */
WR_API bool wr_value_is_int(const struct wr_value *v);

/* Equality as RabbitMQ's headers exchange sees it: integers compare by value whatever their
 * width, everything else needs the same type and the same contents. */
WR_API bool wr_value_equal(const struct wr_value *a, const struct wr_value *b);

/* An empty table, owned by the caller. */
WR_API struct wr_table *wr_table_new(void);
/* A deep copy (NULL copies to an empty table). Returns NULL out of memory. */
WR_API struct wr_table *wr_table_dup(const struct wr_table *t);
WR_API void wr_table_free(struct wr_table *t);

/* Appends name = a deep copy of v. A table may hold a name twice (AMQP allows it); lookups
 * return the first. */
WR_API int wr_table_add(struct wr_table *t, const char *name, const struct wr_value *v);
/* Replaces the first field called name, or appends it. */
WR_API int wr_table_set(struct wr_table *t, const char *name, const struct wr_value *v);

/* The value named name, or NULL. t may be NULL. */
WR_API const struct wr_value *wr_table_get(const struct wr_table *t, const char *name);
/* Typed getters: return true and fill *out when the field exists with a fitting type. A
 * string getter returns a pointer into the table (not NUL-terminated: use the length). */
WR_API bool wr_table_get_int(const struct wr_table *t, const char *name, int64_t *out);
WR_API bool wr_table_get_bool(const struct wr_table *t, const char *name, bool *out);
WR_API bool wr_table_get_str(const struct wr_table *t, const char *name, const char **ptr,
                             size_t *len);

/* An array owned by the caller; wr_array_add appends a deep copy. */
/* A growing byte buffer for encoders. Appends that fail for memory set oom and do nothing,
 * so an encoder checks once at the end. Start from {0}; release with wr_bytes_free. */
struct wr_bytes {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool oom;
};

/* Makes room for n more bytes at the end and returns them (len grows by n), or NULL (and
 * oom set) when memory runs out. */
WR_API uint8_t *wr_bytes_grow(struct wr_bytes *b, size_t n);
WR_API void wr_bytes_free(struct wr_bytes *b);

/* A table as bytes and back, every value type kept (nested tables and arrays included): the
 * encoding durable files use (docs/storage.md). Decoding trusts nothing: WR_EPROTO for
 * malformed bytes or nesting deeper than 64, WR_ENOMEM; *used gets the bytes read. */
WR_API void wr_table_encode(struct wr_bytes *out, const struct wr_table *t);
WR_API int wr_table_decode(const uint8_t *p, size_t len, size_t *used, struct wr_table **out);

WR_API struct wr_array *wr_array_new(void);
WR_API void wr_array_free(struct wr_array *a);
WR_API int wr_array_add(struct wr_array *a, const struct wr_value *v);

WR_END_DECLS

#endif
