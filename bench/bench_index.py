"""Indexing throughput: `clip index DIR` (decode + preprocess + image tower + SQLite writes, the whole
process including model load) vs clip-retrieval's inference path (open_clip's model and PIL
preprocessing in a torch DataLoader, embeddings normalised and saved), same weights, same threads,
same batch size.

Images (real, mixed sizes): emoji PNGs (64×64 RGBA) from the npm package emoji-datasource-google,
plus JPEGs cut from scikit-learn's two sample photos at random sizes between 160 and 1,600 px wide.
The npm package is fetched with `npm pack` (no install scripts) into --work on the first run.
Weights: a randomly initialised open_clip ViT-B-32 saved as open_clip safetensors (speed does not
depend on the values). Rounds alternate ours / reference; medians are reported. Our index file is
removed before each round so every round embeds every image.

    python bench/bench_index.py [--emoji 1000] [--photos 250] [--rounds 3] [--threads 2] [--batch 32]
"""
import argparse, glob, json, os, shutil, subprocess, sys, tarfile, time

import numpy as np

from bench_inference import cpu_model, release_exe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--emoji", type=int, default=1000)
ap.add_argument("--photos", type=int, default=250)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--workers", type=int, default=2, help="reference DataLoader worker processes")
ap.add_argument("--model", default="ViT-B-32")
ap.add_argument("--work", default=os.path.join(ROOT, "runs", "bench_index"))
ap.add_argument("--clip", default=release_exe("clip"))
ap.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = str(a.threads)


def reference(images, model_dir):
    """clip-retrieval's `clip_inference` shape: a Dataset that opens each file with PIL and applies
    open_clip's preprocess, a DataLoader with worker processes, the image tower under no_grad."""
    import open_clip, torch
    from PIL import Image
    torch.set_num_threads(a.threads)
    t = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(a.model, pretrained=os.path.join(model_dir, "open_clip_model.safetensors"))
    model.eval()

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return preprocess(Image.open(images[i]))

    loader = torch.utils.data.DataLoader(Files(), batch_size=a.batch, num_workers=a.workers, shuffle=False)
    out = []
    with torch.no_grad():
        for x in loader:
            f = model.encode_image(x)
            out.append(torch.nn.functional.normalize(f, dim=-1).numpy())
    np.save(os.path.join(a.work, "reference.npy"), np.concatenate(out).astype(np.float16))
    return time.perf_counter() - t


if a.reference_only:  # one reference round in a fresh process (its own imports and workers)
    images = json.load(open(os.path.join(a.work, "images.json")))
    print(json.dumps({"seconds": reference(images, os.path.join(a.work, a.model))}))
    sys.exit(0)

os.makedirs(a.work, exist_ok=True)
pics = os.path.join(a.work, "pictures")
if not os.path.isdir(pics):
    pkg = os.path.join(a.work, "emoji-datasource-google")
    if not os.path.isdir(pkg):
        name = subprocess.run(["npm", "pack", "--silent", "emoji-datasource-google@16.0.0"], cwd=a.work, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        os.makedirs(pkg)
        with tarfile.open(os.path.join(a.work, name)) as t:
            t.extractall(pkg, filter="data")
    from PIL import Image
    from sklearn.datasets import load_sample_images
    os.makedirs(os.path.join(pics, "emoji"))
    os.makedirs(os.path.join(pics, "photos"))
    pngs = sorted(glob.glob(os.path.join(pkg, "package", "img", "google", "64", "*.png")))[: a.emoji]
    for p in pngs:
        shutil.copy(p, os.path.join(pics, "emoji", os.path.basename(p)))
    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    for i in range(a.photos):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        ch, cw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        width = int(rng.integers(160, 1601))
        crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize((width, max(1, round(width * ch / cw))), Image.BICUBIC)
        crop.save(os.path.join(pics, "photos", f"photo_{i:04}.jpg"), quality=90)
images = sorted(glob.glob(os.path.join(pics, "*", "*")))
json.dump(images, open(os.path.join(a.work, "images.json"), "w"))

model_dir = os.path.join(a.work, a.model)
if not os.path.exists(os.path.join(model_dir, "open_clip_model.safetensors")):
    import open_clip, torch
    from safetensors.torch import save_file
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(0)
    m = open_clip.create_model(a.model, pretrained=None).eval()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(model_dir, "open_clip_model.safetensors"))
    json.dump({"model_cfg": open_clip.get_model_config(a.model)}, open(os.path.join(model_dir, "open_clip_config.json"), "w"))

sizes = [os.path.getsize(p) for p in images]
print(f"{len(images)} images ({sum(p.endswith('.png') for p in images)} emoji PNGs 64×64, "
      f"{sum(p.endswith('.jpg') for p in images)} photo JPEGs 160–1,600 px wide), {sum(sizes) / 1e6:.1f} MB", flush=True)

db = os.path.join(a.work, "bench.db")
ours, ref = [], []
for r in range(a.rounds):
    for f in glob.glob(db + "*"):
        os.remove(f)
    t = time.perf_counter()
    out = subprocess.run([a.clip, "index", pics, "--model", model_dir, "--db", db, "--batch-size", str(a.batch), "--json"],
                         check=True, capture_output=True, text=True).stdout
    ours.append(time.perf_counter() - t)
    report = json.loads(out.strip().splitlines()[-1])
    out = subprocess.run([sys.executable, __file__, "--reference-only", "--work", a.work, "--threads", str(a.threads),
                          "--batch", str(a.batch), "--workers", str(a.workers), "--model", a.model],
                         check=True, capture_output=True, text=True).stdout
    ref.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    print(f"round {r}: ours {ours[-1]:.1f} s, reference {ref[-1]:.1f} s", flush=True)

# the same vectors: our index (f16) against the reference's embeddings, image by image
import sqlite3
con = sqlite3.connect(db)
rows = dict(con.execute("SELECT path, vector FROM images").fetchall())
want = np.load(os.path.join(a.work, "reference.npy")).astype(np.float32)
got = np.stack([np.frombuffer(rows[os.path.realpath(p)], dtype=np.float16).astype(np.float32) for p in images])
cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)

o, f = float(np.median(ours)), float(np.median(ref))
n = len(images)
print(f"\n{n} images, {a.model} (random weights), batch {a.batch}, {a.threads} threads, {cpu_model()}")
print(f"ours: clip index, whole process incl. model load and SQLite: {o:.1f} s = {n / o:.1f} img/s")
print(f"reference: open_clip + PIL in a DataLoader ({a.workers} workers), from model load: {f:.1f} s = {n / f:.1f} img/s")
print(f"speed-up: {f / o:.2f}×   (embedding agreement: min cosine {cos.min():.5f}, mean {cos.mean():.6f})")
print(json.dumps({"images": n, "ours_s": o, "reference_s": f, "ratio": f / o, "runs_ours": ours, "runs_reference": ref, "report": report}))
