/* spec.h: the checked model description, the frontend's only output.
 *
 * The frontend (grammar/ + frontend/) turns a .ilnas file into an fe_model
 * with every default filled in and every user mistake reported; ir/ lowers
 * it to the super-network. Locations survive so that later passes (the IR's
 * budget check) can report against the source too.
 *
 *   fe_model m;
 *   if (fe_parse_file("model.ilnas", &m, stderr) != 0) return 1;
 *   ... use m ...
 *   fe_model_free(&m);
 */
#ifndef ILNAS_FE_SPEC_H
#define ILNAS_FE_SPEC_H

#include <stdint.h>
#include <stdio.h>

enum { FE_MAX_ITEMS = 64, FE_NAME_MAX = 32, FE_PATH_MAX = 1024, FE_MAX_TASKS = 8 };

typedef enum { FE_GRAN_WEIGHT, FE_GRAN_KERNEL } fe_gran;
typedef enum { FE_SEARCH_ILNAS, FE_SEARCH_RANDOM, FE_SEARCH_FIXED } fe_search;
typedef enum { FE_SCHED_CONSTANT, FE_SCHED_COSINE, FE_SCHED_STEP } fe_sched;
typedef enum {
  FE_DATA_IDX, FE_DATA_CIFAR10, FE_DATA_STL10, FE_DATA_DIGITS_CSV, FE_DATA_FOLDER,
  FE_DATA_DOWNSAMPLED /* append only: the number is in serialized IRs */
} fe_data;

typedef enum {
  FE_STAGE_CONV,     /* conv layers, same resolution, optional dense links */
  FE_STAGE_LINEAR,   /* hidden fully connected layers */
  FE_REDUCE_MAXPOOL, /* max-pool, window = stride = factor */
  FE_REDUCE_CONV,    /* 3x3 conv with stride = factor, channels kept */
  FE_REDUCE_GAP      /* global average pool to 1x1 */
} fe_item_kind;

typedef struct fe_loc {
  int line, col; /* 1-based; 0 when the setting was defaulted */
} fe_loc;

typedef struct fe_item {
  fe_item_kind kind;
  char name[FE_NAME_MAX]; /* stages: given or "conv1", "linear1"...; "" for reductions */
  fe_loc loc;             /* the item's first token */
  int layers_lo, layers_hi; /* stages: seed layers .. most layers */
  int width_lo, width_hi;   /* conv: channels; linear: width */
  int kernel;               /* conv stage: square kernel size (odd) */
  int dense;                /* conv stage: each layer sees all earlier ones */
  int batchnorm;            /* conv stage: batch norm after each conv: 0 none,
                               1 conv -> BN -> ReLU, 2 conv -> ReLU -> BN
                               ('norm batch after', the seed paper's order) */
  int factor;               /* reductions: window/stride (maxpool, conv) */
} fe_item;

/* One task of a multi-task model: its classifier head and its data. A
 * task's network is the shared architecture and its own over the one
 * super-network (the template up to the classifier); each task has its
 * own classifier and batch norm. The data fields mean what the model's
 * do. */
typedef struct fe_task {
  char name[FE_NAME_MAX];
  fe_loc loc;          /* 'task NAME' */
  int classes;
  fe_loc classes_loc;
  fe_data data;
  char data_path[FE_PATH_MAX];
  fe_loc data_loc;     /* its 'data NAME ...' statement */
  int aug_crop, aug_flip;
  double test_split;
  int resize_h, resize_w;
  fe_loc resize_loc;
  int channels;
  fe_loc channels_loc;
} fe_task;

typedef struct fe_model {
  char name[FE_NAME_MAX];
  const char *file;  /* owned: path as given, for diagnostics */
  const char *src;   /* owned: the whole source text, for diagnostics */

  /* network */
  int in_c, in_h, in_w, classes;
  fe_item items[FE_MAX_ITEMS];
  int n_items;

  /* search: granularity, budget, seed network */
  fe_gran gran;        /* default weight */
  int64_t budget;      /* active parameters; default: no limit (INT64_MAX) */
  fe_loc budget_loc;
  double density;      /* fraction of the seed structure active; default 1 */
  uint64_t seed;       /* default 1 */

  /* data */
  fe_data data;        /* default idx */
  char data_path[FE_PATH_MAX]; /* default "/usr/share/datasets/fashion-mnist" */
  fe_loc data_loc;
  int aug_crop;        /* random crop padding in pixels; default 0 */
  int aug_flip;        /* random horizontal flip; default 0 */
  double test_split;   /* formats without a test set: last fraction; default 0.2 */
  int resize_h, resize_w; /* 'resize HxW': images resampled (bilinear) to it; 0: as stored */
  fe_loc resize_loc;
  int channels;        /* 'channels N': gray copied to 3 or RGB averaged to 1; 0: as stored */
  fe_loc channels_loc;

  /* training */
  int batch;           /* default 128 */
  int epochs;          /* default 10 */
  double lr;           /* default 0.05 */
  fe_sched sched;      /* default cosine */
  int step_every;      /* step schedule: epochs between decays; default 10 */
  double step_gamma;   /* step schedule: factor; default 0.1 */
  double momentum;     /* default 0.9 */
  double decay;        /* weight decay; default 5e-4 */

  /* growth (phase II) */
  fe_search method;    /* default ilnas */
  int grow_every;      /* epochs between expansions; default 1 */
  double alr;          /* growth per expansion relative to size; default 0.3 */
  double alr_decay;    /* multiplied into alr after each expansion; default 0.9 */
  double candidates;   /* n/m, candidates per kept parameter; default 4 */
  int freeze_last;     /* last epochs with the architecture frozen; default 0 */
  int grow_batches;    /* batches for the dense gradient; default 1 */
  double flat;         /* a beat expands only if the epoch's relative loss drop is below this; 0 = off (default) */
  int grow_plan;       /* 1: m from the budget and the beats left (plan); 0: m = Alr * active (default) */

  /* multi-task: 0 tasks is a single-task model (classes and data above);
   * with tasks (at least two), classes and the data fields above are
   * task 0's, budget is each task's network (shared and its own), and
   * shared is the fraction of it that every task shares */
  int n_tasks;
  fe_task tasks[FE_MAX_TASKS];
  double shared;       /* in [0, 1); default 0.2 with tasks, 0 without */
  fe_loc shared_loc;
} fe_model;

/* m's data fields (data, path, augmentation, split, adapters) become
 * task t's. */
void fe_put_task_data(fe_model *m, const fe_task *t);

/* Task t of m seen as a single-task model: m with task t's classes and
 * data, and no tasks. It borrows m's file and source (never free it). */
void fe_task_view(const fe_model *m, int t, fe_model *out);

/* Parse and check a file (or a string named `file`). Diagnostics go to
 * `diag` as "file:line:col: error: ..." with the source line and a caret.
 * Returns the number of errors; on 0, `m` is complete and must be freed. */
int fe_parse_file(const char *path, fe_model *m, FILE *diag);
int fe_parse_string(const char *file, const char *src, fe_model *m, FILE *diag);
void fe_model_free(fe_model *m);

/* Report an error at a location of the model's source (used by later
 * passes, e.g. the IR's budget check). loc.line 0 prints "file: error:". */
void fe_error_at(const fe_model *m, fe_loc loc, FILE *diag, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const char *fe_data_name(fe_data d);
const char *fe_search_name(fe_search s);

#endif
