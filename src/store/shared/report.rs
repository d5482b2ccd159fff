//! What a stage report (or a probe that matched) writes: the run, its
//! timeline, the resolution of its incidents when access now matches, and
//! the start of its probing.

use chrono::{DateTime, Utc};

use super::Conn;
use super::incidents::resolve;
use super::tables::{append_timeline, enqueue_probes, incidents_of_run, write_run};
use crate::alert::Outbox;
use crate::metrics::Transition;
use crate::run::{ReportOutcome, Run, Source};
use crate::store::StoreError;

/// Writes back a run after a stage report or a matching probe, with its
/// timeline entries; resolves the run's incidents when access now matches,
/// and starts probing when the run reached its probe stage.
pub(super) async fn save_report(
    conn: &mut Conn,
    outbox: &Outbox,
    run: &Run,
    outcome: &ReportOutcome,
    source: Source,
    now: DateTime<Utc>,
    seen: &mut Vec<Transition>,
) -> Result<(), StoreError> {
    write_run(conn, run, false).await?;
    append_timeline(conn, run, &outcome.timeline, seen).await?;
    if outcome.access_now_matches {
        let resolution = format!(
            "access now matches: {} reported plan `{}`",
            source.as_str(),
            run.observed_plan.as_deref().unwrap_or_default()
        );
        for mut incident in incidents_of_run(conn, run.id).await? {
            resolve(conn, outbox, &mut incident, resolution.clone(), now).await?;
        }
    }
    if outcome.start_probing {
        enqueue_probes(conn, &[run], now).await?;
    }
    Ok(())
}
