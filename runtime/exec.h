/* exec.h: one compiled graph's execution state and its graph ops.
 *
 * An rt_exec owns the architecture that trains (α, alive layers: one
 * ir_arch, changed only through rt_exec_set_unit, rt_exec_set_alive and
 * rt_exec_set_arch, each of which keeps the masks, the parameters and
 * their momentum in step and marks the layers it touched dirty), and the
 * memory of a graph for a batch capacity, planned once: the activation
 * arena and its gradient (sample-major: sample i's tensors sit at
 * i * act_size), parameters, their gradients and momentum, the
 * per-parameter masks expanded from α, and batch norm statistics. Nothing
 * is allocated inside a training step. The graph itself is const.
 *
 * The graph driver (emitted by ilnasc, or interpreted from ir_schedule for
 * tests) calls the rt_op_* entry points with the layer index and per-sample
 * arena offsets baked in:
 *
 *   rt_exec *x = rt_exec_new(g, 128, 2, "cpu", err, sizeof err); // g->arch
 *   rt_exec_init_params(x, seed);
 *   rt_exec_set_input(x, batch, n);   // a pass begins: parameters fixed to its end
 *   fwd(x);                       // il_graph_forward, or rt_exec_run(x, calls, n)
 *   double loss = rt_exec_loss(x, labels, &correct);
 *   bwd(x);  rt_exec_sgd(x, lr, momentum, decay);
 *   rt_exec_set_unit(x, start, len, 1, NULL);   // growth: α, mask, value
 *   rt_exec_prepare(x, err, sizeof err);        // kernels of dirty layers
 *   rt_exec_free(x);
 */
#ifndef ILNAS_RT_EXEC_H
#define ILNAS_RT_EXEC_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "ir/ir.h"
#include "runtime/kernels.h"

typedef struct rt_exec {
  const ir_graph *g; /* not owned */
  const ir_arch *arch; /* owned; see rt_exec_set_unit */
  int cap;          /* batch capacity the arena was planned for */
  int n;            /* current batch */
  int training;     /* batch norm uses batch statistics when set */
  float *act;       /* cap * act_size */
  float *dact;      /* gradient of act, same layout */
  /* n_params each. The parameters are read-only here: whoever changes them
   * takes them from rt_exec_params_write, which names their new values
   * for the backends (that may keep copies derived from them). */
  const float *params;
  float *grads, *mom;
  const uint8_t *mask; /* n_params: α expanded to bytes, for the backends */
  float *stats;     /* n_stats: batch norm running mean, var */
  float *bn_save;   /* n_stats: batch mean, 1/std of the last forward */
  float *scratch;   /* cap * largest layer output: batch norm's gradient */
  float *logits;    /* cap * classes, packed */
  int threads;      /* worker threads for batch-split ops */
  rt_kernels *backend; /* computes conv and linear layers */
  rt_kernels *live;    /* follows the masks as they are at each call, for
                        * phase II, which flips them between passes: the
                        * reference kernels under "ref", else dense
                        * OpenBLAS (blas.c) */
  int use_live;        /* run on live instead of backend (phase II) */
} rt_exec;

typedef void (*rt_graph_fn)(void *x);

/* backend: "ref", "cpu", "blas", "cuda" (see rt_kernels_new); NULL means
 * "ref". The exec starts with the graph's architecture (g->arch), every
 * layer prepared. */
rt_exec *rt_exec_new(const ir_graph *g, int cap, int threads, const char *backend,
                     char *err, size_t errlen);
void rt_exec_free(rt_exec *x);

/* The one way the architecture changes, a unit at a time: parameters
 * [start, start + len) of one layer become active (on: those inactive
 * take values[k], or 0 when values is NULL; those already active keep
 * theirs) or inactive (value 0). Either way the momentum of those that
 * change is 0, and the layer is marked dirty. Returns how many changed. */
int64_t rt_exec_set_unit(rt_exec *x, int64_t start, int64_t len, int on,
                         const float *values);

/* Layer li (one that can die) comes alive, as what its active parameters
 * make it, its batch norm the identity (gamma 1, beta 0, running mean 0,
 * var 1); or dies: every parameter of it inactive, a pass-through again.
 * Marks it dirty. */
void rt_exec_set_alive(rt_exec *x, int li, int alive);

/* The whole architecture at once (a resumed run, a test): the masks follow
 * it, inactive parameters and their momentum become 0, every layer dirty,
 * and the kernels are prepared. */
int rt_exec_set_arch(rt_exec *x, const ir_arch *a, char *err, size_t errlen);

/* Has the backends (re)build the kernels of the dirty layers for their
 * current masks; patterns seen before come from their caches. */
int rt_exec_prepare(rt_exec *x, char *err, size_t errlen);

