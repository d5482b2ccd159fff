//! Stripe delivers at least once, and the SDK retries: the same event is one
//! run and at most one incident, however the deliveries interleave.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Backend, TestServer, on_both_backends, subscription_created};

async fn five_concurrent_deliveries_and_sdk_calls_make_one_run_and_one_incident(backend: Backend) {
    let Some(server) = TestServer::start(
        backend,
        &[
            ("ASSAY_DEADLINE_RECONCILED", "1s"),
            ("ASSAY_DEADLINE_ACCESS_ASSERTED", "2s"),
        ],
    )
    .await
    else {
        return;
    };
    let event = subscription_created("evt_dup", "cus_dup", "sub_dup", "price_pro");

    let deliveries = (0..5).map(|_| server.deliver(&event));
    let opens = (0..3).map(|_| {
        server.api(
            Method::POST,
            "/v1/runs",
            Some(json!({"event_id": "evt_dup", "event_type": "customer.subscription.created", "customer_id": "cus_dup"})),
        )
    });
    let reports =
        (0..3).map(|_| server.report("evt_dup", "reconciled", json!({"deploy_sha": "s1"})));
    let (deliveries, opens, reports) =
        tokio::join!(join_all(deliveries), join_all(opens), join_all(reports));

    for (status, body) in &deliveries {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    let first = deliveries
        .iter()
        .filter(|(_, b)| b["duplicate"] == false)
        .count();
    assert_eq!(
        first, 1,
        "exactly one delivery is the first: {deliveries:?}"
    );
    for (status, body) in &opens {
        assert!(
            matches!(*status, StatusCode::OK | StatusCode::CREATED),
            "{body}"
        );
    }
    for (status, body) in &reports {
        // A report that raced ahead of every open finds no run yet.
        assert!(
            matches!(*status, StatusCode::OK | StatusCode::NOT_FOUND),
            "{body}"
        );
    }
    assert_eq!(server.count("stripe_events").await, 1);
    assert_eq!(server.count("runs").await, 1);
    // Every delivery, the first or not, names the one run.
    let run_id = server.get("/v1/runs/evt_dup").await["id"].clone();
    assert!(run_id.is_string(), "{run_id}");
    for (_, body) in &deliveries {
        assert_eq!(body["run_id"], run_id, "{body}");
    }

    // Redeliveries after the fact change nothing at all, and name the run.
    let before = server.counts().await;
    for _ in 0..3 {
        let (status, body) = server.deliver(&event).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["duplicate"], true);
        assert_eq!(body["run_id"], run_id, "{body}");
    }
    assert_eq!(server.counts().await, before);

    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    // A second, later run's incident shows that further sweeps passed over
    // the first run without a second incident.
    server
        .deliver(&subscription_created(
            "evt_next",
            "cus_n",
            "sub_n",
            "price_pro",
        ))
        .await;
    server.wait_for_incidents(2).await;
    let run = server.get("/v1/runs/evt_dup").await;
    assert_eq!(run["incidents"].as_array().unwrap().len(), 1);
    server.stop().await;
}

/// A burst, each event delivered twice at once: the deliveries share group
/// commits (a batch may hold both copies of one event), and still every
/// event is stored once, opens one run, and is acknowledged as new once.
async fn a_burst_of_doubled_deliveries_is_stored_once_each(backend: Backend) {
    const EVENTS: usize = 150;
    let Some(server) = TestServer::start(backend, &[] as &[(&str, &str)]).await else {
        return;
    };
    let events: Vec<_> = (0..EVENTS)
        .map(|i| {
            subscription_created(
                &format!("evt_burst_{i}"),
                &format!("cus_burst_{i}"),
                &format!("sub_burst_{i}"),
                "price_pro",
            )
        })
        .collect();
    let answers = join_all(
        events
            .iter()
            .chain(events.iter())
            .map(|e| server.deliver(e)),
    )
    .await;
    let mut first_by_event = std::collections::HashMap::<String, usize>::new();
    let mut run_by_event = std::collections::HashMap::<String, Vec<String>>::new();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        run_by_event
            .entry(body["event_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(
                body["run_id"]
                    .as_str()
                    .expect("every answer names its run")
                    .to_owned(),
            );
        if body["duplicate"] == false {
            *first_by_event
                .entry(body["event_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        first_by_event.len(),
        EVENTS,
        "every event acknowledged as new"
    );
    assert!(
        first_by_event.values().all(|n| *n == 1),
        "{first_by_event:?}"
    );
    // Both copies of an event name the same run, even within one batch.
    assert!(
        run_by_event
            .values()
            .all(|ids| ids.len() == 2 && ids[0] == ids[1]),
        "{run_by_event:?}"
    );
    assert_eq!(server.count("stripe_events").await, EVENTS as i64);
    assert_eq!(server.count("runs").await, EVENTS as i64);
    assert_eq!(server.count("run_timeline").await, EVENTS as i64);
    server.stop().await;
}

on_both_backends!(
    five_concurrent_deliveries_and_sdk_calls_make_one_run_and_one_incident,
    a_burst_of_doubled_deliveries_is_stored_once_each,
);
