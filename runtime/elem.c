/* elem.c: vectorisable elementwise kernels (see elem.h). The loops are
 * written without branches on data and with restrict pointers, so that
 * -O3 turns them into SIMD selects and blends. */
#include "runtime/elem.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static void relu_inplace(long len, float *restrict y) {
  for (long i = 0; i < len; i++) {
    float v = y[i];
    y[i] = v > 0.0f ? v : 0.0f;
  }
}

void rt_relu(long len, const float *x, float *y) {
  if (x == y) {
    relu_inplace(len, y);
    return;
  }
  for (long i = 0; i < len; i++) {
    float v = x[i]; /* one load: the select then vectorises */
    y[i] = v > 0.0f ? v : 0.0f;
  }
}

void rt_copy_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  for (int r = 0; r < rows; r++) {
    const float *restrict a = x + r * xs;
    float *restrict b = y + r * ys;
    for (int i = 0; i < len; i++) b[i] = a[i];
  }
}

void rt_add_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  for (int r = 0; r < rows; r++) {
    const float *restrict a = x + r * xs;
    float *restrict b = y + r * ys;
    for (int i = 0; i < len; i++) b[i] += a[i];
  }
}

void rt_relu_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  for (int r = 0; r < rows; r++) {
    const float *restrict a = x + r * xs;
    float *restrict b = y + r * ys;
    for (int i = 0; i < len; i++) {
      float v = a[i];
      b[i] = v > 0.0f ? v : 0.0f;
    }
  }
}

void rt_pad_rows(int rows, int len, const float *x, long xs, float *y, long ys, int lpad,
                 const float *gate, long gs) {
  for (int r = 0; r < rows; r++) {
    const float *restrict a = x + r * xs;
    float *restrict b = y + r * ys;
    for (int i = 0; i < lpad; i++) b[i] = 0.0f;
    if (gate) {
      const float *restrict g = gate + r * gs;
      for (int i = 0; i < len; i++) { /* as rt_relu_mask: -0 becomes +0 */
        float v = 0.0f + a[i]; /* loaded unconditionally, so that it vectorises */
        b[lpad + i] = g[i] > 0.0f ? v : 0.0f;
      }
    } else {
      for (int i = 0; i < len; i++) b[lpad + i] = a[i];
    }
    for (long i = lpad + len; i < ys; i++) b[i] = 0.0f;
  }
}

