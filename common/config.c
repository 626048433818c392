/*
 * config.c - XML configuration files read against typed tables (see config.h).
 *
 * The file is parsed into one xml tree (restricted XML, size-limited); the
 * struct config owns that tree, and every string handed out through a table
 * lives in the tree's arena. Checking happens in two passes per table: a
 * walk over the tree that rejects unknown and repeated elements, then one
 * lookup per entry that parses, bounds-checks and stores the value.
 *
 * Start-up only: files are read with blocking calls.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"

#define QUOTE_MAX 64  /* bytes of a bad value quoted in a message */
#define SEG_MAX   128 /* longest element name in a table path */

/* Memory to wipe before the tree is freed: inline secrets and their copies. */
struct config_wipe {
    char *p;
    size_t n;
};

struct config {
    char *file; /* as given: the prefix of every message */
    char *dir;  /* absolute directory of file, for relative paths */
    struct xml_node *root;
    struct config_wipe *wipes;
    size_t nwipes, capwipes;
    unsigned nerr;
    char *first_err;
};

static const char *const bool_true[] = {"yes", "true", "on", "1", NULL};
static const char *const bool_false[] = {"no", "false", "off", "0", NULL};

/* ---- messages ---- */

/* "<a><b[2]>" for elem, from below the document root down to elem. */
static void append_elem_path(struct buf *b, const struct xml_node *elem)
{
    if (!elem)
        return;
    if (!elem->parent) {
        buf_printf(b, "<%s>", elem->name);
        return;
    }
    if (elem->parent->parent)
        append_elem_path(b, elem->parent);
    size_t index = 0, total = 0;
    for (const struct xml_node *s = xml_child(elem->parent, NULL, elem->name); s;
         s = xml_next(s, NULL, elem->name)) {
        total++;
        if (s == elem)
            index = total;
    }
    if (total > 1)
        buf_printf(b, "<%s[%zu]>", elem->name, index);
    else
        buf_printf(b, "<%s>", elem->name);
}

/*
 * Record one error: "file: <path><more>@attr: message". elem is the deepest
 * element that exists (NULL: the file itself); more names missing elements
 * below it ("port" or "a/b"); attr is an attribute name or NULL.
 */
