//! Sending one delivery through its channel: Slack incoming webhooks, email
//! over SMTP (lettre), and outbound webhooks signed per the Standard
//! Webhooks spec (the spec's own crate signs). Whatever goes wrong becomes the
//! attempt's error; a channel's secret (a Slack URL, an SMTP password) never
//! appears in one.

use std::time::{Duration, Instant};

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::json;

use super::settings::{ChannelConfig, ChannelKind};
use super::templates::{Message, Templates};
use super::{DeliveryAttempt, DeliveryJob};

pub struct ChannelSender {
    http: reqwest::Client,
    timeout: Duration,
}

use crate::error_chain as chain;

/// What a failed send says: the status, when a response came, and why.
struct Failed(Option<u16>, String);

impl ChannelSender {
    pub fn new(timeout: Duration) -> Result<ChannelSender, String> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            // A receiver's redirect is a misconfiguration to see, not follow.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("assay-alerts/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| chain(&e))?;
        Ok(ChannelSender { http, timeout })
    }

    /// Sends `job` through `channel` once. Never fails: a failure is an
    /// attempt with an error.
    pub async fn send(
        &self,
        channel: &ChannelConfig,
        templates: &Templates,
        public_url: &str,
        job: &DeliveryJob,
    ) -> DeliveryAttempt {
        let at = crate::now();
        let started = Instant::now();
        let message = Message::new(job.delivery.event, &job.incidents, public_url);
        let result = match &channel.kind {
            ChannelKind::Slack { url } => match templates.slack(&message) {
                Ok(body) => {
                    self.post(
                        url.expose(),
                        serde_json::to_vec(&body).unwrap_or_default(),
                        None,
                    )
                    .await
                }
                Err(e) => Err(Failed(None, format!("the Slack template: {e}"))),
            },
            ChannelKind::Webhook { url, secret } => {
                let body = json!({
                    "type": format!("incident.{}", job.delivery.event),
                    "drill": message.drill(),
                    "headline": message.headline(),
                    "delivery_id": job.delivery.id,
                    "count": job.incidents.len(),
                    "incidents": message.linked(&job.incidents),
                    "dashboard_url": public_url,
                });
                let body = serde_json::to_vec(&body).unwrap_or_default();
                self.post(
                    url,
                    body,
                    Some((secret.expose(), &job.delivery.id.to_string())),
                )
                .await
            }
            ChannelKind::Email { smtp_url, from, to } => match templates.email(&message) {
                Ok(email) => self.mail(smtp_url.expose(), from, to, email).await,
                Err(e) => Err(Failed(None, format!("the email templates: {e}"))),
            },
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        match result {
            Ok(status) => DeliveryAttempt {
                at,
                duration_ms,
                status_code: status,
                error: None,
            },
            Err(Failed(status, error)) => DeliveryAttempt {
                at,
                duration_ms,
                status_code: status,
                error: Some(error),
            },
        }
    }

    /// POSTs JSON; with `signing`, signs it per Standard Webhooks with the
    /// delivery id as the message id, so a receiver can drop a repeat.
    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        signing: Option<(&str, &str)>,
    ) -> Result<Option<u16>, Failed> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some((secret, id)) = signing {
            let timestamp = chrono::Utc::now().timestamp();
            let signature = standardwebhooks::Webhook::new(secret)
                .and_then(|w| w.sign(id, timestamp, &body))
                .map_err(|e| Failed(None, format!("signing failed: {e}")))?;
            request = request
                .header(standardwebhooks::HEADER_WEBHOOK_ID, id)
                .header(
                    standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                    timestamp.to_string(),
                )
                .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature);
        }
        let response = request.body(body).send().await.map_err(|e| {
            // Never the URL: a Slack URL is its token.
            let e = e.without_url();
            Failed(
                None,
                if e.is_timeout() {
                    format!("timed out after {}", crate::time::written(self.timeout))
                } else {
                    chain(&e)
                },
            )
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            Ok(Some(status))
        } else {
            Err(Failed(Some(status), format!("HTTP {status}")))
        }
    }

    async fn mail(
        &self,
        smtp_url: &str,
        from: &str,
        to: &[String],
        email: super::templates::Email,
    ) -> Result<Option<u16>, Failed> {
        let parse = |address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|e| Failed(None, format!("`{address}` is not an email address: {e}")))
        };
        let mut builder = lettre::Message::builder()
            .from(parse(from)?)
            .subject(email.subject);
        for address in to {
            builder = builder.to(parse(address)?);
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(email.text, email.html))
            .map_err(|e| Failed(None, format!("the email could not be built: {e}")))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|_| Failed(None, "the SMTP URL is not usable".to_owned()))?
            .timeout(Some(self.timeout))
            .build();
        // lettre's timeout bounds each SMTP command; this bounds the whole
        // conversation, so a send never outlives its lease.
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Err(_) => Err(Failed(
                None,
                format!(
                    "SMTP: timed out after {}",
                    crate::time::written(self.timeout)
                ),
            )),
            Ok(Ok(response)) => Ok(Some(u16::from(response.code()))),
            Ok(Err(e)) => Err(Failed(
                e.status().map(u16::from),
                format!("SMTP: {}", chain(&e)),
            )),
        }
    }
}
