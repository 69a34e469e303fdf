/* kernels.h: a kernel set, the table of functions that compute one chunk
 * of a conv or linear layer for the host step (runtime/host.c).
 *
 * The host step (host.c, a backend) owns the step: the schedule, the
 * arena, the parameters, the batch split, the elementwise ops, the loss
 * and the SGD step; a kernel set owns how a weighted layer's chunk is
 * computed. The reference set
 * wraps the plain-C kernels of ref.h; blas runs OpenBLAS on the masked
 * weights; cpu runs kernels generated for each layer's α pattern and
 * compiled by the LLVM JIT; cuda runs kernels emitted as PTX, and cuBLAS.
 * This table is the runtime's own: nothing above runtime/ sees it. No
 * #ifdef anywhere: a kernel set is a table.
 *
 * Every kernel has the semantics of its ref.h counterpart (forward
 * overwrites y, backward-to-input accumulates into dx, weight gradients
 * overwrite dw and db, masked weights get exactly 0) and is called on a
 * chunk of the batch: s->n samples, strides in s. Each returns 0, or -1
 * with the reason in b->error (a device that failed); the host step stops the
 * step and reports it.
 *
 *   rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
 *   b->prepare(b, layer, mask + l->w_off, mask + l->b_off, err, sizeof err);
 *   if (b->conv_fwd(b, layer, &shape, x, w, bias, y)) ... b->error ...
 *   b->free(b);
 */
#ifndef ILNAS_RT_KERNELS_H
#define ILNAS_RT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "runtime/elem.h"
#include "runtime/ref.h"
#include "runtime/backend.h"

typedef struct rt_kernels rt_kernels;

/* A conv layer cheap enough to remake (rt_conv_shape.xr): at most this
 * many multiply-adds an output float (its inputs by taps). Remade, its
 * forward kernel runs three times a step instead of once, and of the
 * five passes over its output and that output's gradient (its
 * unpacking, the consumer's packing in both directions, the consumer's
 * dx and its own packing of it) none is left on the CPU kernels' direct
 * path but the producer's packing of the gradient. The 1->32 3x3 conv
 * in front of the Fashion-MNIST sample: 9. */
enum { RT_REMAT_TAPS = 32 };

/* The input patches (its inputs by taps) of a conv layer with batch norm
 * whose weight gradient its reader's backward takes (rt_conv_shape.xg):
 * its own backward then finishes batch norm's from the gradient g the
 * reader gave and sums over the batch's patches, their sum and their
 * Gram matrix (taps^2 / 2 products a position). The 1->32 3x3 conv in
 * front of the batch norm template: 9. */
enum { RT_BN_GRAM_TAPS = 12 };

struct rt_kernels {
  const char *name;
  const ir_graph *g;
  char error[256]; /* why the last op returned -1 */

  /* Builds (or fetches from the cache) the kernels of a conv or linear
   * layer for its current masks; called for every such layer before the
   * first step and again for each layer whose α changed. Only the layer's
   * shapes and mask pattern may be baked in, never weight values. */
  int (*prepare)(rt_kernels *b, int layer, const uint8_t *wmask,
                 const uint8_t *bmask, char *err, size_t errlen);

  int (*conv_fwd)(rt_kernels *b, int layer, const rt_conv_shape *s,
                   const float *x, const float *w, const float *bias, float *y);
  int (*conv_bwd_data)(rt_kernels *b, int layer, const rt_conv_shape *s,
                        const float *dy, const float *w, float *dx);
  int (*conv_bwd_weight)(rt_kernels *b, int layer, const rt_conv_shape *s,
                          const float *x, const float *dy, float *dw, float *db);

  int (*linear_fwd)(rt_kernels *b, int layer, const rt_linear_shape *s,
                     const float *x, const float *w, const float *bias, float *y);
  int (*linear_bwd_data)(rt_kernels *b, int layer, const rt_linear_shape *s,
                          const float *dy, const float *w, float *dx);
  int (*linear_bwd_weight)(rt_kernels *b, int layer, const rt_linear_shape *s,
                            const float *x, const float *dy, float *dw, float *db);

