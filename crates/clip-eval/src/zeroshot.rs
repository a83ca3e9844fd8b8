//! The zero-shot protocol: a class list, prompt sets compared side by side (bare class name, one
//! template, the ensemble — or several named sets), top-1, top-5, mean per-class recall and the
//! confusion matrix; classifiers can be saved and reused. Building and scoring the classifier is
//! the pipeline's ([`clip_embed::zeroshot`]).

use std::path::{Path, PathBuf};

use clip_data::dataset::EvalSet;
use clip_embed::{Classifier, Embedder, Features, templates};
use serde::Serialize;

use crate::error::{EvalError, write_json};
use crate::metrics;

/// One compared prompt set.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub name: String,
    pub templates: Vec<String>,
}

/// The prompt sets to compare for `--templates` values: the bare class name first; then, for one
/// set, its first template alone and the whole ensemble; for several sets, each set.
pub fn prompt_rows(specs: &[String]) -> Result<Vec<PromptRow>, EvalError> {
    let mut rows = vec![PromptRow {
        name: "class name only".into(),
        templates: vec!["{}".into()],
    }];
    let sets: Vec<(String, Vec<String>)> = specs
        .iter()
        .map(|s| Ok((s.clone(), templates::templates(s)?)))
        .collect::<Result<_, EvalError>>()?;
    if let [(name, t)] = sets.as_slice()
        && t.len() > 1
    {
        rows.push(PromptRow {
            name: format!("single template {:?}", t[0]),
            templates: vec![t[0].clone()],
        });
        rows.push(PromptRow {
            name: format!("ensemble '{name}' ({} templates)", t.len()),
            templates: t.clone(),
        });
    } else {
        for (name, t) in sets {
            let plural = if t.len() == 1 { "" } else { "s" };
            rows.push(PromptRow {
                name: format!("'{name}' ({} template{plural})", t.len()),
                templates: t,
            });
        }
    }
    rows.dedup_by(|a, b| a.templates == b.templates);
    Ok(rows)
}

/// Zero-shot results of one classifier on features.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class_recall: f64,
    /// `[true][predicted]` counts
    pub confusion: Vec<Vec<u64>>,
}

/// Score `f` with `classifier` and measure.
pub fn metrics(f: &Features, classifier: &Classifier) -> Metrics {
    let c = classifier.len();
    let s = classifier.scores(&f.data, f.len());
    let r = metrics::ranks(&s, c, &f.labels);
    let cm = metrics::confusion(&crate::logreg::argmax_rows(&s, c), &f.labels, c);
    Metrics {
        top1: metrics::top_k(&r, 1),
        top5: metrics::top_k(&r, 5),
        mean_per_class_recall: metrics::mean_per_class_recall(&cm),
        confusion: cm,
    }
}

/// Whether each row's top-1 prediction is its label.
pub fn correct(f: &Features, classifier: &Classifier) -> Vec<bool> {
    let s = classifier.scores(&f.data, f.len());
    metrics::ranks(&s, classifier.len(), &f.labels)
        .iter()
        .map(|&r| r == 0)
        .collect()
}

/// Top-1 accuracy of `classifier` on `f`.
pub fn top1(f: &Features, classifier: &Classifier) -> f64 {
    let s = classifier.scores(&f.data, f.len());
    metrics::top_k(&metrics::ranks(&s, classifier.len(), &f.labels), 1)
}

/// One line of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub prompts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<usize>,
    pub top1: f64,
    pub top5: f64,
    pub mean_per_class_recall: f64,
}

/// The whole zero-shot evaluation of one set.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub data: String,
    pub images: usize,
    pub classes: usize,
    pub model: String,
    pub rows: Vec<Row>,
    pub chance_top1: f64,
    pub chance_top5: f64,
    /// the last compared classifier and its metrics
    #[serde(skip)]
    pub last: Option<(Classifier, Metrics)>,
    #[serde(skip)]
    pub class_names: Vec<String>,
}

/// Where the classifier comes from.
#[derive(Debug, Clone)]
pub enum Prompts {
    /// template set names or files, compared as [`prompt_rows`] says
    Templates(Vec<String>),
    /// a classifier saved with [`Classifier::save`]
    Saved(PathBuf),
}

/// Run the protocol on `set`; save the last classifier to `save` when given.
pub fn evaluate(
    emb: &Embedder,
    set: &EvalSet,
    prompts: &Prompts,
    save: Option<&Path>,
) -> Result<Report, EvalError> {
    let rows = match prompts {
        Prompts::Templates(specs) => prompt_rows(specs)?,
        Prompts::Saved(_) => Vec::new(),
    };
    let feats = emb.features(set)?;
    let c = set.class_names.len();
    let mut report = Report {
        data: set.name.clone(),
        images: set.len(),
        classes: c,
        model: emb.fingerprint.clone(),
        rows: Vec::new(),
        chance_top1: 1.0 / c as f64,
        chance_top5: 5f64.min(c as f64) / c as f64,
        last: None,
        class_names: set.class_names.clone(),
    };
    let mut add = |name: String, templates: Option<usize>, w: Classifier| {
        let m = metrics(&feats, &w);
        report.rows.push(Row {
            prompts: name,
            templates,
            top1: m.top1,
            top5: m.top5,
            mean_per_class_recall: m.mean_per_class_recall,
        });
        report.last = Some((w, m));
    };
    if let Prompts::Saved(path) = prompts {
        let w = Classifier::load(path, &emb.fingerprint, &set.class_names, emb.dim())?;
        add(format!("saved classifier {}", path.display()), None, w);
    }
    for row in rows {
        let w = emb.classifier(&set.class_names, &row.templates)?;
        add(row.name, Some(row.templates.len()), w);
    }
    if let (Some(p), Some((w, _))) = (save, &report.last) {
        w.save(p, &emb.fingerprint)?;
    }
    Ok(report)
}

impl Report {
    /// `zeroshot.json`, `confusion.csv`, `per_class.csv` and `confusion.png` in `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), EvalError> {
        write_json(dir, "zeroshot.json", self)?;
        let Some((_, m)) = &self.last else {
            return Ok(());
        };
        let names = &self.class_names;
        let header: Vec<&str> = std::iter::once("true\\predicted")
            .chain(names.iter().map(String::as_str))
            .collect();
        let rows = m.confusion.iter().enumerate().map(|(i, row)| {
            std::iter::once(names[i].clone())
                .chain(row.iter().map(u64::to_string))
                .collect::<Vec<_>>()
        });
        clip_data::out::write_csv(&dir.join("confusion.csv"), &header, rows)?;
        let recall = metrics::per_class_recall(&m.confusion);
        let per = m.confusion.iter().enumerate().map(|(i, row)| {
            vec![
                names[i].clone(),
                row.iter().sum::<u64>().to_string(),
                recall[i].map_or(String::new(), |r| format!("{r:.4}")),
            ]
        });
        clip_data::out::write_csv(
            &dir.join("per_class.csv"),
            &["class", "images", "recall"],
            per,
        )?;
        clip_data::chart::save_heatmap(
            &m.confusion,
            &format!("zero-shot confusion ({} classes)", self.classes),
            &dir.join("confusion.png"),
        )?;
        Ok(())
    }
}
