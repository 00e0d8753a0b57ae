/*
 * codec.h: the AMQP 0-9-1 wire codec: frames, method arguments, content headers and field
 * tables. Pure functions over byte ranges; no sockets, no broker.
 *
 * The method structs, ids and names come from amqp_methods.h, which gen_codec.py writes at
 * build time from ../shared/specs/amqp/amqp-rabbitmq-0.9.1.json (copied into this folder as
 * spec/). Naming, for every class C and method M of the JSON:
 *   - AMQP_C_M is the method's 32-bit id, (class id << 16) | method id, with '-' → '_' and
 *     upper case: AMQP_BASIC_PUBLISH, AMQP_CONNECTION_START_OK, AMQP_EXCHANGE_UNBIND_OK.
 *   - struct amqp_c_m holds its arguments in declaration order, named as in the JSON with
 *     '-' → '_' (so `nowait`, `ticket`, `reserved_1`...): struct amqp_basic_publish has
 *     ticket, exchange, routing_key, mandatory, immediate.
 *   - types: bit → bool, octet → uint8_t, short → uint16_t, long → uint32_t,
 *     longlong → uint64_t, timestamp → uint64_t, shortstr and longstr → struct wr_str
 *     (borrowed from the decoded bytes), table → struct wr_table * (decode: owned by the
 *     struct, freed by amqp_method_free; encode: borrowed, NULL encodes an empty table).
 *   - struct amqp_method { uint32_t id; union { struct amqp_c_m c_m; ... } u; }: the union
 *     member is named like the struct without the amqp_ prefix (m.u.basic_publish).
 *   - AMQP_FRAME_METHOD, AMQP_FRAME_HEADER, AMQP_FRAME_BODY, AMQP_FRAME_HEARTBEAT,
 *     AMQP_FRAME_END, AMQP_FRAME_MIN_SIZE and every reply code as AMQP_<NAME>
 *     (AMQP_NOT_FOUND 404, AMQP_FRAME_ERROR 501 ...) from the JSON's constants.
 */
#ifndef AMQP091_CODEC_H
#define AMQP091_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "warren/msg.h"
#include "warren/value.h"

#include "amqp_methods.h"

/* ---- output buffer ------------------------------------------------------------------- */

/* A growable byte buffer. Writers never fail midway: on out-of-memory they set oom and stop
 * writing, and the caller checks oom once at the end. */
struct amqp_wr {
    uint8_t *p;
    size_t len;
    size_t cap;
    bool oom;
};

void amqp_wr_free(struct amqp_wr *w);
/* Ensures room for n more bytes; false (and oom) when it cannot. */
bool amqp_wr_reserve(struct amqp_wr *w, size_t n);
void amqp_wr_u8(struct amqp_wr *w, uint8_t v);
void amqp_wr_u16(struct amqp_wr *w, uint16_t v);
void amqp_wr_u32(struct amqp_wr *w, uint32_t v);
void amqp_wr_u64(struct amqp_wr *w, uint64_t v);
void amqp_wr_bytes(struct amqp_wr *w, const void *p, size_t n);
/* A shortstr longer than 255 bytes is cut to 255 (callers pass names they validated). */
void amqp_wr_shortstr(struct amqp_wr *w, struct wr_str s);
void amqp_wr_longstr(struct amqp_wr *w, struct wr_str s);
/* A field table (NULL: empty) with RabbitMQ's type letters (value.h mirrors them). */
void amqp_wr_table(struct amqp_wr *w, const struct wr_table *t);

/* ---- input ------------------------------------------------------------------------- */

/* A cursor over received bytes. A read past the end sets bad and returns zeros; the caller
 * checks bad once at the end. */
struct amqp_rd {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool bad;
};

uint8_t amqp_rd_u8(struct amqp_rd *r);
uint16_t amqp_rd_u16(struct amqp_rd *r);
uint32_t amqp_rd_u32(struct amqp_rd *r);
uint64_t amqp_rd_u64(struct amqp_rd *r);
struct wr_str amqp_rd_shortstr(struct amqp_rd *r);
struct wr_str amqp_rd_longstr(struct amqp_rd *r);
/* Decodes a field table into a new wr_table (*out, owned by the caller). Returns 0, or
 * AMQP_SYNTAX_ERROR for a truncated table, an unknown type letter, a length that overruns,
 * or nesting deeper than 64 levels (r->bad is set too). */
int amqp_rd_table(struct amqp_rd *r, struct wr_table **out);

/* ---- frames ------------------------------------------------------------------------ */

struct amqp_frame {
    uint8_t type;
    uint16_t channel;
    uint32_t size;
    const uint8_t *payload; /* size bytes, inside the parsed buffer */
};

