/* lanes_bench: what putting the batch in the vector lanes would give the
 * sparse conv kernels (bench/README.md, "How the CPU backend runs a step").
 *
 * One conv 3x3 layer, pad 1, random per-weight masks, 16 samples, on one
 * core: the forward and the weight gradient written two ways over the same
 * tables of active weights (input channel, tap, weight) in the same order.
 *
 *   gather: as kgen/sparse.c's kernels lay a sample out today: each
 *     sample's input channel a padded plane, a vector 16 positions of one
 *     sample; an active weight's tap is a span of the plane shifted by its
 *     offset, so its loads start at any float (split lines). The forward's
 *     tile is 14 vectors of an output plane, the weight gradient's groups
 *     8 weights of one output channel, one output-gradient load feeding 8
 *     FMAs (kgen/sparse.c, gather and groups; without runs).
 *   lanes: a vector is one position of the 16 samples, so every load of a
 *     tap is aligned. The forward's tile is 14 positions of an output row
 *     and all output channels take it in turn (its input window stays in
 *     L2); the weight gradient's groups as above, over bands of 7 output
 *     rows, every output channel's over one band before the next.
 *
 * The forwards' outputs must agree bit for bit (each output adds the same
 * products in the same order); the weight gradients (sums in another
 * order) to 1e-4. Prints G lane-FMA/s of the active weights' FMAs and the
 * ratio gather time / lanes time, best of 7 interleaved runs.
 *
 *   build/bin/lanes_bench [CIN HW COUT [DENSITY]]   (default 32 28 32 0.21)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,fma")
#include <immintrin.h>

#define NS 16 /* samples, one a lane */
#define TW 14 /* the forward's tile: vectors of accumulators */

typedef struct {
  int c, ky, kx;
  float w;
} entry;

static int CIN, COUT, HW, P; /* P: the padded plane's side */
static entry **E;
static int *NE;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *falloc(long n) {
  float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
  if (!p) {
    fprintf(stderr, "lanes_bench: out of memory\n");
    exit(1);
  }
  memset(p, 0, (size_t)n * 4);
  return p;
}

/* gather layout: sample i's channel c at xg + (i * CIN + c) * gplane, the
 * padded P x P plane and slack for the last tile's overrun */
static long gplane(void) { return (long)P * P + TW * 16 + 2 * P; }
/* output: padded-row coordinates, q = r * P + x (x >= HW is waste) */
static long glen(void) { return (long)HW * P; }
static long gout(void) { return (glen() + TW * 16 - 1) / (TW * 16) * (TW * 16); }

static void fwd_gather(const float *xg, float *yg) {
  for (int i = 0; i < NS; i++)
    for (int o = 0; o < COUT; o++)
      for (long t0 = 0; t0 < glen(); t0 += TW * 16) {
        __m512 acc[TW];
#pragma GCC unroll 14
        for (int j = 0; j < TW; j++) acc[j] = _mm512_setzero_ps();
        for (int k = 0; k < NE[o]; k++) {
          const entry *e = &E[o][k];
          __m512 w = _mm512_set1_ps(e->w);
          const float *s = xg + ((long)i * CIN + e->c) * gplane() + e->ky * P + e->kx + t0;
#pragma GCC unroll 14
          for (int j = 0; j < TW; j++) acc[j] = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16 * j), acc[j]);
        }
        float *y = yg + ((long)i * COUT + o) * gout() + t0;
#pragma GCC unroll 14
        for (int j = 0; j < TW; j++) _mm512_storeu_ps(y + 16 * j, acc[j]);
      }
}

/* lanes layout: channel c's position (r, x) of the padded plane at
 * xl + ((c * P + r) * P + x) * NS; output (o, r, x) at
 * yl + ((o * HW + r) * HW + x) * NS */
static void fwd_lanes(const float *xl, float *yl) {
  for (int r = 0; r < HW; r++)
    for (int x0 = 0; x0 < HW; x0 += TW)
      for (int o = 0; o < COUT; o++) {
        __m512 acc[TW];
#pragma GCC unroll 14
        for (int j = 0; j < TW; j++) acc[j] = _mm512_setzero_ps();
        for (int k = 0; k < NE[o]; k++) {
          const entry *e = &E[o][k];
          __m512 w = _mm512_set1_ps(e->w);
          const float *s = xl + (((long)e->c * P + r + e->ky) * P + x0 + e->kx) * NS;
#pragma GCC unroll 14
          for (int j = 0; j < TW; j++) acc[j] = _mm512_fmadd_ps(w, _mm512_load_ps(s + NS * j), acc[j]);
        }
        float *y = yl + (((long)o * HW + r) * HW + x0) * NS;
#pragma GCC unroll 14
        for (int j = 0; j < TW; j++) _mm512_store_ps(y + NS * j, acc[j]);
      }
}

