/* elem_bench: the elementwise kernels of a training step with batch norm
 * (runtime/elem.c), each against the path it stands in for, on the same
 * data in the same run: one sample of C planes of H x W (default 32 of
 * 28x28, conv1.1 of bench/bn_template.ilnas), small enough to stay in L1
 * and L2, as a conv chunk's output is when these run. Best of 15 runs of
 * 100 calls; nanoseconds an element of the planes, and the ratio of the
 * peer's time to the kernel's. Single-threaded. Build: bench/README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/elem.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long elems; /* of the planes, for ns an element */

#define TIME(var, stmt)                                                                            \
  do {                                                                                             \
    double best_ = 1e30;                                                                           \
    for (int r_ = 0; r_ < 15; r_++) {                                                              \
      double t_ = now_s();                                                                         \
      for (int k_ = 0; k_ < 100; k_++) { stmt; }                                                   \
      t_ = now_s() - t_;                                                                           \
      if (t_ < best_) best_ = t_;                                                                  \
    }                                                                                              \
    var = best_ / 100 / (double)elems * 1e9;                                                       \
  } while (0)

static void row(const char *what, double mine, const char *peer, double theirs) {
  printf("%-34s %6.3f ns   %-40s %6.3f ns   %5.2fx\n", what, mine, peer, theirs, theirs / mine);
}

static float *falloc(long n) {
  float *p = malloc((size_t)n * sizeof *p);
  if (!p) {
    fprintf(stderr, "elem_bench: out of memory\n");
    exit(1);
  }
  return p;
}

