//! Stripe delivers at least once and in no particular order, while the app
//! reports stages and the sweeper runs. However often each event arrives and
//! in whatever order, Assay must end where one in-order delivery of each
//! event would have ended: a property test, on both backends.
//!
//! # The property
//!
//! A scenario is a few events about 2 to 4 subscriptions, each with its own
//! `created` second (event ids do not sort the same way, so that ordering by
//! id instead of time shows), and a schedule: every event delivered 1 to 5
//! times in a random order, with actions at random points among the
//! deliveries: the app opening a run itself (`POST /v1/runs`, with or
//! without the subscription and an expected plan), its stage reports
//! (`reconciled`, `access_asserted` with the plan it shows) and sweeps.
//!
//! Time is driven explicitly, in 10-minute slots. The deliveries between two
//! actions come a second apart at the start of a slot,
//! the action at minute 5, and the next deliveries one to three slots later.
//! The deadlines (20 and 40 minutes) so always fall 5 minutes away from any
//! action: whether a sweep finds a run overdue depends only on the slot the
//! run opened in, not on where in its slot its first delivery came.
//!
//! The reference schedule is the same scenario delivered in order, once
//! each: every event at the same logical point as its first delivery (after
//! the same actions, before the same actions), in `created` order among the
//! events first delivered at that point, and the same actions at the same
//! times. It cannot be in order across actions, and should not be:
//! whether an older event's run ends superseded, succeeded or failed
//! legitimately depends on whether a report or a sweep reached it before the
//! newer event arrived. So the equivalent point of an action is "once the
//! same events have arrived". Disorder across actions (an older event first
//! arriving after a sweep failed, or a report closed, the newer one's run) is
//! checked by invariants on each final state instead; see [`check_state`].
//!
//! The two executions, each on a fresh database, must agree on:
//! - what every action returned: the run the app opened or found, the run a
//!   report moved (or "not found" when its event had not arrived yet), what
//!   a sweep claimed, failed and opened;
//! - every stored event's payload (byte for byte as sent), and the row
//!   counts of events, runs, timeline entries and incidents;
//! - every run, keyed by its event id, with its timeline and incidents: its
//!   type, customer, subscription, expectation, observed plan, deploy SHA,
//!   stage, status, `event_created_at`, whether it was superseded, which
//!   deadline it waits for, each timeline entry's source, stage, outcome and
//!   evidence, each incident's kind, title, status and evidence.
//!
//! Left out, because they legitimately depend on arrival: ids, and times
//! below the slot (the second a delivery came within its slot; times are
//! compared as the slot they fall in), and which newer run superseded a run
//! when two newer events arrived between the same two actions (either may
//! be named; the invariants check that it is a newer event of the same
//! subscription).
//!
//! Each execution starts on an empty, migrated database: a new SQLite file
//! ([`TestDb::create`]), or on PostgreSQL the test's own new database with
//! every table emptied ([`EMPTY_POSTGRES`]): a new database per execution
//! spends half a second migrating, and a project per case in one database
//! would not isolate, since a sweep claims overdue runs of every project.
//! Failing cases are kept in `redelivery.proptest-regressions` beside this
//! file and replayed first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use assay::config::{Config, ProjectConfig, Sources};
use assay::incident::Incident;
use assay::run::{
    BILLING_WORKFLOW, Expectation, Outcome as Entry, Run, RunSpec, RunStatus, Source, Stage,
    StageReport, TimelineEntry,
};
use assay::store::{RunDetail, RunFilter, RunRef, Store, StoreError, connect};
use chrono::{DateTime, Duration, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestCaseResult, TestRunner,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Backend, SECRET, TestDb, env, on_both_backends, sign, subscription_created};

/// Failing cases are kept here and replayed first on the next run.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/redelivery.proptest-regressions"
);

/// Enough cases to find ordering bugs in a few seconds, few enough to keep
/// each backend under a minute.
const CASES: u32 = 32;

/// Minutes per slot of the schedule's clock.
const SLOT_MINUTES: i64 = 10;

