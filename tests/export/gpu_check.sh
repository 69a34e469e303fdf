#!/bin/sh
# Runs the CUDA export that the export_cuda test built, on a GPU, and holds
# it to the runtime's logits the way export_c holds the C export.
# usage: gpu_check.sh WORK_DIR TEST_EXPORT   (WORK_DIR: build/tests/export/work)
set -eu
work=$1 tx=$2
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no GPU (nvidia-smi -L fails)"
  exit 77
fi
cd "$work/cuda"
[ -x runner ] || { echo "FAIL: $work/cuda/runner missing: run ctest -R export_ first"; exit 1; }
./runner ../data/images.f32 got.f32 128
"$tx" compare ../data/ref.f32 got.f32 ../data/labels.u8 10
./runner ../data/images.f32 got1.f32 1
"$tx" compare ../data/ref.f32 got1.f32 ../data/labels.u8 10
echo "ok: the CUDA export matches the runtime on $(nvidia-smi -L | head -n 1)"
