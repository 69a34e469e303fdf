#!/bin/sh
# Transfer (train --from) against training from scratch, the seed paper's
# §5.2 on the data at hand: Fashion-MNIST and the UCI 8x8 digits resized to
# 28x28 ('data digits-csv ... resize 28x28'), one template (bench/transfer
# .ilnas, its data line swapped), the same budget and seed on both sides.
# Per seed:
#   scratch fashion, scratch digits   each from the template's seed network,
#                                     EPOCHS epochs, and again EPOCHS/2
#                                     (a reference: the goal is against
#                                     the full run's final accuracy);
#   fixed                             references too: EPOCHS/2 epochs of a
#                                     network grown at random to the budget
#                                     before training (--search fixed), from
#                                     random weights, as big as a transfer
#                                     from the scratch run;
#   fashion -> digits                 digits from a fashion checkpoint;
#   digits -> fashion                 fashion from a digits checkpoint.
# The transfers, each a variant of source, classifier and learning rate:
#   scratch run   the other data set's scratch final.ckpt (at the budget:
#                 the transfer cannot grow), its classifier kept ("its")
#                 or a new one (--new-head: the seed network's classifier);
#   FT_LR         the same two with the train line's learning rate changed
#                 to each of FT_LR (default "0.005 0.05"; the template's is
#                 0.02), the way a user fine-tunes with the options there
#                 are: the same model, another train line (--from checks
#                 the super-network, not the schedule);
#   small         with SRC_BUDGET (default 10k; "" for none), sources
#                 trained to that budget, which the transfer grows to the
#                 template's; its classifier and a new one.
# Every transfer runs twice: EPOCHS epochs, and EPOCHS/2 (its cosine
# schedule over those). Prints, per variant, direction and seed, scratch's
# test accuracy after its first epoch, at the end of the EPOCHS/2 run and
# at the end; the transfer's before training (from_acc: the source's
# classifier, whose classes are other classes), after its first epoch and
# at the end; the epochs the EPOCHS run took to reach scratch's final
# accuracy over EPOCHS (the ratio; the goal: at most 0.5; "-": not within
# them); the EPOCHS/2 run's final accuracy and whether it reaches scratch's
# final (the goal in its other reading). Then per variant and direction
# the means and the count of runs that meet the goal either way. Every
# epoch is evaluated on the whole test set. Runs are kept in BENCH_DIR
# (default build/bench-transfer) and not run again.
#
# usage: [ILNASC=PATH] [DIGITS=PATH] [SRC_BUDGET=10k] [FT_LR="0.005 0.05"]
#        bench/transfer.sh [IMAGES=6000] [EPOCHS=8] [SEEDS="1 2 3"] [THREADS=2]
set -eu
images=${1:-6000} epochs=${2:-8} seeds=${3:-"1 2 3"} threads=${4:-2}
small=${SRC_BUDGET-10k} ft_lrs=${FT_LR-"0.005 0.05"}
me=transfer.sh work=$(cd "$(dirname "$0")/.." && pwd)/build/bench-transfer run_opts=""
. "$(cd "$(dirname "$0")" && pwd)/digits_fashion.sh"
lr0=$(sed -n 's/^train .* lr \([0-9.e-]*\) .*/\1/p' fashion.ilnas)
[ -n "$lr0" ] || { echo "transfer.sh: no learning rate in bench/transfer.ilnas" >&2; exit 1; }
# variant: NAME SOURCE LR HEAD, the runs f2d-NAME-SEED and d2f-NAME-SEED
variants="keep:scratch:$lr0:its new:scratch:$lr0:new"
for lr in $ft_lrs; do
  for d in fashion digits; do
    sed "s/ lr $lr0 / lr $lr /" $d.ilnas >${d}_lr$lr.ilnas
    grep -q " lr $lr " ${d}_lr$lr.ilnas || { echo "transfer.sh: no lr to replace" >&2; exit 1; }
    "$ILNASC" ${d}_lr$lr.ilnas -o ${d}_lr$lr
  done
  variants="$variants lr$lr:scratch:$lr:its lr$lr-new:scratch:$lr:new"
done
if [ -n "$small" ]; then
  for d in fashion digits; do
    sed "s/budget [0-9.]*[kM]* /budget $small /" $d.ilnas >${d}_small.ilnas
    grep -q "budget $small " ${d}_small.ilnas || { echo "transfer.sh: no budget to replace" >&2; exit 1; }
    "$ILNASC" ${d}_small.ilnas -o ${d}_small
  done
  variants="$variants small:small:$lr0:its small-new:small:$lr0:new"
