/* test_jit_train: a small model trained by SGD on the CPU (JIT) backend and
 * on the reference backend from the same start on the same data, with a
 * growth step in between (after which the JIT re-emits the changed
 * layers): the loss curves must agree.
 *
 *   test_jit_train                   cpu against ref
 *   test_jit_train cuda              cuda against cpu, on a GPU (77: none)
 *   test_jit_train cuda --emulate    the same on the host emulation of a
 *                                    GPU (tests/gpu/emu_driver.h)
 *
 * Also: the gradients of a batch do not depend on what the arenas held
 * before (the backward clears only what it accumulates into), on both
 * backends, for models with concatenations, dead layers and batch norm. */
#include "jitutil.h"
#include "runtime/cpu/cpu.h"
#include "runtime/exec.h"
#include "runtime/host.h"
#include "runtime/packed.h"
#include "search/search.h"
#include "tests/gpu/emu_driver.h"

static const char *src =
    "model t { input 2x10x10; classes 4; search weight budget 3k from density 0.3 seed 5;"
    " stage conv { layers 1..2 channels 4..8 kernel 3x3 dense; }"
    " reduce maxpool 2;"
    " stage conv { layers 1..1 channels 6..8 kernel 5x5; }"
    " reduce conv 2;"
    " stage linear { layers 1..2 width 8..16; } }";

static const char *src_bn =
    "model b { input 3x8x8; classes 5; search kernel budget 4k from density 0.5 seed 2;"
    " stage conv { layers 2..3 channels 4..6 kernel 3x3 dense norm batch }"
    " reduce maxpool 2;"
    " stage conv { layers 1..2 channels 6..8 kernel 3x3 }"
    " reduce gap;"
    " stage linear { layers 1..2 width 8..12 } }";

/* Plain (not dense) stages: each max pool alone writes its input's
 * gradient, overwriting it; the second pools a 7x7 plane (its last row and
 * column are in no window). */
static const char *src_pool =
    "model p { input 1x14x14; classes 3; search weight budget 2k from density 0.4 seed 4;"
    " stage conv { layers 1..2 channels 4..6 kernel 3x3; }"
    " reduce maxpool 2;"
    " stage conv { layers 1..1 channels 4..6 kernel 3x3; }"
    " reduce maxpool 2;"
    " stage linear { layers 1..1 width 6..8; } }";

static ir_graph *build(void) { return jt_build(src); }

static double step(rt_exec *x, const ir_call *f, int nf, const ir_call *bw, int nb,
                   const float *in, const ir_label *lab, int n) {
  rt_exec_set_input(x, in, n);
  rt_exec_run(x, f, nf);
  double loss = rt_exec_loss(x, lab, 1, NULL);
  rt_exec_run(x, bw, nb);
  rt_exec_sgd(x, 0.05f, 0.9f, 5e-4f);
  return loss;
}

/* One batch's gradients, twice: the second time after filling both arenas
 * with garbage. They must be the same bits. */
static void check_stale_arena(const char *text, const char *backend) {
  char err[256];
  ir_graph *g = jt_build(text);
  CHECK(g, "model does not build");
  if (!g) return;
  int dead = 0; /* stages start at their lower bound: the rest are dead */
  for (int i = 0; i < g->n_layers; i++) dead += !g->arch.alive[i];
  CHECK(dead > 0, "the model should have a dead layer to pass through");
  const int n = 6;
  rt_exec *x = rt_exec_new(g, n, 2, backend, err, sizeof err);
  CHECK(x, "%s exec: %s", backend, err);
  ir_call *f, *bw;
  int nf, nb;
  if (!x || ir_schedule(g, &f, &nf, &bw, &nb)) {
    rt_exec_free(x), ir_free(g);
    return;
  }
  rt_exec_init_params(x, 9);
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w, np = (size_t)g->n_params;
  float *in = jt_randf(n * img), *g1 = malloc(np * sizeof *g1), *g2 = malloc(np * sizeof *g2);
  ir_label lab[6];
  for (int i = 0; i < n; i++) lab[i] = (ir_label)jt_int(0, g->cfg.classes - 1);
  for (int pass = 0; pass < 2; pass++) {
    if (pass == 1) {
      float *act, *dact, *grads;
      size_t arena;
      rt_backend *step = rt_packed_step(x->backend); /* the live layout's own step */
      if (!step) step = x->backend;
      rt_host_arena(step, &act, &dact, &grads, &arena);
      for (size_t i = 0; i < arena; i++) dact[i] = act[i] = 1e30f;
      for (int64_t i = 0; i < step->g->n_params; i++) grads[i] = 1e30f;
    }
    rt_exec_set_input(x, in, n);
    rt_exec_run(x, f, nf);
    rt_exec_loss(x, lab, 1, NULL);
    rt_exec_run(x, bw, nb);
    memcpy(pass == 0 ? g1 : g2, rt_exec_view(x, RT_GRADS), np * sizeof *g1);
  }
  size_t bad = 0, live = 0; /* inactive parameters' gradients are not used */
  for (size_t i = 0; i < np; i++) {
    bad += x->mask[i] && memcmp(&g1[i], &g2[i], sizeof *g1) != 0;
    live += x->mask[i] && g1[i] != 0.0f;
  }
  CHECK(bad == 0, "%s backend, model %.7s: %zu of %zu gradients depend on stale arena "
        "contents", backend, text + 6, bad, np);
  CHECK(live > 0, "%s backend: all gradients are zero; the check would prove nothing", backend);
  free(in), free(g1), free(g2), free(f), free(bw);
  rt_exec_free(x), ir_free(g);
}

