/* parser.y: the grammar of a .ilnas file; builds the tree of ast.h.
 *
 *   model NAME { input CxHxW; classes N; search ...; stage ... { ... } reduce ...; }
 *   data FORMAT "path" augment ...;   train ...;   grow ...;
 *
 * and a model of several tasks, each with its classes and its data:
 *
 *   model NAME { ... task A { classes N; } task B { classes M; } }
 *   data A FORMAT "path" ...;   data B FORMAT "path" ...;
 *
 * The grammar only knows shapes: which settings a statement can hold and
 * what their arguments look like. Settings may come in any order and any
 * number of times here; frontend/check.c decides what is a duplicate, what
 * is out of range and what is missing, with the locations kept in the tree.
 *
 * Syntax errors are worded for people (yyreport_syntax_error) and the
 * parse recovers at the level of statement and option lists ("list error"
 * rules), so one run reports the mistakes of several statements.
 */

%code top {
/* Locations are spans (frontend/ast.h): a nonterminal covers its first
 * symbol to the end of its last, an empty one sits where the previous
 * symbol ends. */
#define YYLLOC_DEFAULT(Cur, Rhs, N)                                          \
  do {                                                                       \
    if (N) {                                                                 \
      (Cur) = YYRHSLOC(Rhs, 1);                                              \
      (Cur).len = YYRHSLOC(Rhs, N).off + YYRHSLOC(Rhs, N).len - (Cur).off;   \
    } else {                                                                 \
      (Cur) = YYRHSLOC(Rhs, 0);                                              \
      (Cur).loc.col += (Cur).len;                                            \
      (Cur).off += (Cur).len;                                                \
      (Cur).len = 0;                                                         \
    }                                                                        \
  } while (0)
}

%code requires {
#include "frontend/ast.h"
}

%code provides {
/* The flex scanner (grammar/lexer.l); the parser reads it through a
 * wrapper that remembers the last tokens for the error messages. */
int fe_scan(FE_YYSTYPE *yylval_param, FE_YYLTYPE *yylloc_param, void *yyscanner);
}

%code {
#include <string.h>

static int fe_yylex(FE_YYSTYPE *lval, FE_YYLTYPE *lloc, fe_ctx *c);
static void fe_yyerror(FE_YYLTYPE *loc, fe_ctx *c, const char *msg);
static fe_setting *num(fe_ctx *c, fe_key key, fe_span at, fe_num a);
static fe_setting *choice(fe_ctx *c, fe_key key, fe_span at, int value);
static fe_stmt *stmt(fe_ctx *c, fe_stmt_kind kind, fe_span at, fe_setting *settings);
static fe_stmt *item(fe_ctx *c, fe_item_kind kind, fe_span at, fe_setting *settings);
static fe_setting_list concat(fe_setting_list a, fe_setting_list b);

/* After "expected ';'" the parser resumes at the next statement, which
 * began with the token it stopped at; errors in that statement should be
 * reported, not swallowed by bison's three-token quiet period. Once only,
 * so that a token that cannot start a statement is still skipped. */
#define resync(c) do { if ((c)->resync) { (c)->resync = 0; yyerrok; } } while (0)
}

%define api.pure full
%define api.prefix {fe_yy}
%define api.token.prefix {T_}
%define api.location.type {fe_span}
%define parse.error custom
%define parse.lac full
%locations
%param {fe_ctx *c}

%union {
  fe_num num;
  fe_size size;
  const char *str;
  fe_setting *set;
  fe_setting_list sets;
  fe_stmt *stmt;
  fe_stmt_list stmts;
}

/* The order of declaration is the order in which "expected ..." lists
 * name them. */
