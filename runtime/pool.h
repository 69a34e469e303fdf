/* pool.h: a small pool of worker threads for batch-split ops.
 *
 * Started once per execution state, so a training step does not pay for
 * thread creation: rt_pool_run(p, n, fn, arg) runs fn(arg, 0..n-1), task 0
 * on the calling thread, and returns when all are done.
 *
 *   rt_pool *p = rt_pool_new(2);
 *   rt_pool_run(p, 2, work, &job);
 *   rt_pool_free(p);
 */
#ifndef ILNAS_RT_POOL_H
#define ILNAS_RT_POOL_H

typedef struct rt_pool rt_pool;

/* threads - 1 workers (the caller is the first). NULL when threads cannot
 * be started; callers then run everything themselves. */
rt_pool *rt_pool_new(int threads);
/* Threads it really has (starting one can fail), the caller included. */
int rt_pool_threads(const rt_pool *p);
/* n <= rt_pool_threads(p). */
void rt_pool_run(rt_pool *p, int n, void (*fn)(void *arg, int task), void *arg);
void rt_pool_free(rt_pool *p);

#endif
