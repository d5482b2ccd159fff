//! A run from Stripe delivery to success or incident, through the real API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Backend, NO_SETTINGS, TestServer, checkout, incident_for, on_both_backends,
    subscription_created,
};

/// Deadlines short enough that the sweeper fires within the test, and long
/// enough that a loaded machine still reports in time where a test means to.
const FAST: &[(&str, &str)] = &[
    ("ASSAY_DEADLINE_RECONCILED", "3s"),
    ("ASSAY_DEADLINE_ACCESS_ASSERTED", "5s"),
];

fn evidence_field_is_filled(evidence: &Value, field: &str) {
    assert!(
        evidence[field].is_string() && !evidence[field].as_str().unwrap().is_empty(),
        "evidence.{field} should be filled: {evidence:#}"
    );
}

async fn happy_path_closes_succeeded_with_no_incident(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    let (status, body) = server
        .deliver(&checkout("evt_happy", "cus_happy", "sub_happy"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], false);
    let run_id = body["run_id"].as_str().unwrap().to_owned();

    // The checkout session has no line items: the app tells the plan.
    let (status, run) = server
        .report(
            "evt_happy",
            "reconciled",
            json!({"expected_plan": "pro", "deploy_sha": "sha-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["stage"], "reconciled");
    let (status, run) = server
        .report(&run_id, "access_asserted", json!({"observed_plan": "pro"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["stage"], "closed");
    assert_eq!(run["deadline_at"], Value::Null);

    // A second run that is left to time out proves the sweeper has passed the
    // first run's deadlines without opening anything for it.
    server
        .deliver(&checkout("evt_witness", "cus_w", "sub_w"))
        .await;
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["evidence"]["event_id"], "evt_witness");

    let detail = server.get("/v1/runs/evt_happy").await;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["incidents"], json!([]));
    assert_eq!(detail["probes"], json!([]));
    let sources: Vec<_> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["source"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            "stripe:opened",
            "sdk:advanced",
            "sdk:matched",
            "sdk:succeeded"
        ]
    );
    server.stop().await;
}

async fn missing_access_opens_one_incident_with_full_evidence(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    let event = subscription_created("evt_noaccess", "cus_1", "sub_1", "price_pro");
    assert_eq!(server.deliver(&event).await.0, StatusCode::OK);
    let (status, _) = server
        .report(
            "evt_noaccess",
            "reconciled",
            json!({"deploy_sha": "abc123def"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let incidents = server.wait_for_incidents(1).await;
    let incident = &incidents[0];
    assert_eq!(
        incident["title"],
        "Customer access did not change after Stripe event"
    );
    assert_eq!(incident["kind"], "access_not_changed");
    assert_eq!(incident["status"], "open");
    let evidence = &incident["evidence"];
    for field in [
        "event_id",
        "event_type",
        "customer_id",
        "subscription_id",
        "expected_plan",
        "observed_plan_reason",
        "deploy_sha",
        "missed_stage",
        "deadline_at",
        "last_probe_reason",
    ] {
        evidence_field_is_filled(evidence, field);
    }
    assert_eq!(evidence["event_id"], "evt_noaccess");
    assert_eq!(evidence["event_type"], "customer.subscription.created");
    assert_eq!(evidence["customer_id"], "cus_1");
    assert_eq!(evidence["subscription_id"], "sub_1");
    assert_eq!(evidence["expected_plan"], "pro");
    assert_eq!(evidence["observed_plan"], Value::Null);
    assert_eq!(evidence["deploy_sha"], "abc123def");
    assert_eq!(evidence["missed_stage"], "access_asserted");
    let guidance = evidence["guidance"].as_array().unwrap();
    assert!(guidance.len() >= 3, "{guidance:?}");
    assert!(
        guidance
            .iter()
            .any(|g| g.as_str().unwrap().contains("sub_1"))
    );

    let run = server.get("/v1/runs/evt_noaccess").await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["incidents"].as_array().unwrap().len(), 1);
    let last = run["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["source"].as_str(), last["outcome"].as_str()),
        (Some("sweeper"), Some("failed"))
    );

    // Later sweeps never open a second incident for the run.
    server
        .deliver(&subscription_created(
            "evt_later",
            "cus_2",
            "sub_2",
            "price_pro",
        ))
        .await;
    server.wait_for_incidents(2).await;
    assert_eq!(server.count("incidents").await, 2);
    server.stop().await;
}

async fn wrong_plan_is_an_incident_that_shows_the_observed_plan(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    let event = subscription_created("evt_wrong", "cus_1", "sub_1", "price_pro");
    server.deliver(&event).await;
    server.report("evt_wrong", "reconciled", json!({})).await;
    let (status, run) = server
        .report(
            "evt_wrong",
            "access_asserted",
            json!({"observed_plan": "starter", "deploy_sha": "d1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        run["status"], "open",
        "a mismatch leaves the run open until its deadline"
    );
    assert_eq!(run["observed_plan"], "starter");

    // The wrong plan with no `reconciled` at all: still the access outcome,
    // since the app showed what access the customer has.
    server
        .deliver(&subscription_created(
            "evt_wrong_only",
            "cus_2",
            "sub_2",
            "price_pro",
        ))
        .await;
    let (status, _) = server
        .report(
            "evt_wrong_only",
            "access_asserted",
            json!({"observed_plan": "starter"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let incidents = server.wait_for_incidents(2).await;
    for incident in &incidents {
        assert_eq!(
            incident["title"],
            "Customer access did not change after Stripe event"
        );
        assert_eq!(incident["evidence"]["observed_plan"], "starter");
    }
    let incidents: Vec<_> = incidents
        .into_iter()
        .filter(|i| i["evidence"]["event_id"] == "evt_wrong")
        .collect();
    let evidence = &incidents[0]["evidence"];
    assert_eq!(evidence["expected_plan"], "pro");
    assert_eq!(evidence["observed_plan"], "starter");
    assert_eq!(evidence["observed_plan_reason"], Value::Null);
    assert!(evidence["summary"].as_str().unwrap().contains("starter"));
    server.stop().await;
}

async fn missing_reconciliation_names_that_outcome(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    server
        .deliver(&subscription_created(
            "evt_norec",
            "cus_1",
            "sub_1",
            "price_pro",
        ))
        .await;
    let incidents = server.wait_for_incidents(1).await;
    assert_eq!(
        incidents[0]["title"],
        "Subscription state was not reconciled after Stripe event"
    );
    assert_eq!(incidents[0]["evidence"]["missed_stage"], "reconciled");
    assert_eq!(incidents[0]["evidence"]["deploy_sha"], Value::Null);
    evidence_field_is_filled(&incidents[0]["evidence"], "deploy_sha_reason");
    server.stop().await;
}

async fn incidents_are_acknowledged_resolved_and_resolve_themselves(backend: Backend) {
    let Some(server) = TestServer::start(backend, FAST).await else {
        return;
    };
    for (event, customer) in [("evt_a", "cus_a"), ("evt_b", "cus_b")] {
        server
            .deliver(&subscription_created(
                event,
                customer,
                &format!("sub_{customer}"),
                "price_pro",
            ))
            .await;
    }
    let incidents = server.wait_for_incidents(2).await;
    let (a, b) = (
        incident_for(&incidents, "evt_a"),
        incident_for(&incidents, "evt_b"),
    );

    let (status, acked) = server
        .api(
            Method::POST,
            &format!("/v1/incidents/{a}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    let open = server.get("/v1/incidents?status=open").await;
    assert_eq!(open["data"].as_array().unwrap().len(), 1);

    let (status, resolved) = server
        .api(
            Method::POST,
            &format!("/v1/incidents/{a}/resolve"),
            Some(json!({"resolution": "granted by hand"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"], "granted by hand");
    let (status, body) = server
        .api(
            Method::POST,
            &format!("/v1/incidents/{a}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "incident_resolved");

    // The app fixes evt_b's access after the incident: it resolves itself.
    let (status, _) = server
        .report("evt_b", "access_asserted", json!({"observed_plan": "pro"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let incident = server.get(&format!("/v1/incidents/{b}")).await;
    assert_eq!(incident["status"], "resolved");
    assert!(
        incident["resolution"]
            .as_str()
            .unwrap()
            .contains("access now matches")
    );
    let run = server.get("/v1/runs/evt_b").await;
    assert_eq!(run["status"], "failed", "the run's history stays as it was");
    server.stop().await;
}

async fn sdk_and_stripe_open_one_run_in_either_order(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let open = json!({
        "event_id": "evt_both",
        "event_type": "customer.subscription.created",
        "customer_id": "cus_1",
    });
    let (status, first) = server
        .api(Method::POST, "/v1/runs", Some(open.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["expected_plan"], Value::Null);
    let (status, again) = server.api(Method::POST, "/v1/runs", Some(open)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again, first, "times read back exactly as first answered");

    server
        .deliver(&subscription_created(
            "evt_both",
            "cus_1",
            "sub_1",
            "price_pro",
        ))
        .await;
    let run = server.get("/v1/runs/evt_both").await;
    assert_eq!(run["id"], first["id"]);
    assert_eq!(
        run["expected_plan"], "pro",
        "Stripe's event fills in the plan"
    );
    assert_eq!(run["subscription_id"], "sub_1");
    let outcomes: Vec<_> = run["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("opened"), json!("confirmed")]);
    assert_eq!(server.count("runs").await, 1);
    server.stop().await;
}

async fn runs_list_newest_first_with_filters_and_cursors(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    for i in 0..5 {
        // One subscription each: events of one subscription would supersede
        // each other.
        let event = subscription_created(
            &format!("evt_list_{i}"),
            &format!("cus_{}", i % 2),
            &format!("sub_{i}"),
            "price_pro",
        );
        assert_eq!(server.deliver(&event).await.0, StatusCode::OK);
    }
    server
        .report(
            "evt_list_4",
            "access_asserted",
            json!({"observed_plan": "pro"}),
        )
        .await;

    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=2".to_owned();
    loop {
        let page = server.get(&path).await;
        for run in page["data"].as_array().unwrap() {
            seen.push(run["event_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/runs?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "evt_list_4",
            "evt_list_3",
            "evt_list_2",
            "evt_list_1",
            "evt_list_0"
        ]
    );

    let open = server.get("/v1/runs?status=open").await;
    assert_eq!(open["data"].as_array().unwrap().len(), 4);
    let succeeded = server.get("/v1/runs?status=succeeded&stage=closed").await;
    assert_eq!(succeeded["data"].as_array().unwrap().len(), 1);
    let customer = server.get("/v1/runs?customer_id=cus_1").await;
    assert_eq!(customer["data"].as_array().unwrap().len(), 2);
    server.stop().await;
}

async fn other_event_types_are_stored_without_a_run(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let event = crate::support::fixture("customer.subscription.trial_will_end", "evt_trial");
    let (status, body) = server.deliver(&event).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["run_id"], Value::Null);
    assert_eq!(server.count("stripe_events").await, 1);
    assert_eq!(server.count("runs").await, 0);
    server.stop().await;
}

/// An event id shaped like a UUID is still an event id: its run is found
/// by it, for reading and for reports, and a run's own id still works.
async fn an_event_id_shaped_like_a_uuid_finds_its_run(backend: Backend) {
    let Some(server) = TestServer::start(backend, NO_SETTINGS).await else {
        return;
    };
    let event_id = "0192f1c3-6a4e-7b8c-9d0e-1f2a3b4c5d6e";
    let (status, _) = server
        .deliver(&subscription_created(
            event_id,
            "cus_1",
            "sub_1",
            "price_pro",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let run = server.get(&format!("/v1/runs/{event_id}")).await;
    assert_eq!(run["event_id"], event_id, "{run}");
    let (status, reported) = server
        .report(event_id, "reconciled", json!({"deploy_sha": "abc"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reported}");
    assert_eq!(reported["stage"], "reconciled");
    let by_id = server
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(by_id["event_id"], event_id);
    let (status, _) = server
        .api(
            Method::GET,
            "/v1/runs/0192f1c3-0000-7000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

on_both_backends!(
    an_event_id_shaped_like_a_uuid_finds_its_run,
    happy_path_closes_succeeded_with_no_incident,
    missing_access_opens_one_incident_with_full_evidence,
    wrong_plan_is_an_incident_that_shows_the_observed_plan,
    missing_reconciliation_names_that_outcome,
    incidents_are_acknowledged_resolved_and_resolve_themselves,
    sdk_and_stripe_open_one_run_in_either_order,
    runs_list_newest_first_with_filters_and_cursors,
    other_event_types_are_stored_without_a_run,
);
