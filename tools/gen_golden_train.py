"""Golden files for training: open_clip's ClipLoss (value and gradients) and three AdamW steps.

    python tools/gen_golden_train.py testdata/train

loss.safetensors: `image`, `text` [8,16] raw features and `logit_scale` (a scalar, ln(1/0.07)+0.3);
    `loss` = open_clip.loss.ClipLoss()(normalize(image), normalize(text), logit_scale.exp()) and the
    gradients `grad_image`, `grad_text`, `grad_logit_scale` from torch autograd.
adamw/: a tiny open_clip CLIP (ViT, QuickGELU): `initial.safetensors` + `open_clip_config.json`,
    `batch.safetensors` (`images` [4,3,32,32], `text` [4,16] int64, `lrs` [3]), and `final.safetensors`, the
    parameters after three steps of open_clip's recipe: encode with normalize=True, ClipLoss with
    logit_scale.exp(), torch.optim.AdamW with open_clip's two parameter groups (no decay where
    `p.ndim < 2 or "bn"/"ln"/"bias"/"logit_scale" in name`), betas (0.9, 0.98), eps 1e-6, weight decay 0.2,
    then `logit_scale.clamp_(0, ln 100)`; `losses` [3] holds the loss of each step, and
    `grads.safetensors` PyTorch's gradient of every parameter at each step (`{step}.{name}`), so the
    optimiser can be checked on exactly the same gradients.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIP
from safetensors.torch import save_file


def loss_case(out):
    g = torch.Generator().manual_seed(7)
    image = torch.randn(8, 16, generator=g, requires_grad=True)
    text = torch.randn(8, 16, generator=g, requires_grad=True)
    logit_scale = torch.tensor(math.log(1 / 0.07) + 0.3, requires_grad=True)
    loss = ClipLoss()(F.normalize(image, dim=-1), F.normalize(text, dim=-1), logit_scale.exp())
    loss.backward()
    save_file({"image": image.detach(), "text": text.detach(), "logit_scale": logit_scale.detach().reshape(1),
               "loss": loss.detach().reshape(1), "grad_image": image.grad, "grad_text": text.grad,
               "grad_logit_scale": logit_scale.grad.reshape(1)}, os.path.join(out, "loss.safetensors"))


def adamw_case(out):
    d = os.path.join(out, "adamw")
    os.makedirs(d, exist_ok=True)
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(3)
    model = CLIP(embed_dim=32, vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"], quick_gelu=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "initial.safetensors"))
    with open(os.path.join(d, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg}, f, indent=2)
    g = torch.Generator().manual_seed(4)
    images = torch.randn(4, 3, 32, 32, generator=g)
    text = torch.zeros(4, 16, dtype=torch.long)
    for r, n in enumerate([2, 5, 9, 14]):
        text[r, 0] = 510
        text[r, 1:1 + n] = torch.randint(1, 510, (n,), generator=g)
        text[r, 1 + n] = 511
    lrs = torch.tensor([1e-3, 8e-4, 5e-4])

    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = list(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                             {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2}],
                            lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()
    losses = []
    grads = {}
    for step in range(3):
        for group in opt.param_groups:
            group["lr"] = float(lrs[step])
        fi = model.encode_image(images, normalize=True)
        ft = model.encode_text(text, normalize=True)
        loss = loss_fn(fi, ft, model.logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        for n, p in named:
            grads[f"{step}.{n}"] = p.grad.detach().clone().contiguous()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
    save_file({"images": images, "text": text, "lrs": lrs, "losses": torch.tensor(losses)},
              os.path.join(d, "batch.safetensors"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "final.safetensors"))
    save_file(grads, os.path.join(d, "grads.safetensors"))


def main(out):
    os.makedirs(out, exist_ok=True)
    loss_case(out)
    adamw_case(out)


if __name__ == "__main__":
    main(sys.argv[1])
