/* ref.c: the reference kernels. See ref.h for the conventions.
 *
 * Loop order is chosen for memory order, not cleverness: the innermost loop
 * of every conv kernel runs over contiguous pixels of one output row, with
 * its valid range computed once, so it has no branches. Accumulators are
 * double where a long sum decides the oracle's accuracy (batch statistics,
 * conv weight and bias gradients summed over batch and pixels, the loss).
 */
#include "runtime/ref.h"

#include <assert.h>
#include <math.h>
#include <string.h>

void rt_conv_shape_finish(rt_conv_shape *s) {
  assert(s->k >= 1 && s->stride >= 1 && s->pad >= 0);
  s->oh = (s->h + 2 * s->pad - s->k) / s->stride + 1;
  s->ow = (s->w + 2 * s->pad - s->k) / s->stride + 1;
  assert(s->oh >= 1 && s->ow >= 1);
  if (s->x_ns == 0) s->x_ns = (long)s->cin * s->h * s->w;
  if (s->y_ns == 0) s->y_ns = (long)s->cout * s->oh * s->ow;
}

static long conv_x_ns(const rt_conv_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->cin * s->h * s->w;
}

static long conv_y_ns(const rt_conv_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->cout * s->oh * s->ow;
}

/* Output positions o in [*lo, *hi) whose input i = o*stride - pad + tap lies
 * in [0, size). Computing this once per tap is what keeps the inner loops
 * free of bounds checks. */
static void conv_range(int tap, int pad, int stride, int size, int osize,
                       int *lo, int *hi) {
  int first = pad - tap; /* smallest o*stride that is in range */
  int l = first > 0 ? (first + stride - 1) / stride : 0;
  int last = size - 1 + pad - tap; /* largest o*stride that is in range */
  int h = last < 0 ? 0 : last / stride + 1;
  if (h > osize) h = osize;
  *lo = l;
  *hi = h < l ? l : h;
}

void rt_ref_conv_fwd(const rt_conv_shape *s, const float *x, const float *w,
                     const float *b, const uint8_t *wm, const uint8_t *bm,
                     float *y) {
  const int K = s->k, st = s->stride, H = s->h, W = s->w;
  const int OH = s->oh, OW = s->ow;
  const long xns = conv_x_ns(s), yns = conv_y_ns(s);
  const long ohw = (long)OH * OW, hw = (long)H * W;
  for (int n = 0; n < s->n; n++) {
    const float *xn = x + n * xns;
    for (int co = 0; co < s->cout; co++) {
      float *yp = y + n * yns + co * ohw;
      float bias = b && rt_bias_counts(bm, s->bias_all, co) ? b[co] : 0.0f;
      for (long i = 0; i < ohw; i++) yp[i] = bias;
      for (int ci = 0; ci < s->cin; ci++) {
        const float *xp = xn + ci * hw;
        const long wbase = ((long)co * s->cin + ci) * K * K;
        for (int ky = 0; ky < K; ky++) {
          int oy0, oy1;
          conv_range(ky, s->pad, st, H, OH, &oy0, &oy1);
          for (int kx = 0; kx < K; kx++) {
            const long wi = wbase + ky * K + kx;
            const float wv = w[wi];
            if ((wm && !wm[wi]) || wv == 0.0f) continue;
            int ox0, ox1;
            conv_range(kx, s->pad, st, W, OW, &ox0, &ox1);
            const int off = kx - s->pad; /* ox >= ox0 keeps ox*st+off >= 0 */
            for (int oy = oy0; oy < oy1; oy++) {
              const float *xr = xp + (long)(oy * st - s->pad + ky) * W;
              float *yr = yp + (long)oy * OW;
              if (st == 1) /* the common case, written so it vectorises */
                for (int ox = ox0; ox < ox1; ox++) yr[ox] += wv * xr[ox + off];
              else
                for (int ox = ox0; ox < ox1; ox++)
                  yr[ox] += wv * xr[ox * st + off];
            }
          }
        }
      }
      if (s->relu)
        for (long i = 0; i < ohw; i++) yp[i] = yp[i] > 0.0f ? yp[i] : 0.0f;
    }
  }
}

