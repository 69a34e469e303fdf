/* test_random_models: models drawn at random from the language (planes
 * square or not, odd or even, up to 34; conv stages chained or dense,
 * with batch norm before or after the ReLU or none, kernels of 1, 3 or 5,
 * seeds below their bounds so that layers start dead and channels half
 * live; max pools of 2 and 3, strided convs and global average pools
 * between them; linear stages or none; weight or kernel granularity),
 * each trained 10 steps on ref, cpu, cpu/bounds, blas and the emulated
 * cuda, with batches of varying size and one phase II expansion:
 *
 *   - every other step starts from ref's state (its architecture and
 *     every value); its loss must be ref's within 1e-5 (relative);
 *   - the steps between start from each backend's own state after one
 *     step, so that what a backend carries over (packed weights, caches)
 *     is checked too; their losses within 1e-3, the active parameters at
 *     the end within 1e-3 (normalised error);
 *   - at the growth (step 6), from ref's state, phase II's dense
 *     gradient (at every parameter, the missing ones included) within
 *     1e-4 of ref's (but for the biases of a batch-norm-after layer
 *     whose input is zero, whose gradient is rounding noise:
 *     drop_constant_biases); ref's search then grows the network, and every
 *     other backend takes the grown architecture and values and prepares
 *     (the rebuild). Each backend's own search is held to ref's on
 *     curated models by test_backends_train: on drawn ones, near-ties
 *     among candidates, which rounding breaks either way, would part the
 *     runs.
 *
 * The tolerances say what rounding does. One step from the same state
 * agrees within about 1e-7; a step from a backend's own state may amplify
 * the step before's rounding, where batch norm normalises a channel that
 * the ReLU left nearly constant (its variance under eps): drawn models
 * showed up to 2e-4 there, every step from ref's state then agreeing
 * (ILNAS_RANDOM_SYNC=1 starts every step from it).
 *
 * The curated cases (test_backends_train) check the paths someone
 * thought of; these check the combinations no one wrote down: the host
 * step's fusions (a pool fed by its conv, batch norm folded into the
 * packing of the conv or linear layer that reads it, a pool's output
 * left to its reader) each hold under conditions on shapes and
 * neighbours that a drawn model meets or misses at random.
 *
 *   test_random_models --print [COUNT [SEED]]   drawn models' sources, one a
 *     line, that the language accepts (tests/e2e/random.sh trains them as a
 *     user would); a run of checks of the same seed draws others, as its
 *     data comes from the same stream
 *   test_random_models [COUNT [SEED]]   (default 16 models, seed 1; also
 *   ILNAS_RANDOM_MODELS and ILNAS_RANDOM_SEED; ILNAS_RANDOM_MODEL="model
 *   ... { ... }" checks that one model, as a failure prints it) */
#include <stdarg.h>

#include "jitutil.h"
#include "runtime/exec.h"
#include "runtime/kernels.h"
#include "search/search.h"
#include "tests/gpu/emu_driver.h"

enum { N_LEGS = 5, STEPS = 10, GROW_AT = 6, CAP = 12, DATA_BATCHES = 3, P2_BATCHES = 2 };

/* The tolerances (above): a loss from ref's state, phase II's dense
 * gradient, a loss from the backend's own state, the parameters at the end. */
#define SYNC_TOL 1e-5
#define GRAD_TOL 1e-4
#define OWN_TOL 1e-3
#define PARAM_TOL 1e-3
/* The learning rate of the steps and of phase II's trial step. */
#ifndef LR
#define LR 0.01f
#endif

static const char *const backends[N_LEGS] = {"ref", "cpu", "cpu/bounds", "blas", "cuda"};
static int emulated;   /* the GPU emulation started: the cuda leg can run */
static int sync_steps; /* every step from ref's state (ILNAS_RANDOM_SYNC=1) */

/* ---- drawing a model -------------------------------------------------- */

typedef struct buf {
  char s[2048];
  size_t n;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(b->s + b->n, sizeof b->s - b->n, fmt, ap);
  va_end(ap);
  if (k > 0) b->n += (size_t)k < sizeof b->s - b->n ? (size_t)k : sizeof b->s - b->n - 1;
}

static int pick(int n) { return jt_int(0, n - 1); }

/* A range lo..hi (or hi alone when they are equal, at times), a <= lo <= hi
 * <= hi_max. */
