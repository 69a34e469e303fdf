/* elem.h: the elementwise ops of a training step, written to be fast on
 * the host: branch-free loops the compiler vectorises (elem.c is built at
 * -O3), one sample at a time so that a chunk's threads share the work.
 *
 * Each has the semantics of its ref.h counterpart, which stays the oracle
 * (tests/ref checks them against it bit for bit), except where said. */
#ifndef ILNAS_RT_ELEM_H
#define ILNAS_RT_ELEM_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/pool.h"
#include "runtime/ref.h"

/* y = max(x, 0) over len floats; y may equal x. */
void rt_relu(long len, const float *x, float *y);

/* rows of len floats, x rows xs apart, y rows ys apart (not overlapping):
 * y = x, and y = max(x, 0). For the short rows of layout changes, where a
 * memcpy call per row costs more than the copy. */
void rt_copy_2d(int rows, int len, const float *x, long xs, float *y, long ys);
void rt_relu_2d(int rows, int len, const float *x, long xs, float *y, long ys);
/* y += x, same shapes; and y = 0 + x, the bits of adding x into zeros
 * (-0 becomes +0) without clearing y first. */
void rt_add_2d(int rows, int len, const float *x, long xs, float *y, long ys);
void rt_set_2d(int rows, int len, const float *x, long xs, float *y, long ys);
/* Batch norm's affine map of a channel, y = (x - m) * k + b, then
 * max(y, 0) with relu (rt_bn_affine_row's arithmetic, bit for bit), for
 * the copies below to apply as they copy. */
typedef struct rt_affine {
  float m, k, b;
  int relu;
} rt_affine;

/* The bytes a pass that walks a stream of planes will read next, asked
 * for before it reads them (prefetcht0): the lines of [p + ahead, p +
 * ahead + n), and with first (the stream's first plane) [p, p + ahead)
 * too. Called with each plane, n its bytes, it keeps the stream's misses
 * in flight together: where the passes read their rows with masked
 * loads, the hardware's prefetch need not run ahead of them (on the AMD
 * Zen 5 VM a plane read from memory took 3-5x its time in cache).
 * RT_AHEAD is the passes' distance for a stream read a value a value.
 * Inlined always: GCC takes a function of prefetches alone for one
 * without effects, and drops its calls. */
enum { RT_AHEAD = 2048 };
__attribute__((always_inline)) static inline void rt_ahead(const void *p, long n, long ahead,
                                                           int first) {
  const char *c = (const char *)p;
  for (long b = first ? 0 : ahead; b < ahead + n; b += 64) __builtin_prefetch(c + b);
}

/* rt_ahead for a stream of planes a pass will write (prefetchw): each
 * line asked for, to be written, before the stores reach it. */
__attribute__((always_inline)) static inline void rt_ahead_w(void *p, long n, long ahead,
                                                             int first) {
  char *c = (char *)p;
  for (long b = first ? 0 : ahead; b < ahead + n; b += 64) __builtin_prefetch(c + b, 1);
}

/* The widest vectors the kernels here take: each op picks its code for
 * the CPU at run time, up to this level (default RT_ISA_AVX512). The
 * paths give the same bits; tests cap it to run each on one machine. */
enum { RT_ISA_SSE2 = 0, RT_ISA_AVX2 = 1, RT_ISA_AVX512 = 2 };
void rt_elem_set_isa(int level);

/* Whole rows of ys floats: lpad zeros, x's row (rows of len, xs apart),
 * zeros to the end (lpad + len <= ys): a plane into a zero frame in one
 * pass. With a gate (rows gs apart), x's values where the gate is > 0, as
 * rt_relu_mask; else 0. With map (and no gate), x's values mapped. */
void rt_pad_rows(int rows, int len, const float *x, long xs, float *y, long ys, int lpad,
                 const float *gate, long gs, const rt_affine *map);

/* The phases of stride 2, for the stride-2 convs' packed planes, nb <=
 * na <= nb + 1 (a row of na + nb floats): a[t] = x[2t] for t < na and
 * b[t] = x[2t + 1] for t < nb, a row split into its two phases in one
 * pass; and back, y[2t] += a[t] for t < na, y[2t + 1] += b[t] for t < nb
 * (add = 0: y = 0 + the phases, the bits of adding into zeros). With
 * map, the split values are x's mapped. */
