/* hash.h: FNV-1a, 64 bits, over bytes: fingerprints of what a file or a
 * peer must agree on (export's weights files, the ranks' runs and
 * networks). Not for tables: it reads a byte at a time.
 *
 *   uint64_t h = base_fnv(BASE_FNV_SEED, shape, sizeof shape);
 *   h = base_fnv(h, more, n);
 */
#ifndef ILNAS_BASE_HASH_H
#define ILNAS_BASE_HASH_H

#include <stddef.h>
#include <stdint.h>

#define BASE_FNV_SEED 14695981039346656037ull /* FNV-1a's offset basis */

static inline uint64_t base_fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

#endif
