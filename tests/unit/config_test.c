/*
 * config_test.c: the YAML config as a user meets it: a full file read back field by field,
 * the defaults of an empty file, the embedded default, and for each kind of mistake the exact
 * "file:line:column: key.path: what was expected" message it stops with. Every error path
 * also runs under ASan, which fails the test on a leak.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

TestSuite(config);

static struct wr_config *load_ok(const char *name, const char *yaml)
{
    struct wr_config *cfg = NULL;
    struct wr_error err = {0};
    int rc = wr_config_load_string(name, yaml, strlen(yaml), &cfg, &err);
    cr_assert_eq(rc, WR_OK, "load failed: %s", err.msg);
    cr_assert_not_null(cfg);
    return cfg;
}

static void expect_error(const char *yaml, const char *msg)
{
    struct wr_config *cfg = (struct wr_config *)1;
    struct wr_error err = {0};
    int rc = wr_config_load_string("broken.yaml", yaml, strlen(yaml), &cfg, &err);
    cr_assert_eq(rc, WR_EINVAL, "rc %d (%s) for:\n%s", rc, err.msg, yaml);
    cr_assert_eq(err.code, WR_EINVAL);
    cr_assert_null(cfg);
    cr_assert_str_eq(err.msg, msg);
}

static char *print_to_string(const struct wr_config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cr_assert_not_null(out);
    wr_config_print(cfg, out);
    fclose(out);
    return text;
}

/* ---- valid configs ------------------------------------------------------------------ */

static const char full_yaml[] =
    "broker:\n"
    "  data_dir: /var/lib/warren\n"
    "  plugin_dirs: [./build/plugins, /opt/warren/plugins]\n"
    "  log_level: debug\n"
    "  max_message_size: 16MiB\n"
    "  memory_high_watermark: 2GiB\n"
    "plugins:\n"
    "  - {name: modhash, path: ./x/modhash.so}\n"
    "  - name: lua\n"
    "listeners:\n"
    "  - {transport: amqp091, port: 5672}\n"
    "  - {transport: kafka, host: 0.0.0.0, port: 9092, options: {auto_create_topics: true}}\n"
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges:\n"
    "      - {name: orders, type: topic, durable: true}\n"
    "      - {name: events, type: fanout, auto_delete: true, internal: true}\n"
    "    queues:\n"
    "      - {name: billing, storage: queue, durable: true, max_length: 1000,\n"
    "         max_length_bytes: 64MiB, overflow: reject-publish}\n"
    "      - {name: clicks, storage: log, partitions: 6, options: {retention: 7d}}\n"
    "      - name: plain\n"
    "        exclusive: true\n"
    "    bindings:\n"
    "      - {exchange: orders, queue: billing, key: \"orders.*\",\n"
    "         arguments: {x-match: any, region: eu}}\n"
    "      - {exchange: orders, to_exchange: events, key: \"#\"}\n"
    "      - {exchange: amq.fanout, queue: plain}\n"
    "  - name: staging\n"
    "users:\n"
    "  - {name: admin, password: s3cret, vhosts: [\"/\", staging], lua_scripts: true}\n"
    "  - {name: reader, password: 1234}\n";

Test(config, full_file_fills_every_field)
{
    struct wr_config *cfg = load_ok("full.yaml", full_yaml);

    cr_assert_str_eq(cfg->file, "full.yaml");
    cr_assert_str_eq(cfg->data_dir, "/var/lib/warren");
    cr_assert_str_eq(cfg->plugin_dirs[0], "./build/plugins");
    cr_assert_str_eq(cfg->plugin_dirs[1], "/opt/warren/plugins");
    cr_assert_null(cfg->plugin_dirs[2]);
    cr_assert_eq(cfg->log_level, WR_LOG_DEBUG);
    cr_assert_eq(cfg->max_message_size, 16u << 20);
    cr_assert_eq(cfg->memory_high_watermark, 2ULL << 30);

    cr_assert_eq(cfg->n_plugins, 2);
    cr_assert_str_eq(cfg->plugins[0].name, "modhash");
    cr_assert_str_eq(cfg->plugins[0].path, "./x/modhash.so");
    cr_assert_str_eq(cfg->plugins[1].name, "lua");
    cr_assert_null(cfg->plugins[1].path);

    cr_assert_eq(cfg->n_listeners, 2);
    cr_assert_str_eq(cfg->listeners[0].transport, "amqp091");
    cr_assert_str_eq(cfg->listeners[0].host, "127.0.0.1");
    cr_assert_eq(cfg->listeners[0].port, 5672);
    cr_assert_null(cfg->listeners[0].options);
    cr_assert_str_eq(cfg->listeners[1].host, "0.0.0.0");
    cr_assert_eq(cfg->listeners[1].port, 9092);
    cr_assert_eq(cfg->listeners[1].options->kind, CFG_MAP);
    cr_assert_str_eq(cfg->listeners[1].options->path, "listeners[1].options");

    cr_assert_eq(cfg->n_vhosts, 2);
    const struct cfg_vhost *vh = &cfg->vhosts[0];
    cr_assert_str_eq(vh->name, "/");
    cr_assert_eq(vh->n_exchanges, 2);
    cr_assert_str_eq(vh->exchanges[0].name, "orders");
    cr_assert_str_eq(vh->exchanges[0].type, "topic");
    cr_assert(vh->exchanges[0].durable);
    cr_assert(!vh->exchanges[0].auto_delete && !vh->exchanges[0].internal);
    cr_assert(!vh->exchanges[1].durable);
    cr_assert(vh->exchanges[1].auto_delete && vh->exchanges[1].internal);

    cr_assert_eq(vh->n_queues, 3);
    const struct cfg_queue *q = &vh->queues[0];
    cr_assert_str_eq(q->name, "billing");
    cr_assert_str_eq(q->storage, "queue");
    cr_assert(q->durable && !q->exclusive && !q->auto_delete);
    cr_assert_eq(q->max_length, 1000);
    cr_assert_eq(q->max_length_bytes, 64 << 20);
    cr_assert_eq(q->overflow, WR_OVERFLOW_REJECT_PUBLISH);
    cr_assert_eq(q->partitions, 1);
    q = &vh->queues[1];
    cr_assert_str_eq(q->storage, "log");
    cr_assert_eq(q->partitions, 6);
    cr_assert_str_eq(q->options->path, "vhosts[0].queues[1].options");
    q = &vh->queues[2];
    cr_assert_str_eq(q->name, "plain");
    cr_assert_str_eq(q->storage, "memory");
    cr_assert(q->exclusive && !q->durable);
    cr_assert_eq(q->max_length, -1);
    cr_assert_eq(q->max_length_bytes, -1);
    cr_assert_eq(q->overflow, WR_OVERFLOW_DROP_HEAD);
    cr_assert_null(q->options);
    /* Positions: the block mapping starts at its first key. */
    cr_assert_str_eq(q->node->path, "vhosts[0].queues[2]");
    cr_assert_eq(q->node->mark.line, 22);
    cr_assert_eq(q->node->mark.col, 9);

    cr_assert_eq(vh->n_bindings, 3);
    const struct cfg_binding *bd = &vh->bindings[0];
    cr_assert_str_eq(bd->exchange, "orders");
    cr_assert_str_eq(bd->queue, "billing");
    cr_assert_null(bd->to_exchange);
    cr_assert_str_eq(bd->key, "orders.*");
    cr_assert_str_eq(bd->arguments->path, "vhosts[0].bindings[0].arguments");
    bd = &vh->bindings[1];
    cr_assert_null(bd->queue);
    cr_assert_str_eq(bd->to_exchange, "events");
    cr_assert_str_eq(bd->key, "#");
    cr_assert_null(bd->arguments);
    cr_assert_str_eq(vh->bindings[2].exchange, "amq.fanout");
    cr_assert_str_eq(vh->bindings[2].key, "");

    cr_assert_str_eq(cfg->vhosts[1].name, "staging");
    cr_assert_eq(cfg->vhosts[1].n_exchanges + cfg->vhosts[1].n_queues +
                     cfg->vhosts[1].n_bindings, 0);

    cr_assert_eq(cfg->n_users, 2);
    cr_assert_str_eq(cfg->users[0].name, "admin");
    cr_assert_str_eq(cfg->users[0].password, "s3cret");
    cr_assert_str_eq(cfg->users[0].vhosts[0], "/");
    cr_assert_str_eq(cfg->users[0].vhosts[1], "staging");
    cr_assert_null(cfg->users[0].vhosts[2]);
    cr_assert(cfg->users[0].lua_scripts);
    cr_assert_str_eq(cfg->users[1].password, "1234", "a plain number is a fine password");
    cr_assert_null(cfg->users[1].vhosts[0], "no vhosts given: access to none");
    cr_assert(!cfg->users[1].lua_scripts, "Lua exchanges are refused unless allowed");
    wr_config_free(cfg);
}

