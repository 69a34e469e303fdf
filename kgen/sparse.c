/* sparse.c: the sparse kernel generators (see sparse.h).
 *
 * Shape of the generated code. Every kernel but one is one of three loop
 * nests over constant index tables; no per-weight code is emitted, so a
 * layer of a million active weights is a few hundred instructions and its
 * compile time is that of its tables (well under a second). The one is
 * the conv forward (and _fwd_into) at 16 lanes and stride 1 of a layer
 * without row blocks of up to UNROLL_MAX active weights: straight-line
 * code, an FMA a weight (gen_unrolled, below).
 *
 *   gather (conv fwd, conv bwd_data, linear fwd): per
 *     output row, per register tile of T vectors of 8 floats (16 with
 *     AVX-512: cg_conv_desc.vw, cg_linear_desc.vw), the tile
 *     stays in registers across ALL of the row's entries; an entry is
 *     (source offset, weight index): one broadcast weight, T FMAs on a
 *     contiguous span of the source; weights come packed (the active
 *     ones in mask order, a few hundred KB that stay in L2 where the full
 *     matrix, read at 10% of its entries, would stream through it on
 *     every batch block and tile). For conv the row is an output
 *     channel's plane (fwd) or an input channel's phase plane (bwd_data),
 *     and the packed layout (cg_conv_plan) makes each tap a shifted span,
 *     so padding and stride cost nothing in the loop; for linear the row
 *     is one feature over a block of the batch.
 *   groups (conv bwd_weight): entries of one output row come in
 *     groups of 8 weights; one load of the output gradient feeds 8 FMAs,
 *     one per weight, into 8 vector accumulators; the group is summed by a
 *     shuffle tree into one vector of 8 sums at the end of the call (16-lane
 *     accumulators are first halved). Runs and row blocks (below) make
 *     their groups in the same loop nest (gen_block_groups).
 *   runs (conv, 16 lanes): the taps of a kernel row that share a phase
 *     plane read spans a float apart; each of the conv loop nests takes
 *     such a run of K entries as one (rtab): each vector of its span
 *     loaded once, the K - 1 shifted ones made in registers from it and
 *     the next (valignd). Alone, each tap's span starts at a float's
 *     shift and its loads split a cache line 15 times in 16. Whole runs
 *     come from kernel granularity (every tap of a kernel active); then
 *     runs of two adjacent taps among the entries left (weight
 *     granularity), and the rest one by one as above.
 *   shift classes (conv gathers, 16 lanes): a row's single entries come
 *     ordered by their source offset's shift from a vector (0 .. 15; a
 *     plane starts on a vector, so the shift is the tap's), and each
 *     class is its own loop: an entry's span loaded as whole vectors, the
 *     shifted ones made from each two neighbours (valignd), so that no
 *     load splits a cache line (sort_by_shift).
 *   row blocks (conv gathers, 16 lanes): where every block of 4 rows has
 *     its runs and entries at the same offsets (a full layer), a tile is
 *     swept in parts of 4 vectors by the block's 4 rows: each source
 *     vector loaded once feeds 4 rows' FMAs (a register tile of 4x4 like
 *     a GEMM's), each row's sums in the order it takes alone. The
 *     weight gradient's groups then hold 4 rows by up to 4 entries (or
 *     one run): each input vector loaded once feeds 4 rows, each output
 *     gradient vector up to 4 entries (gen_block_groups).
 *   fused (conv bwd of a layer without row blocks, stride 1): the data
 *     gradient's gather (per input channel, a register tile of T
 *     vectors, without runs or shift classes) with the same positions of
 *     the packed input beside the tile; each entry's output-gradient
 *     vectors, loaded once, feed the tile's FMAs (w * dy) and that
 *     weight's gradient (dy * x, into a vector of lanes an entry, which
 *     the caller sums after its last call): one load for two FMAs,
 *     where the two kernels apart take a load (a split one, for the
 *     weight gradient's inputs) for each (gen_fused).
 *   fused (linear bwd): per input, its block of x and its dx accumulators
 *     in registers; each active output's dy, loaded once, feeds both the
 *     dx FMAs and that weight's gradient (see cg_sparse_linear_bwd).
 *     Elementwise vector FMAs keep float semantics without fast-math.
 *
 * Written with the shared kit (kgen/kit.h: constant tables, phi loops);
 * the tables start from kg_pattern (kgen/pattern.h).
 */
#include "kgen/sparse.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgen/kit.h"
#include "kgen/pattern.h"

/* The CPU kernels' vector helpers: 8-float vectors at 4-byte alignment
 * (a span of a packed plane starts at any float). */
static LLVMValueRef ldv(kg_kit *g, LLVMValueRef p, LLVMValueRef i) {
  LLVMValueRef q = LLVMBuildBitCast(g->b, kg_at(g, p, i), g->vecp, "");
  LLVMValueRef v = LLVMBuildLoad2(g->b, g->vec, q, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void stv(kg_kit *g, LLVMValueRef v, LLVMValueRef p, LLVMValueRef i) {
  LLVMValueRef q = LLVMBuildBitCast(g->b, kg_at(g, p, i), g->vecp, "");
  LLVMSetAlignment(LLVMBuildStore(g->b, v, q), 4);
}

/* llvm.fmuladd of the operands' type (float or a float vector). */
static LLVMValueRef fma3(kg_kit *g, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef t = LLVMTypeOf(a);
  char name[32] = "llvm.fmuladd.f32";
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind)
    snprintf(name, sizeof name, "llvm.fmuladd.v%uf32", LLVMGetVectorSize(t));
  LLVMTypeRef p[3] = {t, t, t}, ft = LLVMFunctionType(t, p, 3, 0);
  LLVMValueRef f = LLVMGetNamedFunction(g->m, name);
  if (!f) f = LLVMAddFunction(g->m, name, ft);
  LLVMValueRef args[3] = {a, b, c};
  return LLVMBuildCall2(g->b, ft, f, args, 3, "");
}
static LLVMValueRef splat(kg_kit *g, LLVMValueRef s) {
  LLVMValueRef v = LLVMBuildInsertElement(g->b, LLVMGetUndef(g->vec), s,
                                          LLVMConstInt(g->i32, 0, 0), "");
  return LLVMBuildShuffleVector(g->b, v, LLVMGetUndef(g->vec),
                                LLVMConstNull(LLVMVectorType(g->i32, (unsigned)g->vw)), "");
}

/* A kernel for the host: constant tables, nounwind (the JIT's callers are
 * C). */
static void gen_begin(kg_kit *g, LLVMModuleRef m, const char *name, int vw) {
  kg_begin(g, m, name, NULL);
  kg_set_lanes(g, vw);
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(g->ctx, nounwind, 0));
}

/* The bias of output o as a float: 0 when the bias pointer is NULL or the
 * bias is masked. Branch-free: the load goes through a pointer to a zero
 * constant instead. */
static LLVMValueRef bias_of(kg_kit *g, LLVMValueRef bias, const uint8_t *bm, int nout,
                            LLVMValueRef o) {
  uint8_t *act = malloc((size_t)nout);
  if (!act) {
    kg_fail(g, "out of memory");
    return LLVMConstReal(g->f32, 0.0);
  }
  for (int i = 0; i < nout; i++) act[i] = (uint8_t)(!bm || bm[i]);
  kg_tab tab = kg_table(g, "bact", act, (size_t)nout, 1);
  free(act);
  char nm[256];
  snprintf(nm, sizeof nm, "%s_zero", g->name);
  LLVMValueRef zero = LLVMAddGlobal(g->m, g->f32, nm);
  LLVMSetInitializer(zero, LLVMConstReal(g->f32, 0.0));
  LLVMSetGlobalConstant(zero, 1);
  LLVMSetLinkage(zero, LLVMPrivateLinkage);
  LLVMValueRef ok = LLVMBuildAnd(
      g->b, LLVMBuildICmp(g->b, LLVMIntNE, kg_tab_get(g, tab, o), kg_c64(g, 0), ""),
      LLVMBuildICmp(g->b, LLVMIntNE, bias, LLVMConstNull(g->fp), ""), "");
  LLVMValueRef safe = LLVMBuildSelect(g->b, ok, bias, zero, "");
  LLVMValueRef idx = LLVMBuildSelect(g->b, ok, o, kg_c64(g, 0), "");
  return kg_ldf(g, safe, idx);
}

/* ---- the two loop nests ------------------------------------------------ */

/* Most vectors one gather tile keeps in registers: 14 accumulators and the
 * broadcast weight fill 15 of the 16 AVX2 registers (of AVX-512's 32, at
 * twice the lanes); the source operand of each FMA is folded into it as a
 * memory load. */
enum { MAXT = 14, GROUP = 8 };
/* The longest run (rtab) a kernel takes: a kernel row of up to 8 taps. */
enum { CG_RUN_MAX = 8 };

/* Table entries are (source offset, weight index) pairs of int32. */
typedef struct etab {
  int32_t *start;      /* per row: first entry; start[rows] = count */
  int32_t *pair;       /* [count][2] */
  long n, cap;
  int rows;
} etab;

static int etab_init(etab *t, int rows, long cap) {
  memset(t, 0, sizeof *t);
  t->rows = rows;
  t->cap = cap > 0 ? cap : 1;
  t->start = calloc((size_t)rows + 1, sizeof *t->start);
  t->pair = malloc((size_t)t->cap * 2 * sizeof *t->pair);
  return t->start && t->pair ? 0 : -1;
}
static void etab_free(etab *t) { free(t->start), free(t->pair); }

/* Appends an entry to the row being filled; -1 when an offset does not fit
 * in 32 bits. */
static int etab_add(etab *t, int64_t off, int64_t wi) {
  if (off < 0 || off >= INT32_MAX || wi >= INT32_MAX) return -1;
  assert(t->n < t->cap);
  t->pair[2 * t->n] = (int32_t)off, t->pair[2 * t->n + 1] = (int32_t)wi;
  t->n++;
  return 0;
}

/* A conv gather table's runs: K entries of one row whose source offsets
 * are b, b + 1, .., b + K - 1 (the taps of a kernel row that share a
 * phase plane, all active: kernel granularity), kept apart from the
 * row's other entries.
 * A run's kernel loads each vector of its source span once and makes the
 * K - 1 shifted ones from two neighbours in registers (valignd), where
 * each entry alone loads its own span at a float's shift, across a cache
 * line 15 times in 16. Measured with a C microbenchmark on the 2-core VM
 * (8-vector tiles, offsets anywhere in L1, AVX-512): 49 G lane-FMA/s a
 * core in runs of 3 against 20 as single entries. */
typedef struct rtab {
  int K;           /* entries a run; 0: no runs */
  int32_t *start;  /* per row: first run; start[rows] = count */
  int32_t *off;    /* per run: the source offset of its first weight */
  int32_t *w;      /* per run: its K weight indices, by offset */
  long n;
} rtab;

static void rtab_free(rtab *r) { free(r->start), free(r->off), free(r->w); }

/* A kernel's runs: of a kernel row's K taps, then of two among the taps
 * left (two of three taps active, weight granularity). */
enum { NRT = 2 };
static void rtabs_free(rtab r[NRT]) {
  for (int i = 0; i < NRT; i++) rtab_free(&r[i]);
}
static long rtabs_weights(const rtab r[NRT]) {
  long n = 0;
  for (int i = 0; i < NRT; i++) n += r[i].n * r[i].K;
  return n;
}

