/*
 * config.h - configuration files (XML, in etc/) read against typed tables.
 *
 * A daemon describes what its configuration file may contain in a table of
 * struct config_entry: an element path under the root element ("listen/port",
 * or "listen@port" for an attribute), a type (string, int with bounds, bool,
 * size, duration, path, enum, secret, or a subtree the daemon reads itself),
 * a default or CONFIG_REQUIRED, and where to store the value. config_load()
 * parses the file (restricted XML through the xml module, at most
 * CONFIG_MAX_BYTES), checks the root element's name and fills every
 * destination. Errors name the file and the element:
 *
 *     etc/router.xml: <listen><port>: 70000 is out of range 1..65535
 *
 * Every error is logged; the first is also copied to the caller's buffer.
 * XML syntax errors carry the line number the parser reported; the tree
 * keeps no line numbers, so errors found after parsing name the element
 * path instead (repeated elements get an index: <component[2]>).
 *
 * Unknown elements and attributes are errors, not warnings (OpenSSH's
 * choice, not Postfix's): a misspelt <usr> or <max-stanza-size> silently
 * ignored would leave a security-relevant setting at its default. Everything
 * a daemon reads must therefore be declared in its table; repeated or
 * structured parts (a list of components) are declared as CONFIG_NODE
 * entries, read by the daemon through config_root()/the node pointer, and
 * checked with config_apply() against a table of their own.
 *
 * Secrets (CONFIG_SECRET) are given inline or as <secret file='...'/>: the
 * file is read at load time, must be a regular file no larger than
 * CONFIG_SECRET_MAX and not readable by everyone. Secret values never appear
 * in a message and are wiped by config_free().
 *
 * Values are trimmed of surrounding XML whitespace. Strings, paths and
 * secrets stored through a table point into the struct config and stay
 * valid until config_free(). Relative paths are made absolute against the
 * directory of the configuration file.
 *
 * Start-up code only (it reads files); not for use inside a running loop.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/xml.h"

#define CONFIG_MAX_BYTES  (1024 * 1024) /* largest configuration file */
#define CONFIG_SECRET_MAX 4096          /* largest secret, inline or from a file */
#define CONFIG_MAX_ERRORS 20            /* errors logged before giving up listing them */

enum config_type {
    CONFIG_T_STRING,   /* const char *: any text */
    CONFIG_T_INT,      /* int: decimal, within min..max (both 0: any int) */
    CONFIG_T_BOOL,     /* bool: yes/no, true/false, on/off, 1/0 */
    CONFIG_T_SIZE,     /* size_t: bytes, with an optional k, M or G suffix (powers of 1024) */
    CONFIG_T_DURATION, /* uint64_t: milliseconds; the text needs a unit: ms, s, m or h */
    CONFIG_T_PATH,     /* const char *: non-empty, made absolute */
    CONFIG_T_ENUM,     /* int: index into names (NULL-terminated) */
    CONFIG_T_SECRET,   /* const char *: inline text or <x file='...'/>; never logged */
    CONFIG_T_NODE,     /* struct xml_node *: first such element; may repeat; not checked */
};

#define CONFIG_REQUIRED 0x1u /* missing is an error (def is ignored) */

/*
 * One line of a table. Use the macros below rather than filling it by hand:
 * they check the destination's type at compile time. SIZE and DURATION
 * bounds are in bytes and milliseconds; min = max = 0 means unbounded.
 * def is the default written as it would be in the file ("5s", "64k"),
 * parsed and bounds-checked like a value from the file; NULL means the zero
 * value (NULL, 0, false). A table ends with CONFIG_END.
 */
struct config_entry {
    const char *path; /* "a/b" element, "a/b@attr" attribute, "@attr" on the base */
    enum config_type type;
    unsigned flags;
    const char *def;
    long long min, max;
    const char *const *names; /* CONFIG_T_ENUM */
    void *dest;
};