Test(config, print_lists_the_topology)
{
    struct wr_config *cfg = load_ok("full.yaml", full_yaml);
    char *text = print_to_string(cfg);
    cr_assert_str_eq(text,
                     "config: full.yaml\n"
                     "broker:\n"
                     "  data_dir: /var/lib/warren\n"
                     "  plugin_dirs: ./build/plugins, /opt/warren/plugins\n"
                     "  log_level: debug\n"
                     "  max_message_size: 16MiB\n"
                     "  memory_high_watermark: 2GiB\n"
                     "plugins:\n"
                     "  modhash: ./x/modhash.so\n"
                     "  lua: (from plugin_dirs)\n"
                     "listeners:\n"
                     "  amqp091 on 127.0.0.1:5672\n"
                     "  kafka on 0.0.0.0:9092, options {auto_create_topics: true}\n"
                     "vhost /:\n"
                     "  exchanges:\n"
                     "    orders: topic, durable\n"
                     "    events: fanout, auto_delete, internal\n"
                     "  queues:\n"
                     "    billing: queue, durable, max_length 1000, max_length_bytes 64MiB, "
                     "overflow reject-publish\n"
                     "    clicks: log, partitions 6, options {retention: 7d}\n"
                     "    plain: memory, exclusive\n"
                     "  bindings:\n"
                     "    orders -> billing (orders.*), arguments {x-match: any, region: eu}\n"
                     "    orders -> exchange events (#)\n"
                     "    amq.fanout -> plain (\"\")\n"
                     "vhost staging:\n"
                     "  exchanges: none\n"
                     "  queues: none\n"
                     "  bindings: none\n"
                     "users:\n"
                     "  admin: vhosts /, staging, may declare Lua exchanges\n"
                     "  reader: no vhosts\n");
    cr_assert_null(strstr(text, "s3cret"), "passwords are never printed");
    free(text);
    wr_config_free(cfg);
}

/* RabbitMQ's default memory high watermark: 40% of the machine's memory. */
static void assert_default_watermark(uint64_t watermark)
{
    uint64_t ram = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    cr_assert_gt(ram, 0);
    uint64_t want = ram / 10 * 4;
    cr_assert(watermark + 16 >= want && watermark <= want + 16,
              "memory_high_watermark %llu, want 40%% of %llu", (unsigned long long)watermark,
              (unsigned long long)ram);
}

/* Everything an empty file and the embedded default share; listeners differ. */
static void assert_defaults_but_listeners(const struct wr_config *cfg)
{
    cr_assert_str_eq(cfg->data_dir, "./warren-data");
    cr_assert_null(cfg->plugin_dirs);
    cr_assert_eq(cfg->log_level, WR_LOG_INFO);
    cr_assert_eq(cfg->max_message_size, 128u << 20);
    assert_default_watermark(cfg->memory_high_watermark);
    cr_assert_eq(cfg->n_plugins, 0);
    cr_assert_eq(cfg->n_vhosts, 1);
    cr_assert_str_eq(cfg->vhosts[0].name, "/");
    cr_assert_eq(cfg->vhosts[0].n_exchanges + cfg->vhosts[0].n_queues +
                     cfg->vhosts[0].n_bindings, 0);
    cr_assert_eq(cfg->n_users, 1);
    cr_assert_str_eq(cfg->users[0].name, "guest");
    cr_assert_str_eq(cfg->users[0].password, "guest");
    cr_assert_str_eq(cfg->users[0].vhosts[0], "/");
    cr_assert_null(cfg->users[0].vhosts[1]);
    cr_assert(!cfg->users[0].lua_scripts, "the default guest may not declare Lua exchanges");
}

static void assert_defaults(const struct wr_config *cfg)
{
    assert_defaults_but_listeners(cfg);
    cr_assert_eq(cfg->n_listeners, 0);
}

/* The embedded default: the defaults plus AMQP 0-9-1 on 127.0.0.1:5672. */
static void assert_embedded_default(const struct wr_config *cfg)
{
    assert_defaults_but_listeners(cfg);
    cr_assert_eq(cfg->n_listeners, 1);
    cr_assert_str_eq(cfg->listeners[0].transport, "amqp091");
    cr_assert_str_eq(cfg->listeners[0].host, "127.0.0.1");
    cr_assert_eq(cfg->listeners[0].port, 5672);
    cr_assert_null(cfg->listeners[0].options);
}

Test(config, empty_file_is_all_defaults)
{
    const char *empties[] = {"", "# nothing here\n", "---\n", "~\n", "broker:\nvhosts:\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(*empties); i++) {
        struct wr_config *cfg = load_ok("empty.yaml", empties[i]);
        assert_defaults(cfg);
        wr_config_free(cfg);
    }
}

Test(config, embedded_default_parses)
{
    const char *text = wr_config_default_text();
    cr_assert_not_null(strstr(text, "{transport: amqp091, port: 5672}"));
    struct wr_config *cfg = load_ok("(default)", text);
    assert_embedded_default(cfg);
    wr_config_free(cfg);
}

Test(config, vhosts_without_root_keep_guest_out)
{
    struct wr_config *cfg = load_ok("x.yaml", "vhosts: [{name: prod}]\n");
    cr_assert_eq(cfg->n_vhosts, 1);
    cr_assert_str_eq(cfg->users[0].name, "guest");
    cr_assert_null(cfg->users[0].vhosts[0], "guest is given \"/\" only, and there is none");
    wr_config_free(cfg);
}

