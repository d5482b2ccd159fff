//! Assay proves that a Stripe billing event became the access the customer
//! paid for: every accepted event opens a run that must move
//! `received -> reconciled -> access_asserted -> closed` before its
//! deadlines, and a missed deadline opens an incident that names the missing
//! outcome.
//!
//! Where things live: [`run`] (how a run changes stage), [`incident`] (what a
//! missed deadline says), [`stripe`] (signatures and events), [`ingest`]
//! (from a delivery to a stored run), [`store`] (persistence), [`sweeper`]
//! (deadlines), [`api`] (HTTP), [`config`], [`server`].

pub mod access;
pub mod alert;
pub mod api;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod drill;
pub mod incident;
pub mod ingest;
pub mod metrics;
mod names;
pub mod plan;
pub mod probe;
pub mod run;
pub mod server;
pub mod settings;
pub mod state;
pub mod store;
pub mod stripe;
pub mod sweeper;
pub mod telemetry;
pub mod time;
pub mod watch;
pub mod worker;

/// rustls needs one process-wide crypto provider (ring's) before any HTTP
/// client is built; every place that builds one calls this first. Installing
/// twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and its causes in one line: a client library's own message
/// alone often says little ("error sending request").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// The current time, to the millisecond: the precision every time is stored
/// with, so that what a response shows equals what a later read returns.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
