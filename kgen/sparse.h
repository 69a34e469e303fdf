/* sparse.h: generators of the sparse conv and linear kernels.
 *
 * Each generator writes one function into an LLVM module from a layer's
 * shapes and its α pattern (the masks). The pattern is baked in: loop
 * bounds and index tables of the active weights (which taps of which
 * channels, where they read) as constant globals; taps that read only
 * padding are left out. Weight values are not: kernels read w on every
 * call, since it changes every step. The IR is target
 * independent (no triple, no data layout, no intrinsics of one target):
 * the CPU backend JIT-compiles it for the host, and the same module can be
 * retargeted to NVPTX. Index tables are stored little-endian.
 *
 *   cg_conv_desc d = {.cin = 64, .h = 14, .w = 14, .cout = 64, .k = 3,
 *                     .stride = 1, .pad = 1, .wm = wmask, .bm = bmask};
 *   cg_order of, ob;
 *   cg_sparse_conv_fwd(mod, &d, "l3_fwd", &of);
 *   cg_sparse_conv_bwd_data(mod, &d, "l3_bwd_data", &ob);
 *   cg_sparse_conv_bwd_weight(mod, &d, "l3_bwd_weight");
 *
 * The fwd and bwd_data kernels read the weights packed in the order they
 * use them: wp[k] = w[ord.idx[k]] for k < ord.n, where ord (cg_order) is
 * filled by their generator and the caller gathers wp once per call. Only
 * offsets are then a table; the weight stream is sequential.
 *
 * Every generated function has the C type
 *   void fn(float *a, float *b, float *c, float *d, int64_t n,
 *           int64_t a_ns, int64_t b_ns)
 * The conv kernels work on one packed layout per tensor (cg_conv_plan,
 * filled by cg_conv_plan_init; the caller packs and unpacks, see
 * runtime/cpu/cpu.c): the input zero-padded and split into stride*stride
 * phase planes of Hq x Wq, so that every kernel tap is one contiguous
 * shifted span of the flattened plane; outputs on rows of Wq columns
 * (columns >= ow are don't-care on output, zero on input). With it the
 * kernels are one loop nest over an index table of (offset, weight)
 * pairs, register-blocked over a tile of the flattened plane. The kernels
 * may read a vector past a plane's last tile (xlen and dylen leave room
 * for it); what they read there never reaches a result.
 *   conv fwd:         a = xp, b = wp, c = bias (may be NULL), d = yq;
 *                     yq = conv(xp, w) + bias, overwritten. a_ns, b_ns:
 *                     floats between samples of xp and of yq.
 *   conv fwd_into:    as fwd (cg_sparse_conv_fwd_into), the output rows
 *                     through the ReLU and `stride` floats apart: d is a
 *                     consumer's padded planes, past their frame.
 *   conv bwd_data:    a = dyq, b = wp, c = dxp, d unused; dxp overwritten
 *                     (the caller adds it into dx as it unpacks).
 *                     a_ns = of dyq, b_ns = of dxp.
 *   conv bwd_weight:  a = xp, b = dyq, c = dw; d unused. ADDS into dw at
 *                     the active weights only: the caller clears dw first,
 *                     then may call once per block of samples.
 *                     a_ns = of xp, b_ns = of dyq.
 *   conv bwd_fused:   both at once (cg_sparse_conv_bwd_fused): a = dyq,
 *                     b = wp, c = dxp (as bwd_data), d = the weight
 *                     gradients' lanes (ADDED to), then xp; a_ns = of
 *                     dyq, b_ns = of dxp.
 * The linear kernels work on the batch transposed, feature-major, so that
 * the batch is the vector dimension, in blocks of NB samples (the desc's
 * lanes): a tensor [n][f] is passed as [n/NB][f][NB] with n rounded up to
 * a multiple of NB (padding lanes are zero), and `n` is that padded
 * count; a_ns, b_ns are unused. One block of one feature is a row of NB/8
 * vectors, the register tile; a block of all inputs (in * NB floats) is
 * what stays in L2 while the outputs are swept.
 *   linear fwd:        a = xT, b = wp, c = bias (may be NULL),
 *                      d = yT, overwritten.
 *   linear bwd:        both backward directions in one pass over dy
 *                      (the CPU backend's choice: each load of dy feeds
 *                      8 FMAs, 4 into dx and 4 into weight gradients).
 *                      Blocks of CG_LIN_BWD_NB lanes whatever the desc's
 *                      lanes. a = xT; b = dyT laid out [n/NB][out+1][NB],
 *                      row `out` of each block ZERO (padding entries read
 *                      it); c = the packed weights' gradients in ord's
 *                      order (ord.n floats), which it ADDS to, followed
 *                      by dxT, OVERWRITTEN; d = the packed weights.
 * Bias gradients are left to the caller (one sum per output).
 */
#ifndef ILNAS_CG_SPARSE_H
#define ILNAS_CG_SPARSE_H

#include <stdint.h>

#include <llvm-c/Core.h>

/* Lanes of the batch one linear kernel block handles: 8 vectors of 8, the
 * accumulators of one output row (of 16 AVX2 registers); or half of that,
 * for calls of at most 32 samples, which would leave half a block idle. */
