/* test_backends_train: one model, one seed, one data set, trained for 12
 * SGD steps with one phase II expansion (method ilnas) before step 6,
 * independently on each backend: ref, cpu, blas and cuda on the host
 * emulation of a GPU (tests/gpu/emu_driver.h). Each backend runs its own
 * search, so the growth it picks comes from its own gradients. Every
 * step's loss must agree with ref's within 1e-5 relative, and the final
 * architecture (α, alive layers) must be ref's, bit for bit. A forward in
 * inference after the steps must give ref's loss within 1e-5 too.
 *
 * The models: weight granularity; kernel granularity with batch norm in
 * a dense conv stage and a dead layer that the growth brings alive; batch
 * norm after the ReLU; and batch norm in plain conv stages, each stage's
 * last output read by a max pool alone (the host pools the normalised
 * values from the pre-activation and never writes them; under ref it
 * composes batch norm, the ReLU and the pool as written), and again with
 * gamma negative in every other channel (the pool then takes the
 * windows' minima of the pre-activation), and on planes of 4x4 at half
 * density, where the cpu backend runs its convs on OpenBLAS (the
 * statistics then taken after each sample's GEMM); and the same
 * without batch norm (where the backend can, the conv's forward writes
 * the pool's output and the windows' codes, never its own).
 *
 * The emulation runs wherever the LLVM JIT does, so a cuda leg that cannot
 * start fails; it does not skip. */
#include "jitutil.h"
#include "runtime/exec.h"
#include "runtime/kernels.h"
#include "search/search.h"
#include "tests/gpu/emu_driver.h"

enum { N_LEGS = 4, STEPS = 12, GROW_AT = 6, BATCH = 16, DATA_BATCHES = 4, P2_BATCHES = 2 };

static const char *const backends[N_LEGS] = {"ref", "cpu", "blas", "cuda"};
static int emulated; /* the GPU emulation started: the cuda leg can run */

typedef struct model_case {
  const char *name;
  const char *src;
  int want_new_layer; /* the expansion must bring a dead layer alive */
  int neg_gamma;      /* batch norm's gamma negated in every other channel */
} model_case;

static const model_case cases[] = {
    {"weight",
     "model w { input 2x10x10; classes 4; search weight budget 3k from density 0.3 seed 5;"
     " stage conv { layers 1..2 channels 4..8 kernel 3x3 dense; }"
     " reduce maxpool 2;"
     " stage conv { layers 1..1 channels 6..8 kernel 5x5; }"
     " reduce conv 2;"
     " stage linear { layers 1..2 width 8..16; } }",
     0, 0},
    {"kernel+bn",
     "model k { input 3x8x8; classes 5; search kernel budget 4k from density 0.5 seed 2;"
     " stage conv { layers 2..3 channels 4..6 kernel 3x3 dense norm batch }"
     " reduce maxpool 2;"
     " stage conv { layers 1..2 channels 6..8 kernel 3x3 }"
     " reduce gap;"
     " stage linear { layers 1..2 width 8..12 } }",
     1, 0},
    {"weight+bn after",
     "model a { input 3x8x8; classes 5; search weight budget 4k from density 0.4 seed 3;"
     " stage conv { layers 2..3 channels 4..6 kernel 3x3 dense norm batch after }"
     " reduce conv 2;"
     " stage linear { layers 1..2 width 8..12 } }",
     1, 0},
    {"weight+bn pooled",
     "model p { input 2x12x12; classes 4; search weight budget 4k from density 0.4 seed 5;"
     " stage conv { layers 1..2 channels 4..6 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage conv { layers 1 channels 6 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage linear { layers 1..2 width 8..12 } }",
     0, 0},
    {"weight+bn pooled, gamma < 0",
     "model n { input 2x12x12; classes 4; search weight budget 4k from density 0.4 seed 5;"
     " stage conv { layers 1..2 channels 4..6 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage conv { layers 1 channels 6 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage linear { layers 1..2 width 8..12 } }",
     0, 1},
    {"weight+bn pooled, small planes",
     "model d { input 2x8x8; classes 4; search weight budget 4k from density 0.5 seed 5;"
     " stage conv { layers 1 channels 4 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage conv { layers 1..2 channels 6..8 kernel 3x3 norm batch }"
     " reduce maxpool 2;"
     " stage linear { layers 1..2 width 8..12 } }",
     0, 0},
    {"weight pooled",
     "model q { input 2x12x12; classes 4; search weight budget 4k from density 0.4 seed 5;"
     " stage conv { layers 1..2 channels 4..6 kernel 3x3 }"
     " reduce maxpool 2;"
     " stage conv { layers 1 channels 6 kernel 3x3 }"
     " reduce maxpool 2;"
     " stage linear { layers 1..2 width 8..12 } }",
     0, 0},
};

