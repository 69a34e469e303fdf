/* cg_test_rt.c: a stand-in for the runtime library, linked into the driver
 * that test_driver.c emits. It logs every call with its arguments, so the
 * test can compare the program's behaviour with the schedule it asked for,
 * and it checks that il_main receives the very blob the module exports. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

extern const unsigned char il_ir_blob[];
extern const unsigned long il_ir_size;

int il_main(int argc, char **argv, const unsigned char *blob, unsigned long size,
            void (*fwd)(void *), void (*bwd)(void *));

static FILE *cg_log;
static int cg_x; /* its address is the x every call must receive */

static void cg_rec(const char *fn, void *x, int n, const int64_t *a) {
  fprintf(cg_log, "%s %s", fn, x == &cg_x ? "x" : "BAD-X");
  for (int i = 0; i < n; i++)
    fprintf(cg_log, " %" PRId64, a[i]);
  fputc('\n', cg_log);
}

typedef int64_t I;

void rt_a0(void *x) { cg_rec(__func__, x, 0, NULL); }
void rt_a1(void *x, I a) {
  I v[] = {a};
  cg_rec(__func__, x, 1, v);
}
void rt_a2(void *x, I a, I b) {
  I v[] = {a, b};
  cg_rec(__func__, x, 2, v);
}
void rt_b2(void *x, I a, I b) {
  I v[] = {a, b};
  cg_rec(__func__, x, 2, v);
}
void rt_a3(void *x, I a, I b, I c) {
  I v[] = {a, b, c};
  cg_rec(__func__, x, 3, v);
}
void rt_a4(void *x, I a, I b, I c, I d) {
  I v[] = {a, b, c, d};
  cg_rec(__func__, x, 4, v);
}
void rt_a5(void *x, I a, I b, I c, I d, I e) {
  I v[] = {a, b, c, d, e};
  cg_rec(__func__, x, 5, v);
}
void rt_a6(void *x, I a, I b, I c, I d, I e, I f) {
  I v[] = {a, b, c, d, e, f};
  cg_rec(__func__, x, 6, v);
}
void rt_a7(void *x, I a, I b, I c, I d, I e, I f, I g) {
  I v[] = {a, b, c, d, e, f, g};
  cg_rec(__func__, x, 7, v);
}
void rt_a8(void *x, I a, I b, I c, I d, I e, I f, I g, I h) {
  I v[] = {a, b, c, d, e, f, g, h};
  cg_rec(__func__, x, 8, v);
}
void rt_b8(void *x, I a, I b, I c, I d, I e, I f, I g, I h) {
  I v[] = {a, b, c, d, e, f, g, h};
  cg_rec(__func__, x, 8, v);
}

int il_main(int argc, char **argv, const unsigned char *blob, unsigned long size,
            void (*fwd)(void *), void (*bwd)(void *)) {
  if (argc < 2 || !(cg_log = fopen(argv[1], "w")))
    return 99;
  fprintf(cg_log, "argc %d\nsize %lu\nblob ", argc, size);
  for (unsigned long i = 0; i < size; i++)
    fprintf(cg_log, "%02x", blob[i]);
  fprintf(cg_log, "\nsymbols %s\n",
          blob == il_ir_blob && size == il_ir_size ? "match" : "DIFFER");
  fputs("forward\n", cg_log);
  fwd(&cg_x);
  fputs("backward\n", cg_log);
  bwd(&cg_x);
  fputs("end\n", cg_log);
  if (fclose(cg_log) != 0)
    return 98;
  return 40 + argc;
}
