#!/bin/sh
# Multi-task against each task alone, the seed paper's Table 3 on the data
# at hand: Fashion-MNIST and the UCI 8x8 digits resized to 28x28, two tasks
# on one template (bench/multitask.ilnas, the template of bench/transfer
# .ilnas) with SHARED of each task's budget shared (20% and 33%), against
# each task trained alone on the same template with the same budget,
# epochs and seed (bench/transfer.ilnas, its data line swapped). Prints per
# shared fraction and seed each task's final test accuracy with the other
# task and alone, the difference (the goal: within 0.5 points at 20%), and
# the parameters stored for both tasks against two separate networks (the
# goal: at most 0.8x at 20%). --train-limit IMAGES applies to each task;
# the digits (1,438 training images) go round several times in an epoch of
# the multi-task run, which takes one batch of each task per step, and
# once in the solo run's. Then, with TRANSFER=1 (the default), the other
# half of Table 3, transfer against scratch: bench/transfer.sh with the
# same IMAGES, EPOCHS and SEEDS. Runs are kept in BENCH_DIR (default
# build/bench-multitask) and not run again.
#
# usage: [ILNASC=PATH] [DIGITS=PATH] [SHARED="0.2 0.33"] [TRANSFER=1]
#        bench/multitask.sh [IMAGES=6000] [EPOCHS=8] [SEEDS="1 2 3"] [THREADS=2]
set -eu
images=${1:-6000} epochs=${2:-8} seeds=${3:-"1 2 3"} threads=${4:-2}
shares=${SHARED:-"0.2 0.33"}
me=multitask.sh work=$(cd "$(dirname "$0")/.." && pwd)/build/bench-multitask
run_opts="--train-limit $images"
. "$(cd "$(dirname "$0")" && pwd)/digits_fashion.sh"
for s in $shares; do
  sed -e "s|\"DIGITS\"|\"$digits\"|" -e "s/shared 0.2 /shared $s /" "$top/bench/multitask.ilnas" \
    >pair-$s.ilnas
  grep -q "shared $s " pair-$s.ilnas || { echo "multitask.sh: no shared part to replace" >&2; exit 1; }
  "$ILNASC" pair-$s.ilnas -o pair-$s
done
start=$(date +%s)
for seed in $seeds; do
  run fashion fashion-$seed
  run digits digits-$seed
  for s in $shares; do run pair-$s pair-$s-$seed; done
done
# the final line's fields: top-level ones first, a task's from its object
top_field() { sed -n "s/^{\"test_acc\": [0-9.]*, \"$1\": \([0-9.]*\),.*/\1/p" "$2"; }
solo() { sed -n "s/^{\"test_acc\": \([0-9.]*\), \"active_params\": \([0-9]*\),.*/\\$1/p" "$2"; }
task() { sed -n "s/.*\"$1\": {\"test_acc\": \([0-9.]*\), \"active_params\": \([0-9]*\)}.*/\\$2/p" "$3"; }
echo "Multi-task against each task alone: the template bench/multitask.ilnas (30K per task),"
echo "$epochs epochs, $images training images per task at most, every epoch tested on the"
echo "whole test sets (the digits' 359). Accuracy in percent; stored: the parameters of both"
echo "tasks' networks, the shared part once, against the two solo networks'."
echo
printf "%-6s %-4s | %8s %8s %6s | %8s %8s %6s | %8s %8s %6s\n" shared seed fashion alone diff \
  digits alone diff stored apart ratio
for s in $shares; do
  for seed in $seeds; do
    f=pair-$s-$seed.out
    fa=$(task fashion 1 "$f") da=$(task digits 1 "$f")
    stored=$(top_field active_params "$f")
    fs=$(solo 1 fashion-$seed.out) ds=$(solo 1 digits-$seed.out)
    apart=$(($(solo 2 fashion-$seed.out) + $(solo 2 digits-$seed.out)))
    awk -v s="$s" -v seed="$seed" -v fa="$fa" -v fs="$fs" -v da="$da" -v ds="$ds" \
      -v st="$stored" -v ap="$apart" 'BEGIN {
      printf "%-6s %-4s | %8.2f %8.2f %+6.2f | %8.2f %8.2f %+6.2f | %8d %8d %5.2fx\n", s, seed,
        100 * fa, 100 * fs, 100 * (fa - fs), 100 * da, 100 * ds, 100 * (da - ds), st, ap, st / ap }'
  done
done | tee table.txt
awk '{ n[$1]++; fd[$1] += $6; dd[$1] += $10; r[$1] += substr($14, 1, length($14) - 1) }
  END { for (s in n) printf "mean at %s shared: fashion %+.2f, digits %+.2f points; stored %.2fx\n",
        s, fd[s] / n[s], dd[s] / n[s], r[s] / n[s] }' table.txt
echo "$(($(date +%s) - start)) s"
if [ "${TRANSFER:-1}" = 1 ]; then
  echo
  BENCH_DIR=$work/transfer ILNASC=$ILNASC DIGITS=$digits \
    sh "$top/bench/transfer.sh" "$images" "$epochs" "$seeds" "$threads"
fi