/// When the schedule starts; events happened in the hour before.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The start of the slot `at` falls in: arrival-dependent times are
/// compared at this precision.
fn slot_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let slot_ms = SLOT_MINUTES * 60_000;
    let ms = (at - t0()).num_milliseconds();
    t0() + Duration::milliseconds(ms.div_euclid(slot_ms) * slot_ms)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `customer.subscription.created`, active.
    Created,
    /// `customer.subscription.updated` with this status.
    Updated(&'static str),
    /// `customer.subscription.deleted`.
    Deleted,
    /// `invoice.paid` for the subscription.
    InvoicePaid,
}

#[derive(Debug, Clone)]
struct EventSpec {
    /// Which subscription (and its customer) the event is about.
    sub: usize,
    kind: Kind,
    /// `price_pro` or `price_starter` (the test plan map's prices).
    price: &'static str,
    /// Orders the events' `created` times (ties broken by index).
    created_key: u16,
    /// Where each delivery goes in the schedule; one entry per delivery.
    deliveries: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// The app reports `reconciled` for event `event`.
    Reconciled {
        event: usize,
        deploy_sha: Option<&'static str>,
    },
    /// The app reports `access_asserted`, showing `plan`.
    AccessAsserted {
        event: usize,
        plan: &'static str,
        deploy_sha: Option<&'static str>,
    },
    /// The app opens the run of event `event` itself (`POST /v1/runs`), as
    /// its webhook handler does when Stripe reaches it before Assay.
    Open {
        event: usize,
        /// Whether the app names the subscription.
        with_subscription: bool,
        expected_plan: Option<&'static str>,
    },
    Sweep,
}

#[derive(Debug, Clone)]
struct ActionSpec {
    action: Action,
    /// Where the action goes in the schedule.
    position: u16,
    /// Extra slots the clock moves on after the action.
    later: u8,
}

#[derive(Debug, Clone)]
struct Scenario {
    events: Vec<EventSpec>,
    actions: Vec<ActionSpec>,
}

/// One step of a schedule, at its time.
#[derive(Debug, Clone)]
enum Op {
    Deliver(usize, DateTime<Utc>),
    Act(Action, DateTime<Utc>),
}

fn event_spec(subs: usize) -> impl Strategy<Value = EventSpec> {
    let kind = prop_oneof![
        Just(Kind::Created),
        prop_oneof![Just("active"), Just("past_due"), Just("canceled")].prop_map(Kind::Updated),
        Just(Kind::Deleted),
        Just(Kind::InvoicePaid),
    ];
    (
        0..subs,
        kind,
        prop_oneof![Just("price_pro"), Just("price_starter")],
        any::<u16>(),
        vec(0u16..1000, 1..=5),
    )
        .prop_map(|(sub, kind, price, created_key, deliveries)| EventSpec {
            sub,
            kind,
            price,
            created_key,
            deliveries,
        })
}

fn action_spec(events: usize) -> impl Strategy<Value = ActionSpec> {
    let sha = prop_oneof![Just(None), Just(Some("sha_a")), Just(Some("sha_b"))];
    let action = prop_oneof![
        (0..events, sha.clone())
            .prop_map(|(event, deploy_sha)| Action::Reconciled { event, deploy_sha }),
        (
            0..events,
            prop_oneof![Just("pro"), Just("starter"), Just("none")],
            sha
        )
            .prop_map(|(event, plan, deploy_sha)| Action::AccessAsserted {
                event,
                plan,
                deploy_sha
            }),
        (
            0..events,
            any::<bool>(),
            prop_oneof![Just(None), Just(Some("pro")), Just(Some("starter"))]
        )
            .prop_map(|(event, with_subscription, expected_plan)| Action::Open {
                event,
                with_subscription,
                expected_plan
            }),
        Just(Action::Sweep),
    ];
    (action, 0u16..1000, 0u8..=2).prop_map(|(action, position, later)| ActionSpec {
        action,
        position,
        later,
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..=4)
        .prop_flat_map(|subs| vec(event_spec(subs), subs..=3 * subs))
        .prop_flat_map(|events| {
            let n = events.len();
            (Just(events), vec(action_spec(n), 0..=8))
        })
        .prop_map(|(events, actions)| Scenario { events, actions })
}

impl Kind {
    fn event_type(self) -> &'static str {
        match self {
            Kind::Created => "customer.subscription.created",
            Kind::Updated(_) => "customer.subscription.updated",
            Kind::Deleted => "customer.subscription.deleted",
            Kind::InvoicePaid => "invoice.paid",
        }
    }
}

