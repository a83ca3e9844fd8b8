"""Regenerate the data files taken from open_clip (run from the repository root):

    python tools/gen_configs.py

configs/models/*.json      open_clip's model configs for the nine OpenAI architectures
configs/pretrained.json    (model, tag) -> Hugging Face Hub repository and QuickGELU flag, from
                           open_clip.pretrained (the `-quickgelu` variants merged into their base name)
configs/templates/*.txt    OpenAI's prompt templates from open_clip.zero_shot_metadata:
                           imagenet (80), imagenet7 (the 7-template subset), simple
"""
import json
import os

import open_clip
from open_clip.pretrained import get_pretrained_cfg
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

NAMES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"]


def main():
    os.makedirs("configs/models", exist_ok=True)
    os.makedirs("configs/templates", exist_ok=True)
    for name in NAMES:
        cfg = open_clip.get_model_config(name)
        if cfg["vision_cfg"].get("patch_size") is None:
            cfg["vision_cfg"].pop("patch_size", None)
        with open(f"configs/models/{name}.json", "w") as f:
            f.write(json.dumps(cfg, indent=2) + "\n")
    rows = {}
    for model, tag in open_clip.list_pretrained():
        base = model.replace("-quickgelu", "")
        cfg = get_pretrained_cfg(model, tag)
        if base not in NAMES or not cfg.get("hf_hub"):
            continue
        quick = bool(cfg.get("quick_gelu", False) or model.endswith("quickgelu"))
        row = rows.setdefault((base, tag), {"model": base, "tag": tag, "hf_hub": cfg["hf_hub"].rstrip("/"), "quick_gelu": quick})
        row["quick_gelu"] |= quick
    with open("configs/pretrained.json", "w") as f:
        json.dump(list(rows.values()), f, indent=1)
    with open("configs/templates/imagenet.txt", "w") as f:
        f.writelines(t("{}") + "\n" for t in OPENAI_IMAGENET_TEMPLATES)
    with open("configs/templates/imagenet7.txt", "w") as f:
        f.writelines(t("{}") + "\n" for t in SIMPLE_IMAGENET_TEMPLATES)
    with open("configs/templates/simple.txt", "w") as f:
        f.write("a photo of a {}.\n")


if __name__ == "__main__":
    main()