void rt_split2(int na, int nb, const float *x, float *a, float *b, const rt_affine *map);
void rt_interleave2(int na, int nb, const float *a, const float *b, float *y, int add);

/* dst[c * ds + r] = src[r * ss + c] (add: +=) for r < rows, c < cols:
 * the layout changes of the linear kernels, by 4x4 register tiles. */
void rt_transpose(int rows, int cols, const float *src, long ss, float *dst, long ds, int add);

/* The sum of len floats, in eight interleaved partial sums (so that it
 * vectorises; the order differs from a sequential sum). */
float rt_sum(long len, const float *x);
/* rt_sum of each of rows rows of len floats, xs apart, into out: the
 * same bits. */
void rt_sum_rows(int rows, long len, const float *x, long xs, float *out);

/* The sums and the Gram matrix of rows rows of len floats, xs apart:
 * sums[r] = rt_sum of row r (the same bits), and g[u * rows + t] for
 * t >= u the dot product of rows u and t, in eight interleaved chains of
 * fused multiply-adds and the tail after them, added as rt_sum adds (the
 * lower triangle is left alone). */
void rt_gram(int rows, long len, const float *x, long xs, float *sums, float *g);
/* rt_gram's sums and upper triangle of the nine rows rt_im2col makes of
 * one h x w plane x for a 3 x 3 conv at stride 1 with a zero frame of 1
 * (its patches, tap (a, b) in row 3 a + b, out h x w; h, w >= 2),
 * without making the rows: from the plane's autocorrelations at the
 * window's offsets, less the row or column that a tap's patches leave
 * out. The same sums in another order (not rt_gram's bits), in about a
 * third of the multiply-adds. pad: RT_GRAM3X3_PAD(h, w) floats of
 * scratch. */
#define RT_GRAM3X3_PAD(h, w)                                                                   \
  ((long)(h) * (((long)(w) + 7) / 8 * 8 + 16) + ((long)(h) + 7) / 8 * 8 + 16)
void rt_gram3x3(int h, int w, const float *x, float sums[9], float g[81], float *pad);

/* The dense lowering of a convolution, one sample (x, dx: [cin][h][w]):
 * col [cin*k*k][oh*ow], one plane per tap, the input shifted by the tap
 * inside a zero frame; and dx += its transpose applied to col. */
void rt_im2col(const rt_conv_shape *s, const float *x, float *col);
void rt_col2im_add(const rt_conv_shape *s, const float *col, float *dx);

/* dx = dy * (y > 0): OVERWRITES dx, unlike rt_ref_relu_bwd. */
void rt_relu_mask(long len, const float *y, const float *dy, float *dx);

/* rt_ref_maxpool_fwd and _bwd (first maximum wins) for samples [n0, n1);
 * with assign, the backward overwrites dx (as if it had been cleared)
 * instead of adding into it. */
void rt_maxpool_fwd(const rt_pool_shape *s, int n0, int n1, const float *x,
                    float *y);
void rt_maxpool_bwd(const rt_pool_shape *s, int n0, int n1, const float *x,
                    const float *dy, float *dx, int assign);

/* v[i] = 0 where m[i] is 0, exactly (the bits cleared: NaN too); the
 * rest left as it is. Branch-free (a branch on a random half-dense mask
 * mispredicts every other element) and 16 elements a step. */
void rt_zero_masked(float *v, const uint8_t *m, size_t n);

/* The same step for the packed entries [j0, j1) of one layer: gradient
 * g[j] belongs to weight w[idx[j]] (momentum v[idx[j]]). With copy set,
 * each new weight w[idx[j]] is also written to copy[at[j]]. */
void rt_sgd_packed(size_t j0, size_t j1, const int32_t *idx, float *w, const float *g,
                   float *v, float lr, float momentum, float decay, float *copy,
                   const int32_t *at);

/* Batch norm's statistics begin with each row's (a sample's plane of a
 * channel): mom[c * ms + 2 * i] and [... + 1] get row (i, c)'s mean and
 * sum of squared deviations from it, for i < s->n, c < s->c (y_ns
 * unused), summed as rt_bn_copy_moments sums a plane of rows s->w long.
 * A producer of x calls it on the samples it has just written, while
 * they are in its cache; rt_bn_fwd then merges them. */