void rt_ref_conv_bwd_data(const rt_conv_shape *s, const float *dy,
                          const float *w, const uint8_t *wm, float *dx) {
  const int K = s->k, st = s->stride, H = s->h, W = s->w;
  const int OH = s->oh, OW = s->ow;
  const long xns = conv_x_ns(s), yns = conv_y_ns(s);
  const long ohw = (long)OH * OW, hw = (long)H * W;
  for (int n = 0; n < s->n; n++) {
    /* ci outside co keeps one dx plane hot while every dy plane feeds it. */
    for (int ci = 0; ci < s->cin; ci++) {
      float *dxp = dx + n * xns + ci * hw;
      for (int co = 0; co < s->cout; co++) {
        const float *dyp = dy + n * yns + co * ohw;
        const long wbase = ((long)co * s->cin + ci) * K * K;
        for (int ky = 0; ky < K; ky++) {
          int oy0, oy1;
          conv_range(ky, s->pad, st, H, OH, &oy0, &oy1);
          for (int kx = 0; kx < K; kx++) {
            const long wi = wbase + ky * K + kx;
            const float wv = w[wi];
            if ((wm && !wm[wi]) || wv == 0.0f) continue;
            int ox0, ox1;
            conv_range(kx, s->pad, st, W, OW, &ox0, &ox1);
            const int off = kx - s->pad; /* ox >= ox0 keeps ox*st+off >= 0 */
            for (int oy = oy0; oy < oy1; oy++) {
              float *xr = dxp + (long)(oy * st - s->pad + ky) * W;
              const float *yr = dyp + (long)oy * OW;
              if (st == 1)
                for (int ox = ox0; ox < ox1; ox++) xr[ox + off] += wv * yr[ox];
              else
                for (int ox = ox0; ox < ox1; ox++)
                  xr[ox * st + off] += wv * yr[ox];
            }
          }
        }
      }
    }
  }
}

void rt_ref_conv_bwd_weight(const rt_conv_shape *s, const float *x,
                            const float *dy, const uint8_t *wm,
                            const uint8_t *bm, float *dw, float *db) {
  const int K = s->k, st = s->stride, H = s->h, W = s->w;
  const int OH = s->oh, OW = s->ow;
  const long xns = conv_x_ns(s), yns = conv_y_ns(s);
  const long ohw = (long)OH * OW, hw = (long)H * W;
  /* Batch innermost: one weight's sum over the whole batch lives in a
   * double register, so no scratch buffer is needed, and for a fixed
   * (co, ci) the planes it reads fit in L2. */
  for (int co = 0; co < s->cout; co++) {
    for (int ci = 0; ci < s->cin; ci++) {
      const long wbase = ((long)co * s->cin + ci) * K * K;
      for (int ky = 0; ky < K; ky++) {
        int oy0, oy1;
        conv_range(ky, s->pad, st, H, OH, &oy0, &oy1);
        for (int kx = 0; kx < K; kx++) {
          const long wi = wbase + ky * K + kx;
          if (wm && !wm[wi]) {
            dw[wi] = 0.0f;
            continue;
          }
          int ox0, ox1;
          conv_range(kx, s->pad, st, W, OW, &ox0, &ox1);
          const int off = kx - s->pad;
          double acc = 0.0;
          for (int n = 0; n < s->n; n++) {
            const float *xp = x + n * xns + ci * hw;
            const float *dyp = dy + n * yns + co * ohw;
            for (int oy = oy0; oy < oy1; oy++) {
              const float *xr = xp + (long)(oy * st - s->pad + ky) * W;
              const float *yr = dyp + (long)oy * OW;
              float row = 0.0f;
              for (int ox = ox0; ox < ox1; ox++)
                row += yr[ox] * xr[ox * st + off];
              acc += row;
            }
          }
          dw[wi] = (float)acc;
        }
      }
    }
  }
  if (!db) return;
  for (int co = 0; co < s->cout; co++) {
    if (!rt_bias_counts(bm, 0, co)) {
      db[co] = 0.0f;
      continue;
    }
    double acc = 0.0;
    for (int n = 0; n < s->n; n++) {
      const float *dyp = dy + n * yns + co * ohw;
      float plane = 0.0f;
      for (long i = 0; i < ohw; i++) plane += dyp[i];
      acc += plane;
    }
    db[co] = (float)acc;
  }
}

static long lin_x_ns(const rt_linear_shape *s) {
  return s->x_ns ? s->x_ns : s->in;
}

static long lin_y_ns(const rt_linear_shape *s) {
  return s->y_ns ? s->y_ns : s->out;
}

