/* fuzz_ckpt: libFuzzer target over the checkpoint loader: the container
 * (rt_ckpt_read: magic, lengths, CRC) and the IR section in it. The CRC
 * stops most mutations at the container; the IR target (fuzz_ir) covers
 * what lies behind it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ir/ir.h"
#include "runtime/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static char path[256];
  if (!path[0]) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/ilnas-fuzz-ckpt-%d.ckpt", dir ? dir : "/tmp", (int)getpid());
  }
  FILE *f = fopen(path, "wb");
  if (!f) return 0;
  fwrite(data, 1, n, f);
  fclose(f);
  char err[512];
  err[0] = 0;
  rt_ckpt *c = rt_ckpt_read(path, err, sizeof err);
  if (!c) {
    if (!err[0]) abort();
    return 0;
  }
  size_t k;
  const void *ir = rt_ckpt_get(c, "IRGR", &k);
  if (ir) ir_free(ir_deserialize(ir, k, err, sizeof err));
  rt_ckpt_free(c);
  return 0;
}
