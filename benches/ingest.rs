//! Ingest under a renewal-day burst, against a bare axum handler.
//!
//!     cargo bench --bench ingest
//!
//! A load generator posts signed `customer.subscription.created` events
//! (Stripe's own fixture, about 4 KB, a new subscription each) over loopback
//! at a fixed concurrency, one keep-alive HTTP/1.1 connection per worker, to:
//!
//! - a bare axum handler, in its own process, that reads the body and
//!   answers 200 without work: the floor, so our path's cost shows as a ratio;
//! - `assay serve` (the release binary) on SQLite, then on PostgreSQL, each
//!   on a fresh database. Every 200 comes after a durable commit.
//!
//! For each: events/s, p50 and p99 latency, the server process's peak RSS
//! (`VmHWM`, startup and warm-up included), and the CPU time the server (and,
//! on PostgreSQL, every `postgres` process) spent per measured event.
//! Afterwards the database must hold every event exactly once.
//!
//! Knobs: `ASSAY_BENCH_EVENTS` (default 40,000), `ASSAY_BENCH_CONCURRENCY`
//! (64), `ASSAY_BENCH_POSTGRES_URL` (the local server; its row is skipped if
//! it does not answer). The load generator shares the machine's cores with
//! the server, as it would on a laptop, not as Stripe would.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use common::{BenchDb, Server, percentile};

const SECRET: &str = "whsec_bench";
const PATH: &str = "/hooks/stripe/default";
const WARM_UP: usize = 2_000;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One signed delivery, ready to send.
struct Delivery {
    body: Bytes,
    signature: String,
}

/// `count` deliveries of the fixture, each a new event about a new
/// subscription and customer, signed now (well inside the tolerance).
fn deliveries(first: usize, count: usize, price: &str) -> Vec<Delivery> {
    let fixture: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/fixtures/stripe/events/customer.subscription.created.json"
    ))
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    (first..first + count)
        .map(|i| {
            let mut event = fixture.clone();
            event["id"] = format!("evt_bench_{i:08}").into();
            event["created"] = now.into();
            let subscription = &mut event["data"]["object"];
            subscription["id"] = format!("sub_bench_{i:08}").into();
            subscription["customer"] = format!("cus_bench_{i:08}").into();
            subscription["items"]["data"][0]["price"]["id"] = price.into();
            let body = serde_json::to_vec(&event).unwrap();
            let signature = assay::stripe::signature::sign(&body, SECRET, now);
            Delivery {
                body: body.into(),
                signature,
            }
        })
        .collect()
}

/// What one load run saw.
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: usize,
}

/// Sends every delivery, `concurrency` at a time, each worker on its own
/// keep-alive connection; a request's latency is from send to full answer.
async fn drive(addr: SocketAddr, deliveries: Arc<Vec<Delivery>>, concurrency: usize) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, deliveries) = (next.clone(), deliveries.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let (mut latencies, mut failures) = (Vec::new(), 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(delivery) = deliveries.get(i) else {
                        break;
                    };
                    let request = hyper::Request::post(PATH)
                        .header("host", addr.to_string())
                        .header("content-type", "application/json")
                        .header("stripe-signature", &delivery.signature)
                        .body(Full::new(delivery.body.clone()))
                        .unwrap();
                    let sent = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    let ok = response.status().is_success();
                    response.into_body().collect().await.unwrap();
                    latencies.push(sent.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for worker in workers {
        let (l, f) = worker.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Measured {
        per_second: deliveries.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        failures,
    }
}

fn assay(db: &BenchDb, price: &str) -> Command {
    let mut command = common::assay_serve(db);
    command
        .env("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET)
        .env("ASSAY_PLAN_MAP", format!("{price}=pro"));
    command
}

/// Runs the warm-up and the measured load against `server`; prints a row.
/// `database` names the database server's processes, whose CPU per event
/// is reported beside the server's (PostgreSQL's; SQLite runs inside).
async fn measure(
    label: &str,
    mut server: Server,
    database: Option<&str>,
    events: usize,
    concurrency: usize,
    price: &str,
) -> f64 {
    server.ready().await;
    let warm_up = drive(
        server.addr,
        Arc::new(deliveries(0, WARM_UP, price)),
        concurrency,
    )
    .await;
    assert_eq!(warm_up.failures, 0, "{label}: warm-up requests failed");
    let load = Arc::new(deliveries(WARM_UP, events, price));
    let database_cpu = || database.map(common::processes_cpu_seconds);
    let cpu_before = (server.cpu_seconds(), database_cpu());
    let measured = drive(server.addr, load, concurrency).await;
    let cpu_after = (server.cpu_seconds(), database_cpu());
    assert_eq!(measured.failures, 0, "{label}: requests failed");
    // CPU per event counts the work a change adds or saves, apart from the
    // waits for a core or the disk that throughput also counts. It still
    // moves with the machine's speed: compare runs made side by side.
    let per_event_us = |before: f64, after: f64| (after - before) / events as f64 * 1e6;
    let database = match (cpu_before.1, cpu_after.1) {
        (Some(before), Some(after)) => format!("{:.0} us", per_event_us(before, after)),
        _ => "-".to_owned(),
    };
    println!(
        "| {label} | {events} events, concurrency {concurrency} | {:.0} events/s | {:.1} ms | {:.1} ms | {:.0} MiB | {:.0} us | {database} |",
        measured.per_second,
        measured.p50_ms,
        measured.p99_ms,
        server.peak_rss_mib(),
        per_event_us(cpu_before.0, cpu_after.0),
    );
    measured.per_second
}

/// The floor: reads the body, answers 200. Listens where `ASSAY_BIND` says.
fn bare_axum() {
    let addr = std::env::var("ASSAY_BIND").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let app = axum::Router::new()
            .route("/readyz", axum::routing::get(|| async { "ready" }))
            .route(
                PATH,
                axum::routing::post(|_body: Bytes| async { axum::http::StatusCode::OK }),
            );
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bare-axum") {
        return bare_axum();
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs nothing.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let events = knob("ASSAY_BENCH_EVENTS", 40_000);
    let concurrency = knob("ASSAY_BENCH_CONCURRENCY", 64);
    let price = "price_bench_pro";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let postgres = common::postgres().await;
        println!(
            "| server | load | throughput | p50 | p99 | peak RSS | server CPU per event | PostgreSQL CPU per event |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        let mut bare = Command::new(std::env::current_exe().unwrap());
        bare.arg("bare-axum");
        let floor = measure("bare axum", Server::spawn(bare), None, events, concurrency, price).await;
        let mut ratios = Vec::new();
        let mut backends = vec![("Assay, SQLite", None)];
        if let Some(url) = &postgres {
            backends.push(("Assay, PostgreSQL", Some(url.as_str())));
        }
        for (label, postgres) in backends {
            let db = BenchDb::create(postgres).await;
            let server = Server::spawn(assay(&db, price));
            let database = postgres.map(|_| "postgres");
            let rate = measure(label, server, database, events, concurrency, price).await;
            let stored = db.scalar("SELECT COUNT(*) FROM stripe_events").await;
            let runs = db.scalar("SELECT COUNT(*) FROM runs").await;
            let expected = (WARM_UP + events) as i64;
            assert_eq!(
                (stored, runs),
                (expected, expected),
                "{label}: every event stored once"
            );
            ratios.push(format!("{label}: {:.1}x", floor / rate));
            db.drop_pg().await;
        }
        println!();
        println!(
            "The bare handler's throughput over ours: {}.",
            ratios.join(", ")
        );
    });
}
