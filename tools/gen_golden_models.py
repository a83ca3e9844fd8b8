"""Golden parity files for the model towers and every checkpoint format.

    python tools/gen_golden_models.py testdata/models

Builds tiny randomly initialised CLIPs with the reference code and saves, per case, the checkpoint in
its native format plus `golden.safetensors` holding the fixed inputs (`image` [2,3,S,S] float32,
`text` [3,C] int64) and the reference outputs (`image_features`, `text_features` — unnormalised, as
`encode_image`/`encode_text` return them — and `logits_per_image`).

Cases:
  vit_openai_jit    OpenAI `clip.model.CLIP` (ViT, QuickGELU), traced TorchScript archive
  rn_openai_jit     OpenAI `clip.model.CLIP` (ModifiedResNet, QuickGELU), traced TorchScript archive
  vit_openclip_pt   open_clip `CLIP` (ViT, GELU, head_width 32) state dict, torch.save zip + config.json
  rn_openclip_st    open_clip `CLIP` (ModifiedResNet, GELU) as open_clip_model.safetensors + open_clip_config.json
  vit_openclip_fp16 open_clip `CLIP` (ViT, QuickGELU) fp16 state dict saved as pytorch_model.bin (training-checkpoint
                    layout: {"epoch", "state_dict": {"module.…"}}); reference computed in float32 from the fp16 weights
  hf_vit            transformers `CLIPModel` directory (config.json + model.safetensors, fp16 on disk, real
                    49,408-token vocabulary so the `clip` command can use it with the real tokenizer)
  vit_openclip_jit  open_clip `CLIP` (ViT, GELU) traced TorchScript archive (`torch.jit.trace` + `torch.jit.save`):
                    a TorchScript file whose activation is GELU, read from its code
  vit_openclip_hub  an open_clip Hugging Face repository as open_clip writes it: `open_clip_config.json`
                    (`model_cfg` with head_width 16 and the fractional mlp_ratios of ViT-g-14 / ViT-bigG-14,
                    4.3637 and 4.9231, truncated as open_clip does; `preprocess_cfg` mean = std = 0.5) +
                    `open_clip_model.safetensors` (GELU)
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
VOCAB = 512
CTX = 77


def randomize(model, seed):
    """Replace every parameter and buffer with values that keep activations O(1) and make every
    branch matter (the references zero-init some of them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(model.named_buffers()):
            if not p.is_floating_point() or name.endswith("attn_mask"):
                continue
            if name.endswith("running_var"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("logit_scale"):
                p.fill_(math.log(1 / 0.07))
            elif p.dim() >= 2 and "embedding" not in name and "positional" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight") and p.dim() == 1:  # norm gains
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g) if p.dim() == 1 and "embedding" not in name
                        else 0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def text_ids(vocab, ctx, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(3, ctx, dtype=torch.long)
    for row, n in enumerate([3, 9, ctx - 2]):
        ids[row, 0] = vocab - 2
        ids[row, 1:1 + n] = torch.randint(1, vocab - 2, (n,), generator=g)
        ids[row, 1 + n] = vocab - 1
    return ids


def golden(out_dir, image, text, image_features, text_features, logits):
    save_file({
        "image": image.contiguous(),
        "text": text.contiguous(),
        "image_features": image_features.float().contiguous(),
        "text_features": text_features.float().contiguous(),
        "logits_per_image": logits.float().contiguous(),
    }, os.path.join(out_dir, "golden.safetensors"))


def run_reference(model, image, text):
    with torch.no_grad():
        fi = model.encode_image(image)
        ft = model.encode_text(text)
        ni = fi / fi.norm(dim=-1, keepdim=True)
        nt = ft / ft.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * ni @ nt.t()
    return fi, ft, logits


def openai_case(out, name, vision_layers, vision_width, patch, image_size, seed):
    from clip.model import CLIP
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model = CLIP(embed_dim=32, image_resolution=image_size, vision_layers=vision_layers, vision_width=vision_width,
                 vision_patch_size=patch, context_length=CTX, vocab_size=VOCAB, transformer_width=64,
                 transformer_heads=1, transformer_layers=2)
    randomize(model, seed)
    image = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed + 1))
    text = text_ids(VOCAB, CTX, seed + 2)
    traced = torch.jit.trace(model, (image, text), check_trace=False)
    torch.jit.save(traced, os.path.join(d, "model.pt"))
    golden(d, image, text, *run_reference(model, image, text))


