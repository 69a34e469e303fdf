/* test_gpu_emu: the GPU kernels' semantics, checked without a GPU.
 *
 * The generators write target-independent IR whose only GPU-specific part
 * is the special-register reads (tid.x, ctaid.x, ntid.x). Here those three
 * declarations are renamed into ordinary functions that read globals of
 * the module, the module is JIT-compiled for the host, and every thread of
 * a launch is run one after another (ntid = 1, tid = 0, ctaid = the
 * thread's index). Each kernel is called exactly as runtime/cuda/cuda.c
 * calls it (same buffers, strides, thread counts, dw zeroed first) and
 * compared with the reference kernels by normalised error (<= 1e-5), over
 * random shapes, strides, paddings, channel-prefix views and densities
 * from empty to full. What this cannot catch is the NVPTX lowering and the
 * driver calls: test_gpu_ptx and test_gpu_ops cover those. */
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include "kgen/ptx.h"
#include "runtime/ref.h"
#include "tests/gpu/emu_driver.h"
#include "tests/jit/jitutil.h"

#define TOL 1e-5

typedef void (*kern)(float *, float *, float *, float *, int64_t, int64_t, int64_t);

enum { EMU_MAX_FN = 7 };

typedef struct emu {
  LLVMOrcLLJITRef jit;
  kern fn[EMU_MAX_FN];        /* layer: fwd, bwd_data, bwd_weight, bias */
  int32_t *ctaid;             /* the module's "blockIdx.x" */
  cg_ptx_table *tabs;         /* the kernels' tables, which their globals point at */
  size_t ntabs;
} emu;

/* The kernels a generator callback adds to m, named names[0..nfn). */
typedef int (*emu_gen)(LLVMModuleRef m, const void *arg);

/* Builds the kernels and JIT-compiles them for the host. */
static int emu_build(emu *E, emu_gen gen, const void *arg, const char *const *names, int nfn) {
  memset(E, 0, sizeof *E);
  E->jit = emu_jit_new();
  if (!E->jit) return -1;
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("emu", LLVMOrcThreadSafeContextGetContext(tsc));
  int rc = gen(m, arg);
  CHECK(rc == 0, "generator refused the layer");
  E->tabs = cg_ptx_take_tables(m, &E->ntabs);
  CHECK(E->tabs != NULL, "tables not taken");
  emu_sreg(m, "tid.x", 0);
  emu_sreg(m, "ntid.x", 1);
  emu_sreg(m, "ctaid.x", 0);
  LLVMSetTarget(m, LLVMOrcLLJITGetTripleString(E->jit));
  LLVMSetDataLayout(m, LLVMOrcLLJITGetDataLayoutStr(E->jit));
  char *msg = NULL;
  if (!rc && LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    CHECK(0, "invalid module: %s", msg);
    rc = -1;
  }
  LLVMDisposeMessage(msg);
  if (rc) {
    LLVMDisposeModule(m);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return -1;
  }
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(m, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc);
  LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(E->jit, LLVMOrcLLJITGetMainJITDylib(E->jit), tsm);
  if (e) {
    char *em = LLVMGetErrorMessage(e);
    CHECK(0, "adding module: %s", em);
    LLVMDisposeErrorMessage(em);
    return -1;
  }
  for (int i = 0; i < nfn; i++) {
    void *p = emu_lookup(E->jit, names[i]);
    if (!p) return -1;
    memcpy(&E->fn[i], &p, sizeof p);
  }
  /* What the CUDA backend does with cuModuleGetGlobal: each table's
   * variable points at its data (host memory here). */
  for (size_t i = 0; i < E->ntabs; i++) {
    void **var = emu_lookup(E->jit, E->tabs[i].name);
    if (!var) return -1;
    *var = E->tabs[i].data;
  }
  E->ctaid = emu_lookup(E->jit, "emu_ctaid");
  return E->ctaid ? 0 : -1;
}

/* A layer's kernels and the preparation of their inputs (padded for conv,
 * batch-wide for linear), as runtime/cuda/kern.c builds them. */
