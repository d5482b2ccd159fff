//! Reading a Stripe event: which customer and subscription it is about, and
//! which plan the customer should have once the app has processed it.
//!
//! Payload shapes differ across API versions; where Stripe moved a field
//! (basil, 2025-03-31) both the old and the new path are read.
//!
//! Only the fields access depends on are decoded. A webhook body is mostly
//! fields ingest never reads, and building all of it as a JSON tree (then
//! dropping it) was a quarter of ingest's CPU. The body is still checked
//! whole, as strictly as building the tree would: it is stored, and served
//! back, as the event.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

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

/// A decoded event envelope; `object` is what access depends on in
/// `data.object`.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: String,
    pub event_type: String,
    pub created: Option<i64>,
    pub livemode: Option<bool>,
    pub object: EventObject,
}

/// The parts of `data.object` that access depends on. A field of another
/// type than Stripe sends reads as absent, as a JSON pointer would find it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventObject {
    pub id: Option<String>,
    pub customer: Option<String>,
    /// A checkout session's or (before basil) an invoice's subscription.
    pub subscription: Option<String>,
    /// An invoice's subscription since basil:
    /// `parent.subscription_details.subscription`.
    pub parent_subscription: Option<String>,
    pub status: Option<String>,
    pub payment_status: Option<String>,
    /// A checkout session's `line_items.data[].price`.
    pub line_item_prices: Vec<PriceRef>,
    /// A subscription's `items.data[].price`, or the legacy `plan`.
    pub item_prices: Vec<PriceRef>,
    /// An invoice's `lines.data[]`: `pricing.price_details.price` since
    /// basil, else `price`, else `plan`.
    pub line_prices: Vec<PriceRef>,
    /// An entitlement summary's `entitlements.data[].lookup_key`.
    pub entitlement_keys: Vec<String>,
    /// Whether the summary says it lists only some of them.
    pub entitlements_has_more: bool,
    /// Each metadata key with its value, `None` where that is not a string.
    pub metadata: BTreeMap<String, Option<String>>,
}

/// What a run needs to know from an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFacts {
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub expectation: Expectation,
}

/// Walks a JSON document as strictly as building a `serde_json::Value`
/// would (every string decoded, lone surrogates refused, every number in
/// range, at most 128 levels deep) without allocating, and refuses a NUL
/// anywhere, noting it in `nul`.
#[derive(Clone, Copy)]
struct Check<'c> {
    nul: &'c Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        if text.contains('\0') {
            self.nul.set(true);
            return Err(E::custom("a NUL character"));
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        while entries.next_key_seed(self)?.is_some() {
            entries.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// A field kept as its JSON text, read only if access depends on it.
type Raw<'a> = Option<&'a RawValue>;

/// A field that is read only if it is an object, decoded in the same pass
/// as its parent. Kept as text and decoded again, `data` and then
/// `data.object` (nearly the whole body) were each walked once more.
enum Nested<T> {
    Object(T),
    /// Anything else: a string, a number, an array.
    NotObject,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Expect<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Expect<T> {
            type Value = Nested<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, entries: A) -> Result<Nested<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(entries)).map(Nested::Object)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Nested<T>, A::Error> {
                while items.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Nested::NotObject)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }

            fn visit_i64<E>(self, _: i64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }

            fn visit_u64<E>(self, _: u64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }

            fn visit_f64<E>(self, _: f64) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }

            fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }

            fn visit_unit<E>(self) -> Result<Nested<T>, E> {
                Ok(Nested::NotObject)
            }
        }
        deserializer.deserialize_any(Expect(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    id: Raw<'a>,
    #[serde(borrow, rename = "type")]
    event_type: Raw<'a>,
    #[serde(borrow)]
    created: Raw<'a>,
    #[serde(borrow)]
    livemode: Raw<'a>,
    #[serde(borrow)]
    data: Option<Nested<RawData<'a>>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    object: Option<Nested<RawObject<'a>>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow)]
    id: Raw<'a>,
    #[serde(borrow)]
    customer: Raw<'a>,
    #[serde(borrow)]
    subscription: Raw<'a>,
    #[serde(borrow)]
    parent: Raw<'a>,
    #[serde(borrow)]
    status: Raw<'a>,
    #[serde(borrow)]
    payment_status: Raw<'a>,
    #[serde(borrow)]
    line_items: Raw<'a>,
    #[serde(borrow)]
    items: Raw<'a>,
    #[serde(borrow)]
    lines: Raw<'a>,
    #[serde(borrow)]
    entitlements: Raw<'a>,
    #[serde(borrow)]
    metadata: Raw<'a>,
}

