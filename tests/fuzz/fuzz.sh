#!/bin/sh
# fuzz.sh SRC BUILD [RUNS]: builds the libFuzzer targets (frontend, IR,
# checkpoint, image decoder, data set loaders) with clang-14, ASan and
# UBSan straight from their sources, then runs each for RUNS inputs over a
# corpus: the samples, the frontend's golden cases, serialized IRs and
# checkpoints of the IR goldens, the small images and data sets of
# tests/fuzz/corpus/, and the regression cases in
# tests/fuzz/regress/<target>/. Exits 77 (skip) when
# clang-14 or libFuzzer is missing. A crash leaves its input in
# BUILD/fuzz/crash-*: copy it into tests/fuzz/regress/<target>/ and fix it.
set -eu
src=$1 build=$2 runs=${3:-${ILNAS_FUZZ_RUNS:-}}
cc=${ILNAS_FUZZ_CC:-clang-14}
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "SKIP: $cc not found (apt-get install clang-14 libfuzzer-14-dev)"; exit 77
fi
rtdir=$("$cc" -print-resource-dir)/lib/linux
if ! ls "$rtdir"/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
  echo "SKIP: libFuzzer not found in $rtdir (apt-get install libfuzzer-14-dev)"; exit 77
fi
for f in "$build"/grammar/lexer.c "$build"/grammar/parser.c; do
  [ -f "$f" ] || { echo "fuzz.sh: $f missing (build the project first)"; exit 1; }
done
out=$build/fuzz
rm -rf "$out"
for d in obj corpus/frontend corpus/ir corpus/ckpt corpus/img corpus/data; do mkdir -p "$out/$d"; done
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
flags="-std=c11 -g -O1 -D_POSIX_C_SOURCE=200809L -I$src -I$build/grammar -I$src/grammar -w"
fe="$src/frontend/ast.c $src/frontend/check.c $src/frontend/diag.c $src/frontend/frontend.c
    $src/frontend/spec.c $build/grammar/lexer.c $build/grammar/parser.c"
ir="$src/ir/ir.c $src/ir/serial.c"
ck="$src/runtime/ckpt.c $src/runtime/err.c"
img="$src/runtime/imgdec.c"
dat="$src/runtime/data.c $src/runtime/folder.c $src/runtime/pool.c $src/runtime/err.c"
t0=$(date +%s)
# the project's sources with -fsanitize=fuzzer-no-link, each target's main with fuzzer
lib() { # NAME SOURCES...
  name=$1; shift
  objs=""
  for s in "$@"; do
    o=$out/obj/$name-$(basename "$s" .c).o
    $cc $flags $san -fsanitize=fuzzer-no-link -c "$s" -o "$o" &
    objs="$objs $o"
  done
  wait
  echo "$objs"
}
feo=$(lib fe $fe) iro=$(lib ir $ir) cko=$(lib ck $ck) imgo=$(lib img $img) dato=$(lib dat $dat)
$cc $flags $san -fsanitize=fuzzer "$src/tests/fuzz/fuzz_frontend.c" $feo -o "$out/fuzz_frontend"
$cc $flags $san -fsanitize=fuzzer "$src/tests/fuzz/fuzz_ir.c" $iro -o "$out/fuzz_ir"
$cc $flags $san -fsanitize=fuzzer "$src/tests/fuzz/fuzz_ckpt.c" $iro $cko -lz -o "$out/fuzz_ckpt"
$cc $flags $san -fsanitize=fuzzer "$src/tests/fuzz/fuzz_img.c" $imgo -lturbojpeg -lpng -o "$out/fuzz_img"
$cc $flags $san -fsanitize=fuzzer "$src/tests/fuzz/fuzz_data.c" $dato $imgo \
  -lz -lturbojpeg -lpng -lpthread -lm -o "$out/fuzz_data"
$cc $flags $san "$src/tests/fuzz/gen_corpus.c" "$src/ir/lower.c" $fe $ir $ck -lz -o "$out/gen_corpus"
echo "fuzz.sh: built in $(( $(date +%s) - t0 )) s"

cp "$src"/samples/*.ilnas "$src"/tests/frontend/cases/*.ilnas "$src"/tests/ir/golden/*.ilnas \
   "$out/corpus/frontend/"
cp "$src"/tests/fuzz/corpus/img/* "$out/corpus/img/"
cp "$src"/tests/fuzz/corpus/data/* "$out/corpus/data/"
"$out/gen_corpus" "$out/corpus" "$src"/tests/ir/golden/*.ilnas "$src"/samples/digits.ilnas

status=0
for t in frontend ir ckpt img data; do
  # 20 to 25 s each on 2 idle cores (about 2500, 50000 and 1700 inputs/s;
  # 3 to 4 times slower on a loaded machine), but the image decoder's 1 s
  # (20000 inputs/s) and the data loaders' 16 s (1300/s: files written
  # and read back)
  case $t in frontend) n=${runs:-60000} ;; ir) n=${runs:-600000} ;; ckpt) n=${runs:-30000} ;;
  img) n=${runs:-20000} ;; data) n=${runs:-20000} ;; esac
  reg=$src/tests/fuzz/regress/$t
  t1=$(date +%s)
  # the regression cases once each, then the fuzzer from the corpus
  if ls "$reg"/* >/dev/null 2>&1; then
    (cd "$out" && "./fuzz_$t" -runs=1 -timeout=10 -rss_limit_mb=1024 "$reg"/* \
      >"$out/$t-regress.log" 2>&1) ||
      { echo "FAIL: fuzz_$t crashes on a regression case:"; tail -40 "$out/$t-regress.log"; status=1; }
  fi
  if (cd "$out" && TMPDIR=$out "./fuzz_$t" -runs="$n" -seed=1 -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$out/crash-$t-" -print_final_stats=1 \
        "$out/corpus/$t" "$reg" >"$out/$t.log" 2>&1); then
    echo "fuzz_$t: $n runs in $(( $(date +%s) - t1 )) s, $(grep -c . "$out/$t.log") log lines, corpus $(ls "$out/corpus/$t" | wc -l)"
  else
    echo "FAIL: fuzz_$t found a crash (input in $out/crash-$t-*):"; tail -60 "$out/$t.log"; status=1
  fi
done
exit $status
