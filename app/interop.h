/* interop.h: a trained network's export plan (xplan.h) for other tools,
 * as an ONNX model or a PyTorch module.
 *
 * Both are written from one graph of dense ops built from the plan: each
 * op of the plan over its live channels only, a Conv or a linear layer
 * whose inactive weights between live channels are zeros (and, for
 * PyTorch, a 0/1 mask that keeps them so when the module is trained on),
 * max pool, global average pool, ReLU and, for batch norm after the ReLU,
 * a per-channel scale and shift; batch norm before the ReLU is folded
 * into the weights, as in the C export. Where an op reads planes of
 * several earlier ops (dense stages, dead layers passed through), they
 * are gathered (index_select on channels) and concatenated. The input
 * normalisation recorded in the checkpoint is the first op, so both take
 * raw images scaled to [0, 1], [N, C, H, W], and give logits [N, classes].
 *
 * ONNX: IR version 7, opset 13 (onnxruntime, and the onnx checker of
 * Debian 12, read it); input `input`, output `logits`, N free.
 * PyTorch: FILE.py defines `class Net(torch.nn.Module)`, whose weights
 * (raw little-endian float32) it reads from FILE.bin beside it.
 *
 *   uint8_t *buf; size_t n;
 *   if (xp_onnx(&plan, g, &st.norm, "run/final.ckpt", &buf, &n, err, sizeof err) == 0)
 *     fwrite(buf, 1, n, f), free(buf);
 *   xp_torch(&plan, g, &st.norm, "run/final.ckpt", py, bin, "net.bin", err, sizeof err);
 */
#ifndef ILNAS_APP_INTEROP_H
#define ILNAS_APP_INTEROP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "app/xplan.h"
#include "ir/ir.h"
#include "runtime/data.h"

/* The serialised ModelProto of plan p (built over g), in a malloc'd
 * buffer; doc says where the network came from. Returns 0, or -1 with a
 * message in err. */
int xp_onnx(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc,
            uint8_t **out, size_t *n, char *err, size_t errlen);

/* The PyTorch module of plan p into py (Python source) and its weights
 * into bin, which the module reads as bin_name from its own folder.
 * Returns 0, or -1 with a message in err (write errors are the caller's:
 * check the files). */
int xp_torch(const xp_plan *p, const ir_graph *g, const rt_norm *nm, const char *doc, FILE *py,
             FILE *bin, const char *bin_name, char *err, size_t errlen);

#endif
