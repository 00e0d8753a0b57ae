/*
 * kafka_codec_test.c: the Kafka wire codec (plugins/kafka/codec.c and the message codec
 * gen_codec.py generates from the schemas): every served API and version round-trips with
 * every field filled, hand-written bytes from the spec decode and encode as the spec says,
 * and broken input (truncated, negative or huge lengths, bad tagged fields, random
 * mutations) is refused with WR_EPROTO without a bad read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "codec.h"
#include "kafka_msgs.h"
#include "kafka_msgs_test.h"

TestSuite(kafka_codec);

#define N_MSGS (sizeof kf_test_msgs / sizeof kf_test_msgs[0])

/* ---- helpers ------------------------------------------------------------------------- */

static struct kf_in in_of(const uint8_t *p, size_t len)
{
    struct kf_in in = {p, p + len, false};
    return in;
}

static void assert_bytes(const struct wr_bytes *b, const uint8_t *want, size_t n)
{
    cr_assert_not(b->oom);
    cr_assert_eq(b->len, n, "wrote %zu bytes, want %zu", b->len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(b->p[i], want[i], "byte %zu is %02x, want %02x", i, b->p[i], want[i]);
}

static bool str_eq(struct kf_str s, const char *want)
{
    return s.ptr && (size_t)s.len == strlen(want) && memcmp(s.ptr, want, (size_t)s.len) == 0;
}

/* Fills message t at version v, encodes it into out, and returns the filled struct
 * (calloc'd; its arrays and strings live in arena a). */
static void *encode_filled(const struct kf_test_msg *t, int16_t v, bool nulls,
                           struct kf_arena *a, struct wr_bytes *out)
{
    void *m = calloc(1, t->size);
    cr_assert_not_null(m);
    struct kf_fill f = {a, (uint32_t)v * 1000, nulls};
    t->fill(&f, v, m);
    t->encode(out, v, m);
    cr_assert_not(out->oom);
    return m;
}

/* Decodes buf as message t at version v; returns the status, and the struct through *out. */
static int decode(const struct kf_test_msg *t, int16_t v, const uint8_t *p, size_t len,
                  struct kf_arena *a, void *out, const uint8_t **stop)
{
    struct kf_in in = in_of(p, len);
    int rc = t->decode(&in, v, a, out);
    if (stop)
        *stop = in.p;
    return rc;
}

/* ---- every API, every version -------------------------------------------------------- */

static void roundtrip(const struct kf_test_msg *t, int16_t v, bool nulls)
{
    struct kf_arena a = {0};
    struct wr_bytes enc = {0}, again = {0};
    void *m = encode_filled(t, v, nulls, &a, &enc);
    void *back = calloc(1, t->size);
    cr_assert_not_null(back);
    const uint8_t *stop = NULL;
    int rc = decode(t, v, enc.p, enc.len, &a, back, &stop);
    cr_assert_eq(rc, WR_OK, "%s v%d%s: decode gave %d", t->name, v, nulls ? " (nulls)" : "",
                 rc);
    cr_assert_eq(stop, enc.p + enc.len, "%s v%d: decode left %td bytes", t->name, v,
                 enc.p + enc.len - stop);
    const char *where = "";
    cr_assert(t->same(m, back, &where), "%s v%d%s: %s differs", t->name, v,
              nulls ? " (nulls)" : "", where);
    /* The decoded struct encodes to the same bytes. */
    t->encode(&again, v, back);
    cr_assert_eq(again.len, enc.len, "%s v%d: re-encoded length differs", t->name, v);
    cr_assert(!enc.len || memcmp(again.p, enc.p, enc.len) == 0, "%s v%d: re-encoded bytes differ",
              t->name, v);
    wr_bytes_free(&again);
    wr_bytes_free(&enc);
    free(back);
    free(m);
    kf_arena_free(&a);
}

Test(kafka_codec, every_api_and_version_round_trips)
{
    cr_assert_eq(N_MSGS, 2 * KF_N_APIS);
    for (size_t i = 0; i < N_MSGS; i++)
        for (int16_t v = kf_test_msgs[i].min; v <= kf_test_msgs[i].max; v++) {
            roundtrip(&kf_test_msgs[i], v, false);
            roundtrip(&kf_test_msgs[i], v, true);
        }
}

/* A field a version does not carry is not written: the filled struct's bytes differ between
 * the first and last version of most APIs, and each version decodes only its own fields. */
Test(kafka_codec, absent_fields_decode_to_schema_defaults)
{
    struct kf_arena a = {0};
    struct kf_metadata_response r;
    kf_metadata_response_init(&r);
    r.controller_id = 7;
    r.cluster_id = kf_str_c("cluster");
    struct wr_bytes enc = {0};
    kf_metadata_response_encode(&enc, 0, &r);
    struct kf_metadata_response back;
    struct kf_in in = in_of(enc.p, enc.len);
    cr_assert_eq(kf_metadata_response_decode(&in, 0, &a, &back), WR_OK);
    cr_assert_eq(back.controller_id, -1, "v0 has no ControllerId: default -1");
    cr_assert_null(back.cluster_id.ptr, "v0 has no ClusterId: default null");
    cr_assert_eq(back.cluster_authorized_operations, INT32_MIN);
    wr_bytes_free(&enc);
    kf_arena_free(&a);

    struct kf_fetch_request fr;
    kf_fetch_request_init(&fr);
    cr_assert_eq(fr.max_bytes, 0x7fffffff);
    cr_assert_eq(fr.session_epoch, -1);
    cr_assert(str_eq(fr.rack_id, ""));
    struct kf_metadata_request mr;
    kf_metadata_request_init(&mr);
    cr_assert(mr.allow_auto_topic_creation);
}

/* A zeroed struct (null strings and arrays where the version does not allow null) still
 * encodes to bytes a client can decode: the non-nullable nulls go out empty. */
Test(kafka_codec, zeroed_struct_encodes_nulls_as_empty_where_not_nullable)
{
    for (size_t i = 0; i < N_MSGS; i++) {
        const struct kf_test_msg *t = &kf_test_msgs[i];
        for (int16_t v = t->min; v <= t->max; v++) {
            void *m = calloc(1, t->size), *back = calloc(1, t->size);
            cr_assert(m && back);
            struct wr_bytes enc = {0};
            struct kf_arena a = {0};
            t->encode(&enc, v, m);
            const uint8_t *stop = NULL;
            cr_assert_eq(decode(t, v, enc.p, enc.len, &a, back, &stop), WR_OK, "%s v%d",
                         t->name, v);
            cr_assert_eq(stop, enc.p + enc.len);
            wr_bytes_free(&enc);
            kf_arena_free(&a);
            free(m);
            free(back);
        }
    }
}

/* ---- bytes straight from the spec ---------------------------------------------------- */

Test(kafka_codec, api_versions_v0_request_bytes)
{
    static const uint8_t req[] = {
        0x00, 0x12, 0x00, 0x00,             /* api_key 18, version 0 */
        0x00, 0x00, 0x00, 0x01,             /* correlation id 1 */
        0xff, 0xff,                         /* client_id null */
    };
    int16_t key = 0, version = 0;
    kf_request_peek(req, sizeof req, &key, &version);
    cr_assert_eq(key, 18);
    cr_assert_eq(version, 0);
    cr_assert_not(kf_version_flexible(key, version));
    struct kf_in in = in_of(req, sizeof req);
    struct kf_request_header h;
    cr_assert_eq(kf_request_header_decode(&in, false, &h), WR_OK);
    cr_assert_eq(h.correlation_id, 1);
    cr_assert_null(h.client_id.ptr);
    struct kf_api_versions_request body;
    struct kf_arena a = {0};
    cr_assert_eq(kf_api_versions_request_decode(&in, 0, &a, &body), WR_OK);
    cr_assert_eq(in.p, in.end, "the v0 body is empty");

    struct wr_bytes out = {0};
    kf_request_header_encode(&out, &h, false);
    kf_api_versions_request_encode(&out, 0, &body);
    assert_bytes(&out, req, sizeof req);
    wr_bytes_free(&out);
    kf_arena_free(&a);
}

Test(kafka_codec, api_versions_v3_request_bytes_are_flexible)
{
    static const uint8_t req[] = {
        0x00, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x05, /* key 18, v3, correlation 5 */
        0x00, 0x03, 'a', 'b', 'c',          /* client_id: int16 length even in header v2 */
        0x00,                               /* header tagged fields: none */
        0x05, 'k', 'c', 'a', 't',           /* ClientSoftwareName: compact, length + 1 */
        0x04, '1', '.', '7',                /* ClientSoftwareVersion */
        0x00,                               /* body tagged fields: none */
    };
    cr_assert(kf_version_flexible(18, 3));
    struct kf_in in = in_of(req, sizeof req);
    struct kf_request_header h;
    cr_assert_eq(kf_request_header_decode(&in, true, &h), WR_OK);
    cr_assert(str_eq(h.client_id, "abc"));
    struct kf_api_versions_request body;
    struct kf_arena a = {0};
    cr_assert_eq(kf_api_versions_request_decode(&in, 3, &a, &body), WR_OK);
    cr_assert_eq(in.p, in.end);
    cr_assert(str_eq(body.client_software_name, "kcat"));
    cr_assert(str_eq(body.client_software_version, "1.7"));

    struct wr_bytes out = {0};
    kf_request_header_encode(&out, &h, true);
    kf_api_versions_request_encode(&out, 3, &body);
    assert_bytes(&out, req, sizeof req);
    wr_bytes_free(&out);
    kf_arena_free(&a);
}

/* Tags the schema does not know are skipped by their size, known ones are read. */
Test(kafka_codec, unknown_tagged_fields_are_skipped)
{
    struct kf_in in;
    struct kf_api_versions_request r;
    struct kf_arena a = {0};
    /* Two empty compact strings, then tag 7 (3 bytes) and tag 9 (empty). */
    static const uint8_t good[] = {0x01, 0x01, 0x02, 0x07, 0x03, 0xaa, 0xbb, 0xcc, 0x09, 0x00};
    in = in_of(good, sizeof good);
    cr_assert_eq(kf_api_versions_request_decode(&in, 3, &a, &r), WR_OK);
    cr_assert_eq(in.p, in.end);
    cr_assert(str_eq(r.client_software_name, ""));

    /* A tag whose size runs past the end. */
    static const uint8_t over[] = {0x01, 0x01, 0x01, 0x07, 0x05, 0xaa};
    in = in_of(over, sizeof over);
    cr_assert_eq(kf_api_versions_request_decode(&in, 3, &a, &r), WR_EPROTO);

    /* A known tag: ApiVersionsResponse v3 FinalizedFeaturesEpoch (tag 1, int64). */
    static const uint8_t resp[] = {
        0x00, 0x00, 0x01,                   /* error 0, ApiKeys: empty compact array */
        0x00, 0x00, 0x00, 0x00,             /* throttle */
        0x02, 0x01, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x2a, /* tag 1: epoch 42 */
        0x05, 0x01, 0xff,                   /* tag 5, unknown */
    };
    struct kf_api_versions_response av;
    in = in_of(resp, sizeof resp);
    cr_assert_eq(kf_api_versions_response_decode(&in, 3, &a, &av), WR_OK);
    cr_assert_eq(av.finalized_features_epoch, 42);
    cr_assert_eq(av.n_api_keys, 0);
    cr_assert_not(av.zk_migration_ready);
    kf_arena_free(&a);
}

Test(kafka_codec, metadata_v1_request_bytes)
{
    static const uint8_t req[] = {
        0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x2a, /* key 3, v1, correlation 42 */
        0x00, 0x00,                         /* client_id "" */
        0x00, 0x00, 0x00, 0x02,             /* 2 topics */
        0x00, 0x01, 'a',
        0x00, 0x02, 'b', 'c',
    };
    struct kf_in in = in_of(req, sizeof req);
    struct kf_request_header h;
    cr_assert_eq(kf_request_header_decode(&in, kf_version_flexible(3, 1), &h), WR_OK);
    cr_assert_eq(h.api_key, KF_API_METADATA);
    cr_assert_eq(h.api_version, 1);
    cr_assert_eq(h.correlation_id, 42);
    cr_assert(str_eq(h.client_id, ""));
    struct kf_metadata_request m;
    struct kf_arena a = {0};
    cr_assert_eq(kf_metadata_request_decode(&in, 1, &a, &m), WR_OK);
    cr_assert_eq(in.p, in.end);
    cr_assert_eq(m.n_topics, 2);
    cr_assert(str_eq(m.topics[0].name, "a"));
    cr_assert(str_eq(m.topics[1].name, "bc"));
    cr_assert(m.allow_auto_topic_creation, "absent before v4: the default, true");

    struct wr_bytes out = {0};
    kf_request_header_encode(&out, &h, false);
    kf_metadata_request_encode(&out, 1, &m);
    assert_bytes(&out, req, sizeof req);
    wr_bytes_free(&out);

    /* v1: a null array asks for all topics; v0 has no null, and -1 is malformed. */
    static const uint8_t all[] = {0xff, 0xff, 0xff, 0xff};
    in = in_of(all, sizeof all);
    cr_assert_eq(kf_metadata_request_decode(&in, 1, &a, &m), WR_OK);
    cr_assert_eq(m.n_topics, -1);
    cr_assert_null(m.topics);
    in = in_of(all, sizeof all);
    cr_assert_eq(kf_metadata_request_decode(&in, 0, &a, &m), WR_EPROTO);
    kf_arena_free(&a);
}

Test(kafka_codec, produce_v3_request_bytes)
{
    static const uint8_t req[] = {
        0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, /* key 0, v3, correlation 7 */
        0x00, 0x02, 'c', 'l',               /* client_id "cl" */
        0xff, 0xff,                         /* transactional_id null */
        0xff, 0xff,                         /* acks -1 */
        0x00, 0x00, 0x75, 0x30,             /* timeout 30000 ms */
        0x00, 0x00, 0x00, 0x01,             /* 1 topic */
        0x00, 0x01, 't',
        0x00, 0x00, 0x00, 0x01,             /* 1 partition */
        0x00, 0x00, 0x00, 0x02,             /* index 2 */
        0x00, 0x00, 0x00, 0x03, 'a', 'b', 'c', /* records: 3 bytes */
    };
    int16_t key = -2, version = -2;
    kf_request_peek(req, sizeof req, &key, &version);
    cr_assert_eq(key, KF_API_PRODUCE);
    cr_assert_eq(version, 3);
    struct kf_in in = in_of(req, sizeof req);
    struct kf_request_header h;
    cr_assert_eq(kf_request_header_decode(&in, false, &h), WR_OK);
    cr_assert_eq(h.correlation_id, 7);
    cr_assert(str_eq(h.client_id, "cl"));
    struct kf_produce_request p;
    struct kf_arena a = {0};
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_OK);
    cr_assert_eq(in.p, in.end);
    cr_assert_null(p.transactional_id.ptr);
    cr_assert_eq(p.acks, -1);
    cr_assert_eq(p.timeout_ms, 30000);
    cr_assert_eq(p.n_topic_data, 1);
    cr_assert(str_eq(p.topic_data[0].name, "t"));
    cr_assert_eq(p.topic_data[0].n_partition_data, 1);
    struct kf_produce_request_partition_produce_data *pd = &p.topic_data[0].partition_data[0];
    cr_assert_eq(pd->index, 2);
    cr_assert_eq(pd->records.len, 3);
    cr_assert_eq((const uint8_t *)pd->records.ptr, req + sizeof req - 3,
                 "records point into the request, not a copy");

    struct wr_bytes out = {0};
    kf_request_header_encode(&out, &h, false);
    kf_produce_request_encode(&out, 3, &p);
    assert_bytes(&out, req, sizeof req);
    wr_bytes_free(&out);
    kf_arena_free(&a);
}

