//! `--precision bf16|int8` end to end with the tiny test model: embeddings close to f32's but not
//! equal, the same zero-shot ranking, bad names refused, and indexes that remember their precision
//! (search follows it; another precision is refused without touching the index).

use std::path::Path;

mod common;
use common::{clip, fails, image, model, ok_out, pictures_of};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `clip embed` of two images and two texts in `precision`: the .jsonl rows' vectors.
fn embed(precision: &str) -> Vec<Vec<f64>> {
    let m = model();
    let dir = tempfile::tempdir().unwrap();

    let (p1, p2) = (image("photo_224.jpg"), image("palette.png"));
    let mut rows = Vec::new();
    for (i, args) in [
        vec!["--image", p1.as_str(), "--image", p2.as_str()],
        vec!["--text", "a photo of a cat", "--text", "a diagram"],
    ]
    .into_iter()
    .enumerate()
    {
        let out_file = dir.path().join(format!("{i}.jsonl"));
        let mut all = vec!["embed", "--model", &m, "--precision", precision];
        all.extend(["--out", s(&out_file)]);
        all.extend(args);
        ok_out(&all);
        for line in std::fs::read_to_string(&out_file).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let e = v["embedding"].as_array().expect("an embedding per row");
            rows.push(e.iter().map(|x| x.as_f64().unwrap()).collect());
        }
    }
    rows
}

#[test]
fn reduced_precision_embeddings_stay_close_to_f32() {
    let f32_rows = embed("f32");
    assert_eq!(f32_rows.len(), 4);
    for p in ["bf16", "int8"] {
        let rows = embed(p);
        assert_eq!(rows.len(), 4, "{p}: one row per input");
        let mut max_delta = 0f64;
        for (a, b) in rows.iter().zip(&f32_rows) {
            let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{p}: rows are unit vectors");
            let cos: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            assert!(cos > 0.99, "{p}: cosine to f32 {cos}");
            for (x, y) in a.iter().zip(b) {
                max_delta = max_delta.max((x - y).abs());
            }
        }
        assert!(max_delta > 1e-6, "{p} gave f32's numbers exactly");
    }
}

#[test]
fn unknown_precision_names_the_known_ones() {
    let out = clip(&[
        "embed",
        "--model",
        &model(),
        "--precision",
        "fp8",
        "--text",
        "x",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown precision 'fp8' (known: f32, bf16, int8)"),
        "{err}"
    );
}

#[test]
fn zero_shot_ranking_survives_int8() {
    let top = |precision: &str| {
        let (out, _) = ok_out(&[
            "classify",
            "--model",
            &model(),
            "--precision",
            precision,
            "--labels",
            "cat,dog,bird,car,tree",
            "--json",
            "--top",
            "5",
            &image("photo_224.jpg"),
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let reference = top("f32");
    assert_eq!(reference.len(), 5);
    for p in ["bf16", "int8"] {
        assert_eq!(top(p)[0], reference[0], "{p}: the top label moved");
    }
}

#[test]
fn an_index_keeps_its_precision_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures_of(&pics, 4, 48);
    let db = dir.path().join("int8.db");
    let m = model();
    ok_out(&[
        "index",
        s(&pics),
        "--model",
        &m,
        "--precision",
        "int8",
        "--db",
        s(&db),
    ]);
    let before = std::fs::read(&db).unwrap();
    // search loads the model in the index's precision without being told
    let probe = pics.join("img0002.png");
    let (out, _) = ok_out(&["search", "--db", s(&db), "--image", s(&probe), "-k", "1"]);
    assert!(out.contains("img0002.png"), "{out}");
    // naming another precision is refused, naming both fingerprints, and the index is unchanged
    let err = fails(&[
        "search",
        "--db",
        s(&db),
        "--precision",
        "f32",
        "--image",
        s(&probe),
    ]);
    assert!(err.contains("was made by model '"), "{err}");
    assert!(
        err.contains("+int8"),
        "the index's precision is named: {err}"
    );
    let err = fails(&["index", s(&pics), "--model", &m, "--db", s(&db)]);
    assert!(err.contains("pass --reembed to rebuild it"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the index was changed");
}