static void cfg_error(struct config *cfg, const struct xml_node *elem, const char *more,
                      const char *attr, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void cfg_error(struct config *cfg, const struct xml_node *elem, const char *more,
                      const char *attr, const char *fmt, ...)
{
    cfg->nerr++;
    if (cfg->nerr > CONFIG_MAX_ERRORS + 1)
        return;
    if (cfg->nerr == CONFIG_MAX_ERRORS + 1) {
        log_msg(LOG_LVL_ERR, "config", "%s: too many errors, not listing the rest", cfg->file);
        return;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s: ", cfg->file);
    size_t plen = b.len;
    /* The root is named only when nothing below it is. */
    if (elem && (elem->parent || !more || !*more || *more == '@'))
        append_elem_path(&b, elem);
    while (more && *more && *more != '@') {
        size_t n = strcspn(more, "/@");
        buf_printf(&b, "<%.*s>", (int)n, more);
        more += n + (more[n] == '/' ? 1 : 0);
    }
    if (attr)
        buf_printf(&b, "@%s", attr);
    if (b.len > plen)
        buf_append_str(&b, ": ");
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    log_msg(LOG_LVL_ERR, "config", "%s", b.data);
    if (!cfg->first_err)
        cfg->first_err = buf_detach(&b, NULL);
    buf_free(&b);
}

/* A bad value for a message: at most QUOTE_MAX bytes, then "...". */
static const char *quote(const char *v, char *tmp, size_t tmplen)
{
    size_t n = strlen(v);
    if (n <= QUOTE_MAX)
        return v;
    snprintf(tmp, tmplen, "%.*s...", QUOTE_MAX, v);
    return tmp;
}

/* ---- value parsers: 0 or ERR_INVAL / ERR_LIMIT; no messages ---- */

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Decimal digits s[0..n) times mult into *out; ERR_LIMIT on overflow. */
static int parse_scaled(const char *s, size_t n, unsigned long long mult, unsigned long long *out)
{
    if (!all_digits(s, n))
        return ERR_INVAL;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (v > (ULLONG_MAX - 9) / 10)
            return ERR_LIMIT;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > ULLONG_MAX / mult)
        return ERR_LIMIT;
    *out = v * mult;
    return 0;
}

static int parse_size(const char *s, unsigned long long *out)
{
    size_t n = strlen(s);
    unsigned long long mult = 1;
    if (n > 0) {
        switch (s[n - 1]) {
        case 'k':
        case 'K':
            mult = 1ull << 10;
            break;
        case 'm':
        case 'M':
            mult = 1ull << 20;
            break;
        case 'g':
        case 'G':
            mult = 1ull << 30;
            break;
        default:
            break;
        }
    }
    return parse_scaled(s, mult == 1 ? n : n - 1, mult, out);
}

static int parse_duration(const char *s, unsigned long long *out)
{
    static const struct {
        const char *unit;
        unsigned long long ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    size_t n = strlen(s), digits = 0;
    while (digits < n && s[digits] >= '0' && s[digits] <= '9')
        digits++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (digits > 0 && strcmp(s + digits, units[i].unit) == 0)
            return parse_scaled(s, digits, units[i].ms, out);
    return ERR_INVAL;
}

static int parse_int(const char *s, long long *out)
{
    size_t n = strlen(s);
    size_t start = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (!all_digits(s + start, n - start))
        return ERR_INVAL;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return ERR_LIMIT;
    *out = v;
    return 0;
}

static int find_name(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* A bound for a message, in the largest unit that divides it exactly. */
static void fmt_scaled(char *out, size_t outlen, unsigned long long v, bool duration)
{
    static const char *const size_units[] = {"G", "M", "k", ""};
    static const unsigned long long size_mult[] = {1ull << 30, 1ull << 20, 1ull << 10, 1};
    static const char *const dur_units[] = {"h", "m", "s", "ms"};
    static const unsigned long long dur_mult[] = {3600000, 60000, 1000, 1};
    const char *const *unit = duration ? dur_units : size_units;
    const unsigned long long *mult = duration ? dur_mult : size_mult;
    size_t i = 0;
    while (i < 3 && (v == 0 || v % mult[i] != 0))
        i++;
    snprintf(out, outlen, "%llu%s", v / mult[i], unit[i]);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- table paths ---- */

/* Length of the element part of a table path (before any '@'). */
static size_t elem_part_len(const char *path)
{
    const char *at = strchr(path, '@');
    return at ? (size_t)(at - path) : strlen(path);
}

static const char *attr_part(const char *path)
{
    const char *at = strchr(path, '@');
    return at ? at + 1 : NULL;
}

/*
 * Follow the element part of path from base. Returns the element, or NULL
 * with *deepest set to the last element found and *rest to the part of the
 * path that is missing.
 */
static struct xml_node *resolve(struct xml_node *base, const char *path, struct xml_node **deepest,
                                const char **rest)
{
    size_t len = elem_part_len(path);
    struct xml_node *e = base;
    const char *p = path;
    while (p < path + len) {
        const char *slash = memchr(p, '/', (size_t)(path + len - p));
        size_t n = slash ? (size_t)(slash - p) : (size_t)(path + len - p);
        char seg[SEG_MAX];
        if (n >= sizeof(seg))
            fatal("config table path too long: %s", path);
        memcpy(seg, p, n);
        seg[n] = '\0';
        struct xml_node *c = xml_child(e, NULL, seg);
        if (!c) {
            *deepest = e;
            *rest = p;
            return NULL;
        }
        e = c;
        p += n + (slash ? 1 : 0);
    }
    return e;
}

/* ---- pass 1: unknown, repeated and misplaced parts ---- */

enum known { K_UNKNOWN, K_INNER, K_LEAF, K_NODE };

/* How the table knows the element at relative path rel (length rlen). */
static enum known classify(const struct config_entry *table, const char *rel, size_t rlen,
                           const struct config_entry **leaf)
{
    enum known k = K_UNKNOWN;
    for (const struct config_entry *e = table; e->path; e++) {
        size_t elen = elem_part_len(e->path);
        if (elen < rlen || memcmp(e->path, rel, rlen) != 0)
            continue;
        if (elen == rlen) {
            if (attr_part(e->path)) {
                if (k == K_UNKNOWN)
                    k = K_INNER;
            } else if (e->type == CONFIG_T_NODE) {
                return K_NODE;
            } else {
                k = K_LEAF;
                *leaf = e;
            }
        } else if (e->path[rlen] == '/' && k == K_UNKNOWN) {
            k = K_INNER;
        }
    }
    return k;
}

static bool attr_known(const struct config_entry *table, const char *rel, size_t rlen,
                       const char *name)
{
    for (const struct config_entry *e = table; e->path; e++) {
        const char *a = attr_part(e->path);
        if (a && elem_part_len(e->path) == rlen && memcmp(e->path, rel, rlen) == 0 &&
            strcmp(a, name) == 0)
            return true;
    }
    return false;
}

static bool is_space_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_ws(s[i]))
            return false;
    return true;
}

static void check_attrs(struct config *cfg, const struct config_entry *table,
                        const struct xml_node *elem, const char *rel, size_t rlen,
                        const struct config_entry *leaf)
{
    for (const struct xml_attr *a = elem->attrs; a; a = a->next) {
        if (a->ns) {
            cfg_error(cfg, elem, NULL, NULL, "unexpected attribute %s:%s", a->prefix, a->name);
            continue;
        }
        if (leaf && leaf->type == CONFIG_T_SECRET && strcmp(a->name, "file") == 0)
            continue;
        if (!attr_known(table, rel, rlen, a->name))
            cfg_error(cfg, elem, NULL, a->name, "unknown attribute");
    }
}

/* The known element names one level below rel, for the unknown-element hint. */
static void append_known_children(struct buf *b, const struct config_entry *table, const char *rel,
                                  size_t rlen)
{
    size_t start = b->len;
    for (const struct config_entry *e = table; e->path; e++) {
        size_t elen = elem_part_len(e->path);
        if (elen <= rlen || memcmp(e->path, rel, rlen) != 0 || (rlen && e->path[rlen] != '/'))
            continue;
        const char *name = e->path + rlen + (rlen ? 1 : 0);
        size_t n = strcspn(name, "/@");
        if (n == 0)
            continue;
        /* skip names already listed */
        bool dup = false;
        for (const struct config_entry *f = table; f < e; f++) {
            size_t flen = elem_part_len(f->path);
            if (flen > rlen && memcmp(f->path, rel, rlen) == 0 && (!rlen || f->path[rlen] == '/') &&
                strncmp(f->path + rlen + (rlen ? 1 : 0), name, n) == 0 &&
                strcspn(f->path + rlen + (rlen ? 1 : 0), "/@") == n)
                dup = true;
        }
        if (!dup)
            buf_printf(b, "%s<%.*s>", b->len > start ? ", " : "", (int)n, name);
    }
}

/*
 * Check the children of elem, which is at relative path rel (rel->len 0:
 * the base itself). Recurses into elements the table knows as inner ones.
 */
static void check_tree(struct config *cfg, const struct config_entry *table,
                       const struct xml_node *elem, struct buf *rel)
{
    size_t rlen = rel->len;
    /* Names of known non-repeatable children seen so far at this level; the
     * table bounds their number, whatever the input holds. */
    const char **seen = NULL;
    size_t nseen = 0, capseen = 0;
    for (const struct xml_node *c = elem->children; c; c = c->next) {
        if (c->type == XML_TEXT) {
            if (!is_space_only(c->text, c->text_len))
                cfg_error(cfg, elem, NULL, NULL, "unexpected text (values go in child elements)");
            continue;
        }
        if (rlen)
            buf_append_byte(rel, '/');
        buf_append_str(rel, c->name);
        const struct config_entry *leaf = NULL;
        enum known k = classify(table, rel->data, rel->len, &leaf);
        if (k == K_UNKNOWN) {
            struct buf hint = BUF_INIT;
            if (cfg->nerr < CONFIG_MAX_ERRORS) /* no hint for a message never shown */
                append_known_children(&hint, table, rel->data, rlen);
            if (hint.len)
                cfg_error(cfg, c, NULL, NULL, "unknown element (known here: %s)", hint.data);
            else
                cfg_error(cfg, c, NULL, NULL, "unknown element (no child elements allowed here)");
            buf_free(&hint);
        } else if (k != K_NODE) {
            bool dup = false;
            for (size_t i = 0; i < nseen; i++)
                if (strcmp(seen[i], c->name) == 0)
                    dup = true;
            if (dup) {
                cfg_error(cfg, c, NULL, NULL, "given more than once");
            } else {
                if (nseen == capseen) {
                    capseen = capseen ? capseen * 2 : 8;
                    seen = xreallocarray(seen, capseen, sizeof(*seen));
                }
                seen[nseen++] = c->name;
                check_attrs(cfg, table, c, rel->data, rel->len, leaf);
                if (k == K_INNER)
                    check_tree(cfg, table, c, rel);
            }
        }
        rel->len = rlen;
        rel->data[rlen] = '\0';
    }
    free(seen);
}

/* ---- pass 2: values ---- */

/* Where a value came from, for messages. */
struct loc {
    const struct xml_node *elem; /* deepest existing element */
    const char *more;            /* missing elements below it, or NULL */
    const char *attr;            /* attribute name, or NULL */
    const char *pre;             /* "" or "built-in default: " */
};

#define LOC_ERROR(cfg, l, fmt, ...)                                                                \
    cfg_error((cfg), (l)->elem, (l)->more, (l)->attr, "%s" fmt, (l)->pre, __VA_ARGS__)

static void add_wipe(struct config *cfg, const char *p, size_t n)
{
    if (cfg->nwipes == cfg->capwipes) {
        cfg->capwipes = cfg->capwipes ? cfg->capwipes * 2 : 8;
        cfg->wipes = xreallocarray(cfg->wipes, cfg->capwipes, sizeof(*cfg->wipes));
    }
    /* The tree's strings are const to its readers; this owner may scrub them. */
    cfg->wipes[cfg->nwipes].p = (char *)p;
    cfg->wipes[cfg->nwipes].n = n;
    cfg->nwipes++;
}

/* A NUL-terminated copy of s[0..n) without surrounding XML whitespace. */
static char *trim_copy(struct config *cfg, const char *s, size_t n)
{
    while (n > 0 && is_ws(s[0])) {
        s++;
        n--;
    }
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    return arena_strndup(cfg->root->arena, s, n);
}

/* Relative paths are taken from the configuration file's directory. */
static const char *absolute(struct config *cfg, const char *v)
{
    if (v[0] == '/')
        return v;
    size_t dl = strlen(cfg->dir), vl = strlen(v);
    char *p = arena_alloc(cfg->root->arena, dl + 1 + vl + 1);
    memcpy(p, cfg->dir, dl);
    p[dl] = '/';
    memcpy(p + dl + 1, v, vl + 1);
    return p;
}

/*
 * Read a regular file of at most max bytes into a NUL-terminated buffer
 * (free with mem_freezero(buf, max + 1)). O_NONBLOCK so that a FIFO named by
 * mistake cannot hang start-up; fstat then refuses anything not regular.
 */
static int read_limited(const char *path, size_t max, char **out, size_t *outlen, mode_t *mode,
                        char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        return ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        close(fd);
        return ERR_IO;
    }
    if ((unsigned long long)st.st_size > max) {
        snprintf(why, whylen, "larger than %zu bytes", max);
        close(fd);
        return ERR_LIMIT;
    }
    char *data = xmalloc(max + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, data + len, max + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, whylen, "cannot read: %s", strerror(errno));
            close(fd);
            mem_freezero(data, max + 1);
            return ERR_IO;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > max) {
            snprintf(why, whylen, "larger than %zu bytes", max);
            close(fd);
            mem_freezero(data, max + 1);
            return ERR_LIMIT;
        }
    }
    close(fd);
    data[len] = '\0';
    *out = data;
    *outlen = len;
    *mode = st.st_mode;
    return 0;
}

