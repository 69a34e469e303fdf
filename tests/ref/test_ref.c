/* test_ref.c: the reference kernels checked against first principles.
 *
 * Every gradient is compared with central differences of the scalar
 * L = sum(r * y) for a random r, so the backward ops are tested against
 * their own forward; the forwards are tested against direct formulas.
 * Masked weights hold NaN and the gaps of strided buffers hold NaN or a
 * sentinel, so reading a masked weight or a byte outside a view shows up as
 * a non-finite value or a changed sentinel rather than a small error.
 */
#include "runtime/ref.h"
#include "base/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"

static rt_rng rng;

/* Normalised max error: max|a-b| / max(max|a|, max|b|). A non-finite
 * entry is an error of infinity. The tolerance sits above the float noise
 * of the central differences (at most 5e-4 over many seeds) and below what
 * a wrong gradient gives: a dropped term or a flipped tap costs O(1), a
 * gradient off by 1% costs 1e-2. */
#define GRAD_TOL 2e-3

static float *falloc(long n) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  if (!p) abort();
  return p;
}

static double *dalloc(long n) {
  double *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  if (!p) abort();
  return p;
}

static float unif(float lo, float hi) {
  return lo + (hi - lo) * rt_rng_uniform(&rng);
}

static void fill_val(float *p, long n, float v) {
  for (long i = 0; i < n; i++) p[i] = v;
}

/* n samples of len values at stride ns; the gaps get `gap`. */
static void fill_strided(float *p, int n, long len, long ns, float lo,
                         float hi, float gap) {
  fill_val(p, (long)n * ns, gap);
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) p[s * ns + i] = unif(lo, hi);
}

static int gaps_hold(const float *p, int n, long len, long ns, float gap) {
  for (int s = 0; s < n; s++)
    for (long i = len; i < ns; i++)
      if (p[s * ns + i] != gap) return 0;
  return 1;
}

/* Density 1 alternates between a NULL mask and an all-ones one, so both
 * paths run. */
static uint8_t *mask_new(long len, double density, int null_ok) {
  if (density >= 1.0 && null_ok) return NULL;
  uint8_t *m = malloc((size_t)(len > 0 ? len : 1));
  if (!m) abort();
  for (long i = 0; i < len; i++) m[i] = rt_rng_uniform(&rng) < density;
  return m;
}

/* Active values in [-1, 1], masked ones NaN: a kernel that touches a masked
 * weight at all poisons its output. */
static float *weights_new(long len, const uint8_t *m) {
  float *w = falloc(len);
  for (long i = 0; i < len; i++) w[i] = (!m || m[i]) ? unif(-1, 1) : NAN;
  return w;
}

static double max_err(const double *a, const double *b, long len) {
  double d = 0, ma = 0, mb = 0;
  for (long i = 0; i < len; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    double e = fabs(a[i] - b[i]);
    if (e > d) d = e;
    if (fabs(a[i]) > ma) ma = fabs(a[i]);
    if (fabs(b[i]) > mb) mb = fabs(b[i]);
  }
  double den = ma > mb ? ma : mb;
  return den > 0 ? d / den : 0;
}

static double worst_grad_err;

static void expect_grad(const char *what, const double *num,
                        const double *ana, long len) {
  double e = max_err(num, ana, len);
  if (e > worst_grad_err) worst_grad_err = e;
  CHECK(e <= GRAD_TOL, "%s: gradient error %.3g > %.3g", what, e, GRAD_TOL);
}

/* What a finite difference needs: a forward that writes y from the current
 * inputs, and the weights r of L = sum(r * y). r is 0 in the gaps. */
typedef struct probe {
  void (*fwd)(void *ctx);
  void *ctx;
  float *y;     /* output of fwd */
  long ylen;    /* floats in y, gaps included */
  const float *r;
  float *yhi;   /* scratch, ylen floats */
} probe;

/* dL/dv by central differences. L is differenced output by output in
 * double, so outputs that do not depend on v cancel exactly and only the
 * rounding of the few that do is left; the step is the one float really
 * took, not the nominal eps. */
static double numgrad1(probe *p, float *v, float eps) {
  const float orig = *v;
  /* A masked weight holds NaN; stepping it around 0 instead checks that
   * the forward ignores finite nonzero values there too (derivative 0). */
  const float base = isfinite(orig) ? orig : 0.0f;
  *v = base + eps;
  const double hi = *v;
  p->fwd(p->ctx);
  memcpy(p->yhi, p->y, (size_t)p->ylen * sizeof *p->y);
  *v = base - eps;
  const double lo = *v;
  p->fwd(p->ctx);
  *v = orig;
  double d = 0;
  for (long j = 0; j < p->ylen; j++)
    if (p->r[j] != 0) d += p->r[j] * ((double)p->yhi[j] - (double)p->y[j]);
  return d / (hi - lo);
}

/* Numeric gradient over a strided tensor, written packed [n][len]. */
static void numgrad(probe *p, float *v, int n, long len, long ns, float eps,
                    double *out) {
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++)
      out[s * len + i] = numgrad1(p, v + s * ns + i, eps);
}

/* Analytic gradient from an accumulated buffer: (after - before), packed. */
static void accumulated(const float *after, const float *before, int n,
                        long len, long ns, double *out) {
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++)
      out[s * len + i] = (double)after[s * ns + i] - (double)before[s * ns + i];
}

static void widen(const float *p, long len, double *out) {
  for (long i = 0; i < len; i++) out[i] = p[i];
}

/* Random r over the valid part of a strided output, 0 in the gaps, and the
 * matching dy (which is r) with NaN gaps a kernel must not read. */
static void make_r(float **r, float **dy, int n, long len, long ns) {
  *r = falloc((long)n * ns);
  *dy = falloc((long)n * ns);
  fill_strided(*r, n, len, ns, -1, 1, 0.0f);
  fill_val(*dy, (long)n * ns, NAN);
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) (*dy)[s * ns + i] = (*r)[s * ns + i];
}

#define SENTINEL 777.0f

/* ---- convolution ---- */

