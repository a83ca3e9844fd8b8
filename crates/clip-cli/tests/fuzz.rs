//! Fuzzing the parsers that read untrusted bytes: the tokenizer, image decoding + preprocessing,
//! the pickle reader and PyTorch zips, safetensors, JSONL/CSV manifests, tar shards and
//! line-oriented text. A seeded mutation fuzzer (bit flips, byte stores of interesting values,
//! truncation, duplication and splicing of chunks) starts from the corpus — the test files of
//! `testdata/` plus `fuzz/corpus/<target>/` (inputs kept because they once failed, or crafted) — and
//! runs each target for a bounded time (`CLIP_FUZZ_SECONDS`, default 12 s per target). Every input
//! must return (an error is fine) without a panic, within 2 s, and without allocating more than
//! 512 MiB at once (a counting allocator tracks the peak). A failing input is written to
//! `fuzz/failures/<target>-<hash>` and reported.
//!
//! Why not `cargo fuzz`: coverage-guided libFuzzer needs a nightly toolchain and an instrumented
//! rebuild of burn (about 15 minutes on 2 cores), which CI cannot afford; this runs on stable inside
//! the normal test suite. The property test for line-oriented inputs (every input line gives one
//! output row) runs the `clip` binary on generated files.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clip_data::rng::Rng;

mod common;
use common::{clip, root};

/// Tracks the bytes allocated now and the peak since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded to the system allocator with the caller's layout
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most one input may hold allocated at once.
const MAX_BYTES: usize = 512 << 20;
/// The longest one input may take.
const MAX_TIME: Duration = Duration::from_secs(2);

fn seconds() -> f64 {
    std::env::var("CLIP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12.0)
}

/// One mutation of `data` (deterministic in `rng`), sometimes splicing in `other`.
fn mutate(data: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len().max(1);
        match rng.below(7) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0u8, 0xff, 0x7f, 0x80, b'\n', b'{', b'"', b'.'][rng.below(8)];
            }
            2 => d.truncate(rng.below(len)),
            3 if !d.is_empty() => {
                // a 4- or 8-byte little-endian integer of an interesting size
                let i = rng.below(d.len());
                let v: u64 = [u32::MAX as u64, u64::MAX, 1 << 31, 1 << 40, 0][rng.below(5)];
                for (k, b) in v
                    .to_le_bytes()
                    .iter()
                    .take(4 + 4 * rng.below(2))
                    .enumerate()
                {
                    if let Some(x) = d.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
            4 if !d.is_empty() => {
                let (a, b) = (rng.below(d.len()), rng.below(d.len()));
                let (a, b) = (a.min(b), a.max(b).min(a + 256));
                let chunk = d[a..b].to_vec();
                let at = rng.below(d.len());
                d.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + rng.below(512)).min(other.len());
                let at = rng.below(len.min(d.len() + 1));
                d.splice(at..at, other[a..b].iter().copied());
            }
            _ => {
                let i = rng.below(len.min(d.len() + 1));
                d.insert(i, rng.next_u64() as u8);
            }
        }
    }
    d
}

