/* gpu_layer_bench: one layer at a time on the GPU, forward + backward to
 * the input + backward to the weights over a batch of 128, at densities
 * from 1% to 100%: the kernels ilnas generates for the layer's mask
 * (runtime/cuda/kern.h) against two peers measured in the same run on
 * the same data:
 *
 *   cuBLAS    dense SGEMM on the masked weights, the gradient multiplied
 *             by the mask; conv lowered by im2col over the whole batch
 *             (columns [cin*k*k][n*oh*ow]), one GEMM per phase, y and dy
 *             permuted between NCHW and [cout][n][oh*ow] around it;
 *   cuSPARSE  the same lowering with the GEMMs replaced by what a
 *             cuSPARSE user writes: SpMM with the weights in CSR for the
 *             forward, SpMM with a CSR of the transposed weights for the
 *             input gradient, SDDMM sampled at the mask for the weight
 *             gradient (which comes out as the CSR's values).
 *
 * All in FP32. The peers' small kernels (im2col, col2im, permute, mask)
 * are hand-written PTX below. Every library is opened with dlopen: the
 * binary builds and starts without a CUDA toolkit and prints "SKIP: ..."
 * (exit 77) where no GPU can run. Build and run: bench/gpu/README.md. */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/cuda/cu.h"
#include "runtime/cuda/kern.h"

enum { BATCH = 128, ROUNDS = 7, WARMUP = 3, SAMPLES = 256 };
static const double densities[] = {0.01, 0.05, 0.10, 0.25, 0.50, 1.00};
enum { ND = sizeof densities / sizeof densities[0] };

/* ---- errors ------------------------------------------------------------ */

/* Every failure prints the call that failed and its reason, then unwinds:
 * functions return -1 and the caller frees what it holds. */
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "gpu_layer_bench: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  return -1;
}

static const char *sp_str(int st);