%token <str>
  MODEL "model" DATA "data" TRAIN "train" GROW "grow"
  INPUT "input" CLASSES "classes" SEARCH "search" STAGE "stage" REDUCE "reduce" TASK "task"
  CONV "conv" LINEAR "linear" MAXPOOL "maxpool" GAP "gap"
  LAYERS "layers" CHANNELS "channels" WIDTH "width" KERNEL "kernel"
  DENSE "dense" CHAIN "chain" NORM "norm" BATCH "batch" NONE "none"
  WEIGHT "weight" BUDGET "budget" FROM "from" DENSITY "density" SEED "seed" SHARED "shared"
  AUGMENT "augment" CROP "crop" FLIP "flip" SPLIT "split"
  EPOCHS "epochs" LR "lr" COSINE "cosine" CONSTANT "constant" STEP "step"
  MOMENTUM "momentum" DECAY "decay"
  ILNAS "ilnas" RANDOM "random" FIXED "fixed" EVERY "every" EPOCH "epoch"
  ALR "alr" CANDIDATES "candidates" FREEZE "freeze" LAST "last"
  BATCHES "batches" FLAT "flat" PLAN "plan" AFTER "after" RESIZE "resize"
%token <str> IDENT "name"
%token <num> NUMBER "number"
%token <size> SIZE "size"
%token <str> STRING "string"
%token DOTDOT ".." SEMI ";" LBRACE "{" RBRACE "}" COMMA ","

/* After an error, a ';' right there ends the broken statement ("error ';'")
 * rather than starting an empty one after it ("list error"). */
%precedence ERRLIST
%precedence ";"

%type <stmts> stmts entries
%type <stmt> stmt entry
%type <sets> search_settings data_settings train_settings grow_settings
%type <sets> stage_opts augments
%type <set> search_setting train_setting grow_setting stage_opt augment range
%type <size> size
%type <str> opt_name name keyword

%%

file
  : stmts                     { c->file_ast = $1.head; }
  ;

/* Error recovery, here and in a model's entries: a statement that went
 * wrong ends at the next ';' ("error ';'"), or the moment a new one can
 * start ("list error"), whichever comes first. Reaching a ';' or a closing
 * brace after an error (yyerrok) means the parser is back in step, so the
 * next mistake is reported even if it comes within bison's usual three
 * quiet tokens. */
stmts
  : %empty                    { $$ = (fe_stmt_list){0}; }
  | stmts stmt                { $$ = $1; if ($2) fe_stmt_append(&$$, $2); }
  | stmts error %prec ERRLIST { $$ = $1; resync(c); }
  ;

stmt
  : "model" opt_name "{" entries "}"
      { $$ = stmt(c, FE_ST_MODEL, @1, NULL); $$->name = $2; $$->name_at = @2; $$->body = $4.head;
        yyerrok; }
  | "data" IDENT data_settings ";"
      { $$ = stmt(c, FE_ST_DATA, @1, $3.head); $$->name = $2; $$->name_at = @2; }
  /* a task's data: the task's name, then the format */
  | "data" name IDENT data_settings ";"
      { $$ = stmt(c, FE_ST_DATA, @1, $4.head); $$->task = $2; $$->task_at = @2;
        $$->name = $3; $$->name_at = @3; }
  | "train" train_settings ";"  { $$ = stmt(c, FE_ST_TRAIN, @1, $2.head); }
  | "grow" grow_settings ";"    { $$ = stmt(c, FE_ST_GROW, @1, $2.head); }
  | ";"                         { $$ = NULL; }
  | error ";"                   { $$ = NULL; yyerrok; }
  /* A block after a mistake ("modle m { ... }") is skipped as a whole, its
   * own mistakes reported, rather than ended at its first ';'. */
  | error "{" entries "}"       { $$ = NULL; yyerrok; }
  ;

opt_name
  : %empty                    { $$ = NULL; }
  | name
  ;

/* Keywords are reserved only where they mean something: "stage conv
 * batch { ... }" names a stage "batch". */
name
  : IDENT
  | keyword
  ;

keyword
  : "model" | "data" | "train" | "grow" | "input" | "classes" | "task" | "search"
  | "stage" | "reduce" | "weight" | "kernel" | "budget" | "from" | "density"
  | "seed" | "conv" | "linear" | "layers" | "channels" | "width" | "dense"
  | "chain" | "norm" | "batch" | "none" | "maxpool" | "gap" | "augment"
  | "crop" | "flip" | "split" | "epochs" | "lr" | "cosine" | "constant"
  | "step" | "momentum" | "decay" | "ilnas" | "random" | "fixed" | "every"
  | "epoch" | "alr" | "candidates" | "freeze" | "last" | "batches" | "flat"
  | "plan" | "after" | "resize" | "shared"
  ;

