//! The emoji experiments on the importer's category sets (31 subcategories, google and twitter
//! styles, concept-disjoint halves) and concept sets: prompts, few-shot probes, robustness to the
//! art-style shift, and the overlap between the CLIP's training images and the evaluation sets.

use std::fmt::Write as _;
use std::path::Path;

use clip_data::dataset::EvalSet;
use clip_embed::{Classifier, Embedder, Features};
use clip_train::TrainConfig;
use serde_json::json;

use super::{Finding, PromptRows, ReproOptions, few_shot_finding, pct, prompt_sets, prompt_table};
use crate::error::EvalError;
use crate::fewshot::{few_shot, matching_k};
use crate::overlap::{self, Overlap};
use crate::robustness::{self, Robustness};
use crate::{probe, zeroshot};

/// The emoji CLIP: `--emoji-model`, or one trained here with `configs/train/emoji.toml`'s settings.
fn model(a: &ReproOptions, dir: &Path) -> Result<Embedder, EvalError> {
    if let Some(m) = &a.emoji_model {
        return a.embedder(m);
    }
    eprintln!(
        "training the emoji CLIP ({} steps; about 40 minutes on 2 cores)…",
        a.emoji_steps
    );
    let mut cfg: TrainConfig = toml::from_str(include_str!("../../../../configs/train/emoji.toml"))
        .map_err(|e| EvalError::Invalid(format!("configs/train/emoji.toml: {e}")))?;
    cfg.steps = a.emoji_steps;
    cfg.eval_every = (a.emoji_steps / 5).max(1);
    cfg.checkpoint_every = (a.emoji_steps / 5).max(1);
    cfg.data = dir.join("train_google.jsonl").display().to_string();
    cfg.eval_manifest = Some(dir.join("eval_twitter_seen.jsonl"));
    cfg.eval_classes = Some(dir.join("classes.txt"));
    cfg.out_dir = a.out.join("emoji-run");
    clip_train::run(
        &cfg,
        &clip_train::RunOptions {
            quiet: true,
            ..Default::default()
        },
    )?;
    a.embedder(&cfg.out_dir.join("checkpoints").display().to_string())
}

/// The category sets split into concept-disjoint halves, and their features.
struct Sets {
    names: Vec<String>,
    g_train: EvalSet,
    g_test: EvalSet,
    /// indices of the test half in the category manifests
    test_rows: Vec<usize>,
    concepts: EvalSet,
    fgtr: Features,
    fgte: Features,
    ftte: Features,
    fcon: Features,
}

fn sets(a: &ReproOptions, dir: &Path, emb: &Embedder) -> Result<Sets, EvalError> {
    let path = |f: &str| dir.join(f).display().to_string();
    let cats = Some(dir.join("categories.txt"));
    let google = EvalSet::classification(&path("categories_google.jsonl"), cats.as_deref())
        .map_err(|e| EvalError::Invalid(format!(
            "the emoji folder lacks the category sets: re-run `clip import-emoji` with this version ({e})"
        )))?;
    let twitter = EvalSet::classification(&path("categories_twitter.jsonl"), cats.as_deref())?;
    let concepts = EvalSet::classification(
        &path("eval_twitter_seen.jsonl"),
        Some(&dir.join("classes.txt")),
    )?;
    let names = google.class_names.clone();
    // concept-disjoint halves of every category (rows of the two styles are the same concepts)
    let (tr, te) = probe::stratified_split(&google.labels, names.len(), 0.5, a.seed)?;
    let g_train = google.subset(&tr, "probe-train");
    let g_test = google.subset(&te, "test");
    let t_test = twitter.subset(&te, "test");
    Ok(Sets {
        fgtr: emb.features(&g_train)?,
        fgte: emb.features(&g_test)?,
        ftte: emb.features(&t_test)?,
        fcon: emb.features(&concepts)?,
        names,
        g_train,
        g_test,
        test_rows: te,
        concepts,
    })
}