/// `parent`, `subscription_details`, `pricing`, `price_details`: objects
/// read for one field each.
#[derive(Deserialize)]
struct RawParent<'a> {
    #[serde(borrow)]
    subscription_details: Raw<'a>,
}

#[derive(Deserialize)]
struct RawSubscriptionDetails<'a> {
    #[serde(borrow)]
    subscription: Raw<'a>,
}

#[derive(Deserialize)]
struct RawPricing<'a> {
    #[serde(borrow)]
    price_details: Raw<'a>,
}

#[derive(Deserialize)]
struct RawPriceDetails<'a> {
    #[serde(borrow)]
    price: Raw<'a>,
}

/// A Stripe list: `{"data": [...], "has_more": ...}`.
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    data: Raw<'a>,
    #[serde(borrow)]
    has_more: Raw<'a>,
}

/// A subscription item, an invoice line or a checkout line item.
#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow)]
    price: Raw<'a>,
    #[serde(borrow)]
    plan: Raw<'a>,
    #[serde(borrow)]
    pricing: Raw<'a>,
}

/// An expanded object (a price, a product, a customer): its `id`, and for
/// a price its `lookup_key` and `product`.
#[derive(Deserialize)]
struct RawExpanded<'a> {
    #[serde(borrow)]
    id: Raw<'a>,
    #[serde(borrow)]
    lookup_key: Raw<'a>,
    #[serde(borrow)]
    product: Raw<'a>,
}

/// The field as `T` if it is a JSON object (and decodes as one).
fn object<'a, T: Deserialize<'a>>(raw: Raw<'a>) -> Option<T> {
    let text = raw?.get();
    if !text.starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

fn string(raw: Raw<'_>) -> Option<String> {
    let text = raw?.get();
    if !text.starts_with('"') {
        return None;
    }
    serde_json::from_str(text).ok()
}

fn boolean(raw: Raw<'_>) -> Option<bool> {
    serde_json::from_str(raw?.get()).ok()
}

/// The elements of a list's `data`, and its `has_more`.
fn list(raw: Raw<'_>) -> (Vec<&RawValue>, Option<bool>) {
    let Some(list) = object::<RawList>(raw) else {
        return (Vec::new(), None);
    };
    let items = list
        .data
        .filter(|data| data.get().starts_with('['))
        .and_then(|data| serde_json::from_str(data.get()).ok())
        .unwrap_or_default();
    (items, boolean(list.has_more))
}

/// `"cus_1"` or an expanded `{"id": "cus_1", ...}`.
fn id_of(raw: Raw<'_>) -> Option<String> {
    string(raw)
        .or_else(|| object::<RawExpanded>(raw).and_then(|o| string(o.id)))
        .filter(|s| !s.is_empty())
}

/// A price given as an id or as an expanded object (decoded once).
fn price_ref(raw: Raw<'_>) -> Option<PriceRef> {
    let Some(price) = object::<RawExpanded>(raw) else {
        return id_of(raw).map(|price_id| PriceRef {
            price_id,
            lookup_key: None,
            product_id: None,
        });
    };
    Some(PriceRef {
        price_id: string(price.id).filter(|id| !id.is_empty())?,
        lookup_key: string(price.lookup_key),
        product_id: id_of(price.product),
    })
}

/// The prices of a list's items; `price` picks each item's price field.
fn prices<'a>(raw: Raw<'a>, price: impl Fn(RawItem<'a>) -> Raw<'a>) -> Vec<PriceRef> {
    list(raw)
        .0
        .into_iter()
        .filter_map(|item| object::<RawItem>(Some(item)))
        .filter_map(|item| price_ref(price(item)))
        .collect()
}

impl EventObject {
    fn decode(o: RawObject<'_>) -> EventObject {
        let parent_subscription = object::<RawParent>(o.parent)
            .and_then(|p| object::<RawSubscriptionDetails>(p.subscription_details))
            .and_then(|d| id_of(d.subscription));
        let (entitlements, has_more) = list(o.entitlements);
        let metadata = object::<BTreeMap<String, &RawValue>>(o.metadata)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, string(Some(value))))
            .collect();
        EventObject {
            id: id_of(o.id),
            customer: id_of(o.customer),
            subscription: id_of(o.subscription),
            parent_subscription,
            status: string(o.status),
            payment_status: string(o.payment_status),
            line_item_prices: prices(o.line_items, |item| item.price),
            item_prices: prices(o.items, |item| item.price.or(item.plan)),
            line_prices: prices(o.lines, |line| {
                object::<RawPricing>(line.pricing)
                    .and_then(|p| object::<RawPriceDetails>(p.price_details))
                    .and_then(|d| d.price)
                    .or(line.price)
                    .or(line.plan)
            }),
            entitlement_keys: entitlements
                .into_iter()
                .filter_map(|e| object::<RawExpanded>(Some(e)))
                .filter_map(|e| string(e.lookup_key))
                .collect(),
            entitlements_has_more: has_more == Some(true),
            metadata,
        }
    }
}

