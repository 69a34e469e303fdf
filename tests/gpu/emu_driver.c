/* emu_driver.c: the CUDA driver and cuBLAS on the host (see emu_driver.h). */
#include "tests/gpu/emu_driver.h"

#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/BitReader.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>

#include "runtime/cuda/cu.h"
#include "runtime/cuda/kern.h"

/* ---- the host JIT ------------------------------------------------------ */

LLVMOrcLLJITRef emu_jit_new(void) {
  LLVMOrcLLJITRef j = NULL;
  LLVMErrorRef e = LLVMOrcCreateLLJIT(&j, NULL);
  if (e) {
    char *m = LLVMGetErrorMessage(e);
    fprintf(stderr, "emu: LLJIT: %s\n", m);
    LLVMDisposeErrorMessage(m);
    return NULL;
  }
  return j;
}

/* An executor address is the code's address in this process. */
void *emu_lookup(LLVMOrcLLJITRef j, const char *name) {
  LLVMOrcExecutorAddress a = 0;
  LLVMErrorRef e = LLVMOrcLLJITLookup(j, &a, name);
  if (e) {
    char *m = LLVMGetErrorMessage(e);
    fprintf(stderr, "emu: lookup %s: %s\n", name, m);
    LLVMDisposeErrorMessage(m);
    return NULL;
  }
  uintptr_t ip = (uintptr_t)a;
  void *p;
  memcpy(&p, &ip, sizeof p);
  return p;
}

void emu_sreg(LLVMModuleRef m, const char *reg, int init) {
  char name[64], gname[32];
  snprintf(name, sizeof name, "llvm.nvvm.read.ptx.sreg.%s", reg);
  LLVMValueRef f = LLVMGetNamedFunction(m, name);
  if (!f) return;
  LLVMContextRef ctx = LLVMGetModuleContext(m);
  LLVMTypeRef i32 = LLVMInt32TypeInContext(ctx);
  snprintf(gname, sizeof gname, "emu_%.*s", (int)strcspn(reg, "."), reg);
  LLVMValueRef g = LLVMAddGlobal(m, i32, gname);
  LLVMSetInitializer(g, LLVMConstInt(i32, (unsigned)init, 0));
  snprintf(name, sizeof name, "%s_fn", gname);
  LLVMSetValueName2(f, name, strlen(name));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, f, "e"));
  LLVMBuildRet(b, LLVMBuildLoad2(b, i32, g, ""));
  LLVMDisposeBuilder(b);
}

/* ---- what a capture records, the bus's bytes ------------------------------ */

static long long h2d_bytes, d2h_bytes; /* emu_traffic */
static long long watch_bytes = -1;     /* emu_watch_d2h */
static long watched;

void emu_watch_d2h(long long bytes) { watch_bytes = bytes, watched = 0; }
long emu_watched(void) { return watched; }

void emu_traffic(long long *h2d, long long *d2h) {
  *h2d = h2d_bytes, *d2h = d2h_bytes;
}

/* A stream under capture records its work instead of running it; a graph
 * is the list, an instantiated graph replays it. One stream is captured
 * at a time (the backends use one). */
typedef struct rec {
  int kind; /* 0 launch, 1 memset, 2 memset 2D, 3 sgemm */
  void *fn;
  unsigned grid, block;
  CUdeviceptr a[4];
  int64_t v[3];
  size_t sz[4];
  unsigned val;
  int ta, tb, m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const float *A, *B;
  float *C;
} rec;

typedef struct egraph {
  rec *r;
  size_t n, cap;
} egraph;

static egraph *capturing; /* the graph being recorded, or NULL */
static long launches;     /* kernel launches run (emu_launches) */

long emu_launches(void) { return launches; }

static int record(const rec *r) {
  if (capturing->n == capturing->cap) {
    size_t cap = capturing->cap ? 2 * capturing->cap : 64;
    rec *p = realloc(capturing->r, cap * sizeof *p);
    if (!p) return -1;
    capturing->r = p, capturing->cap = cap;
  }
  capturing->r[capturing->n++] = *r;
  return 0;
}