static void range(buf *b, const char *what, int a, int hi_max) {
  int hi = jt_int(a, hi_max), lo = jt_int(a, hi);
  if (lo == hi && pick(2)) put(b, " %s %d", what, hi);
  else put(b, " %s %d..%d", what, lo, hi);
}

/* One model; h and w follow the planes so that every reduction leaves at
 * least one position and no kernel is wider than its plane. */
static void draw_model(buf *b, int id) {
  static const char *const norms[] = {"", " norm batch", " norm batch after", " norm none"};
  /* mostly small planes; one model in six at the sizes of the data sets
   * (28, 32), where the rows take the vector paths whole */
  int big = pick(6) == 0;
  int c = jt_int(1, 3), h = big ? jt_int(24, 34) : jt_int(3, 20);
  int w = pick(3) ? h : big ? jt_int(24, 34) : jt_int(3, 20);
  int kernel = pick(3) == 0;
  b->n = 0;
  put(b, "model r%d { input %dx%dx%d; classes %d; search %s", id, c, h, w, jt_int(2, 6),
      kernel ? "kernel" : "weight");
  if (pick(2)) put(b, " budget %dk", jt_int(2, 6));
  put(b, " from density %.2f seed %d;", 0.2 + 0.6 * jt_unif(), jt_int(1, 99));
  int stages = jt_int(1, 3);
  for (int s = 0; s < stages; s++) {
    put(b, " stage conv {");
    range(b, "layers", 1, 3);
    range(b, "channels", 2, 9);
    int ks[] = {1, 3, 3, 3, 5};
    int k = ks[pick(5)];
    if (k > h || k > w) k = 1;
    put(b, " kernel %dx%d%s%s }", k, k, pick(3) == 0 ? " dense" : "", norms[pick(4)]);
    int last = s == stages - 1;
    int r = pick(last ? 5 : 4); /* 0-1 maxpool, 2 conv, 3 none, 4 gap */
    if (r <= 1) {
      int f = r == 0 || h < 3 || w < 3 ? 2 : 3;
      if (h >= f && w >= f) put(b, " reduce maxpool %d;", f), h /= f, w /= f;
    } else if (r == 2 && h >= 2 && w >= 2) {
      put(b, " reduce conv 2;"), h = (h + 1) / 2, w = (w + 1) / 2;
    } else if (r == 4) {
      put(b, " reduce gap;"), h = w = 1;
    }
  }
  if (pick(3)) {
    put(b, " stage linear {");
    range(b, "layers", 1, 2);
    range(b, "width", 4, 16);
    put(b, " }");
  }
  put(b, " }");
}

/* ---- training the legs in step ------------------------------------------ */

typedef struct leg {
  const char *backend;
  ir_graph *g;
  rt_exec *x;
  ir_call *f, *bw;
  int nf, nb;
  int ok;         /* started, and nothing failed that voids the rest */
  double loss[STEPS];
} leg;

static void leg_free(leg *L) {
  free(L->f), free(L->bw);
  rt_exec_free(L->x);
  ir_free(L->g);
}

static int leg_start(leg *L, const char *name, const char *src) {
  char err[256];
  L->g = jt_build(src);
  if (!L->g) return -1;
  L->x = rt_exec_new(L->g, CAP, 2, L->backend, err, sizeof err);
  CHECK(L->x, "%s, %s: exec: %s", name, L->backend, err);
  if (!L->x) return -1;
  if (ir_schedule(L->g, &L->f, &L->nf, &L->bw, &L->nb)) {
    CHECK(0, "%s, %s: schedule", name, L->backend);
    return -1;
  }
  rt_exec_init_params(L->x, 3);
  return 0;
}

static void leg_step(leg *L, const char *name, int it, const float *in, const ir_label *lab,
                     int n) {
  char err[256];
  rt_exec_set_input(L->x, in, n);
  rt_exec_run(L->x, L->f, L->nf);
  L->loss[it] = rt_exec_loss(L->x, lab, 1, NULL);
  rt_exec_run(L->x, L->bw, L->nb);
  rt_exec_sgd(L->x, LR, 0.9f, 5e-4f);
  L->ok = rt_exec_status(L->x, err, sizeof err) == 0;
  CHECK(L->ok, "%s, %s: step %d: %s", name, L->backend, it, err);
}

