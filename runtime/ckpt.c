/* ckpt.c: the checkpoint container.
 *
 * Layout, every integer little-endian whatever the host:
 *
 *   "ILNASCK1"  u32 version (1)  u32 section count
 *   per section: 4-byte tag, u32 reserved (0), u64 length, the bytes,
 *                zero padding to a multiple of 8
 *   u32 CRC-32 (zlib) of everything before it
 *
 * The 16-byte section header and the padding keep every payload at a
 * file offset that is a multiple of 8, so rt_ckpt_get can hand out
 * pointers into the read buffer that are aligned for doubles and u64s. */
#include "ckpt.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/err.h"

#define CK_MAGIC "ILNASCK1"
enum { CK_VERSION = 1, CK_HEADER = 16, CK_SECTION = 16, CK_TRAILER = 4 };

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* zlib's crc32 takes a uInt length; checkpoints can pass 4 GiB. */
static uLong crc_update(uLong crc, const uint8_t *p, size_t n) {
  while (n) {
    uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
    crc = crc32(crc, p, k);
    p += k;
    n -= k;
  }
  return crc;
}

static size_t pad8(size_t n) { return (8 - n % 8) % 8; }

/* ---- writing ---- */

typedef struct {
  char tag[4];
  const uint8_t *data;
  size_t n;
  uint8_t *owned; /* data, when the writer copied it */
} ck_section;

struct rt_ckpt_writer {
  ck_section *s;
  size_t n, cap;
};

rt_ckpt_writer *rt_ckpt_writer_new(void) { return calloc(1, sizeof(rt_ckpt_writer)); }

static int add(rt_ckpt_writer *w, const char *tag, const void *data, size_t n, int copy) {
  assert(w && tag && strlen(tag) == 4);
  /* Sections are written by code, not by users: a repeated tag is a bug in
   * the caller, and the reader would only ever see the first copy. */
  for (size_t i = 0; i < w->n; i++) assert(memcmp(w->s[i].tag, tag, 4) != 0);
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 8;
    ck_section *s = realloc(w->s, cap * sizeof *s);
    if (!s) return -1;
    w->s = s;
    w->cap = cap;
  }
  uint8_t *owned = NULL;
  if (copy) {
    if (!(owned = malloc(n ? n : 1))) return -1;
    if (n) memcpy(owned, data, n);
  }
  ck_section *s = &w->s[w->n++];
  memcpy(s->tag, tag, 4);
  s->data = copy ? owned : data;
  s->owned = owned;
  s->n = n;
  return 0;
}

int rt_ckpt_add(rt_ckpt_writer *w, const char *tag, const void *data, size_t n) {
  return add(w, tag, data, n, 1);
}

int rt_ckpt_add_ref(rt_ckpt_writer *w, const char *tag, const void *data, size_t n) {
  return add(w, tag, data, n, 0);
}

int rt_ckpt_add_own(rt_ckpt_writer *w, const char *tag, void *data, size_t n) {
  if (add(w, tag, data, n, 0)) {
    free(data);
    return -1;
  }
  w->s[w->n - 1].owned = data;
  return 0;
}

void rt_ckpt_writer_free(rt_ckpt_writer *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n; i++) free(w->s[i].owned);
  free(w->s);
  free(w);
}

typedef struct { /* a file descriptor with a small buffer and a running CRC */
  int fd;
  uLong crc;
  size_t len;
  uint8_t buf[1 << 16];
} ck_out;

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int out_flush(ck_out *o) {
  int rc = write_all(o->fd, o->buf, o->len);
  o->len = 0;
  return rc;
}

/* Adds bytes to the file and to the CRC; large payloads bypass the buffer. */
static int out_put(ck_out *o, const void *data, size_t n) {
  const uint8_t *p = data;
  o->crc = crc_update(o->crc, p, n);
  if (n > sizeof o->buf - o->len) {
    if (out_flush(o)) return -1;
    if (n >= sizeof o->buf) return write_all(o->fd, p, n);
  }
  memcpy(o->buf + o->len, p, n);
  o->len += n;
  return 0;
}

static int write_body(ck_out *o, const rt_ckpt_writer *w) {
  static const uint8_t zeros[8];
  uint8_t h[CK_SECTION];
  memcpy(h, CK_MAGIC, 8);
  put32(h + 8, CK_VERSION);
  put32(h + 12, (uint32_t)w->n);
  if (out_put(o, h, CK_HEADER)) return -1;
  for (size_t i = 0; i < w->n; i++) {
    const ck_section *s = &w->s[i];
    memcpy(h, s->tag, 4);
    put32(h + 4, 0);
    put64(h + 8, (uint64_t)s->n);
    if (out_put(o, h, CK_SECTION) || out_put(o, s->data, s->n) ||
        out_put(o, zeros, pad8(s->n)))
      return -1;
  }
  put32(h, (uint32_t)o->crc);
  if (out_put(o, h, CK_TRAILER)) return -1;
  return out_flush(o);
}

