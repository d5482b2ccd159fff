//! Crashes: `assay serve` killed with SIGKILL at random moments of a burst of
//! signed Stripe events, and restarted on the same database each time, with
//! short deadlines, the sweeper running and alerts going out. Afterwards:
//! every acknowledged event is stored once, with one run; an event whose
//! answer was cut off is stored at most once, and once after Stripe's
//! redelivery, which says whether it was a duplicate; every run is
//! consistent (one `opened` entry, one `failed` entry, one incident, named by
//! one alert); and no row points at one that is not there.
//!
//! The moments are drawn from a seeded generator. A failure prints the seed:
//! `ASSAY_TEST_SEED=<seed>` draws the same moments again.

use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;

use crate::alerts::Receiver;
use crate::support::{
    API_KEY, Backend, Spawned, TestDb, free_port, on_both_backends, post_signed, serve_command,
    subscription_created, wait_for,
};

/// Events in the burst, each its own customer and subscription.
const EVENTS: usize = 500;
/// Senders posting at once.
const SENDERS: usize = 16;
/// Servers killed while the burst is under way (after one more killed
/// while it migrates the fresh database).
const KILLS: u64 = 5;

/// SplitMix64: small, seeded, and the same draws for the same seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// `ASSAY_TEST_SEED`, or a new seed each run.
fn seed() -> u64 {
    match std::env::var("ASSAY_TEST_SEED") {
        Ok(text) => text.parse().expect("ASSAY_TEST_SEED is a whole number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// On a failure, says how to replay it and shows the end of the servers'
/// log.
struct Replay {
    seed: u64,
    backend: Backend,
    log: PathBuf,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut log = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(8_000)));
            let _ = file.read_to_string(&mut log);
        }
        eprintln!(
            "crash test on {:?} failed: replay it with ASSAY_TEST_SEED={}\n\
             the end of the servers' log:\n{log}",
            self.backend, self.seed
        );
    }
}

fn event_id(i: usize) -> String {
    format!("evt_crash_{i}")
}

fn event(i: usize) -> String {
    subscription_created(
        &event_id(i),
        &format!("cus_crash_{i}"),
        &format!("sub_crash_{i}"),
        "price_pro",
    )
    .to_string()
}

/// What the senders saw, by event number.
#[derive(Default)]
struct Burst {
    next: AtomicUsize,
    /// Answered 200.
    acked: Mutex<BTreeSet<usize>>,
    /// No answer: the connection was refused or cut off.
    cut_off: Mutex<BTreeSet<usize>>,
    /// Any other answer (there should be none).
    refused: Mutex<Vec<String>>,
}

impl Burst {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// One sender: takes the next event and posts it to the live server. After
/// a post with no answer, it waits for the next server before it goes on.
async fn send(burst: Arc<Burst>, mut live: watch::Receiver<u64>, base: String) {
    assay::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut wanted = 1;
    loop {
        let Ok(generation) = live.wait_for(|g| *g >= wanted).await.map(|g| *g) else {
            return;
        };
        let i = burst.next.fetch_add(1, Ordering::SeqCst);
        if i >= EVENTS {
            return;
        }
        match post_signed(&client, &base, &event(i)).await {
            Ok(r) if r.status() == StatusCode::OK => {
                burst.acked.lock().unwrap().insert(i);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let answer = format!("{}: {status} {text}", event_id(i));
                burst.refused.lock().unwrap().push(answer);
            }
            Err(_) => {
                burst.cut_off.lock().unwrap().insert(i);
                wanted = generation + 1;
            }
        }
    }
}

/// Checks that each query counts nothing: each names a broken invariant.
async fn none_of(db: &TestDb, checks: &[(&str, &str)]) {
    for (what, sql) in checks {
        assert_eq!(db.scalar(sql).await, 0, "{what}");
    }
}

async fn sigkill_during_a_burst_loses_and_doubles_nothing(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let started = Instant::now();
    let seed = seed();
    let log_path = db.dir().join("serve.log");
    let _replay = Replay {
        seed,
        backend,
        log: log_path.clone(),
    };
    let mut rng = Rng(seed);
    let receiver = Receiver::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(&log_path).unwrap();
    let serve = || {
        Spawned::spawn(
            serve_command(port, &db.url)
                .env("ASSAY_DEADLINE_RECONCILED", "1s")
                .env("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s")
                .env("ASSAY_SWEEP_SCHEDULE", "* * * * * *")
                .env("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack"))
                .env("ASSAY_ALERT_POLL_INTERVAL", "50ms")
                .env("ASSAY_ALERT_TIMEOUT", "1s")
                // One alert per incident: many sends for the kills to cut.
                .env("ASSAY_ALERT_GROUP_THRESHOLD", "1000")
                // A killed server's claims pass on soon.
                .env("ASSAY_LEASE_DURATION", "2s")
                .stderr(log.try_clone().unwrap()),
        )
    };

