//! The app's side of Assay: your Stripe webhook handler tells Assay what it
//! did with each event, so that Assay can prove the customer got access.
//!
//! ```no_run
//! # async fn handler() -> Result<(), assay_client::Error> {
//! use assay_client::{Client, OpenRun, Stage};
//! let assay = Client::builder("http://127.0.0.1:8080", "the-project-api-key")
//!     .deploy_sha_from_env("GIT_SHA")
//!     .build()?;
//! assay.open_run(&OpenRun::new("evt_1", "invoice.paid", "cus_1")).await?;
//! // ... update the subscription row ...
//! assay.report("evt_1", Stage::Reconciled { expected_plan: Some("pro".into()) }).await?;
//! // ... grant the entitlement ...
//! assay.report("evt_1", Stage::AccessAsserted { observed_plan: "pro".into(), deploy_sha: None }).await?;
//! # Ok(()) }
//! ```
//!
//! Every call is idempotent by event id, so the client retries network
//! errors, 429 and 5xx answers with backoff, within a timeout. A webhook
//! handler that must not wait at all uses [`Client::background`]: reports
//! go to a bounded in-memory queue and are sent in order by a task; when
//! the queue is full a report is dropped and counted, never blocking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// What went wrong with a call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Assay refused the call (a 4xx): retrying would not help.
    #[error("Assay refused the call: HTTP {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Assay could not be reached, or kept failing, for every attempt.
    #[error("Assay is unavailable after {attempts} attempt(s): {last}")]
    Unavailable { attempts: u32, last: String },
    /// The client is configured wrongly.
    #[error("the Assay client is misconfigured: {0}")]
    Config(String),
}

/// A run as Assay answers it. The fields an app acts on are typed; the rest
/// of Assay's answer is in `other`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Run {
    pub id: String,
    pub event_id: String,
    pub stage: String,
    pub status: String,
    pub customer_id: Option<String>,
    pub expected_plan: Option<String>,
    pub observed_plan: Option<String>,
    pub deploy_sha: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Opens a run from the app side, for an event Assay may not have seen yet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpenRun {
    pub event_id: String,
    pub event_type: String,
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_plan: Option<String>,
}

impl OpenRun {
    pub fn new(event_id: &str, event_type: &str, customer_id: &str) -> OpenRun {
        OpenRun {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            customer_id: customer_id.to_owned(),
            subscription_id: None,
            expected_plan: None,
        }
    }
}

/// A stage the app reached for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// The app's subscription row now reflects the event; `expected_plan`
    /// fills in what the event could not tell (a checkout session).
    Reconciled { expected_plan: Option<String> },
    /// The customer's access, as the app grants it now; `deploy_sha`
    /// overrides the client's for this report.
    AccessAsserted {
        observed_plan: String,
        deploy_sha: Option<String>,
    },
}

impl Stage {
    fn path(&self) -> &'static str {
        match self {
            Stage::Reconciled { .. } => "reconciled",
            Stage::AccessAsserted { .. } => "access_asserted",
        }
    }

    fn body(&self, deploy_sha: Option<&str>) -> Value {
        match self {
            Stage::Reconciled { expected_plan } => {
                json!({ "expected_plan": expected_plan, "deploy_sha": deploy_sha })
            }
            Stage::AccessAsserted {
                observed_plan,
                deploy_sha: own,
            } => json!({
                "observed_plan": observed_plan,
                "deploy_sha": own.as_deref().or(deploy_sha),
            }),
        }
    }
}

/// How a client retries.
#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    initial: Duration,
    max: Duration,
}

impl Retry {
    fn wait(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

pub struct ClientBuilder {
    base_url: String,
    api_key: String,
    timeout: Duration,
    retry: Retry,
    deploy_sha: Option<String>,
    deploy_sha_var: Option<String>,
}

impl ClientBuilder {
    /// The time one attempt may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Attempts per call, the first included (default 4), and the first
    /// wait between them, doubling up to `max` (default 200 ms to 2 s).
    pub fn retries(mut self, attempts: u32, initial: Duration, max: Duration) -> ClientBuilder {
        self.retry = Retry {
            attempts: attempts.max(1),
            initial,
            max,
        };
        self
    }

    /// Reads the app's deploy SHA from this environment variable, once, at
    /// [`ClientBuilder::build`]; every report then carries it.
    pub fn deploy_sha_from_env(mut self, var: &str) -> ClientBuilder {
        self.deploy_sha_var = Some(var.to_owned());
        self
    }

    /// Sets the deploy SHA every report carries.
    pub fn deploy_sha(mut self, sha: &str) -> ClientBuilder {
        self.deploy_sha = Some(sha.to_owned());
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        let base = url::Url::parse(self.base_url.trim())
            .map_err(|e| Error::Config(format!("the base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config("the base URL must be http or https".into()));
        }
        if self.api_key.trim().is_empty() {
            return Err(Error::Config("the API key is empty".into()));
        }
        // reqwest is built without a TLS provider of its own: ring's, as in
        // Assay. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("assay-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let deploy_sha = self.deploy_sha.or_else(|| {
            self.deploy_sha_var
                .and_then(|var| std::env::var(var).ok())
                .map(|sha| sha.trim().to_owned())
                .filter(|sha| !sha.is_empty())
        });
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: self.base_url.trim().trim_end_matches('/').to_owned(),
                api_key: self.api_key,
                retry: self.retry,
                deploy_sha,
            }),
            traceparent: None,
        })
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    api_key: String,
    retry: Retry,
    deploy_sha: Option<String>,
}

