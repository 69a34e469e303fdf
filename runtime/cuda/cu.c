/* cu.c: the driver API and cuBLAS through dlopen (see cu.h). */
#include "runtime/cuda/cu.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

cu_api cu;
cublas_api cublas;

/* A library opened once and kept open for the process: unloading the
 * driver under a live context is undefined, and opening it costs once. */
typedef struct lib_state {
  pthread_mutex_t lock;
  int state; /* 0 not tried, 1 ready, -1 failed (err says why) */
  char err[256];
} lib_state;

static lib_state cu_state = {PTHREAD_MUTEX_INITIALIZER, 0, ""};
static lib_state cublas_state = {PTHREAD_MUTEX_INITIALIZER, 0, ""};

/* Resolves `name` into *slot (a function pointer's storage). POSIX
 * guarantees a function pointer round-trips through void *; the memcpy
 * says so without a pedantic cast warning. */
static int resolve(void *h, const char *name, void *slot, size_t size, lib_state *s, const char *lib) {
  void *sym = dlsym(h, name);
  if (!sym) {
    snprintf(s->err, sizeof s->err, "%s lacks %s", lib, name);
    return -1;
  }
  memcpy(slot, &sym, size);
  return 0;
}

static int finish(lib_state *s, char *err, size_t errlen) {
  int rc = s->state == 1 ? 0 : -1;
  if (rc) snprintf(err, errlen, "%s", s->err);
  pthread_mutex_unlock(&s->lock);
  return rc;
}

/* The first of names[0..n) that dlopen finds, or NULL with s->err set to
 * "<what>: <listed> not found (<why>)". */
static void *lib_load(lib_state *s, const char *const *names, size_t n, const char *what, const char *listed) {
  void *h = NULL;
  for (size_t i = 0; i < n && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
    snprintf(s->err, sizeof s->err, "%s: %s not found (%s)", what, listed, why ? why : "dlopen failed");
  }
  return h;
}

int cu_open(char *err, size_t errlen) {
  static const char *const names[] = {"libcuda.so.1"};
  lib_state *s = &cu_state;
  pthread_mutex_lock(&s->lock);
  if (s->state == 0) {
    s->state = -1;
    void *h = lib_load(s, names, 1, "no CUDA driver", "libcuda.so.1");
    int bad = !h;
#define X(name, args) bad = bad || resolve(h, #name, &cu.name, sizeof cu.name, s, "CUDA driver too old: libcuda.so.1");
    CU_FUNCS(X)
#undef X
    if (!bad) s->state = 1;
  }
  return finish(s, err, errlen);
}

void cu_install(const cu_api *driver, const cublas_api *blas) {
  pthread_mutex_lock(&cu_state.lock);
  cu = *driver, cu_state.state = 1;
  pthread_mutex_unlock(&cu_state.lock);
  pthread_mutex_lock(&cublas_state.lock);
  cublas = *blas, cublas_state.state = 1;
  pthread_mutex_unlock(&cublas_state.lock);
}

const char *cu_str(CUresult r) {
  const char *s = NULL;
  if (cu.cuGetErrorString && cu.cuGetErrorString(r, &s) == 0 && s) return s;
  return "unknown CUDA error";
}

int cublas_open(char *err, size_t errlen) {
  static const char *const names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"};
  lib_state *s = &cublas_state;
  pthread_mutex_lock(&s->lock);
  if (s->state == 0) {
    s->state = -1;
    void *h = lib_load(s, names, 3, "no cuBLAS", "libcublas.so.13/.12/.11");
    int bad = !h;
#define X(name, args) bad = bad || resolve(h, #name, &cublas.name, sizeof cublas.name, s, "no cuBLAS: the library");
    CUBLAS_FUNCS(X)
#undef X
    if (!bad) s->state = 1;
  }
  return finish(s, err, errlen);
}
