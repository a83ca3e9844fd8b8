"""Golden Fréchet distances for crates/clip-generate/src/frechet.rs.

The reference is pytorch-fid's `calculate_frechet_distance` formula (mean and covariance with
numpy, the matrix square root with scipy.linalg.sqrtm, real part). Run with the reference venv:

    python tools/gen_golden_frechet.py > testdata/generate/frechet.json
"""

import json

import numpy as np
from scipy import linalg


def fd(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


rng = np.random.default_rng(0)
cases = []
for name, (na, nb, d, shift) in {
    "full rank, shifted": (60, 45, 6, 0.7),
    "full rank, scaled": (80, 80, 5, 0.0),
    "unit vectors, 16-d": (50, 40, 16, 0.2),
    "rank-deficient, 12 and 30 rows in 16-d": (12, 30, 16, 0.3),
}.items():
    a = rng.normal(size=(na, d)).astype(np.float32)
    b = (rng.normal(size=(nb, d)) * 1.5 + shift).astype(np.float32)
    if "unit" in name:
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    cases.append({"name": name, "a": a.tolist(), "b": b.tolist(),
                  "fd": fd(a.astype(np.float64), b.astype(np.float64))})
print(json.dumps({"generator": "tools/gen_golden_frechet.py", "scipy": __import__("scipy").__version__,
                  "cases": cases}))
