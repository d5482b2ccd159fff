//! Hostile requests while honest Stripe deliveries keep arriving. Every
//! hostile request gets its 4xx, in the contract's error shape wherever
//! Assay answers it (the HTTP parser itself refuses a header block or a path
//! over its limits, with a bare 431 or 414), and changes nothing. Strings
//! built to break SQL, HTML or a template, put in every string field of a
//! validly signed event, are accepted, then stored, served and shown
//! verbatim (escaped on the dashboard). The honest load sees no error, and
//! every one of its events is stored.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::dashboard::{ADMIN_TOKEN, page, sign_in};
use crate::support::{
    API_KEY, Backend, OTHER_API_KEY, SECRET, TestDb, TestServer, assert_error, http_client, now,
    on_both_backends, post_signed, sign, subscription_created, wait_for,
};

/// Honest senders, each posting one signed event after another.
const HONEST_SENDERS: usize = 4;
/// At most this many events per honest sender, however long the corpus takes.
const HONEST_MAX: usize = 400;
/// Hostile requests in flight at once.
const HOSTILE_CONCURRENCY: usize = 4;

/// Strings built to break SQL, HTML or a template. Each goes into every
/// string field of one validly signed event (its id, customer, subscription,
/// price, lookup key, product, metadata key and value), and is the type of
/// another.
const INJECTIONS: &[&str] = &[
    "'; DROP TABLE runs; --",
    "\" OR \"1\"=\"1",
    "evt') OR 1=1; DELETE FROM stripe_events; --",
    "Robert'); DROP TABLE incidents;--",
    "' UNION SELECT payload, payload FROM stripe_events --",
    "x' AND pg_sleep(10) IS NULL --",
    "$1 $2 ?1 :name @p %s",
    "\\'; SELECT 1; --\\",
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
    "javascript:alert(3)//",
    "{{customer_id}} {{{raw}}} {{#each x}}",
    "a/b/../c%2F%00",
    "😀 עברית \u{202e}dlrow",
];

/// The honest load's events, and what it saw.
#[derive(Default)]
struct Honest {
    acked: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Honest {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// Starts the honest senders: valid, signed, fresh events, each its own
/// customer and subscription, until told to stop (at most `HONEST_MAX` each).
fn start_honest(base: &str) -> (Arc<Honest>, Vec<tokio::task::JoinHandle<()>>) {
    let honest = Arc::new(Honest::default());
    let client = http_client();
    let tasks = (0..HONEST_SENDERS)
        .map(|sender| {
            let (honest, client, base) = (honest.clone(), client.clone(), base.to_owned());
            tokio::spawn(async move {
                for i in 0..HONEST_MAX {
                    if honest.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("evt_honest_{sender}_{i}");
                    let body = honest_event(&id).to_string();
                    match post_signed(&client, &base, &body).await {
                        Ok(r) if r.status() == StatusCode::OK => {
                            honest.acked.lock().unwrap().push(id);
                        }
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            honest
                                .errors
                                .lock()
                                .unwrap()
                                .push(format!("{id}: {status} {text}"));
                        }
                        Err(e) => honest.errors.lock().unwrap().push(format!("{id}: {e}")),
                    }
                }
            })
        })
        .collect();
    (honest, tasks)
}

fn honest_event(id: &str) -> Value {
    let n = id.trim_start_matches("evt_honest_");
    subscription_created(id, &format!("cus_h{n}"), &format!("sub_h{n}"), "price_pro")
}

/// What a hostile request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Assay's refusal: this status, the contract's body with this code.
    Error(StatusCode, &'static str),
    /// Refused by the HTTP parser before Assay sees the request: this
    /// status, and no body.
    Bare(StatusCode),
    /// A redelivery within the tolerance: 200, `duplicate: true`.
    Duplicate,
    /// A filter that matches nothing: 200, an empty page.
    Empty,
}

struct Case {
    name: String,
    request: RequestBuilder,
    expect: Expect,
}

/// The rows a hostile request could change: everything but the honest
/// load's events, runs and timeline entries.
async fn others(db: &TestDb) -> Vec<i64> {
    let mut counts = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM stripe_events WHERE event_id NOT LIKE 'evt_honest_%'",
        "SELECT COUNT(*) FROM runs WHERE event_id NOT LIKE 'evt_honest_%'",
        "SELECT COUNT(*) FROM run_timeline t JOIN runs r ON r.id = t.run_id \
         WHERE r.event_id NOT LIKE 'evt_honest_%'",
        "SELECT COUNT(*) FROM incidents",
        "SELECT COUNT(*) FROM probe_queue",
        "SELECT COUNT(*) FROM probe_attempts",
        "SELECT COUNT(*) FROM alert_deliveries",
        "SELECT COUNT(*) FROM drills",
        "SELECT COUNT(*) FROM dashboard_sessions",
    ] {
        counts.push(db.scalar(sql).await);
    }
    counts
}

