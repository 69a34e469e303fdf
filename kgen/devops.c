/* devops.c: the device step's elementwise, normalisation, pooling, loss
 * and SGD kernels, and phase II's (see devops.h).
 *
 * One thread per output element where outputs are independent; one per
 * channel for batch norm, whose sums run in the thread (in double, as the
 * reference), so that no kernel needs shared memory and every result is
 * the same bits on every run. The atomics are phase II's counts (COUNT,
 * EMIT): integers, exact in any order; EMIT's records come in any order,
 * which the step sorts. exp and log are written here (in
 * double, to about 1e-13) rather than called: NVPTX has no libm, and the
 * loss kernel is tiny. */
#include "kgen/devops.h"


#include "kgen/kit.h"

/* A kernel whose threads past per * n + fixed return at once; the
 * thread's global index. */
static LLVMValueRef begin(kg_kit *p, LLVMModuleRef m, const char *name, int64_t per, int64_t fixed) {
  kg_begin(p, m, name, NULL);
  p->inbounds = 1;
  LLVMValueRef md[3] = {p->fn, LLVMMDStringInContext(p->ctx, "kernel", 6), LLVMConstInt(p->i32, 1, 0)};
  LLVMAddNamedMetadataOperand(m, "nvvm.annotations", LLVMMDNodeInContext(p->ctx, md, 3));
  LLVMValueRef gid = LLVMBuildAdd(p->b, LLVMBuildMul(p->b, kg_sreg(p, "ctaid.x"), kg_sreg(p, "ntid.x"), ""),
                                  kg_sreg(p, "tid.x"), "gid");
  LLVMValueRef total = kg_add(p, kg_mul(p, p->n, kg_c64(p, per)), kg_c64(p, fixed));
  LLVMBasicBlockRef work = kg_block(p, "work"), done = kg_block(p, "out");
  LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntULT, gid, total, ""), work, done);
  LLVMPositionBuilderAtEnd(p->b, done);
  LLVMBuildRetVoid(p->b);
  LLVMPositionBuilderAtEnd(p->b, work);
  return gid;
}

static LLVMValueRef c64(kg_kit *p, int64_t v) { return kg_c64(p, v); }
static LLVMValueRef add(kg_kit *p, LLVMValueRef a, LLVMValueRef b) { return kg_add(p, a, b); }
static LLVMValueRef addc(kg_kit *p, LLVMValueRef a, int64_t c) { return kg_add(p, a, c64(p, c)); }
static LLVMValueRef mulc(kg_kit *p, LLVMValueRef a, int64_t c) { return kg_mul(p, a, c64(p, c)); }
static LLVMValueRef divc(kg_kit *p, LLVMValueRef a, int64_t c) { return LLVMBuildUDiv(p->b, a, c64(p, c), ""); }
static LLVMValueRef remc(kg_kit *p, LLVMValueRef a, int64_t c) { return LLVMBuildURem(p->b, a, c64(p, c), ""); }
static LLVMValueRef cf(kg_kit *p, double v) { return LLVMConstReal(p->f32, v); }
static LLVMValueRef cd(kg_kit *p, double v) { return LLVMConstReal(p->f64, v); }
static LLVMValueRef ext(kg_kit *p, LLVMValueRef f) { return LLVMBuildFPExt(p->b, f, p->f64, ""); }
static LLVMValueRef trunc32(kg_kit *p, LLVMValueRef d) { return LLVMBuildFPTrunc(p->b, d, p->f32, ""); }
static LLVMValueRef ld(kg_kit *p, LLVMValueRef base, LLVMValueRef i) { return kg_ldf(p, base, i); }
static void st(kg_kit *p, LLVMValueRef base, LLVMValueRef i, LLVMValueRef v) { LLVMBuildStore(p->b, v, kg_at(p, base, i)); }
static LLVMValueRef dptr(kg_kit *p, LLVMValueRef fptr) { return LLVMBuildBitCast(p->b, fptr, LLVMPointerType(p->f64, 0), ""); }
static LLVMValueRef dat(kg_kit *p, LLVMValueRef d, LLVMValueRef i) { return LLVMBuildInBoundsGEP2(p->b, p->f64, d, &i, 1, ""); }
static LLVMValueRef ldd(kg_kit *p, LLVMValueRef d, LLVMValueRef i) { return LLVMBuildLoad2(p->b, p->f64, dat(p, d, i), ""); }
static LLVMValueRef local(kg_kit *p, LLVMTypeRef t, LLVMValueRef init) {
  LLVMValueRef a = kg_local(p, t, "acc");
  LLVMBuildStore(p->b, init, a);
  return a;
}
static LLVMValueRef get(kg_kit *p, LLVMTypeRef t, LLVMValueRef a) { return LLVMBuildLoad2(p->b, t, a, ""); }
static LLVMValueRef fgt0(kg_kit *p, LLVMValueRef v) { return LLVMBuildFCmp(p->b, LLVMRealOGT, v, cf(p, 0), ""); }
static LLVMValueRef flag(kg_kit *p, LLVMValueRef v) { return LLVMBuildICmp(p->b, LLVMIntNE, v, c64(p, 0), ""); }

/* e^x for x <= 0 (the loss shifts by the maximum): 2^k e^r with
 * |r| <= ln2/2, e^r by its Taylor series to degree 12. */
static LLVMValueRef exp_neg(kg_kit *p, LLVMValueRef x) {
  LLVMBuilderRef b = p->b;
  x = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, cd(p, -708.0), ""), cd(p, -708.0), x, "");
  LLVMValueRef t = LLVMBuildFMul(b, x, cd(p, 1.4426950408889634), "");
  LLVMValueRef k = LLVMBuildFPToSI(b, LLVMBuildFSub(b, t, cd(p, 0.5), ""), p->i64, "");
  LLVMValueRef kf = LLVMBuildSIToFP(b, k, p->f64, "");
  LLVMValueRef r = LLVMBuildFSub(b, x, LLVMBuildFMul(b, kf, cd(p, 6.93147180369123816490e-01), ""), "");
  r = LLVMBuildFSub(b, r, LLVMBuildFMul(b, kf, cd(p, 1.90821492927058770002e-10), ""), "");
  LLVMValueRef s = cd(p, 1.0);
  for (int i = 12; i >= 1; i--) /* Horner: 1 + r (1 + r/2 (1 + r/3 ...)) */
    s = LLVMBuildFAdd(b, cd(p, 1.0), LLVMBuildFMul(b, LLVMBuildFMul(b, r, cd(p, 1.0 / i), ""), s, ""), "");
  LLVMValueRef bits = LLVMBuildShl(b, LLVMBuildAdd(b, k, c64(p, 1023), ""), c64(p, 52), "");
  return LLVMBuildFMul(b, s, LLVMBuildBitCast(b, bits, p->f64, ""), "");
}

