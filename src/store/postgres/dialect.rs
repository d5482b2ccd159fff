//! What PostgreSQL's statements spell their own way, for `shared/` (its module
//! documentation names each item).

use const_format::concatcp;
use sqlx::migrate::Migrator;

use crate::store::fragments::SCOPE_FILTER;
use crate::store::records::RUN_COLUMNS;
use crate::store::rows::Rows;

pub(super) type Db = sqlx::Postgres;
pub(super) type Conn = sqlx::PgConnection;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// What a read that the transaction writes back adds: the rows stay locked
/// until it commits, so concurrent writers take turns.
pub(super) const LOCK: &str = " FOR UPDATE";

/// What lets concurrent claims pass over each other's rows.
pub(super) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

/// How a transaction serialises on named keys (a subject's runs, a cause's
/// grouped alert): an advisory lock per key, held until it commits.
pub(super) const KEY_LOCK: Option<&str> =
    Some("SELECT pg_advisory_xact_lock(hashtextextended(key, 0))");

/// The runs of one scope's subscriptions, but for the batch's own events
/// (`?` is jsonb's "holds this string"), locked: a LATERAL join looks each
/// subject up in the index by itself, even where the planner of a table
/// without statistics yet (a new database on renewal day) would take an
/// `IN` list for a scan of the project's every run, as if `project = $1`
/// alone were selective.
pub(super) const SCOPE_BY_SUBSCRIPTION: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM jsonb_array_elements_text($3::jsonb) AS subject (key) CROSS JOIN LATERAL (SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE ",
    SCOPE_FILTER,
    " AND subscription_id = subject.key AND NOT ($5::jsonb ? event_id) FOR UPDATE) AS runs"
);

/// The runs of one scope's customers without a subscription, likewise.
pub(super) const SCOPE_BY_CUSTOMER: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM jsonb_array_elements_text($3::jsonb) AS subject (key) CROSS JOIN LATERAL (SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE ",
    SCOPE_FILTER,
    " AND subscription_id IS NULL AND customer_id = subject.key AND NOT ($5::jsonb ? event_id) \
     FOR UPDATE) AS runs"
);

/// A multi-row statement's rows, as one array per column.
pub(super) fn push_rows<'a>(query: &mut sqlx::QueryBuilder<Db>, rows: Rows<'a>) {
    rows.unnest(query);
}
