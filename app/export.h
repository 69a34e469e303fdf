/* export.h: a trained network as fixed-architecture C or CUDA source, or
 * as an ONNX model.
 *
 * Owns deployment: from a checkpoint it writes FILE.c (or FILE.cu) and
 * FILE.h, and past a size threshold FILE.weights, that compute the
 * network's logits with no ilnas runtime behind them. The sparse pattern is
 * baked in: each layer keeps, per live output channel, constant tables of
 * (input plane, tap, weight) over its active weights only; dead layers and
 * channels that are constant zero are gone; inference-mode batch norm is
 * folded into the conv before it; the input normalisation recorded in the
 * checkpoint is applied inside, so callers feed pixels scaled to [0, 1].
 * For other tools (interop.h): the ONNX target writes FILE.onnx alone, the
 * PyTorch one FILE.py and its weights FILE.bin.
 *
 * It is part of app/ (`model export`, and `ilnasc --emit-c`), above the
 * runtime whose checkpoints it reads.
 *
 *   app_export_opts o;
 *   app_export_opts_default(&o);
 *   o.target = APP_EXPORT_C; o.out = "net.c";
 *   app_export_stats s;
 *   if (app_export("run/final.ckpt", &o, &s, err, sizeof err)) ... err names
 *   the file at fault; no output file is left behind on error.
 */
#ifndef ILNAS_APP_EXPORT_H
#define ILNAS_APP_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"
#include "runtime/exec.h"
#include "app/train.h"

typedef enum { APP_EXPORT_C, APP_EXPORT_CUDA, APP_EXPORT_ONNX, APP_EXPORT_TORCH } app_export_target;
enum { APP_EXPORT_TARGETS = APP_EXPORT_TORCH + 1 };

enum { APP_EXPORT_THRESHOLD = 4 << 20 }; /* default: weights past 4 MiB go to a file */

typedef struct app_export_opts {
  app_export_target target;
  const char *out;           /* FILE.c / FILE.cu; FILE.h (and FILE.weights) beside
                                it; FILE.onnx alone; or FILE.py, FILE.bin beside it */
  int64_t weights_threshold; /* weight bytes above which FILE.weights is written */
  int dense;                 /* store every weight between live channels, zeros
                                included: the masked-dense network, for size
                                comparisons; computes the same function (C and
                                CUDA: ONNX's and PyTorch's ops are dense anyway) */
  const char *task;          /* a multi-task checkpoint's task to export (its
                                name); NULL for a single-task checkpoint */
} app_export_opts;

typedef struct app_export_stats {
  int64_t weights;      /* floats stored: weights and biases after folding */
  int64_t table_bytes;  /* bytes of the index tables (the baked pattern); ONNX:
                           of the whole model; PyTorch: of FILE.bin */
  int64_t weight_bytes; /* 4 * weights */
  int64_t ws_floats;    /* per-image workspace of the emitted code */
  int ops;              /* layers left in the emitted code */
  int weights_file;     /* whether FILE.weights was written */
  char prefix[64];      /* the C name prefix of the API ("net") */
} app_export_stats;

void app_export_opts_default(app_export_opts *o);

/* Loads the checkpoint and exports it. Refuses a checkpoint with no
 * completed epoch (an untrained network), or one without a recorded input
 * normalisation. Returns 0, or -1 with a message in err. */
int app_export(const char *ckpt, const app_export_opts *o, app_export_stats *stats,
              char *err, size_t errlen);

/* Exports an already loaded network: x holds its parameters and batch norm
 * statistics, st its normalisation. `origin` names it in the comments. */
int app_export_graph(const ir_graph *g, const rt_exec *x, const app_train_state *st,
                    const char *origin, const app_export_opts *o,
                    app_export_stats *stats, char *err, size_t errlen);

#endif
