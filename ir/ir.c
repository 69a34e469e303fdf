/* ir.c: the IR's accounting, readable dump and static schedule. */
#include "ir/ir.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>


int64_t ir_fan_in(const ir_layer *l) { return (int64_t)l->cin * l->k * l->k; }

void ir_free(ir_graph *g) {
  if (!g) return;
  free(g->tensors);
  free(g->layers);
  ir_arch_free(&g->arch);
  free(g);
}

int ir_arch_init(ir_arch *a, const ir_graph *g) {
  a->alpha = calloc((size_t)(g->n_params + 63) / 64 + 1, 8);
  a->alive = malloc((size_t)g->n_layers + 1);
  if (!a->alpha || !a->alive) {
    ir_arch_free(a);
    return -1;
  }
  memset(a->alive, 1, (size_t)g->n_layers + 1);
  return 0;
}

void ir_arch_copy(ir_arch *dst, const ir_arch *src, const ir_graph *g) {
  memcpy(dst->alpha, src->alpha, (size_t)(g->n_params + 63) / 64 * 8);
  memcpy(dst->alive, src->alive, (size_t)g->n_layers);
}

void ir_arch_free(ir_arch *a) {
  free(a->alpha), free(a->alive);
  a->alpha = NULL, a->alive = NULL;
}

static int64_t popcount_range(const ir_arch *a, int64_t from, int64_t n) {
  int64_t c = 0, i = from, end = from + n;
  for (; i < end && (i & 63); i++) c += ir_alpha_get(a, i);
  for (; i + 64 <= end; i += 64) c += __builtin_popcountll(a->alpha[i >> 6]);
  for (; i < end; i++) c += ir_alpha_get(a, i);
  return c;
}

ir_count ir_count_layer(const ir_graph *g, const ir_arch *a, const ir_layer *l) {
  (void)g;
  ir_count c = {0, 0, 0, 0};
  if (l->w_off < 0) return c;
  c.total = l->n_w + l->cout;
  c.active = popcount_range(a, l->w_off, l->n_w) +
             popcount_range(a, l->b_off, l->cout);
  c.candidate = c.total - c.active;
  c.bn = l->bn ? 2 * (int64_t)l->cout : 0;
  return c;
}

int ir_per_chan(const ir_graph *g, const ir_layer *l) {
  const ir_tensor *t = &g->tensors[l->in_t];
  int r = (t->h * t->w) / (l->h * l->w);
  return r > 0 ? r : 1;
}

int ir_in_chans(const ir_graph *g, const ir_layer *l) {
  int r = ir_per_chan(g, l);
  return (l->cin + r - 1) / r;
}

int64_t ir_count_active_bits(const ir_arch *a, int64_t n) {
  int64_t c = 0;
  for (int64_t w = 0; w < n / 64; w++) c += __builtin_popcountll(a->alpha[w]);
  for (int64_t i = n / 64 * 64; i < n; i++) c += ir_alpha_get(a, i);
  return c;
}

ir_count ir_count_params(const ir_graph *g, const ir_arch *a) {
  ir_count c = {0, 0, 0, 0};
  for (int i = 0; i < g->n_layers; i++) {
    ir_count k = ir_count_layer(g, a, &g->layers[i]);
    c.active += k.active, c.candidate += k.candidate;
    c.total += k.total, c.bn += k.bn;
  }
  return c;
}

int ir_live_outputs(const ir_graph *g, const ir_arch *a, const ir_layer *l) {
  (void)g;
  if (l->w_off < 0) return l->cout;
  int64_t row = (int64_t)l->cin * l->k * l->k, live = 0;
  for (int co = 0; co < l->cout; co++) {
    int64_t base = l->w_off + co * row;
    for (int64_t i = 0; i < row; i++)
      if (ir_alpha_get(a, base + i)) { live++; break; }
  }
  return (int)live;
}

