/* data_bench: decoded images per second of the image folder loader, the
 * training transform (random-resized-crop to SIZE, flip) on THREADS
 * loader threads, batches of 32, over the train/ split of DIR, PASSES
 * times. Built and run by bench/data_bench.sh; prints one line:
 *   ilnas THREADS threads: N images in S s, R images/s */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/data.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: data_bench DIR THREADS PASSES SIZE\n");
    return 2;
  }
  int threads = atoi(argv[2]), passes = atoi(argv[3]), size = atoi(argv[4]);
  rt_data_opts o = {.fmt = RT_DATA_FOLDER, .path = argv[1], .c = 3, .h = size, .w = size,
                    .threads = threads, .log = stderr};
  rt_dataset train, test;
  char err[2048];
  if (rt_data_open(&o, &train, &test, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  rt_norm nm = {.c = 3, .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
  rt_stream *s = rt_stream_new(&train, &nm, 32, 1, 1, threads, 3, err, sizeof err);
  if (!s) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  rt_rng rng;
  rt_rng_seed(&rng, 1);
  long images = 0;
  double sum = 0, t0 = now();
  for (int p = 0; p < passes; p++) {
    rt_stream_epoch(s, NULL, train.n, &rng);
    const float *x;
    const ir_label *y;
    int b, rc;
    while ((rc = rt_stream_next(s, &x, &y, &b, err, sizeof err)) == 0)
      images += b, sum += x[0]; /* touch the batch, as a step would */
    if (rc < 0) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
  }
  double secs = now() - t0;
  printf("ilnas %d threads: %ld images in %.2f s, %.1f images/s (checksum %.3f)\n", threads,
         images, secs, images / secs, sum);
  rt_stream_free(s);
  rt_dataset_free(&train), rt_dataset_free(&test);
  return 0;
}
