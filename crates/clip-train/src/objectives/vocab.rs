//! The training vocabulary of the predictive objectives (P-BoW, P-LM): every BPE token of the
//! training captions, in a compact index (0 = start, 1 = end, 2… = the tokens by first appearance
//! in sorted order). Predicting over it instead of all 49,408 BPE ids keeps the output layers
//! small; a token outside it (in a class name never seen in training) cannot be predicted and is
//! left out of a score.

use std::collections::{BTreeSet, HashMap};

use clip_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

pub const BOS: usize = 0;
pub const EOS: usize = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    /// compact index − 2 → BPE id
    pub tokens: Vec<u32>,
    #[serde(skip)]
    index: HashMap<u32, usize>,
}

impl Vocab {
    /// The vocabulary of `captions` (tokenised with `tok`, cut to `ctx` as in training).
    pub fn build<'a>(
        tok: &Tokenizer,
        ctx: usize,
        captions: impl Iterator<Item = &'a str>,
    ) -> Vocab {
        let mut set = BTreeSet::new();
        for c in captions {
            let (ids, _) = tok.encode_truncated(c, ctx);
            set.extend(inner(&ids).iter().copied());
        }
        Vocab::from_tokens(set.into_iter().collect())
    }

    pub fn from_tokens(tokens: Vec<u32>) -> Vocab {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i + 2))
            .collect();
        Vocab { tokens, index }
    }

    /// Rebuild the lookup after deserialising.
    pub fn reindexed(self) -> Vocab {
        Vocab::from_tokens(self.tokens)
    }

    /// Output size: the tokens plus start and end.
    pub fn len(&self) -> usize {
        self.tokens.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The compact ids of a tokenised row's words (between its start and end tokens), unknown
    /// tokens left out.
    pub fn words(&self, row: &[u32]) -> Vec<usize> {
        inner(row)
            .iter()
            .filter_map(|t| self.index.get(t).copied())
            .collect()
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
        let json = serde_json::to_string(&v).unwrap();
        let back: Vocab = serde_json::from_str::<Vocab>(&json).unwrap().reindexed();
        assert_eq!(back.words(&row), w);
    }
}
