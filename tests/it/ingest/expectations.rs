//! What each kind of billing event expects of the app, end to end over HTTP:
//! revocation, the payment grace period, entitlement sets, and events that
//! arrive out of order.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, fixture, on_both_backends, subscription_created};

const FAST: &[(&str, &str)] = &[
    ("ASSAY_DEADLINE_RECONCILED", "3s"),
    ("ASSAY_DEADLINE_ACCESS_ASSERTED", "5s"),
];

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `invoice.payment_failed` for `sub` on `price_pro`, created now, so inside
/// the grace period.
pub(crate) fn payment_failed(event_id: &str, customer: &str, sub: &str) -> Value {
    let mut event = fixture("invoice.payment_failed", event_id);
    event["created"] = json!(now_secs());
    let object = &mut event["data"]["object"];
    object["customer"] = json!(customer);
    object["parent"]["subscription_details"]["subscription"] = json!(sub);
    object["lines"]["data"][0]["price"] = json!({"id": "price_pro"});
    event
}

async fn a_cancelled_customer_who_keeps_access_is_an_incident(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    let mut event = fixture("customer.subscription.deleted", "evt_cancel");
    event["data"]["object"]["id"] = json!("sub_c");
    event["data"]["object"]["customer"] = json!("cus_c");
    assert_eq!(server.deliver(&event).await.0, StatusCode::OK);
    let run = server.get("/v1/runs/evt_cancel").await;
    assert_eq!(run["expected_plan"], "none");
    let (status, run) = server
        .report(
            "evt_cancel",
            "access_asserted",
            json!({"observed_plan": "pro"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["status"], "open");

    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(
        incidents[0]["title"],
        "Customer access was not revoked after Stripe event"
    );
    assert_eq!(incidents[0]["kind"], "access_not_revoked");
    assert_eq!(incidents[0]["evidence"]["observed_plan"], "pro");
    server.stop().await;
}

async fn a_failed_payment_keeps_access_through_the_grace_period(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    server
        .deliver(&payment_failed("evt_kept", "cus_k", "sub_k"))
        .await;
    server
        .deliver(&payment_failed("evt_revoked", "cus_r", "sub_r"))
        .await;
    let run = server.get("/v1/runs/evt_kept").await;
    assert_eq!(run["expected_plan"], "pro");
    assert!(run["keep_access_until"].is_string(), "{run}");

    // The app that keeps access during the grace period is right...
    let (_, kept) = server
        .report(
            "evt_kept",
            "access_asserted",
            json!({"observed_plan": "pro"}),
        )
        .await;
    assert_eq!(kept["status"], "succeeded");
    // ...and the one that revokes at once is not.
    let (_, revoked) = server
        .report(
            "evt_revoked",
            "access_asserted",
            json!({"observed_plan": "none"}),
        )
        .await;
    assert_eq!(revoked["status"], "open");
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0]["title"],
        "Customer access was revoked during the payment grace period"
    );
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_revoked");
    assert!(incidents[0]["evidence"]["keep_access_until"].is_string());
    server.stop().await;
}

async fn an_entitlement_summary_is_compared_as_a_set(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    for (event_id, customer) in [("evt_ent_ok", "cus_e1"), ("evt_ent_bad", "cus_e2")] {
        let mut event = fixture("entitlements.active_entitlement_summary.updated", event_id);
        let object = &mut event["data"]["object"];
        object["customer"] = json!(customer);
        object["entitlements"]["has_more"] = json!(false);
        object["entitlements"]["data"] = json!([{"lookup_key": "seats"}, {"lookup_key": "api"}]);
        assert_eq!(server.deliver(&event).await.0, StatusCode::OK);
    }
    let run = server.get("/v1/runs/evt_ent_ok").await;
    assert_eq!(run["expected_features"], json!(["api", "seats"]));

    // The same set in another order, with a repeat: a match.
    let (_, ok) = server
        .report(
            "evt_ent_ok",
            "access_asserted",
            json!({"observed_features": ["seats", "api", "seats"]}),
        )
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    // A missing feature is not.
    let (_, bad) = server
        .report(
            "evt_ent_bad",
            "access_asserted",
            json!({"observed_features": ["seats"]}),
        )
        .await;
    assert_eq!(bad["status"], "open");
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_ent_bad");
    assert_eq!(
        incidents[0]["evidence"]["observed_features"],
        json!(["seats"])
    );
    server.stop().await;
}

async fn an_older_event_arriving_late_opens_superseded(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    let mut newer = subscription_created("evt_newer", "cus_o", "sub_o", "price_pro");
    newer["created"] = json!(now_secs());
    let mut older = subscription_created("evt_older", "cus_o", "sub_o", "price_starter");
    older["created"] = json!(now_secs() - 60);
    server.deliver(&newer).await;
    server.deliver(&older).await;
    let late = server.get("/v1/runs/evt_older").await;
    assert_eq!(late["status"], "superseded");
    let newest = server.get("/v1/runs/evt_newer").await;
    assert_eq!(late["superseded_by"], newest["id"]);
    assert_eq!(newest["status"], "open");
    // The newest fails on its own; the superseded one never raises anything.
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_newer");
    server.stop().await;
}

on_both_backends!(
    a_cancelled_customer_who_keeps_access_is_an_incident,
    a_failed_payment_keeps_access_through_the_grace_period,
    an_entitlement_summary_is_compared_as_a_set,
    an_older_event_arriving_late_opens_superseded,
);
