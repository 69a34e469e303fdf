/* check.c: from the syntax tree to a checked fe_model.
 *
 * Every setting is checked where it stands (its range, its suffix, whether
 * it was given before) and copied into the model over the defaults. Checks
 * that need the whole model (what is missing, how the image shrinks from
 * stage to stage, freeze against epochs) run only when the parse had no
 * syntax error: error recovery drops whole statements, and a check on what
 * is left would report mistakes the user did not make. Data statements are
 * checked after the model, wherever they stand: in a model of several tasks
 * each is a task's, and the tasks must be known.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "frontend/ast.h"

enum {
  MAX_LAYERS = 64,     /* per stage and for the conv layers of a model */
  MAX_CHANNELS = 1024, /* conv stage width */
  MAX_WIDTH = 65536,   /* linear stage width, classes */
  MAX_IMAGE = 4096,    /* input height and width, reduction factor, crop */
  MAX_IN_CHANNELS = 4,
  MAX_BATCH = 65536,
};

typedef struct checker {
  fe_ctx *c;
  fe_model *m;
  int complete; /* no syntax error: the tree holds all that was written */
  int tasks;    /* task statements in the model, those past FE_MAX_TASKS too */
  const fe_stmt *task_st[FE_MAX_TASKS];   /* m->tasks[i]'s statement */
  const fe_stmt *task_data[FE_MAX_TASKS]; /* and its data statement, once seen */
} checker;

static const char DEFAULT_DATA_PATH[] = "/usr/share/datasets/fashion-mnist";
static const char *const FORMATS[] = {"idx",        "cifar10", "stl10",
                                      "digits-csv", "folder",  "downsampled"};

/* The fe_data a format's name stands for, or -1. */
static int format_of(const char *name) {
  for (int i = 0; i < (int)(sizeof FORMATS / sizeof *FORMATS); i++)
    if (strcmp(name, FORMATS[i]) == 0) return i;
  return -1;
}

/* "%.*s" arguments for the source text of a span. */
#define TEXT(k, s) (s).len, (k)->c->src + (s).off

/* The second of two settings for the same thing is the mistake. */
static int duplicate(checker *k, const fe_setting **seen, const fe_setting *s) {
  const fe_setting *first = seen[s->key];
  if (!first) {
    seen[s->key] = s;
    return 0;
  }
  int same = first->at.len == s->at.len &&
             memcmp(k->c->src + first->at.off, k->c->src + s->at.off, (size_t)s->at.len) == 0;
  if (s->key == FE_K_PATH)
    fe_error(k->c, s->at.loc, "a second data path; a data statement reads one");
  else if (same)
    fe_error(k->c, s->at.loc, "'%.*s' given twice", TEXT(k, s->at));
  else
    fe_error(k->c, s->at.loc, "'%.*s' conflicts with '%.*s' given before", TEXT(k, s->at),
             TEXT(k, first->at));
  fe_note(k->c, first->at.loc, "first given here");
  return 1;
}

static int suffix_ok(checker *k, const fe_num *n, const char *allowed) {
  if (!n->suffix || (allowed && strchr(allowed, n->suffix))) return 1;
  fe_error(k->c, n->at.loc, "the '%c' in '%.*s' is only allowed on %s", n->suffix, TEXT(k, n->at),
           n->suffix == 'x' ? "candidates" : "budget");
  return 0;
}

/* A whole number in [lo, hi]. Reports and returns 0 when it is not. */
static int whole(checker *k, const fe_num *n, const char *what, int64_t lo, int64_t hi,
                 const char *suffixes, int64_t *out) {
  if (n->bad || !suffix_ok(k, n, suffixes)) return 0;
  if (!n->whole) {
    fe_error(k->c, n->at.loc, "%s must be a whole number, not '%.*s'", what, TEXT(k, n->at));
    return 0;
  }
  if (n->huge && hi == INT64_MAX) {
    fe_error(k->c, n->at.loc, "%s '%.*s' is too large", what, TEXT(k, n->at));
    return 0;
  }
  if (n->i < lo) {
    fe_error(k->c, n->at.loc, "%s must be at least %lld, not '%.*s'", what, (long long)lo,
             TEXT(k, n->at));
    return 0;
  }
  if (n->i > hi) {
    fe_error(k->c, n->at.loc, "%s must be at most %lld, not '%.*s'", what, (long long)hi,
             TEXT(k, n->at));
    return 0;
  }
  *out = n->i;
  return 1;
}

static int whole_int(checker *k, const fe_num *n, const char *what, int lo, int hi, int *out) {
  int64_t v;
  if (!whole(k, n, what, lo, hi, NULL, &v)) return 0;
  *out = (int)v;
  return 1;
}

/* A number in the interval lo..hi, each end open or closed; hi may be
 * INFINITY. Reports and returns 0 when it is not. */