int64_t ir_chan_base(const ir_graph *g, int t) {
  int64_t n = 0;
  for (int i = 0; i < t && i < g->n_tensors; i++) n += g->tensors[i].c;
  return n;
}

int ir_varying(const ir_graph *g, const ir_arch *a, uint8_t *out) {
  int64_t *base = malloc(((size_t)g->n_tensors + 1) * sizeof *base);
  if (!base) return -1;
  base[0] = 0;
  for (int t = 0; t < g->n_tensors; t++) base[t + 1] = base[t] + g->tensors[t].c;
  memset(out, 0, (size_t)base[g->n_tensors]);
  memset(out + base[g->input_t], 1, (size_t)g->tensors[g->input_t].c);
  /* the schedule's order is the layers' order: sources come first */
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    const uint8_t *in = out + base[l->in_t] + l->in_ch;
    uint8_t *o = out + base[l->out_t] + l->out_ch;
    int weighted = l->kind == IR_CONV || l->kind == IR_LINEAR;
    if (weighted && !a->alive[li]) {
      if (l->prev_t >= 0) memcpy(o, out + base[l->prev_t] + l->prev_ch, (size_t)l->cout);
      continue;
    }
    if (!weighted) {
      for (int c = 0; c < l->cout && c < l->cin; c++) o[c] = in[c];
      continue;
    }
    /* a linear layer reads its input channel-major flattened */
    const ir_tensor *it = &g->tensors[l->in_t];
    int64_t per = l->kind == IR_LINEAR ? (int64_t)it->h * it->w : 1, kk = (int64_t)l->k * l->k;
    for (int co = 0; co < l->cout; co++) {
      int v = 0;
      for (int64_t f = 0; f < l->cin && !v; f++) {
        if (!in[f / per]) continue;
        for (int64_t k = 0; k < kk && !v; k++)
          v = ir_alpha_get(a, l->w_off + ((int64_t)co * l->cin + f) * kk + k);
      }
      o[co] = (uint8_t)v;
    }
  }
  free(base);
  return 0;
}

const char *ir_kind_name(ir_kind k) {
  static const char *const names[] = {
#define IR_OP(K, name, what) [IR_##K] = #name,
#include "ir/ops.def"
#undef IR_OP
  };
  return (unsigned)k < IR_N_KINDS ? names[k] : "?";
}