  void (*free)(rt_kernels *b);

  /* 1: conv_fwd honours rt_conv_shape.relu (the activation is applied
   * while the output is still in cache); 0: the graph op applies it. */
  int fuses_relu;
  /* 1: conv_bwd (and conv_bwd_data) honour rt_conv_shape.dx_assign: dx
   * comes out as if added into zeros, and need not be cleared first. */
  int assigns_dx;
  /* 1: conv_bwd honours rt_conv_shape.bn: it takes batch norm's output
   * gradient and makes its pre-activation's (rt_bn_dz) as it packs it,
   * writing it out (to bn->dz) only where it must. It reads each
   * sample's z before it writes that sample's dx, so that dx may be
   * given in z's place (the samples' slots the same, dx no larger). */
  int bn_dz;
  /* 1: conv_fwd, conv_bwd and conv_bwd_weight honour rt_conv_shape.xbn,
   * and linear_fwd and linear_bwd rt_linear_shape.xbn: the input is
   * batch norm's output, made from its pre-activation as the kernels
   * read it; conv_bwd and linear_bwd write the row sums its backward
   * needs (rt_bn_x.sums) once they have made their gradient. */
  int bn_x;
  /* 1: conv_bwd honours rt_conv_shape.pooled: with relu, it takes the
   * gradient of the 2x2 max pool after the ReLU and routes it back
   * through the pool itself, so the pool's backward need not write it. */
  int pool_dy;
  /* 1: conv_fwd honours rt_conv_shape.pool_y (and conv_bwd, with pooled,
   * rt_conv_shape.pcode): the pool's forward is made from the output
   * while it is in cache; the output itself need not be written (the
   * JIT kernels' path does not write it). */
  int pool_fwd;
  /* 1: conv_fwd honours rt_conv_shape.mom: batch norm's statistics of
   * its output are taken while each plane is in cache, the same bits as
   * rt_bn_moments_pool over the written output. */
  int bn_mom;

  /* 1: conv_fwd and conv_bwd honour rt_conv_shape.xr (conv_bwd_weight
   * and conv_bwd_data are not called with it), for a producer of at most
   * RT_REMAT_TAPS multiply-adds an output; conv_bwd honours
   * rt_conv_shape.xg. */
  int remat;
  /* Optional, NULL: the graph op calls conv_bwd_weight and conv_bwd_data.
   * Both in one call, sharing the work on dy; the same semantics, and no
   * input gradient when dx is NULL. When s->relu is set (a backend that
   * fuses_relu), dy is the gradient of the activation y = max(z, 0) (the
   * forward's output, same layout), and the backend takes the ReLU's
   * gradient dy * (y > 0) itself; it may overwrite dy with it. Else y is
   * unused. */
  int (*conv_bwd)(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x,
                   const float *dy, const float *y, const float *w, float *dx, float *dw,
                   float *db);
  /* Optional, NULL: the graph op calls linear_bwd_weight and
   * linear_bwd_data. Both in one call, with their semantics; no input
   * gradient when dx is NULL. */
  int (*linear_bwd)(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                     const float *dy, const float *w, float *dx, float *dw, float *db);

  /* Optional, NULL: prepare each layer in turn. Prepares n layers at once,
   * with the same result, so that their kernels can be built in parallel.
   * A layer that fails keeps what it had; -1 and the first message. */
  int (*prepare_layers)(rt_kernels *b, int n, const int *layers,
                        const uint8_t *const *wmasks, const uint8_t *const *bmasks,
                        char *err, size_t errlen);

  /* Threads the backend may use for work of its own, such as building
   * kernels; the host step (host.c) sets it to theirs. */
  int threads;
  /* The most samples one call gets, as far as known before the first
   * prepare (the host step sets it: its batch capacity over its threads); 0: not
   * known. Kernels may be shaped for it, never limited by it. */
  int chunk;

  /* When set, weight and bias gradients come out for every weight, the
   * masked ones too: phase II's dense gradient. Honoured by the backends
   * that follow live masks (ref, blas), which phase II's passes run on. */
  int unmasked_wgrad;

