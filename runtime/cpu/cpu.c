/* cpu.c: the CPU backend. Every conv and linear layer gets kernels
 * generated for its shapes and α pattern (kgen/sparse.h), optimised at
 * O3 for the host CPU and compiled in-process by an ORC LLJIT owned by the
 * backend. Compiled layers are cached by (op, shapes, pattern): prepare()
 * hashes the masks, and only a pattern not seen before is compiled. An
 * entry no layer uses any more is removed from the JIT, so memory stays
 * bounded over a long growing run.
 *
 * Layers above a measured density run dense on OpenBLAS instead (the
 * masked weights are exactly zero, so forward and backward-data are exact;
 * masked weight gradients are zeroed after): a register-blocked GEMM beats
 * any sparse kernel once enough weights exist (see RT_CPU_DENSE_*).
 *
 * The sparse kernels work on packed layouts (kgen/sparse.h): the
 * wrappers here pack conv samples into padded phase planes and linear
 * batches into feature-major blocks, in per-thread scratch slots
 * (O(n * features), small next to the O(n * active weights) of the
 * kernels). Bias gradients are summed here, in double like the reference. */
#include "runtime/cpu/cpu.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cblas.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/ExecutionEngine.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Object.h>
#include <llvm-c/Orc.h>
#include <llvm-c/OrcEE.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "kgen/sparse.h"
#include "runtime/elem.h"

typedef void (*rt_kern)(float *, float *, float *, float *, int64_t, int64_t, int64_t);

typedef struct rt_cpu_entry {
  uint64_t hash;
  int kind;                   /* IR_CONV or IR_LINEAR */
  int shape[7];               /* cin, h, w, cout, k, stride, pad */
  uint8_t *wm, *bm;           /* the pattern compiled (copies) */
  size_t nw, nb;
  size_t active;              /* active weights in wm */
  int lanes;                  /* linear: the kernels' block of samples */
  int vw;                     /* lanes of the kernels' vectors */
  int no_unroll;              /* the conv forward's gather, never unrolled */
  /* How fwd (0) and bwd_data (1; for linear the fused bwd) read w
   * packed: the j-th active weight (ascending index act[j]) goes to
   * wp[pos[dir][j]]; the fused bwd's npad padding slots pad[] hold 0 */
  int32_t *act, *pos[2], *pad;
  long npad;
  /* linear: where the fused bwd's k-th packed weight sits in the fwd's
   * packing (active: the zero slot, for padding) */
  int32_t *src1;
  long nbwd;                  /* linear: packed weights of the fused bwd */
  cg_conv_plan plan;          /* conv: the packed layouts of its kernels */
  int blocks;                 /* conv: its forward takes rows 4 at a time
                               * (cg_sparse_conv_row_block) */
  int fused;                  /* conv: bwd_data from cg_sparse_conv_bwd_fused,
                               * with the fused backward bwd_fused */
  int compiled;               /* kernels built: only the sparse path needs them */
  int queued;                 /* to be built by the prepare under way */
  int refs;                   /* layers using it, and the holds of a prepare under way */
  LLVMOrcResourceTrackerRef rt; /* its code in the JIT */
  rt_kern fwd, bwd_data, bwd_weight, bwd_fused; /* conv */
  /* conv: a forward into the padded planes of a consumer of the same
   * geometry (cg_sparse_conv_fwd_into, for a remade input: xr_pack),
   * whose planes are into_xcs floats apart; 0: none */
  rt_kern fwd_into;
  long into_xcs;
  rt_kern bwd;                /* linear: fwd, and bwd for both directions */
  struct rt_cpu_entry *next;
} rt_cpu_entry;

/* Density (active / all weights) from which a layer runs dense on
 * OpenBLAS. Measured with bench/layer_bench (bench/README.md): the JIT
 * kernels forced against this backend's dense path, interleaved, best of
 * 8, batch 128, fwd + both backwards, 2 threads.
 *
 * Conv: where the two cross depends on the output plane (the kernels'
 * vectors run along its rows, so a small plane wastes lanes and pays the
 * loop's overhead on few FMAs), on the kernels' vectors and on the lanes
 * of OpenBLAS's own kernels. 2026-12-03, the 2-core VM (AVX-512), 3x3
 * convs, the crossing densities:
 *
 *   plane (channels)     16-lane JIT,        16-lane JIT,        8-lane JIT,
 *                        AVX2 GEMM (Haswell) AVX-512 (SkylakeX)  AVX2 GEMM
 *   28x28 (32)           never (0.62x)       never (0.88x)       100% (1.0x)
 *   16x16, 14x14, 12x12  never (0.80x)       60-70%              ~80%
 *   8x8 (128), 7x7 (64)  95-100%             40-70%              ~55%, ~85%
 *   4x4 (256)            ~35%                ~25%                ~33%
 *
 * ("never": the JIT kernels at 100%, against dense, in brackets; partial
 * layers, before full ones had row blocks: see conv_dense_from. The
 * 8-lane column with the fused backward, 2026-12-04, the Intel VM,
 * `OPENBLAS_CORETYPE=Haswell LANES=8 build/layer_bench conv CIN HW COUT`:
 * 32->32 at 28x28 0.0378-0.0423 s at 100% against 0.0397-0.0426 dense,
 * 0.0221-0.0227 at 50% against 0.0419-0.0429; 64->64 at 14x14 0.0407
 * at 100% against 0.0323; 128->128 at 8x8 0.0406 at 50% against 0.0439,
 * 0.0763 at 100% against 0.0431; 64->64 at 7x7 0.0133 at 100% against
 * 0.0112; 256->256 at 4x4 0.0427 at 25% against 0.0546, 0.0816 at 50%
 * against 0.0549.) Each
 * entry of conv_dense_from is set at or a little below its crossing: near
 * it the two are within noise, and the GEMM's speed does not depend on
 * the pattern. A threshold set by rt_cpu_set_dense_threshold replaces it.
 *
 * Linear 3136->512 (linear_dense_from): where the two cross depends on
 * the lanes of both. 2026-12-05, the AMD Zen 5 VM, 38c3a5a, 2 threads
 * (one thread crosses later): against AVX2 GEMM (Haswell) the 16-lane
 * JIT 0.0048 s at 50% and 0.0058 at 60% against 0.0065 and 0.0064
 * dense, 0.0075 at 70% against 0.0066; the 8-lane JIT 0.0043 at 40% and
 * 0.0071 at 50% against 0.0062 and 0.0069; against AVX-512 GEMM
 * (Cooperlake) the 16-lane JIT 0.0032 at 30% and 0.0050 at 40% against
 * 0.0038 and 0.0039. On the 2-core VM (2026-12-02, 36812d3, 16 lanes,
 * AVX2 GEMM) 0.0092 at 50% against 0.0083. */
#define RT_CPU_DENSE_CONV_AUTO (-1.0)
#define RT_CPU_DENSE_LINEAR_AUTO (-1.0)

/* Conv samples packed per kernel call: two samples' planes (about 0.6 MB
 * for 64 channels at 14x14) stay in L2 while the weight-gradient groups
 * sweep them, and the groups' sums are added to dw once per two samples. */
enum { CONV_SB = 2 };
/* Linear samples transposed per kernel call: two blocks of the entry's
 * lanes, at most LIN_SUB; bounds the scratch by the layer, not the batch. */
enum { LIN_SUB = 2 * CG_LIN_NB };
/* Scratch slots: one per concurrent caller, as many as exec's threads,
 * and three more for each that remakes its input (rt_conv_shape.xr; two
 * for one that takes its producer's gradient, .xg). */
enum { NSLOT = 256 };
/* Every buffer a kernel reads or writes starts on a cache line (16
 * floats, one AVX-512 vector): the scratch is allocated so, and each part
 * carved from it is a whole number of lines. On a line, a kernel's
 * register tiles (conv outputs, linear blocks) load and store without
 * splitting a line; from where the parts fell before (after the packed
 * weights, at any float), the Fashion-MNIST sample's step took 15% more. */
enum { LINE = 16 };
static size_t lines(size_t floats) { return (floats + LINE - 1) / LINE * LINE; }

typedef struct rt_cpu_slot {
  atomic_flag busy;           /* claimed by a running kernel call */
  float *buf;
  size_t cap;                 /* floats */
} rt_cpu_slot;

/* A linear layer's weights packed for both its kernels: kept for as long
 * as the weights keep their values (rt_linear_shape.wgen), the backward
 * of a pass and the passes of an evaluation taking them as they are. The
 * SGD step writes its new weights into the forward's packing (cpu_wcopy),
 * and the next pass makes only the fused backward's from it: while
 * training goes on the dense weights are never read here. */
typedef struct rt_cpu_wpack {
  pthread_mutex_t mu;
  uint64_t gen;               /* the wgen packed and complete; 0: none */
  uint64_t gen0;              /* the wgen the fwd's packing holds; 0: none */
  uint64_t work;              /* the wgen being packed */
  int fill;                   /* that packing reads w into the fwd's first */
  const float *w;             /* packed from */
  const rt_cpu_entry *e;      /* for this pattern */
  float *buf;                 /* fwd's wp_len(e), then the fused bwd's nbwd */
  size_t cap;
  atomic_int next, done;      /* pieces of the packing taken, finished */
} rt_cpu_wpack;

/* The packing is split in pieces that every caller arriving during it
 * takes in turn (the chunks of a pass arrive together). */
enum { WPACK_PIECES = 16 };

typedef struct cpu_backend {
  rt_kernels pub;
  LLVMOrcLLJITRef jit;
  LLVMTargetRef target;       /* the host's, for target machines per thread */
  char *triple, *cpu, *feat;
  rt_cpu_entry *cache;
  rt_cpu_entry **layer;       /* per layer, NULL until prepared */
  rt_cpu_stats st;
  uint8_t *dense;             /* per layer: runs on OpenBLAS */
  rt_cpu_wpack *wpack;        /* per layer */
  double thr_conv, thr_lin;   /* density from which a layer runs dense; < 0:
                                 by the layer (conv_dense_from,
                                 linear_dense_from) */
  int vw;                     /* lanes of the kernels' vectors: 16 with AVX-512 */
  int no_unroll;              /* rt_cpu_set_unroll(b, 0) */
  int wide_gemm;              /* OpenBLAS runs its AVX-512 kernels */
  size_t need;                /* scratch floats of the largest prepared layer */
  rt_cpu_slot slots[NSLOT];
} cpu_backend;

static cpu_backend *C(rt_kernels *b) { return (cpu_backend *)b; }
/* Floats of a packed weight buffer: the active weights and one slot for
 * those no kernel reads (their taps read only padding). */
static size_t wp_len(const rt_cpu_entry *e) { return lines(e->active + 1); }
/* The fused conv backward's buffers (cg_sparse_conv_bwd_fused): dyq and
 * dxp, then its fourth buffer: the gradients' lanes (a vector for each
 * active weight, their count rounded up to a line: fz_len) and the
 * inputs. */
static size_t fz_len(const rt_cpu_entry *e) { return lines(e->active) * (size_t)e->vw; }
static size_t fused_len(const rt_cpu_entry *e) {
  const cg_conv_plan *p = &e->plan;
  return CONV_SB * (size_t)(p->dylen + p->dxlen + cg_conv_fused_xslot(p)) + fz_len(e);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static int cpu_init_failed;

static void cpu_init_llvm(void) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    cpu_init_failed = 1;
}

/* ILNAS_PERF set (to anything but 0 or nothing): every kernel the JIT
 * links is written to a jitdump file (LLVM's perf listener: jit-PID.dump
 * under $JITDUMPDIR, else ~/.debug/jit), code and name, with the time it
 * was linked. `perf record -k 1` then `perf inject --jit` attribute each
 * sample to the kernel that was at its address at that moment (code
 * freed after a growth and its addresses reused included), and `perf
 * report` names the kernels (kernel_names) where it would show bare
 * addresses. */
static int perf_wanted(void) {
  const char *v = getenv("ILNAS_PERF");
  return v && *v && strcmp(v, "0") != 0;
}

/* The JIT's object layer with perf's listener (ctx) registered: the
 * RTDyld layer LLJIT makes on this platform by default. */
static LLVMOrcObjectLayerRef perf_layer(void *ctx, LLVMOrcExecutionSessionRef es,
                                        const char *triple) {
  (void)triple;
  LLVMOrcObjectLayerRef l = LLVMOrcCreateRTDyldObjectLinkingLayerWithSectionMemoryManager(es);
  LLVMOrcRTDyldObjectLinkingLayerRegisterJITEventListener(l, ctx);
  return l;
}

/* Copies an LLVM error into err and consumes it. */
static int llvm_fail(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "cpu backend: %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return -1;
}

/* ---- the cache key ---------------------------------------------------- */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

/* Eight mask bytes per step: hashing a million-weight mask costs well
 * under a millisecond, so calling prepare on unchanged layers is cheap. */
static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    h = mix(h, v);
  }
  uint64_t tail = 0;
  for (; i < n; i++) tail = (tail << 8) | p[i];
  return mix(h, tail ^ (uint64_t)n);
}

/* The masks as 0/1 bytes (a NULL mask is all active), so that equal
 * patterns give equal keys whatever nonzero byte marks "active". */
static uint8_t *norm_mask(const uint8_t *m, size_t n) {
  uint8_t *c = malloc(n ? n : 1);
  if (!c) return NULL;
  for (size_t i = 0; i < n; i++) c[i] = (uint8_t)(!m || m[i]);
  return c;
}

/* Removes the entry's kernels from the JIT, if it has any. */
static void entry_drop_code(cpu_backend *cb, rt_cpu_entry *e) {
  if (e->rt) {
    LLVMErrorRef er = LLVMOrcResourceTrackerRemove(e->rt);
    if (er) LLVMConsumeError(er);
    LLVMOrcReleaseResourceTracker(e->rt);
    cb->st.cached--;
    e->rt = NULL;
  }
  free(e->act), free(e->pos[0]), free(e->pos[1]), free(e->pad), free(e->src1);
  e->act = e->pos[0] = e->pos[1] = e->pad = e->src1 = NULL;
  e->npad = 0;
  e->compiled = 0;
}

static void entry_free(cpu_backend *cb, rt_cpu_entry *e) {
  entry_drop_code(cb, e);
  free(e->wm), free(e->bm), free(e);
}

/* ---- compiling one layer --------------------------------------------- */

/* The kernels of an entry: conv fwd, bwd_data, bwd_weight, for a fused
 * entry bwd_fused, and fwd_into where into_xcs is set; linear fwd and the
 * fused bwd. Each name says the layer's shape (what a profile shows:
 * ilnas_k12_conv32x28x28to32_bwd_weight), after an id unique in the
 * process; a kernel the entry has not is named "". */
