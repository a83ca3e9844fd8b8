"""`clip serve` under a bounded loopback load: wrk (Debian package `wrk`) with C concurrent connections
for D seconds against `POST /embed`, once with texts (one caption per request, rotating over the
caption lines of the tokenizer test corpus) and once with images (one base64 image per request, rotating over
emoji PNGs and photo JPEGs from bench_index.py's picture folder), with dynamic batching (the default)
and with `--no-batching`. Prints requests/s, p50/p99 latency and any non-2xx answers (429s when the
admission queue is full). The client shares the machine's cores with the server, as a sidecar would.

    python bench/bench_serve.py [--model runs/bench_index/ViT-B-32] [--clients 64] [--duration 30] [--threads 2]

Run bench/bench_index.py first (it makes the random ViT-B-32 weights and the pictures).
"""
import argparse, base64, glob, json, os, re, signal, socket, subprocess, tempfile, time, urllib.request

from bench_inference import cpu_model, release_exe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=os.path.join(ROOT, "runs", "bench_index", "ViT-B-32"))
ap.add_argument("--pictures", default=os.path.join(ROOT, "runs", "bench_index", "pictures"))
ap.add_argument("--clients", type=int, default=64)
ap.add_argument("--duration", type=int, default=30)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--clip", default=release_exe("clip"))
a = ap.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


tmp = tempfile.mkdtemp()
# the caption lines of the tokenizer corpus, as bench_inference.py picks them
lines = open(os.path.join(ROOT, "testdata", "tokenizer", "corpus.txt"), encoding="utf-8").read().splitlines()
captions = [l for i, l in enumerate(lines) if i % 10 in (0, 3, 6)][:256]
pics = sorted(glob.glob(os.path.join(a.pictures, "emoji", "*")))[:24] + sorted(glob.glob(os.path.join(a.pictures, "photos", "*")))[:8]
if not pics:
    raise SystemExit(f"no pictures under {a.pictures}: run bench/bench_index.py first")
bodies = {
    "text": [json.dumps({"inputs": c, "truncate": True}) for c in captions],
    "image": [json.dumps({"images": [base64.b64encode(open(p, "rb").read()).decode()]}) for p in pics],
}
scripts = {}
for kind, bs in bodies.items():
    data = os.path.join(tmp, f"{kind}.json")
    json.dump(bs, open(data, "w"))
    lua = os.path.join(tmp, f"{kind}.lua")
    # every connection (its own Lua state) walks the bodies from its own offset
    open(lua, "w").write(f"""
local bodies = {{}}
for line in io.lines("{data}.lines") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function init(args) i = math.random(#bodies) end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
""")
    open(data + ".lines", "w").write("\n".join(bs) + "\n")
    scripts[kind] = lua


def ms(text):
    v, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(url, kind):
    out = subprocess.run(["wrk", "-t", "2", "-c", str(a.clients), "-d", f"{a.duration}s", "--timeout", "60s", "--latency",
                          "-s", scripts[kind], url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)) else 0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total, "non_2xx": non2xx}


results = {}
for mode, flags in [("batching", []), ("no batching", ["--no-batching"])]:
    port = free_port()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    srv = subprocess.Popen([a.clip, "serve", "--model", a.model, "--addr", f"127.0.0.1:{port}", *flags],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if srv.poll() is not None:
                raise SystemExit(srv.stderr.read().decode())
            time.sleep(0.2)
    for kind in ("text", "image"):
        # warm-up: one request of each body shape
        urllib.request.urlopen(urllib.request.Request(url + "/embed", data=bodies[kind][0].encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=60).read()
        r = wrk(url + "/embed", kind)
        results[(mode, kind)] = r
        print(f"{mode:12} {kind:6} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
              f"({r['requests']} requests, {r['non_2xx']} non-2xx)", flush=True)
    srv.send_signal(signal.SIGTERM)
    srv.wait(timeout=120)

print(f"\nclip serve, ViT-B-32 (random weights), {a.clients} connections for {a.duration} s each, server threads {a.threads}, "
      f"wrk on the same machine, {cpu_model()}")
print(f"{'':8}{'batching req/s':>16}{'p50 ms':>9}{'p99 ms':>9}{'no batching req/s':>19}{'p50 ms':>9}{'p99 ms':>9}{'speed-up':>10}")
for kind in ("text", "image"):
    b, n = results[("batching", kind)], results[("no batching", kind)]
    print(f"{kind:8}{b['rps']:16.1f}{b['p50_ms']:9.1f}{b['p99_ms']:9.1f}{n['rps']:19.1f}{n['p50_ms']:9.1f}{n['p99_ms']:9.1f}{b['rps'] / n['rps']:9.2f}×")
print(json.dumps({f"{m}/{k}": v for (m, k), v in results.items()}))
