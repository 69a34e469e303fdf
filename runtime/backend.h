/* backend.h: a backend owns a training step, the way ggml's backends run a
 * whole graph.
 *
 * Its memory is its own: the parameters, the optimizer state, batch
 * norm's statistics, the activations and their gradients. It uploads a
 * batch, runs the forward and the backward (the graph driver's calls, or
 * the schedule interpreted), the loss, the SGD step, and phase II's dense
 * gradient; the caller reads back the loss and the metrics, and reads or
 * writes the state through host views (checkpoints, export, growth).
 * Kernel layouts (packed weights, index tables) never appear here.
 *
 * The executor (exec.h) owns the architecture and drives one backend; it
 * tells the backend which layers' masks changed (prepare). A backend is a
 * const table of operations (rt_backend_i) and an instance that points at
 * it; every operation returns 0, or -1 with the reason in the instance's
 * error. The steps are the host step (host.c), over a kernel set
 * (kernels.h: ref, cpu, blas, cuda), and the device-resident step
 * (cuda/step.c); the live layout (packed.c) runs either on a compact
 * graph of the live network's channels.
 *
 *   rt_backend *b = rt_backend_new("cpu", g, 128, 2, err, sizeof err);
 *   b->i->prepare(b, dirty, mask);        // every layer, the first time
 *   b->i->upload(b, images, n);
 *   b->i->forward(b);
 *   b->i->loss(b, labels, 1, &loss, &correct);
 *   b->i->backward(b);
 *   b->i->sgd(b, lr, momentum, decay);
 *   b->i->free(b);
 */
#ifndef ILNAS_RT_BACKEND_H
#define ILNAS_RT_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "runtime/data.h"

typedef struct rt_backend rt_backend;
typedef struct rt_kernels rt_kernels;

/* The graph driver: ilnasc's emitted forward or backward, called with the
 * backend whose graph ops (rt_op_*) it calls. */
typedef void (*rt_graph_fn)(void *x);

/* The state a caller reads or writes: n_params floats each but stats
 * (n_stats) and logits (the last forward's, [n][classes], to read). */
typedef enum { RT_PARAMS, RT_MOMENTUM, RT_STATS, RT_GRADS, RT_LOGITS } rt_state;

/* A unit of phase II's growth (search.h): one weight or bias, or at kernel
 * granularity one whole (c_out, c_in) kernel or one bias, of a weighted
 * layer. */
typedef struct rt_unit {
  int64_t start; /* first parameter */
  int32_t len;   /* parameters in the unit */
  int32_t layer;
  float score;   /* the L2 norm of a gradient over the unit */
} rt_unit;

/* A run of parameters that a new step takes from the one it replaces:
 * its [to, to + len) are the old one's [from, from + len). */
typedef struct rt_run {
  int64_t to, from, len;
} rt_run;

/* What take_state takes: bits. */
enum { RT_TAKE_PARAMS = 1, RT_TAKE_MOMENTUM = 2, RT_TAKE_SLOT0 = 4, RT_TAKE_SLOT1 = 8 };

typedef struct rt_backend_stats {
  long dense_backend; /* phase II's layer gradients its kernels computed */
  long dense_host;    /* ... that the host computed */
} rt_backend_stats;

/* What the activations cost, per sample. */
typedef struct rt_backend_mem {
  int64_t arena; /* bytes of the activation arena (their gradients' as much again) */
  int64_t live;  /* bytes of the live network's activations (plan.h) */
} rt_backend_mem;