#define CU(call)                                                                   \
  do {                                                                             \
    CUresult r_ = (call);                                                          \
    if (r_) return fail("%s: %s (CUresult %d)", #call, cu_str(r_), r_);            \
  } while (0)
#define BL(call)                                                                   \
  do {                                                                             \
    cublasStatus_t r_ = (call);                                                    \
    if (r_) return fail("%s: cuBLAS status %d", #call, r_);                        \
  } while (0)
#define SP(call)                                                                   \
  do {                                                                             \
    int r_ = (call);                                                               \
    if (r_)                                                                        \
      return fail("%s: %s (cuSPARSE status %d; CUSPARSE_LOG_LEVEL=1 prints why)", \
                  #call, sp_str(r_), r_);                                          \
  } while (0)

/* ---- cuSPARSE through dlopen ---------------------------------------------- */

/* The generic API, as much as the peer uses; handles are opaque and enums
 * plain ints, with the values of cusparse.h (CUDA 13.0, cuSPARSE 12.6)
 * and library_types.h. */
typedef struct sp_ctx *sp_handle;
typedef struct sp_spmat_st *sp_spmat;
typedef struct sp_dnmat_st *sp_dnmat;
enum {
  SP_INDEX_32I = 2,        /* cusparseIndexType_t */
  SP_INDEX_BASE_ZERO = 0,  /* cusparseIndexBase_t */
  SP_R_32F = 0,            /* cudaDataType CUDA_R_32F */
  SP_ORDER_COL = 1,        /* cusparseOrder_t */
  SP_ORDER_ROW = 2,
  SP_OP_N = 0,             /* cusparseOperation_t */
  SP_OP_T = 1,
  SP_SPMM_ALG_DEFAULT = 0,
  SP_SDDMM_ALG_DEFAULT = 0,
};

#define SP_FUNCS(X)                                                                          \
  X(cusparseCreate, (sp_handle *))                                                           \
  X(cusparseDestroy, (sp_handle))                                                            \
  X(cusparseSetStream, (sp_handle, CUstream))                                                \
  X(cusparseCreateCsr, (sp_spmat *, int64_t, int64_t, int64_t, void *, void *, void *, int,  \
                        int, int, int))                                                      \
  X(cusparseDestroySpMat, (sp_spmat))                                                        \
  X(cusparseCreateDnMat, (sp_dnmat *, int64_t, int64_t, int64_t, void *, int, int))          \
  X(cusparseDestroyDnMat, (sp_dnmat))                                                        \
  X(cusparseSpMM_bufferSize, (sp_handle, int, int, const void *, sp_spmat, sp_dnmat,         \
                              const void *, sp_dnmat, int, int, size_t *))                   \
  X(cusparseSpMM_preprocess, (sp_handle, int, int, const void *, sp_spmat, sp_dnmat,         \
                              const void *, sp_dnmat, int, int, void *))                     \
  X(cusparseSpMM, (sp_handle, int, int, const void *, sp_spmat, sp_dnmat, const void *,      \
                   sp_dnmat, int, int, void *))                                              \
  X(cusparseSDDMM_bufferSize, (sp_handle, int, int, const void *, sp_dnmat, sp_dnmat,        \
                               const void *, sp_spmat, int, int, size_t *))                  \
  X(cusparseSDDMM_preprocess, (sp_handle, int, int, const void *, sp_dnmat, sp_dnmat,        \
                               const void *, sp_spmat, int, int, void *))                    \
  X(cusparseSDDMM, (sp_handle, int, int, const void *, sp_dnmat, sp_dnmat, const void *,     \
                    sp_spmat, int, int, void *))

static struct {
#define X(name, args) int(*name) args;
  SP_FUNCS(X)
#undef X
  const char *(*cusparseGetErrorString)(int);
} sp;

static const char *sp_str(int st) {
  const char *s = sp.cusparseGetErrorString ? sp.cusparseGetErrorString(st) : NULL;
  return s ? s : "cuSPARSE error";
}

/* Opens cuSPARSE and resolves every entry point. The library stays open
 * for the process, as cu.c keeps the driver and cuBLAS: the CUDA runtime
 * inside it registers exit handlers. 0, or -1 with "no cuSPARSE: ...". */
static int sp_open(char *err, size_t errlen) {
  static const char *const names[] = {"libcusparse.so.12", "libcusparse.so"};
  void *h = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
    snprintf(err, errlen, "no cuSPARSE: libcusparse.so.12 not found (%s)", why ? why : "dlopen failed");
    return -1;
  }
  /* POSIX guarantees a function pointer round-trips through void *; the
   * memcpy says so without a pedantic cast warning. */
  void *sym;
#define X(name, args)                                                     \
  if (!(sym = dlsym(h, #name))) {                                         \
    snprintf(err, errlen, "no cuSPARSE: the library lacks %s", #name);    \
    return -1;                                                            \
  }                                                                       \
  memcpy(&sp.name, &sym, sizeof sp.name);
  SP_FUNCS(X)
  X(cusparseGetErrorString, _)
#undef X
  return 0;
}

/* ---- the peers' small kernels ----------------------------------------------- */

/* Hand-written PTX, JIT-compiled by the driver for the GPU at hand. Index
 * arithmetic is 32-bit where the host checks it fits, 64-bit for column
 * offsets. Each part stays under C's 4095-character string limit; they
 * are joined into one module at start. */
static const char ptx_head[] = ".version 7.0\n.target sm_70\n.address_size 64\n";

/* col[(ci*k + ky)*k + kx][i*P + oy*ow + ox] = x[i][ci][oy - pad + ky][ox - pad + kx], 0 outside
 * (stride 1). Grid (n, k*k, cin), block (ow, oh): one thread per entry. */
static const char ptx_im2col[] =
    ".visible .entry bench_im2col(.param .u64 p_x, .param .u64 p_col, .param .u32 p_n,\n"
    "    .param .u32 p_cin, .param .u32 p_h, .param .u32 p_w, .param .u32 p_k, .param .u32 p_pad,\n"
    "    .param .u32 p_oh, .param .u32 p_ow)\n"
    "{\n"
    "  .reg .pred %p<4>;\n  .reg .b32 %r<32>;\n  .reg .b64 %rd<8>;\n  .reg .f32 %f<2>;\n"
    "  ld.param.u64 %rd1, [p_x];\n  ld.param.u64 %rd2, [p_col];\n"
    "  cvta.to.global.u64 %rd1, %rd1;\n  cvta.to.global.u64 %rd2, %rd2;\n"
    "  ld.param.u32 %r1, [p_n];\n  ld.param.u32 %r2, [p_cin];\n  ld.param.u32 %r3, [p_h];\n"
    "  ld.param.u32 %r4, [p_w];\n  ld.param.u32 %r5, [p_k];\n  ld.param.u32 %r6, [p_pad];\n"
    "  ld.param.u32 %r7, [p_oh];\n  ld.param.u32 %r8, [p_ow];\n"
    "  mov.u32 %r9, %tid.x;\n"           /* ox */
    "  mov.u32 %r10, %tid.y;\n"          /* oy */
    "  mov.u32 %r11, %ctaid.x;\n"        /* i */
    "  mov.u32 %r12, %ctaid.y;\n"        /* tap = ky*k + kx */
    "  mov.u32 %r13, %ctaid.z;\n"        /* ci */
    "  div.u32 %r14, %r12, %r5;\n"       /* ky */
    "  mul.lo.u32 %r15, %r14, %r5;\n"
    "  sub.u32 %r15, %r12, %r15;\n"      /* kx */
    "  add.u32 %r16, %r10, %r14;\n"
    "  sub.u32 %r16, %r16, %r6;\n"       /* iy, wrapped when negative */
    "  add.u32 %r17, %r9, %r15;\n"
    "  sub.u32 %r17, %r17, %r6;\n"       /* ix */
    "  mov.f32 %f1, 0f00000000;\n"
    "  setp.lt.u32 %p1, %r16, %r3;\n  setp.lt.u32 %p2, %r17, %r4;\n  and.pred %p3, %p1, %p2;\n"
    "  @!%p3 bra IM2COL_STORE;\n"
    "  mad.lo.u32 %r18, %r11, %r2, %r13;\n" /* i*cin + ci */
    "  mad.lo.u32 %r18, %r18, %r3, %r16;\n" /* .. *h + iy */
    "  mad.lo.u32 %r18, %r18, %r4, %r17;\n" /* .. *w + ix */
    "  mul.wide.u32 %rd3, %r18, 4;\n  add.s64 %rd3, %rd1, %rd3;\n  ld.global.f32 %f1, [%rd3];\n"
    "IM2COL_STORE:\n"
    "  mul.lo.u32 %r19, %r7, %r8;\n"     /* P */
    "  mul.lo.u32 %r20, %r19, %r1;\n"    /* n*P */
    "  mul.lo.u32 %r21, %r5, %r5;\n"     /* k*k */
    "  mad.lo.u32 %r22, %r13, %r21, %r12;\n" /* row */
    "  mul.wide.u32 %rd4, %r22, %r20;\n"
    "  mad.lo.u32 %r23, %r11, %r19, %r9;\n"  /* i*P + ox */
    "  mad.lo.u32 %r23, %r10, %r8, %r23;\n"  /* .. + oy*ow */
    "  cvt.u64.u32 %rd5, %r23;\n  add.s64 %rd4, %rd4, %rd5;\n  shl.b64 %rd4, %rd4, 2;\n"
    "  add.s64 %rd4, %rd2, %rd4;\n  st.global.f32 [%rd4], %f1;\n"
    "  ret;\n"
    "}\n";

/* dx[i][ci][iy][ix] += the column entries that im2col copied from it:
 * col[(ci*k + ky)*k + kx][i*P + oy*ow + ox] at oy = iy + pad - ky,
 * ox = ix + pad - kx inside the output. Grid (n, cin), block (w, h): one
 * thread per dx entry, a gather (no atomics). */
static const char ptx_col2im[] =
    ".visible .entry bench_col2im(.param .u64 p_col, .param .u64 p_dx, .param .u32 p_n,\n"
    "    .param .u32 p_cin, .param .u32 p_h, .param .u32 p_w, .param .u32 p_k, .param .u32 p_pad,\n"
    "    .param .u32 p_oh, .param .u32 p_ow)\n"
    "{\n"
    "  .reg .pred %p<4>;\n  .reg .b32 %r<32>;\n  .reg .b64 %rd<8>;\n  .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [p_col];\n  ld.param.u64 %rd2, [p_dx];\n"
    "  cvta.to.global.u64 %rd1, %rd1;\n  cvta.to.global.u64 %rd2, %rd2;\n"
    "  ld.param.u32 %r1, [p_n];\n  ld.param.u32 %r2, [p_cin];\n  ld.param.u32 %r3, [p_h];\n"
    "  ld.param.u32 %r4, [p_w];\n  ld.param.u32 %r5, [p_k];\n  ld.param.u32 %r6, [p_pad];\n"
    "  ld.param.u32 %r7, [p_oh];\n  ld.param.u32 %r8, [p_ow];\n"
    "  mov.u32 %r9, %tid.x;\n"           /* ix */
    "  mov.u32 %r10, %tid.y;\n"          /* iy */
    "  mov.u32 %r11, %ctaid.x;\n"        /* i */
    "  mov.u32 %r12, %ctaid.y;\n"        /* ci */
    "  mul.lo.u32 %r13, %r7, %r8;\n"     /* P */
    "  mul.lo.u32 %r14, %r13, %r1;\n"    /* n*P */
    "  mul.lo.u32 %r15, %r11, %r13;\n"   /* i*P */
    "  mov.f32 %f1, 0f00000000;\n"
    "  mov.u32 %r16, 0;\n"               /* ky */
    "COL2IM_KY:\n"
    "  add.u32 %r17, %r10, %r6;\n  sub.u32 %r17, %r17, %r16;\n" /* oy */
    "  setp.ge.u32 %p1, %r17, %r7;\n  @%p1 bra COL2IM_NEXT_KY;\n"
    "  mov.u32 %r18, 0;\n"               /* kx */
    "COL2IM_KX:\n"
    "  add.u32 %r19, %r9, %r6;\n  sub.u32 %r19, %r19, %r18;\n"  /* ox */
    "  setp.ge.u32 %p2, %r19, %r8;\n  @%p2 bra COL2IM_NEXT_KX;\n"
    "  mad.lo.u32 %r20, %r12, %r5, %r16;\n" /* ci*k + ky */
    "  mad.lo.u32 %r20, %r20, %r5, %r18;\n" /* .. *k + kx: the row */
    "  mul.wide.u32 %rd3, %r20, %r14;\n"
    "  mad.lo.u32 %r21, %r17, %r8, %r19;\n" /* oy*ow + ox */
    "  add.u32 %r21, %r21, %r15;\n"
    "  cvt.u64.u32 %rd4, %r21;\n  add.s64 %rd3, %rd3, %rd4;\n  shl.b64 %rd3, %rd3, 2;\n"
    "  add.s64 %rd3, %rd1, %rd3;\n  ld.global.f32 %f2, [%rd3];\n  add.f32 %f1, %f1, %f2;\n"
    "COL2IM_NEXT_KX:\n"
    "  add.u32 %r18, %r18, 1;\n  setp.lt.u32 %p3, %r18, %r5;\n  @%p3 bra COL2IM_KX;\n"
    "COL2IM_NEXT_KY:\n"
    "  add.u32 %r16, %r16, 1;\n  setp.lt.u32 %p3, %r16, %r5;\n  @%p3 bra COL2IM_KY;\n"
    "  mad.lo.u32 %r22, %r11, %r2, %r12;\n" /* i*cin + ci */
    "  mad.lo.u32 %r22, %r22, %r3, %r10;\n" /* .. *h + iy */
    "  mad.lo.u32 %r22, %r22, %r4, %r9;\n"  /* .. *w + ix */
    "  mul.wide.u32 %rd5, %r22, 4;\n  add.s64 %rd5, %rd2, %rd5;\n"
    "  ld.global.f32 %f3, [%rd5];\n  add.f32 %f3, %f3, %f1;\n  st.global.f32 [%rd5], %f3;\n"
    "  ret;\n"
    "}\n";

/* out[b][a][q] = in[a][b][q] for in [A][B][Q]: NCHW <-> [C][N][HW].
 * Grid (A, B), the block's threads stride over q. */
static const char ptx_permute[] =
    ".visible .entry bench_permute(.param .u64 p_in, .param .u64 p_out, .param .u32 p_a,\n"
    "    .param .u32 p_b, .param .u32 p_q)\n"
    "{\n"
    "  .reg .pred %p<3>;\n  .reg .b32 %r<12>;\n  .reg .b64 %rd<8>;\n  .reg .f32 %f<2>;\n"
    "  ld.param.u64 %rd1, [p_in];\n  ld.param.u64 %rd2, [p_out];\n"
    "  cvta.to.global.u64 %rd1, %rd1;\n  cvta.to.global.u64 %rd2, %rd2;\n"
    "  ld.param.u32 %r1, [p_a];\n  ld.param.u32 %r2, [p_b];\n  ld.param.u32 %r3, [p_q];\n"
    "  mov.u32 %r4, %ctaid.x;\n"         /* a */
    "  mov.u32 %r5, %ctaid.y;\n"         /* b */
    "  mov.u32 %r6, %tid.x;\n"           /* q */
    "  mov.u32 %r7, %ntid.x;\n"
    "  setp.ge.u32 %p1, %r6, %r3;\n  @%p1 bra PERMUTE_DONE;\n"
    "  mad.lo.u32 %r8, %r4, %r2, %r5;\n  mul.wide.u32 %rd3, %r8, %r3;\n" /* (a*B + b)*Q */
    "  mad.lo.u32 %r9, %r5, %r1, %r4;\n  mul.wide.u32 %rd4, %r9, %r3;\n" /* (b*A + a)*Q */
    "PERMUTE_LOOP:\n"
    "  cvt.u64.u32 %rd5, %r6;\n"
    "  add.s64 %rd6, %rd3, %rd5;\n  shl.b64 %rd6, %rd6, 2;\n  add.s64 %rd6, %rd1, %rd6;\n"
    "  ld.global.f32 %f1, [%rd6];\n"
    "  add.s64 %rd7, %rd4, %rd5;\n  shl.b64 %rd7, %rd7, 2;\n  add.s64 %rd7, %rd2, %rd7;\n"
    "  st.global.f32 [%rd7], %f1;\n"
    "  add.u32 %r6, %r6, %r7;\n  setp.lt.u32 %p2, %r6, %r3;\n  @%p2 bra PERMUTE_LOOP;\n"
    "PERMUTE_DONE:\n"
    "  ret;\n"
    "}\n";

/* dw[j] *= m[j] for j < num: the gradient of a masked layer as its user
 * computes it. One thread per weight. */
static const char ptx_mask[] =
    ".visible .entry bench_mask(.param .u64 p_dw, .param .u64 p_m, .param .u32 p_num)\n"
    "{\n"
    "  .reg .pred %p<2>;\n  .reg .b32 %r<6>;\n  .reg .b64 %rd<6>;\n  .reg .f32 %f<4>;\n"
    "  ld.param.u64 %rd1, [p_dw];\n  ld.param.u64 %rd2, [p_m];\n  ld.param.u32 %r5, [p_num];\n"
    "  cvta.to.global.u64 %rd1, %rd1;\n  cvta.to.global.u64 %rd2, %rd2;\n"
    "  mov.u32 %r1, %ctaid.x;\n  mov.u32 %r2, %ntid.x;\n  mov.u32 %r3, %tid.x;\n"
    "  mad.lo.u32 %r4, %r1, %r2, %r3;\n"
    "  setp.ge.u32 %p1, %r4, %r5;\n  @%p1 bra MASK_DONE;\n"
    "  mul.wide.u32 %rd3, %r4, 4;\n  add.s64 %rd4, %rd1, %rd3;\n  add.s64 %rd5, %rd2, %rd3;\n"
    "  ld.global.f32 %f1, [%rd4];\n  ld.global.f32 %f2, [%rd5];\n  mul.f32 %f3, %f1, %f2;\n"
    "  st.global.f32 [%rd4], %f3;\n"
    "MASK_DONE:\n"
    "  ret;\n"
    "}\n";

static char *ptx_module(void) {
  const char *parts[] = {ptx_head, ptx_im2col, ptx_col2im, ptx_permute, ptx_mask};
  size_t len = 1;
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) len += strlen(parts[i]);
  char *s = malloc(len);
  if (!s) return NULL;
  s[0] = 0;
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) strcat(s, parts[i]);
  return s;
}

/* ---- the device --------------------------------------------------------------- */

typedef struct gpu {
  CUdevice dev;
  CUcontext ctx;                 /* the primary context, shared with cuBLAS and cuSPARSE */
  CUstream s;                    /* everything runs on it, in order */
  cublasHandle_t blas;
  sp_handle sp;
  CUmodule mod;                  /* the peers' kernels */
  CUfunction im2col, col2im, permute, mask;
  CUevent e0, e1;
  char sm[16];                   /* "sm_XY", what cu_kern_build targets */
} gpu;

static void gpu_close(gpu *g) {
  if (g->e0) cu.cuEventDestroy_v2(g->e0);
  if (g->e1) cu.cuEventDestroy_v2(g->e1);
  if (g->mod) cu.cuModuleUnload(g->mod);
  if (g->sp) sp.cusparseDestroy(g->sp);
  if (g->blas) cublas.cublasDestroy_v2(g->blas);
  if (g->s) cu.cuStreamDestroy_v2(g->s);
  if (g->ctx) cu.cuDevicePrimaryCtxRelease_v2(g->dev);
  memset(g, 0, sizeof *g);
}

/* Where the benchmark cannot run at all: the exit status of a skipped test. */
static int skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("SKIP: ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  return 77;
}

/* 0; 77 with "SKIP: ..." printed where no GPU, driver or library can run
 * the benchmark; -1 on a failure once a GPU is there. */
static int gpu_open(gpu *g) {
  char err[512];
  memset(g, 0, sizeof *g);
  if (cu_open(err, sizeof err)) return skip("%s", err);
  CUresult r = cu.cuInit(0);
  if (r == CUDA_ERROR_NO_DEVICE) return skip("no GPU: cuInit found no CUDA device");
  if (r) return skip("no GPU: cuInit failed: %s (CUresult %d)", cu_str(r), r);
  int count = 0;
  r = cu.cuDeviceGetCount(&count);
  if (r || count < 1) return skip("no GPU: cuDeviceGetCount found %d devices", count);
  if (cublas_open(err, sizeof err)) return skip("%s", err);
  if (sp_open(err, sizeof err)) return skip("%s", err);

  CU(cu.cuDeviceGet(&g->dev, 0));
  CU(cu.cuDevicePrimaryCtxRetain(&g->ctx, g->dev));
  CU(cu.cuCtxSetCurrent(g->ctx));
  CU(cu.cuStreamCreate(&g->s, 0));
  int major = 0, minor = 0, sms = 0;
  CU(cu.cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, g->dev));
  CU(cu.cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, g->dev));
  CU(cu.cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, g->dev));
  snprintf(g->sm, sizeof g->sm, "sm_%d%d", major, minor);
  char name[256] = "";
  CU(cu.cuDeviceGetName(name, sizeof name, g->dev));
  printf("device: %s, %s, %d SMs\n", name, g->sm, sms);

  /* cuBLAS's default math mode: FP32 SGEMM, no TF32 tensor cores. */
  BL(cublas.cublasCreate_v2(&g->blas));
  BL(cublas.cublasSetStream_v2(g->blas, g->s));
  SP(sp.cusparseCreate(&g->sp));
  SP(sp.cusparseSetStream(g->sp, g->s));
  CU(cu.cuEventCreate(&g->e0, 0));
  CU(cu.cuEventCreate(&g->e1, 0));

  char *ptx = ptx_module(), log[4096] = "";
  if (!ptx) return fail("out of memory");
  CUjit_option opt[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *val[2] = {log, (void *)(uintptr_t)sizeof log};
  r = cu.cuModuleLoadDataEx(&g->mod, ptx, 2, opt, val);
  free(ptx);
  if (r) {
    g->mod = NULL;
    return fail("cuModuleLoadDataEx (the peers' PTX): %s (CUresult %d)%s%s", cu_str(r), r,
                log[0] ? ": " : "", log);
  }
  CU(cu.cuModuleGetFunction(&g->im2col, g->mod, "bench_im2col"));
  CU(cu.cuModuleGetFunction(&g->col2im, g->mod, "bench_col2im"));
  CU(cu.cuModuleGetFunction(&g->permute, g->mod, "bench_permute"));
  CU(cu.cuModuleGetFunction(&g->mask, g->mod, "bench_mask"));
  return 0;
}

/* ---- one layer ---------------------------------------------------------------- */

typedef struct shape {
  const char *key;               /* its name on the command line */
  const char *title;
  int conv;                      /* else linear */
  int cin, h, w, cout, k, pad;   /* linear: cin = in, cout = out, h = w = k = 1, pad = 0 */
} shape;

static const shape shapes[] = {
    {"conv", "conv 3x3 64->64 at 14x14, stride 1, pad 1", 1, 64, 14, 14, 64, 3, 1},
    {"linear", "linear 3136->512", 0, 3136, 1, 1, 512, 1, 0},
    {"conv256", "conv 3x3 256->256 at 16x16, stride 1, pad 1", 1, 256, 16, 16, 256, 3, 1},
};
enum { NSHAPES = sizeof shapes / sizeof shapes[0] };

/* The three ways of running the layer, and a pass's three phases. */
enum { M_ILNAS, M_CUBLAS, M_CUSPARSE, NM };
enum { P_FWD, P_BWD_DATA, P_BWD_WEIGHT, NP };
static const char *const method_name[NM] = {"ilnas", "cublas", "cusparse"};
static const char *const part_name[NP + 1] = {"fwd", "bwd_data", "bwd_weight", "total"};

typedef struct lay {
  const shape *s;
  int n, oh, ow, P, KC, nP;      /* P pixels per output plane, KC = cin*k*k, nP = n*P */
  size_t nx, ny, nw;             /* floats of x (and dx), y (and dy), w (and dw) */
  float *hx, *hdy, *hw, *hm;     /* host: input, output gradient, weights, mask as 0/1 */
  uint8_t *wm;                   /* the mask as cu_kern_build takes it */
  CUdeviceptr x, dy, y, dx, w, m, dw;
  CUdeviceptr col, dcol, yc, dyc; /* conv peers: columns [KC][nP]; y, dy as [cout][nP] */
  /* cuSPARSE's dense operands, [rows][nP] (conv: row-major over the
   * columns; linear: the sample-major arrays read column-major) */
  sp_dnmat fB, fC;               /* forward: col or x, yc or y */
  sp_dnmat bB, bC;               /* backward to the input: dyc or dy, dcol or dx */
  /* one density */
  cu_kern k;
  int nnz;
  int *rp, *cix, *rpT, *cixT;    /* host CSR of w ([cout][KC]) and of its transpose */
  float *val, *valT;
  CUdeviceptr drp, dci, dval, drpT, dciT, dvalT, ddwv; /* ddwv: SDDMM's dw, in w's CSR order */
  sp_spmat spW, spWT, spDW;
  CUdeviceptr buf[3];            /* SpMM forward, SpMM backward, SDDMM */
} lay;

static void dfree(CUdeviceptr *p) {
  if (*p) {
    CUresult r = cu.cuMemFree_v2(*p);
    if (r) fail("cuMemFree: %s", cu_str(r));
  }
  *p = 0;
}

static int dalloc(CUdeviceptr *p, size_t bytes) {
  CU(cu.cuMemAlloc_v2(p, bytes ? bytes : 4));
  return 0;
}

static int dput(CUdeviceptr *p, const void *h, size_t bytes) {
  if (dalloc(p, bytes)) return -1;
  CU(cu.cuMemcpyHtoD_v2(*p, h, bytes));
  return 0;
}

static void density_free(lay *L) {
  cu_kern_free(&L->k);
  if (L->spW) sp.cusparseDestroySpMat(L->spW);
  if (L->spWT) sp.cusparseDestroySpMat(L->spWT);
  if (L->spDW) sp.cusparseDestroySpMat(L->spDW);
  L->spW = L->spWT = L->spDW = NULL;
  CUdeviceptr *d[] = {&L->drp, &L->dci, &L->dval, &L->drpT, &L->dciT, &L->dvalT, &L->ddwv,
                      &L->buf[0], &L->buf[1], &L->buf[2]};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) dfree(d[i]);
  free(L->rp), free(L->cix), free(L->rpT), free(L->cixT), free(L->val), free(L->valT);
  L->rp = L->cix = L->rpT = L->cixT = NULL;
  L->val = L->valT = NULL;
}

