/* folder.c: image folders in ImageNet's layout. Opening lists and checks
 * the files; rt_folder_image reads, decodes (imgdec.c), crops and resizes
 * one image, on whichever thread a stream runs it. */
#define _DEFAULT_SOURCE /* d_type: a listing of a million files needs no stat each */
#include "folder.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgdec.h"
#include "runtime/err.h"
#include "pool.h"

enum {
  PATH_LEN = 4096,
  HEAD = 1 << 16,    /* bytes read to find a JPEG's size (its EXIF can be long) */
  TAIL = 1 << 12,    /* bytes at the end that must hold the end-of-image marker */
  MAX_CLASSES = 65536, /* labels are ir_label */
  SHOW_BAD = 3,      /* bad files named in the error that stops a run */
  NORM_SAMPLE = 256  /* images the normalisation is measured on */
};

struct rt_folder {
  char root[PATH_LEN];  /* PATH/train or PATH/val */
  int nclasses;
  char **classes;       /* sorted names */
  char *names;          /* "class/file\0" for each image, in order */
  size_t *off;          /* n offsets into names */
  int skip_bad;
  FILE *log;            /* skipped files, or NULL */
  pthread_mutex_t mu;   /* bad and log */
  uint8_t *bad;         /* n: found bad while streaming (skip bad) */
};

struct rt_fwork {
  rt_imgdec *dec;
  uint8_t *file;        /* the file's bytes */
  size_t fcap;
  float *tmp, *kx, *ky; /* the horizontal pass; filter weights */
  int *lx, *nx, *ly, *ny;
  size_t tcap, kxcap, kycap, lxcap, lycap;
};

/* a/b into out (PATH_LEN bytes); -1 when it does not fit. */
static int join(char *out, const char *a, const char *b) {
  int k = snprintf(out, PATH_LEN, "%s/%s", a, b);
  return k < 0 || k >= PATH_LEN ? -1 : 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_strs(char **v, int n) {
  for (int i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

/* ---- listing ---- */

typedef struct { /* a growing list of names */
  char **v;
  int n, cap;
} strlist;

static int strlist_add(strlist *l, const char *s) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 64;
    char **v = cap > l->cap ? realloc(l->v, (size_t)cap * sizeof *v) : NULL;
    if (!v) return -1;
    l->v = v, l->cap = cap;
  }
  if (!(l->v[l->n] = strdup(s))) return -1;
  l->n++;
  return 0;
}

static int ends_with(const char *s, const char *ext) {
  size_t n = strlen(s), k = strlen(ext);
  if (n <= k) return 0;
  for (size_t i = 0; i < k; i++)
    if (tolower((unsigned char)s[n - k + i]) != ext[i]) return 0;
  return 1;
}

/* 1: a JPEG or PNG by its name; 2: an image torchvision reads that ilnas
 * does not; 0: not an image (ignored, as torchvision ignores it). */
static int image_name(const char *s) {
  static const char *const ours[] = {".jpg", ".jpeg", ".png"};
  static const char *const theirs[] = {".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"};
  for (size_t i = 0; i < sizeof ours / sizeof *ours; i++) if (ends_with(s, ours[i])) return 1;
  for (size_t i = 0; i < sizeof theirs / sizeof *theirs; i++)
    if (ends_with(s, theirs[i])) return 2;
  return 0;
}

static int is_dir_at(const char *dir, const struct dirent *e) {
#ifdef _DIRENT_HAVE_D_TYPE
  if (e->d_type == DT_DIR) return 1;
  if (e->d_type != DT_UNKNOWN && e->d_type != DT_LNK) return 0;
#endif
  char p[PATH_LEN];
  struct stat st;
  return join(p, dir, e->d_name) == 0 && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The entries of dir that are (dirs 1) or are not (dirs 0) folders, sorted,
 * hidden ones left out. */
static int list_dir(const char *dir, int dirs, strlist *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  DIR *d = opendir(dir);
  if (!d) return rt_fail(err, errlen, "%s: cannot open folder: %s", dir, strerror(errno));
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (is_dir_at(dir, e) != dirs) continue;
    if (strlist_add(out, e->d_name)) {
      closedir(d), free_strs(out->v, out->n);
      return rt_fail(err, errlen, "%s: out of memory listing it", dir);
    }
  }
  int bad = errno;
  closedir(d);
  if (bad) {
    free_strs(out->v, out->n);
    return rt_fail(err, errlen, "%s: cannot read folder: %s", dir, strerror(bad));
  }
  if (out->n) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
  return 0;
}

/* ---- checking the files ---- */

static int read_at(int fd, uint8_t *buf, size_t n, off_t at) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, buf + got, n - got, at + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* Reads a whole file into w->file; 0, or -1 with why. */
static int read_file(rt_fwork *w, const char *path, size_t *n, char *why, size_t whylen) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return rt_fail(why, whylen, "cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    close(fd);
    return rt_fail(why, whylen, "not a regular file");
  }
  size_t size = (size_t)st.st_size;
  if (size > w->fcap) {
    uint8_t *b = realloc(w->file, size);
    if (!b) { close(fd); return rt_fail(why, whylen, "out of memory for %zu bytes", size); }
    w->file = b, w->fcap = size;
  }
  int rc = read_at(fd, w->file, size, 0);
  int e = errno;
  close(fd);
  if (rc) return rt_fail(why, whylen, "read error: %s", e ? strerror(e) : "short read");
  *n = size;
  return 0;
}

