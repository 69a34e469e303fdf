/* Image folders and downsampled ImageNet, on fixtures written here: JPEG
 * through libjpeg-turbo's encoder, PNG through libpng's, npz by hand.
 *
 *   test_data_folder              the checks below
 *   test_data_folder --make DIR   a small 3-class folder to train on (e2e)
 *   test_data_folder --pil DIR    decodes the images listed in DIR and compares
 *                                 them with PIL's decodes (folder_pil.py)
 */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zlib.h>

#include "runtime/data.h"
#include "runtime/imgdec.h"
#include "testutil.h"

/* ---- fixture writers ---- */

/* A smooth pattern per class, so that crops and resizes stay near it. */
static uint8_t pattern(int cls, int x, int y, int ch, int w, int h) {
  int v = (ch == cls % 3 ? 160 : 40) + (60 * x) / w + (40 * y) / h + 7 * cls;
  return (uint8_t)(v > 255 ? 255 : v);
}

static uint8_t *make_px(int cls, int w, int h, int c) {
  uint8_t *p = malloc((size_t)w * h * c);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++) p[((size_t)y * w + x) * c + ch] = pattern(cls, x, y, ch, w, h);
  return p;
}

static void write_jpeg(const char *path, const uint8_t *px, int w, int h, int c) {
  tjhandle tj = tjInitCompress();
  unsigned char *out = NULL;
  unsigned long n = 0;
  if (!tj || tjCompress2(tj, px, w, w * c, h, c == 1 ? TJPF_GRAY : TJPF_RGB, &out, &n,
                         c == 1 ? TJSAMP_GRAY : TJSAMP_420, 92, 0)) {
    fprintf(stderr, "cannot encode %s\n", path);
    exit(1);
  }
  tu_write(path, out, n);
  tjFree(out);
  tjDestroy(tj);
}