float rt_sum(long len, const float *x) {
  float a[8] = {0};
  long i = 0;
  for (; i + 8 <= len; i += 8)
    for (int j = 0; j < 8; j++) a[j] += x[i + j];
  float tail = 0.0f;
  for (; i < len; i++) tail += x[i];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

void rt_relu_mask(long len, const float *restrict y, const float *restrict dy,
                  float *restrict dx) {
  /* 0 + dy, as the reference's accumulation into zeros: -0 becomes +0 */
  for (long i = 0; i < len; i++) {
    float g = 0.0f + dy[i];
    dx[i] = y[i] > 0.0f ? g : 0.0f;
  }
}

static long pool_x_ns(const rt_pool_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->c * s->h * s->w;
}

static long pool_y_ns(const rt_pool_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->c * (s->h / s->f) * (s->w / s->f);
}

static inline float max2(float a, float b, float c, float d) {
  float m = a;
  m = b > m ? b : m;
  m = c > m ? c : m;
  return d > m ? d : m;
}

void rt_maxpool_fwd(const rt_pool_shape *s, int n0, int n1, const float *x, float *y) {
  if (s->f != 2) {
    rt_pool_shape t = *s;
    t.n = n1 - n0, t.x_ns = pool_x_ns(s), t.y_ns = pool_y_ns(s);
    rt_ref_maxpool_fwd(&t, x + n0 * t.x_ns, y + n0 * t.y_ns);
    return;
  }
  const int OH = s->h / 2, OW = s->w / 2, W = s->w;
  const long xns = pool_x_ns(s), yns = pool_y_ns(s);
  for (int n = n0; n < n1; n++)
    for (int c = 0; c < s->c; c++) {
      const float *xp = x + n * xns + (long)c * s->h * W;
      float *restrict yp = y + n * yns + (long)c * OH * OW;
      for (int oy = 0; oy < OH; oy++) {
        const float *r0 = xp + (long)2 * oy * W, *r1 = r0 + W;
        for (int ox = 0; ox < OW; ox++)
          yp[(long)oy * OW + ox] =
              max2(r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
      }
    }
}

/* The 2x2 backward; set: dx = 0 + the gradient (every position of an even
 * plane is in one window), else dx += it. */
static void pool2_bwd(const rt_pool_shape *s, int n0, int n1, const float *x, const float *dy,
                      float *dx, int set) {
  const int OH = s->h / 2, OW = s->w / 2, W = s->w;
  const long xns = pool_x_ns(s), yns = pool_y_ns(s);
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps();
#endif
  for (int n = n0; n < n1; n++)
    for (int c = 0; c < s->c; c++) {
      const long plane = (long)c * s->h * W;
      const float *xp = x + n * xns + plane;
      const float *dyp = dy + n * yns + (long)c * OH * OW;
      float *dxp = dx + n * xns + plane;
      for (int oy = 0; oy < OH; oy++) {
        /* dx is another tensor than x and dy */
        const float *restrict r0 = xp + (long)2 * oy * W, *restrict r1 = r0 + W;
        const float *restrict g0 = dyp + (long)oy * OW;
        float *restrict d0 = dxp + (long)2 * oy * W, *restrict d1 = d0 + W;
        int ox = 0;
#if defined(__SSE2__)
        for (; ox + 4 <= OW; ox += 4) { /* four windows: the loop below, in lanes */
          __m128 p0 = _mm_loadu_ps(r0 + 2 * ox), p1 = _mm_loadu_ps(r0 + 2 * ox + 4);
          __m128 q0 = _mm_loadu_ps(r1 + 2 * ox), q1 = _mm_loadu_ps(r1 + 2 * ox + 4);
          __m128 a = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
          __m128 b = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
          __m128 c = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
          __m128 d = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
          __m128 t1 = _mm_cmpgt_ps(b, a);
          __m128 m = _mm_or_ps(_mm_and_ps(t1, b), _mm_andnot_ps(t1, a));
          __m128 t2 = _mm_cmpgt_ps(c, m);
          m = _mm_or_ps(_mm_and_ps(t2, c), _mm_andnot_ps(t2, m));
          __m128 t3 = _mm_cmpgt_ps(d, m), g = _mm_loadu_ps(g0 + ox);
          __m128 ga = _mm_andnot_ps(_mm_or_ps(_mm_or_ps(t1, t2), t3), g);
          __m128 gb = _mm_andnot_ps(_mm_or_ps(t2, t3), _mm_and_ps(t1, g));
          __m128 gc = _mm_andnot_ps(t3, _mm_and_ps(t2, g)), gd = _mm_and_ps(t3, g);
          __m128 o0 = set ? zero : _mm_loadu_ps(d0 + 2 * ox);
          __m128 o1 = set ? zero : _mm_loadu_ps(d0 + 2 * ox + 4);
          __m128 o2 = set ? zero : _mm_loadu_ps(d1 + 2 * ox);
          __m128 o3 = set ? zero : _mm_loadu_ps(d1 + 2 * ox + 4);
          _mm_storeu_ps(d0 + 2 * ox, _mm_add_ps(o0, _mm_unpacklo_ps(ga, gb)));
          _mm_storeu_ps(d0 + 2 * ox + 4, _mm_add_ps(o1, _mm_unpackhi_ps(ga, gb)));
          _mm_storeu_ps(d1 + 2 * ox, _mm_add_ps(o2, _mm_unpacklo_ps(gc, gd)));
          _mm_storeu_ps(d1 + 2 * ox + 4, _mm_add_ps(o3, _mm_unpackhi_ps(gc, gd)));
        }
#endif
        for (; ox < OW; ox++) {
          /* the first maximum, in rt_ref_maxpool's scan order (0,0), (0,1),
           * (1,0), (1,1), a later value winning only when strictly greater;
           * as masks, without branches */
          float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
          int t1 = b > a;
          float m = t1 ? b : a;
          int t2 = c > m;
          m = t2 ? c : m;
          int t3 = d > m;
          float g = g0[ox];
          float base[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if (!set) base[0] = d0[2 * ox], base[1] = d0[2 * ox + 1], base[2] = d1[2 * ox],
                    base[3] = d1[2 * ox + 1];
          d0[2 * ox] = base[0] + ((!t1 & !t2 & !t3) ? g : 0.0f);
          d0[2 * ox + 1] = base[1] + ((t1 & !t2 & !t3) ? g : 0.0f);
          d1[2 * ox] = base[2] + ((t2 & !t3) ? g : 0.0f);
          d1[2 * ox + 1] = base[3] + (t3 ? g : 0.0f);
        }
      }
    }
}

void rt_maxpool_bwd(const rt_pool_shape *s, int n0, int n1, const float *x,
                    const float *dy, float *dx, int assign) {
  const long xns = pool_x_ns(s), yns = pool_y_ns(s);
  /* 2x2 windows tiling the plane write every position; else assigning is
   * adding into zeros (positions no window covers included) */
  int tiled = s->f == 2 && s->h % 2 == 0 && s->w % 2 == 0;
  if (assign && !tiled)
    for (int n = n0; n < n1; n++)
      memset(dx + n * xns, 0, (size_t)s->c * s->h * s->w * sizeof *dx);
  if (s->f != 2) {
    rt_pool_shape t = *s;
    t.n = n1 - n0, t.x_ns = xns, t.y_ns = yns;
    rt_ref_maxpool_bwd(&t, x + n0 * t.x_ns, dy + n0 * t.y_ns, dx + n0 * t.x_ns);
    return;
  }
  pool2_bwd(s, n0, n1, x, dy, dx, assign && tiled);
}

void rt_sgd(size_t i0, size_t i1, float *restrict w, const float *restrict g,
            float *restrict v, const uint8_t *restrict mask, float lr,
            float momentum, float decay) {
  if (!mask) {
    for (size_t i = i0; i < i1; i++) {
      float vi = momentum * v[i] + (g[i] + decay * w[i]);
      v[i] = vi;
      w[i] -= lr * vi;
    }
    return;
  }
  for (size_t i = i0; i < i1; i++) {
    float vi = momentum * v[i] + (g[i] + decay * w[i]);
    float wi = w[i] - lr * vi;
    v[i] = mask[i] ? vi : v[i];
    w[i] = mask[i] ? wi : w[i];
  }
}

void rt_zero_masked(float *v, const uint8_t *m, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  /* 16 mask bytes at a time, widened to four masks of four lanes */
  const __m128i zero = _mm_setzero_si128();
  for (; i + 16 <= n; i += 16) {
    __m128i drop = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(m + i)), zero);
    __m128i lo = _mm_unpacklo_epi8(drop, drop), hi = _mm_unpackhi_epi8(drop, drop);
    __m128i d[4] = {_mm_unpacklo_epi16(lo, lo), _mm_unpackhi_epi16(lo, lo),
                    _mm_unpacklo_epi16(hi, hi), _mm_unpackhi_epi16(hi, hi)};
    for (int k = 0; k < 4; k++)
      _mm_storeu_ps(v + i + 4 * k,
                    _mm_andnot_ps(_mm_castsi128_ps(d[k]), _mm_loadu_ps(v + i + 4 * k)));
  }
#endif
  for (; i < n; i++) {
    uint32_t u;
    memcpy(&u, v + i, sizeof u);
    u &= 0u - (uint32_t)(m[i] != 0);
    memcpy(v + i, &u, sizeof u);
  }
}

void rt_sgd_packed(size_t j0, size_t j1, const int32_t *restrict idx, float *restrict w,
                   const float *restrict g, float *restrict v, float lr, float momentum,
                   float decay, float *restrict copy, const int32_t *restrict at) {
  for (size_t j = j0; j < j1; j++) {
    int32_t i = idx[j];
    float vi = momentum * v[i] + (g[j] + decay * w[i]);
    v[i] = vi;
    w[i] -= lr * vi;
    if (copy) copy[at[j]] = w[i];
  }
}

static void transpose_scalar(int r0, int r1, int c0, int c1, const float *src, long ss,
                             float *dst, long ds, int add) {
  for (int r = r0; r < r1; r++)
    for (int c = c0; c < c1; c++) {
      float v = src[r * ss + c];
      dst[c * ds + r] = add ? dst[c * ds + r] + v : v;
    }
}

/* Rows in blocks of 16, so that the block's source lines stay in L1 while
 * its columns are swept. */
enum { TR_ROWS = 16 };

void rt_transpose(int rows, int cols, const float *src, long ss, float *dst, long ds,
                  int add) {
#if defined(__SSE2__)
  for (int r0 = 0; r0 < rows; r0 += TR_ROWS) {
    int r1 = r0 + TR_ROWS < rows ? r0 + TR_ROWS : rows, r4 = r0 + (r1 - r0) / 4 * 4;
    int c4 = cols / 4 * 4;
    for (int c = 0; c < c4; c += 4)
      for (int r = r0; r < r4; r += 4) {
        const float *p = src + r * ss + c;
        __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + ss);
        __m128 e = _mm_loadu_ps(p + 2 * ss), f = _mm_loadu_ps(p + 3 * ss);
        _MM_TRANSPOSE4_PS(a, b, e, f);
        float *q = dst + c * ds + r;
        if (add) {
          a = _mm_add_ps(_mm_loadu_ps(q), a);
          b = _mm_add_ps(_mm_loadu_ps(q + ds), b);
          e = _mm_add_ps(_mm_loadu_ps(q + 2 * ds), e);
          f = _mm_add_ps(_mm_loadu_ps(q + 3 * ds), f);
        }
        _mm_storeu_ps(q, a), _mm_storeu_ps(q + ds, b);
        _mm_storeu_ps(q + 2 * ds, e), _mm_storeu_ps(q + 3 * ds, f);
      }
    transpose_scalar(r4, r1, 0, c4, src, ss, dst, ds, add);
    transpose_scalar(r0, r1, c4, cols, src, ss, dst, ds, add);
  }
#else
  transpose_scalar(0, rows, 0, cols, src, ss, dst, ds, add);
#endif
}

