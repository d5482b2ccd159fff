//! The prober against real HTTP servers on loopback that play the app: runs
//! that close through probes alone, incidents that show what the probe saw,
//! every way a probe can fail, and the concurrency caps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode as AppStatus, header};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::ingest::payment_failed;
use crate::support::{
    Backend, Peer, TestServer, fixture, on_both_backends, subscription_created, wait_for,
};

const DEPLOY_SHA: &str = "4f2a9c1";

/// What the app answers for one customer.
#[derive(Clone)]
enum Answer {
    Json(Value),
    /// `before` for the first `requests` requests, then `after`.
    Flips {
        before: Value,
        after: Value,
        requests: usize,
    },
    Status(u16),
    Garbage,
    Hang,
    RedirectTo(String),
    Huge,
}

#[derive(Default)]
struct AppState {
    answers: Mutex<HashMap<String, Answer>>,
    requests: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// How long every request takes before it answers.
    delay: Mutex<Duration>,
    /// The bearer token the app requires, if any.
    token: Mutex<Option<String>>,
    /// When each request arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
}

/// Counts a request in flight until it ends, however it ends (a client that
/// gives up drops the handler mid-way).
struct InFlight(Arc<AppState>);

impl InFlight {
    fn enter(app: &Arc<AppState>) -> InFlight {
        let now = app.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        app.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(app.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A real HTTP server playing the app's access endpoint,
/// `GET /access/{customer}`.
struct FakeApp {
    addr: SocketAddr,
    state: Arc<AppState>,
    _peer: Peer,
}

async fn access(
    State(app): State<Arc<AppState>>,
    Path(customer): Path<String>,
    headers: HeaderMap,
) -> Response {
    let _counted = InFlight::enter(&app);
    app.arrivals.lock().unwrap().push(std::time::Instant::now());
    let seen = {
        let mut requests = app.requests.lock().unwrap();
        let n = requests.entry(customer.clone()).or_default();
        *n += 1;
        *n
    };
    let delay = *app.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let token = app.token.lock().unwrap().clone();
    if let Some(token) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(&format!("Bearer {token}")) {
            return AppStatus::UNAUTHORIZED.into_response();
        }
    }
    let answer = app.answers.lock().unwrap().get(&customer).cloned();
    let body = match answer {
        None => return AppStatus::NOT_FOUND.into_response(),
        Some(Answer::Json(body)) => body,
        Some(Answer::Flips {
            before,
            after,
            requests,
        }) => {
            if seen > requests {
                after
            } else {
                before
            }
        }
        Some(Answer::Status(code)) => {
            return AppStatus::from_u16(code).unwrap().into_response();
        }
        Some(Answer::Garbage) => return (AppStatus::OK, "<html>oops</html>").into_response(),
        Some(Answer::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Answer::RedirectTo(location)) => {
            return (AppStatus::FOUND, [(header::LOCATION, location)]).into_response();
        }
        Some(Answer::Huge) => json!({"plan": "pro", "padding": "x".repeat(1 << 20)}),
    };
    ([("x-deploy-sha", DEPLOY_SHA)], axum::Json(body)).into_response()
}

impl FakeApp {
    async fn start() -> FakeApp {
        let state = Arc::new(AppState::default());
        let router = axum::Router::new()
            .route("/access/{customer}", axum::routing::get(access))
            .with_state(state.clone());
        let peer = Peer::serve(router).await;
        FakeApp {
            addr: peer.addr,
            state,
            _peer: peer,
        }
    }

    fn answer(&self, customer: &str, answer: Answer) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(customer.to_owned(), answer);
    }

    fn requests(&self, customer: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .get(customer)
            .copied()
            .unwrap_or(0)
    }

    /// Settings that point Assay's prober at this app, probing often.
    fn settings(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = [
            (
                "ASSAY_PROBE_URL",
                format!("http://{}/access/{{{{customer_id}}}}", self.addr),
            ),
            ("ASSAY_PROBE_INTERVAL", "100ms".into()),
            ("ASSAY_PROBE_MAX_INTERVAL", "300ms".into()),
            ("ASSAY_PROBE_TIMEOUT", "1s".into()),
            ("ASSAY_PROBE_CONNECT_TIMEOUT", "1s".into()),
            ("ASSAY_PROBE_POLL_INTERVAL", "20ms".into()),
            ("ASSAY_DEADLINE_RECONCILED", "20s".into()),
            ("ASSAY_DEADLINE_ACCESS_ASSERTED", "30s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            settings.retain(|(key, _)| key != k);
            settings.push(((*k).to_owned(), (*v).to_owned()));
        }
        settings
    }
}

/// Deadlines short enough for a test to see the sweeper fail a run.
const SHORT_DEADLINES: &[(&str, &str)] = &[
    ("ASSAY_DEADLINE_RECONCILED", "2s"),
    ("ASSAY_DEADLINE_ACCESS_ASSERTED", "3s"),
];

fn pro_subscription(n: &str) -> Value {
    subscription_created(
        &format!("evt_{n}"),
        &format!("cus_{n}"),
        &format!("sub_{n}"),
        "price_pro",
    )
}

async fn wait_for_status(server: &TestServer, run: &str, status: &str) -> Value {
    wait_for(&format!("run {run} to be {status}"), async || {
        let detail = server.get(&format!("/v1/runs/{run}")).await;
        (detail["status"] == status).then_some(detail)
    })
    .await
}

async fn access_that_flips_later_succeeds_through_probes_alone(backend: Backend) {
    let app = FakeApp::start().await;
    let Some(server) = TestServer::start(backend, &app.settings(&[])).await else {
        return;
    };
    app.answer(
        "cus_flip",
        Answer::Flips {
            before: json!({"plan": "free"}),
            after: json!({"plan": "pro"}),
            requests: 2,
        },
    );
    assert_eq!(
        server.deliver(&pro_subscription("flip")).await.0,
        StatusCode::OK
    );

    // No SDK call at all: the probes alone close the run.
    let run = wait_for_status(&server, "evt_flip", "succeeded").await;
    assert_eq!(run["observed_plan"], "pro");
    assert_eq!(run["deploy_sha"], DEPLOY_SHA);
    let asserted: Vec<&Value> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == "access_asserted")
        .collect();
    // The first probe's wrong plan is on the timeline, then the match.
    let seen: Vec<(&str, &str)> = asserted
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("probe", "plan_mismatch"), ("probe", "matched")],
        "{run}"
    );
    assert_eq!(asserted[0]["evidence"]["observed_plan"], "free", "{run}");
    assert_eq!(asserted[0]["evidence"]["expected_plan"], "pro", "{run}");
    let probes = run["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 3, "{run}");
    assert_eq!(
        app.requests("cus_flip"),
        3,
        "one request per recorded attempt"
    );
    for (probe, plan, matched) in [(&probes[0], "free", false), (&probes[2], "pro", true)] {
        assert_eq!(probe["observed_plan"], plan);
        assert_eq!(probe["matched"], matched);
        assert_eq!(probe["status_code"], 200);
        assert_eq!(probe["deploy_sha"], DEPLOY_SHA);
        assert!(probe["duration_ms"].as_i64().unwrap() >= 0);
        assert!(probe["at"].is_string());
    }
    // Probing ends with the match: the run left the prober's queue in the
    // transaction that recorded it.
    assert_eq!(
        server.db.scalar("SELECT COUNT(*) FROM probe_queue").await,
        0
    );
    server.stop().await;
}