/// How many tables the database has: an injection that dropped one shows.
async fn tables(db: &TestDb) -> i64 {
    db.scalar(match db.backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        }
    })
    .await
}

fn path_segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// One event with `s` in every string field Assay reads, and more.
fn injected_event(s: &str) -> Value {
    let mut event = subscription_created(s, s, s, s);
    let object = &mut event["data"]["object"];
    object["items"]["data"][0]["price"]["lookup_key"] = json!(s);
    object["items"]["data"][0]["price"]["product"] = json!(s);
    object["description"] = json!(s);
    object["metadata"] = json!({ s: s });
    event
}

/// An event of type `s` (unknown: stored, no run), with its own id.
fn injected_type(s: &str) -> Value {
    let mut event = injected_event(s);
    event["id"] = json!(format!("{s} (as a type)"));
    event["type"] = json!(s);
    event
}

async fn hostile_requests_change_nothing_and_honest_load_is_served(backend: Backend) {
    let Some(server) = TestServer::start(backend, &[("ASSAY_ADMIN_TOKEN", ADMIN_TOKEN)]).await
    else {
        return;
    };
    let db = server.db.clone();
    let tables_before = tables(&db).await;
    let (honest, senders) = start_honest(&server.base);
    wait_for("the honest load to be under way", async || {
        (honest.acked() >= 20).then_some(())
    })
    .await;
    let before = others(&db).await;
    let honest_id = honest.acked.lock().unwrap()[0].clone();
    let honest_body = honest_event(&honest_id).to_string();

    let cases = corpus(&server, &honest_id, &honest_body);
    let injections: Vec<(String, String)> = INJECTIONS
        .iter()
        .flat_map(|s| [injected_event(s).to_string(), injected_type(s).to_string()])
        .map(|body| (sign(&body, SECRET, now()), body))
        .collect();
    let acked_at_start = honest.acked();

    // The corpus and the injected events, a few at a time, while the honest
    // load keeps going.
    let client = &server.client;
    let hook_url = server.url("/hooks/stripe/default");
    let hook_url = &hook_url;
    let hostile = futures::stream::iter(cases)
        .map(|case| async move {
            let got = case.request.send().await;
            (case.name, case.expect, got)
        })
        .buffer_unordered(HOSTILE_CONCURRENCY)
        .collect::<Vec<_>>();
    let injected = futures::stream::iter(&injections)
        .map(|(signature, body)| async move {
            let got = client
                .post(hook_url)
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = got.status();
            (status, got.json::<Value>().await.unwrap_or(Value::Null))
        })
        .buffer_unordered(2)
        .collect::<Vec<_>>();
    let chunked_signature = sign(&honest_body, SECRET, now());
    let chunked = chunked_over_the_limit(&server.base, &chunked_signature);
    let long_path = path_over_the_limit(&server.base);
    let (hostile, injected, chunked, long_path) =
        tokio::join!(hostile, injected, chunked, long_path);
    let acked_at_end = honest.acked();
    honest.stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }

    // And the two sent over a raw connection.
    let count = hostile.len() + 2;
    for (name, expect, got) in hostile {
        check(&name, expect, got).await;
    }
    assert_error(
        "a 2 MB body in chunks, no length",
        &chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );
    assert_eq!(long_path.0, StatusCode::URI_TOO_LONG, "{}", long_path.1);
    for (status, body) in &injected {
        assert_eq!(*status, StatusCode::OK, "an injected event: {body}");
        assert_eq!(body["duplicate"], false, "{body}");
    }
    assert!(
        acked_at_end > acked_at_start,
        "the honest load ran alongside the {count} hostile requests"
    );

    // The honest load: no error, every event stored once with its run, and
    // no hostile request touched its runs.
    let errors = honest.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "the honest load saw errors: {errors:?}");
    let acked: BTreeSet<String> = honest.acked.lock().unwrap().iter().cloned().collect();
    let stored: BTreeSet<String> = db
        .texts(
            "SELECT event_id FROM stripe_events WHERE event_id LIKE 'evt_honest_%'",
            &[],
        )
        .await
        .into_iter()
        .collect();
    assert_eq!(
        stored, acked,
        "the honest events stored are those acknowledged"
    );
    let honest_runs = db
        .scalar(
            "SELECT COUNT(*) FROM runs WHERE event_id LIKE 'evt_honest_%' \
             AND stage = 'received' AND status = 'open'",
        )
        .await;
    assert_eq!(honest_runs, acked.len() as i64);
    let honest_timeline = db
        .scalar(
            "SELECT COUNT(*) FROM run_timeline t JOIN runs r ON r.id = t.run_id \
             WHERE r.event_id LIKE 'evt_honest_%'",
        )
        .await;
    assert_eq!(honest_timeline, acked.len() as i64, "one entry per run");

    // The hostile requests changed nothing; the injected events added
    // exactly themselves (two events each, one of them with a run).
    let k = INJECTIONS.len() as i64;
    let mut expected = before.clone();
    expected[0] += 2 * k;
    expected[1] += k;
    expected[2] += k;
    assert_eq!(
        others(&db).await,
        expected,
        "rows changed beyond the injected events (before: {before:?})"
    );
    assert_eq!(tables(&db).await, tables_before, "a table went missing");

    check_injections(&server).await;
    eprintln!(
        "{backend:?}: {count} hostile requests and {} injected events, alongside {} honest \
         events ({} of them during the corpus)",
        injections.len(),
        acked.len(),
        acked_at_end - acked_at_start
    );
    server.stop().await;
}

