//! Zero-shot scoring of every objective by its own rule (split from the training code of
//! [`super`]): the contrastive models' prompt-ensemble classifier (through a projection head
//! where there is one), the bag heads' mean log-probability and PMI, P-LM's prompt likelihoods,
//! DeViSE's cosine and LDA's topic likelihood. Ranks are pessimistic: ties and unscorable
//! names count against the true class.

use super::*;

impl Model {
    /// Zero-shot accuracy on `set` under each of the objective's rules: `cosine` (contrastive:
    /// the prompt-ensemble classifier), `mean-logp` / `pmi` (bag heads: mean log-probability of the
    /// class name's units, and the same minus a blank image's: a frequent word no longer wins for
    /// every image), `sum` / `mean` / `pmi` (P-LM: the prompts' log-likelihood summed, per token,
    /// and minus a blank image's; averaged over the templates).
    pub fn zero_shot(&self, set: &ZeroShotSet) -> Result<Scores, TrainError> {
        let mut out = Scores::new();
        match self {
            Model::Contrastive {
                clip, head: None, ..
            } => {
                out.insert("cosine".into(), zero_shot_accuracy(clip, set)?);
            }
            Model::Contrastive {
                clip,
                head: Some(head),
                ..
            } => {
                let (image, text) = (|f| head.image(f), |f| head.text(f));
                out.insert(
                    "cosine".into(),
                    zero_shot_accuracy_mapped(clip, set, &image, &text)?,
                );
            }
            Model::Predictive {
                module,
                vocab,
                config,
                kind,
                ..
            } => {
                // a copy off the autodiff device: thousands of scoring passes must not each
                // record a graph (that held 24 GB for P-LM's 128 classes × 2 templates)
                let module = &module.valid();
                let tok = clip_tokenizer::Tokenizer::global();
                let ctx = config.text_cfg.context_length;
                let name_words: Vec<Vec<usize>> = set
                    .class_names
                    .iter()
                    .map(|c| vocab.words(&tok.encode_truncated(c, ctx).0))
                    .collect();
                let device = module.visual.conv1.device();
                let n = config.image_size();
                let images = |chunk: &[Vec<f32>]| {
                    Tensor::<4>::from_data(
                        TensorData::new(chunk.concat(), [chunk.len(), 3, n, n]),
                        &device,
                    )
                };
                let k = set.class_names.len();
                match &module.head {
                    Head::Bow(lin) if *kind == Kind::Devise => {
                        let wv = vocab.vectors.as_ref().ok_or_else(|| {
                            TrainError::Unsupported("devise needs word vectors".into())
                        })?;
                        let classes: Vec<f32> =
                            name_words.iter().flat_map(|w| wv.target(w)).collect();
                        let mut scores = Vec::with_capacity(set.images.len() * k);
                        for chunk in set.images.chunks(64) {
                            let v = to_vec(&l2_normalize(
                                lin.forward(module.visual.forward(images(chunk), None))
                                    .detach(),
                            ));
                            for row in v.chunks(wv.dim) {
                                scores.extend(
                                    classes.chunks(wv.dim).map(|c| {
                                        row.iter().zip(c).map(|(a, b)| a * b).sum::<f32>()
                                    }),
                                );
                            }
                        }
                        out.insert("cosine".into(), accuracy(&scores, k, &set.labels));
                    }
                    Head::Bow(lin) if *kind == Kind::LdaTopics => {
                        let topics = vocab.topics.as_ref().ok_or_else(|| {
                            TrainError::Unsupported("lda-topics needs a topic model".into())
                        })?;
                        let classes: Vec<Vec<f32>> = name_words
                            .iter()
                            .map(|w| topics.mixture(w, LDA_FOLD_IN))
                            .collect();
                        let log_probs = |chunk: &[Vec<f32>]| {
                            let z = lin
                                .forward(module.visual.forward(images(chunk), None))
                                .detach();
                            to_vec(&burn::tensor::activation::log_softmax(z, 1))
                        };
                        let dot = |row: &[f32], c: usize| -> f32 {
                            row.iter().zip(&classes[c]).map(|(a, b)| a * b).sum()
                        };
                        let (scores, pmi) =
                            scores_and_pmi(&set.images, k, topics.k, n, log_probs, dot);
                        out.insert("topic-loglik".into(), accuracy(&scores, k, &set.labels));
                        out.insert("pmi".into(), accuracy(&pmi, k, &set.labels));
                    }
                    Head::Bow(lin) => {
                        let sigmoid = *kind == Kind::PBowSigmoid;
                        let log_probs = |chunk: &[Vec<f32>]| {
                            let z = lin
                                .forward(module.visual.forward(images(chunk), None))
                                .detach();
                            to_vec(&heads::bow_log_probs(z, sigmoid))
                        };
                        let mean = |row: &[f32], c: usize| mean_of(row, &name_words[c]);
                        let (scores, pmi) =
                            scores_and_pmi(&set.images, k, vocab.len(), n, log_probs, mean);
                        out.insert("mean-logp".into(), accuracy(&scores, k, &set.labels));
                        out.insert("pmi".into(), accuracy(&pmi, k, &set.labels));
                    }
                    Head::Lm(dec) => {
                        let prompts: Vec<Vec<Vec<usize>>> = set
                            .templates
                            .iter()
                            .map(|t| {
                                set.class_names
                                    .iter()
                                    .map(|c| {
                                        vocab.words(
                                            &tok.encode_truncated(&t.replace("{}", c), ctx).0,
                                        )
                                    })
                                    .collect()
                            })
                            .collect();
                        let blank = vec![blank_image(n)];
                        let blank_mem = dec
                            .memory(module.visual.forward_tokens(images(&blank)))
                            .detach();
                        let m = set.images.len();
                        let (mut sum, mut mean, mut pmi) =
                            (vec![0f32; m * k], vec![0f32; m * k], vec![0f32; m * k]);
                        let t_count = prompts.len() as f32;
                        for (start, chunk) in (0..).step_by(64).zip(set.images.chunks(64)) {
                            let mem = dec
                                .memory(module.visual.forward_tokens(images(chunk)))
                                .detach();
                            for per_class in &prompts {
                                for (c, words) in per_class.iter().enumerate() {
                                    let rows = vec![words.clone(); chunk.len()];
                                    let (inp, tgt, mask) =
                                        heads::teacher_forcing(&rows, dec.context());
                                    let lp = to_vec(&heads::sequence_log_prob(
                                        dec.log_probs(mem.clone(), &inp).detach(),
                                        &tgt,
                                        &mask,
                                    ));
                                    let (inp1, tgt1, mask1) =
                                        heads::teacher_forcing(&rows[..1], dec.context());
                                    let base = to_vec(&heads::sequence_log_prob(
                                        dec.log_probs(blank_mem.clone(), &inp1).detach(),
                                        &tgt1,
                                        &mask1,
                                    ))[0];
                                    let len = mask1.iter().sum::<f32>().max(1.0);
                                    for (i, &s) in lp.iter().enumerate() {
                                        let cell = (start + i) * k + c;
                                        sum[cell] += s / t_count;
                                        mean[cell] += s / len / t_count;
                                        pmi[cell] += (s - base) / t_count;
                                    }
                                }
                            }
                        }
                        out.insert("sum".into(), accuracy(&sum, k, &set.labels));
                        out.insert("mean".into(), accuracy(&mean, k, &set.labels));
                        out.insert("pmi".into(), accuracy(&pmi, k, &set.labels));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A white image, normalised (the emoji background): P-LM's PMI baseline.
fn blank_image(n: usize) -> Vec<f32> {
    let white = clip_data::Rgb8 {
        width: n,
        height: n,
        data: vec![255; n * n * 3],
    };
    clip_data::Preprocess::clip(n).normalize(&white)
}

/// Every image's score for each of `k` classes, `score(row, class)` over the head's output row of
/// `width` values per image (`outputs` of a chunk of preprocessed images), and the same minus a
/// blank image's score (PMI: a class that scores high for every image no longer wins them all).
fn scores_and_pmi(
    images: &[Vec<f32>],
    k: usize,
    width: usize,
    n: usize,
    outputs: impl Fn(&[Vec<f32>]) -> Vec<f32>,
    score: impl Fn(&[f32], usize) -> f32,
) -> (Vec<f32>, Vec<f32>) {
    let blank = outputs(&[blank_image(n)]);
    let base: Vec<f32> = (0..k).map(|c| score(&blank, c)).collect();
    let mut scores = Vec::with_capacity(images.len() * k);
    let mut pmi = Vec::with_capacity(images.len() * k);
    for chunk in images.chunks(64) {
        for row in outputs(chunk).chunks(width) {
            for (c, b) in base.iter().enumerate() {
                let s = score(row, c);
                scores.push(s);
                pmi.push(minus(s, *b));
            }
        }
    }
    (scores, pmi)
}

/// Mean of `row` at `words` (−∞ when none of the words is in the vocabulary).
fn mean_of(row: &[f32], words: &[usize]) -> f32 {
    if words.is_empty() {
        return f32::NEG_INFINITY;
    }
    words.iter().map(|&w| row[w]).sum::<f32>() / words.len() as f32
}

/// Top-1 and top-5 accuracy of row-major `[M, k]` scores, pessimistic: a tie with another class
/// counts against the true one, and a true class scored NaN or −∞ (a name with no unit in the
/// vocabulary) ranks last — bag heads give equal scores to names with equal bags.
fn accuracy(scores: &[f32], k: usize, labels: &[usize]) -> (f64, f64) {
    let ranks: Vec<usize> = scores
        .chunks(k.max(1))
        .zip(labels)
        .map(|(row, &l)| {
            let s = row[l];
            if s.is_nan() || s == f32::NEG_INFINITY {
                return k;
            }
            row.iter()
                .enumerate()
                .filter(|&(j, &x)| j != l && (x >= s || x.is_nan()))
                .count()
        })
        .collect();
    (
        clip_embed::zeroshot::top_k(&ranks, 1),
        clip_embed::zeroshot::top_k(&ranks, 5),
    )
}

/// `score − baseline`, −∞ when the score itself is −∞ (never NaN).
fn minus(score: f32, baseline: f32) -> f32 {
    if score == f32::NEG_INFINITY {
        f32::NEG_INFINITY
    } else {
        score - baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_and_unscorable_names_count_against_the_true_class() {
        // row 0: the true class ties with another; row 1: the true class cannot be scored
        let mut scores = vec![0.5f32, 0.5, 0.1, 0.0, 0.0, 0.0];
        scores.extend([f32::NEG_INFINITY, 0.2, 0.1, 0.0, 0.0, 0.0]);
        let (top1, top5) = accuracy(&scores, 6, &[0, 0]);
        assert_eq!(top1, 0.0);
        assert_eq!(
            top5, 0.5,
            "a tie is still within the top 5; a −∞ class is not"
        );
        assert_eq!(accuracy(&[0.9, 0.1, 0.0], 3, &[0]).0, 1.0);
        assert_eq!(
            minus(f32::NEG_INFINITY, f32::NEG_INFINITY),
            f32::NEG_INFINITY
        );
        assert_eq!(minus(-1.0, -3.0), 2.0);
    }
}
