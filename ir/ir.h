/* ir.h: the super-network at its bounds, with its α masks.
 *
 * The IR owns everything that is static about a model: tensors (per-sample
 * shapes and their place in the activation arena), layers (shapes, which
 * tensor slice they read and write, where their parameters live) and the
 * parameter layout. It is const once built. An architecture over it
 * (ir_arch: the α bitset that says which weights and biases exist, and
 * which layers are alive) is a value of its own: the graph carries the one
 * it was built (or saved) with, and the executor owns the one that trains
 * (runtime/exec.h). Growth flips α bits and alive flags; nothing else
 * changes, so shapes, buffers and the schedule are fixed at compile time.
 *
 *   ir_graph *g = ir_build(&model, stderr);      // NULL after diagnostics
 *   ir_dump(g, stdout);
 *   ir_count c = ir_count_params(g, &g->arch);  // active / candidate / total
 *   uint8_t *b; size_t n; ir_serialize(g, &g->arch, &b, &n);
 *   ir_graph *h = ir_deserialize(b, n, err, sizeof err);
 *   ir_free(g);
 *
 * Layout of activations: NCHW per sample. A conv stage with dense links
 * keeps one concatenation tensor [stage input | layer 0 | layer 1 | ...]; a
 * layer reads a channel prefix of it and writes its own slice. A dead layer
 * passes its predecessor's output through, which is exactly what a layer
 * initialised to the identity after a ReLU computes, so a layer can come
 * alive without changing the network's function.
 */
#ifndef ILNAS_IR_H
#define ILNAS_IR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend/spec.h"

typedef enum {
#define IR_OP(K, name, what) IR_##K,
#include "ir/ops.def"
#undef IR_OP
} ir_kind;
enum {
  IR_N_KINDS = 0
#define IR_OP(K, name, what) + 1
#include "ir/ops.def"
#undef IR_OP
};

typedef struct ir_tensor {
  char name[64];
  int c, h, w;     /* per-sample shape */
  int64_t off;     /* per-sample float offset in the activation arena */
} ir_tensor;

/* A class index: cfg.classes is at most 65,536. */
typedef uint16_t ir_label;

/* Where a conv's batch norm sits: conv -> BN -> ReLU ('norm batch'), or
 * conv -> ReLU -> BN ('norm batch after', the seed paper's Figure 3). */
enum { IR_BN_BEFORE = 1, IR_BN_AFTER = 2 };

typedef struct ir_layer {
  ir_kind kind;
  char name[64];      /* "conv1.0", "reduce1", "linear1.1", "classifier" */
  int item;           /* index of the model item it came from; -1: classifier */
  int index;          /* position inside its stage */
  int cin, h, w;      /* what it reads: a channel prefix of in_t */
  int cout, oh, ow;   /* what it writes */
  int k, stride, pad;
  int relu, bn;       /* bn: 0, or IR_BN_BEFORE / IR_BN_AFTER the ReLU */
  int can_die;        /* stage layers beyond the first; others always live */
  int in_t, in_ch;    /* input tensor and first channel read */
  int z_t;            /* pre-activation tensor (conv/linear), -1 if none */
  int out_t, out_ch;  /* output tensor and first channel written */
  int prev_t, prev_ch;/* pass-through source when dead, -1 if none */
  int64_t w_off, n_w; /* weights [cout][cin][k][k] in the parameter array */
  int64_t b_off;      /* bias [cout], -1 if none */
  int64_t g_off;      /* batch norm gamma [cout] then beta [cout], -1 if none */
  int64_t s_off;      /* batch norm running mean [cout] then var [cout] in stats */
} ir_layer;

/* Which parameters exist and which layers are alive. A dead layer (only
 * those that can_die) passes prev_t's slice through. */
typedef struct ir_arch {
  uint64_t *alpha;  /* one bit per parameter; BN affine bits always 1 */
  uint8_t *alive;   /* per layer */
} ir_arch;

typedef struct ir_graph {
  fe_model cfg;          /* the checked model (src/file pointers not kept) */
  ir_tensor *tensors;
  int n_tensors;
  ir_layer *layers;
  int n_layers;
  int input_t, logits_t; /* network input and output tensors */
  int64_t act_size;      /* floats per sample in the activation arena */
  int64_t n_params;      /* floats in the parameter array */
  int64_t n_stats;       /* floats of batch norm running statistics */
  ir_arch arch;          /* the architecture it was built or saved with */
} ir_graph;

typedef struct ir_count {
  int64_t active;    /* weights and biases whose α bit is set */
  int64_t candidate; /* missing weights and biases (α = 0) */
  int64_t total;     /* active + candidate: the super-network's size */
  int64_t bn;        /* batch norm affine parameters (not searched) */
} ir_count;

/* Lowers a checked model: shapes, buffers, parameters and the seed α
 * (the lower bounds, at the model's density, drawn from its seed). Reports
 * a budget below the seed network against the source. NULL on error. */
ir_graph *ir_build(const fe_model *m, FILE *diag);

/* Sizes checked before the super-network is allocated; over one, ir_build
 * reports it against the source. ilnasc raises them with --max-params and
 * --max-arena (or ILNAS_MAX_PARAMS, ILNAS_MAX_ARENA). */
