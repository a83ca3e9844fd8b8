"""Linear-probe fit time: ours (`clip-bench probe`, L-BFGS in Rust) vs scikit-learn's
LogisticRegression(solver="lbfgs") on the same features, same C, max_iter 1000, tol 1e-4.

Features: 10,000 × 512 training rows, 100 classes (Gaussian class means + noise, L2-normalised like
CLIP embeddings), 5,000 test rows; written as safetensors so both sides read identical float32 data.
Rounds are interleaved (ours, sklearn, ours, …) and medians reported, since the machine is shared.

    python bench/bench_probe.py [--rounds 3] [--c 3.16] [--threads 2]
"""
import argparse, json, os, subprocess, tempfile, time

import numpy as np
from safetensors.numpy import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--c", type=float, default=3.16)
ap.add_argument("--n", type=int, default=10000)
ap.add_argument("--dim", type=int, default=512)
ap.add_argument("--classes", type=int, default=100)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/clip-rs-target")), "release", "clip-bench"))
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
os.environ["RAYON_NUM_THREADS"] = str(a.threads)
from sklearn.linear_model import LogisticRegression  # noqa: E402  (after the thread settings)
import sklearn  # noqa: E402

rng = np.random.default_rng(0)
means = rng.normal(size=(a.classes, a.dim)).astype(np.float32) * 0.15


def make(n):
    y = rng.integers(0, a.classes, n)
    x = means[y] + rng.normal(size=(n, a.dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y.astype(np.int64)


xtr, ytr = make(a.n)
xte, yte = make(a.n // 2)
tmp = tempfile.mkdtemp()
ftr, fte = os.path.join(tmp, "train.safetensors"), os.path.join(tmp, "test.safetensors")
save_file({"features": xtr, "labels": ytr}, ftr)
save_file({"features": xte, "labels": yte}, fte)

ours, ref = [], []
for r in range(a.rounds):
    out = subprocess.run([a.bin, "probe", ftr, fte, str(a.c)], check=True, capture_output=True, text=True).stdout
    ours.append(json.loads(out.strip().splitlines()[-1]))
    t = time.perf_counter()
    m = LogisticRegression(C=a.c, max_iter=1000, tol=1e-4).fit(xtr, ytr)
    dt = time.perf_counter() - t
    ref.append({"seconds": dt, "iterations": int(m.n_iter_[0]), "train_accuracy": float((m.predict(xtr) == ytr).mean()),
                "test_accuracy": float((m.predict(xte) == yte).mean())})
    print(f"round {r}: ours {ours[-1]['seconds']:.3f} s ({ours[-1]['iterations']} it), sklearn {dt:.3f} s ({ref[-1]['iterations']} it)", flush=True)

med = lambda rows, k: float(np.median([x[k] for x in rows]))
print(f"\n{a.n}×{a.dim} features, {a.classes} classes, C={a.c}, {a.threads} threads, scikit-learn {sklearn.__version__}")
print(f"{'':12}{'fit s':>8}{'iters':>7}{'train acc':>11}{'test acc':>10}")
for name, rows in [("ours", ours), ("scikit-learn", ref)]:
    print(f"{name:12}{med(rows, 'seconds'):8.3f}{med(rows, 'iterations'):7.0f}{med(rows, 'train_accuracy'):11.4f}{med(rows, 'test_accuracy'):10.4f}")
print(f"speed-up ours vs scikit-learn: {med(ref, 'seconds') / med(ours, 'seconds'):.2f}×")
