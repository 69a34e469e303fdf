/* cpu.c: the CPU backend. Every conv and linear layer gets kernels
 * generated for its shapes and α pattern (codegen/sparse.h), optimised at
 * O3 for the host CPU and compiled in-process by an ORC LLJIT owned by the
 * backend. Compiled layers are cached by (op, shapes, pattern): prepare()
 * hashes the masks, and only a pattern not seen before is compiled. An
 * entry no layer uses any more is removed from the JIT, so memory stays
 * bounded over a long growing run.
 *
 * The linear kernels take the batch as their vector dimension, so the
 * wrappers here transpose activations into scratch (O(n * features),
 * small next to the O(n * active weights) of the kernel). Bias gradients
 * are summed here, in double like the reference. */
#include "runtime/cpu/cpu.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "codegen/sparse.h"

typedef void (*rt_kern)(float *, float *, float *, float *, int64_t, int64_t, int64_t);

typedef struct rt_cpu_entry {
  uint64_t hash;
  int kind;                   /* IR_CONV or IR_LINEAR */
  int shape[7];               /* cin, h, w, cout, k, stride, pad */
  uint8_t *wm, *bm;           /* the pattern compiled (copies) */
  size_t nw, nb;
  int refs;                   /* layers using it */
  LLVMOrcResourceTrackerRef rt; /* its code in the JIT */
  rt_kern fwd, bwd_data, bwd_weight;
  struct rt_cpu_entry *next;
} rt_cpu_entry;

typedef struct cpu_backend {
  rt_backend pub;
  LLVMOrcLLJITRef jit;
  LLVMTargetMachineRef tm;    /* host machine, for the optimiser's cost model */
  rt_cpu_entry *cache;
  rt_cpu_entry **layer;       /* per layer, NULL until prepared */
  long serial;                /* names modules uniquely */
  rt_cpu_stats st;
} cpu_backend;

static cpu_backend *C(rt_backend *b) { return (cpu_backend *)b; }

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

static void entry_free(cpu_backend *cb, rt_cpu_entry *e) {
  if (e->rt) {
    LLVMErrorRef er = LLVMOrcResourceTrackerRemove(e->rt);
    if (er) LLVMConsumeError(er);
    LLVMOrcReleaseResourceTracker(e->rt);
    cb->st.cached--;
  }
  free(e->wm), free(e->bm), free(e);
}

/* ---- compiling one layer --------------------------------------------- */

static int compile_entry(cpu_backend *cb, rt_cpu_entry *e, char *err, size_t errlen) {
  double t0 = now_s();
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
  char names[3][64];
  const char *ops[3] = {"fwd", "bwd_data", "bwd_weight"};
  long id = cb->serial++;
  for (int i = 0; i < 3; i++) snprintf(names[i], sizeof names[i], "ilnas_k%ld_%s", id, ops[i]);
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(names[0], ctx);
  LLVMSetTarget(m, LLVMOrcLLJITGetTripleString(cb->jit));
  LLVMSetDataLayout(m, LLVMOrcLLJITGetDataLayoutStr(cb->jit));
  int rc = 0;
  if (e->kind == IR_CONV) {
    cg_conv_desc d = {e->shape[0], e->shape[1], e->shape[2], e->shape[3],
                      e->shape[4], e->shape[5], e->shape[6], e->wm, e->bm};
    rc = cg_sparse_conv_fwd(m, &d, names[0]) || cg_sparse_conv_bwd_data(m, &d, names[1]) ||
         cg_sparse_conv_bwd_weight(m, &d, names[2]);
  } else {
    cg_linear_desc d = {e->shape[0], e->shape[3], e->wm, e->bm};
    rc = cg_sparse_linear_fwd(m, &d, names[0]) || cg_sparse_linear_bwd_data(m, &d, names[1]) ||
         cg_sparse_linear_bwd_weight(m, &d, names[2]);
  }
  char *msg = NULL;
  if (!rc && LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "cpu backend: generated module is invalid: %s", msg);
    rc = -1;
  } else if (rc) {
    snprintf(err, errlen, "cpu backend: layer too large to index with 32 bits or bad shape");
  }
  LLVMDisposeMessage(msg);
  if (rc) {
    LLVMDisposeModule(m);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return -1;
  }
  double t1 = now_s();
  cb->st.emit_s += t1 - t0;
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
  /* No unrolling: the row and column loops have constant trip counts, and
   * fully unrolling them for every tap made modules ten times larger and
   * compiles seconds long, for no measurable gain over vectorised loops. */
  LLVMPassBuilderOptionsSetLoopUnrolling(po, 0);
  LLVMPassBuilderOptionsSetLoopInterleaving(po, 1);
  LLVMErrorRef er = LLVMRunPasses(m, "default<O3>", cb->tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (er) {
    LLVMDisposeModule(m);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return llvm_fail(er, "optimising", err, errlen);
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc); /* the module holds its own reference */
  e->rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(cb->jit));
  cb->st.cached++;
  er = LLVMOrcLLJITAddLLVMIRModuleWithRT(cb->jit, e->rt, tsm);
  if (er) /* the JIT owns the module even when adding fails */
    return llvm_fail(er, "adding a module", err, errlen);
  rt_kern *slot[3] = {&e->fwd, &e->bwd_data, &e->bwd_weight};
  for (int i = 0; i < 3; i++) {
    LLVMOrcExecutorAddress a = 0;
    /* The first lookup materialises the module: this is the compile. */
    if ((er = LLVMOrcLLJITLookup(cb->jit, &a, names[i])))
      return llvm_fail(er, "compiling", err, errlen);
    /* An executor address is the code's address in this process; the
     * conversion to a function pointer is how the JIT's C API is used. */
    uintptr_t ip = (uintptr_t)a;
    memcpy(slot[i], &ip, sizeof ip);
  }
  cb->st.compile_s += now_s() - t1;
  cb->st.compiles++;
  return 0;
}

