#!/bin/sh
# Transfer (train --from) on Fashion-MNIST: a run from a trained checkpoint
# keeps its accuracy before any training, keeps growing and resumes exactly;
# across class counts (or with --new-head) it makes a new classifier and
# trains; --lr sets the learning rate to fine-tune at; every bad --from is
# refused, naming what is wrong, with nothing written.
# usage: transfer.sh ILNASC MODEL WORKDIR
set -eu
ilnasc=$1 model=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
"$ilnasc" "$model" -o grow
sed 's/classes 10;/classes 12;/' "$model" >c12.ilnas && "$ilnasc" c12.ilnas -o c12
sed 's/channels 16\.\.32/channels 16..48/' "$model" >wide.ilnas && "$ilnasc" wide.ilnas -o wide
sed 's/layers 1\.\.2 channels 8/layers 1..3 channels 8/' "$model" >deep.ilnas && "$ilnasc" deep.ilnas -o deep
opts="--train-limit 640 --test-limit 200 --threads 2 --quiet"

./grow train $opts --epochs 3 --run-dir src >/dev/null
src_acc=$(./grow eval src/final.ckpt --threads 2 | tail -n 1 | field test_acc)
src_params=$(./grow info src/final.ckpt | sed -n 's/^total: \([0-9]*\) active.*/\1/p')

# The same classes: the network as it was, then phase II keeps growing.
line=$(./grow train $opts --epochs 4 --from src/final.ckpt --run-dir same | tail -n 1)
from_acc=$(echo "$line" | field from_acc)
[ -n "$from_acc" ] || fail "no from_acc in: $line"
awk -v a="$src_acc" -v b="$from_acc" 'BEGIN { d = a - b; exit !(d <= 1e-6 && d >= -1e-6) }' ||
  fail "from_acc $from_acc, but the checkpoint evaluates to $src_acc"
grep -q '"event": "expand"' same/metrics.jsonl || fail "the transferred network did not grow"
params=$(echo "$line" | field active_params)
[ "$params" -gt "$src_params" ] || fail "$params active parameters, the checkpoint had $src_params"
echo "same classes: from_acc $from_acc = eval $src_acc; grew $src_params -> $params"
# A transferred run stopped and resumed ends as the one never stopped.
./grow train $opts --epochs 4 --from src/final.ckpt --run-dir stop --stop-after 2 >/dev/null
./grow train $opts --epochs 4 --resume stop/last.ckpt --run-dir stop >/dev/null
cmp same/final.ckpt stop/final.ckpt || fail "the resumed transfer differs"

# Other classes: a new classifier, no from_acc, and it learns.
line=$(./c12 train $opts --epochs 4 --from src/final.ckpt --run-dir other 2>err.txt | tail -n 1)
case "$line" in *from_acc*) fail "from_acc with other classes: $line" ;; esac
acc=$(echo "$line" | field test_acc)
awk -v a="$acc" 'BEGIN { exit !(a > 0.2) }' || fail "12 classes from the checkpoint: test_acc $acc"
echo "12 classes: a new classifier, test_acc $acc"
# --new-head: a fresh classifier for the same classes, so no from_acc.
line=$(./grow train $opts --epochs 1 --from src/final.ckpt --new-head --run-dir fresh | tail -n 1)
case "$line" in *from_acc*) fail "from_acc with --new-head: $line" ;; esac

# Fine-tuning at another learning rate: --lr is the schedule's base.
./grow train $opts --epochs 2 --from src/final.ckpt --lr 0.005 --run-dir slow >/dev/null
lr=$(head -n 1 slow/metrics.jsonl | field lr)
[ "$lr" = 0.005 ] || fail "--lr 0.005: the first epoch ran at $lr"
for v in 0 -1 abc 1e400 nan; do
  refused "lr_$v" "--lr expects a positive number, got '$v'" ./grow train $opts --lr "$v"
done

# Every bad --from: an error naming it, a non-zero exit, no run directory.
refused wide "at layer 3, 'conv2.0': another shape" ./wide train $opts --from src/final.ckpt
refused deep "the checkpoint has 'reduce1'" ./deep train $opts --from src/final.ckpt
refused missing "nope.ckpt: cannot open" ./grow train $opts --from nope.ckpt
head -c 3000 src/final.ckpt >cut.ckpt
refused cut "cut.ckpt: truncated" ./grow train $opts --from cut.ckpt
cp src/final.ckpt flip.ckpt && printf 'X' | dd of=flip.ckpt bs=1 seek=2000 conv=notrunc 2>/dev/null
refused corrupt "flip.ckpt" ./grow train $opts --from flip.ckpt
refused resume "give one of them" ./grow train $opts --from src/final.ckpt --resume src/last.ckpt
refused new_head "there is no --from" ./grow train $opts --new-head

echo "ok: transfer keeps its accuracy and grows, new heads train, bad --from refused"