typedef struct conv_ctx {
  rt_conv_shape s;
  float *x, *w, *b;
  const uint8_t *wm, *bm;
  float *y;
} conv_ctx;

static void conv_fwd_cb(void *c) {
  conv_ctx *k = c;
  rt_ref_conv_fwd(&k->s, k->x, k->w, k->b, k->wm, k->bm, k->y);
}

/* The 7-nested loop straight from the definition, in double. Returns the
 * normalised error of y against it. */
static double conv_naive_err(const conv_ctx *k) {
  const rt_conv_shape *s = &k->s;
  double worst = 0;
  for (int n = 0; n < s->n; n++)
    for (int co = 0; co < s->cout; co++)
      for (int oy = 0; oy < s->oh; oy++)
        for (int ox = 0; ox < s->ow; ox++) {
          int bon = k->b && (!k->bm || k->bm[co]);
          double acc = bon ? k->b[co] : 0, mag = fabs(acc);
          for (int ci = 0; ci < s->cin; ci++)
            for (int ky = 0; ky < s->k; ky++)
              for (int kx = 0; kx < s->k; kx++) {
                int iy = oy * s->stride - s->pad + ky;
                int ix = ox * s->stride - s->pad + kx;
                long wi = (((long)co * s->cin + ci) * s->k + ky) * s->k + kx;
                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                if (k->wm && !k->wm[wi]) continue;
                long xi = n * s->x_ns + ((long)ci * s->h + iy) * s->w + ix;
                double t = (double)k->w[wi] * k->x[xi];
                acc += t;
                mag += fabs(t);
              }
          double got = k->y[n * s->y_ns + ((long)co * s->oh + oy) * s->ow + ox];
          double e = fabs(got - acc) / (mag > 1e-30 ? mag : 1e-30);
          if (!isfinite(got)) e = INFINITY;
          if (e > worst) worst = e;
        }
  return worst;
}

static int conv_cases, conv_naive_cases;

static void conv_grad(conv_ctx *c, const char *what);

static void conv_case(int n, int cin, int h, int w, int cout, int k,
                      int stride, int pad, int xextra, int yextra,
                      double density, int bias, int gradcheck) {
  char what[200];
  snprintf(what, sizeof what,
           "conv n%d %dx%dx%d->%d k%d s%d p%d xgap%d ygap%d d%.1f b%d", n,
           cin, h, w, cout, k, stride, pad, xextra, yextra, density, bias);
  conv_ctx c = {.s = {.n = n, .cin = cin, .h = h, .w = w, .cout = cout,
                      .k = k, .stride = stride, .pad = pad}};
  rt_conv_shape *s = &c.s;
  if (xextra) s->x_ns = (long)cin * h * w + xextra;
  rt_conv_shape_finish(s);
  s->y_ns += yextra;
  const long xlen = (long)cin * h * w, ylen = (long)cout * s->oh * s->ow;
  const long nw = (long)cout * cin * k * k;
  CHECK(s->oh == (h + 2 * pad - k) / stride + 1, "%s: oh", what);
  CHECK(s->x_ns == xlen + xextra, "%s: x_ns", what);

  static int flip;
  flip ^= 1;
  uint8_t *wm = mask_new(nw, density, flip);
  uint8_t *bm = bias ? mask_new(cout, density, flip) : NULL;
  c.wm = wm;
  c.bm = bm;
  c.w = weights_new(nw, wm);
  c.b = bias ? weights_new(cout, bm) : NULL;
  c.x = falloc((long)n * s->x_ns);
  fill_strided(c.x, n, xlen, s->x_ns, -1, 1, NAN);
  c.y = falloc((long)n * s->y_ns);
  fill_val(c.y, (long)n * s->y_ns, SENTINEL);

  conv_fwd_cb(&c);
  CHECK(gaps_hold(c.y, n, ylen, s->y_ns, SENTINEL), "%s: fwd wrote a gap",
        what);
  double ne = conv_naive_err(&c);
  CHECK(ne <= 1e-5, "%s: forward vs naive %.3g", what, ne);
  conv_naive_cases++;
  if (gradcheck) conv_grad(&c, what);
  free(wm);
  free(bm);
  free(c.w);
  free(c.b);
  free(c.x);
  free(c.y);
}

/* Analytic gradients of one conv case against central differences, plus
 * the accumulate/overwrite conventions and exact zeros under the mask. */
static void conv_grad(conv_ctx *c, const char *what) {
  const rt_conv_shape *s = &c->s;
  const int n = s->n, cout = s->cout, bias = c->b != NULL;
  const uint8_t *wm = c->wm, *bm = c->bm;
  const long xlen = (long)s->cin * s->h * s->w;
  const long ylen = (long)cout * s->oh * s->ow;
  const long nw = (long)cout * s->cin * s->k * s->k;
  float *r, *dy;
  make_r(&r, &dy, n, ylen, s->y_ns);
  float *dx = falloc((long)n * s->x_ns), *dx0 = falloc((long)n * s->x_ns);
  fill_strided(dx0, n, xlen, s->x_ns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)n * s->x_ns * sizeof *dx);
  rt_ref_conv_bwd_data(s, dy, c->w, wm, dx);
  CHECK(gaps_hold(dx, n, xlen, s->x_ns, SENTINEL), "%s: bwd_data wrote a gap",
        what);

  float *dw = falloc(nw), *db = falloc(cout);
  fill_val(dw, nw, NAN); /* overwrite semantics: nothing may survive */
  fill_val(db, cout, NAN);
  rt_ref_conv_bwd_weight(s, c->x, dy, wm, bm, dw, bias ? db : NULL);
  for (long i = 0; i < nw; i++)
    if (wm && !wm[i])
      CHECK(dw[i] == 0.0f && !signbit(dw[i]), "%s: masked dw[%ld] = %g",
            what, i, dw[i]);
  if (bias)
    for (int i = 0; i < cout; i++)
      if (bm && !bm[i]) CHECK(db[i] == 0.0f, "%s: masked db[%d]", what, i);

  probe p = {conv_fwd_cb, c, c->y, (long)n * s->y_ns, r,
             falloc((long)n * s->y_ns)};
  double *num = dalloc((long)n * xlen), *ana = dalloc((long)n * xlen);
  numgrad(&p, c->x, n, xlen, s->x_ns, 1e-2f, num);
  accumulated(dx, dx0, n, xlen, s->x_ns, ana);
  char label[240];
  snprintf(label, sizeof label, "%s dx", what);
  expect_grad(label, num, ana, (long)n * xlen);
  free(num);
  free(ana);

  num = dalloc(nw);
  ana = dalloc(nw);
  numgrad(&p, c->w, 1, nw, nw, 1e-2f, num);
  widen(dw, nw, ana);
  snprintf(label, sizeof label, "%s dw", what);
  expect_grad(label, num, ana, nw);
  if (bias) {
    numgrad(&p, c->b, 1, cout, cout, 1e-2f, num);
    widen(db, cout, ana);
    snprintf(label, sizeof label, "%s db", what);
    expect_grad(label, num, ana, cout);
  }
  free(num);
  free(ana);
  free(p.yhi);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(dw);
  free(db);
  conv_cases++;
}

