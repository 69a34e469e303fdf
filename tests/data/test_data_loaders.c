/* test_data_loaders.c: every loader on small files written here in the
 * exact on-disk format, every error it must name, and truncate, norm and
 * the augmented batches, checked pixel by pixel. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/data.h"
#include "testutil.h"

static char err[512];

/* Loaded pixels are byte / 255 (or / 16) in float: within 1e-6 of the quotient. */
static int near(float got, double want) { return fabs((double)got - want) <= 1e-6; }

static int load(rt_data_format fmt, const char *path, double split, rt_dataset *a,
                rt_dataset *b) {
  err[0] = '\0';
  return rt_data_load(fmt, path, split, a, b, err, sizeof err);
}

/* A load that must succeed; prints the message when it does not. */
static int load_ok(rt_data_format fmt, const char *path, double split, rt_dataset *a,
                   rt_dataset *b, int line) {
  if (load(fmt, path, split, a, b) == 0) return 1;
  fprintf(stderr, "%s:%d: load of %s failed: %s\n", __FILE__, line, path, err);
  tu_failures++;
  return 0;
}
#define LOAD_OK(fmt, path, split, a, b) load_ok(fmt, path, split, a, b, __LINE__)

/* A failed load must say so, leave nothing allocated, and name `frag`. */
static void expect_fail(rt_data_format fmt, const char *path, double split, const char *frag1,
                        const char *frag2, int line) {
  rt_dataset a, b;
  int rc = load(fmt, path, split, &a, &b);
  if (rc != -1) {
    fprintf(stderr, "%s:%d: load of %s succeeded, expected an error with \"%s\"\n", __FILE__,
            line, path, frag1);
    tu_failures++;
    rt_dataset_free(&a); rt_dataset_free(&b);
    return;
  }
  CHECK(a.x == NULL && a.y == NULL && a.n == 0 && b.x == NULL && b.y == NULL);
  tu_check_has(__FILE__, line, err, frag1);
  if (frag2) tu_check_has(__FILE__, line, err, frag2);
}
#define EXPECT_FAIL(fmt, path, split, f1, f2) expect_fail(fmt, path, split, f1, f2, __LINE__)

/* ---- IDX ---- */

static uint8_t idx_px(int split, int i, int k) {
  return (uint8_t)(split * 91 + i * 37 + k * 11 + 5);
}

static uint8_t *idx_images(uint32_t magic, int n, int rows, int cols, int split, size_t *len) {
  *len = 16 + (size_t)n * rows * cols;
  uint8_t *b = malloc(*len);
  uint32_t h[4] = {magic, (uint32_t)n, (uint32_t)rows, (uint32_t)cols};
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) b[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
  for (int i = 0; i < n; i++)
    for (int k = 0; k < rows * cols; k++) b[16 + (size_t)i * rows * cols + k] = idx_px(split, i, k);
  return b;
}

static uint8_t *idx_labels(uint32_t magic, int n, const uint8_t *lab, size_t *len) {
  *len = 8 + (size_t)n;
  uint8_t *b = malloc(*len);
  uint32_t h[2] = {magic, (uint32_t)n};
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) b[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
  memcpy(b + 8, lab, (size_t)n);
  return b;
}

static const uint8_t train_lab[5] = {0, 3, 1, 2, 3}, test_lab[2] = {2, 0};

/* Writes a 5 + 2 image set of 3x4 images, gzipped or raw. */
static void write_idx_set(const char *dir, int gz) {
  size_t n;
  uint8_t *b;
  void (*put)(const char *, const void *, size_t) = gz ? tu_write_gz : tu_write;
  const char *sfx = gz ? ".gz" : "";
  char name[128];
  b = idx_images(0x803, 5, 3, 4, 0, &n);
  snprintf(name, sizeof name, "train-images-idx3-ubyte%s", sfx);
  put(tu_path(dir, name), b, n); free(b);
  b = idx_labels(0x801, 5, train_lab, &n);
  snprintf(name, sizeof name, "train-labels-idx1-ubyte%s", sfx);
  put(tu_path(dir, name), b, n); free(b);
  b = idx_images(0x803, 2, 3, 4, 1, &n);
  snprintf(name, sizeof name, "t10k-images-idx3-ubyte%s", sfx);
  put(tu_path(dir, name), b, n); free(b);
  b = idx_labels(0x801, 2, test_lab, &n);
  snprintf(name, sizeof name, "t10k-labels-idx1-ubyte%s", sfx);
  put(tu_path(dir, name), b, n); free(b);
}

static void check_idx_set(const rt_dataset *a, const rt_dataset *b) {
  CHECK(a->n == 5 && a->c == 1 && a->h == 3 && a->w == 4 && a->classes == 4);
  CHECK(b->n == 2 && b->c == 1 && b->h == 3 && b->w == 4 && b->classes == 4);
  CHECK(a->px && !a->x && b->px && !b->x); /* the file's bytes, kept */
  int bad = 0;
  for (int i = 0; i < 5; i++) {
    bad += a->y[i] != train_lab[i];
    for (int k = 0; k < 12; k++)
      bad += !near(rt_data_pixel(a, (size_t)i * 12 + k), idx_px(0, i, k) / 255.0);
  }
  for (int i = 0; i < 2; i++) {
    bad += b->y[i] != test_lab[i];
    for (int k = 0; k < 12; k++)
      bad += !near(rt_data_pixel(b, (size_t)i * 12 + k), idx_px(1, i, k) / 255.0);
  }
  CHECK(bad == 0);
}

