/*
 * custom_exchange_test.c: the out-of-tree consistent_hash exchange (examples/custom-exchange),
 * as built against the installed package by tests/integration/custom_exchange_build.sh, loaded
 * through a YAML config like any user's plugin, and routing: one routing key always reaches
 * one queue, and queues share keys roughly by their binding weights.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "testutil.h"

#define PLUGIN WR_TEST_BUILD_DIR "/example-build/consistent_hash.so"

static const char config[] = "broker:\n"
                             "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                             "plugins:\n"
                             "  - {name: consistent_hash, path: " PLUGIN "}\n"
                             "vhosts:\n"
                             "  - name: /\n"
                             "    exchanges:\n"
                             "      - {name: shards, type: consistent_hash}\n"
                             "    queues: [{name: a}, {name: b}, {name: c}]\n"
                             "    bindings:\n"
                             "      - {exchange: shards, queue: a, key: \"50\"}\n"
                             "      - {exchange: shards, queue: b, key: \"100\"}\n"
                             "      - {exchange: shards, queue: c, key: \"50\"}\n";

static struct wr_server *srv;
static struct wr_vhost *vh;

static void setup(void)
{
    struct wr_error err = {0};
    struct wr_config *cfg;
    cr_assert_eq(wr_config_load_string("example.yaml", config, strlen(config), &cfg, &err),
                 WR_OK, "%s", err.msg);
    struct wr_server_opts opts = {.no_listeners = true};
    cr_assert_eq(wr_server_new(cfg, &opts, &srv, &err), WR_OK, "%s", err.msg);
    wr_config_free(cfg);
    vh = wr_vhost_find(wr_server_broker(srv), "/");
}

static void teardown(void) { wr_server_free(srv); }

TestSuite(custom_exchange, .init = setup, .fini = teardown);

static struct wr_queue *route_one(const char *key)
{
    struct wr_msg_init init = {.routing_key = wr_str_c(key)};
    struct wr_msg *msg;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    struct wr_queue *out[4];
    size_t n = wr_exchange_route(wr_exchange_find(vh, "shards"), msg, out, 4);
    wr_msg_unref(msg);
    cr_assert_eq(n, 1, "routed to %zu queues", n);
    return out[0];
}

Test(custom_exchange, loaded_through_config)
{
    struct wr_exchange *ex = wr_exchange_find(vh, "shards");
    cr_assert_not_null(ex);
    cr_assert_str_eq(wr_exchange_type(ex), "consistent_hash");
    cr_assert_eq(wr_exchange_binding_count(ex), 3);
}

Test(custom_exchange, same_key_same_queue_and_weighted_spread)
{
    int counts[3] = {0};
    struct wr_queue *qs[3] = {wr_queue_find(vh, "a"), wr_queue_find(vh, "b"),
                              wr_queue_find(vh, "c")};
    for (int i = 0; i < 4000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%d", i);
        struct wr_queue *q = route_one(key);
        cr_assert_eq(route_one(key), q, "key %s moved", key);
        for (int j = 0; j < 3; j++)
            counts[j] += q == qs[j];
    }
    /* b has half the ring's points: expect about 2000 of 4000; a and c about 1000 each. */
    cr_assert(counts[1] > 1500 && counts[1] < 2500, "b got %d", counts[1]);
    cr_assert(counts[0] > 600 && counts[0] < 1400, "a got %d", counts[0]);
    cr_assert(counts[2] > 600 && counts[2] < 1400, "c got %d", counts[2]);
}

Test(custom_exchange, publish_stores_in_the_chosen_queue)
{
    struct wr_queue *q = route_one("order-42");
    struct wr_msg_init init = {.routing_key = wr_str_c("order-42"), .body_ptr = "x",
                               .body_len = 1};
    struct wr_msg *msg;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    cr_assert_eq(wr_publish(wr_exchange_find(vh, "shards"), msg, NULL, NULL), 1);
    wr_msg_unref(msg);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(custom_exchange, bad_weight_is_refused)
{
    struct wr_error err = {0};
    struct wr_queue *q = wr_queue_find(vh, "a");
    cr_assert_eq(wr_bind_queue(wr_exchange_find(vh, "shards"), q, "heavy", NULL, &err),
                 WR_EINVAL);
    cr_assert(strstr(err.msg, "a binding key is a weight from 1 to 1000, got 'heavy'"), "%s",
              err.msg);
}
