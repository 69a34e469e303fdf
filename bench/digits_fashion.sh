# Sourced by bench/transfer.sh and bench/multitask.sh, which set `me`
# (for messages), `work` (the default scratch folder), `epochs`, `threads`
# and, for run, `run_opts`: finds the digits CSV (DIGITS) and ilnasc
# (ILNASC, else the build tree's, built), enters BENCH_DIR (default
# $work), and compiles bench/transfer.ilnas on Fashion-MNIST (./fashion)
# and on the digits resized to 28x28 (./digits). Then
#   run BIN DIR [OPTIONS...]   trains DIR once (a finished DIR is kept),
# with $seed, ${run_epochs:-$epochs}, $threads and $run_opts.
top=$(cd "$(dirname "$0")/.." && pwd)
digits=${DIGITS:-$top/../shared/data/digits.csv.gz}
[ -e "$digits" ] || { echo "$me: no digits CSV at $digits (set DIGITS)" >&2; exit 1; }
digits=$(cd "$(dirname "$digits")" && pwd)/$(basename "$digits")
work=${BENCH_DIR:-$work}
if [ -z "${ILNASC:-}" ]; then
  cmake --build "$top/build" --target ilnasc >/dev/null
  ILNASC=$top/build/bin/ilnasc
fi
mkdir -p "$work" && cd "$work"
cp "$top/bench/transfer.ilnas" fashion.ilnas
sed "s|^data .*|data digits-csv \"$digits\" resize 28x28 split 0.2;|" "$top/bench/transfer.ilnas" >digits.ilnas
"$ILNASC" fashion.ilnas -o fashion
"$ILNASC" digits.ilnas -o digits
run() { # BIN DIR [OPTIONS...]
  bin=$1 dir=$2; shift 2
  [ -e "$dir/final.ckpt" ] && return 0 # resumable
  echo "== $bin $dir $*" >&2
  nice ./"$bin" train --seed "$seed" --epochs "${run_epochs:-$epochs}" --threads "$threads" --quiet \
    $run_opts --run-dir "$dir" "$@" >"$dir.out"
}
