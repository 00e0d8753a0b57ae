/*
 * plugin_test.c: the loader, through real shared objects from tests/plugins: a good plugin,
 * and one refused for each reason (ABI, size, missing entry, unresolved symbol, kind, name,
 * duplicate, missing op), each with a message naming the file and the reason.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "testutil.h"

static struct wr_loop *lp;
static struct wr_broker *b;
static struct wr_error err;
static const char *const test_dirs[] = {WR_TEST_TEST_PLUGIN_DIR, NULL};
static const char *const builtin_dirs[] = {WR_TEST_PLUGIN_DIR, NULL};

static void setup(void)
{
    cr_assert_eq(wr_loop_new(&lp, &err), WR_OK);
    cr_assert_eq(wr_broker_new(lp, "/tmp/warren-plugin-test", &b, &err), WR_OK);
    memset(&err, 0, sizeof err);
}

static void teardown(void)
{
    wr_broker_free(b);
    wr_loop_free(lp);
}

TestSuite(loader, .init = setup, .fini = teardown);

static int load(const char *name, enum wr_plugin_kind kind)
{
    return wr_broker_load_plugin(b, name, NULL, test_dirs, kind, NULL, &err);
}

#define ASSERT_MSG_HAS(needle) \
    cr_assert(strstr(err.msg, needle), "message '%s' lacks '%s'", err.msg, needle)

Test(loader, good_plugin_by_name)
{
    struct wr_plugin_ctx *ctx = NULL;
    cr_assert_eq(wr_broker_load_plugin(b, "testex", NULL, test_dirs, WR_PLUGIN_EXCHANGE, &ctx,
                                       &err),
                 WR_OK, "%s", err.msg);
    cr_assert_str_eq(wr_plugin_ctx_name(ctx), "testex");
    cr_assert_str_eq(wr_plugin_ctx_path(ctx), WR_TEST_TEST_PLUGIN_DIR "/testex.so");
    cr_assert_eq(wr_plugin_ctx_plugin(ctx)->kind, WR_PLUGIN_EXCHANGE);
    cr_assert_str_eq(wr_plugin_ctx_plugin(ctx)->version, "1.0.0");
    cr_assert_eq(wr_plugin_ctx_broker(ctx), b);
    cr_assert_eq(wr_plugin_ctx_loop(ctx), lp);
    cr_assert_eq(wr_broker_plugin(b, "testex", WR_PLUGIN_EXCHANGE), ctx);
    cr_assert_null(wr_broker_plugin(b, "testex", WR_PLUGIN_STORAGE));
}

Test(loader, good_plugin_by_path)
{
    cr_assert_eq(wr_broker_load_plugin(b, NULL, WR_TEST_TEST_PLUGIN_DIR "/testex.so", NULL, 0,
                                       NULL, &err),
                 WR_OK, "%s", err.msg);
    cr_assert_not_null(wr_broker_plugin(b, "testex", 0));
}

Test(loader, first_directory_wins)
{
    static const char *const dirs[] = {"/nonexistent-dir", WR_TEST_TEST_PLUGIN_DIR, NULL};
    cr_assert_eq(wr_broker_load_plugin(b, "testex", NULL, dirs, 0, NULL, &err), WR_OK, "%s",
                 err.msg);
}

Test(loader, not_found_lists_directories)
{
    cr_assert_eq(load("nosuch", 0), WR_ENOTFOUND);
    ASSERT_MSG_HAS("plugin 'nosuch' not found");
    ASSERT_MSG_HAS(WR_TEST_TEST_PLUGIN_DIR);
}

Test(loader, abi_major_mismatch)
{
    cr_assert_eq(load("abi_major", 0), WR_EABI);
    ASSERT_MSG_HAS(WR_TEST_TEST_PLUGIN_DIR "/abi_major.so");
    ASSERT_MSG_HAS("built for plugin ABI 2.0, this warren has ABI 1.0");
    cr_assert_null(wr_broker_plugin(b, "abi_major", 0));
}

Test(loader, newer_abi_minor)
{
    cr_assert_eq(load("abi_minor", 0), WR_EABI);
    ASSERT_MSG_HAS("abi_minor.so: built for plugin ABI 1.1, newer than this warren's 1.0");
}

Test(loader, short_descriptor)
{
    cr_assert_eq(load("short_size", 0), WR_EABI);
    ASSERT_MSG_HAS("short_size.so: plugin descriptor is 8 bytes");
}

Test(loader, missing_entry_symbol)
{
    cr_assert_eq(load("no_entry", 0), WR_EINVAL);
    ASSERT_MSG_HAS("no_entry.so: no symbol wr_plugin_entry");
}

Test(loader, unresolved_symbol)
{
    cr_assert_eq(load("undefined_sym", 0), WR_EINVAL);
    ASSERT_MSG_HAS("cannot load plugin");
    ASSERT_MSG_HAS("undefined_sym.so");
    ASSERT_MSG_HAS("wr_test_symbol_that_does_not_exist");
}

Test(loader, wrong_kind)
{
    cr_assert_eq(load("testex", WR_PLUGIN_STORAGE), WR_EINVAL);
    ASSERT_MSG_HAS("testex.so: plugin 'testex' is an exchange type, but a storage backend is "
                   "needed here");
}

Test(loader, name_differs_from_file)
{
    cr_assert_eq(wr_broker_load_plugin(b, "other", WR_TEST_TEST_PLUGIN_DIR "/testex.so", NULL,
                                       0, NULL, &err),
                 WR_EINVAL);
    ASSERT_MSG_HAS("testex.so: the file holds plugin 'testex', not 'other'");
}

Test(loader, duplicate_name)
{
    cr_assert_eq(wr_broker_load_plugin(b, "direct", NULL, builtin_dirs, 0, NULL, &err), WR_OK,
                 "%s", err.msg);
    cr_assert_eq(wr_broker_load_plugin(b, NULL, WR_TEST_TEST_PLUGIN_DIR "/dup_direct.so", NULL,
                                       0, NULL, &err),
                 WR_EEXIST);
    ASSERT_MSG_HAS("dup_direct.so: a plugin named 'direct' is already loaded from "
                   WR_TEST_PLUGIN_DIR "/direct.so");
}

Test(loader, missing_required_op)
{
    cr_assert_eq(load("no_route", 0), WR_EINVAL);
    ASSERT_MSG_HAS("no_route.so: plugin 'no_route' (exchange type) lacks the required op route");
}

Test(loader, not_a_shared_object)
{
    char *path = tu_write_temp("fake.so", "this is not an ELF file\n");
    cr_assert_eq(wr_broker_load_plugin(b, NULL, path, NULL, 0, NULL, &err), WR_EINVAL);
    ASSERT_MSG_HAS("cannot load plugin");
    ASSERT_MSG_HAS(path);
    tu_remove_temp(path);
}

Test(loader, failing_create_refuses_the_exchange)
{
    struct wr_vhost *vh;
    static const char *const both[] = {WR_TEST_PLUGIN_DIR, WR_TEST_TEST_PLUGIN_DIR, NULL};
    const char *names[] = {"direct", "fanout", "topic", "headers", "failing_create"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(wr_broker_load_plugin(b, names[i], NULL, both, WR_PLUGIN_EXCHANGE, NULL,
                                           &err),
                     WR_OK, "%s", err.msg);
    cr_assert_eq(wr_vhost_add(b, "/", &vh, &err), WR_OK, "%s", err.msg);
    struct wr_exchange_decl decl = {.name = "x", .type = "failing_create"};
    cr_assert_eq(wr_exchange_declare(vh, &decl, NULL, &err), WR_EINVAL);
    ASSERT_MSG_HAS("failing_create refuses every exchange");
    cr_assert_null(wr_exchange_find(vh, "x"));
}

Test(loader, vhost_needs_builtin_exchange_types)
{
    cr_assert_eq(wr_vhost_add(b, "/", NULL, &err), WR_ENOTFOUND);
    ASSERT_MSG_HAS("unknown exchange type 'direct'");
}
