//! The store contract: what every backend must do, checked on SQLite and on
//! PostgreSQL alike, straight through the `Store` trait.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use assay::config::SweepConfig;
use assay::incident::IncidentStatus;
use assay::metrics::Metrics;
use assay::probe::{ProbeJob, ProbeSchedule};
use assay::run::{
    BILLING_WORKFLOW, Deadlines, Expectation, Outcome, ProbeAttempt, ProbeStart, RunSpec,
    RunStatus, Source, Stage, StageReport,
};
use assay::store::{
    DatabaseSettings, IncidentFilter, Ingested, RunFilter, RunRef, Store, StoreError, StoredEvent,
    connect,
};
use assay::sweeper::Sweeper;
use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::support::{Backend, TestDb, on_both_backends};

const LEASE: Duration = Duration::from_secs(30);

async fn open_store(backend: Backend) -> Option<(TestDb, Arc<dyn Store>)> {
    let db = TestDb::create(backend).await?;
    let store = connect(&DatabaseSettings {
        url: db.url.clone(),
        max_connections: 8,
        statement_timeout: Duration::from_secs(10),
        lease: LEASE,
    })
    .await
    .unwrap();
    Some((db, store))
}

fn spec(event_id: &str, source: Source) -> RunSpec {
    RunSpec {
        project: "default".into(),
        workflow: BILLING_WORKFLOW.into(),
        event_id: event_id.into(),
        event_type: "customer.subscription.created".into(),
        customer_id: Some(format!("cus_{event_id}")),
        subscription_id: Some(format!("sub_{event_id}")),
        expectation: Expectation::Plan("pro".into()),
        livemode: Some(false),
        event_created_at: None,
        deadlines: Deadlines {
            reconciled: Duration::from_secs(60),
            access_asserted: Duration::from_secs(120),
        },
        source,
        probe_start: None,
        drill_id: None,
    }
}

fn event(event_id: &str) -> StoredEvent {
    StoredEvent {
        project: "default".into(),
        event_id: event_id.into(),
        event_type: "customer.subscription.created".into(),
        livemode: Some(false),
        created: Some(1_767_225_600),
        payload: format!(r#"{{"id":"{event_id}"}}"#),
    }
}

/// The app reports that the customer now has `plan`.
async fn report_access(
    store: &dyn Store,
    project: &str,
    event_id: &str,
    plan: &str,
    now: DateTime<Utc>,
) -> Result<assay::run::Run, StoreError> {
    let report = StageReport {
        observed_plan: Some(plan.into()),
        ..Default::default()
    };
    let key = RunRef::EventId(event_id.into());
    store
        .report_stage(
            project,
            &key,
            Stage::AccessAsserted,
            report,
            Source::Sdk,
            now,
        )
        .await
}

fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

fn t0() -> DateTime<Utc> {
    // Whole milliseconds: that is what the store keeps.
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

async fn ready_after_migrations(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    store.ready().await.unwrap();
}

async fn migrations_are_safe_when_replicas_start_together(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let settings = DatabaseSettings {
        url: db.url.clone(),
        max_connections: 2,
        statement_timeout: Duration::from_secs(10),
        lease: LEASE,
    };
    let stores = join_all((0..4).map(|_| connect(&settings))).await;
    for store in stores {
        store.unwrap().ready().await.unwrap();
    }
}

async fn ingest_stores_once_and_round_trips_the_run(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let first = store
        .ingest_stripe_event(event("evt_1"), Some(spec("evt_1", Source::Stripe)), now)
        .await
        .unwrap();
    let Ingested::Stored { run: Some(run) } = first else {
        panic!("the first delivery opens a run: {first:?}");
    };
    let again = store
        .ingest_stripe_event(event("evt_1"), Some(spec("evt_1", Source::Stripe)), now)
        .await
        .unwrap();
    // A redelivery names the run its first delivery opened.
    assert_eq!(
        again,
        Ingested::Duplicate {
            run_id: Some(run.id)
        }
    );

    let detail = store
        .run_detail("default", &RunRef::EventId("evt_1".into()))
        .await
        .unwrap();
    assert_eq!(detail.run, *run, "the run reads back exactly as written");
    assert_eq!(detail.timeline.len(), 1);
    let by_id = store
        .run_detail("default", &RunRef::Id(run.id))
        .await
        .unwrap();
    assert_eq!(by_id.run.id, run.id);
    assert!(matches!(
        store.run_detail("other", &RunRef::Id(run.id)).await,
        Err(StoreError::NotFound("run"))
    ));
    assert_eq!(db.counts().await, [1, 1, 1, 0]);
}

async fn concurrent_deliveries_and_opens_make_one_run(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let deliveries = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .ingest_stripe_event(
                    event("evt_race"),
                    Some(spec("evt_race", Source::Stripe)),
                    now,
                )
                .await
                .unwrap()
        })
    });
    let opens = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .open_run(spec("evt_race", Source::Sdk), now)
                .await
                .unwrap()
        })
    });
    let (deliveries, opens) = tokio::join!(join_all(deliveries), join_all(opens));
    let stored = deliveries
        .into_iter()
        .filter(|d| matches!(d.as_ref().unwrap(), Ingested::Stored { .. }))
        .count();
    assert_eq!(stored, 1, "exactly one delivery is stored");
    let created = opens.into_iter().filter(|o| o.as_ref().unwrap().1).count();
    assert!(created <= 1, "at most one open creates the run");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM runs").await, 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM stripe_events").await, 1);
}

