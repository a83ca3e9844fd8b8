"""Test images in many formats/modes and the reference preprocessing of each.

    python tools/gen_golden_images.py testdata/images

The pictures are crops of scikit-learn's two sample photos (china.jpg, flower.jpg), saved by Pillow
in varied formats, colour modes and aspect ratios (1×N and N×1 included). `golden.safetensors` holds,
per original file (the 18 listed in `sizes.json`), torchvision's
    Compose([Resize(n, InterpolationMode.BICUBIC), CenterCrop(n), ToTensor()])(Image.open(f).convert("RGB"))
before normalisation, stored exactly as uint8 (= value·255) [3, n, n], with n = 96 (and 224 for
`photo_224.jpg`); `sizes.json` gives n per file.

`golden_modes.safetensors` holds, for every file (those, at n = 48, and the `mode_*` files made for
each PIL mode, at n = 64), the three references before normalisation, as uint8 [3, n, n]:
    openclip/<file>  open_clip.image_transform(n, is_train=False) without its Normalize
    openai/<file>    clip._transform(n) (OpenAI's package) without its Normalize
    hf/<file>        transformers' CLIPImageProcessorPil(size n, crop n, no rescale/normalize)
    squash/<file>    open_clip.image_transform(n, is_train=False, resize_mode="squash") without its
                     Normalize (the DFN5B and SigLIP tags: Resize((n, n)) in the image's mode, no crop)
The first two resize and crop in the image's own mode and convert to RGB last; Hugging Face converts
(compositing transparency onto white) first. `modes.json` gives n and Pillow's mode per file.
See testdata/PROVENANCE.md.
"""
import json
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from sklearn.datasets import load_sample_image
from torchvision import transforms


def write_png16(path, arr, color_type=2):
    """A 16-bit PNG (Pillow cannot write 16-bit colour): colour type 2 (RGB), 4 (grey+alpha), 6 (RGBA)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_png_rgb16(path, arr):
    write_png16(path, arr, 2)


def with_alpha(photo, mode, rng):
    """`photo` (150×100) as RGBA/LA with every kind of alpha: a fully transparent band whose hidden
    colours are the photo's (non-zero), an alpha gradient, random partial alpha, an opaque band."""
    arr = np.asarray(photo.convert(mode)).copy()
    h, w = arr.shape[:2]
    a = np.full((h, w), 255, np.uint8)
    a[:, :30] = 0                                                      # hidden colours
    a[:, 30:80] = np.linspace(0, 255, 50).astype(np.uint8)[None, :]    # gradient
    a[:50, 80:120] = rng.integers(0, 256, (50, 40), dtype=np.uint8)    # random partial alpha
    a[60:75, 90:140] = 0                                               # a transparent hole
    arr[..., -1] = a
    return Image.fromarray(arr, mode)


def cmyk_of(rgb):
    """A CMYK image with real black (K = 255 − max(R, G, B)), not Pillow's K = 0 conversion."""
    x = np.asarray(rgb, dtype=np.float64) / 255
    k = 1 - x.max(axis=2)
    d = np.where(k < 1, 1 - k, 1)[..., None]
    cmy = (1 - x - k[..., None]) / d
    arr = np.concatenate([cmy, k[..., None]], axis=2)
    return Image.fromarray(np.round(arr * 255).astype(np.uint8), "CMYK")


def mode_images(out, china, flower):
    """One file per PIL mode (and container), 150×100 unless noted, for n = 64. Returns name -> n."""
    rng = np.random.default_rng(1)
    files = {}

    def save(name, img, **kw):
        img.save(os.path.join(out, name), **kw)
        files[name] = 64

    # 155 wide: resized to 99×64, so the centre crop offset is 17.5 — torchvision rounds it to 18,
    # Hugging Face floors it to 17
    save("mode_rgb.png", china.crop((240, 120, 395, 220)))
    save("mode_l.png", flower.crop((300, 50, 400, 200)).convert("L"))          # 100×150, tall
    # 70×160 → 64×146: Pillow 13 runs the vertical pass first here (h − oh > 2·(w − ow))
    save("mode_tall.png", china.crop((500, 150, 570, 310)))
    save("mode_rgba.png", with_alpha(flower.crop((150, 150, 300, 250)), "RGBA", rng))
    save("mode_la.png", with_alpha(china.crop((60, 260, 210, 360)), "LA", rng))
    p = flower.crop((200, 20, 350, 120)).quantize(48)
    save("mode_p.png", p)
    alpha = [255] * 48
    alpha[3], alpha[7], alpha[11], alpha[20], alpha[30] = 0, 0, 128, 60, 200  # tRNS: some transparent, some partial
    save("mode_p_trns.png", china.crop((350, 250, 500, 350)).quantize(48), transparency=bytes(alpha))
    save("mode_p_transparent.gif", flower.crop((20, 300, 170, 400)).quantize(32), transparency=5)
    # unoptimised, the palette is the full grey ramp, which Pillow opens as L (resized bicubic)
    save("mode_l.gif", china.crop((420, 20, 570, 120)).convert("L"), optimize=False)
    save("mode_p.bmp", china.crop((100, 300, 250, 400)).quantize(40))
    save("mode_1.png", flower.crop((350, 300, 500, 400)).convert("1"))
    g = np.asarray(china.crop((0, 200, 150, 300)).convert("L"), dtype=np.uint16)
    save("mode_i16.png", Image.fromarray((g * 3 + rng.integers(0, 40, g.shape)).astype(np.uint16)))  # 0..~800
    rgba16 = np.asarray(with_alpha(china.crop((480, 300, 630, 400)), "RGBA", rng), dtype=np.uint16) * 257
    rgba16 += rng.integers(0, 256, rgba16.shape, dtype=np.uint16) * (rgba16 < 65535)
    write_png16(os.path.join(out, "mode_rgba16.png"), rgba16, 6)
    files["mode_rgba16.png"] = 64
    la16 = np.asarray(with_alpha(flower.crop((400, 100, 550, 200)), "LA", rng), dtype=np.uint16) * 257
    write_png16(os.path.join(out, "mode_la16.png"), la16, 4)
    files["mode_la16.png"] = 64
    save("mode_cmyk.jpg", cmyk_of(flower.crop((250, 250, 400, 350))), quality=90)
    return files