/* The secret named by <x file='...'/>, or NULL after an error. */
static const char *read_secret_file(struct config *cfg, const struct loc *l, const char *file)
{
    const char *path = absolute(cfg, file);
    char why[256];
    char *data;
    size_t len;
    mode_t mode;
    if (read_limited(path, CONFIG_SECRET_MAX, &data, &len, &mode, why, sizeof(why)) != 0) {
        LOC_ERROR(cfg, l, "secret file %s: %s", path, why);
        return NULL;
    }
    const char *res = NULL;
    /* Like ssh with a private key: a secret anyone can read is no secret. */
    if (mode & S_IROTH) {
        LOC_ERROR(cfg, l, "secret file %s is readable by everyone (chmod o-r)", path);
    } else {
        if (len > 0 && data[len - 1] == '\n')
            len--;
        if (len > 0 && data[len - 1] == '\r')
            len--;
        if (len == 0)
            LOC_ERROR(cfg, l, "secret file %s is empty", path);
        else if (memchr(data, '\0', len))
            LOC_ERROR(cfg, l, "secret file %s contains a NUL byte", path);
        else
            res = arena_strndup(cfg->root->arena, data, len);
    }
    mem_freezero(data, CONFIG_SECRET_MAX + 1);
    if (res)
        add_wipe(cfg, res, len);
    return res;
}

