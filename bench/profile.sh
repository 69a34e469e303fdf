#!/bin/sh
# Where a training epoch's time goes, by function, the JIT's kernels named
# (ILNAS_PERF=1, README "--profile"): perf record over one epoch of MODEL
# (default samples/fmnist.ilnas) with a fixed architecture, perf inject
# --jit, then the shares of all threads' samples, summed by kind (each
# kernel kind over every layer, the packing, the row copies) and the
# heaviest functions after them. A benchmark of the step's parts, not
# against a peer: bench/epoch_vs_torch.sh measures the step whole.
# usage: bench/profile.sh [IMAGES=60000] [THREADS=2] [MODEL]
#   FMNIST=DIR     the data set (default /usr/share/datasets/fashion-mnist)
#   BENCH_DIR=DIR  scratch (default build/bench-profile)
# Needs Linux's perf (linux-perf) and a kernel that lets it sample.
set -eu
images=${1:-60000} threads=${2:-2}
top=$(cd "$(dirname "$0")/.." && pwd)
model=${3:-$top/samples/fmnist.ilnas}
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
work=${BENCH_DIR:-$top/build/bench-profile}
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)"; exit 1; }
rm -rf "$work" && mkdir -p "$work"
cmake --build "$top/build" --target ilnasc >/dev/null
"$top/build/bin/ilnasc" "$model" -o "$work/model"
cd "$work"
# The run's last epoch evaluates the whole test set (10,000 forward
# passes, --test-limit or not): with few training images it inflates the
# forward kernels' share; the default's 60,000 keep the training most of
# the run
ILNAS_PERF=1 JITDUMPDIR="$work/jit" perf record -k 1 -o perf.data ./model train --search fixed \
  --epochs 1 --train-limit "$images" --test-limit 100 --data "$data" --threads "$threads" \
  --quiet --run-dir run >/dev/null 2>perf.err || { cat perf.err; exit 1; }
perf inject --jit -i perf.data -o perf.jit.data 2>>perf.err
perf report -i perf.jit.data --no-children --sort symbol --stdio 2>/dev/null |
  awk '$1 ~ /%$/ && $2 == "[.]" || $2 == "[k]" { print }' >by_symbol.txt
echo "$(basename "$model" .ilnas): one epoch of $images images, $threads threads; shares of all samples"
awk '{ s = $1; sub(/%/, "", s); n = $3
       if (n ~ /^ilnas_k[0-9]+_conv.*_bwd_weight$/) k = "conv weight gradient kernels"
       else if (n ~ /^ilnas_k[0-9]+_conv.*_bwd_data$/) k = "conv data gradient kernels"
       else if (n ~ /^ilnas_k[0-9]+_conv.*_bwd_fused$/) k = "conv fused backward kernels (both gradients)"
       else if (n ~ /^ilnas_k[0-9]+_conv.*_fwd$/) k = "conv forward kernels"
       else if (n ~ /^ilnas_k[0-9]+_linear/) k = "linear kernels"
       else if (n ~ /^pad_rows/) k = "packing rows into padded planes (rt_pad_rows)"
       else if (n ~ /^rows_avx2/) k = "row copies: the ReLU into y, adding dx"
       else if ($2 == "[k]") k = "the kernel (page faults, scheduling)"
       else k = "the rest"
       t[k] += s }
     END { for (k in t) printf "%6.2f%%  %s\n", t[k], k }' by_symbol.txt | sort -rn
echo "heaviest functions:"
head -n 12 by_symbol.txt | awk '{ printf "%8s  %s\n", $1, $3 }'
