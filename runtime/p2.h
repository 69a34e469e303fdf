/* p2.h: phase II's gradients on the host, and the ranking of missing
 * units by them.
 *
 * The units and their order are the search's (search.h): the missing
 * units of every weighted layer, dead ones included; a unit's score is
 * the L2 norm of a gradient over it (summed in double), and the best come
 * first, ties to the lowest start. The ranking reads α by its bits and
 * allocates for the missing units it finds: a wide template's are
 * millions, a compact graph's (packed.h) few.
 *
 * rt_p2 is the host implementation of a backend's phase II operations
 * (backend.h: p2_grad, p2_top, ...) over its own dense_grad and host
 * views: the host step keeps its slots in one. The device step keeps them
 * on the device instead (cuda/step.c) with the same arithmetic.
 *
 *   rt_p2 p = {0};
 *   rt_p2_grad(&p, b, 0, images, labels, count, n, &loss); // g
 *   rt_p2_top(&p, b, k, units, &got);                      // AddCandidates
 *   rt_p2_hyper(&p, b, lr);  ... rt_p2_restore(&p, b);     // W*, then W
 *   rt_p2_free(&p);
 */
#ifndef ILNAS_RT_P2_H
#define ILNAS_RT_P2_H

#include <stdint.h>

#include "runtime/backend.h"

/* Every missing unit of g under a (scores 0), malloc'd into *out; the
 * count, or -1 when out of memory. */
int64_t rt_units_missing(const ir_graph *g, const ir_arch *a, rt_unit **out);
/* The L2 norm of g1 + g2 (g2 may be NULL) over u, summed in double. */
float rt_unit_norm(const rt_unit *u, const float *g1, const float *g2);
/* qsort's order: score descending, then start ascending. */
int rt_unit_order(const void *a, const void *b);
/* Partitions u[0..n) so that its k best by rt_unit_order come first. */
void rt_units_select(rt_unit *u, int64_t n, int64_t k);
/* The k missing units of a with the largest norm of grad, sorted, none of
 * norm 0, into out (k of them at most); how many, or -1 when out of
 * memory. */
int64_t rt_units_top(const ir_graph *g, const ir_arch *a, const float *grad, int64_t k, rt_unit *out);

typedef struct rt_p2 {
  float *slot[2];        /* n_params each, allocated at first use */
  int64_t n, cap;        /* the hyper step's changes: where, and W there */
  int64_t *at;
  float *was;
} rt_p2;

void rt_p2_free(rt_p2 *p);
/* The operations of backend.h on b, whose dense_grad, views and edits
 * they use; 0, or -1 with the reason in b->error. */
int rt_p2_grad(rt_p2 *p, rt_backend *b, int slot, const float *images, const ir_label *labels,
               int count, int n, double *loss);
int rt_p2_top(rt_p2 *p, rt_backend *b, int64_t k, rt_unit *out, int64_t *got);
int rt_p2_score(rt_p2 *p, rt_backend *b, rt_unit *u, int64_t n);
int rt_p2_hyper(rt_p2 *p, rt_backend *b, float lr);
int rt_p2_restore(rt_p2 *p, rt_backend *b);
float *rt_p2_slot(rt_p2 *p, rt_backend *b, int slot, int write);

#endif
