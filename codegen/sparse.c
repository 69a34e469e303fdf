/* sparse.c: the sparse kernel generators (see sparse.h).
 *
 * Shape of the generated code. Loops whose bounds the pattern fixes are
 * loops over constant index tables, not unrolled code, so a layer of a
 * million active weights still emits a few hundred instructions and
 * compiles in well under a second; what is unrolled is only what is small
 * and fixed by the shape: the k*k kernel taps, whose valid output ranges
 * (padding) are computed here, so the innermost loops carry constant
 * bounds and no bounds checks, and the optimiser vectorises them.
 *
 *   conv fwd:      per sample, per output channel: y = bias, then per tap
 *                  position (ky, kx) the channel's active (ci, w index)
 *                  entries, each a row loop over a contiguous column loop.
 *   conv bwd_data: the transposed tables: per input channel the taps that
 *                  read it, accumulating into dx in the same row/column
 *                  loops.
 *   conv bwd_wt:   per active weight a dot product over the chunk and the
 *                  valid pixels, accumulated lane-wise in a small buffer
 *                  (elementwise adds vectorise without reassociation, so no
 *                  fast-math is needed), summed once per weight.
 *   linear:        the batch is the vector dimension (the caller passes the
 *                  activations transposed): CSR rows for fwd and dw, CSC
 *                  columns for dx, each entry one broadcast weight times
 *                  four 8-float vectors held in registers.
 */
#include "codegen/sparse.h"

#include <llvm-c/DebugInfo.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen {
  LLVMContextRef ctx;
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  LLVMTypeRef f32, i8, i32, i64, fp, vec, vecp;
  LLVMValueRef fma, vfma; /* llvm.fmuladd.f32 and .v8f32 */
  const char *name;       /* of the function, prefixes its tables */
} gen;

enum { VW = 8, NVEC = CG_LIN_NB / VW };

typedef struct loop {
  LLVMBasicBlockRef body, exit;
  LLVMValueRef iv, hi, step;
  LLVMValueRef latch_br; /* the back edge, where loop metadata goes */
} loop;

static LLVMValueRef ci64(gen *g, int64_t v) {
  return LLVMConstInt(g->i64, (unsigned long long)v, 1);
}

/* A counted loop lo <= iv < hi; the body is what is built between open and
 * close. Guarded, so an empty range runs nothing. */
static void loop_open(gen *g, loop *L, LLVMValueRef lo, LLVMValueRef hi, int64_t step) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(g->b);
  L->body = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "loop");
  L->exit = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "done");
  L->hi = hi;
  L->step = ci64(g, step);
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, lo, hi, ""), L->body, L->exit);
  LLVMPositionBuilderAtEnd(g->b, L->body);
  L->iv = LLVMBuildPhi(g->b, g->i64, "i");
  LLVMAddIncoming(L->iv, &lo, &pre, 1);
}

static void loop_close(gen *g, loop *L) {
  LLVMValueRef next = LLVMBuildNSWAdd(g->b, L->iv, L->step, "");
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
  L->latch_br = LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, next, L->hi, ""),
                                L->body, L->exit);
  LLVMAddIncoming(L->iv, &next, &cur, 1);
  LLVMPositionBuilderAtEnd(g->b, L->exit);
}

/* Closes a loop like loop_close, marking it "vectorise": the column loops
 * of a conv have constant trip counts (the width, often 14 or 7), below
 * the vectoriser's tiny-trip-count threshold, where it would otherwise
 * leave them scalar. The loop ID must refer to itself, hence the
 * temporary node. */
static void loop_close_vec(gen *g, loop *L) {
  loop_close(g, L);
  LLVMValueRef br = L->latch_br;
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(g->ctx, NULL, 0);
  const char *key = "llvm.loop.vectorize.enable";
  LLVMMetadataRef kv[2] = {LLVMMDStringInContext2(g->ctx, key, strlen(key)),
                           LLVMValueAsMetadata(LLVMConstInt(LLVMInt1TypeInContext(g->ctx), 1, 0))};
  LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(g->ctx, kv, 2)};
  LLVMMetadataRef id = LLVMMDNodeInContext2(g->ctx, ops, 2);
  LLVMMetadataReplaceAllUsesWith(tmp, id);
  LLVMSetMetadata(br, LLVMGetMDKindIDInContext(g->ctx, "llvm.loop", 9),
                  LLVMMetadataAsValue(g->ctx, id));
}

