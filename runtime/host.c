/* host.c: the host step, a backend (backend.h) whose state lives in host
 * memory and whose weighted layers run on a kernel set (kernels.h): the
 * activation arena and its gradient, the parameters, their gradients and
 * momentum, batch norm's statistics, the graph ops the driver calls, the
 * loss, the SGD step and phase II's dense gradient.
 *
 * The batch is split into one contiguous chunk per thread. Forward and
 * backward-to-input work is per sample, so chunking changes nothing; weight
 * gradients are summed from per-thread partials in chunk order, so a run is
 * deterministic for a given seed and thread count. */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS */
#include "runtime/host.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <cblas.h>

#include "runtime/cuda/step.h"
#include "runtime/data.h"
#include "runtime/elem.h"
#include "runtime/exec.h"
#include "runtime/plan.h"
#include "runtime/p2.h"
#include "runtime/pool.h"
#include "runtime/ref.h"
#include "base/rng.h"

enum { RT_MAX_THREADS = 64 };

/* What the graph ops read: the host step's state. */
struct hx {
  rt_backend base;  /* first: an hx is its rt_backend */
  const ir_graph *g;
  const ir_arch *arch; /* the executor's */
  int cap;          /* batch capacity the arena was planned for */
  int n;            /* current batch */
  int training;     /* batch norm uses batch statistics when set */
  float *act;       /* cap * act_size, sample-major */
  float *dact;      /* gradient of act, same layout */
  const float *params; /* n_params; changed through edit (a new wgen) */
  float *grads, *mom;
  const uint8_t *mask; /* n_params: the executor's, as of the last prepare */
  float *stats;     /* n_stats: batch norm running mean, var */
  float *bn_save;   /* n_stats: batch mean, 1/std of the last forward */
  float *scratch;   /* cap * largest layer output: batch norm's gradient */
  float *logits;    /* cap * classes, packed */
  int threads;      /* worker threads for batch-split ops */
  rt_kernels *backend; /* computes conv and linear layers */
  rt_kernels *live;    /* follows the masks as they are at each call, for
                        * phase II, which flips them between passes: the
                        * reference kernels under "ref", else dense
                        * OpenBLAS (blas.c) */
  int use_live;        /* run on live instead of backend (phase II) */
};

/* The partial weight gradients of chunks 1.. live in wpart: the largest
 * layer's weights and biases, once per thread but the first (chunk 0
 * writes into grads). */
typedef struct host {
  hx pub;
  float *params; /* pub.params, writable */
  float *gdense; /* n_params: the last backward's gradients, dense (view) */
  int gedit;     /* gdense was edited: the next sgd applies it */
  uint8_t *dirty; /* per layer: to prepare (prepare's argument) */
  int deferred;   /* the backend's kernels of the dirty layers wait for a
                   * pass off phase II (prepare_backend) */
  const uint8_t *varies; /* the executor's ir_varying, as of the last prepare */
  rt_graph_fn fwd, bwd; /* the graph driver, or NULL: the schedule, */
  ir_call *fc, *bc;     /* interpreted */
  int nf, nb;
  /* Phase II's dense gradient on the host, made on first use: per thread
   * an im2col scratch of dg_col floats, and but the first a partial
   * gradient of the largest conv layer (dg_part floats) */
  float *dg_cols, *dg_parts;
  int64_t dg_col, dg_part;
  rt_backend_stats stats;
  atomic_int failed;    /* a kernel failed in the current operation */
  char error[256];      /* its message */
  float *wpart;
  int64_t wpart_size;
  size_t scratch_len; /* floats of pub.scratch */
  rt_pool *pool; /* threads - 1 workers; NULL: everything on the caller */
  /* The per-sample ranges [lo, hi) of the gradient arena that the backward
   * accumulates into, cleared before each one; the rest is written before
   * it is read. */
  int64_t (*zero)[2];
  int n_zero;
  /* The same under the plan (made at prepare): only the outputs of the
   * layers that are not aliases, which are all the backward reads. */
  int64_t (*zlive)[2];
  int n_zlive;
  uint8_t *zt; /* per tensor: in zero */
  /* Seconds spent per op under a profile (rt_exec_profile), else NULL:
   * the loss (with the gradient arena's clearing), the SGD step, then the
   * forward and the backward of each layer. */
  double *prof, *prof_paused;
  int64_t *active; /* per layer: active weights, as of the last prepare */
  uint8_t *assign; /* per layer: its backward overwrites a gradient that
                    * is not cleared: a max pool its input's
                    * (rt_plan_sole_pool_writer), batch norm its pre-activation's
                    * (rt_plan_z_writer) */
  /* Names the parameters' values for the backends (rt_linear_shape.wgen):
   * new at every change of them (rt_exec_params_write, the SGD step, init,
   * sync_mask), so that a backend may keep what it derived from them
   * (packed weights) across passes for as long as it stays the same. */
  uint64_t wgen;
  /* Packed weight gradients (rt_kernels.wgrad_index): per layer, the
   * backend's layout as of the last prepare (pidx, pn entries; NULL:
   * dense), and whether its last backward wrote grads in it (gpacked: the
   * live backend's are dense), which the reduction and the SGD step
   * follow (packed_of). */
  const int32_t **pidx;
  size_t *pn;
  uint8_t *gpacked;
  int *pk; /* the SGD step's list of packed layers */
  int *sk; /* and of the layers whose weights its dense part skips */
  float **wc; /* and the backend's copies of their weights (or NULL), */
  const int32_t **wat; /* where each weight goes in them */
  rt_plan *plan; /* the live channels and the dead layers' aliases, made at
                  * every prepare */
  int fwd_aliased; /* the last forward followed the plan's aliases */
  int layout_bounds; /* no aliases, every tensor cleared whole (tests) */
  int no_remat;      /* no input remade (tests: rt_host_remat) */
  int no_fold;       /* no batch norm folded (tests: rt_host_fold) */
  int no_dx_z;       /* no input gradient in a z (tests: rt_host_dx_in_z) */
  int dx_z_layers;   /* the layers whose last backward wrote it there */
  /* A pass under the plan computes its worked channels only (narrow):
   * batch norm, the ReLUs, max pooling and the gradient's clearing skip
   * the others, which hold 0 in the activations and their gradients (so
   * that their pages are never touched). They are so in a new arena and
   * after a full training pass (clean), and stay so until a channel stops
   * being worked, an alias changes, or a pass off the plan (phase II, a
   * schedule run, the layout at the bounds) writes them. */
  int narrow;      /* the current pass is narrow */
  int clean;       /* the channels outside the worked ones hold 0 */
  int full_fwd;    /* the last forward was a full training pass on the plan */
  int replan;      /* the parameters were edited since the plan was made */
  int planned;     /* a plan was made */
  long narrow_passes; /* so far */
  uint8_t *work_was; /* the plan's worked channels and aliases before */
  int *alias_was;    /* it was last made */
  /* The ranges of zlive in the worked channels, for narrow passes. */
  int64_t (*znarrow)[2];
  int n_znarrow;
  /* Per layer, under the plan: its backward overwrites the gradient of
   * its input slice (rt_conv_shape.dx_assign), which zlive and znarrow
   * then leave out (plan_dx_assign). */
  uint8_t *dxa;
  /* Per layer: whether anything before it with parameters (a weight, a
   * bias, batch norm's) wrote into what it reads, so that its backward
   * must make its input's gradient (needs_dx); a static fact of the graph. */
  uint8_t *dxn;
  /* Per layer, under the plan (plan_bn_x): a conv with batch norm whose
   * output one conv alone reads leaves its normalisation to that conv's
   * kernels in training (rt_conv_shape.xbn): xdst, that conv, or -1;
   * xsrc, a conv's producer so, or -1; xleft, the producer's last forward
   * left it (its output unwritten), xz where its z was. */
  int *xdst, *xsrc;
  /* A conv whose input the kernels remake from its producer's input
   * (rt_conv_shape.xr, plan_remat): xr, that producer, or -1; xrby, the
   * producer's consumer, or -1. Off in phase II's passes. */
  int *xr, *xrby;
  /* A conv with batch norm before its ReLU whose normalisation its reader
   * makes (xdst), whose weight gradient that reader's backward takes and
   * its own finishes from sums (rt_conv_shape.xg, plan_remat, bn_grad_of):
   * zg. */
  uint8_t *zg;
  /* A zg layer that its reader remakes in training, folded with its batch
   * norm (plan_remat, fold_fwd): zf. Its batch norm's statistics come from
   * its input patches' sums (fgram, RT_GRAM doubles a layer, kept for the
   * backward's bn_grad_of), and its reader's kernels remake its output from
   * its input with the weights and bias in fold (from fold_off[layer]). */
  uint8_t *zf;
  double *fgram;
  float *fold;
  int64_t *fold_off;
  /* A conv layer with batch norm before its ReLU, in inference on a
   * backend whose kernels fuse the ReLU (eval_folded): its weights and
   * bias with the running statistics' map folded in (eval_fold), from
   * efold_off[layer] (-1: none), so that its kernels write its output,
   * or its pool's, in one pass as a conv's without batch norm. */
  float *efold;
  int64_t *efold_off;
  double *gram; /* per chunk: the sums of patch_chunk, RT_GRAM doubles */
  float *pcols; /* per chunk: patch_chunk's im2col of a sample, pcols_len floats */
  size_t pcols_len;
  uint8_t *xleft; /* XLEFT_FOLDED: by fold_fwd, z not made */
  int64_t *xz;
  /* Per conv layer with batch norm: where its output's gradient (its
   * fused pool's) is in this backward pass, -1 at its place in dact, or
   * an offset in act: its reader's z, into which that reader's backward
   * wrote its input gradient (dx_in_z). Reset before each pass. */
  int64_t *gz;
  float *xbeta; /* n_stats: beta as that forward took it (the SGD step moves it
                 * before a late reader, host_channel_stats, writes the output) */
  /* Batch norm's row moments (rt_bn_moments), taken by the conv chunks
   * as they write each sample: channel c's of sample i at
   * bn_mom[c * 2 * cap + 2 * i], for the widest layer with batch norm. */
  double *bn_mom;
  float *bn_scale; /* n_stats: the scale gamma / std of the last training
                    * forward, a layer's at s_off, for its backward */
  float *bn_rows;  /* cap * n_stats: a layer's (at cap * s_off) row sums
                   * for its batch norm's backward, [sample][channel][2],
                   * made by the conv its forward left its output to
                   * (rt_bn_x.sums) when rows[layer] is set */
  uint8_t *rows;   /* per layer */
  float *bn_dzc;   /* 3 * n_stats: a backward's constants of dz (gm, kg,
                    * kx, a layer's at 3 * s_off) where the kernels make dz
                    * (bn_dz_fused) */
  /* A conv layer whose batch norm and ReLU (before it) only a 2x2 max
   * pool reads: in training its forward leaves the affine map to the
   * pool, which pools it from z (rt_bn_out), and its backward takes the
   * pool's gradient (rt_bn_pool_bwd): the normalised tensor and its
   * gradient are never written. Per layer (bn_fusable). */
  struct bn_fuse {
    int pool;     /* a conv layer's: that pool's layer, or -1 */
    int pend;     /* a pool's: the conv layer + 1 whose forward left it its map, or 0 */
    int fused;    /* a pool's: the last forward pooled from z */
    int pre;      /* a pool's: the conv's last forward took its windows'
                   * extremes of z and their positions (bn_moments), so that
                   * it pools them and the backward's sums read them */
    int64_t z, out, pout; /* the conv's z and out offsets; where the pool wrote */
    int64_t code;         /* a conv's: its windows' codes in pcode (rt_bn_out) */
  } *bnf;
  /* A conv layer without batch norm whose ReLU output a 2x2 max pool
   * alone reads: in training its backward takes the pool's gradient and
   * routes it back through the pool as it packs it (rt_conv_shape.pooled),
   * so that the pool's backward writes nothing; on a backend that can
   * (pool_fwd), its forward writes the pool's output and the windows'
   * codes instead of its own (rt_conv_shape.pool_y), and the backward
   * routes by the codes. Per layer: the candidates (pool_fusable), and
   * which of them feed their pools under the plan (pool_plan): past the
   * dead layers of a stage in the live layout, the first layer's output
   * is what the pool reads. */
  struct pool_fuse {
    int cand;     /* a conv layer's: the pool its output can feed (pool_fusable), or -1 */
    int pool;     /* a conv layer's: that pool's layer under the plan (pool_plan), or -1 */
    int conv;     /* a pool's: that conv layer under the plan, or -1 */
    int taken;    /* a pool's: its conv takes the gradient of this backward */
    int made;     /* a pool's: its conv's last forward made its output */
    int64_t dy;   /* a pool's: where its output's gradient is, then */
    int64_t code; /* a conv's: its windows' codes in pcode */
  } *pfu;
  uint8_t *pcode; /* cap samples of every fused conv's window codes, a conv's
                   * [sample][channel][window] from bnf.code or pfu.code */
  int64_t pcode_ns; /* bytes a sample */
  float *pzx;       /* the extremes of z of the windows of pcode's fused convs
                     * with batch norm, in its layout (bn_fuse.pre), as far as
                     * the last sample's; NULL where no conv has them */
  rt_p2 p2; /* phase II's gradients and the hyper step's saved W */
  /* set_dataset's training set and normalisation (the caller's, as
   * backend.h says), from which upload_draws makes a batch's images
   * straight into the arena on the pool; NULL: none kept. */
  const rt_dataset *ds;
  const rt_norm *nm;
  int crop;
} host;

/* Layer l's gradient layout in grads: its packed indices (*n of them), or
 * NULL when dense. */
static const int32_t *packed_of(const host *e, int l, size_t *n) {
  *n = e->pn[l];
  return e->gpacked[l] ? e->pidx[l] : NULL;
}

/* A failure in a chunk: the first is kept (chunks run on several
 * threads); the operation goes on, its results void, and returns -1
 * (op_status). */
static void fail(host *e, const char *why) {
  if (atomic_exchange(&e->failed, 1) == 0) snprintf(e->error, sizeof e->error, "%s", why);
}

/* A kernel's status, a failure kept as fail keeps it. */
static void check(void *x, rt_kernels *b, int rc) {
  if (rc) fail(x, b->error[0] ? b->error : "a kernel failed");
}

/* An operation's status: 0, or -1 with the first kernel failure in the
 * backend's error. */
static int op_status(hx *x) {
  host *e = (host *)x;
  if (!atomic_exchange(&e->failed, 0)) return 0;
  snprintf(x->base.error, sizeof x->base.error, "%s", e->error);
  return -1;
}

/* wgens unique across every exec of the process, 0 never. */
static uint64_t next_wgen(void) {
  static atomic_uint_fast64_t counter;
  return (uint64_t)atomic_fetch_add(&counter, 1) + 1;
}

enum { PROF_LOSS, PROF_SGD, PROF_LAYER };

static double prof_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t sz, int *oom) {
  void *p = calloc(n ? n : 1, sz);
  if (!p) *oom = 1;
  return p;
}

/* The arenas (the activations, their gradients, the scratch): zeroed
 * memory mapped whole, in 4 kB pages. A sample's slots lie an arena's
 * sample apart, and a training step writes only some of its tensors (not
 * a remade layer's output, nor a pre-activation that no backward reads:
 * the twin below touches about a third of its activations' arena), so a
 * 2 MB page (transparent huge pages, MADV_HUGEPAGE) would hold some of
 * every tensor and the first batch's upload would touch all of the
 * arena; and where no free 2 MB block is at hand, Linux compacts memory
 * for each such page first. (On the other 2-core VM, the AMD one, a 4 kB
 * fault cost far more: 180 MB took 615 ms to touch in 4 kB pages and
 * 32 ms in 2 MB ones.) A growing run makes fresh arenas at every growth
 * (packed.h). On the 2-core Intel VM (2026-12-05, --profile, 6,000
 * images, `--search fixed`, three rounds), one epoch's training seconds
 * with the activations in 2 MB pages and in 4 kB ones: the sample
 * 0.925-0.995 and 0.873-0.972, the batch norm template 1.163-1.268 and
 * 1.030-1.211, its twin without batch norm 1.009-1.155 and 0.961-1.039,
 * the template at 100% 2.622-2.871 and 2.482-2.641; the CIFAR-10 seed on
 * random images (6 MB a sample, batch 128) took 1.38-1.97 s and
 * 1.58-1.63 s for its first step; the steps after the first were within
 * each other's spread; the twin's peak resident set was 212 MB and
 * 159 MB. The gradients alone (2026-12-04), the first step
 * in 2 MB pages and in 4 kB ones: the batch norm template 174 ms and
 * 35 ms, the sample 72-77 and 15, the template at 100% 92-95 and 35-36. */
static size_t arena_bytes(size_t floats) { return (floats ? floats : 1) * sizeof(float); }

static float *arena_new(size_t floats, int *oom) {
  void *m = mmap(NULL, arena_bytes(floats), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED) {
    *oom = 1;
    return NULL;
  }
  return m;
}

static void arena_free(float *p, size_t floats) {
  if (p) munmap(p, arena_bytes(floats));
}

static int empty(const ir_layer *l);

/* Whether layer k reads tensor t (its input, pass-through or z). */
static int reads(const ir_layer *k, int t) { return k->in_t == t || k->prev_t == t || k->z_t == t; }

/* The 2x2 max pool (stride 2, never dead) that reads conv layer l's whole
 * output, which l alone writes whole, on even planes (every position in
 * one window), where every other layer reading it (*others of them) is
 * one that can die, as its input or pass-through: the pool l feeds while
 * those are dead and aliased (pool_plan); or -1. */
static int pool_among(const ir_graph *g, const ir_layer *l, int *others) {
  *others = 0;
  if (l->kind != IR_CONV || l->out_ch != 0 || l->cout != g->tensors[l->out_t].c || l->oh % 2 ||
      l->ow % 2)
    return -1;
  const ir_tensor *r = &g->tensors[l->out_t];
  int writers = 0, pool = -1;
  for (int k = 0; k < g->n_layers; k++) {
    const ir_layer *o = &g->layers[k];
    writers += o->out_t == l->out_t || o->z_t == l->out_t;
    if (!reads(o, l->out_t)) continue;
    if (o->kind == IR_MAXPOOL && pool < 0 && o->in_t == l->out_t && o->in_ch == 0 &&
        o->cin == r->c && o->h == r->h && o->w == r->w && o->k == 2 && o->stride == 2 &&
        !o->can_die)
      pool = k;
    else if (!o->can_die || o->z_t == l->out_t)
      return -1;
    else
      ++*others;
  }
  return writers == 1 ? pool : -1;
}

/* pool_among's pool where it alone reads l's output, or -1. */
static int pool_after(const ir_graph *g, const ir_layer *l) {
  int others, p = pool_among(g, l, &others);
  return others ? -1 : p;
}

/* Fills f[].pool: for each conv layer with batch norm, then its ReLU, its
 * pool_after, when its planes suit rt_bn_out; none under ref, which
 * composes them as written (its kernels fuse nothing either): the oracle
 * of the fused paths. */
static void bn_fusable(const ir_graph *g, int ref, struct bn_fuse *f) {
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    int fits = l->bn == IR_BN_BEFORE && l->relu && (int64_t)l->oh * l->ow <= RT_BN_POOL_HW;
    f[i].pool = !ref && fits ? pool_after(g, l) : -1;
  }
}

/* Fills f[].cand: each conv layer without batch norm, with its ReLU, and
 * its pool_among; f[].pool and f[].conv where the pool is its output's
 * only reader (pool_plan sets them under the plan). */
static void pool_fusable(const ir_graph *g, struct pool_fuse *f) {
  for (int i = 0; i < g->n_layers; i++) f[i].cand = f[i].pool = f[i].conv = -1;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    /* with batch norm before the ReLU: in inference, folded (eval_folded) */
    if ((l->bn && l->bn != IR_BN_BEFORE) || !l->relu) continue;
    int others, p = pool_among(g, l, &others);
    f[i].cand = p;
    if (p >= 0 && !others) f[i].pool = p, f[p].conv = i;
  }
}