/// The injected strings come back verbatim from the API and the database,
/// and the dashboard shows them as text.
async fn check_injections(server: &TestServer) {
    let cookie = sign_in(server).await;
    for s in INJECTIONS {
        let event = injected_event(s);
        let stored = server
            .db
            .texts(
                "SELECT payload FROM stripe_events WHERE project = 'default' AND event_id = $1",
                &[s],
            )
            .await;
        assert_eq!(stored, [event.to_string()], "{s}: the payload, verbatim");
        let run = server.get(&format!("/v1/runs/{}", path_segment(s))).await;
        for field in ["event_id", "customer_id", "subscription_id"] {
            assert_eq!(run[field], *s, "{s}: the run's {field}");
        }
        assert_eq!(run["timeline"].as_array().unwrap().len(), 1, "{run}");
        let found = server
            .get(&format!("/v1/runs?customer_id={}", path_segment(s)))
            .await;
        assert_eq!(found["data"].as_array().unwrap().len(), 1, "{s}: {found}");

        let typed = injected_type(s);
        let id = typed["id"].as_str().unwrap();
        let stored = server
            .db
            .texts(
                "SELECT event_type FROM stripe_events WHERE project = 'default' AND event_id = $1",
                &[id],
            )
            .await;
        assert_eq!(stored, [*s], "{s}: the event type, verbatim");
        let (status, _) = server
            .api(Method::GET, &format!("/v1/runs/{}", path_segment(id)), None)
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{s}: an unknown type opens no run"
        );

        let path = format!("/runs/default/{}", run["id"].as_str().unwrap());
        let (status, html) = page(server, &cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let escaped = handlebars::html_escape(s);
        assert!(html.contains(&escaped), "{s}: not shown as text on {path}");
        if escaped != *s {
            assert!(!html.contains(s), "{s}: shown unescaped on {path}");
        }
    }
}

