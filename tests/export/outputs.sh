#!/bin/sh
# Outputs never destroy inputs: ilnasc -o, --emit-c and
# `model export` refuse an output that is the same file as an input, an
# existing checkpoint, or an existing model source; nothing is touched.
# Needs no data: the checkpoint is test_export's synthetic one.
# usage: outputs.sh ILNASC TEST_EXPORT MODEL.ilnas WORK_DIR
set -eu
ilnasc=$1 tx=$2 model=$3 work=$4
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work/data" && cd "$work"
cp "$model" m.ilnas && cp m.ilnas m.orig
"$ilnasc" m.ilnas -o model
"$tx" synth m.ilnas data 3 50 >/dev/null
ck=data/synth.ckpt
cp $ck ck.orig && cp $ck other.ckpt && cp m.ilnas other.ilnas
# refused: run it, expect failure and the word in the message, inputs intact
refuse() {
  word=$1; shift
  if "$@" >out.txt 2>err.txt; then fail "'$*' succeeded"; fi
  grep -q "$word" err.txt || fail "'$*': $(cat err.txt)"
  cmp m.ilnas m.orig && cmp $ck ck.orig && cmp other.ckpt ck.orig && cmp other.ilnas m.orig ||
    fail "'$*' destroyed an input"
}
refuse "is the input" "$ilnasc" m.ilnas -o m.ilnas
refuse "is the input" "$ilnasc" m.ilnas --emit-llvm m.ilnas
refuse "is the input" "$ilnasc" m.ilnas -c m.ilnas
ln m.ilnas hard && refuse "is the input" "$ilnasc" m.ilnas -o hard && rm hard
refuse "model source" "$ilnasc" m.ilnas -o other.ilnas
refuse "checkpoint" "$ilnasc" m.ilnas -o other.ckpt
refuse "is the input" ./model export --c $ck -o $ck
refuse "is the input" ./model export --cuda $ck -o $ck
refuse "is the input" "$ilnasc" --emit-c $ck -o $ck
refuse "checkpoint" ./model export --c $ck -o other.ckpt
refuse "checkpoint" "$ilnasc" --emit-c $ck -o other.ckpt
refuse "model source" ./model export --c $ck -o other.ilnas
ln -s "$PWD/$ck" link.c && refuse "is the input" ./model export --c $ck -o link.c && rm link.c
# the header and weights beside the source are outputs too
ln $ck net.h && refuse "is the input" ./model export --c $ck -o net.c && rm net.h
cp $ck net.weights && refuse "checkpoint" ./model export --c $ck -o net.c && rm net.weights
refuse "checkpoint" ./model plot data -o other.ckpt
# and what may be overwritten still is: earlier outputs of the same kinds
./model export --c $ck -o net.c >/dev/null
./model export --c $ck -o net.c >/dev/null
"$ilnasc" --emit-c $ck -o net.c
"$ilnasc" m.ilnas -o model
echo "ok: outputs never destroy inputs"