static LLVMValueRef add(gen *g, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWAdd(g->b, a, b, "");
}
static LLVMValueRef mul(gen *g, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildNSWMul(g->b, a, b, "");
}

/* Plain (not inbounds) GEP: intermediate bases of padded taps may point
 * before the buffer; only the final addresses are in range. */
static LLVMValueRef at(gen *g, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildGEP2(g->b, g->f32, p, &i, 1, "");
}
static LLVMValueRef ldf(gen *g, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildLoad2(g->b, g->f32, at(g, p, i), "");
}
static LLVMValueRef ldv(gen *g, LLVMValueRef p, LLVMValueRef i) {
  LLVMValueRef q = LLVMBuildBitCast(g->b, at(g, p, i), g->vecp, "");
  LLVMValueRef v = LLVMBuildLoad2(g->b, g->vec, q, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void stv(gen *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i) {
  LLVMValueRef q = LLVMBuildBitCast(g->b, at(g, p, i), g->vecp, "");
  LLVMSetAlignment(LLVMBuildStore(g->b, v, q), 4);
}
static LLVMValueRef fma3(gen *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  int v = LLVMGetTypeKind(LLVMTypeOf(a)) == LLVMVectorTypeKind;
  return LLVMBuildCall2(g->b, LLVMGlobalGetValueType(v ? g->vfma : g->fma),
                        v ? g->vfma : g->fma, args, 3, "");
}
static LLVMValueRef splat(gen *g, LLVMValueRef s) {
  LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetUndef(g->vec), s,
                                          LLVMConstInt(g->i32, 0, 0), "");
  return LLVMBuildShuffleVector(g->b, v, LLVMGetUndef(g->vec),
                                LLVMConstNull(LLVMVectorType(g->i32, VW)), "");
}

/* A constant table, emitted as raw little-endian bytes: one
 * ConstantDataArray instead of a million ConstantInts keeps emission of
 * big layers fast. Returns an i32* (or i8*) to its first element. */
static LLVMValueRef table(gen *g, const char *what, const void *data, size_t n,
                          size_t elt, LLVMTypeRef ty) {
  size_t bytes = n > 0 ? n * elt : elt; /* never a zero-sized global */
  char *raw = calloc(bytes, 1);
  if (!raw) abort(); /* a few bytes per weight; running out here is fatal */
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < elt; k++) {
      uint32_t v = elt == 4 ? ((const uint32_t *)data)[i] : ((const uint8_t *)data)[i];
      raw[i * elt + k] = (char)((v >> (8 * k)) & 0xffu);
    }
  LLVMValueRef init = LLVMConstStringInContext(g->ctx, raw, (unsigned)bytes, 1);
  free(raw);
  char nm[256];
  snprintf(nm, sizeof nm, "%s.%s", g->name, what);
  LLVMValueRef gv = LLVMAddGlobal(g->m, LLVMTypeOf(init), nm);
  LLVMSetInitializer(gv, init);
  LLVMSetGlobalConstant(gv, 1);
  LLVMSetLinkage(gv, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
  LLVMSetAlignment(gv, 16);
  return LLVMConstBitCast(gv, LLVMPointerType(ty, 0));
}

/* Element i of an i32 table, as i64. */
static LLVMValueRef ld32(gen *g, LLVMValueRef tab, LLVMValueRef i) {
  LLVMValueRef p = LLVMBuildInBoundsGEP2(g->b, g->i32, tab, &i, 1, "");
  return LLVMBuildSExt(g->b, LLVMBuildLoad2(g->b, g->i32, p, ""), g->i64, "");
}

LLVMTypeRef cg_sparse_fn_type(LLVMContextRef ctx) {
  LLVMTypeRef fp = LLVMPointerType(LLVMFloatTypeInContext(ctx), 0);
  LLVMTypeRef i64 = LLVMInt64TypeInContext(ctx);
  LLVMTypeRef p[7] = {fp, fp, fp, fp, i64, i64, i64};
  return LLVMFunctionType(LLVMVoidTypeInContext(ctx), p, 7, 0);
}

static LLVMValueRef intrinsic(gen *g, const char *name, LLVMTypeRef t) {
  LLVMValueRef f = LLVMGetNamedFunction(g->m, name);
  if (f) return f;
  LLVMTypeRef p[3] = {t, t, t};
  return LLVMAddFunction(g->m, name, LLVMFunctionType(t, p, 3, 0));
}

static void gen_begin(gen *g, LLVMModuleRef m, const char *name) {
  memset(g, 0, sizeof *g);
  g->m = m;
  g->ctx = LLVMGetModuleContext(m);
  g->name = name;
  g->f32 = LLVMFloatTypeInContext(g->ctx);
  g->i8 = LLVMInt8TypeInContext(g->ctx);
  g->i32 = LLVMInt32TypeInContext(g->ctx);
  g->i64 = LLVMInt64TypeInContext(g->ctx);
  g->fp = LLVMPointerType(g->f32, 0);
  g->vec = LLVMVectorType(g->f32, VW);
  g->vecp = LLVMPointerType(g->vec, 0);
  g->fma = intrinsic(g, "llvm.fmuladd.f32", g->f32);
  g->vfma = intrinsic(g, "llvm.fmuladd.v8f32", g->vec);
  g->fn = LLVMAddFunction(m, name, cg_sparse_fn_type(g->ctx));
  /* The four buffers of one call never overlap (distinct tensors, or
   * disjoint slices of the arena); saying so lets loops vectorise without
   * runtime alias checks. */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  for (unsigned i = 1; i <= 4; i++)
    LLVMAddAttributeAtIndex(g->fn, i, LLVMCreateEnumAttribute(g->ctx, noalias, 0));
  LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(g->ctx, nounwind, 0));
  g->b = LLVMCreateBuilderInContext(g->ctx);
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, g->fn, "entry"));
}

