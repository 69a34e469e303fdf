/* cpu.h: what the CPU (LLVM-JIT) backend shows beyond the rt_backend table,
 * for tests and benchmarks: how much it compiled.
 *
 *   rt_backend *b = rt_backend_cpu_new(g, err, sizeof err);
 *   b->prepare(b, 0, wm, bm, err, sizeof err);
 *   rt_cpu_stats st = rt_cpu_get_stats(b);   // st.compiles == 1
 */
#ifndef ILNAS_RT_CPU_H
#define ILNAS_RT_CPU_H

#include "runtime/backend.h"

typedef struct rt_cpu_stats {
  long compiles;       /* layer modules generated and compiled so far */
  long hits;           /* prepares answered from the cache */
  long cached;         /* modules alive in the JIT now */
  double emit_s;       /* seconds spent generating IR, all compiles */
  double compile_s;    /* seconds in the optimiser and code generator */
} rt_cpu_stats;

/* b must come from rt_backend_cpu_new (or rt_backend_new("cpu", ...)). */
rt_cpu_stats rt_cpu_get_stats(const rt_backend *b);

#endif