void rt_bn_moments(const rt_bn_shape *s, const float *x, double *mom, long ms);
/* The same, and for batch norm then its ReLU then a 2x2 max pool (planes
 * w wide, w > 0): each window's extreme of x, its maximum where the
 * channel's gamma is >= 0 and its minimum where < 0, into zx, and its
 * position in the window (0 .. 3, the first extreme, top row first) into
 * code, both [sample][channel][window] with samples code_ns apart (0:
 * packed). The pool's output is the affine map of zx (rt_bn_pool_out),
 * the bits rt_bn_out pools, since the map and its rounding are monotone;
 * a code differs from rt_bn_out's only where two values of a window that
 * differ map to the same float. */
void rt_bn_moments_pool(const rt_bn_shape *s, const float *x, double *mom, long ms, int w,
                        const float *gamma, float *zx, uint8_t *code, long code_ns);
/* The one of the two that m asks for (rt_conv_shape.mom), planes s->w
 * wide: x holds samples i0 .. i0 + s->n - 1 of m's, channels c0 .. c0 +
 * s->c - 1. Without stats only the windows (the moments taken already,
 * rt_bn_copy_moments); mom is NULL there for rt_bn_moments_pool too. */
void rt_bn_moments_at(const rt_bn_shape *s, const float *x, const rt_bn_mom *m, int64_t i0,
                      int c0, int stats);
/* A plane of rows of len (x's xs apart) copied into y (ys apart), through
 * the ReLU with relu, and the copy's mean and sum of squared deviations
 * into mom[0], mom[1], in the same pass: the bits rt_bn_moments gives on
 * the copy with w = len. One pass over sums about the plane's first
 * value, in float lanes. y NULL: the moments alone. */
void rt_bn_copy_moments(int rows, int len, const float *x, long xs, float *y, long ys, int relu,
                        double *mom);

/* rt_ref_bn_fwd, then with relu max(y, 0) as rt_relu; and rt_ref_bn_bwd
 * of dy masked by the ReLU's y > 0 with relu, as rt_relu_mask, dy
 * otherwise; with assign, the backward overwrites dx (as if it had been
 * cleared) instead of adding into it. Strides as there: x and dx x_ns, y
 * and dy y_ns.
 *
 * In training the forward takes the rows' moments from mom (rt_bn_moments
 * over all s->n samples, channel c's at mom + c * ms) where mom is not
 * NULL, else computes them, and saves the scale gamma / std it applied
 * in save_scale (unless NULL). The backward's mask is read from y (the
 * forward's output) or, with y NULL, recomputed from x, the saved mean,
 * the saved scale and beta exactly as the training forward computed y
 * (scale and beta are read only then): one tensor less to read.
 *
 * Channels are split over parts tasks of pool (NULL, or a small tensor:
 * all on the caller); each channel is computed whole by one task, so the
 * results do not depend on parts. Within float rounding of the reference,
 * not bit for bit: rows are summed in float (sixteen lanes), their sums
 * combined in double, and the affine maps are applied in float. */
/* (rt_bn_fwd with y NULL computes and saves the statistics only.) */
void rt_bn_fwd(rt_pool *pool, int parts, const rt_bn_shape *s, int training, int relu,
               const float *x, const double *mom, long ms, const float *gamma,
               const float *beta, float *run_mean, float *run_var, float *save_mean,
               float *save_invstd, float *save_scale, float *y);
void rt_bn_bwd(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int assign,
               const float *x, const float *y, const float *dy, const float *gamma,
               const float *beta, const float *save_mean, const float *save_invstd,
               const float *scale, float *dx, float *dgamma, float *dbeta);
/* rt_bn_bwd in training (y NULL) in two halves, for a consumer that makes
 * dx as it reads it (the cpu conv kernels' packing, rt_bn_dz): the sums,
 * dgamma and dbeta, and per channel dx's constants gm, kg, kx, reading x
 * and dy once; then any row of dx, rt_bn_dx_row (m: save_mean, k: scale,
 * b: beta), the bits rt_bn_bwd writes with assign. With w > 0, dy is the
 * gradient of a 2x2 max pool of the ReLU's output (planes w wide, as
 * rt_bn_pool_bwd's dp, samples p_ns apart, 0: packed), and the halves are
 * rt_bn_pool_bwd's (code: the pooling's windows): a plane's gradient at
 * the ReLU's output is rt_bn_pool_scatter's, and its rows of dx
 * rt_bn_dx_row's without the mask (relu 0) of that gradient. With rows (not pooled), each sample's row
 * sums of every channel were made already where dy was made (2 floats a
 * channel, rt_bn_grad_sums_row's, samples rows_ns floats apart): x and dy
 * are not read, and the sums are the same bits. Pooled with zx (the
 * windows' extremes of x, rt_bn_moments_pool's, in code's layout), the
 * sums come from the windows alone, x not read: the same terms in
 * another order. */
