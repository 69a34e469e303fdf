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
 * (kgen/devops.h). Each phase of a step (forward, backward, SGD) runs as
 * a CUDA graph, captured on its second run and again after every
 * prepare.
 *
 * Phase II (its passes flip masks between them, on kernels that follow
 * the masks as they are) runs on a host step over the CUDA kernel set
 * ("cuda-host", the same kernels, whose prepare this one calls): the
 * state goes there when phase II begins and comes back when it ends;
 * the dense gradient's GEMMs run on cuBLAS there.
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
