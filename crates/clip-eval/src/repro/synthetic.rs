//! The synthetic-scenes experiments: a pool and a test set of all 48 (colour, shape) classes
//! rendered from indices training never reaches; prompts and few-shot probes.

use clip_data::dataset::EvalSet;
use clip_data::synth::{Split, SyntheticScenes, class_names};
use clip_train::TrainConfig;
use serde_json::json;

use super::{Finding, PromptRows, ReproOptions, few_shot_finding, prompt_sets, prompt_table};
use crate::error::EvalError;
use crate::fewshot::{few_shot, matching_k};

/// Labelled synthetic scenes: `per_class` images of each of the 48 classes (trained and held-out
/// combinations), rendered from indices the training run never reaches.
pub(super) fn synthetic_sets(
    data: &SyntheticScenes,
    pool: usize,
    test: usize,
) -> (EvalSet, EvalSet) {
    let names = class_names();
    let want = pool + test;
    let mut buckets: Vec<Vec<clip_data::Rgb8>> = vec![Vec::new(); names.len()];
    for (split, base) in [(Split::Train, 50_000_000u64), (Split::HeldOut, 60_000_000)] {
        for i in 0..200_000u64 {
            let scene = data.scene(split, base + i);
            let c = scene.class();
            if buckets[c].len() < want {
                buckets[c].push(data.render(&scene, base + i));
            }
            if buckets.iter().all(|b| b.len() >= want) {
                break;
            }
        }
    }
    let (mut pi, mut pl, mut ti, mut tl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, b) in buckets.into_iter().enumerate() {
        for (j, img) in b.into_iter().enumerate() {
            if j < pool {
                pi.push(img);
                pl.push(c);
            } else {
                ti.push(img);
                tl.push(c);
            }
        }
    }
    (
        EvalSet::from_memory("synthetic-pool", pi, pl, names.clone()),
        EvalSet::from_memory("synthetic-test", ti, tl, names),
    )
}

/// Train the synthetic CLIP like `clip quickstart` into `OUT/synthetic-run` and load its final
/// checkpoint (on the inference device, without an autodiff graph).
fn train(a: &ReproOptions) -> Result<(clip_embed::Embedder, SyntheticScenes), EvalError> {
    let cfg = TrainConfig {
        steps: a.synthetic_steps,
        seed: a.seed,
        eval_every: (a.synthetic_steps / 5).max(1),
        checkpoint_every: a.synthetic_steps,
        out_dir: a.out.join("synthetic-run"),
        ..TrainConfig::default()
    };
    let run = clip_train::run(
        &cfg,
        &clip_train::RunOptions {
            quiet: true,
            ..Default::default()
        },
    )?;
    let data = run
        .synthetic
        .ok_or_else(|| EvalError::Invalid("the synthetic run has no synthetic data".into()))?;
    let emb = a.embedder(&cfg.out_dir.join("checkpoints").display().to_string())?;
    Ok((emb, data))
}

/// Prompts and few-shot probes on the synthetic scenes.
pub(super) fn part(
    a: &ReproOptions,
    findings: &mut Vec<Finding>,
    results: &mut serde_json::Value,
) -> Result<Vec<(String, PromptRows)>, EvalError> {
    let defaults = TrainConfig::default();
    let (emb, data) = match &a.synthetic_model {
        Some(m) => {
            let emb = a.embedder(m)?;
            let n = emb.clip.config.image_size();
            let data = SyntheticScenes::new(a.seed, n, defaults.held_out_fraction);
            (emb, data)
        }
        None => {
            eprintln!(
                "training the synthetic-scenes CLIP ({} steps)…",
                a.synthetic_steps
            );
            train(a)?
        }
    };
    let (pool, test) = synthetic_sets(&data, 16, a.synthetic_test);
    let names = pool.class_names.clone();
    let (fp, ft) = (emb.features(&pool)?, emb.features(&test)?);
    let prompts = prompt_table(&emb, &ft, &names, &prompt_sets("a {}", "synthetic")?)?;
    let zs = prompts[2].2;
    let fs = few_shot(&fp, &ft, &names, &[1, 2, 4, 8, 16], a.seeds)?;
    fs.chart(zs, "synthetic scenes: zero-shot vs k-shot probes")
        .save(&a.out.join("fewshot_synthetic.png"))?;
    results["synthetic"] = json!({
        "classes": names.len(), "test_images": ft.len(), "held_out_classes": data.held_out.len(),
        "prompts": prompts.iter().map(|r| json!({"prompts": r.0, "templates": r.1, "top1": r.2, "mean_per_class_recall": r.3})).collect::<Vec<_>>(),
        "fewshot": {"k": fs.k, "mean": fs.mean, "std": fs.std, "zero_shot": zs, "matches_k": matching_k(&fs, zs).json()},
    });
    findings.push(few_shot_finding(
        "synthetic scenes (48 colour × shape classes)",
        &fs,
        zs,
        "fewshot_synthetic.png",
    ));
    Ok(vec![("synthetic scenes, 48 classes".to_string(), prompts)])
}