enum { NKERN = 5 };
static void kernel_names(const rt_cpu_entry *e, long id, char names[NKERN][64]) {
  static const char *ops[2][NKERN] = {{"fwd", "bwd_data", "bwd_weight", "bwd_fused", "fwd_into"},
                                      {"fwd", "bwd", "", "", ""}};
  int lin = e->kind == IR_LINEAR;
  const int *d = e->shape;
  char shape[40];
  if (lin) snprintf(shape, sizeof shape, "linear%dto%d", d[0], d[3]);
  else snprintf(shape, sizeof shape, "conv%dx%dx%dto%d", d[0], d[1], d[2], d[3]);
  for (int i = 0; i < NKERN; i++) {
    int has = *ops[lin][i] && (i != 3 || e->fused) && (i != 4 || e->into_xcs);
    if (has) snprintf(names[i], 64, "ilnas_k%ld_%s_%s", id, shape, ops[lin][i]);
    else names[i][0] = '\0';
  }
}

/* A host target machine, one per thread that builds kernels: the large
 * code model of a JIT, so that code may sit anywhere from its tables. */
/* Is `name` ("+avx512f") one of LLVM's comma-separated host features? */
static int has_feature(const char *feat, const char *name) {
  size_t n = strlen(name);
  for (const char *p = feat; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0')) return 1;
  return 0;
}

static LLVMTargetMachineRef host_tm(const cpu_backend *cb) {
  return LLVMCreateTargetMachine(cb->target, cb->triple, cb->cpu, cb->feat,
                                 LLVMCodeGenLevelAggressive, LLVMRelocDefault,
                                 LLVMCodeModelJITDefault);
}

/* The optimisation the generated loop nests need: accumulators into
 * registers, invariant loads and addresses out of the loops, redundant
 * index arithmetic folded. The full O3 pipeline made the same kernels
 * (measured on conv and linear layers, within 2%) at eight times the
 * optimisation time; what is left of a build is instruction selection. */
static const char *const PIPELINE =
    "function(sroa,early-cse,instcombine,simplifycfg,loop-mssa(licm),gvn,instcombine)";

/* e->act, e->pos and e->pad from the kernels' read orders. -1 when out
 * of memory. */
static int scatter_plan(rt_cpu_entry *e, const cg_order ord[2]) {
  size_t na = e->active ? e->active : 1;
  int32_t *rank = malloc((e->nw ? e->nw : 1) * sizeof *rank);
  e->act = malloc(na * sizeof *e->act);
  e->pos[0] = malloc(na * sizeof *e->pos[0]), e->pos[1] = malloc(na * sizeof *e->pos[1]);
  long npad = 0;
  for (long k = 0; k < ord[1].n; k++) npad += ord[1].idx[k] < 0;
  e->pad = malloc((size_t)(npad ? npad : 1) * sizeof *e->pad);
  if (!rank || !e->act || !e->pos[0] || !e->pos[1] || !e->pad) {
    free(rank);
    return -1;
  }
  for (long k = 0; k < ord[1].n; k++)
    if (ord[1].idx[k] < 0) e->pad[e->npad++] = (int32_t)k;
  for (size_t i = 0, j = 0; i < e->nw; i++) {
    rank[i] = e->wm[i] ? (int32_t)j : -1;
    if (e->wm[i]) e->act[j++] = (int32_t)i;
  }
  for (int dir = 0; dir < 2; dir++) {
    for (size_t j = 0; j < e->active; j++) e->pos[dir][j] = (int32_t)ord[dir].n;
    for (long k = 0; k < ord[dir].n; k++)
      if (ord[dir].idx[k] >= 0) e->pos[dir][rank[ord[dir].idx[k]]] = (int32_t)k;
  }
  if (e->kind == IR_LINEAR) { /* the forward reads every active weight */
    assert((size_t)ord[0].n == e->active);
    e->src1 = malloc((size_t)(ord[1].n ? ord[1].n : 1) * sizeof *e->src1);
    for (long k = 0; e->src1 && k < ord[1].n; k++)
      e->src1[k] = ord[1].idx[k] < 0 ? (int32_t)e->active : e->pos[0][rank[ord[1].idx[k]]];
  }
  free(rank);
  return e->kind == IR_LINEAR && !e->src1 ? -1 : 0;
}

/* One layer's kernels to a relocatable object in memory: generation,
 * optimisation and code generation in a context of its own, with the
 * caller's target machine, so that builds of different layers run on
 * different threads. Fills e->act and e->pos. */
static int build_object(const rt_cpu_entry *e_, long id, LLVMTargetMachineRef tm,
                        LLVMMemoryBufferRef *obj, double sec[2], char *err, size_t errlen) {
  rt_cpu_entry *e = (rt_cpu_entry *)e_;
  double t0 = now_s();
  LLVMContextRef ctx = LLVMContextCreate();
  char names[NKERN][64];
  kernel_names(e, id, names);
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(names[0], ctx);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  int rc = 0;
  cg_order ord[2] = {{NULL, 0}, {NULL, 0}};
  if (e->kind == IR_CONV) {
    cg_conv_desc d = {e->shape[0], e->shape[1], e->shape[2], e->shape[3],
                      e->shape[4], e->shape[5], e->shape[6], e->wm, e->bm, e->vw,
                      e->no_unroll};
    /* the forwards add every row's bias from the array they are given:
     * their caller masks it (fwd_bias) */
    cg_conv_desc di = d;
    di.bm = NULL;
    rc = cg_sparse_conv_fwd(m, &di, names[0], &ord[0]) ||
         (e->fused ? cg_sparse_conv_bwd_fused(m, &d, names[1], names[3], &ord[1])
                   : cg_sparse_conv_bwd_data(m, &d, names[1], &ord[1])) ||
         cg_sparse_conv_bwd_weight(m, &d, names[2]) ||
         (e->into_xcs && cg_sparse_conv_fwd_into(m, &di, names[4], e->into_xcs));
  } else {
    cg_linear_desc d = {e->shape[0], e->shape[3], e->wm, e->bm, e->lanes, e->vw};
    rc = cg_sparse_linear_fwd(m, &d, names[0], &ord[0]) ||
         cg_sparse_linear_bwd(m, &d, names[1], &ord[1]);
    assert(rc || ord[1].n == e->nbwd);
  }
  if (rc) {
    snprintf(err, errlen, "cpu backend: layer too large to index with 32 bits or bad shape");
  } else if (scatter_plan(e, ord)) {
    snprintf(err, errlen, "cpu backend: out of memory");
    rc = -1;
  }
  cg_order_free(&ord[0]), cg_order_free(&ord[1]);
  char *msg = NULL;
  if (!rc && LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "cpu backend: generated module is invalid: %s", msg);
    rc = -1;
  }
  LLVMDisposeMessage(msg);
  double t1 = now_s();
  sec[0] = t1 - t0;
  LLVMErrorRef er = NULL;
  if (!rc) {
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    er = LLVMRunPasses(m, PIPELINE, tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (er) rc = llvm_fail(er, "optimising", err, errlen);
  }
  if (!rc && LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &msg, obj)) {
    snprintf(err, errlen, "cpu backend: code generation: %s", msg ? msg : "failed");
    LLVMDisposeMessage(msg);
    rc = -1;
  }
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  sec[1] = now_s() - t1;
  return rc;
}

/* Bytes of machine code (the .text sections) in a built object: what the
 * loop nests cost, apart from their tables. 0 when it cannot be read. */
static long text_bytes(LLVMMemoryBufferRef obj) {
  char *msg = NULL;
  LLVMBinaryRef bin = LLVMCreateBinary(obj, NULL, &msg);
  LLVMDisposeMessage(msg);
  if (!bin) return 0;
  long n = 0;
  LLVMSectionIteratorRef it = LLVMObjectFileCopySectionIterator(bin);
  for (; it && !LLVMObjectFileIsSectionIteratorAtEnd(bin, it); LLVMMoveToNextSection(it)) {
    const char *name = LLVMGetSectionName(it);
    if (name && !strncmp(name, ".text", 5)) n += (long)LLVMGetSectionSize(it);
  }
  if (it) LLVMDisposeSectionIterator(it);
  LLVMDisposeBinary(bin);
  return n;
}

/* Adds a built object to the JIT and resolves its kernels. */
static int link_entry(cpu_backend *cb, rt_cpu_entry *e, long id, LLVMMemoryBufferRef obj,
                      char *err, size_t errlen) {
  char names[NKERN][64];
  kernel_names(e, id, names);
  e->rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(cb->jit));
  cb->st.cached++;
  LLVMErrorRef er = LLVMOrcLLJITAddObjectFileWithRT(cb->jit, e->rt, obj);
  if (er) /* the JIT owns the buffer even when adding fails */
    return llvm_fail(er, "adding an object", err, errlen);
  rt_kern *slot[NKERN] = {&e->fwd, &e->bwd_data, &e->bwd_weight, &e->bwd_fused, &e->fwd_into};
  if (e->kind == IR_LINEAR) slot[1] = &e->bwd;
  for (int i = 0; i < NKERN; i++) {
    if (!names[i][0]) continue;
    LLVMOrcExecutorAddress a = 0;
    if ((er = LLVMOrcLLJITLookup(cb->jit, &a, names[i])))
      return llvm_fail(er, "linking", err, errlen);
    /* An executor address is the code's address in this process; the
     * conversion to a function pointer is how the JIT's C API is used. */
    uintptr_t ip = (uintptr_t)a;
    memcpy(slot[i], &ip, sizeof ip);
  }
  e->compiled = 1;
  return 0;
}

/* Builds entries in parallel: each worker takes the next unbuilt one. */
typedef struct build_job {
  cpu_backend *cb;
  rt_cpu_entry **queue;
  long *ids;
  LLVMMemoryBufferRef *objs;
  int *rc;
  double (*sec)[2];           /* per entry: emission, optimisation + codegen */
  char (*err)[256];
  int n;
  atomic_int next;
} build_job;

static void *build_worker(void *arg) {
  build_job *j = arg;
  LLVMTargetMachineRef tm = host_tm(j->cb);
  for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
    j->objs[i] = NULL;
    if (!tm) {
      snprintf(j->err[i], sizeof j->err[i], "cpu backend: cannot create a target machine");
      j->rc[i] = -1;
      continue;
    }
    j->rc[i] = build_object(j->queue[i], j->ids[i], tm, &j->objs[i], j->sec[i], j->err[i],
                            sizeof j->err[i]);
  }
  if (tm) LLVMDisposeTargetMachine(tm);
  return NULL;
}

/* Compiles n entries' kernels on up to cb->pub.threads threads, then links
 * them here. rc[i] is each one's result; err gets the first failure's
 * message. Returns -1 when out of memory. */
static int compile_entries(cpu_backend *cb, rt_cpu_entry **queue, int n, int *rc, char *err,
                           size_t errlen) {
  if (n <= 0) return 0;
  build_job j = {.cb = cb, .queue = queue, .rc = rc, .n = n};
  j.ids = malloc((size_t)n * sizeof *j.ids), j.objs = malloc((size_t)n * sizeof *j.objs);
  j.sec = calloc((size_t)n, sizeof *j.sec), j.err = malloc((size_t)n * sizeof *j.err);
  if (!j.ids || !j.objs || !j.sec || !j.err) {
    free(j.ids), free(j.objs), free(j.sec), free(j.err);
    return -1;
  }
  atomic_init(&j.next, 0);
  static atomic_long serial; /* names kernels uniquely in the process (kernel_names) */
  for (int i = 0; i < n; i++) j.ids[i] = atomic_fetch_add(&serial, 1);
  int T = cb->pub.threads > 1 ? cb->pub.threads : 1;
  if (T > n) T = n;
  if (T > NSLOT) T = NSLOT;
  pthread_t th[NSLOT];
  int started = 1;
  for (int t = 1; t < T; t++, started++)
    if (pthread_create(&th[t], NULL, build_worker, &j)) break; /* fewer is fine */
  build_worker(&j);
  for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
  int reported = 0;
  double t0 = now_s();
  for (int i = 0; i < n; i++) {
    cb->st.emit_s += j.sec[i][0], cb->st.compile_s += j.sec[i][1];
    if (!rc[i]) cb->st.code_bytes += text_bytes(j.objs[i]);
    if (!rc[i]) rc[i] = link_entry(cb, queue[i], j.ids[i], j.objs[i], j.err[i], sizeof j.err[i]);
    else if (j.objs[i]) LLVMDisposeMemoryBuffer(j.objs[i]);
    if (!rc[i]) cb->st.compiles++;
    if (rc[i] && !reported++) snprintf(err, errlen, "%s", j.err[i]);
  }
  cb->st.compile_s += now_s() - t0;
  free(j.ids), free(j.objs), free(j.sec), free(j.err);
  return 0;
}

static void cache_remove(cpu_backend *cb, rt_cpu_entry *e) {
  rt_cpu_entry **p = &cb->cache;
  while (*p != e) p = &(*p)->next;
  *p = e->next;
}

/* The plane stride of the conv that would read a layer of desc d (plan
 * p) as a remade input (rt_conv_shape.xr) with its own kernel size and
 * padding at stride 1, where the layer's forward can write straight into
 * its padded planes (cg_sparse_conv_fwd_into: the same rows, each plane's
 * rows within its stride); 0 where not, or where d is too costly to
 * remake. */
static long into_stride(const cg_conv_desc *d, const cg_conv_plan *p) {
  if (d->stride != 1 || (long)d->cin * d->k * d->k > RT_REMAT_TAPS) return 0;
  cg_conv_desc c = {d->cout, p->oh, p->ow, 1, d->k, 1, d->pad, NULL, NULL, d->vw, 0};
  cg_conv_plan q;
  if (cg_conv_plan_init(&q, &c) || q.s != 1 || q.wq != p->wq || p->yrs > q.xcs) return 0;
  return q.xcs;
}

/* The cache entry of a layer's pattern, made (and cached, not yet built)
 * when new; NULL with a message when out of memory or the shape is bad. */