async fn reports_move_runs_and_stay_in_their_project(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    store
        .open_run(spec("evt_r", Source::Sdk), now)
        .await
        .unwrap();
    let key = RunRef::EventId("evt_r".into());
    let run = store
        .report_stage(
            "default",
            &key,
            Stage::Reconciled,
            StageReport::default(),
            Source::Sdk,
            now,
        )
        .await
        .unwrap();
    assert_eq!(run.stage, Stage::Reconciled);
    let err = report_access(store.as_ref(), "other", "evt_r", "starter", now).await;
    assert!(matches!(err, Err(StoreError::NotFound("run"))));
    let run = report_access(store.as_ref(), "default", "evt_r", "starter", now)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Open);
    let refused = store
        .report_stage(
            "default",
            &key,
            Stage::Closed,
            StageReport::default(),
            Source::Sdk,
            now,
        )
        .await;
    assert!(matches!(refused, Err(StoreError::Report(_))));
    let run = report_access(store.as_ref(), "default", "evt_r", "pro", now)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    let detail = store.run_detail("default", &key).await.unwrap();
    assert_eq!(detail.run, run);
    let outcomes: Vec<_> = detail.timeline.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "opened",
            "advanced",
            "plan_mismatch",
            "matched",
            "succeeded"
        ]
    );
}

