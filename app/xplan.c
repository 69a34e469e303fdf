/* xplan.c: the export plan (see xplan.h). */
#include "app/xplan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/err.h"
#include "runtime/ref.h"

void xp_plan_free(xp_plan *p) {
  for (int i = 0; i < p->n_ops; i++) {
    xp_op *o = &p->ops[i];
    free(o->start), free(o->src), free(o->tap), free(o->wt), free(o->bias), free(o->post);
  }
  free(p->ops);
  if (p->loc)
    for (int t = 0; t < p->n_tensors; t++) free(p->loc[t]);
  free(p->loc), free(p->logit_src), free(p->spatial), free(p->varies);
  memset(p, 0, sizeof *p);
}

/* Reserves `floats` of workspace; the emitted code indexes it with int. */
static int ws_take(xp_plan *p, int64_t floats, int64_t *off) {
  *off = p->ws;
  p->ws += floats;
  return p->ws > INT32_MAX ? -1 : 0;
}

static xp_op *op_new(xp_plan *p) {
  xp_op *ops = realloc(p->ops, (size_t)(p->n_ops + 1) * sizeof *ops);
  if (!ops) return NULL;
  p->ops = ops;
  xp_op *o = &ops[p->n_ops++];
  memset(o, 0, sizeof *o);
  return o;
}

/* A weighted layer's fold of inference-mode batch norm:
 * y = (z - mean) * gamma / sqrt(var + eps) + beta = z * scale + shift, with
 * z = w.x + b (batch norm after the ReLU: z = relu(w.x + b)); for a
 * channel that cannot vary (ir_varying), y = beta, as the runtime has it. */
static void bn_fold(const xp_plan *p, const ir_graph *g, const ir_layer *l, const rt_exec *x,
                    int co, double *scale, double *shift) {
  *scale = 1.0, *shift = 0.0;
  if (!l->bn) return;
  const float *gamma = rt_exec_view(x, RT_PARAMS) + l->g_off, *beta = gamma + l->cout;
  const float *mean = rt_exec_view(x, RT_STATS) + l->s_off, *var = mean + l->cout;
  if (!p->varies[ir_chan_base(g, l->out_t) + l->out_ch + co]) {
    *scale = 0.0, *shift = beta[co];
    return;
  }
  *scale = gamma[co] / sqrt((double)var[co] + RT_BN_EPS);
  *shift = beta[co] - mean[co] * *scale;
}

/* Conv and linear: one op over the kept output channels. A conv input
 * "unit" is a channel (an input plane); a linear one is a single float of
 * its channel-major flattened input. */
