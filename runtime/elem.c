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
/* A few hot kernels have an AVX2 twin, chosen at run time: the runtime is
 * built for the baseline x86-64. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ELEM_AVX2 1
#else
#define ELEM_AVX2 0
#endif

/* The widest vectors the kernels below may take (rt_elem_set_isa): the
 * CPU's widest unless capped. */
static int isa_cap = RT_ISA_AVX512;

void rt_elem_set_isa(int level) { isa_cap = level; }

#if ELEM_AVX2
static int use_avx2(void) { return isa_cap >= RT_ISA_AVX2 && __builtin_cpu_supports("avx2"); }
/* AVX2 with the fused multiply-adds (the kernels that need both) */
static int use_avx2_fma(void) { return use_avx2() && __builtin_cpu_supports("fma"); }
/* AVX-512 with its byte and 128/256-bit forms (every AVX-512 CPU but
 * the Xeon Phi's) */
static int use_avx512(void) {
  return isa_cap >= RT_ISA_AVX512 && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

/* Lanes [0, n) of 16 (none for n <= 0). */
static inline __mmask16 lanes16(int n) {
  return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}
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

/* The row operations of rt_copy_2d, rt_set_2d, rt_relu_2d and rt_add_2d. */
enum { ROWS_COPY, ROWS_SET, ROWS_RELU, ROWS_ADD };

#if ELEM_AVX2
/* One op on eight values, as the scalar loops below do it. */
__attribute__((target("avx2"))) static inline __m256 rows8_op(int op, __m256 a, const float *b) {
  const __m256 zero = _mm256_setzero_ps();
  switch (op) {
  case ROWS_SET: return _mm256_add_ps(zero, a);
  case ROWS_RELU: return _mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_GT_OQ), a);
  case ROWS_ADD: return _mm256_add_ps(_mm256_loadu_ps(b), a);
  default: return a;
  }
}

/* The row operations on AVX2, for rows of at least 8 (the conv's planes
 * are rows of 28 or 14): each row by eights, the last eight overlapping
 * the ones before. Writing a value twice gives it again; ADD's last
 * eight are summed before the row's others are written. The same
 * operations on each value, so the same bits. */
__attribute__((target("avx2"))) static void rows_avx2(int op, int rows, int len, const float *x,
                                                      long xs, float *y, long ys) {
  for (int r = 0; r < rows; r++) {
    const float *a = x + r * xs;
    float *b = y + r * ys;
    __m256 last = rows8_op(op, _mm256_loadu_ps(a + len - 8), b + len - 8);
    for (int i = 0; i + 8 <= len; i += 8)
      _mm256_storeu_ps(b + i, rows8_op(op, _mm256_loadu_ps(a + i), b + i));
    _mm256_storeu_ps(b + len - 8, last);
  }
}
#endif

/* The op on rows of len, x's xs apart, y's ys apart. */
static void rows_op(int op, int rows, int len, const float *x, long xs, float *y, long ys) {
#if ELEM_AVX2
  if (len >= 8 && use_avx2()) {
    rows_avx2(op, rows, len, x, xs, y, ys);
    return;
  }
#endif
  for (int r = 0; r < rows; r++) {
    const float *restrict a = x + r * xs;
    float *restrict b = y + r * ys;
    switch (op) {
    case ROWS_SET:
      for (int i = 0; i < len; i++) b[i] = 0.0f + a[i];
      break;
    case ROWS_RELU:
      for (int i = 0; i < len; i++) {
        float v = a[i];
        b[i] = v > 0.0f ? v : 0.0f;
      }
      break;
    case ROWS_ADD:
      for (int i = 0; i < len; i++) b[i] += a[i];
      break;
    default:
      for (int i = 0; i < len; i++) b[i] = a[i];
    }
  }
}

void rt_copy_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  rows_op(ROWS_COPY, rows, len, x, xs, y, ys);
}

void rt_add_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  rows_op(ROWS_ADD, rows, len, x, xs, y, ys);
}

void rt_set_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  rows_op(ROWS_SET, rows, len, x, xs, y, ys);
}

void rt_relu_2d(int rows, int len, const float *x, long xs, float *y, long ys) {
  rows_op(ROWS_RELU, rows, len, x, xs, y, ys);
}

/* A float through map (row_affine's arithmetic), and four in lanes. */
static inline float map1(const rt_affine *f, float x) {
  float v = (x - f->m) * f->k + f->b;
  return !f->relu || v > 0.0f ? v : 0.0f;
}
#if defined(__SSE2__)
static inline __m128 map4(const rt_affine *f, __m128 x) {
  __m128 v = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(x, _mm_set1_ps(f->m)), _mm_set1_ps(f->k)),
                        _mm_set1_ps(f->b));
  return f->relu ? _mm_and_ps(_mm_cmpgt_ps(v, _mm_setzero_ps()), v) : v;
}
#endif

#if ELEM_AVX2
/* (v - m) * k + b on eight lanes, row_affine's arithmetic (no fused
 * multiply-add): the same bits as the scalar and SSE maps. */
__attribute__((target("avx2"))) static inline __m256 affine8(__m256 v, __m256 mv, __m256 kv,
                                                             __m256 bv) {
  return _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, mv), kv), bv);
}

/* rt_pad_rows on AVX2 for rows of at least 8: each row's values by
 * eights, the last eight overlapping the one before (the same values
 * written again: y is not x), the map's constants in registers; the
 * same operations on each value, so the same bits. */
__attribute__((target("avx2"))) static inline __m256 pad8_avx2(const float *a, const float *g,
                                                                const rt_affine *map, __m256 mv,
                                                                __m256 kv, __m256 bv) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 v = _mm256_loadu_ps(a);
  if (g) /* 0 + a, as rt_relu_mask */
    return _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(g), zero, _CMP_GT_OQ),
                         _mm256_add_ps(zero, v));
  if (!map) return v;
  v = affine8(v, mv, kv, bv);
  return map->relu ? _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ), v) : v;
}

__attribute__((target("avx2"))) static void pad_rows_avx2(int rows, int len, const float *x,
                                                          long xs, float *y, long ys, int lpad,
                                                          const float *gate, long gs,
                                                          const rt_affine *map) {
  const rt_affine f = map ? *map : (rt_affine){0.0f, 0.0f, 0.0f, 0};
  const __m256 mv = _mm256_set1_ps(f.m), kv = _mm256_set1_ps(f.k), bv = _mm256_set1_ps(f.b);
  const int short_ends = lpad <= 8 && ys - lpad - len <= 8; /* len >= 8: ys >= 8 */
  for (int r = 0; r < rows; r++) {
    const float *a = x + r * xs, *g = gate ? gate + r * gs : NULL;
    float *b = y + r * ys;
    if (short_ends) { /* the zeros as two vectors, before the values that overlap them */
      _mm256_storeu_ps(b, _mm256_setzero_ps());
      _mm256_storeu_ps(b + ys - 8, _mm256_setzero_ps());
    } else {
      for (int i = 0; i < lpad; i++) b[i] = 0.0f;
      for (long j = lpad + len; j < ys; j++) b[j] = 0.0f;
    }
    /* the last eight, overlapping the ones before */
    __m256 last = pad8_avx2(a + len - 8, g ? g + len - 8 : NULL, map ? &f : NULL, mv, kv, bv);
    for (int i = 0; i + 8 <= len; i += 8)
      _mm256_storeu_ps(b + lpad + i, pad8_avx2(a + i, g ? g + i : NULL, map ? &f : NULL, mv, kv, bv));
    _mm256_storeu_ps(b + lpad + len - 8, last);
  }
}
#endif

/* rt_pad_rows on AVX-512 for rows that fit lpad + len <= 32 and
 * ys <= 48: each row's two vectors by masked loads from lpad before it
 * (the lanes before the row and past it zero), the zeros after them to
 * ys in the same stores and a third; the masks made once for the plane.
 * pad8_avx2's operations, so the same bits. mode: 0 a copy, 1 gated, 2
 * through the map, 3 the map and its ReLU. */
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
pad_rows32(int rows, int len, const float *x, long xs, float *y, long ys, int lpad,
           const float *gate, long gs, const rt_affine *map, const int mode) {
  const __m512 zero = _mm512_setzero_ps();
  const rt_affine f = map ? *map : (rt_affine){0.0f, 0.0f, 0.0f, 0};
  const __m512 mv = _mm512_set1_ps(f.m), kv = _mm512_set1_ps(f.k), bv = _mm512_set1_ps(f.b);
  const int end = lpad + len;
  const __mmask16 ld[2] = {(__mmask16)(lanes16(end) & ~lanes16(lpad)),
                           (__mmask16)(lanes16(end - 16) & ~lanes16(lpad - 16))};
  const __mmask16 st[3] = {lanes16((int)ys), lanes16((int)ys - 16), lanes16((int)ys - 32)};
  for (int r = 0; r < rows; r++) {
    const float *a = x + r * xs - lpad, *g = mode == 1 ? gate + r * gs - lpad : NULL;
    float *b = y + r * ys;
    for (int h = 0; h < 2; h++) {
      if (!st[h]) break;
      __m512 v = _mm512_maskz_loadu_ps(ld[h], a + 16 * h);
      if (mode == 1) /* 0 + a, as rt_relu_mask */
        v = _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(ld[h], g + 16 * h), zero, _CMP_GT_OQ),
            _mm512_add_ps(zero, v));
      if (mode >= 2) {
        v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, mv), kv), bv);
        __mmask16 on = ld[h];
        if (mode == 3) on &= _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
        v = _mm512_maskz_mov_ps(on, v);
      }
      _mm512_mask_storeu_ps(b + 16 * h, st[h], v);
    }
    if (st[2]) _mm512_mask_storeu_ps(b + 32, st[2], zero);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
pad_rows_avx512(int rows, int len, const float *x, long xs, float *y, long ys, int lpad,
                const float *gate, long gs, const rt_affine *map) {
  if (gate) pad_rows32(rows, len, x, xs, y, ys, lpad, gate, gs, NULL, 1);
  else if (map && map->relu) pad_rows32(rows, len, x, xs, y, ys, lpad, NULL, 0, map, 3);
  else if (map) pad_rows32(rows, len, x, xs, y, ys, lpad, NULL, 0, map, 2);
  else pad_rows32(rows, len, x, xs, y, ys, lpad, NULL, 0, NULL, 0);
}

void rt_pad_rows(int rows, int len, const float *x, long xs, float *y, long ys, int lpad,
                 const float *gate, long gs, const rt_affine *map) {
#if ELEM_AVX2
  if (len > 0 && lpad <= 16 && lpad + len <= 32 && ys <= 48 && use_avx512()) {
    pad_rows_avx512(rows, len, x, xs, y, ys, lpad, gate, gs, map);
    return;
  }
  if (len >= 8 && use_avx2()) {
    pad_rows_avx2(rows, len, x, xs, y, ys, lpad, gate, gs, map);
    return;
  }
#endif
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
    } else if (map) {
      int i = 0;
#if defined(__SSE2__)
      for (; i + 4 <= len; i += 4) _mm_storeu_ps(b + lpad + i, map4(map, _mm_loadu_ps(a + i)));
#endif
      for (; i < len; i++) b[lpad + i] = map1(map, a[i]);
    } else {
      for (int i = 0; i < len; i++) b[lpad + i] = a[i];
    }
    for (long i = lpad + len; i < ys; i++) b[i] = 0.0f;
  }
}

