//! Nothing lost, nothing silently wrong: run folders are locked and never clobbered, resume finds its
//! checkpoint by itself and cleans what a killed write left, damaged weights are refused, the
//! feature cache follows file contents, and labels, BOMs and shards mean what they say.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{clip, fails, model, ok_out as ok, root};

fn tiny_toml() -> String {
    common::tiny_train_toml(
        r#"data = "synthetic"
batch_size = 8
steps = 4
warmup = 1
eval_every = 0
checkpoint_every = 2
seed = 3"#,
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny_config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("tiny.toml");
    std::fs::write(&cfg, tiny_toml()).unwrap();
    cfg
}

fn steps_logged(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_run_folder_is_locked_while_a_run_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("run");
    // a long run holds the lock
    let mut first = Command::new(env!("CARGO_BIN_EXE_clip"))
        .args([
            "train",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
            "--steps",
            "100000",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".lock");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |p| p.trim().is_empty()) {
        assert!(
            t.elapsed().as_secs() < 60,
            "the first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = fails(&["train", "--config", s(&cfg), "--out", s(&out), "--resume"]);
    assert!(
        err.contains("is in use by another training run")
            && err.contains(&format!("(process {})", first.id())),
        "{err}"
    );
    // killed, the lock is released with the process; the run resumes (a changed `steps` must be
    // named) from its newest checkpoint
    let t = std::time::Instant::now();
    while !out.join("checkpoints/latest").exists() {
        assert!(t.elapsed().as_secs() < 120, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--resume",
        "--change",
        "steps",
    ]);
    let steps = steps_logged(&out);
    let mut sorted = steps.clone();
    sorted.dedup();
    assert_eq!(steps, sorted, "no step is logged twice");
}

#[test]
fn resume_finds_its_checkpoint_and_cleans_what_a_kill_left() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let out = dir.path().join("run");
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--steps",
        "4",
    ]);
    // as after a kill -9 during the step-6 checkpoint: `latest` gone, a partial temporary folder,
    // and steps logged after the last complete checkpoint
    std::fs::remove_file(out.join("checkpoints/latest")).unwrap();
    let partial = out.join("checkpoints/.step-0000006.tmp999999");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), vec![0u8; 4096]).unwrap();
    let extra = r#"{"step":5,"loss":1.0,"lr":0.001,"logit_scale":14.0,"samples_per_s":1.0}"#;
    let mut log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    log.push_str(extra);
    log.push('\n');
    std::fs::write(out.join("metrics.jsonl"), &log).unwrap();
    // a fresh run into it is refused and changes nothing
    let err = fails(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--steps",
        "4",
    ]);
    assert!(err.contains("already holds a run; pass --resume"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        log
    );
    let (_, stderr) = ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--steps",
        "6",
        "--resume",
        "--change",
        "steps",
    ]);
    assert!(
        stderr.contains("left by a killed checkpoint write"),
        "{stderr}"
    );
    assert!(!partial.exists());
    assert_eq!(steps_logged(&out), [1, 2, 3, 4, 5, 6]);
    // --restart starts over, removing only the run's own files
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--steps",
        "2",
        "--restart",
    ]);
    assert_eq!(steps_logged(&out), [1, 2]);
    assert!(!out.join("checkpoints/step-0000006").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    // and --model takes the run folder itself
    ok(&[
        "embed",
        "--model",
        s(&out),
        "--text",
        "a dog",
        "--out",
        s(&dir.path().join("e.npy")),
    ]);
}

