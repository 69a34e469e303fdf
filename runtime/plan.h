/* plan.h: which activations the live network needs, and what the dead
 * layers cost: nothing.
 *
 * A channel of a tensor is live when it can hold a value other than 0
 * (the input; an alive layer's output with an active weight or bias, or a
 * batch norm beta that is not 0; what a pooling, copy or dead layer passes
 * on from a live one) and something reads it (an active weight, the
 * logits, what a pooling, copy or dead layer passes on to a reader). A
 * training step needs the live channels only: the others are 0 or read
 * by nothing. (Phase II's dense gradient needs the channels that are
 * either: one that is neither holds 0 and nothing depends on it, so its
 * dense gradient is 0 at every weight that would read or write it.)
 *
 * A channel is worked when it can hold a value other than 0 or something
 * reads it (either, where live is both): a training step computes the
 * worked channels only; each of the others holds 0 in the forward and
 * its gradient is 0 (its batch norm's too), so that skipping it changes
 * nothing but the time (host.c keeps them 0).
 *
 * A dead layer whose output no active weight reads is an alias: its
 * output is its predecessor's, and the one layer after it that reads its
 * whole output (the next stage's reduce, the classifier, a dead layer
 * after it) reads the predecessor's instead. Aliases are planned from the
 * architecture, so a plan is made again at every prepare.
 *
 *   rt_plan *p = rt_plan_new(g);
 *   rt_plan_make(p, arch, mask, params, mom);   // at every prepare
 *   if (p->alias[l] != l) ... layer l's output is layer p->alias[l]'s ...
 *   rt_plan_free(p);
 */
#ifndef ILNAS_RT_PLAN_H
#define ILNAS_RT_PLAN_H

#include <stdint.h>

#include "ir/ir.h"

typedef struct rt_plan {
  const ir_graph *g;
  uint8_t *live;       /* per channel of every tensor (ir_chan_base) */
  uint8_t *work;       /* per channel: worked (can be other than 0, or read) */
  int *alias;          /* per layer: the layer whose output slice holds its
                        * output (itself but for an aliased dead layer) */
  int64_t *in_off;     /* per layer: per-sample offset of what it reads */
  int64_t *prev_off;   /* ... of its pass-through source (-1: none) */
  int64_t *out_off;    /* ... where its output is (an alias: its source's) */
  int64_t live_floats; /* per sample: the live channels of every tensor,
                        * an aliased dead layer's output not counted */
} rt_plan;

/* NULL when out of memory. */
rt_plan *rt_plan_new(const ir_graph *g);
void rt_plan_free(rt_plan *p);

/* The plan for architecture a, its masks (n_params bytes) and the values
 * of the parameters and their momentum (batch norm's beta: NULL counts
 * every beta as not 0). */
void rt_plan_make(rt_plan *p, const ir_arch *a, const uint8_t *mask, const float *params,
                  const float *mom);

/* Who writes a tensor's gradient, for a backward that clears only the
 * tensors that no one overwrites (host.c, cuda/step.c):
 * rt_plan_z_writer: the layer whose backward alone writes the gradient of
 * tensor t, its pre-activation, by assignment (a ReLU layer without batch
 * norm: relu_bwd, or a backend that fuses the ReLU and never writes it; a
 * conv with batch norm: its backward overwrites it), -1 if another layer
 * touches t. rt_plan_sole_pool_writer: the layer whose backward alone
 * writes t's gradient when it is a max pool over all of t (it can
 * overwrite that gradient instead of adding into it), else -1. */
int rt_plan_z_writer(const ir_graph *g, int t);
int rt_plan_sole_pool_writer(const ir_graph *g, int t);

/* The backward's clearing plan from the two, for each tensor but the
 * input: where one of them writes its gradient, assign[writer] is set (a
 * pool's to 1; a pre-activation writer's to its batch norm, so that
 * batch norm's backward overwrites where it would add); else the
 * tensor's per-sample range [begin, end) goes into zero (room for
 * n_tensors), in tensor order, and zt[t] = 1 where zt is given. The
 * number of ranges. */
int rt_plan_grad_clears(const ir_graph *g, uint8_t *assign, int64_t (*zero)[2], uint8_t *zt);

/* Floats per sample of the live activations of architecture a over g,
 * without a plan kept (a checkpoint's report); -1 when out of memory. */
int64_t rt_plan_live_floats(const ir_graph *g, const ir_arch *a);

#endif
