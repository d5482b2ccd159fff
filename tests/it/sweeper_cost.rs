//! A sweep reads only overdue runs: over 50,000 stored runs, the plan of its
//! claim searches the deadline index instead of scanning the table, and it
//! fails exactly the overdue runs.

use std::time::Duration;

use assay::run::{BILLING_WORKFLOW, Deadlines, Expectation, RunSpec, Source};
use assay::store::sqlite::SqliteStore;
use assay::store::{DatabaseSettings, Store};
use chrono::Utc;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

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
