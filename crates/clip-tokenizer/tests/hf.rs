//! open_clip's `HFTokenizer` parity for SigLIP (T5-style SentencePiece Unigram) and SigLIP2
//! (Gemma-style BPE) tokenizers: ids of a 234-line corpus equal open_clip's
//! (tools/gen_golden_siglip.py; testdata/PROVENANCE.md).

use std::path::{Path, PathBuf};

use clip_tokenizer::{HfTokenizer, TokenizeError};

fn testdata(rel: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata")
    .join(rel)
}

fn canonicalize() -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(r#"{"clean": "canonicalize"}"#).unwrap()
}

fn check(model: &str, ids: &str) {
    let tok = HfTokenizer::from_dir(&testdata(model), 64, Some(&canonicalize())).unwrap();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata(ids)).unwrap()).unwrap();
    assert!(cases.len() >= 200, "{} cases", cases.len());
    let mut bad = Vec::new();
    let mut truncated = 0;
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = tok.encode(text, true).unwrap();
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, open_clip {want:?}"));
        }
        if matches!(tok.encode(text, false), Err(TokenizeError::TooLong { .. })) {
            truncated += 1;
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad[..bad.len().min(5)].join("\n")
    );
    assert!(
        truncated > 0,
        "the corpus has texts longer than the context"
    );
}

#[test]
fn siglip_ids_match_open_clip() {
    check("models/siglip_openclip_hub", "tokenizer/siglip_ids.json");
}

#[test]
fn siglip2_ids_match_open_clip() {
    check("models/siglip2_openclip_hub", "tokenizer/siglip2_ids.json");
}

#[test]
fn bad_settings_are_clear_errors() {
    let dir = testdata("models/siglip_openclip_hub");
    let kw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"clean": "shout"}"#).unwrap();
    let e = HfTokenizer::from_dir(&dir, 64, Some(&kw))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer_kwargs.clean 'shout' is not one of"),
        "{e}"
    );
    let e = HfTokenizer::from_dir(&testdata("models/vit_openclip_hub"), 64, None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot read the tokenizer"), "{e}");
}