/// Sends nothing: builds the hostile requests.
fn corpus(server: &TestServer, honest_id: &str, honest_body: &str) -> Vec<Case> {
    use Expect::{Bare, Duplicate, Empty, Error};
    const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
    let client = &server.client;
    let t = now();
    let hook = |project: &str, body: Vec<u8>, signature: Option<String>| {
        let mut request = client
            .post(server.url(&format!("/hooks/stripe/{project}")))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request
    };
    // Correctly signed: the body is what is wrong.
    let signed = |body: Vec<u8>| {
        let signature = sign(&body, SECRET, t);
        hook("default", body, Some(signature))
    };
    let event = subscription_created("evt_hostile", "cus_hostile", "sub_hostile", "price_pro");
    let body = event.to_string();
    let honest = honest_body.to_owned();
    let api = |method: Method, path: &str, key: &str| {
        client.request(method, server.url(path)).bearer_auth(key)
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &str, request: RequestBuilder, expect: Expect| {
        cases.push(Case {
            name: name.to_owned(),
            request,
            expect,
        });
    };

    // Signatures.
    add(
        "wrong secret",
        hook(
            "default",
            body.clone().into(),
            Some(sign(&body, "whsec_wrong", t)),
        ),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "another project's secret",
        hook(
            "default",
            body.clone().into(),
            Some(sign(&body, "whsec_other", t)),
        ),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "signed for another project, sent to this one",
        hook("other", body.clone().into(), Some(sign(&body, SECRET, t))),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "tampered body",
        hook(
            "default",
            body.replace("cus_hostile", "cus_victim").into(),
            Some(sign(&body, SECRET, t)),
        ),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "signature over an empty body",
        hook("default", body.clone().into(), Some(sign("", SECRET, t))),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "no signature",
        hook("default", body.clone().into(), None),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "empty signature",
        hook("default", body.clone().into(), Some(String::new())),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "v1 not hex",
        hook("default", body.clone().into(), Some(format!("t={t},v1=zz"))),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "two timestamps",
        hook(
            "default",
            body.clone().into(),
            Some(format!("t={t},{}", sign(&body, SECRET, t))),
        ),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "timestamp beyond 64 bits",
        hook(
            "default",
            body.clone().into(),
            Some("t=99999999999999999999,v1=00".into()),
        ),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    let invalid_utf8_header = reqwest::header::HeaderValue::from_bytes(b"t=1,v1=\xff\xfe").unwrap();
    add(
        "signature header not UTF-8",
        client
            .post(server.url("/hooks/stripe/default"))
            .header("content-type", "application/json")
            .header("stripe-signature", invalid_utf8_header)
            .body(body.clone()),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "2,000 wrong v1 signatures",
        hook(
            "default",
            body.clone().into(),
            Some(format!(
                "t={t}{}",
                format!(",v1={}", "cd".repeat(32)).repeat(2000)
            )),
        ),
        Error(BAD_REQUEST, "signature_mismatch"),
    );

    // Timestamps: replays and the future.
    for (name, at) in [
        ("timestamp 310 s old", t - 310),
        ("timestamp a day old (a replay)", t - 86_400),
        // Ahead by more than the tolerance still when the request is sent.
        ("timestamp 330 s ahead", t + 330),
        ("timestamp a day ahead", t + 86_400),
        ("timestamp 0", 0),
        ("timestamp -1", -1),
        ("timestamp i64::MAX", i64::MAX),
        ("timestamp i64::MIN", i64::MIN),
    ] {
        add(
            name,
            hook(
                "default",
                body.clone().into(),
                Some(sign(&body, SECRET, at)),
            ),
            Error(BAD_REQUEST, "stale_signature"),
        );
    }
    add(
        "an honest delivery replayed 400 s later",
        hook(
            "default",
            honest.clone().into(),
            Some(sign(&honest, SECRET, t - 400)),
        ),
        Error(BAD_REQUEST, "stale_signature"),
    );
    add(
        "an honest delivery replayed within the tolerance",
        hook(
            "default",
            honest.clone().into(),
            Some(sign(&honest, SECRET, t)),
        ),
        Duplicate,
    );

    // Headers over every limit.
    add(
        "a 200 KB signature header",
        hook(
            "default",
            body.clone().into(),
            Some(format!("t={t},v1={}", "ab".repeat(100_000))),
        ),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    add(
        "a 1 MB signature header",
        hook(
            "default",
            body.clone().into(),
            Some(format!("t={t},v1={}", "ab".repeat(500_000))),
        ),
        Bare(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    );
    let mut many = hook(
        "default",
        body.clone().into(),
        Some(sign(&body, "whsec_wrong", t)),
    );
    for i in 0..80 {
        many = many.header(format!("x-hostile-{i}"), "x".repeat(100));
    }
    add(
        "80 extra headers",
        many,
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    let mut too_many = hook("default", body.clone().into(), Some(sign(&body, SECRET, t)));
    for i in 0..1_000 {
        too_many = too_many.header(format!("x-hostile-{i}"), "x");
    }
    add(
        "1,000 extra headers",
        too_many,
        Bare(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    );
    add(
        "a 60 KB project name",
        hook(
            &"p".repeat(60_000),
            body.clone().into(),
            Some(sign(&body, SECRET, t)),
        ),
        Error(StatusCode::NOT_FOUND, "not_found"),
    );

    // Bodies, correctly signed.
    add(
        "100,000 nested arrays",
        signed("[".repeat(100_000).into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "50,000 nested arrays, closed",
        signed(format!("{}{}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "nesting deep inside a valid event",
        signed(
            with_metadata(
                &body,
                &format!(
                    "{{\"deep\":{}1{}}}",
                    "{\"a\":".repeat(20_000),
                    "}".repeat(20_000)
                ),
            )
            .into_bytes(),
        ),
        Error(BAD_REQUEST, "malformed_event"),
    );
    let mut invalid_utf8 = body.clone().into_bytes();
    let at = body.find("cus_hostile").unwrap();
    invalid_utf8[at] = 0xff;
    add(
        "invalid UTF-8 in a string",
        signed(invalid_utf8),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "invalid UTF-8 throughout",
        signed(vec![0xc3, 0x28, 0xff, 0xfe, 0x80]),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "a lone surrogate escape",
        signed(body.replace("cus_hostile", "cus_\\ud800").into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "a number out of range",
        signed(
            body.replacen("\"created\":", "\"created\":1e400,\"x\":", 1)
                .into_bytes(),
        ),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "an empty body",
        signed(Vec::new()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "a JSON array",
        signed(format!("[{body}]").into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "an id over 255 characters",
        signed(body.replace("evt_hostile", &"e".repeat(300)).into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    // Random, so that it does not compress: PostgreSQL cannot index it.
    let long: String = (0..320)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for field in ["cus_hostile", "sub_hostile"] {
        add(
            &format!("{field} as 10,000 characters"),
            signed(body.replace(field, &long).into_bytes()),
            Error(BAD_REQUEST, "malformed_event"),
        );
    }
    add(
        "a control character in the id",
        signed(body.replace("evt_hostile", "evt_\\u001b[31m").into_bytes()),
        Error(BAD_REQUEST, "malformed_event"),
    );
    add(
        "a drill's id without a drill's marks",
        signed(
            body.replace("evt_hostile", "evt_assaydrill_forged")
                .into_bytes(),
        ),
        Error(BAD_REQUEST, "malformed_event"),
    );
    let oversized = with_metadata(
        &body,
        &format!("{{\"pad\":\"{}\"}}", "x".repeat(600 * 1024)),
    );
    add(
        "a 600 KB event",
        signed(oversized.clone().into_bytes()),
        Error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    );
    add(
        "a 600 KB event, unsigned",
        hook("default", oversized.into(), None),
        Error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    );

    // Content types.
    add(
        "a Stripe delivery as a form, unsigned",
        client
            .post(server.url("/hooks/stripe/default"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=evt_form&type=invoice.paid"),
        Error(BAD_REQUEST, "invalid_signature_header"),
    );
    add(
        "a Stripe delivery as text, wrongly signed",
        hook(
            "default",
            body.clone().into(),
            Some(sign(&body, "whsec_wrong", t)),
        )
        .header("content-type", "text/plain"),
        Error(BAD_REQUEST, "signature_mismatch"),
    );
    let open = json!({"event_id": "evt_hostile_sdk", "event_type": "invoice.paid", "customer_id": "cus_x"});
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        add(
            &format!("open a run as {content_type}"),
            api(Method::POST, "/v1/runs", API_KEY)
                .header("content-type", content_type)
                .body(open.to_string()),
            Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        );
    }
    add(
        "open a run with no content type",
        api(Method::POST, "/v1/runs", API_KEY).body(open.to_string()),
        Error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    );
    add(
        "open a run with XML called JSON",
        api(Method::POST, "/v1/runs", API_KEY)
            .header("content-type", "application/json")
            .body("<run><event_id>evt_x</event_id></run>"),
        Error(BAD_REQUEST, "malformed_json"),
    );
    add(
        "a stage report in XML",
        api(
            Method::POST,
            &format!("/v1/runs/{honest_id}/stages/reconciled"),
            API_KEY,
        )
        .header("content-type", "application/xml")
        .body("<report/>"),
        Error(BAD_REQUEST, "malformed_json"),
    );

    // Methods.
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        add(
            &format!("{method} on the Stripe endpoint"),
            client
                .request(method.clone(), server.url("/hooks/stripe/default"))
                .header("content-type", "application/json")
                .header("stripe-signature", sign(&body, SECRET, t))
                .body(body.clone()),
            Error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        );
    }
    add(
        "GET a stage",
        api(
            Method::GET,
            &format!("/v1/runs/{honest_id}/stages/reconciled"),
            API_KEY,
        ),
        Error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    );
    add(
        "DELETE a run",
        api(Method::DELETE, &format!("/v1/runs/{honest_id}"), API_KEY),
        Error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    );
    add(
        "PUT a run",
        api(Method::PUT, &format!("/v1/runs/{honest_id}"), API_KEY).json(&open),
        Error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    );

    // Paths.
    for (name, project) in [
        ("unknown project", "nope"),
        ("project in the wrong case", "DEFAULT"),
        ("project with a slash", "default%2Fx"),
        ("project that is SQL", "'%20OR%20'1'%3D'1"),
        ("project that is not UTF-8", "%FF"),
        ("project that is a NUL", "%00"),
    ] {
        add(
            name,
            hook(project, body.clone().into(), Some(sign(&body, SECRET, t))),
            Error(StatusCode::NOT_FOUND, "not_found"),
        );
    }
    for path in [
        "/hooks/stripe/",
        "/hooks/stripe",
        "/hooks/stripe/default/x",
        "/hooks",
    ] {
        add(
            &format!("POST {path}"),
            client
                .post(server.url(path))
                .header("stripe-signature", sign(&body, SECRET, t))
                .header("content-type", "application/json")
                .body(body.clone()),
            Error(StatusCode::NOT_FOUND, "not_found"),
        );
    }

    // The SDK API: another project's key, a wrong key, unknown stages.
    add(
        "read a run with another project's key",
        api(Method::GET, &format!("/v1/runs/{honest_id}"), OTHER_API_KEY),
        Error(StatusCode::NOT_FOUND, "not_found"),
    );
    add(
        "report a stage with another project's key",
        api(
            Method::POST,
            &format!("/v1/runs/{honest_id}/stages/reconciled"),
            OTHER_API_KEY,
        )
        .json(&json!({"deploy_sha": "sha-hostile"})),
        Error(StatusCode::NOT_FOUND, "not_found"),
    );
    add(
        "report access with another project's key",
        api(
            Method::POST,
            &format!("/v1/runs/{honest_id}/stages/access_asserted"),
            OTHER_API_KEY,
        )
        .json(&json!({"observed_plan": "pro"})),
        Error(StatusCode::NOT_FOUND, "not_found"),
    );
    add(
        "acknowledge an incident that is not there",
        api(
            Method::POST,
            &format!("/v1/incidents/{}/acknowledge", uuid::Uuid::now_v7()),
            API_KEY,
        ),
        Error(StatusCode::NOT_FOUND, "not_found"),
    );
    for (name, key) in [
        ("a key of no project", "not-a-key-0123456789abcdef"),
        ("a key that is SQL", "' OR '1'='1' --"),
        ("an empty key", ""),
    ] {
        add(
            name,
            api(
                Method::POST,
                &format!("/v1/runs/{honest_id}/stages/reconciled"),
                key,
            ),
            Error(StatusCode::UNAUTHORIZED, "unauthorized"),
        );
    }
    for (stage, code) in [
        ("shipped", "unknown_stage"),
        ("%27%3B%20DROP%20TABLE%20runs%3B--", "unknown_stage"),
        ("RECONCILED", "unknown_stage"),
        ("received", "stage_not_reportable"),
        ("closed", "stage_not_reportable"),
    ] {
        add(
            &format!("report stage {stage}"),
            api(
                Method::POST,
                &format!("/v1/runs/{honest_id}/stages/{stage}"),
                API_KEY,
            )
            .json(&json!({})),
            Error(BAD_REQUEST, code),
        );
    }
    for path in [
        "/v1/runs/%FF".to_owned(),
        "/v1/runs/%FF/stages/reconciled".to_owned(),
        format!("/v1/runs/{honest_id}/stages/%FF"),
        "/v1/incidents/%FF".to_owned(),
        "/v1/incidents/%FF/resolve".to_owned(),
        "/v1/drills/%FF".to_owned(),
    ] {
        let method = if path.starts_with("/v1/runs/%FF/")
            || path.ends_with("/resolve")
            || path.contains("/stages/")
        {
            Method::POST
        } else {
            Method::GET
        };
        add(
            &format!("{method} {path}, not UTF-8"),
            api(method, &path, API_KEY),
            Error(StatusCode::NOT_FOUND, "not_found"),
        );
    }
    add(
        "open a run naming another project",
        api(Method::POST, "/v1/runs", OTHER_API_KEY)
            .json(&json!({"event_id": honest_id, "event_type": "invoice.paid", "customer_id": "c", "project": "default"})),
        Error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    );
    add(
        "open a drill's run",
        api(Method::POST, "/v1/runs", API_KEY).json(
            &json!({"event_id": "evt_assaydrill_forged", "event_type": "invoice.paid", "customer_id": "c"}),
        ),
        Error(StatusCode::UNPROCESSABLE_ENTITY, "reserved_event_id"),
    );
    add(
        "a status filter that is SQL",
        api(
            Method::GET,
            "/v1/runs?status=open'%20OR%20'1'%3D'1",
            API_KEY,
        ),
        Error(BAD_REQUEST, "invalid_query"),
    );
    add(
        "a limit that is SQL",
        api(Method::GET, "/v1/runs?limit=1;DROP%20TABLE%20runs", API_KEY),
        Error(BAD_REQUEST, "invalid_query"),
    );
    for customer in ["'%20OR%20'1'%3D'1", "%FF", "cus_h0_0'--"] {
        add(
            &format!("a customer filter {customer}"),
            api(
                Method::GET,
                &format!("/v1/runs?customer_id={customer}"),
                API_KEY,
            ),
            Empty,
        );
    }
    cases
}

/// Sends `head` and then `chunks` over a raw connection, for what the HTTP
/// client here will not send (a body streamed with no length, a path over
/// its own limit); returns the answer.
async fn raw(name: &str, base: &str, head: String, chunks: Vec<Vec<u8>>) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for chunk in chunks {
            write.write_all(&chunk).await?;
        }
        write.flush().await
    });
    // Assay may answer and close before it has read everything: what it
    // wrote before the close is the answer.
    let mut response = Vec::new();
    let _ = read.read_to_end(&mut response).await;
    let _ = writer.await;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{name}: no answer ({response:?})"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{name}: no status in {head:?}"));
    (
        StatusCode::from_u16(status).unwrap(),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

/// A 2 MB body sent in chunks with no length: 413 once the limit is passed.
async fn chunked_over_the_limit(base: &str, signature: &str) -> (StatusCode, Value) {
    let head = format!(
        "POST /hooks/stripe/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         stripe-signature: {signature}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024)).into_bytes();
    let mut chunks = vec![chunk; 32];
    chunks.push(b"0\r\n\r\n".to_vec());
    raw("a 2 MB body in chunks", base, head, chunks).await
}

/// A path of 100 KB: over the parser's limit (and the client's).
async fn path_over_the_limit(base: &str) -> (StatusCode, Value) {
    let head = format!(
        "POST /hooks/stripe/{} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
        "p".repeat(100_000)
    );
    raw("a 100 KB path", base, head, Vec::new()).await
}

/// `body` (an event) with `metadata` as the first metadata object in it.
fn with_metadata(body: &str, metadata: &str) -> String {
    let changed = body.replacen("\"metadata\":{}", &format!("\"metadata\":{metadata}"), 1);
    assert_ne!(changed, body, "the event has an empty metadata object");
    changed
}

/// Checks one hostile request's answer.
async fn check(name: &str, expect: Expect, got: reqwest::Result<reqwest::Response>) {
    let response = match got {
        Ok(response) => response,
        Err(e) => panic!("{name}: no answer ({:?})", e.without_url()),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    match expect {
        Expect::Error(want, code) => assert_error(name, &(status, body), want, code),
        Expect::Bare(want) => assert_eq!(status, want, "{name}: {text}"),
        Expect::Duplicate => {
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(body["duplicate"], true, "{name}: {body}");
        }
        Expect::Empty => {
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(body["data"], json!([]), "{name}: {body}");
        }
    }
}

on_both_backends!(hostile_requests_change_nothing_and_honest_load_is_served);