/* log z for a normal z > 0: z = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh((m-1)/(m+1)) by its series to degree 17. */
static LLVMValueRef log_pos(kg_kit *p, LLVMValueRef z) {
  LLVMBuilderRef b = p->b;
  LLVMValueRef bits = LLVMBuildBitCast(b, z, p->i64, "");
  LLVMValueRef e = LLVMBuildSub(b, LLVMBuildLShr(b, bits, c64(p, 52), ""), c64(p, 1023), "");
  LLVMValueRef mb = LLVMBuildOr(b, LLVMBuildAnd(b, bits, c64(p, ((int64_t)1 << 52) - 1), ""),
                                c64(p, (int64_t)1023 << 52), "");
  LLVMValueRef m = LLVMBuildBitCast(b, mb, p->f64, "");
  LLVMValueRef big = LLVMBuildFCmp(b, LLVMRealOGT, m, cd(p, 1.4142135623730951), "");
  m = LLVMBuildSelect(b, big, LLVMBuildFMul(b, m, cd(p, 0.5), ""), m, "");
  e = LLVMBuildSelect(b, big, LLVMBuildAdd(b, e, c64(p, 1), ""), e, "");
  LLVMValueRef s = LLVMBuildFDiv(b, LLVMBuildFSub(b, m, cd(p, 1.0), ""), LLVMBuildFAdd(b, m, cd(p, 1.0), ""), "");
  LLVMValueRef s2 = LLVMBuildFMul(b, s, s, "");
  LLVMValueRef sum = cd(p, 1.0 / 17);
  for (int i = 15; i >= 1; i -= 2) sum = LLVMBuildFAdd(b, cd(p, 1.0 / i), LLVMBuildFMul(b, s2, sum, ""), "");
  LLVMValueRef lm = LLVMBuildFMul(b, LLVMBuildFMul(b, cd(p, 2.0), s, ""), sum, "");
  return LLVMBuildFAdd(b, LLVMBuildFMul(b, LLVMBuildSIToFP(b, e, p->f64, ""), cd(p, 0.69314718055994530942), ""),
                       lm, "");
}

/* (s, k): the sample and the index within its len floats. */
static void split(kg_kit *p, LLVMValueRef gid, int64_t len, LLVMValueRef *s, LLVMValueRef *k) {
  *s = divc(p, gid, len), *k = remc(p, gid, len);
}

static LLVMValueRef at(kg_kit *p, LLVMValueRef s, int64_t ns, int64_t off, LLVMValueRef k) {
  return add(p, add(p, mulc(p, s, ns), c64(p, off)), k);
}

static int gen_relu(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef s, k, gid = begin(p, m, name, d->len, 0);
  split(p, gid, d->len, &s, &k);
  LLVMValueRef v = ld(p, p->pa, at(p, s, d->ns, d->src, k));
  st(p, p->pa, at(p, s, d->ns, d->dst, k), LLVMBuildSelect(p->b, fgt0(p, v), v, cf(p, 0), ""));
  return kg_end(p);
}

static int gen_relu_mask(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef s, k, gid = begin(p, m, name, d->len, 0);
  split(p, gid, d->len, &s, &k);
  LLVMValueRef y = ld(p, p->pa, at(p, s, d->ns, d->y, k)), g = ld(p, p->pb, at(p, s, d->ns, d->dy, k));
  st(p, p->pb, at(p, s, d->ns, d->dst, k), LLVMBuildSelect(p->b, fgt0(p, y), g, cf(p, 0), ""));
  return kg_end(p);
}

static int gen_copy(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef s, k, gid = begin(p, m, name, d->len, 0);
  split(p, gid, d->len, &s, &k);
  LLVMValueRef v = ld(p, p->pa, at(p, s, d->ns, d->src, k)), o = at(p, s, d->ns, d->dst, k);
  if (d->add) v = LLVMBuildFAdd(p->b, ld(p, p->pa, o), v, "");
  st(p, p->pa, o, v);
  return kg_end(p);
}

/* Loops over the channel's n x hw values: body(s, i, user). */
typedef void (*chan_fn)(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u);

static void over_channel(kg_kit *p, const kd_desc *d, LLVMValueRef ch, int64_t xo, int64_t yo, chan_fn fn, void *u) {
  kg_loop ls, li;
  kg_loop_open(p, &ls, c64(p, 0), p->n, 1);
  kg_loop_open(p, &li, c64(p, 0), c64(p, d->hw), 1);
  LLVMValueRef k = add(p, mulc(p, ch, d->hw), li.iv);
  fn(p, d, at(p, ls.iv, d->ns, xo, k), at(p, ls.iv, d->ns, yo, k), u);
  kg_loop_close(p, &li);
  kg_loop_close(p, &ls);
}

typedef struct bn_ctx {
  LLVMValueRef sum, ss, mean, scale, shift;
} bn_ctx;

static void bn_sum(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  (void)d, (void)yi;
  bn_ctx *c = u;
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, c->sum), ext(p, ld(p, p->pa, xi)), ""), c->sum);
}

static void bn_ss(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  (void)d, (void)yi;
  bn_ctx *c = u;
  LLVMValueRef v = LLVMBuildFSub(p->b, ext(p, ld(p, p->pa, xi)), c->mean, "");
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, c->ss), LLVMBuildFMul(p->b, v, v, ""), ""), c->ss);
}

static void bn_out(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  bn_ctx *c = u;
  LLVMValueRef v = LLVMBuildFSub(p->b, ext(p, ld(p, p->pa, xi)), c->mean, "");
  v = trunc32(p, LLVMBuildFAdd(p->b, LLVMBuildFMul(p->b, v, c->scale, ""), c->shift, ""));
  if (d->relu) v = LLVMBuildSelect(p->b, fgt0(p, v), v, cf(p, 0), "");
  st(p, p->pa, yi, v);
}

static void bn_const(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  (void)d, (void)xi;
  st(p, p->pa, yi, *(LLVMValueRef *)u);
}

static LLVMValueRef sqrt_d(kg_kit *p, LLVMValueRef v) {
  LLVMTypeRef ft = LLVMFunctionType(p->f64, &p->f64, 1, 0);
  LLVMValueRef f = LLVMGetNamedFunction(p->m, "llvm.sqrt.f64");
  if (!f) f = LLVMAddFunction(p->m, "llvm.sqrt.f64", ft);
  return LLVMBuildCall2(p->b, ft, f, &v, 1, "");
}

