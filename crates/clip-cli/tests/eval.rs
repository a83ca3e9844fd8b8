//! `clip eval …` end to end on real PNG files (synthetic scenes rendered by clip-data and written
//! with the `image` crate) and the tiny HF test model: outputs, files, and the messages for bad input.

use std::path::{Path, PathBuf};

use clip_data::synth::{Split, SyntheticScenes, class_names};

mod common;
use common::{clip, fails, model, ok_out as ok, root};

/// Another tiny ViT with the same 32-px input as `model()` (so the feature-cache key matches).
fn other_model() -> String {
    root()
        .join("testdata/models/vit_openclip_fp16")
        .display()
        .to_string()
}

fn json(args: &[&str]) -> serde_json::Value {
    let (out, _) = ok(args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Class folders of `per_class` scenes for the first `classes` classes that occur, and a JSONL
/// manifest + classes file of the same images. Returns (folder root, manifest, classes file).
fn scenes(
    dir: &Path,
    name: &str,
    classes: usize,
    per_class: usize,
    seed: u64,
) -> (PathBuf, PathBuf, PathBuf) {
    let data = SyntheticScenes::new(seed, 48, 0.0);
    let names = class_names();
    let mut chosen: Vec<usize> = Vec::new();
    let mut counts = vec![0usize; names.len()];
    let root = dir.join(name);
    let mut manifest = String::new();
    for i in 0..20_000u64 {
        let scene = data.scene(Split::Train, i);
        let c = scene.class();
        if !chosen.contains(&c) {
            if chosen.len() == classes {
                continue;
            }
            chosen.push(c);
        }
        if counts[c] == per_class {
            if chosen.iter().all(|&c| counts[c] == per_class) {
                break;
            }
            continue;
        }
        counts[c] += 1;
        let img = data.render(&scene, i);
        let folder = root.join(&names[c]);
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join(format!("{i}.png"));
        image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
            .unwrap()
            .save(&file)
            .unwrap();
        let label = chosen.iter().position(|&x| x == c).unwrap();
        manifest.push_str(&format!(
            "{{\"image\": \"{name}/{}/{i}.png\", \"label\": {label}, \"captions\": [\"a {}\", \"{}\"]}}\n",
            names[c], names[c], names[c]
        ));
    }
    let in_order: Vec<&String> = chosen.iter().map(|&c| &names[c]).collect();
    let classes_file = dir.join(format!("{name}_classes.txt"));
    std::fs::write(
        &classes_file,
        in_order
            .iter()
            .map(|s| format!("{s}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mf = dir.join(format!("{name}.jsonl"));
    std::fs::write(&mf, manifest).unwrap();
    (root, mf, classes_file)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn zeroshot_compares_prompts_and_writes_confusion_and_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let (folders, manifest, classes) = scenes(dir.path(), "test", 3, 4, 1);
    let cache = dir.path().join("cache");
    let out = dir.path().join("out");
    let base = [
        "eval",
        "zeroshot",
        "--model",
        &model(),
        "--cache",
        s(&cache),
        "--json",
    ];
    let v = json(
        &[
            &base[..],
            &[
                "--data",
                s(&manifest),
                "--classes",
                s(&classes),
                "--templates",
                "imagenet",
                "--out",
                s(&out),
                "--save-classifier",
                s(&dir.path().join("clf.safetensors")),
            ],
        ]
        .concat(),
    );
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{v}");
    assert_eq!(rows[0]["prompts"], "class name only");
    assert!(
        rows[2]["prompts"]
            .as_str()
            .unwrap()
            .contains("80 templates")
    );
    for r in rows {
        let t1 = r["top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&t1) && r["top5"].as_f64().unwrap() >= t1);
    }
    assert_eq!(v["images"], 12);
    let csv = std::fs::read_to_string(out.join("confusion.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let counts: u64 = csv
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(1).map(|x| x.parse::<u64>().unwrap()))
        .sum();
    assert_eq!(counts, 12);
    assert!(image::open(out.join("confusion.png")).is_ok());
    // the saved classifier gives the ensemble's numbers; folders give the same as the manifest
    let again = json(
        &[
            &base[..],
            &[
                "--data",
                s(&folders),
                "--classes",
                s(&classes),
                "--classifier",
                s(&dir.path().join("clf.safetensors")),
            ],
        ]
        .concat(),
    );
    assert_eq!(again["rows"][0]["top1"], rows[2]["top1"]);
    // a saved classifier of another model is refused
    let err = fails(&[
        "eval",
        "zeroshot",
        "--model",
        &other_model(),
        "--no-cache",
        "--data",
        s(&manifest),
        "--classes",
        s(&classes),
        "--classifier",
        s(&dir.path().join("clf.safetensors")),
    ]);
    assert!(err.contains("was built with another model"), "{err}");
    // a file with the right model and classes but the wrong dtype or shape is refused, naming both
    let names: Vec<String> = std::fs::read_to_string(&classes)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let bad = dir.path().join("bad_clf.safetensors");
    for (dtype, shape) in [
        (safetensors::Dtype::F32, vec![names.len(), 17]),
        (safetensors::Dtype::F64, vec![names.len(), 8]),
    ] {
        let bytes = vec![0u8; shape.iter().product::<usize>() * dtype.bitsize() / 8];
        let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), &bytes).unwrap();
        let meta: std::collections::HashMap<String, String> = [
            (
                "model".to_string(),
                v["model"].as_str().unwrap().to_string(),
            ),
            (
                "classes".to_string(),
                serde_json::to_string(&names).unwrap(),
            ),
        ]
        .into();
        std::fs::write(
            &bad,
            safetensors::serialize([("classifier", view)], Some(meta)).unwrap(),
        )
        .unwrap();
        let err = fails(
            &[
                &base[..],
                &[
                    "--data",
                    s(&manifest),
                    "--classes",
                    s(&classes),
                    "--classifier",
                    s(&bad),
                ],
            ]
            .concat(),
        );
        assert!(
            err.contains(&format!(
                "is {dtype:?} {shape:?}; expected F32 [{}, 16]",
                names.len()
            )),
            "{err}"
        );
    }
}

#[test]
fn probe_fewshot_robustness_and_retrieval_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_, train, classes) = scenes(dir.path(), "train", 3, 6, 2);
    let (_, test, _) = scenes(dir.path(), "test", 3, 4, 3);
    let cache = dir.path().join("cache");
    let m = ["--model", &model(), "--cache", s(&cache), "--json"];
    let tt = [
        "--train",
        s(&train),
        "--test",
        s(&test),
        "--classes",
        s(&classes),
    ];
    let v = json(&[&["eval", "probe"][..], &m, &tt].concat());
    let search = v["search"].as_array().unwrap();
    assert!(search.len() >= 7 && search.len() <= 15, "{v}");
    assert!(v["c"].as_f64().unwrap() > 0.0 && v["top1"].as_f64().unwrap() <= 1.0);

    let out = dir.path().join("fs");
    let v = json(
        &[
            &["eval", "fewshot"][..],
            &m,
            &tt,
            &["--k", "1,2,4", "--seeds", "2", "--out", s(&out)],
        ]
        .concat(),
    );
    assert_eq!(v["mean"].as_array().unwrap().len(), 3);
    assert_eq!(v["runs"][0].as_array().unwrap().len(), 2);
    assert!(image::open(out.join("fewshot.png")).is_ok());
    // k larger than the smallest class is refused before any work
    let err = fails(&[&["eval", "fewshot"][..], &m, &tt, &["--k", "1,7"]].concat());
    assert!(
        err.contains("k = 7 is larger than the smallest class")
            && err.contains("has 6 training example(s)"),
        "{err}"
    );

    let v = json(
        &[
            &["eval", "robustness"][..],
            &m,
            &[
                "--train",
                s(&train),
                "--source",
                s(&test),
                "--shift",
                &format!("again={}", s(&test)),
                "--classes",
                s(&classes),
                "--k",
                "1,2",
                "--seeds",
                "1",
            ],
        ]
        .concat(),
    );
    assert!(v["zero_shot"]["effective_robustness"].is_number(), "{v}");
    assert_eq!(v["baseline"].as_array().unwrap().len(), 3);

    let v = json(
        &[
            &["eval", "retrieval"][..],
            &m,
            &["--data", s(&test), "--ks", "1,5,12"],
        ]
        .concat(),
    );
    let r = v["recall"].as_array().unwrap();
    assert_eq!(v["captions"], 24);
    assert!(r[0]["image_to_text"].as_f64().unwrap() <= r[1]["image_to_text"].as_f64().unwrap());
    assert!(r[0]["text_to_image"].as_f64().unwrap() <= r[1]["text_to_image"].as_f64().unwrap());
    assert_eq!(
        r[2]["text_to_image"].as_f64().unwrap(),
        1.0,
        "12 images: every caption finds its image in the top 12"
    );
}

#[test]
fn overlap_finds_copied_images() {
    let dir = tempfile::tempdir().unwrap();
    let (_, eval, classes) = scenes(dir.path(), "eval", 3, 5, 4);
    let (_, train, _) = scenes(dir.path(), "train", 3, 5, 5);
    // put three evaluation images into the training manifest
    let copies: Vec<String> = std::fs::read_to_string(&eval)
        .unwrap()
        .lines()
        .take(3)
        .map(String::from)
        .collect();
    let mut t = std::fs::read_to_string(&train).unwrap();
    for c in &copies {
        t.push_str(c);
        t.push('\n');
    }
    std::fs::write(&train, t).unwrap();
    let out = dir.path().join("o");
    let base = [
        "eval",
        "overlap",
        "--model",
        &model(),
        "--no-cache",
        "--json",
        "--train",
        s(&train),
        "--eval",
        s(&eval),
        "--classes",
        s(&classes),
    ];
    let v = json(&[&base[..], &["--threshold", "0.999", "--out", s(&out)]].concat());
    assert!(v["report"]["overlap"].as_u64().unwrap() >= 3, "{v}");
    let dups = std::fs::read_to_string(out.join("duplicates.csv")).unwrap();
    assert!(dups.lines().count() > 3);
    let v = json(&base);
    let cal = &v["calibration"];
    assert!(
        cal["threshold"].as_f64().unwrap() > 0.0 && cal["positives"].as_u64().unwrap() == 15,
        "{v}"
    );
}

#[test]
fn bad_evaluation_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (folders, manifest, classes) = scenes(dir.path(), "d", 2, 2, 6);
    let zs = |data: &str, classes: &str| {
        fails(&[
            "eval",
            "zeroshot",
            "--model",
            &model(),
            "--no-cache",
            "--data",
            data,
            "--classes",
            classes,
        ])
    };
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    assert_eq!(
        zs(s(&manifest), s(&empty)),
        format!("error: the class list '{}' is empty\n", empty.display())
    );
    let dup = dir.path().join("dup.txt");
    std::fs::write(&dup, "red circle\nblue square\nred circle\n").unwrap();
    assert_eq!(
        zs(s(&manifest), s(&dup)),
        format!(
            "error: class name \"red circle\" appears twice in '{}' (lines 1 and 3)\n",
            dup.display()
        )
    );
    // a label beyond the class list
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&manifest).unwrap() + "{\"image\": \"d/x.png\", \"label\": 7}\n",
    )
    .unwrap();
    let err = zs(s(&bad), s(&classes));
    assert!(
        err.contains("row 5: label 7 is not in the class list") && err.contains("(2 classes)"),
        "{err}"
    );
    // a class named in the list without images in the folder tree
    let more = dir.path().join("more.txt");
    let mut names = std::fs::read_to_string(&classes).unwrap();
    names.push_str("purple hexagon\n");
    std::fs::write(&more, names).unwrap();
    std::fs::create_dir_all(folders.join("purple hexagon")).unwrap();
    assert_eq!(
        zs(s(&folders), s(&more)),
        format!(
            "error: class \"purple hexagon\" has no images in '{}'\n",
            folders.display()
        )
    );
    // templates without {}
    let t = dir.path().join("t.txt");
    std::fs::write(&t, "a photo\n").unwrap();
    let err = fails(&[
        "eval",
        "zeroshot",
        "--model",
        &model(),
        "--no-cache",
        "--data",
        s(&manifest),
        "--classes",
        s(&classes),
        "--templates",
        s(&t),
    ]);
    assert_eq!(
        err,
        "error: template \"a photo\" has no {} where the class name goes\n"
    );
}

