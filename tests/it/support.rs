//! The test harness: a running Assay, a client that states expected statuses,
//! signed Stripe payloads, and direct reads of the database file.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use assay::config::{Config, Sources};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "whsec_test_secret_for_assay";
pub const API_KEY: &str = "test-api-key-0123456789abcdef";
pub const OTHER_API_KEY: &str = "other-api-key-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`, on two worker threads so that
/// concurrent work really runs at once.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::Backend::Sqlite).await
            })+
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name($crate::support::Backend::Postgres).await
            })+
        }
    };
}
pub(crate) use on_both_backends;

/// The server PostgreSQL tests create their databases on.
fn postgres_admin_url() -> String {
    std::env::var("ASSAY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database for one test, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` only when the run opts out of PostgreSQL
    /// (`ASSAY_TEST_SKIP=postgres`): the caller skips, and a notice says so.
    /// An unreachable PostgreSQL fails the test.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        if backend == Backend::Postgres && opted_out("postgres") {
            eprintln!("NOTICE: skipping a PostgreSQL test: ASSAY_TEST_SKIP names postgres");
            return None;
        }
        match backend {
            Backend::Sqlite => Some(TestDb {
                backend,
                url: format!("sqlite://{}", dir.path().join("assay.db").display()),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let options = PgConnectOptions::from_str(&admin).unwrap();
                let connect = options.connect();
                let mut conn = match tokio::time::timeout(Duration::from_secs(5), connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => postgres_missing(&e.to_string()),
                    Err(_) => postgres_missing("connection timed out"),
                };
                let name = format!("assay_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let mut url = url::Url::parse(&admin).unwrap();
                url.set_path(&name);
                Some(TestDb {
                    backend,
                    url: url.to_string(),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs one `SELECT COUNT(*)`-style scalar query straight on the
    /// database, bypassing Assay.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .connect()
                    .await
                    .unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
        }
    }

    /// Runs one query straight on the database and returns its first
    /// column as text, one entry a row; `args` bind `$1`, `$2`, ... in order.
    pub async fn texts(&self, sql: &str, args: &[&str]) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query_scalar(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let rows = query.fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut query = sqlx::query_scalar(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                let rows = query.fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
        }
    }

    /// Whether `needle` appears anywhere in the stored data: in the SQLite
    /// files' bytes (database and write-ahead log), or in any row of any
    /// PostgreSQL table.
    pub async fn holds(&self, needle: &str) -> bool {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                ["", "-wal"].iter().any(|suffix| {
                    std::fs::read(format!("{path}{suffix}")).is_ok_and(|bytes| {
                        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                    })
                })
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let mut found = false;
                for table in tables {
                    let sql = format!(
                        "SELECT COUNT(*) FROM \"{table}\" AS t WHERE row_to_json(t)::text LIKE $1"
                    );
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(format!("%{needle}%"))
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                    found |= n > 0;
                }
                conn.close().await.unwrap();
                found
            }
        }
    }

    /// Runs one statement straight on the database.
    pub async fn execute(&self, sql: &'static str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnectOptions::new()
                    .filename(path)
                    .connect()
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = PgConnectOptions::from_str(&self.url)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Row counts of every table, for "nothing changed" checks.
    pub async fn counts(&self) -> [i64; 4] {
        [
            self.scalar("SELECT COUNT(*) FROM stripe_events").await,
            self.scalar("SELECT COUNT(*) FROM runs").await,
            self.scalar("SELECT COUNT(*) FROM run_timeline").await,
            self.scalar("SELECT COUNT(*) FROM incidents").await,
        ]
    }
}

fn postgres_missing(why: &str) -> ! {
    panic!(
        "this test needs PostgreSQL at {} ({why}): start it, or name another server in ASSAY_TEST_POSTGRES_URL; or opt out with ASSAY_TEST_SKIP=postgres",
        postgres_admin_url()
    )
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop cannot await; a short-lived thread with its own runtime can.
        let admin = postgres_admin_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnectOptions::from_str(&admin)
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("NOTICE: could not drop a test database");
        }
    }
}

pub struct TestServer {
    pub base: String,
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
        let db = TestDb::create(backend).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        Some(TestServer::start_on(std::sync::Arc::new(db), listener, "", overrides).await)
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
        let config = Config::load(Sources {
            file: Some(&file),
            env: &env,
        })
        .expect("test configuration is valid");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(assay::server::serve(config, listener, shutdown.clone()));
        let server = TestServer {
            base,
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

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs a payload the way Stripe does, written here independently of the
/// server's code (the Stripe SDK test checks both against Stripe's own).
/// The payload may be any bytes, valid UTF-8 or not.
pub fn sign(payload: impl AsRef<[u8]>, secret: &str, timestamp: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload.as_ref());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A Stripe event envelope from the shared fixtures, with its id replaced.
pub fn fixture(event_type: &str, event_id: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/events/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = json!(event_id);
    event
}

/// A paid `checkout.session.completed` for a subscription (no line items, as
/// Stripe sends it).
pub fn checkout(event_id: &str, customer: &str, subscription: &str) -> Value {
    let mut event = fixture("checkout.session.completed", event_id);
    let object = &mut event["data"]["object"];
    object["mode"] = json!("subscription");
    object["payment_status"] = json!("paid");
    object["customer"] = json!(customer);
    object["subscription"] = json!(subscription);
    event
}

/// A `customer.subscription.created` whose one item has `price`.
pub fn subscription_created(
    event_id: &str,
    customer: &str,
    subscription: &str,
    price: &str,
) -> Value {
    let mut event = fixture("customer.subscription.created", event_id);
    let object = &mut event["data"]["object"];
    object["id"] = json!(subscription);
    object["customer"] = json!(customer);
    object["items"]["data"][0]["price"]["id"] = json!(price);
    event
}

/// Polls `check` until it returns `Some`, failing the test after 20 s. Tests
/// wait on the condition itself, never on a fixed sleep.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client for talking to Assay and to the test's peers.
pub fn http_client() -> reqwest::Client {
    assay::install_crypto_provider();
    reqwest::Client::new()
}

/// Whether python3 can import `module` (a peer from tests/requirements.txt).
/// A missing module fails the test, unless the run opts out of it by name
/// (`ASSAY_TEST_SKIP=stripe`, say) or of every Python peer (`python`).
pub fn python_module_available(module: &str) -> bool {
    if opted_out("python") {
        eprintln!(
            "NOTICE: skipping a test that needs python3's `{module}`: ASSAY_TEST_SKIP names python"
        );
        return false;
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    peer_available(
        module,
        ok,
        &format!("python3's `{module}`"),
        "python3 -m pip install -r tests/requirements.txt",
    )
}

/// Whether the run opts out of the tests that need `peer`: the
/// comma-separated `ASSAY_TEST_SKIP` names it.
pub fn opted_out(peer: &str) -> bool {
    std::env::var("ASSAY_TEST_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|name| name.trim() == peer)
}

/// Whether the test that needs `peer` (`what`, installed by `install`)
/// runs. A run that opts out of it (`ASSAY_TEST_SKIP`) skips the test with
/// a notice; otherwise a missing peer fails the test, so that nothing
/// passes for work it skipped.
pub fn peer_available(peer: &str, ok: bool, what: &str, install: &str) -> bool {
    if opted_out(peer) {
        eprintln!("NOTICE: skipping a test that needs {what}: ASSAY_TEST_SKIP names {peer}");
        return false;
    }
    assert!(
        ok,
        "this test needs {what}: {install}; or opt out with ASSAY_TEST_SKIP={peer}"
    );
    true
}

/// The `assay` binary, with none of the developer's `ASSAY_*` or `OTEL_*`
/// variables: only what each test sets.
pub fn assay_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_assay"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ASSAY_") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `assay serve` on loopback `port` and database `db`, with the test
/// secret, API key and plan map, quiet logs and no output; callers add
/// their own settings, then spawn it.
pub fn serve_command(port: u16, db: &str) -> std::process::Command {
    let mut cmd = assay_command();
    cmd.arg("serve")
        .env("ASSAY_BIND", format!("127.0.0.1:{port}"))
        .env("ASSAY_DATABASE_URL", db)
        .env("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET)
        .env("ASSAY_API_KEY", API_KEY)
        .env("ASSAY_PLAN_MAP", "price_pro=pro")
        .env("ASSAY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` with `input` on its standard input; returns what it did.
pub fn run_with_input(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Posts `body`, signed as Stripe would, to project `default` of the Assay
/// at `base` (a process the test started); the error is the transport's.
pub async fn post_signed(
    client: &reqwest::Client,
    base: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/hooks/stripe/default"))
        .header("stripe-signature", sign(body, SECRET, now()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}

/// Waits until the Assay at `base` (a process the test started) is ready.
pub async fn wait_until_ready(base: &str) {
    let client = http_client();
    wait_for(&format!("Assay at {base} to be ready"), async || {
        let ready = client.get(format!("{base}/readyz")).send().await;
        ready
            .is_ok_and(|r| r.status() == StatusCode::OK)
            .then_some(())
    })
    .await;
}

/// A process the test spawned (an `assay serve`, say), killed with SIGKILL
/// when dropped, so that a failing test leaves nothing running.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    pub fn spawn(cmd: &mut std::process::Command) -> Spawned {
        Spawned(cmd.spawn().unwrap())
    }

    /// SIGKILL, then reap: the process gets no chance to finish anything.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Waits until the Assay it runs answers `/readyz` at `base`; fails at
    /// once, with the exit status, if the process ends first.
    pub async fn wait_ready(&mut self, base: &str) {
        let client = http_client();
        wait_for(&format!("Assay at {base} to be ready"), async || {
            if let Some(exit) = self.0.try_wait().unwrap() {
                panic!("assay serve exited before it was ready: {exit}");
            }
            let ready = client.get(format!("{base}/readyz")).send().await;
            ready
                .is_ok_and(|r| r.status() == StatusCode::OK)
                .then_some(())
        })
        .await;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now, for a process or peer the test names
/// before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A peer (a fake app, a receiver) served on an ephemeral loopback port;
/// stopped when dropped.
pub struct Peer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    pub async fn serve(router: axum::Router) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Peer::serve_on(listener, router)
    }

    /// Serves on a listener the test bound (a port named in advance).
    pub fn serve_on(listener: tokio::net::TcpListener, router: axum::Router) -> Peer {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Peer { addr, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
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
