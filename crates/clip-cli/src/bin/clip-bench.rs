//! Timing harness driven by `bench/bench_inference.py` (which runs PyTorch and ONNX Runtime beside it):
//! prints one JSON line per measurement. Not part of the user-facing `clip` command.
//!
//!   clip-bench image  MODEL_DIR BATCH REPEATS [f32|bf16|int8]
//!   clip-bench text   MODEL_DIR CAPTIONS_FILE BATCH REPEATS [f32|bf16|int8]
//!   clip-bench tokenize CORPUS_FILE REPEATS
//!   clip-bench train  BATCH STEPS          (training step of the fixed small config)
//!   clip-bench probe  TRAIN.safetensors TEST.safetensors C   (one L-BFGS probe fit; `bench/bench_probe.py`)
//!   clip-bench search BASE.npy QUERIES.npy K BATCH REPEATS  (exact top-k; `bench/bench_search.py`)
//!   clip-bench ann    BASE.npy QUERIES.npy K OUT.usearch    (HNSW build, ef calibration, search at each ef)
//!   clip-bench peak                                          (the CPU's measured FP32 FMA peak, all threads)
//!   clip-bench matmul M K N REPEATS  (f32 `x[M×K]·W[K×N]`: the packed kernel beside `gemm`, GFLOP/s)

#[path = "../alloc.rs"]
mod alloc;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clip_eval::Probing;
use clip_model::source::to_vec;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The process's resident memory in MB, now (`VmRSS`) or at its peak (`VmHWM`), from Linux's
/// `/proc/self/status` (`None` elsewhere).
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn report(what: &str, items: usize, times: Vec<f64>) {
    report_model(what, items, times, None)
}

/// [`report`] with the model's weight memory (`clip_model::Clip::weight_bytes`) when given.
fn report_model(what: &str, items: usize, times: Vec<f64>, clip: Option<&clip_model::Clip>) {
    let m = median(times.clone());
    let weights_mb = clip.map(|c| c.weight_bytes() as f64 / (1 << 20) as f64);
    println!(
        "{}",
        serde_json::json!({ "bench": what, "items": items, "median_s": m, "items_per_s": items as f64 / m,
                            "runs": times, "weights_mb": weights_mb,
                            "rss_mb": rss_mb("VmRSS:"), "peak_rss_mb": rss_mb("VmHWM:") })
    );
}