static int range_cmp(const void *a, const void *b) {
  const int64_t *x = a, *y = b;
  return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts ranges [lo, hi) and merges those that touch; their count. */
static int merge_ranges(int64_t (*r)[2], int n) {
  qsort(r, (size_t)n, sizeof *r, range_cmp);
  int m = 0;
  for (int i = 0; i < n; i++)
    if (m > 0 && r[i][0] <= r[m - 1][1]) {
      if (r[i][1] > r[m - 1][1]) r[m - 1][1] = r[i][1];
    } else {
      r[m][0] = r[i][0], r[m][1] = r[i][1], m++;
    }
  return m;
}

/* The next run [*c0, return) of worked channels among [*c0, n) (w NULL:
 * all of them); returns *c0 when none is left. */
static int next_run(const uint8_t *w, int *c0, int n) {
  if (!w) return *c0 < n ? n : *c0;
  while (*c0 < n && !w[*c0]) ++*c0;
  int c = *c0;
  while (c < n && w[c]) c++;
  return c;
}

/* Layer l's worked output channels in a narrow pass (the others hold 0,
 * and so do their gradients), else NULL: all of them. */
static const uint8_t *worked(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  return e->narrow ? e->plan->work + ir_chan_base(x->g, l->out_t) + l->out_ch : NULL;
}

/* Appends the runs of channels [0, c) of a tensor whose work flags are w
 * (NULL: all channels, one run), planes of plane floats from off, as
 * ranges to r; their count. */
static int worked_ranges(const uint8_t *w, int c, int64_t off, int64_t plane, int64_t (*r)[2]) {
  int n = 0;
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, c)) > c0; c0 = c1, n++)
    r[n][0] = off + c0 * plane, r[n][1] = off + c1 * plane;
  return n;
}

/* The ranges the backward under the plan clears, into r; their count
 * after merging. Of the tensors in zero, the output slices (and
 * pre-activations) of the layers that are not aliases: an alias's output
 * is never read, the layers after it read its source, whose gradient they
 * add into. work: only the worked channels' planes of them (narrow
 * passes), or NULL: whole. */
static int zero_ranges(const host *e, const uint8_t *work, int64_t (*r)[2]) {
  const ir_graph *g = e->pub.g;
  const rt_plan *p = e->plan;
  int n = 0;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (p->alias[i] != i) continue;
    if (e->zt[l->out_t])
      n += worked_ranges(work ? work + ir_chan_base(g, l->out_t) + l->out_ch : NULL, l->cout,
                         p->out_off[i], (int64_t)l->oh * l->ow, r + n);
    if (l->z_t >= 0 && e->zt[l->z_t]) {
      const ir_tensor *t = &g->tensors[l->z_t];
      n += worked_ranges(work ? work + ir_chan_base(g, l->z_t) : NULL, t->c, t->off,
                         (int64_t)t->h * t->w, r + n);
    }
  }
  return merge_ranges(r, n);
}

/* A layer with a backend's kernels needs its input's gradient? (Nothing
 * reads the gradient of the network's input.) */
static int needs_dx(const hx *x, const ir_layer *l);

/* Layer l's backward overwrites its input slice's gradient, which this
 * pass did not clear (plan_dx_assign): a pass under the plan. */
static int planned_assign(const hx *x, int l) {
  const host *e = (const host *)x;
  return e->dxa[l] && !x->use_live && !e->layout_bounds;
}

/* What layer i's op reads under the plan, [*lo, *hi) of a sample (and
 * its backward writes): its input, or a dead layer's pass-through source;
 * 0 for an aliased dead layer, whose op does nothing. */
static int op_reads(const host *e, int i, int64_t *lo, int64_t *hi) {
  const hx *x = &e->pub;
  const rt_plan *p = e->plan;
  const ir_layer *o = &x->g->layers[i];
  if (p->alias[i] != i && !x->arch->alive[i]) return 0;
  if (x->arch->alive[i] || o->prev_t < 0)
    *lo = p->in_off[i], *hi = *lo + (int64_t)o->cin * o->h * o->w;
  else
    *lo = p->prev_off[i], *hi = *lo + (int64_t)o->cout * o->oh * o->ow;
  return 1;
}

/* Whether [a, b) of a sample overlaps the logits. */
static int hits_logits(const ir_graph *g, int64_t a, int64_t b) {
  const ir_tensor *lt = &g->tensors[g->logits_t];
  return lt->off < b && a < lt->off + (int64_t)lt->c * lt->h * lt->w;
}

/* Fills e->dxa under the plan: an alive conv layer whose backward is the
 * first to write any of its input slice's gradient (no op before it in
 * the backward writes there: no reader after it in the forward, no dead
 * layer passing into it, no pre-activation or logits there) overwrites
 * that gradient (dx_assign) on a kernel set that can, and the slice needs
 * no clearing; the writers after it add to what it wrote. So do a max
 * pool (as it does where it alone reads its input in the template,
 * e->assign; under the plan a dead layer that read the same slice is no
 * op), a global average pool and a copy, whose backwards then overwrite
 * (planned_assign). Their slices (per-sample offsets) into
 * cut; their count. */
static int plan_dx_assign(host *e, int64_t (*cut)[2]) {
  const hx *x = &e->pub;
  const ir_graph *g = x->g;
  const rt_plan *p = e->plan;
  memset(e->dxa, 0, (size_t)g->n_layers);
  /* each layer's first place in the backward */
  int *pos = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *pos);
  if (!pos) return 0; /* nothing assigns: every slice cleared */
  for (int i = 0; i < g->n_layers; i++) pos[i] = e->nb;
  for (int k = e->nb - 1; k >= 0; k--) {
    int64_t li = e->bc[k].args[0];
    if (li >= 0 && li < g->n_layers) pos[li] = k;
  }
  int n = 0;
  for (int m = 0; m < g->n_layers; m++) {
    const ir_layer *l = &g->layers[m];
    int conv = l->kind == IR_CONV && x->backend->assigns_dx && x->arch->alive[m] &&
               p->alias[m] == m && !empty(l);
    int other = (l->kind == IR_MAXPOOL || l->kind == IR_GAP || l->kind == IR_COPY) && p->alias[m] == m;
    if (!(conv || other) || !needs_dx(x, l) || pos[m] >= e->nb) continue;
    int64_t a = p->in_off[m], b = a + (int64_t)l->cin * l->h * l->w;
    int sole = !hits_logits(g, a, b);
    for (int i = 0; i < g->n_layers && sole; i++) {
      const ir_layer *o = &g->layers[i];
      int64_t w[2][2] = {{0, 0}, {0, 0}}; /* what its backward writes */
      if (i == m || !op_reads(e, i, &w[0][0], &w[0][1])) continue; /* no op */
      if (pos[i] > pos[m]) continue; /* runs after it: adds to what it wrote */
      if (o->z_t >= 0) {
        const ir_tensor *t = &g->tensors[o->z_t];
        w[1][0] = t->off, w[1][1] = t->off + (int64_t)t->c * t->h * t->w;
      }
      for (int k = 0; k < 2; k++) sole &= !(w[k][0] < b && a < w[k][1]);
    }
    if (!sole) continue;
    e->dxa[m] = 1;
    cut[n][0] = a, cut[n][1] = b, n++;
  }
  free(pos);
  return n;
}

/* Fills e->xdst and e->xsrc under the plan: a conv layer with batch norm
 * before its ReLU (or none) whose output slice (under a fused pool,
 * bn_fusable: the pool's) exactly one other op reads, an alive conv layer
 * reading all of it among its input channels (in a dense stage, beside
 * the stage's other outputs), planes of the same size (no other reader,
 * no dead layer passing it on, not the logits), on a kernel set that can;
 * a reader takes one such producer. Under a pool, that conv makes the
 * pool's output from the windows' extremes (bn_x_of); or an alive linear
 * layer reading all of it, on any kernel set: the linear's kernels make
 * it from them as they read it (rt_kernels.bn_x), or else the host in the
 * linear's chunks (lin_fwd_chunk). */
static void plan_bn_x(host *e) {
  const hx *x = &e->pub;
  const ir_graph *g = x->g;
  const rt_plan *p = e->plan;
  for (int i = 0; i < g->n_layers; i++) e->xdst[i] = e->xsrc[i] = -1, e->xleft[i] = 0;
  for (int m = 0; m < g->n_layers; m++) {
    const ir_layer *l = &g->layers[m];
    int pl = e->bnf[m].pool, so = pl >= 0 ? pl : m; /* whose output the reader reads */
    if (l->kind != IR_CONV || l->bn != IR_BN_BEFORE || !x->arch->alive[m] || p->alias[m] != m ||
        empty(l) || p->alias[so] != so)
      continue;
    const ir_layer *sl = &g->layers[so];
    int64_t plane = (int64_t)sl->oh * sl->ow, a = p->out_off[so], b = a + l->cout * plane;
    int reader = -1, ok = !hits_logits(g, a, b);
    for (int i = 0; i < g->n_layers && ok; i++) {
      const ir_layer *o = &g->layers[i];
      int64_t lo, hi; /* what it reads */
      if (i == m || i == pl || !op_reads(e, i, &lo, &hi) || !(lo < b && a < hi)) continue;
      int conv = o->kind == IR_CONV && x->backend->bn_x && o->h == sl->oh && o->w == sl->ow;
      int lin = o->kind == IR_LINEAR && pl >= 0;
      if (reader >= 0 || !(conv || lin) || !x->arch->alive[i] || a < lo || b > hi ||
          (a - lo) % plane || e->xsrc[i] >= 0)
        ok = 0;
      reader = i;
    }
    if (ok && reader >= 0) e->xdst[m] = reader, e->xsrc[reader] = m;
  }
}

/* Ranges r (n, sorted, merged) less the ranges cut (m, disjoint): their
 * count, at most n + m (a cut inside a range splits it). */
static int cut_ranges(int64_t (*r)[2], int n, int64_t (*cut)[2], int m) {
  for (int k = 0; k < m; k++)
    for (int i = 0; i < n; i++) {
      int64_t a = cut[k][0], b = cut[k][1];
      if (b <= r[i][0] || r[i][1] <= a) continue;
      if (a > r[i][0] && b < r[i][1]) { /* split in two */
        memmove(r + i + 2, r + i + 1, (size_t)(n - i - 1) * sizeof *r);
        r[i + 1][0] = b, r[i + 1][1] = r[i][1], r[i][1] = a, n++;
        break;
      }
      if (a <= r[i][0] && b >= r[i][1]) { /* gone */
        memmove(r + i, r + i + 1, (size_t)(n - i - 1) * sizeof *r);
        n--, i--;
        continue;
      }
      if (a <= r[i][0]) r[i][0] = b;
      else r[i][1] = a;
    }
  return n;
}

/* Which conv feeds which pool under the plan: a candidate (pool_fusable)
 * that is alive, whose output the pool reads where it is, every other
 * reader of it dead and aliased (its op does nothing). */
static void pool_plan(host *e) {
  const hx *x = &e->pub;
  const ir_graph *g = x->g;
  struct pool_fuse *f = e->pfu;
  for (int i = 0; f && i < g->n_layers; i++) {
    f[i].pool = f[i].conv = -1;
    f[i].made = f[i].taken = 0; /* of the forward and backward to come */
  }
  for (int i = 0; f && i < g->n_layers; i++) {
    int p = f[i].cand, ok = p >= 0 && x->arch->alive[i] && e->plan->alias[i] == i &&
                            e->plan->in_off[p] == e->plan->out_off[i];
    for (int k = 0; ok && k < g->n_layers; k++)
      if (k != p && reads(&g->layers[k], g->layers[i].out_t))
        ok = empty(&g->layers[k]) ||
             (!x->arch->alive[k] && e->plan->alias[k] != k && !e->layout_bounds);
    if (ok) f[i].pool = p, f[p].conv = i;
  }
}

/* A conv layer cheap enough to remake (RT_REMAT_TAPS), with its ReLU
 * and no batch norm. */
static int remakeable(const ir_layer *l) {
  return l->kind == IR_CONV && !l->bn && l->relu && (int64_t)l->cin * l->k * l->k <= RT_REMAT_TAPS;
}

/* A conv layer with batch norm before its ReLU whose input patches are
 * few enough (RT_BN_GRAM_TAPS) for their Gram matrix (bn_grad_of). */
enum { RT_GRAM = RT_BN_GRAM_TAPS * (RT_BN_GRAM_TAPS + 1) };

enum { XLEFT_FOLDED = 2 };

static int gram_able(const ir_layer *l) {
  return l->kind == IR_CONV && l->bn == IR_BN_BEFORE && l->relu &&
         (int64_t)l->cin * l->k * l->k <= RT_BN_GRAM_TAPS;
}

/* Fills e->xr and e->xrby under the plan, on a kernel set that can remake
 * (rt_kernels.remat): an alive remakeable conv layer whose input's
 * gradient nothing wants, whose output no pool takes and exactly one op
 * reads, an alive conv layer reading all of it as its whole input (no
 * other reader, no dead layer passing it on, not the logits). Then e->zg
 * on the same kernel set (rt_conv_shape.xg). */
static void plan_remat(host *e) {
  const hx *x = &e->pub;
  const ir_graph *g = x->g;
  const rt_plan *p = e->plan;
  for (int i = 0; i < g->n_layers; i++) e->xr[i] = e->xrby[i] = -1, e->zg[i] = e->zf[i] = 0;
  if (!x->backend->remat || e->layout_bounds || e->no_remat) return;
  for (int m = 0; m < g->n_layers; m++) {
    const ir_layer *l = &g->layers[m];
    if (!remakeable(l) || !x->arch->alive[m] || p->alias[m] != m || empty(l) || needs_dx(x, l) ||
        (e->pfu && e->pfu[m].pool >= 0))
      continue;
    int64_t a = p->out_off[m], b = a + (int64_t)l->cout * l->oh * l->ow;
    int reader = -1, ok = !hits_logits(g, a, b);
    for (int i = 0; i < g->n_layers && ok; i++) {
      const ir_layer *o = &g->layers[i];
      int64_t lo, hi; /* what it reads */
      if (i == m || !op_reads(e, i, &lo, &hi) || !(lo < b && a < hi)) continue;
      if (reader >= 0 || o->kind != IR_CONV || !x->arch->alive[i] || empty(o) || lo != a ||
          hi != b || o->cin != l->cout || o->h != l->oh || o->w != l->ow || e->xsrc[i] >= 0)
        ok = 0;
      reader = i;
    }
    if (ok && reader >= 0) e->xr[reader] = m, e->xrby[m] = reader;
  }
  /* e->zg: a gram_able layer whose input's gradient nothing wants, whose
   * output its reader makes from z (plan_bn_x, no pool) as the whole of
   * its input; its own input in memory (not remade, not made from z) */
  for (int m = 0; m < g->n_layers; m++) {
    const ir_layer *l = &g->layers[m];
    int r = e->xdst[m];
    if (r < 0 || !gram_able(l) || e->xsrc[m] >= 0 || e->xr[m] >= 0 || e->bnf[m].pool >= 0 ||
        (e->pfu && e->pfu[m].pool >= 0) || needs_dx(x, l))
      continue;
    const ir_layer *o = &g->layers[r];
    e->zg[m] = o->cin == l->cout && p->in_off[r] == p->out_off[m];
    /* e->zf: one whose reader can remake it, its input in memory, as
     * the reader's whole input, the reader remaking nothing else */
    e->zf[m] = e->zg[m] && (int64_t)l->cin * l->k * l->k <= RT_REMAT_TAPS && o->kind == IR_CONV &&
               o->h == l->oh && o->w == l->ow && e->xr[r] < 0 && e->fold_off[m] >= 0 && !e->no_fold &&
               e->dxn[r] && e->assign[m] && x->backend->bn_dz && x->backend->conv_bwd;
  }
}

/* Makes the plan again, and with it the ranges to clear. A clean arena
 * stays clean when no alias changed and every channel worked before
 * still is (one that becomes worked held 0, and is computed from now on). */
static void replan(host *e) {
  hx *x = &e->pub;
  const ir_graph *g = x->g;
  int64_t nch = ir_chan_base(g, g->n_tensors);
  memcpy(e->work_was, e->plan->work, (size_t)nch);
  memcpy(e->alias_was, e->plan->alias, (size_t)g->n_layers * sizeof *e->alias_was);
  rt_plan_make(e->plan, x->arch, x->mask, x->params, x->mom);
  int64_t(*cut)[2] = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *cut);
  int n_cut = cut ? plan_dx_assign(e, cut) : 0;
  e->n_zlive = cut_ranges(e->zlive, zero_ranges(e, NULL, e->zlive), cut, n_cut);
  e->n_znarrow = cut_ranges(e->znarrow, zero_ranges(e, e->plan->work, e->znarrow), cut, n_cut);
  free(cut);
  plan_bn_x(e);
  pool_plan(e);
  plan_remat(e);
  if (e->planned &&
      memcmp(e->alias_was, e->plan->alias, (size_t)g->n_layers * sizeof *e->alias_was))
    e->clean = 0;
  for (int64_t c = 0; e->planned && c < nch; c++)
    if (e->work_was[c] && !e->plan->work[c]) e->clean = 0;
  e->replan = 0, e->planned = 1;
}

/* Fills e->dxn in the forward's order, in which every writer of a
 * slice comes before its readers: a layer's input gradient is needed when
 * a writer of a channel it reads has parameters, or needs its own input's
 * (the input's copy into a dense stage does not: the convs reading only
 * that copy make no input gradient). A layer that can die passes its
 * prev slice through and has weights: it counts as having parameters. */
static void plan_dx_needs(host *e) {
  const ir_graph *g = e->pub.g;
  for (int m = 0; m < g->n_layers; m++) {
    const ir_layer *l = &g->layers[m];
    int a = l->in_ch, b = a + ir_in_chans(g, l);
    for (int w = 0; w < m && !e->dxn[m]; w++) {
      const ir_layer *o = &g->layers[w];
      int flows = o->w_off >= 0 || o->b_off >= 0 || o->g_off >= 0 || e->dxn[w];
      e->dxn[m] = (uint8_t)(flows && o->out_t == l->in_t && o->out_ch < b &&
                            a < o->out_ch + o->cout);
    }
  }
}

/* Fills e->zero: the tensors to clear, sorted, adjacent ones merged. */
static int plan_zero(host *e) {
  const ir_graph *g = e->pub.g;
  size_t nt = (size_t)(g->n_tensors ? g->n_tensors : 1), nl = (size_t)(g->n_layers ? g->n_layers : 1);
  e->zero = malloc(nt * sizeof *e->zero);
  e->zlive = malloc(3 * nl * sizeof *e->zlive); /* a split per cut (cut_ranges) */
  e->zt = calloc(nt, 1);
  /* at most a run per two channels, plus one, per slice */
  size_t runs = 1 + nl;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    runs += (size_t)l->cout / 2 + 1;
    if (l->z_t >= 0) runs += (size_t)g->tensors[l->z_t].c / 2 + 1;
  }
  e->znarrow = malloc(runs * sizeof *e->znarrow);
  e->work_was = malloc((size_t)ir_chan_base(g, g->n_tensors) + 1);
  e->alias_was = malloc(nl * sizeof *e->alias_was);
  e->dxa = calloc(nl, 1);
  e->dxn = calloc(nl, 1);
  e->xdst = malloc(nl * sizeof *e->xdst), e->xsrc = malloc(nl * sizeof *e->xsrc);
  e->xr = malloc(nl * sizeof *e->xr), e->xrby = malloc(nl * sizeof *e->xrby);
  e->xleft = calloc(nl, 1), e->xz = calloc(nl, sizeof *e->xz);
  e->gz = malloc(nl * sizeof *e->gz);
  e->zg = calloc(nl, 1);
  e->zf = calloc(nl, 1);
  e->fgram = calloc(nl * RT_GRAM, sizeof *e->fgram);
  e->fold_off = malloc(nl * sizeof *e->fold_off);
  e->efold_off = malloc(nl * sizeof *e->efold_off);
  int64_t nfold = 0, nefold = 0;
  for (int i = 0; e->fold_off && e->efold_off && i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    int bn = l->kind == IR_CONV && l->bn == IR_BN_BEFORE && l->w_off >= 0 && l->b_off >= 0;
    e->fold_off[i] = bn && gram_able(l) ? nfold : -1;
    e->efold_off[i] = bn ? nefold : -1;
    nfold += e->fold_off[i] >= 0 ? l->n_w + l->cout : 0;
    nefold += bn ? l->n_w + l->cout : 0;
  }
  e->fold = malloc((size_t)(nfold ? nfold : 1) * sizeof *e->fold);
  e->efold = malloc((size_t)(nefold ? nefold : 1) * sizeof *e->efold);
  e->gram = calloc((size_t)e->pub.threads * RT_GRAM, sizeof *e->gram);
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    size_t cols = (size_t)l->cin * l->k * l->k * (size_t)l->oh * l->ow;
    if (gram_able(l) && cols > e->pcols_len) e->pcols_len = cols;
  }
  e->pcols = malloc((size_t)e->pub.threads * (e->pcols_len ? e->pcols_len : 1) * sizeof *e->pcols);
  e->xbeta = calloc((size_t)(g->n_stats ? g->n_stats : 1), sizeof *e->xbeta);
  for (size_t i = 0; e->xdst && e->xsrc && i < nl; i++) e->xdst[i] = e->xsrc[i] = -1;
  for (size_t i = 0; e->xr && e->xrby && i < nl; i++) e->xr[i] = e->xrby[i] = -1;
  for (size_t i = 0; e->gz && i < nl; i++) e->gz[i] = -1;
  if (!e->zero || !e->zlive || !e->zt || !e->znarrow || !e->work_was || !e->alias_was || !e->dxa ||
      !e->dxn || !e->xdst || !e->xsrc || !e->xr || !e->xrby || !e->zg || !e->gram || !e->zf ||
      !e->fgram || !e->fold_off || !e->fold || !e->efold_off || !e->efold || !e->pcols ||
      !e->xleft || !e->xz || !e->gz || !e->xbeta)
    return -1;
  plan_dx_needs(e);
  e->n_zero = merge_ranges(e->zero, rt_plan_grad_clears(g, e->assign, e->zero, e->zt));
  return 0;
}

