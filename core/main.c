/*
 * main.c: the `warren` executable. Reads the arguments, loads and validates the config (a
 * file, or the embedded default), builds the server from plugins, runs it until SIGTERM or
 * SIGINT and shuts it down gracefully. Exit status: 0 after a clean shutdown or a good
 * --check-config, 1 when the config or start-up fails, 2 for bad arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: warren [CONFIG.yaml]        run the broker (no file: the embedded "
            "default config)\n"
            "       warren --check-config FILE  validate FILE, load its plugins, print the "
            "topology\n"
            "       warren --print-default-config\n"
            "       warren --version\n"
            "       warren --help\n");
}

static int load_config(const char *path, struct wr_config **cfg, struct wr_error *err)
{
    if (path)
        return wr_config_load_file(path, cfg, err);
    const char *text = wr_config_default_text();
    return wr_config_load_string("<embedded default>", text, strlen(text), cfg, err);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("warren %s (plugin ABI %d.%d)\n", WR_VERSION_STRING, WR_ABI_MAJOR,
                   WR_ABI_MINOR);
            return 0;
        } else if (strcmp(a, "--print-default-config") == 0) {
            fputs(wr_config_default_text(), stdout);
            return 0;
        } else if (strcmp(a, "--check-config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "warren: --check-config needs a file\n");
                return 2;
            }
            check = true;
            path = argv[++i];
        } else if (a[0] == '-' || path) {
            fprintf(stderr, "warren: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            path = a;
        }
    }

    struct wr_error err = {0};
    struct wr_config *cfg = NULL;
    if (load_config(path, &cfg, &err) != WR_OK) {
        fprintf(stderr, "warren: %s\n", err.msg);
        return 1;
    }
    struct wr_server_opts opts = {.no_listeners = check};
    struct wr_server *srv = NULL;
    int rc = wr_server_new(cfg, &opts, &srv, &err);
    if (rc == WR_OK && check)
        wr_config_print(cfg, stdout);
    wr_config_free(cfg);
    if (rc != WR_OK) {
        fprintf(stderr, "warren: %s\n", err.msg);
        return 1;
    }
    if (check) {
        printf("%s: OK\n", path);
        wr_server_free(srv);
        return 0;
    }
    rc = wr_server_run(srv, &err);
    wr_server_free(srv);
    if (rc != WR_OK) {
        fprintf(stderr, "warren: %s\n", err.msg);
        return 1;
    }
    wr_log(WR_LOG_INFO, "server", "stopped cleanly");
    return 0;
}
