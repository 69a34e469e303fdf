/* transfer.c: `train --from CKPT`, a trained network as the start of a new
 * run (the seed paper's transfer, §5.2).
 *
 * The checkpoint must hold the binary's super-network up to the
 * classifier: every layer before it the same op, name, shapes and wiring,
 * the classifier reading the same features. Its α, weights, batch norm's
 * parameters and running statistics and the alive flags carry over layer
 * by layer, through each graph's own offsets (a classifier of another width
 * moves what follows it); the classifier too when the class counts agree
 * (unless --new-head). Otherwise the classifier is the fresh run's: the seed's α over it and its
 * weights as rt_exec_init_params draws them. Momentum starts at zero: the
 * run, its seed, schedule, budget and search are the new model's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/train.h"

/* "conv 3x3 stride 1, 16x28x28 -> 32x28x28" */
static void describe(const ir_layer *l, char *buf, size_t n) {
  int k = snprintf(buf, n, "%s", ir_kind_name(l->kind));
  if (l->kind == IR_CONV || l->kind == IR_MAXPOOL)
    k += snprintf(buf + k, n - (size_t)k, " %dx%d stride %d", l->k, l->k, l->stride);
  snprintf(buf + k, n - (size_t)k, ", %dx%dx%d -> %dx%dx%d", l->cin, l->h, l->w, l->cout, l->oh,
           l->ow);
}

/* What differs between two layers at the same place, or NULL. The head may
 * differ in its outputs (the classes). */
static const char *layer_diff(const ir_layer *p, const ir_layer *q, int head) {
  if (strcmp(p->name, q->name) != 0 || p->kind != q->kind)
    return "another layer: the stages differ (their layer bounds, or dense against chain)";
  if (p->cin != q->cin || p->h != q->h || p->w != q->w || p->k != q->k ||
      p->stride != q->stride || p->pad != q->pad ||
      (!head && (p->cout != q->cout || p->oh != q->oh || p->ow != q->ow)))
    return "another shape: the input, a stage's channel or width bounds, or a kernel differ";
  if (p->relu != q->relu || p->bn != q->bn || (p->b_off < 0) != (q->b_off < 0))
    return "another activation or batch norm";
  if (p->in_t != q->in_t || p->in_ch != q->in_ch || p->can_die != q->can_die ||
      (!head && (p->out_t != q->out_t || p->out_ch != q->out_ch || p->prev_t != q->prev_t ||
                 p->prev_ch != q->prev_ch)))
    return "other connections: an earlier stage differs (dense against chain)";
  return NULL;
}

int app_ir_transferable(const ir_graph *a, const ir_graph *b, char *err, size_t errlen) {
  int n = a->n_layers < b->n_layers ? a->n_layers : b->n_layers;
  for (int i = 0; i < n; i++) {
    const ir_layer *p = &a->layers[i], *q = &b->layers[i];
    int head = i == a->n_layers - 1 && i == b->n_layers - 1;
    const char *why = layer_diff(p, q, head);
    if (!why) continue;
    char dp[128], dq[128];
    describe(q, dq, sizeof dq), describe(p, dp, sizeof dp);
    if (strcmp(p->name, q->name) == 0)
      snprintf(err, errlen, "its super-network differs from model '%s' at layer %d, '%s': %s "
               "(%s in the checkpoint, %s in this model)", a->cfg.name, i, q->name, why, dq, dp);
    else
      snprintf(err, errlen, "its super-network differs from model '%s' at layer %d: the "
               "checkpoint has '%s' (%s) where this model has '%s' (%s); %s", a->cfg.name, i,
               q->name, dq, p->name, dp, why);
    return -1;
  }
  if (a->n_layers != b->n_layers) {
    const ir_graph *longer = a->n_layers > b->n_layers ? a : b;
    snprintf(err, errlen, "its super-network differs from model '%s' at layer %d, '%s': only "
             "%s has it (the stages' layer bounds differ)", a->cfg.name, n,
             longer->layers[n].name, longer == a ? "this model" : "the checkpoint");
    return -1;
  }
  return 0;
}

static void copy_bits(ir_arch *dst, int64_t at, const ir_arch *src, int64_t from, int64_t n) {
  for (int64_t k = 0; k < n; k++) ir_alpha_set(dst, at + k, ir_alpha_get(src, from + k));
}

