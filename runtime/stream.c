/* stream.c: batches in a given order, made ahead on worker threads for an
 * image folder, on the caller's thread for sets in memory.
 *
 * A folder's pass is a queue of image positions 0..n-1. Workers take the
 * next position while it lies in one of the `ahead` batches the caller has
 * not yet released, and write the image straight into that batch's slot;
 * the caller waits for a slot to be complete, hands it out, and releases
 * it at its next call. So at most `ahead` batches exist at a time, and an
 * image's random draws come from (the pass's seed, its position) alone. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "runtime/comm.h"
#include "runtime/err.h"
#include "folder.h"

struct rt_stream {
  const rt_dataset *d;
  rt_norm nm;
  int batch, crop, flip, ahead;
  size_t img;            /* floats per image */
  float **x;             /* ahead slots of batch images */
  ir_label **y;          /* their labels */
  rt_draw *dr;           /* rt_stream_next_draws: a batch's draws, or NULL */
  /* the pass */
  int *order;            /* n positions (a copy), or NULL: identity */
  int n, nbatches;
  int next_batch;        /* the caller's next batch */
  int held;              /* the caller holds a slot (released at its next call) */
  rt_rng *rng;           /* sets in memory: drawn from as batches are made */
  uint64_t seed;         /* folders: the pass's seed */
  /* the workers */
  int nthreads;
  pthread_t *th;
  rt_fwork *own;         /* the caller's, when nthreads is 0 */
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  int next_pos;          /* the next image position a worker takes */
  int limit;             /* positions below it may be taken */
  int inflight;          /* images being made */
  int *count;            /* ahead: images finished in each slot */
  int err_pos;           /* the first position that failed, or INT_MAX */
  char err[1024];
  int quit;
  double waited;
  long waits;
  const rt_comm *part;   /* each batch's part of this rank alone (rt_stream_part) */
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t image_seed(uint64_t seed, int pos) {
  uint64_t z = seed ^ ((uint64_t)pos * 0xd1342543de82ef95ull);
  return rt_rng_splitmix(&z);
}

/* This rank's part [*lo, *hi) of the pass's batch that begins at `at`. */
static void part_of(const rt_stream *s, int at, int *lo, int *hi) {
  int nb = s->n - at < s->batch ? s->n - at : s->batch;
  rt_comm_part(s->part, nb, lo, hi);
}

/* Whether image `pos` of the pass is in this rank's part of its batch. */
static int in_part(const rt_stream *s, int pos) {
  int lo, hi, at = pos / s->batch * s->batch;
  part_of(s, at, &lo, &hi);
  return pos - at >= lo && pos - at < hi;
}

/* Makes image `pos` of the pass into its slot; 0 or -1 with err. */
static int make(rt_stream *s, rt_fwork *w, int pos, char *err, size_t errlen) {
  int slot = (pos / s->batch) % s->ahead, k = pos % s->batch;
  int i = s->order ? s->order[pos] : pos;
  return rt_folder_image(s->d, w, i, &s->nm, s->crop != 0, s->flip, image_seed(s->seed, pos),
                         s->x[slot] + (size_t)k * s->img, s->y[slot] + k, err, errlen);
}

static void *worker(void *arg) {
  rt_stream *s = arg;
  rt_fwork *w = rt_fwork_new();
  char err[1024];
  pthread_mutex_lock(&s->mu);
  while (!s->quit) {
    if (s->next_pos >= s->limit) {
      pthread_cond_wait(&s->work, &s->mu);
      continue;
    }
    int pos = s->next_pos++;
    s->inflight++;
    pthread_mutex_unlock(&s->mu);
    int rc = !in_part(s, pos) ? 0 /* another rank's */
             : w ? make(s, w, pos, err, sizeof err) : rt_fail(err, sizeof err, "out of memory");
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    s->count[(pos / s->batch) % s->ahead]++;
    if (rc && pos < s->err_pos) s->err_pos = pos, snprintf(s->err, sizeof s->err, "%s", err);
    pthread_cond_broadcast(&s->done);
  }
  pthread_mutex_unlock(&s->mu);
  rt_fwork_free(w);
  return NULL;
}

void rt_stream_free(rt_stream *s) {
  if (!s) return;
  if (s->th) {
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    for (int t = 0; t < s->nthreads; t++) pthread_join(s->th[t], NULL);
  }
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->work);
  pthread_cond_destroy(&s->done);
  for (int k = 0; k < s->ahead; k++) {
    if (s->x) free(s->x[k]);
    if (s->y) free(s->y[k]);
  }
  free(s->x), free(s->y), free(s->count), free(s->order), free(s->th), free(s->dr);
  rt_fwork_free(s->own);
  free(s);
}

