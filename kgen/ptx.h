/* ptx.h: GPU kernel generators for the sparse conv and linear ops, and the
 * PTX emitter that retargets a module to NVPTX.
 *
 * Like kgen/sparse.h, each generator writes one function into an LLVM
 * module from a layer's shapes and α pattern; the IR is target independent
 * (no triple, no data layout): GPU parallelism is expressed only through
 * calls to the NVVM special-register intrinsics (tid.x, ctaid.x, ntid.x)
 * and the function is marked a kernel in !nvvm.annotations. The pattern is
 * baked in as index tables (cg_ptx_take_tables); weight values are read
 * from the weight pointer on every call. cg_ptx_emit then sets the NVPTX
 * triple and data layout, optimises, and writes PTX text, which the CUDA
 * backend loads with cuModuleLoadDataEx (runtime/cuda/cuda.c).
 *
 *   cg_conv_desc d = {.cin = 64, .h = 14, .w = 14, .cout = 64, .k = 3,
 *                     .stride = 1, .pad = 1, .wm = wmask, .bm = bmask};
 *   cg_ptx_conv_fwd(mod, &d, "l3_fwd");
 *   char *ptx, err[256];
 *   if (cg_ptx_emit(mod, "sm_90", &ptx, err, sizeof err)) ...;
 *   free(ptx);
 *
 * Unlike the CPU kernels, these read and write the plain NCHW layout of
 * ref.h (per-sample strides) wherever they write, and take their inputs
 * prepared by the dense helpers below, which the caller runs first
 * (runtime/cuda/kern.c does): conv inputs zero-padded (cg_ptx_pad, the
 * geometry of cg_ptx_conv_geom), so no kernel tests a bound in its inner
 * loop; linear inputs transposed into the batch-wide form cm[f][n]
 * (cg_ptx_to_cm), so a warp's 32 samples of one feature are one load.
 * Every kernel has the C type of cg_sparse_fn_type:
 *   void fn(float *a, float *b, float *c, float *d, int64_t n,
 *           int64_t a_ns, int64_t b_ns)
 * and is launched with at least cg_ptx_*_threads(...) threads in one
 * dimension (extra threads return at once):
 *   conv fwd:         a = xp (x padded by pad into hp x wp, packed, xp_ns
 *                     floats a sample), b = w (full, unpacked), c = bias
 *                     (NULL: none), d = y, overwritten; b_ns = y's stride.
 *                     One thread per tile of CG_PTX_TX outputs of a line.
 *   conv bwd_data:    g.fast_bwd (stride 1): a = dyp (dy padded by
 *                     k-1-pad into hq x wq, packed, dyp_ns a sample); else
 *                     a = dy itself, a_ns its stride. b = w, c = dx,
 *                     ACCUMULATED; b_ns = dx's stride. One thread per tile
 *                     of a dx line (fast) or per dx element.
 *   conv bwd_weight:  a = xp (as for fwd), b = dy, c = dw, ADDED into by
 *                     atomics; b_ns = dy's stride. One thread per (sample,
 *                     active weight).
 *   linear fwd:       a = xT = cm[in][n], b = w, c = bias (NULL: none),
 *                     d = y, overwritten; b_ns = y's stride.
 *   linear bwd_data:  a = dyT = cm[out][n], b = w, c = dx, ACCUMULATED;
 *                     b_ns = dx's stride. Both gemvs: one thread per
 *                     (feature, sample), the samples fastest.
 *   linear bwd_weight: a = xT, b = dyT, c = dw; one thread per ACTIVE
 *                     weight, which it overwrites with its sum over the
 *                     batch.
 * The caller zeroes dw first, so masked weights get exactly 0. Bias
 * gradients: cg_ptx_bias_grad.
 */
#ifndef ILNAS_CG_PTX_H
#define ILNAS_CG_PTX_H

#include <stddef.h>
#include <stdint.h>

#include <llvm-c/Core.h>

#include "kgen/sparse.h"

/* Threads per block the kernels are written for (any block size works;
 * this is what the CUDA backend launches with), and the outputs along a
 * line that one thread of the conv kernels computes. */
enum { CG_PTX_BLOCK = 256, CG_PTX_TX = 4 };

/* Samples in one partial sum of the conv weight gradient: its threads
 * own an (active weight, chunk of samples) pair each. */
enum { CG_PTX_WCHUNK = 4 };
static inline int64_t cg_ptx_wchunks(int64_t n) { return (n + CG_PTX_WCHUNK - 1) / CG_PTX_WCHUNK; }

/* Where a conv layer's padded tensors live (cg_ptx_pad makes them). */
typedef struct cg_ptx_conv_geom {
  int oh, ow;
  int tiles;                     /* CG_PTX_TX-wide tiles per output line */
  int hp, wp;                    /* xp: x padded by pad (wider on the right) */
  int64_t xp_ns;                 /* floats per sample of xp: cin * hp * wp */
  int fast_bwd;                  /* bwd_data reads dyp (stride 1, pad < k) */
  int in_tiles;                  /* tiles per dx line (fast_bwd) */
  int hq, wq;                    /* dyp: dy padded by k-1-pad (fast_bwd) */
  int64_t dyp_ns;                /* floats per sample of dyp: cout * hq * wq */
} cg_ptx_conv_geom;

