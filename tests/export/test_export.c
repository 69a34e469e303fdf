/* test_export.c: the runtime's side of the export tests.
 *
 *   test_export dump CKPT DATA_DIR OUT_DIR [LIMIT]
 *       runs the checkpoint on the test set with the runtime (inference
 *       mode, the interpreted schedule, the reference kernels, exactly what
 *       `model eval` computes) and writes OUT_DIR/images.f32 (raw pixels in
 *       [0, 1], NCHW), labels.u8 and ref.f32 (logits, test-set order).
 *   test_export compare REF.f32 GOT.f32 LABELS.u8 CLASSES [MIN_AGREE]
 *       holds GOT to REF: every logit within 1e-4 relative to max(1, |ref|),
 *       argmax agreement >= MIN_AGREE (0.999), accuracy equal to 0.01%.
 *   test_export untrain CKPT OUT
 *       writes a copy of the checkpoint that says no epoch was done.
 *   test_export synth MODEL.ilnas OUT_DIR SEED N
 *       a checkpoint with no data behind it: MODEL's seed network, random
 *       weights and random batch norm statistics (so folding has work to
 *       do), marked as trained for one epoch, as OUT_DIR/synth.ckpt; with N
 *       random images in [0, 1] and the runtime's logits on them, written
 *       as by dump (labels: the runtime's own argmax).
 *   test_export describe CKPT OUT_DIR
 *       for bench/infer_bench.sh: the IR's layers as net.json and the
 *       parameters (masked weights are exactly 0) and batch norm
 *       statistics as params.f32 and stats.f32, so PyTorch can run the
 *       same dense-masked network.
 *   test_export bench CKPT IMAGES.f32 BATCH SECONDS THREADS [BACKEND]
 *       images/second of the runtime's inference forward (what `model
 *       eval` runs per batch) on normalised copies of the images, on
 *       BACKEND (default model eval's, APP_DEFAULT_BACKEND).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frontend/spec.h"
#include "ir/ir.h"
#include "runtime/data.h"
#include "runtime/exec.h"
#include "base/rng.h"
#include "app/train.h"

static int write_file(const char *dir, const char *name, const void *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(p, 1, n, f) == n;
  if (f && fclose(f)) ok = 0;
  if (!ok) fprintf(stderr, "FAIL: cannot write %s\n", path);
  return ok ? 0 : -1;
}

static void *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "FAIL: cannot read %s\n", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = malloc(len > 0 ? (size_t)len : 1);
  if (!p || fread(p, 1, (size_t)len, f) != (size_t)len) {
    fprintf(stderr, "FAIL: cannot read %s\n", path);
    free(p);
    p = NULL;
  }
  fclose(f);
  *n = (size_t)len;
  return p;
}

static int argmax(const float *v, int k) {
  int best = 0;
  for (int i = 1; i < k; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

static int cmd_dump(const char *ckpt, const char *data, const char *out, int limit) {
  char err[1024];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  enum { CAP = 100 };
  if (app_ckpt_load(ckpt, CAP, 2, NULL, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    return 1;
  }
  rt_dataset train, test;
  if (rt_data_load(RT_DATA_IDX, data, 0.0, &train, &test, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    rt_exec_free(x), ir_free(g);
    return 1;
  }
  if (limit > 0 && limit < test.n) test.n = limit;
  const int k = g->cfg.classes, n = test.n;
  const size_t img = (size_t)test.c * test.h * test.w;
  ir_call *fc, *bc;
  int nf, nb, correct = 0, rc = 1;
  float *logits = malloc((size_t)n * k * sizeof(float));
  float *buf = malloc(CAP * img * sizeof(float));
  int idx[CAP];
  if (!logits || !buf || ir_schedule(g, &fc, &nf, &bc, &nb)) {
    fprintf(stderr, "FAIL: out of memory\n");
    goto out;
  }
  rt_exec_set_training(x, 0);
  for (int at = 0; at < n; at += CAP) {
    int b = n - at < CAP ? n - at : CAP;
    for (int i = 0; i < b; i++) idx[i] = at + i;
    rt_data_batch(&test, idx, b, &st.norm, 0, 0, NULL, buf, NULL);
    rt_exec_set_input(x, buf, b);
    rt_exec_run(x, fc, nf);
    const float *lg = rt_exec_view(x, RT_LOGITS);
    for (int i = 0; i < b; i++) {
      const float *l = lg + (size_t)i * k;
      memcpy(logits + (size_t)(at + i) * k, l, (size_t)k * sizeof(float));
      correct += argmax(l, k) == test.y[at + i];
    }
  }
  free(fc), free(bc);
  /* labels.u8: a byte per label (the test sets here have 10 classes);
   * images.f32: the images as floats in [0, 1], whether the set keeps
   * floats or bytes */
  uint8_t *lab8 = malloc((size_t)n);
  float *im = malloc((size_t)n * img * sizeof *im);
  for (int i = 0; lab8 && i < n; i++) lab8[i] = (uint8_t)test.y[i];
  for (size_t i = 0; im && i < (size_t)n * img; i++) im[i] = rt_data_pixel(&test, i);
  int bad = !lab8 || !im || write_file(out, "images.f32", im, (size_t)n * img * sizeof(float)) ||
            write_file(out, "labels.u8", lab8, (size_t)n) ||
            write_file(out, "ref.f32", logits, (size_t)n * k * sizeof(float));
  free(lab8), free(im);
  if (bad) goto out;
  printf("runtime: %d images, test_acc %.6f\n", n, (double)correct / n);
  rc = 0;