static void lay_free(lay *L) {
  density_free(L);
  sp_dnmat *dn[] = {&L->fB, &L->fC, &L->bB, &L->bC};
  for (size_t i = 0; i < sizeof dn / sizeof dn[0]; i++)
    if (*dn[i]) sp.cusparseDestroyDnMat(*dn[i]), *dn[i] = NULL;
  CUdeviceptr *d[] = {&L->x, &L->dy, &L->y, &L->dx, &L->w, &L->m, &L->dw,
                      &L->col, &L->dcol, &L->yc, &L->dyc};
  for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) dfree(d[i]);
  free(L->hx), free(L->hdy), free(L->hw), free(L->hm), free(L->wm);
  L->hx = L->hdy = L->hw = L->hm = NULL;
  L->wm = NULL;
}

/* xorshift64, as bench/layer_bench.c; reseeded per layer and density so
 * that a layer's figures do not depend on which others ran before it. */
static uint64_t rs;
static double urand(void) {
  rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
  return (double)(rs >> 11) / 9007199254740992.0;
}
static float frand(void) { return (float)(urand() * 2 - 1); }

static int lay_init(lay *L, const shape *s) {
  memset(L, 0, sizeof *L);
  L->s = s, L->n = BATCH;
  L->oh = s->h + 2 * s->pad - s->k + 1, L->ow = s->w + 2 * s->pad - s->k + 1;
  L->P = L->oh * L->ow, L->KC = s->cin * s->k * s->k, L->nP = L->n * L->P;
  L->nx = (size_t)L->n * s->cin * s->h * s->w;
  L->ny = (size_t)L->n * s->cout * L->P;
  L->nw = (size_t)s->cout * L->KC;
  /* the peers' kernels index with 32 bits and take a plane per block */
  if (L->nx >= (1u << 31) || (size_t)L->nP * s->cout >= (1u << 31) || s->h * s->w > 1024 ||
      L->P > 1024)
    return fail("%s: too large for the peers' kernels", s->key);
  L->hx = malloc(L->nx * sizeof(float)), L->hdy = malloc(L->ny * sizeof(float));
  L->hw = malloc(L->nw * sizeof(float)), L->hm = malloc(L->nw * sizeof(float));
  L->wm = malloc(L->nw);
  if (!L->hx || !L->hdy || !L->hw || !L->hm || !L->wm) return fail("out of memory");
  rs = 0x9E3779B97F4A7C15ull ^ (uint64_t)(s - shapes + 1);
  for (size_t i = 0; i < L->nx; i++) L->hx[i] = frand();
  for (size_t i = 0; i < L->ny; i++) L->hdy[i] = frand();
  if (dput(&L->x, L->hx, L->nx * sizeof(float)) || dput(&L->dy, L->hdy, L->ny * sizeof(float)) ||
      dalloc(&L->y, L->ny * sizeof(float)) || dalloc(&L->dx, L->nx * sizeof(float)) ||
      dalloc(&L->w, L->nw * sizeof(float)) || dalloc(&L->m, L->nw * sizeof(float)) ||
      dalloc(&L->dw, L->nw * sizeof(float)))
    return -1;
  size_t cols = (size_t)L->KC * L->nP * sizeof(float), outs = L->ny * sizeof(float);
  if (s->conv && (dalloc(&L->col, cols) || dalloc(&L->dcol, cols) || dalloc(&L->yc, outs) ||
                  dalloc(&L->dyc, outs)))
    return -1;
  /* conv: col [KC][nP], yc and dyc [cout][nP], dcol [KC][nP], row-major.
   * linear: x [n][in] is in x n column-major, y [n][out] out x n, the same
   * for dy and dx; nP = n. */
  int order = s->conv ? SP_ORDER_ROW : SP_ORDER_COL;
  int64_t ldk = s->conv ? L->nP : L->KC, ldc = s->conv ? L->nP : s->cout;
  SP(sp.cusparseCreateDnMat(&L->fB, L->KC, L->nP, ldk, (void *)(uintptr_t)(s->conv ? L->col : L->x),
                            SP_R_32F, order));
  SP(sp.cusparseCreateDnMat(&L->fC, s->cout, L->nP, ldc, (void *)(uintptr_t)(s->conv ? L->yc : L->y),
                            SP_R_32F, order));
  SP(sp.cusparseCreateDnMat(&L->bB, s->cout, L->nP, ldc, (void *)(uintptr_t)(s->conv ? L->dyc : L->dy),
                            SP_R_32F, order));
  SP(sp.cusparseCreateDnMat(&L->bC, L->KC, L->nP, ldk, (void *)(uintptr_t)(s->conv ? L->dcol : L->dx),
                            SP_R_32F, order));
  return 0;
}

