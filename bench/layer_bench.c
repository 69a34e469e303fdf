/* layer_bench: one conv and one linear layer, forward + backward (data and
 * weight), JIT-sparse kernels of the CPU backend against dense OpenBLAS
 * (im2col + sgemm for conv, sgemm for linear) on the same layer, in the
 * same run, at several densities, on 1 and 2 threads: the backend forced
 * onto its JIT kernels, forced onto its dense OpenBLAS path, and left to
 * its own threshold ("auto", what training runs). Threads split the
 * batch the way runtime/host.c does; OpenBLAS runs single-threaded inside
 * each. Weight-gradient partials are left per thread on both sides (the
 * runtime reduces them after); the backend writes them as runtime/host.c
 * takes them: packed (the active weights' only) for a sparse linear layer,
 * dense for the rest. Build: see bench/README.md. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ir/ir.h"
#include "runtime/kernels.h"
#include "runtime/cpu/cpu.h"
#include "runtime/pool.h"

void openblas_set_num_threads(int);

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 12345;
static float frand(void) {
  rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
  return (float)((double)(rs >> 11) / 9007199254740992.0 * 2 - 1);
}

typedef struct lay {
  int conv;             /* else linear */
  int cin, h, w, cout, k, pad, oh, ow, in, out;
  int n;                /* batch */
  float *x, *dy, *wt, *bias, *y, *dx;
  float *dw[2], *db[2]; /* per thread */
  float *col[2];        /* im2col scratch per thread */
  rt_kernels *b;
  int v;                /* which of the row's backends b is */
  uint64_t held[3];     /* per backend: the wgen its last run had */
  float *mom;           /* the SGD step's momentum */
  uint64_t pass;        /* the run's wgen (rt_linear_shape) */
} lay;

typedef struct task {
  lay *L;
  int t, n0, n1, jit;
} task;

/* The peer's lowering, stride 1: per tap, whole rows of valid columns are
 * copied (or added back), the rest zeroed; no test per element. */
static void tap_cols(const lay *L, int k, int size, int osize, int *lo, int *hi) {
  *lo = L->pad - k > 0 ? L->pad - k : 0;
  *hi = size + L->pad - k < osize ? size + L->pad - k : osize;
  if (*hi < *lo) *hi = *lo;
}

static void im2col(const lay *L, const float *x, float *col) {
  int P = L->oh * L->ow;
  for (int ci = 0; ci < L->cin; ci++)
    for (int ky = 0; ky < L->k; ky++)
      for (int kx = 0; kx < L->k; kx++) {
        float *c = col + ((long)(ci * L->k + ky) * L->k + kx) * P;
        int oy0, oy1, ox0, ox1;
        tap_cols(L, ky, L->h, L->oh, &oy0, &oy1);
        tap_cols(L, kx, L->w, L->ow, &ox0, &ox1);
        memset(c, 0, (size_t)P * sizeof *c);
        for (int oy = oy0; oy < oy1; oy++)
          memcpy(c + oy * L->ow + ox0, x + ((long)ci * L->h + oy - L->pad + ky) * L->w + ox0 -
                                           L->pad + kx, (size_t)(ox1 - ox0) * sizeof *c);
      }
}

static void col2im_add(const lay *L, const float *col, float *dx) {
  int P = L->oh * L->ow;
  for (int ci = 0; ci < L->cin; ci++)
    for (int ky = 0; ky < L->k; ky++)
      for (int kx = 0; kx < L->k; kx++) {
        const float *c = col + ((long)(ci * L->k + ky) * L->k + kx) * P;
        int oy0, oy1, ox0, ox1;
        tap_cols(L, ky, L->h, L->oh, &oy0, &oy1);
        tap_cols(L, kx, L->w, L->ow, &ox0, &ox1);
        for (int oy = oy0; oy < oy1; oy++) {
          float *d = dx + ((long)ci * L->h + oy - L->pad + ky) * L->w - L->pad + kx;
          const float *r = c + oy * L->ow;
          for (int ox = ox0; ox < ox1; ox++) d[ox] += r[ox];
        }
      }
}

