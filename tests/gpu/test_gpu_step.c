/* test_gpu_step: the device step (runtime/cuda/step.h) on the host
 * emulation of a GPU (emu_driver.h), whose copy entry points count the
 * bytes that cross the bus.
 *
 *   traffic: a training step after the first (upload, forward, loss,
 *            backward, SGD) copies the batch (its images and labels) and
 *            at most 64 bytes besides: SGD's scalars in, the loss and
 *            the accuracy count out; and it runs as CUDA graphs, one
 *            launch per phase (forward, loss, backward, SGD).
 *   graphs:  the steps replayed from graphs give the same losses, bit
 *            for bit, as the same steps enqueued kernel by kernel
 *            (ILNAS_CUDA_GRAPHS=0), and so do the parameters after them;
 *            a prepare (an α change) captures them again.
 *   the set: with the training set kept on the device
 *            (rt_exec_set_dataset), a step copies the batch's draws
 *            (12 bytes an image) and the same 64 bytes at most, and
 *            makes the same images (crop and flip) as the host: the
 *            same losses and parameters, bit for bit, as the steps
 *            given those images; a new step of the live layout (an α
 *            change) takes the set on the device, not a second copy.
 *   one op:  the step as one operation (rt_exec_train_step) launches
 *            one graph, the batch's gather in it, and gives the same
 *            bytes, losses and parameters as the four calls.
 *   phase II: the dense gradient of a batch (every weight's, a dead
 *            layer's as if it came alive) runs on the device and equals
 *            the reference's; it copies the batch in and the gradient
 *            and the loss out, once, and nothing per layer. A prepare
 *            during phase II builds the step's kernels at its next pass,
 *            and phase II without cuBLAS stops with a message.
 *
 * The model has batch norm (both orders), a max pool, a dead layer, GAP
 * and a linear stage, so that every generated op of the step runs. */
#include "tests/jit/jitutil.h"
#include "tests/jit/deferred.h"

#include "runtime/cuda/step.h"
#include "runtime/exec.h"
#include "runtime/packed.h"
#include "search/search.h"
#include "tests/gpu/emu_driver.h"

enum { BATCH = 8, STEPS = 5 };

static const char *const src =
    "model s { input 2x8x8; classes 5; search weight budget 4k from density 0.4 seed 4;"
    " stage conv { layers 2..3 channels 4..6 kernel 3x3 dense norm batch }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 4..6 kernel 3x3 norm batch after }"
    " reduce gap;"
    " stage linear { layers 1..2 width 6..8 } }";

typedef struct run {
  double loss[STEPS];
  long long bytes[STEPS], batch;
  long long change, set; /* the bytes of step 3 with its α change, of the set kept */
  long launches[STEPS];
  float *params;
} run;

enum { NSET = 20, CROP = 1 };

/* ways of beginning a pass: the images, or the draws of a set kept on the
 * device, or that set's images made on the host from the same draws */
enum { FIXED, KEPT, MADE };

