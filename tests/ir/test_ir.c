/* test_ir: golden IR dumps and diagnostics, the IR's binary round trip,
 * and the checkpoint round trip through the runtime. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "app/train.h"

#include "tests/check.h"


static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)sz + 1);
  if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) sz = 0;
  buf[sz] = 0;
  fclose(f);
  if (n) *n = (size_t)sz;
  return buf;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Builds a model from source; returns the graph, or NULL with the
 * diagnostics in *diag_text. */
static ir_graph *build(const char *name, const char *src, char **diag_text) {
  size_t dn;
  FILE *diag = open_memstream(diag_text, &dn);
  fe_model m;
  ir_graph *g = NULL;
  if (fe_parse_string(name, src, &m, diag) == 0) {
    g = ir_build(&m, diag);
    fe_model_free(&m);
  }
  fclose(diag);
  return g;
}

static void round_trip(const char *name, ir_graph *g) {
  uint8_t *b1, *b2;
  size_t n1, n2;
  char err[256];
  CHECK(ir_serialize(g, NULL, &b1, &n1) == 0, "%s: serialize", name);
  ir_graph *h = ir_deserialize(b1, n1, err, sizeof err);
  CHECK(h, "%s: deserialize: %s", name, err);
  if (!h) return;
  CHECK(ir_serialize(h, NULL, &b2, &n2) == 0, "%s: serialize again", name);
  CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: round trip differs", name);
  char *d1, *d2;
  size_t l1, l2;
  FILE *f1 = open_memstream(&d1, &l1), *f2 = open_memstream(&d2, &l2);
  ir_dump(g, f1), ir_dump(h, f2);
  fclose(f1), fclose(f2);
  CHECK(l1 == l2 && strcmp(d1, d2) == 0, "%s: dumps differ after round trip", name);
  /* every truncation and a damaged magic are refused */
  for (size_t k = 0; k < n1; k += (k < 64 ? 1 : 7)) {
    ir_graph *t = ir_deserialize(b1, k, err, sizeof err);
    CHECK(!t, "%s: truncated IR of %zu bytes accepted", name, k);
    ir_free(t);
  }
  b1[0] ^= 0x20;
  CHECK(!ir_deserialize(b1, n1, err, sizeof err), "%s: bad magic accepted", name);
  free(b1), free(b2), free(d1), free(d2);
  ir_free(h);
}

/* A model of several tasks: n_tasks, shared and every task's fields come
 * back from the binary form (locations are not kept, as the model's are
 * not). */
static void check_tasks(void) {
  static const char src[] =
      "model pair {\n"
      "  input 1x28x28;\n"
      "  search weight budget 20k shared 0.3 from density 0.25 seed 1;\n"
      "  stage conv { layers 1..2 channels 4..8 }\n"
      "  reduce maxpool 2;\n"
      "  stage linear { width 16..32 }\n"
      "  task fashion { classes 10; }\n"
      "  task digits { classes 12; }\n"
      "  task rgb { classes 3; }\n"
      "}\n"
      "data fashion idx \"/usr/share/datasets/fashion-mnist\" augment flip;\n"
      "data digits digits-csv \"digits.csv.gz\" resize 28x28 split 0.25;\n"
      "data rgb cifar10 \"c\" channels 1 resize 28 augment crop 2;\n";
  char *diag = NULL, err[256];
  ir_graph *g = build("tasks.ilnas", src, &diag);
  CHECK(g, "tasks.ilnas: %s", diag);
  free(diag);
  if (!g) return;
  round_trip("tasks.ilnas", g);
  uint8_t *b;
  size_t n;
  CHECK(ir_serialize(g, NULL, &b, &n) == 0, "tasks.ilnas: serialize");
  ir_graph *h = ir_deserialize(b, n, err, sizeof err);
  CHECK(h, "tasks.ilnas: deserialize: %s", err);
  free(b);
  if (!h) {
    ir_free(g);
    return;
  }
  const fe_model *m = &g->cfg, *k = &h->cfg;
  CHECK(k->n_tasks == 3 && m->n_tasks == 3, "n_tasks %d, %d", m->n_tasks, k->n_tasks);
  CHECK(k->shared == 0.3, "shared %g", k->shared);
  CHECK(k->classes == 10 && k->data == FE_DATA_IDX && k->aug_flip == 1, "the model's data");
  for (int i = 0; i < 3; i++) {
    const fe_task *a = &m->tasks[i], *t = &k->tasks[i];
    CHECK(strcmp(a->name, t->name) == 0 && a->classes == t->classes && a->data == t->data &&
              strcmp(a->data_path, t->data_path) == 0 && a->aug_crop == t->aug_crop &&
              a->aug_flip == t->aug_flip && a->test_split == t->test_split &&
              a->resize_h == t->resize_h && a->resize_w == t->resize_w &&
              a->channels == t->channels,
          "task %d (%s) differs after the round trip", i, a->name);
  }
  CHECK(strcmp(k->tasks[1].name, "digits") == 0 && k->tasks[1].classes == 12 &&
            k->tasks[1].data == FE_DATA_DIGITS_CSV && k->tasks[1].test_split == 0.25 &&
            k->tasks[1].resize_h == 28 && k->tasks[2].channels == 1 && k->tasks[2].aug_crop == 2,
        "task fields read back");
  ir_free(h);
  ir_free(g);
}

