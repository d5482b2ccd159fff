//! Prometheus metrics (`GET /metrics`).
//!
//! Two kinds, for two questions:
//! - **What this replica did** (counters and histograms): runs opened and
//!   closed by outcome, stage latencies, alert deliveries and probes by
//!   outcome, sweeps. The store records a run's transitions after the
//!   transaction that made them commits, so each is counted once, by the
//!   replica that made it; sum them across replicas.
//! - **How things stand** (gauges, read from the database at scrape time
//!   through indexes): open runs, overdue runs, open incidents, dead
//!   alert deliveries, and the sweeper's lag. Every replica reports the same
//!   values; take the max across replicas, not the sum.
//!
//! Failure drills are never counted: their runs and incidents are not a
//! customer's.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::run::{Outcome, RunStatus, Stage, TimelineEntry};

/// The exposition's content type: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// A run's transition, as the store saw it commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub project: String,
    pub workflow: String,
    pub stage: Stage,
    /// What the transition did to the run.
    pub outcome: Outcome,
    /// From the run's opening to this transition.
    pub since_open_secs: f64,
}

impl Transition {
    /// The transitions a run's new timeline entries make, or none for a
    /// drill's run.
    pub fn of(run: &crate::run::Run, entries: &[TimelineEntry]) -> Vec<Transition> {
        if !run.realm().counted() {
            return Vec::new();
        }
        entries
            .iter()
            .map(|entry| Transition {
                project: run.project.clone(),
                workflow: run.workflow.clone(),
                stage: entry.stage,
                outcome: entry.outcome,
                since_open_secs: (entry.at - run.opened_at).num_milliseconds().max(0) as f64
                    / 1000.0,
            })
            .collect()
    }
}

/// What the database says now, for the gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// (project, workflow, open runs).
    pub open_runs: Vec<(String, String, i64)>,
    /// (project, workflow, overdue runs not yet swept).
    pub overdue_runs: Vec<(String, String, i64)>,
    /// (project, open or acknowledged incidents).
    pub open_incidents: Vec<(String, i64)>,
    /// (project, dead alert deliveries).
    pub dead_deliveries: Vec<(String, i64)>,
    /// How long the oldest overdue run has waited for the sweeper.
    pub sweeper_lag_secs: f64,
    /// (project, kind, open or acknowledged project incidents).
    pub project_incidents: Vec<(String, String, i64)>,
    /// (project, seconds since the last accepted Stripe delivery), for the
    /// projects that had one in the watcher's history.
    pub since_last_accepted: Vec<(String, f64)>,
}

pub struct Metrics {
    registry: Registry,
    /// One scrape at a time sets the gauges and gathers them: two at once
    /// could gather between the other's reset and its sets.
    scrape: std::sync::Mutex<()>,
    runs_opened: IntCounterVec,
    runs_closed: IntCounterVec,
    stage_latency: HistogramVec,
    deliveries: IntCounterVec,
    probes: IntCounterVec,
    sweeps: IntCounter,
    open_runs: IntGaugeVec,
    overdue_runs: IntGaugeVec,
    open_incidents: IntGaugeVec,
    dead_deliveries: IntGaugeVec,
    sweeper_lag: Gauge,
    stripe_deliveries: IntCounterVec,
    project_incidents: IntGaugeVec,
    since_last_accepted: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers a metric; the names and labels are fixed here, so a failure
/// is a bug caught by the first test.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registered once");
    metric
}

