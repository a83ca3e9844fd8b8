//! `clip inside limits`: the paper's limitations (§6) as probes of a CLIP trained on the emoji
//! data, each with chance, a linear-probe baseline (scikit-learn's protocol, C searched) and a
//! verdict against the paper's claim:
//!
//! - **handwritten digits out of distribution**: scikit-learn's bundled 8×8 digits, dark on white
//!   and upsampled, zero-shot against the keycap names, beside the keycap emoji themselves and
//!   digits rendered in a bitmap font, with the raw-pixel logistic regression the paper cites
//!   ("an embarrassingly simple baseline of logistic regression on raw pixels outperforms
//!   zero-shot CLIP" on MNIST);
//! - **counting**: 1–6 copies of an emoji on a canvas, each copy the same size (ink grows with the
//!   count) or with the total area held constant (ink says nothing), against an ink-only baseline;
//!   and the family emoji, whose names list their members;
//! - **fine-grained**: the country flags, zero-shot among all flags, against as many other
//!   concepts drawn at random;
//! - **abstract**: clock faces, moon phases, arrows, and facing left against facing right, each
//!   against a random group of the same size;
//! - **rendered text**: concept names written in the bitmap font, zero-shot among the names,
//!   against the same concepts' emoji.
//!
//! Probes that hold out a style train on the other styles and test on it, style by style; every
//! share has a Wilson 95% interval. Writes `limits.json`, `report.md` and one grid per probe
//! (`grid_NAME.png`: green frames where zero-shot was right, red where wrong).

use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use clip_data::resize::Rgb8;
use clip_data::rng::{Rng, shuffle};
use clip_embed::{Embedder, Features};
use clip_eval::logreg::argmax_rows;
use clip_eval::{EvalError, FitOptions, fit_probe};
use serde::Serialize;

use crate::Rate;
use crate::emoji::{Import, Row};
use crate::grid::{Tile, frame};
use crate::render;

mod counting;
mod digits;
mod groups;

pub use digits::read_digits;

/// What to probe with.
#[derive(Debug, Clone)]
pub struct LimitsOptions {
    pub out: PathBuf,
    /// the folder written by `clip import-emoji`
    pub emoji: PathBuf,
    /// scikit-learn's `digits.csv.gz` (`sklearn/datasets/data/`); the digits probe is skipped without it
    pub digits: Option<PathBuf>,
    /// prompt templates (`{}` is the class name)
    pub templates: Vec<String>,
    pub seed: u64,
    /// concepts drawn on the counting canvases
    pub count_concepts: usize,
    /// canvases per concept, count and variant
    pub count_images: usize,
    /// concepts whose names are rendered as text
    pub text_concepts: usize,
}

/// One probe's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub name: String,
    pub group: String,
    pub classes: usize,
    pub chance: f64,
    pub zero_shot: Rate,
    /// the linear probe on this model's image features
    pub linear_probe: Option<Rate>,
    /// other reference points, by name
    pub baselines: BTreeMap<String, Rate>,
    pub note: String,
}

/// One limitation's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub group: String,
    pub paper: String,
    pub ours: String,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub probes: Vec<Probe>,
    pub verdicts: Vec<Verdict>,
    pub grids: Vec<String>,
    pub skipped: Vec<String>,
}

const COUNT_WORDS: [&str; 6] = ["one", "two", "three", "four", "five", "six"];
/// Subcategories that are themselves about digits, counts, text or flags: never drawn as
/// counting objects, random controls or rendered names.
const SPECIAL: [&str; 6] = [
    "keycap",
    "alphanum",
    "family",
    "country-flag",
    "subdivision-flag",
    "time",
];

use crate::embed_images as features;

/// Zero-shot predictions of `f` among `classes`.
fn zero_shot(
    emb: &Embedder,
    f: &Features,
    classes: &[String],
    templates: &[String],
) -> Result<Vec<usize>, EvalError> {
    let c = emb.classifier(classes, templates)?;
    Ok(argmax_rows(&c.scores(&f.data, f.len()), classes.len()))
}

fn hits(pred: &[usize], truth: &[usize]) -> Vec<bool> {
    pred.iter().zip(truth).map(|(a, b)| a == b).collect()
}

/// Correctness on `test` of a probe fitted on `train` (C searched on a seeded half).
fn probe_on(
    train: &Features,
    test: &Features,
    classes: usize,
    seed: u64,
) -> Result<Vec<bool>, EvalError> {
    let p = fit_probe(
        train,
        classes,
        0.5,
        seed,
        None,
        FitOptions::default(),
        |_| {},
    )?;
    Ok(hits(&p.model.predict(&test.data, test.len()), &test.labels))
}

