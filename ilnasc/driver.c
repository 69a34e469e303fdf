/* driver.c: emits the graph driver (see driver.h) with the LLVM C API and
 * links it with the runtime library through the system C compiler driver.
 *
 * One LLVM context per emit, so concurrent emits never share state and
 * nothing outlives the call. */
#include "ilnasc/driver.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#ifndef ILNAS_LINK_FLAGS
#error "ILNAS_LINK_FLAGS must be set by the build (ilnasc/CMakeLists.txt)"
#endif

static void cg_errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- module construction ---------------------------------------------- */

static pthread_once_t cg_target_once = PTHREAD_ONCE_INIT;
static int cg_target_failed;

static void cg_init_target(void) {
  if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
    cg_target_failed = 1;
}

typedef struct cg_emit {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMTargetMachineRef tm;
  LLVMBuilderRef b;
  LLVMTypeRef i8p, i32, i64, voidt;
  LLVMTypeRef graph_fn_ty; /* void (i8*), shared by forward and backward */
} cg_emit;

static void cg_emit_dispose(cg_emit *e) {
  if (e->b)
    LLVMDisposeBuilder(e->b);
  if (e->mod)
    LLVMDisposeModule(e->mod);
  if (e->tm)
    LLVMDisposeTargetMachine(e->tm);
  if (e->ctx)
    LLVMContextDispose(e->ctx);
  memset(e, 0, sizeof *e);
}

/* Names the module defines or needs itself; a runtime entry point by one of
 * these names would be renamed by LLVM or bound to the driver's own code, so
 * it is refused. The graph function names cover their .partN pieces. */
static int cg_reserved(const char *name) {
  static const char *const names[] = {"il_ir_blob", "il_ir_size", "il_main", "main"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(name, names[i]) == 0)
      return 1;
  return strncmp(name, "il_graph_forward", 16) == 0 ||
         strncmp(name, "il_graph_backward", 17) == 0;
}

static int cg_check_calls(const cg_call *calls, int n, const char *which, char *err,
                          size_t errlen) {
  if (n < 0 || (n > 0 && !calls)) {
    cg_errf(err, errlen, "cg: %s schedule: %d calls but %s", which, n,
            n < 0 ? "a negative count" : "no call array");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    const cg_call *c = &calls[i];
    if (!c->fn || !c->fn[0]) {
      cg_errf(err, errlen, "cg: %s call %d: no function name", which, i);
      return -1;
    }
    if (c->nargs < 0 || c->nargs > CG_MAX_ARGS) {
      cg_errf(err, errlen, "cg: %s call %d ('%s'): %d arguments, expected 0..%d", which, i,
              c->fn, c->nargs, CG_MAX_ARGS);
      return -1;
    }
    if (cg_reserved(c->fn)) {
      cg_errf(err, errlen, "cg: %s call %d: '%s' is a name the driver defines itself", which,
              i, c->fn);
      return -1;
    }
  }
  return 0;
}

/* LLVM's code generator is superlinear in the size of one function (a
 * 5,000-call block took 0.9 s, 20,000 calls 2.7 s), so a long schedule is
 * cut into internal functions of this many calls each, which the graph
 * function calls in order; time then grows linearly with the schedule. */
enum { CG_CALLS_PER_PART = 256 };

/* Appends calls[from, to) at the builder's position, passing x on. Each
 * runtime entry point is declared on first use; the module's symbol table
 * is the name index, so a call costs one hash lookup. */
