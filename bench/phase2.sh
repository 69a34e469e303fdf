#!/bin/sh
# Phase II variants on the seed paper's Figure 5 setting: samples/fmnist.ilnas
# grown by ILNAS with
#   alr   expansions of ⌈Alr * active⌉ (the sample as written);
#   plan  'grow ... plan': each expansion spreads what is left of the budget
#         over the beats left, so that the last growing epoch reaches it;
#   base  (with BASE_ILNASC) the same sample compiled by another build, e.g.
#         one whose hyper step moves only the candidates.
# Same data, epochs and seeds for each; prints the final test accuracy and
# active parameters, mean and spread, and the difference to alr.
#
# usage: [BASE_ILNASC=OTHER/bin/ilnasc] bench/phase2.sh [IMAGES=6000] [EPOCHS=15] [SEEDS="1 2 3"] [THREADS=2]
set -eu
images=${1:-6000} epochs=${2:-15} seeds=${3:-"1 2 3"} threads=${4:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-$top/build/bench-phase2}
cmake --build "$top/build" --target ilnasc >/dev/null
mkdir -p "$work" && cd "$work"
"$top/build/bin/ilnasc" "$top/samples/fmnist.ilnas" -o alr
sed 's/alr [0-9.]* decay [0-9.]*/plan/' "$top/samples/fmnist.ilnas" >plan.ilnas
grep -q ' plan ' plan.ilnas || { echo "phase2.sh: the sample's grow line has no 'alr A decay D' to replace" >&2; exit 1; }
"$top/build/bin/ilnasc" plan.ilnas -o plan
variants="alr plan"
if [ -n "${BASE_ILNASC:-}" ]; then
  "$BASE_ILNASC" "$top/samples/fmnist.ilnas" -o base
  variants="$variants base"
fi
start=$(date +%s)
for seed in $seeds; do
  for v in $variants; do
    dir=$v-$seed
    if [ -e "$dir/final.ckpt" ]; then continue; fi # resumable
    echo "== $v, seed $seed" >&2
    ./$v train --search ilnas --seed "$seed" --epochs "$epochs" --train-limit "$images" \
      --test-limit 2000 --threads "$threads" --run-dir "$dir" --quiet >"$dir.out"
  done
done
echo "Fashion-MNIST, $images training images, $epochs epochs, budget 100K, seeds: $seeds"
echo "| phase II | test accuracy, mean | spread (min..max) | active parameters (min..max) | runs |"
echo "|---|---|---|---|---|"
for v in $variants; do
  cat $v-*.out | sed -n 's/.*"test_acc": \([0-9.]*\), "active_params": \([0-9]*\).*/\1 \2/p' |
    awk -v m="$v" '{ s += $1; n++; if (n == 1 || $1 < lo) lo = $1; if (n == 1 || $1 > hi) hi = $1;
                     if (n == 1 || $2 < plo) plo = $2; if (n == 1 || $2 > phi) phi = $2 }
      END { printf "| %s | %.2f%% | %.2f..%.2f%% | %d..%d | %d |\n", m, 100 * s / n, 100 * lo, 100 * hi, plo, phi, n }'
done | tee table.md
awk -F'|' 'NR == 1 { a = $3 + 0 } NR > 1 { printf "%s - alr: %+.2f points\n", $2, ($3 + 0) - a }' table.md
echo "wall time $(( $(date +%s) - start )) s"
