/* test_data_fashion_mnist.c: the real data set, when the machine has it.
 *
 * Debian's dataset-fashion-mnist installs the four gzipped IDX files; the
 * test checks what is known of them (sizes, a balanced label histogram,
 * the first labels, the published mean and std) and how long loading
 * takes. Without the package it skips (exit 77, ctest SKIP_RETURN_CODE). */
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "runtime/data.h"
#include "testutil.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void check_split(const rt_dataset *d, int n, int per_class) {
  CHECK(d->n == n && d->c == 1 && d->h == 28 && d->w == 28 && d->classes == 10);
  int hist[256] = {0}, bad = 0;
  for (int i = 0; i < d->n; i++) hist[d->y[i]]++;
  for (int k = 0; k < 10; k++) bad += hist[k] != per_class;
  CHECK(bad == 0);
  float lo = 1, hi = 0;
  for (size_t i = 0; i < (size_t)d->n * 784; i++) {
    float v = rt_data_pixel(d, i);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  CHECK(lo == 0.0f && hi == 1.0f);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
  struct stat st;
  if (stat(dir, &st) != 0) {
    printf("SKIP: %s not found (Debian package dataset-fashion-mnist)\n", dir);
    return 77;
  }
  rt_dataset train, test;
  char err[512];
  double t0 = now();
  if (rt_data_load(RT_DATA_IDX, dir, 0.0, &train, &test, err, sizeof err)) {
    fprintf(stderr, "load failed: %s\n", err);
    return 1;
  }
  double t1 = now();
  printf("fashion-mnist: %d + %d images loaded in %.3f s\n", train.n, test.n, t1 - t0);
  check_split(&train, 60000, 6000);
  check_split(&test, 10000, 1000);
  /* Both files start with an ankle boot (class 9). */
  CHECK(train.y[0] == 9 && test.y[0] == 9);
  /* The statistics every Fashion-MNIST recipe normalises with. */
  rt_norm nm;
  rt_data_norm(&train, &nm);
  printf("fashion-mnist: mean %.4f std %.4f\n", nm.mean[0], nm.std[0]);
  CHECK(nm.c == 1 && fabs(nm.mean[0] - 0.2860) < 5e-4 && fabs(nm.std[0] - 0.3530) < 5e-4);
  rt_dataset_free(&train);
  rt_dataset_free(&test);
  if (tu_failures) {
    fprintf(stderr, "%d check(s) failed\n", tu_failures);
    return 1;
  }
  return 0;
}
