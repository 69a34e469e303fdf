/* main.c: the produced binary's command line. The graph driver emitted by
 * ilnasc defines main(), which hands the embedded IR and the compiled
 * forward and backward passes to il_main. */
#define _GNU_SOURCE /* fopencookie */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/export.h"
#include "base/version.h"
#include "ir/ir.h"
#include "app/plot.h"
#include "app/train.h"

int il_main(int argc, char **argv, const unsigned char *blob,
            unsigned long blob_size, rt_graph_fn fwd, rt_graph_fn bwd);

static const char *prog = "model";

static void usage_main(FILE *f, const ir_graph *g) {
  fprintf(f,
          "usage: %s <command> [options]\n"
          "\n"
          "A network compiled by ilnasc from model '%s'.\n"
          "\n"
          "commands:\n"
          "  train          train (and grow) the network, write RUN_DIR/metrics.jsonl\n"
          "                 and RUN_DIR/final.ckpt\n"
          "  eval CKPT      test accuracy of a checkpoint (of each task, with tasks)\n"
          "  info CKPT      per-layer table of a checkpoint (of each task, with tasks)\n"
          "  export --c CKPT -o FILE.c | --cuda CKPT -o FILE.cu\n"
          "                 the trained network as fixed-architecture C or CUDA\n"
          "                 source with its header FILE.h (no ilnas runtime needed)\n"
          "  export --onnx CKPT -o FILE.onnx | --pytorch CKPT -o FILE.py\n"
          "                 the same network for other tools: an ONNX model, or a\n"
          "                 PyTorch module with its weights FILE.bin\n"
          "  plot RUN_DIR... -o FILE.svg\n"
          "                 training loss, test accuracy and active parameters\n"
          "                 against epochs, one line per run\n"
          "  ir             print the embedded IR\n"
          "  --version      the model's name and the ilnasc that compiled it\n"
          "\n"
          "'%s <command> --help' shows a command's options.\n",
          prog, g ? g->cfg.name : "?", prog);
}

static void usage_train(FILE *f, const ir_graph *g) {
  const fe_model *m = &g->cfg;
  fprintf(f,
          "usage: %s train [options]\n"
          "\n"
          "  --epochs N        epochs to train (model: %d)\n"
          "  --lr RATE         the learning rate the schedule starts from (model: %g);\n"
          "                    with --from, fine-tuning usually wants less\n"
          "  --freeze-last N   the last N epochs of the run grow nothing (model: %d)\n"
          "  --train-limit N   use the first N training images (default: all)\n"
          "  --test-limit N    evaluate on the first N test images between epochs\n"
          "                    (default: all; the last epoch always uses all)\n"
          "  --data PATH       data set location (model: %s)\n"
          "  --run-dir DIR     where metrics.jsonl and checkpoints go (default: run)\n"
          "  --seed N          seed for initialisation and data order (model: %" PRIu64 ")\n"
          "  --threads N       worker threads (default: all cores)\n"
          "  --search MODE     fixed | ilnas | random (model: %s)\n"
          "  --backend NAME    cpu (default: LLVM-JIT kernels specialised to each\n"
          "                    layer's α pattern) | ref (the reference kernels) |\n"
          "                    blas (dense OpenBLAS times the 0/1 masks) |\n"
          "                    cuda (PTX kernels through the CUDA driver; needs a GPU) |\n"
          "                    auto (cuda where a GPU is present, else cpu; says which);\n"
          "                    NAME/bounds lays the activations out at the template's\n"
          "                    bounds, not the live network's (slower; to compare)\n"
          "  --resume CKPT     continue a run from its checkpoint (same options)\n"
          "  --from CKPT       start from a trained checkpoint of the same template:\n"
          "                    its alpha, weights and batch norm carry over, a new\n"
          "                    classifier when the classes differ (transfer)\n"
          "  --new-head        with --from: a new classifier even for the same classes\n"
          "  --task NAME       with --from a checkpoint of several tasks: the task\n"
          "                    whose network the run starts from\n"
          "  --stop-after N    stop after epoch N, leaving RUN_DIR/last.ckpt\n"
          "  --quiet           no progress output\n"
          "  --profile         time every layer's forward and backward, the loss\n"
          "                    and the SGD step, and the steps' waits for data;\n"
          "                    a table on stderr at the end (by function: set\n"
          "                    ILNAS_PERF=1 under `perf record -k 1`, then\n"
          "                    `perf inject --jit` names the JIT's kernels)\n"
          "  --skip-bad        an image folder's unreadable files are skipped, each\n"
          "                    reported, instead of stopping the run\n"
          "  --loaders N       threads that decode an image folder (default: --threads)\n"
          "\n"
          "Data-parallel: `mpirun -np N %s train ...` (Open MPI) trains on N ranks, each\n"
          "on its part of every batch (the model's batch is the sum of the parts),\n"
          "gradients summed over the ranks every step; rank 0 writes RUN_DIR and\n"
          "reports. --threads defaults to the cores over the ranks on the machine.\n",
          prog, m->epochs, m->lr, m->freeze_last, m->data_path, m->seed, fe_search_name(m->method),
          prog);
  if (m->n_tasks > 0) {
    fprintf(f, "\nModel '%s' has %d tasks, trained together, one batch of each per step,\n"
            "%g of each task's network shared:", m->name, m->n_tasks, m->shared);
    for (int k = 0; k < m->n_tasks; k++)
      fprintf(f, "%s %s (%d classes, %s)", k ? "," : "", m->tasks[k].name, m->tasks[k].classes,
              m->tasks[k].data_path);
    fprintf(f, ".\n--data and --from are for a single task; --train-limit applies to each.\n");
  }
}