static int real(checker *k, const fe_num *n, const char *what, double lo, int lo_open, double hi,
                int hi_open, const char *suffixes, double *out) {
  if (n->bad || !suffix_ok(k, n, suffixes)) return 0;
  double v = n->v;
  int ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (!ok) {
    if (isinf(hi))
      fe_error(k->c, n->at.loc, "%s must be %s %g, not '%.*s'", what,
               lo_open ? "greater than" : "at least", lo, TEXT(k, n->at));
    else
      fe_error(k->c, n->at.loc, "%s must be in %c%g, %g%c, not '%.*s'", what, lo_open ? '(' : '[',
               lo, hi, hi_open ? ')' : ']', TEXT(k, n->at));
    return 0;
  }
  *out = v;
  return 1;
}

/* seed..bound, or one number for both. */
static int range(checker *k, const fe_setting *s, const char *what, int max, int *lo, int *hi) {
  int a = 0, b = 0;
  int ok_a = whole_int(k, &s->a, what, 1, max, &a);
  int ok_b = ok_a;
  if (s->nargs == 2)
    ok_b = whole_int(k, &s->b, what, 1, max, &b);
  else
    b = a;
  if (!ok_a || !ok_b) return 0;
  if (a > b) {
    fe_error(k->c, s->a.at.loc, "%s %d..%d starts above its bound; write seed..bound, like %d..%d",
             what, a, b, b, a);
    return 0;
  }
  *lo = a;
  *hi = b;
  return 1;
}

static int name_ok(checker *k, const char *name, fe_span at, const char *what) {
  if (strlen(name) < FE_NAME_MAX) return 1;
  fe_error(k->c, at.loc, "%s name '%s' is too long (at most %d characters)", what, name,
           FE_NAME_MAX - 1);
  return 0;
}

static const char *item_words(fe_item_kind kind) {
  switch (kind) {
  case FE_STAGE_CONV: return "stage conv";
  case FE_STAGE_LINEAR: return "stage linear";
  case FE_REDUCE_MAXPOOL: return "reduce maxpool";
  case FE_REDUCE_CONV: return "reduce conv";
  case FE_REDUCE_GAP: return "reduce gap";
  }
  return "?";
}

/* ---- the network ---- */

typedef struct item_info {
  const fe_stmt *st;
  fe_loc layers_at; /* for the model-wide layer count */
  fe_loc factor_at;
  int ok;    /* every setting the shape walk uses is valid */
  int named; /* the name was written, not defaulted */
} item_info;

static void check_input(checker *k, const fe_setting *s, int *ok) {
  const fe_size *z = &s->size;
  if (z->bad) return;
  if (z->suffix || z->n != 3 || !z->whole) {
    fe_error(k->c, z->at.loc, "input must be channels x height x width, like 1x28x28, not '%.*s'",
             TEXT(k, z->at));
    return;
  }
  if (z->d[0] < 1 || z->d[1] < 1 || z->d[2] < 1) {
    fe_error(k->c, z->at.loc, "input sizes must be at least 1, not '%.*s'", TEXT(k, z->at));
    return;
  }
  if (z->d[0] > MAX_IN_CHANNELS) {
    fe_error(k->c, z->at.loc, "input may have at most %d channels, not %lld", MAX_IN_CHANNELS,
             (long long)z->d[0]);
    return;
  }
  if (z->d[1] > MAX_IMAGE || z->d[2] > MAX_IMAGE) {
    fe_error(k->c, z->at.loc, "input height and width must be at most %d, not '%.*s'", MAX_IMAGE,
             TEXT(k, z->at));
    return;
  }
  k->m->in_c = (int)z->d[0];
  k->m->in_h = (int)z->d[1];
  k->m->in_w = (int)z->d[2];
  *ok = 1;
}

static void check_kernel(checker *k, const fe_setting *s, fe_item *it) {
  const fe_size *z = &s->size;
  if (z->bad) return;
  if (z->suffix || !z->whole || z->n > 2) {
    fe_error(k->c, z->at.loc,
             "kernel must be one size or two equal ones, like 3 or 3x3, not '%.*s'",
             TEXT(k, z->at));
    return;
  }
  if (z->n == 2 && z->d[0] != z->d[1]) {
    fe_error(k->c, z->at.loc, "kernel must be square, like 3x3, not '%.*s'", TEXT(k, z->at));
    return;
  }
  if (z->d[0] < 1 || z->d[0] > 11) {
    fe_error(k->c, z->at.loc, "kernel size must be between 1 and 11, not '%.*s'", TEXT(k, z->at));
    return;
  }
  if (z->d[0] % 2 == 0) {
    fe_error(k->c, z->at.loc,
             "kernel size must be odd so that a layer keeps the image size, not '%.*s'",
             TEXT(k, z->at));
    return;
  }
  it->kernel = (int)z->d[0];
}

