/* exec.h: the executor: the architecture that trains, and the backend
 * that runs its steps.
 *
 * An rt_exec owns the architecture (one ir_arch: α and the alive flags,
 * with α expanded to a byte per parameter for the kernels). It changes
 * only through rt_exec_set_unit, rt_exec_set_alive and rt_exec_set_arch,
 * each of which keeps the masks, the parameters and their momentum in
 * step and marks the layers it touched dirty; rt_exec_prepare has the
 * backend rebuild those layers' kernels. The backend (backend.h) owns
 * everything else: parameters, optimizer state, activations, gradients;
 * the exec reads and writes them through host views. The graph is const.
 *
 *   rt_exec *x = rt_exec_new(g, 128, 2, "cpu", err, sizeof err); // g->arch
 *   rt_exec_init_params(x, seed);
 *   rt_exec_set_driver(x, fwd, bwd);        // ilnasc's driver; NULL: schedule
 *   rt_exec_set_input(x, batch, n);         // a pass begins
 *   rt_exec_forward(x);
 *   double loss = rt_exec_loss(x, labels, 1, &correct);
 *   rt_exec_backward(x);
 *   if (rt_exec_status(x, err, sizeof err)) ... a device failed ...
 *   rt_exec_sgd(x, lr, momentum, decay);
 *   loss = rt_exec_train_step(x, labels, lr, momentum, decay, &correct); // the four in one
 *   rt_exec_set_unit(x, start, len, 1, NULL);   // growth: α, mask, value
 *   rt_exec_prepare(x, err, sizeof err);        // kernels of dirty layers
 *   rt_exec_free(x);
 */
#ifndef ILNAS_RT_EXEC_H
#define ILNAS_RT_EXEC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "runtime/backend.h"
#include "runtime/comm.h"

typedef struct rt_exec {
  const ir_graph *g;    /* not owned */
  const ir_arch *arch;  /* owned; see rt_exec_set_unit */
  const uint8_t *mask;  /* n_params: α expanded to bytes, for the kernels */
  int cap;              /* batch capacity */
  int threads;          /* the backend's worker threads */
  rt_backend *backend;  /* owned: runs the steps, holds the state */
  rt_comm *comm;        /* not owned: the ranks its steps span (rt_exec_set_comm) */
} rt_exec;

/* backend: "ref", "cpu", "blas", "cuda" or "auto" (rt_backend_new); NULL
 * means "ref". The exec starts with the graph's architecture (g->arch),
 * every layer prepared. */
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
 * make it, its batch norm the identity on the statistics of its output in
 * the last forward (where it passed its input through): gamma sqrt(var +
 * eps), beta and the running mean the mean, the running var the var; before
 * any forward, gamma 1, beta 0, mean 0, var 1. With batch norm after the
 * ReLU, the bias of each channel whose input went below 0 comes on at
 * -min, and the running mean is the mean plus it. Or it dies: every parameter
 * of it inactive, a pass-through again. Marks it dirty. */
void rt_exec_set_alive(rt_exec *x, int li, int alive);

/* The whole architecture at once (a resumed run, a test): the masks follow
 * it, the parameters it turns off and their momentum become 0, every
 * layer dirty, and the kernels are prepared. The other inactive
 * parameters hold 0 already (rt_exec_set_unit keeps them so; a caller
 * that writes whole arrays writes 0 there), so that the missing
 * parameters of a wide template are never touched. */
int rt_exec_set_arch(rt_exec *x, const ir_arch *a, char *err, size_t errlen);

/* Has the backend (re)build the kernels of the dirty layers for their
 * current masks; patterns seen before come from its caches. */
int rt_exec_prepare(rt_exec *x, char *err, size_t errlen);

/* PyTorch-style initialisation of the active weights: Kaiming-uniform
 * (torch.nn.init.kaiming_uniform_, ReLU gain) for ReLU layers, uniform in
 * ±1/sqrt(fan-in) for the classifier and all biases (PyTorch's default),
 * the fan-in counted over a neuron's active inputs;
 * batch norm gamma 1, beta 0, running mean 0, var 1; momentum 0. */
void rt_exec_init_params(rt_exec *x, uint64_t seed);

