/* ptx.c: the GPU kernel generators and the PTX emitter (see ptx.h).
 *
 * The kernels are simple on purpose: one thread per output element walks
 * the active taps of its output channel (or, transposed, of its input
 * channel) from a baked index table; one thread per active weight sums
 * its gradient over the batch. Locals are allocas in the entry block:
 * cg_ptx_emit runs the O3 pipeline, whose mem2reg turns them into
 * registers, and the generator stays straight-line C. */
#include "kgen/ptx.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>

/* What the generators hold while writing one kernel. */
typedef struct pg {
  LLVMModuleRef m;
  LLVMContextRef ctx;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  LLVMBasicBlockRef entry;       /* allocas only; branches to the body at the end */
  LLVMTypeRef i8, i32, i64, f32, f64, fp;
  LLVMValueRef pa, pb, pc, pd;   /* the four buffers */
  LLVMValueRef n, a_ns, b_ns;
  const char *name;
  int failed;                    /* a table could not be kept: out of memory */
} pg;

typedef struct pg_table {
  LLVMTypeRef et;                /* i32 or i8 */
  LLVMValueRef base;             /* the table's address, loaded in the entry block */
} pg_table;

typedef struct pg_loop {
  LLVMValueRef var, hi;          /* i64 counter alloca, exclusive bound */
  LLVMBasicBlockRef cond, body, exit;
} pg_loop;

static LLVMValueRef c64(pg *p, int64_t v) { return LLVMConstInt(p->i64, (unsigned long long)v, 1); }

static LLVMBasicBlockRef block(pg *p, const char *name) {
  return LLVMAppendBasicBlockInContext(p->ctx, p->fn, name);
}

static LLVMValueRef local(pg *p, LLVMTypeRef t, const char *name) {
  LLVMBuilderRef eb = LLVMCreateBuilderInContext(p->ctx);
  LLVMPositionBuilderAtEnd(eb, p->entry);
  LLVMValueRef v = LLVMBuildAlloca(eb, t, name);
  LLVMDisposeBuilder(eb);
  return v;
}

static LLVMValueRef sreg(pg *p, const char *reg) {
  char name[64];
  snprintf(name, sizeof name, "llvm.nvvm.read.ptx.sreg.%s", reg);
  LLVMTypeRef ft = LLVMFunctionType(p->i32, NULL, 0, 0);
  LLVMValueRef f = LLVMGetNamedFunction(p->m, name);
  if (!f) f = LLVMAddFunction(p->m, name, ft);
  return LLVMBuildZExt(p->b, LLVMBuildCall2(p->b, ft, f, NULL, 0, ""), p->i64, reg);
}

/* Starts a kernel: signature, the thread's global index, and a return for
 * the threads past `total` (i64). Returns that index. */
static LLVMValueRef begin(pg *p, LLVMModuleRef m, const char *name, LLVMValueRef (*total)(pg *, const void *),
                          const void *arg) {
  memset(p, 0, sizeof *p);
  p->m = m, p->name = name;
  p->ctx = LLVMGetModuleContext(m);
  p->i8 = LLVMInt8TypeInContext(p->ctx), p->i32 = LLVMInt32TypeInContext(p->ctx);
  p->i64 = LLVMInt64TypeInContext(p->ctx);
  p->f32 = LLVMFloatTypeInContext(p->ctx), p->f64 = LLVMDoubleTypeInContext(p->ctx);
  p->fp = LLVMPointerType(p->f32, 0);
  p->fn = LLVMAddFunction(m, name, cg_sparse_fn_type(p->ctx));
  p->pa = LLVMGetParam(p->fn, 0), p->pb = LLVMGetParam(p->fn, 1);
  p->pc = LLVMGetParam(p->fn, 2), p->pd = LLVMGetParam(p->fn, 3);
  p->n = LLVMGetParam(p->fn, 4), p->a_ns = LLVMGetParam(p->fn, 5);
  p->b_ns = LLVMGetParam(p->fn, 6);
  /* The buffers of one call are distinct tensors: noalias lets loads of
   * x and w be hoisted and cached (ld.global.nc) past the stores. */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (unsigned i = 1; i <= 4; i++)
    LLVMAddAttributeAtIndex(p->fn, i, LLVMCreateEnumAttribute(p->ctx, noalias, 0));
  /* Mark it a kernel: an entry point the driver can launch. */
  LLVMValueRef md[3] = {p->fn, LLVMMDStringInContext(p->ctx, "kernel", 6),
                        LLVMConstInt(p->i32, 1, 0)};
  LLVMAddNamedMetadataOperand(m, "nvvm.annotations", LLVMMDNodeInContext(p->ctx, md, 3));

  p->b = LLVMCreateBuilderInContext(p->ctx);
  p->entry = block(p, "entry");
  LLVMBasicBlockRef start = block(p, "start");
  LLVMPositionBuilderAtEnd(p->b, start);
  LLVMValueRef gid = LLVMBuildAdd(p->b, LLVMBuildMul(p->b, sreg(p, "ctaid.x"), sreg(p, "ntid.x"), ""),
                                  sreg(p, "tid.x"), "gid");
  LLVMValueRef in = LLVMBuildICmp(p->b, LLVMIntULT, gid, total(p, arg), "");
  LLVMBasicBlockRef work = block(p, "work"), done = block(p, "done");
  LLVMBuildCondBr(p->b, in, work, done);
  LLVMPositionBuilderAtEnd(p->b, done);
  LLVMBuildRetVoid(p->b);
  LLVMPositionBuilderAtEnd(p->b, work);
  return gid;
}

/* Closes the kernel: 0, or -1 if a table could not be kept. */
static int end(pg *p) {
  LLVMBuildRetVoid(p->b);
  LLVMPositionBuilderAtEnd(p->b, p->entry);
  LLVMBuildBr(p->b, LLVMGetNextBasicBlock(p->entry));
  LLVMDisposeBuilder(p->b);
  return p->failed ? -1 : 0;
}

/* ---- tables ------------------------------------------------------------ */

/* The tables the generators wrote, per module, until the caller takes
 * them (cg_ptx_take_tables). */
typedef struct reg_entry {
  LLVMModuleRef m;
  cg_ptx_table t;
} reg_entry;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static reg_entry *reg;
static size_t reg_n, reg_cap;

