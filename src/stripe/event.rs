//! Reading a Stripe event: which customer and subscription it is about, and
//! which plan the customer should have once the app has processed it.
//!
//! Payload shapes differ across API versions; where Stripe moved a field
//! (basil, 2025-03-31) both the old and the new path are read.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::plan::{PlanMap, PriceRef};
use crate::run::{Expectation, NO_PLAN};

/// How events translate into expected access, from the project's settings.
#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy<'a> {
    pub plans: &'a PlanMap,
    /// How long access must be kept after a failed payment.
    pub grace_period: Duration,
    /// Whether a paused subscription keeps its plan (by default it does not).
    pub paused_keeps_access: bool,
}

/// The longest event id we store; Stripe's are about 30 characters.
const MAX_EVENT_ID_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    #[error("the event has no `{0}`")]
    Missing(&'static str),
    #[error("the event's `{0}` is not valid: {1}")]
    Invalid(&'static str, &'static str),
}

/// A decoded event envelope; `object` is `data.object`.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: Option<i64>,
    pub livemode: Option<bool>,
    pub object: Value,
}

/// What a run needs to know from an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub expectation: Expectation,
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// `"cus_1"` or an expanded `{"id": "cus_1", ...}`.
fn id_of(value: Option<&Value>) -> Option<String> {
    let value = value?;
    value
        .as_str()
        .or_else(|| value.get("id").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn list<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A price given as an id or as an expanded object.
fn price_ref(price: &Value) -> Option<PriceRef> {
    let price_id = id_of(Some(price))?;
    Some(PriceRef {
        price_id,
        lookup_key: str_at(price, "/lookup_key").map(str::to_owned),
        product_id: id_of(price.get("product")),
    })
}

impl StripeEvent {
    pub fn parse(body: &[u8]) -> Result<StripeEvent, EventError> {
        let mut envelope: Value =
            serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        if !envelope.is_object() {
            return Err(EventError::NotJson("the top level is not an object".into()));
        }
        // No Stripe payload holds a NUL, and PostgreSQL cannot store one in
        // text: refuse it here rather than fail at the database.
        if contains_nul(&envelope) {
            return Err(EventError::Invalid("body", "it contains a NUL character"));
        }
        let id = envelope
            .get("id")
            .ok_or(EventError::Missing("id"))?
            .as_str()
            .ok_or(EventError::Invalid("id", "it must be a string"))?
            .to_owned();
        if id.is_empty() || id.len() > MAX_EVENT_ID_LEN || id.chars().any(char::is_control) {
            return Err(EventError::Invalid(
                "id",
                "it must be 1 to 255 printable characters",
            ));
        }
        let event_type = envelope
            .get("type")
            .ok_or(EventError::Missing("type"))?
            .as_str()
            .ok_or(EventError::Invalid("type", "it must be a string"))?
            .to_owned();
        if event_type.is_empty()
            || event_type.len() > 255
            || event_type.chars().any(char::is_control)
        {
            return Err(EventError::Invalid(
                "type",
                "it must be 1 to 255 characters",
            ));
        }
        let object = envelope
            .pointer_mut("/data/object")
            .map(Value::take)
            .ok_or(EventError::Missing("data.object"))?;
        if !object.is_object() {
            return Err(EventError::Invalid("data.object", "it must be an object"));
        }
        // The ids a run is keyed and indexed by: PostgreSQL cannot index a
        // value of a few KiB, and no Stripe id comes near the limit.
        for (field, pointer) in [
            ("data.object.id", "/id"),
            ("data.object.customer", "/customer"),
            ("data.object.subscription", "/subscription"),
            (
                "data.object.parent.subscription_details.subscription",
                "/parent/subscription_details/subscription",
            ),
        ] {
            if id_of(object.pointer(pointer)).is_some_and(|id| id.len() > MAX_EVENT_ID_LEN) {
                return Err(EventError::Invalid(field, "ids are at most 255 characters"));
            }
        }
        Ok(StripeEvent {
            id,
            event_type,
            created: envelope.get("created").and_then(Value::as_i64),
            livemode: envelope.get("livemode").and_then(Value::as_bool),
            object,
        })
    }

    /// When the event happened, from Stripe's `created`.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
    }

    /// The facts for the run this event opens, or `None` for event types that
    /// do not change access (they are stored without a run).
    pub fn run_facts(&self, policy: &AccessPolicy<'_>, now: DateTime<Utc>) -> Option<RunFacts> {
        let o = &self.object;
        // A failed payment keeps access until the grace period, counted from
        // the event, is over; after that, access should be gone.
        let grace = |plan: Result<String, String>| {
            let happened = self.created_at().unwrap_or(now);
            // A grace period that runs past the last representable instant
            // (a huge setting, or a `created` near year 262143) keeps access
            // to that instant instead of overflowing, which panics.
            let until = crate::run::after(happened, policy.grace_period);
            if until <= now {
                Expectation::Plan(NO_PLAN.into())
            } else {
                Expectation::KeepAccess {
                    plan: plan.ok(),
                    until,
                }
            }
        };
        match self.event_type.as_str() {
            "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
                // Delayed payment methods complete the session unpaid; access
                // follows `checkout.session.async_payment_succeeded`, which
                // opens its own run.
                if str_at(o, "/payment_status") == Some("unpaid") {
                    return None;
                }
                let prices: Vec<_> = list(o, "/line_items/data")
                    .iter()
                    .filter_map(|item| item.get("price").and_then(price_ref))
                    .collect();
                let expectation = if prices.is_empty() {
                    Expectation::Unknown {
                        reason: format!(
                            "{} carries no line items, so the plan comes from the app's SDK report",
                            self.event_type
                        ),
                    }
                } else {
                    policy.plans.expectation(&prices)
                };
                Some(RunFacts {
                    customer_id: id_of(o.get("customer")),
                    subscription_id: id_of(o.get("subscription")),
                    expectation,
                })
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => {
                let prices: Vec<_> = list(o, "/items/data")
                    .iter()
                    .filter_map(|item| {
                        item.get("price")
                            .or_else(|| item.get("plan"))
                            .and_then(price_ref)
                    })
                    .collect();
                let status = str_at(o, "/status").unwrap_or_default();
                let paused =
                    status == "paused" || self.event_type == "customer.subscription.paused";
                let expectation = if self.event_type == "customer.subscription.deleted" {
                    Expectation::Plan(NO_PLAN.into())
                } else if paused {
                    if policy.paused_keeps_access {
                        policy.plans.expectation(&prices)
                    } else {
                        Expectation::Plan(NO_PLAN.into())
                    }
                } else {
                    match status {
                        "canceled" | "unpaid" | "incomplete" | "incomplete_expired" => {
                            Expectation::Plan(NO_PLAN.into())
                        }
                        "past_due" => grace(policy.plans.plan_of(&prices)),
                        _ => policy.plans.expectation(&prices),
                    }
                };
                Some(RunFacts {
                    customer_id: id_of(o.get("customer")),
                    subscription_id: id_of(o.get("id")),
                    expectation,
                })
            }
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let subscription_id = id_of(o.pointer("/parent/subscription_details/subscription"))
                    .or_else(|| id_of(o.get("subscription")));
                let prices: Vec<_> = list(o, "/lines/data")
                    .iter()
                    .filter_map(|line| {
                        line.pointer("/pricing/price_details/price")
                            .or_else(|| line.get("price"))
                            .or_else(|| line.get("plan"))
                            .and_then(price_ref)
                    })
                    .collect();
                let expectation = if self.event_type == "invoice.payment_failed" {
                    grace(policy.plans.plan_of(&prices))
                } else {
                    policy.plans.expectation(&prices)
                };
                Some(RunFacts {
                    customer_id: id_of(o.get("customer")),
                    subscription_id,
                    expectation,
                })
            }
            "entitlements.active_entitlement_summary.updated" => {
                let keys: BTreeSet<String> = list(o, "/entitlements/data")
                    .iter()
                    .filter_map(|e| str_at(e, "/lookup_key"))
                    .map(str::to_owned)
                    .collect();
                // The summary lists at most 10 entitlements; with more, the
                // event does not tell the whole set.
                let complete =
                    o.pointer("/entitlements/has_more").and_then(Value::as_bool) != Some(true);
                let expectation = if complete {
                    Expectation::Features(keys)
                } else {
                    Expectation::Unknown {
                        reason: format!(
                            "the entitlement summary lists only some features ({}) and says there are more",
                            keys.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    }
                };
                Some(RunFacts {
                    customer_id: id_of(o.get("customer")),
                    subscription_id: None,
                    expectation,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(event_type: &str) -> StripeEvent {
        let path = format!(
            "{}/tests/fixtures/stripe/events/{event_type}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        StripeEvent::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    fn plans() -> PlanMap {
        "price_1PgafmB7WZ01zgkW6dKueIc5=pro".parse().unwrap()
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    /// The facts an hour after the event, with a week of grace.
    fn facts_with(event: &StripeEvent, plans: &PlanMap) -> Option<RunFacts> {
        facts_at(event, plans, chrono::Duration::hours(1), false)
    }

    fn facts_at(
        event: &StripeEvent,
        plans: &PlanMap,
        after: chrono::Duration,
        paused_keeps_access: bool,
    ) -> Option<RunFacts> {
        let policy = AccessPolicy {
            plans,
            grace_period: WEEK,
            paused_keeps_access,
        };
        event.run_facts(&policy, event.created_at().unwrap() + after)
    }

    #[test]
    fn subscription_created_maps_its_price() {
        let event = fixture("customer.subscription.created");
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(facts.customer_id.as_deref(), Some("cus_QXg1o8vcGmoR32"));
        assert_eq!(
            facts.subscription_id.as_deref(),
            Some("sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
        );
        assert_eq!(facts.expectation, Expectation::Plan("pro".into()));
    }

    #[test]
    fn deleted_subscription_expects_no_plan() {
        let facts = facts_with(&fixture("customer.subscription.deleted"), &plans()).unwrap();
        assert_eq!(facts.expectation, Expectation::Plan("none".into()));
    }

    #[test]
    fn checkout_without_line_items_says_why_the_plan_is_unknown() {
        let mut event = fixture("checkout.session.completed");
        event.object["payment_status"] = "paid".into();
        event.object["customer"] = "cus_9".into();
        event.object["subscription"] = serde_json::json!({"id": "sub_9"});
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(facts.customer_id.as_deref(), Some("cus_9"));
        assert_eq!(facts.subscription_id.as_deref(), Some("sub_9"));
        match facts.expectation {
            Expectation::Unknown { reason } => assert!(reason.contains("no line items")),
            other => panic!("expected unknown, got {other:?}"),
        }
    }

    #[test]
    fn unpaid_checkout_waits_for_the_async_payment() {
        let event = fixture("checkout.session.completed");
        assert_eq!(event.object["payment_status"], "unpaid");
        assert_eq!(facts_with(&event, &plans()), None);
    }

    #[test]
    fn invoice_reads_new_and_old_subscription_and_price_paths() {
        let mut event = fixture("invoice.paid");
        event.object["parent"]["subscription_details"]["subscription"] = "sub_new".into();
        event.object["lines"]["data"][0]["pricing"]["price_details"] =
            serde_json::json!({"price": "price_1PgafmB7WZ01zgkW6dKueIc5"});
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(facts.subscription_id.as_deref(), Some("sub_new"));
        assert_eq!(facts.expectation, Expectation::Plan("pro".into()));

        event.object["parent"] = Value::Null;
        event.object["subscription"] = "sub_old".into();
        event.object["lines"]["data"][0]["pricing"] = Value::Null;
        event.object["lines"]["data"][0]["price"] =
            serde_json::json!({"id": "price_x", "lookup_key": "pro_monthly"});
        let plans: PlanMap = "pro_monthly=pro".parse().unwrap();
        let facts = facts_with(&event, &plans).unwrap();
        assert_eq!(facts.subscription_id.as_deref(), Some("sub_old"));
        assert_eq!(facts.expectation, Expectation::Plan("pro".into()));
    }

    #[test]
    fn unmapped_prices_are_named_in_the_reason() {
        let facts = facts_with(
            &fixture("customer.subscription.created"),
            &PlanMap::default(),
        )
        .unwrap();
        match facts.expectation {
            Expectation::Unknown { reason } => {
                assert!(
                    reason.contains("price_1PgafmB7WZ01zgkW6dKueIc5"),
                    "{reason}"
                );
                assert!(reason.contains("ASSAY_PLAN_MAP"), "{reason}");
            }
            other => panic!("expected unknown, got {other:?}"),
        }
    }

    #[test]
    fn every_fixture_parses_and_other_types_open_no_run() {
        for entry in std::fs::read_dir(format!(
            "{}/tests/fixtures/stripe/events",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        {
            let event = StripeEvent::parse(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            let opens_run = facts_with(&event, &plans()).is_some();
            let expected = !matches!(
                event.event_type.as_str(),
                "customer.subscription.trial_will_end" | "checkout.session.completed"
            );
            assert_eq!(opens_run, expected, "{}", event.event_type);
        }
    }

    #[test]
    fn a_failed_payment_keeps_access_through_the_grace_period_only() {
        let mut event = fixture("invoice.payment_failed");
        event.object["lines"]["data"][0]["price"] =
            serde_json::json!({"id": "price_1PgafmB7WZ01zgkW6dKueIc5"});
        let until = event.created_at().unwrap() + chrono::Duration::days(7);
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(
            facts.expectation,
            Expectation::KeepAccess {
                plan: Some("pro".into()),
                until
            }
        );
        let late = facts_at(&event, &plans(), chrono::Duration::days(8), false).unwrap();
        assert_eq!(
            late.expectation,
            Expectation::Plan("none".into()),
            "grace is over"
        );

        let mut past_due = fixture("customer.subscription.created");
        past_due.object["status"] = "past_due".into();
        assert!(matches!(
            facts_with(&past_due, &plans()).unwrap().expectation,
            Expectation::KeepAccess { plan: Some(_), .. }
        ));
    }

    #[test]
    fn a_grace_period_past_the_end_of_time_keeps_access_to_it() {
        // Found by the stripe_event fuzz target: `created + grace` overflowed.
        let event = fixture("invoice.payment_failed");
        let huge = AccessPolicy {
            plans: &PlanMap::default(),
            grace_period: Duration::from_secs(u64::MAX),
            paused_keeps_access: false,
        };
        let now = event.created_at().unwrap();
        let facts = event.run_facts(&huge, now).unwrap();
        assert!(matches!(
            facts.expectation,
            Expectation::KeepAccess { until, .. } if until == DateTime::<Utc>::MAX_UTC
        ));

        let mut late = event.clone();
        late.created = Some(DateTime::<Utc>::MAX_UTC.timestamp() - 60);
        let facts = facts_at(&late, &plans(), chrono::Duration::zero(), false).unwrap();
        assert!(matches!(
            facts.expectation,
            Expectation::KeepAccess { until, .. } if until == DateTime::<Utc>::MAX_UTC
        ));
    }

    #[test]
    fn subscription_statuses_map_to_access() {
        for (status, expected) in [
            ("active", "pro"),
            ("trialing", "pro"),
            ("canceled", "none"),
            ("unpaid", "none"),
            ("incomplete_expired", "none"),
            ("paused", "none"),
        ] {
            let mut event = fixture("customer.subscription.created");
            event.object["status"] = status.into();
            let facts = facts_with(&event, &plans()).unwrap();
            assert_eq!(
                facts.expectation,
                Expectation::Plan(expected.into()),
                "{status}"
            );
        }
        let paused = fixture("customer.subscription.paused");
        let kept = facts_at(&paused, &plans(), chrono::Duration::hours(1), true).unwrap();
        assert_eq!(
            kept.expectation,
            Expectation::Plan("pro".into()),
            "paused keeps access when configured"
        );
    }

    #[test]
    fn an_entitlement_summary_expects_its_exact_feature_set() {
        let mut event = fixture("entitlements.active_entitlement_summary.updated");
        event.object["customer"] = "cus_1".into();
        event.object["entitlements"]["data"] = serde_json::json!([
            {"lookup_key": "seats"}, {"lookup_key": "api"}, {"lookup_key": "seats"}
        ]);
        assert!(
            matches!(
                facts_with(&event, &plans()).unwrap().expectation,
                Expectation::Unknown { .. }
            ),
            "has_more: the list is not the whole set"
        );
        event.object["entitlements"]["has_more"] = false.into();
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(facts.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(
            facts.expectation,
            Expectation::Features(["api".to_owned(), "seats".to_owned()].into())
        );
    }

    #[test]
    fn malformed_envelopes_are_refused_with_the_field() {
        assert!(matches!(
            StripeEvent::parse(b"not json"),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            StripeEvent::parse(b"[1]"),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(
            StripeEvent::parse(br#"{"type":"x","data":{"object":{}}}"#),
            Err(EventError::Missing("id"))
        );
        assert_eq!(
            StripeEvent::parse(br#"{"id":7,"type":"x","data":{"object":{}}}"#),
            Err(EventError::Invalid("id", "it must be a string"))
        );
        assert_eq!(
            StripeEvent::parse(br#"{"id":"evt_1","type":"x"}"#),
            Err(EventError::Missing("data.object"))
        );
        assert_eq!(
            StripeEvent::parse(
                br#"{"id":"evt_1","type":"x","data":{"object":{"customer":"cus\u0000"}}}"#
            ),
            Err(EventError::Invalid("body", "it contains a NUL character"))
        );
    }

    #[test]
    fn ids_over_255_characters_are_refused() {
        let long = "c".repeat(256);
        for (object, field) in [
            (
                serde_json::json!({"customer": long}),
                "data.object.customer",
            ),
            (
                serde_json::json!({"customer": {"id": long}}),
                "data.object.customer",
            ),
            (
                serde_json::json!({"subscription": long}),
                "data.object.subscription",
            ),
            (serde_json::json!({"id": long}), "data.object.id"),
            (
                serde_json::json!({"parent": {"subscription_details": {"subscription": long}}}),
                "data.object.parent.subscription_details.subscription",
            ),
        ] {
            let body = serde_json::json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": object}});
            assert_eq!(
                StripeEvent::parse(body.to_string().as_bytes()),
                Err(EventError::Invalid(field, "ids are at most 255 characters"))
            );
        }
        let fits = serde_json::json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": {"customer": "c".repeat(255)}}});
        assert!(StripeEvent::parse(fits.to_string().as_bytes()).is_ok());
    }
}