static int gen_bn_fwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef ch = begin(p, m, name, 0, d->c);
  LLVMBuilderRef b = p->b;
  LLVMValueRef cnt = LLVMBuildFMul(b, LLVMBuildSIToFP(b, p->n, p->f64, ""), cd(p, (double)d->hw), "cnt");
  LLVMValueRef gi = addc(p, ch, d->p0), bi = addc(p, ch, d->p0 + d->c);
  LLVMValueRef mi = addc(p, ch, d->p1), vi = addc(p, ch, d->p1 + d->c);
  LLVMValueRef mean = local(p, p->f64, cd(p, 0)), invstd = local(p, p->f64, cd(p, 0));
  LLVMValueRef train = flag(p, p->a_ns);
  LLVMBasicBlockRef tb = kg_block(p, "train"), ib = kg_block(p, "infer"), jb = kg_block(p, "stats");
  LLVMBuildCondBr(b, train, tb, ib);
  /* training: the batch's statistics, saved, and the running ones moved */
  LLVMPositionBuilderAtEnd(b, tb);
  bn_ctx c = {local(p, p->f64, cd(p, 0)), local(p, p->f64, cd(p, 0)), NULL, NULL, NULL};
  over_channel(p, d, ch, d->src, d->src, bn_sum, &c);
  c.mean = LLVMBuildFDiv(b, get(p, p->f64, c.sum), cnt, "");
  over_channel(p, d, ch, d->src, d->src, bn_ss, &c);
  LLVMValueRef ss = get(p, p->f64, c.ss), var = LLVMBuildFDiv(b, ss, cnt, "");
  LLVMValueRef is = LLVMBuildFDiv(b, cd(p, 1.0), sqrt_d(p, LLVMBuildFAdd(b, var, cd(p, 1e-5), "")), "");
  LLVMValueRef dd = p->pd;
  st(p, dd, mi, trunc32(p, c.mean));
  st(p, dd, vi, trunc32(p, is));
  LLVMValueRef more = LLVMBuildFCmp(b, LLVMRealOGT, cnt, cd(p, 1.0), "");
  LLVMValueRef unb = LLVMBuildSelect(b, more, LLVMBuildFDiv(b, ss, LLVMBuildFSub(b, cnt, cd(p, 1.0), ""), ""), var, "");
  LLVMValueRef rm = ext(p, ld(p, p->pb, mi)), rv = ext(p, ld(p, p->pb, vi));
  st(p, p->pb, mi, trunc32(p, LLVMBuildFAdd(b, LLVMBuildFMul(b, cd(p, 1 - 0.1), rm, ""), LLVMBuildFMul(b, cd(p, 0.1), c.mean, ""), "")));
  st(p, p->pb, vi, trunc32(p, LLVMBuildFAdd(b, LLVMBuildFMul(b, cd(p, 1 - 0.1), rv, ""), LLVMBuildFMul(b, cd(p, 0.1), unb, ""), "")));
  LLVMBuildStore(b, c.mean, mean);
  LLVMBuildStore(b, is, invstd);
  LLVMBuildBr(b, jb);
  /* inference: the running statistics; a constant channel is beta */
  LLVMPositionBuilderAtEnd(b, ib);
  LLVMValueRef beta = ld(p, p->pc, bi);
  LLVMValueRef konst = LLVMBuildFCmp(b, LLVMRealONE, ld(p, p->pd, addc(p, ch, d->nstats + d->p1)), cf(p, 0), "");
  LLVMBasicBlockRef kb = kg_block(p, "const"), rb = kg_block(p, "running");
  LLVMBuildCondBr(b, konst, kb, rb);
  LLVMPositionBuilderAtEnd(b, kb);
  LLVMValueRef kv = d->relu ? LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, beta, cf(p, 0), ""), cf(p, 0), beta, "") : beta;
  over_channel(p, d, ch, d->src, d->dst, bn_const, &kv);
  LLVMBuildRetVoid(b);
  LLVMPositionBuilderAtEnd(b, rb);
  LLVMBuildStore(b, ext(p, ld(p, p->pb, mi)), mean);
  LLVMValueRef rvar = LLVMBuildFAdd(b, ext(p, ld(p, p->pb, vi)), cd(p, 1e-5), "");
  LLVMBuildStore(b, LLVMBuildFDiv(b, cd(p, 1.0), sqrt_d(p, rvar), ""), invstd);
  LLVMBuildBr(b, jb);
  /* y = (x - mean) gamma invstd + beta, in double */
  LLVMPositionBuilderAtEnd(b, jb);
  bn_ctx o = {NULL, NULL, get(p, p->f64, mean), NULL, ext(p, ld(p, p->pc, bi))};
  o.scale = LLVMBuildFMul(b, ext(p, ld(p, p->pc, gi)), get(p, p->f64, invstd), "");
  over_channel(p, d, ch, d->src, d->dst, bn_out, &o);
  return kg_end(p);
}

typedef struct bnb_ctx {
  LLVMValueRef mean, invstd, sdy, sdyxh, k, mdy, mdyxh;
} bnb_ctx;

/* dy at xi's sample (the same offset scheme: xi indexes x, yi y and dy) */
static LLVMValueRef bnb_dy(kg_kit *p, const kd_desc *d, LLVMValueRef yi) {
  LLVMValueRef g = ld(p, p->pb, add(p, yi, c64(p, d->dy - d->y)));
  if (d->relu) g = LLVMBuildSelect(p->b, fgt0(p, ld(p, p->pa, yi)), g, cf(p, 0), "");
  return g;
}

static LLVMValueRef bnb_xh(kg_kit *p, bnb_ctx *c, LLVMValueRef xi) {
  return LLVMBuildFMul(p->b, LLVMBuildFSub(p->b, ext(p, ld(p, p->pa, xi)), c->mean, ""), c->invstd, "");
}

static void bnb_sums(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  bnb_ctx *c = u;
  LLVMValueRef g = ext(p, bnb_dy(p, d, yi));
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, c->sdy), g, ""), c->sdy);
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, c->sdyxh), LLVMBuildFMul(p->b, g, bnb_xh(p, c, xi), ""), ""),
                 c->sdyxh);
}

static void bnb_dx(kg_kit *p, const kd_desc *d, LLVMValueRef xi, LLVMValueRef yi, void *u) {
  bnb_ctx *c = u;
  LLVMBuilderRef b = p->b;
  LLVMValueRef g = ext(p, bnb_dy(p, d, yi));
  LLVMValueRef v = LLVMBuildFSub(b, LLVMBuildFSub(b, g, c->mdy, ""), LLVMBuildFMul(b, bnb_xh(p, c, xi), c->mdyxh, ""), "");
  v = trunc32(p, LLVMBuildFMul(b, c->k, v, ""));
  /* dx sits at x's offset in dact shifted to dst */
  LLVMValueRef o = add(p, xi, c64(p, d->dst - d->src));
  if (!d->assign) v = LLVMBuildFAdd(b, ld(p, p->pb, o), v, "");
  st(p, p->pb, o, v);
}