/* ---- modules and launches ---------------------------------------------- */

typedef void (*kern_fn)(float *, float *, float *, float *, int64_t, int64_t, int64_t);

typedef struct emod emod;
typedef struct efn {
  kern_fn f;
  emod *m;
  struct efn *next;
} efn;

struct emod {
  LLVMOrcLLJITRef jit;
  int32_t *tid, *ntid, *ctaid;
  efn *fns;
};

/* kern.c's loader: the module, through bitcode into a context of the
 * JIT's own, with its special registers emulated. */
static int emu_load(LLVMModuleRef m, const char *sm, CUmodule *mod, char *err, size_t errlen) {
  (void)sm;
  *mod = NULL;
  emod *em = calloc(1, sizeof *em);
  if (!em || !(em->jit = emu_jit_new())) {
    free(em);
    snprintf(err, errlen, "emu: no JIT");
    return -1;
  }
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(m);
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef c = NULL;
  if (LLVMParseBitcodeInContext2(LLVMOrcThreadSafeContextGetContext(tsc), bc, &c)) c = NULL;
  LLVMDisposeMemoryBuffer(bc);
  if (!c) {
    LLVMOrcDisposeThreadSafeContext(tsc);
    LLVMOrcDisposeLLJIT(em->jit), free(em);
    snprintf(err, errlen, "emu: the module does not read back");
    return -1;
  }
  emu_sreg(c, "tid.x", 0);
  emu_sreg(c, "ntid.x", 1);
  emu_sreg(c, "ctaid.x", 0);
  /* a module may use none of them; each read one is a global (the JIT
   * owns the module once it is added) */
  int has[3] = {LLVMGetNamedGlobal(c, "emu_tid") != NULL, LLVMGetNamedGlobal(c, "emu_ntid") != NULL,
                LLVMGetNamedGlobal(c, "emu_ctaid") != NULL};
  LLVMSetTarget(c, LLVMOrcLLJITGetTripleString(em->jit));
  LLVMSetDataLayout(c, LLVMOrcLLJITGetDataLayoutStr(em->jit));
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(c, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc);
  LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(em->jit, LLVMOrcLLJITGetMainJITDylib(em->jit), tsm);
  if (e) {
    char *msg = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "emu: %s", msg);
    LLVMDisposeErrorMessage(msg);
    LLVMOrcDisposeLLJIT(em->jit), free(em);
    return -1;
  }
  em->tid = has[0] ? emu_lookup(em->jit, "emu_tid") : NULL;
  em->ntid = has[1] ? emu_lookup(em->jit, "emu_ntid") : NULL;
  em->ctaid = has[2] ? emu_lookup(em->jit, "emu_ctaid") : NULL;
  *mod = (CUmodule)em;
  return 0;
}

static CUresult e_ModuleUnload(CUmodule mod) {
  emod *em = (emod *)mod;
  for (efn *f = em->fns, *n; f; f = n) n = f->next, free(f);
  LLVMOrcDisposeLLJIT(em->jit);
  free(em);
  return 0;
}

static CUresult e_ModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name) {
  emod *em = (emod *)mod;
  void *p = emu_lookup(em->jit, name);
  efn *f = p ? calloc(1, sizeof *f) : NULL;
  if (!f) return 500; /* CUDA_ERROR_NOT_FOUND */
  memcpy(&f->f, &p, sizeof p);
  f->m = em, f->next = em->fns, em->fns = f;
  *fn = (CUfunction)f;
  return 0;
}

static CUresult e_ModuleGetGlobal(CUdeviceptr *dp, size_t *bytes, CUmodule mod, const char *name) {
  void *p = emu_lookup(((emod *)mod)->jit, name);
  if (!p) return 500;
  *dp = (CUdeviceptr)(uintptr_t)p;
  if (bytes) *bytes = sizeof(void *);
  return 0;
}

static float *fp(CUdeviceptr p) { return (float *)(uintptr_t)p; }

static long fail_after = -1; /* emu_fail_launches */

void emu_fail_launches(long after) { fail_after = after; }