async fn access_that_never_flips_raises_an_incident_with_the_last_probe(backend: Backend) {
    let app = FakeApp::start().await;
    let Some(server) = TestServer::start(backend, &app.settings(SHORT_DEADLINES)).await else {
        return;
    };
    app.answer("cus_stuck", Answer::Json(json!({"plan": "free"})));
    server.deliver(&pro_subscription("stuck")).await;
    let incidents = server.wait_for_incidents(1).await;
    let incident = &incidents[0];
    assert_eq!(
        incident["title"],
        "Customer access did not change after Stripe event"
    );
    let evidence = &incident["evidence"];
    assert_eq!(evidence["event_id"], "evt_stuck");
    assert_eq!(evidence["customer_id"], "cus_stuck");
    assert_eq!(evidence["subscription_id"], "sub_stuck");
    assert_eq!(evidence["expected_plan"], "pro");
    assert_eq!(evidence["observed_plan"], "free");
    assert_eq!(evidence["deploy_sha"], DEPLOY_SHA);
    assert_eq!(evidence["last_probe"]["observed_plan"], "free");
    assert_eq!(evidence["last_probe"]["status_code"], 200);
    assert_eq!(evidence["last_probe"]["deploy_sha"], DEPLOY_SHA);
    assert!(!evidence["guidance"].as_array().unwrap().is_empty());
    // The timeline shows what the probes saw between opening and failing:
    // the wrong plan once, however many probes saw it.
    let run = server.get("/v1/runs/evt_stuck").await;
    let outcomes: Vec<(&str, &str)> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    let failed = outcomes.iter().position(|(_, o)| *o == "failed").unwrap();
    assert_eq!(
        outcomes[..failed]
            .iter()
            .filter(|(s, o)| *s == "probe" && *o == "plan_mismatch")
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0].1, "opened", "{outcomes:?}");

    // The app fixes the customer's access: the next probe resolves it.
    app.answer("cus_stuck", Answer::Json(json!({"plan": "pro"})));
    let id = incident["id"].as_str().unwrap();
    let resolved = wait_for("the incident to resolve itself", async || {
        let incident = server.get(&format!("/v1/incidents/{id}")).await;
        (incident["status"] == "resolved").then_some(incident)
    })
    .await;
    assert!(
        resolved["resolution"].as_str().unwrap().contains("probe"),
        "{resolved}"
    );
    server.stop().await;
}