out:
  free(logits), free(buf);
  rt_dataset_free(&train), rt_dataset_free(&test);
  rt_exec_free(x), ir_free(g);
  return rc;
}

static int cmd_compare(const char *ref_path, const char *got_path, const char *lab_path,
                       int k, double min_agree) {
  size_t nr, ng, nl;
  float *ref = read_file(ref_path, &nr), *got = read_file(got_path, &ng);
  unsigned char *lab = read_file(lab_path, &nl);
  int rc = 1;
  if (!ref || !got || !lab) goto out;
  size_t n = nr / sizeof(float) / (size_t)k;
  if (nr != ng || n == 0 || n > nl) {
    fprintf(stderr, "FAIL: %s has %zu bytes, %s %zu (labels %zu)\n", ref_path, nr,
            got_path, ng, nl);
    goto out;
  }
  double worst = 0;
  size_t agree = 0, cr = 0, cg = 0;
  for (size_t i = 0; i < n; i++) {
    const float *r = ref + i * k, *g = got + i * k;
    for (int c = 0; c < k; c++) {
      double d = fabs((double)r[c] - g[c]) / fmax(1.0, fabs((double)r[c]));
      if (!(d <= worst)) worst = d; /* NaN counts as the worst */
    }
    int ar = argmax(r, k), ag = argmax(g, k);
    agree += ar == ag, cr += ar == lab[i], cg += ag == lab[i];
  }
  double acc_r = (double)cr / n, acc_g = (double)cg / n, ag = (double)agree / n;
  printf("compare: %zu images, max rel logit diff %.3g, argmax agreement %.4f%%, "
         "accuracy runtime %.4f%% vs exported %.4f%%\n",
         n, worst, 100 * ag, 100 * acc_r, 100 * acc_g);
  if (!(worst <= 1e-4)) fprintf(stderr, "FAIL: logits differ by %.3g > 1e-4\n", worst);
  else if (ag < min_agree) fprintf(stderr, "FAIL: argmax agreement %.4f < %.4f\n", ag, min_agree);
  else if (fabs(acc_r - acc_g) > 1e-4 + 1e-12)
    fprintf(stderr, "FAIL: accuracy %.6f != %.6f\n", acc_g, acc_r);
  else rc = 0;
out:
  free(ref), free(got), free(lab);
  return rc;
}