/* One chunk: forward, backward-data, backward-weight. */
static void *run_task(void *arg) {
  task *T = arg;
  lay *L = T->L;
  int n = T->n1 - T->n0;
  if (L->conv) {
    long xs = (long)L->cin * L->h * L->w, ys = (long)L->cout * L->oh * L->ow;
    const float *x = L->x + T->n0 * xs, *dy = L->dy + T->n0 * ys;
    float *y = L->y + T->n0 * ys, *dx = L->dx + T->n0 * xs;
    if (T->jit) {
      rt_conv_shape s = {.n = n, .cin = L->cin, .h = L->h, .w = L->w, .cout = L->cout,
                         .k = L->k, .stride = 1, .pad = L->pad};
      rt_conv_shape_finish(&s);
      L->b->conv_fwd(L->b, 0, &s, x, L->wt, L->bias, y);
      if (L->b->conv_bwd) { /* what runtime/host.c calls when the backend has it */
        L->b->conv_bwd(L->b, 0, &s, x, dy, NULL, L->wt, dx, L->dw[T->t], L->db[T->t]);
      } else {
        L->b->conv_bwd_data(L->b, 0, &s, dy, L->wt, dx);
        L->b->conv_bwd_weight(L->b, 0, &s, x, dy, L->dw[T->t], L->db[T->t]);
      }
    } else {
      int P = L->oh * L->ow, KC = L->cin * L->k * L->k;
      float *col = L->col[T->t];
      memset(L->dw[T->t], 0, (size_t)L->cout * KC * sizeof(float));
      for (int i = 0; i < n; i++) {
        im2col(L, x + i * xs, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->cout, P, KC, 1.0f, L->wt, KC,
                    col, P, 0.0f, y + i * ys, P);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L->cout, KC, P, 1.0f, dy + i * ys,
                    P, col, P, 1.0f, L->dw[T->t], KC);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, KC, P, L->cout, 1.0f, L->wt, KC,
                    dy + i * ys, P, 0.0f, col, P);
        col2im_add(L, col, dx + i * xs);
      }
    }
  } else {
    const float *x = L->x + (long)T->n0 * L->in, *dy = L->dy + (long)T->n0 * L->out;
    float *y = L->y + (long)T->n0 * L->out, *dx = L->dx + (long)T->n0 * L->in;
    if (T->jit) {
      /* one pass per run, as a training step: its calls share wgen */
      rt_linear_shape s = {.n = n, .in = L->in, .out = L->out, .wgen = L->pass};
      L->b->linear_fwd(L->b, 0, &s, x, L->wt, L->bias, y);
      if (L->b->linear_bwd) { /* what runtime/host.c calls when the backend has it */
        L->b->linear_bwd(L->b, 0, &s, x, dy, L->wt, dx, L->dw[T->t], L->db[T->t]);
      } else {
        L->b->linear_bwd_data(L->b, 0, &s, dy, L->wt, dx);
        L->b->linear_bwd_weight(L->b, 0, &s, x, dy, L->dw[T->t], L->db[T->t]);
      }
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, L->out, L->in, 1.0f, x, L->in,
                  L->wt, L->in, 0.0f, y, L->out);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, L->in, L->out, 1.0f, dy,
                  L->out, L->wt, L->in, 1.0f, dx, L->in);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L->out, L->in, n, 1.0f, dy, L->out,
                  x, L->in, 0.0f, L->dw[T->t], L->in);
    }
  }
  return NULL;
}

static void pool_task(void *arg, int t) { run_task((task *)arg + t); }