typedef struct rt_backend_i {
  const char *name;
  void (*free)(rt_backend *b);

  /* Kernels for the current masks (n_params bytes, α expanded) of the
   * weighted layers marked in dirty (n_layers bytes); the first call
   * marks them all. varies: which channels can vary with the input
   * (ir_varying), the executor's, valid until the next prepare; batch
   * norm maps the others, constants, to beta in inference as it does in
   * training. */
  int (*prepare)(rt_backend *b, const uint8_t *dirty, const uint8_t *mask,
                 const uint8_t *varies);
  /* The driver's functions, or NULL (the default): the schedule. */
  void (*set_driver)(rt_backend *b, rt_graph_fn fwd, rt_graph_fn bwd);

  /* A pass begins: n images (normalised, packed [n][c][h][w]); the
   * parameters stay as they are until its backward ends. */
  int (*upload)(rt_backend *b, const float *images, int n);
  /* Optional (NULL: batches come as images): the training set kept by the
   * backend, d's images and labels as rt_data_make reads them, normalised
   * by nm with crop's padding; d and nm are the caller's until the next
   * call or free. Then a pass may begin from draws (upload_draws), the
   * backend making the images itself; the loss's labels after it must be
   * the drawn images' (the backend may use its own copy). -1 with the
   * reason when it cannot keep the set (too large): the caller makes the
   * images instead. */
  int (*set_dataset)(rt_backend *b, const rt_dataset *d, const rt_norm *nm, int crop);
  /* Optional (NULL: the caller gives the set again): b, a new step of the
   * same kind and input that replaces `from` (packed.h), takes the set
   * from keeps, which then keeps none. 0, or -1 (from keeps it). */
  int (*take_dataset)(rt_backend *b, rt_backend *from);
  /* b, a new step of the same kind that replaces `from` (packed.h), takes what
   * `what` names (RT_TAKE_*: the parameters, their momentum, phase II's
   * slots), run by run (n runs), where both keep them (on the device:
   * device to device); what no run covers stays 0. */
  int (*take_state)(rt_backend *b, rt_backend *from, const rt_run *runs, int64_t n, unsigned what);
  int (*upload_draws)(rt_backend *b, const rt_draw *dr, int n);
  int (*forward)(rt_backend *b);
  /* Softmax cross-entropy of the last forward, its mean in *loss and the
   * correct predictions in *correct (NULL: not wanted); with grad, the
   * logits' gradient for the backward. */
  int (*loss)(rt_backend *b, const ir_label *labels, int grad, double *loss, int *correct);
  int (*backward)(rt_backend *b);
  /* A training step on the pass begun, as forward, loss (with its
   * gradient), backward and sgd make it, in one operation: the host step
   * calls the four, the device step launches one CUDA graph. */
  int (*train_step)(rt_backend *b, const ir_label *labels, float lr, float momentum, float decay,
                    double *loss, int *correct);
  /* Calls of a schedule, interpreted (tests compare them with a driver). */
  int (*run)(rt_backend *b, const ir_call *calls, int n);
  /* One SGD step with momentum and weight decay on the active parameters. */
  int (*sgd)(rt_backend *b, float lr, float momentum, float decay);
  /* Batch norm on batch statistics (1, training) or running ones (0). */
  void (*set_training)(rt_backend *b, int on);

  /* Host views of the state. view: to read, until the next operation;
   * RT_GRADS is the last backward's, dense, or as an edit since left it.
   * edit: to write, between steps; the values are taken as new. RT_GRADS
   * is edited between a backward and the sgd, with no other operation
   * between (views and edits of it may be): the gradients that sgd
   * applies (the ranks' sum, the tasks' sum of a multi-task run). */
  const float *(*view)(rt_backend *b, rt_state which);
  float *(*edit)(rt_backend *b, rt_state which);
  /* Values (NULL: zeros) into
   * parameters [start, start + len) of RT_PARAMS or RT_MOMENTUM, taken
   * as an edit of them would be, without a view of the whole array (the
   * device step copies those floats alone). */
  int (*set_range)(rt_backend *b, rt_state which, int64_t start, int64_t len, const float *values);

  /* Phase II. phase2(1): masks flip between passes, which then run on
   * kernels that follow them as they are. dense_grad: on one batch, the
   * loss's gradient at every weight and bias, the missing ones included,
   * added into out (n_params floats), the batch's mean loss in *loss. */
  void (*phase2)(rt_backend *b, int on);
  int (*dense_grad)(rt_backend *b, const float *images, const ir_label *labels, int n, float *out,
                    double *loss);
  rt_backend_stats (*stats)(const rt_backend *b);

  /* Phase II's gradients, kept where the state is (p2.h: on the host; the
   * device step: on the device), so that ranking the missing units and
   * the hyper step read no gradient back. Two slots: 0, g at W; 1, g* at
   * W*. p2_grad: slot becomes the mean over `count` batches (n images
   * each, one after another; labels likewise) of the dense gradient at
   * every weight and bias (dense_grad's) and at batch norm's affine
   * parameters of alive layers (the backward's), the sum taken batch by
   * batch then scaled by 1/count; their mean loss in *loss. p2_top: the
   * k missing units (α clear) with the largest norm of g, best first,
   * ties to the lowest start; none of norm 0; *got how many (<= k).
   * p2_score: u[i].score becomes the norm of g + g* over unit i. p2_hyper:
   * W* = W - lr g on the active parameters (the masks as they are), W
   * kept until p2_restore puts it back. p2_slot: a host view of a slot
   * (n_params floats), to read, or with write to write (taken as new). */
  int (*p2_grad)(rt_backend *b, int slot, const float *images, const ir_label *labels, int count,
                 int n, double *loss);
  int (*p2_top)(rt_backend *b, int64_t k, rt_unit *out, int64_t *got);
  int (*p2_score)(rt_backend *b, rt_unit *u, int64_t n);
  int (*p2_hyper)(rt_backend *b, float lr);
  int (*p2_restore)(rt_backend *b);
  float *(*p2_slot)(rt_backend *b, int slot, int write);

  /* Timing of every graph op, the loss and the SGD step (--profile). */
  int (*profile)(rt_backend *b);
  void (*profile_pause)(rt_backend *b, int pause);
  /* Optional (NULL: a new step's profile starts at 0): b, profiling,
   * carries on the profile of `from`, a step of the same kind over a graph
   * with the same layers that b replaces (packed.h). */
  void (*profile_take)(rt_backend *b, rt_backend *from);
  void (*profile_report)(const rt_backend *b, FILE *f, long steps);

  /* Per output channel of layer l, the mean, the (biased) variance and
   * (unless min is NULL) the least value of its output over the last
   * forward's batch and pixels; -1 when no forward has run. A layer that
   * comes alive takes its batch norm from them (rt_exec_set_alive). */
  int (*channel_stats)(rt_backend *b, int l, double *mean, double *var, double *min);

  /* The activations' cost per sample, as of the last prepare. */
  rt_backend_mem (*memory)(const rt_backend *b);

  /* The kernel set it runs on, or NULL (tests and benchmarks look inside). */
  rt_kernels *(*kernels)(rt_backend *b);
} rt_backend_i;