static int reg_add(LLVMModuleRef m, const cg_ptx_table *t) {
  pthread_mutex_lock(&reg_lock);
  int rc = 0;
  if (reg_n == reg_cap) {
    size_t cap = reg_cap ? 2 * reg_cap : 16;
    reg_entry *r = realloc(reg, cap * sizeof *r);
    if (r) reg = r, reg_cap = cap;
    else rc = -1;
  }
  if (!rc) reg[reg_n++] = (reg_entry){m, *t};
  pthread_mutex_unlock(&reg_lock);
  return rc;
}

cg_ptx_table *cg_ptx_take_tables(LLVMModuleRef m, size_t *n) {
  pthread_mutex_lock(&reg_lock);
  size_t k = 0;
  for (size_t i = 0; i < reg_n; i++) k += reg[i].m == m;
  cg_ptx_table *out = malloc((k ? k : 1) * sizeof *out);
  size_t j = 0, kept = 0;
  for (size_t i = 0; i < reg_n; i++) {
    if (reg[i].m == m && out) out[j++] = reg[i].t;
    else if (reg[i].m == m) free(reg[i].t.data);
    else reg[kept++] = reg[i];
  }
  reg_n = kept;
  pthread_mutex_unlock(&reg_lock);
  *n = out ? k : 0;
  return out;
}

void cg_ptx_free_tables(cg_ptx_table *t, size_t n) {
  for (size_t i = 0; t && i < n; i++) free(t[i].data);
  free(t);
}

/* A table of 32-bit (or 8-bit) entries, read from global memory through a
 * pointer the module holds in a global variable the caller sets after
 * loading (cg_ptx_take_tables): large index tables as PTX constants would
 * cost the driver's JIT seconds. The variable is externally initialised,
 * so the optimiser does not take its null for its value; it is read once,
 * in the entry block. A table always has at least one entry. */
static pg_table table(pg *p, const char *what, const void *vals, size_t len, int bits) {
  size_t nl = len ? len : 1, es = bits == 8 ? 1 : 4;
  pg_table r;
  r.et = bits == 8 ? p->i8 : p->i32;
  LLVMTypeRef pt = LLVMPointerType(r.et, 1);
  char name[160];
  snprintf(name, sizeof name, "%s_%s", p->name, what);
  LLVMValueRef g = LLVMAddGlobalInAddressSpace(p->m, pt, name, 1);
  LLVMSetInitializer(g, LLVMConstNull(pt));
  LLVMSetExternallyInitialized(g, 1);
  cg_ptx_table t;
  size_t nlen;
  snprintf(t.name, sizeof t.name, "%s", LLVMGetValueName2(g, &nlen)); /* as LLVM named it */
  t.bytes = nl * es;
  t.data = calloc(nl, es);
  if (t.data && len) memcpy(t.data, vals, len * es);
  if (!t.data || reg_add(p->m, &t)) {
    free(t.data);
    p->failed = 1;
  }
  LLVMBuilderRef eb = LLVMCreateBuilderInContext(p->ctx);
  LLVMPositionBuilderAtEnd(eb, p->entry);
  r.base = LLVMBuildLoad2(eb, pt, g, what);
  LLVMDisposeBuilder(eb);
  return r;
}

/* table[i] zero-extended to i64. */
static LLVMValueRef tab_get(pg *p, pg_table t, LLVMValueRef i) {
  LLVMValueRef ptr = LLVMBuildInBoundsGEP2(p->b, t.et, t.base, &i, 1, "");
  return LLVMBuildZExt(p->b, LLVMBuildLoad2(p->b, t.et, ptr, ""), p->i64, "");
}

static LLVMValueRef fload(pg *p, LLVMValueRef base, LLVMValueRef i) {
  LLVMValueRef ptr = LLVMBuildInBoundsGEP2(p->b, p->f32, base, &i, 1, "");
  return LLVMBuildLoad2(p->b, p->f32, ptr, "");
}

static LLVMValueRef fptr(pg *p, LLVMValueRef base, LLVMValueRef i) {
  return LLVMBuildInBoundsGEP2(p->b, p->f32, base, &i, 1, "");
}

/* for (var = lo; var < hi; var++) { body }: loop_begin leaves the builder
 * in the body; loop_end closes it and leaves the builder after the loop. */
static LLVMValueRef loop_begin(pg *p, pg_loop *l, LLVMValueRef lo, LLVMValueRef hi, const char *name) {
  l->var = local(p, p->i64, name), l->hi = hi;
  LLVMBuildStore(p->b, lo, l->var);
  l->cond = block(p, "cond"), l->body = block(p, "body"), l->exit = block(p, "exit");
  LLVMBuildBr(p->b, l->cond);
  LLVMPositionBuilderAtEnd(p->b, l->cond);
  LLVMValueRef i = LLVMBuildLoad2(p->b, p->i64, l->var, "");
  LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, i, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(p->b, l->body);
  return LLVMBuildLoad2(p->b, p->i64, l->var, name);
}

static void loop_end(pg *p, pg_loop *l) {
  LLVMValueRef i = LLVMBuildLoad2(p->b, p->i64, l->var, "");
  LLVMBuildStore(p->b, LLVMBuildAdd(p->b, i, c64(p, 1), ""), l->var);
  LLVMBuildBr(p->b, l->cond);
  LLVMPositionBuilderAtEnd(p->b, l->exit);
}

/* if (c) { ...: returns the join block; the builder is in the then-block. */
static LLVMBasicBlockRef if_begin(pg *p, LLVMValueRef c) {
  LLVMBasicBlockRef then = block(p, "then"), join = block(p, "join");
  LLVMBuildCondBr(p->b, c, then, join);
  LLVMPositionBuilderAtEnd(p->b, then);
  return join;
}

static void if_end(pg *p, LLVMBasicBlockRef join) {
  LLVMBuildBr(p->b, join);
  LLVMPositionBuilderAtEnd(p->b, join);
}

static LLVMValueRef add(pg *p, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(p->b, a, b, ""); }
static LLVMValueRef mul(pg *p, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildMul(p->b, a, b, ""); }
static LLVMValueRef mulc(pg *p, LLVMValueRef a, int64_t c) { return mul(p, a, c64(p, c)); }
static LLVMValueRef udivc(pg *p, LLVMValueRef a, int64_t c) { return LLVMBuildUDiv(p->b, a, c64(p, c), ""); }
static LLVMValueRef uremc(pg *p, LLVMValueRef a, int64_t c) { return LLVMBuildURem(p->b, a, c64(p, c), ""); }