/* KIP-511: an ApiVersions request in a version we do not serve still yields its key,
 * version and correlation id, and the answer is a v0 response whose header has no tagged
 * fields. */
Test(kafka_codec, api_versions_of_unknown_version)
{
    static const uint8_t req[] = {
        0x00, 0x12, 0x00, 0x07, 0x12, 0x34, 0x56, 0x78, /* key 18, v7, correlation */
        0x00, 0x01, 'k',                    /* client_id */
        0x00,                               /* header v2: tagged fields */
        0x99, 0x98, 0x97,                   /* a body we cannot read */
    };
    int16_t key = 0, version = 0;
    kf_request_peek(req, sizeof req, &key, &version);
    cr_assert_eq(key, 18);
    cr_assert_eq(version, 7);
    cr_assert(kf_version_flexible(key, version), "ApiVersions is flexible from v3 on");
    struct kf_in in = in_of(req, sizeof req);
    struct kf_request_header h;
    cr_assert_eq(kf_request_header_decode(&in, kf_version_flexible(key, version), &h), WR_OK);
    cr_assert_eq(h.api_key, 18);
    cr_assert_eq(h.api_version, 7);
    cr_assert_eq(h.correlation_id, 0x12345678);
    struct kf_api_versions_request body;
    struct kf_arena a = {0};
    cr_assert_eq(kf_api_versions_request_decode(&in, 7, &a, &body), WR_EPROTO,
                 "a version outside the served range is refused");

    struct kf_api_versions_response_api_version keys[] = {{18, 0, 3}};
    struct kf_api_versions_response r;
    kf_api_versions_response_init(&r);
    r.error_code = 35;
    r.api_keys = keys;
    r.n_api_keys = 1;
    struct wr_bytes out = {0};
    kf_response_header_encode(&out, h.correlation_id, false);
    kf_api_versions_response_encode(&out, 0, &r);
    static const uint8_t want[] = {
        0x12, 0x34, 0x56, 0x78,             /* correlation id, no tagged fields */
        0x00, 0x23,                         /* error 35 UNSUPPORTED_VERSION */
        0x00, 0x00, 0x00, 0x01, 0x00, 0x12, 0x00, 0x00, 0x00, 0x03,
    };
    assert_bytes(&out, want, sizeof want);
    in = in_of(out.p, out.len);
    int32_t corr = 0;
    cr_assert_eq(kf_response_header_decode(&in, false, &corr), WR_OK);
    cr_assert_eq(corr, 0x12345678);
    wr_bytes_free(&out);
    kf_arena_free(&a);

    /* Too short to peek. */
    kf_request_peek(req, 3, &key, &version);
    cr_assert_eq(key, -1);
    cr_assert_eq(version, -1);
    in = in_of(req, 7);
    cr_assert_eq(kf_request_header_decode(&in, false, &h), WR_EPROTO);
}