fi
start=$(date +%s)
half=$((epochs / 2))
bin() { [ "$2" = "$lr0" ] && echo "$1" || echo "${1}_lr$2"; } # DATA LR
transfers() { # SUFFIX: every variant's transfers of the seed, NAME-SUFFIX
  suffix=$1
  for v in $variants; do
    name=${v%%:*} rest=${v#*:}
    src=${rest%%:*} rest=${rest#*:}
    lr=${rest%%:*} head=${rest#*:}
    from=-$seed
    [ "$src" = scratch ] || from=-small-$seed
    set --
    [ "$head" = its ] || set -- --new-head
    run "$(bin digits "$lr")" f2d-$name$suffix --from fashion$from/final.ckpt "$@"
    run "$(bin fashion "$lr")" d2f-$name$suffix --train-limit "$images" \
      --from digits$from/final.ckpt "$@"
  done
}
for seed in $seeds; do
  run fashion fashion-$seed --train-limit "$images"
  run digits digits-$seed
  run_epochs=$half run fashion fashion-half-$seed --train-limit "$images"
  run_epochs=$half run digits digits-half-$seed
  run_epochs=$half run fashion fashion-fixed-half-$seed --train-limit "$images" --search fixed
  run_epochs=$half run digits digits-fixed-half-$seed --search fixed
  if [ -n "$small" ]; then
    run fashion_small fashion-small-$seed --train-limit "$images"
    run digits_small digits-small-$seed
  fi
  transfers "-$seed"
  run_epochs=$half transfers "-half-$seed"
done
# acc DIR N: test_acc after epoch N of a run
acc() { sed -n "s/^{\"epoch\": $2, .*\"test_acc\": \([0-9.]*\).*/\1/p" "$1/metrics.jsonl"; }
reach() { # DIR TARGET: the first epoch with test_acc >= TARGET, or "-"
  awk -v t="$2" -F'"test_acc": ' '/^{"epoch"/ { split($2, a, ","); split($0, e, "[:,]");
    if (a[1] + 0 >= t) { print e[2] + 0; found = 1; exit } } END { if (!found) print "-" }' \
    "$1/metrics.jsonl"
}
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$2"; }
pct() { awk -v a="$1" 'BEGIN { if (a == "") print "-"; else printf "%.2f%%", 100 * a }'; }
echo "Transfer against scratch: the template bench/transfer.ilnas (budget 30K, lr $lr0 cosine),"
echo "$epochs epochs, Fashion-MNIST on its first $images training images, the digits on the first"
echo "80% of their rows, resized to 28x28; test accuracy on the whole test sets (Fashion-MNIST's"
echo "10000 images, the digits' last 20%)"
echo
echo "| source | classifier | lr | direction | seed | scratch, epoch 1 | scratch in $half epochs | fixed in $half epochs | scratch, final | transfer, before training | epoch 1 | final | epochs to scratch's final | ratio | in $half epochs: final | reached |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for v in $variants; do
  name=${v%%:*} rest=${v#*:}
  src=${rest%%:*} rest=${rest#*:}
  lr=${rest%%:*} head=${rest#*:}
  [ "$src" = scratch ] && src="scratch run" || src="$small run"
  for pair in "fashion -> digits:digits:f2d" "digits -> fashion:fashion:d2f"; do
    dir=${pair%%:*} rest=${pair#*:}
    scratch=${rest%%:*} tr=${rest#*:}-$name
    for seed in $seeds; do
      s=$(acc "$scratch-$seed" "$epochs")
      n=$(reach "$tr-$seed" "$s")
      ratio=$(awk -v n="$n" -v e="$epochs" 'BEGIN { if (n == "-") print "-"; else printf "%.2f", n / e }')
      h=$(acc "$tr-half-$seed" "$half")
      hit=$(awk -v h="$h" -v s="$s" 'BEGIN { print (h + 0 >= s + 0 ? "yes" : "no") }')
      echo "| $src | $head | $lr | $dir | $seed | $(pct "$(acc "$scratch-$seed" 1)") |" \
        "$(pct "$(acc "$scratch-half-$seed" "$half")") |" \
        "$(pct "$(acc "$scratch-fixed-half-$seed" "$half")") | $(pct "$s") |" \
        "$(pct "$(field from_acc "$tr-$seed.out")") | $(pct "$(acc "$tr-$seed" 1)") |" \
        "$(pct "$(acc "$tr-$seed" "$epochs")") | $n | $ratio | $(pct "$h") | $hit |"
    done
  done
done | tee table.md
echo
echo "| source | classifier | lr | direction | scratch in $half epochs | fixed in $half epochs | scratch, final | transfer, final | in $half epochs: final | met in $epochs epochs' run | met in $half epochs |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
awk -F' *[|] *' '{ k = $2 " | " $3 " | " $4 " | " $5; if (!(k in n)) o[++m] = k; n[k]++
    sh[k] += $8; fx[k] += $9; s[k] += $10; t[k] += $13; h[k] += $16
    if ($15 != "-" && $15 + 0 <= 0.5) full[k]++; if ($17 == "yes") half[k]++ }
  END { for (i = 1; i <= m; i++) { k = o[i]
    printf "| %s | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %d of %d | %d of %d |\n", k,
      sh[k] / n[k], fx[k] / n[k], s[k] / n[k], t[k] / n[k], h[k] / n[k], full[k], n[k],
      half[k], n[k] } }' table.md
echo
echo "wall: $(( $(date +%s) - start ))s"
