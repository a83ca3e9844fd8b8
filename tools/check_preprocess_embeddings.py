"""End-to-end check of image preprocessing on a full-size model: image embeddings of files in every
PIL mode from `clip embed` against open_clip's `create_model_and_transforms` on the same weights.

A randomly initialised open_clip ViT-B-32 (or RN50) is saved as `open_clip_model.safetensors` +
`open_clip_config.json`; each image is embedded by open_clip (its eval transform, L2-normalised
`encode_image`) and by the given `clip` binary; the script prints the largest absolute difference per
file. Run it with the reference virtualenv:

    python tools/check_preprocess_embeddings.py --clip target/release/clip [--arch ViT-B-32] \
        testdata/images/mode_*.png testdata/images/mode_*.gif testdata/images/mode_cmyk.jpg
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True, help="path to the clip binary")
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(a.arch, pretrained=None)
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "open_clip_model.safetensors")
        cfg = open_clip.get_model_config(a.arch)
        (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        out = d / "ours.npy"
        subprocess.run([a.clip, "embed", "--model", str(d), *sum((["--image", f] for f in a.images), []),
                        "--out", str(out)], check=True)
        ours = np.load(out)
    worst = 0.0
    with torch.no_grad():
        for f, row in zip(a.images, ours):
            x = preprocess(Image.open(f)).unsqueeze(0)
            ref = model.encode_image(x)
            ref = (ref / ref.norm(dim=-1, keepdim=True))[0].numpy()
            diff = float(np.abs(ref - row).max())
            worst = max(worst, diff)
            print(f"{Path(f).name:<28} {Image.open(f).mode:<5} max |Δ| {diff:.2e}")
    print(f"{a.arch}: largest |Δ| over {len(a.images)} files: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
