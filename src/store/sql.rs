//! The SQL both backends share, written once.
//!
//! SQLite and PostgreSQL run the same statements here: every column is text,
//! a 64-bit integer or a boolean, times are unix milliseconds, and `$n`
//! placeholders work in both. What differs is passed in as literals:
//! `lock` is appended to reads that a transaction will write back
//! (`FOR UPDATE` on PostgreSQL; nothing on SQLite, where one writer
//! connection serialises every transaction), `skip_locked` lets concurrent
//! replicas claim disjoint rows, `advisory_locks` serialises the opening of
//! runs about one subscription and the grouping of alerts about one cause
//! (empty on SQLite), `rows` is how a multi-row statement binds its rows
//! (see `Rows`), and `scope_runs` reads the runs of many subjects in one
//! statement, in the form each planner looks every subject up by index.
//!
//! A macro rather than a function generic over `sqlx::Database`: the generic
//! form needs a dozen higher-ranked bounds on every item and fights `Send`
//! futures; the macro body is plain code over concrete types.
//!
//! # The claim mechanism
//!
//! Background work is claimed with a lease: one statement marks up to N due
//! rows with a fresh `lease_token` and a `lease_expires_at`, skipping rows
//! another replica has locked or leased. The worker then settles its rows in
//! a transaction that reads them back *by token* (so a row whose lease was
//! taken over is not settled twice) and releases the lease. A replica that
//! dies between the two steps holds its rows only until the lease expires;
//! then any replica claims them again. The prober claims its
//! `probe_queue`, the alert sender `alert_deliveries` and the drill runner
//! `drills`, all through `claim_sql!` and `lease`. The sweeper needs no
//! lease: it waits on nothing between claiming and settling, so it does both
//! in one transaction, its rows locked (skipping those another replica
//! has), and a replica that dies mid-sweep leaves nothing held.
//! Exactly-once outcomes do not rest on the lease alone: the unique
//! `(run_id, kind)` key refuses a second incident even if an expired lease
//! is settled late, and a probe is recorded only by its lease's holder.

use std::borrow::Cow;

/// A claim: lease up to `$4` rows of `$table` that are due (`$due <= $3`)
/// and that nobody holds, oldest first. Every worker's queue claims through
/// this one statement shape.
macro_rules! claim_sql {
    ($table:literal, $key:literal, $due:literal, $skip:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET lease_token = $1, lease_expires_at = $2 WHERE ",
            $key,
            " IN (",
            "SELECT ",
            $key,
            " FROM ",
            $table,
            " WHERE ",
            $due,
            " <= $3 ",
            "AND (lease_expires_at IS NULL OR lease_expires_at <= $3) ",
            "ORDER BY ",
            $due,
            " LIMIT $4",
            $skip,
            ")"
        )
    };
}
pub(crate) use claim_sql;

/// The sweeper's claim: up to `$2` overdue runs (`deadline_at <= $1`),
/// oldest first, read in the transaction that settles them, through the
/// `runs_by_deadline` index, so its cost follows the overdue runs, not all
/// runs. One definition, so that a test can read the plan of exactly this
/// statement.
macro_rules! claim_overdue_sql {
    ($skip:literal) => {
        concat!(
            "SELECT ",
            $crate::store::rows::run_columns!(),
            " FROM runs WHERE deadline_at <= $1 ",
            "ORDER BY deadline_at LIMIT $2",
            $skip
        )
    };
}
pub(crate) use claim_overdue_sql;

/// A run whose Stripe event is stored, so that its `event_created_at` is
/// Stripe's `created` (see `settle_order`). `OFFSET 0` keeps PostgreSQL
/// from turning the test into a join: a generic plan would then start from
/// every stored event of the project and read each one's run, for every
/// event opened (quadratic in a burst). As written it stays a check of the
/// few runs the subject's index finds.
macro_rules! delivered_sql {
    () => {
        "EXISTS (SELECT 1 FROM stripe_events e WHERE e.project = runs.project AND e.event_id = runs.event_id \
         LIMIT 1 OFFSET 0)"
    };
}
pub(crate) use delivered_sql;

/// Which runs of a scope the openings of its subjects settle against
/// (`run::settle_order`): open, or of an event no older than the oldest
/// opening's ($4), and delivered. `$1` is the project and `$2` the workflow;
/// each backend's `scope_runs!` adds the subjects, a JSON array in `$3`.
macro_rules! scope_filter {
    () => {
        concat!(
            "project = $1 AND workflow = $2 AND (status = 'open' OR event_created_at >= $4) AND ",
            $crate::store::sql::delivered_sql!()
        )
    };
}
pub(crate) use scope_filter;

/// The alert sender's claim: deliveries due to be (re)tried.
macro_rules! claim_deliveries_sql {
    ($skip:literal) => {
        $crate::store::sql::claim_sql!("alert_deliveries", "id", "next_attempt_at", $skip)
    };
}
pub(crate) use claim_deliveries_sql;

/// The prober's claim: runs due for a probe.
macro_rules! claim_probes_sql {
    ($skip:literal) => {
        $crate::store::sql::claim_sql!("probe_queue", "run_id", "due_at", $skip)
    };
}
pub(crate) use claim_probes_sql;

/// The drill runner's claim: drills whose next step is due.
macro_rules! claim_drills_sql {
    ($skip:literal) => {
        $crate::store::sql::claim_sql!("drills", "id", "next_step_at", $skip)
    };
}
pub(crate) use claim_drills_sql;

/// Rows per multi-row statement: under SQLite's 32,766 bound variables
/// at the widest row (a run's 26 columns), and few enough statements that a
/// sweep of 500 runs writes each table in one.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The fields of a run a transition may change: what writing a run back
/// updates when it exists.
pub(crate) const RUN_UPDATABLE: [&str; 16] = [
    "customer_id",
    "subscription_id",
    "expected_plan",
    "expected_plan_reason",
    "observed_plan",
    "deploy_sha",
    "livemode",
    "stage",
    "status",
    "deadline_at",
    "closed_at",
    "expected_features",
    "keep_access_until",
    "observed_features",
    "event_created_at",
    "superseded_by",
];

/// [`run_upsert`] of every field in [`RUN_UPDATABLE`], built once: most
/// run writes (stage reports, merges on ingest) write them all.
pub(crate) static RUN_UPSERT_ALL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| run_upsert(RUN_UPDATABLE));

/// The end of a run upsert: when the run exists, `columns` (of
/// [`RUN_UPDATABLE`]) are written back from the row given.
pub(crate) fn run_upsert<'c>(columns: impl IntoIterator<Item = &'c str>) -> String {
    let set: Vec<String> = columns
        .into_iter()
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    if set.is_empty() {
        " ON CONFLICT (id) DO NOTHING".to_owned()
    } else {
        format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(", "))
    }
}

/// The rows of a multi-row statement, column by column, for each backend to
/// bind its own way (`sql_store!`'s `rows`): SQLite as a `VALUES` list,
/// PostgreSQL as one array per column under `UNNEST`. A `VALUES` list is a
/// new statement text for every number of rows, which PostgreSQL parses and
/// plans again, and binds a value per field: 13,000 for a sweep's 500 runs,
/// whose parsing and binding took 9 to 14 ms on top of the insert's 18 to
/// 43. Under `UNNEST` the text is one per table, prepared once per
/// connection, and binds one array per column.
#[derive(Default)]
pub(crate) struct Rows<'a> {
    columns: Vec<Column<'a>>,
    len: usize,
}

/// One column's values, a row each.
enum Column<'a> {
    Text(Vec<Option<Cow<'a, str>>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

/// One row being written into [`Rows`], its fields in column order.
pub(crate) struct Row<'r, 'a> {
    rows: &'r mut Rows<'a>,
    column: usize,
}

impl<'a> Rows<'a> {
    /// The rows of `items`, each written by `row`, which must write the same
    /// columns, of the same types, for every item.
    pub(crate) fn of<T>(
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Row<'_, 'a>, T),
    ) -> Rows<'a> {
        let mut rows = Rows::default();
        for item in items {
            let mut writer = Row {
                rows: &mut rows,
                column: 0,
            };
            row(&mut writer, item);
            let written = writer.column;
            assert_eq!(
                written,
                rows.columns.len(),
                "a row wrote fewer columns than the first"
            );
            rows.len += 1;
        }
        rows
    }

    /// Appends the rows as a `VALUES` list (SQLite).
    pub(crate) fn values<DB: sqlx::Database>(self, query: &mut sqlx::QueryBuilder<DB>)
    where
        Option<Cow<'a, str>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Option<bool>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        enum Values<'a> {
            Text(std::vec::IntoIter<Option<Cow<'a, str>>>),
            Int(std::vec::IntoIter<Option<i64>>),
            Bool(std::vec::IntoIter<Option<bool>>),
        }
        let mut columns: Vec<Values<'a>> = self
            .columns
            .into_iter()
            .map(|column| match column {
                Column::Text(values) => Values::Text(values.into_iter()),
                Column::Int(values) => Values::Int(values.into_iter()),
                Column::Bool(values) => Values::Bool(values.into_iter()),
            })
            .collect();
        query.push_values(0..self.len, |mut row, _| {
            // Every column holds `len` values: `of` checks each row.
            for column in &mut columns {
                match column {
                    Values::Text(values) => row.push_bind(values.next().flatten()),
                    Values::Int(values) => row.push_bind(values.next().flatten()),
                    Values::Bool(values) => row.push_bind(values.next().flatten()),
                };
            }
        });
    }

    /// Appends the rows as `SELECT * FROM UNNEST(...)`, an array per column
    /// (PostgreSQL).
    pub(crate) fn unnest<DB: sqlx::Database>(self, query: &mut sqlx::QueryBuilder<DB>)
    where
        Vec<Option<Cow<'a, str>>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Vec<Option<i64>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Vec<Option<bool>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        query.push("SELECT * FROM UNNEST(");
        let mut arrays = query.separated(", ");
        for column in self.columns {
            match column {
                Column::Text(values) => arrays.push_bind(values),
                Column::Int(values) => arrays.push_bind(values),
                Column::Bool(values) => arrays.push_bind(values),
            };
        }
        query.push(")");
    }

    /// The indexes of the columns in which any row differs from the same
    /// row of `before` (the same items, written by the same function,
    /// before they changed).
    pub(crate) fn changed(&self, before: &Rows<'_>) -> Vec<usize> {
        assert_eq!(
            self.len, before.len,
            "the rows before a change are the same rows"
        );
        let same = |a: &Column<'_>, b: &Column<'_>| match (a, b) {
            (Column::Text(a), Column::Text(b)) => a == b,
            (Column::Int(a), Column::Int(b)) => a == b,
            (Column::Bool(a), Column::Bool(b)) => a == b,
            _ => false,
        };
        (0..self.columns.len())
            .filter(|&i| {
                before
                    .columns
                    .get(i)
                    .is_none_or(|b| !same(&self.columns[i], b))
            })
            .collect()
    }
}

