#!/bin/sh
# Exports for other tools: networks exported with `model export --onnx`,
# checked by the onnx package's checker (python3-onnx: full check, shape
# inference included) and run on onnxruntime (onnxruntime-node), and with
# `model export --pytorch`, run on PyTorch (python3-torch: torch_run.py,
# which also trains the module a step and round-trips its state_dict);
# their logits held to the runtime's as the C export's are (test_export
# compare).
# usage: interop.sh MODE ILNASC TEST_EXPORT SRC_DIR WORK_DIR ORT_DIR
#   synth    the synthetic models (synth*.ilnas: random weights and batch
#            norm statistics) and six models drawn from the language
#            (test_random_models --print), on random images; and the
#            refusals (--dense, an output over the checkpoint)
#   trained  the network the export_train fixture trained, on the
#            Fashion-MNIST test set: its accuracy is model eval's
# onnxruntime-node is taken from $ORT_NODE (its package folder), else
# ORT_DIR/node_modules/onnxruntime-node (.ci/run installs it there with
# npm), else node's own resolution. Without it, python3-onnx and
# python3-torch the test skips (77); what is installed of them runs.
set -eu
mode=$1 ilnasc=$2 tx=$3 src=$4 work=$5 ortdir=$6
data=/usr/share/datasets/fashion-mnist
py=${PYTHON:-/usr/bin/python3}
. "$src/common.sh"

ort=${ORT_NODE:-}
if [ -z "$ort" ] && [ -d "$ortdir/node_modules/onnxruntime-node" ]; then
  ort=$ortdir/node_modules/onnxruntime-node
fi
if [ -z "$ort" ] && command -v node >/dev/null &&
   node -e "require('onnxruntime-node')" >/dev/null 2>&1; then
  ort=onnxruntime-node
fi
if ! command -v node >/dev/null; then ort=; fi
checker=1 torch=1
"$py" -c "import onnx" >/dev/null 2>&1 || checker=0
"$py" -c "import torch" >/dev/null 2>&1 || torch=0
if [ -z "$ort" ] && [ $checker = 0 ] && [ $torch = 0 ]; then
  echo "SKIP: none of onnxruntime-node (npm install onnxruntime-node, or ORT_NODE=its folder),"
  echo "      python3-onnx and python3-torch (apt-get install python3-onnx python3-torch)"
  exit 77
fi
[ -n "$ort" ] || echo "note: onnxruntime-node not found: the ONNX models are not run"
[ $checker = 1 ] || echo "note: python3-onnx not found: the ONNX models are not checked"
[ $torch = 1 ] || echo "note: python3-torch not found: the PyTorch modules are not run"

# check NET.onnx: the checker, and the input's C H W and the classes
# (printed as "C H W K")
check() {
  "$py" - "$1" <<'EOF'
import sys
import onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
g = m.graph
assert [i.name for i in g.input] == ["input"], g.input
assert [o.name for o in g.output] == ["logits"], g.output
dims = [d.dim_value or d.dim_param for d in g.input[0].type.tensor_type.shape.dim]
assert dims[0] == "N" and len(dims) == 4, dims
out = [d.dim_value or d.dim_param for d in g.output[0].type.tensor_type.shape.dim]
assert out[0] == "N" and len(out) == 2, out
assert m.opset_import[0].version == 13 and m.ir_version == 7
print(*dims[1:], out[1])
EOF
}

# run NET.onnx IMAGES REF LABELS C H W K: onnxruntime's logits against REF
run() {
  [ -n "$ort" ] || return 0
  ORT_NODE=$ort node "$src/onnx_run.js" "$1" "$2" got.f32 "$5" "$6" "$7" 13
  "$tx" compare "$3" got.f32 "$4" "$8"
}

# torch NET.py IMAGES REF LABELS K: PyTorch's logits against REF
torch() {
  [ $torch = 1 ] || return 0
  "$py" "$src/torch_run.py" "$1" "$2" got_torch.f32 13
  "$tx" compare "$3" got_torch.f32 "$4" "$5"
}

# the input's C H W and the classes of MODEL.ilnas, from its source
shape_of() {
  tr '\n' ' ' < "$1" | sed -n 's/.*input \([0-9]*\)x\([0-9]*\)x\([0-9]*\); *classes \([0-9]*\);.*/\1 \2 \3 \4/p'
}

