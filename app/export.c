/* export.c: a trained network as fixed-architecture C or CUDA source.
 *
 * Two steps. xp_plan_build (xplan.h) walks the layers in schedule order
 * and tracks, for every channel of every IR tensor, where its plane lives
 * in a per-image workspace of the emitted code, or that it is constant
 * zero. Then emission prints one specialised function per remaining op,
 * every shape a literal, over constant tables: its body once, behind a
 * prologue that makes it a C loop or a CUDA kernel. The ONNX target
 * (interop.c) writes a graph from the same plan instead, and so does
 * the PyTorch one.
 *
 * Output files are written under temporary names in their own directory
 * and renamed into place only when all of them are complete, so an error
 * never leaves a partial file. */
#include "app/export.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/interop.h"
#include "app/xplan.h"
#include "base/hash.h"
#include "runtime/data.h"
#include "runtime/err.h"
#include "runtime/ref.h"

/* ---- emission ---------------------------------------------------------- */

typedef struct xp_out {
  FILE *f;
  const char *P;      /* name prefix */
  int cuda;
  int file_weights;   /* weights come from FILE.weights at run time */
  FILE *wf;           /* the weights file being written */
  int64_t ws;         /* workspace floats per image (at least 1) */
} xp_out;

/* Shortest exact decimal of a float that is also a valid C float literal
 * in both C and CUDA ("1" alone would not take an f suffix). */
static void put_float(FILE *f, float v) {
  char b[48];
  snprintf(b, sizeof b, "%.9g", (double)v);
  if (!strpbrk(b, ".e")) strcat(b, ".0");
  fprintf(f, "%sf", b);
}

static const char *dev(const xp_out *o) { return o->cuda ? "__device__ " : ""; }

static void put_i32s(const xp_out *o, const char *type, const char *name, int id,
                     const int32_t *v, int64_t n) {
  fprintf(o->f, "static %s%s%s %s_%s%d[%" PRId64 "] = {", dev(o), o->cuda ? "" : "const ",
          type, o->P, name, id, n ? n : 1);
  for (int64_t i = 0; i < n; i++)
    fprintf(o->f, "%s%" PRId32 ",", i % 16 ? "" : "\n ", v[i]);
  fprintf(o->f, "%s};\n", n ? "\n" : "0");
}

static void put_taps(const xp_out *o, int id, const uint16_t *v, int64_t n, int kk) {
  fprintf(o->f, "static %s%sunsigned %s %s_t%d[%" PRId64 "] = {", dev(o),
          o->cuda ? "" : "const ", kk > 256 ? "short" : "char", o->P, id, n ? n : 1);
  for (int64_t i = 0; i < n; i++)
    fprintf(o->f, "%s%u,", i % 24 ? "" : "\n ", (unsigned)v[i]);
  fprintf(o->f, "%s};\n", n ? "\n" : "0");
}

/* Weights are either literal constants or a zeroed array that net_load
 * fills, in emission order, from the weights file. */
static int put_weights(xp_out *o, const char *name, int id, const float *v, int64_t n) {
  int64_t len = n ? n : 1;
  if (o->file_weights) {
    fprintf(o->f, "static %sfloat %s_%s%d[%" PRId64 "];\n", dev(o), o->P, name, id, len);
    for (int64_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, &v[i], 4);
      unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                             (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
      if (fwrite(le, 1, 4, o->wf) != 4) return -1;
    }
    return 0;
  }
  fprintf(o->f, "static %s%sfloat %s_%s%d[%" PRId64 "] = {", dev(o), o->cuda ? "" : "const ",
          o->P, name, id, len);
  for (int64_t i = 0; i < n; i++) {
    fputs(i % 8 ? " " : "\n ", o->f);
    put_float(o->f, v[i]);
    fputc(',', o->f);
  }
  fprintf(o->f, "%s};\n", n ? "\n" : "0");
  return 0;
}

static int put_tables(xp_out *o, const xp_plan *p) {
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    if (xp_has_weights(op->kind)) {
      put_i32s(o, "int", "s", i, op->start, op->n + 1);
      put_i32s(o, "int", "i", i, op->src, op->n_ent);
      if (op->kind == IR_CONV) put_taps(o, i, op->tap, op->n_ent, op->k * op->k);
      if (put_weights(o, "w", i, op->wt, op->n_ent) || put_weights(o, "b", i, op->bias, op->n) ||
          (op->post && put_weights(o, "a", i, op->post, 2 * (int64_t)op->n)))
        return -1;
    } else {
      put_i32s(o, "int", "i", i, op->src, op->n);
    }
  }
  put_i32s(o, "int", "logit", 0, p->logit_src, p->classes);
  return 0;
}

/* FNV-1a over what the tables encode (shapes, patterns, offsets): a
 * weights file is only loaded by the code it was written with, even when
 * another network happens to have as many weights. */
static uint64_t plan_fingerprint(const xp_plan *p) {
  uint64_t h = BASE_FNV_SEED;
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *o = &p->ops[i];
    int64_t shape[12] = {o->kind, o->n, o->out, o->h, o->w, o->k, o->stride, o->pad,
                         o->relu, o->n_ent, o->oh, o->post != NULL};
    h = base_fnv(h, shape, sizeof shape);
    if (o->start) h = base_fnv(h, o->start, ((size_t)o->n + 1) * sizeof *o->start);
    h = base_fnv(h, o->src, (size_t)(o->start ? o->n_ent : o->n) * sizeof *o->src);
    if (o->tap) h = base_fnv(h, o->tap, (size_t)o->n_ent * sizeof *o->tap);
  }
  return base_fnv(h, p->logit_src, (size_t)p->classes * sizeof *p->logit_src);
}

