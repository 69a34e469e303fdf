#!/bin/sh
# Export tests: a network trained here, emitted as C and CUDA, held to the
# runtime. One script, one mode per ctest test; `train` is their fixture.
# usage: export.sh MODE ILNASC TEST_EXPORT MODEL.ilnas SRC_DIR WORK_DIR
#   train   compile MODEL, train 1 epoch on 2,000 images, dump the runtime's
#           logits on the whole test set
#   c       emit C, build it with cc -O2 alone, compare with the runtime
#   cuda    emit CUDA, build it with nvcc -c; run its kernels on the CPU
#           (cuda_emu/) everywhere, and on the GPU only where there is one
#   size    weights of the ~20%-dense export vs its masked-dense export
#   errors  untrained / corrupt checkpoint, unwritable output
#   synth   no data needed: MODEL (synth.ilnas, synth_after.ilnas) with random weights and batch
#           norm statistics, emitted as C (embedded, weights file, dense)
#           and CUDA, each held to the runtime on random images
set -eu
mode=$1 ilnasc=$2 tx=$3 model=$4 src=$5 work=$6
data=/usr/share/datasets/fashion-mnist
cc=${CC:-cc}
. "$src/common.sh"

if [ "$mode" = synth ]; then
  name=$(basename "$model" .ilnas)
  rm -rf "${work:?}/$name" && mkdir -p "$work/$name/data" && cd "$work/$name"
  "$ilnasc" "$model" -o model
  "$tx" synth "$model" data 3 300
  ./model info data/synth.ckpt
  for v in embedded file dense; do
    mkdir -p $v
    case $v in
      embedded) ./model export --c data/synth.ckpt -o $v/net.c; def= ;;
      file) ./model export --c data/synth.ckpt -o $v/net.c --weights-threshold 0
            def=-DRUNNER_LOAD ;;
      dense) ./model export --c data/synth.ckpt -o $v/net.c --dense; def= ;;
    esac
    $cc -std=c11 -Wall -Wextra -pedantic -Werror -O2 -c $v/net.c -o $v/net.o
    $cc -O2 $def -I$v "$src/runner.c" $v/net.o -lm -o $v/runner
    $v/runner data/images.f32 $v/got.f32 13 $v/net.weights
    "$tx" compare data/ref.f32 $v/got.f32 data/labels.u8 7
  done
  if $cc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iembedded \
       "$src/runner.c" embedded/net.c -lm -o runner_san 2>/dev/null; then
    ./runner_san data/images.f32 got_san.f32 5
    "$tx" compare data/ref.f32 got_san.f32 data/labels.u8 7
  fi
  mkdir -p cuda cudaw && "$ilnasc" --emit-cuda data/synth.ckpt -o cuda/net.cu
  ./model export --cuda data/synth.ckpt -o cudaw/net.cu --weights-threshold 0
  grep -q "int net_load(const char \*weights_path);" cudaw/net.h || fail "cudaw/net.h lacks net_load"
  for v in cuda cudaw; do
    def=
    [ $v = cudaw ] && def=-DRUNNER_LOAD
    ${CXX:-c++} -O2 -Wall -Wextra -Werror -x c++ -I"$src/cuda_emu" -c $v/net.cu -o $v/emu.o
    $cc -O2 $def -I$v "$src/runner.c" $v/emu.o -lstdc++ -lm -o $v/runner_emu
    $v/runner_emu data/images.f32 $v/got.f32 13 $v/net.weights
    "$tx" compare data/ref.f32 $v/got.f32 data/labels.u8 7
  done
  # each function's body is written once: the C loop's body and the CUDA
  # kernel's, after its prologue, are the same text (a kernel of an op
  # without outputs divides by UNITS ? UNITS : 1, never launched)
  awk '/^  for \(int r = 0; r < UNITS; r\+\+\) \{$/ { on = 1; next }
       on && /^  \}$/ { on = 0; print "--"; next }
       on { sub(/^    /, ""); print }' embedded/net.c >bodies_c.txt
  awk '/^  const int r = \(int\)\(t % (UNITS|\(UNITS \? UNITS : 1\))\);$/ { on = 1; next }
       on && /^\}$/ { on = 0; print "--"; next }
       on { sub(/^  /, ""); print }' cuda/net.cu >bodies_cu.txt
  [ -s bodies_c.txt ] || fail "no function bodies found in embedded/net.c"
  cmp bodies_c.txt bodies_cu.txt || fail "the C and CUDA bodies differ"
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [ -x "$nvcc" ]; then
    "$nvcc" -c cuda/net.cu -o cuda/net.o
    "$nvcc" -c cudaw/net.cu -o cudaw/net.o
    echo "ok: net.cu (embedded and with a weights file) builds with nvcc -c (running it needs a GPU)"
  else
    echo "note: nvcc not found; the CUDA build was not checked"
  fi
  echo "ok: synthetic network exported exactly"
  exit 0