static void gen_end(gen *g) {
  LLVMBuildRetVoid(g->b);
  LLVMDisposeBuilder(g->b);
}

static LLVMValueRef arg(gen *g, unsigned i) { return LLVMGetParam(g->fn, i); }

/* The bias of output o as a float: 0 when the bias pointer is NULL or the
 * bias is masked. Branch-free: the load goes through a pointer to a zero
 * constant instead. */
static LLVMValueRef bias_of(gen *g, LLVMValueRef bias, const uint8_t *bm, int nout,
                            LLVMValueRef o) {
  uint8_t *act = malloc((size_t)nout);
  if (!act) abort();
  for (int i = 0; i < nout; i++) act[i] = (uint8_t)(!bm || bm[i]);
  LLVMValueRef tab = table(g, "bact", act, (size_t)nout, 1, g->i8);
  free(act);
  char nm[256];
  snprintf(nm, sizeof nm, "%s.zero", g->name);
  LLVMValueRef zero = LLVMAddGlobal(g->m, g->f32, nm);
  LLVMSetInitializer(zero, LLVMConstReal(g->f32, 0.0));
  LLVMSetGlobalConstant(zero, 1);
  LLVMSetLinkage(zero, LLVMPrivateLinkage);
  LLVMValueRef a = LLVMBuildLoad2(g->b, g->i8, LLVMBuildInBoundsGEP2(g->b, g->i8, tab, &o, 1, ""), "");
  LLVMValueRef ok = LLVMBuildAnd(
      g->b, LLVMBuildICmp(g->b, LLVMIntNE, a, LLVMConstInt(g->i8, 0, 0), ""),
      LLVMBuildICmp(g->b, LLVMIntNE, bias, LLVMConstNull(g->fp), ""), "");
  LLVMValueRef safe = LLVMBuildSelect(g->b, ok, bias, zero, "");
  LLVMValueRef idx = LLVMBuildSelect(g->b, ok, o, ci64(g, 0), "");
  return ldf(g, safe, idx);
}

/* ---- conv ----------------------------------------------------------- */

/* Output positions o in [*lo, *hi) whose input o*stride - pad + tap lies in
 * [0, size): the same rule as the reference kernels. */
static void conv_range(int tap, int pad, int stride, int size, int osize, int *lo, int *hi) {
  int first = pad - tap;
  int l = first > 0 ? (first + stride - 1) / stride : 0;
  int last = size - 1 + pad - tap;
  int h = last < 0 ? 0 : last / stride + 1;
  if (h > osize) h = osize;
  *lo = l;
  *hi = h < l ? l : h;
}

typedef struct conv_geo {
  int K, KK, st, pad, H, W, OH, OW, cin, cout;
  long hw, ohw;
  int oy0[32], oy1[32], ox0[32], ox1[32]; /* per ky / kx */
} conv_geo;