static int gen_bn_bwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef ch = begin(p, m, name, 0, d->c);
  LLVMBuilderRef b = p->b;
  LLVMValueRef cnt = LLVMBuildFMul(b, LLVMBuildSIToFP(b, p->n, p->f64, ""), cd(p, (double)d->hw), "cnt");
  bnb_ctx c = {ext(p, ld(p, p->pd, addc(p, ch, d->p1))), ext(p, ld(p, p->pd, addc(p, ch, d->p1 + d->c))),
               local(p, p->f64, cd(p, 0)), local(p, p->f64, cd(p, 0)), NULL, NULL, NULL};
  over_channel(p, d, ch, d->src, d->y, bnb_sums, &c);
  LLVMValueRef sdy = get(p, p->f64, c.sdy), sdyxh = get(p, p->f64, c.sdyxh);
  st(p, p->pc, addc(p, ch, d->np + d->p0 + d->c), trunc32(p, sdy));
  st(p, p->pc, addc(p, ch, d->np + d->p0), trunc32(p, sdyxh));
  c.k = LLVMBuildFMul(b, ext(p, ld(p, p->pc, addc(p, ch, d->p0))), c.invstd, "");
  c.mdy = LLVMBuildFDiv(b, sdy, cnt, ""), c.mdyxh = LLVMBuildFDiv(b, sdyxh, cnt, "");
  over_channel(p, d, ch, d->src, d->y, bnb_dx, &c);
  return kg_end(p);
}

/* Loops over channel ch's n x hw values: the sample and the index in its
 * c x hw values (close with rv_close). */
static void rv_open(kg_kit *p, const kd_desc *d, LLVMValueRef ch, kg_loop *ls, kg_loop *li, LLVMValueRef *s,
                    LLVMValueRef *k) {
  kg_loop_open(p, ls, c64(p, 0), p->n, 1);
  kg_loop_open(p, li, c64(p, 0), c64(p, d->hw), 1);
  *s = ls->iv, *k = add(p, mulc(p, ch, d->hw), li->iv);
}

static void rv_close(kg_kit *p, kg_loop *ls, kg_loop *li) {
  kg_loop_close(p, li);
  kg_loop_close(p, ls);
}

static void acc_add(kg_kit *p, LLVMValueRef acc, LLVMValueRef v) {
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, acc), v, ""), acc);
}

/* A dead layer's gradient at its pre-activation, were it revived as the
 * identity (host.c: host_dense_grad), in host.c's order and precision. */
static int gen_revive(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef ch = begin(p, m, name, 0, d->c);
  LLVMBuilderRef b = p->b;
  const int64_t len = d->c * d->hw;
  LLVMValueRef cnt = LLVMBuildFMul(b, LLVMBuildSIToFP(b, p->n, p->f64, ""), cd(p, (double)d->hw), "cnt");
  LLVMValueRef sum = local(p, p->f64, cd(p, 0)), ss = local(p, p->f64, cd(p, 0));
  LLVMValueRef sd = local(p, p->f64, cd(p, 0)), sdx = local(p, p->f64, cd(p, 0));
  LLVMValueRef mean = cd(p, 0), inv = cd(p, 0), s, k;
  kg_loop ls, li;
  if (d->norm) { /* the batch's statistics of the output */
    rv_open(p, d, ch, &ls, &li, &s, &k);
    acc_add(p, sum, ext(p, ld(p, p->pa, at(p, s, d->ns, d->y, k))));
    rv_close(p, &ls, &li);
    mean = LLVMBuildFDiv(b, get(p, p->f64, sum), cnt, "mean");
    rv_open(p, d, ch, &ls, &li, &s, &k);
    LLVMValueRef v = LLVMBuildFSub(b, ext(p, ld(p, p->pa, at(p, s, d->ns, d->y, k))), mean, "");
    acc_add(p, ss, LLVMBuildFMul(b, v, v, ""));
    rv_close(p, &ls, &li);
    LLVMValueRef var = LLVMBuildFDiv(b, get(p, p->f64, ss), cnt, "");
    inv = LLVMBuildFDiv(b, cd(p, 1.0), sqrt_d(p, LLVMBuildFAdd(b, var, cd(p, 1e-5), "")), "inv");
  }
  /* dy where the output is positive (everywhere with relu clear) */
  rv_open(p, d, ch, &ls, &li, &s, &k);
  LLVMValueRef y = ld(p, p->pa, at(p, s, d->ns, d->y, k)), g = ld(p, p->pb, at(p, s, d->ns, d->dy, k));
  if (d->relu) g = LLVMBuildSelect(b, fgt0(p, y), g, cf(p, 0), "");
  st(p, p->pc, add(p, mulc(p, s, len), k), g);
  if (d->norm) {
    LLVMValueRef xh = LLVMBuildFMul(b, LLVMBuildFSub(b, ext(p, y), mean, ""), inv, "");
    acc_add(p, sd, ext(p, g));
    acc_add(p, sdx, LLVMBuildFMul(b, ext(p, g), xh, ""));
  }
  rv_close(p, &ls, &li);
  if (d->norm) { /* in training, the batch norm's backward takes out the mean and the part along x^ */
    LLVMBasicBlockRef join = kg_if_begin(p, flag(p, p->a_ns));
    LLVMValueRef msd = LLVMBuildFDiv(b, get(p, p->f64, sd), cnt, "");
    LLVMValueRef msdx = LLVMBuildFDiv(b, get(p, p->f64, sdx), cnt, "");
    rv_open(p, d, ch, &ls, &li, &s, &k);
    LLVMValueRef xh = LLVMBuildFMul(b, LLVMBuildFSub(b, ext(p, ld(p, p->pa, at(p, s, d->ns, d->y, k))), mean, ""), inv, "");
    LLVMValueRef o = add(p, mulc(p, s, len), k);
    LLVMValueRef v = LLVMBuildFSub(b, LLVMBuildFSub(b, ext(p, ld(p, p->pc, o)), msd, ""), LLVMBuildFMul(b, xh, msdx, ""), "");
    st(p, p->pc, o, trunc32(p, v));
    rv_close(p, &ls, &li);
    kg_if_end(p, join);
  }
  return kg_end(p);
}

/* The statistics a layer that comes alive takes its batch norm from
 * (the device step's channel_stats): the mean, the biased variance and
 * the least value of each channel of the output, sums in double, samples
 * then pixels, as the host computes them. */
static int gen_cstats(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef ch = begin(p, m, name, 0, d->c);
  LLVMBuilderRef b = p->b;
  LLVMValueRef cnt = LLVMBuildFMul(b, LLVMBuildSIToFP(b, p->n, p->f64, ""), cd(p, (double)d->hw), "cnt");
  LLVMValueRef sum = local(p, p->f64, cd(p, 0)), ss = local(p, p->f64, cd(p, 0));
  LLVMValueRef lo = local(p, p->f32, ld(p, p->pa, at(p, c64(p, 0), d->ns, d->y, mulc(p, ch, d->hw))));
  LLVMValueRef s, k;
  kg_loop ls, li;
  rv_open(p, d, ch, &ls, &li, &s, &k);
  LLVMValueRef v = ld(p, p->pa, at(p, s, d->ns, d->y, k)), l = get(p, p->f32, lo);
  acc_add(p, sum, ext(p, v));
  LLVMBuildStore(b, LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v, l, ""), v, l, ""), lo);
  rv_close(p, &ls, &li);
  LLVMValueRef mean = LLVMBuildFDiv(b, get(p, p->f64, sum), cnt, "mean");
  rv_open(p, d, ch, &ls, &li, &s, &k);
  LLVMValueRef e = LLVMBuildFSub(b, ext(p, ld(p, p->pa, at(p, s, d->ns, d->y, k))), mean, "");
  acc_add(p, ss, LLVMBuildFMul(b, e, e, ""));
  rv_close(p, &ls, &li);
  LLVMValueRef out = dptr(p, p->pd), i = mulc(p, ch, 3);
  LLVMBuildStore(b, mean, dat(p, out, i));
  LLVMBuildStore(b, LLVMBuildFDiv(b, get(p, p->f64, ss), cnt, ""), dat(p, out, addc(p, i, 1)));
  LLVMBuildStore(b, ext(p, get(p, p->f32, lo)), dat(p, out, addc(p, i, 2)));
  return kg_end(p);
}

