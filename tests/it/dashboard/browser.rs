//! The dashboard in a real headless Chromium, driven over WebDriver
//! (chromedriver): sign in, see the open run of a signed Stripe event,
//! follow it to its incident, acknowledge it, and see the change; and the
//! worked example's customer read on a phone-sized screen. A screenshot of
//! each page is saved under `target/screenshots/`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::dashboard::{ADMIN_TOKEN, SETTINGS};
use crate::support::{
    Backend, TestServer, on_both_backends, peer_available, subscription_created, wait_for,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser test runs: Chromium and its driver must be
/// installed unless the run opts out (`ASSAY_TEST_SKIP=chromium`).
fn browser_available() -> bool {
    let ok = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    peer_available(
        "chromium",
        ok,
        "Chromium and chromedriver",
        "install Debian's chromium and chromium-driver",
    )
}

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        assay::install_crypto_provider();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

/// Saves a screenshot of the page as a test artifact.
async fn screenshot(browser: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the element `css` shows `expected`: a click that submits a
/// form or follows a link returns before the next page has loaded, and
/// until it has, the element may be missing or stale.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if shown == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` shows {shown:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Assay with the dashboard's settings and these deadlines, and a
/// browser's driver beside it.
async fn start(backend: Backend, reconciled: &str, access: &str) -> Option<(TestServer, Driver)> {
    let settings: Vec<(&str, &str)> = SETTINGS
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("ASSAY_DEADLINE"))
        .chain([
            ("ASSAY_DEADLINE_RECONCILED", reconciled),
            ("ASSAY_DEADLINE_ACCESS_ASSERTED", access),
        ])
        .collect();
    let server = TestServer::start(backend, &settings).await?;
    Some((server, Driver::start().await))
}

async fn an_operator_follows_an_open_run_to_its_incident_and_acknowledges_it(backend: Backend) {
    if !browser_available() {
        return;
    }
    let Some((server, driver)) = start(backend, "4s", "5s").await else {
        return;
    };
    let name = format!("{backend:?}").to_lowercase();
    let browser = driver.browser().await;

    // A signed test event opens a run.
    let (status, _) = server
        .deliver(&subscription_created(
            "evt_browser",
            "cus_browser",
            "sub_browser",
            "price_pro",
        ))
        .await;
    assert_eq!(status, 200);

    // Signing in lands on the open runs.
    browser.goto(&server.url("/")).await.unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/signin")
    );
    screenshot(&browser, &format!("{name}-1-signin")).await;
    sign_in(&browser, &server).await;
    let link = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::LinkText("cus_browser"))
        .await
        .unwrap();
    screenshot(&browser, &format!("{name}-2-open-runs")).await;
    assert!(text_of(&browser, "tbody").await.contains("open"));
    link.click().await.unwrap();
    wait_for_text(&browser, "h1", "Run for cus_browser open").await;

    // The deadline passes: the run page shows its incident.
    wait_for("the incident", async || {
        (!server.get("/v1/incidents").await["data"]
            .as_array()
            .unwrap()
            .is_empty())
        .then_some(())
    })
    .await;
    browser.refresh().await.unwrap();
    let incident_link = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::LinkText(
            "Subscription state was not reconciled after Stripe event",
        ))
        .await
        .unwrap();
    screenshot(&browser, &format!("{name}-3-run")).await;
    incident_link.click().await.unwrap();
    wait_for_text(&browser, "#incident-status", "open").await;
    screenshot(&browser, &format!("{name}-4-incident")).await;

    // Acknowledging it changes its state on the page and in the store.
    browser
        .find(Locator::Id("acknowledge"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "#incident-status", "acknowledged").await;
    screenshot(&browser, &format!("{name}-5-acknowledged")).await;
    let incidents = server.get("/v1/incidents").await;
    assert_eq!(incidents["data"][0]["status"], "acknowledged");

    browser.close().await.unwrap();
    server.stop().await;
}

/// Signs `browser` in with the admin token, from any page.
async fn sign_in(browser: &Client, server: &TestServer) {
    browser.goto(&server.url("/signin")).await.unwrap();
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("h1"))
        .await
        .unwrap();
}