static void test_conv(void) {
  static const int ks[] = {1, 3, 5};
  static const double dens[] = {0.0, 0.3, 1.0};
  int i = 0;
  /* Every kernel x stride x padding, each with every density, on small
   * random shapes that still cover a clipped border and batch >= 2. */
  for (int ki = 0; ki < 3; ki++)
    for (int stride = 1; stride <= 2; stride++)
      for (int pad = 0; pad <= 2; pad++)
        for (int di = 0; di < 3; di++, i++) {
          int k = ks[ki];
          int h = k + (int)rt_rng_below(&rng, 6) + (pad == 0);
          int w = k + (int)rt_rng_below(&rng, 6);
          int cin = 1 + (int)rt_rng_below(&rng, 3);
          int cout = 1 + (int)rt_rng_below(&rng, 4);
          int xextra = (i % 2) ? 7 + (int)rt_rng_below(&rng, 20) : 0;
          int yextra = (i % 3 == 1) ? 5 : 0;
          conv_case(2 + (i % 2), cin, h, w, cout, k, stride, pad, xextra,
                    yextra, dens[di], i % 4 != 3, 1);
        }
  /* Fully random shapes, including inputs smaller than the kernel that
   * only padding makes valid. */
  for (int j = 0; j < 30; j++) {
    int k = ks[rt_rng_below(&rng, 3)], pad = (int)rt_rng_below(&rng, 3);
    int stride = 1 + (int)rt_rng_below(&rng, 2);
    int lo = k - 2 * pad > 1 ? k - 2 * pad : 1;
    int h = lo + (int)rt_rng_below(&rng, 7);
    int w = lo + (int)rt_rng_below(&rng, 7);
    conv_case(2 + (int)rt_rng_below(&rng, 2), 1 + (int)rt_rng_below(&rng, 3),
              h, w, 1 + (int)rt_rng_below(&rng, 4), k, stride, pad,
              rt_rng_below(&rng, 2) ? (int)rt_rng_below(&rng, 50) : 0,
              rt_rng_below(&rng, 2) ? 3 : 0, dens[rt_rng_below(&rng, 3)],
              (int)rt_rng_below(&rng, 2), 1);
  }
  /* Forward only, larger shapes against the direct formula. */
  conv_case(3, 4, 12, 11, 5, 3, 2, 1, 0, 0, 1.0, 1, 0);
  conv_case(2, 3, 9, 13, 6, 5, 1, 2, 40, 3, 0.3, 1, 0);
  conv_case(2, 16, 14, 14, 8, 3, 1, 1, 32 * 196, 0, 0.5, 1, 0);
  conv_case(1, 2, 7, 7, 3, 7, 3, 0, 0, 0, 1.0, 0, 0);
  printf("conv: %d gradient cases, %d forward cases vs naive\n", conv_cases,
         conv_naive_cases);
}

/* ---- linear ---- */

typedef struct lin_ctx {
  rt_linear_shape s;
  float *x, *w, *b;
  const uint8_t *wm, *bm;
  float *y;
} lin_ctx;

static void lin_fwd_cb(void *c) {
  lin_ctx *k = c;
  rt_ref_linear_fwd(&k->s, k->x, k->w, k->b, k->wm, k->bm, k->y);
}

static int lin_cases;

