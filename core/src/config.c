/*
 * config.c: the YAML config. libyaml's event stream becomes a tree of cfg_nodes, each with
 * its line, column and key path; a schema walk then fills struct wr_config and checks what a
 * broker would refuse later (duplicate names, bindings to undeclared exchanges or queues,
 * reserved names), so a bad file stops start-up with "file:line:column: key.path: what was
 * expected" before anything starts.
 *
 * The tree is kept: plugin `options:` and binding `arguments:` have no schema until the
 * plugins are loaded, so server.c converts them later with cfg_options_table() and
 * cfg_args_table(), whose errors point into the file the same way.
 *
 * Rules a user can rely on (docs/config.md): a key given with no value (`key:` or `key: ~`)
 * is the same as leaving it out; booleans are `true` and `false` only; integers are plain
 * decimal; anchors, aliases, tags other than !!str, duplicate keys and a second document are
 * refused rather than half-supported.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "warren/value.h"

/* Deeper nesting than this is refused: the parser and the free recurse, and no config needs
 * it. */
#define CFG_MAX_DEPTH 64

/* AMQP names are short strings. */
#define CFG_NAME_MAX 255

#define DEFAULT_MAX_MESSAGE_SIZE (128ULL * 1024 * 1024)

static const char *const log_level_names[] = {"error", "warn", "info", "debug"};

/* The exchanges every vhost starts with (broker.h); bindings may name them undeclared. */
static const char *const predeclared_exchanges[] = {
    "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match", NULL,
};

/* ---- errors ------------------------------------------------------------------------- */

static int oom(struct wr_error *err)
{
    return wr_error_set(err, WR_ENOMEM, "out of memory while loading the config");
}

static int verror_at(const struct wr_config *cfg, struct cfg_mark m, const char *path,
                     struct wr_error *err, const char *fmt, va_list ap)
{
    char what[WR_ERROR_MSG_MAX];
    const char *file = cfg && cfg->file ? cfg->file : "config";

    vsnprintf(what, sizeof(what), fmt, ap);
    if (path && *path)
        return wr_error_set(err, WR_EINVAL, "%s:%u:%u: %s: %s", file, m.line, m.col, path,
                            what);
    return wr_error_set(err, WR_EINVAL, "%s:%u:%u: %s", file, m.line, m.col, what);
}

static int error_at(const struct wr_config *cfg, struct cfg_mark m, const char *path,
                    struct wr_error *err, const char *fmt, ...) WR_PRINTF(5, 6);

static int error_at(const struct wr_config *cfg, struct cfg_mark m, const char *path,
                    struct wr_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = verror_at(cfg, m, path, err, fmt, ap);
    va_end(ap);
    return rc;
}

int cfg_error(const struct wr_config *cfg, const struct cfg_node *node, struct wr_error *err,
              const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    if (node) {
        rc = verror_at(cfg, node->mark, node->path, err, fmt, ap);
    } else {
        /* Defaults (the vhost "/" nobody wrote) have no position: name the file only. */
        char what[WR_ERROR_MSG_MAX];
        vsnprintf(what, sizeof(what), fmt, ap);
        rc = wr_error_set(err, WR_EINVAL, "%s: %s", cfg && cfg->file ? cfg->file : "config",
                          what);
    }
    va_end(ap);
    return rc;
}

/* ---- the node tree ------------------------------------------------------------------ */

static void node_fini(struct cfg_node *n)
{
    free(n->path);
    free(n->scalar);
    for (size_t i = 0; i < n->count && n->pairs; i++) {
        free(n->pairs[i].key);
        node_fini(&n->pairs[i].value);
    }
    free(n->pairs);
    for (size_t i = 0; i < n->count && n->items; i++)
        node_fini(&n->items[i]);
    free(n->items);
    memset(n, 0, sizeof(*n));
}

/* YAML's null: an empty plain scalar, `~` or `null`. */
static bool is_null(const struct cfg_node *n)
{
    if (n->kind != CFG_SCALAR || !n->plain)
        return false;
    const char *s = n->scalar;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
           !strcmp(s, "NULL");
}

/* "a map", "'lots'": what a user wrote, for "expected X, got Y". Long scalars are cut so
 * the message stays one line. */
static const char *describe(const struct cfg_node *n, char *buf, size_t size)
{
    if (n->kind == CFG_MAP)
        return "a map";
    if (n->kind == CFG_SEQ)
        return "a list";
    if (is_null(n))
        return "nothing";
    if (strlen(n->scalar) > 40)
        snprintf(buf, size, "'%.37s...'", n->scalar);
    else
        snprintf(buf, size, "'%s'", n->scalar);
    return buf;
}

#define DESCRIBE(n) describe((n), (char[64]){0}, 64)

static char *path_key(const char *parent, const char *key)
{
    char *p = NULL;
    int rc = *parent ? asprintf(&p, "%s.%s", parent, key) : asprintf(&p, "%s", key);
    return rc < 0 ? NULL : p;
}

static char *path_index(const char *parent, size_t i)
{
    char *p = NULL;
    return asprintf(&p, "%s[%zu]", parent, i) < 0 ? NULL : p;
}

/* Arrays grow by doubling: with no capacity field, the capacity is the count rounded up to
 * a power of two, so a new block is due exactly when the count is 0 or a power of two. */
static int grow(void **arr, size_t count, size_t elem)
{
    if (count && (count & (count - 1)))
        return WR_OK;
    size_t cap = count ? count * 2 : 1;
    void *p = realloc(*arr, cap * elem);
    if (!p)
        return WR_ENOMEM;
    memset((char *)p + count * elem, 0, (cap - count) * elem);
    *arr = p;
    return WR_OK;
}

/* ---- parsing: libyaml events to nodes ----------------------------------------------- */

struct parse {
    yaml_parser_t yp;
    struct wr_config *cfg;
    const char *text;
    size_t len;
    struct wr_error *err;
};

static struct cfg_mark mark_of(yaml_mark_t m)
{
    return (struct cfg_mark){(unsigned)m.line + 1, (unsigned)m.column + 1};
}

/* libyaml reports an encoding error as a byte offset; count lines and characters (not
 * bytes, as libyaml's columns do) up to it. */
static struct cfg_mark offset_mark(const struct parse *p, size_t off)
{
    struct cfg_mark m = {1, 1};
    for (size_t i = 0; i < off && i < p->len; i++) {
        unsigned char c = (unsigned char)p->text[i];
        if (c == '\n') {
            m.line++;
            m.col = 1;
        } else if ((c & 0xC0) != 0x80) {
            m.col++;
        }
    }
    return m;
}

static int syntax_error(struct parse *p)
{
    yaml_parser_t *yp = &p->yp;
    const char *file = p->cfg->file;

    if (yp->error == YAML_MEMORY_ERROR)
        return oom(p->err);
    struct cfg_mark m = yp->error == YAML_READER_ERROR ? offset_mark(p, yp->problem_offset)
                                                       : mark_of(yp->problem_mark);
    const char *problem = yp->problem ? yp->problem : "malformed YAML";
    if (yp->context) {
        struct cfg_mark c = mark_of(yp->context_mark);
        return wr_error_set(p->err, WR_EINVAL,
                            "%s:%u:%u: YAML syntax error: %s (%s at line %u, column %u)", file,
                            m.line, m.col, problem, yp->context, c.line, c.col);
    }
    return wr_error_set(p->err, WR_EINVAL, "%s:%u:%u: YAML syntax error: %s", file, m.line,
                        m.col, problem);
}

static int next_event(struct parse *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&p->yp, ev))
        return syntax_error(p);
    return WR_OK;
}

/* What libyaml expands "!!" to ("!!str" arrives as YAML_STR_TAG). */
#define CFG_TAG_PREFIX "tag:yaml.org,2002:"

/* Anchors and tags are refused where they appear: an alias would make the tree a graph and
 * a tag a type system of its own; `!!str` is the one tag that helps (it quotes). */