static rt_cpu_entry *entry_get(cpu_backend *cb, int layer, const uint8_t *wmask,
                               const uint8_t *bmask, char *err, size_t errlen) {
  const ir_layer *l = &cb->pub.g->layers[layer];
  if (l->kind != IR_CONV && l->kind != IR_LINEAR) {
    snprintf(err, errlen, "cpu backend: layer %d (%s) has no weights", layer, l->name);
    return NULL;
  }
  int k = l->kind == IR_CONV ? l->k : 1;
  size_t nw = (size_t)l->cout * (size_t)l->cin * (size_t)k * (size_t)k, nb = (size_t)l->cout;
  int shape[7] = {l->cin, l->h, l->w, l->cout, k, l->kind == IR_CONV ? l->stride : 1,
                  l->kind == IR_CONV ? l->pad : 0};
  uint8_t *wm = norm_mask(wmask, nw), *bm = norm_mask(bmask, nb);
  if (!wm || !bm) {
    free(wm), free(bm);
    snprintf(err, errlen, "cpu backend: out of memory");
    return NULL;
  }
  /* linear blocks of half the lanes when no call has more samples */
  int lanes = l->kind == IR_LINEAR && cb->pub.chunk > 0 && cb->pub.chunk <= CG_LIN_NB_HALF
                  ? CG_LIN_NB_HALF
                  : CG_LIN_NB;
  uint64_t h = mix(0x1234567ull, (uint64_t)l->kind);
  for (int i = 0; i < 7; i++) h = mix(h, (uint64_t)(uint32_t)shape[i]);
  h = mix(mix(mix(h, (uint64_t)lanes), (uint64_t)cb->vw), (uint64_t)cb->no_unroll);
  h = hash_bytes(hash_bytes(h, wm, nw), bm, nb);
  for (rt_cpu_entry *e = cb->cache; e; e = e->next)
    if (e->hash == h && e->kind == (int)l->kind && !memcmp(e->shape, shape, sizeof shape) &&
        e->lanes == lanes && e->vw == cb->vw && e->no_unroll == cb->no_unroll && e->nw == nw &&
        !memcmp(e->wm, wm, nw) && !memcmp(e->bm, bm, nb)) {
      cb->st.hits++;
      free(wm), free(bm);
      return e;
    }
  rt_cpu_entry *e = calloc(1, sizeof *e);
  if (!e) {
    free(wm), free(bm);
    snprintf(err, errlen, "cpu backend: out of memory");
    return NULL;
  }
  *e = (rt_cpu_entry){.hash = h, .kind = (int)l->kind, .wm = wm, .bm = bm, .nw = nw, .nb = nb,
                      .lanes = lanes, .vw = cb->vw, .no_unroll = cb->no_unroll};
  memcpy(e->shape, shape, sizeof shape);
  for (size_t i = 0; i < nw; i++) e->active += wm[i];
  if (l->kind == IR_LINEAR) {
    cg_linear_desc ld = {shape[0], shape[3], wm, bm, lanes, cb->vw};
    e->nbwd = cg_sparse_linear_bwd_len(&ld);
  }
  cg_conv_desc d = {shape[0], shape[1], shape[2], shape[3], shape[4], shape[5], shape[6], wm, bm,
                    cb->vw, cb->no_unroll};
  if (l->kind == IR_CONV && cg_conv_plan_init(&e->plan, &d)) {
    snprintf(err, errlen, "cpu backend: layer %d (%s): shape too large or empty", layer, l->name);
    entry_free(cb, e);
    return NULL;
  }
  if (l->kind == IR_CONV && (e->blocks = cg_sparse_conv_row_block(&d)) < 0) {
    snprintf(err, errlen, "cpu backend: layer %d (%s): out of memory", layer, l->name);
    entry_free(cb, e);
    return NULL;
  }
  if (l->kind == IR_CONV)
    e->fused = cg_sparse_conv_fusable(&d, e->blocks), e->into_xcs = into_stride(&d, &e->plan);
  e->blocks = e->blocks > 1;
  e->next = cb->cache;
  cb->cache = e;
  return e;
}

/* The density from which a conv layer with this output plane runs dense
 * (the table above RT_CPU_DENSE_CONV_AUTO; above 1: never). `blocks`: a
 * layer whose rows the 16-lane kernels take 4 at a time (a full layer:
 * cg_sparse_conv_row_block), faster at 100% than partial layers at
 * 90%. JIT against GEMM at 2 threads, 2026-12-03, 4a85326: against AVX2
 * GEMM 128->128 at 8x8 0.0292 s against 0.0416, 64->64 at 7x7 0.0064
 * against 0.0100, 256->256 at 4x4 0.0548 against 0.0493; against AVX-512
 * GEMM 64->64 at 16x16 0.0232 against 0.0266, at 14x14 0.0179 against
 * 0.0214, 128->128 at 8x8 0.0294 against 0.0277. */
static double conv_dense_from(const cpu_backend *cb, long oh, long ow, int blocks) {
  long a = oh * ow;
  if (cb->vw == 8) return a >= 400 ? 2.0 : a >= 36 ? 0.75 : 0.35;
  if (cb->wide_gemm)
    return a >= 400 || (blocks && a >= 100) ? 2.0 : a >= 100 ? 0.6 : a >= 36 ? 0.4 : 0.25;
  return a >= 100 || (blocks && a >= 36) ? 2.0 : a >= 36 ? 0.9 : 0.35;
}

/* The density from which a linear layer runs dense (the figures above
 * RT_CPU_DENSE_LINEAR_AUTO): against AVX2 GEMM, at 16 lanes between the
 * two AMD VMs' crossings (about 50% and 62%), at 8 lanes at its crossing
 * (about 50%); against AVX-512 GEMM a little below it (about 34%). */
static double linear_dense_from(const cpu_backend *cb) {
  if (cb->wide_gemm) return 0.3;
  return cb->vw == 8 ? 0.5 : 0.55;
}

static int entry_dense(const cpu_backend *cb, const rt_cpu_entry *e) {
  double density = e->nw ? (double)e->active / (double)e->nw : 0.0;
  if (e->kind != IR_CONV)
    return density >= (cb->thr_lin >= 0 ? cb->thr_lin : linear_dense_from(cb));
  return density >= (cb->thr_conv >= 0 ? cb->thr_conv
                                        : conv_dense_from(cb, e->plan.oh, e->plan.ow, e->blocks));
}

/* Floats at the end of a scratch buffer for one plane of work: pack_x's
 * input plane (xtmp). */
static size_t tmp_len(int h, int w) { return (size_t)h * w; }

/* Switches a layer to entry e, sizes the scratch for it, and drops the
 * layer's previous entry when no layer uses that pattern any more. */
static void entry_attach(cpu_backend *cb, int layer, rt_cpu_entry *e) {
  const ir_layer *l = &cb->pub.g->layers[layer];
  int dense = entry_dense(cb, e), k = l->kind == IR_CONV ? l->k : 1;
  cb->dense[layer] = (uint8_t)dense;
  size_t need;
  if (l->kind == IR_CONV && dense)
    need = (size_t)l->cin * k * k * (size_t)e->plan.oh * (size_t)e->plan.ow;
  else if (l->kind == IR_CONV) {
    const cg_conv_plan *p = &e->plan;
    /* the forward's buffers, or the combined backward's and its bias sums */
    size_t fwd = (size_t)(p->xlen + (long)l->cout * p->yrs),
           bwd = (size_t)(p->xlen + p->dylen + p->dxlen);
    size_t most = CONV_SB * (fwd > bwd ? fwd : bwd);
    if (e->fused && fused_len(e) > most) most = fused_len(e);
    need = lines(2 * (size_t)l->cout) + wp_len(e) + most + tmp_len(l->h, l->w); /* xtmp */
  } else { /* the forward's, or the fused backward's */
    size_t fwd = wp_len(e) + (size_t)LIN_SUB * (size_t)(l->cin + l->cout),
           bwd = 2 * lines((size_t)e->nbwd) + (size_t)LIN_SUB * (size_t)(2 * l->cin + l->cout + 1);
    need = dense ? 1 : fwd > bwd ? fwd : bwd;
  }
  if (need > cb->need) cb->need = need;
  e->refs++;
  pthread_mutex_lock(&cb->wpack[layer].mu);
  cb->wpack[layer].gen = cb->wpack[layer].gen0 = cb->wpack[layer].work = 0;
  pthread_mutex_unlock(&cb->wpack[layer].mu);
  rt_cpu_entry *old = cb->layer[layer];
  cb->layer[layer] = e;
  if (old && --old->refs == 0) { /* no layer has that pattern any more */
    cache_remove(cb, old);
    entry_free(cb, old);
  }
}

/* Prepares n layers: each pattern's entry from the cache or new, the
 * kernels of the new sparse ones built together (on up to pub.threads
 * threads), then the layers switched over. A layer whose build fails
 * keeps its previous kernels; the first failure's message is returned. */
static int cpu_prepare_layers(rt_kernels *b, int n, const int *layers,
                              const uint8_t *const *wmasks, const uint8_t *const *bmasks,
                              char *err, size_t errlen) {
  cpu_backend *cb = C(b);
  rt_cpu_entry **ent = calloc((size_t)(n > 0 ? n : 1), sizeof *ent);
  rt_cpu_entry **queue = calloc((size_t)(n > 0 ? n : 1), sizeof *queue);
  int *rc = calloc((size_t)(n > 0 ? n : 1), sizeof *rc), nt = 0, fail = 0;
  if (!ent || !queue || !rc) {
    free(ent), free(queue), free(rc);
    snprintf(err, errlen, "cpu backend: out of memory");
    return -1;
  }
  /* each entry held (refs) until every layer has switched: a layer's old
   * entry may be the one another layer of the call is to take (two layers
   * of one shape that trade patterns) */
  for (int i = 0; i < n && !fail; i++) {
    assert(layers[i] >= 0 && layers[i] < b->g->n_layers);
    if (!(ent[i] = entry_get(cb, layers[i], wmasks[i], bmasks[i], err, errlen))) {
      fail = 1;
      break;
    }
    ent[i]->refs++;
    if (!entry_dense(cb, ent[i]) && !ent[i]->compiled && !ent[i]->queued)
      ent[i]->queued = 1, queue[nt++] = ent[i];
  }
  if (!fail && compile_entries(cb, queue, nt, rc, err, errlen)) {
    snprintf(err, errlen, "cpu backend: out of memory");
    fail = 1;
    for (int t = 0; t < nt; t++) rc[t] = -1;
  }
  for (int t = 0; t < nt; t++) {
    queue[t]->queued = 0;
    if (rc[t] || fail) entry_drop_code(cb, queue[t]), fail = 1;
  }
  for (int i = 0; i < n; i++)
    if (ent[i] && (ent[i]->compiled || entry_dense(cb, ent[i]))) entry_attach(cb, layers[i], ent[i]);
  /* the holds let go: entries no layer took (their build failed) go */
  for (int i = 0; i < n; i++)
    if (ent[i] && --ent[i]->refs == 0) {
      cache_remove(cb, ent[i]);
      entry_free(cb, ent[i]);
    }
  free(ent), free(queue), free(rc);
  return fail ? -1 : 0;
}

static int cpu_prepare(rt_kernels *b, int layer, const uint8_t *wmask, const uint8_t *bmask,
                       char *err, size_t errlen) {
  return cpu_prepare_layers(b, 1, &layer, &wmask, &bmask, err, errlen);
}

/* ---- scratch ------------------------------------------------------------ */

/* A free slot's buffer, grown to cb->need (the largest prepared layer's)
 * the first time it is used after a prepare that raised it: steady-state
 * training steps allocate nothing. Slots are claimed by a flag, so the
 * chunks exec runs on its threads at once each get their own; a caller
 * beyond NSLOT concurrent ones gets one of its own. NULL: no memory. */
static float *scratch_get(cpu_backend *cb, int *id) {
  for (int i = 0; i < NSLOT; i++) {
    rt_cpu_slot *sl = &cb->slots[i];
    if (atomic_flag_test_and_set_explicit(&sl->busy, memory_order_acquire)) continue;
    if (sl->cap < cb->need) {
      float *p = aligned_alloc(LINE * sizeof *p, lines(cb->need) * sizeof *p);
      if (!p) {
        atomic_flag_clear_explicit(&sl->busy, memory_order_release);
        return NULL;
      }
      free(sl->buf); /* scratch: nothing in it outlives a call */
      sl->buf = p, sl->cap = cb->need;
    }
    *id = i;
    return sl->buf;
  }
  *id = -1;
  return aligned_alloc(LINE * sizeof(float), lines(cb->need) * sizeof(float));
}

static void scratch_put(cpu_backend *cb, float *p, int id) {
  if (id < 0) free(p);
  else atomic_flag_clear_explicit(&cb->slots[id].busy, memory_order_release);
}

/* The weights of the fwd (dir 0) or bwd_data (1) kernel into wp, in the
 * order it reads them, once per call: w read in ascending order (it is
 * the large one, dense), wp (the active ones) written where they go. */
static void pack_w(const rt_cpu_entry *e, int dir, const float *w, float *wp) {
  const int32_t *act = e->act, *pos = e->pos[dir];
  for (size_t j = 0; j < e->active; j++) wp[pos[j]] = w[act[j]];
  if (dir)
    for (long k = 0; k < e->npad; k++) wp[e->pad[k]] = 0.0f;
}

/* ---- conv --------------------------------------------------------------- */

static rt_cpu_entry *entry_for(rt_kernels *b, int layer) {
  rt_cpu_entry *e = C(b)->layer[layer];
  assert(e && "cpu backend: layer used before prepare()");
  return e;
}

static void conv_strides(const rt_conv_shape *s, int64_t *xns, int64_t *yns) {
  *xns = s->x_ns ? s->x_ns : (int64_t)s->cin * s->h * s->w;
  *yns = s->y_ns ? s->y_ns : (int64_t)s->cout * s->oh * s->ow;
}

static void conv_check(const rt_cpu_entry *e, const rt_conv_shape *s) {
  (void)e, (void)s;
  assert(e->kind == IR_CONV && s->cin == e->shape[0] && s->h == e->shape[1] &&
         s->w == e->shape[2] && s->cout == e->shape[3] && s->k == e->shape[4] &&
         s->stride == e->shape[5] && s->pad == e->shape[6]);
}

static long conv_xns(const rt_conv_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w;
}

/* With s->xbn, x (all n samples) as batch norm's forward would have
 * written it, made from z there: the paths that read x whole (dense,
 * the reference's) read it as the host step wrote it before. */
static void bn_x_write(const rt_conv_shape *s, const float *x) {
  if (s->xbn) /* the arena, the host's */
    rt_bn_x_write(s->xbn, s->n, (long)s->h * s->w, conv_xns(s), (float *)x);
}

/* With s->xbn->sums, sample i's row sums of the channels made from z,
 * from z and their gradient in dx (that sample's, complete); with stops,
 * then that gradient zeroed where the ReLU stopped. */
static void bn_x_sums(const rt_conv_shape *s, int64_t i, float *dx) {
  rt_bn_x_sums(s->xbn, i, (long)s->h * s->w, conv_xns(s), dx);
}

/* One channel's plane xc [h][w] into its four phase planes at stride 2
 * (d, s * s * pq floats): the frame cleared, then each image row split
 * into its even and odd columns, which land in the two phase planes of
 * its row's parity (image column c at plane column (c + pad) / 2 of phase
 * (c + pad) % 2). */
static void pack_plane2(const cg_conv_plan *p, const rt_conv_shape *s, const float *xc, float *d,
                        const rt_affine *map) {
  memset(d, 0, (size_t)p->xcs * sizeof *d);
  int pe = s->pad & 1, je = s->pad / 2, jo = (s->pad + 1) / 2;
  for (int r = 0; r < s->h; r++) {
    int R = r + s->pad;
    float *row = d + (long)(R & 1) * 2 * p->pq + (long)(R / 2) * p->wq;
    rt_split2((s->w + 1) / 2, s->w / 2, xc + (long)r * s->w, row + (long)pe * p->pq + je,
              row + (long)(1 - pe) * p->pq + jo, map);
  }
}

/* One plane at stride 1 into d: the image inside a zero frame, written
 * once, its rows `pitch` floats apart in src, through map or gated by
 * gate (rows gpitch apart), as rt_pad_rows takes them. */