/* Parses the integer value of option argv[*i]; reports and returns -1 on
 * a missing or malformed value. */
static int int_arg(int argc, char **argv, int *i, long long lo, long long *out) {
  const char *opt = argv[*i];
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s: error: %s needs a value\n", prog, opt);
    return -1;
  }
  char *end;
  errno = 0;
  long long v = strtoll(argv[++*i], &end, 10);
  if (errno || *end || end == argv[*i] || v < lo || v > INT32_MAX) {
    fprintf(stderr, "%s: error: %s expects an integer >= %lld, got '%s'\n", prog,
            opt, lo, argv[*i]);
    return -1;
  }
  *out = v;
  return 0;
}

static int str_arg(int argc, char **argv, int *i, const char **out) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "%s: error: %s needs a value\n", prog, argv[*i]);
    return -1;
  }
  *out = argv[++*i];
  return 0;
}

/* A rank's stderr, each line begun with "rank N: " (mpirun interleaves
 * the ranks' lines, and a failure every rank meets is said by each). */
typedef struct rank_tag {
  char tag[32];
  int bol; /* at the beginning of a line */
} rank_tag;

static int write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(2, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k, n -= (size_t)k;
  }
  return 0;
}

static ssize_t tag_write(void *cookie, const char *buf, size_t n) {
  rank_tag *t = cookie;
  for (size_t i = 0; i < n;) {
    if (t->bol && write_all(t->tag, strlen(t->tag))) return -1;
    const char *nl = memchr(buf + i, '\n', n - i);
    size_t k = nl ? (size_t)(nl - (buf + i)) + 1 : n - i;
    if (write_all(buf + i, k)) return -1;
    t->bol = nl != NULL, i += k;
  }
  return (ssize_t)n;
}

/* Rank 0's stderr stays as it is (its lines are the run's report). */
static void rank_stderr(const rt_comm *c) {
  static rank_tag tag = {.bol = 1};
  if (rt_comm_rank(c) == 0) return;
  snprintf(tag.tag, sizeof tag.tag, "rank %d: ", rt_comm_rank(c));
  FILE *f = fopencookie(&tag, "w", (cookie_io_functions_t){.write = tag_write});
  if (!f) return; /* untagged, then */
  setvbuf(f, NULL, _IOLBF, 0);
  fflush(stderr);
  stderr = f;
}