/// A handle to Assay's API for one project; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// A W3C `traceparent` sent with every call of this handle.
    traceparent: Option<String>,
}

impl Client {
    pub fn builder(base_url: &str, api_key: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            api_key: api_key.to_owned(),
            timeout: Duration::from_secs(5),
            retry: Retry {
                attempts: 4,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(2),
            },
            deploy_sha: None,
            deploy_sha_var: None,
        }
    }

    /// The deploy SHA the reports carry, if configured.
    pub fn deploy_sha(&self) -> Option<&str> {
        self.inner.deploy_sha.as_deref()
    }

    /// A handle whose calls carry this W3C `traceparent`, linking the app's
    /// trace (the webhook handler's span) to the run in Assay.
    pub fn traced(&self, traceparent: &str) -> Client {
        Client {
            inner: self.inner.clone(),
            traceparent: Some(traceparent.to_owned()),
        }
    }

    /// Opens the event's run; idempotent on the event id.
    pub async fn open_run(&self, run: &OpenRun) -> Result<Run, Error> {
        let body = serde_json::to_value(run).map_err(|e| Error::Config(e.to_string()))?;
        self.call(reqwest::Method::POST, "/v1/runs".to_owned(), Some(body))
            .await
    }

    /// Reports a stage of the event's run (named by its event id).
    pub async fn report(&self, event_id: &str, stage: Stage) -> Result<Run, Error> {
        check_event_id(event_id)?;
        let path = format!("/v1/runs/{}/stages/{}", encode(event_id), stage.path());
        let body = stage.body(self.inner.deploy_sha.as_deref());
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The event's run, as Assay sees it now.
    pub async fn get_run(&self, event_id: &str) -> Result<Run, Error> {
        check_event_id(event_id)?;
        self.call(
            reqwest::Method::GET,
            format!("/v1/runs/{}", encode(event_id)),
            None,
        )
        .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: String,
        body: Option<Value>,
    ) -> Result<Run, Error> {
        let inner = &self.inner;
        let url = format!("{}{path}", inner.base);
        let mut failures = 0;
        loop {
            let mut request = inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&inner.api_key);
            if let Some(traceparent) = &self.traceparent {
                request = request.header("traceparent", traceparent);
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let last = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let bytes = response.bytes().await.unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_slice(&bytes).map_err(|e| Error::Unavailable {
                            attempts: failures + 1,
                            last: format!("Assay's answer is not a run: {e}"),
                        });
                    }
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let text =
                        |key: &str| answer["error"][key].as_str().unwrap_or_default().to_owned();
                    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                    {
                        return Err(Error::Refused {
                            status: status.as_u16(),
                            code: text("code"),
                            message: text("message"),
                        });
                    }
                    format!("HTTP {}", status.as_u16())
                }
                Err(e) => e.without_url().to_string(),
            };
            failures += 1;
            if failures >= inner.retry.attempts {
                return Err(Error::Unavailable {
                    attempts: failures,
                    last,
                });
            }
            tracing::debug!(%url, failures, error = %last, "Assay call failed; retrying");
            tokio::time::sleep(inner.retry.wait(failures)).await;
        }
    }

    /// A reporter that never blocks the caller: reports are queued (at most
    /// `capacity`) and sent in order by a task on the current tokio
    /// runtime, each retried until it is sent, refused, or older than
    /// `give_up_after`. Must be called inside a tokio runtime.
    pub fn background(&self, capacity: usize, give_up_after: Duration) -> Reporter {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(send_in_order(
            self.clone(),
            rx,
            stats.clone(),
            give_up_after,
        ));
        Reporter { tx, stats }
    }
}