/* The first maximum of window (oy, ox) of the plane at base: its index
 * in the plane. */
static LLVMValueRef window_arg(kg_kit *p, const kd_desc *d, LLVMValueRef base, LLVMValueRef oy, LLVMValueRef ox) {
  LLVMValueRef best = local(p, p->i64, add(p, mulc(p, mulc(p, oy, d->f), d->w), mulc(p, ox, d->f)));
  for (int64_t dy = 0; dy < d->f; dy++)
    for (int64_t dx = 0; dx < d->f; dx++) {
      if (dy == 0 && dx == 0) continue;
      LLVMValueRef i = add(p, mulc(p, addc(p, mulc(p, oy, d->f), dy), d->w), addc(p, mulc(p, ox, d->f), dx));
      LLVMValueRef bi = get(p, p->i64, best);
      LLVMValueRef gt = LLVMBuildFCmp(p->b, LLVMRealOGT, ld(p, base, i), ld(p, base, bi), "");
      LLVMBuildStore(p->b, LLVMBuildSelect(p->b, gt, i, bi, ""), best);
    }
  return get(p, p->i64, best);
}

static LLVMValueRef plane_base(kg_kit *p, LLVMValueRef buf, LLVMValueRef s, const kd_desc *d, int64_t off,
                               LLVMValueRef ch, int64_t plane) {
  return kg_at(p, buf, add(p, add(p, mulc(p, s, d->ns), c64(p, off)), mulc(p, ch, plane)));
}

static int gen_pool_fwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  int64_t oh = d->h / d->f, ow = d->w / d->f, per = d->c * oh * ow;
  if (per <= 0) return -1;
  LLVMValueRef s, r, gid = begin(p, m, name, per, 0);
  split(p, gid, per, &s, &r);
  LLVMValueRef ch = divc(p, r, oh * ow), q = remc(p, r, oh * ow);
  LLVMValueRef xb = plane_base(p, p->pa, s, d, d->src, ch, d->h * d->w);
  LLVMValueRef v = ld(p, xb, window_arg(p, d, xb, divc(p, q, ow), remc(p, q, ow)));
  st(p, plane_base(p, p->pa, s, d, d->dst, ch, oh * ow), q, v);
  return kg_end(p);
}

static int gen_pool_bwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  int64_t oh = d->h / d->f, ow = d->w / d->f, hw = d->h * d->w, per = d->c * hw;
  if (per <= 0) return -1;
  LLVMValueRef s, r, gid = begin(p, m, name, per, 0);
  split(p, gid, per, &s, &r);
  LLVMBuilderRef b = p->b;
  LLVMValueRef ch = divc(p, r, hw), q = remc(p, r, hw);
  LLVMValueRef oy = divc(p, divc(p, q, d->w), d->f), ox = divc(p, remc(p, q, d->w), d->f);
  LLVMValueRef dxb = plane_base(p, p->pb, s, d, d->src, ch, hw);
  LLVMValueRef val = local(p, p->f32, cf(p, 0)), hit = local(p, LLVMInt1TypeInContext(p->ctx), LLVMConstInt(LLVMInt1TypeInContext(p->ctx), 0, 0));
  LLVMValueRef inw = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntULT, oy, c64(p, oh), ""),
                                  LLVMBuildICmp(b, LLVMIntULT, ox, c64(p, ow), ""), "");
  LLVMBasicBlockRef join = kg_if_begin(p, inw);
  LLVMValueRef xb = plane_base(p, p->pa, s, d, d->src, ch, hw);
  LLVMValueRef is = LLVMBuildICmp(b, LLVMIntEQ, window_arg(p, d, xb, oy, ox), q, "");
  LLVMValueRef g = ld(p, plane_base(p, p->pb, s, d, d->dst, ch, oh * ow), add(p, mulc(p, oy, ow), ox));
  LLVMBuildStore(b, LLVMBuildSelect(b, is, g, cf(p, 0), ""), val);
  LLVMBuildStore(b, is, hit);
  kg_if_end(p, join);
  if (d->assign) {
    st(p, dxb, q, get(p, p->f32, val));
  } else {
    LLVMBasicBlockRef j2 = kg_if_begin(p, get(p, LLVMInt1TypeInContext(p->ctx), hit));
    st(p, dxb, q, LLVMBuildFAdd(b, ld(p, dxb, q), get(p, p->f32, val), ""));
    kg_if_end(p, j2);
  }
  return kg_end(p);
}

static int gen_gap_fwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef s, ch, gid = begin(p, m, name, d->c, 0);
  split(p, gid, d->c, &s, &ch);
  LLVMValueRef xb = plane_base(p, p->pa, s, d, d->src, ch, d->hw);
  LLVMValueRef sum = local(p, p->f64, cd(p, 0));
  kg_loop l;
  kg_loop_open(p, &l, c64(p, 0), c64(p, d->hw), 1);
  LLVMBuildStore(p->b, LLVMBuildFAdd(p->b, get(p, p->f64, sum), ext(p, ld(p, xb, l.iv)), ""), sum);
  kg_loop_close(p, &l);
  st(p, p->pa, at(p, s, d->ns, d->dst, ch), trunc32(p, LLVMBuildFDiv(p->b, get(p, p->f64, sum), cd(p, (double)d->hw), "")));
  return kg_end(p);
}

static int gen_gap_bwd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  int64_t per = d->c * d->hw;
  LLVMValueRef s, r, gid = begin(p, m, name, per, 0);
  split(p, gid, per, &s, &r);
  LLVMValueRef g = LLVMBuildFDiv(p->b, ld(p, p->pa, at(p, s, d->ns, d->dst, divc(p, r, d->hw))), cf(p, (double)d->hw), "");
  LLVMValueRef o = at(p, s, d->ns, d->src, r);
  st(p, p->pa, o, LLVMBuildFAdd(p->b, ld(p, p->pa, o), g, ""));
  return kg_end(p);
}

