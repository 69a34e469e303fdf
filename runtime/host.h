/* host.h: the host step's graph ops, what the emitted graph driver calls.
 *
 * The host step (host.c) is a backend (backend.h) whose state lives in
 * host memory. ilnasc's driver is a list of calls to these, every layer
 * index and per-sample arena offset a constant (ir_schedule); x is the
 * backend the driver was handed (rt_backend_i.forward passes itself).
 *
 *   void fwd(void *x) { rt_op_conv_fwd(x, 0, 0, 784, 1568, -1); ... }
 */
#ifndef ILNAS_RT_HOST_H
#define ILNAS_RT_HOST_H

#include <stdint.h>

#include "runtime/backend.h"
#include "runtime/kernels.h"

typedef struct hx hx;

/* Graph ops: x is the host step, l the layer index, the rest per-sample
 * arena offsets (-1 when the layer has no such tensor). */
#define RT_OP_ARGS void *x, int64_t l, int64_t in, int64_t z, int64_t out, int64_t prev
#define IR_OP(K, name, what) void rt_op_##name##_fwd(RT_OP_ARGS); void rt_op_##name##_bwd(RT_OP_ARGS);
#include "ir/ops.def"
#undef IR_OP

/* Inside a host step b (tests that poison it): its activation arena and
 * gradient (*floats each), and its parameters' gradients (n_params).
 * The next training pass computes every channel again. */
void rt_host_arena(rt_backend *b, float **act, float **dact, float **grads, size_t *floats);

/* on: host step b keeps the layout at the bounds: every dead layer a
 * copy, every channel computed, every gradient tensor cleared whole
 * before a backward (tests compare the plan's layout with it). */
void rt_host_layout_bounds(rt_backend *b, int on);

/* The training passes of host step b that computed the plan's worked
 * channels only (plan.h), so far (tests). */
long rt_host_narrow_passes(const rt_backend *b);

/* on (the default): host step b lets a conv's kernels remake the output
 * of a cheap conv before it (rt_conv_shape.xr), or take the weight
 * gradient of one with batch norm (rt_conv_shape.xg), where its plan
 * allows; off: every layer computed apart (tests compare the two). From
 * the next prepare. */
void rt_host_remat(rt_backend *b, int on);

/* on (the default): host step b runs a conv with batch norm whose weight
 * gradient its reader takes folded with its batch norm in training, its
 * statistics from its input patches' sums and its output remade by that
 * reader (the host's fold_fwd); off: taken (rt_conv_shape.xg) but made
 * and normalised as any other (tests compare the two). From the next
 * prepare. */
void rt_host_fold(rt_backend *b, int on);

/* on (the default): host step b lets a conv with batch norm write its
 * input gradient into its own pre-activation z, whose lines it has just
 * read, where its producer's backward then reads it (the host's
 * dx_in_z); off: into the gradients' arena (tests compare the two).
 * From the next backward. */
void rt_host_dx_in_z(rt_backend *b, int on);

/* The layers whose last backward in host step b wrote their input
 * gradient into their z (tests). */
int rt_host_dx_in_z_layers(const rt_backend *b);

/* The layers whose output the last plan of host step b has remade by
 * their consumer's kernels, or whose weight gradient their consumer's
 * backward takes (rt_conv_shape.xg) (tests). */
int rt_host_remade(const rt_backend *b);

/* Of those, the layers the last plan runs folded with their batch norm in
 * training (rt_host_fold) (tests). */
int rt_host_folded(const rt_backend *b);

#endif