Test(kafka_codec, api_tables)
{
    cr_assert_str_eq(kf_api_name(0), "Produce");
    cr_assert_str_eq(kf_api_name(18), "ApiVersions");
    cr_assert_str_eq(kf_api_name(68), "ConsumerGroupHeartbeat", "every API of the spec");
    cr_assert_str_eq(kf_api_name(-1), "Unknown");
    cr_assert_str_eq(kf_api_name(999), "Unknown");
    cr_assert_not(kf_version_flexible(0, 7));
    cr_assert(kf_version_flexible(0, 9));
    cr_assert_not(kf_version_flexible(17, 1), "SaslHandshake is never flexible");
    cr_assert_not(kf_version_flexible(999, 0));
    bool seen_fetch = false;
    for (int i = 0; i < KF_N_APIS; i++) {
        cr_assert_leq(kf_api_ranges[i].min, kf_api_ranges[i].max);
        if (kf_api_ranges[i].api_key == KF_API_FETCH) {
            seen_fetch = true;
            cr_assert_eq(kf_api_ranges[i].min, 2); /* v2-3 for kafka-go 0.2.1 (msgset.c) */
            cr_assert_eq(kf_api_ranges[i].max, 11);
        }
        if (kf_api_ranges[i].api_key == KF_API_PRODUCE)
            cr_assert(kf_api_ranges[i].min == 0 && kf_api_ranges[i].max == 7);
    }
    cr_assert(seen_fetch);
}