/* The weight gradient over the output gradient at the padded-row
 * coordinates (zero at the waste columns), groups of 8 weights of one
 * output channel. dw[o][k]: entry k of output o. */
static void dw_gather(const float *xg, const float *dyg, float *dw, int maxe) {
  for (int i = 0; i < NS; i++)
    for (int o = 0; o < COUT; o++)
      for (int g0 = 0; g0 < NE[o]; g0 += 8) {
        int ng = NE[o] - g0 < 8 ? NE[o] - g0 : 8;
        const float *s[8];
        __m512 acc[8];
        for (int g = 0; g < 8; g++) {
          const entry *e = &E[o][g0 + (g < ng ? g : 0)];
          s[g] = xg + ((long)i * CIN + e->c) * gplane() + e->ky * P + e->kx;
          acc[g] = _mm512_setzero_ps();
        }
        const float *d = dyg + ((long)i * COUT + o) * gout();
        for (long q = 0; q < glen(); q += 16) {
          __m512 dv = _mm512_loadu_ps(d + q);
#pragma GCC unroll 8
          for (int g = 0; g < 8; g++) acc[g] = _mm512_fmadd_ps(dv, _mm512_loadu_ps(s[g] + q), acc[g]);
        }
        for (int g = 0; g < ng; g++) dw[(long)o * maxe + g0 + g] += _mm512_reduce_add_ps(acc[g]);
      }
}

/* dyl: output o's padded-row coordinate q at dyl + (o * glen() + q) * NS.
 * In bands of output rows, every output channel's groups over one band
 * before the next (the band's input window stays in L2), each weight's
 * vector of sums kept in acc between bands and summed at the end. */
#define BAND 7
static void dw_lanes(const float *xl, const float *dyl, float *dw, int maxe, __m512 *accs) {
  for (long k = 0; k < (long)COUT * maxe; k++) accs[k] = _mm512_setzero_ps();
  for (int r0 = 0; r0 < HW; r0 += BAND) {
    long q0 = (long)r0 * P, q1 = (long)(r0 + BAND < HW ? r0 + BAND : HW) * P;
    for (int o = 0; o < COUT; o++)
      for (int g0 = 0; g0 < NE[o]; g0 += 8) {
        int ng = NE[o] - g0 < 8 ? NE[o] - g0 : 8;
        const float *s[8];
        __m512 acc[8];
        for (int g = 0; g < 8; g++) {
          const entry *e = &E[o][g0 + (g < ng ? g : 0)];
          s[g] = xl + (((long)e->c * P + e->ky) * P + e->kx) * NS;
          acc[g] = accs[(long)o * maxe + g0 + (g < ng ? g : 0)];
        }
        const float *d = dyl + (long)o * glen() * NS;
        for (long q = q0; q < q1; q++) {
          __m512 dv = _mm512_load_ps(d + q * NS);
#pragma GCC unroll 8
          for (int g = 0; g < 8; g++)
            acc[g] = _mm512_fmadd_ps(dv, _mm512_load_ps(s[g] + q * NS), acc[g]);
        }
        for (int g = 0; g < ng; g++) accs[(long)o * maxe + g0 + g] = acc[g];
      }
  }
  for (int o = 0; o < COUT; o++)
    for (int k = 0; k < NE[o]; k++) dw[(long)o * maxe + k] += _mm512_reduce_add_ps(accs[(long)o * maxe + k]);
}

static float frand(void) { return (float)rand() / (float)RAND_MAX - 0.5f; }

