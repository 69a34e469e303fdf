/* test_gpu_ops: the CUDA backend.
 *
 *   test_gpu_ops --no-device   where no GPU can run, the backend must
 *                              refuse to start with a clear message
 *                              ("no CUDA driver: ..." or "no GPU: ..."),
 *                              never crash; with a GPU it must start.
 *                              `auto` must pick cuda exactly then.
 *   test_gpu_ops --emulate     the same on the host emulation of a GPU
 *                              (emu_driver.h): the backend's own logic
 *                              where no GPU is.
 *   test_gpu_ops               every op of the CUDA backend against the
 *                              reference kernels over random shapes,
 *                              strides, channel-prefix views and densities
 *                              from empty to full, by normalised error
 *                              (<= 1e-5; exact where the semantics are:
 *                              masked dw is 0, dx accumulates), on the
 *                              sparse kernels, on cuBLAS and on the
 *                              measured choice. Skips (77)
 *                              with the backend's message without a GPU.
 */
#include "tests/jit/backend_cases.h"
#include "tests/gpu/emu_driver.h"

static const double densities[] = {0.0, 0.1, 0.5, 1.0};
enum { ND = sizeof densities / sizeof densities[0] };

static int clear_refusal(const char *msg) {
  return strncmp(msg, "no CUDA driver: ", 16) == 0 || strncmp(msg, "no GPU: ", 8) == 0;
}

static const bc_hooks cuda = {"cuda", NULL, NULL};

int main(int argc, char **argv) {
  char err[1024] = "";
  if (argc > 1 && strcmp(argv[1], "--emulate") == 0 && emu_driver_install()) {
    printf("SKIP: this LLVM cannot JIT for the host\n");
    return 77;
  }
  ir_graph *g = jt_graph(IR_LINEAR, 4, 1, 1, 3, 1, 1, 0);
  rt_kernels *b = rt_kernels_new("cuda", g, err, sizeof err);
  if (argc > 1 && strcmp(argv[1], "--no-device") == 0) {
    if (b) printf("a GPU is present: the cuda backend started\n");
    else {
      printf("cuda backend refused: %s\n", err);
      CHECK(clear_refusal(err), "unclear refusal: '%s'", err);
    }
    /* auto: cuda exactly when the backend could start, and one line why. */
    char why[512];
    const char *pick = rt_backend_resolve("auto", why, sizeof why);
    printf("%s\n", why);
    CHECK(strcmp(pick, b ? "cuda" : "cpu") == 0, "auto picked %s", pick);
    CHECK(b ? strncmp(why, "backend auto: cuda, a GPU is present (", 38) == 0
            : strncmp(why, "backend auto: cpu (no ", 22) == 0 && strstr(why, err),
          "unclear auto line: '%s'", why);
    CHECK(strcmp(rt_backend_resolve("cpu", why, sizeof why), "cpu") == 0 && !why[0], "cpu resolved to another");
    /* An unknown name lists cuda and auto. */
    rt_kernels *u = rt_kernels_new("nope", g, err, sizeof err);
    CHECK(!u && strstr(err, "cuda") && strstr(err, "auto"), "unknown backend message lacks cuda or auto: '%s'", err);
    if (b) b->free(b);
    jt_graph_free(g);
    return failures ? 1 : 0;
  }
  if (!b) {
    CHECK(clear_refusal(err), "unclear refusal: '%s'", err);
    jt_graph_free(g);
    if (failures) return 1;
    printf("SKIP: %s\n", err);
    return 77;
  }
  b->free(b);

  /* Every case on each path of the backend: the sparse kernels, cuBLAS
   * with the dense path's helpers, and the measured choice. */
  static const char *const paths[] = {"sparse", "dense", "auto"};
  for (int p = 0; p < 3; p++) {
    setenv("ILNAS_CUDA_PATH", paths[p], 1);
    int before = failures;
    bc_conv_case(&cuda, 3, 8, 8, 4, 3, 1, 1, 2, 1.0, 0, 1);
    bc_conv_case(&cuda, 16, 14, 14, 32, 3, 1, 1, 16, 0.25, 0, 1); /* a realistic layer, larger batch */
    bc_linear_case(&cuda, 784, 64, 32, 0.25, 1);
    for (int d = 0; d < ND && p < 2; d++)
      for (int c = 0; c < 6; c++) {
        int k = jt_int(1, 5), stride = jt_int(1, 3), pad = jt_int(0, k - 1);
        int lo = k > 2 * pad ? k - 2 * pad : 1;
        bc_conv_case(&cuda, jt_int(1, 9), jt_int(lo, 13), jt_int(lo, 13), jt_int(1, 9), k, stride, pad,
                     jt_int(1, 5), densities[d], c % 2, c % 3 != 2);
      }
    for (int d = 0; d < ND && p < 2; d++)
      for (int c = 0; c < 6; c++)
        bc_linear_case(&cuda, jt_int(1, 300), jt_int(1, 70), jt_int(1, 9), densities[d], c % 3 != 2);
    printf("path %s: %d failures\n", paths[p], failures - before);
  }
  /* A path the backend does not know is refused with a message. */
  setenv("ILNAS_CUDA_PATH", "fast", 1);
  b = rt_kernels_new("cuda", g, err, sizeof err);
  CHECK(!b && strstr(err, "ILNAS_CUDA_PATH"), "ILNAS_CUDA_PATH=fast not refused: '%s'", err);
  if (b) b->free(b);
  unsetenv("ILNAS_CUDA_PATH");
  jt_graph_free(g);
  printf("cuda ops against ref: %d failures\n", failures);
  return failures ? 1 : 0;
}