static int train(run *r, int graphs, int how, const char *backend, int fused) {
  char err[256];
  if (graphs) unsetenv("ILNAS_CUDA_GRAPHS");
  else setenv("ILNAS_CUDA_GRAPHS", "0", 1);
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return -1;
  /* the device step itself: its traffic and graphs, at the bounds */
  rt_exec *x = rt_exec_new(g, BATCH, 1, backend, err, sizeof err);
  CHECK(x, "cuda exec: %s", err);
  if (!x) {
    ir_free(g);
    return -1;
  }
  rt_exec_init_params(x, 5);
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  jt_state = 88172645463325252ull;
  float *in = jt_randf((size_t)BATCH * img);
  ir_label lab[BATCH];
  for (int i = 0; i < BATCH; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  r->batch = (long long)(BATCH * img * sizeof(float)) + BATCH * (long long)sizeof(ir_label);
  /* a set of NSET images in [0, 1], kept on the device (KEPT) */
  rt_dataset ds = {NSET, t->c, t->h, t->w, g->cfg.classes, jt_randf((size_t)NSET * img), NULL, 1.0f,
                   malloc(NSET * sizeof(ir_label)), NULL};
  for (size_t i = 0; i < (size_t)NSET * img; i++) ds.x[i] = 0.5f + 0.5f * ds.x[i];
  for (int i = 0; i < NSET; i++) ds.y[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  rt_norm nm;
  rt_data_norm(&ds, &nm);
  if (how == KEPT) {
    CHECK(rt_exec_set_dataset(x, &ds, &nm, CROP, err, sizeof err) == 1, "the set is not kept: %s",
          rt_exec_status(x, err, sizeof err) ? err : "");
    r->batch = BATCH * (long long)sizeof(rt_draw);
  }
  r->set = (long long)(NSET * img * sizeof(float)) + NSET * (long long)sizeof(ir_label);
  rt_rng rng;
  rt_rng_seed(&rng, 9);
  long long c0[2], c1[2];
  for (int s = 0; s < STEPS; s++) {
    if (s == 3) emu_traffic(&c0[0], &c0[1]);
    if (s == 3) { /* an α change: prepare, and the graphs are captured again */
      const ir_layer *l = g->layers;
      while (l->w_off < 0 || !x->arch->alive[l - g->layers]) l++;
      rt_exec_set_unit(x, l->w_off, 1, !ir_alpha_get(x->arch, l->w_off), NULL);
      /* and through the live layout, a dead layer comes alive: a new step */
      for (int li = 0; strcmp(backend, "cuda") == 0 && li < g->n_layers; li++) {
        const ir_layer *dl = &g->layers[li];
        if (dl->w_off < 0 || x->arch->alive[li]) continue;
        rt_exec_set_alive(x, li, 1);
        int64_t unit = ir_fan_in(dl) / dl->cin;
        rt_exec_set_unit(x, dl->w_off, unit, 1, NULL);
        break;
      }
      CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare: %s", err);
    }
    rt_draw dr[BATCH];
    int idx[BATCH];
    for (int i = 0; i < BATCH; i++) idx[i] = (s * 7 + i * 3) % NSET;
    rt_data_draws(idx, BATCH, CROP, 1, &rng, dr);
    if (how == MADE) rt_data_make(&ds, dr, BATCH, &nm, CROP, in, lab);
    long long h0, d0, h1, d1;
    emu_traffic(&h0, &d0);
    long l0 = emu_launches();
    if (how == KEPT) {
      rt_exec_set_draws(x, dr, BATCH);
      for (int i = 0; i < BATCH; i++) lab[i] = ds.y[idx[i]];
    } else {
      rt_exec_set_input(x, in, BATCH);
    }
    if (fused) {
      r->loss[s] = rt_exec_train_step(x, lab, 0.05f, 0.9f, 5e-4f, NULL);
    } else {
      rt_exec_forward(x);
      r->loss[s] = rt_exec_loss(x, lab, 1, NULL);
      rt_exec_backward(x);
      rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
    }
    emu_traffic(&h1, &d1);
    r->launches[s] = emu_launches() - l0;
    r->bytes[s] = (h1 - h0) + (d1 - d0);
    if (s == 3) emu_traffic(&c1[0], &c1[1]), r->change = (c1[0] - c0[0]) + (c1[1] - c0[1]);
    CHECK(rt_exec_status(x, err, sizeof err) == 0, "step %d: %s", s, err);
  }
  if (strcmp(backend, "cuda") == 0)
    CHECK(rt_packed_rebuilds(x->backend) >= 2, "the live layout made no new step (%ld)",
          rt_packed_rebuilds(x->backend));
  rt_cuda_step_stats st = rt_cuda_step_get_stats(x->backend);
  int phases = fused ? 1 : 4; /* graphs a step */
  if (graphs && strcmp(backend, "cuda/bounds") == 0)
    CHECK(st.captures >= 2 * phases && st.graph_launches >= phases * (STEPS - 2),
          "graphs: %ld captures, %ld graph launches over %d steps", st.captures, st.graph_launches, STEPS);
  r->params = malloc((size_t)g->n_params * sizeof(float));
  memcpy(r->params, rt_exec_view(x, RT_PARAMS), (size_t)g->n_params * sizeof(float));
  int64_t np = g->n_params;
  free(in), free(ds.x), free(ds.y);
  rt_exec_free(x);
  ir_free(g);
  return (int)np;
}

/* Phase II's dense gradient on backend against the reference's. */
static void phase2(const char *backend) {
  char err[256];
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return;
  rt_exec *x[2] = {rt_exec_new(g, BATCH, 1, backend, err, sizeof err), NULL};
  CHECK(x[0], "%s exec: %s", backend, err);
  x[1] = x[0] ? rt_exec_new(g, BATCH, 1, "ref", err, sizeof err) : NULL;
  if (!x[1]) {
    if (x[0]) rt_exec_free(x[0]);
    ir_free(g);
    return;
  }
  int dead = -1;
  for (int li = 0; li < g->n_layers; li++)
    if (g->layers[li].w_off >= 0 && !x[0]->arch->alive[li]) dead = li;
  CHECK(dead >= 0, "the model has no dead layer");
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  jt_state = 1234567;
  float *in = jt_randf((size_t)BATCH * img), *dg[2];
  ir_label lab[BATCH];
  for (int i = 0; i < BATCH; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  double loss[2];
  long long h2d = 0, d2h = 0;
  for (int k = 0; k < 2; k++) {
    rt_exec_init_params(x[k], 5);
    CHECK(rt_exec_prepare(x[k], err, sizeof err) == 0, "prepare: %s", err);
    dg[k] = calloc((size_t)g->n_params, sizeof(float));
    rt_exec_phase2(x[k], 1);
    /* the second batch's traffic: the first builds phase II's kernels,
     * and the live layout its step for phase II */
    for (int rep = 0; rep < 2; rep++) {
      long long h0, d0, h1, d1;
      emu_traffic(&h0, &d0);
      memset(dg[k], 0, (size_t)g->n_params * sizeof(float));
      CHECK(rt_exec_dense_grad(x[k], in, lab, BATCH, dg[k], &loss[k], err, sizeof err) == 0, "%s: dense grad: %s",
            k ? "ref" : backend, err);
      emu_traffic(&h1, &d1);
      h2d = h1 - h0, d2h = d1 - d0;
    }
    rt_exec_phase2(x[k], 0);
    if (k == 0) {
      long long batch = (long long)(BATCH * img * sizeof(float)) + BATCH * (long long)sizeof(ir_label);
      long long grads = g->n_params * (long long)sizeof(float);
      printf("phase II, %s: a batch's dense gradient copies %lld bytes in (the batch's %lld) and %lld out "
             "(the gradient's %lld at most)\n", backend, h2d, batch, d2h, grads);
      CHECK(h2d <= batch + 64 && d2h <= grads + 64, "phase II, %s: %lld bytes in, %lld out: more than the batch "
            "(%lld) in and the gradient (%lld) out", backend, h2d, d2h, batch, grads);
    }
  }
  double e = jt_nerr(dg[0], dg[1], (size_t)g->n_params);
  CHECK(e < 1e-5 && fabs(loss[0] - loss[1]) <= 1e-5 * fabs(loss[1]),
        "phase II, %s: the dense gradient differs from the reference's by %g (losses %.9g, %.9g)", backend, e,
        loss[0], loss[1]);
  /* a whole expansion (two batches): what crosses the bus, against the
   * parameters' size (the ranking and the hyper step read and write the
   * host views) */
  srch_state st;
  if (srch_init(&st, g, FE_SEARCH_ILNAS, 3) == 0) {
    st.lr = 0.05f;
    float *in2 = malloc(2 * (size_t)BATCH * img * sizeof(float));
    ir_label lab2[2 * BATCH];
    memcpy(in2, in, (size_t)BATCH * img * sizeof(float));
    memcpy(in2 + (size_t)BATCH * img, in, (size_t)BATCH * img * sizeof(float));
    memcpy(lab2, lab, sizeof lab), memcpy(lab2 + BATCH, lab, sizeof lab);
    srch_batches pb = {2, BATCH, in2, lab2};
    srch_event ev;
    long long h0, d0, h1, d1;
    emu_traffic(&h0, &d0);
    int rc = srch_expand(&st, x[0], &pb, &ev);
    CHECK(rc == 0 && rt_exec_prepare(x[0], err, sizeof err) == 0, "phase II, %s: expansion %d: %s", backend, rc,
          rc == -2 ? st.err : err);
    emu_traffic(&h1, &d1);
    printf("phase II, %s: an expansion (2 batches, %lld parameters grown) copies %.1f and %.1f times the "
           "parameters' %lld bytes in and out\n", backend, (long long)ev.added,
           (double)(h1 - h0) / (4.0 * g->n_params), (double)(d1 - d0) / (4.0 * g->n_params),
           4LL * g->n_params);
    free(in2);
    srch_free(&st);
  }
  /* the dead layer's, as if it came alive: not nothing */
  double s = 0;
  if (dead >= 0)
    for (int64_t k = g->layers[dead].w_off; k < g->layers[dead].w_off + g->layers[dead].n_w; k++) s += fabs(dg[0][k]);
  CHECK(s > 0, "phase II, %s: no gradient at the dead layer %s", backend, dead >= 0 ? g->layers[dead].name : "");
  free(in), free(dg[0]), free(dg[1]);
  rt_exec_free(x[0]), rt_exec_free(x[1]);
  ir_free(g);
}

/* Without cuBLAS the step trains on its sparse kernels, and phase II,
 * which needs it, stops with a message that says so. */
static void no_cublas(void) {
  char err[512];
  emu_no_cublas(1);
  ir_graph *g = jt_build(src);
  rt_exec *x = g ? rt_exec_new(g, BATCH, 1, "cuda/bounds", err, sizeof err) : NULL;
  CHECK(x, "exec without cuBLAS: %s", err);
  if (x) {
    rt_exec_init_params(x, 5);
    CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "prepare without cuBLAS: %s", err);
    const ir_tensor *t = &g->tensors[g->input_t];
    float *in = jt_randf((size_t)BATCH * t->c * t->h * t->w), *dg = calloc((size_t)g->n_params, sizeof(float));
    ir_label lab[BATCH] = {0};
    double loss;
    rt_exec_set_input(x, in, BATCH);
    rt_exec_forward(x);
    CHECK(isfinite(rt_exec_loss(x, lab, 0, NULL)) && rt_exec_status(x, err, sizeof err) == 0,
          "a pass without cuBLAS: %s", err);
    rt_exec_phase2(x, 1);
    int rc = rt_exec_dense_grad(x, in, lab, BATCH, dg, &loss, err, sizeof err);
    rt_exec_phase2(x, 0);
    CHECK(rc != 0 && strstr(err, "cuBLAS") && strstr(err, "--search fixed"),
          "phase II without cuBLAS: rc %d, '%s'", rc, rc ? err : "");
    printf("phase II without cuBLAS: %s\n", err);
    free(in), free(dg);
    rt_exec_free(x);
  }
  ir_free(g);
  emu_no_cublas(0);
}

int main(void) {
  if (emu_driver_install()) {
    printf("SKIP: this LLVM cannot JIT for the host\n");
    return 77;
  }
  /* Runs are compared bit for bit: each layer on the sparse kernels, not
   * on the faster of its two paths as timed at each prepare, which a
   * loaded machine can time either way (cuda.c: choose_path). */
  setenv("ILNAS_CUDA_PATH", "sparse", 1);
  run a = {0}, b = {0}, k = {0}, m = {0}, lk = {0}, lm = {0}, f = {0}, fk = {0}, fl = {0};
  int np = train(&a, 1, FIXED, "cuda/bounds", 0);
  if (np < 0 || train(&b, 0, FIXED, "cuda/bounds", 0) < 0 || train(&k, 1, KEPT, "cuda/bounds", 0) < 0 ||
      train(&m, 1, MADE, "cuda/bounds", 0) < 0)
    return 1;
  /* the same through the live layout, whose steps change with α: each new
   * step keeps the set again */
  if (train(&lk, 1, KEPT, "cuda", 0) < 0 || train(&lm, 1, MADE, "cuda", 0) < 0) return 1;
  /* the four operations as one (rt_exec_train_step): one graph a step */
  if (train(&f, 1, FIXED, "cuda/bounds", 1) < 0 || train(&fk, 1, KEPT, "cuda/bounds", 1) < 0 ||
      train(&fl, 1, KEPT, "cuda", 1) < 0)
    return 1;
  for (int s = 0; s < STEPS; s++) {
    long long scalars = a.bytes[s] - a.batch, kscalars = k.bytes[s] - k.batch;
    printf("step %d: loss %.6f, %lld bytes over the bus: the batch's %lld and %lld more; %ld launches\n", s,
           a.loss[s], a.bytes[s], a.batch, scalars, a.launches[s]);
    printf("  the set kept: loss %.6f, %lld bytes: the draws' %lld and %lld more; %ld launches\n", k.loss[s],
           k.bytes[s], k.batch, kscalars, k.launches[s]);
    if (s == 1 || s == 2 || s == 4) { /* after the first, and after the prepare's warm-up */
      CHECK(scalars >= 0 && scalars <= 64, "step %d: %lld bytes besides the batch (at most 64)", s, scalars);
      CHECK(a.launches[s] <= 4, "step %d: %ld launches (one graph per phase: 4)", s, a.launches[s]);
      CHECK(kscalars >= 0 && kscalars <= 64, "step %d, the set kept: %lld bytes besides the draws (at most 64)",
            s, kscalars);
      CHECK(k.launches[s] <= 5, "step %d, the set kept: %ld launches (the batch's gather, one graph per phase)",
            s, k.launches[s]);
    }
    CHECK(memcmp(&a.loss[s], &b.loss[s], sizeof a.loss[s]) == 0, "step %d: loss %.9g from graphs, %.9g without", s,
          a.loss[s], b.loss[s]);
    CHECK(memcmp(&k.loss[s], &m.loss[s], sizeof k.loss[s]) == 0,
          "step %d: loss %.9g from the kept set's draws, %.9g from the same images", s, k.loss[s], m.loss[s]);
    printf("  one operation: %lld bytes (the set kept: %lld), %ld launches (the set kept: %ld)\n", f.bytes[s],
           fk.bytes[s], f.launches[s], fk.launches[s]);
    if (s == 1 || s == 2 || s == 4) {
      CHECK(f.launches[s] == 1 && fk.launches[s] == 1, "step %d as one operation: %ld and %ld launches (one graph)",
            s, f.launches[s], fk.launches[s]);
      CHECK(f.bytes[s] == a.bytes[s] && fk.bytes[s] == k.bytes[s],
            "step %d as one operation: %lld and %lld bytes, %lld and %lld as four", s, f.bytes[s], fk.bytes[s],
            a.bytes[s], k.bytes[s]);
    }
    CHECK(memcmp(&f.loss[s], &a.loss[s], sizeof f.loss[s]) == 0 && memcmp(&fk.loss[s], &k.loss[s], sizeof f.loss[s]) == 0 &&
              memcmp(&fl.loss[s], &lk.loss[s], sizeof f.loss[s]) == 0,
          "step %d: loss %.9g, %.9g, %.9g as one operation, %.9g, %.9g, %.9g as four", s, f.loss[s], fk.loss[s],
          fl.loss[s], a.loss[s], k.loss[s], lk.loss[s]);
    CHECK(memcmp(&lk.loss[s], &lm.loss[s], sizeof lk.loss[s]) == 0,
          "step %d, live layout: loss %.9g from the kept set's draws, %.9g from the same images", s, lk.loss[s],
          lm.loss[s]);
  }
  /* a new step of the live layout takes the set on the device from the
   * step before: the α change does not copy it again */
  printf("the α change (a new step of the live layout): %lld bytes with the set kept (its %lld), %lld without\n",
         lk.change, lk.set, lm.change);
  CHECK(lk.change - lm.change == lk.batch - lm.batch,
        "the α change copied %lld bytes with the set kept, %lld without: more than their batches' difference "
        "(%lld), the set (%lld) copied again?", lk.change, lm.change, lk.batch - lm.batch, lk.set);
  CHECK(memcmp(a.params, b.params, (size_t)np * sizeof(float)) == 0, "parameters differ with and without graphs");
  CHECK(memcmp(a.params, f.params, (size_t)np * sizeof(float)) == 0 &&
            memcmp(k.params, fk.params, (size_t)np * sizeof(float)) == 0 &&
            memcmp(lk.params, fl.params, (size_t)np * sizeof(float)) == 0,
        "parameters differ between the step as one operation and as four");
  CHECK(memcmp(k.params, m.params, (size_t)np * sizeof(float)) == 0,
        "parameters differ between the kept set's draws and the same images");
  CHECK(memcmp(lk.params, lm.params, (size_t)np * sizeof(float)) == 0,
        "live layout: parameters differ between the kept set's draws and the same images");
  free(a.params), free(b.params), free(k.params), free(m.params), free(lk.params), free(lm.params);
  free(f.params), free(fk.params), free(fl.params);
  phase2("cuda/bounds");
  phase2("cuda");
  jt_check_deferred(src, "cuda/bounds", 1, 5);
  no_cublas();
  if (failures) fprintf(stderr, "test_gpu_step: %d failures\n", failures);
  else printf("test_gpu_step: ok\n");
  return failures != 0;
}