#[test]
fn feature_cache_from_another_model_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (_, train, classes) = scenes(dir.path(), "c", 2, 4, 7);
    let cache = dir.path().join("cache");
    // the probe needs image features only, so any image tower will do
    let run = |m: &str, cache_args: &[&str]| {
        let args = [
            &[
                "eval",
                "probe",
                "--model",
                m,
                "--json",
                "--c",
                "1",
                "--train",
                s(&train),
                "--test",
                s(&train),
                "--classes",
                s(&classes),
            ][..],
            cache_args,
        ]
        .concat();
        let out = clip(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let cached = ["--cache", s(&cache)];
    let (a, err) = run(&model(), &cached);
    assert!(!err.contains("recomputing"), "{err}");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "train and test are one dataset: one file"
    );
    let (b, err) = run(&other_model(), &cached);
    assert!(
        err.contains("was computed by another model") && err.contains("recomputing"),
        "{err}"
    );
    // the rebuilt cache holds the other model's features: the same numbers as without a cache
    let (fresh, _) = run(&other_model(), &["--no-cache"]);
    assert_eq!(b["top1"], fresh["top1"]);
    assert_eq!(b["iterations"], fresh["iterations"]);
    let (_, err) = run(&other_model(), &cached);
    assert!(
        !err.contains("recomputing"),
        "the second run reuses the rebuilt cache: {err}"
    );
    assert_ne!(a["model"], b["model"]);
}

#[test]
fn damaged_shards_are_reported_in_evaluation_as_in_training() {
    let dir = tempfile::tempdir().unwrap();
    let png = std::fs::read(root().join("testdata/images/grey.png")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (i, label) in ["0", "1", "0", "1"].iter().enumerate() {
        for (ext, bytes) in [("png", png.as_slice()), ("cls", label.as_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("s{i}.{ext}"), bytes).unwrap();
        }
    }
    let bytes = b.into_inner().unwrap();
    let shard = dir.path().join("eval.tar");
    // cut inside the last sample's image
    std::fs::write(&shard, &bytes[..bytes.len() - 1024 - png.len() / 2]).unwrap();
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "dark\nlight\n").unwrap();
    let (out, err) = ok(&[
        "eval",
        "zeroshot",
        "--model",
        &model(),
        "--no-cache",
        "--json",
        "--data",
        s(&shard),
        "--classes",
        s(&classes),
        "--templates",
        "simple",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["images"], 3, "{v}");
    assert!(
        err.contains("warning: ") && err.contains("damaged or truncated"),
        "{err}"
    );
}
