#!/bin/sh
# Inference speed of an exported network: the emitted C (cc -O3
# -march=native) against the ilnas runtime's forward and PyTorch running
# the same dense-masked network, at batch 1 and 128, on the same 2 threads;
# and the network's ONNX and PyTorch exports on onnxruntime and PyTorch.
# Every number is measured in this run. Not part of CI.
#
# usage: bench/infer_bench.sh [BUILD_DIR [MODEL.ilnas]]
#   BUILD_DIR   a configured and built tree (default: build)
#   MODEL       default samples/fmnist.ilnas
# env: SECS (seconds per measurement, default 3), WORK (scratch directory),
#      PYTHON (default /usr/bin/python3, Debian's python3-torch 1.13)
#
# The network: MODEL trained with --search fixed on 2,000 Fashion-MNIST
# images for 1 epoch (speed does not depend on the accuracy reached).
# - exported C: `model export --c`, tests/export/runner.c splitting each
#   batch into one slice per thread (as the runtime splits its batches)
# - runtime: the inference forward `model eval` runs per batch, on its
#   default backend (cpu: the JIT kernels), --threads 2, input
#   normalisation included, as in the exported code
# - PyTorch: the IR at its bounds with the masked weights as dense tensors
#   (zeros where α is 0), dead layers passed through, batch norm in eval
#   mode; torch.set_num_threads(2), inference_mode (and, as a reference,
#   1 thread: on a loaded machine PyTorch's OpenMP threads spin and its
#   2-thread numbers collapse)
# - ONNX Runtime: `model export --onnx` (live channels only, dense ops) on
#   onnxruntime-node (ORT_NODE, else BUILD_DIR/ort where .ci/run installs
#   it; the column is left out without it), intraOpNumThreads 2
# - exported PyTorch: `model export --pytorch` (live channels only, masks
#   applied), torch.set_num_threads(2), inference_mode
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
model=${2:-$root/samples/fmnist.ilnas}
secs=${SECS:-3}
py=${PYTHON:-/usr/bin/python3}
cc=${CC:-cc}
data=/usr/share/datasets/fashion-mnist
work=${WORK:-$(mktemp -d /tmp/infer_bench.XXXXXX)}
mkdir -p "$work/data" && cd "$work"
tx=$build/bin/test_export
[ -x "$tx" ] || { echo "error: $tx missing: build the tests first"; exit 1; }

"$build/bin/ilnasc" "$model" -o model
./model train --search fixed --train-limit 2000 --test-limit 200 --epochs 1 \
  --threads 2 --run-dir run --quiet
./model info run/final.ckpt | tail -n 1
"$tx" dump run/final.ckpt "$data" data 2000 >/dev/null
"$tx" describe run/final.ckpt data
./model export --c run/final.ckpt -o net.c
./model export --onnx run/final.ckpt -o net.onnx
./model export --pytorch run/final.ckpt -o net_torch.py
ort=${ORT_NODE:-$build/ort/node_modules/onnxruntime-node}
[ -d "$ort" ] || ort=
$cc -O3 -march=native -pthread -DRUNNER_BENCH -I. "$root/tests/export/runner.c" net.c -lm \
  -o bench_c

# images/second of forward over the images, batch by batch, for secs
# seconds after three warm-up batches (both PyTorch peers)
cat >rate.py <<'PY'
import time

def rate(forward, img, batch, secs):
    for _ in range(3):
        forward(img[:batch])
    done, at, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < secs:
        if at + batch > img.shape[0]:
            at = 0
        forward(img[at:at + batch])
        at += batch
        done += batch
    return done / (time.perf_counter() - t0)
PY
cat >torch_net.py <<'PY'
import json, sys
import numpy as np
import torch
import torch.nn.functional as F
from rate import rate

d, batch, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
net = json.load(open(d + "/net.json"))
P = torch.from_numpy(np.fromfile(d + "/params.f32", dtype=np.float32))
S = torch.from_numpy(np.fromfile(d + "/stats.f32", dtype=np.float32))
shapes = net["tensors"]
mean = torch.tensor(net["mean"]).view(1, -1, 1, 1)
std = torch.tensor(net["std"]).view(1, -1, 1, 1)
for L in net["layers"]:
    if L["kind"] in ("conv", "linear") and L["alive"]:
        co, ci, k = L["cout"], L["cin"], L["k"]
        w = P[L["w_off"]:L["w_off"] + co * ci * k * k]
        L["W"] = w.view(co, ci, k, k) if L["kind"] == "conv" else w.view(co, ci)
        L["B"] = P[L["b_off"]:L["b_off"] + co]
        if L["bn"]:
            L["G"], L["Be"] = P[L["g_off"]:L["g_off"] + co], P[L["g_off"] + co:L["g_off"] + 2 * co]
            L["M"], L["V"] = S[L["s_off"]:L["s_off"] + co], S[L["s_off"] + co:L["s_off"] + 2 * co]