/* The header and the end of one file, as opening the folder checks them:
 * 0, or -1 with why. */
static int check_file(rt_fwork *w, const char *path, char *why, size_t whylen) {
  if (image_name(path) == 2)
    return rt_fail(why, whylen, "unsupported image format (ilnas reads JPEG and PNG)");
  int fd = open(path, O_RDONLY);
  if (fd < 0) return rt_fail(why, whylen, "cannot open: %s", strerror(errno));
  struct stat st;
  uint8_t head[1024], tail[TAIL];
  int rc = -1;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    rt_fail(why, whylen, "not a regular file");
    goto done;
  }
  size_t size = (size_t)st.st_size, hn = size < sizeof head ? size : sizeof head;
  if (read_at(fd, head, hn, 0)) { rt_fail(why, whylen, "read error: %s", strerror(errno)); goto done; }
  rt_img_kind kind;
  int iw, ih, pr = rt_img_probe(head, hn, size, &kind, &iw, &ih, why, whylen);
  if (pr == 1) { /* a long header: up to HEAD bytes, then the whole file */
    size_t more = size < HEAD ? size : HEAD;
    if (more > w->fcap) {
      uint8_t *b = realloc(w->file, more);
      if (!b) { rt_fail(why, whylen, "out of memory"); goto done; }
      w->file = b, w->fcap = more;
    }
    if (read_at(fd, w->file, more, 0)) { rt_fail(why, whylen, "read error"); goto done; }
    pr = rt_img_probe(w->file, more, size, &kind, &iw, &ih, why, whylen);
    if (pr == 1) {
      close(fd), fd = -1;
      if (read_file(w, path, &size, why, whylen)) goto done;
      pr = rt_img_probe(w->file, size, size, &kind, &iw, &ih, why, whylen);
    }
  }
  if (pr) goto done;
  size_t tn = size < TAIL ? size : TAIL;
  if (fd < 0 && (fd = open(path, O_RDONLY)) < 0) {
    rt_fail(why, whylen, "cannot open: %s", strerror(errno));
    goto done;
  }
  if (read_at(fd, tail, tn, (off_t)(size - tn))) {
    rt_fail(why, whylen, "read error: %s", strerror(errno));
    goto done;
  }
  rc = rt_img_check_tail(kind, tail, tn, why, whylen);
done:
  if (fd >= 0) close(fd);
  return rc;
}

typedef struct { /* the files of one split, checked on a pool */
  const char *root;
  const char *names;
  const size_t *off;
  int n, next;
  char **why;            /* n: NULL, or what is wrong with the file */
  int oom;
  pthread_mutex_t mu;
} check_job;

