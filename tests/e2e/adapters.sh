#!/bin/sh
# The input adapters on Fashion-MNIST: fed to a CIFAR-shaped model (3x32x32)
# it is refused, naming the adapters that fit it, and trains through them
# ('resize 32x32 channels 3').
# usage: adapters.sh ILNASC WORKDIR
set -eu
ilnasc=$1 work=$2
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
opts="--train-limit 640 --test-limit 200 --threads 2 --quiet"
# Fashion-MNIST into a CIFAR-shaped model: refused naming the adapters,
# then trained through them.
cat >rgb.ilnas <<'M'
model rgb {
  input 3x32x32; classes 10;
  search weight budget 20k from density 0.25 seed 1;
  stage conv { channels 8..16; } reduce maxpool 4;
  stage linear { width 16..32; }
}
data idx "/usr/share/datasets/fashion-mnist";
train batch 64 epochs 3 lr 0.05;
grow fixed;
M
"$ilnasc" rgb.ilnas -o rgb
refused shape "add 'resize 32x32 channels 3' to its data statement" ./rgb train $opts
sed 's|fashion-mnist"|fashion-mnist" resize 32x32 channels 3|' rgb.ilnas >rgb3.ilnas
"$ilnasc" rgb3.ilnas -o rgb3
acc=$(./rgb3 train $opts --run-dir run_rgb3 | tail -n 1 | field test_acc)
awk -v a="$acc" 'BEGIN { exit !(a > 0.2) }' || fail "fashion at 3x32x32: test_acc $acc"
echo "ok: data of another shape is refused naming the adapters, and trains through them"