/// Fails when the page is wider than the window: something overflows.
async fn fits_the_window(browser: &Client, page: &str) {
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (content, window) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
    assert!(
        content <= window,
        "{page}: {content} px of content in a {window} px window"
    );
}

/// The worked example's customer, as an operator sees it on a phone: the
/// wrong plan flagged on the runs list with the run's age, the failed run
/// linking to its incident, whose page says who is affected and what to do
/// first, and nothing wider than a 390 px screen.
/// Screenshots of the runs, run and incident pages are saved.
async fn the_worked_example_reads_at_a_glance_on_a_phone(backend: Backend) {
    if !browser_available() {
        return;
    }
    let Some((server, driver)) = start(backend, "20s", "30s").await else {
        return;
    };
    let name = format!("{backend:?}").to_lowercase();
    let browser = driver.browser().await;
    browser.set_window_size(390, 844).await.unwrap();

    let event = subscription_created("evt_demo_1", "cus_demo", "sub_demo", "price_pro");
    assert_eq!(server.deliver(&event).await.0, 200);
    server
        .report("evt_demo_1", "reconciled", json!({"deploy_sha": "9f2c1ab"}))
        .await;
    server
        .report(
            "evt_demo_1",
            "access_asserted",
            json!({"observed_plan": "starter"}),
        )
        .await;

    sign_in(&browser, &server).await;
    browser.goto(&server.url("/")).await.unwrap();
    let mismatch = text_of(&browser, "tbody .mismatch").await;
    assert_eq!(mismatch, "✗ saw starter, expected pro");
    assert!(text_of(&browser, "tbody .age").await.starts_with("opened "));
    fits_the_window(&browser, "the runs page").await;
    // The figures leave the runs themselves on the first screen.
    let top = browser
        .execute(
            "return [document.querySelector('.strip').getBoundingClientRect().height, \
             document.querySelector('table').getBoundingClientRect().top, window.innerHeight];",
            vec![],
        )
        .await
        .unwrap();
    let (strip, table, window) = (
        top[0].as_f64().unwrap(),
        top[1].as_f64().unwrap(),
        top[2].as_f64().unwrap(),
    );
    assert!(
        strip <= window / 5.0 && table <= window * 0.6,
        "the runs page's figures take {strip} px and the table starts at {table} px of {window}"
    );
    screenshot(&browser, &format!("{name}-phone-runs")).await;

    // The deadline passes (moved to now, not waited for): the failed row
    // links to its incident.
    server
        .db
        .execute("UPDATE runs SET reconciled_due_at = 0, access_due_at = 0, deadline_at = 0")
        .await;
    server.wait_for_incidents(1).await;
    // Searched for by the start of its customer id.
    browser
        .goto(&server.url("/?status=failed&customer_id=cus_de"))
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tbody a.incident-link"))
        .await
        .unwrap();
    fits_the_window(&browser, "the failed runs").await;
    browser
        .find(Locator::LinkText("cus_demo"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "Run for cus_demo failed").await;
    fits_the_window(&browser, "the run page").await;
    screenshot(&browser, &format!("{name}-phone-run")).await;
    browser.back().await.unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("tbody a.incident-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "#incident-status", "open").await;
    fits_the_window(&browser, "the incident page").await;
    screenshot(&browser, &format!("{name}-phone-incident")).await;
    // Who is affected and what to do come first, then the evidence; the
    // guidance's quoted ids are code, not backticks; the wrong plan stands
    // out.
    let mut headings = Vec::new();
    for h2 in browser.find_all(Locator::Css("main h2")).await.unwrap() {
        headings.push(h2.text().await.unwrap());
    }
    assert_eq!(
        headings[..3],
        ["Who is affected", "What to do", "Evidence"],
        "{headings:?}"
    );
    let guidance = text_of(&browser, "ol.guidance").await;
    assert!(!guidance.contains('`'), "{guidance}");
    assert!(browser.find(Locator::Css("ol.guidance code")).await.is_ok());
    assert_eq!(text_of(&browser, "dd .mismatch").await, "starter");
    assert!(text_of(&browser, "main").await.contains("open for "));

    browser.close().await.unwrap();
    server.stop().await;
}

on_both_backends!(
    an_operator_follows_an_open_run_to_its_incident_and_acknowledges_it,
    the_worked_example_reads_at_a_glance_on_a_phone,
);
