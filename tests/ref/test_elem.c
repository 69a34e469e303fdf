/* test_elem.c: the vectorised elementwise kernels (runtime/elem.h) against
 * their reference counterparts, bit for bit, on data that exercises every
 * branch the reference takes: negative values, exact zeros, signed zeros,
 * ties inside a pooling window, NaN, odd sizes and strided samples.
 * Also the ReLU fused into the reference conv forward (rt_conv_shape.relu),
 * which the CPU backend is checked against in tests/jit; and batch norm
 * with its ReLU, held to float rounding instead (test_bn). */
#include "runtime/elem.h"
#include "runtime/ref.h"
#include "base/rng.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"

static rt_rng rng;
static int isa_now; /* the vector width run_all runs at */

static float *falloc(long n) {
  float *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
  if (!p) abort();
  return p;
}

/* Mostly uniform in [-1, 1), with a few of the values that differ
 * between sloppy and exact implementations; small integers make ties. */
static void fill(float *p, long n, int ties) {
  for (long i = 0; i < n; i++) {
    uint32_t k = rt_rng_below(&rng, 16);
    p[i] = k == 0   ? 0.0f
           : k == 1 ? -0.0f
           : k == 2 ? NAN
           : ties   ? (float)((int)rt_rng_below(&rng, 5) - 2)
                    : 2.0f * rt_rng_uniform(&rng) - 1.0f;
  }
}

static int same_bits(const float *a, const float *b, long n, long *at) {
  for (long i = 0; i < n; i++)
    if (memcmp(a + i, b + i, sizeof *a) != 0) {
      *at = i;
      return 0;
    }
  return 1;
}

static void test_relu(void) {
  for (long len = 0; len < 70; len += 1 + len / 4) {
    float *x = falloc(len), *y1 = falloc(len), *y2 = falloc(len);
    float *dy = falloc(len), *d1 = falloc(len), *d2 = falloc(len);
    fill(x, len, 0), fill(dy, len, 0);
    rt_ref_relu_fwd(1, len, x, 0, y1, 0);
    rt_relu(len, x, y2);
    long at = -1;
    CHECK(same_bits(y1, y2, len, &at), "relu len %ld differs at %ld", len, at);
    memcpy(y2, x, (size_t)len * sizeof *x);
    rt_relu(len, y2, y2); /* in place */
    CHECK(same_bits(y1, y2, len, &at), "in-place relu len %ld differs at %ld", len, at);
    /* the reference adds into dx; the fast one writes: start from zeros,
     * and from garbage for the fast one */
    rt_ref_relu_bwd(1, len, y1, 0, dy, 0, d1, 0);
    fill(d2, len, 0);
    rt_relu_mask(len, y1, dy, d2);
    CHECK(same_bits(d1, d2, len, &at), "relu mask len %ld differs at %ld", len, at);
    free(x), free(y1), free(y2), free(dy), free(d1), free(d2);
  }
}

/* The row operations on rows shorter than a vector, of whole vectors and
 * with a partial last one; the gaps between rows stay. */
static void test_2d(void) {
  enum { R = 5, LMAX = 40 };
  static const int lens[] = {5, 8, 13, 14, 16, 28, 32, 40};
  static const char *const names[] = {"copy_2d", "relu_2d", "set_2d", "add_2d"};
  void (*const ops[])(int, int, const float *, long, float *, long) = {rt_copy_2d, rt_relu_2d,
                                                                       rt_set_2d, rt_add_2d};
  for (size_t t = 0; t < sizeof lens / sizeof *lens; t++) {
    const int L = lens[t], XS = L + 4, YS = L + 2;
    float x[R * (LMAX + 4)], y[R * (LMAX + 2)], want[R * (LMAX + 2)];
    fill(x, R * XS, 0);
    for (int op = 0; op < 4; op++) {
      for (int i = 0; i < R * YS; i++) y[i] = want[i] = (float)i - 7.5f; /* the gaps stay */
      for (int r = 0; r < R; r++)
        for (int i = 0; i < L; i++) {
          float v = x[r * XS + i], *w = &want[r * YS + i];
          if (op == 1) rt_ref_relu_fwd(1, 1, &v, 0, w, 0);
          else *w = op == 0 ? v : op == 2 ? 0.0f + v : *w + v;
        }
      ops[op](R, L, x, XS, y, YS);
      long at = -1;
      CHECK(same_bits(want, y, R * YS, &at), "%s (rows of %d) differs at %ld", names[op], L, at);
    }
  }
}

/* Batch norm's maps of the tests: with and without the ReLU, a shift
 * that sends some values to exactly -0 and 0. */
static const rt_affine maps[] = {{0.25f, 1.5f, -0.1f, 1}, {-0.5f, 0.75f, 0.2f, 0}};

/* Rows into a zero frame, plain, gated as the ReLU's gradient, and
 * through batch norm's map (the bits of rt_bn_affine_row's): rows shorter
 * than a vector, of whole vectors, with a partial last one, with zeros
 * before and after them of up to a vector and of more. */
static void test_pad_rows(void) {
  static const int geo[][4] = {/* len, xs, ys, lpad */
                               {13, 17, 23, 3}, {5, 7, 9, 1},   {16, 16, 16, 0},
                               {16, 20, 40, 10}, {28, 28, 32, 1}, {9, 9, 30, 0},
                               {14, 14, 15, 1},  {28, 28, 29, 1}, {16, 16, 48, 16}};
  enum { R = 5, XMAX = 28, YMAX = 48 };
  for (size_t t = 0; t < sizeof geo / sizeof geo[0]; t++) {
    const int L = geo[t][0], XS = geo[t][1], YS = geo[t][2], PAD = geo[t][3];
    float x[R * XMAX], g[R * XMAX], y[R * YMAX + 4], want[R * YMAX + 4];
    fill(x, R * XS, 0), fill(g, R * XS, 1);
    x[2] = -0.0f, g[2] = 1.0f; /* -0 comes out +0, as from rt_relu_mask */
    x[5] = maps[0].m;          /* mapped: (m - m) * k + b = b */
    for (int mode = 0; mode < 4; mode++) { /* plain, gated, mapped with and without the ReLU */
      int gated = mode == 1;
      const rt_affine *map = mode >= 2 ? &maps[mode - 2] : NULL;
      for (int i = 0; i < R * YS + 4; i++) y[i] = want[i] = (float)i + 0.5f; /* no write past */
      for (int r = 0; r < R; r++) {
        float *w = want + r * YS;
        for (int i = 0; i < YS; i++) w[i] = 0.0f;
        if (gated) rt_relu_mask(L, g + r * XS, x + r * XS, w + PAD);
        else if (map) rt_bn_affine_row(L, x + r * XS, map->m, map->k, map->b, map->relu, w + PAD);
        else memcpy(w + PAD, x + r * XS, (size_t)L * sizeof *x);
      }
      rt_pad_rows(R, L, x, XS, y, YS, PAD, gated ? g : NULL, XS, map);
      long at = -1;
      CHECK(same_bits(want, y, R * YS + 4, &at), "pad_rows %dx%d (ys %d, lpad %d, mode %d) differs at %ld",
            R, L, YS, PAD, mode, at);
    }
  }
}

/* A row's stride-2 phases, split out and put back (added, or written
 * over), at every length around the four-lane blocks. */
static void test_stride2(void) {
  enum { N = 23 };
  float x[2 * N], a[N], b[N], r[2 * N + 2], want[2 * N + 2];
  fill(x, 2 * N, 0), fill(a, N, 1), fill(b, N, 2);
  b[3] = -0.0f; /* written over, it becomes +0: 0 + -0 */
  for (int n = 0; n <= N; n++)
    for (int odd = 0; odd < 2 && n > 0; odd++) {
      int na = n, nb = n - odd;
      float ga[N + 2], gb[N + 2], sa[N + 2], sb[N + 2]; /* no write past */
      for (int i = 0; i < N + 2; i++) sa[i] = ga[i] = (float)i + 0.5f, sb[i] = gb[i] = -ga[i];
      for (int t = 0; t < na; t++) ga[t] = x[2 * t];
      for (int t = 0; t < nb; t++) gb[t] = x[2 * t + 1];
      rt_split2(na, nb, x, sa, sb, NULL);
      long at = -1;
      CHECK(same_bits(ga, sa, N + 2, &at) && same_bits(gb, sb, N + 2, &at),
            "split2 %d, %d differs at %ld", na, nb, at);
      for (int m = 0; m < 2; m++) { /* through batch norm's map, as rt_bn_affine_row */
        const rt_affine *f = &maps[m];
        float mx[2 * N];
        rt_bn_affine_row(2 * N, x, f->m, f->k, f->b, f->relu, mx);
        for (int t = 0; t < na; t++) ga[t] = mx[2 * t];
        for (int t = 0; t < nb; t++) gb[t] = mx[2 * t + 1];
        rt_split2(na, nb, x, sa, sb, f);
        CHECK(same_bits(ga, sa, N + 2, &at) && same_bits(gb, sb, N + 2, &at),
              "mapped split2 %d, %d (relu %d) differs at %ld", na, nb, f->relu, at);
      }
      for (int add = 0; add < 2; add++) {
        for (int i = 0; i < 2 * N + 2; i++) r[i] = want[i] = (float)(i % 7) - 3.0f;
        for (int t = 0; t < na; t++) want[2 * t] = (add ? want[2 * t] : 0.0f) + a[t];
        for (int t = 0; t < nb; t++) want[2 * t + 1] = (add ? want[2 * t + 1] : 0.0f) + b[t];
        rt_interleave2(na, nb, a, b, r, add);
        CHECK(same_bits(want, r, 2 * N + 2, &at), "interleave2 %d, %d (add %d) differs at %ld", na,
              nb, add, at);
      }
    }
}