static void check_task(void *arg, int task) {
  (void)task;
  check_job *j = arg;
  rt_fwork *w = rt_fwork_new();
  char path[PATH_LEN], why[512];
  for (;;) {
    pthread_mutex_lock(&j->mu);
    int at = j->next;
    j->next += 64;
    pthread_mutex_unlock(&j->mu);
    if (at >= j->n) break;
    for (int i = at; i < j->n && i < at + 64; i++) {
      if (join(path, j->root, j->names + j->off[i]))
        snprintf(why, sizeof why, "path too long");
      else if (w && check_file(w, path, why, sizeof why) == 0)
        continue;
      if (!w || !(j->why[i] = strdup(why))) j->oom = 1;
    }
  }
  rt_fwork_free(w);
}

/* ---- opening ---- */

static int class_index(char **classes, int n, const char *name) {
  char *const *k = bsearch(&name, classes, (size_t)n, sizeof *classes, cmp_str);
  return k ? (int)(k - classes) : -1;
}

/* Lists and checks one split (root = PATH/train). The classes are the
 * split's own; the caller compares them between splits. */
static int open_split(const rt_data_opts *o, const char *root, rt_dataset *d, char *err,
                      size_t errlen) {
  strlist cls;
  if (list_dir(root, 1, &cls, err, errlen)) return -1;
  if (cls.n == 0) {
    free_strs(cls.v, cls.n);
    return rt_fail(err, errlen, "%s: no class folders in it (the layout is %s/CLASS/IMAGE.jpg)",
                root, root);
  }
  if (cls.n > MAX_CLASSES) {
    int n = cls.n;
    free_strs(cls.v, cls.n);
    return rt_fail(err, errlen, "%s: %d class folders, more than the %d classes ilnas's "
                "labels hold", root, n, MAX_CLASSES);
  }
  struct rt_folder *f = calloc(1, sizeof *f);
  size_t ncap = 1 << 16, nlen = 0, ocap = 1024;
  int n = 0, rc = -1;
  ir_label *y = malloc(ocap * sizeof *y);
  char **why = NULL;
  if (f) f->names = malloc(ncap), f->off = malloc(ocap * sizeof(size_t));
  if (!f || !f->names || !f->off || !y) goto oom;
  snprintf(f->root, sizeof f->root, "%s", root);
  f->classes = cls.v, f->nclasses = cls.n, cls.v = NULL;
  f->skip_bad = o->skip_bad, f->log = o->log;
  pthread_mutex_init(&f->mu, NULL);
  long ignored = 0;
  char first_ignored[PATH_LEN] = "";
  for (int k = 0; k < f->nclasses; k++) {
    char dir[PATH_LEN];
    strlist files;
    if (join(dir, root, f->classes[k])) {
      rt_fail(err, errlen, "%s/%s: path too long", root, f->classes[k]);
      goto fail;
    }
    if (list_dir(dir, 0, &files, err, errlen)) goto fail;
    int found = 0;
    for (int i = 0; i < files.n; i++) {
      if (!image_name(files.v[i])) {
        if (!ignored++ && join(first_ignored, dir, files.v[i])) first_ignored[0] = 0;
        continue;
      }
      size_t len = strlen(f->classes[k]) + 1 + strlen(files.v[i]) + 1;
      if (nlen + len > ncap || (size_t)n == ocap) {
        size_t nc = nlen + len > ncap ? 2 * (nlen + len) : ncap, oc = (size_t)n == ocap ? 2 * ocap : ocap;
        char *nn = realloc(f->names, nc);
        if (nn) f->names = nn, ncap = nc;
        size_t *no = nn ? realloc(f->off, oc * sizeof *no) : NULL;
        if (no) f->off = no;
        ir_label *ny = no ? realloc(y, oc * sizeof *ny) : NULL;
        if (ny) y = ny, ocap = oc;
        if (!ny || n == INT_MAX) { free_strs(files.v, files.n); goto oom; }
      }
      f->off[n] = nlen;
      y[n] = (ir_label)k;
      nlen += (size_t)snprintf(f->names + nlen, len, "%s/%s", f->classes[k], files.v[i]) + 1;
      n++, found++;
    }
    free_strs(files.v, files.n);
    if (!found) {
      rt_fail(err, errlen, "%s: no JPEG or PNG images in class folder '%s'", dir, f->classes[k]);
      goto fail;
    }
  }
  if (ignored && o->log)
    fprintf(o->log, "note: %s: %ld files that are not images by their names were left out, "
            "%s the first\n", root, ignored, first_ignored);

  /* every file's header and end, on the pool */
  why = calloc((size_t)n, sizeof *why);
  if (!why) goto oom;
  check_job j = {root, f->names, f->off, n, 0, why, 0, PTHREAD_MUTEX_INITIALIZER};
  int threads = o->threads > 0 ? o->threads : 1;
  rt_pool *pool = threads > 1 ? rt_pool_new(threads) : NULL;
  if (pool) rt_pool_run(pool, rt_pool_threads(pool), check_task, &j);
  else check_task(&j, 0);
  rt_pool_free(pool);
  pthread_mutex_destroy(&j.mu);
  if (j.oom) goto oom;
  int nbad = 0, kept = 0;
  for (int i = 0; i < n; i++) nbad += why[i] != NULL;
  if (nbad && !o->skip_bad) {
    size_t at = (size_t)snprintf(err, errlen, "%s: %d of %d files are not usable images: ",
                                 root, nbad, n);
    for (int i = 0, shown = 0; i < n && shown < SHOW_BAD && at < errlen; i++)
      if (why[i])
        at += (size_t)snprintf(err + at, errlen - at, "%s%s/%s: %s", shown++ ? "; " : "", root,
                               f->names + f->off[i], why[i]);
    if (at < errlen)
      snprintf(err + at, errlen - at, "%s (run with --skip-bad to leave them out)",
               nbad > SHOW_BAD ? "; ..." : "");
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    if (why[i]) {
      if (o->log)
        fprintf(o->log, "warning: %s/%s: %s (skipped)\n", root, f->names + f->off[i], why[i]);
      continue;
    }
    f->off[kept] = f->off[i], y[kept] = y[i], kept++;
  }
  if (kept == 0) {
    rt_fail(err, errlen, "%s: none of its %d files is a usable image", root, n);
    goto fail;
  }
  f->bad = calloc((size_t)kept, 1);
  if (!f->bad) goto oom;
  memset(d, 0, sizeof *d);
  d->n = kept, d->c = o->c, d->h = o->h, d->w = o->w;
  d->classes = f->nclasses, d->y = y, d->src = f;
  y = NULL, rc = 0;
  goto done;
oom:
  rt_fail(err, errlen, "%s: out of memory listing its files", root);
fail:
  rt_folder_free(f);
done:
  if (why) for (int i = 0; i < n; i++) free(why[i]);
  free(why), free(y), free_strs(cls.v, cls.n);
  return rc;
}

