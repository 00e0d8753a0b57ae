/*
 * server_test.c: the `warren` executable as a user runs it: --version, --help,
 * --check-config on good and broken files (file:line:column in the message), a topology
 * assembled from plugins with their options checked, start-up on a config and on the
 * embedded default, and SIGTERM / SIGINT ending in a clean exit 0.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
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
    "  memory_high_watermark: 256MiB\n"
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges:\n"
    "      - {name: orders, type: topic}\n"
    "      - {name: fan, type: fanout, durable: true}\n"
    "    queues:\n"
    "      - {name: billing}\n"
    "      - {name: audit, max_length: 10}\n"
    "      - {name: retry, message_ttl: 5s, expires: 1h, dead_letter_exchange: orders,\n"
    "         dead_letter_routing_key: orders.europe.retried}\n"
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
    ASSERT_HAS(out, "  memory_high_watermark: 256MiB\n");
    ASSERT_HAS(out, "    retry: memory, message_ttl 5000ms, expires 3600000ms, "
                    "dead_letter_exchange \"orders\", "
                    "dead_letter_routing_key \"orders.europe.retried\"\n");
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

Test(binary, check_config_reports_bad_duration_and_size)
{
    char *path = tu_write_temp("ttl.yaml", "vhosts:\n"
                                           "  - name: /\n"
                                           "    queues:\n"
                                           "      - {name: q, message_ttl: soon}\n");
    char *out;
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "ttl.yaml:4:32: vhosts[0].queues[0].message_ttl: expected a duration");
    free(out);
    tu_remove_temp(path);

    path = tu_write_temp("mem.yaml", "broker:\n  memory_high_watermark: 40%\n");
    cr_assert_eq(run("--check-config", path, &out), 1);
    ASSERT_HAS(out, "mem.yaml:2:26: broker.memory_high_watermark: expected a size");
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

/* Starts warren on config (NULL: the embedded default) logging to log_path, and waits until
 * it runs. */
static pid_t start(const char *config, char log_path[static 32])
{
    strcpy(log_path, "/tmp/warren-log-XXXXXX");
    close(mkstemp(log_path));
    const char *argv[] = {WR_TEST_BIN, config, NULL};
    pid_t pid = tu_spawn(argv, log_path);
    if (!log_has(log_path, "running (pid", 20000)) {
        kill(pid, SIGKILL);
        tu_wait_exit(pid, 20000);
        char *log = tu_read_file(log_path);
        unlink(log_path);
        cr_assert_fail("warren did not start, log:\n%s", log ? log : "");
    }
    return pid;
}

/* Sends signo and expects a clean exit 0. */
static void stop(pid_t pid, const char *log_path, int signo)
{
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

static void start_and_signal(const char *config, int signo)
{
    char log_path[32];
    pid_t pid = start(config, log_path);
    stop(pid, log_path, signo);
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

/* A port on 127.0.0.1 that nothing listens on right now. */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Sends the AMQP 0-9-1 protocol header to port and expects connection.start back: a method
 * frame on channel 0 of class 10, method 10. Returns NULL, or what went wrong (it does not
 * assert, so the caller can stop the server first). */
static const char *amqp_greeting_error(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return "socket failed";
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const char *why = NULL;
    unsigned char frame[11];
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        why = "nothing listens on the AMQP port";
    else if (write(fd, "AMQP\0\0\x09\x01", 8) != 8)
        why = "cannot send the protocol header";
    while (!why && got < sizeof frame) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n = 0;
        if (poll(&p, 1, 10000) != 1)
            why = "no answer to the protocol header within 10 s";
        else if ((n = read(fd, frame + got, sizeof frame - got)) <= 0)
            why = "the listener closed the connection";
        else
            got += (size_t)n;
    }
    close(fd);
    if (!why && (frame[0] != 1 || (frame[1] << 8 | frame[2]) != 0 ||
                 (frame[7] << 8 | frame[8]) != 10 || (frame[9] << 8 | frame[10]) != 10))
        why = "the first frame is not connection.start on channel 0";
    return why;
}

/* The embedded default as a user runs it: AMQP 0-9-1 from the plugin directory beside the
 * executable. 5672 may be taken on this machine, so the run swaps in a free port; the check
 * runs the text unchanged (it loads the plugins but binds nothing). Needs amqp091.so. */
Test(binary, runs_on_embedded_default)
{
    char *text;
    cr_assert_eq(run("--print-default-config", NULL, &text), 0);
    ASSERT_HAS(text, "vhosts");
    const char *listener = "{transport: amqp091, port: 5672}";
    char *at = strstr(text, listener);
    cr_assert_not_null(at, "no AMQP listener in the default:\n%s", text);

    char *path = tu_write_temp("default.yaml", text);
    char *out;
    int status = run("--check-config", path, &out);
    tu_remove_temp(path);
    cr_assert_eq(status, 0, "%s", out);
    ASSERT_HAS(out, "  amqp091 on 127.0.0.1:5672\n");
    free(out);

    uint16_t port = free_port();
    char *moved = NULL;
    cr_assert(asprintf(&moved, "%.*s{transport: amqp091, port: %u}%s", (int)(at - text), text,
                       port, at + strlen(listener)) > 0);
    path = tu_write_temp("default.yaml", moved);
    char log_path[32];
    pid_t pid = start(path, log_path);
    const char *why = amqp_greeting_error(port);
    stop(pid, log_path, SIGTERM);
    tu_remove_temp(path);
    free(moved);
    free(text);
    cr_assert_null(why, "%s", why);
}
