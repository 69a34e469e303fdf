#!/bin/sh
# One training epoch of the sample template (fixed architecture at its
# budget, ~21% dense) on the GPU: ilnas --backend cuda against PyTorch with
# CUDA training the same layers with 0/1 masks (bench/torch_epoch.py), same
# images, same batch. Prints both times and their ratio for PAIRS (default
# 3) back-to-back pairs, and the median ratio.
# usage: [PAIRS=N] [MODEL_BIN=prebuilt] [FMNIST=dir] [PYTHON=python3]
#        bench/gpu/epoch_vs_torch.sh [IMAGES] [BACKEND]
set -eu
images=${1:-10000} backend=${2:-cuda}
top=$(cd "$(dirname "$0")/../.." && pwd)
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
py=${PYTHON:-python3}
work=${BENCH_DIR:-$top/build/bench-gpu-epoch}
rm -rf "$work" && mkdir -p "$work"
if [ -n "${MODEL_BIN:-}" ]; then
  cp "$MODEL_BIN" "$work/fmnist"
else
  cmake --build "$top/build" --target ilnasc >/dev/null
  "$top/build/bin/ilnasc" "$top/samples/fmnist.ilnas" -o "$work/fmnist"
fi
cd "$work"
epoch() {
  rm -rf run
  ./fmnist train --search fixed --epochs 1 --train-limit "$images" --test-limit 500 --data "$data" \
    --backend "$backend" --run-dir run --quiet >/dev/null
  sed -n 's/.*"train_seconds": \([0-9.]*\).*/\1/p' run/metrics.jsonl | head -n 1
}
ilnas=$(epoch)
./fmnist ir >ir.txt
./fmnist info run/final.ckpt >info.txt
batch=$(sed -n 's/.*train batch \([0-9]*\).*/\1/p' "$top/samples/fmnist.ilnas")
torch() {
  FMNIST=$data "$py" "$top/bench/torch_epoch.py" ir.txt info.txt "$images" "$batch" 1 cuda |
    sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p'
}
echo "one epoch on the GPU, $images images, batch $batch, $(grep '^total' info.txt)"
pairs=${PAIRS:-3}
: >ratios.txt
i=1
while [ "$i" -le "$pairs" ]; do
  [ "$i" -gt 1 ] && ilnas=$(epoch)
  t=$(torch)
  r=$(awk -v a="$ilnas" -v b="$t" 'BEGIN { printf "%.3f", b / a }')
  echo "$r" >>ratios.txt
  echo "pair $i: ilnas (--backend $backend) $ilnas s, pytorch cuda (dense x mask) $t s: ratio ${r}"
  i=$((i + 1))
done
sort -n ratios.txt | awk '{ r[NR] = $1 } END { printf "median: pytorch time / ilnas time = %.3f (%d pairs; > 1: ilnas faster)\n", r[int((NR + 1) / 2)], NR }'