#[test]
fn non_finite_weights_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("testdata/models/hf_vit");
    let bad = dir.path().join("nan_model");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(src.join("config.json"), bad.join("config.json")).unwrap();
    // the fp16 safetensors with one weight set to NaN (0x7e00)
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let target = tensors
        .iter_mut()
        .find(|t| t.0.ends_with("visual_projection.weight"))
        .unwrap();
    target.3[0] = 0x00;
    target.3[1] = 0x7e;
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, d, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        bad.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("e.npy");
    let err = fails(&[
        "embed",
        "--model",
        s(&bad),
        "--text",
        "a dog",
        "--out",
        s(&out),
    ]);
    assert!(
        err.contains("holds 1 non-finite values (NaN or infinity)"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn the_feature_cache_follows_file_contents() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..2 {
        std::fs::create_dir_all(d.join(format!("tree/c{i}"))).unwrap();
        let to = d.join(format!("tree/c{i}/a.bmp"));
        std::fs::copy(root().join("testdata/images/photo.bmp"), to).unwrap();
    }
    let cache = d.join("cache");
    let zs = || {
        let (out, err) = ok(&[
            "eval",
            "zeroshot",
            "--model",
            &model(),
            "--cache",
            s(&cache),
            "--json",
            "--data",
            s(&d.join("tree")),
            "--templates",
            "simple",
        ]);
        let _ = err;
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let files = || std::fs::read_dir(&cache).unwrap().count();
    zs();
    assert_eq!(files(), 1);
    // replace a file by another of the same size, and restore its modification time
    let a = d.join("tree/c0/a.bmp");
    let before = std::fs::read(&a).unwrap();
    let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    // an uncompressed BMP: invert the pixel bytes after the header
    let offset = u32::from_le_bytes([before[10], before[11], before[12], before[13]]) as usize;
    let mut after = before.clone();
    after[offset..].iter_mut().for_each(|b| *b = 255 - *b);
    std::fs::write(&a, &after).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().len(), before.len() as u64);
    assert_eq!(std::fs::metadata(&a).unwrap().modified().unwrap(), mtime);
    zs();
    assert_eq!(
        files(),
        2,
        "new contents are a new cache entry, never the stale one"
    );
}

#[test]
fn labels_boms_and_shard_members_mean_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = root().join("testdata/images/grey.png");
    std::fs::copy(&img, d.join("a.png")).unwrap();
    // classes "1","0" with a BOM; a JSON number is an index, a string a name; the JSONL has a BOM
    std::fs::write(d.join("classes.txt"), "\u{feff}1\n0\n").unwrap();
    std::fs::write(
        d.join("m.jsonl"),
        "\u{feff}{\"image\": \"a.png\", \"label\": 0}\n{\"image\": \"a.png\", \"label\": \"0\"}\n",
    )
    .unwrap();
    let set = clip_data::dataset::EvalSet::classification(
        s(&d.join("m.jsonl")),
        Some(&d.join("classes.txt")),
    )
    .unwrap();
    assert_eq!(set.class_names, ["1", "0"]);
    assert_eq!(
        set.labels,
        [0, 1],
        "0 is the index of \"1\"; \"0\" is the name at index 1"
    );
    // a shard sample with a caption and a .cls: the label is the .cls
    let png = std::fs::read(&img).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (ext, bytes) in [
        ("png", &png[..]),
        ("txt", b"1".as_slice()),
        ("cls", b"0".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("s.{ext}"), bytes).unwrap();
    }
    std::fs::write(d.join("s.tar"), b.into_inner().unwrap()).unwrap();
    let shard = clip_data::dataset::EvalSet::classification(
        s(&d.join("s.tar")),
        Some(&d.join("classes.txt")),
    )
    .unwrap();
    assert_eq!(
        shard.labels,
        [1],
        "label from the .cls (name \"0\"), not the caption"
    );
    // a retrieval row with an empty caption names its row
    std::fs::write(
        d.join("r.jsonl"),
        "{\"image\": \"a.png\", \"captions\": [\"a grey photo\"]}\n{\"image\": \"a.png\", \"captions\": [\"\"]}\n",
    )
    .unwrap();
    let err = fails(&[
        "eval",
        "retrieval",
        "--model",
        &model(),
        "--no-cache",
        "--data",
        s(&d.join("r.jsonl")),
    ]);
    assert!(
        err.contains("row 2: retrieval needs at least one non-empty caption per image"),
        "{err}"
    );
}

#[test]
fn a_batch_never_holds_a_pair_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = String::from("image,caption\n");
    for i in 0..5 {
        std::fs::copy(
            root().join("testdata/images/grey.png"),
            d.join(format!("{i}.png")),
        )
        .unwrap();
        rows.push_str(&format!("{i}.png,picture {i}\n"));
    }
    std::fs::write(d.join("m.csv"), rows).unwrap();
    let cfg = tiny_config(d);
    let err = fails(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&d.join("m.csv")),
        "--out",
        s(&d.join("run")),
    ]);
    assert!(
        err.contains("batch_size 8 is larger than the number of usable pairs in the dataset (5)"),
        "{err}"
    );
    // a batch that fits trains, across epoch boundaries (5 pairs, batch 4, 3 steps)
    ok(&[
        "train",
        "--config",
        s(&cfg),
        "--data",
        s(&d.join("m.csv")),
        "--out",
        s(&d.join("run2")),
        "--batch-size",
        "4",
        "--micro-batch",
        "4",
        "--steps",
        "3",
    ]);
    let _ = clip(&["--version"]);
}