void ir_dump(const ir_graph *g, FILE *out) {
  const fe_model *m = &g->cfg;
  fprintf(out, "model %s: input %dx%dx%d, %d classes, %s granularity, ",
          m->name, m->in_c, m->in_h, m->in_w, m->classes,
          m->gran == FE_GRAN_KERNEL ? "kernel" : "weight");
  if (m->budget == INT64_MAX) fprintf(out, "no budget\n");
  else fprintf(out, "budget %" PRId64 "\n", m->budget);
  if (m->n_tasks > 0) {
    fprintf(out, "tasks (%g of each one's budget shared; the classifier below is %s's, each "
            "task has its own):", m->shared, m->tasks[0].name);
    for (int k = 0; k < m->n_tasks; k++)
      fprintf(out, "%s %s (%d classes)", k ? "," : "", m->tasks[k].name, m->tasks[k].classes);
    fprintf(out, "\n");
  }
  fprintf(out, "tensors (per sample, %" PRId64 " floats):\n", g->act_size);
  for (int i = 0; i < g->n_tensors; i++) {
    const ir_tensor *t = &g->tensors[i];
    fprintf(out, "  t%-3d %-14s %4dx%dx%d  @%" PRId64 "\n", i, t->name, t->c,
            t->h, t->w, t->off);
  }
  fprintf(out, "layers:\n");
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    fprintf(out, "  %-12s %-7s t%d[%d:%d] %dx%dx%d -> t%d[%d:%d] %dx%dx%d",
            l->name, ir_kind_name(l->kind), l->in_t, l->in_ch, l->in_ch + l->cin,
            l->cin, l->h, l->w, l->out_t, l->out_ch, l->out_ch + l->cout,
            l->cout, l->oh, l->ow);
    if (l->kind == IR_CONV || l->kind == IR_MAXPOOL)
      fprintf(out, " k%d s%d p%d", l->k, l->stride, l->pad);
    if (l->bn == IR_BN_BEFORE) fprintf(out, " bn");
    if (l->relu) fprintf(out, " relu");
    if (l->bn == IR_BN_AFTER) fprintf(out, " bn");
    if (l->can_die) fprintf(out, g->arch.alive[i] ? " alive" : " dead(pass t%d[%d])",
                            l->prev_t, l->prev_ch);
    if (l->w_off >= 0) {
      ir_count c = ir_count_layer(g, &g->arch, l);
      fprintf(out, " params %" PRId64 "/%" PRId64 " live %d", c.active,
              c.total, ir_live_outputs(g, &g->arch, l));
    }
    fputc('\n', out);
  }
  ir_count c = ir_count_params(g, &g->arch);
  fprintf(out,
          "params: active %" PRId64 ", candidate %" PRId64 ", total %" PRId64
          ", batch norm %" PRId64 "\n",
          c.active, c.candidate, c.total, c.bn);
  ir_call *fwd, *bwd;
  int nf, nb;
  if (ir_schedule(g, &fwd, &nf, &bwd, &nb) == 0) {
    for (int pass = 0; pass < 2; pass++) {
      fprintf(out, "%s:\n", pass ? "backward" : "forward");
      const ir_call *cs = pass ? bwd : fwd;
      for (int i = 0; i < (pass ? nb : nf); i++) {
        fprintf(out, "  %s(", cs[i].fn);
        for (int a = 0; a < cs[i].nargs; a++)
          fprintf(out, "%s%" PRId64, a ? ", " : "", cs[i].args[a]);
        fprintf(out, ")\n");
      }
    }
    free(fwd);
    free(bwd);
  }
}

/* The schedule: forward in layer order, backward in reverse. Each call
 * carries the layer index and the per-sample arena offsets it touches. */
static ir_call layer_call(const ir_graph *g, int i, int backward) {
  const ir_layer *l = &g->layers[i];
  const ir_tensor *T = g->tensors;
  int64_t in = T[l->in_t].off + (int64_t)l->in_ch * l->h * l->w;
  int64_t out = T[l->out_t].off + (int64_t)l->out_ch * l->oh * l->ow;
  int64_t z = l->z_t >= 0 ? T[l->z_t].off : -1;
  int64_t prev = l->prev_t >= 0
                     ? T[l->prev_t].off + (int64_t)l->prev_ch * l->oh * l->ow
                     : -1;
  ir_call c = {0};
  static const char *const names[][2] = {
#define IR_OP(K, name, what) [IR_##K] = {"rt_op_" #name "_fwd", "rt_op_" #name "_bwd"},
#include "ir/ops.def"
#undef IR_OP
  };
  c.fn = names[l->kind][backward];
  c.nargs = 5;
  c.args[0] = i, c.args[1] = in, c.args[2] = z, c.args[3] = out;
  c.args[4] = prev;
  return c;
}

int ir_schedule(const ir_graph *g, ir_call **fwd, int *n_fwd, ir_call **bwd,
                int *n_bwd) {
  *fwd = malloc((size_t)g->n_layers * sizeof **fwd);
  *bwd = malloc((size_t)g->n_layers * sizeof **bwd);
  if (!*fwd || !*bwd) {
    free(*fwd), free(*bwd);
    return -1;
  }
  for (int i = 0; i < g->n_layers; i++) {
    (*fwd)[i] = layer_call(g, i, 0);
    (*bwd)[g->n_layers - 1 - i] = layer_call(g, i, 1);
  }
  *n_fwd = *n_bwd = g->n_layers;
  return 0;
}