void rt_split2(int na, int nb, const float *x, float *a, float *b, const rt_affine *map) {
  assert(nb <= na && na <= nb + 1);
  int t = 0;
#if defined(__SSE2__)
  for (; t + 4 <= nb; t += 4) {
    __m128 lo = _mm_loadu_ps(x + 2 * t), hi = _mm_loadu_ps(x + 2 * t + 4);
    if (map) lo = map4(map, lo), hi = map4(map, hi);
    _mm_storeu_ps(a + t, _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm_storeu_ps(b + t, _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
  }
#endif
  for (; t < nb; t++)
    a[t] = map ? map1(map, x[2 * t]) : x[2 * t], b[t] = map ? map1(map, x[2 * t + 1]) : x[2 * t + 1];
  if (na > nb) a[nb] = map ? map1(map, x[2 * nb]) : x[2 * nb];
}

void rt_interleave2(int na, int nb, const float *a, const float *b, float *y, int add) {
  assert(nb <= na && na <= nb + 1);
  int t = 0;
#if defined(__SSE2__)
  for (; t + 4 <= nb; t += 4) {
    __m128 va = _mm_loadu_ps(a + t), vb = _mm_loadu_ps(b + t);
    __m128 y0 = add ? _mm_loadu_ps(y + 2 * t) : _mm_setzero_ps();
    __m128 y1 = add ? _mm_loadu_ps(y + 2 * t + 4) : _mm_setzero_ps();
    _mm_storeu_ps(y + 2 * t, _mm_add_ps(y0, _mm_unpacklo_ps(va, vb)));
    _mm_storeu_ps(y + 2 * t + 4, _mm_add_ps(y1, _mm_unpackhi_ps(va, vb)));
  }
#endif
  for (; t < nb; t++) {
    float y0 = add ? y[2 * t] : 0.0f, y1 = add ? y[2 * t + 1] : 0.0f;
    y[2 * t] = y0 + a[t], y[2 * t + 1] = y1 + b[t];
  }
  if (na > nb) y[2 * nb] = (add ? y[2 * nb] : 0.0f) + a[nb];
}

/* Eight partial sums added pairwise: rt_sum's last step, and the rows'. */
static float lanes_sum(const float a[8]) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

#if ELEM_AVX2
/* rt_sum of four rows at once, each row's eight lanes in one AVX2 vector:
 * the same adds on each lane in the same order, so the same bits. A
 * row's eight lanes make one chain of adds that waits on their latency;
 * four rows' interleaved do not. */
__attribute__((target("avx2"))) static void sum4_avx2(long len, const float *x, long xs,
                                                      float out[4]) {
  __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                 _mm256_setzero_ps()};
  long i = 0;
  for (; i + 8 <= len; i += 8)
    for (int r = 0; r < 4; r++) a[r] = _mm256_add_ps(a[r], _mm256_loadu_ps(x + r * xs + i));
  for (int r = 0; r < 4; r++) {
    float l[8], tail = 0.0f;
    _mm256_storeu_ps(l, a[r]);
    for (long j = i; j < len; j++) tail += x[r * xs + j];
    out[r] = lanes_sum(l) + tail;
  }
}
#endif

void rt_sum_rows(int rows, long len, const float *x, long xs, float *out) {
  int r = 0;
#if ELEM_AVX2
  if (use_avx2())
    for (; r + 4 <= rows; r += 4) sum4_avx2(len, x + r * xs, xs, out + r);
#endif
  for (; r < rows; r++) out[r] = rt_sum(len, x + r * xs);
}

float rt_sum(long len, const float *x) {
  float a[8] = {0};
  long i = 0;
  for (; i + 8 <= len; i += 8)
    for (int j = 0; j < 8; j++) a[j] += x[i + j];
  float tail = 0.0f;
  for (; i < len; i++) tail += x[i];
  return lanes_sum(a) + tail;
}

/* One dot product of rt_gram: eight interleaved chains of fused
 * multiply-adds, the tail after them in order, as rt_sum adds. */
static float dot8(long len, const float *a, const float *b) {
  float l[8] = {0};
  long i = 0;
  for (; i + 8 <= len; i += 8)
    for (int j = 0; j < 8; j++) l[j] = fmaf(a[i + j], b[i + j], l[j]);
  float tail = 0.0f;
  for (; i < len; i++) tail = fmaf(a[i], b[i], tail);
  return lanes_sum(l) + tail;
}

#if ELEM_AVX2
/* The lanes of v added as lanes_sum adds them, and the tail's products
 * of a and b from i to len added in order, as dot8's. */
__attribute__((target("avx2,fma"))) static float lanes_dot_tail(__m256 v, long i, long len,
                                                               const float *a, const float *b) {
  float l[8], tail = 0.0f;
  _mm256_storeu_ps(l, v);
  for (; i < len; i++) tail = fmaf(a[i], b[i], tail);
  return lanes_sum(l) + tail;
}

/* A block of rt_gram on AVX2: rows u0 .. u0 + 2 against rows t0 .. t0 + 2
 * (a row past the last stands in as the last, its products not kept),
 * nine chains of fused multiply-adds at once where one chain a pair
 * would wait on each add; on the diagonal (t0 == u0) the six pairs of
 * the upper triangle and the three rows' sums. Each pair's chain is the
 * same, in the same order, whichever block makes it: the same bits. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
gram_block3(int rows, long len, const float *x, long xs, int u0, int t0, float *sums, float *g) {
  const long n8 = len / 8 * 8;
  const float *u[3], *t[3];
  for (int q = 0; q < 3; q++) {
    u[q] = x + (u0 + q < rows ? u0 + q : rows - 1) * xs;
    t[q] = x + (t0 + q < rows ? t0 + q : rows - 1) * xs;
  }
  const __m256 z = _mm256_setzero_ps();
  __m256 a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z;
  if (t0 == u0) { /* the lower triangle's three chains: the rows' sums */
    __m256 s0 = z, s1 = z, s2 = z;
    for (long i = 0; i < n8; i += 8) {
      __m256 v0 = _mm256_loadu_ps(u[0] + i), v1 = _mm256_loadu_ps(u[1] + i),
             v2 = _mm256_loadu_ps(u[2] + i);
      s0 = _mm256_add_ps(s0, v0), s1 = _mm256_add_ps(s1, v1), s2 = _mm256_add_ps(s2, v2);
      a00 = _mm256_fmadd_ps(v0, v0, a00), a01 = _mm256_fmadd_ps(v0, v1, a01);
      a02 = _mm256_fmadd_ps(v0, v2, a02), a11 = _mm256_fmadd_ps(v1, v1, a11);
      a12 = _mm256_fmadd_ps(v1, v2, a12), a22 = _mm256_fmadd_ps(v2, v2, a22);
    }
    __m256 sv[3] = {s0, s1, s2};
    for (int q = 0; q < 3 && u0 + q < rows; q++) {
      float l[8], tail = 0.0f;
      _mm256_storeu_ps(l, sv[q]);
      for (long i = n8; i < len; i++) tail += u[q][i];
      sums[u0 + q] = lanes_sum(l) + tail;
    }
  } else {
    for (long i = 0; i < n8; i += 8) {
      __m256 v0 = _mm256_loadu_ps(u[0] + i), v1 = _mm256_loadu_ps(u[1] + i),
             v2 = _mm256_loadu_ps(u[2] + i), w = _mm256_loadu_ps(t[0] + i);
      a00 = _mm256_fmadd_ps(v0, w, a00), a10 = _mm256_fmadd_ps(v1, w, a10);
      a20 = _mm256_fmadd_ps(v2, w, a20), w = _mm256_loadu_ps(t[1] + i);
      a01 = _mm256_fmadd_ps(v0, w, a01), a11 = _mm256_fmadd_ps(v1, w, a11);
      a21 = _mm256_fmadd_ps(v2, w, a21), w = _mm256_loadu_ps(t[2] + i);
      a02 = _mm256_fmadd_ps(v0, w, a02), a12 = _mm256_fmadd_ps(v1, w, a12);
      a22 = _mm256_fmadd_ps(v2, w, a22);
    }
  }
  __m256 acc[3][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}};
  for (int p = 0; p < 3 && u0 + p < rows; p++)
    for (int q = 0; q < 3 && t0 + q < rows; q++)
      if (t0 + q >= u0 + p)
        g[(long)(u0 + p) * rows + t0 + q] = lanes_dot_tail(acc[p][q], n8, len, u[p], t[q]);
}

/* rt_gram on AVX2: by blocks of three rows against three, the upper
 * triangle's. */
__attribute__((target("avx2,fma"))) static void gram_avx2(int rows, long len, const float *x,
                                                         long xs, float *sums, float *g) {
  for (int u0 = 0; u0 < rows; u0 += 3)
    for (int t0 = u0; t0 < rows; t0 += 3) gram_block3(rows, len, x, xs, u0, t0, sums, g);
}
#endif

void rt_gram(int rows, long len, const float *x, long xs, float *sums, float *g) {
#if ELEM_AVX2
  if (use_avx2_fma()) {
    gram_avx2(rows, len, x, xs, sums, g);
    return;
  }
#endif
  for (int u = 0; u < rows; u++) {
    sums[u] = rt_sum(len, x + u * xs);
    for (int t = u; t < rows; t++) g[(long)u * rows + t] = dot8(len, x + u * xs, x + t * xs);
  }
}

/* rt_gram3x3's pad: the plane in rows of gp_stride(w) floats, at column
 * 8 of each, zeros around it, so that every offset's products over a row
 * read whole eights. */
static long eights(long n) { return (n + 7) / 8 * 8; }
static long gp_stride(int w) { return eights(w) + 16; }

/* Sixteen lanes added as lanes_sum adds eight: lane j and j + 8 first. */
static float lanes16_sum(const float a[16]) {
  float h[8];
  for (int j = 0; j < 8; j++) h[j] = a[j] + a[j + 8];
  return lanes_sum(h);
}

/* The plane's 13 autocorrelations (the offsets (dy, dx) of a 3 x 3
 * window, dy 0 to 2, dx -2 to 2, those of dy 0 from 0): ac[dy][dx + 2],
 * over every pair of values both in the plane, each offset in sixteen
 * float lanes (a row's column c into lane c % 16, the rows in order, a
 * fused multiply-add each; two chains of eight, where one would wait on
 * its latency) closed as lanes16_sum. */
static void autocorr_scalar(int h, int w, const float *pad, float ac[3][5]) {
  const long P = gp_stride(w), W8 = eights(w);
  for (int dy = 0; dy < 3; dy++)
    for (int dx = dy ? -2 : 0; dx <= 2; dx++) {
      float a[16] = {0};
      for (int r = 0; r + dy < h; r++) {
        const float *p = pad + r * P + 8, *q = pad + (r + dy) * P + 8 + dx;
        for (long c = 0; c < W8; c++) a[c % 16] = fmaf(p[c], q[c], a[c % 16]);
      }
      ac[dy][dx + 2] = lanes16_sum(a);
    }
}

#if ELEM_AVX2
/* One eight of autocorr_avx2's row at c into its chains a (the offsets
 * dx -2 to 2). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
ac_eight(const float *p, const float *q, long c, __m256 a[5]) {
  __m256 v = _mm256_loadu_ps(p + c);
  a[0] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + c - 2), a[0]);
  a[1] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + c - 1), a[1]);
  a[2] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + c), a[2]);
  a[3] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + c + 1), a[3]);
  a[4] = _mm256_fmadd_ps(v, _mm256_loadu_ps(q + c + 2), a[4]);
}

__attribute__((target("avx2,fma"))) static void autocorr_avx2(int h, int w, const float *pad,
                                                              float ac[3][5]) {
  const long P = gp_stride(w), W8 = eights(w);
  for (int dy = 0; dy < 3; dy++) { /* dy 0's offsets below 0 made too, not kept */
    __m256 a[5], b[5]; /* the even eights' chains, the odd ones' */
    for (int k = 0; k < 5; k++) a[k] = b[k] = _mm256_setzero_ps();
    for (int r = 0; r + dy < h; r++) {
      const float *p = pad + r * P + 8, *q = pad + (r + dy) * P + 8;
      long c = 0;
      for (; c + 16 <= W8; c += 16) ac_eight(p, q, c, a), ac_eight(p, q, c + 8, b);
      if (c < W8) ac_eight(p, q, c, a);
    }
    for (int k = dy ? 0 : 2; k < 5; k++) {
      float l[16];
      _mm256_storeu_ps(l, a[k]), _mm256_storeu_ps(l + 8, b[k]);
      ac[dy][k] = lanes16_sum(l);
    }
  }
}

__attribute__((target("avx2,fma"))) static void line_ac_avx2(long n8, const float *p,
                                                             float out[3]) {
  __m256 a[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (long c = 0; c < n8; c += 8) {
    __m256 v = _mm256_loadu_ps(p + c);
    for (int d = 0; d < 3; d++) a[d] = _mm256_fmadd_ps(v, _mm256_loadu_ps(p + c + d), a[d]);
  }
  for (int d = 0; d < 3; d++) {
    float l[8];
    _mm256_storeu_ps(l, a[d]);
    out[d] = lanes_sum(l);
  }
}
#endif

/* out[d] = the sum over c < n8 of p[c] p[c + d], d = 0, 1, 2 (p zero
 * past the line's values, to n8 + 2), in eight float lanes (c into lane
 * c % 8, a fused multiply-add each) closed as lanes_sum: one row's or
 * column's autocorrelations. */
static void line_ac(long n8, const float *p, float out[3]) {
#if ELEM_AVX2
  if (use_avx2_fma()) {
    line_ac_avx2(n8, p, out);
    return;
  }
#endif
  for (int d = 0; d < 3; d++) {
    float a[8] = {0};
    for (long c = 0; c < n8; c++) a[c % 8] = fmaf(p[c], p[c + d], a[c % 8]);
    out[d] = lanes_sum(a);
  }
}

void rt_gram3x3(int h, int w, const float *x, float sums[9], float g[81], float *pad) {
  assert(h >= 2 && w >= 2);
  const long P = gp_stride(w), H8 = eights(h), W8 = eights(w);
  float *col = pad + h * P; /* a column at 8, zeros after it */
  memset(pad, 0, (size_t)(h * P + H8 + 16) * sizeof *pad);
  for (int r = 0; r < h; r++) memcpy(pad + r * P + 8, x + (long)r * w, (size_t)w * sizeof *x);
  float ac[3][5] = {{0}};
#if ELEM_AVX2
  if (use_avx2_fma()) autocorr_avx2(h, w, pad, ac);
  else autocorr_scalar(h, w, pad, ac);
#else
  autocorr_scalar(h, w, pad, ac);
#endif
  /* a tap (a, b) reads the plane at (oy + a - 1, ox + b - 1): a = 0
   * leaves out its last row, a = 2 its first, b so the columns */
  const int er[3] = {h - 1, -1, 0}, ec[3] = {w - 1, -1, 0};
  float all = rt_sum((long)h * w, x), rs[3] = {0}, cs[3] = {0}, rac[3][3] = {{0}},
        cac[3][3] = {{0}};
  for (int a = 0; a < 3; a += 2) { /* the rows and columns left out */
    rs[a] = rt_sum(w, x + (long)er[a] * w);
    line_ac(W8, pad + er[a] * P + 8, rac[a]);
    for (int r = 0; r < h; r++) col[8 + r] = x[(long)r * w + ec[a]];
    cs[a] = rt_sum(h, col + 8);
    line_ac(H8, col + 8, cac[a]);
  }
  for (int u = 0; u < 9; u++) {
    const int a = u / 3, b = u % 3;
    float v = all;
    if (a != 1) v -= rs[a];
    if (b != 1) v -= cs[b];
    if (a != 1 && b != 1) v += x[(long)er[a] * w + ec[b]];
    sums[u] = v;
    for (int t = u; t < 9; t++) { /* t >= u: dy >= 0, and dx >= 0 where dy is 0 */
      const int a2 = t / 3, b2 = t % 3, dy = a2 - a, dx = b2 - b;
      float e = ac[dy][dx + 2];
      if (a == a2 && a != 1) e -= rac[a][dx < 0 ? -dx : dx];
      if (b == b2 && b != 1) e -= cac[b][dy];
      if (t == u && a != 1 && b != 1) {
        const float c = x[(long)er[a] * w + ec[b]];
        e += c * c;
      }
      g[u * 9 + t] = e;
    }
  }
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
 * float, in lanes, while they sit in L1; the row results are
 * combined in double, so that the error grows with hw, not with n * hw.
 * The mean and variance come from each row's sums about its first value
 * (shifted sums, one pass: no cancellation when the mean is large
 * against the spread), merged row by row as Chan et al.'s parallel
 * variance.
 *
 * The row sums need nothing but the row, so the producer of x can take
 * them while x is in its cache (rt_bn_moments); rt_bn_fwd then reads x
 * once. The backward recomputes the ReLU's mask from x instead of reading
 * the forward's output: the same float expression of the same operands. */

static long bn_x_ns(const rt_bn_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->c * s->hw;
}

static long bn_y_ns(const rt_bn_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->c * s->hw;
}

/* A row's mean and sum of squared deviations into mom, from the sums s1
 * of d = x - m and s2 of d * d about the shift m. */
static void row_moments(long hw, float m, float s1, float s2, double *mom) {
  double rmean = m + (double)s1 / hw, rm2 = s2 - (double)s1 * s1 / hw;
  mom[0] = rmean, mom[1] = rm2 < 0.0 ? 0.0 : rm2;
}

/* A plane's sums about its first value k, in one pass: each row by
 * eights (the last eight overlapping the ones before, the lanes counted
 * already masked to 0), a row's q-th eight into chain q % 4 of eight
 * float lanes, so that up to four chains of adds run apart. chains_sum
 * closes them in a fixed order. Shifted by a value of the plane, the sums
 * cancel only as far as k lies from the mean against the spread. */
enum { PLANE_CHAINS = 4 };

static float chains_sum(float a[PLANE_CHAINS][8]) {
  float h[8];
  for (int j = 0; j < 8; j++) h[j] = (a[0][j] + a[1][j]) + (a[2][j] + a[3][j]);
  return lanes_sum(h);
}

static float plane_first(const float *x, int relu) {
  return relu && !(x[0] > 0.0f) ? 0.0f : x[0];
}

static void plane_stats_scalar(int rows, int len, const float *x, long xs, float *y, long ys,
                               int relu, double *mom) {
  float a[PLANE_CHAINS][8] = {{0}}, b[PLANE_CHAINS][8] = {{0}};
  const float k = plane_first(x, relu);
  const int nq = (len + 7) / 8;
  for (int r = 0; r < rows; r++) {
    const float *xr = x + r * xs;
    for (int q = 0; q < nq; q++) {
      /* the last eight ends the row (all of it below 8) */
      int at = len < 8 ? 0 : q < nq - 1 ? 8 * q : len - 8;
      for (int j = 0; j < 8 && at + j < len; j++) {
        float v = xr[at + j];
        if (relu) v = v > 0.0f ? v : 0.0f;
        if (y) y[r * ys + at + j] = v;
        float d = at + j >= 8 * q ? v - k : 0.0f;
        a[q % PLANE_CHAINS][j] += d;
        b[q % PLANE_CHAINS][j] = fmaf(d, d, b[q % PLANE_CHAINS][j]);
      }
    }
  }
  row_moments((long)rows * len, k, chains_sum(a), chains_sum(b), mom);
}

#if ELEM_AVX2
/* One eight of plane_stats_avx2 at xr + at (and yr + at, with copy) into
 * the sums a, b, with tail its lanes masked by m. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
plane_eight(const float *xr, float *yr, int at, const int relu, const int copy, const int tail,
            __m256 kv, __m256 m, __m256 *a, __m256 *b) {
  __m256 v = _mm256_loadu_ps(xr + at);
  if (relu) v = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ), v);
  if (copy) _mm256_storeu_ps(yr + at, v);
  __m256 d = _mm256_sub_ps(v, kv);
  if (tail) d = _mm256_and_ps(d, m);
  *a = _mm256_add_ps(*a, d), *b = _mm256_fmadd_ps(d, d, *b);
}

/* plane_stats_scalar on AVX2, for rows of at least 8: the same adds and
 * fused multiply-adds on each lane in the same order, so the same bits;
 * made for each of relu and copy (y) constant. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
plane_stats_avx2_as(int rows, int len, const float *x, long xs, float *y, long ys, const int relu,
                    const int copy, double *mom) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero;
  const float k = plane_first(x, relu);
  const __m256 kv = _mm256_set1_ps(k);
  const int nq = (len + 7) / 8, last = len - 8, seen = 8 * (nq - 1) - last;
  /* the last eight's lanes below seen were counted by the one before */
  const __m256 tail = _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(seen - 1)));
  for (int r = 0; r < rows; r++) {
    const float *xr = x + r * xs;
    float *yr = copy ? y + r * ys : NULL;
    int q = 0;
    for (; q + 4 < nq; q += 4) {
      plane_eight(xr, yr, 8 * q, relu, copy, 0, kv, tail, &a0, &b0);
      plane_eight(xr, yr, 8 * q + 8, relu, copy, 0, kv, tail, &a1, &b1);
      plane_eight(xr, yr, 8 * q + 16, relu, copy, 0, kv, tail, &a2, &b2);
      plane_eight(xr, yr, 8 * q + 24, relu, copy, 0, kv, tail, &a3, &b3);
    }
    /* the eights left, the last at the row's end */
    if (nq - q > 1) plane_eight(xr, yr, 8 * q, relu, copy, 0, kv, tail, &a0, &b0);
    if (nq - q > 2) plane_eight(xr, yr, 8 * q + 8, relu, copy, 0, kv, tail, &a1, &b1);
    if (nq - q > 3) plane_eight(xr, yr, 8 * q + 16, relu, copy, 0, kv, tail, &a2, &b2);
    switch (nq - q) {
    case 4: plane_eight(xr, yr, last, relu, copy, 1, kv, tail, &a3, &b3); break;
    case 3: plane_eight(xr, yr, last, relu, copy, 1, kv, tail, &a2, &b2); break;
    case 2: plane_eight(xr, yr, last, relu, copy, 1, kv, tail, &a1, &b1); break;
    default: plane_eight(xr, yr, last, relu, copy, 1, kv, tail, &a0, &b0);
    }
  }
  float av[PLANE_CHAINS][8], bv[PLANE_CHAINS][8];
  _mm256_storeu_ps(av[0], a0), _mm256_storeu_ps(av[1], a1), _mm256_storeu_ps(av[2], a2);
  _mm256_storeu_ps(av[3], a3), _mm256_storeu_ps(bv[0], b0), _mm256_storeu_ps(bv[1], b1);
  _mm256_storeu_ps(bv[2], b2), _mm256_storeu_ps(bv[3], b3);
  row_moments((long)rows * len, k, chains_sum(av), chains_sum(bv), mom);
}