/* The loader shared by C and CUDA: FILE.weights is an 8-byte magic, the
 * float count and the fingerprint of the code, 8 bytes little-endian
 * each, then the floats little-endian in the order the arrays are
 * declared. */
static void put_loader(const xp_out *o, const xp_plan *p, int64_t total, uint64_t fp) {
  const char *P = o->P;
  fprintf(o->f,
          "\nstatic int %s_loaded;\n\n"
          "/* Reads one array's floats from the file image at *at. */\n"
          "static void %s_take(const unsigned char *buf, long *at, float *dst, long n) {\n"
          "  for (long i = 0; i < n; i++, *at += 4) {\n"
          "    const unsigned char *q = buf + *at;\n"
          "    unsigned int u = (unsigned int)q[0] | (unsigned int)q[1] << 8 |\n"
          "                     (unsigned int)q[2] << 16 | (unsigned int)q[3] << 24;\n"
          "    memcpy(&dst[i], &u, 4);\n"
          "  }\n",
          P, P);
  fprintf(o->f,
          "}\n\n"
          "int %s_load(const char *weights_path) {\n"
          "  static const unsigned char fp[8] = {%u, %u, %u, %u, %u, %u, %u, %u};\n"
          "  const long total = %" PRId64 "L, size = 24 + 4 * total;\n"
          "  FILE *f = fopen(weights_path, \"rb\");\n"
          "  if (!f) return -1;\n"
          "  unsigned char *buf = (unsigned char *)malloc((size_t)size + 1);\n"
          "  size_t got = buf ? fread(buf, 1, (size_t)size + 1, f) : 0;\n"
          "  fclose(f);\n"
          "  long count = 0;\n"
          "  for (int i = 7; buf && got >= 16 && i >= 0; i--) count = count << 8 | buf[8 + i];\n"
          "  if (!buf || got != (size_t)size || memcmp(buf, \"ILNASWT1\", 8) != 0 ||\n"
          "      count != total || memcmp(buf + 16, fp, 8) != 0) {\n"
          "    free(buf);\n"
          "    return -1;\n"
          "  }\n"
          "  long at = 24;\n"
          "  int rc = 0;\n",
          P, (unsigned)(fp & 255), (unsigned)(fp >> 8 & 255), (unsigned)(fp >> 16 & 255),
          (unsigned)(fp >> 24 & 255), (unsigned)(fp >> 32 & 255), (unsigned)(fp >> 40 & 255),
          (unsigned)(fp >> 48 & 255), (unsigned)(fp >> 56 & 255), total);
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    if (!xp_has_weights(op->kind)) continue;
    const char *names[3] = {"w", "b", "a"};
    int64_t lens[3] = {op->n_ent, op->n, op->post ? 2 * (int64_t)op->n : 0};
    for (int k = 0; k < 3; k++) {
      if (!lens[k]) continue;
      if (o->cuda)
        fprintf(o->f,
                "  {\n"
                "    float *h = (float *)malloc(%" PRId64 " * sizeof(float));\n"
                "    if (!h) rc = -1;\n"
                "    else {\n"
                "      %s_take(buf, &at, h, %" PRId64 ");\n"
                "      if (cudaMemcpyToSymbol(%s_%s%d, h, %" PRId64 " * sizeof(float)) != cudaSuccess) rc = -1;\n"
                "      free(h);\n"
                "    }\n"
                "  }\n",
                lens[k], P, lens[k], P, names[k], i, lens[k]);
      else
        fprintf(o->f, "  %s_take(buf, &at, %s_%s%d, %" PRId64 ");\n", P, P, names[k], i,
                lens[k]);
    }
  }
  fprintf(o->f,
          "  free(buf);\n"
          "  %s_loaded = rc == 0;\n"
          "  return rc;\n"
          "}\n",
          P);
}

static void put_norm_tables(const xp_out *o, const rt_norm *nm, int c) {
  const char *names[2] = {"mean", "std"};
  for (int k = 0; k < 2; k++) {
    fprintf(o->f, "static %s%sfloat %s_%s[%d] = {", dev(o), o->cuda ? "" : "const ", o->P,
            names[k], c);
    for (int i = 0; i < c; i++) {
      put_float(o->f, k ? nm->std[i] : nm->mean[i]);
      fputs(i + 1 < c ? ", " : "", o->f);
    }
    fprintf(o->f, "};\n");
  }
}

/* ---- one body per op, two prologues -------------------------------------
 *
 * Every function of the emitted code (the input normalisation, each op,
 * the logits) is a body over work unit r of one image's workspace s,
 * written once here; only the prologue that picks the image and r differs
 * by target. C: a loop over the image's UNITS, the function called once
 * per image by net_forward. CUDA: one thread per unit of the whole batch,
 * behind a bounds check. A unit of a spatial op is CW adjacent outputs of
 * RW rows: on C the widest run an accumulator keeps in registers (or the
 * row), and for a conv up to 16 rows, so that each active entry's table
 * reads and address arithmetic serve RW x CW outputs; on CUDA one output,
 * so that neighbouring threads write neighbouring floats and the body
 * collapses to one output per thread. */

typedef struct xp_fn {
  char name[32];      /* <prefix>_<name>: a C function or a CUDA kernel */
  const char *io;     /* the per-image array besides s ("const float *in",
                         "float *lg"), NULL for none */
  int64_t io_per;     /* its floats per image */
  char consts[512];   /* the enum of shapes the body reads, UNITS among them */
  const char *body[2]; /* the body's text, a second part after the first */
  int id;             /* the op number that '#' stands for in the body */
  int none;           /* no units (an op without outputs): never launched */
} xp_fn;

/* Prints `text` with every '@' replaced by "<prefix>_" and every '#' by
 * the op's number (table names in the fixed bodies), each line indented. */