static int cpu_prepare(rt_backend *b, int layer, const uint8_t *wmask, const uint8_t *bmask,
                       char *err, size_t errlen) {
  cpu_backend *cb = C(b);
  assert(layer >= 0 && layer < b->g->n_layers);
  const ir_layer *l = &b->g->layers[layer];
  if (l->kind != IR_CONV && l->kind != IR_LINEAR) {
    snprintf(err, errlen, "cpu backend: layer %d (%s) has no weights", layer, l->name);
    return -1;
  }
  int k = l->kind == IR_CONV ? l->k : 1;
  size_t nw = (size_t)l->cout * (size_t)l->cin * (size_t)k * (size_t)k, nb = (size_t)l->cout;
  int shape[7] = {l->cin, l->h, l->w, l->cout, k, l->kind == IR_CONV ? l->stride : 1,
                  l->kind == IR_CONV ? l->pad : 0};
  uint8_t *wm = norm_mask(wmask, nw), *bm = norm_mask(bmask, nb);
  if (!wm || !bm) {
    free(wm), free(bm);
    snprintf(err, errlen, "cpu backend: out of memory");
    return -1;
  }
  uint64_t h = mix(0x1234567ull, (uint64_t)l->kind);
  for (int i = 0; i < 7; i++) h = mix(h, (uint64_t)(uint32_t)shape[i]);
  h = hash_bytes(hash_bytes(h, wm, nw), bm, nb);
  rt_cpu_entry *e = cb->cache;
  for (; e; e = e->next)
    if (e->hash == h && e->kind == (int)l->kind && !memcmp(e->shape, shape, sizeof shape) &&
        e->nw == nw && !memcmp(e->wm, wm, nw) && !memcmp(e->bm, bm, nb))
      break;
  if (e) {
    cb->st.hits++;
    free(wm), free(bm);
  } else {
    e = calloc(1, sizeof *e);
    if (!e) {
      free(wm), free(bm);
      snprintf(err, errlen, "cpu backend: out of memory");
      return -1;
    }
    *e = (rt_cpu_entry){.hash = h, .kind = (int)l->kind, .wm = wm, .bm = bm, .nw = nw, .nb = nb};
    memcpy(e->shape, shape, sizeof shape);
    if (compile_entry(cb, e, err, errlen)) {
      entry_free(cb, e);
      return -1;
    }
    e->next = cb->cache;
    cb->cache = e;
  }
  e->refs++;
  rt_cpu_entry *old = cb->layer[layer];
  cb->layer[layer] = e;
  if (old && --old->refs == 0) { /* no layer has that pattern any more */
    rt_cpu_entry **p = &cb->cache;
    while (*p != old) p = &(*p)->next;
    *p = old->next;
    entry_free(cb, old);
  }
  return 0;
}