static CUresult e_LaunchKernel(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shmem, CUstream s, void **params, void **extra) {
  (void)s, (void)shmem, (void)extra;
  if (fail_after == 0) return 719; /* CUDA_ERROR_LAUNCH_FAILED */
  if (fail_after > 0) fail_after--;
  if (gy != 1 || gz != 1 || by != 1 || bz != 1) return 1; /* CUDA_ERROR_INVALID_VALUE: 1-D only */
  efn *f = (efn *)fn;
  CUdeviceptr a[4];
  int64_t v[3];
  for (int i = 0; i < 4; i++) memcpy(&a[i], params[i], sizeof a[i]);
  for (int i = 0; i < 3; i++) memcpy(&v[i], params[4 + i], sizeof v[i]);
  if (capturing) {
    rec r = {.kind = 0, .fn = f, .grid = gx, .block = bx};
    memcpy(r.a, a, sizeof a), memcpy(r.v, v, sizeof v);
    return record(&r) ? 2 : 0;
  }
  launches++;
  if (f->m->ntid) *f->m->ntid = (int32_t)bx;
  for (unsigned b = 0; b < gx; b++)
    for (unsigned t = 0; t < bx; t++) {
      if (f->m->ctaid) *f->m->ctaid = (int32_t)b;
      if (f->m->tid) *f->m->tid = (int32_t)t;
      f->f(fp(a[0]), fp(a[1]), fp(a[2]), fp(a[3]), v[0], v[1], v[2]);
    }
  return 0;
}

/* ---- memory ------------------------------------------------------------ */

static CUresult e_MemAlloc(CUdeviceptr *p, size_t n) {
  void *q = malloc(n ? n : 1);
  if (!q) return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
  memset(q, 0xff, n); /* uninitialised device memory is not zero: NaN floats */
  *p = (CUdeviceptr)(uintptr_t)q;
  return 0;
}

static CUresult e_MemFree(CUdeviceptr p) {
  free((void *)(uintptr_t)p);
  return 0;
}

static CUresult e_HtoD(CUdeviceptr d, const void *h, size_t n) {
  if (capturing) return 900; /* CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: copies stay out of graphs */
  h2d_bytes += (long long)n;
  memcpy((void *)(uintptr_t)d, h, n);
  return 0;
}

static CUresult e_DtoH(void *h, CUdeviceptr d, size_t n) {
  if (capturing) return 900;
  d2h_bytes += (long long)n;
  watched += (long long)n == watch_bytes;
  memcpy(h, (const void *)(uintptr_t)d, n);
  return 0;
}

static CUresult e_DtoDAsync(CUdeviceptr to, CUdeviceptr from, size_t n, CUstream s) {
  (void)s;
  if (capturing) return 900;
  memmove((void *)(uintptr_t)to, (const void *)(uintptr_t)from, n);
  return 0;
}

static CUresult e_HtoDAsync(CUdeviceptr d, const void *h, size_t n, CUstream s) {
  (void)s;
  return e_HtoD(d, h, n);
}

static CUresult e_DtoHAsync(void *h, CUdeviceptr d, size_t n, CUstream s) {
  (void)s;
  return e_DtoH(h, d, n);
}

static CUresult e_Memcpy2DAsync(const CUDA_MEMCPY2D *c, CUstream s) {
  (void)s;
  if (c->srcPitch < c->WidthInBytes + c->srcXInBytes || c->dstPitch < c->WidthInBytes + c->dstXInBytes) return 1;
  if (capturing) return 900;
  if (c->srcMemoryType == CU_MEMORYTYPE_HOST && c->dstMemoryType == CU_MEMORYTYPE_DEVICE)
    h2d_bytes += (long long)(c->WidthInBytes * c->Height);
  if (c->srcMemoryType == CU_MEMORYTYPE_DEVICE && c->dstMemoryType == CU_MEMORYTYPE_HOST) {
    d2h_bytes += (long long)(c->WidthInBytes * c->Height);
    watched += (long long)(c->WidthInBytes * c->Height) == watch_bytes;
  }
  const char *src = c->srcMemoryType == CU_MEMORYTYPE_HOST ? c->srcHost : (const char *)(uintptr_t)c->srcDevice;
  char *dst = c->dstMemoryType == CU_MEMORYTYPE_HOST ? c->dstHost : (char *)(uintptr_t)c->dstDevice;
  for (size_t y = 0; y < c->Height; y++)
    memcpy(dst + (c->dstY + y) * c->dstPitch + c->dstXInBytes, src + (c->srcY + y) * c->srcPitch + c->srcXInBytes,
           c->WidthInBytes);
  return 0;
}

