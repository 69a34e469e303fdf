#!/bin/sh
# The GPU check, for a machine with an NVIDIA GPU and driver: builds the
# tree, runs the GPU tests (PTX through ptxas, the kernels emulated on the
# host, every CUDA backend op against the reference, and one epoch of
# `model train --backend cuda`) and the export tests (the emitted CUDA
# against the runtime's logits), and names the GPU. Under five minutes.
# usage: tests/gpu/check.sh [BUILD_DIR]     (run from anywhere)
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build-gpu-check}
echo "== GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi not found: the device tests will skip"
fi
echo "== build ($build)"
cmake -S "$src" -B "$build" -DILNAS_WERROR=ON >"$build.cmake.log" 2>&1 ||
  { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" >"$build.build.log" 2>&1 ||
  { tail -n 50 "$build.build.log"; exit 1; }
echo "== tests"
# gpu_ops must run, not skip, on a GPU machine: fail if it skipped.
rc=0
timeout 240 ctest --test-dir "$build" -R "gpu|export_" --output-on-failure -V >"$build.ctest.log" 2>&1 || rc=$?
grep -E "^[0-9]+/[0-9]+ Test|tests passed|SKIP|FAIL|refused|cuda ops|trained|error" "$build.ctest.log" || true
if grep -q "gpu_ops .*Skipped" "$build.ctest.log"; then
  echo "FAIL: gpu_ops skipped: no usable GPU (see SKIP above)"
  exit 1
fi
exit $rc