static void check_stage(checker *k, const fe_stmt *st, fe_item *it, item_info *info) {
  int conv = st->item == FE_STAGE_CONV;
  const fe_setting *seen[FE_K_COUNT] = {0};
  int layers_ok = 1;
  it->layers_lo = it->layers_hi = 1;
  it->kernel = conv ? 3 : 0;
  info->layers_at = st->at.loc;
  for (const fe_setting *s = st->settings; s; s = s->next) {
    if (duplicate(k, seen, s)) continue;
    switch (s->key) {
    case FE_K_LAYERS:
      info->layers_at = s->a.at.loc;
      layers_ok = range(k, s, "layers", MAX_LAYERS, &it->layers_lo, &it->layers_hi);
      break;
    case FE_K_CHANNELS:
      if (conv)
        range(k, s, "channels", MAX_CHANNELS, &it->width_lo, &it->width_hi);
      else
        fe_error(k->c, s->at.loc, "a linear stage has 'width', not 'channels'");
      break;
    case FE_K_WIDTH:
      if (conv)
        fe_error(k->c, s->at.loc, "a conv stage has 'channels', not 'width'");
      else
        range(k, s, "width", MAX_WIDTH, &it->width_lo, &it->width_hi);
      break;
    case FE_K_KERNEL:
    case FE_K_CONNECT:
    case FE_K_NORM:
      if (!conv) {
        fe_error(k->c, s->at.loc, "'%.*s' does not apply to a linear stage", TEXT(k, s->at));
        break;
      }
      if (s->key == FE_K_KERNEL) check_kernel(k, s, it);
      if (s->key == FE_K_CONNECT) it->dense = s->choice;
      if (s->key == FE_K_NORM) it->batchnorm = s->choice;
      break;
    default: break;
    }
  }
  if (k->complete && !seen[conv ? FE_K_CHANNELS : FE_K_WIDTH])
    fe_error(k->c, st->at.loc, "%s stage '%s' needs '%s', like '%s'", conv ? "conv" : "linear",
             it->name, conv ? "channels" : "width", conv ? "channels 16..32" : "width 32..128");
  info->ok = layers_ok;
}

static void check_reduce(checker *k, const fe_stmt *st, fe_item *it, item_info *info) {
  info->ok = 1;
  if (st->item == FE_REDUCE_GAP) return;
  const fe_setting *s = st->settings;
  info->factor_at = s->a.at.loc;
  info->ok = whole_int(k, &s->a, "reduction factor", 2, MAX_IMAGE, &it->factor);
}

/* Names, then the order of the items and the image size through them. */
static void check_items(checker *k, item_info *info, int input_ok) {
  fe_model *m = k->m;
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    /* Reductions have no name; a stage whose name was too long has none
     * either, and has been reported. */
    if (!it->name[0]) continue;
    for (int j = 0; j < i; j++) {
      if (strcmp(m->items[j].name, it->name) != 0) continue;
      fe_loc first = info[j].named ? info[j].st->name_at.loc : info[j].st->at.loc;
      if (info[i].named)
        fe_error(k->c, info[i].st->name_at.loc, "duplicate stage name '%s'", it->name);
      else
        fe_error(k->c, info[i].st->at.loc,
                 "this stage's default name '%s' is taken; give it a name", it->name);
      fe_note(k->c, first, "'%s' is first used here", it->name);
      break;
    }
  }
  if (!k->complete) return;

  int h = m->in_h, w = m->in_w, size_ok = input_ok, layers = 0, too_deep = 0;
  const fe_stmt *linear = NULL, *gap = NULL;
  for (int i = 0; i < m->n_items; i++) {
    const fe_item *it = &m->items[i];
    const fe_stmt *st = info[i].st;
    if (linear) {
      if (it->kind == FE_STAGE_LINEAR) {
        fe_error(k->c, st->at.loc, "a model has at most one linear stage");
        fe_note(k->c, linear->at.loc, "the linear stage is here");
      } else {
        fe_error(k->c, st->at.loc, "'%s' after the linear stage; the linear stage comes last",
                 item_words(it->kind));
      }
      continue;
    }
    if (gap && it->kind != FE_STAGE_LINEAR) {
      fe_error(k->c, st->at.loc, "'%s' after 'reduce gap': the image is already pooled to 1x1",
               item_words(it->kind));
      continue;
    }
    switch (it->kind) {
    case FE_STAGE_CONV:
      if (!info[i].ok) break;
      layers += it->layers_hi;
      if (layers > MAX_LAYERS && !too_deep) {
        fe_error(k->c, info[i].layers_at,
                 "conv layers add up to %d here; a model may have at most %d", layers, MAX_LAYERS);
        too_deep = 1;
      }
      break;
    case FE_REDUCE_MAXPOOL:
    case FE_REDUCE_CONV: {
      /* A reduction with a bad factor is left out: the image only stays
       * larger for it, which cannot cause a false report further on. */
      if (!info[i].ok || !size_ok) break;
      /* As the IR lowers them: max-pool drops what does not fill a window
       * (floor), a 3x3 conv with padding 1 keeps a partial one (ceil). */
      int f = it->factor;
      int nh = it->kind == FE_REDUCE_MAXPOOL ? h / f : (h - 1) / f + 1;
      int nw = it->kind == FE_REDUCE_MAXPOOL ? w / f : (w - 1) / f + 1;
      if (nh < 1 || nw < 1) {
        fe_error(k->c, info[i].factor_at, "reduction by %d would shrink the %dx%d image below 1x1",
                 f, h, w);
        size_ok = 0;
      }
      h = nh, w = nw;
      break;
    }
    case FE_REDUCE_GAP:
      gap = st;
      h = w = 1;
      break;
    case FE_STAGE_LINEAR: linear = st; break;
    }
  }
}

