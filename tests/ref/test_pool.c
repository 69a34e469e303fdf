/* test_pool: every task of every job runs exactly once, and a job's
 * results are all visible when rt_pool_run returns: jobs back to back
 * (workers caught spinning), after pauses (workers asleep), with fewer
 * tasks than threads, and from a pool that outlives many jobs. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "runtime/pool.h"
#include "tests/check.h"

enum { THREADS = 4, JOBS = 20000 };

typedef struct job {
  int id;
  atomic_int runs[THREADS];
  int plain[THREADS]; /* written without atomics: visible after the join */
} job;

static void task(void *arg, int t) {
  job *j = arg;
  atomic_fetch_add(&j->runs[t], 1);
  j->plain[t] = j->id;
}

static void nap(long ns) {
  struct timespec ts = {0, ns};
  nanosleep(&ts, NULL);
}

int main(void) {
  rt_pool *p = rt_pool_new(THREADS);
  CHECK(p, "pool");
  if (!p) return 1;
  int n = rt_pool_threads(p), bad = 0;
  for (int k = 0; k < JOBS && !bad; k++) {
    job j = {.id = k + 1};
    for (int t = 0; t < THREADS; t++) atomic_init(&j.runs[t], 0), j.plain[t] = 0;
    int tasks = 1 + k % n; /* 1..n tasks */
    if (k % 997 == 0) nap(2000000); /* long enough for the workers to sleep */
    rt_pool_run(p, tasks, task, &j);
    for (int t = 0; t < THREADS; t++) {
      int want = t < tasks;
      if (atomic_load(&j.runs[t]) != want || (want && j.plain[t] != k + 1)) {
        CHECK(0, "job %d (%d tasks): task %d ran %d times, saw job %d", k, tasks, t,
              atomic_load(&j.runs[t]), j.plain[t]);
        bad = 1;
        break;
      }
    }
  }
  rt_pool_free(p);
  if (failures) fprintf(stderr, "%d failures\n", failures);
  else printf("ok: %d jobs on %d threads\n", JOBS, n);
  return failures != 0;
}
