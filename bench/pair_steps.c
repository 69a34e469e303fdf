/* pair_steps: what a training step of model A costs against one of model
 * B, measured in one process: the two models' steps in turn, on the same
 * batches, so that the machine's drift (a VM's speed moves from one
 * minute to the next, and its two vCPUs run at different speeds) falls
 * on both alike. Each round makes BURST batches of the training set (in
 * order, from A's data statement) and gives each model a turn of BURST
 * steps on them, A first in even rounds and B first in odd ones; a turn
 * begins after a pause of PAUSE_US (so that the other model's pool has
 * gone to sleep: its workers spin a third of a millisecond after a job,
 * runtime/pool.c), and its steps then follow each other as in training.
 * The first step of a turn finds the caches as the other model left
 * them; with BURST > 1 it is not counted, and a round's time for a
 * model is the median of its turn's others. A step is
 * rt_exec_train_step alone (forward, loss, backward, SGD), as --profile
 * times it; the graph is interpreted (no ilnasc driver).
 *
 * Prints each model's median step and middle half (of the rounds'
 * times), A's step less B's as a share of A's (from the medians), the
 * rounds' own shares (median and middle half), and the medians' share in
 * each quarter of the rounds: the spread of those four is what the
 * figure is good to. With --profile, each model's profile table of the
 * counted steps after (rt_exec_profile: each op timed, so the steps
 * themselves run a little slower).
 *
 * usage: pair_steps [--rounds N] [--burst N] [--warmup N] [--threads T]
 *                   [--backend B] [--data DIR] [--profile] A.ilnas B.ilnas
 * bench/README.md: batch norm's share of a step. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/run.h"
#include "frontend/spec.h"
#include "runtime/exec.h"

enum { PAUSE_US = 2000 };

typedef struct side {
  const char *path;
  ir_graph *g;
  rt_exec *x;
  double *ms; /* per counted round */
} side;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

static void pause_us(long us) {
  struct timespec t = {us / 1000000, us % 1000000 * 1000};
  while (nanosleep(&t, &t) && errno == EINTR) {}
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The q-quantile (0..1, linear between order statistics) of v[0..n),
 * sorted in place. */
static double quantile(double *v, long n, double q) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  double at = q * (double)(n - 1);
  long i = (long)at;
  return i + 1 < n ? v[i] + (at - (double)i) * (v[i + 1] - v[i]) : v[i];
}

static double median_of(const double *v, long n, double *tmp) {
  memcpy(tmp, v, (size_t)n * sizeof *v);
  return quantile(tmp, n, 0.5);
}

/* s->path's model parsed, lowered and made an exec on backend for
 * batches of `batch` (0: the model's own), its parameters drawn and its
 * kernels prepared; 0, or -1 after a message. */
static int side_open(side *s, int batch, int threads, const char *backend) {
  fe_model m;
  char err[1024];
  if (fe_parse_file(s->path, &m, stderr)) return -1;
  s->g = ir_build(&m, stderr);
  fe_model_free(&m);
  if (!s->g) return -1;
  if (s->g->cfg.n_tasks) {
    fprintf(stderr, "error: %s: a multi-task model; pair_steps runs single-task ones\n", s->path);
    return -1;
  }
  s->x = rt_exec_new(s->g, batch ? batch : s->g->cfg.batch, threads, backend, err, sizeof err);
  if (!s->x) {
    fprintf(stderr, "error: %s: %s\n", s->path, err);
    return -1;
  }
  rt_exec_init_params(s->x, 1);
  if (rt_exec_prepare(s->x, err, sizeof err)) {
    fprintf(stderr, "error: %s: %s\n", s->path, err);
    return -1;
  }
  return 0;
}

/* One training step of s on the batch; its wall time in *ms. 0, or -1
 * after a message. */