/* 0 <= v < lim, as one unsigned compare. */
static LLVMValueRef in_range(pg *p, LLVMValueRef v, int64_t lim) {
  return LLVMBuildICmp(p->b, LLVMIntULT, v, c64(p, lim), "");
}

/* acc += a * b, in the accumulator's type. */
static void accumulate(pg *p, LLVMValueRef acc, LLVMTypeRef t, LLVMValueRef a, LLVMValueRef b) {
  if (t == p->f64) a = LLVMBuildFPExt(p->b, a, p->f64, ""), b = LLVMBuildFPExt(p->b, b, p->f64, "");
  LLVMValueRef v = LLVMBuildLoad2(p->b, t, acc, "");
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, v, LLVMBuildFMul(p->b, a, b, ""), ""), acc);
}

/* base[i] += the value in acc (a local). */
static void add_into(pg *p, LLVMValueRef base, LLVMValueRef i, LLVMValueRef acc) {
  LLVMValueRef ptr = fptr(p, base, i);
  LLVMValueRef sum = LLVMBuildFAdd(p->b, LLVMBuildLoad2(p->b, p->f32, ptr, ""), LLVMBuildLoad2(p->b, p->f32, acc, ""), "");
  LLVMBuildStore(p->b, sum, ptr);
}

/* acc = bias[o] when the bias pointer is not NULL and bias o is active. */
static void init_bias(pg *p, LLVMValueRef acc, const uint8_t *bm, int nout, LLVMValueRef o) {
  LLVMBuildStore(p->b, LLVMConstReal(p->f32, 0), acc);
  LLVMValueRef has = LLVMBuildICmp(p->b, LLVMIntNE, p->pc, LLVMConstNull(p->fp), "");
  if (bm) {
    pg_table bt = table(p, "bm", bm, (size_t)nout, 8);
    LLVMValueRef on = LLVMBuildICmp(p->b, LLVMIntNE, tab_get(p, bt, o), c64(p, 0), "");
    has = LLVMBuildAnd(p->b, has, on, "");
  }
  LLVMBasicBlockRef join = if_begin(p, has);
  LLVMBuildStore(p->b, fload(p, p->pc, o), acc);
  if_end(p, join);
}

/* ---- tables from a mask ------------------------------------------------ */

/* CSR of the active entries of a [rows][cols] mask: start[rows + 1] and,
 * per row in ascending column order, col (if !full) or the full index
 * row * cols + col (if full). NULL mask: all active. -1 when an index does
 * not fit in 32 bits or memory runs out. */
static int csr(const uint8_t *m, int64_t rows, int64_t cols, int transpose, int full, int32_t **start,
               int32_t **idx, size_t *nnz) {
  int64_t total = rows * cols;
  if (total > INT32_MAX) return -1;
  int64_t outer = transpose ? cols : rows, inner = transpose ? rows : cols;
  *start = malloc((size_t)(outer + 1) * sizeof **start);
  size_t cnt = 0;
  for (int64_t i = 0; i < total; i++) cnt += !m || m[i];
  *idx = malloc((cnt ? cnt : 1) * sizeof **idx);
  if (!*start || !*idx) {
    free(*start), free(*idx);
    return -1;
  }
  size_t k = 0;
  for (int64_t o = 0; o < outer; o++) {
    (*start)[o] = (int32_t)k;
    for (int64_t j = 0; j < inner; j++) {
      int64_t r = transpose ? j : o, c = transpose ? o : j, i = r * cols + c;
      if (m && !m[i]) continue;
      (*idx)[k++] = (int32_t)(full ? i : (transpose ? r : c));
    }
  }
  (*start)[outer] = (int32_t)k;
  *nnz = cnt;
  return 0;
}

/* ---- conv ------------------------------------------------------------- */

static int conv_out(const cg_conv_desc *d, int *oh, int *ow) {
  if (d->k < 1 || d->stride < 1) return -1;
  *oh = (d->h + 2 * d->pad - d->k) / d->stride + 1;
  *ow = (d->w + 2 * d->pad - d->k) / d->stride + 1;
  return *oh > 0 && *ow > 0 && d->cin > 0 && d->cout > 0 ? 0 : -1;
}

static size_t count_active(const uint8_t *m, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += !m || m[i];
  return c;
}

int64_t cg_ptx_conv_threads(const cg_conv_desc *d, cg_ptx_op op, int64_t n) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return 0;
  int64_t kk = (int64_t)d->k * d->k;
  switch (op) {
  case CG_PTX_FWD: return n * d->cout * g.oh * g.tiles;
  case CG_PTX_BWD_DATA: return g.fast_bwd ? n * d->cin * d->h * g.in_tiles : n * d->cin * d->h * d->w;
  default: return n * (int64_t)count_active(d->wm, (size_t)((int64_t)d->cout * d->cin * kk));
  }
}

int64_t cg_ptx_linear_threads(const cg_linear_desc *d, cg_ptx_op op, int64_t n) {
  switch (op) {
  case CG_PTX_FWD: return n * d->out;
  case CG_PTX_BWD_DATA: return n * d->in;
  default: return (int64_t)count_active(d->wm, (size_t)((int64_t)d->out * d->in));
  }
}

typedef struct conv_ctx {
  const cg_conv_desc *d;
  int oh, ow;
  int64_t per;                    /* threads per sample, or all (bwd_weight) */
  int batch;                      /* per counts per sample */
} conv_ctx;

static LLVMValueRef conv_total(pg *p, const void *arg) {
  const conv_ctx *c = arg;
  return c->batch ? mulc(p, p->n, c->per) : c64(p, c->per);
}

int cg_ptx_conv_geom_init(cg_ptx_conv_geom *g, const cg_conv_desc *d) {
  memset(g, 0, sizeof *g);
  if (conv_out(d, &g->oh, &g->ow)) return -1;
  const int s = d->stride, K = d->k;
  g->tiles = (g->ow + CG_PTX_TX - 1) / CG_PTX_TX;
  /* x padded by pad on every side, and on the right far enough that the
   * last tile's reads stay in the row. */
  g->hp = d->h + 2 * d->pad;
  g->wp = d->w + 2 * d->pad;
  int need = (g->tiles * CG_PTX_TX - 1) * s + K;
  if (g->wp < need) g->wp = need;
  g->xp_ns = (int64_t)d->cin * g->hp * g->wp;
  /* The input's gradient as a stride-1 correlation of dy padded by k-1-pad
   * with the flipped kernel: only for stride 1 and pad < k. */
  g->fast_bwd = s == 1 && d->pad <= K - 1;
  if (g->fast_bwd) {
    g->in_tiles = (d->w + CG_PTX_TX - 1) / CG_PTX_TX;
    g->hq = g->oh + 2 * (K - 1 - d->pad);
    g->wq = g->ow + 2 * (K - 1 - d->pad);
    need = g->in_tiles * CG_PTX_TX - 1 + K;
    if (g->wq < need) g->wq = need;
    g->dyp_ns = (int64_t)d->cout * g->hq * g->wq;
  }
  return 0;
}

