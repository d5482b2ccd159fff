//! Integration tests: the real server on an ephemeral port (or the whole
//! router in process), a fresh SQLite file or PostgreSQL database per test,
//! and real peers. One module per feature; the hazards that threaten a
//! feature (bad input, crashes, redelivery, replicas) are parts of it.

mod support;

mod alerts;
mod dashboard;
mod drills;
mod http;
mod ingest;
mod operations;
mod probes;
mod runs;
mod store;
mod sweep;
mod watch;