static void pad_plane(const cg_conv_plan *p, const rt_conv_shape *s, const float *src, long pitch,
                      const float *gate, long gpitch, const rt_affine *map, float *d) {
  int rows = s->h < p->hq - s->pad ? s->h : p->hq - s->pad;
  int cols = s->w < p->wq - s->pad ? s->w : p->wq - s->pad;
  long top = (long)s->pad * p->wq, body = top + (long)rows * p->wq;
  memset(d, 0, (size_t)top * sizeof *d);
  rt_pad_rows(rows, cols, src, pitch, d + top, p->wq, s->pad, gate, gpitch, map);
  memset(d + body, 0, (size_t)(p->pq - body) * sizeof *d);
}

/* Zeros in xp past its last channel, to the sample's end. */
static void xp_tail(const cg_conv_plan *p, const rt_conv_shape *s, float *xp) {
  long used = (long)s->cin * p->xcs;
  memset(xp + used, 0, (size_t)(p->xlen - used) * sizeof *xp);
}

/* One sample x [cin][h][w] into xp (cg_conv_plan): padded, split into
 * phase planes, every float of xp written (the slot is shared by layers of
 * other layouts, and the kernels read the don't-care tail). */
static void pack_x(const cg_conv_plan *p, const rt_conv_shape *s, const float *x, float *xp,
                   int64_t i, float *tmp) {
  int S = p->s;
  long hw = (long)s->h * s->w;
  for (int ci = 0; ci < s->cin; ci++) {
    const float *xc = x + ci * hw;
    const rt_bn_x *bn = s->xbn;
    rt_affine f, *map = NULL;
    if (bn && ci >= bn->c0 && ci < bn->c1) { /* as batch norm's forward would have written it */
      int c = ci - bn->c0;
      f = (rt_affine){bn->m[c], bn->k[c], bn->b[c], bn->relu};
      xc = rt_bn_x_z(bn, i, hw, conv_xns(s), c), map = &f; /* mapped as it is packed */
      rt_ahead(xc, hw * (long)sizeof *xc, RT_AHEAD, ci == bn->c0);
      if (S > 2) rt_bn_affine_row(hw, xc, f.m, f.k, f.b, f.relu, tmp), xc = tmp, map = NULL;
    } else {
      rt_ahead(xc, hw * (long)sizeof *xc, RT_AHEAD, ci == 0);
    }
    if (S == 2) {
      pack_plane2(p, s, xc, xp + ci * p->xcs, map);
      continue;
    }
    for (int py = 0; py < S; py++)
      for (int px = 0; px < S; px++) {
        float *d = xp + ci * p->xcs + (py * S + px) * p->pq;
        if (S == 1) {
          pad_plane(p, s, xc, s->w, NULL, 0, map, d);
          continue;
        }
        /* plane columns [j0, j1) hold image columns j * S + px - pad */
        int j0 = s->pad > px ? (s->pad - px + S - 1) / S : 0;
        int j1 = (s->w + s->pad - px + S - 1) / S;
        if (j1 > p->wq) j1 = p->wq;
        if (j0 > j1) j0 = j1;
        for (int i = 0; i < p->hq; i++, d += p->wq) {
          int r = i * S + py - s->pad;
          if (r < 0 || r >= s->h) {
            memset(d, 0, (size_t)p->wq * sizeof *d);
            continue;
          }
          const float *row = xc + (long)r * s->w;
          memset(d, 0, (size_t)j0 * sizeof *d);
          for (int j = j0; j < j1; j++) d[j] = row[j * S + px - s->pad];
          memset(d + j1, 0, (size_t)(p->wq - j1) * sizeof *d);
        }
        memset(d, 0, (size_t)(p->pq - (long)p->hq * p->wq) * sizeof *d); /* to the plane's end */
      }
  }
  xp_tail(p, s, xp);
}

/* One sample of a remade input (rt_conv_shape.xr) into xp at stride 1,
 * as pack_x would pack it, from its producer's packed output rows (yq,
 * rows of its plan's wq, planes yrs apart), through the ReLU as they are
 * read: the same bits as the producer's unpacking and pack_x. */
static void pack_xq(const cg_conv_plan *p, const rt_conv_shape *s, const float *yq, long yrs,
                    long ywq, float *xp) {
  assert(p->s == 1);
  for (int ci = 0; ci < s->cin; ci++) /* gated by itself: (q > 0) * q */
    pad_plane(p, s, yq + ci * yrs, ywq, yq + ci * yrs, ywq, NULL, xp + ci * p->xcs);
  xp_tail(p, s, xp);
}

/* The floats of dyq past its last channel (the vector a run of the
 * bwd_data kernel loads past its last tile, whose lanes it does not use):
 * zeros, so that nothing reads memory never written. */
static void dy_tail(const cg_conv_plan *p, const rt_conv_shape *s, float *dyq) {
  long used = (long)s->cout * p->dycs;
  memset(dyq + used, 0, (size_t)(p->dylen - used) * sizeof *dyq);
}

/* Sample i's plane of batch norm's pre-activation gradient (s->bn), of
 * channel co, from its output gradient dy's plane (under a pool, the
 * pool's: a quarter of it, routed by the windows' codes) and z's, into
 * dz, its rows ds floats apart with zeros after each (ds = ow: a whole
 * plane). */
static void bn_dz_rows(const rt_conv_shape *s, int64_t i, int co, const float *dy, const float *z,
                       float *dz, long ds) {
  const rt_bn_dz *bn = s->bn;
  if (bn->pool) {
    long op = (long)s->oh * s->ow / 4;
    rt_bn_pool_dx_rows(s->oh, s->ow, bn->code + i * bn->code_ns + co * op, dy, z, bn->m[co],
                       bn->gm[co], bn->kg[co], bn->kx[co], dz, ds);
    return;
  }
  rt_bn_dx_rows(s->oh, s->ow, z, dy, bn->relu, bn->m[co], bn->k[co], bn->b[co], bn->gm[co],
                bn->kg[co], bn->kx[co], dz, ds);
}

/* dy's plane of channel co of one sample (s->bn: under a pool, the
 * pool's, a quarter of the output's). */
static const float *bn_dy_plane(const rt_conv_shape *s, const float *dy, int co) {
  long ohw = (long)s->oh * s->ow;
  return dy + co * (s->bn->pool ? ohw / 4 : ohw);
}

/* How far ahead pack_dy asks for batch norm's pre-activation z, the
 * widest of the streams it reads: 8 KB, where 2 KB (RT_AHEAD) left the
 * step 0.2-1.5% slower in seven runs of two threads and 0.5-1.8% in two
 * of one (steps in turn, 24,000 and 12,000 images of
 * bench/bn_template.ilnas, the AMD Zen 5 VM); 4 KB read alike within the
 * noise, 16 KB slower. RT_AHEAD itself at 8 KB for every stream made the
 * step 0.1-1.0% slower, and z's packing for a reader (pack_x) did not
 * change. */
enum { AHEAD_Z = 8192 };

/* What pack_dy reads for sample i's channel co, asked for ahead
 * (rt_ahead): dy's plane (under a pool, a quarter plane), and z's (s->bn,
 * samples yns apart; AHEAD_Z), y's or the windows' codes (a byte a
 * window). Inlined, as rt_ahead. */
__attribute__((always_inline)) static inline void ahead_dy(const rt_conv_shape *s, int64_t i,
                                                           int64_t yns, int co, const float *dy,
                                                           const float *y, const uint8_t *code) {
  long ohw = (long)s->oh * s->ow, f = sizeof *dy;
  int pooled = s->bn ? s->bn->pool : s->pooled != NULL, first = co == 0;
  if (pooled) rt_ahead(dy + co * (ohw / 4), ohw, RT_AHEAD / 4, first);
  else rt_ahead(dy + co * ohw, ohw * f, RT_AHEAD, first);
  if (s->bn) {
    rt_ahead(s->bn->z + i * yns + co * ohw, ohw * f, AHEAD_Z, first);
    if (pooled) code = s->bn->code + i * s->bn->code_ns;
  } else if (y && !(pooled && code)) { /* the codes route dy without y */
    rt_ahead(y + co * ohw, ohw * f, RT_AHEAD, first);
  }
  if (pooled && code) rt_ahead(code + co * (ohw / 4), ohw / 4, RT_AHEAD / 16, first);
}

/* Sample i's dy [cout][oh][ow] into dyq: a zero margin, rows of wq with
 * zero don't-care columns, zeros to the channel stride; every float
 * written once. The rows:
 * - with s->bn, the pre-activation's gradient that batch norm's backward
 *   makes from dy, its output's gradient (or its pool's), and the
 *   pre-activation z (sample i's, bn_dz_rows): dz is never written;
 * - else with s->pooled, dy is the pool's gradient, a quarter plane a
 *   channel, and goes through the pool first: routed by the sample's
 *   window codes (code, [cout][ohw / 4], rt_pool_code_rows) or else by
 *   y's windows (rt_pool_relu_rows);
 * - else with y (the ReLU's output, same layout as dy), dy is the
 *   activation's gradient and goes through the ReLU on the way. */
static void pack_dy(const cg_conv_plan *p, const rt_conv_shape *s, int64_t i, const float *dy,
                    const float *y, const uint8_t *code, float *dyq) {
  long ohw = (long)s->oh * s->ow, body = p->marg + (long)s->oh * p->wq;
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  assert(s->bn || !s->pooled || y || code);
  for (int co = 0; co < s->cout; co++) {
    float *d = dyq + co * p->dycs;
    ahead_dy(s, i, yns, co, dy, y, code);
    memset(d, 0, (size_t)p->marg * sizeof *d);
    if (s->bn)
      bn_dz_rows(s, i, co, bn_dy_plane(s, dy, co), s->bn->z + i * yns + co * ohw, d + p->marg,
                 p->wq);
    else if (s->pooled && code) /* through the pool and the ReLU, straight into the rows */
      rt_pool_code_rows(s->oh, s->ow, code + co * (ohw / 4), dy + co * (ohw / 4), d + p->marg,
                        p->wq);
    else if (s->pooled)
      rt_pool_relu_rows(s->oh, s->ow, y + co * ohw, dy + co * (ohw / 4), d + p->marg, p->wq);
    else
      rt_pad_rows(s->oh, s->ow, dy + co * ohw, s->ow, d + p->marg, p->wq, 0,
                  y ? y + co * ohw : NULL, s->ow, NULL);
    memset(d + body, 0, (size_t)(p->dycs - body) * sizeof *d);
  }
  dy_tail(p, s, dyq);
}

/* With s->pool_y, sample i's pool and codes (rt_relu_pool_rows) from its
 * output planes y, ps floats apart, their rows ys apart. */
static void pool_y(const rt_conv_shape *s, int64_t i, const float *y, long ps, long ys) {
  long op = (long)(s->oh / 2) * (s->ow / 2);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  for (int co = 0; co < s->cout; co++)
    rt_relu_pool_rows(s->oh, s->ow, y + co * ps, ys, s->pool_y + i * yns + co * op,
                      s->pcode + i * s->pcode_ns + co * op);
}

/* With s->mom, batch norm's statistics of output channels c0 .. c1 - 1
 * of the call's sample i, from their planes z (as written); the moments
 * themselves only with stats (else the windows alone). */
static void bn_mom_planes(const rt_conv_shape *s, int64_t i, int c0, int c1, const float *z,
                          int stats) {
  rt_bn_shape bs = {1, c1 - c0, s->oh * s->ow, 0, 0, s->ow};
  rt_bn_moments_at(&bs, z, s->mom, i, c0, stats);
}

/* How far ahead unpack_y asks for the lines of batch norm's
 * pre-activation z that it will write (rt_ahead_w): its stores miss,
 * each line read for ownership as they reach it. Against no asking, in
 * steps in turn of one run (bench/bn_template.ilnas, the AMD Zen 5 VM,
 * 2026-12-05): the step 0.7-5.4% faster on two threads (2 KB 0.8-1.7%, 4
 * KB 0.8-5.4%, 8 KB 0.7-1.3%, four or five runs each) and 1.2-2.2% on
 * one (4 KB). The twin's copy of its ReLU's output, asked the same, was
 * 0.7-0.9% slower: not asked. */
enum { AHEAD_W = 4096 };

/* The packed rows yq of the call's sample i into y, through the ReLU
 * with s->relu; with s->mom, each plane's moments taken as it is copied
 * (its lines asked for ahead: AHEAD_W), and a pool's windows from each
 * two planes while they are in L1. */
static void unpack_y(const cg_conv_plan *p, const rt_conv_shape *s, int64_t i, const float *yq,
                     float *y) {
  long ohw = (long)s->oh * s->ow;
  for (int c0 = 0; c0 < s->cout; c0 += 2) {
    int c1 = c0 + 2 < s->cout ? c0 + 2 : s->cout;
    for (int co = c0; co < c1; co++)
      if (s->mom) {
        rt_ahead_w(y + co * ohw, ohw * (long)sizeof *y, AHEAD_W, co == 0);
        rt_bn_copy_moments(s->oh, s->ow, yq + co * p->yrs, p->wq, y + co * ohw, s->ow, s->relu,
                           s->mom->mom + co * s->mom->ms + 2 * i);
      } else {
        (s->relu ? rt_relu_2d : rt_copy_2d)(s->oh, s->ow, yq + co * p->yrs, p->wq, y + co * ohw,
                                            s->ow);
      }
    if (s->mom && s->mom->pool) bn_mom_planes(s, i, c0, c1, y + c0 * ohw, 0);
  }
}

/* dx += the real (not padding) positions of the phase planes dxp; with
 * s->dx_assign, dx = 0 + them (the same bits as adding into a cleared
 * arena): at strides 1 and 2 as each row is copied or interleaved, else
 * each plane of dx cleared first, while it is in L1. */
static void add_dx(const cg_conv_plan *p, const rt_conv_shape *s, const float *dxp, float *dx) {
  int S = p->s;
  long hw = (long)s->h * s->w;
  for (int ci = 0; ci < s->cin; ci++) {
    float *dc = dx + ci * hw;
    if (S == 1) { /* the plane is the image inside a frame of pad */
      (s->dx_assign ? rt_set_2d : rt_add_2d)(
          s->h, s->w, dxp + (long)ci * p->dxrs + (long)s->pad * p->wq + s->pad, p->wq, dc, s->w);
      continue;
    }
    if (s->dx_assign && S != 2) memset(dc, 0, (size_t)hw * sizeof *dc);
    for (int iy = 0; iy < s->h; iy++) {
      int r = iy + s->pad;
      float *d = dc + (long)iy * s->w;
      const float *rowp = dxp + (long)ci * S * S * p->dxrs + (long)(r / S) * p->wq;
      if (S == 2) { /* the row's even and odd columns from their two phases */
        int p0 = s->pad & 1;
        rowp += (r & 1) * 2 * p->dxrs;
        rt_interleave2((s->w + 1) / 2, s->w / 2, rowp + p0 * p->dxrs + s->pad / 2,
                       rowp + (1 - p0) * p->dxrs + (s->pad + 1) / 2, d, !s->dx_assign);
        continue;
      }
      for (int ix = 0; ix < s->w; ix++) {
        int c = ix + s->pad;
        d[ix] += rowp[((r % S) * S + c % S) * p->dxrs + c / S];
      }
    }
  }
}

