/* ast.h: the syntax tree between grammar/ and the checks (frontend-internal).
 *
 * grammar/parser.y builds the tree with the fe_new_* helpers below; it knows
 * nothing about defaults or limits. frontend/check.c walks it, reports every
 * user mistake and fills the fe_model. The tree, its strings and the scanner
 * live in one fe_ctx per parse and die with it (fe_ctx_free).
 *
 *   fe_ctx c;
 *   fe_ctx_init(&c, "m.ilnas", src, strlen(src), stderr);
 *   if (fe_syntax(&c) == 0) errors = fe_check(&c, &model);
 *   fe_flush(&c);
 *   fe_ctx_free(&c);
 */
#ifndef ILNAS_FE_AST_H
#define ILNAS_FE_AST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend/spec.h"

enum { FE_MAX_ERRORS = 20 };

/* A stretch of the source: where it starts (line, column and byte offset)
 * and how many bytes it covers. It is also the parser's location type. */
typedef struct fe_span {
  fe_loc loc;
  int off, len;
} fe_span;

/* A number as written: 100k, 0.1, 5e-4, 4x, -3. */
typedef struct fe_num {
  fe_span at;
  double v;    /* value, k/M/G applied */
  int64_t i;   /* the exact value when whole; saturated when huge */
  int whole;   /* a whole number, decided on the digits (1.5k is, 0.1 is not) */
  int huge;    /* whole but beyond int64 */
  char suffix; /* 'k', 'M', 'G', 'x' or 0 */
  int bad;     /* malformed; the lexer already reported it */
} fe_num;

/* A size as written: 1x28x28, 3x3, or one number. */
enum { FE_SIZE_MAX = 4 };
typedef struct fe_size {
  fe_span at;
  int n;                  /* components written (more than FE_SIZE_MAX: FE_SIZE_MAX + 1) */
  int64_t d[FE_SIZE_MAX]; /* values, saturated at INT64_MAX */
  int whole;              /* every component is a whole number */
  char suffix;            /* a single number's suffix, else 0 */
  int bad;                /* malformed; already reported */
} fe_size;

/* What a setting sets. One per keyword, except where several words choose
 * one value (dense/chain, cosine/constant/step, ...): those share a key so
 * that giving two of them is a duplicate. */
typedef enum fe_key {
  FE_K_INPUT, /* model */
  FE_K_CLASSES,
  FE_K_GRAN, /* search */
  FE_K_BUDGET,
  FE_K_DENSITY,
  FE_K_SEED,
  FE_K_SHARED,
  FE_K_LAYERS, /* stage */
  FE_K_CHANNELS,
  FE_K_WIDTH,
  FE_K_KERNEL,
  FE_K_CONNECT,
  FE_K_NORM,
  FE_K_FACTOR, /* reduce */
  FE_K_PATH,   /* data */
  FE_K_CROP,
  FE_K_FLIP,
  FE_K_SPLIT,
  FE_K_RESIZE,
  FE_K_IN_CHANNELS,
  FE_K_BATCH, /* train */
  FE_K_EPOCHS,
  FE_K_LR,
  FE_K_SCHED,
  FE_K_MOMENTUM,
  FE_K_DECAY,
  FE_K_METHOD, /* grow */
  FE_K_EVERY,
  FE_K_ALR,
  FE_K_ALR_DECAY,
  FE_K_CANDIDATES,
  FE_K_FREEZE,
  FE_K_BATCHES,
  FE_K_FLAT,
  FE_K_PLAN,
  FE_K_COUNT
} fe_key;

typedef struct fe_setting {
  fe_key key;
  fe_span at;      /* the keyword (for a choice: the chosen word) */
  int choice;      /* GRAN, SCHED, METHOD: the fe_* enum; CONNECT: dense; NORM: batch */
  fe_num a, b;     /* values; a range lo..hi; step's epochs and factor */
  int nargs;       /* how many of a, b were written */
  fe_size size;    /* INPUT, KERNEL, RESIZE */
  const char *str; /* PATH, unescaped */
  struct fe_setting *next;
} fe_setting;

typedef enum fe_stmt_kind {
  FE_ST_MODEL,
  FE_ST_DATA,
  FE_ST_TRAIN,
  FE_ST_GROW, /* top level */
  FE_ST_INPUT,
  FE_ST_CLASSES,
  FE_ST_SEARCH,
  FE_ST_STAGE,
  FE_ST_REDUCE,
  FE_ST_TASK /* in a model */
} fe_stmt_kind;

