#!/bin/sh
# Multi-task against each task alone, the seed paper's Table 3 on the data
# at hand: Fashion-MNIST and the UCI 8x8 digits resized to 28x28, two tasks
# on one template (bench/multitask.ilnas, the template of bench/transfer
# .ilnas) with SHARED of each task's budget shared (20% and 33%), against
# each task trained alone on the same template with its budget (30K),
# epochs and seed (bench/transfer.ilnas, its data line swapped). Each
# shared fraction s runs at two per-task budgets:
#   same     the solo budget N, which stores 2N - sN = (2 - s)/2 of two
#            solo networks by construction (0.90x at 20%);
#   stored   the most B with 2B - sB <= STORED (0.8) x 2N, so that both
#            tasks together store at most STORED of the two solo networks
#            (26,666 per task at 20%, 28,742 at 33%).
# Prints per shared fraction, budget and seed each task's final test
# accuracy with the other task and alone, the difference (the goal: within
# 0.5 points at 20%, better being fine), and the parameters stored for
# both tasks (the final line's active_params: both networks, the shared
# part once) against the two solo networks' (the goal: at most 0.8x at
# 20%). --train-limit IMAGES applies to each task; the digits (1,438
# training images) go round several times in an epoch of the multi-task
# run, which takes one batch of each task per step, and once in the solo
# run's. Then, with TRANSFER=1 (the default), the other half of Table 3,
# transfer against scratch: bench/transfer.sh with the same IMAGES, EPOCHS,
# SEEDS and THREADS, in BENCH_DIR/transfer. Runs are kept in BENCH_DIR
# (default build/bench-multitask) and not run again.
#
# usage: [ILNASC=PATH] [DIGITS=PATH] [SHARED="0.2 0.33"] [STORED=0.8] [TRANSFER=1]
#        bench/multitask.sh [IMAGES=6000] [EPOCHS=8] [SEEDS="1 2 3"] [THREADS=2]
set -eu
images=${1:-6000} epochs=${2:-8} seeds=${3:-"1 2 3"} threads=${4:-2}
shares=${SHARED:-"0.2 0.33"} target=${STORED:-0.8}
me=multitask.sh work=$(cd "$(dirname "$0")/.." && pwd)/build/bench-multitask
run_opts="--train-limit $images"
. "$(cd "$(dirname "$0")" && pwd)/digits_fashion.sh"
solo_budget=$(sed -n 's/.*budget \([0-9]*\)k .*/\1000/p' "$top/bench/transfer.ilnas")
[ -n "$solo_budget" ] || { echo "multitask.sh: no budget NNk in bench/transfer.ilnas" >&2; exit 1; }
configs="" # SHARE:BUDGET, each compiled to pair-SHARE-BUDGET
for s in $shares; do
  stored=$(awk -v s="$s" -v n="$solo_budget" -v t="$target" \
    'BEGIN { b = int(t * 2 * n / (2 - s)); while (2 * b - int(s * b) > t * 2 * n) b--; print b }')
  for b in $solo_budget $stored; do
    sed -e "s|\"DIGITS\"|\"$digits\"|" -e "s/budget [0-9.]*k* shared 0.2 /budget $b shared $s /" \
      "$top/bench/multitask.ilnas" >pair-$s-$b.ilnas
    grep -q "budget $b shared $s " pair-$s-$b.ilnas ||
      { echo "multitask.sh: no budget and shared part to replace" >&2; exit 1; }
    "$ILNASC" pair-$s-$b.ilnas -o pair-$s-$b
    configs="$configs $s:$b"
  done
done
start=$(date +%s)
for seed in $seeds; do
  run fashion fashion-$seed
  run digits digits-$seed
  for c in $configs; do run pair-${c%:*}-${c#*:} pair-${c%:*}-${c#*:}-$seed; done
done
# the final line's fields: top-level ones first, a task's from its object
top_field() { sed -n "s/^{\"test_acc\": [0-9.]*, \"$1\": \([0-9.]*\),.*/\1/p" "$2"; }
solo() { sed -n "s/^{\"test_acc\": \([0-9.]*\), \"active_params\": \([0-9]*\),.*/\\$1/p" "$2"; }
task() { sed -n "s/.*\"$1\": {\"test_acc\": \([0-9.]*\), \"active_params\": \([0-9]*\)}.*/\\$2/p" "$3"; }
echo "Multi-task against each task alone: the template bench/multitask.ilnas, solo networks"
echo "at $solo_budget, $epochs epochs, $images training images per task at most, every epoch"
echo "tested on the whole test sets (the digits' 359). Accuracy in percent; budget: each task's"
echo "in the pair; grown: the pair's tasks' active parameters at the end; stored: the"
echo "parameters of both tasks' networks, the shared part once, against the two solo networks'."
echo
printf "%-6s %-6s %-4s | %8s %8s %6s | %8s %8s %6s | %13s | %6s %6s %6s\n" shared budget seed \
  fashion alone diff digits alone diff grown stored apart ratio
for c in $configs; do
  s=${c%:*} b=${c#*:}
  for seed in $seeds; do
    f=pair-$s-$b-$seed.out
    fa=$(task fashion 1 "$f") da=$(task digits 1 "$f")
    fg=$(task fashion 2 "$f") dg=$(task digits 2 "$f")
    stored=$(top_field active_params "$f")
    fs=$(solo 1 fashion-$seed.out) ds=$(solo 1 digits-$seed.out)
    apart=$(($(solo 2 fashion-$seed.out) + $(solo 2 digits-$seed.out)))
    awk -v s="$s" -v b="$b" -v seed="$seed" -v fa="$fa" -v fs="$fs" -v da="$da" -v ds="$ds" \
      -v g="$fg/$dg" -v st="$stored" -v ap="$apart" 'BEGIN {
      printf "%-6s %-6s %-4s | %8.2f %8.2f %+6.2f | %8.2f %8.2f %+6.2f | %13s | %6d %6d %5.3fx\n",
        s, b, seed, 100 * fa, 100 * fs, 100 * (fa - fs), 100 * da, 100 * ds, 100 * (da - ds), g,
        st, ap, st / ap }'
  done
done | tee table.txt
awk '{ k = $1 " " $2; if (!(k in n)) o[++m] = k; n[k]++; fd[k] += $7; dd[k] += $11
       if (!(k in wf) || $7 < wf[k]) wf[k] = $7; if (!(k in wd) || $11 < wd[k]) wd[k] = $11
       r[k] += substr($17, 1, length($17) - 1) }
  END { for (i = 1; i <= m; i++) { k = o[i]; split(k, a, " ")
        printf "mean at %s shared, %s per task: fashion %+.2f (worst %+.2f), digits %+.2f (worst %+.2f) points; stored %.3fx\n",
          a[1], a[2], fd[k] / n[k], wf[k], dd[k] / n[k], wd[k], r[k] / n[k] } }' table.txt
echo "$(($(date +%s) - start)) s"
if [ "${TRANSFER:-1}" = 1 ]; then
  echo
  BENCH_DIR=$work/transfer ILNASC=$ILNASC DIGITS=$digits \
    sh "$top/bench/transfer.sh" "$images" "$epochs" "$seeds" "$threads"
fi