/// Prompts, few-shot probes, robustness and overlap on the emoji data.
pub(super) fn part(
    a: &ReproOptions,
    dir: &Path,
    findings: &mut Vec<Finding>,
    results: &mut serde_json::Value,
) -> Result<Vec<(String, PromptRows)>, EvalError> {
    let emb = model(a, dir)?;
    let s = sets(a, dir, &emb)?;
    let c = s.names.len();
    // (a) prompts
    let prompt_lists = prompt_sets("an emoji of {}", "emoji_ensemble")?;
    let ensemble = &prompt_lists[2].1;
    let p_concepts = prompt_table(&emb, &s.fcon, &s.concepts.class_names, &prompt_lists)?;
    let p_cats = prompt_table(&emb, &s.ftte, &s.names, &prompt_lists)?;
    // (b) few-shot on categories, google style
    let kmax = s.g_train.class_counts().into_iter().min().unwrap_or(1);
    let ks: Vec<usize> = [1, 2, 4, 8, 16]
        .into_iter()
        .filter(|&k| k <= kmax)
        .collect();
    let w = emb.classifier(&s.names, ensemble)?;
    let zs_google = zeroshot::metrics(&s.fgte, &w).top1;
    let fs = few_shot(&s.fgtr, &s.fgte, &s.names, &ks, a.seeds)?;
    fs.chart(zs_google, "emoji categories: zero-shot vs k-shot probes")
        .save(&a.out.join("fewshot_emoji.png"))?;
    // (c) robustness: google → twitter
    let rob = robustness::evaluate(
        &s.fgtr,
        &s.fgte,
        &[("twitter style".to_string(), s.ftte.clone())],
        &s.names,
        &w,
        &ks,
        a.seeds.min(3),
    )?;
    rob.chart("emoji: google style → twitter style")
        .save(&a.out.join("robustness_emoji.png"))?;
    findings.push(few_shot_finding(
        &format!("emoji categories ({c} classes, google style)"),
        &fs,
        zs_google,
        "fewshot_emoji.png",
    ));
    findings.push(robustness_finding(&rob, &ks));
    // (d) overlap between the CLIP training images and two evaluation sets
    let (finding, overlap_json) = overlap_finding(a, dir, &emb, &s, &w, ensemble)?;
    findings.push(finding);
    results["emoji"] = json!({
        "categories": c, "probe_train": s.fgtr.len(), "test": s.fgte.len(),
        "prompts_concepts": p_concepts.iter().map(|r| json!({"prompts": r.0, "templates": r.1, "top1": r.2})).collect::<Vec<_>>(),
        "prompts_categories": p_cats.iter().map(|r| json!({"prompts": r.0, "templates": r.1, "top1": r.2})).collect::<Vec<_>>(),
        "fewshot": {"k": fs.k, "mean": fs.mean, "std": fs.std, "zero_shot": zs_google, "matches_k": matching_k(&fs, zs_google).json()},
        "robustness": rob.json(),
        "overlap_categories": overlap_json["categories"],
        "overlap_concepts": overlap_json["concepts"],
    });
    Ok(vec![
        (
            format!(
                "emoji concepts, twitter style ({} classes)",
                s.concepts.class_names.len()
            ),
            p_concepts,
        ),
        (
            format!("emoji categories, twitter style ({c} classes)"),
            p_cats,
        ),
    ])
}

