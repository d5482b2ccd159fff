//! The lease every worker's queue is claimed with (see the claim mechanism
//! in the store's module documentation).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::{SKIP_LOCKED, SqlStore};
use crate::store::fragments::claim;
use crate::store::{StoreError, from_ms, to_ms};

/// A queue of background work, claimed with a lease.
#[derive(Debug, Clone, Copy)]
pub(super) enum Queue {
    /// The prober's: runs due for a probe.
    Probes,
    /// The alert sender's: deliveries due to be (re)tried.
    Deliveries,
    /// The drill runner's: drills whose next step is due.
    Drills,
}

static PROBES: LazyLock<String> =
    LazyLock::new(|| claim("probe_queue", "run_id", "due_at", SKIP_LOCKED));
static DELIVERIES: LazyLock<String> =
    LazyLock::new(|| claim("alert_deliveries", "id", "next_attempt_at", SKIP_LOCKED));
static DRILLS: LazyLock<String> =
    LazyLock::new(|| claim("drills", "id", "next_step_at", SKIP_LOCKED));

impl Queue {
    fn statement(self) -> &'static str {
        match self {
            Queue::Probes => PROBES.as_str(),
            Queue::Deliveries => DELIVERIES.as_str(),
            Queue::Drills => DRILLS.as_str(),
        }
    }
}

/// What a claim leased.
pub(super) struct Lease {
    pub token: String,
    pub claimed: u64,
    pub expires_at: DateTime<Utc>,
}

impl SqlStore {
    /// Leases up to `limit` due rows of `queue` with a fresh token.
    pub(super) async fn lease(
        &self,
        queue: Queue,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Lease, StoreError> {
        let token = crate::store::lease_token();
        let until = to_ms(now) + self.lease.as_millis() as i64;
        let claimed = sqlx::query(queue.statement())
            .bind(&token)
            .bind(until)
            .bind(to_ms(now))
            .bind(i64::from(limit))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(Lease {
            token,
            claimed,
            expires_at: from_ms(until),
        })
    }
}