#define IR_MAX_PARAMS_DEFAULT ((int64_t)1 << 30) /* 4.3 GB of floats */
#define IR_MAX_ARENA_DEFAULT ((int64_t)1 << 36)  /* bytes: 68.7 GB */
typedef struct ir_limits {
  int64_t max_params; /* super-network parameters (weights, biases, BN) */
  int64_t max_arena;  /* activation arena bytes at the model's batch */
} ir_limits;
ir_limits ir_limits_default(void);
/* ir_build with limits other than the defaults. */
ir_graph *ir_build_limited(const fe_model *m, const ir_limits *lim, FILE *diag);
void ir_free(ir_graph *g);

static inline int ir_alpha_get(const ir_arch *a, int64_t i) {
  return (int)((a->alpha[i >> 6] >> (i & 63)) & 1u);
}
static inline void ir_alpha_set(ir_arch *a, int64_t i, int on) {
  uint64_t bit = (uint64_t)1 << (i & 63);
  if (on) a->alpha[i >> 6] |= bit; else a->alpha[i >> 6] &= ~bit;
}

/* The first parameter in [i, end) whose α bit is set, or end; by α's
 * words, so that the missing parameters of a wide template cost a word
 * per 64. */
static inline int64_t ir_alpha_next(const ir_arch *a, int64_t i, int64_t end) {
  while (i < end) {
    uint64_t word = a->alpha[i >> 6] >> (i & 63);
    if (word) {
      i += __builtin_ctzll(word);
      break;
    }
    i = (i | 63) + 1;
  }
  return i < end ? i : end;
}

/* An architecture for g with nothing active and every layer alive; 0, or
 * -1 when out of memory. */
int ir_arch_init(ir_arch *a, const ir_graph *g);
/* dst (initialised for g) becomes src. */
void ir_arch_copy(ir_arch *dst, const ir_arch *src, const ir_graph *g);
void ir_arch_free(ir_arch *a);

ir_count ir_count_params(const ir_graph *g, const ir_arch *a);
/* The α bits set among parameters [0, n). */
int64_t ir_count_active_bits(const ir_arch *a, int64_t n);
ir_count ir_count_layer(const ir_graph *g, const ir_arch *a, const ir_layer *l);
/* Channels (conv) or neurons (linear) of a layer with at least one active
 * incoming weight. */
int ir_live_outputs(const ir_graph *g, const ir_arch *a, const ir_layer *l);
/* Every tensor's channels in one array, tensor t's from ir_chan_base(g, t)
 * (the channels of the tensors before it); ir_chan_base(g, n_tensors) is
 * the total. */
int64_t ir_chan_base(const ir_graph *g, int t);
/* Which channels can vary with the input (out, ir_chan_base(g, n_tensors)
 * bytes): the network's input; a live conv or linear layer's outputs with
 * an active weight from a channel that varies; a dead layer's, a pooling's
 * or a copy's where their source's does. The others are constants (a
 * bias, or nothing), which batch norm maps to its beta. -1 when out of
 * memory. */
int ir_varying(const ir_graph *g, const ir_arch *a, uint8_t *out);
/* Input features per channel of layer l's input tensor: 1 but for a
 * linear layer that reads a tensor of planes (flattened), which reads a
 * plane's pixels as features. */
int ir_per_chan(const ir_graph *g, const ir_layer *l);
/* Channels of its input tensor that layer l reads. */
int ir_in_chans(const ir_graph *g, const ir_layer *l);
/* Per-layer fan-in of the weights, for initialisation. */
int64_t ir_fan_in(const ir_layer *l);

void ir_dump(const ir_graph *g, FILE *out);

/* An op's name, for messages (settings' names: fe_data_name and
 * fe_search_name, frontend/spec.h). */
const char *ir_kind_name(ir_kind k); /* "conv", "linear", "maxpool", ... */

/* Binary form, little-endian, versioned; round-trips exactly. The graph
 * is written with architecture a (g->arch when NULL), and read back with
 * it as its arch. */
int ir_serialize(const ir_graph *g, const ir_arch *a, uint8_t **buf, size_t *n);
ir_graph *ir_deserialize(const uint8_t *buf, size_t n, char *err, size_t errlen);
/* The checks ir_deserialize makes of what it read (every tensor in the
 * arena, every layer's slices, shapes and parameter ranges): 0, or -1
 * with the first failure in err. */
int ir_check(const ir_graph *g, char *err, size_t errlen);

/* The static schedule: calls into the runtime's graph ops, every shape and
 * offset a constant. ilnasc emits it as the graph driver; the runtime can
 * also interpret it (tests compare the two). */
enum { IR_MAX_ARGS = 8 };
typedef struct ir_call {
  const char *fn;
  int nargs;
  int64_t args[IR_MAX_ARGS];
} ir_call;

/* Fills *fwd and *bwd (malloc'd). Returns 0, or -1 when out of memory. */
int ir_schedule(const ir_graph *g, ir_call **fwd, int *n_fwd, ir_call **bwd,
                int *n_bwd);

#endif