__attribute__((target("avx2,fma"))) static void plane_stats_avx2(int rows, int len, const float *x,
                                                                long xs, float *y, long ys,
                                                                int relu, double *mom) {
  if (relu && y) plane_stats_avx2_as(rows, len, x, xs, y, ys, 1, 1, mom);
  else if (y) plane_stats_avx2_as(rows, len, x, xs, y, ys, 0, 1, mom);
  else if (relu) plane_stats_avx2_as(rows, len, x, xs, NULL, 0, 1, 0, mom);
  else plane_stats_avx2_as(rows, len, x, xs, NULL, 0, 0, 0, mom);
}
#endif

/* A plane's (rows of len, xs apart) mean and sum of squared deviations
 * into mom; with y, the plane copied there too (ys apart), through the
 * ReLU with relu, and the moments those of the copy. */
static void plane_stats(int rows, int len, const float *x, long xs, float *y, long ys, int relu,
                        double *mom) {
#if ELEM_AVX2
  if (len >= 8 && use_avx2_fma()) {
    plane_stats_avx2(rows, len, x, xs, y, ys, relu, mom);
    return;
  }
#endif
  plane_stats_scalar(rows, len, x, xs, y, ys, relu, mom);
}

/* One row of a batch norm shape (a sample's plane of hw floats): its
 * moments over rows of s->w (all of hw at 0). */
static void row_stats(const rt_bn_shape *s, const float *x, double *mom) {
  int w = s->w > 0 ? s->w : s->hw;
  plane_stats(s->hw / w, w, x, w, NULL, 0, 0, mom);
}

/* y = (x - m) * k + b, and max(., 0) with relu (as rt_relu: -0 and NaN
 * become +0). y may be x: each value is read before its own is written. */
static void row_affine(long len, const float *x, float m, float k, float b, int relu, float *y) {
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
  const float *x, *y, *dy, *gamma, *beta, *save_mean, *save_invstd, *scale;
  const double *mom;
  long ms;
  int w;   /* with a 2x2 max pool after the ReLU: the planes' width */
  float *p;  /* the pool's output (p_ns apart) */
  long p_ns;
  float *run_mean, *run_var, *save_mean_w, *save_invstd_w, *scale_w, *out, *dx, *dgamma, *dbeta;
  float *gm_w, *kg_w, *kx_w; /* rt_bn_bwd_sums: dx's constants, and no dx */
  const float *rows; /* rt_bn_bwd_sums: the rows' sums made already, or NULL */
  long rows_ns;
  uint8_t *code;     /* pooled: the windows' codes (row_affine_pool), written by
                      * rt_bn_out, or by rt_bn_moments_pool and marked by
                      * rt_bn_pool_out; read by the backward */
  long code_ns;
  const float *zx; /* pooled, from row_extremes: the windows' extremes of x
                    * (in code's layout), read instead of x */
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
          double own[2];
          const double *r = j->mom ? j->mom + c * j->ms + 2 * n : own;
          if (!j->mom) row_stats(s, j->x + n * xns + c * hw, own);
          double d = r[0] - mean[c - g0];
          mean[c - g0] += d * hw / tot;
          m2[c - g0] += r[1] + d * d * cnt * hw / tot;
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
      if (j->training && j->scale_w) j->scale_w[c] = k[c - g0];
    }
    for (int n = 0; n < s->n && j->out; n++)
      for (int c = g0; c < g1; c++)
        row_affine(hw, j->x + n * xns + c * hw, m[c - g0], k[c - g0], j->beta[c], j->relu,
                   j->out + n * yns + c * hw);
  }
}

/* A 2x2 window's four values (rows r0 and r1, from their first column)
 * as the ReLU gives them after the affine (x - m) * k + b, row_affine's
 * arithmetic. */
static inline void window_affine(const float *r0, const float *r1, float m, float k, float b,
                                 float y[4]) {
  const float *q[4] = {r0, r0 + 1, r1, r1 + 1};
  for (int t = 0; t < 4; t++) {
    float v = (*q[t] - m) * k + b;
    y[t] = v > 0.0f ? v : 0.0f;
  }
}

#if defined(__SSE2__)
/* The same on four lanes. */
static inline __m128 affine_relu4(__m128 v, __m128 mv, __m128 kv, __m128 bv, __m128 zero) {
  v = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(v, mv), kv), bv);
  return _mm_and_ps(_mm_cmpgt_ps(v, zero), v);
}
#endif

/* The position of the first maximum of a window a b (top row) c d, a
 * later value winning only when strictly greater (rt_maxpool_bwd's),
 * 0 .. 3 in that order; the maximum into *mx. */
static inline int first_max(float a, float b, float c, float d, float *mx) {
  int t1 = b > a;
  float m = t1 ? b : a;
  int t2 = c > m;
  m = t2 ? c : m;
  int t3 = d > m;
  *mx = t3 ? d : m;
  return t3 ? 3 : t2 ? 2 : t1;
}

/* The code of a window whose ReLU outputs are a b c d: first_max's
 * position; 4 when that maximum is not > 0 (the window passes no
 * gradient). */
static inline uint8_t window_code(float a, float b, float c, float d) {
  float mx;
  int t = first_max(a, b, c, d, &mx);
  return (uint8_t)(!(mx > 0.0f) ? 4 : t);
}

#if defined(__SSE2__)
/* first_max for four windows in lanes, without a branch: the positions,
 * and the maxima into *mx. */
static inline __m128i first_max4(__m128 a, __m128 b, __m128 c, __m128 d, __m128 *mx) {
  __m128 t1 = _mm_cmpgt_ps(b, a);
  __m128 m = _mm_or_ps(_mm_and_ps(t1, b), _mm_andnot_ps(t1, a));
  __m128 t2 = _mm_cmpgt_ps(c, m);
  m = _mm_or_ps(_mm_and_ps(t2, c), _mm_andnot_ps(t2, m));
  __m128 t3 = _mm_cmpgt_ps(d, m);
  *mx = _mm_or_ps(_mm_and_ps(t3, d), _mm_andnot_ps(t3, m));
  __m128i k = _mm_and_si128(_mm_castps_si128(t1), _mm_set1_epi32(1));
  k = _mm_or_si128(_mm_and_si128(_mm_castps_si128(t2), _mm_set1_epi32(2)),
                   _mm_andnot_si128(_mm_castps_si128(t2), k));
  return _mm_or_si128(_mm_and_si128(_mm_castps_si128(t3), _mm_set1_epi32(3)),
                      _mm_andnot_si128(_mm_castps_si128(t3), k));
}

/* The low bytes of n (at most 4) lanes of k into code. */
static inline void store_codes4(__m128i k, int n, uint8_t *code) {
  k = _mm_packus_epi16(_mm_packs_epi32(k, k), k);
  uint32_t b4 = (uint32_t)_mm_cvtsi128_si32(k);
  memcpy(code, &b4, (size_t)n);
}

/* window_code for n (at most 4) windows in lanes, without a branch. */
static inline void window_codes4(__m128 a, __m128 b, __m128 c, __m128 d, int n, uint8_t *code) {
  __m128 mx;
  __m128i k = first_max4(a, b, c, d, &mx);
  __m128i pos = _mm_castps_si128(_mm_cmpgt_ps(mx, _mm_setzero_ps()));
  store_codes4(_mm_or_si128(_mm_and_si128(pos, k), _mm_andnot_si128(pos, _mm_set1_epi32(4))), n,
               code);
}
#endif

#if ELEM_AVX2
/* Eight 2x2 windows from their rows' sixteen columns each (v: row 0's two
 * vectors, then row 1's): the four values of each, in window order, as
 * first_max's a b c d. */
__attribute__((target("avx2"))) static inline void windows8_avx2(const __m256 v[4],
                                                                 __m256 w4[4]) {
  /* even and odd columns; the shuffles work in 128-bit halves, so the
   * windows come out 0 1 4 5 2 3 6 7 until put back in order */
  w4[0] = _mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0));
  w4[1] = _mm256_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1));
  w4[2] = _mm256_shuffle_ps(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0));
  w4[3] = _mm256_shuffle_ps(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1));
  for (int t = 0; t < 4; t++)
    w4[t] = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(w4[t]), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* first_max4 on eight lanes. */
__attribute__((target("avx2"))) static inline __m256i first_max8(const __m256 w4[4],
                                                                 __m256 *mx) {
  __m256 t1 = _mm256_cmp_ps(w4[1], w4[0], _CMP_GT_OQ), m = _mm256_blendv_ps(w4[0], w4[1], t1);
  __m256 t2 = _mm256_cmp_ps(w4[2], m, _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, w4[2], t2);
  __m256 t3 = _mm256_cmp_ps(w4[3], m, _CMP_GT_OQ);
  *mx = _mm256_blendv_ps(m, w4[3], t3);
  __m256i kk = _mm256_and_si256(_mm256_castps_si256(t1), _mm256_set1_epi32(1));
  kk = _mm256_blendv_epi8(kk, _mm256_set1_epi32(2), _mm256_castps_si256(t2));
  return _mm256_blendv_epi8(kk, _mm256_set1_epi32(3), _mm256_castps_si256(t3));
}

/* The low bytes of kk's eight lanes into code. */
__attribute__((target("avx2"))) static inline void store_codes8(__m256i kk, uint8_t *code) {
  __m256i p8 = _mm256_packus_epi16(_mm256_packs_epi32(kk, kk), kk);
  uint32_t lo = (uint32_t)_mm256_cvtsi256_si32(p8), hi = (uint32_t)_mm256_extract_epi32(p8, 4);
  memcpy(code, &lo, 4), memcpy(code + 4, &hi, 4);
}

/* row_affine_pool's windows of one row pair (r0, r1) by eights, as far as
 * whole eights go: the same operations in the same order (the affine
 * without a fused multiply-add), so the same bits. The output column
 * reached. */
__attribute__((target("avx2"))) static int pool8_avx2(int ow, const float *r0, const float *r1,
                                                      float m, float k, float b, float *po,
                                                      uint8_t *co) {
  const __m256 zero = _mm256_setzero_ps(), mv = _mm256_set1_ps(m), kv = _mm256_set1_ps(k),
               bv = _mm256_set1_ps(b);
  /* the ReLU alone (rt_relu_pool_rows): (x - 0) * 1 + 0 is x but for -0,
   * and the ReLU makes +0 of either */
  const int plain = m == 0.0f && k == 1.0f && b == 0.0f;
  int ox = 0;
  for (; ox + 8 <= ow; ox += 8) {
    __m256 v[4] = {_mm256_loadu_ps(r0 + 2 * ox), _mm256_loadu_ps(r0 + 2 * ox + 8),
                   _mm256_loadu_ps(r1 + 2 * ox), _mm256_loadu_ps(r1 + 2 * ox + 8)}, w4[4], mx;
    for (int t = 0; t < 4; t++) {
      __m256 u = plain ? v[t] : affine8(v[t], mv, kv, bv);
      v[t] = _mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_GT_OQ), u);
    }
    windows8_avx2(v, w4);
    _mm256_storeu_ps(po + ox,
                     _mm256_max_ps(_mm256_max_ps(w4[0], w4[1]), _mm256_max_ps(w4[2], w4[3])));
    if (!co) continue;
    __m256i kk = first_max8(w4, &mx);
    kk = _mm256_blendv_epi8(_mm256_set1_epi32(4), kk,
                            _mm256_castps_si256(_mm256_cmp_ps(mx, zero, _CMP_GT_OQ)));
    store_codes8(kk, co + ox);
  }
  return ox;
}

