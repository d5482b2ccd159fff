-- Failure drills: runs that Assay starts on purpose to prove that the alarm
-- rings. A drill run or incident is marked, so that it is never counted or
-- alerted as a real customer's.
ALTER TABLE runs ADD COLUMN drill_id TEXT;
ALTER TABLE incidents ADD COLUMN drill BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE drills (
    id               TEXT    NOT NULL PRIMARY KEY,
    project          TEXT    NOT NULL,
    workflow         TEXT    NOT NULL,
    -- 'api', 'cli', 'dashboard' or 'schedule'.
    trigger          TEXT    NOT NULL,
    -- 'running', 'passed' or 'failed'.
    status           TEXT    NOT NULL,
    -- The step the drill does next (the last one, once finished).
    step             TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    run_id           TEXT,
    incident_id      TEXT,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    -- For a scheduled drill, the schedule's time it stands for: every
    -- replica's scheduler inserts it, and this key keeps one.
    scheduled_for    INTEGER,
    -- JSON: the settings it runs with, each step with its time and outcome,
    -- and the broken link of a failed drill.
    report           TEXT    NOT NULL,
    -- When the drill runner should take its next step; NULL once finished.
    next_step_at     INTEGER,
    -- A runner's claim (see the claim mechanism in src/store/sql.rs).
    lease_token      TEXT,
    lease_expires_at INTEGER,
    UNIQUE (project, workflow, scheduled_for)
);
CREATE INDEX drills_due ON drills (next_step_at) WHERE next_step_at IS NOT NULL;
CREATE INDEX drills_by_project_newest ON drills (project, started_at DESC, id DESC);
CREATE INDEX drills_by_lease ON drills (lease_token) WHERE lease_token IS NOT NULL;
