/* test_driver.c: emits graph drivers, links them through cg_link against the
 * logging stand-in runtime (cg_test_rt.c, built as lib/ilnas/libilnas_rt.a
 * next to this test's bin/), runs them, and compares the log with the
 * schedule: the exact calls, in order, with the exact arguments, and the
 * blob byte for byte.
 *
 * usage: test_cg_driver <stand-in runtime .a> <scratch dir> */
#include "ilnasc/driver.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <llvm-c/Core.h>

#include "tests/check.h"

static const char *rt_lib;
static const char *work;

static char *path_in(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (!p)
    abort();
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf)
    abort();
  buf[n] = '\0';
  if (len)
    *len = n;
  return buf;
}

static int copy_file(const char *from, const char *to) {
  size_t n;
  char *data = read_all(from, &n);
  if (!data)
    return -1;
  FILE *f = fopen(to, "wb");
  int rc = f && fwrite(data, 1, n, f) == n ? 0 : -1;
  if (f && fclose(f) != 0)
    rc = -1;
  free(data);
  return rc;
}

static size_t count(const char *hay, const char *needle) {
  size_t k = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    k++;
  return k;
}

/* Runs a produced binary with the log path as its only argument; returns its
 * exit status, or -1 when it did not exit normally. */
static int run_model(const char *exe, const char *log) {
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    char *argv[] = {(char *)exe, (char *)log, NULL};
    execv(exe, argv);
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The log cg_test_rt.c must write for driver d. */
static char *expected_log(const cg_driver *d) {
  size_t cap = 256 + 2 * d->blob_size + 200 * (size_t)(d->n_fwd + d->n_bwd), n = 0;
  char *s = malloc(cap);
  if (!s)
    abort();
  n += (size_t)snprintf(s + n, cap - n, "argc 2\nsize %zu\nblob ", d->blob_size);
  for (size_t i = 0; i < d->blob_size; i++)
    n += (size_t)snprintf(s + n, cap - n, "%02x", d->blob[i]);
  n += (size_t)snprintf(s + n, cap - n, "\nsymbols match\n");
  for (int pass = 0; pass < 2; pass++) {
    const cg_call *calls = pass ? d->bwd : d->fwd;
    int nc = pass ? d->n_bwd : d->n_fwd;
    n += (size_t)snprintf(s + n, cap - n, pass ? "backward\n" : "forward\n");
    for (int i = 0; i < nc; i++) {
      n += (size_t)snprintf(s + n, cap - n, "%s x", calls[i].fn);
      for (int k = 0; k < calls[i].nargs; k++)
        n += (size_t)snprintf(s + n, cap - n, " %" PRId64, calls[i].args[k]);
      n += (size_t)snprintf(s + n, cap - n, "\n");
    }
  }
  snprintf(s + n, cap - n, "end\n");
  return s;
}

static void check_run(const char *exe, const cg_driver *d, const char *what) {
  char *log = path_in(work, "run.log");
  remove(log);
  int st = run_model(exe, log);
  CHECK(st == 42, "%s: model exited with %d, want 42 (il_main's 40 + argc)", what, st);
  char *got = read_all(log, NULL);
  char *want = expected_log(d);
  CHECK(got != NULL, "%s: no log written", what);
  if (got && strcmp(got, want) != 0) {
    size_t i = 0;
    while (got[i] && got[i] == want[i])
      i++;
    CHECK(0, "%s: log differs from the schedule at byte %zu:\n got: %.80s\nwant: %.80s",
          what, i, got + i, want + i);
  }
  free(got);
  free(want);
  free(log);
}

static const char *const names[] = {"rt_a0", "rt_a1", "rt_a2", "rt_a3", "rt_a4",
                                    "rt_a5", "rt_a6", "rt_a7", "rt_a8"};
static const int64_t special[] = {0, 1, -1, INT64_MAX, INT64_MIN, 4096, -123456789012345,
                                  (int64_t)1 << 40};

/* A schedule that visits every arity 0..8 (and two names per arity for 2 and
 * 8), repeats names, and passes extreme values through every argument
 * position, register and stack alike. */
static void fill_calls(cg_call *c, int n, uint64_t seed) {
  uint64_t r = seed;
  for (int i = 0; i < n; i++) {
    r = r * 6364136223846793005u + 1442695040888963407u;
    int arity = (int)((r >> 33) % 9);
    memset(&c[i], 0, sizeof c[i]);
    c[i].nargs = arity;
    c[i].fn = names[arity];
    if (arity == 2 && (r >> 20) % 2)
      c[i].fn = "rt_b2";
    if (arity == 8 && (r >> 20) % 2)
      c[i].fn = "rt_b8";
    for (int k = 0; k < arity; k++) {
      r = r * 6364136223846793005u + 1442695040888963407u;
      c[i].args[k] = (r >> 60) < 6 ? special[(r >> 40) % 8] : (int64_t)(r >> 11) - (1LL << 52);
    }
  }
}

static uint8_t blob[333];

static void make_blob(void) {
  uint32_t r = 12345;
  for (size_t i = 0; i < sizeof blob; i++) {
    r = r * 1103515245u + 12345u;
    blob[i] = (uint8_t)(r >> 16);
  }
  blob[0] = 0; /* NULs and 0xff inside must survive */
  blob[7] = 0xff;
  blob[sizeof blob - 1] = 0;
}

static cg_call fwd_small[60], bwd_small[45];

static void test_roundtrip(void) {
  char err[4096] = "";
  cg_driver d = {blob, sizeof blob, fwd_small, 60, bwd_small, 45};
  char *obj = path_in(work, "small.o"), *exe = path_in(work, "small");
  remove(exe);
  CHECK(cg_emit_object(&d, obj, err, sizeof err) == 0, "emit: %s", err);
  /* No ILNAS_RUNTIME_LIB: the stand-in is found next to bin/, in lib/ilnas/. */
  CHECK(cg_link(obj, exe, err, sizeof err) == 0, "link: %s", err);
  check_run(exe, &d, "round trip");
  free(obj);
  free(exe);
}

static void test_empty(void) {
  char err[4096] = "";
  cg_driver d = {NULL, 0, NULL, 0, NULL, 0};
  char *obj = path_in(work, "empty.o"), *exe = path_in(work, "empty");
  CHECK(cg_emit_object(&d, obj, err, sizeof err) == 0, "emit empty: %s", err);
  CHECK(cg_link(obj, exe, err, sizeof err) == 0, "link empty: %s", err);
  check_run(exe, &d, "empty driver");
  free(obj);
  free(exe);
}

static void test_llvm_text(void) {
  char err[4096] = "";
  cg_driver d = {blob, sizeof blob, fwd_small, 60, bwd_small, 45};
  char *ll = path_in(work, "small.ll");
  CHECK(cg_emit_llvm(&d, ll, err, sizeof err) == 0, "emit llvm: %s", err);
  char *text = read_all(ll, NULL);
  CHECK(text != NULL, "no %s", ll);
  if (text) {
    static const char *const want[] = {
        "define void @il_graph_forward(", "define void @il_graph_backward(",
        "define i32 @main(i32",           "declare i32 @il_main(i32",
        "@il_ir_blob = constant [333 x i8]", "@il_ir_size = constant i64 333",
        "declare void @rt_a0(i8*)",
        "declare void @rt_a8(i8*, i64, i64, i64, i64, i64, i64, i64, i64)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
      CHECK(strstr(text, want[i]) != NULL, "%s lacks '%s'", ll, want[i]);
    const char *all[] = {"rt_a0", "rt_a1", "rt_a2", "rt_b2", "rt_a3", "rt_a4",
                         "rt_a5", "rt_a6", "rt_a7", "rt_a8", "rt_b8"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
      char decl[64], call[64];
      snprintf(decl, sizeof decl, "declare void @%s(", all[i]);
      snprintf(call, sizeof call, "call void @%s(", all[i]);
      size_t uses = 0;
      for (int k = 0; k < 60; k++)
        uses += strcmp(fwd_small[k].fn, all[i]) == 0;
      for (int k = 0; k < 45; k++)
        uses += strcmp(bwd_small[k].fn, all[i]) == 0;
      CHECK(count(text, decl) == (uses ? 1u : 0u), "%s declared %zu times, used %zu times",
            all[i], count(text, decl), uses);
      CHECK(count(text, call) == uses, "%zu calls of %s in the IR, %zu in the schedule",
            count(text, call), all[i], uses);
    }
  }
  free(text);
  free(ll);
}

/* Each bad driver must be refused with a message naming the problem, and
 * must leave no object file behind. */
static void refuse(const cg_driver *d, const char *must_say, const char *what) {
  char err[4096] = "";
  char *obj = path_in(work, "refused.o");
  remove(obj);
  CHECK(cg_emit_object(d, obj, err, sizeof err) == -1, "%s: accepted", what);
  CHECK(strstr(err, must_say) != NULL, "%s: message '%s' does not mention '%s'", what, err,
        must_say);
  CHECK(access(obj, F_OK) != 0, "%s: object file written anyway", what);
  err[0] = '\0';
  CHECK(cg_emit_llvm(d, obj, err, sizeof err) == -1, "%s: accepted by cg_emit_llvm", what);
  CHECK(err[0] != '\0', "%s: cg_emit_llvm gave no message", what);
  free(obj);
}

static void test_refusals(void) {
  cg_call mism[3] = {{"rt_x", 2, {1, 2}}, {"rt_a0", 0, {0}}, {"rt_x", 3, {1, 2, 3}}};
  cg_driver d = {blob, 16, mism, 3, NULL, 0};
  refuse(&d, "'rt_x' is called with 3 arguments", "nargs mismatch within forward");

  cg_call f1[1] = {{"rt_y", 1, {5}}}, b1[1] = {{"rt_y", 4, {1, 2, 3, 4}}};
  cg_driver d2 = {blob, 16, f1, 1, b1, 1};
  refuse(&d2, "'rt_y' is called with 4 arguments", "nargs mismatch between forward and backward");

  cg_call many[1] = {{"rt_z", 9, {0}}};
  cg_driver d3 = {blob, 16, many, 1, NULL, 0};
  refuse(&d3, "9 arguments", "nine arguments");
  many[0].nargs = -1;
  refuse(&d3, "-1 arguments", "negative argument count");

  cg_call unnamed[1] = {{NULL, 0, {0}}};
  cg_driver d4 = {blob, 16, NULL, 0, unnamed, 1};
  refuse(&d4, "no function name", "missing name");

  static const char *const reserved[] = {"il_main", "main", "il_ir_blob", "il_ir_size",
                                         "il_graph_forward", "il_graph_backward",
                                         "il_graph_forward.part0"};
  for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
    cg_call r[1] = {{reserved[i], 1, {0}}};
    cg_driver d5 = {blob, 16, r, 1, NULL, 0};
    refuse(&d5, reserved[i], "reserved name");
  }

  cg_driver d6 = {NULL, 10, NULL, 0, NULL, 0};
  refuse(&d6, "blob", "blob size without data");
  cg_driver d7 = {blob, 16, NULL, 3, NULL, 0};
  refuse(&d7, "forward", "calls without an array");
  refuse(NULL, "driver", "no driver");

  char err[4096] = "";
  cg_driver ok = {blob, 16, NULL, 0, NULL, 0};
  CHECK(cg_emit_object(&ok, "/nonexistent-dir/x.o", err, sizeof err) == -1 &&
            strstr(err, "/nonexistent-dir/x.o"),
        "unwritable object path: '%s'", err);
}

static char *saved_env(const char *name) {
  const char *v = getenv(name);
  return v ? strdup(v) : NULL;
}

static void restore_env(const char *name, char *v) {
  if (v)
    setenv(name, v, 1);
  else
    unsetenv(name);
  free(v);
}

static void test_link_errors(void) {
  char err[4096] = "";
  char *obj = path_in(work, "small.o"), *exe = path_in(work, "never");
  char *old_rt = saved_env("ILNAS_RUNTIME_LIB"), *old_cc = saved_env("CC");

  char *missing = path_in(work, "no/such/libilnas_rt.a");
  setenv("ILNAS_RUNTIME_LIB", missing, 1);
  CHECK(cg_link(obj, exe, err, sizeof err) == -1, "missing runtime accepted");
  CHECK(strstr(err, missing) && strstr(err, "ILNAS_RUNTIME_LIB"),
        "missing runtime: message '%s' names neither the path nor the variable", err);
  setenv("ILNAS_RUNTIME_LIB", work, 1);
  CHECK(cg_link(obj, exe, err, sizeof err) == -1, "directory as runtime accepted");
  CHECK(strstr(err, "not a regular file") != NULL, "directory as runtime: '%s'", err);
  free(missing);

  setenv("ILNAS_RUNTIME_LIB", rt_lib, 1);
  setenv("CC", "false", 1);
  CHECK(cg_link(obj, exe, err, sizeof err) == -1, "failing compiler accepted");
  CHECK(strstr(err, "exit status 1") && strstr(err, "false -o") && strstr(err, obj) &&
            strstr(err, rt_lib),
        "failing compiler: message '%s' does not show the command", err);

  setenv("CC", "/nonexistent/bin/cc", 1);
  CHECK(cg_link(obj, exe, err, sizeof err) == -1, "absent compiler accepted");
  CHECK(strstr(err, "cannot run") && strstr(err, "/nonexistent/bin/cc"),
        "absent compiler: '%s'", err);

  /* CC is a word list: "cc -Wl,--no-undefined" must run cc with the flag. */
  setenv("CC", "cc -Wl,--no-undefined", 1);
  char *exe2 = path_in(work, "small-cc-words");
  CHECK(cg_link(obj, exe2, err, sizeof err) == 0, "CC with words: %s", err);
  free(exe2);

  restore_env("ILNAS_RUNTIME_LIB", old_rt);
  restore_env("CC", old_cc);
  free(obj);
  free(exe);
}

static void test_spaces(void) {
  char err[4096] = "";
  char *dir = path_in(work, "dir with space");
  mkdir(dir, 0755);
  char *lib = path_in(dir, "lib rt copy.a"), *obj = path_in(dir, "model obj.o"),
       *exe = path_in(dir, "model exe");
  CHECK(copy_file(rt_lib, lib) == 0, "cannot copy %s to %s", rt_lib, lib);
  char *old_rt = saved_env("ILNAS_RUNTIME_LIB");
  setenv("ILNAS_RUNTIME_LIB", lib, 1);
  cg_driver d = {blob, sizeof blob, fwd_small, 60, bwd_small, 45};
  CHECK(cg_emit_object(&d, obj, err, sizeof err) == 0, "emit with spaces: %s", err);
  CHECK(cg_link(obj, exe, err, sizeof err) == 0, "link with spaces: %s", err);
  check_run(exe, &d, "paths with spaces");
  restore_env("ILNAS_RUNTIME_LIB", old_rt);
  free(dir);
  free(lib);
  free(obj);
  free(exe);
}

/* Long schedules are cut into pieces of a few hundred calls; the order must
 * survive the cut, including a last piece of one call. */
static void test_pieces(void) {
  enum { NF = 257, NB = 256 };
  static cg_call f[NF], b[NB];
  char err[4096] = "";
  fill_calls(f, NF, 3);
  fill_calls(b, NB, 4);
  cg_driver d = {blob, 1, f, NF, b, NB};
  char *obj = path_in(work, "pieces.o"), *exe = path_in(work, "pieces");
  CHECK(cg_emit_object(&d, obj, err, sizeof err) == 0, "emit pieces: %s", err);
  CHECK(cg_link(obj, exe, err, sizeof err) == 0, "link pieces: %s", err);
  check_run(exe, &d, "257 + 256 calls");
  free(obj);
  free(exe);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_big(void) {
  enum { NF = 3000, NB = 2000 };
  char err[4096] = "";
  cg_call *f = malloc(NF * sizeof *f), *b = malloc(NB * sizeof *b);
  if (!f || !b)
    abort();
  fill_calls(f, NF, 7);
  fill_calls(b, NB, 8);
  cg_driver d = {blob, sizeof blob, f, NF, b, NB};
  char *obj = path_in(work, "big.o"), *exe = path_in(work, "big");
  double t0 = now_s();
  CHECK(cg_emit_object(&d, obj, err, sizeof err) == 0, "emit big: %s", err);
  double t1 = now_s();
  CHECK(cg_link(obj, exe, err, sizeof err) == 0, "link big: %s", err);
  double t2 = now_s();
  printf("codegen: %d-call driver: emit %.0f ms, link %.0f ms, total %.0f ms\n", NF + NB,
         1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t2 - t0));
  check_run(exe, &d, "5000-call driver");
  free(obj);
  free(exe);
  free(f);
  free(b);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <stand-in runtime .a> <scratch dir>\n", argv[0]);
    return 2;
  }
  rt_lib = argv[1];
  work = argv[2];
  if (mkdir(work, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "cannot create %s: %s\n", work, strerror(errno));
    return 2;
  }
  /* The lookup relative to this executable is part of what is tested. */
  unsetenv("ILNAS_RUNTIME_LIB");
  make_blob();
  fill_calls(fwd_small, 60, 1);
  fill_calls(bwd_small, 45, 2);

  test_roundtrip();
  test_empty();
  test_llvm_text();
  test_refusals();
  test_link_errors();
  test_spaces();
  test_pieces();
  test_big();

  LLVMShutdown();
  if (failures) {
    fprintf(stderr, "codegen: %d check(s) failed\n", failures);
    return 1;
  }
  printf("codegen: all checks passed\n");
  return 0;
}