Test(config, null_values_are_absent_and_str_tag_quotes)
{
    struct wr_config *cfg = load_ok("x.yaml",
                                    "broker: {data_dir: ~, log_level: }\n"
                                    "vhosts:\n"
                                    "  - name: !!str 42\n"
                                    "    queues: [{name: q, max_length: null, options: ~}]\n");
    cr_assert_str_eq(cfg->data_dir, "./warren-data");
    cr_assert_eq(cfg->log_level, WR_LOG_INFO);
    cr_assert_str_eq(cfg->vhosts[0].name, "42");
    cr_assert_eq(cfg->vhosts[0].queues[0].max_length, -1);
    cr_assert_null(cfg->vhosts[0].queues[0].options);
    wr_config_free(cfg);
}

/* ---- loading a file ----------------------------------------------------------------- */

Test(config, load_file_reads_and_names_the_file)
{
    char path[] = "/tmp/warren-config-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *yaml = "broker:\n  log_level: warn\nlisteners: {}\n";
    cr_assert_eq(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);

    struct wr_config *cfg = NULL;
    struct wr_error err = {0};
    int rc = wr_config_load_file(path, &cfg, &err);
    unlink(path);
    cr_assert_eq(rc, WR_EINVAL);
    char want[256];
    snprintf(want, sizeof(want), "%s:3:12: listeners: expected a list, got a map", path);
    cr_assert_str_eq(err.msg, want);
}

Test(config, load_file_ok)
{
    char path[] = "/tmp/warren-config-test-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char *yaml = wr_config_default_text();
    cr_assert_eq(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);

    struct wr_config *cfg = NULL;
    struct wr_error err = {0};
    int rc = wr_config_load_file(path, &cfg, &err);
    unlink(path);
    cr_assert_eq(rc, WR_OK, "%s", err.msg);
    cr_assert_str_eq(cfg->file, path);
    assert_embedded_default(cfg);
    wr_config_free(cfg);
}

Test(config, load_file_missing_is_eio_naming_the_path)
{
    struct wr_config *cfg = (struct wr_config *)1;
    struct wr_error err = {0};
    int rc = wr_config_load_file("/nonexistent/warren.yaml", &cfg, &err);
    cr_assert_eq(rc, WR_EIO);
    cr_assert_eq(err.code, WR_EIO);
    cr_assert_eq(err.sys_errno, ENOENT);
    cr_assert_null(cfg);
    cr_assert_not_null(strstr(err.msg, "'/nonexistent/warren.yaml'"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, strerror(ENOENT)), "%s", err.msg);
}

Test(config, load_file_directory_is_eio)
{
    struct wr_config *cfg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_config_load_file("/tmp", &cfg, &err), WR_EIO);
    cr_assert_eq(err.sys_errno, EISDIR);
    cr_assert_not_null(strstr(err.msg, "'/tmp'"), "%s", err.msg);
}

/* ---- one test per kind of mistake --------------------------------------------------- */

Test(config, yaml_syntax_error)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [a, b\n"
                 "users: []\n",
                 "broken.yaml:4:6: YAML syntax error: did not find expected ',' or ']' "
                 "(while parsing a flow sequence at line 3, column 13)");
    expect_error("broker:\n"
                 "  data_dir: x\n"
                 " log_level: info\n",
                 "broken.yaml:3:2: YAML syntax error: did not find expected key "
                 "(while parsing a block mapping at line 1, column 1)");
    expect_error("broker: {data_dir: \"a\xff\"}\n",
                 "broken.yaml:1:22: YAML syntax error: invalid leading UTF-8 octet");
}

Test(config, unknown_key)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges:\n"
                 "      - name: orders\n"
                 "        tpye: topic\n",
                 "broken.yaml:5:9: vhosts[0].exchanges[0].tpye: unknown key (expected one of: "
                 "name, type, durable, auto_delete, internal, options)");
    expect_error("broker: {}\nlistener: []\n",
                 "broken.yaml:2:1: listener: unknown key (expected one of: broker, plugins, "
                 "listeners, vhosts, users)");
    expect_error("broker: {data-dir: x}\n",
                 "broken.yaml:1:10: broker.data-dir: unknown key (expected one of: data_dir, "
                 "plugin_dirs, log_level, max_message_size, memory_high_watermark)");
    expect_error("vhosts: [{name: /, queues: [{name: q, ttl: 5s}]}]\n",
                 "broken.yaml:1:39: vhosts[0].queues[0].ttl: unknown key (expected one of: "
                 "name, storage, durable, exclusive, auto_delete, max_length, max_length_bytes, "
                 "overflow, partitions, message_ttl, expires, dead_letter_exchange, "
                 "dead_letter_routing_key, forward_to, options)");
}

Test(config, wrong_type)
{
    expect_error("vhosts: {name: /}\n",
                 "broken.yaml:1:9: vhosts: expected a list, got a map");
    expect_error("broker:\n"
                 "  log_level: info\n"
                 "vhosts:\n"
                 "  - name: /\n"
                 "    queues:\n"
                 "     - name: a\n"
                 "     - name: b\n"
                 "       max_length: lots\n",
                 "broken.yaml:8:20: vhosts[0].queues[1].max_length: expected a non-negative "
                 "integer, got 'lots'");
    expect_error("vhosts: [{name: /, queues: [{name: a, max_length: -1}]}]\n",
                 "broken.yaml:1:51: vhosts[0].queues[0].max_length: expected a non-negative "
                 "integer, got '-1'");
    expect_error("vhosts: [{name: /, queues: [{name: a, max_length: \"5\"}]}]\n",
                 "broken.yaml:1:51: vhosts[0].queues[0].max_length: expected a non-negative "
                 "integer, got '5'");
    expect_error("vhosts: [{name: /, queues: [{name: a, partitions: 0}]}]\n",
                 "broken.yaml:1:51: vhosts[0].queues[0].partitions: expected an integer from 1 "
                 "to 2147483647, got '0'");
    expect_error("vhosts: [{name: /, queues: [{name: a, overflow: drop-tail}]}]\n",
                 "broken.yaml:1:49: vhosts[0].queues[0].overflow: expected drop-head or "
                 "reject-publish, got 'drop-tail'");
    expect_error("vhosts: [{name: /, exchanges: [{name: e, type: direct, durable: yes}]}]\n",
                 "broken.yaml:1:65: vhosts[0].exchanges[0].durable: expected true or false, got "
                 "'yes'");
    expect_error("listeners: [{transport: amqp091, port: 70000}]\n",
                 "broken.yaml:1:40: listeners[0].port: expected a port number from 0 to 65535, "
                 "got '70000'");
    expect_error("broker: {log_level: verbose}\n",
                 "broken.yaml:1:21: broker.log_level: expected one of: error, warn, info, debug, "
                 "got 'verbose'");
    expect_error("broker: {plugin_dirs: ./plugins}\n",
                 "broken.yaml:1:23: broker.plugin_dirs: expected a list, got './plugins'");
    expect_error("broker: {plugin_dirs: [[a]]}\n",
                 "broken.yaml:1:24: broker.plugin_dirs[0]: expected a string, got a list");
    expect_error("vhosts: [{name: /, queues: [{name: a, options: [x]}]}]\n",
                 "broken.yaml:1:48: vhosts[0].queues[0].options: expected a map, got a list");
    expect_error("vhosts: [/]\n",
                 "broken.yaml:1:10: vhosts[0]: expected a map, got '/'");
    expect_error("- a\n- b\n",
                 "broken.yaml:1:1: expected a map with the sections broker, plugins, listeners, "
                 "vhosts, users; got a list");
    expect_error("vhosts: [{name: \"\"}]\n",
                 "broken.yaml:1:17: vhosts[0].name: expected a name, got ''");
    expect_error("users: [{name: u, password: }]\n",
                 "broken.yaml:1:29: users[0].password: expected a string, got nothing");
}

