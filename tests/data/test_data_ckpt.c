/* test_data_ckpt.c: the checkpoint container: round trips, every
 * truncation and every single-byte corruption refused, and the atomic
 * write (failures leave the destination as it was and no temporary file
 * behind). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/ckpt.h"
#include "testutil.h"

static char err[512];

/* Number of directory entries other than . and ..; a leftover temporary
 * file shows up here. */
static int entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return n;
}

static rt_ckpt_writer *sample(int variant) {
  static uint8_t big[100000];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7 + (size_t)variant);
  double d[3] = {1.5, -2.25, 1e300};
  rt_ckpt_writer *w = rt_ckpt_writer_new();
  CHECK(w != NULL);
  CHECK(rt_ckpt_add(w, "IR  ", "graph", 5) == 0);
  CHECK(rt_ckpt_add(w, "EMPT", NULL, 0) == 0);
  CHECK(rt_ckpt_add(w, "DBLS", d, sizeof d) == 0);
  CHECK(rt_ckpt_add(w, "WGTS", big, variant ? 1000 : sizeof big) == 0);
  CHECK(rt_ckpt_add(w, "RNG1", &variant, sizeof variant) == 0);
  return w;
}

static void check_sample(const rt_ckpt *c, int variant) {
  size_t n = 99;
  const uint8_t *p = rt_ckpt_get(c, "IR  ", &n);
  CHECK(p && n == 5 && memcmp(p, "graph", 5) == 0);
  p = rt_ckpt_get(c, "EMPT", &n);
  CHECK(p != NULL && n == 0); /* present but empty is not absent */
  const double *dp = rt_ckpt_get(c, "DBLS", &n);
  /* Payloads sit on 8-byte boundaries, so doubles can be read in place. */
  CHECK(dp && n == 24 && (uintptr_t)dp % 8 == 0);
  if (dp) CHECK(dp[0] == 1.5 && dp[1] == -2.25 && dp[2] == 1e300);
  p = rt_ckpt_get(c, "WGTS", &n);
  CHECK(p && n == (variant ? 1000u : 100000u) && (uintptr_t)p % 8 == 0);
  int bad = 0;
  for (size_t i = 0; p && i < n; i++) bad += p[i] != (uint8_t)(i * 7 + (size_t)variant);
  CHECK(bad == 0);
  int v = -1;
  p = rt_ckpt_get(c, "RNG1", &n);
  CHECK(p && n == sizeof v);
  if (p) memcpy(&v, p, sizeof v);
  CHECK(v == variant);
  n = 99;
  CHECK(rt_ckpt_get(c, "NONE", &n) == NULL && n == 0);
  CHECK(rt_ckpt_get(c, "WGT ", NULL) == NULL);
}

static rt_ckpt *read_ck(const char *path) {
  err[0] = '\0';
  return rt_ckpt_read(path, err, sizeof err);
}

