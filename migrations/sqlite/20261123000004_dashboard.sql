-- Dashboard sign-in sessions, shared by every replica. Only a hash of the
-- session id is kept: the database never holds a usable cookie.
CREATE TABLE dashboard_sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    operator   TEXT    NOT NULL,
    -- The token every form of this session carries (CSRF).
    csrf_token TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);

-- Runs by status, newest first: the dashboard's open runs (and the API's
-- `status=` filter) read one page through it, however many runs are stored.
CREATE INDEX runs_by_status ON runs (project, status, opened_at DESC, id DESC);
