#!/bin/sh
# Batch norm's passes in CPU time: bench/profile.sh's perf record over one
# epoch of bench/bn_template.ilnas and one of its twin without batch norm
# (bench/bn_template_nonorm.ilnas), back to back in PAIRS pairs (default
# 3, alternating which runs first); then the samples of the threads that
# run the step (0.25 ms of a thread each, perf's 4 kHz), summed by part:
# each pair's totals and batch norm's share of them, then each part's
# median over the pairs, with and without batch norm, and the median of
# the pairs' differences. "Batch norm's own" sums the parts that only
# batch norm has or that it makes dearer (the outputs copied with their
# moments, dz, the readers' sums, the rest of batch norm, the windows).
# A sample falls where a thread ran, so that a step's wait on a slower
# second thread shows in the waits' row, not spread over the step;
# bench/bn_cost.sh measures the steps' wall time. Each epoch ends with
# the evaluation of the 10,000 test images (in the totals; batch norm is
# folded there).
# usage: [PAIRS=N] bench/bn_profile.sh [IMAGES=60000] [THREADS=2]
#   FMNIST=DIR     the data set (default /usr/share/datasets/fashion-mnist)
#   BENCH_DIR=DIR  scratch (default build/bench-bn-profile)
# Needs Linux's perf (linux-perf) and a kernel that lets it sample.
set -eu
images=${1:-60000} threads=${2:-2} pairs=${PAIRS:-3}
top=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-$top/build/bench-bn-profile}
case $pairs in
'' | *[!0-9]* | 0) echo "bn_profile.sh: PAIRS must be a count of 1 or more"; exit 2 ;;
esac
rm -rf "$work" && mkdir -p "$work"
files=""
for p in $(seq "$pairs"); do
  order="bn_template bn_template_nonorm"
  [ $((p % 2)) -eq 0 ] && order="bn_template_nonorm bn_template"
  for m in $order; do
    BENCH_DIR="$work/$m-$p" "$top/bench/profile.sh" "$images" "$threads" \
      "$top/bench/$m.ilnas" >"$work/$m-$p.profile" || { cat "$work/$m-$p.profile"; exit 1; }
    # "pct samples pid:comm [.] symbol" to "pid:comm samples symbol [.]"
    perf report -i "$work/$m-$p/perf.jit.data" --no-children --sort pid,symbol --stdio -n \
      2>/dev/null | awk '$1 ~ /%$/ && ($4 == "[.]" || $4 == "[k]") { print $3, $2, $5, $4 }' \
      >"$work/$m-$p.samples"
    rm -rf "$work/$m-$p" # perf's data: hundreds of MB a run
  done
  files="$files $work/bn_template-$p.samples $work/bn_template_nonorm-$p.samples"
done
echo "one epoch of $images images, $threads threads, $pairs pairs: samples of the step's threads" \
  "(0.25 ms each)"
# shellcheck disable=SC2086
awk -v pairs="$pairs" '
  function part(s, kind) {
    if (kind == "[k]") return "the OS kernel (faults, scheduling, the VM)"
    if (s ~ /^ilnas_k[0-9]+_conv/) return "the conv kernels"
    if (s ~ /^ilnas_k[0-9]+_linear/) return "the linear kernels"
    if (s ~ /^(worker|rt_pool_run|__sched_yield)$/) return "waiting at joins"
    if (s ~ /^plane_stats/) return "* outputs copied with their moments"
    if (s ~ /^rows_avx2/ || s ~ /^rt_(relu|copy|set|add)_2d/) return "row copies"
    if (s ~ /^pad_rows/ || s ~ /^pack_x$/) return "packing the input"
    if (s ~ /^(pool16|extremes16|row_extremes|rt_relu_pool_rows)/) return "* pools and windows"
    if (s ~ /^(scatter16|pool_dx16|dx_rows|pack_dy$|rt_pool_code_rows|rt_bn_pool_dx_rows)/)
      return "* pool gradients and dz, as dy is packed"
    if (s ~ /^(grad_sums|x_sums|rt_bn_x_sums)/) return "* the readers sums of batch norm"
    if (s ~ /^(rt_bn_|bn_|fold_|autocorr|rt_gram)/) return "* the rest of batch norm"
    return "the rest"
  }
  function median(v, n,    i, j, t) { # sorts v[1..n]
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  FNR == 1 { f++; side = (f % 2 ? "bn" : "twin"); pr = int((f + 1) / 2) }
  {
    split($1, p, ":")
    if ($3 ~ /^ilnas_k[0-9]+_conv/) step[pr, side, p[1]] = 1
    got[pr, side, p[1], part($3, $4)] += $2
    parts[part($3, $4)] = 1
  }
  END {
    for (k in got) {
      split(k, q, SUBSEP)
      if (!((q[1], q[2], q[3]) in step)) continue
      t[q[1], q[2], q[4]] += got[k]
      all[q[1], q[2]] += got[k]
      if (q[4] ~ /^\*/) own[q[1], q[2]] += got[k]
    }
    for (i = 1; i <= pairs; i++) {
      sh[i] = 100 * (all[i, "bn"] - all[i, "twin"]) / all[i, "bn"]
      so[i] = 100 * (own[i, "bn"] - own[i, "twin"]) / all[i, "bn"]
      printf "pair %d: %d with batch norm, %d without: %.1f%%; batch norm'"'"'s own %+d, %.1f%%\n",
             i, all[i, "bn"], all[i, "twin"], sh[i], own[i, "bn"] - own[i, "twin"], so[i]
    }
    printf "%-44s %9s %9s %10s\n", "median over the pairs (* batch norm'"'"'s own)", "with bn",
           "twin", "difference"
    for (s in parts) {
      for (i = 1; i <= pairs; i++) { a[i] = t[i, "bn", s]; b[i] = t[i, "twin", s]
                                     d[i] = a[i] - b[i] }
      line[s] = sprintf("%-44s %9d %9d %+10d", s, median(a, pairs), median(b, pairs),
                        median(d, pairs))
    }
    for (s in line) print line[s] | "sort"
    close("sort")
    for (i = 1; i <= pairs; i++) { a[i] = all[i, "bn"]; b[i] = all[i, "twin"] }
    printf "%-44s %9d %9d\n", "all", median(a, pairs), median(b, pairs)
    printf "batch norm'"'"'s share of the samples: the pairs'"'"' median %.1f%%; of its own " \
           "parts, %.1f%%\n", median(sh, pairs), median(so, pairs)
  }' $files
