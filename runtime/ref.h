/* ref.h: the reference kernels, plain C, obviously right before fast.
 *
 * Every op the graph uses, forward and backward. They are the oracle that
 * the JIT and GPU backends are tested against, and the fallback backend.
 *
 * Layout: NCHW, batch-major. An activation is a base pointer plus a
 * per-sample stride in floats (`*_ns`), so a layer can read a channel prefix
 * of a larger concatenation (dense connectivity) without copies.
 *
 * Masks: one byte per weight (and per bias), 1 = active. A NULL mask means
 * all active. Masked weights are exactly zero; the kernels honour the mask
 * anyway (forward skips them, weight gradients are written as exactly 0).
 *
 * Conventions: forward ops overwrite their output; backward-to-input ops
 * ACCUMULATE into dx (several consumers can read one buffer); weight
 * gradients OVERWRITE dw/db.
 *
 *   rt_conv_shape s = {.n = 8, .cin = 3, .h = 32, .w = 32, .cout = 16,
 *                      .k = 3, .stride = 1, .pad = 1};
 *   rt_conv_shape_finish(&s);           // oh, ow, default strides
 *   rt_ref_conv_fwd(&s, x, w, b, wm, bm, y);
 */
#ifndef ILNAS_RT_REF_H
#define ILNAS_RT_REF_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* Batch norm's backward (before a ReLU, or none) ending in a conv's
 * pre-activation z, for a conv_bwd that makes z's gradient as it reads it
 * (rt_kernels.bn_dz): dz = rt_bn_dx_row of z and dy (then the gradient
 * of batch norm's output, its ReLU's input) with the channel's constants
 * (runtime/elem.h). With pool, a 2x2 max pool read the ReLU's output and
 * dy is the pool's gradient (planes of oh/2 x ow/2, samples as far apart
 * as z's): a plane's gradient at the ReLU's output is
 * rt_bn_pool_scatter's from the windows' codes, then dz = rt_bn_dx_row
 * of it without the mask. */
typedef struct rt_bn_dz {
  const float *z;       /* the pre-activation, the conv output's layout */
  float *dz;            /* where dz goes if the kernels must write it */
  const float *m, *k, *b, *gm, *kg, *kx; /* per output channel */
  int relu, pool;
  const uint8_t *code;  /* pool: each window's code as the forward pooled
                         * (rt_bn_out), planes of oh/2 x ow/2, samples
                         * code_ns apart */
  long code_ns;
} rt_bn_dz;

/* Batch norm's forward map of a conv layer's output left to the conv
 * that reads it (rt_kernels.bn_x): that conv reads its input channels
 * c0 .. c1 - 1 as (z - m) * k + b, then max(., 0) with relu, per channel
 * (rt_bn_affine_row), z laid out as those channels of x (planes of x's
 * size, samples z_ns apart). They are written in x only where the
 * kernels read it whole (their dense path). */
typedef struct rt_bn_x {
  const float *z;         /* of input channel c0 (z's channel 0) */
  const float *m, *k, *b; /* per channel of z */
  int relu;
  int c0, c1;             /* the input channels made from z; the others
                           * are read from x as they are */
  float *sums;            /* conv_bwd: NULL, or where each sample's row sums
                           * of those channels go once their gradient is
                           * made (rt_bn_grad_sums_row of z and it, 2 floats
                           * a channel, 2 (c1 - c0) a sample): batch norm's
                           * backward then reads neither again */
  long z_ns;              /* z's samples this far apart; 0: as x's */
  int stops;              /* z holds the extremes of a 2x2 max pool's
                           * windows (rt_bn_moments_pool's zx: the pool's
                           * output is their map), and the pool left its
                           * codes unmarked where the ReLU stops: with
                           * sums, the gradient there is then zeroed
                           * (rt_bn_grad_sums_stop_row) */
} rt_bn_x;