/* The padded copy of a tensor t[n][c][h][w] (stride a_ns) into c =
 * tp[n][c][hp][wp], packed, t's pixel (y, x) at (y + top, x + left),
 * zeros around: one thread per element of tp. */
int cg_ptx_pad(LLVMModuleRef m, int64_t ch, int64_t h, int64_t w, int64_t top, int64_t left, int64_t hp,
               int64_t wp, const char *name) {
  if (ch < 1 || hp < 1 || wp < 1) return -1;
  conv_ctx c = {NULL, 0, 0, ch * hp * wp, 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef cc = udivc(&p, r, hp * wp), px = uremc(&p, r, hp * wp);
  LLVMValueRef y = add(&p, udivc(&p, px, wp), c64(&p, -top)), x = add(&p, uremc(&p, px, wp), c64(&p, -left));
  LLVMValueRef v = local(&p, p.f32, "v");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), v);
  LLVMBasicBlockRef join = if_begin(&p, LLVMBuildAnd(p.b, in_range(&p, y, h), in_range(&p, x, w), ""));
  LLVMValueRef at = add(&p, add(&p, mul(&p, nn, p.a_ns), mulc(&p, cc, h * w)), add(&p, mulc(&p, y, w), x));
  LLVMBuildStore(p.b, fload(&p, p.pa, at), v);
  if_end(&p, join);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), fptr(&p, p.pc, gid));
  return end(&p);
}

/* A convolution over a padded input as a table of taps: output row r (a
 * channel) sums, over its entries j, w[widx[j]] times the input at
 * off[j] from its window's corner. No bounds are tested: the padding
 * holds the zeros. One thread per (sample, row, output line, tile of
 * CG_PTX_TX outputs along the line), the tiles fastest; each entry's
 * offset and weight, loaded once, feed CG_PTX_TX multiply-adds. */
typedef struct tapconv {
  int64_t rows, oh, ow, tiles;   /* output channels and plane, tiles per line */
  int64_t s, in_ns, in_cs, wp;   /* input stride; padded sample, channel, line */
  const int32_t *start, *off, *widx;
  size_t nnz;
  int accumulate;                /* dx += (else y = acc + bias) */
  const uint8_t *bm;             /* the bias mask (y only) */
} tapconv;

static int tap_conv(LLVMModuleRef m, const tapconv *t, const char *name) {
  conv_ctx c = {NULL, 0, 0, t->rows * t->oh * t->tiles, 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  pg_table st = table(&p, "start", t->start, (size_t)t->rows + 1, 32);
  pg_table ot = table(&p, "off", t->off, t->nnz, 32);
  pg_table wt = table(&p, "widx", t->widx, t->nnz, 32);
  LLVMValueRef nn = udivc(&p, gid, c.per), q = uremc(&p, gid, c.per);
  LLVMValueRef r = udivc(&p, q, t->oh * t->tiles), lt = uremc(&p, q, t->oh * t->tiles);
  LLVMValueRef oy = udivc(&p, lt, t->tiles), tile = uremc(&p, lt, t->tiles);
  LLVMValueRef ox0 = mulc(&p, tile, CG_PTX_TX);
  LLVMValueRef base = add(&p, mulc(&p, nn, t->in_ns), add(&p, mulc(&p, oy, t->s * t->wp), mulc(&p, ox0, t->s)));
  LLVMValueRef acc[CG_PTX_TX];
  LLVMValueRef b0 = local(&p, p.f32, "b0");
  if (t->accumulate) LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), b0);
  else init_bias(&p, b0, t->bm, (int)t->rows, r);
  LLVMValueRef bv = LLVMBuildLoad2(p.b, p.f32, b0, "");
  for (int i = 0; i < CG_PTX_TX; i++) {
    acc[i] = local(&p, p.f32, "acc");
    LLVMBuildStore(p.b, bv, acc[i]);
  }
  LLVMValueRef lo = tab_get(&p, st, r), hi = tab_get(&p, st, add(&p, r, c64(&p, 1)));
  pg_loop l;
  LLVMValueRef j = loop_begin(&p, &l, lo, hi, "j");
  LLVMValueRef at = add(&p, base, tab_get(&p, ot, j));
  LLVMValueRef wv = fload(&p, p.pb, tab_get(&p, wt, j));
  for (int i = 0; i < CG_PTX_TX; i++) {
    LLVMValueRef xv = fload(&p, p.pa, add(&p, at, c64(&p, i * t->s)));
    LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc[i], "");
    LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, v, LLVMBuildFMul(p.b, wv, xv, ""), ""), acc[i]);
  }
  loop_end(&p, &l);
  LLVMValueRef ob = add(&p, mul(&p, nn, p.b_ns), add(&p, mulc(&p, r, t->oh * t->ow), mulc(&p, oy, t->ow)));
  for (int i = 0; i < CG_PTX_TX; i++) {
    LLVMValueRef ox = add(&p, ox0, c64(&p, i));
    LLVMBasicBlockRef join = if_begin(&p, in_range(&p, ox, t->ow));
    LLVMValueRef op = fptr(&p, t->accumulate ? p.pc : p.pd, add(&p, ob, ox));
    LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc[i], "");
    if (t->accumulate) v = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, op, ""), v, "");
    LLVMBuildStore(p.b, v, op);
    if_end(&p, join);
  }
  return end(&p);
}

