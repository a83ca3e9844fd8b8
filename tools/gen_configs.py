"""Regenerate the data files taken from open_clip (run from the repository root):

    python tools/gen_configs.py

configs/models/*.json      open_clip's model configs for the nine OpenAI architectures and the plain ViTs
                           that need nothing else (ViT-B-32-256, ViT-B-16-plus-240, ViT-H-14, ViT-H-14-378,
                           ViT-g-14, ViT-bigG-14)
configs/models/*.json      also the SigLIP and SigLIP2 configs (timm ViT trunk with attention pooling, text
                           tower without causal mask read at the last position, SentencePiece tokenizers)
crates/clip-model/src/config/presets.rs   the preset table (`include_str!` of each configs/models file)
configs/timm.json          the timm ViT trunks those configs name, measured on timm's own modules: input
                           and patch size, width, depth, heads, MLP width, activation, LayerNorm eps (with
                           asserts that the trunk is the SigLIP form clip-model builds)
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
TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
# SigLIP / SigLIP2: what their configs use; each is read by clip-model
SIGLIP_TOP_KEYS = TOP_KEYS | {"init_logit_bias", "custom_text"}
SIGLIP_VISION_KEYS = {"image_size", "timm_model_name", "timm_model_pretrained", "timm_pool", "timm_proj"}
SIGLIP_TEXT_KEYS = TEXT_KEYS | {"hf_tokenizer_name", "tokenizer_kwargs", "no_causal_mask", "proj_bias", "pool_type",
                                "norm_kwargs", "act_kwargs", "proj_type"}


def siglip_names():
    """open_clip's SigLIP-family model names: a timm SigLIP ViT with attention pooling and open_clip's
    own text tower (the NLLB text towers are Hugging Face models: not these)."""
    out = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        if "siglip" in str(v.get("timm_model_name", "")) and "hf_model_name" not in t:
            assert set(cfg) <= SIGLIP_TOP_KEYS, (name, set(cfg) - SIGLIP_TOP_KEYS)
            assert set(v) <= SIGLIP_VISION_KEYS, (name, set(v) - SIGLIP_VISION_KEYS)
            assert set(t) <= SIGLIP_TEXT_KEYS, (name, set(t) - SIGLIP_TEXT_KEYS)
            assert v["timm_pool"] == "map" and v["timm_proj"] == "none", name
            assert t.get("act_kwargs", {"approximate": "tanh"}) == {"approximate": "tanh"}, name
            out.append(name)
    return out


def timm_spec(name):
    """Sizes of timm's `name` trunk as open_clip builds it (num_classes=0, global_pool='map'), read off
    the modules (on the meta device: nothing is allocated), with asserts that it is the form
    clip-model's TimmVit implements."""
    import timm
    import torch
    from torch import nn
    with torch.device("meta"):
        m = timm.create_model(name, pretrained=False, num_classes=0, global_pool="map")
    b = m.blocks[0]
    heads = b.attn.num_heads
    act = b.mlp.act
    from timm.layers.activations import GELUTanh
    assert type(act) in (nn.GELU, GELUTanh), (name, act)
    tanh = type(act) is GELUTanh or act.approximate == "tanh"
    assert m.cls_token is None and m.reg_token is None and not m.no_embed_class, name
    assert isinstance(m.norm_pre, nn.Identity) and isinstance(m.fc_norm, nn.Identity), name
    assert not getattr(m, "dynamic_img_size", False), name
    assert m.patch_embed.proj.bias is not None and b.attn.qkv.bias is not None, name
    assert isinstance(b.ls1, nn.Identity) and isinstance(b.attn.q_norm, nn.Identity), name
    assert isinstance(getattr(b.attn, "norm", nn.Identity()), nn.Identity), name
    assert type(b.mlp).__name__ == "Mlp" and isinstance(b.mlp.norm, nn.Identity), name
    assert len(m.blocks) == len(list(m.blocks.children()))
    p = m.attn_pool
    assert p is not None and p.latent_len == 1 and p.num_heads == heads and p.pool == "token", name
    assert isinstance(p.q_norm, nn.Identity) and isinstance(p.k_norm, nn.Identity), name
    assert p.mlp.fc1.out_features == b.mlp.fc1.out_features and type(p.mlp.act) is type(act), name
    assert p.norm.eps == m.norm.eps == b.norm1.eps, name
    grid = m.patch_embed.grid_size
    assert tuple(m.pos_embed.shape) == (1, grid[0] * grid[1], m.embed_dim), name
    return {
        "image_size": m.patch_embed.img_size[0],
        "patch_size": m.patch_embed.patch_size[0],
        "width": m.embed_dim,
        "layers": len(m.blocks),
        "heads": heads,
        "mlp_width": b.mlp.fc1.out_features,
        "act": "gelu_tanh" if tanh else "gelu",
        "eps": m.norm.eps,
    }


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
    names = NAMES + siglip_names()
    timm_specs = {}
    for name in siglip_names():
        cfg = open_clip.get_model_config(name)
        timm_name = cfg["vision_cfg"]["timm_model_name"]
        if timm_name not in timm_specs:
            timm_specs[timm_name] = timm_spec(timm_name)
        assert timm_specs[timm_name]["image_size"] == cfg["vision_cfg"]["image_size"], name
        with open(f"configs/models/{name}.json", "w") as f:
            f.write(json.dumps(cfg, indent=2) + "\n")
    with open("configs/timm.json", "w") as f:
        f.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(timm_specs.items()))
                + "\n}\n")
    with open("crates/clip-model/src/config/presets.rs", "w") as f:
        f.write("// Generated by tools/gen_configs.py: do not edit.\n\n"
                "/// Presets shipped as data in `configs/models/` (open_clip's names and numbers).\n"
                "pub const PRESETS: &[(&str, &str)] = &[\n")
        for name in names:
            f.write(f'    ("{name}", include_str!("../../../../configs/models/{name}.json")),\n')
        f.write("];\n")
    rows = {}
    listed = open_clip.list_pretrained()
    for model, tag in listed:
        base = model.replace("-quickgelu", "")
        if base not in names:
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
    supported = sum(1 for m, _ in listed if m.replace("-quickgelu", "") in names)
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