/* The directory that holds path, in dir (4096 bytes); -1 (ENAMETOOLONG)
 * when it does not fit. */
static int dir_of(const char *path, char dir[4096]) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    size_t k = (size_t)(slash - path);
    if (k >= 4096) {
      errno = ENAMETOOLONG;
      return -1;
    }
    memcpy(dir, path, k);
    dir[k] = '\0';
  }
  return 0;
}

/* The directory entry made by rename() is only durable once the directory
 * itself is synced; without this a crash can bring back the old file. */
static int sync_dir(const char *path) {
  char dir[4096];
  if (dir_of(path, dir)) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  /* Some file systems cannot sync a directory; they report EINVAL, and
   * there is nothing more to do there. */
  if (rc && errno == EINVAL) rc = 0;
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

/* Removes what killed writers left in path's directory: NAME.ckpt.tmp.PID
 * files whose process no longer exists. A live PID may be a concurrent
 * writer (or a reused PID): its file stays. Best effort, silent. */
static void remove_stale_tmp(const char *path) {
  char dir[4096];
  if (dir_of(path, dir)) return;
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *t = strstr(e->d_name, ".ckpt.tmp.");
    if (!t) continue;
    const char *digits = t + strlen(".ckpt.tmp.");
    char *end;
    errno = 0;
    long pid = strtol(digits, &end, 10);
    if (errno || end == digits || *end || *digits < '1' || *digits > '9' ||
        pid > INT_MAX || pid == (long)getpid())
      continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours */
    char full[4096 + 256];
    snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
    unlink(full);
  }
  closedir(d);
}

int rt_ckpt_write(const rt_ckpt_writer *w, const char *path, char *err, size_t errlen) {
  assert(w && path);
  if (w->n > UINT32_MAX) return rt_fail(err, errlen, "%s: too many sections", path);
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 32);
  ck_out *o = malloc(sizeof *o);
  if (!tmp || !o) {
    free(tmp); free(o);
    return rt_fail(err, errlen, "%s: out of memory", path);
  }
  /* Same directory as the destination, so that rename() stays on one file
   * system and is atomic; the pid keeps concurrent writers apart. */
  snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    int e = errno;
    free(tmp); free(o);
    return rt_fail(err, errlen, "%s: cannot create temporary file: %s", path, strerror(e));
  }
  o->fd = fd;
  o->crc = crc32(0L, Z_NULL, 0);
  o->len = 0;
  const char *step = "write";
  int rc = write_body(o, w);
  if (!rc) { step = "fsync"; rc = fsync(fd); }
  int e = errno;
  if (close(fd) && !rc) { e = errno; step = "close"; rc = -1; }
  if (!rc) { step = "rename"; rc = rename(tmp, path); e = errno; }
  if (rc) {
    unlink(tmp);
    free(tmp); free(o);
    return rt_fail(err, errlen, "%s: %s failed: %s", path, step, strerror(e));
  }
  free(tmp); free(o);
  remove_stale_tmp(path);
  /* Past the rename the new checkpoint is in place; a failed directory
   * sync only means it may not survive a power cut, which the caller
   * should hear about all the same. */
  if (sync_dir(path))
    return rt_fail(err, errlen, "%s: written, but syncing its directory failed: %s", path,
                strerror(errno));
  return 0;
}

/* ---- reading ---- */

typedef struct {
  char tag[4];
  size_t off, n; /* payload offset in the buffer, length */
} ck_entry;

struct rt_ckpt {
  uint8_t *buf;
  ck_entry *e;
  size_t n;
};

void rt_ckpt_free(rt_ckpt *c) {
  if (!c) return;
  free(c->buf);
  free(c->e);
  free(c);
}

/* Tags come from the file: print them without trusting them to be text. */
static const char *tag_text(const uint8_t *t, char *out) {
  for (int i = 0; i < 4; i++) out[i] = (t[i] >= 0x20 && t[i] < 0x7f) ? (char)t[i] : '?';
  out[4] = '\0';
  return out;
}