static void test_round_trip(const char *root) {
  const char *path = tu_path(root, "a.ckpt");
  rt_ckpt_writer *w = sample(0);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  rt_ckpt *c = read_ck(path);
  CHECK(c != NULL);
  if (c) check_sample(c, 0);
  rt_ckpt_free(c);
  CHECK(entries(root) == 1);

  /* The bytes on disk, field by field: the format is the contract. */
  w = rt_ckpt_writer_new();
  CHECK(rt_ckpt_add(w, "ABCD", "xyz", 3) == 0);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  size_t n;
  uint8_t *b = tu_read(path, &n);
  const uint8_t want[] = {'I', 'L', 'N', 'A', 'S', 'C', 'K', '1', 1, 0, 0, 0, 1, 0, 0, 0,
                          'A', 'B', 'C', 'D', 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
                          'x', 'y', 'z', 0, 0, 0, 0, 0};
  CHECK(n == sizeof want + 4 && memcmp(b, want, sizeof want) == 0);
  /* CRC-32 of the bytes before it, little-endian, checked against a
   * bitwise implementation rather than zlib's own. */
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < sizeof want; i++) {
    crc ^= want[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  crc ^= 0xffffffffu;
  if (n == sizeof want + 4)
    CHECK(b[40] == (crc & 0xff) && b[41] == (crc >> 8 & 0xff) && b[42] == (crc >> 16 & 0xff) &&
          b[43] == crc >> 24);
  free(b);

  /* No sections at all is a valid checkpoint too. */
  w = rt_ckpt_writer_new();
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  c = read_ck(path);
  CHECK(c != NULL && rt_ckpt_get(c, "WGTS", NULL) == NULL);
  rt_ckpt_free(c);
  tu_rm_tree(path);
}

/* A small checkpoint, so that every prefix and every byte can be tried. */
static uint8_t *small_file(const char *path, size_t *n) {
  rt_ckpt_writer *w = rt_ckpt_writer_new();
  uint8_t junk[17];
  for (int i = 0; i < 17; i++) junk[i] = (uint8_t)(i * 29 + 3);
  CHECK(rt_ckpt_add(w, "AAAA", junk, 3) == 0);
  CHECK(rt_ckpt_add(w, "BBBB", NULL, 0) == 0);
  CHECK(rt_ckpt_add(w, "CCCC", junk, 17) == 0);
  CHECK(rt_ckpt_add(w, "DDDD", junk, 8) == 0);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  return tu_read(path, n);
}

static void test_truncation(const char *root) {
  const char *path = tu_path(root, "small.ckpt"), *cut = tu_path(root, "cut.ckpt");
  size_t n;
  uint8_t *b = small_file(path, &n);
  int refused = 0, named = 0;
  for (size_t len = 0; len < n; len++) {
    tu_write(cut, b, len);
    rt_ckpt *c = read_ck(cut);
    refused += c == NULL;
    named += strstr(err, "truncated") != NULL && strstr(err, cut) != NULL;
    if (c || !strstr(err, "truncated")) fprintf(stderr, "  cut at %zu: \"%s\"\n", len, err);
    rt_ckpt_free(c);
  }
  CHECK(refused == (int)n && named == (int)n);
  tu_write(cut, b, n);
  rt_ckpt *c = read_ck(cut);
  CHECK(c != NULL); /* the whole file still reads: the loop tested only the cuts */
  rt_ckpt_free(c);
  /* And one byte too many. */
  uint8_t *longer = malloc(n + 1);
  memcpy(longer, b, n);
  longer[n] = 0;
  tu_write(cut, longer, n + 1);
  c = read_ck(cut);
  CHECK(c == NULL);
  rt_ckpt_free(c);
  free(longer);
  free(b);
  tu_rm_tree(path);
  tu_rm_tree(cut);
}

/* What a damaged byte at offset i of small_file() must be reported as;
 * NULL where several reports are right (a damaged count or length can
 * read as a truncation or as bytes left over). */
static const char *damage_report(size_t i, size_t n) {
  static const size_t headers[4] = {16, 40, 56, 96}; /* AAAA, BBBB, CCCC, DDDD */
  if (i < 8) return "not an ilnas checkpoint";
  if (i < 12) return "unsupported version";
  if (i < 16) return NULL;
  if (i >= n - 4) return "checksum mismatch (file corrupted)";
  for (int k = 0; k < 4; k++) {
    if (i >= headers[k] + 4 && i < headers[k] + 8) return "reserved field is not zero";
    if (i >= headers[k] + 8 && i < headers[k] + 16) return NULL;
  }
  return "checksum mismatch (file corrupted)"; /* tags, payloads, padding */
}

static void test_corruption(const char *root) {
  const char *path = tu_path(root, "small.ckpt"), *bad = tu_path(root, "bad.ckpt");
  size_t n;
  uint8_t *b = small_file(path, &n);
  CHECK(n == 124); /* the layout damage_report() describes */
  int accepted = 0;
  for (size_t i = 0; i < n; i++) {
    /* every single-bit flip and the all-bits flip of byte i */
    for (int k = 0; k <= 8; k++) {
      uint8_t mask = k < 8 ? (uint8_t)(1u << k) : 0xff;
      b[i] ^= mask;
      tu_write(bad, b, n);
      b[i] ^= mask;
      rt_ckpt *c = read_ck(bad);
      if (c) {
        fprintf(stderr, "  byte %zu ^ 0x%02x accepted\n", i, mask);
        accepted++;
      } else if (!strstr(err, bad)) {
        fprintf(stderr, "  byte %zu: message without the path: \"%s\"\n", i, err);
        accepted++;
      }
      const char *want = damage_report(i, n);
      if (!c && want && !strstr(err, want)) {
        fprintf(stderr, "  byte %zu ^ 0x%02x: \"%s\", expected \"%s\"\n", i, mask, err, want);
        tu_failures++;
      }
      rt_ckpt_free(c);
    }
  }
  CHECK(accepted == 0);
  /* Specific messages. */
  uint8_t v[4];
  memcpy(v, b + 8, 4);
  b[8] = 2;
  tu_write(bad, b, n);
  rt_ckpt *c = read_ck(bad);
  CHECK(c == NULL);
  CHECK_HAS(err, "unsupported version 2");
  memcpy(b + 8, v, 4);
  b[n - 1] ^= 1;
  tu_write(bad, b, n);
  c = read_ck(bad);
  CHECK(c == NULL);
  CHECK_HAS(err, "checksum mismatch (file corrupted)");
  tu_write(bad, "hello, world, this is text", 26);
  c = read_ck(bad);
  CHECK(c == NULL);
  CHECK_HAS(err, "not an ilnas checkpoint");
  c = read_ck(tu_path(root, "absent.ckpt"));
  CHECK(c == NULL);
  CHECK_HAS(err, "absent.ckpt");
  CHECK_HAS(err, strerror(ENOENT));
  c = read_ck(root);
  CHECK(c == NULL);
  CHECK_HAS(err, root);
  free(b);
  tu_rm_tree(path);
  tu_rm_tree(bad);
}

/* Files a buggy or hostile writer could make: damaged, but with a CRC that
 * matches. The layout checks must refuse them on their own. */
static void put_le(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void write_forged(const char *path, uint8_t *b, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n - 4; i++) {
    crc ^= b[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  put_le(b + n - 4, crc ^ 0xffffffffu, 4);
  tu_write(path, b, n);
}

static void test_forged(const char *root) {
  const char *path = tu_path(root, "small.ckpt"), *bad = tu_path(root, "forged.ckpt");
  size_t n;
  uint8_t *b = small_file(path, &n), *f = malloc(n);
  const struct { size_t off; uint64_t v; int bytes; const char *want; } cases[] = {
      {12, 3, 4, "4 unexpected bytes after the last section"}, /* one section too few */
      {12, 5, 4, "truncated"},                                 /* one too many */
      {12, 0xffffffffu, 4, "truncated"},                       /* absurd count: no calloc */
      {56 + 8, (uint64_t)1 << 62, 8, "truncated"},             /* absurd length: no malloc */
      {96 + 8, 0, 8, "8 unexpected bytes"},                    /* shorter DDDD */
      {96 + 8, 9, 8, "truncated"},                             /* longer DDDD */
      {40 + 4, 1, 4, "reserved field is not zero"},
      {56, 0x41414141u, 4, "duplicate section 'AAAA'"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    memcpy(f, b, n);
    put_le(f + cases[k].off, cases[k].v, cases[k].bytes);
    write_forged(bad, f, n);
    rt_ckpt *c = read_ck(bad);
    CHECK(c == NULL);
    CHECK_HAS(err, cases[k].want);
    rt_ckpt_free(c);
  }
  /* The forger itself is right: an unchanged copy reads. */
  memcpy(f, b, n);
  write_forged(bad, f, n);
  rt_ckpt *c = read_ck(bad);
  CHECK(c != NULL);
  rt_ckpt_free(c);
  free(f);
  free(b);
  tu_rm_tree(path);
  tu_rm_tree(bad);
}

/* Writes that must fail: the message names the path and the reason, the
 * directory is left as it was. */
static void expect_write_fail(const char *path, const char *dir, int entries_before,
                              const char *reason, int line) {
  rt_ckpt_writer *w = sample(1);
  err[0] = '\0';
  int rc = rt_ckpt_write(w, path, err, sizeof err);
  rt_ckpt_writer_free(w);
  if (rc != -1) {
    fprintf(stderr, "%s:%d: write to %s succeeded\n", __FILE__, line, path);
    tu_failures++;
    return;
  }
  tu_check_has(__FILE__, line, err, path);
  if (reason) tu_check_has(__FILE__, line, err, reason);
  if (dir && entries(dir) != entries_before) {
    fprintf(stderr, "%s:%d: %s has %d entries, expected %d\n", __FILE__, line, dir, entries(dir),
            entries_before);
    tu_failures++;
  }
}
#define EXPECT_WRITE_FAIL(path, dir, k, reason) expect_write_fail(path, dir, k, reason, __LINE__)

static void test_write_failures(const char *root) {
  /* A directory the process may not write to. Root ignores permissions,
   * so there the other cases below carry the test. */
  const char *ro = tu_subdir(root, "readonly");
  if (geteuid() != 0) {
    chmod(ro, 0500);
    EXPECT_WRITE_FAIL(tu_path(ro, "x.ckpt"), ro, 0, strerror(EACCES));
    chmod(ro, 0700);
  } else {
    printf("note: running as root; the read-only directory case is covered by the others\n");
  }
  /* A directory that does not exist, and a "directory" that is a file. */
  EXPECT_WRITE_FAIL(tu_path(root, "nope/x.ckpt"), NULL, 0, strerror(ENOENT));
  const char *file = tu_path(root, "plainfile");
  tu_write(file, "x", 1);
  EXPECT_WRITE_FAIL(tu_path(file, "x.ckpt"), NULL, 0, strerror(ENOTDIR));
  tu_rm_tree(file);

  /* Failing half-way through the data: the temporary file is already there
   * and must go, and the old checkpoint must stay whole. A file size limit
   * makes write() fail with EFBIG (SIGXFSZ ignored) even for root. */
  const char *dir = tu_subdir(root, "fsize");
  const char *path = tu_path(dir, "run.ckpt");
  rt_ckpt_writer *w = sample(0);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  size_t n0;
  uint8_t *before = tu_read(path, &n0);
  struct rlimit old, lim;
  CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
  lim = old;
  lim.rlim_cur = 512;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
    path = tu_path(dir, "run.ckpt");
    EXPECT_WRITE_FAIL(path, dir, 1, strerror(EFBIG));
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    size_t n1;
    uint8_t *after = tu_read(tu_path(dir, "run.ckpt"), &n1);
    CHECK(n1 == n0 && memcmp(before, after, n0) == 0);
    free(after);
  } else {
    CHECK(!"setrlimit(RLIMIT_FSIZE) failed");
  }
  signal(SIGXFSZ, prev);
  free(before);

  /* The destination is a directory: rename() fails after everything was
   * written and synced, and the temporary file must still go. */
  const char *dest = tu_subdir(dir, "dest.ckpt");
  (void)dest;
  EXPECT_WRITE_FAIL(tu_path(dir, "dest.ckpt"), dir, 2, "rename");
  CHECK(entries(tu_path(dir, "dest.ckpt")) == 0);
}

static void test_replace(const char *root) {
  const char *dir = tu_subdir(root, "replace");
  char path[4096];
  snprintf(path, sizeof path, "%s/run.ckpt", dir);
  rt_ckpt_writer *w = sample(0);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  size_t n0;
  uint8_t *old = tu_read(path, &n0);
  /* A reader that opened the old checkpoint keeps seeing all of it: the new
   * one arrives as a new file under the name, never written in place. */
  FILE *held = fopen(path, "rb");
  CHECK(held != NULL);
  struct stat s0, s1;
  CHECK(stat(path, &s0) == 0);
  w = sample(1);
  CHECK(rt_ckpt_write(w, path, err, sizeof err) == 0);
  rt_ckpt_writer_free(w);
  CHECK(stat(path, &s1) == 0 && s0.st_ino != s1.st_ino);
  rt_ckpt *c = read_ck(path);
  CHECK(c != NULL);
  if (c) check_sample(c, 1);
  rt_ckpt_free(c);
  if (held) {
    uint8_t *seen = malloc(n0 + 1);
    size_t got = fread(seen, 1, n0 + 1, held);
    CHECK(got == n0 && memcmp(seen, old, n0) == 0);
    free(seen);
    fclose(held);
  }
  CHECK(entries(dir) == 1); /* no temporary file left */
  free(old);
  /* A path without a directory part writes in the current directory. */
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd) && chdir(dir) == 0) {
    w = sample(1);
    CHECK(rt_ckpt_write(w, "here.ckpt", err, sizeof err) == 0);
    rt_ckpt_writer_free(w);
    c = read_ck("here.ckpt");
    CHECK(c != NULL);
    rt_ckpt_free(c);
    CHECK(chdir(cwd) == 0);
    CHECK(entries(dir) == 2);
  } else {
    CHECK(!"chdir");
  }
}

int main(void) {
  const char *root = tu_mkdtemp("ilnas_ckpt");
  test_round_trip(root);
  test_truncation(root);
  test_corruption(root);
  test_forged(root);
  test_write_failures(root);
  test_replace(root);
  tu_rm_tree(root);
  if (tu_failures) {
    fprintf(stderr, "%d check(s) failed\n", tu_failures);
    return 1;
  }
  printf("checkpoints: all checks passed\n");
  return 0;
}
