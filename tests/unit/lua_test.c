/*
 * lua_test.c: the `lua` exchange type (lua/, docs/lua.md), loaded through a YAML config as a
 * user's would be, with scripts written by each test: what a script sees of a message, the
 * copy its changes make (and the original other destinations keep), the three match modes,
 * init and state across calls, every way out of the sandbox it must not find, the
 * instruction budget and the memory cap, failures (routed nowhere, counted, logged at most
 * once per 10 s, dead-lettered with x-script-error), start-up errors, and reload on SIGHUP.
 *
 * Each test runs in its own directory (Criterion forks a worker per test), so script paths
 * in configs are relative, as the broker's working directory makes them.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[64];
static struct wr_server *srv;
static struct wr_vhost *vh;
static int saved_stderr = -1;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void capture_stop(void)
{
    if (saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/warren-lua-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(chdir(dir), 0);
}

static void teardown(void)
{
    wr_server_free(srv);
    srv = NULL;
    capture_stop();
    cr_assert_eq(chdir("/"), 0);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(lua, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ------------------------------------------------------------------------ */

/* Writes a script, replacing the file by a rename as an editor saving it does. */
static void write_script(const char *name, const char *text)
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, name), 0);
}

/* Builds a server from a config whose vhost "/" has the given body; returns its result. */
static int start(const char *vhost_body, struct wr_error *err)
{
    char *text = NULL;
    cr_assert(asprintf(&text,
                       "broker:\n"
                       "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                       "vhosts:\n"
                       "  - name: /\n"
                       "%s",
                       vhost_body) > 0);
    struct wr_config *cfg = NULL;
    int rc = wr_config_load_string("lua.yaml", text, strlen(text), &cfg, err);
    free(text);
    cr_assert_eq(rc, WR_OK, "%s", err->msg);
    struct wr_server_opts opts = {.no_listeners = true};
    rc = wr_server_new(cfg, &opts, &srv, err);
    wr_config_free(cfg);
    if (rc == WR_OK)
        vh = wr_vhost_find(wr_server_broker(srv), "/");
    return rc;
}

static void start_ok(const char *vhost_body)
{
    struct wr_error err = {0};
    cr_assert_eq(start(vhost_body, &err), WR_OK, "%s", err.msg);
}

/* The error message of a start-up that must fail. */
static const char *start_fails(const char *vhost_body)
{
    static struct wr_error err;
    memset(&err, 0, sizeof err);
    cr_assert_neq(start(vhost_body, &err), WR_OK, "started");
    cr_assert_null(srv);
    return err.msg;
}

/* The error message of a start-up with one lua exchange, "smart", of these options. */
static const char *smart_fails(const char *options)
{
    char body[512];
    snprintf(body, sizeof body, "    exchanges: [{name: smart, type: lua, options: {%s}}]\n",
             options);
    return start_fails(body);
}

static struct wr_exchange *ex(const char *name)
{
    struct wr_exchange *x = wr_exchange_find(vh, name);
    cr_assert_not_null(x, "no exchange %s", name);
    return x;
}

static const char *routed(const char *exchange, const char *rk, const struct wr_table *headers)
{
    return tu_routed(ex(exchange), rk, headers);
}

static void add(struct wr_table *t, const char *name, struct wr_value v)
{
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
}

static void push(struct wr_array *a, struct wr_value v)
{
    cr_assert_eq(wr_array_add(a, &v), WR_OK);
}

static struct wr_table *one_header(const char *name, const char *value)
{
    struct wr_table *t = wr_table_new();
    add(t, name, wr_value_str(value));
    return t;
}

static const char *routed_region(const char *exchange, const char *region, const char *rk)
{
    struct wr_table *h = one_header("region", region);
    const char *out = routed(exchange, rk, h);
    wr_table_free(h);
    return out;
}

/* Publishes a message with that routing key and body; returns the queues that stored it. */
static int publish(const char *exchange, const char *rk, const char *body,
                   const struct wr_table *headers)
{
    struct wr_msg *msg = tu_msg(rk, body, headers);
    int n = wr_publish(ex(exchange), msg, NULL, NULL);
    wr_msg_unref(msg);
    return n;
}

/* The next message of queue q (the caller unrefs it), or NULL. */
static struct wr_msg *take(const char *q)
{
    struct wr_queue *queue = wr_queue_find(vh, q);
    cr_assert_not_null(queue, "no queue %s", q);
    struct wr_delivery d;
    return wr_queue_get(queue, true, &d, NULL) == WR_OK ? d.msg : NULL;
}