static const rt_backend_i host_i;
static void host_free(rt_backend *b);

rt_backend *rt_step_new(const char *backend, const ir_graph *g, const ir_arch *arch, int cap,
                        int threads, char *err, size_t errlen) {
  if (backend && strcmp(backend, "cuda") == 0) /* the device step (cuda/step.h) */
    return rt_cuda_step_new(g, arch, cap, threads, err, errlen);
  host *e = calloc(1, sizeof *e);
  if (!e) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  hx *x = &e->pub;
  x->g = g;
  x->arch = arch;
  x->cap = cap;
  x->threads = threads < 1 ? 1 : threads > RT_MAX_THREADS ? RT_MAX_THREADS : threads;
  int64_t largest_out = 1, largest_w = 1, largest_xr = 0;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    int64_t o = (int64_t)l->cout * l->oh * l->ow;
    if (o > largest_out) largest_out = o;
    if (l->w_off >= 0 && l->n_w + l->cout > largest_w) largest_w = l->n_w + l->cout;
    if (l->w_off >= 0 && (remakeable(l) || gram_able(l)) && l->n_w + l->cout > largest_xr)
      largest_xr = l->n_w + l->cout;
  }
  largest_w += largest_xr; /* a remade producer's partials after its consumer's */
  int oom = 0;
  size_t arena = (size_t)cap * (size_t)g->act_size;
  x->act = arena_new(arena, &oom);
  x->dact = arena_new(arena, &oom);
  x->params = e->params = xcalloc((size_t)g->n_params, sizeof(float), &oom);
  x->grads = xcalloc((size_t)g->n_params, sizeof(float), &oom);
  x->mom = xcalloc((size_t)g->n_params, sizeof(float), &oom);
  e->gdense = xcalloc((size_t)g->n_params, sizeof(float), &oom);
  e->dirty = xcalloc((size_t)g->n_layers, 1, &oom);
  x->stats = xcalloc((size_t)g->n_stats, sizeof(float), &oom);
  x->bn_save = xcalloc((size_t)g->n_stats, sizeof(float), &oom);
  e->scratch_len = (size_t)cap * (size_t)largest_out;
  x->scratch = arena_new(e->scratch_len, &oom);
  x->logits = xcalloc((size_t)cap * (size_t)g->cfg.classes, sizeof(float), &oom);
  e->wpart_size = largest_w;
  e->wpart = xcalloc((size_t)largest_w * (size_t)(x->threads > 1 ? x->threads - 1 : 1),
                     sizeof(float), &oom);
  e->active = xcalloc((size_t)g->n_layers, sizeof *e->active, &oom);
  e->assign = xcalloc((size_t)g->n_layers, 1, &oom);
  e->pidx = xcalloc((size_t)g->n_layers, sizeof *e->pidx, &oom);
  e->pn = xcalloc((size_t)g->n_layers, sizeof *e->pn, &oom);
  e->gpacked = xcalloc((size_t)g->n_layers, 1, &oom);
  e->pk = xcalloc((size_t)g->n_layers, sizeof *e->pk, &oom);
  e->sk = xcalloc((size_t)g->n_layers, sizeof *e->sk, &oom);
  e->wc = xcalloc((size_t)g->n_layers, sizeof *e->wc, &oom);
  e->wat = xcalloc((size_t)g->n_layers, sizeof *e->wat, &oom);
  int bn_c = 0;
  for (int i = 0; i < g->n_layers; i++)
    if (g->layers[i].bn && g->layers[i].cout > bn_c) bn_c = g->layers[i].cout;
  e->bn_mom = bn_c ? xcalloc((size_t)cap * 2 * (size_t)bn_c, sizeof *e->bn_mom, &oom) : NULL;
  e->bn_scale = xcalloc((size_t)g->n_stats, sizeof(float), &oom);
  e->bn_dzc = xcalloc(3 * (size_t)g->n_stats, sizeof(float), &oom);
  e->bn_rows = xcalloc((size_t)cap * (size_t)g->n_stats, sizeof(float), &oom);
  e->rows = xcalloc((size_t)g->n_layers, 1, &oom);
  e->bnf = xcalloc((size_t)g->n_layers, sizeof *e->bnf, &oom);
  int ref = !backend || strcmp(backend, "ref") == 0;
  if (e->bnf) bn_fusable(g, ref, e->bnf);
  e->pfu = xcalloc((size_t)g->n_layers, sizeof *e->pfu, &oom);
  if (e->pfu) pool_fusable(g, e->pfu);
  for (int i = 0; e->bnf && i < g->n_layers; i++)
    if (e->bnf[i].pool >= 0) {
      const ir_layer *l = &g->layers[i];
      e->bnf[i].code = e->pcode_ns, e->pcode_ns += (int64_t)l->cout * (l->oh * l->ow / 4);
    }
  int64_t bn_codes = e->pcode_ns; /* the windows with extremes: batch norm's, first */
  for (int i = 0; e->pfu && i < g->n_layers; i++)
    if (e->pfu[i].cand >= 0) {
      const ir_layer *l = &g->layers[i];
      e->pfu[i].code = e->pcode_ns, e->pcode_ns += (int64_t)l->cout * (l->oh * l->ow / 4);
    }
  e->pcode = xcalloc((size_t)cap * (size_t)(e->pcode_ns ? e->pcode_ns : 1), 1, &oom);
  if (bn_codes) /* samples pcode_ns apart, as the codes */
    e->pzx = xcalloc((size_t)(cap > 0 ? cap - 1 : 0) * (size_t)e->pcode_ns + (size_t)bn_codes,
                     sizeof(float), &oom);
  if (oom || !(e->plan = rt_plan_new(g)) || plan_zero(e) ||
      ir_schedule(g, &e->fc, &e->nf, &e->bc, &e->nb))
    oom = 1;
  if (oom) {
    snprintf(err, errlen,
             "out of memory planning the arena (%zu floats for batch %d)",
             2 * arena, cap);
    host_free(&x->base);
    return NULL;
  }
  x->training = 1;
  e->clean = 1; /* the arena is all 0, and its pages untouched until written */
  if (x->threads > 1) e->pool = rt_pool_new(x->threads);
  /* a pool that could start fewer threads than asked splits fewer ways */
  x->threads = e->pool ? rt_pool_threads(e->pool) : 1;
  x->live = ref ? rt_kernels_ref_new(g) : rt_kernels_blas_new(g);
  x->backend = ref ? x->live : rt_kernels_new(backend, g, err, errlen);
  if (!x->live || !x->backend) {
    if (!x->live) snprintf(err, errlen, "out of memory");
    host_free(&x->base);
    return NULL;
  }
  if (x->backend->host_memory) {
    x->backend->host_memory(x->backend, x->act, arena * sizeof(float));
    x->backend->host_memory(x->backend, x->dact, arena * sizeof(float));
  }
  x->live->threads = x->backend->threads = x->threads;
  x->live->chunk = (cap + x->threads - 1) / x->threads;
  x->backend->chunk = x->backend->whole_batch ? cap : x->live->chunk;
  if (x->backend != x->live) x->backend->packed_wgrad = 1;
  x->base = (rt_backend){.i = &host_i, .g = g, .arch = arch, .cap = cap, .threads = x->threads};
  return &x->base;
}

static void host_free(rt_backend *b) {
  if (!b) return;
  hx *x = (hx *)b;
  host *e = (host *)x;
  /* the backends first: they may hold the arena page-locked (host_memory) */
  if (x->backend && x->backend != x->live) x->backend->free(x->backend);
  if (x->live) x->live->free(x->live);
  size_t arena = (size_t)x->cap * (size_t)x->g->act_size;
  arena_free(x->act, arena), arena_free(x->dact, arena), arena_free(x->scratch, e->scratch_len);
  free(e->params), free(x->grads);
  free(x->mom), free(e->gdense), free(e->dirty), free(x->stats), free(x->bn_save);
  free(x->logits), free(e->wpart), free(e->zero), free(e->zlive), free(e->zt),
      free(e->znarrow), free(e->dxa), free(e->dxn), free(e->xdst), free(e->xsrc), free(e->xr),
      free(e->xrby), free(e->zg), free(e->zf), free(e->fgram), free(e->fold), free(e->fold_off),
      free(e->efold), free(e->efold_off),
      free(e->gram), free(e->pcols), free(e->xleft), free(e->xz), free(e->gz), free(e->xbeta),
      free(e->work_was), free(e->alias_was), free(e->prof),
      free(e->prof_paused), free(e->active), free(e->assign);
  free(e->pidx), free(e->pn), free(e->gpacked), free(e->pk), free(e->sk), free(e->wc), free(e->wat);
  free(e->fc), free(e->bc), free(e->dg_cols), free(e->dg_parts), free(e->bn_mom), free(e->bn_scale), free(e->bn_dzc), free(e->bn_rows), free(e->rows), free(e->pcode), free(e->pzx),
      free(e->bnf), free(e->pfu);
  rt_plan_free(e->plan);
  rt_pool_free(e->pool);
  rt_p2_free(&e->p2);
  free(e);
}

/* The dirty weighted layers of b, at once where b can (its kernels built
 * in parallel), else one by one. */
/* A layer of no channels (a dead layer that a compact graph leaves out,
 * packed.h) has no kernels: it passes nothing through. */
static int empty(const ir_layer *l) { return l->cout == 0 || l->cin == 0; }

static int prepare_on(hx *x, rt_kernels *b, char *err, size_t errlen) {
  const ir_graph *g = x->g;
  int n = 0, *ls = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *ls);
  const uint8_t **wm = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *wm);
  const uint8_t **bm = malloc((size_t)(g->n_layers ? g->n_layers : 1) * sizeof *bm);
  int rc = 0;
  if (!ls || !wm || !bm) {
    snprintf(err, errlen, "out of memory");
    rc = -1;
  }
  for (int i = 0; !rc && i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->w_off < 0 || !((host *)x)->dirty[i] || empty(l)) continue;
    ls[n] = i, wm[n] = x->mask + l->w_off, bm[n] = x->mask + l->b_off;
    if (!b->prepare_layers) rc = b->prepare(b, i, wm[n], bm[n], err, errlen);
    n++;
  }
  if (!rc && n && b->prepare_layers) rc = b->prepare_layers(b, n, ls, wm, bm, err, errlen);
  free(ls), free(wm), free(bm);
  return rc;
}

static int prepare_backend(hx *x);

static int host_prepare(rt_backend *b_, const uint8_t *dirty, const uint8_t *mask,
                        const uint8_t *varies) {
  hx *x = (hx *)b_;
  host *e = (host *)x;
  char *err = b_->error;
  size_t errlen = sizeof b_->error;
  x->mask = mask;
  e->varies = varies;
  for (int i = 0; i < x->g->n_layers; i++) e->dirty[i] |= dirty[i];
  for (int i = 0; i < x->g->n_layers; i++) {
    const ir_layer *l = &x->g->layers[i];
    int64_t n = 0;
    if (!e->dirty[i]) continue;
    for (int64_t k = 0; l->w_off >= 0 && k < l->n_w; k++) n += x->mask[l->w_off + k] != 0;
    e->active[i] = n;
  }
  replan(e);
  if (prepare_on(x, x->live, err, errlen)) return -1;
  /* Phase II's passes run on live: the backend's kernels wait for a pass
   * that needs them, which a step the live layout makes for phase II
   * never runs (unless phase II takes the backend's dense gradient). */
  e->deferred = x->use_live && x->backend != x->live && !x->backend->conv_dense_wgrad;
  return e->deferred ? 0 : prepare_backend(x);
}

/* The backend's kernels of the dirty layers. */
static int prepare_backend(hx *x) {
  host *e = (host *)x;
  char *err = x->base.error;
  size_t errlen = sizeof x->base.error;
  e->deferred = 0;
  int rc = x->backend != x->live ? prepare_on(x, x->backend, err, errlen) : 0;
  for (int i = 0; i < x->g->n_layers; i++) {
    rt_kernels *b = x->backend;
    if (!e->dirty[i]) continue;
    int kernels = b->packed_wgrad && b->wgrad_index && !empty(&x->g->layers[i]);
    e->pidx[i] = kernels ? b->wgrad_index(b, i, &e->pn[i]) : NULL;
    e->gpacked[i] = 0; /* what grads holds now is no backward's of this layout */
  }
  if (!rc) memset(e->dirty, 0, (size_t)x->g->n_layers);
  else e->deferred = 1;
  return rc;
}

/* The parameters, for writing: their values from now on are new ones (a
 * new rt_linear_shape.wgen), so that no kernel set goes on with copies it
 * made of the old (packed weights). */
static float *params_write(hx *x) {
  host *e = (host *)x;
  e->wgen = next_wgen();
  return e->params;
}

static int host_upload(rt_backend *b, const float *batch, int n) {
  hx *x = (hx *)b;
  assert(n >= 1 && n <= x->cap);
  const ir_graph *g = x->g;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t len = (size_t)t->c * t->h * t->w;
  x->n = n;
  for (int i = 0; i < n; i++)
    memcpy(x->act + (size_t)i * g->act_size + t->off, batch + i * len,
           len * sizeof(float));
  return 0;
}

static int host_set_dataset(rt_backend *b, const rt_dataset *d, const rt_norm *nm, int crop) {
  host *e = (host *)b;
  const ir_tensor *t = &b->g->tensors[b->g->input_t];
  e->ds = NULL;
  if (!d) return 0;
  if (!rt_data_keepable(d, t, nm, crop)) {
    snprintf(b->error, sizeof b->error, "a data set the host step cannot keep (an image folder, "
             "or another shape than the input)");
    return -1;
  }
  e->ds = d, e->nm = nm, e->crop = crop;
  return 0;
}

typedef struct draw_job {
  hx *x;
  const rt_draw *dr;
  int n, parts;
} draw_job;

/* Part `part` of a batch's images, made from their draws into the arena:
 * every image's source and destination asked of the memory first, so
 * that their misses (a random image each, the arena's cold lines) are in
 * flight together rather than one image after another. */
static void draw_task(void *arg, int part) {
  const draw_job *j = arg;
  const host *e = (const host *)j->x;
  const ir_graph *g = j->x->g;
  const size_t chw = (size_t)e->ds->c * e->ds->h * e->ds->w;
  float *in = j->x->act + g->tensors[g->input_t].off;
  int i0 = (int)((int64_t)j->n * part / j->parts), i1 = (int)((int64_t)j->n * (part + 1) / j->parts);
  for (int i = i0; i < i1; i++) {
    rt_data_prefetch(e->ds, j->dr[i]);
    for (size_t k = 0; k < chw; k += 16) __builtin_prefetch(in + (size_t)i * g->act_size + k, 1);
  }
  for (int i = i0; i < i1; i++)
    rt_data_image(e->ds, j->dr[i], e->nm, e->crop, in + (size_t)i * g->act_size);
}

static int host_upload_draws(rt_backend *b, const rt_draw *dr, int n) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  assert(n >= 1 && n <= x->cap);
  if (!e->ds) {
    snprintf(b->error, sizeof b->error, "draws without a data set");
    return -1;
  }
  for (int i = 0; i < n; i++)
    if (dr[i].idx < 0 || dr[i].idx >= e->ds->n) {
      snprintf(b->error, sizeof b->error, "draw %d: image %d of a set of %d", i, (int)dr[i].idx,
               e->ds->n);
      return -1;
    }
  x->n = n;
  draw_job j = {x, dr, n, !e->pool ? 1 : x->threads < n ? x->threads : n};
  if (j.parts > 1) rt_pool_run(e->pool, j.parts, draw_task, &j);
  else draw_task(&j, 0);
  return 0;
}

/* The gradients of the last backward, dense: grads itself, but for the
 * layers whose weight gradients the kernel set wrote packed
 * (rt_kernels.wgrad_index), expanded (0 at their inactive weights). */
static void grads_dense(const hx *x, float *out) {
  const host *e = (const host *)x;
  memcpy(out, x->grads, (size_t)x->g->n_params * sizeof *out);
  for (int i = 0; i < x->g->n_layers; i++) {
    const ir_layer *l = &x->g->layers[i];
    size_t n;
    const int32_t *idx = packed_of(e, i, &n);
    if (!idx) continue;
    memset(out + l->w_off, 0, (size_t)l->n_w * sizeof *out);
    for (size_t j = 0; j < n; j++) out[l->w_off + idx[j]] = x->grads[l->w_off + j];
  }
}

/* The inverse: the gradients the next sgd applies, from a dense edit. */
static void grads_packed(hx *x, const float *in) {
  const host *e = (const host *)x;
  memcpy(x->grads, in, (size_t)x->g->n_params * sizeof *in);
  for (int i = 0; i < x->g->n_layers; i++) {
    const ir_layer *l = &x->g->layers[i];
    size_t n;
    const int32_t *idx = packed_of(e, i, &n);
    if (!idx) continue;
    for (size_t j = 0; j < n; j++) x->grads[l->w_off + j] = in[l->w_off + idx[j]];
  }
}

static void clear_dact(hx *x);

static double loss_op(hx *x, const ir_label *labels, int grad, int *correct);

static int host_loss(rt_backend *b, const ir_label *labels, int grad, double *loss, int *correct) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  double t0 = e->prof ? prof_now() : 0.0;
  *loss = loss_op(x, labels, grad, correct);
  if (e->prof) e->prof[PROF_LOSS] += prof_now() - t0;
  return 0;
}

static double loss_op(hx *x, const ir_label *labels, int grad, int *correct) {
  const ir_graph *g = x->g;
  int k = g->cfg.classes, n = x->n;
  int64_t off = g->tensors[g->logits_t].off, ns = g->act_size;
  for (int i = 0; i < n; i++)
    memcpy(x->logits + i * k, x->act + i * ns + off, (size_t)k * sizeof(float));
  if (!grad) return rt_ref_softmax_xent(n, k, x->logits, labels, NULL, correct);
  clear_dact(x);
  float *dl = x->scratch;
  double loss = rt_ref_softmax_xent(n, k, x->logits, labels, dl, correct);
  for (int i = 0; i < n; i++)
    memcpy(x->dact + i * ns + off, dl + i * k, (size_t)k * sizeof(float));
  return loss;
}

