#!/bin/sh
# bench/pair_steps on the batch norm template and its twin, a few rounds
# at a small batch: its report's lines (the quarters from 8 rounds); a
# model against itself with --profile's tables; its refusals (a bad
# option, a missing model). No timing is held to anything.
# usage: pair_steps.sh PAIR_STEPS BENCH_DIR WORKDIR
set -eu
pair=$1 bench=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

"$pair" --help | grep -q -- "--batch"
"$pair" --rounds 8 --warmup 1 --burst 2 --batch 16 --threads 1 \
  "$bench/bn_template.ilnas" "$bench/bn_template_nonorm.ilnas" >out.txt 2>&1 ||
  { rc=$?; cat out.txt; fail "pair_steps exited $rc"; }
cat out.txt
grep -q "^8 rounds (after 1) of 2 steps a model, batch 16, 1 threads, backend cpu" out.txt ||
  fail "no header with the options given"
for line in "^A .*bn_template.ilnas: median" "^B .*bn_template_nonorm.ilnas: median" \
  "^A against B: " "^the rounds' own shares: median" "^by quarters of the rounds"; do
  grep -q "$line" out.txt || fail "no line '$line'"
done
"$pair" --rounds 2 --warmup 0 --burst 1 --batch 8 --threads 1 --profile \
  "$bench/bn_template.ilnas" "$bench/bn_template.ilnas" >self.txt 2>&1 ||
  { rc=$?; cat self.txt; fail "against itself: exited $rc"; }
grep -q "conv1.1 " self.txt || { cat self.txt; fail "--profile: no layer table"; }

if "$pair" --batch 0 a b >err.txt 2>&1; then fail "--batch 0 accepted"; fi
grep -q -- "--batch needs a whole number of at least 1" err.txt || { cat err.txt; fail "--batch 0"; }
if "$pair" --rounds 2 nothing.ilnas "$bench/bn_template.ilnas" >err.txt 2>&1; then
  fail "a missing model accepted"
fi
grep -q "nothing.ilnas" err.txt || { cat err.txt; fail "the missing model is not named"; }
echo "pair_steps: $(grep "^A against B" out.txt)"
