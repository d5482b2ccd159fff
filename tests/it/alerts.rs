//! Incident alerts to real peers on loopback: an HTTP receiver playing Slack
//! (checking the Block Kit JSON), a real SMTP server (aiosmtpd) whose mail is
//! parsed, and a webhook receiver whose signatures are verified with the
//! official Standard Webhooks library. Then the hard parts: a receiver that
//! is down for a while, one that never comes back, a process killed in the
//! middle of a send, 500 incidents with one cause, reminders and
//! resolutions.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as PeerStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Backend, Peer, TestDb, TestServer, http_client, incident_for, on_both_backends,
    python_module_available, subscription_created, wait_for,
};

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PUBLIC_URL: &str = "https://assay.example.test";

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// The status the receiver answered.
    answered: u16,
}

#[derive(Default)]
pub(crate) struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    /// Requests still to fail with a 500.
    failures_left: AtomicUsize,
    /// Fail every request.
    pub(crate) down: std::sync::atomic::AtomicBool,
    /// Never answer (until the client gives up).
    hang: std::sync::atomic::AtomicBool,
}

/// A real HTTP server playing Slack (`/slack`) and a webhook receiver
/// (`/hook`), or any other path.
pub(crate) struct Receiver {
    base: String,
    pub(crate) state: Arc<ReceiverState>,
    _peer: Peer,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PeerStatus {
    let hang = state.hang.load(Ordering::SeqCst);
    let failing = !hang
        && (state.down.load(Ordering::SeqCst)
            || state
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok());
    let status = if failing {
        PeerStatus::INTERNAL_SERVER_ERROR
    } else {
        PeerStatus::OK
    };
    state.requests.lock().unwrap().push(Received {
        path,
        headers,
        body,
        // 0: never answered.
        answered: if hang { 0 } else { status.as_u16() },
    });
    if hang {
        std::future::pending::<()>().await;
    }
    status
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/{path}", axum::routing::post(receive))
            .with_state(state.clone());
        let peer = Peer::serve(router).await;
        Receiver {
            base: peer.base(),
            state,
            _peer: peer,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The bodies answered 200 on `path`, as JSON.
    pub(crate) fn accepted(&self, path: &str) -> Vec<Value> {
        self.received(path)
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// aiosmtpd on a free port, writing each message it receives to a folder.
struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    fn start() -> SmtpSink {
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(format!("{}/tests/smtp_sink.py", env!("CARGO_MANIFEST_DIR")))
            .arg(port.to_string())
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        SmtpSink { port, dir, child }
    }

    /// The raw messages received so far.
    fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }
}

/// Settings for quick alerts to `receiver` (and `smtp`, when given).
fn alerting(receiver: &Receiver, smtp: Option<&SmtpSink>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vec![
        (
            "ASSAY_SLACK_WEBHOOK_URL".into(),
            format!("{}/slack", receiver.base),
        ),
        (
            "ASSAY_ALERT_WEBHOOK_URL".into(),
            format!("{}/hook", receiver.base),
        ),
        ("ASSAY_ALERT_WEBHOOK_SECRET".into(), HOOK_SECRET.into()),
        ("ASSAY_PUBLIC_URL".into(), PUBLIC_URL.into()),
        ("ASSAY_ALERT_POLL_INTERVAL".into(), "50ms".into()),
        ("ASSAY_ALERT_RETRY_INITIAL".into(), "100ms".into()),
        ("ASSAY_ALERT_RETRY_MAX".into(), "300ms".into()),
        ("ASSAY_ALERT_TIMEOUT".into(), "2s".into()),
        ("ASSAY_DEADLINE_RECONCILED".into(), "1s".into()),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED".into(), "2s".into()),
    ];
    if let Some(smtp) = smtp {
        settings.extend([
            (
                "ASSAY_SMTP_URL".into(),
                format!("smtp://127.0.0.1:{}", smtp.port),
            ),
            (
                "ASSAY_ALERT_EMAIL_FROM".into(),
                "Assay <assay@example.test>".into(),
            ),
            ("ASSAY_ALERT_EMAIL_TO".into(), "oncall@example.test".into()),
        ]);
    }
    settings
}

/// `settings` with `extra` set, and Slack as the only channel.
fn slack_only(settings: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut settings: Vec<_> = settings
        .into_iter()
        .filter(|(k, _)| !k.starts_with("ASSAY_ALERT_WEBHOOK"))
        .collect();
    for (k, v) in extra {
        settings.retain(|(key, _)| key != k);
        settings.push(((*k).to_owned(), (*v).to_owned()));
    }
    settings
}

/// A paid subscription whose app reconciled it but shows the wrong plan,
/// from deploy `sha`: an "access did not change" incident at the deadline.
async fn stuck_customer(server: &TestServer, n: &str, sha: &str) {
    let event = subscription_created(
        &format!("evt_{n}"),
        &format!("cus_{n}"),
        &format!("sub_{n}"),
        "price_pro",
    );
    assert_eq!(server.deliver(&event).await.0, StatusCode::OK);
    let (status, _) = server
        .report(
            &format!("evt_{n}"),
            "access_asserted",
            json!({"observed_plan": "starter", "deploy_sha": sha}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// The id of the first incident, once the sweeper has opened it.
async fn first_incident(server: &TestServer) -> String {
    server.wait_for_incidents(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The incident with its deliveries, once each has settled.
async fn settled_incident(server: &TestServer, id: &str, deliveries: usize) -> Value {
    wait_for(&format!("{deliveries} settled deliveries"), async || {
        let incident = server.get(&format!("/v1/incidents/{id}")).await;
        let list = incident["deliveries"].as_array().unwrap();
        (list.len() == deliveries && list.iter().all(|d| d["status"] != "pending"))
            .then_some(incident)
    })
    .await
}

fn verify_with_standard_webhooks(received: &Received) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &received.body).unwrap();
    let header = |name: &str| received.headers[name].to_str().unwrap().to_owned();
    let out = Command::new("python3")
        .arg(format!(
            "{}/tests/verify_webhook.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(HOOK_SECRET)
        .arg(&body)
        .arg(header("webhook-id"))
        .arg(header("webhook-timestamp"))
        .arg(header("webhook-signature"))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn an_incident_alerts_every_channel_once(backend: Backend) {
    if !python_module_available("aiosmtpd") || !python_module_available("standardwebhooks") {
        return;
    }
    let receiver = Receiver::start().await;
    let smtp = SmtpSink::start();
    let Some(server) = TestServer::start(backend, &alerting(&receiver, Some(&smtp))).await else {
        return;
    };
    stuck_customer(&server, "one", "sha-4f2a").await;
    let incidents = server.wait_for_incidents(1).await;
    let id = incidents[0]["id"].as_str().unwrap().to_owned();
    let incident = settled_incident(&server, &id, 3).await;

    // Every channel got it once, and the incident says so.
    for delivery in incident["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["status"], "sent", "{delivery}");
        assert_eq!(delivery["event"], "opened");
        assert_eq!(
            delivery["attempts"].as_array().unwrap().len(),
            1,
            "{delivery}"
        );
    }
    let title = "Customer access did not change after Stripe event";
    let url = format!("{PUBLIC_URL}/incidents/{id}");

    // Slack: Block Kit with the missing outcome as title, the evidence as
    // fields and a button to the incident.
    let slack = receiver.accepted("slack");
    assert_eq!(slack.len(), 1);
    let blocks = slack[0]["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], title);
    let fields: Vec<String> = blocks
        .iter()
        .flat_map(|b| b["fields"].as_array().cloned().unwrap_or_default())
        .map(|f| f["text"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "*Customer*\ncus_one",
        "*Subscription*\nsub_one",
        "*Expected plan*\npro",
        "*Observed plan*\nstarter",
        "*Deploy SHA*\nsha-4f2a",
        "*Stripe event*\nevt_one",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected:?} missing from {fields:?}"
        );
    }
    let button = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    assert_eq!(button["elements"][0]["url"], url);

    // The webhook: signed per Standard Webhooks, checked by its own library.
    let hooks = receiver.received("hook");
    assert_eq!(hooks.len(), 1);
    verify_with_standard_webhooks(&hooks[0]).unwrap();
    let mut tampered = hooks[0].clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&hooks[0].body).replace("starter", "pro"));
    assert!(
        verify_with_standard_webhooks(&tampered).is_err(),
        "a changed body must fail"
    );
    let payload: Value = serde_json::from_slice(&hooks[0].body).unwrap();
    assert_eq!(payload["type"], "incident.opened");
    assert_eq!(payload["headline"], title);
    assert_eq!(payload["incidents"][0]["id"], id.as_str());
    // Every channel links to the incident's page.
    assert_eq!(payload["incidents"][0]["url"], url.as_str());
    assert_eq!(
        payload["incidents"][0]["evidence"]["deploy_sha"],
        "sha-4f2a"
    );

    // Email: both parts, every evidence field in the text.
    let mails = wait_for("the email", async || {
        let mails = smtp.messages();
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 1);
    let parsed = mailparse::parse_mail(&mails[0]).unwrap();
    let subject = parsed
        .headers
        .iter()
        .find(|h| h.get_key() == "Subject")
        .unwrap()
        .get_value();
    assert_eq!(subject, format!("[Assay] {title}"));
    let parts: Vec<(String, String)> = parsed
        .subparts
        .iter()
        .map(|p| (p.ctype.mimetype.clone(), p.get_body().unwrap()))
        .collect();
    let text = &parts
        .iter()
        .find(|(t, _)| t == "text/plain")
        .expect("a text part")
        .1;
    let html = &parts
        .iter()
        .find(|(t, _)| t == "text/html")
        .expect("an HTML part")
        .1;
    for expected in [
        "cus_one",
        "sub_one",
        "evt_one",
        "customer.subscription.created",
        "Expected plan: pro",
        "Observed plan: starter",
        "Deploy SHA:    sha-4f2a",
        "access_asserted",
        &url,
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the email:\n{text}"
        );
    }
    assert!(html.contains(&format!("href=\"{url}\"")), "{html}");
    server.stop().await;
}

async fn a_receiver_that_is_down_gets_the_alert_once_it_recovers(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.state.failures_left.store(3, Ordering::SeqCst);
    let settings = slack_only(alerting(&receiver, None), &[]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    stuck_customer(&server, "down", "sha-1").await;
    let id = first_incident(&server).await;
    let incident = settled_incident(&server, &id, 1).await;
    let delivery = &incident["deliveries"][0];
    assert_eq!(delivery["status"], "sent");
    let statuses: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(500), &json!(500), &json!(500), &json!(200)]
    );
    assert_eq!(delivery["attempts"][0]["error"], "HTTP 500");
    assert_eq!(
        receiver.accepted("slack").len(),
        1,
        "exactly once after recovery"
    );
    server.stop().await;
}

async fn a_receiver_that_never_recovers_leaves_a_dead_delivery(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.state.down.store(true, Ordering::SeqCst);
    let settings = slack_only(
        alerting(&receiver, None),
        &[("ASSAY_ALERT_GIVE_UP_AFTER", "1s")],
    );
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    stuck_customer(&server, "dead", "sha-1").await;
    let id = first_incident(&server).await;
    let incident = settled_incident(&server, &id, 1).await;
    let delivery = &incident["deliveries"][0];
    assert_eq!(delivery["status"], "dead", "{delivery}");
    assert_eq!(delivery["last_error"], "HTTP 500");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert!(
        attempts.len() >= 2,
        "it was retried before giving up: {delivery}"
    );
    assert!(delivery["settled_at"].is_string());
    server.stop().await;
}

async fn reminders_stop_at_acknowledgement_and_resolution_says_so_once(backend: Backend) {
    let receiver = Receiver::start().await;
    let settings = slack_only(
        alerting(&receiver, None),
        &[("ASSAY_ALERT_REMINDER_INTERVAL", "1s")],
    );
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    stuck_customer(&server, "acked", "sha-a").await;
    stuck_customer(&server, "ignored", "sha-b").await;
    let incidents = server.wait_for_incidents(2).await;
    let (acked, ignored) = (
        incident_for(&incidents, "evt_acked"),
        incident_for(&incidents, "evt_ignored"),
    );
    let (status, _) = server
        .api(
            reqwest::Method::POST,
            &format!("/v1/incidents/{acked}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The ignored incident is reminded of; the acknowledged one is not.
    wait_for("a reminder", async || {
        let incident = server.get(&format!("/v1/incidents/{ignored}")).await;
        incident["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["event"] == "reminder" && d["status"] == "sent")
            .then_some(())
    })
    .await;
    let acked_detail = server.get(&format!("/v1/incidents/{acked}")).await;
    let reminded = acked_detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == "reminder" && d["status"] == "sent")
        .count();
    assert_eq!(reminded, 0, "{acked_detail}");

    // Resolving sends one resolve message.
    let (status, _) = server
        .api(
            reqwest::Method::POST,
            &format!("/v1/incidents/{acked}/resolve"),
            Some(json!({"resolution": "granted by hand"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let resolved = wait_for("the resolve message", async || {
        let resolved: Vec<Value> = receiver
            .accepted("slack")
            .into_iter()
            .filter(|m| m["text"].as_str().unwrap().starts_with("Resolved:"))
            .collect();
        (!resolved.is_empty()).then_some(resolved)
    })
    .await;
    assert_eq!(resolved.len(), 1);
    assert!(resolved[0].to_string().contains("granted by hand"));
    server.stop().await;
}

async fn a_resolution_never_overtakes_the_alert_it_follows(backend: Backend) {
    let receiver = Receiver::start().await;
    // The "opened" alert fails a few times, and is still retrying when the
    // incident is resolved.
    receiver.state.failures_left.store(3, Ordering::SeqCst);
    let settings = slack_only(
        alerting(&receiver, None),
        &[
            ("ASSAY_ALERT_RETRY_INITIAL", "400ms"),
            ("ASSAY_ALERT_RETRY_MAX", "400ms"),
        ],
    );
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    stuck_customer(&server, "order", "sha-o").await;
    let id = first_incident(&server).await;
    let (status, _) = server
        .api(
            reqwest::Method::POST,
            &format!("/v1/incidents/{id}/resolve"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let messages = wait_for("both messages", async || {
        let accepted = receiver.accepted("slack");
        (accepted.len() == 2).then_some(accepted)
    })
    .await;
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert!(!texts[0].starts_with("Resolved:"), "{texts:?}");
    assert!(texts[1].starts_with("Resolved:"), "{texts:?}");
    server.stop().await;
}

async fn many_incidents_with_one_cause_make_one_grouped_alert(backend: Backend) {
    const CUSTOMERS: usize = 500;
    let receiver = Receiver::start().await;
    let settings = slack_only(
        alerting(&receiver, None),
        &[
            ("ASSAY_DEADLINE_RECONCILED", "1h"),
            ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2h"),
            // The sweep fails them in five batches (five transactions):
            // still one message.
            ("ASSAY_SWEEP_BATCH_SIZE", "100"),
        ],
    );
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    let names: Vec<String> = (0..CUSTOMERS).map(|i| i.to_string()).collect();
    futures::future::join_all(names.iter().map(|n| stuck_customer(&server, n, "sha-bad"))).await;
    // A bad deploy: every run's deadline passes at the same moment, so one
    // sweep fails them all.
    server
        .db
        .execute("UPDATE runs SET reconciled_due_at = 0, access_due_at = 0, deadline_at = 0")
        .await;
    server.wait_for_incidents(CUSTOMERS.min(200)).await;
    wait_for("the grouped alert", async || {
        (!receiver.accepted("slack").is_empty()).then_some(())
    })
    .await;
    wait_for("every incident", async || {
        (server.count("incidents").await == CUSTOMERS as i64).then_some(())
    })
    .await;
    let slack = receiver.accepted("slack");
    assert_eq!(slack.len(), 1, "one message, not {}", slack.len());
    let message = slack[0].to_string();
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{CUSTOMERS} customers:")),
        "{message}"
    );
    assert!(message.contains("sha-bad"), "{message}");
    // Each customer it names links to that customer's incident.
    assert_eq!(
        message
            .matches(&format!("<{PUBLIC_URL}/incidents/"))
            .count(),
        5,
        "{message}"
    );
    assert!(
        message.contains(&format!("and {} more", CUSTOMERS - 5)),
        "{message}"
    );
    // Each incident keeps its own record, and knows the grouped delivery.
    let page = server.get("/v1/incidents?limit=1").await;
    let one = page["data"][0]["id"].as_str().unwrap();
    let detail = server.get(&format!("/v1/incidents/{one}")).await;
    assert_eq!(detail["deliveries"][0]["incident_count"], CUSTOMERS);
    server.stop().await;
}

on_both_backends!(
    an_incident_alerts_every_channel_once,
    a_receiver_that_is_down_gets_the_alert_once_it_recovers,
    a_receiver_that_never_recovers_leaves_a_dead_delivery,
    reminders_stop_at_acknowledgement_and_resolution_says_so_once,
    a_resolution_never_overtakes_the_alert_it_follows,
    many_incidents_with_one_cause_make_one_grouped_alert,
);

/// `assay serve` as a process on a SQLite file, to be killed.
fn serve(db: &TestDb, receiver: &Receiver, port: u16) -> Child {
    crate::support::serve_command(port, &db.url)
        .env("ASSAY_DEADLINE_RECONCILED", "1s")
        .env("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s")
        .env("ASSAY_SWEEP_SCHEDULE", "* * * * * *")
        .env("ASSAY_SLACK_WEBHOOK_URL", receiver.url("slack"))
        .env("ASSAY_ALERT_POLL_INTERVAL", "50ms")
        .env("ASSAY_ALERT_TIMEOUT", "1s")
        .env("ASSAY_LEASE_DURATION", "2s")
        .spawn()
        .unwrap()
}

/// Killed with SIGKILL while its alert was on the wire: after a restart, the
/// alert is sent, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_cut_off_by_a_crash_is_sent_after_restart() {
    let Some(db) = TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let receiver = Receiver::start().await;
    receiver.state.hang.store(true, Ordering::SeqCst);
    let port = crate::support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = http_client();
    let mut first = serve(&db, &receiver, port);
    crate::support::wait_until_ready(&base).await;
    let event =
        subscription_created("evt_crash", "cus_crash", "sub_crash", "price_pro").to_string();
    let response = crate::support::post_signed(&client, &base, &event)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The incident opened and its alert is on the wire: kill the process
    // before the receiver answers.
    wait_for("the alert to be on the wire", async || {
        (!receiver.received("slack").is_empty()).then_some(())
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(receiver.accepted("slack").is_empty());

    receiver.state.hang.store(false, Ordering::SeqCst);
    let mut second = serve(&db, &receiver, port);
    wait_for("the alert after the restart", async || {
        (!receiver.accepted("slack").is_empty()).then_some(())
    })
    .await;
    // Give a duplicate every chance to show, then check there is none: the
    // delivery is settled in the database.
    wait_for("the delivery to settle", async || {
        (db.scalar("SELECT COUNT(*) FROM alert_deliveries WHERE status = 'sent'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(receiver.accepted("slack").len(), 1);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM alert_deliveries").await, 1);
    let _ = second.kill();
    let _ = second.wait();
}

/// Two replicas on one PostgreSQL database, both sending alerts: every
/// delivery goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_send_each_alert_once() {
    const INCIDENTS: usize = 40;
    let receiver = Receiver::start().await;
    let settings = slack_only(
        alerting(&receiver, None),
        &[("ASSAY_ALERT_GROUP_THRESHOLD", "1000")],
    );
    let Some(first) = TestServer::start(Backend::Postgres, &settings).await else {
        return;
    };
    let second = first.replica(&settings).await;
    let names: Vec<String> = (0..INCIDENTS).map(|i| format!("r{i}")).collect();
    futures::future::join_all(names.iter().map(|n| stuck_customer(&first, n, "sha-r"))).await;
    wait_for("every delivery to settle", async || {
        let sent = first
            .db
            .scalar("SELECT COUNT(*) FROM alert_deliveries WHERE status = 'sent'")
            .await;
        (sent == INCIDENTS as i64).then_some(())
    })
    .await;
    let slack = receiver.accepted("slack");
    assert_eq!(slack.len(), INCIDENTS, "each alert once");
    assert_eq!(
        first.db.scalar("SELECT COUNT(*) FROM alert_attempts").await,
        INCIDENTS as i64
    );
    second.stop().await;
    first.stop().await;
}