async fn every_way_a_probe_fails_is_recorded_and_still_ends_in_an_incident(backend: Backend) {
    let app = FakeApp::start().await;
    let Some(server) = TestServer::start(backend, &app.settings(SHORT_DEADLINES)).await else {
        return;
    };
    let off_list = format!("http://localhost:{}/access/cus_pro", app.addr.port());
    let cases = [
        ("wrong", Answer::Json(json!({"plan": "starter"})), None),
        ("garbage", Answer::Garbage, Some("the body is not JSON")),
        ("status", Answer::Status(500), Some("HTTP 500")),
        ("hang", Answer::Hang, Some("timed out after 1s")),
        (
            "redirect",
            Answer::RedirectTo(off_list),
            Some("another origin"),
        ),
        ("huge", Answer::Huge, Some("larger than 65536 bytes")),
        (
            "nullplan",
            Answer::Json(json!({"plan": 7})),
            Some("not a plan name"),
        ),
        (
            "noplan",
            Answer::Json(json!({"tier": "pro"})),
            Some("no plan at /plan"),
        ),
    ];
    for (name, answer, _) in &cases {
        app.answer(&format!("cus_{name}"), answer.clone());
        server.deliver(&pro_subscription(name)).await;
        // The app reconciled: what is missing is the access.
        let (status, _) = server
            .report(&format!("evt_{name}"), "reconciled", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let incidents = server.wait_for_incidents(cases.len()).await;
    assert_eq!(incidents.len(), cases.len());
    for (name, _, error) in &cases {
        let evidence = &incidents
            .iter()
            .find(|i| i["evidence"]["event_id"] == format!("evt_{name}"))
            .unwrap_or_else(|| panic!("no incident for {name}"))["evidence"];
        assert_eq!(
            evidence["missed_stage"], "access_asserted",
            "{name}: {evidence}"
        );
        let last = &evidence["last_probe"];
        match error {
            None => {
                assert_eq!(evidence["observed_plan"], "starter");
                assert_eq!(last["error"], Value::Null);
            }
            Some(error) => {
                let recorded = last["error"].as_str().unwrap_or_default();
                assert!(recorded.contains(error), "{name}: {recorded:?}");
                assert_eq!(evidence["observed_plan"], Value::Null, "{name}");
                let reason = evidence["observed_plan_reason"].as_str().unwrap();
                assert!(reason.contains(error), "{name}: {reason}");
            }
        }
    }
    let hang = server.get("/v1/runs/evt_hang").await;
    let hang_probe = &hang["probes"][0];
    assert!(
        hang_probe["duration_ms"].as_i64().unwrap() < 3000,
        "{hang_probe}"
    );
    // Nothing hung on the way: the server still answers at once.
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}

async fn a_name_that_resolves_to_a_refused_address_is_not_probed(backend: Backend) {
    let app = FakeApp::start().await;
    let url = format!(
        "http://localhost:{}/access/{{{{customer_id}}}}",
        app.addr.port()
    );
    // `localhost` is allowed by name, but only addresses in 10.0.0.0/8 are.
    let settings = app.settings(&[
        ("ASSAY_PROBE_URL", url.as_str()),
        ("ASSAY_PROBE_ALLOW_HOSTS", "localhost,10.0.0.0/8"),
    ]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    app.answer("cus_dns", Answer::Json(json!({"plan": "pro"})));
    server.deliver(&pro_subscription("dns")).await;
    let run = wait_for("a refused probe", async || {
        let run = server.get("/v1/runs/evt_dns").await;
        (!run["probes"].as_array().unwrap().is_empty()).then_some(run)
    })
    .await;
    let error = run["probes"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("which ASSAY_PROBE_ALLOW_HOSTS does not allow"),
        "{error}"
    );
    assert_eq!(run["status"], "open");
    assert_eq!(app.requests("cus_dns"), 0, "the app was never reached");
    server.stop().await;
}

async fn a_cancelled_customer_who_keeps_access_is_caught_by_the_probe(backend: Backend) {
    let app = FakeApp::start().await;
    let Some(server) = TestServer::start(backend, &app.settings(SHORT_DEADLINES)).await else {
        return;
    };
    for (customer, plan) in [("cus_keeps", json!("pro")), ("cus_gone", Value::Null)] {
        app.answer(customer, Answer::Json(json!({ "plan": plan })));
        let mut event = fixture("customer.subscription.deleted", &format!("evt_{customer}"));
        event["data"]["object"]["id"] = json!(format!("sub_{customer}"));
        event["data"]["object"]["customer"] = json!(customer);
        server.deliver(&event).await;
    }
    // `{"plan": null}` is no access: revoked as expected.
    let gone = wait_for_status(&server, "evt_cus_gone", "succeeded").await;
    assert_eq!(gone["observed_plan"], "none");
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0]["title"],
        "Customer access was not revoked after Stripe event"
    );
    assert_eq!(incidents[0]["evidence"]["observed_plan"], "pro");
    assert_eq!(
        incidents[0]["evidence"]["last_probe"]["observed_plan"],
        "pro"
    );
    server.stop().await;
}

async fn a_failed_payment_is_judged_on_access_kept_through_the_grace_period(backend: Backend) {
    let app = FakeApp::start().await;
    let Some(server) = TestServer::start(backend, &app.settings(SHORT_DEADLINES)).await else {
        return;
    };
    app.answer("cus_kept", Answer::Json(json!({"plan": "pro"})));
    app.answer("cus_cut", Answer::Json(json!({"plan": null})));
    server
        .deliver(&payment_failed("evt_kept", "cus_kept", "sub_kept"))
        .await;
    server
        .deliver(&payment_failed("evt_cut", "cus_cut", "sub_cut"))
        .await;
    wait_for_status(&server, "evt_kept", "succeeded").await;
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_cut");
    assert_eq!(
        incidents[0]["title"],
        "Customer access was revoked during the payment grace period"
    );
    assert_eq!(incidents[0]["evidence"]["observed_plan"], "none");
    server.stop().await;
}

async fn an_entitlement_summary_is_compared_as_a_set_against_the_probe(backend: Backend) {
    let app = FakeApp::start().await;
    let settings = app.settings(&[
        ("ASSAY_PROBE_FEATURES_POINTER", "/entitlements/features"),
        ("ASSAY_DEADLINE_RECONCILED", "2s"),
        ("ASSAY_DEADLINE_ACCESS_ASSERTED", "3s"),
    ]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    app.answer(
        "cus_set",
        Answer::Json(json!({"entitlements": {"features": ["seats", "api", "seats"]}})),
    );
    app.answer(
        "cus_short",
        Answer::Json(json!({"entitlements": {"features": ["seats"]}})),
    );
    for customer in ["cus_set", "cus_short"] {
        let mut event = fixture(
            "entitlements.active_entitlement_summary.updated",
            &format!("evt_{customer}"),
        );
        let object = &mut event["data"]["object"];
        object["customer"] = json!(customer);
        object["entitlements"]["has_more"] = json!(false);
        object["entitlements"]["data"] = json!([{"lookup_key": "api"}, {"lookup_key": "seats"}]);
        server.deliver(&event).await;
    }
    let ok = wait_for_status(&server, "evt_cus_set", "succeeded").await;
    assert_eq!(ok["observed_features"], json!(["api", "seats"]));
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_cus_short");
    assert_eq!(
        incidents[0]["evidence"]["observed_features"],
        json!(["seats"])
    );
    server.stop().await;
}

async fn a_burst_never_exceeds_the_probe_concurrency(backend: Backend) {
    const RUNS: usize = 40;
    for (global, per_host, cap) in [("16", "3", 3), ("2", "8", 2)] {
        let app = FakeApp::start().await;
        *app.state.delay.lock().unwrap() = Duration::from_millis(50);
        let settings = app.settings(&[
            ("ASSAY_PROBE_CONCURRENCY", global),
            ("ASSAY_PROBE_HOST_CONCURRENCY", per_host),
            ("ASSAY_PROBE_HOST_RATE", "1000"),
        ]);
        let Some(server) = TestServer::start(backend, &settings).await else {
            return;
        };
        for i in 0..RUNS {
            app.answer(&format!("cus_{i}"), Answer::Json(json!({"plan": "pro"})));
            server.deliver(&pro_subscription(&i.to_string())).await;
        }
        wait_for("every run to succeed", async || {
            let page = server.get("/v1/runs?status=succeeded&limit=100").await;
            (page["data"].as_array().unwrap().len() == RUNS).then_some(())
        })
        .await;
        let max = app.state.max_in_flight.load(Ordering::SeqCst);
        assert!(max <= cap, "{max} probes at once, over the cap of {cap}");
        assert!(max >= 2, "the probes did run concurrently ({max})");
        server.stop().await;
    }
}

async fn probes_to_one_host_are_spaced_out(backend: Backend) {
    const RUNS: usize = 12;
    let app = FakeApp::start().await;
    let settings = app.settings(&[("ASSAY_PROBE_HOST_RATE", "10")]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    for i in 0..RUNS {
        app.answer(&format!("cus_{i}"), Answer::Json(json!({"plan": "pro"})));
    }
    // All due at once...
    for i in 0..RUNS {
        server.deliver(&pro_subscription(&i.to_string())).await;
    }
    wait_for("every run to succeed", async || {
        let page = server.get("/v1/runs?status=succeeded&limit=100").await;
        (page["data"].as_array().unwrap().len() == RUNS).then_some(())
    })
    .await;
    // ...yet they reach the app at most 10 a second: sent a tenth of a
    // second apart, they arrive spread over at least (RUNS - 1) tenths,
    // and no two together. One request held up on a busy machine shortens
    // the gap after it, so a single gap is allowed that much jitter; the
    // whole spread is not.
    let arrivals = app.state.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), RUNS);
    let spread = arrivals[RUNS - 1] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(100 * (RUNS as u64 - 1)) - Duration::from_millis(50),
        "{RUNS} probes within {spread:?}"
    );
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(40),
            "{gap:?} between two probes"
        );
    }
    server.stop().await;
}

