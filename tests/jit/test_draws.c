/* test_draws: the host steps keep the training set (rt_exec_set_dataset)
 * and make each batch's images from its draws (crop and flip) on their
 * threads, straight into the arena; the same steps given the images
 * that rt_data_make makes from the same draws must train to the same
 * losses and parameters, bit for bit. On ref, cpu and blas, at the
 * bounds and in the live layout, whose new step after a layer comes
 * alive must keep the set too; a set of bytes (as Fashion-MNIST's) and
 * one of floats. A draw of an image the set does not have is an error,
 * and a set of another shape than the input is not kept. */
#include "jitexec.h"
#include "runtime/packed.h"

enum { BATCH = 12, STEPS = 6, NSET = 40, CROP = 2, THREADS = 2 };

static const char *const src =
    "model d { input 2x9x9; classes 4; search weight budget 3k from density 0.4 seed 4;"
    " stage conv { layers 1..2 channels 4..6 kernel 3x3 norm batch; }"
    " reduce maxpool 2;"
    " stage linear { layers 1 width 8; } }";

typedef struct result {
  double loss[STEPS];
  float *params;
  long rebuilds;
} result;

/* STEPS steps on backend: from draws of a kept set (kept), or from the
 * images made from them. A dead layer comes alive before step 3. */
static int run(const char *backend, const rt_dataset *ds, int kept, result *r) {
  char err[256];
  ir_graph *g;
  rt_exec *x = jt_exec(src, BATCH, THREADS, backend, &g);
  if (!x) return -1;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  rt_norm nm;
  rt_data_norm(ds, &nm);
  if (kept)
    CHECK(rt_exec_set_dataset(x, ds, &nm, CROP, err, sizeof err) == 1, "%s: the set is not kept",
          backend);
  float *in = malloc((size_t)BATCH * img * sizeof *in);
  ir_label lab[BATCH];
  rt_rng rng;
  rt_rng_seed(&rng, 11);
  for (int s = 0; s < STEPS; s++) {
    if (s == 3) /* a dead layer comes alive: in the live layout, a new step */
      for (int li = 0; li < g->n_layers; li++) {
        if (g->layers[li].w_off < 0 || x->arch->alive[li]) continue;
        jt_wake(x, li);
        CHECK(rt_exec_prepare(x, err, sizeof err) == 0, "%s: prepare: %s", backend, err);
        break;
      }
    int idx[BATCH];
    rt_draw dr[BATCH];
    for (int i = 0; i < BATCH; i++) idx[i] = (s * 7 + i * 3) % NSET;
    rt_data_draws(idx, BATCH, CROP, 1, &rng, dr);
    if (kept) {
      rt_exec_set_draws(x, dr, BATCH);
      for (int i = 0; i < BATCH; i++) lab[i] = ds->y[idx[i]];
    } else {
      rt_data_make(ds, dr, BATCH, &nm, CROP, in, lab);
      rt_exec_set_input(x, in, BATCH);
    }
    rt_exec_forward(x);
    r->loss[s] = rt_exec_loss(x, lab, 1, NULL);
    rt_exec_backward(x);
    rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
    CHECK(rt_exec_status(x, err, sizeof err) == 0, "%s: step %d: %s", backend, s, err);
  }
  r->rebuilds = rt_packed_rebuilds(x->backend);
  r->params = malloc((size_t)g->n_params * sizeof(float));
  memcpy(r->params, rt_exec_view(x, RT_PARAMS), (size_t)g->n_params * sizeof(float));
  int np = (int)g->n_params;
  if (kept) { /* an image the set does not have */
    rt_draw bad = {NSET, CROP, CROP, 0};
    rt_exec_set_draws(x, &bad, 1);
    CHECK(rt_exec_status(x, err, sizeof err) != 0 && strstr(err, "image"),
          "%s: a draw past the set's end was taken (%s)", backend, err);
  }
  free(in);
  rt_exec_free(x);
  ir_free(g);
  return np;
}

static void check_set(const char *backend, const rt_dataset *ds, const char *what) {
  result a = {0}, b = {0};
  int na = run(backend, ds, 1, &a), nb = run(backend, ds, 0, &b);
  if (na > 0 && nb == na) {
    for (int s = 0; s < STEPS; s++)
      CHECK(a.loss[s] == b.loss[s], "%s, %s: step %d's loss %.9g from draws, %.9g from images",
            backend, what, s, a.loss[s], b.loss[s]);
    CHECK(memcmp(a.params, b.params, (size_t)na * sizeof(float)) == 0,
          "%s, %s: the parameters differ", backend, what);
    if (!strstr(backend, "/bounds"))
      CHECK(a.rebuilds >= 2, "%s: the live layout made no new step (%ld)", backend, a.rebuilds);
  }
  free(a.params), free(b.params);
}

int main(void) {
  ir_graph *g = jt_build(src);
  CHECK(g, "model does not build");
  if (!g) return 1;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  rt_dataset bytes = {NSET, t->c, t->h, t->w, g->cfg.classes, NULL, malloc((size_t)NSET * img),
                      1.0f / 255.0f, malloc(NSET * sizeof(ir_label)), NULL};
  rt_dataset floats = bytes;
  floats.x = malloc((size_t)NSET * img * sizeof(float)), floats.px = NULL;
  for (size_t i = 0; i < (size_t)NSET * img; i++)
    bytes.px[i] = (uint8_t)jt_int(0, 255), floats.x[i] = (float)jt_unif();
  for (int i = 0; i < NSET; i++) bytes.y[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  const char *const backends[] = {"ref", "cpu", "blas", "cpu/bounds"};
  for (size_t k = 0; k < sizeof backends / sizeof *backends; k++) {
    check_set(backends[k], &bytes, "bytes");
    check_set(backends[k], &floats, "floats");
  }
  /* another shape than the input: the caller makes the images */
  char err[256];
  rt_exec *x = rt_exec_new(g, BATCH, THREADS, "cpu", err, sizeof err);
  CHECK(x, "exec: %s", err);
  if (x) {
    rt_dataset other = bytes;
    other.w = t->w - 1;
    rt_norm nm;
    rt_data_norm(&bytes, &nm);
    CHECK(rt_exec_set_dataset(x, &other, &nm, CROP, err, sizeof err) == 0,
          "a set of another width was kept");
    rt_exec_free(x);
  }
  free(bytes.px), free(bytes.y), free(floats.x);
  ir_free(g);
  if (failures) fprintf(stderr, "test_draws: %d failures\n", failures);
  else printf("test_draws: ok\n");
  return failures != 0;
}