/* One backend's run: its own graph, exec, schedule and search. */
typedef struct leg {
  ir_graph *g;
  rt_exec *x;
  ir_call *f, *bw;
  int nf, nb;
  srch_state s;
  int have_s;
  double loss[STEPS];
  double eval_loss; /* after the steps, in inference, on the first batch */
  srch_event ev;
  int grown;       /* srch_expand returned 0 */
  int dead_before; /* dead layers just before the expansion */
  int dead_after;
} leg;

static int dead_layers(const leg *L) {
  int d = 0;
  for (int i = 0; i < L->g->n_layers; i++) d += !L->x->arch->alive[i];
  return d;
}

static void leg_free(leg *L) {
  if (L->have_s) srch_free(&L->s);
  free(L->f), free(L->bw);
  rt_exec_free(L->x);
  ir_free(L->g);
}

/* Trains one leg; 0, or -1 when it could not start (already reported). */
static int train(leg *L, const char *backend, const model_case *mc, const float *in,
                 const ir_label *lab) {
  char err[256];
  L->g = jt_build(mc->src);
  CHECK(L->g, "%s: model does not build", mc->name);
  if (!L->g) return -1;
  L->x = rt_exec_new(L->g, BATCH, 2, backend, err, sizeof err);
  CHECK(L->x, "%s, %s: exec: %s", mc->name, backend, err);
  if (!L->x) return -1;
  if (ir_schedule(L->g, &L->f, &L->nf, &L->bw, &L->nb)) {
    CHECK(0, "%s, %s: schedule", mc->name, backend);
    return -1;
  }
  rt_exec_init_params(L->x, 3);
  if (mc->neg_gamma) { /* a pool after batch norm then takes windows' minima */
    float *w = rt_exec_params_write(L->x);
    for (int i = 0; i < L->g->n_layers; i++)
      for (int c = 1; L->g->layers[i].bn && c < L->g->layers[i].cout; c += 2)
        w[L->g->layers[i].g_off + c] = -w[L->g->layers[i].g_off + c];
  }
  if (srch_init(&L->s, L->g, FE_SEARCH_ILNAS, 1)) {
    CHECK(0, "%s, %s: srch_init", mc->name, backend);
    return -1;
  }
  L->have_s = 1;
  L->s.lr = 0.05f;
  srch_refill(&L->s, L->x); /* placeholders, as a fresh search starts */
  CHECK(rt_exec_prepare(L->x, err, sizeof err) == 0, "%s, %s: %s", mc->name, backend, err);
  const ir_tensor *t = &L->g->tensors[L->g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  for (int it = 0; it < STEPS; it++) {
    if (it == GROW_AT) {
      srch_batches pb = {P2_BATCHES, BATCH, in, lab};
      L->dead_before = dead_layers(L);
      rt_backend_stats before = rt_exec_get_stats(L->x);
      L->grown = srch_expand(&L->s, L->x, &pb, &L->ev) == 0;
      CHECK(rt_exec_prepare(L->x, err, sizeof err) == 0, "%s, %s: %s", mc->name, backend, err);
      /* phase II's dense gradient on the backend that trains: cuBLAS under
       * cuda, never the host's OpenBLAS; the host where the backend has
       * none (every dead layer's, at least) */
      rt_backend_stats after = rt_exec_get_stats(L->x);
      long on_backend = after.dense_backend - before.dense_backend;
      long on_host = after.dense_host - before.dense_host;
      if (strcmp(backend, "cuda") == 0)
        CHECK(on_backend > 0 && on_host == 0,
              "%s, cuda: phase II computed %ld layer gradients on the backend, %ld on the host",
              mc->name, on_backend, on_host);
      else
        CHECK(on_backend == 0 && on_host > 0,
              "%s, %s: phase II computed %ld layer gradients on the backend, %ld on the host",
              mc->name, backend, on_backend, on_host);
      L->dead_after = dead_layers(L);
    }
    const float *bx = in + (size_t)(it % DATA_BATCHES) * BATCH * img;
    const ir_label *by = lab + (it % DATA_BATCHES) * BATCH;
    rt_exec_set_input(L->x, bx, BATCH);
    rt_exec_run(L->x, L->f, L->nf);
    L->loss[it] = rt_exec_loss(L->x, by, 1, NULL);
    rt_exec_run(L->x, L->bw, L->nb);
    rt_exec_sgd(L->x, 0.05f, 0.9f, 5e-4f);
  }
  /* inference: batch norm on its running statistics, and no backward to
   * come (a conv may then write its pool's output, never its own) */
  rt_exec_set_training(L->x, 0);
  rt_exec_set_input(L->x, in, BATCH);
  rt_exec_run(L->x, L->f, L->nf);
  L->eval_loss = rt_exec_loss(L->x, lab, 1, NULL);
  rt_exec_set_training(L->x, 1);
  CHECK(rt_exec_status(L->x, err, sizeof err) == 0, "%s, %s: inference: %s", mc->name, backend,
        err);
  return 0;
}

/* Parameters whose α bit differs, over the n_params bits. */
static int64_t alpha_diff(const ir_arch *a, const ir_arch *b, int64_t np) {
  int64_t d = 0;
  for (int64_t i = 0; i < np; i++) d += ir_alpha_get(a, i) != ir_alpha_get(b, i);
  return d;
}

static void check_model(const model_case *mc) {
  /* the data, the same for every leg */
  ir_graph *g = jt_build(mc->src);
  CHECK(g, "%s: model does not build", mc->name);
  if (!g) return;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  int classes = g->cfg.classes;
  ir_free(g);
  float *in = jt_randf((size_t)DATA_BATCHES * BATCH * img);
  ir_label lab[DATA_BATCHES * BATCH];
  for (int i = 0; i < DATA_BATCHES * BATCH; i++) lab[i] = (ir_label)jt_int(0, classes - 1);

  leg legs[N_LEGS];
  int ok[N_LEGS];
  for (int b = 0; b < N_LEGS; b++) {
    legs[b] = (leg){0};
    ok[b] = (emulated || strcmp(backends[b], "cuda") != 0) &&
            train(&legs[b], backends[b], mc, in, lab) == 0;
  }
  const leg *R = &legs[0];
  if (ok[0]) {
    CHECK(R->grown && R->ev.added > 0, "%s: the expansion grew nothing", mc->name);
    CHECK(!mc->want_new_layer || (R->ev.new_layers > 0 && R->dead_after < R->dead_before),
          "%s: the expansion brought no dead layer alive (%d new, dead %d -> %d)", mc->name,
          R->ev.new_layers, R->dead_before, R->dead_after);
    printf("%s: ref grew %lld parameters (%d new nodes, %d new layers, dead layers %d -> %d)\n",
           mc->name, (long long)R->ev.added, R->ev.new_nodes, R->ev.new_layers, R->dead_before,
           R->dead_after);
  }
  for (int b = 1; ok[0] && b < N_LEGS; b++) {
    if (!ok[b]) continue;
    const leg *L = &legs[b];
    double worst = 0;
    int worst_at = 0;
    for (int it = 0; it < STEPS; it++) {
      double rel = fabs(L->loss[it] - R->loss[it]) / fabs(R->loss[it]);
      if (!(rel <= worst)) worst = rel, worst_at = it; /* NaN counts as worst */
      CHECK(rel <= 1e-5, "%s, %s: step %d: loss %.8f, ref %.8f (rel %.2e)", mc->name,
            backends[b], it, L->loss[it], R->loss[it], rel);
    }
    double erel = fabs(L->eval_loss - R->eval_loss) / fabs(R->eval_loss);
    CHECK(erel <= 1e-5, "%s, %s: inference: loss %.8f, ref %.8f (rel %.2e)", mc->name,
          backends[b], L->eval_loss, R->eval_loss, erel);
    CHECK(L->grown == R->grown && L->ev.added == R->ev.added,
          "%s, %s: grew %lld parameters, ref %lld", mc->name, backends[b],
          (long long)L->ev.added, (long long)R->ev.added);
    int64_t da = alpha_diff(L->x->arch, R->x->arch, R->g->n_params);
    int dl = 0;
    for (int i = 0; i < R->g->n_layers; i++) dl += L->x->arch->alive[i] != R->x->arch->alive[i];
    CHECK(da == 0 && dl == 0, "%s, %s: final α differs from ref's in %lld of %lld bits, "
          "alive flags in %d of %d layers", mc->name, backends[b], (long long)da,
          (long long)R->g->n_params, dl, R->g->n_layers);
    printf("%s, %-4s: largest relative loss difference %.2e (step %d); final α %s\n", mc->name,
           backends[b], worst, worst_at, da == 0 && dl == 0 ? "identical" : "DIFFERS");
  }
  for (int b = 0; b < N_LEGS; b++) leg_free(&legs[b]);
  free(in);
}

/* A device that fails mid-step: the step reports it through
 * rt_exec_status, with the driver's reason, and nothing aborts; once the
 * device works again, so do the steps. */
static void check_device_failure(void) {
  char err[256];
  ir_graph *g = jt_build(cases[0].src);
  rt_exec *x = g ? rt_exec_new(g, BATCH, 2, "cuda", err, sizeof err) : NULL;
  CHECK(x, "device failure: exec: %s", g ? err : "model does not build");
  if (!x) {
    ir_free(g);
    return;
  }
  rt_exec_init_params(x, 3);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *in = calloc((size_t)BATCH * img, sizeof *in);
  ir_label lab[BATCH] = {0};
  for (size_t i = 0; in && i < (size_t)BATCH * img; i++) in[i] = (float)(i % 7) * 0.1f;
  for (int round = 0; in && round < 3; round++) {
    emu_fail_launches(round == 1 ? 2 : -1); /* round 1: the third launch fails */
    rt_exec_set_input(x, in, BATCH);
    rt_exec_forward(x);
    double loss = rt_exec_loss(x, lab, 1, NULL);
    rt_exec_backward(x);
    rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f); /* on the device too: part of the step */
    err[0] = 0;
    int rc = rt_exec_status(x, err, sizeof err);
    if (round == 1)
      CHECK(rc == -1 && strstr(err, "cuda backend") && strstr(err, "CUresult 719"),
            "device failure: status %d, message '%s'", rc, err);
    else
      CHECK(rc == 0 && isfinite(loss), "device failure, round %d: status %d (%s), loss %g", round,
            rc, err, loss);
  }
  emu_fail_launches(-1);
  free(in);
  rt_exec_free(x);
  ir_free(g);
}

int main(void) {
  char err[256];
  /* cuda is the host emulation: it must start wherever this test runs */
  emulated = emu_driver_install() == 0;
  CHECK(emulated, "cuda: the GPU emulation cannot start (this LLVM cannot JIT for the host)");
  if (emulated && rt_cuda_probe(err, sizeof err)) {
    CHECK(0, "cuda: the emulated device is not found: %s", err);
    emulated = 0;
  }
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_model(&cases[i]);
  if (emulated) check_device_failure();
  if (failures) fprintf(stderr, "test_backends_train: %d failures\n", failures);
  else printf("test_backends_train: ok\n");
  return failures != 0;
}
