/*
 * server_test.c: the `warren` executable as a user runs it: --version, --help,
 * --check-config on good and broken files (file:line:column in the message), a topology
 * assembled from plugins with their options checked, start-up on a config and on the
 * embedded default, and SIGTERM / SIGINT ending in a clean exit 0.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

TestSuite(binary, .timeout = 60);

static int run(const char *a1, const char *a2, char **out)
{
    const char *argv[] = {WR_TEST_BIN, a1, a2, NULL};
    return tu_run(argv, out, 20000);
}

#define ASSERT_HAS(hay, needle) \
    cr_assert(hay && strstr(hay, needle), "output lacks '%s':\n%s", needle, hay ? hay : "")

Test(binary, version_and_help)
{
    char *out;
    cr_assert_eq(run("--version", NULL, &out), 0);
    ASSERT_HAS(out, "warren " WR_VERSION_STRING);
    free(out);
    cr_assert_eq(run("--help", NULL, &out), 0);
    ASSERT_HAS(out, "--check-config");
    free(out);
    cr_assert_eq(run("--bogus", NULL, &out), 2);
    ASSERT_HAS(out, "unexpected argument '--bogus'");
    free(out);
}

static const char good_config[] =
    "broker:\n"
    "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
    "  data_dir: /tmp/warren-server-test-data\n"
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges:\n"
    "      - {name: orders, type: topic}\n"
    "      - {name: fan, type: fanout, durable: true}\n"
    "    queues:\n"
    "      - {name: billing}\n"
    "      - {name: audit, max_length: 10}\n"
    "    bindings:\n"
    "      - {exchange: orders, queue: billing, key: \"orders.europe.*\"}\n"
    "      - {exchange: orders, to_exchange: fan, key: \"#\"}\n"
    "      - {exchange: fan, queue: audit}\n"
    "users:\n"
    "  - {name: guest, password: guest, vhosts: [\"/\"]}\n";

Test(binary, check_config_prints_topology)
{
    char *path = tu_write_temp("good.yaml", good_config);
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 0, "%s", out);
    ASSERT_HAS(out, "orders");
    ASSERT_HAS(out, "billing");
    ASSERT_HAS(out, "orders.europe.*");
    ASSERT_HAS(out, "audit");
    ASSERT_HAS(out, ": OK");
    free(out);
    tu_remove_temp(path);
}

Test(binary, check_config_reports_position)
{
    char *path = tu_write_temp("bad.yaml", "vhosts:\n"
                                           "  - name: /\n"
                                           "    queues:\n"
                                           "      - {name: q, max_length: lots}\n");
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "bad.yaml:4:");
    ASSERT_HAS(out, "vhosts[0].queues[0].max_length");
    free(out);
    tu_remove_temp(path);
}

Test(binary, unknown_exchange_type_is_reported_where_it_stands)
{
    char *path = tu_write_temp("type.yaml", "broker:\n"
                                            "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                                            "vhosts:\n"
                                            "  - name: /\n"
                                            "    exchanges:\n"
                                            "      - {name: x, type: nosuchtype}\n");
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "type.yaml:6:9: vhosts[0].exchanges[0]: plugin 'nosuchtype' not found");
    free(out);
    tu_remove_temp(path);
}

Test(binary, plugin_options_are_checked_against_its_schema)
{
    char *path = tu_write_temp(
        "opts.yaml", "broker:\n"
                     "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                     "plugins:\n"
                     "  - {name: testex, path: " WR_TEST_TEST_PLUGIN_DIR "/testex.so}\n"
                     "vhosts:\n"
                     "  - name: /\n"
                     "    exchanges:\n"
                     "      - name: x\n"
                     "        type: testex\n"
                     "        options: {label: a, interval: 5 parsecs}\n");
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "opts.yaml:10:");
    ASSERT_HAS(out, "vhosts[0].exchanges[0].options.interval");
    free(out);
    tu_remove_temp(path);

    path = tu_write_temp("opts.yaml", "broker:\n"
                                      "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                                      "plugins:\n"
                                      "  - {name: testex, path: " WR_TEST_TEST_PLUGIN_DIR
                                      "/testex.so}\n"
                                      "vhosts:\n"
                                      "  - name: /\n"
                                      "    exchanges:\n"
                                      "      - name: x\n"
                                      "        type: testex\n"
                                      "        options: {label: a, interval: 250ms}\n");
    cr_assert_eq(run("--check-config", path, &out), 0, "%s", out);
    free(out);
    tu_remove_temp(path);
}

Test(binary, wrong_plugin_kind_for_storage)
{
    char *path = tu_write_temp("kind.yaml", "broker:\n"
                                            "  plugin_dirs: [" WR_TEST_PLUGIN_DIR "]\n"
                                            "vhosts:\n"
                                            "  - name: /\n"
                                            "    queues:\n"
                                            "      - {name: q, storage: topic}\n");
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "kind.yaml:6:9: vhosts[0].queues[0]: plugin 'topic' is an exchange type, "
                    "but a storage backend is needed here");
    free(out);
    tu_remove_temp(path);
}

/* Waits (bounded) until the log at path contains needle. */
static bool log_has(const char *path, const char *needle, int timeout_ms)
{
    struct timespec start, now, step = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        char *text = tu_read_file(path);
        bool found = text && strstr(text, needle);
        free(text);
        if (found)
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >
            timeout_ms)
            return false;
        nanosleep(&step, NULL);
    }
}

static void start_and_signal(const char *config, int signo)
{
    char log_path[] = "/tmp/warren-log-XXXXXX";
    close(mkstemp(log_path));
    const char *argv[] = {WR_TEST_BIN, config, NULL};
    pid_t pid = tu_spawn(argv, log_path);
    cr_assert(log_has(log_path, "running (pid", 20000), "warren did not start");
    cr_assert_eq(kill(pid, signo), 0);
    int status = tu_wait_exit(pid, 20000);
    char *log = tu_read_file(log_path);
    if (status == -1)
        kill(pid, SIGKILL);
    cr_assert_eq(status, 0, "exit status %d, log:\n%s", status, log);
    ASSERT_HAS(log, "stopped cleanly");
    free(log);
    unlink(log_path);
}

Test(binary, sigterm_exits_zero)
{
    char *path = tu_write_temp("good.yaml", good_config);
    start_and_signal(path, SIGTERM);
    tu_remove_temp(path);
}

Test(binary, sigint_exits_zero)
{
    char *path = tu_write_temp("good.yaml", good_config);
    start_and_signal(path, SIGINT);
    tu_remove_temp(path);
}

Test(binary, runs_on_embedded_default)
{
    char *out;
    cr_assert_eq(run("--print-default-config", NULL, &out), 0);
    ASSERT_HAS(out, "vhosts");
    free(out);
    start_and_signal(NULL, SIGTERM);
}
