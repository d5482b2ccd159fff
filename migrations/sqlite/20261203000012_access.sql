-- Scoped API keys: several per project, each with its scopes. Only the
-- SHA-256 of a key is kept; its prefix (`ak_live_1a2b3c4d`) names it in
-- lists and in the audit log, and lets secret scanners recognise a leak.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    project      TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    -- Comma separated, in the order of crate::access::Scope.
    scopes       TEXT    NOT NULL,
    created_at   INTEGER  NOT NULL,
    created_by   TEXT    NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_by_project ON api_keys (project, created_at);

-- Who did what, when, from where: appended by the same transaction as the
-- change it records, never changed or removed by the application.
CREATE TABLE audit_log (
    id         TEXT    NOT NULL PRIMARY KEY,
    project    TEXT,
    at         INTEGER  NOT NULL,
    actor      TEXT    NOT NULL,
    actor_kind TEXT    NOT NULL,
    address    TEXT,
    action     TEXT    NOT NULL,
    target     TEXT,
    before     TEXT,
    after      TEXT
);
CREATE INDEX audit_log_by_project ON audit_log (project, at DESC, id DESC);
CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
