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

pub mod api;
pub mod config;
pub mod incident;
pub mod ingest;
pub mod plan;
pub mod run;
pub mod server;
pub mod store;
pub mod stripe;
pub mod sweeper;
