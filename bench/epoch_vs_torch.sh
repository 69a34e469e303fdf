#!/bin/sh
# One training epoch of a model (default samples/fmnist.ilnas, fixed
# architecture at its budget, ~21% dense) in ilnas against PyTorch 1.13
# training the same layers with 0/1 masks, same images, same batch, same
# thread count. Prints both times and the ratio.
# usage: bench/epoch_vs_torch.sh [IMAGES] [THREADS] [MODEL] [BACKEND]
set -eu
images=${1:-6000} threads=${2:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
model=${3:-$top/samples/fmnist.ilnas} backend=${4:-cpu}
work=${BENCH_DIR:-$top/build/bench-epoch}
cmake --build "$top/build" --target ilnasc >/dev/null
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$top/build/bin/ilnasc" "$model" -o fmnist
./fmnist train --search fixed --epochs 1 --train-limit "$images" --test-limit 500 \
  --threads "$threads" --backend "$backend" --run-dir run --quiet >/dev/null
ilnas=$(sed -n 's/.*"train_seconds": \([0-9.]*\).*/\1/p' run/metrics.jsonl | head -n 1)
./fmnist ir >ir.txt
./fmnist info run/final.ckpt >info.txt
batch=$(sed -n 's/.*train batch \([0-9]*\).*/\1/p' "$model")
torch=$(/usr/bin/python3 "$top/bench/torch_epoch.py" ir.txt info.txt "$images" "$batch" "$threads" |
        sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p')
echo "one epoch, $images images, batch $batch, $threads threads, $(grep '^total' info.txt)"
echo "ilnas (--backend $backend): ${ilnas} s"
echo "pytorch 1.13 (dense x mask): ${torch} s"
awk -v a="$ilnas" -v b="$torch" 'BEGIN { printf "ilnas / pytorch time ratio: %.2f (below 1: ilnas faster)\n", a / b }'
