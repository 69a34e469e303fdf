/* ast.c: the parse's arena, the tree constructors, and how numbers and
 * sizes are read from their text. */
#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/ast.h"

struct fe_chunk {
  fe_chunk *next;
  size_t used, cap;
  alignas(max_align_t) unsigned char data[];
};

enum { CHUNK_BYTES = 16384 };

void fe_ctx_init(fe_ctx *c, const char *file, const char *src, size_t len, FILE *diag) {
  memset(c, 0, sizeof *c);
  c->file = file;
  c->src = src;
  c->src_len = len;
  c->diag = diag;
  c->line = c->col = 1;
}

void fe_ctx_free(fe_ctx *c) {
  for (int i = 0; i < c->n_reports; i++) free(c->reports[i].text);
  free(c->reports);
  c->reports = NULL;
  c->n_reports = c->cap_reports = 0;
  for (fe_chunk *k = c->arena, *next; k; k = next) {
    next = k->next;
    free(k);
  }
  c->arena = NULL;
  c->file_ast = NULL;
}

void *fe_alloc(fe_ctx *c, size_t n) {
  size_t a = alignof(max_align_t);
  n = (n + a - 1) / a * a;
  fe_chunk *k = c->arena;
  if (!k || k->cap - k->used < n) {
    size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
    k = malloc(sizeof *k + cap);
    if (!k) {
      if (c->oom) longjmp(*c->oom, 1);
      return NULL;
    }
    k->used = 0;
    k->cap = cap;
    k->next = c->arena;
    c->arena = k;
  }
  void *p = k->data + k->used;
  k->used += n;
  memset(p, 0, n);
  return p;
}

char *fe_strndup(fe_ctx *c, const char *s, size_t n) {
  char *p = fe_alloc(c, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

fe_setting *fe_new_setting(fe_ctx *c, fe_key key, fe_span at) {
  fe_setting *s = fe_alloc(c, sizeof *s);
  if (s) {
    s->key = key;
    s->at = at;
  }
  return s;
}

fe_stmt *fe_new_stmt(fe_ctx *c, fe_stmt_kind kind, fe_span at) {
  fe_stmt *s = fe_alloc(c, sizeof *s);
  if (s) {
    s->kind = kind;
    s->at = at;
  }
  return s;
}

void fe_setting_append(fe_setting_list *l, fe_setting *s) {
  if (l->tail)
    l->tail->next = s;
  else
    l->head = s;
  l->tail = s;
}

void fe_stmt_append(fe_stmt_list *l, fe_stmt *s) {
  if (l->tail)
    l->tail->next = s;
  else
    l->head = s;
  l->tail = s;
}

/* Whether digits x 10^exp10 is whole, and its value (saturated) if so.
 * Done on the decimal digits because 1.5k must be exactly 1500 however
 * 1.5 rounds in binary. */
static void exact_whole(const char *digits, int ndig, long exp10, fe_num *n) {
  while (ndig > 0 && digits[0] == '0') digits++, ndig--;
  while (ndig > 0 && digits[ndig - 1] == '0') ndig--, exp10++;
  if (ndig == 0) {
    n->whole = 1;
    n->i = 0;
    return;
  }
  if (exp10 < 0) return;
  n->whole = 1;
  uint64_t v = 0;
  int fits = ndig + exp10 <= 19;
  for (long k = 0; fits && k < ndig + exp10; k++) {
    v = v * 10 + (uint64_t)(k < ndig ? digits[k] - '0' : 0);
    fits = v <= INT64_MAX;
  }
  if (!fits) {
    n->huge = 1;
    n->i = INT64_MAX;
    return;
  }
  n->i = (int64_t)v;
}

fe_num fe_num_read(fe_ctx *c, fe_span at, const char *text, int len) {
  fe_num n = {.at = at};
  int pow10 = 0;
  char last = len > 0 ? text[len - 1] : 0;
  if (last == 'k' || last == 'M' || last == 'G' || last == 'x') {
    n.suffix = last;
    pow10 = last == 'k' ? 3 : last == 'M' ? 6 : last == 'G' ? 9 : 0;
    len--;
  }
  char *buf = fe_alloc(c, (size_t)len + 1), *digits = fe_alloc(c, (size_t)len + 1);
  if (!buf || !digits) {
    n.bad = 1;
    return n;
  }
  memcpy(buf, text, (size_t)len);
  buf[len] = '\0';

  const char *p = buf;
  int neg = *p == '-', ndig = 0;
  long exp10 = pow10;
  if (neg) p++;
  for (; *p >= '0' && *p <= '9'; p++) digits[ndig++] = *p;
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++) digits[ndig++] = *p, exp10--;
  if (*p == 'e' || *p == 'E') {
    errno = 0;
    long e = strtol(p + 1, NULL, 10);
    /* Beyond this the value is 0 or infinite anyway; clamping keeps the
     * exponent arithmetic from overflowing. */
    if (e > 100000 || errno == ERANGE) e = 100000;
    if (e < -100000) e = -100000;
    exp10 += e;
  }
  exact_whole(digits, ndig, exp10, &n);
  if (neg) n.i = -n.i;

  n.v = strtod(buf, NULL) * (pow10 == 9 ? 1e9 : pow10 == 6 ? 1e6 : pow10 == 3 ? 1e3 : 1);
  if (!isfinite(n.v)) {
    fe_error(c, at.loc, "number '%.*s' is out of range", at.len, c->src + at.off);
    n.bad = 1;
  }
  return n;
}

fe_size fe_size_read(fe_span at, const char *text, int len) {
  fe_size s = {.at = at, .whole = 1};
  const char *p = text, *end = text + len;
  while (p < end) {
    int64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
      v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (*p - '0');
    if (s.n < FE_SIZE_MAX) s.d[s.n] = v;
    if (s.n <= FE_SIZE_MAX) s.n++;
    if (p < end) p++; /* the 'x' */
  }
  return s;
}

fe_size fe_size_of_num(fe_num n) {
  fe_size s = {.at = n.at, .n = 1, .whole = n.whole, .suffix = n.suffix, .bad = n.bad};
  s.d[0] = n.i;
  return s;
}
