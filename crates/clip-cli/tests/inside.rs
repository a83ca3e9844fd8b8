//! `clip inside limits` and `clip inside bias` on the tiny transformers CLIP and a fake emoji
//! import holding the concepts the probes look for; their bad inputs.

mod common;
use common::emoji::probe_packages;
use common::{clip, fails, model};

use std::path::{Path, PathBuf};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The fake packages imported into `dir/emoji` (three styles; `extra` flags).
fn import(dir: &Path, extra: &[&str]) -> PathBuf {
    let pkgs = dir.join("pkgs");
    if !pkgs.exists() {
        probe_packages(&pkgs);
    }
    let out = dir.join(if extra.is_empty() {
        "emoji"
    } else {
        "emoji-tones"
    });
    let mut args = vec!["--styles", "google,twitter,apple"];
    args.extend(extra);
    let o = common::emoji::import(&pkgs, &out, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A file in scikit-learn's digits.csv format: 64 values 0–16 and a label, 8 per digit.
fn digits_csv(path: &Path) {
    let mut s = String::new();
    for d in 0..10u32 {
        for k in 0..8u32 {
            let px: Vec<String> = (0..64u32)
                .map(|p| {
                    let (r, c) = (p / 8, p % 8);
                    let on = c == d % 8 || (d >= 8 && r == d - 6) || (r + k) % 7 == 0 && c == 3;
                    if on { "16" } else { "0" }.to_string()
                })
                .collect();
            s += &format!("{},{d}\n", px.join(","));
        }
    }
    std::fs::write(path, s).unwrap();
}

fn limits(emoji: &Path, digits: &Path, out: &Path) -> std::process::Output {
    clip(&[
        "inside",
        "limits",
        "--model",
        &model(),
        "--emoji",
        emoji.to_str().unwrap(),
        "--digits",
        digits.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--count-concepts",
        "4",
        "--count-images",
        "1",
        "--text-concepts",
        "6",
    ])
}

#[test]
fn limits_runs_every_probe_and_keeps_what_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &[]);
    let digits = dir.path().join("digits.csv");
    digits_csv(&digits);
    let out = dir.path().join("limits");
    let o = limits(&emoji, &digits, &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("limits.json"));
    let probes = r["probes"].as_array().unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for want in [
        "handwritten digits",
        "counting 1–6 copies (same size)",
        "counting 1–6 copies (constant total area)",
        "family members",
        "country flags",
        "clock faces",
        "moon phases",
        "arrows",
        "facing left vs facing right",
        "rendered names",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} not in {names:?}"
        );
    }
    for p in probes {
        let z = &p["zero_shot"];
        let (rate, lo, hi) = (
            z["rate"].as_f64().unwrap(),
            z["lo"].as_f64().unwrap(),
            z["hi"].as_f64().unwrap(),
        );
        assert!(
            lo <= rate && rate <= hi && z["n"].as_u64().unwrap() > 0,
            "{p}"
        );
        assert!(p["chance"].as_f64().unwrap() > 0.0);
    }
    let digit = probes.iter().find(|p| p["group"] == "digits").unwrap();
    // 80 digits: the probes fit on a stratified half, every figure on the other 40
    assert_eq!(digit["zero_shot"]["n"], 40, "{digit}");
    assert_eq!(
        digit["baselines"]["zero-shot on the keycap emoji"]["n"], 30,
        "10 keycaps × 3 styles"
    );
    let family = probes
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with("family"))
        .unwrap();
    // 3 families (2, 3 and 4 members) × 3 styles, the probe on the count
    assert_eq!(family["classes"], 3);
    assert_eq!(family["linear_probe"]["n"], 9, "{family}");
    let flags = probes
        .iter()
        .find(|p| p["name"] == "country flags")
        .unwrap();
    assert_eq!(flags["classes"], 4);
    assert_eq!(
        flags["linear_probe"]["n"], 12,
        "each style held out in turn"
    );
    let groups: Vec<&str> = r["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["group"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["digits", "counting", "fine-grained", "abstract", "text"]
    );
    assert!(stdout.contains("→"), "{stdout}");
    for g in r["grids"].as_array().unwrap() {
        let p = out.join(g.as_str().unwrap());
        let img = image::open(&p).unwrap();
        assert!(img.width() > 32, "{}", p.display());
    }
    assert!(r["grids"].as_array().unwrap().len() >= 8);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| country flags | 4 | 25.0% |"), "{report}");
    // a second run into its own folder is allowed
    assert!(limits(&emoji, &digits, &out).status.success());

    // bad digits: the line is named and nothing is written
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "0,".repeat(64) + "11\n").unwrap();
    let fresh = dir.path().join("fresh");
    let e = String::from_utf8_lossy(&limits(&emoji, &bad, &fresh).stderr).into_owned();
    assert!(e.contains("line 1: label 11 is not a digit"), "{e}");
    assert!(!fresh.exists());
    // a folder that is not a limits report is refused and left as it was
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let e = String::from_utf8_lossy(&limits(&emoji, &digits, &theirs).stderr).into_owned();
    assert!(
        e.contains("does not hold a previous clip inside limits report"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );
    // not an import
    let e = String::from_utf8_lossy(&limits(dir.path(), &digits, &fresh).stderr).into_owned();
    assert!(e.contains("is not a complete emoji import"), "{e}");
}

