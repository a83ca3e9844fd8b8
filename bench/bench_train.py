"""Training-step benchmark: ours vs open_clip + torch.optim.AdamW on the same small config, same threads.

    python bench/bench_train.py [--threads 2] [--batch 64] [--steps 6] [--rounds 2]

Config (both sides): 64 px images, patch 8, width 256, 6 layers per tower (heads 4), context 32,
vocabulary 49,408, embed 256, QuickGELU, batch 64, AdamW (β2 0.98, ε 1e-6, decay 0.2), fp32 on CPU.
Each side runs in its own process (interleaved rounds) so peak RSS (getrusage ru_maxrss of the child)
is measured separately; samples/s is the median over the timed steps (the first step is warm-up and
excluded). Data preparation is excluded on both sides.
"""
import argparse
import json
import os
import statistics
import sys

from bench_inference import release_exe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH_STEP = r'''
import sys, time, json, math, torch
from open_clip.model import CLIP
from open_clip.loss import ClipLoss
threads, batch, steps = map(int, sys.argv[1:4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = CLIP(embed_dim=256, quick_gelu=True,
             vision_cfg={"image_size": 64, "layers": 6, "width": 256, "patch_size": 8, "head_width": 64},
             text_cfg={"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6})
exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
named = list(model.named_parameters())
opt = torch.optim.AdamW([{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
                         {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": 0.2}],
                        lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
loss_fn = ClipLoss()
images = torch.randn(batch, 3, 64, 64)
text = torch.randint(1, 49406, (batch, 32)); text[:, 0] = 49406; text[:, 12] = 49407; text[:, 13:] = 0
times = []
for step in range(steps + 1):
    t = time.perf_counter()
    fi = model.encode_image(images, normalize=True); ft = model.encode_text(text, normalize=True)
    loss = loss_fn(fi, ft, model.logit_scale.exp())
    opt.zero_grad(); loss.backward(); opt.step()
    if step > 0: times.append(time.perf_counter() - t)
print(json.dumps({"runs": times}))
'''


def run(cmd, env):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} exited with {status}")
    return json.loads(out.strip().splitlines()[-1])["runs"], usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    exe = release_exe("clip-bench")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    ours, ref, ours_rss, ref_rss = [], [], [], []
    for _ in range(args.rounds):
        runs, rss = run([exe, "train", str(args.batch), str(args.steps)], env)
        ours += runs
        ours_rss.append(rss)
        runs, rss = run([sys.executable, "-c", TORCH_STEP, str(args.threads), str(args.batch), str(args.steps)], env)
        ref += runs
        ref_rss.append(rss)
    o = args.batch / statistics.median(ours)
    r = args.batch / statistics.median(ref)
    print(f"training step, batch {args.batch}, {args.threads} threads")
    print(f"  ours     {o:7.1f} samples/s   peak RSS {max(ours_rss):7.0f} MB")
    print(f"  PyTorch  {r:7.1f} samples/s   peak RSS {max(ref_rss):7.0f} MB")
    print(f"  ratio    {o / r:7.2f}x speed    {max(ours_rss) / max(ref_rss):7.2f}x memory")
    print(json.dumps({"ours_samples_per_s": o, "torch_samples_per_s": r, "ours_peak_rss_mb": max(ours_rss),
                      "torch_peak_rss_mb": max(ref_rss)}))


if __name__ == "__main__":
    main()