    // The first server dies while it migrates the fresh database, or just
    // after.
    let first = serve();
    tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
    first.kill();

    let burst = Arc::new(Burst::default());
    let (live, watching) = watch::channel(0u64);
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| tokio::spawn(send(burst.clone(), watching.clone(), base.clone())))
        .collect();
    let mut kill_points = Vec::new();
    for generation in 1..=KILLS {
        let mut server = serve();
        server.wait_ready(&base).await;
        live.send_replace(generation);
        // Killed once it has acknowledged an event, at a random moment
        // within the next 1.5 s: with requests in flight, and from the
        // second server on, while runs of the earlier ones are swept and
        // their alerts sent.
        let acked = burst.acked();
        wait_for("the live server to acknowledge an event", async || {
            let done = burst.next.load(Ordering::SeqCst) >= EVENTS;
            (burst.acked() > acked || done).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_micros(rng.below(1_500_000))).await;
        server.kill();
        let incidents = db.scalar("SELECT COUNT(*) FROM incidents").await;
        kill_points.push((burst.acked(), incidents));
    }
    let mut server = serve();
    server.wait_ready(&base).await;
    live.send_replace(KILLS + 1);
    let finished = futures::future::join_all(senders);
    for sender in tokio::time::timeout(Duration::from_secs(20), finished)
        .await
        .expect("the burst ends")
    {
        sender.unwrap();
    }

    let acked = burst.acked.lock().unwrap().clone();
    let cut_off = burst.cut_off.lock().unwrap().clone();
    let refused = burst.refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "answers other than 200: {refused:?}");
    assert_eq!(acked.len() + cut_off.len(), EVENTS, "every event was sent");

    // Every acknowledged event is stored; nothing that was never sent is.
    let stored: BTreeSet<String> = db
        .texts("SELECT event_id FROM stripe_events", &[])
        .await
        .into_iter()
        .collect();
    for i in &acked {
        assert!(
            stored.contains(&event_id(*i)),
            "{} was acknowledged but is not stored",
            event_id(*i)
        );
    }
    let sent: BTreeSet<String> = (0..EVENTS).map(event_id).collect();
    assert!(stored.is_subset(&sent), "stored events nobody sent");

    // Stripe redelivers what got no answer: stored once, and a duplicate
    // exactly when the cut-off delivery had been stored.
    let client = crate::support::http_client();
    let redelivered: Vec<(usize, Value)> = futures::stream::iter(cut_off.iter().copied())
        .map(|i| {
            let (client, base) = (&client, &base);
            async move {
                let response = post_signed(client, base, &event(i)).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "{}", event_id(i));
                (i, response.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, answer) in &redelivered {
        let was_stored = stored.contains(&event_id(*i));
        assert_eq!(
            answer["duplicate"],
            was_stored,
            "{}: {answer}",
            event_id(*i)
        );
    }
    let count = |sql| db.scalar(sql);
    assert_eq!(
        count("SELECT COUNT(*) FROM stripe_events").await,
        EVENTS as i64
    );
    assert_eq!(count("SELECT COUNT(*) FROM runs").await, EVENTS as i64);

    // Every run misses its deadline: one incident each, one alert each.
    wait_for("every run to fail", async || {
        let open = count("SELECT COUNT(*) FROM runs WHERE status <> 'failed'").await;
        (open == 0).then_some(())
    })
    .await;
    wait_for("every alert to be sent", async || {
        let unsent = count("SELECT COUNT(*) FROM alert_deliveries WHERE status <> 'sent'").await;
        let incidents = count("SELECT COUNT(*) FROM incidents").await;
        (unsent == 0 && incidents == EVENTS as i64).then_some(())
    })
    .await;
    none_of(
        &db,
        &[
            (
                "an event stored twice",
                "SELECT COUNT(*) FROM (SELECT project, event_id FROM stripe_events \
                 GROUP BY project, event_id HAVING COUNT(*) > 1) AS twice",
            ),
            (
                "an event with two runs",
                "SELECT COUNT(*) FROM (SELECT project, workflow, event_id FROM runs \
                 GROUP BY project, workflow, event_id HAVING COUNT(*) > 1) AS twice",
            ),
            (
                "an event without its run",
                "SELECT COUNT(*) FROM stripe_events e WHERE NOT EXISTS \
                 (SELECT 1 FROM runs r WHERE r.project = e.project AND r.event_id = e.event_id)",
            ),
            (
                "a run without its event",
                "SELECT COUNT(*) FROM runs r WHERE NOT EXISTS (SELECT 1 FROM stripe_events e \
                 WHERE e.project = r.project AND e.event_id = r.event_id)",
            ),
            (
                "a run whose fields disagree with a run the sweeper failed",
                "SELECT COUNT(*) FROM runs WHERE stage <> 'received' OR status <> 'failed' \
                 OR deadline_at IS NOT NULL OR closed_at IS NULL",
            ),
            (
                "a run without exactly one `opened` entry",
                "SELECT COUNT(*) FROM runs r WHERE (SELECT COUNT(*) FROM run_timeline t \
                 WHERE t.run_id = r.id AND t.stage = 'received' AND t.outcome = 'opened') <> 1",
            ),
            (
                "a run without exactly one `failed` entry, for the reconciled stage",
                "SELECT COUNT(*) FROM runs r WHERE (SELECT COUNT(*) FROM run_timeline t \
                 WHERE t.run_id = r.id AND t.stage = 'reconciled' AND t.outcome = 'failed') <> 1",
            ),
            (
                "a timeline entry other than those two",
                "SELECT COUNT(*) FROM run_timeline WHERE NOT ((stage = 'received' AND \
                 outcome = 'opened') OR (stage = 'reconciled' AND outcome = 'failed'))",
            ),
            (
                "a timeline entry of no run",
                "SELECT COUNT(*) FROM run_timeline t WHERE NOT EXISTS \
                 (SELECT 1 FROM runs r WHERE r.id = t.run_id)",
            ),
            (
                "a run without exactly one incident",
                "SELECT COUNT(*) FROM runs r WHERE \
                 (SELECT COUNT(*) FROM incidents i WHERE i.run_id = r.id) <> 1",
            ),
            (
                "an incident of no run",
                "SELECT COUNT(*) FROM incidents i WHERE NOT EXISTS \
                 (SELECT 1 FROM runs r WHERE r.id = i.run_id)",
            ),
            (
                "an incident not open",
                "SELECT COUNT(*) FROM incidents WHERE status <> 'open'",
            ),
            (
                "an incident in no opened alert, or in several",
                "SELECT COUNT(*) FROM incidents i WHERE (SELECT COUNT(*) \
                 FROM alert_delivery_incidents di JOIN alert_deliveries d ON d.id = di.delivery_id \
                 WHERE di.incident_id = i.id AND d.event = 'opened') <> 1",
            ),
            (
                "an alert about an incident that is not there",
                "SELECT COUNT(*) FROM alert_delivery_incidents di WHERE NOT EXISTS \
                 (SELECT 1 FROM incidents i WHERE i.id = di.incident_id)",
            ),
            (
                "an alert's incident list of no alert",
                "SELECT COUNT(*) FROM alert_delivery_incidents di WHERE NOT EXISTS \
                 (SELECT 1 FROM alert_deliveries d WHERE d.id = di.delivery_id)",
            ),
            (
                "an alert about no incident",
                "SELECT COUNT(*) FROM alert_deliveries d WHERE NOT EXISTS \
                 (SELECT 1 FROM alert_delivery_incidents di WHERE di.delivery_id = d.id)",
            ),
            (
                "an alert attempt of no alert",
                "SELECT COUNT(*) FROM alert_attempts a WHERE NOT EXISTS \
                 (SELECT 1 FROM alert_deliveries d WHERE d.id = a.delivery_id)",
            ),
            (
                "a probe queued or made for no run",
                "SELECT (SELECT COUNT(*) FROM probe_queue q WHERE NOT EXISTS \
                 (SELECT 1 FROM runs r WHERE r.id = q.run_id)) + (SELECT COUNT(*) \
                 FROM probe_attempts a WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = a.run_id))",
            ),
        ],
    )
    .await;
    let deliveries = count("SELECT COUNT(*) FROM alert_deliveries").await;
    let received = receiver.accepted("slack").len() as i64;
    assert!(
        received >= deliveries,
        "{deliveries} alerts sent, {received} received"
    );

    // The API tells the same story, event by event.
    let client = &client;
    let base = &base;
    futures::stream::iter(0..EVENTS)
        .for_each_concurrent(8, |i| async move {
            let id = event_id(i);
            let response = client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{id}");
            let run: Value = response.json().await.unwrap();
            assert_eq!(run["event_id"], id.as_str());
            assert_eq!(run["status"], "failed", "{id}: {run}");
            let opened = run["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|entry| entry["outcome"] == "opened")
                .count();
            assert_eq!(opened, 1, "{id}: {run}");
            assert_eq!(run["incidents"].as_array().unwrap().len(), 1, "{id}: {run}");
        })
        .await;
    server.kill();
    eprintln!(
        "{backend:?}, seed {seed}: killed at (acknowledged, incidents) {kill_points:?}; {} acknowledged, \
         {} cut off ({} of them stored before the redelivery); {deliveries} alerts; {:.1} s",
        acked.len(),
        cut_off.len(),
        cut_off
            .iter()
            .filter(|i| stored.contains(&event_id(**i)))
            .count(),
        started.elapsed().as_secs_f64()
    );
}

on_both_backends!(sigkill_during_a_burst_loses_and_doubles_nothing);
