#!/bin/sh
# End to end: a weight-level ILNAS search from a 10% seed on 6,000
# Fashion-MNIST images grows to its budget and reaches 82% on the full
# test set; expansions are recorded; the curves plot.
# usage: search.sh ILNASC MODEL WORKDIR
set -eu
ilnasc=$1 model=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
"$ilnasc" "$model" -o grow
./grow train --train-limit 6000 --test-limit 1000 --run-dir run --seed 1 --threads 2 >train.out
cat train.out
acc=$(sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' train.out)
active=$(sed -n 's/.*"active_params": \([0-9]*\).*/\1/p' train.out)
awk -v a="$acc" 'BEGIN { if (a < 0.82) { print "FAIL: test accuracy " a " < 0.82"; exit 1 } }'
# grown to the budget (30k), never past it
awk -v n="$active" 'BEGIN { if (n < 29700 || n > 30000) { print "FAIL: " n " active, budget 30000"; exit 1 } }'
grep '"event": "expand"' run/metrics.jsonl >expand.jsonl
[ "$(wc -l <expand.jsonl)" -ge 3 ] || { echo "FAIL: fewer than 3 expansions"; exit 1; }
for k in epoch added per_layer active_params new_nodes new_layers loss_before loss_after; do
  grep -q "\"$k\"" expand.jsonl || { echo "FAIL: expand events lack $k"; exit 1; }
done
./grow info run/final.ckpt
./grow plot run -o curves.svg
grep -q "<polyline" curves.svg
echo "ok: grew to $active parameters, test accuracy $acc"
