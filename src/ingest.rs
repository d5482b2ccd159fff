//! Stripe ingest: from a signed request to a stored event and an open run.
//! The HTTP handler only maps the outcome; drills reuse this path over HTTP.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::ProjectConfig;
use crate::run::{BILLING_WORKFLOW, Realm, RunSpec, Source};
use crate::store::{Ingest, Ingested, StoreError, StoredEvent};
use crate::stripe::{EventError, Refusal, SignatureError, StripeEvent, verify};
use crate::watch::Counted;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "project `{0}` has no Stripe webhook secret; set ASSAY_STRIPE_WEBHOOK_SECRET (or stripe_webhook_secret in the config file)"
    )]
    NoSecret(String),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    DrillMarker(#[from] crate::drill::BadDrillMarker),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// Why Stripe's delivery was refused, when the delivery is at fault
    /// (not Assay's configuration or its database).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            IngestError::Signature(SignatureError::OutsideTolerance { .. }) => {
                Some(Refusal::StaleSignature)
            }
            IngestError::Signature(SignatureError::NoMatch) => Some(Refusal::SignatureMismatch),
            IngestError::Signature(_) => Some(Refusal::InvalidSignatureHeader),
            IngestError::Event(_) | IngestError::DrillMarker(_) => Some(Refusal::MalformedEvent),
            IngestError::NoSecret(_) | IngestError::Store(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub event_id: String,
    pub duplicate: bool,
    pub run_id: Option<Uuid>,
    /// A failure drill's event.
    pub drill: bool,
}

/// What a delivery came to, as the watcher counts it: a first delivery of
/// a customer's event is traffic, a refusal is counted by its reason; a
/// redelivery, a drill's event and a failure of Assay's own are not
/// counted.
pub fn counted(outcome: &Result<Accepted, IngestError>) -> Option<Counted> {
    match outcome {
        Ok(accepted) if !accepted.duplicate && !accepted.drill => Some(Counted::Accepted),
        Ok(_) => None,
        Err(e) => e.refusal().map(Counted::Refused),
    }
}

/// Verifies, decodes and durably stores one delivery. Nothing is written
/// unless the signature holds and the event decodes; an event seen before
/// changes nothing.
#[tracing::instrument(
    name = "ingest",
    skip_all,
    fields(project = %project.name, event_id = tracing::field::Empty, run_id = tracing::field::Empty)
)]
pub async fn stripe_event(
    store: &dyn Ingest,
    project: &ProjectConfig,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Accepted, IngestError> {
    if project.webhook_secrets.is_empty() {
        return Err(IngestError::NoSecret(project.name.clone()));
    }
    let secrets: Vec<&str> = project.webhook_secrets.iter().map(|s| s.expose()).collect();
    verify(signature, body, &secrets, now.timestamp())?;
    let text = StripeEvent::text_of(body)?;
    let event = StripeEvent::parse_text(text)?;
    tracing::Span::current().record("event_id", event.id.as_str());
    // A drill's run has the drill's deadlines and is never probed by the
    // prober: the drill makes its own probe.
    let drill_id = crate::drill::drill_of(&event)?;
    let (deadlines, probe_start) = match Realm::of(drill_id) {
        Realm::Drill(_) => (project.drill.deadlines(), None),
        Realm::Customer => (project.deadlines, project.probe_start()),
    };
    let spec = event
        .run_facts(&project.access_policy(), now)
        .map(|facts| RunSpec {
            project: project.name.clone(),
            workflow: BILLING_WORKFLOW.to_owned(),
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            customer_id: facts.customer_id,
            subscription_id: facts.subscription_id,
            expectation: facts.expectation,
            livemode: event.livemode,
            event_created_at: event.created_at(),
            deadlines,
            probe_start,
            source: Source::Stripe,
            drill_id,
        });
    // The text checked once above, copied: no second walk over the body.
    let payload = text.to_owned();
    let stored = StoredEvent {
        project: project.name.clone(),
        event_id: event.id.clone(),
        event_type: event.event_type,
        livemode: event.livemode,
        created: event.created,
        payload,
    };
    let outcome = store.ingest_stripe_event(stored, spec, now).await?;
    if let Ingested::Stored { run: Some(run) } = &outcome {
        tracing::Span::current().record("run_id", tracing::field::display(run.id));
    }
    Ok(match outcome {
        Ingested::Duplicate { run_id } => Accepted {
            event_id: event.id,
            duplicate: true,
            run_id,
            drill: drill_id.is_some(),
        },
        Ingested::Stored { run } => Accepted {
            event_id: event.id,
            duplicate: false,
            run_id: run.map(|r| r.id),
            drill: drill_id.is_some(),
        },
    })
}