def forward(x):
    n = x.shape[0]
    T = [torch.empty(n, *s) for s in shapes]
    T[net["input_t"]][:] = (x - mean) / std
    for L in net["layers"]:
        kind, ic, oc = L["kind"], L["in_ch"], L["out_ch"]
        out = T[L["out_t"]]
        if kind == "copy":
            out[:, oc:oc + L["cin"]] = T[L["in_t"]][:, ic:ic + L["cin"]]
        elif kind in ("conv", "linear") and not L["alive"]:
            pc = L["prev_ch"]
            out[:, oc:oc + L["cout"]] = T[L["prev_t"]][:, pc:pc + L["cout"]]
        elif kind == "conv":
            z = F.conv2d(T[L["in_t"]][:, ic:ic + L["cin"]], L["W"], L["B"], L["stride"], L["pad"])
            if L["bn"]:
                z = F.batch_norm(z, L["M"], L["V"], L["G"], L["Be"], False, 0.0, 1e-5)
            out[:, oc:oc + L["cout"]] = F.relu(z) if L["relu"] else z
        elif kind == "linear":
            c, h, w = shapes[L["in_t"]]
            z = F.linear(T[L["in_t"]][:, ic:ic + L["cin"] // (h * w)].reshape(n, -1), L["W"], L["B"])
            out[:, oc:oc + L["cout"]] = (F.relu(z) if L["relu"] else z).view(n, -1, 1, 1)
        elif kind == "maxpool":
            out[:, oc:oc + L["cin"]] = F.max_pool2d(T[L["in_t"]][:, ic:ic + L["cin"]], L["k"])
        elif kind == "gap":
            out[:, oc:oc + L["cin"]] = T[L["in_t"]][:, ic:ic + L["cin"]].mean((2, 3), keepdim=True)
    return T[net["logits_t"]].reshape(n, -1)

img = torch.from_numpy(np.fromfile(d + "/images.f32", dtype=np.float32)).view(-1, *shapes[net["input_t"]])
ref = torch.from_numpy(np.fromfile(d + "/ref.f32", dtype=np.float32)).view(img.shape[0], -1)
with torch.inference_mode():
    diff = (forward(img[:500]) - ref[:500]).abs().max().item()
    if diff > 1e-3:
        sys.exit("torch network disagrees with the runtime: max |diff| %g" % diff)
    print("%.1f" % rate(forward, img, batch, secs))
PY

# the exports for other tools, timed the same way: images/second
cat >export_torch.py <<'PY'
import importlib.util, sys
import torch
from rate import rate
spec = importlib.util.spec_from_file_location("net", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
batch, secs = int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
net = mod.Net().eval()
with open(sys.argv[2], "rb") as f:
    img = torch.frombuffer(bytearray(f.read()), dtype=torch.float32).view(-1, *mod.INPUT_SHAPE)
with torch.inference_mode():
    print("%.1f" % rate(net, img, batch, secs))
PY
cat >export_ort.js <<'JS'
const fs = require('fs');
const [model, images, c, h, w, batch, secs, threads] = process.argv.slice(2);
const ort = require(process.env.ORT);
(async () => {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: Number(threads) });
  const buf = fs.readFileSync(images), per = c * h * w, b = Number(batch);
  const img = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4), n = img.length / per;
  const run = (at) => s.run({ input: new ort.Tensor('float32', img.subarray(at * per, (at + b) * per), [b, +c, +h, +w]) });
  for (let i = 0; i < 3; i++) await run(0);
  let done = 0, at = 0;
  const t0 = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - t0) / 1e9 < Number(secs)) {
    if (at + b > n) at = 0;
    await run(at);
    at += b, done += b;
  }
  console.log((done / (Number(process.hrtime.bigint() - t0) / 1e9)).toFixed(1));
})().catch((e) => { console.error(e.message); process.exit(1); });
JS
shape=$(sed -n 's/^INPUT_SHAPE = (\([0-9]*\), \([0-9]*\), \([0-9]*\))$/\1 \2 \3/p' net_torch.py)

echo
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %11s %11s %11s %13s %10s %10s %12s %12s %9s\n' batch "exported C" runtime PyTorch \
  "PyTorch 1thr" "C/runtime" "C/PyTorch" "ONNX (ORT)" "PyTorch exp" "C/ORT"
for b in 1 128; do
  c=$(./bench_c data/images.f32 /dev/null "$b" "$secs" 2)
  r=$("$tx" bench run/final.ckpt data/images.f32 "$b" "$secs" 2)
  t=$("$py" torch_net.py data "$b" "$secs" 2)
  t1=$("$py" torch_net.py data "$b" "$secs" 1)
  o=0
  [ -z "$ort" ] || o=$(ORT=$ort node export_ort.js net.onnx data/images.f32 $shape "$b" "$secs" 2)
  e=$("$py" export_torch.py net_torch.py data/images.f32 "$b" "$secs" 2)
  awk -v b="$b" -v c="$c" -v r="$r" -v t="$t" -v t1="$t1" -v o="$o" -v e="$e" 'BEGIN {
    printf "%-6s %11.0f %11.0f %11.0f %13.0f %9.2fx %9.2fx %12s %12.0f %9s\n", b, c, r, t, t1,
      c / r, c / t, (o > 0 ? sprintf("%.0f", o) : "-"), e, (o > 0 ? sprintf("%.2fx", c / o) : "-") }'
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "(images/second; 2 threads unless noted; $(nproc) cores; $(uname -m);" \
     "$($cc --version | head -n 1); torch $("$py" -c 'import torch; print(torch.__version__)');" \
     "onnxruntime ${ort:+$(node -e "console.log(require('$ort/package.json').version)")})"