enum { E_FWD, E_BWD_DATA, E_BWD_WEIGHT, E_BIAS, E_PREP_X, E_PREP_DY, E_WSUM };
typedef struct layer_arg {
  int kind;
  const cg_conv_desc *cd;
  const cg_linear_desc *ld;
  int64_t nout, plane;
  const uint8_t *bm;
} layer_arg;

static int gen_layer(LLVMModuleRef m, const void *arg) {
  const layer_arg *a = arg;
  int rc = a->kind == IR_CONV
               ? cg_ptx_conv_fwd(m, a->cd, "k_fwd") || cg_ptx_conv_bwd_data(m, a->cd, "k_bwd_data") ||
                     cg_ptx_conv_bwd_weight(m, a->cd, "k_bwd_weight")
               : cg_ptx_linear_fwd(m, a->ld, "k_fwd") || cg_ptx_linear_bwd_data(m, a->ld, "k_bwd_data") ||
                     cg_ptx_linear_bwd_weight(m, a->ld, "k_bwd_weight");
  rc = rc || cg_ptx_bias_grad(m, a->nout, a->plane, a->bm, "k_bias");
  if (a->kind != IR_CONV) /* k_wsum: a stand-in so that the names resolve */
    return rc || cg_ptx_to_cm(m, a->ld->in, 1, "k_prep_x") || cg_ptx_to_cm(m, a->ld->out, 1, "k_prep_dy") ||
           cg_ptx_scale(m, "k_wsum");
  rc = rc || cg_ptx_conv_wgrad_sum(m, a->cd, "k_wsum");
  const cg_conv_desc *d = a->cd;
  cg_ptx_conv_geom g;
  rc = rc || cg_ptx_conv_geom_init(&g, d) || cg_ptx_pad(m, d->cin, d->h, d->w, d->pad, d->pad, g.hp, g.wp, "k_prep_x");
  /* without the fast backward, a stand-in so that the names resolve */
  if (g.fast_bwd) return rc || cg_ptx_pad(m, d->cout, g.oh, g.ow, d->k - 1 - d->pad, d->k - 1 - d->pad, g.hq, g.wq, "k_prep_dy");
  return rc || cg_ptx_scale(m, "k_prep_dy");
}

static int emu_new(emu *E, int kind, const cg_conv_desc *cd, const cg_linear_desc *ld, int64_t nout,
                   int64_t plane, const uint8_t *bm) {
  static const char *const names[7] = {"k_fwd",    "k_bwd_data", "k_bwd_weight", "k_bias",
                                       "k_prep_x", "k_prep_dy",  "k_wsum"};
  layer_arg a = {kind, cd, ld, nout, plane, bm};
  return emu_build(E, gen_layer, &a, names, 7);
}

static void emu_free(emu *E) {
  if (E->jit) LLVMOrcDisposeLLJIT(E->jit);
  cg_ptx_free_tables(E->tabs, E->ntabs);
}

/* One launch: every thread in turn. */
static void launch(emu *E, int op, int64_t threads, float *a, float *b, float *c, float *d, int64_t n,
                   int64_t a_ns, int64_t b_ns) {
  for (int64_t t = 0; t < threads; t++) {
    *E->ctaid = (int32_t)t;
    E->fn[op](a, b, c, d, n, a_ns, b_ns);
  }
}

