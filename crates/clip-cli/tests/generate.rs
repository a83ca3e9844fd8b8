//! `clip train-vqvae`, `clip train-generator`, `clip generate` and `clip generate-study` at toy
//! size on a fake emoji import (three styles, skin tones, held-out concepts), with two tiny CLIPs
//! of different embedding sizes as reranker and judge; resumes and bad inputs.

mod common;
use common::emoji::fake_packages;
use common::{clip, fails, model, ok_out};

use std::path::{Path, PathBuf};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A second tiny CLIP with 24-d embeddings (the other is 16-d), trained here for two steps.
fn judge(dir: &Path) -> String {
    let cfg = dir.join("judge.toml");
    let toml = common::tiny_train_toml(
        "data = \"synthetic\"\nbatch_size = 4\nsteps = 2\nwarmup = 1\neval_every = 0\ncheckpoint_every = 2\nseed = 9",
    )
    .replace("embed_dim = 16", "embed_dim = 24");
    std::fs::write(&cfg, toml).unwrap();
    let out = dir.join("judge");
    ok_out(&["train", "--config", s(&cfg), "--out", s(&out)]);
    out.display().to_string()
}

fn import(dir: &Path) -> PathBuf {
    let pkgs = dir.join("pkgs");
    fake_packages(&pkgs);
    let out = dir.join("emoji");
    let o = common::emoji::import(
        &pkgs,
        &out,
        &[
            "--styles",
            "google,twitter,apple",
            "--skin-tones",
            "--held-out-fraction",
            "0.25",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn train_vq(emoji: &Path, out: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train-vqvae",
        "--emoji",
        s(emoji),
        "--out",
        s(out),
        "--downsample",
        "2",
        "--channels",
        "4",
        "--code-dim",
        "4",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
    ];
    for (flag, default) in [
        ("--styles", "google,twitter"),
        ("--codes", "8"),
        ("--image-size", "16"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend(extra);
    clip(&args)
}

fn train_gen(
    emoji: &Path,
    vq: &Path,
    out: &Path,
    steps: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "train-generator",
        "--emoji",
        s(emoji),
        "--vqvae",
        s(vq),
        "--out",
        s(out),
        "--width",
        "16",
        "--heads",
        "2",
        "--encoder-layers",
        "1",
        "--decoder-layers",
        "1",
        "--context",
        "16",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
    ];
    args.extend(extra);
    clip(&args)
}

#[test]
fn vqvae_generator_generate_and_study_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path());

    // the VQ-VAE, stopped half-way and resumed
    let vq = dir.path().join("vq");
    let o = train_vq(&emoji, &vq, "6", &["--stop-at", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped at step 3"));
    assert_eq!(json(&vq.join("progress.json"))["step"], 3);
    // a resume that changes a setting is refused, naming it; the run is untouched
    let e =
        String::from_utf8_lossy(&train_vq(&emoji, &vq, "6", &["--lr", "0.5"]).stderr).into_owned();
    assert!(
        e.contains("lr") && e.contains("0.001") && e.contains("0.5"),
        "{e}"
    );
    assert_eq!(json(&vq.join("progress.json"))["step"], 3);
    let o = train_vq(&emoji, &vq, "6", &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at step 3"));
    let rep = json(&vq.join("report.json"));
    assert_eq!(rep["steps"], 6);
    let sets: Vec<String> = rep["psnr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sets,
        [
            "training concepts, trained styles",
            "held-out concepts, trained styles",
            "unseen style apple"
        ]
    );
    for r in rep["psnr"].as_array().unwrap() {
        let p = r[2].as_f64().unwrap();
        assert!(p > 0.0 && p < 99.0, "{r}");
    }
    assert!(
        out.contains("PSNR") && out.contains("unseen style apple"),
        "{out}"
    );
    assert!(rep["perplexity"].as_f64().unwrap() >= 1.0);
    assert!(vq.join("plot.png").is_file() && vq.join("reconstructions.png").is_file());
    // only the last checkpoint's state files remain
    let states: Vec<String> = std::fs::read_dir(&vq)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.iter().all(|n| n.contains("0000006")), "{states:?}");

    // the generator
    let g = dir.path().join("gen");
    let o = train_gen(&emoji, &vq, &g, "4", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = json(&g.join("progress.json"));
    assert_eq!(p["step"], 4);
    let last = p["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["values"]["val_heldout"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(g.join("plot.png").is_file());

    // generate: reranked, written, as JSON
    let out_dir = dir.path().join("drawn");
    let args = [
        "generate",
        "an emoji of animal number 3",
        "--generator",
        s(&g),
        "--clip",
        &model(),
        "--samples",
        "5",
        "--top",
        "2",
        "--guidance",
        "2",
        "--top-k",
        "4",
        "--temperature",
        "0.9",
        "--out",
        s(&out_dir),
        "--json",
    ];
    let (stdout, _) = ok_out(&args);
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let scores: Vec<f64> = r["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 5);
    let top = r["top"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    let best = scores.iter().cloned().fold(f64::MIN, f64::max);
    assert!((top[0]["score"].as_f64().unwrap() - best).abs() < 1e-6);
    assert!(top[0]["score"].as_f64().unwrap() >= top[1]["score"].as_f64().unwrap());
    for t in top {
        let img = image::open(t["path"].as_str().unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (16, 16));
    }
    assert_eq!(r["reranker_dim"], 16);
    assert!(out_dir.join("grid.png").is_file() && out_dir.join("generated.json").is_file());
    // the same seed draws the same images; the folder (ours) is reused
    let (again, _) = ok_out(&args);
    let r2: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(r["scores"], r2["scores"]);
    // fewer picks the next time: the earlier run's extra pick does not linger
    let mut fewer = args.to_vec();
    let at = fewer.iter().position(|a| *a == "--top").unwrap();
    fewer[at + 1] = "1";
    ok_out(&fewer);
    assert!(out_dir.join("rank-01.png").is_file() && !out_dir.join("rank-02.png").exists());

    // the study, with a 16-d reranker and a 32-d judge (each used on its own)
    let st = dir.path().join("study");
    let (stdout, _) = ok_out(&[
        "generate-study",
        "--generator",
        s(&g),
        "--reranker",
        &model(),
        "--judge",
        &judge(dir.path()),
        "--emoji",
        s(&emoji),
        "--out",
        s(&st),
        "--captions",
        "2",
        "--samples",
        "4",
    ]);
    assert!(
        stdout.contains("| training | 4 |") && stdout.contains("| held-out | 1 |"),
        "{stdout}"
    );
    let study = json(&st.join("study.json"));
    let pts = study["points"].as_array().unwrap();
    assert_eq!(pts.len(), 6); // N = 1, 2, 4 for two groups
    for p in pts {
        assert_eq!(p["judge_top5"]["n"], 2);
        assert!(p["frechet"].as_f64().unwrap().is_finite());
    }
    // N = 1 picks the first sample, whatever the reranker says
    assert!(study["warnings"].as_array().unwrap().is_empty());
    for f in [
        "report.md",
        "study.png",
        "grid_training.png",
        "grid_held-out.png",
    ] {
        assert!(st.join(f).is_file(), "{f}");
    }
    // the judge must not be the reranker: said plainly
    let st2 = dir.path().join("study-same");
    ok_out(&[
        "generate-study",
        "--generator",
        s(&g),
        "--reranker",
        &model(),
        "--judge",
        &model(),
        "--emoji",
        s(&emoji),
        "--out",
        s(&st2),
        "--captions",
        "1",
        "--samples",
        "2",
    ]);
    let report = std::fs::read_to_string(st2.join("report.md")).unwrap();
    assert!(
        report.contains("the judge is the reranker itself"),
        "{report}"
    );
    assert!(
        report.contains("median rank of the concept from"),
        "{report}"
    );
}

#[test]
fn generate_bad_inputs_are_refused_and_nothing_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path());
    let vq = dir.path().join("vq");
    assert!(train_vq(&emoji, &vq, "2", &[]).status.success());
    let g = dir.path().join("gen");
    assert!(train_gen(&emoji, &vq, &g, "2", &[]).status.success());
    let out = dir.path().join("drawn");
    let gen_args = |caption: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "generate",
            caption,
            "--generator",
            s(&g),
            "--clip",
            &model(),
            "--out",
            s(&out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |v: Vec<String>| fails(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run(gen_args("", &[])).contains("the caption is empty"));
    assert!(run(gen_args("   ", &[])).contains("the caption is empty"));
    let long = "a very long caption about an animal number three ".repeat(4);
    let e = run(gen_args(&long, &[]));
    assert!(e.contains("at most 16") && e.contains("--truncate"), "{e}");
    assert!(
        run(gen_args("an animal", &["--samples", "0"])).contains("--samples must be at least 1")
    );
    assert!(run(gen_args("an animal", &["--top", "0"])).contains("--top must be at least 1"));
    assert!(run(gen_args("an animal", &["--temperature", "0"])).contains("temperature"));
    assert!(!out.exists(), "a refused request wrote nothing");
    // an over-long caption with --truncate is drawn
    let v = gen_args(&long, &["--truncate", "--samples", "2", "--top", "1"]);
    ok_out(&v.iter().map(String::as_str).collect::<Vec<_>>());
    // a VQ-VAE with another codebook size: both sizes named
    let vq6 = dir.path().join("vq6");
    assert!(
        train_vq(&emoji, &vq6, "2", &["--codes", "6"])
            .status
            .success()
    );
    let e = run(gen_args("an animal", &["--vqvae", s(&vq6)]));
    assert!(
        e.contains("6 codebook entries") && e.contains("trained on 8 entries"),
        "{e}"
    );
    // another checkpoint with the same codebook size: its codes would decode into other images
    let vq_other = dir.path().join("vq-other");
    assert!(
        train_vq(&emoji, &vq_other, "2", &["--seed", "5"])
            .status
            .success()
    );
    let e = run(gen_args("an animal", &["--vqvae", s(&vq_other)]));
    assert!(
        e.contains("is not the checkpoint the generator") && e.contains("vq-other"),
        "{e}"
    );
    // a generator is not trained on an unfinished VQ-VAE
    let vq_half = dir.path().join("vq-half");
    assert!(
        train_vq(&emoji, &vq_half, "4", &["--stop-at", "2"])
            .status
            .success()
    );
    let e = String::from_utf8_lossy(
        &train_gen(&emoji, &vq_half, &dir.path().join("g3"), "2", &[]).stderr,
    )
    .into_owned();
    assert!(
        e.contains("stopped at step 2 of 4") && e.contains("finish it first"),
        "{e}"
    );
    // a failed first start does not lock in its settings: no checkpoint yet, so new ones are taken
    let e = String::from_utf8_lossy(
        &train_vq(
            &emoji,
            &dir.path().join("vq-y"),
            "2",
            &["--image-size", "0"],
        )
        .stderr,
    )
    .into_owned();
    assert!(e.contains("at least 2^layers"), "{e}");
    // a folder that is not ours is refused and left as it was
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let mut v = gen_args("an animal", &[]);
    let at = v.iter().position(|x| x == "--out").unwrap();
    v[at + 1] = s(&foreign).to_owned();
    let e = run(v);
    assert!(e.contains("foreign"), "{e}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
    // a generator folder given as a VQ-VAE, a style the import lacks, a run folder of another kind
    let e =
        String::from_utf8_lossy(&train_gen(&emoji, &g, &dir.path().join("g2"), "2", &[]).stderr)
            .into_owned();
    assert!(e.contains("not a vq-vae"), "{e}");
    let e = String::from_utf8_lossy(
        &train_vq(
            &emoji,
            &dir.path().join("vq-x"),
            "2",
            &["--styles", "sketch"],
        )
        .stderr,
    )
    .into_owned();
    assert!(
        e.contains("no style 'sketch'") && e.contains("google, twitter, apple"),
        "{e}"
    );
    let e = String::from_utf8_lossy(&train_vq(&emoji, &g, "2", &[]).stderr).into_owned();
    assert!(e.contains("not a vq-vae run"), "{e}");
    assert_eq!(json(&g.join("progress.json"))["step"], 2);
}
