#!/bin/sh
# The GPU tests and benchmarks on prebuilt binaries: what tests/gpu/check.sh
# runs after building, and what a bundle (tests/gpu/bundle.sh) runs on a GPU
# machine that lacks the build's toolchain. Under five minutes on an H200.
# usage: gpu_run.sh BIN_DIR SRC_DIR [EXPORT_DIR] [DATA_DIR]
#   BIN_DIR     test_gpu_ops, test_jit_train, gpu_layer_bench, test_export,
#               fmnist (the sample, compiled by ilnasc)
#   SRC_DIR     the source tree (or the bundle), for bench/gpu/epoch_vs_torch.sh
#               and bench/torch_epoch.py
#   EXPORT_DIR  runner, img2000.f32, ref2000.f32, labels.u8 from the export
#               tests (skipped when absent)
#   DATA_DIR    Fashion-MNIST (default /usr/share/datasets/fashion-mnist)
# Prints every result; exits 1 if a test failed or gpu_ops skipped.
set -u
bin=$1 src=$2 exp=${3:-} data=${4:-/usr/share/datasets/fashion-mnist}
rc=0
echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
echo "== gpu_ops: every op of the cuda backend against ref, on each path"
log=$(mktemp)
timeout 180 "$bin/test_gpu_ops" >"$log" 2>&1
st=$?
tail -n 12 "$log" && rm -f "$log"
[ "$st" -eq 0 ] || { echo "FAIL: gpu_ops exited $st (77: no usable GPU)"; rc=1; }
"$bin/test_gpu_ops" --no-device || rc=1
echo "== gpu_train: a growing run on --backend cuda (the device step) against cpu"
log=$(mktemp)
timeout 120 "$bin/test_jit_train" cuda >"$log" 2>&1
st=$?
tail -n 4 "$log" && rm -f "$log"
[ "$st" -eq 0 ] || { echo "FAIL: gpu_train exited $st"; rc=1; }
if [ -n "$exp" ] && [ -x "$exp/runner" ]; then
  echo "== the CUDA export against the runtime's logits"
  (cd "$exp" && ./runner img2000.f32 got.f32 128 && "$bin/test_export" compare ref2000.f32 got.f32 labels.u8 10 &&
    ./runner img2000.f32 got1.f32 1 && "$bin/test_export" compare ref2000.f32 got1.f32 labels.u8 10) || rc=1
fi
echo "== gpu_layer_bench"
timeout 200 "$bin/gpu_layer_bench" --reps "${REPS:-8}" || rc=1
if [ -e "$data/train-images-idx3-ubyte.gz" ]; then
  work=$(mktemp -d)
  # cuda: the device step; cuda-host: the host step over the same kernels
  for b in cuda cuda-host cpu; do
    echo "== one epoch of the sample on --backend $b (10,000 images)"
    timeout 120 "$bin/fmnist" train --backend "$b" --search fixed --data "$data" --epochs 1 --train-limit 10000 \
      --test-limit 1000 --run-dir "$work/$b" 2>&1 | tail -n 1
    grep -o '"train_seconds": [0-9.]*' "$work/$b/metrics.jsonl" | head -n 1
  done
  # phase II's share: one expansion after an epoch (goal: at most 5%)
  for b in cuda cpu; do
    echo "== phase II on --backend $b: an epoch of 10,000 images, then one expansion"
    timeout 120 "$bin/fmnist" train --backend "$b" --data "$data" --epochs 2 --freeze-last 0 --train-limit 10000 \
      --test-limit 1000 --run-dir "$work/g$b" --quiet 2>&1 | tail -n 1
    awk '/"event": "expand"/ && !x { sub(/.*"seconds": /, ""); sub(/,.*/, ""); x = $0 + 0 }
         /"train_seconds"/ && !t { sub(/.*"train_seconds": /, ""); sub(/,.*/, ""); t = $0 + 0 }
         END { if (t > 0 && x > 0) printf "phase II %.3f s, the epoch %.3f s: %.1f%% of it\n", x, t, 100 * x / t
               else print "no expansion or no epoch in metrics.jsonl" }' "$work/g$b/metrics.jsonl"
  done
  echo "== profile, --backend cuda"
  timeout 120 "$bin/fmnist" train --backend cuda --search fixed --data "$data" --epochs 1 --train-limit 4096 \
    --test-limit 500 --run-dir "$work/p" --quiet --profile 2>&1 | tail -n 16
  echo "== against PyTorch with CUDA"
  PAIRS=2 MODEL_BIN="$bin/fmnist" FMNIST="$data" BENCH_DIR="$work/torch" timeout 150 \
    sh "$src/bench/gpu/epoch_vs_torch.sh" 10000 cuda 2>&1 | tail -n 4
  rm -rf "$work"
else
  echo "SKIP: end to end: no Fashion-MNIST in $data"
fi
exit $rc
