//! `clip inside neurons`: the units of a trained image tower and what they respond to (Goh et
//! al. 2021's "multimodal neurons", at emoji scale).
//!
//! **Units.** For a ViT, the MLP hidden units (after the activation) of the last blocks, read at
//! the class token and as the mean over all tokens; for a ResNet, the channels of the last stage's
//! last block, averaged over space (the paper's neurons).
//!
//! **Dataset examples.** Every default-tone image of every style in an emoji import is run once;
//! each unit's top and bottom images (9 by default) are kept, and a grid of the purest units is
//! drawn (top images framed green, bottom grey).
//!
//! **Concept purity.** Per unit, the share of its top images that show its modal concept, its modal
//! subcategory, and a concept seen in two or more styles among them (the same concept across art
//! styles: the emoji version of "responds to the concept, not the picture"). The same numbers for
//! a randomly initialised model of the same shape and for random directions in the trained
//! model's unit space say what the training added.
//!
//! **Text side** (ViT, class-token units). A unit's direct effect on the embedding: its output
//! weights (`c_proj`'s row, read by pushing the identity through the layer, so packed weights work
//! too) through the final LayerNorm linearised at the data's mean class-token state, then `proj`.
//! That direction is ranked against the text embeddings of every concept name, keyword and category
//! of the import's captions; hit@10 says whether one of its 10 nearest texts names a concept among
//! its top images, against random directions mapped the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use burn::prelude::*;
use clip_data::resize::Rgb8;
use clip_data::rng::Rng;
use clip_embed::Embedder;
use clip_eval::EvalError;
use clip_model::capture::Capture;
use clip_model::clip::VisualTower;
use clip_model::source::to_vec;
use serde::Serialize;

use crate::Rate;
use crate::emoji::{Import, Row};
use crate::grid::{PLAIN, RIGHT, Tile};

mod measure;
pub(crate) use measure::modal_concepts;
use measure::*;

#[derive(Debug, Clone)]
pub struct NeuronOptions {
    pub out: PathBuf,
    /// the folder written by `clip import-emoji`
    pub emoji: PathBuf,
    /// the last this many transformer blocks (ViT)
    pub blocks: usize,
    /// top and bottom images kept per unit
    pub top: usize,
    /// units drawn per grid
    pub show: usize,
    /// random directions per unit set (at most the units' count)
    pub directions: usize,
    /// units drawn first in every grid (each must exist in every unit set)
    pub units: Vec<usize>,
    pub seed: u64,
}

/// Mean purities of a set of units.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Purity {
    pub units: usize,
    /// mean share of the top images showing the modal concept, with a 95% normal interval
    pub concept: f64,
    pub concept_ci: f64,
    pub subcategory: f64,
    pub subcategory_ci: f64,
    /// mean share of the top images whose concept appears in ≥ 2 styles among them
    pub cross_style: f64,
    pub cross_style_ci: f64,
}

/// One unit's record.
#[derive(Debug, Clone, Serialize)]
pub struct Unit {
    pub index: usize,
    pub concept: f64,
    pub subcategory: f64,
    pub cross_style: f64,
    pub modal_concept: String,
    pub top: Vec<String>,
    pub bottom: Vec<String>,
    /// nearest texts of its direct effect (class-token units of a ViT)
    pub texts: Vec<String>,
}