static CUresult e_MemsetD2D32Async(CUdeviceptr d, size_t pitch, unsigned v, size_t w, size_t h, CUstream s) {
  (void)s;
  if (capturing) {
    rec r = {.kind = 2, .a = {d}, .sz = {pitch, w, h}, .val = v};
    return record(&r) ? 2 : 0;
  }
  for (size_t y = 0; y < h; y++) {
    uint32_t *p = (uint32_t *)(uintptr_t)(d + y * pitch);
    for (size_t i = 0; i < w; i++) p[i] = v;
  }
  return 0;
}

static CUresult e_MemsetD32Async(CUdeviceptr d, unsigned v, size_t n, CUstream s) {
  (void)s;
  if (capturing) {
    rec r = {.kind = 1, .a = {d}, .sz = {n}, .val = v};
    return record(&r) ? 2 : 0;
  }
  uint32_t *p = (uint32_t *)(uintptr_t)d;
  for (size_t i = 0; i < n; i++) p[i] = v;
  return 0;
}

static CUresult e_HostRegister(void *p, size_t n, unsigned flags) {
  (void)p, (void)n, (void)flags;
  return 0;
}

static CUresult e_HostUnregister(void *p) {
  (void)p;
  return 0;
}

/* ---- device, context, streams, events ----------------------------------- */

static CUresult e_Init(unsigned f) {
  (void)f;
  return 0;
}

static CUresult e_DeviceGetCount(int *n) {
  *n = 1;
  return 0;
}

static CUresult e_DeviceGet(CUdevice *d, int i) {
  *d = i;
  return 0;
}

static CUresult e_DeviceGetName(char *name, int len, CUdevice d) {
  (void)d;
  snprintf(name, (size_t)len, "host emulation");
  return 0;
}

static CUresult e_DeviceGetAttribute(int *v, int attr, CUdevice d) {
  (void)d;
  *v = attr == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9
       : attr == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR ? 0
                                                              : 1;
  return 0;
}

static CUresult e_PrimaryCtxRetain(CUcontext *c, CUdevice d) {
  (void)d;
  static int ctx;
  *c = (CUcontext)&ctx;
  return 0;
}

static CUresult e_PrimaryCtxRelease(CUdevice d) {
  (void)d;
  return 0;
}

static CUresult e_CtxSetCurrent(CUcontext c) {
  (void)c;
  return 0;
}

static CUresult e_ModuleLoadDataEx(CUmodule *m, const void *image, unsigned n, CUjit_option *o, void **v) {
  (void)m, (void)image, (void)n, (void)o, (void)v;
  return 1; /* PTX cannot run here: modules come through emu_load */
}

static CUresult e_StreamCreate(CUstream *s, unsigned f) {
  (void)f;
  static int stream;
  *s = (CUstream)&stream;
  return 0;
}

static CUresult e_StreamDestroy(CUstream s) {
  (void)s;
  return 0;
}

static CUresult e_StreamSynchronize(CUstream s) {
  (void)s;
  return capturing ? 900 : 0;
}

static CUresult e_BeginCapture(CUstream s, int mode) {
  (void)s, (void)mode;
  if (capturing) return 1;
  capturing = calloc(1, sizeof *capturing);
  return capturing ? 0 : 2;
}

static CUresult e_EndCapture(CUstream s, CUgraph *g) {
  (void)s;
  if (!capturing) return 1;
  *g = (CUgraph)capturing;
  capturing = NULL;
  return 0;
}

