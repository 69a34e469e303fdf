/* test_jit_ops: every op of the CPU (JIT) backend against the reference
 * kernels, over random shapes, strides, paddings, kernel sizes, channel-
 * prefix views (per-sample strides larger than packed), densities from
 * empty to full and both mask granularities. Compared by normalised error;
 * exact where the semantics are exact (dx accumulates, masked dw is 0).
 * Every case runs three times: with the backend's measured dense
 * threshold, and forced onto the JIT kernels and onto OpenBLAS; the cases
 * alternate between kernels of 8 and of 16 lanes, and at 16 between conv
 * forwards unrolled and gathered; full layers run on the 16-lane kernels'
 * row blocks.
 * The same cases for the blas backend (phase II's), and that it follows
 * masks changed after prepare, as phase II changes them. */
#include "backend_cases.h"
#include "kgen/sparse.h"
#include "runtime/cpu/cpu.h"

static const double densities[] = {0.0, 0.01, 0.1, 0.5, 1.0};
enum { ND = sizeof densities / sizeof densities[0] };

/* The dense threshold of the run: < 0 the backend's own, 0 all dense, 2
 * none dense. */
static double force_thr = -1;

static void force(rt_kernels *b) {
  static int calls;
  if (force_thr >= 0) rt_cpu_set_dense_threshold(b, force_thr, force_thr);
  /* every other case as exec sets it up for calls of up to 32 samples:
   * linear kernels of half the lanes (the cases still pass more) */
  b->chunk = ++calls % 2 ? 32 : 0;
  /* and kernels of both vector widths, whatever the host's default */
  CHECK(rt_cpu_set_lanes(b, calls / 2 % 2 ? 16 : 8) == 0, "set lanes");
  CHECK(rt_cpu_set_lanes(b, 12) == -1, "12 lanes accepted");
  CHECK(rt_cpu_set_lanes(b, calls / 2 % 2 ? 16 : 8) == 0 && rt_cpu_lanes(b) == (calls / 2 % 2 ? 16 : 8),
        "lanes not kept");
  /* and, at 16 lanes, conv forwards unrolled and not (four cases one
   * way, four the other) */
  rt_cpu_set_unroll(b, calls / 4 % 2 == 0);
}

static void check_path(rt_kernels *b, int layer, const char *what) {
  if (force_thr < 0) return;
  CHECK(rt_cpu_layer_dense(b, layer) == (force_thr == 0), "%s: forced path not taken", what);
}

static const bc_hooks cpu = {"cpu", force, check_path};

/* 16-lane JIT kernels: the gather kernels' row blocks (rows of equal
 * patterns, 4 at a time) are generated there. */
static void force_blocks(rt_kernels *b) {
  rt_cpu_set_dense_threshold(b, 2.0, 2.0);
  CHECK(rt_cpu_set_lanes(b, 16) == 0, "set lanes");
}
static const bc_hooks cpu16 = {"cpu", force_blocks, NULL};
static const bc_hooks blas = {"blas", NULL, NULL};

/* The empty layer must still overwrite y with the bias and dw with 0, and
 * leave dx as it was; the full layer is the dense computation. */
static void edge_cases(const bc_hooks *h) {
  bc_conv_case(h, 3, 5, 5, 4, 3, 1, 1, 2, 0.0, 0, 1);
  bc_conv_case(h, 3, 5, 5, 4, 3, 1, 1, 2, 1.0, 0, 1);
  bc_conv_case(h, 2, 3, 3, 2, 5, 1, 2, 1, 1.0, 0, 1);  /* kernel larger than the image */
  bc_conv_case(h, 1, 1, 1, 1, 1, 1, 0, 1, 1.0, 0, 0);  /* one pixel */
  bc_conv_case(h, 4, 7, 6, 3, 3, 2, 0, 3, 0.5, 1, 0);  /* stride 2, no padding, odd sizes */
  bc_conv_case(h, 3, 6, 9, 4, 5, 1, 2, 2, 0.5, 0, 1);  /* rows sharing 2 padding columns */
  bc_conv_case(h, 2, 4, 5, 3, 1, 1, 1, 2, 0.5, 0, 1);  /* padding past the kernel's reach */
  bc_conv_case(h, 3, 8, 6, 4, 3, 1, 1, 3, 0.5, 0, 1);  /* even planes: through a max pool */
  bc_linear_case(h, 7, 5, 1, 0.0, 1);
  bc_linear_case(h, 7, 5, 33, 1.0, 1);
  bc_linear_case(h, 1, 1, 1, 1.0, 0);
  bc_linear_case(h, 6, 1100, 140, 0.3, 1); /* the fused bwd's output slices, several blocks */
  bc_linear_case(h, 2, 70000, 5, 0.05, 1); /* outputs past 16-bit offsets */
  bc_linear_case(h, 600, 7, 40, 0.2, 1);   /* the forward's input slices (32 KB of lanes) */
  bc_linear_case(h, 600, 7, 100, 0.2, 0);
}