/* Moves the runs of K out of t's rows into r (K < 2: none): K entries of
 * a row, among the K * K from each, whose offsets are b, b + 1, ..,
 * b + K - 1 (a kernel row's taps are that close in the forward's and the
 * backward's tables, at stride 1 or in one phase plane); the entries left
 * keep their order. -1 when out of memory. */
static int split_runs(etab *t, int K, rtab *r) {
  memset(r, 0, sizeof *r);
  if (K < 2) return 0;
  r->K = K;
  const int WIN = K * K;
  long cap = t->n / K + 1;
  r->start = calloc((size_t)t->rows + 1, sizeof *r->start);
  r->off = malloc((size_t)cap * sizeof *r->off);
  r->w = malloc((size_t)cap * K * sizeof *r->w);
  uint8_t *used = calloc((size_t)(t->n ? t->n : 1), 1);
  if (!r->start || !r->off || !r->w || !used) return free(used), rtab_free(r), -1;
  long keep = 0;
  for (int row = 0; row < t->rows; row++) {
    long e0 = t->start[row], end = t->start[row + 1];
    r->start[row] = (int32_t)r->n;
    t->start[row] = (int32_t)keep;
    for (long e = e0; e < end;) { /* e stays until used: its run may start below it */
      if (used[e]) {
        e++;
        continue;
      }
      long w1 = e + WIN < end ? e + WIN : end, at[CG_RUN_MAX];
      /* the lowest offset of e's chain in the window, then its run */
      int32_t lo = t->pair[2 * e];
      for (int down = 1; down;) {
        down = 0;
        for (long f = e + 1; f < w1 && !down; f++)
          if (!used[f] && t->pair[2 * f] == lo - 1) lo--, down = 1;
      }
      int got = 0;
      for (int j = 0; j < K; j++) {
        at[j] = -1;
        for (long f = e; f < w1 && at[j] < 0; f++)
          if (!used[f] && t->pair[2 * f] == lo + j) at[j] = f;
        got += at[j] >= 0;
      }
      if (got < K) { /* a single entry, kept */
        used[e] = 1;
        t->pair[2 * keep] = t->pair[2 * e], t->pair[2 * keep + 1] = t->pair[2 * e + 1];
        keep++, e++;
        continue;
      }
      r->off[r->n] = lo;
      for (int j = 0; j < K; j++) used[at[j]] = 1, r->w[r->n * K + j] = t->pair[2 * at[j] + 1];
      r->n++;
    }
  }
  free(used);
  r->start[t->rows] = (int32_t)r->n;
  t->start[t->rows] = (int32_t)keep;
  t->n = keep;
  return 0;
}

/* r[0]: t's runs of K (none when K < 2), r[1]: of two among the entries
 * left, when K > 2. -1 when out of memory (r freed). */
static int split_all(etab *t, int K, rtab r[NRT]) {
  memset(r, 0, NRT * sizeof *r);
  if (split_runs(t, K, &r[0]) || split_runs(t, K > 2 ? 2 : 0, &r[1])) return rtabs_free(r), -1;
  return 0;
}

/* The weight column of a gather table: the order in which its kernel
 * reads the packed weights, the runs' (r, may be NULL) first. With row
 * blocks of rb rows (row_block), each run or entry of a block's first
 * row comes with its twins in the block's other rows, row by row. ord
 * may be NULL (not wanted). */
static int take_order(const etab *t, const rtab r[NRT], int rb, cg_order *ord) {
  if (!ord) return 0;
  long nr = r ? rtabs_weights(r) : 0;
  ord->n = nr + t->n;
  ord->idx = malloc((size_t)(ord->n ? ord->n : 1) * sizeof *ord->idx);
  if (!ord->idx) return -1;
  long k = 0;
  for (int i = 0; r && i < NRT; i++)
    for (int b = 0; r[i].n > 0 && b < t->rows; b += rb)
      for (long j = 0; j < r[i].start[b + 1] - r[i].start[b]; j++)
        for (int q = 0; q < rb; q++)
          for (int u = 0; u < r[i].K; u++) ord->idx[k++] = r[i].w[(r[i].start[b + q] + j) * r[i].K + u];
  for (int b = 0; b < t->rows; b += rb)
    for (long j = 0; j < t->start[b + 1] - t->start[b]; j++)
      for (int q = 0; q < rb; q++) ord->idx[k++] = t->pair[2 * (t->start[b + q] + j) + 1];
  assert(k == ord->n);
  return 0;
}

/* Shift classes (16 lanes): each row's single entries in the order of
 * their source offset's shift from a vector, off mod vw (stable: the same
 * shifts keep their order), so that the gather loads each entry's span
 * from whole vectors and makes the shifted ones in registers
 * (gen_gather, cls). Planes and samples start on a vector (pq, xlen), so
 * a shift depends on the tap alone. In the sample's training (the 2-core
 * VM), the same build with and without the classes: conv1.1's forward
 * 1.08 ms against 1.24, conv2.1's 1.12 against 1.31 (bench/README.md).
 * -1 when out of memory. */
static int sort_by_shift(etab *t, int vw) {
  long most = 0;
  for (int row = 0; row < t->rows; row++)
    if (t->start[row + 1] - t->start[row] > most) most = t->start[row + 1] - t->start[row];
  int32_t *tmp = malloc((size_t)(most ? most : 1) * 2 * sizeof *tmp);
  if (!tmp) return -1;
  for (int row = 0; row < t->rows; row++) {
    int32_t e0 = t->start[row], n = t->start[row + 1] - e0, k = 0;
    for (int c = 0; c < vw; c++)
      for (int32_t j = 0; j < n; j++)
        if (t->pair[2 * (e0 + j)] % vw == c)
          tmp[2 * k] = t->pair[2 * (e0 + j)], tmp[2 * k + 1] = t->pair[2 * (e0 + j) + 1], k++;
    memcpy(t->pair + 2 * e0, tmp, (size_t)n * 2 * sizeof *tmp);
  }
  free(tmp);
  return 0;
}

/* Rows a gather kernel computes at once, sharing each source vector it
 * loads: 4 (AVX-512) where every block of 4 rows has the same runs and
 * entries at the same offsets (a dense layer, or rows whose patterns
 * coincide), else 1. Each row then takes its sums in the same order as
 * alone: the results are the same bit for bit. */
enum { RB_MAX = 4, RB_TILE = 4 };
/* Most accumulators of a weight-gradient group (gen_block_groups): one
 * row's 8 weights, or a row block's 4 rows by 4 entries or by one run of
 * up to 7 taps. */
enum { BG_MAX = 28 };
static int row_block(const etab *t, const rtab r[NRT], int vw) {
  const int rb = RB_MAX;
  if (vw != 16 || t->rows % rb) return 1;
  for (int b = 0; b < t->rows; b += rb)
    for (int q = 1; q < rb; q++) {
      int32_t n0 = t->start[b + 1] - t->start[b], a = t->start[b], c = t->start[b + q];
      if (t->start[b + q + 1] - c != n0) return 1;
      for (int32_t j = 0; j < n0; j++)
        if (t->pair[2 * (a + j)] != t->pair[2 * (c + j)]) return 1;
      for (int i = 0; r && i < NRT; i++) {
        if (r[i].n == 0) continue;
        int32_t m0 = r[i].start[b + 1] - r[i].start[b], ra = r[i].start[b], rc = r[i].start[b + q];
        if (r[i].start[b + q + 1] - rc != m0) return 1;
        for (int32_t j = 0; j < m0; j++)
          if (r[i].off[ra + j] != r[i].off[rc + j]) return 1;
      }
    }
  return rb;
}

/* The per-block table of a per-row one (start: rows + 1 firsts, val: a
 * value every stride int32): each block's first row's values. NULL when
 * out of memory. */
static int32_t *block_tab(const int32_t *start, const int32_t *val, int stride, int rows, int rb,
                          int32_t **bval) {
  int32_t *bs = malloc(((size_t)rows / rb + 1) * sizeof *bs);
  long n = 0;
  for (int b = 0; b < rows; b += rb) n += start[b + 1] - start[b];
  *bval = malloc((size_t)(n ? n : 1) * sizeof **bval);
  if (!bs || !*bval) return free(bs), free(*bval), *bval = NULL, NULL;
  n = 0;
  for (int b = 0; b < rows; b += rb) {
    bs[b / rb] = (int32_t)n;
    for (int32_t j = start[b]; j < start[b + 1]; j++) (*bval)[n++] = val[(long)j * stride];
  }
  bs[rows / rb] = (int32_t)n;
  return bs;
}

void cg_order_free(cg_order *ord) {
  if (ord) free(ord->idx), ord->idx = NULL, ord->n = 0;
}

/* The sample (or batch-block) loop of a kernel: `count` iterations, the two
 * buffers advanced by their strides. */
typedef struct span {
  LLVMValueRef count, sstride, dstride;
} span;

/* Lanes j .. j + vw - 1 of a then b: a vector j floats on from a (a
 * itself for j = 0), one two-source shuffle (valignd's work; LLVM 14
 * picks vpermt2ps with an index vector). */
static LLVMValueRef shifted(kg_kit *g, LLVMValueRef a, LLVMValueRef b, int j) {
  if (!j) return a;
  LLVMValueRef m[KG_VW_MAX];
  for (int i = 0; i < g->vw; i++) m[i] = LLVMConstInt(g->i32, (unsigned)(i + j), 0);
  return LLVMBuildShuffleVector(g->b, a, b, LLVMConstVector(m, (unsigned)g->vw), "");
}

/* A run's FMAs into the accumulators of a tile (rtab): rb rows (a row
 * block, its runs' weights by row) by vectors v0 .. v0 + T - 1 of the
 * tile; each vector of the source span loaded once, the shifted ones made
 * from two neighbours. */
static void gen_runs(kg_kit *g, const rtab *r, kg_tab trs, kg_tab tro, int rb, int v0, int T,
                     LLVMValueRef row, LLVMValueRef tile, LLVMValueRef ss, LLVMValueRef w,
                     LLVMValueRef acc[][MAXT]) {
  kg_loop lr;
  kg_row_loop(g, &lr, trs, row, 1);
  LLVMValueRef off = kg_add(g, kg_add(g, kg_tab_get(g, tro, lr.iv), tile), kg_c64(g, v0 * g->vw));
  LLVMValueRef wb = kg_mul(g, lr.iv, kg_c64(g, rb * r->K)), wv[RB_MAX][CG_RUN_MAX];
  for (int q = 0; q < rb; q++)
    for (int j = 0; j < r->K; j++)
      wv[q][j] = splat(g, kg_ldf(g, w, kg_add(g, wb, kg_c64(g, q * r->K + j))));
  LLVMValueRef a = ldv(g, ss, off);
  for (int v = 0; v < T; v++) {
    LLVMValueRef b = ldv(g, ss, kg_add(g, off, kg_c64(g, (v + 1) * g->vw))), s[RB_MAX];
    for (int q = 0; q < rb; q++) s[q] = LLVMBuildLoad2(g->b, g->vec, acc[q][v], "");
    for (int j = 0; j < r->K; j++) {
      LLVMValueRef x = shifted(g, a, b, j);
      for (int q = 0; q < rb; q++) s[q] = fma3(g, wv[q][j], x, s[q]);
    }
    for (int q = 0; q < rb; q++) LLVMBuildStore(g->b, s[q], acc[q][v]);
    a = b;
  }
  kg_loop_close(g, &lr);
}

/* Where a gather's rows go when not rlen floats apart: `stride` floats
 * apart, through the ReLU as they are stored (cg_sparse_conv_fwd_into). */
typedef struct gdst {
  long stride;
  int relu;
} gdst;

