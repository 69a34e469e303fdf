/* devops.h: the GPU kernels of the device-resident training step that are
 * not conv or linear layers (runtime/cuda/step.c): ReLU and its mask,
 * pass-through copies, batch norm (forward with the running statistics,
 * backward), max pool, global average pool, softmax cross-entropy with
 * the accuracy count, SGD with momentum and weight decay, and phase II's
 * gradients kept on the device: their sums, the hyper step, and the
 * ranking of the missing units by their norms.
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
 *              identity on the batch). One thread per channel.
 *   CSTATS     a = act, d = out (doubles): per channel of c (hw each) at
 *              y over the n samples, its mean, biased variance and least
 *              value at d[3 c], d[3 c + 1], d[3 c + 2]: what a layer that
 *              comes alive takes its batch norm from. One thread per
 *              channel.
 * Phase II (launched with n elements, pointers at their first):
 *   MOVE       a[i] = b[i] (+= with add), i < n: a slot's sum over the
 *              batches, W kept and put back around the hyper step.
 *   SCALE      a[i] *= s, i < n, s the float whose bits a_ns holds.
 *   DESCEND    a[i] -= s * b[i] (s as SCALE's; a multiply, then a
 *              subtract) where the byte c[i] is set: W* = W - lr g on the
 *              active parameters.
 *   UNITS      a = g, b = the masks (bytes), c = out: the score of each
 *              of len units, the norm of g over it (as PAIR's, without
 *              g*) where its first parameter's mask is clear, else 0.
 *              The units are runs' (kd_run, ascending, back to back: a
 *              weighted layer's weights or biases), found by a chain of
 *              selects over them. One thread per unit.
 *   COUNT      a = UNITS' scores, d = an int64 counter: adds how many of
 *              the len scores have bits (as uint32) >= a_ns. Each thread
 *              counts KD_CHUNK of them, strided so that a warp's loads
 *              are adjacent, and adds its count in one atomic.
 *   EMIT       a = scores, c = out (kd_hit), d = an int64 counter: each of
 *              the len units whose bits are >= a_ns, at the index the
 *              counter gives (atomically; any order). One thread per unit.
 *   PAIR       a = g, b = g*, c = units (int64 pairs: start, len), d =
 *              out: for each unit i < n, the norm of g + g* over it as
 *              runtime/p2.c's rt_unit_norm: each value's float sum, to
 *              double, squared and summed in index order, its root
 *              rounded to float. */
#ifndef ILNAS_KG_DEVOPS_H
#define ILNAS_KG_DEVOPS_H

#include <stdint.h>

#include <llvm-c/Core.h>

typedef enum {
  KD_RELU, KD_RELU_MASK, KD_COPY, KD_BN_FWD, KD_BN_BWD, KD_POOL_FWD, KD_POOL_BWD,
  KD_GAP_FWD, KD_GAP_BWD, KD_LOSS, KD_LOSS_SUM, KD_SGD, KD_GATHER, KD_REVIVE, KD_CSTATS,
  KD_MOVE, KD_SCALE, KD_DESCEND, KD_UNITS, KD_COUNT, KD_EMIT, KD_PAIR
} kd_op;

/* COUNT's scores per thread. */
enum { KD_CHUNK = 32 };

/* UNITS' units u0 .. u0 + n - 1: unit u covers the len parameters from
 * p0 + (u - u0) * len. */
typedef struct kd_run {
  int64_t u0, p0, len, n;
} kd_run;

/* What EMIT writes of a unit. */
typedef struct kd_hit {
  int64_t unit;
  float score;
  int32_t pad;
} kd_hit;

/* The layout of a set kept on the device (GATHER's b), in bytes: 16
 * floats (the normalisation's mean[4] and std[4], then the bytes' scale),
 * the labels (ir_label), then the images from KD_SET_IMAGES(n_set). */
enum { KD_SET_LABELS = 64 };
#define KD_SET_IMAGES(n_set) (KD_SET_LABELS + ((int64_t)(n_set) * 2 + 15) / 16 * 16)

typedef struct kd_desc {
  kd_op op;
  int64_t ns;               /* floats per sample of the activation arenas */
  int64_t len;              /* RELU, RELU_MASK, COPY: floats per sample;
                             * UNITS, COUNT, EMIT: units */
  int64_t c, hw, h, w, f;   /* channels (LOSS: classes), plane, pool shape */
  int64_t src, dst, y, dy;  /* per-sample arena offsets */
  int64_t p0, p1;           /* offsets into pgm and into stats / bnaux */
  int64_t np, nstats;       /* parameters, batch norm statistics */
  int64_t n_set;            /* GATHER: images in the set */
  int relu, add, assign, bytes, norm;
  const kd_run *runs;       /* UNITS: its units, nruns runs of them */
  int nruns;
} kd_desc;

/* Adds the kernel `name` for d to m; a launch takes per * n + fixed
 * threads. 0, or -1 for an empty shape. */
int kd_gen(LLVMModuleRef m, const kd_desc *d, const char *name, int64_t *per, int64_t *fixed);

#endif
