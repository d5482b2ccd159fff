-- Incident alerts: an outbox of deliveries, written in the transaction that
-- opens (or resolves) the incidents, and sent by the alert sender.

-- One message to one channel: about one incident, or about several that
-- share a cause (a grouped alert).
CREATE TABLE alert_deliveries (
    id               TEXT    NOT NULL PRIMARY KEY,
    project          TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    -- 'opened', 'resolved' or 'reminder'.
    event            TEXT    NOT NULL,
    -- 'pending', 'sent', 'dead' (gave up) or 'skipped' (no longer needed).
    status           TEXT    NOT NULL,
    attempts         INTEGER  NOT NULL DEFAULT 0,
    created_at       INTEGER  NOT NULL,
    -- When to try next; NULL once the delivery is settled.
    next_attempt_at  INTEGER,
    settled_at       INTEGER,
    last_error       TEXT,
    -- What its incidents have in common (workflow, deploy, missed stage,
    -- kind), and whether it is about several: an incident of that cause
    -- opening while a grouped delivery waits joins it.
    cause            TEXT,
    grouped          BOOLEAN NOT NULL DEFAULT FALSE,
    lease_token      TEXT,
    lease_expires_at INTEGER
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX alert_deliveries_waiting_groups ON alert_deliveries (project, channel, cause) WHERE status = 'pending' AND grouped;
CREATE INDEX alert_deliveries_by_lease ON alert_deliveries (lease_token) WHERE lease_token IS NOT NULL;

-- Which incidents a delivery is about, in the order the message lists them.
CREATE TABLE alert_delivery_incidents (
    delivery_id TEXT   NOT NULL REFERENCES alert_deliveries (id),
    incident_id TEXT   NOT NULL REFERENCES incidents (id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, incident_id)
);
CREATE INDEX alert_delivery_incidents_by_incident ON alert_delivery_incidents (incident_id);

-- Every attempt to send a delivery.
CREATE TABLE alert_attempts (
    seq         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT    NOT NULL REFERENCES alert_deliveries (id),
    at          INTEGER  NOT NULL,
    duration_ms INTEGER  NOT NULL,
    status_code INTEGER,
    error       TEXT
);
CREATE INDEX alert_attempts_by_delivery ON alert_attempts (delivery_id, seq);

-- When the incident was last alerted about, for reminders; open incidents
-- only, so that the reminder query reads only what it may remind of.
ALTER TABLE incidents ADD COLUMN last_alerted_at INTEGER;
CREATE INDEX incidents_to_remind ON incidents (last_alerted_at) WHERE status = 'open';