void rt_ref_linear_fwd(const rt_linear_shape *s, const float *x,
                       const float *w, const float *b, const uint8_t *wm,
                       const uint8_t *bm, float *y) {
  const long xns = lin_x_ns(s), yns = lin_y_ns(s);
  for (int n = 0; n < s->n; n++) {
    const float *xr = x + n * xns;
    float *yr = y + n * yns;
    for (int o = 0; o < s->out; o++) {
      const float *wr = w + (long)o * s->in;
      const uint8_t *mr = wm ? wm + (long)o * s->in : NULL;
      float acc = 0.0f;
      /* A select, not a product with the mask: a masked slot must not
       * leak even if it holds a non-finite value. */
      if (mr)
        for (int i = 0; i < s->in; i++) acc += mr[i] ? wr[i] * xr[i] : 0.0f;
      else
        for (int i = 0; i < s->in; i++) acc += wr[i] * xr[i];
      if (b && rt_bias_counts(bm, 0, o)) acc += b[o];
      yr[o] = acc;
    }
  }
}

void rt_ref_linear_bwd_data(const rt_linear_shape *s, const float *dy,
                            const float *w, const uint8_t *wm, float *dx) {
  const long xns = lin_x_ns(s), yns = lin_y_ns(s);
  for (int n = 0; n < s->n; n++) {
    const float *dyr = dy + n * yns;
    float *dxr = dx + n * xns;
    for (int o = 0; o < s->out; o++) {
      const float g = dyr[o];
      if (g == 0.0f) continue;
      const float *wr = w + (long)o * s->in;
      const uint8_t *mr = wm ? wm + (long)o * s->in : NULL;
      if (mr)
        for (int i = 0; i < s->in; i++) dxr[i] += mr[i] ? g * wr[i] : 0.0f;
      else
        for (int i = 0; i < s->in; i++) dxr[i] += g * wr[i];
    }
  }
}

void rt_ref_linear_bwd_weight(const rt_linear_shape *s, const float *x,
                              const float *dy, const uint8_t *wm,
                              const uint8_t *bm, float *dw, float *db) {
  const long xns = lin_x_ns(s), yns = lin_y_ns(s);
  const long nw = (long)s->out * s->in;
  /* Rank-1 updates per sample walk dw and x in memory order; the batch sum
   * is short (one batch), so float accumulation in dw is accurate enough. */
  memset(dw, 0, (size_t)nw * sizeof *dw);
  for (int n = 0; n < s->n; n++) {
    const float *xr = x + n * xns;
    const float *dyr = dy + n * yns;
    for (int o = 0; o < s->out; o++) {
      const float g = dyr[o];
      if (g == 0.0f) continue;
      float *dwr = dw + (long)o * s->in;
      for (int i = 0; i < s->in; i++) dwr[i] += g * xr[i];
    }
  }
  if (wm)
    for (long i = 0; i < nw; i++)
      if (!wm[i]) dw[i] = 0.0f;
  if (!db) return;
  for (int o = 0; o < s->out; o++) {
    if (!rt_bias_counts(bm, 0, o)) {
      db[o] = 0.0f;
      continue;
    }
    double acc = 0.0;
    for (int n = 0; n < s->n; n++) acc += dy[n * yns + o];
    db[o] = (float)acc;
  }
}

void rt_ref_relu_fwd(int n, long len, const float *x, long x_ns, float *y,
                     long y_ns) {
  if (x_ns == 0) x_ns = len;
  if (y_ns == 0) y_ns = len;
  for (int s = 0; s < n; s++) {
    const float *xr = x + s * x_ns;
    float *yr = y + s * y_ns;
    for (long i = 0; i < len; i++) yr[i] = xr[i] > 0.0f ? xr[i] : 0.0f;
  }
}

void rt_ref_relu_bwd(int n, long len, const float *y, long y_ns,
                     const float *dy, long dy_ns, float *dx, long dx_ns) {
  if (y_ns == 0) y_ns = len;
  if (dy_ns == 0) dy_ns = len;
  if (dx_ns == 0) dx_ns = len;
  for (int s = 0; s < n; s++) {
    const float *yr = y + s * y_ns;
    const float *dyr = dy + s * dy_ns;
    float *dxr = dx + s * dx_ns;
    for (long i = 0; i < len; i++)
      if (yr[i] > 0.0f) dxr[i] += dyr[i];
  }
}

static long bn_x_ns(const rt_bn_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->c * s->hw;
}

static long bn_y_ns(const rt_bn_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->c * s->hw;
}

