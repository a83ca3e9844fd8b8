"""End-to-end parity of `clip embed` with open_clip on FULL-SIZE models (randomly initialised: no real weights are
downloaded), image and text towers, for open_clip model names (SigLIP, SigLIP2, plain CLIP ViTs):

    python tools/check_full_size.py --clip target/release/clip --work /tmp/fullsize \
        ViT-B-16-SigLIP ViT-B-16-SigLIP2 ViT-SO400M-14-SigLIP-384 ViT-B-32-SigLIP2-256 ViT-L-14

Per model:
  * `open_clip.create_model(NAME, pretrained=None)` (torch seeded), then every parameter is perturbed with a seeded
    generator so that nothing rests at its initial constant (zero biases, unit LayerNorm weights, zero latent/pos
    terms): 1-D tensors (biases, norms, latent, class token) += 0.02·N(0,1), larger tensors += 0.1·std(p)·N(0,1)
    (0.02·N(0,1) where std(p) is 0);
    `logit_scale` / `logit_bias` keep the model's values. Activations stay O(1) and finite.
  * saved as an open_clip Hub folder WORK/NAME: `open_clip_config.json` = {"model_cfg": get_model_config(NAME),
    "preprocess_cfg": the tag-less default of the family (SigLIP: open_clip.pretrained `_slpcfg`, mean = std = 0.5,
    bicubic, squash; CLIP: `_pcfg`, OpenAI mean/std, bicubic, shortest)}, `open_clip_model.safetensors` (the
    float32 state dict, written tensor by tensor so that a ~2B-parameter model is not held twice in memory).
    Text towers with a Hugging Face tokenizer (`text_cfg.hf_tokenizer_name`) get the small test tokenizer of
    testdata/models/siglip_openclip_hub (T5-style Unigram, 500 pieces) or, for SigLIP2 names,
    siglip2_openclip_hub (Gemma-style BPE, 700 pieces): the real ones are on the Hub; all their ids are < the
    model's vocab, so they are valid inputs to the full-size embedding table. The texts are tokenised exactly as
    open_clip does for that folder (`get_tokenizer('local-dir:FOLDER')` = `HFTokenizer(FOLDER, context_length,
    clean='canonicalize')`); CLIP-BPE models use `get_tokenizer(NAME)`.
  * inputs: two PNGs cut from scikit-learn's sample photos at different aspect ratios (china.jpg 300×200,
    flower.jpg 150×260, so squash / shortest-side resizing and centre cropping all act), preprocessed by open_clip's
    eval transform `image_transform(size, is_train=False, mean, std, interpolation, resize_mode)`; three captions,
    the last longer than any context (truncated: `--truncate` on our side).
  * reference: `encode_image` / `encode_text` (normalize=True), float32, CPU. The Python model is freed before
    our binary runs (memory).
  * ours: `clip embed --model WORK/NAME --image a.png --image b.png --out img.npy` and `... --text T... --truncate
    --out txt.npy` (L2-normalised rows).
Prints per model: parameter count, max |Δ| of the image and text embeddings, cosine(ours, reference) per row, the
cosine between the two reference image rows (to show the inputs give distinct embeddings), the wall times (reference
forward; our two runs, model loading included) and our peak RSS; a summary table at the end; results.json in WORK.
The weights file is deleted after each model unless --keep-models (configs, tokens and .npy outputs stay).
Exits 1 if any max |Δ| exceeds --tol (default 1e-4).

What it proves: on the real architectures at their real sizes (widths, depths, heads, MLP ratios, patch 14 at
384 px where the patch conv drops the last 384 mod 14 = 6 pixel rows/columns, GELU-tanh trunks, the SigLIP2
text activation, gopt's 1152→1536 text projection, context 64/77 with truncation), the checkpoint loading,
config reading, preprocessing and forward pass of `clip embed` reproduce open_clip 3.3.0 / timm. Random weights
cannot show what trained weights would (e.g. feature magnitudes), but the computation is the same.

Provenance: open_clip_torch 3.3.0, timm, transformers and torch from tools/requirements.txt; scikit-learn's
sample images; the tokenizers of tools/gen_golden_siglip.py. Nothing is downloaded.
"""
import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import INCEPTION_MEAN, INCEPTION_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = [
    "A photo of a dog.",
    "two cats sleeping on a red sofa!",
    "a very long caption about a busy street market early in the morning, with many people walking between "
    "bicycles, fruit stands piled with oranges, apples and melons, bright umbrellas of every colour, a street "
    "musician playing an old accordion, children chasing pigeons across the square, a baker carrying fresh "
    "bread, and a small brown dog sleeping under a wooden table next to a stack of empty crates, while the "
    "first tram of the day rattles past the old stone church at the far end of the road",
]
IMAGES = [("a.png", "china.jpg", (150, 100, 450, 300)),   # (left, top, right, bottom): 300 wide, 200 high
          ("b.png", "flower.jpg", (250, 80, 400, 340))]   # 150 wide, 260 high
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
          torch.int32: "I32", torch.bool: "BOOL"}


