/* pool.c: a job is published with a generation number, so a worker never
 * runs one twice. Between jobs the workers, and the caller waiting for
 * them, spin for a while before sleeping on a condition variable: the
 * graph ops of a training step dispatch a job every millisecond or so,
 * and waking a sleeping thread costs tens of microseconds (measured: 65
 * us a dispatch on a 2-core VM, where an idle core is halted), which
 * spinning turns into well under one. */
#include "runtime/pool.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Polls before sleeping: about a third of a millisecond of pauses, longer
 * than the gaps between the ops of a step, far shorter than a step; every
 * YIELD-th poll gives the core to any other thread that wants it, so that
 * more threads than cores (or a second job on the machine) are not
 * starved by the spinning. */
enum { SPIN = 1 << 14, YIELD = 64 };

static void relax(int i) {
  if (i % YIELD == YIELD - 1) sched_yield();
  else CPU_RELAX();
}

struct rt_pool {
  int n;                 /* threads, the caller included */
  pthread_t *th;
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  atomic_ulong gen;      /* bumped for every job, after fn, arg, tasks */
  atomic_int pending;    /* workers not yet done with the current job */
  atomic_int quit;
  int sleepers;          /* workers waiting on `work` (under mu) */
  int tasks;
  void (*fn)(void *, int);
  void *arg;
};

typedef struct worker_arg {
  rt_pool *p;
  int id;
} worker_arg;

/* Waits until gen moves past `seen` or the pool quits; returns gen. */
static unsigned long next_job(rt_pool *p, unsigned long seen) {
  unsigned long g = seen;
  for (int i = 0; i < SPIN; i++) {
    g = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) return g;
    relax(i);
  }
  pthread_mutex_lock(&p->mu);
  p->sleepers++;
  while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
         !atomic_load_explicit(&p->quit, memory_order_relaxed))
    pthread_cond_wait(&p->work, &p->mu);
  p->sleepers--;
  pthread_mutex_unlock(&p->mu);
  return g;
}

static void *worker(void *a) {
  rt_pool *p = ((worker_arg *)a)->p;
  int id = ((worker_arg *)a)->id;
  free(a);
  unsigned long seen = 0;
  for (;;) {
    seen = next_job(p, seen);
    if (atomic_load_explicit(&p->quit, memory_order_relaxed)) break;
    if (id < p->tasks) p->fn(p->arg, id);
    /* every worker answers every job, so that the caller never publishes
     * the next one while a worker may still read this one's fields */
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&p->mu); /* the caller may be asleep */
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
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
  atomic_init(&p->gen, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->quit, 0);
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
  p->fn = fn, p->arg = arg, p->tasks = n;
  atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  pthread_mutex_lock(&p->mu); /* a worker checks gen under mu before it sleeps */
  if (p->sleepers) pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  fn(arg, 0);
  for (int i = 0; i < SPIN; i++) {
    if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return;
    relax(i);
  }
  pthread_mutex_lock(&p->mu);
  while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
    pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

void rt_pool_free(rt_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  atomic_store(&p->quit, 1);
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->n; i++) pthread_join(p->th[i], NULL);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->done);
  pthread_mutex_destroy(&p->mu);
  free(p->th);
  free(p);
}
