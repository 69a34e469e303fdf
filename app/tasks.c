/* tasks.c: a run of several tasks over one super-network (multi-task).
 *
 * Each task is a network of its own over the model's template: the task's
 * view of the model (fe_task_view: its classes and its data), its graph,
 * executor, data, normalisation and search state, as a single-task run
 * has them, and its own classifier and batch norm. What the tasks share
 * is an architecture over the trunk (the template up to the classifier),
 * the shared α: its weights are active in every task with the same
 * values, and each step trains them with the sum of the tasks' gradients
 * (rt_exec_sgd_shared). Task t's network is α_shared ∪ α_t; a weight of
 * α_t is the task's own, even where another task has one at the same
 * place of the template.
 *
 * Budgets: the model's budget is each task's network; `shared F` keeps
 * F of it for the shared architecture, the rest for the task's own. The
 * seed's trunk is shared; its classifiers are the tasks' own.
 *
 * A step takes one batch of every task (the tasks interleave batch by
 * batch); an epoch has as many steps as the largest training set has
 * batches, and a smaller set starts another pass of its own when it runs
 * out. Phase II, when due, grows the shared architecture first (scored by
 * the summed gradient: srch_expand_shared), then each task's own
 * (srch_expand), each within its budget.
 *
 * The checkpoint holds the model's IR (with the shared α), a record of the
 * run, and each task's network under the task's tags (run_ckpt_add). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/run.h"
#include "runtime/ckpt.h"

typedef struct task {
  const char *name;
  fe_model view;          /* the model as this task sees it */
  ir_graph *g;            /* built from view */
  rt_exec *x;
  app_train_state st;     /* its seed, data order, normalisation, search */
  rt_dataset train, test;
  rt_norm nm;
  rt_stream *stream;
  int draws;              /* a set in memory: passes begin from its draws */
  char *classes;
  int *order;             /* its pass's order, phase II's draws */
  float *pbuf;            /* phase II's batches */
  ir_label *plab;
  srch_state ss;
  int have_srch;
  int steps;              /* batches in one pass over its training set */
  int left;               /* batches left in the current pass */
  double loss_sum;        /* this epoch's */
  int seen, correct;
  double test_acc, test_loss;
} task;

typedef struct mt_run {
  ir_graph *g;            /* the binary's: the model with its tasks */
  const fe_model *m;
  const app_train_opts *o;
  int n;
  task t[FE_MAX_TASKS];
  int epochs, threads, loaders, steps;
  double lr;              /* the schedule's base learning rate: --lr or the model's */
  const char *backend;
  fe_search method;
  srch_schedule sched;
  ir_arch shared;         /* the shared α, over the trunk */
  int64_t trunk_end;      /* the classifier's first parameter */
  int64_t shared_budget, own_budget;
  int64_t *idx, n_idx;    /* the shared parameters, for the step */
  float *sum;             /* n_idx: their summed gradients */
  srch_state ss;          /* the shared architecture's growth */
  int have_srch;
  double alr;             /* --resume: its state, for ss */
  int expansions;
  rt_rng srng;
  int epoch;
  int64_t step;
  double prev_loss;
  FILE *metrics;
  char mpath[4096], path[4096];
  int tty, tested;
  double t0;
  long profiled;          /* training steps timed (--profile) */
  double first_ms;        /* --profile: the run's first step, left out of the
                           * tables (its arenas' pages touched first); 0
                           * while it has not run or was timed */
  run_step_times times;   /* --profile: the timed steps where every task
                           * took a whole batch */
} mt_run;

/* The run's own checkpoint record; the tasks' are theirs (run_ckpt_add). */
typedef struct mt_rec {
  uint32_t mark;
  int32_t n_tasks;
  int32_t epoch;
  int32_t pad;
  int64_t step;
  double prev_loss;
  double alr;
  int64_t expansions;
  uint64_t srng[4];
} mt_rec;
static const uint32_t MT_MARK = 0x4d540102u;

/* The shared parameters' indices, after the shared α changed. */
static int index_shared(mt_run *r) {
  int64_t n = ir_count_active_bits(&r->shared, r->trunk_end), k = 0;
  int64_t *idx = realloc(r->idx, (size_t)(n ? n : 1) * sizeof *idx);
  float *sum = realloc(r->sum, (size_t)(n ? n : 1) * sizeof *sum);
  if (idx) r->idx = idx;
  if (sum) r->sum = sum;
  if (!idx || !sum) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  for (int64_t i = 0; i < r->trunk_end; i++)
    if (ir_alpha_get(&r->shared, i)) r->idx[k++] = i;
  r->n_idx = n;
  return 0;
}

/* Task k's graph, which must be task 0's but for the classifier, whose
 * parameters come last. */
static int build_task(mt_run *r, int k) {
  task *t = &r->t[k];
  char err[1024];
  t->name = r->m->tasks[k].name;
  fe_task_view(r->m, k, &t->view);
  t->g = ir_build(&t->view, stderr);
  if (!t->g) return -1;
  const ir_graph *g = t->g;
  const ir_layer *head = &g->layers[g->n_layers - 1];
  if (head->out_t != g->logits_t || head->w_off + head->n_w != head->b_off ||
      head->b_off + head->cout != g->n_params) {
    fprintf(stderr, "error: model '%s': task '%s': the classifier is not the last of the "
            "parameters, which tasks need\n", r->m->name, t->name);
    return -1;
  }
  if (k == 0) {
    r->trunk_end = head->w_off;
    return 0;
  }
  if (app_ir_transferable(r->t[0].g, g, err, sizeof err) || head->w_off != r->trunk_end ||
      g->n_stats != r->t[0].g->n_stats) {
    fprintf(stderr, "error: model '%s': task '%s' does not have task '%s''s trunk: %s\n",
            r->m->name, t->name, r->t[0].name, err);
    return -1;
  }
  return 0;
}