static void linear_case(int n, int in, int out, int xextra, int yextra,
                        double density, int bias) {
  char what[128];
  snprintf(what, sizeof what, "linear n%d %d->%d xgap%d ygap%d d%.1f b%d", n,
           in, out, xextra, yextra, density, bias);
  lin_ctx c = {.s = {.n = n, .in = in, .out = out,
                     .x_ns = xextra ? in + xextra : 0,
                     .y_ns = yextra ? out + yextra : 0}};
  const long xns = in + xextra, yns = out + yextra, nw = (long)out * in;
  static int flip;
  flip ^= 1;
  uint8_t *wm = mask_new(nw, density, flip);
  uint8_t *bm = bias ? mask_new(out, density, flip) : NULL;
  c.wm = wm;
  c.bm = bm;
  c.w = weights_new(nw, wm);
  c.b = bias ? weights_new(out, bm) : NULL;
  c.x = falloc(n * xns);
  fill_strided(c.x, n, in, xns, -1, 1, NAN);
  c.y = falloc(n * yns);
  fill_val(c.y, n * yns, SENTINEL);
  lin_fwd_cb(&c);
  CHECK(gaps_hold(c.y, n, out, yns, SENTINEL), "%s: fwd wrote a gap", what);
  double worst = 0;
  for (int s = 0; s < n; s++)
    for (int o = 0; o < out; o++) {
      double acc = (bias && (!bm || bm[o])) ? c.b[o] : 0, mag = fabs(acc);
      for (int i = 0; i < in; i++)
        if (!wm || wm[(long)o * in + i]) {
          double t = (double)c.w[(long)o * in + i] * c.x[s * xns + i];
          acc += t;
          mag += fabs(t);
        }
      double got = c.y[s * yns + o];
      double e = isfinite(got) ? fabs(got - acc) / (mag > 1e-30 ? mag : 1e-30)
                               : INFINITY;
      if (e > worst) worst = e;
    }
  CHECK(worst <= 1e-5, "%s: forward vs direct %.3g", what, worst);

  float *r, *dy;
  make_r(&r, &dy, n, out, yns);
  float *dx = falloc(n * xns), *dx0 = falloc(n * xns);
  fill_strided(dx0, n, in, xns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)(n * xns) * sizeof *dx);
  rt_ref_linear_bwd_data(&c.s, dy, c.w, wm, dx);
  CHECK(gaps_hold(dx, n, in, xns, SENTINEL), "%s: bwd_data wrote a gap",
        what);
  float *dw = falloc(nw), *db = falloc(out);
  fill_val(dw, nw, NAN);
  fill_val(db, out, NAN);
  rt_ref_linear_bwd_weight(&c.s, c.x, dy, wm, bm, dw, bias ? db : NULL);
  for (long i = 0; i < nw; i++)
    if (wm && !wm[i]) CHECK(dw[i] == 0.0f, "%s: masked dw[%ld]", what, i);
  if (bias)
    for (int i = 0; i < out; i++)
      if (bm && !bm[i]) CHECK(db[i] == 0.0f, "%s: masked db[%d]", what, i);

  probe p = {lin_fwd_cb, &c, c.y, n * yns, r, falloc(n * yns)};
  double *num = dalloc(n * in > nw ? n * in : nw);
  double *ana = dalloc(n * in > nw ? n * in : nw);
  numgrad(&p, c.x, n, in, xns, 1e-2f, num);
  accumulated(dx, dx0, n, in, xns, ana);
  char label[160];
  snprintf(label, sizeof label, "%s dx", what);
  expect_grad(label, num, ana, (long)n * in);
  numgrad(&p, c.w, 1, nw, nw, 1e-2f, num);
  widen(dw, nw, ana);
  snprintf(label, sizeof label, "%s dw", what);
  expect_grad(label, num, ana, nw);
  if (bias) {
    numgrad(&p, c.b, 1, out, out, 1e-2f, num);
    widen(db, out, ana);
    snprintf(label, sizeof label, "%s db", what);
    expect_grad(label, num, ana, out);
  }
  lin_cases++;
  free(num);
  free(ana);
  free(p.yhi);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(dw);
  free(db);
  free(wm);
  free(bm);
  free(c.w);
  free(c.b);
  free(c.x);
  free(c.y);
}

static void test_linear(void) {
  static const double dens[] = {0.0, 0.3, 1.0};
  for (int i = 0; i < 18; i++) {
    int n = 2 + (int)rt_rng_below(&rng, 3);
    int in = 1 + (int)rt_rng_below(&rng, 24);
    int out = 1 + (int)rt_rng_below(&rng, 8);
    linear_case(n, in, out, (i % 2) ? 3 + (int)rt_rng_below(&rng, 9) : 0,
                (i % 3 == 2) ? 4 : 0, dens[i % 3], i % 4 != 3);
  }
  printf("linear: %d gradient cases\n", lin_cases);
}

/* ---- relu ---- */

typedef struct relu_ctx {
  int n;
  long len, xns, yns;
  float *x, *y;
} relu_ctx;

static void relu_fwd_cb(void *c) {
  relu_ctx *k = c;
  rt_ref_relu_fwd(k->n, k->len, k->x, k->xns, k->y, k->yns);
}

static void test_relu(void) {
  const int n = 3;
  const long len = 37, xns = 45, yns = 41, dxns = 50;
  relu_ctx c = {n, len, xns, yns, falloc(n * xns), falloc(n * yns)};
  /* Inputs keep |x| >= 0.1 so the kink at 0 is never inside a step. */
  fill_val(c.x, n * xns, NAN);
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) {
      float v = unif(0.1f, 1.0f);
      c.x[s * xns + i] = rt_rng_below(&rng, 2) ? v : -v;
    }
  fill_val(c.y, n * yns, SENTINEL);
  relu_fwd_cb(&c);
  CHECK(gaps_hold(c.y, n, len, yns, SENTINEL), "relu fwd wrote a gap");
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) {
      float xv = c.x[s * xns + i];
      CHECK(c.y[s * yns + i] == (xv > 0 ? xv : 0.0f), "relu fwd [%d][%ld]", s,
            i);
    }
  /* In place must agree with out of place. */
  float *inplace = falloc(n * xns);
  memcpy(inplace, c.x, (size_t)(n * xns) * sizeof *inplace);
  rt_ref_relu_fwd(n, len, inplace, xns, inplace, xns);
  for (int s = 0; s < n; s++)
    CHECK(!memcmp(inplace + s * xns, c.y + s * yns,
                  (size_t)len * sizeof(float)),
          "relu in place differs, sample %d", s);

  /* dy with its own stride, to catch a kernel reading dy at y's stride. */
  const long dyns = 39;
  float *r = falloc(n * yns), *dy = falloc(n * dyns);
  fill_strided(r, n, len, yns, -1, 1, 0.0f);
  fill_val(dy, n * dyns, NAN);
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) dy[s * dyns + i] = r[s * yns + i];
  float *dx = falloc(n * dxns), *dx0 = falloc(n * dxns);
  fill_strided(dx0, n, len, dxns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)(n * dxns) * sizeof *dx);
  rt_ref_relu_bwd(n, len, c.y, yns, dy, dyns, dx, dxns);
  CHECK(gaps_hold(dx, n, len, dxns, SENTINEL), "relu bwd wrote a gap");

  /* The probe reads x at xns; numeric and analytic are both packed. */
  probe p = {relu_fwd_cb, &c, c.y, n * yns, r, falloc(n * yns)};
  double *num = dalloc(n * len), *ana = dalloc(n * len);
  numgrad(&p, c.x, n, len, xns, 1e-2f, num);
  accumulated(dx, dx0, n, len, dxns, ana);
  expect_grad("relu dx", num, ana, n * len);
  printf("relu: forward, in place, gradient\n");
  free(num);
  free(ana);
  free(p.yhi);
  free(inplace);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(c.x);
  free(c.y);
}