async fn a_probe_token_comes_from_the_environment_and_is_never_stored(backend: Backend) {
    const TOKEN: &str = "probe-token-7d1e55c0b2";
    let app = FakeApp::start().await;
    *app.state.token.lock().unwrap() = Some(TOKEN.into());
    let settings = app.settings(&[
        (
            "ASSAY_PROBE_HEADERS",
            "Authorization=Bearer ${APP_ACCESS_TOKEN}",
        ),
        ("APP_ACCESS_TOKEN", TOKEN),
    ]);
    let Some(server) = TestServer::start(backend, &settings).await else {
        return;
    };
    app.answer("cus_tok", Answer::Json(json!({"plan": "pro"})));
    server.deliver(&pro_subscription("tok")).await;
    let run = wait_for_status(&server, "evt_tok", "succeeded").await;
    assert!(!run.to_string().contains(TOKEN));
    assert!(
        server.db.holds(run["event_id"].as_str().unwrap()).await,
        "the search can find what is stored"
    );
    assert!(!server.db.holds(TOKEN).await, "the token was stored");
    server.stop().await;
}

/// With two replicas probing one PostgreSQL database (SQLite serves one
/// process), each probe is made once: the app sees exactly one request per
/// run, the one that matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_probe_each_run_once() {
    let backend = Backend::Postgres;
    const RUNS: usize = 30;
    let app = FakeApp::start().await;
    *app.state.delay.lock().unwrap() = Duration::from_millis(20);
    let settings = app.settings(&[]);
    let Some(first) = TestServer::start(backend, &settings).await else {
        return;
    };
    let second = first.replica(&settings).await;
    for i in 0..RUNS {
        app.answer(&format!("cus_{i}"), Answer::Json(json!({"plan": "pro"})));
        let server = if i % 2 == 0 { &first } else { &second };
        server.deliver(&pro_subscription(&i.to_string())).await;
    }
    wait_for("every run to succeed", async || {
        let page = first.get("/v1/runs?status=succeeded&limit=100").await;
        (page["data"].as_array().unwrap().len() == RUNS).then_some(())
    })
    .await;
    for i in 0..RUNS {
        assert_eq!(app.requests(&format!("cus_{i}")), 1, "cus_{i}");
    }
    assert_eq!(
        first.db.scalar("SELECT COUNT(*) FROM probe_attempts").await,
        RUNS as i64
    );
    second.stop().await;
    first.stop().await;
}

on_both_backends!(
    access_that_flips_later_succeeds_through_probes_alone,
    access_that_never_flips_raises_an_incident_with_the_last_probe,
    every_way_a_probe_fails_is_recorded_and_still_ends_in_an_incident,
    a_name_that_resolves_to_a_refused_address_is_not_probed,
    a_cancelled_customer_who_keeps_access_is_caught_by_the_probe,
    a_failed_payment_is_judged_on_access_kept_through_the_grace_period,
    an_entitlement_summary_is_compared_as_a_set_against_the_probe,
    a_burst_never_exceeds_the_probe_concurrency,
    probes_to_one_host_are_spaced_out,
    a_probe_token_comes_from_the_environment_and_is_never_stored,
);