/* Batch norm's statistics of a conv layer's pre-activation z, taken by
 * the conv's forward as it writes z (rt_kernels.bn_mom), as
 * rt_bn_moments_pool would take them over the samples of the call: each
 * row's (sample's plane's) mean and sum of squared deviations, and with a
 * 2x2 max pool after batch norm's ReLU (pool), each window's extreme of z
 * and where it is. Pointers at the call's first sample. */
typedef struct rt_bn_mom {
  double *mom;            /* channel c's sample i's two at mom + c * ms + 2 i */
  long ms;
  int pool;               /* 1: the windows too */
  const float *gamma;     /* pool: per channel (its sign picks max or min) */
  float *zx;              /* pool: [cout][oh/2 * ow/2] a sample, code_ns apart */
  uint8_t *code;          /* pool: where each extreme is, zx's layout */
  long code_ns;
} rt_bn_mom;

typedef struct rt_conv_shape {
  int n;                /* batch */
  int cin, h, w;        /* input channels (read), height, width */
  int cout, oh, ow;     /* output channels, height, width */
  int k, stride, pad;   /* square kernel */
  long x_ns, y_ns;      /* floats between samples; 0 = packed */
  int relu;             /* forward: y = max(conv, 0), the activation fused */
  int dx_assign;        /* backward to the input: dx is overwritten, as if
                         * added into zeros (rt_kernels.assigns_dx) */
  const rt_bn_dz *bn;   /* conv_bwd: dy is batch norm's output gradient,
                         * dz made from it (rt_kernels.bn_dz); NULL: none */
  const rt_bn_x *xbn;   /* conv_fwd, conv_bwd(_weight): x is made from it
                         * (rt_kernels.bn_x); NULL: x as it is */
  float *pooled;        /* conv_bwd with relu: dy is the gradient of the 2x2
                         * max pool of y (the pool's output, [cout][oh/2][ow/2]
                         * a sample, y_ns apart), routed back to each window's
                         * first maximum in y as it is packed; y's gradient
                         * is written here (y's layout) only where a path
                         * needs it whole (rt_kernels.pool_dy). NULL: dy is
                         * y's gradient */
  float *pool_y;        /* conv_fwd with relu: the output's 2x2 max pool is
                         * written here ([cout][oh/2][ow/2] a sample, y_ns
                         * apart), and each window's code into pcode
                         * (rt_relu_pool_rows; rt_kernels.pool_fwd); y is
                         * scratch, written or not. NULL: y is written */
  uint8_t *pcode;       /* the windows' codes, [cout][oh/2 * ow/2] a sample,
                         * pcode_ns bytes apart: written by conv_fwd with
                         * pool_y; read by conv_bwd with pooled in place of
                         * y, which it then does not read */
  long pcode_ns;
  const rt_bn_mom *mom; /* conv_fwd (rt_kernels.bn_mom): batch norm's
                         * statistics of y (z) taken as it is written;
                         * NULL: none */
  const struct rt_conv_src *xr; /* conv_fwd, conv_bwd (rt_kernels.remat):
                         * x is not in memory but remade (rt_conv_src);
                         * NULL: x as it is */
  const struct rt_conv_src *xg; /* conv_bwd (rt_kernels.remat), with xbn:
                         * x's producer (batch norm before its ReLU, x its
                         * output through them, all of x), whose gradient
                         * the call takes instead of writing dx: into its
                         * dw, the weight gradient of g = dx where x > 0
                         * (as if g were its pre-activation's gradient),
                         * and into its db, the sum of g per channel, each
                         * channel's (whatever its bias); dx is scratch,
                         * where a call that makes x's gradient whole
                         * writes it. NULL: dx */
  int bias_all;         /* conv_fwd (rt_kernels.remat): every channel's bias
                         * counts, its mask left out (a bias with batch
                         * norm folded in: rt_conv_src.bn) */
} rt_conv_shape;

