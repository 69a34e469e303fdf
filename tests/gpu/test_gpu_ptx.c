/* test_gpu_ptx: the GPU kernels of every layer of every sample model (at
 * its seed α) and of random layer shapes and densities (0% and 100%
 * included) are generated as target-independent IR, emitted as PTX and
 * assembled by ptxas for sm_90 and sm_80. Needs no GPU, only ptxas; skips
 * (77) without it.
 * usage: test_gpu_ptx SAMPLES_DIR WORK_DIR [PTXAS] */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Core.h>

#include "kgen/devops.h"
#include "kgen/ptx.h"
#include "frontend/spec.h"
#include "ir/ir.h"
#include "tests/jit/jitutil.h"

static const char *ptxas;
static const char *work;
static int modules;

static int is_exec(const char *p) { return access(p, X_OK) == 0; }

/* ptxas from the command line, the toolkit's default place, or PATH. */
static const char *find_ptxas(const char *arg) {
  static char buf[4096];
  if (arg && *arg) return is_exec(arg) ? arg : NULL;
  if (is_exec("/usr/local/cuda/bin/ptxas")) return "/usr/local/cuda/bin/ptxas";
  const char *path = getenv("PATH");
  while (path && *path) {
    size_t n = strcspn(path, ":");
    snprintf(buf, sizeof buf, "%.*s/ptxas", (int)n, path);
    if (n && is_exec(buf)) return buf;
    path += n + (path[n] == ':');
  }
  return NULL;
}

/* Runs ptxas on file for arch; 0 when it assembles. Its diagnostics go to
 * stderr, where ctest shows them. */
static int assemble(const char *file, const char *arch) {
  pid_t pid = fork();
  if (pid == 0) {
    execl(ptxas, ptxas, "-arch", arch, "-o", "/dev/null", file, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) < 0) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* A module's PTX (freed) to WORK/NAME.ptx, which ptxas must accept for
 * sm_90 and sm_80; counted in `modules`. */
static void assemble_ptx(const char *what, const char *name, char *ptx) {
  char file[4096];
  snprintf(file, sizeof file, "%s/%s.ptx", work, name);
  FILE *f = fopen(file, "w");
  CHECK(f != NULL, "cannot write %s", file);
  if (f) {
    fputs(ptx, f);
    fclose(f);
    CHECK(assemble(file, "sm_90") == 0, "%s: ptxas -arch=sm_90 rejects %s", what, file);
    CHECK(assemble(file, "sm_80") == 0, "%s: ptxas -arch=sm_80 rejects %s", what, file);
    modules++;
  }
  free(ptx);
}

/* One layer's four kernels in one module, as the CUDA backend builds it
 * (runtime/cuda/kern.c). */
static void layer_case(const char *what, int kind, const cg_conv_desc *cd, const cg_linear_desc *ld) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(what, ctx);
  int rc = kind == IR_CONV
               ? cg_ptx_conv_fwd(m, cd, "k_fwd") || cg_ptx_conv_bwd_data(m, cd, "k_bwd_data") ||
                     cg_ptx_conv_bwd_weight(m, cd, "k_bwd_weight")
               : cg_ptx_linear_fwd(m, ld, "k_fwd") || cg_ptx_linear_bwd_data(m, ld, "k_bwd_data") ||
                     cg_ptx_linear_bwd_weight(m, ld, "k_bwd_weight");
  if (kind == IR_CONV) {
    int64_t oh = (cd->h + 2 * cd->pad - cd->k) / cd->stride + 1, ow = (cd->w + 2 * cd->pad - cd->k) / cd->stride + 1;
    rc = rc || cg_ptx_bias_grad(m, cd->cout, oh * ow, cd->bm, "k_bias") ||
         cg_ptx_conv_wgrad_sum(m, cd, "k_wsum");
  } else {
    rc = rc || cg_ptx_bias_grad(m, ld->out, 1, ld->bm, "k_bias");
  }
  CHECK(rc == 0, "%s: generator refused the layer", what);
  /* The generators write target-independent IR: no triple, no layout. */
  CHECK(strcmp(LLVMGetTarget(m), "") == 0, "%s: generator set a triple", what);
  CHECK(strcmp(LLVMGetDataLayoutStr(m), "") == 0, "%s: generator set a data layout", what);
  CHECK(LLVMGetNamedMetadataNumOperands(m, "nvvm.annotations") == (kind == IR_CONV ? 5u : 4u),
        "%s: kernels not annotated", what);
  char *ptx = NULL, err[512];
  size_t nt = 0;
  cg_ptx_table *tabs = cg_ptx_take_tables(m, &nt);
  CHECK(tabs && (nt > 0 || rc), "%s: no tables taken", what);
  cg_ptx_free_tables(tabs, nt);
  if (!rc && cg_ptx_emit(m, "sm_90", &ptx, err, sizeof err)) CHECK(0, "%s: %s", what, err);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!ptx) return;
  CHECK(strstr(ptx, ".target sm_80") != NULL, "%s: PTX not for sm_80", what);
  CHECK(strstr(ptx, ".entry k_fwd") && strstr(ptx, ".entry k_bwd_data") &&
            strstr(ptx, ".entry k_bwd_weight") && (kind != IR_CONV || strstr(ptx, ".entry k_wsum")),
        "%s: PTX lacks a kernel entry", what);
  char name[32];
  snprintf(name, sizeof name, "m%d", modules);
  assemble_ptx(what, name, ptx);
}