static void put_body(FILE *f, const char *text, const char *P, int i, int indent) {
  for (const char *c = text; *c; c++) {
    if (c == text || c[-1] == '\n') fprintf(f, "%*s", indent, "");
    if (*c == '@') fprintf(f, "%s_", P);
    else if (*c == '#') fprintf(f, "%d", i);
    else fputc(*c, f);
  }
}

static void put_fn(const xp_out *o, const xp_fn *fn) {
  FILE *f = o->f;
  const char *P = o->P;
  if (o->cuda) {
    /* Each thread finds its image and unit; images are WS floats apart.
     * An op without units never runs (no launch), but its kernel must
     * compile: no constant division by 0. */
    const char *unit_div = fn->none ? "(UNITS ? UNITS : 1)" : "UNITS";
    const char *io_name = fn->io ? strrchr(fn->io, '*') + 1 : "";
    fprintf(f, "__global__ void %s_%s(float *ws, ", P, fn->name);
    if (fn->io) fprintf(f, "%s_all, ", fn->io);
    fprintf(f,
            "int batch) {\n%s"
            "  const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
            "  if (t >= (long long)batch * UNITS) return;\n"
            "  const long long n = t / %s;\n"
            "  float *s = ws + n * %" PRId64 "LL;\n",
            fn->consts, unit_div, o->ws);
    if (fn->io)
      fprintf(f, "  %s = %s_all + n * %" PRId64 "LL;\n", fn->io, io_name, fn->io_per);
    fprintf(f, "  const int r = (int)(t %% %s);\n", unit_div);
    for (int k = 0; k < 2; k++)
      if (fn->body[k]) put_body(f, fn->body[k], P, fn->id, 2);
  } else {
    fprintf(f, "static void %s_%s(float *s%s%s) {\n%s  for (int r = 0; r < UNITS; r++) {\n",
            P, fn->name, fn->io ? ", " : "", fn->io ? fn->io : "", fn->consts);
    for (int k = 0; k < 2; k++)
      if (fn->body[k]) put_body(f, fn->body[k], P, fn->id, 4);
    fprintf(f, "  }\n");
  }
  fprintf(f, "}\n");
}

/* The first unit lines of a spatial op: output channel c, the first row
 * oy of its RW, and the first column x0 of its CW. */
#define ROW_UNIT                                                                   \
  "const int c = r / (OH / RW * (OW / CW)), oy = r / (OW / CW) % (OH / RW) * RW,\n" \
  "          x0 = r % (OW / CW) * CW;\n"

/* The body of each op, by IR kind; the ReLU store of conv and linear
 * comes second. */
static void op_body(const xp_op *op, const char *body[2]) {
  body[0] = body[1] = NULL;
  switch (op->kind) {
  case IR_CONV:
    /* RW x CW outputs in a local accumulator the compiler keeps in
     * registers, each output's sum in entry order; the zero border stands
     * in for the padding. */
    body[0] = ROW_UNIT
              "float *y = s + OUT + c * OPP + (oy + B) * OPW + x0 + B;\n"
              "float acc[RW][CW];\n"
              "for (int ry = 0; ry < RW; ry++)\n"
              "  for (int ox = 0; ox < CW; ox++) acc[ry][ox] = @b#[c];\n"
              "for (int e = @s#[c]; e < @s#[c + 1]; e++) {\n"
              "  const int ky = @t#[e] / K, kx = @t#[e] % K;\n"
              "  const float *xr = s + @i#[e] + (oy * S + ky + B - P) * PW + x0 * S + kx + B - P;\n"
              "  const float wv = @w#[e];\n"
              "  for (int ry = 0; ry < RW; ry++)\n"
              "    for (int ox = 0; ox < CW; ox++) acc[ry][ox] += wv * xr[ry * S * PW + ox * S];\n"
              "}\n";
    body[1] = op->post ? "for (int ry = 0; ry < RW; ry++)\n"
                         "  for (int ox = 0; ox < CW; ox++)\n"
                         "    y[ry * OPW + ox] =\n"
                         "      (acc[ry][ox] > 0.0f ? acc[ry][ox] : 0.0f) * @a#[c] + @a#[N + c];\n"
              : op->relu ? "for (int ry = 0; ry < RW; ry++)\n"
                           "  for (int ox = 0; ox < CW; ox++)\n"
                           "    y[ry * OPW + ox] = acc[ry][ox] > 0.0f ? acc[ry][ox] : 0.0f;\n"
                         : "for (int ry = 0; ry < RW; ry++)\n"
                           "  for (int ox = 0; ox < CW; ox++) y[ry * OPW + ox] = acc[ry][ox];\n";
    break;
  case IR_LINEAR:
    body[0] = "float acc = 0.0f;\n"
              "for (int e = @s#[r]; e < @s#[r + 1]; e++) acc += @w#[e] * s[@i#[e]];\n"
              "acc += @b#[r];\n";
    body[1] = op->relu ? "s[OUT + r] = acc > 0.0f ? acc : 0.0f;\n" : "s[OUT + r] = acc;\n";
    break;
  case IR_MAXPOOL:
    body[0] = ROW_UNIT
              "const float *x = s + @i#[c] + B * PW + B;\n"
              "float *y = s + OUT + c * OPP + (oy + B) * OPW + B;\n"
              "for (int ox = x0; ox < x0 + CW; ox++) {\n"
              "  float m = x[oy * K * PW + ox * K];\n"
              "  for (int dy = 0; dy < K; dy++)\n"
              "    for (int dx = 0; dx < K; dx++) {\n"
              "      const float v = x[(oy * K + dy) * PW + ox * K + dx];\n"
              "      if (v > m) m = v;\n"
              "    }\n"
              "  y[ox] = m;\n"
              "}\n";
    break;
  case IR_GAP:
    body[0] = "const float *x = s + @i#[r] + B * PW + B;\n"
              "double sum = 0.0;\n"
              "for (int y = 0; y < H; y++)\n"
              "  for (int x0 = 0; x0 < W; x0++) sum += x[y * PW + x0];\n"
              "s[OUT + r] = (float)(sum / (H * W));\n";
    break;
  case IR_COPY: /* vanishes in the plan */
    break;
  }
}

