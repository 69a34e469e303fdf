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
 *   phase II's gradients on the device (p2_*): at the bounds (weight and
 *            kernel granularity) and in the step the live layout makes
 *            for phase II, each native operation gives the bits that
 *            p2.c's host implementation (rt_p2_*) gives over the same
 *            step: the slots (g over two batches, and g* at W*), the
 *            top units and their order (k of 1, 7, and more than there
 *            are; from a slot written through p2_slot, and one of ties;
 *            at the bounds, after the executor turns a unit on without a
 *            prepare), the scores of every missing unit, W* and W after
 *            the restore; at the bounds g is also the host step's
 *            (cpu/bounds, its own kernels) within 1e-5. No
 *            n_params floats come back: the gradients copy the batches
 *            in and the losses out, the ranking the masks (bytes) in and
 *            its counts and picks out, the scores the units in and a
 *            float each out.
 *
 * The model has batch norm (both orders), a max pool, a dead layer, GAP
 * and a linear stage, so that every generated op of the step runs. */
#include "tests/jit/jitexec.h"
#include "tests/jit/deferred.h"

#include "kgen/devops.h"
#include "runtime/cuda/step.h"
#include "runtime/exec.h"
#include "runtime/p2.h"
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

/* ... at kernel granularity: phase II's units are whole kernels */
static const char *const src_kernel =
    "model s { input 2x8x8; classes 5; search kernel budget 4k from density 0.4 seed 4;"
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
  /* the device step itself: its traffic and graphs, at the bounds */
  ir_graph *g;
  rt_exec *x = jt_exec(src, BATCH, 1, backend, &g);
  if (!x) return -1;
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
        if (g->layers[li].w_off < 0 || x->arch->alive[li]) continue;
        jt_wake(x, li);
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
   * parameters' size; at the bounds no whole array of them comes back
   * (the gradients, the ranking, the hyper step and the units' edits stay
   * on the device); the live layout moves the state to and from the
   * step it makes for phase II through the host */
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
    emu_watch_d2h(4LL * g->n_params);
    int rc = srch_expand(&st, x[0], &pb, &ev);
    long whole = emu_watched();
    CHECK(rc == 0 && rt_exec_prepare(x[0], err, sizeof err) == 0, "phase II, %s: expansion %d: %s", backend, rc,
          rc == -2 ? st.err : err);
    emu_traffic(&h1, &d1);
    emu_watch_d2h(-1);
    printf("phase II, %s: an expansion (2 batches, %lld parameters grown, %d new layers) copies %.1f and %.1f times "
           "the parameters' %lld bytes in and out, %ld whole arrays of them out\n", backend, (long long)ev.added,
           ev.new_layers, (double)(h1 - h0) / (4.0 * g->n_params), (double)(d1 - d0) / (4.0 * g->n_params),
           4LL * g->n_params, whole);
    if (strcmp(backend, "cuda/bounds") == 0)
      CHECK(whole == 0 && ev.new_layers > 0, "phase II, %s: an expansion (%d new layers) copied %ld whole arrays of "
            "parameters out", backend, ev.new_layers, whole);
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

static float *copy_of(const float *v, int64_t n) {
  float *c = v ? malloc((size_t)n * sizeof *c) : NULL;
  if (c) memcpy(c, v, (size_t)n * sizeof *c);
  return c;
}

static int same_units(const rt_unit *a, const rt_unit *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (a[i].start != b[i].start || a[i].len != b[i].len || a[i].layer != b[i].layer ||
        memcmp(&a[i].score, &b[i].score, sizeof a[i].score) != 0)
      return 0;
  return 1;
}

/* The k best of g by the device step b and by p2.c over it (into u[0],
 * u[1]); how many, -1 when they differ. */
static int64_t top_both(rt_backend *b, rt_p2 *ref, int64_t k, rt_unit *u[2], const char *what) {
  int64_t got[2] = {-1, -2};
  int rc = b->i->p2_top(b, k, u[0], &got[0]);
  CHECK(rc == 0, "%s: p2_top(%lld): %s", what, (long long)k, b->error);
  CHECK(rt_p2_top(ref, b, k, u[1], &got[1]) == 0, "%s: rt_p2_top: %s", what, b->error);
  int same = !rc && got[0] == got[1] && same_units(u[0], u[1], got[0]);
  CHECK(same, "%s: the top %lld: %lld units on the device, %lld by p2.c (or other ones)", what, (long long)k,
        (long long)got[0], (long long)got[1]);
  return same ? got[0] : -1;
}

