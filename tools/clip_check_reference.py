"""The reference side of `clip check`: open_clip's embeddings of the check inputs for one checkpoint.

    python tools/clip_check_reference.py --config CFG.json --weights FILE --images A.png B.png ...
        --texts TEXTS.txt [--tokenizer-dir DIR] --out OUT.json

`clip check --model M --reference PYTHON` writes this script (it is compiled into the binary), the
model's config and the check inputs into a temporary folder and runs it with PYTHON, which must have
`open_clip_torch` installed; `tools/gen_check_records.py` uses the same code to make the stored
records. CFG.json is `{"model_cfg": …, "preprocess_cfg": …}` (open_clip's schema, as `clip convert`
writes it). The model is built by open_clip from that config and the weights file is loaded by
open_clip itself (`create_model(…, pretrained=FILE)`: state dicts, safetensors, training checkpoints
and OpenAI's TorchScript archives), images are prepared by `open_clip.image_transform` with the
config's preprocessing, texts tokenized by open_clip's tokenizer for the model (CLIP's BPE, or
`HFTokenizer` over the tokenizer files in DIR). OUT.json holds the L2-normalised embeddings and the
versions used.
"""
import argparse
import json
import os
import sys
import tempfile


def is_torchscript(path):
    """A TorchScript archive: a zip holding the module's code."""
    import zipfile
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def reference(config, weights, images, texts, tokenizer_dir=None, build=None):
    """L2-normalised open_clip embeddings of `images` (paths) and `texts` (strings)."""
    import open_clip
    import torch
    from PIL import Image

    model_cfg = config["model_cfg"]
    pre = dict(config.get("preprocess_cfg") or {})
    timm_name = model_cfg["vision_cfg"].get("timm_model_name")
    if build is None and timm_name:
        import timm
        if not timm.is_model(timm_name):
            print(f"timm has no model '{timm_name}', so open_clip cannot build this model", file=sys.stderr)
            raise SystemExit(3)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip_rs_check.json")
        with open(path, "w") as f:
            json.dump(model_cfg, f)
        open_clip.add_model_config(path)
        if build is not None:  # the maintainer's tool: a model open_clip cannot build by name alone
            model = build(model_cfg, weights)
        elif is_torchscript(weights):
            # OpenAI's release archives run as OpenAI's `clip.load(jit=True)` runs them: the archive's
            # own code (executed by torch in this Python environment, as `clip.load` does); an
            # archive without encode_image/encode_text (a bare trace) is rebuilt by open_clip
            model = torch.jit.load(weights, map_location="cpu")
            if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
                model = open_clip.load_openai_model(weights, device="cpu")
        else:
            model = open_clip.create_model("clip_rs_check", pretrained=weights)
    model.eval()
    size = model_cfg["vision_cfg"]["image_size"]
    kw = {k: pre[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pre}
    transform = open_clip.image_transform(size, is_train=False, **kw)
    text_cfg = model_cfg["text_cfg"]
    ctx = text_cfg.get("context_length", 77)
    if not texts:
        ids = None
    elif text_cfg.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer
        if not tokenizer_dir:
            raise SystemExit("this model uses a Hugging Face tokenizer: pass --tokenizer-dir")
        tok = HFTokenizer(tokenizer_dir, context_length=ctx, **text_cfg.get("tokenizer_kwargs", {}))
        ids = tok(texts)
    else:
        ids = open_clip.tokenize(texts, context_length=ctx)
    norm = torch.nn.functional.normalize
    with torch.no_grad():
        pixels = torch.stack([transform(Image.open(p)) for p in images])
        fi = norm(model.encode_image(pixels).float(), dim=-1)
        ft = norm(model.encode_text(ids).float(), dim=-1) if ids is not None else torch.zeros(0)
    return {
        "image": fi.float().tolist(),
        "text": ft.float().tolist(),
        "logit_scale": float(model.logit_scale.detach().exp()),
        "logit_bias": float(model.logit_bias.detach()) if getattr(model, "logit_bias", None) is not None else None,
        "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--tokenizer-dir")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.config) as f:
        config = json.load(f)
    with open(a.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    out = reference(config, a.weights, a.images, texts, a.tokenizer_dir)
    with open(a.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
