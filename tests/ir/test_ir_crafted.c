/* test_ir_crafted: crafted IRs. Each case edits one field of
 * a real graph, serializes it again (so every container check passes) and
 * expects ir_deserialize to refuse it with a message naming the field; the
 * first cases go through a whole checkpoint with its CRC recomputed, the
 * way a hostile file would arrive. Run under ASan too (ILNAS_SANITIZE). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/train.h"
#include "ir/ir.h"
#include "runtime/ckpt.h"
#include "runtime/exec.h"

#include "tests/check.h"

static const char *MODEL =
    "model crafted {\n"
    "  input 1x8x8;\n"
    "  classes 10;\n"
    "  search weight seed 3;\n"
    "  stage conv { layers 1..2 channels 2..3 kernel 3x3 norm batch }\n"
    "  reduce conv 2;\n"
    "  stage conv { layers 1..2 channels 2..3 kernel 3x3 dense }\n"
    "  reduce maxpool 2;\n"
    "  stage linear { layers 1..2 width 4..6 }\n"
    "}\n";

static ir_graph *build(void) {
  fe_model m;
  if (fe_parse_string("crafted.ilnas", MODEL, &m, stderr) != 0) return NULL;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  return g;
}

static ir_graph *copy(const ir_graph *g) {
  uint8_t *b;
  size_t n;
  char err[512];
  if (ir_serialize(g, NULL, &b, &n) != 0) return NULL;
  ir_graph *h = ir_deserialize(b, n, err, sizeof err);
  free(b);
  return h;
}

static int layer_named(const ir_graph *g, const char *name) {
  for (int i = 0; i < g->n_layers; i++)
    if (strcmp(g->layers[i].name, name) == 0) return i;
  return -1;
}

typedef void (*edit_fn)(ir_graph *g);

#define L(name) (&g->layers[layer_named(g, name)])
static void e_classes(ir_graph *g) { g->cfg.classes = 11; }
static void e_w_off_neg(ir_graph *g) { L("conv1.1")->w_off = -2; }
static void e_w_off_min(ir_graph *g) { L("conv1.1")->w_off = INT64_MIN; }
static void e_w_off_max(ir_graph *g) { L("linear1.0")->w_off = INT64_MAX - 3; }
static void e_b_off_neg(ir_graph *g) { L("classifier")->b_off = -5; }
static void e_channels(ir_graph *g) { g->tensors[g->input_t].c = 9; }
static void e_out_ch(ir_graph *g) { L("conv1.0")->out_ch = -1; }
static void e_h(ir_graph *g) { L("conv1.1")->h = 16; }
static void e_oh(ir_graph *g) { L("reduce1")->oh = 5; }
static void e_n_w(ir_graph *g) { L("conv2.0")->n_w += 1; }
static void e_overlap(ir_graph *g) {
  ir_layer *l = L("conv2.1");
  l->w_off = L("conv2.0")->w_off + 1, l->b_off = l->w_off + l->n_w;
}
static void e_s_off(ir_graph *g) { L("conv1.1")->s_off = g->n_stats - 1; }
static void e_lin_cin(ir_graph *g) { L("linear1.0")->cin += 1; }
static void e_cin(ir_graph *g) { L("conv2.1")->cin = 40; }
static void e_in_t(ir_graph *g) { L("conv1.0")->in_t = g->n_tensors; }
static void e_z_t(ir_graph *g) { L("conv1.0")->z_t = -1; }
static void e_prev(ir_graph *g) { L("linear1.1")->prev_ch = 3; }
static void e_item(ir_graph *g) { L("conv1.0")->item = 7; }
static void e_kind(ir_graph *g) { L("reduce2")->kind = (ir_kind)IR_N_KINDS; }
static void e_pool(ir_graph *g) { L("reduce2")->k = 3; }
static void e_t_off(ir_graph *g) { g->tensors[1].off = g->act_size - 1; }
static void e_t_overlap(ir_graph *g) { g->tensors[2].off = g->tensors[1].off; }
static void e_act(ir_graph *g) { g->act_size = INT64_MAX; }
static void e_logits(ir_graph *g) { g->logits_t = g->input_t; }
static void e_dead(ir_graph *g) { g->arch.alive[layer_named(g, "conv1.0")] = 0; }
static void e_bn_lin(ir_graph *g) { L("classifier")->bn = 1; }
static void e_name(ir_graph *g) { snprintf(L("conv1.0")->name, 64, "a*/b"); }
static void e_density(ir_graph *g) { g->cfg.density = 0.0 / 0.0; }
static void e_gran(ir_graph *g) { g->cfg.gran = 7; }
static void e_budget(ir_graph *g) { g->cfg.budget = -1; }
static void e_k(ir_graph *g) { L("conv1.0")->k = 1 << 20; }
static void e_pad(ir_graph *g) { L("conv1.0")->pad = 3; }
/* two valid tasks, a and b; the edits below break one thing in them */
static void two_tasks(ir_graph *g) {
  g->cfg.n_tasks = 2;
  g->cfg.shared = 0.2;
  for (int i = 0; i < 2; i++) {
    fe_task *t = &g->cfg.tasks[i];
    snprintf(t->name, sizeof t->name, "%c", 'a' + i);
    snprintf(t->data_path, sizeof t->data_path, "d%d", i);
    t->classes = 10;
    t->test_split = 0.2;
  }
}
static void e_one_task(ir_graph *g) { two_tasks(g), g->cfg.n_tasks = 1; }
static void e_shared_alone(ir_graph *g) { g->cfg.shared = 0.5; }
static void e_shared_one(ir_graph *g) { two_tasks(g), g->cfg.shared = 1; }
static void e_task_name(ir_graph *g) { two_tasks(g), strcpy(g->cfg.tasks[1].name, "a*/b"); }
static void e_task_twice(ir_graph *g) { two_tasks(g), strcpy(g->cfg.tasks[1].name, "a"); }
static void e_task_classes(ir_graph *g) { two_tasks(g), g->cfg.tasks[0].classes = 0; }
static void e_task_split(ir_graph *g) { two_tasks(g), g->cfg.tasks[1].test_split = 0.0 / 0.0; }
static void e_task_path(ir_graph *g) { two_tasks(g), strcpy(g->cfg.tasks[1].data_path, "x\ny"); }
#undef L

