//! The `clip` command end to end: outputs, exit codes and the messages users see for bad input.

use std::path::Path;
use std::process::Command;

mod common;
use common::{clip, fails, image, model, root};

fn ok(args: &[&str]) -> String {
    common::ok_out(args).0
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = b[10 + hlen..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

#[test]
fn tokenize_pads_like_clip_tokenize() {
    let out = ok(&["tokenize", "a photo of a cat.", "Hello"]);
    let rows: Vec<Vec<u32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        &rows[0][..8],
        &[49406, 320, 1125, 539, 320, 2368, 269, 49407]
    );
    assert!(rows.iter().all(|r| r.len() == 77));
    assert!(rows[0][8..].iter().all(|&x| x == 0));

    let err = fails(&[
        "tokenize",
        "--context-length",
        "8",
        "one two three four five six seven eight",
    ]);
    assert_eq!(
        err,
        "error: text 1 cannot be tokenized\n  caused by: text is 10 tokens long (with start/end tokens) but the context \
         length is 8; shorten it or pass --truncate: \"one two three four five six seven eight\"\n"
    );
    let out = ok(&[
        "tokenize",
        "--context-length",
        "8",
        "--truncate",
        "one two three four five six seven eight",
    ]);
    let row: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row.len(), 8);
    assert_eq!(row[7], 49407);
}

#[test]
fn non_utf8_text_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("latin1.txt");
    std::fs::write(&f, b"caf\xe9\n").unwrap();
    let err = fails(&["tokenize", "--file", f.to_str().unwrap()]);
    assert_eq!(
        err,
        format!(
            "error: '{}' is not valid UTF-8 text (invalid byte at offset 3); convert it to UTF-8 first\n",
            f.display()
        )
    );
}