typedef struct sgd_job {
  hx *x;
  int parts;
  float lr, momentum, decay;
  int npk, *pk; /* the layers whose gradients are packed, by w_off */
  int nsk, *sk; /* the layers whose weights the dense part skips: those,
                 * and those without an active weight, by w_off */
  float *const *wc; /* per packed layer */
  const int32_t *const *wat;
} sgd_job;

static void sgd_task(void *arg, int c) {
  const sgd_job *j = arg;
  hx *x = j->x;
  const host *e = (const host *)x;
  float *params = e->params;
  /* parts of whole cache lines, so that threads never share one */
  size_t n = (size_t)x->g->n_params, lines = (n + 15) / 16;
  size_t i0 = lines * c / j->parts * 16, i1 = lines * (c + 1) / j->parts * 16;
  if (i1 > n) i1 = n;
  /* dense: the part's range but the skipped layers' weights */
  for (int k = 0; k <= j->nsk && i0 < i1; k++) {
    const ir_layer *l = k < j->nsk ? &x->g->layers[j->sk[k]] : NULL;
    size_t a = l ? (size_t)l->w_off : i1, b = l ? (size_t)(l->w_off + l->n_w) : i1;
    if (a > i0) rt_sgd(i0, a < i1 ? a : i1, params, x->grads, x->mom, x->mask, j->lr,
                       j->momentum, j->decay);
    if (b > i0) i0 = b;
  }
  /* packed: each layer's entries split the same way */
  for (int k = 0; k < j->npk; k++) {
    const ir_layer *l = &x->g->layers[j->pk[k]];
    size_t m;
    const int32_t *idx = packed_of(e, j->pk[k], &m);
    size_t j0 = m * c / j->parts, j1 = m * (c + 1) / j->parts;
    rt_sgd_packed(j0, j1, idx, params + l->w_off, x->grads + l->w_off, x->mom + l->w_off,
                  j->lr, j->momentum, j->decay, j->wc[k], j->wat[k]);
  }
}

static int host_sgd(rt_backend *b_, float lr, float momentum, float decay) {
  hx *x = (hx *)b_;
  host *e = (host *)x;
  int *pk = e->pk, npk = 0, *sk = e->sk, nsk = 0;
  for (int i = 0; i < x->g->n_layers; i++) {
    /* a layer without an active weight keeps its weights as they are
     * (masked), unless phase II flipped its masks since the prepare */
    int none = x->g->layers[i].w_off >= 0 && e->active[i] == 0 && !x->use_live;
    if (!e->gpacked[i] && !none) continue;
    int k = nsk++; /* by w_off */
    for (; k > 0 && x->g->layers[sk[k - 1]].w_off > x->g->layers[i].w_off; k--) sk[k] = sk[k - 1];
    sk[k] = i;
    if (!e->gpacked[i]) continue;
    k = npk++;
    for (; k > 0 && x->g->layers[pk[k - 1]].w_off > x->g->layers[i].w_off; k--) pk[k] = pk[k - 1];
    pk[k] = i;
  }
  sgd_job j = {x, e->pool ? x->threads : 1, lr, momentum, decay, npk, pk, nsk, sk, e->wc, e->wat};
  double t0 = e->prof ? prof_now() : 0.0;
  if (e->gedit) grads_packed(x, e->gdense);
  e->gedit = 0;
  /* new values; the backend's copies of the packed layers' weights that
   * held the old follow them (rt_kernels.wcopy) */
  uint64_t from = e->wgen;
  e->wgen = next_wgen();
  rt_kernels *b = x->backend;
  for (int k = 0; k < npk; k++)
    e->wc[k] = b->wcopy ? b->wcopy(b, pk[k], e->params + x->g->layers[pk[k]].w_off, from,
                                   e->wgen, &e->wat[k])
                        : NULL;
  if (j.parts > 1) rt_pool_run(e->pool, j.parts, sgd_task, &j);
  else sgd_task(&j, 0);
  if (e->prof) e->prof[PROF_SGD] += prof_now() - t0;
  return 0;
}

static int host_profile(rt_backend *b) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  size_t n = PROF_LAYER + 2 * (size_t)x->g->n_layers;
  if (!e->prof) e->prof = calloc(n, sizeof *e->prof);
  else memset(e->prof, 0, n * sizeof *e->prof);
  return e->prof ? 0 : -1;
}

/* Carries on the profile of `from`, a host step of a graph with the same
 * layers, which stops timing. */
static void host_profile_take(rt_backend *b, rt_backend *from) {
  host *e = (host *)b, *f = (host *)from;
  if (from->i != b->i || from->g->n_layers != b->g->n_layers) return;
  double **src = f->prof ? &f->prof : &f->prof_paused, **dst = e->prof ? &e->prof : &e->prof_paused;
  if (!*src || !*dst) return;
  size_t n = PROF_LAYER + 2 * (size_t)b->g->n_layers;
  for (size_t k = 0; k < n; k++) (*dst)[k] += (*src)[k];
  memset(*src, 0, n * sizeof **src);
}

static void host_profile_pause(rt_backend *b, int pause) {
  host *e = (host *)b;
  if (pause && e->prof) e->prof_paused = e->prof, e->prof = NULL;
  if (!pause && e->prof_paused) e->prof = e->prof_paused, e->prof_paused = NULL;
}

static rt_backend_mem host_memory(const rt_backend *b) {
  const host *e = (const host *)b;
  rt_backend_mem m = {e->pub.g->act_size * (int64_t)sizeof(float),
                      e->plan->live_floats * (int64_t)sizeof(float)};
  return m;
}

static void host_profile_report(const rt_backend *b, FILE *f, long steps) {
  const hx *x = (const hx *)b;
  const host *e = (const host *)x;
  const double *prof = e->prof ? e->prof : e->prof_paused;
  if (!prof) return;
  const ir_graph *g = x->g;
  double total = 0.0, k = steps > 0 ? 1e3 / (double)steps : 0.0;
  for (int i = 0; i < PROF_LAYER + 2 * g->n_layers; i++) total += prof[i];
  if (total <= 0.0) total = 1.0;
  fprintf(f, "profile: milliseconds per training step over %ld steps\n", steps);
  fprintf(f, "  %-14s %-8s %9s %9s %6s\n", "op", "kind", "forward", "backward", "share");
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    double a = prof[PROF_LAYER + 2 * i], b = prof[PROF_LAYER + 2 * i + 1];
    char by[96] = ""; /* its time in its consumer's rows */
    if (e->xrby[i] >= 0) snprintf(by, sizeof by, "  (remade by %s)", g->layers[e->xrby[i]].name);
    if (e->zg[i]) /* its weight gradient in its reader's rows (bn_grad_of) */
      snprintf(by, sizeof by, "  (weight gradient taken by %s)", g->layers[e->xdst[i]].name);
    if (e->zf[i]) /* and its output, its rows its statistics (fold_fwd) */
      snprintf(by, sizeof by, "  (folded, remade by %s)", g->layers[e->xdst[i]].name);
    fprintf(f, "  %-14s %-8s %9.3f %9.3f %5.1f%%%s\n", l->name, ir_kind_name(l->kind), a * k,
            b * k, 100.0 * (a + b) / total,
            e->xrby[i] >= 0 || e->zg[i]        ? by
            : l->w_off < 0 || x->arch->alive[i] ? ""
            : (e->plan->alias[i] != i && !e->layout_bounds) || empty(l) ? "  (dead: aliased)"
                                         : "  (dead: a copy)");
  }
  fprintf(f, "  %-14s %-8s %9.3f %9s %5.1f%%\n", "loss", "", prof[PROF_LOSS] * k, "",
          100.0 * prof[PROF_LOSS] / total);
  fprintf(f, "  %-14s %-8s %9s %9.3f %5.1f%%\n", "sgd", "", "", prof[PROF_SGD] * k,
          100.0 * prof[PROF_SGD] / total);
  fprintf(f, "  %-14s %-8s %19.3f\n", "total", "", total * k);
  rt_backend_mem m = host_memory(b);
  char a[32], l[32], r[32];
  int64_t rss = rt_peak_rss();
  fprintf(f, "memory: arena %s per sample (the activations; their gradients as much again), "
             "live activations %s per sample, peak resident set %s\n",
          rt_bytes_text(m.arena, a, sizeof a), rt_bytes_text(m.live, l, sizeof l),
          rss < 0 ? "unknown" : rt_bytes_text(rss, r, sizeof r));
}

/* Batch splitting. fn(job, chunk, n0, n1) runs samples [n0, n1). */
typedef struct job job;
typedef void (*chunk_fn)(const job *j, int chunk, int n0, int n1);
struct job {
  hx *x;
  const ir_layer *l;
  int64_t in, z, out;
  chunk_fn fn;
  int64_t work; /* multiply-adds of a weighted layer's op; 0: not known */
};

/* A weighted layer's multiply-adds over the batch, one direction. */
static int64_t layer_work(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  return e->active[l - x->g->layers] * l->oh * l->ow * x->n;
}

static void chunk_task(void *arg, int c) {
  const job *j = arg;
  int n = j->x->n, T = j->x->threads < n ? j->x->threads : n;
  j->fn(j, c, (int)((int64_t)n * c / T), (int)((int64_t)n * (c + 1) / T));
}

/* Multiply-adds below which a weighted layer runs on the calling thread: a
 * dispatch costs under a microsecond while the workers spin (pool.c), but
 * tens when they have gone to sleep, and then the split does not pay for
 * itself below about 2^16 multiply-adds. */
enum { SPLIT_WORK = 1 << 16 };

/* Returns the number of chunks used. Small batches and small layers stay
 * on one thread, and so do weighted layers on a whole-batch backend. */
static int run_chunks(const job *j) {
  host *e = (host *)j->x;
  int T = j->x->threads < j->x->n ? j->x->threads : j->x->n;
  int whole = j->work > 0 && (j->work < SPLIT_WORK || (!j->x->use_live && j->x->backend->whole_batch));
  if (T <= 1 || !e->pool || whole) {
    j->fn(j, 0, 0, j->x->n);
    return 1;
  }
  rt_pool_run(e->pool, T, chunk_task, (void *)j);
  return T;
}

static void clear_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  const host *e = (const host *)j->x;
  int64_t ns = j->x->g->act_size;
  int bounds = e->layout_bounds || j->x->use_live;
  int n = bounds ? e->n_zero : e->narrow ? e->n_znarrow : e->n_zlive;
  int64_t(*z)[2] = bounds ? e->zero : e->narrow ? e->znarrow : e->zlive;
  for (int i = n0; i < n1; i++)
    for (int r = 0; r < n; r++)
      memset(j->x->dact + i * ns + z[r][0], 0, (size_t)(z[r][1] - z[r][0]) * sizeof(float));
}

static void clear_dact(hx *x) {
  job j = {x, NULL, 0, 0, 0, clear_chunk, 0};
  run_chunks(&j);
}

/* Where chunk c writes a layer's weight and bias gradients: the first
 * straight into grads, the others into partials of their own. */
static float *wgrad_of(hx *x, const ir_layer *l, int c, float **db) {
  host *e = (host *)x;
  if (c == 0) {
    *db = x->grads + l->b_off;
    return x->grads + l->w_off;
  }
  float *p = e->wpart + (c - 1) * e->wpart_size;
  int li = (int)(l - x->g->layers);
  if (e->xrby[li] >= 0 || e->zg[li]) /* at the end: its consumer's at the start */
    p += e->wpart_size - (l->n_w + l->cout);
  *db = p + l->n_w;
  return p;
}

/* Adds the other chunks' partials into grads, in chunk order, each thread
 * over its own range of whole cache lines. */
typedef struct reduce_job {
  hx *x;
  const ir_layer *l;
  int chunks, parts;
} reduce_job;

static void reduce_task(void *arg, int t) {
  const reduce_job *r = arg;
  const host *e = (const host *)r->x;
  int li = (int)(r->l - r->x->g->layers);
  size_t np;
  int64_t nw = packed_of(e, li, &np) ? (int64_t)np : r->l->n_w, lines = (nw + 15) / 16;
  int64_t i0 = lines * t / r->parts * 16, i1 = lines * (t + 1) / r->parts * 16;
  if (i1 > nw) i1 = nw;
  float *db, *dw = wgrad_of(r->x, r->l, 0, &db);
  for (int c = 1; c < r->chunks; c++) {
    float *pb, *p = wgrad_of(r->x, r->l, c, &pb);
    rt_add_2d(1, (int)(i1 > i0 ? i1 - i0 : 0), p + i0, 0, dw + i0, 0);
    if (t == 0)
      for (int k = 0; k < r->l->cout; k++) db[k] += pb[k];
  }
}

static void reduce_wgrad(hx *x, const ir_layer *l, int chunks) {
  host *e = (host *)x;
  if (chunks <= 1) return;
  reduce_job r = {x, l, chunks, l->n_w >= (1 << 16) && e->pool ? x->threads : 1};
  if (r.parts > 1) rt_pool_run(e->pool, r.parts, reduce_task, &r);
  else reduce_task(&r, 0);
}

static hx *X(void *x) { return x; }

/* Whether layer l's backward makes its input's gradient (plan_dx_needs):
 * nothing reads the gradient of the network's input, nor of what only
 * copies it. */
static int needs_dx(const hx *x, const ir_layer *l) {
  return ((const host *)x)->dxn[l - x->g->layers];
}

/* A dead layer (or a copy) is the identity: out = prev, and its gradient
 * passes back added into prev's. Split over the threads like the layers
 * around it, since it moves as much memory as they do. */
static void pass_fwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  int64_t ns = j->x->g->act_size, plane = (int64_t)j->l->oh * j->l->ow;
  const uint8_t *w = worked(j->x, j->l);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, j->l->cout)) > c0; c0 = c1)
    for (int i = n0; i < n1; i++)
      memcpy(j->x->act + i * ns + j->out + c0 * plane, j->x->act + i * ns + j->in + c0 * plane,
             (size_t)((c1 - c0) * plane) * sizeof(float));
}

/* The out slice's gradient into the in slice's, added; with assign, into
 * a slice that was not cleared (plan_dx_assign): 0 + dy, the bits of
 * adding into a cleared one. */
static void pass_grad(const job *j, int n0, int n1, int assign) {
  int64_t ns = j->x->g->act_size, plane = (int64_t)j->l->oh * j->l->ow;
  const uint8_t *w = worked(j->x, j->l);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, j->l->cout)) > c0; c0 = c1)
    for (int i = n0; i < n1; i++) {
      const float *restrict a = j->x->dact + i * ns + j->out + c0 * plane;
      float *restrict b = j->x->dact + i * ns + j->in + c0 * plane;
      int len = (int)((c1 - c0) * plane);
      if (!assign) rt_add_2d(1, len, a, len, b, len);
      else
        for (int k = 0; k < len; k++) b[k] = 0.0f + a[k];
    }
}

static void pass_bwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  pass_grad(j, n0, n1, 0);
}

static void pass_set_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  pass_grad(j, n0, n1, 1);
}

/* Below this many floats a pass is not worth a dispatch (see SPLIT_WORK). */
enum { PASS_SPLIT = 1 << 14 };

static void pass_fwd(hx *x, const ir_layer *l, int64_t prev, int64_t out) {
  job j = {x, l, prev, -1, out, pass_fwd_chunk, 0};
  if ((int64_t)l->cout * l->oh * l->ow * x->n < PASS_SPLIT) pass_fwd_chunk(&j, 0, 0, x->n);
  else run_chunks(&j);
}

static void pass_bwd(hx *x, const ir_layer *l, int64_t prev, int64_t out, int assign) {
  job j = {x, l, prev, -1, out, assign ? pass_set_chunk : pass_bwd_chunk, 0};
  if ((int64_t)l->cout * l->oh * l->ow * x->n < PASS_SPLIT) j.fn(&j, 0, 0, x->n);
  else run_chunks(&j);
}

static rt_conv_shape conv_shape(const hx *x, const ir_layer *l, int n) {
  rt_conv_shape s = {.n = n, .cin = l->cin, .h = l->h, .w = l->w,
                     .cout = l->cout, .k = l->k, .stride = l->stride,
                     .pad = l->pad, .x_ns = x->g->act_size,
                     .y_ns = x->g->act_size};
  rt_conv_shape_finish(&s);
  assert(s.oh == l->oh && s.ow == l->ow);
  return s;
}

/* Whether conv layer l's forward takes its batch norm folded into its
 * weights and bias (efold): in inference, batch norm before the ReLU, on
 * a backend whose kernels fuse the ReLU (and honour
 * rt_conv_shape.bias_all). */
static int eval_folded(const hx *x, const ir_layer *l) {
  return l->bn == IR_BN_BEFORE && !x->training && !x->use_live && x->backend->fuses_relu &&
         ((const host *)x)->efold_off[l - x->g->layers] >= 0;
}

/* Output channel c of conv layer l folded with the map (z - m) k + beta
 * of its batch norm into fw (its weights, l->n_w) and fb (its bias): k W
 * where a weight is active, and k (bias - m) + beta, the bias 0 where
 * masked. */
static void fold_channel(const hx *x, const ir_layer *l, int c, float m, float k, float *fw,
                         float *fb) {
  int64_t T = l->n_w / l->cout;
  const float *wc = x->params + l->w_off + c * T, *bias = x->params + l->b_off;
  const uint8_t *mc = x->mask + l->w_off + c * T;
  for (int64_t t = 0; t < T; t++) fw[c * T + t] = mc[t] ? k * wc[t] : 0.0f;
  double b = rt_bias_counts(x->mask + l->b_off, 0, c) ? bias[c] : 0.0;
  fb[c] = (float)((double)k * (b - m) + x->params[l->g_off + l->cout + c]);
}

/* Conv layer l's weights and bias with its batch norm's inference map
 * folded in (eval_folded), into efold (fold_channel): k W and k (bias - mean) + beta,
 * the map's k = gamma / sqrt(var + eps) as rt_bn_fwd makes it from the
 * running statistics. A channel that cannot vary (bn_constants) takes
 * beta alone, one not worked 0. The output differs from the conv's and
 * the map's apart by the rounding of the folded products. */
static void eval_fold(hx *x, const ir_layer *l) {
  host *e = (host *)x;
  const float *gamma = x->params + l->g_off, *beta = gamma + l->cout;
  const float *rm = x->stats + l->s_off, *rv = rm + l->cout;
  const uint8_t *w = worked(x, l);
  const uint8_t *v = e->varies ? e->varies + ir_chan_base(x->g, l->out_t) + l->out_ch : NULL;
  float *fw = e->efold + e->efold_off[l - x->g->layers], *fb = fw + l->n_w;
  int64_t T = l->n_w / l->cout;
  for (int c = 0; c < l->cout; c++) {
    int off = w && !w[c];
    if (off || (v && !v[c])) {
      memset(fw + c * T, 0, (size_t)T * sizeof *fw);
      fb[c] = off ? 0.0f : beta[c];
      continue;
    }
    float k = (float)(gamma[c] * (1.0 / sqrt((double)rv[c] + RT_BN_EPS)));
    fold_channel(x, l, c, rm[c], k, fw, fb);
  }
}

/* Whether conv layer l runs folded with its batch norm in this pass
 * (plan_remat's zf), remade by its reader: in training with the batch's
 * statistics (fold_fwd), in inference with the running ones (eval_fold). */
static int folded(const hx *x, const ir_layer *l) {
  return !x->use_live && ((const host *)x)->zf[l - x->g->layers] &&
         (x->training || eval_folded(x, l));
}

/* The producer whose output conv layer l's kernels remake as its input
 * in this pass (plan_remat), or -1. */
static int remakes(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int li = (int)(l - x->g->layers), src = e->xsrc[li];
  if (x->use_live) return -1;
  return e->xr[li] >= 0 ? e->xr[li] : src >= 0 && folded(x, &x->g->layers[src]) ? src : -1;
}

/* Whether conv layer l's output is remade by its consumer in this pass:
 * then its own forward and backward do nothing (folded: their batch norm
 * alone). */
static int remade(const hx *x, const ir_layer *l) {
  return !x->use_live && (((const host *)x)->xrby[l - x->g->layers] >= 0 || folded(x, l));
}

static float *wgrad_of(hx *x, const ir_layer *l, int c, float **db);