/* Outputs o in [*lo, *hi) read input o * stride - pad + tap inside [0, size). */
static void tap_range(int tap, int pad, int stride, int size, int osize, int *lo, int *hi) {
  int first = pad - tap, last = size - 1 + pad - tap;
  int l = first > 0 ? (first + stride - 1) / stride : 0;
  int h = last < 0 ? 0 : last / stride + 1;
  if (h > osize) h = osize;
  *lo = l, *hi = h < l ? l : h;
}

/* Tap (ky, kx) of channel ci: the outputs [oy0, oy1) x [ox0, ox1) that
 * read inside the image, and the input offset the first of them reads.
 * 0 when the tap reads only padding. */
typedef struct tap_win {
  int oy0, oy1, ox0, ox1;
  long in;
} tap_win;

static int tap_window(const rt_conv_shape *s, int ci, int ky, int kx, tap_win *t) {
  tap_range(ky, s->pad, s->stride, s->h, s->oh, &t->oy0, &t->oy1);
  tap_range(kx, s->pad, s->stride, s->w, s->ow, &t->ox0, &t->ox1);
  t->in = ((long)ci * s->h + t->oy0 * s->stride - s->pad + ky) * s->w + t->ox0 * s->stride -
          s->pad + kx;
  return t->oy1 > t->oy0 && t->ox1 > t->ox0;
}

