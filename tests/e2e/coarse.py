"""Writes a second task's data for the multi-task tests: Fashion-MNIST's
test images as 8x8 digits-CSV rows (3x3 blocks of the 24x24 centre, 0..16
like the UCI digits) with four coarse labels: tops, trousers and dresses,
footwear, bags. usage: coarse.py FASHION_DIR OUT.csv ROWS"""
import gzip
import sys

src, out, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
with gzip.open(src + "/t10k-images-idx3-ubyte.gz") as f:
    images = f.read()[16:]
with gzip.open(src + "/t10k-labels-idx1-ubyte.gz") as f:
    labels = f.read()[8:]
coarse = {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 1, 5: 2, 7: 2, 9: 2, 8: 3}
with open(out, "w") as f:
    for i in range(rows):
        img = images[i * 784:(i + 1) * 784]
        px = []
        for by in range(8):
            for bx in range(8):
                s = sum(img[(2 + 3 * by + y) * 28 + 2 + 3 * bx + x]
                        for y in range(3) for x in range(3))
                px.append(round(s / 9 / 255 * 16))
        f.write(",".join(map(str, px + [coarse[labels[i]]])) + "\n")