/* dst[row * rlen + t .. + 8T) = init(row) + sum over the row's entries e
 * of w[e] * src[off(e) + t ..], for t in [0, rlen) by tiles of T vectors,
 * for every sample of the span. init is the bias (fwd) or 0. The weights
 * come packed in entry order (cg_order: the caller gathers them), so that
 * only the offsets are a table: one index load per entry, and the weight
 * stream is sequential.
 * Row blocks (rb > 1, row_block): the rb rows of a block share their
 * offsets, so each tile is swept in parts of RB_TILE vectors by rb rows,
 * each source vector loaded once for the block's rows.
 * Sliced (drows > 0, one tile per row): the table's rows are slices of the
 * source, drows rows each, all adding into dst row rid[r] (r % drows when
 * rid is NULL), which is first set to init; a slice's source block stays
 * in L1 while every row reads it. A row's runs (r; none when NULL or
 * sliced) come before its entries, their weights before the entries'.
 * With out (not sliced), the rows go where out says. */
static void gen_gather(kg_kit *g, const etab *t, const rtab r[NRT], int rb, int T, long rlen,
                       span sp, LLVMValueRef src, LLVMValueRef w, LLVMValueRef dst,
                       LLVMValueRef bias, const uint8_t *bm, int drows, const int32_t *rid,
                       int cls, const gdst *out) {
  assert(!drows || rlen == (long)g->vw * T);
  assert(rb == 1 || (!drows && !rid && t->rows % rb == 0));
  assert(!cls || !drows);
  assert(!out || !drows);
  long dstride = out ? out->stride : rlen;
  int nout = drows ? drows : t->rows, S = rb > 1 ? RB_TILE : T, nb = t->rows / rb, vw = g->vw;
  /* the tables by block: each block's first row's offsets */
  int32_t *offs = NULL, *bstart = block_tab(t->start, t->pair, 2, t->rows, rb, &offs);
  /* with shift classes, block b's entries of shift c from cstart[b * vw + c] */
  int32_t *cstart = cls ? malloc(((size_t)nb * vw + 1) * sizeof *cstart) : NULL;
  if (!bstart || (cls && !cstart)) {
    free(bstart), free(offs), free(cstart);
    kg_fail(g, "out of memory");
    return;
  }
  int has[KG_VW_MAX] = {0}; /* the shifts some entry has */
  for (int b = 0; cls && b < nb; b++) {
    int32_t j = bstart[b];
    for (int c = 0; c < vw; c++) {
      cstart[b * vw + c] = j;
      for (; j < bstart[b + 1] && offs[j] % vw == c; j++) has[c] = 1;
    }
    assert(j == bstart[b + 1]);
  }
  if (cls) cstart[nb * vw] = bstart[nb];
  kg_tab tstart = kg_table(g, "start", bstart, (size_t)nb + 1, 4);
  kg_tab toff = kg_table(g, "off", offs, (size_t)bstart[nb], 4);
  kg_tab tcs = cls ? kg_table(g, "cstart", cstart, (size_t)nb * vw + 1, 4) : tstart;
  free(bstart), free(offs), free(cstart);
  kg_tab trid = {0}, trs[NRT] = {{0}}, tro[NRT] = {{0}};
  if (rid) trid = kg_table(g, "rid", rid, (size_t)t->rows, 4);
  LLVMValueRef wr[NRT]; /* each table's runs' weights, then the entries' */
  long wbase = 0;
  for (int i = 0; r && i < NRT; i++) {
    if (r[i].n == 0) continue;
    assert(!drows);
    int32_t *ro = NULL, *rs = block_tab(r[i].start, r[i].off, 1, t->rows, rb, &ro);
    if (!rs) {
      kg_fail(g, "out of memory");
      return;
    }
    trs[i] = kg_table(g, "rstart", rs, (size_t)t->rows / rb + 1, 4);
    tro[i] = kg_table(g, "roff", ro, (size_t)rs[t->rows / rb], 4);
    free(rs), free(ro);
    wr[i] = kg_at(g, w, kg_c64(g, wbase));
    wbase += r[i].n * r[i].K;
  }
  LLVMValueRef we = wbase ? kg_at(g, w, kg_c64(g, wbase)) : w;
  LLVMValueRef acc[RB_MAX][MAXT];
  for (int q = 0; q < rb; q++)
    for (int v = 0; v < S; v++) acc[q][v] = kg_local(g, g->vec, "acc");
  kg_loop ls, lr, lt, le;
  kg_loop_open(g, &ls, kg_c64(g, 0), sp.count, 1);
  LLVMValueRef ss = kg_at(g, src, kg_mul(g, ls.iv, sp.sstride));
  LLVMValueRef ds = kg_at(g, dst, kg_mul(g, ls.iv, sp.dstride));
  if (drows) {
    kg_loop li;
    kg_loop_open(g, &li, kg_c64(g, 0), kg_c64(g, drows), 1);
    LLVMValueRef init = bias ? splat(g, bias_of(g, bias, bm, nout, li.iv)) : LLVMConstNull(g->vec);
    for (int v = 0; v < T; v++) stv(g, init, ds, kg_add(g, kg_mul(g, li.iv, kg_c64(g, rlen)), kg_c64(g, v * g->vw)));
    kg_loop_close(g, &li);
  }
  /* Tiles outside rows: one tile's source window of every row's entries
   * (for a conv, a few rows of each input plane) stays in L1 while all the
   * rows, which share it, are computed. */
  kg_loop_open(g, &lt, kg_c64(g, 0), kg_c64(g, rlen), (int64_t)g->vw * T);
  kg_loop_open(g, &lr, kg_c64(g, 0), kg_c64(g, t->rows / rb), 1);
  LLVMValueRef drow[RB_MAX], rowbase[RB_MAX];
  for (int q = 0; q < rb; q++) {
    drow[q] = rid     ? kg_tab_get(g, trid, lr.iv)
              : drows ? LLVMBuildURem(g->b, lr.iv, kg_c64(g, drows), "")
                      : kg_add(g, kg_mul(g, lr.iv, kg_c64(g, rb)), kg_c64(g, q));
    rowbase[q] = kg_mul(g, drow[q], kg_c64(g, dstride));
  }
  for (int v0 = 0; v0 < T; v0 += S) { /* the tile's parts: one unless rb > 1 */
    int n = T - v0 < S ? T - v0 : S;
    for (int q = 0; q < rb; q++) {
      LLVMValueRef init = drows || !bias ? LLVMConstNull(g->vec)
                                          : splat(g, bias_of(g, bias, bm, nout, drow[q]));
      for (int v = 0; v < n; v++)
        LLVMBuildStore(g->b,
                       drows ? ldv(g, ds, kg_add(g, kg_add(g, rowbase[q], lt.iv), kg_c64(g, (v0 + v) * g->vw)))
                             : init,
                       acc[q][v]);
    }
    for (int i = 0; r && i < NRT; i++)
      if (r[i].n > 0) gen_runs(g, &r[i], trs[i], tro[i], rb, v0, n, lr.iv, lt.iv, ss, wr[i], acc);
    /* the row's entries: all in one loop, or one loop a shift class, each
     * entry's span loaded from the whole vectors around it (the next one
     * too) and shifted in registers */
    for (int c = 0; c < (cls ? vw : 1); c++) {
      if (cls && !has[c]) continue;
      if (cls) kg_row_loop(g, &le, tcs, kg_add(g, kg_mul(g, lr.iv, kg_c64(g, vw)), kg_c64(g, c)), 1);
      else kg_row_loop(g, &le, tstart, lr.iv, 1);
      LLVMValueRef off = kg_add(g, kg_add(g, kg_tab_get(g, toff, le.iv), lt.iv), kg_c64(g, v0 * vw - c));
      LLVMValueRef wv[RB_MAX];
      for (int q = 0; q < rb; q++)
        wv[q] = splat(g, kg_ldf(g, we, kg_add(g, kg_mul(g, le.iv, kg_c64(g, rb)), kg_c64(g, q))));
      LLVMValueRef a = c ? ldv(g, ss, off) : NULL;
      for (int v = 0; v < n; v++) {
        LLVMValueRef x = ldv(g, ss, kg_add(g, off, kg_c64(g, (v + (c > 0)) * vw)));
        if (c) {
          LLVMValueRef b = x;
          x = shifted(g, a, b, c), a = b;
        }
        for (int q = 0; q < rb; q++)
          LLVMBuildStore(g->b, fma3(g, wv[q], x, LLVMBuildLoad2(g->b, g->vec, acc[q][v], "")), acc[q][v]);
      }
      kg_loop_close(g, &le);
    }
    for (int q = 0; q < rb; q++) {
      LLVMValueRef db = kg_add(g, kg_add(g, rowbase[q], lt.iv), kg_c64(g, v0 * g->vw));
      for (int v = 0; v < n; v++) {
        LLVMValueRef a = LLVMBuildLoad2(g->b, g->vec, acc[q][v], "");
        if (out && out->relu) { /* a > 0 ? a : 0, as rt_relu */
          LLVMValueRef z = LLVMConstNull(g->vec);
          a = LLVMBuildSelect(g->b, LLVMBuildFCmp(g->b, LLVMRealOGT, a, z, ""), a, z, "");
        }
        stv(g, a, ds, kg_add(g, db, kg_c64(g, v * g->vw)));
      }
    }
  }
  kg_loop_close(g, &lr);
  kg_loop_close(g, &lt);
  kg_loop_close(g, &ls);
}

/* The reductions work on 8 lanes: wider vectors are halved first. */
enum { R8 = 8 };

static LLVMValueRef shuf(kg_kit *g, LLVMValueRef a, LLVMValueRef b, const int *idx) {
  LLVMValueRef m[R8];
  for (int i = 0; i < R8; i++) m[i] = LLVMConstInt(g->i32, (unsigned long long)idx[i], 0);
  return LLVMBuildShuffleVector(g->b, a, b, LLVMConstVector(m, R8), "");
}

/* A vector of g->vw lanes to 8 lanes whose sum is the same: the upper
 * halves added onto the lower, halving until 8 are left. */
static LLVMValueRef to8(kg_kit *g, LLVMValueRef v) {
  for (int n = g->vw; n > R8; n /= 2) {
    LLVMValueRef lo[KG_VW_MAX / 2], hi[KG_VW_MAX / 2];
    for (int i = 0; i < n / 2; i++)
      lo[i] = LLVMConstInt(g->i32, (unsigned)i, 0), hi[i] = LLVMConstInt(g->i32, (unsigned)(i + n / 2), 0);
    v = LLVMBuildFAdd(g->b, LLVMBuildShuffleVector(g->b, v, v, LLVMConstVector(lo, (unsigned)n / 2), ""),
                      LLVMBuildShuffleVector(g->b, v, v, LLVMConstVector(hi, (unsigned)n / 2), ""), "");
  }
  return v;
}

/* Eight vectors to one vector of their eight sums, lane i = sum of v[i]:
 * three levels of pairwise shuffles and adds instead of 56 scalar adds. */
