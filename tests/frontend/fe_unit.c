/* fe_unit: the frontend's API on whole models: every field of a full
 * model, every default of a minimal one, and the edges of the API that
 * golden diagnostics cannot show (files, the model after failure, the
 * error cap, fe_error_at on a finished model). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/spec.h"

static int failures;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)
#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)
#define CHECK_LOC(l, ln, cl) CHECK((l).line == (ln) && (l).col == (cl))

/* Parses src, capturing the diagnostics; returns the error count. */
static int parse(const char *src, fe_model *m, char **out) {
  size_t len;
  FILE *diag = open_memstream(out, &len);
  if (!diag) {
    perror("open_memstream");
    exit(2);
  }
  int n = fe_parse_string("t.ilnas", src, m, diag);
  fclose(diag);
  return n;
}

static int model_is_empty(const fe_model *m) {
  static const fe_model zero;
  return memcmp(m, &zero, sizeof zero) == 0;
}

static const char full[] =
    "# everything set, nothing left to a default\n"
    "model cifar {\n"
    "  input 3x32x32;\n"
    "  classes 10;\n"
    "  search kernel budget 1.5M from density 0.25 seed 12345678901;\n"
    "  stage conv c1 { layers 2..4 channels 16..64 kernel 5x5 dense norm batch }\n"
    "  reduce conv 2;\n"
    "  stage conv { layers 3 channels 32; kernel 1; chain; norm none; };\n"
    "  reduce maxpool 2;\n"
    "  stage conv c3 { channels 8..9 }\n"
    "  reduce gap;\n"
    "  stage linear { layers 1..2 width 32..128 }\n"
    "}\n"
    "grow random every 2 epochs alr 0.5 decay 0.8 candidates 2.5x freeze last 3 batches 4 flat "
    "0.01;\n"
    "train constant batch 64 epochs 20 lr 0.1 step 5 0.5 momentum 0 decay 0;\n"
    "data digits-csv \"/data/\\\"q\\\"\\\\d.csv\" split 0.3 augment flip crop 4;\n";