void rt_im2col(const rt_conv_shape *s, const float *x, float *col) {
  const int st = s->stride, OW = s->ow;
  const long P = (long)s->oh * OW;
  for (int ci = 0; ci < s->cin; ci++)
    for (int ky = 0; ky < s->k; ky++)
      for (int kx = 0; kx < s->k; kx++, col += P) {
        tap_win t;
        int live = tap_window(s, ci, ky, kx, &t);
        if (t.oy0 > 0 || t.oy1 < s->oh || t.ox0 > 0 || t.ox1 < OW)
          memset(col, 0, (size_t)P * sizeof *col);
        if (!live) continue;
        const float *src = x + t.in;
        float *dst = col + (long)t.oy0 * OW + t.ox0;
        if (st == 1) {
          rt_copy_2d(t.oy1 - t.oy0, t.ox1 - t.ox0, src, s->w, dst, OW);
          continue;
        }
        for (int oy = t.oy0; oy < t.oy1; oy++, src += (long)st * s->w, dst += OW)
          for (int i = 0; i < t.ox1 - t.ox0; i++) dst[i] = src[(long)i * st];
      }
}

void rt_col2im_add(const rt_conv_shape *s, const float *col, float *dx) {
  const int st = s->stride, OW = s->ow;
  const long P = (long)s->oh * OW;
  for (int ci = 0; ci < s->cin; ci++)
    for (int ky = 0; ky < s->k; ky++)
      for (int kx = 0; kx < s->k; kx++, col += P) {
        tap_win t;
        if (!tap_window(s, ci, ky, kx, &t)) continue;
        float *dst = dx + t.in;
        const float *src = col + (long)t.oy0 * OW + t.ox0;
        if (st == 1) {
          rt_add_2d(t.oy1 - t.oy0, t.ox1 - t.ox0, src, OW, dst, s->w);
          continue;
        }
        for (int oy = t.oy0; oy < t.oy1; oy++, dst += (long)st * s->w, src += OW)
          for (int i = 0; i < t.ox1 - t.ox0; i++) dst[(long)i * st] += src[i];
      }
}

