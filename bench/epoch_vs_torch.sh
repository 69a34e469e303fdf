#!/bin/sh
# One training epoch of a model (default samples/fmnist.ilnas, fixed
# architecture at its budget, ~21% dense) in ilnas against PyTorch
# training the same layers with 0/1 masks (bench/torch_epoch.py), same
# images, same batch, same thread count. Prints both times and their ratio
# for PAIRS (default 3) back-to-back pairs, and the median ratio.
# usage: [PAIRS=N] bench/epoch_vs_torch.sh [IMAGES] [THREADS] [MODEL] [BACKEND]
# and, for a GPU (bench/gpu/epoch_vs_torch.sh sets them):
#   TORCH_DEVICE=cuda  PyTorch on the GPU (default cpu)
#   PYTHON=python3     the Python with PyTorch (default Debian's /usr/bin/python3)
#   MODEL_BIN=FILE     a model already compiled by ilnasc, instead of building one
#   FMNIST=DIR         the data set (default /usr/share/datasets/fashion-mnist)
set -eu
images=${1:-6000} threads=${2:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
model=${3:-$top/samples/fmnist.ilnas} backend=${4:-cpu}
device=${TORCH_DEVICE:-cpu} py=${PYTHON:-/usr/bin/python3}
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
work=${BENCH_DIR:-$top/build/bench-epoch}
rm -rf "$work" && mkdir -p "$work"
if [ -n "${MODEL_BIN:-}" ]; then
  cp "$MODEL_BIN" "$work/fmnist"
else
  cmake --build "$top/build" --target ilnasc >/dev/null
  "$top/build/bin/ilnasc" "$model" -o "$work/fmnist"
fi
cd "$work"
# The first run fixes the architecture (and its checkpoint) that PyTorch
# trains; its first line on stderr names the batch.
epoch() {
  rm -rf run
  ./fmnist train --search fixed --epochs 1 --train-limit "$images" --test-limit 500 --data "$data" \
    --threads "$threads" --backend "$backend" --run-dir run >/dev/null 2>train.err
  sed -n 's/.*"train_seconds": \([0-9.]*\).*/\1/p' run/metrics.jsonl | head -n 1
}
ilnas=$(epoch)
./fmnist ir >ir.txt
./fmnist info run/final.ckpt >info.txt
batch=$(sed -n 's/.* epochs, batch \([0-9]*\),.*/\1/p' train.err | head -n 1)
version=$("$py" -c 'import torch; print(torch.__version__)')
torch() {
  FMNIST=$data "$py" "$top/bench/torch_epoch.py" ir.txt info.txt "$images" "$batch" "$threads" "$device" |
    sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p'
}
echo "one epoch, $images images, batch $batch, $threads threads, $(grep '^total' info.txt)"
# Pairs run back to back, so that a slow spell of a shared machine hits
# both sides of a pair; the median pair ratio is the figure. PyTorch's
# epoch runs at one of two speeds from one run to the next (bench/README),
# which moves the median with the speed most pairs drew: the ratio of
# each side's fastest run is printed too.
pairs=${PAIRS:-3}
: >ratios.txt
: >times.txt
i=1
while [ "$i" -le "$pairs" ]; do
  [ "$i" -gt 1 ] && ilnas=$(epoch)
  t=$(torch)
  r=$(awk -v a="$ilnas" -v b="$t" 'BEGIN { printf "%.3f", b / a }')
  echo "$r" >>ratios.txt
  echo "$ilnas $t" >>times.txt
  echo "pair $i: ilnas (--backend $backend) $ilnas s, pytorch $version on $device (dense x mask) $t s: ilnas ${r}x faster"
  i=$((i + 1))
done
sort -n ratios.txt | awk '{ r[NR] = $1 } END { printf "median: ilnas %.2fx faster than pytorch (%d pairs)\n", r[int((NR + 1) / 2)], NR }'
awk 'NR == 1 || $1 < a { a = $1 } NR == 1 || $2 < b { b = $2 }
     END { printf "fastest against fastest: ilnas %s s, pytorch %s s: ilnas %.2fx faster\n", a, b, b / a }' times.txt