/* The destination, type-checked: a mismatch is a pointer-type warning. */
#define CONFIG_DEST_(T, p) ((void *)(1 ? (p) : (T *)0))

#define CONFIG_STRING(p, fl, d, dst)                                                               \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_STRING, .flags = (fl), .def = (d),                           \
        .dest = CONFIG_DEST_(const char *, dst)                                                    \
    }
#define CONFIG_INT(p, fl, d, lo, hi, dst)                                                          \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_INT, .flags = (fl), .def = (d), .min = (lo), .max = (hi),    \
        .dest = CONFIG_DEST_(int, dst)                                                             \
    }
#define CONFIG_BOOL(p, fl, d, dst)                                                                 \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_BOOL, .flags = (fl), .def = (d),                             \
        .dest = CONFIG_DEST_(bool, dst)                                                            \
    }
#define CONFIG_SIZE(p, fl, d, lo, hi, dst)                                                         \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_SIZE, .flags = (fl), .def = (d), .min = (lo), .max = (hi),   \
        .dest = CONFIG_DEST_(size_t, dst)                                                          \
    }
#define CONFIG_DURATION(p, fl, d, lo, hi, dst)                                                     \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_DURATION, .flags = (fl), .def = (d), .min = (lo),            \
        .max = (hi), .dest = CONFIG_DEST_(uint64_t, dst)                                           \
    }
#define CONFIG_PATH(p, fl, d, dst)                                                                 \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_PATH, .flags = (fl), .def = (d),                             \
        .dest = CONFIG_DEST_(const char *, dst)                                                    \
    }
#define CONFIG_ENUM(p, fl, d, nm, dst)                                                             \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_ENUM, .flags = (fl), .def = (d), .names = (nm),              \
        .dest = CONFIG_DEST_(int, dst)                                                             \
    }
#define CONFIG_SECRET(p, fl, dst)                                                                  \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_SECRET, .flags = (fl),                                       \
        .dest = CONFIG_DEST_(const char *, dst)                                                    \
    }
#define CONFIG_NODE(p, fl, dst)                                                                    \
    {                                                                                              \
        .path = (p), .type = CONFIG_T_NODE, .flags = (fl),                                         \
        .dest = CONFIG_DEST_(struct xml_node *, dst)                                               \
    }
#define CONFIG_END                                                                                 \
    {                                                                                              \
        .path = NULL                                                                               \
    }

struct config;

/*
 * Read file, check that its root element is <root>, apply table to the
 * root. On success *out is the loaded configuration (config_free it). On
 * failure *out is NULL, every error has been logged, the first is in err,
 * and the result is ERR_IO (unreadable), ERR_LIMIT (too large), ERR_PARSE
 * (not well-formed or restricted XML) or ERR_CONFIG (the content).
 */
int config_load(const char *file, const char *root, const struct config_entry *table,
                struct config **out, char *err, size_t errlen);

/* config_load() on bytes already in memory; name is used in messages and
 * its directory for relative paths. */
int config_parse(const char *name, const char *data, size_t len, const char *root,
                 const struct config_entry *table, struct config **out, char *err, size_t errlen);

/*
 * Apply table to elem, an element of cfg's tree (a CONFIG_NODE result, or
 * one of its siblings): paths are relative to elem, unknown children and
 * attributes of elem are errors, messages name the element's full path.
 * Returns 0 or ERR_CONFIG; errors are logged and counted in cfg.
 */
int config_apply(struct config *cfg, struct xml_node *elem, const struct config_entry *table);

/* The root element of the file. */
struct xml_node *config_root(const struct config *cfg);
/* The file name as given to config_load. */
const char *config_file(const struct config *cfg);
/* The first error seen by config_apply, or NULL. */
const char *config_error(const struct config *cfg);

/* Wipes secrets, frees everything. NULL is fine. */
void config_free(struct config *cfg);

#endif
