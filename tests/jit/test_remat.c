/* test_remat: a conv whose input its kernels remake from the conv before
 * it (rt_conv_shape.xr) against the two layers computed apart on the same
 * CPU backend, bit for bit: the consumer's output, its weight and bias
 * gradients, and the producer's. Random shapes and masks over every path
 * the backend takes: both on the JIT kernels at stride 1 (the producer's
 * kernel writing straight into the consumer's padded planes where their
 * geometry allows, as the first cases' 3x3 convs on 28x28 do, else its
 * packed rows into the consumer's packing), the consumer at
 * stride 2 or the producer on OpenBLAS (the samples remade plain), the
 * consumer on OpenBLAS (the call's samples remade whole); 8 and 16 lanes;
 * odd sample counts, so that the last pair is a single sample.
 * Then the host step: a model whose first conv its second remakes,
 * trained with remaking and without, growing between steps, on two
 * threads: every loss, the parameters and an inference the same bits.
 * And models whose first conv has batch norm, whose weight gradient its
 * second's backward takes (rt_conv_shape.xg), then folded with its batch
 * norm and remade by the second (rt_host_fold): the same gradients but
 * for the order of their sums, on the kernels and on OpenBLAS; and in
 * inference, folded with the running statistics, within 1e-5 of apart. */
#include "jitexec.h"
#include "runtime/cpu/cpu.h"
#include "runtime/host.h"
#include "runtime/kernels.h"

/* Two conv layers, the second reading the first's output. */
static ir_graph *pair_graph(int cin, int h, int w, int mid, int k0, int s0, int p0, int cout,
                            int k1, int s1, int p1) {
  ir_graph *g = calloc(1, sizeof *g);
  g->layers = calloc(2, sizeof *g->layers);
  g->n_layers = 2;
  int ci[2] = {cin, mid}, co[2] = {mid, cout}, k[2] = {k0, k1}, st[2] = {s0, s1}, pd[2] = {p0, p1};
  int hh = h, ww = w;
  for (int i = 0; i < 2; i++) {
    ir_layer *l = &g->layers[i];
    l->kind = IR_CONV, l->cin = ci[i], l->h = hh, l->w = ww, l->cout = co[i];
    l->k = k[i], l->stride = st[i], l->pad = pd[i], l->relu = 1;
    l->oh = (hh + 2 * pd[i] - k[i]) / st[i] + 1, l->ow = (ww + 2 * pd[i] - k[i]) / st[i] + 1;
    l->n_w = (int64_t)co[i] * ci[i] * k[i] * k[i];
    hh = l->oh, ww = l->ow;
  }
  return g;
}

static rt_conv_shape shape_of(const ir_layer *l, int n) {
  rt_conv_shape s = {.n = n, .cin = l->cin, .h = l->h, .w = l->w, .cout = l->cout, .k = l->k,
                     .stride = l->stride, .pad = l->pad, .relu = 1};
  rt_conv_shape_finish(&s);
  return s;
}

static float *copy(const float *a, size_t n) {
  float *b = malloc(n * sizeof *b);
  memcpy(b, a, n * sizeof *b);
  return b;
}