/// Files of `dir` (sorted), if it exists.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// Run `target` on the seeds and on mutations of them for the time budget; panic with the
/// failures (inputs written to `fuzz/failures/`).
fn fuzz(name: &str, mut seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let corpus = root().join("fuzz/corpus").join(name);
    seeds.extend(files(&corpus).iter().map(|p| std::fs::read(p).unwrap()));
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let budget = Duration::from_secs_f64(seconds());
    let start = Instant::now();
    let mut rng = Rng::new(0xF022 ^ name.len() as u64);
    let mut failures = Vec::new();
    let mut runs = 0usize;
    let mut i = 0usize;
    std::panic::set_hook(Box::new(|_| {}));
    while (i < seeds.len() || start.elapsed() < budget) && failures.len() < 3 {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            mutate(a, b, &mut rng)
        };
        i += 1;
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let ok = std::panic::catch_unwind(|| target(&input)).is_ok();
        let (took, peak) = (
            t.elapsed(),
            PEAK.load(Ordering::Relaxed).saturating_sub(base),
        );
        runs += 1;
        let why = if !ok {
            Some("panicked".to_string())
        } else if took > MAX_TIME {
            Some(format!("took {took:?}"))
        } else if peak > MAX_BYTES {
            Some(format!("allocated {} MiB", peak >> 20))
        } else {
            None
        };
        if let Some(why) = why {
            let mut h = clip_data::dataset::Fingerprint::default();
            h.bytes(&input);
            let dir = root().join("fuzz/failures");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{:016x}", h.0));
            std::fs::write(&path, &input).unwrap();
            failures.push(format!("{why}: {}", path.display()));
        }
    }
    let _ = std::panic::take_hook();
    eprintln!(
        "{name}: {runs} inputs in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

fn testdata(p: &str) -> PathBuf {
    root().join("testdata").join(p)
}

fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Write `data` to a fresh temporary file named `name` and run `f` on its path.
fn with_file(name: &str, data: &[u8], f: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    f(&p);
}

#[test]
fn fuzz_tokenizer() {
    let corpus = std::fs::read_to_string(testdata("tokenizer/corpus.txt")).unwrap();
    let seeds: Vec<Vec<u8>> = corpus
        .lines()
        .step_by(50)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let tok = clip_tokenizer::Tokenizer::global();
    fuzz("tokenizer", seeds, |b| {
        let text = String::from_utf8_lossy(b);
        let ids = tok.encode_truncated(&text, 77).0;
        assert!(ids.len() <= 77 && ids.len() >= 2);
        if let Ok(row) = tok.encode_with_specials(&text, 77, false) {
            assert!(row.len() <= 77);
        }
        let _ = tok.decode(&ids);
    });
}

#[test]
fn fuzz_image_decoding_and_preprocessing() {
    let seeds = read_all(&files(&testdata("images")))
        .into_iter()
        .filter(|b| b.len() < 200_000)
        .collect();
    let pre = clip_data::Preprocess::clip(32);
    let hf = clip_data::Preprocess::hf(32);
    fuzz("image", seeds, |b| {
        if let Ok(img) = clip_data::decode_image(b, "fuzz") {
            for p in [&pre, &hf] {
                let x = p.apply_image(&img);
                assert_eq!(x.len(), 3 * 32 * 32);
                assert!(x.iter().all(|v| v.is_finite()));
            }
        }
        let _ = clip_data::decode_rgb(b, "fuzz", clip_data::Alpha::FlattenOnWhite);
    });
}

/// `archive/data.pkl` of a PyTorch zip.
fn pickle_of(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let name = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().to_owned())
        .find(|n| n.ends_with("data.pkl"))
        .unwrap();
    let mut out = Vec::new();
    z.by_name(&name).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn fuzz_pickle_reader() {
    let seeds = [
        "vit_openclip_pt/model.pt",
        "rn_openai_jit/model.pt",
        "vit_openclip_fp16/pytorch_model.bin",
    ]
    .iter()
    .map(|p| pickle_of(&testdata(&format!("models/{p}"))))
    .collect();
    fuzz("pickle", seeds, |b| {
        let _ = clip_model::pickle::parse(b);
    });
}

#[test]
fn fuzz_checkpoint_files() {
    let mut seeds = read_all(&[
        testdata("models/vit_openclip_pt/model.pt"),
        testdata("models/vit_openai_jit/model.pt"),
    ]);
    seeds.retain(|s| s.len() < 4 << 20);
    fuzz("torch_zip", seeds, |b| {
        with_file("m.pt", b, |p| {
            let _ = clip_model::weights::read_checkpoint(p);
        })
    });
}

#[test]
fn fuzz_safetensors() {
    let seeds = read_all(&[
        testdata("train/loss.safetensors"),
        testdata("eval/retrieval.safetensors"),
        testdata("models/rn_openclip_st/open_clip_model.safetensors"),
    ]);
    fuzz("safetensors", seeds, |b| {
        with_file("m.safetensors", b, |p| {
            let _ = clip_model::weights::read_safetensors(p);
            let _ = clip_embed::cache::read(p);
            let _ = clip_embed::Classifier::load(p, "model", &["a".into()], 4);
        })
    });
}

#[test]
fn fuzz_manifests_and_text() {
    let seeds: Vec<Vec<u8>> = [
        "{\"image\": \"a.png\", \"label\": 0}\n{\"image\": \"b.png\", \"captions\": [\"x\", \"y\"]}\n",
        "image,caption,caption_2,label\na.png,\"a red, round thing\",a circle,cat\nb.png,x,,1\n",
        "\u{feff}filepath,title\n\"a\"\"b.png\",t\n",
        "{\"image\": \"a.png\", \"label\": 3.5, \"caption\": null}\n\n{}\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("manifest", seeds, |b| {
        for name in ["m.jsonl", "m.csv"] {
            with_file(name, b, |p| {
                let _ = clip_data::manifest::read_rows(p);
                let _ = clip_data::manifest::Manifest::read(p);
                let _ = clip_data::dataset::EvalSet::retrieval(&p.display().to_string());
            });
        }
        with_file("classes.txt", b, |p| {
            let _ = clip_data::text::read_names(p, "class");
            if let Ok(lines) = clip_data::text::read_lines(p) {
                let text = String::from_utf8_lossy(b);
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                assert_eq!(lines.len(), text.lines().count(), "one item per line");
            }
        });
    });
}

