//! `clip serve` as users run it: a real server on a loopback port, called over HTTP. Embeddings
//! equal `clip embed`'s; every bad input gets its status and message; search, knn-service,
//! thumbnails, classify and rerank answer; overload gives 429; SIGTERM stops it cleanly.

use std::path::Path;

use base64::Engine;

mod common;
use common::server::Server;
use common::{model, ok_out, root};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `clip embed` rows of a .jsonl output.
fn embed_rows(args: &[&str], dir: &Path) -> Vec<Vec<f64>> {
    let out = dir.join(format!("e{}.jsonl", args.len()));
    let m = model();
    let mut a = vec!["embed", "--model", &m, "--out", s(&out)];
    a.extend_from_slice(args);
    ok_out(&a);
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            json(l)["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn as_rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }
}

fn photo() -> Vec<u8> {
    std::fs::read(root().join("testdata/images/photo_224.jpg")).unwrap()
}

#[test]
fn embeddings_equal_clip_embed_for_texts_and_images_in_every_request_shape() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&["--model", &model()]);
    let texts = ["a dog", "two cats on a sofa"];
    let want = embed_rows(&["--text", texts[0], "--text", texts[1]], dir.path());
    let (st, body) = srv.post("/embed", r#"{"inputs": ["a dog", "two cats on a sofa"]}"#);
    assert_eq!(st, 200, "{body}");
    assert_close(&as_rows(&json(&body)), &want);
    // one string
    let (st, body) = srv.post("/embed", r#"{"inputs": "a dog"}"#);
    assert_eq!(st, 200);
    assert_close(&as_rows(&json(&body)), &want[..1]);
    // OpenAI's shape, float and base64
    let (st, body) = srv.post(
        "/v1/embeddings",
        r#"{"input": ["a dog", "two cats on a sofa"], "model": "x"}"#,
    );
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    let rows: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_close(&rows, &want);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 4, "{v}");
    let (_, body) = srv.post(
        "/v1/embeddings",
        r#"{"input": "a dog", "encoding_format": "base64"}"#,
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(json(&body)["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f64> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect();
    assert_close(&[floats], &want[..1]);

    // images: base64 in JSON, and a multipart upload
    let img = root().join("testdata/images/photo_224.jpg");
    let img2 = root().join("testdata/images/alpha.png");
    let want = embed_rows(&["--image", s(&img), "--image", s(&img2)], dir.path());
    let body = serde_json::json!({"images": [b64(&photo()), format!("data:image/png;base64,{}", b64(&std::fs::read(&img2).unwrap()))]});
    let (st, out) = srv.post("/embed", &body.to_string());
    assert_eq!(st, 200, "{out}");
    assert_close(&as_rows(&json(&out)), &want);
    let png = std::fs::read(&img2).unwrap();
    let (st, out) = srv.post_form(
        "/embed",
        &[("image", "a.jpg", &photo()), ("image", "b.png", &png)],
    );
    assert_eq!(st, 200, "{out}");
    assert_close(&as_rows(&json(&out)), &want);
    // unnormalised features are not unit length
    let (_, out) = srv.post("/embed", r#"{"inputs": ["a dog"], "normalize": false}"#);
    let raw = &as_rows(&json(&out))[0];
    let norm: f64 = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "{norm}");

    // health, info, metrics, the OpenAPI document and Swagger UI
    let (st, _, _) = srv.get("/health");
    assert_eq!(st, 200);
    let (_, _, info) = srv.get("/info");
    let info = json(&String::from_utf8(info).unwrap());
    assert_eq!(info["model_id"], model());
    assert!(info["dimensions"].as_u64().unwrap() > 0);
    let (_, ct, m) = srv.get("/metrics");
    assert!(ct.starts_with("text/plain"), "{ct}");
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("clip_requests_total{route=\"/embed\",status=\"200\"} 5"),
        "{m}"
    );
    // every text and image went through a forward pass exactly once
    assert!(m.contains("clip_batch_size_sum{tower=\"image\"} 4"), "{m}");
    let (st, _, doc) = srv.get("/openapi.json");
    assert_eq!(st, 200);
    let doc = json(&String::from_utf8(doc).unwrap());
    for p in [
        "/embed",
        "/v1/embeddings",
        "/rerank",
        "/classify",
        "/search",
        "/knn-service",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    let (st, ct, page) = srv.get("/docs/");
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        String::from_utf8_lossy(&page).contains("swagger"),
        "no Swagger UI"
    );
    assert_eq!(srv.terminate().code(), Some(0));
}

#[test]
fn bad_requests_get_their_status_and_reason() {
    let srv = Server::start(&[
        "--model",
        &model(),
        "--max-inputs",
        "3",
        "--max-body-mb",
        "1",
        "--max-megapixels",
        "1",
    ]);
    let check = |path: &str, body: &str, status: u16, msg: &str| {
        let (st, out) = srv.post(path, body);
        assert_eq!(st, status, "{path} {body}: {out}");
        let v = json(&out);
        assert!(
            v["error"].as_str().unwrap().contains(msg),
            "{path} {body}: {out}"
        );
    };
    check(
        "/embed",
        r#"{"inputs": ["a", "b", "c", "d"]}"#,
        422,
        "4 texts in one request; the limit is 3 (--max-inputs)",
    );
    check(
        "/embed",
        r#"{"inputs": ["a dog", "data:image/png;base64,iVBORw0KGgo="]}"#,
        422,
        "input 2 is a data URI",
    );
    check(
        "/v1/embeddings",
        r#"{"input": "data:image/jpeg;base64,/9j/4AAQ"}"#,
        422,
        "is a data URI",
    );
    // texts whose first bytes end inside a character are texts (the data-URI check once
    // panicked on them and dropped the connection), and are embedded like any other
    let (st, out) = srv.post(
        "/embed",
        r#"{"inputs": ["ยぇי丨 ยनテ", "piÃ±ata Zürich", "dată: ✓"]}"#,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(as_rows(&json(&out)).len(), 3, "{out}");
    check(
        "/embed",
        r#"{"inputs": ["a dog""#,
        422,
        "malformed JSON body: EOF while parsing",
    );
    check(
        "/embed",
        r#"{"input": "a dog"}"#,
        422,
        "malformed JSON body: unknown field `input`",
    );
    check(
        "/embed",
        r#"{"inputs": "a", "images": []}"#,
        422,
        "give exactly one of",
    );
    check(
        "/embed",
        r#"{"images": ["not base64!"]}"#,
        422,
        "images[0] is not valid base64",
    );
    let long = "word ".repeat(200);
    check(
        "/embed",
        &format!(r#"{{"inputs": ["{long}"]}}"#),
        422,
        "input 1: text is",
    );
    let (st, _) = srv.post(
        "/embed",
        &format!(r#"{{"inputs": ["{long}"], "truncate": true}}"#),
    );
    assert_eq!(st, 200);
    // a header claiming 20000×20000 pixels is refused before decoding
    let bomb = {
        let mut img = image::RgbImage::new(1200, 1000);
        img.put_pixel(0, 0, image::Rgb([1, 2, 3]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    check(
        "/embed",
        &serde_json::json!({"images": [b64(&bomb)]}).to_string(),
        422,
        "image 1 is 1200×1000 pixels (1.2 megapixels), over this server's limit of 1 megapixels; it was not decoded",
    );
    check(
        "/embed",
        &serde_json::json!({"images": [b64(b"GIF89a nonsense")]}).to_string(),
        422,
        "image 1",
    );
    // an over-size body
    let big = format!(r#"{{"inputs": ["{}"]}}"#, "x".repeat(2 << 20));
    let (st, _) = srv.post_raw("/embed", big.as_bytes());
    assert_eq!(st, 413);
    // no index loaded; unknown routes; thumbnails never read a client path
    check(
        "/search",
        r#"{"text": "a dog"}"#,
        400,
        "this server has no index",
    );
    let (st, _, _) = srv.get("/thumb/..%2F..%2Fetc%2Fpasswd");
    assert_eq!(st, 404);
    let (st, _, _) = srv.get("/nope");
    assert_eq!(st, 404);
    // classify and rerank validation
    check(
        "/classify",
        &serde_json::json!({"image": b64(&photo()), "labels": ["a", "a"]}).to_string(),
        422,
        "label \"a\" is given twice",
    );
    check(
        "/rerank",
        r#"{"query": "x"}"#,
        422,
        "give exactly one of \"texts\" or \"images\"",
    );
}

#[test]
fn a_token_guards_the_api_and_overload_is_answered_429() {
    let srv = Server::start(&[
        "--model",
        &model(),
        "--token",
        "s3cret",
        "--queue",
        "1",
        "--max-batch",
        "1",
    ]);
    let (st, out) = srv.post("/embed", r#"{"inputs": "a"}"#);
    assert_eq!(st, 401, "{out}");
    let (st, _, _) = srv.get("/health");
    assert_eq!(st, 200, "health stays open");
    let call = |body: &str| -> u16 {
        let mut r = srv
            .agent
            .post(format!("{}/embed", srv.base))
            .header("Authorization", "Bearer s3cret")
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .unwrap();
        let _ = r.body_mut().read_to_string();
        r.status().as_u16()
    };
    assert_eq!(call(r#"{"inputs": "a dog"}"#), 200);
    // many concurrent requests against a queue of one: some are refused, none fail otherwise
    let texts: Vec<String> = (0..64).map(|i| format!("\"text number {i}\"")).collect();
    let body = format!(r#"{{"inputs": [{}]}}"#, texts[..3].join(","));
    let mut statuses = Vec::new();
    for _round in 0..10 {
        let got: Vec<u16> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..32).map(|_| sc.spawn(|| call(&body))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        statuses.extend(got);
        if statuses.contains(&429) {
            break;
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "no request was refused: {statuses:?}"
    );
    assert!(statuses.contains(&200));
    let (st, body) = srv.post("/embed", r#"{"inputs": "a"}"#);
    assert_eq!(st, 401);
    assert!(body.contains("missing or wrong bearer token"));
}

#[test]
fn search_knn_service_thumbnails_classify_and_rerank_answer_over_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    for name in [
        "photo_224.jpg",
        "alpha.png",
        "grey.png",
        "mode_rgb.png",
        "lossy.webp",
    ] {
        std::fs::copy(root().join("testdata/images").join(name), pics.join(name)).unwrap();
    }
    let db = dir.path().join("pics.db");
    ok_out(&["index", s(&pics), "--model", &model(), "--db", s(&db)]);
    // the model comes from the index
    let srv = Server::start(&["--db", s(&db)]);
    let (st, out) = srv.post("/search", r#"{"text": "a photo", "k": 3}"#);
    assert_eq!(st, 200, "{out}");
    let hits = json(&out)["results"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 3);
    // the same results as `clip search`
    let (cli, _) = ok_out(&["search", "--db", s(&db), "a photo", "-k", "3", "--json"]);
    let cli_paths: Vec<String> = cli
        .lines()
        .map(|l| json(l)["path"].as_str().unwrap().to_owned())
        .collect();
    let srv_paths: Vec<String> = hits
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cli_paths, srv_paths);
    // more like this: an image is its own nearest neighbour
    let id = hits[1]["id"].as_i64().unwrap();
    let (_, out) = srv.post("/search", &format!(r#"{{"id": {id}, "k": 2}}"#));
    let top = &json(&out)["results"][0];
    assert_eq!(top["id"].as_i64(), Some(id));
    assert!((top["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    // an uploaded image
    let (st, out) = srv.post_form("/search", &[("image", "q.jpg", &photo()), ("k", "", b"1")]);
    assert_eq!(st, 200, "{out}");
    assert!(
        json(&out)["results"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("photo_224.jpg"),
        "{out}"
    );
    // thumbnails by id only
    let (st, ct, jpg) = srv.get(&format!("/thumb/{id}?size=64"));
    assert_eq!((st, ct.as_str()), (200, "image/jpeg"));
    let t = image::load_from_memory(&jpg).unwrap();
    assert!(t.width() <= 64 && t.height() <= 64);
    for bad in ["999999", "..%2F..%2Fetc%2Fpasswd", "-1"] {
        let (st, _, _) = srv.get(&format!("/thumb/{bad}"));
        assert_eq!(st, 404, "{bad}");
    }
    let (st, _, bytes) = srv.get(&format!("/image/{id}"));
    assert_eq!(st, 200);
    assert!(!bytes.is_empty());
    // clip-retrieval's client: a JSON body without a content type, every field it sends
    let req = serde_json::json!({"text": "a photo", "image": null, "image_url": null, "embedding_input": null,
        "deduplicate": false, "use_safety_model": true, "use_violence_detector": true, "indice_name": "pics",
        "use_mclip": false, "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image",
        "num_images": 2, "num_result_ids": 2, "verbose": false});
    let (st, out) = srv.post_typed("/knn-service", "", req.to_string().as_bytes());
    assert_eq!(st, 200, "{out}");
    let res = json(&out);
    assert_eq!(res.as_array().unwrap().len(), 2, "{out}");
    assert!(
        res[0]["similarity"].is_number() && res[0]["url"].as_str().unwrap().contains("/image/"),
        "{out}"
    );
    let (_, _, names) = srv.get("/indices-list");
    assert_eq!(
        json(&String::from_utf8(names).unwrap()),
        serde_json::json!(["pics"])
    );
    // classify: probabilities over the labels, the same as `clip classify`
    let (st, out) = srv.post("/classify", &serde_json::json!({"image": b64(&photo()), "labels": ["a dog", "a cat", "a flower"], "templates": "imagenet"}).to_string());
    assert_eq!(st, 200, "{out}");
    let preds = json(&out);
    let total: f64 = preds
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4);
    let (cli, _) = ok_out(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        "a dog,a cat,a flower",
        "--templates",
        "imagenet",
        "--json",
        s(&pics.join("photo_224.jpg")),
    ]);
    let cli = json(cli.trim());
    assert_eq!(cli["top"][0]["label"], preds[0]["label"]);
    assert!(
        (cli["top"][0]["prob"].as_f64().unwrap() - preds[0]["score"].as_f64().unwrap()).abs()
            < 1e-4
    );
    // rerank: texts (TEI's shape) and uploaded images
    let (st, out) = srv.post(
        "/rerank",
        r#"{"query": "a dog", "texts": ["a dog", "a spreadsheet"], "return_text": true}"#,
    );
    assert_eq!(st, 200, "{out}");
    let r = json(&out);
    assert_eq!(r[0]["index"], 0);
    assert_eq!(r[0]["text"], "a dog");
    assert!((r[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let png = std::fs::read(pics.join("alpha.png")).unwrap();
    let (st, out) = srv.post_form(
        "/rerank",
        &[
            ("query", "", b"a photo"),
            ("image", "a.jpg", &photo()),
            ("image", "b.png", &png),
        ],
    );
    assert_eq!(st, 200, "{out}");
    let r = json(&out);
    let p: f64 = r
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["probability"].as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-4, "{out}");
    // the page is served
    let (st, ct, page) = srv.get("/");
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page).contains("id=\"results\""));
}

#[test]
fn an_index_made_by_another_model_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pics = dir.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    std::fs::copy(
        root().join("testdata/images/grey.png"),
        pics.join("grey.png"),
    )
    .unwrap();
    let db = dir.path().join("o.db");
    ok_out(&["index", s(&pics), "--model", &model(), "--db", s(&db)]);
    let other = root().join("testdata/models/vit_openclip_hub");
    let err = common::fails(&[
        "serve",
        "--model",
        s(&other),
        "--db",
        s(&db),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("was made by model '"), "{err}");
}

/// Send a POST's head and the first `sent` bytes of `body` on a raw socket, leaving the rest unsent.
fn half_sent(srv: &Server, path: &str, body: &[u8], sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let host = srv.base.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body[..sent]).unwrap();
    c.flush().unwrap();
    c
}

fn read_all(mut c: std::net::TcpStream) -> String {
    use std::io::Read;
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_request_over_the_time_limit_gets_408_and_the_server_goes_on() {
    let srv = Server::start(&["--model", &model(), "--timeout", "1"]);
    // a client that stalls in the middle of its body holds no worker past the limit
    let body = br#"{"inputs": ["a dog on a beach", "a cat"]}"#;
    let t = std::time::Instant::now();
    let c = half_sent(&srv, "/embed", body, 10);
    let answer = read_all(c);
    let waited = t.elapsed().as_secs_f64();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "expected 408 Request Timeout, got: {answer}"
    );
    assert!(
        (0.9..20.0).contains(&waited),
        "answered after {waited:.2} s with --timeout 1"
    );
    // and the next request is served normally
    let (st, out) = srv.post("/embed", std::str::from_utf8(body).unwrap());
    assert_eq!(st, 200, "{out}");
    assert_eq!(as_rows(&json(&out)).len(), 2);
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_cleanly() {
    let mut srv = Server::start(&["--model", &model()]);
    let body = br#"{"inputs": ["a dog on a beach", "a cat", "two birds"]}"#;
    let (st, want) = srv.post("/embed", std::str::from_utf8(body).unwrap());
    assert_eq!(st, 200, "{want}");
    // a request whose body is half sent when SIGTERM arrives
    let mut c = half_sent(&srv, "/embed", body, 12);
    std::thread::sleep(std::time::Duration::from_millis(200));
    srv.sigterm();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "the server exited with a request in flight"
    );
    {
        use std::io::Write;
        c.write_all(&body[12..]).unwrap();
    }
    let answer = read_all(c);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_close(&as_rows(&json(got)), &as_rows(&json(&want)));
    let status = srv.wait_exit();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_as_soon_as_the_server_says_it_listens_is_a_clean_stop() {
    // the handlers are installed before the address is printed (a SIGTERM in between once
    // killed the process with the default action)
    for _ in 0..5 {
        let srv = Server::start(&["--model", &model()]);
        let status = srv.terminate();
        assert!(status.success(), "{status:?}");
    }
}