async fn lists_page_newest_first_and_filter(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let base = t0();
    for i in 0..7 {
        let at = base + chrono::Duration::milliseconds(i);
        store
            .open_run(spec(&format!("evt_{i}"), Source::Sdk), at)
            .await
            .unwrap();
    }
    // Two runs opened in the same millisecond still page without loss.
    store
        .open_run(spec("evt_same", Source::Sdk), base)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let filter = RunFilter {
            limit: 3,
            cursor,
            ..Default::default()
        };
        let page = store.list_runs("default", &filter).await.unwrap();
        seen.extend(page.data.iter().map(|r| r.event_id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(assay::store::Cursor::decode(&next).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(
        &seen[..6],
        ["evt_6", "evt_5", "evt_4", "evt_3", "evt_2", "evt_1"]
    );
    let filtered = store
        .list_runs(
            "default",
            &RunFilter {
                customer_id: Some("cus_evt_3".into()),
                status: Some(RunStatus::Open),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(filtered.data.len(), 1);
    // The dashboard's search finds by prefix, taken as written.
    for (prefix, found) in [
        ("cus_evt_", 8),
        ("cus_evt_3", 1),
        ("cus_evt%", 0),
        ("cus_%", 0),
    ] {
        let page = store
            .list_runs(
                "default",
                &RunFilter {
                    customer_id_prefix: Some(prefix.into()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.data.len(), found, "{prefix}");
    }
    assert!(
        store
            .list_runs(
                "other",
                &RunFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .data
            .is_empty()
    );
}

async fn sweep_fails_only_overdue_runs_once(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    for i in 0..5 {
        store
            .open_run(
                spec(&format!("evt_late_{i}"), Source::Sdk),
                now - minutes(10),
            )
            .await
            .unwrap();
    }
    for i in 0..5 {
        store
            .open_run(spec(&format!("evt_fresh_{i}"), Source::Sdk), now)
            .await
            .unwrap();
    }
    let swept = store.sweep(now, 500).await.unwrap();
    assert_eq!(
        (swept.runs_claimed, swept.runs_failed, swept.incidents.len()),
        (5, 5, 5)
    );
    assert!(swept.incidents.iter().all(|i| {
        i.evidence
            .of_run()
            .unwrap()
            .event_id
            .starts_with("evt_late_")
    }));
    let again = store.sweep(now, 500).await.unwrap();
    assert_eq!(again.runs_claimed, 0);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM incidents").await, 5);
    let open = store
        .list_incidents(
            "default",
            &IncidentFilter {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(open.data.len(), 5);
}

/// `n` runs opened ten minutes before `now`, all overdue by then.
async fn open_overdue_runs(store: &Arc<dyn Store>, n: usize, now: DateTime<Utc>) {
    for i in 0..n {
        store
            .open_run(spec(&format!("evt_{i}"), Source::Sdk), now - minutes(10))
            .await
            .unwrap();
    }
}

async fn concurrent_sweeps_open_exactly_one_incident_per_run(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    open_overdue_runs(&store, 200, now).await;
    // Four sweepers at once, in small batches, as four replicas would.
    let sweepers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut opened = 0;
            loop {
                let swept = store.sweep(now, 25).await.unwrap();
                opened += swept.incidents.len();
                if swept.runs_claimed == 0 {
                    return opened;
                }
            }
        })
    });
    let opened: usize = join_all(sweepers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    assert_eq!(opened, 200);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM incidents").await, 200);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM (SELECT run_id FROM incidents GROUP BY run_id HAVING COUNT(*) > 1) AS doubled")
            .await,
        0
    );
}

/// The sweeper as `assay serve` runs it: on PostgreSQL several batches at
/// once, which between them fail every overdue run once, however the runs
/// fall into batches.
async fn the_sweeper_fails_every_overdue_run_once(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    open_overdue_runs(&store, 230, now).await;
    let config = SweepConfig {
        schedule: None,
        schedule_text: "off".into(),
        batch_size: 25,
    };
    let sweeper = Sweeper::new(store.clone(), config, Arc::new(Metrics::new()));
    let opened = sweeper.sweep_once().await.unwrap();
    let runs: HashSet<_> = opened.iter().map(|i| i.run_id).collect();
    assert_eq!((opened.len(), runs.len()), (230, 230));
    assert_eq!(db.scalar("SELECT COUNT(*) FROM incidents").await, 230);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'open'")
            .await,
        0
    );
    assert!(sweeper.sweep_once().await.unwrap().is_empty());
}

/// Failing a run writes back only what failing it changed. SQLite rewrites
/// every index on a column an update assigns, changed or not: a sweep that
/// assigned each run's customer and subscription rewrote their index
/// entries, a scattered page each, and grew with the table.
async fn the_sweep_writes_back_only_what_failing_a_run_changes(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    open_overdue_runs(&store, 3, now).await;
    db.execute("CREATE TABLE assigned (run_id TEXT NOT NULL)")
        .await;
    match backend {
        Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER runs_subject_assigned AFTER UPDATE OF customer_id, subscription_id ON runs \
                 BEGIN INSERT INTO assigned VALUES (new.id); END",
            )
            .await
        }
        Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION note_assigned() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN INSERT INTO assigned VALUES (NEW.id); RETURN NEW; END $$",
            )
            .await;
            db.execute(
                "CREATE TRIGGER runs_subject_assigned AFTER UPDATE OF customer_id, subscription_id ON runs \
                 FOR EACH ROW EXECUTE FUNCTION note_assigned()",
            )
            .await;
        }
    }
    let swept = store.sweep(now, 500).await.unwrap();
    assert_eq!((swept.runs_failed, swept.incidents.len()), (3, 3));
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'failed' AND customer_id IS NOT NULL")
            .await,
        3
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM assigned").await,
        0,
        "the sweep assigned the runs' customer or subscription"
    );
}