static void test_full(void) {
  fe_model m;
  char *out = NULL;
  /* "constant" and "step" are both schedules: take out "constant" first. */
  char *src = strdup(full);
  char *c = strstr(src, "constant ");
  memset(c, ' ', strlen("constant"));
  int n = parse(src, &m, &out);
  CHECK(n == 0);
  CHECK_STR(out, "");
  CHECK_STR(m.file, "t.ilnas");
  CHECK_STR(m.src, src);
  CHECK(m.src != src);
  CHECK_STR(m.name, "cifar");
  CHECK(m.in_c == 3 && m.in_h == 32 && m.in_w == 32);
  CHECK(m.classes == 10);
  CHECK(m.gran == FE_GRAN_KERNEL);
  CHECK(m.budget == 1500000);
  CHECK_LOC(m.budget_loc, 5, 24);
  CHECK(m.density == 0.25);
  CHECK(m.seed == 12345678901ull);

  CHECK(m.n_items == 7);
  const fe_item *it = m.items;
  CHECK(it[0].kind == FE_STAGE_CONV);
  CHECK_STR(it[0].name, "c1");
  CHECK_LOC(it[0].loc, 6, 3);
  CHECK(it[0].layers_lo == 2 && it[0].layers_hi == 4);
  CHECK(it[0].width_lo == 16 && it[0].width_hi == 64);
  CHECK(it[0].kernel == 5 && it[0].dense == 1 && it[0].batchnorm == 1);

  CHECK(it[1].kind == FE_REDUCE_CONV && it[1].factor == 2);
  CHECK_STR(it[1].name, "");
  CHECK_LOC(it[1].loc, 7, 3);

  CHECK(it[2].kind == FE_STAGE_CONV);
  CHECK_STR(it[2].name, "conv2"); /* the second conv stage, named or not */
  CHECK(it[2].layers_lo == 3 && it[2].layers_hi == 3);
  CHECK(it[2].width_lo == 32 && it[2].width_hi == 32);
  CHECK(it[2].kernel == 1 && it[2].dense == 0 && it[2].batchnorm == 0);

  CHECK(it[3].kind == FE_REDUCE_MAXPOOL && it[3].factor == 2);
  CHECK(it[4].kind == FE_STAGE_CONV);
  CHECK_STR(it[4].name, "c3");
  CHECK(it[4].layers_lo == 1 && it[4].layers_hi == 1 && it[4].kernel == 3);
  CHECK(it[4].width_lo == 8 && it[4].width_hi == 9);
  CHECK(it[4].dense == 0 && it[4].batchnorm == 0);

  CHECK(it[5].kind == FE_REDUCE_GAP);
  CHECK_LOC(it[5].loc, 11, 3);

  CHECK(it[6].kind == FE_STAGE_LINEAR);
  CHECK_STR(it[6].name, "linear1");
  CHECK(it[6].layers_lo == 1 && it[6].layers_hi == 2);
  CHECK(it[6].width_lo == 32 && it[6].width_hi == 128);
  CHECK(it[6].kernel == 0 && it[6].factor == 0);

  CHECK(m.data == FE_DATA_DIGITS_CSV);
  CHECK_STR(m.data_path, "/data/\"q\"\\d.csv");
  CHECK_LOC(m.data_loc, 16, 17);
  CHECK(m.aug_crop == 4 && m.aug_flip == 1);
  CHECK(m.test_split == 0.3);

  CHECK(m.batch == 64 && m.epochs == 20 && m.lr == 0.1);
  CHECK(m.sched == FE_SCHED_STEP && m.step_every == 5 && m.step_gamma == 0.5);
  CHECK(m.momentum == 0 && m.decay == 0);

  CHECK(m.method == FE_SEARCH_RANDOM);
  CHECK(m.grow_every == 2 && m.alr == 0.5 && m.alr_decay == 0.8);
  CHECK(m.candidates == 2.5);
  CHECK(m.freeze_last == 3 && m.grow_batches == 4 && m.flat == 0.01);

  fe_model_free(&m);
  CHECK(model_is_empty(&m));
  fe_model_free(&m); /* freeing an empty model is harmless */
  free(out);

  /* With "constant" left in, the two schedules are a duplicate. */
  CHECK(parse(full, &m, &out) == 1);
  CHECK(strstr(out, "t.ilnas:15:42: error: 'step' conflicts with 'constant' given before\n"));
  CHECK(strstr(out, "t.ilnas:15:7: note: first given here\n"));
  CHECK(model_is_empty(&m));
  free(out);
  free(src);
}

static void test_defaults(void) {
  fe_model m;
  char *out = NULL;
  CHECK(parse("model tiny { input 1x8x8; classes 2; stage conv { channels 4 } stage linear { width "
              "8 } }",
              &m, &out) == 0);
  CHECK_STR(out, "");
  CHECK_STR(m.name, "tiny");
  CHECK(m.gran == FE_GRAN_WEIGHT);
  CHECK(m.budget == INT64_MAX);
  CHECK_LOC(m.budget_loc, 0, 0);
  CHECK(m.density == 1.0);
  CHECK(m.seed == 1);
  CHECK(m.n_items == 2);
  CHECK_STR(m.items[0].name, "conv1");
  CHECK(m.items[0].layers_lo == 1 && m.items[0].layers_hi == 1);
  CHECK(m.items[0].width_lo == 4 && m.items[0].width_hi == 4);
  CHECK(m.items[0].kernel == 3 && m.items[0].dense == 0 && m.items[0].batchnorm == 0);
  CHECK_STR(m.items[1].name, "linear1");
  CHECK(m.items[1].layers_lo == 1 && m.items[1].layers_hi == 1);
  CHECK(m.items[1].width_lo == 8 && m.items[1].width_hi == 8);
  CHECK(m.data == FE_DATA_IDX);
  CHECK_STR(m.data_path, "/usr/share/datasets/fashion-mnist");
  CHECK_LOC(m.data_loc, 0, 0);
  CHECK(m.aug_crop == 0 && m.aug_flip == 0);
  CHECK(m.test_split == 0.2);
  CHECK(m.batch == 128 && m.epochs == 10 && m.lr == 0.05);
  CHECK(m.sched == FE_SCHED_COSINE && m.step_every == 10 && m.step_gamma == 0.1);
  CHECK(m.momentum == 0.9 && m.decay == 5e-4);
  CHECK(m.method == FE_SEARCH_ILNAS);
  CHECK(m.grow_every == 1 && m.alr == 0.3 && m.alr_decay == 0.9);
  CHECK(m.candidates == 4 && m.freeze_last == 0 && m.grow_batches == 1 && m.flat == 0);
  CHECK(m.n_tasks == 0 && m.shared == 0);
  CHECK_LOC(m.shared_loc, 0, 0);
  fe_model_free(&m);
  free(out);

  /* Empty statements keep every default too; "step N" keeps its factor. */
  CHECK(parse("model t { input 1x4x4; classes 3; } data idx; train step 3; grow;", &m, &out) == 0);
  CHECK(m.sched == FE_SCHED_STEP && m.step_every == 3 && m.step_gamma == 0.1);
  CHECK_STR(m.data_path, "/usr/share/datasets/fashion-mnist");
  CHECK_LOC(m.data_loc, 1, 42);
  CHECK(m.n_items == 0);
  CHECK(m.resize_h == 0 && m.resize_w == 0 && m.channels == 0);
  fe_model_free(&m);
  free(out);
}

