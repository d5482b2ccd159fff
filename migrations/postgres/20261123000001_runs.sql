-- The same schema as migrations/sqlite, in PostgreSQL's types. Ids are text
-- and times are unix milliseconds (BIGINT) in both backends, so that one set
-- of statements and row types serves both.

-- Stripe events exactly as delivered, once per project and event id. The
-- primary key is what makes redelivery idempotent across replicas.
CREATE TABLE stripe_events (
    project     TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    livemode    BOOLEAN,
    created     BIGINT,            -- Stripe's `created`, unix seconds
    received_at BIGINT  NOT NULL,
    payload     TEXT    NOT NULL,
    PRIMARY KEY (project, event_id)
);

CREATE TABLE runs (
    id                   TEXT    NOT NULL PRIMARY KEY,
    project              TEXT    NOT NULL,
    workflow             TEXT    NOT NULL,
    event_id             TEXT    NOT NULL,
    event_type           TEXT    NOT NULL,
    customer_id          TEXT,
    subscription_id      TEXT,
    expected_plan        TEXT,
    expected_plan_reason TEXT,
    observed_plan        TEXT,
    deploy_sha           TEXT,
    livemode             BOOLEAN,
    stage                TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    opened_at            BIGINT  NOT NULL,
    reconciled_due_at    BIGINT  NOT NULL,
    access_due_at        BIGINT  NOT NULL,
    deadline_at          BIGINT,  -- next deadline; NULL once the run ended
    closed_at            BIGINT,
    -- What else the run expects and saw: entitlement feature sets (JSON
    -- arrays) and, for a failed payment, when the grace period ends.
    expected_features    TEXT,
    keep_access_until    BIGINT,
    observed_features    TEXT,
    -- Orders the events of one subscription: Stripe's `created`, else when
    -- the run opened.
    event_created_at     BIGINT NOT NULL,
    superseded_by        TEXT,
    -- A worker's claim on the run (see the claim mechanism in src/store/sql.rs).
    lease_token          TEXT,
    lease_expires_at     BIGINT,
    UNIQUE (project, workflow, event_id)
);

-- The sweeper's only way in: open runs by deadline.
CREATE INDEX runs_by_deadline ON runs (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX runs_by_lease ON runs (lease_token) WHERE lease_token IS NOT NULL;
CREATE INDEX runs_by_project_newest ON runs (project, opened_at DESC, id DESC);
CREATE INDEX runs_by_customer ON runs (project, customer_id, opened_at DESC);
CREATE INDEX runs_by_subscription ON runs (project, subscription_id);

CREATE TABLE run_timeline (
    seq      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   TEXT    NOT NULL REFERENCES runs (id),
    at       BIGINT  NOT NULL,
    source   TEXT    NOT NULL,
    stage    TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    evidence TEXT    NOT NULL
);
CREATE INDEX run_timeline_by_run ON run_timeline (run_id, seq);

CREATE TABLE incidents (
    id              TEXT    NOT NULL PRIMARY KEY,
    run_id          TEXT    NOT NULL REFERENCES runs (id),
    project         TEXT    NOT NULL,
    workflow        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    evidence        TEXT    NOT NULL,
    opened_at       BIGINT  NOT NULL,
    acknowledged_at BIGINT,
    resolved_at     BIGINT,
    resolution      TEXT,
    -- At most one incident per run and failure kind, whatever races.
    UNIQUE (run_id, kind)
);
CREATE INDEX incidents_by_project_newest ON incidents (project, opened_at DESC, id DESC);
CREATE INDEX incidents_by_status ON incidents (project, status, opened_at DESC, id DESC);
