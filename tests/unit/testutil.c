/*
 * testutil.c: shared test fixtures (see testutil.h). Waits are bounded loops over the real
 * event loop, never sleeps.
 */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void tu_broker_init(struct tu_broker *t)
{
    struct wr_error err = {0};
    memset(t, 0, sizeof *t);
    snprintf(t->data_dir, sizeof t->data_dir, "/tmp/warren-test-XXXXXX");
    cr_assert_not_null(mkdtemp(t->data_dir), "mkdtemp: %s", strerror(errno));
    cr_assert_eq(wr_loop_new(&t->lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_broker_new(t->lp, t->data_dir, &t->b, &err), WR_OK, "%s", err.msg);
    static const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    static const struct {
        const char *name;
        enum wr_plugin_kind kind;
    } builtins[] = {{"direct", WR_PLUGIN_EXCHANGE}, {"fanout", WR_PLUGIN_EXCHANGE},
                    {"topic", WR_PLUGIN_EXCHANGE},  {"headers", WR_PLUGIN_EXCHANGE},
                    {"memory", WR_PLUGIN_STORAGE}};
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        cr_assert_eq(wr_broker_load_plugin(t->b, builtins[i].name, NULL, dirs, builtins[i].kind,
                                           NULL, &err),
                     WR_OK, "%s", err.msg);
    cr_assert_eq(wr_vhost_add(t->b, "/", &t->vh, &err), WR_OK, "%s", err.msg);
}

void tu_broker_fini(struct tu_broker *t)
{
    wr_broker_free(t->b);
    wr_loop_free(t->lp);
    if (t->data_dir[0])
        nftw(t->data_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    memset(t, 0, sizeof *t);
}

struct wr_msg *tu_msg(const char *routing_key, const char *body, const struct wr_table *headers)
{
    struct wr_msg_init init = {0};
    init.routing_key = wr_str_c(routing_key ? routing_key : "");
    init.headers = headers;
    init.body_ptr = body;
    init.body_len = body ? strlen(body) : 0;
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    return msg;
}

int tu_publish(struct tu_broker *t, const char *ex_name, const char *routing_key,
               const char *body, const struct wr_table *headers)
{
    struct wr_exchange *ex = wr_exchange_find(t->vh, ex_name);
    cr_assert_not_null(ex, "no exchange '%s'", ex_name);
    struct wr_msg *msg = tu_msg(routing_key, body, headers);
    struct wr_error err = {0};
    int n = wr_publish(ex, msg, NULL, &err);
    wr_msg_unref(msg);
    return n;
}

struct wr_queue *tu_queue(struct tu_broker *t, const char *name)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    struct wr_queue *q = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_declare(t->vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    return q;
}

struct wr_exchange *tu_exchange(struct tu_broker *t, const char *name, const char *type)
{
    struct wr_exchange_decl decl = {.name = name, .type = type};
    struct wr_exchange *ex = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_exchange_declare(t->vh, &decl, &ex, &err), WR_OK, "%s", err.msg);
    return ex;
}

void tu_bind(struct wr_exchange *ex, struct wr_queue *q, const char *key,
             const struct wr_table *args)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_bind_queue(ex, q, key, args, &err), WR_OK, "%s", err.msg);
}

void tu_unbind(struct wr_exchange *ex, struct wr_queue *q, const char *key,
               const struct wr_table *args)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_unbind_queue(ex, q, key, args, &err), WR_OK, "%s", err.msg);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *tu_routed(struct wr_exchange *ex, const char *rk, const struct wr_table *headers)
{
    static char out[4096];
    struct wr_queue *qs[64];
    const char *names[64];
    struct wr_msg *msg = tu_msg(rk, NULL, headers);
    size_t n = wr_exchange_route(ex, msg, qs, 64);
    wr_msg_unref(msg);
    cr_assert_leq(n, 64);
    for (size_t i = 0; i < n; i++)
        names[i] = wr_queue_name(qs[i]);
    qsort(names, n, sizeof names[0], cmp_str);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        cr_assert_lt(strlen(out) + strlen(names[i]), sizeof out - 1);
        strcat(out, names[i]);
    }
    return out;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool tu_wait(struct wr_loop *lp, bool (*cond)(void *data), void *data, int timeout_ms)
{
    uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
    while (!cond(data)) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            return cond(data);
        int slice = (int)(deadline - now);
        wr_loop_run_once(lp, slice < 10 ? slice : 10, NULL);
    }
    return true;
}

void tu_drain(struct wr_loop *lp, int timeout_ms)
{
    /* Deferred tasks run at the start of an iteration; two non-blocking passes run the work
     * they scheduled in turn. */
    uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
    for (int i = 0; i < 4 && mono_ms() <= deadline; i++)
        wr_loop_run_once(lp, 0, NULL);
}

char *tu_get_body(struct wr_queue *q)
{
    struct wr_delivery d;
    if (wr_queue_get(q, true, &d, NULL) != WR_OK)
        return NULL;
    size_t len;
    const uint8_t *p = wr_msg_body(d.msg, &len);
    char *s = malloc(len + 1);
    cr_assert_not_null(s);
    memcpy(s, p, len);
    s[len] = '\0';
    wr_msg_unref(d.msg);
    return s;
}

char *tu_write_temp(const char *name, const char *text)
{
    char dir[] = "/tmp/warren-cfg-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char *path = NULL;
    cr_assert(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    return path;
}

void tu_remove_temp(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    if (slash) {
        *slash = '\0';
        rmdir(path);
    }
    free(path);
}

char *tu_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    size_t n;
    while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *bigger = realloc(s, cap * 2);
            if (!bigger)
                free(s);
            s = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (s)
        s[len] = '\0';
    return s;
}

pid_t tu_spawn(const char *const *argv, const char *log_path)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        /* The test process may block signals for its own loop; the child starts clean. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int tu_wait_exit(pid_t pid, int timeout_ms)
{
    uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (r < 0 || mono_ms() >= deadline)
            return -1;
        /* Poll a child at 5 ms steps: waitpid has no timeout, and a pidfd needs Linux 5.3
         * headers we do not assume. The wait is still bounded by the deadline. */
        struct timespec step = {0, 5 * 1000 * 1000};
        nanosleep(&step, NULL);
    }
}

int tu_run(const char *const *argv, char **out, int timeout_ms)
{
    char log_path[] = "/tmp/warren-run-XXXXXX";
    int fd = mkstemp(log_path);
    cr_assert_neq(fd, -1);
    close(fd);
    pid_t pid = tu_spawn(argv, log_path);
    int status = tu_wait_exit(pid, timeout_ms);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (out)
        *out = tu_read_file(log_path);
    unlink(log_path);
    return status;
}