/* row_extremes' windows of one row pair by eights, as far as whole eights
 * go; sg flips the values' signs (-0 to take minima). The output column
 * reached. */
__attribute__((target("avx2"))) static int extremes8_avx2(int ow, const float *r0,
                                                          const float *r1, float sg, float *zo,
                                                          uint8_t *co) {
  const __m256 f = _mm256_set1_ps(sg);
  int ox = 0;
  for (; ox + 8 <= ow; ox += 8) {
    __m256 v[4] = {_mm256_loadu_ps(r0 + 2 * ox), _mm256_loadu_ps(r0 + 2 * ox + 8),
                   _mm256_loadu_ps(r1 + 2 * ox), _mm256_loadu_ps(r1 + 2 * ox + 8)}, w4[4], mx;
    for (int t = 0; t < 4; t++) v[t] = _mm256_xor_ps(v[t], f);
    windows8_avx2(v, w4);
    store_codes8(first_max8(w4, &mx), co + ox);
    _mm256_storeu_ps(zo + ox, _mm256_xor_ps(mx, f));
  }
  return ox;
}
#endif

#if ELEM_AVX2
/* ---- the 2x2 max pool's forward on AVX-512: a row pair's 32 columns (16
 * windows) a vector pair, under masks, so that rows of 14 or 28 columns
 * (the convs' 14x14 and 28x28 planes) take one pass, where AVX2 takes
 * its last eight windows again and SSE (rows of 14) four at a time. The
 * same operations on each value as the narrower paths, so the same bits.
 * The other AVX-512 passes below (the pool's backward, batch norm's dz,
 * the padded rows) are written the same way, a plane a call with the
 * masks made once: a row pair a call, they were no faster than AVX2
 * (bench/README.md). */

/* A row pair's columns (a0's, then a1's, two vectors each) in the lanes
 * in, by halves (a row of n <= 16 windows: lanes16(2 n), lanes16(2 n -
 * 16)), zeros past them. */
__attribute__((target("avx512f"))) static inline void pair32_avx512(const float *a0,
                                                                    const float *a1,
                                                                    const __mmask16 in[2],
                                                                    __m512 v[4]) {
  v[0] = _mm512_maskz_loadu_ps(in[0], a0), v[1] = _mm512_maskz_loadu_ps(in[1], a0 + 16);
  v[2] = _mm512_maskz_loadu_ps(in[0], a1), v[3] = _mm512_maskz_loadu_ps(in[1], a1 + 16);
}

/* A row's even (odd) columns of its two vectors, in window order. */
__attribute__((target("avx512f"))) static inline __m512 phase16(const __m512 v[2], int odd) {
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  return _mm512_permutex2var_ps(v[0], _mm512_add_epi32(ev, _mm512_set1_epi32(odd)), v[1]);
}

/* first_max8's codes of 16 windows (w0, w1 the top row's values, w2, w3
 * the bottom's), the maximum into *mx. */
__attribute__((target("avx512f"))) static inline __m512i first_max16(__m512 w0, __m512 w1,
                                                                    __m512 w2, __m512 w3,
                                                                    __m512 *mx) {
  __mmask16 t1 = _mm512_cmp_ps_mask(w1, w0, _CMP_GT_OQ);
  __m512 m = _mm512_mask_blend_ps(t1, w0, w1);
  __mmask16 t2 = _mm512_cmp_ps_mask(w2, m, _CMP_GT_OQ);
  m = _mm512_mask_blend_ps(t2, m, w2);
  __mmask16 t3 = _mm512_cmp_ps_mask(w3, m, _CMP_GT_OQ);
  *mx = _mm512_mask_blend_ps(t3, m, w3);
  __m512i kk = _mm512_maskz_mov_epi32(t1, _mm512_set1_epi32(1));
  kk = _mm512_mask_mov_epi32(kk, t2, _mm512_set1_epi32(2));
  return _mm512_mask_mov_epi32(kk, t3, _mm512_set1_epi32(3));
}

/* A row of n <= 16 windows' results stored without a mask: masked
 * stores that miss the cache write at about half the speed of whole
 * ones on the AMD Zen 5 VM (13 against 25 GB/s into 64 MB, 2026-12-05;
 * a tenth slower in L2), and the pools' outputs and codes go to the
 * arena.
 * Whole vectors from 4 windows up, the last overlapping the ones before
 * (a value written twice is the same value); below 4, the mask. put16
 * holds what a plane's rows share. */
typedef struct put16 {
  int n;
  __mmask16 on;
  __m512i fidx; /* lanes n - 8 .. (n >= 8) or n - 4 .. (4 <= n < 8) first */
  __m128i bidx; /* the same for bytes */
} put16;

__attribute__((target("avx512f"), always_inline)) static inline put16 put16_make(int n) {
  int at = n >= 8 ? n - 8 : n - 4;
  put16 q = {n, lanes16(n), _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                               11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(at > 0 ? at : 0)),
             _mm_add_epi8(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                          _mm_set1_epi8((char)(at > 0 ? at : 0)))};
  return q;
}

__attribute__((target("avx512f"), always_inline)) static inline void
put16_floats(const put16 *q, float *p, __m512 v) {
  if (q->n == 16) {
    _mm512_storeu_ps(p, v);
  } else if (q->n >= 8) {
    _mm256_storeu_ps(p, _mm512_castps512_ps256(v));
    _mm256_storeu_ps(p + q->n - 8, _mm512_castps512_ps256(_mm512_permutexvar_ps(q->fidx, v)));
  } else if (q->n >= 4) {
    _mm_storeu_ps(p, _mm512_castps512_ps128(v));
    _mm_storeu_ps(p + q->n - 4, _mm512_castps512_ps128(_mm512_permutexvar_ps(q->fidx, v)));
  } else {
    _mm512_mask_storeu_ps(p, q->on, v);
  }
}

/* The low byte of each lane of k (codes 0 to 4). */
__attribute__((target("avx512f"), always_inline)) static inline void
put16_bytes(const put16 *q, uint8_t *p, __m512i k) {
  if (q->n < 4) {
    _mm512_mask_cvtepi32_storeu_epi8(p, q->on, k);
    return;
  }
  __m128i c = _mm512_cvtepi32_epi8(k), t = _mm_shuffle_epi8(c, q->bidx);
  if (q->n == 16) {
    _mm_storeu_si128((__m128i *)p, c);
  } else if (q->n >= 8) {
    _mm_storel_epi64((__m128i *)p, c), _mm_storel_epi64((__m128i *)(p + q->n - 8), t);
  } else {
    int32_t a = _mm_cvtsi128_si32(c), b = _mm_cvtsi128_si32(t);
    memcpy(p, &a, 4), memcpy(p + q->n - 4, &b, 4);
  }
}

/* row_affine_pool's windows of one row pair (a0, a1), at most 16 (the
 * lanes of in[0], in[1] their columns, of on the windows), pool8_avx2's
 * operations: into po and, with codes, co. */
__attribute__((target("avx512f"), always_inline)) static inline void
pool16_pair(const float *a0, const float *a1, const __mmask16 in[2], const put16 *on, __m512 mv,
            __m512 kv, __m512 bv, float *po, uint8_t *co, const int plain, const int codes) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 v[4];
  pair32_avx512(a0, a1, in, v);
  for (int t = 0; t < 4; t++) {
    __m512 u = plain ? v[t] : _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v[t], mv), kv), bv);
    v[t] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_GT_OQ), u);
  }
  __m512 w0 = phase16(v, 0), w1 = phase16(v, 1), w2 = phase16(v + 2, 0),
         w3 = phase16(v + 2, 1), mx;
  put16_floats(on, po, _mm512_max_ps(_mm512_max_ps(w0, w1), _mm512_max_ps(w2, w3)));
  if (!codes) return;
  __m512i kk = first_max16(w0, w1, w2, w3, &mx); /* 4 where the ReLU stopped all four */
  kk = _mm512_mask_mov_epi32(_mm512_set1_epi32(4), _mm512_cmp_ps_mask(mx, zero, _CMP_GT_OQ), kk);
  put16_bytes(on, co, kk);
}

/* row_affine_pool's windows of a plane of ow <= 16 windows a row pair
 * (rows xs apart), a row pair a pass, the masks made once, made for
 * plain and codes constant. */
__attribute__((target("avx512f"), always_inline)) static inline void
pool16_rows(int h, int ow, const float *x, long xs, float m, float k, float b, float *p,
            uint8_t *code, const int plain, const int codes) {
  const __m512 mv = _mm512_set1_ps(m), kv = _mm512_set1_ps(k), bv = _mm512_set1_ps(b);
  const __mmask16 in[2] = {lanes16(2 * ow), lanes16(2 * ow - 16)};
  const put16 on = put16_make(ow);
  for (int oy = 0; oy < h / 2; oy++) {
    const float *r0 = x + 2L * oy * xs;
    pool16_pair(r0, r0 + xs, in, &on, mv, kv, bv, p + (long)oy * ow,
                codes ? code + (long)oy * ow : NULL, plain, codes);
  }
}

/* The same for rows of more than 16 windows, 16 a pass, the masks made
 * for each, plain and codes tested in it (no layer of the templates has
 * such rows). */
__attribute__((target("avx512f"))) static void pool16_wide(int h, int ow, const float *x, long xs,
                                                           float m, float k, float b, float *p,
                                                           uint8_t *code) {
  const __m512 mv = _mm512_set1_ps(m), kv = _mm512_set1_ps(k), bv = _mm512_set1_ps(b);
  const int plain = m == 0.0f && k == 1.0f && b == 0.0f; /* as pool8_avx2's */
  for (int oy = 0; oy < h / 2; oy++)
    for (int ox = 0; ox < ow; ox += 16) {
      int n = ow - ox < 16 ? ow - ox : 16;
      const float *a0 = x + 2L * oy * xs + 2 * ox;
      const __mmask16 in[2] = {lanes16(2 * n), lanes16(2 * n - 16)};
      long at = (long)oy * ow + ox;
      const put16 on = put16_make(n);
      pool16_pair(a0, a0 + xs, in, &on, mv, kv, bv, p + at, code ? code + at : NULL, plain,
                  code != NULL);
    }
}

__attribute__((target("avx512f"))) static void pool16_plane(int h, int ow, const float *x,
                                                            long xs, float m, float k, float b,
                                                            float *p, uint8_t *code) {
  const int plain = m == 0.0f && k == 1.0f && b == 0.0f; /* as pool8_avx2's */
  if (plain && code) pool16_rows(h, ow, x, xs, m, k, b, p, code, 1, 1);
  else if (plain) pool16_rows(h, ow, x, xs, m, k, b, p, NULL, 1, 0);
  else if (code) pool16_rows(h, ow, x, xs, m, k, b, p, code, 0, 1);
  else pool16_rows(h, ow, x, xs, m, k, b, p, NULL, 0, 0);
}

/* row_extremes' windows of a plane of ow <= 16 windows a row pair,
 * extremes8_avx2's operations (first_max8's codes). */
__attribute__((target("avx512f"))) static void extremes16_avx512(int h, int w, const float *x,
                                                                 float sg, float *zx,
                                                                 uint8_t *code) {
  const int ow = w / 2;
  const __m512i f = _mm512_castps_si512(_mm512_set1_ps(sg));
  const __mmask16 in[2] = {lanes16(2 * ow), lanes16(2 * ow - 16)};
  const put16 on = put16_make(ow);
  for (int oy = 0; oy < h / 2; oy++) {
    __m512 v[4];
    pair32_avx512(x + 2L * oy * w, x + (2L * oy + 1) * w, in, v);
    for (int t = 0; t < 4; t++)
      v[t] = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v[t]), f));
    __m512 w0 = phase16(v, 0), w1 = phase16(v, 1), w2 = phase16(v + 2, 0), w3 = phase16(v + 2, 1);
    __m512 mx;
    put16_bytes(&on, code + (long)oy * ow, first_max16(w0, w1, w2, w3, &mx));
    put16_floats(&on, zx + (long)oy * ow,
                 _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(mx), f)));
  }
}
#endif

/* The ReLU's output of one h x w plane (rows xs floats apart), (x - m) *
 * k + b as row_affine, max pooled 2x2 into p (h/2 x w/2): the maximum of
 * the same values, which are never NaN or -0 (the first maximum's value
 * is the maximum); with code, each window's code too (window_code). */
static void row_affine_pool(int h, int w, const float *restrict x, long xs, float m, float k,
                            float b, float *restrict p, uint8_t *restrict code) {
  const int ow = w / 2;
#if ELEM_AVX2
  const int avx2 = use_avx2();
  if (use_avx512()) {
    (ow <= 16 ? pool16_plane : pool16_wide)(h, ow, x, xs, m, k, b, p, code);
    return;
  }
#endif
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps(), mv = _mm_set1_ps(m), kv = _mm_set1_ps(k),
               bv = _mm_set1_ps(b);
  const int plain = m == 0.0f && k == 1.0f && b == 0.0f; /* as pool8_avx2's */
#endif
  for (int oy = 0; oy < h / 2; oy++) {
    const float *r0 = x + 2 * oy * xs, *r1 = r0 + xs;
    float *po = p + (long)oy * ow;
    uint8_t *co = code ? code + (long)oy * ow : NULL;
    int ox = 0;
#if ELEM_AVX2
    if (avx2 && ow >= 8) {
      ox = pool8_avx2(ow, r0, r1, m, k, b, po, co);
      if (ox < ow) /* the last eight again, overlapping: the same values */
        pool8_avx2(8, r0 + 2 * (ow - 8), r1 + 2 * (ow - 8), m, k, b, po + ow - 8,
                   co ? co + ow - 8 : NULL);
      continue;
    }
#endif
#if defined(__SSE2__)
    for (; ox < ow && ow >= 4; ox += 4) {
      if (ox + 4 > ow) ox = ow - 4; /* the last four again, overlapping */
      __m128 v[4] = {_mm_loadu_ps(r0 + 2 * ox), _mm_loadu_ps(r0 + 2 * ox + 4),
                     _mm_loadu_ps(r1 + 2 * ox), _mm_loadu_ps(r1 + 2 * ox + 4)};
      for (int t = 0; t < 4; t++) {
        v[t] = plain ? _mm_and_ps(_mm_cmpgt_ps(v[t], zero), v[t])
                   : affine_relu4(v[t], mv, kv, bv, zero);
      }
      __m128 a = _mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
             bb = _mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)),
             c = _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0)),
             d = _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1));
      _mm_storeu_ps(po + ox, _mm_max_ps(_mm_max_ps(a, bb), _mm_max_ps(c, d)));
      if (co) window_codes4(a, bb, c, d, 4, co + ox);
    }
    if (ox + 2 <= ow) { /* two windows, in the low lanes */
      __m128 v[2] = {_mm_loadu_ps(r0 + 2 * ox), _mm_loadu_ps(r1 + 2 * ox)};
      for (int t = 0; t < 2; t++) {
        v[t] = plain ? _mm_and_ps(_mm_cmpgt_ps(v[t], zero), v[t])
                   : affine_relu4(v[t], mv, kv, bv, zero);
      }
      __m128 a = _mm_shuffle_ps(v[0], v[0], _MM_SHUFFLE(2, 0, 2, 0)),
             bb = _mm_shuffle_ps(v[0], v[0], _MM_SHUFFLE(3, 1, 3, 1)),
             c = _mm_shuffle_ps(v[1], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
             d = _mm_shuffle_ps(v[1], v[1], _MM_SHUFFLE(3, 1, 3, 1));
      _mm_storel_pi((__m64 *)(void *)(po + ox), _mm_max_ps(_mm_max_ps(a, bb), _mm_max_ps(c, d)));
      if (co) window_codes4(a, bb, c, d, 2, co + ox);
      ox += 2;
    }
#endif
    for (; ox < ow; ox++) {
      float y[4];
      window_affine(r0 + 2 * ox, r1 + 2 * ox, m, k, b, y);
      po[ox] = max2(y[0], y[1], y[2], y[3]);
      if (co) co[ox] = window_code(y[0], y[1], y[2], y[3]);
    }
  }
}

