/* packed.h: the live layout: activations and their gradients hold the
 * channels the live network works, packed, and nothing of the bounds.
 *
 * rt_backend_new's default. The backend plans the worked channels of
 * every tensor (plan.h) from the architecture and the parameters' values
 * at each prepare, builds the compact graph of those channels (the
 * template with each tensor's and layer's channels cut to them; every
 * weight between two kept channels is there, active or not), and runs a
 * step (rt_step_new, of the kind it was asked for) on it. For training, a
 * dead layer that aliases its source (plan.h) is gone from that graph: it
 * has no channels, and its readers read its source. Phase II gets a
 * compact graph of its own that keeps every dead layer's output, which
 * its dense gradient reads. When a prepare changes the channels (or the
 * phase changes), a new step is made on the new compact graph and the
 * state carries over: the changed layers' kernels are emitted again at
 * that moment anyway.
 *
 * Callers see g's indices only: the parameters, momentum, statistics and
 * gradients are views at g's size on the host, the step's values
 * scattered into them when read and gathered from them after an edit;
 * phase II's dense gradient comes back at every parameter of g. So
 * checkpoints, export and the search never see the layout. Between views
 * the step holds the values (and a short list those of the active
 * parameters gc leaves out): the parameters', momentum's and gradients'
 * views give their pages back at the next operation, so that a wide
 * template's pages of active parameters are not resident while it trains,
 * and rt_packed_active reads the active values without a view. What the
 * compact graph leaves out is 0 or read by nothing, so the losses are
 * those of the layout at the bounds (tests/jit/test_packed.c); a
 * channel's batch norm statistics change only while it is kept.
 *
 *   rt_backend *b = rt_backend_new("cpu", g, arch, 128, 2, err, sizeof err);
 *   rt_backend *step = rt_packed_step(b);   // the step inside (tests)
 */
#ifndef ILNAS_RT_PACKED_H
#define ILNAS_RT_PACKED_H

#include "runtime/backend.h"

/* The step that b runs on its compact graph (valid until b's next
 * prepare), or NULL when b is not a live layout. */
rt_backend *rt_packed_step(rt_backend *b);

/* The values of RT_PARAMS or RT_MOMENTUM at g's active parameters, in
 * index order, into out, read where they are kept (the step, and the
 * values of those the compact graph leaves out): no view of g's size is
 * made. Returns how many, or -1 when b is not a live layout or holds them
 * in a view (read it then). */
int64_t rt_packed_active(rt_backend *b, rt_state which, float *out);

/* How many steps b has made (one per change of the kept channels), or -1
 * when b is not a live layout. */
long rt_packed_rebuilds(const rt_backend *b);

#endif