static int side_step(side *s, const float *xb, const ir_label *yb, int n, double *ms) {
  const fe_model *m = &s->g->cfg;
  char err[1024];
  rt_exec_set_input(s->x, xb, n);
  double t0 = now_ms();
  double loss = rt_exec_train_step(s->x, yb, (float)m->lr, (float)m->momentum, (float)m->decay,
                                   NULL);
  *ms = now_ms() - t0;
  if (rt_exec_status(s->x, err, sizeof err)) {
    fprintf(stderr, "error: %s: %s\n", s->path, err);
    return -1;
  }
  if (!isfinite(loss)) {
    fprintf(stderr, "error: %s: the training loss diverged (lr %g)\n", s->path, m->lr);
    return -1;
  }
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: pair_steps [options] A.ilnas B.ilnas\n"
          "Times training steps of models A and B in turn, on the same batches, and prints\n"
          "A's step less B's as a share of A's. Both train on A's data at A's batch size\n"
          "(or --batch's), each with its own learning rate, momentum and decay (a constant\n"
          "rate).\n"
          "  --rounds N    rounds counted, each a turn of each model (default 100)\n"
          "  --burst N     steps in a turn, the first not counted if N > 1 (default 4)\n"
          "  --warmup N    rounds first, not counted (default 5)\n"
          "  --threads T   worker threads of each model (default 2)\n"
          "  --batch N     images a step (default: A's train statement's)\n"
          "  --backend B   cpu, blas, ref, auto (default cpu)\n"
          "  --data DIR    the data set (default: A's data statement's)\n"
          "  --profile     each model's table of its layers' times after\n");
}

static int int_arg(const char *name, const char *v, int lo, int *out) {
  char *end;
  errno = 0;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || *end || n < lo || n > 1000000) {
    fprintf(stderr, "error: %s needs a whole number of at least %d\n", name, lo);
    return -1;
  }
  *out = (int)n;
  return 0;
}

