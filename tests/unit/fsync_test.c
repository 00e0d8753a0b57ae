/*
 * fsync_test.c: the core's group commit (fsync.h) on its own: requests complete on the loop,
 * in order, never inside wr_fsync_wait; a failed fdatasync fails that request and every
 * later one; free completes what is pending; the options parser.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warren/wr.h>

static struct wr_loop *lp;
static char path[] = "/tmp/warren-fsynctest-XXXXXX";
static int fd = -1;

static void setup(void)
{
    cr_assert_eq(wr_loop_new(&lp, NULL), WR_OK);
    fd = mkstemp(path);
    cr_assert_geq(fd, 0);
}

static void teardown(void)
{
    close(fd);
    unlink(path);
    wr_loop_free(lp);
}

TestSuite(fsync, .init = setup, .fini = teardown, .timeout = 60);

#define MAX_DONE 64
static int done_order[MAX_DONE];
static int done_status[MAX_DONE];
static int n_done;
static bool in_wait;

static void on_done(void *data, int status)
{
    cr_assert_not(in_wait, "called back from inside wr_fsync_wait");
    cr_assert_lt(n_done, MAX_DONE);
    done_order[n_done] = (int)(intptr_t)data;
    done_status[n_done++] = status;
}

static void wait_for(struct wr_fsync *fs, int id)
{
    in_wait = true;
    cr_assert_eq(wr_fsync_wait(fs, on_done, (void *)(intptr_t)id), WR_OK);
    in_wait = false;
}

static void run_until_done(int n)
{
    for (int i = 0; i < 1000 && n_done < n; i++)
        cr_assert_eq(wr_loop_run_once(lp, 10, NULL), WR_OK);
    cr_assert_eq(n_done, n);
}

static void write_one(struct wr_fsync *fs)
{
    cr_assert_eq(write(fd, "x", 1), 1);
    wr_fsync_wrote(fs);
}

Test(fsync, requests_complete_in_order_for_every_policy)
{
    enum wr_fsync_policy policies[] = {WR_FSYNC_ALWAYS, WR_FSYNC_INTERVAL, WR_FSYNC_NEVER};
    for (int p = 0; p < 3; p++) {
        struct wr_fsync *fs = NULL;
        cr_assert_eq(wr_fsync_new(lp, policies[p], 10, &fs, NULL), WR_OK);
        cr_assert_eq(wr_fsync_file_add(fs, fd, NULL), WR_OK);
        n_done = 0;
        wait_for(fs, 0); /* nothing written: next loop turn */
        for (int i = 1; i < 40; i++) {
            write_one(fs);
            wait_for(fs, i);
        }
        run_until_done(40);
        for (int i = 0; i < 40; i++) {
            cr_assert_eq(done_order[i], i, "policy %d", p);
            cr_assert_eq(done_status[i], WR_OK);
        }
        wr_fsync_free(fs);
    }
}

Test(fsync, a_failed_sync_fails_that_request_and_every_later_one)
{
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    struct wr_fsync *fs = NULL;
    cr_assert_eq(wr_fsync_new(lp, WR_FSYNC_ALWAYS, 0, &fs, NULL), WR_OK);
    cr_assert_eq(wr_fsync_file_add(fs, fd, NULL), WR_OK);
    n_done = 0;
    write_one(fs);
    wait_for(fs, 0);
    run_until_done(1);
    cr_assert_eq(done_status[0], WR_OK);
    /* A pipe cannot be fdatasynced: the next round fails. */
    cr_assert_eq(wr_fsync_file_add(fs, pipefd[1], NULL), WR_OK);
    write_one(fs);
    wait_for(fs, 1);
    run_until_done(2);
    cr_assert_eq(done_status[1], WR_EIO);
    wr_fsync_file_retire(fs, pipefd[1]);
    write_one(fs);
    wait_for(fs, 2);
    run_until_done(3);
    cr_assert_eq(done_status[2], WR_EIO, "sticky: the page cache may have lost data");
    wr_fsync_free(fs);
    close(pipefd[0]);
    close(pipefd[1]);
}

Test(fsync, free_completes_pending_requests)
{
    struct wr_fsync *fs = NULL;
    cr_assert_eq(wr_fsync_new(lp, WR_FSYNC_INTERVAL, 60000, &fs, NULL), WR_OK);
    cr_assert_eq(wr_fsync_file_add(fs, fd, NULL), WR_OK);
    int dir = open("/tmp", O_RDONLY | O_DIRECTORY);
    wr_fsync_dir_changed(fs, dir);
    close(dir);
    n_done = 0;
    write_one(fs);
    wait_for(fs, 7);
    cr_assert_eq(n_done, 0);
    wr_fsync_free(fs);
    cr_assert_eq(n_done, 1);
    cr_assert_eq(done_order[0], 7);
    cr_assert_eq(done_status[0], WR_OK);
}

Test(fsync, options)
{
    struct wr_table *t = wr_table_new();
    enum wr_fsync_policy policy = WR_FSYNC_ALWAYS;
    uint64_t interval = 5;
    cr_assert_eq(wr_fsync_options(t, &policy, &interval, NULL), WR_OK);
    cr_assert_eq(policy, WR_FSYNC_ALWAYS);
    cr_assert_eq(interval, 5, "absent keys leave the defaults");
    struct wr_value v = wr_value_str("interval");
    wr_table_set(t, "flush", &v);
    v = wr_value_i64(250);
    wr_table_set(t, "flush_interval", &v);
    cr_assert_eq(wr_fsync_options(t, &policy, &interval, NULL), WR_OK);
    cr_assert_eq(policy, WR_FSYNC_INTERVAL);
    cr_assert_eq(interval, 250);
    v = wr_value_str("often");
    wr_table_set(t, "flush", &v);
    struct wr_error err = {0};
    cr_assert_eq(wr_fsync_options(t, &policy, &interval, &err), WR_EINVAL);
    cr_assert(strstr(err.msg, "often"), "%s", err.msg);
    wr_table_free(t);
}