/* L takes R's architecture and every value of its state. */
static void leg_follow(leg *L, const leg *R, const char *name) {
  char err[256];
  L->ok = rt_exec_set_arch(L->x, R->x->arch, err, sizeof err) == 0;
  CHECK(L->ok, "%s, %s: set_arch: %s", name, L->backend, err);
  static const rt_state st[3] = {RT_PARAMS, RT_MOMENTUM, RT_STATS};
  int64_t n[3] = {R->g->n_params, R->g->n_params, R->g->n_stats};
  for (int k = 0; L->ok && k < 3; k++)
    if (n[k]) memcpy(rt_exec_edit(L->x, st[k]), rt_exec_view(R->x, st[k]), (size_t)n[k] * 4);
  L->ok = L->ok && rt_exec_prepare(L->x, err, sizeof err) == 0;
  CHECK(L->ok, "%s, %s: prepare on ref's state: %s", name, L->backend, err);
}

/* The layer whose parameters (weights, bias, batch norm's affine ones)
 * differ most between p and ref's r, by normalised error, into *worst.
 * Parameter i is at p[at[i]] (none where at[i] < 0), or at p[i] when at is
 * NULL (a dense gradient). */
static const char *worst_of(const ir_graph *g, const int64_t *at, const float *p, const float *r,
                            double *worst) {
  const char *name = "?";
  *worst = 0;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    int64_t span[3][2] = {
        {l->w_off, l->n_w}, {l->b_off, l->cout}, {l->g_off, 2 * (int64_t)l->cout}};
    double d = 0, n = 0;
    for (int s = 0; s < 3; s++)
      for (int64_t i = span[s][0]; span[s][0] >= 0 && i < span[s][0] + span[s][1]; i++) {
        int64_t k = at ? at[i] : i;
        if (k < 0) continue;
        double e = (double)p[k] - r[k];
        d += e * e, n += (double)r[k] * r[k];
      }
    double e = n > 0 ? sqrt(d / n) : d > 0 ? INFINITY : 0;
    if (e > *worst) *worst = e, name = l->name;
  }
  return name;
}

/* worst_of over the active values (rt_exec_active_values' order) of
 * architecture a. */
static const char *worst_active(const ir_graph *g, const ir_arch *a, const float *p,
                                const float *r, double *worst) {
  *worst = 0;
  int64_t k = 0;
  int64_t *at = malloc((size_t)(g->n_params ? g->n_params : 1) * sizeof *at);
  if (!at) return "?";
  for (int64_t i = 0; i < g->n_params; i++) at[i] = ir_alpha_get(a, i) ? k++ : -1;
  const char *name = worst_of(g, at, p, r, worst);
  free(at);
  return name;
}

/* A layer with batch norm after its ReLU whose input is zero (a dead
 * layer upstream: ref's dense gradient of its weights is exactly zero) has
 * channels that hold their bias alone, constant over the batch. Batch norm
 * is blind to a constant's shift, so the bias's gradient is zero in exact
 * arithmetic; in floats it is rounding noise times 1/sqrt(eps) (3e-4 of a
 * gradient of norm 0.2 seen), different on each backend. Those biases'
 * gradients are zeroed in every leg's dg before the comparison. */
static void drop_constant_biases(const ir_graph *g, float *const dg[N_LEGS]) {
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->bn != IR_BN_AFTER || l->b_off < 0 || l->w_off < 0) continue;
    int64_t i = l->w_off;
    while (i < l->w_off + l->n_w && dg[0][i] == 0.0f) i++;
    if (i < l->w_off + l->n_w) continue;
    for (int b = 0; b < N_LEGS; b++)
      if (dg[b]) memset(dg[b] + l->b_off, 0, (size_t)l->cout * sizeof *dg[b]);
  }
}

/* 1 when the model was built and checked, 0 when the language refused it
 * (a budget below the seed's, say): a drawn model may ask what the language
 * does not allow, but ilnasc's own errors count as failures. */