/* Fills g for d. 0, or -1 for an empty output. */
int cg_ptx_conv_geom_init(cg_ptx_conv_geom *g, const cg_conv_desc *d);

typedef enum { CG_PTX_FWD, CG_PTX_BWD_DATA, CG_PTX_BWD_WEIGHT } cg_ptx_op;

/* Threads one launch of each kernel needs (see above). */
int64_t cg_ptx_conv_threads(const cg_conv_desc *d, cg_ptx_op op, int64_t n);
int64_t cg_ptx_linear_threads(const cg_linear_desc *d, cg_ptx_op op, int64_t n);

/* Each adds the kernel `name` to m. 0, or -1 for a shape whose weight
 * indices do not fit in 32 bits or whose output is empty. */
int cg_ptx_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_ptx_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
/* The conv weight gradient is output-stationary, in two kernels and with
 * no atomics: bwd_weight's thread (q, j) sums active weight j's products
 * over the samples of chunk q (cg_ptx_wchunks(n) chunks) and stores the
 * partial sum at d[q * nnz + j]; wgrad_sum's thread j adds its weight's
 * partials (a) and stores the sum at its place in dw (c), once. */
int cg_ptx_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_ptx_conv_wgrad_sum(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_ptx_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name);
int cg_ptx_linear_bwd_data(LLVMModuleRef m, const cg_linear_desc *d, const char *name);
int cg_ptx_linear_bwd_weight(LLVMModuleRef m, const cg_linear_desc *d, const char *name);

/* The bias gradient of a conv (plane = oh*ow) or linear (plane = 1) layer:
 *   a = dy, c = db, ADDED into by atomics (the caller zeroes db first;
 *   masked biases, bm[o] == 0, are left alone); b, d unused; a_ns = dy's
 *   stride. One thread per (sample, output channel): n * nout threads.
 * 0, or -1 for an empty shape. */
int cg_ptx_bias_grad(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name);

/* Dense helpers, for the layers that run on cuBLAS (runtime/cuda/kern.c).
 * The batch-wide form of a tensor t[n][c][plane] is cm[c][n * plane]
 * (samples side by side in each row), so one sgemm covers the batch.
 *   pad:       c = tp[n][ch][hp][wp], packed, from a = t[n][ch][h][w]
 *              (stride a_ns) placed at (top, left), zeros around;
 *              n * ch * hp * wp threads.
 *   bias_fill: d = y[n][nout][plane] at stride b_ns, overwritten with
 *              bias c[o] (0 where c is NULL or bm[o] == 0); one thread per
 *              element: n * nout * plane.
 *   scale:     c[i] *= a[i] for i < n; n threads (masks a gradient).
 *   im2col:    c = col[cin*k*k][n * oh*ow], batch-wide, from a = x
 *              (stride a_ns), 0 outside the input; as many threads.
 *   col2im:    c = dx (stride b_ns) ACCUMULATES the entries of a = col
 *              that read it; n * cin*h*w threads.
 *   to_cm:     c = cm[nout][n * plane] from a = t (stride a_ns).
 *   from_cm:   d = t (stride b_ns) = a = cm plus bias c as in bias_fill.
 *              Both: n * nout * plane threads.
 * 0, or -1 for an empty shape. */
int cg_ptx_pad(LLVMModuleRef m, int64_t ch, int64_t h, int64_t w, int64_t top, int64_t left, int64_t hp,
               int64_t wp, const char *name);
int cg_ptx_bias_fill(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name);
int cg_ptx_scale(LLVMModuleRef m, const char *name);
int cg_ptx_im2col(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_ptx_col2im(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
int cg_ptx_to_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const char *name);
int cg_ptx_from_cm(LLVMModuleRef m, int64_t nout, int64_t plane, const uint8_t *bm, const char *name);

/* The index tables of the kernels written into a module live in device
 * memory, not in the PTX: each is a global variable of the module, `name`,
 * holding a pointer that the caller sets after loading the module (with
 * cuModuleGetGlobal) to a copy of `data`. */
typedef struct cg_ptx_table {
  char name[160];
  void *data;                    /* malloc'd */
  size_t bytes;
} cg_ptx_table;

/* The tables written into m since the last call, *n of them (malloc'd;
 * cg_ptx_free_tables). Every module's must be taken, or they are kept. */
cg_ptx_table *cg_ptx_take_tables(LLVMModuleRef m, size_t *n);
void cg_ptx_free_tables(cg_ptx_table *t, size_t n);

/* Retargets m to nvptx64-nvidia-cuda, optimises it and writes its PTX into
 * *ptx (NUL-terminated, malloc'd; the caller frees it). `sm` is the GPU's
 * "sm_XY" (NULL: sm_80); one newer than this LLVM can target is lowered to
 * the newest it can, since the driver JIT-compiles PTX forward. 0, or -1
 * with a message. */
int cg_ptx_emit(LLVMModuleRef m, const char *sm, char **ptx, char *err, size_t errlen);

/* The "sm_XY" cg_ptx_emit targets for a request (NULL: sm_80), into buf. */
const char *cg_ptx_target_sm(const char *sm, char *buf, size_t len);

#endif
