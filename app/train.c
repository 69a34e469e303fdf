/* train.c: the training loop, evaluation, and what a checkpoint holds.
 *
 * app_train is a pipeline of stages over one train_run:
 *   setup            data, buffers, execution state (fresh_exec or
 *                    resume_exec), search state, metrics file
 *   per epoch:
 *     train_epoch    phase I: SGD over the shuffled set, progress line
 *     test_epoch     the test set, the metrics and terminal lines
 *     grow           phase II when due, its log line, kernels for the new α
 *     checkpoint     last.ckpt; stop_here for --stop-after
 *   finish           final.ckpt and the closing JSON line (or
 *                    report_stopped), then teardown
 */
#include "app/train.h"
#include "app/run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/hash.h"
#include "runtime/ckpt.h"
#include "runtime/data.h"
#include "search/search.h"

void app_train_opts_default(app_train_opts *o) {
  memset(o, 0, sizeof *o);
  o->epochs = -1;
  o->freeze_last = -1;
  o->seed = -1;
  o->search = -1;
  o->run_dir = "run";
}

double run_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int app_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

int run_threads(const app_train_opts *o) {
  int per_rank = app_default_threads() / rt_comm_local_size(o->comm);
  return o->threads > 0 ? o->threads : per_rank > 0 ? per_rank : 1;
}

int run_ranks_check(const app_train_opts *o, const char *backend, int batch) {
  int ranks = rt_comm_size(o->comm);
  if (ranks > 1 && strncmp(backend, "cuda", 4) == 0) {
    fprintf(stderr, "error: a data-parallel run (%d ranks) trains on the CPU backends (cpu, "
            "blas, ref); on the GPU it is not built yet\n", ranks);
    return -1;
  }
  if (ranks > batch) {
    fprintf(stderr, "error: %d ranks split batches of %d images: each rank needs an image of "
            "every batch (at most %d ranks)\n", ranks, batch, batch);
    return -1;
  }
  return 0;
}

int run_steps(int n, int batch, const rt_comm *c) {
  int steps = (n + batch - 1) / batch, tail = n % batch;
  return tail > 0 && tail < rt_comm_size(c) ? steps - 1 : steps;
}