/* ---- batch norm ---- */

typedef struct bn_ctx {
  rt_bn_shape s;
  float *x, *gamma, *beta, *rm, *rv, *sm, *si, *y;
} bn_ctx;

static void bn_train_cb(void *c) {
  bn_ctx *k = c;
  rt_ref_bn_fwd(&k->s, 1, k->x, k->gamma, k->beta, k->rm, k->rv, k->sm, k->si,
                k->y);
}

static bn_ctx bn_new(int n, int ch, int hw, long xextra, long yextra,
                     float xlo, float xhi) {
  bn_ctx c = {.s = {.n = n, .c = ch, .hw = hw,
                    .x_ns = xextra ? (long)ch * hw + xextra : 0,
                    .y_ns = yextra ? (long)ch * hw + yextra : 0}};
  const long xns = (long)ch * hw + xextra, yns = (long)ch * hw + yextra;
  c.x = falloc(n * xns);
  fill_strided(c.x, n, (long)ch * hw, xns, xlo, xhi, NAN);
  c.y = falloc(n * yns);
  fill_val(c.y, n * yns, SENTINEL);
  c.gamma = falloc(ch);
  c.beta = falloc(ch);
  c.rm = falloc(ch);
  c.rv = falloc(ch);
  c.sm = falloc(ch);
  c.si = falloc(ch);
  for (int i = 0; i < ch; i++) {
    c.gamma[i] = unif(0.5f, 2.0f);
    c.beta[i] = unif(-1, 1);
    c.rm[i] = unif(-1, 1);
    c.rv[i] = unif(0.5f, 2.0f);
  }
  return c;
}

static void bn_free(bn_ctx *c) {
  free(c->x);
  free(c->y);
  free(c->gamma);
  free(c->beta);
  free(c->rm);
  free(c->rv);
  free(c->sm);
  free(c->si);
}

static void test_bn_forward(void) {
  const int n = 8, ch = 3, hw = 49;
  const long xextra = 11, yextra = 6, len = (long)ch * hw;
  const long xns = len + xextra, yns = len + yextra;
  /* A large offset against a small spread is what breaks one-pass
   * variance. */
  bn_ctx c = bn_new(n, ch, hw, xextra, yextra, 100.0f, 102.0f);
  float rm0[3], rv0[3];
  memcpy(rm0, c.rm, sizeof rm0);
  memcpy(rv0, c.rv, sizeof rv0);
  for (int i = 0; i < ch; i++) {
    c.gamma[i] = 1;
    c.beta[i] = 0;
  }
  bn_train_cb(&c);
  CHECK(gaps_hold(c.y, n, len, yns, SENTINEL), "bn fwd wrote a gap");
  const double N = (double)n * hw;
  for (int ch_i = 0; ch_i < ch; ch_i++) {
    double sx = 0, sy = 0;
    for (int s = 0; s < n; s++)
      for (int i = 0; i < hw; i++) {
        sx += c.x[s * xns + ch_i * hw + i];
        sy += c.y[s * yns + ch_i * hw + i];
      }
    double mx = sx / N, my = sy / N, vx = 0, vy = 0;
    for (int s = 0; s < n; s++)
      for (int i = 0; i < hw; i++) {
        double dx = c.x[s * xns + ch_i * hw + i] - mx;
        double dy = c.y[s * yns + ch_i * hw + i] - my;
        vx += dx * dx;
        vy += dy * dy;
      }
    vy /= N;
    /* Output variance is var/(var+eps), not 1, by the eps in the root. */
    double want_vy = (vx / N) / (vx / N + 1e-5);
    CHECK(fabs(my) < 1e-5, "bn channel %d: output mean %g", ch_i, my);
    CHECK(fabs(vy - want_vy) < 1e-4, "bn channel %d: output var %g, want %g",
          ch_i, vy, want_vy);
    CHECK(fabs(c.sm[ch_i] - mx) <= 1e-6 * fabs(mx), "bn save_mean %d", ch_i);
    double want_is = 1 / sqrt(vx / N + 1e-5);
    CHECK(fabs(c.si[ch_i] - want_is) <= 1e-5 * want_is, "bn save_invstd %d",
          ch_i);
    /* PyTorch: momentum 0.1, running variance unbiased. */
    double want_rm = 0.9 * rm0[ch_i] + 0.1 * mx;
    double want_rv = 0.9 * rv0[ch_i] + 0.1 * vx / (N - 1);
    CHECK(fabs(c.rm[ch_i] - want_rm) <= 1e-6 * fabs(want_rm),
          "bn running mean %d: %g, want %g", ch_i, c.rm[ch_i], want_rm);
    CHECK(fabs(c.rv[ch_i] - want_rv) <= 1e-6 * fabs(want_rv),
          "bn running var %d: %g, want %g", ch_i, c.rv[ch_i], want_rv);
  }

  /* Without running statistics (NULL) training still normalises the
   * same way. */
  float *y2 = falloc(n * yns);
  fill_val(y2, n * yns, SENTINEL);
  rt_ref_bn_fwd(&c.s, 1, c.x, c.gamma, c.beta, NULL, NULL, NULL, NULL, y2);
  CHECK(!memcmp(y2, c.y, (size_t)(n * yns) * sizeof *y2),
        "bn training without running statistics differs");
  free(y2);

  /* Inference uses the running statistics and leaves them alone. */
  bn_ctx d = bn_new(n, ch, hw, xextra, yextra, -2.0f, 2.0f);
  float rm1[3], rv1[3];
  memcpy(rm1, d.rm, sizeof rm1);
  memcpy(rv1, d.rv, sizeof rv1);
  rt_ref_bn_fwd(&d.s, 0, d.x, d.gamma, d.beta, d.rm, d.rv, NULL, NULL, d.y);
  CHECK(!memcmp(rm1, d.rm, sizeof rm1) && !memcmp(rv1, d.rv, sizeof rv1),
        "bn inference changed the running statistics");
  CHECK(gaps_hold(d.y, n, len, yns, SENTINEL), "bn inference wrote a gap");
  double worst = 0;
  for (int s = 0; s < n; s++)
    for (int ch_i = 0; ch_i < ch; ch_i++)
      for (int i = 0; i < hw; i++) {
        double xv = d.x[s * xns + ch_i * hw + i];
        double want = d.gamma[ch_i] * (xv - d.rm[ch_i]) /
                          sqrt((double)d.rv[ch_i] + 1e-5) +
                      d.beta[ch_i];
        double e = fabs(d.y[s * yns + ch_i * hw + i] - want);
        if (!(e <= worst)) worst = e;
      }
  CHECK(worst <= 1e-5, "bn inference error %g", worst);
  printf("bn: batch statistics, running statistics, inference\n");
  bn_free(&c);
  bn_free(&d);
}