/* Phase II's dense kernels of a layer (runtime/cuda/kern.h:
 * cu_kern_build_dense): the dense path's helpers alone, every bias, no
 * tables, in one module as the device step builds them. */
static void dense_case(int conv) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("dense", ctx);
  cg_conv_desc cd = {5, 9, 7, 6, 3, 2, 1, NULL, NULL, 0, 0};
  int64_t nout = conv ? cd.cout : 40, plane = conv ? 5 * 4 : 1;
  int rc = conv && (cg_ptx_im2col(m, &cd, "k_im2col") || cg_ptx_col2im(m, &cd, "k_col2im"));
  rc = rc || cg_ptx_bias_grad(m, nout, plane, NULL, "k_bias") || cg_ptx_to_cm(m, nout, plane, "k_to_cm") ||
       cg_ptx_from_cm(m, nout, plane, NULL, "k_from_cm") || cg_ptx_scale(m, "k_scale") ||
       cg_ptx_bias_fill(m, nout, plane, NULL, "k_bias_fill");
  CHECK(rc == 0, "dense %s: a generator refused", conv ? "conv" : "linear");
  size_t nt = 0;
  cg_ptx_table *tabs = cg_ptx_take_tables(m, &nt);
  CHECK(tabs && nt == 0, "dense %s: %zu tables (none expected)", conv ? "conv" : "linear", nt);
  cg_ptx_free_tables(tabs, nt);
  char *ptx = NULL, err[512];
  if (!rc && cg_ptx_emit(m, "sm_90", &ptx, err, sizeof err)) CHECK(0, "dense: %s", err);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!ptx) return;
  assemble_ptx("dense", conv ? "dense1" : "dense0", ptx);
}

/* The device step's other kernels (kgen/devops.h), every op and flag, in
 * one module; phase II's ranking over units of a conv layer at kernel
 * granularity (3x3), its biases, and a linear layer's weights. */