static int same(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

/* thr: the dense threshold (2: every layer on the JIT kernels, 0: on
 * OpenBLAS); d0, d1: the two layers' densities. */
static void pair_case(int cin, int h, int w, int mid, int k0, int s0, int p0, int cout, int k1,
                      int s1, int p1, int n, double d0, double d1, double thr, int lanes) {
  char err[1024], what[256];
  snprintf(what, sizeof what,
           "%dx%dx%d -> %d (k%d s%d p%d) -> %d (k%d s%d p%d), n %d, %.2f/%.2f, thr %.2f, %d lanes",
           cin, h, w, mid, k0, s0, p0, cout, k1, s1, p1, n, d0, d1, thr, lanes);
  ir_graph *g = pair_graph(cin, h, w, mid, k0, s0, p0, cout, k1, s1, p1);
  const ir_layer *L0 = &g->layers[0], *L1 = &g->layers[1];
  rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
  CHECK(b, "cpu backend: %s", err);
  if (!b) {
    jt_graph_free(g);
    return;
  }
  CHECK(b->remat, "cpu backend: no remat");
  CHECK(rt_cpu_set_lanes(b, lanes) == 0, "lanes");
  rt_cpu_set_dense_threshold(b, thr, thr);
  size_t nw0 = (size_t)L0->n_w, nw1 = (size_t)L1->n_w;
  uint8_t *wm0 = jt_mask(nw0, 1, d0), *wm1 = jt_mask(nw1, 1, d1);
  uint8_t *bm0 = jt_mask((size_t)mid, 1, 0.7), *bm1 = jt_mask((size_t)cout, 1, 0.7);
  CHECK(b->prepare(b, 0, wm0, bm0, err, sizeof err) == 0, "%s: prepare 0: %s", what, err);
  CHECK(b->prepare(b, 1, wm1, bm1, err, sizeof err) == 0, "%s: prepare 1: %s", what, err);
  float *w0 = jt_randf(nw0), *w1 = jt_randf(nw1);
  float *b0 = jt_randf((size_t)mid), *b1 = jt_randf((size_t)cout);
  for (size_t i = 0; i < nw0; i++) w0[i] = wm0[i] ? w0[i] : 0.0f;
  for (size_t i = 0; i < nw1; i++) w1[i] = wm1[i] ? w1[i] : 0.0f;
  for (int i = 0; i < mid; i++) b0[i] = bm0[i] ? b0[i] : 0.0f;
  for (int i = 0; i < cout; i++) b1[i] = bm1[i] ? b1[i] : 0.0f;
  rt_conv_shape s0s = shape_of(L0, n), s1s = shape_of(L1, n);
  size_t nx = (size_t)n * s0s.x_ns, nm = (size_t)n * s1s.x_ns, ny = (size_t)n * s1s.y_ns;
  float *x = jt_randf(nx), *dy = jt_randf(ny);

  /* apart: the producer's output written, the consumer reading it */
  float *ym = jt_randf(nm), *y = jt_randf(ny), *dxm = calloc(nm, sizeof *dxm);
  float *dw1 = jt_randf(nw1), *db1 = jt_randf((size_t)cout);
  float *dw0 = jt_randf(nw0), *db0 = jt_randf((size_t)mid), *dyc = copy(dy, ny);
  CHECK(b->conv_fwd(b, 0, &s0s, x, w0, b0, ym) == 0, "%s: fwd 0", what);
  CHECK(b->conv_fwd(b, 1, &s1s, ym, w1, b1, y) == 0, "%s: fwd 1", what);
  CHECK(b->conv_bwd(b, 1, &s1s, ym, dyc, y, w1, dxm, dw1, db1) == 0, "%s: bwd 1", what);
  CHECK(b->conv_bwd(b, 0, &s0s, x, dxm, ym, w0, NULL, dw0, db0) == 0, "%s: bwd 0", what);

  /* remade */
  rt_conv_src src = {0, s0s, x, w0, b0, NULL, NULL, 0};
  rt_conv_shape t = s1s;
  t.xr = &src;
  float *y2 = jt_randf(ny), *dw1b = jt_randf(nw1), *db1b = jt_randf((size_t)cout);
  float *dw0b = jt_randf(nw0), *db0b = jt_randf((size_t)mid), *dyc2 = copy(dy, ny);
  CHECK(b->conv_fwd(b, 1, &t, NULL, w1, b1, y2) == 0, "%s: fwd remade: %s", what, b->error);
  CHECK(same(y, y2, ny), "%s: the consumer's output differs", what);
  src.dw = dw0b, src.db = db0b;
  CHECK(b->conv_bwd(b, 1, &t, NULL, dyc2, y2, w1, NULL, dw1b, db1b) == 0, "%s: bwd remade: %s",
        what, b->error);
  CHECK(same(dw1, dw1b, nw1) && same(db1, db1b, (size_t)cout),
        "%s: the consumer's gradients differ", what);
  CHECK(same(dw0, dw0b, nw0) && same(db0, db0b, (size_t)mid),
        "%s: the producer's gradients differ", what);
  b->free(b);
  free(wm0), free(wm1), free(bm0), free(bm1), free(w0), free(w1), free(b0), free(b1), free(x),
      free(dy), free(ym), free(y), free(dxm), free(dw1), free(db1), free(dw0), free(db0),
      free(dyc), free(y2), free(dw1b), free(db1b), free(dw0b), free(db0b), free(dyc2);
  jt_graph_free(g);
}

/* One backward's gradients of x0 and x1, the same but for the order of
 * their sums: each within 2e-4 of its layer's largest. */
static void near_grads(const ir_graph *g, rt_exec *x0, rt_exec *x1) {
  const float *g0 = rt_exec_view(x0, RT_GRADS), *g1 = rt_exec_view(x1, RT_GRADS);
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    int64_t off[3] = {l->w_off, l->b_off, l->g_off}, n[3] = {l->n_w, l->cout, 2 * l->cout};
    /* the scale: the largest of the layer's (batch norm's conv's bias
     * gradient is 0 but for rounding) */
    double big = 1e-12;
    for (int k = 0; k < 3; k++)
      for (int64_t i = 0; off[k] >= 0 && i < n[k]; i++) big = fmax(big, fabs(g1[off[k] + i]));
    for (int k = 0; k < 3; k++) {
      double bad = 0.0;
      for (int64_t i = 0; off[k] >= 0 && i < n[k]; i++)
        bad = fmax(bad, fabs(g0[off[k] + i] - g1[off[k] + i]));
      CHECK(bad <= 2e-4 * big, "%s's %s gradient: off by %g of %g", l->name,
            k == 0 ? "weight" : k == 1 ? "bias" : "batch norm", bad, big);
    }
  }
}