fi

if [ ! -e "$data/t10k-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not installed in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
ckpt=$work/run/final.ckpt
if [ "$mode" != train ] && [ ! -e "$ckpt" ]; then
  echo "FAIL: no trained checkpoint in $work (the export_train fixture did not run)"
  exit 1
fi

# Bytes of the C objects in $1 whose names end in _wN or _bN (the weight
# and bias arrays of op N), as the linker sees them.
weight_bytes() {
  nm -S --radix=d "$1" | awk '$4 ~ /_[wb][0-9]+$/ { s += $2 } END { print s + 0 }'
}

case $mode in
train)
  rm -rf "$work" && mkdir -p "$work/data" && cd "$work"
  "$ilnasc" "$model" -o model
  ./model train --search fixed --train-limit 2000 --test-limit 200 --epochs 1 \
    --threads 2 --run-dir run --quiet
  ./model info run/final.ckpt
  ./model eval run/final.ckpt --threads 2 >eval.out
  cat eval.out
  "$tx" dump run/final.ckpt "$data" data
  ;;

c)
  rm -rf "$work/c" && mkdir -p "$work/c/ilnasc" && cd "$work/c"
  ../model export --c "$ckpt" -o net.c
  [ -s net.c ] && [ -s net.h ] || fail "export wrote no net.c / net.h"
  [ ! -e net.weights ] || fail "a small network should embed its weights"
  grep -q "int net_forward(const float \*input, float \*logits, int batch);" net.h ||
    fail "net.h lacks net_forward"
  grep -q "extern const int net_input_shape\[3\]" net.h || fail "net.h lacks net_input_shape"
  grep -q "extern const int net_classes" net.h || fail "net.h lacks net_classes"
  # ilnasc emits the same code
  "$ilnasc" --emit-c "$ckpt" -o ilnasc/net.c
  cmp net.c ilnasc/net.c || fail "ilnasc --emit-c and model export --c differ"
  cmp net.h ilnasc/net.h || fail "the headers of ilnasc and model export differ"
  # plain cc, then the project's own strictness
  $cc -O2 -c net.c -o net.o
  $cc -std=c11 -Wall -Wextra -pedantic -Werror -O2 -c net.c -o strict.o
  undef=$(nm -u net.o | awk '{ print $2 }' | grep -v -E '^(malloc|calloc|free|fopen|fread|fclose|memcmp|memcpy|memset)$' || true)
  [ -z "$undef" ] || fail "net.o needs symbols beyond libc: $undef"
  # baked pattern: dead layers are gone, no mask is consulted
  if grep -q -E 'mask|alpha|rt_' net.c; then fail "net.c refers to masks or the runtime"; fi
  $cc -O2 -I. "$src/runner.c" net.o -lm -o runner
  ./runner ../data/images.f32 got.f32 64
  "$tx" compare ../data/ref.f32 got.f32 ../data/labels.u8 10
  # and the accuracy `model eval` printed
  "$tx" compare ../data/ref.f32 got.f32 ../data/labels.u8 10 >cmp.out
  same_acc ../eval.out cmp.out exported
  # one image at a time gives the same logits as batches of 64
  ./runner ../data/images.f32 got1.f32 1
  cmp got.f32 got1.f32 || fail "batch 1 and batch 64 differ"
  # the emitted indexing stays in bounds: the same run under ASan/UBSan
  head -c $((500 * 784 * 4)) ../data/images.f32 >img500.f32
  if $cc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -I. \
       "$src/runner.c" net.c -lm -o runner_san 2>/dev/null; then
    ./runner_san img500.f32 got_san.f32 7
    head -c $((500 * 10 * 4)) got.f32 >got500.f32
    "$tx" compare got500.f32 got_san.f32 ../data/labels.u8 10
  else
    echo "note: $cc cannot build with -fsanitize=address,undefined; bounds check skipped"
  fi
  echo "ok: exported C matches the runtime"
  ;;

