/* run.h: what a training run of one task (train.c) and a run of several
 * (tasks.c) share; internal to app/.
 *
 * Data, evaluation, the learning-rate schedule, phase II's batches, the
 * metrics file and the checkpoint sections of one network. A multi-task
 * checkpoint holds each task's sections under its own tags (run_ckpt_add
 * with the task's index) beside sections of its own (tasks.c). */
#ifndef ILNAS_APP_RUN_H
#define ILNAS_APP_RUN_H

#include <stdio.h>

#include "app/train.h"
#include "runtime/ckpt.h"
#include "runtime/data.h"
#include "search/search.h"

double run_now(void);
/* --profile: the wall times of the timed steps of a whole batch (the
 * last of an epoch may hold fewer samples), for their median, middle
 * half and extremes: the profile table's figures are means, which a
 * step that lost its core to another program moves; the median is what
 * a step takes. run_step_time: 0, or -1 after a message. */
typedef struct run_step_times {
  double *ms;
  long n, cap;
} run_step_times;
int run_step_time(run_step_times *t, double ms);
void run_step_times_report(const run_step_times *t, FILE *f);
/* Both splits of g's data (path: NULL for the model's), checked against
 * its input and classes. 0, or -1 after a message. */
int run_load_data(const ir_graph *g, const char *path, int skip_bad, int threads,
                  int train_limit, rt_dataset *train, rt_dataset *test);
int run_class_list(const rt_dataset *d, char **out);
/* Accuracy and mean loss in inference mode; NAN after a message. */
double run_evaluate(rt_exec *x, const rt_dataset *d, const rt_norm *nm, int limit, int loaders,
                    double *loss);
float run_lr_at(const fe_model *m, double lr, int epochs, int epoch, double frac);
int run_make_dir(const char *dir);
void run_shuffle(int *idx, int n, rt_rng *rng);
int run_phase2_batches(const fe_model *m, const rt_dataset *d, const rt_norm *nm, int loaders,
                       rt_rng *rng, srch_batches *b, float *xbuf, ir_label *ybuf, int *idx);
/* One expansion's metrics line; task: a multi-task run's ("shared" or
 * the task's name), NULL for a single task. */
void run_log_expand(FILE *f, const ir_graph *g, const char *task, int epoch,
                    const srch_event *ev, double secs);
/* info's table: every weighted layer's shape, active parameters and
 * state under architecture a. */
void run_layer_table(const ir_graph *g, const ir_arch *a, FILE *out);
/* metrics.jsonl cut after epoch `epoch` (a resumed run writes the rest). */
int run_trim_metrics(const char *path, int epoch);

/* A new exec on g (the graph cx runs on, or one like it) holding cx's
 * architecture and state; NULL with a message. */
rt_exec *run_exec_like(const ir_graph *g, const rt_exec *cx, int cap, int threads,
                       const char *backend, char *err, size_t errlen);

/* The sections of one network: x's IR with its α, parameters, momentum,
 * statistics and st; task -1 for a single-task checkpoint, else the
 * task's index. *keep (malloc'd) must outlive the write. 0, or -1 when
 * out of memory. */
int run_ckpt_add(rt_ckpt_writer *w, int task, const rt_exec *x, const app_train_state *st,
                 float **keep);
/* The network of task `task` (-1: a single-task checkpoint) in c, read
 * from path, into a new IR and exec. 0, or -1 with a message. */
int run_ckpt_get(const rt_ckpt *c, const char *path, int task, int cap, int threads,
                 const char *backend, ir_graph **g, rt_exec **x, app_train_state *st,
                 char *err, size_t errlen);

/* Which of c's networks `task` names: -1 for a single-task checkpoint
 * (task NULL), the task's index in a multi-task one; -2 with a message
 * when it names none of them (or none is named, or c has no tasks). */
int run_task_index(const rt_ckpt *c, const char *path, const char *task, char *err,
                   size_t errlen);

/* Multi-task (tasks.c): app_train, app_eval and app_info of a model or a
 * checkpoint with tasks. */
int run_train_tasks(ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd, const app_train_opts *o);
/* Data-parallel runs (app_train_opts.comm):
 * run_threads: --threads, or the cores over the ranks on the machine;
 * run_ranks_check: -1 after a message where the ranks cannot train (the
 *   GPU backends; more ranks than a batch has images);
 * run_steps: the batches of n images in an epoch, but a last one of
 *   fewer images than ranks (every rank's part holds an image);
 * run_ranks_agree: 0 when every rank passed the same v[0..n) (what
 *   makes its run: images, schedule, seed, epoch), else -1 after a
 *   message (launched with different options or data, the ranks would
 *   wait on each other's sums);
 * run_open_metrics: RUN_DIR/metrics.jsonl on rank 0 (made, or trimmed to
 *   epoch on --resume; its name in path), /dev/null on the others; NULL
 *   after a message. */
int run_threads(const app_train_opts *o);
int run_ranks_check(const app_train_opts *o, const char *backend, int batch);
int run_steps(int n, int batch, const rt_comm *c);
int run_ranks_agree(const app_train_opts *o, const int64_t *v, int n);
FILE *run_open_metrics(const app_train_opts *o, int epoch, char *path, size_t len);
int run_eval_tasks(const rt_ckpt *c, const char *path, int threads, const char *backend,
                   int skip_bad);
int run_info_tasks(const rt_ckpt *c, const char *path, FILE *out);

#endif