/* Batch norm. A channel's rows (one per sample, hw floats) are summed in
 * float, eight lanes as rt_sum, while they sit in L1; the row results are
 * combined in double, so that the error grows with hw, not with n * hw.
 * The mean and variance come from each row's sums about its own float
 * mean (shifted sums: no cancellation when the mean is large against the
 * spread), merged row by row as Chan et al.'s parallel variance. */

static long bn_x_ns(const rt_bn_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->c * s->hw;
}

static long bn_y_ns(const rt_bn_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->c * s->hw;
}

static float lanes_sum(const float a[8]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Sum and sum of squares of x - m over one row. */
static void row_moments(long len, const float *restrict x, float m, float *s1, float *s2) {
  float a[8] = {0}, b[8] = {0};
  long i = 0;
  for (; i + 8 <= len; i += 8)
    for (int j = 0; j < 8; j++) {
      float d = x[i + j] - m;
      a[j] += d, b[j] += d * d;
    }
  float ta = 0.0f, tb = 0.0f;
  for (; i < len; i++) {
    float d = x[i] - m;
    ta += d, tb += d * d;
  }
  *s1 = lanes_sum(a) + ta, *s2 = lanes_sum(b) + tb;
}

/* y = (x - m) * k + b, and max(., 0) with relu (as rt_relu: -0 and NaN
 * become +0). */
static void row_affine(long len, const float *restrict x, float m, float k, float b, int relu,
                       float *restrict y) {
  if (relu)
    for (long i = 0; i < len; i++) {
      float v = (x[i] - m) * k + b;
      y[i] = v > 0.0f ? v : 0.0f;
    }
  else
    for (long i = 0; i < len; i++) y[i] = (x[i] - m) * k + b;
}

typedef struct bn_job {
  const rt_bn_shape *s;
  int parts, training, relu, assign;
  const float *x, *y, *dy, *gamma, *beta, *save_mean, *save_invstd;
  float *run_mean, *run_var, *save_mean_w, *save_invstd_w, *out, *dx, *dgamma, *dbeta;
} bn_job;

/* Both passes run over a group of up to BN_GROUP channels sample by
 * sample, reading each sample's rows of the group as one contiguous
 * stretch: measured on the 2-core VM, faster than a channel at a time
 * (whose rows, one per sample, are short strided runs), even though a
 * channel at a time could keep its rows in L2 between the passes. The
 * per-channel order of the sums (samples in order) is the same either way. */
enum { BN_GROUP = 64 };

static void bn_fwd_task(void *arg, int part) {
  const bn_job *j = arg;
  const rt_bn_shape *s = j->s;
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const double count = (double)s->n * hw;
  const int c0 = (int)((long)s->c * part / j->parts), c1 = (int)((long)s->c * (part + 1) / j->parts);
  const int G = BN_GROUP;
  for (int g0 = c0; g0 < c1; g0 += G) {
    const int g1 = g0 + G < c1 ? g0 + G : c1;
    double cnt = 0.0, mean[BN_GROUP] = {0}, m2[BN_GROUP] = {0};
    float m[BN_GROUP], k[BN_GROUP];
    if (j->training) {
      assert(count > 0);
      for (int n = 0; n < s->n && hw > 0; n++) {
        const double tot = cnt + hw;
        for (int c = g0; c < g1; c++) {
          const float *xp = j->x + n * xns + c * hw;
          float rm = rt_sum(hw, xp) / (float)hw; /* a shift near the row's mean */
          float s1, s2;
          row_moments(hw, xp, rm, &s1, &s2);
          double rmean = rm + (double)s1 / hw, rm2 = s2 - (double)s1 * s1 / hw;
          if (rm2 < 0.0) rm2 = 0.0;
          double d = rmean - mean[c - g0];
          mean[c - g0] += d * hw / tot;
          m2[c - g0] += rm2 + d * d * cnt * hw / tot;
        }
        cnt = tot;
      }
    }
    for (int c = g0; c < g1; c++) {
      double mu, invstd;
      if (j->training) {
        double var = m2[c - g0] / count;
        mu = mean[c - g0], invstd = 1.0 / sqrt(var + RT_BN_EPS);
        if (j->save_mean_w) j->save_mean_w[c] = (float)mu;
        if (j->save_invstd_w) j->save_invstd_w[c] = (float)invstd;
        if (j->run_mean && j->run_var) {
          double unbiased = count > 1 ? m2[c - g0] / (count - 1) : var;
          j->run_mean[c] = (float)((1 - RT_BN_MOMENTUM) * j->run_mean[c] + RT_BN_MOMENTUM * mu);
          j->run_var[c] =
              (float)((1 - RT_BN_MOMENTUM) * j->run_var[c] + RT_BN_MOMENTUM * unbiased);
        }
      } else {
        mu = j->run_mean[c];
        invstd = 1.0 / sqrt((double)j->run_var[c] + RT_BN_EPS);
      }
      m[c - g0] = (float)mu, k[c - g0] = (float)(j->gamma[c] * invstd);
    }
    for (int n = 0; n < s->n; n++)
      for (int c = g0; c < g1; c++)
        row_affine(hw, j->x + n * xns + c * hw, m[c - g0], k[c - g0], j->beta[c], j->relu,
                   j->out + n * yns + c * hw);
  }
}

/* Sum of g and of g * (x - m), g = dy masked by y > 0 with relu (as
 * rt_relu_mask), over one row. */
static void row_grad_sums(long len, const float *restrict x, const float *restrict y,
                          const float *restrict dy, int relu, float m, float *sg, float *sgx) {
  float a[8] = {0}, b[8] = {0}, ta = 0.0f, tb = 0.0f;
  long i = 0;
  if (relu) {
#if defined(__SSE2__)
    /* GCC 12 does not if-convert the select of the loop below: the same
     * lanes, by hand (an and with the mask is the select) */
    const __m128 zero = _mm_setzero_ps(), mv = _mm_set1_ps(m);
    __m128 a0 = zero, a1 = zero, b0 = zero, b1 = zero;
    for (; i + 8 <= len; i += 8) {
      __m128 g0 = _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(y + i), zero), _mm_loadu_ps(dy + i));
      __m128 g1 =
          _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(y + i + 4), zero), _mm_loadu_ps(dy + i + 4));
      a0 = _mm_add_ps(a0, g0), a1 = _mm_add_ps(a1, g1);
      b0 = _mm_add_ps(b0, _mm_mul_ps(g0, _mm_sub_ps(_mm_loadu_ps(x + i), mv)));
      b1 = _mm_add_ps(b1, _mm_mul_ps(g1, _mm_sub_ps(_mm_loadu_ps(x + i + 4), mv)));
    }
    _mm_storeu_ps(a, a0), _mm_storeu_ps(a + 4, a1);
    _mm_storeu_ps(b, b0), _mm_storeu_ps(b + 4, b1);
