/* diag.c: diagnostics in the style of a C compiler: the position, the
 * message, the source line and a caret under the column. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"

/* Prints the line and the caret. The caret line copies the tabs of the
 * source line and skips UTF-8 continuation bytes, so the caret lands under
 * the right character in a terminal although columns count bytes. */
static void show_line(FILE *out, const char *src, size_t len, fe_loc loc) {
  const char *p = src, *end = src + len;
  for (int l = 1; l < loc.line && p < end; l++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return;
    p = nl + 1;
  }
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  const char *eol = nl ? nl : end;
  if (eol > p && eol[-1] == '\r') eol--;
  fprintf(out, "%.*s\n", (int)(eol - p), p);
  for (int k = 0; k < loc.col - 1; k++) {
    if (p + k < eol) {
      unsigned char ch = (unsigned char)p[k];
      if (ch == '\t')
        fputc('\t', out);
      else if ((ch & 0xC0) != 0x80)
        fputc(' ', out);
    } else {
      fputc(' ', out);
    }
  }
  fputs("^\n", out);
}

void fe_vdiag(FILE *out, const char *file, const char *src, size_t len, fe_loc loc,
              const char *kind, const char *fmt, va_list ap) {
  if (!out) return;
  if (loc.line <= 0) {
    fprintf(out, "%s: %s: ", file, kind);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    return;
  }
  fprintf(out, "%s:%d:%d: %s: ", file, loc.line, loc.col, kind);
  vfprintf(out, fmt, ap);
  fputc('\n', out);
  if (src) show_line(out, src, len, loc);
}

/* Renders an error into a new report, or a note onto the report of its
 * error. Sets c->shown for the notes to come: 1 held, 2 printed at once
 * (no memory to hold it: out of order, but not lost), 0 dropped. */
static void hold(fe_ctx *c, int is_note, fe_loc loc, const char *fmt, va_list ap) {
  const char *kind = is_note ? "note" : "error";
  if (!c->diag || (is_note && c->shown == 2)) {
    fe_vdiag(c->diag, c->file, c->src, c->src_len, loc, kind, fmt, ap);
    c->shown = c->diag ? 2 : 0;
    return;
  }
  char *text = NULL;
  size_t len = 0;
  va_list again;
  va_copy(again, ap);
  FILE *f = open_memstream(&text, &len);
  if (f) {
    fe_vdiag(f, c->file, c->src, c->src_len, loc, kind, fmt, ap);
    if (fclose(f) != 0) free(text), text = NULL;
  }
  fe_report *r = NULL;
  if (text && is_note) {
    r = &c->reports[c->n_reports - 1];
    char *joined = realloc(r->text, r->len + len + 1);
    if (joined) {
      memcpy(joined + r->len, text, len + 1);
      r->text = joined;
      r->len += len;
    } else {
      r = NULL;
    }
  } else if (text) {
    if (c->n_reports == c->cap_reports) {
      int cap = c->cap_reports ? 2 * c->cap_reports : 16;
      fe_report *p = realloc(c->reports, (size_t)cap * sizeof *p);
      if (p) c->reports = p, c->cap_reports = cap;
    }
    if (c->n_reports < c->cap_reports) {
      r = &c->reports[c->n_reports];
      *r = (fe_report){loc, c->n_reports, text, len};
      c->n_reports++;
      text = NULL;
    }
  }
  if (!r) {
    fe_vdiag(c->diag, c->file, c->src, c->src_len, loc, kind, fmt, again);
    c->shown = 2;
  } else {
    c->shown = 1;
  }
  free(text); /* NULL when a new report took it */
  va_end(again);
}

void fe_error(fe_ctx *c, fe_loc loc, const char *fmt, ...) {
  c->shown = 0;
  if (c->stopped) return;
  c->errors++;
  va_list ap;
  va_start(ap, fmt);
  hold(c, 0, loc, fmt, ap);
  va_end(ap);
  if (c->errors == FE_MAX_ERRORS) c->stopped = 1;
}

void fe_note(fe_ctx *c, fe_loc loc, const char *fmt, ...) {
  if (!c->shown) return;
  va_list ap;
  va_start(ap, fmt);
  hold(c, 1, loc, fmt, ap);
  va_end(ap);
}

static int by_place(const void *a, const void *b) {
  const fe_report *x = a, *y = b;
  long lx = x->loc.line > 0 ? x->loc.line : INT32_MAX,
       ly = y->loc.line > 0 ? y->loc.line : INT32_MAX;
  if (lx != ly) return lx < ly ? -1 : 1;
  if (x->loc.col != y->loc.col) return x->loc.col < y->loc.col ? -1 : 1;
  return (x->seq > y->seq) - (x->seq < y->seq);
}

void fe_flush(fe_ctx *c) {
  if (c->n_reports > 1) qsort(c->reports, (size_t)c->n_reports, sizeof *c->reports, by_place);
  for (int i = 0; i < c->n_reports; i++) {
    fputs(c->reports[i].text, c->diag);
    free(c->reports[i].text);
  }
  c->n_reports = 0;
  if (c->stopped && c->diag)
    fprintf(c->diag, "%s: note: stopping after %d errors\n", c->file, FE_MAX_ERRORS);
}

void fe_error_at(const fe_model *m, fe_loc loc, FILE *diag, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fe_vdiag(diag, m->file ? m->file : "<input>", m->src, m->src ? strlen(m->src) : 0, loc, "error",
           fmt, ap);
  va_end(ap);
}
