/* data.c: the on-disk formats read into memory (IDX, CIFAR-10, STL-10,
 * digits CSV, downsampled ImageNet), image folders through folder.c;
 * statistics and augmented batches out of them.
 *
 * Every loader reads the bytes of a file into memory before it trusts any
 * count in a header, so a corrupt header can make it fail but cannot make
 * it allocate much more than the file actually holds. */
#include "data.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "folder.h"
#include "runtime/err.h"

enum { PATH_LEN = 4096 };

/* dir/name, with one slash between them however many dir ends with
 * (--data DIR/ is common), except that "/" stays the root. */
static int join(char *out, const char *dir, const char *name, char *err, size_t errlen) {
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/') dl--;
  const char *sep = dl == 1 && dir[0] == '/' ? "" : "/";
  if (dl > INT_MAX) dl = INT_MAX;
  int k = snprintf(out, PATH_LEN, "%.*s%s%s", (int)dl, dir, sep, name);
  if (k < 0 || k >= PATH_LEN)
    return rt_fail(err, errlen, "%.*s%s%s: path too long", (int)dl, dir, sep, name);
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Pixel bytes become floats through a table: one load per pixel, and every
 * loader maps byte b to exactly the same float. */
static void bytes_to_floats(float *dst, const uint8_t *src, size_t n, float scale) {
  float lut[256];
  for (int i = 0; i < 256; i++) lut[i] = (float)i * scale;
  for (size_t i = 0; i < n; i++) dst[i] = lut[src[i]];
}

/* A set of n images of c x h x w: floats, or with bytes > 0, bytes whose
 * value is byte * bytes (the formats of 8-bit levels keep them: a quarter
 * of the memory, and no pass over the set at load). */
static int alloc_dataset(rt_dataset *d, int n, int c, int h, int w, float bytes, char *err,
                         size_t errlen, const char *what) {
  size_t px = (size_t)n * (size_t)c * (size_t)h * (size_t)w;
  memset(d, 0, sizeof *d);
  d->n = n; d->c = c; d->h = h; d->w = w;
  if (bytes > 0.0f) d->px = malloc(px ? px : 1), d->scale = bytes;
  else d->x = malloc(px ? px * sizeof(float) : 1);
  d->y = malloc((n ? (size_t)n : 1) * sizeof *d->y);
  if ((!d->x && !d->px) || !d->y) {
    free(d->x); free(d->px); free(d->y);
    memset(d, 0, sizeof *d);
    return rt_fail(err, errlen, "%s: out of memory for %d images of %dx%dx%d", what, n, c, h, w);
  }
  return 0;
}

/* ---- gzip or raw streams (IDX, CSV) ---- */

/* Opens `path` through zlib, which reads gzip and raw files alike. */
static gzFile open_gz(const char *path, int *enoent) {
  errno = 0;
  gzFile f = gzopen(path, "rb");
  if (enoent) *enoent = !f && errno == ENOENT;
  if (f) gzbuffer(f, 1u << 18); /* large reads: the whole set loads in well under a second */
  return f;
}

/* zlib's message without the "path: " that gzerror puts in front of it,
 * so that the path is printed once. */
static const char *gz_message(gzFile f, const char *path, int *zerr) {
  const char *msg = gzerror(f, zerr);
  size_t pl = strlen(path);
  if (msg && strncmp(msg, path, pl) == 0 && msg[pl] == ':' && msg[pl + 1] == ' ') msg += pl + 2;
  return msg ? msg : "unknown error";
}

/* Reads up to `want` bytes into buf, in large chunks. A short count is not
 * an error here when the file simply ends (the caller says what the header
 * claimed and what the file holds); a gzip stream that ends before its
 * trailer, bad data and a bad CRC are gzip errors, in zlib's words. */
static int gz_fill(gzFile f, const char *path, uint8_t *buf, size_t want, size_t *got,
                   char *err, size_t errlen) {
  *got = 0;
  while (*got < want) {
    size_t chunk = want - *got;
    if (chunk > (1u << 30)) chunk = 1u << 30;
    int r = gzread(f, buf + *got, (unsigned)chunk);
    if (r <= 0) break;
    *got += (size_t)r;
  }
  if (*got < want) {
    int zerr = Z_OK;
    const char *msg = gz_message(f, path, &zerr);
    if (zerr == Z_ERRNO) return rt_fail(err, errlen, "%s: read error: %s", path, strerror(errno));
    if (zerr != Z_OK && (zerr != Z_BUF_ERROR || !gzdirect(f)))
      return rt_fail(err, errlen, "%s: gzip error: %s", path, msg);
  }
  return 0;
}

/* Reads exactly `want` more bytes and checks that nothing follows: 0, -1
 * with a message, or 1 when the file ends early, with the size it holds
 * (header included) in *have_out for the caller to compare with what its
 * header claims. The
 * buffer grows with what arrives, so a header that claims billions of
 * bytes costs at most what the file holds. `done` is what the caller has
 * read already (the header), for the sizes in messages. */
static int gz_read_exact(gzFile f, const char *path, size_t done, size_t want, uint8_t **out,
                         size_t *have_out, char *err, size_t errlen) {
  size_t cap = want < ((size_t)1 << 24) ? want : ((size_t)1 << 24), have = 0;
  uint8_t *buf = malloc(cap ? cap : 1);
  if (!buf) return rt_fail(err, errlen, "%s: out of memory", path);
  for (;;) {
    size_t got;
    if (gz_fill(f, path, buf + have, cap - have, &got, err, errlen)) { free(buf); return -1; }
    have += got;
    if (have < cap) break;
    if (cap == want) break;
    size_t ncap = cap > want / 2 ? want : cap * 2;
    uint8_t *nb = realloc(buf, ncap);
    if (!nb) { free(buf); return rt_fail(err, errlen, "%s: out of memory", path); }
    buf = nb; cap = ncap;
  }
  if (have < want) {
    free(buf);
    *have_out = done + have;
    return 1;
  }
  /* One more byte: a longer file means the header does not describe it, and
   * for gzip this read is also what checks the stream's trailing CRC. */
  uint8_t extra;
  size_t more;
  if (gz_fill(f, path, &extra, 1, &more, err, errlen)) { free(buf); return -1; }
  if (more) {
    free(buf);
    return rt_fail(err, errlen, "%s: expected %zu bytes, but the file is longer", path, done + want);
  }
  *out = buf;
  return 0;
}

/* ---- IDX ---- */

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Opens dir/name.gz, else dir/name; the path actually opened goes to `path`. */
static gzFile open_idx(const char *dir, const char *name, char *path, char *err, size_t errlen) {
  char gzname[256];
  snprintf(gzname, sizeof gzname, "%s.gz", name);
  if (join(path, dir, gzname, err, errlen)) return NULL;
  int enoent;
  gzFile f = open_gz(path, &enoent);
  if (f) return f;
  if (!enoent) {
    rt_fail(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    return NULL;
  }
  if (join(path, dir, name, err, errlen)) return NULL;
  f = open_gz(path, &enoent);
  if (f) return f;
  if (enoent)
    rt_fail(err, errlen, "%s[.gz]: missing file (%s)", path, strerror(ENOENT));
  else
    rt_fail(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
  return NULL;
}

/* Reads the header of an IDX file with `ndim` dimensions after the magic;
 * the data that follows is read by the caller. */
static int idx_header(gzFile f, const char *path, uint32_t magic, int ndim, uint32_t *dims,
                      const char *what, char *err, size_t errlen) {
  uint8_t h[16];
  size_t hlen = 4 + 4 * (size_t)ndim, got;
  if (gz_fill(f, path, h, hlen, &got, err, errlen)) return -1;
  if (got >= 4 && be32(h) != magic)
    return rt_fail(err, errlen, "%s: wrong magic 0x%08x, expected 0x%08x (IDX %s)", path,
                (unsigned)be32(h), (unsigned)magic, what);
  if (got < hlen)
    return rt_fail(err, errlen, "%s: truncated: expected at least %zu bytes (IDX header), got %zu",
                path, hlen, got);
  for (int i = 0; i < ndim; i++) dims[i] = be32(h + 4 + 4 * i);
  return 0;
}

typedef struct { /* one split as bytes, before conversion */
  uint8_t *px, *lab;
  int n, h, w;
} idx_split;

static int load_idx_split(const char *dir, const char *img_name, const char *lab_name,
                          int classes, idx_split *s, char *err, size_t errlen) {
  char path[PATH_LEN];
  uint32_t d[3];
  memset(s, 0, sizeof *s);

  gzFile f = open_idx(dir, img_name, path, err, errlen);
  if (!f) return -1;
  if (idx_header(f, path, 0x00000803u, 3, d, "unsigned-byte images, 3 dimensions", err, errlen)) {
    gzclose(f); return -1;
  }
  if (d[0] == 0 || d[1] == 0 || d[2] == 0 || d[0] > INT_MAX || d[1] > 65536 || d[2] > 65536) {
    gzclose(f);
    return rt_fail(err, errlen, "%s: implausible image count or size %ux%ux%u", path,
                (unsigned)d[0], (unsigned)d[1], (unsigned)d[2]);
  }
  uint64_t bytes = (uint64_t)d[0] * d[1] * d[2];
  if (bytes > SIZE_MAX / sizeof(float)) {
    gzclose(f);
    return rt_fail(err, errlen, "%s: %ux%ux%u images do not fit in memory", path, (unsigned)d[0],
                (unsigned)d[1], (unsigned)d[2]);
  }
  size_t have = 0;
  int rc = gz_read_exact(f, path, 16, (size_t)bytes, &s->px, &have, err, errlen);
  gzclose(f);
  if (rc == 1) {
    /* Say what the header claims and what the file holds: a 32x32 header
     * over 28x28 data is not a cut file. */
    size_t per = (have - 16) / d[0];
    size_t side = (size_t)sqrt((double)per);
    while (side * side < per) side++;
    char guess[96] = "";
    if (per && (have - 16) % d[0] == 0 && side * side == per && per != (size_t)d[1] * d[2])
      snprintf(guess, sizeof guess, "; that is %u images of %zux%zu", (unsigned)d[0], side,
               side);
    return rt_fail(err, errlen, "%s: the header claims %u images of %ux%u (%llu bytes with the "
                "header), but the file holds %zu bytes%s", path, (unsigned)d[0], (unsigned)d[1],
                (unsigned)d[2], (unsigned long long)bytes + 16, have, guess);
  }
  if (rc) return -1;
  s->n = (int)d[0]; s->h = (int)d[1]; s->w = (int)d[2];

  f = open_idx(dir, lab_name, path, err, errlen);
  if (!f) goto fail;
  if (idx_header(f, path, 0x00000801u, 1, d, "unsigned-byte labels, 1 dimension", err, errlen)) {
    gzclose(f); goto fail;
  }
  if (d[0] != (uint32_t)s->n) {
    gzclose(f);
    rt_fail(err, errlen, "%s: %u labels, but the images file %s holds %d images", path,
         (unsigned)d[0], img_name, s->n);
    goto fail;
  }
  rc = gz_read_exact(f, path, 8, (size_t)s->n, &s->lab, &have, err, errlen);
  gzclose(f);
  if (rc == 1)
    rt_fail(err, errlen, "%s: the header claims %d labels (%zu bytes with the header), but the file "
         "holds %zu bytes", path, s->n, (size_t)s->n + 8, have);
  if (rc) goto fail;
  if (classes > 0)
    for (int i = 0; i < s->n; i++)
      if (s->lab[i] >= classes) {
        rt_fail(err, errlen, "%s: record %d: label %d out of range 0..%d", path, i, s->lab[i],
             classes - 1);
        free(s->lab);
        goto fail;
      }
  return 0;
fail:
  free(s->px);
  memset(s, 0, sizeof *s);
  return -1;
}

/* The split's images as the set's bytes (s->px is handed over). */
static int idx_to_dataset(idx_split *s, int classes, rt_dataset *d, const char *dir,
                          char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  d->y = malloc((s->n ? (size_t)s->n : 1) * sizeof *d->y);
  if (!d->y)
    return rt_fail(err, errlen, "%s: out of memory for %d labels", dir, s->n);
  d->n = s->n, d->c = 1, d->h = s->h, d->w = s->w;
  d->px = s->px, d->scale = 1.0f / 255.0f, s->px = NULL;
  for (int i = 0; i < s->n; i++) d->y[i] = s->lab[i];
  d->classes = classes;
  return 0;
}

static int max_label(const uint8_t *y, int n) {
  int m = 0;
  for (int i = 0; i < n; i++) if (y[i] > m) m = y[i];
  return m;
}

static int load_idx(const char *dir, int classes, rt_dataset *train, rt_dataset *test,
                    char *err, size_t errlen) {
  idx_split a, b;
  if (load_idx_split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", classes, &a,
                     err, errlen))
    return -1;
  if (load_idx_split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", classes, &b,
                     err, errlen)) {
    free(a.px); free(a.lab);
    return -1;
  }
  int rc = -1;
  if (a.h != b.h || a.w != b.w) {
    rt_fail(err, errlen, "%s: test images are %dx%d, training images %dx%d", dir, b.h, b.w, a.h,
         a.w);
    goto done;
  }
  /* IDX does not say how many classes there are (EMNIST has 26 or 47), so
   * the labels do; both splits must agree on one count for the output layer. */
  int ma = max_label(a.lab, a.n), mb = max_label(b.lab, b.n);
  int found = 1 + (ma > mb ? ma : mb);
  if (idx_to_dataset(&a, found, train, dir, err, errlen)) goto done;
  if (idx_to_dataset(&b, found, test, dir, err, errlen)) { rt_dataset_free(train); goto done; }
  rc = 0;
done:
  free(a.px); free(a.lab); free(b.px); free(b.lab);
  return rc;
}

/* ---- raw binary files (CIFAR-10, STL-10) ---- */

/* The size of a file that must exist, for the checks made before reading. */
static int file_size(const char *path, size_t *size, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT) return rt_fail(err, errlen, "%s: missing file (%s)", path, strerror(errno));
    return rt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return rt_fail(err, errlen, "%s: not a regular file", path);
  if ((uintmax_t)st.st_size > SIZE_MAX) return rt_fail(err, errlen, "%s: too large", path);
  *size = (size_t)st.st_size;
  return 0;
}

