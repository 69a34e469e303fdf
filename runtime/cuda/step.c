/* step.c: the device step (see step.h). */
#include "runtime/cuda/step.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>

#include "kgen/devops.h"
#include "runtime/p2.h"
#include "runtime/plan.h"
#include "runtime/ref.h"

/* A generated kernel and its launch size: per * n + fixed threads. */
typedef struct dk {
  CUfunction f;
  int64_t per, fixed;
} dk;

/* A layer's kernels besides its conv or linear ones (0: not needed). */
enum { F_RELU, F_AFTER, F_BN, F_PASS, F_POOL, F_GAP, F_COPY, B_BN, B_AFTER, B_RELU, B_PASS, B_POOL, B_GAP, B_COPY,
       P2_REVIVE, C_STATS, N_LK };

/* Phase II's own kernels (devops.h): the slots' sums and scale, W kept
 * and put back, the hyper step, the ranking's scores, counts and picks,
 * and the scores of given units. */
enum { PK_ADD, PK_COPY, PK_SCALE, PK_DESCEND, PK_UNITS, PK_COUNT, PK_EMIT, PK_PAIR, N_PK };

/* The phases of a step, each one CUDA graph once warm; PH_STEP is the
 * four in one (train_step), the batch's gather first when it was drawn. */
enum { PH_FWD, PH_LOSS, PH_BWD, PH_SGD, PH_STEP, N_PH };

typedef struct phase {
  CUgraphExec exec; /* NULL: not captured */
  int64_t key;      /* what it was captured for: the batch, and training
                     * (forward) or the gradient (loss) */
  int64_t warm;     /* the key last run eagerly, -1: none */
} phase;

typedef struct dstep {
  rt_backend pub;
  rt_kernels *ks;        /* the CUDA kernel set: each α pattern's kernels */
  CUcontext ctx;
  CUstream st;
  cublasHandle_t blas;
  const char *sm;
  CUmodule mod;
  dk (*lk)[N_LK];        /* per layer */
  dk loss, loss_sum, sgd;
  ir_call *fc, *bc;
  int nf, nb;
  int64_t ns, np, nstats;
  CUdeviceptr act, dact, pgm, stats, bnaux, labels, lsc, scal;
  int n;                 /* the batch of the last upload */
  /* set_dataset: the training set on the device (kd's KD_SET_* layout),
   * its gather kernel, the batch's draws; ds: whether there is one */
  CUdeviceptr set, draws;
  CUmodule set_mod;
  dk gather;
  const rt_dataset *ds;
  int crop;
  int drawn;             /* the last pass began from draws: its labels are here */
  int gpend;             /* ... and its gather has not run yet */
  int training;
  int grad;              /* the last loss wrote the logits' gradient */
  /* Phase II: its passes run on the dense kernels of each weighted layer
   * (built at its first phase II), which follow the masks as they are;
   * dead layers' gradients go through rv first; one scratch serves all */
  int p2;
  uint8_t *pend;         /* per layer: its pattern's kernels wait for a
                          * pass off phase II (ready) */
  const uint8_t *mask;   /* the last prepare's masks */
  cu_kern *dense;        /* per layer; .mod 0: not built */
  CUdeviceptr dscr, rv;
  CUdeviceptr cst;       /* channel_stats' doubles, 3 a channel (KD_CSTATS) */
  /* ... and its gradients (backend.h: p2_*), on the device with them: the
   * two slots, W while the hyper step holds W*, the masks as bytes (as
   * the executor has them when an operation reads them), the scores of
   * every unit of the graph, a counter, scratch for picks and units */
  CUdeviceptr slot[2], wkept, bmask, scores, counter, pscr;
  size_t pscr_bytes;
  float *hslot[2];       /* p2_slot's host copies */
  uint8_t sedit[2];      /* ... written: the device takes them next */
  int kept;              /* wkept holds W, until p2_restore */
  kd_run *runs;          /* the units, as p2.c's rt_units_missing lists
                          * them: a weighted layer's weights, its biases */
  int *rlayer, nruns;    /* each run's layer; how many runs */
  int64_t nunits;
  CUmodule pmod;
  dk pk[N_PK];
  rt_backend_stats dstats;
  int gvalid;            /* grads holds the device's gradients */
  /* host copies: valid (the device's values), dirty (edited: to upload) */
  float *h[3];           /* params, momentum, stats */
  int64_t hn[3];
  uint8_t valid[3], dirty[3];
  float *grads, *logits, *tmp;
  int gedit;             /* grads was edited: the next SGD uploads it first */
  int64_t (*zero)[2];    /* the gradient arena's ranges to clear */
  int n_zero;
  uint8_t *assign;       /* per layer: its backward overwrites (host.c's) */
  phase ph[N_PH];
  int no_graphs;         /* $ILNAS_CUDA_GRAPHS=0 */
  rt_cuda_step_stats gs;
  CUresult fail;
} dstep;

static dstep *D(rt_backend *b) { return (dstep *)b; }

static CUresult chk(dstep *d, CUresult r, const char *what) {
  if (r && !d->fail) {
    d->fail = r;
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: %s: %s (CUresult %d)", what, cu_str(r), (int)r);
  }
  return r;
}

/* An operation's end: 0, or -1 with the first failure (cleared for the
 * next operation). */
static int done(dstep *d) {
  int rc = d->fail ? -1 : 0;
  d->fail = 0;
  return rc;
}

static CUdeviceptr fptr(CUdeviceptr base, int64_t floats) { return base + (CUdeviceptr)floats * sizeof(float); }

static CUdeviceptr zalloc(dstep *d, size_t bytes) {
  CUdeviceptr p = 0;
  if (d->fail) return 0;
  if (chk(d, cu.cuMemAlloc_v2(&p, bytes ? bytes : 4), "cuMemAlloc")) return 0;
  chk(d, cu.cuMemsetD32Async(p, 0, (bytes ? bytes : 4) / 4, d->st), "cuMemsetD32");
  return p;
}

static void launch(dstep *d, const dk *k, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, CUdeviceptr e, int64_t n,
                   int64_t f1, int64_t f2) {
  int64_t threads = k->per * n + k->fixed;
  if (d->fail || !k->f || threads <= 0) return;
  void *args[7] = {&a, &b, &c, &e, &n, &f1, &f2};
  unsigned grid = (unsigned)((threads + CG_PTX_BLOCK - 1) / CG_PTX_BLOCK);
  chk(d, cu.cuLaunchKernel(k->f, grid, 1, 1, CG_PTX_BLOCK, 1, 1, 0, d->st, args, NULL), "a step kernel");
}

/* ---- planning: what the backward clears (as host.c plans it) ---- */

static int plan_zero(dstep *d) {
  const ir_graph *g = d->pub.g;
  d->zero = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *d->zero);
  if (!d->zero) return -1;
  /* adjacent ranges stay apart: one memset each */
  d->n_zero = rt_plan_grad_clears(g, d->assign, d->zero, NULL);
  return 0;
}

/* ---- the kernels of the graph ---- */

typedef struct gen {
  LLVMModuleRef m;
  int id, rc;
  char err[160];
  int64_t ns;
} gen;

static void add_kernel(gen *G, dk *k, const kd_desc *desc, int layer, const char *what) {
  char name[96];
  snprintf(name, sizeof name, "ilnas_s%d_l%d_%s", G->id, layer, what);
  k->f = (CUfunction)(uintptr_t)1; /* named below, after loading */
  if (!G->rc && kd_gen(G->m, desc, name, &k->per, &k->fixed)) {
    G->rc = -1;
    snprintf(G->err, sizeof G->err, "cuda backend: layer %d: the %s kernel has an empty shape", layer, what);
  }
}

static const char *const lk_name[N_LK] = {"relu_f", "after_f", "bn_f", "pass_f", "pool_f", "gap_f", "copy_f",
                                          "bn_b",   "after_b", "relu_b", "pass_b", "pool_b", "gap_b", "copy_b",
                                          "revive", "cstats"};