#[test]
fn preprocess_writes_normalised_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npy");
    ok(&[
        "preprocess",
        &image("photo_224.jpg"),
        "--size",
        "224",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (shape, data) = read_npy(&out);
    assert_eq!(shape, vec![3, 224, 224]);
    // compare with torchvision's output (golden uint8 before normalisation)
    let bytes = std::fs::read(root().join("testdata/images/golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let golden = st.tensor("photo_224.jpg").unwrap();
    let (mean, std) = (clip_data_mean(), clip_data_std());
    let plane = 224 * 224;
    for (i, (&ours, &r)) in data.iter().zip(golden.data()).enumerate() {
        let c = i / plane;
        let want = (r as f32 / 255.0 - mean[c]) / std[c];
        assert!(
            (ours - want).abs() <= 1.0 / 255.0 / std[c] + 1e-5,
            "pixel {i}: {ours} vs {want}"
        );
    }
}

fn clip_data_mean() -> [f32; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn clip_data_std() -> [f32; 3] {
    [0.26862954, 0.261_302_6, 0.275_777_1]
}

#[test]
fn embed_images_in_order_and_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    let (p1, p2) = (image("photo_224.jpg"), image("palette.png"));
    ok(&[
        "embed",
        "--model",
        &model(),
        "--image",
        &p1,
        "--image",
        &p2,
        "--out",
        a.to_str().unwrap(),
    ]);
    ok(&[
        "embed",
        "--model",
        &model(),
        "--image",
        &p2,
        "--image",
        &p1,
        "--out",
        b.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    let (sa, da) = read_npy(&a);
    let (sb, db) = read_npy(&b);
    assert_eq!(sa, vec![2, 16]);
    assert_eq!(sb, vec![2, 16]);
    for (x, y) in da[..16]
        .iter()
        .zip(&db[16..])
        .chain(da[16..].iter().zip(&db[..16]))
    {
        assert!(
            (x - y).abs() < 1e-5,
            "rows follow input order whatever the batching"
        );
    }
    for row in da.chunks(16) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5);
    }
    let raw = dir.path().join("raw.npy");
    ok(&[
        "embed",
        "--model",
        &model(),
        "--image",
        &p1,
        "--raw",
        "--out",
        raw.to_str().unwrap(),
    ]);
    let (_, dr) = read_npy(&raw);
    let n: f32 = dr.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (n - 1.0).abs() > 1e-3,
        "--raw keeps the unnormalised features"
    );
    for (x, y) in dr.iter().zip(&da[..16]) {
        assert!((x / n - y).abs() < 1e-5);
    }
}

#[test]
fn embed_texts_to_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("captions.txt");
    std::fs::write(&lines, "a dog\na cat on a mat\n").unwrap();
    let npy = dir.path().join("t.npy");
    let jsonl = dir.path().join("t.jsonl");
    let st = dir.path().join("t.safetensors");
    ok(&[
        "embed",
        "--model",
        &model(),
        "--texts-from",
        lines.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    ok(&[
        "embed",
        "--model",
        &model(),
        "--text",
        "a dog",
        "--text",
        "a cat on a mat",
        "--out",
        jsonl.to_str().unwrap(),
    ]);
    ok(&[
        "embed",
        "--model",
        &model(),
        "--text",
        "a dog",
        "--text",
        "a cat on a mat",
        "--out",
        st.to_str().unwrap(),
    ]);
    let (shape, from_npy) = read_npy(&npy);
    assert_eq!(shape, vec![2, 16]);
    let from_jsonl: Vec<f32> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let bytes = std::fs::read(&st).unwrap();
    let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let e = t.tensor("embeddings").unwrap();
    assert_eq!(e.shape(), &[2, 16]);
    let from_st: Vec<f32> = e
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(from_npy, from_st);
    for (a, b) in from_npy.iter().zip(&from_jsonl) {
        assert!((a - b).abs() < 1e-6);
    }
    let err = fails(&[
        "embed",
        "--model",
        &model(),
        "--text",
        "x",
        "--out",
        dir.path().join("t.csv").to_str().unwrap(),
    ]);
    assert!(
        err.contains("must end in .npy, .safetensors or .jsonl"),
        "{err}"
    );
}

#[test]
fn embed_a_directory_and_report_bad_images() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["photo_224.jpg", "grey.png"] {
        std::fs::copy(image(f), dir.path().join(f)).unwrap();
    }
    let out = dir.path().join("e.jsonl");
    ok(&[
        "embed",
        "--model",
        &model(),
        "--images-from",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let inputs: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["input"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        inputs[0].ends_with("grey.png") && inputs[1].ends_with("photo_224.jpg"),
        "{inputs:?}"
    );

    // a corrupt image: a clear error naming it, and the earlier output is untouched
    let bad = dir.path().join("zz_corrupt.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = fails(&[
        "embed",
        "--model",
        &model(),
        "--images-from",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.starts_with(&format!("error: cannot decode image '{}': ", bad.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[test]
fn classify_ranks_labels() {
    let out = ok(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        "cat,dog,bird",
        "--templates",
        "imagenet",
        "--json",
        "--top",
        "3",
        &image("photo_224.jpg"),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]));
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4);

    let err = fails(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        " , ",
        &image("grey.png"),
    ]);
    assert_eq!(
        err,
        "error: the label list is empty: give at least one class name\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("templates.txt");
    std::fs::write(&t, "a photo of a {}.\nno placeholder here\n").unwrap();
    let err = fails(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        "a,b",
        "--templates",
        t.to_str().unwrap(),
        &image("grey.png"),
    ]);
    assert_eq!(
        err,
        "error: template \"no placeholder here\" has no {} where the class name goes\n"
    );
}

#[test]
fn unknown_models_list_the_known_ones() {
    let err = fails(&[
        "embed", "--model", "ViT-Q-99", "--text", "x", "--out", "x.npy",
    ]);
    assert!(err.contains("known models: RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336"), "{err}");
    let err = fails(&[
        "embed",
        "--model",
        "ViT-Q-99:openai",
        "--text",
        "x",
        "--out",
        "x.npy",
    ]);
    assert!(
        err.starts_with("error: unknown model 'ViT-Q-99'; known models: RN50"),
        "{err}"
    );
    let err = fails(&[
        "embed",
        "--model",
        "ViT-B-32:nosuchtag",
        "--text",
        "x",
        "--out",
        "x.npy",
    ]);
    assert!(err.starts_with("error: unknown pretrained tag 'nosuchtag' for ViT-B-32; known tags: openai, laion400m_e31"), "{err}");
}

#[test]
fn pretrained_tag_offline_says_where_to_put_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clip"))
        .args([
            "embed",
            "--model",
            "RN50:openai",
            "--text",
            "x",
            "--out",
            "x.npy",
        ])
        .env("HF_HOME", dir.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9") // nothing listens there: fails like a machine without network
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: model 'RN50:openai' is not in the Hugging Face cache and could not be downloaded"), "{err}");
    assert!(
        err.contains("repository 'timm/resnet50_clip.openai'"),
        "{err}"
    );
    assert!(
        err.contains(&dir.path().display().to_string()),
        "names the cache directory: {err}"
    );
}

#[test]
fn convert_then_embed_gives_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("converted");
    ok(&[
        "convert",
        "--model",
        &model(),
        "--out",
        conv.to_str().unwrap(),
    ]);
    assert!(conv.join("model.safetensors").is_file() && conv.join("config.json").is_file());
    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    ok(&[
        "embed",
        "--model",
        &model(),
        "--text",
        "a red car",
        "--out",
        a.to_str().unwrap(),
    ]);
    ok(&[
        "embed",
        "--model",
        conv.to_str().unwrap(),
        "--text",
        "a red car",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert_eq!(read_npy(&a), read_npy(&b));
}

fn tiny_toml() -> String {
    common::tiny_train_toml(
        r#"data = "synthetic"
batch_size = 8
micro_batch = 4
steps = 4
warmup = 1
eval_every = 2
eval_samples = 16
checkpoint_every = 2
seed = 3"#,
    )
}

#[test]
fn train_from_config_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, tiny_toml()).unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let summary = ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        o,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(v["steps"], 4);
    assert!(v["zero_shot_top1"].as_f64().is_some());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    assert!(out.join("plot.png").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/latest")).unwrap(),
        "step-0000004"
    );
    // the same directory without --resume is refused; with it, training continues to 6 steps —
    // a change of `steps` (it reshapes the schedule) only when asked for by name
    let err = fails(&["train", "--config", cfg.to_str().unwrap(), "--out", o]);
    assert!(err.contains("already holds a run; pass --resume"), "{err}");
    let resume = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        o,
        "--steps",
        "6",
        "--resume",
    ];
    let err = fails(&resume);
    assert!(
        err.contains("--resume would change `steps` from 4 (the run's value) to 6")
            && err.contains("--change steps"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        lines
    );
    ok(&[&resume[..], &["--change", "steps"]].concat());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    // resuming with another model is refused
    let other = tiny_toml().replace("width = 32", "width = 48");
    std::fs::write(&cfg, other).unwrap();
    let err = fails(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        o,
        "--steps",
        "8",
        "--resume",
    ]);
    assert!(err.contains("is of another model than this run"), "{err}");
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "steps = 3\nlearning_rate = 0.1\n").unwrap();
    let err = fails(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "error: invalid training config '{}': unknown field `learning_rate`",
            cfg.display()
        )),
        "{err}"
    );
}

