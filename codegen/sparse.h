/* sparse.h: generators of the sparse conv and linear kernels.
 *
 * Each generator writes one function into an LLVM module from a layer's
 * shapes and its α pattern (the masks). The pattern is baked in: loop
 * bounds, the valid output ranges of every kernel tap, and index tables of
 * the active weights as constant globals. Weight values are not: kernels
 * read w on every call, since it changes every step. The IR is target
 * independent (no triple, no data layout, no intrinsics of one target):
 * the CPU backend JIT-compiles it for the host, and the same module can be
 * retargeted to NVPTX. Index tables are stored little-endian.
 *
 *   cg_conv_desc d = {.cin = 64, .h = 14, .w = 14, .cout = 64, .k = 3,
 *                     .stride = 1, .pad = 1, .wm = wmask, .bm = bmask};
 *   cg_sparse_conv_fwd(mod, &d, "l3_fwd");
 *   cg_sparse_conv_bwd_data(mod, &d, "l3_bwd_data");
 *   cg_sparse_conv_bwd_weight(mod, &d, "l3_bwd_weight");
 *
 * Every generated function has the C type
 *   void fn(float *a, float *b, float *c, float *d, int64_t n,
 *           int64_t a_ns, int64_t b_ns)
 * with, per kernel:
 *   conv fwd:         a = x, b = w, c = bias (may be NULL), d = y;
 *                     y = conv(x, w) + bias, overwritten. a_ns = x_ns,
 *                     b_ns = y_ns (floats between samples).
 *   conv bwd_data:    a = dy, b = w, c = dx, d unused; dx += conv^T(dy, w).
 *                     a_ns = x_ns (of dx), b_ns = y_ns (of dy).
 *   conv bwd_weight:  a = x, b = dy, c = dw; d unused. Writes dw at the
 *                     active weights only: the caller clears dw first.
 *                     a_ns = x_ns, b_ns = y_ns.
 * The linear kernels work on the batch transposed, feature-major, so that
 * the batch is the vector dimension: a tensor [n][f] is passed as
 * [f][n] with n rounded up to a multiple of CG_LIN_NB (padding lanes are
 * zero), and `n` is that padded count; a_ns, b_ns are unused.
 *   linear fwd:        a = xT [in][n], b = w, c = bias (may be NULL),
 *                      d = yT [out][n], overwritten.
 *   linear bwd_data:   a = dyT [out][n], b = w, c = dxT [in][n], OVERWRITTEN
 *                      (the caller adds it into dx as it transposes back).
 *   linear bwd_weight: a = xT, b = dyT, c = dw: active weights written,
 *                      the caller clears dw first.
 * Bias gradients are left to the caller (one sum per output).
 */
#ifndef ILNAS_CG_SPARSE_H
#define ILNAS_CG_SPARSE_H

#include <stdint.h>

#include <llvm-c/Core.h>

/* Lanes of the batch one linear kernel block handles: 4 vectors of 8. */
enum { CG_LIN_NB = 32 };

typedef struct cg_conv_desc {
  int cin, h, w;          /* input channels, height, width */
  int cout, k, stride, pad;
  const uint8_t *wm;      /* [cout][cin][k][k], 1 = active; NULL = all */
  const uint8_t *bm;      /* [cout]; NULL = all */
} cg_conv_desc;

typedef struct cg_linear_desc {
  int in, out;
  const uint8_t *wm;      /* [out][in]; NULL = all */
  const uint8_t *bm;      /* [out]; NULL = all */
} cg_linear_desc;

/* The function type every generator emits (see above). */
LLVMTypeRef cg_sparse_fn_type(LLVMContextRef ctx);

/* Each adds the function `name` to m. 0, or -1 when a table is too large
 * to index with 32 bits. */
int cg_sparse_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_sparse_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_sparse_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_sparse_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name);
int cg_sparse_linear_bwd_data(LLVMModuleRef m, const cg_linear_desc *d, const char *name);
int cg_sparse_linear_bwd_weight(LLVMModuleRef m, const cg_linear_desc *d, const char *name);

#endif