/* An IR that version 3 wrote (before tasks; golden/v3.irbin, of
 *   model v3 { input 1x8x8; classes 10; search weight budget 2k from density
 *   0.5 seed 3; stage conv { layers 1..2 channels 2..4 kernel 3 }
 *   reduce maxpool 2; stage linear { width 4..8 } }
 *   data digits-csv "digits.csv.gz" resize 8x8 split 0.25;)
 * reads with no tasks. */
static void check_v3(const char *dir) {
  char path[1024], err[256];
  snprintf(path, sizeof path, "%s/v3.irbin", dir);
  size_t n;
  char *b = slurp(path, &n);
  CHECK(b, "%s: cannot read", path);
  if (!b) return;
  ir_graph *g = ir_deserialize((const uint8_t *)b, n, err, sizeof err);
  CHECK(g, "%s: %s", path, err);
  if (g) {
    const fe_model *m = &g->cfg;
    CHECK(m->n_tasks == 0 && m->shared == 0, "v3: n_tasks %d, shared %g", m->n_tasks, m->shared);
    CHECK(strcmp(m->name, "v3") == 0 && m->classes == 10 && m->budget == 2000 &&
              m->data == FE_DATA_DIGITS_CSV && strcmp(m->data_path, "digits.csv.gz") == 0 &&
              m->resize_h == 8 && m->resize_w == 8 && m->test_split == 0.25,
          "v3: the configuration read back wrong");
    round_trip("v3.irbin", g);
  }
  ir_free(g);
  free(b);
}

/* Kernel granularity: every kernel is all on or all off. */
static void check_kernels_whole(const ir_graph *g) {
  if (g->cfg.gran != FE_GRAN_KERNEL) return;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0) continue;
    int kk = l->k * l->k;
    for (int64_t u = 0; u < l->n_w / kk; u++) {
      int first = ir_alpha_get(&g->arch, l->w_off + u * kk);
      for (int t = 1; t < kk; t++)
        CHECK(ir_alpha_get(&g->arch, l->w_off + u * kk + t) == first,
              "%s: kernel %lld split", l->name, (long long)u);
    }
  }
}