static int check_props(struct parse *p, yaml_mark_t at, const char *path,
                       const yaml_char_t *anchor, const yaml_char_t *tag, const char *allowed)
{
    if (anchor)
        return error_at(p->cfg, mark_of(at), path, p->err,
                        "YAML anchors (&%s) and aliases are not supported; write the value out",
                        (const char *)anchor);
    if (tag && strcmp((const char *)tag, allowed)) {
        /* Shown as written: libyaml has expanded "!!int" to "tag:yaml.org,2002:int". */
        const char *t = (const char *)tag;
        bool core = !strncmp(t, CFG_TAG_PREFIX, strlen(CFG_TAG_PREFIX));
        return error_at(p->cfg, mark_of(at), path, p->err,
                        "YAML tag '%s%s' is not supported (quote a value to make it a string)",
                        core ? "!!" : "", core ? t + strlen(CFG_TAG_PREFIX) : t);
    }
    return WR_OK;
}

static int parse_node(struct parse *p, const yaml_event_t *ev, struct cfg_node *node, int depth);

static int parse_scalar(struct parse *p, const yaml_event_t *ev, struct cfg_node *node)
{
    int rc = check_props(p, ev->start_mark, node->path, ev->data.scalar.anchor,
                         ev->data.scalar.tag, YAML_STR_TAG);
    if (rc)
        return rc;
    node->kind = CFG_SCALAR;
    node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
    node->scalar = strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
    if (!node->scalar)
        return oom(p->err);
    if (strlen(node->scalar) != ev->data.scalar.length)
        return error_at(p->cfg, node->mark, node->path, p->err,
                        "a string may not contain a NUL character");
    return WR_OK;
}

static int parse_map(struct parse *p, struct cfg_node *node, int depth)
{
    node->kind = CFG_MAP;
    for (;;) {
        yaml_event_t kev;
        int rc = next_event(p, &kev);
        if (rc)
            return rc;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return WR_OK;
        }
        struct cfg_mark km = mark_of(kev.start_mark);
        if (kev.type != YAML_SCALAR_EVENT) {
            rc = error_at(p->cfg, km, node->path, p->err, "expected a plain key, got %s",
                          kev.type == YAML_MAPPING_START_EVENT    ? "a map"
                          : kev.type == YAML_SEQUENCE_START_EVENT ? "a list"
                                                                  : "an alias");
            yaml_event_delete(&kev);
            return rc;
        }
        const char *key = (const char *)kev.data.scalar.value;
        rc = check_props(p, kev.start_mark, node->path, kev.data.scalar.anchor,
                         kev.data.scalar.tag, YAML_STR_TAG);
        if (!rc && strlen(key) != kev.data.scalar.length)
            rc = error_at(p->cfg, km, node->path, p->err, "a key may not contain a NUL");
        for (size_t i = 0; !rc && i < node->count; i++) {
            if (!strcmp(node->pairs[i].key, key)) {
                char *kp = path_key(node->path, key);
                if (!kp) {
                    rc = oom(p->err);
                    break;
                }
                rc = error_at(p->cfg, km, kp, p->err, "duplicate key (first at line %u, column %u)",
                              node->pairs[i].key_mark.line, node->pairs[i].key_mark.col);
                free(kp);
            }
        }
        if (!rc && grow((void **)&node->pairs, node->count, sizeof(*node->pairs)))
            rc = oom(p->err);
        struct cfg_pair *pair = NULL;
        if (!rc) {
            /* Counted before it is filled, so node_fini frees a half-built pair. */
            pair = &node->pairs[node->count++];
            pair->key = strdup(key);
            pair->key_mark = km;
            pair->value.path = pair->key ? path_key(node->path, key) : NULL;
            if (!pair->value.path)
                rc = oom(p->err);
        }
        yaml_event_delete(&kev);
        if (rc)
            return rc;

        yaml_event_t vev;
        if ((rc = next_event(p, &vev)))
            return rc;
        rc = parse_node(p, &vev, &pair->value, depth + 1);
        yaml_event_delete(&vev);
        if (rc)
            return rc;
    }
}

static int parse_seq(struct parse *p, struct cfg_node *node, int depth)
{
    node->kind = CFG_SEQ;
    for (;;) {
        yaml_event_t iev;
        int rc = next_event(p, &iev);
        if (rc)
            return rc;
        if (iev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&iev);
            return WR_OK;
        }
        if (grow((void **)&node->items, node->count, sizeof(*node->items))) {
            yaml_event_delete(&iev);
            return oom(p->err);
        }
        struct cfg_node *item = &node->items[node->count++];
        item->path = path_index(node->path, node->count - 1);
        rc = item->path ? parse_node(p, &iev, item, depth + 1) : oom(p->err);
        yaml_event_delete(&iev);
        if (rc)
            return rc;
    }
}

/* Fills node (whose path is set) from ev and the events that follow it. */
static int parse_node(struct parse *p, const yaml_event_t *ev, struct cfg_node *node, int depth)
{
    node->mark = mark_of(ev->start_mark);
    if (depth > CFG_MAX_DEPTH)
        return error_at(p->cfg, node->mark, node->path, p->err,
                        "nested deeper than %d levels", CFG_MAX_DEPTH);
    int rc;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return parse_scalar(p, ev, node);
    case YAML_MAPPING_START_EVENT:
        rc = check_props(p, ev->start_mark, node->path, ev->data.mapping_start.anchor,
                         ev->data.mapping_start.tag, YAML_MAP_TAG);
        return rc ? rc : parse_map(p, node, depth);
    case YAML_SEQUENCE_START_EVENT:
        rc = check_props(p, ev->start_mark, node->path, ev->data.sequence_start.anchor,
                         ev->data.sequence_start.tag, YAML_SEQ_TAG);
        return rc ? rc : parse_seq(p, node, depth);
    case YAML_ALIAS_EVENT:
        return error_at(p->cfg, node->mark, node->path, p->err,
                        "YAML aliases (*%s) and anchors are not supported; write the value out",
                        (const char *)ev->data.alias.anchor);
    default:
        return error_at(p->cfg, node->mark, node->path, p->err, "unexpected YAML structure");
    }
}

/* The stream holds no document (an empty file: all defaults) or exactly one. */
static int parse_stream(struct parse *p)
{
    struct cfg_node *root = &p->cfg->root;
    yaml_event_t ev;
    int rc;

    root->kind = CFG_MAP;
    root->mark = (struct cfg_mark){1, 1};
    if (!(root->path = strdup("")))
        return oom(p->err);
    if ((rc = next_event(p, &ev)))             /* STREAM-START */
        return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(p, &ev)))
        return rc;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        return WR_OK;
    }
    yaml_event_delete(&ev);                    /* DOCUMENT-START */
    if ((rc = next_event(p, &ev)))
        return rc;
    rc = parse_node(p, &ev, root, 0);
    yaml_event_delete(&ev);
    if (rc)
        return rc;
    if ((rc = next_event(p, &ev)))             /* DOCUMENT-END */
        return rc;
    yaml_event_delete(&ev);
    if ((rc = next_event(p, &ev)))
        return rc;
    if (ev.type != YAML_STREAM_END_EVENT)
        rc = error_at(p->cfg, mark_of(ev.start_mark), NULL, p->err,
                      "a config is one YAML document; remove this second one");
    yaml_event_delete(&ev);
    if (rc)
        return rc;

    /* A document that says nothing (`---` alone, or `~`) is an empty config. */
    if (is_null(root)) {
        free(root->scalar);
        root->scalar = NULL;
        root->kind = CFG_MAP;
    }
    if (root->kind != CFG_MAP)
        return error_at(p->cfg, root->mark, NULL, p->err,
                        "expected a map with the sections broker, plugins, listeners, vhosts, "
                        "users; got %s", DESCRIBE(root));
    return WR_OK;
}

/* ---- sizes and durations ------------------------------------------------------------ */

struct unit {
    const char *name;
    uint64_t factor;
};

