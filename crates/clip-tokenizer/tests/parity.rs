//! Ids must equal open_clip's `SimpleTokenizer().encode` on the committed corpus
//! (testdata/tokenizer, made by tools/gen_tokenizer_corpus.py; see testdata/PROVENANCE.md).

use std::io::Read;

use clip_tokenizer::Tokenizer;

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../testdata/tokenizer")
    .join(name)
}

#[test]
fn ids_match_open_clip_on_corpus() {
    let corpus = std::fs::read_to_string(testdata("corpus.txt")).unwrap();
    let mut ids = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(testdata("ids.jsonl.gz")).unwrap())
        .read_to_string(&mut ids)
        .unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    let golden: Vec<Vec<u32>> = ids
        .lines()
        .map(|l| {
            l.trim_matches(['[', ']'])
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect()
        })
        .collect();
    assert!(lines.len() >= 5000, "corpus has {} lines", lines.len());
    assert_eq!(lines.len(), golden.len());
    let tok = Tokenizer::global();
    let mut bad = Vec::new();
    for (i, (text, want)) in lines.iter().zip(&golden).enumerate() {
        let got = tok.encode(text);
        if &got != want {
            bad.push(format!(
                "line {}: {text:?}\n  ours: {got:?}\n  open_clip: {want:?}",
                i + 1
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} lines differ:\n{}",
        bad.len(),
        lines.len(),
        bad[..bad.len().min(15)].join("\n")
    );
}