static LLVMValueRef sum8(kg_kit *g, LLVMValueRef v[GROUP]) {
  for (int i = 0; i < GROUP; i++) v[i] = to8(g, v[i]);
  static const int lo[3][R8] = {{0, 8, 2, 10, 4, 12, 6, 14}, {0, 1, 8, 9, 4, 5, 12, 13},
                                {0, 1, 2, 3, 8, 9, 10, 11}};
  static const int hi[3][R8] = {{1, 9, 3, 11, 5, 13, 7, 15}, {2, 3, 10, 11, 6, 7, 14, 15},
                                {4, 5, 6, 7, 12, 13, 14, 15}};
  int n = GROUP;
  for (int l = 0; l < 3; l++, n /= 2)
    for (int i = 0; i < n / 2; i++)
      v[i] = LLVMBuildFAdd(g->b, shuf(g, v[2 * i], v[2 * i + 1], lo[l]),
                           shuf(g, v[2 * i], v[2 * i + 1], hi[l]), "");
  return v[0];
}

/* A group's 8 accumulators summed (sum8), each sum added to dw[wi[b]]
 * (wi < 0: a padding lane, added to sink instead). */
static void add_sums(kg_kit *g, LLVMValueRef acc[GROUP], LLVMValueRef wi[GROUP], LLVMValueRef sink,
                     LLVMValueRef dw) {
  LLVMValueRef sum[GROUP];
  for (int b = 0; b < GROUP; b++) sum[b] = LLVMBuildLoad2(g->b, g->vec, acc[b], "");
  LLVMValueRef s = sum8(g, sum);
  for (int b = 0; b < GROUP; b++) {
    LLVMValueRef pad = LLVMBuildICmp(g->b, LLVMIntSLT, wi[b], kg_c64(g, 0), "");
    LLVMValueRef p = kg_at(g, LLVMBuildSelect(g->b, pad, sink, dw, ""),
                        LLVMBuildSelect(g->b, pad, kg_c64(g, 0), wi[b], ""));
    LLVMValueRef v = LLVMBuildExtractElement(g->b, s, LLVMConstInt(g->i32, (unsigned)b, 0), "");
    LLVMBuildStore(g->b, LLVMBuildFAdd(g->b, LLVMBuildLoad2(g->b, g->f32, p, ""), v, ""), p);
  }
}

/* Weight gradients by groups of weights that share loads: U items (runs
 * of K taps, or entries: K = 1) of rb output rows whose items share their
 * offsets (a row block, row_block; or one row, rb = 1), rb U K weights,
 * one accumulator each. Each vector of an item's input span is loaded
 * once (and its shifted twins made once: gen_runs) for the rows, each
 * row's output gradient once for the items. A group is 1 + U + rb U K
 * int32: the first row's output-gradient offset (row q's is dycs * q on),
 * U input offsets, the weight indices by row, item and tap (-1 pads and
 * writes nowhere). dw[wi] += the sum over the span's samples and t in
 * [0, len) of dy[dyoff + t] * x[xoff + t + tap]; each weight's sum takes
 * its terms in the same order whatever the grouping, the same bits. */
static void gen_block_groups(kg_kit *g, const int32_t *grp, long ngroups, int rb, int U, int K,
                             long len, int64_t dycs, span sp, LLVMValueRef x, LLVMValueRef dy,
                             LLVMValueRef dw) {
  const int NA = rb * U * K, W = 1 + U + NA;
  assert(NA <= BG_MAX && U <= GROUP && rb <= RB_MAX);
  kg_tab tg = kg_table(g, "group", grp, (size_t)ngroups * W, 4);
  LLVMValueRef acc[BG_MAX], wi[BG_MAX], xo[GROUP], prev[GROUP];
  for (int a = 0; a < NA; a++) acc[a] = kg_local(g, g->vec, "acc");
  for (int u = 0; u < U && K > 1; u++) prev[u] = kg_local(g, g->vec, "xprev");
  LLVMValueRef zacc = kg_local(g, g->vec, "zero"), sink = kg_local(g, g->f32, "sink");
  kg_loop lg, ls, lt;
  kg_loop_open(g, &lg, kg_c64(g, 0), kg_c64(g, ngroups), 1);
  LLVMValueRef gb = kg_mul(g, lg.iv, kg_c64(g, W));
  LLVMValueRef yo = kg_tab_get(g, tg, gb);
  for (int u = 0; u < U; u++) xo[u] = kg_tab_get(g, tg, kg_add(g, gb, kg_c64(g, 1 + u)));
  for (int a = 0; a < NA; a++) {
    wi[a] = kg_tab_get(g, tg, kg_add(g, gb, kg_c64(g, 1 + U + a)));
    LLVMBuildStore(g->b, LLVMConstNull(g->vec), acc[a]);
  }
  kg_loop_open(g, &ls, kg_c64(g, 0), sp.count, 1);
  LLVMValueRef xs = kg_at(g, x, kg_mul(g, ls.iv, sp.sstride));
  LLVMValueRef ys = kg_at(g, dy, kg_mul(g, ls.iv, sp.dstride));
  for (int u = 0; u < U && K > 1; u++) LLVMBuildStore(g->b, ldv(g, xs, xo[u]), prev[u]);
  kg_loop_open(g, &lt, kg_c64(g, 0), kg_c64(g, len), g->vw);
  LLVMValueRef dv[RB_MAX];
  for (int q = 0; q < rb; q++) dv[q] = ldv(g, ys, kg_add(g, kg_add(g, yo, lt.iv), kg_c64(g, q * dycs)));
  for (int u = 0; u < U; u++) {
    LLVMValueRef a = K > 1 ? LLVMBuildLoad2(g->b, g->vec, prev[u], "") : ldv(g, xs, kg_add(g, xo[u], lt.iv));
    LLVMValueRef b = K > 1 ? ldv(g, xs, kg_add(g, kg_add(g, xo[u], lt.iv), kg_c64(g, g->vw))) : a;
    for (int j = 0; j < K; j++) {
      LLVMValueRef xv = shifted(g, a, b, j);
      for (int q = 0; q < rb; q++) {
        LLVMValueRef ac = acc[(q * U + u) * K + j];
        LLVMBuildStore(g->b, fma3(g, dv[q], xv, LLVMBuildLoad2(g->b, g->vec, ac, "")), ac);
      }
    }
    if (K > 1) LLVMBuildStore(g->b, b, prev[u]);
  }
  kg_loop_close(g, &lt);
  kg_loop_close(g, &ls);
  LLVMBuildStore(g->b, LLVMConstNull(g->vec), zacc);
  for (int a0 = 0; a0 < NA; a0 += GROUP) { /* the sums by eights, padded with zeros */
    LLVMValueRef ac[GROUP], w8[GROUP];
    for (int b = 0; b < GROUP; b++)
      ac[b] = a0 + b < NA ? acc[a0 + b] : zacc, w8[b] = a0 + b < NA ? wi[a0 + b] : kg_c64(g, -1);
    add_sums(g, ac, w8, sink, dw);
  }
  kg_loop_close(g, &lg);
}

/* The order of a weight-gradient kernel's groups of single rows: by
 * their first input offset (the input planes they read), then their row.
 * Consecutive groups of different rows then read the same few input
 * planes, which stay in L1 (one output-gradient plane comes from L2 a
 * group), where one row's groups after another read every plane of the
 * input, each from L2 once a row. Each weight is in one group, and its
 * sum is the same bits in any order of the groups. Measured on the
 * Fashion-MNIST sample (21%, 2026-12-03, six interleaved pairs,
 * --profile): conv2.1's backward (64 planes of 14x14) 2.63-3.09 ms a step
 * against 2.84-3.18, lower in every pair; conv1.1's (32 of 28x28)
 * 2.72-3.09 against 2.73-3.14, lower in four. Row blocks keep their
 * order: a group of 4 rows reads 4 output-gradient planes for about as
 * many input planes, and sorted, the template at 100% took 27.3-32.5 ms
 * a step against 25.8-28.5. */
static int group_cmp(const void *a, const void *b) {
  const int32_t *x = a, *y = b; /* [0]: the row's output offset, [1]: the first input offset */
  if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
  return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* The groups of gen_block_groups from a per-row table of items (start:
 * rows + 1 firsts; item i's offset off[i * ostride], its K weights
 * wv[i * wstride + j]), blocks of rb rows (1: each row alone), U items a
 * group, block b's output offset rowoff * b * rb + marg (single rows in
 * group_cmp's order); their count, or -1 when out of memory. */
static long make_block_groups(const int32_t *start, const int32_t *off, int ostride,
                              const int32_t *wv, int wstride, int K, int rows, int rb, int U,
                              int64_t rowoff, int64_t marg, int32_t **out) {
  const int NA = rb * U * K, W = 1 + U + NA;
  long ng = 0;
  for (int b = 0; b < rows; b += rb) ng += (start[b + 1] - start[b] + U - 1) / U;
  int32_t *grp = malloc((size_t)(ng ? ng : 1) * W * sizeof *grp);
  if (!grp) return -1;
  long k = 0;
  for (int b = 0; b < rows; b += rb)
    for (long e = 0; e < start[b + 1] - start[b]; e += U, k++) {
      int32_t *q = grp + k * W;
      q[0] = (int32_t)(rowoff * b + marg);
      for (int a = 0; a < NA; a++) q[1 + U + a] = -1;
      for (int u = 0; u < U; u++) {
        int real = start[b] + e + u < start[b + 1];
        q[1 + u] = real ? off[(long)(start[b] + e + u) * ostride] : 0;
        for (int r = 0; real && r < rb; r++)
          for (int j = 0; j < K; j++)
            q[1 + U + (r * U + u) * K + j] = wv[(long)(start[b + r] + e + u) * wstride + j];
      }
    }
  if (rb == 1) qsort(grp, (size_t)ng, (size_t)W * sizeof *grp, group_cmp);
  *out = grp;
  return ng;
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

/* Does tap (ky, kx) read any real input? One that reads only padding adds
 * exactly 0 and is left out of the tables. */
static int tap_live(const cg_conv_desc *d, const cg_conv_plan *p, int ky, int kx) {
  int a, b, c, e;
  conv_range(ky, d->pad, d->stride, d->h, p->oh, &a, &b);
  conv_range(kx, d->pad, d->stride, d->w, p->ow, &c, &e);
  return a < b && c < e;
}

static int active(const uint8_t *m, long i) { return !m || m[i]; }

static long round_up(long v, long m) { return (v + m - 1) / m * m; }

/* Vectors per tile for rows of `len` floats: the fewest tile iterations
 * weighted by their cost (T FMAs plus about two for the broadcast and the
 * table), so that short planes are not rounded up to a mostly idle tile. */
static int pick_tile(long len, int vw) {
  long nv = (len + vw - 1) / vw, best = -1;
  int bt = 1;
  for (int T = 1; T <= MAXT; T++) {
    long cost = (nv + T - 1) / T * (T + 2);
    if (best < 0 || cost <= best) best = cost, bt = T;
  }
  return bt;
}

/* The runs a conv's gather kernels take (rtab): the taps of a kernel row
 * that share a phase plane (all of them at stride 1), a float apart in
 * the source, where the vectors have 16 lanes (AVX-512, whose valignd
 * makes a shifted vector in one instruction); 0: none. */
static int run_len(const cg_conv_desc *d, const cg_conv_plan *p) {
  int K = (d->k + p->s - 1) / p->s;
  return p->vw == 16 && K >= 2 && K <= CG_RUN_MAX ? K : 0;
}

int cg_conv_plan_init(cg_conv_plan *p, const cg_conv_desc *d) {
  if (d->k < 1 || d->k > 32 || d->stride < 1 || d->pad < 0 || d->cin < 1 || d->cout < 1)
    return -1;
  p->vw = d->vw ? d->vw : KG_VW;
  if (p->vw != 8 && p->vw != 16) return -1;
  int s = d->stride, hp = d->h + 2 * d->pad, wp = d->w + 2 * d->pad;
  p->s = s;
  p->oh = (hp - d->k) / s + 1, p->ow = (wp - d->k) / s + 1;
  if (hp < d->k || wp < d->k || p->oh < 1 || p->ow < 1) return -1;
  p->hq = (hp + s - 1) / s, p->wq = (wp + s - 1) / s;
  /* Stride 1: rows share their padding columns. A tap reaches at most pad
   * columns past either edge of the image, and in the flattened plane
   * the columns past the right edge of one row are the left padding of
   * the next; so rows of w + pad (when the output row, w + 2 pad - k + 1,
   * still fits) waste pad columns of computation per row instead of
   * 2 pad (on 14x14 with pad 1: 1 in 15 instead of 2 in 16). */
  if (s == 1 && d->k >= d->pad + 1) p->wq = d->w + d->pad;
  p->pq = (long)p->hq * p->wq;
  /* with 16 lanes, every plane starts on a vector: a tap's shift from a
   * vector is then the tap's alone (sort_by_shift) */
  if (p->vw == 16) p->pq = round_up(p->pq, p->vw);
  p->xcs = (long)s * s * p->pq;
  p->yq = (long)p->oh * p->wq;
  p->ytile = pick_tile(p->yq, p->vw);
  p->yrs = round_up(p->yq, (long)p->vw * p->ytile);
  /* reads of the don't-care tail of the last channel's last tile */
  /* a vector past the last tile (a run's last load), samples on a line */
  p->xlen = round_up((long)d->cin * p->xcs + p->yrs + p->vw, 16);
  int sh = (d->k - 1) / s;
  p->marg = round_up((long)sh * p->wq + sh, p->vw);
  p->dxtile = pick_tile(p->pq, p->vw);
  p->dxrs = round_up(p->pq, (long)p->vw * p->dxtile);
  p->dycs = p->marg + (p->dxrs > p->yrs ? p->dxrs : p->yrs);
  p->dylen = (long)d->cout * p->dycs + p->vw; /* and a vector past the last tile */
  p->dxlen = (long)d->cin * s * s * p->dxrs;
  if (p->xlen >= INT32_MAX || p->dylen >= INT32_MAX || p->dxlen >= INT32_MAX ||
      (int64_t)d->cout * d->cin * d->k * d->k >= INT32_MAX)
    return -1;
  return 0;
}

/* Offset of tap (ky, kx) of channel ci in xp, for output position 0. */
static int64_t tap_xoff(const cg_conv_plan *p, int ci, int ky, int kx) {
  int s = p->s;
  return (int64_t)ci * p->xcs + (int64_t)((ky % s) * s + kx % s) * p->pq +
         (int64_t)(ky / s) * p->wq + kx / s;
}

/* Per output channel, its active live taps: (offset into xp, weight
 * index). */
static int conv_fwd_tab(etab *t, const cg_conv_desc *d, const cg_conv_plan *p) {
  int K = d->k, KK = K * K;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, KK, KG_BY_OUTPUT)) return -1;
  if (etab_init(t, d->cout, pat.nnz)) return kg_pattern_free(&pat), -1;
  for (int co = 0; co < d->cout; co++) {
    t->start[co] = (int32_t)t->n;
    for (int32_t j = pat.start[co]; j < pat.start[co + 1]; j++) {
      int wi = pat.idx[j], ci = wi / KK % d->cin, k = wi % KK;
      if (tap_live(d, p, k / K, k % K) && etab_add(t, tap_xoff(p, ci, k / K, k % K), wi))
        return kg_pattern_free(&pat), -1;
    }
  }
  t->start[d->cout] = (int32_t)t->n;
  kg_pattern_free(&pat);
  return 0;
}

