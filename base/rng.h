/* rng.h: the one random number generator of the runtime.
 *
 * Every random choice (initialisation, seed masks, shuffling, augmentation,
 * random growth) draws from an rt_rng, so a run is a pure function of its
 * seed and thread count, and the state fits in a checkpoint.
 *
 *   rt_rng r; rt_rng_seed(&r, 7);
 *   float u = rt_rng_uniform(&r);          // [0, 1)
 *   uint32_t k = rt_rng_below(&r, 10);     // 0..9
 */
#ifndef ILNAS_RT_RNG_H
#define ILNAS_RT_RNG_H

#include <stdint.h>

typedef struct rt_rng {
  uint64_t s[4]; /* xoshiro256** state */
} rt_rng;

static inline uint64_t rt_rng_splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline void rt_rng_seed(rt_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = rt_rng_splitmix(&seed);
}

static inline uint64_t rt_rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rt_rng_next(rt_rng *r) {
  uint64_t *s = r->s;
  uint64_t out = rt_rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
  s[2] ^= t; s[3] = rt_rng_rotl(s[3], 45);
  return out;
}

/* Uniform in [0, 1) with 24 random bits: exact in a float. */
static inline float rt_rng_uniform(rt_rng *r) {
  return (float)(rt_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform in [0, n) without modulo bias worth caring about (n < 2^32). */
static inline uint32_t rt_rng_below(rt_rng *r, uint32_t n) {
  return (uint32_t)(((rt_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

#endif