static void bn_grad_case(int n, int ch, int hw, long xextra, long yextra) {
  char what[96];
  snprintf(what, sizeof what, "bn n%d c%d hw%d xgap%ld ygap%ld", n, ch, hw,
           xextra, yextra);
  bn_ctx c = bn_new(n, ch, hw, xextra, yextra, -1.0f, 3.0f);
  const long len = (long)ch * hw, xns = len + xextra, yns = len + yextra;
  bn_train_cb(&c);
  float *r, *dy;
  make_r(&r, &dy, n, len, yns);
  float *dx = falloc(n * xns), *dx0 = falloc(n * xns);
  fill_strided(dx0, n, len, xns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)(n * xns) * sizeof *dx);
  float *dg = falloc(ch), *dbt = falloc(ch);
  fill_val(dg, ch, NAN);
  fill_val(dbt, ch, NAN);
  rt_ref_bn_bwd(&c.s, c.x, dy, c.gamma, c.sm, c.si, dx, dg, dbt);
  CHECK(gaps_hold(dx, n, len, xns, SENTINEL), "%s: bwd wrote a gap", what);

  /* The statistics are functions of x, so the probe reruns the training
   * forward; its running-statistic updates are irrelevant here. */
  probe p = {bn_train_cb, &c, c.y, n * yns, r, falloc(n * yns)};
  double *num = dalloc(n * len), *ana = dalloc(n * len);
  numgrad(&p, c.x, n, len, xns, 1e-2f, num);
  accumulated(dx, dx0, n, len, xns, ana);
  char w2[128];
  snprintf(w2, sizeof w2, "%s dx", what);
  expect_grad(w2, num, ana, n * len);
  numgrad(&p, c.gamma, 1, ch, ch, 1e-2f, num);
  widen(dg, ch, ana);
  snprintf(w2, sizeof w2, "%s dgamma", what);
  expect_grad(w2, num, ana, ch);
  numgrad(&p, c.beta, 1, ch, ch, 1e-2f, num);
  widen(dbt, ch, ana);
  snprintf(w2, sizeof w2, "%s dbeta", what);
  expect_grad(w2, num, ana, ch);
  free(num);
  free(ana);
  free(p.yhi);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(dg);
  free(dbt);
  bn_free(&c);
}

static void test_bn_grad(void) {
  bn_grad_case(2, 3, 5, 0, 0);
  bn_grad_case(4, 2, 9, 13, 7);
  bn_grad_case(3, 1, 16, 0, 2);
  bn_grad_case(3, 4, 1, 3, 0); /* hw 1: BN after a linear layer */
  printf("bn: training-mode gradient, 4 cases\n");
}

/* ---- max pool ---- */

typedef struct pool_ctx {
  rt_pool_shape s;
  float *x, *y;
} pool_ctx;

static void pool_fwd_cb(void *c) {
  pool_ctx *k = c;
  rt_ref_maxpool_fwd(&k->s, k->x, k->y);
}

static void pool_grad_case(int n, int ch, int h, int w, int f, long xextra,
                           long yextra) {
  char what[96];
  snprintf(what, sizeof what, "maxpool n%d c%d %dx%d f%d", n, ch, h, w, f);
  const long len = (long)ch * h * w, ylen = (long)ch * (h / f) * (w / f);
  const long xns = len + xextra, yns = ylen + yextra;
  pool_ctx c = {{n, ch, h, w, f, xextra ? xns : 0, yextra ? yns : 0},
                falloc(n * xns), falloc(n * yns)};
  /* Distinct values 0.05 apart, shuffled: no ties, and a step of 0.01
   * never changes a window's argmax. */
  long total = n * len;
  float *vals = falloc(total);
  for (long i = 0; i < total; i++) vals[i] = 0.05f * (float)(i - total / 2);
  for (long i = total - 1; i > 0; i--) {
    long j = (long)rt_rng_below(&rng, (uint32_t)(i + 1));
    float t = vals[i];
    vals[i] = vals[j];
    vals[j] = t;
  }
  fill_val(c.x, n * xns, NAN);
  for (int s = 0; s < n; s++)
    for (long i = 0; i < len; i++) c.x[s * xns + i] = vals[s * len + i];
  fill_val(c.y, n * yns, SENTINEL);
  pool_fwd_cb(&c);
  CHECK(gaps_hold(c.y, n, ylen, yns, SENTINEL), "%s: fwd wrote a gap", what);
  for (int s = 0; s < n; s++)
    for (int ci = 0; ci < ch; ci++)
      for (int oy = 0; oy < h / f; oy++)
        for (int ox = 0; ox < w / f; ox++) {
          float m = -INFINITY;
          for (int dy = 0; dy < f; dy++)
            for (int dx = 0; dx < f; dx++) {
              float v = c.x[s * xns + ((long)ci * h + oy * f + dy) * w +
                            ox * f + dx];
              if (v > m) m = v;
            }
          CHECK(c.y[s * yns + ((long)ci * (h / f) + oy) * (w / f) + ox] == m,
                "%s: fwd window %d %d %d %d", what, s, ci, oy, ox);
        }
  float *r, *dy;
  make_r(&r, &dy, n, ylen, yns);
  float *dx = falloc(n * xns), *dx0 = falloc(n * xns);
  fill_strided(dx0, n, len, xns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)(n * xns) * sizeof *dx);
  rt_ref_maxpool_bwd(&c.s, c.x, dy, dx);
  CHECK(gaps_hold(dx, n, len, xns, SENTINEL), "%s: bwd wrote a gap", what);
  probe p = {pool_fwd_cb, &c, c.y, n * yns, r, falloc(n * yns)};
  double *num = dalloc(n * len), *ana = dalloc(n * len);
  numgrad(&p, c.x, n, len, xns, 1e-2f, num);
  accumulated(dx, dx0, n, len, xns, ana);
  expect_grad(what, num, ana, n * len);
  free(num);
  free(ana);
  free(p.yhi);
  free(vals);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(c.x);
  free(c.y);
}