/* CW, the outputs of a row one unit covers (a divisor of OW). On CUDA 1.
 * On C a conv's accumulator holds up to 16 floats in vector registers
 * across its entries (wider rows spill); a max pool takes the row. */
static int unit_width(const xp_out *o, const xp_op *op) {
  if (o->cuda || (op->kind != IR_CONV && op->kind != IR_MAXPOOL)) return 1;
  if (op->kind == IR_MAXPOOL) return op->ow;
  for (int d = 16; op->ow > 16 && d >= 8; d--)
    if (op->ow % d == 0) return d;
  return op->ow;
}

/* RW, the rows one unit covers (a divisor of OH): on C a conv's largest
 * divisor up to 16, else 1. Measured on the sample's network (the 2-core
 * VM, 2026-12-04, cc -O3 -march=native, batch 128): up to 4 rows 1.35x
 * the single row, up to 14 (14 here) 2.8x; with -mavx2 (16 vector
 * registers, rows spilling) 2.5x, and at plain -O2 1.4x. */
static int unit_rows(const xp_out *o, const xp_op *op) {
  if (o->cuda || op->kind != IR_CONV) return 1;
  for (int d = 16; d > 1; d--)
    if (op->oh % d == 0) return d;
  return 1;
}

/* Each op's shapes as named constants, so the bodies are fixed text:
 * N outputs; H x W in, OH x OW out; PW, OPW the padded row lengths and
 * IPP, OPP the padded plane sizes; CW x RW the outputs of a unit; OUT the
 * first output plane; UNITS the work units per image. */
static int64_t op_fn(const xp_out *o, const xp_plan *p, const xp_op *op, int i, xp_fn *fn) {
  const int B = p->B, pw = op->w + 2 * B, opw = op->ow + 2 * B, cw = unit_width(o, op),
            rw = unit_rows(o, op);
  const int64_t units = op->kind == IR_CONV || op->kind == IR_MAXPOOL
                            ? (int64_t)op->n * (op->oh / rw) * (op->ow / cw)
                            : op->n;
  memset(fn, 0, sizeof *fn);
  snprintf(fn->name, sizeof fn->name, "op%d", i);
  snprintf(fn->consts, sizeof fn->consts,
           "  enum { N = %d, H = %d, W = %d, OH = %d, OW = %d, K = %d, S = %d, P = %d, B = %d,\n"
           "         PW = %d, OPW = %d, IPP = %d, OPP = %d, CW = %d, RW = %d, OUT = %" PRId64
           ", UNITS = %" PRId64 " };\n",
           op->n, op->h, op->w, op->oh, op->ow, op->k, op->stride, op->pad, B, pw, opw,
           pw * (op->h + 2 * B), opw * (op->oh + 2 * B), cw, rw, op->out, units);
  op_body(op, fn->body);
  fn->id = i;
  fn->none = units == 0;
  return units;
}

/* The input normalisation: unit CW pixels of one row of a channel (C: the
 * row). */
static int64_t norm_fn(const xp_out *o, const xp_plan *p, xp_fn *fn) {
  const int B = p->B, pw = p->in_w + 2 * B, cw = o->cuda ? 1 : p->in_w;
  const int64_t units = (int64_t)p->in_c * p->in_h * (p->in_w / cw);
  memset(fn, 0, sizeof *fn);
  snprintf(fn->name, sizeof fn->name, "norm");
  fn->io = "const float *in";
  fn->io_per = (int64_t)p->in_c * p->in_h * p->in_w;
  snprintf(fn->consts, sizeof fn->consts,
           "  enum { H = %d, W = %d, B = %d, PW = %d, IPP = %" PRId64 ", CW = %d, UNITS = %" PRId64
           " };\n",
           p->in_h, p->in_w, B, pw, xp_padded(p, p->in_h, p->in_w), cw, units);
  fn->body[0] = "const int c = r / (H * (W / CW)), y = r / (W / CW) % H, x0 = r % (W / CW) * CW;\n"
                "for (int x = x0; x < x0 + CW; x++)\n"
                "  s[c * IPP + (y + B) * PW + x + B] = (in[(c * H + y) * W + x] - @mean[c]) / @std[c];\n";
  return units;
}

/* The logits, one per unit, from wherever the plan left them. */
static int64_t logits_fn(const xp_plan *p, xp_fn *fn) {
  memset(fn, 0, sizeof *fn);
  snprintf(fn->name, sizeof fn->name, "logits");
  fn->io = "float *lg";
  fn->io_per = p->classes;
  snprintf(fn->consts, sizeof fn->consts, "  enum { UNITS = %d };\n", p->classes);
  fn->body[0] = "lg[r] = @logit0[r] >= 0 ? s[@logit0[r]] : 0.0f;\n";
  return p->classes;
}

/* All of the functions; per function, its units per image in units[],
 * for the CUDA launches (the normalisation first, the logits last). */
static void emit_fns(const xp_out *o, const xp_plan *p, const ir_graph *g, int64_t *units) {
  FILE *f = o->f;
  xp_fn fn;
  units[0] = norm_fn(o, p, &fn);
  fprintf(f, "\n/* the input normalisation */\n");
  put_fn(o, &fn);
  for (int i = 0; i < p->n_ops; i++) {
    const xp_op *op = &p->ops[i];
    fprintf(f, "\n/* %s: %s, %d outputs", g->layers[op->layer].name, ir_kind_name(op->kind),
            op->n);
    if (xp_has_weights(op->kind)) fprintf(f, ", %" PRId64 " weights", op->n_ent);
    fprintf(f, " */\n");
    units[1 + i] = op_fn(o, p, op, i, &fn);
    put_fn(o, &fn);
  }
  units[1 + p->n_ops] = logits_fn(p, &fn);
  fprintf(f, "\n/* the logits */\n");
  put_fn(o, &fn);
}