/* Checks the layout of a file image held in memory; fills c->e. */
static int parse(rt_ckpt *c, size_t size, const char *path, char *err, size_t errlen) {
  const uint8_t *b = c->buf;
  char tt[5];
  if (memcmp(b, CK_MAGIC, size < 8 ? size : 8) != 0)
    return rt_fail(err, errlen, "%s: not an ilnas checkpoint", path);
  if (size < 12) return rt_fail(err, errlen, "%s: truncated (%zu bytes, no header)", path, size);
  uint32_t version = get32(b + 8);
  if (version != CK_VERSION)
    return rt_fail(err, errlen, "%s: unsupported version %u (this build reads version %d)", path,
                (unsigned)version, CK_VERSION);
  if (size < CK_HEADER + CK_TRAILER)
    return rt_fail(err, errlen, "%s: truncated (%zu bytes, no header)", path, size);
  uint32_t count = get32(b + 12);
  const size_t end = size - CK_TRAILER; /* where the sections must stop */
  /* Bound the count by what the file can hold before allocating for it. */
  if (count > (end - CK_HEADER) / CK_SECTION)
    return rt_fail(err, errlen, "%s: truncated (%u sections announced, %zu bytes)", path,
                (unsigned)count, size);
  c->e = calloc(count ? count : 1, sizeof *c->e);
  if (!c->e) return rt_fail(err, errlen, "%s: out of memory", path);
  size_t off = CK_HEADER;
  for (uint32_t i = 0; i < count; i++) {
    if (end - off < CK_SECTION)
      return rt_fail(err, errlen, "%s: truncated (section %u of %u starts past the end)", path,
                  (unsigned)i + 1, (unsigned)count);
    const uint8_t *h = b + off;
    uint64_t len = get64(h + 8);
    off += CK_SECTION;
    if (len > end - off || pad8((size_t)len) > end - off - (size_t)len)
      return rt_fail(err, errlen, "%s: truncated (section '%s' of %llu bytes runs past the end of "
                  "the file, %zu bytes)", path, tag_text(h, tt), (unsigned long long)len, size);
    if (get32(h + 4) != 0)
      return rt_fail(err, errlen, "%s: section '%s': reserved field is not zero (file corrupted)",
                  path, tag_text(h, tt));
    for (uint32_t j = 0; j < i; j++)
      if (memcmp(c->e[j].tag, h, 4) == 0)
        return rt_fail(err, errlen, "%s: duplicate section '%s' (file corrupted)", path,
                    tag_text(h, tt));
    memcpy(c->e[i].tag, h, 4);
    c->e[i].off = off;
    c->e[i].n = (size_t)len;
    off += (size_t)len + pad8((size_t)len);
  }
  if (off != end)
    return rt_fail(err, errlen, "%s: %zu unexpected bytes after the last section (file corrupted)",
                path, end - off);
  if ((uint32_t)crc_update(crc32(0L, Z_NULL, 0), b, end) != get32(b + end))
    return rt_fail(err, errlen, "%s: checksum mismatch (file corrupted)", path);
  c->n = count;
  return 0;
}

rt_ckpt *rt_ckpt_read(const char *path, char *err, size_t errlen) {
  assert(path);
  FILE *f = fopen(path, "rb");
  if (!f) {
    rt_fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  /* The file size, not any length inside the file, decides how much is
   * allocated: a corrupt length can only fail a check below. */
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    int e = errno;
    fclose(f);
    rt_fail(err, errlen, "%s: cannot read: %s", path, strerror(e));
    return NULL;
  }
  if (!S_ISREG(st.st_mode) || (uintmax_t)st.st_size > SIZE_MAX) {
    fclose(f);
    rt_fail(err, errlen, "%s: not a regular file of a size this machine can hold", path);
    return NULL;
  }
  size_t size = (size_t)st.st_size;
  rt_ckpt *c = calloc(1, sizeof *c);
  if (c) c->buf = malloc(size ? size : 1);
  if (!c || !c->buf) {
    fclose(f);
    rt_ckpt_free(c);
    rt_fail(err, errlen, "%s: out of memory for %zu bytes", path, size);
    return NULL;
  }
  size_t got = fread(c->buf, 1, size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || got != size) {
    rt_ckpt_free(c);
    if (bad) rt_fail(err, errlen, "%s: read error", path);
    else rt_fail(err, errlen, "%s: truncated while being read (%zu of %zu bytes)", path, got, size);
    return NULL;
  }
  if (parse(c, size, path, err, errlen)) {
    rt_ckpt_free(c);
    return NULL;
  }
  return c;
}

const void *rt_ckpt_get(const rt_ckpt *c, const char *tag, size_t *n) {
  assert(c && tag && strlen(tag) == 4);
  for (size_t i = 0; i < c->n; i++)
    if (memcmp(c->e[i].tag, tag, 4) == 0) {
      if (n) *n = c->e[i].n;
      return c->buf + c->e[i].off;
    }
  if (n) *n = 0;
  return NULL;
}