/* ---- primitives ---------------------------------------------------------------------- */

Test(kafka_codec, varints)
{
    static const int32_t ints[] = {0, 1, -1, 63, -64, 64, 300, -300, INT32_MAX, INT32_MIN};
    static const int64_t longs[] = {0, -1, 1, INT64_MAX, INT64_MIN, 1LL << 40, -(1LL << 40)};
    struct wr_bytes o = {0};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        kf_write_varint(&o, ints[i]);
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
        kf_write_varlong(&o, longs[i]);
    kf_write_uvarint(&o, UINT32_MAX);
    struct kf_in in = in_of(o.p, o.len);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        cr_assert_eq(kf_read_varint(&in), ints[i]);
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++)
        cr_assert_eq(kf_read_varlong(&in), longs[i]);
    cr_assert_eq(kf_read_uvarint(&in), UINT32_MAX);
    cr_assert_not(in.err);
    cr_assert_eq(in.p, in.end);
    wr_bytes_free(&o);

    /* Zigzag: -1 is 0x01, 1 is 0x02; 300 is 0xd8 0x04. */
    static const uint8_t zz[] = {0x01, 0x02, 0xd8, 0x04};
    in = in_of(zz, sizeof zz);
    cr_assert_eq(kf_read_varint(&in), -1);
    cr_assert_eq(kf_read_varint(&in), 1);
    cr_assert_eq(kf_read_varint(&in), 300);

    /* Six continuation bytes, or a fifth byte past 32 bits, are malformed. */
    static const uint8_t longv[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    in = in_of(longv, sizeof longv);
    kf_read_uvarint(&in);
    cr_assert(in.err);
    static const uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 0x7f};
    in = in_of(big, sizeof big);
    kf_read_uvarint(&in);
    cr_assert(in.err);
    /* A failed cursor stays failed and reads zero. */
    in = in_of(zz, 1);
    kf_read_i16(&in);
    cr_assert(in.err);
    cr_assert_eq(kf_read_i8(&in), 0);
}

