/* comm.c: the ranks of a data-parallel run, over Open MPI opened with
 * dlopen (see comm.h).
 *
 * Open MPI's handles are pointers to its predefined objects
 * (MPI_COMM_WORLD is &ompi_mpi_comm_world, MPI_FLOAT &ompi_mpi_float,
 * MPI_IN_PLACE (void *)1), so the library's symbols are all this file
 * needs, and no MPI header: the build does not depend on MPI being
 * installed. That is Open MPI's ABI; MPICH's handles are integers, and a
 * rank that MPICH's launcher started is refused by name. */
#include "runtime/comm.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/err.h"

typedef void *mpi_h; /* MPI_Comm, MPI_Datatype, MPI_Op */

struct rt_comm {
  void *lib;
  int rank, size, local;
  mpi_h world, t_float, t_double, t_byte, t_int, op_sum;
  int (*init_thread)(int *, char ***, int, int *);
  int (*finalize)(void);
  int (*abort_)(mpi_h, int);
  int (*comm_rank)(mpi_h, int *);
  int (*comm_size)(mpi_h, int *);
  int (*reduce)(const void *, void *, int, mpi_h, mpi_h, int, mpi_h);
  int (*bcast)(void *, int, mpi_h, int, mpi_h);
  int (*allreduce)(const void *, void *, int, mpi_h, mpi_h, mpi_h);
};

#define MPI_IN_PLACE_ ((void *)1)
enum { MPI_OK = 0 };
/* The thread level asked for: the process runs worker threads, and its
 * main thread alone calls MPI (MPI_THREAD_FUNNELED, 1 in every MPI). */
enum { MPI_FUNNELED = 1 };
/* Elements per call: MPI counts are int. */
enum { CHUNK = 1 << 26 };

static int env_int(const char *name, int dflt) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  long v = strtol(s, &end, 10);
  return *end || v < 1 || v > 1 << 20 ? dflt : (int)v;
}

/* The symbols, or -1 naming the first one missing. */
static int bind(rt_comm *c, char *err, size_t errlen) {
  struct {
    const char *name;
    void **at;
  } sym[] = {
    {"MPI_Init_thread", (void **)&c->init_thread},
    {"MPI_Finalize", (void **)&c->finalize},
    {"MPI_Abort", (void **)&c->abort_},
    {"MPI_Comm_rank", (void **)&c->comm_rank},
    {"MPI_Comm_size", (void **)&c->comm_size},
    {"MPI_Reduce", (void **)&c->reduce},
    {"MPI_Bcast", (void **)&c->bcast},
    {"MPI_Allreduce", (void **)&c->allreduce},
    {"ompi_mpi_comm_world", &c->world},
    {"ompi_mpi_float", &c->t_float},
    {"ompi_mpi_double", &c->t_double},
    {"ompi_mpi_byte", &c->t_byte},
    {"ompi_mpi_int", &c->t_int},
    {"ompi_mpi_op_sum", &c->op_sum},
  };
  for (size_t i = 0; i < sizeof sym / sizeof *sym; i++)
    if (!(*sym[i].at = dlsym(c->lib, sym[i].name)))
      return rt_fail(err, errlen, "Open MPI's library has no '%s': not Open MPI 3 or later?",
                     sym[i].name);
  return 0;
}