static const struct {
  const char *what, *want; /* the case, and what the message must say */
  edit_fn edit;
} CASES[] = {
    {"cfg.classes 10->11", "classes 11", e_classes},
    {"negative w_off", "conv1.1", e_w_off_neg},
    {"w_off INT64_MIN", "conv1.1", e_w_off_min},
    {"w_off near INT64_MAX", "linear1.0", e_w_off_max},
    {"negative b_off", "classifier", e_b_off_neg},
    {"input channels 1->9", "cfg's input", e_channels},
    {"out_ch -1", "conv1.0", e_out_ch},
    {"conv h 8->16", "conv1.1): input is 16x8", e_h},
    {"reduce oh", "reduce1", e_oh},
    {"n_w", "n_w", e_n_w},
    {"overlapping parameters", "overlap", e_overlap},
    {"s_off past the statistics", "statistics", e_s_off},
    {"linear cin", "linear1.0", e_lin_cin},
    {"conv cin past its tensor", "conv2.1", e_cin},
    {"in_t out of range", "conv1.0", e_in_t},
    {"conv without z", "pre-activation", e_z_t},
    {"pass-through source", "linear1.1", e_prev},
    {"item out of range", "item 7", e_item},
    {"kind out of range", "kind", e_kind},
    {"pool window", "reduce2", e_pool},
    {"tensor past the arena", "arena", e_t_off},
    {"tensors overlapping", "overlaps", e_t_overlap},
    {"act_size huge", "arena", e_act},
    {"logits is the input", "logits", e_logits},
    {"a layer that cannot die, dead", "cannot die", e_dead},
    {"batch norm on a linear", "batch norm", e_bn_lin},
    {"a name that ends a C comment", "name", e_name},
    {"density NaN", "cfg.density", e_density},
    {"gran 7", "cfg.gran", e_gran},
    {"negative budget", "cfg.budget", e_budget},
    {"k 2^20", "conv1.0", e_k},
    {"pad >= k", "conv1.0", e_pad},
    {"one task", "cfg.n_tasks 1", e_one_task},
    {"shared without tasks", "cfg.shared", e_shared_alone},
    {"shared 1", "cfg.shared 1", e_shared_one},
    {"a task's name", "task 1", e_task_name},
    {"two tasks of one name", "task 0's", e_task_twice},
    {"a task's classes 0", "classes 0", e_task_classes},
    {"a task's split NaN", "test_split", e_task_split},
    {"a task's path", "data path", e_task_path},
};
enum { N_CASES = sizeof CASES / sizeof *CASES };

/* A checkpoint whose IRGR section is `ir`, the other sections those of
 * `base`, and the CRC recomputed by the container's writer. */
static int write_ckpt(const char *base, const char *path, const uint8_t *ir, size_t n) {
  char err[512];
  rt_ckpt *c = rt_ckpt_read(base, err, sizeof err);
  if (!c) return -1;
  rt_ckpt_writer *w = rt_ckpt_writer_new();
  int bad = !w || rt_ckpt_add(w, "IRGR", ir, n);
  const char *tags[] = {"PARA", "MOMA", "PARM", "MOMT", "BNST", "TRST", "SRCH"};
  for (int i = 0; i < 7 && !bad; i++) {
    size_t k;
    const void *p = rt_ckpt_get(c, tags[i], &k);
    if (p) bad = rt_ckpt_add(w, tags[i], p, k);
  }
  if (!bad) bad = rt_ckpt_write(w, path, err, sizeof err);
  rt_ckpt_writer_free(w);
  rt_ckpt_free(c);
  return bad ? -1 : 0;
}