/* The plan p of d, the forward's table t (per output channel) with its
 * runs r (split_all), and its row block (row_block): what the forward,
 * the weight gradient and cg_sparse_conv_row_block start from. -1 for a
 * shape the generators cannot handle or out of memory, nothing left to
 * free. */
static int fwd_tables(const cg_conv_desc *d, cg_conv_plan *p, etab *t, rtab r[NRT]) {
  *t = (etab){0};
  if (cg_conv_plan_init(p, d)) return -1;
  if (conv_fwd_tab(t, d, p) || split_all(t, run_len(d, p), r)) return etab_free(t), -1;
  return row_block(t, r, p->vw);
}

int cg_sparse_conv_row_block(const cg_conv_desc *d) {
  cg_conv_plan p;
  etab t;
  rtab r[NRT];
  int rb = fwd_tables(d, &p, &t, r);
  if (rb > 0) etab_free(&t), rtabs_free(r);
  return rb;
}

/* ---- the unrolled forward ------------------------------------------------ */

/* Output channels a block of the unrolled forward keeps in registers (one
 * vector each), the FMAs a chunk of its straight-line code takes, and the
 * most active weights a layer may have for it (its code grows with them:
 * LLVM builds it at about 50 us a weight on the Intel VM). Measured on the
 * batch norm template's twin (bench/README.md): blocks of 12 to 24 alike,
 * 28 and 32 slower (spills); chunks of 128 to 512 alike. */
enum { UNROLL_ROWS = 16, UNROLL_CHUNK = 256, UNROLL_MAX = 1 << 15 };

typedef struct uent {
  int32_t off, row, wi; /* source offset, row in its block, weight index */
} uent;

static int uent_cmp(const void *a, const void *b) {
  const uent *x = a, *y = b;
  if (x->off != y->off) return x->off < y->off ? -1 : 1;
  return (x->row > y->row) - (x->row < y->row);
}

/* The rows' bias, by constant row: the bias pointer, or where it is NULL
 * an array of rows zeros, chosen once a kernel (bias_of makes a table and
 * a select for each row it is asked). */
static LLVMValueRef rbias_of(kg_kit *g, LLVMValueRef bias, int rows) {
  char nm[256];
  snprintf(nm, sizeof nm, "%s_bzero", g->name);
  LLVMTypeRef at = LLVMArrayType(g->f32, (unsigned)rows);
  LLVMValueRef zero = LLVMAddGlobal(g->m, at, nm);
  LLVMSetInitializer(zero, LLVMConstNull(at));
  LLVMSetGlobalConstant(zero, 1);
  LLVMSetLinkage(zero, LLVMPrivateLinkage);
  LLVMValueRef z = LLVMBuildBitCast(g->b, zero, g->fp, "");
  return LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntNE, bias, LLVMConstNull(g->fp), ""),
                         bias, z, "");
}

/* The weights' pointer through an empty asm with side effects, once an
 * iteration of a plane's loop: the weights' loads then stay in the loop,
 * folded into their FMAs as broadcasts, where LICM would hoist all of
 * them out of it and spill the broadcast vectors to the stack. */
static LLVMValueRef laundered(kg_kit *g, LLVMValueRef w) {
  LLVMTypeRef ft = LLVMFunctionType(g->fp, &g->fp, 1, 0);
  LLVMValueRef asm_ = LLVMGetInlineAsm(ft, "", 0, "=r,0", 4, 1, 0, LLVMInlineAsmDialectATT, 0);
  return LLVMBuildCall2(g->b, ft, asm_, &w, 1, "");
}

/* One chunk of the block of rows c0 .. c0 + rows - 1 (entries e[0 .. n -
 * 1], sorted by offset, weights from packed index k on): a loop over the
 * plane's vectors whose body sums the chunk's entries into the block's
 * rows' accumulators, one vector a row, starting from the rows' bias
 * (NULL: 0) in the block's first chunk and from the sums the chunk
 * before stored in the others, and storing them at the end (through the
 * ReLU with relu, in the last). Each whole vector of the source is
 * loaded once a chunk; an entry's span, made from two of them (one
 * shuffle, shifted), feeds the FMAs of every row of the block that has
 * that tap. */
static void gen_unrolled_chunk(kg_kit *g, const uent *e, long n, long k, int rows, long len,
                               long dstride, int relu, LLVMValueRef ss, LLVMValueRef ds,
                               LLVMValueRef w, int first, LLVMValueRef bias, int c0) {
  const int vw = g->vw;
  kg_loop lv;
  kg_loop_open(g, &lv, kg_c64(g, 0), kg_c64(g, len), vw);
  LLVMValueRef wl = laundered(g, w), acc[UNROLL_ROWS], at[UNROLL_ROWS];
  /* the bias through a laundered pointer too: hoisted, every row's
   * broadcast of every block would live across the whole kernel */
  LLVMValueRef bl = first && bias ? laundered(g, bias) : NULL;
  for (int q = 0; q < rows; q++) {
    at[q] = kg_add(g, kg_c64(g, q * dstride), lv.iv);
    acc[q] = !first ? ldv(g, ds, at[q])
             : bl   ? splat(g, kg_ldf(g, bl, kg_c64(g, c0 + q)))
                    : LLVMConstNull(g->vec);
  }
  int32_t lo_at = -1, hi_at = -1; /* the last two whole vectors loaded */
  LLVMValueRef lo_v = NULL, hi_v = NULL;
  for (long i = 0; i < n;) {
    int32_t off = e[i].off, c = off % vw, base = off - c;
    LLVMValueRef a = base == lo_at ? lo_v
                     : base == hi_at ? hi_v
                                     : ldv(g, ss, kg_add(g, lv.iv, kg_c64(g, base)));
    LLVMValueRef b = !c ? NULL
                     : base + vw == hi_at ? hi_v
                                          : ldv(g, ss, kg_add(g, lv.iv, kg_c64(g, base + vw)));
    lo_at = base, lo_v = a;
    if (b) hi_at = base + vw, hi_v = b;
    LLVMValueRef x = c ? shifted(g, a, b, c) : a;
    for (; i < n && e[i].off == off; i++, k++)
      acc[e[i].row] = fma3(g, splat(g, kg_ldf(g, wl, kg_c64(g, k))), x, acc[e[i].row]);
  }
  for (int q = 0; q < rows; q++) {
    LLVMValueRef a = acc[q];
    if (relu) { /* a > 0 ? a : 0, as rt_relu */
      LLVMValueRef z = LLVMConstNull(g->vec);
      a = LLVMBuildSelect(g->b, LLVMBuildFCmp(g->b, LLVMRealOGT, a, z, ""), a, z, "");
    }
    stv(g, a, ds, at[q]);
  }
  kg_loop_close(g, &lv);
}

/* The unrolled forward (cg_sparse_conv_fwd and _fwd_into, which read the
 * same packed weights, at 16 lanes, stride 1, no row blocks, up to
 * UNROLL_MAX weights; rows rlen floats apart, or out->stride with out,
 * through the ReLU with out->relu; the first len floats of each, rounded
 * up to a vector, where the gather's tiles write all of rlen): output
 * channels in blocks of UNROLL_ROWS; per sample and block, the block's
 * entries (all its rows', by source offset) in chunks of about
 * UNROLL_CHUNK FMAs of straight-line code (gen_unrolled_chunk). Where the
 * gather takes one shifted span (a shuffle or a split load) for every
 * FMA, here a span feeds every row of the block with that tap: at 21%
 * about 3.4 FMAs. The packed weights come in the code's order (ord).
 * Every row's bias counts (no bias mask). */