/// An envelope field that must be a string of 1 to 255 printable characters.
fn envelope_text(
    raw: Raw<'_>,
    field: &'static str,
    invalid: &'static str,
) -> Result<String, EventError> {
    let raw = raw.ok_or(EventError::Missing(field))?;
    let text = string(Some(raw)).ok_or(EventError::Invalid(field, "it must be a string"))?;
    if text.is_empty() || text.len() > MAX_EVENT_ID_LEN || text.chars().any(char::is_control) {
        return Err(EventError::Invalid(field, invalid));
    }
    Ok(text)
}

impl StripeEvent {
    pub fn parse(body: &[u8]) -> Result<StripeEvent, EventError> {
        StripeEvent::parse_text(StripeEvent::text_of(body)?)
    }

    /// The body as text: a webhook body that is not UTF-8 is not JSON.
    pub fn text_of(body: &[u8]) -> Result<&str, EventError> {
        std::str::from_utf8(body)
            .map_err(|e| EventError::NotJson(format!("the body is not UTF-8: {e}")))
    }

    /// `parse`, for a body already checked to be text (`text_of`), so
    /// that ingest checks it once and stores that text.
    pub fn parse_text(text: &str) -> Result<StripeEvent, EventError> {
        // No Stripe payload holds a NUL, and PostgreSQL cannot store one in
        // text: refuse it here rather than fail at the database.
        let nul = Cell::new(false);
        let mut checker = serde_json::Deserializer::from_str(text);
        let checked = Check { nul: &nul }
            .deserialize(&mut checker)
            .and_then(|()| checker.end());
        if let Err(e) = checked {
            return Err(if nul.get() {
                EventError::Invalid("body", "it contains a NUL character")
            } else {
                EventError::NotJson(e.to_string())
            });
        }
        if !text.trim_start().starts_with('{') {
            return Err(EventError::NotJson("the top level is not an object".into()));
        }
        let envelope: RawEnvelope =
            serde_json::from_str(text).map_err(|e| EventError::NotJson(e.to_string()))?;
        let id = envelope_text(
            envelope.id,
            "id",
            "it must be 1 to 255 printable characters",
        )?;
        let event_type = envelope_text(
            envelope.event_type,
            "type",
            "it must be 1 to 255 characters",
        )?;
        let object = match envelope.data {
            Some(Nested::Object(RawData { object })) => object,
            _ => None,
        };
        let object = match object.ok_or(EventError::Missing("data.object"))? {
            Nested::Object(object) => EventObject::decode(object),
            Nested::NotObject => {
                return Err(EventError::Invalid("data.object", "it must be an object"));
            }
        };
        // The ids a run is keyed and indexed by: PostgreSQL cannot index a
        // value of a few KiB, and no Stripe id comes near the limit.
        for (field, id) in [
            ("data.object.id", &object.id),
            ("data.object.customer", &object.customer),
            ("data.object.subscription", &object.subscription),
            (
                "data.object.parent.subscription_details.subscription",
                &object.parent_subscription,
            ),
        ] {
            if id.as_ref().is_some_and(|id| id.len() > MAX_EVENT_ID_LEN) {
                return Err(EventError::Invalid(field, "ids are at most 255 characters"));
            }
        }
        Ok(StripeEvent {
            id,
            event_type,
            created: envelope
                .created
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
            livemode: boolean(envelope.livemode),
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
                if o.payment_status.as_deref() == Some("unpaid") {
                    return None;
                }
                let expectation = if o.line_item_prices.is_empty() {
                    Expectation::Unknown {
                        reason: format!(
                            "{} carries no line items, so the plan comes from the app's SDK report",
                            self.event_type
                        ),
                    }
                } else {
                    policy.plans.expectation(&o.line_item_prices)
                };
                Some(RunFacts {
                    customer_id: o.customer.clone(),
                    subscription_id: o.subscription.clone(),
                    expectation,
                })
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.paused"
            | "customer.subscription.resumed" => {
                let prices = &o.item_prices;
                let status = o.status.as_deref().unwrap_or_default();
                let paused =
                    status == "paused" || self.event_type == "customer.subscription.paused";
                let expectation = if self.event_type == "customer.subscription.deleted" {
                    Expectation::Plan(NO_PLAN.into())
                } else if paused {
                    if policy.paused_keeps_access {
                        policy.plans.expectation(prices)
                    } else {
                        Expectation::Plan(NO_PLAN.into())
                    }
                } else {
                    match status {
                        "canceled" | "unpaid" | "incomplete" | "incomplete_expired" => {
                            Expectation::Plan(NO_PLAN.into())
                        }
                        "past_due" => grace(policy.plans.plan_of(prices)),
                        _ => policy.plans.expectation(prices),
                    }
                };
                Some(RunFacts {
                    customer_id: o.customer.clone(),
                    subscription_id: o.id.clone(),
                    expectation,
                })
            }
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let expectation = if self.event_type == "invoice.payment_failed" {
                    grace(policy.plans.plan_of(&o.line_prices))
                } else {
                    policy.plans.expectation(&o.line_prices)
                };
                Some(RunFacts {
                    customer_id: o.customer.clone(),
                    subscription_id: o
                        .parent_subscription
                        .clone()
                        .or_else(|| o.subscription.clone()),
                    expectation,
                })
            }
            "entitlements.active_entitlement_summary.updated" => {
                let keys: BTreeSet<String> = o.entitlement_keys.iter().cloned().collect();
                // The summary lists at most 10 entitlements; with more, the
                // event does not tell the whole set.
                let expectation = if o.entitlements_has_more {
                    Expectation::Unknown {
                        reason: format!(
                            "the entitlement summary lists only some features ({}) and says there are more",
                            keys.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    }
                } else {
                    Expectation::Features(keys)
                };
                Some(RunFacts {
                    customer_id: o.customer.clone(),
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
    use serde_json::{Value, json};

    fn fixture(event_type: &str) -> StripeEvent {
        fixture_with(event_type, |_| {})
    }

    /// Stripe's fixture with `edit` applied to its `data.object`.
    fn fixture_with(event_type: &str, edit: impl FnOnce(&mut Value)) -> StripeEvent {
        let path = format!(
            "{}/tests/fixtures/stripe/events/{event_type}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut event: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        edit(&mut event["data"]["object"]);
        StripeEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap()
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
        let event = fixture_with("checkout.session.completed", |o| {
            o["payment_status"] = "paid".into();
            o["customer"] = "cus_9".into();
            o["subscription"] = json!({"id": "sub_9"});
        });
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
        assert_eq!(event.object.payment_status.as_deref(), Some("unpaid"));
        assert_eq!(facts_with(&event, &plans()), None);
    }

    #[test]
    fn invoice_reads_new_and_old_subscription_and_price_paths() {
        let edit_new = |o: &mut Value| {
            o["parent"]["subscription_details"]["subscription"] = "sub_new".into();
            o["lines"]["data"][0]["pricing"]["price_details"] =
                json!({"price": "price_1PgafmB7WZ01zgkW6dKueIc5"});
        };
        let event = fixture_with("invoice.paid", edit_new);
        let facts = facts_with(&event, &plans()).unwrap();
        assert_eq!(facts.subscription_id.as_deref(), Some("sub_new"));
        assert_eq!(facts.expectation, Expectation::Plan("pro".into()));

        let event = fixture_with("invoice.paid", |o| {
            edit_new(o);
            o["parent"] = Value::Null;
            o["subscription"] = "sub_old".into();
            o["lines"]["data"][0]["pricing"] = Value::Null;
            o["lines"]["data"][0]["price"] = json!({"id": "price_x", "lookup_key": "pro_monthly"});
        });
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
        let event = fixture_with("invoice.payment_failed", |o| {
            o["lines"]["data"][0]["price"] = json!({"id": "price_1PgafmB7WZ01zgkW6dKueIc5"});
        });
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

        let past_due = fixture_with("customer.subscription.created", |o| {
            o["status"] = "past_due".into();
        });
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
            let event = fixture_with("customer.subscription.created", |o| {
                o["status"] = status.into();
            });
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
        let summary = |has_more: bool| {
            fixture_with("entitlements.active_entitlement_summary.updated", |o| {
                o["customer"] = "cus_1".into();
                o["entitlements"]["data"] = json!([
                    {"lookup_key": "seats"}, {"lookup_key": "api"}, {"lookup_key": "seats"}
                ]);
                o["entitlements"]["has_more"] = has_more.into();
            })
        };
        assert!(
            matches!(
                facts_with(&summary(true), &plans()).unwrap().expectation,
                Expectation::Unknown { .. }
            ),
            "has_more: the list is not the whole set"
        );
        let event = summary(false);
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
        // `data` and `data.object` are decoded in the envelope's pass: any
        // shape but an object reads as absent, or for the object as wrong.
        for data in [
            r#""x""#,
            "[1,{}]",
            "7",
            "true",
            "null",
            "{}",
            r#"{"object":null}"#,
        ] {
            let body = format!(r#"{{"id":"evt_1","type":"x","data":{data}}}"#);
            assert_eq!(
                StripeEvent::parse(body.as_bytes()),
                Err(EventError::Missing("data.object")),
                "data: {data}"
            );
        }
        for object in [r#""x""#, "[{}]", "-1.5", "false"] {
            let body = format!(r#"{{"id":"evt_1","type":"x","data":{{"object":{object}}}}}"#);
            assert_eq!(
                StripeEvent::parse(body.as_bytes()),
                Err(EventError::Invalid("data.object", "it must be an object")),
                "object: {object}"
            );
        }
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
            (json!({"customer": long}), "data.object.customer"),
            (json!({"customer": {"id": long}}), "data.object.customer"),
            (json!({"subscription": long}), "data.object.subscription"),
            (json!({"id": long}), "data.object.id"),
            (
                json!({"parent": {"subscription_details": {"subscription": long}}}),
                "data.object.parent.subscription_details.subscription",
            ),
        ] {
            let body = json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": object}});
            assert_eq!(
                StripeEvent::parse(body.to_string().as_bytes()),
                Err(EventError::Invalid(field, "ids are at most 255 characters"))
            );
        }
        let fits = json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": {"customer": "c".repeat(255)}}});
        assert!(StripeEvent::parse(fits.to_string().as_bytes()).is_ok());
    }

    /// `body` with `field: value` added to `data.object`, as JSON text.
    fn with_object_field(field: &str, value: &str) -> String {
        let body = std::fs::read_to_string(format!(
            "{}/tests/fixtures/stripe/events/customer.subscription.created.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let open = "\"data\":{\"object\":{";
        let at = body.find(open).expect("the fixture's data.object") + open.len();
        format!("{}\"{field}\":{value},{}", &body[..at], &body[at..])
    }

    #[test]
    fn fields_ingest_never_reads_are_still_held_to_json() {
        // Skipped fields are not built, but a body that would not build as
        // a JSON tree is refused as before: it is stored and served back.
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for (value, why) in [
            ("\"\\ud800\"", "a lone surrogate"),
            ("1e400", "a number out of range"),
            (deep.as_str(), "nesting over 128"),
            ("\"\\x\"", "a bad escape"),
            ("tru", "a bad literal"),
        ] {
            let body = with_object_field("unread", value);
            assert!(
                matches!(
                    StripeEvent::parse(body.as_bytes()),
                    Err(EventError::NotJson(_))
                ),
                "{why}"
            );
        }
        let nul = with_object_field("unread", "{\"deep\": [\"a\\u0000\"]}");
        assert_eq!(
            StripeEvent::parse(nul.as_bytes()),
            Err(EventError::Invalid("body", "it contains a NUL character"))
        );
        let nul_key = with_object_field("un\\u0000read", "1");
        assert_eq!(
            StripeEvent::parse(nul_key.as_bytes()),
            Err(EventError::Invalid("body", "it contains a NUL character"))
        );
        // An escaped backslash before `u0000` is text, not a NUL.
        let text = with_object_field("unread", "\"\\\\u0000\"");
        assert!(StripeEvent::parse(text.as_bytes()).is_ok());
        let bad_utf8 = [&b"{\"id\": \"evt_\xff\"}"[..]].concat();
        assert!(matches!(
            StripeEvent::parse(&bad_utf8),
            Err(EventError::NotJson(_))
        ));
    }

    #[test]
    fn a_field_of_another_type_reads_as_absent() {
        let event = fixture_with("customer.subscription.created", |o| {
            o["customer"] = json!(7);
            o["status"] = json!(["active"]);
            o["items"]["data"] = json!("price_1PgafmB7WZ01zgkW6dKueIc5");
            o["metadata"] = json!({"order": 7, "note": "x"});
        });
        assert_eq!(event.object.customer, None);
        assert_eq!(event.object.status, None);
        assert!(event.object.item_prices.is_empty());
        assert_eq!(
            event.object.metadata,
            [
                ("note".to_owned(), Some("x".to_owned())),
                ("order".to_owned(), None)
            ]
            .into()
        );
        // An item that is not an object, or whose price is neither an id nor
        // an object with one, is skipped; the others still count.
        let event = fixture_with("customer.subscription.created", |o| {
            o["items"]["data"] = json!([
                ["price_x"],
                {"price": 7},
                {"price": {"id": "price_1PgafmB7WZ01zgkW6dKueIc5", "product": {"id": "prod_1"}}},
            ]);
        });
        assert_eq!(
            event.object.item_prices,
            vec![PriceRef {
                price_id: "price_1PgafmB7WZ01zgkW6dKueIc5".into(),
                lookup_key: None,
                product_id: Some("prod_1".into()),
            }]
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_where_it_is_read() {
        // serde_json's tree kept the last; Stripe never sends one twice, and
        // a body that says two things about its id is not one to trust.
        assert!(matches!(
            StripeEvent::parse(br#"{"id":"evt_1","id":"evt_2","type":"x","data":{"object":{}}}"#),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            StripeEvent::parse(
                br#"{"id":"evt_1","type":"x","data":{"object":{"customer":"a","customer":"b"}}}"#
            ),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            StripeEvent::parse(br#"{"id":"evt_1","type":"x","data":{"object":{},"object":{}}}"#),
            Err(EventError::NotJson(_))
        ));
    }
}
