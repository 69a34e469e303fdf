#!/bin/sh
# The GPU check, for a machine with an NVIDIA GPU, its driver and the
# build's toolchain (LLVM 14, flex, bison; see the README): builds the tree,
# runs the GPU tests under ctest (PTX through ptxas, the kernels emulated on
# the host, every CUDA backend op against the reference on each path, one
# epoch of `model train --backend cuda`) and the export tests (the emitted
# CUDA against the runtime's logits), then the GPU benchmarks
# (tests/gpu/gpu_run.sh). Under five minutes on an H200. A GPU machine
# without the toolchain runs the same from a bundle (tests/gpu/bundle.sh).
# Everything it prints, every figure included, also goes to one file:
# $OUT (default BUILD_DIR.txt).
# usage: tests/gpu/check.sh [BUILD_DIR]     (run from anywhere)
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build-gpu-check}
out=${OUT:-$build.txt}
if [ -z "${ILNAS_CHECK_TEE:-}" ]; then
  ILNAS_CHECK_TEE=1 sh "$0" "$build" 2>&1 | tee "$out"
  st=$(tail -n 1 "$out" | sed -n 's/^check.sh: exit //p')
  echo "every figure is in $out"
  exit "${st:-1}"
fi
echo "== build ($build)"
cmake -S "$src" -B "$build" -DILNAS_WERROR=ON >"$build.cmake.log" 2>&1 ||
  { cat "$build.cmake.log"; echo "check.sh: exit 1"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build.build.log" 2>&1 ||
  { tail -n 50 "$build.build.log"; echo "check.sh: exit 1"; exit 1; }
echo "== tests"
# gpu_ops must run, not skip, on a GPU machine: fail if it skipped.
rc=0
timeout 240 ctest --test-dir "$build" -R "gpu|export_" --output-on-failure -V >"$build.ctest.log" 2>&1 || rc=$?
grep -E "^[0-9]+/[0-9]+ Test|tests passed|SKIP|FAIL|refused|cuda ops|path |trained|error" "$build.ctest.log" || true
if grep -q "gpu_ops .*Skipped" "$build.ctest.log"; then
  echo "FAIL: gpu_ops skipped: no usable GPU (see SKIP above)"
  echo "check.sh: exit 1"
  exit 1
fi
run=$build/gpu-run
mkdir -p "$run"
for b in test_gpu_ops test_jit_train gpu_layer_bench test_export; do ln -sf "$build/bin/$b" "$run/$b"; done
"$build/bin/ilnasc" "$src/samples/fmnist.ilnas" -o "$run/fmnist"
exp=$build/gpu-run/export
e=$build/tests/export/work
if [ -x "$e/cuda/runner" ]; then
  mkdir -p "$exp"
  cp "$e/cuda/runner" "$e/cuda/img2000.f32" "$e/cuda/ref2000.f32" "$e/data/labels.u8" "$exp/"
fi
sh "$src/tests/gpu/gpu_run.sh" "$run" "$src" "$exp" || rc=1
echo "check.sh: exit $rc"
exit $rc
