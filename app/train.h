/* train.h: the training loop, evaluation and the checkpoint contents.
 *
 * What the produced binary's subcommands do, as library calls so tests can
 * drive them without a compiled model: `fwd` and `bwd` are the graph
 * driver's functions (emitted by ilnasc) or NULL to interpret the schedule.
 *
 *   app_train_opts o; app_train_opts_default(&o);
 *   o.epochs = 2; o.run_dir = "run";
 *   int rc = app_train(g, fwd, bwd, &o);    // 0, or 1 after a message
 *   app_eval(g, fwd, "run/final.ckpt", NULL, 0, NULL); // one JSON line
 *   app_info("run/final.ckpt", stdout);
 */
#ifndef ILNAS_APP_TRAIN_H
#define ILNAS_APP_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "ir/ir.h"
#include "runtime/data.h"
#include "runtime/exec.h"
#include "base/rng.h"

/* Kernels specialised to each layer's α pattern, compiled by the LLVM JIT. */
#define APP_DEFAULT_BACKEND "cpu"

typedef struct app_train_opts {
  int epochs;          /* -1: the model's */
  double lr;           /* the schedule's base learning rate; <= 0: the model's */
  int freeze_last;     /* last epochs of the run without growth; -1: the model's */
  int train_limit;     /* 0: the whole training set */
  int test_limit;      /* 0: the whole test set */
  const char *data;    /* NULL: the model's data path */
  const char *run_dir; /* metrics.jsonl, last.ckpt, final.ckpt */
  int64_t seed;        /* -1: the model's */
  int threads;         /* 0: all cores */
  int search;          /* -1: the model's, else an fe_search */
  const char *resume;  /* checkpoint to continue from, or NULL */
  const char *from;    /* trained checkpoint a new run starts from (transfer), or NULL */
  int new_head;        /* --from: a fresh classifier even with the same classes */
  const char *from_task; /* --from a multi-task checkpoint: the task whose
                            network starts the run (its name) */
  int stop_after;      /* stop once this many epochs are done (0: never);
                          the run resumes from RUN_DIR/last.ckpt */
  int quiet;           /* no progress output */
  int profile;         /* time every op; a table on stderr at the end */
  int skip_bad;        /* an image folder's bad files are skipped, each reported */
  int loaders;         /* threads that decode an image folder; 0: --threads */
  const char *backend; /* "cpu", "ref", "blas", "cuda" or "auto"; NULL:
                        * APP_DEFAULT_BACKEND */
  rt_comm *comm;       /* the ranks of a data-parallel run (comm.h), or NULL:
                        * this process alone. Each rank trains on its part
                        * of every batch (the model's batch is the sum of
                        * the parts), evaluates its part of the test set;
                        * rank 0 alone writes the run directory and prints
                        * progress; threads default to the cores over the
                        * ranks on the machine */
} app_train_opts;

void app_train_opts_default(app_train_opts *o);
/* Cores online, at most 64. */
int app_default_threads(void);
int app_train(ir_graph *g, rt_graph_fn fwd, rt_graph_fn bwd,
             const app_train_opts *o);

/* Evaluates a checkpoint on its test set; prints one JSON line. */
int app_eval(ir_graph *binary_ir, rt_graph_fn fwd, const char *ckpt,
            const char *data, int threads, const char *backend, int skip_bad);

/* Prints the per-layer table of a checkpoint. */
int app_info(const char *ckpt, FILE *out);

/* Checkpoint contents: the IR with α, weights, momentum, batch norm
 * statistics, RNG and training state. */
typedef struct app_train_state {
  int epoch;      /* epochs completed */
  int64_t step;   /* SGD steps taken */
  uint64_t seed;  /* the run's seed */
  rt_rng rng;     /* data order and augmentation */
  double alr;     /* the search's current architecture learning rate */
  int expansions; /* expansions so far */
  rt_rng srng;    /* the search's random choices */
  rt_norm norm;   /* input normalisation the network was trained with */
  double prev_loss; /* last epoch's training loss, for the flat trigger */
  int search;     /* 1 + the fe_search the run used; 0: not recorded (a
                     checkpoint from before it was) */
  const char *classes; /* an image folder's class names, one per line
                          (borrowed; saved, not loaded: app_ckpt_classes) */
} app_train_state;

int app_ckpt_save(const char *path, const rt_exec *x, const app_train_state *st,
                 char *err, size_t errlen);
/* Loads a checkpoint into a new IR and exec (batch capacity cap). */
int app_ckpt_load(const char *path, int cap, int threads, const char *backend,
                 ir_graph **g, rt_exec **x, app_train_state *st, char *err,
                 size_t errlen);

/* The same for one task of a multi-task checkpoint (task: its name; NULL
 * for a single-task checkpoint, which has none). */
int app_ckpt_load_task(const char *path, const char *task, int cap, int threads,
                       const char *backend, ir_graph **g, rt_exec **x, app_train_state *st,
                       char *err, size_t errlen);

/* The class names a checkpoint was trained on, one per line, in *names
 * (malloc'd), or NULL when it has none. 0, or -1 with a message. */
int app_ckpt_classes(const char *path, char **names, char *err, size_t errlen);
/* Whether two IRs describe the same super-network (α aside), i.e. whether a
 * checkpoint can run on a binary's compiled schedule. */
int app_ir_compatible(const ir_graph *a, const ir_graph *b, char *err,
                     size_t errlen);

/* --from (transfer.c): whether checkpoint IR b holds a's super-network up
 * to the classifier (whose outputs may differ); 0, or -1 with a message
 * naming the first layer that differs and how. */
int app_ir_transferable(const ir_graph *a, const ir_graph *b, char *err, size_t errlen);
/* x (a fresh run's exec) takes the checkpoint's α, alive flags, weights
 * and batch norm state, layer by layer (of task `task`'s network in a
 * multi-task checkpoint; NULL otherwise); its classifier too when the
 * class counts agree and not new_head (*same_head 1), else it keeps the
 * fresh one. *norm becomes the input normalisation the checkpoint was
 * trained with (c 0 when it has none). 0, or -1 with a message naming the
 * file. */
int app_transfer(rt_exec *x, const char *from, const char *task, int new_head, rt_norm *norm,
                 int *same_head, char *err, size_t errlen);

/* Writes s as a JSON string, quotes included: '"', '\\' and control
 * characters escaped, bytes that are not UTF-8 replaced by U+FFFD. Every
 * string in a JSON line goes through it. */
void app_json_str(FILE *f, const char *s);

/* Whether `out` may be written as an output of kind `what` ("C source", "an
 * executable", ...) made from `in` (NULL: none): refused when out is the
 * same file as in (same device and inode), an existing checkpoint (its
 * magic), or an existing model source (a name ending in .ilnas). 0, or -1
 * with a message in err. */
int app_output_ok(const char *out, const char *in, const char *what, char *err,
                  size_t errlen);

#endif
