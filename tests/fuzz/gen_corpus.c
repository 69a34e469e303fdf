/* gen_corpus: seeds for the fuzzers. For each model file, its serialized IR
 * (DIR/ir/NAME.ir) and a checkpoint holding it (DIR/ckpt/NAME.ckpt), when
 * the IR is small enough to fuzz quickly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "runtime/ckpt.h"

enum { MAX_SEED = 64 * 1024 };

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: gen_corpus DIR MODEL.ilnas...\n");
    return 2;
  }
  int wrote = 0;
  for (int i = 2; i < argc; i++) {
    fe_model m;
    FILE *null = fopen("/dev/null", "w");
    int bad = fe_parse_file(argv[i], &m, null);
    fclose(null);
    if (bad) continue;
    ir_graph *g = ir_build(&m, stderr);
    fe_model_free(&m);
    uint8_t *b;
    size_t n;
    if (!g || ir_serialize(g, NULL, &b, &n) != 0) {
      ir_free(g);
      continue;
    }
    const char *base = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
    char path[4096], err[512];
    if (n <= MAX_SEED) {
      snprintf(path, sizeof path, "%s/ir/%s.ir", argv[1], base);
      FILE *f = fopen(path, "wb");
      if (f) fwrite(b, 1, n, f), fclose(f), wrote++;
      rt_ckpt_writer *w = rt_ckpt_writer_new();
      snprintf(path, sizeof path, "%s/ckpt/%s.ckpt", argv[1], base);
      float zero[4] = {0};
      if (w && rt_ckpt_add(w, "IRGR", b, n) == 0 && rt_ckpt_add(w, "PARM", zero, sizeof zero) == 0 &&
          rt_ckpt_write(w, path, err, sizeof err) == 0)
        wrote++;
      rt_ckpt_writer_free(w);
    }
    free(b);
    ir_free(g);
  }
  printf("gen_corpus: %d seeds\n", wrote);
  return wrote ? 0 : 1;
}