/* PyTorch-style initialisation of the active weights: Kaiming-uniform
 * (torch.nn.init.kaiming_uniform_, ReLU gain) for ReLU layers, uniform in
 * ±1/sqrt(fan-in) for the classifier and all biases (PyTorch's default),
 * the fan-in counted over a neuron's active inputs;
 * batch norm gamma 1, beta 0, running mean 0, var 1; momentum 0. */
void rt_exec_init_params(rt_exec *x, uint64_t seed);

/* The gradients of the last backward, one per parameter in the layout of
 * params: grads itself, but for the layers whose weight gradients the
 * backend wrote packed (rt_kernels.wgrad_index), expanded (0 at their
 * inactive weights). out holds n_params floats. */
void rt_exec_grads_dense(const rt_exec *x, float *out);

/* The parameters, for writing: their values from now on are new ones
 * (a new rt_linear_shape.wgen), so that no backend goes on with copies it
 * made of the old (packed weights). Every change of the parameters goes
 * through a pointer from here (rt_exec_sgd, rt_exec_init_params and
 * rt_exec_sync_mask see to their own), taken for each change rather than
 * kept from an earlier one, and outside a pass (never between
 * rt_exec_set_input and the end of its backward). */
float *rt_exec_params_write(rt_exec *x);

/* Copies a packed batch [n][c][h][w] into the input tensor. A pass (the
 * forward, and the backward after it) begins here; the parameters stay
 * as they are until its backward ends. */
void rt_exec_set_input(rt_exec *x, const float *batch, int n);

/* Softmax cross-entropy on the logits; leaves the logits' gradient in the
 * gradient arena (which it clears first) when `grad` is set. Returns the
 * mean loss. */
double rt_exec_loss(rt_exec *x, const uint8_t *labels, int grad, int *correct);

/* 0, or -1 with the reason when a kernel failed (a device error) since
 * the last call: the passes since then computed nothing to trust. The
 * train loop asks after every step. */
int rt_exec_status(rt_exec *x, char *err, size_t errlen);

/* One SGD step on the active parameters. */
void rt_exec_sgd(rt_exec *x, float lr, float momentum, float decay);

/* Starts (or restarts) timing every graph op, the loss and the SGD step;
 * -1 when out of memory. The report prints milliseconds per step for each
 * layer's forward and backward and their share of the timed total. */
int rt_exec_profile(rt_exec *x);
void rt_exec_profile_pause(rt_exec *x, int pause); /* 1: stop counting, 0: go on */
void rt_exec_profile_report(const rt_exec *x, FILE *f, long steps);

/* Interprets a schedule (the same calls the emitted driver makes). */
void rt_exec_run(rt_exec *x, const ir_call *calls, int n);

/* The graph driver: the forward and backward functions ilnasc emitted,
 * or NULL (the default) to interpret the graph's schedule. */
void rt_exec_set_driver(rt_exec *x, rt_graph_fn fwd, rt_graph_fn bwd);
/* One pass of the graph, by the driver; the backward follows
 * rt_exec_loss with its gradient. */
void rt_exec_forward(rt_exec *x);
void rt_exec_backward(rt_exec *x);

/* Phase II (on: 1) flips masks between passes: the passes then run on
 * kernels that follow the masks as they are at each call, where the
 * training backend's compiled ones would have to be rebuilt. */
void rt_exec_phase2(rt_exec *x, int on);

/* Phase II's dense gradient on one batch (n images, normalised, packed):
 * dL/dW at every parameter, the missing ones included (at their current
 * value: zero, or the identity for a dead layer), added into out
 * (n_params floats; batch norm's stay 0), and the batch's mean loss in
 * *loss. The training backend computes each layer's where it can (cuBLAS
 * on the GPU), else the host does (OpenBLAS on the exec's threads). 0, or
 * -1 with a message. */
int rt_exec_dense_grad(rt_exec *x, const float *in, const uint8_t *labels, int n, float *out,
                       double *loss, char *err, size_t errlen);

typedef struct rt_exec_stats {
  long dense_backend; /* layer dense gradients the training backend computed */
  long dense_host;    /* ... that the host computed */
} rt_exec_stats;
rt_exec_stats rt_exec_get_stats(const rt_exec *x);

/* Graph ops: x is the rt_exec, l the layer index, the rest per-sample arena
 * offsets (-1 when the layer has no such tensor). */
#define RT_OP_ARGS void *x, int64_t l, int64_t in, int64_t z, int64_t out, int64_t prev
#define IR_OP(K, name, what) void rt_op_##name##_fwd(RT_OP_ARGS); void rt_op_##name##_bwd(RT_OP_ARGS);
#include "ir/ops.def"
#undef IR_OP

#endif