entries
  : %empty                    { $$ = (fe_stmt_list){0}; }
  | entries entry             { $$ = $1; if ($2) fe_stmt_append(&$$, $2); }
  | entries error %prec ERRLIST { $$ = $1; resync(c); }
  ;

entry
  : "input" size ";"
      { fe_setting *s = fe_new_setting(c, FE_K_INPUT, @1); s->size = $2;
        $$ = stmt(c, FE_ST_INPUT, @1, s); }
  | "classes" NUMBER ";"      { $$ = stmt(c, FE_ST_CLASSES, @1, num(c, FE_K_CLASSES, @1, $2)); }
  | "search" search_settings ";" { $$ = stmt(c, FE_ST_SEARCH, @1, $2.head); }
  | "stage" "conv" opt_name "{" stage_opts "}"
      { $$ = item(c, FE_STAGE_CONV, @1, $5.head); $$->name = $3; $$->name_at = @3; yyerrok; }
  | "stage" "linear" opt_name "{" stage_opts "}"
      { $$ = item(c, FE_STAGE_LINEAR, @1, $5.head); $$->name = $3; $$->name_at = @3; yyerrok; }
  | "reduce" "maxpool" NUMBER ";"
      { $$ = item(c, FE_REDUCE_MAXPOOL, @1, num(c, FE_K_FACTOR, @2, $3)); }
  | "reduce" "conv" NUMBER ";"
      { $$ = item(c, FE_REDUCE_CONV, @1, num(c, FE_K_FACTOR, @2, $3)); }
  | "reduce" "gap" ";"        { $$ = item(c, FE_REDUCE_GAP, @1, NULL); }
  /* A task's body is read as a model's entries; check.c says which of
   * them a task may hold (only classes). */
  | "task" opt_name "{" entries "}"
      { $$ = stmt(c, FE_ST_TASK, @1, NULL); $$->name = $2; $$->name_at = @2; $$->body = $4.head;
        yyerrok; }
  | ";"                       { $$ = NULL; }
  | error ";"                 { $$ = NULL; yyerrok; }
  ;

size
  : SIZE
  | NUMBER                    { $$ = fe_size_of_num($1); }
  ;

search_settings
  : %empty                    { $$ = (fe_setting_list){0}; }
  | search_settings search_setting { $$ = $1; fe_setting_append(&$$, $2); }
  ;

search_setting
  : "weight"                  { $$ = choice(c, FE_K_GRAN, @1, FE_GRAN_WEIGHT); }
  | "kernel"                  { $$ = choice(c, FE_K_GRAN, @1, FE_GRAN_KERNEL); }
  | "budget" NUMBER           { $$ = num(c, FE_K_BUDGET, @1, $2); }
  | "from" "density" NUMBER   { $$ = num(c, FE_K_DENSITY, @2, $3); }
  | "density" NUMBER          { $$ = num(c, FE_K_DENSITY, @1, $2); }
  | "seed" NUMBER             { $$ = num(c, FE_K_SEED, @1, $2); }
  | "shared" NUMBER           { $$ = num(c, FE_K_SHARED, @1, $2); }
  ;

/* Inside a stage's braces ';' is a separator one may use or not. */
stage_opts
  : %empty                    { $$ = (fe_setting_list){0}; }
  | stage_opts stage_opt      { $$ = $1; fe_setting_append(&$$, $2); }
  | stage_opts ";"            { $$ = $1; }
  | stage_opts error          { $$ = $1; }
  ;

stage_opt
  : "layers" range            { $$ = $2; $$->key = FE_K_LAYERS; $$->at = @1; }
  | "channels" range          { $$ = $2; $$->key = FE_K_CHANNELS; $$->at = @1; }
  | "width" range             { $$ = $2; $$->key = FE_K_WIDTH; $$->at = @1; }
  | "kernel" size
      { $$ = fe_new_setting(c, FE_K_KERNEL, @1); $$->size = $2; }
  | "dense"                   { $$ = choice(c, FE_K_CONNECT, @1, 1); }
  | "chain"                   { $$ = choice(c, FE_K_CONNECT, @1, 0); }
  | "norm" "batch"            { $$ = choice(c, FE_K_NORM, @$, 1); }
  | "norm" "batch" "after"    { $$ = choice(c, FE_K_NORM, @$, 2); }
  | "norm" "none"             { $$ = choice(c, FE_K_NORM, @$, 0); }
  ;