fn shard(samples: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in samples {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn fuzz_tar_shards() {
    let png = std::fs::read(testdata("images/tiny_3x5.png")).unwrap();
    let seeds = vec![
        shard(&[
            ("a.png", &png),
            ("a.txt", b"a caption"),
            ("b.png", &png),
            ("b.cls", b"1"),
        ]),
        shard(&[("x/a.jpg", &png), ("x/a.json", b"{\"caption\": \"c\"}")]),
    ];
    fuzz("shard", seeds, |b| {
        with_file("s.tar", b, |p| {
            if let Ok(s) = clip_data::shards::Shards::open(&p.display().to_string()) {
                for i in 0..s.len().min(8) {
                    let _ = s.pair(i);
                    let _ = s.label(i);
                }
            }
        })
    });
}

/// For any text file, `clip tokenize --file` and `clip embed --texts-from` give one row per line.
#[test]
fn every_line_is_one_row_for_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.txt");
    let mut rng = Rng::new(7);
    let pieces = [
        "a dog", "", "   ", "\t", "café", "🙂", "\r", "x y z", "\u{feff}", "<b>",
    ];
    for case in 0..24 {
        let n = rng.below(6);
        let mut text = String::new();
        if case % 5 == 0 {
            text.push('\u{feff}');
        }
        for i in 0..n {
            text.push_str(pieces[rng.below(pieces.len())]);
            if i + 1 < n || rng.below(2) == 0 {
                text.push_str(if rng.below(3) == 0 { "\r\n" } else { "\n" });
            }
        }
        std::fs::write(&f, &text).unwrap();
        let want = text
            .strip_prefix('\u{feff}')
            .unwrap_or(&text)
            .lines()
            .count();
        let out = clip(&["tokenize", "--truncate", "--file", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{text:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = String::from_utf8(out.stdout).unwrap().lines().count();
        assert_eq!(rows, want, "{text:?}");
        if want > 0 {
            let npy = dir.path().join("t.npy");
            let model = common::model();
            let args = [
                "embed",
                "--model",
                &model,
                "--truncate",
                "--texts-from",
                f.to_str().unwrap(),
                "--out",
                npy.to_str().unwrap(),
            ];
            let out = clip(&args);
            assert!(
                out.status.success(),
                "{text:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let bytes = std::fs::read(&npy).unwrap();
            let arr = npyz::NpyFile::new(&bytes[..]).unwrap();
            assert_eq!(arr.shape()[0] as usize, want, "{text:?}");
        }
    }
}
