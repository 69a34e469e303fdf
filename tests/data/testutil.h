/* testutil.h: what the data and checkpoint tests share: a failure counter,
 * a scratch directory per run, and writers for fixture files. */
#ifndef ILNAS_TESTS_DATA_TESTUTIL_H
#define ILNAS_TESTS_DATA_TESTUTIL_H

#include <stddef.h>

/* Checks count failures instead of aborting, so one run reports them all. */
extern int tu_failures;
#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      tu_failures++;                                                         \
    }                                                                        \
  } while (0)
/* A message must contain a fragment; prints the message when it does not. */
#define CHECK_HAS(msg, frag) tu_check_has(__FILE__, __LINE__, (msg), (frag))

void tu_check_has(const char *file, int line, const char *msg, const char *frag);

/* A fresh directory under $TMPDIR (or /tmp); the caller removes it. */
const char *tu_mkdtemp(const char *prefix);
/* Removes a file or a directory tree; ignores what does not exist. */
void tu_rm_tree(const char *path);
/* dir + "/" + name in a ring of 8 static buffers: valid until 8 more calls,
 * so hold directories from tu_subdir instead. */
const char *tu_path(const char *dir, const char *name);
/* Creates dir/name and returns its path, valid until the program ends. */
const char *tu_subdir(const char *dir, const char *name);

/* Write or gzip-write n bytes; abort the test on failure (fixtures only). */
void tu_write(const char *path, const void *data, size_t n);
void tu_write_gz(const char *path, const void *data, size_t n);
/* Reads a whole file into a new buffer. */
unsigned char *tu_read(const char *path, size_t *n);
int tu_exists(const char *path);

#endif