static void conv_case(int cin, int h, int w, int cout, int k, int stride, int pad, int n, double dens,
                      int kernel_gran, int with_bias) {
  rt_conv_shape s = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride, .pad = pad};
  rt_conv_shape_finish(&s);
  s.x_ns = (long)(cin + jt_int(0, 2)) * h * w + jt_int(0, 3);
  s.y_ns = (long)(cout + jt_int(0, 2)) * s.oh * s.ow + jt_int(0, 3);
  size_t nw = (size_t)cout * cin * k * k, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, kernel_gran ? (size_t)k * k : 1, dens);
  uint8_t *bm = jt_mask((size_t)cout, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)cout) : NULL;
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  if (bias)
    for (int i = 0; i < cout; i++)
      if (!bm[i]) bias[i] = 0.0f;
  char what[160];
  snprintf(what, sizeof what, "conv cin %d %dx%d cout %d k %d s %d p %d n %d dens %.2f %s%s", cin, h, w,
           cout, k, stride, pad, n, dens, kernel_gran ? "kernel" : "weight", with_bias ? "" : " nobias");
  cg_conv_desc d = {cin, h, w, cout, k, stride, pad, wm, bm, 0, 0};
  emu E;
  if (emu_new(&E, IR_CONV, &d, NULL, cout, (int64_t)s.oh * s.ow, bm) == 0) {
    float *x = jt_randf(nx), *dy = jt_randf(ny);
    float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
    memcpy(y1, y0, ny * sizeof *y1);
    cg_ptx_conv_geom g;
    cg_ptx_conv_geom_init(&g, &d);
    float *xp = malloc((size_t)(n * g.xp_ns) * sizeof *xp);
    float *dyp = malloc((size_t)(g.fast_bwd ? n * g.dyp_ns : 1) * sizeof *dyp);
    launch(&E, E_PREP_X, n * g.xp_ns, x, NULL, xp, NULL, n, s.x_ns, 0);
    rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
    launch(&E, E_FWD, cg_ptx_conv_threads(&d, CG_PTX_FWD, n), xp, wt, bias, y1, n, 0, s.y_ns);
    double e = jt_nerr(y1, y0, ny);
    CHECK(e <= TOL, "%s: fwd error %g", what, e);
    float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
    memcpy(dx1, dx0, nx * sizeof *dx1);
    rt_ref_conv_bwd_data(&s, dy, wt, wm, dx0);
    if (g.fast_bwd) launch(&E, E_PREP_DY, n * g.dyp_ns, dy, NULL, dyp, NULL, n, s.y_ns, 0);
    launch(&E, E_BWD_DATA, cg_ptx_conv_threads(&d, CG_PTX_BWD_DATA, n), g.fast_bwd ? dyp : dy, wt, dx1, NULL, n,
           s.y_ns, s.x_ns);
    e = jt_nerr(dx1, dx0, nx);
    CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
    float *dw0 = jt_randf(nw), *dw1 = calloc(nw, sizeof *dw1);
    float *db0 = jt_randf((size_t)cout), *db1 = calloc((size_t)cout, sizeof *db1);
    rt_ref_conv_bwd_weight(&s, x, dy, wm, bm, dw0, db0);
    /* partial sums per chunk of samples (each thread writes its own:
     * poisoned first), then their sums, stored once per weight */
    int64_t parts = cg_ptx_conv_threads(&d, CG_PTX_BWD_WEIGHT, n), nnz = parts / cg_ptx_wchunks(n);
    float *part = jt_randf((size_t)(parts ? parts : 1));
    launch(&E, E_BWD_WEIGHT, parts, xp, dy, dw1, part, n, 0, s.y_ns);
    launch(&E, E_WSUM, nnz, part, NULL, dw1, NULL, n, 0, 0);
    free(part);
    e = jt_nerr(dw1, dw0, nw);
    CHECK(e <= TOL, "%s: bwd_weight error %g", what, e);
    launch(&E, E_BIAS, (int64_t)n * cout, dy, NULL, db1, NULL, n, s.y_ns, 0);
    e = jt_nerr(db1, db0, (size_t)cout);
    CHECK(e <= TOL, "%s: bias gradient error %g", what, e);
    free(x), free(dy), free(y0), free(y1), free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
    free(xp), free(dyp);
  }
  emu_free(&E);
  free(wm), free(bm), free(wt), free(bias);
}