void rt_bn_bwd_sums(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int w, long p_ns,
                    const uint8_t *code, long code_ns, const float *zx, const float *rows,
                    long rows_ns, const float *x, const float *dy, const float *gamma,
                    const float *beta, const float *save_mean, const float *save_invstd,
                    const float *scale, float *dgamma, float *dbeta, float *gm, float *kg,
                    float *kx);
void rt_bn_dx_row(long len, const float *x, const float *dy, int relu, float m, float k, float b,
                  float gm, float kg, float kx, float *dx);
/* The same over rows of len floats (x and dy planes of rows * len), each
 * written ds floats apart in dx and followed by zeros to ds: a plane of
 * dz straight into a packed layout. */
void rt_bn_dx_rows(int rows, int len, const float *x, const float *dy, int relu, float m, float k,
                   float b, float gm, float kg, float kx, float *dx, long ds);
/* One row's two sums for rt_bn_bwd_sums, from the pre-activation x and
 * the gradient dy of batch norm's output (through the ReLU's mask
 * recomputed from x with relu; m: save_mean, k: scale, b: beta): sums[0]
 * of the masked dy, sums[1] of it times x - m. */
void rt_bn_grad_sums_row(long len, const float *x, const float *dy, int relu, float m, float k,
                         float b, float sums[2]);
/* rt_bn_grad_sums_row with relu, and then dy = 0 where the ReLU stops,
 * (x - m) * k + b not > 0 (rt_bn_affine_row's arithmetic), as it was
 * elsewhere: in one pass. The mask of a pool's windows from their
 * extremes x, as rt_bn_pool_out marks their codes. */
void rt_bn_grad_sums_stop_row(long len, const float *x, float *dy, float m, float k, float b,
                              float sums[2]);
/* The gradient at the ReLU's output of one h x w plane whose ReLU output
 * a 2x2 max pool read (rt_bn_pool_bwd's, into g), from the windows' codes
 * that rt_bn_out wrote as it pooled (code and dp: the plane's h/2 x w/2):
 * dp's value (0 + dp) at each window's first maximum, where that maximum
 * is > 0; 0 elsewhere. */
void rt_bn_pool_scatter(int h, int w, const uint8_t *code, const float *dp, float *g);
/* rt_bn_pool_scatter then rt_bn_dx_rows (relu 0) in one pass, without the
 * plane between them: the rows of dx (ds floats apart, zeros from w to
 * ds) of one h x w plane of x, from the windows' codes and the pool's
 * gradient dp (h/2 x w/2); the same bits. */
void rt_bn_pool_dx_rows(int h, int w, const uint8_t *code, const float *dp, const float *x,
                        float m, float gm, float kg, float kx, float *dx, long ds);
/* The gradient at the input of a ReLU followed by a 2x2 max pool, one h x
 * w plane (both even) from the ReLU's output y and the pool's gradient dp
 * (h/2 x w/2), straight into rows ds floats apart, zeros from each row's
 * w to ds: dp's value (0 + dp) at each window's first maximum (a later
 * value winning only when strictly greater) where it is > 0, 0 elsewhere.
 * The bits of rt_maxpool_bwd (assigning) then rt_relu_mask, in one pass
 * and without the plane between them. */
void rt_pool_relu_rows(int h, int w, const float *y, const float *dp, float *d, long ds);
/* The forward of a ReLU followed by a 2x2 max pool, one h x w plane
 * (both even, rows xs floats apart) of the ReLU's input x: the pool's
 * output p (h/2 x w/2), the bits of rt_relu_2d then rt_maxpool_fwd, and
 * each window's code (where its gradient goes: the first maximum of the
 * ReLU's output, 4 where that is not > 0) for rt_pool_code_rows. */
void rt_relu_pool_rows(int h, int w, const float *x, long xs, float *p, uint8_t *code);
/* rt_pool_relu_rows from the windows' codes that rt_relu_pool_rows wrote,
 * without the ReLU's output: the same bits. */