def exact_uint8(x, name):
    """A ToTensor output as uint8, asserting it is exactly k/255 in float32."""
    x = np.asarray(x)
    k = np.round(x.astype(np.float64) * 255)
    assert np.array_equal((k.astype(np.float32) / np.float32(255)), x), f"{name}: not multiples of 1/255"
    return k.astype(np.uint8)


def references(path, n):
    """open_clip's, OpenAI's and Hugging Face's preprocessing of `path` before normalisation."""
    import clip
    import open_clip
    from torchvision.transforms import Compose
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    name = os.path.basename(path)
    oc = open_clip.image_transform(n, is_train=False)
    oa = clip.clip._transform(n)
    sq = open_clip.image_transform(n, is_train=False, resize_mode="squash")
    assert type(sq.transforms[-1]).__name__ == "Normalize"
    assert type(oc.transforms[-1]).__name__ == "Normalize" and type(oa.transforms[-1]).__name__ == "Normalize"
    hf = CLIPImageProcessorPil(size={"shortest_edge": n}, crop_size={"height": n, "width": n},
                               do_rescale=False, do_normalize=False)
    out = {
        f"openclip/{name}": exact_uint8(Compose(oc.transforms[:-1])(Image.open(path)).numpy(), name),
        f"openai/{name}": exact_uint8(Compose(oa.transforms[:-1])(Image.open(path)).numpy(), name),
        f"squash/{name}": exact_uint8(Compose(sq.transforms[:-1])(Image.open(path)).numpy(), name),
        f"hf/{name}": hf(images=Image.open(path), return_tensors="np")["pixel_values"][0],
    }
    assert out[f"hf/{name}"].dtype == np.uint8 and out[f"hf/{name}"].shape == (3, n, n)
    return out


def hf_torchvision_gap(path, n):
    """Max difference between transformers' default (torchvision-backend) CLIPImageProcessor and
    its Pillow backend; printed for PROVENANCE.md, not stored."""
    from transformers import CLIPImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    kw = dict(size={"shortest_edge": n}, crop_size={"height": n, "width": n}, do_rescale=False, do_normalize=False)
    a = CLIPImageProcessor(**kw)(images=Image.open(path), return_tensors="np")["pixel_values"][0]
    b = CLIPImageProcessorPil(**kw)(images=Image.open(path), return_tensors="np")["pixel_values"][0]
    return int(np.abs(a.astype(int) - b.astype(int)).max())


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

    files = {name: 48 for name in files}  # the files above again, smaller
    files.update(mode_images(out, china, flower))
    modes, refs, gaps = {}, {}, {}
    for name, n in sorted(files.items()):
        path = os.path.join(out, name)
        modes[name] = {"n": n, "mode": Image.open(path).mode}
        refs.update(references(path, n))
        gaps[name] = hf_torchvision_gap(path, n)
    save_file(refs, os.path.join(out, "golden_modes.safetensors"))
    with open(os.path.join(out, "modes.json"), "w") as f:
        json.dump(modes, f, indent=1, sort_keys=True)
    for name in sorted(files):
        d = {k: int(np.abs(refs[f"{k}/{name}"].astype(int) - refs[f"openclip/{name}"].astype(int)).max())
             for k in ("openai", "hf")}
        print(f"{name:28} {modes[name]['mode']:5} openai-openclip {d['openai']:3}  hf-openclip {d['hf']:3}"
              f"  hf(torchvision)-hf(pil) {gaps[name]:3}")


if __name__ == "__main__":
    main(sys.argv[1])
