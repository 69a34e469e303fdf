/* frontend.c: the frontend's public entry points (spec.h): read the
 * source, scan and parse it (grammar/), check it (check.c). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"

/* Takes ownership of src (malloc'd, len bytes, NUL-terminated). */
static int parse(const char *file, char *src, size_t len, fe_model *m, FILE *diag) {
  fe_ctx c;
  fe_ctx_init(&c, file, src, len, diag);
  if (len > INT_MAX)
    fe_error(&c, (fe_loc){0, 0}, "the source is too large (%zu bytes)", len);
  else if (fe_syntax(&c) == 0)
    fe_check(&c, m);
  fe_flush(&c);
  int errors = c.errors;
  fe_ctx_free(&c);
  char *name = errors ? NULL : strdup(file);
  if (!errors && !name) {
    if (diag) fprintf(diag, "%s: error: out of memory\n", file);
    errors = 1;
  }
  if (errors) {
    free(src);
    memset(m, 0, sizeof *m);
    return errors;
  }
  m->file = name;
  m->src = src;
  return 0;
}

int fe_parse_string(const char *file, const char *src, fe_model *m, FILE *diag) {
  memset(m, 0, sizeof *m);
  char *copy = strdup(src);
  if (!copy) {
    if (diag) fprintf(diag, "%s: error: out of memory\n", file);
    return 1;
  }
  return parse(file, copy, strlen(copy), m, diag);
}

int fe_parse_file(const char *path, fe_model *m, FILE *diag) {
  memset(m, 0, sizeof *m);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (diag) fprintf(diag, "error: cannot open '%s': %s\n", path, strerror(errno));
    return 1;
  }
  size_t len = 0, cap = 4096;
  char *src = malloc(cap);
  int err = src ? 0 : ENOMEM;
  while (!err) {
    if (len + 1 >= cap) {
      char *p = cap <= SIZE_MAX / 2 ? realloc(src, cap * 2) : NULL;
      if (!p) {
        err = ENOMEM;
        break;
      }
      src = p;
      cap *= 2;
    }
    size_t got = fread(src + len, 1, cap - len - 1, f);
    len += got;
    if (got == 0) {
      if (ferror(f)) err = errno ? errno : EIO;
      break;
    }
  }
  fclose(f);
  if (err) {
    free(src);
    if (diag) fprintf(diag, "error: cannot read '%s': %s\n", path, strerror(err));
    return 1;
  }
  src[len] = '\0';
  /* The source is handled as a C string from here on. */
  const char *nul = memchr(src, '\0', len);
  if (nul) {
    int line = 1;
    for (const char *p = src; p < nul; p++) line += *p == '\n';
    free(src);
    if (diag) fprintf(diag, "%s:%d: error: a NUL byte; this is not a text file\n", path, line);
    return 1;
  }
  return parse(path, src, len, m, diag);
}

void fe_model_free(fe_model *m) {
  free((char *)m->file);
  free((char *)m->src);
  memset(m, 0, sizeof *m);
}
