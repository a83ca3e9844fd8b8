//! OpenAI CLIP's byte-level BPE tokenizer, id-for-id compatible with open_clip's `SimpleTokenizer`.
//!
//! The merges file (`bpe_simple_vocab_16e6.txt.gz`, MIT licence, © OpenAI; see `assets/LICENSE`) is
//! embedded in the binary. Text is cleaned like the reference (ftfy-style fixes, HTML unescaped
//! twice, whitespace collapsed, lower-cased), split with the same pattern, then BPE-merged.

mod clean;
pub mod hf;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{OnceLock, RwLock};

pub use clean::{basic_clean, fix_text, whitespace_clean};
pub use hf::{HfTokenizer, TextTokenizer};

/// Id of `<|startoftext|>` (open_clip calls it `<start_of_text>`).
pub const SOT: u32 = 49406;
/// Id of `<|endoftext|>` (open_clip calls it `<end_of_text>`).
pub const EOT: u32 = 49407;
/// Size of the vocabulary.
pub const VOCAB_SIZE: usize = 49408;
/// The context length every public CLIP uses.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

const MERGES_GZ: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");
const N_MERGES: usize = 49152 - 256 - 2;
const CACHE_LIMIT: usize = 200_000;

/// Errors from tokenisation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenizeError {
    /// The text needs more tokens than the context holds and truncation was not asked for.
    #[error(
        "text is {tokens} tokens long (with start/end tokens) but the context length is {context_length}; \
         shorten it or pass --truncate: {preview:?}"
    )]
    TooLong {
        tokens: usize,
        context_length: usize,
        preview: String,
    },
    /// The context length cannot hold even the start and end tokens.
    #[error("context length {0} is too small: it must hold at least the start and end tokens (2)")]
    ContextTooSmall(usize),
    /// A token id outside the vocabulary was given to `decode`.
    #[error("token id {0} is outside the vocabulary (0..{VOCAB_SIZE})")]
    UnknownId(u32),
    /// The Hugging Face tokenizer failed.
    #[error("the tokenizer failed: {0}")]
    Backend(String),
}

/// A text of a batch that cannot be tokenized (`row` counts from 1).
#[derive(Debug, thiserror::Error)]
#[error("text {row} cannot be tokenized")]
pub struct RowError {
    pub row: usize,
    #[source]
    pub source: TokenizeError,
}

/// The CLIP tokenizer. Cheap to share between threads; use [`Tokenizer::global`] for the embedded vocab.
pub struct Tokenizer {
    /// byte -> vocab id of the single-byte symbol
    byte_ids: [u32; 256],
    /// (left id, right id) -> merged id; the merge rank is `merged id - 512`
    merges: HashMap<(u32, u32), u32>,
    /// vocab id -> string of byte-encoder characters (with `</w>` where it ends a word)
    decoder: Vec<String>,
    /// byte-encoder char -> byte
    byte_decoder: HashMap<char, u8>,
    pattern: regex::Regex,
    cache: RwLock<HashMap<String, Vec<u32>>>,
}

/// OpenAI's `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100 onwards.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (b as u8, char::from_u32(c).expect("valid char")))
        .collect()
}