/* What training does between two passes, untimed on both sides: an SGD
 * step, new weight values. On the backend it goes as runtime/host.c's: a
 * sparse linear layer's packed step (with `copy`) also writes the new
 * weights into the forward kernel's packing, from which the next run
 * makes the backward's rather than packing the dense weights. The
 * learning rate is 0 so that every run computes the same thing. Returns
 * the seconds of the packed step. */
static double sgd_step(lay *L, int jit, int copy) {
  static uint64_t wgens;
  uint64_t from = jit ? L->held[L->v] : 0;
  L->pass = ++wgens;
  if (jit) L->held[L->v] = L->pass;
  size_t n;
  const int32_t *idx = jit && L->b->wgrad_index ? L->b->wgrad_index(L->b, 0, &n) : NULL;
  if (!idx) return 0.0;
  double t0 = now_s();
  const int32_t *at = NULL;
  float *dst = copy && L->b->wcopy ? L->b->wcopy(L->b, 0, L->wt, from, L->pass, &at) : NULL;
  rt_sgd_packed(0, n, idx, L->wt, L->dw[0], L->mom, 0.0f, 0.0f, 0.0f, dst, at);
  return now_s() - t0;
}

/* One run of the whole batch on `threads` threads: dense OpenBLAS here
 * (jit 0) or the backend L->b (jit 1), after an SGD step. The threads are
 * the runtime's pool, started once, as runtime/host.c runs its ops
 * (creating threads for every run cost both sides 0.1-0.3 ms on this VM,
 * a ratio-bending constant). */
static double run_after(lay *L, int threads, int jit, int copy, double *sgd) {
  static rt_pool *pool;
  if (!pool) pool = rt_pool_new(2);
  double t = sgd_step(L, jit, copy);
  if (sgd) *sgd = t;
  task T[2];
  for (int t = 0; t < threads; t++)
    T[t] = (task){L, t, L->n * t / threads, L->n * (t + 1) / threads, jit};
  double t0 = now_s();
  if (threads > 1 && pool && rt_pool_threads(pool) >= threads)
    rt_pool_run(pool, threads, pool_task, T);
  else
    for (int t = 0; t < threads; t++) run_task(&T[t]);
  return now_s() - t0;
}

static double run_once(lay *L, int threads, int jit) { return run_after(L, threads, jit, 1, NULL); }

/* Runs compared in one row, interleaved round by round so that load from
 * other jobs on the shared cores hits all of them alike, their order
 * rotated every round so that none always inherits the caches another
 * left (the dense peer used to run after a dense run, the backend's dense
 * path after the JIT's); best of REPS. */
enum { REPS = 8 };

