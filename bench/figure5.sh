#!/bin/sh
# The seed paper's Figure 5 on real data: ILNAS against random growth and a
# fixed architecture of the same final size, same template, budget, epochs
# and data, several seeds each. Prints one table (mean and spread of the
# final test accuracy) and draws the curves of every run.
#
# usage: bench/figure5.sh [IMAGES=60000] [EPOCHS=15] [SEEDS="1 2 3"] [BACKEND=cpu]
#   IMAGES: training images (the test set is always the full 10,000)
set -eu
images=${1:-60000} epochs=${2:-15} seeds=${3:-"1 2 3"} backend=${4:-cpu}
top=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-$top/build/bench-figure5}
cmake --build "$top/build" --target ilnasc >/dev/null
mkdir -p "$work" && cd "$work"
"$top/build/bin/ilnasc" "$top/samples/fmnist.ilnas" -o fmnist
start=$(date +%s)
for seed in $seeds; do  # seed-major: a partial run compares all three
  for method in ilnas random fixed; do
    dir=$method-$seed
    if [ -e "$dir/final.ckpt" ]; then continue; fi  # resumable benchmark
    echo "== $method, seed $seed" >&2
    ./fmnist train --search "$method" --seed "$seed" --epochs "$epochs" \
      --train-limit "$images" --test-limit 2000 --backend "$backend" \
      --run-dir "$dir" --quiet >"$dir.out"
  done
done
echo "Fashion-MNIST, $images training images, $epochs epochs, budget 100K, seeds: $seeds"
echo "| search | test accuracy, mean | spread (min..max) | active parameters | runs |"
echo "|---|---|---|---|---|"
for method in ilnas random fixed; do
  cat $method-*.out | sed -n 's/.*"test_acc": \([0-9.]*\), "active_params": \([0-9]*\).*/\1 \2/p' |
    awk -v m="$method" '{ s += $1; n++; if (n == 1 || $1 < lo) lo = $1; if (n == 1 || $1 > hi) hi = $1; p = $2 }
      END { printf "| %s | %.2f%% | %.2f..%.2f%% | %d | %d |\n", m, 100 * s / n, 100 * lo, 100 * hi, p, n }'
done | tee table.md
./fmnist plot $(ls -d ilnas-* random-* fixed-* | grep -v '\.out$') -o curves.svg
echo "curves: $work/curves.svg; wall time $(( $(date +%s) - start )) s"
awk 'NR == 1 { split($0, a, "|"); il = a[3] + 0 } NR > 1 { split($0, a, "|"); if (a[3] + 0 >= il) beat = 1 }
     END { print (beat ? "ILNAS does NOT beat both baselines" : "ILNAS beats both baselines") }' table.md
