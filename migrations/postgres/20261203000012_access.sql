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
    created_at   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_by_project ON api_keys (project, created_at);

-- Who did what, when, from where: appended by the same transaction as the
-- change it records, never changed or removed by the application.
CREATE TABLE audit_log (
    id         TEXT    NOT NULL PRIMARY KEY,
    project    TEXT,
    at         BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,
    actor_kind TEXT    NOT NULL,
    address    TEXT,
    action     TEXT    NOT NULL,
    target     TEXT,
    before     TEXT,
    after      TEXT
);
CREATE INDEX audit_log_by_project ON audit_log (project, at DESC, id DESC);
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_is_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_is_not_truncated BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