static void write_png(const char *path, const uint8_t *px, int w, int h, int c) {
  FILE *f = fopen(path, "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (!f || setjmp(png_jmpbuf(png))) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
  png_init_io(png, f);
  int type = c == 1 ? PNG_COLOR_TYPE_GRAY : c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, px + (size_t)y * w * c);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

/* One class folder: n images, JPEG and PNG, gray and RGB, sizes varying. */
static void write_class(const char *split, const char *name, int cls, int n) {
  const char *dir = tu_subdir(split, name);
  for (int i = 0; i < n; i++) {
    int w = 18 + 7 * ((i + cls) % 5), h = 16 + 5 * ((i * 3 + cls) % 4), c = i % 4 == 3 ? 1 : 3;
    uint8_t *px = make_px(cls, w, h, c);
    char fname[64];
    snprintf(fname, sizeof fname, "img%02d.%s", i, i % 2 ? "png" : "jpg");
    if (i % 2) write_png(tu_path(dir, fname), px, w, h, c);
    else write_jpeg(tu_path(dir, fname), px, w, h, c);
    free(px);
  }
}

/* root/train and root/val with the classes made in an unsorted order. */
static void make_folder(const char *root, int ntrain, int nval) {
  static const char *const names[] = {"zebra", "Apple", "mango"}; /* sorted: Apple mango zebra */
  const char *tr = tu_subdir(root, "train"), *va = tu_subdir(root, "val");
  for (int k = 0; k < 3; k++) {
    int cls = k == 0 ? 2 : k == 1 ? 0 : 1; /* the label it will get */
    write_class(tr, names[k], cls, ntrain);
    write_class(va, names[k], cls, nval);
  }
}

static rt_data_opts folder_opts(const char *path, int c, int skip_bad, FILE *log) {
  return (rt_data_opts){.fmt = RT_DATA_FOLDER, .path = path, .c = c, .h = 12, .w = 12,
                        .skip_bad = skip_bad, .threads = 2, .log = log};
}

/* ---- the checks ---- */

static void test_labels(const char *root) {
  const char *dir = tu_subdir(root, "labels");
  make_folder(dir, 5, 2);
  tu_write(tu_path(dir, "train/Apple/README.txt"), "notes", 5);
  rt_dataset a, b;
  char err[2048];
  rt_data_opts o = folder_opts(dir, 3, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0);
  if (tu_failures) { fprintf(stderr, "%s\n", err); return; }
  CHECK(a.n == 15 && b.n == 6 && a.classes == 3 && b.classes == 3);
  CHECK(a.c == 3 && a.h == 12 && a.w == 12 && a.src && !a.x);
  CHECK(strcmp(rt_data_class_name(&a, 0), "Apple") == 0); /* byte order, as Python sorts */
  CHECK(strcmp(rt_data_class_name(&a, 1), "mango") == 0);
  CHECK(strcmp(rt_data_class_name(&a, 2), "zebra") == 0);
  CHECK(rt_data_class_name(&a, 3) == NULL);
  for (int i = 0; i < a.n; i++) CHECK(a.y[i] == i / 5); /* class by class, files sorted */
  for (int i = 0; i < b.n; i++) CHECK(b.y[i] == i / 2);

  /* the same batches on 0 and 3 loader threads, training crop and flip */
  rt_norm nm;
  rt_data_norm(&a, &nm);
  CHECK(nm.c == 3 && nm.std[0] > 0.01f && nm.mean[0] > 0.1f && nm.mean[0] < 0.9f);
  int order[15];
  for (int i = 0; i < 15; i++) order[i] = (i * 7) % 15;
  float *got[2];
  ir_label lab[2][15];
  size_t img = 3 * 12 * 12;
  for (int t = 0; t < 2; t++) {
    got[t] = malloc(15 * img * sizeof(float));
    rt_stream *s = rt_stream_new(&a, &nm, 4, 1, 1, t ? 3 : 0, 2, err, sizeof err);
    CHECK(s != NULL);
    if (!s) return;
    rt_rng rng;
    rt_rng_seed(&rng, 11);
    for (int pass = 0; pass < 2; pass++) { /* a second pass reuses the stream */
      rt_stream_epoch(s, order, 15, &rng);
      const float *x;
      const ir_label *y;
      int n, at = 0, rc;
      while ((rc = rt_stream_next(s, &x, &y, &n, err, sizeof err)) == 0) {
        memcpy(got[t] + at * img, x, (size_t)n * img * sizeof(float));
        memcpy(lab[t] + at, y, (size_t)n * sizeof *y);
        at += n;
      }
      CHECK(rc == 1 && at == 15);
    }
    rt_stream_free(s);
  }
  CHECK(memcmp(got[0], got[1], 15 * img * sizeof(float)) == 0);
  CHECK(memcmp(lab[0], lab[1], sizeof lab[0]) == 0);
  for (int i = 0; i < 15; i++) CHECK(lab[0][i] == a.y[order[i]]);
  /* normalised values of images in [0, 1] stay within a few std of 0 */
  float lo = 1e9f, hi = -1e9f;
  for (size_t k = 0; k < 15 * img; k++) lo = fminf(lo, got[0][k]), hi = fmaxf(hi, got[0][k]);
  CHECK(lo > -5 && hi < 5 && hi - lo > 0.5f);
  free(got[0]), free(got[1]);

  /* --train-limit keeps every class */
  rt_dataset_truncate(&a, 6);
  CHECK(a.n == 6 && a.y[0] == 0 && a.y[2] == 1 && a.y[5] == 2);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* one channel: every image as PIL's luma */
  o = folder_opts(dir, 1, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0 && a.c == 1);
  rt_dataset_free(&a), rt_dataset_free(&b);
}

/* PNG is lossless: decoding gives back the pixels exactly, converted as
 * PIL converts (gray replicated; RGB to luma; alpha dropped). */
/* A baseline JPEG's frame header (SOF0) made to say 16000x16000. */
static void claim_16000(uint8_t *jpg, size_t n) {
  for (size_t k = 0; k + 9 < n; k++)
    if (jpg[k] == 0xff && jpg[k + 1] == 0xc0) {
      jpg[k + 5] = jpg[k + 7] = 16000 >> 8, jpg[k + 6] = jpg[k + 8] = 16000 & 0xff;
      return;
    }
}

static void test_decode(const char *root) {
  rt_imgdec *d = rt_imgdec_new();
  char why[256];
  const uint8_t *px;
  int w, h, bad = 0;
  uint8_t *rgb = make_px(1, 21, 17, 3), *gray = make_px(2, 21, 17, 1), *rgba = make_px(0, 21, 17, 4);
  write_png(tu_path(root, "rgb.png"), rgb, 21, 17, 3);
  write_png(tu_path(root, "gray.png"), gray, 21, 17, 1);
  write_png(tu_path(root, "rgba.png"), rgba, 21, 17, 4);
  size_t n;
  uint8_t *f = tu_read(tu_path(root, "rgb.png"), &n);
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0 && w == 21 && h == 17);
  for (int i = 0; i < 21 * 17 * 3; i++) bad += px[i] != rgb[i];
  CHECK(rt_img_decode(d, f, n, 1, 1, &px, &w, &h, why, sizeof why) == 0);
  for (int i = 0; i < 21 * 17; i++) {
    const uint8_t *p = rgb + 3 * i;
    bad += px[i] != (uint8_t)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
  }
  free(f);
  f = tu_read(tu_path(root, "gray.png"), &n);
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0);
  for (int i = 0; i < 21 * 17 * 3; i++) bad += px[i] != gray[i / 3];
  free(f);
  f = tu_read(tu_path(root, "rgba.png"), &n);
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0);
  for (int i = 0; i < 21 * 17 * 3; i++) bad += px[i] != rgba[(i / 3) * 4 + i % 3];
  free(f);
  CHECK(bad == 0);

  /* a JPEG at full size and at the DCT scale asked for */
  uint8_t *big = make_px(0, 80, 64, 3);
  write_jpeg(tu_path(root, "big.jpg"), big, 80, 64, 3);
  f = tu_read(tu_path(root, "big.jpg"), &n);
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0 && w == 80 && h == 64);
  int far = 0;
  for (int i = 0; i < 80 * 64 * 3; i++) far += abs(px[i] - big[i]) > 12;
  CHECK(far == 0);
  CHECK(rt_img_decode(d, f, n, 3, 0.3, &px, &w, &h, why, sizeof why) == 0 && w == 30 && h == 24);
  CHECK(rt_img_decode(d, f, n, 3, 0.5, &px, &w, &h, why, sizeof why) == 0 && w == 40 && h == 32);
  /* cut in half: refused, as PIL refuses it */
  CHECK(rt_img_decode(d, f, n / 2, 3, 1, &px, &w, &h, why, sizeof why) == -1);
  CHECK_HAS(why, "truncated JPEG");
  CHECK(rt_img_decode(d, (const uint8_t *)"GIF89a....", 10, 3, 1, &px, &w, &h, why,
                      sizeof why) == -1);
  CHECK_HAS(why, "not a JPEG or PNG");
  /* cut inside its header, then whole again on the same decoder: the
   * failed call leaves libjpeg-turbo's handle mid-header, which must not
   * reach the next file */
  CHECK(rt_img_decode(d, f, 200, 3, 1, &px, &w, &h, why, sizeof why) == -1);
  CHECK_HAS(why, "cut in its header");
  w = h = 0;
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0 && w == 80 && h == 64);
  rt_img_kind kind;
  CHECK(rt_img_probe(f, 200, 200, &kind, &w, &h, why, sizeof why) == -1);
  CHECK(rt_img_probe(f, 200, n, &kind, &w, &h, why, sizeof why) == 1); /* more, please */
  w = h = 0;
  CHECK(rt_img_probe(f, n, n, &kind, &w, &h, why, sizeof why) == 0 && w == 80 && h == 64);
  /* a header that claims more pixels than the file can hold */
  uint8_t *g = malloc(n);
  memcpy(g, f, n);
  claim_16000(g, n);
  CHECK(rt_img_decode(d, g, n, 3, 1, &px, &w, &h, why, sizeof why) == -1);
  CHECK_HAS(why, "corrupt JPEG: a 16000x16000 image cannot fit in");
  /* a file without the Huffman table its scan uses (fuzz_img made it):
   * refused after a file that had one, as a decoder of its own refuses it */
  static const uint8_t notable[] = {
    0xff, 0xd8, 0xff, 0xee, 0x00, 0x0e, 0x41, 0x64, 0x6f, 0x62, 0x65, 0x00, 0x64, 0xff, 0x75, 0x00,
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x08, 0x06, 0x06, 0x07, 0x06, 0x05, 0x08,
    0x07, 0x07, 0x07, 0x09, 0x09, 0x08, 0x0a, 0x0c, 0x14, 0x0d, 0x0c, 0x0b, 0x0b, 0x0c, 0x19, 0x12,
    0x13, 0x0f, 0x14, 0x1d, 0x1a, 0x1f, 0x1e, 0x1d, 0x1a, 0x1c, 0x1c, 0x20, 0x24, 0x2e, 0x27, 0x20,
    0x22, 0x2c, 0x23, 0x1c, 0x1c, 0x28, 0x37, 0x29, 0x2c, 0x30, 0x31, 0x34, 0x34, 0x34, 0x1f, 0x27,
    0x39, 0x3d, 0x38, 0x32, 0x3c, 0x2e, 0x33, 0x34, 0x32, 0xff, 0xdb, 0x00, 0x43, 0x01, 0x09, 0x09,
    0x09, 0x0c, 0x0b, 0x0c, 0x18, 0x0d, 0x0d, 0x18, 0x1c, 0x21, 0x21, 0x34, 0x34, 0x34, 0x34, 0x34,
    0x34, 0xd8, 0xcd, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32,
    0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x32, 0x30, 0x30, 0x30, 0x30, 0x36, 0x32, 0x33, 0x37, 0x39,
    0x37, 0x30, 0x38, 0x37, 0x38, 0x31, 0x33, 0x34, 0x36, 0x30, 0x31, 0x35, 0x30, 0x30, 0xff, 0xc2,
    0x00, 0x11, 0x08, 0x00, 0x10, 0x00, 0x18, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11,
    0x01, 0xff, 0xc4, 0x00, 0x16, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00,
    0x02, 0x10, 0x03, 0x10, 0x00, 0x00, 0x01, 0x79, 0x3c, 0xe4, 0xd3, 0xa9, 0x86, 0x8f, 0x4a, 0xd8,
    0x42, 0x92, 0x34, 0xd5, 0xff, 0xd9, 0x00, 0x00, 0xb2, 0x28, 0x9e, 0x34, 0x69, 0x98, 0x23, 0x32,
    0x82, 0x23, 0x61, 0xe6, 0x0c, 0x38, 0x73, 0xba, 0x42, 0x00, 0x2a, 0x78, 0x9e, 0x29, 0x00, 0x00,
    0x00, 0x2c, 0x4e, 0x72, 0xdb, 0xee, 0x9d, 0x0b, 0x56, 0x13, 0x44, 0x1b, 0xec, 0x77, 0x3a, 0x80,
    0xb8, 0x9b, 0x4e, 0x37, 0x5e, 0x7b, 0xc0, 0x44, 0xe2, 0xd1, 0x2e, 0x23, 0x49, 0x44, 0x41, 0x54,
    0x78, 0x9c, 0x63, 0xb8, 0xac, 0xf1, 0x45, 0x7d, 0x4e, 0x82, 0xa1, 0x18, 0x32, 0xc6, 0x89, 0xf2,
    0xee, 0xcb, 0x79, 0x8c, 0x5c, 0x6c, 0xe7, 0x77, 0xff, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf,
    0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf,
    0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf, 0xdf,
  };
  CHECK(rt_img_decode(d, f, n, 3, 1, &px, &w, &h, why, sizeof why) == 0);
  CHECK(rt_img_decode(d, notable, sizeof notable, 3, 1, &px, &w, &h, why, sizeof why) == -1);
  CHECK_HAS(why, "Huffman table 0x00 was not defined");
  free(g);
  free(f), free(big), free(rgb), free(gray), free(rgba);
  rt_imgdec_free(d);
}