/* ---- tasks ---- */

/* A task's data fields before its data statement: the model's defaults. */
static void data_defaults(fe_task *d) {
  d->data = FE_DATA_IDX;
  strcpy(d->data_path, DEFAULT_DATA_PATH);
  d->test_split = 0.2;
}

/* One 'task NAME { classes N; }': its name and classes; its data comes
 * from the data statements after the model. */
static void check_task(checker *k, const fe_stmt *st) {
  fe_model *m = k->m;
  if (m->n_tasks == FE_MAX_TASKS) {
    if (++k->tasks == FE_MAX_TASKS + 1)
      fe_error(k->c, st->at.loc, "a model has at most %d tasks", FE_MAX_TASKS);
    return;
  }
  k->tasks++;
  int i = m->n_tasks++;
  fe_task *t = &m->tasks[i];
  k->task_st[i] = st;
  t->loc = st->at.loc;
  data_defaults(t);
  fe_loc here = st->name ? st->name_at.loc : st->at.loc;
  if (!st->name) {
    fe_error(k->c, st->at.loc, "the task needs a name: 'task NAME { classes N; }'");
  } else if (format_of(st->name) >= 0) {
    fe_error(k->c, st->name_at.loc, "a task may not be named '%s' like the data format: "
             "'data %s ...' would read as either", st->name, st->name);
  } else if (name_ok(k, st->name, st->name_at, "task")) {
    int j = 0;
    while (j < i && strcmp(m->tasks[j].name, st->name) != 0) j++;
    if (j < i) {
      fe_error(k->c, st->name_at.loc, "duplicate task name '%s'", st->name);
      fe_note(k->c, k->task_st[j]->name_at.loc, "'%s' is first used here", st->name);
    } else {
      strcpy(t->name, st->name);
    }
  }
  const fe_stmt *classes = NULL;
  for (const fe_stmt *b = st->body; b; b = b->next) {
    if (b->kind != FE_ST_CLASSES) {
      fe_error(k->c, b->at.loc, "a task holds only 'classes N;', not '%.*s'", TEXT(k, b->at));
      continue;
    }
    if (classes) {
      fe_error(k->c, b->at.loc, "duplicate 'classes' statement");
      fe_note(k->c, classes->at.loc, "the first one is here");
      continue;
    }
    classes = b;
    const fe_num *n = &b->settings->a;
    if (whole_int(k, n, "classes", 2, MAX_WIDTH, &t->classes)) t->classes_loc = n->at.loc;
  }
  if (k->complete && !classes)
    fe_error(k->c, here, "the task has no 'classes', like 'task %s { classes 10; }'",
             st->name ? st->name : "NAME");
}