static void test_transpose(void) {
  static const int shapes[][2] = {{1, 1},   {3, 5},   {4, 4},   {16, 8},  {9, 8},   {17, 19},
                                  {24, 40}, {64, 37}, {5, 130}, {16, 48}, {48, 16}, {33, 35}};
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
    for (int add = 0; add < 2; add++) {
      int R = shapes[k][0], C = shapes[k][1];
      long ss = C + 3, ds = R + 2;
      float *src = falloc(R * ss), *dst = falloc(C * ds), *want = falloc(C * ds);
      fill(src, R * ss, 0);
      for (long i = 0; i < C * ds; i++) dst[i] = want[i] = (float)(i % 11) - 5.0f;
      for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
          want[c * ds + r] = add ? want[c * ds + r] + src[r * ss + c] : src[r * ss + c];
      rt_transpose(R, C, src, ss, dst, ds, add);
      long at = -1;
      CHECK(same_bits(want, dst, C * ds, &at), "transpose %dx%d add %d differs at %ld", R, C, add,
            at);
      free(src), free(dst), free(want);
    }
}

static void test_sum(void) {
  for (long len = 0; len < 100; len += 1 + len / 3) {
    float x[100];
    double want = 0;
    for (long i = 0; i < len; i++) x[i] = (float)((int)rt_rng_below(&rng, 17) - 8), want += x[i];
    float got = rt_sum(len, x); /* small integers: exact in any order */
    CHECK(got == (float)want, "sum of %ld integers: %g, want %g", len, got, want);
  }
  /* rt_sum_rows: rt_sum's bits, row by row, in runs of four and not */
  enum { XS = 45 };
  float x[9 * XS], out[9];
  fill(x, 9 * XS, 0);
  for (int i = 0; i < 9 * XS; i++) x[i] = isnan(x[i]) ? 0.5f : x[i];
  for (int rows = 1; rows <= 9; rows++)
    for (long len = 0; len <= 41; len += 1 + len / 2) {
      rt_sum_rows(rows, len, x, XS, out);
      int bad = 0;
      for (int r = 0; r < rows; r++) {
        float want = rt_sum(len, x + r * XS);
        bad += memcmp(&want, &out[r], sizeof want) != 0;
      }
      CHECK(!bad, "sum_rows: %d of %d rows of %ld differ from rt_sum", bad, rows, len);
    }
}

/* rt_gram: its sums rt_sum's bits, its products the scalar chains' (the
 * vector paths against the plain one, which the narrowest width takes)
 * and within rounding of the products summed in double; the lower
 * triangle untouched. Rows of 1 to 12 (the Gram taps of batch norm's
 * patch sums), lengths from 0 to 200, with and without a tail past the
 * eights. */
static void test_gram(void) {
  enum { XS = 203, R = 12 };
  static float x[R * XS], g[R * R], g0[R * R], sums[R];
  fill(x, R * XS, 0);
  for (int i = 0; i < R * XS; i++) x[i] = isnan(x[i]) ? 0.25f : x[i];
  const long lens[] = {0, 1, 7, 8, 9, 16, 23, 196, 200};
  for (int rows = 1; rows <= R; rows++)
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
      long len = lens[k];
      for (int i = 0; i < R * R; i++) g[i] = -7.0f;
      rt_gram(rows, len, x, XS, sums, g);
      int bad = 0, far = 0, lower = 0;
      for (int u = 0; u < rows; u++) {
        float want = rt_sum(len, x + u * XS);
        bad += memcmp(&want, &sums[u], sizeof want) != 0;
        for (int t = 0; t < rows; t++) {
          float v = g[u * rows + t];
          if (t < u) {
            lower += v != -7.0f;
            continue;
          }
          double d = 0.0, a = 0.0;
          for (long i = 0; i < len; i++) {
            double pr = (double)x[u * XS + i] * x[t * XS + i];
            d += pr, a += fabs(pr);
          }
          far += fabs(v - d) > 1e-6 * a + 1e-30;
        }
      }
      CHECK(!bad, "gram: %d of %d sums of %ld differ from rt_sum", bad, rows, len);
      CHECK(!far, "gram: %d products of %d rows of %ld off the double sums", far, rows, len);
      CHECK(!lower, "gram: %d of %d rows' lower triangle written", lower, rows);
      /* the plain path's bits, at every width */
      rt_elem_set_isa(RT_ISA_SSE2);
      rt_gram(rows, len, x, XS, sums, g0);
      rt_elem_set_isa(isa_now);
      for (int u = 0; u < rows; u++)
        for (int t = u; t < rows; t++) bad += memcmp(&g0[u * rows + t], &g[u * rows + t], 4) != 0;
      CHECK(!bad, "gram: %d products of %d rows of %ld differ from the plain path's", bad, rows,
            len);
    }
}

/* rt_gram3x3 against the double sums of rt_im2col's nine rows (a 3 x 3
 * conv at stride 1 in a zero frame of 1), within rounding of the plane's
 * own sums (the taps' are those less a row or a column), the lower
 * triangle left alone, and the plain path's bits at every width: planes
 * of 2 x 2 to 30 x 31 (widths under, at and past whole eights). */
static void test_gram3x3(void) {
  const int hs[] = {2, 3, 5, 14, 28, 30}, ws[] = {2, 3, 7, 8, 9, 14, 28, 31};
  for (size_t i = 0; i < sizeof hs / sizeof *hs; i++)
    for (size_t j = 0; j < sizeof ws / sizeof *ws; j++) {
      int h = hs[i], w = ws[j];
      long hw = (long)h * w;
      float *x = falloc(hw), *col = falloc(9 * hw), *pad = falloc(RT_GRAM3X3_PAD(h, w));
      float sums[9], g[81], g0[81], sums0[9];
      fill(x, hw, 0);
      for (long q = 0; q < hw; q++) x[q] = isnan(x[q]) ? 0.25f : x[q];
      rt_conv_shape s = {.n = 1, .cin = 1, .h = h, .w = w, .cout = 1, .oh = h, .ow = w, .k = 3,
                         .stride = 1, .pad = 1};
      rt_im2col(&s, x, col);
      for (int q = 0; q < 81; q++) g[q] = -7.0f;
      rt_gram3x3(h, w, x, sums, g, pad);
      /* within rounding of the plane's own sums, which the taps' leave
       * a row or a column of */
      double mass = 0.0, energy = 0.0;
      for (long q = 0; q < hw; q++) mass += fabs(x[q]), energy += (double)x[q] * x[q];
      int far = 0, lower = 0;
      for (int u = 0; u < 9; u++) {
        double d = 0.0, a = 0.0;
        for (long q = 0; q < hw; q++) d += col[u * hw + q], a += fabs(col[u * hw + q]);
        far += fabs(sums[u] - d) > 1e-6 * (a + mass);
        for (int t = 0; t < 9; t++) {
          if (t < u) {
            lower += g[u * 9 + t] != -7.0f;
            continue;
          }
          d = 0.0, a = 0.0;
          for (long q = 0; q < hw; q++) {
            double pr = (double)col[u * hw + q] * col[t * hw + q];
            d += pr, a += fabs(pr);
          }
          far += fabs(g[u * 9 + t] - d) > 1e-6 * (a + energy);
        }
      }
      CHECK(!far, "gram3x3 %dx%d: %d sums or products off the patches' double sums", h, w, far);
      CHECK(!lower, "gram3x3 %dx%d: %d of the lower triangle written", h, w, lower);
      rt_elem_set_isa(RT_ISA_SSE2);
      rt_gram3x3(h, w, x, sums0, g0, pad);
      rt_elem_set_isa(isa_now);
      int bad = memcmp(sums0, sums, sizeof sums) != 0;
      for (int u = 0; u < 9; u++)
        for (int t = u; t < 9; t++) bad += memcmp(&g0[u * 9 + t], &g[u * 9 + t], 4) != 0;
      CHECK(!bad, "gram3x3 %dx%d: %d values differ from the plain path's", h, w, bad);
      free(x), free(col), free(pad);
    }
}

static void pool_case(int n, int c, int h, int w, int f, long xextra, long yextra) {
  rt_pool_shape s = {n, c, h, w, f, 0, 0};
  long xns = (long)c * h * w + xextra, yns = (long)c * (h / f) * (w / f) + yextra;
  s.x_ns = xns, s.y_ns = yns;
  float *x = falloc(n * xns), *y1 = falloc(n * yns), *y2 = falloc(n * yns);
  float *dy = falloc(n * yns), *d1 = falloc(n * xns), *d2 = falloc(n * xns);
  fill(x, n * xns, 1), fill(dy, n * yns, 0);
  for (long i = 0; i < n * xns; i++) d1[i] = d2[i] = (float)(i % 7) - 3.0f;
  memcpy(y2, y1, (size_t)(n * yns) * sizeof *y1);
  rt_ref_maxpool_fwd(&s, x, y1);
  rt_ref_maxpool_bwd(&s, x, dy, d1);
  /* two halves of the batch, as two threads' chunks */
  rt_maxpool_fwd(&s, 0, n / 2, x, y2);
  rt_maxpool_fwd(&s, n / 2, n, x, y2);
  rt_maxpool_bwd(&s, n / 2, n, x, dy, d2, 0);
  rt_maxpool_bwd(&s, 0, n / 2, x, dy, d2, 0);
  long at = -1;
  CHECK(same_bits(y1, y2, n * yns, &at), "maxpool fwd %dx%dx%dx%d f%d differs at %ld", n, c,
        h, w, f, at);
  CHECK(same_bits(d1, d2, n * xns, &at), "maxpool bwd %dx%dx%dx%d f%d differs at %ld", n, c,
        h, w, f, at);
  /* assigning: as the reference added into zeros, over garbage, and the
   * gaps between samples left alone */
  for (long i = 0; i < n * xns; i++) d1[i] = d2[i] = (float)(i % 5) - 2.0f;
  for (int k = 0; k < n; k++) memset(d1 + k * xns, 0, (size_t)c * h * w * sizeof *d1);
  rt_ref_maxpool_bwd(&s, x, dy, d1);
  rt_maxpool_bwd(&s, n / 2, n, x, dy, d2, 1);
  rt_maxpool_bwd(&s, 0, n / 2, x, dy, d2, 1);
  CHECK(same_bits(d1, d2, n * xns, &at), "maxpool bwd (assign) %dx%dx%dx%d f%d differs at %ld",
        n, c, h, w, f, at);
  free(x), free(y1), free(y2), free(dy), free(d1), free(d2);
}

