//! Stripe: proving a webhook came from Stripe, and reading what it asks of us.

pub mod event;
pub mod signature;

pub use event::{EventError, StripeEvent};
pub use signature::{SignatureError, verify};
