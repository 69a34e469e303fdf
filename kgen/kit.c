/* kit.c: the LLVM builder kit of the kernel generators (see kit.h). */
#include "kgen/kit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kgen/sparse.h"

/* Declared in sparse.h, the generators' public header; both kits' functions
 * have this type. */
LLVMTypeRef cg_sparse_fn_type(LLVMContextRef ctx) {
  LLVMTypeRef fp = LLVMPointerType(LLVMFloatTypeInContext(ctx), 0);
  LLVMTypeRef i64 = LLVMInt64TypeInContext(ctx);
  LLVMTypeRef p[7] = {fp, fp, fp, fp, i64, i64, i64};
  return LLVMFunctionType(LLVMVoidTypeInContext(ctx), p, 7, 0);
}

void kg_set_lanes(kg_kit *k, int vw) {
  k->vw = vw;
  k->vec = LLVMVectorType(k->f32, (unsigned)vw), k->vecp = LLVMPointerType(k->vec, 0);
}

void kg_begin(kg_kit *k, LLVMModuleRef m, const char *name, kg_keep_fn keep) {
  memset(k, 0, sizeof *k);
  k->m = m, k->name = name, k->keep = keep;
  k->ctx = LLVMGetModuleContext(m);
  k->i8 = LLVMInt8TypeInContext(k->ctx), k->i16 = LLVMInt16TypeInContext(k->ctx);
  k->i32 = LLVMInt32TypeInContext(k->ctx), k->i64 = LLVMInt64TypeInContext(k->ctx);
  k->f32 = LLVMFloatTypeInContext(k->ctx), k->f64 = LLVMDoubleTypeInContext(k->ctx);
  k->fp = LLVMPointerType(k->f32, 0);
  kg_set_lanes(k, KG_VW);
  k->fn = LLVMAddFunction(m, name, cg_sparse_fn_type(k->ctx));
  LLVMValueRef *p[7] = {&k->pa, &k->pb, &k->pc, &k->pd, &k->n, &k->a_ns, &k->b_ns};
  for (unsigned i = 0; i < 7; i++) *p[i] = LLVMGetParam(k->fn, i);
  /* Saying the buffers never overlap lets loops vectorise without runtime
   * alias checks (CPU) and loads be hoisted and cached (GPU). */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  for (unsigned i = 1; i <= 4; i++)
    LLVMAddAttributeAtIndex(k->fn, i, LLVMCreateEnumAttribute(k->ctx, noalias, 0));
  k->b = LLVMCreateBuilderInContext(k->ctx);
  k->entry = kg_block(k, "entry");
  k->body = kg_block(k, "body");
  LLVMPositionBuilderAtEnd(k->b, k->body);
}

int kg_end(kg_kit *k) {
  LLVMBuildRetVoid(k->b);
  LLVMPositionBuilderAtEnd(k->b, k->entry);
  LLVMBuildBr(k->b, k->body);
  LLVMDisposeBuilder(k->b);
  k->b = NULL;
  return k->failed ? -1 : 0;
}

void kg_fail(kg_kit *k, const char *what) {
  if (!k->failed) snprintf(k->err, sizeof k->err, "%s: %s", k->name, what);
  k->failed = 1;
}

LLVMValueRef kg_c64(kg_kit *k, int64_t v) { return LLVMConstInt(k->i64, (unsigned long long)v, 1); }

LLVMValueRef kg_sreg(kg_kit *k, const char *reg) {
  char name[64];
  snprintf(name, sizeof name, "llvm.nvvm.read.ptx.sreg.%s", reg);
  LLVMTypeRef ft = LLVMFunctionType(k->i32, NULL, 0, 0);
  LLVMValueRef f = LLVMGetNamedFunction(k->m, name);
  if (!f) f = LLVMAddFunction(k->m, name, ft);
  return LLVMBuildZExt(k->b, LLVMBuildCall2(k->b, ft, f, NULL, 0, ""), k->i64, reg);
}
LLVMValueRef kg_add(kg_kit *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(k->b, a, b, ""); }
LLVMValueRef kg_mul(kg_kit *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(k->b, a, b, ""); }

LLVMBasicBlockRef kg_block(kg_kit *k, const char *name) {
  return LLVMAppendBasicBlockInContext(k->ctx, k->fn, name);
}

/* A builder of its own, so the main one stays where it is. */
LLVMValueRef kg_local(kg_kit *k, LLVMTypeRef t, const char *name) {
  LLVMBuilderRef eb = LLVMCreateBuilderInContext(k->ctx);
  LLVMPositionBuilderAtEnd(eb, k->entry);
  LLVMValueRef v = LLVMBuildAlloca(eb, t, name);
  LLVMDisposeBuilder(eb);
  return v;
}

void kg_loop_open(kg_kit *k, kg_loop *l, LLVMValueRef lo, LLVMValueRef hi, int64_t step) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(k->b);
  l->body = kg_block(k, "loop");
  l->exit = kg_block(k, "done");
  l->hi = hi;
  l->step = kg_c64(k, step);
  LLVMBuildCondBr(k->b, LLVMBuildICmp(k->b, LLVMIntSLT, lo, hi, ""), l->body, l->exit);
  LLVMPositionBuilderAtEnd(k->b, l->body);
  l->iv = LLVMBuildPhi(k->b, k->i64, "i");
  LLVMAddIncoming(l->iv, &lo, &pre, 1);
}