static int build_kernels(dstep *d, char *err, size_t errlen) {
  static atomic_int serial;
  const ir_graph *g = d->pub.g;
  LLVMContextRef ctx = LLVMContextCreate();
  gen G = {LLVMModuleCreateWithNameInContext("ilnas_step", ctx), atomic_fetch_add(&serial, 1), 0, "", d->ns};
  int64_t ns = d->ns;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    const ir_tensor *T = g->tensors;
    int64_t in = T[l->in_t].off + (int64_t)l->in_ch * l->h * l->w;
    int64_t out = T[l->out_t].off + (int64_t)l->out_ch * l->oh * l->ow;
    int64_t z = l->z_t >= 0 ? T[l->z_t].off : -1;
    int64_t prev = l->prev_t >= 0 ? T[l->prev_t].off + (int64_t)l->prev_ch * l->oh * l->ow : -1;
    int64_t len = (int64_t)l->cout * l->oh * l->ow, plane = (int64_t)l->oh * l->ow;
    dk *k = d->lk[i];
    int after = l->bn == IR_BN_AFTER && l->relu;
    if (l->cout == 0 || l->cin == 0) continue; /* a gone alias (packed.h): no kernels, nothing run */
    if (l->kind == IR_CONV || l->kind == IR_LINEAR) {
      int conv = l->kind == IR_CONV;
      if (l->relu && (!conv || !l->bn)) {
        add_kernel(&G, &k[F_RELU], &(kd_desc){.op = KD_RELU, .ns = ns, .len = len, .src = z, .dst = out}, i, "relu_f");
        add_kernel(&G, &k[B_RELU],
                   &(kd_desc){.op = KD_RELU_MASK, .ns = ns, .len = len, .y = out, .dy = out, .dst = z}, i, "relu_b");
      }
      if (conv && after) {
        add_kernel(&G, &k[F_AFTER], &(kd_desc){.op = KD_RELU, .ns = ns, .len = len, .src = z, .dst = z}, i, "after_f");
        add_kernel(&G, &k[B_AFTER], &(kd_desc){.op = KD_RELU_MASK, .ns = ns, .len = len, .y = z, .dy = z, .dst = z}, i,
                   "after_b");
      }
      if (conv && l->bn) {
        kd_desc b = {.op = KD_BN_FWD, .ns = ns, .c = l->cout, .hw = plane, .src = z, .dst = out, .p0 = l->g_off,
                     .p1 = l->s_off, .np = d->np, .nstats = d->nstats, .relu = l->relu && l->bn == IR_BN_BEFORE};
        add_kernel(&G, &k[F_BN], &b, i, "bn_f");
        b.op = KD_BN_BWD, b.src = z, b.y = out, b.dy = out, b.dst = z, b.assign = d->assign[i];
        add_kernel(&G, &k[B_BN], &b, i, "bn_b");
      }
      if (l->can_die)
        add_kernel(&G, &k[P2_REVIVE],
                   &(kd_desc){.op = KD_REVIVE, .ns = ns, .c = l->cout, .hw = plane, .y = out, .dy = out,
                              .relu = l->bn != IR_BN_AFTER, .norm = l->bn != 0},
                   i, "revive");
      if (l->can_die && l->bn)
        add_kernel(&G, &k[C_STATS], &(kd_desc){.op = KD_CSTATS, .ns = ns, .c = l->cout, .hw = plane, .y = out}, i,
                   "cstats");
      if (prev >= 0) {
        add_kernel(&G, &k[F_PASS], &(kd_desc){.op = KD_COPY, .ns = ns, .len = len, .src = prev, .dst = out}, i,
                   "pass_f");
        add_kernel(&G, &k[B_PASS], &(kd_desc){.op = KD_COPY, .ns = ns, .len = len, .src = out, .dst = prev, .add = 1},
                   i, "pass_b");
      }
    } else if (l->kind == IR_MAXPOOL) {
      kd_desc p = {.op = KD_POOL_FWD, .ns = ns, .c = l->cin, .h = l->h, .w = l->w, .f = l->k, .src = in, .dst = out};
      add_kernel(&G, &k[F_POOL], &p, i, "pool_f");
      p.op = KD_POOL_BWD, p.assign = d->assign[i];
      add_kernel(&G, &k[B_POOL], &p, i, "pool_b");
    } else if (l->kind == IR_GAP) {
      kd_desc p = {.op = KD_GAP_FWD, .ns = ns, .c = l->cin, .hw = (int64_t)l->h * l->w, .src = in, .dst = out};
      add_kernel(&G, &k[F_GAP], &p, i, "gap_f");
      p.op = KD_GAP_BWD;
      add_kernel(&G, &k[B_GAP], &p, i, "gap_b");
    } else if (l->kind == IR_COPY) {
      add_kernel(&G, &k[F_COPY], &(kd_desc){.op = KD_COPY, .ns = ns, .len = len, .src = in, .dst = out}, i, "copy_f");
      add_kernel(&G, &k[B_COPY], &(kd_desc){.op = KD_COPY, .ns = ns, .len = len, .src = out, .dst = in, .add = 1}, i,
                 "copy_b");
    }
  }
  add_kernel(&G, &d->loss,
             &(kd_desc){.op = KD_LOSS, .ns = ns, .c = g->cfg.classes, .src = g->tensors[g->logits_t].off}, -1, "loss");
  add_kernel(&G, &d->loss_sum, &(kd_desc){.op = KD_LOSS_SUM}, -1, "loss_sum");
  add_kernel(&G, &d->sgd, &(kd_desc){.op = KD_SGD, .np = d->np}, -1, "sgd");
  int rc = G.rc;
  if (rc) snprintf(err, errlen, "%s", G.err);
  else rc = cu_kern_load(G.m, d->sm, &d->mod, err, errlen);
  LLVMDisposeModule(G.m);
  LLVMContextDispose(ctx);
  /* the functions by name */
  char name[96];
  for (int i = -1; !rc && i < g->n_layers; i++)
    for (int j = 0; j < (i < 0 ? 3 : N_LK) && !rc; j++) {
      dk *k = i < 0 ? (j == 0 ? &d->loss : j == 1 ? &d->loss_sum : &d->sgd) : &d->lk[i][j];
      if (!k->f) continue;
      snprintf(name, sizeof name, "ilnas_s%d_l%d_%s", G.id, i, i < 0 ? (j == 0 ? "loss" : j == 1 ? "loss_sum" : "sgd") : lk_name[j]);
      CUresult r = cu.cuModuleGetFunction(&k->f, d->mod, name);
      if (r) {
        snprintf(err, errlen, "cuda backend: kernel %s: %s", name, cu_str(r));
        rc = -1;
      }
    }
  return rc;
}

/* ---- host copies ---- */

static CUdeviceptr hs_dev(dstep *d, int i) {
  return i == 0 ? d->pgm : i == 1 ? fptr(d->pgm, 2 * d->np) : d->stats;
}

/* The host copy i holds the device's values. */
static void hs_fetch(dstep *d, int i) {
  if (d->valid[i] || d->fail) return;
  if (d->hn[i]) chk(d, cu.cuMemcpyDtoH_v2(d->h[i], hs_dev(d, i), (size_t)d->hn[i] * sizeof(float)), "cuMemcpyDtoH");
  if (!d->fail) d->valid[i] = 1;
}

/* Edits reach the device before anything runs there. */
static void flush(dstep *d) {
  for (int i = 0; i < 3; i++)
    if (d->dirty[i] && !d->fail) {
      if (d->hn[i]) chk(d, cu.cuMemcpyHtoD_v2(hs_dev(d, i), d->h[i], (size_t)d->hn[i] * sizeof(float)), "cuMemcpyHtoD");
      d->dirty[i] = 0;
    }
}

/* ---- the phases ---- */

/* A weighted layer's kernels: its pattern's, or phase II's dense ones. */
static cu_kern *layer_kern(dstep *d, int l) {
  cu_kern *ck = d->p2 ? (d->dense[l].mod ? &d->dense[l] : NULL) : rt_cuda_kernels_layer(d->ks, l);
  if (!ck) chk(d, CUDA_ERROR_INVALID_HANDLE, d->p2 ? "phase II without its kernels" : "a layer used before prepare");
  return ck;
}

static void enq_forward(dstep *d, int l) {
  const ir_graph *g = d->pub.g;
  const ir_layer *ly = &g->layers[l];
  dk *k = d->lk[l];
  const ir_tensor *T = g->tensors;
  int64_t in = T[ly->in_t].off + (int64_t)ly->in_ch * ly->h * ly->w;
  int64_t n = d->n, ns = d->ns;
  if (ly->kind == IR_CONV || ly->kind == IR_LINEAR) {
    if (!d->pub.arch->alive[l]) {
      launch(d, &k[F_PASS], d->act, 0, 0, 0, n, 0, 0);
      return;
    }
    cu_kern *ck = layer_kern(d, l);
    if (!ck) return;
    int64_t out = T[ly->out_t].off + (int64_t)ly->out_ch * ly->oh * ly->ow;
    int64_t z = ly->z_t >= 0 ? T[ly->z_t].off : out;
    int64_t dst = ly->kind == IR_CONV || ly->relu ? z : out;
    if (!d->fail)
      chk(d, cu_kern_fwd(ck, d->st, fptr(d->act, in), fptr(d->pgm, ly->w_off), ly->b_off >= 0 ? fptr(d->pgm, ly->b_off) : 0,
                         fptr(d->act, dst), n, ns, ns), "forward kernels");
    launch(d, &k[F_RELU], d->act, 0, 0, 0, n, 0, 0);
    launch(d, &k[F_AFTER], d->act, 0, 0, 0, n, 0, 0);
    launch(d, &k[F_BN], d->act, d->stats, d->pgm, d->bnaux, n, d->training, 0);
    return;
  }
  launch(d, &k[F_POOL], d->act, 0, 0, 0, n, 0, 0);
  launch(d, &k[F_GAP], d->act, 0, 0, 0, n, 0, 0);
  launch(d, &k[F_COPY], d->act, 0, 0, 0, n, 0, 0);
}