static void test_pool(void) {
  pool_case(3, 4, 8, 8, 2, 0, 0);
  pool_case(4, 3, 7, 9, 2, 5, 3);  /* odd sizes drop the last row/column */
  pool_case(2, 2, 9, 9, 3, 0, 0);  /* not 2: the reference path */
  pool_case(5, 1, 2, 2, 2, 1, 1);
  pool_case(1, 16, 28, 28, 2, 0, 0);
}

static void test_sgd(void) {
  for (int masked = 0; masked < 2; masked++) {
    enum { N = 1000 };
    float w1[N], w2[N], g[N], v1[N], v2[N];
    uint8_t m[N];
    fill(w1, N, 0), fill(g, N, 0), fill(v1, N, 0);
    for (int i = 0; i < N; i++) m[i] = rt_rng_below(&rng, 3) != 0;
    memcpy(w2, w1, sizeof w1), memcpy(v2, v1, sizeof v1);
    rt_ref_sgd(N, w1, g, v1, masked ? m : NULL, 0.05f, 0.9f, 5e-4f);
    rt_sgd(0, 333, w2, g, v2, masked ? m : NULL, 0.05f, 0.9f, 5e-4f);
    rt_sgd(333, N, w2, g, v2, masked ? m : NULL, 0.05f, 0.9f, 5e-4f);
    long at = -1;
    CHECK(same_bits(w1, w2, N, &at), "sgd (mask %d) weights differ at %ld", masked, at);
    CHECK(same_bits(v1, v2, N, &at), "sgd (mask %d) momentum differs at %ld", masked, at);
  }
}

/* The packed step on a layer's active weights is the masked dense step,
 * and leaves each new weight where the copy it is given wants it (here in
 * reverse order, past a slot the step must not touch). */
static void test_sgd_packed(void) {
  enum { N = 1000 };
  float w1[N], w2[N], g[N], gp[N], v1[N], v2[N], copy[N + 1];
  uint8_t m[N];
  int32_t idx[N], at[N];
  fill(w1, N, 0), fill(g, N, 0), fill(v1, N, 0);
  size_t n = 0;
  for (int i = 0; i < N; i++)
    if ((m[i] = rt_rng_below(&rng, 4) == 0)) idx[n] = i, gp[n++] = g[i];
  for (size_t j = 0; j < n; j++) at[j] = (int32_t)(n - j);
  copy[0] = -7.0f;
  memcpy(w2, w1, sizeof w1), memcpy(v2, v1, sizeof v1);
  rt_sgd(0, N, w1, g, v1, m, 0.05f, 0.9f, 5e-4f);
  rt_sgd_packed(0, n / 3, idx, w2, gp, v2, 0.05f, 0.9f, 5e-4f, copy, at);
  rt_sgd_packed(n / 3, n, idx, w2, gp, v2, 0.05f, 0.9f, 5e-4f, copy, at);
  long at_ = -1;
  CHECK(same_bits(w1, w2, N, &at_), "packed sgd weights differ at %ld", at_);
  CHECK(same_bits(v1, v2, N, &at_), "packed sgd momentum differs at %ld", at_);
  int bad = copy[0] != -7.0f;
  for (size_t j = 0; j < n; j++) bad += memcmp(&copy[n - j], &w1[idx[j]], sizeof *copy) != 0;
  CHECK(!bad, "packed sgd: %d places of the copy do not hold their new weight", bad);
  memcpy(w2, w1, sizeof w1);
  rt_sgd_packed(0, n, idx, w2, gp, v2, 0.05f, 0.9f, 5e-4f, NULL, NULL); /* no copy: none written */
  CHECK(memcmp(&copy[n], &w1[idx[0]], sizeof *copy) == 0, "packed sgd wrote a copy it was not given");
}

/* Masked entries to exact zeros (NaN too), whatever nonzero byte marks an
 * active one, at every length around the vector width. */
static void test_zero_masked(void) {
  for (int n = 0; n < 70; n++) {
    float v[70], r[70];
    uint8_t m[70];
    fill(v, n, 0);
    for (int i = 0; i < n; i++) {
      m[i] = rt_rng_below(&rng, 3) ? (uint8_t)rt_rng_below(&rng, 256) : 0;
      r[i] = m[i] ? v[i] : 0.0f;
    }
    rt_zero_masked(v, m, (size_t)n);
    long at = -1;
    CHECK(same_bits(v, r, n, &at), "zero_masked (n %d) differs at %ld", n, at);
  }
}