#[test]
fn manifest_with_bad_samples_trains_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::from("image,caption\n");
    for i in 0..12 {
        let src = ["photo_224.jpg", "palette.png", "grey.png"][i % 3];
        let name = format!("img{i}.{}", src.rsplit('.').next().unwrap());
        std::fs::copy(image(src), dir.path().join(&name)).unwrap();
        rows.push_str(&format!("{name},picture number {i}\n"));
    }
    std::fs::write(dir.path().join("zero.png"), b"").unwrap();
    rows.push_str("zero.png,an empty file\n");
    let jpg = std::fs::read(image("photo_224.jpg")).unwrap();
    std::fs::write(dir.path().join("corrupt.jpg"), &jpg[..jpg.len() / 4]).unwrap();
    rows.push_str("corrupt.jpg,a truncated photo\n");
    rows.push_str("img1.png,\n"); // empty caption
    let long = "word ".repeat(40);
    rows.push_str(&format!("img2.png,{long}\n")); // longer than the context: truncated and counted
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, rows).unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        tiny_toml().replace("data = \"synthetic\"", "max_bad_fraction = 0.5"),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = clip(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--steps",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8(o.stdout).unwrap().trim()).unwrap();
    assert!(v["bad_samples"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["truncated_captions"].as_u64().unwrap() >= 1, "{v}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("skipped") && err.contains("bad samples"),
        "{err}"
    );

    // training on `data` into the fresh folder `out` fails with this message
    let train_fails = |data: &Path, out: &str| {
        let out = dir.path().join(out);
        let c = cfg.to_str().unwrap();
        fails(&[
            "train",
            "--config",
            c,
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // a manifest whose files are all missing stops with the reason
    let missing = dir.path().join("missing.csv");
    std::fs::write(&missing, "image,caption\nnope1.jpg,a\nnope2.jpg,b\n").unwrap();
    let err = train_fails(&missing, "run2");
    assert!(
        err.starts_with("error: too many bad samples:") && err.contains("cannot read image '"),
        "{err}"
    );
    // and an empty one is an error
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let err = train_fails(&empty, "run3");
    assert_eq!(
        err,
        format!(
            "error: manifest '{}' has no image–caption pairs\n",
            empty.display()
        )
    );
}

#[test]
fn quickstart_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "quickstart",
        "--steps",
        "2",
        "--json",
        "--out",
        dir.path().join("qs").to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    for key in [
        "zero_shot_top1",
        "chance",
        "steps",
        "samples_per_s",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["steps"], 2);
    assert!((v["chance"].as_f64().unwrap() - 1.0 / 48.0).abs() < 1e-12);
}

#[test]
fn every_input_line_gives_one_output_row() {
    // blank and whitespace-only lines are rows too (they tokenize like clip.tokenize(""))
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lines.txt");
    std::fs::write(&f, "a dog\n\n   \r\na cat\n").unwrap();
    let out = ok(&["tokenize", "--file", f.to_str().unwrap()]);
    let rows: Vec<Vec<u32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        &rows[1][..3],
        &[49406, 49407, 0],
        "a blank line is [SOT, EOT]"
    );
    assert_eq!(rows[1], rows[2]);
    let npy = dir.path().join("t.npy");
    ok(&[
        "embed",
        "--model",
        &model(),
        "--texts-from",
        f.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert_eq!(read_npy(&npy).0, vec![4, 16]);
    // a byte-order mark is not part of the first line
    std::fs::write(&f, "\u{feff}a dog\n").unwrap();
    let bom = ok(&["tokenize", "--file", f.to_str().unwrap()]);
    assert_eq!(bom.lines().next(), out.lines().next());
}

#[test]
fn quickstart_never_deletes_what_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mine");
    std::fs::create_dir_all(out.join("checkpoints")).unwrap();
    std::fs::write(out.join("checkpoints/notes.txt"), "my notes").unwrap();
    let o = out.to_str().unwrap();
    let err = fails(&["quickstart", "--steps", "1", "--json", "--out", o]);
    assert!(
        err.contains("is not empty and does not hold an earlier quickstart run")
            && err.contains("nothing was deleted"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoints/notes.txt")).unwrap(),
        "my notes"
    );
    // its own folder is replaced on the next run
    let qs = dir.path().join("qs");
    let q = qs.to_str().unwrap();
    ok(&["quickstart", "--steps", "1", "--json", "--out", q]);
    ok(&["quickstart", "--steps", "1", "--json", "--out", q]);
    let steps = std::fs::read_to_string(qs.join("metrics.jsonl")).unwrap();
    assert_eq!(
        steps.lines().count(),
        1,
        "the earlier run was replaced, not appended to"
    );
}

#[test]
fn bad_numbers_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = dir.path().join("emoji");
    for f in ["1.5", "-0.1", "1"] {
        let err = fails(&[
            "import-emoji",
            "--packages",
            d,
            "--out",
            out.to_str().unwrap(),
            "--held-out-fraction",
            f,
        ]);
        assert!(
            err.contains(&format!("--held-out-fraction {f} is outside [0, 1)")),
            "{err}"
        );
    }
    let err = fails(&[
        "train",
        "--held-out-fraction",
        "0",
        "--out",
        d,
        "--steps",
        "1",
    ]);
    assert!(err.contains("held_out_fraction must be in (0, 1)"), "{err}");
    let err = fails(&[
        "train",
        "--batch-size",
        "1000000",
        "--model",
        "ViT-B-32",
        "--out",
        d,
    ]);
    assert!(
        err.contains("batch_size 1000000 needs 602.1 GB for the 224×224 input images"),
        "{err}"
    );
    let err = fails(&["train", "--lr", "NaN", "--out", d]);
    assert!(
        err.contains("lr must be a positive number, got NaN"),
        "{err}"
    );
    // sizes are bounded before anything is allocated (usage errors: exit code 2)
    let usage = |args: &[&str]| {
        let o = clip(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        String::from_utf8(o.stderr).unwrap()
    };
    let err = usage(&["tokenize", "--context-length", "100000000000", "a dog"]);
    assert!(err.contains("100000000000 is not in 2..=4096"), "{err}");
    let err = usage(&[
        "preprocess",
        &image("grey.png"),
        "--size",
        "100000",
        "--out",
        "x.npy",
    ]);
    assert!(err.contains("100000 is not in 1..=4096"), "{err}");
    let err = usage(&[
        "embed",
        "--model",
        &model(),
        "--text",
        "a",
        "--batch-size",
        "0",
        "--out",
        "x.npy",
    ]);
    assert!(err.contains("0 is not in 1..=65536"), "{err}");
    let err = usage(&["--threads", "1000000", "models"]);
    assert!(err.contains("1000000 is not in 1..=1024"), "{err}");
}

#[test]
fn no_command_writes_over_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("good.png");
    std::fs::copy(image("grey.png"), &img).unwrap();
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    let err = fails(&["preprocess", p, "--out", p]);
    assert!(err.contains("must end in .npy"), "{err}");
    let npy = dir.path().join("good.npy");
    std::fs::copy(&img, &npy).unwrap();
    let err = fails(&[
        "preprocess",
        npy.to_str().unwrap(),
        "--out",
        npy.to_str().unwrap(),
    ]);
    assert!(err.contains("is also an input of this command"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), before);
    // converting a checkpoint folder into itself is refused before loading
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join("testdata/models/hf_vit").join(f), hf.join(f)).unwrap();
    }
    let h = hf.to_str().unwrap();
    let err = fails(&["convert", "--model", h, "--out", h]);
    assert!(err.contains("is also an input of this command"), "{err}");
    assert_eq!(
        std::fs::read(hf.join("model.safetensors")).unwrap(),
        std::fs::read(root().join("testdata/models/hf_vit/model.safetensors")).unwrap()
    );
}