static char *slurp(FILE *f) {
  long n = ftell(f);
  char *s = calloc((size_t)n + 1, 1);
  rewind(f);
  if (fread(s, 1, (size_t)n, f) != (size_t)n) s[0] = 0;
  return s;
}

static void test_bad_files(const char *root) {
  const char *dir = tu_subdir(root, "bad");
  make_folder(dir, 4, 2);
  size_t n;
  uint8_t *jpg = tu_read(tu_path(dir, "train/mango/img00.jpg"), &n);
  tu_write(tu_path(dir, "train/mango/cut.jpg"), jpg, n - n / 3); /* truncated */
  claim_16000(jpg, n); /* in a file of a few KB */
  tu_write(tu_path(dir, "train/mango/giant.jpg"), jpg, n);
  free(jpg);
  uint8_t *png = tu_read(tu_path(dir, "train/zebra/img01.png"), &n);
  tu_write(tu_path(dir, "train/zebra/cut.png"), png, n - 20); /* truncated */
  /* header and end intact, the pixel data corrupt: found when decoded */
  png[n / 2] ^= 0x55, png[n / 2 + 1] ^= 0x55;
  tu_write(tu_path(dir, "train/zebra/inner.png"), png, n);
  free(png);
  tu_write(tu_path(dir, "train/Apple/text.jpg"), "not an image\n", 13);
  tu_write(tu_path(dir, "train/Apple/empty.png"), "", 0);
  tu_write(tu_path(dir, "train/Apple/old.bmp"), "BM......", 8);

  rt_dataset a, b;
  char err[2048];
  rt_data_opts o = folder_opts(dir, 3, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "6 of 19 files are not usable images");
  CHECK_HAS(err, "/train/Apple/empty.png: empty file");
  CHECK_HAS(err, "/train/Apple/old.bmp: unsupported image format");
  CHECK_HAS(err, "/train/Apple/text.jpg: not a JPEG or PNG image");
  CHECK_HAS(err, "--skip-bad");

  FILE *log = tmpfile();
  o = folder_opts(dir, 3, 1, log);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0);
  char *text = slurp(log);
  CHECK_HAS(text, "train/mango/cut.jpg: truncated JPEG");
  CHECK_HAS(text, "train/mango/giant.jpg: corrupt JPEG: a 16000x16000 image cannot fit in");
  CHECK_HAS(text, "train/zebra/cut.png: truncated PNG");
  CHECK_HAS(text, "train/Apple/text.jpg: not a JPEG or PNG image");
  CHECK(strstr(text, "inner.png") == NULL); /* its header and end are fine */
  free(text);
  CHECK(a.n == 13); /* 12 good and inner.png */
  rt_norm nm = {.c = 3, .std = {1, 1, 1, 1}};
  /* inner.png fails when decoded: skipped and reported once, twice over */
  rt_stream *s = rt_stream_new(&a, &nm, 13, 0, 0, 2, 2, err, sizeof err);
  const float *x;
  const ir_label *y;
  int got;
  for (int pass = 0; pass < 2; pass++) {
    rt_stream_epoch(s, NULL, a.n, NULL);
    CHECK(rt_stream_next(s, &x, &y, &got, err, sizeof err) == 0 && got == 13);
  }
  rt_stream_free(s);
  text = slurp(log);
  CHECK_HAS(text, "train/zebra/inner.png: corrupt PNG");
  char *first = strstr(text, "inner.png");
  CHECK(first && !strstr(first + 9, "inner.png"));
  free(text);
  fclose(log);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* without skip bad, the stream stops at it, naming it */
  tu_rm_tree(tu_path(dir, "train/mango/cut.jpg"));
  tu_rm_tree(tu_path(dir, "train/mango/giant.jpg"));
  tu_rm_tree(tu_path(dir, "train/zebra/cut.png"));
  tu_rm_tree(tu_path(dir, "train/Apple/text.jpg"));
  tu_rm_tree(tu_path(dir, "train/Apple/empty.png"));
  tu_rm_tree(tu_path(dir, "train/Apple/old.bmp"));
  o = folder_opts(dir, 3, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0);
  s = rt_stream_new(&a, &nm, 5, 1, 1, 2, 3, err, sizeof err);
  rt_rng rng;
  rt_rng_seed(&rng, 1);
  rt_stream_epoch(s, NULL, a.n, &rng);
  int rc;
  while ((rc = rt_stream_next(s, &x, &y, &got, err, sizeof err)) == 0) continue;
  CHECK(rc == -1);
  CHECK_HAS(err, "train/zebra/inner.png: corrupt PNG");
  rt_stream_free(s);
  rt_dataset_free(&a), rt_dataset_free(&b);
}

