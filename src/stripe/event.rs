//! Reading a Stripe event: which customer and subscription it is about, and
//! which plan the customer should have once the app has processed it.
//!
//! Payload shapes differ across API versions; where Stripe moved a field
//! (basil, 2025-03-31) both the old and the new path are read.
//!
//! Only the fields access depends on are decoded. A webhook body is mostly
//! fields ingest never reads, and building all of it as a JSON tree (then
//! dropping it) would cost ingest much of its CPU (BENCHMARKS.md has the
//! measurement). The body is still checked
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
/// as its parent, so that `data` and `data.object` (nearly the whole body)
/// are walked once, not again from their text.
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
    if !crate::run::is_clean_field(&text) {
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
            "it must be 1 to 255 printable characters",
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
        // The ids a run is keyed, indexed, filtered and shown by: checked as
        // the app's are (`crate::run::is_clean_field`).
        for (field, id) in [
            ("data.object.id", &object.id),
            ("data.object.customer", &object.customer),
            ("data.object.subscription", &object.subscription),
            (
                "data.object.parent.subscription_details.subscription",
                &object.parent_subscription,
            ),
        ] {
            if id
                .as_ref()
                .is_some_and(|id| !crate::run::is_clean_field(id))
            {
                return Err(EventError::Invalid(
                    field,
                    "ids are 1 to 255 printable characters, not only spaces",
                ));
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
#[path = "event_tests.rs"]
mod tests;
