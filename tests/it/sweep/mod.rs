//! The sweeper: what a sweep costs as runs accumulate, and replicas that
//! sweep (and ingest) side by side.

mod cost;
mod replicas;
