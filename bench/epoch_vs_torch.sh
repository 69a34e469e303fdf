#!/bin/sh
# One training epoch of a model (default samples/fmnist.ilnas, fixed
# architecture at its budget, ~21% dense) in ilnas against PyTorch 1.13
# training the same layers with 0/1 masks, same images, same batch, same
# thread count. Prints both times and their ratio for PAIRS (default 3)
# back-to-back pairs, and the median ratio.
# usage: [PAIRS=N] bench/epoch_vs_torch.sh [IMAGES] [THREADS] [MODEL] [BACKEND]
set -eu
images=${1:-6000} threads=${2:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
model=${3:-$top/samples/fmnist.ilnas} backend=${4:-cpu}
work=${BENCH_DIR:-$top/build/bench-epoch}
cmake --build "$top/build" --target ilnasc >/dev/null
rm -rf "$work" && mkdir -p "$work" && cd "$work"
"$top/build/bin/ilnasc" "$model" -o fmnist
# The first run fixes the architecture (and its checkpoint) that PyTorch trains.
epoch() {
  rm -rf run
  ./fmnist train --search fixed --epochs 1 --train-limit "$images" --test-limit 500 \
    --threads "$threads" --backend "$backend" --run-dir run --quiet >/dev/null
  sed -n 's/.*"train_seconds": \([0-9.]*\).*/\1/p' run/metrics.jsonl | head -n 1
}
ilnas=$(epoch)
./fmnist ir >ir.txt
./fmnist info run/final.ckpt >info.txt
batch=$(sed -n 's/.*train batch \([0-9]*\).*/\1/p' "$model")
torch() {
  /usr/bin/python3 "$top/bench/torch_epoch.py" ir.txt info.txt "$images" "$batch" "$threads" |
    sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p'
}
echo "one epoch, $images images, batch $batch, $threads threads, $(grep '^total' info.txt)"
# Pairs run back to back, so that a slow spell of a shared machine hits
# both sides of a pair; the median pair ratio is the figure.
pairs=${PAIRS:-3}
: >ratios.txt
i=1
while [ "$i" -le "$pairs" ]; do
  [ "$i" -gt 1 ] && ilnas=$(epoch)
  t=$(torch)
  r=$(awk -v a="$ilnas" -v b="$t" 'BEGIN { printf "%.3f", b / a }')
  echo "$r" >>ratios.txt
  echo "pair $i: ilnas (--backend $backend) $ilnas s, pytorch 1.13 (dense x mask) $t s: ilnas ${r}x faster"
  i=$((i + 1))
done
sort -n ratios.txt | awk '{ r[NR] = $1 } END { printf "median: ilnas %.2fx faster than pytorch (%d pairs)\n", r[int((NR + 1) / 2)], NR }'