/* Reads exactly `size` bytes (the size checked earlier) into a new buffer. */
static int read_raw(const char *path, size_t size, uint8_t **out, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return rt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) { fclose(f); return rt_fail(err, errlen, "%s: out of memory", path); }
  size_t got = fread(buf, 1, size, f);
  int bad = ferror(f), more = got == size && fgetc(f) != EOF;
  fclose(f);
  if (bad || got != size || more) {
    free(buf);
    if (bad) return rt_fail(err, errlen, "%s: read error", path);
    return rt_fail(err, errlen, "%s: changed size while being read (expected %zu bytes)", path, size);
  }
  *out = buf;
  return 0;
}

/* ---- CIFAR-10 ---- */

enum { CIFAR_PX = 3 * 32 * 32, CIFAR_REC = 1 + CIFAR_PX, CIFAR_TRAIN_FILES = 5 };

/* Checks a batch file's size; returns its record count or -1. */
static int cifar_count(const char *path, char *err, size_t errlen) {
  size_t size;
  if (file_size(path, &size, err, errlen)) return -1;
  if (size == 0 || size % CIFAR_REC != 0)
    return rt_fail(err, errlen,
                "%s: size %zu bytes is not a positive multiple of %d (1 label byte + 3x32x32 "
                "pixels per record)", path, size, CIFAR_REC);
  if (size / CIFAR_REC > INT_MAX) return rt_fail(err, errlen, "%s: too many records", path);
  return (int)(size / CIFAR_REC);
}

