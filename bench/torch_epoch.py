#!/usr/bin/python3
"""One training epoch of an ilnas network in PyTorch, for comparison.

Builds the same layers as the ilnas model (from `model ir`), with dense
weights times fixed 0/1 masks at each layer's measured density (from
`model info CKPT`), which is what a PyTorch user writes for a sparse
network, and times one epoch of SGD on the first N Fashion-MNIST images.

usage: torch_epoch.py IR_DUMP INFO_TABLE N BATCH THREADS [DEVICE]
DEVICE is cpu (default) or cuda; on cuda the data set is moved to the
GPU first, one untimed batch warms it up, and the epoch is timed to the
last kernel's end. $FMNIST names the data set's folder
(default /usr/share/datasets/fashion-mnist).
prints: {"seconds": S, "images": N, "device": D}
"""
import gzip, json, os, re, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Masked(nn.Module):
    """A conv or linear layer with a 0/1 mask, then batch norm when ilnas's
    layer has it (conv -> BN -> ReLU, ilnas's order), then the ReLU."""

    def __init__(self, layer, density, relu, bn=False):
        super().__init__()
        self.layer, self.relu = layer, relu
        self.bn = nn.BatchNorm2d(layer.out_channels) if bn else None
        mask = (torch.rand_like(layer.weight) < density).float()
        self.register_buffer("mask", mask)

    def forward(self, x):
        w = self.layer.weight * self.mask
        if isinstance(self.layer, nn.Conv2d):
            y = F.conv2d(x, w, self.layer.bias, self.layer.stride, self.layer.padding)
        else:
            y = F.linear(x.flatten(1), w, self.layer.bias)
        if self.bn is not None:
            y = self.bn(y)
        return F.relu(y) if self.relu else y


def build(ir_lines, info_lines):
    density, alive = {}, {}
    for line in info_lines:
        f = line.split()
        if len(f) >= 7 and f[1] in ("conv", "linear"):
            density[f[0]] = float(f[5].rstrip("%")) / 100
            alive[f[0]] = not line.rstrip().endswith("dead")
    layers, in_layers = [], False
    for line in ir_lines:
        if line.startswith("layers:"):
            in_layers = True
            continue
        if in_layers and not line.startswith("  "):
            break
        if not in_layers:
            continue
        f = line.split()
        name, kind = f[0], f[1]
        if kind == "copy":
            sys.exit("torch_epoch.py: dense stages are not mirrored; use a chain template")
        cin = int(f[3].split("x")[0])
        cout = int(f[6].split("x")[0])
        if kind == "conv":
            if not alive.get(name, True):
                continue
            k, s, p = (int(re.search(r"\b%s(\d+)" % c, line).group(1)) for c in "ksp")
            layers.append(Masked(nn.Conv2d(cin, cout, k, s, p), density[name], " relu" in line,
                                 " bn" in line))
        elif kind == "linear":
            if not alive.get(name, True):
                continue
            layers.append(Masked(nn.Linear(cin, cout), density[name], " relu" in line))
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(int(re.search(r"\bk(\d+)", line).group(1))))
        elif kind == "gap":
            layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers)


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ir_path, info_path, n, batch, threads = sys.argv[1:6]
    device = torch.device(sys.argv[6] if len(sys.argv) > 6 else "cpu")
    n, batch = int(n), int(batch)
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    net = build(open(ir_path).read().splitlines(), open(info_path).read().splitlines())
    net = net.to(device)
    root = os.environ.get("FMNIST", "/usr/share/datasets/fashion-mnist") + "/"
    x = torch.from_numpy(idx(root + "train-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255)
    y = torch.from_numpy(idx(root + "train-labels-idx1-ubyte.gz")[:n].astype(np.int64))
    x = ((x - x.mean()) / x.std()).unsqueeze(1).to(device)
    y = y.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    order = torch.randperm(n, device=device)

    def step(i):
        xb = x[i]
        xb = torch.where(torch.rand(len(i), 1, 1, 1, device=device) < 0.5, xb.flip(3), xb)
        loss = F.cross_entropy(net(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()

    if device.type == "cuda":
        step(order[:batch])  # CUDA and cuDNN start-up, not part of the epoch
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for at in range(0, n, batch):
        step(order[at:at + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"seconds": time.perf_counter() - t0, "images": n, "device": str(device)}))


if __name__ == "__main__":
    main()