/* The producer pr of rt_conv_shape.xr for n samples from arena offset o;
 * with chunk >= 0 (a backward), its gradients where that chunk's go. */
static rt_conv_src conv_src(hx *x, int pr, int64_t o, int n, int chunk) {
  const ir_layer *l = &x->g->layers[pr];
  rt_conv_src r = {pr, conv_shape(x, l, n), x->act + o + ((host *)x)->plan->in_off[pr],
                   x->params + l->w_off, x->params + l->b_off, NULL, NULL, 0};
  r.s.relu = 1;
  if (folded(x, l)) { /* its batch norm folded in (fold_fwd, eval_fold) */
    const host *e = (const host *)x;
    r.w = x->training ? e->fold + e->fold_off[pr] : e->efold + e->efold_off[pr];
    r.bias = r.w + l->n_w, r.bn = 1;
  }
  if (chunk >= 0) r.dw = wgrad_of(x, l, chunk, &r.db);
  return r;
}

/* y = max(z, 0) for samples [n0, n1), where y may be z. */
static void relu_fwd(hx *x, const ir_layer *l, int64_t z, int64_t out, int n0, int n1) {
  int64_t ns = x->g->act_size, plane = (int64_t)l->oh * l->ow;
  const uint8_t *w = worked(x, l);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, l->cout)) > c0; c0 = c1)
    for (int i = n0; i < n1; i++)
      rt_relu((long)((c1 - c0) * plane), x->act + i * ns + z + c0 * plane,
              x->act + i * ns + out + c0 * plane);
}

/* A layer without batch norm: the pre-activation is only needed by the
 * backward, as its gradient dz = dout * (out > 0), written (not added). */
static void relu_bwd(hx *x, const ir_layer *l, int64_t z, int64_t out, int n0, int n1) {
  int64_t ns = x->g->act_size, plane = (int64_t)l->oh * l->ow;
  const uint8_t *w = worked(x, l);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, l->cout)) > c0; c0 = c1)
    for (int i = n0; i < n1; i++)
      rt_relu_mask((long)((c1 - c0) * plane), x->act + i * ns + out + c0 * plane,
                   x->dact + i * ns + out + c0 * plane, x->dact + i * ns + z + c0 * plane);
}

/* Whether the conv chunks of a layer with batch norm take its rows'
 * moments (bn_moments) in this pass: in training, unless the backend
 * computes the whole batch in one call. */
static int bn_rows(const hx *x, const ir_layer *l) {
  return l->bn && x->training && ((const host *)x)->bn_mom &&
         (x->use_live || !x->backend->whole_batch);
}

/* Samples per conv call when the chunk takes the rows' moments: about
 * 256 kB of output, which is still in L2 when they are read. */
static int bn_rows_batch(const ir_layer *l) {
  int64_t len = (int64_t)l->cout * l->oh * l->ow;
  return len >= 1 << 16 ? 1 : (int)((1 << 16) / len);
}

/* Whether the conv chunks of layer l, taking its rows' moments, also
 * take the windows of the max pool that its forward leaves its batch norm
 * to (bn_fusable, conv_fwd_op's leave): their extremes of z and where
 * they are, for rt_bn_pool_out and the backward's sums. */
static int bn_pre(const hx *x, const ir_layer *l) {
  return ((const host *)x)->bnf[l - x->g->layers].pool >= 0 && x->training && !x->use_live &&
         bn_rows(x, l);
}

/* Where layer l's rows' moments go (bn_mom), and where bn_pre its pool's
 * windows: from sample a on (rt_conv_shape.mom). */
static const rt_bn_mom *bn_mom_of(const hx *x, const ir_layer *l, int a, rt_bn_mom *bm) {
  host *e = (host *)x;
  int64_t code = e->bnf[l - x->g->layers].code + a * e->pcode_ns;
  int pre = bn_pre(x, l);
  *bm = (rt_bn_mom){e->bn_mom + 2 * a, 2L * x->cap, pre, x->params + l->g_off,
                    pre ? e->pzx + code : NULL, pre ? e->pcode + code : NULL, (long)e->pcode_ns};
  return bm;
}

/* The moments of z's rows, samples [n0, n1), worked channels, and where
 * bn_pre, its pool's windows: what a kernel set that does not take them
 * (rt_kernels.bn_mom) leaves to the chunks. */
static void bn_moments(hx *x, const ir_layer *l, int64_t z, int n0, int n1) {
  int64_t ns = x->g->act_size, plane = (int64_t)l->oh * l->ow;
  const uint8_t *w = worked(x, l);
  rt_bn_mom m;
  bn_mom_of(x, l, n0, &m);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, l->cout)) > c0; c0 = c1) {
    rt_bn_shape s = {n1 - n0, c1 - c0, (int)plane, ns, ns, l->ow};
    rt_bn_moments_at(&s, x->act + n0 * ns + z + c0 * plane, &m, 0, c0, 1);
  }
}

/* Conv layer l's input as batch norm's output, from its producer's z
 * (plan_bn_x), samples from o on; NULL when the producer's last forward
 * wrote it. */
static const rt_bn_x *bn_x_of(const hx *x, const ir_layer *l, int64_t o, rt_bn_x *bx) {
  const host *e = (const host *)x;
  int src = e->xsrc[l - x->g->layers];
  if (src < 0 || !e->xleft[src] || folded(x, &x->g->layers[src])) return NULL; /* or remade */
  const ir_layer *p = &x->g->layers[src];
  int pl = e->bnf[src].pool, so = pl >= 0 ? pl : src; /* under a pool, its windows */
  const ir_layer *sl = &x->g->layers[so];
  int c0 = (int)((e->plan->out_off[so] - e->plan->in_off[l - x->g->layers]) /
                 ((int64_t)sl->oh * sl->ow));
  const float *z = pl >= 0 ? e->pzx + e->bnf[src].code + o / x->g->act_size * e->pcode_ns
                           : x->act + o + e->xz[src];
  *bx = (rt_bn_x){z, x->bn_save + p->s_off, e->bn_scale + p->s_off, e->xbeta + p->s_off,
                  p->relu, c0, c0 + p->cout, NULL, pl >= 0 ? (long)e->pcode_ns : 0, pl >= 0};
  return bx;
}

static const struct pool_fuse *pool_made(const hx *x, const ir_layer *l);
static int pool_dy_fused(const hx *x, int c);
static int pool_eval_fused(const hx *x, int c);

static void conv_fwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  hx *x = j->x;
  const ir_layer *l = j->l;
  rt_kernels *b = x->use_live ? x->live : x->backend;
  /* Without batch norm the pre-activation z is never read again, so a
   * backend that fuses the ReLU writes the activation directly; with batch
   * norm after the ReLU, z holds the ReLU's output, batch norm's input
   * (z > 0 where the pre-activation was, for the backward). */
  int after = l->bn == IR_BN_AFTER && l->relu, rows = bn_rows(x, l), ef = eval_folded(x, l);
  int relu = (!l->bn || after || ef) && l->relu && b->fuses_relu;
  const float *w = x->params + l->w_off, *bias = x->params + l->b_off;
  if (ef) w = ((host *)x)->efold + ((host *)x)->efold_off[l - x->g->layers], bias = w + l->n_w;
  /* the rows' moments: taken by the kernels as they write z, or else a
   * few samples a call, each read back while in the cache */
  int kmom = rows && b->bn_mom && (!after || relu);
  int step = rows && !kmom ? bn_rows_batch(l) : n1 - n0;
  for (int a = n0, a1; a < n1 || a == n0; a = a1) {
    a1 = n1 - a < step ? n1 : a + step;
    int64_t o = (int64_t)a * x->g->act_size;
    rt_conv_shape s = conv_shape(x, l, a1 - a);
    rt_bn_x bx;
    rt_bn_mom bm;
    s.xbn = x->use_live ? NULL : bn_x_of(x, l, o, &bx);
    s.relu = relu, s.bias_all = ef;
    if (kmom) s.mom = bn_mom_of(x, l, a, &bm);
    int pr = remakes(x, l);
    rt_conv_src src;
    if (pr >= 0) src = conv_src(x, pr, o, a1 - a, -1), s.xr = &src;
    const struct pool_fuse *pm = pool_made(x, l);
    if (pm) { /* the pool's output and codes, not y */
      const host *e = (const host *)x;
      s.pool_y = x->act + o + e->fc[e->pfu[l - x->g->layers].pool].args[3];
      s.pcode = e->pcode + pm->code + (int64_t)a * e->pcode_ns, s.pcode_ns = (long)e->pcode_ns;
    }
    check(x, b, b->conv_fwd(b, (int)(l - x->g->layers), &s, x->act + o + j->in, w, bias,
                x->act + o + ((s.relu && !l->bn) || ef ? j->out : j->z)));
    if (!l->bn && l->relu && !s.relu) relu_fwd(x, l, j->z, j->out, a, a1);
    if (after && !s.relu) relu_fwd(x, l, j->z, j->z, a, a1);
    if (rows && !kmom) bn_moments(x, l, j->z, a, a1);
    if (a1 == a) break;
  }
}

static void bn_constants(hx *x, const ir_layer *l, int64_t out);

/* Batch norm of a conv layer's pre-activation z into out, over its
 * worked channels; out < 0: the statistics only. Each of the others
 * holds 0 in z (nothing active writes it): its statistics follow a batch
 * mean and variance of 0, exactly as rt_bn_fwd's, and its output stays
 * beta, which is 0. */
static void bn_fwd(hx *e, const ir_layer *ly, int64_t z, int64_t out) {
  int64_t ns = e->g->act_size;
  int plane = ly->oh * ly->ow;
  const uint8_t *w = worked(e, ly);
  const float *gamma = e->params + ly->g_off, *beta = gamma + ly->cout;
  float *rm = e->stats + ly->s_off, *rv = rm + ly->cout;
  float *sm = e->bn_save + ly->s_off, *si = sm + ly->cout, *sk = ((host *)e)->bn_scale + ly->s_off;
  double count = (double)e->n * plane;
  for (int c = 0, c0 = 0, c1; c < ly->cout; c0 = c = c1) {
    c1 = next_run(w, &c0, ly->cout);
    for (; c < c0 && e->training; c++) { /* rt_bn_fwd's arithmetic at mean 0, variance 0 */
      double mu = 0.0, var = 0.0 / count, invstd = 1.0 / sqrt(var + RT_BN_EPS);
      double unbiased = count > 1 ? 0.0 / (count - 1) : var;
      sm[c] = (float)mu, si[c] = (float)invstd, sk[c] = (float)(gamma[c] * invstd);
      rm[c] = (float)((1 - RT_BN_MOMENTUM) * rm[c] + RT_BN_MOMENTUM * mu);
      rv[c] = (float)((1 - RT_BN_MOMENTUM) * rv[c] + RT_BN_MOMENTUM * unbiased);
    }
    if (c1 <= c0) break;
    rt_bn_shape s = {e->n, c1 - c0, plane, ns, ns, ly->ow};
    long ms = 2L * e->cap;
    rt_bn_fwd(((host *)e)->pool, e->threads, &s, e->training,
              ly->relu && ly->bn == IR_BN_BEFORE, e->act + z + (int64_t)c0 * plane,
              bn_rows(e, ly) ? ((host *)e)->bn_mom + c0 * ms : NULL, ms, gamma + c0, beta + c0,
              rm + c0, rv + c0, sm + c0, si + c0, sk + c0,
              out < 0 ? NULL : e->act + out + (int64_t)c0 * plane);
  }
}

static void fold_fwd(hx *x, const ir_layer *l, int64_t in, int64_t z);

static void conv_fwd_op(RT_OP_ARGS) {
  hx *e = X(x);
  const ir_layer *ly = &e->g->layers[l];
  struct bn_fuse *f = ((host *)e)->bnf, *pf = f[l].pool >= 0 ? &f[f[l].pool] : NULL;
  if (pf) pf->pend = pf->fused = pf->pre = 0;
  ((host *)e)->xleft[l] = ((host *)e)->rows[l] = 0;
  struct pool_fuse *pu = ((host *)e)->pfu, *pm = pu[l].pool >= 0 ? &pu[pu[l].pool] : NULL;
  if (pm) /* where the backward will take the pool's gradient, and in inference */
    pm->made = (pool_dy_fused(e, (int)l) || pool_eval_fused(e, (int)l)) && e->backend->pool_fwd;
  if (!e->arch->alive[l]) {
    pass_fwd(e, ly, prev, out);
    return;
  }
  if (folded(e, ly)) { /* its batch norm's statistics; its reader's kernels make it */
    if (e->training) fold_fwd(e, ly, in, z);
    else eval_fold(e, ly);
    return;
  }
  if (remade(e, ly)) return; /* its consumer's kernels make it as they read it */
  int ef = eval_folded(e, ly);
  if (ef) eval_fold(e, ly); /* its kernels make its output */
  job j = {e, ly, in, z, out, conv_fwd_chunk, layer_work(e, ly)};
  run_chunks(&j);
  if (ly->bn && !ef) {
    /* phase II's passes read every output (host_dense_grad) */
    host *h = (host *)e;
    int leave = pf && e->training && !e->use_live;
    int left = h->xdst[l] >= 0 && !pf && e->training && !e->use_live && !h->layout_bounds;
    bn_fwd(e, ly, z, leave || left ? -1 : out);
    h->xleft[l] = (uint8_t)left, h->xz[l] = z;
    if (left)
      memcpy(h->xbeta + ly->s_off, e->params + ly->g_off + ly->cout,
             (size_t)ly->cout * sizeof *h->xbeta);
    if (leave) pf->pend = (int)l + 1, pf->z = z, pf->out = out, pf->pre = bn_pre(e, ly);
    if (!e->training) bn_constants(e, ly, out);
  }
}

/* The affine map and ReLU that conv layer c's forward left to the pool
 * after it, from z: pooled into the pool's out, or into the conv's out
 * (y, pooled NULL). Over the worked channels of the pool (one of the
 * conv's that is not holds 0, which the map keeps). */
static void bn_out(hx *e, int c, int64_t z, int64_t y, int64_t pooled) {
  const host *h = (const host *)e;
  const ir_layer *ly = &e->g->layers[c], *lp = &e->g->layers[h->bnf[c].pool];
  int64_t ns = e->g->act_size, plane = (int64_t)ly->oh * ly->ow, op = plane / 4;
  const float *beta = e->params + ly->g_off + ly->cout, *sm = e->bn_save + ly->s_off;
  const float *sk = h->bn_scale + ly->s_off;
  const uint8_t *w = worked(e, pooled >= 0 ? lp : ly), *wc = worked(e, ly);
  uint8_t *code = pooled >= 0 ? h->pcode + h->bnf[c].code : NULL;
  int pre = pooled >= 0 && h->bnf[h->bnf[c].pool].pre; /* wc's windows taken */
  for (int c0 = 0, c1; c0 < ly->cout; c0 = c1) {
    /* runs of worked channels pooled; pooled, the others' codes alone (the
     * backward's packing reads every channel's); from the windows taken
     * where the conv worked them */
    int on = !w || w[c0], zc = pre && (!wc || wc[c0]);
    for (c1 = c0 + 1;
         c1 < ly->cout && (!w || w[c1]) == on && (pre && (!wc || wc[c1])) == zc;)
      c1++;
    if (!on && !code) continue;
    rt_bn_shape s = {e->n, c1 - c0, (int)plane, ns, ns, ly->ow};
    if (zc) {
      rt_bn_pool_out(h->pool, e->threads, &s, ly->ow, h->pzx + h->bnf[c].code + c0 * op,
                     beta + c0, sm + c0, sk + c0, on ? e->act + pooled + c0 * op : NULL, ns,
                     code + c0 * op, h->pcode_ns);
      continue;
    }
    rt_bn_out(h->pool, e->threads, &s, 1, ly->ow, e->act + z + c0 * plane, beta + c0, sm + c0,
              sk + c0, pooled >= 0 ? NULL : e->act + y + c0 * plane,
              pooled >= 0 && on ? e->act + pooled + c0 * op : NULL, ns,
              code ? code + c0 * op : NULL, h->pcode_ns);
  }
}

/* In training, batch norm maps a channel that is a constant (its batch
 * variance 0: a bias, or nothing) to beta exactly. In inference the
 * running statistics would not: the running mean trails the constant
 * (weight decay moves the bias every step) and the running variance
 * decays towards 0, so 1/sqrt(var + eps) magnifies the trail into outputs
 * that training never saw. A channel that cannot vary (ir_varying) is
 * mapped to beta (and the ReLU, where it follows) in inference too. */
static void bn_constants(hx *x, const ir_layer *l, int64_t out) {
  const host *e = (const host *)x;
  if (!e->varies) return;
  const uint8_t *v = e->varies + ir_chan_base(x->g, l->out_t) + l->out_ch, *w = worked(x, l);
  const float *beta = x->params + l->g_off + l->cout;
  int64_t plane = (int64_t)l->oh * l->ow, ns = x->g->act_size;
  for (int c = 0; c < l->cout; c++) {
    if (v[c] || (w && !w[c])) continue; /* one not worked is 0, its beta */
    float y = l->relu && l->bn == IR_BN_BEFORE && beta[c] < 0 ? 0.0f : beta[c];
    for (int i = 0; i < x->n; i++)
      for (int64_t k = 0; k < plane; k++) x->act[i * ns + out + c * plane + k] = y;
  }
}

/* Whether conv layer l's kernels make the gradient of its pre-activation
 * from batch norm's output gradient (or under a fused pool, bn_pool_of,
 * the pool's) as they pack it (rt_conv_shape.bn), so that it is never
 * written: in training, batch norm before the ReLU (or none), the layer
 * alone writing dz (assign) and nothing reading it after (phase II's
 * passes read it). */
static int bn_dz_fused(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int li = (int)(l - x->g->layers);
  return l->kind == IR_CONV && l->bn == IR_BN_BEFORE && x->training && !x->use_live &&
         e->assign[li] && x->backend->bn_dz && x->backend->conv_bwd;
}

/* The fused max pool after layer l's batch norm and ReLU (bn_fusable), whose
 * last forward pooled from z, or NULL. */
static const struct bn_fuse *bn_pool_of(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int p = e->bnf[l - x->g->layers].pool;
  return p >= 0 && e->bnf[p].fused ? &e->bnf[p] : NULL;
}

/* Whether conv layer c's backward takes the gradient of the max pool
 * after it (pool_fusable) and routes it back itself: in training, on a
 * backend that can (pool_dy, with the ReLU fused), with c alive. */
static int pool_dy_fused(const hx *x, int c) {
  const host *e = (const host *)x;
  int p = e->pfu[c].pool;
  return p >= 0 && !x->g->layers[c].bn && x->training && !x->use_live && x->arch->alive[c] &&
         needs_dx(x, &x->g->layers[p]) && x->backend->pool_dy && x->backend->conv_bwd &&
         x->backend->fuses_relu;
}

/* Whether conv layer c's forward makes the output of the pool after it
 * in inference: nothing reads its own output but the pool (pool_plan),
 * and no backward will need it. */
static int pool_eval_fused(const hx *x, int c) {
  const host *e = (const host *)x;
  const ir_layer *l = &x->g->layers[c];
  return e->pfu[c].pool >= 0 && !x->training && !x->use_live && x->arch->alive[c] &&
         x->backend->fuses_relu && (!l->bn || eval_folded(x, l));
}

/* Conv layer l's own pool_fuse (its codes) when its last forward made
 * the output of the pool after it (conv_fwd_op decides: where its backward
 * will take the pool's gradient, on a backend that can), else NULL. */
static const struct pool_fuse *pool_made(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int p = e->pfu[l - x->g->layers].pool;
  return p >= 0 && e->pfu[p].made ? &e->pfu[l - x->g->layers] : NULL;
}

/* The pool whose gradient conv layer l's backward takes this pass (its
 * backward left it), or NULL. */
static const struct pool_fuse *pool_taken(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int p = e->pfu[l - x->g->layers].pool;
  return p >= 0 && e->pfu[p].taken ? &e->pfu[p] : NULL;
}

/* Whether conv layer l's weight gradient is taken by its reader's
 * backward in this pass (plan_remat's zg, rt_conv_shape.xg): its forward
 * left its normalisation to the reader (xleft), which makes l's output
 * gradient, and its batch norm takes its constants from the rows' sums
 * (bn_dz_fused, take_rows). */