/* The shared α from a: its bits over the trunk's weights and biases.
 * Batch norm's parameters are each task's own, as its running statistics
 * are: their bits, which a layer's coming alive sets, stay out of it (a
 * checkpoint written with them in is read without them). */
static void shared_from(mt_run *r, const ir_arch *a) {
  const ir_graph *g = r->t[0].g;
  ir_arch_copy(&r->shared, a, g);
  for (int64_t i = r->trunk_end; i < g->n_params; i++) ir_alpha_set(&r->shared, i, 0);
  for (int li = 0; li < g->n_layers; li++)
    for (int64_t i = 0; g->layers[li].bn && i < 2 * (int64_t)g->layers[li].cout; i++)
      ir_alpha_set(&r->shared, g->layers[li].g_off + i, 0);
}

/* Task k takes task 0's values of the shared weights. */
static void share_weights(mt_run *r, int k) {
  const float *p0 = rt_exec_view(r->t[0].x, RT_PARAMS);
  float *p = rt_exec_params_write(r->t[k].x);
  for (int64_t i = 0; i < r->trunk_end; i++)
    if (ir_alpha_get(&r->shared, i)) p[i] = p0[i];
}

/* A fresh task: the seed, its weights from the run's seed; the trunk is
 * shared, so its weights are task 0's. */
static int fresh_task(mt_run *r, int k) {
  task *t = &r->t[k];
  const fe_model *m = r->m;
  char err[1024];
  t->x = rt_exec_new(t->g, m->batch, r->threads, r->backend, err, sizeof err);
  if (!t->x) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  t->st.seed = r->o->seed >= 0 ? (uint64_t)r->o->seed : m->seed;
  rt_rng_seed(&t->st.rng, (t->st.seed * 2 + 1) ^ (0x9e3779b97f4a7c15ull * (uint64_t)k));
  rt_exec_init_params(t->x, t->st.seed + (uint64_t)k);
  t->st.alr = m->alr;
  if (k == 0) {
    shared_from(r, t->x->arch); /* the seed's trunk */
    return 0;
  }
  const rt_exec *x0 = r->t[0].x;
  for (int64_t i = 0; i < r->trunk_end; i++)
    if (ir_alpha_get(t->x->arch, i) != ir_alpha_get(x0->arch, i)) {
      fprintf(stderr, "error: model '%s': the seeds of tasks '%s' and '%s' differ in the "
              "trunk\n", m->name, r->t[0].name, t->name);
      return -1;
    }
  share_weights(r, k);
  return 0;
}

/* --search fixed: the shared architecture grown at random to its part of
 * the budget, each task's to the rest, then weights drawn afresh (a
 * static network starts from scratch). */
static void fixed_baseline(mt_run *r) {
  rt_exec *xs[FE_MAX_TASKS];
  srch_event ev = {0};
  for (int k = 0; k < r->n; k++) xs[k] = r->t[k].x;
  int64_t have = ir_count_active_bits(&r->shared, r->trunk_end);
  if (r->shared_budget != INT64_MAX && r->shared_budget > have)
    srch_grow_shared_random(&r->ss, xs, r->n, &r->shared, r->trunk_end, r->shared_budget - have,
                            &ev);
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    int64_t active = ir_count_params(t->g, t->x->arch).active;
    if (r->m->budget != INT64_MAX && r->m->budget > active)
      srch_grow_random(&t->ss, t->x, r->m->budget - active, &ev);
    rt_exec_init_params(t->x, t->st.seed + (uint64_t)k);
  }
  for (int k = 1; k < r->n; k++) share_weights(r, k);
}

/* --resume: every task's network and state from the checkpoint, and the
 * run's. */
static int resume_tasks(mt_run *r) {
  const char *path = r->o->resume;
  char err[1024];
  rt_ckpt *c = rt_ckpt_read(path, err, sizeof err);
  if (!c) {
    fprintf(stderr, "error: %s\n", err);
    return -1;
  }
  size_t n, nir;
  const void *ir = rt_ckpt_get(c, "IRGR", &nir);
  const mt_rec *rec = rt_ckpt_get(c, "MTST", &n);
  ir_graph *cg = NULL;
  int rc = -1;
  if (!rec || n != sizeof *rec || rec->mark != MT_MARK) {
    fprintf(stderr, "error: %s: not a checkpoint of a multi-task run (model '%s' has "
            "tasks)\n", path, r->m->name);
    goto out;
  }
  if (rec->n_tasks != r->n) {
    fprintf(stderr, "error: %s has %d tasks, model '%s' %d\n", path, rec->n_tasks, r->m->name,
            r->n);
    goto out;
  }
  if (!ir || !(cg = ir_deserialize(ir, nir, err, sizeof err))) {
    fprintf(stderr, "error: %s: %s\n", path, ir ? err : "a multi-task checkpoint lacks its IR");
    goto out;
  }
  for (int k = 0; k < r->n; k++)
    if (strcmp(cg->cfg.tasks[k].name, r->t[k].name) != 0) {
      fprintf(stderr, "error: %s: its task %d is '%s', this model's is '%s'\n", path, k,
              cg->cfg.tasks[k].name, r->t[k].name);
      goto out;
    }
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    ir_graph *tg;
    rt_exec *tx;
    if (run_ckpt_get(c, path, k, 1, 1, "ref", &tg, &tx, &t->st, err, sizeof err) ||
        app_ir_compatible(t->g, tg, err, sizeof err)) {
      fprintf(stderr, "error: %s: task '%s': %s\n", path, t->name, err);
      if (tg) rt_exec_free(tx), ir_free(tg);
      goto out;
    }
    t->x = run_exec_like(t->g, tx, r->m->batch, r->threads, r->backend, err, sizeof err);
    rt_exec_free(tx), ir_free(tg);
    if (!t->x) {
      fprintf(stderr, "error: %s\n", err);
      goto out;
    }
  }
  shared_from(r, &cg->arch);
  r->epoch = rec->epoch, r->step = rec->step, r->prev_loss = rec->prev_loss;
  r->alr = rec->alr, r->expansions = (int)rec->expansions;
  memcpy(r->srng.s, rec->srng, sizeof rec->srng);
  if (r->epoch > r->epochs) {
    fprintf(stderr, "error: %s has %d epochs done, more than the %d asked for; resume "
            "with --epochs %d or more\n", path, r->epoch, r->epochs, r->epoch);
    goto out;
  }
  rc = 0;