static void devops_case(void) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("devops", ctx);
  const kd_run runs[] = {{0, 0, 9, 24}, {24, 216, 1, 6}, {30, 222, 1, 60}};
  const kd_desc d[] = {
      {.op = KD_RELU, .ns = 900, .len = 96, .src = 10, .dst = 200},
      {.op = KD_RELU_MASK, .ns = 900, .len = 96, .y = 200, .dy = 200, .dst = 10},
      {.op = KD_COPY, .ns = 900, .len = 96, .src = 10, .dst = 300, .add = 1},
      {.op = KD_BN_FWD, .ns = 900, .c = 6, .hw = 16, .src = 10, .dst = 200, .p0 = 40, .p1 = 4, .np = 500, .nstats = 20, .relu = 1},
      {.op = KD_BN_BWD, .ns = 900, .c = 6, .hw = 16, .src = 10, .y = 200, .dy = 200, .dst = 10, .p0 = 40, .p1 = 4, .np = 500,
       .relu = 1, .assign = 1},
      {.op = KD_BN_BWD, .ns = 900, .c = 6, .hw = 16, .src = 10, .y = 200, .dy = 200, .dst = 10, .p0 = 40, .p1 = 4, .np = 500},
      {.op = KD_POOL_FWD, .ns = 900, .c = 3, .h = 7, .w = 6, .f = 2, .src = 0, .dst = 400},
      {.op = KD_POOL_BWD, .ns = 900, .c = 3, .h = 7, .w = 6, .f = 2, .src = 0, .dst = 400, .assign = 1},
      {.op = KD_POOL_BWD, .ns = 900, .c = 3, .h = 6, .w = 6, .f = 3, .src = 0, .dst = 400},
      {.op = KD_GAP_FWD, .ns = 900, .c = 5, .hw = 9, .src = 0, .dst = 800},
      {.op = KD_GAP_BWD, .ns = 900, .c = 5, .hw = 9, .src = 0, .dst = 800},
      {.op = KD_LOSS, .ns = 900, .c = 10, .src = 850},
      {.op = KD_LOSS_SUM},
      {.op = KD_SGD, .np = 500},
      {.op = KD_GATHER, .ns = 900, .c = 3, .h = 8, .w = 7, .f = 2, .dst = 0, .n_set = 50},
      {.op = KD_GATHER, .ns = 900, .c = 1, .h = 8, .w = 8, .f = 0, .dst = 0, .n_set = 50, .bytes = 1},
      {.op = KD_REVIVE, .ns = 900, .c = 6, .hw = 16, .y = 200, .dy = 200, .relu = 1, .norm = 1},
      {.op = KD_REVIVE, .ns = 900, .c = 6, .hw = 16, .y = 200, .dy = 200, .norm = 1},
      {.op = KD_REVIVE, .ns = 900, .c = 6, .hw = 1, .y = 850, .dy = 850, .relu = 1},
      {.op = KD_CSTATS, .ns = 900, .c = 6, .hw = 16, .y = 200},
      {.op = KD_MOVE},
      {.op = KD_MOVE, .add = 1},
      {.op = KD_SCALE},
      {.op = KD_DESCEND},
      {.op = KD_UNITS, .len = 90, .runs = runs, .nruns = 3},
      {.op = KD_COUNT, .len = 90},
      {.op = KD_EMIT, .len = 90},
      {.op = KD_PAIR},
  };
  int rc = 0, nk = (int)(sizeof d / sizeof d[0]);
  for (int i = 0; i < nk; i++) {
    char name[32];
    int64_t per, fixed;
    snprintf(name, sizeof name, "d%d", i);
    rc = rc || kd_gen(m, &d[i], name, &per, &fixed);
  }
  CHECK(rc == 0, "devops: a generator refused its case");
  CHECK(LLVMGetNamedMetadataNumOperands(m, "nvvm.annotations") == (unsigned)nk, "devops: kernels not annotated");
  char *ptx = NULL, err[512];
  if (!rc && cg_ptx_emit(m, "sm_90", &ptx, err, sizeof err)) CHECK(0, "devops: %s", err);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!ptx) return;
  assemble_ptx("devops", "devops", ptx);
}

