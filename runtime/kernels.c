/* backend.c: choosing a backend, and the reference backend: the kernels of
 * ref.h with the masks each layer was prepared with. */
#include "runtime/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_backend {
  rt_kernels pub;
  const uint8_t **wmask, **bmask; /* per layer, into the exec's masks */
} ref_backend;

static ref_backend *R(rt_kernels *b) { return (ref_backend *)b; }

static int ref_prepare(rt_kernels *b, int layer, const uint8_t *wmask,
                       const uint8_t *bmask, char *err, size_t errlen) {
  (void)err, (void)errlen;
  R(b)->wmask[layer] = wmask;
  R(b)->bmask[layer] = bmask;
  return 0;
}

static int ref_conv_fwd(rt_kernels *b, int l, const rt_conv_shape *s,
                         const float *x, const float *w, const float *bias, float *y) {
  rt_ref_conv_fwd(s, x, w, bias, R(b)->wmask[l], R(b)->bmask[l], y);
  return 0;
}
static int ref_conv_bwd_data(rt_kernels *b, int l, const rt_conv_shape *s,
                              const float *dy, const float *w, float *dx) {
  rt_ref_conv_bwd_data(s, dy, w, R(b)->wmask[l], dx);
  return 0;
}
static int ref_conv_bwd_weight(rt_kernels *b, int l, const rt_conv_shape *s,
                                const float *x, const float *dy, float *dw, float *db) {
  int all = b->unmasked_wgrad; /* phase II's dense gradient */
  rt_ref_conv_bwd_weight(s, x, dy, all ? NULL : R(b)->wmask[l], all ? NULL : R(b)->bmask[l], dw,
                         db);
  return 0;
}
static int ref_linear_fwd(rt_kernels *b, int l, const rt_linear_shape *s,
                           const float *x, const float *w, const float *bias, float *y) {
  rt_ref_linear_fwd(s, x, w, bias, R(b)->wmask[l], R(b)->bmask[l], y);
  return 0;
}
static int ref_linear_bwd_data(rt_kernels *b, int l, const rt_linear_shape *s,
                                const float *dy, const float *w, float *dx) {
  rt_ref_linear_bwd_data(s, dy, w, R(b)->wmask[l], dx);
  return 0;
}
static int ref_linear_bwd_weight(rt_kernels *b, int l, const rt_linear_shape *s,
                                  const float *x, const float *dy, float *dw, float *db) {
  int all = b->unmasked_wgrad;
  rt_ref_linear_bwd_weight(s, x, dy, all ? NULL : R(b)->wmask[l], all ? NULL : R(b)->bmask[l], dw,
                           db);
  return 0;
}

static void ref_free(rt_kernels *b) {
  if (!b) return;
  free(R(b)->wmask), free(R(b)->bmask);
  free(b);
}

rt_kernels *rt_kernels_ref_new(const ir_graph *g) {
  ref_backend *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->wmask = calloc((size_t)g->n_layers, sizeof *r->wmask);
  r->bmask = calloc((size_t)g->n_layers, sizeof *r->bmask);
  if (!r->wmask || !r->bmask) {
    ref_free(&r->pub);
    return NULL;
  }
  r->pub = (rt_kernels){.name = "ref", .g = g, .prepare = ref_prepare,
                        .conv_fwd = ref_conv_fwd, .conv_bwd_data = ref_conv_bwd_data,
                        .conv_bwd_weight = ref_conv_bwd_weight, .linear_fwd = ref_linear_fwd,
                        .linear_bwd_data = ref_linear_bwd_data,
                        .linear_bwd_weight = ref_linear_bwd_weight, .free = ref_free,
                        .threads = 1};
  return &r->pub;
}

const char *rt_backend_resolve(const char *name, char *why, size_t len) {
  if (len) why[0] = 0;
  if (strcmp(name, "auto") != 0) return name;
  char what[256];
  if (rt_cuda_probe(what, sizeof what) == 0) {
    snprintf(why, len, "backend auto: cuda, a GPU is present (%s)", what);
    return "cuda";
  }
  snprintf(why, len, "backend auto: cpu (%s)", what);
  return "cpu";
}

rt_kernels *rt_kernels_new(const char *name, const ir_graph *g, char *err,
                           size_t errlen) {
  rt_kernels *b = NULL;
  char why[512];
  name = rt_backend_resolve(name, why, sizeof why);
  if (strcmp(name, "ref") == 0) b = rt_kernels_ref_new(g);
  else if (strcmp(name, "blas") == 0) b = rt_kernels_blas_new(g);
  else if (strcmp(name, "cpu") == 0) return rt_kernels_cpu_new(g, err, errlen);
  else if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda-host") == 0) return rt_kernels_cuda_new(g, err, errlen);
  else {
    snprintf(err, errlen, "unknown backend '%s' (this build has: auto, cpu, ref, blas, cuda)", name);
    return NULL;
  }
  if (!b) snprintf(err, errlen, "out of memory");
  return b;
}