static void enq_backward(dstep *d, int l) {
  const ir_graph *g = d->pub.g;
  const ir_layer *ly = &g->layers[l];
  dk *k = d->lk[l];
  const ir_tensor *T = g->tensors;
  int64_t n = d->n, ns = d->ns;
  int needs_dx = ly->in_t != g->input_t;
  if (ly->kind == IR_CONV || ly->kind == IR_LINEAR) {
    if (!d->pub.arch->alive[l]) {
      launch(d, &k[B_PASS], d->dact, 0, 0, 0, n, 0, 0);
      return;
    }
    cu_kern *ck = layer_kern(d, l);
    if (!ck) return;
    launch(d, &k[B_BN], d->act, d->dact, d->pgm, d->bnaux, n, 0, 0);
    launch(d, &k[B_AFTER], d->act, d->dact, 0, 0, n, 0, 0);
    launch(d, &k[B_RELU], d->act, d->dact, 0, 0, n, 0, 0);
    int64_t in = T[ly->in_t].off + (int64_t)ly->in_ch * ly->h * ly->w;
    int64_t out = T[ly->out_t].off + (int64_t)ly->out_ch * ly->oh * ly->ow;
    int64_t z = ly->z_t >= 0 ? T[ly->z_t].off : out;
    int64_t dz = ly->kind == IR_CONV || ly->relu ? z : out;
    CUdeviceptr gr = fptr(d->pgm, d->np);
    if (!d->fail)
      chk(d, cu_kern_bwd(ck, d->st, fptr(d->act, in), fptr(d->dact, dz), fptr(d->pgm, ly->w_off),
                         needs_dx ? fptr(d->dact, in) : 0, fptr(gr, ly->w_off), ly->b_off >= 0 ? fptr(gr, ly->b_off) : 0, n,
                         ns, ns),
          "backward kernels");
    return;
  }
  if (!needs_dx) return;
  launch(d, &k[B_POOL], d->act, d->dact, 0, 0, n, 0, 0);
  launch(d, &k[B_GAP], d->dact, 0, 0, 0, n, 0, 0);
  launch(d, &k[B_COPY], d->dact, 0, 0, 0, n, 0, 0);
}

static void enq_calls(dstep *d, const ir_call *c, int n, int bwd) {
  for (int i = 0; i < n && !d->fail; i++) {
    int l = (int)c[i].args[0];
    if (bwd) enq_backward(d, l);
    else enq_forward(d, l);
  }
}

static void enq_loss(dstep *d) {
  if (d->grad)
    for (int r = 0; r < d->n_zero && !d->fail; r++)
      chk(d, cu.cuMemsetD2D32Async(fptr(d->dact, d->zero[r][0]), (size_t)d->ns * sizeof(float), 0,
                                   (size_t)(d->zero[r][1] - d->zero[r][0]), (size_t)d->n, d->st),
          "cuMemsetD2D32");
  launch(d, &d->loss, d->act, d->dact, d->labels, d->lsc, d->n, d->grad, 0);
  launch(d, &d->loss_sum, d->lsc, 0, 0, d->scal, d->n, 0, 0);
}

static void enq_sgd(dstep *d) { launch(d, &d->sgd, d->pgm, d->scal, 0, 0, 0, 0, 0); }

static void enq_gather(dstep *d) { launch(d, &d->gather, d->act, d->set, d->draws, d->labels, d->n, 0, 0); }

static void enqueue(dstep *d, int p) {
  if (p == PH_STEP && d->drawn) enq_gather(d);
  if (p == PH_FWD || p == PH_STEP) enq_calls(d, d->fc, d->nf, 0);
  if (p == PH_LOSS || p == PH_STEP) enq_loss(d);
  if (p == PH_BWD || p == PH_STEP) enq_calls(d, d->bc, d->nb, 1);
  if (p == PH_SGD || p == PH_STEP) enq_sgd(d);
}

/* The batch's images, from the draws uploaded, before a pass that does
 * not make them itself. */
static void gather_now(dstep *d) {
  if (d->gpend) enq_gather(d);
  d->gpend = 0;
}

static void drop_graphs(dstep *d) {
  for (int p = 0; p < N_PH; p++) {
    if (d->ph[p].exec) cu.cuGraphExecDestroy(d->ph[p].exec);
    d->ph[p].exec = NULL, d->ph[p].warm = -1;
  }
}

/* A phase: replayed where captured for this key; captured on its second
 * run with the key (the first sizes the layers' scratch, which a capture
 * must not allocate); else enqueued as it is. */
