/* ilnasc: model.ilnas -> a trainable executable.
 *
 * The pipeline, in order: parse and check (frontend), lower to the
 * super-network with its seed α (ir), schedule, then emit the graph driver
 * with LLVM and link it with the runtime library (codegen). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/version.h"
#include "ilnasc/driver.h"
#include "app/export.h"
#include "app/train.h"
#include "frontend/spec.h"
#include "ir/ir.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: ilnasc [options] model.ilnas\n"
          "\n"
          "Compiles a model description into an executable that trains, grows\n"
          "and evaluates the network ('./model --help' once built).\n"
          "\n"
          "options:\n"
          "  -o FILE          output executable (default: the model file's name\n"
          "                   without .ilnas)\n"
          "  --check          parse and check only\n"
          "  --dump-ir        print the IR (tensors, layers, α counts, schedule)\n"
          "  --emit-llvm FILE write the graph driver as LLVM IR text\n"
          "  -c FILE          write the graph driver as an object file, no link\n"
          "  --emit-c CKPT -o FILE.c, --emit-cuda CKPT -o FILE.cu\n"
          "                   a trained checkpoint as fixed-architecture C or CUDA\n"
          "                   source plus FILE.h (and FILE.weights past 4 MiB of\n"
          "                   weights); see './model export --help'\n"
          "  --emit-onnx CKPT -o FILE.onnx, --emit-pytorch CKPT -o FILE.py\n"
          "                   the same network as an ONNX model, or a PyTorch\n"
          "                   module with its weights FILE.bin\n"
          "  --max-params N   refuse a super-network of more than N parameters\n"
          "                   (default %lld; also ILNAS_MAX_PARAMS)\n"
          "  --max-arena B    refuse an activation arena of more than B bytes at\n"
          "                   the model's batch (default %lld; also ILNAS_MAX_ARENA)\n"
          "  --version        the version of ilnas and of the LLVM it uses\n"
          "  -h, --help       this text\n",
          (long long)IR_MAX_PARAMS_DEFAULT, (long long)IR_MAX_ARENA_DEFAULT);
}

typedef struct opts {
  const char *in, *out, *ll, *obj;
  const char *emit[APP_EXPORT_TARGETS]; /* checkpoints to export, by target */
  int check, dump;
  ir_limits lim;
} opts;

/* A limit: a whole number of at least 1. */
static int parse_limit(const char *what, const char *text, int64_t *v) {
  char *end;
  errno = 0;
  long long x = text ? strtoll(text, &end, 10) : 0;
  if (!text || errno || end == text || *end || x < 1) {
    fprintf(stderr, "ilnasc: error: %s needs a whole number of at least 1, not '%s'\n",
            what, text ? text : "");
    return 2;
  }
  *v = x;
  return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
  o->lim = ir_limits_default();
  const char *env = getenv("ILNAS_MAX_PARAMS");
  if (env && *env && parse_limit("ILNAS_MAX_PARAMS", env, &o->lim.max_params)) return 2;
  env = getenv("ILNAS_MAX_ARENA");
  if (env && *env && parse_limit("ILNAS_MAX_ARENA", env, &o->lim.max_arena)) return 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **val = strcmp(a, "-o") == 0            ? &o->out
                       : strcmp(a, "--emit-llvm") == 0 ? &o->ll
                       : strcmp(a, "-c") == 0          ? &o->obj
                       : strcmp(a, "--emit-c") == 0    ? &o->emit[APP_EXPORT_C]
                       : strcmp(a, "--emit-cuda") == 0 ? &o->emit[APP_EXPORT_CUDA]
                       : strcmp(a, "--emit-onnx") == 0 ? &o->emit[APP_EXPORT_ONNX]
                       : strcmp(a, "--emit-pytorch") == 0 ? &o->emit[APP_EXPORT_TORCH]
                                                          : NULL;
    if (val) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ilnasc: error: %s needs a file name\n", a);
        return 2;
      }
      *val = argv[++i];
    } else if (strcmp(a, "--max-params") == 0 || strcmp(a, "--max-arena") == 0) {
      int64_t *v = a[6] == 'p' ? &o->lim.max_params : &o->lim.max_arena;
      if (parse_limit(a, i + 1 < argc ? argv[++i] : NULL, v)) return 2;
    } else if (strcmp(a, "--check") == 0) {
      o->check = 1;
    } else if (strcmp(a, "--dump-ir") == 0) {
      o->dump = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(a, "--version") == 0) {
      printf("ilnasc %s (LLVM %s)\n", ILNAS_VERSION, ILNAS_LLVM_VERSION);
      return 1;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "ilnasc: error: unknown option '%s' (see --help)\n", a);
      return 2;
    } else if (o->in) {
      fprintf(stderr, "ilnasc: error: more than one model file ('%s', '%s')\n",
              o->in, a);
      return 2;
    } else {
      o->in = a;
    }
  }
  int emits = 0;
  for (int t = 0; t < APP_EXPORT_TARGETS; t++) emits += o->emit[t] != NULL;
  if (emits) {
    if (o->in || emits > 1 || !o->out) {
      fprintf(stderr, "ilnasc: error: --emit-c/--emit-cuda/--emit-onnx/--emit-pytorch take one "
                      "checkpoint and -o FILE, and no model file\n");
      return 2;
    }
    return 0;
  }
  if (!o->in) {
    usage(stderr);
    return 2;
  }
  return 0;
}

