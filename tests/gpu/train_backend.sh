#!/bin/sh
# `model train --backend cuda` end to end. Without a GPU it must exit 1
# with the backend's one clear line ("no CUDA driver: ..." or "no GPU:
# ..."), not crash; with one it must train an epoch and report a test
# accuracy. Skips (77) when Fashion-MNIST is absent.
# usage: train_backend.sh ILNASC SAMPLE WORKDIR
set -u
ilnasc=$1 sample=$2 work=$3
data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not installed in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
"$ilnasc" "$sample" -o model || exit 1

./model train --backend cuda --search fixed --train-limit 512 --epochs 1 --run-dir run \
  --seed 1 --threads 2 >train.out 2>train.err
rc=$?
cat train.out train.err
case $rc in
0)
  grep -q '"test_acc"' train.out || { echo "FAIL: trained on the GPU but printed no test_acc"; exit 1; }
  echo "trained one epoch on the cuda backend" ;;
1)
  grep -Eq '^error: (no CUDA driver: libcuda\.so\.1 not found|no GPU: )' train.err ||
    { echo "FAIL: exit 1 without the no-GPU message"; exit 1; }
  [ "$(wc -l <train.err)" -eq 1 ] || { echo "FAIL: more than one line on stderr"; exit 1; }
  echo "no GPU here: refused with one clear line" ;;
*)
  echo "FAIL: model train --backend cuda exited $rc"
  exit 1 ;;
esac