Test(config, missing_required_key)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues:\n"
                 "      - {durable: true}\n",
                 "broken.yaml:4:9: vhosts[0].queues[0]: missing required key 'name'");
    expect_error("vhosts:\n"
                 "  - exchanges: []\n",
                 "broken.yaml:2:5: vhosts[0]: missing required key 'name'");
    expect_error("vhosts: [{name: /, exchanges: [{name: e}]}]\n",
                 "broken.yaml:1:32: vhosts[0].exchanges[0]: missing required key 'type'");
    expect_error("listeners: [{transport: amqp091}]\n",
                 "broken.yaml:1:13: listeners[0]: missing required key 'port'");
    expect_error("plugins: [{path: ./x.so}]\n",
                 "broken.yaml:1:11: plugins[0]: missing required key 'name'");
    expect_error("users: [{name: u}]\n",
                 "broken.yaml:1:9: users[0]: missing required key 'password'");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges: [{name: e, type: direct}]\n"
                 "    bindings:\n"
                 "      - {exchange: e, key: k}\n",
                 "broken.yaml:5:9: vhosts[0].bindings[0]: missing required key 'queue' (or "
                 "'to_exchange')");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges: [{name: e, type: direct}]\n"
                 "    queues: [{name: q}]\n"
                 "    bindings:\n"
                 "      - {exchange: e, queue: q, to_exchange: amq.direct}\n",
                 "broken.yaml:6:33: vhosts[0].bindings[0].to_exchange: a binding has either "
                 "'queue' or 'to_exchange', not both");
}

Test(config, bad_size)
{
    expect_error("vhosts: [{name: /, queues: [{name: a, max_length_bytes: 12XB}]}]\n",
                 "broken.yaml:1:57: vhosts[0].queues[0].max_length_bytes: expected a size such "
                 "as 64MiB (bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got '12XB'");
    expect_error("broker:\n  max_message_size: -1\n",
                 "broken.yaml:2:21: broker.max_message_size: expected a size such as 64MiB "
                 "(bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got '-1'");
    expect_error("broker:\n  max_message_size: 0\n",
                 "broken.yaml:2:21: broker.max_message_size: expected a size of at least 1 byte, "
                 "got '0'");
    expect_error("vhosts: [{name: /, queues: [{name: a, max_length_bytes: 16000000TiB}]}]\n",
                 "broken.yaml:1:57: vhosts[0].queues[0].max_length_bytes: size too large (at "
                 "most 9223372036854775807 bytes)");
}

/* ---- memory watermark, message TTL, queue expiry, dead-lettering -------------------- */

static const char ttl_yaml[] =
    "broker:\n"
    "  memory_high_watermark: 512MiB\n"
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges: [{name: dlx, type: fanout}]\n"
    "    queues:\n"
    "      - {name: work, message_ttl: 1m, expires: 30m, dead_letter_exchange: dlx,\n"
    "         dead_letter_routing_key: dead}\n"
    "      - {name: instant, message_ttl: 0, dead_letter_exchange: \"\"}\n"
    "      - {name: plain}\n";

Test(config, ttl_expiry_and_dead_letter_keys)
{
    struct wr_config *cfg = load_ok("ttl.yaml", ttl_yaml);
    cr_assert_eq(cfg->memory_high_watermark, 512ULL << 20);
    const struct cfg_queue *q = &cfg->vhosts[0].queues[0];
    cr_assert_eq(q->message_ttl_ms, 60000);
    cr_assert_eq(q->expires_ms, 1800000);
    cr_assert_str_eq(q->dead_letter_exchange, "dlx");
    cr_assert_str_eq(q->dead_letter_routing_key, "dead");
    q = &cfg->vhosts[0].queues[1];
    cr_assert_eq(q->message_ttl_ms, 0, "a TTL of 0 is a TTL, not none");
    cr_assert_eq(q->expires_ms, -1);
    cr_assert_str_eq(q->dead_letter_exchange, "", "\"\" names the default exchange");
    cr_assert_null(q->dead_letter_routing_key);
    q = &cfg->vhosts[0].queues[2];
    cr_assert_eq(q->message_ttl_ms, -1);
    cr_assert_eq(q->expires_ms, -1);
    cr_assert_null(q->dead_letter_exchange);
    cr_assert_null(q->dead_letter_routing_key);
    wr_config_free(cfg);

    cfg = load_ok("off.yaml", "broker: {memory_high_watermark: 0}\n");
    cr_assert_eq(cfg->memory_high_watermark, 0, "0 turns the alarm off");
    wr_config_free(cfg);
}

Test(config, print_shows_ttl_expiry_and_dead_letter_keys)
{
    struct wr_config *cfg = load_ok("ttl.yaml", ttl_yaml);
    char *text = print_to_string(cfg);
    const char *want[] = {
        "  memory_high_watermark: 512MiB\n",
        "    work: memory, message_ttl 60000ms, expires 1800000ms, dead_letter_exchange \"dlx\", "
        "dead_letter_routing_key \"dead\"\n",
        "    instant: memory, message_ttl 0ms, dead_letter_exchange \"\"\n",
        "    plain: memory\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++)
        cr_assert_not_null(strstr(text, want[i]), "no line '%s' in:\n%s", want[i], text);
    free(text);
    wr_config_free(cfg);
}

Test(config, bad_ttl_expiry_and_dead_letter_values)
{
    expect_error("vhosts: [{name: /, queues: [{name: a, message_ttl: 5y}]}]\n",
                 "broken.yaml:1:52: vhosts[0].queues[0].message_ttl: expected a duration such "
                 "as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, w), got '5y'");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues:\n"
                 "      - name: a\n"
                 "        message_ttl: -1\n",
                 "broken.yaml:5:22: vhosts[0].queues[0].message_ttl: expected a duration such "
                 "as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, w), got '-1'");
    expect_error("vhosts: [{name: /, queues: [{name: a, message_ttl: 9223372036854775808ms}]}]\n",
                 "broken.yaml:1:52: vhosts[0].queues[0].message_ttl: expected a duration such "
                 "as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, w), got "
                 "'9223372036854775808ms'");
    expect_error("vhosts: [{name: /, queues: [{name: a, expires: 1MiB}]}]\n",
                 "broken.yaml:1:48: vhosts[0].queues[0].expires: expected a duration such as "
                 "250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, w), got '1MiB'");
    expect_error("vhosts: [{name: /, queues: [{name: a, expires: 0}]}]\n",
                 "broken.yaml:1:48: vhosts[0].queues[0].expires: expected a duration of at "
                 "least 1ms, got '0'");
    expect_error("vhosts: [{name: /, queues: [{name: a, dead_letter_exchange: [x]}]}]\n",
                 "broken.yaml:1:61: vhosts[0].queues[0].dead_letter_exchange: expected a "
                 "string, got a list");
    expect_error("vhosts: [{name: /, queues: [{name: a, dead_letter_routing_key: {k: v}}]}]\n",
                 "broken.yaml:1:64: vhosts[0].queues[0].dead_letter_routing_key: expected a "
                 "string, got a map");
    expect_error("broker:\n  memory_high_watermark: lots\n",
                 "broken.yaml:2:26: broker.memory_high_watermark: expected a size such as 64MiB "
                 "(bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got 'lots'");
    expect_error("broker:\n  memory_high_watermark: 40%\n",
                 "broken.yaml:2:26: broker.memory_high_watermark: expected a size such as 64MiB "
                 "(bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), got '40%'");
}

