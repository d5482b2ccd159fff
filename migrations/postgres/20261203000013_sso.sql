-- Single sign-on. A session of an operator whom the identity provider's
-- groups gave roles keeps those roles (JSON, crate::access::sso::Roles);
-- NULL: the configuration's roles for the operator's name.
ALTER TABLE dashboard_sessions ADD COLUMN roles TEXT;

-- Sign-ins begun at the identity provider and not yet back: found by the
-- hash of their `state`, taken once (a replayed `state` finds nothing),
-- bound to the browser that began them by the hash of a cookie.
CREATE TABLE sso_sign_ins (
    state_hash    TEXT    NOT NULL PRIMARY KEY,
    browser_hash  TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    pkce_verifier TEXT    NOT NULL,
    next          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE INDEX sso_sign_ins_by_expiry ON sso_sign_ins (expires_at);