fn robustness_finding(rob: &Robustness, ks: &[usize]) -> Finding {
    let er_zs = rob.effective(&rob.zero_shot);
    let er_probe = rob.effective(&rob.probe);
    let mut body = String::from(
        "![robustness](robustness_emoji.png)\n\n| classifier | google (source) | twitter (shift) | effective robustness |\n|---|---|---|---|\n",
    );
    for (n, v) in [
        ("zero-shot CLIP", &rob.zero_shot),
        ("logistic regression on google features", &rob.probe),
    ] {
        let _ = writeln!(
            body,
            "| {n} | {} | {} | {:+.1} pt |",
            pct(v.0),
            pct(v.1[0]),
            rob.effective(v) * 100.0
        );
    }
    let _ = writeln!(
        body,
        "\nBaseline: {} probes trained on google-style features ({}-shot and all data), fitted as logit(shift) = {:.2}·logit(source) {:+.2}.",
        rob.baseline.len(),
        ks.iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        rob.fit.slope,
        rob.fit.intercept
    );
    Finding {
        title: "(c) Robustness to an art-style shift (Fig. 13)".into(),
        paper: "Zero-shot CLIP's effective robustness is far above the supervised-ImageNet trend (it closes up to 75% of the robustness gap); fitting a probe on the source raises source accuracy but gives back most of that robustness.".into(),
        ours: format!(
            "effective robustness: zero-shot {:+.1} pt, source-trained probe {:+.1} pt (gap: google {} vs twitter {} zero-shot; {} vs {} probe)",
            er_zs * 100.0,
            er_probe * 100.0,
            pct(rob.zero_shot.0),
            pct(rob.zero_shot.1[0]),
            pct(rob.probe.0),
            pct(rob.probe.1[0])
        ),
        verdict: if er_zs > er_probe && er_zs > 0.0 {
            "reproduces: zero-shot lies above the trend of source-trained probes".into()
        } else {
            "does not reproduce at this scale: zero-shot is not more robust than the probes' trend".into()
        },
        body,
    }
}

