//! The store's background work and reads, on SQLite and PostgreSQL side by
//! side (ingest has its own bench, `benches/ingest.rs`).
//!
//!     cargo bench --bench store
//!
//! Sweep: full
//! sweeps by the sweeper, as `assay serve` runs it (batches of 500, several
//! at once on PostgreSQL), over stored runs of which 1,000 are overdue, at
//! several table sizes, five times each; its time should not grow with the
//! table. Dashboard:
//! the signed-in open-runs page over 10,000 and 100,000 open runs; its first
//! page should not grow with them either. Probe: 10,000 runs due for a
//! probe, `assay serve` (the release binary) probing a loopback app at the
//! configured concurrency: probes/s, from the first attempt to the last, and
//! the server's peak RSS.
//! PostgreSQL is `ASSAY_BENCH_POSTGRES_URL` (default: the local server);
//! without it the PostgreSQL rows are skipped. Bounded: a few seconds each.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assay::config::{Config, DEFAULT_DATABASE_MAX_CONNECTIONS, Sources};
use assay::metrics::Metrics;
use assay::store::{DatabaseSettings, Store, connect};
use assay::sweeper::Sweeper;
use tokio_util::sync::CancellationToken;

use common::{BenchDb, Server, percentile};

const OVERDUE: i64 = 1000;
/// Sweeps per table size, each of the same 1,000 runs made overdue again:
/// one sweep's time moves by half between runs on this machine.
const SWEEPS: usize = 5;

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

/// `count` runs with deadlines far away plus [`OVERDUE`] overdue ones,
/// written in one statement each; the two statements write the same rows.
/// Each run has a customer and a subscription of its own, as real runs do:
/// without them, three of the runs indexes held one key a million times,
/// which made the sweep's index writes cheaper than on a real table.
const FILL_SQLITE: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
    INSERT INTO runs (id, project, workflow, event_id, event_type, customer_id, subscription_id, stage, status, opened_at, \
    reconciled_due_at, access_due_at, deadline_at, event_created_at) \
    SELECT '00000000-0000-4000-8000-' || printf('%012d', i), 'default', 'billing', 'evt_' || i, 'invoice.paid', \
    'cus_' || i, 'sub_' || i, 'received', 'open', \
    0, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END, \
    0 FROM n";
const FILL_POSTGRES: &str = "INSERT INTO runs (id, project, workflow, event_id, event_type, customer_id, subscription_id, stage, \
    status, opened_at, reconciled_due_at, access_due_at, deadline_at, event_created_at) \
    SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), 'default', 'billing', 'evt_' || i, 'invoice.paid', \
    'cus_' || i, 'sub_' || i, 'received', 'open', 0, d, d, d, 0 \
    FROM (SELECT i, CASE WHEN i <= 1000 THEN 0 ELSE 9000000000000 END AS d \
          FROM generate_series(1, $1::bigint) AS i) AS s";