static void linear_case(int in, int out, int n, double dens, int with_bias) {
  rt_linear_shape s = {.n = n, .in = in, .out = out, .x_ns = in + jt_int(0, 5), .y_ns = out + jt_int(0, 5)};
  size_t nw = (size_t)in * out, nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)out, 1, dens < 1 ? 0.5 : 1.0);
  float *wt = jt_randf(nw), *bias = with_bias ? jt_randf((size_t)out) : NULL;
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  if (bias)
    for (int i = 0; i < out; i++)
      if (!bm[i]) bias[i] = 0.0f;
  char what[128];
  snprintf(what, sizeof what, "linear %d -> %d n %d dens %.2f%s", in, out, n, dens, with_bias ? "" : " nobias");
  cg_linear_desc d = {in, out, wm, bm, 0, 0};
  emu E;
  if (emu_new(&E, IR_LINEAR, NULL, &d, out, 1, bm) == 0) {
    float *x = jt_randf(nx), *dy = jt_randf(ny);
    float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
    memcpy(y1, y0, ny * sizeof *y1);
    float *xt = malloc((size_t)n * in * sizeof *xt), *dyt = malloc((size_t)n * out * sizeof *dyt);
    launch(&E, E_PREP_X, (int64_t)n * in, x, NULL, xt, NULL, n, s.x_ns, 0);
    launch(&E, E_PREP_DY, (int64_t)n * out, dy, NULL, dyt, NULL, n, s.y_ns, 0);
    rt_ref_linear_fwd(&s, x, wt, bias, wm, bm, y0);
    launch(&E, E_FWD, cg_ptx_linear_threads(&d, CG_PTX_FWD, n), xt, wt, bias, y1, n, 0, s.y_ns);
    double e = jt_nerr(y1, y0, ny);
    CHECK(e <= TOL, "%s: fwd error %g", what, e);
    float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
    memcpy(dx1, dx0, nx * sizeof *dx1);
    rt_ref_linear_bwd_data(&s, dy, wt, wm, dx0);
    launch(&E, E_BWD_DATA, cg_ptx_linear_threads(&d, CG_PTX_BWD_DATA, n), dyt, wt, dx1, NULL, n, 0, s.x_ns);
    e = jt_nerr(dx1, dx0, nx);
    CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
    float *dw0 = jt_randf(nw), *dw1 = calloc(nw, sizeof *dw1);
    float *db0 = jt_randf((size_t)out), *db1 = calloc((size_t)out, sizeof *db1);
    rt_ref_linear_bwd_weight(&s, x, dy, wm, bm, dw0, db0);
    launch(&E, E_BWD_WEIGHT, cg_ptx_linear_threads(&d, CG_PTX_BWD_WEIGHT, n), xt, dyt, dw1, NULL, n, 0, 0);
    e = jt_nerr(dw1, dw0, nw);
    CHECK(e <= TOL, "%s: bwd_weight error %g", what, e);
    launch(&E, E_BIAS, (int64_t)n * out, dy, NULL, db1, NULL, n, s.y_ns, 0);
    e = jt_nerr(db1, db0, (size_t)out);
    CHECK(e <= TOL, "%s: bias gradient error %g", what, e);
    free(x), free(dy), free(y0), free(y1), free(dx0), free(dx1), free(dw0), free(dw1), free(db0), free(db1);
    free(xt), free(dyt);
  }
  emu_free(&E);
  free(wm), free(bm), free(wt), free(bias);
}

/* The dense path's helpers (runtime/cuda/kern.c), with host loops in
 * place of its sgemm calls: im2col, then y = from_cm(W col) + bias; dx +=
 * col2im(W^T to_cm(dy)); dw = (to_cm(dy) col^T) * mask. */
typedef struct dense_arg {
  const cg_conv_desc *cd;
  int64_t plane;
} dense_arg;

static int gen_dense(LLVMModuleRef m, const void *arg) {
  const dense_arg *a = arg;
  return cg_ptx_im2col(m, a->cd, "k_im2col") || cg_ptx_col2im(m, a->cd, "k_col2im") ||
         cg_ptx_to_cm(m, a->cd->cout, a->plane, "k_to_cm") ||
         cg_ptx_from_cm(m, a->cd->cout, a->plane, a->cd->bm, "k_from_cm") || cg_ptx_scale(m, "k_scale") ||
         cg_ptx_bias_fill(m, a->cd->cout, a->plane, a->cd->bm, "k_bias_fill");
}