static int same_classes(const rt_dataset *a, const rt_dataset *b, char *err, size_t errlen) {
  const struct rt_folder *fa = a->src, *fb = b->src;
  for (int k = 0; k < fa->nclasses; k++)
    if (class_index(fb->classes, fb->nclasses, fa->classes[k]) < 0)
      return rt_fail(err, errlen, "%s: no class folder '%s', which %s has; both splits need "
                  "the same classes", fb->root, fa->classes[k], fa->root);
  for (int k = 0; k < fb->nclasses; k++)
    if (class_index(fa->classes, fa->nclasses, fb->classes[k]) < 0)
      return rt_fail(err, errlen, "%s: class folder '%s' is not in %s; both splits need the "
                  "same classes", fb->root, fb->classes[k], fa->root);
  return 0;
}

int rt_folder_open(const rt_data_opts *o, rt_dataset *train, rt_dataset *test, char *err,
                   size_t errlen) {
  char root[PATH_LEN], troot[PATH_LEN];
  struct stat st;
  size_t pl = strlen(o->path);
  while (pl > 1 && o->path[pl - 1] == '/') pl--;
  if (o->c != 1 && o->c != 3)
    return rt_fail(err, errlen, "%s: image folders feed models with 1 or 3 input channels, not "
                "%d", o->path, o->c);
  if (stat(o->path, &st) || !S_ISDIR(st.st_mode))
    return rt_fail(err, errlen, "%s: %s", o->path, errno == ENOENT ? "no such folder"
                : "not a folder");
  if (snprintf(root, sizeof root, "%.*s/train", (int)pl, o->path) >= (int)sizeof root)
    return rt_fail(err, errlen, "%s: path too long", o->path);
  if (stat(root, &st) || !S_ISDIR(st.st_mode))
    return rt_fail(err, errlen, "%s: no train/ folder (an image folder holds train/ and val/ or "
                "test/, each with one folder per class)", o->path);
  snprintf(troot, sizeof troot, "%.*s/val", (int)pl, o->path);
  if (stat(troot, &st) || !S_ISDIR(st.st_mode)) {
    snprintf(troot, sizeof troot, "%.*s/test", (int)pl, o->path);
    if (stat(troot, &st) || !S_ISDIR(st.st_mode))
      return rt_fail(err, errlen, "%s: no val/ or test/ folder beside train/", o->path);
  }
  if (open_split(o, root, train, err, errlen)) return -1;
  if (open_split(o, troot, test, err, errlen)) {
    rt_dataset_free(train);
    return -1;
  }
  if (same_classes(train, test, err, errlen)) {
    rt_dataset_free(train), rt_dataset_free(test);
    return -1;
  }
  return 0;
}