/* Host views of the backend's state (backend.h): to read until the next
 * call on x, or to write between steps (not RT_GRADS). */
const float *rt_exec_view(const rt_exec *x, rt_state which);
float *rt_exec_edit(rt_exec *x, rt_state which);
/* rt_exec_edit(x, RT_PARAMS): the parameters, their values from now on
 * new ones. */
float *rt_exec_params_write(rt_exec *x);

/* The values of RT_PARAMS or RT_MOMENTUM at the active parameters (α
 * set), in index order, into out (ir_count_active_bits of them): what a
 * checkpoint stores. The live layout reads them where it keeps them, and
 * nothing of the template's size is touched. */
void rt_exec_active_values(const rt_exec *x, rt_state which, float *out);

/* The graph driver: the forward and backward functions ilnasc emitted,
 * or NULL (the default) to interpret the graph's schedule. */
void rt_exec_set_driver(rt_exec *x, rt_graph_fn fwd, rt_graph_fn bwd);

/* A pass: a packed batch [n][c][h][w] (n <= cap), the forward, the loss
 * (with the logits' gradient when grad is set; its mean returned, the
 * correct predictions in *correct unless NULL), the backward. A failure
 * of the backend is kept for rt_exec_status; the results are then void. */
void rt_exec_set_input(rt_exec *x, const float *batch, int n);
/* The training set of passes begun from draws (rt_stream_next_draws): d
 * the caller's for as long as the exec uses it (NULL: none), nm copied.
 * The backend keeps the set where it can (the device step: a pass then
 * uploads its draws alone, and the loss takes the drawn labels there);
 * elsewhere the exec makes each batch's images. Returns 1 when the
 * backend keeps it, 0 when the exec makes the images, -1 when out of
 * memory (err). */
int rt_exec_set_dataset(rt_exec *x, const rt_dataset *d, const rt_norm *nm, int crop, char *err,
                        size_t errlen);
/* A pass begins from n draws of that set. */
void rt_exec_set_draws(rt_exec *x, const rt_draw *dr, int n);
void rt_exec_forward(rt_exec *x);
double rt_exec_loss(rt_exec *x, const ir_label *labels, int grad, int *correct);
void rt_exec_backward(rt_exec *x);
/* A training step on the pass begun: forward, the loss with its gradient
 * (returned; *correct the hits), backward and the SGD step, as the four
 * calls make it, in one operation of the backend (the device step: one
 * graph launch). */
double rt_exec_train_step(rt_exec *x, const ir_label *labels, float lr, float momentum, float decay,
                          int *correct);
/* The ranks of a data-parallel run (comm.h; NULL, the default: this
 * process alone). With more than one, every rank's pass holds its part of
 * the batch (rt_comm_part), and:
 * - rt_exec_train_step sums the gradients over the ranks, each rank's
 *   weighted by its images, before the SGD step, and returns the whole
 *   batch's mean loss and hits: the step of one process on the whole
 *   batch, but that batch norm normalises each part on its own statistics
 *   (as PyTorch's DistributedDataParallel does);
 * - rt_exec_p2_grad takes its rank's part of each batch and sums the slot
 *   likewise, so that every rank ranks the same gradients.
 * The sums leave the same bits on every rank (comm.h), so the ranks'
 * parameters and α decisions stay the same; rt_exec_sync checks it. */
void rt_exec_set_comm(rt_exec *x, rt_comm *c);
/* rt_exec_train_step's sum, for a caller that makes the step itself (a
 * run of several tasks): after the backward, with its pass's mean *loss
 * and *correct hits on this rank's part, the gradients of the active
 * parameters become the ranks' sum weighted by their images, *loss and
 * *correct the whole batch's, and *images (unless NULL) its images.
 * Without ranks only *images is set. 0, or -1 (kept for rt_exec_status)
 * when the backend failed or cannot take the gradients. */
int rt_exec_sum_ranks(rt_exec *x, double *loss, int *correct, int *images);
/* The ranks brought in step, after phase I (batch norm's running
 * statistics differ) and after growth (a layer that came alive took them
 * from its rank's last pass): α and the alive flags must be the same on
 * every rank (-1, "the ranks' architectures differ", when not); the
 * running statistics become the ranks' mean; the parameters and their
 * momentum, where they differ (a hash of the active values says), rank
 * 0's. 0 without ranks. */
