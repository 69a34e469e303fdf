#!/bin/sh
# End to end on real data: compile the sample, train it with a fixed
# architecture on 6,000 Fashion-MNIST images, and hold it to 80% on the
# full 10,000-image test set. Then eval, info and a damaged checkpoint.
# usage: fixed.sh ILNASC SAMPLE WORKDIR
set -eu
ilnasc=$1 sample=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

"$ilnasc" "$sample" -o model
./model --help | grep -q "train"
./model train --help | grep -q -- "--train-limit"
# --version: the model's name and the compiler's version, the same as ilnasc's
v=$("$ilnasc" --version | sed -n 's/^ilnasc \([^ ]*\) (LLVM \([^)]*\))$/\1 \2/p')
[ -n "$v" ] || { echo "FAIL: ilnasc --version: $("$ilnasc" --version)"; exit 1; }
mv=$(./model --version | sed -n "s/^model 'fmnist', compiled by ilnasc \([^ ]*\) (LLVM \([^)]*\))$/\1 \2/p")
[ "$mv" = "$v" ] || { echo "FAIL: ./model --version: $(./model --version)"; exit 1; }

./model train --search fixed --train-limit 6000 --epochs 3 --run-dir run \
  --seed 1 --threads 2 >train.out 2>train.err
cat train.out train.err
if grep -q "predicts at chance" train.err; then echo "FAIL: a network that learns called dead"; exit 1; fi
acc=$(sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' train.out | tail -n 1)
awk -v a="$acc" 'BEGIN { if (a < 0.80) { print "FAIL: test accuracy " a " < 0.80"; exit 1 } }'

# one metrics line an epoch with the promised fields
[ "$(grep -c '"epoch"' run/metrics.jsonl)" -eq 3 ]
for k in epoch train_loss train_acc test_acc active_params seconds; do
  grep -q "\"$k\"" run/metrics.jsonl || { echo "FAIL: metrics lack $k"; exit 1; }
done

# eval reproduces the training run's last test accuracy
./model eval run/final.ckpt >eval.out
cat eval.out
eacc=$(sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' eval.out | tail -n 1)
[ "$eacc" = "$acc" ] || { echo "FAIL: eval $eacc != train $acc"; exit 1; }

# --profile: a table of every layer's time per step, on stderr
./model train --help | grep -q -- "--profile"
./model train --search fixed --train-limit 640 --epochs 1 --test-limit 100 --run-dir prof \
  --threads 2 --quiet --profile >/dev/null 2>prof.out
cat prof.out
# the run's first step (its arenas' first touch) is timed apart from the table
grep -q "^profile: milliseconds per training step over 9 steps" prof.out
grep -q "^first step: [0-9.]* ms, not in the table" prof.out
grep -q "^data: [0-9]* of 10 steps" prof.out
# the timed steps' median, middle half and extremes, in order
awk '/^steps: median/ && / \(9 steps of a whole batch\)$/ {
  gsub(/,/, ""); m = $3; q1 = $7; q3 = $9; lo = $12; hi = $15
  ok = lo > 0 && lo <= q1 && q1 <= m && m <= q3 && q3 <= hi }
  END { exit !ok }' prof.out || { echo "FAIL: the profile's step times"; exit 1; }
for op in conv1.0 conv2.0 reduce1 linear1.0 classifier loss sgd total; do
  grep -q "^  $op " prof.out || { echo "FAIL: the profile lacks $op"; exit 1; }
done
awk '$1 == "conv2.0" && $3 > 0 && $4 > 0 { ok = 1 } END { exit !ok }' prof.out ||
  { echo "FAIL: conv2.0 has no time in the profile"; exit 1; }

./model info run/final.ckpt | tee info.out
grep -q "^total:" info.out

# a damaged checkpoint is refused with a message, exit 1
cp run/final.ckpt bad.ckpt
printf 'X' | dd of=bad.ckpt bs=1 seek=200 conv=notrunc 2>/dev/null
if ./model eval bad.ckpt 2>err.out; then echo "FAIL: damaged checkpoint accepted"; exit 1; fi
grep -q "bad.ckpt" err.out
head -c 1000 run/final.ckpt >short.ckpt
if ./model info short.ckpt 2>err.out; then echo "FAIL: truncated checkpoint accepted"; exit 1; fi
grep -q "short.ckpt" err.out
echo "ok: fixed architecture reached $acc"

# a network that stops learning (too large a step kills its ReLUs) is told
# so once, with what to try
./model train --train-limit 3000 --epochs 3 --freeze-last 3 --test-limit 500 --lr 1.5 --run-dir dead \
  --seed 1 --threads 2 --quiet >dead.out 2>dead.err
cat dead.err
[ "$(grep -c "warning: epoch [0-9]*: the network predicts at chance" dead.err)" -eq 1 ] ||
  { echo "FAIL: no warning for a network at chance"; exit 1; }
grep -q "try a smaller learning rate than 1.5" dead.err
echo "ok: a network at chance is told so"
