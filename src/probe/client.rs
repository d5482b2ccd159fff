//! The probe's HTTP request, made safely: only allowed hosts, checked again
//! after DNS resolution (so a name cannot point the prober at cloud metadata
//! or an internal service), redirects only to allowed hosts, a size cap on
//! the response, connect and total timeouts. Whatever goes wrong ends the
//! attempt with an error an operator can read; nothing hangs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::settings::{AllowList, ProbeConfig};
use super::url::render_url;
use crate::run::{NO_PLAN, ProbeAttempt, Run};
use crate::settings::shown_url;

/// Resolves names like the system does, then keeps only the addresses the
/// allow list permits; a name with none left is refused.
struct GuardedResolver {
    allow: AllowList,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| allow.allows_address(addr.ip(), false));
            if allowed.is_empty() {
                let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves to {}, which ASSAY_PROBE_ALLOW_HOSTS does not allow",
                    if refused.is_empty() {
                        "nothing".to_owned()
                    } else {
                        refused.join(", ")
                    }
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// What a successful response said.
struct Observed {
    status: u16,
    plan: Option<String>,
    features: Option<Vec<String>>,
    deploy_sha: Option<String>,
}

/// A failed attempt: the status, when a response came, and why.
struct Failure {
    status: Option<u16>,
    message: String,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            status: None,
            message: message.into(),
        }
    }
}

pub struct ProbeClient {
    http: reqwest::Client,
    config: Arc<ProbeConfig>,
    project: String,
    /// Spaces out the probes to each host.
    pacing: governor::DefaultKeyedRateLimiter<String>,
}

use crate::error_chain as chain;

impl ProbeClient {
    pub fn new(project: &str, config: Arc<ProbeConfig>) -> Result<ProbeClient, String> {
        crate::install_crypto_provider();
        // Redirects stay on the probe's own origin: the probe's headers may
        // carry a token, and reqwest forwards custom headers to any host.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 3 {
                return attempt.error("more than 3 redirects");
            }
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if same_origin {
                attempt.follow()
            } else {
                let to = shown_url(attempt.url().as_str());
                attempt.error(format!(
                    "redirected to {to}, another origin (probes follow redirects only within their own scheme, host and port)"
                ))
            }
        });
        let http = reqwest::Client::builder()
            .dns_resolver(GuardedResolver {
                allow: config.allow.clone(),
            })
            .redirect(redirects)
            // A proxy from the environment would bypass the address check.
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("assay-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| chain(&e))?;
        let spacing = Duration::from_secs(1) / config.host_rate.max(1);
        let quota = governor::Quota::with_period(spacing).ok_or("the probe rate is zero")?;
        Ok(ProbeClient {
            http,
            config,
            project: project.to_owned(),
            pacing: governor::RateLimiter::keyed(quota),
        })
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Waits for `host`'s next turn: at most `host_rate` probes start per
    /// second, evenly spaced, however many are due.
    pub async fn wait_for_turn(&self, host: &str) {
        self.pacing.until_key_ready(&host.to_owned()).await;
    }

    /// The URL to probe for `run`, checked against the allow list.
    pub fn target(&self, run: &Run) -> Result<url::Url, String> {
        let rendered = render_url(&self.config.url_template, &|field| match field {
            "customer_id" => run.customer_id.clone(),
            "subscription_id" => run.subscription_id.clone(),
            "event_id" => Some(run.event_id.clone()),
            _ => Some(self.project.clone()),
        })?;
        let url =
            url::Url::parse(&rendered).map_err(|e| format!("`{rendered}` is not a URL: {e}"))?;
        match url.host() {
            Some(host) if self.config.allow.allows_host(&host) => Ok(url),
            Some(host) => Err(format!("host {host} is not in ASSAY_PROBE_ALLOW_HOSTS")),
            None => Err(format!("`{rendered}` has no host")),
        }
    }

    /// Probes the app once for `run`. Never fails: a failure is an attempt
    /// with an error.
    pub async fn probe(&self, run: &Run, extra_headers: &HeaderMap) -> ProbeAttempt {
        let at = crate::now();
        let started = Instant::now();
        let (url, result) = match self.target(run) {
            Ok(url) => (
                shown_url(url.as_str()),
                self.fetch(url, extra_headers).await,
            ),
            Err(e) => (shown_url(&self.config.url_template), Err(Failure::new(e))),
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        match result {
            Ok(seen) => ProbeAttempt {
                at,
                duration_ms,
                url,
                status_code: Some(seen.status),
                observed_plan: seen.plan,
                observed_features: seen.features,
                deploy_sha: seen.deploy_sha,
                error: None,
                matched: false,
            },
            Err(failure) => ProbeAttempt {
                at,
                duration_ms,
                url,
                status_code: failure.status,
                observed_plan: None,
                observed_features: None,
                deploy_sha: None,
                error: Some(failure.message),
                matched: false,
            },
        }
    }

    async fn fetch(&self, url: url::Url, extra_headers: &HeaderMap) -> Result<Observed, Failure> {
        let config = &self.config;
        let method =
            reqwest::Method::from_bytes(config.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = self
            .http
            .request(method, url.as_str())
            .headers(extra_headers.clone());
        for (name, value) in &config.headers {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) else {
                continue;
            };
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        // Errors are stored and shown: never with the URL, which may carry
        // a token in its query.
        let mut response = request.send().await.map_err(|e| {
            let e = e.without_url();
            Failure::new(if e.is_timeout() {
                format!("timed out after {}", crate::time::written(config.timeout))
            } else if e.is_redirect() {
                chain(&e)
            } else if e.is_connect() {
                format!("could not connect: {}", chain(&e))
            } else {
                chain(&e)
            })
        })?;
        let status = response.status().as_u16();
        let fail = |message: String| Failure {
            status: Some(status),
            message,
        };
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let deploy_sha_header = response
            .headers()
            .get(config.deploy_sha_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let mut body = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                let e = e.without_url();
                fail(if e.is_timeout() {
                    format!(
                        "timed out after {} reading the body",
                        crate::time::written(config.timeout)
                    )
                } else {
                    format!("the body could not be read: {}", chain(&e))
                })
            })?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > config.max_body_bytes {
                return Err(fail(format!(
                    "the response is larger than {} bytes",
                    config.max_body_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let json: Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the body is not JSON: {e}")))?;
        let plan = match json.pointer(&config.plan_pointer) {
            Some(Value::String(plan)) if !plan.trim().is_empty() => Some(plan.trim().to_owned()),
            // An app that says "no plan" with null means no access.
            Some(Value::Null) => Some(NO_PLAN.to_owned()),
            Some(other) => {
                return Err(fail(format!(
                    "the value at {} is not a plan name: {other}",
                    config.plan_pointer
                )));
            }
            None => None,
        };
        let features = match &config.features_pointer {
            None => None,
            Some(pointer) => match json.pointer(pointer) {
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|item| {
                            item.as_str().map(str::to_owned).ok_or_else(|| {
                                fail(format!("the list at {pointer} holds a non-string: {item}"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(other) => {
                    return Err(fail(format!(
                        "the value at {pointer} is not a list: {other}"
                    )));
                }
                None => None,
            },
        };
        if plan.is_none() && features.is_none() {
            return Err(fail(format!(
                "the response has no plan at {}",
                config.plan_pointer
            )));
        }
        let deploy_sha = deploy_sha_header.or_else(|| {
            config
                .deploy_sha_pointer
                .as_ref()
                .and_then(|p| json.pointer(p))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        Ok(Observed {
            status,
            plan,
            features,
            deploy_sha,
        })
    }
}