/* The input adapters: HxW, one size for a square, the channels, where. */
static void test_adapters(void) {
  fe_model m;
  char *out = NULL;
  CHECK(parse("model t { input 3x12x20; classes 3; }\n"
              "data digits-csv resize 12x20 channels 3;", &m, &out) == 0);
  CHECK(m.resize_h == 12 && m.resize_w == 20 && m.channels == 3);
  CHECK_LOC(m.resize_loc, 2, 17);
  CHECK_LOC(m.channels_loc, 2, 30);
  fe_model_free(&m);
  free(out);
  CHECK(parse("model t { input 1x9x9; classes 3; } data cifar10 channels 1 resize 9;", &m,
              &out) == 0);
  CHECK(m.resize_h == 9 && m.resize_w == 9 && m.channels == 1);
  fe_model_free(&m);
  free(out);
}

static const char tasks[] =
    "model pair {\n"
    "  input 1x28x28;\n"
    "  search weight budget 200k shared 0.3 from density 0.25 seed 1;\n"
    "  stage conv { layers 1..2 channels 8..16 }\n"
    "  task fashion { classes 10; }\n"
    "  reduce maxpool 2;\n"
    "  stage linear { width 32 }\n"
    "  task digits { classes 12; }\n"
    "  task batch { classes 3; }\n"
    "}\n"
    "data digits digits-csv \"digits.csv.gz\" resize 28x28 split 0.25;\n"
    "data batch cifar10 \"c\" channels 1 resize 28 augment crop 2;\n"
    "data fashion idx augment flip;\n";

