/* runner.c: drives an exported network the way a user's program would,
 * with nothing of ilnas behind it: cc -O2 runner.c net.c -lm.
 *
 *   runner IMAGES.f32 OUT.f32 [BATCH [WEIGHTS]]
 *
 * IMAGES.f32 holds raw images scaled to [0, 1], NCHW; OUT.f32 gets the
 * logits. Built with -DRUNNER_LOAD, it calls net_load(WEIGHTS) first.
 * Built with -DRUNNER_BENCH (and -pthread) it instead times net_forward
 * over the images at BATCH for about SECONDS (4th argument) and prints
 * images/second; THREADS (5th) split each batch into contiguous slices,
 * one net_forward call per thread, the way the runtime splits a batch. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "net.h"

#ifdef RUNNER_BENCH
#include <pthread.h>

typedef struct slice {
  const float *x;
  float *y;
  int n, rc;
} slice;

static void *run_slice(void *p) {
  slice *s = p;
  s->rc = net_forward(s->x, s->y, s->n);
  return NULL;
}
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: runner IMAGES.f32 OUT.f32 [BATCH [WEIGHTS|SECONDS]]\n");
    return 2;
  }
  const long img = (long)net_input_shape[0] * net_input_shape[1] * net_input_shape[2];
  int batch = argc > 3 ? atoi(argv[3]) : 64;
  if (batch < 1) batch = 1;
#ifdef RUNNER_LOAD
  if (argc < 5 || net_load(argv[4]) != 0) {
    fprintf(stderr, "FAIL: net_load(%s)\n", argc < 5 ? "(none)" : argv[4]);
    return 1;
  }
#endif
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    fprintf(stderr, "FAIL: cannot read %s\n", argv[1]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f) / (long)sizeof(float) / img;
  fseek(f, 0, SEEK_SET);
  float *x = malloc((size_t)(n * img) * sizeof(float) + 1);
  float *y = malloc((size_t)(n * net_classes) * sizeof(float) + 1);
  if (!x || !y || fread(x, sizeof(float), (size_t)(n * img), f) != (size_t)(n * img)) {
    fprintf(stderr, "FAIL: cannot read %s\n", argv[1]);
    return 1;
  }
  fclose(f);
#ifdef RUNNER_BENCH
  double seconds = argc > 4 ? atof(argv[4]) : 2.0, t0 = now(), t = t0;
  int threads = argc > 5 ? atoi(argv[5]) : 1;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  long done = 0;
  while (t - t0 < seconds) {
    long at = done % n, b = n - at < batch ? n - at : batch;
    int parts = b < threads ? (int)b : threads;
    slice sl[64];
    pthread_t tid[64];
    for (int i = 0; i < parts; i++) {
      long lo = b * i / parts, hi = b * (i + 1) / parts;
      sl[i] = (slice){x + (at + lo) * img, y + (at + lo) * net_classes, (int)(hi - lo), 0};
      if (i > 0 && pthread_create(&tid[i], NULL, run_slice, &sl[i])) return 1;
    }
    run_slice(&sl[0]);
    for (int i = 1; i < parts; i++) pthread_join(tid[i], NULL);
    for (int i = 0; i < parts; i++)
      if (sl[i].rc) return 1;
    done += b;
    t = now();
  }
  printf("%.1f\n", (double)done / (t - t0));
  return 0;
#else
  double t0 = now();
  for (long at = 0; at < n; at += batch) {
    long b = n - at < batch ? n - at : batch;
    if (net_forward(x + at * img, y + at * net_classes, (int)b) != 0) {
      fprintf(stderr, "FAIL: net_forward returned an error at image %ld\n", at);
      return 1;
    }
  }
  fprintf(stderr, "runner: %ld images in %.3f s\n", n, now() - t0);
  f = fopen(argv[2], "wb");
  if (!f || fwrite(y, sizeof(float), (size_t)(n * net_classes), f) !=
                (size_t)(n * net_classes) || fclose(f)) {
    fprintf(stderr, "FAIL: cannot write %s\n", argv[2]);
    return 1;
  }
  free(x), free(y);
  return 0;
#endif
}