/* ---- the drivers: the one part that is C or CUDA throughout ------------- */

/* Per image: normalise, each op in turn, the logits; one workspace. */
static void emit_c_forward(const xp_out *o, const xp_plan *p) {
  const char *P = o->P;
  FILE *f = o->f;
  const int64_t img = (int64_t)p->in_c * p->in_h * p->in_w;
  fprintf(f,
          "\nint %s_forward(const float *input, float *logits, int batch) {\n"
          "  if (batch < 0 || (batch > 0 && (!input || !logits))) return -1;\n",
          P);
  if (o->file_weights) fprintf(f, "  if (!%s_loaded) return -1;\n", P);
  fprintf(f,
          "  /* zeroed once: the borders of the planes are never written */\n"
          "  float *ws = (float *)calloc(%" PRId64 ", sizeof(float));\n"
          "  if (!ws) return -1;\n"
          "  for (int n = 0; n < batch; n++) {\n"
          "    %s_norm(ws, input + (long)n * %" PRId64 ");\n",
          o->ws, P, img);
  for (int i = 0; i < p->n_ops; i++) fprintf(f, "    %s_op%d(ws);\n", P, i);
  fprintf(f,
          "    %s_logits(ws, logits + (long)n * %d);\n"
          "  }\n"
          "  free(ws);\n"
          "  return 0;\n"
          "}\n",
          P, p->classes);
}

/* The batch on the device: one launch per function, each thread a unit. */
static void emit_cuda_forward(const xp_out *o, const xp_plan *p, const int64_t *units) {
  const char *P = o->P;
  FILE *f = o->f;
  const int64_t img = (int64_t)p->in_c * p->in_h * p->in_w;
  fprintf(f,
          "\n/* Blocks for one thread per unit of `per` units per image. */\n"
          "static unsigned int %s_blocks(long long per, int batch) {\n"
          "  return (unsigned int)((per * batch + 255) / 256);\n"
          "}\n"
          "\nint %s_forward(const float *input, float *logits, int batch) {\n"
          "  if (batch < 0 || (batch > 0 && (!input || !logits))) return -1;\n"
          "  if (batch == 0) return 0;\n",
          P, P);
  if (o->file_weights) fprintf(f, "  if (!%s_loaded) return -1;\n", P);
  fprintf(f,
          "  float *d_in = NULL, *d_ws = NULL, *d_lg = NULL;\n"
          "  int rc = -1;\n"
          "  const size_t in_bytes = (size_t)batch * %" PRId64 " * sizeof(float);\n"
          "  const size_t ws_bytes = (size_t)batch * %" PRId64 " * sizeof(float);\n"
          "  const size_t lg_bytes = (size_t)batch * %d * sizeof(float);\n"
          "  /* zeroed: the borders of the planes are never written */\n"
          "  if (cudaMalloc((void **)&d_in, in_bytes) != cudaSuccess ||\n"
          "      cudaMalloc((void **)&d_ws, ws_bytes) != cudaSuccess ||\n"
          "      cudaMalloc((void **)&d_lg, lg_bytes) != cudaSuccess ||\n"
          "      cudaMemset(d_ws, 0, ws_bytes) != cudaSuccess ||\n"
          "      cudaMemcpy(d_in, input, in_bytes, cudaMemcpyHostToDevice) != cudaSuccess)\n"
          "    goto done;\n"
          "  ILNAS_LAUNCH(%s_norm, %s_blocks(%" PRId64 ", batch), d_ws, d_in, batch);\n",
          img, o->ws, p->classes, P, P, units[0]);
  for (int i = 0; i < p->n_ops; i++)
    if (units[1 + i] > 0) /* a launch of 0 blocks fails */
      fprintf(f, "  ILNAS_LAUNCH(%s_op%d, %s_blocks(%" PRId64 ", batch), d_ws, batch);\n", P,
              i, P, units[1 + i]);
  fprintf(f,
          "  ILNAS_LAUNCH(%s_logits, %s_blocks(%" PRId64 ", batch), d_ws, d_lg, batch);\n"
          "  if (cudaGetLastError() != cudaSuccess ||\n"
          "      cudaMemcpy(logits, d_lg, lg_bytes, cudaMemcpyDeviceToHost) != cudaSuccess)\n"
          "    goto done;\n"
          "  rc = 0;\n"
          "done:\n"
          "  cudaFree(d_in);\n"
          "  cudaFree(d_ws);\n"
          "  cudaFree(d_lg);\n"
          "  return rc;\n"
          "}\n",
          P, P, units[1 + p->n_ops]);
}