Test(kafka_codec, strings_and_lengths)
{
    struct wr_bytes o = {0};
    kf_write_string(&o, kf_str_c("hi"), false);
    kf_write_string(&o, (struct kf_str){NULL, 0}, false);
    kf_write_string(&o, kf_str_c("hi"), true);
    kf_write_string(&o, (struct kf_str){NULL, 0}, true);
    kf_write_bytes(&o, kf_str_c("b"), false);
    kf_write_bytes(&o, (struct kf_str){NULL, 0}, true);
    static const uint8_t want[] = {0x00, 0x02, 'h', 'i', 0xff, 0xff, 0x03, 'h', 'i', 0x00,
                                   0x00, 0x00, 0x00, 0x01, 'b', 0x00};
    assert_bytes(&o, want, sizeof want);
    struct kf_in in = in_of(o.p, o.len);
    cr_assert(str_eq(kf_read_string(&in, false, false), "hi"));
    cr_assert_null(kf_read_string(&in, false, true).ptr);
    cr_assert(str_eq(kf_read_string(&in, true, false), "hi"));
    cr_assert_null(kf_read_string(&in, true, true).ptr);
    cr_assert(str_eq(kf_read_bytes(&in, false, false), "b"));
    cr_assert_null(kf_read_bytes(&in, true, true).ptr);
    cr_assert_not(in.err);
    wr_bytes_free(&o);
    o = (struct wr_bytes){0};

    /* A negative length goes out as empty: the prefix always matches the bytes. */
    kf_write_string(&o, (struct kf_str){"xyz", -5}, false);
    static const uint8_t empty[] = {0x00, 0x00};
    assert_bytes(&o, empty, sizeof empty);
    wr_bytes_free(&o);

    /* null where not nullable, -2, a length past the end. */
    static const uint8_t nul[] = {0xff, 0xff};
    in = in_of(nul, sizeof nul);
    kf_read_string(&in, false, false);
    cr_assert(in.err);
    static const uint8_t neg[] = {0xff, 0xfe};
    in = in_of(neg, sizeof neg);
    kf_read_string(&in, false, true);
    cr_assert(in.err);
    static const uint8_t past[] = {0x00, 0x05, 'a'};
    in = in_of(past, sizeof past);
    cr_assert_null(kf_read_string(&in, false, false).ptr);
    cr_assert(in.err);
    static const uint8_t cnul[] = {0x00};
    in = in_of(cnul, sizeof cnul);
    kf_read_string(&in, true, false);
    cr_assert(in.err, "compact 0 is null");
}

