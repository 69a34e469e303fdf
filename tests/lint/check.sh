#!/bin/sh
# The house rules the compiler alone does not check, on the source tree:
#   layers: a file that includes a header from above its layer fails to
#           build (each layer compiles against an include root of only the
#           folders at or below it; see the top CMakeLists.txt);
#   no_exit: no abort() or exit() in library code: failures are returned
#           (the one _exit is a forked child's, after exec fails).
# usage: check.sh layers SRC LAYERS_DIR CC LLVM_INCLUDE | check.sh no_exit SRC
set -u
what=$1 src=$2
fail=0
case $what in
layers)
  roots=$3 cc=$4 llvm=$5
  tmp=$(mktemp -d) || exit 1
  trap 'rm -rf "$tmp"' EXIT
  # every layer may include its own headers and those below ...
  for pair in "ir ir/ir.h" "kgen kgen/sparse.h" "runtime runtime/exec.h" "search search/search.h" \
              "app app/train.h"; do
    set -- $pair
    printf '#include "%s"\n' "$2" > "$tmp/ok.c"
    if ! $cc -std=c11 -fsyntax-only -D_POSIX_C_SOURCE=200809L -I"$roots/$1" \
         -I"$llvm" "$tmp/ok.c" 2> "$tmp/err"; then
      echo "FAIL: layer $1 cannot include its own $2:"; cat "$tmp/err"; fail=1
    fi
  done
  # ... and nothing above: the layering rules, checked by the compiler
  for pair in "base runtime/exec.h" "frontend ir/ir.h" "ir runtime/exec.h" "ir search/search.h" \
              "kgen runtime/kernels.h" "kgen app/train.h" "runtime search/search.h" \
              "runtime app/train.h" "search app/export.h"; do
    set -- $pair
    printf '#include "%s"\n' "$2" > "$tmp/up.c"
    if $cc -std=c11 -fsyntax-only -D_POSIX_C_SOURCE=200809L -I"$roots/$1" "$tmp/up.c" 2> /dev/null; then
      echo "FAIL: a file of layer $1 can include $2, from above it"; fail=1
    fi
  done
  ;;
no_exit)
  cd "$src" || exit 1
  # library code: every layer but the programs' mains; comments aside
  hits=$(grep -nE '(^|[^_a-z])(abort|exit)[[:space:]]*\(' \
           base/* grammar/*.l grammar/*.y frontend/*.[ch] ir/*.[ch] kgen/*.[ch] runtime/*.[ch] \
           runtime/*/*.[ch] search/*.[ch] app/*.[ch] ilnasc/driver.[ch] 2>/dev/null |
         grep -vE ':[0-9]+:[[:space:]]*(/?\*|//)' | grep -v 'exit()ing')
  if [ -n "$hits" ]; then
    echo "FAIL: abort() or exit() in library code (return a status instead):"
    echo "$hits"; fail=1
  fi
  ;;
*) echo "usage: check.sh layers SRC LAYERS_DIR CC LLVM_INCLUDE | check.sh no_exit SRC"; exit 2 ;;
esac
[ $fail = 0 ] && echo "ok: $what"
exit $fail