int cg_ptx_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return -1;
  const int64_t K = d->k, kk = K * K;
  int32_t *start, *taps;
  size_t nnz;
  /* Rows are output channels, entries the tap t = ci*k*k + ky*k + kx. */
  if (csr(d->wm, d->cout, d->cin * kk, 0, 0, &start, &taps, &nnz)) return -1;
  int32_t *off = malloc((nnz ? nnz : 1) * sizeof *off), *widx = malloc((nnz ? nnz : 1) * sizeof *widx);
  int rc = -1;
  if (off && widx) {
    for (int64_t co = 0; co < d->cout; co++)
      for (int32_t j = start[co]; j < start[co + 1]; j++) {
        int64_t t = taps[j], ci = t / kk, ky = t % kk / K, kx = t % K;
        off[j] = (int32_t)(ci * g.hp * g.wp + ky * g.wp + kx);
        widx[j] = (int32_t)(co * d->cin * kk + t);
      }
    tapconv tc = {d->cout, g.oh, g.ow, g.tiles, d->stride, g.xp_ns, (int64_t)g.hp * g.wp, g.wp,
                  start,   off,  widx, nnz,     0,         d->bm};
    rc = g.xp_ns > INT32_MAX ? -1 : tap_conv(m, &tc, name);
  }
  free(start), free(taps), free(off), free(widx);
  return rc;
}

/* Stride 1: dx[ci][iy][ix] = sum over (co, ky, kx) of w[co][ci][ky][kx]
 * times dyp[co][iy + k-1-ky][ix + k-1-kx], dyp being dy padded by k-1-pad. */
static int conv_bwd_data_fast(LLVMModuleRef m, const cg_conv_desc *d, const cg_ptx_conv_geom *g,
                              const char *name) {
  const int64_t K = d->k, kk = K * K;
  int32_t *s0, *w0;
  size_t nnz;
  if (csr(d->wm, d->cout, d->cin * kk, 1, 1, &s0, &w0, &nnz)) return -1;
  int32_t *start = malloc(((size_t)d->cin + 1) * sizeof *start), *off = malloc((nnz ? nnz : 1) * sizeof *off);
  int rc = -1;
  if (start && off) {
    for (int64_t ci = 0; ci <= d->cin; ci++) start[ci] = s0[ci * kk];
    for (size_t j = 0; j < nnz; j++) {
      int64_t wi = w0[j], co = wi / (d->cin * kk), ky = wi % kk / K, kx = wi % K;
      off[j] = (int32_t)(co * g->hq * g->wq + (K - 1 - ky) * g->wq + (K - 1 - kx));
    }
    tapconv tc = {d->cin, d->h, d->w, g->in_tiles, 1, g->dyp_ns, (int64_t)g->hq * g->wq, g->wq,
                  start,  off,  w0,   nnz,         1, NULL};
    rc = g->dyp_ns > INT32_MAX ? -1 : tap_conv(m, &tc, name);
  }
  free(s0), free(w0), free(start), free(off);
  return rc;
}

/* The output (oy, ox) that reads the input at (ty0 - pad, tx0 - pad)
 * through tap kyx = ky*k + kx, and whether there is one: oy*stride =
 * ty0 - ky must be nonnegative (as unsigned, a negative value is out of
 * range), below oh*stride and a multiple of the stride; the same for x. */
static LLVMValueRef tap_output(pg *p, const cg_conv_desc *d, const conv_ctx *c, LLVMValueRef ty0,
                               LLVMValueRef tx0, LLVMValueRef kyx, LLVMValueRef *oy, LLVMValueRef *ox) {
  LLVMValueRef ty = LLVMBuildSub(p->b, ty0, udivc(p, kyx, d->k), "");
  LLVMValueRef tx = LLVMBuildSub(p->b, tx0, uremc(p, kyx, d->k), "");
  *oy = udivc(p, ty, d->stride), *ox = udivc(p, tx, d->stride);
  LLVMValueRef ok = LLVMBuildAnd(p->b, in_range(p, ty, (int64_t)c->oh * d->stride),
                                 in_range(p, tx, (int64_t)c->ow * d->stride), "");
  if (d->stride > 1) {
    LLVMValueRef ex = LLVMBuildOr(p->b, uremc(p, ty, d->stride), uremc(p, tx, d->stride), "");
    ok = LLVMBuildAnd(p->b, ok, LLVMBuildICmp(p->b, LLVMIntEQ, ex, c64(p, 0), ""), "");
  }
  return ok;
}

static int conv_bwd_data_general(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_ctx c = {d, 0, 0, 0, 1};
  if (conv_out(d, &c.oh, &c.ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)c.oh * c.ow, hw = (int64_t)d->h * d->w;
  int32_t *start, *widx;
  size_t nnz;
  /* Transposed: rows are input channels, entries full weight indices. The
   * mask seen as [cout][cin][kk] is [cout][cin*kk]; the input channel of
   * column j is j / kk, so per input channel the columns are a block. */
  int32_t *s0, *w0;
  if (csr(d->wm, d->cout, d->cin * kk, 1, 1, &s0, &w0, &nnz)) return -1;
  start = malloc(((size_t)d->cin + 1) * sizeof *start);
  widx = w0;
  if (!start) {
    free(s0), free(w0);
    return -1;
  }
  for (int64_t ci = 0; ci <= d->cin; ci++) start[ci] = s0[ci * kk];
  free(s0);
  c.per = d->cin * hw;
  pg p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  pg_table st = table(&p, "start", start, (size_t)d->cin + 1, 32);
  pg_table wt = table(&p, "widx", widx, nnz, 32);
  free(start), free(widx);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef ci = udivc(&p, r, hw), px = uremc(&p, r, hw);
  LLVMValueRef ty0 = add(&p, udivc(&p, px, d->w), c64(&p, d->pad));
  LLVMValueRef tx0 = add(&p, uremc(&p, px, d->w), c64(&p, d->pad));
  LLVMValueRef yb = mul(&p, nn, p.a_ns);
  LLVMValueRef acc = local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  LLVMValueRef lo = tab_get(&p, st, ci), hi = tab_get(&p, st, add(&p, ci, c64(&p, 1)));
  pg_loop l;
  LLVMValueRef j = loop_begin(&p, &l, lo, hi, "j");
  LLVMValueRef wi = tab_get(&p, wt, j);
  LLVMValueRef co = udivc(&p, wi, d->cin * kk), kyx = uremc(&p, wi, kk);
  LLVMValueRef oy, ox;
  LLVMBasicBlockRef join = if_begin(&p, tap_output(&p, d, &c, ty0, tx0, kyx, &oy, &ox));
  LLVMValueRef yi = add(&p, add(&p, yb, mulc(&p, co, ohw)), add(&p, mulc(&p, oy, c.ow), ox));
  accumulate(&p, acc, p.f32, fload(&p, p.pa, yi), fload(&p, p.pb, wi));
  if_end(&p, join);
  loop_end(&p, &l);
  add_into(&p, p.pc, add(&p, mul(&p, nn, p.b_ns), r), acc);
  return end(&p);
}

/* The stride-1 kernel over padded dy where it applies, else one thread
 * per dx element testing each tap's bounds. */
int cg_ptx_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d)) return -1;
  return g.fast_bwd ? conv_bwd_data_fast(m, d, &g, name) : conv_bwd_data_general(m, d, name);
}

