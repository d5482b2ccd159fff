//! The `Stripe-Signature` header: `SignatureHeader::parse` and `verify` on
//! header text as anyone on the internet can send it. The input is the header
//! value; it is also used as the payload, so the sign-then-verify checks run
//! over arbitrary bodies too.
#![no_main]

use assay::stripe::signature::{SignatureError, SignatureHeader, TOLERANCE_SECS, sign};
use assay::stripe::verify;
use libfuzzer_sys::fuzz_target;

/// Two secrets, as while one is being rolled. The seeds signed with them
/// (over the payload `{}`) verify; nothing else may.
const SECRETS: [&str; 2] = ["whsec_fuzz_old", "whsec_fuzz_new"];
const SEED_PAYLOAD: &[u8] = b"{}";
/// The seeds' timestamps are this instant (2026-01-01T00:00:00Z).
const SEED_NOW: i64 = 1_767_225_600;

/// The hex of the `v1` signature `sign` makes.
fn v1_of(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let header = sign(payload, secret, timestamp);
    let (_, v1) = header.split_once(",v1=").expect("sign writes t=...,v1=...");
    v1.to_owned()
}

fn check_header(header: &str, payload: &[u8]) {
    let parsed = SignatureHeader::parse(header);
    if let Ok(parsed) = &parsed {
        assert!(!parsed.v1.is_empty(), "parse accepted a header with no v1");
    }

    // `verify` agrees with `parse`, and its only way to pass is a `v1` that
    // really is the HMAC of the payload under one of the secrets: garbage
    // never verifies, whatever the clock says. Clocks before 1970 are left
    // out: `now` comes from the system clock.
    let mut nows = vec![SEED_NOW, 0, i64::MAX];
    if let Ok(parsed) = &parsed {
        nows.push(parsed.timestamp);
    }
    for now in nows {
        let verdict = verify(Some(header), payload, &SECRETS, now);
        match (&parsed, &verdict) {
            (Err(e), _) => assert_eq!(verdict.as_ref(), Err(e), "verify disagrees with parse"),
            (Ok(parsed), Ok(())) => {
                let t = parsed.timestamp;
                assert!(
                    now.abs_diff(t) <= TOLERANCE_SECS as u64,
                    "passed {} s away from the clock",
                    now.abs_diff(t)
                );
                let lower = header.to_ascii_lowercase();
                assert!(
                    SECRETS
                        .iter()
                        .any(|s| lower.contains(&v1_of(payload, s, t))),
                    "verified without a real signature: {header:?}"
                );
            }
            (Ok(parsed), Err(SignatureError::OutsideTolerance { .. })) => assert!(
                now.abs_diff(parsed.timestamp) > TOLERANCE_SECS as u64,
                "refused as stale inside the tolerance"
            ),
            (Ok(parsed), Err(SignatureError::NoMatch)) => assert!(
                now.abs_diff(parsed.timestamp) <= TOLERANCE_SECS as u64,
                "checked the signature of a stale header"
            ),
            (Ok(_), Err(other)) => panic!("a header that parses failed with {other:?}"),
        }
    }

    // Appending a good `v1` never hurts and never rescues: a header that
    // parsed (or lacked only a v1) now verifies at its own time; a malformed
    // one stays malformed, with the same complaint.
    let timestamp = match &parsed {
        Ok(parsed) => Some(parsed.timestamp),
        // Its timestamp, as parse reads it once any v1 is there.
        Err(SignatureError::NoV1Signature) => Some(
            SignatureHeader::parse(&format!("{header},v1=00"))
                .expect("a header that lacks only a v1 parses with one")
                .timestamp,
        ),
        Err(_) => None,
    };
    let probe_t = timestamp.unwrap_or(SEED_NOW);
    let spliced = format!("{header},v1={}", v1_of(payload, SECRETS[1], probe_t));
    let verdict = verify(Some(&spliced), payload, &SECRETS, probe_t);
    match (&parsed, timestamp) {
        (_, Some(_)) => assert_eq!(verdict, Ok(()), "a good v1 was not found in {spliced:?}"),
        (Err(e), None) => assert_eq!(verdict.as_ref(), Err(e), "{spliced:?}"),
        (Ok(_), None) => unreachable!(),
    }
}

/// What `sign` makes always verifies, at every instant of the tolerance and
/// under either secret, and only for that payload and that window.
fn check_round_trip(payload: &[u8], timestamp: i64) {
    for secret in SECRETS {
        let header = sign(payload, secret, timestamp);
        assert_eq!(
            SignatureHeader::parse(&header).map(|h| h.timestamp),
            Ok(timestamp)
        );
        for skew in [-TOLERANCE_SECS, 0, TOLERANCE_SECS] {
            if let Some(now) = timestamp.checked_add(skew) {
                assert_eq!(verify(Some(&header), payload, &SECRETS, now), Ok(()));
            }
        }
        for skew in [-TOLERANCE_SECS - 1, TOLERANCE_SECS + 1] {
            if let Some(now) = timestamp.checked_add(skew) {
                assert!(matches!(
                    verify(Some(&header), payload, &SECRETS, now),
                    Err(SignatureError::OutsideTolerance { .. })
                ));
            }
        }
        assert_eq!(
            verify(Some(&header), payload, &["whsec_other"], timestamp),
            Err(SignatureError::NoMatch)
        );
        let mut tampered = payload.to_vec();
        tampered.push(b' ');
        assert_eq!(
            verify(Some(&header), &tampered, &SECRETS, timestamp),
            Err(SignatureError::NoMatch)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The handler passes the header on only when it is text.
    if let Ok(header) = std::str::from_utf8(data) {
        check_header(header, data);
        // The committed seeds are signed over this payload.
        check_header(header, SEED_PAYLOAD);
    }
    // A timestamp from the input: the whole i64 range, extremes included.
    let mut t = [0u8; 8];
    let n = data.len().min(8);
    t[..n].copy_from_slice(&data[..n]);
    check_round_trip(data, i64::from_le_bytes(t));
});