static void test_conv_relu(void) {
  rt_conv_shape s = {.n = 2, .cin = 3, .h = 9, .w = 7, .cout = 4, .k = 3, .stride = 2,
                     .pad = 1};
  rt_conv_shape_finish(&s);
  long nx = s.n * s.x_ns, ny = s.n * s.y_ns, nw = (long)s.cout * s.cin * 9;
  float *x = falloc(nx), *w = falloc(nw), *b = falloc(s.cout);
  float *y1 = falloc(ny), *y2 = falloc(ny);
  for (long i = 0; i < nx; i++) x[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
  for (long i = 0; i < nw; i++) w[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
  for (int i = 0; i < s.cout; i++) b[i] = 0.5f * rt_rng_uniform(&rng) - 0.25f;
  rt_ref_conv_fwd(&s, x, w, b, NULL, NULL, y1);
  rt_ref_relu_fwd(1, ny, y1, 0, y1, 0);
  s.relu = 1;
  rt_ref_conv_fwd(&s, x, w, b, NULL, NULL, y2);
  long at = -1, neg = 0;
  for (long i = 0; i < ny; i++) neg += y1[i] == 0.0f;
  CHECK(neg > 0 && neg < ny, "the case should have both signs (%ld zeros of %ld)", neg, ny);
  CHECK(same_bits(y1, y2, ny, &at), "conv with fused relu differs at %ld", at);
  free(x), free(w), free(b), free(y1), free(y2);
}

/* Batch norm with and without its ReLU (rt_bn_fwd, rt_bn_bwd) against
 * rt_ref_bn_* and the ReLU's reference, composed as the exec composed them.
 * Not bit for bit (elem.h): each value is held to the rounding of the
 * float expression that computes it. Tensors are laid out as the exec's
 * arena (samples ns apart, x and y inside each sample, gaps around them
 * that must stay as they were) or packed; 1, 2 and 3 tasks of a pool must
 * agree bit for bit. */
typedef struct bn_case {
  int n, c, hw;
  float shift; /* added to x: a mean large against the spread */
  int packed;  /* x_ns = y_ns = 0 */
  int w;       /* rt_bn_shape.w: the rows the moments' sums follow */
} bn_case;

typedef struct bn_buf {
  float *a, *b;      /* x's arena, y's (the same one unless packed) */
  float *rm, *rv, *sm, *si, *sk, *dg, *db;
} bn_buf;

static void bn_buf_new(bn_buf *u, long size, int packed, int c) {
  u->a = falloc(size), u->b = packed ? falloc(size) : u->a;
  u->rm = falloc(c), u->rv = falloc(c), u->sm = falloc(c), u->si = falloc(c), u->sk = falloc(c);
  u->dg = falloc(c), u->db = falloc(c);
}

static void bn_buf_free(bn_buf *u) {
  if (u->b != u->a) free(u->b);
  free(u->a), free(u->rm), free(u->rv), free(u->sm), free(u->si), free(u->sk), free(u->dg), free(u->db);
}

/* |got - want| within tol * scale (NaN fails) */
static int near(double got, double want, double tol, double scale) {
  return fabs(got - want) <= tol * scale;
}

static void test_bn_case(rt_pool *pool, const bn_case *k, int training, int relu) {
  const int n = k->n, c = k->c, hw = k->hw;
  const long len = (long)c * hw, ns = k->packed ? len : 2 * len + 7;
  const long xo = k->packed ? 0 : 3, yo = k->packed ? 0 : len + 5, size = n * ns;
  rt_bn_shape s = {n, c, hw, k->packed ? 0 : ns, k->packed ? 0 : ns, k->w};
  char what[120];
  snprintf(what, sizeof what, "bn n %d c %d hw %d w %d shift %g%s, %s, relu %d", n, c, hw, k->w,
           (double)k->shift, k->packed ? " packed" : "", training ? "training" : "inference",
           relu);
  /* the inputs: x and the running statistics; the gaps hold garbage */
  bn_buf r, f, f2;
  bn_buf_new(&r, size, k->packed, c), bn_buf_new(&f, size, k->packed, c);
  bn_buf_new(&f2, size, k->packed, c);
  for (long i = 0; i < size; i++) r.a[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
  if (r.b != r.a)
    for (long i = 0; i < size; i++) r.b[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
  float *gamma = falloc(c), *beta = falloc(c);
  for (int i = 0; i < n; i++)
    for (long j = 0; j < len; j++) {
      uint32_t q = rt_rng_below(&rng, 16);
      float u = 2.0f * rt_rng_uniform(&rng) - 1.0f;
      r.a[i * ns + xo + j] = k->shift == 0.0f && q == 0   ? 0.0f
                             : k->shift == 0.0f && q == 1 ? -0.0f
                                                          : k->shift + u * (float)(1 + j / hw % 3);
    }
  for (int i = 0; i < c; i++) {
    gamma[i] = (i % 2 ? -1.0f : 1.0f) * (0.5f + rt_rng_uniform(&rng));
    beta[i] = rt_rng_uniform(&rng) - 0.5f;
    r.rm[i] = k->shift + rt_rng_uniform(&rng) - 0.5f;
    r.rv[i] = 0.1f + 4.0f * rt_rng_uniform(&rng);
  }
  const bn_buf *src = &r;
  bn_buf *dst[2] = {&f, &f2};
  for (int d = 0; d < 2; d++) {
    memcpy(dst[d]->a, src->a, (size_t)size * sizeof(float));
    if (src->b != src->a) memcpy(dst[d]->b, src->b, (size_t)size * sizeof(float));
    memcpy(dst[d]->rm, src->rm, (size_t)c * sizeof(float));
    memcpy(dst[d]->rv, src->rv, (size_t)c * sizeof(float));
  }
  float *rm0 = falloc(c), *rv0 = falloc(c);
  memcpy(rm0, r.rm, (size_t)c * sizeof(float)), memcpy(rv0, r.rv, (size_t)c * sizeof(float));

  /* forward */
  rt_ref_bn_fwd(&s, training, r.a + xo, gamma, beta, r.rm, r.rv, r.sm, r.si, r.b + yo);
  if (relu)
    for (int i = 0; i < n; i++) rt_ref_relu_fwd(1, len, r.b + i * ns + yo, 0, r.b + i * ns + yo, 0);
  rt_bn_fwd(NULL, 1, &s, training, relu, f.a + xo, NULL, 0, gamma, beta, f.rm, f.rv, f.sm,
            f.si, f.sk, f.b + yo);
  int bad = 0;
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      double m = training ? r.sm[ch] : rm0[ch];
      double is = training ? r.si[ch] : 1.0 / sqrt(rv0[ch] + RT_BN_EPS);
      double kk = gamma[ch] * is;
      for (int j = 0; j < hw; j++) {
        long at = i * ns + ch * hw + j;
        double xv = r.a[xo + at];
        /* the rounding of (x - mean) * k + beta in float, and of the
         * statistics in units of the spread (1 / invstd) */
        double scale = fabs(kk) * (fabs(xv) + fabs(m) + 1.0 / is) + fabs(beta[ch]);
        bad += !near(f.b[yo + at], r.b[yo + at], 8 * FLT_EPSILON, scale + 1e-30);
      }
    }
  CHECK(!bad, "%s: %d outputs out of tolerance", what, bad);
  /* nothing else in the arenas written */
  bad = 0;
  for (int i = 0; i < n; i++)
    for (long j = 0; j < ns; j++) {
      int in_y = j >= yo && j < yo + len;
      if (r.b != r.a) bad += memcmp(&f.a[i * ns + j], &r.a[i * ns + j], sizeof(float)) != 0;
      if (!in_y) bad += memcmp(&f.b[i * ns + j], &r.b[i * ns + j], sizeof(float)) != 0;
    }
  CHECK(!bad, "%s: %d values outside y written", what, bad);
  if (training) {
    bad = 0;
    for (int ch = 0; ch < c; ch++) {
      double sd = 1.0 / r.si[ch];
      bad += !near(f.sm[ch], r.sm[ch], 4 * FLT_EPSILON, fabs(r.sm[ch]) + sd);
      bad += !near(f.si[ch], r.si[ch], 1e-5, r.si[ch]);
      bad += !near(f.rm[ch], r.rm[ch], 4 * FLT_EPSILON, fabs(r.rm[ch]) + sd);
      bad += !near(f.rv[ch], r.rv[ch], 1e-5, r.rv[ch]);
    }
    CHECK(!bad, "%s: %d statistics out of tolerance", what, bad);
  } else {
    CHECK(!memcmp(f.rm, rm0, (size_t)c * sizeof(float)) && !memcmp(f.rv, rv0, (size_t)c * sizeof(float)),
          "%s: inference changed the running statistics", what);
  }
  for (int parts = 2; parts <= 3; parts++) {
    memcpy(f2.rm, rm0, (size_t)c * sizeof(float)), memcpy(f2.rv, rv0, (size_t)c * sizeof(float));
    rt_bn_fwd(pool, parts, &s, training, relu, f2.a + xo, NULL, 0, gamma, beta, f2.rm, f2.rv,
              f2.sm, f2.si, f2.sk, f2.b + yo);
    int same = !memcmp(f.b, f2.b, (size_t)size * sizeof(float)) &&
               !memcmp(f.rm, f2.rm, (size_t)c * sizeof(float)) &&
               !memcmp(f.rv, f2.rv, (size_t)c * sizeof(float));
    if (training)
      same = same && !memcmp(f.sm, f2.sm, (size_t)c * sizeof(float)) &&
             !memcmp(f.si, f2.si, (size_t)c * sizeof(float));
    CHECK(same, "%s: forward on %d tasks differs from 1", what, parts);
  }
  /* the rows' moments taken beforehand, a few samples at a time as the
   * conv chunks take them (and channels from the second on, as a run of
   * worked channels), change nothing */
  if (training && c > 1) {
    const long ms = 2L * n + 3;
    double *mom = malloc((size_t)c * ms * sizeof *mom);
    for (int i0 = 0, i1; i0 < n; i0 = i1) {
      i1 = i0 + 1 + i0 % 3 < n ? i0 + 1 + i0 % 3 : n;
      rt_bn_shape sp = {i1 - i0, c - 1, hw, s.x_ns ? s.x_ns : len, s.y_ns ? s.y_ns : len, s.w};
      rt_bn_moments(&sp, f2.a + xo + i0 * sp.x_ns + hw, mom + ms + 2 * i0, ms);
    }
    memcpy(f2.rm, rm0, (size_t)c * sizeof(float)), memcpy(f2.rv, rv0, (size_t)c * sizeof(float));
    rt_bn_shape sc = s;
    sc.c = c - 1;
    if (!sc.x_ns) sc.x_ns = sc.y_ns = len;
    rt_bn_fwd(pool, 2, &sc, 1, relu, f2.a + xo + hw, mom + ms, ms, gamma + 1, beta + 1, f2.rm + 1,
              f2.rv + 1, f2.sm + 1, f2.si + 1, f2.sk + 1, f2.b + yo + hw);
    CHECK(!memcmp(f.b, f2.b, (size_t)size * sizeof(float)) &&
              !memcmp(f.rm + 1, f2.rm + 1, (size_t)(c - 1) * sizeof(float)) &&
              !memcmp(f.rv + 1, f2.rv + 1, (size_t)(c - 1) * sizeof(float)) &&
              !memcmp(f.sm + 1, f2.sm + 1, (size_t)(c - 1) * sizeof(float)) &&
              !memcmp(f.si + 1, f2.si + 1, (size_t)(c - 1) * sizeof(float)) &&
              !memcmp(f.sk + 1, f2.sk + 1, (size_t)(c - 1) * sizeof(float)),
          "%s: forward on the rows' moments differs", what);
    free(mom);
  }

  /* backward, training only; y: the reference's output (the mask), dy in
   * its place in a gradient arena, dx accumulated into */
  if (training) {
    float *ga = falloc(size), *gb = r.b != r.a ? falloc(size) : ga, *g2 = falloc(size);
    float *g3 = falloc(size), *d = falloc(n * len);
    for (long i = 0; i < size; i++) ga[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
    if (gb != ga)
      for (long i = 0; i < size; i++) gb[i] = 2.0f * rt_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < n; i++)
      for (long j = 0; j < len; j++) {
        uint32_t q = rt_rng_below(&rng, 8);
        if (q < 2) gb[i * ns + yo + j] = q ? -0.0f : 0.0f;
      }
    /* the exec's old composition: the ReLU's gradient into a packed
     * buffer, then the reference */
    for (int i = 0; i < n; i++)
      if (relu)
        rt_relu_mask(len, r.b + i * ns + yo, gb + i * ns + yo, d + i * len);
      else
        memcpy(d + i * len, gb + i * ns + yo, (size_t)len * sizeof(float));
    float *dxr = falloc(size), *gbr = gb != ga ? falloc(size) : NULL;
    memcpy(dxr, ga, (size_t)size * sizeof(float));
    if (gbr) memcpy(gbr, gb, (size_t)size * sizeof(float));
    rt_bn_shape sr = s;
    sr.y_ns = len;
    rt_ref_bn_bwd(&sr, r.a + xo, d, gamma, r.sm, r.si, dxr + xo, r.dg, r.db);
    float *dxf = ga, *dyf = gb + yo; /* the fast one works in place */
    memcpy(g2, ga, (size_t)size * sizeof(float));
    rt_bn_bwd(NULL, 1, &s, relu, 0, r.a + xo, r.b + yo, dyf, gamma, beta, r.sm, r.si, NULL,
              dxf + xo, f.dg, f.db);
    bad = 0;
    for (int ch = 0; ch < c; ch++) {
      /* the scales of the terms: mean |g|, mean |g * xhat| */
      double m = r.sm[ch], is = r.si[ch], kk = fabs(gamma[ch] * is), ag = 0.0, agx = 0.0;
      for (int i = 0; i < n; i++)
        for (int j = 0; j < hw; j++) {
          double g = d[i * len + ch * hw + j], xh = (r.a[i * ns + xo + ch * hw + j] - m) * is;
          ag += fabs(g), agx += fabs(g * xh);
        }
      bad += !near(f.db[ch], r.db[ch], 1e-5, ag + 1e-30);
      bad += !near(f.dg[ch], r.dg[ch], 1e-5, agx + 1e-30);
      ag /= (double)n * hw, agx /= (double)n * hw;
      for (int i = 0; i < n; i++)
        for (int j = 0; j < hw; j++) {
          long at = i * ns + xo + ch * hw + j;
          double g = d[i * len + ch * hw + j], xh = (r.a[at] - m) * is;
          double scale = kk * (fabs(g) + ag + fabs(xh) * agx) + fabs(g2[at]);
          bad += !near(dxf[at], dxr[at], 1e-5, scale + 1e-30);
        }
    }
    CHECK(!bad, "%s: %d gradients out of tolerance", what, bad);
    bad = 0;
    for (int i = 0; i < n; i++)
      for (long j = 0; j < ns; j++) {
        int in_x = j >= xo && j < xo + len;
        if (!in_x) bad += memcmp(&dxf[i * ns + j], &dxr[i * ns + j], sizeof(float)) != 0;
        if (gbr) bad += memcmp(&gb[i * ns + j], &gbr[i * ns + j], sizeof(float)) != 0;
      }
    CHECK(!bad, "%s: %d values outside dx written", what, bad);
    for (int parts = 2; parts <= 3; parts++) {
      memcpy(g3, g2, (size_t)size * sizeof(float));
      float *dx3 = g3, *dy3 = gb != ga ? gb + yo : g3 + yo;
      rt_bn_bwd(pool, parts, &s, relu, 0, r.a + xo, r.b + yo, dy3, gamma, beta, r.sm, r.si,
                NULL, dx3 + xo, f2.dg, f2.db);
      CHECK(!memcmp(g3, ga, (size_t)size * sizeof(float)) &&
                !memcmp(f.dg, f2.dg, (size_t)c * sizeof(float)) &&
                !memcmp(f.db, f2.db, (size_t)c * sizeof(float)),
            "%s: backward on %d tasks differs from 1", what, parts);
    }
    /* assign: as adding into zeros, bit for bit, whatever dx held (NaN
     * here); dy kept apart from dx */
    if (gb != ga) {
      float *z0 = falloc(size), *z1 = falloc(size);
      memset(z0, 0, (size_t)size * sizeof(float));
      for (long i = 0; i < size; i++) z1[i] = NAN;
      for (int parts = 1; parts <= 2; parts++) {
        rt_bn_bwd(NULL, 1, &s, relu, 0, r.a + xo, r.b + yo, gbr + yo, gamma, beta, r.sm, r.si,
                  NULL, z0 + xo, f2.dg, f2.db);
        rt_bn_bwd(pool, parts, &s, relu, 1, r.a + xo, r.b + yo, gbr + yo, gamma, beta, r.sm,
                  r.si, NULL, z1 + xo, f2.dg, f2.db);
        bad = 0;
        for (int i = 0; i < n; i++)
          bad += memcmp(z0 + i * ns + xo, z1 + i * ns + xo, (size_t)len * sizeof(float)) != 0;
        CHECK(!bad, "%s: assigning dx on %d tasks differs from adding into zeros", what, parts);
        memset(z0, 0, (size_t)size * sizeof(float));
      }
      free(z0), free(z1);
    }
    /* the mask recomputed from x (y NULL) is the fast forward's own:
     * the same gradients as with its output for y, bit for bit, adding
     * and assigning, on 1 and 2 tasks */
    if (relu) {
      float *w0 = falloc(size), *w1 = falloc(size), *dg1 = falloc(c), *db1 = falloc(c);
      for (int assign = 0; assign < 2; assign++)
        for (int parts = 1; parts <= 2; parts++) {
          memcpy(w0, g2, (size_t)size * sizeof(float)), memcpy(w1, g2, (size_t)size * sizeof(float));
          /* dy in its own arena, or in dx's (then read where not written) */
          const float *dy0 = gbr ? gbr + yo : w0 + yo, *dy1 = gbr ? gbr + yo : w1 + yo;
          rt_bn_bwd(NULL, 1, &s, relu, assign, f.a + xo, f.b + yo, dy0, gamma, beta, f.sm, f.si,
                    NULL, w0 + xo, f2.dg, f2.db);
          rt_bn_bwd(pool, parts, &s, relu, assign, f.a + xo, NULL, dy1, gamma, beta, f.sm, f.si,
                    f.sk, w1 + xo, dg1, db1);
          CHECK(!memcmp(w0, w1, (size_t)size * sizeof(float)) &&
                    !memcmp(f2.dg, dg1, (size_t)c * sizeof(float)) &&
                    !memcmp(f2.db, db1, (size_t)c * sizeof(float)),
                "%s: the recomputed mask (assign %d, %d tasks) differs from the forward's", what,
                assign, parts);
        }
      /* the sums alone, then dx's rows as the cpu conv's packing makes
       * them (rt_bn_dx_rows: rows of 28, 7 or the plane, 3 zeros after
       * each): w1 holds the last assigning backward's */
      if (gbr) {
        const int rl = hw % 28 == 0 ? 28 : hw % 7 == 0 ? 7 : hw, nr = hw / rl;
        const long ds = rl + 3;
        float *k3 = falloc(3 * c), *rows = falloc(nr * ds);
        rt_bn_bwd_sums(pool, 2, &s, 1, 0, 0, NULL, 0, NULL, NULL, 0, f.a + xo, gbr + yo, gamma,
                       beta, f.sm, f.si, f.sk, dg1, db1, k3, k3 + c, k3 + 2 * c);
        bad = 0;
        for (int i = 0; i < n; i++)
          for (int ch = 0; ch < c; ch++) {
            long at = i * ns + ch * hw;
            for (long q = 0; q < nr * ds; q++) rows[q] = 7.0f; /* every float written */
            rt_bn_dx_rows(nr, rl, f.a + xo + at, gbr + yo + at, 1, f.sm[ch], f.sk[ch], beta[ch],
                          k3[ch], k3[c + ch], k3[2 * c + ch], rows, ds);
            for (int q = 0; q < nr; q++) {
              bad += memcmp(rows + q * ds, w1 + xo + at + q * rl, (size_t)rl * sizeof(float)) != 0;
              for (long e = rl; e < ds; e++) bad += rows[q * ds + e] != 0.0f;
            }
          }
        CHECK(!bad, "%s: %d planes of dx's rows differ from the backward's", what, bad);
        free(k3), free(rows);
      }
      free(w0), free(w1), free(dg1), free(db1);
    }
    if (gb != ga) free(gb);
    free(ga), free(g2), free(g3), free(d), free(dxr), free(gbr);
  }
  bn_buf_free(&r), bn_buf_free(&f), bn_buf_free(&f2);
  free(gamma), free(beta), free(rm0), free(rv0);
}

/* rt_bn_copy_moments: the copy as rt_copy_2d / rt_relu_2d make it, the
 * moments the bits rt_bn_moments takes from the copy over rows of len,
 * and near the double-precision mean and sum of squared deviations, with
 * a mean large against the spread and with a constant plane (exactly its
 * value, and 0). Row lengths below 8, of whole eights and between. */
static void test_copy_moments(void) {
  static const int shape[][2] = {{1, 1}, {3, 5}, {7, 7},  {4, 8},   {28, 28}, {14, 14},
                                 {5, 9}, {2, 17}, {6, 30}, {3, 64}, {1, 300}, {56, 56}};
  for (size_t k = 0; k < sizeof shape / sizeof *shape; k++)
    for (int relu = 0; relu < 2; relu++)
      for (int kind = 0; kind < 3; kind++) { /* spread, shifted, constant */
        const int rows = shape[k][0], len = shape[k][1];
        const long xs = len + 3, ys = len + 1, hw = (long)rows * len;
        float *x = falloc(rows * xs), *y = falloc(rows * ys), *want = falloc(rows * ys);
        float *flat = falloc(hw);
        for (long i = 0; i < rows * xs; i++)
          x[i] = kind == 2 ? 0.75f : (kind ? 1000.0f : 0.0f) + 2.0f * rt_rng_uniform(&rng) - 1.0f;
        for (long i = 0; i < rows * ys; i++) y[i] = want[i] = -7.0f;
        double mom[2], mom2[2];
        rt_bn_copy_moments(rows, len, x, xs, y, ys, relu, mom);
        (relu ? rt_relu_2d : rt_copy_2d)(rows, len, x, xs, want, ys);
        char what[80];
        snprintf(what, sizeof what, "copy with moments %dx%d relu %d kind %d", rows, len, relu,
                 kind);
        CHECK(!memcmp(y, want, (size_t)(rows * ys) * sizeof *y), "%s: the copy differs", what);
        rt_copy_2d(rows, len, want, ys, flat, len);
        rt_bn_shape s = {1, 1, (int)hw, 0, 0, len};
        rt_bn_moments(&s, flat, mom2, 2);
        CHECK(!memcmp(mom, mom2, sizeof mom), "%s: not rt_bn_moments' bits", what);
        double m = 0.0, m2 = 0.0;
        for (long i = 0; i < hw; i++) m += flat[i];
        m /= hw;
        for (long i = 0; i < hw; i++) m2 += (flat[i] - m) * (flat[i] - m);
        if (kind == 2)
          CHECK(mom[0] == 0.75 && mom[1] == 0.0, "%s: constant gives %g %g", what,
                mom[0], mom[1]);
        CHECK(fabs(mom[0] - m) <= 1e-6 * (fabs(m) + 1.0) && fabs(mom[1] - m2) <= 1e-4 * (m2 + 1e-3),
              "%s: moments %.9g %.9g against %.9g %.9g", what, mom[0], mom[1], m, m2);
        free(x), free(y), free(want), free(flat);
      }
}

static void test_bn(void) {
  static const bn_case cases[] = {
      {2, 3, 5, 0.0f, 0, 5},       {1, 4, 1, 0.0f, 0, 0},     {64, 5, 1, 0.0f, 1, 1},
      {3, 2, 49, 0.0f, 1, 7},      {4, 3, 784, 0.0f, 0, 28},  {8, 7, 300, 0.0f, 0, 0},
      {8, 7, 300, 1000.0f, 0, 20}, {16, 9, 196, 0.0f, 1, 14}, {5, 6, 37, -300.0f, 0, 37},
      {4, 3, 240, 5.0f, 0, 16},
  };
  rt_pool *pool = rt_pool_new(3);
  CHECK(pool && rt_pool_threads(pool) == 3, "bn: no pool of 3 threads");
  if (!pool) return;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    for (int training = 0; training < 2; training++)
      for (int relu = 0; relu < 2; relu++) test_bn_case(pool, &cases[i], training, relu);
  rt_pool_free(pool);
}

/* Batch norm, its ReLU and a 2x2 max pool fused (rt_bn_out, rt_bn_pool_bwd)
 * against the three composed (rt_bn_fwd, rt_maxpool_fwd; rt_maxpool_bwd
 * assigning, rt_bn_bwd on the recomputed mask), bit for bit: values on a
 * coarse grid, so that windows tie, half of them below the mean; the
 * pool's gradient with zeros of both signs. Samples ns apart with gaps,
 * on 1 and 2 tasks, adding and assigning dx; the backward from the
 * windows' codes the pooling wrote (with the pool, or alone), and
 * rt_bn_bwd_sums with them followed by dx a plane at a time. */
static void test_bn_pool_case(rt_pool *pool, int n, int c, int h, int w) {
  const long hw = (long)h * w, len = c * hw, ns = 2 * len + 5, xo = 3, plen = len / 4;
  const long pns = plen + 3;
  float *x = falloc(n * ns), *y = falloc(n * ns), *p1 = falloc(n * pns), *p2 = falloc(n * pns);
  float *dp = falloc(n * pns), *dout = falloc(n * ns), *dx1 = falloc(n * ns), *dx2 = falloc(n * ns);
  float *gamma = falloc(c), *beta = falloc(c), *rm = falloc(c), *rv = falloc(c), *sm = falloc(c);
  float *si = falloc(c), *sk = falloc(c), *dg1 = falloc(c), *db1 = falloc(c), *dg2 = falloc(c), *db2 = falloc(c);
  for (long i = 0; i < n * ns; i++) x[i] = (float)((int)rt_rng_below(&rng, 9) - 4) * 0.25f;
  for (long i = 0; i < n * pns; i++) {
    uint32_t q = rt_rng_below(&rng, 8);
    dp[i] = q == 0 ? 0.0f : q == 1 ? -0.0f : 2.0f * rt_rng_uniform(&rng) - 1.0f;
  }
  for (int i = 0; i < c; i++) {
    gamma[i] = (i % 2 ? -1.0f : 1.0f) * (0.5f + rt_rng_uniform(&rng));
    beta[i] = rt_rng_uniform(&rng) - 0.5f, rm[i] = 0.0f, rv[i] = 1.0f;
  }
  char what[80];
  snprintf(what, sizeof what, "bn+pool n %d c %d %dx%d", n, c, h, w);
  rt_bn_shape s = {n, c, (int)hw, ns, ns, w};
  rt_pool_shape ps = {n, c, h, w, 2, ns, pns};
  memset(y, 0, (size_t)(n * ns) * sizeof(float));
  rt_bn_fwd(NULL, 1, &s, 1, 1, x + xo, NULL, 0, gamma, beta, rm, rv, sm, si, sk, y + xo);
  rt_maxpool_fwd(&ps, 0, n, y + xo, p1);
  float *y2 = falloc(n * ns);
  memset(y2, 0, (size_t)(n * ns) * sizeof(float));
  const long cns = plen + 2;
  uint8_t *code = malloc((size_t)(n * cns)), *code2 = malloc((size_t)(n * cns));
  for (int parts = 1; parts <= 2; parts++) {
    memcpy(p2, dp, (size_t)(n * pns) * sizeof(float)); /* the gaps must stay */
    memset(code, 7, (size_t)(n * cns)), memset(code2, 7, (size_t)(n * cns));
    rt_bn_out(pool, parts, &s, 1, w, x + xo, beta, sm, sk, NULL, p2, pns, code, cns);
    int bad = 0;
    for (int i = 0; i < n; i++)
      bad += memcmp(p1 + i * pns, p2 + i * pns, (size_t)plen * sizeof(float)) != 0 ||
             memcmp(p2 + i * pns + plen, dp + i * pns + plen, 3 * sizeof(float)) != 0 ||
             code[i * cns + plen] != 7 || code[i * cns + plen + 1] != 7;
    CHECK(!bad, "%s: pooled forward on %d tasks differs in %d samples", what, parts, bad);
    rt_bn_out(pool, parts, &s, 1, w, x + xo, beta, sm, sk, NULL, NULL, pns, code2, cns);
    CHECK(!memcmp(code, code2, (size_t)(n * cns)), "%s: the codes alone on %d tasks differ", what,
          parts);
    rt_bn_out(pool, parts, &s, 1, w, x + xo, beta, sm, sk, y2 + xo, NULL, 0, NULL, 0);
    CHECK(!memcmp(y, y2, (size_t)(n * ns) * sizeof(float)), "%s: rt_bn_out's y on %d tasks differs",
          what, parts);
  }
  /* the windows' extremes taken with the moments, then pooled from them:
   * the same output and (no two values of a window map to one float here)
   * the same codes */
  float *zx = falloc(n * cns), *p3 = falloc(n * pns);
  uint8_t *code3 = malloc((size_t)(n * cns));
  double *mom = calloc((size_t)(2 * n * c), sizeof *mom), *mom2 = calloc((size_t)(2 * n * c), sizeof *mom);
  if (!code3 || !mom || !mom2) abort();
  memcpy(p3, dp, (size_t)(n * pns) * sizeof(float));
  memset(code3, 7, (size_t)(n * cns));
  rt_bn_moments(&s, x + xo, mom, 2L * n);
  rt_bn_moments_pool(&s, x + xo, mom2, 2L * n, w, gamma, zx, code3, cns);
  uint8_t *codeu = malloc((size_t)(n * cns)); /* as the moments left them: no stops marked */
  if (!codeu) abort();
  memcpy(codeu, code3, (size_t)(n * cns));
  CHECK(!memcmp(mom, mom2, (size_t)(2 * n * c) * sizeof *mom), "%s: the moments with the windows differ", what);
  for (int parts = 1; parts <= 2; parts++) {
    rt_bn_pool_out(pool, parts, &s, w, zx, beta, sm, sk, parts == 1 ? NULL : p3, pns, code3, cns);
    int bad = 0;
    for (int i = 0; i < n; i++)
      bad += (parts == 2 && memcmp(p1 + i * pns, p3 + i * pns, (size_t)plen * sizeof(float)) != 0) ||
             memcmp(p3 + i * pns + plen, dp + i * pns + plen, 3 * sizeof(float)) != 0 ||
             memcmp(code + i * cns, code3 + i * cns, (size_t)plen) != 0 ||
             code3[i * cns + plen] != 7 || code3[i * cns + plen + 1] != 7;
    CHECK(!bad, "%s: pooled from the extremes on %d tasks differs in %d samples", what, parts, bad);
  }
  for (int assign = 0; assign < 2; assign++)
    for (int parts = 1; parts <= 2; parts++) {
      for (long i = 0; i < n * ns; i++) dx1[i] = dx2[i] = 0.5f - rt_rng_uniform(&rng);
      memcpy(dx2, dx1, (size_t)(n * ns) * sizeof(float));
      rt_maxpool_bwd(&ps, 0, n, y + xo, dp, dout + xo, 1);
      rt_bn_bwd(NULL, 1, &s, 1, assign, x + xo, NULL, dout + xo, gamma, beta, sm, si, sk,
                dx1 + xo, dg1, db1);
      rt_bn_pool_bwd(pool, parts, &s, w, assign, code, cns, x + xo, dp, pns, gamma, beta, sm, si,
                     sk, dx2 + xo, dg2, db2);
      CHECK(!memcmp(dx1, dx2, (size_t)(n * ns) * sizeof(float)) &&
                !memcmp(dg1, dg2, (size_t)c * sizeof(float)) &&
                !memcmp(db1, db2, (size_t)c * sizeof(float)),
            "%s: pooled backward (assign %d, %d tasks) differs", what, assign, parts);
    }
  /* the sums alone, then dx a plane at a time (the cpu conv's packing) */
  float *gm = falloc(3 * c), *kg = gm + c, *kx = kg + c, *g = falloc(hw);
  rt_bn_bwd_sums(pool, 2, &s, 1, w, pns, code, cns, NULL, NULL, 0, x + xo, dp, gamma, beta, sm, si,
                 sk, dg2, db2, gm, kg, kx);
  int bad = memcmp(dg1, dg2, (size_t)c * sizeof(float)) ||
            memcmp(db1, db2, (size_t)c * sizeof(float));
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      const float *xr = x + xo + i * ns + ch * hw;
      rt_bn_pool_scatter(h, w, code + i * cns + ch * (hw / 4), dp + i * pns + ch * (hw / 4), g);
      rt_bn_dx_row(hw, xr, g, 0, sm[ch], sk[ch], beta[ch], gm[ch], kg[ch], kx[ch],
                   dx2 + xo + i * ns + ch * hw);
      bad += memcmp(dx1 + xo + i * ns + ch * hw, dx2 + xo + i * ns + ch * hw,
                    (size_t)hw * sizeof(float)) != 0;
      /* and row by row into rows of w + 3 (a packed layout), zeros after */
      float *rows = falloc((long)h * (w + 3));
      for (long q = 0; q < (long)h * (w + 3); q++) rows[q] = 7.0f; /* every float written */
      rt_bn_dx_rows(h, w, xr, g, 0, sm[ch], sk[ch], beta[ch], gm[ch], kg[ch], kx[ch], rows, w + 3);
      for (int r = 0; r < h; r++) {
        const float *got = rows + (long)r * (w + 3);
        bad += memcmp(got, dx1 + xo + i * ns + ch * hw + (long)r * w, (size_t)w * sizeof(float)) != 0;
        bad += got[w] != 0.0f || got[w + 1] != 0.0f || got[w + 2] != 0.0f;
      }
      /* and the scatter and the rows in one pass */
      float *rows2 = falloc((long)h * (w + 3));
      for (long q = 0; q < (long)h * (w + 3); q++) rows2[q] = 7.0f;
      rt_bn_pool_dx_rows(h, w, code + i * cns + ch * (hw / 4), dp + i * pns + ch * (hw / 4), xr,
                         sm[ch], gm[ch], kg[ch], kx[ch], rows2, w + 3);
      bad += memcmp(rows, rows2, (size_t)h * (w + 3) * sizeof(float)) != 0;
      free(rows), free(rows2);
    }
  CHECK(!bad, "%s: the sums and planes of dx differ", what);
  /* the sums from the windows alone: the same terms in another order */
  float *gm3 = falloc(3 * c), *dg3 = falloc(c), *db3 = falloc(c);
  rt_bn_bwd_sums(pool, 2, &s, 1, w, pns, code3, cns, zx, NULL, 0, NULL, dp, gamma, beta, sm, si,
                 sk, dg3, db3, gm3, gm3 + c, gm3 + 2 * c);
  bad = 0;
  for (int ch = 0; ch < c; ch++) {
    const float got[5] = {dg3[ch], db3[ch], gm3[ch], gm3[c + ch], gm3[2 * c + ch]},
                want[5] = {dg2[ch], db2[ch], gm[ch], kg[ch], kx[ch]};
    for (int q = 0; q < 5; q++) bad += !(fabsf(got[q] - want[q]) <= 1e-5f * (1.0f + fabsf(want[q])));
  }
  CHECK(!bad, "%s: %d sums from the windows differ", what, bad);
  /* where the pool's reader takes the sums from its gradient and zeroes it
   * where the ReLU stops (rt_bn_x.stops), the codes unmarked: the same
   * sums, and the same dz rows, bit for bit */
  float *rowsum = falloc(2L * n * c), *dpm = falloc(n * pns), *gm4 = falloc(3 * c);
  float *dg4 = falloc(c), *db4 = falloc(c);
  memcpy(dpm, dp, (size_t)(n * pns) * sizeof(float));
  bad = 0;
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      long at = ch * (hw / 4);
      rt_bn_grad_sums_stop_row(hw / 4, zx + i * cns + at, dpm + i * pns + at, sm[ch], sk[ch],
                               beta[ch], rowsum + 2L * (i * c + ch));
      for (long q = 0; q < hw / 4; q++) {
        float want = code3[i * cns + at + q] < 4 ? dp[i * pns + at + q] : 0.0f;
        bad += memcmp(&want, &dpm[i * pns + at + q], sizeof want) != 0;
      }
    }
  CHECK(!bad, "%s: %d values of the stopped gradient differ", what, bad);
  rt_bn_bwd_sums(pool, 2, &s, 1, w, pns, codeu, cns, zx, rowsum, 2L * c, NULL, dp, gamma, beta,
                 sm, si, sk, dg4, db4, gm4, gm4 + c, gm4 + 2 * c);
  bad = memcmp(dg3, dg4, (size_t)c * sizeof(float)) || memcmp(db3, db4, (size_t)c * sizeof(float)) ||
        memcmp(gm3, gm4, (size_t)(3 * c) * sizeof(float));
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      long at = ch * (hw / 4);
      float *r1 = falloc((long)h * w), *r2 = falloc((long)h * w);
      const float *xr = x + xo + i * ns + ch * hw;
      rt_bn_pool_dx_rows(h, w, code3 + i * cns + at, dp + i * pns + at, xr, sm[ch], gm3[ch],
                         gm3[c + ch], gm3[2 * c + ch], r1, w);
      rt_bn_pool_dx_rows(h, w, codeu + i * cns + at, dpm + i * pns + at, xr, sm[ch], gm3[ch],
                         gm3[c + ch], gm3[2 * c + ch], r2, w);
      bad += memcmp(r1, r2, (size_t)hw * sizeof(float)) != 0;
      free(r1), free(r2);
    }
  CHECK(!bad, "%s: the sums or dz with the stops in the gradient differ", what);
  free(rowsum), free(dpm), free(gm4), free(dg4), free(db4), free(codeu);
  free(gm3), free(dg3), free(db3), free(zx), free(p3), free(code3), free(mom), free(mom2);
  free(gm), free(g), free(code), free(code2);
  free(x), free(y), free(y2), free(p1), free(p2), free(dp), free(dout), free(dx1), free(dx2);
  free(gamma), free(beta), free(rm), free(rv), free(sm), free(si), free(sk), free(dg1), free(db1), free(dg2),
      free(db2);
}

