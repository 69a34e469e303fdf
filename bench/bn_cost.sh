#!/bin/sh
# What batch norm costs in a training step: trains
# bench/bn_template.ilnas ([conv 3x3, batch norm, ReLU] x2 at 32 and at 64
# channels, FC 128, ~21% dense, batch 128) and its twin without batch norm,
# bench/bn_template_nonorm.ilnas, one epoch of IMAGES images each, back to
# back in PAIRS (default 3) pairs, with --profile. Prints each pair's
# milliseconds per step with and without batch norm, their ratio, and
# batch norm's share of the step: the layers' rows (conv, max pool,
# linear) of the profile table with batch norm less the same rows
# without, over the step (the pools and the linear layer: under a pool,
# batch norm's output is pooled as it is made and its backward takes the
# pool's; a pool's output left to the one layer that reads it is made,
# and its sums taken, in that layer's rows), and the share of the whole
# step from each run's median step (--profile's steps line: a step that
# lost its core moves a mean, not a median). Medians and minimums at the
# end, the median of the pairs' own shares (by the rows, and by the
# median steps), and the same from each profile row's minimum over the
# pairs; last, each layer's forward and backward, with batch norm less
# without, from their least over the pairs. The pairs alternate which of
# the two runs first. On a VM whose speed drifts from one minute to the
# next, THREADS=1 gives the steadier share: no step waits on a
# descheduled second thread.
# usage: [PAIRS=N] bench/bn_cost.sh [IMAGES=6000] [THREADS=2] [BACKEND=cpu]
#   ILNASC=FILE       the compiler (default: build/bin/ilnasc, built here)
#   BASE_ILNASC=FILE  a second compiler (another commit's build) measured
#                     in the same pairs, before the first: before/after
#   FMNIST=DIR        the data set (default /usr/share/datasets/fashion-mnist)
#   BENCH_DIR=DIR     scratch (default build/bench-bn)
set -eu
images=${1:-6000} threads=${2:-2} backend=${3:-cpu}
top=$(cd "$(dirname "$0")/.." && pwd)
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
work=${BENCH_DIR:-$top/build/bench-bn}
if [ -z "${ILNASC:-}" ]; then
  cmake --build "$top/build" --target ilnasc >/dev/null
  ILNASC=$top/build/bin/ilnasc
fi
rm -rf "$work" && mkdir -p "$work"
sides="new"
"$ILNASC" "$top/bench/bn_template.ilnas" -o "$work/new-bn"
"$ILNASC" "$top/bench/bn_template_nonorm.ilnas" -o "$work/new-nobn"
if [ -n "${BASE_ILNASC:-}" ]; then
  sides="base new"
  "$BASE_ILNASC" "$top/bench/bn_template.ilnas" -o "$work/base-bn"
  "$BASE_ILNASC" "$top/bench/bn_template_nonorm.ilnas" -o "$work/base-nobn"
fi
cd "$work"
# run MODEL: trains it, leaves the profile table in MODEL.prof
run() {
  rm -rf "run-$1"
  "./$1" train --search fixed --epochs 1 --train-limit "$images" --test-limit 100 --data "$data" \
    --threads "$threads" --backend "$backend" --profile --quiet --run-dir "run-$1" >/dev/null 2>"$1.prof"
}
# ms per step, and the layers' rows' forward + backward
total() { awk '$1 == "total" { print $2 }' "$1"; }
# the median of the run's steps of a whole batch (--profile's "steps:")
median() { awk '$1 == "steps:" { print $3 }' "$1"; }
convs() { awk '$2 == "conv" || $2 == "maxpool" || $2 == "linear" { s += $3 + $4 } END { printf "%.3f", s }' "$1"; }
echo "bn_template: $images images, batch 128, $threads threads, --backend $backend"
# one line per pair and side: ms/step with and without batch norm, and
# the layers' rows' sums with and without
line() {
  awk -v s="$1" -v i="$2" -v a="$3" -v b="$4" -v c="$5" -v d="$6" 'BEGIN {
    printf "%s %s: %.1f ms/step with batch norm, %.1f without: %.2fx; batch norm (layer rows) %.1f ms, %.1f%% of the step; the whole difference %.1f%%\n",
      s, i, a, b, a / b, c - d, 100 * (c - d) / a, 100 * (a - b) / a }'
}
pairs=${PAIRS:-3}
i=1
while [ "$i" -le "$pairs" ]; do
  for side in $sides; do
    # odd pairs run batch norm first, even pairs the twin: a drift of
    # the machine's speed through the run falls on both sides alike
    if [ $((i % 2)) -eq 1 ]; then run "$side-bn" && run "$side-nobn"
    else run "$side-nobn" && run "$side-bn"; fi
    a=$(total "$side-bn.prof") b=$(total "$side-nobn.prof")
    c=$(convs "$side-bn.prof") d=$(convs "$side-nobn.prof")
    e=$(median "$side-bn.prof") f=$(median "$side-nobn.prof")
    echo "$a $b $c $d $e $f" >>"$side.txt"
    cp "$side-bn.prof" "$side-bn.$i.prof" && cp "$side-nobn.prof" "$side-nobn.$i.prof"
    line "$side" "pair $i" "$a" "$b" "$c" "$d"
    [ -z "$e" ] || [ -z "$f" ] || awk -v e="$e" -v f="$f" 'BEGIN {
      printf "  median steps: %.1f ms with batch norm, %.1f without: %.1f%% of the step\n",
        e, f, 100 * (e - f) / e }'
  done
  i=$((i + 1))