static int gen_loss(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  if (d->c < 1) return -1;
  LLVMValueRef s = begin(p, m, name, 1, 0);
  LLVMBuilderRef b = p->b;
  LLVMValueRef base = kg_at(p, p->pa, at(p, s, d->ns, d->src, c64(p, 0)));
  /* the label: an ir_label (16 bits) */
  LLVMValueRef y = LLVMBuildZExt(b, LLVMBuildLoad2(b, p->i16, LLVMBuildInBoundsGEP2(b, p->i16,
                                 LLVMBuildBitCast(b, p->pc, LLVMPointerType(p->i16, 0), ""), &s, 1, ""), ""), p->i64, "y");
  LLVMValueRef arg = local(p, p->i64, c64(p, 0));
  kg_loop l;
  kg_loop_open(p, &l, c64(p, 1), c64(p, d->c), 1);
  LLVMValueRef ai = get(p, p->i64, arg);
  LLVMValueRef gt = LLVMBuildFCmp(b, LLVMRealOGT, ld(p, base, l.iv), ld(p, base, ai), "");
  LLVMBuildStore(b, LLVMBuildSelect(b, gt, l.iv, ai, ""), arg);
  kg_loop_close(p, &l);
  LLVMValueRef am = get(p, p->i64, arg), mx = ext(p, ld(p, base, am));
  LLVMValueRef z = local(p, p->f64, cd(p, 0));
  kg_loop_open(p, &l, c64(p, 0), c64(p, d->c), 1);
  LLVMValueRef e = exp_neg(p, LLVMBuildFSub(b, ext(p, ld(p, base, l.iv)), mx, ""));
  LLVMBuildStore(b, LLVMBuildFAdd(b, get(p, p->f64, z), e, ""), z);
  kg_loop_close(p, &l);
  LLVMValueRef zs = get(p, p->f64, z);
  LLVMValueRef loss = LLVMBuildFSub(b, log_pos(p, zs), LLVMBuildFSub(b, ext(p, ld(p, base, y)), mx, ""), "");
  LLVMValueRef out = dptr(p, p->pd);
  LLVMBuildStore(b, loss, dat(p, out, mulc(p, s, 2)));
  LLVMBuildStore(b, LLVMBuildUIToFP(b, LLVMBuildICmp(b, LLVMIntEQ, am, y, ""), p->f64, ""), dat(p, out, addc(p, mulc(p, s, 2), 1)));
  LLVMBasicBlockRef join = kg_if_begin(p, flag(p, p->a_ns));
  LLVMValueRef dbase = kg_at(p, p->pb, at(p, s, d->ns, d->src, c64(p, 0)));
  LLVMValueRef nf = LLVMBuildSIToFP(b, p->n, p->f64, "");
  kg_loop_open(p, &l, c64(p, 0), c64(p, d->c), 1);
  LLVMValueRef pj = LLVMBuildFDiv(b, exp_neg(p, LLVMBuildFSub(b, ext(p, ld(p, base, l.iv)), mx, "")), zs, "");
  LLVMValueRef one = LLVMBuildUIToFP(b, LLVMBuildICmp(b, LLVMIntEQ, l.iv, y, ""), p->f64, "");
  st(p, dbase, l.iv, trunc32(p, LLVMBuildFDiv(b, LLVMBuildFSub(b, pj, one, ""), nf, "")));
  kg_loop_close(p, &l);
  kg_if_end(p, join);
  return kg_end(p);
}

static int gen_loss_sum(kg_kit *p, LLVMModuleRef m, const char *name) {
  begin(p, m, name, 0, 1);
  LLVMBuilderRef b = p->b;
  LLVMValueRef in = dptr(p, p->pa), out = dptr(p, p->pd);
  LLVMValueRef sum = local(p, p->f64, cd(p, 0)), hits = local(p, p->f64, cd(p, 0));
  kg_loop l;
  kg_loop_open(p, &l, c64(p, 0), p->n, 1);
  LLVMBuildStore(b, LLVMBuildFAdd(b, get(p, p->f64, sum), ldd(p, in, mulc(p, l.iv, 2)), ""), sum);
  LLVMBuildStore(b, LLVMBuildFAdd(b, get(p, p->f64, hits), ldd(p, in, addc(p, mulc(p, l.iv, 2), 1)), ""), hits);
  kg_loop_close(p, &l);
  LLVMValueRef nf = LLVMBuildSIToFP(b, p->n, p->f64, "");
  LLVMBuildStore(b, LLVMBuildFDiv(b, get(p, p->f64, sum), nf, ""), dat(p, out, c64(p, 0)));
  LLVMBuildStore(b, get(p, p->f64, hits), dat(p, out, c64(p, 1)));
  return kg_end(p);
}

static int gen_sgd(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef i = begin(p, m, name, 0, d->np);
  LLVMBuilderRef b = p->b;
  LLVMValueRef on = LLVMBuildFCmp(b, LLVMRealONE, ld(p, p->pa, addc(p, i, 3 * d->np)), cf(p, 0), "");
  LLVMBasicBlockRef join = kg_if_begin(p, on);
  LLVMValueRef lr = ld(p, p->pb, c64(p, 4)), mo = ld(p, p->pb, c64(p, 5)), dc = ld(p, p->pb, c64(p, 6));
  LLVMValueRef w = ld(p, p->pa, i), g = ld(p, p->pa, addc(p, i, d->np)), vi = addc(p, i, 2 * d->np);
  LLVMValueRef v = LLVMBuildFAdd(b, LLVMBuildFMul(b, mo, ld(p, p->pa, vi), ""),
                                 LLVMBuildFAdd(b, g, LLVMBuildFMul(b, dc, w, ""), ""), "");
  st(p, p->pa, vi, v);
  st(p, p->pa, i, LLVMBuildFSub(b, w, LLVMBuildFMul(b, lr, v, ""), ""));
  kg_if_end(p, join);
  return kg_end(p);
}

/* One thread per value of the batch's images: rt_data_make's arithmetic
 * (data.c: make_one), in float. */
