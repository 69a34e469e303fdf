/* kit.h: the LLVM builder kit both kernel generators write with
 * (kgen/sparse.c for the CPU, kgen/ptx.c for the GPU): one function of
 * cg_sparse_fn_type per kit, its entry block, counted loops, branches,
 * element access, index tables, and one error convention. Internal to
 * kgen/.
 *
 *   kg_kit K, *k = &K;
 *   kg_begin(k, m, "l3_fwd", NULL);            // NULL: tables are constants
 *   kg_tab st = kg_table(k, "start", start, rows + 1, 4);
 *   kg_loop l;
 *   kg_loop_open(k, &l, kg_c64(k, 0), k->n, 1);
 *   ... kg_tab_get(k, st, l.iv) ... kg_ldf(k, k->pa, l.iv) ...
 *   kg_loop_close(k, &l);
 *   return kg_end(k);                          // 0, or -1: see k->err
 *
 * Errors: a helper that fails (out of memory, a table the hook would not
 * keep) calls kg_fail, which records the first message and makes kg_end
 * return -1; the IR built meanwhile stays valid, so a generator goes on
 * to kg_end without checks of its own. Nothing here aborts or exits.
 *
 * Loops are counted with phis, not counter allocas: the CPU JIT's
 * pipeline then sees canonical loops without depending on mem2reg first.
 * Values that live across iterations (accumulators) are kg_local allocas
 * in the entry block, which mem2reg and SROA turn into registers on both
 * targets. */
#ifndef ILNAS_KG_KIT_H
#define ILNAS_KG_KIT_H

#include <stddef.h>
#include <stdint.h>

#include <llvm-c/Core.h>

/* Lanes of the float vectors the CPU kernels work in: 8 (AVX2's 256
 * bits, the default) or 16 (AVX-512's 512). */
enum { KG_VW = 8, KG_VW_MAX = 16 };

/* Where the index tables go. NULL: constant globals of the module (the
 * CPU JIT). Otherwise each is a global of the module holding a pointer,
 * named `name`, that the loader sets to a copy of `data` (the GPU, where
 * tables as PTX constants would cost the driver's JIT seconds); the hook
 * takes the malloc'd bytes (0) or refuses them (-1: the kit frees them and
 * fails). */
typedef int (*kg_keep_fn)(LLVMModuleRef m, const char *name, void *data, size_t bytes);

typedef struct kg_kit {
  LLVMContextRef ctx;
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  LLVMBasicBlockRef entry, body;    /* allocas and table bases; the first block after */
  LLVMTypeRef i8, i16, i32, i64, f32, f64, fp, vec, vecp;
  int vw;                           /* lanes of vec: KG_VW unless kg_set_lanes */
  LLVMValueRef pa, pb, pc, pd;      /* the four buffers of cg_sparse_fn_type */
  LLVMValueRef n, a_ns, b_ns;
  const char *name;                 /* of the function; prefixes its tables */
  kg_keep_fn keep;                  /* NULL: constant tables */
  int inbounds;                     /* element pointers are inbounds GEPs */
  int failed;
  char err[160];                    /* the first failure */
} kg_kit;

/* Adds the function `name` to m and leaves the builder in its body. The
 * four buffers are marked noalias: they are distinct tensors, or disjoint
 * slices of one arena. */
void kg_begin(kg_kit *k, LLVMModuleRef m, const char *name, kg_keep_fn keep);
/* vec of vw lanes (8 or 16) from here on. */
void kg_set_lanes(kg_kit *k, int vw);
/* Returns void, closes the entry block, frees the builder: 0, or -1 after
 * a kg_fail. */
int kg_end(kg_kit *k);
void kg_fail(kg_kit *k, const char *what);

LLVMValueRef kg_c64(kg_kit *k, int64_t v);
/* The NVVM special register `reg` (tid.x, ntid.x, ctaid.x), as an i64. */
LLVMValueRef kg_sreg(kg_kit *k, const char *reg);
LLVMValueRef kg_add(kg_kit *k, LLVMValueRef a, LLVMValueRef b); /* nsw: indices */
LLVMValueRef kg_mul(kg_kit *k, LLVMValueRef a, LLVMValueRef b);
LLVMBasicBlockRef kg_block(kg_kit *k, const char *name);
/* An alloca in the entry block, wherever the builder is. */
LLVMValueRef kg_local(kg_kit *k, LLVMTypeRef t, const char *name);

/* lo <= iv < hi by step: the body is what is built between open and close.
 * Guarded, so an empty range runs nothing. */
typedef struct kg_loop {
  LLVMBasicBlockRef body, exit;
  LLVMValueRef iv, hi, step;
} kg_loop;
void kg_loop_open(kg_kit *k, kg_loop *l, LLVMValueRef lo, LLVMValueRef hi, int64_t step);
void kg_loop_close(kg_kit *k, kg_loop *l);

/* if (c) { ... }: kg_if_begin returns the join block and leaves the
 * builder in the then-block; kg_if_end branches to the join. */
LLVMBasicBlockRef kg_if_begin(kg_kit *k, LLVMValueRef c);
void kg_if_end(kg_kit *k, LLVMBasicBlockRef join);

/* &p[i] and p[i] of a float buffer; plain GEPs unless k->inbounds (the
 * CPU's padded taps form bases before the buffer; only the final
 * addresses are in range). */
LLVMValueRef kg_at(kg_kit *k, LLVMValueRef p, LLVMValueRef i);
LLVMValueRef kg_ldf(kg_kit *k, LLVMValueRef p, LLVMValueRef i);

/* An index table of n entries of `bytes` (1, 2 or 4) each, stored
 * little-endian; never empty (n = 0 keeps one zero entry). */
typedef struct kg_tab {
  LLVMTypeRef et;                   /* i8, i16 or i32 */
  LLVMValueRef base;                /* its first element */
} kg_tab;
kg_tab kg_table(kg_kit *k, const char *what, const void *data, size_t n, int bytes);
/* Entry i as i64: i32 sign-extended (-1 marks padding), narrower zero-
 * extended. */
LLVMValueRef kg_tab_get(kg_kit *k, kg_tab t, LLVMValueRef i);

/* The loop over row r's entries of a CSR table (start[r] <= iv <
 * start[r+1]), by step. */
void kg_row_loop(kg_kit *k, kg_loop *l, kg_tab start, LLVMValueRef r, int64_t step);

#endif