impl Scenario {
    fn event_id(i: usize) -> String {
        format!("evt_{i:02}")
    }

    /// Each event's `created` second, all distinct.
    fn created(&self) -> Vec<i64> {
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|&i| (self.events[i].created_key, i));
        let base = (t0() - Duration::hours(1)).timestamp();
        let mut created = vec![0; order.len()];
        for (rank, i) in order.into_iter().enumerate() {
            created[i] = base + rank as i64;
        }
        created
    }

    /// Event `i` as Stripe sends it, the same bytes on every delivery.
    fn body(&self, i: usize) -> String {
        let spec = &self.events[i];
        let (customer, subscription) = (format!("cus_{}", spec.sub), format!("sub_{}", spec.sub));
        let id = Scenario::event_id(i);
        let mut event = subscription_created(&id, &customer, &subscription, spec.price);
        event["type"] = json!(spec.kind.event_type());
        match spec.kind {
            Kind::Created => {}
            Kind::Updated(status) => event["data"]["object"]["status"] = json!(status),
            Kind::Deleted => event["data"]["object"]["status"] = json!("canceled"),
            Kind::InvoicePaid => {
                event = crate::support::fixture("invoice.paid", &id);
                let invoice = &mut event["data"]["object"];
                invoice["customer"] = json!(customer);
                invoice["parent"]["subscription_details"]["subscription"] = json!(subscription);
                invoice["lines"]["data"][0]["pricing"]["price_details"] =
                    json!({"price": spec.price, "product": "prod_assay"});
            }
        }
        event["created"] = json!(self.created()[i]);
        event.to_string()
    }

    /// The disordered schedule, and the in-order reference derived from it
    /// (see the module's documentation).
    fn schedules(&self) -> (Vec<Op>, Vec<Op>) {
        enum Step<'a> {
            Deliver(usize),
            Act(&'a ActionSpec),
        }
        let mut steps: Vec<(u16, usize, usize, Step)> = Vec::new();
        for (i, event) in self.events.iter().enumerate() {
            for (copy, &position) in event.deliveries.iter().enumerate() {
                steps.push((position, 0, i * 8 + copy, Step::Deliver(i)));
            }
        }
        for (j, action) in self.actions.iter().enumerate() {
            steps.push((action.position, 1, j, Step::Act(action)));
        }
        steps.sort_by_key(|(position, kind, index, _)| (*position, *kind, *index));

        let created = self.created();
        let (mut disordered, mut in_order) = (Vec::new(), Vec::new());
        let mut slot = t0();
        let mut seen = BTreeSet::new();
        // Events first delivered since the last action.
        let mut fresh: Vec<usize> = Vec::new();
        let flush = |fresh: &mut Vec<usize>, in_order: &mut Vec<Op>, slot: DateTime<Utc>| {
            fresh.sort_by_key(|&i| created[i]);
            for (k, i) in fresh.drain(..).enumerate() {
                in_order.push(Op::Deliver(i, slot + Duration::seconds(k as i64)));
            }
        };
        let mut in_slot = 0;
        for (_, _, _, step) in steps {
            match step {
                Step::Deliver(i) => {
                    disordered.push(Op::Deliver(i, slot + Duration::seconds(in_slot)));
                    in_slot += 1;
                    if seen.insert(i) {
                        fresh.push(i);
                    }
                }
                Step::Act(spec) => {
                    flush(&mut fresh, &mut in_order, slot);
                    let at = slot + Duration::minutes(SLOT_MINUTES / 2);
                    disordered.push(Op::Act(spec.action.clone(), at));
                    in_order.push(Op::Act(spec.action.clone(), at));
                    slot += Duration::minutes(SLOT_MINUTES * (1 + i64::from(spec.later)));
                    in_slot = 0;
                }
            }
        }
        flush(&mut fresh, &mut in_order, slot);
        (disordered, in_order)
    }
}