enum { D_IM2COL, D_COL2IM, D_TO_CM, D_FROM_CM, D_SCALE, D_BIAS_FILL };

static void dense_case(int cin, int h, int w, int cout, int k, int stride, int pad, int n, double dens) {
  rt_conv_shape s = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride, .pad = pad};
  rt_conv_shape_finish(&s);
  s.x_ns = (long)cin * h * w + jt_int(0, 3);
  s.y_ns = (long)cout * s.oh * s.ow + jt_int(0, 3);
  const int64_t K2 = (int64_t)cin * k * k, P = (int64_t)s.oh * s.ow, cols = n * P;
  size_t nw = (size_t)(cout * K2), nx = (size_t)n * s.x_ns, ny = (size_t)n * s.y_ns;
  uint8_t *wm = jt_mask(nw, 1, dens), *bm = jt_mask((size_t)cout, 1, 0.5);
  float *wt = jt_randf(nw), *bias = jt_randf((size_t)cout), *x = jt_randf(nx), *dy = jt_randf(ny);
  for (size_t i = 0; i < nw; i++)
    if (!wm[i]) wt[i] = 0.0f;
  for (int i = 0; i < cout; i++)
    if (!bm[i]) bias[i] = 0.0f;
  char what[160];
  snprintf(what, sizeof what, "dense conv cin %d %dx%d cout %d k %d s %d p %d n %d", cin, h, w, cout, k, stride,
           pad, n);
  cg_conv_desc d = {cin, h, w, cout, k, stride, pad, wm, bm, 0, 0};
  dense_arg a = {&d, P};
  static const char *const names[6] = {"k_im2col", "k_col2im", "k_to_cm", "k_from_cm", "k_scale", "k_bias_fill"};
  emu E;
  if (emu_build(&E, gen_dense, &a, names, 6) == 0) {
    float *col = malloc((size_t)(K2 * cols) * sizeof *col), *ycm = calloc((size_t)(cout * cols), sizeof *ycm);
    float *y0 = jt_randf(ny), *y1 = malloc(ny * sizeof *y1);
    memcpy(y1, y0, ny * sizeof *y1);
    launch(&E, D_IM2COL, K2 * cols, x, NULL, col, NULL, n, s.x_ns, 0);
    for (int64_t o = 0; o < cout; o++)
      for (int64_t r = 0; r < K2; r++)
        for (int64_t j = 0; j < cols; j++) ycm[o * cols + j] += wt[o * K2 + r] * col[r * cols + j];
    launch(&E, D_FROM_CM, cout * cols, ycm, NULL, bias, y1, n, 0, s.y_ns);
    rt_ref_conv_fwd(&s, x, wt, bias, wm, bm, y0);
    double e = jt_nerr(y1, y0, ny);
    CHECK(e <= TOL, "%s: fwd error %g", what, e);
    /* bias_fill alone: the bias, 0 where masked, the gaps untouched */
    float *yb = malloc(ny * sizeof *yb);
    memcpy(yb, y0, ny * sizeof *yb);
    launch(&E, D_BIAS_FILL, cout * cols, NULL, NULL, bias, yb, n, 0, s.y_ns);
    int bad = 0;
    for (int i = 0; i < n; i++)
      for (long j = 0; j < s.y_ns; j++) {
        long at = (long)i * s.y_ns + j;
        float want = j < cout * P ? bias[j / P] : y0[at];
        bad += yb[at] != want;
      }
    CHECK(!bad, "%s: bias_fill wrong at %d places", what, bad);
    float *dycm = malloc((size_t)(cout * cols) * sizeof *dycm), *dcol = calloc((size_t)(K2 * cols), sizeof *dcol);
    launch(&E, D_TO_CM, cout * cols, dy, NULL, dycm, NULL, n, s.y_ns, 0);
    for (int64_t r = 0; r < K2; r++)
      for (int64_t o = 0; o < cout; o++)
        for (int64_t j = 0; j < cols; j++) dcol[r * cols + j] += wt[o * K2 + r] * dycm[o * cols + j];
    float *dx0 = jt_randf(nx), *dx1 = malloc(nx * sizeof *dx1);
    memcpy(dx1, dx0, nx * sizeof *dx1);
    launch(&E, D_COL2IM, (int64_t)n * cin * h * w, dcol, NULL, dx1, NULL, n, 0, s.x_ns);
    rt_ref_conv_bwd_data(&s, dy, wt, wm, dx0);
    e = jt_nerr(dx1, dx0, nx);
    CHECK(e <= TOL, "%s: bwd_data error %g", what, e);
    float *dw0 = jt_randf(nw), *dw1 = calloc(nw, sizeof *dw1), *mf = malloc(nw * sizeof *mf);
    for (int64_t o = 0; o < cout; o++)
      for (int64_t r = 0; r < K2; r++) {
        double acc = 0;
        for (int64_t j = 0; j < cols; j++) acc += (double)dycm[o * cols + j] * col[r * cols + j];
        dw1[o * K2 + r] = (float)acc + 1.0f; /* the mask must clear the masked ones */
      }
    for (size_t i = 0; i < nw; i++) mf[i] = wm[i] ? 1.0f : 0.0f;
    launch(&E, D_SCALE, (int64_t)nw, mf, NULL, dw1, NULL, (int64_t)nw, 0, 0);
    for (size_t i = 0; i < nw; i++)
      if (wm[i]) dw1[i] -= 1.0f;
    rt_ref_conv_bwd_weight(&s, x, dy, wm, bm, dw0, NULL);
    e = jt_nerr(dw1, dw0, nw);
    CHECK(e <= TOL, "%s: bwd_weight error %g", what, e);
    free(col), free(ycm), free(y0), free(y1), free(yb), free(dycm), free(dcol), free(dx0), free(dx1);
    free(dw0), free(dw1), free(mf);
  }
  emu_free(&E);
  free(wm), free(bm), free(wt), free(bias), free(x), free(dy);
}