static void check_range(struct config *cfg, const struct loc *l, const char *v,
                        unsigned long long x, long long min, long long max, bool duration, bool *ok)
{
    if (min == 0 && max == 0)
        return;
    unsigned long long lo = min > 0 ? (unsigned long long)min : 0;
    unsigned long long hi = max > 0 ? (unsigned long long)max : ULLONG_MAX;
    if (x >= lo && x <= hi)
        return;
    char a[32], b[32];
    fmt_scaled(a, sizeof(a), lo, duration);
    fmt_scaled(b, sizeof(b), hi, duration);
    if (max > 0)
        LOC_ERROR(cfg, l, "%s is out of range %s..%s", v, a, b);
    else
        LOC_ERROR(cfg, l, "%s is less than %s", v, a);
    *ok = false;
}

/* Parse v (the file's text or a default) as e's type and store it. */
static void store(struct config *cfg, const struct config_entry *e, const struct loc *l,
                  const char *v)
{
    char tmp[QUOTE_MAX + 4];
    bool ok = true;
    long long ll = 0;
    unsigned long long ull = 0;
    int rc, idx;
    switch (e->type) {
    case CONFIG_T_STRING:
        *(const char **)e->dest = v;
        return;
    case CONFIG_T_PATH:
        if (!*v) {
            LOC_ERROR(cfg, l, "%s", "empty path");
            return;
        }
        *(const char **)e->dest = absolute(cfg, v);
        return;
    case CONFIG_T_INT: {
        long long lo = e->min, hi = e->max;
        if (lo == 0 && hi == 0) {
            lo = INT_MIN;
            hi = INT_MAX;
        }
        rc = parse_int(v, &ll);
        if (rc == ERR_INVAL) {
            LOC_ERROR(cfg, l, "'%s' is not an integer", quote(v, tmp, sizeof(tmp)));
        } else if (rc != 0 || ll < lo || ll > hi || ll < INT_MIN || ll > INT_MAX) {
            LOC_ERROR(cfg, l, "%s is out of range %lld..%lld", quote(v, tmp, sizeof(tmp)), lo, hi);
        } else {
            *(int *)e->dest = (int)ll;
        }
        return;
    }
    case CONFIG_T_BOOL:
        if (find_name(bool_true, v) >= 0)
            *(bool *)e->dest = true;
        else if (find_name(bool_false, v) >= 0)
            *(bool *)e->dest = false;
        else
            LOC_ERROR(cfg, l, "'%s' is not a boolean (yes/no, true/false, on/off, 1/0)",
                      quote(v, tmp, sizeof(tmp)));
        return;
    case CONFIG_T_SIZE:
    case CONFIG_T_DURATION: {
        bool dur = e->type == CONFIG_T_DURATION;
        rc = dur ? parse_duration(v, &ull) : parse_size(v, &ull);
        if (rc == ERR_INVAL) {
            LOC_ERROR(cfg, l, "'%s' is not a %s", quote(v, tmp, sizeof(tmp)),
                      dur ? "duration (a number and a unit: ms, s, m or h)"
                          : "size (a number with an optional k, M or G suffix)");
            return;
        }
        if (rc != 0 || (!dur && ull > SIZE_MAX)) {
            LOC_ERROR(cfg, l, "%s is too large", quote(v, tmp, sizeof(tmp)));
            return;
        }
        check_range(cfg, l, quote(v, tmp, sizeof(tmp)), ull, e->min, e->max, dur, &ok);
        if (ok && dur)
            *(uint64_t *)e->dest = ull;
        else if (ok)
            *(size_t *)e->dest = (size_t)ull;
        return;
    }
    case CONFIG_T_ENUM:
        idx = find_name(e->names, v);
        if (idx < 0) {
            struct buf b = BUF_INIT;
            for (size_t i = 0; e->names[i]; i++)
                buf_printf(&b, "%s%s", i ? ", " : "", e->names[i]);
            LOC_ERROR(cfg, l, "'%s' is not one of: %s", quote(v, tmp, sizeof(tmp)),
                      b.data ? b.data : "");
            buf_free(&b);
        } else {
            *(int *)e->dest = idx;
        }
        return;
    case CONFIG_T_SECRET:
    case CONFIG_T_NODE:
        break; /* handled by apply_entry: they have no text defaults */
    }
}

