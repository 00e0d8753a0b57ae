/*
 * codec.h: the Kafka wire protocol's primitive types and the conventions of the generated
 * message codec (gen/kafka_msgs.h, written at build time by gen_codec.py from the message
 * schemas in spec/, which are Apache Kafka's JSON files copied unchanged).
 *
 * Integers are big-endian. The generated code, for every API warren serves and every version
 * in its range (kf_api_ranges in gen/kafka_msgs.h), has per message one struct holding the
 * union of the fields of all versions, and four functions:
 *
 *     int  kf_<api>_request_decode(struct kf_in *in, int16_t version, struct kf_arena *a,
 *                                  struct kf_<api>_request *out);
 *     void kf_<api>_request_encode(struct wr_bytes *out, int16_t version,
 *                                  const struct kf_<api>_request *m);
 *     int  kf_<api>_response_decode(...);   void kf_<api>_response_encode(...);
 *
 * <api> is the schema's name without Request/Response in snake case (produce, fetch,
 * list_offsets, api_versions, metadata, find_coordinator, join_group, ...). Field names are
 * the schema's in snake case (TopicData -> topic_data, TimeoutMs -> timeout_ms). A nested
 * struct type is named kf_<api>_<request|response>_<snake case of its type name without the
 * []> (TopicProduceData -> struct kf_produce_request_topic_produce_data). An array field
 * `x` is `x` (pointer to its first element, allocated in the arena) and `n_x` (int32_t;
 * -1 for a null array). string and bytes fields are struct kf_str (ptr NULL: null); records
 * are struct kf_str pointing into the request's bytes (no copy); bool is bool; int8..int64
 * and uint16 are the C types; uuid is struct kf_uuid; float64 is double. A field absent in
 * the version at hand decodes to its schema default (0, false, "" or null as the schema
 * says) and is not written. Decoding returns WR_OK or WR_EPROTO (short, a negative length
 * that is not -1 where nullable, trailing bytes are allowed only where the caller says). The
 * request header is decoded by kf_request_header_decode below; flexible versions (compact
 * strings, tagged fields) are handled where the schema's flexibleVersions say.
 */
#ifndef KAFKA_CODEC_H
#define KAFKA_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

struct kf_str {
    const char *ptr;             /* NULL: null */
    int32_t len;
};

struct kf_uuid {
    uint8_t b[16];
};

/* Input cursor over one request or response body; the first failure sets err and every
 * later read returns zero values, so a decoder checks once. */
struct kf_in {
    const uint8_t *p;
    const uint8_t *end;
    bool err;
};

/* Bump allocator for what decoding allocates (arrays), freed at once per request. */
struct kf_arena {
    struct kf_arena_block *blocks;
};
void *kf_arena_alloc(struct kf_arena *a, size_t n); /* zeroed; NULL out of memory */
void kf_arena_free(struct kf_arena *a);

struct kf_request_header {
    int16_t api_key;
    int16_t api_version;
    int32_t correlation_id;
    struct kf_str client_id;     /* header v1+ */
};

/* Decodes a request header: v1, or v2 (tagged fields after client_id) when flexible says so.
 * The caller learns api_key/api_version first with kf_request_peek and asks the generated
 * table whether that version is flexible. */
void kf_request_peek(const uint8_t *p, size_t len, int16_t *api_key, int16_t *api_version);
int kf_request_header_decode(struct kf_in *in, bool flexible, struct kf_request_header *out);
/* Response header: correlation id, plus an empty tagged-field section when flexible (never
 * for ApiVersions). */
void kf_response_header_encode(struct wr_bytes *out, int32_t correlation_id, bool flexible);

/* Primitive readers and writers, big-endian, as the schemas' types. */
int8_t kf_read_i8(struct kf_in *in);
int16_t kf_read_i16(struct kf_in *in);
int32_t kf_read_i32(struct kf_in *in);
int64_t kf_read_i64(struct kf_in *in);
uint32_t kf_read_uvarint(struct kf_in *in);
int32_t kf_read_varint(struct kf_in *in);
int64_t kf_read_varlong(struct kf_in *in);
struct kf_str kf_read_string(struct kf_in *in, bool compact, bool nullable);
struct kf_str kf_read_bytes(struct kf_in *in, bool compact, bool nullable);
void kf_skip_tagged_fields(struct kf_in *in);

void kf_write_i8(struct wr_bytes *o, int8_t v);
void kf_write_i16(struct wr_bytes *o, int16_t v);
void kf_write_i32(struct wr_bytes *o, int32_t v);
void kf_write_i64(struct wr_bytes *o, int64_t v);
void kf_write_uvarint(struct wr_bytes *o, uint32_t v);
void kf_write_varint(struct wr_bytes *o, int32_t v);
void kf_write_string(struct wr_bytes *o, struct kf_str s, bool compact);
void kf_write_bytes(struct wr_bytes *o, struct kf_str s, bool compact);

/* Added with the generated code, which uses these. (kf_request_peek gives -1 for both when
 * len < 4.) */
double kf_read_f64(struct kf_in *in);
struct kf_uuid kf_read_uuid(struct kf_in *in);
/* An array's element count: -1 for null (only when nullable; else an error), else 0..N where
 * N elements of min_elem bytes each fit in what is left. Errors set err and return 0. */
int32_t kf_read_array_len(struct kf_in *in, bool compact, bool nullable, size_t min_elem);
/* After a tagged field's tag: reads its size and returns a cursor over its value, which the
 * cursor in has then passed. */
struct kf_in kf_read_tagged(struct kf_in *in);
void kf_write_varlong(struct wr_bytes *o, int64_t v);
void kf_write_f64(struct wr_bytes *o, double v);
void kf_write_uuid(struct wr_bytes *o, struct kf_uuid u);
/* n < 0: null. */
void kf_write_array_len(struct wr_bytes *o, int32_t n, bool compact);
/* Writes one tagged field, its tag then the size and bytes of val, and frees val. */
void kf_write_tagged(struct wr_bytes *o, uint32_t tag, struct wr_bytes *val);
/* For clients (tests, tools): the request header (v2 when flexible), and the correlation id
 * of a response header (v1 when flexible). */
void kf_request_header_encode(struct wr_bytes *out, const struct kf_request_header *h,
                              bool flexible);
int kf_response_header_decode(struct kf_in *in, bool flexible, int32_t *correlation_id);

static inline size_t kf_remaining(const struct kf_in *in)
{
    return (size_t)(in->end - in->p);
}

static inline struct kf_str kf_str_c(const char *s)
{
    struct kf_str r = {s, 0};
    while (s && s[r.len])
        r.len++;
    return r;
}

#endif