/* A string header of msg as a C string (valid until the next call), or NULL. */
static const char *header(const struct wr_msg *msg, const char *name)
{
    static char out[1024];
    const char *p;
    size_t len;
    if (!wr_table_get_str(msg->headers, name, &p, &len))
        return NULL;
    cr_assert_lt(len, sizeof out);
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

static size_t depth(const char *q) { return (size_t)wr_queue_depth(wr_queue_find(vh, q)); }

/* The broker's log (stderr) goes to log.txt from here until the test ends. */
static void capture_start(void)
{
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open("log.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(saved_stderr >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* What was logged so far (malloc'd). */
static char *captured(void)
{
    fflush(stderr);
    char *text = tu_read_file("log.txt");
    cr_assert_not_null(text);
    return text;
}

static int count_of(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

static bool log_has(void *what)
{
    char *text = captured();
    bool found = strstr(text, what) != NULL;
    free(text);
    return found;
}

/* ---- what a script sees ------------------------------------------------------------- */

static const char fields_script[] =
    "local function show(v)\n"
    "  if type(v) ~= 'table' and type(v) ~= 'userdata' then\n"
    "    return (math.type(v) or type(v)) .. ':' .. tostring(v)\n"
    "  end\n"
    "  local keys = {}\n"
    "  for k in pairs(v) do keys[#keys + 1] = k end\n"
    "  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)\n"
    "  local parts = {}\n"
    "  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. '=' .. show(v[k]) end\n"
    "  return '{' .. table.concat(parts, ',') .. '}'\n"
    "end\n"
    "function route(msg)\n"
    "  local p = msg.properties\n"
    "  local fields = table.concat({msg.routing_key, msg.exchange, tostring(msg.key),\n"
    "    msg.body, tostring(msg.size), p.content_type, p.app_id, tostring(p.delivery_mode),\n"
    "    tostring(p.priority), tostring(p.timestamp), tostring(p.reply_to)}, '|')\n"
    "  local h = msg.headers\n"
    "  local lookups = table.concat({tostring(h['x-tier']), tostring(h.v),\n"
    "    tostring(h.missing), tostring(h[1]), tostring(msg.body == msg.body),\n"
    "    tostring(msg.nothing)}, '|')\n"
    "  local headers = show(h)\n"
    "  msg:set_header('fields', fields)\n"
    "  msg:set_header('headers', headers)\n"
    "  msg:set_header('lookups', lookups)\n"
    "  return 'a'\n"
    "end\n";

Test(lua, every_field_and_the_header_types)
{
    write_script("fields.lua", fields_script);
    start_ok("    exchanges: [{name: smart, type: lua, options: {script: fields.lua}}]\n"
             "    queues: [{name: a}]\n");
    struct wr_table *h = wr_table_new(), *nested = wr_table_new();
    struct wr_array *arr = wr_array_new();
    add(nested, "k", wr_value_str("v"));
    add(nested, "n", wr_value_i64(1));
    push(arr, wr_value_i64(1));
    push(arr, wr_value_str("two"));
    const struct {
        const char *name;
        struct wr_value v;
    } fields[] = {
        {"s", wr_value_str("hello")},
        {"x", {.type = WR_V_BYTES, .u.s = {"raw", 3}}},
        {"x-tier", wr_value_str("gold")},
        {"i8", {.type = WR_V_I8, .u.i = -5}},
        {"u32", {.type = WR_V_U32, .u.i = 4000000000}},
        {"i64", {.type = WR_V_I64, .u.i = -9000000000}},
        {"ts", {.type = WR_V_TIMESTAMP, .u.i = 1700000000}},
        {"f", {.type = WR_V_FLOAT, .u.d = 1.5}},
        {"d", {.type = WR_V_DOUBLE, .u.d = 2.25}},
        {"dec", {.type = WR_V_DECIMAL, .u.dec = {2, 314}}},
        {"b", wr_value_bool(true)},
        {"v", {.type = WR_V_VOID}},
        {"t", {.type = WR_V_TABLE, .u.table = nested}},
        {"a", {.type = WR_V_ARRAY, .u.array = arr}},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        add(h, fields[i].name, fields[i].v);
    struct wr_props props = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP,
        .content_type = wr_str_c("text/plain"),
        .app_id = wr_str_c("app"),
        .delivery_mode = 2,
        .priority = 5,
        .timestamp = 1700000000,
    };
    struct wr_msg_init init = {
        .exchange = wr_str_c("smart"),
        .routing_key = wr_str_c("rk.1"),
        .key = wr_str_c("k1"),
        .headers = h,
        .props = &props,
        .body_ptr = "hello",
        .body_len = 5,
    };
    struct wr_msg *msg;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    cr_assert_eq(wr_publish(ex("smart"), msg, NULL, NULL), 1);
    wr_msg_unref(msg);
    wr_table_free(h);
    wr_table_free(nested);
    wr_array_free(arr);

    struct wr_msg *got = take("a");
    cr_assert_not_null(got);
    cr_assert_str_eq(header(got, "fields"),
                     "rk.1|smart|k1|hello|5|text/plain|app|2|5|1700000000|nil");
    cr_assert_str_eq(header(got, "headers"),
                     "{a={1=integer:1,2=string:two},b=boolean:true,d=float:2.25,dec=float:3.14,"
                     "f=float:1.5,i64=integer:-9000000000,i8=integer:-5,s=string:hello,"
                     "t={k=string:v,n=integer:1},ts=integer:1700000000,u32=integer:4000000000,"
                     "x=string:raw,x-tier=string:gold}");
    cr_assert_str_eq(header(got, "lookups"), "gold|nil|nil|nil|true|nil");
    wr_msg_unref(got);
}

static const char rewrite_script[] =
    "function route(msg)\n"
    "  msg:set_header('region', 'eu')\n"
    "  msg:set_header('n', 7)\n"
    "  msg:set_header('ratio', 0.5)\n"
    "  msg:set_header('vip', true)\n"
    "  msg:set_header('drop', nil)\n"
    "  msg:set_routing_key('rewritten')\n"
    "  assert(msg.headers.region == 'eu' and msg.headers.drop == nil)\n"
    "  assert(msg.routing_key == 'rewritten')\n"
    "  return 'changed'\n"
    "end\n";

Test(lua, changes_reach_its_destinations_and_others_get_the_original)
{
    write_script("rewrite.lua", rewrite_script);
    start_ok("    exchanges:\n"
             "      - {name: fan, type: fanout}\n"
             "      - {name: smart, type: lua, options: {script: rewrite.lua}}\n"
             "    queues: [{name: orig}, {name: changed}]\n"
             "    bindings:\n"
             "      - {exchange: fan, queue: orig, key: \"\"}\n"
             "      - {exchange: fan, to_exchange: smart, key: \"\"}\n");
    struct wr_table *h = one_header("drop", "x");
    add(h, "keep", wr_value_str("y"));
    struct wr_msg *sent = tu_msg("orig.key", "payload", h);
    wr_table_free(h);
    cr_assert_eq(wr_publish(ex("fan"), sent, NULL, NULL), 2);

    struct wr_msg *orig = take("orig"), *changed = take("changed");
    cr_assert(orig && changed);
    cr_assert_eq(orig, sent, "the fanout's own destination stores the message published");
    cr_assert_str_eq(sent->routing_key.ptr, "orig.key");
    cr_assert_str_eq(header(sent, "drop"), "x");
    cr_assert_null(wr_table_get(sent->headers, "region"));

    cr_assert_str_eq(changed->routing_key.ptr, "rewritten");
    cr_assert_null(wr_table_get(changed->headers, "drop"));
    cr_assert_str_eq(header(changed, "keep"), "y");
    cr_assert_str_eq(header(changed, "region"), "eu");
    int64_t n = 0;
    cr_assert(wr_table_get_int(changed->headers, "n", &n) && n == 7);
    const struct wr_value *ratio = wr_table_get(changed->headers, "ratio");
    cr_assert(ratio && ratio->type == WR_V_DOUBLE && ratio->u.d == 0.5);
    bool vip = false;
    cr_assert(wr_table_get_bool(changed->headers, "vip", &vip) && vip);
    cr_assert_eq(changed->body.buf, sent->body.buf, "the copy shares the body's buffer");
    cr_assert_eq(changed->body.len, 7);
    wr_msg_unref(orig);
    wr_msg_unref(changed);
    wr_msg_unref(sent);
}

/* ---- match modes -------------------------------------------------------------------- */

Test(lua, queues_direct_and_topic_matching)
{
    write_script("names.lua", "function route(msg)\n"
                              "  if msg.routing_key == 'one' then return 'a' end\n"
                              "  if msg.routing_key == 'none' then return {} end\n"
                              "  return {'a', 'nope', 'c', 'a'}\n"
                              "end\n");
    write_script("keys.lua",
                 "function route(msg) return {msg.headers.region .. '.' .. msg.routing_key} end\n");
    start_ok("    exchanges:\n"
             "      - {name: byq, type: lua, options: {script: names.lua}}\n"
             "      - {name: bydirect, type: lua, options: {script: keys.lua, match: direct}}\n"
             "      - {name: bytopic, type: lua, options: {script: keys.lua, match: topic}}\n"
             "    queues: [{name: a}, {name: b}, {name: c}]\n"
             "    bindings:\n"
             "      - {exchange: bydirect, queue: a, key: eu.orders}\n"
             "      - {exchange: bydirect, queue: b, key: us.orders}\n"
             "      - {exchange: bytopic, queue: a, key: \"eu.*\"}\n"
             "      - {exchange: bytopic, queue: b, key: \"#.urgent\"}\n");
    cr_assert_eq(wr_exchange_binding_count(ex("byq")), 0);
    cr_assert_str_eq(routed("byq", "one", NULL), "a");
    cr_assert_str_eq(routed("byq", "many", NULL), "a,c", "a name of no queue is no destination");
    cr_assert_str_eq(routed("byq", "none", NULL), "");

    cr_assert_str_eq(routed_region("bydirect", "eu", "orders"), "a");
    cr_assert_str_eq(routed_region("bydirect", "us", "orders"), "b");
    cr_assert_str_eq(routed_region("bydirect", "eu", "other"), "");

    cr_assert_str_eq(routed_region("bytopic", "eu", "orders"), "a");
    cr_assert_str_eq(routed_region("bytopic", "us", "urgent"), "b");
    cr_assert_str_eq(routed_region("bytopic", "eu", "urgent"), "a,b");
    cr_assert_str_eq(routed_region("bytopic", "asia", "orders"), "");

    tu_unbind(ex("bydirect"), wr_queue_find(vh, "a"), "eu.orders", NULL);
    cr_assert_str_eq(routed_region("bydirect", "eu", "orders"), "");
    tu_bind(ex("bytopic"), wr_queue_find(vh, "c"), "asia.#", NULL);
    cr_assert_str_eq(routed_region("bytopic", "asia", "orders"), "c");
}

/* ---- init and state ----------------------------------------------------------------- */

static const char round_robin_script[] =
    "local targets, n\n"
    "function init(config)\n"
    "  assert(config.script == 'rr.lua' and config.label == 'spread', 'config')\n"
    "  targets, n = config.targets, 0\n"
    "end\n"
    "function route(msg)\n"
    "  n = n % #targets + 1\n"
    "  return targets[n]\n"
    "end\n";

Test(lua, init_gets_the_options_and_state_persists_across_calls)
{
    write_script("rr.lua", round_robin_script);
    start_ok("    exchanges:\n"
             "      - {name: rr, type: lua,\n"
             "         options: {script: rr.lua, label: spread, targets: [a, b, c]}}\n"
             "    queues: [{name: a}, {name: b}, {name: c}]\n");
    const char *expect[] = {"a", "b", "c", "a", "b"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(routed("rr", "k", NULL), expect[i]);
}

Test(lua, declare_arguments_work_with_or_without_x_prefix)
{
    write_script("rr.lua", round_robin_script);
    start_ok("    queues: [{name: a}, {name: b}, {name: c}]\n");
    struct wr_table *args = wr_table_new();
    struct wr_array *targets = wr_array_new();
    push(targets, wr_value_str("c"));
    push(targets, wr_value_str("b"));
    add(args, "x-script", wr_value_str("rr.lua"));
    add(args, "x-max_instructions", wr_value_i64(5000));
    add(args, "label", wr_value_str("spread"));
    add(args, "x-targets", (struct wr_value){.type = WR_V_ARRAY, .u.array = targets});
    struct wr_exchange_decl decl = {"declared", "lua", false, false, false, args};
    struct wr_error err = {0};
    cr_assert_eq(wr_exchange_declare(vh, &decl, NULL, &err), WR_OK, "%s", err.msg);
    cr_assert_str_eq(routed("declared", "k", NULL), "c");
    cr_assert_str_eq(routed("declared", "k", NULL), "b");
    cr_assert_str_eq(routed("declared", "k", NULL), "c");

    struct wr_table *bad = one_header("x-script", "rr.lua");
    add(bad, "x-match", wr_value_str("fuzzy"));
    decl = (struct wr_exchange_decl){"bad", "lua", false, false, false, bad};
    cr_assert_eq(wr_exchange_declare(vh, &decl, NULL, &err), WR_EINVAL);
    cr_assert(strstr(err.msg, "option 'match' must be queues, direct or topic"), "%s", err.msg);
    cr_assert_null(wr_exchange_find(vh, "bad"));
    wr_table_free(bad);
    wr_table_free(args);
    wr_array_free(targets);
}

static const char tools_script[] =
    "function route(msg)\n"
    "  print('hello', 1, nil)\n"
    "  local doc = json.decode(msg.body)\n"
    "  assert(doc.missing == nil and doc.gone == json.null)\n"
    "  local f = load('counter = (counter or 0) + 1 return counter')\n"
    "  assert(f() == 1 and counter == 1)\n"
    "  assert(os.time() > 0 and os.clock() >= 0 and _G.counter == 1)\n"
    "  return doc.queue\n"
    "end\n";

Test(lua, print_json_load_and_os_time)
{
    write_script("tools.lua", tools_script);
    start_ok("    exchanges: [{name: smart, type: lua, options: {script: tools.lua}}]\n"
             "    queues: [{name: a}]\n");
    capture_start();
    cr_assert_eq(publish("smart", "k", "{\"queue\": \"a\", \"gone\": null}", NULL), 1);
    char *log = captured();
    cr_assert(strstr(log, "exchange 'smart' in vhost '/': hello 1 nil"), "%s", log);
    free(log);
}

/* ---- the sandbox -------------------------------------------------------------------- */

static const char escape_script[] =
    "local attempts = {\n"
    "  control = function() return true end,\n"
    "  io = function() return io.open('/etc/passwd') end,\n"
    "  os_execute = function() return os.execute('true') end,\n"
    "  os_getenv = function() return os.getenv('HOME') end,\n"
    "  os_exit = function() os.exit(3) end,\n"
    "  os_remove = function() return os.remove('log.txt') end,\n"
    "  package = function() return package.loaded end,\n"
    "  require = function() return require('io') end,\n"
    "  debug = function() return debug.getregistry() end,\n"
    "  dofile = function() return dofile('/etc/passwd') end,\n"
    "  loadfile = function() return loadfile('/etc/passwd') end,\n"
    "  string_dump = function() return string.dump(function() end) end,\n"
    "  dump_via_metatable = function() return getmetatable('').__index.dump end,\n"
    "  dump_via_method = function() return ('').dump end,\n"
    "  load_bytecode = function() return load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n', 'x', 'b') end,\n"
    "  load_io = function() return load('return io')() end,\n"
    "  load_env = function() return load('return io', 'x', 't', _G)() end,\n"
    "  collectgarbage = function() return collectgarbage('count') end,\n"
    "  coroutine = function() return coroutine.create(print) end,\n"
    "  globals_metatable = function() return getmetatable(_G).__index.io end,\n"
    "  set_globals_metatable = function() setmetatable(_G, {}) return true end,\n"
    "  rawset_msg = function(msg) rawset(msg, 'routing_key', 'x') return true end,\n"
    "  write_msg = function(msg) msg.routing_key = 'x' return true end,\n"
    "  write_headers = function(msg) msg.headers.x = 1 return true end,\n"
    "  msg_metatable = function(msg) return getmetatable(msg).__index end,\n"
    "  headers_metatable = function(msg) return getmetatable(msg.headers).__index end,\n"
    "  method_on_other = function(msg) msg.set_header({}, 'a', 'b') return true end,\n"
    "  iterator_on_other = function(msg) return pairs(msg.headers)({}) end,\n"
    "}\n"
    "function route(msg)\n"
    "  local ok, got = pcall(attempts[msg.routing_key], msg)\n"
    "  if ok and got then return 'escaped' end\n"
    "  return 'blocked'\n"
    "end\n";

Test(lua, no_way_out_of_the_sandbox)
{
    write_script("escape.lua", escape_script);
    start_ok("    exchanges: [{name: smart, type: lua, options: {script: escape.lua}}]\n"
             "    queues: [{name: escaped}, {name: blocked}]\n");
    cr_assert_str_eq(routed("smart", "control", NULL), "escaped");
    static const char *const attempts[] = {
        "io", "os_execute", "os_getenv", "os_exit", "os_remove", "package", "require",
        "debug", "dofile", "loadfile", "string_dump", "dump_via_metatable", "dump_via_method",
        "load_bytecode", "load_io", "load_env", "collectgarbage", "coroutine",
        "globals_metatable", "set_globals_metatable", "rawset_msg", "write_msg",
        "write_headers", "msg_metatable", "headers_metatable", "method_on_other",
        "iterator_on_other",
    };
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++)
        cr_assert_str_eq(routed("smart", attempts[i], NULL), "blocked", "%s", attempts[i]);
}

Test(lua, a_bytecode_file_is_refused)
{
    FILE *f = fopen("compiled.lua", "wb");
    cr_assert_not_null(f);
    fwrite("\x1bLuaT\0\x19\x93\r\n\x1a\n", 1, 12, f);
    fclose(f);
    const char *msg = smart_fails("script: compiled.lua");
    cr_assert(strstr(msg, "attempt to load a binary chunk (mode is 't')"), "%s", msg);
}

/* ---- limits ------------------------------------------------------------------------- */

Test(lua, an_endless_loop_costs_one_message)
{
    write_script("spin.lua", "function route(msg)\n"
                             "  local k = msg.routing_key\n"
                             "  if k == 'spin' then while true do end end\n"
                             "  if k == 'catch' then\n"
                             "    for i = 1, 100 do pcall(function() while true do end end) end\n"
                             "  end\n"
                             "  if k == 'work' then for i = 1, 1000 do end end\n"
                             "  return 'a'\n"
                             "end\n");
    start_ok("    exchanges:\n"
             "      - {name: smart, type: lua,\n"
             "         options: {script: spin.lua, max_instructions: 20000}}\n"
             "    queues: [{name: a}]\n");
    cr_assert_str_eq(routed("smart", "spin", NULL), "");
    cr_assert_str_eq(routed("smart", "next", NULL), "a");
    cr_assert_str_eq(routed("smart", "catch", NULL), "", "a pcall in the script cannot keep it");
    cr_assert_str_eq(routed("smart", "work", NULL), "a", "work within the budget is fine");
}

Test(lua, the_memory_cap_costs_one_message)
{
    write_script("grow.lua",
                 "function route(msg)\n"
                 "  local k = msg.routing_key\n"
                 "  if k == 'grow' then local t = {} while true do t[#t + 1] = {} end end\n"
                 "  if k == 'rep' then return string.rep('x', 1 << 30) end\n"
                 "  if k == 'edits' then\n"
                 "    local big = string.rep('x', 100000)\n"
                 "    for i = 1, 1000 do msg:set_header('h' .. i, big) end\n"
                 "  end\n"
                 "  return 'a'\n"
                 "end\n");
    start_ok("    exchanges:\n"
             "      - {name: smart, type: lua, options: {script: grow.lua, max_memory: 1MiB}}\n"
             "    queues: [{name: a}]\n");
    cr_assert_str_eq(routed("smart", "grow", NULL), "");
    cr_assert_str_eq(routed("smart", "next", NULL), "a");
    cr_assert_str_eq(routed("smart", "rep", NULL), "");
    cr_assert_str_eq(routed("smart", "edits", NULL), "");
    cr_assert_str_eq(routed("smart", "next", NULL), "a");
}

/* ---- failures ----------------------------------------------------------------------- */

static const char fail_script[] =
    "function route(msg)\n"
    "  local k = msg.routing_key\n"
    "  if k == 'error' then error('boom') end\n"
    "  if k == 'number' then return 42 end\n"
    "  if k == 'spin' then while true do end end\n"
    "  if k == 'grow' then local t = {} while true do t[#t + 1] = {} end end\n"
    "  if k == 'mixed' then return {'a', 5} end\n"
    "  if k == 'bool' then return true end\n"
    "  if k == 'bad_arg' then return string.rep() end\n"
    "  return 'a'\n"
    "end\n";

Test(lua, failures_are_counted_and_logged_once_per_interval, .timeout = 60)
{
    write_script("fail.lua", fail_script);
    start_ok("    exchanges: [{name: smart, type: lua, options: {script: fail.lua}}]\n"
             "    queues: [{name: a}]\n");
    capture_start();
    static const char *const keys[] = {"error", "error", "error", "number", "mixed", "bool"};
    for (size_t i = 0; i < 6; i++)
        cr_assert_eq(publish("smart", keys[i], NULL, NULL), 0, "%s routed", keys[i]);
    cr_assert_eq(depth("a"), 0, "{'a', 5} is a wrong type: nothing of it is routed");
    char *log = captured();
    cr_assert_eq(count_of(log, "route failure"), 1, "%s", log);
    cr_assert(strstr(log, "exchange 'smart' in vhost '/': 1 route failure since the last "
                          "warning; the last: fail.lua:3: boom"),
              "%s", log);
    free(log);
    /* The other five are reported when the interval is over, with the last error. */
    cr_assert(tu_wait(wr_server_loop(srv), log_has, "5 route failures", 15000));
    log = captured();
    cr_assert(strstr(log, "5 route failures since the last warning; the last: fail.lua:1: "
                          "route returned a boolean: expected a string, a list of strings or "
                          "nil"),
              "%s", log);
    free(log);
    cr_assert_eq(publish("smart", "fine", NULL, NULL), 1, "the exchange still routes");
}

/* The dead letter of a message routed with key k, as x-script-error. */
static const char *dead_letter_error(const char *k)
{
    cr_assert_eq(publish("smart", k, "body", NULL), 0);
    cr_assert_eq(depth("dead"), 0, "dead-lettered inside routing");
    tu_drain(wr_server_loop(srv), 1000);
    struct wr_msg *m = take("dead");
    cr_assert_not_null(m, "%s was not dead-lettered", k);
    cr_assert_str_eq(m->routing_key.ptr, k);
    cr_assert_eq(m->body.len, 4);
    const char *error = header(m, "x-script-error");
    cr_assert_not_null(error);
    wr_msg_unref(m);
    return error;
}

Test(lua, dead_letters_carry_the_error)
{
    write_script("fail.lua", fail_script);
    start_ok("    exchanges:\n"
             "      - {name: smart, type: lua, options: {script: fail.lua,\n"
             "         dead_letter_exchange: dlx, max_memory: 1MiB, max_instructions: 100000}}\n"
             "      - {name: dlx, type: fanout}\n"
             "    queues: [{name: a}, {name: dead}]\n"
             "    bindings: [{exchange: dlx, queue: dead, key: \"\"}]\n");
    cr_assert_str_eq(dead_letter_error("error"), "fail.lua:3: boom");
    cr_assert_str_eq(dead_letter_error("number"), "fail.lua:1: route returned a number: "
                                                  "expected a string, a list of strings or nil");
    cr_assert_str_eq(dead_letter_error("mixed"),
                     "fail.lua:1: route returned a table holding a number at [2]: expected a "
                     "string, a list of strings or nil");
    cr_assert_str_eq(dead_letter_error("spin"),
                     "fail.lua:5: instruction budget of 100000 exhausted (max_instructions)");
    cr_assert_str_eq(dead_letter_error("grow"), "fail.lua: out of memory (max_memory 1048576 "
                                                "bytes)");
    const char *bad_arg = dead_letter_error("bad_arg");
    cr_assert(strstr(bad_arg, "fail.lua:9: bad argument #1 to '") && strstr(bad_arg, "rep"), "%s",
              bad_arg);
    cr_assert_eq(publish("smart", "fine", NULL, NULL), 1);
    tu_drain(wr_server_loop(srv), 1000);
    cr_assert_eq(depth("dead"), 0);
}

Test(lua, a_dead_letter_failing_again_is_not_sent_round)
{
    write_script("fail.lua", fail_script);
    start_ok("    exchanges:\n"
             "      - {name: smart, type: lua,\n"
             "         options: {script: fail.lua, dead_letter_exchange: smart}}\n"
             "      - {name: lost, type: lua,\n"
             "         options: {script: fail.lua, dead_letter_exchange: nowhere}}\n"
             "    queues: [{name: a}]\n");
    capture_start();
    cr_assert_eq(publish("smart", "error", NULL, NULL), 0);
    cr_assert_eq(publish("lost", "error", NULL, NULL), 0);
    tu_drain(wr_server_loop(srv), 1000);
    cr_assert_eq(depth("a"), 0);
    char *log = captured();
    cr_assert(strstr(log, "dead_letter_exchange 'nowhere' does not exist"), "%s", log);
    free(log);
}

/* ---- start-up ----------------------------------------------------------------------- */

Test(lua, a_script_that_does_not_load_stops_start_up)
{
    write_script("syntax.lua", "function route(msg)\n  return {\nend\n");
    const char *msg = smart_fails("script: syntax.lua");
    cr_assert(strstr(msg, "syntax.lua:3: unexpected symbol near 'end'"), "%s", msg);

    write_script("init.lua", "function route(msg) end\n"
                             "function init(config) error('no region map') end\n");
    msg = smart_fails("script: init.lua");
    cr_assert(strstr(msg, "init.lua:2: no region map"), "%s", msg);

    write_script("noroute.lua", "x = 1\n");
    msg = smart_fails("script: noroute.lua");
    cr_assert(strstr(msg, "noroute.lua: defines no function route(msg)"), "%s", msg);

    write_script("slowinit.lua", "function route(msg) end\n"
                                 "function init() while true do end end\n");
    msg = smart_fails("script: slowinit.lua");
    cr_assert(strstr(msg, "slowinit.lua:2: instruction budget of 1000000 exhausted"), "%s", msg);

    msg = smart_fails("script: missing.lua");
    cr_assert(strstr(msg, "cannot open missing.lua: No such file or directory"), "%s", msg);
}

Test(lua, errors_name_a_long_path_whole)
{
    const char *deep = "a-directory-with-a-rather-long-name/and-one-more-below-it-too";
    char path[128], options[160];
    cr_assert_eq(mkdir("a-directory-with-a-rather-long-name", 0755), 0);
    cr_assert_eq(mkdir(deep, 0755), 0);
    snprintf(path, sizeof path, "%s/init.lua", deep);
    write_script(path, "function route(msg) end\n"
                       "function init(config) error('no region map') end\n");
    snprintf(options, sizeof options, "script: %s", path);
    const char *msg = smart_fails(options);
    char want[192];
    snprintf(want, sizeof want, "%s:2: no region map", path);
    cr_assert(strstr(msg, want), "%s", msg);
}

Test(lua, bad_options_stop_start_up)
{
    write_script("ok.lua", "function route(msg) end\n");
    const char *msg = smart_fails("");
    cr_assert(strstr(msg, "missing required option 'script'"), "%s", msg);
    msg = smart_fails("script: ok.lua, match: fuzzy");
    cr_assert(strstr(msg, "option 'match' must be queues, direct or topic"), "%s", msg);
    msg = smart_fails("script: ok.lua, max_instructions: 10");
    cr_assert(strstr(msg, "option 'max_instructions' must be from 1000"), "%s", msg);
    msg = smart_fails("script: ok.lua, max_memory: 1KiB");
    cr_assert(strstr(msg, "option 'max_memory' must be from 65536"), "%s", msg);
}

/* ---- reload ------------------------------------------------------------------------- */

static bool hup_seen;

/* Registered after the exchange, so it runs after the exchange has handled the signal. */
static void on_hup(struct wr_loop *lp, int signo, void *data)
{
    (void)lp, (void)signo, (void)data;
    hup_seen = true;
}

static bool hup_handled(void *data)
{
    (void)data;
    return hup_seen;
}

static void hup(void)
{
    hup_seen = false;
    cr_assert_eq(raise(SIGHUP), 0);
    cr_assert(tu_wait(wr_server_loop(srv), hup_handled, NULL, 5000), "SIGHUP not handled");
}

Test(lua, sighup_reloads_a_changed_script_and_keeps_the_old_on_errors)
{
    write_script("v.lua", "function route(msg) return 'a' end\n");
    start_ok("    exchanges: [{name: smart, type: lua, options: {script: v.lua}}]\n"
             "    queues: [{name: a}, {name: b}]\n");
    cr_assert_eq(wr_loop_signal_add(wr_server_loop(srv), SIGHUP, on_hup, NULL, NULL), WR_OK);
    capture_start();
    cr_assert_str_eq(routed("smart", "k", NULL), "a");

    hup();
    char *log = captured();
    cr_assert_null(strstr(log, "reload"), "an unchanged script is not reloaded: %s", log);
    free(log);

    write_script("v.lua", "local n = 0\n"
                          "function init() n = 10 end\n"
                          "function route(msg) n = n + 1 return n == 11 and 'b' or 'a' end\n");
    hup();
    cr_assert_str_eq(routed("smart", "k", NULL), "b", "the new script runs, its init first");
    cr_assert_str_eq(routed("smart", "k", NULL), "a");
    cr_assert(log_has("exchange 'smart' in vhost '/': reloaded v.lua"));

    write_script("v.lua", "function route(msg) return 'b'\n");
    hup();
    log = captured();
    cr_assert(strstr(log, "reload failed, the running script stays: v.lua:2: 'end' expected"),
              "%s", log);
    free(log);
    cr_assert_str_eq(routed("smart", "k", NULL), "a", "the old state, with its globals");

    write_script("v.lua", "function route(msg) return 'b' end\n"
                          "function init() error('not now') end\n");
    hup();
    cr_assert(log_has("reload failed, the running script stays: v.lua:2: not now"));
    cr_assert_str_eq(routed("smart", "k", NULL), "a");

    write_script("v.lua", "function route(msg) return 'b' end\n");
    hup();
    cr_assert_str_eq(routed("smart", "k", NULL), "b");
    wr_loop_signal_del(wr_server_loop(srv), SIGHUP, on_hup, NULL);
}

Test(lua, only_users_allowed_scripts_may_declare_lua_exchanges)
{
    start_ok("users:\n"
             "  - {name: ann, password: x, vhosts: [\"/\"], lua_scripts: true}\n"
             "  - {name: bob, password: x, vhosts: [\"/\"]}\n");
    struct wr_broker *b = wr_server_broker(srv);
    cr_assert(wr_broker_user_may_declare(b, "ann", "lua"));
    cr_assert_not(wr_broker_user_may_declare(b, "bob", "lua"), "not allowed by default");
    cr_assert_not(wr_broker_user_may_declare(b, "nobody", "lua"));
    cr_assert(wr_broker_user_may_declare(b, "bob", "topic"), "other types need nothing");
    struct wr_error err = {0};
    cr_assert_eq(wr_broker_user_allow_scripts(b, "bob", true, &err), WR_OK);
    cr_assert(wr_broker_user_may_declare(b, "bob", "lua"));
    cr_assert_eq(wr_broker_user_allow_scripts(b, "nobody", true, &err), WR_ENOTFOUND);
    cr_assert_str_eq(err.msg, "no user 'nobody'");
}
