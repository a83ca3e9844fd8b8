//! Timing harness driven by `bench/bench_inference.py` (which runs PyTorch and ONNX Runtime beside it):
//! prints one JSON line per measurement. Not part of the user-facing `clip` command.
//!
//!   clip-bench image  MODEL_DIR BATCH REPEATS
//!   clip-bench text   MODEL_DIR CAPTIONS_FILE BATCH REPEATS
//!   clip-bench tokenize CORPUS_FILE REPEATS

// Tensor ops allocate and free large buffers at a high rate; glibc's malloc hands them back to the
// kernel each time (page faults, TLB shootdowns). mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clip_model::source::to_vec;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(what: &str, items: usize, times: Vec<f64>) {
    let m = median(times.clone());
    println!(
        "{}",
        serde_json::json!({ "bench": what, "items": items, "median_s": m, "items_per_s": items as f64 / m, "runs": times })
    );
}

fn main() -> Result<()> {
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
            let clip = clip_model::load_clip(Path::new(&args[1]), None, &device)?;
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
            report("image", batch, times);
        }
        Some("text") => {
            let device = clip_model::cpu();
            let clip = clip_model::load_clip(Path::new(&args[1]), None, &device)?;
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
            report("text", rows.len(), times);
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
        _ => bail!("usage: clip-bench image|text|tokenize …"),
    }
    Ok(())
}