static int plan_weighted(xp_plan *p, const ir_graph *g, const rt_exec *x,
                         int li, xp_keep keep, char *err, size_t errlen) {
  const ir_layer *l = &g->layers[li];
  const ir_tensor *it = &g->tensors[l->in_t];
  const int conv = l->kind == IR_CONV;
  const int kk = l->k * l->k, per = conv ? 1 : it->h * it->w;
  const int64_t plane = conv ? xp_padded(p, l->oh, l->ow) : 1;
  p->spatial[l->out_t] = (uint8_t)conv;
  const float *params = rt_exec_view(x, RT_PARAMS);
  const float *w = params + l->w_off, *b = params + l->b_off;
  const uint8_t *m = x->mask;

  /* Where each input unit lives; -1 where it is constant zero. */
  int32_t *in = malloc((size_t)l->cin * sizeof *in);
  int32_t *out = malloc((size_t)l->cout * sizeof *out);
  xp_op *o = op_new(p);
  if (!in || !out || !o) {
    free(in), free(out);
    return rt_fail(err, errlen, "out of memory");
  }
  for (int ci = 0; ci < l->cin; ci++) {
    int32_t s = p->loc[l->in_t][l->in_ch + ci / per];
    int at = ci % per; /* a linear layer's position in the plane */
    if (!conv && p->spatial[l->in_t])
      at = (at / it->w + p->B) * (it->w + 2 * p->B) + at % it->w + p->B;
    in[ci] = s < 0 ? -1 : s + at;
  }
  o->kind = l->kind;
  o->layer = li;
  o->h = l->h, o->w = l->w, o->oh = l->oh, o->ow = l->ow;
  o->k = l->k, o->stride = l->stride, o->pad = l->pad, o->relu = l->relu;
  o->start = malloc(((size_t)l->cout + 1) * sizeof *o->start);
  o->bias = malloc((size_t)l->cout * sizeof *o->bias);
  if (!o->start || !o->bias) {
    free(in), free(out);
    return rt_fail(err, errlen, "out of memory");
  }
  if (conv && !p->spatial[l->in_t]) {
    free(in), free(out);
    return rt_fail(err, errlen, "layer %s: a conv reading a flat tensor cannot be exported",
                l->name);
  }

  /* Pass 1: which outputs stay, and how many entries they take. An output
   * with no surviving weight is the constant act(bias); it goes only when
   * that constant is exactly zero. */
  int64_t n_ent = 0;
  o->start[0] = 0;
  const int after = l->bn == IR_BN_AFTER && l->relu; /* scale, shift after the ReLU */
  float *post = o->post = after ? malloc(2 * (size_t)l->cout * sizeof *post) : NULL;
  if (after && !post) {
    free(in), free(out);
    return rt_fail(err, errlen, "out of memory");
  }
  for (int co = 0; co < l->cout; co++) {
    double scale, shift;
    bn_fold(p, g, l, x, co, &scale, &shift);
    if (after) post[o->n] = (float)scale, post[l->cout + o->n] = (float)shift, scale = 1, shift = 0;
    double bias = (m[l->b_off + co] ? b[co] : 0.0) * scale + shift;
    int64_t active = 0, reach = 0;
    for (int ci = 0; ci < l->cin; ci++) {
      if (in[ci] < 0) continue;
      const int64_t base = ((int64_t)co * l->cin + ci) * kk;
      reach += kk;
      for (int t = 0; t < kk; t++)
        if (m[l->w_off + base + t] && (keep == XP_ACTIVE || w[base + t] != 0.0f)) active++;
    }
    float fb = (float)bias;
    float act = l->relu && fb < 0.0f ? 0.0f : fb; /* the output when constant */
    if (after) act = act * post[o->n] + post[l->cout + o->n];
    if (active == 0 && act == 0.0f) {
      out[co] = -1;
      continue;
    }
    if (!isfinite(fb) || (after && !(isfinite(post[o->n]) && isfinite(post[l->cout + o->n])))) {
      free(in), free(out);
      return rt_fail(err, errlen, "layer %s: output %d has a non-finite bias", l->name, co);
    }
    out[co] = o->n;
    o->bias[o->n] = fb;
    n_ent += keep == XP_DENSE ? reach : active;
    if (n_ent > INT32_MAX) {
      free(in), free(out);
      return rt_fail(err, errlen, "layer %s has more weights than the emitted code can index",
                  l->name);
    }
    o->start[++o->n] = (int32_t)n_ent;
  }
  if (post) memmove(post + o->n, post + l->cout, (size_t)o->n * sizeof *post);
  o->n_ent = n_ent;
  size_t ne = n_ent ? (size_t)n_ent : 1;
  o->src = malloc(ne * sizeof *o->src);
  o->wt = malloc(ne * sizeof *o->wt);
  o->tap = conv ? malloc(ne * sizeof *o->tap) : NULL;
  if (!o->src || !o->wt || (conv && !o->tap)) {
    free(in), free(out);
    return rt_fail(err, errlen, "out of memory");
  }

  /* Pass 2: the entries, in the reference kernels' order (input channel,
   * then tap) so the sums round alike. */
  int64_t e = 0;
  for (int co = 0; co < l->cout; co++) {
    if (out[co] < 0) continue;
    double scale, shift;
    bn_fold(p, g, l, x, co, &scale, &shift);
    if (after) scale = 1; /* applied after the ReLU */
    for (int ci = 0; ci < l->cin; ci++) {
      if (in[ci] < 0) continue;
      const int64_t base = ((int64_t)co * l->cin + ci) * kk;
      for (int t = 0; t < kk; t++) {
        int on = m[l->w_off + base + t] && (keep == XP_ACTIVE || w[base + t] != 0.0f);
        if (!on && keep != XP_DENSE) continue;
        float v = on ? (float)(w[base + t] * scale) : 0.0f;
        if (!isfinite(v)) {
          free(in), free(out);
          return rt_fail(err, errlen, "layer %s has a non-finite weight", l->name);
        }
        o->src[e] = in[ci];
        if (conv) o->tap[e] = (uint16_t)t;
        o->wt[e++] = v;
      }
    }
  }

  int64_t first;
  if (ws_take(p, o->n * plane, &first)) {
    free(in), free(out);
    return rt_fail(err, errlen, "the network's activations exceed 2^31 floats per image");
  }
  o->out = first;
  for (int co = 0; co < l->cout; co++)
    p->loc[l->out_t][l->out_ch + co] =
        out[co] < 0 ? -1 : (int32_t)(first + out[co] * plane);
  free(in), free(out);
  return 0;
}