static void test_layout(const char *root) {
  rt_dataset a, b;
  char err[2048];
  const char *dir = tu_subdir(root, "layout");
  rt_data_opts o = folder_opts(dir, 3, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "no train/ folder");
  make_folder(dir, 2, 1);
  tu_subdir(tu_path(dir, "val"), "kiwi");
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "/val/kiwi: no JPEG or PNG images");
  uint8_t *px = make_px(0, 9, 9, 3);
  write_png(tu_path(dir, "val/kiwi/one.png"), px, 9, 9, 3);
  free(px);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "class folder 'kiwi' is not in");
  o.c = 2;
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "1 or 3 input channels");
  /* test/ serves where there is no val/ */
  const char *t = tu_subdir(root, "layout_test");
  tu_subdir(t, "train");
  tu_subdir(t, "test");
  write_class(tu_path(t, "train"), "one", 0, 2);
  write_class(tu_path(t, "test"), "one", 0, 1);
  o = folder_opts(t, 3, 0, NULL);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0 && a.n == 2 && b.n == 1);
  rt_dataset_free(&a), rt_dataset_free(&b);
}

/* ---- downsampled ImageNet ---- */

static size_t npy(uint8_t *out, const char *descr, long n, long d, const void *data,
                  size_t bytes) {
  char h[128];
  int k = d ? snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld, %ld), }",
                       descr, n, d)
            : snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld,), }",
                       descr, n);
  int hl = 64 * ((10 + k + 1 + 63) / 64) - 10; /* padded to 64 with the newline */
  memcpy(out, "\x93NUMPY\x01\x00", 8);
  out[8] = (uint8_t)(hl & 255), out[9] = (uint8_t)(hl >> 8);
  memset(out + 10, ' ', (size_t)hl);
  memcpy(out + 10, h, (size_t)k);
  out[10 + hl - 1] = '\n';
  memcpy(out + 10 + hl, data, bytes);
  return 10 + (size_t)hl + bytes;
}

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff), put16(p + 2, v >> 16); }