static int conv_geo_init(conv_geo *c, const cg_conv_desc *d) {
  if (d->k < 1 || d->k > 32 || d->stride < 1 || d->pad < 0) return -1;
  c->K = d->k, c->KK = d->k * d->k, c->st = d->stride, c->pad = d->pad;
  c->H = d->h, c->W = d->w, c->cin = d->cin, c->cout = d->cout;
  c->OH = (d->h + 2 * d->pad - d->k) / d->stride + 1;
  c->OW = (d->w + 2 * d->pad - d->k) / d->stride + 1;
  if (c->OH < 1 || c->OW < 1) return -1;
  c->hw = (long)c->H * c->W, c->ohw = (long)c->OH * c->OW;
  if ((int64_t)c->cout * c->cin * c->KK >= INT32_MAX) return -1;
  for (int t = 0; t < c->K; t++) {
    conv_range(t, c->pad, c->st, c->H, c->OH, &c->oy0[t], &c->oy1[t]);
    conv_range(t, c->pad, c->st, c->W, c->OW, &c->ox0[t], &c->ox1[t]);
  }
  return 0;
}

static int tap_live(const conv_geo *c, int t) {
  int ky = t / c->K, kx = t % c->K;
  return c->oy0[ky] < c->oy1[ky] && c->ox0[kx] < c->ox1[kx];
}

static int active(const uint8_t *m, long i) { return !m || m[i]; }

/* Tables grouped by (outer channel, tap): start[outer * KK + t] .. +1 index
 * the entries; `other` is the channel on the other side, wi the weight. */
typedef struct conv_tab {
  int32_t *start, *other, *wi;
  long n;
  int used[1024]; /* per tap: does any entry exist (emit its code)? */
} conv_tab;

static void conv_tab_free(conv_tab *t) { free(t->start), free(t->other), free(t->wi); }

static int conv_tab_build(conv_tab *t, const conv_geo *c, const uint8_t *wm, int by_out) {
  int outer = by_out ? c->cout : c->cin, inner = by_out ? c->cin : c->cout;
  long cap = (long)c->cout * c->cin * c->KK;
  memset(t, 0, sizeof *t);
  t->start = malloc(((size_t)outer * c->KK + 1) * sizeof *t->start);
  t->other = malloc((size_t)(cap ? cap : 1) * sizeof *t->other);
  t->wi = malloc((size_t)(cap ? cap : 1) * sizeof *t->wi);
  if (!t->start || !t->other || !t->wi) return -1;
  for (int o = 0; o < outer; o++)
    for (int k = 0; k < c->KK; k++) {
      t->start[o * c->KK + k] = (int32_t)t->n;
      if (!tap_live(c, k)) continue; /* reads only padding: contributes 0 */
      for (int i = 0; i < inner; i++) {
        int co = by_out ? o : i, ci = by_out ? i : o;
        long wi = ((long)co * c->cin + ci) * c->KK + k;
        if (!active(wm, wi)) continue;
        t->other[t->n] = i, t->wi[t->n] = (int32_t)wi, t->n++;
        t->used[k] = 1;
      }
    }
  t->start[outer * c->KK] = (int32_t)t->n;
  return 0;
}

/* The rows and columns of one tap: acc[yrow + ox] (op) x[xrow + ox*st] for
 * ox in the tap's valid columns, oy in its valid rows. `fwd` adds w*x into
 * y; otherwise adds w*dy into dx (the mirror image). */
static void conv_rows(gen *g, const conv_geo *c, int k, LLVMValueRef wv, LLVMValueRef xs,
                      LLVMValueRef xbase, LLVMValueRef ys, LLVMValueRef ybase, int into_y) {
  int ky = k / c->K, kx = k % c->K;
  loop ly, lx;
  loop_open(g, &ly, ci64(g, c->oy0[ky]), ci64(g, c->oy1[ky]), 1);
  LLVMValueRef xrow = add(g, xbase, mul(g, ly.iv, ci64(g, (int64_t)c->st * c->W)));
  LLVMValueRef yrow = add(g, ybase, mul(g, ly.iv, ci64(g, c->OW)));
  loop_open(g, &lx, ci64(g, c->ox0[kx]), ci64(g, c->ox1[kx]), 1);
  LLVMValueRef xi = add(g, xrow, c->st == 1 ? lx.iv : mul(g, lx.iv, ci64(g, c->st)));
  LLVMValueRef yi = add(g, yrow, lx.iv);
  LLVMValueRef src = into_y ? ldf(g, xs, xi) : ldf(g, ys, yi);
  LLVMValueRef dp = into_y ? at(g, ys, yi) : at(g, xs, xi);
  LLVMValueRef old = LLVMBuildLoad2(g->b, g->f32, dp, "");
  LLVMBuildStore(g->b, fma3(g, wv, src, old), dp);
  loop_close_vec(g, &lx);
  loop_close(g, &ly);
}