/// One layer read one way.
#[derive(Debug, Clone, Serialize)]
pub struct UnitSet {
    pub name: String,
    pub trained: Purity,
    pub random_init: Purity,
    pub random_directions: Purity,
    /// text side: hit@10 of the units and of random directions
    pub text_hits: Option<Rate>,
    pub text_hits_random: Option<Rate>,
    pub grid: Option<String>,
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Neurons {
    pub images: usize,
    pub sets: Vec<UnitSet>,
    pub verdict: String,
}

/// Run the analysis with the trained model `emb` and a randomly initialised model of the same
/// shape (seeded by `o.seed`, open_clip's initialisation); writes `neurons.json`, `report.md` and
/// one grid per unit set into `o.out`.
pub fn run(
    emb: &Embedder,
    o: &NeuronOptions,
    say: &mut dyn FnMut(String),
) -> Result<Neurons, EvalError> {
    let twin = clip_model::clip::Clip::random(&emb.clip.config, o.seed, &emb.clip.device())
        .map_err(|e| EvalError::Invalid(format!("cannot build the random-init model: {e}")))?;
    let mut random = Embedder::new(twin, emb.batch);
    random.preprocess = emb.preprocess.clone();
    let random = &random;
    if o.top == 0 || o.show == 0 || o.directions == 0 {
        return Err(EvalError::Invalid(
            "--top, --show and --directions must be at least 1".into(),
        ));
    }
    let plan_t = plan(emb, o.blocks)?;
    let plan_r = plan(random, o.blocks)?;
    if plan_t.iter().map(|p| &p.0).ne(plan_r.iter().map(|p| &p.0)) {
        return Err(EvalError::Invalid(
            "the random-init model does not have the trained model's shape".into(),
        ));
    }
    let imp = Import::read(&o.emoji)?;
    let rows: Vec<&Row> = imp.rows.iter().filter(|r| r.tone == "default").collect();
    if rows.len() < o.top * 2 {
        return Err(EvalError::Invalid(format!(
            "the import has {} images; --top {} needs at least {}",
            rows.len(),
            o.top,
            2 * o.top
        )));
    }
    clip_data::out::check_output_dir(&o.out, "neurons.json", "clip inside neurons report")?;
    let images = crate::emoji::load_all(&rows)?;
    let last = match &emb.clip.module().visual {
        VisualTower::Vit(v) => Some(format!(
            "visual.transformer.resblocks.{}",
            v.transformer.resblocks.len() - 1
        )),
        _ => None,
    };
    say(format!(
        "{} images, {} unit sets",
        images.len(),
        plan_t.len()
    ));
    let acts = activations(emb, &images, &plan_t, last.clone());
    let racts = activations(random, &images, &plan_r, None);
    for (k, set) in plan_t.iter().enumerate() {
        if let Some(&bad) = o.units.iter().find(|&&j| j >= acts.units[k]) {
            return Err(EvalError::Invalid(format!(
                "--units: unit {bad} is out of range: {} has {} units (0–{})",
                set.2,
                acts.units[k],
                acts.units[k].saturating_sub(1)
            )));
        }
    }
    crate::prepare_out(&o.out, "neurons.json", "clip inside neurons report")?;
    // the text side: embeddings of every name, keyword and category
    // (only a ViT's class-token units have a direct, linearisable effect on the embedding)
    let texts = if last.is_some() {
        caption_texts(&imp)?
    } else {
        Vec::new()
    };
    let text_emb = if texts.is_empty() {
        Vec::new()
    } else {
        emb.embed_texts(&texts, true, false)?
    };
    let e = emb.dim();
    let concept_of_text: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut rng = Rng::new(o.seed);
    let mut sets = Vec::new();
    for (k, (capture, pool, name)) in plan_t.iter().enumerate() {
        let u = acts.units[k];
        let data = &acts.data[k];
        let block: Option<usize> = capture
            .strip_prefix("visual.transformer.resblocks.")
            .and_then(|s| s.strip_suffix(".mlp"))
            .and_then(|s| s.parse().ok());
        let effects = match (*pool, block, &acts.cls_mean) {
            ("cls", Some(b), Some(m)) => direct_effects(emb, b, m),
            _ => None,
        };
        let mut stats = Vec::new();
        let mut units = Vec::new();
        let mut hits = Vec::new();
        for j in 0..u {
            let col = column(data, u, j);
            let top = extremes(&col, o.top, true);
            let bottom = extremes(&col, o.top, false);
            let (c, s, x, modal) = purity(&rows, &top);
            stats.push((c, s, x));
            let near: Vec<String> = effects
                .as_ref()
                .map(|eff| {
                    nearest_texts(&text_emb, e, &eff[j], 10)
                        .into_iter()
                        .map(|t| texts[t].clone())
                        .collect()
                })
                .unwrap_or_default();
            if effects.is_some() {
                let shown: BTreeSet<&str> = top.iter().map(|&i| rows[i].concept.as_str()).collect();
                hits.push(near.iter().any(|t| shown.contains(t.as_str())));
            }
            units.push(Unit {
                index: j,
                concept: c,
                subcategory: s,
                cross_style: x,
                modal_concept: modal,
                top: top
                    .iter()
                    .map(|&i| format!("{} ({})", rows[i].concept, rows[i].style))
                    .collect(),
                bottom: bottom
                    .iter()
                    .map(|&i| format!("{} ({})", rows[i].concept, rows[i].style))
                    .collect(),
                texts: near,
            });
        }
        let rstats: Vec<(f64, f64, f64)> = (0..racts.units[k])
            .map(|j| {
                let top = extremes(&column(&racts.data[k], racts.units[k], j), o.top, true);
                let (c, s, x, _) = purity(&rows, &top);
                (c, s, x)
            })
            .collect();
        let dirs = directions(o.directions.min(u), u, &mut rng);
        let mut dstats = Vec::new();
        let mut dhits = Vec::new();
        for d in &dirs {
            let top = extremes(&project(data, u, d), o.top, true);
            let (c, s, x, _) = purity(&rows, &top);
            dstats.push((c, s, x));
            if let Some(eff) = &effects {
                let mut w = vec![0f32; e];
                for (j, dj) in d.iter().enumerate() {
                    w.iter_mut().zip(&eff[j]).for_each(|(a, b)| *a += dj * b);
                }
                let shown: BTreeSet<&str> = top.iter().map(|&i| rows[i].concept.as_str()).collect();
                dhits.push(
                    nearest_texts(&text_emb, e, &w, 10)
                        .iter()
                        .any(|&t| shown.contains(concept_of_text[t])),
                );
            }
        }
        // the grid: the purest units, top images (green) then bottom images (grey)
        let mut order: Vec<usize> = (0..u).collect();
        order.sort_by(|&a, &b| {
            (stats[b].0, stats[b].1)
                .partial_cmp(&(stats[a].0, stats[a].1))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut tiles = Vec::new();
        let drawn: Vec<usize> = o
            .units
            .iter()
            .copied()
            .chain(
                order
                    .iter()
                    .copied()
                    .filter(|j| !o.units.contains(j))
                    .take(o.show),
            )
            .collect();
        for &j in &drawn {
            let col = column(data, u, j);
            for (idx, frame) in [
                (extremes(&col, o.top, true), RIGHT),
                (extremes(&col, o.top, false), PLAIN),
            ] {
                tiles.extend(idx.into_iter().map(|i| Tile {
                    image: images[i].clone(),
                    frame,
                }));
            }
        }
        let file = format!(
            "grid_{}.png",
            name.replace([' ', ','], "_")
                .replace("__", "_")
                .to_lowercase()
        );
        let grid = crate::grid::save(&tiles, 2 * o.top, 48, &o.out.join(&file))?.then_some(file);
        let set = UnitSet {
            name: name.clone(),
            trained: summarise(&stats),
            random_init: summarise(&rstats),
            random_directions: summarise(&dstats),
            text_hits: effects.as_ref().map(|_| Rate::of(&hits)),
            text_hits_random: effects.as_ref().map(|_| Rate::of(&dhits)),
            grid,
            units: order.iter().map(|&j| units[j].clone()).collect(),
        };
        say(format!(
            "{name}: concept purity {:.3} (random init {:.3}, random directions {:.3}){}",
            set.trained.concept,
            set.random_init.concept,
            set.random_directions.concept,
            set.text_hits
                .map(|h| format!(
                    "; text hit@10 {} vs random {}",
                    h.show(),
                    set.text_hits_random.map(|r| r.show()).unwrap_or_default()
                ))
                .unwrap_or_default()
        ));
        sets.push(set);
    }
    let verdict = verdict(&sets);
    let r = Neurons {
        images: images.len(),
        sets,
        verdict,
    };
    clip_data::out::write_file(&o.out.join("report.md"), report(&r, o).as_bytes())?;
    let summary: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
        ("model", serde_json::json!(emb.fingerprint)),
        ("emoji", serde_json::json!(o.emoji.display().to_string())),
        ("top", serde_json::json!(o.top)),
        ("seed", serde_json::json!(o.seed)),
        ("texts", serde_json::json!(texts.len())),
        (
            "result",
            serde_json::to_value(&r).map_err(|e| EvalError::Invalid(e.to_string()))?,
        ),
    ]);
    clip_eval::error::write_json(&o.out, "neurons.json", &summary)?;
    Ok(r)
}

fn verdict(sets: &[UnitSet]) -> String {
    let above = sets
        .iter()
        .filter(|s| {
            s.trained.concept - s.trained.concept_ci
                > s.random_directions.concept + s.random_directions.concept_ci
                && s.trained.concept - s.trained.concept_ci
                    > s.random_init.concept + s.random_init.concept_ci
        })
        .count();
    let cross = sets
        .iter()
        .filter(|s| {
            s.trained.cross_style > s.random_init.cross_style + s.random_init.cross_style_ci
        })
        .count();
    format!(
        "{above} of {} unit sets are purer by concept than both a random-init model and random directions (95% intervals apart); {cross} of {} gather the same concept across styles more than the random-init model does. The paper's multimodal neurons respond to a concept across photos, drawings and text; here 'across styles' is the measurable part (emoji hold no text).",
        sets.len(),
        sets.len()
    )
}

fn report(r: &Neurons, o: &NeuronOptions) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "# Units and their dataset examples\n\n{} images (every default-tone image of every style); top {} per unit.\n\n**Verdict.** {}\n\n",
        r.images, o.top, r.verdict
    );
    s += "| unit set | units | concept purity: trained / random init / random directions | subcategory | same concept in ≥ 2 styles | text hit@10 (vs random directions) |\n|---|---|---|---|---|---|\n";
    let f = |p: &Purity, g: fn(&Purity) -> (f64, f64)| {
        let (m, c) = g(p);
        format!("{m:.3} ± {c:.3}")
    };
    for set in &r.sets {
        let row = |g: fn(&Purity) -> (f64, f64)| {
            format!(
                "{} / {} / {}",
                f(&set.trained, g),
                f(&set.random_init, g),
                f(&set.random_directions, g)
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            set.name,
            set.trained.units,
            row(|p| (p.concept, p.concept_ci)),
            row(|p| (p.subcategory, p.subcategory_ci)),
            row(|p| (p.cross_style, p.cross_style_ci)),
            match (set.text_hits, set.text_hits_random) {
                (Some(a), Some(b)) => format!("{} vs {}", a.show(), b.show()),
                _ => "–".into(),
            }
        );
    }
    for set in &r.sets {
        let _ = writeln!(s, "\n## {}\n", set.name);
        if let Some(g) = &set.grid {
            let _ = writeln!(
                s,
                "![{g}]({g})\n\nRows: {}the {} purest units; green: top images, grey: bottom images.\n",
                if o.units.is_empty() {
                    String::new()
                } else {
                    format!("units {:?}, then ", o.units)
                },
                o.show.min(set.units.len())
            );
        }
        for u in set.units.iter().take(o.show) {
            let _ = writeln!(
                s,
                "- unit {}: {} ({:.0}% of its top images){}",
                u.index,
                u.modal_concept,
                u.concept * 100.0,
                if u.texts.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; nearest texts: {}",
                        u.texts[..u.texts.len().min(5)].join(", ")
                    )
                }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests;
