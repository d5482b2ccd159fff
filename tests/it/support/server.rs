//! A running Assay for tests: the real server on a loopback port, a client
//! that states expected statuses, and direct counts of its rows.

use std::collections::HashMap;

use super::db::{Backend, TestDb};
use super::peers::http_client;
use super::stripe::{API_KEY, OTHER_API_KEY, SECRET, now, sign};
use super::wait::wait_for;

use assay::config::{Config, Sources};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestServer {
    pub base: String,
    /// The `/metrics` listener's, when the settings give
    /// `ASSAY_METRICS_BIND` (any value: the test binds a free port).
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    /// Shared by replicas of one test; dropped with the last of them.
    pub db: std::sync::Arc<TestDb>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test server, as `ASSAY_*` variables.
/// No settings beyond the defaults of [`env`].
pub const NO_SETTINGS: &[(&str, &str)] = &[];

/// Settings as `(name, value)` pairs, borrowed or owned.
pub type Settings<'a, K, V> = &'a [(K, V)];

pub fn env<K: AsRef<str>, V: AsRef<str>>(pairs: Settings<K, V>) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET),
        ("ASSAY_API_KEY", API_KEY),
        ("ASSAY_PLAN_MAP", "price_pro=pro,price_starter=starter"),
        ("ASSAY_SWEEP_SCHEDULE", "* * * * * *"),
        ("ASSAY_DEADLINE_RECONCILED", "1h"),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2h"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in pairs {
        env.insert(k.as_ref().to_owned(), v.as_ref().to_owned());
    }
    env
}

impl TestServer {
    /// Project `default` from the variables, plus project `other` (with its
    /// own key) from a file, to check that projects do not see each other.
    /// `None` when the backend is not available here (see [`TestDb::create`]).
    pub async fn start<K: AsRef<str>, V: AsRef<str>>(
        backend: Backend,
        overrides: Settings<'_, K, V>,
    ) -> Option<TestServer> {
        TestServer::start_with_toml(backend, "", overrides).await
    }

    /// As [`TestServer::start`], with `toml` added to the config file (a
    /// project's channels or drill settings, say).
    pub async fn start_with_toml<K: AsRef<str>, V: AsRef<str>>(
        backend: Backend,
        toml: &str,
        overrides: Settings<'_, K, V>,
    ) -> Option<TestServer> {
        let db = TestDb::create(backend).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Some(TestServer::start_on(std::sync::Arc::new(db), listener, toml, overrides).await)
    }

    /// As [`TestServer::start`], listening on `port` (a client was pointed
    /// at it before Assay was up).
    pub async fn start_on_port<K: AsRef<str>, V: AsRef<str>>(
        backend: Backend,
        port: u16,
        overrides: Settings<'_, K, V>,
    ) -> Option<TestServer> {
        TestServer::start_on_port_with_toml(backend, port, "", overrides).await
    }

    /// As [`TestServer::start_on_port`], with `toml` added to the config
    /// file.
    pub async fn start_on_port_with_toml<K: AsRef<str>, V: AsRef<str>>(
        backend: Backend,
        port: u16,
        toml: &str,
        overrides: Settings<'_, K, V>,
    ) -> Option<TestServer> {
        let db = TestDb::create(backend).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Some(TestServer::start_on(std::sync::Arc::new(db), listener, toml, overrides).await)
    }

    /// Another replica on this server's database, with the same settings
    /// plus `overrides`.
    pub async fn replica<K: AsRef<str>, V: AsRef<str>>(
        &self,
        overrides: Settings<'_, K, V>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        TestServer::start_on(self.db.clone(), listener, "", overrides).await
    }

    async fn start_on<K: AsRef<str>, V: AsRef<str>>(
        db: std::sync::Arc<TestDb>,
        listener: tokio::net::TcpListener,
        toml: &str,
        overrides: Settings<'_, K, V>,
    ) -> TestServer {
        let file = db
            .dir()
            .join(format!("assay-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(
            &file,
            format!(
                "[projects.default]\n[projects.other]\napi_key = \"{OTHER_API_KEY}\"\nstripe_webhook_secret = \"whsec_other\"\n{toml}"
            ),
        )
        .unwrap();
        let mut env = env(overrides);
        env.insert("ASSAY_DATABASE_URL".into(), db.url.clone());
        env.insert("ASSAY_BIND".into(), "127.0.0.1:0".into());
        let metrics_listener = match env.contains_key("ASSAY_METRICS_BIND") {
            true => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                env.insert("ASSAY_METRICS_BIND".into(), addr);
                Some(listener)
            }
            false => None,
        };
        let metrics_base = metrics_listener
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let config = Config::load(Sources {
            file: Some(&file),
            env: &env,
        })
        .expect("test configuration is valid");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(assay::server::serve_on(
            config,
            listener,
            metrics_listener,
            shutdown.clone(),
        ));
        let server = TestServer {
            base,
            metrics_base,
            client: http_client(),
            db,
            shutdown,
            task: Some(task),
        };
        wait_for("the server to be ready", async || {
            let response = server.client.get(server.url("/readyz")).send().await;
            response
                .is_ok_and(|r| r.status() == StatusCode::OK)
                .then_some(())
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a Stripe delivery with the given signature header (or none).
    pub async fn deliver_raw(
        &self,
        project: &str,
        body: impl Into<reqwest::Body>,
        signature: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/hooks/stripe/{project}")))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            request = request.header("stripe-signature", sig);
        }
        read(request.send().await.unwrap()).await
    }

    /// Posts a correctly signed Stripe delivery to project `default`.
    pub async fn deliver(&self, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        let sig = sign(&body, SECRET, now());
        self.deliver_raw("default", body, Some(sig)).await
    }

    /// An SDK call with the default project's key.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.api_as(API_KEY, method, path, body).await
    }

    pub async fn api_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn report(&self, run: &str, stage: &str, body: Value) -> (StatusCode, Value) {
        self.api(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/stages/{stage}"),
            Some(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.api(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// Waits for the sweeper to open `count` incidents in project `default`.
    pub async fn wait_for_incidents(&self, count: usize) -> Vec<Value> {
        wait_for(&format!("{count} incident(s)"), async || {
            let page = self.get("/v1/incidents?limit=200").await;
            let data = page["data"].as_array().unwrap().clone();
            (data.len() >= count).then_some(data)
        })
        .await
    }

    /// Counts rows straight from the database, bypassing the API.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = match table {
            "stripe_events" => "SELECT COUNT(*) FROM stripe_events",
            "runs" => "SELECT COUNT(*) FROM runs",
            "run_timeline" => "SELECT COUNT(*) FROM run_timeline",
            "incidents" => "SELECT COUNT(*) FROM incidents",
            other => panic!("no table {other}"),
        };
        self.db.scalar(sql).await
    }

    pub async fn counts(&self) -> [i64; 4] {
        self.db.counts().await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Checks one refused request: `status`, the contract's error body with
/// `code`, a message that says something, and no secret in it.
pub fn assert_error(case: &str, got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{case}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{case}: {}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{case}: the error says nothing");
    assert!(
        !message.contains(SECRET),
        "{case}: the error leaks the secret"
    );
}

/// The id of the incident about `event_id` among `incidents`.
pub fn incident_for(incidents: &[Value], event_id: &str) -> String {
    incidents
        .iter()
        .find(|i| i["evidence"]["event_id"] == event_id)
        .unwrap_or_else(|| panic!("no incident for {event_id}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}
