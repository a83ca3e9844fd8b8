//! Every `clip` command line in the README's `sh` blocks runs, in order, as written — so a documented
//! command can never fail. The commands run in a scratch folder that links `testdata/` and
//! `configs/`, on the tiny test models, with the npm emoji packages replaced by a small set in the
//! packages' own layout (40 emoji in two subcategories, and the people, hands, animals, keycaps,
//! flags, clocks, moons and arrows the `clip inside` probes look for, made here). Training and `repro` get flags
//! that shorten them (listed in `SHORTER`); `~` is a scratch home whose `Pictures` holds test images,
//! `$CLIP_MODEL` (the default model of `index` and `serve`) is the tiny test model, `&&` joins
//! commands as in a shell, and `clip serve` listens on a free port, is asked `/health`, and is
//! stopped with SIGTERM (it must exit 0); a `postgres://…@127.0.0.1:5432/…` URL is pointed at a real
//! PostgreSQL with pgvector that the test starts on a free port; nothing else is changed. Lines of `sh` blocks that are
//! not `clip` commands must be one of the known set-up commands (`KNOWN`), so a new command cannot
//! slip in untested.

use std::path::Path;

mod common;
use common::emoji::{fake_list, probe_list, write_packages};
use common::{clip, root};

/// Flags appended to long-running commands (first words → extra flags; the first match counts).
const SHORTER: &[(&str, &[&str])] = &[
    ("quickstart", &["--steps", "2"]),
    (
        "train",
        &[
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--eval-every",
            "1",
            "--eval-samples",
            "8",
            "--checkpoint-every",
            "1",
        ],
    ),
    (
        "repro robustness",
        &[
            "--images",
            "16",
            "--batch-size",
            "8",
            "--classifier-steps",
            "2",
            "--classifier-seeds",
            "0",
            "--probe-seeds",
            "0",
            "--bootstrap",
            "20",
        ],
    ),
    (
        "repro fig2",
        &[
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
        ],
    ),
    (
        "inside glass",
        &["--population", "8", "--evaluations", "16", "--seeds", "0"],
    ),
    ("inside featvis", &["--steps", "2", "--batch", "2"]),
    (
        "train-vqvae",
        &[
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--channels",
            "4",
            "--code-dim",
            "4",
            "--codes",
            "8",
            "--checkpoint-every",
            "1",
        ],
    ),
    (
        "train-generator",
        &[
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--width",
            "16",
            "--heads",
            "2",
            "--encoder-layers",
            "1",
            "--decoder-layers",
            "1",
            "--checkpoint-every",
            "1",
        ],
    ),
    ("generate-study", &["--captions", "2", "--samples", "4"]),
    (
        "inside typographic",
        &["--concepts", "8", "--candidates", "4", "--words", "2"],
    ),
    (
        "repro",
        &[
            "--emoji-steps",
            "2",
            "--synthetic-steps",
            "2",
            "--seeds",
            "1",
            "--synthetic-test",
            "2",
        ],
    ),
];

/// Set-up lines that are not `clip` commands (the test suite itself, benchmarks, npm).
const KNOWN: &[&str] = &[
    "cargo nextest run",
    "cargo test",
    "cargo build",
    "python3 -m venv",
    "../venv/bin/python",
    "mkdir pkgs",
    "n=${p%@*}",
    "CARGO_TARGET_DIR",
];

