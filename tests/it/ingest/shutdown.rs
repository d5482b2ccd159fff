//! Graceful shutdown: SIGTERM while signed events keep arriving. Assay stops
//! accepting, answers what it took, and exits 0; every event that got a 2xx
//! is stored exactly once, found after a restart on the same database.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    API_KEY, free_port, http_client, post_signed, serve_command, subscription_created, wait_for,
    wait_until_ready,
};

fn serve(db: &str, port: u16) -> Child {
    serve_command(port, db).spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("assay.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = serve(&db, port);
    let http = http_client();
    wait_until_ready(&base).await;

    // 8 senders, each posting events one after another, until Assay stops
    // answering (bounded: at most 2,000 events).
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (http, base, acknowledged) = (http.clone(), base.clone(), acknowledged.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..250 {
                let id = format!("evt_term_{sender}_{i}");
                let body = subscription_created(
                    &id,
                    &format!("cus_{sender}_{i}"),
                    &format!("sub_{sender}_{i}"),
                    "price_pro",
                )
                .to_string();
                let sent = post_signed(&http, &base, &body).await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    // Refused or cut off: Stripe would retry; nothing owed.
                    _ => return,
                }
            }
        }));
    }
    wait_for("some events to be acknowledged", async || {
        (acknowledged.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "assay serve did not stop within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "a clean exit on SIGTERM: {exit:?}");
    for sender in senders {
        sender.await.unwrap();
    }

    // After a restart, every acknowledged event is there, once.
    let mut again = serve(&db, port);
    wait_until_ready(&base).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    for id in &acknowledged {
        let response = http
            .get(format!("{base}/v1/runs/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{id} was acknowledged but is gone"
        );
    }
    let _ = again.kill();
    let _ = again.wait();
    let options: sqlx::sqlite::SqliteConnectOptions =
        db.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap();
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // Every acknowledged event, and perhaps some whose answer was cut off
    // by the shutdown (stored, but Stripe would retry them: duplicates).
    assert!(events >= acknowledged.len() as i64);
    assert_eq!(events, total, "one run per stored event");
}
