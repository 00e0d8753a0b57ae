/*
 * storage_testutil.h: the fixture the storage-backend tests share: a loop and a broker with
 * one storage plugin loaded through the real plugin loader, an options table for the queues
 * the test opens, and a fresh data directory that goes with the test.
 *
 * Criterion's init and fini functions take no arguments, so the fixture is file-scope state,
 * defined here: a test file includes this header once, calls storage_setup from its suite's
 * init (then checks what is particular to its plugin) and gives storage_teardown as its fini.
 */
#ifndef WARREN_STORAGE_TESTUTIL_H
#define WARREN_STORAGE_TESTUTIL_H

#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include <warren/wr.h>

static struct wr_loop *lp;
static struct wr_broker *b;
static const struct wr_storage_ops *ops;
static struct wr_plugin_ctx *ctx;
static struct wr_table *options; /* passed to every open; empty until a test sets some */
static char data_dir[64];

/* Loads the storage plugin called name into a new broker whose data directory is new. */
static void storage_setup(const char *name)
{
    struct wr_error err = {0};
    snprintf(data_dir, sizeof data_dir, "/tmp/warren-%stest-XXXXXX", name);
    cr_assert_not_null(mkdtemp(data_dir));
    cr_assert_eq(wr_loop_new(&lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_broker_new(lp, data_dir, &b, &err), WR_OK, "%s", err.msg);
    const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    cr_assert_eq(wr_broker_load_plugin(b, name, NULL, dirs, WR_PLUGIN_STORAGE, &ctx, &err),
                 WR_OK, "%s", err.msg);
    const struct wr_plugin *p = wr_plugin_ctx_plugin(ctx);
    cr_assert_str_eq(p->name, name);
    cr_assert_eq(p->kind, WR_PLUGIN_STORAGE);
    ops = p->ops;
    cr_assert_geq(ops->size, sizeof(struct wr_storage_ops));
    options = wr_table_new();
    cr_assert_not_null(options);
}

/* An nftw callback that deletes what it visits: nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS)
 * deletes a directory tree. */
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Frees what storage_setup made and deletes the data directory with what the test left. */
static void storage_teardown(void)
{
    wr_broker_free(b);
    wr_loop_free(lp);
    wr_table_free(options);
    nftw(data_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif
