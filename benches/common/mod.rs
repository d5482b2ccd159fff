//! What the bench binaries share: fresh databases and percentiles.

// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The PostgreSQL server the benches use (`ASSAY_BENCH_POSTGRES_URL`,
/// default: the local one), if it answers; its rows are skipped otherwise.
pub async fn postgres() -> Option<String> {
    let url = std::env::var("ASSAY_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let up = PgConnectOptions::from_str(&url)
        .unwrap()
        .connect()
        .await
        .is_ok();
    if !up {
        println!("PostgreSQL at {url} is not reachable: its rows are skipped");
    }
    up.then_some(url)
}

/// A server process on a loopback port, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn spawn(mut command: Command) -> Server {
        let addr = free_addr();
        command.env("ASSAY_BIND", addr.to_string());
        let child = command
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Server { child, addr }
    }

    /// Waits until `GET /readyz` answers 200 (bounded).
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        assay::install_crypto_provider();
        let client = reqwest::Client::new();
        loop {
            let answer = client
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process's peak resident set so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// CPU seconds the server process has used so far, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }
}

/// CPU seconds process `pid` has used, from `/proc/<pid>/stat` (utime and
/// stime, in the kernel's fixed user-visible tick of 1/100 s); 0 once gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name is in parentheses and may hold spaces; the fields
    // counted from 1 (utime is 14, stime 15) follow its closing one.
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// CPU seconds used so far by every process on this machine named `name`
/// (the PostgreSQL server's backends, for the ingest bench).
pub fn processes_cpu_seconds(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .map(process_cpu_seconds)
        .sum()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `assay serve`, the release binary, on `db`, with nothing else set.
pub fn assay_serve(db: &BenchDb) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_assay"));
    command
        .arg("serve")
        .env_clear()
        .env("ASSAY_DATABASE_URL", &db.url)
        .env("ASSAY_LOG", "warn");
    command
}

pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A fresh database for one measurement: a temp SQLite file, or a new
/// PostgreSQL database (dropped at the end of the run).
pub struct BenchDb {
    pub url: String,
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl BenchDb {
    pub async fn create(postgres: Option<&str>) -> BenchDb {
        let dir = tempfile::tempdir().unwrap();
        match postgres {
            None => BenchDb {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                pg: None,
                _dir: dir,
            },
            Some(admin) => {
                let name = format!("assay_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnectOptions::from_str(admin)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let mut url = url::Url::parse(admin).unwrap();
                url.set_path(&name);
                BenchDb {
                    url: url.to_string(),
                    pg: Some((admin.to_owned(), name)),
                    _dir: dir,
                }
            }
        }
    }

    pub async fn drop_pg(self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = PgConnectOptions::from_str(admin)
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }

    pub async fn execute(&self, sql: &'static str, bind: i64) {
        if self.pg.is_some() {
            let mut conn = PgConnectOptions::from_str(&self.url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(bind)
                .execute(&mut conn)
                .await
                .unwrap();
        } else {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(bind)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    /// One integer a query returns, such as a count.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        if self.pg.is_some() {
            let mut conn = PgConnectOptions::from_str(&self.url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }
}
