/* fe_golden: runs the frontend over .ilnas files and compares what it
 * says with what it should say.
 *
 *   fe_golden DIR [CASE.ilnas ...]   each case against DIR/CASE.err, byte for
 *                                    byte (all of DIR's cases if none named)
 *   fe_golden --update DIR [CASE...] rewrite the .err files from the output
 *   fe_golden --clean FILE...        each file must parse with no diagnostics
 *
 * A case is parsed with fe_parse_string under its bare name, so the .err
 * files hold "case.ilnas:3:7: error: ..." and no machine's paths. An empty
 * .err marks a valid file. Besides the text, the error count returned must
 * equal the "error:" lines printed, and a failed parse must leave the
 * model empty.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/spec.h"

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      char *p = realloc(buf, cap *= 2);
      if (!p) free(buf);
      buf = p;
    }
  }
  fclose(f);
  if (!buf) return NULL;
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

static int count_errors(const char *out) {
  int n = 0;
  for (const char *p = out; (p = strstr(p, ": error: ")); p++) n++;
  return n;
}

static int model_is_empty(const fe_model *m) {
  static const fe_model zero;
  return memcmp(m, &zero, sizeof zero) == 0;
}

/* Shows the first line where the two differ. */
static void show_difference(const char *name, const char *want, const char *got) {
  int line = 1;
  const char *w = want, *g = got;
  while (*w && *w == *g) {
    if (*w == '\n') line++;
    w++, g++;
  }
  while (w > want && w[-1] != '\n') w--, g--;
  fprintf(stderr, "%s: output differs from the .err at its line %d\n  want: %.*s\n  got:  %.*s\n",
          name, line, (int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
}

static int run_case(const char *dir, const char *name, int update) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  char *src = read_all(path, NULL);
  if (!src) {
    fprintf(stderr, "%s: cannot read\n", path);
    return 1;
  }
  char *out = NULL;
  size_t out_len = 0;
  FILE *diag = open_memstream(&out, &out_len);
  if (!diag) {
    free(src);
    return 1;
  }
  fe_model m;
  int errors = fe_parse_string(name, src, &m, diag);
  fclose(diag);
  free(src);

  int bad = 0;
  if (errors != count_errors(out)) {
    fprintf(stderr, "%s: returned %d errors but printed %d\n", name, errors, count_errors(out));
    bad = 1;
  }
  if (errors && !model_is_empty(&m)) {
    fprintf(stderr, "%s: the model is not empty after a failed parse\n", name);
    bad = 1;
  }
  if (!errors && (!m.file || !m.src || strcmp(m.file, name) != 0)) {
    fprintf(stderr, "%s: the model does not hold its file name and source\n", name);
    bad = 1;
  }
  fe_model_free(&m);

  size_t dot = strlen(path) - strlen(".ilnas");
  snprintf(path + dot, sizeof path - dot, ".err");
  if (update) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(out, 1, out_len, f) != out_len || fclose(f) != 0) {
      fprintf(stderr, "%s: cannot write\n", path);
      bad = 1;
    }
  } else {
    char *want = read_all(path, NULL);
    if (!want) {
      fprintf(stderr, "%s: missing (an empty .err marks a valid file)\n", path);
      bad = 1;
    } else if (strcmp(want, out) != 0) {
      show_difference(name, want, out);
      bad = 1;
    }
    free(want);
  }
  free(out);
  return bad;
}

static int ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && strcmp(s + n - t, tail) == 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int update) {
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return 1;
  }
  char **names = NULL;
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (!ends_with(e->d_name, ".ilnas")) continue;
    char **p = realloc(names, (n + 1) * sizeof *names);
    if (!p) break;
    names = p;
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    failed += names[i] ? run_case(dir, names[i], update) : 1;
    free(names[i]);
  }
  free(names);
  if (n == 0) fprintf(stderr, "%s: no .ilnas files\n", dir);
  fprintf(stderr, "%zu cases, %d failed\n", n, failed);
  return n == 0 || failed;
}

static int run_clean(int n, char **files) {
  if (n == 0) {
    fprintf(stderr, "fe_golden --clean: no files\n");
    return 2;
  }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    char *out = NULL;
    size_t len = 0;
    FILE *diag = open_memstream(&out, &len);
    if (!diag) return 1;
    fe_model m;
    int errors = fe_parse_file(files[i], &m, diag);
    fclose(diag);
    if (errors || len) {
      fprintf(stderr, "%s: expected no diagnostics, got %d errors:\n%s", files[i], errors, out);
      failed++;
    }
    fe_model_free(&m);
    free(out);
  }
  return failed != 0;
}

int main(int argc, char **argv) {
  int update = argc > 1 && strcmp(argv[1], "--update") == 0;
  if (argc > 1 && strcmp(argv[1], "--clean") == 0) return run_clean(argc - 2, argv + 2);
  if (argc < 2 + update) {
    fprintf(stderr,
            "usage: fe_golden [--update] DIR [CASE.ilnas ...] | fe_golden --clean FILE...\n");
    return 2;
  }
  const char *dir = argv[1 + update];
  if (argc == 2 + update) return run_dir(dir, update);
  int failed = 0;
  for (int i = 2 + update; i < argc; i++) failed += run_case(dir, argv[i], update);
  return failed != 0;
}