/* One thread per (sample, active weight), the weights fastest, so that a
 * warp reads one dy plane (broadcast) and neighbouring taps of one padded
 * x plane: it sums its tap's products over the sample's output plane in
 * float, with no bounds to test, and adds the sum into dw by an atomic. */
int cg_ptx_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_ptx_conv_geom g;
  if (cg_ptx_conv_geom_init(&g, d) || g.xp_ns > INT32_MAX) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)g.oh * g.ow;
  int32_t *start, *widx;
  size_t nnz;
  if (csr(d->wm, 1, (int64_t)d->cout * d->cin * kk, 0, 1, &start, &widx, &nnz)) return -1;
  free(start);
  int32_t *off = malloc((nnz ? nnz : 1) * sizeof *off);
  if (!off) {
    free(widx);
    return -1;
  }
  for (size_t j = 0; j < nnz; j++) {
    int64_t wi = widx[j], ci = wi / kk % d->cin, ky = wi % kk / K, kx = wi % K;
    off[j] = (int32_t)(ci * g.hp * g.wp + ky * g.wp + kx);
  }
  conv_ctx c = {d, g.oh, g.ow, (int64_t)(nnz ? nnz : 1), 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  pg_table wt = table(&p, "widx", widx, nnz, 32);
  pg_table ot = table(&p, "off", off, nnz, 32);
  free(widx), free(off);
  LLVMValueRef nn = udivc(&p, gid, c.per), j = uremc(&p, gid, c.per);
  LLVMValueRef wi = tab_get(&p, wt, j), co = udivc(&p, wi, d->cin * kk);
  LLVMValueRef xb = add(&p, mulc(&p, nn, g.xp_ns), tab_get(&p, ot, j));
  LLVMValueRef yb = add(&p, mul(&p, nn, p.b_ns), mulc(&p, co, ohw));
  LLVMValueRef acc = local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  pg_loop ly, lx;
  LLVMValueRef oy = loop_begin(&p, &ly, c64(&p, 0), c64(&p, g.oh), "oy");
  LLVMValueRef xr = add(&p, xb, mulc(&p, oy, d->stride * g.wp)), yr = add(&p, yb, mulc(&p, oy, g.ow));
  LLVMValueRef ox = loop_begin(&p, &lx, c64(&p, 0), c64(&p, g.ow), "ox");
  accumulate(&p, acc, p.f32, fload(&p, p.pb, add(&p, yr, ox)), fload(&p, p.pa, add(&p, xr, mulc(&p, ox, d->stride))));
  loop_end(&p, &lx);
  loop_end(&p, &ly);
  LLVMBuildAtomicRMW(p.b, LLVMAtomicRMWBinOpFAdd, fptr(&p, p.pc, wi), LLVMBuildLoad2(p.b, p.f32, acc, ""),
                     LLVMAtomicOrderingMonotonic, 0);
  return end(&p);
}

/* ---- linear ----------------------------------------------------------- */

static LLVMValueRef lin_total(pg *p, const void *arg) {
  const int64_t *per = arg; /* per[0]: per sample (per[1] != 0) or all */
  return per[1] ? mulc(p, p->n, per[0]) : c64(p, per[0]);
}

/* fwd (transpose 0) and bwd_data (transpose 1) differ only in which index
 * a thread owns and where it reads. */
static int linear_gemv(LLVMModuleRef m, const cg_linear_desc *d, const char *name, int transpose) {
  if (d->in < 1 || d->out < 1) return -1;
  int32_t *start, *idx;
  size_t nnz;
  if (csr(d->wm, d->out, d->in, transpose, 0, &start, &idx, &nnz)) return -1;
  int64_t rows = transpose ? d->in : d->out, per[2] = {rows, 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  pg_table st = table(&p, "start", start, (size_t)rows + 1, 32);
  pg_table it = table(&p, "idx", idx, nnz, 32);
  free(start), free(idx);
  /* Samples fastest: a warp walks one row's entries together, so the
   * table and weight loads are broadcasts and the loop does not diverge. */
  LLVMValueRef r = LLVMBuildUDiv(p.b, gid, p.n, ""), nn = LLVMBuildURem(p.b, gid, p.n, "");
  LLVMValueRef acc = local(&p, p.f32, "acc");
  if (transpose) LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  else init_bias(&p, acc, d->bm, d->out, r);
  LLVMValueRef lo = tab_get(&p, st, r), hi = tab_get(&p, st, add(&p, r, c64(&p, 1)));
  pg_loop l;
  LLVMValueRef j = loop_begin(&p, &l, lo, hi, "j");
  LLVMValueRef o = tab_get(&p, it, j);
  /* fwd: r = output, o = input; bwd_data: r = input, o = output. The
   * input is batch-wide: sample nn of feature o at o * n + nn. */
  LLVMValueRef wi = transpose ? add(&p, mulc(&p, o, d->in), r) : add(&p, mulc(&p, r, d->in), o);
  accumulate(&p, acc, p.f32, fload(&p, p.pa, add(&p, mul(&p, o, p.n), nn)), fload(&p, p.pb, wi));
  loop_end(&p, &l);
  LLVMValueRef outp = fptr(&p, transpose ? p.pc : p.pd, add(&p, mul(&p, nn, p.b_ns), r));
  LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc, "");
  if (transpose) v = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, outp, ""), v, "");
  LLVMBuildStore(p.b, v, outp);
  return end(&p);
}

int cg_ptx_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return linear_gemv(m, d, name, 0);
}

int cg_ptx_linear_bwd_data(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return linear_gemv(m, d, name, 1);
}

