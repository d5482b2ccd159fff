-- Project incidents: about a project's input, configuration or probe path
-- rather than one run, so they have no run. SQLite cannot drop a NOT NULL,
-- so `incidents` is made anew in this migration's transaction: its rows
-- copied aside, the table dropped and created again under its own name
-- (so the references to it still name it), the rows put back. References
-- are checked at the commit, not row by row, so the deliveries that refer
-- to the incidents meanwhile do not fail the drop, and a row not put back
-- would fail the commit.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE incidents_before AS SELECT * FROM incidents;
DROP TABLE incidents;
CREATE TABLE incidents (
    id              TEXT    NOT NULL PRIMARY KEY,
    -- NULL for a project incident.
    run_id          TEXT    REFERENCES runs (id),
    project         TEXT    NOT NULL,
    workflow        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    evidence        TEXT    NOT NULL,
    opened_at       INTEGER NOT NULL,
    acknowledged_at INTEGER,
    resolved_at     INTEGER,
    resolution      TEXT,
    last_alerted_at INTEGER,
    drill           BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'run' or 'project'.
    scope           TEXT    NOT NULL DEFAULT 'run',
    -- What a project incident is about within its kind (the price of an
    -- unmapped-price incident); '' when its kind has one per project.
    subject         TEXT    NOT NULL DEFAULT '',
    -- At most one incident per run and failure kind, whatever races.
    UNIQUE (run_id, kind)
);
INSERT INTO incidents (id, run_id, project, workflow, kind, title, status, evidence,
    opened_at, acknowledged_at, resolved_at, resolution, last_alerted_at, drill)
SELECT id, run_id, project, workflow, kind, title, status, evidence,
    opened_at, acknowledged_at, resolved_at, resolution, last_alerted_at, drill
FROM incidents_before;
DROP TABLE incidents_before;
CREATE INDEX incidents_by_project_newest ON incidents (project, opened_at DESC, id DESC);
CREATE INDEX incidents_by_status ON incidents (project, status, opened_at DESC, id DESC);
CREATE INDEX incidents_to_remind ON incidents (last_alerted_at) WHERE status = 'open';
CREATE INDEX incidents_unresolved ON incidents (project) WHERE status <> 'resolved';
-- At most one open project incident per project, workflow, kind and
-- subject (a drill's apart), whatever replicas race to open it.
CREATE UNIQUE INDEX incidents_open_per_cause ON incidents (project, workflow, kind, subject, drill)
    WHERE scope = 'project' AND status <> 'resolved';

-- How many Stripe deliveries each project accepted and refused, per
-- minute and outcome ('accepted' or the refusal's reason): what the
-- watcher learns the usual traffic from and notices silence and refusals
-- by. One row per project, outcome and minute, however many requests, so a
-- flood of forged requests cannot grow storage without bound.
CREATE TABLE ingest_tallies (
    project  TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    minute   INTEGER NOT NULL,   -- unix milliseconds at the minute's start
    count    INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL,
    PRIMARY KEY (project, outcome, minute)
);
CREATE INDEX ingest_tallies_by_minute ON ingest_tallies (project, minute);