static void run_phase(dstep *d, int p) {
  int64_t key = p == PH_FWD ? ((int64_t)d->n << 1) | d->training
                : p == PH_LOSS ? ((int64_t)d->n << 1) | d->grad
                : p == PH_BWD ? d->n
                : p == PH_STEP ? ((int64_t)d->n << 1) | d->drawn : 0;
  phase *ph = &d->ph[p];
  if (d->fail) return;
  if (d->p2) { /* alive flags and masks change between phase II's passes */
    enqueue(d, p);
    return;
  }
  if (ph->exec && ph->key == key) {
    chk(d, cu.cuGraphLaunch(ph->exec, d->st), "cuGraphLaunch");
    d->gs.graph_launches++;
    return;
  }
  if (d->no_graphs || ph->warm != key) {
    enqueue(d, p);
    ph->warm = key;
    d->gs.eager_steps += p == PH_FWD;
    return;
  }
  if (ph->exec) cu.cuGraphExecDestroy(ph->exec), ph->exec = NULL;
  if (chk(d, cu.cuStreamBeginCapture_v2(d->st, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture")) return;
  enqueue(d, p);
  CUgraph gr = NULL;
  CUresult r = cu.cuStreamEndCapture(d->st, &gr);
  if (!d->fail) chk(d, r, "cuStreamEndCapture");
  if (!d->fail) chk(d, cu.cuGraphInstantiateWithFlags(&ph->exec, gr, 0), "cuGraphInstantiate");
  if (gr) cu.cuGraphDestroy(gr);
  if (d->fail) {
    ph->exec = NULL;
    return;
  }
  ph->key = key;
  d->gs.captures++;
  chk(d, cu.cuGraphLaunch(ph->exec, d->st), "cuGraphLaunch");
  d->gs.graph_launches++;
}

/* ---- the operations ---- */

/* The kernels of the layers whose α changed, for their patterns. */
static int prepare_pending(dstep *d) {
  const ir_graph *g = d->pub.g;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (!d->pend[i]) continue;
    if (l->w_off >= 0 && l->cout > 0 && l->cin > 0 &&
        d->ks->prepare(d->ks, i, d->mask + l->w_off, d->mask + l->b_off, d->pub.error, sizeof d->pub.error))
      return -1;
    d->pend[i] = 0;
  }
  return 0;
}

static int p2_kernels(dstep *d);

/* Before a pass: phase II's kernels, or the patterns' it deferred. */
static int ready(dstep *d) {
  if (d->p2) return p2_kernels(d);
  for (int i = 0; i < d->pub.g->n_layers; i++)
    if (d->pend[i]) {
      drop_graphs(d);
      return prepare_pending(d);
    }
  return 0;
}

static int st_prepare(rt_backend *b, const uint8_t *dirty, const uint8_t *mask, const uint8_t *varies) {
  dstep *d = D(b);
  const ir_graph *g = b->g;
  d->mask = mask;
  for (int i = 0; i < g->n_layers; i++) d->pend[i] |= dirty[i];
  /* phase II runs on its dense kernels: a step the live layout makes for
   * it never needs these */
  if (!d->p2 && prepare_pending(d)) return -1;
  flush(d);
  for (int64_t i = 0; i < d->np; i++) d->tmp[i] = mask[i] ? 1.0f : 0.0f;
  if (d->np) chk(d, cu.cuMemcpyHtoD_v2(fptr(d->pgm, 3 * d->np), d->tmp, (size_t)d->np * sizeof(float)), "cuMemcpyHtoD");
  /* constant channels: batch norm maps them to beta in inference */
  if (d->nstats) {
    memset(d->tmp, 0, (size_t)d->nstats * sizeof(float));
    for (int i = 0; varies && i < g->n_layers; i++) {
      const ir_layer *l = &g->layers[i];
      if (!l->bn) continue;
      const uint8_t *v = varies + ir_chan_base(g, l->out_t) + l->out_ch;
      for (int c = 0; c < l->cout; c++) d->tmp[l->s_off + c] = v[c] ? 0.0f : 1.0f;
    }
    chk(d, cu.cuMemcpyHtoD_v2(fptr(d->bnaux, d->nstats), d->tmp, (size_t)d->nstats * sizeof(float)), "cuMemcpyHtoD");
  }
  drop_graphs(d);
  return done(d);
}

/* The driver's order is the schedule's, which the device step runs
 * itself, each phase one graph. */
static void st_set_driver(rt_backend *b, rt_graph_fn fwd, rt_graph_fn bwd) { (void)b, (void)fwd, (void)bwd; }

static void drop_set(dstep *d) {
  if (d->set) cu.cuMemFree_v2(d->set);
  if (d->draws) cu.cuMemFree_v2(d->draws);
  if (d->set_mod) cu.cuModuleUnload(d->set_mod);
  d->set = d->draws = 0, d->set_mod = NULL, d->ds = NULL, d->gather.f = NULL;
  d->drawn = d->gpend = 0;
}

/* What a step needs to draw from set ds besides its bytes: the gather
 * kernel for its graph and the draws' buffer. 0, or -1 with the reason. */
static int bind_set(dstep *d, const rt_dataset *ds, int crop) {
  rt_backend *b = &d->pub;
  const ir_tensor *t = &b->g->tensors[b->g->input_t];
  char err[256];
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("ilnas_set", ctx);
  static atomic_int serial;
  char name[64];
  snprintf(name, sizeof name, "ilnas_set%d_gather", atomic_fetch_add(&serial, 1));
  kd_desc g = {.op = KD_GATHER, .ns = d->ns, .c = ds->c, .h = ds->h, .w = ds->w, .f = crop,
               .dst = t->off, .n_set = ds->n, .bytes = !ds->x};
  int rc = kd_gen(m, &g, name, &d->gather.per, &d->gather.fixed);
  if (rc) snprintf(err, sizeof err, "cuda backend: the data set's gather kernel: an empty shape");
  else rc = cu_kern_load(m, d->sm, &d->set_mod, err, sizeof err);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (!rc) chk(d, cu.cuModuleGetFunction(&d->gather.f, d->set_mod, name), "the gather kernel");
  else snprintf(b->error, sizeof b->error, "%s", err);
  if (!rc && !d->fail) chk(d, cu.cuMemAlloc_v2(&d->draws, (size_t)b->cap * sizeof(rt_draw)), "cuMemAlloc");
  if (rc || d->fail) {
    drop_set(d);
    return rc ? -1 : done(d);
  }
  return 0;
}

/* The training set to the device, once: a pass then begins from its
 * draws (12 bytes an image) instead of its images. */
static int st_set_dataset(rt_backend *b, const rt_dataset *ds, const rt_norm *nm, int crop) {
  dstep *d = D(b);
  const ir_tensor *t = &b->g->tensors[b->g->input_t];
  drop_set(d);
  if (!ds) return 0;
  if (!rt_data_keepable(ds, t, nm, crop) || ds->c > 4) { /* the set's head holds 4 channels */
    snprintf(b->error, sizeof b->error, "cuda backend: a data set it cannot keep (an image folder, or "
             "another shape than the input)");
    return -1;
  }
  size_t chw = (size_t)ds->c * ds->h * ds->w, px = ds->x ? sizeof(float) : 1;
  size_t bytes = (size_t)KD_SET_IMAGES(ds->n) + (size_t)ds->n * chw * px;
  if (bind_set(d, ds, crop)) return -1;
  int rc = 0;
  if (cu.cuMemAlloc_v2(&d->set, bytes)) {
    d->set = 0;
    snprintf(b->error, sizeof b->error, "cuda backend: the training set (%zu MB) does not fit on the "
             "device", bytes >> 20);
    rc = -1;
  }
  float head[16] = {0};
  for (int c = 0; c < ds->c; c++) head[c] = nm->mean[c], head[4 + c] = nm->std[c];
  head[8] = ds->scale;
  if (!rc && !d->fail) chk(d, cu.cuMemcpyHtoD_v2(d->set, head, sizeof head), "cuMemcpyHtoD (the set)");
  if (!rc && !d->fail)
    chk(d, cu.cuMemcpyHtoD_v2(d->set + KD_SET_LABELS, ds->y, (size_t)ds->n * sizeof *ds->y),
        "cuMemcpyHtoD (the set's labels)");
  if (!rc && !d->fail)
    chk(d, cu.cuMemcpyHtoD_v2(d->set + (CUdeviceptr)KD_SET_IMAGES(ds->n),
                              ds->x ? (const void *)ds->x : (const void *)ds->px, (size_t)ds->n * chw * px),
        "cuMemcpyHtoD (the set's images)");
  if (rc || d->fail) {
    drop_set(d);
    return rc ? -1 : done(d);
  }
  d->ds = ds, d->crop = crop;
  return 0;
}

/* A new step of the live layout takes the set the step before kept:
 * its bytes stay where they are on the device. */
static int st_take_dataset(rt_backend *b, rt_backend *from) {
  dstep *d = D(b), *o = D(from);
  const ir_tensor *t = &b->g->tensors[b->g->input_t], *u = &from->g->tensors[from->g->input_t];
  if (from->i != b->i || !o->ds || !o->set || t->c != u->c || t->h != u->h || t->w != u->w) return -1;
  drop_set(d);
  if (bind_set(d, o->ds, o->crop)) return -1;
  d->set = o->set, d->ds = o->ds, d->crop = o->crop;
  o->set = 0, o->ds = NULL;
  return 0;
}

static int st_upload_draws(rt_backend *b, const rt_draw *dr, int n) {
  dstep *d = D(b);
  if (!d->ds) {
    snprintf(b->error, sizeof b->error, "cuda backend: draws without a data set");
    return -1;
  }
  flush(d);
  d->n = n, d->drawn = 1, d->gpend = 1; /* gathered by the pass that begins */
  if (!d->fail) chk(d, cu.cuMemcpyHtoDAsync_v2(d->draws, dr, (size_t)n * sizeof *dr, d->st), "cuMemcpyHtoD (the draws)");
  return done(d);
}

static int st_upload(rt_backend *b, const float *images, int n) {
  dstep *d = D(b);
  d->drawn = d->gpend = 0;
  const ir_graph *g = b->g;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t len = (size_t)t->c * t->h * t->w;
  flush(d);
  d->n = n;
  CUDA_MEMCPY2D c;
  memset(&c, 0, sizeof c);
  c.srcMemoryType = CU_MEMORYTYPE_HOST, c.srcHost = images, c.srcPitch = len * sizeof(float);
  c.dstMemoryType = CU_MEMORYTYPE_DEVICE, c.dstDevice = fptr(d->act, t->off), c.dstPitch = (size_t)d->ns * sizeof(float);
  c.WidthInBytes = len * sizeof(float), c.Height = (size_t)n;
  if (!d->fail) chk(d, cu.cuMemcpy2DAsync_v2(&c, d->st), "cuMemcpy2D (the batch)");
  return done(d);
}

static int st_forward(rt_backend *b) {
  dstep *d = D(b);
  if (ready(d)) return -1;
  flush(d);
  gather_now(d);
  run_phase(d, PH_FWD);
  if (d->training) d->valid[2] = 0;
  return done(d);
}

/* The loss's copies: the labels in (unless the gather wrote the drawn
 * images'), then, after the loss's kernels, the mean loss and the hits
 * out. */
static void put_labels(dstep *d, const ir_label *labels) {
  if (!d->drawn && !d->fail)
    chk(d, cu.cuMemcpyHtoDAsync_v2(d->labels, labels, (size_t)d->n * sizeof *labels, d->st), "cuMemcpyHtoD (labels)");
}

static void get_loss(dstep *d, double *loss, int *correct) {
  double out[2] = {0, 0};
  if (!d->fail) chk(d, cu.cuMemcpyDtoHAsync_v2(out, d->scal, sizeof out, d->st), "cuMemcpyDtoH (the loss)");
  if (!d->fail) chk(d, cu.cuStreamSynchronize(d->st), "the step");
  *loss = d->fail ? NAN : out[0];
  if (correct) *correct = (int)out[1];
}

/* SGD's scalars in. */
static void put_sgd(dstep *d, float lr, float momentum, float decay) {
  float s[3] = {lr, momentum, decay};
  if (!d->fail) chk(d, cu.cuMemcpyHtoDAsync_v2(fptr(d->scal, 4), s, sizeof s, d->st), "cuMemcpyHtoD (SGD's scalars)");
}

static int st_loss(rt_backend *b, const ir_label *labels, int grad, double *loss, int *correct) {
  dstep *d = D(b);
  flush(d);
  d->grad = !!grad;
  put_labels(d, labels);
  run_phase(d, PH_LOSS);
  get_loss(d, loss, correct);
  return done(d);
}

static int st_backward(rt_backend *b) {
  dstep *d = D(b);
  if (ready(d)) return -1;
  flush(d);
  d->gedit = 0, d->gvalid = 0;
  run_phase(d, PH_BWD);
  return done(d);
}

/* The schedule's own calls run as their phase; others one by one. */
static int same_calls(const ir_call *a, const ir_call *b, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(a[i].fn, b[i].fn) != 0 || memcmp(a[i].args, b[i].args, 5 * sizeof a[i].args[0]) != 0) return 0;
  return 1;
}

static int st_run(rt_backend *b, const ir_call *calls, int n) {
  dstep *d = D(b);
  if (ready(d)) return -1;
  if (n == d->nf && same_calls(calls, d->fc, n)) return st_forward(b);
  if (n == d->nb && same_calls(calls, d->bc, n)) return st_backward(b);
  flush(d);
  gather_now(d);
  for (int i = 0; i < n && !d->fail; i++) {
    size_t len = strlen(calls[i].fn);
    int bwd = len > 4 && strcmp(calls[i].fn + len - 4, "_bwd") == 0;
    enq_calls(d, &calls[i], 1, bwd);
  }
  if (d->training) d->valid[2] = 0;
  return done(d);
}

static int st_sgd(rt_backend *b, float lr, float momentum, float decay) {
  dstep *d = D(b);
  flush(d);
  if (d->gedit && d->np && !d->fail)
    chk(d, cu.cuMemcpyHtoD_v2(fptr(d->pgm, d->np), d->grads, (size_t)d->np * sizeof(float)),
        "cuMemcpyHtoD (the edited gradients)");
  d->gedit = 0, d->gvalid = 0;
  put_sgd(d, lr, momentum, decay);
  run_phase(d, PH_SGD);
  d->valid[0] = d->valid[1] = 0;
  return done(d);
}

/* The four operations in one: one graph launch a step once warm, the
 * batch's gather included; in the copies, the labels (unless drawn) and
 * SGD's scalars in, the loss and the hits out. */
static int st_train_step(rt_backend *b, const ir_label *labels, float lr, float momentum, float decay,
                         double *loss, int *correct) {
  dstep *d = D(b);
  if (d->p2 || !d->training)
    return st_forward(b) || st_loss(b, labels, 1, loss, correct) || st_backward(b) ||
                   st_sgd(b, lr, momentum, decay)
               ? -1
               : 0;
  if (ready(d)) return -1;
  flush(d);
  d->grad = 1, d->gedit = 0, d->gvalid = 0, d->gpend = 0;
  put_labels(d, labels);
  put_sgd(d, lr, momentum, decay);
  run_phase(d, PH_STEP);
  get_loss(d, loss, correct);
  d->valid[0] = d->valid[1] = d->valid[2] = 0;
  return done(d);
}

static void st_set_training(rt_backend *b, int on) {
  D(b)->training = !!on;
}

static const float *st_view(rt_backend *b, rt_state which) {
  dstep *d = D(b);
  const ir_graph *g = b->g;
  const float *r = NULL;
  switch (which) {
  case RT_PARAMS: case RT_MOMENTUM: case RT_STATS: {
    int i = which == RT_PARAMS ? 0 : which == RT_MOMENTUM ? 1 : 2;
    hs_fetch(d, i);
    r = d->h[i];
    break;
  }
  case RT_GRADS:
    if (d->np && !d->gvalid)
      chk(d, cu.cuMemcpyDtoH_v2(d->grads, fptr(d->pgm, d->np), (size_t)d->np * sizeof(float)), "cuMemcpyDtoH");
    d->gvalid = !d->fail;
    r = d->grads;
    break;
  case RT_LOGITS: {
    int k = g->cfg.classes;
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE, c.srcDevice = fptr(d->act, g->tensors[g->logits_t].off);
    c.srcPitch = (size_t)d->ns * sizeof(float);
    c.dstMemoryType = CU_MEMORYTYPE_HOST, c.dstHost = d->logits, c.dstPitch = (size_t)k * sizeof(float);
    c.WidthInBytes = (size_t)k * sizeof(float), c.Height = (size_t)d->n;
    if (d->n > 0) chk(d, cu.cuMemcpy2DAsync_v2(&c, d->st), "cuMemcpy2D (logits)");
    if (!d->fail) chk(d, cu.cuStreamSynchronize(d->st), "the step");
    r = d->logits;
    break;
  }
  }
  return done(d) ? NULL : r;
}

static float *st_edit(rt_backend *b, rt_state which) {
  dstep *d = D(b);
  if (which == RT_GRADS) { /* the backward's, to be edited: what SGD applies */
    st_view(b, RT_GRADS);
    if (done(d)) return NULL;
    d->gedit = 1, d->gvalid = 0;
    return d->grads;
  }
  if (which != RT_PARAMS && which != RT_MOMENTUM && which != RT_STATS) return NULL;
  int i = which == RT_PARAMS ? 0 : which == RT_MOMENTUM ? 1 : 2;
  hs_fetch(d, i);
  if (done(d)) return NULL;
  d->dirty[i] = 1;
  return d->h[i];
}

/* A run of parameters or momentum: its floats alone go to the device,
 * behind the work queued; the host copy takes them where it holds the
 * values, and where it holds edits still to go up they join those. */
static int st_set_range(rt_backend *b, rt_state which, int64_t start, int64_t len, const float *values) {
  dstep *d = D(b);
  if (which != RT_PARAMS && which != RT_MOMENTUM) {
    snprintf(b->error, sizeof b->error, "cuda backend: set_range takes the parameters or their momentum");
    return -1;
  }
  int i = which == RT_PARAMS ? 0 : 1;
  float *h = d->h[i] + start;
  if (d->valid[i] || d->dirty[i]) {
    if (values) memcpy(h, values, (size_t)len * sizeof *h);
    else memset(h, 0, (size_t)len * sizeof *h);
  }
  if (d->dirty[i] || len <= 0) return 0;
  CUdeviceptr at = fptr(hs_dev(d, i), start);
  if (values) chk(d, cu.cuMemcpyHtoDAsync_v2(at, values, (size_t)len * sizeof *values, d->st), "cuMemcpyHtoD (a run)");
  else chk(d, cu.cuMemsetD32Async(at, 0, (size_t)len, d->st), "cuMemsetD32 (a run)");
  /* values are the caller's: the copy is done when this returns */
  if (values && !d->fail) chk(d, cu.cuStreamSynchronize(d->st), "the step");
  return done(d);
}

static void slot_on(dstep *d, int s);

/* Device to device, run by run: the parameters and momentum (pgm's first
 * and third thirds) and the slots asked for, once the old step's work is
 * done. */
static int st_take_state(rt_backend *b, rt_backend *from, const rt_run *r, int64_t n, unsigned what) {
  dstep *d = D(b), *f = D(from);
  flush(f);
  if (!f->fail) chk(f, cu.cuStreamSynchronize(f->st), "the step");
  if (done(f)) {
    snprintf(b->error, sizeof b->error, "%s", from->error);
    return -1;
  }
  CUdeviceptr to[4] = {what & RT_TAKE_PARAMS ? d->pgm : 0, what & RT_TAKE_MOMENTUM ? fptr(d->pgm, 2 * d->np) : 0};
  CUdeviceptr fr[4] = {f->pgm, fptr(f->pgm, 2 * f->np)};
  for (int s = 0; s < 2; s++)
    if (what & (RT_TAKE_SLOT0 << s)) {
      slot_on(d, s);
      to[2 + s] = d->slot[s], fr[2 + s] = f->slot[s];
    }
  for (int w = 0; w < 4 && !d->fail; w++)
    for (int64_t k = 0; to[w] && fr[w] && k < n && !d->fail; k++)
      chk(d, cu.cuMemcpyDtoDAsync_v2(fptr(to[w], r[k].to), fptr(fr[w], r[k].from), (size_t)r[k].len * sizeof(float),
                                     d->st),
          "cuMemcpyDtoD (the state)");
  if (what & RT_TAKE_PARAMS) d->valid[0] = 0;
  if (what & RT_TAKE_MOMENTUM) d->valid[1] = 0;
  return done(d);
}

static void st_phase2(rt_backend *b, int on) { D(b)->p2 = !!on; }

static void drop_p2(dstep *d) {
  for (int i = 0; d->dense && i < d->pub.g->n_layers; i++) cu_kern_free(&d->dense[i]);
  CUdeviceptr *bufs[] = {&d->dscr,  &d->rv,     &d->slot[0], &d->slot[1],  &d->wkept,
                         &d->bmask, &d->scores, &d->counter, &d->pscr};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
    if (*bufs[i]) cu.cuMemFree_v2(*bufs[i]);
    *bufs[i] = 0;
  }
  if (d->pmod) cu.cuModuleUnload(d->pmod);
  free(d->dense), free(d->hslot[0]), free(d->hslot[1]), free(d->runs), free(d->rlayer);
  d->dense = NULL, d->hslot[0] = d->hslot[1] = NULL, d->runs = NULL, d->rlayer = NULL, d->pmod = NULL;
  memset(d->pk, 0, sizeof d->pk);
  d->pscr_bytes = 0, d->sedit[0] = d->sedit[1] = 0, d->kept = 0, d->nruns = 0, d->nunits = 0;
}