static void test_idx(const char *root) {
  rt_dataset a, b;
  size_t n;
  uint8_t *buf;

  const char *raw = tu_subdir(root, "idx_raw");
  write_idx_set(raw, 0);
  if (LOAD_OK(RT_DATA_IDX, raw, 0.2, &a, &b)) {
    check_idx_set(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  CHECK(a.x == NULL && a.n == 0); /* free leaves an empty set */

  const char *gz = tu_subdir(root, "idx_gz");
  write_idx_set(gz, 1);
  if (LOAD_OK(RT_DATA_IDX, gz, 0.2, &a, &b)) {
    check_idx_set(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  /* .gz wins over a raw file of the same name: give the raw one other labels. */
  const char *both = tu_subdir(root, "idx_both");
  write_idx_set(both, 1);
  uint8_t other[2] = {7, 7};
  buf = idx_labels(0x801, 2, other, &n);
  tu_write(tu_path(both, "t10k-labels-idx1-ubyte"), buf, n); free(buf);
  if (LOAD_OK(RT_DATA_IDX, both, 0.2, &a, &b)) {
    check_idx_set(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  /* Labels the model cannot predict: the labels file and the first record
   * out of range, not the folder (train labels are 0 3 1 2 3). */
  {
    rt_dataset a2, b2;
    err[0] = '\0';
    CHECK(rt_data_load_classes(RT_DATA_IDX, gz, 0.2, 3, &a2, &b2, err, sizeof err) == -1);
    CHECK(a2.x == NULL && b2.x == NULL);
    tu_check_has(__FILE__, __LINE__, err,
                 "train-labels-idx1-ubyte.gz: record 1: label 3 out of range 0..2");
    if (rt_data_load_classes(RT_DATA_IDX, gz, 0.2, 4, &a2, &b2, err, sizeof err) == 0) {
      check_idx_set(&a2, &b2); rt_dataset_free(&a2); rt_dataset_free(&b2);
    } else {
      CHECK(!"classes 4 loads");
    }
  }

  /* Missing file. */
  const char *d = tu_subdir(root, "idx_missing");
  write_idx_set(d, 0);
  tu_rm_tree(tu_path(d, "t10k-labels-idx1-ubyte"));
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "t10k-labels-idx1-ubyte", "missing");
  EXPECT_FAIL(RT_DATA_IDX, tu_path(root, "no_such_dir"), 0.2, "train-images-idx3-ubyte", "missing");
  { /* --data DIR/ (and DIR//) joins with one slash */
    char slash[600], want[600];
    snprintf(slash, sizeof slash, "%s//", d);
    snprintf(want, sizeof want, "%s/t10k-labels-idx1-ubyte[.gz]: missing", d);
    EXPECT_FAIL(RT_DATA_IDX, slash, 0.2, want, NULL);
    CHECK(strstr(err, "//") == NULL);
  }

  /* Truncated raw file: the message gives both sizes. */
  d = tu_subdir(root, "idx_trunc");
  write_idx_set(d, 0);
  buf = idx_images(0x803, 2, 3, 4, 1, &n);
  tu_write(tu_path(d, "t10k-images-idx3-ubyte"), buf, 30);
  {
    char want[600];
    snprintf(want, sizeof want,
             "%s: the header claims 2 images of 3x4 (40 bytes with the header), but the file "
             "holds 30 bytes",
             tu_path(d, "t10k-images-idx3-ubyte"));
    EXPECT_FAIL(RT_DATA_IDX, d, 0.2, want, NULL);
  }
  /* ... inside the header, and in a gzip whose content is short. */
  tu_write(tu_path(d, "t10k-images-idx3-ubyte"), buf, 10);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "t10k-images-idx3-ubyte: truncated", "got 10");
  tu_rm_tree(tu_path(d, "t10k-images-idx3-ubyte"));
  tu_write_gz(tu_path(d, "t10k-images-idx3-ubyte.gz"), buf, 39);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2,
              "t10k-images-idx3-ubyte.gz: the header claims 2 images of 3x4 (40 bytes with the "
              "header), but the file holds 39 bytes", NULL);
  /* A header of 4x4 images over 3x3 data is not "truncated": the message
   * says what the header claims and what the file holds. */
  {
    size_t n33;
    uint8_t *b33 = idx_images(0x803, 2, 3, 3, 1, &n33);
    b33[11] = 4; b33[15] = 4; /* rows, cols */
    tu_write_gz(tu_path(d, "t10k-images-idx3-ubyte.gz"), b33, n33);
    free(b33);
    EXPECT_FAIL(RT_DATA_IDX, d, 0.2,
                "t10k-images-idx3-ubyte.gz: the header claims 2 images of 4x4 (48 bytes with "
                "the header), but the file holds 34 bytes; that is 2 images of 3x3", NULL);
    CHECK(strstr(err, "truncated") == NULL);
  }
  /* A longer file than its header says is refused too. */
  uint8_t *longer = malloc(n + 3);
  memcpy(longer, buf, n);
  memset(longer + n, 0, 3);
  tu_write_gz(tu_path(d, "t10k-images-idx3-ubyte.gz"), longer, n + 3);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "t10k-images-idx3-ubyte.gz", "longer");
  free(longer);
  free(buf);

  /* A gzip file cut in the middle of its compressed stream, and one with a
   * damaged byte: noise does not compress, so the cut really loses data. */
  d = tu_subdir(root, "idx_cutgz");
  write_idx_set(d, 1);
  buf = idx_images(0x803, 200, 3, 4, 0, &n);
  uint32_t s = 12345;
  for (size_t i = 16; i < n; i++) { s = s * 1103515245u + 12345u; buf[i] = (uint8_t)(s >> 16); }
  tu_write_gz(tu_path(d, "train-images-idx3-ubyte.gz"), buf, n);
  free(buf);
  uint8_t lab200[200] = {0};
  buf = idx_labels(0x801, 200, lab200, &n);
  tu_write_gz(tu_path(d, "train-labels-idx1-ubyte.gz"), buf, n);
  free(buf);
  if (LOAD_OK(RT_DATA_IDX, d, 0.2, &a, &b)) { /* intact, it loads */
    CHECK(a.n == 200 && a.classes == 3); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  size_t gzlen;
  uint8_t *gzb = tu_read(tu_path(d, "train-images-idx3-ubyte.gz"), &gzlen);
  tu_write(tu_path(d, "train-images-idx3-ubyte.gz"), gzb, gzlen / 2);
  /* A cut stream is a gzip error, in zlib's words, not a short IDX file. */
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "train-images-idx3-ubyte.gz: gzip error: unexpected end of file",
              NULL);
  gzb[gzlen / 2] ^= 0x55;
  gzb[gzlen - 6] ^= 0x55; /* and in the stored CRC, in case the first flip decodes */
  tu_write(tu_path(d, "train-images-idx3-ubyte.gz"), gzb, gzlen);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "train-images-idx3-ubyte.gz: gzip error: ", NULL);
  { /* zlib's message comes without its own copy of the path */
    const char *first = strstr(err, "train-images-idx3-ubyte.gz");
    CHECK(first && strstr(first + 1, "train-images-idx3-ubyte.gz") == NULL);
  }
  free(gzb);

  /* Wrong magic, on images and on labels. */
  d = tu_subdir(root, "idx_magic");
  write_idx_set(d, 0);
  buf = idx_images(0x801, 5, 3, 4, 0, &n);
  tu_write(tu_path(d, "train-images-idx3-ubyte"), buf, n); free(buf);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "train-images-idx3-ubyte: wrong magic 0x00000801",
              "expected 0x00000803");
  write_idx_set(d, 0);
  buf = idx_images(0x803, 2, 3, 4, 1, &n);
  tu_write(tu_path(d, "t10k-labels-idx1-ubyte"), buf, n); free(buf);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "t10k-labels-idx1-ubyte: wrong magic 0x00000803",
              "expected 0x00000801");

  /* Count mismatch between images and labels. */
  write_idx_set(d, 0);
  buf = idx_labels(0x801, 4, train_lab, &n);
  tu_write(tu_path(d, "train-labels-idx1-ubyte"), buf, n); free(buf);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "train-labels-idx1-ubyte: 4 labels", "holds 5 images");

  /* Train and test of different image sizes. */
  write_idx_set(d, 0);
  buf = idx_images(0x803, 2, 4, 3, 1, &n);
  tu_write(tu_path(d, "t10k-images-idx3-ubyte"), buf, n); free(buf);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "test images are 4x3, training images 3x4", NULL);

  /* An empty set is an error, not a division by zero later. */
  write_idx_set(d, 0);
  buf = idx_images(0x803, 0, 3, 4, 0, &n);
  tu_write(tu_path(d, "train-images-idx3-ubyte"), buf, n); free(buf);
  EXPECT_FAIL(RT_DATA_IDX, d, 0.2, "train-images-idx3-ubyte", "implausible");
}