impl<'a> Row<'_, 'a> {
    fn push(&mut self, value: Value<'a>) -> &mut Self {
        let i = self.column;
        self.column += 1;
        let columns = &mut self.rows.columns;
        if i == columns.len() {
            // The first row sets the columns; the others fill them.
            assert_eq!(self.rows.len, 0, "a row wrote more columns than the first");
            columns.push(match value {
                Value::Text(_) => Column::Text(Vec::new()),
                Value::Int(_) => Column::Int(Vec::new()),
                Value::Bool(_) => Column::Bool(Vec::new()),
            });
        }
        match (&mut columns[i], value) {
            (Column::Text(values), Value::Text(value)) => values.push(value),
            (Column::Int(values), Value::Int(value)) => values.push(value),
            (Column::Bool(values), Value::Bool(value)) => values.push(value),
            _ => panic!("column {i} changed its type between rows"),
        }
        self
    }

    pub(crate) fn text(&mut self, value: impl Into<Cow<'a, str>>) -> &mut Self {
        self.push(Value::Text(Some(value.into())))
    }

    pub(crate) fn opt_text(&mut self, value: Option<impl Into<Cow<'a, str>>>) -> &mut Self {
        self.push(Value::Text(value.map(Into::into)))
    }

    pub(crate) fn int(&mut self, value: i64) -> &mut Self {
        self.push(Value::Int(Some(value)))
    }

    pub(crate) fn opt_int(&mut self, value: Option<i64>) -> &mut Self {
        self.push(Value::Int(value))
    }

    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.push(Value::Bool(Some(value)))
    }

    pub(crate) fn opt_bool(&mut self, value: Option<bool>) -> &mut Self {
        self.push(Value::Bool(value))
    }
}

/// One field on its way into a [`Column`].
enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