/* rt_pool_relu_rows against rt_maxpool_bwd (assigning) then rt_relu_mask,
 * bit for bit: ReLU outputs on a coarse grid (windows tie, some all 0), a
 * gradient with zeros of both signs; planes whose windows a row are
 * 4k + 1, 2, 3 and more than a chunk; rows wider than the plane, the
 * columns after it 0. The same for the forward's codes: rt_relu_pool_rows
 * (from the ReLU's input, -0 and negatives among it, in rows wider than
 * the plane) against rt_relu_2d then rt_maxpool_fwd, and rt_pool_code_rows
 * from its codes against the same gradient. */
static void test_pool_relu_rows(void) {
  static const int hw[][2] = {{2, 2}, {4, 6}, {6, 10}, {8, 14}, {28, 28}, {2, 600}, {4, 1030}};
  for (size_t t = 0; t < sizeof hw / sizeof hw[0]; t++) {
    int h = hw[t][0], w = hw[t][1];
    long n = (long)h * w, ds = w + 5, xs = w + 3;
    float *y = falloc(n), *dp = falloc(n / 4), *g = falloc(n), *want = falloc(n);
    float *rows = falloc((long)h * ds), *x = falloc((long)h * xs);
    float *p1 = falloc(n / 4), *p2 = falloc(n / 4);
    uint8_t *code = malloc((size_t)n / 4);
    for (int r = 0; r < h; r++)
      for (int c = 0; c < xs; c++) {
        int q = (int)rt_rng_below(&rng, 7);
        x[(long)r * xs + c] = q == 0 ? -0.0f : q < 3 ? -(float)q : (float)(q - 3) * 0.5f;
      }
    rt_relu_2d(h, w, x, xs, y, w);
    for (long i = 0; i < n / 4; i++) {
      uint32_t q = rt_rng_below(&rng, 8);
      dp[i] = q == 0 ? 0.0f : q == 1 ? -0.0f : 2.0f * rt_rng_uniform(&rng) - 1.0f;
    }
    rt_pool_shape ps = {1, 1, h, w, 2, 0, 0};
    rt_maxpool_bwd(&ps, 0, 1, y, dp, g, 1);
    rt_relu_mask(n, y, g, want);
    int bad = 0;
    for (int pass = 0; pass < 2; pass++) {
      for (long i = 0; i < (long)h * ds; i++) rows[i] = 7.0f;
      if (pass == 0) {
        rt_pool_relu_rows(h, w, y, dp, rows, ds);
      } else {
        memset(code, 0xee, (size_t)n / 4);
        rt_relu_pool_rows(h, w, x, xs, p2, code);
        rt_maxpool_fwd(&ps, 0, 1, y, p1);
        bad += memcmp(p1, p2, (size_t)n / 4 * sizeof(float)) != 0;
        rt_pool_code_rows(h, w, code, dp, rows, ds);
      }
      for (int r = 0; r < h; r++) {
        bad += memcmp(rows + r * ds, want + (long)r * w, (size_t)w * sizeof(float)) != 0;
        for (long i = w; i < ds; i++)
          bad += memcmp(&rows[r * ds + i], &(float){0.0f}, sizeof(float)) != 0;
      }
    }
    CHECK(!bad, "pool_relu_rows %dx%d: %d rows differ", h, w, bad);
    free(y), free(dp), free(g), free(want), free(rows), free(x), free(p1), free(p2), free(code);
  }
}

