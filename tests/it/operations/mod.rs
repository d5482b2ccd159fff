//! Running Assay: the command line, the deploy files, metrics, traces, and
//! the example app beside Assay.

mod cli;
mod deploy;
mod example_app;
mod metrics;
mod telemetry;