static void check_model(checker *k, const fe_stmt *model) {
  fe_model *m = k->m;
  if (!model->name)
    fe_error(k->c, model->at.loc, "the model needs a name: 'model NAME { ... }'");
  else if (name_ok(k, model->name, model->name_at, "model"))
    strcpy(m->name, model->name);
  fe_loc here = model->name ? model->name_at.loc : model->at.loc;

  const fe_stmt *input = NULL, *classes = NULL, *search = NULL;
  const fe_setting *seen[FE_K_COUNT] = {0};
  item_info info[FE_MAX_ITEMS];
  int input_ok = 0, convs = 0, linears = 0, has_tasks = 0;
  for (const fe_stmt *st = model->body; st; st = st->next) has_tasks |= st->kind == FE_ST_TASK;
  for (const fe_stmt *st = model->body; st; st = st->next) {
    if (st->kind == FE_ST_TASK) {
      check_task(k, st);
      continue;
    }
    if (st->kind == FE_ST_CLASSES && has_tasks) {
      fe_error(k->c, st->at.loc, "in a model with tasks, classes belong to each task: "
               "'task NAME { classes N; }'");
      continue;
    }
    const fe_stmt **once = st->kind == FE_ST_INPUT     ? &input
                           : st->kind == FE_ST_CLASSES ? &classes
                           : st->kind == FE_ST_SEARCH  ? &search
                                                       : NULL;
    if (once && *once) {
      fe_error(k->c, st->at.loc, "duplicate '%.*s' statement", TEXT(k, st->at));
      fe_note(k->c, (*once)->at.loc, "the first one is here");
      continue;
    }
    if (once) *once = st;
    if (st->kind == FE_ST_INPUT) check_input(k, st->settings, &input_ok);
    if (st->kind == FE_ST_CLASSES)
      whole_int(k, &st->settings->a, "classes", 2, MAX_WIDTH, &m->classes);
    if (st->kind == FE_ST_SEARCH) {
      for (const fe_setting *s = st->settings; s; s = s->next) {
        if (duplicate(k, seen, s)) continue;
        int64_t v;
        switch (s->key) {
        case FE_K_GRAN: m->gran = (fe_gran)s->choice; break;
        case FE_K_BUDGET:
          if (!s->a.bad && s->a.suffix != 'x' && !s->a.whole)
            fe_error(k->c, s->a.at.loc,
                     "budget must come out a whole number of parameters, not '%.*s'",
                     TEXT(k, s->a.at));
          else if (whole(k, &s->a, "budget", 1, INT64_MAX, "kMG", &v))
            m->budget = v, m->budget_loc = s->a.at.loc;
          break;
        case FE_K_DENSITY: real(k, &s->a, "density", 0, 1, 1, 0, NULL, &m->density); break;
        case FE_K_SEED:
          if (whole(k, &s->a, "seed", 0, INT64_MAX, NULL, &v)) m->seed = (uint64_t)v;
          break;
        case FE_K_SHARED:
          if (!has_tasks && k->complete)
            fe_error(k->c, s->at.loc, "'shared' is the part of each task's budget that all "
                     "tasks share; this model has no tasks");
          else if (!has_tasks)
            break;
          else if (real(k, &s->a, "shared", 0, 0, 1, 1, NULL, &m->shared))
            m->shared_loc = s->a.at.loc;
          break;
        default: break;
        }
      }
    }
    if (st->kind != FE_ST_STAGE && st->kind != FE_ST_REDUCE) continue;

    if (m->n_items == FE_MAX_ITEMS) {
      fe_error(k->c, st->at.loc, "a model holds at most %d stages and reductions", FE_MAX_ITEMS);
      continue;
    }
    fe_item *it = &m->items[m->n_items];
    item_info *in = &info[m->n_items++];
    *in = (item_info){.st = st, .named = st->name != NULL};
    it->kind = st->item;
    it->loc = st->at.loc;
    if (st->name) {
      if (name_ok(k, st->name, st->name_at, "stage")) strcpy(it->name, st->name);
    } else if (st->kind == FE_ST_STAGE) {
      snprintf(it->name, sizeof it->name, "%s%d", st->item == FE_STAGE_CONV ? "conv" : "linear",
               st->item == FE_STAGE_CONV ? convs + 1 : linears + 1);
    }
    convs += st->item == FE_STAGE_CONV;
    linears += st->item == FE_STAGE_LINEAR;
    if (st->kind == FE_ST_STAGE)
      check_stage(k, st, it, in);
    else
      check_reduce(k, st, it, in);
  }
  if (k->complete && !input)
    fe_error(k->c, here, "the model has no 'input', like 'input 1x28x28;'");
  if (k->complete && !classes && !has_tasks)
    fe_error(k->c, here, "the model has no 'classes', like 'classes 10;'");
  if (k->complete && k->tasks == 1)
    fe_error(k->c, k->task_st[0]->at.loc, "a model has no tasks or at least two; with one, "
             "the task is the model: give the model its 'classes' and a plain 'data' statement");
  if (has_tasks && !seen[FE_K_SHARED]) m->shared = 0.2;
  check_items(k, info, input_ok);
}

/* ---- data, training, growth ---- */

/* 'resize HxW', or one number for a square. */
static void check_resize(checker *k, const fe_setting *s, fe_task *d) {
  const fe_size *z = &s->size;
  if (z->bad) return;
  if (z->suffix || !z->whole || z->n > 2) {
    fe_error(k->c, z->at.loc, "resize must be height x width, like 28x28, or one size, not '%.*s'",
             TEXT(k, z->at));
    return;
  }
  int64_t h = z->d[0], w = z->n == 2 ? z->d[1] : z->d[0];
  if (h < 1 || w < 1 || h > MAX_IMAGE || w > MAX_IMAGE) {
    fe_error(k->c, z->at.loc, "resize sizes must be between 1 and %d, not '%.*s'", MAX_IMAGE,
             TEXT(k, z->at));
    return;
  }
  d->resize_h = (int)h, d->resize_w = (int)w;
}

/* A data statement's settings into d: the model's data fields or a
 * task's, which mean the same (fe_task). */