typedef struct fe_stmt {
  fe_stmt_kind kind;
  fe_item_kind item; /* STAGE, REDUCE: which one */
  fe_span at;        /* the first keyword */
  const char *name;  /* model, stage, task: the name; data: the format; NULL if absent */
  fe_span name_at;
  const char *task;  /* data: the task it is for; NULL if absent */
  fe_span task_at;
  fe_setting *settings; /* in source order */
  struct fe_stmt *body; /* model, task: its entries, in source order */
  struct fe_stmt *next;
} fe_stmt;

/* Singly linked lists built left to right by left-recursive rules. */
typedef struct fe_setting_list {
  fe_setting *head, *tail;
} fe_setting_list;
typedef struct fe_stmt_list {
  fe_stmt *head, *tail;
} fe_stmt_list;

typedef struct fe_chunk fe_chunk;

/* An error and its notes, rendered, waiting to be printed in source order. */
typedef struct fe_report {
  fe_loc loc; /* line 0: about the whole file, printed last */
  int seq;    /* order of reporting, among equal locations */
  char *text;
  size_t len;
} fe_report;

/* One parse: the source, the diagnostics stream and counts, the arena that
 * holds the tree, and what the scanner and the syntax error reporter need. */
typedef struct fe_ctx {
  const char *file, *src; /* not owned */
  size_t src_len;
  FILE *diag;
  int errors;         /* all diagnostics with "error:" so far */
  int syntax_errors;  /* of those, the ones bison reported */
  int stopped;        /* FE_MAX_ERRORS reached: report nothing more */
  int shown;          /* the last error was kept (its notes may follow) */
  fe_report *reports; /* held until fe_flush */
  int n_reports, cap_reports;
  fe_chunk *arena;
  jmp_buf *oom;                 /* where to go when memory runs out during fe_syntax */
  void *scanner;                /* the flex scanner, while fe_syntax runs */
  struct fe_block *flex_blocks; /* what the scanner has allocated (grammar/lexer.l) */
  int line, col, off;           /* the scanner's position: the next byte to read */
  fe_span tok, prev;            /* the last token read and the one before it */
  fe_span stmt, prev_stmt;      /* the statement keyword before tok / before prev */
  int tok_kind, prev_kind;      /* their bison token kinds */
  int resync;                   /* a ';' was missing: parsing may resume at tok */
  fe_stmt *file_ast;            /* the result: top-level statements in order */
} fe_ctx;

void fe_ctx_init(fe_ctx *c, const char *file, const char *src, size_t len, FILE *diag);
void fe_ctx_free(fe_ctx *c); /* drops reports not flushed */

/* Zeroed memory from the parse's arena. Out of memory while fe_syntax runs
 * jumps back into it (it reports and fails); elsewhere returns NULL. */
void *fe_alloc(fe_ctx *c, size_t n);
char *fe_strndup(fe_ctx *c, const char *s, size_t n);

/* Diagnostics: "file:line:col: error: msg", the source line and a caret.
 * They are held and printed by fe_flush sorted by location, so that the
 * lexer's, the parser's and the checks' reports read top to bottom.
 * fe_error counts and keeps nothing after FE_MAX_ERRORS; fe_note belongs
 * to the error before it and is dropped when that error was. */
void fe_error(fe_ctx *c, fe_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void fe_note(fe_ctx *c, fe_loc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void fe_flush(fe_ctx *c);
void fe_vdiag(FILE *out, const char *file, const char *src, size_t len, fe_loc loc,
              const char *kind, const char *fmt, va_list ap);

/* Tree constructors for the grammar's actions. */
fe_setting *fe_new_setting(fe_ctx *c, fe_key key, fe_span at);
fe_stmt *fe_new_stmt(fe_ctx *c, fe_stmt_kind kind, fe_span at);
void fe_setting_append(fe_setting_list *l, fe_setting *s);
void fe_stmt_append(fe_stmt_list *l, fe_stmt *s);
fe_num fe_num_read(fe_ctx *c, fe_span at, const char *text, int len);
fe_size fe_size_read(fe_span at, const char *text, int len);
fe_size fe_size_of_num(fe_num n);

/* grammar/parser.y: scan and parse c->src into c->file_ast. Returns 0, or
 * -1 when it ran out of memory (reported). Syntax errors are counted in c,
 * not in the return value. */
int fe_syntax(fe_ctx *c);

/* frontend/check.c: checks the tree and fills m. Returns the error count of
 * the whole parse (c->errors). */
int fe_check(fe_ctx *c, fe_model *m);

#endif
