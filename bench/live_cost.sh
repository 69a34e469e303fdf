#!/bin/sh
# What the bounds cost a network that lives inside them: for
# the CIFAR-10 sample and the Fashion-MNIST sample, trains the seed inside
# the sample's bounds ("wide") and the same stages written as a template
# whose bounds are the seed's sizes ("tight": layers and channels at their
# lower bounds, the same density and seed), one epoch of IMAGES images
# each, back to back in PAIRS (default 3) pairs, nothing grown, with
# --profile. Prints per run the milliseconds per step (the profile's
# total), the arena's bytes per sample, the live activations' bytes per
# sample and the peak resident set, the wide/tight ratio of each, and
# medians at the end. CIFAR-10 is not on this machine: the script first
# writes CIFAR-10-format files of synthetic images (class-dependent
# colour ramps plus noise), which the real loader reads.
# usage: [PAIRS=N] bench/live_cost.sh [IMAGES=1280] [THREADS=2] [BACKEND=cpu]
#   ILNASC=FILE    the compiler (default: build/bin/ilnasc, built here)
#   FMNIST=DIR     Fashion-MNIST (default /usr/share/datasets/fashion-mnist)
#   BENCH_DIR=DIR  scratch (default build/bench-live)
set -eu
images=${1:-1280} threads=${2:-2} backend=${3:-cpu} pairs=${PAIRS:-3}
top=$(cd "$(dirname "$0")/.." && pwd)
fmnist=${FMNIST:-/usr/share/datasets/fashion-mnist}
work=${BENCH_DIR:-$top/build/bench-live}
if [ -z "${ILNASC:-}" ]; then
  cmake --build "$top/build" --target ilnasc >/dev/null
  ILNASC=$top/build/bin/ilnasc
fi
case $ILNASC in /*) ;; *) ILNASC=$PWD/$ILNASC ;; esac # the runs happen in $work
rm -rf "$work" && mkdir -p "$work/cifar"
cd "$work"

# CIFAR-10 binary: per record one label byte, then 3x32x32 bytes
python3 - "$images" <<'EOF'
import random, sys
n = int(sys.argv[1])
rng = random.Random(1)
def record(label):
    out = bytearray([label])
    for c in range(3):
        base, slope = (label * 25 + c * 60) % 256, label % 3
        out += bytes((base + (i % 32) * slope + rng.randrange(64)) % 256 for i in range(1024))
    return out
per = max(1, (n + 4) // 5)
for name, count in [("data_batch_%d.bin" % k, per) for k in range(1, 6)] + [("test_batch.bin", 200)]:
    with open("cifar/" + name, "wb") as f:
        for _ in range(count):
            f.write(record(rng.randrange(10)))
EOF

# The tight twin: every stage at its lower bounds (layers a..a, channels
# a..a, width a..a), the budget as it is: nothing grows.
tight() {
  sed -e 's/layers \([0-9]*\)\.\.[0-9]*/layers \1..\1/' \
      -e 's/channels \([0-9]*\)\.\.[0-9]*/channels \1..\1/' \
      -e 's/width \([0-9]*\)\.\.[0-9]*/width \1..\1/' \
      -e 's/^model \([a-z0-9_]*\)/model \1_tight/' "$1"
}
for m in cifar10 fmnist; do
  cp "$top/samples/$m.ilnas" "$m-wide.ilnas"
  tight "$top/samples/$m.ilnas" >"$m-tight.ilnas"
  "$ILNASC" "$m-wide.ilnas" -o "$m-wide"
  "$ILNASC" "$m-tight.ilnas" -o "$m-tight"
done

# run MODEL DATA: one epoch at the seed; leaves MODEL.prof
run() {
  rm -rf "run-$1"
  "./$1" train --epochs 1 --freeze-last 1 --train-limit "$images" --test-limit 100 --data "$2" \
    --threads "$threads" --backend "$backend" --profile --quiet --run-dir "run-$1" \
    >/dev/null 2>"$1.prof"
}
# fields MODEL: "step_ms arena_bytes live_bytes peak_bytes" from its profile
fields() {
  awk '
    function bytes(v, u) { return v * (u == "kB" ? 1e3 : u == "MB" ? 1e6 : u == "GB" ? 1e9 : 1) }
    $1 == "total" { ms = $2 }
    $1 == "memory:" {
      for (i = 1; i <= NF; i++) {
        if ($i == "arena") a = bytes($(i + 1), $(i + 2))
        if ($i == "activations") l = bytes($(i + 1), $(i + 2))
        if ($i == "set") p = bytes($(i + 1), $(i + 2))
      }
    }
    END { printf "%s %.0f %.0f %.0f\n", ms, a, l, p }' "$1.prof"
}
: >results.txt
for pair in $(seq "$pairs"); do
  for m in cifar10 fmnist; do
    data=$fmnist
    [ "$m" = cifar10 ] && data=$work/cifar
    run "$m-wide" "$data"
    run "$m-tight" "$data"
    w=$(fields "$m-wide") t=$(fields "$m-tight")
    echo "$m $pair $w $t" >>results.txt
    echo "$m $w $t" | awk '{
      printf "%-8s wide %8.1f ms/step, arena %9.0f B/sample, live %8.0f B/sample, peak %6.0f MB\n", $1, $2, $3, $4, $5 / 1e6
      printf "%-8s tight %7.1f ms/step, arena %9.0f B/sample, live %8.0f B/sample, peak %6.0f MB\n", "", $6, $7, $8, $9 / 1e6
      printf "%-8s wide/tight: step %.2fx, arena %.2fx, peak %.2fx\n", "", $2 / $6, $3 / $7, $5 / $9 }'
  done
done
echo "medians over $pairs pairs ($images images, $threads threads, backend $backend):"
for m in cifar10 fmnist; do
  for col in 3 4 5 6 7 8 9 10; do
    grep "^$m " results.txt | awk -v c="$col" '{ print $c }' | sort -g |
      awk '{ v[NR] = $1 } END { printf "%s ", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
  done | awk -v m="$m" '{
    printf "%-8s wide %.1f ms/step, arena %.0f B/sample, live %.0f B/sample, peak %.0f MB\n", m, $1, $2, $3, $4 / 1e6
    printf "%-8s tight %.1f ms/step, arena %.0f B/sample, live %.0f B/sample, peak %.0f MB\n", "", $5, $6, $7, $8 / 1e6
    printf "%-8s wide/tight: step %.2fx, arena %.2fx, peak %.2fx\n", "", $1 / $5, $2 / $6, $4 / $8 }'
done
