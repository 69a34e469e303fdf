# Sourced by the e2e scripts: skip (exit 77) without Fashion-MNIST, else
# start from an empty work directory (needs $work set); and what the
# scripts share: fail, field (a number from the final JSON line) and
# refused (a command that must fail naming FRAGMENT, writing no run
# directory).
data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not installed in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work"

fail() { echo "FAIL: $*"; exit 1; }
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
refused() { # NAME FRAGMENT COMMAND...
  name=$1 frag=$2; shift 2
  if "$@" --run-dir "bad_$name" >/dev/null 2>err.txt; then fail "$name: accepted"; fi
  grep -qF -- "$frag" err.txt || { cat err.txt; fail "$name: no '$frag' in the message"; }
  [ ! -e "bad_$name" ] || fail "$name: wrote bad_$name"
  echo "$name: $(cat err.txt)"
}
