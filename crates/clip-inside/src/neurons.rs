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

/// Activations `[n, units]` of each unit set.
struct Acts {
    data: Vec<Vec<f32>>,
    units: Vec<usize>,
    /// mean class-token state after the last block (ViT)
    cls_mean: Option<Vec<f32>>,
}

/// The capture names of the unit sets: (capture name, pool, set name).
fn plan(emb: &Embedder, blocks: usize) -> Result<Vec<(String, &'static str, String)>, EvalError> {
    match &emb.clip.module().visual {
        VisualTower::Vit(v) => {
            let layers = v.transformer.resblocks.len();
            let from = layers.saturating_sub(blocks.max(1));
            Ok((from..layers)
                .flat_map(|l| {
                    let c = format!("visual.transformer.resblocks.{l}.mlp");
                    [
                        (c.clone(), "cls", format!("block {l} MLP, class token")),
                        (c, "mean", format!("block {l} MLP, mean over tokens")),
                    ]
                })
                .collect())
        }
        VisualTower::ResNet(r) => {
            let last = r.layers.last().map_or(0, |l| l.len().saturating_sub(1));
            Ok(vec![(
                format!("visual.layer4.{last}"),
                "space",
                "last stage channels, mean over space".into(),
            )])
        }
        VisualTower::Timm(_) => Err(EvalError::Invalid(
            "clip inside neurons reads OpenAI/open_clip ViTs and ResNets; this model's tower is a timm ViT".into(),
        )),
    }
}

fn activations(
    emb: &Embedder,
    images: &[Rgb8],
    plan: &[(String, &'static str, String)],
    last_block: Option<String>,
) -> Acts {
    let n = images.len();
    let size = emb.clip.config.image_size();
    let mut data: Vec<Vec<f32>> = vec![Vec::new(); plan.len()];
    let mut units = vec![0; plan.len()];
    let mut cls_sum: Option<Vec<f64>> = None;
    let device = emb.clip.device();
    for chunk in images.chunks(emb.batch.max(1)) {
        let pixels: Vec<f32> = chunk.iter().flat_map(|i| emb.preprocess.apply(i)).collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [chunk.len(), 3, size, size]),
            &device,
        );
        let mut patterns: Vec<String> = plan.iter().map(|p| p.0.clone()).collect();
        patterns.extend(last_block.clone());
        let mut cap = Capture::new(patterns);
        let _ = emb.clip.encode_image_with(x, Some(&mut cap));
        for (k, (name, pool, _)) in plan.iter().enumerate() {
            let Some(a) = cap.get(name) else { continue };
            let b = chunk.len();
            match *pool {
                "cls" | "mean" => {
                    let (t, h) = (a.shape[1], a.shape[2]);
                    units[k] = h;
                    for i in 0..b {
                        let tok = &a.data[i * t * h..(i + 1) * t * h];
                        if *pool == "cls" {
                            data[k].extend_from_slice(&tok[..h]);
                        } else {
                            let mut m = vec![0f32; h];
                            for row in tok.chunks(h) {
                                m.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                            }
                            data[k].extend(m.iter().map(|v| v / t as f32));
                        }
                    }
                }
                _ => {
                    let (c, hw) = (a.shape[1], a.shape[2] * a.shape[3]);
                    units[k] = c;
                    for i in 0..b {
                        for ch in 0..c {
                            let s = &a.data[(i * c + ch) * hw..(i * c + ch + 1) * hw];
                            data[k].push(s.iter().sum::<f32>() / hw as f32);
                        }
                    }
                }
            }
        }
        if let Some(a) = last_block.as_ref().and_then(|l| cap.get(l)) {
            let (t, w) = (a.shape[1], a.shape[2]);
            let sum = cls_sum.get_or_insert_with(|| vec![0.0; w]);
            for i in 0..chunk.len() {
                for (s, v) in sum.iter_mut().zip(&a.data[i * t * w..i * t * w + w]) {
                    *s += *v as f64;
                }
            }
        }
    }
    Acts {
        data,
        units,
        cls_mean: cls_sum.map(|s| s.iter().map(|v| (v / n as f64) as f32).collect()),
    }
}

