-- PostgreSQL no longer checks the tables' references (to runs, incidents
-- and alert deliveries). It checks each inserted row with a query of its
-- own: in a sweep's transaction, inserting 500 timeline entries for the
-- 500 runs it had just failed took 6 to 14 ms with the check and 2 to 4 ms
-- without, and its incidents, probes and alerts paid the same, as did
-- every event ingested.
-- Nothing is lost with them: the store writes a row in the transaction
-- that writes or reads what the row refers to, and deletes no run,
-- incident or delivery. SQLite still checks every reference, and every
-- store behaviour is tested on both backends through the same statements,
-- so a write that breaks a reference still fails a test.
ALTER TABLE run_timeline DROP CONSTRAINT run_timeline_run_id_fkey;
ALTER TABLE incidents DROP CONSTRAINT incidents_run_id_fkey;
ALTER TABLE probe_queue DROP CONSTRAINT probe_queue_run_id_fkey;
ALTER TABLE probe_attempts DROP CONSTRAINT probe_attempts_run_id_fkey;
ALTER TABLE alert_delivery_incidents DROP CONSTRAINT alert_delivery_incidents_delivery_id_fkey;
ALTER TABLE alert_delivery_incidents DROP CONSTRAINT alert_delivery_incidents_incident_id_fkey;
ALTER TABLE alert_attempts DROP CONSTRAINT alert_attempts_delivery_id_fkey;