def preprocess_cfg(name, model_cfg):
    """open_clip's tag-less default for the family (pretrained.py `_slpcfg` / `_pcfg`)."""
    if "siglip" in str(model_cfg["vision_cfg"].get("timm_model_name", "")).lower():
        return {"mean": list(INCEPTION_MEAN), "std": list(INCEPTION_STD), "interpolation": "bicubic",
                "resize_mode": "squash"}
    return {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD), "interpolation": "bicubic",
            "resize_mode": "shortest"}


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in ("logit_scale", "logit_bias"):
                continue
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.dim() <= 1 or p.shape[-1] == p.numel():
                p.add_(0.02 * noise)
            else:
                p.add_(0.1 * (float(p.std()) or 0.2) * noise)


def save_safetensors(state, path):
    """safetensors writer that streams tensor by tensor (safetensors.torch.save_file builds the whole file in
    memory first, i.e. a second copy of the model)."""
    header, off, items = {}, 0, []
    for k, v in state.items():
        v = v.detach().contiguous()
        n = v.numel() * v.element_size()
        header[k] = {"dtype": DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + n]}
        items.append(v)
        off += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for v in items:
            f.write(v.view(torch.uint8).numpy().data if v.dim() else v.reshape(1).view(torch.uint8).numpy().data)


def write_images(work):
    from sklearn.datasets import load_sample_image
    paths = []
    for fname, sample, box in IMAGES:
        p = work / fname
        Image.fromarray(load_sample_image(sample)).crop(box).save(p)
        paths.append(p)
    return paths