/* ---- CIFAR-10 ---- */

enum { CREC = 3073 };
static const int cifar_counts[5] = {2, 1, 3, 1, 2};

static uint8_t cifar_px(int r, int k) { return (uint8_t)(r * 13 + k * 7 + 1); }

/* Record r (numbered across all files) gets label r % 10. */
static void write_cifar(const char *dir) {
  int r = 0;
  for (int f = 0; f < 6; f++) {
    int cnt = f < 5 ? cifar_counts[f] : 2;
    uint8_t *b = malloc((size_t)cnt * CREC);
    for (int i = 0; i < cnt; i++, r++) {
      b[(size_t)i * CREC] = (uint8_t)(r % 10);
      for (int k = 0; k < 3072; k++) b[(size_t)i * CREC + 1 + k] = cifar_px(r, k);
    }
    char name[64];
    if (f < 5) snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
    else snprintf(name, sizeof name, "test_batch.bin");
    tu_write(tu_path(dir, name), b, (size_t)cnt * CREC);
    free(b);
  }
}

static void check_cifar(const rt_dataset *a, const rt_dataset *b) {
  CHECK(a->n == 9 && a->c == 3 && a->h == 32 && a->w == 32 && a->classes == 10);
  CHECK(b->n == 2 && b->c == 3 && b->h == 32 && b->w == 32 && b->classes == 10);
  CHECK(a->px && !a->x && b->px && !b->x); /* the records' bytes, kept */
  int bad = 0;
  for (int r = 0; r < 11; r++) {
    const rt_dataset *d = r < 9 ? a : b;
    int i = r < 9 ? r : r - 9;
    bad += d->y[i] != r % 10;
    for (int k = 0; k < 3072; k++)
      bad += !near(rt_data_pixel(d, (size_t)i * 3072 + k), cifar_px(r, k) / 255.0);
  }
  CHECK(bad == 0);
  /* Channel-planar: pixel (ch 1, row 2, col 5) is byte 1 + 1024 + 2*32 + 5. */
  CHECK(near(rt_data_pixel(a, 1024 + 2 * 32 + 5), cifar_px(0, 1024 + 69) / 255.0));
}