/* A layer's parameter ranges: weights, bias, batch norm's gamma and beta. */
static void ranges(const ir_layer *l, int64_t off[3], int64_t len[3]) {
  off[0] = l->w_off, len[0] = l->n_w;
  off[1] = l->b_off, len[1] = l->b_off >= 0 ? l->cout : 0;
  off[2] = l->g_off, len[2] = l->g_off >= 0 ? 2 * (int64_t)l->cout : 0;
}

int app_transfer(rt_exec *x, const char *from, const char *task, int new_head, rt_norm *norm,
                 int *same_head, char *err, size_t errlen) {
  const ir_graph *g = x->g;
  ir_graph *cg = NULL;
  rt_exec *cx = NULL;
  app_train_state cst;
  char why[768];
  *same_head = 0;
  if (app_ckpt_load_task(from, task, 1, 1, "ref", &cg, &cx, &cst, why, sizeof why)) {
    snprintf(err, errlen, "--from %s", why);
    return -1;
  }
  if (app_ir_transferable(g, cg, why, sizeof why)) {
    snprintf(err, errlen, "--from %s: %s", from, why);
    rt_exec_free(cx), ir_free(cg);
    return -1;
  }
  if (g->cfg.gran == FE_GRAN_KERNEL && cg->cfg.gran != FE_GRAN_KERNEL) {
    /* its α holds parts of kernels, which a kernel search cannot grow or count */
    snprintf(err, errlen, "--from %s: it was grown weight by weight, and model '%s' grows "
             "kernel by kernel ('search kernel'); transfer it to a model that searches weights",
             from, g->cfg.name);
    rt_exec_free(cx), ir_free(cg);
    return -1;
  }
  *same_head = g->cfg.classes == cg->cfg.classes && !new_head;
  ir_arch a;
  if (ir_arch_init(&a, g)) {
    snprintf(err, errlen, "out of memory");
    rt_exec_free(cx), ir_free(cg);
    return -1;
  }
  ir_arch_copy(&a, x->arch, g); /* the fresh run's: its head stays unless carried */
  const int n = g->n_layers;
  for (int i = 0; i < n; i++) {
    if (i == n - 1 && !*same_head) continue;
    int64_t po[3], pl[3], qo[3], ql[3];
    ranges(&g->layers[i], po, pl), ranges(&cg->layers[i], qo, ql);
    for (int r = 0; r < 3; r++)
      if (pl[r] > 0) copy_bits(&a, po[r], cx->arch, qo[r], pl[r]);
    a.alive[i] = cx->arch->alive[i];
  }
  int rc = rt_exec_set_arch(x, &a, why, sizeof why);
  ir_arch_free(&a);
  if (rc) {
    snprintf(err, errlen, "--from %s: %s", from, why);
    rt_exec_free(cx), ir_free(cg);
    return -1;
  }
  /* the values after the architecture: set_arch zeroes what is inactive */
  float *p = rt_exec_params_write(x);
  const float *cp = rt_exec_view(cx, RT_PARAMS);
  for (int i = 0; i < n; i++) {
    if (i == n - 1 && !*same_head) continue;
    const ir_layer *l = &g->layers[i], *cl = &cg->layers[i];
    int64_t po[3], pl[3], qo[3], ql[3];
    ranges(l, po, pl), ranges(cl, qo, ql);
    for (int r = 0; r < 3; r++)
      if (pl[r] > 0) memcpy(p + po[r], cp + qo[r], (size_t)pl[r] * sizeof *p);
  }
  const float *cs = rt_exec_view(cx, RT_STATS);
  float *s = rt_exec_edit(x, RT_STATS);
  for (int i = 0; i < n; i++) {
    const ir_layer *l = &g->layers[i], *cl = &cg->layers[i];
    if (l->s_off >= 0 && cl->s_off >= 0)
      memcpy(s + l->s_off, cs + cl->s_off, 2 * (size_t)l->cout * sizeof *s);
  }
  if (cst.norm.c == g->cfg.in_c) *norm = cst.norm;
  else norm->c = 0; /* not recorded: the caller measures the data's */
  rt_exec_free(cx), ir_free(cg);
  return 0;
}
