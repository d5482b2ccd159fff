//! Runs through the SDK's calls: a run's life from opening to its verdict,
//! and bad calls refused.

mod lifecycle;
mod refusals;
