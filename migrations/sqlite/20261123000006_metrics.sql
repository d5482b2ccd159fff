-- What /metrics counts at each scrape, through partial indexes: unresolved
-- incidents and dead alert deliveries are few, however many are stored.
CREATE INDEX incidents_unresolved ON incidents (project) WHERE status <> 'resolved';
CREATE INDEX alert_deliveries_dead ON alert_deliveries (project) WHERE status = 'dead';