static void emit_header(FILE *f, const char *P, const char *guard, const xp_plan *p,
                        const rt_norm *nm, const char *origin, int cuda, int file_weights,
                        const char *weights_name) {
  fprintf(f,
          "/* %s.h: generated by ilnas export from %s; do not edit.\n"
          " *\n"
          " * A fixed-architecture network: input %dx%dx%d, %d classes.\n"
          " * input: raw images scaled to [0, 1] (pixels / 255), NCHW, float32,\n"
          " * batch * %d * %d * %d floats; the normalisation the network was trained\n"
          " * with is applied inside:",
          P, origin, p->in_c, p->in_h, p->in_w, p->classes, p->in_c, p->in_h, p->in_w);
  for (int c = 0; c < p->in_c; c++)
    fprintf(f, "%s (x - %.6g) / %.6g", c ? "," : "", (double)nm->mean[c], (double)nm->std[c]);
  fprintf(f,
          ".\n * logits: batch * %d floats, unnormalised (argmax is the class).\n"
          " * %s_forward returns 0, or -1 on bad arguments, out of memory%s.\n",
          p->classes, P, cuda ? " or a CUDA error" : "");
  if (cuda)
    fprintf(f, " * input and logits are host pointers; the copies to and from the GPU\n"
               " * happen inside.\n");
  if (file_weights)
    fprintf(f,
            " * The weights live in %s: call %s_load(path) once before\n"
            " * %s_forward (which returns -1 until then); it returns 0, or -1 when\n"
            " * the file cannot be read or does not belong to this code.\n",
            weights_name, P, P);
  fprintf(f,
          " */\n#ifndef %s\n#define %s\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
          "extern const int %s_input_shape[3]; /* C, H, W */\n"
          "extern const int %s_classes;\n"
          "int %s_forward(const float *input, float *logits, int batch);\n",
          guard, guard, P, P, P);
  if (file_weights) fprintf(f, "int %s_load(const char *weights_path);\n", P);
  fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n");
}

/* ---- files ------------------------------------------------------------- */

typedef struct xp_file {
  char *path, *tmp;
  FILE *f;
} xp_file;

static int file_open(xp_file *x, const char *path, const char *mode, char *err,
                     size_t errlen) {
  size_t n = strlen(path) + 32;
  x->path = malloc(n);
  x->tmp = malloc(n);
  if (!x->path || !x->tmp) return rt_fail(err, errlen, "out of memory");
  snprintf(x->path, n, "%s", path);
  snprintf(x->tmp, n, "%s.tmp%ld", path, (long)getpid());
  x->f = fopen(x->tmp, mode);
  if (!x->f) {
    int e = errno;
    free(x->tmp), x->tmp = NULL;
    return rt_fail(err, errlen, "cannot write '%s': %s", path, strerror(e));
  }
  return 0;
}

/* Closes and checks; on failure the temporary is removed. */
static int file_close(xp_file *x, char *err, size_t errlen) {
  if (!x->f) return 0;
  int bad = ferror(x->f);
  int e = errno;
  if (fclose(x->f)) bad = 1, e = errno;
  x->f = NULL;
  if (bad) {
    remove(x->tmp);
    free(x->tmp), x->tmp = NULL;
    return rt_fail(err, errlen, "cannot write '%s': %s", x->path, strerror(e ? e : EIO));
  }
  return 0;
}

static void file_discard(xp_file *x) {
  if (x->f) fclose(x->f), x->f = NULL;
  if (x->tmp) remove(x->tmp);
  free(x->tmp), free(x->path);
  x->tmp = x->path = NULL;
}

/* Renames the closed files of a set into place in order (the one whose
 * presence says the set is complete last); files never opened are
 * skipped. On a failure the ones already in place are removed again, so
 * the set is there whole or not at all. */
static int files_commit(xp_file *const *order, int n, char *err, size_t errlen) {
  for (int i = 0; i < n; i++) {
    if (!order[i]->tmp) continue;
    if (rename(order[i]->tmp, order[i]->path)) {
      int rc = rt_fail(err, errlen, "cannot write '%s': %s", order[i]->path, strerror(errno));
      for (int k = 0; k < i; k++)
        if (order[k]->path && !order[k]->tmp) remove(order[k]->path);
      return rc;
    }
    free(order[i]->tmp), order[i]->tmp = NULL;
  }
  return 0;
}

/* The doc string of the ONNX and PyTorch exports. */
static void doc_of(char *doc, size_t n, const ir_graph *g, const app_train_state *st,
                   const char *origin) {
  snprintf(doc, n, "model '%s' after %d epochs, exported by ilnas from %s", g->cfg.name,
           st->epoch, origin);
}

/* ---- the entry points -------------------------------------------------- */

void app_export_opts_default(app_export_opts *o) {
  memset(o, 0, sizeof *o);
  o->target = APP_EXPORT_C;
  o->weights_threshold = APP_EXPORT_THRESHOLD;
}

/* FILE.c -> FILE (the stem) and the C prefix from its base name. */
static char *stem_of(const char *out) {
  const char *base = strrchr(out, '/');
  base = base ? base + 1 : out;
  const char *dot = strrchr(base, '.');
  size_t n = dot && dot != base ? (size_t)(dot - out) : strlen(out);
  char *s = malloc(n + 1);
  if (s) memcpy(s, out, n), s[n] = 0;
  return s;
}

static void prefix_of(const char *stem, char *P, size_t cap) {
  const char *base = strrchr(stem, '/');
  base = base ? base + 1 : stem;
  size_t n = 0;
  for (const char *c = base; *c && n + 1 < cap; c++) {
    int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
             (*c >= '0' && *c <= '9') || *c == '_';
    P[n++] = ok ? *c : '_';
  }
  P[n] = 0;
  /* A C identifier cannot start with a digit or be empty. */
  if (!n || (P[0] >= '0' && P[0] <= '9')) snprintf(P, cap, "net");
}

static const char *cuda_or_c(const app_export_opts *o) {
  return o->target == APP_EXPORT_CUDA ? "CUDA source" : "C source";
}

/* The ONNX target: FILE.onnx from the plan, written under a temporary name
 * and renamed into place when complete. The PyTorch target (write_torch)
 * below. */