cuda)
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [ ! -x "$nvcc" ]; then echo "SKIP: nvcc not found"; exit 77; fi
  rm -rf "$work/cuda" && mkdir -p "$work/cuda/ilnasc" && cd "$work/cuda"
  ../model export --cuda "$ckpt" -o net.cu
  "$ilnasc" --emit-cuda "$ckpt" -o ilnasc/net.cu
  cmp net.cu ilnasc/net.cu || fail "ilnasc --emit-cuda and model export --cuda differ"
  grep -q "int net_forward(const float \*input, float \*logits, int batch);" net.h ||
    fail "net.h lacks net_forward"
  if grep -q -E 'cublas|cudnn' net.cu; then fail "net.cu uses a library beyond the CUDA runtime"; fi
  "$nvcc" -c net.cu -o net.o
  # the same user program links against it
  "$nvcc" -O2 -I. "$src/runner.c" net.o -o runner
  # the kernels' indexing, held to the runtime with the kernels run on the
  # CPU (cuda_emu/ stands in for the CUDA runtime) on 2,000 images
  ${CXX:-c++} -O2 -Wall -Wextra -Werror -x c++ -I"$src/cuda_emu" -c net.cu -o emu.o
  $cc -O2 -I. "$src/runner.c" emu.o -lstdc++ -lm -o runner_emu
  head -c $((2000 * 784 * 4)) ../data/images.f32 >img2000.f32
  head -c $((2000 * 10 * 4)) ../data/ref.f32 >ref2000.f32
  ./runner_emu img2000.f32 got_emu.f32 128
  "$tx" compare ref2000.f32 got_emu.f32 ../data/labels.u8 10
  if nvidia-smi -L >/dev/null 2>&1; then
    ./runner ../data/images.f32 got.f32 128
    "$tx" compare ../data/ref.f32 got.f32 ../data/labels.u8 10
    echo "ok: exported CUDA matches the runtime on the GPU"
  else
    echo "note: net.cu builds with plain nvcc -c; running it needs a GPU, skipped here."
    echo "      on a GPU machine: $src/gpu_check.sh $work $tx"
  fi
  ;;

