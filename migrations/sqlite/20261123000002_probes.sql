-- Active probes of the app's access endpoint.

-- When the run starts being probed: 'open', 'reconciled', or NULL (no probe).
ALTER TABLE runs ADD COLUMN probe_start TEXT;

-- Runs due for a probe: the prober's work queue, claimed with a lease like
-- the sweeper's runs (see the claim mechanism in src/store/sql.rs).
CREATE TABLE probe_queue (
    run_id           TEXT    NOT NULL PRIMARY KEY REFERENCES runs (id),
    due_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_expires_at INTEGER
);
CREATE INDEX probe_queue_by_due ON probe_queue (due_at);
CREATE INDEX probe_queue_by_lease ON probe_queue (lease_token) WHERE lease_token IS NOT NULL;

-- Every probe attempt, kept on the run as evidence.
CREATE TABLE probe_attempts (
    seq               INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT    NOT NULL REFERENCES runs (id),
    at                INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    url               TEXT    NOT NULL,
    status_code       INTEGER,
    observed_plan     TEXT,
    observed_features TEXT,
    deploy_sha        TEXT,
    error             TEXT,
    matched           BOOLEAN NOT NULL
);
CREATE INDEX probe_attempts_by_run ON probe_attempts (run_id, seq);