/// What a report or a sweep returned, without ids and with times as slots.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The run the report moved, or what was not found.
    Report(Result<Box<Run>, &'static str>),
    /// The run the app opened or found, and whether it opened it.
    Open(Box<Run>, bool),
    Sweep {
        claimed: usize,
        failed: usize,
        /// The incidents opened, by event id.
        incidents: BTreeMap<String, Incident>,
    },
}

/// A run with its timeline and incidents, without ids and with times as
/// slots.
#[derive(Debug, PartialEq)]
struct RunState {
    run: Run,
    timeline: Vec<TimelineEntry>,
    incidents: Vec<Incident>,
}

#[derive(Debug, PartialEq)]
struct FinalState {
    /// Rows of stripe_events, runs, run_timeline and incidents.
    counts: [i64; 4],
    /// Every run, by event id.
    runs: BTreeMap<String, RunState>,
}

fn erase_run(run: &Run) -> Run {
    Run {
        id: Uuid::nil(),
        superseded_by: run.superseded_by.map(|_| Uuid::nil()),
        opened_at: slot_of(run.opened_at),
        reconciled_due_at: slot_of(run.reconciled_due_at),
        access_due_at: slot_of(run.access_due_at),
        deadline_at: run.deadline_at.map(slot_of),
        closed_at: run.closed_at.map(slot_of),
        ..run.clone()
    }
}

/// Ids become the nil UUID and times their slot, wherever they are in `value`,
/// also inside text ("the deploy that was live at ...").
fn erase_json(value: &Value) -> Value {
    match value {
        Value::String(s) if Uuid::parse_str(s).is_ok() => json!(Uuid::nil()),
        Value::String(s) => json!(erase_times(s)),
        Value::Array(items) => items.iter().map(erase_json).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), erase_json(v)))
            .collect(),
        other => other.clone(),
    }
}

/// `text` with every RFC 3339 time in it (`2026-11-23T10:00:01.000Z`,
/// `2026-11-23T10:00:01+00:00`) replaced by its slot.
fn erase_times(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    'scan: while !rest.is_empty() {
        // The longest form first: with milliseconds and an offset.
        for len in [29, 25, 24, 20] {
            if let Some(at) = rest
                .get(..len)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            {
                out.push_str(&slot_of(at.with_timezone(&Utc)).to_rfc3339());
                rest = &rest[len..];
                continue 'scan;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn erase_incident(incident: &Incident) -> Incident {
    Incident {
        id: Uuid::nil(),
        run_id: Some(Uuid::nil()),
        // Through its JSON, as the API shows it.
        evidence: assay::incident::Evidence::from_json(
            incident.scope,
            &erase_json(&serde_json::to_value(&incident.evidence).unwrap()).to_string(),
        )
        .unwrap(),
        opened_at: slot_of(incident.opened_at),
        acknowledged_at: incident.acknowledged_at.map(slot_of),
        resolved_at: incident.resolved_at.map(slot_of),
        ..incident.clone()
    }
}

fn erase_entry(entry: &TimelineEntry) -> TimelineEntry {
    TimelineEntry {
        at: slot_of(entry.at),
        // Which newer event superseded the run may differ (see the module's
        // documentation); `check_state` checks it is a newer one.
        evidence: if entry.outcome == Entry::Superseded {
            Value::Null
        } else {
            erase_json(&entry.evidence)
        },
        ..entry.clone()
    }
}

fn event_of(incident: &Incident) -> String {
    incident.evidence.of_run().unwrap().event_id.clone()
}

/// Empties every table of the PostgreSQL test database but the migrations'
/// own: the next execution starts on a migrated database as empty as a new
/// one. No table's references are checked there, so the order does not
/// matter. (`DELETE`: `TRUNCATE` of a dozen tables takes a hundred times as
/// long.)
const EMPTY_POSTGRES: &str = "DO $$ DECLARE t text; BEGIN \
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename <> '_sqlx_migrations' LOOP \
        EXECUTE format('DELETE FROM %I', t); \
    END LOOP; END $$";

/// Where one execution runs: a new SQLite file, or the test's PostgreSQL
/// database emptied (a new database per execution spends most of its half
/// second migrating); `None` when the backend is not available here.
async fn fresh_database(backend: Backend, postgres: Option<&TestDb>) -> Option<FreshDb<'_>> {
    match postgres {
        Some(db) => {
            db.execute(EMPTY_POSTGRES).await;
            Some(FreshDb::Emptied(db))
        }
        None => TestDb::create(backend).await.map(FreshDb::New),
    }
}

enum FreshDb<'a> {
    New(TestDb),
    Emptied(&'a TestDb),
}

impl std::ops::Deref for FreshDb<'_> {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        match self {
            FreshDb::New(db) => db,
            FreshDb::Emptied(db) => db,
        }
    }
}