/* Appends the records of one batch file at image `at` of d. */
static int cifar_read(const char *path, int count, int classes, rt_dataset *d, int at,
                      char *err, size_t errlen) {
  uint8_t *buf;
  if (read_raw(path, (size_t)count * CIFAR_REC, &buf, err, errlen)) return -1;
  for (int i = 0; i < count; i++) {
    const uint8_t *rec = buf + (size_t)i * CIFAR_REC;
    if (rec[0] >= classes) {
      rt_fail(err, errlen, "%s: record %d: label %d out of range 0..%d", path, i, rec[0],
           classes - 1);
      free(buf);
      return -1;
    }
    d->y[at + i] = rec[0];
    /* The record is channel-planar and row-major: already NCHW. */
    memcpy(d->px + (size_t)(at + i) * CIFAR_PX, rec + 1, CIFAR_PX);
  }
  free(buf);
  return 0;
}

static int load_cifar_files(char paths[][PATH_LEN], int nfiles, int classes, rt_dataset *d,
                            const char *what, char *err, size_t errlen) {
  int counts[CIFAR_TRAIN_FILES];
  long total = 0;
  for (int i = 0; i < nfiles; i++) {
    if ((counts[i] = cifar_count(paths[i], err, errlen)) < 0) return -1;
    total += counts[i];
  }
  if (total > INT_MAX) return rt_fail(err, errlen, "%s: too many records", what);
  if (alloc_dataset(d, (int)total, 3, 32, 32, 1.0f / 255.0f, err, errlen, what)) return -1;
  d->classes = classes;
  for (int i = 0, at = 0; i < nfiles; at += counts[i], i++)
    if (cifar_read(paths[i], counts[i], classes, d, at, err, errlen)) {
      rt_dataset_free(d);
      return -1;
    }
  return 0;
}

static int load_cifar(const char *path, int classes, rt_dataset *train, rt_dataset *test,
                      char *err, size_t errlen) {
  char dir[PATH_LEN], probe[PATH_LEN], files[CIFAR_TRAIN_FILES][PATH_LEN];
  /* The official archive unpacks into cifar-10-batches-bin/: accept the
   * folder that holds the archive as well as the unpacked folder itself. */
  snprintf(dir, sizeof dir, "%s", path);
  if (join(probe, path, "data_batch_1.bin", err, errlen)) return -1;
  if (!exists(probe)) {
    if (join(probe, path, "cifar-10-batches-bin", err, errlen)) return -1;
    if (is_dir(probe)) snprintf(dir, sizeof dir, "%s", probe);
  }
  for (int i = 0; i < CIFAR_TRAIN_FILES; i++) {
    char name[32];
    snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
    if (join(files[i], dir, name, err, errlen)) return -1;
  }
  /* Every file is checked before anything is read (load_cifar_files checks
   * the training batches): a missing test batch fails in a millisecond, not
   * after reading 150 MB. */
  char tfile[1][PATH_LEN];
  if (join(tfile[0], dir, "test_batch.bin", err, errlen)) return -1;
  size_t size;
  if (file_size(tfile[0], &size, err, errlen)) return -1;

  if (load_cifar_files(files, CIFAR_TRAIN_FILES, classes, train, dir, err, errlen)) return -1;
  if (load_cifar_files(tfile, 1, classes, test, dir, err, errlen)) {
    rt_dataset_free(train);
    return -1;
  }
  return 0;
}

/* ---- STL-10 ---- */

enum { STL_SIDE = 96, STL_PLANE = STL_SIDE * STL_SIDE, STL_PX = 3 * STL_PLANE };

static int load_stl_split(const char *dir, const char *xname, const char *yname, int classes,
                          rt_dataset *d, char *err, size_t errlen) {
  char xpath[PATH_LEN], ypath[PATH_LEN];
  size_t xsize, ysize;
  if (join(xpath, dir, xname, err, errlen) || join(ypath, dir, yname, err, errlen)) return -1;
  if (file_size(xpath, &xsize, err, errlen) || file_size(ypath, &ysize, err, errlen)) return -1;
  if (xsize == 0 || xsize % STL_PX != 0)
    return rt_fail(err, errlen, "%s: size %zu bytes is not a positive multiple of %d (3x96x96 "
                "pixels per image)", xpath, xsize, STL_PX);
  if (xsize / STL_PX > INT_MAX) return rt_fail(err, errlen, "%s: too many images", xpath);
  int n = (int)(xsize / STL_PX);
  if (ysize != (size_t)n)
    return rt_fail(err, errlen, "%s: %zu labels, but %s holds %d images", ypath, ysize, xname, n);

  uint8_t *lab, *px;
  if (read_raw(ypath, ysize, &lab, err, errlen)) return -1;
  for (int i = 0; i < n; i++)
    if (lab[i] < 1 || lab[i] > classes) {
      rt_fail(err, errlen, "%s: record %d: label %d out of range 1..%d", ypath, i, lab[i], classes);
      free(lab);
      return -1;
    }
  if (read_raw(xpath, xsize, &px, err, errlen)) { free(lab); return -1; }
  if (alloc_dataset(d, n, 3, STL_SIDE, STL_SIDE, 0.0f, err, errlen, dir)) {
    free(lab); free(px);
    return -1;
  }
  d->classes = classes;
  for (int i = 0; i < n; i++) d->y[i] = (ir_label)(lab[i] - 1);
  /* The official files were written from MATLAB, column-major: within a
   * channel plane the row index varies fastest. Transpose each plane. */
  const float s = 1.0f / 255.0f;
  for (size_t p = 0; p < (size_t)n * 3; p++) {
    const uint8_t *src = px + p * STL_PLANE;
    float *dst = d->x + p * STL_PLANE;
    for (int col = 0; col < STL_SIDE; col++)
      for (int row = 0; row < STL_SIDE; row++)
        dst[row * STL_SIDE + col] = (float)src[col * STL_SIDE + row] * s;
  }
  free(lab); free(px);
  return 0;
}

static int load_stl(const char *path, int classes, rt_dataset *train, rt_dataset *test,
                    char *err, size_t errlen) {
  char dir[PATH_LEN], probe[PATH_LEN];
  snprintf(dir, sizeof dir, "%s", path);
  if (join(probe, path, "train_X.bin", err, errlen)) return -1;
  if (!exists(probe)) {
    if (join(probe, path, "stl10_binary", err, errlen)) return -1;
    if (is_dir(probe)) snprintf(dir, sizeof dir, "%s", probe);
  }
  if (load_stl_split(dir, "train_X.bin", "train_y.bin", classes, train, err, errlen)) return -1;
  if (load_stl_split(dir, "test_X.bin", "test_y.bin", classes, test, err, errlen)) {
    rt_dataset_free(train);
    return -1;
  }
  return 0;
}

/* ---- digits CSV ---- */