static int cg_emit_calls(cg_emit *e, LLVMValueRef x, const cg_call *calls, int from, int to,
                         const char *which, char *err, size_t errlen) {
  LLVMTypeRef params[1 + CG_MAX_ARGS];
  LLVMValueRef args[1 + CG_MAX_ARGS];
  params[0] = e->i8p;
  for (int k = 1; k <= CG_MAX_ARGS; k++)
    params[k] = e->i64;
  args[0] = x;

  for (int i = from; i < to; i++) {
    const cg_call *c = &calls[i];
    LLVMTypeRef fty = LLVMFunctionType(e->voidt, params, (unsigned)(1 + c->nargs), 0);
    LLVMValueRef callee = LLVMGetNamedFunction(e->mod, c->fn);
    if (callee) {
      unsigned have = LLVMCountParams(callee);
      if (have != (unsigned)(1 + c->nargs)) {
        cg_errf(err, errlen,
                "cg: %s call %d: '%s' is called with %d arguments here but with %u "
                "elsewhere in the schedule; one runtime function has one signature",
                which, i, c->fn, c->nargs, have - 1);
        return -1;
      }
    } else {
      callee = LLVMAddFunction(e->mod, c->fn, fty);
    }
    for (int k = 0; k < c->nargs; k++)
      args[1 + k] = LLVMConstInt(e->i64, (unsigned long long)c->args[k], 1);
    LLVMBuildCall2(e->b, fty, callee, args, (unsigned)(1 + c->nargs), "");
  }
  return 0;
}

static LLVMValueRef cg_graph_fn(cg_emit *e, const char *name, LLVMLinkage linkage) {
  LLVMValueRef f = LLVMAddFunction(e->mod, name, e->graph_fn_ty);
  LLVMSetLinkage(f, linkage);
  LLVMSetValueName2(LLVMGetParam(f, 0), "x", 1);
  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(e->ctx, f, "entry"));
  return f;
}

static int cg_build_graph_fn(cg_emit *e, const char *name, const cg_call *calls, int n,
                             const char *which, char *err, size_t errlen) {
  LLVMValueRef f = cg_graph_fn(e, name, LLVMExternalLinkage);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(f);
  LLVMValueRef x = LLVMGetParam(f, 0);
  if (n <= CG_CALLS_PER_PART) {
    if (cg_emit_calls(e, x, calls, 0, n, which, err, errlen))
      return -1;
  } else {
    size_t len = strlen(name) + 32;
    char *part_name = malloc(len);
    if (!part_name) {
      cg_errf(err, errlen, "cg: out of memory");
      return -1;
    }
    for (int from = 0, k = 0; from < n; from += CG_CALLS_PER_PART, k++) {
      int to = n - from > CG_CALLS_PER_PART ? from + CG_CALLS_PER_PART : n;
      snprintf(part_name, len, "%s.part%d", name, k);
      /* Internal, not private: a backtrace then names the part. */
      LLVMValueRef part = cg_graph_fn(e, part_name, LLVMInternalLinkage);
      if (cg_emit_calls(e, LLVMGetParam(part, 0), calls, from, to, which, err, errlen)) {
        free(part_name);
        return -1;
      }
      LLVMBuildRetVoid(e->b);
      LLVMPositionBuilderAtEnd(e->b, entry);
      LLVMBuildCall2(e->b, e->graph_fn_ty, part, &x, 1, "");
    }
    free(part_name);
  }
  LLVMBuildRetVoid(e->b);
  return 0;
}