static void store_zero(const struct config_entry *e)
{
    switch (e->type) {
    case CONFIG_T_STRING:
    case CONFIG_T_PATH:
    case CONFIG_T_SECRET:
        *(const char **)e->dest = NULL;
        break;
    case CONFIG_T_INT:
    case CONFIG_T_ENUM:
        *(int *)e->dest = 0;
        break;
    case CONFIG_T_BOOL:
        *(bool *)e->dest = false;
        break;
    case CONFIG_T_SIZE:
        *(size_t *)e->dest = 0;
        break;
    case CONFIG_T_DURATION:
        *(uint64_t *)e->dest = 0;
        break;
    case CONFIG_T_NODE:
        *(struct xml_node **)e->dest = NULL;
        break;
    }
}

/* The value of a secret element: inline text or the file it names. */
static const char *secret_value(struct config *cfg, struct xml_node *elem, const struct loc *l)
{
    size_t len;
    const char *text = xml_text(elem, &len);
    /* Scrub the parser's copies too: the text nodes and their concatenation. */
    add_wipe(cfg, text, len);
    for (const struct xml_node *c = elem->children; c; c = c->next)
        if (c->type == XML_TEXT)
            add_wipe(cfg, c->text, c->text_len);
    const char *file = xml_get_attr(elem, "file");
    const char *inl = trim_copy(cfg, text, len);
    add_wipe(cfg, inl, strlen(inl));
    if (file && *inl) {
        LOC_ERROR(cfg, l, "%s", "give the secret inline or in a file, not both");
        return NULL;
    }
    if (file)
        return read_secret_file(cfg, l, file);
    if (!*inl) {
        LOC_ERROR(cfg, l, "%s", "empty secret");
        return NULL;
    }
    if (strlen(inl) > CONFIG_SECRET_MAX) {
        LOC_ERROR(cfg, l, "secret longer than %d bytes", CONFIG_SECRET_MAX);
        return NULL;
    }
    return inl;
}