static int is_dense(rt_kernels *b, int l) { return C(b)->dense[l]; }

/* pack_x's plane of one input channel (s->xbn): the last h * w floats of
 * a scratch buffer, past what any layer's call uses (entry_attach). */
static float *xtmp(rt_kernels *b, float *buf, const rt_conv_shape *s) {
  return buf + C(b)->need - (size_t)s->h * s->w;
}

/* Room for fwd_bias's copy in a scratch buffer: below xtmp's plane, past
 * the forward's buffers (entry_attach's lines(2 * cout)). */
static float *btmp(rt_kernels *b, float *buf, const rt_conv_shape *s) {
  return xtmp(b, buf, s) - lines((size_t)s->cout);
}

/* The bias a conv forward's kernels take: they add every row's (compiled
 * without the mask), so a copy in mb with the masked channels' 0, unless
 * every channel's counts (s->bias_all: folded). The kernels take
 * non-const pointers; they only write their output. */
static float *fwd_bias(const rt_cpu_entry *e, const rt_conv_shape *s, const float *bias,
                       float *mb) {
  if (!bias || s->bias_all) return (float *)bias;
  for (int co = 0; co < s->cout; co++) mb[co] = rt_bias_counts(e->bm, 0, co) ? bias[co] : 0.0f;
  return mb;
}

/* bsum[co] += the sum of plane co of q (cout planes of len floats). */
static void bias_sums(int cout, long len, const float *q, double *bsum) {
  float part[64];
  for (int c0 = 0; c0 < cout; c0 += 64) {
    int m = cout - c0 < 64 ? cout - c0 : 64;
    rt_sum_rows(m, len, q + c0 * len, len, part);
    for (int j = 0; j < m; j++) bsum[c0 + j] += part[j];
  }
}

/* ---- a remade input (rt_conv_shape.xr) ----------------------------------
 *
 * The input is remade for the kernels' CONV_SB samples at a time, where
 * it stays in cache. Where both layers run on their kernels and the
 * consumer at stride 1 (xr_direct), the producer's kernel writes through
 * the ReLU straight into the consumer's padded planes (fwd_into, where
 * the consumer has its geometry; the frame zeroed after), else its packed
 * rows into a scratch slot, which the consumer packs from (xr_pack); in
 * the backward, the producer's weight gradient is taken from the
 * consumer's packed input gradient (xr_wgrad_direct): of the five passes
 * over the producer's output and its gradient when the two run apart,
 * one is left (three without fwd_into), none through memory. Otherwise the
 * samples are remade as the producer's forward writes them, and their
 * gradient set beside them (xr_make, xr_wgrad); on a consumer on
 * OpenBLAS, the call's samples whole (xr_whole). The sums are those of
 * the two layers computed apart, in the same order: the same bits. */

static int cpu_conv_fwd(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                        const float *w, const float *bias, float *y);
static int cpu_conv_bwd(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                        const float *dy, const float *y, const float *w, float *dx, float *dw,
                        float *db);
static int cpu_conv_bwd_weight(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                               const float *dy, float *dw, float *db);

/* Floats of one sample of a remade input. */
static size_t xr_len(const rt_conv_shape *s) { return (size_t)s->cin * s->h * s->w; }

/* Whether a scratch slot holds CONV_SB remade samples and their gradient
 * (it holds the consumer's packed planes of as many: so far, always). */
static int xr_fits(rt_kernels *b, const rt_conv_shape *s) {
  return 2 * lines(CONV_SB * xr_len(s)) <= C(b)->need;
}

/* The producer r's shape for nb samples written xr_len(s) apart. */
static rt_conv_shape src_shape(const rt_conv_src *r, const rt_conv_shape *s, int nb) {
  rt_conv_shape t = r->s;
  assert(t.cout == s->cin && t.oh == s->h && t.ow == s->w);
  t.n = nb, t.y_ns = (long)xr_len(s), t.relu = 1, t.dx_assign = 0;
  t.bn = NULL, t.xbn = NULL, t.pooled = NULL, t.pool_y = NULL, t.pcode = NULL, t.mom = NULL;
  t.xr = NULL, t.xg = NULL, t.bias_all = r->bn;
  return t;
}

static rt_conv_shape xr_shape(const rt_conv_shape *s, int nb) { return src_shape(s->xr, s, nb); }

/* The remade input of the call's samples n0 .. n0 + nb - 1 into y. */
static int xr_make(rt_kernels *b, const rt_conv_shape *s, int n0, int nb, float *y) {
  const rt_conv_src *r = s->xr;
  rt_conv_shape t = xr_shape(s, nb);
  int64_t xns, yns;
  conv_strides(&r->s, &xns, &yns);
  return cpu_conv_fwd(b, r->layer, &t, r->x + n0 * xns, r->w, r->bias, y);
}

/* db[c] = the sum of plane c of n samples (planes of hw, samples ns
 * apart), each plane's in float, added in double. */
static void channel_sums(int n, int c, long hw, long ns, const float *d, float *db) {
  for (int k = 0; k < c; k++) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += rt_sum(hw, d + i * ns + k * hw);
    db[k] = (float)sum;
  }
}

/* Whether the remade input goes straight from its producer's kernel to
 * the consumer's packing (xr_pack): both on their kernels, at stride 1. */
static int xr_direct(rt_kernels *b, const rt_conv_shape *s, const cg_conv_plan *p) {
  return p->s == 1 && !is_dense(b, s->xr->layer);
}

/* Where the image starts in a padded plane at stride 1 (pack_x). */
static long xr_top(const rt_conv_shape *s, const cg_conv_plan *p) {
  return (long)s->pad * p->wq + s->pad;
}

/* Whether xr_pack's producer writes straight into the consumer's planes
 * (plan p, samples xs floats apart): its fwd_into was made for them, and
 * its last plane's rows end within the sample. */
static int xr_into(rt_kernels *b, const rt_conv_shape *s, const cg_conv_plan *p, long xs) {
  const rt_cpu_entry *e = entry_for(b, s->xr->layer);
  return e->fwd_into && e->into_xcs == p->xcs && e->plan.wq == p->wq &&
         (long)(s->cin - 1) * p->xcs + xr_top(s, p) + e->plan.yrs <= xs;
}

/* Zeros where pack_x leaves them in one sample's padded planes at stride
 * 1 (p), after fwd_into wrote the rows there: before each plane's first
 * row, between its rows (the rows' don't-care tails), after its last row,
 * and after the last plane. */
static void zero_frame(const cg_conv_plan *p, const rt_conv_shape *s, float *xp) {
  long top = xr_top(s, p), last = top + (long)(s->h - 1) * p->wq + s->w;
  for (int ci = 0; ci < s->cin; ci++) {
    float *d = xp + ci * p->xcs;
    memset(d, 0, (size_t)top * sizeof *d);
    /* the rows' tails by column, down the plane: as a loop along a row,
     * the compiler makes each row's tail (one float at pad 1) a call to
     * memset, some 400,000 a step of the twin */
    for (long j = top + s->w; j < top + p->wq; j++)
      for (int r = 0; r + 1 < s->h; r++) d[j + (long)r * p->wq] = 0.0f;
    memset(d + last, 0, (size_t)(p->xcs - last) * sizeof *d);
  }
  xp_tail(p, s, xp);
}

/* With xr_direct: the remade input of the call's samples n0 .. n0 + nb - 1
 * packed into xp (nb samples, the consumer's plan p): the producer's
 * kernel writes its packed rows in aux (its packed weights first, made
 * when first is set), which pack_xq reads. */
static void xr_pack(rt_kernels *b, const rt_conv_shape *s, const cg_conv_plan *p, int n0,
                    int nb, float *aux, float *xp, long xs, int first) {
  const rt_conv_src *r = s->xr;
  const rt_cpu_entry *e = entry_for(b, r->layer);
  const cg_conv_plan *pl = &e->plan;
  rt_conv_shape t = xr_shape(s, nb);
  int64_t xns, yns;
  conv_strides(&r->s, &xns, &yns);
  float *wp = aux, *xpl = wp + wp_len(e), *yq = xpl + CONV_SB * pl->xlen;
  if (first) pack_w(e, 0, r->w, wp);
  for (int i = 0; i < nb; i++)
    pack_x(pl, &t, r->x + (n0 + i) * xns, xpl + i * pl->xlen, n0 + i, xtmp(b, aux, &t));
  float *bias = fwd_bias(e, &t, r->bias, btmp(b, aux, &t));
  if (xr_into(b, s, p, xs)) { /* the rows straight into xp, then the frame */
    e->fwd_into(xpl, wp, bias, xp + xr_top(s, p), nb, pl->xlen, xs);
    for (int i = 0; i < nb; i++) zero_frame(p, s, xp + i * xs);
    return;
  }
  e->fwd(xpl, wp, bias, yq, nb, pl->xlen, t.cout * pl->yrs);
  for (int i = 0; i < nb; i++)
    pack_xq(p, s, yq + i * t.cout * pl->yrs, pl->yrs, pl->wq, xp + i * xs);
}

/* With xr_direct, after xr_pack's samples (in xp, xs floats apart): the
 * producer r's gradients from the consumer's input gradient (dxp, its
 * packed planes), each row through the ReLU (its gate: the producer's
 * output as xr_pack left it, in the consumer's planes with into, else its
 * own packed rows in aux) as it goes into the producer's packed output
 * gradient (dyq, in lbuf, as pack_dy makes it), its input as xr_pack
 * packed it (after its packed weights in aux): the same bits as
 * xr_wgrad. With rt_conv_shape.xg, the same from the consumer's packed
 * input, made from z (xg_pack). */
static void xr_wgrad_direct(rt_kernels *b, const rt_conv_shape *s, const rt_conv_src *r, int into,
                            const cg_conv_plan *p, int nb, const float *aux, const float *xp,
                            long xs, const float *dxp, double *bsum, float *lbuf) {
  const rt_cpu_entry *e = entry_for(b, r->layer);
  const cg_conv_plan *pl = &e->plan;
  rt_conv_shape t = src_shape(r, s, nb);
  const float *xpl = aux + wp_len(e), *yq = xpl + CONV_SB * pl->xlen;
  long body = pl->marg + (long)t.oh * pl->wq, in = xr_top(s, p);
  for (int i = 0; i < nb; i++) {
    float *q = lbuf + i * pl->dylen;
    for (int co = 0; co < t.cout; co++) {
      float *d = q + co * pl->dycs;
      const float *g = into ? xp + i * xs + co * p->xcs + in : yq + (i * t.cout + co) * pl->yrs;
      memset(d, 0, (size_t)pl->marg * sizeof *d);
      rt_pad_rows(t.oh, t.ow, dxp + i * p->dxlen + co * p->dxrs + in, p->wq, d + pl->marg, pl->wq,
                  0, g, into ? p->wq : pl->wq, NULL);
      memset(d + body, 0, (size_t)(pl->dycs - body) * sizeof *d);
    }
    dy_tail(pl, &t, q);
    bias_sums(t.cout, pl->dycs, q, bsum);
  }
  e->bwd_weight((float *)xpl, lbuf, r->dw, NULL, nb, pl->xlen, pl->dylen);
}

static int xr_fail(rt_kernels *b) {
  snprintf(b->error, sizeof b->error, "cpu backend: out of memory");
  return -1;
}

/* The call's remade input whole, then the two layers as if apart. */
static int xr_whole(rt_kernels *b, int l, const rt_conv_shape *s, const float *dy,
                    const float *y, const float *w, const float *bias, float *out, float *dw,
                    float *db) {
  const rt_conv_src *r = s->xr;
  size_t len = xr_len(s);
  int bwd = dy != NULL, want = bwd && r->dw;
  float *xm = malloc((size_t)(s->n ? s->n : 1) * len * sizeof *xm);
  float *dxm = want ? malloc((size_t)(s->n ? s->n : 1) * len * sizeof *dxm) : NULL;
  if (!xm || (want && !dxm)) return free(xm), free(dxm), xr_fail(b);
  rt_conv_shape t = *s, tl = xr_shape(s, s->n);
  t.xr = NULL, t.x_ns = (long)len, t.dx_assign = 1;
  int rc = xr_make(b, s, 0, s->n, xm);
  if (!rc && !bwd) rc = cpu_conv_fwd(b, l, &t, xm, w, bias, out);
  if (!rc && bwd) rc = cpu_conv_bwd(b, l, &t, xm, dy, y, w, dxm, dw, db);
  if (!rc && want) rc = cpu_conv_bwd(b, r->layer, &tl, r->x, dxm, xm, r->w, NULL, r->dw, r->db);
  if (!rc && want && r->bn && r->db) { /* every channel's sum, through the ReLU */
    for (int i = 0; i < s->n; i++) rt_relu_mask((long)len, xm + i * len, dxm + i * len, dxm + i * len);
    channel_sums(s->n, tl.cout, (long)tl.oh * tl.ow, (long)len, dxm, r->db);
  }
  free(xm), free(dxm);
  return rc;
}

/* The producer r's gradients (r->dw, db): cleared with its bias sums
 * (bsum, its cout doubles) before the call's first samples, then the
 * samples n0 .. n0 + nb - 1 added from their input x (remade) and its
 * gradient dx (the ReLU's applied here, in place), each xr_len(s) apart,
 * packed in lbuf (a scratch slot), then the sums made. The producer's
 * own call would add the same terms in the same order: per CONV_SB
 * samples on its kernels, per sample on OpenBLAS. */
static void xr_wgrad_begin(rt_kernels *b, const rt_conv_src *r, double *bsum) {
  memset(r->dw, 0, entry_for(b, r->layer)->nw * sizeof *r->dw);
  memset(bsum, 0, (size_t)r->s.cout * sizeof *bsum);
}

static void xr_wgrad(rt_kernels *b, const rt_conv_shape *s, int n0, int nb, const float *x,
                     float *dx, double *bsum, float *lbuf) {
  const rt_conv_src *r = s->xr;
  const rt_cpu_entry *e = entry_for(b, r->layer);
  rt_conv_shape t = xr_shape(s, nb);
  int64_t xns, yns;
  conv_strides(&r->s, &xns, &yns);
  long len = (long)xr_len(s), ohw = (long)t.oh * t.ow;
  if (is_dense(b, r->layer)) {
    int KC = t.cin * t.k * t.k;
    for (int i = 0; i < nb; i++) {
      float *d = dx + i * len;
      rt_relu_mask(len, x + i * len, d, d);
      rt_im2col(&t, r->x + (n0 + i) * xns, lbuf);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t.cout, KC, (int)ohw, 1.0f, d,
                  (int)ohw, lbuf, (int)ohw, 1.0f, r->dw, KC);
      for (int co = 0; co < t.cout; co++) bsum[co] += rt_sum(ohw, d + co * ohw);
    }
    return;
  }
  const cg_conv_plan *p = &e->plan;
  float *xp = lbuf, *dyq = xp + CONV_SB * p->xlen;
  for (int i = 0; i < nb; i++) {
    pack_x(p, &t, r->x + (n0 + i) * xns, xp + i * p->xlen, n0 + i, xtmp(b, lbuf, &t));
    pack_dy(p, &t, i, dx + i * len, x + i * len, NULL, dyq + i * p->dylen);
    bias_sums(t.cout, p->dycs, dyq + i * p->dylen, bsum);
  }
  e->bwd_weight(xp, dyq, r->dw, NULL, nb, p->xlen, p->dylen);
}

