#!/bin/sh
# Data-parallel training (mpirun -np RANKS) against one process: one epoch
# of a model (default samples/fmnist.ilnas, --search fixed) on IMAGES
# images, RANKS ranks of THREADS/RANKS threads each, one process of
# THREADS threads and one of THREADS/RANKS, in PAIRS (default 3) rounds
# back to back. Prints each round's train_seconds, then the medians and
# their ratios: each process over the ranks.
# usage: [PAIRS=N] bench/ranks.sh [IMAGES=6000] [RANKS=2] [THREADS=2] [MODEL]
#   FMNIST=DIR     the data set (default /usr/share/datasets/fashion-mnist)
#   BENCH_DIR=DIR  scratch (default build/bench-ranks)
set -eu
images=${1:-6000} ranks=${2:-2} threads=${3:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
model=${4:-$top/samples/fmnist.ilnas}
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
work=${BENCH_DIR:-$top/build/bench-ranks}
command -v mpirun >/dev/null || { echo "no mpirun (apt-get install openmpi-bin)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
rm -rf "$work" && mkdir -p "$work"
cmake --build "$top/build" --target ilnasc >/dev/null
"$top/build/bin/ilnasc" "$model" -o "$work/model"
cd "$work"
per=$((threads / ranks))
[ "$per" -ge 1 ] || per=1
# epoch THREADS [LAUNCHER...]: one epoch's train_seconds
epoch() {
  t=$1
  shift
  rm -rf run
  "$@" ./model train --search fixed --epochs 1 --train-limit "$images" --test-limit 500 \
    --data "$data" --threads "$t" --run-dir run --quiet >/dev/null 2>err.txt || { cat err.txt >&2; exit 1; }
  sed -n 's/.*"train_seconds": \([0-9.]*\).*/\1/p' run/metrics.jsonl | head -n 1
}
echo "one epoch of $(basename "$model"), $images images: $ranks ranks of $per threads," \
  "one process of $threads, one of $per"
: >times.txt
i=1
while [ "$i" -le "${PAIRS:-3}" ]; do
  a=$(epoch "$per" mpirun -np "$ranks")
  b=$(epoch "$threads")
  c=$(epoch "$per")
  echo "$a $b $c" >>times.txt
  echo "round $i: $ranks ranks $a s, one process of $threads threads $b s, of $per $c s"
  i=$((i + 1))
done
med() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
a=$(cut -d' ' -f1 times.txt | med) b=$(cut -d' ' -f2 times.txt | med) c=$(cut -d' ' -f3 times.txt | med)
awk -v a="$a" -v b="$b" -v c="$c" -v r="$ranks" -v t="$threads" -v p="$per" 'BEGIN {
  printf "medians: %d ranks %s s; one process of %d threads %s s (%.2fx the ranks), of %d %s s (%.2fx)\n",
    r, a, t, b, b / a, p, c, c / a }'