Test(config, forward_to_names_an_exchange_of_the_vhost)
{
    struct wr_config *cfg = load_ok("fw.yaml",
                                    "vhosts:\n"
                                    "  - name: /\n"
                                    "    exchanges: [{name: fx, type: topic}]\n"
                                    "    queues:\n"
                                    "      - {name: a, storage: log, forward_to: fx}\n"
                                    "      - {name: b, storage: log, forward_to: amq.topic}\n"
                                    "      - {name: c, storage: log, forward_to: \"\"}\n"
                                    "      - {name: d, storage: log}\n");
    const struct cfg_queue *q = cfg->vhosts[0].queues;
    cr_assert_str_eq(q[0].forward_to, "fx");
    cr_assert_eq(q[0].forward_to_node->mark.line, 5);
    cr_assert_str_eq(q[1].forward_to, "amq.topic", "a predeclared exchange is one too");
    cr_assert_str_eq(q[2].forward_to, "", "the default exchange routes by the record key");
    cr_assert_null(q[3].forward_to);
    char *text = print_to_string(cfg);
    cr_assert_not_null(strstr(text, "    a: log, forward_to \"fx\"\n"), "%s", text);
    free(text);
    wr_config_free(cfg);

    expect_error("vhosts: [{name: /, queues: [{name: a, storage: log, forward_to: fx}]}]\n",
                 "broken.yaml:1:65: vhosts[0].queues[0].forward_to: no exchange 'fx' in vhost "
                 "'/' (declare it under exchanges)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges: [{name: fx, type: topic}]\n"
                 "  - name: other\n"
                 "    queues: [{name: a, storage: log, forward_to: fx}]\n",
                 "broken.yaml:5:50: vhosts[1].queues[0].forward_to: no exchange 'fx' in vhost "
                 "'other' (declare it under exchanges)");
    expect_error("vhosts: [{name: /, queues: [{name: a, storage: log, forward_to: [fx]}]}]\n",
                 "broken.yaml:1:65: vhosts[0].queues[0].forward_to: expected a string, got a "
                 "list");
}

Test(config, duplicate_names)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges:\n"
                 "      - {name: orders, type: topic}\n"
                 "      - {name: orders, type: direct}\n",
                 "broken.yaml:5:16: vhosts[0].exchanges[1].name: duplicate exchange 'orders' "
                 "(first at line 4, column 16)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [{name: q}, {name: q}]\n",
                 "broken.yaml:3:32: vhosts[0].queues[1].name: duplicate queue 'q' (first at "
                 "line 3, column 21)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "  - name: /\n",
                 "broken.yaml:3:11: vhosts[1].name: duplicate vhost '/' (first at line 2, "
                 "column 11)");
    expect_error("users:\n"
                 "  - {name: guest, password: a}\n"
                 "  - {name: guest, password: b}\n",
                 "broken.yaml:3:12: users[1].name: duplicate user 'guest' (first at line 2, "
                 "column 12)");
    expect_error("plugins: [{name: lua}, {name: lua}]\n",
                 "broken.yaml:1:31: plugins[1].name: duplicate plugin 'lua' (first at line 1, "
                 "column 18)");
    /* The same name in two vhosts is two objects, not a duplicate. */
    struct wr_config *cfg = load_ok("ok.yaml", "vhosts: [{name: a, queues: [{name: q}]},\n"
                                               "         {name: b, queues: [{name: q}]}]\n");
    wr_config_free(cfg);
}

Test(config, duplicate_listener)
{
    expect_error("listeners:\n"
                 "  - {transport: amqp091, port: 5672}\n"
                 "  - {transport: kafka, port: 5672}\n",
                 "broken.yaml:3:30: listeners[1].port: a listener on 127.0.0.1:5672 is already "
                 "at line 2");
}

Test(config, binding_to_undeclared)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [{name: q}]\n"
                 "    bindings: [{exchange: orders, queue: q}]\n",
                 "broken.yaml:4:27: vhosts[0].bindings[0].exchange: no exchange 'orders' in vhost "
                 "'/' (declare it under exchanges)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [{name: q}]\n"
                 "    bindings: [{exchange: amq.topic, queue: r}]\n",
                 "broken.yaml:4:45: vhosts[0].bindings[0].queue: no queue 'r' in vhost '/' "
                 "(declare it under queues)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    bindings: [{exchange: amq.topic, to_exchange: nope}]\n",
                 "broken.yaml:3:51: vhosts[0].bindings[0].to_exchange: no exchange 'nope' in "
                 "vhost '/' (declare it under exchanges)");
    /* Declared in another vhost is not declared here. */
    expect_error("vhosts:\n"
                 "  - {name: a, exchanges: [{name: e, type: direct}]}\n"
                 "  - {name: b, queues: [{name: q}], bindings: [{exchange: e, queue: q}]}\n",
                 "broken.yaml:3:58: vhosts[1].bindings[0].exchange: no exchange 'e' in vhost "
                 "'b' (declare it under exchanges)");
}

Test(config, binding_default_exchange)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [{name: q}]\n"
                 "    bindings: [{exchange: \"\", queue: q}]\n",
                 "broken.yaml:4:27: vhosts[0].bindings[0].exchange: cannot bind to or from the "
                 "default exchange \"\" (every queue is bound to it by its own name)");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    bindings: [{exchange: amq.direct, to_exchange: ''}]\n",
                 "broken.yaml:3:52: vhosts[0].bindings[0].to_exchange: cannot bind to or from "
                 "the default exchange \"\" (every queue is bound to it by its own name)");
}

Test(config, predeclared_exchanges_may_be_bound)
{
    struct wr_config *cfg = load_ok("ok.yaml",
                                    "vhosts:\n"
                                    "  - name: /\n"
                                    "    queues: [{name: q}]\n"
                                    "    bindings:\n"
                                    "      - {exchange: amq.direct, queue: q}\n"
                                    "      - {exchange: amq.fanout, queue: q}\n"
                                    "      - {exchange: amq.topic, queue: q}\n"
                                    "      - {exchange: amq.headers, queue: q}\n"
                                    "      - {exchange: amq.match, to_exchange: amq.direct}\n");
    cr_assert_eq(cfg->vhosts[0].n_bindings, 5);
    wr_config_free(cfg);
}

Test(config, user_unknown_vhost)
{
    expect_error("vhosts: [{name: /}]\n"
                 "users:\n"
                 "  - {name: ann, password: x, vhosts: [/, prod]}\n",
                 "broken.yaml:3:42: users[0].vhosts[1]: no vhost 'prod' (declare it under "
                 "vhosts)");
}