int run_ranks_agree(const app_train_opts *o, const int64_t *v, int n) {
  uint64_t h = base_fnv(BASE_FNV_SEED, v, (size_t)n * sizeof *v);
  char err[512];
  int same;
  uint64_t h0 = h;
  if (rt_comm_same(o->comm, h, &same, err, sizeof err) ||
      rt_comm_bcast(o->comm, &h0, sizeof h0, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  if (!same && h != h0)
    fprintf(stderr, "error: the ranks start different runs: rank %d's data, options or checkpoint "
            "are not rank 0's\n", rt_comm_rank(o->comm));
  else if (!same)
    fprintf(stderr, "error: the ranks start different runs: another rank's data, options or "
            "checkpoint are not rank 0's\n");
  return same ? 0 : -1;
}

FILE *run_open_metrics(const app_train_opts *o, int epoch, char *path, size_t len) {
  if (rt_comm_rank(o->comm) > 0) { /* rank 0 writes the run directory */
    snprintf(path, len, "/dev/null");
    FILE *f = fopen(path, "w");
    if (!f) fprintf(stderr, "error: cannot write '/dev/null': %s\n", strerror(errno));
    return f;
  }
  if (run_make_dir(o->run_dir)) return NULL;
  snprintf(path, len, "%s/metrics.jsonl", o->run_dir);
  if (o->resume && run_trim_metrics(path, epoch)) {
    fprintf(stderr, "error: cannot trim '%s' to epoch %d: %s\n", path, epoch, strerror(errno));
    return NULL;
  }
  FILE *f = fopen(path, o->resume ? "a" : "w");
  if (!f) fprintf(stderr, "error: cannot write '%s': %s\n", path, strerror(errno));
  return f;
}

static rt_data_format data_format(fe_data d) {
  switch (d) {
  case FE_DATA_CIFAR10: return RT_DATA_CIFAR10;
  case FE_DATA_STL10: return RT_DATA_STL10;
  case FE_DATA_DIGITS_CSV: return RT_DATA_DIGITS_CSV;
  case FE_DATA_FOLDER: return RT_DATA_FOLDER;
  case FE_DATA_DOWNSAMPLED: return RT_DATA_DOWNSAMPLED;
  case FE_DATA_IDX: break;
  }
  return RT_DATA_IDX;
}

/* Loads both splits and checks they fit the model's input and classes. An
 * image folder is listed and its files checked on `threads` threads, bad
 * ones skipped (and reported) with skip_bad; train_limit > 0 keeps that many
 * training images, cut before the input adapters run. */
int run_load_data(const ir_graph *g, const char *path, int skip_bad, int threads,
                     int train_limit, rt_dataset *train, rt_dataset *test) {
  const fe_model *m = &g->cfg;
  char err[2048];
  if (!path) path = m->data_path;
  /* a label the model cannot predict names its file and record */
  rt_data_opts dopt = {.fmt = data_format(m->data), .path = path, .split = m->test_split,
                       .classes = m->classes, .c = m->in_c, .h = m->in_h, .w = m->in_w,
                       .resize_h = m->resize_h, .resize_w = m->resize_w,
                       .channels = m->channels, .train_limit = train_limit,
                       .skip_bad = skip_bad, .threads = threads, .log = stderr};
  if (rt_data_open(&dopt, train, test, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  if (train->c != m->in_c || train->h != m->in_h || train->w != m->in_w) {
    /* The adapters that would make them meet, as the data statement takes them. */
    char fix[96] = "";
    int c3 = (train->c == 1 && m->in_c == 3) || (train->c == 3 && m->in_c == 1);
    if (train->h != m->in_h || train->w != m->in_w)
      snprintf(fix, sizeof fix, "resize %dx%d", m->in_h, m->in_w);
    if (train->c != m->in_c && c3)
      snprintf(fix + strlen(fix), sizeof fix - strlen(fix), "%schannels %d", fix[0] ? " " : "",
               m->in_c);
    fprintf(stderr,
            "error: %s: the %s images are %dx%dx%d but model '%s' expects "
            "input %dx%dx%d%s%s%s\n",
            path, fe_data_name(m->data), train->c, train->h, train->w, m->name,
            m->in_c, m->in_h, m->in_w, fix[0] ? "; add '" : "", fix,
            fix[0] ? "' to its data statement" : "");
  } else if (train->src && train->classes > m->classes) {
    fprintf(stderr, "error: %s: %d class folders but model '%s' has %d classes\n", path,
            train->classes, m->name, m->classes);
  } else if (train->classes > m->classes || test->classes > m->classes) {
    fprintf(stderr, "error: %s: labels go up to %d but model '%s' has %d classes\n",
            path, (train->classes > test->classes ? train->classes : test->classes) - 1,
            m->name, m->classes);
  } else {
    return 0;
  }
  rt_dataset_free(train);
  rt_dataset_free(test);
  return -1;
}

/* The data's class names, one per line, in *out (NULL for formats without
 * names). 0, or -1 after a message. */
int run_class_list(const rt_dataset *d, char **out) {
  size_t len = 0;
  *out = NULL;
  if (!rt_data_class_name(d, 0)) return 0;
  for (int k = 0; k < d->classes; k++) len += strlen(rt_data_class_name(d, k)) + 1;
  char *s = malloc(len + 1);
  if (!s) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  s[0] = 0;
  for (int k = 0, at = 0; k < d->classes; k++)
    at += sprintf(s + at, "%s\n", rt_data_class_name(d, k));
  *out = s;
  return 0;
}

/* A checkpoint trained on named classes runs only on data with the same
 * names in the same order: otherwise its outputs mean other classes. 0,
 * or -1 after a message naming the first difference. */
static int check_classes(const char *ckpt, const char *have, const char *data) {
  char *want = NULL, err[1024];
  if (app_ckpt_classes(ckpt, &want, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  if (!want || !have || strcmp(want, have) == 0) {
    free(want);
    return 0;
  }
  const char *a = want, *b = have;
  int k = 0;
  for (;;) { /* the first line that differs */
    size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
    if (la != lb || memcmp(a, b, la) != 0 || !a[la] || !b[lb]) {
      fprintf(stderr, "error: %s was trained on other classes than %s holds: class %d is "
              "'%.*s' in the checkpoint and '%.*s' in the data (the labels would mean other "
              "classes)\n", ckpt, data, k, (int)la, a, (int)lb, b);
      break;
    }
    a += la + 1, b += lb + 1, k++;
  }
  free(want);
  return -1;
}

/* Accuracy and mean loss over a data set, in inference mode; an image
 * folder is decoded on `loaders` threads. */
double run_evaluate(rt_exec *x, const rt_dataset *d, const rt_norm *nm, int limit,
                       int loaders, double *loss) {
  int n = limit > 0 && limit < d->n ? limit : d->n, cap = x->cap, correct = 0;
  if (n == 0) {
    *loss = 0;
    return 0;
  }
  double total = 0;
  char err[1024];
  /* with ranks, each evaluates its part of the images (comm.h) */
  int lo, hi, *part = NULL;
  rt_comm_part(x->comm, n, &lo, &hi);
  if (hi - lo < n) {
    if (!(part = malloc((size_t)(hi - lo + 1) * sizeof *part))) {
      fprintf(stderr, "error: evaluating: out of memory\n");
      *loss = NAN;
      return NAN;
    }
    for (int i = lo; i < hi; i++) part[i - lo] = i;
  }
  rt_stream *s = rt_stream_new(d, nm, cap, 0, 0, loaders, 3, err, sizeof err);
  if (!s) {
    fprintf(stderr, "error: evaluating: %s\n", err);
    free(part);
    *loss = NAN;
    return NAN;
  }
  rt_stream_epoch(s, part, hi - lo, NULL);
  free(part);
  rt_exec_set_training(x, 0);
  const float *buf;
  const ir_label *lab;
  int b, rc;
  while ((rc = rt_stream_next(s, &buf, &lab, &b, err, sizeof err)) == 0) {
    int c = 0;
    rt_exec_set_input(x, buf, b);
    rt_exec_forward(x);
    total += rt_exec_loss(x, lab, 0, &c) * b;
    correct += c;
  }
  rt_exec_set_training(x, 1);
  rt_stream_free(s);
  double sums[2] = {total, correct};
  if (rc < 0 || rt_exec_status(x, err, sizeof err) || rt_comm_sum_d(x->comm, sums, 2, err, sizeof err)) {
    fprintf(stderr, "error: evaluating: %s\n", err);
    *loss = NAN;
    return NAN;
  }
  total = sums[0], correct = (int)sums[1];
  *loss = total / n;
  if (!isfinite(*loss)) {
    fprintf(stderr, "error: evaluating: the test loss is not finite (the network "
            "diverged)\n");
    *loss = NAN;
    return NAN;
  }
  return (double)correct / n;
}

float run_lr_at(const fe_model *m, double lr, int epochs, int epoch, double frac) {
  double t = epoch + frac;
  switch (m->sched) {
  case FE_SCHED_COSINE: return (float)(lr * 0.5 * (1 + cos(3.14159265358979323846 * t / epochs)));
  case FE_SCHED_STEP: return (float)(lr * pow(m->step_gamma, epoch / m->step_every));
  case FE_SCHED_CONSTANT: break;
  }
  return (float)lr;
}

int run_make_dir(const char *dir) {
  if (mkdir(dir, 0777) == 0 || errno == EEXIST) return 0;
  fprintf(stderr, "error: cannot create run directory '%s': %s\n", dir,
          strerror(errno));
  return -1;
}

/* --profile's step times (run.h). */
int run_step_time(run_step_times *t, double ms) {
  if (t->n >= t->cap) {
    long cap = t->cap ? 2 * t->cap : 256;
    double *v = realloc(t->ms, (size_t)cap * sizeof *v);
    if (!v) {
      fprintf(stderr, "error: out of memory for the profile's step times\n");
      return -1;
    }
    t->ms = v, t->cap = cap;
  }
  t->ms[t->n++] = ms;
  return 0;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void run_step_times_report(const run_step_times *t, FILE *f) {
  long n = t->n;
  double *v = n > 0 ? malloc((size_t)n * sizeof *v) : NULL;
  if (!v) return;
  memcpy(v, t->ms, (size_t)n * sizeof *v);
  qsort(v, (size_t)n, sizeof *v, by_value);
  double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  fprintf(f, "steps: median %.3f ms, middle half %.3f to %.3f ms, fastest %.3f ms, "
          "slowest %.3f ms (%ld steps of a whole batch)\n",
          med, v[n / 4], v[n - 1 - n / 4], v[0], v[n - 1], n);
  free(v);
}

void run_shuffle(int *idx, int n, rt_rng *rng) {
  for (int i = 0; i < n; i++) idx[i] = i;
  for (int i = n - 1; i > 0; i--) {
    int j = (int)rt_rng_below(rng, (uint32_t)i + 1), t = idx[i];
    idx[i] = idx[j], idx[j] = t;
  }
}

/* The phase II batches: grow_batches random training batches, without
 * augmentation, drawn from the run's RNG; an image folder's decoded on
 * `loaders` threads. 0, or -1 after a message (a bad file). */
int run_phase2_batches(const fe_model *m, const rt_dataset *d,
                          const rt_norm *nm, int loaders, rt_rng *rng, srch_batches *b,
                          float *xbuf, ir_label *ybuf, int *idx) {
  int n = m->batch < d->n ? m->batch : d->n;
  size_t img = (size_t)d->c * d->h * d->w;
  char err[1024];
  rt_stream *s = d->src ? rt_stream_new(d, nm, n, 0, 0, loaders, 2, err, sizeof err) : NULL;
  if (d->src && !s) {
    fprintf(stderr, "error: phase II: %s\n", err);
    return -1;
  }
  for (int k = 0; k < m->grow_batches; k++) {
    for (int i = 0; i < n; i++) idx[i] = (int)rt_rng_below(rng, (uint32_t)d->n);
    if (!s) {
      rt_data_batch(d, idx, n, nm, 0, 0, NULL, xbuf + (size_t)k * n * img,
                    ybuf + (size_t)k * n);
      continue;
    }
    const float *sx;
    const ir_label *sy;
    int got;
    rt_stream_epoch(s, idx, n, NULL);
    if (rt_stream_next(s, &sx, &sy, &got, err, sizeof err)) {
      fprintf(stderr, "error: phase II: %s\n", err);
      rt_stream_free(s);
      return -1;
    }
    memcpy(xbuf + (size_t)k * n * img, sx, (size_t)n * img * sizeof(float));
    memcpy(ybuf + (size_t)k * n, sy, (size_t)n * sizeof *sy);
  }
  rt_stream_free(s);
  *b = (srch_batches){m->grow_batches, n, xbuf, ybuf};
  return 0;
}

void run_log_expand(FILE *f, const ir_graph *g, const char *task, int epoch,
                    const srch_event *ev, double secs) {
  /* the caller has checked that both losses are finite */
  fprintf(f, "{\"event\": \"expand\", ");
  if (task) {
    fprintf(f, "\"task\": ");
    app_json_str(f, task);
    fprintf(f, ", ");
  }
  fprintf(f, "\"epoch\": %d, \"seconds\": %.3f, \"added\": %" PRId64
          ", \"active_params\": %" PRId64 ", \"new_nodes\": %d, \"new_layers\": %d"
          ", \"placeholders\": %d, \"loss_before\": %.6f, \"loss_after\": %.6f"
          ", \"per_layer\": {", epoch, secs, ev->added, ev->active, ev->new_nodes,
          ev->new_layers, ev->placeholders, ev->loss_before, ev->loss_after);
  int first = 1;
  for (int i = 0; i < g->n_layers; i++)
    if (ev->per_layer && ev->per_layer[i]) {
      fputs(first ? "" : ", ", f);
      app_json_str(f, g->layers[i].name);
      fprintf(f, ": %" PRId64, ev->per_layer[i]);
      first = 0;
    }
  fprintf(f, "}}\n");
}

/* The state of one training run, handed from stage to stage. */
typedef struct train_run {
  ir_graph *g;
  const fe_model *m;       /* &g->cfg */
  const app_train_opts *o;
  int epochs, threads;     /* resolved from the options and the model */
  double lr;               /* the schedule's base learning rate: --lr or the model's */
  int draws;               /* a set in memory: passes begin from its draws (the
                            * backend keeps it where it can, or the exec makes
                            * the images) */
  int kept;                /* the backend keeps the set: it makes the images */
  srch_schedule sched;     /* when phase II runs */
  fe_search method;
  const char *backend;     /* resolved */
  rt_dataset train, test;
  rt_norm nm;              /* input normalisation, = st.norm */
  rt_exec *x;
  app_train_state st;       /* what a checkpoint records */
  srch_state ss;
  int have_srch;           /* ss is initialised */
  int *order;              /* train.n: the epoch's order, phase II's draws */
  float *pbuf;             /* phase II's batches */
  ir_label *plab;          /* their labels */
  FILE *metrics;           /* run_dir/metrics.jsonl */
  char mpath[4096];        /* its name */
  char path[4096];         /* the file last opened or saved */
  char budget[32];         /* the model's budget, for the terminal */
  int tty;                 /* progress lines on a terminal */
  int steps;               /* SGD steps per epoch */
  double t0;               /* when training started, for the report */
  int64_t active;          /* active parameters, for the terminal */
  double test_acc;         /* the last epoch's */
  int tested;              /* test_acc holds a value */
  long profiled;           /* training steps timed */
  double first_ms;         /* --profile: the run's first step, left out of
                            * the table (its arenas' pages touched first);
                            * 0 while it has not run or was timed */
  int loaders;             /* threads that decode an image folder */
  rt_stream *stream;       /* the training batches */
  char *classes;           /* the data's class names, one per line, or NULL */
  double train_secs;       /* the training steps of every epoch, for --profile */
  run_step_times times;    /* --profile: the timed steps of a whole batch */
  int same_head;           /* --from: the checkpoint's classifier carried over */
  double from_acc;         /* --from with the same classes: test accuracy before training */
  int at_chance;           /* epochs in a row that ended at chance (chance_warning) */
} train_run;

/* What one epoch of phase I measured. */
typedef struct epoch_stats {
  int ep;                  /* the epoch's index, from 0 */
  double start;            /* run_now() when it began */
  int seen, correct;       /* training images and correct predictions */
  double train_secs;       /* the steps alone */
  double train_loss;       /* the mean */
} epoch_stats;

/* A resumed run: the checkpoint's architecture replaces the binary's seed;
 * the state is loaded on the reference backend (nothing to compile) and
 * copied into an execution state built on the binary's own graph. The
 * checkpoint's training state goes to *st. */
static rt_exec *resume_exec(ir_graph *g, const char *resume, int threads,
                            const char *backend, app_train_state *st) {
  const fe_model *m = &g->cfg;
  char err[1024];
  rt_exec *x;
  ir_graph *cg = NULL;
  rt_exec *cx = NULL;
  if (app_ckpt_load(resume, 1, 1, "ref", &cg, &cx, st, err, sizeof err) ||
      app_ir_compatible(g, cg, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    rt_exec_free(cx), ir_free(cg);
    return NULL;
  }
  x = run_exec_like(g, cx, m->batch, threads, backend, err, sizeof err);
  rt_exec_free(cx), ir_free(cg);
  if (!x) fprintf(stderr, "error: %s\n", err);
  return x;
}

rt_exec *run_exec_like(const ir_graph *g, const rt_exec *cx, int cap, int threads,
                       const char *backend, char *err, size_t errlen) {
  rt_exec *x = rt_exec_new(g, cap, threads, backend, err, errlen);
  if (!x) return NULL;
  if (rt_exec_set_arch(x, cx->arch, err, errlen)) {
    rt_exec_free(x);
    return NULL;
  }
  /* the active values only: the others are 0 on both sides, and a wide
   * template's pages of them stay out of the resident set */
  int64_t na = ir_count_active_bits(cx->arch, g->n_params);
  float *v = malloc(2 * (size_t)(na ? na : 1) * sizeof *v);
  if (!v) {
    snprintf(err, errlen, "out of memory");
    rt_exec_free(x);
    return NULL;
  }
  rt_exec_active_values(cx, RT_PARAMS, v);
  rt_exec_active_values(cx, RT_MOMENTUM, v + na);
  for (int w = 0; w < 2; w++) {
    float *d = w ? rt_exec_edit(x, RT_MOMENTUM) : rt_exec_params_write(x);
    int64_t k = 0;
    for (int64_t i = ir_alpha_next(cx->arch, 0, g->n_params); i < g->n_params;
         i = ir_alpha_next(cx->arch, i + 1, g->n_params))
      d[i] = v[w * na + k++];
  }
  free(v);
  memcpy(rt_exec_edit(x, RT_STATS), rt_exec_view(cx, RT_STATS), (size_t)g->n_stats * sizeof(float));
  return x;
}

/* A fresh run: the binary's seed architecture, weights drawn from the
 * run's seed. */
static rt_exec *fresh_exec(ir_graph *g, const app_train_opts *o, int threads,
                           const char *backend, app_train_state *st) {
  const fe_model *m = &g->cfg;
  char err[1024];
  rt_exec *x = rt_exec_new(g, m->batch, threads, backend, err, sizeof err);
  if (!x) {
    fprintf(stderr, "error: %s\n", err);
    return NULL;
  }
  st->seed = o->seed >= 0 ? (uint64_t)o->seed : m->seed;
  rt_rng_seed(&st->rng, st->seed * 2 + 1);
  rt_exec_init_params(x, st->seed);
  st->alr = m->alr;
  return x;
}

/* --from: a fresh run that starts from a trained checkpoint's network
 * (transfer.c); its input normalisation goes to st->norm. */
static rt_exec *from_exec(ir_graph *g, const app_train_opts *o, int threads,
                          const char *backend, app_train_state *st, int *same_head) {
  char err[2048];
  rt_exec *x = fresh_exec(g, o, threads, backend, st);
  if (x && app_transfer(x, o->from, o->from_task, o->new_head, &st->norm, same_head, err,
                       sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    rt_exec_free(x);
    return NULL;
  }
  return x;
}

/* The search state: a resumed run's from its checkpoint; a fresh fixed
 * baseline grown at random to the budget (a transferred one trains as it
 * came); a fresh search's placeholders. */
static int start_search(train_run *r) {
  const fe_model *m = r->m;
  if (srch_init(&r->ss, r->g, r->method, r->st.seed)) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  r->have_srch = 1;
  if (r->o->resume) {
    r->ss.alr = r->st.alr, r->ss.expansions = r->st.expansions, r->ss.rng = r->st.srng;
  } else if (r->method == FE_SEARCH_FIXED && m->budget != INT64_MAX && !r->o->from) {
    /* the fixed baseline: the same final size, grown at random, frozen */
    srch_event ev = {0};
    ir_count c = ir_count_params(r->g, r->x->arch);
    srch_grow_random(&r->ss, r->x, m->budget - c.active, &ev);
    rt_exec_init_params(r->x, r->st.seed); /* a static network starts from scratch */
  } else if (r->method != FE_SEARCH_FIXED) {
    srch_refill(&r->ss, r->x);
  }
  return 0;
}

/* The epoch a metrics line belongs to (its "epoch" field), or -1. */
static long line_epoch(const char *line, size_t n) {
  static const char key[] = "\"epoch\": ";
  size_t k = sizeof key - 1;
  for (size_t i = 0; i + k < n; i++)
    if (memcmp(line + i, key, k) == 0) return strtol(line + i + k, NULL, 10);
  return -1;
}

/* A resumed run's metrics.jsonl: a run killed after an epoch's lines but
 * before that epoch's last.ckpt left lines the resumed run writes again, so
 * the file is cut before the first line past the checkpoint's epoch (and
 * before an unfinished last line). */
int run_trim_metrics(const char *path, int epoch) {
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? 0 : -1;
  char *line = NULL;
  size_t cap = 0, keep = 0;
  for (;;) {
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF) {
      if (n + 2 > cap) {
        char *t = realloc(line, cap = cap ? 2 * cap : 256);
        if (!t) { free(line); fclose(f); errno = ENOMEM; return -1; }
        line = t;
      }
      line[n++] = (char)c;
      if (c == '\n') break;
    }
    if (n == 0 || line[n - 1] != '\n' || line_epoch(line, n) > epoch) break;
    keep += n;
  }
  int bad = ferror(f);
  free(line);
  fclose(f);
  if (bad) return -1;
  return truncate(path, (off_t)keep);
}

/* The run directory and its metrics.jsonl, appended to by a resumed run
 * (past the checkpoint's epoch trimmed). */
static int open_metrics(train_run *r) {
  r->metrics = run_open_metrics(r->o, r->st.epoch, r->mpath, sizeof r->mpath);
  return r->metrics ? 0 : -1;
}

/* Pushes the metrics lines written so far to the file; a failed write (a
 * full disk) ends the run like a failed checkpoint does. */
static int flush_metrics(train_run *r) {
  errno = 0;
  if (fflush(r->metrics) == 0 && !ferror(r->metrics)) return 0;
  fprintf(stderr, "%serror: writing '%s' failed: %s\n", r->tty ? "\n" : "", r->mpath,
          errno ? strerror(errno) : "I/O error");
  return -1;
}

/* --resume: the checkpoint's seed and search are the run's; an option that
 * names other ones is refused rather than silently ignored or mixed in. */
static int check_resume(train_run *r) {
  const app_train_opts *o = r->o;
  if (o->seed >= 0 && (uint64_t)o->seed != r->st.seed) {
    fprintf(stderr, "error: %s was trained with seed %" PRIu64 ", not --seed %" PRId64
            "; resume without --seed, or start a new run\n", o->resume, r->st.seed,
            o->seed);
    return -1;
  }
  if (r->st.search > 0) {
    fe_search was = (fe_search)(r->st.search - 1);
    if (o->search >= 0 && (fe_search)o->search != was) {
      fprintf(stderr, "error: %s was trained with --search %s, not --search %s; resume "
              "without --search, or start a new run\n", o->resume, fe_search_name(was),
              fe_search_name((fe_search)o->search));
      return -1;
    }
    r->method = was;
  }
  if (r->st.epoch > r->epochs) {
    fprintf(stderr, "error: %s has %d epochs done, more than the %d asked for; resume "
            "with --epochs %d or more\n", o->resume, r->st.epoch, r->epochs, r->st.epoch);
    return -1;
  }
  return 0;
}

/* --from: what carried over, over budget or not, and with the same classes
 * the test accuracy before any training. */
static int report_from(train_run *r) {
  const fe_model *m = r->m;
  if (!r->o->quiet)
    fprintf(stderr, "from %s: %" PRId64 " active parameters, %s classifier\n", r->o->from,
            r->active, r->same_head ? "its" : "a new");
  if (m->budget != INT64_MAX && r->active >= m->budget && r->method != FE_SEARCH_FIXED)
    fprintf(stderr, "warning: the %" PRId64 " active parameters of %s reach the budget of "
            "%" PRId64 ": the network will not grow\n", r->active, r->o->from, m->budget);
  if (!r->same_head) return 0;
  double loss;
  r->from_acc = run_evaluate(r->x, &r->test, &r->nm, 0, r->loaders, &loss);
  if (isnan(r->from_acc)) return -1;
  if (!r->o->quiet)
    fprintf(stderr, "from %s: test %.2f%% before training\n", r->o->from, 100 * r->from_acc);
  return 0;
}

/* Setup: the data, the buffers and schedule, the execution state (fresh
 * or resumed), the search state, the metrics file, the opening line. */
static int setup(train_run *r, ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd,
                 const app_train_opts *o) {
  const fe_model *m = &g->cfg;
  char err[1024], why[512];
  *r = (train_run){.g = g, .m = m, .o = o};
  r->epochs = o->epochs > 0 ? o->epochs : m->epochs;
  r->lr = o->lr > 0 ? o->lr : m->lr;
  r->sched = srch_schedule_of(m, r->epochs, o->freeze_last);
  r->threads = run_threads(o);
  r->method = o->search >= 0 ? (fe_search)o->search : m->method;
  r->backend = rt_backend_resolve(o->backend ? o->backend : APP_DEFAULT_BACKEND, why, sizeof why);
  if (why[0] && !o->quiet) fprintf(stderr, "%s\n", why);

  if (run_ranks_check(o, r->backend, m->batch)) return -1;
  r->loaders = o->loaders > 0 ? o->loaders : r->threads;
  r->from_acc = NAN;
  if (o->from && o->resume) {
    fprintf(stderr, "error: --from starts a new run from a trained checkpoint and --resume "
            "continues a run; give one of them\n");
    return -1;
  }
  if (o->from_task && !o->from) {
    fprintf(stderr, "error: --task names the task of a multi-task checkpoint that --from "
            "starts from; there is no --from\n");
    return -1;
  }
  if (o->new_head && !o->from) {
    fprintf(stderr, "error: --new-head makes a fresh classifier for --from CKPT; there is no "
            "--from\n");
    return -1;
  }
  /* a bad --from is refused before the data is read */
  if (o->from && !(r->x = from_exec(g, o, r->threads, r->backend, &r->st, &r->same_head)))
    return -1;
  if (run_load_data(g, o->data, o->skip_bad, r->loaders, o->train_limit, &r->train, &r->test))
    return -1;
  if (o->train_limit > 0 && o->train_limit < r->train.n)
    rt_dataset_truncate(&r->train, o->train_limit);
  size_t img = (size_t)r->train.c * r->train.h * r->train.w;
  r->order = malloc((size_t)r->train.n * sizeof(int));
  r->pbuf = malloc((size_t)m->grow_batches * m->batch * img * sizeof(float));
  r->plab = malloc((size_t)m->grow_batches * m->batch * sizeof *r->plab);
  if (!r->order || !r->pbuf || !r->plab) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  if (!r->x)
    r->x = o->resume ? resume_exec(g, o->resume, r->threads, r->backend, &r->st)
                     : fresh_exec(g, o, r->threads, r->backend, &r->st);
  if (!r->x) return -1;
  rt_exec_set_comm(r->x, o->comm);
  if (o->resume && check_resume(r)) return -1;
  r->st.search = (int)r->method + 1;
  rt_exec_set_driver(r->x, fwd, bwd);
  /* a resumed run keeps the statistics it started with, and a transferred
   * network the ones it was trained with */
  if (!o->resume && !(o->from && r->st.norm.c == m->in_c)) rt_data_norm(&r->train, &r->st.norm);
  r->nm = r->st.norm;
  if (run_class_list(&r->train, &r->classes) ||
      (o->resume && check_classes(o->resume, r->classes, o->data ? o->data : m->data_path)))
    return -1;
  r->st.classes = r->classes;
  /* a folder's batches are made on the loader threads, a few ahead */
  r->stream = rt_stream_new(&r->train, &r->nm, m->batch, r->train.src ? 1 : m->aug_crop,
                            m->aug_flip, r->train.src ? r->loaders : 0, 3, err, sizeof err);
  if (!r->stream) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  rt_stream_part(r->stream, o->comm);
  if (start_search(r)) return -1;
  if (rt_exec_prepare(r->x, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  /* a set in memory goes to a backend that keeps it (the host step, on
   * its threads, and the device step), which then takes each batch as
   * its draws */
  r->draws = !r->train.src;
  r->kept = r->draws ? rt_exec_set_dataset(r->x, &r->train, &r->nm, m->aug_crop, err, sizeof err) : 0;
  if (r->kept < 0) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  r->steps = run_steps(r->train.n, m->batch, o->comm);
  int ranks = rt_comm_size(o->comm);
  if (r->steps == 0) {
    fprintf(stderr, "error: %d training images make no batch for %d ranks\n", r->train.n, ranks);
    return -1;
  }
  /* the ranks run one run: the same images, schedule and network */
  int64_t run[] = {r->train.n, r->test.n, r->steps, r->epochs, m->batch, (int64_t)r->st.seed,
                   r->method, r->st.epoch};
  if (run_ranks_agree(o, run, (int)(sizeof run / sizeof *run))) return -1;
  if (rt_exec_sync(r->x, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  if (open_metrics(r)) return -1;

  r->tty = isatty(2) && !o->quiet;
  r->t0 = run_now();
  r->active = ir_count_params(g, r->x->arch).active;
  snprintf(r->budget, sizeof r->budget, "no budget");
  if (m->budget != INT64_MAX) snprintf(r->budget, sizeof r->budget, "%" PRId64, m->budget);
  char on[64] = "";
  if (ranks > 1) snprintf(on, sizeof on, " on each of %d ranks", ranks);
  if (!o->quiet)
    fprintf(stderr, "training %s: %d images, %d epochs, batch %d, lr %g, %d threads%s, "
            "search %s, backend %s, %" PRId64 " active parameters of %s\n", m->name,
            r->train.n, r->epochs, m->batch, r->lr, r->threads, on, fe_search_name(r->method),
            r->backend, r->active, r->budget);
  if (r->method != FE_SEARCH_FIXED && srch_beats_left(&r->sched, 1) == 0)
    fprintf(stderr, "warning: with %d epochs, 'every %d epoch' and 'freeze last %d' the "
            "schedule leaves no expansion: the %s search will not grow the network "
            "(train at least %d epochs, or pass --freeze-last N)\n", r->epochs,
            r->sched.every, r->sched.freeze, fe_search_name(r->method),
            r->sched.every + r->sched.freeze + 1);
  if (o->from && report_from(r)) return -1;
  if (o->profile && rt_exec_profile(r->x)) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  return 0;
}

/* Phase I: one epoch of SGD over the shuffled training set, with a
 * progress line on a terminal. */
static int train_epoch(train_run *r, epoch_stats *e) {
  const fe_model *m = r->m;
  rt_exec *x = r->x;
  int ep = r->st.epoch, seen = 0, correct = 0;
  double start = run_now(), loss_sum = 0;
  char err[1024];
  run_shuffle(r->order, r->train.n, &r->st.rng);
  rt_stream_epoch(r->stream, r->order, r->train.n, &r->st.rng);
  rt_exec_profile_pause(x, 0); /* the training steps only */
  for (int s = 0; s < r->steps; s++) {
    const float *xb;
    const rt_draw *dr;
    const ir_label *lab;
    int b;
    if (r->draws ? rt_stream_next_draws(r->stream, &dr, &lab, &b, err, sizeof err)
                 : rt_stream_next(r->stream, &xb, &lab, &b, err, sizeof err)) {
      fprintf(stderr, "%serror: %s\n", r->tty ? "\n" : "", err);
      return -1;
    }
    if (r->draws) rt_exec_set_draws(x, dr, b);
    else rt_exec_set_input(x, xb, b);
    /* forward, loss, backward and SGD as one operation (on the GPU one
     * graph launch); a step that diverged stops the run, whose last
     * checkpoint is the epoch before */
    int c = 0;
    /* the run's first step pays for its arenas' first touch: with more
     * steps to come, the table leaves it out */
    int first = r->o->profile && r->profiled == 0 && r->first_ms == 0.0 &&
                (s + 1 < r->steps || ep + 1 < r->epochs);
    double t_step = r->o->profile ? run_now() : 0.0;
    if (first) rt_exec_profile_pause(x, 1);
    double loss = rt_exec_train_step(x, lab, run_lr_at(m, r->lr, r->epochs, ep, (double)s / r->steps),
                                     (float)m->momentum, (float)m->decay, &c);
    if (first) rt_exec_profile_pause(x, 0), r->first_ms = 1e3 * (run_now() - t_step);
    if (rt_exec_status(x, err, sizeof err)) {
      fprintf(stderr, "%serror: step %d of epoch %d: %s\n", r->tty ? "\n" : "", s + 1, ep + 1, err);
      return -1;
    }
    if (!isfinite(loss)) {
      fprintf(stderr, "%serror: the training loss diverged at step %d of epoch %d (it is "
              "%s; try a smaller learning rate than %g)\n", r->tty ? "\n" : "", s + 1,
              ep + 1, isnan(loss) ? "not a number" : "infinite", r->lr);
      return -1;
    }
    /* the loss and hits are the whole batch's, of every rank */
    int all = r->train.n - s * m->batch < m->batch ? r->train.n - s * m->batch : m->batch;
    if (r->o->profile && !first && all == m->batch &&
        run_step_time(&r->times, 1e3 * (run_now() - t_step)))
      return -1;
    r->st.step++, r->profiled += !first;
    loss_sum += loss * all, seen += all, correct += c;
    if (r->tty && (s % 8 == 0 || s == r->steps - 1))
      fprintf(stderr, "\repoch %d/%d  %3d%%  loss %.4f  acc %.2f%%  params %"
              PRId64 "/%s   ", ep + 1, r->epochs, 100 * (s + 1) / r->steps,
              loss_sum / seen, 100.0 * correct / seen, r->active, r->budget);
  }
  if (!isfinite(loss_sum)) {
    fprintf(stderr, "%serror: the training loss diverged in epoch %d "
            "(try a smaller learning rate than %g)\n", r->tty ? "\n" : "", ep + 1, r->lr);
    return -1;
  }
  rt_exec_profile_pause(x, 1);
  r->train_secs += run_now() - start;
  *e = (epoch_stats){.ep = ep, .start = start, .seen = seen,
                     .correct = correct, .train_secs = run_now() - start,
                     .train_loss = loss_sum / seen};
  return 0;
}

/* A network that has stopped learning (all its ReLUs dead, from too large
 * a step): two epochs in a row that end with the test accuracy at chance
 * and the training loss at ln K, that of a network that predicts no class
 * over another. Said once, with what usually helps. */
static void chance_warning(train_run *r, const epoch_stats *e) {
  int k = r->g->cfg.classes;
  double chance = log((double)k);
  int dead = k > 1 && r->test_acc <= 1.0 / k + 0.02 && fabs(e->train_loss - chance) <= 0.02 * chance;
  r->at_chance = dead ? r->at_chance + 1 : 0;
  if (r->at_chance == 2)
    fprintf(stderr, "warning: epoch %d: the network predicts at chance (test %.2f%%, training loss %.4f, "
            "ln %d = %.4f): it has stopped learning, usually from too large a step; try a smaller "
            "learning rate than %g (--lr)\n", e->ep + 1, 100 * r->test_acc, e->train_loss, k, chance, r->lr);
}

/* Evaluation: the test set, then the epoch's metrics line and terminal
 * line. The epoch counts as done from here. */
static int test_epoch(train_run *r, const epoch_stats *e) {
  const fe_model *m = r->m;
  int ep = e->ep;
  double test_loss;
  /* the limit saves time between epochs; the last one sees every image */
  r->test_acc = run_evaluate(r->x, &r->test, &r->nm, ep + 1 < r->epochs ? r->o->test_limit : 0,
                         r->loaders, &test_loss);
  if (isnan(r->test_acc)) return -1;
  r->tested = 1;
  r->st.epoch = ep + 1;
  r->active = ir_count_params(r->g, r->x->arch).active;
  double secs = run_now() - e->start;
  fprintf(r->metrics,
          "{\"epoch\": %d, \"train_loss\": %.6f, \"train_acc\": %.6f, "
          "\"test_loss\": %.6f, \"test_acc\": %.6f, \"active_params\": %" PRId64
          ", \"lr\": %.6g, \"train_seconds\": %.3f, \"seconds\": %.3f}\n",
          ep + 1, e->train_loss, (double)e->correct / e->seen, test_loss, r->test_acc,
          r->active, run_lr_at(m, r->lr, r->epochs, ep, 0), e->train_secs, secs);
  if (flush_metrics(r)) return -1;
  if (!r->o->quiet)
    fprintf(stderr, "%sepoch %d/%d  loss %.4f  train %.2f%%  test %.2f%%  "
            "params %" PRId64 "/%s  %.1fs\n", r->tty ? "\r" : "", ep + 1, r->epochs,
            e->train_loss, 100.0 * e->correct / e->seen, 100 * r->test_acc, r->active,
            r->budget, secs);
  chance_warning(r, e);
  return 0;
}

/* The ranks in step (rt_exec_sync): after phase I, before the test, and
 * after growth. */
static int sync_ranks(train_run *r) {
  char err[1024];
  if (rt_exec_sync(r->x, err, sizeof err) == 0) return 0;
  fprintf(stderr, "%serror: %s\n", r->tty ? "\n" : "", err);
  return -1;
}

/* Phase II, when due after this epoch: grow, record the expansion, and
 * compile kernels for the new α. */
static int grow(train_run *r, const epoch_stats *e) {
  const fe_model *m = r->m;
  int done = e->ep + 1;
  char err[1024];
  if (r->method == FE_SEARCH_FIXED || !srch_due(&r->sched, done, r->st.prev_loss, e->train_loss))
    return 0;
  srch_batches pb;
  srch_event ev;
  if (run_phase2_batches(m, &r->train, &r->nm, r->loaders, &r->st.rng, &pb, r->pbuf, r->plab,
                     r->order))
    return -1;
  r->ss.lr = run_lr_at(m, r->lr, r->epochs, done, 0);
  r->ss.plan_left = r->sched.plan ? srch_beats_left(&r->sched, done) : 0;
  double tg = run_now();
  int grown = srch_expand(&r->ss, r->x, &pb, &ev);
  if (grown == -2) {
    fprintf(stderr, "error: phase II: %s\n", r->ss.err);
    return -1;
  }
  if (rt_exec_prepare(r->x, err, sizeof err)) { /* kernels for the new α */
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  if (sync_ranks(r)) return -1;
  if (grown == 0) {
    if (!isfinite(ev.loss_before) || !isfinite(ev.loss_after)) {
      fprintf(stderr, "error: phase II: the loss is not finite (%g -> %g); the network "
              "diverged (try a smaller learning rate than %g)\n", ev.loss_before,
              ev.loss_after, r->lr);
      return -1;
    }
    run_log_expand(r->metrics, r->g, NULL, done, &ev, run_now() - tg);
    if (flush_metrics(r)) return -1;
    if (!r->o->quiet)
      fprintf(stderr, "  grew %" PRId64 " parameters to %" PRId64 "/%s "
              "(%d new nodes, %d new layers) loss %.4f -> %.4f  %.1fs\n",
              ev.added, ev.active, r->budget, ev.new_nodes, ev.new_layers,
              ev.loss_before, ev.loss_after, run_now() - tg);
  }
  r->active = ir_count_params(r->g, r->x->arch).active;
  return 0;
}

/* Saves RUN_DIR/name (rank 0; the ranks hold the same state); r->path
 * names it afterwards. */
static int save(train_run *r, const char *name) {
  char err[1024];
  snprintf(r->path, sizeof r->path, "%s/%s", r->o->run_dir, name);
  if (rt_comm_rank(r->o->comm) == 0 && app_ckpt_save(r->path, r->x, &r->st, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  return 0;
}

/* Checkpoint: the epoch's training and search state, then last.ckpt. */
static int checkpoint(train_run *r, const epoch_stats *e) {
  r->st.prev_loss = e->train_loss;
  r->st.alr = r->ss.alr, r->st.expansions = r->ss.expansions, r->st.srng = r->ss.rng;
  return save(r, "last.ckpt");
}

/* --stop-after: whether the run ends here, to be resumed from last.ckpt. */
static int stop_here(const train_run *r) {
  const app_train_opts *o = r->o;
  return o->stop_after > 0 && r->st.epoch >= o->stop_after && r->st.epoch < r->epochs;
}

/* --profile: the ops' table, then how long the steps waited for data. */
static void profile_report(const train_run *r) {
  rt_exec_profile_report(r->x, stderr, r->profiled);
  run_step_times_report(&r->times, stderr);
  if (r->first_ms > 0.0)
    fprintf(stderr, "first step: %.1f ms, not in the table (it touches the arenas' pages for the "
            "first time)\n", r->first_ms);
  long waits, steps = r->profiled + (r->first_ms > 0.0);
  double waited = rt_stream_waited(r->stream, &waits);
  fprintf(stderr, "data: %ld of %ld steps waited for their batch, %.3f ms a step on average "
          "(%.1f%% of the training time)%s\n", waits, steps,
          steps ? 1e3 * waited / (double)steps : 0.0,
          r->train_secs > 0 ? 100 * waited / r->train_secs : 0.0,
          r->train.src ? ""
          : r->kept    ? "; the step makes the batches of a set in memory from their draws"
                       : "; batches of a set in memory are made on the training thread");
}

static void report_stopped(train_run *r) {
  if (r->o->profile) profile_report(r);
  if (!r->o->quiet)
    fprintf(stderr, "stopped after epoch %d; continue with --resume %s\n",
            r->st.epoch, r->path);
  if (rt_comm_rank(r->o->comm) > 0) return;
  printf("{\"stopped\": true, \"epochs\": %d, \"checkpoint\": ", r->st.epoch);
  app_json_str(stdout, r->path);
  printf("}\n");
}

/* The final report: final.ckpt, the profile, one JSON line on stdout. A
 * resumed run whose checkpoint already had every epoch (killed between
 * last.ckpt and final.ckpt) trained nothing: it evaluates the checkpoint on
 * the whole test set first, as the last epoch does. */
static int finish(train_run *r) {
  if (!r->tested) {
    double loss;
    r->test_acc = run_evaluate(r->x, &r->test, &r->nm, 0, r->loaders, &loss);
    if (isnan(r->test_acc)) return -1;
    if (!r->o->quiet)
      fprintf(stderr, "%s: all %d epochs were done; test %.2f%%\n", r->o->resume,
              r->st.epoch, 100 * r->test_acc);
  }
  if (save(r, "final.ckpt")) return -1;
  if (r->o->profile) profile_report(r);
  if (rt_comm_rank(r->o->comm) > 0) return 0;
  printf("{\"test_acc\": %.6f, \"active_params\": %" PRId64 ", \"epochs\": %d, "
         "\"seconds\": %.3f, \"checkpoint\": ",
         r->test_acc, ir_count_params(r->g, r->x->arch).active, r->st.epoch, run_now() - r->t0);
  app_json_str(stdout, r->path);
  if (!isnan(r->from_acc)) printf(", \"from_acc\": %.6f", r->from_acc);
  printf("}\n");
  return 0;
}

static void teardown(train_run *r) {
  if (r->metrics) fclose(r->metrics);
  if (r->have_srch) srch_free(&r->ss);
  rt_exec_free(r->x);
  free(r->order), free(r->times.ms);
  free(r->pbuf), free(r->plab);
  rt_stream_free(r->stream);
  free(r->classes);
  rt_dataset_free(&r->train);
  rt_dataset_free(&r->test);
}

int app_train(ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd,
             const app_train_opts *o) {
  app_train_opts own = *o; /* rank 0 alone reports */
  if (rt_comm_rank(o->comm) > 0) own.quiet = 1, own.profile = 0;
  o = &own;
  if (g->cfg.n_tasks > 0) return run_train_tasks(g, fwd, bwd, o);
  train_run r;
  int rc = setup(&r, g, fwd, bwd, o), stopped = 0;
  while (rc == 0 && !stopped && r.st.epoch < r.epochs) {
    epoch_stats e;
    rc = train_epoch(&r, &e);
    if (rc == 0) rc = sync_ranks(&r);
    if (rc == 0) rc = test_epoch(&r, &e);
    if (rc == 0) rc = grow(&r, &e);
    if (rc == 0) rc = checkpoint(&r, &e);
    stopped = stop_here(&r);
  }
  if (rc == 0 && stopped) report_stopped(&r);
  else if (rc == 0) rc = finish(&r);
  teardown(&r);
  return rc ? 1 : 0;
}

int app_eval(ir_graph *bin, rt_graph_fn fwd, const char *ckpt, const char *data,
            int threads, const char *backend, int skip_bad) {
  char err[1024];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  if (threads <= 0) threads = app_default_threads();
  int cap = bin ? bin->cfg.batch : 128;
  char why[512];
  backend = rt_backend_resolve(backend ? backend : APP_DEFAULT_BACKEND, why, sizeof why);
  if (why[0]) fprintf(stderr, "%s\n", why);
  rt_ckpt *c = rt_ckpt_read(ckpt, err, sizeof err);
  if (c && rt_ckpt_get(c, "MTST", NULL)) {
    int rc = data ? (fprintf(stderr, "error: %s holds several tasks, each evaluated on the data "
                             "its model names; --data names one\n", ckpt), 1)
                  : run_eval_tasks(c, ckpt, threads, backend, skip_bad);
    rt_ckpt_free(c);
    return rc;
  }
  rt_ckpt_free(c);
  if (app_ckpt_load(ckpt, cap, threads, backend, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return 1;
  }
  if (bin && app_ir_compatible(bin, g, err, sizeof err)) {
    fprintf(stderr, "error: %s: %s\n", ckpt, err);
    rt_exec_free(x), ir_free(g);
    return 1;
  }
  int rc = 1;
  rt_dataset train, test;
  rt_exec_set_driver(x, fwd, NULL);
  char *names = NULL;
  if (run_load_data(g, data, skip_bad, threads, 0, &train, &test) == 0) {
    if (run_class_list(&test, &names) || check_classes(ckpt, names, data ? data : g->cfg.data_path)) {
      free(names), rt_dataset_free(&train), rt_dataset_free(&test);
      rt_exec_free(x), ir_free(g);
      return 1;
    }
    free(names);
    if (st.norm.c != test.c) rt_data_norm(&train, &st.norm); /* not recorded */
    double loss, acc = run_evaluate(x, &test, &st.norm, 0, threads, &loss);
    if (!isnan(acc)) printf("{\"test_acc\": %.6f, \"test_loss\": %.6f, \"images\": %d, "
           "\"active_params\": %" PRId64 "}\n",
           acc, loss, test.n, ir_count_params(g, x->arch).active);
    rt_dataset_free(&train);
    rt_dataset_free(&test);
    rc = isnan(acc);
  }
  rt_exec_free(x);
  ir_free(g);
  return rc;
}

void run_layer_table(const ir_graph *g, const ir_arch *a, FILE *out) {
  fprintf(out, "%-12s %-8s %-22s %10s %10s %8s %6s %s\n", "layer", "kind",
          "shape", "active", "total", "density", "live", "state");
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0) continue;
    ir_count c = ir_count_layer(g, a, l);
    char shape[64];
    if (l->kind == IR_CONV)
      snprintf(shape, sizeof shape, "%d->%d %dx%d k%d", l->cin, l->cout, l->oh,
               l->ow, l->k);
    else
      snprintf(shape, sizeof shape, "%d->%d", l->cin, l->cout);
    fprintf(out, "%-12s %-8s %-22s %10" PRId64 " %10" PRId64 " %7.2f%% %3d/%-3d %s\n",
            l->name, l->kind == IR_CONV ? "conv" : "linear", shape, c.active,
            c.total, 100.0 * (double)c.active / (double)c.total,
            ir_live_outputs(g, a, l), l->cout,
            !l->can_die ? "" : a->alive[i] ? "alive" : "dead");
  }
}

int app_info(const char *ckpt, FILE *out) {
  char err[1024];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  rt_ckpt *ck = rt_ckpt_read(ckpt, err, sizeof err);
  if (ck && rt_ckpt_get(ck, "MTST", NULL)) {
    int rc = run_info_tasks(ck, ckpt, out);
    rt_ckpt_free(ck);
    return rc;
  }
  rt_ckpt_free(ck);
  if (app_ckpt_load(ckpt, 1, 1, NULL, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "error: %s\n", err);
    return 1;
  }
  const fe_model *m = &g->cfg;
  fprintf(out, "model %s  (%s granularity, epoch %d, seed %" PRIu64 ")\n",
          m->name, m->gran == FE_GRAN_KERNEL ? "kernel" : "weight", st.epoch,
          st.seed);
  run_layer_table(g, &g->arch, out);
  ir_count c = ir_count_params(g, &g->arch);
  fprintf(out, "total: %" PRId64 " active of %" PRId64 " (%.2f%%), budget %s",
          c.active, c.total, 100.0 * (double)c.active / (double)c.total,
          m->budget == INT64_MAX ? "none" : "");
  if (m->budget != INT64_MAX) fprintf(out, "%" PRId64, m->budget);
  fprintf(out, ", batch norm %" PRId64 "\n", c.bn);
  rt_backend_mem mem = rt_exec_memory(x);
  char ab[32], lb[32], rb[32];
  fprintf(out, "memory: arena %s per sample (the activations; their gradients as much again), "
               "live activations %s per sample, peak resident set %s\n",
          rt_bytes_text(mem.arena, ab, sizeof ab), rt_bytes_text(mem.live, lb, sizeof lb),
          rt_bytes_text(rt_peak_rss(), rb, sizeof rb));
  rt_exec_free(x);
  ir_free(g);
  return 0;
}

/* The parameters, then their momentum, where α is set, in index order
 * (2 * *n floats, malloc'd); NULL when out of memory. Read where the
 * backend keeps them: no array of the template's size is made. */
static float *active_values(const rt_exec *x, int64_t *n) {
  int64_t na = ir_count_active_bits(x->arch, x->g->n_params);
  float *v = malloc(2 * (size_t)(na ? na : 1) * sizeof *v);
  if (!v) return NULL;
  rt_exec_active_values(x, RT_PARAMS, v);
  rt_exec_active_values(x, RT_MOMENTUM, v + na);
  *n = na;
  return v;
}

/* Checkpoint sections. Float arrays are stored in the host's byte order,
 * which the loader checks against a marker. */
static const uint32_t ENDIAN_MARK = 0x01020304u;

typedef struct train_rec {
  uint32_t mark;
  int32_t epoch;
  int64_t step;
  uint64_t seed;
  uint64_t rng[4];
  double alr;
  int64_t expansions;
  uint64_t srng[4];
  int32_t norm_c;
  float norm_mean[4], norm_std[4];
  double prev_loss;
} train_rec;

/* A section's tag: the tag itself for a single-task checkpoint; for task
 * t of a multi-task one, the digit t and the tag's first three letters
 * ("0PAR", "1TRS"). */
static const char *tag_of(int task, const char *tag, char out[5]) {
  if (task < 0) return tag;
  out[0] = (char)('0' + task), memcpy(out + 1, tag, 3), out[4] = 0;
  return out;
}

int run_ckpt_add(rt_ckpt_writer *w, int task, const rt_exec *x, const app_train_state *st,
                 float **keep) {
  const ir_graph *g = x->g;
  char t[5];
  uint8_t *ir;
  size_t irn;
  *keep = NULL;
  if (ir_serialize(g, x->arch, &ir, &irn)) return -1;
  train_rec tr;
  memset(&tr, 0, sizeof tr); /* padding too: checkpoints are reproducible */
  tr.mark = ENDIAN_MARK, tr.epoch = st->epoch, tr.step = st->step, tr.seed = st->seed;
  memcpy(tr.rng, st->rng.s, sizeof tr.rng);
  tr.alr = st->alr, tr.expansions = st->expansions;
  memcpy(tr.srng, st->srng.s, sizeof tr.srng);
  tr.norm_c = st->norm.c;
  memcpy(tr.norm_mean, st->norm.mean, sizeof tr.norm_mean);
  memcpy(tr.norm_std, st->norm.std, sizeof tr.norm_std);
  tr.prev_loss = st->prev_loss;
  size_t ns = (size_t)g->n_stats * sizeof(float);
  /* the parameters and their momentum where α is set, in index order: the
   * others are 0, and a wide template's are most of its size */
  int64_t na = 0;
  float *act = active_values(x, &na);
  /* the IR (mostly α's bits, 1.8 MB for the CIFAR-10 sample's bounds)
   * is the writer's, not copied */
  int bad = rt_ckpt_add_own(w, tag_of(task, "IRGR", t), ir, irn) || !act ||
            rt_ckpt_add_ref(w, tag_of(task, "PARA", t), act, (size_t)na * sizeof(float)) ||
            rt_ckpt_add_ref(w, tag_of(task, "MOMA", t), act + na, (size_t)na * sizeof(float)) ||
            rt_ckpt_add_ref(w, tag_of(task, "BNST", t), rt_exec_view(x, RT_STATS), ns) ||
            rt_ckpt_add(w, tag_of(task, "TRST", t), &tr, sizeof tr);
  /* the search the run used, in a section of its own: checkpoints from
   * before it was recorded still load */
  int32_t search = st->search;
  if (!bad && search > 0) bad = rt_ckpt_add(w, tag_of(task, "SRCH", t), &search, sizeof search);
  /* an image folder's class names, which eval and resume check */
  if (!bad && st->classes)
    bad = rt_ckpt_add(w, tag_of(task, "CLSN", t), st->classes, strlen(st->classes));
  *keep = act;
  return bad ? -1 : 0;
}

int app_ckpt_save(const char *path, const rt_exec *x, const app_train_state *st,
                 char *err, size_t errlen) {
  float *keep = NULL;
  rt_ckpt_writer *w = rt_ckpt_writer_new();
  if (!w || run_ckpt_add(w, -1, x, st, &keep)) {
    snprintf(err, errlen, "%s: out of memory", path);
    rt_ckpt_writer_free(w);
    free(keep);
    return -1;
  }
  int rc = rt_ckpt_write(w, path, err, errlen);
  rt_ckpt_writer_free(w);
  free(keep);
  return rc;
}

int run_ckpt_get(const rt_ckpt *c, const char *path, int task, int cap, int threads,
                 const char *backend, ir_graph **gp, rt_exec **xp, app_train_state *st,
                 char *err, size_t errlen) {
  *gp = NULL, *xp = NULL;
  char t[5];
  size_t n, np, nm, ns, nt;
  const void *ir = rt_ckpt_get(c, tag_of(task, "IRGR", t), &n);
  /* PARA/MOMA: the active values (PARM/MOMT, every value, before them) */
  int sparse = rt_ckpt_get(c, tag_of(task, "PARA", t), &np) != NULL;
  const void *params = rt_ckpt_get(c, tag_of(task, sparse ? "PARA" : "PARM", t), &np);
  const void *mom = rt_ckpt_get(c, tag_of(task, sparse ? "MOMA" : "MOMT", t), &nm);
  const void *stats = rt_ckpt_get(c, tag_of(task, "BNST", t), &ns);
  const train_rec *tr = rt_ckpt_get(c, tag_of(task, "TRST", t), &nt);
  size_t nsr;
  const void *srch = rt_ckpt_get(c, tag_of(task, "SRCH", t), &nsr);
  char why[512];
  if (!ir || !params || !mom || !stats || !tr || nt != sizeof *tr) {
    snprintf(err, errlen, "%s: checkpoint lacks a section (written by another version?)", path);
    return -1;
  }
  ir_graph *g = ir_deserialize(ir, n, why, sizeof why);
  if (!g) {
    snprintf(err, errlen, "%s: %s", path, why);
    return -1;
  }
  int64_t values = sparse ? ir_count_active_bits(&g->arch, g->n_params) : g->n_params;
  size_t want_p = (size_t)values * sizeof(float);
  if (np != want_p || nm != want_p || ns != (size_t)g->n_stats * sizeof(float) ||
      tr->mark != ENDIAN_MARK || tr->epoch < 0 || tr->norm_c < 0 || tr->norm_c > 4 ||
      (srch && nsr != sizeof(int32_t))) {
    snprintf(err, errlen, "%s: checkpoint sections do not match its IR", path);
    ir_free(g);
    return -1;
  }
  rt_exec *x = rt_exec_new(g, cap, threads, backend, why, sizeof why);
  if (!x) {
    snprintf(err, errlen, "%s: %s", path, why);
    ir_free(g);
    return -1;
  }
  if (sparse) {
    float *p = rt_exec_params_write(x), *m = rt_exec_edit(x, RT_MOMENTUM);
    const float *pv = params, *mv = mom;
    int64_t k = 0;
    for (int64_t i = 0; i < g->n_params; i++)
      if (ir_alpha_get(&g->arch, i)) {
        memcpy(p + i, pv + k, sizeof(float)), memcpy(m + i, mv + k, sizeof(float));
        k++;
      }
  } else {
    memcpy(rt_exec_params_write(x), params, np);
    memcpy(rt_exec_edit(x, RT_MOMENTUM), mom, nm);
  }
  memcpy(rt_exec_edit(x, RT_STATS), stats, ns);
  if (rt_exec_set_arch(x, x->arch, why, sizeof why)) {
    snprintf(err, errlen, "%s: %s", path, why);
    rt_exec_free(x), ir_free(g);
    return -1;
  }
  st->epoch = tr->epoch, st->step = tr->step, st->seed = tr->seed;
  memcpy(st->rng.s, tr->rng, sizeof st->rng.s);
  st->alr = tr->alr, st->expansions = (int)tr->expansions;
  memcpy(st->srng.s, tr->srng, sizeof st->srng.s);
  st->norm.c = tr->norm_c;
  memcpy(st->norm.mean, tr->norm_mean, sizeof st->norm.mean);
  memcpy(st->norm.std, tr->norm_std, sizeof st->norm.std);
  st->prev_loss = tr->prev_loss;
  st->classes = NULL; /* app_ckpt_classes reads them */
  st->search = 0;
  if (srch) {
    int32_t v;
    memcpy(&v, srch, sizeof v);
    st->search = v >= 1 && v <= (int32_t)FE_SEARCH_FIXED + 1 ? v : 0;
  }
  *gp = g, *xp = x;
  return 0;
}

int app_ckpt_load_task(const char *path, const char *task, int cap, int threads,
                       const char *backend, ir_graph **gp, rt_exec **xp, app_train_state *st,
                       char *err, size_t errlen) {
  *gp = NULL, *xp = NULL;
  rt_ckpt *c = rt_ckpt_read(path, err, errlen);
  if (!c) return -1;
  int k = run_task_index(c, path, task, err, errlen);
  int rc = k < -1 ? -1 : run_ckpt_get(c, path, k, cap, threads, backend, gp, xp, st, err, errlen);
  rt_ckpt_free(c);
  return rc;
}

int app_ckpt_load(const char *path, int cap, int threads, const char *backend,
                 ir_graph **gp, rt_exec **xp, app_train_state *st, char *err,
                 size_t errlen) {
  return app_ckpt_load_task(path, NULL, cap, threads, backend, gp, xp, st, err, errlen);
}

int app_ckpt_classes(const char *path, char **names, char *err, size_t errlen) {
  *names = NULL;
  rt_ckpt *c = rt_ckpt_read(path, err, errlen);
  if (!c) return -1;
  size_t n;
  const char *s = rt_ckpt_get(c, "CLSN", &n);
  int rc = 0;
  if (s && (memchr(s, 0, n) || !(*names = malloc(n + 1)))) {
    snprintf(err, errlen, "%s: %s", path, memchr(s, 0, n) ? "class names hold a NUL byte"
             : "out of memory");
    rc = -1;
  } else if (s) {
    memcpy(*names, s, n);
    (*names)[n] = 0;
  }
  rt_ckpt_free(c);
  return rc;
}

int app_ir_compatible(const ir_graph *a, const ir_graph *b, char *err,
                     size_t errlen) {
  if (a->n_layers != b->n_layers || a->n_tensors != b->n_tensors ||
      a->act_size != b->act_size || a->n_params != b->n_params ||
      a->n_stats != b->n_stats || a->cfg.classes != b->cfg.classes) {
    snprintf(err, errlen, "checkpoint of model '%s' (%" PRId64 " parameters) "
             "does not fit this binary's model '%s' (%" PRId64 " parameters)",
             b->cfg.name, b->n_params, a->cfg.name, a->n_params);
    return -1;
  }
  for (int i = 0; i < a->n_layers; i++) {
    const ir_layer *p = &a->layers[i], *q = &b->layers[i];
    if (p->kind != q->kind || p->cin != q->cin || p->cout != q->cout ||
        p->k != q->k || p->stride != q->stride || p->w_off != q->w_off ||
        p->in_t != q->in_t || p->out_t != q->out_t) {
      snprintf(err, errlen, "checkpoint layer %s differs from this binary's %s",
               q->name, p->name);
      return -1;
    }
  }
  return 0;
}

void app_json_str(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  putc('"', f);
  while (*p) {
    unsigned c = *p;
    if (c == '"' || c == '\\') {
      putc('\\', f), putc((int)c, f), p++;
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(f, "\\u%04x", c), p++;
    } else if (c < 0x80) {
      putc((int)c, f), p++;
    } else {
      /* a well-formed UTF-8 sequence passes as it is */
      int n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2
            : c >= 0xf0 && c <= 0xf4 ? 3 : -1;
      int ok = n > 0;
      for (int i = 1; ok && i <= n; i++) ok = (p[i] & 0xc0) == 0x80;
      if (ok && n == 2) ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] > 0x9f);
      if (ok && n == 3) ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] > 0x8f);
      if (ok) {
        fwrite(p, 1, (size_t)n + 1, f), p += n + 1;
      } else {
        fputs("\\ufffd", f), p++;
      }
    }
  }
  putc('"', f);
}

int app_output_ok(const char *out, const char *in, const char *what, char *err,
                  size_t errlen) {
  struct stat so, si;
  if (stat(out, &so) != 0) return 0; /* nothing there to lose */
  if (in && stat(in, &si) == 0 && so.st_dev == si.st_dev && so.st_ino == si.st_ino) {
    snprintf(err, errlen, "output '%s' is the input '%s'; refusing to overwrite it with "
             "%s", out, in, what);
    return -1;
  }
  if (!S_ISREG(so.st_mode)) return 0; /* /dev/null and the like */
  /* a checkpoint starts with runtime/ckpt.c's magic, "ILNASCK" and a version */
  char magic[7];
  int fd = open(out, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, magic, sizeof magic) : -1;
  if (fd >= 0) close(fd);
  if (n == (ssize_t)sizeof magic && memcmp(magic, "ILNASCK", sizeof magic) == 0) {
    snprintf(err, errlen, "output '%s' is a checkpoint; refusing to overwrite it with %s "
             "(remove it first, or choose another name)", out, what);
    return -1;
  }
  size_t len = strlen(out);
  if (len >= 6 && strcmp(out + len - 6, ".ilnas") == 0) {
    snprintf(err, errlen, "output '%s' is a model source (.ilnas); refusing to overwrite "
             "it with %s (remove it first, or choose another name)", out, what);
    return -1;
  }
  return 0;
}