enum { DIG_PX = 64, DIG_COLS = DIG_PX + 1 };

/* The field at s (up to the next comma or the line's end) as it is in the
 * file, in single quotes: bytes outside printable ASCII as \xNN, so that the
 * message stays one valid line; past 40 bytes, "..." ends it. */
static const char *quote_field(char *q, size_t qlen, const char *s, const char *end) {
  size_t o = 0;
  q[o++] = '\'';
  int k = 0;
  for (; s + k < end && s[k] != ','; k++) {
    unsigned char ch = (unsigned char)s[k];
    if (k == 40 || o + 8 >= qlen) {
      o += (size_t)snprintf(q + o, qlen - o, "...");
      break;
    }
    if (ch >= 0x20 && ch < 0x7F && ch != '\'' && ch != '\\')
      q[o++] = (char)ch;
    else
      o += (size_t)snprintf(q + o, qlen - o, "\\x%02x", ch);
  }
  q[o++] = '\'';
  q[o] = '\0';
  return q;
}

/* Parses one row into 65 bytes; returns 0 or -1 with a message that
 * quotes the field as it is in the file. */
static int parse_row(const char *path, long line, const char *s, const char *end, int classes,
                     uint8_t *row, char *err, size_t errlen) {
  int k = 0;
  char q[256];
  for (;;) {
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    const char *start = s;
    long v = 0;
    while (s < end && *s >= '0' && *s <= '9' && v <= 1000) v = v * 10 + (*s++ - '0');
    while (s < end && *s >= '0' && *s <= '9') s++;
    const char *num_end = s;
    while (s < end && (*s == ' ' || *s == '\t')) s++;
    if (num_end == start || (s < end && *s != ',')) {
      const char *nul = memchr(start, '\0', (size_t)(end - start));
      const char *comma = memchr(start, ',', (size_t)(end - start));
      if (nul && (!comma || nul < comma))
        return rt_fail(err, errlen, "%s:%ld: field %d: a NUL byte in %s", path, line, k + 1,
                    quote_field(q, sizeof q, start, end));
      return rt_fail(err, errlen, "%s:%ld: field %d: expected an integer, got %s", path, line,
                  k + 1, quote_field(q, sizeof q, start, end));
    }
    if (k < DIG_PX && v > 16)
      return rt_fail(err, errlen, "%s:%ld: field %d: pixel value %s out of range 0..16", path, line,
                  k + 1, quote_field(q, sizeof q, start, num_end));
    if (k == DIG_PX && v >= classes)
      return rt_fail(err, errlen, "%s:%ld: label %s out of range 0..%d", path, line,
                  quote_field(q, sizeof q, start, num_end), classes - 1);
    if (k < DIG_COLS) row[k] = (uint8_t)v;
    k++;
    if (s >= end) break;
    s++; /* the comma */
  }
  if (k != DIG_COLS)
    return rt_fail(err, errlen, "%s:%ld: expected %d comma-separated integers (64 pixels 0..16, "
                "then the label 0..9), got %d", path, line, DIG_COLS, k);
  return 0;
}

static void digits_to_dataset(const uint8_t *rows, int n, int classes, rt_dataset *d) {
  d->classes = classes;
  for (int i = 0; i < n; i++) {
    bytes_to_floats(d->x + (size_t)i * DIG_PX, rows + (size_t)i * DIG_COLS, DIG_PX, 1.0f / 16.0f);
    d->y[i] = rows[(size_t)i * DIG_COLS + DIG_PX];
  }
}

/* The longest line a digits CSV may have: 65 fields of at most a few
 * digits take about 200 bytes. Lines are read one at a time from the
 * (gzip or raw) stream, so a file without line ends, or a gzip stream
 * that inflates to gigabytes of one, is refused at its first line
 * instead of being read whole; the rows take 65 bytes each. */
enum { DIG_LINE_MAX = 1 << 16 };

/* Appends the row of line [s, e) (line number `line`) to *rows (n so
 * far, room for *cap): blank lines are skipped, a CR before the line end
 * dropped. */
static int digits_line(const char *path, long line, const char *s, const char *e, int classes,
                       uint8_t **rows, long *n, long *cap, char *err, size_t errlen) {
  if (e > s && e[-1] == '\r') e--;
  const char *t = s;
  while (t < e && (*t == ' ' || *t == '\t')) t++;
  if (t == e) return 0;
  if (*n == *cap) {
    if (*n == INT_MAX) return rt_fail(err, errlen, "%s:%ld: more than %d rows", path, line, INT_MAX);
    long nc = *cap ? (*cap > INT_MAX / 2 ? INT_MAX : 2 * *cap) : 1024;
    uint8_t *nr = realloc(*rows, (size_t)nc * DIG_COLS);
    if (!nr) return rt_fail(err, errlen, "%s:%ld: out of memory for %ld rows", path, line, nc);
    *rows = nr, *cap = nc;
  }
  if (parse_row(path, line, s, e, classes, *rows + (size_t)*n * DIG_COLS, err, errlen)) return -1;
  (*n)++;
  return 0;
}

/* Every row of the digits CSV at path, 65 bytes each (64 pixels, the
 * label), into *out (*count of them; freed by the caller). */
static int digits_rows(const char *path, int classes, uint8_t **out, long *count, char *err,
                       size_t errlen) {
  int enoent;
  gzFile f = open_gz(path, &enoent);
  if (!f) {
    if (enoent) return rt_fail(err, errlen, "%s: missing file (%s)", path, strerror(ENOENT));
    return rt_fail(err, errlen, "%s: cannot open: %s", path,
                   errno ? strerror(errno) : "out of memory");
  }
  size_t bcap = 2 * (size_t)DIG_LINE_MAX, have = 0, at = 0;
  char *buf = malloc(bcap);
  uint8_t *rows = NULL;
  long n = 0, cap = 0, line = 0;
  int rc = buf ? 0 : rt_fail(err, errlen, "%s: out of memory", path), eof = 0;
  while (!rc) {
    char *nl = memchr(buf + at, '\n', have - at);
    if (nl || (eof && at < have)) { /* a whole line, or the last one without its end */
      char *e = nl ? nl : buf + have;
      rc = digits_line(path, ++line, buf + at, e, classes, &rows, &n, &cap, err, errlen);
      at = nl ? (size_t)(nl - buf) + 1 : have;
      continue;
    }
    if (eof) break;
    if (have - at >= DIG_LINE_MAX) {
      rc = rt_fail(err, errlen, "%s:%ld: line longer than %d bytes (a digits CSV row is 65 "
                   "comma-separated integers)", path, line + 1, DIG_LINE_MAX);
      break;
    }
    memmove(buf, buf + at, have - at);
    have -= at, at = 0;
    size_t want = bcap - have, got;
    rc = gz_fill(f, path, (uint8_t *)buf + have, want, &got, err, errlen);
    have += got, eof = got < want;
  }
  /* gz_fill already fails on a gzip stream cut short; this is a second
   * look at zlib's state before the file is closed. */
  int zerr = Z_OK;
  const char *msg = gz_message(f, path, &zerr);
  if (!rc && zerr == Z_BUF_ERROR && !gzdirect(f))
    rc = rt_fail(err, errlen, "%s: gzip error: %s", path, msg);
  gzclose(f);
  free(buf);
  if (rc) {
    free(rows);
    return -1;
  }
  *out = rows, *count = n;
  return 0;
}