static const char *const pk_name[N_PK] = {"add", "copy", "scale", "descend", "units", "count", "emit", "pair"};

/* Phase II's own kernels, for the units of the graph (runs in the order
 * of p2.c's rt_units_missing: each weighted layer's weights, at kernel
 * granularity k*k a unit, then its biases), and the buffers of their
 * scores and of the counter. */
static int p2_ops(dstep *d) {
  static atomic_int serial;
  const ir_graph *g = d->pub.g;
  int nl = g->n_layers, id = atomic_fetch_add(&serial, 1), n = 0;
  d->runs = malloc((size_t)(2 * nl + 1) * sizeof *d->runs);
  d->rlayer = malloc((size_t)(2 * nl + 1) * sizeof *d->rlayer);
  if (!d->runs || !d->rlayer) {
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: out of memory");
    return -1;
  }
  int64_t u = 0;
  for (int i = 0; i < nl; i++) {
    const ir_layer *l = &g->layers[i];
    if ((l->kind != IR_CONV && l->kind != IR_LINEAR) || l->w_off < 0) continue;
    int64_t len = g->cfg.gran == FE_GRAN_KERNEL ? (int64_t)l->k * l->k : 1, nw = l->n_w / len;
    if (nw) d->rlayer[n] = i, d->runs[n++] = (kd_run){u, l->w_off, len, nw}, u += nw;
    if (l->cout) d->rlayer[n] = i, d->runs[n++] = (kd_run){u, l->b_off, 1, l->cout}, u += l->cout;
  }
  d->nruns = n, d->nunits = u;
  const kd_desc desc[N_PK] = {
      [PK_ADD] = {.op = KD_MOVE, .add = 1},     [PK_COPY] = {.op = KD_MOVE},
      [PK_SCALE] = {.op = KD_SCALE},            [PK_DESCEND] = {.op = KD_DESCEND},
      [PK_UNITS] = {.op = KD_UNITS, .len = u, .runs = d->runs, .nruns = n},
      [PK_COUNT] = {.op = KD_COUNT, .len = u},  [PK_EMIT] = {.op = KD_EMIT, .len = u},
      [PK_PAIR] = {.op = KD_PAIR}};
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext("ilnas_p2", ctx);
  char name[N_PK][64], err[256] = "an empty shape";
  int rc = 0;
  for (int j = 0; j < N_PK && !rc; j++) {
    snprintf(name[j], sizeof name[j], "ilnas_p2_%d_%s", id, pk_name[j]);
    if (u == 0 && (j == PK_UNITS || j == PK_COUNT || j == PK_EMIT)) continue; /* no units to rank */
    rc = kd_gen(m, &desc[j], name[j], &d->pk[j].per, &d->pk[j].fixed);
  }
  if (!rc) rc = cu_kern_load(m, d->sm, &d->pmod, err, sizeof err);
  LLVMDisposeModule(m);
  LLVMContextDispose(ctx);
  if (rc) {
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: phase II's own kernels: %s", err);
    return -1;
  }
  for (int j = 0; j < N_PK; j++)
    if (d->pk[j].per || d->pk[j].fixed)
      chk(d, cu.cuModuleGetFunction(&d->pk[j].f, d->pmod, name[j]), "a phase II kernel");
  d->scores = zalloc(d, (size_t)u * sizeof(float));
  d->counter = zalloc(d, sizeof(int64_t));
  return done(d);
}