#endif
    for (; i + 8 <= len; i += 8)
      for (int t = 0; t < 8; t++) {
        float g = 0.0f + dy[i + t];
        g = y[i + t] > 0.0f ? g : 0.0f;
        a[t] += g, b[t] += g * (x[i + t] - m);
      }
    for (; i < len; i++) {
      float g = 0.0f + dy[i];
      g = y[i] > 0.0f ? g : 0.0f;
      ta += g, tb += g * (x[i] - m);
    }
  } else {
    for (; i + 8 <= len; i += 8)
      for (int t = 0; t < 8; t++) a[t] += dy[i + t], b[t] += dy[i + t] * (x[i + t] - m);
    for (; i < len; i++) ta += dy[i], tb += dy[i] * (x[i] - m);
  }
  *sg = lanes_sum(a) + ta, *sgx = lanes_sum(b) + tb;
}

/* dx += (g - gm) * k - (x - m) * kx; with assign, dx = 0 + it (as added
 * into zeros: -0 becomes +0), dx not read. */
static void row_dx(long len, const float *restrict x, const float *restrict y,
                   const float *restrict dy, int relu, float m, float gm, float k, float kx,
                   int assign, float *restrict dx) {
  if (relu && assign)
    for (long i = 0; i < len; i++) {
      float g = 0.0f + dy[i];
      g = y[i] > 0.0f ? g : 0.0f;
      dx[i] = 0.0f + ((g - gm) * k - (x[i] - m) * kx);
    }
  else if (relu)
    for (long i = 0; i < len; i++) {
      float g = 0.0f + dy[i];
      g = y[i] > 0.0f ? g : 0.0f;
      dx[i] += (g - gm) * k - (x[i] - m) * kx;
    }
  else if (assign)
    for (long i = 0; i < len; i++) dx[i] = 0.0f + ((dy[i] - gm) * k - (x[i] - m) * kx);
  else
    for (long i = 0; i < len; i++) dx[i] += (dy[i] - gm) * k - (x[i] - m) * kx;
}