static void check_ckpt(ir_graph *g) {
  char err[512], dir[] = "/tmp/ilnas-test-ir-XXXXXX", path[512];
  CHECK(mkdtemp(dir), "mkdtemp");
  snprintf(path, sizeof path, "%s/x.ckpt", dir);
  rt_exec *x = rt_exec_new(g, 4, 1, NULL, err, sizeof err);
  CHECK(x, "exec: %s", err);
  rt_exec_init_params(x, 11);
  app_train_state st = {.epoch = 3, .step = 77, .seed = 11, .alr = 0.25, .expansions = 2};
  rt_rng_seed(&st.rng, 5);
  rt_rng_seed(&st.srng, 6);
  CHECK(app_ckpt_save(path, x, &st, err, sizeof err) == 0, "save: %s", err);
  ir_graph *h;
  rt_exec *y;
  app_train_state st2;
  CHECK(app_ckpt_load(path, 4, 1, NULL, &h, &y, &st2, err, sizeof err) == 0, "load: %s", err);
  if (y) {
    CHECK(memcmp(rt_exec_view(x, RT_PARAMS), rt_exec_view(y, RT_PARAMS), (size_t)g->n_params * sizeof(float)) == 0,
          "params differ after the checkpoint round trip");
    CHECK(memcmp(x->arch->alpha, h->arch.alpha, (size_t)(g->n_params + 63) / 64 * 8) == 0 &&
              memcmp(x->arch->alive, h->arch.alive, (size_t)g->n_layers) == 0,
          "alpha differs after the checkpoint round trip");
    CHECK(st2.epoch == 3 && st2.step == 77 && st2.alr == 0.25 &&
          st2.expansions == 2 && memcmp(&st2.rng, &st.rng, sizeof st.rng) == 0 &&
          memcmp(&st2.srng, &st.srng, sizeof st.srng) == 0,
          "training state differs after the checkpoint round trip");
    CHECK(app_ir_compatible(g, h, err, sizeof err) == 0, "compatible: %s", err);
    rt_exec_free(y), ir_free(h);
  }
  /* one damaged byte anywhere is refused, with a message */
  size_t n;
  char *bytes = slurp(path, &n);
  for (size_t k = 0; k < n; k += n / 37 + 1) {
    bytes[k] ^= 0x01;
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    err[0] = 0;
    int rc = app_ckpt_load(path, 4, 1, NULL, &h, &y, &st2, err, sizeof err);
    CHECK(rc != 0 && err[0], "damaged byte %zu accepted", k);
    if (rc == 0) rt_exec_free(y), ir_free(h);
    bytes[k] ^= 0x01;
  }
  free(bytes);
  unlink(path);
  rmdir(dir);
  rt_exec_free(x);
}

/* ir_alpha_next against a scan, on sparse and dense words, across word
 * boundaries and to ends inside a word. */
static void check_alpha_next(void) {
  enum { N = 1000 };
  uint64_t bits[(N + 63) / 64] = {0};
  ir_arch a = {bits, NULL};
  uint64_t r = 12345;
  for (int i = 0; i < N; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    int dense = (i / 128) % 2; /* alternate sparse and dense stretches */
    if ((r >> 33) % (dense ? 2 : 97) == 0) ir_alpha_set(&a, i, 1);
  }
  int bad = 0;
  for (int from = 0; from <= N; from += 7)
    for (int end = from; end <= N; end += 61) {
      int want = from;
      while (want < end && !ir_alpha_get(&a, want)) want++;
      bad += ir_alpha_next(&a, from, end) != want;
    }
  CHECK(bad == 0, "ir_alpha_next: %d ranges wrong", bad);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_ir GOLDEN_DIR\n");
    return 2;
  }
  const char *dir = argv[1];
  int update = getenv("ILNAS_UPDATE_GOLDEN") != NULL, tested = 0, ckpt_done = 0;
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return 2;
  }
  char *names[256];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 256) {
    size_t len = strlen(e->d_name);
    if (len > 6 && strcmp(e->d_name + len - 6, ".ilnas") == 0)
      names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_names);
  for (int i = 0; i < n; i++) {
    char path[1024], want_path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    char *src = slurp(path, NULL), *diag = NULL, *out = NULL;
    size_t on;
    ir_graph *g = build(names[i], src, &diag);
    if (g) {
      FILE *f = open_memstream(&out, &on);
      ir_dump(g, f);
      fclose(f);
    }
    const char *got = g ? out : diag;
    size_t stem = strlen(path) - 6;
    snprintf(want_path, sizeof want_path, "%.*s%s", (int)stem, path, g ? ".ir" : ".err");
    if (update) {
      FILE *f = fopen(want_path, "w");
      fputs(got, f);
      fclose(f);
    } else {
      char *want = slurp(want_path, NULL);
      CHECK(want && strcmp(want, got) == 0, "%s: output differs from %s:\n%s",
            names[i], want_path, got);
      free(want);
    }
    if (g) {
      round_trip(names[i], g);
      check_kernels_whole(g);
      ir_call *fc, *bc;
      int nf, nb;
      CHECK(ir_schedule(g, &fc, &nf, &bc, &nb) == 0 && nf == g->n_layers &&
                nb == g->n_layers && strcmp(fc[0].fn, bc[nb - 1].fn) != 0,
            "%s: schedule", names[i]);
      free(fc), free(bc);
      if (!ckpt_done) check_ckpt(g), ckpt_done = 1;
    }
    tested++;
    ir_free(g);
    free(src), free(diag), free(out), free(names[i]);
  }
  CHECK(tested >= 3, "only %d golden files found in %s", tested, dir);
  check_tasks();
  check_v3(dir);
  check_alpha_next();
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else printf("ok: %d golden files\n", tested);
  return failures != 0;
}