static int cg_build(const cg_driver *d, cg_emit *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  if (!d) {
    cg_errf(err, errlen, "cg: no driver given");
    return -1;
  }
  if (!d->blob && d->blob_size > 0) {
    cg_errf(err, errlen, "cg: IR blob of %zu bytes but no data", d->blob_size);
    return -1;
  }
  if (d->blob_size > UINT_MAX) {
    cg_errf(err, errlen, "cg: IR blob of %zu bytes is larger than LLVM can embed (%u)",
            d->blob_size, UINT_MAX);
    return -1;
  }
  if (cg_check_calls(d->fwd, d->n_fwd, "forward", err, errlen) ||
      cg_check_calls(d->bwd, d->n_bwd, "backward", err, errlen))
    return -1;

  pthread_once(&cg_target_once, cg_init_target);
  if (cg_target_failed) {
    cg_errf(err, errlen, "cg: this LLVM has no code generator for the host");
    return -1;
  }

  char *triple = LLVMGetDefaultTargetTriple();
  char *cpu = LLVMGetHostCPUName();
  char *features = LLVMGetHostCPUFeatures();
  LLVMTargetRef target = NULL;
  char *msg = NULL;
  int rc = 0;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    cg_errf(err, errlen, "cg: no LLVM target for host triple '%s': %s", triple,
            msg ? msg : "unknown error");
    rc = -1;
  } else {
    /* PIC, because the system compiler links position-independent
     * executables by default and refuses absolute relocations in them. */
    e->tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelDefault,
                                    LLVMRelocPIC, LLVMCodeModelDefault);
    if (!e->tm) {
      cg_errf(err, errlen, "cg: LLVM cannot create a target machine for '%s' (cpu %s)",
              triple, cpu);
      rc = -1;
    }
  }
  if (msg)
    LLVMDisposeMessage(msg);
  if (rc == 0) {
    e->ctx = LLVMContextCreate();
    e->mod = LLVMModuleCreateWithNameInContext("ilnas_driver", e->ctx);
    LLVMSetTarget(e->mod, triple);
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(e->tm);
    LLVMSetModuleDataLayout(e->mod, td);
    LLVMDisposeTargetData(td);
  }
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(features);
  if (rc)
    return rc;

  LLVMContextRef ctx = e->ctx;
  e->b = LLVMCreateBuilderInContext(ctx);
  e->i8p = LLVMPointerType(LLVMInt8TypeInContext(ctx), 0);
  e->i32 = LLVMInt32TypeInContext(ctx);
  e->i64 = LLVMInt64TypeInContext(ctx);
  e->voidt = LLVMVoidTypeInContext(ctx);
  e->graph_fn_ty = LLVMFunctionType(e->voidt, &e->i8p, 1, 0);

  /* The object only ever goes into an executable, so symbols it defines can
   * be reached PC-relative instead of through the GOT (clang -fPIE does the
   * same). Such code still links into a non-PIE executable. The LLVM 14 C
   * API has no Max behaviour, which LLVM itself uses for these flags; the
   * module is never linked with other IR, so Error behaves the same. */
  LLVMValueRef two = LLVMConstInt(e->i32, 2, 0);
  LLVMAddModuleFlag(e->mod, LLVMModuleFlagBehaviorError, "PIC Level", 9,
                    LLVMValueAsMetadata(two));
  LLVMAddModuleFlag(e->mod, LLVMModuleFlagBehaviorError, "PIE Level", 9,
                    LLVMValueAsMetadata(two));

  /* External linkage, so the runtime (or a debugger) can find the blob by
   * name even without the pointer il_main receives. */
  LLVMValueRef blob_init = LLVMConstStringInContext(
      ctx, d->blob_size ? (const char *)d->blob : "", (unsigned)d->blob_size, 1);
  LLVMValueRef blob = LLVMAddGlobal(e->mod, LLVMTypeOf(blob_init), "il_ir_blob");
  LLVMSetInitializer(blob, blob_init);
  LLVMSetGlobalConstant(blob, 1);
  LLVMSetLinkage(blob, LLVMExternalLinkage);
  /* The runtime may read fixed-width header fields straight from the blob. */
  LLVMSetAlignment(blob, 16);

  LLVMValueRef size_init = LLVMConstInt(e->i64, (unsigned long long)d->blob_size, 0);
  LLVMValueRef size = LLVMAddGlobal(e->mod, e->i64, "il_ir_size");
  LLVMSetInitializer(size, size_init);
  LLVMSetGlobalConstant(size, 1);
  LLVMSetLinkage(size, LLVMExternalLinkage);

  LLVMTypeRef graph_fn_ptr = LLVMPointerType(e->graph_fn_ty, 0);
  LLVMTypeRef i8pp = LLVMPointerType(e->i8p, 0);
  LLVMTypeRef il_main_params[] = {e->i32, i8pp, e->i8p, e->i64, graph_fn_ptr, graph_fn_ptr};
  LLVMTypeRef il_main_ty = LLVMFunctionType(e->i32, il_main_params, 6, 0);
  LLVMValueRef il_main = LLVMAddFunction(e->mod, "il_main", il_main_ty);
  LLVMTypeRef main_params[] = {e->i32, i8pp};
  LLVMValueRef mainf =
      LLVMAddFunction(e->mod, "main", LLVMFunctionType(e->i32, main_params, 2, 0));

  if (cg_build_graph_fn(e, "il_graph_forward", d->fwd, d->n_fwd, "forward", err, errlen) ||
      cg_build_graph_fn(e, "il_graph_backward", d->bwd, d->n_bwd, "backward", err, errlen))
    return -1;

  LLVMPositionBuilderAtEnd(e->b, LLVMAppendBasicBlockInContext(ctx, mainf, "entry"));
  LLVMValueRef main_args[] = {
      LLVMGetParam(mainf, 0),
      LLVMGetParam(mainf, 1),
      LLVMConstBitCast(blob, e->i8p),
      size_init,
      LLVMGetNamedFunction(e->mod, "il_graph_forward"),
      LLVMGetNamedFunction(e->mod, "il_graph_backward"),
  };
  LLVMValueRef ret = LLVMBuildCall2(e->b, il_main_ty, il_main, main_args, 6, "");
  LLVMBuildRet(e->b, ret);

  msg = NULL;
  if (LLVMVerifyModule(e->mod, LLVMReturnStatusAction, &msg)) {
    cg_errf(err, errlen, "cg: emitted driver fails LLVM verification: %s",
            msg ? msg : "no detail");
    rc = -1;
  }
  if (msg)
    LLVMDisposeMessage(msg);
  return rc;
}