static const struct unit size_units[] = {
    {"B", 1},
    {"KB", 1000ULL},
    {"MB", 1000ULL * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
    {NULL, 0},
};

static const struct unit duration_units[] = {
    {"ms", 1},
    {"s", 1000ULL},
    {"m", 60ULL * 1000},
    {"h", 3600ULL * 1000},
    {"d", 86400ULL * 1000},
    {"w", 7ULL * 86400 * 1000},
    {NULL, 0},
};

/* Digits, then optional spaces and a unit from the table; nothing else, no sign, and no
 * result past UINT64_MAX. No unit means the table's first (bytes, milliseconds). */
static bool parse_with_units(const char *text, const struct unit *units, uint64_t *out)
{
    const char *s = text;
    uint64_t n = 0;

    if (!text || *s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    if (!*s) {
        *out = n;
        return true;
    }
    while (*s == ' ')
        s++;
    for (const struct unit *u = units; u->name; u++) {
        if (!strcmp(s, u->name)) {
            if (n > UINT64_MAX / u->factor)
                return false;
            *out = n * u->factor;
            return true;
        }
    }
    return false;
}

bool cfg_parse_size(const char *text, uint64_t *out)
{
    return parse_with_units(text, size_units, out);
}

bool cfg_parse_duration(const char *text, uint64_t *out_ms)
{
    return parse_with_units(text, duration_units, out_ms);
}

/* YAML 1.2 core-schema integers, decimal only: [-+]?[0-9]+ within int64. */
static bool parse_i64(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    uint64_t n = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;

    if (*s == '-' || *s == '+')
        s++;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (n > (limit - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = neg ? (int64_t)(0 - n) : (int64_t)n;
    return true;
}

static bool looks_like_int(const char *s)
{
    if (*s == '-' || *s == '+')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* YAML 1.2 core-schema floats: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? and
 * .inf/.nan. Only called once an integer has been ruled out. */
static bool parse_float(const char *s, double *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF") || !strcmp(s, ".nan") ||
        !strcmp(s, ".NaN") || !strcmp(s, ".NAN")) {
        if (p[1] == 'n' || p[1] == 'N')
            *out = NAN;
        else
            *out = *s == '-' ? -INFINITY : INFINITY;
        return true;
    }
    bool digits = false;
    while (*p >= '0' && *p <= '9')
        p++, digits = true;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits = true;
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return false;
    *out = strtod(s, NULL);
    return true;
}

/* ---- schema helpers ----------------------------------------------------------------- */

static const struct cfg_pair *find_pair(const struct cfg_node *map, const char *key)
{
    for (size_t i = 0; map && map->kind == CFG_MAP && i < map->count; i++)
        if (!strcmp(map->pairs[i].key, key))
            return &map->pairs[i];
    return NULL;
}

/* The value of an optional key, or NULL when it is absent or null. */
static const struct cfg_node *field(const struct cfg_node *map, const char *key)
{
    const struct cfg_pair *pr = find_pair(map, key);
    return pr && !is_null(&pr->value) ? &pr->value : NULL;
}

/* The value of a required key (possibly null: the type check that follows says so). */
static int need(const struct wr_config *cfg, const struct cfg_node *map, const char *key,
                const struct cfg_node **out, struct wr_error *err)
{
    const struct cfg_pair *pr = find_pair(map, key);
    if (!pr)
        return cfg_error(cfg, map, err, "missing required key '%s'", key);
    *out = &pr->value;
    return WR_OK;
}

static int expected(const struct wr_config *cfg, const struct cfg_node *n, struct wr_error *err,
                    const char *what)
{
    return cfg_error(cfg, n, err, "expected %s, got %s", what, DESCRIBE(n));
}

/* Refuses a key that keys (NULL-terminated) does not list, at the key's own position. */
static int check_keys(const struct wr_config *cfg, const struct cfg_node *map,
                      const char *const *keys, struct wr_error *err)
{
    for (size_t i = 0; i < map->count; i++) {
        const struct cfg_pair *pr = &map->pairs[i];
        size_t k = 0;
        while (keys[k] && strcmp(keys[k], pr->key))
            k++;
        if (keys[k])
            continue;
        char list[256] = "";
        size_t len = 0;
        for (k = 0; keys[k] && len < sizeof(list); k++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", k ? ", " : "",
                                    keys[k]);
        return error_at(cfg, pr->key_mark, pr->value.path, err,
                        "unknown key (expected one of: %s)", list);
    }
    return WR_OK;
}

static int want_map(const struct wr_config *cfg, const struct cfg_node *n, struct wr_error *err)
{
    return n->kind == CFG_MAP ? WR_OK : expected(cfg, n, err, "a map");
}

static int want_seq(const struct wr_config *cfg, const struct cfg_node *n, struct wr_error *err)
{
    return n->kind == CFG_SEQ ? WR_OK : expected(cfg, n, err, "a list");
}

static int read_str(const struct wr_config *cfg, const struct cfg_node *n, char **out,
                    struct wr_error *err)
{
    if (n->kind != CFG_SCALAR || is_null(n))
        return expected(cfg, n, err, "a string");
    if (!(*out = strdup(n->scalar)))
        return oom(err);
    return WR_OK;
}

static int read_name(const struct wr_config *cfg, const struct cfg_node *n, char **out,
                     struct wr_error *err)
{
    if (n->kind != CFG_SCALAR || is_null(n) || !*n->scalar)
        return expected(cfg, n, err, "a name");
    if (strlen(n->scalar) > CFG_NAME_MAX)
        return cfg_error(cfg, n, err, "a name is at most %d bytes long", CFG_NAME_MAX);
    return read_str(cfg, n, out, err);
}

static int read_bool(const struct wr_config *cfg, const struct cfg_node *n, bool *out,
                     struct wr_error *err)
{
    if (n->kind == CFG_SCALAR && n->plain && !strcmp(n->scalar, "true"))
        *out = true;
    else if (n->kind == CFG_SCALAR && n->plain && !strcmp(n->scalar, "false"))
        *out = false;
    else
        return expected(cfg, n, err, "true or false");
    return WR_OK;
}

static int read_int(const struct wr_config *cfg, const struct cfg_node *n, int64_t min,
                    int64_t max, const char *what, int64_t *out, struct wr_error *err)
{
    int64_t v;
    if (n->kind != CFG_SCALAR || !n->plain || !parse_i64(n->scalar, &v) || v < min || v > max)
        return expected(cfg, n, err, what);
    *out = v;
    return WR_OK;
}

static int read_size(const struct wr_config *cfg, const struct cfg_node *n, uint64_t max,
                     uint64_t *out, struct wr_error *err)
{
    if (n->kind != CFG_SCALAR || !cfg_parse_size(n->scalar, out))
        return expected(cfg, n, err,
                        "a size such as 64MiB (bytes, or a unit: B, KB, MB, GB, TB, KiB, MiB, "
                        "GiB, TiB)");
    if (*out > max)
        return cfg_error(cfg, n, err, "size too large (at most %" PRIu64 " bytes)", max);
    return WR_OK;
}

static int read_duration(const struct wr_config *cfg, const struct cfg_node *n, uint64_t *out,
                         struct wr_error *err)
{
    if (n->kind != CFG_SCALAR || !cfg_parse_duration(n->scalar, out) || *out > INT64_MAX)
        return expected(cfg, n, err,
                        "a duration such as 250ms or 7d (milliseconds, or a unit: ms, s, m, h, "
                        "d, w)");
    return WR_OK;
}

/* An optional flag: absent keeps *out. */
static int opt_bool(const struct wr_config *cfg, const struct cfg_node *map, const char *key,
                    bool *out, struct wr_error *err)
{
    const struct cfg_node *n = field(map, key);
    return n ? read_bool(cfg, n, out, err) : WR_OK;
}

/* An optional `options:`/`arguments:` map: NULL when absent. */
static int opt_map(const struct wr_config *cfg, const struct cfg_node *map, const char *key,
                   const struct cfg_node **out, struct wr_error *err)
{
    *out = field(map, key);
    return *out ? want_map(cfg, *out, err) : WR_OK;
}

/* A list of strings as a NULL-terminated array. */
static int read_str_list(const struct wr_config *cfg, const struct cfg_node *n, char ***out,
                         struct wr_error *err)
{
    int rc = want_seq(cfg, n, err);
    if (rc)
        return rc;
    if (!(*out = calloc(n->count + 1, sizeof(**out))))
        return oom(err);
    for (size_t i = 0; i < n->count; i++)
        if ((rc = read_str(cfg, &n->items[i], &(*out)[i], err)))
            return rc;
    return WR_OK;
}

/* A list section (listeners, vhosts[0].queues...): NULL n is an empty one. Allocates
 * n->count zeroed elements so the caller fills them in place and wr_config_free sees
 * whatever was filled when an error stops it. */
static int alloc_section(const struct wr_config *cfg, const struct cfg_node *n, void **arr,
                         size_t *count, size_t elem, struct wr_error *err)
{
    *arr = NULL;
    *count = 0;
    if (!n)
        return WR_OK;
    int rc = want_seq(cfg, n, err);
    if (rc || !n->count)
        return rc;
    if (!(*arr = calloc(n->count, elem)))
        return oom(err);
    *count = n->count;
    return WR_OK;
}

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Where an earlier name was declared, for "duplicate ... (first at ...)". */
static int duplicate(const struct wr_config *cfg, const struct cfg_node *n, const char *what,
                     const char *name, const struct cfg_node *first, struct wr_error *err)
{
    const struct cfg_node *fn = field(first, "name");
    struct cfg_mark m = fn ? fn->mark : first->mark;
    return cfg_error(cfg, n, err, "duplicate %s '%s' (first at line %u, column %u)", what, name,
                     m.line, m.col);
}

static int reserved(const struct wr_config *cfg, const struct cfg_node *n, const char *name,
                    struct wr_error *err)
{
    if (strncmp(name, "amq.", 4))
        return WR_OK;
    return cfg_error(cfg, n, err, "names starting with 'amq.' are reserved for the broker, "
                                  "got '%s'", name);
}

/* ---- the schema walk ---------------------------------------------------------------- */

static const char *const root_keys[] = {"broker", "plugins", "listeners", "vhosts", "users",
                                        NULL};
static const char *const broker_keys[] = {"data_dir", "plugin_dirs", "log_level",
                                          "max_message_size", "memory_high_watermark", NULL};
static const char *const plugin_keys[] = {"name", "path", NULL};
static const char *const listener_keys[] = {"transport", "host", "port", "options", NULL};
static const char *const vhost_keys[] = {"name", "exchanges", "queues", "bindings",
                                         "amqp_storage", NULL};
/* In wr_storage_role order. */
static const char *const amqp_storage_keys[] = {"durable", "transient", "stream", NULL};
static const char *const exchange_keys[] = {"name", "type", "durable", "auto_delete",
                                            "internal", "options", NULL};
static const char *const queue_keys[] = {"name", "storage", "durable", "exclusive",
                                         "auto_delete", "max_length", "max_length_bytes",
                                         "overflow", "partitions", "message_ttl", "expires",
                                         "dead_letter_exchange", "dead_letter_routing_key",
                                         "forward_to", "options", NULL};
static const char *const binding_keys[] = {"exchange", "queue", "to_exchange", "key",
                                           "arguments", NULL};
static const char *const user_keys[] = {"name", "password", "vhosts", "lua_scripts", NULL};

static int load_broker(struct wr_config *cfg, struct wr_error *err)
{
    const struct cfg_node *b = field(&cfg->root, "broker"), *n = NULL;
    int rc;

    if (!(cfg->data_dir = strdup("./warren-data")))
        return oom(err);
    cfg->log_level = WR_LOG_INFO;
    cfg->max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
    /* RabbitMQ's default vm_memory_high_watermark: 40% of the machine's memory. */
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    cfg->memory_high_watermark = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 10 * 4
                                                       : 0;
    if (!b)
        return WR_OK;
    if ((rc = want_map(cfg, b, err)) || (rc = check_keys(cfg, b, broker_keys, err)))
        return rc;
    if ((n = field(b, "data_dir"))) {
        free(cfg->data_dir);
        cfg->data_dir = NULL;
        if ((rc = read_str(cfg, n, &cfg->data_dir, err)))
            return rc;
    }
    if ((n = field(b, "plugin_dirs"))) {
        if ((rc = read_str_list(cfg, n, &cfg->plugin_dirs, err)))
            return rc;
        if (!cfg->plugin_dirs[0]) { /* an empty list names none: the server decides */
            free(cfg->plugin_dirs);
            cfg->plugin_dirs = NULL;
        }
    }
    if ((n = field(b, "log_level"))) {
        size_t i = 0;
        while (i < 4 && (n->kind != CFG_SCALAR || strcmp(n->scalar, log_level_names[i])))
            i++;
        if (i == 4)
            return expected(cfg, n, err, "one of: error, warn, info, debug");
        cfg->log_level = (enum wr_log_level)i;
    }
    if ((n = field(b, "max_message_size"))) {
        if ((rc = read_size(cfg, n, UINT64_MAX, &cfg->max_message_size, err)))
            return rc;
        if (!cfg->max_message_size)
            return cfg_error(cfg, n, err, "expected a size of at least 1 byte, got '0'");
    }
    if ((n = field(b, "memory_high_watermark")) &&
        (rc = read_size(cfg, n, UINT64_MAX, &cfg->memory_high_watermark, err)))
        return rc;
    return WR_OK;
}

static int load_plugins(struct wr_config *cfg, struct wr_error *err)
{
    const struct cfg_node *sec = field(&cfg->root, "plugins"), *n = NULL;
    int rc = alloc_section(cfg, sec, (void **)&cfg->plugins, &cfg->n_plugins,
                           sizeof(*cfg->plugins), err);

    for (size_t i = 0; !rc && i < cfg->n_plugins; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_plugin *pl = &cfg->plugins[i];
        pl->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, plugin_keys, err)) ||
            (rc = need(cfg, m, "name", &n, err)) || (rc = read_name(cfg, n, &pl->name, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(cfg->plugins[j].name, pl->name))
                return duplicate(cfg, n, "plugin", pl->name, cfg->plugins[j].node, err);
        if ((n = field(m, "path")))
            rc = read_str(cfg, n, &pl->path, err);
    }
    return rc;
}

static int load_listeners(struct wr_config *cfg, struct wr_error *err)
{
    const struct cfg_node *sec = field(&cfg->root, "listeners"), *n = NULL;
    int rc = alloc_section(cfg, sec, (void **)&cfg->listeners, &cfg->n_listeners,
                           sizeof(*cfg->listeners), err);

    for (size_t i = 0; !rc && i < cfg->n_listeners; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_listener *ls = &cfg->listeners[i];
        int64_t port = 0;
        ls->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, listener_keys, err)) ||
            (rc = need(cfg, m, "transport", &n, err)) ||
            (rc = read_name(cfg, n, &ls->transport, err)))
            return rc;
        if ((n = field(m, "host")))
            rc = read_str(cfg, n, &ls->host, err);
        else if (!(ls->host = strdup("127.0.0.1")))
            rc = oom(err);
        if (rc || (rc = need(cfg, m, "port", &n, err)) ||
            (rc = read_int(cfg, n, 0, 65535, "a port number from 0 to 65535", &port, err)))
            return rc;
        ls->port = (uint16_t)port;
        for (size_t j = 0; port && j < i; j++)
            if (cfg->listeners[j].port == ls->port && !strcmp(cfg->listeners[j].host, ls->host))
                return cfg_error(cfg, n, err, "a listener on %s:%u is already at line %u",
                                 ls->host, ls->port, cfg->listeners[j].node->mark.line);
        rc = opt_map(cfg, m, "options", &ls->options, err);
    }
    return rc;
}

