/* search.h: phase II, growing the architecture with the weights fixed.
 *
 * The search decides every change to α after the seed; the executor
 * applies each one (rt_exec_set_unit, rt_exec_set_alive), so the masks,
 * values and momentum stay in step. It scores the missing parameters by
 * their loss gradient at zero (rt_exec_dense_grad: one dense GEMM per
 * layer, on the backend that trains), AddCandidates (the n largest |g|
 * join α at zero to form α*), one SGD step on every weight of α* ⊙ W to get
 * W* and g* = ∇L(α* ⊙ W*) (W comes back afterwards), UpdateArch (keep the m
 * best by |g + g*|; they join at zero, like the rest, so an expansion
 * never changes the network's output),
 * and the three ways a network grows:
 *
 *   - a new connection: a missing weight between live nodes;
 *   - a new node: placeholders are channels (neurons) with incoming weights
 *     and no outgoing ones, so they leave the output unchanged; one becomes
 *     a node when it gains an outgoing connection, and the pool is refilled;
 *   - a new layer: a dead layer passes its input through; a candidate in it
 *     brings it alive initialised to the identity (centre tap c -> c), which
 *     after a ReLU changes nothing.
 *
 * The random baseline grows the same number of parameters at the same
 * moments, uniformly among the missing ones; the fixed baseline grows once,
 * at random, to the budget, before training.
 *
 *   srch_state s; srch_init(&s, g, FE_SEARCH_ILNAS, seed);
 *   srch_refill(&s, x);                        // placeholders, at the start
 *   srch_event ev;
 *   int rc = srch_expand(&s, x, &batches, &ev); // 0: ev.added; -2: s.err
 *   rt_exec_prepare(x, err, sizeof err);       // kernels of the grown layers
 *   srch_free(&s);
 */
#ifndef ILNAS_SRCH_H
#define ILNAS_SRCH_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "base/rng.h"

/* A candidate: one weight or bias (weight granularity), or one whole
 * (c_out, c_in) kernel or bias (kernel granularity); its score is |g|,
 * then |g + g*| (the L2 norm over a kernel). */
typedef rt_unit srch_unit;

/* The batches phase II looks at: inputs already normalised, packed. */
typedef struct srch_batches {
  int count;            /* batches */
  int n;                /* images per batch */
  const float *x;       /* count * n * (c*h*w) */
  const ir_label *y;    /* count * n */
} srch_batches;

/* When phase II runs. After `done` epochs of `epochs`, on a beat (done a
 * multiple of `every`) before the frozen last epochs (done < epochs -
 * freeze). With flat F > 0 a beat expands only when the epoch's training
 * loss fell by less than F relative to the epoch before ("grow when
 * training flattens, looking every `every` epochs"); under a plan the last
 * beat expands regardless, so that the budget is reached. */
typedef struct srch_schedule {
  int epochs;  /* the run's */
  int every;   /* grow every N epochs */
  int freeze;  /* freeze last N epochs */
  double flat; /* 0: off */
  int plan;    /* m from the budget left and the beats left */
} srch_schedule;

/* The model's schedule for a run of `epochs` epochs; freeze < 0: the
 * model's 'freeze last'. */
srch_schedule srch_schedule_of(const fe_model *m, int epochs, int freeze);
/* Whether phase II runs after `done` epochs (prev_loss <= 0: no epoch
 * before, so not flat). */
int srch_due(const srch_schedule *s, int done, double prev_loss, double loss);
/* The beats from `done` on (itself included) before the frozen epochs:
 * the expansions a plan spreads the rest of the budget over. */
int srch_beats_left(const srch_schedule *s, int done);

typedef struct srch_state {
  const ir_graph *g;    /* not owned */
  fe_search method;
  double alr;           /* growth per expansion relative to the active size */
  float lr;             /* step size of the hyper step (the caller's lr) */
  int plan_left;        /* plan: expansions left, this one included
                         * (srch_beats_left); 0: m from Alr (the caller's) */
  int expansions;
  int64_t budget;       /* the most active parameters of the architecture it
                         * grows (the model's budget; a task's: multi-task) */
  rt_rng rng;
  int64_t *per_layer;   /* [n_layers]: parameters added by the last expansion */
  char err[256];        /* why the last call returned -2 */
} srch_state;