  /* Optional, NULL: the host step computes it on the host (im2col and OpenBLAS
   * on its threads, or the live backend's unmasked_wgrad). Phase II's
   * dense gradient of a layer for the whole batch s->n: dL/dW and dL/db
   * at every weight and bias, the missing ones included, from the layer's
   * input x and the gradient dz of its pre-activation (strides s->x_ns and
   * s->y_ns), added into dw and db. 0, or -1 with a message. */
  int (*conv_dense_wgrad)(rt_kernels *b, int layer, const rt_conv_shape *s, const float *x,
                          const float *dz, float *dw, float *db, char *err, size_t errlen);
  int (*linear_dense_wgrad)(rt_kernels *b, int layer, const rt_linear_shape *s, const float *x,
                            const float *dz, float *dw, float *db, char *err, size_t errlen);

  /* Set by a caller that takes weight gradients packed (host.c does): a
   * backend may then write a layer's weight gradient as its active
   * weights' only, in the layout wgrad_index gives. */
  int packed_wgrad;
  /* Optional, NULL: gradients are dense. The layer's packed layout as of
   * its last prepare, or NULL for a dense one: with packed_wgrad set, its
   * backward writes the gradient of weight idx[j] (ascending indices into
   * the layer's weights, its active ones) at dw[j] for j < *n and leaves
   * the rest of dw alone. Bias gradients stay dense. */
  const int32_t *(*wgrad_index)(rt_kernels *b, int layer, size_t *n);
  /* Optional, NULL: none. Before an SGD step moves a packed layer's
   * weights w from the values named `from` to those named `to`
   * (rt_linear_shape.wgen): the backend's copy of the active ones, where
   * it holds the values named `from`, and in *at where each goes in it
   * (the j-th of the packed layout, wgrad_index, at (*at)[j]); else
   * NULL. The step writes every new weight into it too before any other
   * call, and the backend takes it as holding the values named `to`: its
   * kernels' packings of the next pass are made from it, with no read of
   * the dense w. */
  float *(*wcopy)(rt_kernels *b, int layer, const float *w, uint64_t from, uint64_t to,
                  const int32_t **at);

  /* 1: the weighted ops take the whole batch in one call (the backend
   * spreads it over a device itself), rather than one chunk per thread. */
  int whole_batch;

  /* Optional, NULL. The host step's activation arena and its gradient, told
   * once: a backend that copies them to a device may page-lock them for
   * faster copies. It releases them in free, which the host step calls before
   * it frees the arena. */
  void (*host_memory)(rt_kernels *b, void *p, size_t bytes);
};

/* "ref", "cpu" (the LLVM JIT), "blas", "cuda" or "auto" (see
 * rt_backend_resolve). NULL with a message for an unknown name or a
 * backend that cannot start here. */
rt_kernels *rt_kernels_new(const char *name, const ir_graph *g, char *err,
                           size_t errlen);

/* The reference backend. */
rt_kernels *rt_kernels_ref_new(const ir_graph *g);

/* Dense OpenBLAS kernels that, like the reference, follow the masks as they
 * are at each call (runtime/blas.c): what phase II runs on, since it flips
 * masks between passes. */
rt_kernels *rt_kernels_blas_new(const ir_graph *g);

/* The CPU backend: per-layer kernels compiled by the LLVM JIT
 * (runtime/cpu/cpu.c). NULL with a message when the JIT cannot start. */
rt_kernels *rt_kernels_cpu_new(const ir_graph *g, char *err, size_t errlen);

/* The CUDA backend: per-layer kernels emitted as PTX and run through the
 * driver API, which it opens with dlopen (runtime/cuda/cuda.c). NULL with
 * a message ("no CUDA driver: ...", "no GPU: ...") where it cannot run. */
rt_kernels *rt_kernels_cuda_new(const ir_graph *g, char *err, size_t errlen);

/* Whether the CUDA backend can run here: 0 with the device's name and
 * "sm_XY" in what, else -1 with the reason. Creates no context. */
int rt_cuda_probe(char *what, size_t len);



#endif