/* ---- the three methods ------------------------------------------------------------ */

static const float one = 1.0f, zero = 0.0f;

static int launch(gpu *g, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                  void **args, const char *what) {
  CUresult r = cu.cuLaunchKernel(f, gx, gy, gz, bx, by, 1, 0, g->s, args, NULL);
  if (r) return fail("cuLaunchKernel (%s): %s (CUresult %d)", what, cu_str(r), r);
  return 0;
}

static int im2col(gpu *g, lay *L) {
  int n = L->n, cin = L->s->cin, h = L->s->h, w = L->s->w, k = L->s->k, pad = L->s->pad;
  void *args[] = {&L->x, &L->col, &n, &cin, &h, &w, &k, &pad, &L->oh, &L->ow};
  return launch(g, g->im2col, (unsigned)n, (unsigned)(k * k), (unsigned)cin, (unsigned)L->ow,
                (unsigned)L->oh, args, "im2col");
}

static int col2im(gpu *g, lay *L) {
  int n = L->n, cin = L->s->cin, h = L->s->h, w = L->s->w, k = L->s->k, pad = L->s->pad;
  void *args[] = {&L->dcol, &L->dx, &n, &cin, &h, &w, &k, &pad, &L->oh, &L->ow};
  return launch(g, g->col2im, (unsigned)n, (unsigned)cin, 1, (unsigned)w, (unsigned)h, args, "col2im");
}

