#!/bin/sh
# The CUDA toolkit's stub libcuda exports every driver entry point but has
# no GPU behind it: loaded as libcuda.so.1, the backend must resolve every
# symbol it uses (else it would say "CUDA driver too old") and then refuse
# with "no GPU: ...". Skips (77) without the toolkit's stub.
# usage: stub_driver.sh TEST_GPU_OPS WORKDIR
set -eu
bin=$1 work=$2
stub=""
for s in /usr/local/cuda/lib64/stubs/libcuda.so /usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so; do
  [ -e "$s" ] && stub=$s && break
done
[ -n "$stub" ] || { echo "SKIP: no CUDA toolkit stub libcuda.so"; exit 77; }
# Where a real driver is installed, the loader's cache would still find
# it; this check is about the stub only.
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  echo "SKIP: a real libcuda.so.1 is installed"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
ln -s "$stub" "$work/libcuda.so.1"
out=$(LD_LIBRARY_PATH="$work" "$bin" --no-device)
echo "$out"
echo "$out" | grep -q "refused: no GPU: cuInit failed" || { echo "FAIL: expected a 'no GPU' refusal"; exit 1; }
