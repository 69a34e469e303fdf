/* ckpt.h: the checkpoint container, a checksummed list of tagged sections.
 *
 * The container knows nothing of what it holds: the IR, weights, optimizer
 * and RNG state are sections written by their owners. A file is written
 * atomically (temporary file in the same directory, fsync, rename, fsync of
 * the directory), so a crash leaves the old checkpoint or the new one,
 * never half of one. Reading checks the magic, version, every length and a
 * CRC-32 of the whole content, and names what is wrong.
 *
 *   rt_ckpt_writer *w = rt_ckpt_writer_new();
 *   rt_ckpt_add(w, "WGTS", weights, nbytes);
 *   if (rt_ckpt_write(w, "run/final.ckpt", err, sizeof err)) ...
 *   rt_ckpt_writer_free(w);
 *
 *   rt_ckpt *c = rt_ckpt_read("run/final.ckpt", err, sizeof err);
 *   size_t n; const void *p = rt_ckpt_get(c, "WGTS", &n);
 *   rt_ckpt_free(c);
 */
#ifndef ILNAS_RT_CKPT_H
#define ILNAS_RT_CKPT_H

#include <stddef.h>

typedef struct rt_ckpt_writer rt_ckpt_writer;
typedef struct rt_ckpt rt_ckpt;

rt_ckpt_writer *rt_ckpt_writer_new(void);
/* Copies the bytes. tag: exactly 4 characters. Returns 0 or -1 (no memory). */
int rt_ckpt_add(rt_ckpt_writer *w, const char *tag, const void *data, size_t n);
/* The same without the copy: data must stay as it is until the last
 * rt_ckpt_write of w (large arrays, written at once). */
int rt_ckpt_add_ref(rt_ckpt_writer *w, const char *tag, const void *data, size_t n);
/* The same, w taking data (malloc'd) as its own: freed with w, or at once
 * when it returns -1. A large buffer made for the checkpoint is then not
 * copied. */
int rt_ckpt_add_own(rt_ckpt_writer *w, const char *tag, void *data, size_t n);
/* Returns 0, or -1 with a message naming the path in err; on failure the
 * destination is untouched and no temporary file is left behind. */
int rt_ckpt_write(const rt_ckpt_writer *w, const char *path, char *err, size_t errlen);
void rt_ckpt_writer_free(rt_ckpt_writer *w);

/* Returns NULL with a message in err: missing file, not a checkpoint,
 * unsupported version, truncated, checksum mismatch. */
rt_ckpt *rt_ckpt_read(const char *path, char *err, size_t errlen);
/* NULL when the section is absent. */
const void *rt_ckpt_get(const rt_ckpt *c, const char *tag, size_t *n);
void rt_ckpt_free(rt_ckpt *c);

#endif