def open_clip_model(cfg):
    from open_clip.model import CLIP
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                quick_gelu=cfg.get("quick_gelu", False))


def openclip_pt_case(out):
    d = os.path.join(out, "vit_openclip_pt")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
           "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 64, "heads": 2, "layers": 2}}
    model = randomize(open_clip_model(cfg), 11)
    image = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(12))
    text = text_ids(VOCAB, CTX, 13)
    torch.save(model.state_dict(), os.path.join(d, "model.pt"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    golden(d, image, text, *run_reference(model, image, text))


def openclip_st_case(out):
    d = os.path.join(out, "rn_openclip_st")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 8, "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 1}}
    model = randomize(open_clip_model(cfg), 21)
    image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(22))
    text = text_ids(VOCAB, 16, 23)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(d, "open_clip_model.safetensors"))
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                                        "std": [0.26862954, 0.26130258, 0.27577711]}}, f, indent=2)
    golden(d, image, text, *run_reference(model, image, text))


def openclip_fp16_case(out):
    d = os.path.join(out, "vit_openclip_fp16")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 20, "vocab_size": VOCAB, "width": 64, "heads": 1, "layers": 1}}
    model = randomize(open_clip_model(cfg), 31)
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() for k, v in half.items()})
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(32))
    text = text_ids(VOCAB, 20, 33)
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {"module." + k: v for k, v in half.items()}},
               os.path.join(d, "pytorch_model.bin"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    golden(d, image, text, *run_reference(model, image, text))


def hf_case(out):
    from transformers import CLIPConfig, CLIPModel
    d = os.path.join(out, "hf_vit")
    os.makedirs(d, exist_ok=True)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 16, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu"},
        projection_dim=16)
    model = CLIPModel(config)
    randomize(model, 41)
    model = model.half().float().eval()
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(42))
    text = text_ids(49408, 77, 43)
    model.half().save_pretrained(d, safe_serialization=True)
    model.float()
    with torch.no_grad():
        vis = model.vision_model(pixel_values=image)
        fi = model.visual_projection(vis.pooler_output)
        txt = model.text_model(input_ids=text)
        ft = model.text_projection(txt.pooler_output)
        ni = fi / fi.norm(dim=-1, keepdim=True)
        nt = ft / ft.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * ni @ nt.t()
    golden(d, image, text, fi, ft, logits)


def openclip_jit_case(out):
    d = os.path.join(out, "vit_openclip_jit")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 20, "vocab_size": VOCAB, "width": 64, "heads": 2, "layers": 1}}
    model = randomize(open_clip_model(cfg), 51)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(52))
    text = text_ids(VOCAB, 20, 53)
    traced = torch.jit.trace(model, (image, text), check_trace=False)
    torch.jit.save(traced, os.path.join(d, "model.pt"))
    golden(d, image, text, *run_reference(model, image, text))


def openclip_hub_case(out):
    d = os.path.join(out, "vit_openclip_hub")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 28, "layers": 2, "width": 48, "patch_size": 7, "head_width": 16,
                          "mlp_ratio": 4.3637},
           "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2,
                        "mlp_ratio": 4.9231}}
    model = randomize(open_clip_model(cfg), 61)
    assert model.visual.transformer.resblocks[0].mlp.c_fc.out_features == int(48 * 4.3637) == 209
    assert model.transformer.resblocks[0].mlp.c_fc.out_features == int(32 * 4.9231) == 157
    image = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(62))
    text = text_ids(VOCAB, 16, 63)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(d, "open_clip_model.safetensors"))
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                        "interpolation": "bicubic", "resize_mode": "shortest"}},
                  f, indent=2)
    golden(d, image, text, *run_reference(model, image, text))


def main(out):
    os.makedirs(out, exist_ok=True)
    openai_case(out, "vit_openai_jit", vision_layers=2, vision_width=64, patch=16, image_size=48, seed=1)
    openai_case(out, "rn_openai_jit", vision_layers=(1, 1, 2, 1), vision_width=4, patch=None, image_size=64, seed=2)
    openclip_pt_case(out)
    openclip_st_case(out)
    openclip_fp16_case(out)
    hf_case(out)
    openclip_jit_case(out)
    openclip_hub_case(out)


if __name__ == "__main__":
    main(sys.argv[1])
