//! `clip index`, `search`, `dedup` and `rerank` on real files with the tiny test model: the
//! incremental behaviour (re-run, move, touch, delete), bad images, a kill -9 in the middle of a
//! run, another model's index, two indexers, files that are not indexes, shards and manifests,
//! partitions, and the query algebra.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{clip, fails, model, ok_out, pictures_of, root};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `n` distinct 48×48 PNGs (a colour gradient per file) in `dir`.
fn pictures(dir: &Path, n: usize) -> Vec<PathBuf> {
    pictures_of(dir, n, 48)
}

/// A PNG whose header claims 20000×20000 pixels.
fn bomb() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        png.extend_from_slice(&crc32(&[kind, data].concat()).to_be_bytes());
    };
    let mut ihdr = 20000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00]);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn index_json(source: &str, db: &Path, extra: &[&str]) -> serde_json::Value {
    let m = model();
    let mut args = vec!["index", source, "--model", &m, "--db", s(db), "--json"];
    args.extend_from_slice(extra);
    let (out, _) = ok_out(&args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Every indexed image: path → (id, score for a fixed query).
fn all_rows(db: &Path) -> BTreeMap<String, (i64, f64)> {
    let (out, _) = ok_out(&["search", "--db", s(db), "a photo", "-k", "100000", "--json"]);
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                (v["id"].as_i64().unwrap(), v["score"].as_f64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn reindexing_embeds_only_what_changed_and_keeps_moved_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures(&pics, 6);
    std::fs::write(pics.join("empty.png"), b"").unwrap();
    std::fs::write(
        pics.join("corrupt.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    std::fs::write(pics.join("bomb.png"), bomb()).unwrap();
    std::fs::create_dir_all(pics.join(".hidden")).unwrap();
    std::fs::copy(&files[0], pics.join(".hidden/secret.png")).unwrap();
    std::fs::write(pics.join("notes.txt"), "not an image").unwrap();
    let db = dir.path().join("pics.db");

    let r = index_json(s(&pics), &db, &[]);
    assert_eq!(r["files"], 9, "{r}");
    assert_eq!(r["embedded"], 6);
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 3, "{r}");
    let why: Vec<&str> = skipped.iter().map(|s| s[1].as_str().unwrap()).collect();
    assert!(
        why.iter()
            .any(|w| w.contains("the file is empty (0 bytes)")),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w.contains(
            "claims 20000×20000 pixels (400.0 megapixels), more than the 100-megapixel limit"
        )),
        "{why:?}"
    );
    assert!(why.iter().any(|w| w.contains("corrupt.jpg")), "{why:?}");
    let first = all_rows(&db);
    assert_eq!(first.len(), 6);
    assert!(first.keys().all(|p| !p.contains(".hidden")));

    // nothing changed: nothing embedded
    let r = index_json(s(&pics), &db, &[]);
    assert_eq!(
        (r["embedded"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );

    // move one file into a sub-folder, rename another, delete a third, touch a fourth, change a fifth
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    std::fs::rename(&files[1], pics.join("sub/moved.png")).unwrap();
    std::fs::rename(&files[2], pics.join("renamed.png")).unwrap();
    std::fs::remove_file(&files[3]).unwrap();
    let f4 = std::fs::File::options()
        .append(true)
        .open(&files[4])
        .unwrap();
    f4.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f4);
    std::fs::copy(&files[0], &files[5]).unwrap(); // new content
    let r = index_json(s(&pics), &db, &[]);
    assert_eq!(r["moved"], 2, "{r}");
    assert_eq!(r["touched"], 1, "{r}");
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(r["embedded"], 1, "{r}");
    assert_eq!(r["unchanged"], 1, "{r}");
    let after = all_rows(&db);
    assert_eq!(after.len(), 5, "{after:?}");
    let key = |p: &Path| std::fs::canonicalize(p).unwrap().display().to_string();
    let before = |p: &Path| first[&key(p)];
    // a moved file keeps its row (same id, same vector)
    assert_eq!(
        after[&key(&pics.join("sub/moved.png"))],
        first[&first.keys().nth(1).unwrap().clone()]
    );
    assert_eq!(after[&key(&pics.join("renamed.png"))].0, {
        let k = first.keys().nth(2).unwrap();
        first[k].0
    });
    assert_eq!(after[&key(&files[0])], before(&files[0]));
    // the changed file now scores like the file it copies
    assert!((after[&key(&files[5])].1 - after[&key(&files[0])].1).abs() < 1e-6);
    assert!(!after.contains_key(first.keys().nth(3).unwrap()));
}

#[test]
fn a_killed_index_run_completes_without_loss_or_duplicates_and_a_second_indexer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures_of(&pics, 1000, 320);
    let db = dir.path().join("k.db");
    let m = model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clip"))
        .args([
            "index",
            s(&pics),
            "--model",
            &m,
            "--db",
            s(&db),
            "--batch-size",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // wait until some batches are committed, then try a second indexer, then kill -9
    let t0 = std::time::Instant::now();
    let mut second = None;
    while t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if db.exists() && std::fs::metadata(&db).is_ok_and(|m| m.len() > 0) {
            let out = clip(&["index", s(&pics), "--model", &m, "--db", s(&db)]);
            second = Some(out);
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the indexer finished before it could be killed: give it more images"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let second = second.expect("the first indexer never created its file");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(
            "is being written by another `clip index` (its file is locked); wait for it to finish"
        ),
        "{err}"
    );
    // the re-run completes the index
    let r = index_json(s(&pics), &db, &[]);
    let rows = all_rows(&db);
    assert_eq!(rows.len(), 1000, "{r}");
    assert_eq!(
        r["embedded"].as_u64().unwrap() + r["unchanged"].as_u64().unwrap(),
        1000,
        "{r}"
    );
    // the same vectors as one clean run
    let clean = dir.path().join("clean.db");
    index_json(s(&pics), &clean, &[]);
    let clean_rows = all_rows(&clean);
    assert_eq!(rows.len(), clean_rows.len());
    for (p, (_, score)) in &clean_rows {
        assert!((rows[p].1 - score).abs() < 1e-6, "{p}");
    }
}

#[test]
fn another_models_index_is_an_error_naming_both_and_reembed_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures(&pics, 3);
    let db = dir.path().join("m.db");
    index_json(s(&pics), &db, &[]);
    let before = std::fs::read(&db).unwrap();
    let other = root().join("testdata/models/vit_openclip_hub");
    let err = fails(&["index", s(&pics), "--model", s(&other), "--db", s(&db)]);
    assert!(err.contains("was made by model '"), "{err}");
    assert!(err.contains(&model()) && err.contains(s(&other)), "{err}");
    assert!(err.contains("pass --reembed to rebuild it"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the index was changed");
    // searching with the wrong model is refused the same way
    let err = fails(&[
        "search",
        "--db",
        s(&db),
        "--model",
        s(&other),
        "--image",
        s(&pics.join("img0001.png")),
    ]);
    assert!(err.contains("was made by model '"), "{err}");
    let (out, _) = ok_out(&[
        "index",
        s(&pics),
        "--model",
        s(&other),
        "--db",
        s(&db),
        "--reembed",
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["embedded"], 3, "{r}");
    let probe = pics.join("img0000.png");
    let (out, _) = ok_out(&["search", "--db", s(&db), "--image", s(&probe), "-k", "1"]);
    assert!(
        out.starts_with("1.0000\t") && out.contains("img0000.png"),
        "{out}"
    );
}

#[test]
fn files_that_are_not_indexes_are_refused_and_left_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures(&pics, 1);
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "my notes, not a database\n".repeat(10)).unwrap();
    let err = fails(&["index", s(&pics), "--model", &model(), "--db", s(&text)]);
    assert!(
        err.contains("is not a clip-rs index: it is not an SQLite database (it is left as it is)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "my notes, not a database\n".repeat(10)
    );
    let err = fails(&["search", "--db", s(&text), "a cat"]);
    assert!(err.contains("is not a clip-rs index"), "{err}");
    let err = fails(&["search", "--db", s(&dir.path().join("none.db")), "a cat"]);
    assert!(
        err.contains("does not exist; make it with `clip index SOURCE --model M --db"),
        "{err}"
    );
    // bad arguments
    let db = dir.path().join("x.db");
    let err = fails(&[
        "index",
        s(&pics),
        "--model",
        &model(),
        "--db",
        s(&db),
        "--shard",
        "3/3",
    ]);
    assert!(
        err.contains("--shard '3/3': give I/N with 0 ≤ I < N"),
        "{err}"
    );
    assert!(!db.exists());
    let err = fails(&[
        "index",
        s(&dir.path().join("nope")),
        "--model",
        &model(),
        "--db",
        s(&db),
    ]);
    assert!(err.contains("no such file or folder"), "{err}");
}

#[test]
fn query_algebra_images_and_bad_queries() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures(&pics, 5);
    let db = dir.path().join("q.db");
    index_json(s(&pics), &db, &[]);
    // an image query finds itself first, with cosine 1
    let (out, _) = ok_out(&[
        "search",
        "--db",
        s(&db),
        "--image",
        s(&files[2]),
        "-k",
        "2",
        "--json",
    ]);
    let top: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(
        top["path"].as_str().unwrap().ends_with("img0002.png"),
        "{out}"
    );
    assert!((top["score"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{out}");
    // an image path inside the query works the same way, and weights and minus terms change scores
    let (a, _) = ok_out(&["search", "--db", s(&db), s(&files[2]), "-k", "5"]);
    let (b, _) = ok_out(&[
        "search",
        "--db",
        s(&db),
        "2:a photo",
        "+",
        s(&files[2]),
        "-",
        "grey",
        "-k",
        "5",
    ]);
    assert!(a.lines().next().unwrap().starts_with("1.0000\t"), "{a}");
    assert_ne!(a, b);
    assert_eq!(b.lines().count(), 5);
    let err = fails(&["search", "--db", s(&db), "+", "dog"]);
    assert!(err.contains("'+' must stand between two terms"), "{err}");
    let err = fails(&["search", "--db", s(&db), "dog", "-"]);
    assert!(err.contains("the query ends with an operator"), "{err}");
    let err = fails(&["search", "--db", s(&db)]);
    assert!(err.contains("empty query"), "{err}");
    let err = fails(&["search", "--db", s(&db), "dog", "-", "dog"]);
    assert!(err.contains("the terms cancel out"), "{err}");
}

#[test]
fn shards_and_manifests_index_their_captions_and_partitions_make_one_index() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures(&pics, 9);
    // a shard of 4 samples with captions
    let mut b = tar::Builder::new(Vec::new());
    for (i, f) in files.iter().take(4).enumerate() {
        let png = std::fs::read(f).unwrap();
        let caption = format!("picture number {i}");
        for (ext, bytes) in [("png", png.as_slice()), ("txt", caption.as_bytes())] {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("k{i}.{ext}"), bytes).unwrap();
        }
    }
    let shard = dir.path().join("s-000.tar");
    std::fs::write(&shard, b.into_inner().unwrap()).unwrap();
    let db = dir.path().join("sh.db");
    let r = index_json(s(&shard), &db, &[]);
    assert_eq!(
        (r["embedded"].as_u64(), r["captions"].as_u64()),
        (Some(4), Some(4)),
        "{r}"
    );
    let rows = all_rows(&db);
    assert!(rows.keys().any(|k| k.ends_with("s-000.tar#k3")), "{rows:?}");
    let r = index_json(s(&shard), &db, &[]);
    assert_eq!(r["unchanged"], 4, "{r}");

    // a manifest with captions
    let manifest = dir.path().join("m.jsonl");
    let lines: Vec<String> = files
        .iter()
        .map(|f| serde_json::json!({"image": s(f), "caption": "a gradient"}).to_string())
        .collect();
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let whole = dir.path().join("whole.db");
    let r = index_json(s(&manifest), &whole, &[]);
    assert_eq!(
        (r["embedded"].as_u64(), r["captions"].as_u64()),
        (Some(9), Some(9)),
        "{r}"
    );

    // three partitions fill one index with exactly the rows of one run
    let parts = dir.path().join("parts.db");
    let mut sizes = Vec::new();
    for i in 0..3 {
        let r = index_json(s(&pics), &parts, &["--shard", &format!("{i}/3")]);
        sizes.push(r["embedded"].as_u64().unwrap());
    }
    assert_eq!(sizes.iter().sum::<u64>(), 9, "{sizes:?}");
    let one = dir.path().join("one.db");
    index_json(s(&pics), &one, &[]);
    let (a, b) = (all_rows(&parts), all_rows(&one));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, (_, score)) in &a {
        assert!((score - b[k].1).abs() < 1e-6);
    }
}

#[test]
fn dedup_groups_copies_and_rerank_orders_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures(&pics, 4);
    std::fs::copy(&files[1], pics.join("copy_of_1.png")).unwrap();
    let db = dir.path().join("d.db");
    index_json(s(&pics), &db, &[]);
    let (out, err) = ok_out(&["dedup", "--db", s(&db), "--threshold", "0.9999", "--csv"]);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], "group,path,cosine_to_first");
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[1..].iter().all(|r| r.starts_with("0,")));
    assert!(
        out.contains("copy_of_1.png") && out.contains("img0001.png"),
        "{out}"
    );
    assert!(
        err.contains("1 groups of near-duplicates (cosine ≥ 0.9999) among 5 images"),
        "{err}"
    );
    let (out, _) = ok_out(&["dedup", "--db", s(&db), "--threshold", "0.9999", "--json"]);
    let g: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(g["size"], 2);
    let err = fails(&["dedup", "--db", s(&db), "--threshold", "1.5"]);
    assert!(err.contains("--threshold 1.5 is not a cosine"), "{err}");

    // rerank: every candidate once, probabilities sum to 1, order by cosine
    let m = model();
    let mut args = vec![
        "rerank",
        "--model",
        m.as_str(),
        "--caption",
        "a red square",
        "--json",
    ];
    let names: Vec<String> = files.iter().map(|f| s(f).to_owned()).collect();
    args.extend(names.iter().map(String::as_str));
    let (out, _) = ok_out(&args);
    let ranked: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ranked.len(), 4);
    let total: f64 = ranked
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
    let cos: Vec<f64> = ranked
        .iter()
        .map(|r| r["cosine"].as_f64().unwrap())
        .collect();
    assert!(cos.windows(2).all(|w| w[0] >= w[1]), "{cos:?}");
    let mut idx: Vec<u64> = ranked
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2, 3]);
    // --top, and an unreadable candidate is reported while the others are ranked
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"").unwrap();
    let out = clip(&[
        "rerank",
        "--model",
        &m,
        "--caption",
        "x",
        "--top",
        "1",
        s(&files[0]),
        s(&bad),
        s(&files[2]),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stderr.contains("cannot score") && stderr.contains("bad.png"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 3 images could not be read"),
        "{stderr}"
    );
}

#[test]
fn an_approximate_index_is_built_with_its_recall_kept_up_to_date_and_never_used_stale() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures_of(&pics, 250, 24); // (i and i+256 would be the same picture)
    std::fs::copy(&files[7], pics.join("copy_of_7.png")).unwrap();
    let db = dir.path().join("a.db");
    let side = dir.path().join("a.db.usearch");
    // no graph unless asked for
    let r = index_json(s(&pics), &db, &[]);
    assert!(r["ann"].is_null() && !side.exists(), "{r}");
    let err = fails(&["dedup", "--db", s(&db), "--ann"]);
    assert!(
        err.contains("has no up-to-date approximate index; build one with `clip index SOURCE --db"),
        "{err}"
    );
    let r = index_json(s(&pics), &db, &["--ann"]);
    let ann = &r["ann"];
    assert_eq!(ann["images"], 251, "{r}");
    assert_eq!(ann["queries"], 251, "{r}");
    let recall = ann["recall_at_10"].as_f64().unwrap();
    assert!(recall >= 0.95, "recall@10 {recall}");
    // the search effort was calibrated: the smallest step reaching the target
    assert_eq!(ann["ef"], 64, "{r}");
    assert!(side.exists() && ann["bytes"].as_u64().unwrap() > 251 * 2 * 16);
    // the text report prints the recall
    let (out, _) = ok_out(&[
        "index",
        s(&pics),
        "--model",
        &model(),
        "--db",
        s(&db),
        "--ann",
    ]);
    assert!(
        out.contains("approximate index ")
            && out.contains("recall@10 ")
            && out.contains(" at ef 64;"),
        "{out}"
    );

    // searches through the graph agree with exact search
    let top = |extra: &[&str]| {
        let mut a = vec![
            "search",
            "--db",
            s(&db),
            "--image",
            s(&files[42]),
            "-k",
            "5",
            "--json",
        ];
        a.extend_from_slice(extra);
        let (out, err) = ok_out(&a);
        assert!(!err.contains("note:"), "{err}");
        out.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let (approx, exact) = (top(&[]), top(&["--exact"]));
    assert!(approx[0].ends_with("img0042.png"), "{approx:?}");
    assert_eq!(approx, exact);
    // dedup through the graph finds the same groups
    let groups = |flag: &str| {
        ok_out(&[
            "dedup",
            "--db",
            s(&db),
            "--threshold",
            "0.9999",
            "--csv",
            flag,
        ])
        .0
    };
    let through = groups("--ann");
    assert_eq!(through, groups("--exact"));
    assert!(through.contains("copy_of_7.png"), "{through}");

    // a change to the collection rebuilds the graph in the next run, without --ann
    std::fs::remove_file(&files[3]).unwrap();
    let r = index_json(s(&pics), &db, &[]);
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(r["ann"]["images"], 250, "{r}");
    // an unchanged collection does not rebuild it
    let r = index_json(s(&pics), &db, &[]);
    assert!(r["ann"].is_null(), "{r}");

    // a search effort fixed by the user is measured, and kept when a change rebuilds the graph
    let r = index_json(s(&pics), &db, &["--ann", "--ef", "300"]);
    assert_eq!(r["ann"]["ef"], 300, "{r}");
    assert!(r["ann"]["recall_at_10"].as_f64().unwrap() >= 0.95, "{r}");
    std::fs::remove_file(&files[4]).unwrap();
    let r = index_json(s(&pics), &db, &[]);
    assert_eq!(
        (&r["ann"]["images"], &r["ann"]["ef"]),
        (&249.into(), &300.into()),
        "{r}"
    );
    let r = index_json(s(&pics), &db, &["--ann", "--ef", "0"]);
    assert_eq!(r["ann"]["ef"], 64, "0 calibrates again: {r}");
    let o = clip(&[
        "index",
        s(&pics),
        "--model",
        &model(),
        "--db",
        s(&db),
        "--ef",
        "128",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--ann"), "--ef needs --ann: {err}");

    // a graph that does not match the index is never used: exact search, with a note
    std::fs::write(&side, b"not a graph").unwrap();
    let (out, err) = ok_out(&[
        "search",
        "--db",
        s(&db),
        "--image",
        s(&files[42]),
        "-k",
        "1",
    ]);
    assert!(out.contains("img0042.png"), "{out}");
    assert!(
        err.contains("is out of date (the index changed since it was built); searching exactly"),
        "{err}"
    );
}
