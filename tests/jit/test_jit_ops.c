/* test_jit_ops: every op of the CPU (JIT) backend against the reference
 * kernels, over random shapes, strides, paddings, kernel sizes, channel-
 * prefix views (per-sample strides larger than packed), densities from
 * empty to full and both mask granularities. Compared by normalised error;
 * exact where the semantics are exact (dx accumulates, masked dw is 0).
 * Every case runs three times: with the backend's measured dense
 * threshold, and forced onto the JIT kernels and onto OpenBLAS. */
#include "backend_cases.h"
#include "runtime/cpu/cpu.h"

static const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
enum { ND = sizeof densities / sizeof densities[0] };

/* The dense threshold of the run: < 0 the backend's own, 0 all dense, 2
 * none dense. */
static double force_thr = -1;

static void force(rt_backend *b) {
  if (force_thr >= 0) rt_cpu_set_dense_threshold(b, force_thr, force_thr);
}

static void check_path(rt_backend *b, int layer, const char *what) {
  if (force_thr < 0) return;
  CHECK(rt_cpu_layer_dense(b, layer) == (force_thr == 0), "%s: forced path not taken", what);
}

static const bc_hooks cpu = {"cpu", force, check_path};

/* The empty layer must still overwrite y with the bias and dw with 0, and
 * leave dx as it was; the full layer is the dense computation. */
static void edge_cases(void) {
  bc_conv_case(&cpu, 3, 5, 5, 4, 3, 1, 1, 2, 0.0, 0, 1);
  bc_conv_case(&cpu, 3, 5, 5, 4, 3, 1, 1, 2, 1.0, 0, 1);
  bc_conv_case(&cpu, 2, 3, 3, 2, 5, 1, 2, 1, 1.0, 0, 1);  /* kernel larger than the image */
  bc_conv_case(&cpu, 1, 1, 1, 1, 1, 1, 0, 1, 1.0, 0, 0);  /* one pixel */
  bc_conv_case(&cpu, 4, 7, 6, 3, 3, 2, 0, 3, 0.5, 1, 0);  /* stride 2, no padding, odd sizes */
  bc_linear_case(&cpu, 7, 5, 1, 0.0, 1);
  bc_linear_case(&cpu, 7, 5, 33, 1.0, 1);
  bc_linear_case(&cpu, 1, 1, 1, 1.0, 0);
}

static void random_cases(int nconv, int nlin) {
  static const int ks[] = {1, 3, 5};
  for (int c = 0; c < nconv; c++) {
    int k = ks[jt_int(0, 2)], pad = jt_int(0, 2), stride = jt_int(1, 2);
    int h = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12), w = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12);
    bc_conv_case(&cpu, jt_int(1, 6), h, w, jt_int(1, 6), k, stride, pad, jt_int(1, 4),
              densities[c % ND], jt_int(0, 1), jt_int(0, 3) != 0);
  }
  for (int c = 0; c < nlin; c++)
    bc_linear_case(&cpu, jt_int(1, 70), jt_int(1, 40), jt_int(1, 70), densities[c % ND], jt_int(0, 3) != 0);
}

int main(int argc, char **argv) {
  /* Each sparse case compiles a module; more cases are a flag away. */
  int nconv = argc > 1 ? atoi(argv[1]) : 20;
  static const double thr[] = {-1, 2.0, 0.0};
  for (int i = 0; i < 3; i++) {
    force_thr = thr[i];
    edge_cases();
    random_cases(nconv, 2 * nconv);
  }
  if (failures) fprintf(stderr, "test_jit_ops: %d failures\n", failures);
  else printf("test_jit_ops: ok\n");
  return failures != 0;
}
