/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int tu_failures;

void tu_check_has(const char *file, int line, const char *msg, const char *frag) {
  if (!strstr(msg, frag)) {
    fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", file, line, msg, frag);
    tu_failures++;
  }
}

/* Fixture setup failing is not a finding about the code under test, but
 * the test cannot go on either. */
static void die(const char *what, const char *path) {
  fprintf(stderr, "test setup: %s %s: %s\n", what, path, strerror(errno));
  exit(2);
}

const char *tu_mkdtemp(const char *prefix) {
  static char buf[4][512];
  static int next;
  char *b = buf[next++ % 4];
  const char *tmp = getenv("TMPDIR");
  snprintf(b, sizeof buf[0], "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
  if (!mkdtemp(b)) die("mkdtemp", b);
  return b;
}

void tu_rm_tree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    chmod(path, 0700);
    DIR *d = opendir(path);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        tu_rm_tree(sub);
      }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

const char *tu_path(const char *dir, const char *name) {
  static char buf[8][4096];
  static int next;
  char *b = buf[next++ % 8];
  snprintf(b, sizeof buf[0], "%s/%s", dir, name);
  return b;
}

void tu_write(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) die("fopen", path);
  if (n && fwrite(data, 1, n, f) != n) die("fwrite", path);
  if (fclose(f)) die("fclose", path);
}

void tu_write_gz(const char *path, const void *data, size_t n) {
  gzFile f = gzopen(path, "wb");
  if (!f) die("gzopen", path);
  if (n && gzwrite(f, data, (unsigned)n) != (int)n) die("gzwrite", path);
  if (gzclose(f) != Z_OK) die("gzclose", path);
}

unsigned char *tu_read(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) die("fopen", path);
  size_t cap = 4096, len = 0;
  unsigned char *b = malloc(cap);
  for (;;) {
    if (!b) die("malloc", path);
    len += fread(b + len, 1, cap - len, f);
    if (len < cap) break;
    cap *= 2;
    b = realloc(b, cap);
  }
  fclose(f);
  *n = len;
  return b;
}

int tu_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

const char *tu_subdir(const char *dir, const char *name) {
  static char buf[64][4096];
  static int next;
  if (next == 64) { errno = ENOMEM; die("tu_subdir: out of slots for", name); }
  char *b = buf[next++];
  snprintf(b, sizeof buf[0], "%s/%s", dir, name);
  if (mkdir(b, 0700) != 0) die("mkdir", b);
  return b;
}