/* Phase II's kernels, at its first pass: each weighted layer's dense
 * ones, sharing one scratch, the buffer of dead layers' gradients, and
 * phase II's own (p2_ops). */
static int p2_kernels(dstep *d) {
  const ir_graph *g = d->pub.g;
  if (d->dense) return 0;
  if (!d->blas) {
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: phase II runs on cuBLAS, which cannot start here "
             "(libcublas.so.13, .12 or .11 not found, or cublasCreate failed): install cuBLAS, or train with "
             "--search fixed");
    return -1;
  }
  char err[400];
  size_t need = 0;
  int64_t rvlen = 0;
  if (!(d->dense = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof *d->dense))) {
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: out of memory");
    return -1;
  }
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if ((l->kind != IR_CONV && l->kind != IR_LINEAR) || l->cout == 0 || l->cin == 0) continue;
    cu_kern_desc kd = {.conv = l->kind == IR_CONV};
    if (kd.conv) kd.cd = (cg_conv_desc){l->cin, l->h, l->w, l->cout, l->k, l->stride, l->pad, NULL, NULL, 0, 0};
    else kd.ld = (cg_linear_desc){l->cin, l->cout, NULL, NULL, 0, 0};
    if (cu_kern_build_dense(&d->dense[i], &kd, d->blas, d->sm, err, sizeof err)) {
      snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: phase II's kernels of layer %s: %s", l->name, err);
      drop_p2(d);
      return -1;
    }
    size_t s = cu_kern_dense_scratch(&d->dense[i], d->pub.cap);
    need = s > need ? s : need;
    int64_t len = (int64_t)l->cout * l->oh * l->ow;
    if (l->can_die && len > rvlen) rvlen = len;
  }
  d->dscr = zalloc(d, need * sizeof(float));
  d->rv = zalloc(d, (size_t)rvlen * (size_t)d->pub.cap * sizeof(float));
  if (done(d)) {
    snprintf(d->pub.error, sizeof d->pub.error, "cuda backend: phase II's scratch (%zu MB) does not fit on the device",
             (need + (size_t)rvlen * (size_t)d->pub.cap) * sizeof(float) >> 20);
    drop_p2(d);
    return -1;
  }
  for (int i = 0; i < g->n_layers; i++)
    if (d->dense[i].mod) cu_kern_lend_scratch(&d->dense[i], d->dscr, need);
  if (p2_ops(d)) {
    drop_p2(d);
    return -1;
  }
  return 0;
}

/* Phase II's pass on one batch, on the device: a forward, the loss and
 * a backward on the dense kernels (every weight's gradient, the missing
 * ones included), and each dead layer's gradient as if revived
 * (KD_REVIVE) through its dense weight gradient. The gradients stay at
 * pgm + np. */
static int dense_pass(dstep *d, const float *images, const ir_label *labels, int n, double *loss) {
  rt_backend *b = &d->pub;
  const ir_graph *g = b->g;
  int was = d->p2;
  d->p2 = 1;
  int rc = p2_kernels(d);
  if (!rc) rc = st_upload(b, images, n);
  if (!rc) rc = st_forward(b);
  if (!rc) rc = st_loss(b, labels, 1, loss, NULL);
  if (!rc) rc = st_backward(b);
  d->p2 = was;
  if (rc) return -1;
  const ir_tensor *T = g->tensors;
  CUdeviceptr gr = fptr(d->pgm, d->np);
  for (int i = 0; i < g->n_layers && !d->fail; i++) {
    const ir_layer *l = &g->layers[i];
    if (!d->dense[i].mod) continue;
    d->dstats.dense_backend++;
    if (b->arch->alive[i]) continue; /* the backward's */
    if (!d->lk[i][P2_REVIVE].f) {
      chk(d, CUDA_ERROR_INVALID_HANDLE, "a dead layer that cannot die");
      break;
    }
    int64_t in = T[l->in_t].off + (int64_t)l->in_ch * l->h * l->w;
    int64_t len = (int64_t)l->cout * l->oh * l->ow;
    launch(d, &d->lk[i][P2_REVIVE], d->act, d->dact, d->rv, 0, n, d->training, 0);
    if (!d->fail)
      chk(d, cu_kern_bwd(&d->dense[i], d->st, fptr(d->act, in), d->rv, 0, 0, fptr(gr, l->w_off), fptr(gr, l->b_off), n,
                         d->ns, len),
          "phase II's dense gradient");
  }
  return done(d);
}

/* The dense gradient of one batch: the pass, its gradients brought back
 * once. */
static int st_dense_grad(rt_backend *b, const float *images, const ir_label *labels, int n, float *out, double *loss) {
  dstep *d = D(b);
  const ir_graph *g = b->g;
  if (dense_pass(d, images, labels, n, loss)) return -1;
  if (d->np) chk(d, cu.cuMemcpyDtoH_v2(d->grads, fptr(d->pgm, d->np), (size_t)d->np * sizeof(float)),
                 "cuMemcpyDtoH (the gradient)");
  d->gvalid = !d->fail;
  if (done(d)) return -1;
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (!d->dense[i].mod) continue;
    for (int64_t k = l->w_off; k < l->w_off + l->n_w; k++) out[k] += d->grads[k];
    for (int64_t k = l->b_off; k < l->b_off + l->cout; k++) out[k] += d->grads[k];
  }
  return 0;
}

/* ---- phase II's gradients, on the device ---- */

static int64_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* Slot s on the device (zeros at its first use), with p2_slot's writes. */
static void slot_on(dstep *d, int s) {
  size_t bytes = (size_t)d->np * sizeof(float);
  if (!d->slot[s]) d->slot[s] = zalloc(d, bytes);
  if (d->sedit[s] && d->np && !d->fail)
    chk(d, cu.cuMemcpyHtoD_v2(d->slot[s], d->hslot[s], bytes), "cuMemcpyHtoD (a slot)");
  if (!d->fail) d->sedit[s] = 0;
}

/* The masks as they are now, as bytes on the device: in phase II the
 * executor edits them between prepares (d->mask is its array). */
static void put_mask(dstep *d) {
  if (!d->mask) {
    chk(d, CUDA_ERROR_INVALID_HANDLE, "phase II before prepare");
    return;
  }
  if (!d->bmask) d->bmask = zalloc(d, (size_t)d->np);
  if (d->np && !d->fail) chk(d, cu.cuMemcpyHtoD_v2(d->bmask, d->mask, (size_t)d->np), "cuMemcpyHtoD (the masks)");
}

/* Phase II's scratch, of bytes at least. */
static CUdeviceptr p2_scratch(dstep *d, size_t bytes) {
  if (bytes > d->pscr_bytes && !d->fail) {
    if (d->pscr) cu.cuMemFree_v2(d->pscr);
    d->pscr = 0, d->pscr_bytes = 0;
    if (!chk(d, cu.cuMemAlloc_v2(&d->pscr, bytes), "cuMemAlloc")) d->pscr_bytes = bytes;
  }
  return d->pscr;
}