/* ---- broken input -------------------------------------------------------------------- */

Test(kafka_codec, every_truncation_is_refused)
{
    for (size_t i = 0; i < N_MSGS; i++) {
        const struct kf_test_msg *t = &kf_test_msgs[i];
        for (int16_t v = t->min; v <= t->max; v++) {
            struct kf_arena a = {0};
            struct wr_bytes enc = {0};
            void *m = encode_filled(t, v, false, &a, &enc);
            void *back = calloc(1, t->size);
            cr_assert_not_null(back);
            for (size_t len = 0; len < enc.len; len++) {
                /* A copy of exactly len bytes, so ASan sees a read past it. */
                uint8_t *cut = malloc(len ? len : 1);
                cr_assert_not_null(cut);
                memcpy(cut, enc.p, len);
                struct kf_arena da = {0};
                int rc = decode(t, v, cut, len, &da, back, NULL);
                cr_assert_eq(rc, WR_EPROTO, "%s v%d cut to %zu of %zu bytes: %d", t->name, v,
                             len, enc.len, rc);
                kf_arena_free(&da);
                free(cut);
            }
            free(back);
            free(m);
            wr_bytes_free(&enc);
            kf_arena_free(&a);
        }
    }
}

Test(kafka_codec, negative_and_huge_array_lengths)
{
    struct kf_arena a = {0};
    struct kf_produce_request p;
    /* Produce v3: null transactional id, acks, timeout, then the topic array's count. */
    uint8_t req[] = {0xff, 0xff, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10,
                     0xff, 0xff, 0xff, 0xfe, /* -2 */
                     0x00, 0x01, 't', 0x00, 0x00, 0x00, 0x00};
    struct kf_in in = in_of(req, sizeof req);
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_EPROTO, "count -2");
    req[11] = 0xff;
    in = in_of(req, sizeof req);
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_EPROTO,
                 "count -1: TopicData is not nullable");
    req[8] = 0x7f;
    in = in_of(req, sizeof req);
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_EPROTO, "count 2^31-1");
    req[8] = 0x00, req[9] = 0x00, req[10] = 0x00, req[11] = 0x02;
    in = in_of(req, sizeof req);
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_EPROTO,
                 "two topics, bytes for one");
    req[11] = 0x01;
    in = in_of(req, sizeof req);
    cr_assert_eq(kf_produce_request_decode(&in, 3, &a, &p), WR_OK);
    cr_assert_eq(p.topic_data[0].n_partition_data, 0);

    /* A compact array count of 2^32-1 (ApiVersions v3 response ApiKeys). */
    static const uint8_t huge[] = {0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
    struct kf_api_versions_response r;
    in = in_of(huge, sizeof huge);
    cr_assert_eq(kf_api_versions_response_decode(&in, 3, &a, &r), WR_EPROTO);
    /* Records (nullable bytes) of length -2, and of -1 (null). */
    static const uint8_t recs[] = {0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xfe};
    uint8_t one[] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01,
                     0x00, 0x01, 't', 0x00, 0x00, 0x00, 0x01};
    uint8_t buf[sizeof one + sizeof recs];
    memcpy(buf, one, sizeof one);
    memcpy(buf + sizeof one, recs, sizeof recs);
    in = in_of(buf, sizeof buf);
    cr_assert_eq(kf_produce_request_decode(&in, 2, &a, &p), WR_EPROTO, "records length -2");
    buf[sizeof buf - 1] = 0xff;
    in = in_of(buf, sizeof buf);
    cr_assert_eq(kf_produce_request_decode(&in, 2, &a, &p), WR_OK);
    cr_assert_null(p.topic_data[0].partition_data[0].records.ptr, "null records");
    kf_arena_free(&a);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Random mutations of valid messages: whatever the decoder says, it must not read out of
 * bounds, leak or crash, and what it accepts must encode again. */