/* all: every channel's sum in db (rt_conv_shape.xg), else its bias's. */
static void xr_wgrad_end(rt_kernels *b, const rt_conv_src *r, const double *bsum, int all) {
  const rt_cpu_entry *e = entry_for(b, r->layer);
  if (is_dense(b, r->layer) && e->active < e->nw) rt_zero_masked(r->dw, e->wm, e->nw);
  for (int co = 0; r->db && co < r->s.cout; co++)
    r->db[co] = rt_bias_counts(e->bm, all, co) ? (float)bsum[co] : 0.0f;
}

/* ---- the producer's gradient taken from x's (rt_conv_shape.xg) -----------
 *
 * The consumer's input x is its producer's output through batch norm and
 * the ReLU, made from z as it is packed (xbn). Instead of writing x's
 * gradient, the consumer's backward gates its packed input gradient by
 * its packed input (x > 0 where the ReLU passed) into the producer's
 * packed output gradient and runs the producer's weight-gradient kernel
 * on it (xr_wgrad_direct): the weight gradient g would have as the
 * producer's pre-activation gradient, and g's sums. The host finishes
 * batch norm's backward from them (host.c, bn_grad_of). Where the two do
 * not both run on their kernels at stride 1, x's gradient is made whole
 * in dx and the same taken from it (xg_whole). */

/* The producer's input for the call's samples n0 .. n0 + nb - 1, packed
 * after its packed weights' room in aux, where xr_wgrad_direct reads it. */
static void xg_pack(rt_kernels *b, const rt_conv_shape *s, int64_t n0, int nb, float *aux) {
  const rt_conv_src *r = s->xg;
  const rt_cpu_entry *e = entry_for(b, r->layer);
  rt_conv_shape t = src_shape(r, s, nb);
  int64_t xns, yns;
  conv_strides(&r->s, &xns, &yns);
  for (int i = 0; i < nb; i++)
    pack_x(&e->plan, &t, r->x + (n0 + i) * xns, aux + wp_len(e) + i * e->plan.xlen, n0 + i,
           NULL);
}

/* Whether the call takes xg's gradients on the kernels (xr_wgrad_direct,
 * the gate read from the consumer's padded planes at stride 1). */
static int xg_direct(rt_kernels *b, int l, const rt_conv_shape *s) {
  return !is_dense(b, l) && !is_dense(b, s->xg->layer) && entry_for(b, l)->plan.s == 1 &&
         s->xbn->c0 == 0 && s->n > 0;
}

/* xg through x's gradient made whole in dx (the call's, written), gated
 * there by x (made from z a plane at a time), then the producer's weight
 * gradient of it and its sums per channel. */
static int xg_whole(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                    const float *dy, const float *y, const float *w, float *dx, float *dw,
                    float *db) {
  const rt_conv_src *r = s->xg;
  const rt_bn_x *bn = s->xbn;
  long hw = (long)s->h * s->w, xns = conv_xns(s);
  rt_conv_shape t = *s;
  rt_bn_x xb = *bn; /* its sums are the host's to make */
  xb.sums = NULL, t.xbn = &xb, t.xg = NULL, t.dx_assign = 1;
  float *plane = malloc((size_t)(hw ? hw : 1) * sizeof *plane);
  if (!plane || !dx) return free(plane), xr_fail(b);
  int rc = cpu_conv_bwd(b, l, &t, x, dy, y, w, dx, dw, db);
  for (int i = 0; !rc && i < s->n; i++)
    for (int c = 0; c < s->cin; c++) {
      float *d = dx + i * xns + c * hw;
      rt_bn_affine_row(hw, rt_bn_x_z(bn, i, hw, xns, c), bn->m[c], bn->k[c], bn->b[c], bn->relu,
                       plane);
      rt_relu_mask(hw, plane, d, d);
    }
  free(plane);
  if (rc) return rc;
  rt_conv_shape tl = src_shape(r, s, s->n);
  tl.y_ns = xns, tl.relu = 0;
  rc = cpu_conv_bwd_weight(b, r->layer, &tl, r->x, dx, r->dw, NULL);
  if (!rc) channel_sums(s->n, s->cin, hw, xns, dx, r->db);
  return rc;
}

static int cpu_conv_fwd(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                         const float *w, const float *bias, float *y) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  if (s->xr && (is_dense(b, l) || s->n == 0 || !xr_fits(b, s)))
    return xr_whole(b, l, s, NULL, NULL, w, bias, y, NULL, NULL);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  int id, aid;
  float *buf = s->n > 0 ? scratch_get(C(b), &id) : NULL;
  float *aux = buf && s->xr ? scratch_get(C(b), &aid) : NULL; /* the remade samples */
  if (s->xr && !aux) {
    if (buf) scratch_put(C(b), buf, id);
    return xr_fail(b);
  }
  if (!buf || is_dense(b, l)) bn_x_write(s, x);
  assert(!s->pool_y || (s->relu && s->pcode && s->oh % 2 == 0 && s->ow % 2 == 0));
  assert(!s->mom || !s->pool_y);
  if (!buf) { /* no scratch (or no samples): the reference computes the same */
    rt_ref_conv_fwd(s, x, w, bias, e->wm, e->bm, y); /* it honours s->bias_all */
    for (int i = 0; i < s->n; i++) {
      if (s->pool_y) pool_y(s, i, y + i * yns, (long)s->oh * s->ow, s->ow);
      if (s->mom) bn_mom_planes(s, i, 0, s->cout, y + i * yns, 1);
    }
    return 0;
  }
  const cg_conv_plan *p = &e->plan;
  if (is_dense(b, l)) {
    int P = s->oh * s->ow, KC = s->cin * s->k * s->k;
    for (int i = 0; i < s->n; i++) {
      float *yi = y + i * yns;
      rt_im2col(s, x + i * xns, buf);
      for (int co = 0; co < s->cout; co++) {
        float bv = bias && rt_bias_counts(e->bm, s->bias_all, co) ? bias[co] : 0.0f;
        for (int q = 0; q < P; q++) yi[(long)co * P + q] = bv;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, P, KC, 1.0f, w, KC, buf,
                  P, 1.0f, yi, P);
      if (s->relu) rt_relu((long)s->cout * P, yi, yi);
      if (s->pool_y) pool_y(s, i, yi, P, s->ow);
      if (s->mom) bn_mom_planes(s, i, 0, s->cout, yi, 1);
    }
  } else {
    float *wp = buf, *xp = buf + wp_len(e), *yq = xp + CONV_SB * p->xlen;
    float *kb = fwd_bias(e, s, bias, btmp(b, buf, s));
    pack_w(e, 0, w, wp);
    for (int n0 = 0; n0 < s->n; n0 += CONV_SB) {
      int nb = s->n - n0 < CONV_SB ? s->n - n0 : CONV_SB;
      if (aux && xr_direct(b, s, p))
        xr_pack(b, s, p, n0, nb, aux, xp, p->xlen, n0 == 0);
      else if (aux && xr_make(b, s, n0, nb, aux)) {
        scratch_put(C(b), aux, aid), scratch_put(C(b), buf, id);
        return -1;
      }
      for (int i = 0; i < nb && !(aux && xr_direct(b, s, p)); i++)
        pack_x(p, s, aux ? aux + i * xr_len(s) : x + (n0 + i) * xns, xp + i * p->xlen, n0 + i,
               xtmp(b, buf, s));
      e->fwd(xp, wp, kb, yq, nb, p->xlen, s->cout * p->yrs);
      for (int i = 0; i < nb; i++)
        if (s->pool_y) /* the pool, straight from the packed rows */
          pool_y(s, n0 + i, yq + i * s->cout * p->yrs, p->yrs, p->wq);
        else
          unpack_y(p, s, n0 + i, yq + i * s->cout * p->yrs, y + (n0 + i) * yns);
    }
  }
  if (aux) scratch_put(C(b), aux, aid);
  scratch_put(C(b), buf, id);
  return 0;
}

static int cpu_conv_bwd_data(rt_kernels *b, int l, const rt_conv_shape *s, const float *dy,
                              const float *w, float *dx) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  int id;
  float *buf = s->n > 0 ? scratch_get(C(b), &id) : NULL;
  if (s->dx_assign)
    for (int i = 0; i < s->n && (!buf || is_dense(b, l)); i++)
      memset(dx + i * xns, 0, (size_t)s->cin * s->h * s->w * sizeof *dx);
  if (!buf) {
    rt_ref_conv_bwd_data(s, dy, w, e->wm, dx);
    return 0;
  }
  const cg_conv_plan *p = &e->plan;
  if (is_dense(b, l)) {
    int P = s->oh * s->ow, KC = s->cin * s->k * s->k;
    for (int i = 0; i < s->n; i++) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, KC, P, s->cout, 1.0f, w, KC,
                  dy + i * yns, P, 0.0f, buf, P);
      rt_col2im_add(s, buf, dx + i * xns);
    }
  } else {
    float *wp = buf, *dyq = buf + wp_len(e), *dxp = dyq + CONV_SB * p->dylen;
    pack_w(e, 1, w, wp);
    for (int n0 = 0; n0 < s->n; n0 += CONV_SB) {
      int nb = s->n - n0 < CONV_SB ? s->n - n0 : CONV_SB;
      for (int i = 0; i < nb; i++)
        pack_dy(p, s, n0 + i, dy + (n0 + i) * yns, NULL, NULL, dyq + i * p->dylen);
      e->bwd_data(dyq, wp, dxp, NULL, nb, p->dylen, p->dxlen);
      for (int i = 0; i < nb; i++) add_dx(p, s, dxp + i * p->dxlen, dx + (n0 + i) * xns);
    }
  }
  scratch_put(C(b), buf, id);
  return 0;
}

/* The sum of a vector's n lanes (8 or 16), by halves. */
static float lanes_sum(const float *v, int n) {
  float h[16];
  memcpy(h, v, (size_t)n * sizeof *h);
  for (; n > 1; n /= 2)
    for (int i = 0; i < n / 2; i++) h[i] += h[i + n / 2];
  return h[0];
}

/* db[co] = the sum of dy over samples and positions (0 where masked). */
static void conv_bias_grad(const rt_cpu_entry *e, const rt_conv_shape *s, const float *dy,
                           int64_t yns, float *db) {
  if (!db) return;
  long ohw = (long)s->oh * s->ow;
  for (int co = 0; co < s->cout; co++) {
    double acc = 0.0;
    if (rt_bias_counts(e->bm, 0, co))
      for (int n = 0; n < s->n; n++) acc += rt_sum(ohw, dy + n * yns + co * ohw);
    db[co] = (float)acc;
  }
}

static int cpu_conv_bwd_weight(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                                const float *dy, float *dw, float *db) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  int id;
  float *buf = s->n > 0 ? scratch_get(C(b), &id) : NULL;
  if (!buf || is_dense(b, l)) bn_x_write(s, x);
  if (s->n > 0 && !buf) {
    rt_ref_conv_bwd_weight(s, x, dy, e->wm, e->bm, dw, db);
    return 0;
  }
  memset(dw, 0, e->nw * sizeof *dw);
  const cg_conv_plan *p = &e->plan;
  if (buf && is_dense(b, l)) {
    int P = s->oh * s->ow, KC = s->cin * s->k * s->k;
    for (int i = 0; i < s->n; i++) {
      rt_im2col(s, x + i * xns, buf);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, KC, P, 1.0f, dy + i * yns,
                  P, buf, P, 1.0f, dw, KC);
    }
    if (e->active < e->nw) rt_zero_masked(dw, e->wm, e->nw);
  } else if (buf) {
    float *dyq = buf + CONV_SB * p->xlen;
    for (int n0 = 0; n0 < s->n; n0 += CONV_SB) {
      int nb = s->n - n0 < CONV_SB ? s->n - n0 : CONV_SB;
      for (int i = 0; i < nb; i++) {
        pack_x(p, s, x + (n0 + i) * xns, buf + i * p->xlen, n0 + i, xtmp(b, buf, s));
        pack_dy(p, s, n0 + i, dy + (n0 + i) * yns, NULL, NULL, dyq + i * p->dylen);
      }
      e->bwd_weight(buf, dyq, dw, NULL, nb, p->xlen, p->dylen);
    }
  }
  if (buf) scratch_put(C(b), buf, id);
  if (!db) return 0;
  conv_bias_grad(e, s, dy, yns, db);
  return 0;
}

/* Both backward kernels, dy packed once per sample for the two; with
 * s->relu, the ReLU's gradient applied as dy is packed, and the bias
 * gradient summed from the packed planes (their frames are zero). */