static void bn_bwd_task(void *arg, int part) {
  const bn_job *j = arg;
  const rt_bn_shape *s = j->s;
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const double count = (double)s->n * hw;
  const int c0 = (int)((long)s->c * part / j->parts), c1 = (int)((long)s->c * (part + 1) / j->parts);
  const int G = BN_GROUP;
  for (int g0 = c0; g0 < c1; g0 += G) {
    const int g1 = g0 + G < c1 ? g0 + G : c1;
    double sdy[BN_GROUP] = {0}, sdyx[BN_GROUP] = {0};
    float gm[BN_GROUP], kf[BN_GROUP], kx[BN_GROUP];
    for (int n = 0; n < s->n; n++)
      for (int c = g0; c < g1; c++) {
        float a, b;
        row_grad_sums(hw, j->x + n * xns + c * hw, j->relu ? j->y + n * yns + c * hw : NULL,
                      j->dy + n * yns + c * hw, j->relu, j->save_mean[c], &a, &b);
        sdy[c - g0] += a, sdyx[c - g0] += b;
      }
    for (int c = g0; c < g1; c++) {
      const double invstd = j->save_invstd[c], sdyxh = sdyx[c - g0] * invstd;
      j->dbeta[c] = (float)sdy[c - g0];
      j->dgamma[c] = (float)sdyxh;
      /* dx = k * (g - mean(g) - xhat * mean(g * xhat)), as the reference */
      const double k = j->gamma[c] * invstd;
      gm[c - g0] = (float)(sdy[c - g0] / count), kf[c - g0] = (float)k;
      kx[c - g0] = (float)(k * invstd * (sdyxh / count));
    }
    for (int n = 0; n < s->n; n++)
      for (int c = g0; c < g1; c++)
        row_dx(hw, j->x + n * xns + c * hw, j->relu ? j->y + n * yns + c * hw : NULL,
               j->dy + n * yns + c * hw, j->relu, j->save_mean[c], gm[c - g0], kf[c - g0],
               kx[c - g0], j->assign, j->dx + n * xns + c * hw);
  }
}

/* Below this many values a layer's batch norm stays on the caller: a
 * dispatch to sleeping workers costs tens of microseconds (pool.c). */
enum { BN_SPLIT = 1 << 14 };

static int bn_parts(rt_pool *pool, int parts, const rt_bn_shape *s) {
  if (!pool || (long)s->n * s->c * s->hw < BN_SPLIT) return 1;
  if (parts > s->c) parts = s->c;
  return parts < 1 ? 1 : parts;
}

void rt_bn_fwd(rt_pool *pool, int parts, const rt_bn_shape *s, int training, int relu,
               const float *x, const float *gamma, const float *beta, float *run_mean,
               float *run_var, float *save_mean, float *save_invstd, float *y) {
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s), .training = training, .relu = relu,
              .x = x, .gamma = gamma, .beta = beta, .run_mean = run_mean, .run_var = run_var,
              .save_mean_w = save_mean, .save_invstd_w = save_invstd, .out = y};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_fwd_task, &j);
  else bn_fwd_task(&j, 0);
}

void rt_bn_bwd(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int assign,
               const float *x, const float *y, const float *dy, const float *gamma,
               const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
               float *dbeta) {
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s), .relu = relu, .assign = assign,
              .x = x, .y = y,
              .dy = dy, .gamma = gamma, .save_mean = save_mean, .save_invstd = save_invstd,
              .dx = dx, .dgamma = dgamma, .dbeta = dbeta};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_bwd_task, &j);
  else bn_bwd_task(&j, 0);
}
