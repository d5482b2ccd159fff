//! What each Stripe event type tells, read from Stripe's public fixtures.

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

/// Ids are checked as the app's are: too long, control characters and
/// only spaces are refused wherever they come from.
#[test]
fn ids_that_the_sdk_would_refuse_are_refused() {
    for bad in [
        "c".repeat(256),
        "cus_\u{1b}[2J".to_owned(),
        "cus_1\n".to_owned(),
        "  ".to_owned(),
    ] {
        for (object, field) in [
            (json!({"customer": bad}), "data.object.customer"),
            (json!({"customer": {"id": bad}}), "data.object.customer"),
            (json!({"subscription": bad}), "data.object.subscription"),
            (json!({"id": bad}), "data.object.id"),
            (
                json!({"parent": {"subscription_details": {"subscription": bad}}}),
                "data.object.parent.subscription_details.subscription",
            ),
        ] {
            let body = json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": object}});
            assert_eq!(
                StripeEvent::parse(body.to_string().as_bytes()),
                Err(EventError::Invalid(
                    field,
                    "ids are 1 to 255 printable characters, not only spaces"
                )),
                "{bad:?}"
            );
        }
        let body = json!({"id": bad, "type": "invoice.paid", "data": {"object": {}}});
        assert!(
            matches!(
                StripeEvent::parse(body.to_string().as_bytes()),
                Err(EventError::Invalid("id", _))
            ),
            "{bad:?}"
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