/* out [b][a][q] from in [a][b][q] */
static int permute(gpu *g, CUdeviceptr in, CUdeviceptr out, int a, int b, int q) {
  void *args[] = {&in, &out, &a, &b, &q};
  return launch(g, g->permute, (unsigned)a, (unsigned)b, 1, (unsigned)(q < 256 ? q : 256), 1, args,
                "permute");
}

static int mask(gpu *g, lay *L) {
  unsigned num = (unsigned)L->nw;
  void *args[] = {&L->dw, &L->m, &num};
  return launch(g, g->mask, (num + 255) / 256, 1, 1, 256, 1, args, "mask");
}

/* Row-major C arrays seen by column-major BLAS are their transposes: a
 * row-major [r][c] array is a c x r column-major matrix with ld c. */
static int run_cublas(gpu *g, lay *L, int p) {
  const shape *s = L->s;
  cublasHandle_t h = g->blas;
  float *W = (float *)(uintptr_t)L->w, *DW = (float *)(uintptr_t)L->dw;
  if (!s->conv) {
    float *X = (float *)(uintptr_t)L->x, *Y = (float *)(uintptr_t)L->y;
    float *DX = (float *)(uintptr_t)L->dx, *DY = (float *)(uintptr_t)L->dy;
    int n = L->n, in = s->cin, out = s->cout;
    switch (p) {
    case P_FWD: /* Y = X W^T:  Y^T (out x n) = W (op T of the in x out W^T) * X^T */
      BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, W, in, X, in, &zero, Y, out));
      return 0;
    case P_BWD_DATA: /* dX += dY W:  dX^T (in x n) = W^T (in x out) * dY^T (out x n) */
      BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, W, in, DY, out, &one, DX, in));
      return 0;
    default: /* dW = dY^T X:  dW^T (in x out) = X^T (in x n) * dY (op T of dY^T) */
      BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, X, in, DY, out, &zero, DW, in));
      return mask(g, L);
    }
  }
  float *col = (float *)(uintptr_t)L->col, *dcol = (float *)(uintptr_t)L->dcol;
  float *yc = (float *)(uintptr_t)L->yc, *dyc = (float *)(uintptr_t)L->dyc;
  int nP = L->nP, KC = L->KC, co = s->cout;
  switch (p) {
  case P_FWD: /* yc [co][nP] = W [co][KC] col [KC][nP]:  yc^T = col^T W^T, each stored as is */
    if (im2col(g, L)) return -1;
    BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, nP, co, KC, &one, col, nP, W, KC, &zero, yc, nP));
    return permute(g, L->yc, L->y, co, L->n, L->P);
  case P_BWD_DATA: /* dcol [KC][nP] = W^T dyc:  dcol^T (nP x KC) = dyc^T (nP x co) * W (op T) */
    if (permute(g, L->dy, L->dyc, L->n, co, L->P)) return -1;
    BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_T, nP, KC, co, &one, dyc, nP, W, KC, &zero, dcol, nP));
    return col2im(g, L);
  default: /* dW [co][KC] = dyc col^T:  dW^T (KC x co) = col (op T) * dyc^T; reuses the
            * columns of the forward and dyc of the backward, as a training step */
    BL(cublas.cublasSgemm_v2(h, CUBLAS_OP_T, CUBLAS_OP_N, KC, co, nP, &one, col, nP, dyc, nP, &zero, DW, KC));
    return mask(g, L);
  }
}

