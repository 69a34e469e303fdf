/* test_data_adapt.c: the input adapters of 'data ... resize HxW channels N'
 * on small sets written here: bilinear upscaling against the formula by
 * hand (half-pixel centres, edges clamped, which is what PIL's filter is
 * when enlarging), gray to RGB and RGB to gray exactly, the errors; with
 * --pil DIR, the resize against PIL's own on the CSV and sizes that
 * adapt_pil.py wrote there (shrinking included). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/data.h"
#include "testutil.h"

static char err[512];

static int open_set(rt_data_format fmt, const char *path, int c, int h, int w, rt_dataset *a,
                    rt_dataset *b) {
  rt_data_opts o = {.fmt = fmt, .path = path, .split = 0.5, .resize_h = h, .resize_w = w,
                    .channels = c};
  err[0] = '\0';
  int rc = rt_data_open(&o, a, b, err, sizeof err);
  if (rc) fprintf(stderr, "open %s: %s\n", path, err);
  return rc;
}

static int dig_px(int row, int k) { return (row * 7 + k * k) % 17; }

static void write_digits(const char *path, int rows) {
  char *t = malloc((size_t)rows * 300 + 1), *p = t;
  for (int i = 0; i < rows; i++) {
    for (int k = 0; k < 64; k++) p += sprintf(p, "%d,", dig_px(i, k));
    p += sprintf(p, "%d\n", i % 10);
  }
  tu_write(path, t, strlen(t));
  free(t);
}

/* Bilinear at half-pixel centres with the edges clamped, from the 8x8 row r. */
static double by_hand(int r, int oy, int ox, int oh, int ow) {
  double sy = (oy + 0.5) * 8.0 / oh - 0.5, sx = (ox + 0.5) * 8.0 / ow - 0.5;
  if (sy < 0) sy = 0;
  if (sx < 0) sx = 0;
  int y0 = (int)sy, x0 = (int)sx;
  int y1 = y0 + 1 < 8 ? y0 + 1 : 7, x1 = x0 + 1 < 8 ? x0 + 1 : 7;
  double fy = sy - y0, fx = sx - x0;
#define P(y, x) (dig_px(r, (y) * 8 + (x)) / 16.0)
  return (1 - fy) * ((1 - fx) * P(y0, x0) + fx * P(y0, x1)) +
         fy * ((1 - fx) * P(y1, x0) + fx * P(y1, x1));
#undef P
}

static void test_resize(const char *root) {
  const char *csv = tu_path(root, "digits.csv");
  write_digits(csv, 4);
  rt_dataset a, b;
  if (open_set(RT_DATA_DIGITS_CSV, csv, 0, 28, 28, &a, &b)) { tu_failures++; return; }
  CHECK(a.n == 2 && b.n == 2 && a.c == 1 && a.h == 28 && a.w == 28 && b.h == 28 && b.w == 28);
  double worst = 0;
  for (int r = 0; r < 4; r++) {
    const rt_dataset *d = r < 2 ? &a : &b;
    for (int y = 0; y < 28; y++)
      for (int x = 0; x < 28; x++) {
        double e = fabs(d->x[(size_t)(r % 2) * 784 + (size_t)y * 28 + x] - by_hand(r, y, x, 28, 28));
        if (e > worst) worst = e;
      }
  }
  CHECK(worst < 1e-6);
  CHECK(a.y[1] == 1 && b.y[0] == 2);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* Height and width apart, and gray to RGB after the resize: three
   * identical planes. */
  if (open_set(RT_DATA_DIGITS_CSV, csv, 3, 12, 20, &a, &b)) { tu_failures++; return; }
  CHECK(a.c == 3 && a.h == 12 && a.w == 20);
  int bad = 0;
  worst = 0;
  for (int i = 0; i < a.n; i++)
    for (int k = 0; k < 240; k++) {
      const float *im = a.x + (size_t)i * 720;
      bad += im[k] != im[240 + k] || im[k] != im[480 + k];
      double e = fabs(im[k] - by_hand(i, k / 20, k % 20, 12, 20));
      if (e > worst) worst = e;
    }
  CHECK(bad == 0 && worst < 1e-6);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* Gray to RGB alone: copies, exactly. */
  if (open_set(RT_DATA_DIGITS_CSV, csv, 3, 0, 0, &a, &b)) { tu_failures++; return; }
  bad = a.c != 3 || a.h != 8;
  for (int i = 0; i < a.n; i++)
    for (int ch = 0; ch < 3; ch++)
      for (int k = 0; k < 64; k++)
        bad += a.x[(size_t)i * 192 + ch * 64 + k] != (float)dig_px(i, k) / 16.0f;
  CHECK(bad == 0);
  rt_dataset_free(&a), rt_dataset_free(&b);
}

/* CIFAR-10: five training files and a test file of two records each. */
static uint8_t cif_px(int rec, int k) { return (uint8_t)((rec * 31 + k * 13) % 256); }