out:
  ir_free(cg);
  rt_ckpt_free(c);
  return rc;
}

/* The data of task k, its normalisation, batches and buffers. */
static int task_data(mt_run *r, int k) {
  task *t = &r->t[k];
  const fe_model *m = r->m;
  char err[1024];
  if (run_load_data(t->g, NULL, r->o->skip_bad, r->loaders, r->o->train_limit, &t->train,
                    &t->test)) {
    fprintf(stderr, "  (the data of task '%s')\n", t->name);
    return -1;
  }
  if (r->o->train_limit > 0 && r->o->train_limit < t->train.n)
    rt_dataset_truncate(&t->train, r->o->train_limit);
  if (!r->o->resume) rt_data_norm(&t->train, &t->st.norm);
  t->nm = t->st.norm;
  if (run_class_list(&t->train, &t->classes)) return -1;
  t->st.classes = t->classes;
  t->st.search = (int)r->method + 1;
  size_t img = (size_t)t->train.c * t->train.h * t->train.w;
  t->order = malloc((size_t)(t->train.n ? t->train.n : 1) * sizeof(int));
  t->pbuf = malloc((size_t)m->grow_batches * m->batch * img * sizeof(float));
  t->plab = malloc((size_t)m->grow_batches * m->batch * sizeof *t->plab);
  if (!t->order || !t->pbuf || !t->plab) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  t->stream = rt_stream_new(&t->train, &t->nm, m->batch, t->train.src ? 1 : t->view.aug_crop,
                            t->view.aug_flip, t->train.src ? r->loaders : 0, 3, err, sizeof err);
  if (!t->stream) {
    fprintf(stderr, "error: task '%s': %s\n", t->name, err);
    return -1;
  }
  rt_stream_part(t->stream, r->o->comm);
  /* a set in memory goes to a backend that keeps it (app/train.c) */
  t->draws = !t->train.src;
  if (t->draws && rt_exec_set_dataset(t->x, &t->train, &t->nm, t->view.aug_crop, err, sizeof err) < 0) {
    fprintf(stderr, "error: task '%s': %s\n", t->name, err);
    return -1;
  }
  t->steps = run_steps(t->train.n, m->batch, r->o->comm);
  if (t->steps == 0) {
    fprintf(stderr, "error: task '%s': %d training images make no batch for %d ranks\n", t->name,
            t->train.n, rt_comm_size(r->o->comm));
    return -1;
  }
  if (t->steps > r->steps) r->steps = t->steps;
  return 0;
}

/* What each architecture may hold: the shared one its part of the
 * budget; a task's network the budget, its own part what the shared
 * part leaves. */
static int budgets(mt_run *r) {
  const fe_model *m = r->m;
  int64_t seed = ir_count_active_bits(&r->shared, r->trunk_end);
  if (m->budget == INT64_MAX) {
    r->shared_budget = r->own_budget = INT64_MAX;
    return 0;
  }
  r->shared_budget = (int64_t)floor(m->shared * (double)m->budget);
  r->own_budget = m->budget - r->shared_budget;
  if (seed > r->shared_budget && !r->o->resume) {
    fprintf(stderr, "error: model '%s': the seed's trunk, which the tasks share, has %" PRId64
            " parameters, more than the shared part of the budget (shared %g of %" PRId64
            " = %" PRId64 "); raise 'shared' or the budget, or lower 'from density'\n",
            m->name, seed, m->shared, m->budget, r->shared_budget);
    return -1;
  }
  return 0;
}

/* What a task's network may hold as its own grows: the shared part as it
 * is and the task's own part of the budget. */
static int64_t network_cap(const mt_run *r) {
  return r->own_budget == INT64_MAX ? INT64_MAX : r->n_idx + r->own_budget;
}

/* The parameters stored for every task's network: the shared ones once. */
static int64_t stored_params(const mt_run *r) {
  int64_t n = r->n_idx;
  for (int k = 0; k < r->n; k++) n += ir_count_params(r->t[k].g, r->t[k].x->arch).active - r->n_idx;
  return n;
}

static int open_metrics(mt_run *r) {
  r->metrics = run_open_metrics(r->o, r->epoch, r->mpath, sizeof r->mpath);
  return r->metrics ? 0 : -1;
}

static int flush_metrics(mt_run *r) {
  if (fflush(r->metrics) == 0 && !ferror(r->metrics)) return 0;
  fprintf(stderr, "%serror: writing '%s' failed\n", r->tty ? "\n" : "", r->mpath);
  return -1;
}