enum { CG_LIN_NB = 64, CG_LIN_NB_HALF = 32 };
/* Lanes of the fused linear backward's block: 4 vectors of x and 4 of
 * dx accumulators leave registers for the 4 weight gradients in flight. */
enum { CG_LIN_BWD_NB = 32 };

typedef struct cg_conv_desc {
  int cin, h, w;          /* input channels, height, width */
  int cout, k, stride, pad;
  const uint8_t *wm;      /* [cout][cin][k][k], 1 = active; NULL = all */
  const uint8_t *bm;      /* [cout]; NULL = all */
  int vw;                 /* lanes of the kernels' vectors: 8 or 16; 0 = 8 */
  int no_unroll;          /* 1: the forward's gather even where the unrolled
                           * forward applies (tests cover both) */
} cg_conv_desc;

typedef struct cg_linear_desc {
  int in, out;
  const uint8_t *wm;      /* [out][in]; NULL = all */
  const uint8_t *bm;      /* [out]; NULL = all */
  int lanes;              /* NB: CG_LIN_NB or CG_LIN_NB_HALF; 0 = CG_LIN_NB */
  int vw;                 /* lanes of the kernels' vectors: 8 or 16; 0 = 8 */
} cg_linear_desc;

/* Where each packed conv tensor lives, in floats. */
typedef struct cg_conv_plan {
  int s, oh, ow;          /* stride, output height and width */
  int hq, wq;             /* one phase plane: ceil((h+2pad)/s) x ceil((w+2pad)/s),
                             at stride 1 rows of w + pad (they share their
                             padding columns) when k > pad */
  long pq;                /* hq * wq */
  long xcs, xlen;         /* xp: channel stride (s*s*pq), floats per sample */
  long yq, yrs;           /* output rows: oh * wq used, tile-rounded stride */
  long marg, dycs, dylen; /* dyq: zero margin before each channel, stride, size */
  long dxrs, dxlen;       /* dxp: [cin*s*s] rows of dxrs (>= pq), size */
  int vw;                 /* lanes of a vector (the desc's) */
  int ytile, dxtile;      /* vectors per register tile: fwd, bwd_data */
} cg_conv_plan;

/* -1 for a shape the generators cannot handle (kernel over 32, empty
 * output), else 0. */
int cg_conv_plan_init(cg_conv_plan *p, const cg_conv_desc *d);

/* The function type every generator emits (see above). */
LLVMTypeRef cg_sparse_fn_type(LLVMContextRef ctx);

/* The packed-weight order of a gather kernel (fwd, bwd_data, the fused
 * linear bwd): the index in w of each weight it reads, in the order it
 * reads them (each active weight of a live tap once); -1 marks a padding
 * entry, whose packed weight the caller sets to 0. Owned by the caller;
 * cg_order_free releases it. */
typedef struct cg_order {
  int32_t *idx;
  long n;
} cg_order;
void cg_order_free(cg_order *ord);

/* Each adds the function `name` to m, and the gathers fill *ord (when not
 * NULL). 0, or -1 when a table is too large to index with 32 bits or
 * memory runs out. */
int cg_sparse_conv_fwd(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                       cg_order *ord);
/* The forward kernel with its output rows `stride` floats apart, through
 * the ReLU as they are stored: straight into the padded planes of the
 * conv that reads them (the caller offsets dst to the first row's first
 * value and zeroes the frame after: the rows' don't-care tails land on
 * it). Its weights are packed as cg_sparse_conv_fwd's. */
int cg_sparse_conv_fwd_into(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                            long stride);
int cg_sparse_conv_bwd_data(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                            cg_order *ord);
int cg_sparse_conv_bwd_weight(LLVMModuleRef m, const cg_conv_desc *d, const char *name);
/* The fused conv backward (stride 1, a layer without row blocks:
 * cg_sparse_conv_fusable, given cg_sparse_conv_row_block's answer for
 * d): `name` a bwd_data kernel and `fused` the data
 * and weight gradients in one pass, both reading the packed weights in
 * *ord's order. The fused kernel's fourth buffer holds the weight
 * gradients in that order as vectors of lanes (npad of them, npad = the
 * pattern's active weights rounded up to 16: vw npad floats), added to,
 * whose lanes' sum is the gradient; then the call's samples' packed
 * inputs, cg_conv_fused_xslot floats apart. */
int cg_sparse_conv_fusable(const cg_conv_desc *d, int row_block);
int cg_sparse_conv_bwd_fused(LLVMModuleRef m, const cg_conv_desc *d, const char *name,
                             const char *fused, cg_order *ord);
long cg_conv_fused_xslot(const cg_conv_plan *p);
/* The output channels cg_sparse_conv_fwd's kernel computes at once: 4
 * where every block of 4 has the same pattern (row blocks: a full layer,
 * 16 lanes), each input vector loaded once for the 4, else 1; -1 for a
 * shape the generators cannot handle, or out of memory. */
int cg_sparse_conv_row_block(const cg_conv_desc *d);
int cg_sparse_linear_fwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name,
                         cg_order *ord);
int cg_sparse_linear_bwd(LLVMModuleRef m, const cg_linear_desc *d, const char *name,
                         cg_order *ord);
/* The ord.n that cg_sparse_linear_bwd will fill: the active weights and
 * their padding, for sizing buffers before the kernel is built. */
long cg_sparse_linear_bwd_len(const cg_linear_desc *d);

#endif
