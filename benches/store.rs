//! Ingest and sweep, on SQLite and PostgreSQL side by side.
//!
//!     cargo bench --bench store
//!
//! Ingest: signed Stripe events posted over loopback to the real server at a
//! fixed concurrency; every 200 comes after a durable commit. Sweep: one full
//! sweep (batches of 500) over stored runs of which 1,000 are overdue, at
//! several table sizes; its time should not grow with the table. Dashboard:
//! the signed-in open-runs page over 10,000 and 100,000 open runs; its first
//! page should not grow with them either.
//! PostgreSQL is `ASSAY_BENCH_POSTGRES_URL` (default: the local server);
//! without it the PostgreSQL rows are skipped. Bounded: a few seconds each.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assay::config::{Config, Sources};
use assay::store::{DatabaseSettings, Store, connect};
use chrono::Utc;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_bench";
const INGEST_EVENTS: usize = 4000;
const CONCURRENCY: usize = 32;
const OVERDUE: i64 = 1000;

fn sign(payload: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

fn event(i: usize) -> String {
    serde_json::json!({
        "id": format!("evt_bench_{i}"), "object": "event", "type": "customer.subscription.created",
        "created": 1_767_225_600, "livemode": false,
        "data": {"object": {"id": format!("sub_{i}"), "object": "subscription", "customer": format!("cus_{i}"),
            "status": "active", "items": {"data": [{"price": {"id": "price_pro", "lookup_key": null, "product": "prod_1"}}]}}}
    })
    .to_string()
}

/// A fresh database for one measurement: a temp SQLite file, or a new
/// PostgreSQL database (dropped at the end of the run).
struct BenchDb {
    url: String,
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl BenchDb {
    async fn create(postgres: Option<&str>) -> BenchDb {
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

    async fn drop_pg(self) {
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

    async fn execute(&self, sql: &'static str, bind: i64) {
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
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

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

async fn bench_ingest(label: &str, db: &BenchDb) {
    let server = Running::start(&[
        ("ASSAY_DATABASE_URL", db.url.as_str()),
        ("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET),
        ("ASSAY_PLAN_MAP", "price_pro=pro"),
        ("ASSAY_LOG", "warn"),
    ])
    .await;
    let url = format!("{}/hooks/stripe/default", server.base);
    let client = reqwest::Client::new();
    let bodies: Vec<String> = (0..INGEST_EVENTS).map(event).collect();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(bodies)
        .map(|body| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let sent = Instant::now();
                let response = client
                    .post(url)
                    .header("stripe-signature", sign(&body, Utc::now().timestamp()))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                sent.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "| ingest | {label} | {INGEST_EVENTS} events, concurrency {CONCURRENCY} | {:.0} events/s | p50 {:.1} ms, p99 {:.1} ms |",
        INGEST_EVENTS as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    server.stop().await;
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
    let postgres = std::env::var("ASSAY_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let postgres_up = PgConnectOptions::from_str(&postgres)
        .unwrap()
        .connect()
        .await
        .is_ok();
    if !postgres_up {
        println!("PostgreSQL at {postgres} is not reachable: its rows are skipped");
    }
    println!("| what | backend | load | result | detail |");
    println!("| --- | --- | --- | --- | --- |");
    let sqlite = BenchDb::create(None).await;
    bench_ingest("SQLite", &sqlite).await;
    if postgres_up {
        let pg = BenchDb::create(Some(&postgres)).await;
        bench_ingest("PostgreSQL", &pg).await;
        pg.drop_pg().await;
    }
    for stored in [10_000, 100_000] {
        bench_sweep("SQLite", None, stored).await;
        if postgres_up {
            bench_sweep("PostgreSQL", Some(&postgres), stored).await;
        }
    }
    for stored in [10_000, 100_000] {
        bench_dashboard("SQLite", None, stored).await;
        if postgres_up {
            bench_dashboard("PostgreSQL", Some(&postgres), stored).await;
        }
    }
}