/* Full layers, whose rows all share one pattern: the forward's output
 * rows and the backward's input phase planes in blocks of 4, with runs of
 * 3 and 5 taps, at strides 1 and 2, and a row count that leaves no
 * blocks (6 outputs, 3 inputs). */
static void row_block_cases(void) {
  bc_conv_case(&cpu16, 4, 9, 7, 8, 3, 1, 1, 2, 1.0, 0, 1);
  bc_conv_case(&cpu16, 2, 9, 9, 4, 3, 2, 1, 3, 1.0, 1, 1);
  bc_conv_case(&cpu16, 4, 12, 11, 4, 5, 1, 2, 2, 1.0, 0, 0);
  bc_conv_case(&cpu16, 4, 10, 10, 8, 1, 1, 0, 2, 1.0, 0, 1);
  bc_conv_case(&cpu16, 8, 28, 28, 12, 3, 1, 1, 2, 1.0, 1, 1);
  bc_conv_case(&cpu16, 3, 8, 8, 6, 3, 1, 1, 2, 1.0, 0, 1);
}

/* Masks flipped after prepare, and garbage under clear bits: the blas
 * backend must compute what the reference computes with the new masks. */
static void live_masks(void) {
  char err[256];
  for (int kind = 0; kind < 2; kind++) {
    int conv = kind == 0, cin = conv ? 3 : 20, cout = conv ? 4 : 9, k = conv ? 3 : 1, n = 3;
    ir_graph *g = jt_graph(conv ? IR_CONV : IR_LINEAR, cin, conv ? 6 : 1, conv ? 6 : 1, cout, k,
                           1, conv ? 1 : 0);
    rt_kernels *b = rt_kernels_new("blas", g, err, sizeof err);
    CHECK(b, "blas: %s", err);
    if (!b) continue;
    size_t nw = (size_t)cout * cin * k * k;
    uint8_t *wm = jt_mask(nw, 1, 0.3), *bm = jt_mask((size_t)cout, 1, 0.5);
    CHECK(b->prepare(b, 0, wm, bm, err, sizeof err) == 0, "prepare: %s", err);
    for (size_t i = 0; i < nw; i++) wm[i] ^= jt_int(0, 3) == 0; /* after prepare */
    for (int i = 0; i < cout; i++) bm[i] ^= 1;
    float *w = jt_randf(nw), *bias = jt_randf((size_t)cout); /* nonzero under clear bits too */
    rt_conv_shape cs = {.n = n, .cin = cin, .h = 6, .w = 6, .cout = cout, .k = 3, .stride = 1,
                        .pad = 1};
    rt_conv_shape_finish(&cs);
    rt_linear_shape ls = {.n = n, .in = cin, .out = cout};
    size_t nx = conv ? (size_t)n * cs.x_ns : (size_t)n * cin;
    size_t ny = conv ? (size_t)n * cs.y_ns : (size_t)n * cout;
    float *x = jt_randf(nx), *dy = jt_randf(ny), *y0 = jt_randf(ny), *y1 = jt_randf(ny);
    float *dw0 = jt_randf(nw), *dw1 = jt_randf(nw), *db0 = jt_randf(cout), *db1 = jt_randf(cout);
    if (conv) {
      rt_ref_conv_fwd(&cs, x, w, bias, wm, bm, y0);
      b->conv_fwd(b, 0, &cs, x, w, bias, y1);
      rt_ref_conv_bwd_weight(&cs, x, dy, wm, bm, dw0, db0);
      b->conv_bwd_weight(b, 0, &cs, x, dy, dw1, db1);
    } else {
      rt_ref_linear_fwd(&ls, x, w, bias, wm, bm, y0);
      b->linear_fwd(b, 0, &ls, x, w, bias, y1);
      rt_ref_linear_bwd_weight(&ls, x, dy, wm, bm, dw0, db0);
      b->linear_bwd_weight(b, 0, &ls, x, dy, dw1, db1);
    }
    double e = jt_nerr(y1, y0, ny);
    CHECK(e <= BC_TOL, "blas %s with masks changed after prepare: fwd error %g",
          conv ? "conv" : "linear", e);
    bc_check_wgrad(conv ? "blas conv, live masks" : "blas linear, live masks", dw0, dw1, wm, nw,
                   db0, db1, bm, (size_t)cout);
    b->free(b);
    jt_graph_free(g);
    free(wm), free(bm), free(w), free(bias), free(x), free(dy), free(y0), free(y1);
    free(dw0), free(dw1), free(db0), free(db1);
  }
}

