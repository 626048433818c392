/*
 * tmpdir.h - a scratch directory for one test program (keys, sockets).
 *
 * tmpdir_new makes a fresh directory under $TMPDIR (or /tmp); tmpdir_path
 * names a file in it; tmpdir_free removes the files named through
 * tmpdir_path and the directory. Test code only.
 */
#ifndef PARLEY_TEST_TMPDIR_H
#define PARLEY_TEST_TMPDIR_H

struct tmpdir;

struct tmpdir *tmpdir_new(void);
/* dir/name; the string lives as long as the tmpdir. */
const char *tmpdir_path(struct tmpdir *t, const char *name);
void tmpdir_free(struct tmpdir *t);

#endif