int main(void) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter()) {
    printf("SKIP: this LLVM cannot JIT for the host\n");
    return 77;
  }
  static const double dens[] = {0.0, 0.1, 0.5, 1.0};
  conv_case(3, 8, 8, 4, 3, 1, 1, 2, 1.0, 0, 1);
  conv_case(2, 7, 9, 3, 3, 2, 1, 2, 0.5, 0, 1);
  conv_case(2, 5, 5, 2, 5, 1, 4, 1, 1.0, 0, 0); /* taps that read only padding */
  for (int di = 0; di < 4; di++)
    for (int c = 0; c < 8; c++) {
      int k = jt_int(1, 5), stride = jt_int(1, 3), pad = jt_int(0, k - 1);
      int lo = k > 2 * pad ? k - 2 * pad : 1;
      conv_case(jt_int(1, 6), jt_int(lo, 10), jt_int(lo, 10), jt_int(1, 6), k, stride, pad, jt_int(1, 3),
                dens[di], c % 2, c % 3 != 2);
    }
  for (int di = 0; di < 4; di++)
    for (int c = 0; c < 6; c++)
      linear_case(jt_int(1, 200), jt_int(1, 40), jt_int(1, 6), dens[di], c % 3 != 2);
  dense_case(3, 8, 8, 4, 3, 1, 1, 2, 0.5);
  dense_case(2, 5, 5, 2, 5, 1, 4, 1, 1.0); /* taps that read only padding */
  for (int c = 0; c < 8; c++) {
    int k = jt_int(1, 4), stride = jt_int(1, 3), pad = jt_int(0, k - 1);
    int lo = k > 2 * pad ? k - 2 * pad : 1;
    dense_case(jt_int(1, 5), jt_int(lo, 9), jt_int(lo, 9), jt_int(1, 5), k, stride, pad, jt_int(1, 3),
               c % 2 ? 0.3 : 1.0);
  }
  printf("GPU kernels (emulated on the host) against ref: %d failures\n", failures);
  return failures ? 1 : 0;
}