/* Batch norm's affine map (x - m) * k + b and the ReLU are monotone in x:
 * non-decreasing for k > 0, non-increasing for k < 0. So the maximum of a
 * 2x2 window after them is the map of the window's maximum of x (k > 0)
 * or minimum (k < 0; neg), bit for bit: the rounding of each step is
 * monotone too. row_extremes takes those extremes from x itself (one h x
 * w plane, rows w floats apart) into zx (h/2 x w/2) and each one's
 * position into code (first_max's, on -x with neg), before the map is
 * known; row_affine_codes then maps them. The positions differ from
 * row_affine_pool's codes only where two values of a window that differ
 * in x map to the same float. */
static void row_extremes(int h, int w, const float *restrict x, int neg, float *restrict zx,
                         uint8_t *restrict code) {
  const int ow = w / 2;
  const float sg = neg ? -0.0f : 0.0f;
#if ELEM_AVX2
  const int avx2 = use_avx2();
  if (ow <= 16 && use_avx512()) {
    extremes16_avx512(h, w, x, sg, zx, code);
    return;
  }
#endif
  for (int oy = 0; oy < h / 2; oy++) {
    const float *r0 = x + 2L * oy * w, *r1 = r0 + w;
    float *zo = zx + (long)oy * ow;
    uint8_t *co = code + (long)oy * ow;
    int ox = 0;
#if ELEM_AVX2
    if (avx2 && ow >= 8) {
      ox = extremes8_avx2(ow, r0, r1, sg, zo, co);
      if (ox < ow) /* the last eight again, overlapping: the same values */
        extremes8_avx2(8, r0 + 2 * (ow - 8), r1 + 2 * (ow - 8), sg, zo + ow - 8, co + ow - 8);
      continue;
    }
#endif
#if defined(__SSE2__)
    const __m128 f = _mm_set1_ps(sg);
    for (; ox < ow && ow >= 4; ox += 4) {
      if (ox + 4 > ow) ox = ow - 4; /* the last four again, overlapping */
      __m128 v[4] = {_mm_xor_ps(_mm_loadu_ps(r0 + 2 * ox), f),
                     _mm_xor_ps(_mm_loadu_ps(r0 + 2 * ox + 4), f),
                     _mm_xor_ps(_mm_loadu_ps(r1 + 2 * ox), f),
                     _mm_xor_ps(_mm_loadu_ps(r1 + 2 * ox + 4), f)}, mx;
      store_codes4(first_max4(_mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)),
                              _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1)), &mx),
                   4, co + ox);
      _mm_storeu_ps(zo + ox, _mm_xor_ps(mx, f));
    }
#endif
    for (; ox < ow; ox++) {
      float mx, t = neg ? -1.0f : 1.0f;
      co[ox] = (uint8_t)first_max(t * r0[2 * ox], t * r0[2 * ox + 1], t * r1[2 * ox],
                                  t * r1[2 * ox + 1], &mx);
      zo[ox] = t * mx;
    }
  }
}

#if ELEM_AVX2
/* row_affine_codes by eights, as far as whole eights go: the same
 * operations (the affine without a fused multiply-add), so the same
 * bits. The window reached. */
__attribute__((target("avx2"))) static long affine_codes8_avx2(long len, const float *zx,
                                                               float m, float k, float b,
                                                               float *p, uint8_t *code) {
  const __m256 zero = _mm256_setzero_ps(), mv = _mm256_set1_ps(m), kv = _mm256_set1_ps(k),
               bv = _mm256_set1_ps(b);
  long i = 0;
  for (; i + 8 <= len; i += 8) {
    __m256 u = affine8(_mm256_loadu_ps(zx + i), mv, kv, bv);
    __m256 pos = _mm256_cmp_ps(u, zero, _CMP_GT_OQ);
    if (p) _mm256_storeu_ps(p + i, _mm256_and_ps(pos, u));
    uint64_t b8;
    memcpy(&b8, code + i, 8);
    __m256i kk = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)b8));
    store_codes8(_mm256_blendv_epi8(_mm256_set1_epi32(4), kk, _mm256_castps_si256(pos)), code + i);
  }
  return i;
}
#endif

/* The pool's output from row_extremes' zx (len windows): p = the ReLU of
 * (zx - m) * k + b, row_affine's arithmetic (p NULL: not written), and
 * code 4 where that is not > 0 (window_code's). */
static void row_affine_codes(long len, const float *restrict zx, float m, float k, float b,
                             float *restrict p, uint8_t *restrict code) {
  long i = 0;
#if ELEM_AVX2
  if (use_avx2()) i = affine_codes8_avx2(len, zx, m, k, b, p, code);
#endif
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps(), mv = _mm_set1_ps(m), kv = _mm_set1_ps(k),
               bv = _mm_set1_ps(b);
  for (; i + 4 <= len; i += 4) {
    __m128 v = affine_relu4(_mm_loadu_ps(zx + i), mv, kv, bv, zero);
    if (p) _mm_storeu_ps(p + i, v);
    __m128i pos = _mm_castps_si128(_mm_cmpgt_ps(v, zero)), k4;
    uint32_t b4;
    memcpy(&b4, code + i, 4);
    k4 = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128((int)b4), _mm_setzero_si128()), _mm_setzero_si128());
    store_codes4(_mm_or_si128(_mm_and_si128(pos, k4), _mm_andnot_si128(pos, _mm_set1_epi32(4))),
                 4, code + i);
  }
#endif
  for (; i < len; i++) {
    float v = (zx[i] - m) * k + b;
    v = v > 0.0f ? v : 0.0f;
    if (p) p[i] = v;
    code[i] = v > 0.0f ? code[i] : 4;
  }
}

void rt_bn_moments(const rt_bn_shape *s, const float *x, double *mom, long ms) {
  rt_bn_moments_pool(s, x, mom, ms, 0, NULL, NULL, NULL, 0);
}

void rt_bn_moments_pool(const rt_bn_shape *s, const float *x, double *mom, long ms, int w,
                        const float *gamma, float *zx, uint8_t *code, long code_ns) {
  const long xns = bn_x_ns(s), ohw = w ? (long)(s->hw / w / 2) * (w / 2) : 0;
  assert(!w || (zx && code && w % 2 == 0 && s->hw % (2L * w) == 0));
  if (s->hw <= 0) return;
  if (w && !code_ns) code_ns = (long)s->c * ohw;
  for (int n = 0; n < s->n; n++)
    for (int c = 0; c < s->c; c++) {
      const float *xr = x + n * xns + (long)c * s->hw;
      if (mom) row_stats(s, xr, mom + c * ms + 2 * n);
      if (w)
        row_extremes((int)(s->hw / w), w, xr, gamma[c] < 0.0f, zx + n * code_ns + c * ohw,
                     code + n * code_ns + c * ohw);
    }
}

void rt_bn_moments_at(const rt_bn_shape *s, const float *x, const rt_bn_mom *m, int64_t i0,
                      int c0, int stats) {
  double *mom = stats ? m->mom + c0 * m->ms + 2 * i0 : NULL;
  if (!m->pool) {
    if (mom) rt_bn_moments(s, x, mom, m->ms);
    return;
  }
  long at = i0 * m->code_ns + c0 * (s->hw / 4);
  rt_bn_moments_pool(s, x, mom, m->ms, s->w, m->gamma + c0, m->zx + at, m->code + at,
                     m->code_ns);
}

void rt_bn_copy_moments(int rows, int len, const float *x, long xs, float *y, long ys, int relu,
                        double *mom) {
  plane_stats(rows, len, x, xs, y, ys, relu, mom);
}

/* One window's gradient at its four positions (a b top row, c d), from
 * its code and the pool's gradient dp: 0 + dp at the code, 0 elsewhere
 * (and everywhere for code 4). */
static inline void window_g(int code, float dp, float g[4]) {
  float v = 0.0f + dp;
  for (int q = 0; q < 4; q++) g[q] = code == q ? v : 0.0f;
}

#if defined(__SSE2__)
/* The same for four windows in a row, code[0..3] and dp[0..3], without a
 * branch: g[0], g[1] the top row's 8 positions, g[2], g[3] the bottom's. */
static inline void window_g4(const uint8_t *code, const float *dp, __m128 g[4]) {
  uint32_t b4;
  memcpy(&b4, code, 4);
  __m128i k = _mm_cvtsi32_si128((int)b4);
  k = _mm_unpacklo_epi16(_mm_unpacklo_epi8(k, _mm_setzero_si128()), _mm_setzero_si128());
  __m128 v = _mm_add_ps(_mm_setzero_ps(), _mm_loadu_ps(dp)), w4[4];
  for (int q = 0; q < 4; q++)
    w4[q] = _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, _mm_set1_epi32(q))), v);
  g[0] = _mm_unpacklo_ps(w4[0], w4[1]), g[1] = _mm_unpackhi_ps(w4[0], w4[1]);
  g[2] = _mm_unpacklo_ps(w4[2], w4[3]), g[3] = _mm_unpackhi_ps(w4[2], w4[3]);
}
#endif

#if ELEM_AVX2
/* window_g4 for eight windows: g[0], g[1] the top row's 16 positions,
 * g[2], g[3] the bottom's. */
__attribute__((target("avx2"))) static inline void window_g8(const uint8_t *code, const float *dp,
                                                             __m256 g[4]) {
  uint64_t b8;
  memcpy(&b8, code, 8);
  __m256i k = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)b8));
  __m256 v = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(dp)), w4[4];
  for (int q = 0; q < 4; q++)
    w4[q] = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(q))), v);
  /* each row's sixteen columns: the windows' two values in turn */
  __m256 lo0 = _mm256_unpacklo_ps(w4[0], w4[1]), hi0 = _mm256_unpackhi_ps(w4[0], w4[1]);
  __m256 lo1 = _mm256_unpacklo_ps(w4[2], w4[3]), hi1 = _mm256_unpackhi_ps(w4[2], w4[3]);
  g[0] = _mm256_permute2f128_ps(lo0, hi0, 0x20), g[1] = _mm256_permute2f128_ps(lo0, hi0, 0x31);
  g[2] = _mm256_permute2f128_ps(lo1, hi1, 0x20), g[3] = _mm256_permute2f128_ps(lo1, hi1, 0x31);
}

/* row_pool_scatter's row pair (g0, g1) of ow >= 8 windows by eights, the
 * last eight overlapping the ones before (the same values again). */
__attribute__((target("avx2"))) static void scatter8_avx2(int ow, const uint8_t *co,
                                                          const float *d, float *g0, float *g1) {
  for (int ox = 0;; ox += 8) {
    if (ox + 8 > ow) ox = ow - 8;
    __m256 v[4];
    window_g8(co + ox, d + ox, v);
    _mm256_storeu_ps(g0 + 2 * ox, v[0]), _mm256_storeu_ps(g0 + 2 * ox + 8, v[1]);
    _mm256_storeu_ps(g1 + 2 * ox, v[2]), _mm256_storeu_ps(g1 + 2 * ox + 8, v[3]);
    if (ox + 8 >= ow) return;
  }
}
#endif

/* The gradient that reaches batch norm's output through a 2x2 max pool
 * after the ReLU, as rt_maxpool_bwd (assigning) and the ReLU's mask would
 * give it, into g (one h x w plane): dp's value (0 + dp) at each window's
 * first maximum of the ReLU's output, where that maximum is > 0; 0
 * elsewhere. The windows' codes (row_affine_pool's, window_code) say
 * where; no branch on them. */
static void row_pool_scatter(int h, int w, const uint8_t *restrict code, const float *restrict dp,
                             float *restrict g, long gs) {
  const int ow = w / 2;
#if ELEM_AVX2
  const int avx2 = use_avx2();
#endif
  for (int oy = 0; oy < h / 2; oy++) {
    float *g0 = g + (long)2 * oy * gs, *g1 = g0 + gs;
    const float *d = dp + (long)oy * ow;
    const uint8_t *co = code + (long)oy * ow;
    int ox = 0;
#if ELEM_AVX2
    if (avx2 && ow >= 8) {
      scatter8_avx2(ow, co, d, g0, g1);
      continue;
    }
#endif
#if defined(__SSE2__)
    for (; ox < ow && ow >= 4; ox += 4) {
      if (ox + 4 > ow) ox = ow - 4; /* the last four overlap the ones before */
      __m128 v[4];
      window_g4(co + ox, d + ox, v);
      _mm_storeu_ps(g0 + 2 * ox, v[0]), _mm_storeu_ps(g0 + 2 * ox + 4, v[1]);
      _mm_storeu_ps(g1 + 2 * ox, v[2]), _mm_storeu_ps(g1 + 2 * ox + 4, v[3]);
    }
#endif
    for (; ox < ow; ox++) {
      float v[4];
      window_g(co[ox], d[ox], v);
      g0[2 * ox] = v[0], g0[2 * ox + 1] = v[1], g1[2 * ox] = v[2], g1[2 * ox + 1] = v[3];
    }
  }
}

/* rt_bn_out: the affine map of the training forward from its saved
 * statistics, into y or, pooled, into p. */
static void bn_out_task(void *arg, int part) {
  const bn_job *j = arg;
  const rt_bn_shape *s = j->s;
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const int c0 = (int)((long)s->c * part / j->parts), c1 = (int)((long)s->c * (part + 1) / j->parts);
  const long ohw = (long)(hw / j->w / 2) * (j->w / 2);
  for (int n = 0; n < s->n; n++)
    for (int c = c0; c < c1; c++) {
      const float m = j->save_mean[c], k = j->scale[c];
      const float *xr = j->x + n * xns + c * hw;
      if (j->zx)
        row_affine_codes(ohw, j->zx + n * j->code_ns + c * ohw, m, k, j->beta[c],
                         j->p ? j->p + n * j->p_ns + c * ohw : NULL,
                         j->code + n * j->code_ns + c * ohw);
      else if (j->out) row_affine(hw, xr, m, k, j->beta[c], j->relu, j->out + n * yns + c * hw);
      else if (j->p)
        row_affine_pool((int)(hw / j->w), j->w, xr, j->w, m, k, j->beta[c],
                        j->p + n * j->p_ns + c * ohw,
                        j->code ? j->code + n * j->code_ns + c * ohw : NULL);
      else { /* the codes alone: a channel the pool does not work */
        float pool[RT_BN_POOL_HW / 4];
        row_affine_pool((int)(hw / j->w), j->w, xr, j->w, m, k, j->beta[c], pool,
                        j->code + n * j->code_ns + c * ohw);
      }
    }
}