int cg_ptx_linear_bwd_weight(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  if (d->in < 1 || d->out < 1) return -1;
  int32_t *start, *widx;
  size_t nnz;
  if (csr(d->wm, 1, (int64_t)d->out * d->in, 0, 1, &start, &widx, &nnz)) return -1;
  free(start);
  int64_t per[2] = {(int64_t)nnz, 0};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  pg_table wt = table(&p, "widx", widx, nnz, 32);
  free(widx);
  LLVMValueRef wi = tab_get(&p, wt, gid);
  /* Two rows of the batch-wide inputs, each read in order. */
  LLVMValueRef yb = mul(&p, udivc(&p, wi, d->in), p.n), xb = mul(&p, uremc(&p, wi, d->in), p.n);
  LLVMValueRef acc = local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  pg_loop ln;
  LLVMValueRef nn = loop_begin(&p, &ln, c64(&p, 0), p.n, "n");
  accumulate(&p, acc, p.f32, fload(&p, p.pb, add(&p, yb, nn)), fload(&p, p.pa, add(&p, xb, nn)));
  loop_end(&p, &ln);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, acc, ""), fptr(&p, p.pc, wi));
  return end(&p);
}

/* ---- bias gradient ----------------------------------------------------- */

/* One thread per (sample, output channel) sums its plane in double and
 * adds the sum into db by an atomic: the caller zeroes db first, masked
 * biases are skipped, so they stay exactly 0. */
int cg_ptx_bias_grad(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per[2] = {nout, 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  LLVMValueRef nn = udivc(&p, gid, nout), o = uremc(&p, gid, nout);
  LLVMBasicBlockRef join = NULL;
  if (bm) {
    pg_table bt = table(&p, "bm", bm, (size_t)nout, 8);
    join = if_begin(&p, LLVMBuildICmp(p.b, LLVMIntNE, tab_get(&p, bt, o), c64(&p, 0), ""));
  }
  LLVMValueRef acc = local(&p, p.f64, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f64, 0), acc);
  LLVMValueRef base = add(&p, mul(&p, nn, p.a_ns), mulc(&p, o, plane));
  pg_loop l;
  LLVMValueRef i = loop_begin(&p, &l, c64(&p, 0), c64(&p, plane), "i");
  LLVMValueRef v = LLVMBuildFPExt(p.b, fload(&p, p.pa, add(&p, base, i)), p.f64, "");
  LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f64, acc, ""), v, ""), acc);
  loop_end(&p, &l);
  LLVMValueRef sum = LLVMBuildFPTrunc(p.b, LLVMBuildLoad2(p.b, p.f64, acc, ""), p.f32, "");
  LLVMBuildAtomicRMW(p.b, LLVMAtomicRMWBinOpFAdd, fptr(&p, p.pc, o), sum, LLVMAtomicOrderingMonotonic, 0);
  if (join) if_end(&p, join);
  return end(&p);
}

/* ---- dense helpers ----------------------------------------------------- */

int cg_ptx_bias_fill(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per[2] = {nout * plane, 1};
  pg p;
  LLVMValueRef gid = begin(&p, m, name, lin_total, per);
  LLVMValueRef nn = udivc(&p, gid, per[0]), r = uremc(&p, gid, per[0]), o = udivc(&p, r, plane);
  LLVMValueRef v = local(&p, p.f32, "v");
  init_bias(&p, v, bm, (int)nout, o);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), fptr(&p, p.pd, add(&p, mul(&p, nn, p.b_ns), r)));
  return end(&p);
}

static LLVMValueRef count_total(pg *p, const void *arg) {
  (void)arg;
  return p->n;
}

int cg_ptx_scale(LLVMModuleRef m, const char *name) {
  pg p;
  LLVMValueRef i = begin(&p, m, name, count_total, NULL);
  LLVMValueRef cp = fptr(&p, p.pc, i);
  LLVMBuildStore(p.b, LLVMBuildFMul(p.b, LLVMBuildLoad2(p.b, p.f32, cp, ""), fload(&p, p.pa, i), ""), cp);
  return end(&p);
}

/* The batch-wide column layout of the dense path: col[r][n * oh*ow],
 * r = ci*k*k + ky*k + kx, sample-major within a row, so that one sgemm
 * covers the batch. Its row length is runtime: n * oh*ow. */
static LLVMValueRef cols_total(pg *p, const void *arg) { return mul(p, p->n, c64(p, *(const int64_t *)arg)); }

/* One thread per col element, the pixels fastest. */
int cg_ptx_im2col(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  int oh, ow;
  if (conv_out(d, &oh, &ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)oh * ow, hw = (int64_t)d->h * d->w;
  int64_t per = d->cin * kk * ohw;
  pg p;
  LLVMValueRef gid = begin(&p, m, name, cols_total, &per);
  LLVMValueRef row = mulc(&p, p.n, ohw);
  LLVMValueRef r = LLVMBuildUDiv(p.b, gid, row, ""), j = LLVMBuildURem(p.b, gid, row, "");
  LLVMValueRef nn = udivc(&p, j, ohw), px = uremc(&p, j, ohw);
  LLVMValueRef ci = udivc(&p, r, kk), kyx = uremc(&p, r, kk);
  LLVMValueRef iy = add(&p, add(&p, mulc(&p, udivc(&p, px, ow), d->stride), c64(&p, -d->pad)), udivc(&p, kyx, K));
  LLVMValueRef ix = add(&p, add(&p, mulc(&p, uremc(&p, px, ow), d->stride), c64(&p, -d->pad)), uremc(&p, kyx, K));
  LLVMValueRef v = local(&p, p.f32, "v");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), v);
  LLVMValueRef ok = LLVMBuildAnd(p.b, in_range(&p, iy, d->h), in_range(&p, ix, d->w), "");
  LLVMBasicBlockRef join = if_begin(&p, ok);
  LLVMValueRef xi = add(&p, add(&p, mul(&p, nn, p.a_ns), mulc(&p, ci, hw)), add(&p, mulc(&p, iy, d->w), ix));
  LLVMBuildStore(p.b, fload(&p, p.pa, xi), v);
  if_end(&p, join);
  LLVMBuildStore(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), fptr(&p, p.pc, gid));
  return end(&p);
}

/* dx[n][ci][iy][ix] += the col entries that read it: one thread per dx
 * element, its taps in a fixed order. */