async fn a_report_that_beats_the_sweeper_wins(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    store
        .open_run(spec("evt_1", Source::Sdk), now - minutes(10))
        .await
        .unwrap();
    report_access(store.as_ref(), "default", "evt_1", "pro", now)
        .await
        .unwrap();
    let swept = store.sweep(now, 500).await.unwrap();
    assert_eq!(swept.runs_failed, 0);
}

async fn incidents_acknowledge_resolve_and_resolve_themselves(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    store
        .open_run(spec("evt_a", Source::Sdk), now - minutes(10))
        .await
        .unwrap();
    store
        .open_run(spec("evt_b", Source::Sdk), now - minutes(10))
        .await
        .unwrap();
    let swept = store.sweep(now, 500).await.unwrap();
    let id_of = |event: &str| {
        swept
            .incidents
            .iter()
            .find(|i| i.evidence.of_run().unwrap().event_id == event)
            .unwrap()
            .id
    };
    let (a, b) = (id_of("evt_a"), id_of("evt_b"));
    assert!(matches!(
        store.incident("other", a).await,
        Err(StoreError::NotFound("incident"))
    ));
    let acked = store
        .acknowledge_incident("default", a, &assay::access::Actor::cli(), now)
        .await
        .unwrap();
    assert_eq!(acked.acknowledged_at, Some(now));
    let resolved = store
        .resolve_incident(
            "default",
            a,
            "by hand".into(),
            &assay::access::Actor::cli(),
            now,
        )
        .await
        .unwrap();
    assert_eq!(resolved.resolution.as_deref(), Some("by hand"));
    assert!(matches!(
        store
            .acknowledge_incident("default", a, &assay::access::Actor::cli(), now)
            .await,
        Err(StoreError::Incident(_))
    ));
    assert_eq!(
        store.incident("default", a).await.unwrap().incident,
        resolved
    );

    report_access(store.as_ref(), "default", "evt_b", "pro", now)
        .await
        .unwrap();
    let b = store.incident("default", b).await.unwrap();
    assert_eq!(b.incident.status, assay::incident::IncidentStatus::Resolved);
    let open = store
        .list_incidents(
            "default",
            &IncidentFilter {
                status: Some(assay::incident::IncidentStatus::Open),
                scope: None,
                drill: false,
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert!(open.data.is_empty());
}

/// Events of one subscription, `i` seconds apart, as Stripe would send them.
fn ordered_event(sub: &str, i: usize) -> (StoredEvent, RunSpec) {
    let id = format!("evt_{sub}_{i}");
    let created = DateTime::from_timestamp(1_767_225_600 + i as i64, 0).unwrap();
    let spec = RunSpec {
        subscription_id: Some(sub.to_owned()),
        event_created_at: Some(created),
        ..spec(&id, Source::Stripe)
    };
    (event(&id), spec)
}

async fn newer_events_supersede_older_runs_in_any_order(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (k, order) in orders.iter().enumerate() {
        let sub = format!("sub_{k}");
        for &i in order {
            let (event, spec) = ordered_event(&sub, i);
            store
                .ingest_stripe_event(event, Some(spec), now)
                .await
                .unwrap();
        }
        let newest = store
            .run_detail("default", &RunRef::EventId(format!("evt_{sub}_2")))
            .await
            .unwrap()
            .run;
        assert_eq!(newest.status, RunStatus::Open, "order {order:?}");
        for i in 0..2 {
            let detail = store
                .run_detail("default", &RunRef::EventId(format!("evt_{sub}_{i}")))
                .await
                .unwrap();
            assert_eq!(
                detail.run.status,
                RunStatus::Superseded,
                "order {order:?}, event {i}"
            );
            assert!(detail.run.superseded_by.is_some());
            assert_eq!(detail.run.deadline_at, None);
            assert!(
                detail
                    .timeline
                    .iter()
                    .any(|e| e.outcome == Outcome::Superseded)
            );
        }
    }
    // Superseded runs are never swept, even long after their deadlines.
    let swept = store.sweep(now + minutes(60), 500).await.unwrap();
    assert_eq!(
        swept.runs_failed,
        orders.len(),
        "only each subscription's newest run fails"
    );
}

/// The app's webhook handler opens a run (`POST /v1/runs`) before Assay has
/// Stripe's copy, so the run's time is only when it opened: it must not
/// order the subscription's events. Here the app opens the older event, a
/// newer one arrives from Stripe, then the older one does.
async fn an_app_opened_run_takes_its_place_only_once_stripe_tells_its_time(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let (older_event, older) = ordered_event("sub_app", 0);
    let app_open = RunSpec {
        source: Source::Sdk,
        event_created_at: None,
        ..older.clone()
    };
    store.open_run(app_open, now).await.unwrap();
    let (newer_event, newer) = ordered_event("sub_app", 1);
    store
        .ingest_stripe_event(newer_event, Some(newer), now + minutes(1))
        .await
        .unwrap();
    store
        .ingest_stripe_event(older_event, Some(older), now + minutes(2))
        .await
        .unwrap();

    let run = async |id: &str| {
        store
            .run_detail("default", &RunRef::EventId(id.into()))
            .await
            .unwrap()
            .run
    };
    let (older, newer) = (run("evt_sub_app_0").await, run("evt_sub_app_1").await);
    assert_eq!(
        newer.status,
        RunStatus::Open,
        "the newest event stays current"
    );
    assert_eq!(newer.superseded_by, None);
    assert_eq!(older.status, RunStatus::Superseded);
    assert_eq!(older.superseded_by, Some(newer.id));
}

async fn racing_events_of_one_subscription_still_leave_one_current(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let deliveries = (0..10)
        .flat_map(|k| (0..3).map(move |i| (k, i)))
        .map(|(k, i)| {
            let store = store.clone();
            tokio::spawn(async move {
                let (event, spec) = ordered_event(&format!("sub_race_{k}"), i);
                store
                    .ingest_stripe_event(event, Some(spec), now)
                    .await
                    .unwrap();
            })
        });
    for delivery in join_all(deliveries).await {
        delivery.unwrap();
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'open'")
            .await,
        10
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE status = 'open' AND event_id NOT LIKE '%\\_2' ESCAPE '\\'")
            .await,
        0,
        "the open run of each subscription is its newest event's"
    );
}

/// A burst takes the group-commit path, many deliveries to one
/// transaction: five events of each of four subscriptions, each delivered
/// twice to each of two projects (two endpoints of one Stripe account get
/// the same events), with events that open no run, all at once in a
/// scrambled order; the app opened one run of each subscription first. Each
/// event is stored once per project and answered `Stored` once; each
/// project's subscription ends as it would had the events come one at a
/// time: the newest event's run current, every other superseded by a newer
/// run of its own project, each with its timeline.
async fn a_burst_settles_as_deliveries_one_at_a_time_would(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let subs: Vec<String> = (0..4).map(|k| format!("sub_burst_{k}")).collect();
    for sub in &subs {
        let (_, spec) = ordered_event(sub, 1);
        let app_open = RunSpec {
            source: Source::Sdk,
            event_created_at: None,
            ..spec
        };
        store.open_run(app_open, now).await.unwrap();
    }
    let mut deliveries: Vec<(u64, StoredEvent, Option<RunSpec>)> = Vec::new();
    for (copy, project) in (0..2).flat_map(|copy| PROJECTS.map(|p| (copy, p))) {
        for sub in &subs {
            for i in 0..5 {
                let (event, spec) = ordered_event(sub, i);
                let event = StoredEvent {
                    project: project.into(),
                    ..event
                };
                let spec = RunSpec {
                    project: project.into(),
                    ..spec
                };
                deliveries.push((scramble(&(copy, project, sub, i)), event, Some(spec)));
            }
        }
        for j in 0..5 {
            let event = StoredEvent {
                project: project.into(),
                ..event(&format!("evt_norun_{j}"))
            };
            deliveries.push((scramble(&(copy, project, j)), event, None));
        }
    }
    deliveries.sort_by_key(|d| d.0);
    let answers = join_all(deliveries.into_iter().map(|(_, event, spec)| {
        let store = store.clone();
        tokio::spawn(async move {
            let id = format!("{}/{}", event.project, event.event_id);
            (
                id,
                store.ingest_stripe_event(event, spec, now).await.unwrap(),
            )
        })
    }))
    .await;
    let mut stored = std::collections::HashMap::<String, usize>::new();
    for answer in answers {
        let (id, outcome) = answer.unwrap();
        if let Ingested::Stored { run } = outcome {
            assert_eq!(run.is_some(), !id.contains("/evt_norun"), "{id}");
            *stored.entry(id).or_default() += 1;
        }
    }
    assert_eq!(stored.len(), 50, "every event is stored");
    assert!(stored.values().all(|&n| n == 1), "once: {stored:?}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM stripe_events").await, 50);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM runs").await, 40);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM runs WHERE NOT EXISTS (SELECT 1 FROM run_timeline t WHERE t.run_id = runs.id)")
            .await,
        0,
        "every run has its opening on its timeline"
    );
    for (project, sub) in PROJECTS
        .iter()
        .flat_map(|p| subs.iter().map(move |s| (p, s)))
    {
        let run = async |i: usize| {
            let key = RunRef::EventId(format!("evt_{sub}_{i}"));
            store.run_detail(project, &key).await.unwrap().run
        };
        let runs = [
            run(0).await,
            run(1).await,
            run(2).await,
            run(3).await,
            run(4).await,
        ];
        assert_eq!(runs[4].status, RunStatus::Open, "{project} {sub}");
        for (i, older) in runs[..4].iter().enumerate() {
            assert_eq!(
                older.status,
                RunStatus::Superseded,
                "{project} {sub} event {i}"
            );
            // By whichever newer event of its own project found it open.
            let by = runs.iter().position(|r| Some(r.id) == older.superseded_by);
            assert!(
                by.is_some_and(|by| by > i),
                "{project} {sub} event {i}: {by:?}"
            );
        }
    }
}

