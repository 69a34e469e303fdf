/* xplan.h: a trained network as the plan that its exports are written from.
 *
 * xp_plan_build walks the layers in schedule order and tracks, for every
 * channel of every IR tensor, where its plane lives in a per-image
 * workspace, or that it is constant zero. Copies and dead layers only
 * re-point channels; a weighted layer keeps the output channels that have
 * active weights from non-zero inputs or a non-zero bias after ReLU, and
 * gives each a fresh plane; inference-mode batch norm is folded in. The C
 * and CUDA sources (export.c) and the ONNX graph (onnx.c) are written from
 * the same plan, so they compute the same network.
 *
 *   xp_plan p;
 *   if (xp_plan_build(&p, g, x, 0, err, sizeof err) == 0) { ... p.ops ... }
 *   xp_plan_free(&p);
 */
#ifndef ILNAS_APP_XPLAN_H
#define ILNAS_APP_XPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "runtime/exec.h"

/* An op of the plan is one IR layer that runs, so it carries the layer's
 * ir_kind (ir/ops.def) rather than a kind list of its own: conv, linear,
 * maxpool or gap. Copies and dead layers are no ops here; they only
 * re-point channels in xp_plan_build. The switches over ir_kind (xplan.c,
 * export.c, interop.c) have no default, so an op appended to ops.def
 * fails the build (-Wswitch) until the exports know it. */
typedef struct xp_op {
  ir_kind kind;         /* never IR_COPY */
  int layer;            /* IR layer it comes from */
  int n;                /* output planes (conv, pool, gap) or neurons (linear) */
  int64_t out;          /* workspace offset of the first output plane */
  int h, w, oh, ow;     /* input and output plane sizes */
  int k, stride, pad, relu;
  int32_t *start;       /* conv, linear: n + 1 entry starts */
  int32_t *src;         /* conv: input plane per entry; linear: input float
                           per entry; pool, gap: input plane per output */
  uint16_t *tap;        /* conv: ky * k + kx per entry */
  float *wt;            /* conv, linear: weight per entry (batch norm folded) */
  float *bias;          /* conv, linear: n */
  float *post;          /* batch norm after the ReLU: n scales, then n shifts
                           of the ReLU's output; NULL otherwise */
  int64_t n_ent;        /* entries */
} xp_op;

/* Conv and linear: the ops with tables of entries, weights and biases. */
static inline int xp_has_weights(ir_kind k) { return k == IR_CONV || k == IR_LINEAR; }

typedef struct xp_plan {
  xp_op *ops;
  int n_ops;
  int64_t ws;           /* workspace floats per image */
  int in_c, in_h, in_w, classes;
  int32_t *logit_src;   /* per class: workspace offset, -1 for constant 0 */
  int32_t **loc;        /* per tensor, per channel: plane offset or -1 */
  uint8_t *spatial;     /* per tensor: its planes carry the zero border */
  int n_tensors;
  int B;                /* zero border around every spatial plane */
  uint8_t *varies;      /* per channel of every tensor: ir_varying */
} xp_plan;

/* Spatial planes (the input, conv and max-pool outputs) are stored with a
 * border of B zeros, B the largest conv padding, so the conv loops read
 * the padding instead of testing bounds; it is never written, and the
 * workspace starts zeroed. Unit tensors (average-pool and linear outputs)
 * are plain floats. */
static inline int64_t xp_padded(const xp_plan *p, int h, int w) {
  return (int64_t)(h + 2 * p->B) * (w + 2 * p->B);
}

/* Which weights between live channels become entries. */
typedef enum {
  XP_NONZERO, /* the active ones of non-zero value: the same function, the
                 fewest entries (the C and CUDA exports) */
  XP_ACTIVE,  /* every active one, zeros included: a weight just grown is 0
                 and still part of the architecture (ONNX, and PyTorch's
                 masks, which keep it trainable) */
  XP_DENSE    /* every one, inactive ones as zeros (the C and CUDA --dense) */
} xp_keep;

/* Builds the plan of the network x holds over g, keeping the weights
 * `keep` says. Returns 0, or -1 with a message in err; p is then safe to
 * free. */
int xp_plan_build(xp_plan *p, const ir_graph *g, const rt_exec *x, xp_keep keep, char *err,
                  size_t errlen);
void xp_plan_free(xp_plan *p);

#endif