done
# medians of each column (a pair's own ratio and share are not medianed:
# the medians of the times are compared), and minimums: on a machine
# shared with other work, each column's least is the nearest to an idle
# machine's
# order: numbers on stdin, one a line -> "median least most count"
order() {
  sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR], NR }'
}
# column k of a side's pairs: the median (what=1) or the least (what=2)
column() { awk -v k="$2" '{ print $k }' "$1.txt" | order | awk -v w="$3" '{ print $w }'; }
for side in $sides; do
  line "$side" "median" $(for k in 1 2 3 4; do column "$side" "$k" 1; done)
done
for side in $sides; do
  line "$side" "min" $(for k in 1 2 3 4; do column "$side" "$k" 2; done)
done
# the median of the pairs' own shares: a spell that moves both runs of a
# pair cancels in that pair's share, where the medians of each column
# above may take their two sides from different pairs
for side in $sides; do
  set -- $(awk '{ print 100 * ($3 - $4) / $1 }' "$side.txt" | order)
  printf "%s pairs' shares: median %.1f%%, from %.1f%% to %.1f%% (%d pairs)\n" "$side" "$1" "$2" \
    "$3" "$4"
  # the same from each run's median step: a step that lost its core to
  # another program moves a run's mean, not its median
  set -- $(awk 'NF == 6 { print 100 * ($5 - $6) / $5 }' "$side.txt" | order)
  if [ $# -eq 4 ]; then
    printf "%s pairs' shares by the steps' medians: median %.1f%%, from %.1f%% to %.1f%%\n" \
      "$side" "$1" "$2" "$3"
  fi
done
# each row's least over the pairs (forward and backward together), then
# their sums: on a noisy machine a pair's total carries that pair's
# noise in every row, and the rows' minimums come nearer an idle step
rowmins() {
  cat "$@" | awk '$0 !~ /^  [a-z]/ || $1 == "op" || $1 == "total" { next }
    { v = NF >= 5 ? $3 + $4 : $2; if (!($1 in m) || v < m[$1]) m[$1] = v
      pool[$1] = $2 == "conv" || $2 == "maxpool" || $2 == "linear" }
    END { for (k in m) { s += m[k]; if (pool[k]) c += m[k] }; printf "%.3f %.3f", s, c }'
}
for side in $sides; do
  set -- $(rowmins "$side"-bn.*.prof) $(rowmins "$side"-nobn.*.prof)
  line "$side" "rows' minimums" "$1" "$3" "$2" "$4"
done
# by layer: each layer row's least forward and least backward over the
# pairs, with batch norm less without (milliseconds a step)
for side in $sides; do
  echo "$side by layer (each row's least over the pairs, with batch norm less without):"
  for f in "$side"-bn.*.prof "$side"-nobn.*.prof; do
    case $f in *-nobn.*) echo "nobn $f" ;; *) echo "bn $f" ;; esac
  done | while read -r k f; do
    awk -v k="$k" '$2 == "conv" || $2 == "maxpool" || $2 == "linear" { print k, $1, $3, $4 }' "$f"
  done | awk '{ f = $1 " " $2
      if (!(f in fw) || $3 < fw[f]) fw[f] = $3
      if (!(f in bw) || $4 < bw[f]) bw[f] = $4
      if ($1 == "bn" && !($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
    END { for (i = 1; i <= n; i++) { r = order[i]
        printf "  %-12s forward %+.3f ms, backward %+.3f ms\n", r,
          fw["bn " r] - fw["nobn " r], bw["bn " r] - bw["nobn " r] } }'
done