static void sample_case(const char *path) {
  fe_model fm;
  if (fe_parse_file(path, &fm, stderr) != 0) {
    CHECK(0, "%s: does not parse", path);
    return;
  }
  ir_graph *g = ir_build(&fm, stderr);
  CHECK(g != NULL, "%s: ir_build failed", path);
  int layers = 0;
  for (int i = 0; g && i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->kind != IR_CONV && l->kind != IR_LINEAR) continue;
    uint8_t *wm = malloc((size_t)l->n_w), *bm = malloc((size_t)l->cout);
    for (int64_t j = 0; j < l->n_w; j++) wm[j] = (uint8_t)ir_alpha_get(&g->arch, l->w_off + j);
    for (int j = 0; j < l->cout; j++) bm[j] = (uint8_t)(l->b_off < 0 || ir_alpha_get(&g->arch, l->b_off + j));
    cg_conv_desc cd = {l->cin, l->h, l->w, l->cout, l->k, l->stride, l->pad, wm, bm, 0, 0};
    cg_linear_desc ld = {l->cin, l->cout, wm, bm, 0, 0};
    char what[256];
    snprintf(what, sizeof what, "%.180s: layer %.60s", path, l->name);
    layer_case(what, l->kind, &cd, &ld);
    layers++;
    free(wm), free(bm);
  }
  printf("%s: %d layers assembled\n", path, layers);
  if (g) ir_free(g);
  fe_model_free(&fm);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SAMPLES_DIR WORK_DIR [PTXAS]\n", argv[0]);
    return 2;
  }
  ptxas = find_ptxas(argc > 3 ? argv[3] : NULL);
  if (!ptxas) {
    printf("SKIP: ptxas not found (/usr/local/cuda/bin/ptxas or on PATH)\n");
    return 77;
  }
  work = argv[2];
  mkdir(work, 0777);
  DIR *dir = opendir(argv[1]);
  CHECK(dir != NULL, "cannot open %s", argv[1]);
  int samples = 0;
  for (struct dirent *e; dir && (e = readdir(dir));) {
    size_t n = strlen(e->d_name);
    if (n < 7 || strcmp(e->d_name + n - 6, ".ilnas") != 0) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
    sample_case(path);
    samples++;
  }
  if (dir) closedir(dir);
  CHECK(samples > 0, "no sample models in %s", argv[1]);
  devops_case();
  dense_case(1);
  dense_case(0);

  /* Random shapes: strides, paddings (incl. taps that read only padding),
   * kernel sizes, tiny and odd sizes, densities from empty to full, and
   * whole-kernel masks. */
  static const double dens[] = {0.0, 0.05, 0.5, 1.0};
  for (int c = 0; c < 16; c++) {
    int k = jt_int(1, 5), stride = jt_int(1, 3), pad = jt_int(0, k);
    int h = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12), w = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12);
    int cin = jt_int(1, 9), cout = jt_int(1, 9);
    double d = dens[c % 4];
    size_t nw = (size_t)cout * cin * k * k;
    uint8_t *wm = jt_mask(nw, c % 2 ? (size_t)k * k : 1, d), *bm = jt_mask((size_t)cout, 1, 0.5);
    cg_conv_desc cd = {cin, h, w, cout, k, stride, pad, wm, bm, 0, 0};
    char what[160];
    snprintf(what, sizeof what, "conv cin %d %dx%d cout %d k %d s %d p %d dens %.2f", cin, h, w, cout, k,
             stride, pad, d);
    layer_case(what, IR_CONV, &cd, NULL);
    free(wm), free(bm);
    int in = jt_int(1, 300), out = jt_int(1, 40);
    wm = jt_mask((size_t)in * out, 1, d), bm = jt_mask((size_t)out, 1, 0.5);
    cg_linear_desc ld = {in, out, c == 3 ? NULL : wm, c == 3 ? NULL : bm, 0, 0};
    snprintf(what, sizeof what, "linear %d -> %d dens %.2f", in, out, d);
    layer_case(what, IR_LINEAR, NULL, &ld);
    free(wm), free(bm);
  }
  printf("%d modules assembled by %s for sm_90 and sm_80, %d failures\n", modules, ptxas, failures);
  return failures ? 1 : 0;
}