static CUresult e_GraphInstantiate(CUgraphExec *x, CUgraph g, unsigned long long flags) {
  (void)flags;
  egraph *src = (egraph *)g, *c = calloc(1, sizeof *c);
  if (!c) return 2;
  c->r = malloc((src->n ? src->n : 1) * sizeof *c->r);
  if (!c->r) {
    free(c);
    return 2;
  }
  memcpy(c->r, src->r, src->n * sizeof *c->r);
  c->n = c->cap = src->n;
  *x = (CUgraphExec)c;
  return 0;
}

static cublasStatus_t b_Sgemm(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float *alpha,
                              const float *a, int lda, const float *b, int ldb, const float *beta, float *c,
                              int ldc);
static CUresult e_LaunchKernel(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shmem, CUstream s, void **params, void **extra);

static CUresult e_GraphLaunch(CUgraphExec x, CUstream s) {
  egraph *g = (egraph *)x;
  if (capturing) return 900;
  long before = launches; /* a graph is one launch */
  for (size_t i = 0; i < g->n; i++) {
    rec *r = &g->r[i];
    CUresult rc = 0;
    if (r->kind == 0) {
      void *p[7] = {&r->a[0], &r->a[1], &r->a[2], &r->a[3], &r->v[0], &r->v[1], &r->v[2]};
      rc = e_LaunchKernel((CUfunction)r->fn, r->grid, 1, 1, r->block, 1, 1, 0, s, p, NULL);
    } else if (r->kind == 1) {
      rc = e_MemsetD32Async(r->a[0], r->val, r->sz[0], s);
    } else if (r->kind == 2) {
      rc = e_MemsetD2D32Async(r->a[0], r->sz[0], r->val, r->sz[1], r->sz[2], s);
    } else {
      rc = b_Sgemm(NULL, r->ta, r->tb, r->m, r->n, r->k, &r->alpha, r->A, r->lda, r->B, r->ldb, &r->beta, r->C, r->ldc);
    }
    if (rc) return rc;
  }
  launches = before + 1;
  return 0;
}

static CUresult e_GraphExecDestroy(CUgraphExec x) {
  egraph *g = (egraph *)x;
  if (g) free(g->r);
  free(g);
  return 0;
}

static CUresult e_GraphDestroy(CUgraph x) { return e_GraphExecDestroy((CUgraphExec)x); }

static CUresult e_EventCreate(CUevent *e, unsigned f) {
  (void)f;
  double *t = calloc(1, sizeof *t);
  if (!t) return 2;
  *e = (CUevent)t;
  return 0;
}

static CUresult e_EventDestroy(CUevent e) {
  free(e);
  return 0;
}

static CUresult e_EventRecord(CUevent e, CUstream s) {
  (void)s;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  *(double *)e = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
  return 0;
}

static CUresult e_EventSynchronize(CUevent e) {
  (void)e;
  return 0;
}

static CUresult e_EventElapsedTime(float *ms, CUevent a, CUevent b) {
  *ms = (float)(1e3 * (*(double *)b - *(double *)a));
  return 0;
}

static CUresult e_GetErrorString(CUresult r, const char **s) {
  *s = r == 1 ? "invalid value (emulated)" : r == 2 ? "out of memory (emulated)" : "error (emulated)";
  return 0;
}

/* ---- cuBLAS ------------------------------------------------------------- */

static int no_cublas; /* emu_no_cublas */

void emu_no_cublas(int on) { no_cublas = on; }

static cublasStatus_t b_Create(cublasHandle_t *h) {
  static int handle;
  if (no_cublas) return 1; /* CUBLAS_STATUS_NOT_INITIALIZED */
  *h = (cublasHandle_t)&handle;
  return 0;
}

static cublasStatus_t b_Destroy(cublasHandle_t h) {
  (void)h;
  return 0;
}

static cublasStatus_t b_SetStream(cublasHandle_t h, CUstream s) {
  (void)h, (void)s;
  return 0;
}

