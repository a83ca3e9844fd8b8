"""The inputs and stored reference records of `clip check`.

    python tools/gen_check_records.py assets     # crates/clip-embed/assets/check/: the built-in inputs
    python tools/gen_check_records.py testdata   # records for the test models in testdata/models
    python tools/gen_check_records.py record --name NAME:TAG --dir DIR [--weights FILE]
                                                 # a record for a real checkpoint (a maintainer with its weights)

Inputs (compiled into the binary): three pictures cut from scikit-learn's sample photos (china.jpg,
flower.jpg) — a wide RGB crop, a tall one, and an RGBA one with an alpha gradient (so every
preprocessing path that differs between references is exercised) — and `texts.txt`, five captions
(one too long for a 77-token context, one with non-ASCII text).

A record (`configs/checks.json`, one entry per weights file, keyed by the file's SHA-256) holds what
open_clip computes for those inputs (tools/clip_check_reference.py): the first 16 dimensions of each
L2-normalised embedding and the full image×text cosine matrix (a few KB for any model size), plus the
open_clip/torch versions. Texts are left out for a model whose vocabulary is smaller than its
tokenizer's (the tiny CLIP-BPE test models), exactly as `clip check` leaves them out.
`record` reads DIR's open_clip_config.json (and tokenizer files, for SigLIP) and its weights file
(open_clip_model.safetensors, open_clip_pytorch_model.bin, or --weights).
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from clip_check_reference import reference  # noqa: E402

ASSETS = "crates/clip-embed/assets/check"
RECORDS = "configs/checks.json"
PREFIX = 16
TEXTS = [
    "a photo of a dog",
    "a red flower in a garden",
    "a temple by the water, in China",
    "une photographie d'un chat noir à Montréal",
    "a very long description of a busy harbour at dawn " * 12,
]


def assets():
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image
    os.makedirs(ASSETS, exist_ok=True)
    china = Image.fromarray(load_sample_image("china.jpg"))
    flower = Image.fromarray(load_sample_image("flower.jpg"))
    china.crop((120, 60, 432, 252)).resize((156, 96), Image.BICUBIC).save(f"{ASSETS}/wide.png")
    flower.crop((200, 40, 360, 420)).resize((64, 152), Image.BICUBIC).save(f"{ASSETS}/tall.png")
    a = np.asarray(flower.crop((300, 150, 420, 270)).resize((96, 96), Image.BICUBIC).convert("RGBA")).copy()
    a[..., 3] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    a[:20, :20, 3] = 0
    Image.fromarray(a, "RGBA").save(f"{ASSETS}/alpha.png")
    with open(f"{ASSETS}/texts.txt", "w", encoding="utf-8") as f:
        f.writelines(t.strip() + "\n" for t in TEXTS)


def images():
    return [f"{ASSETS}/{n}" for n in ("wide.png", "tall.png", "alpha.png")]


def texts():
    with open(f"{ASSETS}/texts.txt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def with_texts(config):
    t = config["model_cfg"]["text_cfg"]
    return bool(t.get("hf_tokenizer_name")) or t.get("vocab_size", 49408) >= 49408


def make_record(name, config, weights, tokenizer_dir=None, build=None):
    use_texts = with_texts(config)
    ref = reference(config, weights, images(), texts() if use_texts else [], tokenizer_dir, build)
    img, txt = ref["image"], ref["text"] if use_texts else []
    sim = [[sum(a * b for a, b in zip(i, t)) for t in txt] for i in img]
    rnd = lambda rows: [[round(x, 6) for x in r] for r in rows]  # noqa: E731
    return {
        "name": name,
        "sha256": sha256(weights),
        "image": rnd([r[:PREFIX] for r in img]),
        "text": rnd([r[:PREFIX] for r in txt]),
        "similarity": rnd(sim),
        "made_with": ref["versions"],
    }


def save(records):
    records = sorted(records, key=lambda r: r["name"])
    with open(RECORDS, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")


def load():
    if not os.path.exists(RECORDS):
        return []
    with open(RECORDS) as f:
        return json.load(f)


def upsert(record):
    records = [r for r in load() if r["sha256"] != record["sha256"]]
    save(records + [record])
    print(f"{record['name']}: {record['sha256'][:16]}…, {len(record['image'])} images, {len(record['text'])} texts")


def folder_weights(d):
    for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if os.path.exists(os.path.join(d, f)):
            return os.path.join(d, f)
    raise SystemExit(f"{d}: no open_clip weights file")


def testdata():
    for case in ("vit_openclip_hub", "rn_openclip_st", "siglip_openclip_hub", "siglip2_openclip_hub"):
        d = f"testdata/models/{case}"
        with open(f"{d}/open_clip_config.json") as f:
            config = json.load(f)
        build = None
        timm_name = config["model_cfg"]["vision_cfg"].get("timm_model_name", "")
        if timm_name.startswith("test_"):
            # the tiny SigLIP trunks exist only inside the golden generator: build them as it does
            import open_clip
            import gen_golden_siglip as g

            def build(model_cfg, weights, d=d):
                trunk = g.TRUNK_OVERRIDES[model_cfg["vision_cfg"]["timm_model_name"]]
                with g.timm_overrides(**trunk):
                    return open_clip.create_model("local-dir:" + d)
        upsert(make_record(f"testdata/models/{case}", config, folder_weights(d), d, build))


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "assets":
        assets()
    elif what == "testdata":
        testdata()
    elif what == "record":
        import argparse
        p = argparse.ArgumentParser()
        p.add_argument("--name", required=True)
        p.add_argument("--dir", required=True)
        p.add_argument("--weights")
        a = p.parse_args(sys.argv[2:])
        with open(os.path.join(a.dir, "open_clip_config.json")) as f:
            config = json.load(f)
        upsert(make_record(a.name, config, a.weights or folder_weights(a.dir), a.dir))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