/* The CPU backend's packed copies of the sparse linear weights follow
 * every change of the parameters: packed from the dense weights once for
 * the passes on the same values, kept current by the SGD step (no packing
 * from the dense weights after it), packed again after a write through
 * rt_exec_params_write. Every pass's loss is the reference backend's on
 * the same parameters. */
static void check_params_follow(void) {
  char err[256];
  const char *names[2] = {"ref", "cpu"};
  ir_graph *g[2] = {build(), build()};
  rt_exec *x[2] = {NULL, NULL};
  ir_call *f[2] = {NULL, NULL}, *bw[2] = {NULL, NULL};
  int nf[2], nb[2], ok = g[0] && g[1];
  CHECK(ok, "model does not build");
  for (int i = 0; ok && i < 2; i++) {
    x[i] = rt_exec_new(g[i], 8, 2, names[i], err, sizeof err);
    CHECK(x[i], "%s exec: %s", names[i], err);
    ok = x[i] && ir_schedule(g[i], &f[i], &nf[i], &bw[i], &nb[i]) == 0;
    if (ok) rt_exec_init_params(x[i], 3);
  }
  const ir_tensor *t = ok ? &g[0]->tensors[g[0]->input_t] : NULL;
  size_t img = t ? (size_t)t->c * t->h * t->w : 0;
  float *in = ok ? jt_randf(8 * img) : NULL;
  ir_label lab[8];
  for (int i = 0; i < 8; i++) lab[i] = (uint8_t)(i % 4);
  /* what happens before each pass: 0 nothing, 1 an SGD step, 2 a write */
  static const char *const what[] = {"the same values", "an SGD step", "a write"};
  static const int before[] = {0, 0, 1, 0, 2, 1, 2};
  long packs = 0, per = 0;
  double last = 0;
  for (int k = 0; ok && k < (int)(sizeof before / sizeof *before); k++) {
    double loss[2];
    for (int i = 0; i < 2; i++) {
      if (before[k] == 1) {
        step(x[i], f[i], nf[i], bw[i], nb[i], in, lab, 8);
      } else if (before[k] == 2) { /* the linear layers' weights halved */
        float *w = rt_exec_params_write(x[i]);
        for (int li = 0; li < g[i]->n_layers; li++) {
          const ir_layer *l = &g[i]->layers[li];
          for (int64_t j = 0; l->kind == IR_LINEAR && j < l->n_w; j++) w[l->w_off + j] *= 0.5f;
        }
      }
      rt_exec_set_input(x[i], in, 8);
      rt_exec_run(x[i], f[i], nf[i]);
      loss[i] = rt_exec_loss(x[i], lab, 0, NULL);
    }
    long now = rt_cpu_get_stats(x[1]->backend->i->kernels(x[1]->backend)).packs;
    if (k == 0) per = now; /* a pass that packs packs every sparse linear layer */
    long want = before[k] == 2 ? per : 0;
    CHECK(fabs(loss[1] - loss[0]) <= 1e-5, "pass %d, after %s: loss cpu %.7f ref %.7f", k,
          what[before[k]], loss[1], loss[0]);
    CHECK(k == 0 || now - packs == want, "pass %d, after %s: %ld packings, want %ld", k,
          what[before[k]], now - packs, want);
    CHECK(k == 0 || before[k] == 0 || loss[0] != last, "pass %d: the change changed nothing", k);
    CHECK(k > 0 || per > 0, "no sparse linear layer was packed: the check proves nothing");
    packs = now, last = loss[0];
  }
  free(in);
  for (int i = 0; i < 2; i++) free(f[i]), free(bw[i]), rt_exec_free(x[i]), ir_free(g[i]);
}

