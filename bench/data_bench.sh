#!/bin/sh
# Decoded images/s of the image folder loader against torchvision's
# ImageFolder + DataLoader (PIL), both with random-resized-crop to 224,
# flip and normalisation, batches of 32, on 1 and 2 worker threads
# (DataLoader: num_workers), over the same generated folder of
# ImageNet-sized JPEGs (500x375, quality 90). Each side runs back to back
# per thread count, best of 3 passes; prints the ratio.
#   bench/data_bench.sh [BUILD_DIR] [IMAGES]
set -eu
cd "$(dirname "$0")/.."
build=${1:-build} n=${2:-600}
work=${TMPDIR:-/tmp}/ilnas_data_bench
cmake --build "$build" -j2 >/dev/null
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I. bench/data_bench.c -o "$build/data_bench" \
  "$build/lib/ilnas/libilnas_rt.a" $(sed -n 's/.*ILNAS_LINK_FLAGS="\\"\([^\\]*\)\\"".*/\1/p' \
  "$build/ilnasc/CMakeFiles/ilnas_driver.dir/flags.make")
if [ ! -f "$work/n$n" ]; then
  rm -rf "$work" && mkdir -p "$work"
  /usr/bin/python3 - "$work" "$n" <<'EOF'
import os, sys, random
from PIL import Image, ImageFilter
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for split, count in (("train", n), ("val", 10)):
    for i in range(count):
        cls = "class%02d" % (i % 10)
        os.makedirs(os.path.join(root, split, cls), exist_ok=True)
        w, h = random.choice([(500, 375), (375, 500), (500, 333), (640, 480)])
        im = Image.effect_noise((w // 4, h // 4), 60).convert("RGB").resize((w, h))
        im = Image.merge("RGB", [c.point(lambda v, k=k: (v * (k + 2) + i * 7) % 256)
                                 for k, c in enumerate(im.split())]).filter(ImageFilter.SMOOTH)
        im.save(os.path.join(root, split, cls, "img%05d.JPEG" % i), quality=90)
EOF
  touch "$work/n$n"
fi
torch_side() {
  /usr/bin/python3 - "$work" "$1" <<'EOF'
import sys, time
try:
    import torch, torchvision
    from torchvision import datasets, transforms
except ImportError:
    print("torchvision: not installed (apt-get install python3-torchvision)")
    sys.exit(0)
root, workers = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                         transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = datasets.ImageFolder(root + "/train", tf)
best = 0
for p in range(3):
    dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers)
    t0, n, s = time.time(), 0, 0.0
    for x, y in dl:
        n += x.shape[0]; s += float(x[0, 0, 0, 0])
    best = max(best, n / (time.time() - t0))
print("torchvision %d workers: %.1f images/s (best of 3 passes)" % (workers, best))
EOF
}
for t in 1 2; do
  ours=0
  for p in 1 2 3; do
    line=$("$build/data_bench" "$work" "$t" 1 224)
    echo "$line"
    r=$(echo "$line" | sed -n 's/.*, \([0-9.]*\) images\/s.*/\1/p')
    ours=$(awk -v a="$ours" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
  done
  echo "ilnas $t threads: $ours images/s (best of 3 passes)"
  line=$(torch_side "$t")
  echo "$line"
  theirs=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p')
  [ -n "$theirs" ] && awk -v a="$ours" -v b="$theirs" -v t="$t" \
    'BEGIN { printf "ratio at %d threads: ilnas / torchvision = %.2fx\n", t, a / b }'
done