static void test_bn_pool(void) {
  rt_pool *pool = rt_pool_new(2);
  CHECK(pool != NULL, "bn+pool: no pool");
  if (!pool) return;
  test_bn_pool_case(pool, 3, 4, 6, 8);
  test_bn_pool_case(pool, 5, 3, 28, 28);
  test_bn_pool_case(pool, 130, 2, 2, 6);
  test_bn_pool_case(pool, 64, 5, 14, 14);
  test_bn_pool_case(pool, 3, 5, 6, 36); /* 18 windows a row: two vectors of 8 and an overlapping one */
  test_bn_pool_case(pool, 3, 2, 4, 32); /* 16 windows a row, rows 35 apart: zeros past 32 */
  test_bn_pool_case(pool, 2, 3, 4, 18); /* 9 windows: the second half row of 2 columns */
  rt_pool_free(pool);
}

/* rt_im2col against the patches read one by one, each column's slots
 * first set to a marker: every slot written, zeros outside the image,
 * at strides 1 and 2, pads 0 to 2 and a window that misses the image. */
static void test_im2col(void) {
  static const int geo[][6] = {/* cin, h, w, k, stride, pad */
                               {1, 28, 28, 3, 1, 1}, {2, 7, 5, 3, 2, 1}, {3, 6, 9, 5, 1, 2},
                               {1, 4, 4, 3, 1, 0},   {2, 5, 6, 3, 2, 2}, {1, 1, 3, 5, 1, 2}};
  for (size_t t = 0; t < sizeof geo / sizeof geo[0]; t++) {
    const int *g = geo[t];
    rt_conv_shape s = {0};
    s.n = 1, s.cin = g[0], s.h = g[1], s.w = g[2], s.k = g[3], s.stride = g[4], s.pad = g[5];
    s.cout = 1, s.oh = (s.h + 2 * s.pad - s.k) / s.stride + 1;
    s.ow = (s.w + 2 * s.pad - s.k) / s.stride + 1;
    long P = (long)s.oh * s.ow, len = (long)s.cin * s.k * s.k * P;
    float *x = falloc((long)s.cin * s.h * s.w), *col = falloc(len);
    fill(x, (long)s.cin * s.h * s.w, 0);
    for (long i = 0; i < len; i++) col[i] = 7.5f;
    rt_im2col(&s, x, col);
    long bad = 0;
    for (int ci = 0; ci < s.cin; ci++)
      for (int ky = 0; ky < s.k; ky++)
        for (int kx = 0; kx < s.k; kx++)
          for (int oy = 0; oy < s.oh; oy++)
            for (int ox = 0; ox < s.ow; ox++) {
              int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
              float want = iy < 0 || iy >= s.h || ix < 0 || ix >= s.w
                               ? 0.0f
                               : x[((long)ci * s.h + iy) * s.w + ix];
              float got = col[(((long)ci * s.k + ky) * s.k + kx) * P + (long)oy * s.ow + ox];
              bad += memcmp(&want, &got, sizeof want) != 0;
            }
    CHECK(!bad, "im2col %dx%dx%d k %d stride %d pad %d: %ld slots differ", s.cin, s.h, s.w, s.k,
          s.stride, s.pad, bad);
    free(x), free(col);
  }
}

