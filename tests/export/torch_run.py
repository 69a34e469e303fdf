"""torch_run.py: runs an exported PyTorch module the way a PyTorch user
would take it, and writes its logits for test_export compare.

    python3 torch_run.py NET.py IMAGES.f32 OUT.f32 [BATCH]

IMAGES.f32 holds raw images scaled to [0, 1], NCHW, as runner.c reads them;
the module's INPUT_SHAPE gives C, H and W. Also checks what a user relies
on: the weights are parameters and the masks buffers (state_dict round
trip), a training step leaves the weights outside the masks at zero, and
batches of one give the batch's logits.
"""
import importlib.util
import sys

import torch


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: torch_run.py NET.py IMAGES.f32 OUT.f32 [BATCH]")
    path, images, out = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 13
    spec = importlib.util.spec_from_file_location("net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    net = mod.Net().eval()
    c, h, w = mod.INPUT_SHAPE
    with open(images, "rb") as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    if x.numel() % (c * h * w):
        sys.exit(f"{images}: {x.numel()} floats is not a whole number of {c}x{h}x{w} images")
    x = x.view(-1, c, h, w)
    with torch.no_grad():
        y = torch.cat([net(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        one = torch.cat([net(x[i:i + 1]) for i in range(min(x.shape[0], 7))])
    if tuple(y.shape) != (x.shape[0], mod.CLASSES):
        sys.exit(f"logits of shape {tuple(y.shape)} for {x.shape[0]} images")
    if not torch.allclose(one, y[:one.shape[0]], rtol=1e-5, atol=1e-5):
        sys.exit("batches of one give other logits than the batch")
    with open(out, "wb") as f:
        f.write(y.contiguous().numpy().tobytes())

    # a state_dict round trip into a fresh module gives the same logits
    again = mod.Net(weights=None)
    for t in again.parameters():
        t.data.zero_()
    again.load_state_dict(net.state_dict())
    with torch.no_grad():
        if not torch.equal(again.eval()(x[:5]), net(x[:5])):
            sys.exit("a state_dict round trip changed the logits")
    # one SGD step: the weights outside their masks stay zero
    masks = {n[:-len("_mask")]: b for n, b in net.named_buffers() if n.endswith("_mask")}
    params = dict(net.named_parameters())
    for name in masks:
        if name + "_weight" not in params:
            sys.exit(f"mask {name}_mask has no weight {name}_weight")
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net(x[:8]).logsumexp(1).mean()
    loss.backward()
    opt.step()
    for name, m in masks.items():
        wt = params[name + "_weight"]
        if wt.detach()[m == 0].abs().max().item() if (m == 0).any() else 0.0:
            sys.exit(f"{name}_weight moved outside its mask")
    print(f"torch_run: {x.shape[0]} images through {path} on PyTorch {torch.__version__}; "
          f"{len(params)} parameters, {len(masks)} masks")


if __name__ == "__main__":
    main()