/* Offset of tap k's (oy = 0, ox = 0) input in a channel plane; negative
 * under padding, which the valid ranges make up for. */
static int64_t tap_off(const conv_geo *c, int k) {
  return (int64_t)(k / c->K - c->pad) * c->W + (k % c->K - c->pad);
}

int cg_sparse_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_geo c;
  conv_tab t;
  if (conv_geo_init(&c, d)) return -1;
  if (conv_tab_build(&t, &c, d->wm, 1)) return conv_tab_free(&t), -1;
  gen G, *g = &G;
  gen_begin(g, m, name);
  LLVMValueRef tstart = table(g, "start", t.start, (size_t)c.cout * c.KK + 1, 4, g->i32);
  LLVMValueRef tci = table(g, "ci", t.other, (size_t)t.n, 4, g->i32);
  LLVMValueRef twi = table(g, "wi", t.wi, (size_t)t.n, 4, g->i32);
  LLVMValueRef x = arg(g, 0), w = arg(g, 1), bias = arg(g, 2), y = arg(g, 3);
  loop ls, lco, lt, li;
  loop_open(g, &ls, ci64(g, 0), arg(g, 4), 1);
  LLVMValueRef xs = at(g, x, mul(g, ls.iv, arg(g, 5)));
  LLVMValueRef ys = at(g, y, mul(g, ls.iv, arg(g, 6)));
  loop_open(g, &lco, ci64(g, 0), ci64(g, c.cout), 1);
  LLVMValueRef ybase = mul(g, lco.iv, ci64(g, c.ohw));
  LLVMValueRef bv = bias_of(g, bias, d->bm, c.cout, lco.iv);
  loop_open(g, &li, ci64(g, 0), ci64(g, c.ohw), 1);
  LLVMBuildStore(g->b, bv, at(g, ys, add(g, ybase, li.iv)));
  loop_close(g, &li);
  for (int k = 0; k < c.KK; k++) {
    if (!t.used[k]) continue;
    LLVMValueRef row = add(g, mul(g, lco.iv, ci64(g, c.KK)), ci64(g, k));
    loop_open(g, &lt, ld32(g, tstart, row), ld32(g, tstart, add(g, row, ci64(g, 1))), 1);
    LLVMValueRef ci = ld32(g, tci, lt.iv);
    LLVMValueRef wv = ldf(g, w, ld32(g, twi, lt.iv));
    LLVMValueRef xbase = add(g, mul(g, ci, ci64(g, c.hw)), ci64(g, tap_off(&c, k)));
    conv_rows(g, &c, k, wv, xs, xbase, ys, ybase, 1);
    loop_close(g, &lt);
  }
  loop_close(g, &lco);
  loop_close(g, &ls);
  gen_end(g);
  conv_tab_free(&t);
  return 0;
}

int cg_sparse_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_geo c;
  conv_tab t;
  if (conv_geo_init(&c, d)) return -1;
  if (conv_tab_build(&t, &c, d->wm, 0)) return conv_tab_free(&t), -1;
  gen G, *g = &G;
  gen_begin(g, m, name);
  LLVMValueRef tstart = table(g, "start", t.start, (size_t)c.cin * c.KK + 1, 4, g->i32);
  LLVMValueRef tco = table(g, "co", t.other, (size_t)t.n, 4, g->i32);
  LLVMValueRef twi = table(g, "wi", t.wi, (size_t)t.n, 4, g->i32);
  LLVMValueRef dy = arg(g, 0), w = arg(g, 1), dx = arg(g, 2);
  loop ls, lci, lt;
  loop_open(g, &ls, ci64(g, 0), arg(g, 4), 1);
  LLVMValueRef dxs = at(g, dx, mul(g, ls.iv, arg(g, 5)));
  LLVMValueRef dys = at(g, dy, mul(g, ls.iv, arg(g, 6)));
  /* ci outside the taps keeps one dx plane hot while dy planes feed it. */
  loop_open(g, &lci, ci64(g, 0), ci64(g, c.cin), 1);
  for (int k = 0; k < c.KK; k++) {
    if (!t.used[k]) continue;
    LLVMValueRef row = add(g, mul(g, lci.iv, ci64(g, c.KK)), ci64(g, k));
    loop_open(g, &lt, ld32(g, tstart, row), ld32(g, tstart, add(g, row, ci64(g, 1))), 1);
    LLVMValueRef co = ld32(g, tco, lt.iv);
    LLVMValueRef wv = ldf(g, w, ld32(g, twi, lt.iv));
    LLVMValueRef xbase = add(g, mul(g, lci.iv, ci64(g, c.hw)), ci64(g, tap_off(&c, k)));
    conv_rows(g, &c, k, wv, dxs, xbase, dys, mul(g, co, ci64(g, c.ohw)), 0);
    loop_close(g, &lt);
  }
  loop_close(g, &lci);
  loop_close(g, &ls);
  gen_end(g);
  conv_tab_free(&t);
  return 0;
}