macro_rules! sql_store {
    (
        $store:ident,
        $db:ty,
        $conn:ty,
        lock = $lock:literal,
        skip_locked = $skip:literal,
        advisory_locks = $advisory_locks:literal,
        scope_runs = [$scope_by_subscription:expr, $scope_by_customer:expr],
        rows = $rows:ident
    ) => {
        use $crate::incident::{Incident, NewIncident};
        use $crate::run::{Run, RunSpec, Source, Stage, StageReport, Subject, TimelineEntry};
        use $crate::store::sql::{
            ROWS_PER_STATEMENT, RUN_UPDATABLE, RUN_UPSERT_ALL, Row, Rows, claim_deliveries_sql, claim_drills_sql, claim_overdue_sql,
            claim_probes_sql, run_upsert,
        };
        use $crate::store::rows::{
            DeliveryAttemptRow, DeliveryRow, IncidentRow, ProbeAttemptRow, ProbeJobRow, RunRow,
            DrillRow, TimelineRow, convert, delivery_columns, drill_columns, incident_columns, probe_columns,
            run_columns,
        };
        use $crate::alert::{Delivery, DeliveryJob, DeliveryOutcome, DeliveryStatus, NewDelivery, Outbox};
        use $crate::probe::ProbeJob;
        use $crate::run::{ProbeAttempt, ProbeStart};
        use $crate::store::{
            Cursor, IncidentDetail, IncidentFilter, Ingested, Page, RunDetail, RunFilter, RunRef, Store,
            StoreError, StoredEvent, Swept, from_ms, to_ms,
        };

        /// Reads one run of `project`; `locked` when the transaction will
        /// write it back.
        async fn fetch_run(
            conn: &mut $conn,
            project: &str,
            run: &RunRef,
            locked: bool,
        ) -> Result<Option<Run>, StoreError> {
            let (by_id, by_event) = if locked {
                (
                    concat!("SELECT ", run_columns!(), " FROM runs WHERE project = $1 AND id = $2", $lock),
                    concat!("SELECT ", run_columns!(), " FROM runs WHERE project = $1 AND event_id = $2", $lock),
                )
            } else {
                (
                    concat!("SELECT ", run_columns!(), " FROM runs WHERE project = $1 AND id = $2"),
                    concat!("SELECT ", run_columns!(), " FROM runs WHERE project = $1 AND event_id = $2"),
                )
            };
            let (sql, key) = match run {
                RunRef::Id(id) => (by_id, id.to_string()),
                RunRef::EventId(event_id) => (by_event, event_id.clone()),
            };
            let row: Option<RunRow> = sqlx::query_as(sql)
                .bind(project)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(Run::try_from).transpose()
        }

        /// Inserts a new run, or writes back every field a transition may
        /// change. Returns false when `insert_only` and the event already had
        /// a run (another request opened it first).
        async fn write_run(conn: &mut $conn, run: &Run, insert_only: bool) -> Result<bool, StoreError> {
            let mut query = sqlx::QueryBuilder::<$db>::new(concat!("INSERT INTO runs (", run_columns!(), ") "));
            push_rows(&mut query, Rows::of([run], run_row));
            if insert_only {
                query.push(" ON CONFLICT (project, workflow, event_id) DO NOTHING");
            } else {
                query.push(RUN_UPSERT_ALL.as_str());
            }
            let done = query.build().execute(&mut *conn).await?;
            Ok(done.rows_affected() == 1)
        }

        /// Writes back many runs, a few statements for all of them: every
        /// field a transition may change or, given the same runs as they
        /// were read (`before`, in the same order), only the fields that
        /// changed in any of them. SQLite rewrites every index on a column
        /// an update assigns, changed or not: a sweep's failed runs
        /// rewrote their entries in the customer and subscription indexes,
        /// a scattered page each. In a copy of the schema, failing 1,000
        /// of a million runs wrote about 1,900 pages to the WAL, against 77
        /// when only what changed was written back.
        async fn write_runs(conn: &mut $conn, runs: &[&Run], before: Option<&[Run]>) -> Result<(), StoreError> {
            let names: Vec<&str> = run_columns!().split(',').map(str::trim).collect();
            for (i, chunk) in runs.chunks(ROWS_PER_STATEMENT).enumerate() {
                let rows = Rows::of(chunk.iter().copied(), run_row);
                let upsert = match before {
                    Some(before) => {
                        let start = i * ROWS_PER_STATEMENT;
                        let read = Rows::of(&before[start..start + chunk.len()], run_row);
                        let changed: Vec<&str> = rows.changed(&read).into_iter().map(|c| names[c]).collect();
                        std::borrow::Cow::Owned(run_upsert(RUN_UPDATABLE.into_iter().filter(|c| changed.contains(c))))
                    }
                    None => std::borrow::Cow::Borrowed(RUN_UPSERT_ALL.as_str()),
                };
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!("INSERT INTO runs (", run_columns!(), ") "));
                push_rows(&mut query, rows);
                query.push(upsert);
                query.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// `rows` in this backend's form (see `Rows`).
        fn push_rows(query: &mut sqlx::QueryBuilder<$db>, rows: Rows<'_>) {
            rows.$rows(query);
        }

        /// One run's row, in `run_columns!` order.
        fn run_row<'a>(row: &mut Row<'_, 'a>, run: &'a Run) {
            row.text(run.id.to_string())
                .text(&run.project)
                .text(&run.workflow)
                .text(&run.event_id)
                .text(&run.event_type)
                .opt_text(run.customer_id.as_deref())
                .opt_text(run.subscription_id.as_deref())
                .opt_text(run.expected_plan.as_deref())
                .opt_text(run.expected_plan_reason.as_deref())
                .opt_text(run.observed_plan.as_deref())
                .opt_text(run.deploy_sha.as_deref())
                .opt_bool(run.livemode)
                .text(run.stage.as_str())
                .text(run.status.as_str())
                .int(to_ms(run.opened_at))
                .int(to_ms(run.reconciled_due_at))
                .int(to_ms(run.access_due_at))
                .opt_int(run.deadline_at.map(to_ms))
                .opt_int(run.closed_at.map(to_ms))
                .opt_text(run.expected_features.as_ref().map(|f| serde_json::json!(f).to_string()))
                .opt_int(run.keep_access_until.map(to_ms))
                .opt_text(run.observed_features.as_ref().map(|f| serde_json::json!(f).to_string()))
                .int(to_ms(run.event_created_at))
                .opt_text(run.superseded_by.map(|id| id.to_string()))
                .opt_text(run.probe_start.map(|p| p.as_str()))
                .opt_text(run.drill_id.map(|id| id.to_string()));
        }

        /// Appends the run's new timeline entries, and notes the transitions
        /// they make in `seen`, for the metrics once the transaction commits.
        async fn append_timeline(
            conn: &mut $conn,
            run: &Run,
            entries: &[TimelineEntry],
            seen: &mut Vec<$crate::metrics::Transition>,
        ) -> Result<(), StoreError> {
            let entries: Vec<_> = entries.iter().map(|e| (run, e)).collect();
            append_timelines(conn, &entries, seen).await
        }

        /// Appends entries of many runs, a few statements for all of them.
        async fn append_timelines(
            conn: &mut $conn,
            entries: &[(&Run, &TimelineEntry)],
            seen: &mut Vec<$crate::metrics::Transition>,
        ) -> Result<(), StoreError> {
            for (run, entry) in entries {
                seen.extend($crate::metrics::Transition::of(run, std::slice::from_ref(*entry)));
            }
            for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO run_timeline (run_id, at, source, stage, outcome, evidence) ",
                );
                let rows = Rows::of(chunk, |row, (run, entry)| {
                    row.text(run.id.to_string())
                        .int(to_ms(entry.at))
                        .text(entry.source.as_str())
                        .text(entry.stage.as_str())
                        .text(entry.outcome.as_str())
                        .text(entry.evidence.to_string());
                });
                push_rows(&mut query, rows);
                query.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Inserts each incident unless its run already has one of its kind;
        /// returns the ids of those inserted.
        async fn insert_incidents(
            conn: &mut $conn,
            new: &[NewIncident],
        ) -> Result<std::collections::HashSet<String>, StoreError> {
            let mut inserted = std::collections::HashSet::new();
            for chunk in new.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!("INSERT INTO incidents (", incident_columns!(), ") "));
                let evidence = chunk
                    .iter()
                    .map(|new| serde_json::to_string(&new.evidence))
                    .collect::<Result<Vec<String>, _>>()
                    .map_err(|e| StoreError::Corrupt(format!("incident evidence: {e}")))?;
                let rows = Rows::of(chunk.iter().zip(evidence), |row, (new, evidence)| {
                    row.text(new.id.to_string())
                        .text(new.run_id.to_string())
                        .text(&new.project)
                        .text(&new.workflow)
                        .text(new.kind.as_str())
                        .text(&new.title)
                        .text("open")
                        .text(evidence)
                        .int(to_ms(new.opened_at))
                        .opt_int(None)
                        .opt_int(None)
                        .opt_text(None::<&str>)
                        .bool(new.drill);
                });
                push_rows(&mut query, rows);
                query.push(" ON CONFLICT (run_id, kind) DO NOTHING RETURNING id");
                let ids: Vec<String> = query.build_query_scalar().fetch_all(&mut *conn).await?;
                inserted.extend(ids);
            }
            Ok(inserted)
        }

        async fn save_incident(conn: &mut $conn, incident: &Incident) -> Result<(), StoreError> {
            sqlx::query(
                "UPDATE incidents SET status = $2, acknowledged_at = $3, resolved_at = $4, \
                 resolution = $5 WHERE id = $1",
            )
            .bind(incident.id.to_string())
            .bind(incident.status.as_str())
            .bind(incident.acknowledged_at.map(to_ms))
            .bind(incident.resolved_at.map(to_ms))
            .bind(&incident.resolution)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn fetch_incident(
            conn: &mut $conn,
            project: &str,
            id: uuid::Uuid,
            locked: bool,
        ) -> Result<Incident, StoreError> {
            let sql = if locked {
                concat!("SELECT ", incident_columns!(), " FROM incidents WHERE project = $1 AND id = $2", $lock)
            } else {
                concat!("SELECT ", incident_columns!(), " FROM incidents WHERE project = $1 AND id = $2")
            };
            let row: Option<IncidentRow> = sqlx::query_as(sql)
                .bind(project)
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
            row.ok_or(StoreError::NotFound("incident"))?.try_into()
        }

        async fn incidents_of_run(conn: &mut $conn, run_id: uuid::Uuid) -> Result<Vec<Incident>, StoreError> {
            let rows: Vec<IncidentRow> = sqlx::query_as(concat!(
                "SELECT ",
                incident_columns!(),
                " FROM incidents WHERE run_id = $1 ORDER BY opened_at, id"
            ))
            .bind(run_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            convert(rows)
        }

        /// Puts the run on the prober's queue, due at once.
        async fn enqueue_probe(
            conn: &mut $conn,
            run: &Run,
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            enqueue_probes(conn, &[run], now).await
        }

        /// Queues a probe of each run, unless one is queued already.
        async fn enqueue_probes(
            conn: &mut $conn,
            runs: &[&Run],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            for chunk in runs.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new("INSERT INTO probe_queue (run_id, due_at) ");
                push_rows(&mut query, Rows::of(chunk, |row, run| {
                    row.text(run.id.to_string()).int(to_ms(now));
                }));
                query.push(" ON CONFLICT (run_id) DO NOTHING");
                query.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        async fn insert_probe_attempt(
            conn: &mut $conn,
            run_id: uuid::Uuid,
            attempt: &ProbeAttempt,
            matched: bool,
        ) -> Result<(), StoreError> {
            sqlx::query(concat!(
                "INSERT INTO probe_attempts (run_id, ",
                probe_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(run_id.to_string())
            .bind(to_ms(attempt.at))
            .bind(attempt.duration_ms)
            .bind(&attempt.url)
            .bind(attempt.status_code.map(i64::from))
            .bind(&attempt.observed_plan)
            .bind(attempt.observed_features.as_ref().map(|f| serde_json::json!(f).to_string()))
            .bind(&attempt.deploy_sha)
            .bind(&attempt.error)
            .bind(matched)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// The run's latest `limit` probe attempts, oldest first.
        async fn probes_of_run(
            conn: &mut $conn,
            run_id: uuid::Uuid,
            limit: i64,
        ) -> Result<Vec<ProbeAttempt>, StoreError> {
            let rows: Vec<ProbeAttemptRow> = sqlx::query_as(concat!(
                "SELECT ",
                probe_columns!(),
                " FROM probe_attempts WHERE run_id = $1 ORDER BY seq DESC LIMIT $2"
            ))
            .bind(run_id.to_string())
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
            let mut probes: Vec<ProbeAttempt> = convert(rows)?;
            probes.reverse();
            Ok(probes)
        }

        /// The latest probe attempt of each of `runs` that has one, in one
        /// statement: the sweeper needs it for every run it fails, and one
        /// read per run was most of a sweep's time.
        async fn last_probes(
            conn: &mut $conn,
            runs: &[Run],
        ) -> Result<std::collections::HashMap<uuid::Uuid, ProbeAttempt>, StoreError> {
            let mut last = std::collections::HashMap::new();
            for chunk in runs.chunks(500) {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT run_id, ",
                    probe_columns!(),
                    " FROM probe_attempts p WHERE p.seq = ",
                    "(SELECT MAX(seq) FROM probe_attempts WHERE run_id = p.run_id) AND p.run_id IN ("
                ));
                let mut ids = query.separated(", ");
                for run in chunk {
                    ids.push_bind(run.id.to_string());
                }
                query.push(")");
                let rows: Vec<$crate::store::rows::LastProbeRow> =
                    query.build_query_as().fetch_all(&mut *conn).await?;
                for row in rows {
                    let (run_id, probe) = row.into_parts()?;
                    last.insert(run_id, probe);
                }
            }
            Ok(last)
        }

        /// The cause whose waiting grouped alert `delivery` would join: new
        /// incidents and reminders join, a resolution is its own message.
        fn joins_a_group(delivery: &NewDelivery) -> Option<&str> {
            match delivery.event {
                $crate::alert::AlertEvent::Opened | $crate::alert::AlertEvent::Reminder => delivery.cause.as_deref(),
                _ => None,
            }
        }

        /// Writes deliveries to the outbox, and notes when their incidents
        /// were last alerted about (for reminders).
        async fn queue_deliveries(
            conn: &mut $conn,
            deliveries: &[NewDelivery],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), StoreError> {
            // Two transactions that alert about one cause at once (two
            // batches of a sweep, two replicas' sweeps) would each find no
            // grouped alert waiting and each make one. With the cause
            // locked, the second waits for the first to commit, then joins
            // its alert.
            let groups = deliveries
                .iter()
                .filter_map(|d| {
                    let cause = joins_a_group(d)?;
                    Some(format!("alert/{}/{}/{}/{cause}", d.project, d.channel, d.event.as_str()))
                })
                .collect();
            lock_keys(conn, groups).await?;
            for delivery in deliveries {
                // An incident whose cause already has a grouped alert
                // waiting (not tried, not claimed) joins it. Locked, so that
                // no sender claims it between this read and the insert.
                let waiting: Option<String> = match joins_a_group(delivery) {
                    Some(cause) => {
                        sqlx::query_scalar(concat!(
                            "SELECT id FROM alert_deliveries WHERE project = $1 AND channel = $2 AND event = $3 ",
                            "AND cause = $4 AND status = 'pending' AND grouped AND attempts = 0 ",
                            "AND lease_token IS NULL ORDER BY created_at LIMIT 1",
                            $lock
                        ))
                        .bind(&delivery.project)
                        .bind(&delivery.channel)
                        .bind(delivery.event.as_str())
                        .bind(cause)
                        .fetch_optional(&mut *conn)
                        .await?
                    }
                    _ => None,
                };
                let (delivery_id, first_position) = match waiting {
                    Some(id) => {
                        let next: i64 = sqlx::query_scalar(
                            "SELECT COALESCE(MAX(position) + 1, 0) FROM alert_delivery_incidents WHERE delivery_id = $1",
                        )
                        .bind(&id)
                        .fetch_one(&mut *conn)
                        .await?;
                        (id, next)
                    }
                    None => {
                        let settle = if delivery.grouped {
                            $crate::alert::GROUP_SETTLE.as_millis() as i64
                        } else {
                            0
                        };
                        sqlx::query(
                            "INSERT INTO alert_deliveries (id, project, channel, event, status, attempts, created_at, \
                             next_attempt_at, cause, grouped) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, $8)",
                        )
                        .bind(delivery.id.to_string())
                        .bind(&delivery.project)
                        .bind(&delivery.channel)
                        .bind(delivery.event.as_str())
                        .bind(to_ms(now))
                        .bind(to_ms(now) + settle)
                        .bind(&delivery.cause)
                        .bind(delivery.grouped)
                        .execute(&mut *conn)
                        .await?;
                        (delivery.id.to_string(), 0)
                    }
                };
                // Many rows per statement: a grouped alert about 500
                // incidents is a few statements, not 1,000, while the sweep
                // holds the writer.
                let ids: Vec<(usize, &uuid::Uuid)> = delivery.incident_ids.iter().enumerate().collect();
                for chunk in ids.chunks(300) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO alert_delivery_incidents (delivery_id, incident_id, position) ",
                    );
                    let rows = Rows::of(chunk, |row, (position, incident_id)| {
                        row.text(delivery_id.as_str())
                            .text(incident_id.to_string())
                            .int(first_position + *position as i64);
                    });
                    push_rows(&mut insert, rows);
                    insert.build().execute(&mut *conn).await?;
                }
                sqlx::query(
                    "UPDATE incidents SET last_alerted_at = $2 WHERE id IN \
                     (SELECT incident_id FROM alert_delivery_incidents WHERE delivery_id = $1)",
                )
                .bind(&delivery_id)
                .bind(to_ms(now))
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// A delivery's attempts, oldest first.
        async fn attempts_of_delivery(
            conn: &mut $conn,
            delivery: &mut Delivery,
        ) -> Result<(), StoreError> {
            let rows: Vec<DeliveryAttemptRow> = sqlx::query_as(
                "SELECT at, duration_ms, status_code, error FROM alert_attempts WHERE delivery_id = $1 ORDER BY seq",
            )
            .bind(delivery.id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            delivery.attempts = convert(rows)?;
            Ok(())
        }

        /// The deliveries about an incident, with their attempts.
        async fn deliveries_of_incident(
            conn: &mut $conn,
            incident_id: uuid::Uuid,
        ) -> Result<Vec<Delivery>, StoreError> {
            let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM alert_deliveries JOIN alert_delivery_incidents AS mine ",
                "ON mine.delivery_id = alert_deliveries.id WHERE mine.incident_id = $1 ",
                "ORDER BY alert_deliveries.created_at, alert_deliveries.id"
            ))
            .bind(incident_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            let mut deliveries: Vec<Delivery> = convert(rows)?;
            for delivery in &mut deliveries {
                attempts_of_delivery(conn, delivery).await?;
            }
            Ok(deliveries)
        }

        /// Writes back a run after a stage report or a matching probe, with
        /// its timeline entries; resolves the run's incidents when access now
        /// matches, and starts probing when the run reached its probe stage.
        async fn save_report(
            conn: &mut $conn,
            outbox: &Outbox,
            run: &Run,
            outcome: &$crate::run::ReportOutcome,
            source: Source,
            now: chrono::DateTime<chrono::Utc>,
            seen: &mut Vec<$crate::metrics::Transition>,
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
                    if incident.resolve(now, resolution.clone()) {
                        save_incident(conn, &incident).await?;
                        queue_deliveries(conn, &outbox.resolved(&incident), now).await?;
                    }
                }
            }
            if outcome.start_probing {
                enqueue_probe(conn, run, now).await?;
            }
            Ok(())
        }

        /// Settles which run of its subscription (or customer) is current
        /// once `run` has opened or learnt more (see `run::settle_order`), and
        /// writes back every run that changed. Only the open runs and the
        /// runs of newer events are read.
        ///
        /// Events are ordered by Stripe's `created`. A run the app opened
        /// before Stripe's delivery has only its opening time, later than the
        /// event's: ordering on it let an older event supersede newer ones for
        /// good. So only runs whose Stripe event is stored take part; an
        /// app-opened run settles when the delivery tells its time (`merge`).
        async fn settle_order(
            conn: &mut $conn,
            run: &mut Run,
            delivered: bool,
            now: chrono::DateTime<chrono::Utc>,
            seen: &mut Vec<$crate::metrics::Transition>,
        ) -> Result<(), StoreError> {
            if !delivered || run.subject().is_none() {
                return Ok(());
            }
            lock_scopes(conn, &[&*run]).await?;
            let mut others: Vec<Run> = scope_runs(conn, &[&*run]).await?;
            for (which, entry) in $crate::run::settle_order(run, &mut others, now) {
                let changed = match which {
                    None => &*run,
                    Some(i) => &others[i],
                };
                write_run(conn, changed, false).await?;
                append_timeline(conn, changed, &[entry], seen).await?;
            }
            Ok(())
        }

        /// Locks the ordering scopes of `runs` (PostgreSQL's advisory locks;
        /// SQLite's one writer needs none), in key order. Two events of one
        /// subject opening at once must not both miss each other: the later
        /// waits here for the first to commit. Key order keeps writers whose
        /// batches share subjects from deadlocking.
        async fn lock_scopes(conn: &mut $conn, runs: &[&Run]) -> Result<(), StoreError> {
            lock_keys(conn, runs.iter().copied().filter_map(subject_lock_key).collect()).await
        }

        /// Takes the transaction's advisory locks on `keys` (PostgreSQL;
        /// SQLite's one writer needs none), in key order, so that writers
        /// that share several keys wait for each other instead of
        /// deadlocking.
        async fn lock_keys(conn: &mut $conn, mut keys: Vec<String>) -> Result<(), StoreError> {
            if $advisory_locks.is_empty() {
                return Ok(());
            }
            keys.sort();
            keys.dedup();
            for chunk in keys.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!($advisory_locks, " FROM ("));
                push_rows(&mut query, Rows::of(chunk, |row, key| {
                    row.text(key.as_str());
                }));
                query.push(") AS locks (key)");
                query.build().execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Reads, locked, what `runs` settle against (`run::settle_order`):
        /// the other runs of their scopes that `scope_filter!` names, in one
        /// statement per project, workflow and kind of subject. `runs`
        /// themselves are left out by their event ids (a run's scope is
        /// within its project and workflow, where its event id is its
        /// key): a batch's just-opened runs would otherwise come back to be
        /// decoded, and on PostgreSQL locked, only to be dropped.
        async fn scope_runs(conn: &mut $conn, runs: &[&Run]) -> Result<Vec<Run>, StoreError> {
            struct Scope<'r> {
                subscriptions: Vec<&'r str>,
                customers: Vec<&'r str>,
                events: Vec<&'r str>,
                oldest: chrono::DateTime<chrono::Utc>,
            }
            let mut scopes: std::collections::HashMap<(&str, &str), Scope<'_>> =
                std::collections::HashMap::new();
            for run in runs {
                let Some(subject) = run.subject() else { continue };
                let scope = scopes.entry((run.project.as_str(), run.workflow.as_str())).or_insert_with(|| Scope {
                    subscriptions: Vec::new(),
                    customers: Vec::new(),
                    events: Vec::new(),
                    oldest: run.event_created_at,
                });
                scope.oldest = scope.oldest.min(run.event_created_at);
                scope.events.push(&run.event_id);
                match subject {
                    Subject::Subscription(_) => scope.subscriptions.extend(run.subscription_id.as_deref()),
                    Subject::Customer(_) => scope.customers.extend(run.customer_id.as_deref()),
                }
            }
            let mut found = Vec::new();
            for ((project, workflow), scope) in &scopes {
                let events = serde_json::json!(scope.events).to_string();
                for (sql, ids) in [($scope_by_subscription, &scope.subscriptions), ($scope_by_customer, &scope.customers)] {
                    if ids.is_empty() {
                        continue;
                    }
                    // One text for any number of subjects: the statement is
                    // prepared once, where an IN list was one per length.
                    let rows: Vec<RunRow> = sqlx::query_as(sql)
                        .bind(*project)
                        .bind(*workflow)
                        .bind(serde_json::json!(ids).to_string())
                        .bind(to_ms(scope.oldest))
                        .bind(&events)
                        .fetch_all(&mut *conn)
                        .await?;
                    found.extend(convert::<RunRow, Run>(rows)?);
                }
            }
            Ok(found)
        }

        /// The key of the lock on a run's ordering scope (PostgreSQL).
        fn subject_lock_key(run: &Run) -> Option<String> {
            let (project, workflow, Subject::Subscription(id) | Subject::Customer(id)) = run.order_scope()?;
            Some(format!("{project}/{workflow}/{id}"))
        }

        /// Whether the run's Stripe event is stored (see `settle_order`). A
        /// Stripe delivery stored it in this very transaction, so only the
        /// app's own opening asks.
        async fn delivered(conn: &mut $conn, run: &Run, source: Source) -> Result<bool, StoreError> {
            if source == Source::Stripe {
                return Ok(true);
            }
            let stored: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE project = $1 AND event_id = $2")
                    .bind(&run.project)
                    .bind(&run.event_id)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(stored > 0)
        }

        /// Opens the run, or confirms the one the other side opened first.
        /// Safe under concurrency: the insert yields to a run another request
        /// committed first, which is then read locked and merged.
        async fn open_or_merge(
            conn: &mut $conn,
            spec: RunSpec,
            now: chrono::DateTime<chrono::Utc>,
            seen: &mut Vec<$crate::metrics::Transition>,
        ) -> Result<(Run, bool), StoreError> {
            let key = RunRef::EventId(spec.event_id.clone());
            let source = spec.source;
            // Insert first: most events open a new run, and the insert yields
            // (one statement, not a read and then a write) where one exists.
            let (mut run, entry) = Run::open(spec.clone(), now);
            if write_run(conn, &run, true).await? {
                append_timeline(conn, &run, &[entry], seen).await?;
                let delivered = delivered(conn, &run, source).await?;
                settle_order(conn, &mut run, delivered, now, seen).await?;
                if run.probe_start == Some(ProbeStart::Open) && run.status == $crate::run::RunStatus::Open {
                    enqueue_probe(conn, &run, now).await?;
                }
                return Ok((run, true));
            }
            let mut run = fetch_run(conn, &spec.project, &key, true)
                .await?
                .ok_or(StoreError::NotFound("run"))?;
            if let Some(entry) = run.merge(spec, now) {
                write_run(conn, &run, false).await?;
                append_timeline(conn, &run, &[entry], seen).await?;
                let delivered = delivered(conn, &run, source).await?;
                settle_order(conn, &mut run, delivered, now, seen).await?;
            }
            Ok((run, false))
        }

        /// Stores deliveries inside `conn`'s transaction in a few statements
        /// for all of them, not a few each: every event once per (project,
        /// event id) and, on its first delivery, its run, settled against
        /// its subject's runs as if the deliveries had come one at a time
        /// (`run::settle_opened`).
        ///
        /// The batch is stored as if its deliveries came one at a time in
        /// event-id order, which is as good a serial order as arrival: the
        /// final state does not depend on it. Events and runs are written in
        /// that order and subjects locked in key order (those of runs the
        /// app opened first too, which merge last), so writers' batches that
        /// share events or subjects queue behind each other. A run is
        /// inserted before its subject is locked, as the app's own opening
        /// does. Runs probed from their opening are queued once the batch
        /// has settled, due at its first delivery's time; one already
        /// superseded by a newer event in the batch is not queued.
        async fn ingest_batch(
            conn: &mut $conn,
            deliveries: &[&$crate::store::group_commit::Pending],
            seen: &mut Vec<$crate::metrics::Transition>,
        ) -> Result<Vec<Ingested>, StoreError> {
            use std::collections::HashSet;
            let key = |i: &usize| (deliveries[*i].event.project.as_str(), deliveries[*i].event.event_id.as_str());
            let mut order: Vec<usize> = (0..deliveries.len()).collect();
            order.sort_by(|a, b| key(a).cmp(&key(b)));
            // The same event twice in one batch is stored once, for the first.
            order.dedup_by(|later, earlier| key(later) == key(earlier));
            // The primary key makes a redelivery a no-op, even when two
            // replicas receive it at the same moment.
            let mut inserted: HashSet<(String, String)> = HashSet::new();
            for chunk in order.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO stripe_events (project, event_id, event_type, livemode, created, \
                     received_at, payload) ",
                );
                let rows = Rows::of(chunk, |row, &i| {
                    let d = deliveries[i];
                    row.text(&d.event.project)
                        .text(&d.event.event_id)
                        .text(&d.event.event_type)
                        .opt_bool(d.event.livemode)
                        .opt_int(d.event.created)
                        .int(to_ms(d.now))
                        .text(&d.event.payload);
                });
                push_rows(&mut query, rows);
                query.push(" ON CONFLICT (project, event_id) DO NOTHING RETURNING project, event_id");
                let rows: Vec<(String, String)> = query.build_query_as().fetch_all(&mut *conn).await?;
                inserted.extend(rows);
            }
            let mut outcomes = vec![Ingested::Duplicate; deliveries.len()];
            let mut opening: Vec<(usize, Run, TimelineEntry)> = Vec::new();
            for i in order {
                let (project, event_id) = key(&i);
                if !inserted.contains(&(project.to_owned(), event_id.to_owned())) {
                    continue;
                }
                outcomes[i] = Ingested::Stored { run: None };
                if let Some(spec) = &deliveries[i].run {
                    let (run, entry) = Run::open(spec.clone(), deliveries[i].now);
                    opening.push((i, run, entry));
                }
            }
            // Open the runs; where the app opened one first, merge below.
            let mut new_ids: HashSet<String> = HashSet::new();
            for chunk in opening.chunks(ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!("INSERT INTO runs (", run_columns!(), ") "));
                push_rows(&mut query, Rows::of(chunk, |row, (_, run, _)| run_row(row, run)));
                query.push(" ON CONFLICT (project, workflow, event_id) DO NOTHING RETURNING id");
                let ids: Vec<String> = query.build_query_scalar().fetch_all(&mut *conn).await?;
                new_ids.extend(ids);
            }
            let (opening, merging): (Vec<_>, Vec<_>) =
                opening.into_iter().partition(|(_, run, _)| new_ids.contains(&run.id.to_string()));
            let mut opened: Vec<Run> = Vec::with_capacity(opening.len());
            let mut opened_for: Vec<usize> = Vec::with_capacity(opening.len());
            let mut entries: Vec<TimelineEntry> = Vec::with_capacity(opening.len());
            for (i, run, entry) in opening {
                opened_for.push(i);
                opened.push(run);
                entries.push(entry);
            }
            let firsts: Vec<(&Run, &TimelineEntry)> = opened.iter().zip(&entries).collect();
            append_timelines(conn, &firsts, seen).await?;

            // Settle each subject's order: lock the subjects (PostgreSQL),
            // read their stored runs, settle in memory, write what changed.
            // The runs to merge below settle their subjects too: their locks
            // are taken now, in the same order, not one by one later.
            let locking: Vec<&Run> = opened.iter().chain(merging.iter().map(|(_, run, _)| run)).collect();
            lock_scopes(conn, &locking).await?;
            // Runs the app opened first are not settled until merged: until
            // then their order is their opening time, not Stripe's.
            let merging_events: HashSet<(&str, &str)> =
                merging.iter().map(|(_, run, _)| (run.project.as_str(), run.event_id.as_str())).collect();
            let reading: Vec<&Run> = opened.iter().collect();
            let mut stored: Vec<Run> = scope_runs(conn, &reading)
                .await?
                .into_iter()
                .filter(|run| !merging_events.contains(&(run.project.as_str(), run.event_id.as_str())))
                .collect();
            let changes = $crate::run::settle_opened(&mut opened, &mut stored);
            if !changes.is_empty() {
                let pick = |which: &$crate::run::Settled| match *which {
                    $crate::run::Settled::Opened(i) => &opened[i],
                    $crate::run::Settled::Stored(i) => &stored[i],
                };
                let mut changed: Vec<&Run> = Vec::new();
                for (which, _) in &changes {
                    let run = pick(which);
                    if !changed.iter().any(|c| c.id == run.id) {
                        changed.push(run);
                    }
                }
                write_runs(conn, &changed, None).await?;
                let settled: Vec<(&Run, &TimelineEntry)> =
                    changes.iter().map(|(which, entry)| (pick(which), entry)).collect();
                append_timelines(conn, &settled, seen).await?;
            }
            let probe_now: Vec<&Run> = opened
                .iter()
                .filter(|run| run.probe_start == Some(ProbeStart::Open) && run.status == $crate::run::RunStatus::Open)
                .collect();
            if let Some(now) = deliveries.iter().map(|d| d.now).min() && !probe_now.is_empty() {
                enqueue_probes(conn, &probe_now, now).await?;
            }
            for (i, run) in opened_for.into_iter().zip(opened) {
                outcomes[i] = Ingested::Stored { run: Some(Box::new(run)) };
            }
            for (i, _, _) in merging {
                if let Some(spec) = &deliveries[i].run {
                    let (run, _) = open_or_merge(conn, spec.clone(), deliveries[i].now, seen).await?;
                    outcomes[i] = Ingested::Stored { run: Some(Box::new(run)) };
                }
            }
            Ok(outcomes)
        }

        /// Stores `deliveries` in one transaction: all of them or none.
        /// Returns the transitions made, for the metrics: the caller counts
        /// them, outside its panic guard, so that nothing after the commit
        /// can make a committed batch look failed.
        async fn ingest_together(
            writer: &sqlx::Pool<$db>,
            deliveries: &[&$crate::store::group_commit::Pending],
        ) -> Result<(Vec<Ingested>, Vec<$crate::metrics::Transition>), StoreError> {
            let mut tx = writer.begin().await?;
            let mut seen = Vec::new();
            let outcomes = ingest_batch(&mut tx, deliveries, &mut seen).await?;
            tx.commit().await?;
            Ok((outcomes, seen))
        }

        /// The group-commit writer (see `group_commit`): a batch in one
        /// transaction. If the database cannot be reached, every delivery in
        /// the batch gets that answer at once. If it refused the batch (a
        /// constraint, a deadlock with another writer, a row it cannot
        /// read), each delivery is retried in its own transaction, so one
        /// bad delivery costs its neighbours only time. A panic is caught
        /// like a refusal, so the writer lives on for the deliveries after.
        fn commit_ingest_batch(
            writer: sqlx::Pool<$db>,
            metrics: std::sync::Arc<$crate::metrics::Metrics>,
        ) -> $crate::store::group_commit::CommitBatch {
            use futures::FutureExt;
            use $crate::store::group_commit::panic_message;
            std::sync::Arc::new(move |batch| {
                let (writer, metrics) = (writer.clone(), metrics.clone());
                let span = tracing::debug_span!("ingest_batch", deliveries = batch.len());
                Box::pin(tracing::Instrument::instrument(async move {
                    // A delivery whose request is gone was never going to be
                    // acknowledged: Stripe delivers it again.
                    let batch: Vec<_> = batch.into_iter().filter(|d| !d.reply.is_closed()).collect();
                    if batch.is_empty() {
                        return;
                    }
                    let together = {
                        let all: Vec<_> = batch.iter().collect();
                        std::panic::AssertUnwindSafe(ingest_together(&writer, &all)).catch_unwind().await
                    };
                    let failure = match together {
                        Ok(Ok((outcomes, seen))) => {
                            metrics.record(&seen);
                            for (d, outcome) in batch.into_iter().zip(outcomes) {
                                let _ = d.reply.send(Ok(outcome));
                            }
                            return;
                        }
                        Ok(Err(e)) if e.unavailable() => {
                            tracing::error!(error = %e, deliveries = batch.len(), "an ingest batch could not be stored");
                            let message = e.to_string();
                            for d in batch {
                                let _ = d.reply.send(Err(StoreError::Unavailable(message.clone())));
                            }
                            return;
                        }
                        Ok(Err(e)) => e,
                        Err(panic) => StoreError::Crashed(panic_message(&*panic)),
                    };
                    // A lone delivery has had its try, unless it lost a deadlock.
                    if batch.len() == 1 && !failure.deadlocked() {
                        if let StoreError::Crashed(why) = &failure {
                            tracing::error!(panic = %why, "storing a delivery panicked");
                        }
                        if let Some(d) = batch.into_iter().next() {
                            let _ = d.reply.send(Err(failure));
                        }
                        return;
                    }
                    tracing::warn!(
                        error = %failure,
                        deliveries = batch.len(),
                        "an ingest batch failed; storing its deliveries one at a time"
                    );
                    for d in batch {
                        let one = [&d];
                        let outcome = std::panic::AssertUnwindSafe($crate::store::retry_deadlocked(|| {
                            ingest_together(&writer, &one)
                        }))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| Err(StoreError::Crashed(panic_message(&*panic))))
                        .map(|(mut outcomes, seen)| {
                            metrics.record(&seen);
                            outcomes.remove(0)
                        });
                        if let Err(StoreError::Crashed(why)) = &outcome {
                            tracing::error!(panic = %why, event_id = %d.event.event_id, "storing a delivery panicked");
                        }
                        let _ = d.reply.send(outcome);
                    }
                }, span))
            })
        }

        /// Continues a newest-first list (by `at`, a time column, then id)
        /// after `cursor`.
        fn push_cursor(query: &mut sqlx::QueryBuilder<$db>, at: &'static str, cursor: Option<Cursor>) {
            if let Some(c) = cursor {
                query
                    .push(format!(" AND ({at} < "))
                    .push_bind(c.at_ms)
                    .push(format!(" OR ({at} = "))
                    .push_bind(c.at_ms)
                    .push(" AND id < ")
                    .push_bind(c.id.to_string())
                    .push("))");
            }
        }

        impl $store {
            /// Runs a claim (`claim_sql!`) with a fresh lease token: returns
            /// the token, how many rows it leased, and when the lease ends.
            async fn lease(
                &self,
                claim: &'static str,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<(String, u64, chrono::DateTime<chrono::Utc>), StoreError> {
                let token = $crate::store::lease_token();
                let until = to_ms(now) + self.lease.as_millis() as i64;
                let claimed = sqlx::query(claim)
                    .bind(&token)
                    .bind(until)
                    .bind(to_ms(now))
                    .bind(i64::from(limit))
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                Ok((token, claimed, from_ms(until)))
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn ready(&self) -> Result<(), StoreError> {
                let applied: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                        .fetch_one(&self.reader)
                        .await?;
                if applied < MIGRATOR.iter().count() as i64 {
                    return Err(StoreError::NotMigrated);
                }
                Ok(())
            }

            async fn ingest_stripe_event(
                &self,
                event: StoredEvent,
                run: Option<RunSpec>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Ingested, StoreError> {
                self.ingest.submit(event, run, now).await
            }

            async fn open_run(
                &self,
                spec: RunSpec,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<(Run, bool), StoreError> {
                // Its merge locks the run, then the subject; a Stripe batch
                // locks subjects, then their runs: PostgreSQL may pick this
                // one as a deadlock's victim, and the second try goes through.
                let (opened, seen) = $crate::store::retry_deadlocked(|| async {
                    let mut tx = self.writer.begin().await?;
                    let mut seen = Vec::new();
                    let opened = open_or_merge(&mut tx, spec.clone(), now, &mut seen).await?;
                    tx.commit().await?;
                    Ok((opened, seen))
                })
                .await?;
                self.metrics.record(&seen);
                Ok(opened)
            }

            async fn report_stage(
                &self,
                project: &str,
                run_ref: &RunRef,
                stage: Stage,
                report: StageReport,
                source: Source,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Run, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut run = fetch_run(&mut tx, project, run_ref, true)
                    .await?
                    .ok_or(StoreError::NotFound("run"))?;
                let outcome = run.report(stage, report, source, now)?;
                let mut seen = Vec::new();
                save_report(&mut tx, &self.outbox, &run, &outcome, source, now, &mut seen).await?;
                tx.commit().await?;
                self.metrics.record(&seen);
                Ok(run)
            }

            async fn run_detail(&self, project: &str, run_ref: &RunRef) -> Result<RunDetail, StoreError> {
                let mut conn = self.reader.acquire().await?;
                let run = fetch_run(&mut conn, project, run_ref, false)
                    .await?
                    .ok_or(StoreError::NotFound("run"))?;
                let timeline: Vec<TimelineRow> = sqlx::query_as(
                    "SELECT at, source, stage, outcome, evidence FROM run_timeline WHERE run_id = $1 ORDER BY seq",
                )
                .bind(run.id.to_string())
                .fetch_all(&mut *conn)
                .await?;
                let incidents = incidents_of_run(&mut conn, run.id).await?;
                let probes = probes_of_run(&mut conn, run.id, $crate::store::PROBES_SHOWN).await?;
                let probe_count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM probe_attempts WHERE run_id = $1")
                    .bind(run.id.to_string())
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(RunDetail {
                    run,
                    timeline: convert(timeline)?,
                    probes,
                    probe_count,
                    incidents,
                })
            }

            async fn list_runs(&self, project: &str, filter: &RunFilter) -> Result<Page<Run>, StoreError> {
                let mut query =
                    sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", run_columns!(), " FROM runs WHERE project = "));
                query.push_bind(project.to_owned());
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(stage) = filter.stage {
                    query.push(" AND stage = ").push_bind(stage.as_str());
                }
                if let Some(customer) = &filter.customer_id {
                    query.push(" AND customer_id = ").push_bind(customer.clone());
                }
                query.push(if filter.drill { " AND drill_id IS NOT NULL" } else { " AND drill_id IS NULL" });
                push_cursor(&mut query, "opened_at", filter.cursor);
                query
                    .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(filter.limit) + 1);
                let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.reader).await?;
                Ok(Page::from_rows(convert(rows)?, filter.limit, |run: &Run| Cursor {
                    at_ms: to_ms(run.opened_at),
                    id: run.id,
                }))
            }

            async fn sweep(&self, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Swept, StoreError> {
                // Claim up to `limit` overdue runs nobody holds, fail them
                // and open their incidents, in one transaction. A lease
                // (written to every run, read back and released) was most
                // of the sweep's cost on PostgreSQL.
                let mut tx = self.writer.begin().await?;
                let rows: Vec<RunRow> = sqlx::query_as(claim_overdue_sql!($skip))
                    .bind(to_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let mut swept = Swept {
                    runs_claimed: rows.len(),
                    ..Swept::default()
                };
                if rows.is_empty() {
                    return Ok(swept);
                }
                let mut seen = Vec::new();
                let runs: Vec<Run> = convert(rows)?;
                let last_probes = last_probes(&mut tx, &runs).await?;
                let (mut failed, mut read, mut entries, mut incidents) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for mut run in runs {
                    let before = run.clone();
                    if let Some((missed, entry)) = run.expire(now) {
                        incidents.push(NewIncident::for_missed(&run, &missed, last_probes.get(&run.id), now));
                        failed.push(run);
                        read.push(before);
                        entries.push(entry);
                    }
                }
                // Each table in one statement for the whole batch: a
                // statement per run made the sweep's time follow its size.
                swept.runs_failed = failed.len();
                write_runs(&mut tx, &failed.iter().collect::<Vec<_>>(), Some(&read)).await?;
                let entries: Vec<_> = failed.iter().zip(&entries).collect();
                append_timelines(&mut tx, &entries, &mut seen).await?;
                // Keep probing a failed run, so that its incident resolves
                // itself once the app grants the access.
                let probed: Vec<&Run> = failed.iter().filter(|r| r.probe_start.is_some()).collect();
                enqueue_probes(&mut tx, &probed, now).await?;
                let inserted = insert_incidents(&mut tx, &incidents).await?;
                swept.incidents = incidents
                    .into_iter()
                    .filter(|i| inserted.contains(&i.id.to_string()))
                    .map(Incident::from_new)
                    .collect();
                // The outbox: the alerts go in with the incidents, or not at all.
                queue_deliveries(&mut tx, &self.outbox.opened(&swept.incidents), now).await?;
                tx.commit().await?;
                self.metrics.record(&seen);
                Ok(swept)
            }

            fn writers(&self) -> usize {
                self.writers
            }

            async fn claim_probes(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<ProbeJob>, StoreError> {
                let (token, claimed, lease_expires_at) = self.lease(claim_probes_sql!($skip), now, limit).await?;
                if claimed == 0 {
                    return Ok(Vec::new());
                }
                let rows: Vec<ProbeJobRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    run_columns!(),
                    ", attempts FROM runs JOIN probe_queue ON probe_queue.run_id = runs.id ",
                    "WHERE probe_queue.lease_token = $1"
                ))
                .bind(&token)
                .fetch_all(&self.writer)
                .await?;
                rows.into_iter()
                    .map(|row| row.into_job(&token, lease_expires_at))
                    .collect()
            }

            async fn finish_probe(
                &self,
                job: &ProbeJob,
                attempt: Option<(ProbeAttempt, $crate::probe::ProbeSchedule)>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let key = RunRef::Id(job.run.id);
                let mut run = fetch_run(&mut tx, &job.run.project, &key, true)
                    .await?
                    .ok_or(StoreError::NotFound("run"))?;
                // If our lease expired and the run was claimed again, the
                // work is theirs and this attempt is not recorded twice. The
                // queue row stays locked until commit, so no claim can take
                // it between this check and the update below.
                let still_ours: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT attempts FROM probe_queue WHERE run_id = $1 AND lease_token = $2",
                    $lock
                ))
                .bind(run.id.to_string())
                .bind(&job.lease_token)
                .fetch_optional(&mut *tx)
                .await?;
                if still_ours.is_none() {
                    tracing::warn!(run_id = %run.id, "a probe finished after its lease passed to another replica; dropped");
                    return Ok(false);
                }
                let mut next_due = None;
                let mut seen = Vec::new();
                if let Some((mut attempt, schedule)) = attempt {
                    attempt.matched = run.probe_matches(&attempt);
                    insert_probe_attempt(&mut tx, run.id, &attempt, attempt.matched).await?;
                    let matched = match run.observe(&attempt, now) {
                        Some(outcome) => {
                            save_report(&mut tx, &self.outbox, &run, &outcome, Source::Probe, now, &mut seen)
                                .await?;
                            true
                        }
                        None => {
                            write_run(&mut tx, &run, false).await?;
                            false
                        }
                    };
                    next_due = schedule.next_due(&run, job.attempts + 1, matched, now);
                }
                // Only the holder of the lease moves the queue row.
                let moved = match next_due {
                    Some(due) => {
                        sqlx::query(
                            "UPDATE probe_queue SET due_at = $2, attempts = attempts + 1, lease_token = NULL, \
                             lease_expires_at = NULL WHERE run_id = $1 AND lease_token = $3",
                        )
                        .bind(run.id.to_string())
                        .bind(to_ms(due))
                        .bind(&job.lease_token)
                        .execute(&mut *tx)
                        .await?
                    }
                    None => {
                        sqlx::query("DELETE FROM probe_queue WHERE run_id = $1 AND lease_token = $2")
                            .bind(run.id.to_string())
                            .bind(&job.lease_token)
                            .execute(&mut *tx)
                            .await?
                    }
                };
                if moved.rows_affected() == 0 {
                    // Cannot happen while the row is locked; if it does,
                    // recording nothing is the safe side.
                    tracing::warn!(run_id = %run.id, "a probe's queue row changed hands; dropped");
                    return Ok(false);
                }
                tx.commit().await?;
                self.metrics.record(&seen);
                Ok(true)
            }

            async fn release_probe(&self, job: &ProbeJob) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE probe_queue SET lease_token = NULL, lease_expires_at = NULL \
                     WHERE run_id = $1 AND lease_token = $2",
                )
                .bind(job.run.id.to_string())
                .bind(&job.lease_token)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn list_incidents(
                &self,
                project: &str,
                filter: &IncidentFilter,
            ) -> Result<Page<Incident>, StoreError> {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    incident_columns!(),
                    " FROM incidents WHERE project = "
                ));
                query.push_bind(project.to_owned());
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                query.push(" AND drill = ").push_bind(filter.drill);
                push_cursor(&mut query, "opened_at", filter.cursor);
                query
                    .push(" ORDER BY opened_at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(filter.limit) + 1);
                let rows: Vec<IncidentRow> = query.build_query_as().fetch_all(&self.reader).await?;
                Ok(Page::from_rows(convert(rows)?, filter.limit, |i: &Incident| Cursor {
                    at_ms: to_ms(i.opened_at),
                    id: i.id,
                }))
            }

            async fn incident(&self, project: &str, id: uuid::Uuid) -> Result<IncidentDetail, StoreError> {
                let mut conn = self.reader.acquire().await?;
                let incident = fetch_incident(&mut conn, project, id, false).await?;
                let deliveries = deliveries_of_incident(&mut conn, incident.id).await?;
                Ok(IncidentDetail { incident, deliveries })
            }


            async fn acknowledge_incident(
                &self,
                project: &str,
                id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Incident, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut incident = fetch_incident(&mut tx, project, id, true).await?;
                if incident.acknowledge(now)? {
                    save_incident(&mut tx, &incident).await?;
                }
                tx.commit().await?;
                Ok(incident)
            }

            async fn resolve_incident(
                &self,
                project: &str,
                id: uuid::Uuid,
                resolution: String,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Incident, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut incident = fetch_incident(&mut tx, project, id, true).await?;
                if incident.resolve(now, resolution) {
                    save_incident(&mut tx, &incident).await?;
                    queue_deliveries(&mut tx, &self.outbox.resolved(&incident), now).await?;
                }
                tx.commit().await?;
                Ok(incident)
            }

            async fn claim_deliveries(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<DeliveryJob>, StoreError> {
                let (token, claimed, _) = self.lease(claim_deliveries_sql!($skip), now, limit).await?;
                if claimed == 0 {
                    return Ok(Vec::new());
                }
                let mut conn = self.writer.acquire().await?;
                let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    delivery_columns!(),
                    " FROM alert_deliveries WHERE lease_token = $1 ORDER BY created_at, id"
                ))
                .bind(&token)
                .fetch_all(&mut *conn)
                .await?;
                let mut jobs = Vec::new();
                for mut delivery in convert::<_, Delivery>(rows)? {
                    // "Resolved" never overtakes the "opened" it follows: while
                    // an earlier alert about its incident on this channel is
                    // still pending (retrying), it waits until after that one.
                    if delivery.event == $crate::alert::AlertEvent::Resolved {
                        let earlier: Option<i64> = sqlx::query_scalar(
                            "SELECT MAX(d.next_attempt_at) FROM alert_deliveries d \
                             JOIN alert_delivery_incidents l ON l.delivery_id = d.id \
                             WHERE l.incident_id IN (SELECT incident_id FROM alert_delivery_incidents WHERE delivery_id = $1) \
                             AND d.channel = $2 AND d.status = 'pending' AND d.event <> 'resolved'",
                        )
                        .bind(delivery.id.to_string())
                        .bind(&delivery.channel)
                        .fetch_one(&mut *conn)
                        .await?;
                        if let Some(after) = earlier {
                            sqlx::query(
                                "UPDATE alert_deliveries SET next_attempt_at = $2, lease_token = NULL, \
                                 lease_expires_at = NULL WHERE id = $1 AND lease_token = $3",
                            )
                            .bind(delivery.id.to_string())
                            .bind(after.max(to_ms(now)) + 1)
                            .bind(&token)
                            .execute(&mut *conn)
                            .await?;
                            continue;
                        }
                    }
                    attempts_of_delivery(&mut conn, &mut delivery).await?;
                    let incidents: Vec<IncidentRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        incident_columns!(),
                        " FROM incidents JOIN alert_delivery_incidents AS l ON l.incident_id = incidents.id ",
                        "WHERE l.delivery_id = $1 ORDER BY l.position"
                    ))
                    .bind(delivery.id.to_string())
                    .fetch_all(&mut *conn)
                    .await?;
                    jobs.push(DeliveryJob {
                        delivery,
                        incidents: convert(incidents)?,
                        lease_token: token.clone(),
                    });
                }
                Ok(jobs)
            }

            async fn finish_delivery(
                &self,
                job: &DeliveryJob,
                outcome: DeliveryOutcome,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                let id = job.delivery.id.to_string();
                // Locked until commit: a replica that took an expired lease
                // over records instead, never both.
                let still_ours: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT attempts FROM alert_deliveries WHERE id = $1 AND lease_token = $2",
                    $lock
                ))
                .bind(&id)
                .bind(&job.lease_token)
                .fetch_optional(&mut *tx)
                .await?;
                if still_ours.is_none() {
                    tracing::warn!(delivery_id = %id, "an alert delivery finished after its lease passed on; not recorded");
                    return Ok(false);
                }
                let (attempt, status, next, error) = match outcome {
                    DeliveryOutcome::Sent(attempt) => (Some(attempt), DeliveryStatus::Sent, None, None),
                    DeliveryOutcome::Failed { attempt, retry_at } => {
                        let error = attempt.error.clone();
                        match retry_at {
                            Some(at) => (Some(attempt), DeliveryStatus::Pending, Some(at), error),
                            None => (Some(attempt), DeliveryStatus::Dead, None, error),
                        }
                    }
                    DeliveryOutcome::Skipped(reason) => (None, DeliveryStatus::Skipped, None, Some(reason)),
                };
                if let Some(attempt) = &attempt {
                    sqlx::query(
                        "INSERT INTO alert_attempts (delivery_id, at, duration_ms, status_code, error) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&id)
                    .bind(to_ms(attempt.at))
                    .bind(attempt.duration_ms)
                    .bind(attempt.status_code.map(i64::from))
                    .bind(&attempt.error)
                    .execute(&mut *tx)
                    .await?;
                }
                let settled = (status != DeliveryStatus::Pending).then(|| to_ms(now));
                sqlx::query(
                    "UPDATE alert_deliveries SET status = $2, attempts = attempts + $3, next_attempt_at = $4, \
                     settled_at = $5, last_error = $6, lease_token = NULL, lease_expires_at = NULL WHERE id = $1",
                )
                .bind(&id)
                .bind(status.as_str())
                .bind(i64::from(attempt.is_some()))
                .bind(next.map(to_ms))
                .bind(settled)
                .bind(error)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn queue_reminders(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                interval: std::time::Duration,
            ) -> Result<usize, StoreError> {
                let before = to_ms(now) - interval.as_millis() as i64;
                let mut tx = self.writer.begin().await?;
                // Through `incidents_to_remind` (open incidents only). An
                // incident with an alert still pending is not reminded of:
                // a receiver that is down gets one message when it is back,
                // not one per interval. Rows another replica is reminding of
                // right now are skipped; the update below makes the rest
                // wait a full interval again.
                let rows: Vec<IncidentRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    incident_columns!(),
                    " FROM incidents WHERE status = 'open' AND last_alerted_at <= $1 ",
                    "AND NOT EXISTS (SELECT 1 FROM alert_delivery_incidents l ",
                    "JOIN alert_deliveries d ON d.id = l.delivery_id ",
                    "WHERE l.incident_id = incidents.id AND d.status = 'pending') ",
                    "ORDER BY last_alerted_at LIMIT 1000",
                    $skip
                ))
                .bind(before)
                .fetch_all(&mut *tx)
                .await?;
                let incidents: Vec<Incident> = convert(rows)?;
                // Grouped as they opened: one message for a cause, not one
                // per customer.
                queue_deliveries(&mut tx, &self.outbox.reminders(&incidents), now).await?;
                for incident in &incidents {
                    sqlx::query("UPDATE incidents SET last_alerted_at = $2 WHERE id = $1")
                        .bind(incident.id.to_string())
                        .bind(to_ms(now))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(incidents.len())
            }

            async fn stripe_event(&self, project: &str, event_id: &str) -> Result<Option<String>, StoreError> {
                Ok(sqlx::query_scalar("SELECT payload FROM stripe_events WHERE project = $1 AND event_id = $2")
                    .bind(project)
                    .bind(event_id)
                    .fetch_optional(&self.reader)
                    .await?)
            }

            async fn run_summary(
                &self,
                project: &str,
                since: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::store::RunSummary, StoreError> {
                let counts: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*) FROM runs WHERE project = $1 AND opened_at >= $2 \
                     AND drill_id IS NULL GROUP BY status",
                )
                .bind(project)
                .bind(to_ms(since))
                .fetch_all(&self.reader)
                .await?;
                let count = |status: &str| counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                // The latest 10,000 are plenty for a median and a p95.
                let durations: Vec<i64> = sqlx::query_scalar(
                    "SELECT closed_at - opened_at FROM runs WHERE project = $1 AND opened_at >= $2 \
                     AND drill_id IS NULL AND status = 'succeeded' AND closed_at IS NOT NULL \
                     ORDER BY opened_at DESC LIMIT 10000",
                )
                .bind(project)
                .bind(to_ms(since))
                .fetch_all(&self.reader)
                .await?;
                Ok($crate::store::RunSummary {
                    opened: counts.iter().map(|(_, n)| n).sum(),
                    succeeded: count("succeeded"),
                    failed: count("failed"),
                    superseded: count("superseded"),
                    open: count("open"),
                    ..Default::default()
                }
                .with_latencies(durations))
            }

            async fn create_session(&self, session: &$crate::store::DashboardSession) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await?;
                // Expired sessions go when new ones come: no cleanup job.
                sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                    .bind(to_ms(session.created_at))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO dashboard_sessions (id_hash, operator, csrf_token, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&session.id_hash)
                .bind(&session.operator)
                .bind(&session.csrf_token)
                .bind(to_ms(session.created_at))
                .bind(to_ms(session.expires_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(
                &self,
                id_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::store::DashboardSession>, StoreError> {
                let row: Option<(String, String, i64, i64)> = sqlx::query_as(
                    "SELECT operator, csrf_token, created_at, expires_at FROM dashboard_sessions \
                     WHERE id_hash = $1 AND expires_at > $2",
                )
                .bind(id_hash)
                .bind(to_ms(now))
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.map(|(operator, csrf_token, created_at, expires_at)| $crate::store::DashboardSession {
                    id_hash: id_hash.to_owned(),
                    operator,
                    csrf_token,
                    created_at: from_ms(created_at),
                    expires_at: from_ms(expires_at),
                }))
            }

            async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn standing(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<$crate::metrics::Standing, StoreError> {
                let mut conn = self.reader.acquire().await?;
                // Through runs_by_deadline and the partial indexes of the
                // metrics migration: what is open, not what is stored.
                // An open run always waits for a deadline, and only open
                // runs have one: the partial deadline index holds them all.
                let open_runs: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT project, workflow, COUNT(*) FROM runs WHERE deadline_at IS NOT NULL AND drill_id IS NULL \
                     GROUP BY project, workflow ORDER BY project, workflow",
                )
                .fetch_all(&mut *conn)
                .await?;
                let overdue: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT project, workflow, COUNT(*), MIN(deadline_at) FROM runs \
                     WHERE deadline_at IS NOT NULL AND deadline_at <= $1 AND drill_id IS NULL \
                     GROUP BY project, workflow ORDER BY project, workflow",
                )
                .bind(to_ms(now))
                .fetch_all(&mut *conn)
                .await?;
                let open_incidents: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT project, COUNT(*) FROM incidents WHERE status <> 'resolved' AND drill = FALSE \
                     GROUP BY project ORDER BY project",
                )
                .fetch_all(&mut *conn)
                .await?;
                let dead_deliveries: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT d.project, COUNT(*) FROM alert_deliveries d WHERE d.status = 'dead' \
                     AND NOT EXISTS (SELECT 1 FROM alert_delivery_incidents l JOIN incidents i ON i.id = l.incident_id \
                     WHERE l.delivery_id = d.id AND i.drill) GROUP BY d.project ORDER BY d.project",
                )
                .fetch_all(&mut *conn)
                .await?;
                let oldest = overdue.iter().filter_map(|(_, _, _, at)| *at).min();
                Ok($crate::metrics::Standing {
                    open_runs,
                    overdue_runs: overdue.into_iter().map(|(p, w, n, _)| (p, w, n)).collect(),
                    open_incidents,
                    dead_deliveries,
                    sweeper_lag_secs: oldest
                        .map_or(0.0, |at| (to_ms(now) - at).max(0) as f64 / 1000.0),
                })
            }

            async fn create_drill(&self, drill: &$crate::drill::Drill, only_if_idle: bool) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await?;
                if only_if_idle {
                    let running: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM drills WHERE project = $1 AND workflow = $2 AND status = 'running' LIMIT 1",
                    )
                    .bind(&drill.project)
                    .bind(&drill.workflow)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if running.is_some() {
                        return Ok(false);
                    }
                }
                let report = serde_json::to_string(&drill.report())
                    .map_err(|e| StoreError::Corrupt(format!("drill report: {e}")))?;
                let done = sqlx::query(concat!(
                    "INSERT INTO drills (",
                    drill_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ",
                    "ON CONFLICT (project, workflow, scheduled_for) DO NOTHING"
                ))
                .bind(drill.id.to_string())
                .bind(&drill.project)
                .bind(&drill.workflow)
                .bind(drill.trigger.as_str())
                .bind(drill.status.as_str())
                .bind(drill.step.as_str())
                .bind(&drill.event_id)
                .bind(drill.run_id.map(|id| id.to_string()))
                .bind(drill.incident_id.map(|id| id.to_string()))
                .bind(to_ms(drill.started_at))
                .bind(drill.finished_at.map(to_ms))
                .bind(drill.scheduled_for.map(to_ms))
                .bind(report)
                .bind(drill.next_step_at.map(to_ms))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn claim_drills(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<$crate::store::DrillJob>, StoreError> {
                let (token, claimed, lease_expires_at) = self.lease(claim_drills_sql!($skip), now, limit).await?;
                if claimed == 0 {
                    return Ok(Vec::new());
                }
                let rows: Vec<DrillRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    drill_columns!(),
                    " FROM drills WHERE lease_token = $1 ORDER BY started_at, id"
                ))
                .bind(&token)
                .fetch_all(&self.writer)
                .await?;
                let mut jobs = Vec::new();
                for row in rows {
                    let id = row.id().to_owned();
                    match $crate::drill::Drill::try_from(row) {
                        Ok(drill) => jobs.push($crate::store::DrillJob {
                            drill,
                            lease_token: token.clone(),
                            lease_expires_at,
                        }),
                        // One unreadable drill must not hold up the others
                        // claimed with it, again at every claim: it ends.
                        Err(e) => {
                            tracing::error!(drill_id = %id, error = %e, "an unreadable drill is marked failed");
                            sqlx::query(
                                "UPDATE drills SET status = 'failed', next_step_at = NULL, finished_at = $2, \
                                 lease_token = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_token = $3",
                            )
                            .bind(&id)
                            .bind(to_ms(now))
                            .bind(&token)
                            .execute(&self.writer)
                            .await?;
                        }
                    }
                }
                Ok(jobs)
            }

            async fn save_drill(&self, job: &$crate::store::DrillJob) -> Result<bool, StoreError> {
                let drill = &job.drill;
                let report = serde_json::to_string(&drill.report())
                    .map_err(|e| StoreError::Corrupt(format!("drill report: {e}")))?;
                // Only the lease's holder writes: a step taken over by
                // another replica is recorded once, by that replica.
                let done = sqlx::query(
                    "UPDATE drills SET status = $2, step = $3, run_id = $4, incident_id = $5, finished_at = $6, \
                     report = $7, next_step_at = $8, lease_token = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND lease_token = $9",
                )
                .bind(drill.id.to_string())
                .bind(drill.status.as_str())
                .bind(drill.step.as_str())
                .bind(drill.run_id.map(|id| id.to_string()))
                .bind(drill.incident_id.map(|id| id.to_string()))
                .bind(drill.finished_at.map(to_ms))
                .bind(report)
                .bind(drill.next_step_at.map(to_ms))
                .bind(&job.lease_token)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn drill(&self, project: &str, id: uuid::Uuid) -> Result<$crate::drill::Drill, StoreError> {
                let row: Option<DrillRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    drill_columns!(),
                    " FROM drills WHERE project = $1 AND id = $2"
                ))
                .bind(project)
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await?;
                row.ok_or(StoreError::NotFound("drill"))?.try_into()
            }

            async fn list_drills(
                &self,
                project: &str,
                limit: u32,
                cursor: Option<Cursor>,
            ) -> Result<Page<$crate::drill::Drill>, StoreError> {
                let mut query = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    drill_columns!(),
                    " FROM drills WHERE project = "
                ));
                query.push_bind(project.to_owned());
                push_cursor(&mut query, "started_at", cursor);
                query
                    .push(" ORDER BY started_at DESC, id DESC LIMIT ")
                    .push_bind(i64::from(limit) + 1);
                let rows: Vec<DrillRow> = query.build_query_as().fetch_all(&self.reader).await?;
                Ok(Page::from_rows(convert(rows)?, limit, |d: &$crate::drill::Drill| Cursor {
                    at_ms: to_ms(d.started_at),
                    id: d.id,
                }))
            }

            async fn record_drill_probe(
                &self,
                project: &str,
                run_id: uuid::Uuid,
                attempt: ProbeAttempt,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Run, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut run = fetch_run(&mut tx, project, &RunRef::Id(run_id), true)
                    .await?
                    .ok_or(StoreError::NotFound("run"))?;
                let entry = run.observe_for_drill(&attempt, now);
                insert_probe_attempt(&mut tx, run.id, &attempt, false).await?;
                write_run(&mut tx, &run, false).await?;
                // A drill's run: nothing to count.
                append_timeline(&mut tx, &run, &[entry], &mut Vec::new()).await?;
                tx.commit().await?;
                Ok(run)
            }

            async fn end_drill_run(
                &self,
                project: &str,
                run_id: uuid::Uuid,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Run, StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut run = fetch_run(&mut tx, project, &RunRef::Id(run_id), true)
                    .await?
                    .ok_or(StoreError::NotFound("run"))?;
                if let Some(entry) = run.end_for_drill(now) {
                    write_run(&mut tx, &run, false).await?;
                    append_timeline(&mut tx, &run, &[entry], &mut Vec::new()).await?;
                }
                tx.commit().await?;
                Ok(run)
            }
        }
    };
}