/// The modal concept of the top 9 images of each unit `(block, unit, class token?)` of a ViT, over
/// `rows` (with their `images`); each (block, reading) is captured once for all its units.
pub(crate) fn modal_concepts(
    emb: &Embedder,
    rows: &[&Row],
    images: &[Rgb8],
    units: &[(usize, usize, bool)],
) -> Vec<String> {
    let mut plan: Vec<(String, &'static str, String)> = Vec::new();
    for &(block, _, cls) in units {
        let p = (
            format!("visual.transformer.resblocks.{block}.mlp"),
            if cls { "cls" } else { "mean" },
            String::new(),
        );
        if !plan.contains(&p) {
            plan.push(p);
        }
    }
    let acts = activations(emb, images, &plan, None);
    units
        .iter()
        .map(|&(block, unit, cls)| {
            let name = format!("visual.transformer.resblocks.{block}.mlp");
            let k = plan
                .iter()
                .position(|p| p.0 == name && p.1 == if cls { "cls" } else { "mean" })
                .unwrap_or(0);
            let col = column(&acts.data[k], acts.units[k].max(1), unit);
            purity(rows, &extremes(&col, 9, true)).3
        })
        .collect()
}

/// Indices of the `k` largest (or smallest) of `score`.
fn extremes(score: &[f32], k: usize, largest: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = score[a].total_cmp(&score[b]);
        if largest { o.reverse() } else { o }
    });
    idx.truncate(k);
    idx
}

/// (concept, subcategory, cross-style) purity of the images `top`, and the modal concept.
fn purity(rows: &[&Row], top: &[usize]) -> (f64, f64, f64, String) {
    let k = top.len().max(1) as f64;
    let mut concepts: HashMap<&str, usize> = HashMap::new();
    let mut subs: HashMap<&str, usize> = HashMap::new();
    let mut styles: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for &i in top {
        *concepts.entry(&rows[i].concept).or_default() += 1;
        *subs.entry(&rows[i].subcategory).or_default() += 1;
        styles
            .entry(&rows[i].concept)
            .or_default()
            .insert(&rows[i].style);
    }
    let (modal, mc) = concepts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(c, n)| (c.to_string(), *n))
        .unwrap_or_default();
    let ms = subs.values().copied().max().unwrap_or(0);
    let cross = top
        .iter()
        .filter(|&&i| styles[rows[i].concept.as_str()].len() >= 2)
        .count();
    (mc as f64 / k, ms as f64 / k, cross as f64 / k, modal)
}

use crate::mean_ci;

fn summarise(stats: &[(f64, f64, f64)]) -> Purity {
    let pick = |f: fn(&(f64, f64, f64)) -> f64| mean_ci(&stats.iter().map(f).collect::<Vec<_>>());
    let (c, cc) = pick(|s| s.0);
    let (s, sc) = pick(|s| s.1);
    let (x, xc) = pick(|s| s.2);
    Purity {
        units: stats.len(),
        concept: c,
        concept_ci: cc,
        subcategory: s,
        subcategory_ci: sc,
        cross_style: x,
        cross_style_ci: xc,
    }
}

/// Column `u` of `[n, units]`.
fn column(data: &[f32], units: usize, u: usize) -> Vec<f32> {
    data.chunks(units).map(|r| r[u]).collect()
}

/// `[n, units] · v`.
fn project(data: &[f32], units: usize, v: &[f32]) -> Vec<f32> {
    data.chunks(units)
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// Unit-length rows of `[count, dim]` Gaussian directions.
fn directions(count: usize, dim: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| crate::gaussian(rng)).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter().map(|x| x / n).collect()
        })
        .collect()
}