static int run_cusparse(gpu *g, lay *L, int p) {
  const shape *s = L->s;
  /* linear layers add into dx directly; conv writes dcol, which col2im adds */
  const float *beta_bwd = s->conv ? &zero : &one;
  switch (p) {
  case P_FWD:
    if (s->conv && im2col(g, L)) return -1;
    SP(sp.cusparseSpMM(g->sp, SP_OP_N, SP_OP_N, &one, L->spW, L->fB, &zero, L->fC, SP_R_32F,
                       SP_SPMM_ALG_DEFAULT, (void *)(uintptr_t)L->buf[0]));
    return s->conv ? permute(g, L->yc, L->y, s->cout, L->n, L->P) : 0;
  case P_BWD_DATA:
    if (s->conv && permute(g, L->dy, L->dyc, L->n, s->cout, L->P)) return -1;
    SP(sp.cusparseSpMM(g->sp, SP_OP_N, SP_OP_N, &one, L->spWT, L->bB, beta_bwd, L->bC, SP_R_32F,
                       SP_SPMM_ALG_DEFAULT, (void *)(uintptr_t)L->buf[1]));
    return s->conv ? col2im(g, L) : 0;
  default: /* dW at the mask = dy-side (cout x nP) times the x-side transposed (nP x KC) */
    SP(sp.cusparseSDDMM(g->sp, SP_OP_N, SP_OP_T, &one, L->bB, L->fB, &zero, L->spDW, SP_R_32F,
                        SP_SDDMM_ALG_DEFAULT, (void *)(uintptr_t)L->buf[2]));
    return 0;
  }
}

static int run_ilnas(gpu *g, lay *L, int p) {
  int64_t xs = (int64_t)L->s->cin * L->s->h * L->s->w, ys = (int64_t)L->s->cout * L->P;
  switch (p) {
  case P_FWD:
    CU(cu_kern_fwd(&L->k, g->s, L->x, L->w, 0, L->y, L->n, xs, ys));
    return 0;
  case P_BWD_DATA:
    CU(cu_kern_bwd_data(&L->k, g->s, L->dy, L->w, L->dx, L->n, ys, xs));
    return 0;
  default:
    CU(cu_kern_bwd_weight(&L->k, g->s, L->x, L->dy, L->dw, 0, L->n, xs, ys));
    return 0;
  }
}

static int run_phase(gpu *g, lay *L, int m, int p) {
  return m == M_ILNAS ? run_ilnas(g, L, p) : m == M_CUBLAS ? run_cublas(g, L, p) : run_cusparse(g, L, p);
}

/* p == NP: a whole pass, the three phases in order */
static int run_part(gpu *g, lay *L, int m, int p) {
  if (p != NP) return run_phase(g, L, m, p);
  for (int q = 0; q < NP; q++)
    if (run_phase(g, L, m, q)) return -1;
  return 0;
}

/* ---- one density: masks, kernels, CSR ------------------------------------------------ */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CSR of the rows x cols matrix whose entry (r, c) is a[r*rs + c*cs]
 * where the mask is set (at the same index into m). */
static int csr_build(int rows, int cols, size_t rstr, size_t cstr, const float *a, const float *m, int nnz,
                     int **rp, int **ci, float **val) {
  *rp = malloc((size_t)(rows + 1) * sizeof(int));
  *ci = malloc((size_t)(nnz ? nnz : 1) * sizeof(int));
  *val = malloc((size_t)(nnz ? nnz : 1) * sizeof(float));
  if (!*rp || !*ci || !*val) return fail("out of memory");
  int e = 0;
  (*rp)[0] = 0;
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < cols; c++) {
      size_t i = (size_t)r * rstr + (size_t)c * cstr;
      if (m[i] != 0.0f) (*ci)[e] = c, (*val)[e++] = a[i];
    }
    (*rp)[r + 1] = e;
  }
  return 0;
}

static int density_init(gpu *g, lay *L, double dens, double *build_s) {
  const shape *s = L->s;
  L->nnz = 0;
  for (size_t i = 0; i < L->nw; i++) {
    L->wm[i] = (uint8_t)(urand() < dens);
    L->hm[i] = L->wm[i];
    L->hw[i] = L->wm[i] ? frand() : 0.0f;
    L->nnz += L->wm[i];
  }
  CU(cu.cuMemcpyHtoD_v2(L->w, L->hw, L->nw * sizeof(float)));
  CU(cu.cuMemcpyHtoD_v2(L->m, L->hm, L->nw * sizeof(float)));

  cu_kern_desc d = {.conv = s->conv};
  if (s->conv)
    d.cd = (cg_conv_desc){.cin = s->cin, .h = s->h, .w = s->w, .cout = s->cout, .k = s->k,
                          .stride = 1, .pad = s->pad, .wm = L->wm, .bm = NULL};
  else
    d.ld = (cg_linear_desc){.in = s->cin, .out = s->cout, .wm = L->wm, .bm = NULL, .lanes = 0};
  char err[1024];
  double t0 = now_s();
  if (cu_kern_build(&L->k, &d, g->sm, err, sizeof err)) return fail("cu_kern_build: %s", err);
  *build_s = now_s() - t0;

  /* w is [cout][KC]; its transpose's CSR feeds the backward to the input
   * (built once here: the fastest SpMM, and a peer that would keep both
   * copies of the weights in step) */
  if (csr_build(s->cout, L->KC, (size_t)L->KC, 1, L->hw, L->hm, L->nnz, &L->rp, &L->cix, &L->val) ||
      csr_build(L->KC, s->cout, 1, (size_t)L->KC, L->hw, L->hm, L->nnz, &L->rpT, &L->cixT, &L->valT))
    return -1;
  size_t ib = (size_t)(L->nnz ? L->nnz : 1) * sizeof(int), fb = (size_t)(L->nnz ? L->nnz : 1) * sizeof(float);
  if (dput(&L->drp, L->rp, (size_t)(s->cout + 1) * sizeof(int)) || dput(&L->dci, L->cix, ib) ||
      dput(&L->dval, L->val, fb) || dput(&L->drpT, L->rpT, (size_t)(L->KC + 1) * sizeof(int)) ||
      dput(&L->dciT, L->cixT, ib) || dput(&L->dvalT, L->valT, fb) || dalloc(&L->ddwv, fb))
    return -1;
#define DP(p) ((void *)(uintptr_t)(p))
  SP(sp.cusparseCreateCsr(&L->spW, s->cout, L->KC, L->nnz, DP(L->drp), DP(L->dci), DP(L->dval),
                          SP_INDEX_32I, SP_INDEX_32I, SP_INDEX_BASE_ZERO, SP_R_32F));
  SP(sp.cusparseCreateCsr(&L->spWT, L->KC, s->cout, L->nnz, DP(L->drpT), DP(L->dciT), DP(L->dvalT),
                          SP_INDEX_32I, SP_INDEX_32I, SP_INDEX_BASE_ZERO, SP_R_32F));
  SP(sp.cusparseCreateCsr(&L->spDW, s->cout, L->KC, L->nnz, DP(L->drp), DP(L->dci), DP(L->ddwv),
                          SP_INDEX_32I, SP_INDEX_32I, SP_INDEX_BASE_ZERO, SP_R_32F));
  /* Buffers and preprocessing once per pattern, outside the timing, as
   * a user training with a fixed mask would. */
  const float *beta_bwd = s->conv ? &zero : &one;
  size_t sz[3];
  SP(sp.cusparseSpMM_bufferSize(g->sp, SP_OP_N, SP_OP_N, &one, L->spW, L->fB, &zero, L->fC, SP_R_32F,
                                SP_SPMM_ALG_DEFAULT, &sz[0]));
  SP(sp.cusparseSpMM_bufferSize(g->sp, SP_OP_N, SP_OP_N, &one, L->spWT, L->bB, beta_bwd, L->bC, SP_R_32F,
                                SP_SPMM_ALG_DEFAULT, &sz[1]));
  SP(sp.cusparseSDDMM_bufferSize(g->sp, SP_OP_N, SP_OP_T, &one, L->bB, L->fB, &zero, L->spDW, SP_R_32F,
                                 SP_SDDMM_ALG_DEFAULT, &sz[2]));
  for (int i = 0; i < 3; i++)
    if (dalloc(&L->buf[i], sz[i])) return -1;
  SP(sp.cusparseSpMM_preprocess(g->sp, SP_OP_N, SP_OP_N, &one, L->spW, L->fB, &zero, L->fC, SP_R_32F,
                                SP_SPMM_ALG_DEFAULT, DP(L->buf[0])));
  SP(sp.cusparseSpMM_preprocess(g->sp, SP_OP_N, SP_OP_N, &one, L->spWT, L->bB, beta_bwd, L->bC, SP_R_32F,
                                SP_SPMM_ALG_DEFAULT, DP(L->buf[1])));
  SP(sp.cusparseSDDMM_preprocess(g->sp, SP_OP_N, SP_OP_T, &one, L->bB, L->fB, &zero, L->spDW, SP_R_32F,
                                 SP_SDDMM_ALG_DEFAULT, DP(L->buf[2])));
#undef DP
  CU(cu.cuStreamSynchronize(g->s));
  return 0;
}

