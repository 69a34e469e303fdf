/* fuzz_img: libFuzzer target over the image decoder that image folders
 * read through (runtime/imgdec.c): the kind from the first bytes, the
 * header probe, the tail check, and the decode to 1 and 3 channels, at
 * full size and at the smallest JPEG scale. Each call returns 0, or -1
 * with a reason; a crash, a leak or a -1 without a reason is a bug, and
 * so is a decoder that answers otherwise than a new one would: the one
 * kept across inputs (as a folder's worker keeps one) is checked against
 * one made for the input.
 *
 * An input whose header asks for more than 2^22 pixels is probed but not
 * decoded: a valid header can ask for up to imgdec's bound (2^28), and
 * the fuzzer would spend its time allocating and filling such images. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/imgdec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

/* -1 must come with its reason */
static void reasoned(int rc, const char *why) {
  if (rc < 0 && !why[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  static rt_imgdec *d;
  if (!d && !(d = rt_imgdec_new())) return 0;
  char why[256];
  rt_img_kind kind, k2;
  int w = 0, h = 0;
  (void)rt_img_kind_of(data, n);
  why[0] = 0;
  /* as a file's first bytes, then as the whole file */
  int rc = rt_img_probe(data, n, 2 * n + 1, &k2, &w, &h, why, sizeof why);
  reasoned(rc, why);
  why[0] = 0;
  rc = rt_img_probe(data, n, n, &kind, &w, &h, why, sizeof why);
  reasoned(rc, why);
  if (rc) return 0;
  why[0] = 0;
  size_t tn = n < 4096 ? n : 4096;
  reasoned(rt_img_check_tail(kind, data + n - tn, tn, why, sizeof why), why);
  rt_imgdec *fresh = (int64_t)w * h <= (1 << 22) ? rt_imgdec_new() : NULL;
  if (!fresh) return 0;
  for (int c = 1; c <= 3; c += 2)
    for (int s = 0; s < 2; s++) {
      const uint8_t *px = NULL;
      int dw = 0, dh = 0;
      why[0] = 0;
      rc = rt_img_decode(d, data, n, c, s ? 0.125 : 1.0, &px, &dw, &dh, why, sizeof why);
      reasoned(rc, why);
      const uint8_t *fpx = NULL;
      int fdw = 0, fdh = 0;
      int frc = rt_img_decode(fresh, data, n, c, s ? 0.125 : 1.0, &fpx, &fdw, &fdh, why,
                              sizeof why);
      if (frc != rc || (!rc && (fdw != dw || fdh != dh || memcmp(fpx, px, (size_t)dw * dh * c))))
        abort();
      if (rc) continue;
      if (!px || dw < 1 || dh < 1 || dw > w || dh > h) abort();
      unsigned sum = 0; /* every pixel read: MSan or valgrind would see one never written */
      for (size_t i = 0; i < (size_t)dw * dh * (size_t)c; i++) sum += px[i];
      volatile unsigned sink = sum;
      (void)sink;
    }
  rt_imgdec_free(fresh);
  return 0;
}