static int cpu_conv_bwd(rt_kernels *b, int l, const rt_conv_shape *s, const float *x,
                         const float *dy, const float *y, const float *w, float *dx, float *dw,
                         float *db) {
  rt_cpu_entry *e = entry_for(b, l);
  assert(!s->xr || !dx);
  if (s->xr && (is_dense(b, l) || s->n == 0 || !xr_fits(b, s)))
    return xr_whole(b, l, s, dy, y, w, NULL, NULL, dw, db);
  if (s->xg && !xg_direct(b, l, s)) return xg_whole(b, l, s, x, dy, y, w, dx, dw, db);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  int id;
  float *buf = s->n > 0 && !is_dense(b, l) ? scratch_get(C(b), &id) : NULL;
  if (!buf && s->xr) return xr_fail(b);
  if (!buf) { /* the dense path has nothing to share */
    if (s->bn) { /* dz made whole, where the host step would have */
      long ohw = (long)s->oh * s->ow;
      for (int i = 0; i < s->n; i++)
        for (int co = 0; co < s->cout; co++)
          bn_dz_rows(s, i, co, bn_dy_plane(s, dy + i * yns, co), s->bn->z + i * yns + co * ohw,
                     s->bn->dz + i * yns + co * ohw, s->ow);
      dy = s->bn->dz;
    }
    int masked = 0; /* dy is the pre-activation's gradient */
    if (s->pooled && s->pcode) { /* z's gradient made whole from the codes (y is not there) */
      long ohw = (long)s->oh * s->ow;
      for (int i = 0; i < s->n; i++)
        for (int co = 0; co < s->cout; co++)
          rt_pool_code_rows(s->oh, s->ow, s->pcode + i * s->pcode_ns + co * (ohw / 4),
                            dy + i * yns + co * (ohw / 4), s->pooled + i * yns + co * ohw, s->ow);
      dy = s->pooled, masked = 1;
    } else if (s->pooled) { /* y's gradient made whole, where the pool's backward would have */
      rt_pool_shape ps = {s->n, s->cout, s->oh, s->ow, 2, yns, yns};
      rt_maxpool_bwd(&ps, 0, s->n, y, dy, s->pooled, 1);
      dy = s->pooled;
    }
    if (s->relu && y && !masked) { /* dy becomes the pre-activation's gradient, in place */
      long ohw = (long)s->cout * s->oh * s->ow;
      for (int i = 0; i < s->n; i++) rt_relu_mask(ohw, y + i * yns, dy + i * yns, (float *)dy + i * yns);
    }
    rt_conv_shape t = *s; /* dy is now z's gradient, whole: nothing left to route */
    t.pooled = NULL, t.pcode = NULL, t.pcode_ns = 0, t.bn = NULL;
    cpu_conv_bwd_weight(b, l, &t, x, dy, dw, db);
    if (dx) cpu_conv_bwd_data(b, l, &t, dy, w, dx);
    for (int i = 0; dx && s->xbn && s->xbn->sums && i < s->n; i++)
      bn_x_sums(s, i, dx + i * xns);
    return 0;
  }
  conv_check(e, s);
  const cg_conv_plan *p = &e->plan;
  /* bias sums first: the buffer's start is aligned for doubles; then wp,
   * dyq, dxp, with the fused kernel its fourth buffer (the gradients'
   * lanes fz: fz_len), and the inputs xp */
  double *bsum = db ? (double *)(void *)buf : NULL;
  /* with a remade input (xr): the samples in aux, the producer's packed
   * output gradient in lbuf, its bias sums in rbsum */
  const rt_conv_src *r = s->xr, *g = s->xg, *src = r ? r : g; /* with xg: x's producer */
  int want = src ? src->dw != NULL : dx != NULL, aid = -1, lid = -1;
  float *aux = src ? scratch_get(C(b), &aid) : NULL;
  float *lbuf = src && want && aux ? scratch_get(C(b), &lid) : NULL;
  double *rbsum = lbuf ? malloc((size_t)src->s.cout * sizeof *rbsum) : NULL;
  if (src && (!aux || (want && (!lbuf || !rbsum)))) {
    free(rbsum);
    if (lbuf) scratch_put(C(b), lbuf, lid);
    if (aux) scratch_put(C(b), aux, aid);
    scratch_put(C(b), buf, id);
    return xr_fail(b);
  }
  size_t xrl = r ? xr_len(s) : 0;
  int direct = r && want && xr_direct(b, s, p); /* else the input remade whole (xr_make) */
  float *rx = aux, *rdx = aux ? aux + lines(CONV_SB * xrl) : NULL;
  rt_conv_shape sa = *s; /* add_dx's into rdx: set */
  sa.dx_assign = 1;
  if (lbuf) xr_wgrad_begin(b, src, rbsum);
  int fused = want && e->fused;
  long xs = fused ? cg_conv_fused_xslot(p) : p->xlen;
  float *wp = buf + lines(2 * (size_t)s->cout), *dyq = wp + wp_len(e);
  float *dxp = dyq + CONV_SB * p->dylen, *fz = dxp + CONV_SB * p->dxlen;
  float *xp = fused ? fz + fz_len(e) : fz;
  pack_w(e, 1, w, wp);
  memset(dw, 0, e->nw * sizeof *dw);
  if (fused) memset(fz, 0, fz_len(e) * sizeof *fz);
  if (bsum) memset(bsum, 0, (size_t)s->cout * sizeof *bsum);
  int rc = 0;
  for (int n0 = 0; n0 < s->n && !rc; n0 += CONV_SB) {
    int nb = s->n - n0 < CONV_SB ? s->n - n0 : CONV_SB;
    if (direct) xr_pack(b, s, p, n0, nb, aux, xp, xs, n0 == 0);
    else if (r && (rc = xr_make(b, s, n0, nb, rx))) break;
    for (int i = 0; i < nb; i++) {
      float *q = dyq + i * p->dylen, *xi = xp + i * xs;
      if (!direct) pack_x(p, s, r ? rx + i * xrl : x + (n0 + i) * xns, xi, n0 + i, xtmp(b, buf, s));
      if (fused) memset(xi + p->xlen, 0, (size_t)(xs - p->xlen) * sizeof *xi);
      pack_dy(p, s, n0 + i, dy + (n0 + i) * yns, s->relu ? y + (n0 + i) * yns : NULL,
                s->pcode ? s->pcode + (n0 + i) * s->pcode_ns : NULL, q);
      if (bsum) bias_sums(s->cout, p->dycs, q, bsum);
    }
    if (fused) {
      e->bwd_fused(dyq, wp, dxp, fz, nb, p->dylen, p->dxlen);
    } else {
      e->bwd_weight(xp, dyq, dw, NULL, nb, p->xlen, p->dylen);
      if (!want) continue;
      e->bwd_data(dyq, wp, dxp, NULL, nb, p->dylen, p->dxlen);
    }
    if (direct) { /* the producer's gradients from dxp */
      xr_wgrad_direct(b, s, r, xr_into(b, s, p, xs), p, nb, aux, xp, xs, dxp, rbsum, lbuf);
      continue;
    }
    if (g) { /* x's producer's, from dxp gated by xp */
      xg_pack(b, s, n0, nb, aux);
      xr_wgrad_direct(b, s, g, 1, p, nb, aux, xp, xs, dxp, rbsum, lbuf);
      continue;
    }
    if (r) { /* x's gradient into aux, and from it the producer's */
      for (int i = 0; i < nb; i++) add_dx(p, &sa, dxp + i * p->dxlen, rdx + i * xrl);
      xr_wgrad(b, s, n0, nb, rx, rdx, rbsum, lbuf);
      continue;
    }
    for (int i = 0; i < nb; i++) {
      add_dx(p, s, dxp + i * p->dxlen, dx + (n0 + i) * xns);
      if (s->xbn && s->xbn->sums) bn_x_sums(s, n0 + i, dx + (n0 + i) * xns); /* while in cache */
    }
  }
  if (lbuf && !rc) xr_wgrad_end(b, src, rbsum, g != NULL || src->bn);
  free(rbsum);
  if (lbuf) scratch_put(C(b), lbuf, lid);
  if (aux) scratch_put(C(b), aux, aid);
  /* the fused kernel's gradients, each the sum of its lanes, in its
   * packed order (a weight whose taps read only padding: a slot no entry
   * adds to, 0); summed once, after every sample */
  for (size_t j = 0; fused && j < e->active; j++)
    dw[e->act[j]] = lanes_sum(fz + (size_t)e->pos[1][j] * e->vw, e->vw);
  for (int co = 0; bsum && co < s->cout; co++)
    db[co] = rt_bias_counts(e->bm, 0, co) ? (float)bsum[co] : 0.0f;
  scratch_put(C(b), buf, id);
  return rc;
}

/* ---- linear ------------------------------------------------------------- */

/* Batch rounded up to a block of NB lanes. */
static int64_t lin_pad(int n, int NB) { return ((int64_t)n + NB - 1) / NB * NB; }

/* src [n][f] (stride ns) -> dst [np/NB][f + extra][NB], padding lanes and
 * the extra rows of each block zero. With bn (samples i0 .. of its call,
 * planes of hw), the features of its channels are made from its windows
 * as rt_bn_x_write would write them (rt_bn_x_lanes), not read from src. */
static void to_lanes(const float *src, int n, int f, int extra, int64_t ns, float *dst,
                     int64_t np, int NB, const rt_bn_x *bn, long hw, int64_t i0) {
  long a = bn ? bn->c0 * hw : f, e = bn ? bn->c1 * hw : f; /* features [a, e) from bn */
  for (int64_t b0 = 0; b0 < np; b0 += NB, dst += (int64_t)(f + extra) * NB) {
    int m = n - b0 < NB ? (int)(n - b0) : NB;
    if (m < NB)
      for (int i = 0; i < f; i++) memset(dst + (int64_t)i * NB + m, 0, (size_t)(NB - m) * sizeof *dst);
    if (m > 0) {
      const float *r = src + b0 * ns;
      if (a > 0) rt_transpose(m, (int)a, r, ns, dst, NB, 0);
      if (e < f) rt_transpose(m, (int)(f - e), r + e, ns, dst + e * NB, NB, 0);
      if (bn) rt_bn_x_lanes(bn, i0 + b0, m, hw, ns, dst, NB);
    }
    memset(dst + (int64_t)f * NB, 0, (size_t)extra * NB * sizeof *dst);
  }
}

/* x whole, with s->xbn, as batch norm's forward would have written it:
 * for the paths that read x as it is (dense, the reference's). */
static void lin_x_write(const rt_linear_shape *s, const float *x, int64_t xns) {
  if (s->xbn && x) rt_bn_x_write(s->xbn, s->n, s->xbn_hw, (long)xns, (float *)x);
}

/* With s->xbn->sums, samples i0 .. i0 + n - 1's row sums of batch norm's
 * channels from dx, their input gradient, made whole (rt_bn_x_sums). */
static void lin_x_sums(const rt_linear_shape *s, int64_t i0, int n, int64_t xns, float *dx) {
  for (int i = 0; s->xbn && s->xbn->sums && dx && i < n; i++)
    rt_bn_x_sums(s->xbn, i0 + i, s->xbn_hw, (long)xns, dx + (i0 + i) * xns);
}

/* The inverse for n real samples: dst[s][i] = (or +=) the lanes. */
static void from_lanes(const float *src, int n, int f, int64_t ns, float *dst, int add, int NB) {
  for (int b0 = 0; b0 < n; b0 += NB, src += (int64_t)f * NB) {
    int m = n - b0 < NB ? n - b0 : NB;
    rt_transpose(f, m, src, NB, dst + b0 * ns, ns, add);
  }
}

/* Piece k of the packing: with p->fill, the first WPACK_PIECES scatter
 * w's active weights into the forward's order, wp0 (the one read of the
 * dense w; its slot `active` is set to 0); the next as many gather the
 * fused backward's wp1 from wp0, which stays in L2 (scattering into both
 * at once missed L2 on most stores). */
static void wpack_piece(rt_cpu_wpack *p, const float *w, int k) {
  const rt_cpu_entry *e = p->e;
  float *wp0 = p->buf, *wp1 = p->buf + wp_len(e);
  if (k < WPACK_PIECES) {
    if (!p->fill) return;
    size_t j0 = e->active * (size_t)k / WPACK_PIECES, j1 = e->active * (size_t)(k + 1) / WPACK_PIECES;
    const int32_t *act = e->act, *pos0 = e->pos[0];
    for (size_t j = j0; j < j1; j++) wp0[pos0[j]] = w[act[j]];
    if (k == 0) wp0[e->active] = 0.0f;
    return;
  }
  k -= WPACK_PIECES;
  size_t k0 = (size_t)e->nbwd * (size_t)k / WPACK_PIECES;
  size_t k1 = (size_t)e->nbwd * (size_t)(k + 1) / WPACK_PIECES;
  for (size_t i = k0; i < k1; i++) wp1[i] = wp0[e->src1[i]];
}

/* Linear layer l's weights packed for its fwd (dir 0) or fused bwd (1)
 * kernel. With s->wgen set, from the layer's pack: made by the first
 * calls of a pass with new values, each caller that arrives while it is
 * made taking pieces of it, and then taken as is by the calls after
 * (the pass's backward, the passes after while the values stay). Without
 * s->wgen, or when the pack cannot grow, packed into scratch. */
static const float *lin_weights(cpu_backend *cb, int l, const rt_cpu_entry *e,
                                const rt_linear_shape *s, const float *w, int dir,
                                float *scratch) {
  rt_cpu_wpack *p = &cb->wpack[l];
  size_t n0 = wp_len(e), need = n0 + (size_t)e->nbwd;
  if (s->wgen) {
    pthread_mutex_lock(&p->mu);
    int same = p->w == w && p->e == e;
    int ready = same && p->gen == s->wgen;
    if (!ready && (!same || p->work != s->wgen)) { /* a new packing */
      if (!same) p->gen0 = 0;
      p->gen = p->work = 0;
      if (p->cap < need) {
        float *q = realloc(p->buf, need * sizeof *q);
        if (q) p->buf = q, p->cap = need;
      }
      if (p->cap >= need) {
        p->work = s->wgen, p->w = w, p->e = e, p->fill = p->gen0 != s->wgen;
        atomic_store(&p->next, 0), atomic_store(&p->done, 0);
      }
    }
    int join = !ready && p->work == s->wgen;
    pthread_mutex_unlock(&p->mu);
    if (join) {
      for (int k; (k = atomic_fetch_add(&p->next, 1)) < 2 * WPACK_PIECES;) {
        while (k >= WPACK_PIECES && /* the second half reads what the first wrote */
               atomic_load_explicit(&p->done, memory_order_acquire) < WPACK_PIECES)
          sched_yield();
        wpack_piece(p, w, k);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
      }
      while (atomic_load_explicit(&p->done, memory_order_acquire) < 2 * WPACK_PIECES)
        sched_yield();
      pthread_mutex_lock(&p->mu);
      if (p->work == s->wgen && p->gen != s->wgen) { /* the one that finishes it */
        p->gen = p->gen0 = s->wgen;
        if (p->fill) __atomic_fetch_add(&cb->st.packs, 1, __ATOMIC_RELAXED); /* locks differ */
      }
      pthread_mutex_unlock(&p->mu);
    }
    if (ready || join) return p->buf + (dir ? n0 : 0);
  }
  pack_w(e, dir, w, scratch);
  return scratch;
}

static void lin_check(const rt_cpu_entry *e, const rt_linear_shape *s) {
  (void)e, (void)s;
  assert(e->kind == IR_LINEAR && s->in == e->shape[0] && s->out == e->shape[3]);
}

static int cpu_linear_fwd(rt_kernels *b, int l, const rt_linear_shape *s, const float *x,
                           const float *w, const float *bias, float *y) {
  rt_cpu_entry *e = entry_for(b, l);
  lin_check(e, s);
  int64_t xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  if (s->n <= 0) return 0;
  if (is_dense(b, l)) {
    lin_x_write(s, x, xns);
    for (int n = 0; n < s->n; n++)
      for (int o = 0; o < s->out; o++)
        y[n * yns + o] = bias && rt_bias_counts(e->bm, 0, o) ? bias[o] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->n, s->out, s->in, 1.0f, x,
                (int)xns, w, s->in, 1.0f, y, (int)yns);
    return 0;
  }
  int id;
  float *buf = scratch_get(C(b), &id);
  if (!buf) {
    lin_x_write(s, x, xns);
    rt_ref_linear_fwd(s, x, w, bias, e->wm, e->bm, y);
    return 0;
  }
  /* blocks of two lane blocks, transposed into lanes and back */
  float *xT = buf + wp_len(e), *yT = xT + (int64_t)LIN_SUB * s->in;
  const float *wp = lin_weights(C(b), l, e, s, w, 0, buf);
  int NB = e->lanes, sub = 2 * NB;
  for (int n0 = 0; n0 < s->n; n0 += sub) {
    int nb = s->n - n0 < sub ? s->n - n0 : sub;
    int64_t np = lin_pad(nb, NB);
    to_lanes(x + n0 * xns, nb, s->in, 0, xns, xT, np, NB, s->xbn, s->xbn_hw, n0);
    /* The kernels take non-const pointers (one C type for all of them) */
    e->fwd(xT, (float *)wp, (float *)bias, yT, np, 0, 0);
    from_lanes(yT, nb, s->out, yns, y + n0 * yns, 0, NB);
  }
  scratch_put(C(b), buf, id);
  return 0;
}