range
  : NUMBER                    { $$ = num(c, FE_K_LAYERS, @1, $1); }
  | NUMBER ".." NUMBER        { $$ = num(c, FE_K_LAYERS, @1, $1); $$->b = $3; $$->nargs = 2; }
  ;

data_settings
  : %empty                    { $$ = (fe_setting_list){0}; }
  | data_settings STRING
      { fe_setting *s = fe_new_setting(c, FE_K_PATH, @2); s->str = $2;
        $$ = $1; fe_setting_append(&$$, s); }
  | data_settings "augment" augments { $$ = concat($1, $3); }
  | data_settings "split" NUMBER
      { $$ = $1; fe_setting_append(&$$, num(c, FE_K_SPLIT, @2, $3)); }
  | data_settings "resize" size
      { fe_setting *s = fe_new_setting(c, FE_K_RESIZE, @2); s->size = $3;
        $$ = $1; fe_setting_append(&$$, s); }
  | data_settings "channels" NUMBER
      { $$ = $1; fe_setting_append(&$$, num(c, FE_K_IN_CHANNELS, @2, $3)); }
  ;

/* "augment crop 2, flip"; the comma may be left out. */
augments
  : augment                   { $$ = (fe_setting_list){0}; fe_setting_append(&$$, $1); }
  | augments augment          { $$ = $1; fe_setting_append(&$$, $2); }
  | augments "," augment      { $$ = $1; fe_setting_append(&$$, $3); }
  ;

augment
  : "crop" NUMBER             { $$ = num(c, FE_K_CROP, @1, $2); }
  | "flip"                    { $$ = fe_new_setting(c, FE_K_FLIP, @1); }
  ;

train_settings
  : %empty                    { $$ = (fe_setting_list){0}; }
  | train_settings train_setting { $$ = $1; fe_setting_append(&$$, $2); }
  ;

train_setting
  : "batch" NUMBER            { $$ = num(c, FE_K_BATCH, @1, $2); }
  | "epochs" NUMBER           { $$ = num(c, FE_K_EPOCHS, @1, $2); }
  | "lr" NUMBER               { $$ = num(c, FE_K_LR, @1, $2); }
  | "cosine"                  { $$ = choice(c, FE_K_SCHED, @1, FE_SCHED_COSINE); }
  | "constant"                { $$ = choice(c, FE_K_SCHED, @1, FE_SCHED_CONSTANT); }
  | "step" NUMBER
      { $$ = choice(c, FE_K_SCHED, @1, FE_SCHED_STEP); $$->a = $2; $$->nargs = 1; }
  | "step" NUMBER NUMBER
      { $$ = choice(c, FE_K_SCHED, @1, FE_SCHED_STEP); $$->a = $2; $$->b = $3; $$->nargs = 2; }
  | "momentum" NUMBER         { $$ = num(c, FE_K_MOMENTUM, @1, $2); }
  | "decay" NUMBER            { $$ = num(c, FE_K_DECAY, @1, $2); }
  ;

grow_settings
  : %empty                    { $$ = (fe_setting_list){0}; }
  | grow_settings grow_setting { $$ = $1; fe_setting_append(&$$, $2); }
  ;

grow_setting
  : "ilnas"                   { $$ = choice(c, FE_K_METHOD, @1, FE_SEARCH_ILNAS); }
  | "random"                  { $$ = choice(c, FE_K_METHOD, @1, FE_SEARCH_RANDOM); }
  | "fixed"                   { $$ = choice(c, FE_K_METHOD, @1, FE_SEARCH_FIXED); }
  | "every" NUMBER epoch_unit { $$ = num(c, FE_K_EVERY, @1, $2); }
  | "alr" NUMBER              { $$ = num(c, FE_K_ALR, @1, $2); }
  | "decay" NUMBER            { $$ = num(c, FE_K_ALR_DECAY, @1, $2); }
  | "candidates" NUMBER       { $$ = num(c, FE_K_CANDIDATES, @1, $2); }
  | "freeze" "last" NUMBER epoch_unit { $$ = num(c, FE_K_FREEZE, @$, $3); $$->at.len = @2.off + @2.len - @1.off; }
  | "batches" NUMBER          { $$ = num(c, FE_K_BATCHES, @1, $2); }
  | "flat" NUMBER             { $$ = num(c, FE_K_FLAT, @1, $2); }
  | "plan"                    { $$ = choice(c, FE_K_PLAN, @1, 1); }
  ;

