/* step.h: the device step, the CUDA backend (backend.h) whose training
 * step stays on the GPU.
 *
 * It owns on the device the parameters, their gradients and momentum,
 * batch norm's statistics, the activation arena and its gradient. A
 * step crosses the bus for the batch (images in, labels in), the SGD
 * step's three scalars and the loss and accuracy count (16 bytes out);
 * nothing else. The conv and linear layers run on the kernels of the
 * CUDA kernel set (runtime/cuda/kern.h: generated per α pattern, or
 * cuBLAS where faster); ReLU, batch norm, pooling, the copies of dead
 * layers, the loss and SGD on kernels generated for the graph
 * (kgen/devops.h). A training step (train_step: the batch's gather,
 * forward, loss, backward and SGD) runs as one CUDA graph, and so does
 * each phase (forward, loss, backward, SGD) called on its own; a graph is
 * captured on its second run and again after every prepare.
 *
 * Phase II runs on the device too. Its passes flip masks between them,
 * so each weighted layer runs there on dense kernels that follow them as
 * they are (cu_kern_build_dense: cuBLAS over the weights, zero where α is
 * clear), built at the first phase II and sharing one scratch; their
 * backward gives every weight's gradient, the missing ones included. A
 * dead layer's, as if it came alive, goes through KD_REVIVE and its dense
 * weight gradient. Phase II's gradients (backend.h: p2_*) stay there: a
 * batch copies its images and labels in and its loss out; the ranking
 * scores every missing unit on the device and copies the masks' bytes in
 * and a few counts and the picks out; the hyper step keeps W on the
 * device. A unit that joins or leaves (set_range) copies its floats in.
 * rt_exec_dense_grad's gradient (multi-task) comes back whole. The step owns the CUDA kernel set (cuda.c) whose layers' kernels it
 * runs, and prepares them for the layers whose α changed; the host step
 * over the same set ("cuda-host") is another backend, to compare.
 *
 * Host views (backend.h) download on demand; edits upload before the next
 * operation.
 *
 *   rt_backend *b = rt_backend_new("cuda", g, arch, 128, 2, err, sizeof err);
 */
#ifndef ILNAS_RT_CUDA_STEP_H
#define ILNAS_RT_CUDA_STEP_H

#include <stddef.h>

#include "runtime/backend.h"
#include "runtime/cuda/kern.h"
#include "runtime/kernels.h"

/* The device step; NULL with a message where no GPU can run it. */
rt_backend *rt_cuda_step_new(const ir_graph *g, const ir_arch *arch, int cap, int threads, char *err,
                             size_t errlen);

/* The CUDA kernel set's device (cuda.c): its context, stream, cuBLAS
 * handle (0: none) and "sm_XY"; -1 when b is not the CUDA kernel set. */
int rt_cuda_kernels_device(rt_kernels *b, CUcontext *ctx, CUstream *s, cublasHandle_t *h, const char **sm);
/* Layer l's kernels in the CUDA kernel set, NULL until prepared. */
cu_kern *rt_cuda_kernels_layer(rt_kernels *b, int layer);

/* The device step's CUDA graph launches and captures so far (tests). */
typedef struct rt_cuda_step_stats {
  long graph_launches, captures, eager_steps;
} rt_cuda_step_stats;
rt_cuda_step_stats rt_cuda_step_get_stats(rt_backend *b);

#endif
