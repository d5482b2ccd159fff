//! Several `assay serve` processes on one PostgreSQL database: duplicate
//! deliveries spread across replicas make one run, every overdue run yields
//! exactly one incident, and a replica killed with SIGKILL in the middle of a
//! sweep loses and doubles nothing.

use std::process::{Child, Command};
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::ConnectOptions;

use crate::support::{API_KEY, Backend, TestDb, free_port, http_client, subscription_created};

const EVENTS: usize = 1000;
const LATE_EVENTS: usize = 300;
const DELIVERIES_PER_EVENT: usize = 3;

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the system's `kill`.
fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

async fn scalar(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn spawn_replica(db: &TestDb, index: usize) -> Replica {
    let port = free_port();
    let log = std::fs::File::create(db.dir().join(format!("replica-{index}.log"))).unwrap();
    let child = crate::support::serve_command(port, &db.url)
        .env("ASSAY_DATABASE_MAX_CONNECTIONS", "8")
        .env("ASSAY_DEADLINE_RECONCILED", "12s")
        .env("ASSAY_DEADLINE_ACCESS_ASSERTED", "15s")
        .env("ASSAY_SWEEP_SCHEDULE", "* * * * * *")
        // Small batches: many claims per sweep.
        .env("ASSAY_SWEEP_BATCH_SIZE", "10")
        .stderr(log)
        .spawn()
        .unwrap();
    Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Which replica gets the next request: random, from the OS's randomness.
fn pick(n: usize) -> usize {
    uuid::Uuid::new_v4().as_bytes()[0] as usize % n
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deliver(
    client: &reqwest::Client,
    base: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let response = crate::support::post_signed(client, base, body)
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_run_per_event_one_incident_per_overdue_run() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let mut replicas: Vec<Replica> = (0..3).map(|i| spawn_replica(&db, i)).collect();
    let client = http_client();
    for replica in &replicas {
        let url = format!("{}/readyz", replica.base);
        wait_until(
            "a replica to be ready",
            Duration::from_secs(30),
            async || {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
    }
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();

    // Phase 1: every event delivered 3 times at once to random replicas;
    // the app confirms access for the even ones, the odd ones time out.
    let started = Instant::now();
    let results: Vec<usize> = futures::stream::iter(0..EVENTS)
        .map(|i| {
            let (client, bases) = (client.clone(), bases.clone());
            async move {
                let body = subscription_created(
                    &format!("evt_{i}"),
                    &format!("cus_{i}"),
                    &format!("sub_{i}"),
                    "price_pro",
                )
                .to_string();
                let copies = (0..DELIVERIES_PER_EVENT)
                    .map(|_| deliver(&client, &bases[pick(bases.len())], &body));
                let answers = futures::future::join_all(copies).await;
                for (status, body) in &answers {
                    assert_eq!(*status, StatusCode::OK, "{body}");
                }
                if i % 2 == 0 {
                    let response = client
                        .post(format!(
                            "{}/v1/runs/evt_{i}/stages/access_asserted",
                            bases[pick(bases.len())]
                        ))
                        .bearer_auth(API_KEY)
                        .json(&json!({"observed_plan": "pro"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                }
                answers
                    .iter()
                    .filter(|(_, b)| b["duplicate"] == false)
                    .count()
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    let elapsed = started.elapsed();
    assert!(
        results.iter().all(|&firsts| firsts == 1),
        "each event is stored by exactly one delivery"
    );
    eprintln!(
        "{} deliveries and {} reports over 3 replicas in {:.1} s",
        EVENTS * DELIVERIES_PER_EVENT,
        EVENTS / 2,
        elapsed.as_secs_f64()
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM stripe_events").await,
        EVENTS as i64
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM runs").await, EVENTS as i64);

    wait_until(
        "an incident for every odd run",
        Duration::from_secs(90),
        async || db.scalar("SELECT COUNT(*) FROM incidents").await >= (EVENTS / 2) as i64,
    )
    .await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'")
            .await,
        (EVENTS / 2) as i64
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'failed'")
            .await,
        (EVENTS / 2) as i64
    );

    // Phase 2: more runs go overdue together, and one replica is killed
    // with SIGKILL while it holds a claim on some of them: a sweep's
    // transaction, its runs locked `FOR UPDATE` (a row-share lock on the
    // table, which nothing else takes while no event arrives). To be sure
    // it is mid-claim, it is frozen (SIGSTOP) the moment it is seen holding
    // one, checked again while it cannot move, and only then killed; if it
    // had just finished, it is thawed and the next round tries again.
    let victim = replicas.remove(0);
    let victim_pid = victim.child.id();
    let held_by_victim = format!(
        "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name LIKE 'assay {victim_pid}@%' \
         AND l.relation = 'runs'::regclass AND l.mode = 'RowShareLock' AND l.granted"
    );
    let mut watch = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rounds = 0;
    let orphaned = 'rounds: loop {
        rounds += 1;
        assert!(
            rounds <= 3,
            "never caught the victim holding a claim in {} rounds",
            rounds - 1
        );
        for i in 0..LATE_EVENTS {
            let body = subscription_created(
                &format!("evt_late_{rounds}_{i}"),
                &format!("cus_l{rounds}_{i}"),
                &format!("sub_l{rounds}_{i}"),
                "price_pro",
            )
            .to_string();
            let (status, _) = deliver(&client, &bases[i % bases.len()], &body).await;
            assert_eq!(status, StatusCode::OK);
        }
        let watch_until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < watch_until {
            if scalar(&mut watch, &held_by_victim).await > 0 {
                signal("-STOP", victim_pid);
                let held = scalar(&mut watch, &held_by_victim).await;
                if held > 0 {
                    break 'rounds held;
                }
                signal("-CONT", victim_pid);
            }
            let open_late = scalar(
                &mut watch,
                "SELECT COUNT(*) FROM runs WHERE event_id LIKE 'evt_late_%' AND status = 'open'",
            )
            .await;
            if open_late == 0 {
                break;
            }
        }
    };
    drop(victim); // SIGKILL (a stopped process dies too), then reap.
    eprintln!("killed replica {victim_pid} mid-sweep ({orphaned} claim), in round {rounds}");
    assert!(orphaned > 0);

    let total = (EVENTS / 2 + LATE_EVENTS * rounds) as i64;
    wait_until(
        "an incident for every late run",
        Duration::from_secs(90),
        async || db.scalar("SELECT COUNT(*) FROM incidents").await >= total,
    )
    .await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM incidents").await,
        total,
        "no incident lost or doubled"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM (SELECT run_id FROM incidents GROUP BY run_id HAVING COUNT(*) > 1) AS doubled")
            .await,
        0
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'failed' AND id NOT IN (SELECT run_id FROM incidents)")
            .await,
        0,
        "every failed run has its incident"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'open'")
            .await,
        0
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs").await,
        (EVENTS + LATE_EVENTS) as i64
    );
    // The dead replica's sessions, and the claim its transaction held,
    // ended with its connections.
    wait_until(
        "the dead replica's sessions ended",
        Duration::from_secs(10),
        async || {
            db.scalar(&format!(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name LIKE 'assay {victim_pid}@%'"
            ))
            .await
                == 0
        },
    )
    .await;
    drop(replicas);
}