static void random_cases(const bc_hooks *hk, int nconv, int nlin) {
  static const int ks[] = {1, 3, 5};
  for (int c = 0; c < nconv; c++) {
    int k = ks[jt_int(0, 2)], pad = jt_int(0, 2), stride = jt_int(1, 2);
    int h = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12), w = jt_int(k > 2 * pad ? k - 2 * pad : 1, 12);
    bc_conv_case(hk, jt_int(1, 6), h, w, jt_int(1, 6), k, stride, pad, jt_int(1, 4),
              densities[c % ND], jt_int(0, 1), jt_int(0, 3) != 0);
  }
  for (int c = 0; c < nlin; c++)
    bc_linear_case(hk, jt_int(1, 70), jt_int(1, 40), jt_int(1, 70), densities[c % ND], jt_int(0, 3) != 0);
}

/* Which layers the forward takes 4 rows at a time (what the backend's
 * dense threshold counts on): every block of 4 output channels with one
 * pattern, at 16 lanes, a full layer or not. The others' backward is the
 * fused kernel, at stride 1 (the cases above check its results, at both
 * lane counts). */
static void row_block_rule(void) {
  enum { CIN = 3, COUT = 8, K = 3, KK = K * K };
  uint8_t wm[COUT * CIN * KK];
  cg_conv_desc d = {CIN, 9, 9, COUT, K, 1, 1, NULL, NULL, 16, 0};
  CHECK(cg_sparse_conv_row_block(&d) == 4, "full layer: no row blocks");
  d.vw = 8;
  CHECK(cg_sparse_conv_row_block(&d) == 1, "row blocks at 8 lanes");
  d.vw = 16, d.cout = 6;
  CHECK(cg_sparse_conv_row_block(&d) == 1, "row blocks over 6 outputs");
  d.cout = COUT, d.wm = wm;
  for (int co = 0; co < COUT; co++) /* one kernel pattern a block of 4 */
    for (int i = 0; i < CIN * KK; i++) wm[co * CIN * KK + i] = (uint8_t)((i / KK + co / 4) % 2);
  CHECK(cg_sparse_conv_row_block(&d) == 4, "blocks of one pattern: no row blocks");
  wm[5 * CIN * KK + 4] ^= 1; /* one weight of the second block's second row */
  CHECK(cg_sparse_conv_row_block(&d) == 1, "row blocks over rows of different patterns");
#define FUSABLE(d) cg_sparse_conv_fusable(&d, cg_sparse_conv_row_block(&d))
  CHECK(FUSABLE(d), "partial layer at 16 lanes: no fused backward");
  d.vw = 8;
  CHECK(FUSABLE(d), "partial layer at 8 lanes: no fused backward");
  d.vw = 16, d.stride = 2;
  CHECK(!FUSABLE(d), "fused backward at stride 2");
  d.stride = 1, d.wm = NULL;
  CHECK(!FUSABLE(d), "fused backward of a full layer (row blocks)");
  d.k = 40;
  CHECK(cg_sparse_conv_row_block(&d) == -1, "a kernel of 40 accepted");
  CHECK(!FUSABLE(d), "fused backward of a kernel of 40");
#undef FUSABLE
}

int main(int argc, char **argv) {
  /* Each sparse case compiles a module; more cases are a flag away. */
  int nconv = argc > 1 ? atoi(argv[1]) : 20;
  static const double thr[] = {-1, 2.0, 0.0};
  for (int i = 0; i < 3; i++) {
    force_thr = thr[i];
    edge_cases(&cpu);
    random_cases(&cpu, nconv, 2 * nconv);
  }
  row_block_cases();
  row_block_rule();
  edge_cases(&blas);
  random_cases(&blas, nconv, 2 * nconv);
  live_masks();
  if (failures) fprintf(stderr, "test_jit_ops: %d failures\n", failures);
  else printf("test_jit_ops: ok\n");
  return failures != 0;
}