/* ---- conv --------------------------------------------------------------- */

static rt_cpu_entry *entry_for(rt_backend *b, int layer) {
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

static void cpu_conv_fwd(rt_backend *b, int l, const rt_conv_shape *s, const float *x,
                         const float *w, const float *bias, float *y) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  /* The kernels take non-const pointers (one C type for all of them);
   * they only write their output. */
  e->fwd((float *)x, (float *)w, (float *)bias, y, s->n, xns, yns);
}

static void cpu_conv_bwd_data(rt_backend *b, int l, const rt_conv_shape *s, const float *dy,
                              const float *w, float *dx) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  e->bwd_data((float *)dy, (float *)w, dx, NULL, s->n, xns, yns);
}

static void cpu_conv_bwd_weight(rt_backend *b, int l, const rt_conv_shape *s, const float *x,
                                const float *dy, float *dw, float *db) {
  rt_cpu_entry *e = entry_for(b, l);
  conv_check(e, s);
  int64_t xns, yns;
  conv_strides(s, &xns, &yns);
  memset(dw, 0, e->nw * sizeof *dw); /* masked weights: exactly 0 */
  e->bwd_weight((float *)x, (float *)dy, dw, NULL, s->n, xns, yns);
  if (!db) return;
  long ohw = (long)s->oh * s->ow;
  for (int co = 0; co < s->cout; co++) {
    double acc = 0.0;
    if (e->bm[co])
      for (int n = 0; n < s->n; n++) {
        const float *p = dy + n * yns + co * ohw;
        float plane = 0.0f;
        for (long i = 0; i < ohw; i++) plane += p[i];
        acc += plane;
      }
    db[co] = (float)acc;
  }
}

/* ---- linear ------------------------------------------------------------- */

/* Batch rounded up to the kernels' block of lanes. */
static int64_t lin_pad(int n) { return ((int64_t)n + CG_LIN_NB - 1) / CG_LIN_NB * CG_LIN_NB; }

/* src [n][f] (stride ns) -> dst [f][np], padding lanes zero. */
static void to_lanes(const float *src, int n, int f, int64_t ns, float *dst, int64_t np) {
  for (int i = 0; i < f; i++) {
    float *d = dst + i * np;
    for (int s = 0; s < n; s++) d[s] = src[s * ns + i];
    for (int64_t s = n; s < np; s++) d[s] = 0.0f;
  }
}

static void lin_check(const rt_cpu_entry *e, const rt_linear_shape *s) {
  (void)e, (void)s;
  assert(e->kind == IR_LINEAR && s->in == e->shape[0] && s->out == e->shape[3]);
}

static void cpu_linear_fwd(rt_backend *b, int l, const rt_linear_shape *s, const float *x,
                           const float *w, const float *bias, float *y) {
  rt_cpu_entry *e = entry_for(b, l);
  lin_check(e, s);
  int64_t np = lin_pad(s->n), xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  if (s->n <= 0) return;
  float *xT = malloc((size_t)np * (size_t)(s->in + s->out) * sizeof *xT);
  if (!xT) { /* no scratch: the reference computes the same thing */
    rt_ref_linear_fwd(s, x, w, bias, e->wm, e->bm, y);
    return;
  }
  float *yT = xT + np * s->in;
  to_lanes(x, s->n, s->in, xns, xT, np);
  e->fwd(xT, (float *)w, (float *)bias, yT, np, 0, 0);
  for (int n = 0; n < s->n; n++)
    for (int o = 0; o < s->out; o++) y[n * yns + o] = yT[o * np + n];
  free(xT);
}

