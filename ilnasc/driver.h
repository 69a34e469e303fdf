/* driver.h: the graph driver, emitted with the LLVM C API.
 *
 * ilnasc turns the IR's static schedule into a short native program: one
 * function that runs the forward pass, one that runs the backward pass, each
 * a straight sequence of calls into the runtime with every shape and buffer
 * offset baked in as a constant, plus the serialised IR as a constant blob
 * and a main() that hands all of it to the runtime's il_main. The object
 * file is then linked with the runtime library by the system C compiler.
 *
 *   cg_call fwd[] = {{"rt_op_conv_fwd", 3, {0, 1024, 4096}}, ...};
 *   cg_driver d = {blob, blob_size, fwd, nfwd, bwd, nbwd};
 *   if (cg_emit_object(&d, "model.o", err, sizeof err)) ...
 *   if (cg_link("model.o", "model", err, sizeof err)) ...
 *
 * The emitted module defines (C view):
 *   const unsigned char il_ir_blob[];  const unsigned long il_ir_size;
 *   void il_graph_forward(void *x);    // fn_0(x, a0, a1, ...); fn_1(x, ...); ...
 *   void il_graph_backward(void *x);
 *   int main(int argc, char **argv) {
 *     return il_main(argc, argv, il_ir_blob, il_ir_size,
 *                    il_graph_forward, il_graph_backward);
 *   }
 * where every called runtime function has the C type
 *   void fn(void *x, int64_t a0, ..., int64_t a{nargs-1}).
 */
#ifndef ILNAS_CG_DRIVER_H
#define ILNAS_CG_DRIVER_H

#include <stddef.h>
#include <stdint.h>

enum { CG_MAX_ARGS = 8 };

typedef struct cg_call {
  const char *fn;            /* runtime entry point */
  int nargs;                 /* 0..CG_MAX_ARGS int64 arguments after x */
  int64_t args[CG_MAX_ARGS];
} cg_call;

typedef struct cg_driver {
  const uint8_t *blob;  /* serialised IR, embedded as il_ir_blob */
  size_t blob_size;
  const cg_call *fwd;   /* il_graph_forward, in order */
  int n_fwd;
  const cg_call *bwd;   /* il_graph_backward, in order */
  int n_bwd;
} cg_driver;

/* Writes a native object file for the host. 0, or -1 with a message. */
int cg_emit_object(const cg_driver *d, const char *obj_path, char *err, size_t errlen);

/* Writes the module as textual LLVM IR (for --emit-llvm and tests). */
int cg_emit_llvm(const cg_driver *d, const char *ll_path, char *err, size_t errlen);

/* Links obj_path with the runtime library into an executable at out_path
 * through the system C compiler driver ($CC, else cc). The runtime library
 * is found relative to the running executable: <exe dir>/../lib/ilnas/
 * (build tree and install tree alike). 0, or -1 with a message. */
int cg_link(const char *obj_path, const char *out_path, char *err, size_t errlen);

#endif
