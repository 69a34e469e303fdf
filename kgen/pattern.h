/* pattern.h: a layer's weight mask as index tables, the one form every
 * kernel generator (kgen/sparse.c for the CPU, kgen/ptx.c for the GPU)
 * builds its tables from. Plain C, no LLVM: exporters and tools may use it.
 *
 * The mask is [nout][nin][taps] bytes, 1 = active (conv: [cout][cin][k*k];
 * linear: [out][in][1]; NULL = all active). A pattern lists its active
 * weights by full index o * nin * taps + i * taps + t, grouped into rows
 * by output (KG_BY_OUTPUT: row o) or by input (KG_BY_INPUT: row i), in
 * ascending index within a row, so a row's entries run in the mask's own
 * order and the whole list, read by output, is every active weight once.
 *
 *   kg_pattern p;
 *   if (kg_pattern_init(&p, d->wm, d->cout, d->cin, d->k * d->k, KG_BY_INPUT))
 *     return -1;                         // too large, or out of memory
 *   for (int64_t ci = 0; ci < p.rows; ci++)
 *     for (int32_t j = p.start[ci]; j < p.start[ci + 1]; j++)
 *       use(p.idx[j]);                   // w[p.idx[j]] reads input ci
 *   kg_pattern_free(&p);
 */
#ifndef ILNAS_KG_PATTERN_H
#define ILNAS_KG_PATTERN_H

#include <stdint.h>

typedef enum { KG_BY_OUTPUT, KG_BY_INPUT } kg_pattern_by;

typedef struct kg_pattern {
  int32_t *start;   /* [rows + 1]: row r's entries are idx[start[r] .. start[r+1]) */
  int32_t *idx;     /* [nnz]: full weight indices (at least one slot) */
  int64_t rows, nnz;
} kg_pattern;

/* 0, or -1 (p zeroed) when the mask has 2^31 entries or more, or memory
 * runs out. */
int kg_pattern_init(kg_pattern *p, const uint8_t *mask, int64_t nout, int64_t nin, int64_t taps,
                    kg_pattern_by by);
void kg_pattern_free(kg_pattern *p);

/* Active entries among mask[0 .. n) (NULL: all n). */
int64_t kg_mask_count(const uint8_t *mask, int64_t n);

#endif