static int load_digits(const char *path, double split, int classes, rt_dataset *train,
                       rt_dataset *test, char *err, size_t errlen) {
  if (!(split >= 0.0 && split < 1.0))
    return rt_fail(err, errlen, "%s: test split %g must be in [0, 1)", path, split);
  uint8_t *rows = NULL;
  long n = 0;
  if (digits_rows(path, classes, &rows, &n, err, errlen)) return -1;
  if (n < 2) {
    free(rows);
    return rt_fail(err, errlen, "%s: %ld rows; a training and a test set need at least 2", path, n);
  }
  long ntest = (long)floor((double)n * split);
  if (ntest < 1) ntest = 1;
  if (ntest >= n) ntest = n - 1;
  int ntrain = (int)(n - ntest);
  if (alloc_dataset(train, ntrain, 1, 8, 8, 0.0f, err, errlen, path)) { free(rows); return -1; }
  if (alloc_dataset(test, (int)ntest, 1, 8, 8, 0.0f, err, errlen, path)) {
    rt_dataset_free(train); free(rows);
    return -1;
  }
  digits_to_dataset(rows, ntrain, classes, train);
  digits_to_dataset(rows + (size_t)ntrain * DIG_COLS, (int)ntest, classes, test);
  free(rows);
  return 0;
}

/* ---- downsampled ImageNet (Chrabaszcz et al. 2017), npz batches ---- */

/* The files as published in npz form: train_data_batch_1.npz .. _10.npz
 * and val_data.npz, each a zip of data.npy (N x 3*S*S bytes, channel-planar
 * rows like CIFAR's) and labels.npy (N labels from 1), at S = 8, 16, 32 or
 * 64. The pickled variant of the same files is recognised and refused. */

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return le16(p) | le16(p + 2) << 16; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

/* One member of a zip file held in memory, inflated and CRC-checked.
 * Every offset and length comes from the file: each is checked against
 * what is left of zn after it, never by adding to it (64-bit offsets from
 * a zip64 record could wrap). */
static int zip_member(const uint8_t *z, size_t zn, const char *path, const char *name,
                      uint8_t **out, size_t *outn, char *err, size_t errlen) {
  size_t e = zn >= 22 ? zn - 22 : 0, stop = e > 65557 ? e - 65557 : 0;
  for (;; e--) {
    if (zn >= 22 && le32(z + e) == 0x06054b50u) break;
    if (e == stop || zn < 22) return rt_fail(err, errlen, "%s: not a zip (npz) file", path);
  }
  uint64_t entries = le16(z + e + 10), at = le32(z + e + 16);
  if (at == 0xffffffffu && e >= 20 && le32(z + e - 20) == 0x07064b50u) { /* zip64 */
    uint64_t loc = le64(z + e - 20 + 8);
    if (loc > zn || zn - loc < 56 || le32(z + loc) != 0x06064b50u)
      return rt_fail(err, errlen, "%s: bad zip64 directory", path);
    entries = le64(z + loc + 32), at = le64(z + loc + 48);
  }
  size_t nl = strlen(name);
  for (uint64_t k = 0; k < entries; k++) {
    if (at > zn || zn - at < 46 || le32(z + at) != 0x02014b50u)
      return rt_fail(err, errlen, "%s: bad zip directory", path);
    const uint8_t *c = z + at;
    uint32_t method = le16(c + 10), crc = le32(c + 16), fnl = le16(c + 28), el = le16(c + 30),
             cl = le16(c + 32);
    uint64_t csize = le32(c + 20), usize = le32(c + 24), off = le32(c + 42);
    if (at + 46 + fnl + el > zn) return rt_fail(err, errlen, "%s: bad zip directory", path);
    if (fnl == nl && memcmp(c + 46, name, nl) == 0) {
      /* zip64 sizes and offset, in this order, for the fields that
       * overflowed; the extra field's records, up to one that runs past it */
      for (size_t xo = 0, xl; xo + 4 <= el; xo += 4 + xl) {
        const uint8_t *x = c + 46 + fnl + xo, *v = x + 4;
        if ((xl = le16(x + 2)) > el - xo - 4) break;
        if (le16(x) != 1) continue;
        size_t left = xl;
        if (usize == 0xffffffffu && left >= 8) usize = le64(v), v += 8, left -= 8;
        if (csize == 0xffffffffu && left >= 8) csize = le64(v), v += 8, left -= 8;
        if (off == 0xffffffffu && left >= 8) off = le64(v);
      }
      if (off > zn || zn - off < 30 || le32(z + off) != 0x04034b50u)
        return rt_fail(err, errlen, "%s: %s: bad zip entry", path, name);
      uint64_t data = off + 30 + le16(z + off + 26) + le16(z + off + 28);
      if (data > zn || csize > zn - data)
        return rt_fail(err, errlen, "%s: %s: truncated (the zip says %llu bytes)", path, name,
                    (unsigned long long)csize);
      if (method != 0 && method != 8) /* before its size is trusted with memory */
        return rt_fail(err, errlen, "%s: %s: zip compression method %u (stored or deflate "
                    "expected)", path, name, (unsigned)method);
      if (usize > SIZE_MAX / 2 || (method == 0 && usize != csize) ||
          (method == 8 && usize / 1032 > csize + 1))
        return rt_fail(err, errlen, "%s: %s: implausible size %llu", path, name,
                    (unsigned long long)usize);
      uint8_t *buf = malloc(usize ? (size_t)usize : 1);
      if (!buf) return rt_fail(err, errlen, "%s: out of memory for %s", path, name);
      if (method == 0) {
        memcpy(buf, z + data, (size_t)usize);
      } else {
        z_stream st;
        memset(&st, 0, sizeof st);
        int zr = inflateInit2(&st, -MAX_WBITS);
        size_t done_in = 0, done_out = 0;
        while (zr == Z_OK) { /* in pieces: avail_in and avail_out are 32-bit */
          uInt in = (uInt)(csize - done_in > (1u << 30) ? 1u << 30 : csize - done_in);
          uInt outc = (uInt)(usize - done_out > (1u << 30) ? 1u << 30 : usize - done_out);
          st.next_in = (Bytef *)(z + data + done_in), st.avail_in = in;
          st.next_out = buf + done_out, st.avail_out = outc;
          zr = inflate(&st, Z_NO_FLUSH);
          done_in += in - st.avail_in, done_out += outc - st.avail_out;
          if (zr == Z_OK && in == st.avail_in && outc == st.avail_out) zr = Z_BUF_ERROR;
        }
        inflateEnd(&st);
        if (zr != Z_STREAM_END || done_out != usize) {
          free(buf);
          return rt_fail(err, errlen, "%s: %s: corrupt compressed data (%s)", path, name,
                      zr == Z_STREAM_END ? "wrong size" : st.msg ? st.msg : "cut short");
        }
      }
      uLong got = 0;
      for (uint64_t o = 0; o < usize; o += 1u << 30) {
        uint64_t piece = usize - o < (1u << 30) ? usize - o : 1u << 30;
        got = crc32(got, buf + o, (uInt)piece);
      }
      if (got != crc) {
        free(buf);
        return rt_fail(err, errlen, "%s: %s: CRC mismatch (a corrupt file)", path, name);
      }
      *out = buf, *outn = (size_t)usize;
      return 0;
    }
    at += 46 + fnl + el + cl;
  }
  return rt_fail(err, errlen, "%s: no %s in it (a downsampled ImageNet batch holds data.npy and "
              "labels.npy)", path, name);
}