/* A zip of members, stored (deflate 0) or deflated (1), as numpy writes;
 * with zip64, each member's sizes and offset in the central directory are
 * 0xffffffff and given by a zip64 extra record (after another record), as
 * numpy writes members of 4 GiB and more. */
static void write_npz(const char *path, const char *const *names, uint8_t *const *data,
                      const size_t *sizes, int count, int deflated, int zip64) {
  size_t cap = 1 << 20, at = 0, cd = 0;
  uint8_t *z = malloc(cap), *dir = malloc(4096);
  uint32_t offs[4];
  size_t csz[4];
  uLong crcs[4];
  for (int i = 0; i < count; i++) {
    uLong crc = crc32(0, data[i], (uInt)sizes[i]);
    uint8_t *body = data[i];
    size_t bn = sizes[i];
    uint8_t *tmp = NULL;
    if (deflated) {
      z_stream st = {0};
      tmp = malloc(compressBound(bn) + 64);
      deflateInit2(&st, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
      st.next_in = data[i], st.avail_in = (uInt)bn, st.next_out = tmp;
      st.avail_out = (uInt)(compressBound(bn) + 64);
      deflate(&st, Z_FINISH);
      bn = st.total_out, body = tmp;
      deflateEnd(&st);
    }
    size_t nl = strlen(names[i]);
    uint8_t *h = z + at;
    memset(h, 0, 30);
    put32(h, 0x04034b50u), put16(h + 4, 20), put16(h + 8, deflated ? 8 : 0);
    put32(h + 14, (uint32_t)crc), put32(h + 18, (uint32_t)bn), put32(h + 22, (uint32_t)sizes[i]);
    put16(h + 26, (unsigned)nl);
    memcpy(h + 30, names[i], nl);
    memcpy(h + 30 + nl, body, bn);
    offs[i] = (uint32_t)at, csz[i] = bn, crcs[i] = crc;
    at += 30 + nl + bn;
    free(tmp);
  }
  for (int i = 0; i < count; i++) {
    size_t nl = strlen(names[i]);
    uint8_t *c = dir + cd;
    memset(c, 0, 46);
    put32(c, 0x02014b50u), put16(c + 4, 20), put16(c + 6, 20), put16(c + 10, deflated ? 8 : 0);
    put32(c + 16, (uint32_t)crcs[i]), put32(c + 20, (uint32_t)csz[i]);
    put32(c + 24, (uint32_t)sizes[i]), put16(c + 28, (unsigned)nl), put32(c + 42, offs[i]);
    memcpy(c + 46, names[i], nl);
    cd += 46 + nl;
    if (!zip64) continue;
    put32(c + 20, 0xffffffffu), put32(c + 24, 0xffffffffu), put32(c + 42, 0xffffffffu);
    uint8_t *x = c + 46 + nl; /* a timestamp record, then zip64's: usize, csize, offset */
    memset(x, 0, 9 + 28);
    put16(x, 0x5455), put16(x + 2, 5);
    put16(x + 9, 1), put16(x + 11, 24);
    put32(x + 13, (uint32_t)sizes[i]), put32(x + 21, (uint32_t)csz[i]), put32(x + 29, offs[i]);
    put16(c + 30, 9 + 28);
    cd += 9 + 28;
  }
  memcpy(z + at, dir, cd);
  uint8_t *e = z + at + cd;
  memset(e, 0, 22);
  put32(e, 0x06054b50u), put16(e + 8, (unsigned)count), put16(e + 10, (unsigned)count);
  put32(e + 12, (uint32_t)cd), put32(e + 16, (uint32_t)at);
  tu_write(path, z, at + cd + 22);
  free(z), free(dir);
}

/* flags: 1 deflated, 2 a zip64 directory (write_npz) */
static void write_ds_batch(const char *path, int n, int side, int first, int flags,
                           int64_t label_max) {
  size_t d = 3u * side * side;
  uint8_t *x = malloc(n * d), *xs = malloc(n * d + 256), *ys = malloc(8u * n + 256);
  int64_t *lab = malloc(8u * n);
  for (int i = 0; i < n; i++) {
    for (size_t k = 0; k < d; k++) x[i * d + k] = (uint8_t)((first + i) * 31 + k * 7);
    lab[i] = 1 + (first + i) % label_max;
  }
  uint8_t *members[2] = {xs, ys};
  size_t sizes[2] = {npy(xs, "|u1", n, (long)d, x, n * d), npy(ys, "<i8", n, 0, lab, 8u * n)};
  const char *names[2] = {"data.npy", "labels.npy"};
  write_npz(path, names, members, sizes, 2, flags & 1, flags >> 1 & 1);
  free(x), free(xs), free(ys), free(lab);
}

static void test_downsampled(const char *root) {
  const char *dir = tu_subdir(root, "ds");
  rt_dataset a, b;
  char err[2048];
  rt_data_opts o = {.fmt = RT_DATA_DOWNSAMPLED, .path = dir, .classes = 5};
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "train_data_batch_1.npz: missing file");
  tu_write(tu_path(dir, "train_data_batch_1"), "\x80\x02}q", 4);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "the pickled variant");
  write_ds_batch(tu_path(dir, "train_data_batch_1.npz"), 6, 8, 0, 0, 5);
  write_ds_batch(tu_path(dir, "train_data_batch_2.npz"), 4, 8, 6, 1, 5);
  write_ds_batch(tu_path(dir, "val_data.npz"), 3, 8, 100, 1, 5);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == 0);
  if (tu_failures) { fprintf(stderr, "%s\n", err); return; }
  CHECK(a.n == 10 && b.n == 3 && a.c == 3 && a.h == 8 && a.w == 8 && a.px && !a.x);
  int bad = 0;
  for (int i = 0; i < 10; i++) {
    bad += a.y[i] != (uint8_t)(i % 5);
    for (int k = 0; k < 192; k++) bad += a.px[i * 192 + k] != (uint8_t)(i * 31 + k * 7);
  }
  CHECK(bad == 0 && b.y[0] == 0 && b.y[1] == 1);
  /* batches from bytes: the same values as from floats */
  rt_norm nm;
  rt_data_norm(&a, &nm);
  CHECK(nm.c == 3 && nm.std[0] > 0.1f);
  float out[2 * 192];
  ir_label lab[2];
  int idx[2] = {3, 7};
  rt_data_batch(&a, idx, 2, &nm, 0, 0, NULL, out, lab);
  CHECK(lab[0] == 3 && lab[1] == 2);
  CHECK(fabsf(out[192 + 5] - ((uint8_t)(7 * 31 + 35) / 255.0f - nm.mean[0]) / nm.std[0]) < 1e-5f);
  rt_dataset_truncate(&a, 4);
  CHECK(a.n == 4);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* labels past the classes, and a corrupt member */
  write_ds_batch(tu_path(dir, "val_data.npz"), 3, 8, 5, 1, 9);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "val_data.npz: record 0: label 6 out of range 1..5");
  size_t n;
  uint8_t *z = tu_read(tu_path(dir, "train_data_batch_1.npz"), &n);
  z[200] ^= 1;
  tu_write(tu_path(dir, "train_data_batch_1.npz"), z, n);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "train_data_batch_1.npz: data.npy: CRC mismatch");
  tu_write(tu_path(dir, "train_data_batch_1.npz"), z, n / 2);
  CHECK(rt_data_open(&o, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "train_data_batch_1.npz: not a zip");
  free(z);

  /* ImageNet's 1000 classes: labels past a byte */
  const char *wide = tu_subdir(root, "ds1000");
  write_ds_batch(tu_path(wide, "train_data_batch_1.npz"), 10, 8, 990, 1, 1000);
  write_ds_batch(tu_path(wide, "val_data.npz"), 3, 8, 297, 0, 1000);
  rt_data_opts w = {.fmt = RT_DATA_DOWNSAMPLED, .path = wide, .classes = 1000};
  CHECK(rt_data_open(&w, &a, &b, err, sizeof err) == 0);
  if (tu_failures) { fprintf(stderr, "%s\n", err); return; }
  bad = 0;
  for (int i = 0; i < 10; i++) bad += a.y[i] != 990 + i;
  CHECK(bad == 0 && b.y[0] == 297 && b.y[2] == 299);
  rt_dataset_free(&a), rt_dataset_free(&b);

  /* a zip64 directory: the sizes and offsets from its extra records */
  write_ds_batch(tu_path(wide, "train_data_batch_1.npz"), 4, 8, 7, 3, 1000);
  write_ds_batch(tu_path(wide, "val_data.npz"), 2, 8, 11, 2, 1000);
  CHECK(rt_data_open(&w, &a, &b, err, sizeof err) == 0);
  if (tu_failures) { fprintf(stderr, "%s\n", err); return; }
  CHECK(a.n == 4 && b.n == 2 && a.y[3] == 10 && b.y[1] == 12 && a.px[3 * 192 + 5] ==
        (uint8_t)(10 * 31 + 35));
  rt_dataset_free(&a), rt_dataset_free(&b);
  /* its zip64 record claiming more than the extra field holds: no offset from it */
  z = tu_read(tu_path(wide, "val_data.npz"), &n);
  for (size_t k = 0; k + 4 <= n; k++)
    if (z[k] == 1 && z[k + 1] == 0 && z[k + 2] == 24 && z[k + 3] == 0) z[k + 2] = 200;
  tu_write(tu_path(wide, "val_data.npz"), z, n);
  CHECK(rt_data_open(&w, &a, &b, err, sizeof err) == -1);
  CHECK_HAS(err, "val_data.npz: data.npy: bad zip entry");
  free(z);
}

