#!/bin/sh
# Same seed and threads give the same run, bit for bit; a run stopped after
# an expansion and resumed from its checkpoint ends identical to one that
# was never stopped; the baselines run.
# usage: resume.sh ILNASC MODEL WORKDIR
set -eu
ilnasc=$1 model=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
"$ilnasc" "$model" -o grow
opts="--train-limit 640 --test-limit 200 --epochs 5 --threads 2 --seed 4 --quiet"
./grow train $opts --run-dir a >/dev/null
./grow train $opts --run-dir b >/dev/null
cmp a/final.ckpt b/final.ckpt || { echo "FAIL: same seed, different runs"; exit 1; }
./grow train $opts --run-dir c --stop-after 2 >/dev/null
[ ! -e c/final.ckpt ] && [ -e c/last.ckpt ]
./grow train $opts --run-dir c --resume c/last.ckpt >/dev/null
cmp a/final.ckpt c/final.ckpt || { echo "FAIL: the resumed run differs"; exit 1; }
./grow train $opts --run-dir d --seed 5 >/dev/null
if cmp -s a/final.ckpt d/final.ckpt; then echo "FAIL: the seed changes nothing"; exit 1; fi
# the baselines: random grows like ilnas, fixed starts at the budget
./grow train $opts --run-dir r --search random >/dev/null
./grow train $opts --run-dir f --search fixed >/dev/null
grep -q '"event": "expand"' r/metrics.jsonl
if grep -q '"event": "expand"' f/metrics.jsonl; then echo "FAIL: fixed grew"; exit 1; fi
first_f=$(head -n 1 f/metrics.jsonl | sed -n 's/.*"active_params": \([0-9]*\).*/\1/p')
[ "$first_f" -ge 29700 ] || { echo "FAIL: fixed starts at $first_f, not the budget"; exit 1; }
ra=$(sed -n 's/.*"event": "expand".*"added": \([0-9]*\).*/\1/p' a/metrics.jsonl | head -n 1)
rr=$(sed -n 's/.*"event": "expand".*"added": \([0-9]*\).*/\1/p' r/metrics.jsonl | head -n 1)
echo "first expansion: ilnas added $ra, random added $rr"
./grow plot a r f -o curves.svg
echo "ok: deterministic, resumable, baselines run"