static int check_model(const char *name, const char *src) {
  char err[256];
  char *diag = NULL;
  size_t dlen = 0;
  FILE *df = open_memstream(&diag, &dlen);
  fe_model m;
  ir_graph *g = NULL;
  if (df && !fe_parse_string("t.ilnas", src, &m, df)) {
    g = ir_build(&m, df);
    fe_model_free(&m);
  }
  if (df) fclose(df);
  CHECK(df && (g || !strstr(diag, "internal error")), "%s: %s  the model: %s", name,
        df ? diag : "out of memory", src);
  free(diag);
  if (!g) return 0;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  int classes = g->cfg.classes;
  int64_t np = g->n_params;
  ir_free(g);
  float *in = jt_randf((size_t)DATA_BATCHES * CAP * img);
  ir_label lab[DATA_BATCHES * CAP];
  for (int i = 0; i < DATA_BATCHES * CAP; i++) lab[i] = (ir_label)jt_int(0, classes - 1);
  int sizes[STEPS]; /* a full batch, then any size from 2: an epoch's last is short */
  for (int it = 0; it < STEPS; it++) sizes[it] = it == 0 ? CAP : jt_int(2, CAP);

  leg legs[N_LEGS];
  for (int b = 0; b < N_LEGS; b++) {
    legs[b] = (leg){.backend = backends[b]};
    legs[b].ok = (emulated || strcmp(backends[b], "cuda") != 0) &&
                 leg_start(&legs[b], name, src) == 0;
  }
  leg *R = &legs[0];
  srch_state s;
  srch_event ev = {0};
  int have_s = R->ok && srch_init(&s, R->g, FE_SEARCH_ILNAS, 1) == 0;
  CHECK(!R->ok || have_s, "%s: srch_init", name);
  if (have_s) {
    s.lr = LR;
    srch_refill(&s, R->x); /* placeholders, as a fresh search starts */
    CHECK(rt_exec_prepare(R->x, err, sizeof err) == 0, "%s, ref: %s", name, err);
    for (int b = 1; b < N_LEGS; b++)
      if (legs[b].ok) leg_follow(&legs[b], R, name);
  }
  float *dg[N_LEGS] = {0};
  for (int it = 0; have_s && it < STEPS; it++) {
    if (it == GROW_AT) {
      /* from ref's state: the runs' rounding, which the SGD steps may
       * amplify (a chaotic model), left behind */
      for (int b = 1; b < N_LEGS; b++)
        if (legs[b].ok) leg_follow(&legs[b], R, name);
      for (int b = 0; b < N_LEGS; b++) {
        if (!legs[b].ok) continue;
        double loss;
        dg[b] = calloc((size_t)(np ? np : 1), sizeof *dg[b]);
        legs[b].ok = dg[b] && rt_exec_dense_grad(legs[b].x, in, lab, CAP, dg[b], &loss, err,
                                                 sizeof err) == 0;
        CHECK(legs[b].ok, "%s, %s: dense gradient: %s", name, backends[b], err);
      }
      if (R->ok) drop_constant_biases(R->g, dg);
      for (int b = 1; b < N_LEGS; b++)
        if (legs[b].ok && R->ok) {
          double e = jt_nerr(dg[b], dg[0], (size_t)np), we = 0;
          const char *wl = e <= GRAD_TOL ? "" : worst_of(R->g, NULL, dg[b], dg[0], &we);
          CHECK(e <= GRAD_TOL, "%s, %s: phase II's dense gradient differs from ref's by %.2e "
                "(most in %s: %.2e)", name, backends[b], e, wl, we);
        }
      srch_batches pb = {P2_BATCHES, CAP, in, lab};
      int rc = srch_expand(&s, R->x, &pb, &ev); /* -1: the budget is reached */
      CHECK(rc >= -1, "%s, ref: the expansion failed: %s", name, s.err);
      CHECK(rt_exec_prepare(R->x, err, sizeof err) == 0, "%s, ref: %s", name, err);
      for (int b = 1; b < N_LEGS; b++)
        if (legs[b].ok) leg_follow(&legs[b], R, name);
    }
    /* every other step from ref's state, the next from the backend's own
     * (what it carried over: packed weights, caches); ILNAS_RANDOM_SYNC=1:
     * every step */
    if ((sync_steps || it % 2 == 0) && it != GROW_AT && it > 0)
      for (int b = 1; b < N_LEGS; b++)
        if (legs[b].ok) leg_follow(&legs[b], R, name);
    size_t k = (size_t)(it % DATA_BATCHES) * CAP;
    for (int b = 0; b < N_LEGS; b++)
      if (legs[b].ok) leg_step(&legs[b], name, it, in + k * img, lab + k, sizes[it]);
  }
  for (int b = 1; have_s && R->ok && b < N_LEGS; b++) {
    leg *L = &legs[b];
    if (!L->ok) continue;
    int bad = 0;
    for (int it = 0; it < STEPS && !bad; it++) {
      double rel = fabs(L->loss[it] - R->loss[it]) / fabs(R->loss[it]);
      double tol = sync_steps || it % 2 == 0 ? SYNC_TOL : OWN_TOL; /* it 0 and GROW_AT: even */
      bad = !(rel <= tol);
      CHECK(!bad, "%s, %s: step %d (batch %d%s): loss %.8f, ref %.8f (rel %.2e)", name,
            backends[b], it, sizes[it], it >= GROW_AT ? ", after the growth" : "", L->loss[it],
            R->loss[it], rel); /* the first is the one to read */
    }
    int64_t na = ir_count_active_bits(R->x->arch, np);
    float *p0 = malloc((size_t)(na ? na : 1) * sizeof *p0);
    float *p1 = malloc((size_t)(na ? na : 1) * sizeof *p1);
    rt_exec_active_values(R->x, RT_PARAMS, p0);
    rt_exec_active_values(L->x, RT_PARAMS, p1);
    double e = jt_nerr(p1, p0, (size_t)na), we = 0;
    const char *wl = e <= PARAM_TOL ? "" : worst_active(R->g, R->x->arch, p1, p0, &we);
    CHECK(e <= PARAM_TOL, "%s, %s: the active parameters at the end differ from ref's by %.2e "
          "(most in %s: %.2e)", name, backends[b], e, wl, we);
    free(p0), free(p1);
    if (bad || !(e <= PARAM_TOL)) fprintf(stderr, "  the model: %s\n", src);
  }
  if (have_s)
    printf("%s: ref grew %lld parameters (%d new nodes, %d new layers): %s\n", name,
           (long long)ev.added, ev.new_nodes, ev.new_layers, src);
  if (have_s) srch_free(&s);
  for (int b = 0; b < N_LEGS; b++) leg_free(&legs[b]), free(dg[b]);
  free(in);
  return 1;
}