/* An .npy array: its element type, shape (1 or 2 dimensions) and data. */
static int npy_parse(const uint8_t *p, size_t n, const char *path, const char *name,
                     char *descr, int64_t shape[2], int *ndim, const uint8_t **data,
                     size_t *dn, char *err, size_t errlen) {
  if (n < 10 || memcmp(p, "\x93NUMPY", 6) != 0 || (p[6] != 1 && n < 12))
    return rt_fail(err, errlen, "%s: %s: not a .npy array", path, name);
  size_t hl = p[6] == 1 ? le16(p + 8) : le32(p + 8), h0 = p[6] == 1 ? 10 : 12;
  if (h0 + hl > n || hl > 4096) return rt_fail(err, errlen, "%s: %s: bad .npy header", path, name);
  char h[4097];
  memcpy(h, p + h0, hl);
  h[hl] = 0;
  const char *d = strstr(h, "'descr':"), *s = strstr(h, "'shape':");
  if (!d || !s || strstr(h, "'fortran_order': True") ||
      sscanf(d + 8, " '%7[^']'", descr) != 1)
    return rt_fail(err, errlen, "%s: %s: unsupported .npy header %s", path, name, h);
  long long a = -1, b = -1;
  int k = sscanf(s + 8, " (%lld , %lld", &a, &b);
  if (k < 1 || a < 0 || (k == 2 && b < 0))
    return rt_fail(err, errlen, "%s: %s: bad shape in .npy header %s", path, name, h);
  *ndim = k == 2 && !strstr(s, ",)") ? 2 : 1;
  shape[0] = a, shape[1] = *ndim == 2 ? b : 1;
  *data = p + h0 + hl, *dn = n - h0 - hl;
  return 0;
}

/* One npz batch appended to d (allocated by the caller for the total,
 * counted by a first read) at image `at`; with d NULL, only *count and
 * *side are found. */
static int ds_file(const char *path, int classes, rt_dataset *d, int at, int *count, int *side,
                   char *err, size_t errlen) {
  size_t size;
  uint8_t *z = NULL, *xs = NULL, *ys = NULL;
  size_t xn, yn;
  int rc = -1;
  if (file_size(path, &size, err, errlen) || read_raw(path, size, &z, err, errlen)) return -1;
  if (zip_member(z, size, path, "data.npy", &xs, &xn, err, errlen) ||
      zip_member(z, size, path, "labels.npy", &ys, &yn, err, errlen))
    goto done;
  char xd[8], yd[8];
  int64_t xsh[2], ysh[2];
  int xnd, ynd;
  const uint8_t *xp, *yp;
  size_t xdn, ydn;
  if (npy_parse(xs, xn, path, "data.npy", xd, xsh, &xnd, &xp, &xdn, err, errlen) ||
      npy_parse(ys, yn, path, "labels.npy", yd, ysh, &ynd, &yp, &ydn, err, errlen))
    goto done;
  int s = 0;
  for (int t = 4; t <= 256; t *= 2) if (xsh[1] == 3 * t * t) s = t;
  if (strcmp(xd, "|u1") != 0 || xnd != 2 || !s || xsh[0] > INT_MAX) {
    rt_fail(err, errlen, "%s: data.npy is %s of shape (%lld, %lld); expected bytes (|u1) of "
         "shape (N, 3*S*S), S 8, 16, 32 or 64", path, xd, (long long)xsh[0],
         (long long)xsh[1]);
    goto done;
  }
  int esz = !strcmp(yd, "<i8") || !strcmp(yd, "<u8") ? 8 : !strcmp(yd, "<i4") ||
            !strcmp(yd, "<u4") ? 4 : !strcmp(yd, "<i2") || !strcmp(yd, "<u2") ? 2
            : !strcmp(yd, "|u1") || !strcmp(yd, "|i1") ? 1 : 0;
  if (!esz || ysh[0] != xsh[0] || (ynd == 2 && ysh[1] != 1)) {
    rt_fail(err, errlen, "%s: labels.npy is %s of shape (%lld); expected %lld integer labels",
         path, yd, (long long)ysh[0], (long long)xsh[0]);
    goto done;
  }
  if (xdn != (size_t)xsh[0] * (size_t)xsh[1] || ydn != (size_t)ysh[0] * (size_t)esz) {
    rt_fail(err, errlen, "%s: an array holds %zu bytes, not what its shape says", path,
         xdn != (size_t)xsh[0] * (size_t)xsh[1] ? xdn : ydn);
    goto done;
  }
  *count = (int)xsh[0], *side = s;
  if (d) {
    for (int i = 0; i < *count; i++) {
      const uint8_t *v = yp + (size_t)i * (size_t)esz;
      int64_t lab = esz == 8 ? (int64_t)le64(v) : esz == 4 ? (int32_t)le32(v)
                    : esz == 2 ? (int16_t)le16(v) : (int64_t)v[0];
      if (lab < 1 || lab > classes) {
        rt_fail(err, errlen, "%s: record %d: label %lld out of range 1..%d%s", path, i,
             (long long)lab, classes, "");
        goto done;
      }
      d->y[at + i] = (ir_label)(lab - 1);
    }
    memcpy(d->px + (size_t)at * (size_t)xsh[1], xp, xdn);
  }
  rc = 0;
done:
  free(z), free(xs), free(ys);
  return rc;
}

static int load_ds_split(const char *dir, int val, int classes, rt_dataset *d, char *err,
                         size_t errlen) {
  enum { MAX_FILES = 64 };
  char paths[MAX_FILES][PATH_LEN];
  int nf = 0, counts[MAX_FILES], side = 0;
  long total = 0;
  for (int k = 1; k <= MAX_FILES; k++) {
    char name[64];
    if (val) snprintf(name, sizeof name, "val_data.npz");
    else snprintf(name, sizeof name, "train_data_batch_%d.npz", k);
    if (join(paths[nf], dir, name, err, errlen)) return -1;
    if (!exists(paths[nf])) break;
    nf++;
    if (val) break;
  }
  if (nf == 0) {
    char pickled[PATH_LEN];
    const char *want = val ? "val_data" : "train_data_batch_1";
    if (join(pickled, dir, want, err, errlen)) return -1;
    if (exists(pickled))
      return rt_fail(err, errlen, "%s: the pickled variant of downsampled ImageNet; ilnas reads "
                  "the npz files (%s.npz), published beside it", pickled, want);
    return rt_fail(err, errlen, "%s/%s.npz: missing file (%s)", dir, want, strerror(ENOENT));
  }
  for (int i = 0; i < nf; i++) {
    int s;
    if (ds_file(paths[i], classes, NULL, 0, &counts[i], &s, err, errlen)) return -1;
    if (side && s != side)
      return rt_fail(err, errlen, "%s: images of %dx%d, but %s holds %dx%d", paths[i], s, s,
                  paths[0], side, side);
    side = s, total += counts[i];
  }
  if (total > INT_MAX || (size_t)total > SIZE_MAX / (3u * side * side))
    return rt_fail(err, errlen, "%s: too many images", dir);
  memset(d, 0, sizeof *d);
  size_t px = (size_t)total * 3 * (size_t)side * (size_t)side;
  d->px = malloc(px ? px : 1), d->y = malloc((total ? (size_t)total : 1) * sizeof *d->y);
  if (!d->px || !d->y) {
    free(d->px), free(d->y), memset(d, 0, sizeof *d);
    return rt_fail(err, errlen, "%s: out of memory for %ld images of 3x%dx%d", dir, total, side,
                side);
  }
  d->n = (int)total, d->c = 3, d->h = d->w = side, d->scale = 1.0f / 255.0f;
  d->classes = classes;
  for (int i = 0, at = 0; i < nf; at += counts[i], i++) {
    int cnt, s;
    if (ds_file(paths[i], classes, d, at, &cnt, &s, err, errlen)) {
      rt_dataset_free(d);
      return -1;
    }
  }
  return 0;
}

