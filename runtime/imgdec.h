/* imgdec.h: the bytes of one image file -> 8-bit pixels (private to the
 * runtime; data.h is the public face of the data loaders).
 *
 * JPEG goes through libjpeg-turbo, at the smallest DCT scale (1/8 .. 1)
 * that still gives the caller the resolution it asks for; PNG through
 * libpng, always at full size. The kind is read from the bytes, not the
 * file's name (ImageNet holds a PNG named .JPEG). Pixels come out
 * interleaved (HWC) with 1 channel (PIL's 'L': luma as PIL computes it) or
 * 3 ('RGB': gray replicated, alpha dropped, palettes expanded, 16 bits cut
 * to their high byte), as PIL's convert() gives them. A decoder holds the
 * pixel buffers, one per thread; each file decodes as it would alone (a
 * libjpeg-turbo handle of its own, for the call).
 *
 *   rt_imgdec *d = rt_imgdec_new();
 *   int w, h; const uint8_t *px; char why[256];
 *   if (rt_img_decode(d, bytes, n, 3, 0.5, &px, &w, &h, why, sizeof why))
 *     printf("%s: %s\n", path, why);    // "truncated (premature end of data)"
 *   rt_imgdec_free(d);
 */
#ifndef ILNAS_RT_IMGDEC_H
#define ILNAS_RT_IMGDEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RT_IMG_NONE, RT_IMG_JPEG, RT_IMG_PNG } rt_img_kind;

typedef struct rt_imgdec rt_imgdec;

rt_imgdec *rt_imgdec_new(void); /* NULL when out of memory */
void rt_imgdec_free(rt_imgdec *d);

/* The kind of image from its first bytes (RT_IMG_NONE: neither). */
rt_img_kind rt_img_kind_of(const uint8_t *buf, size_t n);

/* The kind and full size from the file's first n bytes of its `size` (a
 * JPEG's header may need up to its frame marker; n == size: buf is the
 * whole file, so a header that runs past it is an error rather than a
 * request for more). A JPEG whose header claims more pixels than a file
 * of `size` bytes can hold is refused. Returns 0; 1 when more bytes are
 * needed; -1 with what is wrong in why (no path: the caller names the
 * file). */
int rt_img_probe(const uint8_t *buf, size_t n, size_t size, rt_img_kind *kind, int *w, int *h,
                 char *why, size_t whylen);

/* The end of a complete file: a JPEG's end-of-image marker near the end, a
 * PNG's IEND chunk last. 0, or -1 with why ("truncated ..."). `tail` is
 * the file's last bytes (up to 4 KiB). */
int rt_img_check_tail(rt_img_kind kind, const uint8_t *tail, size_t n, char *why, size_t whylen);

/* Decodes the whole file in buf to c channels (1 or 3). A JPEG is decoded
 * at the smallest scale s with s >= need (need in (0, 1]; 1: full size).
 * *px stays valid until the next call on d. 0, or -1 with why. */
int rt_img_decode(rt_imgdec *d, const uint8_t *buf, size_t n, int c, double need,
                  const uint8_t **px, int *w, int *h, char *why, size_t whylen);

#endif