impl Tokenizer {
    /// The tokenizer built from the embedded merges file (built once per process).
    pub fn global() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(Tokenizer::embedded)
    }

    /// A new tokenizer from the embedded merges file (with its own, empty, word cache).
    pub fn embedded() -> Tokenizer {
        let mut text = String::new();
        flate2::read::GzDecoder::new(MERGES_GZ)
            .read_to_string(&mut text)
            .expect("embedded merges file is valid gzip UTF-8");
        Tokenizer::from_merges(&text)
    }

    /// Build from the text of a merges file (first line is a header).
    pub fn from_merges(text: &str) -> Tokenizer {
        let table = bytes_to_unicode();
        let mut decoder: Vec<String> = table.iter().map(|(_, c)| c.to_string()).collect();
        decoder.extend(table.iter().map(|(_, c)| format!("{c}</w>")));
        let mut byte_ids = [0u32; 256];
        for (i, (b, _)) in table.iter().enumerate() {
            byte_ids[*b as usize] = i as u32;
        }
        let merge_lines: Vec<(&str, &str)> = text
            .split('\n')
            .skip(1)
            .take(N_MERGES)
            .map(|l| {
                let mut it = l.split_whitespace();
                (it.next().unwrap_or(""), it.next().unwrap_or(""))
            })
            .collect();
        for (a, b) in &merge_lines {
            decoder.push(format!("{a}{b}"));
        }
        decoder.push("<start_of_text>".into());
        decoder.push("<end_of_text>".into());
        let encoder: HashMap<&str, u32> = decoder
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i as u32))
            .collect();
        let mut merges = HashMap::with_capacity(merge_lines.len());
        for (rank, (a, b)) in merge_lines.iter().enumerate() {
            if let (Some(&ia), Some(&ib)) = (encoder.get(a), encoder.get(b)) {
                // A pair seen twice keeps its first (lowest) rank, as a Python dict built by zip would not:
                // the file has no duplicates, so either rule gives the same table.
                merges.entry((ia, ib)).or_insert(512 + rank as u32);
            }
        }
        let byte_decoder = table.iter().map(|(b, c)| (*c, *b)).collect();
        let pattern = regex::Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .expect("valid pattern");
        Tokenizer {
            byte_ids,
            merges,
            decoder,
            byte_decoder,
            pattern,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// BPE of one pre-token (given as UTF-8 bytes), appended to `out`.
    fn bpe(&self, token: &str, out: &mut Vec<u32>) {
        match token {
            "<start_of_text>" => return out.push(SOT),
            "<end_of_text>" => return out.push(EOT),
            _ => {}
        }
        if let Some(ids) = self.cache.read().expect("cache lock").get(token) {
            out.extend_from_slice(ids);
            return;
        }
        let bytes = token.as_bytes();
        let mut word: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        if let Some(last) = word.last_mut() {
            *last += 256; // the `</w>` variant of the last byte
        }
        while word.len() > 1 {
            // the adjacent pair with the lowest merge rank
            let best = word
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])).map(|&m| (m, w[0], w[1])))
                .min();
            let Some((merged, a, b)) = best else { break };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        out.extend_from_slice(&word);
        let mut cache = self.cache.write().expect("cache lock");
        if cache.len() < CACHE_LIMIT {
            cache.insert(token.to_owned(), word);
        }
    }

    /// Token ids of `text` after cleaning, without start/end tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = whitespace_clean(&basic_clean(text)).to_lowercase();
        let mut out = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            self.bpe(m.as_str(), &mut out);
        }
        out
    }

    /// `[SOT] + encode(text) + [EOT]`, unpadded. Over-long text is an error unless `truncate`, in
    /// which case it is cut to `context_length` with EOT as the last kept token.
    pub fn encode_with_specials(
        &self,
        text: &str,
        context_length: usize,
        truncate: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        if context_length < 2 {
            return Err(TokenizeError::ContextTooSmall(context_length));
        }
        let mut ids = Vec::with_capacity(context_length);
        ids.push(SOT);
        ids.extend(self.encode(text));
        ids.push(EOT);
        if ids.len() > context_length {
            if !truncate {
                let preview: String = text.chars().take(60).collect();
                return Err(TokenizeError::TooLong {
                    tokens: ids.len(),
                    context_length,
                    preview: if preview.len() < text.len() {
                        format!("{preview}…")
                    } else {
                        preview
                    },
                });
            }
            ids.truncate(context_length);
            ids[context_length - 1] = EOT;
        }
        Ok(ids)
    }

    /// `[SOT] + encode(text) + [EOT]` cut to `context_length` (at least 2) with EOT as the last kept
    /// token, and whether it was cut (as `clip.tokenize(..., truncate=True)` and open_clip's
    /// training tokenizer).
    pub fn encode_truncated(&self, text: &str, context_length: usize) -> (Vec<u32>, bool) {
        let ctx = context_length.max(2);
        let mut ids = Vec::with_capacity(ctx);
        ids.push(SOT);
        ids.extend(self.encode(text));
        ids.push(EOT);
        let cut = ids.len() > ctx;
        if cut {
            ids.truncate(ctx);
            ids[ctx - 1] = EOT;
        }
        (ids, cut)
    }

    /// Like `clip.tokenize`: one row per text, padded with zeros to `context_length` (texts are
    /// tokenized in parallel; rows keep the input order).
    pub fn tokenize_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        context_length: usize,
        truncate: bool,
    ) -> Result<Vec<Vec<u32>>, RowError> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| {
                let mut ids = self
                    .encode_with_specials(t.as_ref(), context_length, truncate)
                    .map_err(|source| RowError { row: i + 1, source })?;
                ids.resize(context_length, 0);
                Ok(ids)
            })
            .collect()
    }

    /// Text of a sequence of ids (`</w>` becomes a space; invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        let mut bytes = Vec::new();
        for &id in ids {
            let s = self
                .decoder
                .get(id as usize)
                .ok_or(TokenizeError::UnknownId(id))?;
            for c in s.chars() {
                bytes.push(self.byte_decoder.get(&c).copied().unwrap_or(b'?'));
            }
        }
        Ok(String::from_utf8_lossy(&bytes).replace("</w>", " "))
    }

    /// Number of ids in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_layout_matches_openai() {
        let t = Tokenizer::global();
        assert_eq!(t.vocab_size(), VOCAB_SIZE);
        assert_eq!(t.decoder[SOT as usize], "<start_of_text>");
        assert_eq!(t.decoder[0], "!");
        assert_eq!(t.decoder[256], "!</w>");
    }

    #[test]
    fn known_ids() {
        let t = Tokenizer::global();
        // "a photo of a cat." as produced by clip.tokenize
        assert_eq!(
            t.encode("a photo of a cat."),
            vec![320, 1125, 539, 320, 2368, 269]
        );
    }

    #[test]
    fn truncation_keeps_eot_last() {
        let t = Tokenizer::global();
        let long = "word ".repeat(100);
        let err = t.encode_with_specials(&long, 77, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "text is 102 tokens long (with start/end tokens) but the context length is 77; \
                 shorten it or pass --truncate: {:?}",
                format!("{}…", &long[..60])
            )
        );
        let ids = t.encode_with_specials(&long, 77, true).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], SOT);
        assert_eq!(ids[76], EOT);
    }

    #[test]
    fn decode_roundtrip() {
        let t = Tokenizer::global();
        let ids = t.encode("Hello, world! naïve café 🙂");
        assert_eq!(t.decode(&ids).unwrap(), "hello , world ! naïve café 🙂 ");
        assert_eq!(t.decode(&[99999]), Err(TokenizeError::UnknownId(99999)));
    }
}
