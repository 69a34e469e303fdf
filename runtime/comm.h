/* comm.h: the ranks of a data-parallel run.
 *
 * Started by Open MPI's launcher (`mpirun -np N ./model train ...`), a
 * model binary is one rank of N. rt_comm_open finds the launcher's
 * environment, opens Open MPI's library (libmpi.so.40) with dlopen and
 * joins MPI_COMM_WORLD; the library is never linked, so that the same
 * binary runs alone on a machine without MPI. Started alone, there is no
 * comm: NULL, which every function below takes as the one rank of a run
 * of one.
 *
 * The sums are a reduction to rank 0 and a broadcast from it, so that
 * every rank holds the same bits: the ranks' parameters must stay the
 * same, and their searches take the same α decisions, where an
 * all-reduce may round differently on different ranks.
 *
 *   rt_comm *c;
 *   if (rt_comm_open(&c, err, sizeof err)) ... no MPI where mpirun ran us ...
 *   int lo, hi;
 *   rt_comm_part(c, batch, &lo, &hi);          // this rank's images
 *   rt_comm_sum(c, grads, n, err, sizeof err); // the ranks' sum, everywhere
 *   rt_comm_close(c);
 */
#ifndef ILNAS_RT_COMM_H
#define ILNAS_RT_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_comm rt_comm;

/* *out: the comm of a rank started by mpirun, or NULL when the process was
 * started alone. 0, or -1 when mpirun started it and MPI cannot be opened
 * or joined (err says why). */
int rt_comm_open(rt_comm **out, char *err, size_t errlen);
/* MPI_Finalize; NULL: nothing. */
void rt_comm_close(rt_comm *c);
/* Ends every rank with code (MPI_Abort): a rank that fails alone would
 * leave the others waiting in the next collective. NULL: returns. */
void rt_comm_abort(rt_comm *c, int code);

int rt_comm_rank(const rt_comm *c); /* 0 for NULL */
int rt_comm_size(const rt_comm *c); /* 1 for NULL */
/* The ranks on this machine (the launcher's count), 1 for NULL. */
int rt_comm_local_size(const rt_comm *c);

/* This rank's part [*lo, *hi) of n items: n * rank / size to
 * n * (rank + 1) / size, every item in one part, the parts within one
 * item of each other's size. */
void rt_comm_part(const rt_comm *c, int n, int *lo, int *hi);

/* v[0..n) becomes the sum over the ranks, the same bits on every rank. 0,
 * or -1 with err. */
int rt_comm_sum(rt_comm *c, float *v, int64_t n, char *err, size_t errlen);
int rt_comm_sum_d(rt_comm *c, double *v, int64_t n, char *err, size_t errlen);
/* bytes of p from rank 0 to every rank. */
int rt_comm_bcast(rt_comm *c, void *p, int64_t bytes, char *err, size_t errlen);
/* *same: 1 when every rank passed the same h, else 0 (on every rank). */
int rt_comm_same(rt_comm *c, uint64_t h, int *same, char *err, size_t errlen);

#endif
