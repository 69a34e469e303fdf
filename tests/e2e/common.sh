# Sourced by the e2e scripts: skip (exit 77) without Fashion-MNIST, else
# start from an empty work directory. Needs $work set.
data=/usr/share/datasets/fashion-mnist
if [ ! -e "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: Fashion-MNIST not installed in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work"