/* ---- PIL's decodes (folder_pil.py writes NAME.c.raw beside NAME) ---- */

static int compare_pil(const char *dir) {
  char list[4096];
  snprintf(list, sizeof list, "%s/manifest.txt", dir);
  FILE *m = fopen(list, "r");
  if (!m) { fprintf(stderr, "%s: missing\n", list); return 1; }
  rt_imgdec *d = rt_imgdec_new();
  char name[256], why[256];
  int w, h, c, images = 0;
  while (fscanf(m, "%255s %d %d %d", name, &w, &h, &c) == 4) {
    size_t n, rn;
    uint8_t *f = tu_read(tu_path(dir, name), &n);
    char raw[300];
    snprintf(raw, sizeof raw, "%s.%d.raw", name, c);
    uint8_t *ref = tu_read(tu_path(dir, raw), &rn);
    const uint8_t *px;
    int dw, dh;
    if (rt_img_decode(d, f, n, c, 1, &px, &dw, &dh, why, sizeof why)) {
      fprintf(stderr, "%s: %s\n", name, why);
      tu_failures++;
    } else if (dw != w || dh != h || rn != (size_t)w * h * c) {
      fprintf(stderr, "%s: %dx%d, PIL %dx%d\n", name, dw, dh, w, h);
      tu_failures++;
    } else {
      int worst = 0;
      for (size_t k = 0; k < rn; k++) {
        int e = abs(px[k] - ref[k]);
        if (e > worst) worst = e;
      }
      if (worst > 1) {
        fprintf(stderr, "%s as %d channels: %d levels from PIL's decode\n", name, c, worst);
        tu_failures++;
      }
    }
    images++;
    free(f), free(ref);
  }
  fclose(m);
  CHECK(images >= 8);
  printf("%d decodes within 1 level of PIL's\n", images - tu_failures);
  /* corrupt JPEGs: loaded where PIL loads them, refused where it refuses */
  snprintf(list, sizeof list, "%s/verdicts.txt", dir);
  FILE *v = fopen(list, "r");
  int pil_ok, verdicts = 0, differ = 0;
  while (v && fscanf(v, "%255s %d", name, &pil_ok) == 2) {
    size_t n;
    uint8_t *f = tu_read(tu_path(dir, name), &n);
    const uint8_t *px;
    int dw, dh, ok = rt_img_decode(d, f, n, 3, 1, &px, &dw, &dh, why, sizeof why) == 0;
    if (ok != pil_ok) {
      fprintf(stderr, "%s: PIL %s it, the decoder %s%s\n", name, pil_ok ? "loads" : "refuses",
              ok ? "loads it" : "refuses it: ", ok ? "" : why);
      differ++;
    }
    verdicts++;
    free(f);
  }
  if (v) fclose(v);
  CHECK(verdicts >= 100 && differ == 0);
  printf("%d corrupt JPEGs, each loaded or refused as PIL does\n", verdicts - differ);
  rt_imgdec_free(d);
  return tu_failures ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--make") == 0) {
    make_folder(argv[2], 10, 4);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "--pil") == 0) return compare_pil(argv[2]);
  const char *root = tu_mkdtemp("ilnas_folder");
  test_labels(root);
  test_decode(root);
  test_bad_files(root);
  test_layout(root);
  test_downsampled(root);
  tu_rm_tree(root);
  if (tu_failures) {
    fprintf(stderr, "%d check(s) failed\n", tu_failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
