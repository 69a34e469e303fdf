#!/bin/sh
# An image folder end to end: a small generated folder (JPEG and PNG, gray
# and RGB, sizes varying) trains a model that learns it, eval agrees, eval
# over other class names is refused, a bad file stops a run and --skip-bad
# skips it. Needs no data set.
set -eu
ilnasc=$1 maker=$2 work=$3
rm -rf "$work" && mkdir -p "$work/data" && cd "$work"
"$maker" --make data
sed "s|FOLDER|$work/data|" "$(cd "$(dirname "$0")" && pwd)/folder.ilnas" >folder.ilnas
"$ilnasc" folder.ilnas -o folder
./folder train --threads 2 --loaders 2 --run-dir run --quiet --profile >out.txt 2>err.txt
cat out.txt
grep '^data: ' err.txt
acc=$(sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' out.txt)
awk -v a="$acc" 'BEGIN { exit !(a >= 0.6) }' || { echo "FAIL: test accuracy $acc"; exit 1; }
./folder eval run/final.ckpt --threads 2 >eval.txt
cat eval.txt
grep -q "\"test_acc\": $acc" eval.txt || { echo "FAIL: eval differs from training's last epoch"; exit 1; }

mv data/train/zebra data/train/zz && mv data/val/zebra data/val/zz
if ./folder eval run/final.ckpt 2>e1.txt; then echo "FAIL: eval over other classes ran"; exit 1; fi
grep "trained on other classes than .* class 2 is 'zebra' in the checkpoint and 'zz'" e1.txt
mv data/train/zz data/train/zebra && mv data/val/zz data/val/zebra

printf 'not a picture' >data/train/mango/broken.jpg
if ./folder train --epochs 1 --run-dir run2 --quiet 2>e2.txt; then echo "FAIL: ran over a bad file"; exit 1; fi
grep "1 of 31 files are not usable images: .*train/mango/broken.jpg: not a JPEG or PNG image" e2.txt
./folder train --epochs 1 --run-dir run2 --quiet --skip-bad 2>e3.txt >/dev/null
grep "warning: .*train/mango/broken.jpg: not a JPEG or PNG image .*(skipped)" e3.txt
echo "ok"