void rt_folder_free(struct rt_folder *f) {
  if (!f) return;
  free_strs(f->classes, f->nclasses);
  free(f->names), free(f->off), free(f->bad);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

const char *rt_folder_class(const struct rt_folder *f, int k) {
  return f && k >= 0 && k < f->nclasses ? f->classes[k] : NULL;
}

void rt_folder_truncate(rt_dataset *d, int n) {
  struct rt_folder *f = d->src;
  if (n >= d->n || n < 0) return;
  /* every class keeps its share: the files are in class order */
  for (int k = 0; k < n; k++) {
    int i = (int)((int64_t)k * d->n / n);
    f->off[k] = f->off[i], d->y[k] = d->y[i], f->bad[k] = f->bad[i];
  }
  d->n = n;
}

/* ---- one image ---- */

rt_fwork *rt_fwork_new(void) {
  rt_fwork *w = calloc(1, sizeof *w);
  if (w && !(w->dec = rt_imgdec_new())) free(w), w = NULL;
  return w;
}

void rt_fwork_free(rt_fwork *w) {
  if (!w) return;
  rt_imgdec_free(w->dec);
  free(w->file), free(w->tmp), free(w->kx), free(w->ky);
  free(w->lx), free(w->nx), free(w->ly), free(w->ny);
  free(w);
}

static int fgrow(float **p, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  float *q = realloc(*p, need * sizeof *q);
  if (!q) return -1;
  *p = q, *cap = need;
  return 0;
}

static int igrow(int **a, int **b, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  int *x = realloc(*a, need * sizeof *x);
  if (x) *a = x;
  int *y = x ? realloc(*b, need * sizeof *y) : NULL;
  if (!y) return -1;
  *b = y, *cap = need;
  return 0;
}

/* PIL's bilinear resampling weights (a triangle widened by the scale when
 * shrinking, so that every input pixel counts: antialiased) for the span
 * [b0, b1) of an input of `in` pixels onto `out` pixels. lo[o], cnt[o]:
 * the inputs of output o; k[o * ksize + t] their weights. */
static int coeffs(int in, double b0, double b1, int out, int **lo, int **cnt, size_t *icap,
                  float **k, size_t *kcap, int *ksize) {
  double scale = (b1 - b0) / out, fs = scale > 1 ? scale : 1, support = fs;
  *ksize = (int)ceil(support) * 2 + 1;
  if (igrow(lo, cnt, icap, (size_t)out) || fgrow(k, kcap, (size_t)out * (size_t)*ksize))
    return -1;
  for (int o = 0; o < out; o++) {
    double center = b0 + (o + 0.5) * scale, ww = 0;
    int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > in) xmax = in;
    if (xmax - xmin > *ksize) xmax = xmin + *ksize;
    if (xmax <= xmin) { /* a span past the edge: the nearest pixel */
      xmin = center < 0 ? 0 : in - 1 < (int)center ? in - 1 : (int)center;
      xmax = xmin + 1;
    }
    float *kk = *k + (size_t)o * (size_t)*ksize;
    for (int x = xmin; x < xmax; x++) {
      double t = fabs((x - center + 0.5) / fs), v = t < 1 ? 1 - t : 0;
      kk[x - xmin] = (float)v, ww += v;
    }
    for (int x = 0; x < xmax - xmin; x++) kk[x] = ww > 0 ? (float)(kk[x] / ww) : 1.0f / (float)(xmax - xmin);
    (*lo)[o] = xmin, (*cnt)[o] = xmax - xmin;
  }
  return 0;
}

