-- Project incidents: about a project's input, configuration or probe path
-- rather than one run, so they have no run.
ALTER TABLE incidents ALTER COLUMN run_id DROP NOT NULL;
-- 'run' or 'project'.
ALTER TABLE incidents ADD COLUMN scope TEXT NOT NULL DEFAULT 'run';
-- What a project incident is about within its kind (the price of an
-- unmapped-price incident); '' when its kind has one per project.
ALTER TABLE incidents ADD COLUMN subject TEXT NOT NULL DEFAULT '';
-- At most one open project incident per project, workflow, kind and
-- subject (a drill's apart), whatever replicas race to open it.
CREATE UNIQUE INDEX incidents_open_per_cause ON incidents (project, workflow, kind, subject, drill)
    WHERE scope = 'project' AND status <> 'resolved';

-- How many Stripe deliveries each project accepted and refused, per
-- minute and outcome ('accepted' or the refusal's reason): what the
-- watcher learns the usual traffic from and notices silence and refusals
-- by. One row per project, outcome and minute, however many requests, so a
-- flood of forged requests cannot grow storage without bound.
CREATE TABLE ingest_tallies (
    project  TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    minute   BIGINT  NOT NULL,   -- unix milliseconds at the minute's start
    count    BIGINT  NOT NULL,
    first_at BIGINT  NOT NULL,
    last_at  BIGINT  NOT NULL,
    PRIMARY KEY (project, outcome, minute)
);
CREATE INDEX ingest_tallies_by_minute ON ingest_tallies (project, minute);