int main(void) {
  ir_graph *g = build();
  CHECK(g, "the model does not build");
  if (!g) return 1;
  char err[512], dir[] = "/tmp/ilnas-test-crafted-XXXXXX", base[600], path[600];
  CHECK(mkdtemp(dir), "mkdtemp");
  snprintf(base, sizeof base, "%s/base.ckpt", dir);
  snprintf(path, sizeof path, "%s/crafted.ckpt", dir);
  rt_exec *x = rt_exec_new(g, 4, 1, NULL, err, sizeof err);
  CHECK(x, "exec: %s", err);
  if (!x) return 1;
  rt_exec_init_params(x, 11);
  app_train_state st = {.epoch = 1, .seed = 3};
  CHECK(app_ckpt_save(base, x, &st, err, sizeof err) == 0, "save: %s", err);

  /* the unedited graph goes through both ways */
  {
    ir_graph *h = copy(g);
    CHECK(h, "the unedited graph is refused");
    ir_graph *t = h ? (two_tasks(h), copy(h)) : NULL;
    CHECK(t && t->cfg.n_tasks == 2, "two valid tasks are refused");
    ir_free(t);
    ir_free(h);
    ir_graph *lg;
    rt_exec *ly;
    app_train_state s2;
    CHECK(app_ckpt_load(base, 4, 1, NULL, &lg, &ly, &s2, err, sizeof err) == 0,
          "the unedited checkpoint is refused: %s", err);
    size_t np = (size_t)g->n_params * sizeof(float);
    if (ly) {
      CHECK(memcmp(rt_exec_view(ly, RT_PARAMS), rt_exec_view(x, RT_PARAMS), np) == 0,
            "the parameters do not come back from the active values (PARA)");
      rt_exec_free(ly), ir_free(lg);
    }
    /* a checkpoint of every value (PARM, MOMT: before PARA and MOMA) */
    rt_ckpt *c = rt_ckpt_read(base, err, sizeof err);
    rt_ckpt_writer *w = rt_ckpt_writer_new();
    const char *tags[] = {"IRGR", "BNST", "TRST"};
    int bad = !c || !w || rt_ckpt_add(w, "PARM", rt_exec_view(x, RT_PARAMS), np) ||
              rt_ckpt_add(w, "MOMT", rt_exec_view(x, RT_MOMENTUM), np);
    for (int i = 0; i < 3 && !bad; i++) {
      size_t k;
      const void *p = rt_ckpt_get(c, tags[i], &k);
      bad = !p || rt_ckpt_add(w, tags[i], p, k);
    }
    CHECK(!bad && rt_ckpt_write(w, path, err, sizeof err) == 0, "an old-format checkpoint: %s", err);
    rt_ckpt_writer_free(w), rt_ckpt_free(c);
    CHECK(app_ckpt_load(path, 4, 1, NULL, &lg, &ly, &s2, err, sizeof err) == 0,
          "the old-format checkpoint is refused: %s", err);
    if (ly) {
      CHECK(memcmp(rt_exec_view(ly, RT_PARAMS), rt_exec_view(x, RT_PARAMS), np) == 0,
            "the parameters do not come back from every value (PARM)");
      rt_exec_free(ly), ir_free(lg);
    }
  }
  for (int i = 0; i < N_CASES; i++) {
    ir_graph *h = copy(g);
    if (!h) {
      CHECK(0, "copy");
      break;
    }
    CASES[i].edit(h);
    uint8_t *b;
    size_t n;
    CHECK(ir_serialize(h, NULL, &b, &n) == 0, "serialize");
    ir_free(h);
    err[0] = 0;
    ir_graph *bad = ir_deserialize(b, n, err, sizeof err);
    CHECK(!bad, "%s: accepted", CASES[i].what);
    ir_free(bad);
    CHECK(err[0] && strstr(err, CASES[i].want), "%s: the message '%s' does not say '%s'",
          CASES[i].what, err, CASES[i].want);
    if (getenv("ILNAS_VERBOSE")) printf("%-32s %s\n", CASES[i].what, err);
    /* the first few arrive as whole checkpoints, through the app's loader */
    if (i < 8) {
      CHECK(write_ckpt(base, path, b, n) == 0, "%s: writing the checkpoint", CASES[i].what);
      ir_graph *lg = NULL;
      rt_exec *ly = NULL;
      app_train_state s2;
      err[0] = 0;
      int rc = app_ckpt_load(path, 4, 1, NULL, &lg, &ly, &s2, err, sizeof err);
      CHECK(rc != 0 && strstr(err, CASES[i].want), "%s: checkpoint loaded (rc %d): '%s'",
            CASES[i].what, rc, err);
      if (rc == 0) rt_exec_free(ly), ir_free(lg);
    }
    free(b);
  }
  unlink(path);
  unlink(base);
  rmdir(dir);
  rt_exec_free(x);
  ir_free(g);
  if (!failures) printf("%d crafted IRs refused\n", N_CASES);
  return failures != 0;
}