static int prepare_all(mt_run *r) {
  char err[1024];
  for (int k = 0; k < r->n; k++)
    if (rt_exec_prepare(r->t[k].x, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      return -1;
    }
  return 0;
}

/* The ranks in step (rt_exec_sync), every task's network: after phase I
 * and after growth. */
static int sync_tasks(mt_run *r) {
  char err[1024];
  for (int k = 0; k < r->n; k++)
    if (rt_exec_sync(r->t[k].x, err, sizeof err)) {
      fprintf(stderr, "%serror: task '%s': %s\n", r->tty ? "\n" : "", r->t[k].name, err);
      return -1;
    }
  return 0;
}

static int setup(mt_run *r, ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd,
                 const app_train_opts *o) {
  const fe_model *m = &g->cfg;
  char why[512];
  memset(r, 0, sizeof *r);
  r->g = g, r->m = m, r->o = o, r->n = m->n_tasks;
  r->epochs = o->epochs > 0 ? o->epochs : m->epochs;
  r->lr = o->lr > 0 ? o->lr : m->lr;
  r->sched = srch_schedule_of(m, r->epochs, o->freeze_last);
  r->threads = run_threads(o);
  r->loaders = o->loaders > 0 ? o->loaders : r->threads;
  r->method = o->search >= 0 ? (fe_search)o->search : m->method;
  r->backend = rt_backend_resolve(o->backend ? o->backend : APP_DEFAULT_BACKEND, why, sizeof why);
  if (why[0] && !o->quiet) fprintf(stderr, "%s\n", why);
  if (run_ranks_check(o, r->backend, m->batch)) return -1;
  if (o->from || o->data) {
    fprintf(stderr, "error: model '%s' has tasks: %s\n", m->name,
            o->from ? "--from starts a single-task run from a checkpoint"
                    : "each task reads the data its data statement names; --data names one");
    return -1;
  }
  for (int k = 0; k < r->n; k++)
    if (build_task(r, k)) return -1;
  if (ir_arch_init(&r->shared, r->t[0].g)) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  if (o->resume) {
    if (resume_tasks(r)) return -1;
  } else {
    for (int k = 0; k < r->n; k++)
      if (fresh_task(r, k)) return -1;
  }
  if (budgets(r) || index_shared(r)) return -1;
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    rt_exec_set_comm(t->x, o->comm);
    if (task_data(r, k)) return -1;
    rt_exec_set_driver(t->x, t->g->cfg.classes == g->cfg.classes ? fwd : NULL,
                       t->g->cfg.classes == g->cfg.classes ? bwd : NULL);
    if (srch_init(&t->ss, t->g, r->method, t->st.seed + (uint64_t)k)) {
      fprintf(stderr, "error: out of memory\n");
      return -1;
    }
    t->have_srch = 1;
    if (o->resume) {
      t->ss.alr = t->st.alr, t->ss.expansions = t->st.expansions, t->ss.rng = t->st.srng;
    } else if (r->method != FE_SEARCH_FIXED) {
      t->ss.budget = network_cap(r);
      srch_refill(&t->ss, t->x);
    }
  }
  if (srch_init(&r->ss, r->t[0].g, r->method, r->t[0].st.seed ^ 0x5bd1e995ull)) {
    fprintf(stderr, "error: out of memory\n");
    return -1;
  }
  r->have_srch = 1;
  r->ss.budget = r->shared_budget;
  if (o->resume) r->ss.alr = r->alr, r->ss.expansions = r->expansions, r->ss.rng = r->srng;
  if (!o->resume && r->method == FE_SEARCH_FIXED) fixed_baseline(r);
  if (index_shared(r) || prepare_all(r)) return -1;
  for (int k = 0; k < r->n && o->profile; k++)
    if (rt_exec_profile(r->t[k].x)) {
      fprintf(stderr, "error: out of memory\n");
      return -1;
    }
  /* the ranks run one run (app/train.c) */
  int64_t run[3 + 3 * FE_MAX_TASKS] = {r->steps, r->epochs, r->epoch};
  for (int k = 0; k < r->n; k++)
    run[3 + 3 * k] = r->t[k].train.n, run[4 + 3 * k] = r->t[k].test.n,
    run[5 + 3 * k] = (int64_t)r->t[k].st.seed;
  if (run_ranks_agree(o, run, 3 + 3 * r->n) || sync_tasks(r)) return -1;
  if (open_metrics(r)) return -1;
  r->tty = isatty(2) && !o->quiet;
  r->t0 = run_now();
  if (!o->quiet) {
    fprintf(stderr, "training %s: %d tasks, %d epochs of %d steps, batch %d from each task, "
            "lr %g, %d threads, search %s, backend %s\n", m->name, r->n, r->epochs, r->steps,
            m->batch, r->lr, r->threads, fe_search_name(r->method), r->backend);
    for (int k = 0; k < r->n; k++) {
      const task *t = &r->t[k];
      fprintf(stderr, "  task %s: %d images, %d classes, %" PRId64 " active parameters\n",
              t->name, t->train.n, t->g->cfg.classes,
              ir_count_params(t->g, t->x->arch).active);
    }
    if (m->budget != INT64_MAX)
      fprintf(stderr, "  shared: %" PRId64 " parameters of %" PRId64 "; each task's network "
              "at most %" PRId64 "\n", r->n_idx, r->shared_budget, m->budget);
  }
  return 0;
}

/* The next batch of task t, a new pass of its own when one ends. */
/* The task's next batch, as images (*xb) or as draws of its set (*dr,
 * with t->draws). */
static int next_batch(mt_run *r, task *t, const float **xb, const rt_draw **dr, const ir_label **lab,
                      int *b) {
  char err[1024];
  for (int tries = 0; tries < 2; tries++) {
    if (t->left <= 0) {
      run_shuffle(t->order, t->train.n, &t->st.rng);
      rt_stream_epoch(t->stream, t->order, t->train.n, &t->st.rng);
      t->left = t->steps;
    }
    int rc = t->draws ? rt_stream_next_draws(t->stream, dr, lab, b, err, sizeof err)
                      : rt_stream_next(t->stream, xb, lab, b, err, sizeof err);
    if (rc < 0) {
      fprintf(stderr, "%serror: task '%s': %s\n", r->tty ? "\n" : "", t->name, err);
      return -1;
    }
    if (rc == 0) {
      t->left--;
      return 0;
    }
    t->left = 0;
  }
  fprintf(stderr, "error: task '%s' has no training images\n", t->name);
  return -1;
}