static void gen_unrolled(kg_kit *g, const etab *t, long rlen, long len, span sp, LLVMValueRef src,
                         LLVMValueRef w, LLVMValueRef dst, LLVMValueRef bias, cg_order *ord,
                         const gdst *out) {
  const long dstride = out ? out->stride : rlen;
  uent *e = malloc(((size_t)t->n + 1) * sizeof *e);
  if (ord) ord->n = t->n, ord->idx = malloc(((size_t)t->n + 1) * sizeof *ord->idx);
  if (!e || (ord && !ord->idx)) {
    free(e);
    kg_fail(g, "out of memory");
    return;
  }
  LLVMValueRef rb = bias ? rbias_of(g, bias, t->rows) : NULL;
  kg_loop ls;
  kg_loop_open(g, &ls, kg_c64(g, 0), sp.count, 1);
  LLVMValueRef ss = kg_at(g, src, kg_mul(g, ls.iv, sp.sstride));
  LLVMValueRef ds = kg_at(g, dst, kg_mul(g, ls.iv, sp.dstride));
  long k = 0;
  for (int c0 = 0; c0 < t->rows; c0 += UNROLL_ROWS) {
    int rows = t->rows - c0 < UNROLL_ROWS ? t->rows - c0 : UNROLL_ROWS;
    long n = 0;
    for (int r = c0; r < c0 + rows; r++)
      for (int32_t j = t->start[r]; j < t->start[r + 1]; j++)
        e[n++] = (uent){t->pair[2 * j], r - c0, t->pair[2 * j + 1]};
    qsort(e, (size_t)n, sizeof *e, uent_cmp);
    LLVMValueRef bd = kg_at(g, ds, kg_c64(g, (long)c0 * dstride));
    long i0 = 0;
    do { /* whole offsets a chunk; a block without entries stores its bias */
      long i1 = i0;
      while (i1 < n && i1 - i0 < UNROLL_CHUNK)
        for (int32_t off = e[i1].off; i1 < n && e[i1].off == off;) i1++;
      gen_unrolled_chunk(g, e + i0, i1 - i0, k + i0, rows, round_up(len, g->vw), dstride,
                         out && out->relu && i1 == n, ss, bd, w, i0 == 0, rb, c0);
      for (long i = i0; ord && i < i1; i++) ord->idx[k + i] = e[i].wi;
      i0 = i1;
    } while (i0 < n);
    k += n;
  }
  kg_loop_close(g, &ls);
  free(e);
}

/* Whether d's forward, of plan p and of `active` live entries, is
 * unrolled: 16 lanes, stride 1, no bias mask, no more than UNROLL_MAX
 * (its caller has checked that the layer has no row blocks). */
static int unrolls(const cg_conv_desc *d, const cg_conv_plan *p, long active) {
  return p->vw == 16 && p->s == 1 && !d->no_unroll && !d->bm && active <= UNROLL_MAX;
}

/* The unrolled forward's kernel of d (plan p): its table whole, every
 * entry one by one (no runs). */
static int conv_fwd_unrolled(LLVMModuleRef m, const cg_conv_desc *d, const cg_conv_plan *p,
                             const char *name, cg_order *ord, const gdst *out) {
  etab t;
  if (conv_fwd_tab(&t, d, p)) return -1;
  kg_kit G, *g = &G;
  gen_begin(g, m, name, p->vw);
  span sp = {g->n, g->a_ns, g->b_ns};
  gen_unrolled(g, &t, p->yrs, p->yq, sp, g->pa, g->pb, g->pd, g->pc, ord, out);
  etab_free(&t);
  return kg_end(g);
}

static int conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name, cg_order *ord,
                    const gdst *out) {
  cg_conv_plan p;
  etab t;
  rtab r[NRT];
  int rb = fwd_tables(d, &p, &t, r);
  if (rb < 0) return -1;
  /* a full layer keeps its row blocks: at 100% (bench/fmnist_dense.ilnas)
   * the unrolled forward was no faster */
  if (rb == 1 && unrolls(d, &p, t.n + rtabs_weights(r))) {
    etab_free(&t), rtabs_free(r);
    return conv_fwd_unrolled(m, d, &p, name, ord, out);
  }
  if ((p.vw == 16 && sort_by_shift(&t, p.vw)) || take_order(&t, r, rb, ord))
    return etab_free(&t), rtabs_free(r), -1;
  kg_kit G, *g = &G;
  gen_begin(g, m, name, p.vw);
  span sp = {g->n, g->a_ns, g->b_ns};
  gen_gather(g, &t, r, rb, p.ytile, p.yrs, sp, g->pa, g->pb, g->pd, g->pc, d->bm, 0, NULL,
             p.vw == 16, out);
  etab_free(&t), rtabs_free(r);
  return kg_end(g);
}

int cg_sparse_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                       cg_order *ord) {
  return conv_fwd(m, d, name, ord, NULL);
}

int cg_sparse_conv_fwd_into(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                            long stride) {
  gdst out = {stride, 1};
  return conv_fwd(m, d, name, NULL, &out);
}

/* The plan p of d and the data gradient's table t: per phase plane of
 * each input channel (row ci*s*s + phase), the taps of that phase,
 * dxp[row][q] += w * dyq[co][q - shift]; *nnz (may be NULL) the
 * pattern's active weights, live or not. -1 for a shape the generators
 * cannot handle or out of memory, nothing left to free. */
static int bwd_data_tab(const cg_conv_desc *d, cg_conv_plan *p, etab *t, long *nnz) {
  *t = (etab){0};
  if (cg_conv_plan_init(p, d)) return -1;
  int K = d->k, KK = K * K, s = p->s, ss = s * s;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->cout, d->cin, KK, KG_BY_INPUT)) return -1;
  if (etab_init(t, d->cin * ss, pat.nnz)) return etab_free(t), kg_pattern_free(&pat), -1;
  for (int ci = 0; ci < d->cin; ci++)
    for (int ph = 0; ph < ss; ph++) {
      t->start[ci * ss + ph] = (int32_t)t->n;
      for (int32_t j = pat.start[ci]; j < pat.start[ci + 1]; j++) {
        int wi = pat.idx[j], co = wi / (d->cin * KK), ky = wi % KK / K, kx = wi % K;
        if ((ky % s) * s + kx % s != ph || !tap_live(d, p, ky, kx)) continue;
        int64_t off = (int64_t)co * p->dycs + p->marg - ((int64_t)(ky / s) * p->wq + kx / s);
        if (etab_add(t, off, wi)) return etab_free(t), kg_pattern_free(&pat), -1;
      }
    }
  t->start[d->cin * ss] = (int32_t)t->n;
  if (nnz) *nnz = (long)pat.nnz;
  kg_pattern_free(&pat);
  return 0;
}

int cg_sparse_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                            cg_order *ord) {
  cg_conv_plan p;
  etab t;
  if (bwd_data_tab(d, &p, &t, NULL)) return -1;
  rtab r[NRT];
  if (split_all(&t, run_len(d, &p), r)) return etab_free(&t), -1;
  if (p.vw == 16 && sort_by_shift(&t, p.vw)) return etab_free(&t), rtabs_free(r), -1;
  int rb = row_block(&t, r, p.vw);
  if (take_order(&t, r, rb, ord)) return etab_free(&t), rtabs_free(r), -1;
  kg_kit G, *g = &G;
  gen_begin(g, m, name, p.vw);
  span sp = {g->n, g->a_ns, g->b_ns};
  gen_gather(g, &t, r, rb, p.dxtile, p.dxrs, sp, g->pa, g->pb, g->pc, NULL, NULL, 0, NULL,
             p.vw == 16, NULL);
  etab_free(&t), rtabs_free(r);
  return kg_end(g);
}

/* gen_fused's tables and buffers. */
typedef struct fuse_nest {
  kg_tab tstart, toff;
  LLVMValueRef fz, ss, ds, xs; /* the entries' sums; the sample's dyq, dxp and xp */
  int rows;
  long rlen, xcs;
} fuse_nest;

/* gen_fused's tiles of T vectors at positions [lo, hi) of every row (hi
 * - lo a multiple of T vectors). */
static void gen_fused_tiles(kg_kit *g, const fuse_nest *f, long lo, long hi, int T,
                            LLVMValueRef acc[MAXT]) {
  const int vw = g->vw;
  LLVMValueRef xv[MAXT];
  kg_loop lt, lr, le;
  kg_loop_open(g, &lt, kg_c64(g, lo), kg_c64(g, hi), (int64_t)vw * T);
  kg_loop_open(g, &lr, kg_c64(g, 0), kg_c64(g, f->rows), 1);
  LLVMValueRef rowbase = kg_mul(g, lr.iv, kg_c64(g, f->rlen));
  LLVMValueRef xbase = kg_add(g, kg_mul(g, lr.iv, kg_c64(g, f->xcs)), lt.iv);
  for (int v = 0; v < T; v++) {
    LLVMBuildStore(g->b, LLVMConstNull(g->vec), acc[v]);
    xv[v] = ldv(g, f->xs, kg_add(g, xbase, kg_c64(g, v * vw)));
  }
  kg_row_loop(g, &le, f->tstart, lr.iv, 1);
  LLVMValueRef off = kg_add(g, kg_tab_get(g, f->toff, le.iv), lt.iv);
  LLVMValueRef wv = splat(g, kg_ldf(g, g->pb, le.iv));
  LLVMValueRef zo = kg_mul(g, le.iv, kg_c64(g, vw));
  LLVMValueRef z = ldv(g, f->fz, zo);
  for (int v = 0; v < T; v++) {
    LLVMValueRef d = ldv(g, f->ss, kg_add(g, off, kg_c64(g, v * vw)));
    LLVMBuildStore(g->b, fma3(g, wv, d, LLVMBuildLoad2(g->b, g->vec, acc[v], "")), acc[v]);
    z = fma3(g, d, xv[v], z);
  }
  stv(g, z, f->fz, zo);
  kg_loop_close(g, &le);
  for (int v = 0; v < T; v++)
    stv(g, LLVMBuildLoad2(g->b, g->vec, acc[v], ""), f->ds,
        kg_add(g, kg_add(g, rowbase, lt.iv), kg_c64(g, v * vw)));
  kg_loop_close(g, &lr);
  kg_loop_close(g, &lt);
}

/* The data and weight gradients in one pass (cg_sparse_conv_bwd_fused):
 * gen_gather's loop nest over dx's rows (one per input channel) with one
 * register tile of T vectors, and beside the tile the same positions of
 * the input channel's packed plane x; each entry's output-gradient
 * vectors, loaded once, feed the tile's FMAs and that entry's weight
 * gradient, sum(dy[off + q] * x[q]) over the positions q, added into a
 * vector of lanes an entry (fz) that the caller clears and sums. The
 * positions are [lo, hi) of each row (dx_span), rows rlen apart. */
static void gen_fused(kg_kit *g, const etab *t, int T, long lo, long hi, long rlen, long xcs,
                      long xslot, long nent) {
  const int vw = g->vw;
  const long npad = round_up(nent, 16);
  int32_t *offs = NULL, *bstart = block_tab(t->start, t->pair, 2, t->rows, 1, &offs);
  if (!bstart) {
    kg_fail(g, "out of memory");
    return;
  }
  fuse_nest f = {kg_table(g, "start", bstart, (size_t)t->rows + 1, 4),
                 kg_table(g, "off", offs, (size_t)bstart[t->rows], 4), NULL, NULL, NULL, NULL,
                 t->rows, rlen, xcs};
  free(bstart), free(offs);
  f.fz = g->pd;
  LLVMValueRef xp = kg_at(g, f.fz, kg_c64(g, npad * vw));
  kg_loop ls;
  LLVMValueRef acc[MAXT];
  for (int v = 0; v < T; v++) acc[v] = kg_local(g, g->vec, "acc");
  kg_loop_open(g, &ls, kg_c64(g, 0), g->n, 1);
  f.ss = kg_at(g, g->pa, kg_mul(g, ls.iv, g->a_ns));
  f.ds = kg_at(g, g->pc, kg_mul(g, ls.iv, g->b_ns));
  f.xs = kg_at(g, xp, kg_mul(g, ls.iv, kg_c64(g, xslot)));
  /* whole tiles of T vectors, then the rest of the span as one tile */
  long nv = (hi - lo) / vw, whole = lo + nv / T * T * vw;
  gen_fused_tiles(g, &f, lo, whole, T, acc);
  if (whole < hi) gen_fused_tiles(g, &f, whole, hi, (int)(nv % T), acc);
  kg_loop_close(g, &ls);
}

