//! Looking inside and around a trained CLIP (the seed's later sections): its units and their
//! dataset examples ([`neurons`]), CLIP-guided search and reranking ([`glass`] over the procedural
//! generator of [`genome`]), the paper's bias probe (§7.1, [`bias`]) and its limitations (§6,
//! [`limits`]), measured on the emoji data that `clip import-emoji` writes. Each experiment is one library function that embeds through the
//! shared pipeline ([`clip_embed::Embedder`]), scores with the one zero-shot classifier builder
//! ([`clip_embed::zeroshot::Classifier`]) and the evaluation crate's probes, and writes a JSON
//! report, a markdown report and image grids (PNG) into a folder of its own.

pub mod bias;
pub mod emoji;
pub mod featvis;
pub mod ga;
pub mod genome;
pub mod glass;
pub mod grid;
pub mod limits;
pub mod neurons;
pub mod render;
pub mod typographic;

pub use clip_eval::EvalError;

/// A share with its Wilson 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rate {
    pub hits: u64,
    pub n: u64,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Rate {
    pub fn new(hits: u64, n: u64) -> Rate {
        let (lo, hi) = clip_eval::metrics::wilson(hits, n, 1.959_963_984_540_054);
        Rate {
            hits,
            n,
            rate: if n == 0 { 0.0 } else { hits as f64 / n as f64 },
            lo,
            hi,
        }
    }

    /// The share of `true`s.
    pub fn of(v: &[bool]) -> Rate {
        Rate::new(v.iter().filter(|&&b| b).count() as u64, v.len() as u64)
    }

    /// `41.2% [35.0, 47.6] (n = 240)`.
    pub fn show(&self) -> String {
        format!(
            "{:.1}% [{:.1}, {:.1}] (n = {})",
            self.rate * 100.0,
            self.lo * 100.0,
            self.hi * 100.0,
            self.n
        )
    }
}

/// L2-normalised features of images held in memory, with their labels: the embedding pipeline's
/// [`clip_embed::Embedder::features`] (batched, parallel preprocessing, the model's cache if set).
pub fn embed_images(
    emb: &clip_embed::Embedder,
    name: &str,
    images: Vec<clip_data::resize::Rgb8>,
    labels: Vec<usize>,
) -> Result<clip_embed::Features, EvalError> {
    let set = clip_data::dataset::EvalSet::from_memory(name, images, labels, Vec::new());
    Ok(emb.features(&set)?)
}

/// Mean of `v` and the half-width of its 95% normal interval (sample variance).
pub(crate) fn mean_ci(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, 1.96 * (var / n).sqrt())
}

/// Every template must hold the `{}` that the class name fills.
pub(crate) fn check_templates(templates: &[String]) -> Result<(), EvalError> {
    if templates.is_empty() || templates.iter().any(|t| !t.contains("{}")) {
        return Err(EvalError::Invalid(
            "every template needs a {} for the class name".into(),
        ));
    }
    Ok(())
}

/// A standard normal draw (Box–Muller).
pub(crate) fn gaussian(rng: &mut clip_data::rng::Rng) -> f32 {
    let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Where an experiment writes: refuses a folder holding anything but its own earlier report.
pub fn prepare_out(out: &std::path::Path, marker: &str, what: &str) -> Result<(), EvalError> {
    clip_data::out::check_output_dir(out, marker, what)?;
    clip_data::out::create_dir(out)?;
    Ok(())
}
