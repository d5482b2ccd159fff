//! Stripe's side for tests: the shared secret and keys, signatures made
//! the way Stripe makes them (written here independently of the server's
//! code), and events from Stripe's public fixtures.

use serde_json::{Value, json};

pub const SECRET: &str = "whsec_test_secret_for_assay";
pub const API_KEY: &str = "test-api-key-0123456789abcdef";
pub const OTHER_API_KEY: &str = "other-api-key-0123456789abcdef";

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
