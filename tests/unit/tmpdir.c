/*
 * tmpdir.c - scratch directories for tests (see tmpdir.h).
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "tests/unit/tmpdir.h"

struct tmpdir {
    char *dir;
    char **paths;
    size_t n;
};

struct tmpdir *tmpdir_new(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/parley-test-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpl) == NULL)
        fatal("mkdtemp %s failed", tmpl);
    struct tmpdir *t = xcalloc(1, sizeof(*t));
    t->dir = xstrdup(tmpl);
    return t;
}

const char *tmpdir_path(struct tmpdir *t, const char *name)
{
    size_t len = strlen(t->dir) + 1 + strlen(name) + 1;
    char *p = xmalloc(len);
    snprintf(p, len, "%s/%s", t->dir, name);
    t->paths = xreallocarray(t->paths, t->n + 1, sizeof(*t->paths));
    t->paths[t->n++] = p;
    return p;
}

void tmpdir_free(struct tmpdir *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        unlink(t->paths[i]);
        free(t->paths[i]);
    }
    rmdir(t->dir);
    free(t->paths);
    free(t->dir);
    free(t);
}