const RUN: &[&str] = &["project", "workflow"];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        Metrics {
            runs_opened: registered(
                r,
                IntCounterVec::new(
                    Opts::new("assay_runs_opened_total", "Runs opened for real customers' events"),
                    RUN,
                ),
            ),
            runs_closed: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "assay_runs_closed_total",
                        "Runs ended, by status: succeeded, failed or superseded",
                    ),
                    &["project", "workflow", "status"],
                ),
            ),
            // From a second to a day: reconciliation takes seconds, a stuck
            // grant hours.
            stage_latency: registered(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "assay_stage_latency_seconds",
                        "Time from a run's opening to reaching a stage (reconciled, access_asserted)",
                    )
                    .buckets(vec![
                        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                        86400.0,
                    ]),
                    &["project", "workflow", "stage"],
                ),
            ),
            deliveries: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "assay_alert_deliveries_total",
                        "Alert delivery attempts by outcome: sent, failed (will retry), dead, skipped",
                    ),
                    &["project", "channel", "outcome"],
                ),
            ),
            probes: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "assay_probes_total",
                        "Probes of the app's access endpoint by outcome: matched, mismatch, error",
                    ),
                    &["project", "outcome"],
                ),
            ),
            sweeps: registered(
                r,
                IntCounter::new("assay_sweeps_total", "Sweeps this replica ran"),
            ),
            open_runs: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "assay_open_runs",
                        "Open runs (the same on every replica: aggregate with max)",
                    ),
                    RUN,
                ),
            ),
            overdue_runs: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "assay_overdue_runs",
                        "Open runs past their deadline, waiting for the sweeper",
                    ),
                    RUN,
                ),
            ),
            open_incidents: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "assay_open_incidents",
                        "Incidents open or acknowledged, not resolved",
                    ),
                    &["project"],
                ),
            ),
            dead_deliveries: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "assay_dead_alert_deliveries",
                        "Alert deliveries given up after the retry horizon",
                    ),
                    &["project"],
                ),
            ),
            sweeper_lag: registered(
                r,
                Gauge::new(
                    "assay_sweeper_lag_seconds",
                    "How long the oldest overdue run has waited for the sweeper",
                ),
            ),
            stripe_deliveries: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "assay_stripe_deliveries_total",
                        "Stripe deliveries this replica took, by outcome: accepted (a customer's event, first delivery) or the refusal's reason",
                    ),
                    &["project", "outcome"],
                ),
            ),
            project_incidents: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "assay_open_project_incidents",
                        "Project incidents open or acknowledged, by kind (silence, refusals, ...)",
                    ),
                    &["project", "kind"],
                ),
            ),
            since_last_accepted: registered(
                r,
                GaugeVec::new(
                    Opts::new(
                        "assay_stripe_last_accepted_age_seconds",
                        "Time since the last Stripe delivery any replica accepted for the project",
                    ),
                    &["project"],
                ),
            ),
            registry,
            scrape: std::sync::Mutex::new(()),
        }
    }

    /// Counts committed transitions.
    pub fn record(&self, transitions: &[Transition]) {
        for t in transitions {
            let run = [t.project.as_str(), t.workflow.as_str()];
            let closed = |status: RunStatus| {
                self.runs_closed
                    .with_label_values(&[t.project.as_str(), t.workflow.as_str(), status.as_str()])
                    .inc();
            };
            let reached = |stage: Stage| {
                self.stage_latency
                    .with_label_values(&[t.project.as_str(), t.workflow.as_str(), stage.as_str()])
                    .observe(t.since_open_secs);
            };
            match (t.outcome, t.stage) {
                (Outcome::Opened, _) => self.runs_opened.with_label_values(&run).inc(),
                (Outcome::Advanced, Stage::Reconciled) => reached(Stage::Reconciled),
                (Outcome::Succeeded, _) => {
                    closed(RunStatus::Succeeded);
                    reached(Stage::AccessAsserted);
                }
                (Outcome::Failed, _) => closed(RunStatus::Failed),
                (Outcome::Superseded, _) => closed(RunStatus::Superseded),
                _ => {}
            }
        }
    }

    pub fn delivery(&self, project: &str, channel: &str, outcome: &str) {
        self.deliveries
            .with_label_values(&[project, channel, outcome])
            .inc();
    }

    pub fn probe(&self, project: &str, outcome: &str) {
        self.probes.with_label_values(&[project, outcome]).inc();
    }

    pub fn stripe_delivery(&self, project: &str, outcome: &str) {
        self.stripe_deliveries
            .with_label_values(&[project, outcome])
            .inc();
    }

    pub fn swept(&self) {
        self.sweeps.inc();
    }

    /// The exposition, with the gauges set from `standing`.
    pub fn render(&self, standing: &Standing) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.open_runs.reset();
        for (project, workflow, n) in &standing.open_runs {
            self.open_runs
                .with_label_values(&[project.as_str(), workflow.as_str()])
                .set(*n);
        }
        self.overdue_runs.reset();
        for (project, workflow, n) in &standing.overdue_runs {
            self.overdue_runs
                .with_label_values(&[project.as_str(), workflow.as_str()])
                .set(*n);
        }
        self.open_incidents.reset();
        for (project, n) in &standing.open_incidents {
            self.open_incidents
                .with_label_values(&[project.as_str()])
                .set(*n);
        }
        self.dead_deliveries.reset();
        for (project, n) in &standing.dead_deliveries {
            self.dead_deliveries
                .with_label_values(&[project.as_str()])
                .set(*n);
        }
        self.sweeper_lag.set(standing.sweeper_lag_secs);
        self.project_incidents.reset();
        for (project, kind, n) in &standing.project_incidents {
            self.project_incidents
                .with_label_values(&[project.as_str(), kind.as_str()])
                .set(*n);
        }
        self.since_last_accepted.reset();
        for (project, secs) in &standing.since_last_accepted {
            self.since_last_accepted
                .with_label_values(&[project.as_str()])
                .set(*secs);
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::{spec, t0};
    use crate::run::{Expectation, Run, Source, StageReport};

    #[test]
    fn transitions_count_once_and_time_the_stages() {
        let metrics = Metrics::new();
        let (mut run, opened) = Run::open(spec(Expectation::Plan("pro".into())), t0());
        metrics.record(&Transition::of(&run, &[opened]));
        let later = t0() + chrono::Duration::seconds(3);
        let out = run
            .report(
                Stage::Reconciled,
                StageReport::default(),
                Source::Sdk,
                later,
            )
            .unwrap();
        metrics.record(&Transition::of(&run, &out.timeline));
        let report = StageReport {
            observed_plan: Some("pro".into()),
            ..Default::default()
        };
        let out = run
            .report(Stage::AccessAsserted, report, Source::Sdk, later)
            .unwrap();
        metrics.record(&Transition::of(&run, &out.timeline));
        let text = metrics.render(&Standing::default());
        assert!(
            text.contains(r#"assay_runs_opened_total{project="default",workflow="billing"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"assay_runs_closed_total{project="default",status="succeeded",workflow="billing"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"assay_stage_latency_seconds_sum{project="default",stage="reconciled",workflow="billing"} 3"#
            ),
            "{text}"
        );
    }

    #[test]
    fn drill_runs_are_not_counted() {
        let (mut run, opened) = Run::open(spec(Expectation::Plan("pro".into())), t0());
        run.drill_id = Some(uuid::Uuid::now_v7());
        assert!(Transition::of(&run, &[opened]).is_empty());
    }
}
