//! The test harness, by what it provides: databases ([`db`]), a running
//! Assay ([`server`]), Stripe's side ([`stripe`]), processes ([`process`])
//! and peers ([`peers`], an OpenID provider in [`oidc`]), and the one way a test waits ([`wait`]).

mod db;
mod oidc;
mod peers;
mod process;
mod server;
mod stripe;
mod wait;

pub(crate) use db::on_both_backends;
pub use db::*;
pub use oidc::*;
pub use peers::*;
pub use process::*;
pub use server::*;
pub use stripe::*;
pub use wait::wait_for;