int main(int argc, char **argv) {
  char err[256];
  if (argc > 1 && strcmp(argv[1], "--print") == 0) { /* the drawn models' sources alone */
    int n = argc > 2 ? atoi(argv[2]) : 16;
    jt_state ^= (argc > 3 ? strtoul(argv[3], NULL, 10) : 1) * 0x9e3779b97f4a7c15ull;
    if (!jt_state) jt_state = 1;
    for (int printed = 0, drawn = 0; printed < n && drawn < 4 * n; drawn++) {
      buf b;
      draw_model(&b, drawn);
      fe_model m;
      FILE *null = fopen("/dev/null", "w");
      ir_graph *g = NULL;
      if (null && !fe_parse_string("t.ilnas", b.s, &m, null)) {
        g = ir_build(&m, null);
        fe_model_free(&m);
      }
      if (null) fclose(null);
      if (g) printf("%s\n", b.s), printed++;
      ir_free(g);
    }
    return 0;
  }
  const char *ec = getenv("ILNAS_RANDOM_MODELS"), *es = getenv("ILNAS_RANDOM_SEED");
  sync_steps = getenv("ILNAS_RANDOM_SYNC") && atoi(getenv("ILNAS_RANDOM_SYNC"));
  int count = argc > 1 ? atoi(argv[1]) : ec ? atoi(ec) : 16;
  unsigned long seed = argc > 2 ? strtoul(argv[2], NULL, 10) : es ? strtoul(es, NULL, 10) : 1;
  jt_state ^= seed * 0x9e3779b97f4a7c15ull;
  if (!jt_state) jt_state = 1;
  emulated = emu_driver_install() == 0 && rt_cuda_probe(err, sizeof err) == 0;
  CHECK(emulated, "cuda: the GPU emulation cannot start");
  const char *one = getenv("ILNAS_RANDOM_MODEL"); /* a model to check alone (a failure's) */
  if (one) {
    check_model("the model", one);
    if (failures) fprintf(stderr, "test_random_models: %d failures\n", failures);
    return failures != 0;
  }
  int built = 0, drawn = 0;
  for (; built < count && drawn < 4 * count; drawn++) {
    buf b;
    draw_model(&b, drawn);
    char name[32];
    snprintf(name, sizeof name, "model %d (seed %lu)", drawn, seed);
    built += check_model(name, b.s);
  }
  CHECK(built == count, "only %d of %d drawn models were built (%d drawn)", built, count, drawn);
  if (failures) fprintf(stderr, "test_random_models: %d failures\n", failures);
  else printf("test_random_models: ok, %d models (%d drawn)\n", built, drawn);
  return failures != 0;
}