static void apply_entry(struct config *cfg, struct xml_node *base, const struct config_entry *e)
{
    struct xml_node *deepest = NULL;
    const char *rest = NULL;
    struct xml_node *elem = resolve(base, e->path, &deepest, &rest);
    const char *attr = attr_part(e->path);
    struct loc l = {elem ? elem : deepest, elem ? NULL : rest, attr, ""};
    const char *v = NULL;

    store_zero(e);
    if (elem && attr) {
        v = xml_get_attr(elem, attr);
        if (v)
            v = trim_copy(cfg, v, strlen(v));
    } else if (elem && e->type == CONFIG_T_NODE) {
        *(struct xml_node **)e->dest = elem;
        return;
    } else if (elem) {
        struct xml_node *child = xml_child(elem, NULL, NULL);
        if (child) {
            LOC_ERROR(cfg, &l, "expected a value, found element <%s>", child->name);
            return;
        }
        if (e->type == CONFIG_T_SECRET) {
            *(const char **)e->dest = secret_value(cfg, elem, &l);
            return;
        }
        size_t len;
        const char *text = xml_text(elem, &len);
        v = trim_copy(cfg, text, len);
    }
    if (v) {
        store(cfg, e, &l, v);
        return;
    }
    if (e->flags & CONFIG_REQUIRED) {
        LOC_ERROR(cfg, &l, "%s", "required but missing");
        return;
    }
    if (e->def && e->type != CONFIG_T_SECRET && e->type != CONFIG_T_NODE) {
        l.pre = "built-in default: ";
        store(cfg, e, &l, e->def);
    }
}