/* Phase I: one epoch; each step a batch of every task, the shared
 * weights on the sum of their gradients. */
static int train_epoch(mt_run *r, double *start) {
  const fe_model *m = r->m;
  int ep = r->epoch;
  char err[1024];
  rt_exec *xs[FE_MAX_TASKS];
  *start = run_now();
  for (int k = 0; k < r->n; k++) {
    xs[k] = r->t[k].x;
    rt_exec_profile_pause(xs[k], 0); /* the training steps only */
    r->t[k].loss_sum = 0, r->t[k].seen = r->t[k].correct = 0;
    r->t[k].left = 0; /* every task starts a pass with the epoch */
  }
  for (int s = 0; s < r->steps; s++) {
    /* the run's first step pays for its arenas' first touch: with more
     * steps to come, the tables leave it out */
    int first = r->o->profile && r->profiled == 0 && r->first_ms == 0.0 &&
                (s + 1 < r->steps || ep + 1 < r->epochs);
    double t_step = r->o->profile ? run_now() : 0.0;
    int whole = 1; /* every task's batch whole */
    for (int k = 0; k < r->n && first; k++) rt_exec_profile_pause(xs[k], 1);
    for (int k = 0; k < r->n; k++) {
      task *t = &r->t[k];
      const float *xb;
      const rt_draw *dr;
      const ir_label *lab;
      int b, c = 0;
      if (next_batch(r, t, &xb, &dr, &lab, &b)) return -1;
      if (t->draws) rt_exec_set_draws(t->x, dr, b);
      else rt_exec_set_input(t->x, xb, b);
      rt_exec_forward(t->x);
      double loss = rt_exec_loss(t->x, lab, 1, &c);
      if (!isfinite(loss)) {
        fprintf(stderr, "%serror: task '%s': the training loss diverged at step %d of epoch %d "
                "(try a smaller learning rate than %g)\n", r->tty ? "\n" : "", t->name, s + 1,
                ep + 1, r->lr);
        return -1;
      }
      rt_exec_backward(t->x);
      /* with ranks, the gradients become the whole batch's, and so do
       * the loss, the hits and the images (a failure: the status below) */
      rt_exec_sum_ranks(t->x, &loss, &c, &b);
      t->loss_sum += loss * b, t->seen += b, t->correct += c;
      whole &= b == m->batch;
    }
    rt_exec_sgd_shared(xs, r->n, r->idx, r->n_idx, r->sum,
                       run_lr_at(m, r->lr, r->epochs, ep, (double)s / r->steps), (float)m->momentum,
                       (float)m->decay);
    for (int k = 0; k < r->n; k++)
      if (rt_exec_status(xs[k], err, sizeof err)) {
        fprintf(stderr, "%serror: step %d of epoch %d: %s\n", r->tty ? "\n" : "", s + 1,
                ep + 1, err);
        return -1;
      }
    if (first) {
      for (int k = 0; k < r->n; k++) rt_exec_profile_pause(xs[k], 0);
      r->first_ms = 1e3 * (run_now() - t_step);
    } else if (r->o->profile && whole && run_step_time(&r->times, 1e3 * (run_now() - t_step))) {
      return -1;
    }
    r->step++, r->profiled += !first;
    if (r->tty && (s % 8 == 0 || s == r->steps - 1)) {
      fprintf(stderr, "\repoch %d/%d  %3d%%", ep + 1, r->epochs, 100 * (s + 1) / r->steps);
      for (int k = 0; k < r->n; k++)
        fprintf(stderr, "  %s loss %.4f acc %.2f%%", r->t[k].name,
                r->t[k].loss_sum / r->t[k].seen, 100.0 * r->t[k].correct / r->t[k].seen);
      fprintf(stderr, "   ");
    }
  }
  for (int k = 0; k < r->n; k++) rt_exec_profile_pause(xs[k], 1);
  return 0;
}

static double mean_loss(const mt_run *r) {
  double s = 0;
  for (int k = 0; k < r->n; k++) s += r->t[k].loss_sum / r->t[k].seen;
  return s / r->n;
}

/* Every task's test set, then the epoch's metrics line and terminal line. */
static int test_epoch(mt_run *r, double start) {
  int ep = r->epoch, limit = ep + 1 < r->epochs ? r->o->test_limit : 0;
  double acc = 0;
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    t->test_acc = run_evaluate(t->x, &t->test, &t->nm, limit, r->loaders, &t->test_loss);
    if (isnan(t->test_acc)) return -1;
    acc += t->test_acc / r->n;
  }
  r->tested = 1;
  r->epoch = ep + 1;
  double secs = run_now() - start;
  fprintf(r->metrics, "{\"epoch\": %d, \"train_loss\": %.6f, \"test_acc\": %.6f, "
          "\"active_params\": %" PRId64 ", \"shared_params\": %" PRId64 ", \"lr\": %.6g, "
          "\"seconds\": %.3f, \"tasks\": {", ep + 1, mean_loss(r), acc, stored_params(r),
          r->n_idx, run_lr_at(r->m, r->lr, r->epochs, ep, 0), secs);
  for (int k = 0; k < r->n; k++) {
    const task *t = &r->t[k];
    fputs(k ? ", " : "", r->metrics);
    app_json_str(r->metrics, t->name);
    fprintf(r->metrics, ": {\"train_loss\": %.6f, \"train_acc\": %.6f, \"test_loss\": %.6f, "
            "\"test_acc\": %.6f, \"active_params\": %" PRId64 "}", t->loss_sum / t->seen,
            (double)t->correct / t->seen, t->test_loss, t->test_acc,
            ir_count_params(t->g, t->x->arch).active);
  }
  fprintf(r->metrics, "}}\n");
  if (flush_metrics(r)) return -1;
  if (!r->o->quiet) {
    fprintf(stderr, "%sepoch %d/%d", r->tty ? "\r" : "", ep + 1, r->epochs);
    for (int k = 0; k < r->n; k++) {
      const task *t = &r->t[k];
      fprintf(stderr, "  %s: loss %.4f train %.2f%% test %.2f%% params %" PRId64, t->name,
              t->loss_sum / t->seen, 100.0 * t->correct / t->seen, 100 * t->test_acc,
              ir_count_params(t->g, t->x->arch).active);
    }
    fprintf(stderr, "  shared %" PRId64 "  %.1fs\n", r->n_idx, secs);
  }
  return 0;
}