/* dst[off + i] += src[off + i], i < len. */
static void add_into(dstep *d, CUdeviceptr dst, CUdeviceptr src, int64_t off, int64_t len) {
  launch(d, &d->pk[PK_ADD], fptr(dst, off), fptr(src, off), 0, 0, len, 0, 0);
}

/* The slot sums the passes' gradients where p2.c's rt_p2_grad does (what
 * dense_grad returns, and the batch norm of alive layers from the
 * backward), batch by batch, then scales by 1/count: the same floats. */
static int st_p2_grad(rt_backend *b, int slot, const float *images, const ir_label *labels, int count, int n,
                      double *loss) {
  dstep *d = D(b);
  const ir_graph *g = b->g;
  const ir_tensor *t = &g->tensors[g->input_t];
  size_t img = (size_t)t->c * t->h * t->w;
  if (p2_kernels(d)) return -1;
  d->sedit[slot] = 0; /* written over */
  slot_on(d, slot);
  if (d->np && !d->fail) chk(d, cu.cuMemsetD32Async(d->slot[slot], 0, (size_t)d->np, d->st), "cuMemsetD32");
  if (done(d)) return -1;
  CUdeviceptr s = d->slot[slot], gr = fptr(d->pgm, d->np);
  *loss = 0;
  for (int k = 0; k < count; k++) {
    double l;
    if (dense_pass(d, images + (size_t)k * n * img, labels + (size_t)k * n, n, &l)) return -1;
    *loss += l;
    for (int i = 0; i < g->n_layers; i++) {
      const ir_layer *ly = &g->layers[i];
      if (d->dense[i].mod) add_into(d, s, gr, ly->w_off, ly->n_w), add_into(d, s, gr, ly->b_off, ly->cout);
      if (ly->bn && b->arch->alive[i]) add_into(d, s, gr, ly->g_off, 2 * (int64_t)ly->cout);
    }
  }
  launch(d, &d->pk[PK_SCALE], s, 0, 0, 0, d->np, bits_of(1.0f / (float)count), 0);
  *loss /= count;
  return done(d);
}

/* How many units score at least t (as float bits): a count, 8 bytes back. */
static int64_t count_from(dstep *d, int64_t t) {
  int64_t c = 0;
  if (!d->fail) chk(d, cu.cuMemsetD32Async(d->counter, 0, 2, d->st), "cuMemsetD32");
  launch(d, &d->pk[PK_COUNT], d->scores, 0, 0, d->counter, 0, t, 0);
  if (!d->fail) chk(d, cu.cuMemcpyDtoH_v2(&c, d->counter, sizeof c), "cuMemcpyDtoH (a count)");
  return c;
}

/* Unit u of the graph, by its run. */
static rt_unit unit_at(const dstep *d, int64_t u, float score) {
  int lo = 0, hi = d->nruns - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (d->runs[mid].u0 <= u) lo = mid;
    else hi = mid - 1;
  }
  const kd_run *r = &d->runs[lo];
  return (rt_unit){r->p0 + (u - r->u0) * r->len, (int32_t)r->len, d->rlayer[lo], score};
}

/* Every unit scored on the device (0 where it is not missing); the
 * largest threshold t that k scores reach, by bisection over the scores'
 * bits (monotone: the scores are >= 0) with a count each; the units that
 * reach it picked there. The k best and their ties come back, which the
 * host orders as p2.c's rt_units_top does. */
static int st_p2_top(rt_backend *b, int64_t k, rt_unit *out, int64_t *got) {
  dstep *d = D(b);
  *got = 0;
  if (p2_kernels(d)) return -1;
  slot_on(d, 0);
  put_mask(d);
  if (k <= 0 || !d->nunits || d->fail) return done(d);
  launch(d, &d->pk[PK_UNITS], d->slot[0], d->bmask, d->scores, 0, 0, 0, 0);
  int64_t t = 1, c = count_from(d, t); /* the scores other than 0 */
  for (int64_t hi = (int64_t)1 << 32; c > k && hi - t > 1 && !d->fail;) {
    int64_t mid = t + (hi - t) / 2, cm = count_from(d, mid);
    if (cm >= k) t = mid, c = cm;
    else hi = mid;
  }
  if (c == 0 || d->fail) return done(d);
  kd_hit *hit = malloc((size_t)c * sizeof *hit);
  rt_unit *u = malloc((size_t)c * sizeof *u);
  if (!hit || !u) {
    free(hit), free(u);
    snprintf(b->error, sizeof b->error, "cuda backend: out of memory for phase II's ranking");
    return -1;
  }
  CUdeviceptr at = p2_scratch(d, (size_t)c * sizeof *hit);
  if (!d->fail) chk(d, cu.cuMemsetD32Async(d->counter, 0, 2, d->st), "cuMemsetD32");
  launch(d, &d->pk[PK_EMIT], d->scores, 0, at, d->counter, 0, t, 0);
  if (!d->fail) chk(d, cu.cuMemcpyDtoH_v2(hit, at, (size_t)c * sizeof *hit), "cuMemcpyDtoH (the picks)");
  if (!d->fail) {
    for (int64_t i = 0; i < c; i++) u[i] = unit_at(d, hit[i].unit, hit[i].score);
    qsort(u, (size_t)c, sizeof *u, rt_unit_order);
    *got = c < k ? c : k;
    memcpy(out, u, (size_t)*got * sizeof *u);
  }
  free(hit), free(u);
  return done(d);
}

/* The units' (start, len) in, their norms of g + g* out. */
static int st_p2_score(rt_backend *b, rt_unit *u, int64_t n) {
  dstep *d = D(b);
  if (p2_kernels(d)) return -1;
  slot_on(d, 0), slot_on(d, 1);
  if (n <= 0 || d->fail) return done(d);
  size_t in = (size_t)n * 2 * sizeof(int64_t);
  int64_t (*span)[2] = malloc(in + (size_t)n * sizeof(float));
  if (!span) {
    snprintf(b->error, sizeof b->error, "cuda backend: out of memory for phase II's scores");
    return -1;
  }
  float *score = (float *)(span + n);
  for (int64_t i = 0; i < n; i++) span[i][0] = u[i].start, span[i][1] = u[i].len;
  CUdeviceptr at = p2_scratch(d, in + (size_t)n * sizeof(float));
  if (!d->fail) chk(d, cu.cuMemcpyHtoD_v2(at, span, in), "cuMemcpyHtoD (the units)");
  launch(d, &d->pk[PK_PAIR], d->slot[0], d->slot[1], at, at + in, n, 0, 0);
  if (!d->fail) chk(d, cu.cuMemcpyDtoH_v2(score, at + in, (size_t)n * sizeof(float)), "cuMemcpyDtoH (the scores)");
  for (int64_t i = 0; i < n && !d->fail; i++) u[i].score = score[i];
  free(span);
  return done(d);
}

/* W kept on the device, then W* = W - lr g where the masks are set: the
 * active weights and biases and the batch norm of alive layers, which
 * p2.c's rt_p2_hyper walks. The host's edits go first; its copy of the
 * parameters is stale after. */
static int st_p2_hyper(rt_backend *b, float lr) {
  dstep *d = D(b);
  if (p2_kernels(d)) return -1;
  slot_on(d, 0);
  put_mask(d);
  if (!d->wkept) d->wkept = zalloc(d, (size_t)d->np * sizeof(float));
  flush(d);
  launch(d, &d->pk[PK_COPY], d->wkept, d->pgm, 0, 0, d->np, 0, 0);
  launch(d, &d->pk[PK_DESCEND], d->pgm, d->slot[0], d->bmask, 0, d->np, bits_of(lr), 0);
  d->kept = !d->fail;
  d->valid[0] = 0;
  return done(d);
}

/* W back, all of it, on the device. */
static int st_p2_restore(rt_backend *b) {
  dstep *d = D(b);
  if (!d->kept) return 0;
  flush(d);
  launch(d, &d->pk[PK_COPY], d->pgm, d->wkept, 0, 0, d->np, 0, 0);
  d->kept = 0;
  d->valid[0] = 0;
  return done(d);
}

/* A slot's host copy: brought back unless written since (the writes are
 * newer); with write, the device takes it before its next read. */
static float *st_p2_slot(rt_backend *b, int slot, int write) {
  dstep *d = D(b);
  size_t bytes = (size_t)d->np * sizeof(float);
  if (!d->hslot[slot] && !(d->hslot[slot] = malloc(bytes ? bytes : 4))) {
    snprintf(b->error, sizeof b->error, "cuda backend: out of memory for phase II's gradients");
    return NULL;
  }
  if (!d->sedit[slot]) {
    slot_on(d, slot);
    if (d->np && !d->fail) chk(d, cu.cuMemcpyDtoH_v2(d->hslot[slot], d->slot[slot], bytes), "cuMemcpyDtoH (a slot)");
  }
  if (write && !d->fail) d->sedit[slot] = 1;
  return done(d) ? NULL : d->hslot[slot];
}

static rt_backend_stats st_stats(const rt_backend *b) { return ((const dstep *)b)->dstats; }

static int st_profile(rt_backend *b) {
  (void)b;
  return 0;
}

static void st_profile_pause(rt_backend *b, int pause) { (void)b, (void)pause; }