static int is_help(const char *a) {
  return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int cmd_train(ir_graph *g, int argc, char **argv, rt_graph_fn fwd,
                     rt_graph_fn bwd) {
  app_train_opts o;
  app_train_opts_default(&o);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *s;
    long long v;
    if (is_help(a)) {
      usage_train(stdout, g);
      return 0;
    } else if (strcmp(a, "--epochs") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.epochs = (int)v;
    } else if (strcmp(a, "--lr") == 0) {
      if (str_arg(argc, argv, &i, &s)) return 2;
      char *end;
      errno = 0;
      o.lr = strtod(s, &end);
      if (errno || *end || end == s || !(o.lr > 0) || !isfinite(o.lr)) {
        fprintf(stderr, "%s: error: --lr expects a positive number, got '%s'\n", prog, s);
        return 2;
      }
    } else if (strcmp(a, "--freeze-last") == 0) {
      if (int_arg(argc, argv, &i, 0, &v)) return 2;
      o.freeze_last = (int)v;
    } else if (strcmp(a, "--train-limit") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.train_limit = (int)v;
    } else if (strcmp(a, "--test-limit") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.test_limit = (int)v;
    } else if (strcmp(a, "--stop-after") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.stop_after = (int)v;
    } else if (strcmp(a, "--seed") == 0) {
      if (int_arg(argc, argv, &i, 0, &v)) return 2;
      o.seed = v;
    } else if (strcmp(a, "--threads") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.threads = (int)v;
    } else if (strcmp(a, "--data") == 0) {
      if (str_arg(argc, argv, &i, &o.data)) return 2;
    } else if (strcmp(a, "--run-dir") == 0) {
      if (str_arg(argc, argv, &i, &o.run_dir)) return 2;
    } else if (strcmp(a, "--resume") == 0) {
      if (str_arg(argc, argv, &i, &o.resume)) return 2;
    } else if (strcmp(a, "--from") == 0) {
      if (str_arg(argc, argv, &i, &o.from)) return 2;
    } else if (strcmp(a, "--new-head") == 0) {
      o.new_head = 1;
    } else if (strcmp(a, "--task") == 0) {
      if (str_arg(argc, argv, &i, &o.from_task)) return 2;
    } else if (strcmp(a, "--quiet") == 0) {
      o.quiet = 1;
    } else if (strcmp(a, "--profile") == 0) {
      o.profile = 1;
    } else if (strcmp(a, "--skip-bad") == 0) {
      o.skip_bad = 1;
    } else if (strcmp(a, "--loaders") == 0) {
      if (int_arg(argc, argv, &i, 1, &v)) return 2;
      o.loaders = (int)v;
    } else if (strcmp(a, "--search") == 0) {
      if (str_arg(argc, argv, &i, &s)) return 2;
      if (strcmp(s, "fixed") == 0) o.search = FE_SEARCH_FIXED;
      else if (strcmp(s, "ilnas") == 0) o.search = FE_SEARCH_ILNAS;
      else if (strcmp(s, "random") == 0) o.search = FE_SEARCH_RANDOM;
      else {
        fprintf(stderr, "%s: error: --search expects fixed, ilnas or random, got '%s'\n",
                prog, s);
        return 2;
      }
    } else if (strcmp(a, "--backend") == 0) {
      if (str_arg(argc, argv, &i, &s)) return 2;
      o.backend = s;
    } else {
      fprintf(stderr, "%s: error: unknown option '%s' for train (see --help)\n",
              prog, a);
      return 2;
    }
  }
  /* started by mpirun: one rank of a data-parallel run */
  char err[512];
  if (rt_comm_open(&o.comm, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", prog, err);
    return 1;
  }
  rank_stderr(o.comm);
  int rc = app_train(g, fwd, bwd, &o);
  if (rc) rt_comm_abort(o.comm, rc); /* the other ranks would wait for this one */
  rt_comm_close(o.comm);
  return rc;
}

/* eval and info: one checkpoint plus a few options. */
static int cmd_ckpt(ir_graph *g, int argc, char **argv, rt_graph_fn fwd) {
  int eval = strcmp(argv[1], "eval") == 0;
  const char *ckpt = NULL, *data = NULL, *backend = NULL;
  long long threads = 0;
  int skip_bad = 0;
  for (int i = 2; i < argc; i++) {
    if (is_help(argv[i])) {
      if (eval)
        printf("usage: %s eval CKPT [--data PATH] [--threads N] [--backend NAME] "
               "[--skip-bad]\n\n"
               "Evaluates a checkpoint on the test set; the last line is JSON\n"
               "with test_acc. An image folder's classes must be the checkpoint's.\n", prog);
      else
        printf("usage: %s info CKPT\n\nPer-layer shapes, active and total "
               "parameters, density and live channels of a checkpoint.\n", prog);
      return 0;
    } else if (eval && strcmp(argv[i], "--data") == 0) {
      if (str_arg(argc, argv, &i, &data)) return 2;
    } else if (eval && strcmp(argv[i], "--backend") == 0) {
      if (str_arg(argc, argv, &i, &backend)) return 2;
    } else if (eval && strcmp(argv[i], "--threads") == 0) {
      if (int_arg(argc, argv, &i, 1, &threads)) return 2;
    } else if (eval && strcmp(argv[i], "--skip-bad") == 0) {
      skip_bad = 1;
    } else if (argv[i][0] == '-' || ckpt) {
      fprintf(stderr, "%s: error: unexpected argument '%s' for %s (see --help)\n",
              prog, argv[i], argv[1]);
      return 2;
    } else {
      ckpt = argv[i];
    }
  }
  if (!ckpt) {
    fprintf(stderr, "%s: error: %s needs a checkpoint (see --help)\n", prog, argv[1]);
    return 2;
  }
  return eval ? app_eval(g, fwd, ckpt, data, (int)threads, backend, skip_bad)
              : app_info(ckpt, stdout);
}

static int cmd_plot(int argc, char **argv) {
  const char *out = NULL;
  const char **dirs = calloc((size_t)argc, sizeof *dirs);
  int n = 0;
  if (!dirs) return 1;
  for (int i = 2; i < argc; i++) {
    if (is_help(argv[i])) {
      printf("usage: %s plot RUN_DIR... -o FILE.svg\n\nDraws training loss, test "
             "accuracy and active parameters against epochs from each run's\n"
             "metrics.jsonl, one line per run.\n", prog);
      free(dirs);
      return 0;
    } else if (strcmp(argv[i], "-o") == 0) {
      if (str_arg(argc, argv, &i, &out)) { free(dirs); return 2; }
    } else {
      dirs[n++] = argv[i];
    }
  }
  if (!n || !out) {
    fprintf(stderr, "%s: error: plot needs run directories and -o FILE.svg\n", prog);
    free(dirs);
    return 2;
  }
  char err[1024];
  int rc = app_output_ok(out, NULL, "a plot", err, sizeof err) ||
           app_plot(dirs, n, out, err, sizeof err);
  if (rc) fprintf(stderr, "%s: error: %s\n", prog, err);
  free(dirs);
  return rc ? 1 : 0;
}

static void usage_export(FILE *f) {
  fprintf(f,
          "usage: %s export --c CKPT -o FILE.c [options]\n"
          "       %s export --cuda CKPT -o FILE.cu [options]\n"
          "       %s export --onnx CKPT -o FILE.onnx [--task NAME]\n"
          "       %s export --pytorch CKPT -o FILE.py [--task NAME]\n"
          "\n"
          "Writes the trained network as plain C (needs only libm) or CUDA (the CUDA\n"
          "runtime, kernels of its own) with the architecture fixed: only active\n"
          "weights are stored and multiplied, dead layers and channels are gone,\n"
          "batch norm is folded. FILE.h beside it declares\n"
          "  int PREFIX_forward(const float *input, float *logits, int batch);\n"
          "  extern const int PREFIX_input_shape[3], PREFIX_classes;\n"
          "with PREFIX the file's stem; input is raw images scaled to [0, 1], NCHW:\n"
          "the training normalisation is applied inside. Past the threshold the\n"
          "weights go to FILE.weights, read by int PREFIX_load(const char *path).\n"
          "\n"
          "--onnx writes an ONNX model (IR 7, opset 13) of the same network: input\n"
          "'input' [N, C, H, W] in [0, 1], output 'logits' [N, classes]; each layer\n"
          "is a dense Conv or Gemm over its live channels (zeros for the inactive\n"
          "weights between them), batch norm folded, the normalisation inside.\n"
          "--pytorch writes the same network as FILE.py, a torch.nn.Module Net() that\n"
          "reads its weights from FILE.bin beside it; each weight's 0/1 mask is a\n"
          "buffer, so that training the module on keeps the architecture.\n"
          "\n"
          "  -o FILE                   output source file (required)\n"
          "  --weights-threshold BYTES weights larger than this go to FILE.weights\n"
          "                            (default %d; 0: always)\n"
          "  --dense                   store every weight between live channels, zeros\n"
          "                            included (the masked-dense network, to compare\n"
          "                            sizes); computes the same function\n"
          "  --task NAME               the network of task NAME, of a model with tasks\n"
          "                            (one network per task: export each)\n",
          prog, prog, prog, prog, (int)APP_EXPORT_THRESHOLD);
}

static int cmd_export(int argc, char **argv) {
  app_export_opts o;
  app_export_opts_default(&o);
  const char *ckpt = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    long long v;
    if (is_help(a)) {
      usage_export(stdout);
      return 0;
    } else if (strcmp(a, "--c") == 0 || strcmp(a, "--cuda") == 0 || strcmp(a, "--onnx") == 0 ||
               strcmp(a, "--pytorch") == 0) {
      if (ckpt) {
        fprintf(stderr, "%s: error: export takes one of --c, --cuda, --onnx or --pytorch, once\n",
                prog);
        return 2;
      }
      o.target = strcmp(a, "--c") == 0      ? APP_EXPORT_C
                 : strcmp(a, "--cuda") == 0 ? APP_EXPORT_CUDA
                 : strcmp(a, "--onnx") == 0 ? APP_EXPORT_ONNX
                                            : APP_EXPORT_TORCH;
      if (str_arg(argc, argv, &i, &ckpt)) return 2;
    } else if (strcmp(a, "-o") == 0) {
      if (str_arg(argc, argv, &i, &o.out)) return 2;
    } else if (strcmp(a, "--weights-threshold") == 0) {
      if (int_arg(argc, argv, &i, 0, &v)) return 2;
      o.weights_threshold = v;
    } else if (strcmp(a, "--dense") == 0) {
      o.dense = 1;
    } else if (strcmp(a, "--task") == 0) {
      if (str_arg(argc, argv, &i, &o.task)) return 2;
    } else {
      fprintf(stderr, "%s: error: unexpected argument '%s' for export (see --help)\n",
              prog, a);
      return 2;
    }
  }
  if (!ckpt || !o.out) {
    fprintf(stderr, "%s: error: export needs --c CKPT, --cuda CKPT, --onnx CKPT or --pytorch "
                    "CKPT, and -o FILE (see --help)\n", prog);
    return 2;
  }
  if ((o.target == APP_EXPORT_ONNX || o.target == APP_EXPORT_TORCH) &&
      (o.dense || o.weights_threshold != APP_EXPORT_THRESHOLD)) {
    fprintf(stderr, "%s: error: --dense and --weights-threshold are for --c and --cuda; the "
                    "ONNX and PyTorch exports are dense ops\n", prog);
    return 2;
  }
  char err[1024];
  app_export_stats s;
  if (app_export(ckpt, &o, &s, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", prog, err);
    return 1;
  }
  if (o.target == APP_EXPORT_ONNX || o.target == APP_EXPORT_TORCH) {
    printf("wrote %s: %d ops, %lld active weights and biases, %lld bytes%s\n", o.out, s.ops,
           (long long)s.weights, (long long)s.table_bytes,
           o.target == APP_EXPORT_TORCH ? " of weights and masks beside it (.bin)" : "");
    return 0;
  }
  printf("wrote %s: %d ops, %lld weights (%lld bytes%s), index tables %lld bytes, "
         "workspace %lld floats per image\n",
         o.out, s.ops, (long long)s.weights, (long long)s.weight_bytes,
         s.weights_file ? ", in the .weights file" : "", (long long)s.table_bytes,
         (long long)s.ws_floats);
  return 0;
}

int il_main(int argc, char **argv, const unsigned char *blob,
            unsigned long blob_size, rt_graph_fn fwd, rt_graph_fn bwd) {
  if (argc > 0 && argv[0]) prog = argv[0];
  char err[512];
  ir_graph *g = ir_deserialize(blob, blob_size, err, sizeof err);
  if (!g) {
    fprintf(stderr, "%s: error: the embedded IR is damaged: %s\n", prog, err);
    return 1;
  }
  int rc;
  if (argc < 2) {
    usage_main(stderr, g);
    rc = 2;
  } else if (is_help(argv[1])) {
    usage_main(stdout, g);
    rc = 0;
  } else if (strcmp(argv[1], "--version") == 0) {
    printf("model '%s', compiled by ilnasc %s (LLVM %s)\n", g->cfg.name, ILNAS_VERSION,
           ILNAS_LLVM_VERSION);
    rc = 0;
  } else if (strcmp(argv[1], "train") == 0) {
    rc = cmd_train(g, argc, argv, fwd, bwd);
  } else if (strcmp(argv[1], "eval") == 0 || strcmp(argv[1], "info") == 0) {
    rc = cmd_ckpt(g, argc, argv, fwd);
  } else if (strcmp(argv[1], "plot") == 0) {
    rc = cmd_plot(argc, argv);
  } else if (strcmp(argv[1], "export") == 0) {
    rc = cmd_export(argc, argv);
  } else if (strcmp(argv[1], "ir") == 0) {
    ir_dump(g, stdout);
    rc = 0;
  } else {
    fprintf(stderr, "%s: error: unknown command '%s'\n", prog, argv[1]);
    usage_main(stderr, g);
    rc = 2;
  }
  ir_free(g);
  return rc;
}