static int gen_gather(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  const int64_t hw = d->h * d->w, chw = d->c * hw, crop = d->f;
  LLVMValueRef s, k, gid = begin(p, m, name, chw, 0);
  LLVMBuilderRef b = p->b;
  split(p, gid, chw, &s, &k);
  LLVMValueRef ch = divc(p, k, hw), r = remc(p, k, hw), y = divc(p, r, d->w), x = remc(p, r, d->w);
  /* the draw: three int32 */
  LLVMValueRef dw = LLVMBuildBitCast(b, p->pc, LLVMPointerType(p->i32, 0), "");
  LLVMValueRef w3 = mulc(p, s, 3), word[3];
  for (int j = 0; j < 3; j++)
    word[j] = LLVMBuildLoad2(b, p->i32, LLVMBuildInBoundsGEP2(b, p->i32, dw, (LLVMValueRef[]){addc(p, w3, j)}, 1, ""), "");
  LLVMValueRef idx = LLVMBuildSExt(b, word[0], p->i64, "idx");
  LLVMValueRef ox = LLVMBuildZExt(b, LLVMBuildAnd(b, word[1], LLVMConstInt(p->i32, 0xffff, 0), ""), p->i64, "");
  LLVMValueRef oy = LLVMBuildZExt(b, LLVMBuildLShr(b, word[1], LLVMConstInt(p->i32, 16, 0), ""), p->i64, "");
  LLVMValueRef mir = LLVMBuildICmp(b, LLVMIntNE, word[2], LLVMConstInt(p->i32, 0, 0), "");
  LLVMValueRef xx = LLVMBuildSelect(b, mir, LLVMBuildSub(b, c64(p, d->w - 1), x, ""), x, "");
  LLVMValueRef sy = LLVMBuildSub(b, add(p, y, oy), c64(p, crop), "");
  LLVMValueRef sx = LLVMBuildSub(b, add(p, xx, ox), c64(p, crop), "");
  LLVMValueRef in = LLVMBuildAnd(b, LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, sy, c64(p, 0), ""),
                                                  LLVMBuildICmp(b, LLVMIntSLT, sy, c64(p, d->h), ""), ""),
                                 LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, sx, c64(p, 0), ""),
                                              LLVMBuildICmp(b, LLVMIntSLT, sx, c64(p, d->w), ""), ""), "in");
  /* the pixel's index in the set (0 where it lies in the padding) */
  LLVMValueRef src = add(p, add(p, mulc(p, idx, chw), mulc(p, ch, hw)), add(p, mulc(p, sy, d->w), sx));
  src = LLVMBuildSelect(b, in, src, c64(p, 0), "");
  LLVMValueRef pix;
  if (d->bytes) {
    LLVMValueRef bp = LLVMBuildBitCast(b, p->pb, LLVMPointerType(p->i8, 0), "");
    LLVMValueRef q = LLVMBuildInBoundsGEP2(b, p->i8, bp, (LLVMValueRef[]){addc(p, src, KD_SET_IMAGES(d->n_set))}, 1, "");
    pix = LLVMBuildFMul(b, LLVMBuildUIToFP(b, LLVMBuildLoad2(b, p->i8, q, ""), p->f32, ""), ld(p, p->pb, c64(p, 8)), "");
  } else {
    pix = ld(p, p->pb, addc(p, src, KD_SET_IMAGES(d->n_set) / 4));
  }
  LLVMValueRef mean = ld(p, p->pb, ch), sd = ld(p, p->pb, addc(p, ch, 4));
  LLVMValueRef v = LLVMBuildFDiv(b, LLVMBuildFSub(b, pix, mean, ""), sd, "");
  LLVMValueRef pad = LLVMBuildFDiv(b, LLVMBuildFSub(b, cf(p, 0), mean, ""), sd, "");
  st(p, p->pa, at(p, s, d->ns, d->dst, k), LLVMBuildSelect(b, in, v, pad, ""));
  /* the label, once per image */
  LLVMBasicBlockRef join = kg_if_begin(p, LLVMBuildICmp(b, LLVMIntEQ, k, c64(p, 0), ""));
  LLVMValueRef lp = LLVMBuildBitCast(b, p->pb, LLVMPointerType(p->i16, 0), "");
  LLVMValueRef lab = LLVMBuildLoad2(b, p->i16, LLVMBuildInBoundsGEP2(b, p->i16, lp, (LLVMValueRef[]){addc(p, idx, KD_SET_LABELS / 2)}, 1, ""), "");
  LLVMValueRef op = LLVMBuildBitCast(b, p->pd, LLVMPointerType(p->i16, 0), "");
  LLVMBuildStore(b, lab, LLVMBuildInBoundsGEP2(b, p->i16, op, &s, 1, ""));
  kg_if_end(p, join);
  return kg_end(p);
}

/* ---- phase II ---- */

/* The float whose bits a_ns holds (SCALE's, DESCEND's s). */
static LLVMValueRef arg_f32(kg_kit *p) {
  return LLVMBuildBitCast(p->b, LLVMBuildTrunc(p->b, p->a_ns, p->i32, ""), p->f32, "s");
}

static LLVMValueRef at_as(kg_kit *p, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef i) {
  LLVMValueRef q = LLVMBuildBitCast(p->b, base, LLVMPointerType(t, 0), "");
  return LLVMBuildInBoundsGEP2(p->b, t, q, &i, 1, "");
}

static LLVMValueRef ld_as(kg_kit *p, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef i) {
  return LLVMBuildLoad2(p->b, t, at_as(p, t, base, i), "");
}

static int gen_move(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef i = begin(p, m, name, 1, 0), v = ld(p, p->pb, i);
  if (d->add) v = LLVMBuildFAdd(p->b, ld(p, p->pa, i), v, "");
  st(p, p->pa, i, v);
  return kg_end(p);
}

static int gen_scale(kg_kit *p, LLVMModuleRef m, const char *name) {
  LLVMValueRef i = begin(p, m, name, 1, 0);
  st(p, p->pa, i, LLVMBuildFMul(p->b, ld(p, p->pa, i), arg_f32(p), ""));
  return kg_end(p);
}

static int gen_descend(kg_kit *p, LLVMModuleRef m, const char *name) {
  LLVMValueRef i = begin(p, m, name, 1, 0);
  LLVMBasicBlockRef join = kg_if_begin(p, LLVMBuildICmp(p->b, LLVMIntNE, ld_as(p, p->i8, p->pc, i),
                                                        LLVMConstInt(p->i8, 0, 0), ""));
  LLVMValueRef step = LLVMBuildFMul(p->b, arg_f32(p), ld(p, p->pb, i), "");
  st(p, p->pa, i, LLVMBuildFSub(p->b, ld(p, p->pa, i), step, ""));
  kg_if_end(p, join);
  return kg_end(p);
}

/* The norm of g (+ g2 unless NULL) over the len floats from start, as
 * p2.c's rt_unit_norm. */
static LLVMValueRef unit_norm(kg_kit *p, LLVMValueRef g, LLVMValueRef g2, LLVMValueRef start, LLVMValueRef len) {
  LLVMValueRef acc = local(p, p->f64, cd(p, 0));
  kg_loop l;
  kg_loop_open(p, &l, c64(p, 0), len, 1);
  LLVMValueRef i = add(p, start, l.iv), v = ld(p, g, i);
  if (g2) v = LLVMBuildFAdd(p->b, v, ld(p, g2, i), "");
  v = ext(p, v);
  acc_add(p, acc, LLVMBuildFMul(p->b, v, v, ""));
  kg_loop_close(p, &l);
  return trunc32(p, sqrt_d(p, get(p, p->f64, acc)));
}