int rt_resize_planes(const float *src, int planes, int ih, int iw, float *dst, int oh, int ow) {
  int *lx = NULL, *nx = NULL, *ly = NULL, *ny = NULL, kxs, kys, rc = -1;
  float *kx = NULL, *ky = NULL, *tmp = NULL;
  size_t lxcap = 0, kxcap = 0, lycap = 0, kycap = 0, tcap = 0;
  if (coeffs(iw, 0, iw, ow, &lx, &nx, &lxcap, &kx, &kxcap, &kxs) ||
      coeffs(ih, 0, ih, oh, &ly, &ny, &lycap, &ky, &kycap, &kys) ||
      fgrow(&tmp, &tcap, (size_t)ih * (size_t)ow))
    goto out;
  for (int p = 0; p < planes; p++) {
    const float *in = src + (size_t)p * (size_t)ih * (size_t)iw;
    float *o = dst + (size_t)p * (size_t)oh * (size_t)ow;
    for (int y = 0; y < ih; y++) /* horizontal, then vertical, as PIL does */
      for (int x = 0; x < ow; x++) {
        const float *kk = kx + (size_t)x * (size_t)kxs, *s = in + (size_t)y * iw + lx[x];
        float acc = 0;
        for (int t = 0; t < nx[x]; t++) acc += kk[t] * s[t];
        tmp[(size_t)y * ow + x] = acc;
      }
    for (int y = 0; y < oh; y++) {
      const float *kk = ky + (size_t)y * (size_t)kys;
      for (int x = 0; x < ow; x++) {
        float acc = 0;
        for (int t = 0; t < ny[y]; t++) acc += kk[t] * tmp[(size_t)(ly[y] + t) * ow + x];
        o[(size_t)y * ow + x] = acc;
      }
    }
  }
  rc = 0;
out:
  free(lx), free(nx), free(ly), free(ny), free(kx), free(ky), free(tmp);
  return rc;
}

/* The box (x0, y0, bw, bh) of an iw x ih image, resampled to c x oh x ow,
 * normalised, mirrored when flip. */