static int load_exchanges(struct wr_config *cfg, const struct cfg_node *sec,
                          struct cfg_vhost *vh, struct wr_error *err)
{
    const struct cfg_node *n = NULL;
    int rc = alloc_section(cfg, sec, (void **)&vh->exchanges, &vh->n_exchanges,
                           sizeof(*vh->exchanges), err);

    for (size_t i = 0; !rc && i < vh->n_exchanges; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_exchange *ex = &vh->exchanges[i];
        ex->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, exchange_keys, err)) ||
            (rc = need(cfg, m, "name", &n, err)) || (rc = read_name(cfg, n, &ex->name, err)) ||
            (rc = reserved(cfg, n, ex->name, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(vh->exchanges[j].name, ex->name))
                return duplicate(cfg, n, "exchange", ex->name, vh->exchanges[j].node, err);
        if ((rc = need(cfg, m, "type", &n, err)) || (rc = read_name(cfg, n, &ex->type, err)) ||
            (rc = opt_bool(cfg, m, "durable", &ex->durable, err)) ||
            (rc = opt_bool(cfg, m, "auto_delete", &ex->auto_delete, err)) ||
            (rc = opt_bool(cfg, m, "internal", &ex->internal, err)))
            return rc;
        rc = opt_map(cfg, m, "options", &ex->options, err);
    }
    return rc;
}

