#!/bin/sh
# random.sh ILNASC TEST_RANDOM_MODELS WORK [COUNT [SEED]]: models drawn at
# random from the language (test_random_models --print), each compiled by
# ilnasc and run as a user runs it, on a small synthetic CIFAR-10 set
# read through the input adapters (resize to the model's input, channels):
# - train 3 epochs with growth after each; the same run stopped after
#   epoch 1 and resumed, whose final checkpoint must be the first run's,
#   byte for byte; eval, info; the network exported as C, built with
#   -Werror;
# - transfer: a run from that checkpoint (train --from) evaluates as the
#   checkpoint did before it trains, grows, and resumes exactly;
# - two tasks over the same template (the second on another synthetic
#   set), on cpu, cpu/bounds, blas and ref in turn: trained with growth,
#   resumed exactly, evaluated; task b's network, taken by the model
#   (train --from --task b) on b's data, evaluates as eval said; info's
#   shared and stored counts are the run's; each task's network exported.
# Needs no data set (python3 writes them).
set -eu
ilnasc=$1 trm=$2 work=$3 count=${4:-6} seed=${5:-1}
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work/cifar" "$work/cifar2" && cd "$work"
python3 - <<'EOF'
import random
rng = random.Random(1)
def record(label, other):  # one label byte, then 3x32x32 bytes: a pattern per class, and noise
    out = bytearray([label])
    for c in range(3):
        base = (label * (41 if other else 25) + c * 60) % 256
        slope = (label + other) % 3
        out += bytes((base + ((i // 32 if other else i) % 32) * slope + rng.randrange(64)) % 256
                     for i in range(1024))
    return out
for folder, other in [("cifar", 0), ("cifar2", 1)]:  # the second: rows for columns
    for name, count in [("data_batch_%d.bin" % k, 64) for k in range(1, 6)] + [("test_batch.bin", 100)]:
        with open(folder + "/" + name, "wb") as f:
            for _ in range(count):
                f.write(record(rng.randrange(10), other))
EOF
"$trm" --print "$count" "$seed" > models.txt
[ "$(wc -l < models.txt)" -eq "$count" ] || fail "test_random_models --print gave $(wc -l < models.txt) models, not $count"
i=0
while read -r src; do
  i=$((i + 1))
  d=m$i && mkdir -p $d && cd $d
  # the input's shape; CIFAR's 3 channels go to 1 or 3 (a model of 2 takes 3)
  shape=$(echo "$src" | sed 's/.*input \([0-9]*\)x\([0-9]*\)x\([0-9]*\);.*/\1 \2 \3/')
  set -- $shape
  c=$1 h=$2 w=$3
  [ "$c" = 2 ] && c=3
  # CIFAR's 10 classes and 3 channels may take the seed past a drawn
  # budget: none, growth by the default Alr
  echo "$src" | sed -e "s/input [0-9]*x/input ${c}x/" -e 's/classes [0-9]*;/classes 10;/' \
    -e 's/ budget [0-9]*k//' -e 's/ }$//' > m.ilnas
  printf ' }\ndata cifar10 "%s/cifar" resize %sx%s channels %s;\ntrain batch 16 epochs 3;\ngrow ilnas every 1 epoch;\n' \
    "$work" "$h" "$w" "$c" >> m.ilnas
  what="model $i ($(head -c 60 m.ilnas)...)"
  "$ilnasc" m.ilnas -o m > log 2>&1 || { cat log; fail "$what: ilnasc"; }
  run="--train-limit 320 --test-limit 64 --threads 2 --quiet"
  ./m train $run --run-dir a >> log 2>&1 || { cat log; fail "$what: train"; }
  ./m train $run --run-dir b --stop-after 1 >> log 2>&1 || { cat log; fail "$what: train --stop-after 1"; }
  ./m train $run --run-dir b --resume b/last.ckpt >> log 2>&1 || { cat log; fail "$what: --resume"; }
  cmp a/final.ckpt b/final.ckpt || fail "$what: the resumed run's checkpoint differs from the whole run's"
  ./m eval a/final.ckpt >> log 2>&1 || { cat log; fail "$what: eval"; }
  ./m info a/final.ckpt >> log 2>&1 || { cat log; fail "$what: info"; }
  ./m export --c a/final.ckpt -o net.c >> log 2>&1 || { cat log; fail "$what: export --c"; }
  ${CC:-cc} -std=c11 -Wall -Wextra -Werror -O1 -c net.c -o net.o || fail "$what: net.c does not build"

  # transfer: the same classes, so the run evaluates the checkpoint first
  acc=$(./m eval a/final.ckpt --threads 2 | tail -n 1 | sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p')
  line=$(./m train $run --from a/final.ckpt --epochs 2 --run-dir t 2>>log | tail -n 1)
  echo "$line" | grep -q "\"from_acc\": $acc[,}]" || fail "$what: --from: $line (eval said $acc)"
  ./m train $run --from a/final.ckpt --epochs 2 --run-dir u --stop-after 1 >> log 2>&1 ||
    { cat log; fail "$what: --from, --stop-after 1"; }
  ./m train $run --epochs 2 --run-dir u --resume u/last.ckpt >> log 2>&1 ||
    { cat log; fail "$what: --from, --resume"; }
  cmp t/final.ckpt u/final.ckpt || fail "$what: the resumed transfer differs from the whole one"

  # two tasks: no classes of the model's own, a shared part (of no
  # budget: the budget went above), a data statement each
  sed -e 's/ classes 10;//' -e 's/search \([a-z]*\) /search \1 shared 0.3 /' \
    -e 's/^ }$/ task a { classes 10; } task b { classes 10; } }/' \
    -e "s|^data cifar10 \"\([^\"]*\)\"\(.*\)|data a cifar10 \"\1\"\2\ndata b cifar10 \"\12\"\2|" m.ilnas > mt.ilnas
  "$ilnasc" mt.ilnas -o mt >> log 2>&1 || { cat log mt.ilnas; fail "$what: ilnasc"; }
  # on each backend in turn (the bounds layout gives layers one shape,
  # whose kernels a growth may trade)
  set -- cpu cpu/bounds blas ref
  shift $(((i - 1) % 4))
  mrun="$run --backend $1" what="$what, two tasks on $1"
  line=$(./mt train $mrun --run-dir ta 2>>log | tail -n 1)
  shared=$(echo "$line" | sed -n 's/.*"shared_params": \([0-9]*\).*/\1/p')
  stored=$(echo "$line" | sed -n 's/^{"test_acc": [0-9.]*, "active_params": \([0-9]*\),.*/\1/p')
  [ -n "$shared" ] && [ -n "$stored" ] || { cat log; fail "$what: $line"; }
  ./mt train $mrun --run-dir tb --stop-after 1 >> log 2>&1 || { cat log; fail "$what: --stop-after 1"; }
  ./mt train $mrun --run-dir tb --resume tb/last.ckpt >> log 2>&1 || { cat log; fail "$what: --resume"; }
  cmp ta/final.ckpt tb/final.ckpt || fail "$what: the resumed run differs from the whole one"
  ev=$(./mt eval ta/final.ckpt --threads 2 --backend $1 2>>log) || { cat log; fail "$what: eval"; }
  # task b's network, taken by the single-task model on b's data, evaluates
  # as eval said (its own batch norm and statistics with it)
  bacc=$(echo "$ev" | sed -n 's/.*"b": {"test_acc": \([0-9.]*\),.*/\1/p')
  line=$(./m train $mrun --from ta/final.ckpt --task b --data "$work/cifar2" --epochs 1 \
           --run-dir fb 2>>log | tail -n 1)
  echo "$line" | grep -q "\"from_acc\": $bacc[,}]" || fail "$what: --from task b: $line (eval: $ev)"
  ./mt info ta/final.ckpt > info.txt 2>> log || { cat log; fail "$what: info"; }
  grep -q "^total: $stored parameters stored ($shared shared)" info.txt ||
    { cat info.txt; fail "$what: info does not say the run's $stored stored, $shared shared"; }
  for k in a b; do
    ./mt export --c ta/final.ckpt --task $k -o $k.c >> log 2>&1 || { cat log; fail "$what: export --task $k"; }
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -O1 -c $k.c -o $k.o || fail "$what: task $k's $k.c does not build"
  done
  echo "ok: $what"
  cd ..
done < models.txt
echo "ok: $count drawn models compiled, trained with growth, resumed exactly, evaluated and exported; transferred; as two tasks"