/* The gradient that reaches batch norm's output, g: dy (0 + dy: -0
 * becomes +0), masked where relu is set by y > 0, y read (from y) or
 * recomputed from x as the forward computed it, (x - m) * k + b. */
enum { MASK_NONE, MASK_Y, MASK_X };

/* A row's sums of g and of g * (x - m) (row_grad_sums), taken by
 * sixteens: sixteen q, the row's values from 16 q, adds into chain q % 2
 * of sixteen float lanes, its lanes past the row left out. The two
 * chains close lane by lane, then the lanes pairwise (gs_close). Every
 * width does the same adds on each lane in the same order, so the same
 * bits; the two chains' adds run apart, and AVX-512 takes a sixteen in
 * one vector. */
enum { GS_LANES = 16, GS_CHAINS = 2 };

static float gs_close(float a[GS_CHAINS][GS_LANES]) {
  float h[8];
  for (int t = 0; t < 8; t++) h[t] = (a[0][t] + a[1][t]) + (a[0][t + 8] + a[1][t + 8]);
  return lanes_sum(h);
}

static void grad_sums_scalar(long len, const float *x, const float *y, const float *dy, int mask,
                             float m, float k, float b, float *sg, float *sgx, float *gout) {
  float a[GS_CHAINS][GS_LANES] = {{0}}, c[GS_CHAINS][GS_LANES] = {{0}};
  for (long i = 0; i < len; i++) {
    const long q = i / GS_LANES, t = i % GS_LANES;
    float d = x[i] - m, g = dy[i];
    if (mask != MASK_NONE) {
      float v = mask == MASK_Y ? y[i] : d * k + b;
      g = v > 0.0f ? g : 0.0f;
      if (gout) gout[i] = g;
    }
    a[q % GS_CHAINS][t] += g, c[q % GS_CHAINS][t] += g * d;
  }
  *sg = gs_close(a), *sgx = gs_close(c);
}

#if ELEM_AVX2
/* One sixteen of grad_sums_scalar at x, y, dy (gout) into the sums a, c,
 * as two eights; with part, only the lanes where use is set are read,
 * written and added (the others add +0: the sums start at +0 and never
 * become -0, so adding +0 is leaving out). */
__attribute__((target("avx2"), always_inline)) static inline void
gs16_avx2(const float *x, const float *y, const float *dy, const int mask, __m256 mv, __m256 kv,
          __m256 bv, float *gout, const __m256i use[2], const int part, __m256 a[2],
          __m256 c[2]) {
  for (int h = 0; h < 2; h++) {
    __m256 xv = part ? _mm256_maskload_ps(x + 8 * h, use[h]) : _mm256_loadu_ps(x + 8 * h);
    __m256 g = part ? _mm256_maskload_ps(dy + 8 * h, use[h]) : _mm256_loadu_ps(dy + 8 * h);
    __m256 d = _mm256_sub_ps(xv, mv);
    if (mask != MASK_NONE) {
      __m256 v = mask != MASK_Y ? _mm256_add_ps(_mm256_mul_ps(d, kv), bv)
                 : part         ? _mm256_maskload_ps(y + 8 * h, use[h])
                                : _mm256_loadu_ps(y + 8 * h);
      g = _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ), g);
      if (gout && part) _mm256_maskstore_ps(gout + 8 * h, use[h], g);
      else if (gout) _mm256_storeu_ps(gout + 8 * h, g);
    }
    __m256 gd = _mm256_mul_ps(g, d);
    if (part) {
      const __m256 u = _mm256_castsi256_ps(use[h]);
      g = _mm256_and_ps(g, u), gd = _mm256_and_ps(gd, u);
    }
    a[h] = _mm256_add_ps(a[h], g), c[h] = _mm256_add_ps(c[h], gd);
  }
}

/* gs_close of two chains of two eights each, in vectors: the same adds. */
__attribute__((target("avx2"), always_inline)) static inline float
gs_close_avx2(const __m256 a0[2], const __m256 a1[2]) {
  __m256 h = _mm256_add_ps(_mm256_add_ps(a0[0], a1[0]), _mm256_add_ps(a0[1], a1[1]));
  float v[8];
  _mm256_storeu_ps(v, h);
  return lanes_sum(v);
}

/* gs16_avx2's lanes of a sixteen that holds n of the row's values (all
 * sixteen for n >= 16), as two eights' masks. */
__attribute__((target("avx2"), always_inline)) static inline void gs_use_avx2(long n, __m256i lane,
                                                                            __m256i use[2]) {
  use[0] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), lane);
  use[1] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n - 8), lane);
}

__attribute__((target("avx2"), always_inline)) static inline void
grad_sums_avx2_as(long len, const float *x, const float *y, const float *dy, const int mask,
                  float m, float k, float b, float *sg, float *sgx, float *gout) {
  y = mask == MASK_Y ? y : x; /* read only with MASK_Y; a pointer to step either way */
  const __m256 mv = _mm256_set1_ps(m), kv = _mm256_set1_ps(k), bv = _mm256_set1_ps(b);
  const __m256 zero = _mm256_setzero_ps();
  __m256 a0[2] = {zero, zero}, a1[2] = {zero, zero}, c0[2] = {zero, zero}, c1[2] = {zero, zero};
  /* whole sixteens read every lane (the masks unused) */
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), whole[2] = {lane, lane};
  long i = 0;
  for (; i + 2 * GS_LANES <= len; i += 2 * GS_LANES) {
    gs16_avx2(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL, whole, 0, a0, c0);
    long j = i + GS_LANES;
    gs16_avx2(x + j, y + j, dy + j, mask, mv, kv, bv, gout ? gout + j : NULL, whole, 0, a1, c1);
  }
  __m256i use[2];
  if (i < len) { /* chain 0 */
    gs_use_avx2(len - i, lane, use);
    gs16_avx2(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL, use, 1, a0, c0);
  }
  if ((i += GS_LANES) < len) { /* chain 1 */
    gs_use_avx2(len - i, lane, use);
    gs16_avx2(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL, use, 1, a1, c1);
  }
  *sg = gs_close_avx2(a0, a1), *sgx = gs_close_avx2(c0, c1);
}

__attribute__((target("avx2"))) static void grad_sums_avx2(long len, const float *x,
                                                           const float *y, const float *dy,
                                                           int mask, float m, float k, float b,
                                                           float *sg, float *sgx, float *gout) {
  if (mask == MASK_X) grad_sums_avx2_as(len, x, y, dy, MASK_X, m, k, b, sg, sgx, gout);
  else if (mask == MASK_Y) grad_sums_avx2_as(len, x, y, dy, MASK_Y, m, k, b, sg, sgx, gout);
  else grad_sums_avx2_as(len, x, y, dy, MASK_NONE, m, k, b, sg, sgx, gout);
}

/* One sixteen of grad_sums_scalar in one vector, its lanes use read,
 * written and added (the rest left out: a masked add). */
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
gs16_avx512(const float *x, const float *y, const float *dy, const int mask, __m512 mv,
            __m512 kv, __m512 bv, float *gout, __mmask16 use, __m512 *a, __m512 *c) {
  __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(use, x), mv), g = _mm512_maskz_loadu_ps(use, dy);
  if (mask != MASK_NONE) {
    __m512 v = mask == MASK_Y ? _mm512_maskz_loadu_ps(use, y)
                              : _mm512_add_ps(_mm512_mul_ps(d, kv), bv);
    g = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), g);
    if (gout) _mm512_mask_storeu_ps(gout, use, g);
  }
  *a = _mm512_mask_add_ps(*a, use, *a, g);
  *c = _mm512_mask_add_ps(*c, use, *c, _mm512_mul_ps(g, d));
}

__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline float
gs_close_avx512(__m512 a0, __m512 a1) {
  __m512 h = _mm512_add_ps(a0, a1);
  __m256 s = _mm256_add_ps(_mm512_castps512_ps256(h),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(h), 1)));
  float v[8];
  _mm256_storeu_ps(v, s);
  return lanes_sum(v);
}

__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
grad_sums_avx512_as(long len, const float *x, const float *y, const float *dy, const int mask,
                    float m, float k, float b, float *sg, float *sgx, float *gout) {
  y = mask == MASK_Y ? y : x; /* read only with MASK_Y; a pointer to step either way */
  const __m512 mv = _mm512_set1_ps(m), kv = _mm512_set1_ps(k), bv = _mm512_set1_ps(b);
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
  long i = 0;
  for (; i + 2 * GS_LANES <= len; i += 2 * GS_LANES) {
    gs16_avx512(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL, 0xffff, &a0, &c0);
    long j = i + GS_LANES;
    gs16_avx512(x + j, y + j, dy + j, mask, mv, kv, bv, gout ? gout + j : NULL, 0xffff, &a1, &c1);
  }
  if (i < len) /* chain 0 */
    gs16_avx512(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL,
                lanes16((int)(len - i)), &a0, &c0);
  if ((i += GS_LANES) < len) /* chain 1 */
    gs16_avx512(x + i, y + i, dy + i, mask, mv, kv, bv, gout ? gout + i : NULL,
                lanes16((int)(len - i)), &a1, &c1);
  *sg = gs_close_avx512(a0, a1), *sgx = gs_close_avx512(c0, c1);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
grad_sums_avx512(long len, const float *x, const float *y, const float *dy, int mask, float m,
                 float k, float b, float *sg, float *sgx, float *gout) {
  if (mask == MASK_X) grad_sums_avx512_as(len, x, y, dy, MASK_X, m, k, b, sg, sgx, gout);
  else if (mask == MASK_Y) grad_sums_avx512_as(len, x, y, dy, MASK_Y, m, k, b, sg, sgx, gout);
  else grad_sums_avx512_as(len, x, y, dy, MASK_NONE, m, k, b, sg, sgx, gout);
}
#endif

typedef void grad_sums_fn(long len, const float *x, const float *y, const float *dy, int mask,
                          float m, float k, float b, float *sg, float *sgx, float *gout);

/* The widest grad_sums the CPU (and the cap) allows. */
static grad_sums_fn *grad_sums_pick(void) {
#if ELEM_AVX2
  if (use_avx512()) return grad_sums_avx512;
  if (use_avx2()) return grad_sums_avx2;
#endif
  return grad_sums_scalar;
}

/* With gout (and a mask), dy as the mask leaves it written there too: dy
 * where it passes, 0 where it stops (gout may be dy). */
static void row_grad_sums(long len, const float *x, const float *y, const float *dy, int mask,
                          float m, float k, float b, float *sg, float *sgx, float *gout) {
  grad_sums_pick()(len, x, y, dy, mask, m, k, b, sg, sgx, gout);
}

/* row_grad_sums' two sums for a plane whose ReLU output a 2x2 max pool
 * read, from its len windows alone: g = dp where the window's code
 * passes (< 4), 0 elsewhere; the sum of g and of g * (zx - m), zx the
 * value at the code (row_extremes'), in row_grad_sums' lanes and chains
 * (the bits of rt_bn_grad_sums_stop_row over the windows). The same
 * terms as over the plane that row_pool_scatter makes, in another order. */
static void row_code_sums(long len, const uint8_t *restrict code, const float *restrict dp,
                          const float *restrict zx, float m, float *sg, float *sgx) {
  float a[GS_CHAINS][GS_LANES] = {{0}}, c[GS_CHAINS][GS_LANES] = {{0}};
  for (long i = 0; i < len; i++) {
    const long q = i / GS_LANES, t = i % GS_LANES;
    float g = code[i] < 4 ? dp[i] : 0.0f;
    a[q % GS_CHAINS][t] += g, c[q % GS_CHAINS][t] += g * (zx[i] - m);
  }
  *sg = gs_close(a), *sgx = gs_close(c);
}

/* dx += (g - gm) * kg - (x - m) * kx; with assign, dx = 0 + it (as added
 * into zeros: -0 becomes +0), dx not read. k, b: the forward's scale and
 * shift (MASK_X). */
static void row_dx(long len, const float *restrict x, const float *restrict y,
                   const float *restrict dy, int mask, float m, float k, float b, float gm,
                   float kg, float kx, int assign, float *restrict dx) {
  long i = 0;
  if (mask != MASK_NONE) {
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps(), mv = _mm_set1_ps(m), kv = _mm_set1_ps(k),
                 bv = _mm_set1_ps(b), gmv = _mm_set1_ps(gm), kgv = _mm_set1_ps(kg),
                 kxv = _mm_set1_ps(kx);
    for (; i + 4 <= len; i += 4) {
      __m128 d = _mm_sub_ps(_mm_loadu_ps(x + i), mv);
      __m128 v = mask == MASK_Y ? _mm_loadu_ps(y + i) : _mm_add_ps(_mm_mul_ps(d, kv), bv);
      __m128 g = _mm_and_ps(_mm_cmpgt_ps(v, zero), _mm_add_ps(zero, _mm_loadu_ps(dy + i)));
      __m128 r = _mm_sub_ps(_mm_mul_ps(_mm_sub_ps(g, gmv), kgv), _mm_mul_ps(d, kxv));
      _mm_storeu_ps(dx + i, _mm_add_ps(assign ? zero : _mm_loadu_ps(dx + i), r));
    }
#endif
    for (; i < len; i++) {
      float d = x[i] - m, v = mask == MASK_Y ? y[i] : d * k + b;
      float g = 0.0f + dy[i];
      g = v > 0.0f ? g : 0.0f;
      dx[i] = (assign ? 0.0f : dx[i]) + ((g - gm) * kg - d * kx);
    }
  } else if (assign)
    for (; i < len; i++) dx[i] = 0.0f + ((dy[i] - gm) * kg - (x[i] - m) * kx);
  else
    for (; i < len; i++) dx[i] += (dy[i] - gm) * kg - (x[i] - m) * kx;
}

static void bn_bwd_task(void *arg, int part) {
  const bn_job *j = arg;
  const rt_bn_shape *s = j->s;
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const double count = (double)s->n * hw;
  const int c0 = (int)((long)s->c * part / j->parts), c1 = (int)((long)s->c * (part + 1) / j->parts);
  const int pooled = j->w > 0;
  const int mask = !j->relu || pooled ? MASK_NONE : j->y ? MASK_Y : MASK_X;
  const int G = BN_GROUP;
  float gbuf[RT_BN_POOL_HW];
  const long ohw = pooled ? (long)(hw / j->w / 2) * (j->w / 2) : 0;
  for (int g0 = c0; g0 < c1; g0 += G) {
    const int g1 = g0 + G < c1 ? g0 + G : c1;
    double sdy[BN_GROUP] = {0}, sdyx[BN_GROUP] = {0};
    float gm[BN_GROUP], kf[BN_GROUP], kx[BN_GROUP], ks[BN_GROUP], bs[BN_GROUP];
    for (int c = g0; c < g1; c++) {
      ks[c - g0] = mask == MASK_X ? j->scale[c] : 0.0f;
      bs[c - g0] = mask == MASK_X ? j->beta[c] : 0.0f;
    }
    for (int n = 0; n < s->n; n++)
      for (int c = g0; c < g1; c++) {
        float a, b;
        if (j->rows) { /* made where dy was (rt_bn_grad_sums_row) */
          sdy[c - g0] += j->rows[n * j->rows_ns + 2 * c];
          sdyx[c - g0] += j->rows[n * j->rows_ns + 2 * c + 1];
          continue;
        }
        if (j->zx) { /* from the windows alone */
          row_code_sums(ohw, j->code + n * j->code_ns + c * ohw, j->dy + n * j->p_ns + c * ohw,
                        j->zx + n * j->code_ns + c * ohw, j->save_mean[c], &a, &b);
          sdy[c - g0] += a, sdyx[c - g0] += b;
          continue;
        }
        const float *xr = j->x + n * xns + c * hw, *dyr = gbuf;
        if (pooled)
          row_pool_scatter((int)(hw / j->w), j->w, j->code + n * j->code_ns + c * ohw,
                           j->dy + n * j->p_ns + c * ohw, gbuf, j->w);
        else
          dyr = j->dy + n * yns + c * hw;
        row_grad_sums(hw, xr, mask == MASK_Y ? j->y + n * yns + c * hw : NULL, dyr, mask,
                      j->save_mean[c], ks[c - g0], bs[c - g0], &a, &b, NULL);
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
      if (j->gm_w) j->gm_w[c] = gm[c - g0], j->kg_w[c] = kf[c - g0], j->kx_w[c] = kx[c - g0];
    }
    for (int n = 0; n < s->n && j->dx; n++)
      for (int c = g0; c < g1; c++) {
        const float *xr = j->x + n * xns + c * hw, *dyr = gbuf;
        if (pooled)
          row_pool_scatter((int)(hw / j->w), j->w, j->code + n * j->code_ns + c * ohw,
                           j->dy + n * j->p_ns + c * ohw, gbuf, j->w);
        else
          dyr = j->dy + n * yns + c * hw;
        row_dx(hw, xr, mask == MASK_Y ? j->y + n * yns + c * hw : NULL, dyr, mask,
               j->save_mean[c], ks[c - g0], bs[c - g0], gm[c - g0], kf[c - g0], kx[c - g0],
               j->assign, j->dx + n * xns + c * hw);
      }
  }
}

/* Below this many values read (n * c rows, a sample's plane of a
 * channel each, of `row` values: fewer where the row's moments or sums
 * were taken before) a layer's batch norm stays on the caller: a dispatch
 * to sleeping workers costs tens of microseconds (pool.c), and each is a
 * join that waits for the slowest thread. */
enum { BN_SPLIT = 1 << 14 };

static int bn_parts(rt_pool *pool, int parts, const rt_bn_shape *s, long row) {
  if (!pool || (long)s->n * s->c * row < BN_SPLIT) return 1;
  if (parts > s->c) parts = s->c;
  return parts < 1 ? 1 : parts;
}

void rt_bn_fwd(rt_pool *pool, int parts, const rt_bn_shape *s, int training, int relu,
               const float *x, const double *mom, long ms, const float *gamma,
               const float *beta, float *run_mean, float *run_var, float *save_mean,
               float *save_invstd, float *save_scale, float *y) {
  /* with the rows' moments taken and no output, a row costs about a value */
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, mom && !y ? 1 : s->hw),
              .training = training, .relu = relu,
              .x = x, .mom = mom, .ms = ms, .gamma = gamma, .beta = beta,
              .run_mean = run_mean, .run_var = run_var, .save_mean_w = save_mean,
              .save_invstd_w = save_invstd, .scale_w = save_scale, .out = y};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_fwd_task, &j);
  else bn_fwd_task(&j, 0);
}

