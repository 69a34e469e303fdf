/* emu_driver.h: the CUDA backend on the host, for the tests of machines
 * without a GPU.
 *
 * emu_driver_install() fills the driver and cuBLAS tables (runtime/cuda/
 * cu.h) with host implementations and has runtime/cuda/kern.c load each
 * module of generated kernels as IR JIT-compiled for the host rather than
 * as PTX. Device memory is host memory; a launch runs every thread of the
 * grid one after another, the special registers (tid, ntid, ctaid) read
 * from globals of the module; streams, events and page-locking are
 * bookkeeping; sgemm is OpenBLAS's. A stream under capture records its
 * launches, memsets and sgemms into a graph, which a graph launch replays;
 * copies refuse to be captured. Copies count their bytes (emu_traffic). Everything the backend does above the
 * driver (its buffers, the strided copies, the tables' upload, the dense
 * path and its choice, the kernels' launch sizes) then runs as on a GPU;
 * what it cannot check is the NVPTX lowering (ptxas does, in gpu_ptx) and
 * concurrency on a real device. */
#ifndef ILNAS_TESTS_EMU_DRIVER_H
#define ILNAS_TESTS_EMU_DRIVER_H

#include <llvm-c/Core.h>
#include <llvm-c/LLJIT.h>

/* 0, or -1 when this LLVM cannot JIT for the host. */
int emu_driver_install(void);

/* A device that fails: after `after` more launches every kernel launch
 * returns CUDA_ERROR_LAUNCH_FAILED; -1 (the default): never. */
void emu_fail_launches(long after);

/* A machine whose cuBLAS does not start (on: cublasCreate fails), for
 * the backends created from then on. */
void emu_no_cublas(int on);

/* The bytes copied host to device and device to host so far (every copy
 * entry point; page-locking and module loading are not copies). */
void emu_traffic(long long *h2d, long long *d2h);
/* Counts, from now on, the copies out of exactly `bytes` (a whole array
 * of n_params floats, say); emu_watched says how many so far. */
void emu_watch_d2h(long long bytes);
long emu_watched(void);
/* Kernel launches so far; a graph's replay counts as one. */
long emu_launches(void);

/* The host-JIT helpers the emulation is made of, shared with
 * test_gpu_emu.c: a JIT, a symbol's address, and the NVVM special
 * register `reg` (tid.x, ntid.x, ctaid.x) turned into a function that
 * reads the global emu_<reg> of the module, initialised to init. */
LLVMOrcLLJITRef emu_jit_new(void);
void *emu_lookup(LLVMOrcLLJITRef j, const char *name);
void emu_sreg(LLVMModuleRef m, const char *reg, int init);

#endif