int cg_emit_object(const cg_driver *d, const char *obj_path, char *err, size_t errlen) {
  if (!obj_path || !obj_path[0]) {
    cg_errf(err, errlen, "cg: no object file path");
    return -1;
  }
  cg_emit e;
  int rc = cg_build(d, &e, err, errlen);
  if (rc == 0) {
    char *msg = NULL;
    /* LLVM 14 takes the file name as char * but does not write to it. */
    if (LLVMTargetMachineEmitToFile(e.tm, e.mod, (char *)obj_path, LLVMObjectFile, &msg)) {
      cg_errf(err, errlen, "cg: cannot write object file '%s': %s", obj_path,
              msg ? msg : "unknown error");
      rc = -1;
    }
    if (msg)
      LLVMDisposeMessage(msg);
  }
  cg_emit_dispose(&e);
  return rc;
}

int cg_emit_llvm(const cg_driver *d, const char *ll_path, char *err, size_t errlen) {
  if (!ll_path || !ll_path[0]) {
    cg_errf(err, errlen, "cg: no LLVM IR file path");
    return -1;
  }
  cg_emit e;
  int rc = cg_build(d, &e, err, errlen);
  if (rc == 0) {
    char *msg = NULL;
    if (LLVMPrintModuleToFile(e.mod, ll_path, &msg)) {
      cg_errf(err, errlen, "cg: cannot write LLVM IR file '%s': %s", ll_path,
              msg ? msg : "unknown error");
      rc = -1;
    }
    if (msg)
      LLVMDisposeMessage(msg);
  }
  cg_emit_dispose(&e);
  return rc;
}

/* ---- linking ------------------------------------------------------------ */

/* A growable argv; every string it holds is owned. */
typedef struct cg_argv {
  char **v;
  size_t n, cap;
} cg_argv;

static void cg_argv_free(cg_argv *a) {
  for (size_t i = 0; i < a->n; i++)
    free(a->v[i]);
  free(a->v);
  memset(a, 0, sizeof *a);
}