/* rt_conv_shape.xr: the input x of a conv layer is the output, after its
 * ReLU, of conv layer `layer` (no batch norm, no pool), which nothing
 * else reads: the kernels remake it from that layer's input for a few
 * samples at a time as they pack them, so that it never goes through
 * memory, and that layer's forward writes nothing. conv_bwd then also
 * makes that layer's weight and bias gradients (its own input's is
 * never wanted), from x's gradient, which it does not write: its dx is
 * NULL. The same bits as the two layers computed apart. The same
 * struct names the producer of rt_conv_shape.xg (its s.relu 0). */
typedef struct rt_conv_src {
  int layer;
  struct rt_conv_shape s;     /* its shape: n and the strides as the call's */
  const float *x, *w, *bias;  /* its input at the call's first sample, weights, bias */
  float *dw, *db;             /* conv_bwd: its gradients (overwritten) */
  int bn;                     /* w and bias have its batch norm folded in
                               * (the host's fold_fwd): the bias counts in
                               * every channel, its mask left out, and db
                               * takes every channel's sum, as with xg */
} rt_conv_src;

/* Fills oh, ow from h, w, k, stride, pad, and packed strides where 0. */
void rt_conv_shape_finish(rt_conv_shape *s);

/* The bias mask's one rule: output channel o's bias counts (in a
 * forward, and its gradient is kept) where its bit in bm is set; every
 * channel's without a mask, or with all (rt_conv_shape.bias_all, a bias
 * with batch norm folded in, and rt_conv_shape.xg's sums). */
static inline int rt_bias_counts(const uint8_t *bm, int all, int o) {
  return all || !bm || bm[o];
}

/* Weights are [cout][cin][k][k]; bias [cout]; masks have the same shapes.
 * The forward applies the ReLU when s->relu (the backward ignores it),
 * and leaves the bias mask out with s->bias_all. */
void rt_ref_conv_fwd(const rt_conv_shape *s, const float *x, const float *w,
                     const float *b, const uint8_t *wm, const uint8_t *bm,
                     float *y);
void rt_ref_conv_bwd_data(const rt_conv_shape *s, const float *dy,
                          const float *w, const uint8_t *wm, float *dx);
void rt_ref_conv_bwd_weight(const rt_conv_shape *s, const float *x,
                            const float *dy, const uint8_t *wm,
                            const uint8_t *bm, float *dw, float *db);

/* Linear: y[n][out] = W[out][in] x[n][in] + b[out]. Strides as above. */
typedef struct rt_linear_shape {
  int n, in, out;
  long x_ns, y_ns; /* 0 = packed */
  /* Nonzero: names the values of w. A later call with the same wgen (and
   * w) promises the same values, so a backend may reuse what it derived
   * from them (the graph ops name the parameters' values: a new wgen at
   * every change of them, rt_exec_params_write). 0: no promise. */
  uint64_t wgen;
  /* linear_fwd, linear_bwd (rt_kernels.bn_x): x's features of channels
   * xbn->c0 .. c1 - 1 (planes of xbn_hw) are batch norm's output, made
   * from its pool's windows as the kernels read them, not read from x;
   * linear_bwd then takes the row sums (xbn->sums, where not NULL) from
   * dx as it makes it, and with xbn->stops zeroes dx where the ReLU
   * stopped. NULL: x is read whole. */
  const rt_bn_x *xbn;
  long xbn_hw;
} rt_linear_shape;

void rt_ref_linear_fwd(const rt_linear_shape *s, const float *x,
                       const float *w, const float *b, const uint8_t *wm,
                       const uint8_t *bm, float *y);
void rt_ref_linear_bwd_data(const rt_linear_shape *s, const float *dy,
                            const float *w, const uint8_t *wm, float *dx);
void rt_ref_linear_bwd_weight(const rt_linear_shape *s, const float *x,
                              const float *dy, const uint8_t *wm,
                              const uint8_t *bm, float *dw, float *db);

/* Elementwise ops see a tensor as n samples of `len` floats, stride *_ns. */

/* y = max(x, 0); y may equal x. */
void rt_ref_relu_fwd(int n, long len, const float *x, long x_ns, float *y,
                     long y_ns);