/* Default output: the model file's base name without its extension. */
static char *default_out(const char *in) {
  const char *base = strrchr(in, '/');
  base = base ? base + 1 : in;
  size_t n = strlen(base);
  if (n > 6 && strcmp(base + n - 6, ".ilnas") == 0) n -= 6;
  char *out = malloc(n + 8);
  if (!out) return NULL;
  memcpy(out, base, n);
  strcpy(out + n, n ? "" : "a.out");
  if (strcmp(out, base) == 0) strcat(out, ".bin"); /* never overwrite the input */
  return out;
}

static int emit(const ir_graph *g, const opts *o, const char *out) {
  ir_call *fwd, *bwd;
  int nf, nb;
  uint8_t *blob;
  size_t blob_size;
  char err[2048];
  if (ir_schedule(g, &fwd, &nf, &bwd, &nb) || ir_serialize(g, &g->arch, &blob, &blob_size)) {
    fprintf(stderr, "ilnasc: error: out of memory\n");
    return 1;
  }
  _Static_assert(sizeof(cg_call) == sizeof(ir_call) && (int)CG_MAX_ARGS == (int)IR_MAX_ARGS,
                 "ir_call and cg_call must agree");
  cg_driver d = {blob, blob_size, (const cg_call *)fwd, nf, (const cg_call *)bwd, nb};
  int rc = 0;
  if (o->ll && cg_emit_llvm(&d, o->ll, err, sizeof err)) rc = 1;
  if (!rc && o->obj && cg_emit_object(&d, o->obj, err, sizeof err)) rc = 1;
  if (!rc && out) {
    char obj[4096];
    snprintf(obj, sizeof obj, "%s.%ld.o", out, (long)getpid());
    if (cg_emit_object(&d, obj, err, sizeof err) || cg_link(obj, out, err, sizeof err))
      rc = 1;
    remove(obj);
  }
  if (rc) fprintf(stderr, "ilnasc: error: %s\n", err);
  free(fwd), free(bwd), free(blob);
  return rc;
}

/* Outputs never destroy inputs: none may be the model file, a checkpoint or
 * another model source (app_output_ok). The --emit-* outputs are checked
 * by app_export, with the header and weights beside them. */
static int outputs_ok(const opts *o, const char *out) {
  char err[1024];
  const char *file[3] = {out, o->ll, o->obj};
  const char *what[3] = {"an executable", "LLVM IR", "an object file"};
  for (int i = 0; i < 3; i++)
    if (file[i] && app_output_ok(file[i], o->in, what[i], err, sizeof err)) {
      fprintf(stderr, "ilnasc: error: %s\n", err);
      return -1;
    }
  return 0;
}

int main(int argc, char **argv) {
  opts o = {0};
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc == 1 ? 0 : rc;
  for (int t = 0; t < APP_EXPORT_TARGETS; t++) {
    if (!o.emit[t]) continue;
    app_export_opts eo;
    app_export_opts_default(&eo);
    eo.target = (app_export_target)t;
    eo.out = o.out;
    char err[1024];
    if (app_export(o.emit[t], &eo, NULL, err, sizeof err)) {
      fprintf(stderr, "ilnasc: error: %s\n", err);
      return 1;
    }
    return 0;
  }

  fe_model m;
  if (fe_parse_file(o.in, &m, stderr)) return 1;
  ir_graph *g = ir_build_limited(&m, &o.lim, stderr);
  fe_model_free(&m);
  if (!g) return 1;
  if (o.dump) ir_dump(g, stdout);
  rc = 0;
  if (!o.check) {
    char *out = NULL;
    if (!o.out && !o.ll && !o.obj && !o.dump) out = default_out(o.in);
    rc = outputs_ok(&o, o.out ? o.out : out) ? 1 : emit(g, &o, o.out ? o.out : out);
    free(out);
  }
  ir_free(g);
  return rc;
}
