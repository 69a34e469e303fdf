/* cpu.h: what the CPU (LLVM-JIT) backend shows beyond the rt_kernels table,
 * for tests and benchmarks: how much it compiled, and which layers run
 * dense (OpenBLAS) rather than on JIT kernels.
 *
 *   rt_kernels *b = rt_kernels_cpu_new(g, err, sizeof err);
 *   b->prepare(b, 0, wm, bm, err, sizeof err);
 *   rt_cpu_stats st = rt_cpu_get_stats(b);   // st.compiles == 1
 */
#ifndef ILNAS_RT_CPU_H
#define ILNAS_RT_CPU_H

#include "runtime/kernels.h"

typedef struct rt_cpu_stats {
  long compiles;       /* layer modules generated and compiled so far */
  long hits;           /* prepares answered from the cache */
  long cached;         /* modules alive in the JIT now */
  double emit_s;       /* seconds generating IR, all compiles (summed over
                          the threads that build kernels) */
  double compile_s;    /* seconds optimising, generating code (summed
                          likewise) and linking */
  long code_bytes;     /* machine code of all compiles (their tables apart) */
  long packs;          /* sparse linear weights packed for the kernels from
                          the dense ones (new values not from an SGD step,
                          or a pattern that changed) */
} rt_cpu_stats;

/* b must come from rt_kernels_cpu_new (or rt_kernels_new("cpu", ...)). */
rt_cpu_stats rt_cpu_get_stats(const rt_kernels *b);

/* The densities from which conv and linear layers run dense on OpenBLAS
 * instead of JIT kernels, for the layers prepared after the call: 0 makes
 * every layer dense, anything above 1 none (tests and benchmarks force the
 * two paths so); a negative threshold restores its default. Defaults:
 * measured, RT_CPU_DENSE_* in cpu.c (a conv layer's by its output plane,
 * the kernels' lanes and OpenBLAS's; a linear layer's by the lanes). */
void rt_cpu_set_dense_threshold(rt_kernels *b, double conv, double linear);

/* Lanes of the kernels' float vectors, for the layers prepared after the
 * call: 8 (AVX2) or 16 (AVX-512); -1 for anything else. The default is
 * 16 where the host has AVX-512F, else 8. Either width runs on any x86-64
 * host that LLVM targets (16 as pairs of 8 without AVX-512): the tests
 * run both. */
int rt_cpu_set_lanes(rt_kernels *b, int vw);
int rt_cpu_lanes(const rt_kernels *b);

/* Whether the conv forwards of the layers prepared after the call may be
 * unrolled (kgen/sparse.c, gen_unrolled; the default) or always take the
 * gather's loop nest: the tests run both. */
void rt_cpu_set_unroll(rt_kernels *b, int on);

/* Whether the layer was prepared for the dense path. */
int rt_cpu_layer_dense(const rt_kernels *b, int layer);

#endif