static int write_onnx(const xp_plan *p, const ir_graph *g, const app_train_state *st,
                      const char *input, const char *origin, const app_export_opts *o,
                      app_export_stats *s, char *err, size_t errlen) {
  int rc = app_output_ok(o->out, input, "an ONNX model", err, errlen);
  if (rc) return rc;
  char doc[640];
  doc_of(doc, sizeof doc, g, st, origin);
  uint8_t *buf;
  size_t n;
  if (xp_onnx(p, g, &st->norm, doc, &buf, &n, err, errlen)) return -1;
  xp_file f = {0};
  xp_file *const order[1] = {&f};
  if (!(rc = file_open(&f, o->out, "wb", err, errlen))) {
    fwrite(buf, 1, n, f.f);
    if (!(rc = file_close(&f, err, errlen))) rc = files_commit(order, 1, err, errlen);
  }
  file_discard(&f);
  free(buf);
  s->table_bytes = (int64_t)n;
  return rc;
}

/* The PyTorch target: FILE.py and its weights FILE.bin, each under a
 * temporary name until both are complete; the module last. */
static int write_torch(const xp_plan *p, const ir_graph *g, const app_train_state *st,
                       const char *input, const char *origin, const app_export_opts *o,
                       app_export_stats *s, char *err, size_t errlen) {
  char *stem = stem_of(o->out);
  size_t sn = stem ? strlen(stem) + 8 : 0;
  char *bpath = stem ? malloc(sn) : NULL;
  xp_file py = {0}, bin = {0};
  int rc;
  if (!bpath) {
    rc = rt_fail(err, errlen, "out of memory");
    goto out;
  }
  snprintf(bpath, sn, "%s.bin", stem);
  if (strcmp(bpath, o->out) == 0) {
    rc = rt_fail(err, errlen, "output '%s' would be overwritten by its own weights; name it "
                 "FILE.py", o->out);
    goto out;
  }
  if ((rc = app_output_ok(o->out, input, "a PyTorch module", err, errlen)) ||
      (rc = app_output_ok(bpath, input, "exported weights", err, errlen)) ||
      (rc = file_open(&py, o->out, "w", err, errlen)) ||
      (rc = file_open(&bin, bpath, "wb", err, errlen)))
    goto out;
  char doc[640];
  doc_of(doc, sizeof doc, g, st, origin);
  const char *bbase = strrchr(bpath, '/') ? strrchr(bpath, '/') + 1 : bpath;
  if ((rc = xp_torch(p, g, &st->norm, doc, py.f, bin.f, bbase, err, errlen))) goto out;
  s->table_bytes = ftell(bin.f);
  xp_file *const order[2] = {&bin, &py};
  if (!(rc = file_close(&bin, err, errlen)) && !(rc = file_close(&py, err, errlen)))
    rc = files_commit(order, 2, err, errlen);
out:
  file_discard(&py), file_discard(&bin);
  free(stem), free(bpath);
  return rc;
}

