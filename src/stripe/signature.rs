//! `Stripe-Signature` verification, as Stripe specifies it: the signed payload
//! is `{t}.{raw body}`, signed with HMAC-SHA256 under the endpoint's secret;
//! the header may carry several `v1` signatures (Stripe signs with every
//! active secret while one is being rolled), and we may hold several secrets
//! for the same reason. Any `v1` matching any secret passes. Other schemes
//! (`v0` is a fake test-mode signature) are ignored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default tolerance for the age of a signature.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error(
        "the signature timestamp is {age_secs} s away from now, more than the {TOLERANCE_SECS} s tolerance (a replay, or a clock out of sync)"
    )]
    OutsideTolerance { age_secs: i64 },
    #[error("no v1 signature matches the payload under any configured webhook secret")]
    NoMatch,
}

/// The parts of a `Stripe-Signature` header we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<Vec<u8>>,
}

impl SignatureHeader {
    pub fn parse(header: &str) -> Result<SignatureHeader, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed("every item must be key=value"))?;
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed("more than one timestamp"));
                    }
                    let t = value.parse::<i64>().map_err(|_| {
                        SignatureError::Malformed("the timestamp is not an integer")
                    })?;
                    timestamp = Some(t);
                }
                // A v1 entry that is not hex cannot match; skipping it keeps
                // a header with one good and one garbled entry working.
                "v1" => {
                    if let Ok(bytes) = hex::decode(value) {
                        v1.push(bytes);
                    }
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp (t=)"))?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(SignatureHeader { timestamp, v1 })
    }
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// Verifies `header` for `payload` against any of `secrets` at `now` (unix
/// seconds). Unlike Stripe's SDKs we also refuse timestamps more than the
/// tolerance in the *future*: Stripe never sends them, and accepting them
/// would let a captured request be replayed for longer.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[impl AsRef<str>],
    now: i64,
) -> Result<(), SignatureError> {
    let header = SignatureHeader::parse(header.ok_or(SignatureError::Missing)?)?;
    let age_secs = now.saturating_sub(header.timestamp);
    if age_secs.abs() > TOLERANCE_SECS {
        return Err(SignatureError::OutsideTolerance { age_secs });
    }
    for secret in secrets {
        let expected = mac(secret.as_ref(), header.timestamp, payload);
        // `verify_slice` compares in constant time.
        if header
            .v1
            .iter()
            .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

/// Builds a valid header, as Stripe would send it. Used by drills and tests.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let signature = mac(secret, timestamp, payload).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;

    #[test]
    fn matches_stripes_published_algorithm() {
        // HMAC-SHA256("whsec_test", "1767225600.{\"id\":\"evt_1\"}"), computed
        // independently with `openssl dgst -sha256 -hmac`.
        let header = sign(BODY, "whsec_test", NOW);
        assert_eq!(
            header,
            "t=1767225600,v1=45b40331de0325606dc5400202ade162460fbe48daf9401adfdcd0d7b4f35470"
        );
        assert_eq!(verify(Some(&header), BODY, &["whsec_test"], NOW), Ok(()));
    }

    #[test]
    fn any_v1_under_any_secret_passes() {
        let good = sign(BODY, "whsec_new", NOW);
        let header = format!("t={NOW},v0=00ff,v1=deadbeef,v1=nothex,{}", &good[13..]);
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_old", "whsec_new"], NOW),
            Ok(())
        );
    }

    #[test]
    fn bad_headers_are_named() {
        let check = |h: Option<&str>| verify(h, BODY, &["whsec_test"], NOW);
        assert_eq!(check(None), Err(SignatureError::Missing));
        assert!(matches!(
            check(Some("garbage")),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            check(Some("t=abc,v1=00")),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            check(Some("v1=00")),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            check(Some("t=1,t=2,v1=00")),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            check(Some(&format!("t={NOW},v0=00"))),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn tampering_wrong_secret_and_stale_or_future_timestamps_fail() {
        let header = sign(BODY, "whsec_test", NOW);
        assert_eq!(
            verify(Some(&header), br#"{"id":"evt_2"}"#, &["whsec_test"], NOW),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_other"], NOW),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_test"], NOW + 300),
            Ok(())
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_test"], NOW + 301),
            Err(SignatureError::OutsideTolerance { age_secs: 301 })
        );
        assert_eq!(
            verify(Some(&header), BODY, &["whsec_test"], NOW - 301),
            Err(SignatureError::OutsideTolerance { age_secs: -301 })
        );
    }
}
