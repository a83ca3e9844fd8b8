"""Golden values for `clip inside featvis`'s Fourier image parameterisation.

    python tools/gen_golden_featvis.py testdata/inside/irfft2.json

Provenance: NumPy's `numpy.fft.irfft2` (the inverse real 2-D DFT lucid's `fft_image` applies) of a
seeded random half-spectrum, for an even (6 × 6) and an odd (5 × 7) image; and lucid's
`rfft2d_freqs` (the frequency magnitudes that scale the spectrum).
"""
import json
import sys

import numpy as np

rng = np.random.default_rng(0)
cases = []
for h, w in [(6, 6), (5, 7)]:
    k = w // 2 + 1
    re = rng.normal(size=(3, h, k))
    im = rng.normal(size=(3, h, k))
    out = np.fft.irfft2(re + 1j * im, s=(h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: k] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    fx = np.abs(fx)  # lucid: fx = np.fft.fftfreq(w)[: w // 2 + 1 (+1 if odd)], magnitudes
    freqs = np.sqrt(fx * fx + fy * fy)
    cases.append({"h": h, "w": w, "re": re.ravel().tolist(), "im": im.ravel().tolist(),
                  "out": out.ravel().tolist(), "freqs": freqs.ravel().tolist()})
out = sys.argv[1] if len(sys.argv) > 1 else "testdata/inside/irfft2.json"
with open(out, "w") as f:
    json.dump({"numpy": np.__version__, "cases": cases}, f)
    f.write("\n")