static void check_data(checker *k, const fe_stmt *st, fe_task *d) {
  int format = format_of(st->name);
  if (format >= 0)
    d->data = (fe_data)format;
  else
    fe_error(k->c, st->name_at.loc,
             "unknown data format '%s'; the formats are idx, cifar10, stl10, digits-csv, "
             "folder and downsampled", st->name);
  d->data_loc = st->name_at.loc;
  const fe_setting *seen[FE_K_COUNT] = {0};
  for (const fe_setting *s = st->settings; s; s = s->next) {
    if (duplicate(k, seen, s)) continue;
    switch (s->key) {
    case FE_K_PATH:
      if (!s->str[0])
        fe_error(k->c, s->at.loc, "the data path is empty");
      else if (strlen(s->str) >= FE_PATH_MAX)
        fe_error(k->c, s->at.loc, "the data path is too long (at most %d bytes)", FE_PATH_MAX - 1);
      else
        strcpy(d->data_path, s->str), d->data_loc = s->at.loc;
      break;
    case FE_K_CROP:
      if (d->data == FE_DATA_FOLDER) /* images of any size: their crop is drawn anew */
        fe_error(k->c, s->at.loc, "'crop' pads images of one size; a folder's training "
                 "images are cropped at random scale and aspect (random-resized-crop) already");
      else
        whole_int(k, &s->a, "crop", 0, MAX_IMAGE, &d->aug_crop);
      break;
    case FE_K_FLIP: d->aug_flip = 1; break;
    case FE_K_SPLIT: real(k, &s->a, "split", 0, 1, 1, 1, NULL, &d->test_split); break;
    case FE_K_RESIZE:
    case FE_K_IN_CHANNELS:
      if (d->data == FE_DATA_FOLDER) /* decoded to the input's size and channels already */
        fe_error(k->c, s->at.loc, "a folder's images are decoded to the model's input, its size "
                 "and channels, already; '%.*s' is for data sets of one shape", TEXT(k, s->at));
      else if (s->key == FE_K_RESIZE)
        check_resize(k, s, d);
      else if (whole_int(k, &s->a, "channels", 1, 3, &d->channels) && d->channels == 2) {
        fe_error(k->c, s->a.at.loc, "channels must be 1 (RGB averaged to gray) or 3 (gray "
                 "copied to RGB), not '2'");
        d->channels = 0;
      }
      if (s->key == FE_K_RESIZE) d->resize_loc = s->at.loc;
      else d->channels_loc = s->at.loc;
      break;
    default: break;
    }
  }
}

/* The adapters make the data the model's input, or they are a mistake. */
static void check_adapters(checker *k, const fe_task *d) {
  const fe_model *m = k->m;
  if (m->in_c < 1) return; /* no valid input: reported already */
  if (d->resize_h && (d->resize_h != m->in_h || d->resize_w != m->in_w))
    fe_error(k->c, d->resize_loc, "resize %dx%d is not the model's input size %dx%d; the data "
             "must meet the input", d->resize_h, d->resize_w, m->in_h, m->in_w);
  if (d->channels && d->channels != m->in_c)
    fe_error(k->c, d->channels_loc, "channels %d is not the model's %d input channel%s",
             d->channels, m->in_c, m->in_c == 1 ? "" : "s");
}

/* The model's data fields as a task's (fe_put_task_data: back). */
static fe_task data_of(const fe_model *m) {
  fe_task d = {0};
  d.data = m->data;
  memcpy(d.data_path, m->data_path, sizeof d.data_path);
  d.data_loc = m->data_loc;
  d.aug_crop = m->aug_crop, d.aug_flip = m->aug_flip;
  d.test_split = m->test_split;
  d.resize_h = m->resize_h, d.resize_w = m->resize_w, d.resize_loc = m->resize_loc;
  d.channels = m->channels, d.channels_loc = m->channels_loc;
  return d;
}

static int task_named(const fe_model *m, const char *name) {
  for (int i = 0; i < m->n_tasks; i++)
    if (m->tasks[i].name[0] && strcmp(m->tasks[i].name, name) == 0) return i;
  return -1;
}

/* A data statement: the model's (*plain, once) in a model without tasks,
 * a task's (named, once per task) in one with tasks. Run after the model
 * is checked, wherever the statement stands, so that its tasks are known.
 * A statement in the wrong place still has its settings checked. */