/* Several tasks: each its classes and data, the model's are task 0's. */
static void test_tasks(void) {
  fe_model m;
  char *out = NULL;
  CHECK(parse(tasks, &m, &out) == 0);
  CHECK_STR(out, "");
  CHECK(m.n_items == 3); /* tasks are not network items */
  CHECK(m.n_tasks == 3);
  CHECK(m.shared == 0.3);
  CHECK_LOC(m.shared_loc, 3, 36);
  CHECK(m.budget == 200000);

  const fe_task *t = m.tasks;
  CHECK_STR(t[0].name, "fashion");
  CHECK_LOC(t[0].loc, 5, 3);
  CHECK(t[0].classes == 10);
  CHECK_LOC(t[0].classes_loc, 5, 26);
  CHECK(t[0].data == FE_DATA_IDX);
  CHECK_STR(t[0].data_path, "/usr/share/datasets/fashion-mnist");
  CHECK_LOC(t[0].data_loc, 13, 14);
  CHECK(t[0].aug_crop == 0 && t[0].aug_flip == 1 && t[0].test_split == 0.2);
  CHECK(t[0].resize_h == 0 && t[0].resize_w == 0 && t[0].channels == 0);

  CHECK_STR(t[1].name, "digits");
  CHECK(t[1].classes == 12);
  CHECK(t[1].data == FE_DATA_DIGITS_CSV);
  CHECK_STR(t[1].data_path, "digits.csv.gz");
  CHECK_LOC(t[1].data_loc, 11, 24);
  CHECK(t[1].aug_crop == 0 && t[1].aug_flip == 0 && t[1].test_split == 0.25);
  CHECK(t[1].resize_h == 28 && t[1].resize_w == 28 && t[1].channels == 0);
  CHECK_LOC(t[1].resize_loc, 11, 40);

  CHECK_STR(t[2].name, "batch"); /* a keyword names a task */
  CHECK(t[2].classes == 3);
  CHECK(t[2].data == FE_DATA_CIFAR10);
  CHECK_STR(t[2].data_path, "c");
  CHECK(t[2].aug_crop == 2 && t[2].channels == 1 && t[2].resize_h == 28 && t[2].resize_w == 28);
  CHECK_LOC(t[2].channels_loc, 12, 24);

  /* the model's classes and data are task 0's */
  CHECK(m.classes == 10);
  CHECK(m.data == FE_DATA_IDX);
  CHECK_STR(m.data_path, t[0].data_path);
  CHECK_LOC(m.data_loc, 13, 14);
  CHECK(m.aug_flip == 1 && m.aug_crop == 0 && m.test_split == 0.2);
  CHECK(m.resize_h == 0 && m.channels == 0);

  /* task 1 seen alone */
  fe_model v;
  fe_task_view(&m, 1, &v);
  CHECK(v.n_tasks == 0 && v.shared == 0 && v.classes == 12 && v.data == FE_DATA_DIGITS_CSV);
  CHECK(v.n_items == 3 && v.resize_h == 28 && strcmp(v.data_path, "digits.csv.gz") == 0);
  fe_model_free(&m);
  free(out);

  /* shared defaults to 0.2 with tasks; 0 is allowed */
  CHECK(parse("model t { input 1x4x4; task a { classes 2; } task b { classes 3; } }\n"
              "data a idx; data b idx;", &m, &out) == 0);
  CHECK(m.n_tasks == 2 && m.shared == 0.2 && m.classes == 2);
  CHECK_LOC(m.shared_loc, 0, 0);
  fe_model_free(&m);
  free(out);
  CHECK(parse("model t { input 1x4x4; search shared 0; task a { classes 2; } "
              "task b { classes 3; } }\ndata a idx; data b idx;", &m, &out) == 0);
  CHECK(m.shared == 0);
  fe_model_free(&m);
  free(out);

  /* eight tasks are allowed */
  char src[1024];
  size_t n = (size_t)snprintf(src, sizeof src, "model t { input 1x4x4;");
  for (int i = 0; i < FE_MAX_TASKS; i++)
    n += (size_t)snprintf(src + n, sizeof src - n, " task t%d { classes 2; }", i);
  n += (size_t)snprintf(src + n, sizeof src - n, " }");
  for (int i = 0; i < FE_MAX_TASKS; i++)
    n += (size_t)snprintf(src + n, sizeof src - n, " data t%d idx;", i);
  CHECK(parse(src, &m, &out) == 0);
  CHECK_STR(out, "");
  CHECK(m.n_tasks == FE_MAX_TASKS);
  CHECK_STR(m.tasks[FE_MAX_TASKS - 1].name, "t7");
  fe_model_free(&m);
  free(out);
}

/* Budgets are exact, whatever the binary rounding of their digits. */
static void test_budget(void) {
  static const struct {
    const char *text;
    int64_t want;
  } cases[] = {
      {"100k", 100000},  {"1.5M", 1500000}, {"2G", 2000000000}, {"4.35k", 4350},
      {"1e3k", 1000000}, {"250", 250},      {"0.001M", 1000},   {"9223372036854775807", INT64_MAX},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char src[256];
    snprintf(src, sizeof src, "model b { input 1x4x4; classes 2; search budget %s; }",
             cases[i].text);
    fe_model m;
    char *out = NULL;
    CHECK(parse(src, &m, &out) == 0);
    if (m.budget != cases[i].want)
      fprintf(stderr, "budget %s: got %lld\n", cases[i].text, (long long)m.budget);
    CHECK(m.budget == cases[i].want);
    fe_model_free(&m);
    free(out);
  }
}