int main(int argc, char **argv) {
  char err[256];
  /* the backend under test, and the one it is held to */
  const char *names[2] = {"ref", argc > 1 ? argv[1] : "cpu"};
  int cpu = strcmp(names[1], "cpu") == 0;
  if (!cpu) names[0] = "cpu";
  if (argc > 2 && strcmp(argv[2], "--emulate") == 0 && emu_driver_install()) {
    printf("SKIP: this LLVM cannot JIT for the host\n");
    return 77;
  }
  if (strcmp(names[1], "cuda") == 0 && rt_cuda_probe(err, sizeof err)) {
    printf("SKIP: %s\n", err);
    return 77;
  }
  static const char *const stale[3] = {"ref", "cpu", NULL};
  for (int k = 0; k < 3; k++) {
    const char *b = stale[k] ? stale[k] : cpu ? NULL : names[1];
    /* the device step has no host arena to poison (its own starts as NaN
     * under the emulation, which the other checks would catch) */
    if (!b || strcmp(b, "cuda") == 0) continue;
    check_stale_arena(src, b);
    check_stale_arena(src_bn, b);
    check_stale_arena(src_pool, b);
  }
  if (cpu) check_params_follow();
  ir_graph *g[2] = {build(), build()};
  CHECK(g[0] && g[1], "model does not build");
  if (!g[0] || !g[1]) return 1;
  rt_exec *x[2];
  ir_call *f[2], *bw[2];
  int nf[2], nb[2];
  const int n = 16;
  for (int i = 0; i < 2; i++) {
    x[i] = rt_exec_new(g[i], n, 2, names[i], err, sizeof err);
    CHECK(x[i], "%s exec: %s", names[i], err);
    if (!x[i]) return 1;
    rt_exec_init_params(x[i], 3);
    CHECK(ir_schedule(g[i], &f[i], &nf[i], &bw[i], &nb[i]) == 0, "schedule");
  }
  const ir_tensor *t = &g[0]->tensors[g[0]->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  float *in = jt_randf(4 * n * img);
  ir_label lab[4 * 16];
  for (int i = 0; i < 4 * n; i++) lab[i] = (ir_label)jt_int(0, 3);
  srch_state s;
  CHECK(srch_init(&s, g[0], FE_SEARCH_ILNAS, 1) == 0, "srch_init");
  s.lr = 0.05f;
  long compiles_before = 0;
  double worst = 0;
  for (int it = 0; it < 12; it++) {
    if (it == 6) {
      /* Grow on the first side, then give the second the same α and
       * weights: its backend must re-emit the layers that changed. */
      srch_refill(&s, x[0]);
      srch_batches pb = {1, n, in, lab};
      srch_event ev;
      CHECK(srch_expand(&s, x[0], &pb, &ev) == 0 && ev.added > 0, "expansion grew nothing");
      CHECK(rt_exec_prepare(x[0], err, sizeof err) == 0, "%s", err);
      compiles_before = cpu ? rt_cpu_get_stats(x[1]->backend->i->kernels(x[1]->backend)).compiles : 1;
      long steps_before = rt_packed_rebuilds(x[1]->backend);
      size_t np = (size_t)g[0]->n_params * sizeof(float);
      memcpy(rt_exec_params_write(x[1]), rt_exec_view(x[0], RT_PARAMS), np);
      memcpy(rt_exec_edit(x[1], RT_MOMENTUM), rt_exec_view(x[0], RT_MOMENTUM), np);
      CHECK(rt_exec_set_arch(x[1], x[0]->arch, err, sizeof err) == 0, "%s", err);
      if (cpu) {
        /* new channels make the live layout a new step, whose kernel set
         * starts from nothing */
        rt_cpu_stats st = rt_cpu_get_stats(x[1]->backend->i->kernels(x[1]->backend));
        long since = rt_packed_rebuilds(x[1]->backend) > steps_before ? 0 : compiles_before;
        CHECK(st.compiles > since, "growth re-emitted nothing");
        printf("growth: %lld parameters added, %ld layer modules re-emitted, %ld from cache%s\n",
               (long long)ev.added, st.compiles - since, st.hits,
               since ? "" : " (a new step: new channels)");
      } else {
        printf("growth: %lld parameters added\n", (long long)ev.added);
      }
    }
    const float *bx = in + (size_t)(it % 4) * n * img;
    const ir_label *by = lab + (it % 4) * n;
    double l0 = step(x[0], f[0], nf[0], bw[0], nb[0], bx, by, n);
    double l1 = step(x[1], f[1], nf[1], bw[1], nb[1], bx, by, n);
    double d = fabs(l1 - l0);
    if (d > worst) worst = d;
    printf("step %2d: loss %s %.6f %s %.6f  |diff| %.2e\n", it, names[0], l0, names[1], l1, d);
    CHECK(d <= 1e-4, "step %d: loss %s %.7f %s %.7f", it, names[0], l0, names[1], l1);
  }
  CHECK(compiles_before > 0, "growth step not reached");
  printf("largest loss difference %.2e\n", worst);
  free(in);
  srch_free(&s);
  for (int i = 0; i < 2; i++) {
    free(f[i]), free(bw[i]);
    rt_exec_free(x[i]);
    ir_free(g[i]);
  }
  if (failures) fprintf(stderr, "test_jit_train: %d failures\n", failures);
  else printf("test_jit_train: ok\n");
  return failures != 0;
}
