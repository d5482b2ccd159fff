//! What SQLite's statements spell their own way, for `shared/` (its module
//! documentation names each item).

use const_format::concatcp;
use sqlx::migrate::Migrator;

use crate::store::fragments::SCOPE_FILTER;
use crate::store::records::RUN_COLUMNS;
use crate::store::rows::Rows;

pub(super) type Db = sqlx::Sqlite;
pub(super) type Conn = sqlx::SqliteConnection;

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// What a read that the transaction writes back adds: nothing, since one
/// writer connection serialises every transaction.
pub(super) const LOCK: &str = "";

/// What lets concurrent claims pass over each other's rows: nothing to pass
/// over with one writer.
pub(super) const SKIP_LOCKED: &str = "";

/// How a transaction serialises on named keys: the one writer already does.
pub(super) const KEY_LOCK: Option<&str> = None;

/// The runs of one scope's subscriptions, but for the batch's own events;
/// SQLite's planner looks each subject up in the index.
pub(super) const SCOPE_BY_SUBSCRIPTION: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE ",
    SCOPE_FILTER,
    " AND subscription_id IN (SELECT value FROM json_each($3))",
    " AND event_id NOT IN (SELECT value FROM json_each($5))"
);

/// The runs of one scope's customers without a subscription, likewise.
pub(super) const SCOPE_BY_CUSTOMER: &str = concatcp!(
    "SELECT ",
    RUN_COLUMNS,
    " FROM runs WHERE ",
    SCOPE_FILTER,
    " AND subscription_id IS NULL AND customer_id IN (SELECT value FROM json_each($3))",
    " AND event_id NOT IN (SELECT value FROM json_each($5))"
);

/// A multi-row statement's rows, as a `VALUES` list.
pub(super) fn push_rows<'a>(query: &mut sqlx::QueryBuilder<Db>, rows: Rows<'a>) {
    rows.values(query);
}