fn bias(emoji: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let m = model();
    let models = format!("{m},{m}");
    let mut args = vec![
        "inside",
        "bias",
        "--models",
        &models,
        "--emoji",
        emoji.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    clip(&args)
}

#[test]
fn bias_probe_reports_every_tone_label_set_and_pair() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &["--skin-tones", "--held-out-fraction", "0"]);
    let out = dir.path().join("bias");
    let o = bias(&emoji, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("bias.json"));
    let rows = r["rows"].as_array().unwrap();
    // 5 label sets × 2 image groups × 6 tones
    assert_eq!(rows.len(), 60);
    // one person: 7 concepts (person … man walking facing right) × 3 styles × 2 models per tone
    let person = rows
        .iter()
        .find(|x| x["images"] == "one person" && x["tone"] == "dark")
        .unwrap();
    assert_eq!(person["non_human_top1"]["n"], 7 * 3 * 2, "{person}");
    assert_eq!(person["non_human_over"].as_array().unwrap().len(), 2);
    // a threshold rate can only be at least the top-1 rate
    for x in rows {
        let top = x["non_human_top1"]["hits"].as_u64().unwrap();
        let low = x["non_human_over"][0]["hits"].as_u64().unwrap();
        let high = x["non_human_over"][1]["hits"].as_u64().unwrap();
        assert!(low >= high && low >= top, "{x}");
    }
    let paired = r["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 5 * 2 * 5);
    for p in paired {
        let v = p["p_value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{p}");
        assert!(p["lo"].as_f64().unwrap() <= p["hi"].as_f64().unwrap());
    }
    assert_eq!(r["per_model"].as_array().unwrap().len(), 2);
    assert!(
        r["labels_not_concepts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "animal")
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("Tones on cartoons are not race"),
        "{report}"
    );
    assert!(report.contains("Crime labels have no concepts"));
    assert!(report.contains("Fewer than 3 models"));
    assert!(out.join("grid_tones.png").is_file());

    // bad inputs: named, and nothing written
    let fresh = dir.path().join("fresh");
    let plain = import(dir.path(), &[]);
    let e = String::from_utf8_lossy(&bias(&plain, &fresh, &[]).stderr).into_owned();
    assert!(e.contains("was imported without skin tones"), "{e}");
    let labels = dir.path().join("labels.json");
    let mut l = serde_json::json!({
        "human": ["man", "woman"], "child": ["child"], "hand": ["hand"], "person": ["person"],
        "non_human": ["gorilla", "monkey"], "creature": ["troll", "monkey"]
    });
    std::fs::write(&labels, l.to_string()).unwrap();
    let lp = labels.to_str().unwrap();
    // into the earlier report's own folder: refused before anything is written
    let e = String::from_utf8_lossy(&bias(&emoji, &out, &["--labels", lp]).stderr).into_owned();
    assert!(
        e.contains("'monkey' appears twice") && e.contains("'creature'"),
        "{e}"
    );
    l["creature"] = serde_json::json!([]);
    std::fs::write(&labels, l.to_string()).unwrap();
    let e = String::from_utf8_lossy(&bias(&emoji, &fresh, &["--labels", lp]).stderr).into_owned();
    assert!(e.contains("the group 'creature' is empty"), "{e}");
    let e = fails(&[
        "inside",
        "bias",
        "--models",
        &model(),
        "--emoji",
        emoji.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
        "--thresholds",
        "0.5,4",
    ]);
    assert!(e.contains("--thresholds"), "{e}");
    assert!(!fresh.exists());
    // the earlier report is untouched by the failed runs
    assert_eq!(json(&out.join("bias.json")), r);
}

#[test]
fn neurons_rank_units_against_both_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &[]);
    let out = dir.path().join("neurons");
    let run = |out: &Path| {
        clip(&[
            "inside",
            "neurons",
            "--model",
            &model(),
            "--emoji",
            emoji.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--blocks",
            "1",
            "--top",
            "3",
            "--show",
            "2",
            "--directions",
            "8",
        ])
    };
    let o = run(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("neurons.json"));
    let sets = r["result"]["sets"].as_array().unwrap();
    // the last block's MLP, at the class token and as the mean over tokens
    assert_eq!(sets.len(), 2, "{r}");
    assert!(
        sets[0]["name"]
            .as_str()
            .unwrap()
            .ends_with("MLP, class token")
    );
    let units = sets[0]["trained"]["units"].as_u64().unwrap();
    assert!(units >= 32, "{units}");
    assert_eq!(sets[0]["random_init"]["units"], units);
    assert_eq!(sets[0]["random_directions"]["units"], 8);
    assert_eq!(sets[0]["units"].as_array().unwrap().len() as u64, units);
    for u in sets[0]["units"].as_array().unwrap() {
        assert_eq!(u["top"].as_array().unwrap().len(), 3);
        assert_eq!(
            u["texts"].as_array().unwrap().len(),
            10,
            "the class token's units have a text side"
        );
        let c = u["concept"].as_f64().unwrap();
        assert!((1.0 / 3.0 - 1e-9..=1.0).contains(&c), "{u}");
    }
    assert_eq!(sets[0]["text_hits"]["n"], units);
    assert!(
        sets[1]["text_hits"].is_null(),
        "no direct effect from the token mean"
    );
    for s in sets {
        assert!(out.join(s["grid"].as_str().unwrap()).is_file());
    }
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("concept purity: trained / random init / random directions")
    );
    // the same run again gives the same units (seeded)
    assert!(run(&out).status.success());
    assert_eq!(json(&out.join("neurons.json")), r);
    // a unit out of range names the layer's size; nothing is written
    let fresh = dir.path().join("fresh");
    let e = fails(&[
        "inside",
        "neurons",
        "--model",
        &model(),
        "--emoji",
        emoji.to_str().unwrap(),
        "--out",
        fresh.to_str().unwrap(),
        "--blocks",
        "1",
        "--units",
        "1,100000",
    ]);
    assert!(
        e.contains("unit 100000 is out of range")
            && e.contains(&format!("has {units} units (0–{})", units - 1)),
        "{e}"
    );
    assert!(!fresh.exists());
}