/// A model directory loaded on the CPU, in the precision the optional argument `i` names (f32 by
/// default), set as `clip embed` sets it (f32 packs the weights where the CPU has AVX-512 or AVX2+FMA).
fn load(args: &[String], dir: usize, precision: usize) -> Result<clip_model::Clip> {
    let mut clip = clip_model::load_clip(Path::new(&args[dir]), None, &clip_model::cpu())?;
    let p: clip_model::lowp::Precision = match args.get(precision) {
        Some(p) => p.parse().map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    clip.set_precision(p)?;
    Ok(clip)
}

/// A float32 `.npy` file: (shape, values).
fn read_npy(path: &Path) -> Result<(Vec<u64>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let shape = npy.shape().to_vec();
    Ok((shape, npy.into_vec::<f32>()?))
}

/// Unit rows of a float32 `[n, d]` `.npy` file as an index's matrix (ids 0..n).
fn matrix_from_npy(path: &Path) -> Result<clip_index::Matrix> {
    let (shape, data) = read_npy(path)?;
    let (n, d) = (shape[0] as usize, shape[1] as usize);
    Ok(clip_index::Matrix::from_rows(
        (0..n as i64).collect(),
        vec![String::new(); n],
        &data,
        d,
    ))
}

/// The harness: one `match` over the benchmark names the Python scripts call (each arm loads, warms
/// up, times and prints one JSON line); kept in one place so the scripts' calls are easy to audit.
fn main() -> Result<()> {
    alloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> Result<usize> {
        args.get(i)
            .context("missing argument")?
            .parse()
            .context("not a number")
    };
    match args.first().map(String::as_str) {
        Some("image") => {
            let device = clip_model::cpu();
            let clip = load(&args, 1, 4)?;
            let (batch, repeats) = (num(2)?, num(3)?);
            let s = clip.config.image_size();
            let data: Vec<f32> = (0..batch * 3 * s * s)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let mut times = Vec::new();
            for r in 0..=repeats {
                let x = Tensor::<4>::from_data(
                    TensorData::new(data.clone(), [batch, 3, s, s]),
                    &device,
                );
                let t = Instant::now();
                let f = to_vec(&clip.encode_image(x));
                std::hint::black_box(f);
                if r > 0 {
                    times.push(t.elapsed().as_secs_f64()); // first run is warm-up
                }
            }
            report_model("image", batch, times, Some(&clip));
        }
        Some("text") => {
            let clip = load(&args, 1, 5)?;
            let lines: Vec<String> = std::fs::read_to_string(&args[2])?
                .lines()
                .map(str::to_owned)
                .collect();
            let (batch, repeats) = (num(3)?, num(4)?);
            let tok = clip_tokenizer::Tokenizer::global();
            let ctx = clip.config.text_cfg.context_length;
            let rows: Vec<Vec<u32>> = lines
                .iter()
                .take(batch)
                .map(|l| {
                    tok.encode_with_specials(l, ctx, true).map(|mut r| {
                        r.resize(ctx, 0);
                        r
                    })
                })
                .collect::<Result<_, _>>()?;
            let mut times = Vec::new();
            for r in 0..=repeats {
                let t = Instant::now();
                let f = to_vec(&clip.encode_text(&rows)?);
                std::hint::black_box(f);
                if r > 0 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            report_model("text", rows.len(), times, Some(&clip));
        }
        Some("tokenize") => {
            let lines: Vec<String> = std::fs::read_to_string(&args[1])?
                .lines()
                .map(str::to_owned)
                .collect();
            let repeats = num(2)?;
            let mut times = Vec::new();
            for _ in 0..repeats {
                // a fresh tokenizer each run, so its word cache starts cold like HF's
                let tok = clip_tokenizer::Tokenizer::embedded();
                let t = Instant::now();
                let ids = tok.tokenize_batch(&lines, 77, true)?;
                std::hint::black_box(ids);
                times.push(t.elapsed().as_secs_f64());
            }
            report("tokenize", lines.len(), times);
        }
        Some("probe") => {
            let (train, _) = clip_embed::cache::read(Path::new(&args[1]))?;
            let (test, _) = clip_embed::cache::read(Path::new(&args[2]))?;
            let c: f64 = args.get(3).context("missing C")?.parse().context("C")?;
            let classes = train
                .labels
                .iter()
                .chain(&test.labels)
                .max()
                .map_or(0, |m| m + 1);
            let t = Instant::now();
            let m = train.fit(
                classes,
                clip_eval::FitOptions {
                    c,
                    ..Default::default()
                },
            )?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"bench": "probe", "seconds": secs, "iterations": m.iterations,
                    "evaluations": m.evaluations, "converged": m.converged, "stop": format!("{:?}", m.stop),
                    "train_accuracy": train.accuracy(&m), "test_accuracy": test.accuracy(&m)})
            );
        }
        Some("train") => {
            // the benchmark's fixed config: 64 px, patch 8, width 256, 6 layers per tower, context 32
            let cfg = clip_model::ClipConfig::from_json(
                r#"{"embed_dim": 256, "quick_gelu": true,
                    "vision_cfg": {"image_size": 64, "layers": 6, "width": 256, "patch_size": 8, "head_width": 64},
                    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 6}}"#,
            )?;
            let (batch, steps) = (num(1)?, num(2)?);
            let device = clip_model::cpu().autodiff();
            let mut clip = clip_model::Clip::random(&cfg, 0, &device)?;
            let mut opt = clip_train::AdamW::new(clip_train::AdamWConfig::paper(true), &clip);
            let data = clip_data::synth::SyntheticScenes::new(0, 64, 0.25);
            let pre = clip_data::Preprocess::clip(64);
            let tok = clip_tokenizer::Tokenizer::global();
            let mut times = Vec::new();
            for step in 0..=steps {
                let mut pixels = Vec::with_capacity(batch * 3 * 64 * 64);
                let mut rows = Vec::with_capacity(batch);
                for i in 0..batch {
                    let (img, caption, _) =
                        data.sample(clip_data::synth::Split::Train, (step * batch + i) as u64);
                    pixels.extend(pre.apply(&img));
                    rows.push(tok.encode_with_specials(&caption, 32, true)?);
                }
                let t = Instant::now();
                let images =
                    Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, 64, 64]), &device);
                let (loss, grads) = clip_train::gradcache::loss_and_grads(
                    &clip,
                    images,
                    &rows,
                    batch,
                    clip_train::Objective::Clip,
                )?;
                opt.step(&mut clip, 1e-4, grads);
                std::hint::black_box(loss);
                if step > 0 {
                    times.push(t.elapsed().as_secs_f64()); // step 0 is warm-up
                }
            }
            report("train", batch, times);
        }
        Some("search") => {
            let t = Instant::now();
            let m = matrix_from_npy(Path::new(&args[1]))?;
            let load_s = t.elapsed().as_secs_f64();
            let q = read_npy(Path::new(&args[2]))?.1;
            let (k, batch, repeats) = (num(3)?, num(4)?, num(5)?);
            let nq = q.len() / m.dim;
            let mut times = Vec::new();
            let mut ids = Vec::new();
            for r in 0..=repeats {
                let t = Instant::now();
                ids.clear();
                for start in (0..nq).step_by(batch) {
                    let rows = batch.min(nq - start);
                    let qs = &q[start * m.dim..(start + rows) * m.dim];
                    ids.extend(m.top_k_batch(qs, k).into_iter().flatten().map(|h| h.id));
                }
                if r > 0 {
                    times.push(t.elapsed().as_secs_f64()); // the first pass is warm-up
                }
            }
            let med = median(times.clone());
            println!(
                "{}",
                serde_json::json!({"bench": "search", "n": m.len(), "dim": m.dim, "queries": nq, "batch": batch,
                    "median_s": med, "ms_per_query": med * 1e3 / nq as f64, "runs": times, "load_s": load_s,
                    "bytes_per_vector_memory": m.bytes_per_vector(), "ids": ids})
            );
        }
        Some("ann") => {
            let m = matrix_from_npy(Path::new(&args[1]))?;
            let q = read_npy(Path::new(&args[2]))?.1;
            let k = num(3)?;
            let nq = q.len() / m.dim;
            let t = Instant::now();
            let ann = clip_index::ann::Ann::build(&m).map_err(anyhow::Error::msg)?;
            let build_s = t.elapsed().as_secs_f64();
            ann.save(Path::new(&args[4]))?;
            let bytes = std::fs::metadata(&args[4])?.len();
            let mut ann = clip_index::ann::Ann::open(Path::new(&args[4]), m.dim)?;
            // what `clip index --ann` would pick for this collection
            let (calibrated_ef, calibrated_recall, _) = clip_index::ann::RecallProbe::new(&m)
                .calibrate_ann(&mut ann, &clip_index::ann::EF_STEPS);
            let mut sweep = Vec::new();
            for ef in clip_index::ann::EF_STEPS {
                ann.set_ef(ef);
                let mut times = Vec::new();
                let mut ids: Vec<i64> = Vec::new();
                for r in 0..3 {
                    let t = Instant::now();
                    let got: Vec<Vec<(i64, f32)>> = (0..nq)
                        .map(|i| ann.search(&q[i * m.dim..(i + 1) * m.dim], k))
                        .collect();
                    times.push(t.elapsed().as_secs_f64());
                    if r == 0 {
                        ids = got
                            .iter()
                            .flat_map(|g| g.iter().map(|(id, _)| *id))
                            .collect();
                    }
                }
                let med = median(times);
                sweep.push(serde_json::json!({"ef": ef, "ms_per_query": med * 1e3 / nq as f64, "ids": ids}));
            }
            println!(
                "{}",
                serde_json::json!({"bench": "ann", "n": m.len(), "queries": nq, "k": k, "build_s": build_s,
                    "calibrated_ef": calibrated_ef, "calibrated_recall": calibrated_recall,
                    "bytes_on_disk": bytes, "bytes_per_vector_disk": bytes as f64 / m.len() as f64, "sweep": sweep})
            );
        }
        Some("peak") => {
            println!(
                "{}",
                serde_json::json!({"bench": "peak", "threads": rayon::current_num_threads(),
                    "gflops": clip_model::fastmath::fma_peak() / 1e9, "isa": clip_model::fastmath::kernel()})
            );
        }
        Some("matmul") => {
            let (m, k, n, repeats) = (num(1)?, num(2)?, num(3)?, num(4)?.max(1));
            let fill = |len: usize, seed: u32| -> Vec<f32> {
                (0..len as u32)
                    .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
                    .collect()
            };
            let (x, w) = (fill(m * k, 1), fill(k * n, 2));
            let flops = 2.0 * (m * k * n) as f64;
            let time = |f: &mut dyn FnMut()| -> f64 {
                f();
                median(
                    (0..repeats)
                        .map(|_| {
                            let t = Instant::now();
                            f();
                            t.elapsed().as_secs_f64()
                        })
                        .collect(),
                )
            };
            let mut y = vec![0f32; m * n];
            let gemm = time(&mut || {
                clip_model::linalg::matmul(
                    m,
                    n,
                    k,
                    &mut y,
                    &x,
                    (1, k as isize),
                    &w,
                    (1, n as isize),
                )
            });
            let packed_kernel = clip_model::lowp::packs(clip_model::lowp::Precision::F32);
            let packed = packed_kernel.then(|| {
                let p = clip_model::lowp::PackedLinear::new(&w, k, n, None, Default::default());
                time(&mut || p.matmul_into(m, &x, k, &mut y, clip_model::lowp::Epilogue::default()))
            });
            println!(
                "{}",
                serde_json::json!({"bench": "matmul", "m": m, "k": k, "n": n,
                    "threads": rayon::current_num_threads(), "isa": clip_model::fastmath::kernel(),
                    "gemm_gflops": flops / gemm / 1e9, "packed_gflops": packed.map(|s| flops / s / 1e9)})
            );
        }
        _ => bail!("usage: clip-bench image|text|tokenize|train|probe|search|ann|peak|matmul …"),
    }
    Ok(())
}
