//! `clip import-emoji`: styles, skin tones, caption variety, and its bad inputs.

mod common;
use common::emoji::{fake_packages, import};
use common::{clip, fails};

fn rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn three_styles_skin_tones_and_locales() {
    let dir = tempfile::tempdir().unwrap();
    let pkgs = dir.path().join("pkgs");
    fake_packages(&pkgs);
    let out = dir.path().join("emoji");
    let o = import(
        &pkgs,
        &out,
        &[
            "--styles",
            "google,twitter,apple",
            "--train-styles",
            "google,apple",
            "--skin-tones",
            "--captions",
            "locales",
            "--locales",
            "fr",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("import.json")).unwrap()).unwrap();
    // 40 concepts, the first four with five tones each
    assert_eq!(rec["concepts"], 40);
    assert_eq!(rec["held_out_concepts"], 4);
    assert_eq!(rec["images_per_style"], 60);
    assert_eq!(rec["packages"]["emoji-datasource-apple"], "?");
    let mut per_style = Vec::new();
    for style in ["google", "twitter", "apple"] {
        let train = rows(&out.join(format!("train_{style}.jsonl")));
        let seen = rows(&out.join(format!("eval_{style}_seen.jsonl")));
        let held = rows(&out.join(format!("eval_{style}_heldout.jsonl")));
        assert_eq!(train.len(), seen.len());
        assert_eq!(seen.len() + held.len(), 60, "{style}: every image once");
        for r in train.iter().chain(&seen).chain(&held) {
            assert_eq!(r["style"], style);
            for key in ["concept", "tone", "category", "subcategory"] {
                assert!(r[key].is_string(), "{key} missing in {r}");
            }
            let img = r["image"].as_str().unwrap();
            assert!(img.starts_with(&format!("images/{style}/")), "{img}");
            assert!(out.join(img).is_file(), "{img}");
        }
        // the held-out concepts are held out with all their tones
        let held_names: std::collections::HashSet<_> =
            held.iter().map(|r| r["concept"].clone()).collect();
        assert!(train.iter().all(|r| !held_names.contains(&r["concept"])));
        let tones: std::collections::BTreeSet<_> = seen
            .iter()
            .chain(&held)
            .map(|r| r["tone"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            tones.into_iter().collect::<Vec<_>>(),
            [
                "dark",
                "default",
                "light",
                "medium",
                "medium-dark",
                "medium-light"
            ]
        );
        for r in &train {
            let caps: Vec<&str> = r["captions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let i: u32 = r["concept"]
                .as_str()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                caps.contains(&format!("numéro {i}").as_str()) || r["tone"] != "default",
                "French name missing: {caps:?}"
            );
            if r["tone"] != "default" {
                let tone = format!("{} skin tone", r["tone"].as_str().unwrap());
                assert!(caps[..2].iter().all(|c| c.contains(&tone)), "{caps:?}");
            }
        }
        per_style.push(train);
    }
    // the same image gets the same captions in every style
    for (g, a) in per_style[0].iter().zip(&per_style[2]) {
        assert_eq!(g["captions"], a["captions"]);
        assert_eq!(g["concept"], a["concept"]);
    }
    let combined = rows(&out.join("train_google+apple.jsonl"));
    assert_eq!(combined.len(), per_style[0].len() * 2);
    assert_eq!(combined[0]["style"], "google");
    assert_eq!(combined[1]["style"], "apple");
    assert!(!out.join("train_google+twitter.jsonl").exists());
    // the category sets cover each style
    let cats = rows(&out.join("categories_apple.jsonl"));
    assert_eq!(cats.len(), 60);
    assert!(cats.iter().any(|r| r["trained"] == false));

    // importing again with fewer styles replaces its own manifests and leaves a user's file alone
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = import(&pkgs, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("train_apple.jsonl").exists());
    assert!(!out.join("train_google+apple.jsonl").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(rows(&out.join("train_google.jsonl")).len(), 36);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("40 concepts (36 for training, 4 held out), 40 images"),
        "{stderr}"
    );
}

#[test]
fn bad_import_settings_are_named_and_nothing_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let pkgs = dir.path().join("pkgs");
    fake_packages(&pkgs);
    let out = dir.path().join("emoji");
    assert!(import(&pkgs, &out, &[]).status.success());
    let snapshot = |d: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&out);
    let (p, o) = (pkgs.to_str().unwrap(), out.to_str().unwrap());
    let base = ["import-emoji", "--packages", p, "--out", o];
    // clap refuses unknown names with its usage exit code (2), the importer with 1
    let run = |extra: &[&str]| {
        let o = clip(&[&base[..], extra].concat());
        assert!(!o.status.success(), "{extra:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    std::fs::rename(
        pkgs.join("emoji-datasource-apple"),
        dir.path().join("moved-apple"),
    )
    .unwrap();
    let err = run(&["--styles", "google,apple"]);
    assert!(
        err.contains("the npm package emoji-datasource-apple is missing")
            && err.contains("npm pack emoji-datasource-apple@16.0.0"),
        "{err}"
    );
    let err = run(&["--captions", "locales", "--locales", "fr,xx"]);
    assert!(
        err.contains("locale 'xx' is not in cldr-annotations-full (2 locales, e.g. en, fr)"),
        "{err}"
    );
    let err = run(&["--styles", "google,emojione"]);
    assert!(
        err.contains("unknown style 'emojione' (known: google, twitter, apple)"),
        "{err}"
    );
    let err = run(&["--captions", "poems"]);
    assert!(
        err.contains("unknown caption variety 'poems' (known: english, keywords, locales)"),
        "{err}"
    );
    let err = run(&["--train-styles", "google,apple"]);
    assert!(
        err.contains(
            "--train-styles names 'apple', which --styles does not import (google, twitter)"
        ),
        "{err}"
    );
    let err = run(&["--styles", "google,google"]);
    assert!(err.contains("--styles names 'google' twice"), "{err}");
    let err = run(&["--train-styles", "twitter"]);
    assert!(
        err.contains("--train-styles needs two or more styles"),
        "{err}"
    );
    std::fs::remove_dir_all(pkgs.join("cldr-annotations-derived-full")).unwrap();
    let err = run(&[]);
    assert!(
        err.contains("npm pack cldr-annotations-derived-full@48.2.0"),
        "{err}"
    );
    assert_eq!(
        snapshot(&out),
        before,
        "a refused import changed the earlier one"
    );
    // a folder that holds something else is refused
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "x").unwrap();
    let err = fails(&[
        "import-emoji",
        "--packages",
        p,
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(
        err.contains("is not empty and does not hold a previous emoji import"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("keep.txt")).unwrap(),
        "x"
    );
}

fn progress(out: &std::path::Path, run: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(out.join("runs").join(run).join("progress.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn fig2_runs_resumes_exactly_and_refuses_changed_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pkgs = dir.path().join("pkgs");
    fake_packages(&pkgs);
    let emoji = dir.path().join("emoji");
    let o = import(&pkgs, &emoji, &["--styles", "google,twitter,apple"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = emoji.to_str().unwrap().to_owned();
    let fig2 = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "repro",
            "fig2",
            "--emoji",
            &e,
            "--out",
            out.to_str().unwrap(),
            "--seeds",
            "0",
            "--min-images",
            "16",
            "--max-images",
            "32",
            "--batch-size",
            "8",
            "--concepts",
            "8",
            "--objectives",
            "c-bow,p-bow,p-lm",
        ];
        args.extend(extra);
        clip(&args)
    };
    // in two sittings …
    let split = dir.path().join("split");
    let o = fig2(&split, &["--stop-at-images", "16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = progress(&split, "p-lm-seed0");
    assert_eq!(p["step"], 2);
    assert_eq!(p["checkpoints"].as_array().unwrap().len(), 1);
    let first = p["checkpoints"][0].clone();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Provisionally"), "{stdout}");
    let o = fig2(&split, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // … and in one
    let whole = dir.path().join("whole");
    let o = fig2(&whole, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for run in ["c-bow-seed0", "p-bow-seed0", "p-lm-seed0"] {
        let (a, b) = (progress(&split, run), progress(&whole, run));
        assert_eq!(a["step"], 4);
        let (ca, cb) = (
            a["checkpoints"].as_array().unwrap(),
            b["checkpoints"].as_array().unwrap(),
        );
        assert_eq!(ca.len(), 2);
        for (x, y) in ca.iter().zip(cb) {
            assert_eq!(x["images"], y["images"]);
            let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            assert!(
                (lx - ly).abs() < 1e-4 * ly.abs(),
                "{run}: resumed {lx} vs straight {ly}"
            );
            assert_eq!(x["scores"], y["scores"], "{run}");
        }
    }
    assert_eq!(progress(&split, "p-lm-seed0")["checkpoints"][0], first);
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["runs"].as_array().unwrap().len(), 3);
    assert_eq!(results["settings"]["concepts"], 8);
    assert_eq!(
        results["settings"]["task_images"], 16,
        "8 concepts in two styles"
    );
    let rules = &results["runs"][2]["checkpoints"][1]["scores"];
    for r in ["sum", "mean", "pmi"] {
        assert!(rules[r][0].is_number(), "{rules}");
    }
    assert!(
        results["verdict_text"]
            .as_str()
            .unwrap()
            .contains("C-BoW > P-BoW > P-LM at")
    );
    let report = std::fs::read_to_string(whole.join("report.md")).unwrap();
    assert!(
        report.contains("| bag-of-words prediction (P-BoW) |"),
        "{report}"
    );
    assert!(whole.join("fig2.png").is_file());
    assert!(whole.join("runs/c-bow-seed0/model/config.json").is_file());
    // the finished C-BoW model is an ordinary CLIP checkpoint
    let model = whole.join("runs/c-bow-seed0/model");
    let o = clip(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--text",
        "grinning face",
        "--out",
        dir.path().join("t.npy").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // the background systems run in the same framework
    let bg = dir.path().join("background");
    let o = clip(&[
        "repro",
        "fig2",
        "--emoji",
        &e,
        "--out",
        bg.to_str().unwrap(),
        "--seeds",
        "0",
        "--min-images",
        "16",
        "--max-images",
        "16",
        "--batch-size",
        "8",
        "--concepts",
        "8",
        "--objectives",
        "visual-ngrams,hashtags,c-tr-fixed-temperature,c-tr-heavy-augmentation,devise,lda-topics,c-tr-sentence-sampling,c-tr-nonlinear-projection",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bg.join("results.json")).unwrap()).unwrap();
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 8);
    assert!(
        runs[0]["output_units"].as_u64().unwrap() > runs[1]["output_units"].as_u64().unwrap(),
        "more n-grams than phrases: {r}"
    );
    assert!(runs[2]["output_units"].is_null());

    // bad input: each named, nothing damaged
    let before = std::fs::read(split.join("runs/p-lm-seed0/progress.json")).unwrap();
    let err = fails(
        &[&[
            "repro",
            "fig2",
            "--emoji",
            &e,
            "--out",
            split.to_str().unwrap(),
            "--seeds",
            "0",
            "--min-images",
            "16",
            "--max-images",
            "32",
            "--batch-size",
            "8",
            "--concepts",
            "8",
            "--objectives",
            "p-lm",
            "--lr",
            "0.01",
        ][..]]
        .concat(),
    );
    assert!(
        err.contains("was started with lr = 0.001; this run asks for 0.01"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(split.join("runs/p-lm-seed0/progress.json")).unwrap(),
        before
    );
    let o = fig2(&dir.path().join("x"), &["--objectives", "p-bow,x-lm"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("unknown objective 'x-lm' (known: c-bow, c-tr, p-bow, p-bow-sigmoid, p-lm, visual-ngrams, hashtags, c-tr-fixed-temperature, c-tr-heavy-augmentation, devise, lda-topics, c-tr-sentence-sampling, c-tr-nonlinear-projection)"),
        "{err}"
    );
    let x = dir.path().join("x");
    let bare = |extra: &[&str]| {
        let mut args = vec!["repro", "fig2", "--emoji", &e, "--out", x.to_str().unwrap()];
        args.extend(extra);
        fails(&args)
    };
    let err = bare(&["--batch-size", "12"]);
    assert!(
        err.contains("--batch-size 12 must be a power of two"),
        "{err}"
    );
    let err = bare(&["--min-images", "24"]);
    assert!(
        err.contains("--min-images 24 must be a power of two"),
        "{err}"
    );
    let err = bare(&["--concepts", "500"]);
    assert!(
        err.contains("--concepts 500: the eval manifests share only 36 concepts"),
        "{err}"
    );
    let err = bare(&["--eval-styles", "emojione"]);
    assert!(err.contains("eval_emojione_seen.jsonl"), "{err}");
    assert!(!x.exists(), "a refused run wrote its folder");
    let o = fig2(&dir.path().join("x"), &["--seeds", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--seeds names 0 twice"), "{err}");
    // a damaged progress file is named, not silently started over
    let progress_file = split.join("runs/c-bow-seed0/progress.json");
    std::fs::write(&progress_file, "{").unwrap();
    let o = fig2(&split, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is damaged or from another version"), "{err}");
    assert_eq!(std::fs::read_to_string(&progress_file).unwrap(), "{");
    // one state file per run: the one progress.json names
    let states: Vec<String> = std::fs::read_dir(whole.join("runs/p-lm-seed0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state-"))
        .collect();
    assert_eq!(states, ["state-0000004.safetensors"]);
    // a folder holding something else is refused
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("mine.txt"), "x").unwrap();
    let o = fig2(&other, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not hold a previous clip repro fig2 run")
    );
    assert_eq!(
        std::fs::read_to_string(other.join("mine.txt")).unwrap(),
        "x"
    );
}

#[test]
fn robustness_fits_a_trend_and_names_missing_styles() {
    let dir = tempfile::tempdir().unwrap();
    let pkgs = dir.path().join("pkgs");
    fake_packages(&pkgs);
    let emoji = dir.path().join("emoji");
    let e = emoji.to_str().unwrap().to_owned();
    let out = dir.path().join("rob");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "repro",
            "robustness",
            "--emoji",
            &e,
            "--out",
            out.to_str().unwrap(),
            "--images",
            "16",
            "--batch-size",
            "8",
            "--classifier-steps",
            "2,4",
            "--classifier-seeds",
            "0",
            "--probe-seeds",
            "0",
            "--bootstrap",
            "20",
        ];
        args.extend(extra);
        clip(&args)
    };
    // without the two-style manifest: named, with the import command
    assert!(
        import(&pkgs, &emoji, &["--styles", "google,twitter,apple"])
            .status
            .success()
    );
    let o = run(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("train_google+twitter.jsonl' is missing")
            && err.contains("--train-styles google,twitter"),
        "{err}"
    );
    assert!(!out.exists());
    let o = run(&["--target", "google"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("must be three different styles"), "{err}");
    let o = import(
        &pkgs,
        &emoji,
        &[
            "--styles",
            "google,twitter,apple",
            "--train-styles",
            "google,twitter",
        ],
    );
    assert!(o.status.success());
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let models = r["models"].as_array().unwrap();
    // 2 classifiers + 1 random-feature probe + 1 pixel probe + 2 CLIPs
    assert_eq!(models.len(), 6, "{r}");
    let groups: Vec<&str> = models
        .iter()
        .map(|m| m["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        [
            "supervised",
            "supervised",
            "supervised",
            "supervised",
            "google",
            "google+twitter"
        ]
    );
    for m in models {
        let iv = m["interval95"].as_array().unwrap();
        assert!(iv[0].as_f64().unwrap() <= iv[1].as_f64().unwrap(), "{m}");
        assert!((0.0..=1.0).contains(&m["target"].as_f64().unwrap()));
    }
    assert_eq!(r["settings"]["test_source"], 4, "the 4 held-out concepts");
    assert!(
        r["verdict"]
            .as_str()
            .unwrap()
            .contains("Effective robustness")
    );
    assert!(out.join("robustness.png").is_file());
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("| probe on raw pixels (16×16) |")
    );
}