static void test_pool_ties(void) {
  /* One sample, one channel, 5x4 with f = 2: row 4 is cut by the floor.
   * Window (0,0): all equal -> the first. Window (0,1): max at flat
   * offsets 1 and 2 of the window -> offset 1 (row 0). Window (1,0): max at
   * offsets 2 and 3 -> offset 2. Window (1,1): a unique max. */
  float x[20] = {
      5, 5, 1, 9, /* row 0 */
      5, 5, 9, 0, /* row 1 */
      0, 1, 2, 3, /* row 2 */
      4, 4, 8, 3, /* row 3 */
      99, 99, 99, 99, /* row 4: outside every window */
  };
  rt_pool_shape s = {.n = 1, .c = 1, .h = 5, .w = 4, .f = 2};
  float y[4], dy[4] = {1, 2, 3, 4}, dx[20];
  rt_ref_maxpool_fwd(&s, x, y);
  CHECK(y[0] == 5 && y[1] == 9 && y[2] == 4 && y[3] == 8, "maxpool tie fwd");
  fill_val(dx, 20, 0.5f);
  rt_ref_maxpool_bwd(&s, x, dy, dx);
  float want[20];
  fill_val(want, 20, 0.5f);
  want[0] += 1;  /* first of four equal */
  want[3] += 2;  /* (0,3) before (1,2) */
  want[12] += 3; /* (3,0) before (3,1) */
  want[14] += 4;
  for (int i = 0; i < 20; i++)
    CHECK(dx[i] == want[i], "maxpool tie bwd dx[%d] = %g, want %g", i, dx[i],
          want[i]);
}

static void test_pool(void) {
  pool_grad_case(2, 3, 6, 6, 2, 0, 0);
  pool_grad_case(2, 2, 7, 5, 2, 9, 4);
  pool_grad_case(3, 1, 9, 10, 3, 0, 2);
  test_pool_ties();
  printf("maxpool: forward, gradient, tie and floor rules\n");
}

/* ---- global average pool ---- */

typedef struct gap_ctx {
  int n, c, hw;
  long xns, yns;
  float *x, *y;
} gap_ctx;

static void gap_fwd_cb(void *c) {
  gap_ctx *k = c;
  rt_ref_gap_fwd(k->n, k->c, k->hw, k->x, k->xns, k->y, k->yns);
}

static void test_gap(void) {
  const int n = 3, ch = 4, hw = 10;
  const long len = (long)ch * hw, xns = len + 6, yns = ch + 3;
  gap_ctx c = {n, ch, hw, xns, yns, falloc(n * xns), falloc(n * yns)};
  fill_strided(c.x, n, len, xns, -1, 1, NAN);
  fill_val(c.y, n * yns, SENTINEL);
  gap_fwd_cb(&c);
  CHECK(gaps_hold(c.y, n, ch, yns, SENTINEL), "gap fwd wrote a gap");
  for (int s = 0; s < n; s++)
    for (int ci = 0; ci < ch; ci++) {
      double sum = 0;
      for (int i = 0; i < hw; i++) sum += c.x[s * xns + ci * hw + i];
      CHECK(fabs(c.y[s * yns + ci] - sum / hw) <= 1e-6, "gap fwd %d %d", s,
            ci);
    }
  float *r, *dy;
  make_r(&r, &dy, n, ch, yns);
  const long dxns = len + 2;
  float *dx = falloc(n * dxns), *dx0 = falloc(n * dxns);
  fill_strided(dx0, n, len, dxns, -2, 2, SENTINEL);
  memcpy(dx, dx0, (size_t)(n * dxns) * sizeof *dx);
  rt_ref_gap_bwd(n, ch, hw, dy, yns, dx, dxns, 0);
  CHECK(gaps_hold(dx, n, len, dxns, SENTINEL), "gap bwd wrote a gap");
  probe p = {gap_fwd_cb, &c, c.y, n * yns, r, falloc(n * yns)};
  double *num = dalloc(n * len), *ana = dalloc(n * len);
  numgrad(&p, c.x, n, len, xns, 1e-2f, num);
  accumulated(dx, dx0, n, len, dxns, ana);
  expect_grad("gap dx", num, ana, n * len);
  printf("gap: forward, gradient\n");
  free(num);
  free(ana);
  free(p.yhi);
  free(r);
  free(dy);
  free(dx);
  free(dx0);
  free(c.x);
  free(c.y);
}

/* ---- softmax cross-entropy ---- */

/* Labels past a byte (ImageNet's 1000 classes): the loss, the hits and
 * the gradient's -1 land on the label's own logit. */
static void test_xent_wide(void) {
  enum { N = 4, C = 1000 };
  static float logits[N * C], d[N * C];
  const ir_label labels[N] = {999, 300, 256, 0};
  for (int i = 0; i < N * C; i++) logits[i] = unif(-1, 1);
  logits[0 * C + 999] = 9, logits[1 * C + 300] = 9; /* two right, two wrong */
  double want = 0;
  for (int s = 0; s < N; s++) {
    double z = 0;
    for (int j = 0; j < C; j++) z += exp((double)logits[s * C + j]);
    want += -log(exp((double)logits[s * C + labels[s]]) / z) / N;
  }
  int hits = -1;
  double loss = rt_ref_softmax_xent(N, C, logits, labels, d, &hits);
  CHECK(fabs(loss - want) <= 1e-9 * want, "xent over %d classes %.17g, want %.17g", C, loss,
        want);
  CHECK(hits == 2, "xent over %d classes: %d correct, want 2", C, hits);
  for (int s = 0; s < N; s++)
    CHECK(d[s * C + labels[s]] < 0, "sample %d: the gradient at its label %d is %g", s,
          labels[s], d[s * C + labels[s]]);
}

