//! LDA-topic supervision (the paper's §2.1 lists topic models among the earlier ways of learning
//! from text paired with images): a small latent Dirichlet allocation is fitted to the training
//! captions by collapsed Gibbs sampling (Griffiths & Steyvers 2004; β = 0.01, and α = 0.1 rather
//! than their 50/K, which would swamp captions of a few words with the prior), the image tower learns to predict each caption's topic mixture (softmax cross-entropy against the
//! mixture), and a class is recognised by the log-likelihood of its name's topic mixture (folded in
//! by Gibbs sampling with the topics held fixed) under the image's predicted topics.
//!
//! Hand-written: the sampler is thirty lines, and no maintained Rust crate fits LDA by Gibbs
//! sampling on our own token ids with a fixed seed.

use std::collections::HashMap;

use clip_data::rng::Rng;

/// A fitted topic model over compact word ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub k: usize,
    pub alpha: f64,
    pub beta: f64,
    /// words in the vocabulary (compact ids below it)
    pub v: usize,
    /// topic–word counts `[k, v]` and totals per topic
    pub topic_word: Vec<f64>,
    pub topic_total: Vec<f64>,
    /// each training caption's topic mixture, by its word sequence
    mixtures: HashMap<Vec<usize>, Vec<f32>>,
}

impl Topics {
    /// Fit `k` topics to `docs` (compact word ids) by `iterations` Gibbs sweeps.
    pub fn fit(v: usize, docs: &[Vec<usize>], k: usize, iterations: usize, seed: u64) -> Topics {
        let (alpha, beta) = (0.1, 0.01);
        let mut rng = Rng::new(seed ^ 0x1DA);
        let mut tw = vec![0f64; k * v];
        let mut tt = vec![0f64; k];
        let mut dt: Vec<Vec<f64>> = docs.iter().map(|_| vec![0.0; k]).collect();
        let mut z: Vec<Vec<usize>> = docs
            .iter()
            .enumerate()
            .map(|(d, doc)| {
                doc.iter()
                    .map(|&w| {
                        let t = rng.below(k);
                        tw[t * v + w] += 1.0;
                        tt[t] += 1.0;
                        dt[d][t] += 1.0;
                        t
                    })
                    .collect()
            })
            .collect();
        let mut p = vec![0f64; k];
        for _ in 0..iterations {
            for (d, doc) in docs.iter().enumerate() {
                for (i, &w) in doc.iter().enumerate() {
                    let old = z[d][i];
                    tw[old * v + w] -= 1.0;
                    tt[old] -= 1.0;
                    dt[d][old] -= 1.0;
                    let t = sample(&mut p, &mut rng, |t| {
                        (dt[d][t] + alpha) * (tw[t * v + w] + beta) / (tt[t] + v as f64 * beta)
                    });
                    z[d][i] = t;
                    tw[t * v + w] += 1.0;
                    tt[t] += 1.0;
                    dt[d][t] += 1.0;
                }
            }
        }
        let mut topics = Topics {
            k,
            alpha,
            beta,
            v,
            topic_word: tw,
            topic_total: tt,
            mixtures: HashMap::new(),
        };
        for (doc, counts) in docs.iter().zip(&dt) {
            let m = topics.mixture_of_counts(counts, doc.len());
            topics.mixtures.insert(doc.clone(), m);
        }
        topics
    }

    fn mixture_of_counts(&self, counts: &[f64], n: usize) -> Vec<f32> {
        let denom = n as f64 + self.k as f64 * self.alpha;
        counts
            .iter()
            .map(|c| ((c + self.alpha) / denom) as f32)
            .collect()
    }

    /// The topic mixture of a word sequence: the fitted one for a training caption, else folded
    /// in (`iterations` Gibbs sweeps over its words with the topics fixed; seeded by its words).
    pub fn mixture(&self, doc: &[usize], iterations: usize) -> Vec<f32> {
        if let Some(m) = self.mixtures.get(doc) {
            return m.clone();
        }
        let seed = doc.iter().fold(0xF01Du64, |h, &w| {
            h.wrapping_mul(0x100_0000_01B3) ^ w as u64
        });
        let mut rng = Rng::new(seed);
        let (k, v) = (self.k, self.v);
        let mut counts = vec![0f64; k];
        let mut z: Vec<usize> = doc
            .iter()
            .map(|_| {
                let t = rng.below(k);
                counts[t] += 1.0;
                t
            })
            .collect();
        let mut p = vec![0f64; k];
        for _ in 0..iterations {
            for (i, &w) in doc.iter().enumerate() {
                counts[z[i]] -= 1.0;
                let t = sample(&mut p, &mut rng, |t| {
                    (counts[t] + self.alpha) * (self.topic_word[t * v + w] + self.beta)
                        / (self.topic_total[t] + v as f64 * self.beta)
                });
                z[i] = t;
                counts[t] += 1.0;
            }
        }
        self.mixture_of_counts(&counts, doc.len())
    }
}

/// Draw an index in proportion to `weight(t)` for t < `p.len()` (`p` is scratch space).
fn sample(p: &mut [f64], rng: &mut Rng, weight: impl Fn(usize) -> f64) -> usize {
    let mut total = 0.0;
    for (t, x) in p.iter_mut().enumerate() {
        total += weight(t);
        *x = total;
    }
    let u = rng.unit() * total;
    p.iter().position(|&c| c > u).unwrap_or(p.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_topics_separate_two_vocabularies() {
        // words 2–5 in one kind of caption, 6–9 in the other
        let mut docs = Vec::new();
        for i in 0..60 {
            let base = if i % 2 == 0 { 2 } else { 6 };
            docs.push(vec![base + i % 4, base + (i / 2) % 4, base + (i / 3) % 4]);
        }
        let t = Topics::fit(10, &docs, 2, 100, 0);
        let a = t.mixture(&docs[0], 20);
        let b = t.mixture(&docs[1], 20);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let top = |m: &[f32]| if m[0] > m[1] { 0 } else { 1 };
        assert_ne!(top(&a), top(&b), "{a:?} {b:?}");
        assert!(a[top(&a)] > 0.6 && b[top(&b)] > 0.6, "{a:?} {b:?}");
        // an unseen document is folded in to the topic of its words, the same way every time
        let new = t.mixture(&[3, 4], 50);
        assert_eq!(top(&new), top(&a), "{new:?}");
        assert_eq!(new, t.mixture(&[3, 4], 50));
        // the counts stay consistent
        let words: f64 = t.topic_total.iter().sum();
        assert_eq!(words as usize, docs.iter().map(Vec::len).sum::<usize>());
    }
}
