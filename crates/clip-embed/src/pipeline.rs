//! The one embedding pipeline: a loaded model with its fingerprint, preprocessing and batch size;
//! images (files, or the items of an [`EvalSet`]: manifests, class folders, shards) decoded in
//! parallel and embedded in batches with a progress bar, texts tokenized and embedded, and cached
//! features keyed by the model fingerprint and the data. `clip embed`, `classify`, every `clip eval`
//! command, training-time evaluation and the search index all go through it.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use clip_data::Preprocess;
use clip_data::dataset::{EvalSet, Fingerprint};
use clip_model::lowp::Precision;
use clip_model::source::to_vec;
use clip_model::{Clip, l2_normalize};
use clip_tokenizer::TextTokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::cache::{self, CacheKey};
use crate::features::Features;
use crate::zeroshot::{Classifier, ClassifierError};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{0}")]
    Image(String),
    #[error("text {row} cannot be tokenized: {source}")]
    Tokenize {
        row: usize,
        source: clip_tokenizer::TokenizeError,
    },
    #[error(transparent)]
    Text(#[from] clip_model::text::TextInputError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
}

/// A progress bar for `n` items of `what` (hidden when stderr is not a terminal).
pub fn progress(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} {per_sec} [{elapsed_precise}<{eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Print what was found damaged while opening a data set (every reader reports the same way).
pub fn report_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Fingerprint of a model: its config and every parameter value (of an f32 model: see
/// [`Embedder::set_precision`] for the others' suffix).
pub fn model_fingerprint(clip: &Clip) -> String {
    let mut f = Fingerprint::default();
    f.str(&serde_json::to_string(&clip.config).unwrap_or_default());
    clip.for_each_state(|name, t| {
        f.str(name).floats(&t.data);
    });
    format!("{:016x}", f.0)
}

/// The precision a fingerprint from [`Embedder`] names (`…+bf16`, `…+int8`; f32 has no suffix).
pub fn fingerprint_precision(fingerprint: &str) -> Precision {
    fingerprint
        .rsplit_once('+')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_default()
}

/// The default feature cache folder: `$XDG_CACHE_HOME/clip-rs/features` or
/// `~/.cache/clip-rs/features`.
pub fn default_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("clip-rs/features"))
}

/// A model ready to embed.
pub struct Embedder {
    pub clip: Clip,
    /// [`model_fingerprint`] of `clip`, with `+bf16` or `+int8` for reduced precision (features,
    /// caches and indexes of different precisions never mix)
    pub fingerprint: String,
    pub preprocess: Preprocess,
    /// items per forward pass (≥ 1)
    pub batch: usize,
    /// feature cache folder (`None`: no caching)
    pub cache: Option<PathBuf>,
    /// the model's tokenizer (CLIP's BPE unless the model names a Hugging Face one)
    pub tokenizer: TextTokenizer,
}

impl Embedder {
    /// Wrap a loaded model: the preprocessing its config names (open_clip's `preprocess_cfg`;
    /// OpenAI's when it has none, see [`crate::models::preprocess`]) at its input size, no cache.
    pub fn new(clip: Clip, batch: usize) -> Embedder {
        let fingerprint = model_fingerprint(&clip);
        let preprocess = crate::models::preprocess(&clip.config);
        Embedder {
            clip,
            fingerprint,
            preprocess,
            batch: batch.max(1),
            cache: None,
            tokenizer: TextTokenizer::Clip,
        }
    }

    /// Use `tokenizer` for texts (the model's own: see [`crate::models::text_tokenizer`]).
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Embedder {
        self.tokenizer = tokenizer;
        self
    }

    /// The tokenizer, if it is the one the model needs.
    fn tokenizer(&self) -> Result<&TextTokenizer, EmbedError> {
        match (
            &self.clip.config.text_cfg.hf_tokenizer_name,
            &self.tokenizer,
        ) {
            (Some(name), TextTokenizer::Clip) => Err(EmbedError::Model(
                crate::models::ModelError::Resolve(format!(
                    "this model's text tower was trained with the Hugging Face tokenizer '{name}', which was not loaded"
                )),
            )),
            (_, t) => Ok(t),
        }
    }

    /// Load `spec` (a path or `NAME:TAG`, see [`crate::models::load`]) on the default device.
    pub fn load(spec: &str, batch: usize) -> Result<Embedder, EmbedError> {
        Self::load_with(spec, &crate::models::ModelOptions::default(), batch)
    }

    /// [`Embedder::load`] with the architecture or activation stated by the user.
    pub fn load_with(
        spec: &str,
        opts: &crate::models::ModelOptions,
        batch: usize,
    ) -> Result<Embedder, EmbedError> {
        let device = clip_model::default_device();
        let clip = crate::models::load_with(spec, opts, &device)?;
        let tokenizer =
            crate::models::text_tokenizer(spec, &clip.config, &crate::models::Hub::from_env())?;
        let mut emb = Self::new(clip, batch).with_tokenizer(tokenizer);
        emb.set_precision(opts.precision.unwrap_or_default())?;
        clip_data::limits::check_image_batch(emb.batch, emb.preprocess.size, "batch size")
            .map_err(EmbedError::Image)?;
        Ok(emb)
    }

    /// Run inference in `precision` ([`Clip::set_precision`]: f32 packs the weights for the
    /// CPU kernels where that is faster); the fingerprint gains the name of a reduced precision.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), EmbedError> {
        let before = self.clip.precision();
        self.clip
            .set_precision(precision)
            .map_err(|e| EmbedError::Model(e.into()))?;
        if precision != before {
            self.fingerprint = format!("{}+{precision}", self.fingerprint);
        }
        Ok(())
    }

    /// Cache features in `dir`.
    pub fn with_cache(mut self, dir: Option<PathBuf>) -> Embedder {
        self.cache = dir;
        self
    }

    pub fn dim(&self) -> usize {
        self.clip.config.embed_dim
    }

    /// Embeddings `[count, D]` of preprocessed images `[count, 3, n, n]`, L2-normalised unless `raw`.
    pub fn encode_pixels(&self, pixels: Vec<f32>, count: usize, raw: bool) -> Vec<f32> {
        let n = self.clip.config.image_size();
        let x = Tensor::<4>::from_data(
            TensorData::new(pixels, [count, 3, n, n]),
            &self.clip.device(),
        );
        let f = self.clip.encode_image(x).detach();
        to_vec(&if raw { f } else { l2_normalize(f) })
    }

    /// Run `prepare` on every item in parallel, batch by batch, and embed the batches in order.
    fn embed_batched<T: Sync>(
        &self,
        items: &[T],
        what: &str,
        raw: bool,
        prepare: impl Fn(&T) -> Result<Vec<f32>, String> + Sync,
    ) -> Result<Vec<f32>, EmbedError> {
        let bar = progress(items.len(), what);
        let mut out = Vec::with_capacity(items.len() * self.dim());
        for chunk in items.chunks(self.batch) {
            let pixels: Vec<Vec<f32>> = chunk
                .par_iter()
                .map(&prepare)
                .collect::<Result<_, _>>()
                .map_err(EmbedError::Image)?;
            out.extend(self.encode_pixels(pixels.concat(), chunk.len(), raw));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// Embeddings `[N, D]` of image files, in input order.
    pub fn embed_files(&self, paths: &[PathBuf], raw: bool) -> Result<Vec<f32>, EmbedError> {
        self.embed_batched(paths, "images", raw, |p| {
            self.preprocess.load(p).map_err(|e| e.to_string())
        })
    }

    /// L2-normalised embeddings `[N, D]` of the images of `set`, in order.
    pub fn embed_set(&self, set: &EvalSet) -> Result<Vec<f32>, EmbedError> {
        self.embed_batched(&set.images, "images", false, |r| {
            r.preprocess(&self.preprocess)
        })
    }

    /// Embeddings `[N, D]` of texts (over-long texts are an error naming the row unless `truncate`).
    pub fn embed_texts(
        &self,
        texts: &[String],
        truncate: bool,
        raw: bool,
    ) -> Result<Vec<f32>, EmbedError> {
        let bar = progress(texts.len(), "texts");
        let mut out = Vec::with_capacity(texts.len() * self.dim());
        for (b, chunk) in texts.chunks(self.batch).enumerate() {
            let rows = self.tokenize(chunk, truncate).map_err(|e| match e {
                EmbedError::Tokenize { row, source } => EmbedError::Tokenize {
                    row: b * self.batch + row,
                    source,
                },
                e => e,
            })?;
            out.extend(self.encode_tokens(&rows, raw)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }

    /// The model's token rows of `texts` (an over-long text is an error naming its 1-based row
    /// unless `truncate`).
    pub fn tokenize(&self, texts: &[String], truncate: bool) -> Result<Vec<Vec<u32>>, EmbedError> {
        let tok = self.tokenizer()?;
        let ctx = self.clip.config.text_cfg.context_length;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tok.encode(t, ctx, truncate)
                    .map_err(|source| EmbedError::Tokenize { row: i + 1, source })
            })
            .collect()
    }

    /// Embeddings `[N, D]` of token rows from [`Embedder::tokenize`], in input order. The text
    /// tower cuts a batch to its longest row, so rows run in groups of similar length (see
    /// [`length_groups`]): one long caption no longer makes every short one pay for its padding
    /// (sentence-transformers sorts by length for the same reason). Rows are independent (causal
    /// attention, features read at each row's end), so grouping changes no result.
    pub fn encode_tokens(&self, rows: &[Vec<u32>], raw: bool) -> Result<Vec<f32>, EmbedError> {
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let groups = length_groups(&lens);
        let run = |rows: &[Vec<u32>]| -> Result<Vec<f32>, EmbedError> {
            let f = self.clip.encode_text(rows)?.detach();
            Ok(to_vec(&if raw { f } else { l2_normalize(f) }))
        };
        if groups.len() <= 1 {
            return run(rows);
        }
        let d = self.dim();
        let mut out = vec![0f32; rows.len() * d];
        for group in groups {
            let sub: Vec<Vec<u32>> = group.iter().map(|&i| rows[i].clone()).collect();
            let f = run(&sub)?;
            for (&i, v) in group.iter().zip(f.chunks(d)) {
                out[i * d..(i + 1) * d].copy_from_slice(v);
            }
        }
        Ok(out)
    }

    /// The zero-shot classifier of `classes` × `templates` for this model.
    pub fn classifier(
        &self,
        classes: &[String],
        templates: &[String],
    ) -> Result<Classifier, EmbedError> {
        Ok(Classifier::build_with(
            &self.clip,
            self.tokenizer()?,
            classes,
            templates,
        )?)
    }

    fn cache_path(&self, set: &EvalSet, key: &CacheKey) -> Option<PathBuf> {
        let dir = self.cache.as_ref()?;
        let tail: String = Path::new(&set.name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        Some(dir.join(format!("{}-{tail}.safetensors", key.dataset)))
    }

    /// L2-normalised image features of `set` with its labels: from the cache when it was made by
    /// this model from these exact files with this preprocessing; otherwise computed (and cached).
    /// The set's warnings (damaged shards) are reported first.
    pub fn features(&self, set: &EvalSet) -> Result<Features, EmbedError> {
        report_warnings(&set.warnings);
        let key = CacheKey {
            model: self.fingerprint.clone(),
            dataset: format!(
                "{:016x}-{}px-{:?}-{:?}",
                set.fingerprint, self.preprocess.size, self.preprocess.alpha, self.preprocess.order
            ),
        };
        let labels = if set.labels.is_empty() {
            vec![0; set.len()]
        } else {
            set.labels.clone()
        };
        let path = self.cache_path(set, &key);
        if let Some(p) = path.as_ref().filter(|p| p.exists()) {
            match cache::read(p) {
                Ok((f, k)) if k == key && f.labels == labels => return Ok(f),
                Ok((_, k)) if k.model != key.model => eprintln!(
                    "features cache '{}' was computed by another model ({}, this model is {}); recomputing",
                    p.display(),
                    k.model,
                    key.model
                ),
                Ok(_) => eprintln!(
                    "features cache '{}' does not match this dataset; recomputing",
                    p.display()
                ),
                Err(e) => eprintln!("{e}; recomputing"),
            }
        }
        let f = Features {
            dim: self.dim(),
            data: self.embed_set(set)?,
            labels,
        };
        if let Some(p) = &path {
            cache::write(p, &f, &key)?;
        }
        Ok(f)
    }
}

/// A forward pass's fixed cost in tokens' worth of work (weights read once per pass, per-pass
/// set-up), for [`length_groups`].
const PASS_COST: usize = 16;

/// Row indices in groups of similar length for the text tower: sorted by length, then cut so that
/// the padded work, Σ over groups of (rows × longest + [`PASS_COST`]), is least (an exact
/// dynamic programme over the sorted lengths; O(n²), n ≤ one batch).
pub fn length_groups(lens: &[usize]) -> Vec<Vec<usize>> {
    let n = lens.len();
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (lens[i], i));
    let sorted: Vec<usize> = order.iter().map(|&i| lens[i]).collect();
    // best[j]: least cost of the first j sorted rows; cut[j]: where its last group starts
    let mut best = vec![usize::MAX; n + 1];
    let mut cut = vec![0usize; n + 1];
    best[0] = 0;
    for j in 1..=n {
        for i in 0..j {
            let c = best[i] + (j - i) * sorted[j - 1] + PASS_COST;
            if c < best[j] {
                best[j] = c;
                cut[j] = i;
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = cut[j];
        groups.push(order[i..j].to_vec());
        j = i;
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_similar_length_share_a_pass_and_long_ones_go_apart() {
        // equal lengths: one pass
        assert_eq!(length_groups(&[7; 10]), vec![(0..10).collect::<Vec<_>>()]);
        // thirty short captions and two long ones: the long ones are not padded into the short pass
        let mut lens = vec![9usize; 30];
        lens.insert(3, 77);
        lens.push(70);
        let g = length_groups(&lens);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[1], vec![31, 3], "{g:?}");
        let mut all: Vec<usize> = g.concat();
        all.sort();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
        // a little variation is not worth another pass
        assert_eq!(length_groups(&[9, 10, 11, 9]).len(), 1);
        assert!(length_groups(&[]).is_empty());
    }
}