/// A probe over folds: each fold's items are tested by a probe fitted on the other folds'.
fn probe_folds(
    f: &Features,
    folds: &[usize],
    classes: usize,
    seed: u64,
) -> Result<Option<Rate>, EvalError> {
    let mut ids: Vec<usize> = folds.to_vec();
    ids.sort();
    ids.dedup();
    if ids.len() < 2 {
        return Ok(None);
    }
    let mut all = Vec::new();
    for &k in &ids {
        let (test, train): (Vec<usize>, Vec<usize>) = (0..f.len()).partition(|&i| folds[i] == k);
        all.extend(probe_on(
            &f.subset(&train),
            &f.subset(&test),
            classes,
            seed,
        )?);
    }
    Ok(Some(Rate::of(&all)))
}

/// Up to `n` tiles spread over `images`.
fn tiles(images: &[Rgb8], correct: &[bool], n: usize) -> Vec<Tile> {
    let step = images.len().div_ceil(n.max(1)).max(1);
    (0..images.len())
        .step_by(step)
        .map(|i| Tile {
            image: images[i].clone(),
            frame: frame(correct[i]),
        })
        .collect()
}

/// scikit-learn's digits file (`digits.csv.gz` or unpacked): 65 numbers per line, 64 pixel
/// values 0–16 then the label 0–9.
struct Task {
    images: Vec<Rgb8>,
    correct: Vec<bool>,
    f: Features,
    folds: Vec<usize>,
}

/// The run's shared state.
struct Ctx<'a> {
    emb: &'a Embedder,
    o: &'a LimitsOptions,
    imp: Import,
    size: usize,
    probes: Vec<Probe>,
    verdicts: Vec<Verdict>,
    grids: Vec<String>,
    skipped: Vec<String>,
    say: &'a mut dyn FnMut(String),
}

