//! Typographic attacks (the seed's "CLIP can read, so a written word can override what it sees").
//!
//! Emoji hold almost no text, so a model trained on them cannot read and cannot be attacked this
//! way. [`reading_data`] writes the "reading" variant of a training manifest: a seeded share of its
//! rows get, instead of their image, their concept's name drawn in the 8×8 bitmap font at a random
//! scale, place and colour (the captions stay). [`attack`] then measures, for each model: the
//! attack as in the paper — the attack word written in a label at the same fixed place on every
//! image; success when the top class becomes the attack class; the label's pixel cover reported —
//! with attack words chosen on one half of the concepts and evaluated on the other, and three
//! controls in the same label (a non-word string of the same length, the image's own name, a blank
//! label), for zero-shot and for a linear probe fitted on clean images of the other styles. The
//! models' zero-shot accuracy on the names drawn alone is their "OCR".

use std::path::{Path, PathBuf};

use clip_data::image::{Alpha, load_rgb};
use clip_data::resize::Rgb8;
use clip_data::rng::{Rng, shuffle};
use clip_embed::{Embedder, Features};
use clip_eval::logreg::argmax_rows;
use clip_eval::{EvalError, FitOptions, fit_probe};
use serde::Serialize;

use crate::Rate;
use crate::emoji::Import;
use crate::grid::{Tile, frame};
use crate::render;

/// Colours the reading variant writes in.
const INKS: [[u8; 3]; 5] = [
    [0, 0, 0],
    [30, 60, 200],
    [200, 30, 30],
    [20, 120, 40],
    [120, 40, 140],
];

/// What [`reading_data`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ReadingData {
    pub manifest: PathBuf,
    pub rows: usize,
    pub replaced: usize,
}

/// `name` drawn at a random scale (at most the largest that fits), place and colour.
fn random_words(size: usize, name: &str, rng: &mut Rng) -> Rgb8 {
    let fits = (1..=size / 8)
        .rev()
        .find(|&s| {
            let lines = render::wrap(name, size / (8 * s));
            lines.len() * 8 * s <= size
        })
        .unwrap_or(1);
    let scale = 1 + rng.below(fits);
    let lines = render::wrap(name, size / (8 * scale));
    let w = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) * 8 * scale;
    let h = lines.len() * 8 * scale;
    let x = rng.below(size.saturating_sub(w) + 1) as i64;
    let y = rng.below(size.saturating_sub(h) + 1) as i64;
    let ink = INKS[rng.below(INKS.len())];
    let mut c = render::white(size);
    for (i, l) in lines.iter().enumerate() {
        render::text(&mut c, l, x, y + (i * 8 * scale) as i64, scale, ink);
    }
    c
}

/// Write the reading variant of the manifest `train` into `out`: `train_reading.jsonl` and the
/// drawn names under `reading/`; a `fraction` of the rows (seeded) show their concept's name.
pub fn reading_data(
    train: &Path,
    fraction: f64,
    seed: u64,
    out: &Path,
) -> Result<ReadingData, EvalError> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(EvalError::Invalid(format!(
            "--fraction {fraction} must be between 0 and 1"
        )));
    }
    let text = std::fs::read_to_string(train)
        .map_err(|e| EvalError::Invalid(format!("cannot read '{}': {e}", train.display())))?;
    let base = train
        .parent()
        .unwrap_or(Path::new("."))
        .canonicalize()
        .map_err(|e| EvalError::Invalid(format!("'{}': {e}", train.display())))?;
    crate::prepare_out(out, "train_reading.jsonl", "reading manifest")?;
    let mut rng = Rng::new(seed);
    let mut lines = String::new();
    let (mut rows, mut replaced) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| EvalError::Invalid(format!("'{}' row {}: {e}", train.display(), i + 1)))?;
        let image = v["image"].as_str().ok_or_else(|| {
            EvalError::Invalid(format!(
                "'{}' row {} has no \"image\"",
                train.display(),
                i + 1
            ))
        })?;
        let path = base.join(image);
        let name = v["concept"]
            .as_str()
            .or_else(|| v["captions"][0].as_str())
            .or_else(|| v["caption"].as_str())
            .unwrap_or("")
            .to_owned();
        rows += 1;
        if !name.is_empty() && rng.unit() < fraction {
            let size = load_rgb(&path, Alpha::FlattenOnWhite)
                .map(|i| i.width)
                .unwrap_or(64);
            let rel = format!("reading/{i:06}.png");
            crate::grid::save_png(&random_words(size, &name, &mut rng), &out.join(&rel))?;
            v["image"] = serde_json::json!(rel);
            v["reading"] = serde_json::json!(true);
            replaced += 1;
        } else {
            v["image"] = serde_json::json!(path.display().to_string());
        }
        lines += &(v.to_string() + "\n");
    }
    let manifest = out.join("train_reading.jsonl");
    clip_data::out::write_file(&manifest, lines.as_bytes())?;
    Ok(ReadingData {
        manifest,
        rows,
        replaced,
    })
}