def run_ours(cmd):
    """Runs our binary; returns (wall seconds, peak RSS in GiB) of that one process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read().decode(errors='replace')}")
    return dt, ru.ru_maxrss / 2**20


def check(name, a, images):
    d = a.work / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    cfg = open_clip.get_model_config(name)
    assert cfg is not None, f"unknown open_clip model {name}"
    pcfg = preprocess_cfg(name, cfg)
    seed = a.seed + zlib.crc32(name.encode())
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    model.eval()
    perturb(model, seed + 1)
    nparams = sum(p.numel() for p in model.parameters())
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": pcfg}, indent=2))
    save_safetensors(model.state_dict(), d / "open_clip_model.safetensors")
    hf = cfg["text_cfg"].get("hf_tokenizer_name")
    if hf:
        src = ROOT / "testdata/models" / ("siglip2_openclip_hub" if "siglip2" in name.lower() else "siglip_openclip_hub")
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(src / f, d / f)
        tok = open_clip.get_tokenizer(f"local-dir:{d}")
        assert isinstance(tok, open_clip.tokenizer.HFTokenizer)
        full_len = [len(tok.tokenizer(tok.clean_fn(t)).input_ids) for t in CAPTIONS]
    else:
        tok = open_clip.get_tokenizer(name)
        full_len = [len(tok.encode(t)) + 2 for t in CAPTIONS]
    ctx = cfg["text_cfg"].get("context_length", 77)
    tokens = tok(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), ctx)
    assert int(tokens.max()) < cfg["text_cfg"]["vocab_size"]
    assert full_len[-1] > ctx, f"the long caption ({full_len[-1]} tokens) is not truncated at {ctx}"
    size = cfg["vision_cfg"]["image_size"]
    tf = open_clip.image_transform(size, is_train=False, mean=pcfg["mean"], std=pcfg["std"],
                                   interpolation=pcfg["interpolation"], resize_mode=pcfg["resize_mode"])
    x = torch.stack([tf(Image.open(p)) for p in images])
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        ref_img = model.encode_image(x, normalize=True).float().numpy()
        ref_txt = model.encode_text(tokens, normalize=True).float().numpy()
    t_ref = time.perf_counter() - t0
    del model
    gc.collect()
    assert np.isfinite(ref_img).all() and np.isfinite(ref_txt).all()
    np.save(d / "ref_img.npy", ref_img)
    np.save(d / "ref_txt.npy", ref_txt)
    np.save(d / "tokens.npy", tokens.numpy())

    t_img, rss_img = run_ours([str(a.clip), "embed", "--model", str(d), *sum((["--image", str(p)] for p in images), []),
                      "--out", str(d / "img.npy")])
    t_txt, rss_txt = run_ours([str(a.clip), "embed", "--model", str(d), *sum((["--text", t] for t in CAPTIONS), []),
                      "--truncate", "--out", str(d / "txt.npy")])
    ours_img, ours_txt = np.load(d / "img.npy"), np.load(d / "txt.npy")
    assert ours_img.shape == ref_img.shape, (ours_img.shape, ref_img.shape)
    assert ours_txt.shape == ref_txt.shape, (ours_txt.shape, ref_txt.shape)
    cos = lambda u, v: float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    r = {
        "model": name, "params": nparams, "embed_dim": int(ref_img.shape[1]), "image_size": size,
        "context_length": ctx, "caption_tokens": full_len,
        "max_abs_diff_image": float(np.abs(ours_img - ref_img).max()),
        "max_abs_diff_text": float(np.abs(ours_txt - ref_txt).max()),
        "cos_image": [cos(u, v) for u, v in zip(ours_img, ref_img)],
        "cos_text": [cos(u, v) for u, v in zip(ours_txt, ref_txt)],
        "ref_cos_image_rows": cos(ref_img[0], ref_img[1]),
        "ref_cos_text_rows": [cos(ref_txt[i], ref_txt[j]) for i, j in ((0, 1), (0, 2), (1, 2))],
        "seconds_build_save": t_build, "seconds_reference": t_ref, "seconds_ours_image": t_img,
        "seconds_ours_text": t_txt, "ours_peak_rss_gib": max(rss_img, rss_txt),
    }
    if not a.keep_models:
        (d / "open_clip_model.safetensors").unlink()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", required=True, type=Path, help="path to the clip binary")
    ap.add_argument("--work", required=True, type=Path, help="folder for the model folders and outputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="largest max |Δ| accepted")
    ap.add_argument("--keep-models", action="store_true", help="keep open_clip_model.safetensors afterwards")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count())
    images = write_images(a.work)
    results, failed = [], False
    for name in a.models:
        print(f"== {name}", flush=True)
        try:
            r = check(name, a, images)
        except Exception as e:  # report and go on with the next model
            print(f"   ERROR: {type(e).__name__}: {e}", flush=True)
            results.append({"model": name, "error": f"{type(e).__name__}: {e}"})
            failed = True
            continue
        ok = max(r["max_abs_diff_image"], r["max_abs_diff_text"]) <= a.tol
        failed |= not ok
        r["ok"] = ok
        results.append(r)
        print(f"   params {r['params']:,}  image {r['image_size']}px  dim {r['embed_dim']}  ctx {r['context_length']}"
              f"  caption tokens {r['caption_tokens']}")
        print(f"   max |Δ| image {r['max_abs_diff_image']:.2e}  text {r['max_abs_diff_text']:.2e}  "
              f"{'OK' if ok else 'FAIL'}")
        print("   cos(ours, ref) image " + " ".join(f"{c:.8f}" for c in r["cos_image"])
              + "  text " + " ".join(f"{c:.8f}" for c in r["cos_text"]))
        print(f"   reference: cos(img0, img1) {r['ref_cos_image_rows']:.4f}  cos(txt pairs) "
              + " ".join(f"{c:.4f}" for c in r["ref_cos_text_rows"]))
        print(f"   time: build+save {r['seconds_build_save']:.1f}s  open_clip forward {r['seconds_reference']:.1f}s  "
              f"ours image {r['seconds_ours_image']:.1f}s  text {r['seconds_ours_text']:.1f}s  "
              f"(ours peak RSS {r['ours_peak_rss_gib']:.2f} GiB)", flush=True)
    (a.work / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print("| model | params | max abs Δ image | max abs Δ text | min cos image | min cos text "
          "| open_clip fwd s | ours img+txt s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['model']} | error: {r['error'].splitlines()[0]} |||||||")
            continue
        print(f"| {r['model']} | {r['params']:,} | {r['max_abs_diff_image']:.2e} | {r['max_abs_diff_text']:.2e} "
              f"| {min(r['cos_image']):.8f} | {min(r['cos_text']):.8f} | {r['seconds_reference']:.1f} "
              f"| {r['seconds_ours_image']:.1f} + {r['seconds_ours_text']:.1f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