Test(config, user_lua_scripts_is_a_flag)
{
    expect_error("users: [{name: ann, password: x, lua_scripts: yes}]\n",
                 "broken.yaml:1:47: users[0].lua_scripts: expected true or false, got 'yes'");
    expect_error("users:\n"
                 "  - name: ann\n"
                 "    password: x\n"
                 "    lua_scripts: [true]\n",
                 "broken.yaml:4:18: users[0].lua_scripts: expected true or false, got a list");
    expect_error("users: [{name: ann, password: x, lua-scripts: true}]\n",
                 "broken.yaml:1:34: users[0].lua-scripts: unknown key (expected one of: name, "
                 "password, vhosts, lua_scripts)");
    struct wr_config *cfg = load_ok("x.yaml", "users: [{name: ann, password: x, "
                                              "lua_scripts: false}]\n");
    cr_assert(!cfg->users[0].lua_scripts);
    wr_config_free(cfg);
}

Test(config, reserved_amq_names)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    exchanges: [{name: amq.custom, type: direct}]\n",
                 "broken.yaml:3:24: vhosts[0].exchanges[0].name: names starting with 'amq.' are "
                 "reserved for the broker, got 'amq.custom'");
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: [{name: amq.gen-1}]\n",
                 "broken.yaml:3:21: vhosts[0].queues[0].name: names starting with 'amq.' are "
                 "reserved for the broker, got 'amq.gen-1'");
}

Test(config, duplicate_key)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues: []\n"
                 "    name: other\n",
                 "broken.yaml:4:5: vhosts[0].name: duplicate key (first at line 2, column 5)");
    expect_error("broker: {}\nbroker: {}\n",
                 "broken.yaml:2:1: broker: duplicate key (first at line 1, column 1)");
    /* In options too: the tree refuses it before any schema looks. */
    expect_error("listeners: [{transport: t, port: 1, options: {a: 1, a: 2}}]\n",
                 "broken.yaml:1:53: listeners[0].options.a: duplicate key (first at line 1, "
                 "column 47)");
}

Test(config, anchors_and_aliases_refused)
{
    expect_error("vhosts:\n"
                 "  - name: /\n"
                 "    queues:\n"
                 "      - &q {name: a}\n",
                 "broken.yaml:4:9: vhosts[0].queues[0]: YAML anchors (&q) and aliases are not "
                 "supported; write the value out");
    expect_error("users:\n"
                 "  - {name: a, password: x}\n"
                 "  - *u\n",
                 "broken.yaml:3:5: users[1]: YAML aliases (*u) and anchors are not supported; "
                 "write the value out");
}

Test(config, other_yaml_features_refused)
{
    expect_error("broker: {}\n---\nbroker: {}\n",
                 "broken.yaml:2:1: a config is one YAML document; remove this second one");
    expect_error("broker: {max_message_size: !!int 5}\n",
                 "broken.yaml:1:28: broker.max_message_size: YAML tag '!!int' is not "
                 "supported (quote a value to make it a string)");
    expect_error("broker: {data_dir: !custom x}\n",
                 "broken.yaml:1:20: broker.data_dir: YAML tag '!custom' is not supported (quote "
                 "a value to make it a string)");
    expect_error("broker: {? [a] : b}\n",
                 "broken.yaml:1:12: broker: expected a plain key, got a list");
    expect_error("broker: {data_dir: \"a\\0b\"}\n",
                 "broken.yaml:1:20: broker.data_dir: a string may not contain a NUL character");
}

Test(config, deep_nesting_refused)
{
    char yaml[256] = "listeners: [{transport: t, port: 1, options: {a: ";
    size_t len = strlen(yaml);
    for (int i = 0; i < 70; i++)
        yaml[len++] = '[';
    for (int i = 0; i < 70; i++)
        yaml[len++] = ']';
    strcpy(yaml + len, "}}]\n");
    struct wr_config *cfg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_config_load_string("deep.yaml", yaml, strlen(yaml), &cfg, &err), WR_EINVAL);
    cr_assert_not_null(strstr(err.msg, "nested deeper than 64 levels"), "%s", err.msg);
}

/* ---- sizes and durations ------------------------------------------------------------ */

struct parse_case {
    const char *text;
    uint64_t want;
};

Test(config, parse_size_good)
{
    static const struct parse_case cases[] = {
        {"0", 0},
        {"512", 512},
        {"1B", 1},
        {"1KB", 1000},
        {"2MB", 2000000},
        {"3GB", 3000000000ULL},
        {"4TB", 4000000000000ULL},
        {"1KiB", 1024},
        {"64MiB", 64ULL << 20},
        {"64 MiB", 64ULL << 20},
        {"1GiB", 1ULL << 30},
        {"2TiB", 2ULL << 40},
        {"18446744073709551615", UINT64_MAX},
        {"16777215TiB", 16777215ULL << 40},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        uint64_t v = 7;
        cr_assert(cfg_parse_size(cases[i].text, &v), "'%s' should parse", cases[i].text);
        cr_assert_eq(v, cases[i].want, "'%s' gave %llu", cases[i].text, (unsigned long long)v);
    }
}

Test(config, parse_size_bad)
{
    static const char *const cases[] = {
        "", " 1", "-1", "+1", "1.5MiB", "MiB", "1 ", "1XB", "1mib", "1kb", "1MiBs", "1 MiB x",
        "18446744073709551616", "16777216TiB", "99999999999999999999B", "1ms", "0x10", NULL,
    };
    for (size_t i = 0; cases[i]; i++) {
        uint64_t v = 7;
        cr_assert(!cfg_parse_size(cases[i], &v), "'%s' should be refused", cases[i]);
        cr_assert_eq(v, 7, "a refused size leaves the output alone");
    }
    cr_assert(!cfg_parse_size(NULL, &(uint64_t){0}));
}

Test(config, parse_duration_good)
{
    static const struct parse_case cases[] = {
        {"0", 0},          {"100", 100},          {"250ms", 250},
        {"30s", 30000},    {"5m", 300000},        {"2h", 7200000},
        {"7d", 604800000}, {"1w", 604800000},     {"3 s", 3000},
        {"18446744073709551615ms", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        uint64_t v = 7;
        cr_assert(cfg_parse_duration(cases[i].text, &v), "'%s' should parse", cases[i].text);
        cr_assert_eq(v, cases[i].want, "'%s' gave %llu", cases[i].text, (unsigned long long)v);
    }
}

Test(config, parse_duration_bad)
{
    static const char *const cases[] = {
        "", "-5s", "1.5s", "s", "5y", "5S", "5 sec", "5min", "5ms ", "1MiB",
        "18446744073709551616", "30500568904944w", NULL,
    };
    for (size_t i = 0; cases[i]; i++) {
        uint64_t v = 7;
        cr_assert(!cfg_parse_duration(cases[i], &v), "'%s' should be refused", cases[i]);
        cr_assert_eq(v, 7);
    }
}

/* ---- options (with a plugin's schema) and arguments (without) ----------------------- */

static const struct wr_option test_schema[] = {
    {"retention", WR_OPT_DURATION, false, "how long records are kept"},
    {"segment_bytes", WR_OPT_SIZE, false, "segment size"},
    {"fsync", WR_OPT_BOOL, false, "sync every write"},
    {"workers", WR_OPT_INT, false, "threads"},
    {"script", WR_OPT_STRING, true, "the Lua file"},
    {"limits", WR_OPT_TABLE, false, "nested settings"},
    {"brokers", WR_OPT_LIST, false, "peers"},
    {NULL, 0, false, NULL},
};

/* Loads a config whose first queue has the given options and checks them with the test
 * schema; returns the result and fills *out or err. */
static int queue_options(const char *options, struct wr_table **out, struct wr_error *err)
{
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "vhosts: [{name: /, queues: [{name: q, options: %s}]}]\n",
             options);
    struct wr_config *cfg = load_ok("opts.yaml", yaml);
    int rc = cfg_options_table(cfg, cfg->vhosts[0].queues[0].options, NULL, "testlog",
                               test_schema, out, err);
    wr_config_free(cfg);
    return rc;
}