void rt_bn_out(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int w, const float *x,
               const float *beta, const float *save_mean, const float *scale, float *y, float *p,
               long p_ns, uint8_t *code, long code_ns) {
  assert(y ? !p && !code
           : (p || code) && relu && w > 0 && s->hw % (2L * w) == 0 && w % 2 == 0 &&
                 s->hw <= RT_BN_POOL_HW);
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, s->hw), .relu = relu, .x = x, .beta = beta,
              .save_mean = save_mean, .scale = scale, .out = y,
              .w = w, .p = p, .p_ns = p_ns ? p_ns : (long)s->c * (s->hw / 4), .code = code,
              .code_ns = code_ns ? code_ns : (long)s->c * (s->hw / 4)};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_out_task, &j);
  else bn_out_task(&j, 0);
}

void rt_bn_pool_out(rt_pool *pool, int parts, const rt_bn_shape *s, int w, const float *zx,
                    const float *beta, const float *save_mean, const float *scale, float *p,
                    long p_ns, uint8_t *code, long code_ns) {
  assert(zx && code && w > 0 && s->hw % (2L * w) == 0 && w % 2 == 0);
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, s->hw), .relu = 1, .beta = beta,
              .save_mean = save_mean, .scale = scale, .w = w, .p = p,
              .p_ns = p_ns ? p_ns : (long)s->c * (s->hw / 4), .code = code,
              .code_ns = code_ns ? code_ns : (long)s->c * (s->hw / 4), .zx = zx};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_out_task, &j);
  else bn_out_task(&j, 0);
}

void rt_bn_pool_bwd(rt_pool *pool, int parts, const rt_bn_shape *s, int w, int assign,
                    const uint8_t *code, long code_ns, const float *x, const float *dp, long p_ns,
                    const float *gamma, const float *beta, const float *save_mean,
                    const float *save_invstd, const float *scale, float *dx, float *dgamma,
                    float *dbeta) {
  assert(code && w > 0 && w % 2 == 0 && s->hw % (2L * w) == 0 && s->hw <= RT_BN_POOL_HW);
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, s->hw), .relu = 1, .assign = assign, .x = x,
              .code = (uint8_t *)code, .code_ns = code_ns ? code_ns : (long)s->c * (s->hw / 4),
              .dy = dp, .w = w, .p_ns = p_ns ? p_ns : (long)s->c * (s->hw / 4), .gamma = gamma,
              .beta = beta, .save_mean = save_mean, .save_invstd = save_invstd, .scale = scale,
              .dx = dx,
              .dgamma = dgamma, .dbeta = dbeta};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_bwd_task, &j);
  else bn_bwd_task(&j, 0);
}

void rt_bn_grad_sums_row(long len, const float *x, const float *dy, int relu, float m, float k,
                         float b, float sums[2]) {
  row_grad_sums(len, x, NULL, dy, relu ? MASK_X : MASK_NONE, m, relu ? k : 0.0f,
                relu ? b : 0.0f, &sums[0], &sums[1], NULL);
}

void rt_bn_grad_sums_stop_row(long len, const float *x, float *dy, float m, float k, float b,
                              float sums[2]) {
  row_grad_sums(len, x, NULL, dy, MASK_X, m, k, b, &sums[0], &sums[1], dy);
}

void rt_bn_bwd_sums(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int w, long p_ns,
                    const uint8_t *code, long code_ns, const float *zx, const float *rows,
                    long rows_ns, const float *x, const float *dy, const float *gamma,
                    const float *beta, const float *save_mean, const float *save_invstd,
                    const float *scale, float *dgamma, float *dbeta, float *gm, float *kg,
                    float *kx) {
  assert(w == 0 ||
         (code && relu && w % 2 == 0 && s->hw % (2L * w) == 0 && s->hw <= RT_BN_POOL_HW));
  assert(!zx || w);
  /* a row taken as its two sums costs about a value; from the windows, a
   * quarter of its values */
  long row = rows ? 1 : zx ? s->hw / 4 : s->hw;
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, row), .relu = relu, .x = x, .dy = dy,
              .rows = rows, .rows_ns = rows_ns, .code = (uint8_t *)code,
              .code_ns = code_ns ? code_ns : (long)s->c * (s->hw / 4), .zx = zx,
              .w = w, .p_ns = w && !p_ns ? (long)s->c * (s->hw / 4) : p_ns,
              .gamma = gamma, .beta = beta, .save_mean = save_mean, .save_invstd = save_invstd,
              .scale = scale, .dgamma = dgamma, .dbeta = dbeta, .gm_w = gm, .kg_w = kg,
              .kx_w = kx};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_bwd_task, &j);
  else bn_bwd_task(&j, 0);
}

void rt_bn_dx_row(long len, const float *x, const float *dy, int relu, float m, float k, float b,
                  float gm, float kg, float kx, float *dx) {
  row_dx(len, x, NULL, dy, relu ? MASK_X : MASK_NONE, m, relu ? k : 0.0f, relu ? b : 0.0f, gm,
         kg, kx, 1, dx);
}

#if ELEM_AVX2
/* rt_bn_dx_rows on AVX2 for rows of at least 8: row_dx's operations
 * (assign) on each value in the same order, so the same bits; each row by
 * eights, the last eight overlapping the one before (dx is written, not
 * read: the same values again). */
__attribute__((target("avx2"))) static void dx_rows_avx2(int rows, int len, const float *x,
                                                         const float *dy, int relu, float m,
                                                         float k, float b, float gm, float kg,
                                                         float kx, float *dx, long ds) {
  const __m256 zero = _mm256_setzero_ps(), mv = _mm256_set1_ps(m), kv = _mm256_set1_ps(k),
               bv = _mm256_set1_ps(b), gmv = _mm256_set1_ps(gm), kgv = _mm256_set1_ps(kg),
               kxv = _mm256_set1_ps(kx);
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (long)r * len, *gr = dy + (long)r * len;
    float *d = dx + r * ds;
    if (ds - len <= 8) /* the zeros after the row as one vector, before the values over it */
      _mm256_storeu_ps(d + ds - 8, zero);
    else
      for (long j = len; j < ds; j++) d[j] = 0.0f;
    for (int i = 0;; i += 8) {
      if (i + 8 > len) i = len - 8; /* the last eight overlap the ones before */
      __m256 dv = _mm256_sub_ps(_mm256_loadu_ps(xr + i), mv);
      __m256 g = relu ? _mm256_add_ps(zero, _mm256_loadu_ps(gr + i)) : _mm256_loadu_ps(gr + i);
      if (relu)
        g = _mm256_and_ps(
            _mm256_cmp_ps(_mm256_add_ps(_mm256_mul_ps(dv, kv), bv), zero, _CMP_GT_OQ), g);
      __m256 res = _mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(g, gmv), kgv), _mm256_mul_ps(dv, kxv));
      _mm256_storeu_ps(d + i, _mm256_add_ps(zero, res));
      if (i + 8 >= len) break;
    }
  }
}
#endif

#if ELEM_AVX2
/* rt_bn_dx_rows on AVX-512 for rows of up to 32 and ds up to 48: each
 * row as two masked vectors, the zeros after it to ds in the same stores
 * and a third; dx_rows_avx2's operations, so the same bits. */
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
dx_rows32(int rows, int len, const float *x, const float *dy, const int relu, float m, float k,
          float b, float gm, float kg, float kx, float *dx, long ds) {
  const __m512 zero = _mm512_setzero_ps(), mv = _mm512_set1_ps(m), kv = _mm512_set1_ps(k),
               bv = _mm512_set1_ps(b), gmv = _mm512_set1_ps(gm), kgv = _mm512_set1_ps(kg),
               kxv = _mm512_set1_ps(kx);
  const __mmask16 real[2] = {lanes16(len), lanes16(len - 16)};
  const __mmask16 put[3] = {lanes16((int)ds), lanes16((int)ds - 16), lanes16((int)ds - 32)};
  for (int r = 0; r < rows; r++) {
    const float *xr = x + (long)r * len, *gr = dy + (long)r * len;
    float *d = dx + r * ds;
    for (int h = 0; h < 2 && put[h]; h++) {
      __m512 dv = _mm512_sub_ps(_mm512_maskz_loadu_ps(real[h], xr + 16 * h), mv);
      __m512 g = _mm512_maskz_loadu_ps(real[h], gr + 16 * h);
      if (relu)
        g = _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask(_mm512_add_ps(_mm512_mul_ps(dv, kv), bv), zero, _CMP_GT_OQ),
            _mm512_add_ps(zero, g));
      __m512 res = _mm512_sub_ps(_mm512_mul_ps(_mm512_sub_ps(g, gmv), kgv), _mm512_mul_ps(dv, kxv));
      _mm512_mask_storeu_ps(d + 16 * h, put[h],
                            _mm512_maskz_mov_ps(real[h], _mm512_add_ps(zero, res)));
    }
    if (put[2]) _mm512_mask_storeu_ps(d + 32, put[2], zero);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
dx_rows_avx512(int rows, int len, const float *x, const float *dy, int relu, float m, float k,
               float b, float gm, float kg, float kx, float *dx, long ds) {
  if (relu) dx_rows32(rows, len, x, dy, 1, m, k, b, gm, kg, kx, dx, ds);
  else dx_rows32(rows, len, x, dy, 0, m, k, b, gm, kg, kx, dx, ds);
}
#endif

void rt_bn_dx_rows(int rows, int len, const float *x, const float *dy, int relu, float m, float k,
                   float b, float gm, float kg, float kx, float *dx, long ds) {
#if ELEM_AVX2
  if (len > 0 && len <= 32 && ds <= 48 && use_avx512()) {
    dx_rows_avx512(rows, len, x, dy, relu, m, k, b, gm, kg, kx, dx, ds);
    return;
  }
  if (len >= 8 && use_avx2()) {
    dx_rows_avx2(rows, len, x, dy, relu, m, k, b, gm, kg, kx, dx, ds);
    return;
  }
#endif
  for (int r = 0; r < rows; r++) {
    float *d = dx + r * ds;
    row_dx(len, x + (long)r * len, NULL, dy + (long)r * len, relu ? MASK_X : MASK_NONE, m,
           relu ? k : 0.0f, relu ? b : 0.0f, gm, kg, kx, 1, d);
    for (long i = len; i < ds; i++) d[i] = 0.0f;
  }
}

/* Zeros from each of rows [0, h) (ds floats apart)'s w to ds. */
static void zero_tails(int h, int w, float *d, long ds) {
  for (int r = 0; r < h; r++)
    for (long i = w; i < ds; i++) d[r * ds + i] = 0.0f;
}

#if ELEM_AVX2
/* rt_bn_pool_dx_rows' windows of one row pair by eights (x0, x1 the rows
 * of x, o0, o1 of dx), from window ox0 on as far as whole eights go:
 * row_pool_scatter's values then row_dx's (assign), the same operations,
 * so the same bits. The window reached. */
__attribute__((target("avx2"))) static int pool_dx8_avx2(int ow, int ox0, const uint8_t *co,
                                                         const float *dr, const float *x0,
                                                         const float *x1, float m, float gm,
                                                         float kg, float kx, float *o0,
                                                         float *o1) {
  const __m256 zero = _mm256_setzero_ps(), mv = _mm256_set1_ps(m), gmv = _mm256_set1_ps(gm),
               kgv = _mm256_set1_ps(kg), kxv = _mm256_set1_ps(kx);
  int ox = ox0;
  for (; ox + 8 <= ow; ox += 8) {
    __m256 g[4];
    window_g8(co + ox, dr + ox, g);
    const float *xs[4] = {x0 + 2 * ox, x0 + 2 * ox + 8, x1 + 2 * ox, x1 + 2 * ox + 8};
    float *os[4] = {o0 + 2 * ox, o0 + 2 * ox + 8, o1 + 2 * ox, o1 + 2 * ox + 8};
    for (int t = 0; t < 4; t++) {
      __m256 r = _mm256_sub_ps(_mm256_mul_ps(_mm256_sub_ps(g[t], gmv), kgv),
                               _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xs[t]), mv), kxv));
      _mm256_storeu_ps(os[t], _mm256_add_ps(zero, r));
    }
  }
  return ox;
}
#endif