struct rt_backend {
  const rt_backend_i *i;
  const ir_graph *g;
  const ir_arch *arch; /* the executor's: which layers are alive */
  int cap;             /* batch capacity */
  int threads;         /* worker threads it uses */
  char error[512];     /* why the last operation returned -1 */
};

/* A backend of kind `name` ("ref", "cpu", "blas", "cuda"; "auto"
 * resolves, see rt_backend_resolve) for batches of up to cap images on
 * `threads` threads, reading α and the alive flags from arch. Its
 * activations follow the live network (packed.h: the live layout); with
 * "/bounds" after the kind ("cpu/bounds") they are laid out at the
 * template's bounds, as the step itself is (tests compare the two). NULL
 * with a message when it cannot start here. */
rt_backend *rt_backend_new(const char *name, const ir_graph *g, const ir_arch *arch, int cap,
                           int threads, char *err, size_t errlen);

/* The step itself over graph g, at g's bounds: the host step over the
 * kernel set `name` ("ref", "cpu", "blas", "cuda-host"), or the device
 * step ("cuda", cuda/step.h). */
rt_backend *rt_step_new(const char *name, const ir_graph *g, const ir_arch *arch, int cap,
                        int threads, char *err, size_t errlen);

/* The backend a name stands for: "auto" is "cuda" where a GPU and its
 * driver are present, else "cpu", and `why` says which and why; any other
 * name is itself, and `why` is left empty. */
const char *rt_backend_resolve(const char *name, char *why, size_t len);

#endif