static void expect_option_error(const char *options, const char *msg)
{
    struct wr_table *t = (struct wr_table *)1;
    struct wr_error err = {0};
    cr_assert_eq(queue_options(options, &t, &err), WR_EINVAL, "options %s", options);
    cr_assert_null(t);
    cr_assert_str_eq(err.msg, msg);
}

Test(config, options_table_converts_by_schema)
{
    struct wr_table *t = NULL;
    struct wr_error err = {0};
    int rc = queue_options("{retention: 7d, segment_bytes: 1GiB, fsync: true, workers: -3, "
                           "script: 42, limits: {a: 1, b: [x, 2.5]}, brokers: [a, 9]}",
                           &t, &err);
    cr_assert_eq(rc, WR_OK, "%s", err.msg);
    int64_t i;
    bool b;
    const char *s;
    size_t len;
    cr_assert(wr_table_get_int(t, "retention", &i));
    cr_assert_eq(i, 7LL * 86400 * 1000);
    cr_assert(wr_table_get_int(t, "segment_bytes", &i));
    cr_assert_eq(i, 1LL << 30);
    cr_assert(wr_table_get_bool(t, "fsync", &b) && b);
    cr_assert(wr_table_get_int(t, "workers", &i));
    cr_assert_eq(i, -3);
    cr_assert(wr_table_get_str(t, "script", &s, &len));
    cr_assert_eq(len, 2);
    cr_assert_eq(memcmp(s, "42", 2), 0, "a STRING option takes any scalar as text");

    const struct wr_value *v = wr_table_get(t, "limits");
    cr_assert_eq(v->type, WR_V_TABLE);
    cr_assert(wr_table_get_int(v->u.table, "a", &i) && i == 1);
    const struct wr_value *arr = wr_table_get(v->u.table, "b");
    cr_assert_eq(arr->type, WR_V_ARRAY);
    cr_assert_eq(arr->u.array->count, 2);
    cr_assert_eq(arr->u.array->items[0].type, WR_V_STR);
    cr_assert_eq(arr->u.array->items[1].type, WR_V_DOUBLE);
    cr_assert_float_eq(arr->u.array->items[1].u.d, 2.5, 1e-12);

    v = wr_table_get(t, "brokers");
    cr_assert_eq(v->type, WR_V_ARRAY);
    cr_assert_eq(v->u.array->count, 2);
    cr_assert_eq(v->u.array->items[1].type, WR_V_I64);
    cr_assert_eq(v->u.array->items[1].u.i, 9);
    wr_table_free(t);
}

Test(config, options_table_errors)
{
    expect_option_error("{script: s, retention: 5y}",
                        "opts.yaml:1:71: vhosts[0].queues[0].options.retention: expected a "
                        "duration such as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, "
                        "w), got '5y'");
    expect_option_error("{script: s, retention: -1s}",
                        "opts.yaml:1:71: vhosts[0].queues[0].options.retention: expected a "
                        "duration such as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, d, "
                        "w), got '-1s'");
    expect_option_error("{script: s, segment_bytes: big}",
                        "opts.yaml:1:75: vhosts[0].queues[0].options.segment_bytes: expected a "
                        "size such as 64MiB (bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, "
                        "TiB), got 'big'");
    expect_option_error("{script: s, retension: 7d}",
                        "opts.yaml:1:60: vhosts[0].queues[0].options.retension: unknown option "
                        "for plugin 'testlog' (expected one of: retention, segment_bytes, fsync, "
                        "workers, script, limits, brokers)");
    expect_option_error("{script: s, fsync: 1}",
                        "opts.yaml:1:67: vhosts[0].queues[0].options.fsync: expected true or "
                        "false, got '1'");
    expect_option_error("{script: s, workers: 1.5}",
                        "opts.yaml:1:69: vhosts[0].queues[0].options.workers: expected an "
                        "integer, got '1.5'");
    expect_option_error("{script: [a]}",
                        "opts.yaml:1:57: vhosts[0].queues[0].options.script: expected a string, "
                        "got a list");
    expect_option_error("{script: s, limits: [a]}",
                        "opts.yaml:1:68: vhosts[0].queues[0].options.limits: expected a map, got "
                        "a list");
    expect_option_error("{script: s, brokers: a}",
                        "opts.yaml:1:69: vhosts[0].queues[0].options.brokers: expected a list, "
                        "got 'a'");
    expect_option_error("{fsync: true}",
                        "opts.yaml:1:48: vhosts[0].queues[0].options: missing required option "
                        "'script' of plugin 'testlog' (a string: the Lua file)");
}

Test(config, options_table_absent_and_schemaless)
{
    struct wr_config *cfg = load_ok("opts.yaml",
                                    "listeners: [{transport: t, port: 1},\n"
                                    "            {transport: t, port: 2, options: {x: 1}}]\n");
    struct wr_table *t = NULL;
    struct wr_error err = {0};

    /* No options: an empty table, unless the schema requires one. */
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[0].options, NULL, "t", NULL, &t, &err),
                 WR_OK);
    cr_assert_eq(t->count, 0);
    wr_table_free(t);
    t = NULL;
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[0].options, NULL, "lua", test_schema, &t,
                                   &err),
                 WR_EINVAL);
    cr_assert_null(t);
    cr_assert_str_eq(err.msg, "opts.yaml: plugin 'lua' needs the option 'script' (a string: the "
                              "Lua file)");
    /* With the owning listener known, the error points at it. */
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[0].options, cfg->listeners[0].node, "lua",
                                   test_schema, &t, &err),
                 WR_EINVAL);
    cr_assert_str_eq(err.msg, "opts.yaml:1:13: listeners[0]: missing required option 'script' of "
                              "plugin 'lua' (a string: the Lua file)");

    /* A plugin that takes no options refuses any. */
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[1].options, NULL, "t", NULL, &t, &err),
                 WR_EINVAL);
    cr_assert_str_eq(err.msg, "opts.yaml:2:47: listeners[1].options.x: unknown option (plugin "
                              "'t' takes no options)");
    wr_config_free(cfg);
}