static void test_files(void) {
  fe_model m;
  char *out = NULL;
  size_t len;
  FILE *diag = open_memstream(&out, &len);
  CHECK(fe_parse_file("/nonexistent/x.ilnas", &m, diag) == 1);
  fclose(diag);
  CHECK_STR(out, "error: cannot open '/nonexistent/x.ilnas': No such file or directory\n");
  CHECK(model_is_empty(&m));
  free(out);

  char path[] = "/tmp/fe_unit_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd < 0) return;
  const char text[] = "model f {\r\n  input 1x2x2;\r\n  classes 4;\r\n}\r\n";
  CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
  close(fd);
  CHECK(fe_parse_file(path, &m, stderr) == 0);
  CHECK_STR(m.file, path);
  CHECK_STR(m.src, text);
  CHECK(m.classes == 4);

  /* Later passes report against the finished model, CRs and all. */
  diag = open_memstream(&out, &len);
  fe_error_at(&m, (fe_loc){3, 11}, diag, "classes %d is %s", m.classes, "odd");
  fe_error_at(&m, (fe_loc){0, 0}, diag, "no line");
  fclose(diag);
  char want[512];
  snprintf(want, sizeof want,
           "%s:3:11: error: classes 4 is odd\n  classes 4;\n          ^\n%s: error: no line\n",
           path, path);
  CHECK_STR(out, want);
  free(out);
  fe_model_free(&m);

  /* A NUL byte is not a text file. */
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (f) {
    fwrite("model a {\n\0}\n", 1, 13, f);
    fclose(f);
  }
  diag = open_memstream(&out, &len);
  CHECK(fe_parse_file(path, &m, diag) == 1);
  fclose(diag);
  snprintf(want, sizeof want, "%s:2: error: a NUL byte; this is not a text file\n", path);
  CHECK_STR(out, want);
  CHECK(model_is_empty(&m));
  free(out);
  unlink(path);
}

static void test_limits(void) {
  fe_model m;
  char *out = NULL;
  /* 30 mistakes: 20 are reported, then the parse stops. */
  CHECK(parse("model x { input 1x4x4; classes 2; @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@ }", &m, &out) ==
        20);
  CHECK(strstr(out, "t.ilnas: note: stopping after 20 errors\n") != NULL);
  CHECK(model_is_empty(&m));
  free(out);

  /* No diagnostics stream: the count is still right. */
  CHECK(fe_parse_string("t.ilnas", "model { }", &m, NULL) == 3);
  CHECK(model_is_empty(&m));

  /* An error inside a stage does not lose the rest of the model. */
  CHECK(parse("model a { input 1x8x8; stage conv { layers ? channels 0 } classes 1; }", &m, &out) ==
        4);
  CHECK(strstr(out, "t.ilnas:1:44: error: unexpected character '?'\n") != NULL);
  CHECK(strstr(out, "t.ilnas:1:46: error: unexpected 'channels', expected a number\n") != NULL);
  CHECK(strstr(out, "t.ilnas:1:55: error: channels must be at least 1, not '0'\n") != NULL);
  CHECK(strstr(out, "t.ilnas:1:67: error: classes must be at least 2, not '1'\n") != NULL);
  free(out);
}

static void test_names(void) {
  CHECK_STR(fe_data_name(FE_DATA_IDX), "idx");
  CHECK_STR(fe_data_name(FE_DATA_CIFAR10), "cifar10");
  CHECK_STR(fe_data_name(FE_DATA_STL10), "stl10");
  CHECK_STR(fe_data_name(FE_DATA_DIGITS_CSV), "digits-csv");
  CHECK_STR(fe_search_name(FE_SEARCH_ILNAS), "ilnas");
  CHECK_STR(fe_search_name(FE_SEARCH_RANDOM), "random");
  CHECK_STR(fe_search_name(FE_SEARCH_FIXED), "fixed");

  /* Keywords name things where a name is expected. */
  fe_model m;
  char *out = NULL;
  CHECK(parse("model model { input 1x4x4; classes 2; stage conv batch { channels 2 } "
              "stage linear conv { width 2 } }",
              &m, &out) == 0);
  CHECK_STR(m.name, "model");
  CHECK_STR(m.items[0].name, "batch");
  CHECK_STR(m.items[1].name, "conv");
  fe_model_free(&m);
  free(out);
}

int main(void) {
  test_full();
  test_defaults();
  test_budget();
  test_adapters();
  test_tasks();
  test_files();
  test_limits();
  test_names();
  if (failures) fprintf(stderr, "fe_unit: %d checks failed\n", failures);
  return failures != 0;
}
