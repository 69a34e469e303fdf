/* diag.c: diagnostics in the style of a C compiler: the position, the
 * message, the source line and a caret under the column. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"

/* The length of the well-formed UTF-8 character at p (1 for ASCII), or 0
 * for a byte that does not start one: a truncated sequence, a stray
 * continuation byte, an overlong form or a surrogate. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned char b = p[0];
  if (b < 0x80) return 1;
  int n = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
  if (!n || end - p < n) return 0;
  for (int i = 1; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  if ((b == 0xE0 && p[1] < 0xA0) || (b == 0xED && p[1] > 0x9F) || (b == 0xF0 && p[1] < 0x90) ||
      (b == 0xF4 && p[1] > 0x8F))
    return 0;
  return n;
}

/* Prints the line and the caret. Bytes that are not UTF-8 are written as
 * \xNN, so the diagnostic is valid UTF-8 whatever the file holds. The caret
 * line copies the tabs of the source line and gives each character one
 * column (four for an escaped byte), so the caret lands under the right
 * character in a terminal although columns count bytes. A byte order mark
 * at the start of the file is not shown: the lexer skips it and counts
 * line 1's columns from after it. */
static void show_line(FILE *out, const char *src, size_t len, fe_loc loc) {
  const char *p = src, *end = src + len;
  for (int l = 1; l < loc.line && p < end; l++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return;
    p = nl + 1;
  }
  if (p == src && len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0) p += 3;
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  const char *eol = nl ? nl : end;
  if (eol > p && eol[-1] == '\r') eol--;
  const unsigned char *u = (const unsigned char *)p, *ue = (const unsigned char *)eol;
  for (const unsigned char *q = u; q < ue;) {
    int n = utf8_len(q, ue);
    if (n)
      fwrite(q, 1, (size_t)n, out), q += n;
    else
      fprintf(out, "\\x%02x", *q++);
  }
  fputc('\n', out);
  const unsigned char *q = u;
  for (int k = 0; k < loc.col - 1;) {
    if (q + k < ue) {
      int n = utf8_len(q + k, ue);
      if (q[k] == '\t')
        fputc('\t', out);
      else
        fputs(n ? " " : "    ", out);
      k += n ? n : 1;
    } else {
      fputc(' ', out);
      k++;
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
