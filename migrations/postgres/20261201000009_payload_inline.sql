-- A compressed payload (about 2.4 KB of a 4.3 KB event) stays in its row.
-- PostgreSQL compresses a row once it passes toast_tuple_target (2 KB by
-- default) and, while it is still past the target, moves its largest value
-- to the TOAST table: a second heap row and a TOAST index entry per event,
-- written in every ingest and read back by every look at the payload. With
-- the target at half a page, compression alone brings a Stripe event under
-- it; only an unusually large event is still moved out.
ALTER TABLE stripe_events SET (toast_tuple_target = 4080);
