"""Inference benchmark: our burn towers vs PyTorch open_clip vs ONNX Runtime, same weights, same threads.

    python bench/bench_inference.py [--threads 2] [--rounds 3] [--repeats 3] [--work DIR] [--no-avx512]

Needs the reference virtualenv (tools/requirements.txt) and a release build:
    cargo build --release -p clip-cli --bin clip-bench

Weights: randomly initialised open_clip ViT-B-32 and RN50 (no download needed; speed does not depend on
the values), saved once to --work as open_clip safetensors (read by our loader) and exported to ONNX.
Each round runs ours, then PyTorch, then ONNX Runtime, so machine noise hits all three alike; the
figures are medians over all timed runs. Text: the batch is 64 captions from testdata/tokenizer
(the caption lines), which PyTorch and ONNX Runtime run at the fixed context of 77 while we cut the
batch to its longest sequence (same results: the text tower is causal and reads features at EOT).
FLOPs per image come from PyTorch's FLOP counter; the peak is `clip-bench peak` (independent FMA chains
at the widest vector width, all threads), and each image row gives the fraction of it reached.
Tokenizer: the whole 5,200-line corpus, ours vs Hugging Face `tokenizers` (CLIPTokenizerFast built from
the same merges), both with the same thread count.

--no-avx512 measures what a CPU without AVX-512 runs, on this one: ours with CLIP_NO_AVX512=1 (AVX2+FMA
kernels; the attention products' `gemm` crate keeps its own AVX-512 detection) and PyTorch with
ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2. ONNX Runtime has no such
switch (MLAS picks its kernels from CPUID), so its column stays the AVX-512 figure: a harder bar than an
AVX2 CPU would set.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_exe(name):
    """A binary of the release build (in $CARGO_TARGET_DIR when set)."""
    return os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", name)


def cpu_model():
    """The CPU's model name, for every figure a benchmark prints."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def clip_bench(args, *cmd):
    """The JSON line `clip-bench CMD…` prints, run on --threads threads."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run([release_exe("clip-bench"), *map(str, cmd)], capture_output=True, text=True, env=env,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(args, *cmd):
    return clip_bench(args, *cmd)["runs"]


def timed(fn, repeats):
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return runs


def prepare(work):
    import open_clip
    import torch
    from safetensors.torch import save_file
    models = {}
    for name in ["ViT-B-32", "RN50"]:
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None).eval()
        st = os.path.join(d, "open_clip_model.safetensors")
        if not os.path.exists(st):
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
            with open(os.path.join(d, "open_clip_config.json"), "w") as f:
                json.dump({"model_cfg": open_clip.get_model_config(name)}, f)
        else:
            from safetensors.torch import load_file
            model.load_state_dict(load_file(st))
        models[name] = (d, model)
    return models


def export_onnx(model, path, kind, size):
    import torch

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.encode_image(x) if kind == "image" else self.m.encode_text(x)

    if os.path.exists(path):
        return
    example = torch.randn(1, 3, size, size) if kind == "image" else torch.zeros(1, 77, dtype=torch.long)
    torch.onnx.export(Wrap(model), (example,), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/clip-rs-bench"))
    ap.add_argument("--only", default="", help="comma-separated subset: vit1,vit16,rn1,rn16,text,tokenize")
    ap.add_argument("--no-avx512", action="store_true",
                    help="ours and PyTorch on their AVX2 kernels (ONNX Runtime cannot be switched)")
    args = ap.parse_args()
    if args.no_avx512:
        # before torch is imported; inherited by clip-bench
        os.environ.update(CLIP_NO_AVX512="1", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2",
                          MKL_ENABLE_INSTRUCTIONS="AVX2")

    import numpy as np
    import onnxruntime as ort
    import torch
    torch.set_num_threads(args.threads)
    models = prepare(args.work)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1

    lines = open(os.path.join(ROOT, "testdata/tokenizer/corpus.txt"), encoding="utf-8").read().split("\n")[:-1]
    captions = [l for i, l in enumerate(lines) if i % 10 in (0, 3, 6)][:64]
    cap_file = os.path.join(args.work, "captions.txt")
    with open(cap_file, "w", encoding="utf-8") as f:
        f.write("\n".join(captions) + "\n")

    # FLOPs per image (PyTorch's counter: 2 per multiply-add) and the CPU's measured FMA peak
    from torch.utils.flop_counter import FlopCounterMode
    flops = {}
    for name in ["ViT-B-32", "RN50"]:
        with FlopCounterMode(display=False) as fc:  # not under no_grad: its fused attention goes uncounted
            models[name][1].encode_image(torch.randn(1, 3, 224, 224))
        flops[name] = fc.get_total_flops()
    peak = clip_bench(args, "peak")
    print(f"CPU: {cpu_model()}; kernels: ours {peak['isa']}, PyTorch {torch.backends.cpu.get_cpu_capability()}"
          + ("; ONNX Runtime keeps AVX-512 (no switch)" if args.no_avx512 else ""), flush=True)
    print(f"FP32 peak measured on {args.threads} threads: {peak['gflops']:.0f} GFLOP/s ({peak['isa']}); "
          f"per image: ViT-B-32 {flops['ViT-B-32'] / 1e9:.2f} GFLOP, RN50 {flops['RN50'] / 1e9:.2f} GFLOP", flush=True)

    cases = []
    for name, key in [("ViT-B-32", "vit"), ("RN50", "rn")]:
        d, model = models[name]
        onnx_path = os.path.join(args.work, f"{name}-image.onnx")
        export_onnx(model, onnx_path, "image", 224)
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        for batch in (1, 16):
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32))
            cases.append((f"{key}{batch}", f"{name} image, batch {batch}", batch,
                          lambda r, d=d, b=batch: ours(args, "image", d, b, r),
                          lambda r, m=model, x=x: timed(lambda: m.encode_image(x), r),
                          lambda r, s=sess, x=x: timed(lambda: s.run(None, {"x": x.numpy()}), r)))
    d, model = models["ViT-B-32"]
    text_onnx = os.path.join(args.work, "ViT-B-32-text.onnx")
    export_onnx(model, text_onnx, "text", 224)
    tsess = ort.InferenceSession(text_onnx, so, providers=["CPUExecutionProvider"])
    from open_clip import tokenize
    ids = tokenize(captions)
    cases.append(("text", "text tower (ViT-B-32), 64 captions", len(captions),
                  lambda r: ours(args, "text", d, cap_file, 64, r),
                  lambda r: timed(lambda: model.encode_text(ids), r),
                  lambda r: timed(lambda: tsess.run(None, {"x": ids.numpy()}), r)))

    # tokenizer: HF tokenizers (Rust) with the same merges, built through transformers
    from transformers import CLIPTokenizerFast
    from open_clip.tokenizer import SimpleTokenizer
    st = SimpleTokenizer()
    vocab_path = os.path.join(args.work, "vocab.json")
    merges_path = os.path.join(args.work, "merges.txt")
    enc = dict(st.encoder)
    enc["<|startoftext|>"] = enc.pop("<start_of_text>")
    enc["<|endoftext|>"] = enc.pop("<end_of_text>")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(enc, f)
    import gzip
    from open_clip.tokenizer import default_bpe
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[: 49152 - 256 - 2 + 1]
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    hf = CLIPTokenizerFast(vocab_file=vocab_path, merges_file=merges_path)
    corpus = os.path.join(ROOT, "testdata/tokenizer/corpus.txt")

    def hf_run():
        hf(lines, padding="max_length", truncation=True, max_length=77)

    cases.append(("tokenize", f"tokenizer, {len(lines)} lines", len(lines),
                  lambda r: ours(args, "tokenize", corpus, r + 1)[1:],
                  lambda r: timed(hf_run, r), None))

    only = set(filter(None, args.only.split(",")))
    results = []
    for key, label, items, o, t, x in cases:
        if only and key not in only:
            continue
        runs = {"ours": [], "ref": [], "onnx": []}
        for _ in range(args.rounds):
            runs["ours"] += o(args.repeats)
            runs["ref"] += t(args.repeats)
            if x:
                runs["onnx"] += x(args.repeats)
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        ips = {k: items / v for k, v in med.items()}
        results.append((label, ips))
        ref_name = "HF tokenizers" if key == "tokenize" else "PyTorch"
        line = f"{label:<40} ours {ips['ours']:9.1f}/s   {ref_name} {ips['ref']:9.1f}/s ({ips['ours'] / ips['ref']:.2f}x)"
        if "onnx" in ips:
            line += f"   ONNX Runtime {ips['onnx']:8.1f}/s ({ips['ours'] / ips['onnx']:.2f}x)"
        model_name = {"vit": "ViT-B-32", "rn": "RN50"}.get(key.rstrip("0123456789"))
        if model_name:
            frac = {k: v * flops[model_name] / 1e9 / peak["gflops"] for k, v in ips.items()}
            line += (f"   of peak: ours {frac['ours']:.0%}, PyTorch {frac['ref']:.0%}, "
                     f"ONNX Runtime {frac['onnx']:.0%}")
        print(line, flush=True)
    print(json.dumps({"threads": args.threads, "peak_gflops": peak["gflops"], "flops_per_image": flops,
                      "results": results}))


if __name__ == "__main__":
    main()
