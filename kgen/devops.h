/* devops.h: the GPU kernels of the device-resident training step that are
 * not conv or linear layers (runtime/cuda/step.c): ReLU and its mask,
 * pass-through copies, batch norm (forward with the running statistics,
 * backward), max pool, global average pool, softmax cross-entropy with
 * the accuracy count, and SGD with momentum and weight decay.
 *
 * Each writes one kernel of cg_sparse_fn_type (kgen/sparse.h) with the
 * layer's shapes and per-sample arena offsets baked in, target-
 * independent IR like the sparse generators (kgen/ptx.c): cg_ptx_emit
 * lowers it for NVPTX, the tests' emulation JITs it for the host. The
 * semantics are the host step's (runtime/host.c over runtime/ref.h):
 * the same sums in double where the reference takes them in double.
 *
 *   kd_desc d = {.op = KD_RELU, .ns = g->act_size, .len = c * h * w,
 *                .src = z, .dst = out};
 *   int64_t per, fixed;
 *   if (kd_gen(m, &d, "l3_relu", &per, &fixed)) ...;
 *   // launch per * n + fixed threads: (act, 0, 0, 0, n, 0, 0)
 *
 * Buffers (a, b, c, d of the kernel) and flags (a_ns, b_ns at launch):
 *   RELU       a = act: a[dst + k] = max(a[src + k], 0) over len.
 *   RELU_MASK  a = act, b = dact: b[dst + k] = a[y + k] > 0 ? b[dy + k] : 0.
 *   COPY       a = act or dact: a[dst + k] = (or += with add) a[src + k].
 *   BN_FWD     a = act, b = stats, c = pgm, d = bnaux; a_ns: training.
 *              x at src, y at dst, c channels of hw; gamma, beta at
 *              c[p0], running statistics at b[p1], the batch's mean and
 *              1/std at d[p1], constant channels' flags at d[nstats + p1]
 *              (in inference a flagged channel is beta, as host.c's
 *              bn_constants). One thread per channel.
 *   BN_BWD     a = act, b = dact, c = pgm, d = bnaux: the training-mode
 *              backward of dy at b[dy] (masked by a[y] > 0 with relu)
 *              into b[dst] (= with assign, else +=), dgamma and dbeta
 *              overwritten at c[np + p0].
 *   POOL_FWD   a = act: window = stride = f over c x h x w at src, into dst.
 *   POOL_BWD   a = act, b = dact: dy at b[dst] to the first maximum of
 *              each window of a[src], into b[src] (= with assign).
 *   GAP_FWD    a = act; GAP_BWD a = dact, b[src] += b[dst + ch] / hw.
 *   LOSS       a = act, b = dact, c = labels (ir_label), d = per-sample
 *              (loss, hit) in doubles; logits of c classes at src;
 *              a_ns: write the logits' gradient (already / n) at b[src].
 *   LOSS_SUM   a = LOSS's per-sample pairs, d = out: the mean loss and the
 *              hits as two doubles. One thread.
 *   SGD        a = pgm (params, grads, momentum, 0/1 mask, np each),
 *              b = scalars: lr, momentum, decay at b[4], b[5], b[6].
 *   GATHER     a = act, b = a training set kept on the device (KD_SET_*
 *              below: n_set images of c x h x w, floats or with bytes,
 *              bytes), c = the batch's draws (rt_draw: idx, ox | oy << 16,
 *              mirror as int32), d = the batch's labels (ir_label) out:
 *              each image made at dst as rt_data_make makes it, f the
 *              crop's padding.
 *   REVIVE     a = act, b = dact, c = out ([n][c][hw], packed); a_ns:
 *              training. Phase II's gradient at the pre-activation of a
 *              dead layer, were it revived as the identity (host.c's
 *              host_dense_grad): dy at b[dy] where a[y] > 0 (everywhere
 *              with relu clear); with norm and training, per channel less
 *              its mean and its part along x^ = (a[y] - mean) / std over
 *              the batch (the backward of a batch norm that is the
 *              identity on the batch). One thread per channel. */
#ifndef ILNAS_KG_DEVOPS_H
#define ILNAS_KG_DEVOPS_H

#include <stdint.h>

#include <llvm-c/Core.h>

typedef enum {
  KD_RELU, KD_RELU_MASK, KD_COPY, KD_BN_FWD, KD_BN_BWD, KD_POOL_FWD, KD_POOL_BWD,
  KD_GAP_FWD, KD_GAP_BWD, KD_LOSS, KD_LOSS_SUM, KD_SGD, KD_GATHER, KD_REVIVE
} kd_op;

/* The layout of a set kept on the device (GATHER's b), in bytes: 16
 * floats (the normalisation's mean[4] and std[4], then the bytes' scale),
 * the labels (ir_label), then the images from KD_SET_IMAGES(n_set). */
enum { KD_SET_LABELS = 64 };
#define KD_SET_IMAGES(n_set) (KD_SET_LABELS + ((int64_t)(n_set) * 2 + 15) / 16 * 16)

typedef struct kd_desc {
  kd_op op;
  int64_t ns;               /* floats per sample of the activation arenas */
  int64_t len;              /* RELU, RELU_MASK, COPY: floats per sample */
  int64_t c, hw, h, w, f;   /* channels (LOSS: classes), plane, pool shape */
  int64_t src, dst, y, dy;  /* per-sample arena offsets */
  int64_t p0, p1;           /* offsets into pgm and into stats / bnaux */
  int64_t np, nstats;       /* parameters, batch norm statistics */
  int64_t n_set;            /* GATHER: images in the set */
  int relu, add, assign, bytes, norm;
} kd_desc;

/* Adds the kernel `name` for d to m; a launch takes per * n + fixed
 * threads. 0, or -1 for an empty shape. */
int kd_gen(LLVMModuleRef m, const kd_desc *d, const char *name, int64_t *per, int64_t *fixed);

#endif