#if ELEM_AVX2
/* window_g4 for n <= 16 windows: g[0], g[1] the top row's 32 positions,
 * g[2], g[3] the bottom's (zeros past the windows). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline void
window_g16(const uint8_t *code, const float *dp, int n, __m512 g[4]) {
  __m512i k = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes16(n), code));
  __m512 v = _mm512_add_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(lanes16(n), dp)), w4[4];
  for (int q = 0; q < 4; q++)
    w4[q] = _mm512_maskz_mov_ps(
        _mm512_mask_cmpeq_epi32_mask(lanes16(n), k, _mm512_set1_epi32(q)), v);
  /* each row's 32 columns: the windows' two values in turn */
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  g[0] = _mm512_permutex2var_ps(w4[0], lo, w4[1]), g[1] = _mm512_permutex2var_ps(w4[0], hi, w4[1]);
  g[2] = _mm512_permutex2var_ps(w4[2], lo, w4[3]), g[3] = _mm512_permutex2var_ps(w4[2], hi, w4[3]);
}

/* rt_bn_pool_dx_rows' rows of one plane of ow <= 16 windows a row pair,
 * a row pair a pass: pool_dx8_avx2's operations, so the same bits. Each
 * row's columns from w to ds are written 0 as far as 32, the rest of
 * them left to the caller; wide: the rows are longer than 16 (columns
 * 16 to 31 made). */
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline void
pool_dx16_rows(int h, int ow, long ds, const uint8_t *code, const float *dp, const float *x,
               float m, float gm, float kg, float kx, float *dx, const int wide) {
  const __m512 zero = _mm512_setzero_ps(), mv = _mm512_set1_ps(m), gmv = _mm512_set1_ps(gm),
               kgv = _mm512_set1_ps(kg), kxv = _mm512_set1_ps(kx);
  const int w = 2 * ow;
  /* each half row's lanes of the image, and of the row to ds */
  const __mmask16 real[2] = {lanes16(w), lanes16(w - 16)};
  const __mmask16 put[2] = {lanes16((int)ds), lanes16((int)ds - 16)};
  for (int oy = 0; oy < h / 2; oy++) {
    const float *x0 = x + (long)2 * oy * w;
    float *o0 = dx + (long)2 * oy * ds;
    __m512 g[4];
    window_g16(code + (long)oy * ow, dp + (long)oy * ow, ow, g);
    for (int t = 0; t < 4; t++) {
      const int half = t & 1, row = t >> 1;
      if (half && !wide) { /* the row's columns to ds past 16 */
        if (put[1]) _mm512_mask_storeu_ps(o0 + row * ds + 16, put[1], zero);
        continue;
      }
      const float *xs = x0 + (long)row * w + 16 * half;
      __m512 r = _mm512_sub_ps(
          _mm512_mul_ps(_mm512_sub_ps(g[t], gmv), kgv),
          _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(real[half], xs), mv), kxv));
      _mm512_mask_storeu_ps(o0 + row * ds + 16 * half, put[half],
                            _mm512_maskz_mov_ps(real[half], _mm512_add_ps(zero, r)));
    }
  }
}

/* row_pool_scatter's rows of one plane of ow <= 16 windows a row pair
 * into g (rows gs apart), window_g4's values; each row written to
 * column to (at least w, at most 32), zeros past w (window_g16's). */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
scatter16_avx512(int h, int ow, const uint8_t *code, const float *dp, float *g, long gs,
                 int to) {
  const __mmask16 put[2] = {lanes16(to), lanes16(to - 16)};
  for (int oy = 0; oy < h / 2; oy++) {
    float *g0 = g + (long)2 * oy * gs;
    __m512 v[4];
    window_g16(code + (long)oy * ow, dp + (long)oy * ow, ow, v);
    for (int t = 0; t < 4; t++)
      if (put[t & 1])
        _mm512_mask_storeu_ps(g0 + (t >> 1) * gs + 16 * (t & 1), put[t & 1], v[t]);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static void
pool_dx16_avx512(int h, int ow, long ds, const uint8_t *code, const float *dp, const float *x,
                 float m, float gm, float kg, float kx, float *dx) {
  if (ow > 8)
    pool_dx16_rows(h, ow, ds, code, dp, x, m, gm, kg, kx, dx, 1);
  else
    pool_dx16_rows(h, ow, ds, code, dp, x, m, gm, kg, kx, dx, 0);
}
#endif

void rt_bn_pool_dx_rows(int h, int w, const uint8_t *code, const float *dp, const float *x,
                        float m, float gm, float kg, float kx, float *dx, long ds) {
  assert(h % 2 == 0 && w % 2 == 0 && ds >= w);
  const int ow = w / 2;
#if ELEM_AVX2
  const int avx2 = use_avx2();
  if (ow <= 16 && use_avx512()) {
    pool_dx16_avx512(h, ow, ds, code, dp, x, m, gm, kg, kx, dx);
    if (ds > 32) zero_tails(h, 32, dx, ds);
    return;
  }
#endif
  for (int oy = 0; oy < h / 2; oy++) {
    const float *x0 = x + (long)2 * oy * w, *x1 = x0 + w, *dr = dp + (long)oy * ow;
    const uint8_t *co = code + (long)oy * ow;
    float *o0 = dx + (long)2 * oy * ds, *o1 = o0 + ds;
    int ox = 0;
#if ELEM_AVX2
    if (avx2 && ow >= 8) {
      ox = pool_dx8_avx2(ow, 0, co, dr, x0, x1, m, gm, kg, kx, o0, o1);
      if (ox < ow) /* the last eight again, overlapping: the same values */
        pool_dx8_avx2(ow, ow - 8, co, dr, x0, x1, m, gm, kg, kx, o0, o1);
      zero_tails(2, w, o0, ds);
      continue;
    }
#endif
#if defined(__SSE2__)
    const __m128 zero = _mm_setzero_ps(), mv = _mm_set1_ps(m), gmv = _mm_set1_ps(gm),
                 kgv = _mm_set1_ps(kg), kxv = _mm_set1_ps(kx);
    for (; ox < ow && ow >= 4; ox += 4) {
      if (ox + 4 > ow) ox = ow - 4; /* the last four again, overlapping */
      __m128 g[4]; /* row_pool_scatter's four vectors of g, then row_dx's (assign) */
      window_g4(co + ox, dr + ox, g);
      const float *xs[4] = {x0 + 2 * ox, x0 + 2 * ox + 4, x1 + 2 * ox, x1 + 2 * ox + 4};
      float *os[4] = {o0 + 2 * ox, o0 + 2 * ox + 4, o1 + 2 * ox, o1 + 2 * ox + 4};
      for (int t = 0; t < 4; t++) {
        __m128 r = _mm_sub_ps(_mm_mul_ps(_mm_sub_ps(g[t], gmv), kgv),
                              _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(xs[t]), mv), kxv));
        _mm_storeu_ps(os[t], _mm_add_ps(zero, r));
      }
    }
#endif
    for (; ox < ow; ox++) {
      float g[4];
      window_g(co[ox], dr[ox], g);
      const float *xs[4] = {x0 + 2 * ox, x0 + 2 * ox + 1, x1 + 2 * ox, x1 + 2 * ox + 1};
      float *os[4] = {o0 + 2 * ox, o0 + 2 * ox + 1, o1 + 2 * ox, o1 + 2 * ox + 1};
      for (int t = 0; t < 4; t++) *os[t] = 0.0f + ((g[t] - gm) * kg - (*xs[t] - m) * kx);
    }
    zero_tails(2, w, o0, ds);
  }
}

void rt_bn_pool_scatter(int h, int w, const uint8_t *code, const float *dp, float *g) {
  row_pool_scatter(h, w, code, dp, g, w);
}

/* Windows of one row pair a call of rt_pool_relu_rows codes at once. */
enum { POOL_ROW_CHUNK = 256 };

void rt_relu_pool_rows(int h, int w, const float *x, long xs, float *p, uint8_t *code) {
  assert(h % 2 == 0 && w % 2 == 0 && xs >= w);
  /* (x - 0) * 1 + 0 is x, bit for bit, but for -0, which the ReLU makes +0
   * either way */
  row_affine_pool(h, w, x, xs, 0.0f, 1.0f, 0.0f, p, code);
}

void rt_pool_code_rows(int h, int w, const uint8_t *code, const float *dp, float *d, long ds) {
  assert(h % 2 == 0 && w % 2 == 0 && ds >= w);
#if ELEM_AVX2
  if (w <= 32 && use_avx512()) {
    scatter16_avx512(h, w / 2, code, dp, d, ds, ds < 32 ? (int)ds : 32);
    if (ds > 32) zero_tails(h, 32, d, ds);
    return;
  }
#endif
  row_pool_scatter(h, w, code, dp, d, ds);
  zero_tails(h, w, d, ds);
}

void rt_pool_relu_rows(int h, int w, const float *y, const float *dp, float *d, long ds) {
  assert(h % 2 == 0 && w % 2 == 0 && ds >= w);
  const int ow = w / 2;
  uint8_t code[POOL_ROW_CHUNK];
  for (int oy = 0; oy < h / 2; oy++) {
    const float *r0 = y + (long)2 * oy * w, *r1 = r0 + w;
    float *g0 = d + (long)2 * oy * ds;
    for (int x0 = 0; x0 < ow; x0 += POOL_ROW_CHUNK) {
      int n = ow - x0 < POOL_ROW_CHUNK ? ow - x0 : POOL_ROW_CHUNK, ox = 0;
      const float *a0 = r0 + 2 * x0, *a1 = r1 + 2 * x0;
#if defined(__SSE2__)
      for (; ox + 4 <= n; ox += 4) {
        __m128 v[4] = {_mm_loadu_ps(a0 + 2 * ox), _mm_loadu_ps(a0 + 2 * ox + 4),
                       _mm_loadu_ps(a1 + 2 * ox), _mm_loadu_ps(a1 + 2 * ox + 4)};
        window_codes4(_mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)),
                      _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm_shuffle_ps(v[2], v[3], _MM_SHUFFLE(3, 1, 3, 1)), 4, code + ox);
      }
#endif
      for (; ox < n; ox++)
        code[ox] = window_code(a0[2 * ox], a0[2 * ox + 1], a1[2 * ox], a1[2 * ox + 1]);
      row_pool_scatter(2, 2 * n, code, dp + (long)oy * ow + x0, g0 + 2 * x0, ds);
    }
    zero_tails(2, w, g0, ds);
  }
}

void rt_bn_affine_row(long len, const float *x, float m, float k, float b, int relu, float *y) {
  row_affine(len, x, m, k, b, relu, y);
}

/* Floats between samples of bn's z (its own, or x's). */
static long bn_z_ns(const rt_bn_x *bn, long x_ns) { return bn->z_ns ? bn->z_ns : x_ns; }

void rt_bn_x_lanes(const rt_bn_x *bn, int64_t i0, int m, long hw, long x_ns, float *x, int NB) {
  const int nc = bn->c1 - bn->c0;
  float *d = x + (long)bn->c0 * hw * NB;
  if (m <= 0 || nc <= 0 || hw <= 0) return;
  rt_transpose(m, (int)(nc * hw), rt_bn_x_z(bn, i0, hw, x_ns, 0), bn_z_ns(bn, x_ns), d, NB, 0);
  for (int c = 0; c < nc; c++) { /* a channel's rows are one run where every lane is real */
    float *r = d + c * hw * NB;
    if (m == NB) row_affine(hw * NB, r, bn->m[c], bn->k[c], bn->b[c], bn->relu, r);
    else
      for (long p = 0; p < hw; p++)
        row_affine(m, r + p * NB, bn->m[c], bn->k[c], bn->b[c], bn->relu, r + p * NB);
  }
}

const float *rt_bn_x_z(const rt_bn_x *bn, int64_t i, long hw, long x_ns, int c) {
  return bn->z + i * bn_z_ns(bn, x_ns) + c * hw;
}

void rt_bn_x_write(const rt_bn_x *bn, int n, long hw, long x_ns, float *x) {
  for (int i = 0; i < n; i++)
    for (int c = 0; c < bn->c1 - bn->c0; c++) {
      const float *z = rt_bn_x_z(bn, i, hw, x_ns, c);
      float *y = x + i * x_ns + (bn->c0 + c) * hw;
      rt_ahead(z, hw * (long)sizeof *z, RT_AHEAD, i == 0 && c == 0);
      row_affine(hw, z, bn->m[c], bn->k[c], bn->b[c], bn->relu, y);
    }
}

/* With stops, the ReLU's mask (MASK_X) whatever relu says, and the
 * gradient written back where it stops (rt_bn_grad_sums_stop_row). */
void rt_bn_x_sums(const rt_bn_x *bn, int64_t i, long hw, long x_ns, float *dx) {
  const int nc = bn->c1 - bn->c0, mask = bn->stops || bn->relu ? MASK_X : MASK_NONE;
  const float *z0 = rt_bn_x_z(bn, i, hw, x_ns, 0); /* channel c's at z0 + c hw */
  grad_sums_fn *sums_of = grad_sums_pick();
  for (int c = 0; c < nc; c++) {
    float *d = dx + (bn->c0 + c) * hw, *sums = bn->sums + i * 2 * nc + 2 * c;
    const float *z = z0 + c * hw;
    rt_ahead(z, hw * (long)sizeof *z, RT_AHEAD, c == 0);
    sums_of(hw, z, NULL, d, mask, bn->m[c], bn->k[c], bn->b[c], &sums[0], &sums[1],
            bn->stops ? d : NULL);
  }
}

void rt_bn_bwd(rt_pool *pool, int parts, const rt_bn_shape *s, int relu, int assign,
               const float *x, const float *y, const float *dy, const float *gamma,
               const float *beta, const float *save_mean, const float *save_invstd,
               const float *scale, float *dx, float *dgamma, float *dbeta) {
  bn_job j = {.s = s, .parts = bn_parts(pool, parts, s, s->hw), .relu = relu, .assign = assign,
              .x = x, .y = y, .dy = dy, .gamma = gamma, .beta = beta, .save_mean = save_mean,
              .save_invstd = save_invstd, .scale = scale, .dx = dx, .dgamma = dgamma,
              .dbeta = dbeta};
  if (j.parts > 1) rt_pool_run(pool, j.parts, bn_bwd_task, &j);
  else bn_bwd_task(&j, 0);
}