int main(int argc, char **argv) {
  const int c = argc > 1 ? atoi(argv[1]) : 32, h = argc > 2 ? atoi(argv[2]) : 28,
            w = argc > 3 ? atoi(argv[3]) : h;
  if (c < 1 || h < 2 || w < 8 || h % 2 || w % 2 || (long)h * w > RT_BN_POOL_HW) {
    fprintf(stderr, "usage: elem_bench [C [H [W]]]: even H, W >= 8, H * W <= %d\n",
            RT_BN_POOL_HW);
    return 2;
  }
  const long hw = (long)h * w, len = c * hw, q = len / 4, ws = w + 4, ps = (long)(h + 2) * ws;
  elems = len;
  float *x = falloc(len), *y = falloc(len), *dp = falloc(q), *zx = falloc(q), *p = falloc(q);
  float *rows = falloc(c * ps), *g = falloc(hw);
  uint8_t *code = malloc((size_t)q);
  float *gamma = falloc(c), *beta = falloc(c), *sm = falloc(c), *si = falloc(c), *sk = falloc(c);
  float *dg = falloc(c), *db = falloc(c), *k3 = falloc(3 * c);
  double *mom = malloc(2 * (size_t)c * sizeof *mom);
  if (!code || !mom) return 1;
  srand(1);
  for (long i = 0; i < len; i++) x[i] = (float)rand() / RAND_MAX - 0.3f;
  for (long i = 0; i < q; i++) dp[i] = (float)rand() / RAND_MAX - 0.5f;
  for (int i = 0; i < c; i++)
    gamma[i] = i % 2 ? -1.0f : 1.0f, beta[i] = 0.1f, sm[i] = 0.2f, si[i] = 1.1f, sk[i] = 1.1f;
  rt_bn_shape s = {1, c, (int)hw, 0, 0, w};
  printf("elem_bench: %d planes of %dx%d, one core, best of 15 x 100 calls; ns an element\n", c, h,
         w);
  double a, b;

  /* forward */
  TIME(a, rt_bn_moments(&s, x, mom, 2));
  TIME(b, rt_bn_fwd(NULL, 1, &s, 1, 1, x, NULL, 0, gamma, beta, y, y + c, sm, si, sk, NULL));
  row("rows' moments (rt_bn_moments)", a, "the statistics in one pass (rt_bn_fwd)", b);
  TIME(a, for (int ch = 0; ch < c; ch++)
              rt_bn_copy_moments(h, w, x + ch * hw, w, y + ch * hw, w, 0, mom));
  TIME(b, rt_copy_2d(c * h, w, x, w, y, w); rt_bn_moments(&s, y, mom, 2));
  row("a copy with its moments", a, "copied, then the moments", b);
  double mp;
  TIME(mp, rt_bn_moments_pool(&s, x, mom, 2, w, gamma, zx, code, 0));
  TIME(b, rt_bn_out(NULL, 1, &s, 1, w, x, beta, sm, sk, NULL, p, 0, code, 0));
  row("and the windows' extremes", mp - a, "pooling from z (rt_bn_out)", b);
  TIME(a, rt_bn_pool_out(NULL, 1, &s, w, zx, beta, sm, sk, p, 0, code, 0));
  row("pool from the extremes", a, "pooling from z (rt_bn_out)", b);
  rt_affine map = {0.2f, 1.1f, 0.1f, 1};
  TIME(a, for (int ch = 0; ch < c; ch++)
              rt_pad_rows(h, w, x + ch * hw, w, rows + ch * ps + ws, ws, 1, NULL, 0, &map));
  TIME(b, for (int ch = 0; ch < c; ch++) {
    rt_bn_affine_row(hw, x + ch * hw, map.m, map.k, map.b, 1, y + ch * hw);
    rt_pad_rows(h, w, y + ch * hw, w, rows + ch * ps + ws, ws, 1, NULL, 0, NULL);
  });
  row("packing through the map", a, "the map written, then packed", b);

  /* the ReLU's pool (the twin's forward) on the widest vectors against
   * AVX2's (rt_elem_set_isa); each on a CPU that has it */
  TIME(a, for (int ch = 0; ch < c; ch++)
              rt_relu_pool_rows(h, w, x + ch * hw, w, p + ch * (hw / 4), code + ch * (hw / 4)));
  rt_elem_set_isa(RT_ISA_AVX2);
  TIME(b, for (int ch = 0; ch < c; ch++)
              rt_relu_pool_rows(h, w, x + ch * hw, w, p + ch * (hw / 4), code + ch * (hw / 4)));
  rt_elem_set_isa(RT_ISA_AVX512);
  row("the ReLU's pool and codes", a, "on AVX2 (rt_elem_set_isa)", b);

  /* backward: the codes as the pooling left them */
  rt_bn_moments_pool(&s, x, mom, 2, w, gamma, zx, code, 0);
  rt_bn_pool_out(NULL, 1, &s, w, zx, beta, sm, sk, p, 0, code, 0);
  TIME(a, rt_bn_bwd_sums(NULL, 1, &s, 1, w, 0, code, 0, zx, NULL, 0, x, dp, gamma, beta, sm, si,
                         sk, dg, db, k3, k3 + c, k3 + 2 * c));
  TIME(b, rt_bn_bwd_sums(NULL, 1, &s, 1, w, 0, code, 0, NULL, NULL, 0, x, dp, gamma, beta, sm, si,
                         sk, dg, db, k3, k3 + c, k3 + 2 * c));
  row("pooled sums from the windows", a, "from z and a scattered plane", b);
  TIME(a, for (int ch = 0; ch < c; ch++)
              rt_bn_pool_dx_rows(h, w, code + ch * (hw / 4), dp + ch * (hw / 4), x + ch * hw, 0.2f,
                                 0.01f, 1.1f, 0.02f, rows + ch * ps, ws));
  TIME(b, for (int ch = 0; ch < c; ch++) {
    rt_bn_pool_scatter(h, w, code + ch * (hw / 4), dp + ch * (hw / 4), g);
    rt_bn_dx_rows(h, w, x + ch * hw, g, 0, 0.2f, 1.1f, 0.1f, 0.01f, 1.1f, 0.02f, rows + ch * ps,
                  ws);
  });
  row("pooled dz into packed rows", a, "the scattered plane, then dz's rows", b);
  double nb;
  TIME(nb, for (int ch = 0; ch < c; ch++)
               rt_pool_code_rows(h, w, code + ch * (hw / 4), dp + ch * (hw / 4), rows + ch * ps,
                                 ws));
  row("pooled dz into packed rows", a, "no batch norm: the pool's gradient rows", nb);
  TIME(a, for (int ch = 0; ch < c; ch++)
              rt_bn_dx_rows(h, w, x + ch * hw, y + ch * hw, 1, 0.2f, 1.1f, 0.1f, 0.01f, 1.1f, 0.02f,
                            rows + ch * ps, ws));
  TIME(b, for (int ch = 0; ch < c; ch++)
              rt_pad_rows(h, w, y + ch * hw, w, rows + ch * ps, ws, 0, x + ch * hw, w, NULL));
  row("dz's rows through the ReLU", a, "no batch norm: the ReLU's gate", b);

  /* the AVX-512 paths against AVX2's (rt_elem_set_isa), into rows w + 1
   * apart, as a conv at pad 1 packs them; each on a CPU that has it */
  const long wq = w + 1;
#define AGAINST_AVX2(what, stmt)                                                                   \
  do {                                                                                             \
    TIME(a, stmt);                                                                                 \
    rt_elem_set_isa(RT_ISA_AVX2);                                                                  \
    TIME(b, stmt);                                                                                 \
    rt_elem_set_isa(RT_ISA_AVX512);                                                                \
    row(what, a, "on AVX2 (rt_elem_set_isa)", b);                                                  \
  } while (0)
  AGAINST_AVX2("pooled dz, rows w + 1 apart", for (int ch = 0; ch < c; ch++) rt_bn_pool_dx_rows(
      h, w, code + ch * (hw / 4), dp + ch * (hw / 4), x + ch * hw, 0.2f, 0.01f, 1.1f, 0.02f,
      rows + ch * ps, wq));
  AGAINST_AVX2("the pool's gradient rows, the same", for (int ch = 0; ch < c; ch++)
      rt_pool_code_rows(h, w, code + ch * (hw / 4), dp + ch * (hw / 4), rows + ch * ps, wq));
  AGAINST_AVX2("padded rows, the same", for (int ch = 0; ch < c; ch++) rt_pad_rows(
      h, w, x + ch * hw, w, rows + ch * ps + wq, wq, 1, NULL, 0, NULL));
  AGAINST_AVX2("padded rows, gated by the ReLU", for (int ch = 0; ch < c; ch++) rt_pad_rows(
      h, w, x + ch * hw, w, rows + ch * ps + wq, wq, 1, y + ch * hw, w, NULL));
  AGAINST_AVX2("dz rows through the ReLU, the same", for (int ch = 0; ch < c; ch++)
      rt_bn_dx_rows(h, w, x + ch * hw, y + ch * hw, 1, 0.2f, 1.1f, 0.1f, 0.01f, 1.1f, 0.02f,
                    rows + ch * ps, wq));
  AGAINST_AVX2("the windows' extremes alone",
               rt_bn_moments_pool(&s, x, NULL, 2, w, gamma, zx, code, 0));
  /* a reader's sums of batch norm's rows from its input gradient y,
   * through the ReLU's mask from z = x (conv2.1's backward, of conv2.0) */
  rt_bn_x bx = {x, sm, sk, beta, 1, 0, c, k3, 0, 0};
  AGAINST_AVX2("a reader's row sums (rt_bn_x_sums)", rt_bn_x_sums(&bx, 0, hw, len, y));
  free(x), free(y), free(dp), free(zx), free(p), free(rows), free(g), free(code), free(gamma);
  free(beta), free(sm), free(si), free(sk), free(dg), free(db), free(k3), free(mom);
  return 0;
}
