/* imgdec.c: JPEG (libjpeg-turbo) and PNG (libpng) decoding to 8-bit
 * pixels, with the colour conversions PIL's convert() makes, so that a
 * decoded image matches what torchvision's loader sees. */
#include "imgdec.h"

#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

struct rt_imgdec {
  uint8_t *px;          /* the decoded image */
  size_t cap;           /* its bytes */
  uint8_t *tmp;         /* a wider decode (CMYK, RGB before luma) */
  size_t tcap;
};

static int why_fail(char *why, size_t whylen, const char *fmt, ...) {
  if (why && whylen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

rt_imgdec *rt_imgdec_new(void) { return calloc(1, sizeof(rt_imgdec)); }

void rt_imgdec_free(rt_imgdec *d) {
  if (!d) return;
  free(d->px), free(d->tmp), free(d);
}

static int grow(uint8_t **p, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  uint8_t *q = realloc(*p, need);
  if (!q) return -1;
  *p = q, *cap = need;
  return 0;
}

/* A libjpeg-turbo decompressor for one file, made for the call and
 * destroyed after it (0.2 us), so that each file decodes as it would
 * alone, as PIL opens a decoder per file. A handle carries state
 * from one file to the next: a call that failed left it inside a header,
 * and the next header read returned 0 without a size (a good file after a
 * truncated one read as "empty image (-1x-1)", or with an earlier file's
 * size, and a decode sized its buffer from what the stack held); and a
 * file's Huffman tables served a later file that has none, as libjpeg
 * does for abbreviated streams. */
static tjhandle tj_new(char *why, size_t whylen) {
  tjhandle tj = tjInitDecompress();
  if (!tj) why_fail(why, whylen, "cannot start the JPEG decoder: %s", tjGetErrorStr2(NULL));
  return tj;
}

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

rt_img_kind rt_img_kind_of(const uint8_t *buf, size_t n) {
  if (n >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff) return RT_IMG_JPEG;
  if (n >= 8 && memcmp(buf, png_sig, 8) == 0) return RT_IMG_PNG;
  return RT_IMG_NONE;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bounds on a plausible image: the pixel buffer of one decode stays far
 * below what a corrupt header could ask for. */
enum { MAX_SIDE = 1 << 15, MAX_PIXELS = 1 << 28 };

static int size_ok(int w, int h, char *why, size_t whylen) {
  if (w < 1 || h < 1) return why_fail(why, whylen, "empty image (%dx%d)", w, h);
  if (w > MAX_SIDE || h > MAX_SIDE || (int64_t)w * h > MAX_PIXELS)
    return why_fail(why, whylen, "image of %dx%d is larger than %d pixels a side or %d in all",
                    w, h, MAX_SIDE, MAX_PIXELS);
  return 0;
}

/* A JPEG's header against the size of its file: every 8x8 block of a
 * component needs at least a bit (its DC code in the first scan), so a
 * whole file holds at most 512 pixels a byte (PIL's solid gray: 256). A
 * header claiming far more is corrupt, and trusting it costs: an 801-byte
 * progressive file whose header said 16000x16000 decoded "successfully"
 * in 5.6 s and 1.5 GB, most of it libjpeg's coefficients. */
enum { JPEG_MAX_PX_PER_BYTE = 4096 };

static int jpeg_size_ok(int w, int h, size_t n, char *why, size_t whylen) {
  if (size_ok(w, h, why, whylen)) return -1;
  if ((uint64_t)w * (uint64_t)h > (uint64_t)n * JPEG_MAX_PX_PER_BYTE)
    return why_fail(why, whylen, "corrupt JPEG: a %dx%d image cannot fit in %zu bytes", w, h, n);
  return 0;
}

/* A whole file whose header does not parse: cut short (no end-of-image
 * marker), or corrupt. */
static int jpeg_header_fail(tjhandle tj, const uint8_t *buf, size_t n, char *why,
                            size_t whylen) {
  char tail[8];
  size_t tn = n < 4096 ? n : 4096;
  int cut = rt_img_check_tail(RT_IMG_JPEG, buf + n - tn, tn, tail, sizeof tail) != 0;
  return why_fail(why, whylen, cut ? "truncated JPEG (cut in its header: %s)"
                  : "bad JPEG header: %s", tjGetErrorStr2(tj));
}

int rt_img_probe(const uint8_t *buf, size_t n, size_t size, rt_img_kind *kind, int *w, int *h,
                 char *why, size_t whylen) {
  int whole = n >= size;
  *kind = rt_img_kind_of(buf, n);
  if (*kind == RT_IMG_NONE) {
    if (n < 8 && !whole) return 1;
    return why_fail(why, whylen, n == 0 ? "empty file" : "not a JPEG or PNG image "
                    "(it starts with bytes %02x %02x %02x %02x)", n > 0 ? buf[0] : 0,
                    n > 1 ? buf[1] : 0, n > 2 ? buf[2] : 0, n > 3 ? buf[3] : 0);
  }
  if (*kind == RT_IMG_PNG) {
    if (n < 33) {
      if (!whole) return 1;
      return why_fail(why, whylen, "truncated PNG header (%zu bytes)", n);
    }
    if (be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4) != 0)
      return why_fail(why, whylen, "PNG without an IHDR chunk first");
    uint32_t pw = be32(buf + 16), ph = be32(buf + 20);
    if (pw > MAX_SIDE || ph > MAX_SIDE) return size_ok(MAX_SIDE + 1, 1, why, whylen);
    *w = (int)pw, *h = (int)ph;
    return size_ok(*w, *h, why, whylen);
  }
  tjhandle tj = tj_new(why, whylen);
  if (!tj) return -1;
  int sub, cs;
  if (n > (unsigned long)-1 / 2) n = (unsigned long)-1 / 2;
  int rc = tjDecompressHeader3(tj, buf, (unsigned long)n, w, h, &sub, &cs);
  if (rc) rc = whole ? jpeg_header_fail(tj, buf, n, why, whylen) : 1;
  else rc = jpeg_size_ok(*w, *h, size, why, whylen);
  tjDestroy(tj);
  return rc;
}

int rt_img_check_tail(rt_img_kind kind, const uint8_t *tail, size_t n, char *why,
                      size_t whylen) {
  if (kind == RT_IMG_PNG) {
    static const uint8_t iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    if (n >= 12 && memcmp(tail + n - 12, iend, 12) == 0) return 0;
    return why_fail(why, whylen, "truncated PNG (it does not end with an IEND chunk)");
  }
  /* Cameras and editors leave padding after the end-of-image marker now
   * and then; a few KiB of it is accepted. */
  for (size_t i = n; i >= 2; i--)
    if (tail[i - 2] == 0xff && tail[i - 1] == 0xd9) return 0;
  return why_fail(why, whylen, "truncated JPEG (no end-of-image marker in its last %zu bytes)",
                  n);
}

/* PIL's luma (ITU-R 601-2), in its fixed point, so gray images match it. */
static void rgb_to_l(uint8_t *dst, const uint8_t *src, size_t px) {
  for (size_t i = 0; i < px; i++, src += 3)
    dst[i] = (uint8_t)((src[0] * 19595u + src[1] * 38470u + src[2] * 7471u + 0x8000u) >> 16);
}

static int decode_jpeg(rt_imgdec *d, tjhandle tj, const uint8_t *buf, size_t n, int c,
                       double need, int *w, int *h, char *why, size_t whylen) {
  int fw, fh, sub, cs;
  if (tjDecompressHeader3(tj, buf, (unsigned long)n, &fw, &fh, &sub, &cs))
    return jpeg_header_fail(tj, buf, n, why, whylen);
  if (jpeg_size_ok(fw, fh, n, why, whylen)) return -1;
  /* The smallest scale at least `need`: a quarter of the IDCT work and a
   * sixteenth of the pixels for a 500-pixel photo cropped to 112. */
  int nsf;
  tjscalingfactor *sf = tjGetScalingFactors(&nsf), best = {1, 1};
  for (int i = 0; sf && i < nsf; i++) {
    double s = (double)sf[i].num / sf[i].denom;
    if (s <= 1.0 && s >= need && s < (double)best.num / best.denom) best = sf[i];
  }
  *w = TJSCALED(fw, best), *h = TJSCALED(fh, best);
  int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
  int pf = cmyk ? TJPF_CMYK : c == 1 && cs == TJCS_GRAY ? TJPF_GRAY : TJPF_RGB;
  int bpp = tjPixelSize[pf];
  size_t px = (size_t)*w * (size_t)*h;
  int direct = pf == (c == 1 ? TJPF_GRAY : TJPF_RGB);
  if (grow(&d->px, &d->cap, px * (size_t)c) ||
      (!direct && grow(&d->tmp, &d->tcap, px * (size_t)bpp)))
    return why_fail(why, whylen, "out of memory for %dx%d pixels", *w, *h);
  uint8_t *dst = direct ? d->px : d->tmp;
  /* rows a failed decode leaves are zeros, not what the buffer held */
  memset(dst, 0, px * (size_t)(direct ? c : bpp));
  if (tjDecompress2(tj, buf, (unsigned long)n, dst, *w, *w * bpp, *h, pf, 0)) {
    const char *msg = tjGetErrorStr2(tj);
    int warning = tjGetErrorCode(tj) == TJERR_WARNING;
    /* Corrupt entropy data and a sequential scan's odd parameters are
     * warnings: libjpeg decodes on (the bad data as zeros) and every row
     * is written, and PIL shows such files too. Any other message fails: a
     * cut file (PIL refuses it, "truncated"), or an error that stopped the
     * decode (PIL: "broken data stream"), which TurboJPEG reports as a
     * warning when one came before it. On 800 copies of the fuzz seeds'
     * JPEGs (tests/fuzz/corpus/img) with one to three bytes of their scans
     * changed at random, this accepts and refuses what PIL 9.4 does. */
    if (!warning || (strncmp(msg, "Corrupt JPEG data", 17) != 0 &&
                     strncmp(msg, "Invalid SOS parameters for sequential JPEG", 42) != 0))
      return why_fail(why, whylen, "%s%s", strstr(msg, "Premature end") ? "truncated JPEG: "
                      : "corrupt JPEG: ", msg);
  }
  if (cmyk) {
    /* Adobe's inverted CMYK, which is what such JPEGs hold, as PIL reads it */
    uint8_t *rgb = c == 3 ? d->px : d->tmp;
    for (size_t i = 0; i < px; i++) {
      unsigned k = d->tmp[4 * i + 3];
      uint8_t r = (uint8_t)(d->tmp[4 * i] * k / 255), g = (uint8_t)(d->tmp[4 * i + 1] * k / 255),
              b = (uint8_t)(d->tmp[4 * i + 2] * k / 255);
      rgb[3 * i] = r, rgb[3 * i + 1] = g, rgb[3 * i + 2] = b;
    }
    if (c == 1) rgb_to_l(d->px, d->tmp, px);
  } else if (!direct) {
    rgb_to_l(d->px, d->tmp, px);
  }
  return 0;
}

/* ---- PNG ---- */

typedef struct {
  const uint8_t *p;
  size_t n, at;
  char *why;
  size_t whylen;
} png_src;

static void png_read_mem(png_structp png, png_bytep out, png_size_t len) {
  png_src *s = png_get_io_ptr(png);
  if (s->n - s->at < len) png_error(png, "truncated PNG (premature end of data)");
  memcpy(out, s->p + s->at, len);
  s->at += len;
}

static void png_on_error(png_structp png, png_const_charp msg) {
  png_src *s = png_get_error_ptr(png);
  why_fail(s->why, s->whylen, "%s%s", strstr(msg, "PNG") ? "" : "corrupt PNG: ", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int decode_png(rt_imgdec *d, const uint8_t *buf, size_t n, int c, int *w, int *h,
                      char *why, size_t whylen) {
  png_src src = {buf, n, 0, why, whylen};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error,
                                           png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  png_bytep *volatile rows = NULL;
  if (!png || !info) {
    png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
    return why_fail(why, whylen, "out of memory starting the PNG decoder");
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    return -1;
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_set_user_limits(png, MAX_SIDE, MAX_SIDE);
  /* The ancillary chunks that libpng reads whole into memory change no
   * pixel that PIL's convert() gives (no gamma, profile or background is
   * applied): skipped as they are read, so that a chunk's length is never
   * an allocation. A 44-byte file whose sPLT chunk claimed 1.4 GB made
   * libpng allocate and clear that much before it found the file cut
   * short (4.7 s; tests/fuzz/fuzz_img.c found it). */
  static const png_byte skip[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0"
                                 "pHYs\0sBIT\0sCAL\0sPLT\0sRGB\0tEXt\0tIME\0zTXt";
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0); /* unknown ones */
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skip, (int)(sizeof skip / 5));
  png_read_info(png, info);
  png_uint_32 pw = png_get_image_width(png, info), ph = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (size_ok((int)pw, (int)ph, why, whylen)) png_longjmp(png, 1);
  /* PIL's convert('RGB') or convert('L'): palettes expanded, transparency
   * and alpha dropped (not composited), 16 bits cut to the high byte. */
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  /* a palette's transparency (tRNS) comes out as alpha with its colours */
  if ((type & PNG_COLOR_MASK_ALPHA) ||
      (type == PNG_COLOR_TYPE_PALETTE && png_get_valid(png, info, PNG_INFO_tRNS)))
    png_set_strip_alpha(png);
  int color = type == PNG_COLOR_TYPE_PALETTE || (type & PNG_COLOR_MASK_COLOR);
  if (!color && c == 3) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int chans = png_get_channels(png, info);
  if (chans != (color || c == 3 ? 3 : 1)) {
    why_fail(why, whylen, "PNG of color type %d and depth %d gives %d channels", type, depth,
             chans);
    png_longjmp(png, 1);
  }
  size_t px = (size_t)pw * ph, stride = (size_t)pw * (size_t)chans;
  uint8_t *dst;
  if (grow(&d->px, &d->cap, px * (size_t)c) ||
      (chans != c && grow(&d->tmp, &d->tcap, px * (size_t)chans)) ||
      !(rows = malloc(ph * sizeof *rows))) {
    why_fail(why, whylen, "out of memory for %ux%u pixels", (unsigned)pw, (unsigned)ph);
    png_longjmp(png, 1);
  }
  dst = chans == c ? d->px : d->tmp;
  for (png_uint_32 y = 0; y < ph; y++) rows[y] = dst + y * stride;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  free(rows);
  if (chans != c) rgb_to_l(d->px, d->tmp, px);
  *w = (int)pw, *h = (int)ph;
  return 0;
}

int rt_img_decode(rt_imgdec *d, const uint8_t *buf, size_t n, int c, double need,
                  const uint8_t **px, int *w, int *h, char *why, size_t whylen) {
  if (c != 1 && c != 3) return why_fail(why, whylen, "images have 1 or 3 channels, not %d", c);
  if (n > (unsigned long)-1 / 2) return why_fail(why, whylen, "file too large");
  int rc;
  tjhandle tj;
  switch (rt_img_kind_of(buf, n)) {
  case RT_IMG_JPEG:
    if (!(tj = tj_new(why, whylen))) return -1;
    rc = decode_jpeg(d, tj, buf, n, c, need, w, h, why, whylen);
    tjDestroy(tj);
    break;
  case RT_IMG_PNG: rc = decode_png(d, buf, n, c, w, h, why, whylen); break;
  default:
    return why_fail(why, whylen, n == 0 ? "empty file" : "not a JPEG or PNG image");
  }
  *px = rc ? NULL : d->px;
  return rc;
}