static int load_downsampled(const char *dir, int classes, rt_dataset *train, rt_dataset *test,
                            char *err, size_t errlen) {
  if (classes <= 0) classes = 1000;
  if (load_ds_split(dir, 0, classes, train, err, errlen)) return -1;
  if (load_ds_split(dir, 1, classes, test, err, errlen)) {
    rt_dataset_free(train);
    return -1;
  }
  if (train->h != test->h) {
    rt_fail(err, errlen, "%s: val_data.npz holds %dx%d images, the training batches %dx%d", dir,
         test->h, test->w, train->h, train->w);
    rt_dataset_free(train), rt_dataset_free(test);
    return -1;
  }
  int top = 0;
  for (int i = 0; i < train->n; i++) if (train->y[i] > top) top = train->y[i];
  for (int i = 0; i < test->n; i++) if (test->y[i] > top) top = test->y[i];
  train->classes = test->classes = top + 1;
  return 0;
}

/* ---- the public API ---- */

/* The adapters ('data ... resize HxW channels N'): every image to
 * channels x resize_h x resize_w. RGB becomes gray before the resize and
 * gray RGB after it, so the resize works on one plane. Bytes stay bytes,
 * rounded to the nearest level (a set kept in bytes for its size), but
 * with exact (the file's own 8-bit levels: IDX, CIFAR-10) the adapted
 * images are floats, not rounded. */