/// Whether each row of `categories_google.jsonl` is a concept whose google image was trained on.
fn trained_rows(dir: &Path) -> Result<Vec<bool>, EvalError> {
    let path = dir.join("categories_google.jsonl");
    let text = clip_data::text::read_text(&path).map_err(|e| EvalError::Invalid(e.to_string()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["trained"].as_bool() == Some(true))
                .map_err(|e| EvalError::Invalid(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// Recall and precision of the detector's flags against the true duplicates.
fn detector_quality(o: &Overlap, truth: &[bool]) -> (f64, f64) {
    let mut flagged = vec![false; truth.len()];
    for (i, _, _) in &o.pairs {
        flagged[*i] = true;
    }
    let tp = truth
        .iter()
        .zip(&flagged)
        .filter(|(t, f)| **t && **f)
        .count();
    let recall = tp as f64 / truth.iter().filter(|t| **t).count().max(1) as f64;
    let precision = tp as f64 / flagged.iter().filter(|f| **f).count().max(1) as f64;
    (recall, precision)
}

/// The overlap detector on the category test half (checked against the importer's ground truth)
/// and on the concept set.
fn overlap_finding(
    a: &ReproOptions,
    dir: &Path,
    emb: &Embedder,
    s: &Sets,
    w: &Classifier,
    ensemble: &[String],
) -> Result<(Finding, serde_json::Value), EvalError> {
    let train_imgs = EvalSet::images_of(&dir.join("train_google.jsonl").display().to_string())?;
    let ftrain = emb.features(&train_imgs)?;
    let correct_cat = zeroshot::correct(&s.fgte, w);
    let o_cat = overlap::evaluate(
        emb,
        &ftrain,
        &s.g_test,
        &s.fgte,
        &correct_cat,
        None,
        256,
        a.seed,
    )?;
    // ground truth of the category test half: is the concept's google image in the training set?
    let trained = trained_rows(dir)?;
    let truth: Vec<bool> = s.test_rows.iter().map(|&i| trained[i]).collect();
    let (recall, precision) = detector_quality(&o_cat, &truth);
    let true_split = overlap::subset_accuracy(&correct_cat, &truth);
    let w_con = emb.classifier(&s.concepts.class_names, ensemble)?;
    let o_con = overlap::evaluate(
        emb,
        &ftrain,
        &s.concepts,
        &s.fcon,
        &zeroshot::correct(&s.fcon, &w_con),
        Some(o_cat.calibration.threshold),
        256,
        a.seed,
    )?;
    o_cat.write_pairs(&a.out.join("duplicates_emoji.csv"), &s.g_test, &train_imgs)?;
    let mut body = overlap_table(&[
        ("emoji categories, google test half", &o_cat),
        ("emoji concepts, twitter style", &o_con),
    ]);
    body.push_str(&detector_text(
        &o_cat.calibration,
        &truth,
        (recall, precision),
        &true_split,
    ));
    let n_true = truth.iter().filter(|t| **t).count();
    let amc = true_split.all_minus_clean.unwrap_or(0.0);
    let finding = Finding {
        title: "(d) Data overlap between training and evaluation (§5)".into(),
        paper: "Median overlap 2.2% (average 3.2%) across 35 datasets; All − Clean accuracy is small (≤ 0.1 pt on average, at most 0.6 pt on Birdsnap), so overlap barely inflates results.".into(),
        ours: format!(
            "the detector flags {} of the google test half (truly in training: {}; detector recall {}, precision {}); All − Clean {:+.1} pt with the detector's split, {:+.1} pt with the true one",
            pct(o_cat.report.overlap_fraction),
            pct(n_true as f64 / truth.len().max(1) as f64),
            pct(recall),
            pct(precision),
            o_cat.report.all_minus_clean.unwrap_or(0.0) * 100.0,
            amc * 100.0
        ),
        verdict: if amc.abs() < 0.01 {
            "reproduces: overlap does not inflate accuracy by a point".into()
        } else {
            format!("does not reproduce: here overlap is large and inflates accuracy by {:+.1} pt — exactly the failure the analysis exists to catch", amc * 100.0)
        },
        body,
    };
    let json = json!({
        "categories": {"calibration": o_cat.calibration, "report": o_cat.report,
            "detector_recall": recall, "detector_precision": precision, "true_split": true_split},
        "concepts": {"calibration": o_con.calibration, "report": o_con.report},
    });
    Ok((finding, json))
}

/// How the detector was calibrated and how it fares against the ground truth.
fn detector_text(
    cal: &overlap::Calibration,
    truth: &[bool],
    (recall, precision): (f64, f64),
    true_split: &overlap::OverlapReport,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nDetector: nearest training image by cosine similarity of this CLIP's image embeddings; threshold {:.3} calibrated on {} augmented copies (random 60–100% crops; {} detected) against {} nearest other-category images ({} flagged).",
        cal.threshold,
        cal.positives,
        pct(cal.true_positive_rate),
        cal.negatives,
        pct(cal.false_positive_rate)
    );
    let n_true = truth.iter().filter(|t| **t).count();
    let signed = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:+.1} pt", v * 100.0));
    let _ = writeln!(
        out,
        "\nGround truth for the google test half (whether each concept's google image is in `train_google.jsonl`): {} of {} are true duplicates; the detector finds {} of them (recall) and {} of its flags are true (precision). With the true split: All {}, Overlap {}, Clean {}, All − Clean {}.",
        n_true,
        truth.len(),
        pct(recall),
        pct(precision),
        pct(true_split.acc_all),
        true_split.acc_overlap.map_or("—".into(), pct),
        true_split.acc_clean.map_or("—".into(), pct),
        signed(true_split.all_minus_clean),
    );
    out
}

fn overlap_table(rows: &[(&str, &Overlap)]) -> String {
    let mut body = String::from(
        "| evaluation set | overlap | All | Overlap | Clean | All − Clean | p (binomial) |\n|---|---|---|---|---|---|---|\n",
    );
    for (n, o) in rows {
        let r = &o.report;
        let opt = |v: Option<f64>| v.map_or("—".to_string(), pct);
        let _ = writeln!(
            body,
            "| {n} | {} of {} ({}) | {} | {} | {} | {} | {} |",
            r.overlap,
            r.total,
            pct(r.overlap_fraction),
            pct(r.acc_all),
            opt(r.acc_overlap),
            opt(r.acc_clean),
            r.all_minus_clean
                .map_or("—".into(), |v| format!("{:+.1} pt", v * 100.0)),
            r.p_value.map_or("—".into(), |p| format!("{p:.2e}"))
        );
    }
    body
}