static int grads_taken(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int li = (int)(l - x->g->layers), r = e->xdst[li];
  return e->zg[li] && r >= 0 && e->xleft[li] && needs_dx(x, &x->g->layers[r]) &&
         bn_dz_fused(x, l);
}

/* Whether conv layer l's backward writes its input gradient into its own
 * z (act, each sample's place) in this pass, where its producer's
 * backward then reads it (host.gz): not into dact, whose lines would be
 * one more tensor in the caches, when z's lines have just been read.
 * Its z is read by nothing after its kernels make dz from it
 * (bn_dz_fused), each sample's before they write its dx (rt_kernels.bn_dz),
 * and dx fits it; l's input is all of its producer's output (or its
 * fused pool's: plan_bn_x's pair, l the one reader), which l alone
 * writes the gradient of (planned_assign), and which that producer's
 * backward reads only in its own kernels and batch norm's sums
 * (bn_dz_fused, its gradient not taken). */
static int dx_in_z(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  int li = (int)(l - x->g->layers), src = e->xsrc[li];
  if (e->no_dx_z || src < 0 || l->kind != IR_CONV || !l->bn || !bn_dz_fused(x, l) ||
      remakes(x, l) >= 0 || !needs_dx(x, l) || !planned_assign(x, li) || !x->arch->alive[src])
    return 0;
  const ir_layer *p = &x->g->layers[src];
  int pl = e->bnf[src].pool, so = pl >= 0 ? pl : src; /* a pool: fused, or its op reads it */
  return p->kind == IR_CONV && p->bn && bn_dz_fused(x, p) && !grads_taken(x, p) &&
         !folded(x, p) && (pl < 0 || bn_pool_of(x, p)) && p->cout == l->cin &&
         e->plan->out_off[so] == e->plan->in_off[li] &&
         (int64_t)l->cin * l->h * l->w <= (int64_t)l->cout * l->oh * l->ow;
}

/* The rows' sums of producer r's batch norm (sums, the chunk's n
 * samples' rows) from what the reader's chunk took (rt_conv_shape.xg, or
 * xr folded): the sum of g (r->db) and the sum of g (z - mean), which is
 * W . A + (bias - mean) sum g since z = W x + bias (its own weights and
 * bias, not the folded ones r may carry) and A (r->dw) sums g x; the
 * chunk's whole sums in its first sample's row, the others 0. */
static void taken_rows(hx *x, const rt_conv_src *r, float *sums, int n) {
  const ir_layer *l = &x->g->layers[r->layer];
  const float *W = x->params + l->w_off, *bias = x->params + l->b_off;
  const float *mean = x->bn_save + l->s_off;
  const uint8_t *bmask = x->mask + l->b_off;
  int64_t per = l->n_w / l->cout;
  memset(sums, 0, (size_t)n * 2 * (size_t)l->cout * sizeof *sums);
  for (int c = 0; c < l->cout; c++) {
    double a = 0.0;
    for (int64_t u = 0; u < per; u++) a += (double)W[c * per + u] * r->dw[c * per + u];
    double b = rt_bias_counts(bmask, 0, c) ? bias[c] : 0.0, sg = r->db[c];
    sums[2 * c] = (float)sg, sums[2 * c + 1] = (float)(a + (b - mean[c]) * sg);
  }
}

/* Chunk c's sums over its samples' input patches of layer l (rt_im2col's
 * rows, T = cin k k of them): their sums B (T doubles) then their Gram
 * matrix G (T x T, the upper triangle), in e->gram's chunk c, each
 * sample's patches made in e->pcols' chunk c (sized for the largest such
 * layer when the host was made); a sample's in float (rt_gram; for one
 * plane's 3 x 3 patches rt_gram3x3, which makes no patches: the batch
 * norm template's conv1.0, 128 samples, 78-80 us against 165-167 made and
 * summed by rt_gram, 2026-12-05 on a 2-core AMD Zen 5 VM, where one sgemm
 * of OpenBLAS 0.3.21 took more, its small-matrix calls costing more than
 * their work), added in double. */
static void patch_chunk(const job *j, int chunk, int n0, int n1) {
  hx *x = j->x;
  const ir_layer *l = j->l;
  int T = l->cin * l->k * l->k, P = l->oh * l->ow;
  const host *e = (const host *)x;
  double *B = e->gram + (size_t)chunk * RT_GRAM, *G = B + T;
  memset(B, 0, RT_GRAM * sizeof *B);
  float *col = e->pcols + (size_t)chunk * e->pcols_len;
  assert((size_t)T * P <= e->pcols_len);
  rt_conv_shape s = conv_shape(x, l, 1);
  float b[RT_BN_GRAM_TAPS], c[RT_BN_GRAM_TAPS * RT_BN_GRAM_TAPS];
  /* one plane, 3 x 3, the same size out: from its autocorrelations */
  int ac = l->cin == 1 && l->k == 3 && l->stride == 1 && l->pad == 1 && l->oh == l->h &&
           l->ow == l->w && l->h >= 2 && l->w >= 2 &&
           (size_t)RT_GRAM3X3_PAD(l->h, l->w) <= e->pcols_len;
  for (int i = n0; i < n1; i++) {
    const float *xi = x->act + (int64_t)i * x->g->act_size + j->in;
    if (ac) {
      rt_gram3x3(l->h, l->w, xi, b, c, col);
    } else {
      rt_im2col(&s, xi, col);
      rt_gram(T, P, col, P, b, c);
    }
    for (int u = 0; u < T; u++) {
      B[u] += b[u];
      for (int t = u; t < T; t++) G[u * T + t] += c[u * T + t];
    }
  }
}

/* The batch's input patch sums of conv layer l (patch_chunk, the chunks
 * added in order) into out (RT_GRAM doubles): B, then G whole. */
static void patch_sums(hx *x, const ir_layer *l, int64_t in, double *out) {
  host *e = (host *)x;
  int T = l->cin * l->k * l->k;
  job j = {x, l, in, 0, 0, patch_chunk, (int64_t)x->n * l->oh * l->ow * T * (T + 1) / 2};
  int chunks = run_chunks(&j);
  double *B = e->gram, *G = B + T;
  for (int c = 1; c < chunks; c++)
    for (int k = 0; k < T + T * T; k++) B[k] += e->gram[(size_t)c * RT_GRAM + k];
  for (int u = 0; u < T; u++) /* the lower triangle */
    for (int t = 0; t < u; t++) G[u * T + t] = G[t * T + u];
  if (out != B) memcpy(out, B, (size_t)(T + T * T) * sizeof *out);
}

/* A folded conv layer's forward (plan_remat's zf), in training: its batch
 * norm's statistics from its input patches' sums B and Gram matrix G over
 * the batch (patch_sums, kept for bn_grad_of): with z = W x + bias, the
 * mean of z is bias + W B / N and its variance W C W^T, where C = G / N -
 * (B / N)(B / N)^T is the patches' covariance (N positions in all); then
 * the weights and bias its reader's kernels remake its output with (the
 * conv and the normalisation in one map): k W and k (bias - mean) + beta,
 * k = gamma / sqrt(var + eps). z is never made. The statistics are those
 * of rt_bn_fwd but for the rounding of their sums; a channel not worked
 * takes mean 0 and variance 0, as bn_fwd gives it. C's difference loses
 * digits as the patches' mean outgrows their spread (a mean of 1000
 * against a spread of 1 would leave about one); a first conv reads the
 * data set's images normalised to mean 0 and variance 1 a channel (the
 * app's rt_data_norm). */
static void fold_fwd(hx *x, const ir_layer *l, int64_t in, int64_t z) {
  host *e = (host *)x;
  int li = (int)(l - x->g->layers), T = l->cin * l->k * l->k;
  double *B = e->fgram + (size_t)li * RT_GRAM, *G = B + T;
  patch_sums(x, l, in, B);
  const float *W = x->params + l->w_off, *bias = x->params + l->b_off;
  const float *gamma = x->params + l->g_off, *beta = gamma + l->cout;
  const uint8_t *wm = x->mask + l->w_off, *bm = x->mask + l->b_off, *w = worked(x, l);
  float *rm = x->stats + l->s_off, *rv = rm + l->cout;
  float *sm = x->bn_save + l->s_off, *si = sm + l->cout, *sk = e->bn_scale + l->s_off;
  float *fw = e->fold + e->fold_off[li], *fb = fw + l->n_w;
  double N = (double)x->n * l->oh * l->ow, C[RT_BN_GRAM_TAPS][RT_BN_GRAM_TAPS];
  assert(N > 0); /* as rt_bn_fwd's in training */
  for (int u = 0; u < T; u++)
    for (int t = 0; t < T; t++) C[u][t] = G[u * T + t] / N - (B[u] / N) * (B[t] / N);
  for (int c = 0; c < l->cout; c++) {
    const float *wc = W + (int64_t)c * T;
    const uint8_t *mc = wm + (int64_t)c * T;
    double mu = 0.0, var = 0.0;
    if (!w || w[c]) {
      mu = rt_bias_counts(bm, 0, c) ? bias[c] : 0.0;
      for (int u = 0; u < T; u++) {
        if (!mc[u]) continue;
        double a = 0.0;
        for (int t = 0; t < T; t++) a += mc[t] ? (double)wc[t] * C[u][t] : 0.0;
        mu += (double)wc[u] * B[u] / N, var += (double)wc[u] * a;
      }
      if (var < 0.0) var = 0.0; /* rounding: W C W^T >= 0 */
    }
    double invstd = 1.0 / sqrt(var + RT_BN_EPS), unbiased = N > 1 ? var * N / (N - 1) : var;
    sm[c] = (float)mu, si[c] = (float)invstd, sk[c] = (float)(gamma[c] * invstd);
    rm[c] = (float)((1 - RT_BN_MOMENTUM) * rm[c] + RT_BN_MOMENTUM * mu);
    rv[c] = (float)((1 - RT_BN_MOMENTUM) * rv[c] + RT_BN_MOMENTUM * unbiased);
    fold_channel(x, l, c, sm[c], sk[c], fw, fb);
  }
  e->xleft[li] = XLEFT_FOLDED, e->xz[li] = z; /* for a late reader, host_channel_stats */
  memcpy(e->xbeta + l->s_off, beta, (size_t)l->cout * sizeof *e->xbeta);
}

/* Conv layer l's weight and bias gradients under its batch norm, its
 * reader having taken (grads_taken) into its gradient slots A, the weight
 * gradient of g (its output gradient through the ReLU, as if it were
 * z's), and bn_act_bwd the constants of dz = kg (g - gm) - kx (z - m).
 * With B and G the batch's patches' sums and Gram matrix (patch_chunk):
 *   dW[c][t] = kg (A[c][t] - gm B[t]) - kx (C[c][t] - m B[t]),
 *   C[c][t] = sum_u W[c][u] G[u][t] + bias[c] B[t], the sum of z x_t;
 *   db[c] = -kx (sum_u W[c][u] B[u] + N bias[c] - N m), from the sum of z.
 * Nothing reads z or dz: the same gradients as the kernels' backward, in
 * another order of the sums. */
static void bn_grad_of(hx *x, const ir_layer *l, int64_t in) {
  host *e = (host *)x;
  int T = l->cin * l->k * l->k;
  double *B = e->gram, *G;
  if (e->xleft[l - x->g->layers] == XLEFT_FOLDED) /* fold_fwd's, of the same input */
    B = e->fgram + (size_t)(l - x->g->layers) * RT_GRAM;
  else
    patch_sums(x, l, in, B);
  G = B + T;
  const float *W = x->params + l->w_off, *bias = x->params + l->b_off;
  const float *m = x->bn_save + l->s_off;
  const float *gm = e->bn_dzc + 3 * l->s_off, *kg = gm + l->cout, *kx = kg + l->cout;
  const uint8_t *wm = x->mask + l->w_off, *bmask = x->mask + l->b_off;
  float *dw = x->grads + l->w_off, *db = x->grads + l->b_off;
  double N = (double)x->n * l->oh * l->ow;
  for (int c = 0; c < l->cout; c++) {
    const float *w = W + (int64_t)c * T;
    double b = rt_bias_counts(bmask, 0, c) ? bias[c] : 0.0, sz = N * b;
    for (int u = 0; u < T; u++) sz += (double)w[u] * B[u];
    for (int t = 0; t < T; t++) {
      double cz = b * B[t];
      for (int u = 0; u < T; u++) cz += (double)w[u] * G[u * T + t];
      int64_t k = (int64_t)c * T + t;
      double v = kg[c] * (dw[k] - (double)gm[c] * B[t]) - kx[c] * (cz - (double)m[c] * B[t]);
      dw[k] = wm[k] ? (float)v : 0.0f;
    }
    db[c] = rt_bias_counts(bmask, 0, c) ? (float)(-(double)kx[c] * (sz - N * m[c])) : 0.0f;
  }
}

static void conv_bwd_chunk(const job *j, int chunk, int n0, int n1) {
  hx *x = j->x;
  const ir_layer *l = j->l;
  int64_t ns = x->g->act_size, o = (int64_t)n0 * ns;
  rt_conv_shape s = conv_shape(x, l, n1 - n0);
  float *db, *dw = wgrad_of(x, l, chunk, &db);
  rt_kernels *b = x->use_live ? x->live : x->backend;
  int li = (int)(l - x->g->layers);
  const host *e = (const host *)x;
  s.dx_assign = planned_assign(x, li); /* its slice was not cleared */
  int pr = remakes(x, l); /* then the producer's gradients, not dx */
  rt_conv_src xr;
  if (pr >= 0) xr = conv_src(x, pr, o, n1 - n0, chunk), s.xr = &xr;
  float *dx = pr < 0 && needs_dx(x, l) ? x->dact + o + j->in : NULL;
  if (dx && e->xsrc[li] >= 0 && e->gz[e->xsrc[li]] == j->z) dx = x->act + o + j->z; /* dx_in_z */
  rt_bn_x bx;
  s.xbn = x->use_live ? NULL : bn_x_of(x, l, o, &bx);
  int src = e->xsrc[li];
  /* its producer's batch norm takes the row sums from it */
  float *rows = src >= 0 && e->rows[src] ? e->bn_rows + (int64_t)x->cap * x->g->layers[src].s_off +
                                               (int64_t)n0 * 2 * x->g->layers[src].cout
                                         : NULL;
  if (s.xbn) bx.sums = rows;
  /* or its producer's weight gradient taken (xg), or remade folded (xr),
   * and the sums from it (taken_rows) */
  rt_conv_src gs;
  const rt_conv_src *took = NULL;
  if (s.xbn && rows && grads_taken(x, &x->g->layers[src]))
    gs = conv_src(x, src, o, n1 - n0, chunk), gs.s.relu = 0, s.xg = &gs, took = &gs;
  if (pr >= 0 && pr == src && rows) took = &xr;
  rt_bn_dz bn;
  if (l->bn && bn_dz_fused(x, l)) { /* the kernels make dz from batch norm's output gradient */
    const float *c = e->bn_dzc + 3 * l->s_off;
    const struct bn_fuse *pf = bn_pool_of(x, l); /* or from the pool's */
    bn = (rt_bn_dz){x->act + o + j->z, x->dact + o + j->z, x->bn_save + l->s_off,
                    e->bn_scale + l->s_off, x->params + l->g_off + l->cout, c, c + l->cout,
                    c + 2 * l->cout, l->relu, pf != NULL,
                    pf ? e->pcode + e->bnf[li].code + (int64_t)n0 * e->pcode_ns : NULL,
                    e->pcode_ns};
    s.bn = &bn;
    const float *dy = e->gz[li] >= 0 ? x->act + o + e->gz[li] /* in its reader's z */
                                     : x->dact + o + (pf ? pf->pout : j->out);
    check(x, b, b->conv_bwd(b, li, &s, x->act + o + j->in, dy, NULL, x->params + l->w_off, dx,
                            dw, db));
    if (took) taken_rows(x, took, rows, n1 - n0);
    return;
  }
  if (b->conv_bwd) {
    /* A backend that fuses the ReLU takes the activation's gradient and
     * applies the ReLU's as it packs it: dz is never written (phase II,
     * which reads dz for its dense gradient, runs on the live backend). */
    s.relu = !l->bn && l->relu && b->fuses_relu && !x->use_live;
    if (!l->bn && !s.relu) relu_bwd(x, l, j->z, j->out, n0, n1);
    const struct pool_fuse *pp = s.relu ? pool_taken(x, l) : NULL; /* and the pool's */
    if (pp) s.pooled = x->dact + o + j->out;
    const struct pool_fuse *pm = pp ? pool_made(x, l) : NULL; /* y was never written */
    if (pm)
      s.pcode = e->pcode + pm->code + (int64_t)n0 * e->pcode_ns, s.pcode_ns = (long)e->pcode_ns;
    check(x, b, b->conv_bwd(b, li, &s, x->act + o + j->in,
                x->dact + o + (pp ? pp->dy : s.relu ? j->out : j->z), x->act + o + j->out,
                x->params + l->w_off, dx, dw, db));
    if (took) taken_rows(x, took, rows, n1 - n0);
    return;
  }
  assert(pr < 0 && !took);
  if (!l->bn) relu_bwd(x, l, j->z, j->out, n0, n1);
  check(x, b, b->conv_bwd_weight(b, li, &s, x->act + o + j->in, x->dact + o + j->z, dw, db));
  if (needs_dx(x, l))
    check(x, b, b->conv_bwd_data(b, li, &s, x->dact + o + j->z, x->params + l->w_off,
                     x->dact + o + j->in));
}

/* Gradient of the pre-activation z of a layer with batch norm, through
 * the ReLU (its mask applied as batch norm reads dout) and batch norm,
 * split over channels. (Without batch norm, each chunk does relu_bwd
 * itself.) */
static void bn_act_bwd(hx *e, const ir_layer *ly, int64_t z, int64_t out, int fused) {
  int64_t ns = e->g->act_size, plane = (int64_t)ly->oh * ly->ow;
  host *h = (host *)e;
  const uint8_t *w = worked(e, ly);
  float *dgamma = e->grads + ly->g_off, *dbeta = dgamma + ly->cout;
  const float *sm = e->bn_save + ly->s_off, *si = sm + ly->cout, *sk = h->bn_scale + ly->s_off;
  /* a channel not worked: its gradient is 0, and so are gamma's and beta's
   * (and the constants of the dz the kernels make: 0 from zeros) */
  float *gm = h->bn_dzc + 3 * ly->s_off, *kg = gm + ly->cout, *kx = kg + ly->cout;
  for (int c = 0; w && c < ly->cout; c++)
    if (!w[c]) dgamma[c] = dbeta[c] = gm[c] = kg[c] = kx[c] = 0.0f;
  const struct bn_fuse *pf = bn_pool_of(e, ly);
  int li = (int)(ly - e->g->layers);
  const uint8_t *code = pf ? h->pcode + h->bnf[li].code : NULL; /* the pooling's windows */
  const float *zx = pf && pf->pre ? h->pzx + h->bnf[li].code : NULL; /* and their extremes */
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, ly->cout)) > c0; c0 = c1) {
    rt_bn_shape s = {e->n, c1 - c0, (int)plane, ns, ns, ly->ow};
    int64_t o = c0 * plane;
    if (fused) { /* the sums; the conv's kernels make dz as they pack it */
      const float *rows = h->rows[li] ? h->bn_rows + (int64_t)e->cap * ly->s_off + 2 * c0 : NULL;
      /* the output's gradient, or its pool's; or in its reader's z (dx_in_z) */
      const float *dy = h->gz[li] >= 0 ? e->act + h->gz[li] + (pf ? o / 4 : o)
                        : pf           ? e->dact + pf->pout + o / 4
                                       : e->dact + out + o;
      rt_bn_bwd_sums(h->pool, e->threads, &s, ly->relu, pf ? ly->ow : 0, pf ? ns : 0,
                     code ? code + o / 4 : NULL, h->pcode_ns, zx ? zx + o / 4 : NULL, rows,
                     2L * ly->cout, e->act + z + o, dy,
                     e->params + ly->g_off + c0, e->params + ly->g_off + ly->cout + c0, sm + c0,
                     si + c0, sk + c0, dgamma + c0, dbeta + c0, gm + c0, kg + c0, kx + c0);
      continue;
    }
    assert(h->gz[li] < 0);
    if (pf) { /* through the max pool, whose forward pooled from z */
      rt_bn_pool_bwd(h->pool, e->threads, &s, ly->ow, h->assign[li], code + o / 4, h->pcode_ns,
                     e->act + z + o, e->dact + pf->pout + o / 4, ns, e->params + ly->g_off + c0,
                     e->params + ly->g_off + ly->cout + c0, sm + c0, si + c0, sk + c0,
                     e->dact + z + o, dgamma + c0, dbeta + c0);
      continue;
    }
    /* in training the ReLU's mask is recomputed from z, not read */
    rt_bn_bwd(h->pool, e->threads, &s, ly->relu && ly->bn == IR_BN_BEFORE,
              h->assign[ly - e->g->layers], e->act + z + o, e->training ? NULL : e->act + out + o,
              e->dact + out + o, e->params + ly->g_off + c0, e->params + ly->g_off + ly->cout + c0,
              sm + c0, si + c0, sk + c0, e->dact + z + o, dgamma + c0, dbeta + c0);
  }
  h->rows[li] = 0; /* made for this backward only */
}