int cg_sparse_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  conv_geo c;
  conv_tab t;
  if (conv_geo_init(&c, d)) return -1;
  /* Grouped by output channel so consecutive weights share a dy plane. */
  if (conv_tab_build(&t, &c, d->wm, 1)) return conv_tab_free(&t), -1;
  /* Regroup by tap alone: the tap's ranges are constants of its code. */
  long *kn = calloc((size_t)c.KK + 1, sizeof *kn);
  int32_t *pair = malloc((size_t)(t.n ? t.n : 1) * 2 * sizeof *pair);
  int32_t *wi = malloc((size_t)(t.n ? t.n : 1) * sizeof *wi);
  if (!kn || !pair || !wi) return free(kn), free(pair), free(wi), conv_tab_free(&t), -1;
  for (int k = 0; k < c.KK; k++) {
    kn[k + 1] = kn[k];
    for (int co = 0; co < c.cout; co++)
      kn[k + 1] += t.start[co * c.KK + k + 1] - t.start[co * c.KK + k];
  }
  long fill = 0;
  for (int k = 0; k < c.KK; k++)
    for (int co = 0; co < c.cout; co++)
      for (long e = t.start[co * c.KK + k]; e < t.start[co * c.KK + k + 1]; e++) {
        pair[2 * fill] = t.other[e], pair[2 * fill + 1] = co, wi[fill] = t.wi[e];
        fill++;
      }
  gen G, *g = &G;
  gen_begin(g, m, name);
  LLVMValueRef tpair = table(g, "pair", pair, (size_t)fill * 2, 4, g->i32);
  LLVMValueRef twi = table(g, "wi", wi, (size_t)fill, 4, g->i32);
  LLVMValueRef x = arg(g, 0), dy = arg(g, 1), dw = arg(g, 2);
  LLVMValueRef acc = LLVMBuildArrayAlloca(g->b, g->f32, ci64(g, c.OW), "acc");
  LLVMValueRef sum = LLVMBuildAlloca(g->b, g->f32, "sum");
  for (int k = 0; k < c.KK; k++) {
    if (kn[k] == kn[k + 1]) continue;
    int ky = k / c.K, kx = k % c.K;
    loop lt, lo, ls, ly, lx;
    loop_open(g, &lt, ci64(g, kn[k]), ci64(g, kn[k + 1]), 1);
    LLVMValueRef ci = ld32(g, tpair, mul(g, lt.iv, ci64(g, 2)));
    LLVMValueRef co = ld32(g, tpair, add(g, mul(g, lt.iv, ci64(g, 2)), ci64(g, 1)));
    loop_open(g, &lo, ci64(g, c.ox0[kx]), ci64(g, c.ox1[kx]), 1);
    LLVMBuildStore(g->b, LLVMConstReal(g->f32, 0.0), at(g, acc, lo.iv));
    loop_close(g, &lo);
    LLVMValueRef xc = add(g, mul(g, ci, ci64(g, c.hw)), ci64(g, tap_off(&c, k)));
    LLVMValueRef yc = mul(g, co, ci64(g, c.ohw));
    loop_open(g, &ls, ci64(g, 0), arg(g, 4), 1);
    LLVMValueRef xb = add(g, xc, mul(g, ls.iv, arg(g, 5)));
    LLVMValueRef yb = add(g, yc, mul(g, ls.iv, arg(g, 6)));
    loop_open(g, &ly, ci64(g, c.oy0[ky]), ci64(g, c.oy1[ky]), 1);
    LLVMValueRef xrow = add(g, xb, mul(g, ly.iv, ci64(g, (int64_t)c.st * c.W)));
    LLVMValueRef yrow = add(g, yb, mul(g, ly.iv, ci64(g, c.OW)));
    loop_open(g, &lx, ci64(g, c.ox0[kx]), ci64(g, c.ox1[kx]), 1);
    LLVMValueRef xv = ldf(g, x, add(g, xrow, c.st == 1 ? lx.iv : mul(g, lx.iv, ci64(g, c.st))));
    LLVMValueRef yv = ldf(g, dy, add(g, yrow, lx.iv));
    LLVMValueRef ap = at(g, acc, lx.iv);
    LLVMBuildStore(g->b, fma3(g, yv, xv, LLVMBuildLoad2(g->b, g->f32, ap, "")), ap);
    loop_close_vec(g, &lx);
    loop_close(g, &ly);
    loop_close(g, &ls);
    LLVMBuildStore(g->b, LLVMConstReal(g->f32, 0.0), sum);
    loop_open(g, &lo, ci64(g, c.ox0[kx]), ci64(g, c.ox1[kx]), 1);
    LLVMBuildStore(g->b,
                   LLVMBuildFAdd(g->b, LLVMBuildLoad2(g->b, g->f32, sum, ""),
                                 ldf(g, acc, lo.iv), ""),
                   sum);
    loop_close(g, &lo);
    LLVMBuildStore(g->b, LLVMBuildLoad2(g->b, g->f32, sum, ""), at(g, dw, ld32(g, twi, lt.iv)));
    loop_close(g, &lt);
  }
  gen_end(g);
  free(kn), free(pair), free(wi);
  conv_tab_free(&t);
  return 0;
}

