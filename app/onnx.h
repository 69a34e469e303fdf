/* onnx.h: a trained network's export plan (xplan.h) as an ONNX model.
 *
 * The graph takes `input`, float [N, C, H, W] with pixels scaled to [0, 1]
 * (the input normalisation recorded in the checkpoint is its first two
 * nodes), and gives `logits`, float [N, classes]; N is free. Each op of
 * the plan becomes a dense ONNX op over its live channels only: Conv (the
 * inactive weights between live channels are zeros), Gemm, MaxPool,
 * GlobalAveragePool, with Relu and, for batch norm after the ReLU, Mul and
 * Add; batch norm before the ReLU is folded into the weights, as in the C
 * export. Where an op reads planes of several earlier ops (dense stages,
 * dead layers passed through), Gather and Concat assemble its input.
 * IR version 7, opset 13: onnxruntime and the onnx checker of Debian 12
 * read it.
 *
 *   uint8_t *buf; size_t n;
 *   if (xp_onnx(&plan, g, &st.norm, "run/final.ckpt", &buf, &n, err, sizeof err) == 0)
 *     fwrite(buf, 1, n, f), free(buf);
 */
#ifndef ILNAS_APP_ONNX_H
#define ILNAS_APP_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "app/xplan.h"
#include "ir/ir.h"
#include "runtime/data.h"

/* The serialised ModelProto of plan p (built over g), in a malloc'd
 * buffer; doc names where the network came from. Returns 0, or -1 with a
 * message in err. */
int xp_onnx(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc,
            uint8_t **out, size_t *n, char *err, size_t errlen);

#endif