epoch_unit
  : %empty
  | "epoch"
  | "epochs"
  ;

%%

static fe_setting *num(fe_ctx *c, fe_key key, fe_span at, fe_num a) {
  fe_setting *s = fe_new_setting(c, key, at);
  s->a = a;
  s->nargs = 1;
  return s;
}

static fe_setting *choice(fe_ctx *c, fe_key key, fe_span at, int value) {
  fe_setting *s = fe_new_setting(c, key, at);
  s->choice = value;
  return s;
}

static fe_stmt *stmt(fe_ctx *c, fe_stmt_kind kind, fe_span at, fe_setting *settings) {
  fe_stmt *s = fe_new_stmt(c, kind, at);
  s->settings = settings;
  return s;
}

static fe_stmt *item(fe_ctx *c, fe_item_kind kind, fe_span at, fe_setting *settings) {
  fe_stmt *s = stmt(c, kind == FE_STAGE_CONV || kind == FE_STAGE_LINEAR ? FE_ST_STAGE : FE_ST_REDUCE,
                    at, settings);
  s->item = kind;
  return s;
}

static fe_setting_list concat(fe_setting_list a, fe_setting_list b) {
  if (!a.head) return b;
  if (b.head) {
    a.tail->next = b.head;
    a.tail = b.tail;
  }
  return a;
}

/* Only bison's own failure comes here ("memory exhausted", when the
 * stack outgrows YYMAXDEPTH); syntax errors go to yyreport_syntax_error. */
static void fe_yyerror(FE_YYLTYPE *loc, fe_ctx *c, const char *msg) {
  fe_error(c, loc->loc, "%s", msg);
}

static int starts_statement(int token) {
  switch (token) {
  case T_MODEL: case T_DATA: case T_TRAIN: case T_GROW: case T_INPUT:
  case T_CLASSES: case T_TASK: case T_SEARCH: case T_STAGE: case T_REDUCE:
    return 1;
  default:
    return 0;
  }
}

static int fe_yylex(FE_YYSTYPE *lval, FE_YYLTYPE *lloc, fe_ctx *c) {
  /* After too many errors the rest of the file is not read. */
  int t = c->stopped ? T_YYEOF : fe_scan(lval, lloc, c->scanner);
  if (t == T_YYEOF) *lloc = (fe_span){{c->line, c->col}, c->off, 0};
  c->prev = c->tok;
  c->prev_kind = c->tok_kind;
  c->prev_stmt = c->stmt;
  c->tok = *lloc;
  c->tok_kind = t;
  if (starts_statement(t)) c->stmt = *lloc;
  return t;
}

/* How an expected symbol is named in a message: words for the symbols
 * that stand for many spellings, NULL for keywords and punctuation, which
 * are quoted as they are spelled. */
static const char *describe(yysymbol_kind_t s, const fe_ctx *c) {
  switch (s) {
  case YYSYMBOL_YYEOF: return "end of file";
  case YYSYMBOL_IDENT:
    return c->prev_kind == T_DATA ? "a data format (idx, cifar10, stl10, digits-csv, folder or downsampled)" : "a name";
  case YYSYMBOL_NUMBER: return "a number";
  case YYSYMBOL_SIZE:
    return c->prev_kind == T_INPUT ? "a size like 1x28x28" : "a size like 3x3";
  case YYSYMBOL_STRING: return "a string";
  default: return NULL;
  }
}