impl Ctx<'_> {
    fn grid(&mut self, name: &str, tiles: Vec<Tile>) -> Result<(), EvalError> {
        let file = format!("grid_{name}.png");
        if crate::grid::save(&tiles, 8, self.size.clamp(32, 96), &self.o.out.join(&file))? {
            self.grids.push(file);
        }
        Ok(())
    }

    fn style_of(&self, r: &Row) -> usize {
        self.imp
            .styles
            .iter()
            .position(|s| *s == r.style)
            .unwrap_or(0)
    }

    /// Concepts that may serve as counting objects, random controls or rendered names.
    fn ordinary(&self, trained_only: bool) -> Vec<String> {
        let mut v: Vec<String> = self
            .imp
            .rows
            .iter()
            .filter(|r| r.tone == "default" && (r.trained || !trained_only))
            .filter(|r| !SPECIAL.contains(&r.subcategory.as_str()))
            .map(|r| r.concept.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn log(&mut self, p: &Probe) {
        let probe = p
            .linear_probe
            .map(|r| format!(", linear probe {}", r.show()))
            .unwrap_or_default();
        (self.say)(format!(
            "{}: zero-shot {} (chance {:.1}%){probe}",
            p.name,
            p.zero_shot.show(),
            p.chance * 100.0
        ));
    }

    fn push(&mut self, p: Probe) {
        self.log(&p);
        self.probes.push(p);
    }

    /// Zero-shot among `concepts` on their default-tone images in every style, the probe that
    /// holds out one style at a time, and the same for as many random ordinary concepts.
    fn group(
        &mut self,
        name: &str,
        group: &str,
        concepts: &[String],
        rng: &mut Rng,
    ) -> Result<Option<(Probe, Task)>, EvalError> {
        if concepts.len() < 2 {
            self.skipped.push(format!(
                "{name}: the import has {} such concept(s); 2 or more are needed",
                concepts.len()
            ));
            return Ok(None);
        }
        let task = self.concept_task(name, concepts)?;
        let (zs, f, folds) = (&task.correct, &task.f, &task.folds);
        let linear = probe_folds(f, folds, concepts.len(), self.o.seed)?;
        // the control: as many random ordinary concepts, each as trained (or held out) as the
        // group concept it stands for
        let trained: HashSet<&str> = self
            .imp
            .rows
            .iter()
            .filter(|r| r.trained)
            .map(|r| r.concept.as_str())
            .collect();
        let (mut seen, mut held): (Vec<String>, Vec<String>) = self
            .ordinary(false)
            .into_iter()
            .filter(|c| !concepts.contains(c))
            .partition(|c| trained.contains(c.as_str()));
        shuffle(&mut seen, rng);
        shuffle(&mut held, rng);
        let mut pool = Vec::new();
        for c in concepts {
            let from = if trained.contains(c.as_str()) {
                &mut seen
            } else {
                &mut held
            };
            if let Some(x) = from.pop() {
                pool.push(x);
            }
        }
        let mut baselines = BTreeMap::new();
        if pool.len() == concepts.len() {
            let control = self.concept_task(&format!("{name} control"), &pool)?;
            let (czs, cf, cfolds) = (&control.correct, &control.f, &control.folds);
            baselines.insert(
                format!(
                    "zero-shot on {} random other concepts (as many trained)",
                    pool.len()
                ),
                Rate::of(czs),
            );
            if let Some(r) = probe_folds(cf, cfolds, pool.len(), self.o.seed)? {
                baselines.insert("linear probe on the random concepts".into(), r);
            }
        }
        let p = Probe {
            name: name.into(),
            group: group.into(),
            classes: concepts.len(),
            chance: 1.0 / concepts.len() as f64,
            zero_shot: Rate::of(zs),
            linear_probe: linear,
            baselines,
            note: format!(
                "{} concepts × {} styles; the probe holds out one style at a time",
                concepts.len(),
                self.imp.styles.len()
            ),
        };
        Ok(Some((p, task)))
    }

    /// The default-tone images of `concepts` in every style, zero-shot among them.
    fn concept_task(&self, name: &str, concepts: &[String]) -> Result<Task, EvalError> {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        let mut folds = Vec::new();
        for (k, c) in concepts.iter().enumerate() {
            for r in self.imp.images_of(c) {
                images.push(r.load()?);
                labels.push(k);
                folds.push(self.style_of(r));
            }
        }
        let f = features(self.emb, name, images.clone(), labels.clone())?;
        let pred = zero_shot(self.emb, &f, concepts, &self.o.templates)?;
        Ok(Task {
            correct: hits(&pred, &labels),
            images,
            f,
            folds,
        })
    }
}

/// Run every probe; writes `limits.json`, `report.md` and the grids into `o.out`.
pub fn run(
    emb: &Embedder,
    o: &LimitsOptions,
    say: &mut dyn FnMut(String),
) -> Result<Limits, EvalError> {
    crate::check_templates(&o.templates)?;
    let imp = Import::read(&o.emoji)?;
    let digits = o.digits.as_deref().map(read_digits).transpose()?;
    crate::prepare_out(&o.out, "limits.json", "clip inside limits report")?;
    let mut cx = Ctx {
        emb,
        o,
        imp,
        size: emb.preprocess.size,
        probes: Vec::new(),
        verdicts: Vec::new(),
        grids: Vec::new(),
        skipped: Vec::new(),
        say,
    };
    let mut rng = Rng::new(o.seed);
    match &digits {
        Some(d) => digits::digits_probe(&mut cx, d)?,
        None => cx
            .skipped
            .push("handwritten digits: no --digits file (scikit-learn's digits.csv.gz)".into()),
    }
    counting::counting(&mut cx, &mut rng)?;
    groups::fine_grained(&mut cx, &mut rng)?;
    groups::abstract_tasks(&mut cx, &mut rng)?;
    groups::rendered_text(&mut cx, &mut rng)?;
    let r = Limits {
        probes: cx.probes,
        verdicts: cx.verdicts,
        grids: cx.grids,
        skipped: cx.skipped,
    };
    let doc = serde_json::json!({
        "model": emb.fingerprint,
        "emoji": o.emoji.display().to_string(),
        "styles": Import::read(&o.emoji)?.styles,
        "templates": o.templates,
        "seed": o.seed,
        "probes": r.probes,
        "verdicts": r.verdicts,
        "grids": r.grids,
        "skipped": r.skipped,
    });
    clip_data::out::write_file(&o.out.join("report.md"), report(&r).as_bytes())?;
    clip_eval::error::write_json(&o.out, "limits.json", &doc)?;
    Ok(r)
}

fn report(r: &Limits) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Limitations (paper §6) at emoji scale\n\nEvery share has a Wilson 95% interval; chance is the share a uniform guess gets.\n\n",
    );
    s += "| probe | classes | chance | zero-shot | linear probe | other |\n|---|---|---|---|---|---|\n";
    for p in &r.probes {
        let other = p
            .baselines
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.show()))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            s,
            "| {} | {} | {:.1}% | {} | {} | {} |",
            p.name,
            p.classes,
            p.chance * 100.0,
            p.zero_shot.show(),
            p.linear_probe
                .map(|r| r.show())
                .unwrap_or_else(|| "–".into()),
            other
        );
    }
    s += "\n## Verdicts\n\n";
    for v in &r.verdicts {
        let _ = writeln!(
            s,
            "- **{}** — paper: {}. Ours: {}. → {}",
            v.group, v.paper, v.ours, v.verdict
        );
    }
    s += "\n## Notes\n\n";
    for p in &r.probes {
        let _ = writeln!(s, "- {}: {}", p.name, p.note);
    }
    for k in &r.skipped {
        let _ = writeln!(s, "- skipped — {k}");
    }
    s += "\n## Grids\n\nGreen frames: zero-shot right; red: wrong.\n\n";
    for g in &r.grids {
        let _ = writeln!(s, "![{g}]({g})");
    }
    s
}
