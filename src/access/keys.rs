//! API keys as issued and kept: a random secret shown once, a prefix that
//! names it, only its SHA-256 stored.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Scope;

/// Every key begins with one of these: secret scanners recognise a leaked
/// one by it, and an operator tells a test key from a live one.
pub const LIVE_PREFIX: &str = "ak_live_";
pub const TEST_PREFIX: &str = "ak_test_";
/// The random characters after the prefix that the shown prefix keeps.
const SHOWN: usize = 8;

/// A key as stored: everything but the secret.
#[derive(Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub project: String,
    pub name: String,
    /// The key's first characters (`ak_live_1a2b3c4d`): enough to name it,
    /// nothing to use.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "crate::time::millis")]
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, with = "crate::time::millis::option")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::millis::option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::millis::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Not stored: the hash the store finds the key by.
    #[serde(skip)]
    pub key_hash: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("project", &self.project)
            .field("prefix", &self.prefix)
            .field("scopes", &self.scopes)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Whether a key opens anything at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Revoked(DateTime<Utc>),
    Expired(DateTime<Utc>),
}

impl ApiKey {
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        match (self.revoked_at, self.expires_at) {
            (Some(at), _) => KeyState::Revoked(at),
            (None, Some(at)) if at <= now => KeyState::Expired(at),
            _ => KeyState::Active,
        }
    }

    /// The state in words, as lists show it: `active until ...`,
    /// `revoked ...`.
    pub fn state_text(&self, now: DateTime<Utc>) -> String {
        let at = crate::time::rfc3339;
        match (self.state(now), self.expires_at) {
            (KeyState::Active, Some(until)) => format!("active until {}", at(&until)),
            (KeyState::Active, None) => "active".to_owned(),
            (KeyState::Revoked(when), _) => format!("revoked {}", at(&when)),
            (KeyState::Expired(when), _) => format!("expired {}", at(&when)),
        }
    }
}

/// A key just made: its record, and the secret, shown this once.
#[derive(Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The SHA-256 of a presented key, as stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What [`issue`] needs.
pub struct KeyRequest<'a> {
    pub project: &'a str,
    pub name: &'a str,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
    /// `ak_test_` rather than `ak_live_`.
    pub test: bool,
    pub created_by: &'a str,
}

impl KeyRequest<'_> {
    /// Why the request cannot be issued at `now`, if it cannot: the same
    /// rules from the API, the dashboard and the command line.
    pub fn refusal(&self, now: DateTime<Utc>) -> Option<String> {
        if !crate::run::is_clean_field(self.name) {
            return Some("a key's name is 1 to 255 printable characters".into());
        }
        if self.scopes.is_empty() {
            return Some("a key needs at least one scope: report, read, operate or admin".into());
        }
        if self.expires_at.is_some_and(|at| at <= now) {
            return Some("a key's expiry must be in the future".into());
        }
        None
    }
}

/// A new key: 244 random bits after its prefix. Check the request's
/// [`KeyRequest::refusal`] first.
pub fn issue(request: KeyRequest<'_>, now: DateTime<Utc>) -> IssuedKey {
    let random = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let secret = format!(
        "{}{random}",
        if request.test {
            TEST_PREFIX
        } else {
            LIVE_PREFIX
        }
    );
    let shown = secret.len() - random.len() + SHOWN;
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    IssuedKey {
        key: ApiKey {
            id: Uuid::now_v7(),
            project: request.project.to_owned(),
            name: request.name.to_owned(),
            prefix: secret[..shown].to_owned(),
            scopes,
            created_at: now,
            created_by: request.created_by.to_owned(),
            last_used_at: None,
            expires_at: request.expires_at,
            revoked_at: None,
            key_hash: hash(&secret),
        },
        secret,
    }
}

/// Scopes as stored: comma separated, in order.
pub fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Scopes as stored, read back; a name this build does not know is left
/// out (it grants nothing here).
pub fn scopes_of(text: &str) -> Vec<Scope> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::t0;

    #[test]
    fn a_key_is_shown_once_and_kept_as_its_hash() {
        let issued = issue(
            KeyRequest {
                project: "default",
                name: "sdk",
                scopes: vec![Scope::Read, Scope::Report, Scope::Read],
                expires_at: None,
                test: false,
                created_by: "cli",
            },
            t0(),
        );
        assert!(issued.secret.starts_with("ak_live_"));
        assert_eq!(issued.secret.len(), 8 + 64);
        assert_eq!(issued.key.prefix.len(), 16);
        assert!(issued.secret.starts_with(&issued.key.prefix));
        assert_eq!(issued.key.key_hash, hash(&issued.secret));
        assert_eq!(issued.key.scopes, [Scope::Report, Scope::Read]);
        let shown = serde_json::to_string(&issued.key).unwrap();
        assert!(!shown.contains(&issued.secret[16..]), "{shown}");
        assert!(!shown.contains(&issued.key.key_hash), "{shown}");
        assert_eq!(
            scopes_of(&scopes_text(&issued.key.scopes)),
            issued.key.scopes
        );
    }

    #[test]
    fn a_revoked_or_expired_key_opens_nothing() {
        let mut key = issue(
            KeyRequest {
                project: "default",
                name: "ci",
                scopes: vec![Scope::Read],
                expires_at: Some(t0() + chrono::Duration::days(1)),
                test: true,
                created_by: "cli",
            },
            t0(),
        )
        .key;
        assert!(key.prefix.starts_with("ak_test_"));
        assert_eq!(key.state(t0()), KeyState::Active);
        let later = t0() + chrono::Duration::days(2);
        assert!(matches!(key.state(later), KeyState::Expired(_)));
        key.revoked_at = Some(t0());
        assert_eq!(key.state(t0()), KeyState::Revoked(t0()));
    }
}