pub(crate) use sql_store;

#[cfg(test)]
mod tests {
    use super::{RUN_UPSERT_ALL, Rows, run_upsert};

    fn rows(n: i64) -> Rows<'static> {
        Rows::of(0..n, |row, i| {
            row.text(format!("id_{i}")).opt_int(Some(i)).opt_bool(None);
        })
    }

    /// PostgreSQL's statement is one text for any number of rows, so that it
    /// is parsed once per connection, with one value bound per column.
    #[test]
    fn unnest_binds_an_array_per_column_whatever_the_rows() {
        let sql = |n| {
            let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO t (a, b, c) ");
            rows(n).unnest(&mut query);
            query.into_string()
        };
        assert_eq!(
            sql(1),
            "INSERT INTO t (a, b, c) SELECT * FROM UNNEST($1, $2, $3)"
        );
        assert_eq!(sql(1), sql(500));
    }

    #[test]
    fn values_binds_each_field_row_by_row() {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO t (a, b, c) ");
        rows(2).values(&mut query);
        assert_eq!(
            query.into_string(),
            "INSERT INTO t (a, b, c) VALUES (?, ?, ?), (?, ?, ?)"
        );
    }

    /// A column is changed when any one row's value differs, in value or
    /// in being NULL; the others are not written back.
    #[test]
    fn changed_names_the_columns_any_row_changed() {
        let rows = |items: [(i64, Option<&'static str>, bool); 2]| {
            Rows::of(items, |row, (i, t, b)| {
                row.int(i).opt_text(t).bool(b);
            })
        };
        let before = rows([(1, Some("a"), true), (2, None, false)]);
        let same = rows([(1, Some("a"), true), (2, None, false)]);
        assert_eq!(same.changed(&before), Vec::<usize>::new());
        let one_filled = rows([(1, Some("a"), true), (2, Some("b"), false)]);
        assert_eq!(one_filled.changed(&before), vec![1]);
        let one_flipped = rows([(1, Some("a"), false), (2, None, false)]);
        assert_eq!(one_flipped.changed(&before), vec![2]);
    }

    #[test]
    fn a_run_upsert_writes_back_the_columns_given() {
        assert_eq!(
            run_upsert(["status", "deadline_at"]),
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, deadline_at = excluded.deadline_at"
        );
        assert_eq!(run_upsert([]), " ON CONFLICT (id) DO NOTHING");
        assert!(
            RUN_UPSERT_ALL.starts_with(
                " ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, "
            )
        );
        assert!(RUN_UPSERT_ALL.ends_with("superseded_by = excluded.superseded_by"));
    }

    #[test]
    #[should_panic(expected = "a row wrote more columns than the first")]
    fn a_row_must_not_add_columns() {
        Rows::of([1, 2], |row, n| {
            for _ in 0..n {
                row.int(n);
            }
        });
    }

    #[test]
    #[should_panic(expected = "column 1 changed its type")]
    fn a_row_must_keep_the_columns_types() {
        Rows::of([true, false], |row, first| {
            row.text("a");
            if first {
                row.int(1);
            } else {
                row.bool(true);
            }
        });
    }
}
