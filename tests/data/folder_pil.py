#!/usr/bin/python3
"""Writes images with PIL into DIR, each with PIL's own decode beside it
(NAME.C.raw: the bytes of Image.open(NAME).convert('L' or 'RGB')) and a
manifest.txt of 'NAME W H C' lines, for test_data_folder --pil DIR.

Run by folder_pil.sh with Debian's python3-pil; exits 77 without PIL."""
import os
import random
import sys

try:
    from PIL import Image, PngImagePlugin
except ImportError:
    print("SKIP: PIL is not installed for /usr/bin/python3 (apt-get install python3-pil)")
    sys.exit(77)

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def picture(w, h, seed):
    """A smooth gradient with some texture: what photos compress like."""
    px = bytearray()
    for y in range(h):
        for x in range(w):
            t = (x * 37 + y * 91 + seed * 53) % 64
            px += bytes(((x * 255) // max(w - 1, 1) + t) % 256 for _ in range(1)) + \
                bytes([((y * 255) // max(h - 1, 1)) ^ t, (x * y + seed * 17) % 256])
    return Image.frombytes("RGB", (w, h), bytes(px))


made = []


def save(im, name, **kw):
    im.save(os.path.join(out, name), **kw)
    made.append(name)


base = picture(61, 47, 1)
save(base, "q95_444.jpg", quality=95, subsampling=0)
save(base, "q75_420.jpg", quality=75, subsampling=2)
save(picture(33, 70, 2), "tall_422.jpg", quality=85, subsampling=1)
save(base.convert("L"), "gray.jpg", quality=90)
save(picture(40, 30, 3).convert("CMYK"), "cmyk.jpg", quality=92)
save(picture(50, 20, 4), "progressive.jpg", quality=80, progressive=True)
save(base, "rgb.png")
save(base.convert("L"), "gray.png")
rgba = picture(29, 31, 5).convert("RGBA")
rgba.putalpha(128)
save(rgba, "rgba.png")
save(picture(26, 19, 6).convert("P", palette=Image.ADAPTIVE, colors=16), "palette.png")
save(picture(17, 23, 7).convert("1"), "bilevel.png")
# transparency without an alpha channel (tRNS), which convert() drops
save(picture(21, 13, 8).convert("P", palette=Image.ADAPTIVE, colors=32), "palette_trns.png",
     transparency=3)
save(picture(15, 11, 9).convert("L"), "gray_trns.png", transparency=40)
save(picture(12, 9, 10), "rgb_trns.png", transparency=(10, 20, 30))
save(picture(14, 10, 11).convert("LA"), "gray_alpha.png")
# ancillary chunks that change no pixel of convert(): text, a gamma, a
# resolution, a profile
info = PngImagePlugin.PngInfo()
info.add_text("Comment", "x" * 3000)
info.add_text("Title", "ilnas", zip=True)
info.add(b"gAMA", (45455).to_bytes(4, "big"))
save(picture(16, 12, 12), "chunks.png", pnginfo=info, dpi=(72, 72), icc_profile=bytes(300))

# JPEGs with one to three bytes of their scan changed: whether PIL loads
# each (verdicts.txt, NAME 1 or 0), which the decoder must match
rng = random.Random(4)
verdicts = []
for name in [n for n in made if n.endswith(".jpg")]:
    data = open(os.path.join(out, name), "rb").read()
    sos = data.find(b"\xff\xda")
    for k in range(20):
        d = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            d[rng.randrange(sos + 16, len(d) - 2)] = rng.randrange(256)
        bad = "corrupt%02d_%s" % (k, name)
        with open(os.path.join(out, bad), "wb") as f:
            f.write(bytes(d))
        try:
            Image.open(os.path.join(out, bad)).load()
            verdicts.append((bad, 1))
        except Exception:
            verdicts.append((bad, 0))
with open(os.path.join(out, "verdicts.txt"), "w") as v:
    for bad, ok in verdicts:
        v.write("%s %d\n" % (bad, ok))

with open(os.path.join(out, "manifest.txt"), "w") as m:
    for name in made:
        im = Image.open(os.path.join(out, name))
        for mode, c in (("RGB", 3), ("L", 1)):
            ref = im.convert(mode)
            with open(os.path.join(out, "%s.%d.raw" % (name, c)), "wb") as f:
                f.write(ref.tobytes())
            m.write("%s %d %d %d\n" % (name, im.width, im.height, c))
print("%d images and %d corrupt JPEGs (%d of them loaded) written with PIL %s" %
      (len(made), len(verdicts), sum(ok for _, ok in verdicts), Image.__version__))