/* Whether layer ly's backward (a conv or a linear layer) takes the rows'
 * sums of the producer whose output its forward made from z (plan_bn_x;
 * under a pool, the pool's output): rows[producer]. */
static void take_rows(hx *x, const ir_layer *ly) {
  host *e = (host *)x;
  int src = e->xsrc[ly - x->g->layers];
  if (src >= 0)
    e->rows[src] = e->xleft[src] && !x->use_live && needs_dx(x, ly) &&
                   bn_dz_fused(x, &x->g->layers[src]);
}

static void conv_bwd_op(RT_OP_ARGS) {
  hx *e = X(x);
  const ir_layer *ly = &e->g->layers[l];
  if (!e->arch->alive[l]) {
    pass_bwd(e, ly, prev, out, 0);
    return;
  }
  if (remade(e, ly) && !folded(e, ly)) return; /* its consumer's backward made its gradients */
  int fused = ly->bn && bn_dz_fused(e, ly);
  if (ly->bn) bn_act_bwd(e, ly, z, out, fused);
  if (grads_taken(e, ly)) { /* its reader took A; its gradients from it */
    bn_grad_of(e, ly, in);
    return;
  }
  if (ly->bn == IR_BN_AFTER && ly->relu) { /* then the ReLU's: z > 0 where it passed */
    long plane = (long)ly->oh * ly->ow;
    const uint8_t *w = worked(e, ly);
    for (int c0 = 0, c1; (c1 = next_run(w, &c0, ly->cout)) > c0; c0 = c1)
      for (int i = 0; i < e->n; i++) {
        const float *y = e->act + i * e->g->act_size + z + c0 * plane;
        float *d = e->dact + i * e->g->act_size + z + c0 * plane;
        for (long k = 0; k < (c1 - c0) * plane; k++)
          if (!(y[k] > 0.0f)) d[k] = 0.0f;
      }
  }
  host *h = (host *)e;
  take_rows(e, ly);
  h->gpacked[l] = 0; /* conv gradients are dense */
  if (dx_in_z(e, ly)) h->gz[h->xsrc[l]] = z, h->dx_z_layers++; /* its input's gradient in its z */
  job j = {e, ly, in, z, out, conv_bwd_chunk, layer_work(e, ly)};
  int chunks = run_chunks(&j), pr = remakes(e, ly), src = h->xsrc[l];
  reduce_wgrad(e, ly, chunks);
  if (pr >= 0) reduce_wgrad(e, &e->g->layers[pr], chunks), h->gpacked[pr] = 0;
  if (src >= 0 && src != pr && h->rows[src] && grads_taken(e, &e->g->layers[src])) /* it took its producer's */
    reduce_wgrad(e, &e->g->layers[src], chunks), h->gpacked[src] = 0;
  if (h->pfu[l].pool >= 0) h->pfu[h->pfu[l].pool].taken = 0; /* taken for this pass only */
}

static rt_linear_shape lin_shape(const hx *x, const ir_layer *l, int n) {
  rt_linear_shape s = {.n = n, .in = l->cin, .out = l->cout, .x_ns = x->g->act_size,
                       .y_ns = x->g->act_size, .wgen = ((const host *)x)->wgen};
  return s;
}

/* The planes of a linear layer's input made from its producer's pool's
 * windows (a pool's output left to it, pool_left). */
static long lin_bn_hw(const hx *x, const ir_layer *l) {
  const host *e = (const host *)x;
  const ir_layer *p = &x->g->layers[e->bnf[e->xsrc[l - x->g->layers]].pool];
  return (long)p->oh * p->ow;
}

static void lin_fwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  hx *x = j->x;
  const ir_layer *l = j->l;
  int64_t ns = x->g->act_size, o = (int64_t)n0 * ns;
  rt_linear_shape s = lin_shape(x, l, n1 - n0);
  rt_kernels *b = x->use_live ? x->live : x->backend;
  rt_bn_x bx;
  const rt_bn_x *xb = x->use_live ? NULL : bn_x_of(x, l, o, &bx); /* the pool's output */
  if (xb && b->bn_x) /* made from its windows as the kernels read it */
    s.xbn = xb, s.xbn_hw = lin_bn_hw(x, l);
  else if (xb) /* written from them first */
    rt_bn_x_write(xb, n1 - n0, lin_bn_hw(x, l), (long)ns, x->act + o + j->in);
  int64_t dst = l->relu ? j->z : j->out;
  check(x, b, b->linear_fwd(b, (int)(l - x->g->layers), &s, x->act + o + j->in,
                x->params + l->w_off, x->params + l->b_off, x->act + o + dst));
  if (l->relu) relu_fwd(x, l, j->z, j->out, n0, n1);
}

static void linear_fwd_op(RT_OP_ARGS) {
  hx *e = X(x);
  const ir_layer *ly = &e->g->layers[l];
  if (!e->arch->alive[l]) {
    pass_fwd(e, ly, prev, out);
    return;
  }
  job j = {e, ly, in, z, out, lin_fwd_chunk, layer_work(e, ly)};
  run_chunks(&j);
}

static void lin_bwd_chunk(const job *j, int chunk, int n0, int n1) {
  hx *x = j->x;
  const ir_layer *l = j->l;
  int64_t ns = x->g->act_size, o = (int64_t)n0 * ns;
  rt_linear_shape s = lin_shape(x, l, n1 - n0);
  int64_t dz = l->relu ? j->z : j->out;
  float *db, *dw = wgrad_of(x, l, chunk, &db);
  rt_kernels *b = x->use_live ? x->live : x->backend;
  int li = (int)(l - x->g->layers);
  const host *e = (const host *)x;
  int src = e->xsrc[li];
  rt_bn_x bx;
  const rt_bn_x *xb = x->use_live ? NULL : bn_x_of(x, l, o, &bx); /* the pool's output */
  if (xb && src >= 0 && e->rows[src]) /* its producer's sums, from dx */
    bx.sums = e->bn_rows + (int64_t)x->cap * x->g->layers[src].s_off +
              (int64_t)n0 * 2 * x->g->layers[src].cout;
  else
    bx.sums = NULL;
  if (xb && b->bn_x) s.xbn = xb, s.xbn_hw = lin_bn_hw(x, l); /* the kernels take them */
  if (l->relu && !l->bn) relu_bwd(x, l, j->z, j->out, n0, n1);
  if (b->linear_bwd) {
    check(x, b, b->linear_bwd(b, li, &s, x->act + o + j->in, x->dact + o + dz, x->params + l->w_off,
                  needs_dx(x, l) ? x->dact + o + j->in : NULL, dw, db));
  } else {
    check(x, b, b->linear_bwd_weight(b, li, &s, x->act + o + j->in, x->dact + o + dz, dw, db));
    if (needs_dx(x, l))
      check(x, b, b->linear_bwd_data(b, li, &s, x->dact + o + dz, x->params + l->w_off,
                         x->dact + o + j->in));
  }
  if (xb && bx.sums && !s.xbn) /* the sums, where the kernels did not take them */
    for (int i = 0; i < n1 - n0; i++)
      rt_bn_x_sums(xb, i, lin_bn_hw(x, l), (long)ns, x->dact + o + i * ns + j->in);
}

static void linear_bwd_op(RT_OP_ARGS) {
  hx *e = X(x);
  const ir_layer *ly = &e->g->layers[l];
  if (!e->arch->alive[l]) {
    pass_bwd(e, ly, prev, out, 0);
    return;
  }
  if (ly->relu && ly->bn) bn_act_bwd(e, ly, z, out, 0);
  host *ei = (host *)e;
  take_rows(e, ly);
  ei->gpacked[l] = !e->use_live && ei->pidx[l];
  job j = {e, ly, in, z, out, lin_bwd_chunk, layer_work(e, ly)};
  reduce_wgrad(e, ly, run_chunks(&j));
}

static rt_pool_shape pool_shape(const hx *x, const ir_layer *l) {
  rt_pool_shape s = {x->n, l->cin, l->h, l->w, l->k, x->g->act_size, x->g->act_size};
  return s;
}

/* Over the worked channels: a channel that is not holds 0 in and out,
 * and its gradients too. */
static void pool_fwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  rt_pool_shape s = pool_shape(j->x, j->l);
  const uint8_t *w = worked(j->x, j->l);
  int64_t ip = (int64_t)j->l->h * j->l->w, op = (int64_t)j->l->oh * j->l->ow;
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, j->l->cin)) > c0; c0 = c1) {
    s.c = c1 - c0;
    rt_maxpool_fwd(&s, n0, n1, j->x->act + j->in + c0 * ip, j->x->act + j->out + c0 * op);
  }
}

static void pool_bwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  rt_pool_shape s = pool_shape(j->x, j->l);
  const host *e = (const host *)j->x;
  const uint8_t *w = worked(j->x, j->l);
  int64_t ip = (int64_t)j->l->h * j->l->w, op = (int64_t)j->l->oh * j->l->ow;
  int li = (int)(j->l - j->x->g->layers);
  int assign = e->assign[li] || planned_assign(j->x, li);
  for (int c0 = 0, c1; (c1 = next_run(w, &c0, j->l->cin)) > c0; c0 = c1) {
    s.c = c1 - c0;
    rt_maxpool_bwd(&s, n0, n1, j->x->act + j->in + c0 * ip, j->x->dact + j->out + c0 * op,
                   j->x->dact + j->in + c0 * ip, assign);
  }
}

/* Every channel of layer l worked by this pass. */
static int all_worked(const hx *x, const ir_layer *l) {
  int c = 0;
  return next_run(worked(x, l), &c, l->cout) == l->cout && c == 0;
}

/* Whether pool layer p after conv layer c (bn_fusable), whose forward
 * left it its batch norm and took the windows (f->pre), leaves its output
 * to the conv that alone reads it (plan_bn_x): that conv's packing maps
 * the windows' extremes, and its backward takes the sums (rt_bn_x.sums)
 * and zeroes the gradient where the ReLU stopped (rt_bn_x.stops), so
 * that nothing writes the output or marks the codes. Only where that
 * backward will take them (conv_bwd_op's rows), every channel worked. */
static int pool_left(const hx *x, int c, int p, const struct bn_fuse *f) {
  const host *e = (const host *)x;
  int r = e->xdst[c];
  return r >= 0 && f->pre && x->training && !x->use_live && !e->layout_bounds &&
         needs_dx(x, &x->g->layers[r]) && bn_dz_fused(x, &x->g->layers[c]) &&
         all_worked(x, &x->g->layers[c]) && all_worked(x, &x->g->layers[p]);
}

static void maxpool_fwd_op(RT_OP_ARGS) {
  (void)prev;
  hx *e = X(x);
  if (((host *)e)->pfu[l].made) return; /* its conv's forward made its output */
  struct bn_fuse *f = &((host *)e)->bnf[l];
  int pend = f->pend;
  f->pend = f->fused = 0;
  if (pend) { /* its input's batch norm is to be applied (bn_fusable) */
    int c = pend - 1;
    if (in == f->out) {
      f->fused = 1, f->pout = out;
      if (pool_left(e, c, (int)l, f)) { /* its reader makes the output from the windows */
        const ir_layer *ly = &e->g->layers[c];
        host *h = (host *)e;
        h->xleft[c] = 1;
        memcpy(h->xbeta + ly->s_off, e->params + ly->g_off + ly->cout,
               (size_t)ly->cout * sizeof *h->xbeta);
        return;
      }
      bn_out(e, c, f->z, -1, out);
      return;
    }
    bn_out(e, c, f->z, f->out, -1); /* it reads another tensor: the conv's own output */
  }
  job j = {e, &e->g->layers[l], in, z, out, pool_fwd_chunk, 0};
  run_chunks(&j);
}

static void maxpool_bwd_op(RT_OP_ARGS) {
  (void)prev;
  hx *e = X(x);
  host *h = (host *)e;
  if (h->bnf[l].fused) return; /* the conv's backward takes its gradient */
  struct pool_fuse *f = &h->pfu[l];
  f->taken = f->conv >= 0 && (f->made || pool_dy_fused(e, f->conv)); /* made: y is not there */
  if (f->taken) { /* so does a conv's without batch norm, routing it back itself */
    f->dy = out;
    return;
  }
  job j = {e, &e->g->layers[l], in, z, out, pool_bwd_chunk, 0};
  if (needs_dx(e, j.l)) run_chunks(&j);
}

/* Global average pooling, split over the threads like the layers around
 * it (the reference's arithmetic, sample by sample). */
static void gap_fwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  int64_t ns = j->x->g->act_size, o = n0 * ns;
  rt_ref_gap_fwd(n1 - n0, j->l->cin, j->l->h * j->l->w, j->x->act + o + j->in, ns,
                 j->x->act + o + j->out, ns);
}

static void gap_grad(const job *j, int n0, int n1, int assign) {
  int64_t ns = j->x->g->act_size, o = n0 * ns;
  rt_ref_gap_bwd(n1 - n0, j->l->cin, j->l->h * j->l->w, j->x->dact + o + j->out, ns,
                 j->x->dact + o + j->in, ns, assign);
}

static void gap_bwd_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  gap_grad(j, n0, n1, 0);
}

/* Into a slice that was not cleared (plan_dx_assign). */
static void gap_set_chunk(const job *j, int chunk, int n0, int n1) {
  (void)chunk;
  gap_grad(j, n0, n1, 1);
}

static void gap_fwd_op(RT_OP_ARGS) {
  (void)z, (void)prev;
  hx *e = X(x);
  job j = {e, &e->g->layers[l], in, -1, out, gap_fwd_chunk, 0};
  run_chunks(&j);
}

static void gap_bwd_op(RT_OP_ARGS) {
  (void)z, (void)prev;
  hx *e = X(x);
  job j = {e, &e->g->layers[l], in, -1, out, planned_assign(e, l) ? gap_set_chunk : gap_bwd_chunk,
           0};
  if (needs_dx(e, j.l)) run_chunks(&j);
}

static void copy_fwd_op(RT_OP_ARGS) {
  (void)z;
  hx *e = X(x);
  pass_fwd(e, &e->g->layers[l], in, out);
  (void)prev;
}

static void copy_bwd_op(RT_OP_ARGS) {
  (void)z;
  hx *e = X(x);
  if (needs_dx(e, &e->g->layers[l])) pass_bwd(e, &e->g->layers[l], in, out, planned_assign(e, l));
  (void)prev;
}

/* ---- the driver, and phase II's dense gradient ---- */

static void run_calls(hx *x, const ir_call *calls, int n);

static void host_set_driver(rt_backend *b, rt_graph_fn fwd, rt_graph_fn bwd) {
  host *e = (host *)b;
  e->fwd = fwd, e->bwd = bwd;
}

/* Before a pass: the backend's kernels that phase II deferred, where the
 * pass runs on the backend. */
static int ready(hx *x) { return ((host *)x)->deferred && !x->use_live ? prepare_backend(x) : 0; }

static int host_forward(rt_backend *b) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  if (ready(x)) return -1;
  e->fwd_aliased = !x->use_live && !e->layout_bounds;
  if (e->replan && x->mask) replan(e);
  /* in inference, batch norm maps the channels that are not worked to
   * their beta, 0, when it knows which cannot vary (bn_constants) */
  int on_plan = e->fwd_aliased && (x->training || e->varies);
  e->narrow = on_plan && e->clean;
  e->narrow_passes += e->narrow && x->training;
  e->full_fwd = on_plan && x->training && !e->narrow;
  if (!on_plan) e->clean = 0;
  if (e->fwd) e->fwd(x);
  else run_calls(x, e->fc, e->nf);
  return op_status(x);
}

static int host_backward(rt_backend *b) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  if (ready(x)) return -1;
  e->gedit = 0;
  for (int i = 0; i < x->g->n_layers; i++) e->gz[i] = -1;
  e->dx_z_layers = 0;
  if (e->bwd) e->bwd(x);
  else run_calls(x, e->bc, e->nb);
  int rc = op_status(x);
  if (!rc && e->full_fwd && !x->use_live && x->training) e->clean = 1;
  e->full_fwd = 0;
  return rc;
}

/* The four operations, one after another (the step is the host's). */
static int host_train_step(rt_backend *b, const ir_label *labels, float lr, float momentum, float decay,
                           double *loss, int *correct) {
  return host_forward(b) || host_loss(b, labels, 1, loss, correct) || host_backward(b) ||
                 host_sgd(b, lr, momentum, decay)
             ? -1
             : 0;
}

static int host_run(rt_backend *b, const ir_call *calls, int n) {
  host *e = (host *)b;
  if (ready((hx *)b)) return -1;
  e->narrow = e->clean = e->full_fwd = 0; /* calls of any kind: nothing assumed */
  run_calls((hx *)b, calls, n);
  return op_status((hx *)b);
}

static void host_phase2(rt_backend *b, int on) { ((hx *)b)->use_live = on; }

static void host_set_training(rt_backend *b, int on) { ((hx *)b)->training = on; }

static rt_backend_stats host_stats(const rt_backend *b) { return ((const host *)b)->stats; }

static rt_kernels *host_kernels(rt_backend *b) { return ((hx *)b)->backend; }

void rt_host_layout_bounds(rt_backend *b, int on) { ((host *)b)->layout_bounds = on; }

void rt_host_remat(rt_backend *b, int on) { ((host *)b)->no_remat = !on, ((host *)b)->replan = 1; }
void rt_host_fold(rt_backend *b, int on) { ((host *)b)->no_fold = !on, ((host *)b)->replan = 1; }
void rt_host_dx_in_z(rt_backend *b, int on) { ((host *)b)->no_dx_z = !on; }
int rt_host_dx_in_z_layers(const rt_backend *b) { return ((const host *)b)->dx_z_layers; }

int rt_host_remade(const rt_backend *b) {
  const host *e = (const host *)b;
  int n = 0;
  for (int i = 0; i < e->pub.g->n_layers; i++) n += (e->xrby[i] >= 0) + e->zg[i];
  return n;
}

int rt_host_folded(const rt_backend *b) {
  const host *e = (const host *)b;
  int n = 0;
  for (int i = 0; i < e->pub.g->n_layers; i++) n += e->zf[i];
  return n;
}

long rt_host_narrow_passes(const rt_backend *b) { return ((const host *)b)->narrow_passes; }

void rt_host_arena(rt_backend *b, float **act, float **dact, float **grads, size_t *floats) {
  hx *x = (hx *)b;
  ((host *)b)->clean = 0; /* the caller may write them */
  *act = x->act, *dact = x->dact, *grads = x->grads;
  *floats = (size_t)x->cap * (size_t)x->g->act_size;
}

/* A folded layer's output as its last forward's reader remade it (after
 * that forward the SGD step may have moved its weights; fold holds the
 * ones it took): relu(k W x + k (bias - mean) + beta), every channel's
 * bias counting (rt_conv_shape.bias_all), on the backend's kernels. */