static int cmd_untrain(const char *ckpt, const char *out) {
  char err[1024];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  if (app_ckpt_load(ckpt, 1, 1, NULL, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    return 1;
  }
  st.epoch = 0, st.step = 0;
  int rc = app_ckpt_save(out, x, &st, err, sizeof err);
  if (rc) fprintf(stderr, "FAIL: %s\n", err);
  rt_exec_free(x), ir_free(g);
  return rc ? 1 : 0;
}

/* Runs the loaded network on n packed normalised images, logits out. */
static int run_images(ir_graph *g, rt_exec *x, const float *in, int n, float *logits) {
  ir_call *fc, *bc;
  int nf, nb;
  if (ir_schedule(g, &fc, &nf, &bc, &nb)) return -1;
  const ir_tensor *it = &g->tensors[g->input_t];
  const size_t img = (size_t)it->c * it->h * it->w;
  const int k = g->cfg.classes;
  rt_exec_set_training(x, 0);
  for (int at = 0; at < n; at += x->cap) {
    int b = n - at < x->cap ? n - at : x->cap;
    rt_exec_set_input(x, in + (size_t)at * img, b);
    rt_exec_run(x, fc, nf);
    memcpy(logits + (size_t)at * k, rt_exec_view(x, RT_LOGITS), (size_t)b * k * sizeof(float));
  }
  free(fc), free(bc);
  return 0;
}

static int cmd_synth(const char *model, const char *out, uint64_t seed, int n) {
  fe_model m;
  char err[1024], path[4096];
  if (fe_parse_file(model, &m, stderr)) return 1;
  ir_graph *g = ir_build(&m, stderr);
  fe_model_free(&m);
  if (!g) return 1;
  enum { CAP = 32 };
  rt_exec *x = rt_exec_new(g, CAP, 1, NULL, err, sizeof err);
  if (!x) {
    fprintf(stderr, "FAIL: %s\n", err);
    ir_free(g);
    return 1;
  }
  rt_exec_init_params(x, seed);
  rt_rng r;
  rt_rng_seed(&r, seed + 1);
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    if (!l->bn) continue;
    for (int c = 0; c < l->cout; c++) {
      float *params = rt_exec_params_write(x);
      params[l->g_off + c] = (float)(0.5 + rt_rng_uniform(&r));
      params[l->g_off + l->cout + c] = (float)(0.4 * rt_rng_uniform(&r) - 0.2);
      float *stats = rt_exec_edit(x, RT_STATS);
      stats[l->s_off + c] = (float)(rt_rng_uniform(&r) - 0.5);
      stats[l->s_off + l->cout + c] = (float)(0.5 + 1.5 * rt_rng_uniform(&r));
    }
  }
  app_train_state st;
  memset(&st, 0, sizeof st);
  st.epoch = 1, st.seed = seed;
  rt_rng_seed(&st.rng, seed), rt_rng_seed(&st.srng, seed);
  const ir_tensor *it = &g->tensors[g->input_t];
  st.norm.c = it->c;
  for (int c = 0; c < 4; c++) {
    st.norm.mean[c] = (float)(0.2 + 0.1 * c);
    st.norm.std[c] = (float)(0.25 + 0.05 * c);
  }
  snprintf(path, sizeof path, "%s/synth.ckpt", out);
  int rc = 1;
  const size_t img = (size_t)it->c * it->h * it->w;
  const int k = g->cfg.classes;
  float *raw = malloc((size_t)n * img * sizeof(float)), *in = malloc((size_t)n * img * sizeof(float));
  float *logits = malloc((size_t)n * k * sizeof(float));
  uint8_t *lab = malloc((size_t)n); /* labels.u8: a byte per label */
  if (!raw || !in || !logits || !lab) goto out;
  if (app_ckpt_save(path, x, &st, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    goto out;
  }
  for (size_t i = 0; i < (size_t)n * img; i++) {
    int c = (int)(i % img / ((size_t)it->h * it->w));
    raw[i] = (float)rt_rng_uniform(&r);
    in[i] = (raw[i] - st.norm.mean[c]) / st.norm.std[c];
  }
  if (run_images(g, x, in, n, logits)) goto out;
  for (int i = 0; i < n; i++) lab[i] = (uint8_t)argmax(logits + (size_t)i * k, k);
  if (write_file(out, "images.f32", raw, (size_t)n * img * sizeof(float)) ||
      write_file(out, "labels.u8", lab, (size_t)n) ||
      write_file(out, "ref.f32", logits, (size_t)n * k * sizeof(float)))
    goto out;
  rc = 0;
out:
  free(raw), free(in), free(logits), free(lab);
  rt_exec_free(x), ir_free(g);
  return rc;
}

static int cmd_describe(const char *ckpt, const char *out) {
  char err[1024], path[4096];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  if (app_ckpt_load(ckpt, 1, 1, NULL, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    return 1;
  }
  snprintf(path, sizeof path, "%s/net.json", out);
  FILE *f = fopen(path, "w");
  int rc = 1;
  if (!f) {
    fprintf(stderr, "FAIL: cannot write %s\n", path);
    goto out;
  }
  static const char *kinds[] = {"conv", "linear", "maxpool", "gap", "copy"};
  fprintf(f, "{\"input_t\": %d, \"logits_t\": %d, \"classes\": %d,\n", g->input_t,
          g->logits_t, g->cfg.classes);
  fprintf(f, " \"mean\": [");
  for (int c = 0; c < st.norm.c; c++) fprintf(f, "%s%.9g", c ? ", " : "", (double)st.norm.mean[c]);
  fprintf(f, "], \"std\": [");
  for (int c = 0; c < st.norm.c; c++) fprintf(f, "%s%.9g", c ? ", " : "", (double)st.norm.std[c]);
  fprintf(f, "],\n \"tensors\": [");
  for (int t = 0; t < g->n_tensors; t++)
    fprintf(f, "%s[%d, %d, %d]", t ? ", " : "", g->tensors[t].c, g->tensors[t].h,
            g->tensors[t].w);
  fprintf(f, "],\n \"layers\": [\n");
  for (int i = 0; i < g->n_layers; i++) {
    const ir_layer *l = &g->layers[i];
    fprintf(f,
            "  {\"kind\": \"%s\", \"name\": \"%s\", \"cin\": %d, \"cout\": %d, \"k\": %d, "
            "\"stride\": %d, \"pad\": %d, \"relu\": %d, \"bn\": %d, \"alive\": %d, "
            "\"in_t\": %d, \"in_ch\": %d, \"out_t\": %d, \"out_ch\": %d, \"prev_t\": %d, "
            "\"prev_ch\": %d, \"w_off\": %" PRId64 ", \"b_off\": %" PRId64 ", \"g_off\": %" PRId64
            ", \"s_off\": %" PRId64 "}%s\n",
            kinds[l->kind], l->name, l->cin, l->cout, l->k, l->stride, l->pad, l->relu, l->bn,
            g->arch.alive[i], l->in_t, l->in_ch, l->out_t, l->out_ch, l->prev_t, l->prev_ch, l->w_off,
            l->b_off, l->g_off, l->s_off, i + 1 < g->n_layers ? "," : "");
  }
  fprintf(f, " ]}\n");
  if (fclose(f)) {
    fprintf(stderr, "FAIL: cannot write %s\n", path);
    goto out;
  }
  if (write_file(out, "params.f32", rt_exec_view(x, RT_PARAMS), (size_t)g->n_params * sizeof(float)) ||
      write_file(out, "stats.f32", rt_exec_view(x, RT_STATS), (size_t)(g->n_stats ? g->n_stats : 0) * sizeof(float)))
    goto out;
  rc = 0;
out:
  rt_exec_free(x), ir_free(g);
  return rc;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmd_bench(const char *ckpt, const char *images, int batch, double seconds,
                     int threads, const char *backend) {
  char err[1024];
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  if (batch < 1) batch = 1;
  if (app_ckpt_load(ckpt, batch, threads, backend, &g, &x, &st, err, sizeof err)) {
    fprintf(stderr, "FAIL: %s\n", err);
    return 1;
  }
  size_t bytes;
  float *raw = read_file(images, &bytes);
  const ir_tensor *it = &g->tensors[g->input_t];
  const size_t img = (size_t)it->c * it->h * it->w, n = raw ? bytes / 4 / img : 0;
  float *buf = malloc((size_t)batch * img * sizeof(float));
  ir_call *fc = NULL, *bc = NULL;
  int nf, nb, rc = 1;
  if (!raw || !buf || n < (size_t)batch || ir_schedule(g, &fc, &nf, &bc, &nb)) {
    fprintf(stderr, "FAIL: cannot set up the benchmark\n");
    goto out;
  }
  rt_exec_set_training(x, 0);
  double t0 = now(), t = t0;
  size_t done = 0;
  while (t - t0 < seconds) {
    size_t at = done % (n - (size_t)batch + 1);
    /* normalising is part of the forward, as in the exported code */
    for (size_t i = 0; i < (size_t)batch * img; i++) {
      int c = (int)(i % img / ((size_t)it->h * it->w));
      buf[i] = (raw[at * img + i] - st.norm.mean[c]) / st.norm.std[c];
    }
    rt_exec_set_input(x, buf, batch);
    rt_exec_run(x, fc, nf);
    done += (size_t)batch;
    t = now();
  }
  printf("%.1f\n", (double)done / (t - t0));
  rc = 0;
out:
  free(raw), free(buf), free(fc), free(bc);
  rt_exec_free(x), ir_free(g);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "dump") == 0)
    return cmd_dump(argv[2], argv[3], argv[4], argc > 5 ? atoi(argv[5]) : 0);
  if (argc >= 6 && strcmp(argv[1], "compare") == 0)
    return cmd_compare(argv[2], argv[3], argv[4], atoi(argv[5]),
                       argc > 6 ? atof(argv[6]) : 0.999);
  if (argc == 4 && strcmp(argv[1], "untrain") == 0) return cmd_untrain(argv[2], argv[3]);
  if (argc == 6 && strcmp(argv[1], "synth") == 0)
    return cmd_synth(argv[2], argv[3], (uint64_t)strtoull(argv[4], NULL, 10), atoi(argv[5]));
  if (argc == 4 && strcmp(argv[1], "describe") == 0) return cmd_describe(argv[2], argv[3]);
  if ((argc == 7 || argc == 8) && strcmp(argv[1], "bench") == 0)
    return cmd_bench(argv[2], argv[3], atoi(argv[4]), atof(argv[5]), atoi(argv[6]),
                     argc == 8 ? argv[7] : APP_DEFAULT_BACKEND);
  fprintf(stderr, "usage: test_export dump|compare|untrain|synth|describe|bench ... (see the source)\n");
  return 2;
}