static int load_queue(struct wr_config *cfg, const struct cfg_node *m, struct cfg_queue *q,
                      struct wr_error *err)
{
    const struct cfg_node *n = NULL;
    int64_t v;
    uint64_t bytes;
    int rc;

    if ((n = field(m, "storage")))
        rc = read_name(cfg, n, &q->storage, err);
    else
        rc = (q->storage = strdup("memory")) ? WR_OK : oom(err);
    if (rc || (rc = opt_bool(cfg, m, "durable", &q->durable, err)) ||
        (rc = opt_bool(cfg, m, "exclusive", &q->exclusive, err)) ||
        (rc = opt_bool(cfg, m, "auto_delete", &q->auto_delete, err)))
        return rc;
    if ((n = field(m, "max_length"))) {
        if ((rc = read_int(cfg, n, 0, INT64_MAX, "a non-negative integer", &v, err)))
            return rc;
        q->max_length = v;
    }
    if ((n = field(m, "max_length_bytes"))) {
        if ((rc = read_size(cfg, n, INT64_MAX, &bytes, err)))
            return rc;
        q->max_length_bytes = (int64_t)bytes;
    }
    if ((n = field(m, "overflow"))) {
        if (n->kind == CFG_SCALAR && !strcmp(n->scalar, "drop-head"))
            q->overflow = WR_OVERFLOW_DROP_HEAD;
        else if (n->kind == CFG_SCALAR && !strcmp(n->scalar, "reject-publish"))
            q->overflow = WR_OVERFLOW_REJECT_PUBLISH;
        else
            return expected(cfg, n, err, "drop-head or reject-publish");
    }
    if ((n = field(m, "partitions"))) {
        if ((rc = read_int(cfg, n, 1, INT32_MAX, "an integer from 1 to 2147483647", &v, err)))
            return rc;
        q->partitions = (uint32_t)v;
    }
    if ((n = field(m, "message_ttl"))) {
        if ((rc = read_duration(cfg, n, &bytes, err)))
            return rc;
        q->message_ttl_ms = (int64_t)bytes;
    }
    if ((n = field(m, "expires"))) {
        if ((rc = read_duration(cfg, n, &bytes, err)))
            return rc;
        if (!bytes)
            return expected(cfg, n, err, "a duration of at least 1ms");
        q->expires_ms = (int64_t)bytes;
    }
    if ((n = field(m, "dead_letter_exchange")) &&
        (rc = read_str(cfg, n, &q->dead_letter_exchange, err)))
        return rc;
    if ((n = field(m, "dead_letter_routing_key")) &&
        (rc = read_str(cfg, n, &q->dead_letter_routing_key, err)))
        return rc;
    if ((q->forward_to_node = field(m, "forward_to")) &&
        (rc = read_str(cfg, q->forward_to_node, &q->forward_to, err)))
        return rc;
    return opt_map(cfg, m, "options", &q->options, err);
}

static int check_exchange_ref(const struct wr_config *cfg, const struct cfg_vhost *vh,
                              const struct cfg_node *n, const char *name, struct wr_error *err);

static int load_queues(struct wr_config *cfg, const struct cfg_node *sec, struct cfg_vhost *vh,
                       struct wr_error *err)
{
    const struct cfg_node *n = NULL;
    int rc = alloc_section(cfg, sec, (void **)&vh->queues, &vh->n_queues, sizeof(*vh->queues),
                           err);

    for (size_t i = 0; !rc && i < vh->n_queues; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_queue *q = &vh->queues[i];
        q->node = m;
        q->max_length = -1;
        q->max_length_bytes = -1;
        q->overflow = WR_OVERFLOW_DROP_HEAD;
        q->partitions = 1;
        q->message_ttl_ms = -1;
        q->expires_ms = -1;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, queue_keys, err)) ||
            (rc = need(cfg, m, "name", &n, err)) || (rc = read_name(cfg, n, &q->name, err)) ||
            (rc = reserved(cfg, n, q->name, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(vh->queues[j].name, q->name))
                return duplicate(cfg, n, "queue", q->name, vh->queues[j].node, err);
        rc = load_queue(cfg, m, q, err);
        /* Records go to an exchange of this vhost; the default exchange "" is one too (it
         * routes by the record key to the queue of that name). Whether the queue is a log
         * is known once its storage plugin is loaded (server.c). */
        if (!rc && q->forward_to && *q->forward_to)
            rc = check_exchange_ref(cfg, vh, q->forward_to_node, q->forward_to, err);
    }
    return rc;
}

/* An exchange a binding may name: declared in this vhost or predeclared, never the default
 * exchange (RabbitMQ refuses binding to or from it: every queue is bound to it already). */
static int check_exchange_ref(const struct wr_config *cfg, const struct cfg_vhost *vh,
                              const struct cfg_node *n, const char *name, struct wr_error *err)
{
    if (!*name)
        return cfg_error(cfg, n, err, "cannot bind to or from the default exchange \"\" "
                                      "(every queue is bound to it by its own name)");
    for (size_t i = 0; predeclared_exchanges[i]; i++)
        if (!strcmp(predeclared_exchanges[i], name))
            return WR_OK;
    for (size_t i = 0; i < vh->n_exchanges; i++)
        if (!strcmp(vh->exchanges[i].name, name))
            return WR_OK;
    return cfg_error(cfg, n, err, "no exchange '%s' in vhost '%s' (declare it under exchanges)",
                     name, vh->name);
}

static int load_bindings(struct wr_config *cfg, const struct cfg_node *sec,
                         struct cfg_vhost *vh, struct wr_error *err)
{
    const struct cfg_node *n = NULL;
    int rc = alloc_section(cfg, sec, (void **)&vh->bindings, &vh->n_bindings,
                           sizeof(*vh->bindings), err);

    for (size_t i = 0; !rc && i < vh->n_bindings; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_binding *bd = &vh->bindings[i];
        bd->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, binding_keys, err)) ||
            (rc = need(cfg, m, "exchange", &n, err)) ||
            (rc = read_str(cfg, n, &bd->exchange, err)) ||
            (rc = check_exchange_ref(cfg, vh, n, bd->exchange, err)))
            return rc;

        const struct cfg_pair *qp = find_pair(m, "queue"), *xp = find_pair(m, "to_exchange");
        if (qp && is_null(&qp->value))
            qp = NULL;
        if (xp && is_null(&xp->value))
            xp = NULL;
        if (qp && xp)
            return error_at(cfg, xp->key_mark, xp->value.path, err,
                            "a binding has either 'queue' or 'to_exchange', not both");
        if (!qp && !xp)
            return cfg_error(cfg, m, err, "missing required key 'queue' (or 'to_exchange')");
        if (qp) {
            size_t j = 0;
            if ((rc = read_str(cfg, &qp->value, &bd->queue, err)))
                return rc;
            while (j < vh->n_queues && strcmp(vh->queues[j].name, bd->queue))
                j++;
            if (j == vh->n_queues)
                return cfg_error(cfg, &qp->value, err,
                                 "no queue '%s' in vhost '%s' (declare it under queues)",
                                 bd->queue, vh->name);
        } else if ((rc = read_str(cfg, &xp->value, &bd->to_exchange, err)) ||
                   (rc = check_exchange_ref(cfg, vh, &xp->value, bd->to_exchange, err))) {
            return rc;
        }
        if ((n = field(m, "key")))
            rc = read_str(cfg, n, &bd->key, err);
        else if (!(bd->key = strdup("")))
            rc = oom(err);
        if (!rc)
            rc = opt_map(cfg, m, "arguments", &bd->arguments, err);
    }
    return rc;
}

