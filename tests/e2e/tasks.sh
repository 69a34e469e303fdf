#!/bin/sh
# Multi-task training: two tasks (Fashion-MNIST, and its test images at 8x8
# with four coarse labels) over one super-network with 20% of the budget
# shared. Each task learns well above its majority class; the shared
# architecture grows and is counted once; eval, info and export know the
# tasks; a stopped run resumes exactly; bad runs are refused, naming what
# is wrong, with nothing written.
# usage: tasks.sh ILNASC MODEL WORKDIR
set -eu
ilnasc=$1 model=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
python3 "$here/coarse.py" "$data" coarse.csv 3000
"$ilnasc" "$model" -o pair
opts="--train-limit 1500 --test-limit 400 --threads 2 --quiet"

line=$(./pair train $opts --run-dir run | tail -n 1)
echo "$line"
task() { echo "$line" | sed -n "s/.*\"$1\": {\"test_acc\": \([0-9.]*\), \"active_params\": \([0-9]*\)}.*/\\$2/p"; }
fa=$(task fashion 1) ca=$(task coarse 1) fp=$(task fashion 2) cp=$(task coarse 2)
shared=$(echo "$line" | field shared_params)
stored=$(echo "$line" | sed -n 's/^{"test_acc": [0-9.]*, "active_params": \([0-9]*\),.*/\1/p')
[ -n "$fa" ] && [ -n "$ca" ] && [ -n "$shared" ] || fail "no per-task results in: $line"
# chance: 10% for fashion; coarse's majority class (tops) is 41%
awk -v a="$fa" 'BEGIN { exit !(a > 0.5) }' || fail "fashion: test_acc $fa"
awk -v a="$ca" 'BEGIN { exit !(a > 0.6) }' || fail "coarse: test_acc $ca"
# stored once: the shared part and each task's own
[ "$stored" -eq $((fp + cp - shared)) ] || fail "$stored stored, want $fp + $cp - $shared"
[ "$shared" -le 12000 ] || fail "$shared shared parameters, more than 20% of 60k"
[ "$fp" -le 60000 ] && [ "$cp" -le 60000 ] || fail "a task's network over its budget: $fp, $cp"
grep -q '"tasks": {"fashion": {"train_loss"' run/metrics.jsonl || fail "metrics lack the tasks"
for t in shared fashion coarse; do
  grep -q "\"event\": \"expand\", \"task\": \"$t\"" run/metrics.jsonl || fail "no $t expansion"
done
./pair plot run -o curves.svg
grep -q "run: coarse (final test acc" curves.svg || fail "the plot has no line for coarse"
echo "fashion $fa, coarse $ca; $fp + $cp parameters, $shared of them shared, $stored stored"

# --profile: each task's table, then the steps' times, every task's
# batch whole in each of them
./pair train --train-limit 640 --test-limit 100 --epochs 1 --threads 2 --quiet --profile \
  --run-dir prof >/dev/null 2>prof.out
for t in fashion coarse; do grep -q "^task $t:" prof.out || fail "the profile lacks task $t"; done
grep -q "^steps: median [0-9.]* ms, .* (9 steps of a whole batch)$" prof.out ||
  { cat prof.out; fail "the profile lacks the steps' times"; }

# eval and info, per task
ev=$(./pair eval run/final.ckpt --threads 2)
echo "$ev" | grep -q "\"fashion\": {\"test_acc\": $fa" || fail "eval: $ev (train said $fa)"
./pair info run/final.ckpt >info.txt
grep -q "^task coarse .*: $cp active, $shared shared" info.txt || { cat info.txt; fail "info"; }

# export: one network per task, named; as C, and as a PyTorch module and
# an ONNX model of the task's classes
for t in fashion coarse; do
  ./pair export --c run/final.ckpt --task $t -o $t.c >/dev/null
  grep -q "_forward" $t.h || fail "export of task $t"
  k=$([ $t = fashion ] && echo 10 || echo 4)
  ./pair export --pytorch run/final.ckpt --task $t -o $t.py >/dev/null
  grep -q "^CLASSES = $k$" $t.py || fail "export --pytorch of task $t"
  ./pair export --onnx run/final.ckpt --task $t -o $t.onnx >/dev/null
  if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
    /usr/bin/python3 -c "
import onnx, sys
m = onnx.load('$t.onnx'); onnx.checker.check_model(m)
sys.exit(m.graph.output[0].type.tensor_type.shape.dim[1].dim_value != $k)" ||
      fail "export --onnx of task $t"
  fi
done
if ./pair export --c run/final.ckpt -o none.c 2>err.txt; then fail "export without --task"; fi
grep -q "has tasks (fashion, coarse); name one with --task" err.txt || { cat err.txt; fail "export"; }
[ ! -e none.c ] || fail "export without --task wrote none.c"

# transfer from one task: a single-task model on the same template starts
# from the fashion network and evaluates as it did
sed -e '/task /d' -e 's/^  input 1x28x28;/  input 1x28x28; classes 10;/' -e '/^data coarse/d' \
  -e 's/^data fashion /data /' -e 's/ shared 0.2//' "$model" >solo.ilnas
"$ilnasc" solo.ilnas -o solo
fl=$(./solo train $opts --epochs 1 --from run/final.ckpt --task fashion --run-dir from | tail -n 1)
echo "$fl" | grep -q "\"from_acc\": $fa" || fail "from the fashion task: $fl (eval said $fa)"
refused from_task "has tasks (fashion, coarse); name one with --task NAME" \
  ./solo train $opts --from run/final.ckpt
refused no_task "no task 'shoes' (its tasks: fashion, coarse)" \
  ./solo train $opts --from run/final.ckpt --task shoes

# stopped and resumed: the same final checkpoint
./pair train $opts --run-dir stop --stop-after 2 >/dev/null
./pair train $opts --run-dir stop --resume stop/last.ckpt >/dev/null
cmp run/final.ckpt stop/final.ckpt || fail "the resumed run differs"

# bad runs
refused data "--data names one" ./pair train $opts --data /tmp
refused from "--from starts a single-task run" ./pair train $opts --from run/final.ckpt
sed 's/budget 60k/budget 30k/' "$model" >small.ilnas && "$ilnasc" small.ilnas -o small
refused shared "more than the shared part of the budget" ./small train $opts
sed 's/task coarse { classes 4; }/task coarse { classes 3; }/' "$model" >three.ilnas
"$ilnasc" three.ilnas -o three
refused classes "coarse.csv:19: label '3' out of range 0..2" ./three train $opts
grep -q "task 'coarse'" err.txt || fail "the labels' error does not name the task"
echo "ok: two tasks learn, share and resume; eval, info and export know them; bad runs refused"