/// Split a command line like a POSIX shell would for our simple lines (quotes, no expansions).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for ch in line.chars() {
        match (quote, ch) {
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The lines of the README's ```sh blocks, comments removed.
fn sh_lines(readme: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    for l in readme.lines() {
        let t = l.trim();
        if t.starts_with("```") {
            inside = t == "```sh";
            continue;
        }
        if inside {
            let code = t.split(" #").next().unwrap_or("").trim();
            if !code.is_empty() && !code.starts_with('#') {
                lines.push(code.to_owned());
            }
        }
    }
    lines
}

/// Run `clip serve ARGS` on a free port, check `/health`, stop it with SIGTERM.
fn serve_once(args: &[String], cwd: &Path, env: &[(&str, std::path::PathBuf)], line: &str) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut args = args.to_vec();
    match args.iter().position(|a| a == "--addr") {
        Some(i) => args[i + 1] = "127.0.0.1:0".into(),
        None => args.extend(["--addr".into(), "127.0.0.1:0".into()]),
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clip"))
        .args(&args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let addr = loop {
        match lines.next() {
            Some(Ok(l)) => match l.strip_prefix("listening on http://") {
                Some(rest) => break rest.split_whitespace().next().unwrap().to_owned(),
                None => seen.push_str(&l),
            },
            _ => panic!("README command failed: {line}\n{seen}"),
        }
    };
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{line}: {answer}");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{line}: exit {status}");
}

#[test]
fn every_readme_command_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    for link in ["testdata", "configs"] {
        std::os::unix::fs::symlink(root().join(link), cwd.join(link)).unwrap();
    }
    write_packages(&cwd.join("pkgs"), &[fake_list(), probe_list()].concat());
    let home = cwd.join("home");
    std::fs::create_dir_all(home.join("Pictures")).unwrap();
    for name in ["photo_224.jpg", "alpha.png", "grey.png", "lossy.webp"] {
        std::fs::copy(
            root().join("testdata/images").join(name),
            home.join("Pictures").join(name),
        )
        .unwrap();
    }
    let env = [
        ("XDG_CACHE_HOME", cwd.join("cache")),
        ("XDG_DATA_HOME", cwd.join("data-home")),
        ("HOME", home.clone()),
        ("CLIP_MODEL", root().join("testdata/models/hf_vit")),
    ];
    let mut ran = 0;
    let mut pg: Option<common::pg::Postgres> = None;
    for full in sh_lines(&readme) {
        // `clip a && clip b` is two commands; set-up lines stay whole
        let parts: Vec<&str> = if full.starts_with("clip ") {
            full.split(" && ").collect()
        } else {
            vec![full.as_str()]
        };
        for line in parts {
            let line = line.trim();
            let w: Vec<String> = words(line)
                .into_iter()
                .map(|a| match a.strip_prefix("~/") {
                    Some(rest) => home.join(rest).display().to_string(),
                    None => a,
                })
                .map(|a| {
                    if !a.starts_with("postgres://") {
                        return a;
                    }
                    let pg = pg.get_or_insert_with(common::pg::Postgres::start);
                    assert!(a.contains("@127.0.0.1:5432/"), "README URL {a}");
                    a.replace(":5432/", &format!(":{}/", pg.port))
                })
                .collect();
            let args: Vec<String> = match w.iter().position(|a| a == "--") {
                Some(i) if line.starts_with("cargo run") && line.contains("--bin clip") => {
                    w[i + 1..].to_vec()
                }
                _ if w.first().is_some_and(|c| c == "clip") => w[1..].to_vec(),
                _ => {
                    assert!(
                        KNOWN.iter().any(|k| line.starts_with(k)),
                        "README line is neither a clip command nor a known set-up command: {line}"
                    );
                    continue;
                }
            };
            let mut args = args;
            let first = args.first().cloned().unwrap_or_default();
            let starts = |c: &str| {
                let k: Vec<&str> = c.split(' ').collect();
                args.len() >= k.len() && args[..k.len()].iter().zip(&k).all(|(a, b)| a == b)
            };
            if let Some((_, extra)) = SHORTER.iter().find(|(c, _)| starts(c)) {
                args.extend(extra.iter().map(|s| s.to_string()));
            }
            if first == "serve" {
                serve_once(&args, cwd, &env, line);
            } else {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_clip"))
                    .args(&args)
                    .current_dir(cwd)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "README command failed: {line}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "only {ran} README commands found");
    // `clip` itself is the binary under test
    assert!(clip(&["--version"]).status.success());
}