/* The fused backward's tile: a row's vectors [lo, hi) (dx_span) in the
 * fewest tiles of at most 12 (6 at 8 lanes), as even as they come (the
 * last tile of a row takes what is left): the tile, the input's vectors
 * beside it, an entry's sum, its weight and its output-gradient vector
 * fit AVX-512's 32 registers (AVX2's 16). Measured on the Fashion-MNIST sample
 * (2026-12-04, --profile, three rounds): as fast as the largest tile
 * under the bound that divides a row (conv1.1's rows of 55 vectors by 11
 * both ways, 14x14's of 15 by 8 and 7 against by 5); where no divisor
 * is near the bound, far faster (`LANES=8 build/layer_bench conv 32 32
 * 32`, rows of 143 vectors: by 6 and 5, 0.0164-0.0181 s at 25% against
 * 0.0266-0.0296 by 1). Tiles of up to 6 vectors took conv1.1's rows by
 * 5 and the sample's step 12.5-12.8 ms, against 12.4-12.6 by 11; 15
 * vectors 12.4-12.5; 3, 13.8. Those were whole rows; on the spans
 * (2026-12-05, the twin, bench/README.md) tiles of up to 14 spill, and
 * up to 9, 8 or 7 run as 12. */
static int fused_tile(const cg_conv_plan *p, long lo, long hi) {
  long nv = (hi - lo) / p->vw, most = p->vw == 16 ? 12 : 6, tiles = (nv + most - 1) / most;
  return (int)((nv + tiles - 1) / tiles);
}

/* The vectors [*lo, *hi) of a stride-1 plane of dxp that hold the image
 * (rows pad .. pad + h - 1, their columns pad .. pad + w - 1): the only
 * ones its readers take (the runtime's add_dx and the producer's packed
 * output gradient). The fused backward makes no others: on 14x14 with
 * pad 1, 14 of the plane's 15 vectors; 52 of 55 on 28x28. The weight
 * gradient loses nothing: the input is zero past them. */
static void dx_span(const cg_conv_desc *d, const cg_conv_plan *p, long *lo, long *hi) {
  long first = (long)d->pad * p->wq + d->pad;
  long end = (long)(d->pad + d->h - 1) * p->wq + d->pad + d->w;
  *lo = first / p->vw * p->vw;
  *hi = round_up(end, p->vw);
  if (*hi > p->dxrs) *hi = p->dxrs;
}

long cg_conv_fused_xslot(const cg_conv_plan *p) {
  long need = (long)(p->dxlen / p->dxrs - 1) * p->xcs + p->dxrs;
  return round_up(need > p->xlen ? need : p->xlen, 16);
}

/* Full layers keep their row blocks (16 lanes): at 100%
 * (bench/fmnist_dense.ilnas, 2026-12-04, --profile, two rounds) the
 * fused nest took 45.4-45.7 ms a step against 34.6-34.9 for the row
 * blocks' two kernels. At 8 lanes, where no layer has row blocks, the
 * fused nest beats the two kernels at every density
 * (`LANES=8 build/layer_bench conv 32 28 32`, the Intel VM, 2 threads,
 * two rounds: 10% 0.0064-0.0065 s against 0.0075-0.0076, 25%
 * 0.0127-0.0131 against 0.0152-0.0156, 100% 0.0394-0.0403 against
 * 0.0454-0.0472; 64->64 at 14x14 likewise, 10-15%). */
int cg_sparse_conv_fusable(const cg_conv_desc *d, int row_block) {
  cg_conv_plan p;
  return row_block == 1 && !cg_conv_plan_init(&p, d) && p.s == 1;
}

int cg_sparse_conv_bwd_fused(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                             const char *fused, cg_order *ord) {
  cg_conv_plan p;
  etab t;
  long nnz; /* the gradients' slots: every active weight's, live or not */
  if (d->stride != 1 || bwd_data_tab(d, &p, &t, &nnz)) return -1;
  if (take_order(&t, NULL, 1, ord)) return etab_free(&t), -1;
  kg_kit G, *g = &G;
  gen_begin(g, m, name, p.vw);
  span sp = {g->n, g->a_ns, g->b_ns};
  gen_gather(g, &t, NULL, 1, p.dxtile, p.dxrs, sp, g->pa, g->pb, g->pc, NULL, NULL, 0, NULL, 0,
             NULL);
  int rc = kg_end(g);
  if (!rc) {
    long lo, hi;
    dx_span(d, &p, &lo, &hi);
    gen_begin(g, m, fused, p.vw);
    gen_fused(g, &t, fused_tile(&p, lo, hi), lo, hi, p.dxrs, p.xcs, cg_conv_fused_xslot(&p), nnz);
    rc = kg_end(g);
  }
  etab_free(&t);
  return rc;
}

int cg_sparse_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name) {
  cg_conv_plan p;
  etab t;
  rtab r[NRT];
  /* Grouped by output channel, a group sharing its dy plane; by blocks
   * of 4 where the forward's rows come in blocks. */
  int rb = fwd_tables(d, &p, &t, r);
  if (rb < 0) return -1;
  if (rb * run_len(d, &p) > BG_MAX) rb = 1;
  /* the groups of each run table, then of the single entries */
  int32_t *bg[NRT + 1] = {NULL};
  long nb[NRT + 1] = {0};
  int K[NRT + 1] = {0}, U[NRT + 1] = {0}, bad = 0;
  for (int i = 0; i <= NRT; i++) {
    if (i < NRT && r[i].n == 0) continue;
    K[i] = i < NRT ? r[i].K : 1;
    /* accumulators: 8 for one row (add_sums' eight), 16 for a block
     * (AVX-512's 32 registers), or one run's */
    int na = rb > 1 ? 16 : GROUP;
    U[i] = na / (rb * K[i]) > 1 ? na / (rb * K[i]) : 1;
    nb[i] = i < NRT ? make_block_groups(r[i].start, r[i].off, 1, r[i].w, K[i], K[i], d->cout, rb,
                                        U[i], p.dycs, p.marg, &bg[i])
                    : make_block_groups(t.start, t.pair, 2, t.pair + 1, 2, 1, d->cout, rb, U[i],
                                        p.dycs, p.marg, &bg[i]);
    bad |= nb[i] < 0;
  }
  etab_free(&t), rtabs_free(r);
  kg_kit G, *g = &G;
  if (!bad) {
    gen_begin(g, m, name, p.vw);
    span sp = {g->n, g->a_ns, g->b_ns};
    for (int i = 0; i <= NRT; i++)
      if (nb[i] > 0)
        gen_block_groups(g, bg[i], nb[i], rb, U[i], K[i], p.yrs, p.dycs, sp, g->pa, g->pb, g->pc);
  }
  for (int i = 0; i <= NRT; i++) free(bg[i]);
  return bad ? -1 : kg_end(g);
}

/* ---- linear --------------------------------------------------------- */

/* Bytes of the source per slice of the sliced forward: a slice (32 KB,
 * LIN_SLICE_BYTES / 4 / NB features) stays in L1 while every output row
 * reads it. Measured on 3136->512 at 10%: 16 KB slices cost 15% more, in
 * accumulator loads and stores per row and slice. */
enum { LIN_SLICE_BYTES = 32768 };

/* The desc's block of lanes: 64 or 32 (the register tile is NB / 8
 * vectors). */
static int lanes(const cg_linear_desc *d) {
  return d->lanes == CG_LIN_NB_HALF ? CG_LIN_NB_HALF : CG_LIN_NB;
}

static int lin_vw(const cg_linear_desc *d) { return d->vw ? d->vw : KG_VW; }

static int slice_len(int NB) { return LIN_SLICE_BYTES / (4 * NB); }

/* The forward's table: per output its active inputs, as entries (input *
 * NB, weight index). With slices > 1, rows are (slice, output) pairs,
 * slice-major, each with the entries whose input lies in the slice, and
 * within a slice the outputs come by ascending count (*rid: the output of
 * each row; in order when unsliced): runs of equal trip counts, so that the entry loop's exit is
 * predicted (8% of the kernel's time on 3136->512 at 10%). */
static int lin_tab(etab *t, const cg_linear_desc *d, int slices, int32_t **rid) {
  int NB = lanes(d), SL = slices > 1 ? slice_len(NB) : d->in;
  *rid = NULL;
  if ((int64_t)d->in * NB >= INT32_MAX) return -1;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->out, d->in, 1, KG_BY_OUTPUT)) return -1;
  /* Each output's entries in one slice are the next run of its row,
   * [cur[o], end[o]). */
  int32_t *cnt = calloc((size_t)SL + 2, sizeof *cnt), *ord = malloc((size_t)d->out * sizeof *ord);
  int32_t *cur = malloc((size_t)d->out * sizeof *cur), *end = malloc((size_t)d->out * sizeof *end);
  *rid = malloc((size_t)slices * d->out * sizeof **rid);
  int rc = cnt && ord && cur && end && *rid ? etab_init(t, slices * d->out, pat.nnz) : -1;
  if (!rc) memcpy(cur, pat.start, (size_t)d->out * sizeof *cur);
  for (int sl = 0; !rc && sl < slices; sl++) {
    int i1 = (sl + 1) * SL < d->in ? (sl + 1) * SL : d->in;
    /* counting sort of the outputs by their entries in the slice */
    memset(cnt, 0, ((size_t)SL + 2) * sizeof *cnt);
    for (int o = 0; o < d->out; o++) {
      for (end[o] = cur[o]; end[o] < pat.start[o + 1] && pat.idx[end[o]] - (int64_t)o * d->in < i1;) end[o]++;
      ord[o] = end[o] - cur[o], cnt[ord[o] + 1]++;
    }
    for (int c = 0; c <= SL; c++) cnt[c + 1] += cnt[c];
    for (int o = 0; o < d->out; o++) (*rid)[sl * d->out + (slices > 1 ? cnt[ord[o]]++ : o)] = o;
    for (int r = 0; r < d->out; r++) {
      int o = (*rid)[sl * d->out + r];
      t->start[sl * d->out + r] = (int32_t)t->n;
      for (int32_t j = cur[o]; !rc && j < end[o]; j++)
        rc = etab_add(t, (pat.idx[j] - (int64_t)o * d->in) * NB, pat.idx[j]);
    }
    memcpy(cur, end, (size_t)d->out * sizeof *cur);
  }
  if (!rc) t->start[slices * d->out] = (int32_t)t->n;
  free(cnt), free(ord), free(cur), free(end);
  kg_pattern_free(&pat);
  return rc;
}

/* The batch blocks of a call: n / NB of them, each a [features][NB] slab. */
static span lin_span(kg_kit *g, int NB, int sfeat, int dfeat) {
  LLVMValueRef blocks = LLVMBuildSDiv(g->b, g->n, kg_c64(g, NB), "");
  return (span){blocks, kg_c64(g, (int64_t)sfeat * NB), kg_c64(g, (int64_t)dfeat * NB)};
}