/* Max-pool and global average pool: one output plane per non-zero input
 * plane; a zero plane pools to zero. */
static int plan_pool(xp_plan *p, const ir_graph *g, int li, char *err,
                     size_t errlen) {
  const ir_layer *l = &g->layers[li];
  xp_op *o = op_new(p);
  if (!o || !(o->src = malloc(((size_t)l->cin + 1) * sizeof *o->src)))
    return rt_fail(err, errlen, "out of memory");
  o->kind = l->kind;
  o->layer = li;
  o->h = l->h, o->w = l->w, o->oh = l->oh, o->ow = l->ow;
  o->k = o->stride = l->k;
  const int64_t plane = o->kind == IR_GAP ? 1 : xp_padded(p, l->oh, l->ow);
  p->spatial[l->out_t] = o->kind == IR_MAXPOOL;
  int32_t *dst = p->loc[l->out_t] + l->out_ch;
  for (int c = 0; c < l->cin; c++) {
    int32_t s = p->loc[l->in_t][l->in_ch + c];
    dst[c] = s < 0 ? -1 : o->n;
    if (s >= 0) o->src[o->n++] = s;
  }
  int64_t first;
  if (ws_take(p, o->n * plane, &first))
    return rt_fail(err, errlen, "the network's activations exceed 2^31 floats per image");
  o->out = first;
  for (int c = 0; c < l->cin; c++)
    if (dst[c] >= 0) dst[c] = (int32_t)(first + dst[c] * plane);
  return 0;
}

int xp_plan_build(xp_plan *p, const ir_graph *g, const rt_exec *x, xp_keep keep,
                      char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  const ir_tensor *in = &g->tensors[g->input_t];
  p->in_c = in->c, p->in_h = in->h, p->in_w = in->w;
  p->classes = g->cfg.classes;
  p->n_tensors = g->n_tensors;
  p->loc = calloc((size_t)g->n_tensors, sizeof *p->loc);
  p->logit_src = malloc((size_t)p->classes * sizeof *p->logit_src);
  p->spatial = calloc((size_t)g->n_tensors, 1);
  p->varies = malloc((size_t)ir_chan_base(g, g->n_tensors) + 1);
  if (!p->loc || !p->logit_src || !p->spatial || !p->varies ||
      ir_varying(g, x->arch, p->varies))
    return rt_fail(err, errlen, "out of memory");
  for (int li = 0; li < g->n_layers; li++)
    if (g->layers[li].kind == IR_CONV && g->layers[li].pad > p->B) p->B = g->layers[li].pad;
  for (int t = 0; t < g->n_tensors; t++) {
    p->loc[t] = malloc((size_t)g->tensors[t].c * sizeof **p->loc);
    if (!p->loc[t]) return rt_fail(err, errlen, "out of memory");
    for (int c = 0; c < g->tensors[t].c; c++) p->loc[t][c] = -1;
  }
  /* The normalised input occupies the start of the workspace. */
  int64_t plane = xp_padded(p, in->h, in->w), off;
  if (ws_take(p, in->c * plane, &off))
    return rt_fail(err, errlen, "the input exceeds 2^31 floats per image");
  for (int c = 0; c < in->c; c++) p->loc[g->input_t][c] = (int32_t)(c * plane);
  p->spatial[g->input_t] = 1;

  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    int rc = 0;
    switch (l->kind) {
    case IR_COPY:
      for (int c = 0; c < l->cin; c++)
        p->loc[l->out_t][l->out_ch + c] = p->loc[l->in_t][l->in_ch + c];
      p->spatial[l->out_t] = p->spatial[l->in_t];
      break;
    case IR_CONV:
    case IR_LINEAR:
      if (x->arch->alive[li]) {
        rc = plan_weighted(p, g, x, li, keep, err, errlen);
      } else if (l->prev_t >= 0) {
        /* A dead layer is its predecessor's output under another name. */
        for (int c = 0; c < l->cout; c++)
          p->loc[l->out_t][l->out_ch + c] = p->loc[l->prev_t][l->prev_ch + c];
        p->spatial[l->out_t] = p->spatial[l->prev_t];
      } else {
        return rt_fail(err, errlen, "layer %s is dead but has nothing to pass through",
                    l->name);
      }
      break;
    case IR_MAXPOOL:
    case IR_GAP:
      rc = plan_pool(p, g, li, err, errlen);
      break;
    }
    if (rc) return rc;
  }
  for (int k = 0; k < p->classes; k++) p->logit_src[k] = p->loc[g->logits_t][k];
  return 0;
}