case $mode in
synth)
  rm -rf "${work:?}" && mkdir -p "$work" && cd "$work"
  trm=$(dirname "$tx")/test_random_models
  "$trm" --print 6 3 > drawn.txt
  [ "$(wc -l < drawn.txt)" -eq 6 ] || fail "test_random_models --print gave no 6 models"
  i=0
  for m in "$src"/synth.ilnas "$src"/synth_after.ilnas "$src"/synth_dense_linear.ilnas \
           "$src"/synth_no_outputs.ilnas drawn1 drawn2 drawn3 drawn4 drawn5 drawn6; do
    i=$((i + 1))
    d=m$i && mkdir -p $d/data && cd $d
    case $m in
      drawn*) sed -n "${m#drawn}p" ../drawn.txt > model.ilnas; m=$PWD/model.ilnas ;;
    esac
    "$ilnasc" "$m" -o model >/dev/null
    "$tx" synth "$m" data 3 300 >/dev/null
    ./model export --onnx data/synth.ckpt -o net.onnx
    if [ $checker = 1 ]; then
      set -- $(check net.onnx)
    else
      set -- $(shape_of "$m")
    fi
    [ $# -eq 4 ] || fail "$m: no input shape and classes"
    run net.onnx data/images.f32 data/ref.f32 data/labels.u8 "$@"
    ./model export --pytorch data/synth.ckpt -o net.py
    [ -s net.py ] && [ -s net.bin ] || fail "export --pytorch wrote no net.py / net.bin"
    torch net.py data/images.f32 data/ref.f32 data/labels.u8 "$4"
    echo "ok: $(basename "$m") ($(head -c 50 "$m" | tr '\n' ' ')...)"
    cd ..
  done
  # ilnasc writes the same files
  d=m1
  (cd $d && "$ilnasc" --emit-onnx data/synth.ckpt -o ../ilnasc.onnx &&
   ./model export --onnx data/synth.ckpt -o ../export.onnx >/dev/null &&
   "$ilnasc" --emit-pytorch data/synth.ckpt -o ../ilnasc.py)
  cmp ilnasc.onnx export.onnx || fail "ilnasc --emit-onnx and model export --onnx differ"
  cmp ilnasc.bin $d/net.bin || fail "ilnasc --emit-pytorch and model export --pytorch differ"
  sed 's/ilnasc\.bin/net.bin/' ilnasc.py | cmp - $d/net.py ||
    fail "ilnasc --emit-pytorch's module is not model export's (but for its weights' name)"
  # the refusals: C-only options, and an output over the checkpoint
  if "$d/model" export --onnx $d/data/synth.ckpt -o x.onnx --dense 2>err.txt; then
    fail "--dense was taken for --onnx"
  fi
  grep -q "for --c and --cuda" err.txt || fail "--dense's refusal: $(cat err.txt)"
  cp $d/data/synth.ckpt keep.ckpt
  for t in onnx pytorch; do
    if "$d/model" export --$t keep.ckpt -o keep.ckpt 2>err.txt; then
      fail "export --$t wrote over its checkpoint"
    fi
    cmp keep.ckpt $d/data/synth.ckpt || fail "export --$t changed the checkpoint"
  done
  # the weights' file beside the module would be the checkpoint itself
  cp keep.ckpt keep.bin
  if "$d/model" export --pytorch keep.ckpt -o keep.py 2>err.txt; then
    fail "export --pytorch wrote its weights over a checkpoint (keep.bin)"
  fi
  cmp keep.bin $d/data/synth.ckpt || fail "export --pytorch changed keep.bin"
  [ ! -e x.onnx ] || fail "a refused export left x.onnx"
  # a module whose weights file is cut short says so
  head -c 100 $d/net.bin > short.bin
  if [ $torch = 1 ] && "$py" -c "
import importlib.util, sys
s = importlib.util.spec_from_file_location('net', '$d/net.py'); m = importlib.util.module_from_spec(s)
s.loader.exec_module(m); m.Net(weights='short.bin')" 2>err.txt; then
    fail "the module took a weights file cut short"
  fi
  [ $torch = 0 ] || grep -q "short.bin: 100 bytes, expected" err.txt || fail "short weights: $(cat err.txt)"
  echo "ok: ONNX and PyTorch exports of $i networks"
  ;;

trained)
  if [ ! -e "$data/t10k-images-idx3-ubyte.gz" ]; then
    echo "SKIP: Fashion-MNIST not installed in $data (apt-get install dataset-fashion-mnist)"
    exit 77
  fi
  xp=$(dirname "$work")/work
  [ -e "$xp/run/final.ckpt" ] || fail "no trained checkpoint in $xp (the export_train fixture did not run)"
  rm -rf "${work:?}" && mkdir -p "$work" && cd "$work"
  "$xp/model" export --onnx "$xp/run/final.ckpt" -o net.onnx
  "$xp/model" export --pytorch "$xp/run/final.ckpt" -o net.py
  if [ $checker = 1 ]; then set -- $(check net.onnx); else set -- 1 28 28 10; fi
  run net.onnx "$xp/data/images.f32" "$xp/data/ref.f32" "$xp/data/labels.u8" "$@"
  torch net.py "$xp/data/images.f32" "$xp/data/ref.f32" "$xp/data/labels.u8" 10
  # a network just grown: its new weights are 0 and part of the
  # architecture, so the PyTorch module's masks hold them (more ones than
  # non-zero weights), and training the module on can move them
  if [ $torch = 1 ]; then
    "$xp/model" train --search ilnas --epochs 2 --stop-after 1 --train-limit 640 --test-limit 64 \
      --threads 2 --run-dir grown --quiet >/dev/null
    grep -q '"event": "expand"' grown/metrics.jsonl || fail "the run did not grow"
    "$xp/model" export --pytorch grown/last.ckpt -o grown.py >/dev/null
    "$py" - <<'EOF'
import torch, grown
m = grown.Net()
ones = sum(int(b.sum()) for n, b in m.named_buffers() if n.endswith("_mask"))
nonzero = sum(int((p != 0).sum()) for n, p in m.named_parameters() if n.endswith("_weight"))
print(f"grown: {ones} weights in the masks, {nonzero} of them non-zero")
if not ones > nonzero:
    raise SystemExit("FAIL: the masks leave out the weights just grown (0, yet active)")
EOF
  fi
  # the accuracy model eval printed, on the whole test set
  for got in got.f32 got_torch.f32; do
    [ -e $got ] || continue
    "$tx" compare "$xp/data/ref.f32" $got "$xp/data/labels.u8" 10 >cmp.out
    same_acc "$xp/eval.out" cmp.out "$got's"
  done
  ;;

*)
  fail "unknown mode $mode"
  ;;
esac
