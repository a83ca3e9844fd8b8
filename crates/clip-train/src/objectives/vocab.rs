//! The output vocabularies of the predictive objectives, over the training captions' BPE tokens
//! in a compact index (0 = start, 1 = end, 2… = the units in sorted order):
//!
//! - `Tokens`: every BPE token (P-BoW, P-LM);
//! - `Ngrams(n)`: every run of 1…n consecutive tokens, the most frequent `max_units` kept (Visual
//!   N-Grams, Li et al. 2017);
//! - `Phrases`: every comma-separated phrase of a caption as one unit — the keywords and names of
//!   the emoji captions, our analogue of hashtags (Mahajan et al. 2018).
//!
//! Predicting over these instead of all 49,408 BPE ids keeps the output layers small; a unit
//! outside the vocabulary (in a class name never seen in training) cannot be predicted and is left
//! out of a score.

use std::collections::{BTreeMap, HashMap};

use clip_tokenizer::Tokenizer;

pub const BOS: usize = 0;
pub const EOS: usize = 1;

/// CLIP's BPE id of ",".
const COMMA: u32 = 267;

/// What one output unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    Tokens,
    Ngrams(usize),
    Phrases,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    pub units: Units,
    /// compact index − 2 → the unit's BPE ids
    pub keys: Vec<Vec<u32>>,
    index: HashMap<Vec<u32>, usize>,
    /// DeViSE's frozen word vectors over these units, when its objective built the vocabulary
    pub vectors: Option<std::sync::Arc<super::devise::WordVectors>>,
    /// the LDA topic model over these units, when its objective built the vocabulary
    pub topics: Option<std::sync::Arc<super::lda::Topics>>,
}

impl Vocab {
    /// The token vocabulary of `captions` (tokenised with `tok`, cut to `ctx` as in training).
    pub fn build<'a>(
        tok: &Tokenizer,
        ctx: usize,
        captions: impl Iterator<Item = &'a str>,
    ) -> Vocab {
        Vocab::build_units(tok, ctx, captions, Units::Tokens, usize::MAX)
    }

    /// The vocabulary of `units` in `captions`: the `max_units` most frequent (ties in sorted order).
    pub fn build_units<'a>(
        tok: &Tokenizer,
        ctx: usize,
        captions: impl Iterator<Item = &'a str>,
        units: Units,
        max_units: usize,
    ) -> Vocab {
        let mut counts: BTreeMap<Vec<u32>, usize> = BTreeMap::new();
        for c in captions {
            let (ids, _) = tok.encode_truncated(c, ctx);
            for u in split(inner(&ids), units) {
                *counts.entry(u).or_default() += 1;
            }
        }
        let mut all: Vec<(Vec<u32>, usize)> = counts.into_iter().collect();
        if all.len() > max_units {
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            all.truncate(max_units);
            all.sort();
        }
        Vocab::from_keys(units, all.into_iter().map(|(k, _)| k).collect())
    }

    pub fn from_keys(units: Units, keys: Vec<Vec<u32>>) -> Vocab {
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i + 2))
            .collect();
        Vocab {
            units,
            keys,
            index,
            vectors: None,
            topics: None,
        }
    }

    /// A token vocabulary of exactly `tokens`.
    pub fn from_tokens(tokens: Vec<u32>) -> Vocab {
        Vocab::from_keys(Units::Tokens, tokens.into_iter().map(|t| vec![t]).collect())
    }

    /// Output size: the units plus start and end.
    pub fn len(&self) -> usize {
        self.keys.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The compact ids of a tokenised row's units (between its start and end tokens), in order,
    /// unknown units left out.
    pub fn words(&self, row: &[u32]) -> Vec<usize> {
        split(inner(row), self.units)
            .into_iter()
            .filter_map(|u| self.index.get(&u).copied())
            .collect()
    }
}

/// The units of a token sequence.
fn split(tokens: &[u32], units: Units) -> Vec<Vec<u32>> {
    match units {
        Units::Tokens => tokens.iter().map(|&t| vec![t]).collect(),
        Units::Ngrams(n) => (1..=n.max(1))
            .flat_map(|k| tokens.windows(k).map(<[u32]>::to_vec))
            .collect(),
        Units::Phrases => tokens
            .split(|&t| t == COMMA)
            .filter(|p| !p.is_empty())
            .map(<[u32]>::to_vec)
            .collect(),
    }
}

/// The tokens of a `[SOT] … [EOT] 0 0…` row between its start and end.
fn inner(row: &[u32]) -> &[u32] {
    let end = row
        .iter()
        .position(|&t| t == clip_tokenizer::EOT)
        .unwrap_or(row.len());
    let start = usize::from(row.first() == Some(&clip_tokenizer::SOT));
    &row[start.min(end)..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_map_into_the_compact_index() {
        let tok = Tokenizer::global();
        let v = Vocab::build(tok, 32, ["a red cat", "a cat"].into_iter());
        assert_eq!(v.len(), 3 + 2);
        let (row, _) = tok.encode_truncated("red cat dog", 32);
        let w = v.words(&row);
        assert_eq!(w.len(), 2, "dog is not in the vocabulary");
        assert!(w.iter().all(|&i| (2..5).contains(&i)));
    }

    #[test]
    fn ngrams_and_phrases() {
        let tok = Tokenizer::global();
        assert_eq!(tok.encode(","), vec![COMMA]);
        let caps = ["red cat, big dog", "red cat"];
        let ng = Vocab::build_units(tok, 32, caps.into_iter(), Units::Ngrams(2), usize::MAX);
        // red, cat, big, dog, ",", and the bigrams red-cat, cat-",", ","-big, big-dog
        assert_eq!(ng.keys.len(), 9);
        let (row, _) = tok.encode_truncated("red cat", 32);
        assert_eq!(ng.words(&row).len(), 3, "red, cat, red cat");
        let top = Vocab::build_units(tok, 32, caps.into_iter(), Units::Ngrams(2), 3);
        assert_eq!(top.keys.len(), 3, "the most frequent: red, cat, red cat");
        assert_eq!(top.words(&row).len(), 3);
        let ph = Vocab::build_units(tok, 32, caps.into_iter(), Units::Phrases, usize::MAX);
        assert_eq!(ph.keys.len(), 2, "'red cat' and 'big dog'");
        assert_eq!(ph.words(&row).len(), 1);
        let (other, _) = tok.encode_truncated("red dog", 32);
        assert!(ph.words(&other).is_empty());
    }
}