static void write_cifar(const char *dir) {
  uint8_t buf[2 * 3073];
  for (int f = 0; f < 6; f++) {
    for (int r = 0; r < 2; r++) {
      uint8_t *rec = buf + r * 3073;
      rec[0] = (uint8_t)((f * 2 + r) % 10);
      for (int k = 0; k < 3072; k++) rec[1 + k] = cif_px(f * 2 + r, k);
    }
    char name[32];
    if (f < 5) snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
    else snprintf(name, sizeof name, "test_batch.bin");
    tu_write(tu_path(dir, name), buf, sizeof buf);
  }
}

static void test_channels(const char *root) {
  const char *dir = tu_subdir(root, "cifar");
  write_cifar(dir);
  rt_dataset a, b;
  if (open_set(RT_DATA_CIFAR10, dir, 1, 0, 0, &a, &b)) { tu_failures++; return; }
  CHECK(a.n == 10 && b.n == 2 && a.c == 1 && a.h == 32 && a.w == 32 && b.c == 1);
  CHECK(a.x && b.x); /* the file's levels adapted to floats, not rounded to bytes */
  int bad = 0;
  for (int i = 0; i < a.n + b.n; i++) {
    const float *im = i < a.n ? a.x + (size_t)i * 1024 : b.x + (size_t)(i - a.n) * 1024;
    for (int k = 0; k < 1024; k++) {
      /* the loader's levels are byte * (1 / 255) */
      float r = cif_px(i, k) * (1.0f / 255.0f), g = cif_px(i, 1024 + k) * (1.0f / 255.0f),
            bl = cif_px(i, 2048 + k) * (1.0f / 255.0f);
      bad += im[k] != (r + g + bl) / 3.0f;
    }
  }
  CHECK(bad == 0);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* RGB to gray, then the resize of the gray plane. */
  if (open_set(RT_DATA_CIFAR10, dir, 1, 16, 16, &a, &b)) { tu_failures++; return; }
  CHECK(a.c == 1 && a.h == 16 && a.w == 16);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* Three channels asked of RGB: as stored. */
  if (open_set(RT_DATA_CIFAR10, dir, 3, 0, 0, &a, &b)) { tu_failures++; return; }
  CHECK(a.c == 3 && a.px && rt_data_pixel(&a, 5) == cif_px(0, 5) * (1.0f / 255.0f));
  rt_dataset_free(&a), rt_dataset_free(&b);
}

static void test_errors(const char *root) {
  const char *csv = tu_path(root, "digits2.csv");
  write_digits(csv, 4);
  rt_data_opts o = {.fmt = RT_DATA_DIGITS_CSV, .path = csv, .split = 0.5, .channels = 2};
  rt_dataset a, b;
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "digits2.csv: 'channels 2' turns gray (1 channel) into RGB or RGB (3) into gray");
  CHECK(a.x == NULL && b.x == NULL && a.n == 0);
}

/* --pil DIR: DIR/digits.csv and DIR/cases ("H W" per line, then H*W floats
 * per image, PIL's resize of each image / 16). */
static int test_pil(const char *dir) {
  char path[1024];
  snprintf(path, sizeof path, "%s/cases.txt", dir);
  FILE *f = fopen(path, "r");
  if (!f) { fprintf(stderr, "%s: cannot open\n", path); return 1; }
  int h, w, cases = 0;
  double worst = 0;
  while (fscanf(f, "%d %d", &h, &w) == 2) {
    rt_dataset a, b;
    snprintf(path, sizeof path, "%s/digits.csv", dir);
    rt_data_opts o = {.fmt = RT_DATA_DIGITS_CSV, .path = path, .split = 0.5, .resize_h = h,
                      .resize_w = w};
    if (rt_data_open(&o, &a, &b, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    for (int i = 0; i < a.n + b.n; i++) {
      const float *im = i < a.n ? a.x + (size_t)i * h * w : b.x + (size_t)(i - a.n) * h * w;
      for (int k = 0; k < h * w; k++) {
        double want;
        if (fscanf(f, "%lf", &want) != 1) { fprintf(stderr, "cases.txt is short\n"); return 1; }
        if (fabs(im[k] - want) > worst) worst = fabs(im[k] - want);
      }
    }
    rt_dataset_free(&a), rt_dataset_free(&b);
    cases++;
  }
  fclose(f);
  printf("%d sizes against PIL: largest difference %.3g\n", cases, worst);
  CHECK(cases >= 3 && worst < 1e-5);
  return tu_failures != 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--pil") == 0) return test_pil(argv[2]);
  const char *root = tu_mkdtemp("ilnas_adapt");
  test_resize(root);
  test_channels(root);
  test_errors(root);
  tu_rm_tree(root);
  if (tu_failures) fprintf(stderr, "%d checks failed\n", tu_failures);
  return tu_failures != 0;
}