/* Phase II of the shared architecture, in every task, then the shared
 * weights' index. */
static int grow_shared(mt_run *r, rt_exec *const *xs, const srch_batches *pb, int plan) {
  const fe_model *m = r->m;
  int done = r->epoch;
  srch_event ev;
  double tg = run_now();
  r->ss.lr = run_lr_at(m, r->lr, r->epochs, done, 0);
  r->ss.plan_left = plan;
  int rc = srch_expand_shared(&r->ss, xs, r->n, pb, &r->shared, r->trunk_end, &ev);
  if (rc == -2) {
    fprintf(stderr, "error: phase II (shared): %s\n", r->ss.err);
    return -1;
  }
  if (rc == 0 && (!isfinite(ev.loss_before) || !isfinite(ev.loss_after))) {
    fprintf(stderr, "error: phase II (shared): the loss is not finite; the networks diverged "
            "(try a smaller learning rate than %g)\n", r->lr);
    return -1;
  }
  if (rc == 0) run_log_expand(r->metrics, r->t[0].g, "shared", done, &ev, run_now() - tg);
  if (rc == 0 && !r->o->quiet)
    fprintf(stderr, "  shared: grew %" PRId64 " parameters to %" PRId64 "  loss %.4f -> %.4f"
            "  %.1fs\n", ev.added, ev.active, ev.loss_before / r->n, ev.loss_after / r->n,
            run_now() - tg);
  return index_shared(r) || prepare_all(r) ? -1 : 0;
}

/* Phase II when due: the shared architecture, then each task's own. */
static int grow(mt_run *r) {
  const fe_model *m = r->m;
  int done = r->epoch;
  double loss = mean_loss(r);
  if (r->method == FE_SEARCH_FIXED || !srch_due(&r->sched, done, r->prev_loss, loss)) return 0;
  srch_batches pb[FE_MAX_TASKS];
  rt_exec *xs[FE_MAX_TASKS];
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    xs[k] = t->x;
    if (run_phase2_batches(&t->view, &t->train, &t->nm, r->loaders, &t->st.rng, &pb[k], t->pbuf,
                           t->plab, t->order))
      return -1;
  }
  int plan = r->sched.plan ? srch_beats_left(&r->sched, done) : 0;
  srch_event ev;
  if (grow_shared(r, xs, pb, plan)) return -1;
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    char err[1024];
    double tk = run_now();
    t->ss.lr = run_lr_at(m, r->lr, r->epochs, done, 0);
    t->ss.plan_left = plan;
    t->ss.budget = network_cap(r);
    int rc = srch_expand(&t->ss, t->x, &pb[k], &ev);
    if (rc == -2) {
      fprintf(stderr, "error: phase II (task '%s'): %s\n", t->name, t->ss.err);
      return -1;
    }
    if (rt_exec_prepare(t->x, err, sizeof err)) {
      fprintf(stderr, "error: %s\n", err);
      return -1;
    }
    if (rc == 0) {
      if (!isfinite(ev.loss_before) || !isfinite(ev.loss_after)) {
        fprintf(stderr, "error: phase II (task '%s'): the loss is not finite; the network "
                "diverged (try a smaller learning rate than %g)\n", t->name, r->lr);
        return -1;
      }
      run_log_expand(r->metrics, t->g, t->name, done, &ev, run_now() - tk);
      if (!r->o->quiet)
        fprintf(stderr, "  %s: grew %" PRId64 " parameters to %" PRId64 " (%d new nodes, %d "
                "new layers) loss %.4f -> %.4f  %.1fs\n", t->name, ev.added, ev.active,
                ev.new_nodes, ev.new_layers, ev.loss_before, ev.loss_after, run_now() - tk);
    }
  }
  return flush_metrics(r);
}