static int resample(rt_fwork *w, const uint8_t *px, int iw, int ih, int c, double x0, double y0,
                    double bw, double bh, int ow, int oh, int flip, const rt_norm *nm,
                    float *out) {
  int kxs, kys;
  if (coeffs(iw, x0, x0 + bw, ow, &w->lx, &w->nx, &w->lxcap, &w->kx, &w->kxcap, &kxs) ||
      coeffs(ih, y0, y0 + bh, oh, &w->ly, &w->ny, &w->lycap, &w->ky, &w->kycap, &kys))
    return -1;
  int ylo = w->ly[0], yhi = w->ly[oh - 1] + w->ny[oh - 1];
  for (int o = 0; o < oh; o++) {
    if (w->ly[o] < ylo) ylo = w->ly[o];
    if (w->ly[o] + w->ny[o] > yhi) yhi = w->ly[o] + w->ny[o];
  }
  size_t rows = (size_t)(yhi - ylo), row = (size_t)ow * (size_t)c;
  if (fgrow(&w->tmp, &w->tcap, rows * row)) return -1;
  for (int y = ylo; y < yhi; y++) { /* horizontal: rows ylo..yhi, interleaved */
    const uint8_t *src = px + (size_t)y * (size_t)iw * (size_t)c;
    float *dst = w->tmp + (size_t)(y - ylo) * row;
    for (int o = 0; o < ow; o++) {
      const float *kk = w->kx + (size_t)o * (size_t)kxs;
      const uint8_t *s = src + (size_t)w->lx[o] * (size_t)c;
      for (int ch = 0; ch < c; ch++) {
        float acc = 0;
        for (int t = 0; t < w->nx[o]; t++) acc += kk[t] * s[t * c + ch];
        dst[o * c + ch] = acc;
      }
    }
  }
  for (int ch = 0; ch < c; ch++) { /* vertical, then normalised into CHW */
    const float mul = 1.0f / (255.0f * nm->std[ch]), sub = nm->mean[ch] / nm->std[ch];
    for (int o = 0; o < oh; o++) {
      const float *kk = w->ky + (size_t)o * (size_t)kys;
      const float *s = w->tmp + (size_t)(w->ly[o] - ylo) * row + ch;
      float *dst = out + ((size_t)ch * (size_t)oh + (size_t)o) * (size_t)ow;
      for (int x = 0; x < ow; x++) {
        float acc = 0;
        for (int t = 0; t < w->ny[o]; t++) acc += kk[t] * s[(size_t)t * row + (size_t)x * c];
        dst[flip ? ow - 1 - x : x] = acc * mul - sub;
      }
    }
  }
  return 0;
}

/* torchvision's RandomResizedCrop.get_params: scale 0.08..1, aspect
 * 3/4..4/3 (log-uniform), ten tries, else the centre crop at the nearest
 * allowed aspect. */
static void rrc_box(rt_rng *r, int W, int H, double *x0, double *y0, double *bw, double *bh) {
  const double area = (double)W * H, lr0 = log(3.0 / 4.0), lr1 = log(4.0 / 3.0);
  for (int t = 0; t < 10; t++) {
    double target = area * (0.08 + 0.92 * rt_rng_uniform(r));
    double ar = exp(lr0 + (lr1 - lr0) * rt_rng_uniform(r));
    int w = (int)lround(sqrt(target * ar)), h = (int)lround(sqrt(target / ar));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      *y0 = rt_rng_below(r, (uint32_t)(H - h + 1));
      *x0 = rt_rng_below(r, (uint32_t)(W - w + 1));
      *bw = w, *bh = h;
      return;
    }
  }
  double in_ratio = (double)W / H;
  int w = W, h = H;
  if (in_ratio < 3.0 / 4.0) h = (int)lround(W / (3.0 / 4.0));
  else if (in_ratio > 4.0 / 3.0) w = (int)lround(H * (4.0 / 3.0));
  if (h > H) h = H;
  if (w > W) w = W;
  *x0 = (W - w) / 2, *y0 = (H - h) / 2, *bw = w, *bh = h;
}

/* Evaluation: the image resized so its shorter side is 8/7 of the input's
 * larger side (256 for 224), then the centre (torchvision's Resize(256),
 * CenterCrop(224)), as one box in the image's coordinates. */
static void centre_box(int W, int H, int ow, int oh, double *x0, double *y0, double *bw,
                       double *bh) {
  double f = (ow > oh ? ow : oh) * (8.0 / 7.0) / (W < H ? W : H);
  *bw = ow / f, *bh = oh / f;
  if (*bw > W) *bw = W;
  if (*bh > H) *bh = H;
  *x0 = (W - *bw) / 2, *y0 = (H - *bh) / 2;
}