int rt_exec_sync(rt_exec *x, char *err, size_t errlen);
/* Interprets schedule calls (the same the emitted driver makes). */
void rt_exec_run(rt_exec *x, const ir_call *calls, int n);
/* Batch norm on batch statistics (1, the default) or running ones (0). */
void rt_exec_set_training(rt_exec *x, int on);

/* 0, or -1 with the reason when the backend failed (a device error)
 * since the last call: the passes since then computed nothing to trust.
 * The train loop asks after every step. */
int rt_exec_status(rt_exec *x, char *err, size_t errlen);

/* One SGD step on the active parameters. */
void rt_exec_sgd(rt_exec *x, float lr, float momentum, float decay);
/* Multi-task: one SGD step in each of the n tasks' executors (after each
 * one's backward), where the gradient of a shared parameter (idx[0..m),
 * active in every task with the same value and momentum) is the sum of
 * the tasks' gradients, so that it stays the same in every task; sum
 * holds m floats. A failure (a backend that cannot take gradients) is
 * kept in the first exec's status. */
void rt_exec_sgd_shared(rt_exec *const *xs, int n, const int64_t *idx, int64_t m, float *sum,
                        float lr, float momentum, float decay);

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
int rt_exec_dense_grad(rt_exec *x, const float *in, const ir_label *labels, int n, float *out,
                       double *loss, char *err, size_t errlen);
rt_backend_stats rt_exec_get_stats(const rt_exec *x);

/* Phase II's gradients, kept where the backend keeps its state (backend.h:
 * on the device for the device step), and what the search does with
 * them there. Slot 0 holds g, the dense gradient at W; slot 1 holds g*,
 * the one at W*. Each returns 0 (rt_exec_p2_top: how many units), or -1
 * with a message.
 *   rt_exec_p2_grad: slot becomes the mean over count batches of n images
 *     (packed one after another; labels likewise) of the dense gradient
 *     (rt_exec_dense_grad's, with batch norm's affine parameters of alive
 *     layers), and *loss their mean loss;
 *   rt_exec_p2_top: the k best missing units by the norm of g over each
 *     (ties to the lowest start; none of norm 0), best first, into out;
 *   rt_exec_p2_score: each unit's score becomes the norm of g + g*;
 *   rt_exec_p2_hyper: W* = W - lr g on the active parameters, W kept;
 *   rt_exec_p2_restore: W back;
 *   rt_exec_p2_slot: a slot, to read (tests). */
int rt_exec_p2_grad(rt_exec *x, int slot, const float *images, const ir_label *labels, int count, int n,
                    double *loss, char *err, size_t errlen);
int64_t rt_exec_p2_top(rt_exec *x, int64_t k, rt_unit *out, char *err, size_t errlen);
int rt_exec_p2_score(rt_exec *x, rt_unit *u, int64_t n, char *err, size_t errlen);
int rt_exec_p2_hyper(rt_exec *x, float lr, char *err, size_t errlen);
int rt_exec_p2_restore(rt_exec *x, char *err, size_t errlen);
const float *rt_exec_p2_slot(rt_exec *x, int slot);

/* Starts (or restarts) timing every graph op, the loss and the SGD step;
 * -1 when out of memory. The report prints milliseconds per step for each
 * layer's forward and backward and their share of the timed total. */
int rt_exec_profile(rt_exec *x);
void rt_exec_profile_pause(rt_exec *x, int pause); /* 1: stop counting, 0: go on */
void rt_exec_profile_report(const rt_exec *x, FILE *f, long steps);

/* The activations' cost per sample (backend.h), as of the last prepare. */
rt_backend_mem rt_exec_memory(const rt_exec *x);
/* The process's peak resident set in bytes (getrusage), or -1. */
int64_t rt_peak_rss(void);
/* "1.9 GB", "262 kB": bytes as a person reads them, into buf. */
const char *rt_bytes_text(int64_t bytes, char *buf, size_t len);

#endif