/* The host step with and without remaking (rt_host_remat), the same
 * steps on each, with a growth: model src, one layer of which the plan
 * should remake, or (bn) take the weight gradient of by its reader's
 * backward (rt_conv_shape.xg), with fold also folded with its batch norm
 * and remade (rt_host_fold); with dense 1, on OpenBLAS, with 2, on the
 * kernels of 8 lanes. Remade: the same
 * losses, parameters and inference loss, bit for bit. Taken: the first
 * backward's gradients the same but for the order of their sums
 * (near_grads), the losses within 1e-4; the input not centred, as images
 * are not, so that the sums the taken gradient subtracts are large. */
static void train_case(const char *src, int bn, int dense, int fold) {
  char err[256];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  enum { N = 7, STEPS = 9 };
  rt_exec *x[2];
  for (int k = 0; k < 2; k++) {
    /* the host step itself (the live layout makes a new one at each
     * change of channels) */
    x[k] = rt_exec_new(g, N, 2, "cpu/bounds", err, sizeof err);
    CHECK(x[k], "exec: %s", err);
    if (!x[k]) return;
    rt_exec_init_params(x[k], 5);
    /* two of the first conv's biases masked (under batch norm, the folded
     * bias is every channel's: beta's) */
    for (int c = 1; c < 4; c += 2) rt_exec_set_unit(x[k], g->layers[0].b_off + c, 1, 0, NULL);
    rt_kernels *kb = x[k]->backend->i->kernels(x[k]->backend);
    if (dense == 1) rt_cpu_set_dense_threshold(kb, 0.0, 0.0);
    if (dense == 2) CHECK(rt_cpu_set_lanes(kb, 8) == 0, "8 lanes");
  }
  rt_host_remat(x[1]->backend, 0);
  rt_host_fold(x[0]->backend, fold);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *in = jt_randf(N * img), *vals = jt_randf(64);
  for (size_t i = 0; bn && i < N * img; i++) in[i] = 0.5f + 0.5f * in[i];
  ir_label lab[N];
  for (int i = 0; i < N; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  for (int step = 0; step < STEPS; step++) {
    if (step == 4) jt_grow_each(x, 2, vals); /* growth */
    double loss[2];
    for (int k = 0; k < 2; k++) {
      CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "prepare: %s", err);
      rt_exec_set_input(x[k], in, N);
      rt_exec_forward(x[k]);
      loss[k] = rt_exec_loss(x[k], lab, 1, NULL);
      rt_exec_backward(x[k]);
    }
    if (bn && step == 0) near_grads(g, x[0], x[1]);
    for (int k = 0; k < 2; k++) {
      rt_exec_sgd(x[k], 0.05f, 0.9f, 5e-4f);
      CHECK(rt_exec_status(x[k], err, sizeof err) == 0, "step: %s", err);
    }
    CHECK(bn ? fabs(loss[0] - loss[1]) <= 1e-4 * fabs(loss[1]) : loss[0] == loss[1],
          "step %d%s: loss %.9g remade, %.9g apart", step, fold ? " (folded)" : "", loss[0],
          loss[1]);
  }
  if (bn) { /* the first conv's output statistics, as its last forward made it: folded, left */
    double st[2][2][64];
    const ir_layer *l0 = &g->layers[0];
    for (int k = 0; k < 2 && l0->cout <= 64; k++)
      CHECK(x[k]->backend->i->channel_stats(x[k]->backend, 0, st[k][0], st[k][1], NULL) == 0,
            "channel stats");
    for (int c = 0; c < l0->cout && l0->cout <= 64; c++)
      CHECK(fabs(st[0][0][c] - st[1][0][c]) <= 1e-4 * (1 + fabs(st[1][0][c])) &&
                fabs(st[0][1][c] - st[1][1][c]) <= 1e-4 * (1 + st[1][1][c]),
            "channel %d's statistics: mean %g, variance %g against %g, %g", c, st[0][0][c],
            st[0][1][c], st[1][0][c], st[1][1][c]);
  }
  CHECK(rt_host_folded(x[0]->backend) == (bn && fold), "folded layers: %d (%d wanted)",
        rt_host_folded(x[0]->backend), bn && fold);
  CHECK(rt_host_remade(x[0]->backend) == 1 && rt_host_remade(x[1]->backend) == 0,
        "remade layers: %d and %d (1 and 0 wanted)", rt_host_remade(x[0]->backend),
        rt_host_remade(x[1]->backend));
  if (!bn) {
    CHECK(same(rt_exec_view(x[0], RT_PARAMS), rt_exec_view(x[1], RT_PARAMS), (size_t)g->n_params),
          "the parameters differ");
    double eval[2] = {jt_infer_loss(x[0], in, N, lab), jt_infer_loss(x[1], in, N, lab)};
    CHECK(eval[0] == eval[1], "inference loss %.9g remade, %.9g apart", eval[0], eval[1]);
  } else { /* inference on x[0]'s parameters and running statistics: the first
            * conv folded with them and remade (x[0], fold) against made apart */
    memcpy(rt_exec_params_write(x[1]), rt_exec_view(x[0], RT_PARAMS),
           (size_t)g->n_params * sizeof(float));
    memcpy(rt_exec_edit(x[1], RT_STATS), rt_exec_view(x[0], RT_STATS),
           (size_t)g->n_stats * sizeof(float));
    double eval[2] = {jt_infer_loss(x[0], in, N, lab), jt_infer_loss(x[1], in, N, lab)};
    CHECK(fabs(eval[0] - eval[1]) <= 1e-5 * fabs(eval[1]), "inference loss %.9g%s, %.9g apart",
          eval[0], fold ? " folded" : "", eval[1]);
  }
  free(in), free(vals);
  rt_exec_free(x[0]), rt_exec_free(x[1]), ir_free(g);
}

