#!/bin/sh
# One training epoch of the sample template (fixed architecture at its
# budget, ~21% dense) on the GPU: ilnas --backend cuda against PyTorch with
# CUDA training the same layers with 0/1 masks; bench/epoch_vs_torch.sh
# with PyTorch on the GPU and `python3` (the one that has CUDA PyTorch).
# usage: [PAIRS=N] [MODEL_BIN=prebuilt] [FMNIST=dir] [PYTHON=python3]
#        bench/gpu/epoch_vs_torch.sh [IMAGES] [BACKEND]
exec env TORCH_DEVICE=cuda PYTHON="${PYTHON:-python3}" \
  sh "$(dirname "$0")/../epoch_vs_torch.sh" "${1:-10000}" "$(nproc)" "" "${2:-cuda}"
