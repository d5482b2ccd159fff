//! Active probes: Assay asks the app itself what access a customer has,
//! instead of taking the app's word for it.
//!
//! This module holds when to probe a run again ([`ProbeSchedule`]); what an
//! attempt does to the run is [`crate::run`]'s. [`settings`] reads a
//! project's probe settings, [`url`] renders the probe's URL, [`client`]
//! makes the HTTP request safely and [`worker`] runs the probes of every
//! replica through the store's claim mechanism.

pub mod client;
pub mod settings;
pub mod url;
pub mod worker;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::run::{Run, RunStatus};

/// A run due for a probe, claimed by one replica.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    pub run: Run,
    /// Attempts made so far.
    pub attempts: u32,
    pub lease_token: String,
    /// After this, another replica may claim the run: a probe that cannot
    /// finish before it is not started.
    pub lease_expires_at: DateTime<Utc>,
}

/// How often to probe, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSchedule {
    pub initial: Duration,
    pub max: Duration,
    /// How long a failed run is still probed (every `max`), so that its
    /// incident resolves itself once the app grants the access.
    pub resolve_window: Duration,
    /// How long before a deadline the last look is due: the probe's
    /// timeout, so that its answer is in before the sweeper judges.
    pub lead: Duration,
}

impl ProbeSchedule {
    /// The wait after `attempts` attempts: doubling from `initial`, capped.
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// When to probe `run` next after `attempts` attempts, or `None` when
    /// probing is over: access matched (`matched`), the run ended otherwise
    /// than failing, or it failed longer than `resolve_window` ago.
    pub fn next_due(
        &self,
        run: &Run,
        attempts: u32,
        matched: bool,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let later = |wait: Duration| Some(now + chrono::Duration::from_std(wait).ok()?);
        match run.status {
            _ if matched => None,
            RunStatus::Open => {
                let next = later(self.after(attempts))?;
                // One last look before the next deadline (the one the
                // sweeper will judge), early enough to be answered by then,
                // is worth more than none; once it is done, keep looking
                // until the sweeper decides.
                let deadline = run.deadline_at.unwrap_or(run.access_due_at);
                let last_look = chrono::Duration::from_std(self.lead)
                    .ok()
                    .and_then(|lead| deadline.checked_sub_signed(lead))
                    .unwrap_or(deadline);
                Some(if now < last_look {
                    next.min(last_look)
                } else {
                    next
                })
            }
            RunStatus::Failed => {
                let failed_at = run.closed_at.unwrap_or(now);
                let until = failed_at + chrono::Duration::from_std(self.resolve_window).ok()?;
                later(self.max).filter(|next| *next <= until)
            }
            RunStatus::Succeeded | RunStatus::Superseded => None,
        }
    }
}

impl fmt::Display for ProbeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} doubling to {}, and for {} after a run failed",
            crate::time::written(self.initial),
            crate::time::written(self.max),
            crate::time::written(self.resolve_window)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Expectation;
    use crate::run::probe_tests::attempt;
    use crate::run::tests::{spec, t0};

    fn schedule() -> ProbeSchedule {
        ProbeSchedule {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(600),
            resolve_window: Duration::from_secs(3600),
            lead: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_wait_doubles_and_is_capped() {
        let s = ProbeSchedule {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
            ..schedule()
        };
        let secs: Vec<u64> = (1..=6).map(|n| s.after(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30]);
        assert_eq!(s.after(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn an_open_run_gets_a_last_look_before_its_deadline_and_more_until_swept() {
        let s = schedule();
        let run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        // The deadline the sweeper judges next is `reconciled`'s (2 min):
        // the last look comes before it, not before the access deadline,
        // and a probe's timeout before it, so its answer is in by then.
        let late = t0() + chrono::Duration::seconds(110);
        let last_look = run.reconciled_due_at - chrono::Duration::seconds(5);
        assert_eq!(s.next_due(&run, 1, false, late), Some(last_look));
        // The last look done, the next comes after the deadline.
        assert_eq!(
            s.next_due(&run, 1, false, last_look),
            Some(last_look + chrono::Duration::seconds(60))
        );
        let past = run.reconciled_due_at + chrono::Duration::seconds(1);
        assert_eq!(
            s.next_due(&run, 1, false, past),
            Some(past + chrono::Duration::seconds(60))
        );
        assert_eq!(
            s.next_due(&run, 1, true, late),
            None,
            "a match ends probing"
        );
    }

    #[test]
    fn a_failed_run_is_probed_within_the_resolve_window_only() {
        let s = schedule();
        let mut run = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        let failed_at = run.access_due_at;
        run.expire(failed_at).unwrap();
        assert_eq!(
            s.next_due(&run, 9, false, failed_at),
            Some(failed_at + chrono::Duration::seconds(600))
        );
        let near_end = failed_at + chrono::Duration::seconds(3500);
        assert_eq!(s.next_due(&run, 9, false, near_end), None);

        let mut done = Run::open(spec(Expectation::Plan("pro".into())), t0()).0;
        assert!(matches!(
            done.observe(&attempt(Some("pro"), None), t0()),
            crate::run::Observation::Asserted(_)
        ));
        assert_eq!(
            s.next_due(&done, 1, false, t0()),
            None,
            "a succeeded run is done"
        );
    }
}