int cg_ptx_col2im(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_ctx c = {d, 0, 0, 0, 1};
  if (conv_out(d, &c.oh, &c.ow)) return -1;
  const int64_t K = d->k, kk = K * K, ohw = (int64_t)c.oh * c.ow, hw = (int64_t)d->h * d->w;
  c.per = d->cin * hw;
  pg p;
  LLVMValueRef gid = begin(&p, m, name, conv_total, &c);
  LLVMValueRef nn = udivc(&p, gid, c.per), r = uremc(&p, gid, c.per);
  LLVMValueRef ci = udivc(&p, r, hw), px = uremc(&p, r, hw);
  LLVMValueRef ty0 = add(&p, udivc(&p, px, d->w), c64(&p, d->pad));
  LLVMValueRef tx0 = add(&p, uremc(&p, px, d->w), c64(&p, d->pad));
  LLVMValueRef row = mulc(&p, p.n, ohw);
  LLVMValueRef cb = add(&p, mul(&p, mulc(&p, ci, kk), row), mulc(&p, nn, ohw));
  LLVMValueRef acc = local(&p, p.f32, "acc");
  LLVMBuildStore(p.b, LLVMConstReal(p.f32, 0), acc);
  pg_loop l;
  LLVMValueRef kyx = loop_begin(&p, &l, c64(&p, 0), c64(&p, kk), "t");
  LLVMValueRef oy, ox;
  LLVMBasicBlockRef join = if_begin(&p, tap_output(&p, d, &c, ty0, tx0, kyx, &oy, &ox));
  LLVMValueRef at = add(&p, cb, add(&p, mul(&p, kyx, row), add(&p, mulc(&p, oy, c.ow), ox)));
  LLVMValueRef v = LLVMBuildLoad2(p.b, p.f32, acc, "");
  LLVMBuildStore(p.b, LLVMBuildFAdd(p.b, v, fload(&p, p.pa, at), ""), acc);
  if_end(&p, join);
  loop_end(&p, &l);
  add_into(&p, p.pc, add(&p, mul(&p, nn, p.b_ns), r), acc);
  return end(&p);
}

/* Between a tensor t[n][nout][plane] (stride ns) and its batch-wide form
 * cm[nout][n * plane]: gather (to cm) or scatter (from cm, adding the
 * bias as bias_fill does). One thread per element, the pixels fastest. */
static int cm_move(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name, int scatter) {
  if (nout < 1 || plane < 1) return -1;
  int64_t per = nout * plane;
  pg p;
  LLVMValueRef gid = begin(&p, m, name, cols_total, &per);
  LLVMValueRef row = mulc(&p, p.n, plane);
  LLVMValueRef o = LLVMBuildUDiv(p.b, gid, row, ""), j = LLVMBuildURem(p.b, gid, row, "");
  LLVMValueRef nn = udivc(&p, j, plane), px = uremc(&p, j, plane);
  LLVMValueRef ti = add(&p, mul(&p, nn, scatter ? p.b_ns : p.a_ns), add(&p, mulc(&p, o, plane), px));
  if (scatter) {
    LLVMValueRef v = local(&p, p.f32, "v");
    init_bias(&p, v, bm, (int)nout, o);
    LLVMValueRef sum = LLVMBuildFAdd(p.b, LLVMBuildLoad2(p.b, p.f32, v, ""), fload(&p, p.pa, gid), "");
    LLVMBuildStore(p.b, sum, fptr(&p, p.pd, ti));
  } else {
    LLVMBuildStore(p.b, fload(&p, p.pa, ti), fptr(&p, p.pc, gid));
  }
  return end(&p);
}

int cg_ptx_to_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const char *name) {
  return cm_move(m, nout, plane, NULL, name, 0);
}

int cg_ptx_from_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name) {
  return cm_move(m, nout, plane, bm, name, 1);
}

/* ---- PTX -------------------------------------------------------------- */

/* The GPU and PTX ISA the emitted code targets at most. LLVM 14 knows
 * processors up to sm_86, but sm_80 with PTX 7.5 (its newest ISA) is the
 * pair whose output `ptxas -arch=sm_90` accepts and the driver JIT-compiles
 * for every newer GPU, so a newer request is lowered to it. LLVM 16 added
 * sm_90 with PTX 7.8. */
#if LLVM_VERSION_MAJOR >= 16
#define PTX_MAX_SM 90
#define PTX_FEATURES "+ptx78"
#else
#define PTX_MAX_SM 80
#define PTX_FEATURES "+ptx75"
#endif

const char *cg_ptx_target_sm(const char *sm, char *buf, size_t len) {
  int v = 80;
  if (sm && strncmp(sm, "sm_", 3) == 0 && atoi(sm + 3) > 0) v = atoi(sm + 3);
  if (v > PTX_MAX_SM) v = PTX_MAX_SM;
  snprintf(buf, len, "sm_%d", v);
  return buf;
}

static pthread_once_t ptx_once = PTHREAD_ONCE_INIT;

static void ptx_init(void) {
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
}

int cg_ptx_emit(LLVMModuleRef m, const char *sm, char **ptx, char *err, size_t errlen) {
  static const char triple[] = "nvptx64-nvidia-cuda";
  *ptx = NULL;
  pthread_once(&ptx_once, ptx_init);
  LLVMTargetRef t;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    snprintf(err, errlen, "ptx: this LLVM cannot target %s: %s", triple, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return -1;
  }
  char cpu[16];
  cg_ptx_target_sm(sm, cpu, sizeof cpu);
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(t, triple, cpu, PTX_FEATURES, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelDefault);
  if (!tm) {
    snprintf(err, errlen, "ptx: cannot create a target machine for %s %s", triple, cpu);
    return -1;
  }
  LLVMSetTarget(m, triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  int rc = -1;
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "ptx: generated module is invalid: %s", msg);
    goto out;
  }
  LLVMDisposeMessage(msg), msg = NULL;
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(m, "default<O3>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (e) {
    char *em = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "ptx: optimising: %s", em);
    LLVMDisposeErrorMessage(em);
    goto out;
  }
  LLVMMemoryBufferRef buf;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMAssemblyFile, &msg, &buf)) {
    snprintf(err, errlen, "ptx: emitting %s: %s", cpu, msg ? msg : "?");
    goto out;
  }
  size_t n = LLVMGetBufferSize(buf);
  *ptx = malloc(n + 1);
  if (!*ptx) {
    snprintf(err, errlen, "ptx: out of memory");
  } else {
    memcpy(*ptx, LLVMGetBufferStart(buf), n);
    (*ptx)[n] = 0;
    rc = 0;
  }
  LLVMDisposeMemoryBuffer(buf);
out:
  if (msg) LLVMDisposeMessage(msg);
  LLVMDisposeTargetMachine(tm);
  return rc;
}