/* A token as the user wrote it, for "unexpected ...". */
static void quote_token(const fe_ctx *c, char *buf, size_t n) {
  fe_span t = c->tok;
  if (c->tok_kind == T_YYEOF)
    snprintf(buf, n, "end of file");
  else if (c->tok_kind == T_STRING && t.len > 32)
    snprintf(buf, n, "string");
  else if (c->tok_kind == T_STRING)
    snprintf(buf, n, "%.*s", t.len, c->src + t.off);
  else if (t.len <= 32)
    snprintf(buf, n, "'%.*s'", t.len, c->src + t.off);
  else
    snprintf(buf, n, "'%.29s...'", c->src + t.off);
}

/* The keywords are declared first, IDENT right after them. */
static int is_keyword(yysymbol_kind_t s) {
  return s >= YYSYMBOL_MODEL && s < YYSYMBOL_IDENT;
}

static int yyreport_syntax_error(const yypcontext_t *ctx, fe_ctx *c) {
  c->syntax_errors++;
  c->resync = 0;
  if (c->stopped) return 0;
  yysymbol_kind_t exp[YYNTOKENS];
  int n = yypcontext_expected_tokens(ctx, exp, YYNTOKENS);
  if (n < 0) return n;
  int semi = 0, rbrace = 0, ident = 0, size = 0, stmt = 0;
  for (int i = 0; i < n; i++) {
    semi |= exp[i] == YYSYMBOL_SEMI;
    rbrace |= exp[i] == YYSYMBOL_RBRACE;
    ident |= exp[i] == YYSYMBOL_IDENT;
    size |= exp[i] == YYSYMBOL_SIZE;
    stmt |= exp[i] == YYSYMBOL_MODEL || exp[i] == YYSYMBOL_INPUT;
  }
  /* Where the previous token ends: missing things are reported there. */
  fe_loc after = c->prev.loc;
  after.col += c->prev.len;
  if (c->prev.loc.line == 0) after = c->tok.loc;

  /* A statement that ends where the next one (or the block, or the file)
   * begins is missing its ';'. Where '}' or a statement may come, ';' is
   * only a separator or an empty statement, and not what is missing. */
  if (semi && !rbrace && !stmt &&
      (c->tok_kind == T_YYEOF || c->tok_kind == T_RBRACE || starts_statement(c->tok_kind))) {
    fe_span s = c->prev_stmt;
    int end = c->prev.off + c->prev.len;
    if (s.len > 0 && s.loc.line == c->prev.loc.line && s.off <= c->prev.off && end - s.off <= 40)
      fe_error(c, after, "expected ';' after '%.*s'", end - s.off, c->src + s.off);
    else if (s.len > 0)
      fe_error(c, after, "expected ';' at the end of the '%.*s' statement", s.len, c->src + s.off);
    else
      fe_error(c, after, "expected ';'");
    c->resync = 1;
    return 0;
  }

  char msg[1024], tok[64];
  quote_token(c, tok, sizeof tok);
  int len = snprintf(msg, sizeof msg, "unexpected %s", tok);
  yysymbol_kind_t list[YYNTOKENS];
  int k = 0;
  /* Left out: keywords where a name may come (they are there as names),
   * a number where a size may come, ';' where it would only be an empty
   * statement or a separator, the end of file when something else fits. */
  for (int i = 0; i < n; i++) {
    if (ident && is_keyword(exp[i])) continue;
    if (size && exp[i] == YYSYMBOL_NUMBER) continue;
    if ((rbrace || stmt) && exp[i] == YYSYMBOL_SEMI) continue;
    if (n > 1 && exp[i] == YYSYMBOL_YYEOF) continue;
    list[k++] = exp[i];
  }
  for (int i = 0; i < k && len < (int)sizeof msg; i++) {
    const char *sep = i == 0 ? ", expected " : i == k - 1 ? " or " : ", ";
    const char *d = describe(list[i], c);
    if (d)
      len += snprintf(msg + len, sizeof msg - (size_t)len, "%s%s", sep, d);
    else
      len += snprintf(msg + len, sizeof msg - (size_t)len, "%s'%s'", sep, yysymbol_name(list[i]));
  }
  fe_error(c, c->tok_kind == T_YYEOF ? after : c->tok.loc, "%s", msg);
  return 0;
}