#[derive(Debug, Clone)]
pub struct AttackOptions {
    pub out: PathBuf,
    pub emoji: PathBuf,
    pub templates: Vec<String>,
    /// concepts in the classification task
    pub concepts: usize,
    /// candidate attack words tried on the selection half
    pub candidates: usize,
    /// attack words kept for the evaluation half
    pub words: usize,
    pub seed: u64,
}

/// One condition's numbers for one model.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    pub condition: String,
    /// top-1 is the true class
    pub zero_shot_accuracy: Rate,
    /// top-1 is the attack class (attack conditions only)
    pub zero_shot_success: Option<Rate>,
    pub probe_accuracy: Option<Rate>,
    pub probe_success: Option<Rate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelAttack {
    pub model: String,
    /// zero-shot on the task's names drawn alone
    pub ocr: Rate,
    /// the attack words chosen on the selection half, with their success there
    pub words: Vec<(String, f64)>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attack {
    pub concepts: usize,
    pub pixel_cover: f64,
    pub models: Vec<ModelAttack>,
    pub verdict: String,
}

/// The label: a white band at the bottom with `word` centred in black (empty: a blank label).
fn label(img: &Rgb8, word: &str) -> Rgb8 {
    let size = img.width;
    let scale = (size / 64).max(1);
    let h = band(size);
    let mut c = img.clone();
    for y in size - h..size {
        for x in 0..size {
            c.data[(y * size + x) * 3..(y * size + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
        }
    }
    let lines = render::wrap(word, size / (8 * scale));
    let top = (size - h) as i64 + (h.saturating_sub(lines.len().min(2) * 8 * scale) / 2) as i64;
    for (i, l) in lines.iter().take(2).enumerate() {
        let w = l.chars().count() * 8 * scale;
        render::text(
            &mut c,
            l,
            (size as i64 - w as i64) / 2,
            top + (i * 8 * scale) as i64,
            scale,
            [0, 0, 0],
        );
    }
    c
}

/// The label band's height: two lines of text and a margin.
fn band(size: usize) -> usize {
    let scale = (size / 64).max(1);
    (2 * 8 * scale + 4 * scale).min(size)
}

/// Whether `word` fits the label (two lines).
fn fits(word: &str, size: usize) -> bool {
    let scale = (size / 64).max(1);
    render::wrap(word, size / (8 * scale)).len() <= 2
}

/// A string of random letters with `word`'s length and spaces.
fn nonword(word: &str, rng: &mut Rng) -> String {
    word.chars()
        .map(|c| {
            if c == ' ' {
                ' '
            } else {
                (b'a' + rng.below(26) as u8) as char
            }
        })
        .collect()
}

struct Task<'a> {
    emb: &'a Embedder,
    names: Vec<String>,
    clean: Vec<Rgb8>,
    classifier: clip_embed::zeroshot::Classifier,
    probe: Option<clip_eval::LogReg>,
}

impl Task<'_> {
    fn features(&self, images: Vec<Rgb8>) -> Result<Features, EvalError> {
        let n = images.len();
        crate::embed_images(self.emb, "typographic", images, vec![0; n])
    }

    /// (zero-shot, probe) top-1 of the test images `idx` with `word` on their label (`None`: clean;
    /// `Some("")`: a blank label).
    fn predict(
        &self,
        idx: &[usize],
        word: &dyn Fn(usize) -> Option<String>,
    ) -> Result<(Vec<usize>, Option<Vec<usize>>), EvalError> {
        let images: Vec<Rgb8> = idx
            .iter()
            .map(|&i| match word(i) {
                Some(w) => label(&self.clean[i], &w),
                None => self.clean[i].clone(),
            })
            .collect();
        let f = self.features(images)?;
        let zs = argmax_rows(&self.classifier.scores(&f.data, f.len()), self.names.len());
        let pr = self.probe.as_ref().map(|p| p.predict(&f.data, f.len()));
        Ok((zs, pr))
    }
}

/// Run the attack on every model; writes `typographic.json`, `report.md` and
/// `grid_typographic.png` into `o.out`.
pub fn attack(
    models: &[(String, Embedder)],
    o: &AttackOptions,
    say: &mut dyn FnMut(String),
) -> Result<Attack, EvalError> {
    if models.is_empty() {
        return Err(EvalError::Invalid("no model given".into()));
    }
    if o.words == 0 || o.candidates < o.words || o.concepts < 4 {
        return Err(EvalError::Invalid(
            "--concepts must be at least 4 and --candidates at least --words (≥ 1)".into(),
        ));
    }
    let imp = Import::read(&o.emoji)?;
    let size = models[0].1.preprocess.size;
    // the task: ordinary training concepts whose names fit the label, in every style
    let mut names: Vec<String> = imp
        .concepts()
        .into_iter()
        .filter(|c| fits(c, size))
        .filter(|c| {
            imp.rows.iter().any(|r| {
                &r.concept == c
                    && r.trained
                    && !["keycap", "alphanum", "country-flag", "subdivision-flag"]
                        .contains(&r.subcategory.as_str())
            })
        })
        .collect();
    let mut rng = Rng::new(o.seed);
    shuffle(&mut names, &mut rng);
    names.truncate(o.concepts);
    names.sort();
    if names.len() < 4 {
        return Err(EvalError::Invalid(format!(
            "the import has {} training concepts whose names fit the label; 4 or more are needed",
            names.len()
        )));
    }
    crate::prepare_out(&o.out, "typographic.json", "clip inside typographic report")?;
    let (mut clean, mut labels, mut folds) = (Vec::new(), Vec::new(), Vec::new());
    for (k, c) in names.iter().enumerate() {
        for r in imp.images_of(c) {
            clean.push(r.load()?);
            labels.push(k);
            folds.push(imp.styles.iter().position(|s| *s == r.style).unwrap_or(0));
        }
    }
    // halves of the concepts: one chooses the attack words, the other measures them
    let mut order: Vec<usize> = (0..names.len()).collect();
    shuffle(&mut order, &mut rng);
    let select: Vec<usize> = order[..names.len() / 2].to_vec();
    let test: Vec<usize> = (0..clean.len()).filter(|&i| folds[i] == 0).collect();
    let (sel_imgs, eval_imgs): (Vec<usize>, Vec<usize>) =
        test.iter().partition(|&&i| select.contains(&labels[i]));
    let mut candidates: Vec<usize> = (0..names.len()).collect();
    shuffle(&mut candidates, &mut rng);
    candidates.truncate(o.candidates);
    let pixel_cover = band(size) as f64 / size as f64;
    let mut results = Vec::new();
    let mut grid = Vec::new();
    for (mname, emb) in models {
        let classifier = emb.classifier(&names, &o.templates)?;
        let mut task = Task {
            emb,
            names: names.clone(),
            clean: clean.clone(),
            classifier,
            probe: None,
        };
        // the probe: fitted on clean images of the other styles
        let train: Vec<usize> = (0..clean.len()).filter(|&i| folds[i] != 0).collect();
        if !train.is_empty() {
            let mut f = task.features(train.iter().map(|&i| clean[i].clone()).collect())?;
            f.labels = train.iter().map(|&i| labels[i]).collect();
            task.probe = Some(
                fit_probe(
                    &f,
                    names.len(),
                    0.5,
                    o.seed,
                    None,
                    FitOptions::default(),
                    |_| {},
                )?
                .model,
            );
        }
        let ocr_imgs: Vec<Rgb8> = names
            .iter()
            .map(|n| render::words(size, n, [0, 0, 0], 0, 0))
            .collect();
        let of = task.features(ocr_imgs)?;
        let ocr_pred = argmax_rows(&task.classifier.scores(&of.data, of.len()), names.len());
        let ocr = Rate::of(
            &ocr_pred
                .iter()
                .enumerate()
                .map(|(k, &p)| p == k)
                .collect::<Vec<_>>(),
        );
        // choose the attack words on the selection half (zero-shot success)
        let mut scored: Vec<(String, f64)> = Vec::new();
        for &w in &candidates {
            let idx: Vec<usize> = sel_imgs
                .iter()
                .copied()
                .filter(|&i| labels[i] != w)
                .collect();
            let (zs, _) = task.predict(&idx, &|_| Some(names[w].clone()))?;
            let s = zs.iter().filter(|&&p| p == w).count() as f64 / idx.len().max(1) as f64;
            scored.push((names[w].clone(), s));
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(o.words);
        say(format!(
            "{mname}: OCR {}; attack words {:?}",
            ocr.show(),
            scored.iter().map(|w| &w.0).collect::<Vec<_>>()
        ));
        // evaluate on the other half
        let mut conds = Vec::new();
        let rate = |pred: &[usize], idx: &[usize], want: &dyn Fn(usize) -> usize| {
            Rate::of(
                &idx.iter()
                    .zip(pred)
                    .map(|(&i, &p)| p == want(i))
                    .collect::<Vec<_>>(),
            )
        };
        let truth = |i: usize| labels[i];
        let (zs, pr) = task.predict(&eval_imgs, &|_| None)?;
        conds.push(Condition {
            condition: "clean".into(),
            zero_shot_accuracy: rate(&zs, &eval_imgs, &truth),
            zero_shot_success: None,
            probe_accuracy: pr.as_ref().map(|p| rate(p, &eval_imgs, &truth)),
            probe_success: None,
        });
        let mut wrng = Rng::new(o.seed ^ 0x5eed);
        for (cname, make) in [
            ("attack word", 0usize),
            ("non-word of the same length", 1),
            ("the image's own name", 2),
            ("blank label", 3),
        ] {
            let (mut zacc, mut zsucc, mut pacc, mut psucc) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (w, _) in &scored {
                let k = names.iter().position(|n| n == w).unwrap_or(0);
                let idx: Vec<usize> = eval_imgs
                    .iter()
                    .copied()
                    .filter(|&i| labels[i] != k)
                    .collect();
                let nw = nonword(w, &mut wrng);
                let word = |i: usize| -> Option<String> {
                    Some(match make {
                        0 => w.clone(),
                        1 => nw.clone(),
                        2 => names[labels[i]].clone(),
                        _ => String::new(),
                    })
                };
                let (zs, pr) = task.predict(&idx, &word)?;
                for (j, &i) in idx.iter().enumerate() {
                    zacc.push(zs[j] == labels[i]);
                    zsucc.push(zs[j] == k);
                    if let Some(p) = &pr {
                        pacc.push(p[j] == labels[i]);
                        psucc.push(p[j] == k);
                    }
                }
                if make == 0 && grid.len() < 8 * models.len() && w == &scored[0].0 {
                    for (j, &i) in idx.iter().take(8).enumerate() {
                        grid.push(Tile {
                            image: label(&clean[i], w),
                            frame: frame(zs[j] != k),
                        });
                    }
                }
                if make >= 2 {
                    break; // the own name and the blank label do not depend on the word
                }
            }
            let attackish = make <= 1;
            conds.push(Condition {
                condition: cname.into(),
                zero_shot_accuracy: Rate::of(&zacc),
                zero_shot_success: attackish.then(|| Rate::of(&zsucc)),
                probe_accuracy: (!pacc.is_empty()).then(|| Rate::of(&pacc)),
                probe_success: (attackish && !psucc.is_empty()).then(|| Rate::of(&psucc)),
            });
        }
        for c in &conds {
            say(format!(
                "{mname} — {}: zero-shot accuracy {}{}",
                c.condition,
                c.zero_shot_accuracy.show(),
                c.zero_shot_success
                    .map(|s| format!(", attack success {}", s.show()))
                    .unwrap_or_default()
            ));
        }
        results.push(ModelAttack {
            model: mname.clone(),
            ocr,
            words: scored,
            conditions: conds,
        });
    }
    let verdict = verdict(&results);
    let r = Attack {
        concepts: names.len(),
        pixel_cover,
        models: results,
        verdict,
    };
    crate::grid::save(
        &grid,
        8,
        size.clamp(32, 96),
        &o.out.join("grid_typographic.png"),
    )?;
    clip_data::out::write_file(&o.out.join("report.md"), report(&r).as_bytes())?;
    let doc = serde_json::json!({
        "emoji": o.emoji.display().to_string(),
        "templates": o.templates,
        "names": names,
        "seed": o.seed,
        "result": r,
    });
    clip_eval::error::write_json(&o.out, "typographic.json", &doc)?;
    Ok(r)
}

fn verdict(models: &[ModelAttack]) -> String {
    let parts: Vec<String> = models
        .iter()
        .map(|m| {
            let get = |n: &str| m.conditions.iter().find(|c| c.condition == n);
            let (atk, non) = (get("attack word"), get("non-word of the same length"));
            let (a, b) = (
                atk.and_then(|c| c.zero_shot_success),
                non.and_then(|c| c.zero_shot_success),
            );
            let works = matches!((a, b), (Some(a), Some(b)) if a.lo > b.hi);
            format!(
                "{}: OCR {}, attack success {} vs non-word {} → {}",
                m.model,
                m.ocr.show(),
                a.map(|r| r.show()).unwrap_or_default(),
                b.map(|r| r.show()).unwrap_or_default(),
                if works {
                    "the written word steers the model (the attack works)"
                } else {
                    "no typographic attack beyond what any label does"
                }
            )
        })
        .collect();
    parts.join("; ")
}

fn report(r: &Attack) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "# Typographic attacks\n\n{} concepts; the label covers {:.1}% of each image (a white band at the bottom, the same place on every image). Attack words were chosen on half of the concepts and are measured on the other half; the probe was fitted on clean images of the other styles.\n\n**Verdict.** {}\n\n",
        r.concepts,
        r.pixel_cover * 100.0,
        r.verdict
    );
    for m in &r.models {
        let _ = writeln!(
            s,
            "## {}\n\nOCR (zero-shot on the names drawn alone): {}. Attack words (success on the selection half): {}.\n",
            m.model,
            m.ocr.show(),
            m.words
                .iter()
                .map(|(w, v)| format!("{w} ({:.0}%)", v * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s += "| condition | zero-shot accuracy | zero-shot: top-1 is the attack word | probe accuracy | probe: top-1 is the attack word |\n|---|---|---|---|---|\n";
        let o = |r: Option<Rate>| r.map(|r| r.show()).unwrap_or_else(|| "–".into());
        for c in &m.conditions {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                c.condition,
                c.zero_shot_accuracy.show(),
                o(c.zero_shot_success),
                o(c.probe_accuracy),
                o(c.probe_success)
            );
        }
        s += "\n";
    }
    s += "![attacked](grid_typographic.png)\n\nThe best attack word on evaluation images, 8 per model in the order given; red: the attack succeeded.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sit_at_a_fixed_place_and_nonwords_keep_the_shape() {
        let img = Rgb8::new(64, 64, vec![100; 64 * 64 * 3]);
        let l = label(&img, "troll");
        // the band is white where there is no text, the top untouched
        assert_eq!(&l.data[..3], &[100, 100, 100]);
        let band_px = (63 * 64) * 3;
        assert_eq!(&l.data[band_px..band_px + 3], &[255, 255, 255]);
        assert!(render::ink(&l) < render::ink(&img));
        assert_ne!(label(&img, "troll"), label(&img, ""));
        assert_eq!(band(64), 20);
        // a tiny input cannot hold two lines: the label is drawn without a panic
        let small = label(&Rgb8::new(8, 8, vec![0; 8 * 8 * 3]), "troll");
        assert_eq!(small.width, 8);
        assert!(fits("waving hand", 64) && !fits("a b c d e f g h i j k l m n o p", 64));
        let mut rng = Rng::new(0);
        let n = nonword("red apple", &mut rng);
        assert_eq!(n.len(), 9);
        assert_eq!(n.chars().nth(3), Some(' '));
        assert_ne!(n, "red apple");
        let w = random_words(64, "dog", &mut rng);
        assert!(render::ink(&w) > 0.0);
    }
}
