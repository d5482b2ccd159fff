-- Opening a run reads the other runs of its subject (subscription, or a
-- customer without one) to settle their order. These indexes name every
-- column that read compares for equality, so a planner with no statistics
-- yet (a new database on renewal day) cannot prefer an index on the project
-- alone and read every open run of the project for each event.
-- It replaces the index on (project, subscription_id), which served only
-- this read.
DROP INDEX runs_by_subscription;
CREATE INDEX runs_by_subject ON runs (project, workflow, subscription_id);
CREATE INDEX runs_by_customer_subject ON runs (project, workflow, customer_id) WHERE subscription_id IS NULL;
