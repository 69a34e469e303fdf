#!/bin/sh
# Runs and resumes that tell the truth, and output that parses:
#
#  - resuming a finished run (killed between last.ckpt and final.ckpt)
#    evaluates, writes final.ckpt and prints the true final line; --epochs
#    below the checkpoint's is refused;
#  - a resumed run does not repeat metrics lines;
#  - temporary files of killed checkpoint writes are removed (dead PIDs only);
#  - --resume with another --seed or --search is refused, naming which;
#  - a metrics.jsonl that cannot be written fails the run;
#  - a schedule that leaves no expansion is warned about;
#  - divergence stops at the first non-finite step, no inf/nan written;
#  - strings in JSON lines are escaped.
# usage: truth.sh ILNASC MODEL WORKDIR
set -eu
ilnasc=$1 model=$2 work=$3
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
json() { python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin]'; }
epochs_of() { sed -n 's/^{"epoch": \([0-9]*\),.*/\1/p' "$1" | tr '\n' ' '; }
"$ilnasc" "$model" -o grow
opts="--train-limit 640 --test-limit 200 --epochs 4 --threads 2 --seed 4 --quiet"

# a finished run killed before final.ckpt: resuming it finishes it truly
./grow train $opts --run-dir a >a.out 2>a.err
grep -q warning a.err && fail "a schedule that grows was warned about: $(cat a.err)"
cp a/final.ckpt a.final && cp a/metrics.jsonl a.metrics && rm a/final.ckpt
./grow train $opts --run-dir a --resume a/last.ckpt >a2.out
cmp a.final a/final.ckpt || fail "resuming a finished run wrote another final.ckpt"
acc() { sed -n 's/.*"test_acc": \([0-9.]*\).*/\1/p' "$1"; }
[ "$(acc a.out)" = "$(acc a2.out)" ] || fail "resumed final line $(cat a2.out), run's $(cat a.out)"
grep -q '"epochs": 4' a2.out || fail "resumed final line: $(cat a2.out)"
cmp a.metrics a/metrics.jsonl || fail "resuming a finished run changed metrics.jsonl"
if ./grow train $opts --epochs 2 --run-dir a --resume a/last.ckpt >x.out 2>x.err; then
  fail "--epochs 2 on a 4-epoch checkpoint succeeded: $(cat x.out)"
fi
grep -q "4 epochs done" x.err || fail "--epochs below the checkpoint's: $(cat x.err)"

# killed after epoch 3's metrics lines, before its last.ckpt: no line twice
./grow train $opts --run-dir c --stop-after 2 >/dev/null
cp c/last.ckpt c.e2
./grow train $opts --run-dir c --resume c/last.ckpt --stop-after 3 >/dev/null
printf '{"epoch": 4, "train_lo' >>c/metrics.jsonl  # a line cut by the kill
./grow train $opts --run-dir c --resume c.e2 >/dev/null
[ "$(epochs_of c/metrics.jsonl)" = "1 2 3 4 " ] ||
  fail "resumed metrics epochs: $(epochs_of c/metrics.jsonl)"
[ "$(grep -c '"event": "expand"' c/metrics.jsonl)" = "$(grep -c '"event": "expand"' a.metrics)" ] ||
  fail "resumed run repeats or loses expansion lines"
json <c/metrics.jsonl || fail "resumed metrics.jsonl does not parse"
cmp a.final c/final.ckpt || fail "the resumed run differs"

# stale temporary files: a dead writer's goes, a live process's stays
sh -c 'exit 0' & dead=$!
wait $dead || true
touch "c/last.ckpt.tmp.$dead" "c/final.ckpt.tmp.$dead" "c/last.ckpt.tmp.$$"
./grow train $opts --run-dir c --resume c.e2 >/dev/null
[ ! -e "c/last.ckpt.tmp.$dead" ] && [ ! -e "c/final.ckpt.tmp.$dead" ] ||
  fail "stale temporary files left: $(ls c)"
[ -e "c/last.ckpt.tmp.$$" ] || fail "a live process's temporary file was removed"

# the checkpoint's seed and search, or a refusal that says which
if ./grow train $opts --run-dir c --resume c.e2 --seed 5 >/dev/null 2>x.err; then
  fail "--resume with another --seed succeeded"
fi
grep -q "seed" x.err || fail "--seed refusal: $(cat x.err)"
if ./grow train $opts --run-dir c --resume c.e2 --search random >/dev/null 2>x.err; then
  fail "--resume with another --search succeeded"
fi
grep -q "search" x.err || fail "--search refusal: $(cat x.err)"
./grow train $opts --run-dir c --resume c.e2 --seed 4 --search ilnas >/dev/null ||
  fail "--resume with the checkpoint's own --seed and --search was refused"

# a metrics.jsonl on a full disk
mkdir full && ln -s /dev/full full/metrics.jsonl
if ./grow train $opts --run-dir full >/dev/null 2>x.err; then
  fail "a run whose metrics cannot be written exits 0"
fi
grep -q "metrics.jsonl" x.err || fail "metrics write failure: $(cat x.err)"

# a schedule that cannot grow: 'freeze last 2' of 2 epochs
./grow train $opts --epochs 2 --stop-after 1 --run-dir n >/dev/null 2>x.err
grep -q "warning: .*no expansion" x.err || fail "no warning for a schedule that never grows"

# divergence: stopped at the step, nothing non-finite written
sed 's/lr 0\.02/lr 1e6/' "$model" >div.ilnas
"$ilnasc" div.ilnas -o div
if ./div train $opts --epochs 1 --run-dir dv >x.out 2>x.err; then
  fail "a diverging run exits 0"
fi
grep -q "diverged at step [0-9]* of epoch 1" x.err || fail "divergence: $(cat x.err)"
if grep -qi 'inf\|nan' dv/metrics.jsonl x.out; then fail "inf or nan written"; fi

# strings in JSON lines are escaped
rd='r"q\z'
./grow train $opts --epochs 2 --stop-after 1 --run-dir "$rd" >j.out
./grow train $opts --epochs 2 --run-dir "$rd" --resume "$rd/last.ckpt" >>j.out
json <j.out || fail "final lines do not parse: $(cat j.out)"
json <"$rd/metrics.jsonl" || fail "metrics.jsonl does not parse"
echo "ok: resumes, metrics and JSON tell the truth"