int cg_sparse_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name,
                         cg_order *ord) {
  etab t = {0};
  int NB = lanes(d), SL = slice_len(NB);
  int slices = d->in > SL ? (d->in + SL - 1) / SL : 1;
  if (lin_vw(d) != 8 && lin_vw(d) != 16) return -1;
  int32_t *rid;
  if (lin_tab(&t, d, slices, &rid) || take_order(&t, NULL, 1, ord)) return etab_free(&t), free(rid), -1;
  kg_kit G, *g = &G;
  gen_begin(g, m, name, lin_vw(d));
  span sp = lin_span(g, NB, d->in, d->out);
  gen_gather(g, &t, NULL, 1, NB / g->vw, NB, sp, g->pa, g->pb, g->pd, g->pc, d->bm,
             slices > 1 ? d->out : 0, slices > 1 ? rid : NULL, 0, NULL);
  etab_free(&t);
  free(rid);
  return kg_end(g);
}

/* The fused linear backward (see sparse.h). Rows are (slice of outputs,
 * input) pairs, slice-major; a row's entries (its active outputs in the
 * slice) are padded to a multiple of LIN_BWD_U with entries that read the
 * zero row `out` of dyT and carry a zero weight. Per row, the input's
 * block of x (4 vectors) and its dx accumulators stay in registers; an
 * entry loads its output's 4 vectors of dy once and feeds 8 FMAs: 4 into
 * dx (w * dy), 4 into its weight's gradient (x * dy), whose 4 lanes-sums
 * of LIN_BWD_U entries are reduced together and added to dwp. */
enum { LIN_BWD_U = 4, LIN_BWD_SLICE = 512 };

static int lin_bwd_tab(const cg_linear_desc *d, etab *t, int slices) {
  int NB = CG_LIN_BWD_NB;
  if ((int64_t)d->in * d->out >= INT32_MAX / 2 || (int64_t)(d->out + 1) * NB >= INT32_MAX ||
      (int64_t)d->in * NB >= INT32_MAX)
    return -1;
  kg_pattern pat;
  if (kg_pattern_init(&pat, d->wm, d->out, d->in, 1, KG_BY_INPUT)) return -1;
  /* An input's active outputs in one slice are the next run of its row. */
  int32_t *cur = malloc((size_t)d->in * sizeof *cur);
  int rc = cur ? etab_init(t, slices * d->in, pat.nnz + (long)slices * d->in * (LIN_BWD_U - 1)) : -1;
  if (!rc) memcpy(cur, pat.start, (size_t)d->in * sizeof *cur);
  for (int sl = 0; !rc && sl < slices; sl++) {
    int o1 = (sl + 1) * LIN_BWD_SLICE < d->out ? (sl + 1) * LIN_BWD_SLICE : d->out;
    for (int i = 0; !rc && i < d->in; i++) {
      t->start[sl * d->in + i] = (int32_t)t->n;
      for (; !rc && cur[i] < pat.start[i + 1] && pat.idx[cur[i]] / d->in < o1; cur[i]++)
        rc = etab_add(t, (int64_t)(pat.idx[cur[i]] / d->in) * NB, pat.idx[cur[i]]);
      while ((t->n - t->start[sl * d->in + i]) % LIN_BWD_U) {
        assert(t->n < t->cap);
        t->pair[2 * t->n] = (int32_t)((int64_t)d->out * NB), t->pair[2 * t->n + 1] = -1;
        t->n++;
      }
    }
  }
  if (!rc) t->start[slices * d->in] = (int32_t)t->n;
  free(cur);
  kg_pattern_free(&pat);
  return rc;
}

long cg_sparse_linear_bwd_len(const cg_linear_desc *d) {
  long n = 0;
  for (int o0 = 0; o0 < d->out; o0 += LIN_BWD_SLICE)
    for (int i = 0; i < d->in; i++) {
      long c = 0;
      for (int o = o0; o < d->out && o < o0 + LIN_BWD_SLICE; o++) c += active(d->wm, (long)o * d->in + i);
      n += (c + LIN_BWD_U - 1) / LIN_BWD_U * LIN_BWD_U;
    }
  return n;
}

/* Four vectors to the four sums of their lanes, as a <4 x float>. */
static LLVMValueRef sum4(kg_kit *g, LLVMValueRef v[LIN_BWD_U]) {
  static const int lo[2][R8] = {{0, 8, 2, 10, 4, 12, 6, 14}, {0, 1, 8, 9, 4, 5, 12, 13}};
  static const int hi[2][R8] = {{1, 9, 3, 11, 5, 13, 7, 15}, {2, 3, 10, 11, 6, 7, 14, 15}};
  for (int i = 0; i < LIN_BWD_U; i++) v[i] = to8(g, v[i]);
  LLVMValueRef a = LLVMBuildFAdd(g->b, shuf(g, v[0], v[1], lo[0]), shuf(g, v[0], v[1], hi[0]), "");
  LLVMValueRef b = LLVMBuildFAdd(g->b, shuf(g, v[2], v[3], lo[0]), shuf(g, v[2], v[3], hi[0]), "");
  LLVMValueRef c = LLVMBuildFAdd(g->b, shuf(g, a, b, lo[1]), shuf(g, a, b, hi[1]), "");
  LLVMValueRef m[2][4];
  for (int k = 0; k < 4; k++)
    m[0][k] = LLVMConstInt(g->i32, (unsigned)k, 0), m[1][k] = LLVMConstInt(g->i32, (unsigned)k + 4, 0);
  return LLVMBuildFAdd(g->b, LLVMBuildShuffleVector(g->b, c, c, LLVMConstVector(m[0], 4), ""),
                       LLVMBuildShuffleVector(g->b, c, c, LLVMConstVector(m[1], 4), ""), "");
}

int cg_sparse_linear_bwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name,
                         cg_order *ord) {
  enum { NB = CG_LIN_BWD_NB, VMAX = CG_LIN_BWD_NB / KG_VW };
  if (lin_vw(d) != 8 && lin_vw(d) != 16) return -1;
  int slices = d->out > LIN_BWD_SLICE ? (d->out + LIN_BWD_SLICE - 1) / LIN_BWD_SLICE : 1;
  etab t = {0};
  if (lin_bwd_tab(d, &t, slices) || take_order(&t, NULL, 1, ord)) return etab_free(&t), -1;
  /* Offsets as output indices from the row's slice (padding: to the zero
   * row `out`), 16-bit where they fit: half the table's bytes, which
   * every block of a call reads again. */
  int narrow = d->out <= UINT16_MAX;
  int32_t *outs = malloc((size_t)(t.n ? t.n : 1) * sizeof *outs);
  uint16_t *outs16 = malloc((size_t)(t.n ? t.n : 1) * sizeof *outs16);
  if (!outs || !outs16) return free(outs), free(outs16), etab_free(&t), -1;
  for (int r = 0; r < t.rows; r++)
    for (long k = t.start[r]; k < t.start[r + 1]; k++) {
      outs[k] = t.pair[2 * k] / NB - (r / d->in) * LIN_BWD_SLICE;
      outs16[k] = (uint16_t)outs[k];
    }
  kg_kit G, *g = &G;
  gen_begin(g, m, name, lin_vw(d));
  kg_tab tstart = kg_table(g, "start", t.start, (size_t)t.rows + 1, 4);
  kg_tab toff = narrow ? kg_table(g, "out", outs16, (size_t)t.n, 2) : kg_table(g, "out", outs, (size_t)t.n, 4);
  free(outs), free(outs16);
  LLVMValueRef wp = g->pd, dwp = g->pc, dxT = kg_at(g, g->pc, kg_c64(g, t.n));
  LLVMTypeRef v4 = LLVMVectorType(g->f32, 4), v4p = LLVMPointerType(v4, 0);
  const int V = NB / g->vw;
  LLVMValueRef acc[VMAX];
  for (int v = 0; v < V; v++) acc[v] = kg_local(g, g->vec, "acc");
  span sp = lin_span(g, NB, d->in, d->out + 1);
  kg_loop ls, lr, le;
  kg_loop_open(g, &ls, kg_c64(g, 0), sp.count, 1);
  LLVMValueRef xs = kg_at(g, g->pa, kg_mul(g, ls.iv, sp.sstride));
  LLVMValueRef ys = kg_at(g, g->pb, kg_mul(g, ls.iv, sp.dstride));
  LLVMValueRef ds = kg_at(g, dxT, kg_mul(g, ls.iv, sp.sstride));
  if (slices > 1) { /* the rows of later slices add into the first's */
    kg_loop lz;
    kg_loop_open(g, &lz, kg_c64(g, 0), kg_c64(g, (int64_t)d->in * NB), g->vw);
    stv(g, LLVMConstNull(g->vec), ds, lz.iv);
    kg_loop_close(g, &lz);
  }
  kg_loop_open(g, &lr, kg_c64(g, 0), kg_c64(g, t.rows), 1);
  LLVMValueRef row = slices > 1 ? LLVMBuildURem(g->b, lr.iv, kg_c64(g, d->in), "") : lr.iv;
  LLVMValueRef rb = kg_mul(g, row, kg_c64(g, NB)), xv[VMAX];
  LLVMValueRef ybase = slices > 1 ? kg_mul(g, LLVMBuildUDiv(g->b, lr.iv, kg_c64(g, d->in), ""),
                                        kg_c64(g, (int64_t)LIN_BWD_SLICE * NB))
                                  : kg_c64(g, 0);
  for (int v = 0; v < V; v++) {
    LLVMValueRef i = kg_add(g, rb, kg_c64(g, v * g->vw));
    xv[v] = ldv(g, xs, i);
    LLVMBuildStore(g->b, slices > 1 ? ldv(g, ds, i) : LLVMConstNull(g->vec), acc[v]);
  }
  kg_row_loop(g, &le, tstart, lr.iv, LIN_BWD_U);
  LLVMValueRef gs[LIN_BWD_U];
  for (int u = 0; u < LIN_BWD_U; u++) {
    LLVMValueRef e = kg_add(g, le.iv, kg_c64(g, u));
    LLVMValueRef off = kg_add(g, ybase, kg_mul(g, kg_tab_get(g, toff, e), kg_c64(g, NB)));
    LLVMValueRef w = splat(g, kg_ldf(g, wp, e)), dot = NULL;
    for (int v = 0; v < V; v++) {
      LLVMValueRef dy = ldv(g, ys, kg_add(g, off, kg_c64(g, v * g->vw)));
      LLVMBuildStore(g->b, fma3(g, w, dy, LLVMBuildLoad2(g->b, g->vec, acc[v], "")), acc[v]);
      dot = dot ? fma3(g, xv[v], dy, dot) : LLVMBuildFMul(g->b, xv[v], dy, "");
    }
    gs[u] = dot;
  }
  LLVMValueRef p = LLVMBuildBitCast(g->b, kg_at(g, dwp, le.iv), v4p, "");
  LLVMValueRef old = LLVMBuildLoad2(g->b, v4, p, "");
  LLVMSetAlignment(old, 4);
  LLVMSetAlignment(LLVMBuildStore(g->b, LLVMBuildFAdd(g->b, old, sum4(g, gs), ""), p), 4);
  kg_loop_close(g, &le);
  for (int v = 0; v < V; v++)
    stv(g, LLVMBuildLoad2(g->b, g->vec, acc[v], ""), ds, kg_add(g, rb, kg_c64(g, v * g->vw)));
  kg_loop_close(g, &lr);
  kg_loop_close(g, &ls);
  etab_free(&t);
  return kg_end(g);
}