size)
  rm -rf "$work/size" && mkdir -p "$work/size/sparse" "$work/size/dense" && cd "$work/size"
  ../model export --c "$ckpt" -o sparse/net.c --weights-threshold 0 | tee sparse.out
  ../model export --c "$ckpt" -o dense/net.c --weights-threshold 0 --dense | tee dense.out
  [ -s sparse/net.weights ] && [ -s dense/net.weights ] || fail "no .weights files"
  sb=$(($(wc -c <sparse/net.weights) - 24)) db=$(($(wc -c <dense/net.weights) - 24))
  # both are the same function: hold both to the runtime on 1,000 images
  head -c $((1000 * 784 * 4)) ../data/images.f32 >img.f32
  head -c $((1000 * 10 * 4)) ../data/ref.f32 >ref.f32
  for v in sparse dense; do
    $cc -O2 -DRUNNER_LOAD -I$v "$src/runner.c" $v/net.c -lm -o $v/runner
    $v/runner img.f32 $v/got.f32 50 $v/net.weights
    "$tx" compare ref.f32 $v/got.f32 ../data/labels.u8 10
  done
  # net_load refuses a file that is not its own
  if sparse/runner img.f32 x.f32 50 dense/net.weights 2>/dev/null; then
    fail "net_load accepted another network's weights"
  fi
  # the embedded form stores the same bytes in its arrays
  ../model export --c "$ckpt" -o embedded.c >/dev/null
  $cc -O2 -c embedded.c -o embedded.o
  eb=$(weight_bytes embedded.o)
  [ "$eb" -eq "$sb" ] || fail "embedded weight arrays hold $eb bytes, the .weights file $sb"
  echo "weights: ~20%-dense export $sb bytes, masked-dense export of the same live" \
       "architecture $db bytes, ratio $(awk -v a="$sb" -v b="$db" 'BEGIN { printf "%.3f", a / b }')"
  echo "index tables (the baked pattern): $(sed -n 's/.*index tables \([0-9]*\) bytes.*/\1/p' sparse.out) bytes"
  [ $((sb * 4)) -le "$db" ] || fail "sparse weights $sb bytes > a quarter of dense $db bytes"
  echo "ok: sparse weights are at most a quarter of the dense network's"
  ;;

errors)
  rm -rf "$work/err" && mkdir -p "$work/err/out" && cd "$work/err"
  "$tx" untrain "$ckpt" untrained.ckpt
  cp "$ckpt" corrupt.ckpt
  printf 'X' | dd of=corrupt.ckpt bs=1 seek=300 conv=notrunc 2>/dev/null
  mkdir -p out/blocked/net.h   # the header's name is taken by a directory
  mkdir -p out/wblocked/net.weights # and here the weights file's
  # expect_fail WHAT NEEDLE CMD...: exit 1, NEEDLE in the message, out/ unchanged
  expect_fail() {
    what=$1 needle=$2
    shift 2
    before=$(ls -R out)
    rc=0
    "$@" >msg.out 2>&1 || rc=$?
    cat msg.out
    [ "$rc" -eq 1 ] || fail "$what: exit $rc, expected 1"
    grep -q -F "$needle" msg.out || fail "$what: the message does not name $needle"
    [ "$(ls -R out)" = "$before" ] || fail "$what: left files behind: $(ls -R out)"
  }
  for t in c cu; do
    case $t in c) flag=c ;; *) flag=cuda ;; esac
    expect_fail "untrained ($t)" untrained.ckpt ../model export --$flag untrained.ckpt -o out/net.$t
    grep -q "not been trained" msg.out || fail "untrained: the message does not say why"
    expect_fail "corrupt ($t)" corrupt.ckpt ../model export --$flag corrupt.ckpt -o out/net.$t
    expect_fail "missing dir ($t)" out/nodir/net.$t \
      ../model export --$flag "$ckpt" -o out/nodir/net.$t
    expect_fail "blocked header ($t)" out/blocked/net.h \
      ../model export --$flag "$ckpt" -o out/blocked/net.$t
    expect_fail "blocked weights ($t)" out/wblocked/net.weights \
      ../model export --$flag "$ckpt" -o out/wblocked/net.$t --weights-threshold 0
    expect_fail "ilnasc untrained ($t)" untrained.ckpt \
      "$ilnasc" --emit-$flag untrained.ckpt -o out/net.$t
    expect_fail "ilnasc unwritable ($t)" out/nodir/net.$t \
      "$ilnasc" --emit-$flag "$ckpt" -o out/nodir/net.$t
  done
  ../model export --help | grep -q -- "--weights-threshold" || fail "export --help"
  ../model --help | grep -q "export" || fail "the usage line lacks export"
  "$ilnasc" --help | grep -q -- "--emit-cuda" || fail "ilnasc --help lacks --emit-cuda"
  echo "ok: bad input refused, nothing left behind"
  ;;

*)
  echo "usage: export.sh train|c|cuda|size|errors ILNASC TEST_EXPORT MODEL SRC WORK"
  exit 2
  ;;
esac