/* ---- public ---- */

int config_apply(struct config *cfg, struct xml_node *elem, const struct config_entry *table)
{
    unsigned before = cfg->nerr;
    struct buf rel = BUF_INIT;
    buf_reserve(&rel, 64);
    rel.data[0] = '\0';
    check_attrs(cfg, table, elem, "", 0, NULL);
    check_tree(cfg, table, elem, &rel);
    buf_free(&rel);
    for (const struct config_entry *e = table; e->path; e++)
        apply_entry(cfg, elem, e);
    return cfg->nerr > before ? ERR_CONFIG : 0;
}

/* The absolute directory of name (which need not exist). */
static char *dir_of(const char *name)
{
    const char *slash = strrchr(name, '/');
    if (name[0] == '/')
        return slash == name ? xstrdup("/") : xstrndup(name, (size_t)(slash - name));
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        snprintf(cwd, sizeof(cwd), ".");
    struct buf b = BUF_INIT;
    buf_append_str(&b, cwd);
    if (slash)
        buf_printf(&b, "/%.*s", (int)(slash - name), name);
    return buf_detach(&b, NULL);
}

int config_parse(const char *name, const char *data, size_t len, const char *root,
                 const struct config_entry *table, struct config **out, char *err, size_t errlen)
{
    *out = NULL;
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_stanza_bytes = CONFIG_MAX_BYTES;
    lim.max_text_len = CONFIG_MAX_BYTES;
    char perr[256] = "";
    struct xml_node *tree = xml_parse_document(data, len, &lim, perr, sizeof(perr));
    if (!tree) {
        snprintf(err, errlen, "%s: %s", name, perr);
        log_msg(LOG_LVL_ERR, "config", "%s", err);
        return ERR_PARSE;
    }
    if (strcmp(tree->name, root) != 0) {
        snprintf(err, errlen, "%s: root element is <%s>, expected <%s>", name, tree->name, root);
        log_msg(LOG_LVL_ERR, "config", "%s", err);
        xml_free(tree);
        return ERR_CONFIG;
    }
    struct config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->file = xstrdup(name);
    cfg->dir = dir_of(name);
    cfg->root = tree;
    if (config_apply(cfg, tree, table) != 0) {
        snprintf(err, errlen, "%s", cfg->first_err);
        config_free(cfg);
        return ERR_CONFIG;
    }
    *out = cfg;
    return 0;
}

int config_load(const char *file, const char *root, const struct config_entry *table,
                struct config **out, char *err, size_t errlen)
{
    *out = NULL;
    char why[256];
    char *data;
    size_t len;
    mode_t mode;
    int rc = read_limited(file, CONFIG_MAX_BYTES, &data, &len, &mode, why, sizeof(why));
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", file, why);
        log_msg(LOG_LVL_ERR, "config", "%s", err);
        return rc;
    }
    rc = config_parse(file, data, len, root, table, out, err, errlen);
    /* The file may hold inline secrets. */
    mem_freezero(data, CONFIG_MAX_BYTES + 1);
    return rc;
}

struct xml_node *config_root(const struct config *cfg)
{
    return cfg->root;
}

const char *config_file(const struct config *cfg)
{
    return cfg->file;
}

const char *config_error(const struct config *cfg)
{
    return cfg->first_err;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nwipes; i++)
        mem_wipe(cfg->wipes[i].p, cfg->wipes[i].n);
    free(cfg->wipes);
    xml_free(cfg->root);
    free(cfg->file);
    free(cfg->dir);
    free(cfg->first_err);
    free(cfg);
}