/* ---- linear --------------------------------------------------------- */

/* CSR (by_row: per output, the active inputs) or CSC (per input, the
 * active outputs) of the pattern. */
static int lin_tab(const cg_linear_desc *d, int by_row, int32_t **start, int32_t **idx, long *nnz) {
  int outer = by_row ? d->out : d->in, inner = by_row ? d->in : d->out;
  long cap = (long)d->in * d->out;
  *start = malloc(((size_t)outer + 1) * sizeof **start);
  *idx = malloc((size_t)(cap ? cap : 1) * sizeof **idx);
  if (!*start || !*idx) return free(*start), free(*idx), -1;
  long n = 0;
  for (int o = 0; o < outer; o++) {
    (*start)[o] = (int32_t)n;
    for (int i = 0; i < inner; i++) {
      long wi = by_row ? (long)o * d->in + i : (long)i * d->in + o;
      if (active(d->wm, wi)) (*idx)[n++] = i;
    }
  }
  (*start)[outer] = (int32_t)n;
  *nnz = n;
  return 0;
}

/* out[o][jb .. jb+NB) = init + sum over o's entries e of w(o, e) * src[e][..]:
 * the register-blocked core of linear fwd (CSR) and bwd_data (CSC). */
static int lin_axpy(LLVMModuleRef m, const cg_linear_desc *d, const char *name, int fwd) {
  if ((int64_t)d->in * d->out >= INT32_MAX) return -1;
  int32_t *start, *idx;
  long nnz;
  if (lin_tab(d, fwd, &start, &idx, &nnz)) return -1;
  int outer = fwd ? d->out : d->in;
  gen G, *g = &G;
  gen_begin(g, m, name);
  LLVMValueRef tstart = table(g, "start", start, (size_t)outer + 1, 4, g->i32);
  LLVMValueRef tidx = table(g, "idx", idx, (size_t)nnz, 4, g->i32);
  free(start), free(idx);
  LLVMValueRef src = arg(g, 0), w = arg(g, 1), dst = fwd ? arg(g, 3) : arg(g, 2);
  LLVMValueRef np = arg(g, 4);
  LLVMValueRef acc[NVEC];
  for (int v = 0; v < NVEC; v++) acc[v] = LLVMBuildAlloca(g->b, g->vec, "acc");
  loop lo, lj, lt;
  loop_open(g, &lo, ci64(g, 0), ci64(g, outer), 1);
  LLVMValueRef init = fwd ? splat(g, bias_of(g, arg(g, 2), d->bm, d->out, lo.iv))
                          : LLVMConstNull(g->vec);
  LLVMValueRef t0 = ld32(g, tstart, lo.iv), t1 = ld32(g, tstart, add(g, lo.iv, ci64(g, 1)));
  loop_open(g, &lj, ci64(g, 0), np, CG_LIN_NB);
  for (int v = 0; v < NVEC; v++) LLVMBuildStore(g->b, init, acc[v]);
  loop_open(g, &lt, t0, t1, 1);
  LLVMValueRef e = ld32(g, tidx, lt.iv);
  LLVMValueRef wi = fwd ? add(g, mul(g, lo.iv, ci64(g, d->in)), e)
                        : add(g, mul(g, e, ci64(g, d->in)), lo.iv);
  LLVMValueRef wv = splat(g, ldf(g, w, wi));
  LLVMValueRef sb = add(g, mul(g, e, np), lj.iv);
  for (int v = 0; v < NVEC; v++) {
    LLVMValueRef s = ldv(g, src, add(g, sb, ci64(g, v * VW)));
    LLVMBuildStore(g->b, fma3(g, wv, s, LLVMBuildLoad2(g->b, g->vec, acc[v], "")), acc[v]);
  }
  loop_close(g, &lt);
  LLVMValueRef db = add(g, mul(g, lo.iv, np), lj.iv);
  for (int v = 0; v < NVEC; v++)
    stv(g, LLVMBuildLoad2(g->b, g->vec, acc[v], ""), dst, add(g, db, ci64(g, v * VW)));
  loop_close(g, &lj);
  loop_close(g, &lo);
  gen_end(g);
  return 0;
}

