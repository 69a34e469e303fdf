/* check.h: the one assertion of the C tests. A failed CHECK reports where
 * and why and counts; the test's main returns non-zero if any failed, so
 * one run shows every failure, not just the first. */
#ifndef ILNAS_TESTS_CHECK_H
#define ILNAS_TESTS_CHECK_H

#include <stdio.h>

static int failures;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      failures++;                                                              \
      fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                    \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
    }                                                                          \
  } while (0)

#endif
