//! Integration tests: the real server on an ephemeral port, a temp SQLite
//! file, and real HTTP. One binary, one module per concern.

mod support;

mod alerts;
mod bad_input;
mod browser;
mod cli;
mod crash;
mod dashboard;
mod deploy;
mod drills;
mod example_app;
mod expectations;
mod hostile;
mod idempotency;
mod lifecycle;
mod metrics;
mod openapi;
mod probes;
mod redelivery;
mod replicas;
mod shapes;
mod shutdown;
mod store_contract;
mod stripe_sdk;
mod sweeper_cost;
mod telemetry;
