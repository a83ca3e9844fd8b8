"""Golden Wilson score intervals (95%) from SciPy, for clip-eval's `metrics::wilson`.

    python tools/gen_golden_wilson.py testdata/eval/wilson.json

Provenance: `scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")`.
"""
import json
import sys

import scipy
from scipy.stats import binomtest

CASES = [(0, 10), (1, 10), (5, 10), (10, 10), (3, 250), (117, 240), (0, 1), (1, 1), (999, 1000)]
rows = []
for k, n in CASES:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    rows.append({"hits": k, "n": n, "lo": float(ci.low), "hi": float(ci.high)})
out = sys.argv[1] if len(sys.argv) > 1 else "testdata/eval/wilson.json"
with open(out, "w") as f:
    json.dump({"scipy": scipy.__version__, "confidence": 0.95, "cases": rows}, f, indent=1)
    f.write("\n")
