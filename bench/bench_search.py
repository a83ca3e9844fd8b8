"""Vector search: our exact search (`clip-bench search`: f16 rows, blocked gemm, per-thread top-k) vs
FAISS `IndexFlatIP` (float32, the exact index clip-retrieval and most CLIP search tools use), and our
approximate index (`clip-bench ann`: USearch HNSW, f16, M=16, ef_construction=128, ef=64) vs both.

Data: N unit vectors of dimension D drawn from a mixture of Gaussian clusters (CLIP embeddings are
clustered, not uniform on the sphere; uniform random vectors make every method look alike), and Q
query vectors from the same mixture, not in the base. Both sides read the same float32 .npy files.
Exact search is timed single-query (batch 1) and in batches of 64; rounds are interleaved (ours,
FAISS, ours, …) and medians reported. recall@10 of ours and of the HNSW graph is measured against
FAISS's exact answer.

    python bench/bench_search.py [--n 1000000] [--dim 512] [--queries 256] [--rounds 3] [--threads 2]
"""
import argparse, json, os, subprocess, tempfile, time

import numpy as np

from bench_inference import cpu_model

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=1_000_000)
ap.add_argument("--dim", type=int, default=512)
ap.add_argument("--queries", type=int, default=256)
ap.add_argument("--single", type=int, default=64, help="queries timed one at a time")
ap.add_argument("--k", type=int, default=10)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--no-ann", action="store_true")
ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/clip-rs-target")), "release", "clip-bench"))
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = os.environ["RAYON_NUM_THREADS"] = str(a.threads)
import faiss  # noqa: E402  (after the thread settings)

faiss.omp_set_num_threads(a.threads)




def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


rng = np.random.default_rng(0)
centres = rng.normal(size=(1000, a.dim)).astype(np.float32)
tmp = tempfile.mkdtemp()
base_f, q_f, qs_f = (os.path.join(tmp, f) for f in ("base.npy", "queries.npy", "single.npy"))
base = np.empty((a.n, a.dim), np.float32)
for s in range(0, a.n, 100_000):
    e = min(a.n, s + 100_000)
    base[s:e] = unit(centres[rng.integers(0, len(centres), e - s)] + 0.9 * rng.normal(size=(e - s, a.dim)).astype(np.float32))
queries = unit(centres[rng.integers(0, len(centres), a.queries)] + 0.9 * rng.normal(size=(a.queries, a.dim)).astype(np.float32))
np.save(base_f, base)
np.save(q_f, queries)
np.save(qs_f, queries[: a.single])

index = faiss.IndexFlatIP(a.dim)
t = time.perf_counter()
index.add(base)
faiss_load = time.perf_counter() - t


def faiss_run(q, batch):
    ids = []
    t = time.perf_counter()
    for s in range(0, len(q), batch):
        ids.append(index.search(q[s:s + batch], a.k)[1])
    return time.perf_counter() - t, np.concatenate(ids)


def ours_run(qfile, batch):
    out = subprocess.run([a.bin, "search", base_f, qfile, str(a.k), str(batch), "1"], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r


faiss_run(queries[:8], 8)  # warm-up
res = {"ours_1": [], "faiss_1": [], "ours_64": [], "faiss_64": []}
ours_ids = faiss_ids = None
for r in range(a.rounds):
    o1 = ours_run(qs_f, 1)
    f1, _ = faiss_run(queries[: a.single], 1)
    o64 = ours_run(q_f, 64)
    f64, faiss_ids = faiss_run(queries, 64)
    res["ours_1"].append(o1["median_s"] / a.single)
    res["faiss_1"].append(f1 / a.single)
    res["ours_64"].append(o64["median_s"] / a.queries)
    res["faiss_64"].append(f64 / a.queries)
    ours_ids = np.array(o64["ids"]).reshape(a.queries, a.k)
    mem = o64["bytes_per_vector_memory"]
    print(f"round {r}: ms/query batch 1: ours {1e3 * res['ours_1'][-1]:.2f}, FAISS {1e3 * res['faiss_1'][-1]:.2f}; "
          f"batch 64: ours {1e3 * res['ours_64'][-1]:.3f}, FAISS {1e3 * res['faiss_64'][-1]:.3f}", flush=True)


def recall(got, want):
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


med = {k: float(np.median(v)) for k, v in res.items()}
print(f"\n{a.n:,} × {a.dim} unit vectors, {a.queries} queries, k={a.k}, {a.threads} threads, {cpu_model()}, faiss {faiss.__version__}")
print(f"{'':28}{'ours ms/query':>14}{'FAISS ms/query':>16}{'ours/FAISS time':>17}")
for b in (1, 64):
    o, f = med[f"ours_{b}"], med[f"faiss_{b}"]
    print(f"{'exact, batch ' + str(b):28}{1e3 * o:14.3f}{1e3 * f:16.3f}{o / f:16.2f}×")
print(f"exact recall@{a.k} of ours vs FAISS (f16 storage): {recall(ours_ids, faiss_ids):.4f}")
print(f"bytes per vector in memory: ours {mem} (f16 + scale), FAISS IndexFlatIP {4 * a.dim} (f32)")

if not a.no_ann:
    ann_f = os.path.join(tmp, "base.usearch")
    out = subprocess.run([a.bin, "ann", base_f, q_f, str(a.k), ann_f], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"\napproximate (USearch HNSW, f16, M=16, ef_construction=128): build {r['build_s']:.1f} s, "
          f"{r['bytes_per_vector_disk']:.0f} bytes per vector on disk (SQLite index: f16 blob {2 * a.dim} + path, hash, mtime)")
    print(f"`clip index --ann` would calibrate ef = {r['calibrated_ef']} (recall@10 {r['calibrated_recall']:.4f} on its midpoint queries)")
    print(f"{'ef':>6}{'recall@' + str(a.k) + ' vs FAISS':>20}{'ms/query':>10}{'vs ours exact b1':>18}{'vs FAISS exact b1':>19}")
    for row in r["sweep"]:
        rec = recall(np.array(row["ids"]).reshape(a.queries, a.k), faiss_ids)
        ms_q = row["ms_per_query"]
        print(f"{row['ef']:6}{rec:20.4f}{ms_q:10.3f}{1e3 * med['ours_1'] / ms_q:17.1f}×{1e3 * med['faiss_1'] / ms_q:18.1f}×")