static int cg_argv_push(cg_argv *a, const char *s, size_t len) {
  if (a->n + 2 > a->cap) { /* room for the terminating NULL */
    size_t cap = a->cap ? 2 * a->cap : 16;
    char **v = realloc(a->v, cap * sizeof *v);
    if (!v)
      return -1;
    a->v = v;
    a->cap = cap;
  }
  char *copy = malloc(len + 1);
  if (!copy)
    return -1;
  memcpy(copy, s, len);
  copy[len] = '\0';
  a->v[a->n++] = copy;
  a->v[a->n] = NULL;
  return 0;
}

static int cg_argv_push_words(cg_argv *a, const char *s) {
  while (*s) {
    while (*s == ' ' || *s == '\t' || *s == '\n')
      s++;
    size_t len = strcspn(s, " \t\n");
    if (len && cg_argv_push(a, s, len))
      return -1;
    s += len;
  }
  return 0;
}

/* The command as a person would retype it in a shell. */
static void cg_argv_format(const cg_argv *a, char *buf, size_t len) {
  size_t used = 0;
  if (len == 0)
    return;
  buf[0] = '\0';
  for (size_t i = 0; i < a->n && used + 1 < len; i++) {
    const char *s = a->v[i];
    int quote = s[0] == '\0' || strpbrk(s, " \t\n'\"\\$`*?;&|<>()") != NULL;
    int w = snprintf(buf + used, len - used, "%s%s%s%s", i ? " " : "", quote ? "'" : "", s,
                     quote ? "'" : "");
    if (w < 0)
      break;
    used += (size_t)w;
  }
}

/* readlink with a buffer that grows until the whole target fits. */
static char *cg_self_exe(void) {
  size_t cap = 256;
  for (;;) {
    char *buf = malloc(cap);
    if (!buf)
      return NULL;
    ssize_t n = readlink("/proc/self/exe", buf, cap);
    if (n < 0) {
      free(buf);
      return NULL;
    }
    if ((size_t)n < cap) {
      buf[n] = '\0';
      return buf;
    }
    free(buf);
    cap *= 2;
  }
}

/* Sets *path to a malloc'd runtime library path that exists, or returns -1
 * with a message naming where it looked. */
static int cg_find_runtime(char **path, char *err, size_t errlen) {
  static const char rel[] = "/../lib/ilnas/libilnas_rt.a";
  const char *env = getenv("ILNAS_RUNTIME_LIB");
  struct stat st;
  *path = NULL;
  if (env && env[0]) {
    int bad = stat(env, &st) != 0 ? errno : S_ISREG(st.st_mode) ? 0 : EISDIR;
    if (bad) {
      cg_errf(err, errlen,
              "cg: runtime library not found: ILNAS_RUNTIME_LIB is '%s', which is not a "
              "file (%s)",
              env, bad == EISDIR ? "not a regular file" : strerror(bad));
      return -1;
    }
    *path = strdup(env);
    if (!*path) {
      cg_errf(err, errlen, "cg: out of memory");
      return -1;
    }
    return 0;
  }
  char *exe = cg_self_exe();
  if (!exe) {
    cg_errf(err, errlen,
            "cg: cannot locate the runtime library: /proc/self/exe is unreadable (%s); "
            "set ILNAS_RUNTIME_LIB to the path of libilnas_rt.a",
            strerror(errno));
    return -1;
  }
  char *slash = strrchr(exe, '/');
  if (slash)
    *slash = '\0';
  size_t len = strlen(exe) + sizeof rel;
  char *p = malloc(len);
  if (!p) {
    free(exe);
    cg_errf(err, errlen, "cg: out of memory");
    return -1;
  }
  snprintf(p, len, "%s%s", exe, rel);
  free(exe);
  if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
    cg_errf(err, errlen,
            "cg: runtime library not found: looked for %s (relative to this executable); "
            "build or install the runtime, or set ILNAS_RUNTIME_LIB to the path of "
            "libilnas_rt.a",
            p);
    free(p);
    return -1;
  }
  *path = p;
  return 0;
}