static void cpu_linear_bwd_data(rt_backend *b, int l, const rt_linear_shape *s, const float *dy,
                                const float *w, float *dx) {
  rt_cpu_entry *e = entry_for(b, l);
  lin_check(e, s);
  int64_t np = lin_pad(s->n), xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  if (s->n <= 0) return;
  float *dyT = malloc((size_t)np * (size_t)(s->in + s->out) * sizeof *dyT);
  if (!dyT) {
    rt_ref_linear_bwd_data(s, dy, w, e->wm, dx);
    return;
  }
  float *dxT = dyT + np * s->out;
  to_lanes(dy, s->n, s->out, yns, dyT, np);
  e->bwd_data(dyT, (float *)w, dxT, NULL, np, 0, 0);
  for (int n = 0; n < s->n; n++)
    for (int i = 0; i < s->in; i++) dx[n * xns + i] += dxT[i * np + n];
  free(dyT);
}

static void cpu_linear_bwd_weight(rt_backend *b, int l, const rt_linear_shape *s, const float *x,
                                  const float *dy, float *dw, float *db) {
  rt_cpu_entry *e = entry_for(b, l);
  lin_check(e, s);
  int64_t np = lin_pad(s->n), xns = s->x_ns ? s->x_ns : s->in, yns = s->y_ns ? s->y_ns : s->out;
  float *xT = s->n > 0 ? malloc((size_t)np * (size_t)(s->in + s->out) * sizeof *xT) : NULL;
  if (s->n > 0 && !xT) {
    rt_ref_linear_bwd_weight(s, x, dy, e->wm, e->bm, dw, db);
    return;
  }
  memset(dw, 0, e->nw * sizeof *dw); /* masked weights: exactly 0 */
  if (xT) {
    float *dyT = xT + np * s->in;
    to_lanes(x, s->n, s->in, xns, xT, np);
    to_lanes(dy, s->n, s->out, yns, dyT, np);
    e->bwd_weight(xT, dyT, dw, NULL, np, 0, 0);
    free(xT);
  }
  if (!db) return;
  for (int o = 0; o < s->out; o++) {
    double acc = 0.0;
    if (e->bm[o])
      for (int n = 0; n < s->n; n++) acc += dy[n * yns + o];
    db[o] = (float)acc;
  }
}

/* ---- lifetime ----------------------------------------------------------- */

static void cpu_free(rt_backend *b) {
  if (!b) return;
  cpu_backend *cb = C(b);
  while (cb->cache) {
    rt_cpu_entry *e = cb->cache;
    cb->cache = e->next;
    entry_free(cb, e);
  }
  if (cb->jit) LLVMOrcDisposeLLJIT(cb->jit);
  if (cb->tm) LLVMDisposeTargetMachine(cb->tm);
  free(cb->layer);
  free(cb);
}

rt_cpu_stats rt_cpu_get_stats(const rt_backend *b) {
  assert(b && strcmp(b->name, "cpu") == 0);
  return ((const cpu_backend *)b)->st;
}

rt_backend *rt_backend_cpu_new(const ir_graph *g, char *err, size_t errlen) {
  pthread_once(&cpu_once, cpu_init_llvm);
  if (cpu_init_failed) {
    snprintf(err, errlen, "cpu backend: this LLVM has no code generator for the host");
    return NULL;
  }
  cpu_backend *cb = calloc(1, sizeof *cb);
  if (!cb || !(cb->layer = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof *cb->layer))) {
    free(cb);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  cb->pub = (rt_backend){"cpu", g, cpu_prepare, cpu_conv_fwd, cpu_conv_bwd_data,
                         cpu_conv_bwd_weight, cpu_linear_fwd, cpu_linear_bwd_data,
                         cpu_linear_bwd_weight, cpu_free};
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
  /* The same host machine, for the optimiser: vector widths and costs. */
  const char *triple = LLVMOrcLLJITGetTripleString(cb->jit);
  LLVMTargetRef t;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    snprintf(err, errlen, "cpu backend: %s", msg ? msg : "no target");
    LLVMDisposeMessage(msg);
    cpu_free(&cb->pub);
    return NULL;
  }
  char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures();
  cb->tm = LLVMCreateTargetMachine(t, triple, cpu, feat, LLVMCodeGenLevelAggressive,
                                   LLVMRelocDefault, LLVMCodeModelJITDefault);
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(feat);
  if (!cb->tm) {
    snprintf(err, errlen, "cpu backend: cannot create a target machine for %s", triple);
    cpu_free(&cb->pub);
    return NULL;
  }
  return &cb->pub;
}