static void test_xent(void) {
  enum { N = 6, C = 7 };
  float logits[N * C], d[N * C];
  ir_label labels[N];
  for (int i = 0; i < N * C; i++) logits[i] = unif(-3, 3);
  for (int s = 0; s < N; s++) labels[s] = (ir_label)rt_rng_below(&rng, C);

  double want = 0;
  int want_hits = 0;
  for (int s = 0; s < N; s++) {
    double z = 0;
    int arg = 0;
    for (int j = 0; j < C; j++) {
      z += exp((double)logits[s * C + j]);
      if (logits[s * C + j] > logits[s * C + arg]) arg = j;
    }
    want += -log(exp((double)logits[s * C + labels[s]]) / z);
    want_hits += arg == labels[s];
  }
  want /= N;
  int hits = -1;
  fill_val(d, N * C, NAN);
  double loss = rt_ref_softmax_xent(N, C, logits, labels, d, &hits);
  CHECK(fabs(loss - want) <= 1e-12 * want, "xent loss %.17g, want %.17g",
        loss, want);
  CHECK(hits == want_hits, "xent correct %d, want %d", hits, want_hits);
  CHECK(rt_ref_softmax_xent(N, C, logits, labels, NULL, NULL) == loss,
        "xent without outputs differs");

  double num[N * C], ana[N * C];
  for (int i = 0; i < N * C; i++) {
    float orig = logits[i];
    logits[i] = orig + 1e-2f;
    double hi = logits[i];
    double lhi = rt_ref_softmax_xent(N, C, logits, labels, NULL, NULL);
    logits[i] = orig - 1e-2f;
    double lo = logits[i];
    double llo = rt_ref_softmax_xent(N, C, logits, labels, NULL, NULL);
    logits[i] = orig;
    num[i] = (lhi - llo) / (hi - lo);
    ana[i] = d[i];
  }
  expect_grad("xent dlogits", num, ana, N * C);
  /* Each row of the gradient sums to 0: softmax minus a one-hot. */
  for (int s = 0; s < N; s++) {
    double sum = 0;
    for (int j = 0; j < C; j++) sum += d[s * C + j];
    CHECK(fabs(sum) < 1e-7, "xent gradient row %d sums to %g", s, sum);
  }

  /* Huge logits stay finite; ties go to the lowest index. */
  float big[3 * 2] = {1000, 1000, 1000, 1000, -1000, 1000};
  ir_label bl[3] = {0, 0, 1};
  float bd[6];
  loss = rt_ref_softmax_xent(3, 2, big, bl, bd, &hits);
  double want_big = (log(2.0) + log(2.0) + 0.0) / 3;
  CHECK(fabs(loss - want_big) < 1e-12, "xent big logits %.17g, want %.17g",
        loss, want_big);
  CHECK(hits == 3, "xent ties: %d correct, want 3", hits);
  CHECK(bd[0] == (float)((0.5 - 1) / 3) && bd[1] == (float)(0.5 / 3) &&
            bd[2] == (float)((0.5 - 1) / 3) && bd[4] == 0.0f &&
            bd[5] == 0.0f,
        "xent big logits gradient");
  printf("xent: loss, gradient, count, ties, large logits\n");
}

/* ---- SGD ---- */

static void test_sgd(void) {
  /* Entry 0 active, entry 1 masked with a nonzero value and velocity,
   * entry 2 masked at zero. Hand computation for entry 0 (lr 0.1,
   * momentum 0.9, decay 0.01), w0 = 1:
   *   step 1, g = 0.5:  g' = 0.51,    v = 0.51,    w = 0.949
   *   step 2, g = -0.2: g' = -0.19051, v = 0.26849, w = 0.922151 */
  float w[3] = {1.0f, 3.0f, 0.0f}, v[3] = {0.0f, 0.7f, 0.0f};
  const uint8_t m[3] = {1, 0, 0};
  float g1[3] = {0.5f, 1.0f, 1.0f}, g2[3] = {-0.2f, -4.0f, 2.0f};
  rt_ref_sgd(3, w, g1, v, m, 0.1f, 0.9f, 0.01f);
  CHECK(fabs(v[0] - 0.51) < 1e-6 && fabs(w[0] - 0.949) < 1e-6,
        "sgd step 1: w %.9g v %.9g", w[0], v[0]);
  rt_ref_sgd(3, w, g2, v, m, 0.1f, 0.9f, 0.01f);
  CHECK(fabs(v[0] - 0.26849) < 1e-6 && fabs(w[0] - 0.922151) < 1e-6,
        "sgd step 2: w %.9g v %.9g", w[0], v[0]);
  CHECK(w[1] == 3.0f && v[1] == 0.7f, "sgd moved a masked entry");
  CHECK(w[2] == 0.0f && !signbit(w[2]) && v[2] == 0.0f,
        "sgd moved a masked zero");

  /* No mask: every entry moves, by the same rule. */
  float w2[2] = {1.0f, -2.0f}, v2[2] = {0.5f, 0.0f}, g[2] = {0.0f, 1.0f};
  rt_ref_sgd(2, w2, g, v2, NULL, 0.5f, 0.5f, 0.0f);
  CHECK(v2[0] == 0.25f && w2[0] == 0.875f && v2[1] == 1.0f && w2[1] == -2.5f,
        "sgd without mask");
  printf("sgd: two-step trajectory, masks\n");
}

int main(void) {
  rt_rng_seed(&rng, 20240607);
  test_conv();
  test_linear();
  test_relu();
  test_bn_forward();
  test_bn_grad();
  test_pool();
  test_gap();
  test_xent();
  test_xent_wide();
  test_sgd();
  printf("worst normalised gradient error %.3g (tolerance %.3g)\n",
         worst_grad_err, GRAD_TOL);
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("all reference kernel tests passed\n");
  return 0;
}