/* Runs argv without a shell, so no path is ever re-split or expanded.
 * An exec failure comes back through a close-on-exec pipe, which lets the
 * message say "cannot run" rather than reporting exit status 127. */
static int cg_run(const cg_argv *a, char *err, size_t errlen, char *cmd) {
  int fds[2];
  if (pipe(fds) != 0) {
    cg_errf(err, errlen, "cg: cannot link: pipe: %s", strerror(errno));
    return -1;
  }
  if (fcntl(fds[1], F_SETFD, FD_CLOEXEC) != 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    cg_errf(err, errlen, "cg: cannot link: fcntl: %s", strerror(e));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(fds[0]);
    close(fds[1]);
    cg_errf(err, errlen, "cg: cannot link: fork: %s", strerror(e));
    return -1;
  }
  if (pid == 0) {
    close(fds[0]);
    execvp(a->v[0], a->v);
    int e = errno;
    ssize_t w = write(fds[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  close(fds[1]);
  int exec_errno = 0;
  ssize_t got;
  do
    got = read(fds[0], &exec_errno, sizeof exec_errno);
  while (got < 0 && errno == EINTR);
  close(fds[0]);

  int status = 0;
  pid_t w;
  do
    w = waitpid(pid, &status, 0);
  while (w < 0 && errno == EINTR);
  if (w < 0) {
    cg_errf(err, errlen, "cg: link command lost (waitpid: %s): %s", strerror(errno), cmd);
    return -1;
  }
  if (got == (ssize_t)sizeof exec_errno) {
    cg_errf(err, errlen, "cg: cannot run the C compiler '%s' (%s; set CC to choose another): %s",
            a->v[0], strerror(exec_errno), cmd);
    return -1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 0;
  if (WIFEXITED(status))
    cg_errf(err, errlen, "cg: link failed (exit status %d): %s", WEXITSTATUS(status), cmd);
  else if (WIFSIGNALED(status))
    cg_errf(err, errlen, "cg: link failed (killed by signal %d): %s", WTERMSIG(status), cmd);
  else
    cg_errf(err, errlen, "cg: link failed: %s", cmd);
  return -1;
}

int cg_link(const char *obj_path, const char *out_path, char *err, size_t errlen) {
  if (!obj_path || !obj_path[0] || !out_path || !out_path[0]) {
    cg_errf(err, errlen, "cg: link needs an object file and an output path");
    return -1;
  }
  char *rt = NULL;
  if (cg_find_runtime(&rt, err, errlen))
    return -1;

  /* CC is a word list, as make and configure scripts treat it
   * ("ccache cc", "gcc -m64"). */
  const char *cc = getenv("CC");
  if (!cc || !cc[strspn(cc, " \t\n")])
    cc = "cc";

  cg_argv a = {0};
  int rc = -1;
  char *cmd = NULL;
  if (cg_argv_push_words(&a, cc) || cg_argv_push(&a, "-o", 2) ||
      cg_argv_push(&a, out_path, strlen(out_path)) ||
      cg_argv_push(&a, obj_path, strlen(obj_path)) || cg_argv_push(&a, rt, strlen(rt)) ||
      cg_argv_push_words(&a, ILNAS_LINK_FLAGS)) {
    cg_errf(err, errlen, "cg: out of memory");
    goto done;
  }
  size_t cmdlen = 64;
  for (size_t i = 0; i < a.n; i++)
    cmdlen += strlen(a.v[i]) + 3;
  cmd = malloc(cmdlen);
  if (!cmd) {
    cg_errf(err, errlen, "cg: out of memory");
    goto done;
  }
  cg_argv_format(&a, cmd, cmdlen);
  rc = cg_run(&a, err, errlen, cmd);
done:
  free(cmd);
  cg_argv_free(&a);
  free(rt);
  return rc;
}
