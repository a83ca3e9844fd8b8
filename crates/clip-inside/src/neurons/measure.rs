//! Measuring units: activations read through a capture, each unit's extremes and their concept
//! purity, random directions, and a unit's direct effect on the embedding ranked against the
//! caption texts.

use super::*;
use crate::mean_ci;

/// Activations `[n, units]` of each unit set.
pub(super) struct Acts {
    pub(super) data: Vec<Vec<f32>>,
    pub(super) units: Vec<usize>,
    /// mean class-token state after the last block (ViT)
    pub(super) cls_mean: Option<Vec<f32>>,
}

/// The capture names of the unit sets: (capture name, pool, set name).
pub(super) fn plan(
    emb: &Embedder,
    blocks: usize,
) -> Result<Vec<(String, &'static str, String)>, EvalError> {
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

pub(super) fn activations(
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
pub(super) fn extremes(score: &[f32], k: usize, largest: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = score[a].total_cmp(&score[b]);
        if largest { o.reverse() } else { o }
    });
    idx.truncate(k);
    idx
}

/// (concept, subcategory, cross-style) purity of the images `top`, and the modal concept.
pub(super) fn purity(rows: &[&Row], top: &[usize]) -> (f64, f64, f64, String) {
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

pub(super) fn summarise(stats: &[(f64, f64, f64)]) -> Purity {
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
pub(super) fn column(data: &[f32], units: usize, u: usize) -> Vec<f32> {
    data.chunks(units).map(|r| r[u]).collect()
}

/// `[n, units] · v`.
pub(super) fn project(data: &[f32], units: usize, v: &[f32]) -> Vec<f32> {
    data.chunks(units)
        .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// Unit-length rows of `[count, dim]` Gaussian directions.
pub(super) fn directions(count: usize, dim: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| crate::gaussian(rng)).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter().map(|x| x / n).collect()
        })
        .collect()
}

/// The direct-effect map of block `block`'s MLP units onto the embedding: `[hidden, embed]`.
pub(super) fn direct_effects(
    emb: &Embedder,
    block: usize,
    cls_mean: &[f32],
) -> Option<Vec<Vec<f32>>> {
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
pub(super) fn nearest_texts(texts: &[f32], e: usize, d: &[f32], k: usize) -> Vec<usize> {
    let n = d.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let s: Vec<f32> = texts
        .chunks(e)
        .map(|r| r.iter().zip(d).map(|(a, b)| a * b).sum::<f32>() / n)
        .collect();
    extremes(&s, k, true)
}

/// Every concept name, keyword and category in the import's training captions (comma-separated
/// pieces), and the concept names.
pub(super) fn caption_texts(imp: &Import) -> Result<Vec<String>, EvalError> {
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