static void st_profile_report(const rt_backend *b, FILE *f, long steps) {
  const dstep *d = (const dstep *)b;
  fprintf(f, "profile: the cuda step runs on the device, each phase one CUDA graph (%ld graph launches, "
             "%ld captures over %ld steps); bench/gpu times it\n",
          d->gs.graph_launches, d->gs.captures, steps);
}

static int st_channel_stats(rt_backend *b, int li, double *mean, double *var, double *min) {
  dstep *d = D(b);
  const ir_graph *g = b->g;
  const ir_layer *l = &g->layers[li];
  if (d->n < 1) return -1;
  if (d->lk[li][C_STATS].f) { /* on the device: three doubles a channel back */
    double *t = malloc((size_t)l->cout * 3 * sizeof *t);
    if (!t) return -1;
    if (!d->cst) {
      size_t most = 1;
      for (int i = 0; i < g->n_layers; i++)
        if (d->lk[i][C_STATS].f && (size_t)g->layers[i].cout > most) most = (size_t)g->layers[i].cout;
      d->cst = zalloc(d, most * 3 * sizeof(double));
    }
    launch(d, &d->lk[li][C_STATS], d->act, 0, 0, d->cst, d->n, 0, 0);
    if (!d->fail) chk(d, cu.cuMemcpyDtoH_v2(t, d->cst, (size_t)l->cout * 3 * sizeof *t), "cuMemcpyDtoH (channel statistics)");
    int rc = done(d);
    for (int ch = 0; ch < l->cout && rc == 0; ch++) {
      mean[ch] = t[3 * ch], var[ch] = t[3 * ch + 1];
      if (min) min[ch] = t[3 * ch + 2];
    }
    free(t);
    return rc;
  }
  int64_t plane = (int64_t)l->oh * l->ow, len = (int64_t)l->cout * plane;
  float *o = malloc((size_t)(d->n * len) * sizeof *o);
  if (!o) return -1;
  CUDA_MEMCPY2D c;
  memset(&c, 0, sizeof c);
  c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
  c.srcDevice = fptr(d->act, g->tensors[l->out_t].off + (int64_t)l->out_ch * plane);
  c.srcPitch = (size_t)d->ns * sizeof(float);
  c.dstMemoryType = CU_MEMORYTYPE_HOST, c.dstHost = o, c.dstPitch = (size_t)len * sizeof(float);
  c.WidthInBytes = (size_t)len * sizeof(float), c.Height = (size_t)d->n;
  chk(d, cu.cuMemcpy2DAsync_v2(&c, d->st), "cuMemcpy2D");
  if (!d->fail) chk(d, cu.cuStreamSynchronize(d->st), "the step");
  if (done(d)) {
    free(o);
    return -1;
  }
  rt_ref_channel_stats(d->n, l->cout, plane, len, o, mean, var, min);
  free(o);
  return 0;
}

static rt_backend_mem st_memory(const rt_backend *b) {
  rt_backend_mem m = {b->g->act_size * (int64_t)sizeof(float), b->g->act_size * (int64_t)sizeof(float)};
  return m;
}

static rt_kernels *st_kernels(rt_backend *b) { return D(b)->ks; }

static void st_free(rt_backend *b) {
  if (!b) return;
  dstep *d = D(b);
  if (d->ctx) cu.cuCtxSetCurrent(d->ctx);
  drop_graphs(d);
  drop_set(d);
  CUdeviceptr *bufs[] = {&d->act, &d->dact, &d->pgm, &d->stats, &d->bnaux, &d->labels, &d->lsc, &d->scal, &d->cst};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
    if (*bufs[i]) cu.cuMemFree_v2(*bufs[i]);
  drop_p2(d);
  if (d->mod) cu.cuModuleUnload(d->mod);
  if (d->ks) d->ks->free(d->ks);
  for (int i = 0; i < 3; i++) free(d->h[i]);
  free(d->grads), free(d->logits), free(d->tmp), free(d->lk), free(d->zero), free(d->assign), free(d->pend);
  free(d->fc), free(d->bc);
  free(d);
}

static rt_cuda_step_stats no_stats;

rt_cuda_step_stats rt_cuda_step_get_stats(rt_backend *b) {
  return b && b->i->free == st_free ? D(b)->gs : no_stats;
}

static const rt_backend_i step_i = {
    .name = "cuda",
    .free = st_free,
    .prepare = st_prepare,
    .set_driver = st_set_driver,
    .upload = st_upload,
    .set_dataset = st_set_dataset,
    .take_dataset = st_take_dataset,
    .upload_draws = st_upload_draws,
    .forward = st_forward,
    .loss = st_loss,
    .backward = st_backward,
    .run = st_run,
    .sgd = st_sgd,
    .train_step = st_train_step,
    .set_training = st_set_training,
    .view = st_view,
    .edit = st_edit,
    .set_range = st_set_range,
    .take_state = st_take_state,
    .phase2 = st_phase2,
    .dense_grad = st_dense_grad,
    .p2_grad = st_p2_grad,
    .p2_top = st_p2_top,
    .p2_score = st_p2_score,
    .p2_hyper = st_p2_hyper,
    .p2_restore = st_p2_restore,
    .p2_slot = st_p2_slot,
    .stats = st_stats,
    .profile = st_profile,
    .profile_pause = st_profile_pause,
    .profile_report = st_profile_report,
    .channel_stats = st_channel_stats,
    .memory = st_memory,
    .kernels = st_kernels,
};

rt_backend *rt_cuda_step_new(const ir_graph *g, const ir_arch *arch, int cap, int threads, char *err, size_t errlen) {
  for (int i = 0; i < g->n_layers; i++)
    if (g->layers[i].kind == IR_LINEAR && g->layers[i].bn) {
      snprintf(err, errlen, "cuda backend: layer %s: batch norm on a linear layer", g->layers[i].name);
      return NULL;
    }
  dstep *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "cuda backend: out of memory");
    return NULL;
  }
  d->pub = (rt_backend){.i = &step_i, .g = g, .arch = arch, .cap = cap, .threads = threads};
  if (!(d->ks = rt_kernels_cuda_new(g, err, errlen))) {
    free(d);
    return NULL;
  }
  d->ks->threads = threads;
  if (rt_cuda_kernels_device(d->ks, &d->ctx, &d->st, &d->blas, &d->sm)) {
    snprintf(err, errlen, "cuda backend: no CUDA kernel set");
    st_free(&d->pub);
    return NULL;
  }
  d->ns = g->act_size, d->np = g->n_params, d->nstats = g->n_stats;
  d->training = 1;
  const char *gr = getenv("ILNAS_CUDA_GRAPHS");
  d->no_graphs = gr && strcmp(gr, "0") == 0;
  for (int p = 0; p < N_PH; p++) d->ph[p].warm = -1;
  d->hn[0] = d->hn[1] = d->np, d->hn[2] = d->nstats;
  int oom = 0;
  for (int i = 0; i < 3; i++) oom |= !(d->h[i] = calloc((size_t)(d->hn[i] ? d->hn[i] : 1), sizeof(float)));
  int64_t big = d->np > d->nstats ? d->np : d->nstats;
  oom |= !(d->grads = calloc((size_t)(d->np ? d->np : 1), sizeof(float)));
  oom |= !(d->logits = calloc((size_t)cap * (size_t)g->cfg.classes, sizeof(float)));
  oom |= !(d->tmp = calloc((size_t)(big ? big : 1), sizeof(float)));
  oom |= !(d->lk = calloc((size_t)(g->n_layers ? g->n_layers : 1), sizeof *d->lk));
  oom |= !(d->assign = calloc((size_t)(g->n_layers ? g->n_layers : 1), 1));
  oom |= !(d->pend = calloc((size_t)(g->n_layers ? g->n_layers : 1), 1));
  if (oom || plan_zero(d) || ir_schedule(g, &d->fc, &d->nf, &d->bc, &d->nb)) {
    snprintf(err, errlen, "cuda backend: out of memory");
    st_free(&d->pub);
    return NULL;
  }
  chk(d, cu.cuCtxSetCurrent(d->ctx), "cuCtxSetCurrent");
  size_t arena = (size_t)cap * (size_t)d->ns * sizeof(float);
  d->act = zalloc(d, arena), d->dact = zalloc(d, arena);
  d->pgm = zalloc(d, 4 * (size_t)d->np * sizeof(float));
  d->stats = zalloc(d, (size_t)d->nstats * sizeof(float));
  d->bnaux = zalloc(d, 2 * (size_t)d->nstats * sizeof(float));
  d->labels = zalloc(d, (size_t)cap * sizeof(ir_label) + 4);
  d->lsc = zalloc(d, 2 * (size_t)cap * sizeof(double));
  d->scal = zalloc(d, 8 * sizeof(float));
  if (!d->fail) chk(d, cu.cuStreamSynchronize(d->st), "cuStreamSynchronize");
  if (d->fail) {
    snprintf(err, errlen, "%s", d->pub.error);
    st_free(&d->pub);
    return NULL;
  }
  if (build_kernels(d, err, errlen)) {
    st_free(&d->pub);
    return NULL;
  }
  for (int i = 0; i < 3; i++) d->valid[i] = 1; /* zeros, as on the device */
  return &d->pub;
}