/// Plays `schedule` on `db`, fresh.
async fn play(
    db: &TestDb,
    scenario: &Scenario,
    schedule: &[Op],
) -> Result<(Vec<Outcome>, FinalState), TestCaseError> {
    let env = env(&[
        ("ASSAY_DATABASE_URL", db.url.as_str()),
        ("ASSAY_DEADLINE_RECONCILED", "20m"),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "40m"),
    ]);
    let config = Config::load(Sources {
        file: None,
        env: &env,
    })
    .expect("test configuration is valid");
    let project = &config.projects["default"];
    let store = connect(&config.database).await.unwrap();

    let mut delivered = BTreeSet::new();
    let mut run_of_event = std::collections::HashMap::new();
    let mut outcomes = Vec::new();
    for op in schedule {
        match op {
            Op::Deliver(i, now) => {
                let body = scenario.body(*i);
                let signature = sign(&body, SECRET, now.timestamp());
                let accepted = assay::ingest::stripe_event(
                    &*store,
                    project,
                    Some(&signature),
                    body.as_bytes(),
                    *now,
                )
                .await
                .unwrap();
                let first = delivered.insert(*i);
                prop_assert_eq!(
                    accepted.duplicate,
                    !first,
                    "delivery of {} at {}",
                    accepted.event_id,
                    now
                );
                // Every delivery names the event's run: a redelivery, the
                // one its first delivery opened.
                let run_id = accepted.run_id.expect("every event here opens a run");
                let opened = *run_of_event.entry(*i).or_insert(run_id);
                prop_assert_eq!(run_id, opened, "redelivery of {}", accepted.event_id);
            }
            Op::Act(action, now) => {
                outcomes.push(act(&*store, project, scenario, action, *now).await)
            }
        }
    }

    let state = final_state(&*store, db, scenario).await?;
    Ok((outcomes, state))
}

async fn act(
    store: &dyn Store,
    project: &ProjectConfig,
    scenario: &Scenario,
    action: &Action,
    now: DateTime<Utc>,
) -> Outcome {
    let (event, stage, report) = match action {
        Action::Open {
            event,
            with_subscription,
            expected_plan,
        } => {
            // What `POST /v1/runs` makes of the app's request.
            let spec = &scenario.events[*event];
            let open = RunSpec {
                project: project.name.clone(),
                workflow: BILLING_WORKFLOW.to_owned(),
                event_id: Scenario::event_id(*event),
                event_type: spec.kind.event_type().to_owned(),
                customer_id: Some(format!("cus_{}", spec.sub)),
                subscription_id: with_subscription.then(|| format!("sub_{}", spec.sub)),
                expectation: match expected_plan {
                    Some(plan) => Expectation::Plan((*plan).to_owned()),
                    None => Expectation::Unknown {
                        reason: "the app opened the run without an expected_plan".into(),
                    },
                },
                livemode: None,
                event_created_at: None,
                deadlines: project.deadlines,
                probe_start: project.probe_start(),
                source: Source::Sdk,
                drill_id: None,
            };
            let (run, created) = store.open_run(open, now).await.unwrap();
            return Outcome::Open(Box::new(erase_run(&run)), created);
        }
        Action::Sweep => {
            let swept = store.sweep(now, 500).await.unwrap();
            return Outcome::Sweep {
                claimed: swept.runs_claimed,
                failed: swept.runs_failed,
                incidents: swept
                    .incidents
                    .iter()
                    .map(|i| (event_of(i), erase_incident(i)))
                    .collect(),
            };
        }
        Action::Reconciled { event, deploy_sha } => (
            event,
            Stage::Reconciled,
            StageReport {
                deploy_sha: deploy_sha.map(str::to_owned),
                ..Default::default()
            },
        ),
        Action::AccessAsserted {
            event,
            plan,
            deploy_sha,
        } => (
            event,
            Stage::AccessAsserted,
            StageReport {
                observed_plan: Some((*plan).to_owned()),
                deploy_sha: deploy_sha.map(str::to_owned),
                ..Default::default()
            },
        ),
    };
    let key = RunRef::EventId(Scenario::event_id(*event));
    let reported = store
        .report_stage("default", &key, stage, report, Source::Sdk, now)
        .await;
    Outcome::Report(match reported {
        Ok(run) => Ok(Box::new(erase_run(&run))),
        Err(StoreError::NotFound(what)) => Err(what),
        Err(e) => panic!("report on {key:?}: {e}"),
    })
}