static int load_one(const rt_dataset *d, rt_fwork *w, int i, const rt_norm *nm, int train,
                    int flip, uint64_t seed, float *out, char *why, size_t whylen) {
  const struct rt_folder *f = d->src;
  char path[PATH_LEN];
  size_t n;
  if (join(path, f->root, f->names + f->off[i])) return rt_fail(why, whylen, "path too long");
  if (read_file(w, path, &n, why, whylen)) return -1;
  rt_img_kind kind;
  int W, H, dw, dh, mirror = 0;
  if (rt_img_probe(w->file, n, n, &kind, &W, &H, why, whylen)) return -1;
  double x0, y0, bw, bh;
  if (train) {
    rt_rng r;
    rt_rng_seed(&r, seed);
    rrc_box(&r, W, H, &x0, &y0, &bw, &bh);
    if (flip) mirror = rt_rng_uniform(&r) < 0.5f;
  } else {
    centre_box(W, H, d->w, d->h, &x0, &y0, &bw, &bh);
  }
  double need = fmax(d->w / bw, d->h / bh);
  const uint8_t *px;
  if (rt_img_decode(w->dec, w->file, n, d->c, need > 1 ? 1 : need, &px, &dw, &dh, why, whylen))
    return -1;
  double sx = (double)dw / W, sy = (double)dh / H; /* a DCT-scaled decode */
  if (resample(w, px, dw, dh, d->c, x0 * sx, y0 * sy, bw * sx, bh * sy, d->w, d->h, mirror, nm,
               out))
    return rt_fail(why, whylen, "out of memory resizing it");
  return 0;
}

int rt_folder_image(const rt_dataset *d, rt_fwork *w, int i, const rt_norm *nm, int train,
                    int flip, uint64_t seed, float *out, ir_label *label, char *err,
                    size_t errlen) {
  struct rt_folder *f = d->src;
  char why[512];
  for (int t = 0; t < d->n; t++) {
    int j = (int)(((int64_t)i + t) % d->n);
    if (f->skip_bad) {
      pthread_mutex_lock(&f->mu);
      int bad = f->bad[j];
      pthread_mutex_unlock(&f->mu);
      if (bad) continue;
    }
    if (load_one(d, w, j, nm, train, flip, seed, out, why, sizeof why) == 0) {
      if (label) *label = d->y[j];
      return 0;
    }
    if (!f->skip_bad)
      return rt_fail(err, errlen, "%s/%s: %s", f->root, f->names + f->off[j], why);
    pthread_mutex_lock(&f->mu);
    if (!f->bad[j] && f->log)
      fprintf(f->log, "warning: %s/%s: %s (skipped)\n", f->root, f->names + f->off[j], why);
    f->bad[j] = 1;
    pthread_mutex_unlock(&f->mu);
  }
  return rt_fail(err, errlen, "%s: no usable image left", f->root);
}

void rt_folder_norm(const rt_dataset *d, rt_norm *nm) {
  rt_norm id = {.c = d->c};
  double s[4] = {0}, s2[4] = {0}, count = 0;
  for (int ch = 0; ch < 4; ch++) id.std[ch] = 1, nm->mean[ch] = 0, nm->std[ch] = 1;
  nm->c = d->c;
  int m = d->n < NORM_SAMPLE ? d->n : NORM_SAMPLE;
  size_t plane = (size_t)d->h * (size_t)d->w;
  float *img = malloc(plane * (size_t)d->c * sizeof *img);
  rt_fwork *w = rt_fwork_new();
  char why[512];
  for (int k = 0; img && w && k < m; k++) {
    int i = (int)((int64_t)k * d->n / m);
    /* a bad file is left out here; training reports it */
    if (load_one(d, w, i, &id, 0, 0, 0, img, why, sizeof why)) continue;
    for (int ch = 0; ch < d->c; ch++)
      for (size_t p = 0; p < plane; p++) {
        double v = img[(size_t)ch * plane + p];
        s[ch] += v, s2[ch] += v * v;
      }
    count += (double)plane;
  }
  free(img), rt_fwork_free(w);
  if (count == 0) return;
  for (int ch = 0; ch < d->c; ch++) {
    double mean = s[ch] / count, var = s2[ch] / count - mean * mean, sd = var > 0 ? sqrt(var) : 0;
    nm->mean[ch] = (float)mean;
    nm->std[ch] = sd > 1e-12 ? (float)sd : 1.0f;
  }
}
