/* spec.c: what the checked model offers its readers (spec.h): names of
 * settings and a task's view of a multi-task model. It goes into every
 * produced binary (with diag.c), which lowers a task's view itself. */
#include <string.h>

#include "frontend/spec.h"

void fe_put_task_data(fe_model *m, const fe_task *t) {
  m->data = t->data;
  memcpy(m->data_path, t->data_path, sizeof m->data_path);
  m->data_loc = t->data_loc;
  m->aug_crop = t->aug_crop, m->aug_flip = t->aug_flip;
  m->test_split = t->test_split;
  m->resize_h = t->resize_h, m->resize_w = t->resize_w, m->resize_loc = t->resize_loc;
  m->channels = t->channels, m->channels_loc = t->channels_loc;
}

void fe_task_view(const fe_model *m, int t, fe_model *out) {
  *out = *m;
  out->classes = m->tasks[t].classes;
  fe_put_task_data(out, &m->tasks[t]);
  out->n_tasks = 0;
  out->shared = 0;
  memset(out->tasks, 0, sizeof out->tasks);
}

const char *fe_data_name(fe_data d) {
  switch (d) {
  case FE_DATA_IDX: return "idx";
  case FE_DATA_CIFAR10: return "cifar10";
  case FE_DATA_STL10: return "stl10";
  case FE_DATA_DIGITS_CSV: return "digits-csv";
  case FE_DATA_FOLDER: return "folder";
  case FE_DATA_DOWNSAMPLED: return "downsampled";
  }
  return "?";
}

const char *fe_search_name(fe_search s) {
  switch (s) {
  case FE_SEARCH_ILNAS: return "ilnas";
  case FE_SEARCH_RANDOM: return "random";
  case FE_SEARCH_FIXED: return "fixed";
  }
  return "?";
}
