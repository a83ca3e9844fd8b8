"""End to end, as a user runs it: `clip embed --images-from DIR` against a Python process doing the same
work with open_clip's PIL preprocessing and ONNX Runtime (same weights, same thread count).

    python bench/bench_embed.py [--threads 2] [--rounds 3] [--images 100] [--models ViT-B-32,RN50] [--work DIR]

Needs the reference virtualenv (tools/requirements.txt) and a release build:
    cargo build --release -p clip-cli --bin clip

Images: --images JPEGs of mixed sizes (long side 160-2000 px, quality 75-95, some grey) cut at random from
scikit-learn's two sample photos, made once under --work. Weights: the randomly initialised open_clip
models of bench_inference.py (same --work; made here if missing) and their ONNX export. Both sides are
timed as whole processes, start to exit: model load, decoding, preprocessing, the image tower, writing
the .npy. The reference also reports its time after imports and session creation ("work"), so the
comparison does not hinge on Python's start-up alone. Rounds interleave ours and the reference; the
figures are medians. The two outputs are compared (max |Δ| of the normalised embeddings), so that both
sides are known to have done the same work.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


REFERENCE = r'''
import json, os, sys, time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
import open_clip
from PIL import Image
onnx_path, image_dir, out, threads, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
transform = open_clip.image_transform(224, is_train=False)
t1 = time.perf_counter()
files = sorted(os.listdir(image_dir))
rows = []
for i in range(0, len(files), batch):
    x = np.stack([transform(Image.open(os.path.join(image_dir, f))).numpy() for f in files[i:i + batch]])
    rows.append(sess.run(None, {"x": x})[0])
e = np.concatenate(rows)
np.save(out, e / np.linalg.norm(e, axis=1, keepdims=True))
print(json.dumps({"startup_s": t1 - t0, "work_s": time.perf_counter() - t1}))
'''


def make_images(d, count):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    os.makedirs(d, exist_ok=True)
    if len([f for f in os.listdir(d) if f.endswith(".jpg")]) == count:
        return
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(0)
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch))
        long_side = int(rng.integers(160, 2001))
        s = long_side / max(cw, ch)
        crop = crop.resize((max(1, round(cw * s)), max(1, round(ch * s))), Image.BICUBIC)
        if i % 10 == 7:
            crop = crop.convert("L")
        crop.save(os.path.join(d, f"img_{i:03}.jpg"), quality=int(rng.integers(75, 96)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--models", default="ViT-B-32,RN50")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/clip-rs-bench"))
    args = ap.parse_args()

    import numpy as np
    from bench_inference import export_onnx, prepare, release_exe
    models = prepare(args.work)
    image_dir = os.path.join(args.work, f"embed-images-{args.images}")
    make_images(image_dir, args.images)
    ref_script = os.path.join(args.work, "ref_embed.py")
    with open(ref_script, "w") as f:
        f.write(REFERENCE)
    exe = release_exe("clip")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    from PIL import Image
    mpix = sum(np.prod(Image.open(os.path.join(image_dir, f)).size) for f in os.listdir(image_dir)) / 1e6
    print(f"{args.images} JPEGs, {mpix:.1f} megapixels in all, {args.threads} threads, batch {args.batch}")

    results = {}
    for name in args.models.split(","):
        d, model = models[name]
        onnx_path = os.path.join(args.work, f"{name}-image.onnx")
        export_onnx(model, onnx_path, "image", 224)
        ours_out = os.path.join(args.work, f"embed-ours-{name}.npy")
        ref_out = os.path.join(args.work, f"embed-ref-{name}.npy")
        runs = {"ours": [], "ref": [], "ref_work": []}
        for r in range(args.rounds + 1):  # round 0 warms the page cache for both
            if os.path.exists(ours_out):
                os.remove(ours_out)
            t = time.perf_counter()
            subprocess.run([exe, "embed", "--model", d, "--images-from", image_dir, "--out", ours_out,
                            "--threads", str(args.threads), "--batch-size", str(args.batch)],
                           check=True, env=env, capture_output=True)
            ours = time.perf_counter() - t
            t = time.perf_counter()
            out = subprocess.run([sys.executable, ref_script, onnx_path, image_dir, ref_out, str(args.threads),
                                  str(args.batch)], check=True, env=env, capture_output=True, text=True).stdout
            ref = time.perf_counter() - t
            if r > 0:
                runs["ours"].append(ours)
                runs["ref"].append(ref)
                runs["ref_work"].append(json.loads(out.strip().splitlines()[-1])["work_s"])
        a, b = np.load(ours_out), np.load(ref_out)
        diff = float(np.abs(a - b).max())
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {**med, "max_abs_diff": diff}
        print(f"{name:<9} ours {med['ours']:6.2f} s ({args.images / med['ours']:5.1f} img/s)   "
              f"open_clip+PIL+ONNX Runtime {med['ref']:6.2f} s ({med['ref'] / med['ours']:.2f}x)   "
              f"its work after imports {med['ref_work']:6.2f} s ({med['ref_work'] / med['ours']:.2f}x)   "
              f"max |Δ| {diff:.1e}", flush=True)
    print(json.dumps({"threads": args.threads, "images": args.images, "results": results}))


if __name__ == "__main__":
    main()