/// Reads everything back through the store, checks the invariants, and
/// erases what may legitimately differ.
async fn final_state(
    store: &dyn Store,
    db: &TestDb,
    scenario: &Scenario,
) -> Result<FinalState, TestCaseError> {
    for i in 0..scenario.events.len() {
        let id = Scenario::event_id(i);
        let stored = store.stripe_event("default", &id).await.unwrap();
        prop_assert_eq!(stored, Some(scenario.body(i)), "{} is stored as sent", id);
    }
    let page = store
        .list_runs(
            "default",
            &RunFilter {
                limit: assay::store::MAX_PAGE,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut details = Vec::new();
    for run in &page.data {
        details.push(
            store
                .run_detail("default", &RunRef::Id(run.id))
                .await
                .unwrap(),
        );
    }
    check_state(scenario, &details)?;
    let runs = details
        .iter()
        .map(|d| {
            let state = RunState {
                run: erase_run(&d.run),
                timeline: d.timeline.iter().map(erase_entry).collect(),
                incidents: d.incidents.iter().map(erase_incident).collect(),
            };
            (d.run.event_id.clone(), state)
        })
        .collect();
    Ok(FinalState {
        counts: db.counts().await,
        runs,
    })
}

/// What must hold of any final state, whatever the order of delivery,
/// judged against the scenario itself (not the stored order, which a bug
/// could get wrong consistently): one run per event, about its event's
/// subscription, customer and type, at Stripe's `created`; of each
/// subscription's runs only the newest event's may still be open; a
/// superseded run names a newer event's run of its subscription; each run
/// opened once; a run has an incident exactly when it failed, and one.
fn check_state(scenario: &Scenario, details: &[RunDetail]) -> TestCaseResult {
    let events: BTreeSet<String> = (0..scenario.events.len()).map(Scenario::event_id).collect();
    let runs: BTreeSet<String> = details.iter().map(|d| d.run.event_id.clone()).collect();
    prop_assert_eq!(details.len(), runs.len(), "one run per event");
    prop_assert_eq!(&runs, &events, "every event has its run");
    let by_id: HashMap<Uuid, &Run> = details.iter().map(|d| (d.run.id, &d.run)).collect();
    let created = scenario.created();
    let index = |run: &Run| -> usize { run.event_id["evt_".len()..].parse().unwrap() };
    let newest = |sub: usize| {
        (0..scenario.events.len())
            .filter(|&i| scenario.events[i].sub == sub)
            .max_by_key(|&i| created[i])
            .unwrap()
    };
    for RunDetail {
        run,
        timeline,
        incidents,
        ..
    } in details
    {
        let i = index(run);
        let spec = &scenario.events[i];
        prop_assert_eq!(run.event_type.as_str(), spec.kind.event_type());
        prop_assert_eq!(run.customer_id.clone(), Some(format!("cus_{}", spec.sub)));
        prop_assert_eq!(
            run.subscription_id.clone(),
            Some(format!("sub_{}", spec.sub))
        );
        prop_assert_eq!(
            run.event_created_at.timestamp(),
            created[i],
            "{} orders at Stripe's created",
            &run.event_id
        );
        let opened = timeline
            .iter()
            .filter(|e| e.outcome == Entry::Opened)
            .count();
        prop_assert_eq!(opened, 1, "{} opened once", &run.event_id);
        if run.status == RunStatus::Open {
            prop_assert_eq!(
                i,
                newest(spec.sub),
                "only the newest event of sub_{} may be open",
                spec.sub
            );
        }
        match (run.status, run.superseded_by) {
            (RunStatus::Superseded, Some(by)) => {
                let newer = by_id.get(&by).copied();
                prop_assert!(
                    newer.is_some(),
                    "{} superseded by a run that exists",
                    &run.event_id
                );
                let newer = newer.unwrap();
                let j = index(newer);
                prop_assert_eq!(scenario.events[j].sub, spec.sub);
                prop_assert!(
                    created[j] > created[i],
                    "{} superseded by an older {}",
                    &run.event_id,
                    &newer.event_id
                );
                let named: Vec<_> = timeline
                    .iter()
                    .filter(|e| e.outcome == Entry::Superseded)
                    .map(|e| e.evidence["newer_event_id"].as_str().unwrap_or_default())
                    .collect();
                prop_assert_eq!(named, vec![newer.event_id.as_str()]);
            }
            (status, by) => prop_assert!(
                status != RunStatus::Superseded && by.is_none(),
                "{}: {:?} superseded by {:?}",
                &run.event_id,
                status,
                by
            ),
        }
        let want = usize::from(run.status == RunStatus::Failed);
        prop_assert_eq!(incidents.len(), want, "incidents of {}", &run.event_id);
    }
    Ok(())
}

/// Fails with the first difference, named, rather than two long dumps.
fn compare(
    disordered: &(Vec<Outcome>, FinalState),
    in_order: &(Vec<Outcome>, FinalState),
    schedule: &[Op],
) -> TestCaseResult {
    let actions = schedule.iter().filter_map(|op| match op {
        Op::Act(action, at) => Some((action, at)),
        Op::Deliver(..) => None,
    });
    for ((got, want), (action, at)) in disordered.0.iter().zip(&in_order.0).zip(actions) {
        prop_assert_eq!(got, want, "{:?} at {} saw a different state", action, at);
    }
    let (got, want) = (&disordered.1, &in_order.1);
    for (event_id, want_run) in &want.runs {
        let got_run = got.runs.get(event_id);
        prop_assert!(got_run.is_some(), "no run of {}", event_id);
        let got_run = got_run.unwrap();
        prop_assert_eq!(&got_run.run, &want_run.run, "run of {}", event_id);
        prop_assert_eq!(
            &got_run.timeline,
            &want_run.timeline,
            "timeline of {}",
            event_id
        );
        prop_assert_eq!(
            &got_run.incidents,
            &want_run.incidents,
            "incidents of {}",
            event_id
        );
    }
    prop_assert_eq!(got, want);
    Ok(())
}

async fn case(backend: Backend, postgres: Option<&TestDb>, scenario: Scenario) -> TestCaseResult {
    let (disordered, in_order) = scenario.schedules();
    let db = fresh_database(backend, postgres).await.unwrap();
    let got = play(&db, &scenario, &disordered).await?;
    drop(db);
    let db = fresh_database(backend, postgres).await.unwrap();
    let want = play(&db, &scenario, &in_order).await?;
    compare(&got, &want, &disordered)
}

async fn redelivered_disordered_events_end_as_in_order_delivery(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let postgres = (backend == Backend::Postgres).then_some(&db);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // Each shrink step replays two schedules on fresh databases.
        max_shrink_iters: 256,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&scenario(), |scenario| {
            handle.block_on(case(backend, postgres, scenario))
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

on_both_backends!(redelivered_disordered_events_end_as_in_order_delivery);