int rt_comm_open(rt_comm **out, char *err, size_t errlen) {
  *out = NULL;
  if (!getenv("OMPI_COMM_WORLD_SIZE")) {
    if (getenv("PMI_RANK") || getenv("PMI_SIZE"))
      return rt_fail(err, errlen, "an MPI launcher other than Open MPI's started this process "
                     "(PMI_RANK is set): data-parallel runs use Open MPI's mpirun");
    return 0; /* alone */
  }
  rt_comm *c = calloc(1, sizeof *c);
  if (!c) return rt_fail(err, errlen, "out of memory");
  /* global: Open MPI's own plugins resolve its symbols from the library */
  c->lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
  if (!c->lib) {
    rt_fail(err, errlen, "mpirun started this process, but Open MPI's library cannot be "
            "opened (%s); install Open MPI (Debian: openmpi-bin)", dlerror());
    free(c);
    return -1;
  }
  if (bind(c, err, errlen)) {
    dlclose(c->lib);
    free(c);
    return -1;
  }
  int level = 0;
  if (c->init_thread(NULL, NULL, MPI_FUNNELED, &level) != MPI_OK ||
      c->comm_rank(c->world, &c->rank) != MPI_OK || c->comm_size(c->world, &c->size) != MPI_OK) {
    /* a library that failed to start is not closed: its threads may run */
    free(c);
    return rt_fail(err, errlen, "MPI_Init failed: the run cannot join its ranks");
  }
  c->local = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  *out = c;
  return 0;
}

void rt_comm_close(rt_comm *c) {
  if (!c) return;
  c->finalize();
  free(c); /* the library stays: MPI cannot be started again in a process */
}

void rt_comm_abort(rt_comm *c, int code) {
  if (c && c->size > 1) c->abort_(c->world, code);
}

int rt_comm_rank(const rt_comm *c) { return c ? c->rank : 0; }
int rt_comm_size(const rt_comm *c) { return c ? c->size : 1; }
int rt_comm_local_size(const rt_comm *c) { return c ? c->local : 1; }

void rt_comm_part(const rt_comm *c, int n, int *lo, int *hi) {
  int r = rt_comm_rank(c), s = rt_comm_size(c);
  *lo = (int)((int64_t)n * r / s), *hi = (int)((int64_t)n * (r + 1) / s);
}

/* Reduction to rank 0, then a broadcast from it, chunk by chunk. */
static int sum_of(rt_comm *c, void *v, int64_t n, mpi_h type, size_t size, char *err,
                  size_t errlen) {
  if (!c || c->size == 1) return 0;
  for (int64_t at = 0; at < n; at += CHUNK) {
    int k = (int)(n - at < CHUNK ? n - at : CHUNK);
    char *p = (char *)v + (size_t)at * size;
    if (c->reduce(c->rank == 0 ? MPI_IN_PLACE_ : p, p, k, type, c->op_sum, 0, c->world) != MPI_OK ||
        c->bcast(p, k, type, 0, c->world) != MPI_OK)
      return rt_fail(err, errlen, "rank %d of %d: summing over the ranks failed", c->rank,
                     c->size);
  }
  return 0;
}

int rt_comm_sum(rt_comm *c, float *v, int64_t n, char *err, size_t errlen) {
  return sum_of(c, v, n, c ? c->t_float : NULL, sizeof *v, err, errlen);
}

int rt_comm_sum_d(rt_comm *c, double *v, int64_t n, char *err, size_t errlen) {
  return sum_of(c, v, n, c ? c->t_double : NULL, sizeof *v, err, errlen);
}

int rt_comm_bcast(rt_comm *c, void *p, int64_t bytes, char *err, size_t errlen) {
  if (!c || c->size == 1) return 0;
  for (int64_t at = 0; at < bytes; at += CHUNK) {
    int k = (int)(bytes - at < CHUNK ? bytes - at : CHUNK);
    if (c->bcast((char *)p + at, k, c->t_byte, 0, c->world) != MPI_OK)
      return rt_fail(err, errlen, "rank %d of %d: a broadcast from rank 0 failed", c->rank,
                     c->size);
  }
  return 0;
}

int rt_comm_same(rt_comm *c, uint64_t h, int *same, char *err, size_t errlen) {
  *same = 1;
  if (!c || c->size == 1) return 0;
  uint64_t h0 = h;
  if (rt_comm_bcast(c, &h0, sizeof h0, err, errlen)) return -1;
  int differ = h0 != h, any = 0;
  if (c->allreduce(&differ, &any, 1, c->t_int, c->op_sum, c->world) != MPI_OK)
    return rt_fail(err, errlen, "rank %d of %d: comparing the ranks failed", c->rank, c->size);
  *same = any == 0;
  return 0;
}