static void test_cifar(const char *root) {
  rt_dataset a, b;
  const char *d = tu_subdir(root, "cifar");
  write_cifar(d);
  if (LOAD_OK(RT_DATA_CIFAR10, d, 0.2, &a, &b)) {
    check_cifar(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  /* The folder holding the unpacked archive works too. */
  const char *up = tu_subdir(root, "cifar_up");
  const char *sub = tu_subdir(up, "cifar-10-batches-bin");
  write_cifar(sub);
  if (LOAD_OK(RT_DATA_CIFAR10, up, 0.2, &a, &b)) {
    check_cifar(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  tu_rm_tree(tu_path(sub, "data_batch_3.bin"));
  EXPECT_FAIL(RT_DATA_CIFAR10, up, 0.2, "cifar-10-batches-bin/data_batch_3.bin", "missing");
  write_cifar(sub);
  tu_rm_tree(tu_path(sub, "test_batch.bin"));
  EXPECT_FAIL(RT_DATA_CIFAR10, up, 0.2, "test_batch.bin", "missing");

  /* A size that is not a whole number of records. */
  write_cifar(d);
  size_t n;
  uint8_t *buf = tu_read(tu_path(d, "data_batch_2.bin"), &n);
  buf = realloc(buf, n + 1);
  buf[n] = 0;
  tu_write(tu_path(d, "data_batch_2.bin"), buf, n + 1);
  EXPECT_FAIL(RT_DATA_CIFAR10, d, 0.2, "data_batch_2.bin: size 3074 bytes", "multiple of 3073");
  tu_write(tu_path(d, "data_batch_2.bin"), buf, 3000);
  EXPECT_FAIL(RT_DATA_CIFAR10, d, 0.2, "data_batch_2.bin: size 3000 bytes", "multiple of 3073");
  tu_write(tu_path(d, "data_batch_2.bin"), buf, 0);
  EXPECT_FAIL(RT_DATA_CIFAR10, d, 0.2, "data_batch_2.bin: size 0 bytes", NULL);
  buf[0] = 10;
  tu_write(tu_path(d, "data_batch_2.bin"), buf, n);
  EXPECT_FAIL(RT_DATA_CIFAR10, d, 0.2, "data_batch_2.bin: record 0: label 10 out of range", NULL);
  free(buf);
}

/* ---- STL-10 ---- */

enum { SIDE = 96, PLANE = SIDE * SIDE, SPX = 3 * PLANE };

static uint8_t stl_px(int img, int ch, int row, int col) {
  return (uint8_t)(img * 101 + ch * 31 + row * 7 + col * 3);
}

/* The official layout: column-major within each channel plane. */
static void write_stl_x(const char *path, int n, int first) {
  uint8_t *b = malloc((size_t)n * SPX);
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < 3; ch++)
      for (int row = 0; row < SIDE; row++)
        for (int col = 0; col < SIDE; col++)
          b[(size_t)i * SPX + ch * PLANE + col * SIDE + row] = stl_px(first + i, ch, row, col);
  tu_write(path, b, (size_t)n * SPX);
  free(b);
}

static void write_stl(const char *dir) {
  const uint8_t ytr[2] = {1, 10}, yte[1] = {5};
  write_stl_x(tu_path(dir, "train_X.bin"), 2, 0);
  tu_write(tu_path(dir, "train_y.bin"), ytr, 2);
  write_stl_x(tu_path(dir, "test_X.bin"), 1, 2);
  tu_write(tu_path(dir, "test_y.bin"), yte, 1);
}

static void check_stl(const rt_dataset *a, const rt_dataset *b) {
  CHECK(a->n == 2 && a->c == 3 && a->h == 96 && a->w == 96 && a->classes == 10);
  CHECK(b->n == 1 && b->c == 3 && b->h == 96 && b->w == 96 && b->classes == 10);
  CHECK(a->y[0] == 0 && a->y[1] == 9 && b->y[0] == 4);
  int bad = 0;
  for (int img = 0; img < 3; img++) {
    const rt_dataset *d = img < 2 ? a : b;
    int i = img < 2 ? img : 0;
    for (int ch = 0; ch < 3; ch++)
      for (int row = 0; row < SIDE; row++)
        for (int col = 0; col < SIDE; col++)
          bad += !near(d->x[(size_t)i * SPX + ch * PLANE + row * SIDE + col],
                       stl_px(img, ch, row, col) / 255.0);
  }
  CHECK(bad == 0);
  /* Row-major out: (row 0, col 1) is file byte 96 of the plane, not byte 1. */
  CHECK(near(a->x[1], stl_px(0, 0, 0, 1) / 255.0) && stl_px(0, 0, 0, 1) != stl_px(0, 0, 1, 0));
}

static void test_stl(const char *root) {
  rt_dataset a, b;
  const char *d = tu_subdir(root, "stl");
  write_stl(d);
  if (LOAD_OK(RT_DATA_STL10, d, 0.2, &a, &b)) {
    check_stl(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  const char *up = tu_subdir(root, "stl_up");
  const char *sub = tu_subdir(up, "stl10_binary");
  write_stl(sub);
  if (LOAD_OK(RT_DATA_STL10, up, 0.2, &a, &b)) {
    check_stl(&a, &b); rt_dataset_free(&a); rt_dataset_free(&b);
  }

  tu_rm_tree(tu_path(d, "test_y.bin"));
  EXPECT_FAIL(RT_DATA_STL10, d, 0.2, "test_y.bin", "missing");
  write_stl(d);
  const uint8_t y0[2] = {0, 3}, y11[2] = {3, 11}, y3[3] = {1, 2, 3};
  tu_write(tu_path(d, "train_y.bin"), y0, 2);
  EXPECT_FAIL(RT_DATA_STL10, d, 0.2, "train_y.bin: record 0: label 0 out of range 1..10", NULL);
  tu_write(tu_path(d, "train_y.bin"), y11, 2);
  EXPECT_FAIL(RT_DATA_STL10, d, 0.2, "train_y.bin: record 1: label 11 out of range 1..10", NULL);
  tu_write(tu_path(d, "train_y.bin"), y3, 3);
  EXPECT_FAIL(RT_DATA_STL10, d, 0.2, "train_y.bin: 3 labels", "holds 2 images");
  write_stl(d);
  size_t n;
  uint8_t *buf = tu_read(tu_path(d, "test_X.bin"), &n);
  tu_write(tu_path(d, "test_X.bin"), buf, n - 1);
  free(buf);
  EXPECT_FAIL(RT_DATA_STL10, d, 0.2, "test_X.bin: size 27647 bytes", "multiple of 27648");
}

/* ---- digits CSV ---- */

static int dig_px(int row, int k) { return (row + k) % 17; }

/* Rows of the synthetic set: pixel k of row i is (i + k) % 17, label i % 10. */
static char *digits_text(int rows, const char *eol) {
  char *t = malloc((size_t)rows * 300 + 1), *p = t;
  for (int i = 0; i < rows; i++) {
    for (int k = 0; k < 64; k++) p += sprintf(p, "%d,", dig_px(i, k));
    p += sprintf(p, "%d%s", i % 10, eol);
  }
  return t;
}

static void check_digits(const rt_dataset *a, const rt_dataset *b, int ntrain, int ntest) {
  CHECK(a->n == ntrain && a->c == 1 && a->h == 8 && a->w == 8 && a->classes == 10);
  CHECK(b->n == ntest && b->c == 1 && b->h == 8 && b->w == 8 && b->classes == 10);
  int bad = 0;
  for (int r = 0; r < ntrain + ntest; r++) {
    const rt_dataset *d = r < ntrain ? a : b;
    int i = r < ntrain ? r : r - ntrain;
    bad += d->y[i] != r % 10;
    for (int k = 0; k < 64; k++) bad += d->x[i * 64 + k] != (float)dig_px(r, k) / 16.0f;
  }
  CHECK(bad == 0);
}

static void test_digits(const char *root) {
  rt_dataset a, b;
  char *t = digits_text(10, "\n");
  const char *raw = tu_path(root, "digits.csv");
  tu_write(raw, t, strlen(t));
  if (LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.25, &a, &b)) { /* floor(2.5) = 2 */
    check_digits(&a, &b, 8, 2); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  if (LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.01, &a, &b)) { /* at least one test row */
    check_digits(&a, &b, 9, 1); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  if (LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.0, &a, &b)) {
    check_digits(&a, &b, 9, 1); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 1.0, "digits.csv: test split 1 must be in [0, 1)", NULL);
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, NAN, "must be in [0, 1)", NULL);

  const char *gz = tu_path(root, "digits.csv.gz");
  tu_write_gz(gz, t, strlen(t));
  if (LOAD_OK(RT_DATA_DIGITS_CSV, gz, 0.5, &a, &b)) {
    check_digits(&a, &b, 5, 5); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  free(t);

  /* CRLF line ends and a trailing blank line are fine. */
  t = digits_text(4, "\r\n");
  size_t len = strlen(t);
  t = realloc(t, len + 3);
  strcpy(t + len, "\r\n");
  tu_write(raw, t, strlen(t));
  if (LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.25, &a, &b)) {
    check_digits(&a, &b, 3, 1); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  free(t);

  /* Bad rows: the message carries the line number. Row 4 loses a field. */
  t = digits_text(6, "\n");
  char *line4 = t;
  for (int i = 0; i < 3; i++) line4 = strchr(line4, '\n') + 1;
  char *comma = strchr(line4, ',');
  memmove(comma - 1, comma + 1, strlen(comma + 1) + 1); /* drops "v," of field 1 */
  tu_write(raw, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:4: expected 65 comma-separated integers",
              "got 64");
  tu_write_gz(gz, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, gz, 0.2, "digits.csv.gz:4: expected 65", NULL);
  free(t);

  t = digits_text(3, "\n");
  char *l2 = strchr(t, '\n') + 1;
  { /* field 1 of line 2 was "1": make it "17" */
    char *u = malloc(strlen(t) + 2);
    sprintf(u, "%.*s17%s", (int)(l2 - t), t, l2 + 1);
    tu_write(raw, u, strlen(u));
    free(u);
  }
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:2: field 1", "'17' out of range 0..16");
  free(t);

  t = digits_text(3, "\n");
  l2 = strchr(t, '\n') + 1;
  l2[0] = 'x';
  tu_write(raw, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:2: field 1: expected an integer", "'x'");
  free(t);

  t = digits_text(3, "\n");
  char *last = strrchr(t, ',') + 1; /* label of line 3, "2\n" */
  strcpy(last, "10\n");
  tu_write(raw, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:3: label '10' out of range 0..9", NULL);
  free(t);

  /* Values are quoted as they are in the file, however long. */
  t = digits_text(3, "\n");
  last = strrchr(t, ',') + 1;
  strcpy(last, "12345\n");
  tu_write(raw, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:3: label '12345' out of range 0..9", NULL);
  free(t);
  t = digits_text(3, "\n");
  {
    l2 = strchr(t, '\n') + 1;
    char *u = malloc(strlen(t) + 32);
    sprintf(u, "%.*s99999999999999999999%s", (int)(l2 - t), t, l2 + 1);
    tu_write(raw, u, strlen(u));
    free(u);
  }
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2,
              "digits.csv:2: field 1: pixel value '99999999999999999999' out of range", NULL);
  free(t);
  /* A NUL is named, and the message stays printable. */
  t = digits_text(3, "\n");
  {
    l2 = strchr(t, '\n') + 1; /* line 2 starts "1,2,...": make field 2 "2\0" */
    char *f2 = strchr(l2, ',') + 1;
    size_t tl = strlen(t);
    char *u = malloc(tl + 2);
    size_t at = (size_t)(f2 - t) + 1;
    memcpy(u, t, at);
    u[at] = '\0';
    memcpy(u + at + 1, t + at, tl - at);
    tu_write(raw, u, tl + 1);
    free(u);
  }
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv:2: field 2: a NUL byte in '2\\x00'",
              NULL);
  free(t);
  /* Labels the model cannot predict, with fewer than 10 classes. */
  t = digits_text(10, "\n");
  tu_write(raw, t, strlen(t));
  {
    rt_dataset a2, b2;
    CHECK(rt_data_load_classes(RT_DATA_DIGITS_CSV, raw, 0.2, 5, &a2, &b2, err, sizeof err) == -1);
    tu_check_has(__FILE__, __LINE__, err, "digits.csv:6: label '5' out of range 0..4");
  }
  free(t);

  t = digits_text(1, "\n");
  tu_write(raw, t, strlen(t));
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, raw, 0.2, "digits.csv: 1 rows", NULL);
  free(t);
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, tu_path(root, "none.csv"), 0.2, "none.csv", "missing");

  /* Lines are read one at a time: 3,000 rows (about 600 KB, lines across
   * the reader's refills), the last without its line end, raw and gzip. */
  t = digits_text(3000, "\n");
  t[strlen(t) - 1] = '\0';
  tu_write(raw, t, strlen(t));
  if (LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.1, &a, &b)) {
    check_digits(&a, &b, 2700, 300); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  tu_write_gz(gz, t, strlen(t));
  if (LOAD_OK(RT_DATA_DIGITS_CSV, gz, 0.1, &a, &b)) {
    check_digits(&a, &b, 2700, 300); rt_dataset_free(&a); rt_dataset_free(&b);
  }
  free(t);
  /* A gzip stream that inflates to 64 MB without a line end (it would have
   * been read whole, then parsed) is refused at its first line. */
  {
    size_t big = (size_t)64 << 20;
    char *u = malloc(big);
    memset(u, '1', big);
    char *two = digits_text(2, "\n");
    memcpy(u, two, strlen(two)); /* two good rows first */
    free(two);
    tu_write_gz(gz, u, big);
    free(u);
  }
  EXPECT_FAIL(RT_DATA_DIGITS_CSV, gz, 0.2, "digits.csv.gz:3: line longer than 65536 bytes",
              "65 comma-separated integers");
}

/* ---- truncate, norm, batch ---- */

static void test_truncate(const char *root) {
  rt_dataset a, b;
  char *t = digits_text(10, "\n");
  const char *raw = tu_path(root, "digits_trunc.csv");
  tu_write(raw, t, strlen(t));
  free(t);
  if (!LOAD_OK(RT_DATA_DIGITS_CSV, raw, 0.2, &a, &b)) return;
  rt_dataset_truncate(&a, 20); /* more than there are: unchanged */
  CHECK(a.n == 8);
  rt_dataset_truncate(&a, 3);
  CHECK(a.n == 3 && a.c == 1 && a.h == 8 && a.w == 8);
  int bad = 0;
  for (int i = 0; i < 3; i++) {
    bad += a.y[i] != i;
    for (int k = 0; k < 64; k++) bad += a.x[i * 64 + k] != (float)dig_px(i, k) / 16.0f;
  }
  CHECK(bad == 0);
  rt_dataset_free(&a); rt_dataset_free(&b);
}

/* A hand-made set: n images of c x h x w, pixel value given by f. */
static rt_dataset make_set(int n, int c, int h, int w, float (*f)(int, int)) {
  rt_dataset d = {.n = n, .c = c, .h = h, .w = w, .classes = 10,
                  .x = malloc(sizeof(float) * n * c * h * w), .y = malloc((size_t)n * sizeof(ir_label))};
  for (int i = 0; i < n; i++) {
    d.y[i] = (ir_label)(i % 10);
    for (int k = 0; k < c * h * w; k++) d.x[i * c * h * w + k] = f(i, k);
  }
  return d;
}

static float norm_px(int i, int k) {
  /* channel 0: 0 and 1 alternating; channel 1: constant 0.25; channel 2: i/4 */
  int ch = k / 4;
  return ch == 0 ? (float)(k % 2) : ch == 1 ? 0.25f : (float)i / 4.0f;
}

static void test_norm(void) {
  rt_dataset d = make_set(4, 3, 2, 2, norm_px);
  rt_norm nm;
  rt_data_norm(&d, &nm);
  CHECK(nm.c == 3);
  CHECK(near(nm.mean[0], 0.5) && near(nm.std[0], 0.5));
  /* A constant channel is centred but not scaled (std 0 would be 1/0). */
  CHECK(near(nm.mean[1], 0.25) && nm.std[1] == 1.0f);
  /* i/4 for i = 0..3: mean 0.375, variance (0.375^2 + 0.125^2) * 2 / 4 */
  CHECK(near(nm.mean[2], 0.375) && near(nm.std[2], sqrt(0.078125)));
  CHECK(nm.mean[3] == 0.0f && nm.std[3] == 1.0f);
  rt_dataset_free(&d);
}

/* Pixel (r, c) of a 3x4 single-channel image holds (4r + c + 1) / 16. */
static float grid_px(int i, int k) { return (float)(k + 1 + 16 * (i % 2)) / 16.0f; }

static int same_rng(const rt_rng *a, const rt_rng *b) { return !memcmp(a->s, b->s, sizeof a->s); }

static void test_batch(void) {
  rt_dataset d = make_set(2, 1, 3, 4, grid_px);
  rt_norm nm = {1, {0.5f}, {0.25f}};
  float out[8 * 12];
  ir_label lab[8];
  int idx[8] = {1, 0, 1, 1, 0, 0, 1, 0};
  rt_rng r, r0;

  /* Neither crop nor flip: plain normalisation, labels gathered, no draws. */
  rt_rng_seed(&r, 1);
  r0 = r;
  rt_data_batch(&d, idx, 8, &nm, 0, 0, &r, out, lab);
  CHECK(same_rng(&r, &r0));
  int bad = 0;
  for (int i = 0; i < 8; i++) {
    bad += lab[i] != d.y[idx[i]];
    for (int k = 0; k < 12; k++) bad += out[i * 12 + k] != (d.x[idx[i] * 12 + k] - 0.5f) / 0.25f;
  }
  CHECK(bad == 0);

  /* Exact pixels for chosen draws. Find seeds whose first draws give them,
   * then compare with images worked out by hand (values in sixteenths,
   * normalised: v/16 -> v/4 - 2; P = the pad, raw 0 -> -2). */
  const float P = -2.0f;
  /* crop 1, ox 0, oy 2, flip: out(y, x) = in(y + 1, 2 - x). */
  const float want_a[12] = {7 / 4.f - 2, 6 / 4.f - 2, 5 / 4.f - 2, P,
                            11 / 4.f - 2, 10 / 4.f - 2, 9 / 4.f - 2, P,
                            P, P, P, P};
  /* crop 1, ox 2, oy 0, no flip: out(y, x) = in(y - 1, x + 1). */
  const float want_b[12] = {P, P, P, P,
                            2 / 4.f - 2, 3 / 4.f - 2, 4 / 4.f - 2, P,
                            6 / 4.f - 2, 7 / 4.f - 2, 8 / 4.f - 2, P};
  const struct { int ox, oy, fl; const float *want; } cases[2] = {{0, 2, 1, want_a},
                                                                  {2, 0, 0, want_b}};
  for (int c = 0; c < 2; c++) {
    int found = 0;
    for (uint64_t seed = 0; seed < 10000 && !found; seed++) {
      rt_rng_seed(&r, seed);
      r0 = r;
      int ox = (int)rt_rng_below(&r0, 3), oy = (int)rt_rng_below(&r0, 3);
      int fl = (int)rt_rng_below(&r0, 2);
      if (ox != cases[c].ox || oy != cases[c].oy || fl != cases[c].fl) continue;
      found = 1;
      int zero = 0;
      rt_data_batch(&d, &zero, 1, &nm, 1, 1, &r, out, lab);
      CHECK(same_rng(&r, &r0)); /* exactly three draws, in that order */
      CHECK(memcmp(out, cases[c].want, sizeof cases[c].want) == 0);
      if (memcmp(out, cases[c].want, sizeof cases[c].want) != 0)
        for (int k = 0; k < 12; k++)
          fprintf(stderr, "  [%d] %g want %g\n", k, out[k], cases[c].want[k]);
    }
    CHECK(found);
  }

  /* Flip alone: one draw per image; mirrored exactly when it says 1. */
  rt_rng_seed(&r, 99);
  r0 = r;
  rt_data_batch(&d, idx, 8, &nm, 0, 1, &r, out, lab);
  int flips = 0;
  bad = 0;
  for (int i = 0; i < 8; i++) {
    int fl = (int)rt_rng_below(&r0, 2);
    flips += fl;
    for (int y = 0; y < 3; y++)
      for (int x = 0; x < 4; x++) {
        float v = (d.x[idx[i] * 12 + y * 4 + (fl ? 3 - x : x)] - 0.5f) / 0.25f;
        bad += out[i * 12 + y * 4 + x] != v;
      }
  }
  CHECK(bad == 0 && same_rng(&r, &r0));
  CHECK(flips > 0 && flips < 8); /* seed 99 draws both kinds */

  /* Crop alone: two draws per image, shift by (ox - 1, oy - 1). */
  rt_rng_seed(&r, 5);
  r0 = r;
  rt_data_batch(&d, idx, 8, &nm, 1, 0, &r, out, lab);
  bad = 0;
  int shifted = 0;
  for (int i = 0; i < 8; i++) {
    int ox = (int)rt_rng_below(&r0, 3), oy = (int)rt_rng_below(&r0, 3);
    shifted += ox != 1 || oy != 1;
    for (int y = 0; y < 3; y++)
      for (int x = 0; x < 4; x++) {
        int sy = y + oy - 1, sx = x + ox - 1;
        float v = sy >= 0 && sy < 3 && sx >= 0 && sx < 4
                      ? (d.x[idx[i] * 12 + sy * 4 + sx] - 0.5f) / 0.25f : P;
        bad += out[i * 12 + y * 4 + x] != v;
      }
  }
  CHECK(bad == 0 && same_rng(&r, &r0) && shifted > 0);

  /* Same state, same batch; another state, another batch. */
  float out2[8 * 12];
  rt_rng_seed(&r, 42);
  rt_data_batch(&d, idx, 8, &nm, 2, 1, &r, out, lab);
  rt_rng_seed(&r0, 42);
  rt_data_batch(&d, idx, 8, &nm, 2, 1, &r0, out2, lab);
  CHECK(memcmp(out, out2, sizeof out) == 0 && same_rng(&r, &r0));
  rt_rng_seed(&r0, 43);
  rt_data_batch(&d, idx, 8, &nm, 2, 1, &r0, out2, lab);
  CHECK(memcmp(out, out2, sizeof out) != 0);
  rt_dataset_free(&d);
}

/* Three channels: each uses its own mean and std, and its own pad value. */
static float rgb_px(int i, int k) { (void)i; return (float)(k / 4) * 0.25f + 0.125f; }

static void test_batch_channels(void) {
  rt_dataset d = make_set(1, 3, 2, 2, rgb_px);
  rt_norm nm = {3, {0.5f, 0.25f, 0.0f}, {0.5f, 0.25f, 2.0f}};
  float out[12];
  ir_label lab;
  int zero = 0;
  rt_rng r;
  int found = 0;
  for (uint64_t seed = 0; seed < 1000 && !found; seed++) {
    rt_rng_seed(&r, seed);
    rt_rng c = r;
    if (rt_rng_below(&c, 3) != 0 || rt_rng_below(&c, 3) != 0) continue;
    /* ox = oy = 0 with crop 1: row 0 and column 0 are padding. */
    rt_data_batch(&d, &zero, 1, &nm, 1, 0, &r, out, &lab);
    for (int ch = 0; ch < 3; ch++) {
      float pad = (0.0f - nm.mean[ch]) / nm.std[ch];
      float v = ((float)ch * 0.25f + 0.125f - nm.mean[ch]) / nm.std[ch];
      CHECK(out[ch * 4 + 0] == pad && out[ch * 4 + 1] == pad && out[ch * 4 + 2] == pad);
      CHECK(out[ch * 4 + 3] == v);
    }
    CHECK(lab == 0);
    found = 1;
  }
  CHECK(found);
  rt_dataset_free(&d);
}

int main(void) {
  const char *root = tu_mkdtemp("ilnas_data");
  test_idx(root);
  test_cifar(root);
  test_stl(root);
  test_digits(root);
  test_truncate(root);
  test_norm();
  test_batch();
  test_batch_channels();
  tu_rm_tree(root);
  if (tu_failures) {
    fprintf(stderr, "%d check(s) failed\n", tu_failures);
    return 1;
  }
  printf("data loaders: all checks passed\n");
  return 0;
}