static int fold_out(hx *x, const ir_layer *l) {
  host *e = (host *)x;
  int li = (int)(l - x->g->layers);
  const float *fw = e->fold + e->fold_off[li], *fb = fw + l->n_w;
  rt_conv_shape s = conv_shape(x, l, x->n);
  s.relu = 1, s.bias_all = 1;
  rt_kernels *b = x->backend;
  int rc = b->conv_fwd(b, li, &s, x->act + e->plan->in_off[li], fw, fb,
                       x->act + e->plan->out_off[li]);
  check(x, b, rc); /* reported by the next operation too */
  return rc ? -1 : 0;
}

static int host_channel_stats(rt_backend *b, int li, double *mean, double *var, double *min) {
  hx *x = (hx *)b;
  const ir_graph *g = x->g;
  const ir_layer *l = &g->layers[li];
  if (x->n < 1) return -1;
  int64_t plane = (int64_t)l->oh * l->ow, ns = g->act_size;
  host *e = (host *)x;
  int64_t off = e->fwd_aliased ? e->plan->out_off[li]
                               : g->tensors[l->out_t].off + (int64_t)l->out_ch * plane;
  int src = e->fwd_aliased ? e->plan->alias[li] : li; /* whose output slice it is */
  /* an output its forward left to its reader (plan_bn_x), written now as
   * bn_fwd would have: the worked channels of a narrow pass (under a
   * pool, the pool's output is what was left, below) */
  if (e->xleft[src] == XLEFT_FOLDED) { /* as its reader remade it: folded, no z */
    if (fold_out(x, &g->layers[src])) return -1;
    e->xleft[src] = 0;
  }
  if (e->xleft[src] && e->bnf[src].pool < 0) {
    const ir_layer *p = &g->layers[src];
    const uint8_t *w = worked(x, p);
    for (int c0 = 0, c1; (c1 = next_run(w, &c0, p->cout)) > c0; c0 = c1) {
      rt_bn_shape s = {x->n, c1 - c0, (int)plane, ns, ns, p->ow};
      rt_bn_out(e->pool, x->threads, &s, p->relu, p->ow, x->act + e->xz[src] + c0 * plane,
                e->xbeta + p->s_off + c0, x->bn_save + p->s_off + c0,
                e->bn_scale + p->s_off + c0, x->act + e->plan->out_off[src] + c0 * plane, NULL,
                ns, NULL, 0);
    }
    e->xleft[src] = 0;
  }
  for (int c = 0; c < g->n_layers; c++) /* a pool's output that its reader made (pool_left) */
    if (e->bnf[c].pool == src && e->xleft[c]) {
      const ir_layer *p = &g->layers[c];
      int64_t code = e->bnf[c].code;
      rt_bn_shape s = {x->n, p->cout, p->oh * p->ow, ns, ns, p->ow};
      rt_bn_pool_out(e->pool, x->threads, &s, p->ow, e->pzx + code, e->xbeta + p->s_off,
                     x->bn_save + p->s_off, e->bn_scale + p->s_off, x->act + e->bnf[src].pout,
                     ns, e->pcode + code, e->pcode_ns);
      e->xleft[c] = 0;
    }
  rt_ref_channel_stats(x->n, l->cout, plane, ns, x->act + off, mean, var, min);
  return 0;
}

static const float *host_view(rt_backend *b, rt_state which) {
  hx *x = (hx *)b;
  host *e = (host *)x;
  switch (which) {
  case RT_PARAMS: return x->params;
  case RT_MOMENTUM: return x->mom;
  case RT_STATS: return x->stats;
  case RT_GRADS: /* an edit stands until the sgd applies it */
    if (!e->gedit) grads_dense(x, e->gdense);
    return e->gdense;
  case RT_LOGITS: {
    const ir_graph *g = x->g;
    int k = g->cfg.classes;
    for (int i = 0; i < x->n; i++)
      memcpy(x->logits + i * k, x->act + i * g->act_size + g->tensors[g->logits_t].off,
             (size_t)k * sizeof(float));
    return x->logits;
  }
  }
  return NULL;
}

static float *host_edit(rt_backend *b, rt_state which) {
  hx *x = (hx *)b;
  /* beta and its momentum decide which channels are worked */
  if (which == RT_PARAMS || which == RT_MOMENTUM) ((host *)x)->replan = 1;
  switch (which) {
  case RT_PARAMS: return params_write(x);
  case RT_MOMENTUM: return x->mom;
  case RT_STATS: return x->stats;
  case RT_GRADS:
    if (!((host *)x)->gedit) grads_dense(x, ((host *)x)->gdense);
    ((host *)x)->gedit = 1;
    return ((host *)x)->gdense;
  case RT_LOGITS: break;
  }
  return NULL;
}

static int host_take_state(rt_backend *b, rt_backend *from, const rt_run *r, int64_t n, unsigned what) {
  host *e = (host *)b, *f = (host *)from;
  float *to[4] = {what & RT_TAKE_PARAMS ? host_edit(b, RT_PARAMS) : NULL,
                  what & RT_TAKE_MOMENTUM ? host_edit(b, RT_MOMENTUM) : NULL};
  const float *fr[4] = {f->params, ((hx *)from)->mom};
  for (int s = 0; s < 2; s++)
    if (what & (RT_TAKE_SLOT0 << s)) {
      to[2 + s] = rt_p2_slot(&e->p2, b, s, 1), fr[2 + s] = rt_p2_slot(&f->p2, from, s, 0);
      if (!to[2 + s] || !fr[2 + s]) {
        snprintf(b->error, sizeof b->error, "out of memory for phase II's gradients");
        return -1;
      }
    }
  for (int w = 0; w < 4; w++)
    for (int64_t k = 0; to[w] && k < n; k++) memcpy(to[w] + r[k].to, fr[w] + r[k].from, (size_t)r[k].len * sizeof(float));
  return 0;
}

static int host_set_range(rt_backend *b, rt_state which, int64_t start, int64_t len, const float *values) {
  float *d = host_edit(b, which) + start;
  if (values) memcpy(d, values, (size_t)len * sizeof *d);
  else memset(d, 0, (size_t)len * sizeof *d);
  return 0;
}

/* One thread's share of a conv layer's dense weight gradient: samples
 * [n * t / T, n * (t + 1) / T), added into dw and db (thread 0's) or into
 * a zeroed partial of its own. */
typedef struct dg_job {
  hx *x;
  const ir_layer *l;
  const float *in, *dz; /* sample 0's input and pre-activation gradient */
  int64_t x_ns, dz_ns;
  int T;
  float *dw, *db;
} dg_job;

static void dg_conv_task(void *arg, int t) {
  const dg_job *j = arg;
  host *e = (host *)j->x;
  const ir_layer *l = j->l;
  rt_conv_shape cs = {.n = 1, .cin = l->cin, .h = l->h, .w = l->w, .cout = l->cout,
                      .k = l->k, .stride = l->stride, .pad = l->pad};
  rt_conv_shape_finish(&cs);
  int ohw = l->oh * l->ow, fan = (int)ir_fan_in(l), n = j->x->n;
  float *col = e->dg_cols + t * e->dg_col;
  float *dw = t ? e->dg_parts + (t - 1) * e->dg_part : j->dw, *db = t ? dw + l->n_w : j->db;
  if (t) memset(dw, 0, (size_t)(l->n_w + l->cout) * sizeof(float));
  for (int i = (int)((int64_t)n * t / j->T); i < (int)((int64_t)n * (t + 1) / j->T); i++) {
    rt_im2col(&cs, j->in + i * j->x_ns, col);
    const float *d = j->dz + i * j->dz_ns;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l->cout, fan, ohw, 1.0f, d, ohw, col,
                ohw, 1.0f, dw, fan);
    for (int c = 0; c < l->cout; c++) {
      float acc = 0;
      for (int q = 0; q < ohw; q++) acc += d[c * ohw + q];
      db[c] += acc;
    }
  }
}

/* The host's scratch for dg_conv_task; -1 when out of memory. */
static int dg_scratch(host *e) {
  if (e->dg_cols) return 0;
  const ir_graph *g = e->pub.g;
  int64_t col = 1, part = 1;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (l->kind != IR_CONV) continue;
    if (ir_fan_in(l) * l->oh * l->ow > col) col = ir_fan_in(l) * l->oh * l->ow;
    if (l->n_w + l->cout > part) part = l->n_w + l->cout;
  }
  int T = e->pub.threads;
  e->dg_cols = malloc((size_t)T * (size_t)col * sizeof(float));
  e->dg_parts = malloc((size_t)(T > 1 ? T - 1 : 1) * (size_t)part * sizeof(float));
  if (!e->dg_cols || !e->dg_parts) {
    free(e->dg_cols), free(e->dg_parts);
    e->dg_cols = e->dg_parts = NULL;
    return -1;
  }
  e->dg_col = col, e->dg_part = part;
  return 0;
}

/* Layer l's dense gradient on the host, added into dw and db: one GEMM
 * for a linear layer; for a conv, per sample im2col and one GEMM, the
 * samples split over the threads and summed in thread order, so that a
 * run is deterministic. */
static int host_dense_wgrad(hx *x, const ir_layer *l, const float *in, int64_t x_ns,
                            const float *dz, int64_t dz_ns, float *dw, float *db) {
  host *e = (host *)x;
  if (l->kind == IR_LINEAR) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->cout, l->cin, x->n, 1.0f, dz,
                (int)dz_ns, in, (int)x_ns, 1.0f, dw, l->cin);
    for (int i = 0; i < x->n; i++)
      for (int c = 0; c < l->cout; c++) db[c] += dz[i * dz_ns + c];
    return 0;
  }
  if (dg_scratch(e)) return -1;
  int T = x->threads < x->n ? x->threads : x->n;
  if (T < 1 || !e->pool) T = 1;
  dg_job j = {x, l, in, dz, x_ns, dz_ns, T, dw, db};
  if (T > 1) rt_pool_run(e->pool, T, dg_conv_task, &j);
  else dg_conv_task(&j, 0);
  for (int t = 1; t < T; t++) {
    const float *p = e->dg_parts + (t - 1) * e->dg_part;
    for (int64_t k = 0; k < l->n_w; k++) dw[k] += p[k];
    for (int c = 0; c < l->cout; c++) db[c] += p[l->n_w + c];
  }
  return 0;
}

static int host_dense_grad(rt_backend *b_, const float *in, const ir_label *labels, int n,
                           float *out, double *loss) {
  hx *x = (hx *)b_;
  char *err = b_->error;
  size_t errlen = sizeof b_->error;
  host *e = (host *)x;
  const ir_graph *g = x->g;
  rt_kernels *b = x->backend;
  int dense = b->conv_dense_wgrad && b->linear_dense_wgrad;
  /* The passes run on the live backend (phase II flips masks between
   * them). A live layer's dense gradient comes from the training
   * backend where it has one, else out of the live backend's backward
   * itself, unmasked. A dead layer passes its input through; it revives
   * as the identity followed by a ReLU, so the gradient of its
   * pre-activation is dout * (out > 0); with batch norm after the ReLU, a
   * bias lifts its input above 0 at revival (rt_exec_set_alive), so dout. */
  int was = x->use_live;
  x->use_live = 1, x->live->unmasked_wgrad = !dense;
  host_upload(b_, in, n);
  int rc = host_forward(b_);
  if (!rc) rc = host_loss(b_, labels, 1, loss, NULL);
  if (!rc) rc = host_backward(b_);
  x->live->unmasked_wgrad = 0, x->use_live = was;
  if (rc) return -1;
  int64_t ns = g->act_size;
  for (int li = 0; li < g->n_layers; li++) {
    const ir_layer *l = &g->layers[li];
    if (l->w_off < 0 || (l->kind != IR_CONV && l->kind != IR_LINEAR)) continue;
    const ir_tensor *ti = &g->tensors[l->in_t], *to = &g->tensors[l->out_t];
    int64_t ioff = ti->off + (int64_t)l->in_ch * l->h * l->w;
    int64_t ooff = to->off + (int64_t)l->out_ch * l->oh * l->ow;
    const float *dz;
    int64_t dz_ns = ns, len = (int64_t)l->cout * l->oh * l->ow;
    if (x->arch->alive[li]) {
      if (!dense) {
        for (int64_t i = 0; i < l->n_w; i++) out[l->w_off + i] += x->grads[l->w_off + i];
        for (int c = 0; c < l->cout; c++) out[l->b_off + c] += x->grads[l->b_off + c];
        continue;
      }
      dz = x->dact + (l->z_t >= 0 ? g->tensors[l->z_t].off : ooff);
    } else {
      float *d = x->scratch;
      for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < len; k++)
          d[i * len + k] = x->act[i * ns + ooff + k] > 0 || l->bn == IR_BN_AFTER
                               ? x->dact[i * ns + ooff + k] : 0.0f;
      if (l->bn && x->training) {
        /* Revived, its batch norm is the identity on this batch's
         * statistics (gamma sqrt(var + eps)); its backward on batch
         * statistics still takes out, per channel, the mean and the part
         * along x^ (the pass-through normalised): d - mean(d) - x^ mean(d x^). */
        int64_t plane = (int64_t)l->oh * l->ow;
        double cnt = (double)n * (double)plane;
        for (int c = 0; c < l->cout; c++) {
          double s = 0, q = 0, sd = 0, sdx = 0;
          for (int i = 0; i < n; i++)
            for (int64_t k = c * plane; k < (c + 1) * plane; k++) s += x->act[i * ns + ooff + k];
          double mean = s / cnt;
          for (int i = 0; i < n; i++)
            for (int64_t k = c * plane; k < (c + 1) * plane; k++) {
              double v = x->act[i * ns + ooff + k] - mean;
              q += v * v;
            }
          double inv = 1.0 / sqrt(q / cnt + RT_BN_EPS);
          for (int i = 0; i < n; i++)
            for (int64_t k = c * plane; k < (c + 1) * plane; k++) {
              double xh = (x->act[i * ns + ooff + k] - mean) * inv;
              sd += d[i * len + k], sdx += d[i * len + k] * xh;
            }
          for (int i = 0; i < n; i++)
            for (int64_t k = c * plane; k < (c + 1) * plane; k++) {
              double xh = (x->act[i * ns + ooff + k] - mean) * inv;
              d[i * len + k] = (float)(d[i * len + k] - sd / cnt - xh * sdx / cnt);
            }
        }
      }
      dz = d, dz_ns = len;
    }
    const float *xin = x->act + ioff;
    float *dw = out + l->w_off, *db = out + l->b_off;
    int rc;
    if (dense) {
      e->stats.dense_backend++;
      if (l->kind == IR_CONV) {
        rt_conv_shape s = {.n = n, .cin = l->cin, .h = l->h, .w = l->w, .cout = l->cout,
                           .k = l->k, .stride = l->stride, .pad = l->pad, .x_ns = ns,
                           .y_ns = dz_ns};
        rt_conv_shape_finish(&s);
        rc = b->conv_dense_wgrad(b, li, &s, xin, dz, dw, db, err, errlen);
      } else {
        rt_linear_shape s = {.n = n, .in = l->cin, .out = l->cout, .x_ns = ns, .y_ns = dz_ns};
        rc = b->linear_dense_wgrad(b, li, &s, xin, dz, dw, db, err, errlen);
      }
    } else {
      e->stats.dense_host++;
      rc = host_dense_wgrad(x, l, xin, ns, dz, dz_ns, dw, db);
      if (rc) snprintf(err, errlen, "out of memory for phase II's dense gradient");
    }
    if (rc) return -1;
  }
  return 0;
}

/* ---- the graph ops, timed per layer and direction under a profile ---- */

/* Where layer l reads and writes: its own graph's offsets (the driver's
 * constants are those of the graph it was emitted for, which may be the
 * bounds of a compact graph's, packed.h), and under the plan a dead layer
 * that aliases its predecessor (plan.h) does nothing, and a layer that
 * reads an alias reads its source. Phase II's passes (use_live) copy
 * every dead layer, since its dense gradient reads each one's own
 * output. 0: skip the op. */
static int route(host *e, int64_t l, int64_t *in, int64_t *z, int64_t *out, int64_t *prev) {
  const rt_plan *p = e->plan;
  const int64_t *a = e->fc[l].args; /* the schedule's call for layer l */
  *in = a[1], *z = a[2], *out = a[3], *prev = a[4];
  if (e->pub.use_live || e->layout_bounds) return 1;
  if (p->alias[l] != l && !e->pub.arch->alive[l]) return 0;
  *in = p->in_off[l];
  if (*prev >= 0) *prev = p->prev_off[l];
  return 1;
}

#define TIMED_OP(name, dir)                                         \
  void rt_op_##name(RT_OP_ARGS) {                                   \
    host *e = x;                                               \
    if (!route(e, l, &in, &z, &out, &prev)) return;             \
    if (!e->prof) {                                                 \
      name##_op(x, l, in, z, out, prev);                            \
      return;                                                       \
    }                                                               \
    double t0 = prof_now();                                         \
    name##_op(x, l, in, z, out, prev);                              \
    e->prof[PROF_LAYER + 2 * l + (dir)] += prof_now() - t0;         \
  }
#define IR_OP(K, name, what) TIMED_OP(name##_fwd, 0) TIMED_OP(name##_bwd, 1)
#include "ir/ops.def"
#undef IR_OP
#undef TIMED_OP

typedef void (*op_fn)(RT_OP_ARGS);
static const struct {
  const char *name;
  op_fn fn;
} ops[] = {
#define IR_OP(K, name, what) {"rt_op_" #name "_fwd", rt_op_##name##_fwd}, \
                             {"rt_op_" #name "_bwd", rt_op_##name##_bwd},
#include "ir/ops.def"
#undef IR_OP
};

static void run_calls(hx *x, const ir_call *calls, int n) {
  for (int i = 0; i < n; i++) {
    const ir_call *c = &calls[i];
    op_fn fn = NULL;
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
      if (strcmp(ops[k].name, c->fn) == 0) fn = ops[k].fn;
    assert(fn && c->nargs == 5);
    fn(x, c->args[0], c->args[1], c->args[2], c->args[3], c->args[4]);
  }
}

/* Phase II's operations: p2.h's, over this step's dense_grad and views. */
static int host_p2_grad(rt_backend *b, int slot, const float *images, const ir_label *labels, int count, int n,
                        double *loss) {
  return rt_p2_grad(&((host *)b)->p2, b, slot, images, labels, count, n, loss);
}
static int host_p2_top(rt_backend *b, int64_t k, rt_unit *out, int64_t *got) {
  return rt_p2_top(&((host *)b)->p2, b, k, out, got);
}
static int host_p2_score(rt_backend *b, rt_unit *u, int64_t n) { return rt_p2_score(&((host *)b)->p2, b, u, n); }
static int host_p2_hyper(rt_backend *b, float lr) { return rt_p2_hyper(&((host *)b)->p2, b, lr); }
static int host_p2_restore(rt_backend *b) { return rt_p2_restore(&((host *)b)->p2, b); }
static float *host_p2_slot(rt_backend *b, int slot, int write) {
  return rt_p2_slot(&((host *)b)->p2, b, slot, write);
}

static const rt_backend_i host_i = {
    .name = "host",
    .free = host_free,
    .prepare = host_prepare,
    .set_driver = host_set_driver,
    .upload = host_upload,
    .set_dataset = host_set_dataset,
    .upload_draws = host_upload_draws,
    .forward = host_forward,
    .loss = host_loss,
    .backward = host_backward,
    .run = host_run,
    .sgd = host_sgd,
    .train_step = host_train_step,
    .set_training = host_set_training,
    .view = host_view,
    .edit = host_edit,
    .set_range = host_set_range,
    .take_state = host_take_state,
    .phase2 = host_phase2,
    .dense_grad = host_dense_grad,
    .p2_grad = host_p2_grad,
    .p2_top = host_p2_top,
    .p2_score = host_p2_score,
    .p2_hyper = host_p2_hyper,
    .p2_restore = host_p2_restore,
    .p2_slot = host_p2_slot,
    .stats = host_stats,
    .profile = host_profile,
    .profile_take = host_profile_take,
    .profile_pause = host_profile_pause,
    .profile_report = host_profile_report,
    .kernels = host_kernels,
    .channel_stats = host_channel_stats,
    .memory = host_memory,
};
