//! What the hot statements read: a sweep reads only overdue runs (over
//! 50,000 stored runs, the plan of its claim searches the deadline index
//! instead of scanning the table, and it fails exactly the overdue runs),
//! and opening a run reads only its own subscription's runs.

use std::time::Duration;

use assay::run::{BILLING_WORKFLOW, Deadlines, Expectation, RunSpec, Source};
use assay::store::sqlite::SqliteStore;
use assay::store::{DatabaseSettings, Runs, Sweep};
use chrono::Utc;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::support::{Backend, NO_SETTINGS, TestServer, subscription_created, wait_for};

#[tokio::test]
async fn sweep_uses_the_deadline_index_and_touches_only_overdue_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.db");
    let store = SqliteStore::connect(
        &DatabaseSettings {
            url: format!("sqlite://{}", path.display()),
            max_connections: 2,
            statement_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
        },
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();

    // 50,000 runs whose deadlines are hours away, written in one statement,
    // and 10 opened through the store that are overdue.
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    let far = Utc::now().timestamp_millis() + 3_600_000;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
         INSERT INTO runs (id, project, workflow, event_id, event_type, stage, status, opened_at, \
                           reconciled_due_at, access_due_at, deadline_at, event_created_at) \
         SELECT '00000000-0000-4000-8000-' || printf('%012d', i), 'default', 'billing', 'evt_bulk_' || i, 'invoice.paid', 'received', 'open', \
                $1, $1, $1, $1, $1 FROM n",
    )
    .bind(far)
    .execute(&mut conn)
    .await
    .unwrap();
    // With statistics that show a large table, a planner that could scan
    // would prefer to: the plan must still go through the deadline index.
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let plan = store.explain_sweep().await.unwrap().join("\n");
    assert!(
        plan.contains("runs_by_deadline"),
        "the sweep does not use the deadline index:\n{plan}"
    );
    assert!(
        !plan.contains("SCAN runs"),
        "the sweep scans the table:\n{plan}"
    );

    let past = Utc::now() - chrono::Duration::hours(1);
    for i in 0..10 {
        let spec = RunSpec {
            project: "default".into(),
            workflow: BILLING_WORKFLOW.into(),
            event_id: format!("evt_overdue_{i}"),
            event_type: "invoice.paid".into(),
            customer_id: Some(format!("cus_{i}")),
            subscription_id: None,
            expectation: Expectation::Plan("pro".into()),
            livemode: Some(false),
            event_created_at: None,
            deadlines: Deadlines {
                reconciled: Duration::from_secs(60),
                access_asserted: Duration::from_secs(120),
            },
            source: Source::Stripe,
            probe_start: None,
            drill_id: None,
        };
        store.open_run(spec, past).await.unwrap();
    }

    let swept = store.sweep(Utc::now(), 500).await.unwrap();
    assert_eq!(swept.runs_failed, 10);
    assert_eq!(swept.incidents.len(), 10);
    let again = store.sweep(Utc::now(), 500).await.unwrap();
    assert_eq!(again.runs_failed, 0, "a second sweep finds nothing left");
}

/// Opening a run reads only the runs of its own subscription, on a new
/// database whose planner has no statistics yet (renewal day on a fresh
/// install): PostgreSQL's generic plan once picked the index on (project,
/// status) and read every open run of the project for each event, which
/// made ingest quadratic. Its index statistics show which index was read,
/// and how much.
#[tokio::test]
async fn opening_runs_reads_one_subscription_not_the_project() {
    // One at a time, so that each connection plans the read often enough
    // for PostgreSQL to switch it to a generic plan.
    reads_stay_per_subscription(200, 1).await;
}

/// The same for a burst, whose deliveries group commit stores in batches
/// that read many subscriptions' runs in one statement: an `IN` list of
/// them was planned as a scan of the project's every run, per batch.
#[tokio::test]
async fn a_burst_reads_its_subscriptions_not_the_project() {
    reads_stay_per_subscription(600, 48).await;
}

/// Delivers `events` new subscriptions, `concurrency` at a time, then checks
/// that the indexes of `runs` were read a few entries per event, not once
/// per stored run.
async fn reads_stay_per_subscription(events: i64, concurrency: usize) {
    use futures::StreamExt;
    let Some(server) = TestServer::start(Backend::Postgres, NO_SETTINGS).await else {
        return;
    };
    let deliveries = futures::stream::iter(0..events)
        .map(|i| {
            let server = &server;
            async move {
                server
                    .deliver(&subscription_created(
                        &format!("evt_cost_{i}"),
                        &format!("cus_cost_{i}"),
                        &format!("sub_cost_{i}"),
                        "price_pro",
                    ))
                    .await
            }
        })
        .buffer_unordered(concurrency);
    for (status, body) in deliveries.collect::<Vec<_>>().await {
        assert_eq!(status, 200, "{body}");
    }
    // Backends publish their statistics a moment after they go idle, all
    // of a backend's at once: once every run's insert is counted, so is
    // every read of the transactions that inserted them.
    let inserted = "SELECT COALESCE(SUM(n_tup_ins), 0)::bigint FROM pg_stat_user_tables \
                    WHERE relname = 'runs'";
    wait_for("table statistics", async || {
        (server.db.scalar(inserted).await >= events).then_some(())
    })
    .await;
    let read = server
        .db
        .scalar(
            "SELECT COALESCE(SUM(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
             WHERE relname = 'runs' AND indexrelname <> 'runs_pkey'",
        )
        .await;
    // One read of its own subscription per event (a few rows at most), not
    // the project's runs: events * events / 2 one at a time, and for a
    // burst the runs stored so far once per batch.
    assert!(
        read <= 4 * events,
        "opening {events} runs, {concurrency} at a time, read {read} index entries of runs"
    );
    server.stop().await;
}

/// On PostgreSQL a payload is compressed with lz4, not pglz: during an
/// ingest burst pglz was the server's largest single cost (10% of its CPU).
/// A server without lz4 keeps pglz (the migration only notes it) and fails
/// here: the one CI runs and the image in `deploy/` both have it. The
/// compressed payload stays in its row, not in the TOAST table.
#[tokio::test]
async fn payloads_are_compressed_with_lz4_and_kept_in_their_row() {
    let Some(server) = TestServer::start(Backend::Postgres, NO_SETTINGS).await else {
        return;
    };
    let (status, body) = server
        .deliver(&subscription_created(
            "evt_lz4",
            "cus_lz4",
            "sub_lz4",
            "price_pro",
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let lz4 = server
        .db
        .scalar(
            "SELECT COUNT(*) FROM pg_attribute WHERE attrelid = 'stripe_events'::regclass \
             AND attname = 'payload' AND attcompression = 'l'",
        )
        .await;
    assert_eq!(lz4, 1, "stripe_events.payload is not set to lz4");
    // Compressed, a Stripe event is still past the default target (2 KB)
    // that would move it out of its row: this one must be, for the check
    // below to mean anything.
    let compressed = server
        .db
        .scalar(
            "SELECT pg_column_size(payload)::bigint FROM stripe_events WHERE event_id = 'evt_lz4'",
        )
        .await;
    assert!(
        compressed > 2_100,
        "a payload of {compressed} bytes tests nothing"
    );
    let toasted = server
        .db
        .scalar(
            "SELECT pg_relation_size(reltoastrelid) FROM pg_class \
             WHERE oid = 'stripe_events'::regclass",
        )
        .await;
    assert_eq!(toasted, 0, "the payload was moved to the TOAST table");
    server.stop().await;
}