int cg_sparse_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return lin_axpy(m, d, name, 1);
}

int cg_sparse_linear_bwd_data(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  return lin_axpy(m, d, name, 0);
}

int cg_sparse_linear_bwd_weight(LLVMModuleRef m, const cg_linear_desc *d, const char *name) {
  if ((int64_t)d->in * d->out >= INT32_MAX) return -1;
  int32_t *start, *idx;
  long nnz;
  if (lin_tab(d, 1, &start, &idx, &nnz)) return -1;
  gen G, *g = &G;
  gen_begin(g, m, name);
  LLVMValueRef tstart = table(g, "start", start, (size_t)d->out + 1, 4, g->i32);
  LLVMValueRef tidx = table(g, "idx", idx, (size_t)nnz, 4, g->i32);
  free(start), free(idx);
  LLVMValueRef xT = arg(g, 0), dyT = arg(g, 1), dw = arg(g, 2), np = arg(g, 4);
  LLVMValueRef acc[NVEC];
  for (int v = 0; v < NVEC; v++) acc[v] = LLVMBuildAlloca(g->b, g->vec, "acc");
  loop lo, lt, lj;
  loop_open(g, &lo, ci64(g, 0), ci64(g, d->out), 1);
  LLVMValueRef yb = mul(g, lo.iv, np);
  loop_open(g, &lt, ld32(g, tstart, lo.iv), ld32(g, tstart, add(g, lo.iv, ci64(g, 1))), 1);
  LLVMValueRef e = ld32(g, tidx, lt.iv);
  LLVMValueRef xb = mul(g, e, np);
  for (int v = 0; v < NVEC; v++) LLVMBuildStore(g->b, LLVMConstNull(g->vec), acc[v]);
  loop_open(g, &lj, ci64(g, 0), np, CG_LIN_NB);
  for (int v = 0; v < NVEC; v++) {
    LLVMValueRef off = add(g, lj.iv, ci64(g, v * VW));
    LLVMValueRef a = ldv(g, dyT, add(g, yb, off)), b = ldv(g, xT, add(g, xb, off));
    LLVMBuildStore(g->b, fma3(g, a, b, LLVMBuildLoad2(g->b, g->vec, acc[v], "")), acc[v]);
  }
  loop_close(g, &lj);
  LLVMValueRef s = LLVMBuildLoad2(g->b, g->vec, acc[0], "");
  for (int v = 1; v < NVEC; v++)
    s = LLVMBuildFAdd(g->b, s, LLVMBuildLoad2(g->b, g->vec, acc[v], ""), "");
  LLVMValueRef r = LLVMBuildExtractElement(g->b, s, LLVMConstInt(g->i32, 0, 0), "");
  for (int l = 1; l < VW; l++)
    r = LLVMBuildFAdd(g->b, r, LLVMBuildExtractElement(g->b, s, LLVMConstInt(g->i32, (unsigned)l, 0), ""), "");
  LLVMBuildStore(g->b, r, at(g, dw, add(g, mul(g, lo.iv, ci64(g, d->in)), e)));
  loop_close(g, &lt);
  loop_close(g, &lo);
  gen_end(g);
  return 0;
}