/* rt_bn_x_sums (a conv's input gradient's batch norm sums, the widest
 * row sums picked once a sample) against rt_bn_grad_sums_row and
 * rt_bn_grad_sums_stop_row a channel at a time, bit for bit, the stopped
 * gradient too: with and without the ReLU, with stops; planes of 1 to
 * 200 floats (under a sixteen, whole sixteens of either chain, a tail),
 * 1 to 9 channels, a sample past the first, zeros of both signs in the
 * gradient. */
static void test_bn_x_sums(void) {
  const long hws[] = {1, 7, 8, 13, 16, 17, 32, 33, 48, 49, 196, 200};
  for (size_t t = 0; t < sizeof hws / sizeof *hws; t++)
    for (int nc = 1; nc <= 9; nc += 2)
      for (int mode = 0; mode < 3; mode++) { /* no ReLU, ReLU, stops */
        long hw = hws[t], zns = (long)nc * hw + 5, xns = (long)(nc + 1) * hw;
        float *z = falloc(2 * zns), *m = falloc(nc), *k = falloc(nc), *b = falloc(nc);
        float *dx = falloc(2 * xns), *dx2 = falloc(2 * xns);
        float *sums = falloc(4L * nc), *want = falloc(4L * nc);
        fill(z, 2 * zns, t % 2), fill(dx, 2 * xns, 0);
        for (long i = 0; i < 2 * zns; i++) z[i] = isnan(z[i]) ? 0.25f : z[i];
        for (long i = 0; i < 2 * xns; i++) dx[i] = isnan(dx[i]) ? -0.0f : dx[i];
        for (int c = 0; c < nc; c++) {
          m[c] = 0.5f * rt_rng_uniform(&rng) - 0.25f, k[c] = 4.0f * rt_rng_uniform(&rng) - 2.0f;
          b[c] = rt_rng_uniform(&rng) - 0.5f;
        }
        memcpy(dx2, dx, (size_t)(2 * xns) * sizeof *dx);
        rt_bn_x bx = {z, m, k, b, mode == 1, 1, 1 + nc, sums, zns, mode == 2};
        for (int i = 0; i < 2; i++) {
          rt_bn_x_sums(&bx, i, hw, xns, dx + i * xns);
          for (int c = 0; c < nc; c++) {
            const float *zr = z + i * zns + c * hw;
            float *d = dx2 + i * xns + (1 + c) * hw, *w = want + 2L * (i * nc + c);
            if (mode == 2) rt_bn_grad_sums_stop_row(hw, zr, d, m[c], k[c], b[c], w);
            else rt_bn_grad_sums_row(hw, zr, d, mode == 1, m[c], k[c], b[c], w);
          }
        }
        long at;
        CHECK(same_bits(want, sums, 4L * nc, &at), "bn_x_sums: hw %ld, %d channels, mode %d: "
              "sum %ld differs", hw, nc, mode, at);
        CHECK(same_bits(dx2, dx, 2 * xns, &at), "bn_x_sums: hw %ld, %d channels, mode %d: "
              "gradient %ld differs", hw, nc, mode, at);
        free(z), free(m), free(k), free(b), free(dx), free(dx2), free(sums), free(want);
      }
}