fn glass(out: &Path, extra: &[&str]) -> std::process::Output {
    let m = model();
    let mut args = vec![
        "inside",
        "glass",
        "--guide",
        &m,
        "--judge",
        &m,
        "--out",
        out.to_str().unwrap(),
        "--evaluations",
        "16",
        "--population",
        "8",
        "--seeds",
        "0",
    ];
    args.extend(extra);
    clip(&args)
}

#[test]
fn glass_searches_reranks_and_warns_when_the_judge_is_the_guide() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("glass");
    let o = glass(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("warning: the judge is the guide model itself")
    );
    let r = json(&out.join("glass.json"));
    assert_eq!(r["self_judged"], true);
    let methods: Vec<&str> = r["rates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "genetic search",
            "best-of-1",
            "best-of-2",
            "best-of-4",
            "best-of-8",
            "best-of-16"
        ]
    );
    for m in r["rates"].as_array().unwrap() {
        assert_eq!(m["judge"]["n"], 10, "{m}");
        // eight of the ten default targets are geometric or facial: the genome can say
        assert_eq!(m["genome"]["n"], 10, "{m}");
        // eight are `large COLOUR SHAPE`: colour and shape are read apart
        assert_eq!(m["colour"]["n"], 8, "{m}");
        assert_eq!(m["shape"]["n"], 8, "{m}");
    }
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 10);
    for run in runs {
        assert_eq!(run["search"]["genome"].as_array().unwrap().len(), 40);
        // best-of-N's guide score can only grow with N
        let scores: Vec<f64> = run["best_of"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1]["guide"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{scores:?}");
    }
    assert!(out.join("grid_glass.png").is_file() && out.join("best_of_n.png").is_file());
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("The judge is the guide: its scores are self-confirming")
    );
    // NSGA-II with the realism objective, started from a given genome
    let emoji = import(dir.path(), &[]);
    let start = dir.path().join("start.json");
    std::fs::write(&start, serde_json::to_string(&vec![0.5; 40]).unwrap()).unwrap();
    let out2 = dir.path().join("glass2");
    let o = glass(
        &out2,
        &[
            "--realism",
            emoji.to_str().unwrap(),
            "--start",
            start.to_str().unwrap(),
            "--targets",
            "large red circle,troll",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r2 = json(&out2.join("glass.json"));
    assert_eq!(
        r2["rates"][0]["method"],
        "genetic search (NSGA-II, + realism)"
    );
    assert_eq!(
        r2["rates"][0]["genome"]["n"], 1,
        "the genome can say only for the circle"
    );

    // bad inputs: named, nothing written
    let fresh = dir.path().join("fresh");
    std::fs::write(&start, "[0.5, 0.5]").unwrap();
    let e = String::from_utf8_lossy(&glass(&fresh, &["--start", start.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(e.contains("holds 2 genes; a genome has 40"), "{e}");
    let long = vec!["word"; 100].join(" ");
    let targets = format!("large red circle,{long}");
    let e = String::from_utf8_lossy(&glass(&fresh, &["--targets", &targets]).stderr).into_owned();
    assert!(
        e.contains("is longer than the guide's context of 77 tokens"),
        "{e}"
    );
    let e =
        String::from_utf8_lossy(&glass(&fresh, &["--targets", "troll,troll"]).stderr).into_owned();
    assert!(e.contains("'troll' is given twice"), "{e}");
    assert!(!fresh.exists());
    assert_eq!(json(&out.join("glass.json")), r);
}

#[test]
fn reading_data_and_typographic_attacks() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &[]);
    let train = emoji.join("train_google.jsonl");
    let reading = dir.path().join("reading");
    let (stdout, _) = common::ok_out(&[
        "inside",
        "reading",
        "--train",
        train.to_str().unwrap(),
        "--fraction",
        "0.5",
        "--out",
        reading.to_str().unwrap(),
    ]);
    assert!(stdout.contains("rows show their name"), "{stdout}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(reading.join("train_reading.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let source = std::fs::read_to_string(&train).unwrap().lines().count();
    assert_eq!(rows.len(), source, "one row per input row");
    let replaced: Vec<&serde_json::Value> = rows.iter().filter(|r| r["reading"] == true).collect();
    assert!(!replaced.is_empty() && replaced.len() < rows.len());
    for r in &rows {
        let p = Path::new(r["image"].as_str().unwrap());
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            reading.join(p)
        };
        assert!(image::open(&p).is_ok(), "{}", p.display());
        assert!(
            !r["captions"].as_array().unwrap().is_empty(),
            "captions are kept"
        );
    }
    let e = fails(&[
        "inside",
        "reading",
        "--train",
        train.to_str().unwrap(),
        "--fraction",
        "1.5",
        "--out",
        dir.path().join("r2").to_str().unwrap(),
    ]);
    assert!(e.contains("--fraction 1.5 must be between 0 and 1"), "{e}");
    assert!(!dir.path().join("r2").exists());

    let out = dir.path().join("typo");
    let m = model();
    let models = format!("{m},{m}");
    let o = clip(&[
        "inside",
        "typographic",
        "--models",
        &models,
        "--emoji",
        emoji.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--concepts",
        "8",
        "--candidates",
        "4",
        "--words",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("typographic.json"));
    let res = &r["result"];
    assert_eq!(res["concepts"], 8);
    assert!((res["pixel_cover"].as_f64().unwrap() - 20.0 / 32.0).abs() < 1e-9);
    let models = res["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    // the same model twice gives the same numbers
    assert_eq!(models[0]["conditions"], models[1]["conditions"]);
    let conds: Vec<&str> = models[0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["condition"].as_str().unwrap())
        .collect();
    assert_eq!(
        conds,
        [
            "clean",
            "attack word",
            "non-word of the same length",
            "the image's own name",
            "blank label"
        ]
    );
    assert_eq!(models[0]["words"].as_array().unwrap().len(), 2);
    let atk = &models[0]["conditions"][1];
    assert!(atk["zero_shot_success"]["n"].as_u64().unwrap() > 0, "{atk}");
    assert!(atk["probe_success"]["n"].as_u64().unwrap() > 0, "{atk}");
    assert!(models[0]["conditions"][3]["zero_shot_success"].is_null());
    assert!(out.join("grid_typographic.png").is_file());
    assert!(
        std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("OCR (zero-shot on the names drawn alone)")
    );
}

#[test]
fn featvis_ascends_units_and_texts_and_names_bad_targets() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &[]);
    let run = |out: &Path, extra: &[&str]| {
        let m = model();
        let mut args = vec![
            "inside",
            "featvis",
            "--model",
            &m,
            "--judge",
            &m,
            "--emoji",
            emoji.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "3",
            "--batch",
            "2",
        ];
        args.extend(extra);
        clip(&args)
    };
    let out = dir.path().join("fv");
    let o = run(
        &out,
        &[
            "--units",
            "0:3,1:7",
            "--texts",
            "troll",
            "--diversity",
            "0.5",
            "--l2",
            "0.1",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning: the judge is the visualised model itself"),
        "{err}"
    );
    let r = json(&out.join("featvis.json"));
    let res = &r["result"];
    assert!(res["gradient_check"].as_f64().unwrap() < 1e-2);
    let v = res["visuals"].as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["target"], "block 0 unit 3 (class token)");
    assert_eq!(v[2]["concept"], "troll");
    for x in v {
        assert_eq!(x["hits"].as_array().unwrap().len(), 2, "{x}");
        assert_eq!(x["judge_top5"][0].as_array().unwrap().len(), 5);
        // three Adam steps of gradient ascent raise the objective
        assert!(
            x["end"].as_f64().unwrap() > x["start"].as_f64().unwrap(),
            "{x}"
        );
    }
    assert!(
        v[0]["concept"].is_string(),
        "a unit's concept comes from its dataset examples"
    );
    let grid = image::open(out.join("grid_featvis.png")).unwrap();
    assert!(grid.width() > 64);
    // the diversity term changes the ascent of a text target too
    let plain = dir.path().join("fv-plain");
    let diverse = dir.path().join("fv-diverse");
    assert!(run(&plain, &["--texts", "troll"]).status.success());
    assert!(
        run(&diverse, &["--texts", "troll", "--diversity", "5"])
            .status
            .success()
    );
    let end = |d: &Path| {
        json(&d.join("featvis.json"))["result"]["visuals"][0]["end"]
            .as_f64()
            .unwrap()
    };
    assert_ne!(end(&plain), end(&diverse));
    // bad targets: named, nothing written
    let fresh = dir.path().join("fresh");
    let e = String::from_utf8_lossy(&run(&fresh, &["--units", "0:100000"]).stderr).into_owned();
    assert!(
        e.contains("unit 100000 is out of range: block 0's MLP has") && e.contains("units (0–"),
        "{e}"
    );
    let e = String::from_utf8_lossy(&run(&fresh, &["--units", "99:1"]).stderr).into_owned();
    assert!(e.contains("block 99 is out of range"), "{e}");
    let e = String::from_utf8_lossy(&run(&fresh, &["--units", "3-1"]).stderr).into_owned();
    assert!(e.contains("'3-1' is not BLOCK:UNIT"), "{e}");
    let long = vec!["word"; 100].join(" ");
    let e = String::from_utf8_lossy(&run(&fresh, &["--texts", &long]).stderr).into_owned();
    assert!(
        e.contains("is longer than the model's context of 77 tokens"),
        "{e}"
    );
    assert!(!fresh.exists());
}

#[test]
fn neurons_of_a_resnet_are_its_last_stage_channels() {
    let dir = tempfile::tempdir().unwrap();
    let emoji = import(dir.path(), &[]);
    let out = dir.path().join("rn");
    let rn = common::root().join("testdata/models/rn_openai_jit/model.pt");
    let o = clip(&[
        "inside",
        "neurons",
        "--model",
        rn.to_str().unwrap(),
        "--emoji",
        emoji.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--top",
        "3",
        "--directions",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out.join("neurons.json"));
    let sets = r["result"]["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["name"], "last stage channels, mean over space");
    let units = sets[0]["trained"]["units"].as_u64().unwrap();
    assert!(units >= 8, "{units}");
    assert_eq!(sets[0]["random_init"]["units"], units);
    assert!(
        sets[0]["text_hits"].is_null(),
        "no direct effect through the attention pool"
    );
    assert!(out.join(sets[0]["grid"].as_str().unwrap()).is_file());
}
