-- Runs carry no lease: the sweeper claims overdue runs by locking them in
-- the transaction that fails them, and no released version ever leased a
-- run. The columns and their index go.
DROP INDEX runs_by_lease;
ALTER TABLE runs DROP COLUMN lease_token;
ALTER TABLE runs DROP COLUMN lease_expires_at;
