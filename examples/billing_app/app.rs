//! A small billing app wired to Assay with the SDK: a Stripe webhook handler
//! that keeps a real (SQLite) subscriptions table, and the access endpoint
//! Assay probes. `main.rs` runs it; the tests run it in-process.
//!
//! The handler does what a real one does: verify Stripe's signature, keep
//! the subscription row, grant the plan, and tell Assay each step through
//! the SDK's background reporter, so that Assay never slows the webhook.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use assay_client::{Client, OpenRun, Reporter, Stage};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sqlx::SqlitePool;

pub struct Settings {
    pub stripe_webhook_secret: String,
    /// Stripe price id (or lookup key) to plan name, as Assay's plan map.
    pub plans: HashMap<String, String>,
    pub assay_url: String,
    pub assay_api_key: String,
    pub deploy_sha: String,
    /// Leaves the subscription row alone: the failure Assay must catch.
    pub break_reconciliation: bool,
}

#[derive(Clone)]
struct App {
    db: SqlitePool,
    settings: Arc<Settings>,
    assay: Reporter,
}

/// The app's routes, on a fresh SQLite database at `db_url`.
pub async fn router(settings: Settings, db_url: &str) -> anyhow::Result<axum::Router> {
    let options: sqlx::sqlite::SqliteConnectOptions = db_url.parse()?;
    let db = SqlitePool::connect_with(options.create_if_missing(true)).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS subscriptions (customer_id TEXT PRIMARY KEY, \
         subscription_id TEXT NOT NULL, plan TEXT, updated_at INTEGER NOT NULL)",
    )
    .execute(&db)
    .await?;
    let client = Client::builder(&settings.assay_url, &settings.assay_api_key)
        .deploy_sha(&settings.deploy_sha)
        .retries(3, Duration::from_millis(100), Duration::from_millis(500))
        .build()?;
    let assay = client.background(1_000, Duration::from_secs(600));
    let app = App {
        db,
        settings: Arc::new(settings),
        assay,
    };
    Ok(axum::Router::new()
        .route("/stripe/webhook", post(webhook))
        .route("/internal/access/{customer}", get(access))
        .with_state(app))
}

fn verified(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return false;
    }
    signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    })
}

async fn webhook(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, StatusCode> {
    if !verified(&app.settings.stripe_webhook_secret, &headers, &body) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let event: Value = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let event_id = event["id"].as_str().unwrap_or_default().to_owned();
    let event_type = event["type"].as_str().unwrap_or_default().to_owned();
    if !event_type.starts_with("customer.subscription.") {
        return Ok(Json(json!({"ignored": event_type})));
    }
    let object = &event["data"]["object"];
    let customer = object["customer"].as_str().unwrap_or_default().to_owned();
    let subscription = object["id"].as_str().unwrap_or_default().to_owned();
    let price = &object["items"]["data"][0]["price"];
    let plan = [price["id"].as_str(), price["lookup_key"].as_str()]
        .into_iter()
        .flatten()
        .find_map(|key| app.settings.plans.get(key))
        .cloned();
    let plan = match object["status"].as_str() {
        Some("active" | "trialing") => plan,
        _ => None,
    };
    // Tell Assay the event is being handled (it may not have Stripe's copy
    // yet); never waits.
    let mut open = OpenRun::new(&event_id, &event_type, &customer);
    open.subscription_id = Some(subscription.clone());
    let _ = app.assay.open_run(open);
    if app.settings.break_reconciliation {
        // The job that would update the row "failed": the customer keeps
        // what they had. Assay's deadline and probe catch this.
        return Ok(Json(json!({"received": true})));
    }
    sqlx::query(
        "INSERT INTO subscriptions (customer_id, subscription_id, plan, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id) DO UPDATE SET subscription_id = excluded.subscription_id, \
         plan = excluded.plan, updated_at = excluded.updated_at",
    )
    .bind(&customer)
    .bind(&subscription)
    .bind(&plan)
    .bind(chrono::Utc::now().timestamp_millis())
    .execute(&app.db)
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let _ = app.assay.report(
        &event_id,
        Stage::Reconciled {
            expected_plan: plan.clone(),
        },
    );
    // What the customer has now, read back from the table the app serves
    // access from.
    let granted: Option<Option<String>> =
        sqlx::query_scalar("SELECT plan FROM subscriptions WHERE customer_id = $1")
            .bind(&customer)
            .fetch_optional(&app.db)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let _ = app.assay.report(
        &event_id,
        Stage::AccessAsserted {
            observed_plan: granted.flatten().unwrap_or_else(|| "none".to_owned()),
            deploy_sha: None,
        },
    );
    Ok(Json(json!({"received": true})))
}

/// What Assay probes: the customer's plan, and the deploy serving it.
async fn access(
    State(app): State<App>,
    Path(customer): Path<String>,
) -> Result<([(&'static str, String); 1], Json<Value>), StatusCode> {
    let plan: Option<Option<String>> =
        sqlx::query_scalar("SELECT plan FROM subscriptions WHERE customer_id = $1")
            .bind(&customer)
            .fetch_optional(&app.db)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((
        [("x-deploy-sha", app.settings.deploy_sha.clone())],
        Json(json!({"customer_id": customer, "plan": plan.flatten()})),
    ))
}
