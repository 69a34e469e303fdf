#!/bin/sh
# Packs a build's GPU tests and benchmarks, with the shared libraries they
# need beyond the C and C++ runtimes (LLVM above all), into one archive
# for a GPU machine that has the NVIDIA driver but not the build's
# toolchain. There: tar xJf FILE && sh ilnas-gpu/run.sh
# usage: tests/gpu/bundle.sh [BUILD_DIR] [OUT.tar.xz]   (run from anywhere)
# BUILD_DIR (default build) must be built, and `ctest -R export_` run in it
# for the CUDA export's check to travel. $FMNIST (default Debian's
# Fashion-MNIST) adds the test images, which stand in for the training set.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
out=${2:-$PWD/ilnas-gpu.tar.xz}
data=${FMNIST:-/usr/share/datasets/fashion-mnist}
for b in ilnasc test_gpu_ops test_jit_train gpu_layer_bench test_export; do
  [ -x "$build/bin/$b" ] || { echo "bundle: $build/bin/$b missing: build first" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
b=$tmp/ilnas-gpu
mkdir -p "$b/bin" "$b/lib" "$b/bench/gpu" "$b/data"
cp "$build/bin/test_gpu_ops" "$build/bin/test_jit_train" "$build/bin/gpu_layer_bench" "$build/bin/test_export" "$b/bin/"
"$build/bin/ilnasc" "$src/samples/fmnist.ilnas" -o "$b/bin/fmnist"
cp "$src/bench/gpu/epoch_vs_torch.sh" "$b/bench/gpu/"
cp "$src/bench/epoch_vs_torch.sh" "$b/bench/"
cp "$src/bench/torch_epoch.py" "$b/bench/"
cp "$src/tests/gpu/gpu_run.sh" "$b/"
# Every library the binaries load but the C and C++ runtimes, which any
# machine has in a version at least as new.
ldd "$b"/bin/* | awk '/=> \// { print $3 }' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so' |
  while read -r l; do cp -L "$l" "$b/lib/"; done
e=$build/tests/export/work
if [ -x "$e/cuda/runner" ]; then
  mkdir -p "$b/export"
  cp "$e/cuda/runner" "$e/cuda/img2000.f32" "$e/cuda/ref2000.f32" "$e/data/labels.u8" "$b/export/"
fi
if [ -e "$data/t10k-images-idx3-ubyte.gz" ]; then
  cp "$data"/t10k-images-idx3-ubyte.gz "$data"/t10k-labels-idx1-ubyte.gz "$b/data/"
  ln -s t10k-images-idx3-ubyte.gz "$b/data/train-images-idx3-ubyte.gz"
  ln -s t10k-labels-idx1-ubyte.gz "$b/data/train-labels-idx1-ubyte.gz"
fi
cat >"$b/run.sh" <<'RUN'
#!/bin/sh
# The GPU tests and benchmarks of this bundle (see gpu_run.sh).
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exp=
[ -d "$here/export" ] && exp=$here/export
exec sh "$here/gpu_run.sh" "$here/bin" "$here" "$exp" "$here/data"
RUN
XZ_OPT=${XZ_OPT:--T0} tar -C "$tmp" -cJf "$out" ilnas-gpu
echo "bundle: $out ($(du -h "$out" | cut -f1)); on the GPU machine: tar xJf $(basename "$out") && sh ilnas-gpu/run.sh"
