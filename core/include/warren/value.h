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
#include <string.h>

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

/* The integers of durable files are little-endian (docs/storage.md, "The shared encodings").
 * These read and write one at p, which must hold 4 or 8 bytes. Inline: the journal writes
 * a few of them for every persistent message. */
static inline uint32_t wr_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t wr_le64_get(const uint8_t *p)
{
    return (uint64_t)wr_le32_get(p) | (uint64_t)wr_le32_get(p + 4) << 32;
}

static inline void wr_le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void wr_le64_put(uint8_t *p, uint64_t v)
{
    wr_le32_put(p, (uint32_t)v);
    wr_le32_put(p + 4, (uint32_t)(v >> 32));
}

/* Appenders; like wr_bytes_grow they set oom and do nothing when memory runs out. */
static inline void wr_bytes_put(struct wr_bytes *b, const void *ptr, size_t n)
{
    uint8_t *p = n ? wr_bytes_grow(b, n) : NULL;
    if (p)
        memcpy(p, ptr, n);
}

static inline void wr_bytes_u8(struct wr_bytes *b, uint8_t v)
{
    uint8_t *p = wr_bytes_grow(b, 1);
    if (p)
        *p = v;
}

static inline void wr_bytes_u32(struct wr_bytes *b, uint32_t v)
{
    uint8_t *p = wr_bytes_grow(b, 4);
    if (p)
        wr_le32_put(p, v);
}

static inline void wr_bytes_u64(struct wr_bytes *b, uint64_t v)
{
    uint8_t *p = wr_bytes_grow(b, 8);
    if (p)
        wr_le64_put(p, v);
}

/* A string: u32 length and the bytes; ptr NULL is absent, written as length 0xFFFFFFFF
 * (WR_STR_ABSENT). A string that long cannot be described: oom is set. */
#define WR_STR_ABSENT UINT32_MAX
WR_API void wr_bytes_str(struct wr_bytes *b, const void *ptr, size_t len);

/* A table as bytes, every value type kept (nested tables and arrays included): the encoding
 * durable files use (docs/storage.md). Read it back with wr_read_table. */
WR_API void wr_table_encode(struct wr_bytes *out, const struct wr_table *t);

/* A bounds-checked reader over [p, end): the first read that would pass end sets err, and
 * that read and every later one return zero or NULL, so a decoder checks err once at the end.
 * Nothing outside [p, end) is ever read. Start it as {p, p + len, false}. */
struct wr_reader {
    const uint8_t *p, *end;
    bool err;
};

/* The next n bytes (borrowed from the input), or NULL with err set. */
static inline const uint8_t *wr_read_bytes(struct wr_reader *r, size_t n)
{
    if (r->err || (size_t)(r->end - r->p) < n) {
        r->err = true;
        return NULL;
    }
    const uint8_t *at = r->p;
    r->p += n;
    return at;
}

static inline uint8_t wr_read_u8(struct wr_reader *r)
{
    const uint8_t *p = wr_read_bytes(r, 1);
    return p ? *p : 0;
}

static inline uint32_t wr_read_u32(struct wr_reader *r)
{
    const uint8_t *p = wr_read_bytes(r, 4);
    return p ? wr_le32_get(p) : 0;
}

static inline uint64_t wr_read_u64(struct wr_reader *r)
{
    const uint8_t *p = wr_read_bytes(r, 8);
    return p ? wr_le64_get(p) : 0;
}

/* A string wr_bytes_str wrote, borrowed from the input; ptr NULL when it is absent or err is
 * set (tell them apart by err). struct wr_str is msg.h's. */
struct wr_str;
WR_API struct wr_str wr_read_str(struct wr_reader *r);

/* A table wr_table_encode wrote, owned by the caller (wr_table_free). Trusts nothing: an
 * unknown value type, a short read, or nesting deeper than 64 is WR_EPROTO; memory is
 * WR_ENOMEM. On either err is set too and *out is NULL. */
WR_API int wr_read_table(struct wr_reader *r, struct wr_table **out);

/* An array owned by the caller; wr_array_add appends a deep copy. */
WR_API struct wr_array *wr_array_new(void);
WR_API void wr_array_free(struct wr_array *a);
WR_API int wr_array_add(struct wr_array *a, const struct wr_value *v);

WR_END_DECLS

#endif