const PROJECTS: [&str; 2] = ["default", "second"];

/// A fixed pseudo-random sort key (std's hasher has fixed keys).
fn scramble(value: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// A run probed from the moment it opens.
fn probed(event_id: &str) -> RunSpec {
    RunSpec {
        probe_start: Some(ProbeStart::Open),
        ..spec(event_id, Source::Stripe)
    }
}

const SCHEDULE: ProbeSchedule = ProbeSchedule {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(10),
    resolve_window: Duration::from_secs(3600),
    lead: Duration::from_secs(1),
};

fn attempt(at: DateTime<Utc>, plan: &str) -> ProbeAttempt {
    ProbeAttempt {
        at,
        duration_ms: 3,
        url: "http://app/access/cus".into(),
        status_code: Some(200),
        observed_plan: Some(plan.into()),
        observed_features: None,
        deploy_sha: Some("sha-1".into()),
        error: None,
        matched: false,
    }
}

fn seconds(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

async fn probe_claims_are_exclusive_leased_and_recorded_once(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    for i in 0..20 {
        store
            .open_run(probed(&format!("evt_{i}")), now)
            .await
            .unwrap();
    }
    store
        .open_run(spec("evt_unprobed", Source::Stripe), now)
        .await
        .unwrap();
    // Four replicas claim at once: every due run goes to exactly one.
    let claims = join_all((0..4).map(|_| store.claim_probes(now, 10))).await;
    let mut ids: Vec<_> = claims
        .into_iter()
        .flat_map(Result::unwrap)
        .map(|job| job.run.event_id)
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (20, 20), "{ids:?}");
    assert!(!ids.contains(&"evt_unprobed".to_owned()));
    assert!(
        store.claim_probes(now, 50).await.unwrap().is_empty(),
        "leased"
    );

    // A replica that died holding the leases: after they pass, another
    // replica takes the work over...
    let late = now + chrono::Duration::from_std(LEASE).unwrap() + seconds(1);
    let retaken = store.claim_probes(late, 50).await.unwrap();
    assert_eq!(retaken.len(), 20);
    // ...and if the first one was only slow, its result is dropped rather
    // than recorded twice.
    let stale = ProbeJob {
        lease_token: "replica-that-was-too-slow".into(),
        ..retaken[0].clone()
    };
    store
        .finish_probe(&stale, Some((attempt(late, "starter"), SCHEDULE)), late)
        .await
        .unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM probe_attempts").await, 0);
    store
        .finish_probe(
            &retaken[0],
            Some((attempt(late, "starter"), SCHEDULE)),
            late,
        )
        .await
        .unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM probe_attempts").await, 1);
}

/// Opens a probed run and records one probe that saw `plan`.
async fn open_and_probe_once(store: &dyn Store, event_id: &str, plan: &str, now: DateTime<Utc>) {
    store.open_run(probed(event_id), now).await.unwrap();
    let job = store.claim_probes(now, 10).await.unwrap().pop().unwrap();
    store
        .finish_probe(&job, Some((attempt(now, plan), SCHEDULE)), now)
        .await
        .unwrap();
}

async fn a_matching_probe_closes_the_run_and_ends_probing(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    open_and_probe_once(store.as_ref(), "evt_1", "starter", now).await;
    let detail = store
        .run_detail("default", &RunRef::EventId("evt_1".into()))
        .await
        .unwrap();
    assert_eq!(detail.run.status, RunStatus::Open);
    assert_eq!(detail.run.observed_plan.as_deref(), Some("starter"));
    assert_eq!(
        detail.run.stage,
        Stage::Received,
        "a probe is not reconciliation"
    );

    // The next probe is due after the schedule's first wait, not before.
    assert!(store.claim_probes(now, 10).await.unwrap().is_empty());
    let next = now + seconds(1);
    let job = store.claim_probes(next, 10).await.unwrap().pop().unwrap();
    assert_eq!(job.attempts, 1);
    store
        .finish_probe(&job, Some((attempt(next, "pro"), SCHEDULE)), next)
        .await
        .unwrap();
    let detail = store
        .run_detail("default", &RunRef::EventId("evt_1".into()))
        .await
        .unwrap();
    assert_eq!(detail.run.status, RunStatus::Succeeded);
    assert_eq!(detail.run.deploy_sha.as_deref(), Some("sha-1"));
    assert!(
        detail
            .timeline
            .iter()
            .any(|e| e.stage == Stage::AccessAsserted && e.source == Source::Probe),
        "{:?}",
        detail.timeline
    );
    let matched: Vec<bool> = detail.probes.iter().map(|p| p.matched).collect();
    assert_eq!(matched, [false, true]);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM probe_queue").await, 0);
    assert!(
        store
            .claim_probes(next + minutes(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn probing_starts_at_reconciled_when_configured(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let spec = RunSpec {
        probe_start: Some(ProbeStart::Reconciled),
        ..spec("evt_1", Source::Stripe)
    };
    store.open_run(spec, now).await.unwrap();
    assert!(store.claim_probes(now, 10).await.unwrap().is_empty());
    store
        .report_stage(
            "default",
            &RunRef::EventId("evt_1".into()),
            Stage::Reconciled,
            StageReport::default(),
            Source::Sdk,
            now,
        )
        .await
        .unwrap();
    assert_eq!(store.claim_probes(now, 10).await.unwrap().len(), 1);
}

async fn a_run_that_fails_before_probing_starts_is_probed_after(backend: Backend) {
    let Some((_db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    let spec = RunSpec {
        probe_start: Some(ProbeStart::Reconciled),
        ..spec("evt_1", Source::Stripe)
    };
    store.open_run(spec, now).await.unwrap();
    // Never reconciled, so never probed, until the sweeper fails it: then
    // it is probed, so that its incident can resolve itself.
    let overdue = now + minutes(3);
    assert!(store.claim_probes(overdue, 10).await.unwrap().is_empty());
    assert_eq!(store.sweep(overdue, 10).await.unwrap().incidents.len(), 1);
    let jobs = store.claim_probes(overdue, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].run.status, RunStatus::Failed);
}

async fn a_failed_run_is_probed_until_its_incident_resolves(backend: Backend) {
    let Some((db, store)) = open_store(backend).await else {
        return;
    };
    let now = t0();
    open_and_probe_once(store.as_ref(), "evt_1", "starter", now).await;
    let overdue = now + minutes(3);
    let swept = store.sweep(overdue, 10).await.unwrap();
    assert_eq!(swept.incidents.len(), 1);
    let evidence = swept.incidents[0].evidence.of_run().unwrap();
    assert_eq!(evidence.observed_plan.as_deref(), Some("starter"));
    let last_probe = evidence.last_probe.as_ref().unwrap();
    assert_eq!(last_probe.observed_plan.as_deref(), Some("starter"));
    assert_eq!(evidence.deploy_sha.as_deref(), Some("sha-1"));

    // The app grants access after all: the next probe resolves the incident.
    let job = store
        .claim_probes(overdue, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(job.run.status, RunStatus::Failed);
    store
        .finish_probe(&job, Some((attempt(overdue, "pro"), SCHEDULE)), overdue)
        .await
        .unwrap();
    let detail = store
        .run_detail("default", &RunRef::EventId("evt_1".into()))
        .await
        .unwrap();
    assert_eq!(detail.incidents[0].status, IncidentStatus::Resolved);
    assert!(
        detail.incidents[0]
            .resolution
            .as_deref()
            .unwrap()
            .contains("probe"),
        "{:?}",
        detail.incidents[0].resolution
    );
    assert_eq!(db.scalar("SELECT COUNT(*) FROM probe_queue").await, 0);
}

on_both_backends!(
    newer_events_supersede_older_runs_in_any_order,
    racing_events_of_one_subscription_still_leave_one_current,
    a_burst_settles_as_deliveries_one_at_a_time_would,
    an_app_opened_run_takes_its_place_only_once_stripe_tells_its_time,
    ready_after_migrations,
    migrations_are_safe_when_replicas_start_together,
    ingest_stores_once_and_round_trips_the_run,
    concurrent_deliveries_and_opens_make_one_run,
    reports_move_runs_and_stay_in_their_project,
    lists_page_newest_first_and_filter,
    sweep_fails_only_overdue_runs_once,
    concurrent_sweeps_open_exactly_one_incident_per_run,
    the_sweeper_fails_every_overdue_run_once,
    the_sweep_writes_back_only_what_failing_a_run_changes,
    a_report_that_beats_the_sweeper_wins,
    incidents_acknowledge_resolve_and_resolve_themselves,
    probe_claims_are_exclusive_leased_and_recorded_once,
    a_matching_probe_closes_the_run_and_ends_probing,
    probing_starts_at_reconciled_when_configured,
    a_failed_run_is_probed_until_its_incident_resolves,
    a_run_that_fails_before_probing_starts_is_probed_after,
);
