/*
 * handlers.h: the request handlers of the Kafka transport and the dispatcher that routes a
 * request to them or to the group coordinator (group.h). conn.c frames requests and decodes
 * their headers; handlers.c decodes bodies, does the work and completes the reply.
 */
#ifndef KAFKA_HANDLERS_H
#define KAFKA_HANDLERS_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/* The handlers' state of one listener: producer ids and the idempotent producers'
 * sequence numbers, and the Fetch requests waiting for data. NULL out of memory. */
struct kf_handlers *kf_handlers_new(struct kf_listener *l);
/* Completes every waiting request first (kf_conn_close_all did). Accepts NULL. */
void kf_handlers_free(struct kf_handlers *h);

/* True when the transport serves api_key in this version (kf_api_ranges). */
bool kf_api_supported(int16_t api_key, int16_t version);
/* Answers an ApiVersions request of a version we do not serve: a v0 body with error 35
 * UNSUPPORTED_VERSION and our ranges, so the client retries with one of them (KIP-511). */
void kf_api_versions_unsupported(struct kf_reply *r);

/* Handles one request: in holds its body, a holds what decoding allocates (freed by the
 * caller after the call unless the handler took it over, leaving it empty). Returns WR_OK,
 * or WR_EPROTO when the body does not parse or the request is not allowed in this state
 * (before SASL authentication): the caller closes the connection, r unsent. */
int kf_dispatch(struct kf_conn *c, struct kf_reply *r, const struct kf_request_header *h,
                struct kf_in *in, struct kf_arena *a);
/* A raw SASL token after SaslHandshake v0 (no request header): checks it, answers with an
 * empty frame on success; WR_EPERM: authentication failed, close the connection. */
int kf_sasl_raw(struct kf_conn *c, struct kf_reply *r, const uint8_t *p, size_t len);

#endif