static int load_vhosts(struct wr_config *cfg, struct wr_error *err)
{
    const struct cfg_node *sec = field(&cfg->root, "vhosts"), *n = NULL;
    int rc;

    if (!sec) {
        /* No vhosts section: the one vhost "/" every broker has. */
        if (!(cfg->vhosts = calloc(1, sizeof(*cfg->vhosts))))
            return oom(err);
        cfg->n_vhosts = 1;
        return (cfg->vhosts[0].name = strdup("/")) ? WR_OK : oom(err);
    }
    rc = alloc_section(cfg, sec, (void **)&cfg->vhosts, &cfg->n_vhosts, sizeof(*cfg->vhosts),
                       err);
    for (size_t i = 0; !rc && i < cfg->n_vhosts; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_vhost *vh = &cfg->vhosts[i];
        vh->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, vhost_keys, err)) ||
            (rc = need(cfg, m, "name", &n, err)) || (rc = read_name(cfg, n, &vh->name, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(cfg->vhosts[j].name, vh->name))
                return duplicate(cfg, n, "vhost", vh->name, cfg->vhosts[j].node, err);
        const struct cfg_node *st = field(m, "amqp_storage");
        if (st && ((rc = want_map(cfg, st, err)) ||
                   (rc = check_keys(cfg, st, amqp_storage_keys, err))))
            return rc;
        for (size_t k = 0; st && k < 3; k++)
            if ((vh->amqp_storage_node[k] = field(st, amqp_storage_keys[k])) &&
                (rc = read_name(cfg, vh->amqp_storage_node[k], &vh->amqp_storage[k], err)))
                return rc;
        if ((rc = load_exchanges(cfg, field(m, "exchanges"), vh, err)) ||
            (rc = load_queues(cfg, field(m, "queues"), vh, err)))
            return rc;
        rc = load_bindings(cfg, field(m, "bindings"), vh, err);
    }
    return rc;
}

static bool has_vhost(const struct wr_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_vhosts; i++)
        if (!strcmp(cfg->vhosts[i].name, name))
            return true;
    return false;
}