/* dw = the packed gradients dwp of the fused bwd where active, 0 elsewhere:
 * cleared and filled by blocks of 64K weights, which stay in L2 from the
 * clearing to the scatter (clearing all of a large dw first left the
 * scatter missing on most of its lines). */
static void scatter_dw(const rt_cpu_entry *e, const float *dwp, float *dw) {
  enum { BLK = 1 << 16 };
  const int32_t *act = e->act, *pos = e->pos[1];
  size_t j = 0;
  for (size_t i0 = 0; i0 < e->nw; i0 += BLK) {
    size_t i1 = i0 + BLK < e->nw ? i0 + BLK : e->nw;
    memset(dw + i0, 0, (i1 - i0) * sizeof *dw);
    for (; j < e->active && (size_t)act[j] < i1; j++) dw[act[j]] = dwp[pos[j]];
  }
}

/* Both backward directions, or either (dx or dw NULL): dense, both on
 * OpenBLAS; sparse, one pass of the fused kernel, whose packed weight
 * gradients are scattered into dw at the end. */
static int cpu_linear_bwd(rt_kernels *b, int l, const rt_linear_shape *s, const float *x,
                           const float *dy, const float *w, float *dx, float *dw, float *db) {
  rt_cpu_entry *e = entry_for(b, l);
  lin_check(e, s);
  int64_t xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  int id = -1, packed = b->packed_wgrad && !is_dense(b, l);
  float *buf = s->n > 0 && !is_dense(b, l) ? scratch_get(C(b), &id) : NULL;
  if (s->n > 0 && !is_dense(b, l) && !buf) {
    if (dw) lin_x_write(s, x, xns), rt_ref_linear_bwd_weight(s, x, dy, e->wm, e->bm, dw, db);
    if (dw && packed) /* in place: act[j] >= j */
      for (size_t j = 0; j < e->active; j++) dw[j] = dw[e->act[j]];
    if (dx) rt_ref_linear_bwd_data(s, dy, w, e->wm, dx), lin_x_sums(s, 0, s->n, xns, dx);
    return 0;
  }
  if (dw && s->n > 0 && is_dense(b, l)) { /* beta 0: sgemm overwrites all of dw */
    lin_x_write(s, x, xns);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->out, s->in, s->n, 1.0f, dy,
                (int)yns, x, (int)xns, 0.0f, dw, s->in);
    if (e->active < e->nw) rt_zero_masked(dw, e->wm, e->nw);
  }
  if (dx && s->n > 0 && is_dense(b, l)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->in, s->out, 1.0f, dy,
                (int)yns, w, s->in, 1.0f, dx, (int)xns);
    lin_x_sums(s, 0, s->n, xns, dx);
  }
  if (buf) {
    enum { NB = CG_LIN_BWD_NB };
    /* scratch: [wp] [dwp dxT] [xT] [dyT]; c of the kernel is dwp then dxT,
     * dwp placed so that dxT starts a line */
    float *wp = buf, *dxT = buf + 2 * lines((size_t)e->nbwd), *dwp = dxT - e->nbwd;
    float *xT = dxT + (int64_t)LIN_SUB * s->in, *dyT = xT + (int64_t)LIN_SUB * s->in;
    /* a call for one direction gives the other zeros (its result unused) */
    const float *wk = wp;
    if (w) wk = lin_weights(C(b), l, e, s, w, 1, wp);
    else memset(wp, 0, (size_t)e->nbwd * sizeof *wp);
    memset(dwp, 0, (size_t)e->nbwd * sizeof *dwp);
    for (int n0 = 0; n0 < s->n; n0 += LIN_SUB) {
      int nb = s->n - n0 < LIN_SUB ? s->n - n0 : LIN_SUB;
      int64_t np = lin_pad(nb, NB);
      if (x) to_lanes(x + n0 * xns, nb, s->in, 0, xns, xT, np, NB, s->xbn, s->xbn_hw, n0);
      else memset(xT, 0, (size_t)(np * s->in) * sizeof *xT);
      to_lanes(dy + n0 * yns, nb, s->out, 1, yns, dyT, np, NB, NULL, 0, 0);
      e->bwd(xT, dyT, dwp, (float *)wk, np, 0, 0);
      if (dx) from_lanes(dxT, nb, s->in, xns, dx + n0 * xns, 1, NB);
      lin_x_sums(s, n0, nb, xns, dx); /* while dx is in cache */
    }
    if (dw && packed) { /* the kernel's order to the packed layout */
      const int32_t *pos = e->pos[1];
      for (size_t j = 0; j < e->active; j++) dw[j] = dwp[pos[j]];
    } else if (dw) {
      scatter_dw(e, dwp, dw);
    }
    scratch_put(C(b), buf, id);
  } else if (dw && s->n <= 0) {
    memset(dw, 0, (packed ? e->active : e->nw) * sizeof *dw);
  }
  if (!dw || !db) return 0;
  /* by rows of dy, in blocks of outputs: contiguous loads, not a column
   * walk per output */
  enum { OB = 256 };
  for (int o0 = 0; o0 < s->out; o0 += OB) {
    int m = s->out - o0 < OB ? s->out - o0 : OB;
    double acc[OB] = {0};
    for (int n = 0; n < s->n; n++)
      for (int o = 0; o < m; o++) acc[o] += dy[n * yns + o0 + o];
    for (int o = 0; o < m; o++)
      db[o0 + o] = rt_bias_counts(e->bm, 0, o0 + o) ? (float)acc[o] : 0.0f;
  }
  return 0;
}

/* With packed_wgrad, the sparse linear layers' gradients are packed in
 * mask order (e->act); conv and dense layers stay dense. */
static const int32_t *cpu_wgrad_index(rt_kernels *b, int l, size_t *n) {
  rt_cpu_entry *e = C(b)->layer[l];
  if (!b->packed_wgrad || !e || e->kind != IR_LINEAR || is_dense(b, l) || !e->compiled)
    return NULL;
  *n = e->active;
  return e->act;
}

/* A sparse linear layer's forward packing, where it holds w's values named
 * `from`: the SGD step writes the new weights into it (the j-th active
 * weight at pos[0][j]: runs of consecutive places, one output's inputs
 * in one slice), and the next pass gathers the fused backward's from it
 * with no read of the dense w. */
static float *cpu_wcopy(rt_kernels *b, int l, const float *w, uint64_t from, uint64_t to,
                        const int32_t **at) {
  cpu_backend *cb = C(b);
  const rt_cpu_entry *e = cb->layer[l];
  rt_cpu_wpack *p = &cb->wpack[l];
  size_t n;
  float *copy = NULL;
  if (!cpu_wgrad_index(b, l, &n)) return NULL; /* no packed layout */
  pthread_mutex_lock(&p->mu);
  if (from && p->gen0 == from && p->w == w && p->e == e) {
    copy = p->buf, *at = e->pos[0];
    p->gen0 = to;
  }
  pthread_mutex_unlock(&p->mu);
  return copy;
}

static int cpu_linear_bwd_data(rt_kernels *b, int l, const rt_linear_shape *s, const float *dy,
                                const float *w, float *dx) {
  cpu_linear_bwd(b, l, s, NULL, dy, w, dx, NULL, NULL);
  return 0;
}

static int cpu_linear_bwd_weight(rt_kernels *b, int l, const rt_linear_shape *s, const float *x,
                                  const float *dy, float *dw, float *db) {
  cpu_linear_bwd(b, l, s, x, dy, NULL, NULL, dw, db);
  return 0;
}

/* ---- lifetime ----------------------------------------------------------- */

static void cpu_free(rt_kernels *b) {
  if (!b) return;
  cpu_backend *cb = C(b);
  while (cb->cache) {
    rt_cpu_entry *e = cb->cache;
    cb->cache = e->next;
    entry_free(cb, e);
  }
  if (cb->jit) LLVMOrcDisposeLLJIT(cb->jit);
  LLVMDisposeMessage(cb->triple), LLVMDisposeMessage(cb->cpu), LLVMDisposeMessage(cb->feat);
  for (int i = 0; i < NSLOT; i++) free(cb->slots[i].buf);
  for (int l = 0; cb->wpack && l < b->g->n_layers; l++) {
    pthread_mutex_destroy(&cb->wpack[l].mu);
    free(cb->wpack[l].buf);
  }
  free(cb->layer), free(cb->dense), free(cb->wpack);
  free(cb);
}

void rt_cpu_set_dense_threshold(rt_kernels *b, double conv, double linear) {
  assert(b && strcmp(b->name, "cpu") == 0);
  C(b)->thr_conv = conv, C(b)->thr_lin = linear;
}

int rt_cpu_layer_dense(const rt_kernels *b, int layer) {
  assert(b && strcmp(b->name, "cpu") == 0 && layer >= 0 && layer < b->g->n_layers);
  return ((const cpu_backend *)b)->dense[layer];
}

int rt_cpu_set_lanes(rt_kernels *b, int vw) {
  assert(b && strcmp(b->name, "cpu") == 0);
  if (vw != 8 && vw != 16) return -1;
  C(b)->vw = vw;
  return 0;
}

int rt_cpu_lanes(const rt_kernels *b) {
  assert(b && strcmp(b->name, "cpu") == 0);
  return ((const cpu_backend *)b)->vw;
}

void rt_cpu_set_unroll(rt_kernels *b, int on) {
  assert(b && strcmp(b->name, "cpu") == 0);
  C(b)->no_unroll = !on;
}

rt_cpu_stats rt_cpu_get_stats(const rt_kernels *b) {
  assert(b && strcmp(b->name, "cpu") == 0);
  return ((const cpu_backend *)b)->st;
}

rt_kernels *rt_kernels_cpu_new(const ir_graph *g, char *err, size_t errlen) {
  pthread_once(&cpu_once, cpu_init_llvm);
  if (cpu_init_failed) {
    snprintf(err, errlen, "cpu backend: this LLVM has no code generator for the host");
    return NULL;
  }
  cpu_backend *cb = calloc(1, sizeof *cb);
  size_t nl = (size_t)(g->n_layers ? g->n_layers : 1);
  if (!cb || !(cb->layer = calloc(nl, sizeof *cb->layer)) ||
      !(cb->dense = calloc(nl, sizeof *cb->dense)) ||
      !(cb->wpack = calloc(nl, sizeof *cb->wpack))) {
    if (cb) free(cb->layer), free(cb->dense);
    free(cb);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  for (int i = 0; i < NSLOT; i++) atomic_flag_clear(&cb->slots[i].busy);
  for (int l = 0; l < g->n_layers; l++) pthread_mutex_init(&cb->wpack[l].mu, NULL);
  cb->thr_conv = RT_CPU_DENSE_CONV_AUTO, cb->thr_lin = RT_CPU_DENSE_LINEAR_AUTO;
  /* exec splits the batch into one chunk per thread and calls the backend
   * on each at once: OpenBLAS threading inside would oversubscribe the
   * cores. OpenBLAS 0.3.21 has no per-call thread count; this is global. */
  openblas_set_num_threads(1);
  cb->pub = (rt_kernels){.name = "cpu", .g = g, .prepare = cpu_prepare,
                         .conv_fwd = cpu_conv_fwd, .conv_bwd_data = cpu_conv_bwd_data,
                         .conv_bwd_weight = cpu_conv_bwd_weight, .linear_fwd = cpu_linear_fwd,
                         .linear_bwd_data = cpu_linear_bwd_data,
                         .linear_bwd_weight = cpu_linear_bwd_weight, .free = cpu_free,
                         .fuses_relu = 1, .assigns_dx = 1, .bn_dz = 1, .bn_x = 1,
                         .pool_dy = 1, .pool_fwd = 1, .bn_mom = 1, .remat = 1, .conv_bwd = cpu_conv_bwd,
                         .linear_bwd = cpu_linear_bwd,
                         .prepare_layers = cpu_prepare_layers, .threads = 1,
                         .wgrad_index = cpu_wgrad_index, .wcopy = cpu_wcopy};
  /* The JIT generates code for this CPU, with its vector extensions. */
  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef er = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  if (er) {
    llvm_fail(er, "detecting the host", err, errlen);
    cpu_free(&cb->pub);
    return NULL;
  }
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);
  LLVMJITEventListenerRef perf = perf_wanted() ? LLVMCreatePerfJITEventListener() : NULL;
  if (perf) LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator(jb, perf_layer, perf);
  else if (perf_wanted()) {
    LLVMOrcDisposeLLJITBuilder(jb);
    snprintf(err, errlen, "ILNAS_PERF: this LLVM was built without perf support (LLVM_USE_PERF)");
    cpu_free(&cb->pub);
    return NULL;
  }
  if ((er = LLVMOrcCreateLLJIT(&cb->jit, jb))) {
    cb->jit = NULL;
    llvm_fail(er, "starting the JIT", err, errlen);
    cpu_free(&cb->pub);
    return NULL;
  }
  /* The optimiser turns zeroing and copying loops into memset/memcpy
   * calls: the kernels resolve them from this process. */
  LLVMOrcDefinitionGeneratorRef dg;
  if ((er = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
           &dg, LLVMOrcLLJITGetGlobalPrefix(cb->jit), NULL, NULL))) {
    llvm_fail(er, "resolving process symbols", err, errlen);
    cpu_free(&cb->pub);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(cb->jit), dg);
  /* The same host machine for the kernels, built to objects that the JIT
   * links: vector widths and costs of this CPU. */
  const char *triple = LLVMOrcLLJITGetTripleString(cb->jit);
  LLVMTargetRef t;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    snprintf(err, errlen, "cpu backend: %s", msg ? msg : "no target");
    LLVMDisposeMessage(msg);
    cpu_free(&cb->pub);
    return NULL;
  }
  cb->target = t;
  cb->triple = LLVMCreateMessage(triple);
  cb->cpu = LLVMGetHostCPUName(), cb->feat = LLVMGetHostCPUFeatures();
  cb->vw = has_feature(cb->feat, "+avx512f") ? 16 : 8;
  const char *core = openblas_get_corename();
  cb->wide_gemm = core && (strcasecmp(core, "SkylakeX") == 0 || strcasecmp(core, "Cooperlake") == 0 ||
                           strcasecmp(core, "SapphireRapids") == 0);
  LLVMTargetMachineRef tm = host_tm(cb);
  if (!tm) {
    snprintf(err, errlen, "cpu backend: cannot create a target machine for %s", triple);
    cpu_free(&cb->pub);
    return NULL;
  }
  LLVMDisposeTargetMachine(tm);
  return &cb->pub;
}