/* Phase II's operations native on the device step (backend.h: p2_*)
 * against p2.c's over the same step, which brings back its dense
 * gradients: the same bits; their traffic. Through the live layout
 * ("cuda"), the step it makes for phase II, on its compact graph. */
static void phase2_ops(const char *backend, const char *model) {
  char err[256], what[64];
  ir_graph *g = jt_build(model);
  CHECK(g, "model does not build");
  rt_exec *x = g ? rt_exec_new(g, BATCH, 1, backend, err, sizeof err) : NULL;
  CHECK(x, "%s exec: %s", backend, err);
  if (!x) {
    ir_free(g);
    return;
  }
  int live = strcmp(backend, "cuda") == 0, kernel = g->cfg.gran == FE_GRAN_KERNEL;
  snprintf(what, sizeof what, "phase II's ops, %s%s", backend, kernel ? ", kernel granularity" : "");
  rt_exec_init_params(x, 5);
  CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s: prepare: %s", what, err);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  jt_state = 1234567;
  float *in = jt_randf(2 * BATCH * img), *dg = calloc((size_t)g->n_params, sizeof(float));
  ir_label lab[2 * BATCH];
  for (int i = 0; i < 2 * BATCH; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  double loss[2];
  rt_exec_phase2(x, 1);
  /* the first pass makes the live layout's step for phase II */
  CHECK(rt_exec_dense_grad(x, in, lab, BATCH, dg, &loss[0], err, sizeof err) == 0, "%s: dense grad: %s", what, err);
  rt_backend *b = live ? rt_packed_step(x->backend) : x->backend;
  const ir_graph *sg = b->g;
  int64_t np = sg->n_params;
  int dead = -1;
  for (int li = 0; li < sg->n_layers; li++)
    if (sg->layers[li].w_off >= 0 && sg->layers[li].n_w > 0 && !b->arch->alive[li]) dead = li;
  CHECK(dead >= 0, "%s: the step has no dead layer", what);
  rt_p2 ref = {0};
  long long h0, d0, h1, d1;

  /* g over two batches */
  emu_traffic(&h0, &d0);
  CHECK(b->i->p2_grad(b, 0, in, lab, 2, BATCH, &loss[0]) == 0, "%s: p2_grad: %s", what, b->error);
  emu_traffic(&h1, &d1);
  long long gin = h1 - h0, gout = d1 - d0;
  long long batches = 2 * ((long long)(BATCH * img * sizeof(float)) + BATCH * (long long)sizeof(ir_label));
  CHECK(rt_p2_grad(&ref, b, 0, in, lab, 2, BATCH, &loss[1]) == 0, "%s: rt_p2_grad: %s", what, b->error);
  const float *s0 = b->i->p2_slot(b, 0, 0);
  CHECK(s0 && memcmp(s0, ref.slot[0], (size_t)np * sizeof(float)) == 0 &&
            memcmp(&loss[0], &loss[1], sizeof loss[0]) == 0,
        "%s: g differs from p2.c's (losses %.9g, %.9g)", what, loss[0], loss[1]);
  double at_dead = 0;
  for (int64_t k = sg->layers[dead].w_off; s0 && k < sg->layers[dead].w_off + sg->layers[dead].n_w; k++)
    at_dead += fabs(s0[k]);
  CHECK(at_dead > 0, "%s: g is 0 at the dead layer %s", what, sg->layers[dead].name);
  if (!live) { /* the host step's g, from its own kernels */
    rt_exec *xh = rt_exec_new(g, BATCH, 1, "cpu/bounds", err, sizeof err);
    CHECK(xh, "cpu/bounds exec: %s", err);
    if (xh) {
      rt_exec_init_params(xh, 5);
      rt_exec_phase2(xh, 1);
      CHECK(rt_exec_prepare(xh, err, sizeof err) == 0 &&
                rt_exec_p2_grad(xh, 0, in, lab, 2, BATCH, &loss[1], err, sizeof err) == 0,
            "%s: the host step's g: %s", what, err);
      double e = s0 ? jt_nerr(s0, rt_exec_p2_slot(xh, 0), (size_t)np) : INFINITY;
      CHECK(e < 1e-5 && fabs(loss[0] - loss[1]) <= 1e-5 * fabs(loss[1]),
            "%s: g differs from the host step's by %g (losses %.9g, %.9g)", what, e, loss[0], loss[1]);
      rt_exec_free(xh);
    }
  }

  /* the ranking: k of 1, 7 (its traffic), every missing unit and more */
  rt_unit *all;
  int64_t nmiss = rt_units_missing(sg, b->arch, &all);
  rt_unit *u[2] = {malloc((size_t)(nmiss + 8) * sizeof(rt_unit)), malloc((size_t)(nmiss + 8) * sizeof(rt_unit))};
  CHECK(nmiss > 7, "%s: %lld missing units", what, (long long)nmiss);
  CHECK(top_both(b, &ref, 1, u, what) == 1, "%s: no best unit", what);
  emu_traffic(&h0, &d0);
  int64_t k7 = top_both(b, &ref, 7, u, what);
  emu_traffic(&h1, &d1);
  long long tin = h1 - h0, tout = d1 - d0;
  int64_t ties = 0; /* the units that score as the 7th: its picks */
  for (int64_t i = 0; i < nmiss; i++) ties += k7 == 7 && rt_unit_norm(&all[i], ref.slot[0], NULL) >= u[1][6].score;
  CHECK(k7 == 7, "%s: %lld of the top 7", what, (long long)k7);
  int64_t nz = top_both(b, &ref, nmiss + 5, u, what);
  CHECK(nz > 7 && nz <= nmiss, "%s: %lld units of norm other than 0 of %lld", what, (long long)nz, (long long)nmiss);
  if (!live) { /* the executor turns the best on, without a prepare: no longer missing */
    top_both(b, &ref, 1, u, what);
    rt_unit best = u[0][0];
    rt_exec_set_unit(x, best.start, best.len, 1, NULL);
    int64_t n = top_both(b, &ref, 7, u, what);
    for (int64_t i = 0; i < n; i++)
      CHECK(u[0][i].start != best.start, "%s: the unit at %lld is on, and ranked", what, (long long)best.start);
    rt_exec_set_unit(x, best.start, best.len, 0, NULL);
  }

  /* W*, g* there, W back: against p2.c's */
  float *w = copy_of(b->i->view(b, RT_PARAMS), np);
  CHECK(b->i->p2_hyper(b, 0.05f) == 0, "%s: p2_hyper: %s", what, b->error);
  float *ws = copy_of(b->i->view(b, RT_PARAMS), np);
  int64_t moved = 0;
  for (int64_t i = 0; w && ws && i < np; i++) moved += ws[i] != w[i];
  CHECK(moved > 0, "%s: the hyper step moved no parameter", what);
  CHECK(b->i->p2_grad(b, 1, in, lab, 2, BATCH, &loss[0]) == 0 && b->i->p2_restore(b) == 0, "%s: g*: %s", what,
        b->error);
  CHECK(memcmp(b->i->view(b, RT_PARAMS), w, (size_t)np * sizeof(float)) == 0, "%s: W differs after p2_restore", what);
  CHECK(rt_p2_hyper(&ref, b, 0.05f) == 0, "%s: rt_p2_hyper: %s", what, b->error);
  CHECK(memcmp(b->i->view(b, RT_PARAMS), ws, (size_t)np * sizeof(float)) == 0, "%s: W* differs from p2.c's", what);
  CHECK(rt_p2_grad(&ref, b, 1, in, lab, 2, BATCH, &loss[1]) == 0 && rt_p2_restore(&ref, b) == 0, "%s: p2.c's g*: %s",
        what, b->error);
  CHECK(memcmp(b->i->view(b, RT_PARAMS), w, (size_t)np * sizeof(float)) == 0, "%s: W differs after rt_p2_restore",
        what);
  const float *s1 = b->i->p2_slot(b, 1, 0);
  CHECK(s1 && memcmp(s1, ref.slot[1], (size_t)np * sizeof(float)) == 0 &&
            memcmp(&loss[0], &loss[1], sizeof loss[0]) == 0,
        "%s: g* differs from p2.c's", what);

  /* every missing unit's score, by g + g* */
  memcpy(u[0], all, (size_t)nmiss * sizeof *all), memcpy(u[1], all, (size_t)nmiss * sizeof *all);
  emu_traffic(&h0, &d0);
  CHECK(b->i->p2_score(b, u[0], nmiss) == 0, "%s: p2_score: %s", what, b->error);
  emu_traffic(&h1, &d1);
  long long sc_in = h1 - h0, sc_out = d1 - d0;
  CHECK(rt_p2_score(&ref, b, u[1], nmiss) == 0, "%s: rt_p2_score", what);
  int64_t scored = 0;
  for (int64_t i = 0; i < nmiss; i++) scored += u[0][i].score != 0.0f;
  CHECK(scored > 0 && same_units(u[0], u[1], nmiss), "%s: the scores differ from p2.c's (%lld of %lld other than 0)",
        what, (long long)scored, (long long)nmiss);

  /* a slot written through p2_slot: g* as g, ranked */
  float *sw = b->i->p2_slot(b, 0, 1);
  if (sw) memcpy(sw, ref.slot[1], (size_t)np * sizeof(float));
  int64_t got = -1;
  CHECK(b->i->p2_top(b, 7, u[0], &got) == 0, "%s: p2_top: %s", what, b->error);
  CHECK(got == rt_units_top(sg, b->arch, ref.slot[1], 7, u[1]) && got == 7 && same_units(u[0], u[1], got),
        "%s: the top 7 of a slot written differ from rt_units_top's", what);
  const float *back = b->i->p2_slot(b, 0, 0);
  CHECK(back && memcmp(back, ref.slot[1], (size_t)np * sizeof(float)) == 0,
        "%s: a slot written reads back other values", what);
  /* ... and one of ties: every unit of a size scores the same */
  float *ones = b->i->p2_slot(b, 0, 1);
  for (int64_t i = 0; ones && i < np; i++) ones[i] = 1.0f;
  CHECK(b->i->p2_top(b, 7, u[0], &got) == 0, "%s: p2_top: %s", what, b->error);
  int64_t want = ones ? rt_units_top(sg, b->arch, ones, 7, u[1]) : -1;
  CHECK(got == 7 && want == 7 && same_units(u[0], u[1], got), "%s: the top 7 of ties differ from rt_units_top's",
        what);

  printf("%s: %lld parameters; g over 2 batches copies %lld bytes in (the batches' %lld) and %lld out; the top 7 "
         "(%lld picks), %lld in (the masks) and %lld out; %lld scores, %lld in and %lld out\n",
         what, (long long)np, gin, batches, gout, (long long)ties, tin, tout, (long long)nmiss, sc_in, sc_out);
  CHECK(gin <= batches + 64 && gout <= 2 * 16, "%s: g: %lld bytes in, %lld out (the batches' %lld in and the "
        "losses' 32 out at most)", what, gin, gout, batches);
  CHECK(tin == np && tout <= 33 * 8 + ties * (long long)sizeof(kd_hit),
        "%s: the top 7: %lld bytes in (the masks' %lld), %lld out (%lld at most: counts, %lld picks)", what, tin,
        (long long)np, tout, 33 * 8 + ties * (long long)sizeof(kd_hit), (long long)ties);
  CHECK(sc_in == nmiss * 16 && sc_out == nmiss * (long long)sizeof(float), "%s: %lld scores: %lld bytes in, %lld out",
        what, (long long)nmiss, sc_in, sc_out);
  free(all), free(u[0]), free(u[1]), free(w), free(ws), free(in), free(dg);
  rt_p2_free(&ref);
  rt_exec_phase2(x, 0);
  rt_exec_free(x);
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
  phase2_ops("cuda/bounds", src);
  phase2_ops("cuda/bounds", src_kernel);
  phase2_ops("cuda", src);
  jt_check_deferred(src, "cuda/bounds", 1, 5);
  no_cublas();
  if (failures) fprintf(stderr, "test_gpu_step: %d failures\n", failures);
  else printf("test_gpu_step: ok\n");
  return failures != 0;
}