int main(int argc, char **argv) {
  int rounds = 100, burst = 4, warmup = 5, threads = 2, batch = 0;
  const char *backend = "cpu", *data = NULL;
  side sd[2] = {{0}, {0}};
  int files = 0, rc = 1, profile = 0;
  const struct {
    const char *name;
    int lo, *v;
  } ints[] = {{"--rounds", 1, &rounds}, {"--burst", 1, &burst}, {"--warmup", 0, &warmup},
              {"--threads", 1, &threads}, {"--batch", 1, &batch}};
  const int n_ints = (int)(sizeof ints / sizeof *ints);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int o = 0;
    while (o < n_ints && strcmp(a, ints[o].name)) o++;
    if (o < n_ints) {
      if (int_arg(a, v, ints[o].lo, ints[o].v)) return 2;
      i++;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--profile")) {
      profile = 1;
    } else if (!strcmp(a, "--backend") || !strcmp(a, "--data")) {
      if (!v) {
        fprintf(stderr, "error: %s needs a value\n", a);
        return 2;
      }
      *(a[2] == 'b' ? &backend : &data) = v, i++;
    } else if (a[0] == '-' || files == 2) {
      fprintf(stderr, "error: unexpected argument '%s'\n", a);
      usage(stderr);
      return 2;
    } else {
      sd[files++].path = a;
    }
  }
  if (files != 2) {
    usage(stderr);
    return 2;
  }
  rt_dataset train = {0}, test = {0};
  double *tmp = NULL;
  float *xb = NULL;
  ir_label *yb = NULL;
  int *idx = NULL;
  /* both models on A's batch (or --batch) and A's data */
  if (side_open(&sd[0], batch, threads, backend)) goto out;
  if (!batch) batch = sd[0].g->cfg.batch;
  if (side_open(&sd[1], batch, threads, backend)) goto out;
  const fe_model *m0 = &sd[0].g->cfg, *m1 = &sd[1].g->cfg;
  if (m0->in_c != m1->in_c || m0->in_h != m1->in_h || m0->in_w != m1->in_w ||
      m0->classes != m1->classes) {
    fprintf(stderr, "error: %s and %s differ in their input or classes\n", sd[0].path,
            sd[1].path);
    goto out;
  }
  if (run_load_data(sd[0].g, data, 0, 2, 0, &train, &test)) goto out;
  if (train.src) {
    fprintf(stderr, "error: %s: an image folder; pair_steps reads data sets held in memory\n",
            data ? data : m0->data_path);
    goto out;
  }
  rt_norm nm;
  rt_data_norm(&train, &nm);
  size_t img = (size_t)train.c * train.h * train.w;
  xb = malloc((size_t)burst * batch * img * sizeof *xb);
  yb = malloc((size_t)burst * batch * sizeof *yb);
  idx = malloc((size_t)batch * sizeof *idx);
  tmp = malloc((size_t)(rounds > burst ? rounds : burst) * sizeof *tmp);
  for (int k = 0; k < 2; k++) sd[k].ms = malloc((size_t)rounds * sizeof *sd[k].ms);
  if (!xb || !yb || !idx || !tmp || !sd[0].ms || !sd[1].ms) {
    fprintf(stderr, "error: out of memory\n");
    goto out;
  }
  int n = batch < train.n ? batch : train.n, tty = isatty(2);
  rt_rng rng;
  rt_rng_seed(&rng, 1);
  fprintf(stderr, "%d rounds (after %d) of %d steps a model, batch %d, %d threads, backend %s: "
          "%s against %s\n", rounds, warmup, burst, n, threads, backend, sd[0].path, sd[1].path);
  for (int r = 0; r < warmup + rounds; r++) {
    if (profile && r == warmup)
      for (int k = 0; k < 2; k++)
        if (rt_exec_profile(sd[k].x)) {
          fprintf(stderr, "error: out of memory\n");
          goto out;
        }
    for (int b = 0; b < burst; b++) {
      for (int k = 0; k < n; k++) idx[k] = (int)((((long)r * burst + b) * n + k) % train.n);
      rt_data_batch(&train, idx, n, &nm, 0, 0, &rng, xb + (size_t)b * n * img, yb + b * n);
    }
    for (int t = 0; t < 2; t++) {
      int k = (r + t) % 2; /* A first in even rounds */
      pause_us(PAUSE_US);
      for (int b = 0; b < burst; b++) {
        int skip = burst > 1 && b == 0; /* after the other model's turn */
        if (profile && r >= warmup) rt_exec_profile_pause(sd[k].x, skip);
        if (side_step(&sd[k], xb + (size_t)b * n * img, yb + b * n, n, &tmp[b])) goto out;
      }
      if (r < warmup) continue;
      sd[k].ms[r - warmup] = quantile(tmp + (burst > 1), burst > 1 ? burst - 1 : 1, 0.5);
    }
    if (tty && r % 16 == 0)
      fprintf(stderr, "\rround %d/%d ", r + 1, warmup + rounds);
  }
  if (tty) fprintf(stderr, "\r%*s\r", 24, "");
  double med[2];
  for (int k = 0; k < 2; k++) {
    memcpy(tmp, sd[k].ms, (size_t)rounds * sizeof *tmp);
    med[k] = quantile(tmp, rounds, 0.5);
    printf("%s %s: median %.2f ms/step, middle half %.2f-%.2f\n", k ? "B" : "A", sd[k].path,
           med[k], quantile(tmp, rounds, 0.25), quantile(tmp, rounds, 0.75));
  }
  printf("A against B: %.3fx; A's step less B's: %.2f ms, %.1f%% of A's (medians)\n",
         med[0] / med[1], med[0] - med[1], 100 * (med[0] - med[1]) / med[0]);
  for (int r = 0; r < rounds; r++) tmp[r] = 100 * (sd[0].ms[r] - sd[1].ms[r]) / sd[0].ms[r];
  double q1 = quantile(tmp, rounds, 0.25), q3 = quantile(tmp, rounds, 0.75);
  printf("the rounds' own shares: median %.1f%%, middle half %.1f%% to %.1f%%\n",
         quantile(tmp, rounds, 0.5), q1, q3);
  if (rounds >= 8) {
    printf("by quarters of the rounds (medians' share):");
    for (int q = 0; q < 4; q++) {
      long lo = (long)rounds * q / 4, len = (long)rounds * (q + 1) / 4 - lo;
      double a = median_of(sd[0].ms + lo, len, tmp), b = median_of(sd[1].ms + lo, len, tmp);
      printf(" %.1f%%", 100 * (a - b) / a);
    }
    printf("\n");
  }
  for (int k = 0; profile && k < 2; k++) {
    printf("\n%s %s:\n", k ? "B" : "A", sd[k].path);
    rt_exec_profile_report(sd[k].x, stdout, (long)rounds * (burst > 1 ? burst - 1 : 1));
  }
  rc = 0;
out:
  for (int k = 0; k < 2; k++) {
    if (sd[k].x) rt_exec_free(sd[k].x);
    if (sd[k].g) ir_free(sd[k].g);
    free(sd[k].ms);
  }
  rt_dataset_free(&train);
  rt_dataset_free(&test);
  free(xb), free(yb), free(idx), free(tmp);
  return rc;
}