static void check_data_stmt(checker *k, const fe_stmt *st, const fe_stmt **plain) {
  fe_model *m = k->m;
  fe_task scratch = {0};
  data_defaults(&scratch);
  if (!st->task && k->tasks) {
    if (format_of(st->name) < 0 && task_named(m, st->name) >= 0) {
      fe_error(k->c, st->name_at.loc, "data for task '%s' needs its format too: "
               "'data %s FORMAT \"path\" ...;'", st->name, st->name);
      return;
    }
    fe_error(k->c, st->at.loc, "in a model with tasks, each 'data' statement names its task: "
             "'data TASK FORMAT \"path\" ...;'");
    check_data(k, st, &scratch);
    return;
  }
  if (!st->task) {
    if (*plain) {
      fe_error(k->c, st->at.loc, "duplicate 'data' statement");
      fe_note(k->c, (*plain)->at.loc, "the first one is here");
      return;
    }
    *plain = st;
    fe_task d = data_of(m);
    check_data(k, st, &d);
    fe_put_task_data(m, &d);
    return;
  }
  int t = task_named(m, st->task);
  if (!k->tasks) {
    if (k->complete)
      fe_error(k->c, st->task_at.loc, "data for a task '%s', but the model has no tasks; its "
               "data is a plain 'data FORMAT \"path\" ...;'", st->task);
  } else if (t < 0) {
    /* a task past the last, one whose name was refused or one that error
     * recovery dropped has been reported */
    int refused = 0;
    for (int i = 0; i < m->n_tasks; i++)
      refused |= k->task_st[i]->name && strcmp(k->task_st[i]->name, st->task) == 0;
    if (k->complete && k->tasks <= FE_MAX_TASKS && !refused)
      fe_error(k->c, st->task_at.loc, "data for '%s', which is not one of the model's tasks",
               st->task);
  } else if (k->task_data[t]) {
    fe_error(k->c, st->task_at.loc, "a second 'data' statement for task '%s'", st->task);
    fe_note(k->c, k->task_data[t]->task_at.loc, "the first one is here");
  }
  if (t < 0 || k->task_data[t]) {
    check_data(k, st, &scratch);
    return;
  }
  k->task_data[t] = st;
  check_data(k, st, &m->tasks[t]);
}

static void check_train(checker *k, const fe_stmt *st, int *epochs_ok) {
  fe_model *m = k->m;
  const fe_setting *seen[FE_K_COUNT] = {0};
  for (const fe_setting *s = st->settings; s; s = s->next) {
    if (duplicate(k, seen, s)) continue;
    switch (s->key) {
    case FE_K_BATCH: whole_int(k, &s->a, "batch", 1, MAX_BATCH, &m->batch); break;
    case FE_K_EPOCHS: *epochs_ok = whole_int(k, &s->a, "epochs", 1, INT_MAX, &m->epochs); break;
    case FE_K_LR: real(k, &s->a, "lr", 0, 1, INFINITY, 0, NULL, &m->lr); break;
    case FE_K_SCHED:
      m->sched = (fe_sched)s->choice;
      if (s->choice != FE_SCHED_STEP) break;
      whole_int(k, &s->a, "step interval (epochs)", 1, INT_MAX, &m->step_every);
      if (s->nargs == 2) real(k, &s->b, "step factor", 0, 1, 1, 0, NULL, &m->step_gamma);
      break;
    case FE_K_MOMENTUM: real(k, &s->a, "momentum", 0, 0, 1, 1, NULL, &m->momentum); break;
    case FE_K_DECAY: real(k, &s->a, "decay", 0, 0, INFINITY, 0, NULL, &m->decay); break;
    default: break;
    }
  }
}

static void check_grow(checker *k, const fe_stmt *st, const fe_setting **freeze,
                       const fe_setting **plan) {
  fe_model *m = k->m;
  const fe_setting *seen[FE_K_COUNT] = {0};
  for (const fe_setting *s = st->settings; s; s = s->next) {
    if (duplicate(k, seen, s)) continue;
    switch (s->key) {
    case FE_K_METHOD: m->method = (fe_search)s->choice; break;
    case FE_K_EVERY: whole_int(k, &s->a, "every", 1, INT_MAX, &m->grow_every); break;
    case FE_K_ALR: real(k, &s->a, "alr", 0, 0, INFINITY, 0, NULL, &m->alr); break;
    case FE_K_ALR_DECAY: real(k, &s->a, "decay", 0, 1, 1, 0, NULL, &m->alr_decay); break;
    case FE_K_CANDIDATES:
      real(k, &s->a, "candidates", 1, 0, INFINITY, 0, "x", &m->candidates);
      break;
    case FE_K_FREEZE:
      if (whole_int(k, &s->a, "freeze last", 0, INT_MAX, &m->freeze_last)) *freeze = s;
      break;
    case FE_K_BATCHES: whole_int(k, &s->a, "batches", 1, INT_MAX, &m->grow_batches); break;
    case FE_K_FLAT: real(k, &s->a, "flat", 0, 0, 1, 1, NULL, &m->flat); break;
    case FE_K_PLAN: m->grow_plan = 1; break;
    default: break;
    }
  }
  /* Alr sizes expansions only without a plan; a plan needs the budget it
   * plans for */
  if (seen[FE_K_PLAN])
    for (int key = FE_K_ALR; key <= FE_K_ALR_DECAY; key++)
      if (seen[key]) {
        fe_error(k->c, seen[key]->at.loc, "'%.*s' has no effect with 'plan', which sizes "
                 "each expansion from the budget left", TEXT(k, seen[key]->at));
        fe_note(k->c, seen[FE_K_PLAN]->at.loc, "'plan' is here");
      }
  if (seen[FE_K_PLAN] && m->method == FE_SEARCH_FIXED)
    fe_error(k->c, seen[FE_K_PLAN]->at.loc, "'plan' sizes expansions; 'fixed' has none");
  else if (seen[FE_K_PLAN])
    *plan = seen[FE_K_PLAN];
}

