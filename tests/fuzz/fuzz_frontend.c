/* fuzz_frontend: libFuzzer target over the frontend. Any bytes are a model
 * file; fe_parse_string must answer with diagnostics, never crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static FILE *null;
  if (!null) null = fopen("/dev/null", "w");
  char *src = malloc(n + 1);
  if (!src) return 0;
  memcpy(src, data, n);
  src[n] = 0;
  fe_model m;
  if (fe_parse_string("fuzz.ilnas", src, &m, null) == 0) fe_model_free(&m);
  free(src);
  return 0;
}
