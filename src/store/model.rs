//! What the store takes and gives beside the domain types: references to
//! runs, stored events, filters, pages and cursors, and the read models of
//! the API, the dashboard and the workers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::alert::Delivery;
use crate::drill::Drill;
use crate::incident::{Incident, IncidentScope, IncidentStatus};
use crate::run::{ProbeAttempt, Run, RunStatus, Stage, TimelineEntry};

/// The most rows one list call returns.
pub const MAX_PAGE: u32 = 200;
pub const DEFAULT_PAGE: u32 = 50;

/// A run named in a URL: its UUID, or the provider event id that keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRef {
    Id(Uuid),
    EventId(String),
    /// Text shaped like a UUID: a run's id, or else an event id that
    /// happens to look like one (an app may open runs under any id).
    IdOrEventId(Uuid, String),
}

impl RunRef {
    pub fn parse(text: &str) -> RunRef {
        match Uuid::parse_str(text) {
            Ok(id) => RunRef::IdOrEventId(id, text.to_owned()),
            Err(_) => RunRef::EventId(text.to_owned()),
        }
    }
}

/// A Stripe event exactly as it arrived, kept once per project and id.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub project: String,
    pub event_id: String,
    pub event_type: String,
    pub livemode: Option<bool>,
    pub created: Option<i64>,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// First delivery: stored, with the run it opened (or merged into).
    Stored { run: Option<Box<Run>> },
    /// Seen before: nothing changed. `run_id` is the run its first
    /// delivery opened (or merged into), if its type opens one.
    Duplicate { run_id: Option<Uuid> },
}

/// Position in a newest-first list: the last row's time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at_ms: i64,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this server handed out")]
pub struct BadCursor;

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at_ms, self.id))
    }

    pub fn decode(text: &str) -> Result<Cursor, BadCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| BadCursor)?;
        let (at, id) = text.split_once(':').ok_or(BadCursor)?;
        Ok(Cursor {
            at_ms: at.parse().map_err(|_| BadCursor)?,
            id: Uuid::parse_str(id).map_err(|_| BadCursor)?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub stage: Option<Stage>,
    pub customer_id: Option<String>,
    /// Runs whose customer id begins with this, as it is written (no
    /// wildcards): the dashboard's search box.
    pub customer_id_prefix: Option<String>,
    /// Drill runs instead of real customers' (the two never mix).
    pub drill: bool,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// Which audit entries to read: a project's, newest first.
#[derive(Debug, Clone)]
pub struct AuditFilter {
    pub project: String,
    /// With the sign-ins, which belong to no project: for a reader who is
    /// admin in every project.
    pub sign_ins: bool,
    pub action: Option<crate::access::AuditAction>,
    /// The operator's name or the key's prefix.
    pub actor: Option<String>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    /// Only runs' or only projects' incidents; both when `None`.
    pub scope: Option<IncidentScope>,
    /// Drill incidents instead of real customers' (the two never mix).
    pub drill: bool,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only says
    /// that there is a next page.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> Cursor) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|last| cursor_of(last).encode()))
            .flatten();
        Page {
            data: rows,
            next_cursor,
        }
    }
}

/// How many probe attempts a run's detail shows.
pub const PROBES_SHOWN: i64 = 100;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub timeline: Vec<TimelineEntry>,
    /// The latest [`PROBES_SHOWN`] probe attempts, oldest first: a failed
    /// run probed for a day has many.
    pub probes: Vec<ProbeAttempt>,
    /// How many probe attempts the run has in all.
    pub probe_count: i64,
    pub incidents: Vec<Incident>,
}

/// What one sweep batch did.
#[derive(Debug, Clone, Default)]
pub struct Swept {
    /// Overdue runs this batch claimed; fewer than the limit means no more.
    pub runs_claimed: usize,
    pub runs_failed: usize,
    pub incidents: Vec<Incident>,
}

/// A drill claimed by one replica's drill runner, for its next step.
#[derive(Debug, Clone)]
pub struct DrillJob {
    pub drill: Drill,
    pub lease_token: String,
    /// After this, another replica may take the step over.
    pub lease_expires_at: DateTime<Utc>,
}

/// What the dashboard's summary strip shows for one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub opened: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub superseded: i64,
    pub open: i64,
    /// From opening to access confirmed, over the succeeded runs.
    pub median_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

impl RunSummary {
    /// Fills the latencies from the succeeded runs' durations.
    pub fn with_latencies(mut self, mut durations_ms: Vec<i64>) -> RunSummary {
        durations_ms.sort_unstable();
        let at = |q: f64| {
            (!durations_ms.is_empty()).then(|| {
                let rank = ((durations_ms.len() as f64) * q).ceil() as usize;
                durations_ms[rank.clamp(1, durations_ms.len()) - 1]
            })
        };
        self.median_ms = at(0.5);
        self.p95_ms = at(0.95);
        self
    }
}

/// A signed-in operator's dashboard session.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSession {
    /// SHA-256 of the cookie's value, hex.
    pub id_hash: String,
    pub operator: String,
    /// For a group member signed in through the identity provider, the
    /// groups that give them roles; `None`: a configured operator.
    pub sso_groups: Option<Vec<String>>,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A sign-in begun at the identity provider, until it comes back. The
/// `state` and the browser's cookie are kept only as hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct SsoSignIn {
    pub state_hash: String,
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to go once signed in: a path on this site.
    pub next: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An incident with its alert deliveries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            at_ms: 1_767_225_600_123,
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        assert_eq!(Cursor::decode("!!"), Err(BadCursor));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("12:nope")),
            Err(BadCursor)
        );
    }

    #[test]
    fn run_refs_tell_uuids_from_event_ids() {
        let id = Uuid::now_v7();
        assert_eq!(
            RunRef::parse(&id.to_string()),
            RunRef::IdOrEventId(id, id.to_string())
        );
        assert_eq!(RunRef::parse("evt_1"), RunRef::EventId("evt_1".into()));
    }
}
