"""Regenerate the data files taken from open_clip (run from the repository root):

    python tools/gen_configs.py

configs/models/*.json      open_clip's model configs for the nine OpenAI architectures and the plain ViTs
                           that need nothing else (ViT-B-32-256, ViT-B-16-plus-240, ViT-H-14, ViT-H-14-378,
                           ViT-g-14, ViT-bigG-14)
configs/pretrained.json    one row per (model, tag) of open_clip.pretrained for those models: Hugging Face
                           Hub repository (and file, when the entry names one), QuickGELU flag, image
                           preprocessing (mean, std, interpolation, resize_mode) and, where open_clip's
                           download URL carries one, the SHA-256 (prefix) it checks the file against. The
                           `-quickgelu` names are merged into their base name: open_clip lists under
                           `NAME-quickgelu` exactly the tags of NAME with quick_gelu (asserted here).
configs/templates/*.txt    OpenAI's prompt templates from open_clip.zero_shot_metadata:
                           imagenet (80), imagenet7 (the 7-template subset), simple
"""
import json
import os

import open_clip
from open_clip.pretrained import get_pretrained_cfg
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

NAMES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336",
         "ViT-B-32-256", "ViT-B-16-plus-240", "ViT-H-14", "ViT-H-14-378", "ViT-g-14", "ViT-bigG-14"]
# the fields of open_clip's vision/text configs that our ClipConfig reads; any other is a model we would build
# wrongly, so a preset using one is an error here rather than a silent mis-load later
VISION_KEYS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


def sha256_of(url):
    """The SHA-256 (or its prefix) open_clip's download_pretrained_from_url checks, as it derives it."""
    filename = os.path.basename(url)
    if "openaipublic" in url:
        return url.split("/")[-2]
    if "mlfoundations" in url:
        return os.path.splitext(filename)[0].split("-")[-1]
    return ""


def main():
    os.makedirs("configs/models", exist_ok=True)
    os.makedirs("configs/templates", exist_ok=True)
    for name in NAMES:
        cfg = open_clip.get_model_config(name)
        assert set(cfg) <= {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}, (name, set(cfg))
        assert set(cfg["vision_cfg"]) <= VISION_KEYS, (name, set(cfg["vision_cfg"]) - VISION_KEYS)
        assert set(cfg["text_cfg"]) <= TEXT_KEYS, (name, set(cfg["text_cfg"]) - TEXT_KEYS)
        if cfg["vision_cfg"].get("patch_size") is None:
            cfg["vision_cfg"].pop("patch_size", None)
        with open(f"configs/models/{name}.json", "w") as f:
            f.write(json.dumps(cfg, indent=2) + "\n")
    rows = {}
    listed = open_clip.list_pretrained()
    for model, tag in listed:
        base = model.replace("-quickgelu", "")
        if base not in NAMES:
            continue
        cfg = get_pretrained_cfg(model, tag)
        assert cfg.get("hf_hub"), (model, tag)
        # open_clip's download_pretrained: 'org/repo/' is the repository (default weight files),
        # 'org/repo/file.bin' names the file
        repo, file = os.path.split(cfg["hf_hub"])
        quick = bool(cfg.get("quick_gelu", False))
        row = {"model": base, "tag": tag, "hf_hub": repo}
        if file:
            row["hf_file"] = file
        row.update({
            "quick_gelu": quick,
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "interpolation": cfg["interpolation"],
            "resize_mode": cfg["resize_mode"],
        })
        if sha256_of(cfg.get("url", "")):
            row["sha256"] = sha256_of(cfg["url"])
        if model.endswith("-quickgelu"):
            # open_clip copies NAME's quick_gelu tags under NAME-quickgelu: the same row
            assert quick and rows[(base, tag)] == row, (model, tag)
            continue
        rows[(base, tag)] = row
    for (base, tag), row in rows.items():
        assert row["quick_gelu"] == ((base + "-quickgelu", tag) in listed), (base, tag)
    supported = sum(1 for m, _ in listed if m.replace("-quickgelu", "") in NAMES)
    print(f"{len(rows)} rows; {supported} of open_clip's {len(listed)} list_pretrained() entries "
          f"(with the -quickgelu names) are these models")
    with open("configs/pretrained.json", "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(r) for r in rows.values()) + "\n]\n")
    with open("configs/templates/imagenet.txt", "w") as f:
        f.writelines(t("{}") + "\n" for t in OPENAI_IMAGENET_TEMPLATES)
    with open("configs/templates/imagenet7.txt", "w") as f:
        f.writelines(t("{}") + "\n" for t in SIMPLE_IMAGENET_TEMPLATES)
    with open("configs/templates/simple.txt", "w") as f:
        f.write("a photo of a {}.\n")


if __name__ == "__main__":
    main()