void rt_ref_bn_fwd(const rt_bn_shape *s, int training, const float *x,
                   const float *gamma, const float *beta, float *run_mean,
                   float *run_var, float *save_mean, float *save_invstd,
                   float *y) {
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const double count = (double)s->n * hw;
  for (int c = 0; c < s->c; c++) {
    double mean, invstd;
    if (training) {
      assert(count > 0);
      /* Two passes: the one-pass E[x^2] - E[x]^2 cancels badly when the
       * mean is large against the spread. */
      double sum = 0.0;
      for (int n = 0; n < s->n; n++) {
        const float *xp = x + n * xns + c * hw;
        for (long i = 0; i < hw; i++) sum += xp[i];
      }
      mean = sum / count;
      double ss = 0.0;
      for (int n = 0; n < s->n; n++) {
        const float *xp = x + n * xns + c * hw;
        for (long i = 0; i < hw; i++) {
          double d = xp[i] - mean;
          ss += d * d;
        }
      }
      double var = ss / count;
      invstd = 1.0 / sqrt(var + RT_BN_EPS);
      if (save_mean) save_mean[c] = (float)mean;
      if (save_invstd) save_invstd[c] = (float)invstd;
      if (run_mean && run_var) {
        /* PyTorch raises for a single value per channel; the biased value
         * (0) is the one that keeps the update finite. */
        double unbiased = count > 1 ? ss / (count - 1) : var;
        run_mean[c] = (float)((1 - RT_BN_MOMENTUM) * run_mean[c] +
                              RT_BN_MOMENTUM * mean);
        run_var[c] = (float)((1 - RT_BN_MOMENTUM) * run_var[c] +
                             RT_BN_MOMENTUM * unbiased);
      }
    } else {
      mean = run_mean[c];
      invstd = 1.0 / sqrt((double)run_var[c] + RT_BN_EPS);
    }
    /* In double: folding into float x*scale + shift cancels two large
     * terms when the mean is large, and the oracle must not. */
    const double scale = gamma[c] * invstd, b = beta[c];
    for (int n = 0; n < s->n; n++) {
      const float *xp = x + n * xns + c * hw;
      float *yp = y + n * yns + c * hw;
      for (long i = 0; i < hw; i++)
        yp[i] = (float)((xp[i] - mean) * scale + b);
    }
  }
}

void rt_ref_bn_bwd(const rt_bn_shape *s, const float *x, const float *dy,
                   const float *gamma, const float *save_mean,
                   const float *save_invstd, float *dx, float *dgamma,
                   float *dbeta) {
  const long xns = bn_x_ns(s), yns = bn_y_ns(s), hw = s->hw;
  const double count = (double)s->n * hw;
  for (int c = 0; c < s->c; c++) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    double sdy = 0.0, sdyxh = 0.0;
    for (int n = 0; n < s->n; n++) {
      const float *xp = x + n * xns + c * hw;
      const float *dyp = dy + n * yns + c * hw;
      for (long i = 0; i < hw; i++) {
        sdy += dyp[i];
        sdyxh += dyp[i] * ((xp[i] - mean) * invstd);
      }
    }
    dbeta[c] = (float)sdy;
    dgamma[c] = (float)sdyxh;
    /* dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)), the
     * batch statistics being functions of x. */
    const double k = gamma[c] * invstd;
    const double mdy = sdy / count, mdyxh = sdyxh / count;
    for (int n = 0; n < s->n; n++) {
      const float *xp = x + n * xns + c * hw;
      const float *dyp = dy + n * yns + c * hw;
      float *dxp = dx + n * xns + c * hw;
      for (long i = 0; i < hw; i++) {
        double xh = (xp[i] - mean) * invstd;
        dxp[i] += (float)(k * (dyp[i] - mdy - xh * mdyxh));
      }
    }
  }
}

static long pool_x_ns(const rt_pool_shape *s) {
  return s->x_ns ? s->x_ns : (long)s->c * s->h * s->w;
}

static long pool_y_ns(const rt_pool_shape *s) {
  return s->y_ns ? s->y_ns : (long)s->c * (s->h / s->f) * (s->w / s->f);
}

/* Flat offset, within the plane, of the first maximum of window (oy, ox). */
static long pool_argmax(const float *xp, int W, int f, int oy, int ox) {
  long best = (long)oy * f * W + (long)ox * f;
  for (int dy = 0; dy < f; dy++)
    for (int dx = 0; dx < f; dx++) {
      long i = (long)(oy * f + dy) * W + ox * f + dx;
      if (xp[i] > xp[best]) best = i; /* strict: ties keep the first */
    }
  return best;
}

void rt_ref_maxpool_fwd(const rt_pool_shape *s, const float *x, float *y) {
  const int OH = s->h / s->f, OW = s->w / s->f;
  const long xns = pool_x_ns(s), yns = pool_y_ns(s);
  const long hw = (long)s->h * s->w, ohw = (long)OH * OW;
  for (int n = 0; n < s->n; n++)
    for (int c = 0; c < s->c; c++) {
      const float *xp = x + n * xns + c * hw;
      float *yp = y + n * yns + c * ohw;
      for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++)
          yp[(long)oy * OW + ox] = xp[pool_argmax(xp, s->w, s->f, oy, ox)];
    }
}

