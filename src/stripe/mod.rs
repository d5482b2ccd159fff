//! Stripe: proving a webhook came from Stripe, and reading what it asks of us.

pub mod event;
pub mod signature;

pub use event::{EventError, StripeEvent};
pub use signature::{SignatureError, verify};

use crate::names::named_enum;

named_enum! {
    /// Why a delivery to the webhook endpoint was refused: the error code
    /// its 400 answer carries.
    Refusal, "refusal reason" {
        SignatureMismatch => "signature_mismatch",
        StaleSignature => "stale_signature",
        InvalidSignatureHeader => "invalid_signature_header",
        MalformedEvent => "malformed_event",
    }
}

impl Refusal {
    /// What most often causes refusals of this reason, for an operator.
    pub fn likely_cause(self) -> &'static str {
        match self {
            Refusal::SignatureMismatch => {
                "the webhook signing secret was rotated on one side only: compare the endpoint's signing secret in Stripe (Developers > Webhooks) with ASSAY_STRIPE_WEBHOOK_SECRET; during a rotation, give Assay both secrets"
            }
            Refusal::StaleSignature => {
                "the signatures are older than 5 minutes when they arrive: this host's clock is off (check NTP), or a proxy holds or replays requests"
            }
            Refusal::InvalidSignatureHeader => {
                "the Stripe-Signature header is missing or mangled: a proxy in front of Assay strips or rewrites it, or something other than Stripe calls the endpoint"
            }
            Refusal::MalformedEvent => {
                "the body is not a Stripe event as signed: a proxy rewrites bodies (re-encoding, compression), or the endpoint was given another service's webhook"
            }
        }
    }
}
