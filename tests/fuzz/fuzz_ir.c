/* fuzz_ir: libFuzzer target over the IR loader, the part of a checkpoint
 * (and of a produced binary) that describes the network. ir_deserialize
 * refuses or returns a graph that every reader may trust: this target then
 * dumps it, schedules it, counts it and checks that it serializes back to
 * the same bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static FILE *null;
  if (!null) null = fopen("/dev/null", "w");
  char err[512];
  ir_graph *g = ir_deserialize(data, n, err, sizeof err);
  if (!g) {
    if (!err[0]) abort(); /* a refusal always says why */
    return 0;
  }
  ir_dump(g, null);
  ir_count c = ir_count_params(g, &g->arch);
  if (c.active < 0 || c.active + c.candidate != c.total || c.total > g->n_params) abort();
  ir_call *fwd, *bwd;
  int nf, nb;
  if (ir_schedule(g, &fwd, &nf, &bwd, &nb) == 0) free(fwd), free(bwd);
  uint8_t *b;
  size_t bn;
  if (ir_serialize(g, NULL, &b, &bn) == 0) {
    if (bn != n || memcmp(b, data, n) != 0) abort(); /* round trip is exact */
    free(b);
  }
  ir_free(g);
  return 0;
}