rt_stream *rt_stream_new(const rt_dataset *d, const rt_norm *nm, int batch, int crop, int flip,
                         int threads, int ahead, char *err, size_t errlen) {
  rt_stream *s = calloc(1, sizeof *s);
  if (!s) return rt_fail(err, errlen, "out of memory for a data stream"), NULL;
  s->d = d, s->nm = *nm, s->batch = batch > 0 ? batch : 1, s->crop = crop, s->flip = flip;
  s->img = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  s->ahead = d->src ? (ahead > 1 ? ahead : 2) : 1;
  s->err_pos = 1 << 30;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->work, NULL);
  pthread_cond_init(&s->done, NULL);
  s->x = calloc((size_t)s->ahead, sizeof *s->x);
  s->y = calloc((size_t)s->ahead, sizeof *s->y);
  s->count = calloc((size_t)s->ahead, sizeof *s->count);
  int ok = s->x && s->y && s->count;
  for (int k = 0; ok && k < s->ahead; k++) {
    s->x[k] = malloc((size_t)s->batch * s->img * sizeof(float));
    s->y[k] = malloc((size_t)s->batch * sizeof *s->y[k]);
    ok = s->x[k] && s->y[k];
  }
  if (ok && d->src && threads <= 0) ok = (s->own = rt_fwork_new()) != NULL;
  if (ok && d->src && threads > 0) {
    ok = (s->th = calloc((size_t)threads, sizeof *s->th)) != NULL;
    for (int t = 0; ok && t < threads; t++) {
      if (pthread_create(&s->th[t], NULL, worker, s)) {
        if (t == 0) ok = 0; /* fewer threads than asked are still a stream */
        break;
      }
      s->nthreads++;
    }
  }
  if (!ok) {
    rt_stream_free(s);
    rt_fail(err, errlen, "out of memory for %d batches of %d images", ahead, batch);
    return NULL;
  }
  return s;
}

void rt_stream_epoch(rt_stream *s, const int *order, int n, rt_rng *rng) {
  pthread_mutex_lock(&s->mu);
  s->limit = 0; /* nothing more is taken; what is in flight finishes */
  while (s->inflight) pthread_cond_wait(&s->done, &s->mu);
  free(s->order);
  s->order = NULL;
  if (order && (s->order = malloc((size_t)(n > 0 ? n : 1) * sizeof(int))))
    memcpy(s->order, order, (size_t)n * sizeof(int));
  s->n = order && !s->order ? 0 : n; /* out of memory: an empty pass */
  s->nbatches = (s->n + s->batch - 1) / s->batch;
  s->next_batch = 0, s->held = 0, s->next_pos = 0;
  s->err_pos = 1 << 30;
  for (int k = 0; k < s->ahead; k++) s->count[k] = 0;
  s->rng = rng;
  s->seed = 0;
  if (s->d->src && rng) s->seed = rt_rng_next(rng);
  if (s->d->src) {
    long lim = (long)s->ahead * s->batch;
    s->limit = lim < s->n ? (int)lim : s->n;
    pthread_cond_broadcast(&s->work);
  }
  pthread_mutex_unlock(&s->mu);
}

int rt_stream_next(rt_stream *s, const float **x, const ir_label **y, int *b, char *err,
                   size_t errlen) {
  if (s->next_batch >= s->nbatches) return 1;
  int at = s->next_batch * s->batch, nb = s->n - at < s->batch ? s->n - at : s->batch;
  int slot = s->next_batch % s->ahead;
  if (!s->d->src) { /* in memory: made here from its draws (the run's rng) */
    const rt_draw *dr;
    const ir_label *lab;
    int rc = rt_stream_next_draws(s, &dr, &lab, b, err, errlen);
    if (rc) return rc;
    rt_data_make(s->d, dr, *b, &s->nm, s->crop > 0 ? s->crop : 0, s->x[0], NULL);
    *x = s->x[0], *y = lab;
    return 0;
  } else if (!s->th) { /* no workers: made here */
    for (int p = at; p < at + nb; p++)
      if (in_part(s, p) && make(s, s->own, p, err, errlen)) return -1;
  } else {
    double t0 = now();
    pthread_mutex_lock(&s->mu);
    if (s->held) { /* the caller is done with the slot it holds */
      long lim = (long)(s->next_batch + s->ahead) * s->batch;
      s->limit = lim < s->n ? (int)lim : s->n;
      pthread_cond_broadcast(&s->work);
    }
    int waited = 0;
    while (s->count[slot] < nb && s->err_pos >= at + nb) {
      waited = 1;
      pthread_cond_wait(&s->done, &s->mu);
    }
    if (s->err_pos < at + nb) {
      rt_fail(err, errlen, "%s", s->err);
      pthread_mutex_unlock(&s->mu);
      return -1;
    }
    s->count[slot] = 0;
    s->held = 1;
    if (waited) s->waited += now() - t0, s->waits++;
    pthread_mutex_unlock(&s->mu);
  }
  int lo, hi;
  part_of(s, at, &lo, &hi);
  *x = s->x[slot] + (size_t)lo * s->img, *y = s->y[slot] + lo, *b = hi - lo;
  s->next_batch++;
  return 0;
}

int rt_stream_next_draws(rt_stream *s, const rt_draw **dr, const ir_label **y, int *b,
                         char *err, size_t errlen) {
  if (s->d->src) return rt_fail(err, errlen, "an image folder's batches are made as images");
  if (s->next_batch >= s->nbatches) return 1;
  int at = s->next_batch * s->batch, nb = s->n - at < s->batch ? s->n - at : s->batch;
  if (!s->dr && !(s->dr = malloc((size_t)s->batch * sizeof *s->dr)))
    return rt_fail(err, errlen, "out of memory");
  for (int i = 0; i < nb; i++) { /* one image after another, as rt_data_batch draws */
    int k = s->order ? s->order[at + i] : at + i;
    rt_data_draws(&k, 1, s->crop > 0 ? s->crop : 0, s->flip, s->rng, s->dr + i);
    s->y[0][i] = s->d->y[k];
  }
  int lo, hi; /* every draw made, so that the ranks' rngs stay in step */
  part_of(s, at, &lo, &hi);
  *dr = s->dr + lo, *y = s->y[0] + lo, *b = hi - lo;
  s->next_batch++;
  return 0;
}

void rt_stream_part(rt_stream *s, const rt_comm *c) { s->part = c; }

double rt_stream_waited(const rt_stream *s, long *calls) {
  if (calls) *calls = s->waits;
  return s->waited;
}