async fn bench_sweep(label: &str, postgres: Option<&str>, stored: i64) {
    let db = BenchDb::create(postgres).await;
    let store: Arc<dyn Store> = connect(&DatabaseSettings {
        url: db.url.clone(),
        max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
        statement_timeout: Duration::from_secs(60),
        lease: Duration::from_secs(30),
    })
    .await
    .unwrap();
    // The sweeper as `assay serve` runs it, at the default batch size.
    let defaults = Config::load(Sources {
        file: None,
        env: &HashMap::new(),
    })
    .unwrap();
    let sweeper = Sweeper::new(store.clone(), defaults.sweep, Arc::new(Metrics::new()));
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
    let mut times = Vec::new();
    for sweep in 0..SWEEPS {
        if sweep > 0 {
            // The same runs overdue again, as they were filled, and what the
            // last sweep wrote about them gone.
            for sql in [
                "UPDATE runs SET status = 'open', deadline_at = $1, closed_at = NULL WHERE status = 'failed'",
                "DELETE FROM incidents WHERE opened_at >= $1",
                "DELETE FROM run_timeline WHERE at >= $1",
            ] {
                db.execute(sql, 0).await;
            }
        }
        let started = Instant::now();
        let incidents = sweeper.sweep_once().await.unwrap().len();
        times.push(started.elapsed());
        assert_eq!(incidents as i64, OVERDUE, "one incident per overdue run");
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'failed'")
                .await,
            OVERDUE,
            "every overdue run failed, and no other"
        );
    }
    times.sort();
    println!(
        "| sweep | {label} | {stored} stored, {OVERDUE} overdue | median {:.0} ms ({:.0} to {:.0}) | {SWEEPS} sweeps, {OVERDUE} incidents each |",
        percentile(&times, 0.5),
        percentile(&times, 0.0),
        percentile(&times, 1.0),
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

/// Runs due for a probe, each about its own customer.
const PROBED: i64 = 10_000;
/// The prober's concurrency towards one host (`ASSAY_PROBE_HOST_CONCURRENCY`).
const PROBE_CONCURRENCY: &str = "16";
const FILL_PROBES: &str = "INSERT INTO probe_queue (run_id, due_at) SELECT id, 0 FROM runs";

async fn bench_probe(label: &str, postgres: Option<&str>) {
    let db = BenchDb::create(postgres).await;
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
    // Open runs, far from their deadlines, probed from the start.
    db.execute(
        if postgres.is_some() {
            FILL_POSTGRES
        } else {
            FILL_SQLITE
        },
        PROBED,
    )
    .await;
    db.execute(
        "UPDATE runs SET probe_start = 'open', customer_id = 'cus_' || event_id, \
         expected_plan = 'pro', reconciled_due_at = $1, access_due_at = $1, deadline_at = $1",
        9_000_000_000_000,
    )
    .await;
    db.execute(FILL_PROBES, 0).await;
    // The app: every customer has the plan the run expects.
    let app = axum::Router::new().route(
        "/access/{customer}",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"plan": "pro"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut command = common::assay_serve(&db);
    command
        .env(
            "ASSAY_PROBE_URL",
            format!("http://{app_addr}/access/{{{{customer_id}}}}"),
        )
        .env("ASSAY_PROBE_START", "open")
        .env("ASSAY_PROBE_HOST_CONCURRENCY", PROBE_CONCURRENCY)
        .env("ASSAY_PROBE_HOST_RATE", "10000")
        .env("ASSAY_PROBE_INTERVAL", "1h")
        .env("ASSAY_PROBE_MAX_INTERVAL", "1h");
    let mut server = Server::spawn(command);
    server.ready().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while db
        .scalar("SELECT COUNT(DISTINCT run_id) FROM probe_attempts")
        .await
        < PROBED
    {
        if Instant::now() > deadline {
            let attempts = db.scalar("SELECT COUNT(*) FROM probe_attempts").await;
            let queued = db.scalar("SELECT COUNT(*) FROM probe_queue").await;
            panic!("{label}: the probes did not finish: {attempts} attempts, {queued} queued");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let span_ms = db
        .scalar("SELECT MAX(at) - MIN(at) FROM probe_attempts")
        .await;
    let matched = db
        .scalar("SELECT COUNT(*) FROM probe_attempts WHERE matched")
        .await;
    assert_eq!(
        matched, PROBED,
        "{label}: every probe saw the expected plan"
    );
    println!(
        "| probe | {label} | {PROBED} runs due, concurrency {PROBE_CONCURRENCY} | {:.0} probes/s | peak RSS {:.0} MiB |",
        PROBED as f64 / (span_ms.max(1) as f64 / 1000.0),
        server.peak_rss_mib()
    );
    drop(server);
    db.drop_pg().await;
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // `cargo bench --bench store -- probe` runs only the probe rows.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |what: &str| only.as_deref().is_none_or(|o| what.contains(o));
    let postgres = common::postgres().await;
    println!("| what | backend | load | result | detail |");
    println!("| --- | --- | --- | --- | --- |");
    if wanted("sweep") {
        for stored in [10_000, 100_000, 1_000_000] {
            bench_sweep("SQLite", None, stored).await;
            if let Some(postgres) = &postgres {
                bench_sweep("PostgreSQL", Some(postgres), stored).await;
            }
        }
    }
    if wanted("probe") {
        bench_probe("SQLite", None).await;
        if let Some(postgres) = &postgres {
            bench_probe("PostgreSQL", Some(postgres)).await;
        }
    }
    if wanted("dashboard") {
        for stored in [10_000, 100_000] {
            bench_dashboard("SQLite", None, stored).await;
            if let Some(postgres) = &postgres {
                bench_dashboard("PostgreSQL", Some(postgres), stored).await;
            }
        }
    }
}