void rt_pool_code_rows(int h, int w, const uint8_t *code, const float *dp, float *d, long ds);
/* y = (x - m) * k + b, then max(., 0) with relu: a row as rt_bn_fwd's
 * training output writes it from its saved mean m and scale k. */
void rt_bn_affine_row(long len, const float *x, float m, float k, float b, int relu, float *y);
/* What a reader that makes its input from bn's z (rt_bn_x) does with it,
 * its channels planes of hw floats, its samples x_ns floats apart (z's
 * z_ns, or as x's): rt_bn_x_write writes channels c0 .. c1 - 1 of n
 * samples into x as batch norm's forward would have (rt_bn_affine_row);
 * rt_bn_x_sums takes sample i's row sums of them into bn->sums from dx,
 * that sample's input gradient (rt_bn_grad_sums_row), and with stops
 * zeroes it where the ReLU stopped (rt_bn_grad_sums_stop_row). */
void rt_bn_x_write(const rt_bn_x *bn, int n, long hw, long x_ns, float *x);
void rt_bn_x_sums(const rt_bn_x *bn, int64_t i, long hw, long x_ns, float *dx);
/* rt_bn_x_write's values for samples i0 .. i0 + m - 1 (m <= NB), in
 * lanes, as a linear layer's kernels read x: feature (c0 + c) hw + p of
 * sample i0 + j at x[((c0 + c) hw + p) NB + j]; lanes m .. NB - 1 and the
 * other channels' features not written. z's planes transposed, then
 * mapped in place: the same arithmetic, so the same bits. */
void rt_bn_x_lanes(const rt_bn_x *bn, int64_t i0, int m, long hw, long x_ns, float *x, int NB);
/* Sample i's plane of bn's channel c (of c1 - c0) in z, laid out as
 * above. */
const float *rt_bn_x_z(const rt_bn_x *bn, int64_t i, long hw, long x_ns, int c);

/* Batch norm with its ReLU followed by a 2x2 max pool (planes w wide,
 * both sides even) in training, without the normalised tensor: after
 * rt_bn_fwd with y NULL (the statistics only), rt_bn_out writes the
 * affine map and the ReLU from the saved mean and scale, bit for bit as
 * rt_bn_fwd's, into y (p NULL), or their max pool into p instead (y NULL;
 * samples p_ns apart, 0: packed; as rt_maxpool_fwd's). rt_bn_pool_bwd is
 * rt_maxpool_bwd (assigning) of the pool's gradient dp followed by
 * rt_bn_bwd with the mask recomputed (y NULL), bit for bit, reading dp
 * where they read the pool's input gradient: x is read twice and dp, a
 * quarter of its size, twice; planes of at most RT_BN_POOL_HW. Pooling,
 * rt_bn_out also writes each window's code (code not NULL, a byte a
 * window, samples code_ns apart, 0: packed): the position of the
 * window's first maximum (a later value winning only when strictly
 * greater, as rt_maxpool_bwd's), 4 where it is not > 0; with p NULL, the
 * codes alone. rt_bn_pool_bwd and rt_bn_bwd_sums (pooled) route dp by
 * them instead of finding each maximum again. */
enum { RT_BN_POOL_HW = 4096 };
void rt_bn_out(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int w, const float *x,
               const float *beta, const float *save_mean, const float *scale, float *y, float *p,
               long p_ns, uint8_t *code, long code_ns);
/* rt_bn_out pooled, from the windows' extremes zx that rt_bn_moments_pool
 * took (in code's layout): the pool's output into p (NULL: not written)
 * and code 4 where it is not > 0; zx and code a quarter of x's size. */
void rt_bn_pool_out(rt_pool *pool, int parts, const rt_bn_shape *s, int w, const float *zx,
                    const float *beta, const float *save_mean, const float *scale, float *p,
                    long p_ns, uint8_t *code, long code_ns);
void rt_bn_pool_bwd(rt_pool *pool, int parts, const rt_bn_shape *s, int w, int assign,
                    const uint8_t *code, long code_ns, const float *x, const float *dp, long p_ns,
                    const float *gamma, const float *beta, const float *save_mean,
                    const float *save_invstd, const float *scale, float *dx, float *dgamma,
                    float *dbeta);

/* rt_ref_sgd over params [i0, i1). */
void rt_sgd(size_t i0, size_t i1, float *w, const float *g, float *v,
            const uint8_t *mask, float lr, float momentum, float decay);

#endif
