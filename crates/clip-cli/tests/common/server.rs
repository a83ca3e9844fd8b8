//! A `clip serve` process on a free loopback port, stopped when dropped, and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    pub base: String,
    pub agent: ureq::Agent,
}

impl Server {
    /// Start `clip serve ARGS --addr 127.0.0.1:0` and wait until it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clip"))
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clip serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        let base = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(rest) = l.strip_prefix("listening on ") {
                        break rest.split_whitespace().next().unwrap().to_owned();
                    }
                    seen.push_str(&l);
                    seen.push('\n');
                }
                _ => {
                    let _ = child.kill();
                    panic!("clip serve did not start:\n{seen}");
                }
            }
        };
        // keep draining stderr so the server never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server { child, base, agent }
    }

    /// POST a JSON body: (status, body text).
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.post_typed(path, "application/json", body.as_bytes())
    }

    pub fn post_typed(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .send(body)
            .expect("request");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    /// POST over a plain socket, for bodies the server refuses before reading them (the client's
    /// writes may fail once the answer is sent): the status, or 0 when none came.
    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let host = self.base.trim_start_matches("http://");
        let mut c = std::net::TcpStream::connect(host).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = c.write_all(head.as_bytes()).and_then(|_| c.write_all(body));
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// POST a multipart form of (name, file name or "", bytes).
    pub fn post_form(&self, path: &str, parts: &[(&str, &str, &[u8])]) -> (u16, String) {
        let boundary = "clip-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            if file.is_empty() {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
            } else {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.post_typed(
            path,
            &format!("multipart/form-data; boundary={boundary}"),
            &body,
        )
    }

    /// GET: (status, content type, body bytes).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("request");
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let status = r.status().as_u16();
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_default();
        (status, ct, body)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// The exit status, waiting up to 30 s.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t0.elapsed().as_secs() < 30,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
