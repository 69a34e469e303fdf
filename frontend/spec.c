/* spec.c: what the checked model offers its readers (spec.h): names of
 * settings and a task's view of a multi-task model. It goes into every
 * produced binary (with diag.c), which lowers a task's view itself. */
#include <string.h>

#include "frontend/spec.h"

void fe_task_view(const fe_model *m, int t, fe_model *out) {
  const fe_task *k = &m->tasks[t];
  *out = *m;
  out->classes = k->classes;
  out->data = k->data;
  memcpy(out->data_path, k->data_path, sizeof out->data_path);
  out->data_loc = k->data_loc;
  out->aug_crop = k->aug_crop, out->aug_flip = k->aug_flip;
  out->test_split = k->test_split;
  out->resize_h = k->resize_h, out->resize_w = k->resize_w, out->resize_loc = k->resize_loc;
  out->channels = k->channels, out->channels_loc = k->channels_loc;
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