void rt_ref_maxpool_bwd(const rt_pool_shape *s, const float *x,
                        const float *dy, float *dx) {
  const int OH = s->h / s->f, OW = s->w / s->f;
  const long xns = pool_x_ns(s), yns = pool_y_ns(s);
  const long hw = (long)s->h * s->w, ohw = (long)OH * OW;
  for (int n = 0; n < s->n; n++)
    for (int c = 0; c < s->c; c++) {
      const float *xp = x + n * xns + c * hw;
      const float *dyp = dy + n * yns + c * ohw;
      float *dxp = dx + n * xns + c * hw;
      for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++)
          dxp[pool_argmax(xp, s->w, s->f, oy, ox)] += dyp[(long)oy * OW + ox];
    }
}

void rt_ref_gap_fwd(int n, int c, int hw, const float *x, long x_ns,
                    float *y, long y_ns) {
  if (x_ns == 0) x_ns = (long)c * hw;
  if (y_ns == 0) y_ns = c;
  for (int s = 0; s < n; s++)
    for (int ch = 0; ch < c; ch++) {
      const float *xp = x + s * x_ns + (long)ch * hw;
      double sum = 0.0;
      for (int i = 0; i < hw; i++) sum += xp[i];
      y[s * y_ns + ch] = (float)(sum / hw);
    }
}

void rt_ref_gap_bwd(int n, int c, int hw, const float *dy, long dy_ns,
                    float *dx, long dx_ns, int assign) {
  if (dy_ns == 0) dy_ns = c;
  if (dx_ns == 0) dx_ns = (long)c * hw;
  for (int s = 0; s < n; s++)
    for (int ch = 0; ch < c; ch++) {
      const float g = dy[s * dy_ns + ch] / (float)hw;
      float *dxp = dx + s * dx_ns + (long)ch * hw;
      for (int i = 0; i < hw; i++) dxp[i] = (assign ? 0.0f : dxp[i]) + g;
    }
}

void rt_ref_channel_stats(int n, int c, int64_t plane, int64_t ns, const float *o,
                          double *mean, double *var, double *min) {
  double cnt = (double)n * (double)plane;
  for (int ch = 0; ch < c; ch++) {
    double s = 0, q = 0;
    float lo = o[ch * plane];
    for (int i = 0; i < n; i++)
      for (int64_t k = 0; k < plane; k++) {
        float v = o[i * ns + ch * plane + k];
        s += v;
        lo = v < lo ? v : lo;
      }
    mean[ch] = s / cnt;
    if (min) min[ch] = lo;
    for (int i = 0; i < n; i++)
      for (int64_t k = 0; k < plane; k++) {
        double d = o[i * ns + ch * plane + k] - mean[ch];
        q += d * d;
      }
    var[ch] = q / cnt;
  }
}

double rt_ref_softmax_xent(int n, int classes, const float *logits,
                           const ir_label *labels, float *dlogits,
                           int *correct) {
  double loss = 0.0;
  int hits = 0;
  for (int s = 0; s < n; s++) {
    const float *l = logits + (long)s * classes;
    const int y = labels[s];
    assert(y < classes);
    int arg = 0;
    for (int j = 1; j < classes; j++)
      if (l[j] > l[arg]) arg = j; /* strict: ties keep the lowest index */
    hits += arg == y;
    /* Shifting by the maximum keeps exp() finite for any logits. */
    const double m = l[arg];
    double z = 0.0;
    for (int j = 0; j < classes; j++) z += exp(l[j] - m);
    loss += log(z) - (l[y] - m);
    if (dlogits) {
      float *d = dlogits + (long)s * classes;
      for (int j = 0; j < classes; j++) {
        double p = exp(l[j] - m) / z;
        d[j] = (float)((p - (j == y)) / n);
      }
    }
  }
  if (correct) *correct = hits;
  return n > 0 ? loss / n : 0.0;
}

void rt_ref_sgd(size_t n, float *w, const float *g, float *v,
                const uint8_t *mask, float lr, float momentum, float decay) {
  for (size_t i = 0; i < n; i++) {
    if (mask && !mask[i]) continue;
    float gi = g[i] + decay * w[i];
    v[i] = momentum * v[i] + gi;
    w[i] -= lr * v[i];
  }
}