/* Saves RUN_DIR/name (rank 0; the ranks hold the same state). */
static int save(mt_run *r, const char *name) {
  char err[4400];
  snprintf(r->path, sizeof r->path, "%s/%s", r->o->run_dir, name);
  if (rt_comm_rank(r->o->comm) > 0) return 0;
  rt_ckpt_writer *w = rt_ckpt_writer_new();
  float *keep[FE_MAX_TASKS] = {0};
  uint8_t *ir;
  size_t irn;
  mt_rec rec;
  memset(&rec, 0, sizeof rec);
  rec.mark = MT_MARK, rec.n_tasks = r->n, rec.epoch = r->epoch, rec.step = r->step;
  rec.prev_loss = r->prev_loss, rec.alr = r->ss.alr, rec.expansions = r->ss.expansions;
  memcpy(rec.srng, r->ss.rng.s, sizeof rec.srng);
  /* the model's IR with the shared α (its classifier's bits off), which
   * the writer takes (mostly α's bits: no copy of it at the peak) */
  ir_arch a;
  int bad = !w || ir_arch_init(&a, r->g);
  if (!bad) {
    for (int64_t i = 0; i < r->trunk_end; i++) ir_alpha_set(&a, i, ir_alpha_get(&r->shared, i));
    bad = ir_serialize(r->g, &a, &ir, &irn) || rt_ckpt_add_own(w, "IRGR", ir, irn);
    ir_arch_free(&a);
  }
  bad = bad || rt_ckpt_add(w, "MTST", &rec, sizeof rec);
  for (int k = 0; k < r->n && !bad; k++) {
    task *t = &r->t[k];
    t->st.epoch = r->epoch, t->st.step = r->step, t->st.prev_loss = r->prev_loss;
    t->st.alr = t->ss.alr, t->st.expansions = t->ss.expansions, t->st.srng = t->ss.rng;
    bad = run_ckpt_add(w, k, t->x, &t->st, &keep[k]);
  }
  int rc = bad ? -1 : rt_ckpt_write(w, r->path, err, sizeof err);
  if (bad) snprintf(err, sizeof err, "%s: out of memory", r->path);
  if (rc) fprintf(stderr, "error: %s\n", err);
  rt_ckpt_writer_free(w);
  for (int k = 0; k < r->n; k++) free(keep[k]);
  return rc;
}

static int finish(mt_run *r) {
  if (!r->tested)
    for (int k = 0; k < r->n; k++) {
      task *t = &r->t[k];
      t->test_acc = run_evaluate(t->x, &t->test, &t->nm, 0, r->loaders, &t->test_loss);
      if (isnan(t->test_acc)) return -1;
    }
  if (save(r, "final.ckpt")) return -1;
  for (int k = 0; k < r->n && r->o->profile; k++) {
    fprintf(stderr, "task %s:\n", r->t[k].name);
    rt_exec_profile_report(r->t[k].x, stderr, r->profiled);
  }
  if (r->o->profile) run_step_times_report(&r->times, stderr);
  if (r->o->profile && r->first_ms > 0.0)
    fprintf(stderr, "first step: %.1f ms, not in the tables (it touches the arenas' pages for "
            "the first time)\n", r->first_ms);
  if (rt_comm_rank(r->o->comm) > 0) return 0;
  double acc = 0;
  for (int k = 0; k < r->n; k++) acc += r->t[k].test_acc / r->n;
  printf("{\"test_acc\": %.6f, \"active_params\": %" PRId64 ", \"shared_params\": %" PRId64
         ", \"epochs\": %d, \"seconds\": %.3f, \"checkpoint\": ", acc, stored_params(r), r->n_idx,
         r->epoch, run_now() - r->t0);
  app_json_str(stdout, r->path);
  printf(", \"tasks\": {");
  for (int k = 0; k < r->n; k++) {
    const task *t = &r->t[k];
    fputs(k ? ", " : "", stdout);
    app_json_str(stdout, t->name);
    printf(": {\"test_acc\": %.6f, \"active_params\": %" PRId64 "}", t->test_acc,
           ir_count_params(t->g, t->x->arch).active);
  }
  printf("}}\n");
  return 0;
}

static void teardown(mt_run *r) {
  for (int k = 0; k < r->n; k++) {
    task *t = &r->t[k];
    if (t->have_srch) srch_free(&t->ss);
    rt_exec_free(t->x);
    rt_stream_free(t->stream);
    rt_dataset_free(&t->train), rt_dataset_free(&t->test);
    free(t->classes), free(t->order), free(t->pbuf), free(t->plab);
    ir_free(t->g);
  }
  if (r->have_srch) srch_free(&r->ss);
  if (r->metrics) fclose(r->metrics);
  ir_arch_free(&r->shared);
  free(r->idx), free(r->sum), free(r->times.ms);
}

int run_train_tasks(ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd, const app_train_opts *o) {
  mt_run *r = malloc(sizeof *r);
  if (!r) {
    fprintf(stderr, "error: out of memory\n");
    return 1;
  }
  int rc = setup(r, g, fwd, bwd, o), stopped = 0;
  while (rc == 0 && !stopped && r->epoch < r->epochs) {
    double start;
    rc = train_epoch(r, &start);
    if (rc == 0) rc = sync_tasks(r);
    if (rc == 0) rc = test_epoch(r, start);
    if (rc == 0) rc = grow(r);
    if (rc == 0) rc = sync_tasks(r);
    if (rc == 0) {
      r->prev_loss = mean_loss(r);
      rc = save(r, "last.ckpt");
    }
    stopped = o->stop_after > 0 && r->epoch >= o->stop_after && r->epoch < r->epochs;
  }
  if (rc == 0 && stopped) {
    if (!o->quiet)
      fprintf(stderr, "stopped after epoch %d; continue with --resume %s\n", r->epoch, r->path);
    if (rt_comm_rank(o->comm) == 0) {
      printf("{\"stopped\": true, \"epochs\": %d, \"checkpoint\": ", r->epoch);
      app_json_str(stdout, r->path);
      printf("}\n");
    }
  } else if (rc == 0) {
    rc = finish(r);
  }
  teardown(r);
  free(r);
  return rc ? 1 : 0;
}

/* ---- a multi-task checkpoint: eval and info ---- */

/* The model's IR in c (with the shared α), checked against the run's
 * record; NULL with a message in err. */
static ir_graph *tasks_ir(const rt_ckpt *c, const char *path, char *err, size_t errlen) {
  size_t nir, n;
  const void *ir = rt_ckpt_get(c, "IRGR", &nir);
  const mt_rec *rec = rt_ckpt_get(c, "MTST", &n);
  char why[512];
  if (!ir || !rec || n != sizeof *rec || rec->mark != MT_MARK) {
    snprintf(err, errlen, "%s: a multi-task checkpoint lacks a section or has a damaged record",
             path);
    return NULL;
  }
  ir_graph *g = ir_deserialize(ir, nir, why, sizeof why);
  if (!g) {
    snprintf(err, errlen, "%s: %s", path, why);
    return NULL;
  }
  if (g->cfg.n_tasks != rec->n_tasks) {
    snprintf(err, errlen, "%s: its record has %d tasks and its model %d", path, rec->n_tasks,
             g->cfg.n_tasks);
    ir_free(g);
    return NULL;
  }
  return g;
}

