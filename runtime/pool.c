/* pool.c: workers sleep on a condition variable between jobs; a job is
 * published with a generation number, so a worker never runs one twice. */
#include "runtime/pool.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

struct rt_pool {
  int n;                 /* threads, the caller included */
  pthread_t *th;
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  unsigned long gen;     /* bumped for every job */
  int tasks, pending;    /* tasks of the current job, not yet finished */
  int quit;
  void (*fn)(void *, int);
  void *arg;
};

typedef struct worker_arg {
  rt_pool *p;
  int id;
} worker_arg;

static void *worker(void *a) {
  rt_pool *p = ((worker_arg *)a)->p;
  int id = ((worker_arg *)a)->id;
  free(a);
  unsigned long seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->quit && p->gen == seen) pthread_cond_wait(&p->work, &p->mu);
    if (p->quit) break;
    seen = p->gen;
    if (id >= p->tasks) continue;
    void (*fn)(void *, int) = p->fn;
    void *arg = p->arg;
    pthread_mutex_unlock(&p->mu);
    fn(arg, id);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

rt_pool *rt_pool_new(int threads) {
  rt_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->th = calloc((size_t)(threads > 1 ? threads : 1), sizeof *p->th);
  if (!p->th || pthread_mutex_init(&p->mu, NULL)) {
    free(p->th), free(p);
    return NULL;
  }
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->done, NULL);
  p->n = 1;
  for (int i = 1; i < threads; i++) {
    worker_arg *a = malloc(sizeof *a);
    if (!a) break;
    *a = (worker_arg){p, i};
    if (pthread_create(&p->th[i], NULL, worker, a)) {
      free(a);
      break;
    }
    p->n++;
  }
  return p;
}

int rt_pool_threads(const rt_pool *p) { return p->n; }

void rt_pool_run(rt_pool *p, int n, void (*fn)(void *arg, int task), void *arg) {
  assert(n <= p->n);
  if (n <= 1) {
    fn(arg, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn, p->arg = arg, p->tasks = n, p->pending = n - 1;
  p->gen++;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void rt_pool_free(rt_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++) pthread_join(p->th[i], NULL);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  free(p->th);
  free(p);
}
