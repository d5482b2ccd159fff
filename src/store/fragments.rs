//! Pieces of statement text that both backends build their statements from.

/// A run whose Stripe event is stored, so that its `event_created_at` is
/// Stripe's `created` (see `run::settle_order`). `OFFSET 0` keeps PostgreSQL
/// from turning the test into a join: a generic plan would then start from
/// every stored event of the project and read each one's run, for every
/// event opened (quadratic in a burst). As written it stays a check of the
/// few runs the subject's index finds.
pub(crate) const DELIVERED: &str = "EXISTS (SELECT 1 FROM stripe_events e WHERE \
     e.project = runs.project AND e.event_id = runs.event_id LIMIT 1 OFFSET 0)";

/// Which runs of a scope the openings of its subjects settle against
/// (`run::settle_order`): open, or of an event no older than the oldest
/// opening's (`$4`), and delivered. `$1` is the project and `$2` the
/// workflow; each backend adds the subjects, a JSON array in `$3`, and
/// leaves out the batch's own events, a JSON array in `$5`.
pub(crate) const SCOPE_FILTER: &str = const_format::concatcp!(
    "project = $1 AND workflow = $2 AND (status = 'open' OR event_created_at >= $4) AND ",
    DELIVERED
);

/// A claim: lease up to `$4` rows of `table` that are due (`due <= $3`) and
/// that nobody holds, oldest first, with the token `$1` until `$2`; `skip`
/// is the dialect's clause that passes over rows another transaction has
/// locked. Every worker's queue claims through this one statement shape.
pub(crate) fn claim(table: &str, key: &str, due: &str, skip: &str) -> String {
    format!(
        "UPDATE {table} SET lease_token = $1, lease_expires_at = $2 WHERE {key} IN (\
         SELECT {key} FROM {table} WHERE {due} <= $3 \
         AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
         ORDER BY {due} LIMIT $4{skip})"
    )
}

#[cfg(test)]
mod tests {
    use super::claim;

    #[test]
    fn a_claim_leases_due_rows_nobody_holds_oldest_first() {
        assert_eq!(
            claim("probe_queue", "run_id", "due_at", " FOR UPDATE SKIP LOCKED"),
            "UPDATE probe_queue SET lease_token = $1, lease_expires_at = $2 WHERE run_id IN (\
             SELECT run_id FROM probe_queue WHERE due_at <= $3 \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $3) \
             ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED)"
        );
    }
}