int run_eval_tasks(const rt_ckpt *c, const char *path, int threads, const char *backend,
                   int skip_bad) {
  char why[1024];
  ir_graph *mg = tasks_ir(c, path, why, sizeof why);
  if (!mg) {
    fprintf(stderr, "error: %s\n", why);
    return 1;
  }
  int rc = 0;
  double mean = 0;
  printf("{\"tasks\": {");
  for (int k = 0; k < mg->cfg.n_tasks && rc == 0; k++) {
    char err[1024];
    ir_graph *g;
    rt_exec *x;
    app_train_state st;
    rt_dataset train, test;
    if (run_ckpt_get(c, path, k, mg->cfg.batch, threads, backend, &g, &x, &st, err,
                     sizeof err)) {
      fprintf(stderr, "error: %s: task '%s': %s\n", path, mg->cfg.tasks[k].name, err);
      rc = 1;
      break;
    }
    if (run_load_data(g, NULL, skip_bad, threads, 0, &train, &test) == 0) {
      if (st.norm.c != test.c) rt_data_norm(&train, &st.norm);
      double loss, acc = run_evaluate(x, &test, &st.norm, 0, threads, &loss);
      if (isnan(acc)) {
        rc = 1;
      } else {
        fputs(k ? ", " : "", stdout);
        app_json_str(stdout, mg->cfg.tasks[k].name);
        printf(": {\"test_acc\": %.6f, \"test_loss\": %.6f, \"images\": %d, \"active_params\": "
               "%" PRId64 "}", acc, loss, test.n, ir_count_params(g, x->arch).active);
        mean += acc / mg->cfg.n_tasks;
      }
      rt_dataset_free(&train), rt_dataset_free(&test);
    } else {
      rc = 1;
    }
    rt_exec_free(x), ir_free(g);
  }
  if (rc == 0)
    printf("}, \"test_acc\": %.6f, \"shared_params\": %" PRId64 "}\n", mean,
           ir_count_params(mg, &mg->arch).active);
  else
    printf("}}\n");
  fflush(stdout);
  ir_free(mg);
  return rc;
}

int run_info_tasks(const rt_ckpt *c, const char *path, FILE *out) {
  char why[1024];
  ir_graph *mg = tasks_ir(c, path, why, sizeof why);
  if (!mg) {
    fprintf(stderr, "error: %s\n", why);
    return 1;
  }
  const fe_model *m = &mg->cfg;
  int64_t shared = ir_count_params(mg, &mg->arch).active, stored = shared;
  int rc = 0;
  fprintf(out, "model %s  (%s granularity, %d tasks, shared %g of each task's budget, ",
          m->name, m->gran == FE_GRAN_KERNEL ? "kernel" : "weight", m->n_tasks, m->shared);
  if (m->budget == INT64_MAX) fprintf(out, "no budget)\n");
  else fprintf(out, "budget %" PRId64 ")\n", m->budget);
  for (int k = 0; k < m->n_tasks; k++) {
    char err[1024];
    ir_graph *g;
    rt_exec *x;
    app_train_state st;
    if (run_ckpt_get(c, path, k, 1, 1, NULL, &g, &x, &st, err, sizeof err)) {
      fprintf(stderr, "error: %s: task '%s': %s\n", path, m->tasks[k].name, err);
      rc = 1;
      break;
    }
    int64_t active = ir_count_params(g, x->arch).active;
    stored += active - shared;
    fprintf(out, "\ntask %s  (%d classes, %s \"%s\", epoch %d): %" PRId64 " active, %" PRId64
            " shared, %" PRId64 " its own\n", m->tasks[k].name, g->cfg.classes,
            fe_data_name(g->cfg.data), g->cfg.data_path, st.epoch, active, shared,
            active - shared);
    run_layer_table(g, x->arch, out);
    rt_exec_free(x), ir_free(g);
  }
  if (rc == 0)
    fprintf(out, "\ntotal: %" PRId64 " parameters stored (%" PRId64 " shared), against %" PRId64
            " for the tasks' networks apart\n", stored, shared, stored + (m->n_tasks - 1) * shared);
  ir_free(mg);
  return rc;
}

int run_task_index(const rt_ckpt *c, const char *path, const char *task, char *err,
                   size_t errlen) {
  if (!rt_ckpt_get(c, "MTST", NULL)) {
    if (!task) return -1;
    snprintf(err, errlen, "%s: the checkpoint of a single-task model has no task '%s'", path,
             task);
    return -2;
  }
  ir_graph *mg = tasks_ir(c, path, err, errlen);
  if (!mg) return -2;
  const fe_model *m = &mg->cfg;
  int k = 0;
  while (task && k < m->n_tasks && strcmp(m->tasks[k].name, task) != 0) k++;
  if (!task || k == m->n_tasks) {
    char names[FE_MAX_TASKS * (FE_NAME_MAX + 2)] = "";
    for (int i = 0; i < m->n_tasks; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
               m->tasks[i].name);
    if (task)
      snprintf(err, errlen, "%s: model '%s' has no task '%s' (its tasks: %s)", path, m->name,
               task, names);
    else
      snprintf(err, errlen, "%s: model '%s' has tasks (%s); name one with --task NAME", path,
               m->name, names);
    k = -2;
  }
  ir_free(mg);
  return k;
}