/* The latch is wherever the body ended (it may hold branches). */
void kg_loop_close(kg_kit *k, kg_loop *l) {
  LLVMValueRef next = kg_add(k, l->iv, l->step);
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(k->b);
  LLVMBuildCondBr(k->b, LLVMBuildICmp(k->b, LLVMIntSLT, next, l->hi, ""), l->body, l->exit);
  LLVMAddIncoming(l->iv, &next, &cur, 1);
  LLVMPositionBuilderAtEnd(k->b, l->exit);
}

void kg_row_loop(kg_kit *k, kg_loop *l, kg_tab start, LLVMValueRef r, int64_t step) {
  LLVMValueRef lo = kg_tab_get(k, start, r), hi = kg_tab_get(k, start, kg_add(k, r, kg_c64(k, 1)));
  kg_loop_open(k, l, lo, hi, step);
}

LLVMBasicBlockRef kg_if_begin(kg_kit *k, LLVMValueRef c) {
  LLVMBasicBlockRef then = kg_block(k, "then"), join = kg_block(k, "join");
  LLVMBuildCondBr(k->b, c, then, join);
  LLVMPositionBuilderAtEnd(k->b, then);
  return join;
}

void kg_if_end(kg_kit *k, LLVMBasicBlockRef join) {
  LLVMBuildBr(k->b, join);
  LLVMPositionBuilderAtEnd(k->b, join);
}

LLVMValueRef kg_at(kg_kit *k, LLVMValueRef p, LLVMValueRef i) {
  if (k->inbounds) return LLVMBuildInBoundsGEP2(k->b, k->f32, p, &i, 1, "");
  return LLVMBuildGEP2(k->b, k->f32, p, &i, 1, "");
}

LLVMValueRef kg_ldf(kg_kit *k, LLVMValueRef p, LLVMValueRef i) {
  return LLVMBuildLoad2(k->b, k->f32, kg_at(k, p, i), "");
}

/* Constant tables are one ConstantDataArray of raw bytes, not a million
 * ConstantInts: that keeps emission of big layers fast. Device tables are
 * read through the pointer global, which is externally initialised (so
 * the optimiser does not take its null for its value) and loaded once, in
 * the entry block. */
kg_tab kg_table(kg_kit *k, const char *what, const void *data, size_t n, int bytes) {
  kg_tab t = {bytes == 1 ? k->i8 : bytes == 2 ? k->i16 : k->i32, NULL};
  LLVMTypeRef pt = LLVMPointerType(t.et, k->keep ? 1 : 0);
  size_t size = (n ? n : 1) * (size_t)bytes;
  uint8_t *raw = calloc(size, 1);
  if (!raw) {
    kg_fail(k, "out of memory for a table");
    t.base = LLVMConstNull(pt);
    return t;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t v = bytes == 4 ? ((const uint32_t *)data)[i]
                 : bytes == 2 ? ((const uint16_t *)data)[i]
                              : ((const uint8_t *)data)[i];
    for (int b = 0; b < bytes; b++) raw[i * (size_t)bytes + (size_t)b] = (uint8_t)(v >> (8 * b));
  }
  /* '_', not '.': NVPTX renames globals with dots, and the loader finds
   * a device table by its name. */
  char nm[256];
  snprintf(nm, sizeof nm, "%s_%s", k->name, what);
  if (!k->keep) {
    LLVMValueRef init = LLVMConstStringInContext(k->ctx, (const char *)raw, (unsigned)size, 1);
    free(raw);
    LLVMValueRef gv = LLVMAddGlobal(k->m, LLVMTypeOf(init), nm);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    LLVMSetAlignment(gv, 16);
    t.base = LLVMConstBitCast(gv, pt);
    return t;
  }
  LLVMValueRef gv = LLVMAddGlobalInAddressSpace(k->m, pt, nm, 1);
  LLVMSetInitializer(gv, LLVMConstNull(pt));
  LLVMSetExternallyInitialized(gv, 1);
  size_t len;
  if (k->keep(k->m, LLVMGetValueName2(gv, &len), raw, size)) { /* as LLVM named it */
    free(raw);
    kg_fail(k, "a device table could not be kept");
  }
  LLVMBuilderRef eb = LLVMCreateBuilderInContext(k->ctx);
  LLVMPositionBuilderAtEnd(eb, k->entry);
  t.base = LLVMBuildLoad2(eb, pt, gv, what);
  LLVMDisposeBuilder(eb);
  return t;
}

LLVMValueRef kg_tab_get(kg_kit *k, kg_tab t, LLVMValueRef i) {
  LLVMValueRef v = LLVMBuildLoad2(k->b, t.et, LLVMBuildInBoundsGEP2(k->b, t.et, t.base, &i, 1, ""), "");
  return t.et == k->i32 ? LLVMBuildSExt(k->b, v, k->i64, "") : LLVMBuildZExt(k->b, v, k->i64, "");
}
