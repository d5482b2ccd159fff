-- Single sign-on. The session of an operator whom the identity provider's
-- groups gave roles keeps those groups (a JSON array), whose roles are read
-- from the configuration at each request; NULL: a configured operator.
ALTER TABLE dashboard_sessions ADD COLUMN sso_groups TEXT;

-- Sign-ins begun at the identity provider and not yet back: found by the
-- hash of their `state` with the hash of the cookie that binds them to the
-- browser that began them, and taken once (a replayed `state` finds
-- nothing).
CREATE TABLE sso_sign_ins (
    state_hash    TEXT    NOT NULL PRIMARY KEY,
    browser_hash  TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    pkce_verifier TEXT    NOT NULL,
    next          TEXT    NOT NULL,
    created_at    INTEGER  NOT NULL,
    expires_at    INTEGER  NOT NULL
);
CREATE INDEX sso_sign_ins_by_expiry ON sso_sign_ins (expires_at);