static enum CBLAS_TRANSPOSE op(int t) { return t == CUBLAS_OP_T ? CblasTrans : CblasNoTrans; }

static cublasStatus_t b_Sgemm(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float *alpha,
                              const float *a, int lda, const float *b, int ldb, const float *beta, float *c,
                              int ldc) {
  (void)h;
  if (capturing) {
    rec r = {.kind = 3, .ta = ta, .tb = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
             .alpha = *alpha, .beta = *beta, .A = a, .B = b, .C = c};
    return record(&r) ? 2 : 0;
  }
  cblas_sgemm(CblasColMajor, op(ta), op(tb), m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
  return 0;
}

static cublasStatus_t b_SgemmStridedBatched(cublasHandle_t h, int ta, int tb, int m, int n, int k,
                                            const float *alpha, const float *a, int lda, long long sa,
                                            const float *b, int ldb, long long sb, const float *beta, float *c,
                                            int ldc, long long sc, int batch) {
  for (int i = 0; i < batch; i++) b_Sgemm(h, ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, ldc);
  return 0;
}

int emu_driver_install(void) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter()) return -1;
  cu_api d = {
      .cuInit = e_Init,
      .cuDeviceGetCount = e_DeviceGetCount,
      .cuDeviceGet = e_DeviceGet,
      .cuDeviceGetName = e_DeviceGetName,
      .cuDeviceGetAttribute = e_DeviceGetAttribute,
      .cuDevicePrimaryCtxRetain = e_PrimaryCtxRetain,
      .cuDevicePrimaryCtxRelease_v2 = e_PrimaryCtxRelease,
      .cuCtxSetCurrent = e_CtxSetCurrent,
      .cuModuleLoadDataEx = e_ModuleLoadDataEx,
      .cuModuleUnload = e_ModuleUnload,
      .cuModuleGetFunction = e_ModuleGetFunction,
      .cuModuleGetGlobal_v2 = e_ModuleGetGlobal,
      .cuLaunchKernel = e_LaunchKernel,
      .cuMemAlloc_v2 = e_MemAlloc,
      .cuMemFree_v2 = e_MemFree,
      .cuMemcpyHtoD_v2 = e_HtoD,
      .cuMemcpyDtoH_v2 = e_DtoH,
      .cuMemcpyHtoDAsync_v2 = e_HtoDAsync,
      .cuMemcpyDtoHAsync_v2 = e_DtoHAsync,
      .cuMemcpyDtoDAsync_v2 = e_DtoDAsync,
      .cuMemcpy2DAsync_v2 = e_Memcpy2DAsync,
      .cuMemHostRegister_v2 = e_HostRegister,
      .cuMemHostUnregister = e_HostUnregister,
      .cuMemsetD32Async = e_MemsetD32Async,
      .cuMemsetD2D32Async = e_MemsetD2D32Async,
      .cuStreamBeginCapture_v2 = e_BeginCapture,
      .cuStreamEndCapture = e_EndCapture,
      .cuGraphInstantiateWithFlags = e_GraphInstantiate,
      .cuGraphLaunch = e_GraphLaunch,
      .cuGraphExecDestroy = e_GraphExecDestroy,
      .cuGraphDestroy = e_GraphDestroy,
      .cuStreamCreate = e_StreamCreate,
      .cuStreamDestroy_v2 = e_StreamDestroy,
      .cuStreamSynchronize = e_StreamSynchronize,
      .cuEventCreate = e_EventCreate,
      .cuEventDestroy_v2 = e_EventDestroy,
      .cuEventRecord = e_EventRecord,
      .cuEventSynchronize = e_EventSynchronize,
      .cuEventElapsedTime = e_EventElapsedTime,
      .cuGetErrorString = e_GetErrorString,
  };
  cublas_api b = {b_Create, b_Destroy, b_SetStream, b_Sgemm, b_SgemmStridedBatched};
  /* every entry point the runtime may call has its stand-in */
#define X(name, args) if (!d.name) return -1;
  CU_FUNCS(X)
#undef X
  cu_install(&d, &b);
  cu_kern_set_loader(emu_load);
  return 0;
}