/// Event ids are Stripe's (`evt_...`), but nothing should be able to change
/// the path.
/// An event id that would not name a run: empty, or a dot segment that a
/// URL parser resolves (even percent-encoded) and so changes the path.
fn check_event_id(event_id: &str) -> Result<(), Error> {
    if event_id.trim().is_empty() || event_id == "." || event_id == ".." {
        return Err(Error::Config(format!("`{event_id}` is not an event id")));
    }
    Ok(())
}

fn encode(segment: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

enum Call {
    Open(OpenRun),
    Report(String, Stage),
}

/// A queued call and when it was queued: its age, not its wait at the head
/// of the queue, decides when it is given up.
struct Job {
    call: Call,
    queued_at: tokio::time::Instant,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Queued or being sent.
    pending: AtomicU64,
    settled: tokio::sync::Notify,
}

/// Queues reports for the background task; cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

/// The queue is full (or the task is gone): the report was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Assay report queue is full; the report was dropped")]
pub struct QueueFull;

impl Reporter {
    fn queue(&self, call: Call) -> Result<(), QueueFull> {
        self.stats.pending.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            call,
            queued_at: tokio::time::Instant::now(),
        };
        self.tx.try_send(job).map_err(|_| {
            self.stats.pending.fetch_sub(1, Ordering::SeqCst);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            QueueFull
        })
    }

    /// Queues opening a run; returns at once.
    pub fn open_run(&self, run: OpenRun) -> Result<(), QueueFull> {
        self.queue(Call::Open(run))
    }

    /// Queues a stage report; returns at once.
    pub fn report(&self, event_id: &str, stage: Stage) -> Result<(), QueueFull> {
        self.queue(Call::Report(event_id.to_owned(), stage))
    }

    /// Waits, at most `timeout`, until every queued report is sent or given
    /// up; call it on the app's graceful shutdown. Returns how many were
    /// still pending (0: all settled).
    pub async fn flush(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = self.stats.settled.notified();
            let pending = self.stats.pending.load(Ordering::SeqCst);
            if pending == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.stats.pending.load(Ordering::SeqCst);
            }
        }
    }

    /// Reports sent, dropped (queue full) and given up (refused, or
    /// unavailable past the give-up time) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.stats.sent.load(Ordering::Relaxed),
            self.stats.dropped.load(Ordering::Relaxed),
            self.stats.failed.load(Ordering::Relaxed),
        )
    }

    /// Reports waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

async fn send_in_order(
    client: Client,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    give_up_after: Duration,
) {
    while let Some(job) = rx.recv().await {
        let mut rounds = 0;
        loop {
            let result = match &job.call {
                Call::Open(run) => client.open_run(run).await,
                Call::Report(event_id, stage) => client.report(event_id, stage.clone()).await,
            };
            match result {
                Ok(_) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(Error::Unavailable { last, .. }) if job.queued_at.elapsed() < give_up_after => {
                    // Assay is down: keep the report, in order, and look
                    // again later; new reports wait in the bounded queue.
                    rounds += 1;
                    tracing::debug!(error = %last, "Assay unavailable; the report waits");
                    let wait = client
                        .inner
                        .retry
                        .wait(rounds + client.inner.retry.attempts);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "an Assay report was given up");
                    break;
                }
            }
        }
        stats.pending.fetch_sub(1, Ordering::SeqCst);
        stats.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_bodies_carry_the_deploy_sha() {
        let body = Stage::AccessAsserted {
            observed_plan: "pro".into(),
            deploy_sha: None,
        }
        .body(Some("abc"));
        assert_eq!(body, json!({"observed_plan": "pro", "deploy_sha": "abc"}));
        let body = Stage::AccessAsserted {
            observed_plan: "pro".into(),
            deploy_sha: Some("def".into()),
        }
        .body(Some("abc"));
        assert_eq!(body["deploy_sha"], "def");
        let body = Stage::Reconciled {
            expected_plan: None,
        }
        .body(None);
        assert_eq!(body, json!({"expected_plan": null, "deploy_sha": null}));
    }

    #[test]
    fn event_ids_cannot_change_the_path() {
        assert!(check_event_id("..").is_err() && check_event_id(".").is_err());
        assert!(check_event_id("evt_1").is_ok());
        assert_eq!(encode("evt_1"), "evt_1");
        assert_eq!(encode("../x?y z"), "%2E%2E%2Fx%3Fy%20z");
    }

    #[test]
    fn retries_double_up_to_the_cap() {
        let retry = Retry {
            attempts: 4,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=5).map(|n| retry.wait(n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        assert!(matches!(
            Client::builder("ftp://x", "key").build(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::builder("http://127.0.0.1:1", " ").build(),
            Err(Error::Config(_))
        ));
    }
}
