//! The store's background work and reads, on SQLite and PostgreSQL side by
//! side (ingest has its own bench, `benches/ingest.rs`).
//!
//!     cargo bench --bench store
//!
//! Sweep: one full
//! sweep (batches of 500) over stored runs of which 1,000 are overdue, at
//! several table sizes; its time should not grow with the table. Dashboard:
//! the signed-in open-runs page over 10,000 and 100,000 open runs; its first
//! page should not grow with them either.
//! PostgreSQL is `ASSAY_BENCH_POSTGRES_URL` (default: the local server);
//! without it the PostgreSQL rows are skipped. Bounded: a few seconds each.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assay::config::{Config, Sources};
use assay::store::{DatabaseSettings, Store, connect};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use common::{BenchDb, percentile};

const OVERDUE: i64 = 1000;

/// The real server on an ephemeral loopback port, configured by `settings`,
/// ready (migrated) when this returns.
struct Running {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(settings: &[(&str, &str)]) -> Running {
        let env: HashMap<String, String> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = Config::load(Sources {
            file: None,
            env: &env,
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(assay::server::serve(config, listener, shutdown.clone()));
        assay::install_crypto_provider();
        let client = reqwest::Client::new();
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Running {
            base,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// `count` runs with deadlines an hour away plus [`OVERDUE`] overdue ones,
/// written in one statement each.
const FILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
    INSERT INTO runs (id, project, workflow, event_id, event_type, stage, status, opened_at, \
    reconciled_due_at, access_due_at, deadline_at, event_created_at) \
    SELECT '00000000-0000-4000-8000-' || printf('%012d', i), 'default', 'billing', 'evt_' || i, 'invoice.paid', 'received', 'open', \
    0, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END FROM n";
const FILL_POSTGRES: &str = "INSERT INTO runs (id, project, workflow, event_id, event_type, stage, status, opened_at, \
    reconciled_due_at, access_due_at, deadline_at, event_created_at) \
    SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), 'default', 'billing', 'evt_' || i, 'invoice.paid', 'received', 'open', d, d, d, d, 0 \
    FROM (SELECT i, CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END AS d \
          FROM generate_series(1, $1::bigint) AS i) AS s";

async fn bench_sweep(label: &str, postgres: Option<&str>, stored: i64) {
    let db = BenchDb::create(postgres).await;
    let store: Arc<dyn Store> = connect(&DatabaseSettings {
        url: db.url.clone(),
        max_connections: 4,
        statement_timeout: Duration::from_secs(60),
        lease: Duration::from_secs(30),
    })
    .await
    .unwrap();
    db.execute(
        if postgres.is_some() {
            FILL_POSTGRES
        } else {
            FILL_SQLITE
        },
        stored,
    )
    .await;
    if postgres.is_some() {
        db.execute("ANALYZE runs", 0).await;
    }
    let started = Instant::now();
    let mut failed = 0;
    loop {
        let swept = store.sweep(Utc::now(), 500).await.unwrap();
        failed += swept.runs_failed;
        if swept.runs_claimed < 500 {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(failed as i64, OVERDUE);
    println!(
        "| sweep | {label} | {stored} stored, {OVERDUE} overdue | {:.0} ms | {} incidents |",
        elapsed.as_secs_f64() * 1000.0,
        failed
    );
    drop(store);
    db.drop_pg().await;
}

/// The open-runs page, signed in, over `stored` open runs: the median and
/// p95 of 200 loads of its first page.
async fn bench_dashboard(label: &str, postgres: Option<&str>, stored: i64) {
    const LOADS: usize = 200;
    let db = BenchDb::create(postgres).await;
    // Migrate, then fill straight in SQL (seconds instead of minutes).
    drop(
        connect(&DatabaseSettings {
            url: db.url.clone(),
            max_connections: 2,
            statement_timeout: Duration::from_secs(60),
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap(),
    );
    db.execute(
        if postgres.is_some() {
            FILL_POSTGRES
        } else {
            FILL_SQLITE
        },
        stored,
    )
    .await;
    db.execute(
        if postgres.is_some() {
            "ANALYZE runs"
        } else {
            "ANALYZE"
        },
        0,
    )
    .await;
    let server = Running::start(&[
        ("ASSAY_DATABASE_URL", db.url.as_str()),
        ("ASSAY_ADMIN_TOKEN", "bench-admin-token"),
        // No sweep during the measurement: it would fail the overdue runs.
        ("ASSAY_SWEEP_SCHEDULE", "0 0 0 1 1 * 2099"),
        ("ASSAY_LOG", "warn"),
    ])
    .await;
    let base = &server.base;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = client
        .post(format!("{base}/signin"))
        .form(&[("token", "bench-admin-token")])
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut times = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        let started = Instant::now();
        let response = client
            .get(format!("{base}/?status=open"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page = response.text().await.unwrap();
        times.push(started.elapsed());
        assert!(page.contains("Older runs"), "a full first page");
    }
    times.sort();
    println!(
        "| dashboard | {label} | {stored} open runs, first page of 50 | {:.1} ms median | p95 {:.1} ms |",
        percentile(&times, 0.5),
        percentile(&times, 0.95)
    );
    server.stop().await;
    db.drop_pg().await;
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let postgres = common::postgres().await;
    println!("| what | backend | load | result | detail |");
    println!("| --- | --- | --- | --- | --- |");
    for stored in [10_000, 100_000] {
        bench_sweep("SQLite", None, stored).await;
        if let Some(postgres) = &postgres {
            bench_sweep("PostgreSQL", Some(postgres), stored).await;
        }
    }
    for stored in [10_000, 100_000] {
        bench_dashboard("SQLite", None, stored).await;
        if let Some(postgres) = &postgres {
            bench_dashboard("PostgreSQL", Some(postgres), stored).await;
        }
    }
}