/* rt_bn_x_lanes (a linear layer's input made from batch norm's windows
 * in its kernels' lanes) against rt_bn_x_write then a transpose, bit for
 * bit: lane blocks of 8 and 16, whole and partial, samples past the
 * first, channels after others, z's samples apart or as x's, with and
 * without the ReLU; the lanes past the block's samples and the features
 * of the other channels left as they were. */
static void test_bn_x_lanes(void) {
  const long hws[] = {1, 7, 49};
  for (size_t t = 0; t < sizeof hws / sizeof *hws; t++)
    for (int NB = 8; NB <= 16; NB += 8)
      for (int m = 1; m <= NB; m += NB / 2 - 1)
        for (int mode = 0; mode < 4; mode++) { /* relu, z_ns */
          long hw = hws[t];
          int nc = 1 + (int)t + mode, c0 = mode % 2, f = (c0 + nc + 1) * (int)hw;
          long xns = f + 3, zns = mode < 2 ? nc * hw + 5 : 0, i0 = 2;
          long zlen = (i0 + m) * (zns ? zns : xns);
          float *z = falloc(zlen), *mm = falloc(nc), *k = falloc(nc), *b = falloc(nc);
          float *x = falloc((i0 + m) * xns), *got = falloc((long)f * NB);
          float *want = falloc((long)f * NB);
          fill(z, zlen, 0);
          for (long i = 0; i < zlen; i++) z[i] = isnan(z[i]) || i % 3 == 0 ? -0.0f : z[i];
          for (int c = 0; c < nc; c++) {
            mm[c] = 0.5f * rt_rng_uniform(&rng) - 0.25f, k[c] = 4.0f * rt_rng_uniform(&rng) - 2.0f;
            b[c] = rt_rng_uniform(&rng) - 0.5f;
          }
          mm[0] = 0.0f, k[0] = 1.5f, b[0] = -0.0f; /* -0 out of the map, which the ReLU makes +0 */
          for (long i = 0; i < (long)f * NB; i++) got[i] = want[i] = (float)i;
          /* z as x's, or apart: the channel at c0's plane of sample i */
          const float *zb = zns ? z : z + c0 * hw;
          rt_bn_x bx = {zb, mm, k, b, mode % 2 == 0, c0, c0 + nc, NULL, zns, 0};
          rt_bn_x_write(&bx, (int)(i0 + m), hw, xns, x);
          for (int j = 0; j < m; j++)
            for (long q = c0 * hw; q < (c0 + nc) * hw; q++)
              want[q * NB + j] = x[(i0 + j) * xns + q];
          rt_bn_x_lanes(&bx, i0, m, hw, xns, got, NB);
          long at;
          CHECK(same_bits(want, got, (long)f * NB, &at),
                "bn_x_lanes: hw %ld, NB %d, %d samples, mode %d: value %ld differs", hw, NB, m,
                mode, at);
          free(z), free(mm), free(k), free(b), free(x), free(got), free(want);
        }
}

static void run_all(void) {
  test_relu();
  test_im2col();
  test_2d();
  test_pad_rows();
  test_stride2();
  test_transpose();
  test_sum();
  test_pool();
  test_sgd();
  test_sgd_packed();
  test_zero_masked();
  test_conv_relu();
  test_copy_moments();
  test_bn();
  test_bn_pool();
  test_pool_relu_rows();
  test_gram();
  test_gram3x3();
  test_bn_x_sums();
  test_bn_x_lanes();
}

/* Every test at each vector width the kernels may take (rt_elem_set_isa),
 * on the same draws: the narrower paths are checked on a machine that
 * has the wider ones too. */
int main(void) {
  for (int isa = RT_ISA_AVX512; isa >= RT_ISA_SSE2; isa--) {
    rt_elem_set_isa(isa_now = isa);
    rt_rng_seed(&rng, 20261128);
    run_all();
    if (failures) {
      fprintf(stderr, "%d failures at vector level %d\n", failures, isa);
      return 1;
    }
  }
  printf("elementwise kernels match the reference bit for bit, batch norm within rounding, at "
         "each vector width\n");
  return 0;
}
