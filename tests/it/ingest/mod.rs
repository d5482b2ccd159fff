//! Stripe ingest: deliveries signed by Stripe's own SDK, what each event
//! type expects, and the hazards of a webhook endpoint: bad and hostile
//! deliveries, the same event many times and out of order, a process
//! killed or stopped mid-burst.

mod crash;
mod expectations;
mod hostile;
mod idempotency;
mod redelivery;
mod refusals;
mod shutdown;
mod stripe_sdk;

pub(crate) use expectations::payment_failed;