static int gen_units(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef u = begin(p, m, name, 0, d->len);
  LLVMBuilderRef b = p->b;
  LLVMValueRef start = c64(p, 0), len = c64(p, 1);
  for (int r = 0; r < d->nruns; r++) { /* the last run that begins at or before u */
    const kd_run *q = &d->runs[r];
    LLVMValueRef in = LLVMBuildICmp(b, LLVMIntUGE, u, c64(p, q->u0), "");
    LLVMValueRef s = add(p, c64(p, q->p0), mulc(p, LLVMBuildSub(b, u, c64(p, q->u0), ""), q->len));
    start = LLVMBuildSelect(b, in, s, start, "");
    len = LLVMBuildSelect(b, in, c64(p, q->len), len, "");
  }
  LLVMValueRef score = local(p, p->f32, cf(p, 0));
  LLVMBasicBlockRef join = kg_if_begin(p, LLVMBuildICmp(b, LLVMIntEQ, ld_as(p, p->i8, p->pb, start),
                                                        LLVMConstInt(p->i8, 0, 0), "missing"));
  LLVMBuildStore(b, unit_norm(p, p->pa, NULL, start, len), score);
  kg_if_end(p, join);
  st(p, p->pc, u, get(p, p->f32, score));
  return kg_end(p);
}

/* Whether unit u's score bits (as uint32) reach the threshold a_ns. */
static LLVMValueRef reaches(kg_kit *p, LLVMValueRef u) {
  LLVMValueRef bits = LLVMBuildZExt(p->b, ld_as(p, p->i32, p->pa, u), p->i64, "");
  return LLVMBuildICmp(p->b, LLVMIntUGE, bits, p->a_ns, "");
}

static int gen_count(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  int64_t threads = (d->len + KD_CHUNK - 1) / KD_CHUNK;
  LLVMValueRef t = begin(p, m, name, 0, threads);
  LLVMBuilderRef b = p->b;
  LLVMValueRef cnt = local(p, p->i64, c64(p, 0));
  kg_loop l;
  kg_loop_open(p, &l, t, c64(p, d->len), threads);
  LLVMBuildStore(b, add(p, get(p, p->i64, cnt), LLVMBuildZExt(b, reaches(p, l.iv), p->i64, "")), cnt);
  kg_loop_close(p, &l);
  LLVMValueRef c = get(p, p->i64, cnt);
  LLVMBasicBlockRef join = kg_if_begin(p, flag(p, c));
  LLVMBuildAtomicRMW(b, LLVMAtomicRMWBinOpAdd, at_as(p, p->i64, p->pd, c64(p, 0)), c, LLVMAtomicOrderingMonotonic,
                     0);
  kg_if_end(p, join);
  return kg_end(p);
}

static int gen_emit(kg_kit *p, LLVMModuleRef m, const kd_desc *d, const char *name) {
  LLVMValueRef u = begin(p, m, name, 0, d->len);
  LLVMBuilderRef b = p->b;
  LLVMBasicBlockRef join = kg_if_begin(p, reaches(p, u));
  LLVMValueRef k = LLVMBuildAtomicRMW(b, LLVMAtomicRMWBinOpAdd, at_as(p, p->i64, p->pd, c64(p, 0)), c64(p, 1),
                                      LLVMAtomicOrderingMonotonic, 0);
  /* kd_hit k: the unit at int64 2k, the score at float 4k + 2 */
  LLVMBuildStore(b, u, at_as(p, p->i64, p->pc, mulc(p, k, 2)));
  st(p, p->pc, addc(p, mulc(p, k, 4), 2), ld(p, p->pa, u));
  kg_if_end(p, join);
  return kg_end(p);
}

static int gen_pair(kg_kit *p, LLVMModuleRef m, const char *name) {
  LLVMValueRef i = begin(p, m, name, 1, 0);
  LLVMValueRef start = ld_as(p, p->i64, p->pc, mulc(p, i, 2));
  LLVMValueRef len = ld_as(p, p->i64, p->pc, addc(p, mulc(p, i, 2), 1));
  st(p, p->pd, i, unit_norm(p, p->pa, p->pb, start, len));
  return kg_end(p);
}

int kd_gen(LLVMModuleRef m, const kd_desc *d, const char *name, int64_t *per, int64_t *fixed) {
  kg_kit k;
  *per = 0, *fixed = 0;
  switch (d->op) {
  case KD_RELU: case KD_RELU_MASK: case KD_COPY: *per = d->len; break;
  case KD_BN_FWD: case KD_BN_BWD: case KD_REVIVE: case KD_CSTATS: *fixed = d->hw > 0 ? d->c : 0; break;
  case KD_POOL_FWD: *per = d->f > 0 ? d->c * (d->h / d->f) * (d->w / d->f) : 0; break;
  case KD_POOL_BWD: *per = d->c * d->h * d->w; break;
  case KD_GAP_FWD: *per = d->c; break;
  case KD_GAP_BWD: *per = d->c * d->hw; break;
  case KD_LOSS: *per = 1; break;
  case KD_LOSS_SUM: *fixed = 1; break;
  case KD_SGD: *fixed = d->np; break;
  case KD_GATHER: *per = d->n_set > 0 && d->f >= 0 ? d->c * d->h * d->w : 0; break;
  case KD_MOVE: case KD_SCALE: case KD_DESCEND: case KD_PAIR: *per = 1; break;
  case KD_UNITS: case KD_EMIT: *fixed = d->len; break;
  case KD_COUNT: *fixed = (d->len + KD_CHUNK - 1) / KD_CHUNK; break;
  }
  if (*per <= 0 && *fixed <= 0) return -1;
  switch (d->op) {
  case KD_RELU: return gen_relu(&k, m, d, name);
  case KD_RELU_MASK: return gen_relu_mask(&k, m, d, name);
  case KD_COPY: return gen_copy(&k, m, d, name);
  case KD_BN_FWD: return gen_bn_fwd(&k, m, d, name);
  case KD_BN_BWD: return gen_bn_bwd(&k, m, d, name);
  case KD_POOL_FWD: return gen_pool_fwd(&k, m, d, name);
  case KD_POOL_BWD: return gen_pool_bwd(&k, m, d, name);
  case KD_GAP_FWD: return gen_gap_fwd(&k, m, d, name);
  case KD_GAP_BWD: return gen_gap_bwd(&k, m, d, name);
  case KD_LOSS: return gen_loss(&k, m, d, name);
  case KD_LOSS_SUM: return gen_loss_sum(&k, m, name);
  case KD_SGD: return gen_sgd(&k, m, d, name);
  case KD_GATHER: return gen_gather(&k, m, d, name);
  case KD_REVIVE: return gen_revive(&k, m, d, name);
  case KD_CSTATS: return gen_cstats(&k, m, d, name);
  case KD_MOVE: return gen_move(&k, m, d, name);
  case KD_SCALE: return gen_scale(&k, m, name);
  case KD_DESCEND: return gen_descend(&k, m, name);
  case KD_UNITS: return gen_units(&k, m, d, name);
  case KD_COUNT: return gen_count(&k, m, d, name);
  case KD_EMIT: return gen_emit(&k, m, d, name);
  case KD_PAIR: return gen_pair(&k, m, name);
  }
  return -1;
}
