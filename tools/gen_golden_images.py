"""Test images in many formats/modes and torchvision's preprocessing of each.

    python tools/gen_golden_images.py testdata/images

The pictures are crops of scikit-learn's two sample photos (china.jpg, flower.jpg), saved by Pillow
in varied formats, colour modes and aspect ratios (1×N and N×1 included). `golden.safetensors` holds,
per file, torchvision's
    Compose([Resize(n, InterpolationMode.BICUBIC), CenterCrop(n), ToTensor()])(Image.open(f).convert("RGB"))
before normalisation, stored exactly as uint8 (= value·255) [3, n, n], with n = 96 (and 224 for
`photo_224.jpg`); `sizes.json` gives n per file. See testdata/PROVENANCE.md.
"""
import json
import os
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from sklearn.datasets import load_sample_image
from torchvision import transforms


def write_png_rgb16(path, arr):
    import struct
    import zlib
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main(out):
    os.makedirs(out, exist_ok=True)
    china = Image.fromarray(load_sample_image("china.jpg"))  # 640x427
    flower = Image.fromarray(load_sample_image("flower.jpg"))
    rng = np.random.default_rng(0)
    files = {}

    def save(name, img, **kw):
        img.save(os.path.join(out, name), **kw)
        files[name] = 96

    save("photo_224.jpg", china.crop((100, 50, 420, 290)), quality=90)
    files["photo_224.jpg"] = 224
    save("wide_strip_1xN.png", flower.crop((0, 200, 300, 201)))          # 300 wide, 1 tall
    save("tall_strip_Nx1.png", flower.crop((200, 0, 201, 300)))          # 1 wide, 300 tall
    save("grey.png", china.crop((0, 0, 200, 150)).convert("L"))
    g16 = (np.asarray(china.crop((300, 100, 420, 190)).convert("L"), dtype=np.uint16) * 257)
    g16[:20] = 200  # some values below 256: Pillow reads 16-bit grey as I;16 and clips on convert
    save("grey16.png", Image.fromarray(g16))
    save("palette.png", flower.crop((50, 50, 250, 180)).quantize(64))
    rgba = flower.crop((100, 100, 260, 220)).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None, :]
    save("alpha.png", Image.fromarray(a, "RGBA"))
    save("grey_alpha.png", china.crop((10, 10, 110, 90)).convert("LA"))
    save("lossless.webp", china.crop((200, 200, 330, 300)), lossless=True)
    save("lossy.webp", flower.crop((0, 0, 150, 150)), quality=85)
    save("anim_first_frame.gif", china.crop((0, 100, 180, 220)).convert("P", palette=Image.ADAPTIVE))
    save("photo.bmp", flower.crop((300, 100, 420, 260)))
    save("photo.tiff", china.crop((400, 200, 520, 330)))
    rgb16 = np.asarray(flower.crop((120, 40, 240, 130)), dtype=np.uint16) * 257 + rng.integers(0, 256, (90, 120, 3), dtype=np.uint16)
    write_png_rgb16(os.path.join(out, "rgb16.png"), rgb16)  # Pillow cannot write 16-bit RGB
    files["rgb16.png"] = 96
    save("tiny_3x5.png", flower.crop((10, 10, 13, 15)))
    save("grey.jpg", flower.crop((0, 100, 160, 260)).convert("L"), quality=92)
    save("progressive.jpg", china.crop((50, 150, 350, 330)), quality=80, progressive=True)
    save("subsampled_444.jpg", flower.crop((200, 200, 340, 300)), quality=95, subsampling=0)

    golden = {}
    for name, n in files.items():
        t = transforms.Compose([transforms.Resize(n, interpolation=transforms.InterpolationMode.BICUBIC),
                                transforms.CenterCrop(n), transforms.ToTensor()])
        x = t(Image.open(os.path.join(out, name)).convert("RGB")).numpy()
        golden[name] = np.round(x * 255).astype(np.uint8)
    save_file(golden, os.path.join(out, "golden.safetensors"))
    with open(os.path.join(out, "sizes.json"), "w") as f:
        json.dump(files, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
