#!/bin/sh
# Transfer (train --from) against training from scratch, the seed paper's
# §5.2 on the data at hand: Fashion-MNIST and the UCI 8x8 digits resized to
# 28x28 ('data digits-csv ... resize 28x28'), one template (bench/transfer
# .ilnas, its data line swapped), the same budget, epochs and seed on
# both sides. Per seed:
#   scratch fashion, scratch digits   each from the template's seed network;
#   fashion -> digits                 digits from scratch fashion's final.ckpt;
#   digits -> fashion                 fashion from scratch digits' final.ckpt.
# and with SRC_BUDGET (default 10k; "" for none) two more transfers, from
# sources trained to that smaller budget, which the transfer then grows to
# the template's:
#   small      the source's classifier kept;
#   small-new  a new classifier (--new-head).
# Prints, per variant, direction and seed, scratch's final test accuracy, the
# transfer's accuracy before training (from_acc: the source's classifier,
# the classes being other classes), after its first epoch and at the end,
# and the epochs the transfer took to reach scratch's final accuracy over
# scratch's epochs (the ratio; the goal is at most 0.5; "-": not within
# them). Every epoch is evaluated on the whole test set. Each transfer runs
# a second time with half the epochs (its learning rate schedule over
# those), the last columns: its final accuracy and whether it reaches
# scratch's final in half the epochs that way. Both sides have
# 10 classes, so the transfer keeps the source's classifier (its classes
# mean other things: from_acc is near chance) and retrains it. Runs are
# kept in BENCH_DIR (default build/bench-transfer) and not run again.
#
# usage: [ILNASC=PATH] [DIGITS=PATH] [SRC_BUDGET=10k] bench/transfer.sh [IMAGES=6000] [EPOCHS=8] [SEEDS="1 2 3"] [THREADS=2]
set -eu
images=${1:-6000} epochs=${2:-8} seeds=${3:-"1 2 3"} threads=${4:-2}
small=${SRC_BUDGET-10k}
me=transfer.sh work=$(cd "$(dirname "$0")/.." && pwd)/build/bench-transfer run_opts=""
. "$(cd "$(dirname "$0")" && pwd)/digits_fashion.sh"
if [ -n "$small" ]; then
  for d in fashion digits; do
    sed "s/budget [0-9.]*[kM]* /budget $small /" $d.ilnas >${d}_small.ilnas
    grep -q "budget $small " ${d}_small.ilnas || { echo "transfer.sh: no budget to replace" >&2; exit 1; }
    "$ILNASC" ${d}_small.ilnas -o ${d}_small
  done
fi
start=$(date +%s)
half=$((epochs / 2))
transfers() { # SUFFIX: every transfer of the seed, its runs named NAME-SUFFIX
  run digits f2d$1 --from fashion-$seed/final.ckpt
  run fashion d2f$1 --train-limit "$images" --from digits-$seed/final.ckpt
  [ -n "$small" ] || return 0
  run digits f2d-small$1 --from fashion-small-$seed/final.ckpt
  run fashion d2f-small$1 --train-limit "$images" --from digits-small-$seed/final.ckpt
  run digits f2d-small-new$1 --from fashion-small-$seed/final.ckpt --new-head
  run fashion d2f-small-new$1 --train-limit "$images" --from digits-small-$seed/final.ckpt \
    --new-head
}
for seed in $seeds; do
  run fashion fashion-$seed --train-limit "$images"
  run digits digits-$seed
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
echo "Transfer against scratch: the template bench/transfer.ilnas (budget 30K), $epochs epochs,"
echo "Fashion-MNIST on its first $images training images, the digits on the first 80% of"
echo "their rows, resized to 28x28; test accuracy on the whole test sets (Fashion-MNIST's"
echo "10000 images, the digits' last 20%)"
echo
echo "| source | direction | seed | scratch, epoch 1 | scratch, final | transfer, before training | epoch 1 | final | epochs to scratch's final | ratio | in $half epochs: final | reached |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
variants="same"
[ -z "$small" ] || variants="same small small-new"
for v in $variants; do
for pair in "fashion -> digits:digits:f2d" "digits -> fashion:fashion:d2f"; do
  name=${pair%%:*} rest=${pair#*:}
  scratch=${rest%%:*} tr=${rest#*:}
  [ "$v" = same ] || tr=$tr-$v
  for seed in $seeds; do
    s1=$(acc "$scratch-$seed" 1)
    s=$(acc "$scratch-$seed" "$epochs")
    f=$(field from_acc "$tr-$seed.out")
    e1=$(acc "$tr-$seed" 1)
    t=$(acc "$tr-$seed" "$epochs")
    n=$(reach "$tr-$seed" "$s")
    ratio=$(awk -v n="$n" -v e="$epochs" 'BEGIN { if (n == "-") print "-"; else printf "%.2f", n / e }')
    h=$(acc "$tr-half-$seed" "$half")
    hit=$(awk -v h="$h" -v s="$s" 'BEGIN { print (h + 0 >= s + 0 ? "yes" : "no") }')
    src=$v
    [ "$v" = same ] && src="scratch run"
    echo "| $src | $name | $seed | $s1 | $s | ${f:--} | $e1 | $t | $n | $ratio | $h | $hit |"
  done
done
done
echo
echo "wall: $(( $(date +%s) - start ))s"