/* ---- correctness, before any timing ------------------------------------------------------ */

/* One entry from the definitions, in double (stride 1; linear is the conv
 * with h = w = k = 1, pad 0). */
static double ref_y(const lay *L, int i, int co, int oy, int ox) {
  const shape *s = L->s;
  double a = 0;
  for (int ci = 0; ci < s->cin; ci++)
    for (int ky = 0; ky < s->k; ky++)
      for (int kx = 0; kx < s->k; kx++) {
        int iy = oy - s->pad + ky, ix = ox - s->pad + kx;
        if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
        a += (double)L->hw[(((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx] *
             L->hx[(((size_t)i * s->cin + ci) * s->h + iy) * s->w + ix];
      }
  return a;
}

static double ref_dx(const lay *L, int i, int ci, int iy, int ix) {
  const shape *s = L->s;
  double a = 0;
  for (int co = 0; co < s->cout; co++)
    for (int ky = 0; ky < s->k; ky++)
      for (int kx = 0; kx < s->k; kx++) {
        int oy = iy + s->pad - ky, ox = ix + s->pad - kx;
        if (oy < 0 || oy >= L->oh || ox < 0 || ox >= L->ow) continue;
        a += (double)L->hw[(((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx] *
             L->hdy[(((size_t)i * s->cout + co) * L->oh + oy) * L->ow + ox];
      }
  return a;
}

static double ref_dw(const lay *L, int co, int ci, int ky, int kx) {
  const shape *s = L->s;
  if (L->hm[(((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx] == 0.0f) return 0;
  double a = 0;
  for (int i = 0; i < L->n; i++)
    for (int oy = 0; oy < L->oh; oy++)
      for (int ox = 0; ox < L->ow; ox++) {
        int iy = oy - s->pad + ky, ix = ox - s->pad + kx;
        if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
        a += (double)L->hdy[(((size_t)i * s->cout + co) * L->oh + oy) * L->ow + ox] *
             L->hx[(((size_t)i * s->cin + ci) * s->h + iy) * s->w + ix];
      }
  return a;
}

/* |a - b|max / |b|max */
static double nerr(const float *a, const float *b, size_t n) {
  double e = 0, m = 0;
  for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
  return e / (m > 0 ? m : 1);
}

static double amax(const float *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
  return m > 0 ? m : 1;
}

/* One pass of method m from dx = 0; y, dx and dw (dense) into the host arrays. */
static int run_fetch(gpu *g, lay *L, int m, float *y, float *dx, float *dw, float *dwv) {
  CU(cu.cuMemsetD32Async(L->dx, 0, L->nx, g->s));
  if (run_part(g, L, m, NP)) return -1;
  CU(cu.cuStreamSynchronize(g->s));
  CU(cu.cuMemcpyDtoH_v2(y, L->y, L->ny * sizeof(float)));
  CU(cu.cuMemcpyDtoH_v2(dx, L->dx, L->nx * sizeof(float)));
  if (m != M_CUSPARSE) {
    CU(cu.cuMemcpyDtoH_v2(dw, L->dw, L->nw * sizeof(float)));
    return 0;
  }
  /* SDDMM's gradient is in the CSR order of w: scattered back */
  CU(cu.cuMemcpyDtoH_v2(dwv, L->ddwv, (size_t)L->nnz * sizeof(float)));
  memset(dw, 0, L->nw * sizeof(float));
  for (int r = 0; r < L->s->cout; r++)
    for (int e = L->rp[r]; e < L->rp[r + 1]; e++) dw[(size_t)r * L->KC + L->cix[e]] = dwv[e];
  return 0;
}

static const double tolerance = 1e-3; /* the largest normalised error accepted */

/* The three methods against each other (cuBLAS the reference), and
 * cuBLAS against the definitions at SAMPLES entries of each output. 0, 1
 * when an error is above the tolerance, -1 on a failure. */
static int check(gpu *g, lay *L, double dens) {
  const shape *s = L->s;
  float *ry = malloc(L->ny * sizeof(float)), *rdx = malloc(L->nx * sizeof(float));
  float *rdw = malloc(L->nw * sizeof(float)), *ty = malloc(L->ny * sizeof(float));
  float *tdx = malloc(L->nx * sizeof(float)), *tdw = malloc(L->nw * sizeof(float));
  float *dwv = malloc((size_t)(L->nnz ? L->nnz : 1) * sizeof(float));
  int rc = -1;
  if (!ry || !rdx || !rdw || !ty || !tdx || !tdw || !dwv) {
    fail("out of memory");
    goto out;
  }
  if (run_fetch(g, L, M_CUBLAS, ry, rdx, rdw, dwv)) goto out;
  double worst = 0;
  for (int m = M_ILNAS; m < NM; m++) {
    if (m == M_CUBLAS) continue;
    if (run_fetch(g, L, m, ty, tdx, tdw, dwv)) goto out;
    double e[3] = {nerr(ty, ry, L->ny), nerr(tdx, rdx, L->nx), nerr(tdw, rdw, L->nw)};
    printf("check %3.0f%%: %-8s vs cublas y %.1e dx %.1e dw %.1e\n", 100 * dens, method_name[m], e[0],
           e[1], e[2]);
    for (int i = 0; i < 3; i++) worst = fmax(worst, e[i]);
  }
  /* cuBLAS against the definitions, so that the three cannot agree on
   * a wrong layout; half of the dw samples at active weights */
  double e[3] = {0, 0, 0}, scale[3] = {amax(ry, L->ny), amax(rdx, L->nx), amax(rdw, L->nw)};
  int kk = s->k * s->k;
  for (int t = 0; t < SAMPLES; t++) {
    size_t j = (size_t)(urand() * (double)L->ny);
    int i = (int)(j / ((size_t)s->cout * L->P)), co = (int)(j / (size_t)L->P % (size_t)s->cout);
    int q = (int)(j % (size_t)L->P);
    e[0] = fmax(e[0], fabs(ry[j] - ref_y(L, i, co, q / L->ow, q % L->ow)));
    j = (size_t)(urand() * (double)L->nx);
    size_t hw = (size_t)s->h * s->w;
    i = (int)(j / ((size_t)s->cin * hw));
    int ci = (int)(j / hw % (size_t)s->cin);
    q = (int)(j % hw);
    e[1] = fmax(e[1], fabs(rdx[j] - ref_dx(L, i, ci, q / s->w, q % s->w)));
    j = (size_t)(urand() * (double)L->nw);
    for (size_t u = 0; t % 2 && L->nnz && u < L->nw && !L->wm[j]; u++) j = (j + 1) % L->nw;
    co = (int)(j / (size_t)L->KC);
    int r = (int)(j % (size_t)L->KC);
    e[2] = fmax(e[2], fabs(rdw[j] - ref_dw(L, co, r / kk, r % kk / s->k, r % s->k)));
  }
  for (int i = 0; i < 3; i++) e[i] /= scale[i], worst = fmax(worst, e[i]);
  printf("check %3.0f%%: cublas   vs host   y %.1e dx %.1e dw %.1e (%d entries each, double)\n",
         100 * dens, e[0], e[1], e[2], SAMPLES);
  rc = worst > tolerance;
  if (rc) fail("%s at %.0f%%: the methods disagree (normalised error %.1e > %.0e)", s->key, 100 * dens,
               worst, tolerance);
out:
  free(ry), free(rdx), free(rdw), free(ty), free(tdx), free(tdw), free(dwv);
  return rc;
}

/* ---- timing ------------------------------------------------------------------------------ */

/* Milliseconds per call of one part, over `reps` calls between events. */
static int time_part(gpu *g, lay *L, int m, int p, int reps, double *ms) {
  CU(cu.cuEventRecord(g->e0, g->s));
  for (int r = 0; r < reps; r++)
    if (run_part(g, L, m, p)) return -1;
  CU(cu.cuEventRecord(g->e1, g->s));
  CU(cu.cuEventSynchronize(g->e1));
  float t = 0;
  CU(cu.cuEventElapsedTime(&t, g->e0, g->e1));
  *ms = t / reps;
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* med[m][p]: the median over ROUNDS rounds; in each, the methods run in
 * an order rotated every round, so that none always inherits the caches
 * and clocks another left. */
static int time_all(gpu *g, lay *L, int reps, double med[NM][NP + 1]) {
  static double t[NM][NP + 1][ROUNDS];
  for (int m = 0; m < NM; m++)
    for (int w = 0; w < WARMUP; w++)
      if (run_part(g, L, m, NP)) return -1;
  for (int r = 0; r < ROUNDS; r++)
    for (int q = 0; q < NM; q++) {
      int m = (q + r) % NM;
      for (int p = NP; p >= 0; p--)
        if (time_part(g, L, m, p, reps, &t[m][p][r])) return -1;
    }
  for (int m = 0; m < NM; m++)
    for (int p = 0; p <= NP; p++) {
      qsort(t[m][p], ROUNDS, sizeof t[m][p][0], cmp_double);
      med[m][p] = t[m][p][ROUNDS / 2];
    }
  return 0;
}

/* ---- a layer's table ---------------------------------------------------------------------- */

static int bench_layer(gpu *g, const shape *s, int reps) {
  lay L;
  static double med[ND][NM][NP + 1];
  double build[ND];
  int nnz[ND], rc = lay_init(&L, s);
  printf("\n%s, batch %d\n", s->title, BATCH);
  fflush(stdout);
  for (int d = 0; d < ND && !rc; d++) {
    rs = 0xD1B54A32D192ED03ull ^ ((uint64_t)(s - shapes + 1) << 8) ^ (uint64_t)d;
    rc = density_init(g, &L, densities[d], &build[d]);
    nnz[d] = L.nnz;
    if (!rc) rc = check(g, &L, densities[d]);
    if (!rc) rc = time_all(g, &L, reps, med[d]);
    density_free(&L);
    fflush(stdout);
  }
  lay_free(&L);
  if (rc) return rc;

  printf("\n%s, batch %d: ms per call, median of %d rounds of %d calls each\n", s->title, BATCH, ROUNDS,
         reps);
  printf("| density |  active | part       |    ilnas |   cuBLAS | cuSPARSE | cuBLAS/ilnas | cuSPARSE/ilnas | "
         "ilnas build |\n");
  printf("|--------:|--------:|:-----------|---------:|---------:|---------:|-------------:|---------------:|"
         "------------:|\n");
  for (int d = 0; d < ND; d++)
    for (int i = 0; i <= NP; i++) {
      int p = (i + NP) % (NP + 1); /* the total first */
      double *t[NM] = {&med[d][M_ILNAS][p], &med[d][M_CUBLAS][p], &med[d][M_CUSPARSE][p]};
      char b[32] = "";
      if (p == NP) snprintf(b, sizeof b, "%.3f s", build[d]);
      printf("| %6.0f%% | %7d | %-10s | %8.4f | %8.4f | %8.4f | %11.2fx | %13.2fx | %11s |\n", 100 * densities[d],
             nnz[d], part_name[p], *t[0], *t[1], *t[2], *t[1] / *t[0], *t[2] / *t[0], b);
    }
  /* the goals (bench/gpu/README.md), on the totals */
  double at10 = 0, worst_sp = 1e30;
  int d_worst = 0;
  for (int d = 0; d < ND; d++) {
    double blas = med[d][M_CUBLAS][NP] / med[d][M_ILNAS][NP];
    double sparse = med[d][M_CUSPARSE][NP] / med[d][M_ILNAS][NP];
    if (fabs(densities[d] - 0.10) < 1e-9) at10 = blas;
    if (densities[d] <= 0.25 + 1e-9 && sparse < worst_sp) worst_sp = sparse, d_worst = d;
  }
  printf("goal cuBLAS/ilnas >= 3x at 10%%: %.2fx, %s\n", at10, at10 >= 3 ? "met" : "not met");
  printf("goal cuSPARSE/ilnas > 1x at every density <= 25%%: lowest %.2fx (at %.0f%%), %s\n", worst_sp,
         100 * densities[d_worst], worst_sp > 1 ? "met" : "not met");
  fflush(stdout);
  return 0;
}

static int usage(void) {
  fprintf(stderr, "usage: gpu_layer_bench [conv|linear|conv256 ...] [--reps N] [--ptx]\n");
  return 2;
}

int main(int argc, char **argv) {
  int want[NSHAPES] = {0}, any = 0, reps = 20;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v < 1 || v > 100000) return usage();
      reps = (int)v;
    } else if (strcmp(argv[i], "--ptx") == 0) {
      /* the peers' kernels, for ptxas where no GPU is */
      char *ptx = ptx_module();
      if (!ptx) return fail("out of memory"), 1;
      fputs(ptx, stdout);
      free(ptx);
      return 0;
    } else {
      int k = 0;
      while (k < NSHAPES && strcmp(argv[i], shapes[k].key) != 0) k++;
      if (k == NSHAPES) return usage();
      want[k] = any = 1;
    }
  }
  gpu g;
  int rc = gpu_open(&g);
  if (rc == 77) return 77;
  for (int k = 0; k < NSHAPES && !rc; k++)
    if (want[k] || !any) rc = bench_layer(&g, &shapes[k], reps);
  gpu_close(&g);
  return rc ? 1 : 0;
}