Test(kafka_codec, random_mutations_do_not_crash)
{
    enum { ROUNDS = 20000 };
    struct wr_bytes corpus[2 * KF_N_APIS * 12];
    int16_t versions[sizeof corpus / sizeof corpus[0]];
    size_t msg_of[sizeof corpus / sizeof corpus[0]];
    size_t n = 0;
    struct kf_arena fa = {0};
    for (size_t i = 0; i < N_MSGS; i++)
        for (int16_t v = kf_test_msgs[i].min; v <= kf_test_msgs[i].max; v++) {
            cr_assert_lt(n, sizeof corpus / sizeof corpus[0]);
            corpus[n] = (struct wr_bytes){0};
            free(encode_filled(&kf_test_msgs[i], v, rnd() & 1, &fa, &corpus[n]));
            versions[n] = v;
            msg_of[n++] = i;
        }
    size_t accepted = 0;
    for (int round = 0; round < ROUNDS; round++) {
        size_t k = rnd() % n;
        const struct kf_test_msg *t = &kf_test_msgs[msg_of[k]];
        size_t len = corpus[k].len;
        if (rnd() % 4 == 0 && len)
            len = rnd() % len;
        uint8_t *buf = malloc(len ? len : 1);
        cr_assert_not_null(buf);
        if (len)
            memcpy(buf, corpus[k].p, len);
        for (uint32_t flips = 1 + rnd() % 4; len && flips; flips--) {
            uint32_t r = rnd();
            /* Lengths are where decoders go wrong: favour 0x00, 0xff and 0x7f. */
            static const uint8_t special[] = {0x00, 0xff, 0x7f, 0x80, 0x01};
            buf[r % len] = r & 0x100 ? special[(r >> 9) % 5] : (uint8_t)(r >> 16);
        }
        void *m = calloc(1, t->size);
        cr_assert_not_null(m);
        struct kf_arena a = {0};
        if (decode(t, versions[k], buf, len, &a, m, NULL) == WR_OK) {
            accepted++;
            struct wr_bytes again = {0};
            t->encode(&again, versions[k], m);
            cr_assert_not(again.oom);
            wr_bytes_free(&again);
        }
        kf_arena_free(&a);
        free(m);
        free(buf);
    }
    cr_assert_gt(accepted, 0, "some mutations (of string bytes, say) stay valid");
    for (size_t i = 0; i < n; i++)
        wr_bytes_free(&corpus[i]);
    kf_arena_free(&fa);
}

/* ---- arena --------------------------------------------------------------------------- */

Test(kafka_codec, arena_hands_out_zeroed_aligned_memory)
{
    struct kf_arena a = {0};
    for (size_t i = 0; i < 2000; i++) {
        size_t n = (i * 37) % 300 + (i % 100 == 0 ? 10000 : 0);
        uint8_t *p = kf_arena_alloc(&a, n);
        cr_assert_not_null(p);
        cr_assert_eq((uintptr_t)p % _Alignof(max_align_t), 0);
        for (size_t j = 0; j < n; j++)
            cr_assert_eq(p[j], 0);
        memset(p, 0xab, n);
    }
    cr_assert_null(kf_arena_alloc(&a, SIZE_MAX - 4), "an impossible size fails cleanly");
    kf_arena_free(&a);
    cr_assert_null(a.blocks);
    kf_arena_free(&a);
}
