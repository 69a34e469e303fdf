/* test_jit_perf: with ILNAS_PERF set, the CPU backend hands every kernel
 * it links to perf's jitdump (jit-PID.dump under $JITDUMPDIR), named
 * after its layer's shape, so that `perf inject --jit` can name the
 * kernels in a profile; without it, no file. Each case runs in a child
 * process: the dump belongs to the process (LLVM's listener is one per
 * process and reads the environment once). */
#define _DEFAULT_SOURCE /* DT_DIR, mkdtemp */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jitutil.h"
#include "runtime/kernels.h"
#include "runtime/cpu/cpu.h"

/* Prepares a conv and a linear layer on the JIT path; exits 0 on
 * success (in the child). */
static int child(void) {
  char err[256];
  ir_graph *g = jt_graph(IR_CONV, 6, 8, 8, 5, 3, 1, 1);
  g->layers[1].kind = IR_LINEAR, g->layers[1].cin = 20, g->layers[1].cout = 7;
  rt_kernels *b = rt_kernels_new("cpu", g, err, sizeof err);
  if (!b) return fprintf(stderr, "cpu backend: %s\n", err), 1;
  rt_cpu_set_dense_threshold(b, 2.0, 2.0);
  uint8_t *wm = jt_mask(6 * 5 * 9, 1, 0.3), *bm = jt_mask(5, 1, 1.0);
  uint8_t *lm = jt_mask(20 * 7, 1, 0.5), *lb = jt_mask(7, 1, 1.0);
  int rc = b->prepare(b, 0, wm, bm, err, sizeof err) || b->prepare(b, 1, lm, lb, err, sizeof err);
  if (rc) fprintf(stderr, "prepare: %s\n", err);
  b->free(b);
  free(wm), free(bm), free(lm), free(lb);
  jt_graph_free(g);
  return rc;
}

/* Runs child() with ILNAS_PERF=perf and JITDUMPDIR=dir; its pid. */
static pid_t run(const char *perf, const char *dir) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    if (perf) setenv("ILNAS_PERF", perf, 1);
    else unsetenv("ILNAS_PERF");
    setenv("JITDUMPDIR", dir, 1);
    _exit(child());
  }
  int st = 0;
  waitpid(pid, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child (ILNAS_PERF=%s) failed", perf ? perf : "");
  return pid;
}

/* The file named jit-PID.dump somewhere under dir (LLVM makes
 * dir/.debug/jit/llvm-IR-jit-DATE-XXXX/), read whole; NULL if none. */
static char *find_dump(const char *dir, const char *name, size_t *n) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char *found = NULL;
  for (struct dirent *e; !found && (e = readdir(d));) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (!strcmp(e->d_name, name)) {
      FILE *f = fopen(path, "rb");
      if (!f) continue;
      fseek(f, 0, SEEK_END);
      long len = ftell(f);
      rewind(f);
      found = malloc((size_t)len + 1);
      *n = fread(found, 1, (size_t)len, f);
      fclose(f);
    } else if (e->d_type == DT_DIR) {
      found = find_dump(path, name, n);
    }
  }
  closedir(d);
  return found;
}

static int has(const char *buf, size_t n, const char *s) {
  size_t k = strlen(s);
  for (size_t i = 0; i + k <= n; i++)
    if (!memcmp(buf + i, s, k)) return 1;
  return 0;
}

int main(void) {
  char dir[] = "/tmp/ilnas_perf.XXXXXX";
  if (!mkdtemp(dir)) return fprintf(stderr, "mkdtemp failed\n"), 1;
  char name[64];
  size_t n = 0;

  pid_t pid = run("1", dir);
  snprintf(name, sizeof name, "jit-%ld.dump", (long)pid);
  char *dump = find_dump(dir, name, &n);
  CHECK(dump, "ILNAS_PERF=1 wrote no %s under %s", name, dir);
  if (dump) {
    uint32_t magic = 0;
    memcpy(&magic, dump, n >= 4 ? 4 : 0);
    CHECK(magic == 0x4A695444, "%s: magic %08x, not jitdump's", name, magic);
    /* every kernel, by the names kernel_names gives them */
    const char *k[] = {"_conv6x8x8to5_fwd", "_conv6x8x8to5_bwd_data", "_conv6x8x8to5_bwd_weight",
                       "_linear20to7_fwd", "_linear20to7_bwd"};
    for (int i = 0; i < 5; i++) CHECK(has(dump, n, k[i]), "%s lacks the kernel %s", name, k[i]);
    free(dump);
  }

  pid = run("0", dir);
  snprintf(name, sizeof name, "jit-%ld.dump", (long)pid);
  CHECK(!(dump = find_dump(dir, name, &n)), "ILNAS_PERF=0 wrote %s", name);
  free(dump);
  pid = run(NULL, dir);
  snprintf(name, sizeof name, "jit-%ld.dump", (long)pid);
  CHECK(!(dump = find_dump(dir, name, &n)), "no ILNAS_PERF, yet %s", name);
  free(dump);

  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
  if (failures) fprintf(stderr, "test_jit_perf: %d failures\n", failures);
  else printf("test_jit_perf: ok\n");
  return failures != 0;
}