static void bench(lay *L, const char *title) {
  static const double dens[] = {0.01, 0.05, 0.10, 0.25, 0.50, 1.00};
  double cp[6][4]; /* linear: SGD steps without and with the copy, the runs after */
  long nw = L->conv ? (long)L->cout * L->cin * L->k * L->k : (long)L->out * L->in;
  long nx = L->conv ? (long)L->n * L->cin * L->h * L->w : (long)L->n * L->in;
  long ny = L->conv ? (long)L->n * L->cout * L->oh * L->ow : (long)L->n * L->out;
  L->x = malloc(nx * sizeof(float)), L->dx = calloc(nx, sizeof(float));
  L->dy = malloc(ny * sizeof(float)), L->y = malloc(ny * sizeof(float));
  L->wt = malloc(nw * sizeof(float)), L->bias = malloc(L->cout * sizeof(float));
  L->mom = calloc(nw, sizeof(float));
  for (long i = 0; i < nx; i++) L->x[i] = frand();
  for (long i = 0; i < ny; i++) L->dy[i] = frand();
  for (int i = 0; i < L->cout; i++) L->bias[i] = 0.0f; /* the dense peer adds none */
  for (int t = 0; t < 2; t++) {
    L->dw[t] = calloc(nw, sizeof(float)), L->db[t] = malloc(L->cout * sizeof(float));
    L->col[t] = L->conv ? malloc((size_t)L->cin * L->k * L->k * L->oh * L->ow * sizeof(float))
                        : NULL;
  }
  ir_layer l = {.kind = L->conv ? IR_CONV : IR_LINEAR, .cin = L->conv ? L->cin : L->in,
                .h = L->h, .w = L->w, .cout = L->conv ? L->cout : L->out, .k = L->k,
                .stride = 1, .pad = L->pad, .oh = L->oh, .ow = L->ow, .n_w = nw};
  ir_graph g = {.layers = &l, .n_layers = 1};
  char err[256];
  uint8_t *wm = malloc(nw), *bm = malloc(L->cout);
  memset(bm, 1, L->cout);
  printf("\n%s, batch %d, fwd + bwd data + bwd weight, seconds (best of %d)\n", title, L->n,
         REPS);
  printf("| density | threads | dense sgemm | JIT sparse | backend dense | auto | auto path | "
         "auto speed-up | compile |\n");
  printf("|--------:|--------:|------------:|-----------:|--------------:|-----:|:----------|"
         "--------------:|--------:|\n");
  for (int d = 0; d < 6; d++) {
    for (long i = 0; i < nw; i++) {
      wm[i] = (uint8_t)((frand() + 1) * 0.5 < dens[d]);
      L->wt[i] = wm[i] ? frand() : 0.0f;
    }
    /* three backends: forced sparse, forced dense, the default threshold */
    rt_kernels *bk[3];
    for (int v = 0; v < 3; v++) {
      bk[v] = rt_kernels_cpu_new(&g, err, sizeof err);
      if (!bk[v]) {
        fprintf(stderr, "%s\n", err);
        exit(1);
      }
      /* LANES=8: the kernels a machine without AVX-512 gets */
      if (getenv("LANES") && rt_cpu_set_lanes(bk[v], atoi(getenv("LANES")))) {
        fprintf(stderr, "layer_bench: LANES must be 8 or 16\n");
        exit(2);
      }
      if (v < 2) rt_cpu_set_dense_threshold(bk[v], v == 0 ? 2.0 : 0.0, v == 0 ? 2.0 : 0.0);
      /* gradients as runtime/host.c takes them: packed where the backend
       * can (sparse linear layers), dense otherwise */
      bk[v]->packed_wgrad = 1;
      if (bk[v]->prepare(bk[v], 0, wm, bm, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
      }
    }
    rt_cpu_stats st = rt_cpu_get_stats(bk[0]);
    { /* both sides compute the same thing: the outputs and input gradients agree */
      float *y0 = malloc(ny * sizeof(float)), *dx0 = malloc(nx * sizeof(float));
      memset(L->dx, 0, nx * sizeof(float));
      run_once(L, 1, 0);
      memcpy(y0, L->y, ny * sizeof(float)), memcpy(dx0, L->dx, nx * sizeof(float));
      memset(L->dx, 0, nx * sizeof(float));
      L->b = bk[0], L->v = 0;
      run_once(L, 1, 1);
      double e = 0, m = 1e-30;
      for (long i = 0; i < ny; i++) e = fmax(e, fabs(y0[i] - L->y[i])), m = fmax(m, fabs(y0[i]));
      for (long i = 0; i < nx; i++) e = fmax(e, fabs(dx0[i] - L->dx[i])), m = fmax(m, fabs(dx0[i]));
      if (e / m > 1e-4) {
        fprintf(stderr, "layer_bench: dense and JIT disagree (relative error %g)\n", e / m);
        exit(1);
      }
      free(y0), free(dx0);
    }
    for (int th = 1; th <= 2; th++) {
      /* t[0]: OpenBLAS here; t[1..3]: the three backends */
      double t[4] = {1e30, 1e30, 1e30, 1e30};
      for (int r = 0; r < REPS; r++)
        for (int q = 0; q < 4; q++) {
          int v = (q + r) % 4; /* each run after each of the others in turn */
          if (v) L->b = bk[v - 1], L->v = v - 1;
          double u = run_once(L, th, v > 0);
          if (u < t[v]) t[v] = u;
        }
      printf("| %6.0f%% | %7d | %11.4f | %10.4f | %13.4f | %.4f | %-9s | %12.2fx | %6.2fs |\n",
             100 * dens[d], th, t[0], t[1], t[2], t[3],
             rt_cpu_layer_dense(bk[2], 0) ? "dense" : "JIT", t[0] / t[3],
             st.emit_s + st.compile_s);
      fflush(stdout);
    }
    /* the forced-JIT backend, 1 thread: runs after SGD steps that do not
     * and do write the forward's packing, alternately */
    cp[d][0] = cp[d][1] = cp[d][2] = cp[d][3] = 1e30;
    L->b = bk[0], L->v = 0;
    for (int r = 0; r < 2 * REPS && bk[0]->wgrad_index(bk[0], 0, &(size_t){0}); r++) {
      double sgd, u = run_after(L, 1, 1, r % 2, &sgd);
      cp[d][r % 2] = fmin(cp[d][r % 2], sgd), cp[d][2 + r % 2] = fmin(cp[d][2 + r % 2], u);
    }
    for (int v = 0; v < 3; v++) bk[v]->free(bk[v]);
  }
  if (!L->conv) {
    printf("\n%s, the SGD step between two runs (1 thread, JIT sparse, seconds, best of %d): "
           "packed, and packed writing the new weights into the forward kernel's packing "
           "too, which the next run then does not make again\n", title, REPS);
    printf("| density | SGD step | SGD step + copy | run after the first | run after the "
           "second | saved a step |\n");
    printf("|--------:|---------:|----------------:|--------------------:|-----------------"
           "------:|-------------:|\n");
    for (int d = 0; d < 6; d++)
      printf("| %6.0f%% | %8.5f | %15.5f | %19.5f | %22.5f | %12.5f |\n", 100 * dens[d], cp[d][0],
             cp[d][1], cp[d][2], cp[d][3], cp[d][0] + cp[d][2] - cp[d][1] - cp[d][3]);
  }
  free(wm), free(bm), free(L->x), free(L->dx), free(L->dy), free(L->y), free(L->wt), free(L->bias);
  free(L->mom);
  for (int t = 0; t < 2; t++) free(L->dw[t]), free(L->db[t]), free(L->col[t]);
}

int main(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : ""; /* "conv" or "linear": just that one */
  openblas_set_num_threads(1);
  /* "conv CIN HW COUT": another conv shape (3x3, stride 1, pad 1) */
  int cin = argc == 5 ? atoi(argv[2]) : 64, hw = argc == 5 ? atoi(argv[3]) : 14,
      cout = argc == 5 ? atoi(argv[4]) : 64;
  if ((argc > 2 && (argc != 5 || strcmp(only, "conv") != 0)) || cin < 1 || hw < 3 || cout < 1 ||
      cin > 4096 || hw > 512 || cout > 4096) {
    fprintf(stderr, "usage: layer_bench [conv [CIN HW COUT] | linear]\n");
    return 2;
  }
  lay c = {.conv = 1, .cin = cin, .h = hw, .w = hw, .cout = cout, .k = 3, .pad = 1, .oh = hw,
           .ow = hw, .n = 128};
  char title[96];
  snprintf(title, sizeof title, "conv 3x3 %d->%d at %dx%d, stride 1, pad 1", cin, cout, hw, hw);
  if (strcmp(only, "linear") != 0) bench(&c, title);
  lay l = {.conv = 0, .in = 3136, .out = 512, .cin = 3136, .cout = 512, .k = 1, .h = 1, .w = 1, .oh = 1, .ow = 1, .n = 128};
  if (strcmp(only, "conv") != 0) bench(&l, "linear 3136->512");
  return 0;
}
