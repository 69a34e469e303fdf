/* pattern.c: mask to index tables (see pattern.h). */
#include "kgen/pattern.h"

#include <stdlib.h>
#include <string.h>

int64_t kg_mask_count(const uint8_t *mask, int64_t n) {
  if (!mask) return n;
  int64_t c = 0;
  for (int64_t i = 0; i < n; i++) c += mask[i] != 0;
  return c;
}

/* Counting pass, then a fill in index order: by output the rows come out
 * in order directly; by input each entry goes to its row's cursor, which
 * keeps a row's entries ascending since indices are visited ascending. */
int kg_pattern_init(kg_pattern *p, const uint8_t *mask, int64_t nout, int64_t nin, int64_t taps,
                    kg_pattern_by by) {
  memset(p, 0, sizeof *p);
  if (nout < 0 || nin < 0 || taps < 0) return -1;
  if (nout && nin && taps && (nin * taps > INT32_MAX / nout || nout * nin * taps >= INT32_MAX)) return -1;
  const int64_t total = nout * nin * taps, per = nin * taps;
  p->rows = by == KG_BY_OUTPUT ? nout : nin;
  p->nnz = kg_mask_count(mask, total);
  p->start = calloc((size_t)p->rows + 1, sizeof *p->start);
  p->idx = malloc((size_t)(p->nnz ? p->nnz : 1) * sizeof *p->idx);
  int32_t *cur = by == KG_BY_INPUT ? malloc((size_t)(p->rows ? p->rows : 1) * sizeof *cur) : NULL;
  if (!p->start || !p->idx || (by == KG_BY_INPUT && !cur)) {
    free(cur);
    kg_pattern_free(p);
    return -1;
  }
  for (int64_t w = 0; w < total; w++)
    if (!mask || mask[w]) p->start[(by == KG_BY_OUTPUT ? w / per : w % per / taps) + 1]++;
  for (int64_t r = 0; r < p->rows; r++) p->start[r + 1] += p->start[r];
  if (by == KG_BY_OUTPUT) {
    int64_t k = 0;
    for (int64_t w = 0; w < total; w++)
      if (!mask || mask[w]) p->idx[k++] = (int32_t)w;
  } else {
    memcpy(cur, p->start, (size_t)p->rows * sizeof *cur);
    for (int64_t w = 0; w < total; w++)
      if (!mask || mask[w]) p->idx[cur[w % per / taps]++] = (int32_t)w;
    free(cur);
  }
  return 0;
}

void kg_pattern_free(kg_pattern *p) {
  free(p->start), free(p->idx);
  memset(p, 0, sizeof *p);
}