/* Parses the frame at p[0..len). Returns the bytes it spans (header + payload + end octet),
 * 0 when more bytes are needed, or -AMQP_FRAME_ERROR when the frame is larger than
 * frame_max (checked from the header alone, before the payload arrives) or its end octet is
 * not 0xCE, or -AMQP_FRAME_ERROR for an unknown frame type. */
ssize_t amqp_frame_parse(const uint8_t *p, size_t len, uint32_t frame_max,
                         struct amqp_frame *f);

/* Starts a frame (type, channel, size placeholder); returns the offset to pass to
 * amqp_wr_frame_end, which fills in the size and writes the end octet. */
size_t amqp_wr_frame_begin(struct amqp_wr *w, uint8_t type, uint16_t channel);
void amqp_wr_frame_end(struct amqp_wr *w, size_t mark);
/* A heartbeat frame. */
void amqp_wr_heartbeat(struct amqp_wr *w);

/* ---- methods (generated part in amqp_methods.c) ------------------------------------- */

/* "basic.publish" for AMQP_BASIC_PUBLISH; NULL for an id not in the spec. */
const char *amqp_method_name(uint32_t id);
/* True for methods followed by content (basic.publish, return, deliver, get-ok). */
bool amqp_method_has_content(uint32_t id);
/* amqp_method_decode's answer for a shortstr argument that is not UTF-8. RabbitMQ closes
 * the connection with 501 "FRAME_ERROR - Malformed UTF-8 in shortstr" for it. Negative, so
 * that it is never mistaken for a reply code. */
#define AMQP_DECODE_BAD_UTF8 (-1)

/* True when s is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800 to
 * U+DFFF), nothing past U+10FFFF, no truncated sequence. Stricter than RabbitMQ 3.10, whose
 * xmerl_ucs check lets surrogates and code points up to U+1FFFFF through. */
bool amqp_utf8_valid(struct wr_str s);

/* Decodes a method frame's payload (class id, method id, arguments). Strings borrow from
 * payload; tables are owned by m (amqp_method_free). Returns 0; AMQP_COMMAND_INVALID for a
 * class/method id not in the spec (m->id is still set, for the error message);
 * AMQP_SYNTAX_ERROR for a truncated or malformed argument list or trailing bytes;
 * AMQP_DECODE_BAD_UTF8 when the arguments parse but a shortstr argument is not UTF-8. As
 * RabbitMQ does, only methods without content have their shortstrs checked (basic.publish's
 * exchange and routing key are not: they are read for every message), and neither field
 * table keys nor content properties are. On error nothing needs freeing. */
int amqp_method_decode(const uint8_t *payload, size_t len, struct amqp_method *m);
/* Frees the tables a decode allocated; m may then be reused. */
void amqp_method_free(struct amqp_method *m);
/* Writes the payload of m (class id, method id, arguments, bits packed). */
void amqp_method_encode(struct amqp_wr *w, const struct amqp_method *m);
/* A whole method frame on channel. */
void amqp_wr_method(struct amqp_wr *w, uint16_t channel, const struct amqp_method *m);

/* "NOT_FOUND" for 404: the JSON constant's name with '-' → '_'; NULL for an unknown code. */
const char *amqp_reply_name(uint16_t code);

/* ---- content ----------------------------------------------------------------------- */

struct amqp_content_header {
    uint16_t class_id;
    uint64_t body_size;
    struct wr_props props;     /* strings borrow from the frame payload */
    struct wr_table *headers;  /* owned (NULL when the headers property is absent) */
};

/* Decodes a content header frame's payload. Returns 0 or AMQP_SYNTAX_ERROR (truncated,
 * property flags with bits this class does not define, trailing bytes); on error nothing
 * needs freeing. Free h->headers with wr_table_free. */
int amqp_content_header_decode(const uint8_t *payload, size_t len,
                               struct amqp_content_header *h);
/* Writes a whole content header frame (basic class) on channel. The headers property is
 * written when headers is non-empty or props->flags has WR_PROP_HEADERS (a client sent an
 * empty table); absent props are not written (their flag bits stay clear). Decoding sets
 * WR_PROP_HEADERS when the property is present. */
void amqp_wr_content_header(struct amqp_wr *w, uint16_t channel, uint64_t body_size,
                            const struct wr_props *props, const struct wr_table *headers);
/* Writes body frames carrying body[0..len), each at most frame_max - 8 bytes of payload;
 * nothing for len 0. */
void amqp_wr_body(struct amqp_wr *w, uint16_t channel, uint32_t frame_max,
                  const uint8_t *body, size_t len);

#endif