/* dx += dy * (y > 0). */
void rt_ref_relu_bwd(int n, long len, const float *y, long y_ns,
                     const float *dy, long dy_ns, float *dx, long dx_ns);

/* The batch norm epsilon, in var + eps. Here because the kernels are not
 * its only user: export folds inference-mode batch norm into the conv
 * before it, and must divide by the same sqrt to match them. */
#define RT_BN_EPS 1e-5
/* The running statistics' update weight, as PyTorch's default: here so
 * that the fast kernels (elem.h) update them as the reference does. */
#define RT_BN_MOMENTUM 0.1

/* Batch norm over (n, h, w) per channel, eps RT_BN_EPS.
 * Training: uses batch statistics, stores mean and 1/sqrt(var+eps) in
 * save_mean/save_invstd, and updates the running statistics as PyTorch does
 * (momentum 0.1, unbiased variance for the running value).
 * Inference (training == 0): uses the running statistics. */
typedef struct rt_bn_shape {
  int n, c, hw;
  long x_ns, y_ns; /* 0 = packed */
  int w;           /* a plane's rows' length, which its moments' sums
                    * follow (rt_bn_copy_moments); 0: one row of hw */
} rt_bn_shape;

void rt_ref_bn_fwd(const rt_bn_shape *s, int training, const float *x,
                   const float *gamma, const float *beta, float *run_mean,
                   float *run_var, float *save_mean, float *save_invstd,
                   float *y);
/* Training-mode backward: dx += ..., dgamma and dbeta overwritten.
 * x and dx use the stride x_ns, dy uses y_ns. */
void rt_ref_bn_bwd(const rt_bn_shape *s, const float *x, const float *dy,
                   const float *gamma, const float *save_mean,
                   const float *save_invstd, float *dx, float *dgamma,
                   float *dbeta);

/* Max-pool, window = stride = f, floor: oh = h / f. */
typedef struct rt_pool_shape {
  int n, c, h, w, f;
  long x_ns, y_ns; /* 0 = packed */
} rt_pool_shape;

void rt_ref_maxpool_fwd(const rt_pool_shape *s, const float *x, float *y);
/* dx += dy routed to the first maximum of each window (ties: lowest index),
 * recomputed from x. */
void rt_ref_maxpool_bwd(const rt_pool_shape *s, const float *x,
                        const float *dy, float *dx);

/* Global average pool: [n][c][hw] -> [n][c]. */
void rt_ref_gap_fwd(int n, int c, int hw, const float *x, long x_ns,
                    float *y, long y_ns);
/* dx += dy / hw; with assign, dx = 0 + dy / hw (the same bits, dx not
 * read). */
void rt_ref_gap_bwd(int n, int c, int hw, const float *dy, long dy_ns,
                    float *dx, long dx_ns, int assign);

/* Per channel of a layer's output (n samples ns floats apart, c planes
 * of plane floats from o): the mean and the variance about it over the
 * batch and the plane, each summed in double (two passes), and with min
 * not NULL the least value. */
void rt_ref_channel_stats(int n, int c, int64_t plane, int64_t ns, const float *o,
                          double *mean, double *var, double *min);

/* Softmax cross-entropy, mean over the batch. Writes dlogits (overwrite,
 * already divided by n) when dlogits is not NULL; counts argmax hits
 * (ties: lowest index) into *correct when not NULL. Returns the mean loss. */
double rt_ref_softmax_xent(int n, int classes, const float *logits,
                           const ir_label *labels, float *dlogits,
                           int *correct);

/* SGD with momentum and weight decay, PyTorch semantics:
 *   g' = g + decay * w;  v = momentum * v + g';  w -= lr * v
 * Entries with mask 0 are left untouched (they stay exactly 0). */
void rt_ref_sgd(size_t n, float *w, const float *g, float *v,
                const uint8_t *mask, float lr, float momentum, float decay);

#endif