Test(config, options_any_row_takes_the_other_keys)
{
    static const struct wr_option any_schema[] = {
        {"script", WR_OPT_STRING, true, "the Lua file"},
        {"max_memory", WR_OPT_SIZE, false, "a cap"},
        {WR_OPTION_ANY, WR_OPT_TABLE, false, "passed on"},
        {NULL, 0, false, NULL},
    };
    struct wr_config *cfg = load_ok(
        "any.yaml", "listeners: [{transport: t, port: 1, options: {script: s.lua, max_memory: "
                    "1MiB, region: eu, weights: {a: 2}, hosts: [x, y], n: 3}}]\n");
    struct wr_table *t = NULL;
    struct wr_error err = {0};
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[0].options, NULL, "lua", any_schema, &t,
                                   &err),
                 WR_OK, "%s", err.msg);
    int64_t v = 0;
    cr_assert(wr_table_get_int(t, "max_memory", &v));
    cr_assert_eq(v, 1 << 20, "named rows keep their types");
    const struct wr_value *x = wr_table_get(t, "region");
    cr_assert(x && x->type == WR_V_STR && x->u.s.len == 2 && !memcmp(x->u.s.ptr, "eu", 2));
    x = wr_table_get(t, "weights");
    cr_assert(x && x->type == WR_V_TABLE, "a map becomes a table");
    x = wr_table_get(t, "hosts");
    cr_assert(x && x->type == WR_V_ARRAY, "a list becomes an array");
    cr_assert(wr_table_get_int(t, "n", &v) && v == 3);
    wr_table_free(t);
    t = NULL;
    /* The named rows are still checked. */
    wr_config_free(cfg);
    cfg = load_ok("any.yaml", "listeners: [{transport: t, port: 1, options: {script: [s], "
                              "region: eu}}]\n");
    cr_assert_eq(cfg_options_table(cfg, cfg->listeners[0].options, NULL, "lua", any_schema, &t,
                                   &err),
                 WR_EINVAL);
    cr_assert_str_eq(err.msg, "any.yaml:1:55: listeners[0].options.script: expected a string, "
                              "got a list");
    wr_config_free(cfg);
}

Test(config, args_table_converts_without_schema)
{
    struct wr_config *cfg = load_ok(
        "args.yaml",
        "vhosts:\n"
        "  - name: /\n"
        "    queues: [{name: q}]\n"
        "    bindings:\n"
        "      - exchange: amq.headers\n"
        "        queue: q\n"
        "        arguments: {x-match: any, n: 42, neg: -7, f: 1.5, e: 1e3, yes: true,\n"
        "                    no: false, q: \"42\", s: '3', nul: ~, t: {k: v}, l: [1, a],\n"
        "                    word: True}\n");
    struct wr_table *t = NULL;
    struct wr_error err = {0};
    cr_assert_eq(cfg_args_table(cfg, cfg->vhosts[0].bindings[0].arguments, &t, &err), WR_OK,
                 "%s", err.msg);
    const char *s;
    size_t len;
    int64_t i;
    bool b;
    cr_assert(wr_table_get_str(t, "x-match", &s, &len) && len == 3 && !memcmp(s, "any", 3));
    cr_assert(wr_table_get_int(t, "n", &i) && i == 42);
    cr_assert_eq(wr_table_get(t, "n")->type, WR_V_I64);
    cr_assert(wr_table_get_int(t, "neg", &i) && i == -7);
    cr_assert_eq(wr_table_get(t, "f")->type, WR_V_DOUBLE);
    cr_assert_float_eq(wr_table_get(t, "f")->u.d, 1.5, 1e-12);
    cr_assert_float_eq(wr_table_get(t, "e")->u.d, 1000.0, 1e-9);
    cr_assert(wr_table_get_bool(t, "yes", &b) && b);
    cr_assert(wr_table_get_bool(t, "no", &b) && !b);
    cr_assert_eq(wr_table_get(t, "q")->type, WR_V_STR, "quoted numbers stay strings");
    cr_assert_eq(wr_table_get(t, "s")->type, WR_V_STR);
    cr_assert_eq(wr_table_get(t, "nul")->type, WR_V_VOID);
    cr_assert_eq(wr_table_get(t, "t")->type, WR_V_TABLE);
    cr_assert(wr_table_get_str(wr_table_get(t, "t")->u.table, "k", &s, &len) && len == 1);
    cr_assert_eq(wr_table_get(t, "l")->type, WR_V_ARRAY);
    cr_assert_eq(wr_table_get(t, "l")->u.array->items[0].type, WR_V_I64);
    cr_assert_eq(wr_table_get(t, "word")->type, WR_V_STR, "only true/false are booleans");
    wr_table_free(t);

    /* No arguments: an empty table. */
    t = NULL;
    cr_assert_eq(cfg_args_table(cfg, NULL, &t, &err), WR_OK);
    cr_assert_eq(t->count, 0);
    wr_table_free(t);
    wr_config_free(cfg);
}

Test(config, args_table_integer_overflow)
{
    struct wr_config *cfg = load_ok("args.yaml",
                                    "vhosts:\n"
                                    "  - name: /\n"
                                    "    queues: [{name: q}]\n"
                                    "    bindings:\n"
                                    "      - {exchange: amq.headers, queue: q,\n"
                                    "         arguments: {big: 9223372036854775808}}\n");
    struct wr_table *t = NULL;
    struct wr_error err = {0};
    cr_assert_eq(cfg_args_table(cfg, cfg->vhosts[0].bindings[0].arguments, &t, &err),
                 WR_EINVAL);
    cr_assert_null(t);
    cr_assert_str_eq(err.msg, "args.yaml:6:27: vhosts[0].bindings[0].arguments.big: integer out "
                              "of range (quote it to pass a string)");
    wr_config_free(cfg);
}

Test(config, cfg_error_formats_position_and_path)
{
    struct wr_config *cfg = load_ok("pos.yaml", "vhosts:\n  - name: /\n    queues: [{name: q}]\n");
    struct wr_error err = {0};
    int rc = cfg_error(cfg, cfg->vhosts[0].queues[0].node, &err, "storage '%s' refused it", "x");
    cr_assert_eq(rc, WR_EINVAL);
    cr_assert_eq(err.code, WR_EINVAL);
    cr_assert_str_eq(err.msg, "pos.yaml:3:14: vhosts[0].queues[0]: storage 'x' refused it");
    cfg_error(cfg, NULL, &err, "no position");
    cr_assert_str_eq(err.msg, "pos.yaml: no position");
    wr_config_free(cfg);
}

Test(config, amqp_storage_per_vhost)
{
    struct wr_config *cfg = load_ok("s.yaml", "vhosts:\n"
                                              "  - name: /\n"
                                              "    amqp_storage: {durable: memory, stream: log}\n"
                                              "  - name: other\n");
    cr_assert_str_eq(cfg->vhosts[0].amqp_storage[WR_ROLE_DURABLE], "memory");
    cr_assert_null(cfg->vhosts[0].amqp_storage[WR_ROLE_TRANSIENT]);
    cr_assert_str_eq(cfg->vhosts[0].amqp_storage[WR_ROLE_STREAM], "log");
    for (int k = 0; k < WR_ROLE_COUNT; k++)
        cr_assert_null(cfg->vhosts[1].amqp_storage[k]);
    wr_config_free(cfg);
    expect_error("vhosts: [{name: /, amqp_storage: {lasting: queue}}]\n",
                 "broken.yaml:1:35: vhosts[0].amqp_storage.lasting: unknown key (expected one "
                 "of: durable, transient, stream)");
    expect_error("vhosts: [{name: /, amqp_storage: [queue]}]\n",
                 "broken.yaml:1:34: vhosts[0].amqp_storage: expected a map, got a list");
    expect_error("vhosts: [{name: /, amqp_storage: {durable: ''}}]\n",
                 "broken.yaml:1:44: vhosts[0].amqp_storage.durable: expected a name, got ''");
}
