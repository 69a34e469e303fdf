"""Writes a digits CSV and PIL's bilinear resize of its images (values / 16,
as float 'F' images) for test_data_adapt --pil; exits 77 without PIL."""
import os
import sys

try:
    from PIL import Image
except ImportError:
    print("python3-pil is not installed: skipped")
    sys.exit(77)

out = sys.argv[1]
rows = [[(r * 7 + k * k + r * k) % 17 for k in range(64)] for r in range(4)]
with open(os.path.join(out, "digits.csv"), "w") as f:
    for r, row in enumerate(rows):
        f.write(",".join(str(v) for v in row) + ",%d\n" % (r % 10))
bilinear = getattr(Image, "Resampling", Image).BILINEAR
with open(os.path.join(out, "cases.txt"), "w") as f:
    for h, w in [(28, 28), (12, 20), (5, 3), (8, 4), (3, 11)]:
        f.write("%d %d\n" % (h, w))
        for row in rows:
            im = Image.new("F", (8, 8))
            im.putdata([v / 16.0 for v in row])
            px = im.resize((w, h), bilinear).getdata()
            f.write(" ".join("%.9g" % v for v in px) + "\n")
