//! The web page of `clip serve` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs): a search typed in the URL renders the same results
//! as `POST /search`, "similar" links work, an uploaded image finds itself, and the rerank page
//! orders uploaded candidates as `POST /rerank` does. Screenshots are kept in the target folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::server::Server;
use common::{model, ok_out, root};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Chromium's binary: `$CLIP_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    let p = std::env::var_os("CLIP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "{} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does) or set CLIP_CHROMIUM",
        p.display()
    );
    p
}

/// Flags for a headless Chromium on a machine without a network, as root.
fn flags(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A small real index and a server on it.
fn indexed_server(dir: &Path) -> (Server, Vec<PathBuf>) {
    let pics = dir.join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    let mut files = Vec::new();
    for name in [
        "photo_224.jpg",
        "alpha.png",
        "grey.png",
        "mode_rgb.png",
        "lossy.webp",
        "palette.png",
    ] {
        let p = pics.join(name);
        std::fs::copy(root().join("testdata/images").join(name), &p).unwrap();
        files.push(p);
    }
    let db = dir.join("pics.db");
    ok_out(&["index", s(&pics), "--model", &model(), "--db", s(&db)]);
    (Server::start(&["--db", s(&db)]), files)
}

fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_search_page_renders_the_servers_results() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _) = indexed_server(dir.path());
    let (_, out) = srv.post("/search", r#"{"text": "a photo", "k": 4}"#);
    let want: Vec<(i64, String)> = json(&out)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_i64().unwrap(),
                h["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(want.len(), 4);
    let dom = |url: &str, shot: Option<&Path>| -> String {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(chromium());
        cmd.args(flags(profile.path()))
            .arg("--virtual-time-budget=10000");
        match shot {
            Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
            None => cmd.arg("--dump-dom"),
        };
        let out = cmd.arg(url).stderr(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "chromium failed on {url}");
        String::from_utf8(out.stdout).unwrap()
    };
    let url = format!("{}/?q=a+photo&k=4", srv.base);
    let page = dom(&url, None);
    // the result cards, in order, with their ids, paths and thumbnails
    let cards: Vec<&str> = page.split("class=\"hit\"").skip(1).collect();
    assert_eq!(cards.len(), 4, "{page}");
    for (card, (id, path)) in cards.iter().zip(&want) {
        assert!(card.contains(&format!("data-id=\"{id}\"")), "{card}");
        assert!(card.contains(&format!("src=\"/thumb/{id}\"")), "{card}");
        assert!(card.contains(path.as_str()), "{card}");
    }
    assert!(page.contains("4 results for “a photo”"), "{page}");
    assert!(
        page.contains("value=\"a photo\"") || page.contains("a photo"),
        "the query box keeps the query"
    );
    // more like an image: it comes first, with cosine 1
    let (id, path) = &want[2];
    let page = dom(&format!("{}/?similar={id}&k=3", srv.base), None);
    let first = page.split("class=\"hit\"").nth(1).unwrap();
    assert!(
        first.contains(&format!("data-id=\"{id}\"")) && first.contains(path.as_str()),
        "{first}"
    );
    assert!(first.contains("1.0000"), "{first}");
    // a screenshot of the rendered page, kept
    let shot = shots().join("search.png");
    dom(&url, Some(&shot));
    let img = image::open(&shot).unwrap();
    assert!(img.width() >= 800, "screenshot {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

/// A WebDriver session on chromedriver.
struct Driver {
    child: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::env::var_os("CLIP_CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
        assert!(
            driver.exists(),
            "{} not found: install Debian's chromium-driver (.ci/run does) or set CLIP_CHROMEDRIVER",
            driver.display()
        );
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let t0 = Instant::now();
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": s(&chromium()), "args": flags(profile.path())}}}});
        let mut d = Driver {
            child,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(serde_json::json!({})).to_string().as_bytes()),
        }
        .unwrap();
        let v = json(&r.body_mut().read_to_string().unwrap());
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({"url": url})));
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(serde_json::json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), None);
    }

    fn script(&self, js: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": js, "args": []})),
        )
    }

    /// The result cards' (label, score text), once `n` are shown.
    fn cards(&self, n: usize) -> Vec<(String, String)> {
        let t0 = Instant::now();
        loop {
            let v = self.script(
                "return [...document.querySelectorAll('.hit')].map(h => [h.querySelector('.path').textContent, h.querySelector('.score').textContent]);",
            );
            let rows: Vec<(String, String)> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            (
                                r[0].as_str().unwrap().to_owned(),
                                r[1].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.len() >= n {
                return rows;
            }
            let status = self.script("return document.getElementById('status').textContent;");
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no results; status: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn uploads_search_by_image_and_the_rerank_page_orders_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, files) = indexed_server(dir.path());
    let d = Driver::start();
    // search by an uploaded image: it finds itself first
    d.go(&format!("{}/?k=3", srv.base));
    d.type_into("#file", s(&files[3]));
    let cards = d.cards(3);
    assert!(cards[0].0.ends_with("mode_rgb.png"), "{cards:?}");
    assert_eq!(cards[0].1, "1.0000", "{cards:?}");
    d.screenshot(&shots().join("search-by-upload.png"));
    // the rerank page: the order and scores of POST /rerank
    let bytes: Vec<Vec<u8>> = files[..4]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let mut parts: Vec<(&str, &str, &[u8])> = vec![("query", "", b"a photo of a dog")];
    for (f, b) in files[..4].iter().zip(&bytes) {
        parts.push(("image", f.file_name().unwrap().to_str().unwrap(), b));
    }
    let (st, out) = srv.post_form("/rerank", &parts);
    assert_eq!(st, 200, "{out}");
    let want: Vec<(String, f64)> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let i = r["index"].as_u64().unwrap() as usize;
            (
                files[i].file_name().unwrap().to_str().unwrap().to_owned(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect();
    d.go(&format!("{}/rerank-page", srv.base));
    d.type_into("#caption", "a photo of a dog");
    let paths: Vec<&str> = files[..4].iter().map(|f| s(f)).collect();
    d.type_into("#candidates", &paths.join("\n"));
    d.click("#rerank-form button");
    let cards = d.cards(4);
    let got: Vec<&str> = cards.iter().map(|c| c.0.as_str()).collect();
    let expect: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(got, expect);
    for (c, (_, score)) in cards.iter().zip(&want) {
        assert!(c.1.starts_with(&format!("{score:.4}")), "{c:?} vs {score}");
    }
    d.screenshot(&shots().join("rerank.png"));
}