/// The direct-effect map of block `block`'s MLP units onto the embedding: `[hidden, embed]`.
fn direct_effects(emb: &Embedder, block: usize, cls_mean: &[f32]) -> Option<Vec<Vec<f32>>> {
    let VisualTower::Vit(v) = &emb.clip.module().visual else {
        return None;
    };
    let mlp = &v.transformer.resblocks.get(block)?.mlp;
    let device = emb.clip.device();
    let w = cls_mean.len();
    let h = to_vec(&mlp.c_fc.forward(Tensor::<2>::zeros([1, w], &device))).len();
    // c_proj's rows: the identity through the layer, less its bias
    let eye = Tensor::<2>::eye(h, &device);
    let rows = to_vec(&mlp.c_proj.forward(eye));
    let bias = to_vec(&mlp.c_proj.forward(Tensor::<2>::zeros([1, h], &device)));
    let gamma = to_vec(&v.ln_post.weight.val());
    let proj = to_vec(&v.proj.val()); // [w, e]
    let e = proj.len() / w;
    let mu = cls_mean.iter().sum::<f32>() / w as f32;
    let var = cls_mean.iter().map(|x| (x - mu).powi(2)).sum::<f32>() / w as f32;
    let sigma = (var + v.ln_post.eps as f32).sqrt();
    let z: Vec<f32> = cls_mean.iter().map(|x| (x - mu) / sigma).collect();
    Some(
        (0..h)
            .map(|j| {
                let wj: Vec<f32> = (0..w).map(|i| rows[j * w + i] - bias[i]).collect();
                let mean = wj.iter().sum::<f32>() / w as f32;
                let zw = z.iter().zip(&wj).map(|(a, b)| a * b).sum::<f32>() / w as f32;
                let jw: Vec<f32> = (0..w)
                    .map(|i| gamma[i] * (wj[i] - mean - z[i] * zw) / sigma)
                    .collect();
                (0..e)
                    .map(|k| (0..w).map(|i| jw[i] * proj[i * e + k]).sum())
                    .collect()
            })
            .collect(),
    )
}

/// The indices of the `k` texts nearest to direction `d` (`texts` unit rows `[t, e]`).
fn nearest_texts(texts: &[f32], e: usize, d: &[f32], k: usize) -> Vec<usize> {
    let n = d.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let s: Vec<f32> = texts
        .chunks(e)
        .map(|r| r.iter().zip(d).map(|(a, b)| a * b).sum::<f32>() / n)
        .collect();
    extremes(&s, k, true)
}

/// Every concept name, keyword and category in the import's training captions (comma-separated
/// pieces), and the concept names.
fn caption_texts(imp: &Import) -> Result<Vec<String>, EvalError> {
    let mut set: BTreeSet<String> = imp.concepts().into_iter().collect();
    for style in &imp.styles {
        let path = imp.dir.join(format!("train_{style}.jsonl"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                EvalError::Invalid(format!("cannot read '{}': {e}", path.display()))
            })?;
            for c in v["captions"].as_array().into_iter().flatten() {
                for piece in c.as_str().unwrap_or("").split(", ") {
                    let p = piece.trim();
                    if !p.is_empty() && !p.starts_with("an emoji of") {
                        set.insert(p.to_owned());
                    }
                }
            }
        }
    }
    Ok(set.into_iter().collect())
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
mod tests {
    use super::*;

    fn row(concept: &str, sub: &str, style: &str) -> Row {
        Row {
            image: PathBuf::new(),
            concept: concept.into(),
            style: style.into(),
            tone: "default".into(),
            category: String::new(),
            subcategory: sub.into(),
            trained: true,
        }
    }

    #[test]
    fn purity_counts_the_modal_concept_subcategory_and_styles() {
        let rows = [
            row("cat", "animal", "google"),
            row("cat", "animal", "apple"),
            row("dog", "animal", "google"),
            row("pear", "fruit", "google"),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let (c, s, x, m) = purity(&refs, &[0, 1, 2, 3]);
        assert_eq!((c, s, x, m.as_str()), (0.5, 0.75, 0.5, "cat"));
        assert_eq!(extremes(&[0.1, 0.9, -1.0, 0.5], 2, true), [1, 3]);
        assert_eq!(extremes(&[0.1, 0.9, -1.0, 0.5], 1, false), [2]);
        let (m, ci) = mean_ci(&[1.0, 1.0, 1.0]);
        assert_eq!((m, ci), (1.0, 0.0));
    }

    #[test]
    fn random_directions_are_unit_length() {
        let d = directions(3, 50, &mut Rng::new(1));
        for v in &d {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        assert_ne!(d[0], d[1]);
        assert_eq!(
            project(&[1.0, 2.0, 3.0, 4.0], 2, &[1.0, -1.0]),
            [-1.0, -1.0]
        );
    }
}