static int adapt(rt_dataset *d, const rt_data_opts *o, int exact, char *err, size_t errlen) {
  const int c = o->channels ? o->channels : d->c;
  const int h = o->resize_h ? o->resize_h : d->h, w = o->resize_w ? o->resize_w : d->w;
  if (c == d->c && h == d->h && w == d->w) return 0;
  if (c != d->c && !(d->c == 1 && c == 3) && !(d->c == 3 && c == 1))
    return rt_fail(err, errlen, "%s: 'channels %d' turns gray (1 channel) into RGB or RGB (3) into "
                "gray, but the images have %d channels", o->path, c, d->c);
  const int cr = c < d->c ? c : d->c; /* the planes that are resized */
  const size_t in_plane = (size_t)d->h * (size_t)d->w, out_plane = (size_t)h * (size_t)w;
  const size_t out_img = (size_t)c * out_plane, total = (size_t)d->n * out_img;
  float *src = malloc((size_t)d->c * in_plane * sizeof *src);
  float *mid = malloc((size_t)cr * in_plane * sizeof *mid);
  float *dst = malloc(out_img * sizeof *dst);
  float *x = d->x || exact ? malloc((total ? total : 1) * sizeof *x) : NULL;
  uint8_t *px = d->x || exact ? NULL : malloc(total ? total : 1);
  if (!src || !mid || !dst || (!x && !px)) {
    free(src), free(mid), free(dst), free(x), free(px);
    return rt_fail(err, errlen, "%s: out of memory adapting %d images to %dx%dx%d", o->path, d->n,
                c, h, w);
  }
  int rc = 0;
  for (int i = 0; i < d->n && !rc; i++) {
    const size_t at = (size_t)i * (size_t)d->c * in_plane;
    for (size_t k = 0; k < (size_t)d->c * in_plane; k++) src[k] = rt_data_pixel(d, at + k);
    if (cr < d->c) /* RGB's mean */
      for (size_t k = 0; k < in_plane; k++)
        mid[k] = (src[k] + src[in_plane + k] + src[2 * in_plane + k]) / 3.0f;
    else
      memcpy(mid, src, (size_t)cr * in_plane * sizeof *mid);
    if (h == d->h && w == d->w) memcpy(dst, mid, (size_t)cr * out_plane * sizeof *dst);
    else if (rt_resize_planes(mid, cr, d->h, d->w, dst, h, w)) rc = -1;
    for (int ch = cr; ch < c; ch++) /* gray's copies */
      memcpy(dst + (size_t)ch * out_plane, dst, out_plane * sizeof *dst);
    if (x) {
      memcpy(x + (size_t)i * out_img, dst, out_img * sizeof *x);
    } else {
      for (size_t k = 0; k < out_img; k++) {
        float v = dst[k] / d->scale + 0.5f;
        px[(size_t)i * out_img + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  }
  free(src), free(mid), free(dst);
  if (rc) {
    free(x), free(px);
    return rt_fail(err, errlen, "%s: out of memory resizing the images to %dx%d", o->path, h, w);
  }
  free(d->x), free(d->px);
  d->x = x, d->px = px, d->c = c, d->h = h, d->w = w;
  return 0;
}

int rt_data_load(rt_data_format fmt, const char *path, double split, rt_dataset *train,
                 rt_dataset *test, char *err, size_t errlen) {
  return rt_data_load_classes(fmt, path, split, 0, train, test, err, errlen);
}

int rt_data_load_classes(rt_data_format fmt, const char *path, double split, int classes,
                         rt_dataset *train, rt_dataset *test, char *err, size_t errlen) {
  rt_data_opts o = {.fmt = fmt, .path = path, .split = split, .classes = classes};
  return rt_data_open(&o, train, test, err, errlen);
}

int rt_data_open(const rt_data_opts *o, rt_dataset *train, rt_dataset *test, char *err,
                 size_t errlen) {
  const char *path = o->path;
  int classes = o->classes;
  double split = o->split;
  rt_dataset a, b;
  int rc;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(train, 0, sizeof *train);
  memset(test, 0, sizeof *test);
  if (err && errlen) err[0] = '\0';
  /* The fixed formats have 10 classes; fewer in the model narrows them. */
  int fixed = classes > 0 && classes < 10 ? classes : 10;
  switch (o->fmt) {
    case RT_DATA_IDX: rc = load_idx(path, classes, &a, &b, err, errlen); break;
    case RT_DATA_CIFAR10: rc = load_cifar(path, fixed, &a, &b, err, errlen); break;
    case RT_DATA_STL10: rc = load_stl(path, fixed, &a, &b, err, errlen); break;
    case RT_DATA_DIGITS_CSV: rc = load_digits(path, split, fixed, &a, &b, err, errlen); break;
    case RT_DATA_FOLDER: rc = rt_folder_open(o, &a, &b, err, errlen); break;
    case RT_DATA_DOWNSAMPLED: rc = load_downsampled(path, classes, &a, &b, err, errlen); break;
    default: return rt_fail(err, errlen, "%s: unknown data format %d", path, (int)o->fmt);
  }
  if (rc) return -1;
  if (o->train_limit > 0) rt_dataset_truncate(&a, o->train_limit);
  int exact = o->fmt == RT_DATA_IDX || o->fmt == RT_DATA_CIFAR10;
  if (o->fmt != RT_DATA_FOLDER &&
      (adapt(&a, o, exact, err, errlen) || adapt(&b, o, exact, err, errlen))) {
    rt_dataset_free(&a);
    rt_dataset_free(&b);
    return -1;
  }
  *train = a;
  *test = b;
  return 0;
}

void rt_dataset_free(rt_dataset *d) {
  if (!d) return;
  free(d->x);
  free(d->px);
  free(d->y);
  rt_folder_free(d->src);
  memset(d, 0, sizeof *d);
}

const char *rt_data_class_name(const rt_dataset *d, int k) {
  return d->src ? rt_folder_class(d->src, k) : NULL;
}

void rt_dataset_truncate(rt_dataset *d, int n) {
  assert(n >= 0);
  if (n >= d->n) return;
  if (d->src) {
    rt_folder_truncate(d, n);
    return;
  }
  d->n = n;
  if (n == 0) return;
  /* Give the memory back: a --train-limit run on a big set should not keep
   * paying for the images it dropped. Failure to shrink is harmless. */
  size_t px = (size_t)n * (size_t)d->c * (size_t)d->h * (size_t)d->w;
  if (d->px) {
    uint8_t *p = realloc(d->px, px);
    if (p) d->px = p;
  } else {
    float *x = realloc(d->x, px * sizeof(float));
    if (x) d->x = x;
  }
  ir_label *y = realloc(d->y, (size_t)n * sizeof *y);
  if (y) d->y = y;
}

void rt_data_norm(const rt_dataset *d, rt_norm *nm) {
  assert(d->c >= 1 && d->c <= 4);
  if (d->src) {
    rt_folder_norm(d, nm);
    return;
  }
  memset(nm, 0, sizeof *nm);
  nm->c = d->c;
  for (int ch = 0; ch < 4; ch++) nm->std[ch] = 1.0f;
  size_t plane = (size_t)d->h * (size_t)d->w, count = plane * (size_t)d->n;
  if (count == 0) return;
  for (int ch = 0; ch < d->c; ch++) {
    /* Sums of values in [0, 1] in double: over 47M pixels the error of
     * E[x^2] - E[x]^2 stays far below float resolution. */
    double s = 0, s2 = 0;
    for (int i = 0; i < d->n; i++) {
      size_t at = ((size_t)i * (size_t)d->c + (size_t)ch) * plane;
      for (size_t k = 0; k < plane; k++) {
        double v = rt_data_pixel(d, at + k);
        s += v, s2 += v * v;
      }
    }
    double mean = s / (double)count, var = s2 / (double)count - mean * mean;
    double sd = var > 0 ? sqrt(var) : 0;
    nm->mean[ch] = (float)mean;
    /* A constant channel carries no information; dividing by 1 keeps it
     * finite instead of turning it into infinities. */
    nm->std[ch] = sd > 1e-12 ? (float)sd : 1.0f;
  }
}

/* One image's draws: offsets into the padded image (crop == offset means
 * no shift), then the flip. */
static rt_draw draw_one(int idx, int crop, int flip, rt_rng *rng) {
  rt_draw r = {idx, (int16_t)crop, (int16_t)crop, 0};
  if (crop > 0) {
    r.ox = (int16_t)rt_rng_below(rng, (uint32_t)(2 * crop + 1));
    r.oy = (int16_t)rt_rng_below(rng, (uint32_t)(2 * crop + 1));
  }
  if (flip) r.mirror = (int)rt_rng_below(rng, 2);
  return r;
}

void rt_data_draws(const int *idx, int n, int crop, int flip, rt_rng *rng, rt_draw *out) {
  assert(crop >= 0 && crop <= INT16_MAX / 2);
  for (int i = 0; i < n; i++) out[i] = draw_one(idx[i], crop, flip, rng);
}

/* Columns [x0, x1) of an image row dp from the source row s, column x
 * from source column x + off (mirrored: off - x), each value as
 * rt_data_pixel() and the normalisation take it; one loop a case, without
 * a test a value. */
static void row_bytes(const uint8_t *restrict s, float scale, float mean, float sd, int x0,
                      int x1, int off, int mirror, float *restrict dp) {
  if (mirror)
    for (int x = x0; x < x1; x++) dp[x] = ((float)s[off - x] * scale - mean) / sd;
  else
    for (int x = x0; x < x1; x++) dp[x] = ((float)s[x + off] * scale - mean) / sd;
}
static void row_floats(const float *restrict s, float mean, float sd, int x0, int x1, int off,
                       int mirror, float *restrict dp) {
  if (mirror)
    for (int x = x0; x < x1; x++) dp[x] = (s[off - x] - mean) / sd;
  else
    for (int x = x0; x < x1; x++) dp[x] = (s[x + off] - mean) / sd;
}

int rt_data_keepable(const rt_dataset *d, const ir_tensor *t, const rt_norm *nm, int crop) {
  return !d->src && (d->x || d->px) && d->c == t->c && d->h == t->h && d->w == t->w &&
         nm->c == d->c && crop >= 0 && crop <= INT16_MAX / 2;
}

void rt_data_prefetch(const rt_dataset *d, rt_draw r) {
  const size_t chw = (size_t)d->c * d->h * d->w;
  const char *p = d->x ? (const char *)(d->x + (size_t)r.idx * chw)
                       : (const char *)(d->px + (size_t)r.idx * chw);
  const size_t bytes = chw * (d->x ? sizeof *d->x : 1);
  for (size_t k = 0; k < bytes; k += 64) __builtin_prefetch(p + k);
}

void rt_data_image(const rt_dataset *d, rt_draw r, const rt_norm *nm, int crop, float *dst) {
  const int c = d->c, h = d->h, w = d->w, oy = r.oy;
  const size_t src = (size_t)r.idx * (size_t)c * (size_t)h * (size_t)w;
  /* Crop, then flip the crop, as torchvision's RandomCrop followed by
   * RandomHorizontalFlip does: column x reads source column
   * (mirror ? w - 1 - x : x) + ox - crop, inside the image for x in
   * [x0, x1); the rest, and the rows outside it, are the padding. */
  const int off = r.mirror ? w - 1 + r.ox - crop : r.ox - crop;
  int x0 = r.mirror ? off - (w - 1) : -off, x1 = r.mirror ? off + 1 : w - off;
  x0 = x0 < 0 ? 0 : x0 > w ? w : x0;
  x1 = x1 > w ? w : x1 < x0 ? x0 : x1;
  for (int ch = 0; ch < c; ch++) {
    const float mean = nm->mean[ch], sd = nm->std[ch];
    const float pad = (0.0f - mean) / sd;
    const size_t sp = src + (size_t)ch * h * w;
    float *dp = dst + (size_t)ch * h * w;
    for (int y = 0; y < h; y++, dp += w) {
      const int sy = y + oy - crop;
      const int a = sy < 0 || sy >= h ? w : x0, b = sy < 0 || sy >= h ? w : x1;
      for (int x = 0; x < a; x++) dp[x] = pad;
      if (a < b && d->x) row_floats(d->x + sp + (size_t)sy * w, mean, sd, a, b, off, r.mirror, dp);
      else if (a < b) row_bytes(d->px + sp + (size_t)sy * w, d->scale, mean, sd, a, b, off, r.mirror, dp);
      for (int x = b; x < w; x++) dp[x] = pad;
    }
  }
}

void rt_data_make(const rt_dataset *d, const rt_draw *dr, int n, const rt_norm *nm, int crop,
                  float *out, ir_label *labels) {
  assert(nm && nm->c == d->c && crop >= 0 && !d->src); /* a folder streams */
  const size_t chw = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  for (int i = 0; i < n; i++) {
    assert(dr[i].idx >= 0 && dr[i].idx < d->n);
    rt_data_image(d, dr[i], nm, crop, out + (size_t)i * chw);
    if (labels) labels[i] = d->y[dr[i].idx];
  }
}

void rt_data_batch(const rt_dataset *d, const int *idx, int n, const rt_norm *nm, int crop,
                   int flip, rt_rng *rng, float *out, ir_label *labels) {
  assert(nm && nm->c == d->c && crop >= 0 && !d->src); /* a folder streams */
  const size_t chw = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  for (int i = 0; i < n; i++) { /* each image's draws, then the image: the rng's order */
    assert(idx[i] >= 0 && idx[i] < d->n);
    rt_data_image(d, draw_one(idx[i], crop, flip, rng), nm, crop, out + (size_t)i * chw);
    if (labels) labels[i] = d->y[idx[i]];
  }
}