int main(void) {
  /* the Fashion-MNIST sample's first two convs at its density, each path */
  pair_case(1, 28, 28, 32, 3, 1, 1, 32, 3, 1, 1, 5, 0.25, 0.2, 2.0, 16);
  pair_case(1, 28, 28, 32, 3, 1, 1, 32, 3, 1, 1, 5, 0.25, 0.2, 2.0, 8);
  pair_case(1, 28, 28, 32, 3, 1, 1, 32, 3, 2, 1, 3, 0.25, 0.2, 2.0, 16); /* consumer at stride 2 */
  pair_case(3, 16, 16, 8, 3, 1, 1, 8, 3, 1, 1, 3, 1.0, 0.3, 0.5, 16);    /* producer on OpenBLAS */
  pair_case(1, 12, 12, 8, 3, 1, 1, 8, 3, 1, 1, 3, 0.5, 0.5, 0.0, 16);    /* both on OpenBLAS */
  pair_case(3, 9, 7, 5, 3, 2, 0, 6, 3, 1, 1, 4, 1.0, 1.0, 2.0, 16);     /* full layers, row blocks */
  for (int c = 0; c < 24; c++) {
    int cin = jt_int(1, 3), h = jt_int(3, 30), w = jt_int(3, 30), k0 = jt_int(0, 1) ? 3 : 1;
    int s0 = jt_int(1, 2), p0 = jt_int(0, k0 / 2), mid = jt_int(1, 12), cout = jt_int(1, 12);
    int h1 = (h + 2 * p0 - k0) / s0 + 1, w1 = (w + 2 * p0 - k0) / s0 + 1;
    int k1 = h1 >= 5 && w1 >= 5 && jt_int(0, 3) == 0 ? 5 : 3, p1 = jt_int(0, k1 / 2);
    if (h1 + 2 * p1 < k1 || w1 + 2 * p1 < k1) p1 = k1 / 2;
    static const double thr[] = {2.0, 2.0, 0.5, 0.0};
    pair_case(cin, h, w, mid, k0, s0, p0, cout, k1, jt_int(1, 2), p1, jt_int(1, 7),
              jt_unif(), jt_unif(), thr[c % 4], c % 3 ? 16 : 8);
  }
  /* the sample's shape of template: 1 -> 16 remade by 16 -> 16, a pool */
  train_case("model r { input 1x14x14; classes 4; search weight from density 0.4 seed 3;"
             " stage conv { layers 2 channels 16 kernel 3x3 } reduce maxpool 2;"
             " stage linear { layers 1 width 12 } }", 0, 0, 1);
  /* the batch norm template's first two layers: on the kernels, at 30%
   * and at 100% (row blocks), on OpenBLAS (x's gradient made whole), and
   * on the kernels of 8 lanes; and a 5x5 conv reading a 3x3's, whose rows
   * are not its planes' (the producer's kernel writes its own rows), with
   * no pool after it. With a pool, the taken gradient and the apart step
   * differed at the fourth step in one weight of the 5x5's gradient (0.047
   * against 0.028; the loss and every other gradient the same, the
   * parameters 6e-8 apart from three steps of sums in another order), and
   * on the kernels of 8 lanes the two sides swapped their values: the mark
   * of a window whose two nearly equal values swap places as its maximum,
   * its gradient going to the other (not traced further); and a stride-2
   * conv reading a 3x3's (the input remade plain, its gradient apart) */
  static const char *bn_models[] = {
      "model r { input 1x14x14; classes 4; search weight from density 0.3 seed 3;"
      " stage conv { layers 2 channels 16 kernel 3x3 norm batch; } reduce maxpool 2;"
      " stage linear { layers 1 width 12 } }",
      "model r { input 1x12x12; classes 4; search weight from density 1 seed 3;"
      " stage conv { layers 2 channels 8 kernel 3x3 norm batch; } reduce maxpool 2;"
      " stage linear { layers 1 width 12 } }",
      "model r { input 1x14x14; classes 4; search weight from density 0.3 seed 3;"
      " stage conv { layers 1 channels 8 kernel 3x3 norm batch; }"
      " stage conv { layers 1 channels 8 kernel 5x5 norm batch; }"
      " stage linear { layers 1 width 12 } }",
      "model r { input 1x14x14; classes 4; search weight from density 0.3 seed 3;"
      " stage conv { layers 1 channels 8 kernel 3x3 norm batch; } reduce conv 2;"
      " stage linear { layers 1 width 12 } }"};
  for (int fold = 0; fold < 2; fold++) /* taken, then folded (rt_host_fold) */
    train_case(bn_models[0], 1, 0, fold), train_case(bn_models[1], 1, 0, fold),
        train_case(bn_models[0], 1, 1, fold), train_case(bn_models[0], 1, 2, fold),
        train_case(bn_models[2], 1, 0, fold), train_case(bn_models[3], 1, 0, fold);
  if (!failures) printf("test_remat: all passed\n");
  return failures != 0;
}