typedef struct srch_event {
  int64_t added;        /* parameters that became active */
  int64_t *per_layer;   /* [n_layers], owned by the state until the next call */
  int64_t active;       /* active parameters after the expansion */
  int new_nodes;        /* placeholders that gained an outgoing connection */
  int new_layers;       /* dead layers brought alive */
  int placeholders;     /* placeholder channels/neurons added by the refill */
  double loss_before, loss_after; /* on the phase II batches */
} srch_event;

int srch_init(srch_state *s, const ir_graph *g, fe_search method, uint64_t seed);
void srch_free(srch_state *s);

/* How many parameters the next expansion adds (m) and how many candidates
 * it scores (n = candidates * m). m is ⌈Alr * active⌉ or, under a plan,
 * ⌈room / plan_left⌉, where room is what is left of the budget; either is
 * capped by the room and by what is missing. */
void srch_sizes(const srch_state *s, const ir_arch *a, int64_t *m, int64_t *n);

/* Tops up each growable layer's pool of placeholder nodes, within the
 * budget. Does not change the network's output. Returns how many were
 * added. */
int srch_refill(srch_state *s, rt_exec *x);

/* One expansion by the state's method. Returns 0, -1 when nothing could
 * be added (budget reached, nothing missing), or -2 when the backend
 * failed (s->err says why). Decays Alr. */
int srch_expand(srch_state *s, rt_exec *x, const srch_batches *b,
                srch_event *ev);

/* Phase II of the architecture that several tasks share (multi-task):
 * the tasks' executors xs[0..n) over one super-network, each with its
 * phase II batches bs[k], and shared, the shared α (the caller's: it
 * gains what is grown, as every task's exec does). Candidates are the
 * units below trunk_end (the classifier's first parameter) that no task
 * has, in layers alive in every task (a revival would give each task
 * identity taps of its own), scored by the sum of the tasks' gradients; W* is one SGD step in
 * each task on its own gradient, and g* the sum of the tasks' at W*.
 * s->budget caps |shared|. The random baseline grows it at random
 * (srch_grow_shared_random). Returns what srch_expand does; ev's losses
 * are the tasks' sums. */
int srch_expand_shared(srch_state *s, rt_exec *const *xs, int n, const srch_batches *bs,
                       ir_arch *shared, int64_t trunk_end, srch_event *ev);

/* The random (and fixed) baselines' growth of the shared architecture:
 * m parameters drawn uniformly among the units srch_expand_shared would
 * score, joining every task at zero. Returns how many were added, or -1
 * when out of memory. */
int64_t srch_grow_shared_random(srch_state *s, rt_exec *const *xs, int n, ir_arch *shared,
                                int64_t trunk_end, int64_t m, srch_event *ev);

/* AddCandidates: the missing units with the largest |g| (ties: lowest
 * parameter index), as many as fit in n parameters, counting the identity
 * taps of dead layers they would bring alive; units with g = 0 never
 * qualify. *out (malloc'd) holds them best first. Returns the count, or -1
 * when out of memory. */
int64_t srch_add_candidates(const ir_graph *g, const ir_arch *a, const float *grad, int64_t n,
                            srch_unit **out);

/* UpdateArch: reorders the candidates by |g + g*| and returns how many of
 * the best fit in m parameters; those are kept, the rest go back to zero. */
int64_t srch_update_arch(const ir_graph *g, const ir_arch *a, srch_unit *cand, int64_t nc,
                         const float *grad, const float *gstar, int64_t m);

/* Grows `m` parameters chosen uniformly among the missing ones (the random
 * baseline, and the fixed baseline's one-time growth). */
int64_t srch_grow_random(srch_state *s, rt_exec *x, int64_t m, srch_event *ev);

/* Dense gradient of the loss at every parameter, missing ones included (at
 * their current value: zero, or the identity for a dead layer), the mean
 * over the batches in out[n_params], and their mean loss in *loss
 * (rt_exec_dense_grad). 0, or -1 when the backend failed (s->err). */
int srch_dense_grad(srch_state *s, rt_exec *x, const srch_batches *b, float *out,
                    double *loss);

/* Brings a dead layer alive as the identity on its live channels. Returns
 * the number of parameters that became active. */
int64_t srch_revive_layer(rt_exec *x, int layer);

#endif