int main(int argc, char **argv) {
  if (argc != 1 && argc != 4 && argc != 5) {
    fprintf(stderr, "usage: lanes_bench [CIN HW COUT [DENSITY]]\n");
    return 2;
  }
  CIN = argc > 1 ? atoi(argv[1]) : 32;
  HW = argc > 1 ? atoi(argv[2]) : 28;
  COUT = argc > 1 ? atoi(argv[3]) : 32;
  double dens = argc > 4 ? atof(argv[4]) : 0.21;
  if (CIN < 1 || COUT < 1 || HW < TW || HW % TW || dens <= 0 || dens > 1) {
    fprintf(stderr, "lanes_bench: CIN, COUT >= 1, HW a multiple of %d, 0 < DENSITY <= 1\n", TW);
    return 2;
  }
  if (!__builtin_cpu_supports("avx512f")) {
    printf("lanes_bench: skipped, the CPU has no AVX-512\n");
    return 0;
  }
  P = HW + 2;
  srand(7);
  E = calloc((size_t)COUT, sizeof *E);
  NE = calloc((size_t)COUT, sizeof *NE);
  long active = 0;
  for (int o = 0; o < COUT; o++) {
    E[o] = malloc(sizeof(entry) * (size_t)CIN * 9);
    for (int c = 0; c < CIN; c++)
      for (int t = 0; t < 9; t++)
        if (rand() < dens * RAND_MAX) E[o][NE[o]++] = (entry){c, t / 3, t % 3, frand()};
    active += NE[o];
  }
  int maxe = CIN * 9;
  double fmas = (double)active * HW * HW * NS; /* the active weights' lane-FMAs a pass */

  float *xg = falloc(NS * CIN * gplane()), *xl = falloc((long)CIN * P * P * NS);
  float *yg = falloc(NS * COUT * gout()), *yl = falloc((long)COUT * HW * HW * NS);
  float *dyg = falloc(NS * COUT * gout()), *dyl = falloc((long)COUT * glen() * NS);
  float *dwg = falloc((long)COUT * maxe), *dwl = falloc((long)COUT * maxe);
  __m512 *accs = (__m512 *)falloc((long)COUT * maxe * NS);
  for (int i = 0; i < NS; i++)
    for (int c = 0; c < CIN; c++)
      for (int r = 0; r < HW; r++)
        for (int x = 0; x < HW; x++) {
          float v = frand();
          xg[((long)i * CIN + c) * gplane() + (r + 1) * P + x + 1] = v;
          xl[(((long)c * P + r + 1) * P + x + 1) * NS + i] = v;
        }
  for (int i = 0; i < NS; i++)
    for (int o = 0; o < COUT; o++)
      for (int r = 0; r < HW; r++)
        for (int x = 0; x < HW; x++) {
          float v = frand();
          dyg[((long)i * COUT + o) * gout() + r * P + x] = v;
          dyl[((long)o * glen() + r * P + x) * NS + i] = v;
        }

  fwd_gather(xg, yg);
  fwd_lanes(xl, yl);
  for (int i = 0; i < NS; i++)
    for (int o = 0; o < COUT; o++)
      for (int r = 0; r < HW; r++)
        for (int x = 0; x < HW; x++)
          if (yg[((long)i * COUT + o) * gout() + r * P + x] !=
              yl[(((long)o * HW + r) * HW + x) * NS + i]) {
            fprintf(stderr, "lanes_bench: forwards differ at sample %d, channel %d, (%d, %d)\n", i,
                    o, r, x);
            return 1;
          }
  dw_gather(xg, dyg, dwg, maxe);
  dw_lanes(xl, dyl, dwl, maxe, accs);
  for (int o = 0; o < COUT; o++)
    for (int k = 0; k < NE[o]; k++) {
      float a = dwg[(long)o * maxe + k], b = dwl[(long)o * maxe + k];
      if (!(fabsf(a - b) <= 1e-4f * (fabsf(a) + 1.0f))) {
        fprintf(stderr, "lanes_bench: weight gradients differ at %d, %d: %g against %g\n", o, k,
                (double)a, (double)b);
        return 1;
      }
    }

  double best[4] = {1e30, 1e30, 1e30, 1e30};
  for (int rep = 0; rep < 7; rep++) {
    double t[5];
    t[0] = now_s();
    fwd_gather(xg, yg);
    t[1] = now_s();
    fwd_lanes(xl, yl);
    t[2] = now_s();
    dw_gather(xg, dyg, dwg, maxe);
    t[3] = now_s();
    dw_lanes(xl, dyl, dwl, maxe, accs);
    t[4] = now_s();
    for (int k = 0; k < 4; k++)
      if (t[k + 1] - t[k] < best[k]) best[k] = t[k + 1] - t[k];
  }
  printf("conv 3x3 %d->%d at %dx%d, %.0f%% of the weights (%ld), %d samples, one core\n", CIN, COUT,
         HW, HW, 100.0 * (double)active / ((double)CIN * COUT * 9), active, NS);
  printf("%-16s %10s %10s %10s\n", "", "gather", "lanes", "ratio");
  printf("%-16s %7.1f G/s %7.1f G/s %9.2fx\n", "forward", fmas / best[0] / 1e9,
         fmas / best[1] / 1e9, best[0] / best[1]);
  printf("%-16s %7.1f G/s %7.1f G/s %9.2fx\n", "weight gradient", fmas / best[2] / 1e9,
         fmas / best[3] / 1e9, best[2] / best[3]);
  return 0;
}
#else
int main(void) {
  printf("lanes_bench: skipped, needs x86-64 and GCC or clang\n");
  return 0;
}
#endif
