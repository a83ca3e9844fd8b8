"""Reduced precision (`--precision bf16|int8`) against f32 and against ONNX Runtime's int8 model
(`quantize_dynamic`, per-channel int8 weights), full-size ViT-B-32 and RN50, same weights, same threads.

    python bench/bench_precision.py [--threads 2] [--rounds 3] [--repeats 3] [--emoji 200] [--photos 50] [--work DIR]
                                    [--no-avx512]

Needs the reference virtualenv (tools/requirements.txt) and a release build:
    cargo build --release -p clip-cli --bin clip --bin clip-bench

Speed: image towers at batch 1 and 16 (`clip-bench image DIR B R PRECISION`, its first run a warm-up)
interleaved round by round with ONNX Runtime's f32 and int8 sessions; medians. Memory: the weights each
side holds (ours: parameters plus packed layers, `Clip::weight_bytes`; ONNX Runtime: the model file) and
our process's resident memory after the runs.
Accuracy, on real images and captions: emoji PNGs of emoji-datasource-google (the images of
bench_index.py, fetched there with `npm pack`) and JPEGs cut from scikit-learn's photos; each emoji's
name is a class ("an emoji of {name}.") and a search query. `clip embed` in each precision, and ONNX
Runtime f32 and int8 on open_clip's PIL preprocessing. Each reduced-precision run is compared with the
same engine's f32 run: max |Δ| of the normalised embeddings, agreement of zero-shot top-1 over the
images, and mean overlap of the top-10 images of each query (text → image search).
Weights: the randomly initialised open_clip models of bench_inference.py (no download); random weights
spread classes less than trained ones, so the agreement figures are a stress test, not a forecast for
pretrained checkpoints (run `clip embed --model ViT-B-32:openai --precision int8` on your own data for that).
--no-avx512: ours on the kernels of a CPU without AVX-512 (CLIP_NO_AVX512=1: AVX2+FMA for f32, bf16 and int8);
ONNX Runtime cannot be switched and keeps its AVX-512 (VNNI) kernels.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench_inference import clip_bench, cpu_model, export_onnx, prepare, release_exe, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ["f32", "bf16", "int8"]


def real_data(args):
    """(image dir, [(file, emoji name)]): emoji PNGs with their names and photos, copied to one folder."""
    pics = os.path.join(ROOT, "runs", "bench_index", "pictures")
    pkg = os.path.join(ROOT, "runs", "bench_index", "emoji-datasource-google", "package")
    if not os.path.isdir(pkg) or not os.path.isdir(pics):
        sys.exit("the images come from bench/bench_index.py: run it once first (it fetches them with npm pack)")
    meta = json.load(open(os.path.join(pkg, "emoji.json"), encoding="utf-8"))
    names = {e["image"]: e["name"].lower() for e in meta if e.get("name")}
    emoji = sorted(f for f in os.listdir(os.path.join(pics, "emoji")) if f in names)
    random.Random(0).shuffle(emoji)
    emoji = sorted(emoji[: args.emoji])
    photos = sorted(os.listdir(os.path.join(pics, "photos")))[: args.photos]
    out = os.path.join(args.work, f"precision-images-{args.emoji}-{args.photos}")
    if not os.path.isdir(out):
        os.makedirs(out)
        for f in emoji:
            shutil.copy(os.path.join(pics, "emoji", f), os.path.join(out, "e_" + f))
        for f in photos:
            shutil.copy(os.path.join(pics, "photos", f), os.path.join(out, "p_" + f))
    return out, [names[f] for f in emoji]


def load_npy(path):
    import numpy as np
    return np.load(path)


def agreement(img_a, txt_a, img_b, txt_b):
    """(max |Δ| of image and text rows, zero-shot top-1 agreement, mean top-10 search overlap) of b against a."""
    import numpy as np
    delta = max(float(np.abs(img_a - img_b).max()), float(np.abs(txt_a - txt_b).max()))
    top1 = float(np.mean((img_a @ txt_a.T).argmax(1) == (img_b @ txt_b.T).argmax(1)))
    sa, sb = txt_a @ img_a.T, txt_b @ img_b.T
    ta, tb = np.argsort(-sa, 1)[:, :10], np.argsort(-sb, 1)[:, :10]
    overlap = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ta, tb)]))
    return delta, top1, overlap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--emoji", type=int, default=200)
    ap.add_argument("--photos", type=int, default=50)
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/clip-rs-bench"))
    ap.add_argument("--no-avx512", action="store_true",
                    help="ours on the AVX2 kernels (ONNX Runtime cannot be switched)")
    args = ap.parse_args()
    if args.no_avx512:
        os.environ["CLIP_NO_AVX512"] = "1"  # inherited by clip and clip-bench
    os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import onnxruntime as ort
    import open_clip
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from PIL import Image
    torch.set_num_threads(args.threads)
    models = prepare(args.work)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    clip = release_exe("clip")
    print(f"CPU: {cpu_model()}, {args.threads} threads; ONNX Runtime {ort.__version__}"
          + ("; ours on AVX2 (CLIP_NO_AVX512=1), ONNX Runtime on AVX-512" if args.no_avx512 else ""), flush=True)

    image_dir, classes = real_data(args)
    prompts = [f"an emoji of {c}." for c in classes]
    tmp = tempfile.mkdtemp()
    prompt_file = os.path.join(tmp, "prompts.txt")
    with open(prompt_file, "w", encoding="utf-8") as f:
        f.write("\n".join(prompts) + "\n")
    files = sorted(os.listdir(image_dir))
    transform = open_clip.image_transform(224, is_train=False)
    pixels = np.stack([transform(Image.open(os.path.join(image_dir, f))).numpy() for f in files])
    tokens = open_clip.tokenize(prompts).numpy()
    print(f"accuracy data: {len(files)} images ({len(classes)} emoji, {len(files) - len(classes)} photos), "
          f"{len(prompts)} class prompts / queries", flush=True)

    for name in ["ViT-B-32", "RN50"]:
        d, model = models[name]
        paths = {}
        for kind, size in [("image", 224), ("text", 77)]:
            f32_path = os.path.join(args.work, f"{name}-{kind}.onnx")
            export_onnx(model, f32_path, kind, size)
            q_path = os.path.join(args.work, f"{name}-{kind}-int8.onnx")
            if not os.path.exists(q_path):
                try:
                    quantize_dynamic(f32_path, q_path, per_channel=True, weight_type=QuantType.QInt8)
                except ValueError as e:
                    # ORT's ConvInteger needs the weight as an initializer; the exported patch conv's
                    # is computed. Then only the matrix products are quantized (the bulk of a ViT).
                    print(f"{name} {kind}: quantize_dynamic over all ops failed ({e}); MatMul/Gemm only", flush=True)
                    quantize_dynamic(f32_path, q_path, per_channel=True, weight_type=QuantType.QInt8,
                                     op_types_to_quantize=["MatMul", "Gemm"])
            paths[kind] = {"f32": f32_path, "int8": q_path}
        sess = {p: ort.InferenceSession(paths["image"][p], so, providers=["CPUExecutionProvider"])
                for p in ["f32", "int8"]}

        # speed, interleaved
        runs = {}
        for _ in range(args.rounds):
            for batch in (1, 16):
                x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
                for p in PRECISIONS:
                    r = clip_bench(args, "image", d, batch, args.repeats, p)
                    runs.setdefault(("ours", p, batch), []).extend(r["runs"])
                    runs[("mem", p)] = (r["weights_mb"], r["rss_mb"])
                for p in ["f32", "int8"]:
                    runs.setdefault(("ort", p, batch), []).extend(
                        timed(lambda s=sess[p], x=x: s.run(None, {"x": x}), args.repeats))
        rate = {k: k[2] / statistics.median(v) for k, v in runs.items() if k[0] != "mem"}

        # accuracy
        emb = {}
        for p in PRECISIONS:
            io = os.path.join(tmp, f"{name}-{p}")
            subprocess.run([clip, "embed", "--model", d, "--precision", p, "--images-from", image_dir,
                            "--out", io + "-img.npy"], check=True, capture_output=True)
            subprocess.run([clip, "embed", "--model", d, "--precision", p, "--texts-from", prompt_file,
                            "--out", io + "-txt.npy"], check=True, capture_output=True)
            emb[("ours", p)] = (load_npy(io + "-img.npy"), load_npy(io + "-txt.npy"))
        for p in ["f32", "int8"]:
            ts = ort.InferenceSession(paths["text"][p], so, providers=["CPUExecutionProvider"])
            img = np.concatenate([sess[p].run(None, {"x": pixels[i:i + 32]})[0] for i in range(0, len(pixels), 32)])
            txt = np.concatenate([ts.run(None, {"x": tokens[i:i + 32]})[0] for i in range(0, len(tokens), 32)])
            emb[("ort", p)] = tuple(e / np.linalg.norm(e, axis=1, keepdims=True) for e in (img, txt))

        print(f"\n{name} (random init), image tower, images/s (median), and accuracy against the same engine's f32:")
        print("| engine, precision | batch 1 | batch 16 | vs our f32 (b1 / b16) | vs ORT f32 (b1 / b16) | vs ORT int8 (b1 / b16) "
              "| weights MB | max abs Δ | zero-shot top-1 agreement | search top-10 overlap |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        rows = [("ours", p) for p in PRECISIONS] + [("ort", p) for p in ["f32", "int8"]]
        for eng, p in rows:
            r1, r16 = rate[(eng, p, 1)], rate[(eng, p, 16)]
            ratio = lambda e2, p2: f"{r1 / rate[(e2, p2, 1)]:.2f}× / {r16 / rate[(e2, p2, 16)]:.2f}×"
            if eng == "ours":
                mem = f"{runs[('mem', p)][0]:.0f} (RSS {runs[('mem', p)][1]:.0f})"
            else:
                mem = f"{os.path.getsize(paths['image'][p]) / 2**20:.0f} (file)"
            img_a, txt_a = emb[(eng, "f32")]
            img_b, txt_b = emb[(eng, p)]
            delta, top1, overlap = agreement(img_a, txt_a, img_b, txt_b)
            label = "ours" if eng == "ours" else "ONNX Runtime"
            print(f"| {label} {p} | {r1:.1f} | {r16:.1f} | {ratio('ours', 'f32')} | {ratio('ort', 'f32')} | "
                  f"{ratio('ort', 'int8')} | {mem} | {delta:.4f} | {top1:.3f} | {overlap:.3f} |", flush=True)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