static int load_users(struct wr_config *cfg, struct wr_error *err)
{
    const struct cfg_node *sec = field(&cfg->root, "users"), *n = NULL;
    int rc;

    if (!sec) {
        /* RabbitMQ's default user, on "/" when there is one. */
        bool root = has_vhost(cfg, "/");
        if (!(cfg->users = calloc(1, sizeof(*cfg->users))))
            return oom(err);
        cfg->n_users = 1;
        struct cfg_user *u = &cfg->users[0];
        u->name = strdup("guest");
        u->password = strdup("guest");
        u->vhosts = calloc(2, sizeof(*u->vhosts));
        if (!u->name || !u->password || !u->vhosts || (root && !(u->vhosts[0] = strdup("/"))))
            return oom(err);
        return WR_OK;
    }
    rc = alloc_section(cfg, sec, (void **)&cfg->users, &cfg->n_users, sizeof(*cfg->users), err);
    for (size_t i = 0; !rc && i < cfg->n_users; i++) {
        const struct cfg_node *m = &sec->items[i];
        struct cfg_user *u = &cfg->users[i];
        u->node = m;
        if ((rc = want_map(cfg, m, err)) || (rc = check_keys(cfg, m, user_keys, err)) ||
            (rc = need(cfg, m, "name", &n, err)) || (rc = read_name(cfg, n, &u->name, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(cfg->users[j].name, u->name))
                return duplicate(cfg, n, "user", u->name, cfg->users[j].node, err);
        if ((rc = need(cfg, m, "password", &n, err)) ||
            (rc = read_str(cfg, n, &u->password, err)) ||
            (rc = opt_bool(cfg, m, "lua_scripts", &u->lua_scripts, err)))
            return rc;
        if (!(n = field(m, "vhosts"))) {
            /* No vhosts: a user who may log in nowhere, as RabbitMQ's new users. */
            if (!(u->vhosts = calloc(1, sizeof(*u->vhosts))))
                return oom(err);
            continue;
        }
        if ((rc = read_str_list(cfg, n, &u->vhosts, err)))
            return rc;
        for (size_t j = 0; u->vhosts[j]; j++)
            if (!has_vhost(cfg, u->vhosts[j]))
                return cfg_error(cfg, &n->items[j], err, "no vhost '%s' (declare it under "
                                                        "vhosts)", u->vhosts[j]);
    }
    return rc;
}

/* ---- loading and freeing ------------------------------------------------------------ */

int wr_config_load_string(const char *name, const char *text, size_t len,
                          struct wr_config **out, struct wr_error *err)
{
    struct wr_config *cfg = calloc(1, sizeof(*cfg));
    struct parse p = {.text = text, .len = len, .err = err};
    int rc;

    *out = NULL;
    if (!cfg || !(cfg->file = strdup(name ? name : "config"))) {
        free(cfg);
        return oom(err);
    }
    p.cfg = cfg;
    if (!yaml_parser_initialize(&p.yp)) {
        wr_config_free(cfg);
        return oom(err);
    }
    yaml_parser_set_input_string(&p.yp, (const unsigned char *)text, len);
    rc = parse_stream(&p);
    yaml_parser_delete(&p.yp);

    if (!rc)
        rc = check_keys(cfg, &cfg->root, root_keys, err);
    if (!rc)
        rc = load_broker(cfg, err);
    if (!rc)
        rc = load_plugins(cfg, err);
    if (!rc)
        rc = load_listeners(cfg, err);
    if (!rc)
        rc = load_vhosts(cfg, err);
    if (!rc)
        rc = load_users(cfg, err);
    if (rc) {
        wr_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return WR_OK;
}

int wr_config_load_file(const char *path, struct wr_config **out, struct wr_error *err)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int fd;

    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return wr_error_sys(err, WR_EIO, "cannot open config file '%s'", path);
    if (fstat(fd, &st) < 0) {
        int rc = wr_error_sys(err, WR_EIO, "cannot read config file '%s'", path);
        close(fd);
        return rc;
    }
    /* One byte more than the size, so the read that sees the end needs no second block
     * (files in /proc say 0 and grow as they go). */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    if (!(text = malloc(cap))) {
        close(fd);
        return oom(err);
    }
    for (;;) {
        if (len == cap) {
            char *t = realloc(text, cap * 2);
            if (!t) {
                free(text);
                close(fd);
                return oom(err);
            }
            text = t;
            cap *= 2;
        }
        ssize_t r = read(fd, text + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int rc = wr_error_sys(err, WR_EIO, "cannot read config file '%s'", path);
            free(text);
            close(fd);
            return rc;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    int rc = wr_config_load_string(path, text, len, out, err);
    free(text);
    return rc;
}

void wr_config_free(struct wr_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        free(cfg->plugins[i].name);
        free(cfg->plugins[i].path);
    }
    free(cfg->plugins);
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        free(cfg->listeners[i].transport);
        free(cfg->listeners[i].host);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->n_vhosts; i++) {
        struct cfg_vhost *vh = &cfg->vhosts[i];
        for (size_t j = 0; j < vh->n_exchanges; j++) {
            free(vh->exchanges[j].name);
            free(vh->exchanges[j].type);
        }
        free(vh->exchanges);
        for (size_t j = 0; j < vh->n_queues; j++) {
            free(vh->queues[j].name);
            free(vh->queues[j].storage);
            free(vh->queues[j].dead_letter_exchange);
            free(vh->queues[j].dead_letter_routing_key);
            free(vh->queues[j].forward_to);
        }
        free(vh->queues);
        for (size_t j = 0; j < vh->n_bindings; j++) {
            free(vh->bindings[j].exchange);
            free(vh->bindings[j].queue);
            free(vh->bindings[j].to_exchange);
            free(vh->bindings[j].key);
        }
        free(vh->bindings);
        for (size_t k = 0; k < 3; k++)
            free(vh->amqp_storage[k]);
        free(vh->name);
    }
    free(cfg->vhosts);
    for (size_t i = 0; i < cfg->n_users; i++) {
        free(cfg->users[i].name);
        free(cfg->users[i].password);
        free_strv(cfg->users[i].vhosts);
    }
    free(cfg->users);
    free(cfg->data_dir);
    free_strv(cfg->plugin_dirs);
    node_fini(&cfg->root);
    free(cfg->file);
    free(cfg);
}

/* ---- options and arguments to tables ------------------------------------------------ */

static int value_of(const struct wr_config *cfg, const struct cfg_node *n, struct wr_value *v,
                    struct wr_table **tab, struct wr_array **arr, struct wr_error *err);

static int args_table(const struct wr_config *cfg, const struct cfg_node *n,
                      struct wr_table **out, struct wr_error *err);

/* A list's items under cfg_args_table's rules. */
static int args_array(const struct wr_config *cfg, const struct cfg_node *n,
                      struct wr_array **out, struct wr_error *err)
{
    struct wr_array *a = wr_array_new();
    int rc = a ? WR_OK : oom(err);

    for (size_t i = 0; !rc && i < n->count; i++) {
        struct wr_value v;
        struct wr_table *tab = NULL;
        struct wr_array *sub = NULL;
        if (!(rc = value_of(cfg, &n->items[i], &v, &tab, &sub, err)) && wr_array_add(a, &v))
            rc = oom(err);
        wr_table_free(tab);
        wr_array_free(sub);
    }
    if (rc) {
        wr_array_free(a);
        return rc;
    }
    *out = a;
    return WR_OK;
}

/* A node as a value with no schema. A nested table or array is returned in *tab or *arr
 * for the caller to free once the value has been copied in. */
static int value_of(const struct wr_config *cfg, const struct cfg_node *n, struct wr_value *v,
                    struct wr_table **tab, struct wr_array **arr, struct wr_error *err)
{
    int rc;
    if (n->kind == CFG_MAP) {
        if ((rc = args_table(cfg, n, tab, err)))
            return rc;
        *v = (struct wr_value){.type = WR_V_TABLE, .u.table = *tab};
        return WR_OK;
    }
    if (n->kind == CFG_SEQ) {
        if ((rc = args_array(cfg, n, arr, err)))
            return rc;
        *v = (struct wr_value){.type = WR_V_ARRAY, .u.array = *arr};
        return WR_OK;
    }
    int64_t i;
    double d;
    if (!n->plain) {
        *v = wr_value_str(n->scalar);
    } else if (is_null(n)) {
        *v = (struct wr_value){.type = WR_V_VOID};
    } else if (!strcmp(n->scalar, "true") || !strcmp(n->scalar, "false")) {
        *v = wr_value_bool(n->scalar[0] == 't');
    } else if (looks_like_int(n->scalar)) {
        if (!parse_i64(n->scalar, &i))
            return cfg_error(cfg, n, err, "integer out of range (quote it to pass a string)");
        *v = wr_value_i64(i);
    } else if (parse_float(n->scalar, &d)) {
        *v = (struct wr_value){.type = WR_V_DOUBLE, .u.d = d};
    } else {
        *v = wr_value_str(n->scalar);
    }
    return WR_OK;
}

static int args_table(const struct wr_config *cfg, const struct cfg_node *n,
                      struct wr_table **out, struct wr_error *err)
{
    struct wr_table *t = wr_table_new();
    int rc = t ? WR_OK : oom(err);

    for (size_t i = 0; !rc && i < n->count; i++) {
        struct wr_value v;
        struct wr_table *tab = NULL;
        struct wr_array *arr = NULL;
        if (!(rc = value_of(cfg, &n->pairs[i].value, &v, &tab, &arr, err)) &&
            wr_table_add(t, n->pairs[i].key, &v))
            rc = oom(err);
        wr_table_free(tab);
        wr_array_free(arr);
    }
    if (rc) {
        wr_table_free(t);
        return rc;
    }
    *out = t;
    return WR_OK;
}

int cfg_args_table(const struct wr_config *cfg, const struct cfg_node *node,
                   struct wr_table **out, struct wr_error *err)
{
    *out = NULL;
    if (!node || is_null(node)) {
        *out = wr_table_new();
        return *out ? WR_OK : oom(err);
    }
    int rc = want_map(cfg, node, err);
    return rc ? rc : args_table(cfg, node, out, err);
}

static const char *const option_type_names[] = {
    [WR_OPT_BOOL] = "true or false",
    [WR_OPT_INT] = "an integer",
    [WR_OPT_SIZE] = "a size such as 64MiB",
    [WR_OPT_DURATION] = "a duration such as 250ms or 7d",
    [WR_OPT_STRING] = "a string",
    [WR_OPT_TABLE] = "a map",
    [WR_OPT_LIST] = "a list",
};

/* One option checked against its row of the plugin's schema. */
static int option_value(const struct wr_config *cfg, const struct cfg_node *n,
                        const struct wr_option *opt, struct wr_table *t, struct wr_error *err)
{
    struct wr_value v = {.type = WR_V_VOID};
    struct wr_table *tab = NULL;
    struct wr_array *arr = NULL;
    uint64_t u;
    int64_t i;
    bool b = false;
    int rc = WR_OK;

    switch (opt->type) {
    case WR_OPT_BOOL:
        if (!(rc = read_bool(cfg, n, &b, err)))
            v = wr_value_bool(b);
        break;
    case WR_OPT_INT:
        if (!(rc = read_int(cfg, n, INT64_MIN, INT64_MAX, "an integer", &i, err)))
            v = wr_value_i64(i);
        break;
    case WR_OPT_SIZE:
        if (!(rc = read_size(cfg, n, INT64_MAX, &u, err)))
            v = wr_value_i64((int64_t)u);
        break;
    case WR_OPT_DURATION:
        if (!(rc = read_duration(cfg, n, &u, err)))
            v = wr_value_i64((int64_t)u);
        break;
    case WR_OPT_STRING:
        if (n->kind != CFG_SCALAR || is_null(n))
            rc = expected(cfg, n, err, "a string");
        else
            v = wr_value_str(n->scalar);
        break;
    case WR_OPT_TABLE:
        if (!(rc = want_map(cfg, n, err)))
            rc = value_of(cfg, n, &v, &tab, &arr, err);
        break;
    case WR_OPT_LIST:
        if (!(rc = want_seq(cfg, n, err)))
            rc = value_of(cfg, n, &v, &tab, &arr, err);
        break;
    default:
        rc = cfg_error(cfg, n, err, "option '%s' has an unknown type %d in its plugin's schema",
                       opt->name, (int)opt->type);
    }
    if (!rc && wr_table_add(t, opt->name, &v))
        rc = oom(err);
    wr_table_free(tab);
    wr_array_free(arr);
    return rc;
}

/* Whether schema has a WR_OPTION_ANY row: keys it does not name are taken as they are. */
static bool takes_any(const struct wr_option *schema)
{
    for (const struct wr_option *opt = schema; opt && opt->name; opt++)
        if (!strcmp(opt->name, WR_OPTION_ANY))
            return true;
    return false;
}

int cfg_options_table(const struct wr_config *cfg, const struct cfg_node *node,
                      const struct cfg_node *owner, const char *plugin,
                      const struct wr_option *schema, struct wr_table **out,
                      struct wr_error *err)
{
    struct wr_table *t;
    int rc = WR_OK;

    *out = NULL;
    if (node && is_null(node))
        node = NULL;
    if (node && (rc = want_map(cfg, node, err)))
        return rc;
    if (!(t = wr_table_new()))
        return oom(err);
    for (size_t i = 0; !rc && node && i < node->count; i++) {
        const struct cfg_pair *pr = &node->pairs[i];
        const struct wr_option *opt = schema;
        while (opt && opt->name && strcmp(opt->name, pr->key))
            opt++;
        if (opt && opt->name && strcmp(opt->name, WR_OPTION_ANY)) {
            if (!is_null(&pr->value))
                rc = option_value(cfg, &pr->value, opt, t, err);
            continue;
        }
        if (takes_any(schema)) {
            struct wr_value v;
            struct wr_table *tab = NULL;
            struct wr_array *arr = NULL;
            if (!is_null(&pr->value) &&
                !(rc = value_of(cfg, &pr->value, &v, &tab, &arr, err)) &&
                wr_table_add(t, pr->key, &v))
                rc = oom(err);
            wr_table_free(tab);
            wr_array_free(arr);
            continue;
        }
        char list[256] = "";
        size_t len = 0;
        for (opt = schema; opt && opt->name && len < sizeof(list); opt++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
                                    opt == schema ? "" : ", ", opt->name);
        if (!schema || !schema->name)
            rc = error_at(cfg, pr->key_mark, pr->value.path, err,
                          "unknown option (plugin '%s' takes no options)", plugin);
        else
            rc = error_at(cfg, pr->key_mark, pr->value.path, err,
                          "unknown option for plugin '%s' (expected one of: %s)", plugin, list);
    }
    for (const struct wr_option *opt = schema; !rc && opt && opt->name; opt++) {
        if (!opt->required || wr_table_get(t, opt->name))
            continue;
        char what[256];
        snprintf(what, sizeof(what), "%s%s%s",
                 opt->type >= WR_OPT_BOOL && opt->type <= WR_OPT_LIST
                     ? option_type_names[opt->type] : "a value",
                 opt->doc ? ": " : "", opt->doc ? opt->doc : "");
        if (node || owner)
            rc = cfg_error(cfg, node ? node : owner, err,
                           "missing required option '%s' of plugin '%s' (%s)", opt->name,
                           plugin, what);
        else
            rc = wr_error_set(err, WR_EINVAL, "%s: plugin '%s' needs the option '%s' (%s)",
                              cfg->file, plugin, opt->name, what);
    }
    if (rc) {
        wr_table_free(t);
        return rc;
    }
    *out = t;
    return WR_OK;
}

/* ---- the embedded default and printing ---------------------------------------------- */

static const char default_text[] =
    "# warren's built-in config, used when no file is given.\n"
    "broker:\n"
    "  data_dir: ./warren-data\n"
    "  log_level: info\n"
    "# AMQP 0-9-1 on 5672; the kafka listener on 9092 joins when that transport lands.\n"
    "listeners:\n"
    "  - {transport: amqp091, port: 5672}\n"
    "vhosts:\n"
    "  - name: /\n"
    "users:\n"
    "  - {name: guest, password: guest, vhosts: [\"/\"]}\n";

const char *wr_config_default_text(void)
{
    return default_text;
}

/* 134217728 prints as 128MiB; sizes print with the largest binary unit that divides them. */
static const char *size_text(uint64_t v, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (v && u < 4 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, "%" PRIu64 "%s", v, units[u]);
    return buf;
}

/* A node in YAML flow style, for options and arguments. */
static void print_node(FILE *out, const struct cfg_node *n)
{
    if (n->kind == CFG_SCALAR) {
        if (n->plain) {
            fputs(n->scalar, out);
            return;
        }
        fputc('"', out);
        for (const char *s = n->scalar; *s; s++) {
            if (*s == '"' || *s == '\\')
                fputc('\\', out);
            fputc(*s, out);
        }
        fputc('"', out);
        return;
    }
    bool map = n->kind == CFG_MAP;
    fputc(map ? '{' : '[', out);
    for (size_t i = 0; i < n->count; i++) {
        if (i)
            fputs(", ", out);
        if (map)
            fprintf(out, "%s: ", n->pairs[i].key);
        print_node(out, map ? &n->pairs[i].value : &n->items[i]);
    }
    fputc(map ? '}' : ']', out);
}

static void print_options(FILE *out, const char *label, const struct cfg_node *n)
{
    if (!n)
        return;
    fprintf(out, ", %s ", label);
    print_node(out, n);
}

static void print_vhost(FILE *out, const struct cfg_vhost *vh)
{
    char buf[32];

    fprintf(out, "vhost %s:\n", vh->name);
    fprintf(out, "  exchanges:%s\n", vh->n_exchanges ? "" : " none");
    for (size_t i = 0; i < vh->n_exchanges; i++) {
        const struct cfg_exchange *ex = &vh->exchanges[i];
        fprintf(out, "    %s: %s%s%s%s", ex->name, ex->type, ex->durable ? ", durable" : "",
                ex->auto_delete ? ", auto_delete" : "", ex->internal ? ", internal" : "");
        print_options(out, "options", ex->options);
        fputc('\n', out);
    }
    fprintf(out, "  queues:%s\n", vh->n_queues ? "" : " none");
    for (size_t i = 0; i < vh->n_queues; i++) {
        const struct cfg_queue *q = &vh->queues[i];
        fprintf(out, "    %s: %s%s%s%s", q->name, q->storage, q->durable ? ", durable" : "",
                q->exclusive ? ", exclusive" : "", q->auto_delete ? ", auto_delete" : "");
        if (q->max_length >= 0)
            fprintf(out, ", max_length %" PRId64, q->max_length);
        if (q->max_length_bytes >= 0)
            fprintf(out, ", max_length_bytes %s",
                    size_text((uint64_t)q->max_length_bytes, buf, sizeof(buf)));
        if (q->max_length >= 0 || q->max_length_bytes >= 0)
            fprintf(out, ", overflow %s",
                    q->overflow == WR_OVERFLOW_REJECT_PUBLISH ? "reject-publish" : "drop-head");
        if (q->partitions != 1)
            fprintf(out, ", partitions %" PRIu32, q->partitions);
        if (q->message_ttl_ms >= 0)
            fprintf(out, ", message_ttl %" PRId64 "ms", q->message_ttl_ms);
        if (q->expires_ms >= 0)
            fprintf(out, ", expires %" PRId64 "ms", q->expires_ms);
        if (q->dead_letter_exchange)
            fprintf(out, ", dead_letter_exchange \"%s\"", q->dead_letter_exchange);
        if (q->dead_letter_routing_key)
            fprintf(out, ", dead_letter_routing_key \"%s\"", q->dead_letter_routing_key);
        if (q->forward_to)
            fprintf(out, ", forward_to \"%s\"", q->forward_to);
        print_options(out, "options", q->options);
        fputc('\n', out);
    }
    fprintf(out, "  bindings:%s\n", vh->n_bindings ? "" : " none");
    for (size_t i = 0; i < vh->n_bindings; i++) {
        const struct cfg_binding *bd = &vh->bindings[i];
        fprintf(out, "    %s -> %s%s (%s)", bd->exchange, bd->queue ? "" : "exchange ",
                bd->queue ? bd->queue : bd->to_exchange, *bd->key ? bd->key : "\"\"");
        print_options(out, "arguments", bd->arguments);
        fputc('\n', out);
    }
}

void wr_config_print(const struct wr_config *cfg, FILE *out)
{
    char buf[32];

    fprintf(out, "config: %s\n", cfg->file);
    fprintf(out, "broker:\n  data_dir: %s\n  plugin_dirs:", cfg->data_dir);
    if (!cfg->plugin_dirs)
        fputs(" (default)", out);
    for (size_t i = 0; cfg->plugin_dirs && cfg->plugin_dirs[i]; i++)
        fprintf(out, "%s%s", i ? ", " : " ", cfg->plugin_dirs[i]);
    fprintf(out, "\n  log_level: %s\n  max_message_size: %s\n",
            log_level_names[cfg->log_level], size_text(cfg->max_message_size, buf, sizeof(buf)));
    fprintf(out, "  memory_high_watermark: %s\n",
            cfg->memory_high_watermark ? size_text(cfg->memory_high_watermark, buf, sizeof(buf))
                                       : "0 (off)");
    fprintf(out, "plugins:%s\n", cfg->n_plugins ? "" : " none");
    for (size_t i = 0; i < cfg->n_plugins; i++)
        fprintf(out, "  %s: %s\n", cfg->plugins[i].name,
                cfg->plugins[i].path ? cfg->plugins[i].path : "(from plugin_dirs)");
    fprintf(out, "listeners:%s\n", cfg->n_listeners ? "" : " none");
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *ls = &cfg->listeners[i];
        fprintf(out, "  %s on %s:%u", ls->transport, ls->host, ls->port);
        print_options(out, "options", ls->options);
        fputc('\n', out);
    }
    for (size_t i = 0; i < cfg->n_vhosts; i++)
        print_vhost(out, &cfg->vhosts[i]);
    fprintf(out, "users:%s\n", cfg->n_users ? "" : " none");
    for (size_t i = 0; i < cfg->n_users; i++) {
        fprintf(out, "  %s: %s", cfg->users[i].name,
                cfg->users[i].vhosts[0] ? "vhosts" : "no vhosts");
        for (size_t j = 0; cfg->users[i].vhosts[j]; j++)
            fprintf(out, "%s%s", j ? ", " : " ", cfg->users[i].vhosts[j]);
        if (cfg->users[i].lua_scripts)
            fputs(", may declare Lua exchanges", out);
        fputc('\n', out);
    }
}