int app_export_graph(const ir_graph *g, const rt_exec *x, const app_train_state *st,
                    const char *origin, const app_export_opts *o,
                    app_export_stats *stats, char *err, size_t errlen) {
  const ir_tensor *it = &g->tensors[g->input_t];
  if (st->norm.c != it->c)
    return rt_fail(err, errlen,
                "%s: the checkpoint does not record the input normalisation the network "
                "was trained with (re-save it with a current 'model train')",
                origin);
  if (!o->out || !*o->out) return rt_fail(err, errlen, "no output file given");

  /* The checkpoint's name goes into comments, where a "*" followed by "/"
   * would end them early. */
  const char *input = origin; /* the checkpoint's file, when it is one */
  char from[512];
  snprintf(from, sizeof from, "%s", origin);
  for (char *c = from; *c; c++)
    if (c[0] == '*' && c[1] == '/') c[0] = '_';
  origin = from;

  xp_plan p;
  const int other = o->target == APP_EXPORT_ONNX || o->target == APP_EXPORT_TORCH;
  if (other && o->dense)
    return rt_fail(err, errlen, "--dense is for the C and CUDA exports; the ONNX and PyTorch "
                   "exports are dense ops already");
  int rc = xp_plan_build(&p, g, x, other ? XP_ACTIVE : o->dense ? XP_DENSE : XP_NONZERO, err,
                         errlen);
  app_export_stats s;
  memset(&s, 0, sizeof s);
  if (rc) {
    xp_plan_free(&p);
    return rc;
  }
  for (int i = 0; i < p.n_ops; i++) {
    const xp_op *op = &p.ops[i];
    int64_t idx = xp_has_weights(op->kind) ? 4 * ((int64_t)op->n + 1) + 4 * op->n_ent
                                        : 4 * (int64_t)op->n;
    if (op->kind == IR_CONV) idx += op->n_ent * (op->k * op->k > 256 ? 2 : 1);
    if (xp_has_weights(op->kind)) s.weights += op->n_ent + op->n + (op->post ? 2 * op->n : 0);
    s.table_bytes += idx;
  }
  s.weight_bytes = 4 * s.weights;
  s.ws_floats = p.ws;
  s.ops = p.n_ops;
  if (o->target == APP_EXPORT_ONNX || o->target == APP_EXPORT_TORCH) {
    rc = o->target == APP_EXPORT_ONNX ? write_onnx(&p, g, st, input, origin, o, &s, err, errlen)
                                      : write_torch(&p, g, st, input, origin, o, &s, err, errlen);
    xp_plan_free(&p);
    if (!rc && stats) *stats = s;
    return rc;
  }
  s.weights_file = s.weight_bytes > o->weights_threshold;

  char *stem = stem_of(o->out);
  size_t sn = stem ? strlen(stem) + 16 : 0;
  char *hpath = stem ? malloc(sn) : NULL, *wpath = stem ? malloc(sn) : NULL;
  xp_file src = {0}, hdr = {0}, wts = {0};
  if (!stem || !hpath || !wpath) {
    rc = rt_fail(err, errlen, "out of memory");
    goto out;
  }
  snprintf(hpath, sn, "%s.h", stem);
  snprintf(wpath, sn, "%s.weights", stem);
  if (strcmp(hpath, o->out) == 0 || strcmp(wpath, o->out) == 0) {
    rc = rt_fail(err, errlen, "output '%s' would be overwritten by its own header or weights; "
                           "name it FILE.%s", o->out, o->target == APP_EXPORT_CUDA ? "cu" : "c");
    goto out;
  }
  /* never over the checkpoint itself, another checkpoint or a model source */
  if ((rc = app_output_ok(o->out, input, cuda_or_c(o), err, errlen)) ||
      (rc = app_output_ok(hpath, input, "a C header", err, errlen)) ||
      (rc = app_output_ok(wpath, input, "exported weights", err, errlen)))
    goto out;
  prefix_of(stem, s.prefix, sizeof s.prefix);
  const char *P = s.prefix;
  const int cuda = o->target == APP_EXPORT_CUDA;
  const char *hbase = strrchr(hpath, '/') ? strrchr(hpath, '/') + 1 : hpath;
  const char *wbase = strrchr(wpath, '/') ? strrchr(wpath, '/') + 1 : wpath;

  if ((rc = file_open(&src, o->out, "w", err, errlen)) ||
      (rc = file_open(&hdr, hpath, "w", err, errlen)) ||
      (s.weights_file && (rc = file_open(&wts, wpath, "wb", err, errlen))))
    goto out;

  char guard[96];
  snprintf(guard, sizeof guard, "%s_NET_H", P);
  for (char *c = guard; *c; c++)
    if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
  emit_header(hdr.f, P, guard, &p, &st->norm, origin, cuda, s.weights_file, wbase);

  xp_out eo = {src.f, P, cuda, s.weights_file, wts.f, p.ws ? p.ws : 1};
  const uint64_t fp = plan_fingerprint(&p);
  FILE *f = src.f;
  ir_count c = ir_count_params(g, x->arch);
  fprintf(f,
          "/* %s: generated by ilnas export from %s; do not edit.\n"
          " *\n"
          " * Model '%s' after %d epochs: %" PRId64 " active parameters of a %" PRId64
          "-parameter\n"
          " * super-network; %d ops here, %" PRId64 " stored weights and biases (batch\n"
          " * norm folded%s). Each op keeps constant tables over its live outputs:\n"
          " * entry starts (s), input offsets in the per-image workspace (i), taps\n"
          " * (t: ky * k + kx), weights (w), biases (b). See %s for the API.\n"
          " */\n",
          strrchr(o->out, '/') ? strrchr(o->out, '/') + 1 : o->out, origin, g->cfg.name,
          st->epoch, c.active, c.total, p.n_ops, s.weights,
          o->dense ? "; dense: every weight between live channels" : "", hbase);
  fprintf(f, "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n");
  if (cuda)
    fprintf(f, "#include <cuda_runtime.h>\n\n"
               "/* A test harness may define this to run the kernels on the CPU. */\n"
               "#ifndef ILNAS_LAUNCH\n"
               "#define ILNAS_LAUNCH(kernel, blocks, ...) kernel<<<(blocks), 256>>>(__VA_ARGS__)\n"
               "#endif\n\n");
  fprintf(f, "#include \"%s\"\n\n", hbase);
  fprintf(f, "const int %s_input_shape[3] = {%d, %d, %d};\nconst int %s_classes = %d;\n\n", P,
          p.in_c, p.in_h, p.in_w, P, p.classes);
  put_norm_tables(&eo, &st->norm, p.in_c);
  if (s.weights_file) {
    const unsigned char magic[8] = {'I', 'L', 'N', 'A', 'S', 'W', 'T', '1'};
    unsigned char cnt[16];
    for (int i = 0; i < 8; i++) {
      cnt[i] = (unsigned char)((uint64_t)s.weights >> (8 * i));
      cnt[8 + i] = (unsigned char)(fp >> (8 * i));
    }
    fwrite(magic, 1, 8, wts.f);
    fwrite(cnt, 1, 16, wts.f);
  }
  if (put_tables(&eo, &p)) {
    rc = rt_fail(err, errlen, "cannot write '%s': %s", wpath, strerror(errno));
    goto out;
  }
  if (s.weights_file) put_loader(&eo, &p, s.weights, fp);
  int64_t *units = malloc(((size_t)p.n_ops + 2) * sizeof *units);
  if (!units) {
    rc = rt_fail(err, errlen, "out of memory");
    goto out;
  }
  emit_fns(&eo, &p, g, units);
  if (cuda) emit_cuda_forward(&eo, &p, units);
  else emit_c_forward(&eo, &p);
  free(units);

  if ((rc = file_close(&src, err, errlen)) || (rc = file_close(&hdr, err, errlen)) ||
      (rc = file_close(&wts, err, errlen)))
    goto out;
  /* The source last: its presence says the set is complete. */
  xp_file *const order[3] = {&wts, &hdr, &src};
  rc = files_commit(order, 3, err, errlen);
out:
  file_discard(&src), file_discard(&hdr), file_discard(&wts);
  free(stem), free(hpath), free(wpath);
  xp_plan_free(&p);
  if (!rc && stats) *stats = s;
  return rc;
}

int app_export(const char *ckpt, const app_export_opts *o, app_export_stats *stats,
              char *err, size_t errlen) {
  ir_graph *g;
  rt_exec *x;
  app_train_state st;
  if (app_ckpt_load_task(ckpt, o->task, 1, 1, NULL, &g, &x, &st, err, errlen)) return -1;
  int rc;
  if (st.epoch <= 0)
    rc = rt_fail(err, errlen,
              "%s: the network has not been trained yet (0 epochs done); export a "
              "checkpoint written after at least one epoch",
              ckpt);
  else
    rc = app_export_graph(g, x, &st, ckpt, o, stats, err, errlen);
  rt_exec_free(x);
  ir_free(g);
  return rc;
}
