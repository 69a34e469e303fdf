/* test_dx_in_z: the host step on the CPU backend with a conv's input
 * gradient written into its own batch norm's pre-activation z, where the
 * producer's backward reads it (rt_host_dx_in_z), against the same step
 * with it in the gradients' arena: every loss, the gradients after the
 * first backward, the parameters and an inference the same bits, over
 * steps with a growth, on two threads and an odd batch. The models: the
 * batch norm template's shape (a reader behind a pool and one behind a
 * conv), on the kernels, on OpenBLAS (dz made whole first) and on the
 * kernels of 8 lanes, and at 100%; a conv whose input gradient does not
 * fit its z (none written there, the conv behind it does); and one whose
 * producer's weight gradient its backward takes (rt_conv_shape.xg: none
 * either). */
#include "jitexec.h"
#include "runtime/cpu/cpu.h"
#include "runtime/host.h"
#include "runtime/kernels.h"

static int same(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

/* Model src trained STEPS steps with the gradient in z (x[0]) and apart
 * (x[1]); want: the layers that write it there. dense 1: on OpenBLAS; 2:
 * the kernels of 8 lanes. fold 0: a conv whose weight gradient its
 * reader takes is not folded (rt_host_fold). */
static void train_case(const char *what, const char *src, int want, int dense, int fold) {
  char err[256];
  ir_graph *g = jt_build(src);
  CHECK(g, "%s: the model does not build", what);
  if (!g) return;
  enum { N = 7, STEPS = 8 };
  rt_exec *x[2];
  for (int k = 0; k < 2; k++) {
    x[k] = rt_exec_new(g, N, 2, "cpu/bounds", err, sizeof err);
    CHECK(x[k], "%s: exec: %s", what, err);
    if (!x[k]) return;
    rt_exec_init_params(x[k], 5);
    rt_kernels *kb = x[k]->backend->i->kernels(x[k]->backend);
    if (dense == 1) rt_cpu_set_dense_threshold(kb, 0.0, 0.0);
    if (dense == 2) CHECK(rt_cpu_set_lanes(kb, 8) == 0, "8 lanes");
    rt_host_fold(x[k]->backend, fold);
  }
  rt_host_dx_in_z(x[1]->backend, 0);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *in = jt_randf(N * img), *vals = jt_randf(64);
  for (size_t i = 0; i < N * img; i++) in[i] = 0.5f + 0.5f * in[i];
  ir_label lab[N];
  for (int i = 0; i < N; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  for (int step = 0; step < STEPS; step++) {
    if (step == 4) jt_grow_each(x, 2, vals); /* growth */
    double loss[2];
    for (int k = 0; k < 2; k++) {
      CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "%s: prepare: %s", what, err);
      rt_exec_set_input(x[k], in, N);
      rt_exec_forward(x[k]);
      loss[k] = rt_exec_loss(x[k], lab, 1, NULL);
      rt_exec_backward(x[k]);
    }
    if (step == 0)
      CHECK(same(rt_exec_view(x[0], RT_GRADS), rt_exec_view(x[1], RT_GRADS), (size_t)g->n_params),
            "%s: the first gradients differ", what);
    for (int k = 0; k < 2; k++) {
      rt_exec_sgd(x[k], 0.05f, 0.9f, 5e-4f);
      CHECK(rt_exec_status(x[k], err, sizeof err) == 0, "%s: step: %s", what, err);
    }
    CHECK(loss[0] == loss[1], "%s, step %d: loss %.9g with dx in z, %.9g apart", what, step,
          loss[0], loss[1]);
  }
  CHECK(rt_host_dx_in_z_layers(x[0]->backend) == want &&
            rt_host_dx_in_z_layers(x[1]->backend) == 0,
        "%s: layers with dx in z: %d and %d (%d and 0 wanted)", what,
        rt_host_dx_in_z_layers(x[0]->backend), rt_host_dx_in_z_layers(x[1]->backend), want);
  CHECK(same(rt_exec_view(x[0], RT_PARAMS), rt_exec_view(x[1], RT_PARAMS), (size_t)g->n_params),
        "%s: the parameters differ", what);
  double eval[2] = {jt_infer_loss(x[0], in, N, lab), jt_infer_loss(x[1], in, N, lab)};
  CHECK(eval[0] == eval[1], "%s: inference loss %.9g with dx in z, %.9g apart", what, eval[0],
        eval[1]);
  free(in), free(vals);
  rt_exec_free(x[0]), rt_exec_free(x[1]), ir_free(g);
}

int main(void) {
  /* conv2.0 reads conv1.1's pool, conv2.1 conv2.0 (conv1.1 remakes
   * conv1.0, folded: its input gradient is never made) */
  static const char *tmpl =
      "model r { input 1x12x12; classes 4; search weight from density 0.3 seed 3;"
      " stage conv { layers 2 channels 8 kernel 3x3 norm batch; } reduce maxpool 2;"
      " stage conv { layers 2 channels 16 kernel 3x3 norm batch; } reduce maxpool 2;"
      " stage linear { layers 1 width 12 } }";
  train_case("the template", tmpl, 2, 0, 1);
  train_case("the template on OpenBLAS", tmpl, 2, 1, 1);
  train_case("the template on 8 lanes", tmpl, 2, 2, 1);
  train_case("the template at 100%",
             "model r { input 1x12x12; classes 4; search weight from density 1 seed 3;"
             " stage conv { layers 2 channels 8 kernel 3x3 norm batch; } reduce maxpool 2;"
             " stage conv { layers 2 channels 16 kernel 3x3 norm batch; } reduce maxpool 2;"
             " stage linear { layers 1 width 12 } }",
             2, 0, 1);
  /* 16 -> 8: its input gradient twice its z; 8 -> 8 behind it fits */
  train_case("a narrowing conv",
             "model r { input 1x10x10; classes 4; search weight from density 0.4 seed 3;"
             " stage conv { layers 2 channels 16 kernel 3x3 norm batch; }"
             " stage conv { layers 2 channels 8 kernel 3x3 norm batch; }"
             " stage linear { layers 1 width 12 } }",
             1, 0, 1);
  /* conv1.1 takes conv1.0's weight gradient, not folded: conv1.0 does not
   * read its output's gradient, which stays in the arena */
  train_case("a taken gradient",
             "model r { input 1x12x12; classes 4; search weight from density 0.3 seed 3;"
             " stage conv { layers 2 channels 8 kernel 3x3 norm batch; } reduce maxpool 2;"
             " stage linear { layers 1 width 12 } }",
             0, 0, 0);
  if (!failures) printf("test_dx_in_z: all passed\n");
  return failures != 0;
}