static void defaults(fe_model *m) {
  memset(m, 0, sizeof *m);
  m->gran = FE_GRAN_WEIGHT;
  m->budget = INT64_MAX;
  m->density = 1;
  m->seed = 1;
  m->data = FE_DATA_IDX;
  strcpy(m->data_path, DEFAULT_DATA_PATH);
  m->test_split = 0.2;
  m->batch = 128;
  m->epochs = 10;
  m->lr = 0.05;
  m->sched = FE_SCHED_COSINE;
  m->step_every = 10;
  m->step_gamma = 0.1;
  m->momentum = 0.9;
  m->decay = 5e-4;
  m->method = FE_SEARCH_ILNAS;
  m->grow_every = 1;
  m->alr = 0.3;
  m->alr_decay = 0.9;
  m->candidates = 4;
  m->grow_batches = 1;
}

int fe_check(fe_ctx *c, fe_model *m) {
  defaults(m);
  if (c->stopped) return c->errors;
  checker k = {.c = c, .m = m, .complete = c->syntax_errors == 0};

  const fe_stmt *model = NULL, *data = NULL, *train = NULL, *grow = NULL;
  int any_model = 0, epochs_ok = 1, epochs_given = 0;
  const fe_setting *freeze = NULL, *plan = NULL;
  for (const fe_stmt *st = c->file_ast; st; st = st->next) any_model |= st->kind == FE_ST_MODEL;
  for (const fe_stmt *st = c->file_ast; st; st = st->next) {
    if (st->kind == FE_ST_MODEL) {
      if (model) {
        fe_error(c, st->at.loc, "only one model per file");
        fe_note(c, model->at.loc, "the model is here");
        continue;
      }
      model = st;
      check_model(&k, st);
      continue;
    }
    if (!model && any_model && k.complete)
      fe_error(c, st->at.loc, "'%.*s' must come after the model", TEXT(&k, st->at));
    if (st->kind == FE_ST_DATA) continue; /* once the model's tasks are known */
    const fe_stmt **once = st->kind == FE_ST_TRAIN ? &train : &grow;
    if (*once) {
      fe_error(c, st->at.loc, "duplicate '%.*s' statement", TEXT(&k, st->at));
      fe_note(c, (*once)->at.loc, "the first one is here");
      continue;
    }
    *once = st;
    if (st->kind == FE_ST_TRAIN) {
      for (const fe_setting *s = st->settings; s; s = s->next)
        epochs_given |= s->key == FE_K_EPOCHS;
      check_train(&k, st, &epochs_ok);
    }
    if (st->kind == FE_ST_GROW) check_grow(&k, st, &freeze, &plan);
  }
  for (const fe_stmt *st = c->file_ast; st; st = st->next)
    if (st->kind == FE_ST_DATA) check_data_stmt(&k, st, &data);
  if (k.complete && !model)
    fe_error(c, (fe_loc){0, 0}, "no model; a file starts with 'model NAME { ... }'");
  for (int i = 0; i < m->n_tasks; i++) {
    const fe_stmt *st = k.task_st[i];
    if (k.task_data[i])
      check_adapters(&k, &m->tasks[i]);
    else if (k.complete && m->tasks[i].name[0])
      fe_error(c, st->name_at.loc, "task '%s' has no data; give it 'data %s FORMAT \"path\" "
               "...;' after the model", st->name, st->name);
  }
  if (k.complete && model && !k.tasks) {
    fe_task d = data_of(m);
    check_adapters(&k, &d);
  }
  /* the model's classes and data are its first task's */
  if (m->n_tasks > 0) {
    m->classes = m->tasks[0].classes;
    fe_put_task_data(m, &m->tasks[0]);
  }
  if (k.complete && plan && m->budget == INT64_MAX)
    fe_error(c, plan->at.loc, "'plan' needs a budget ('search ... budget N'): it plans the "
             "expansions that reach it");
  if (k.complete && freeze && epochs_ok && m->freeze_last >= m->epochs)
    fe_error(c, freeze->a.at.loc, "freeze last %d must be less than the %d epochs%s",
             m->freeze_last, m->epochs, epochs_given ? "" : " (the default; set 'train epochs N')");
  return c->errors;
}
