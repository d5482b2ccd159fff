//! Dashboard sign-in: operator tokens compared in constant time, sessions
//! kept in the database (so every replica knows them, and signing out ends
//! them everywhere) under a random cookie of which only a hash is stored, a
//! CSRF token per session, and a lock-out after repeated failed sign-ins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;
use crate::store::DashboardSession;

pub const COOKIE: &str = "assay_session";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Failed sign-ins from one address before it is locked out...
pub const MAX_FAILURES: usize = 5;
/// ...for this long after the last of them.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A fresh random value for a cookie or a CSRF token (244 random bits).
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The value of the cookie `name`, if the request carries one.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

/// A cookie as Assay sets them: not readable by scripts, sent on
/// top-level navigation to Assay (the identity provider's redirect back
/// is one) but not on other sites' requests, `Secure` when Assay is
/// reached over TLS.
pub struct CookieSpec {
    pub name: std::borrow::Cow<'static, str>,
    pub path: &'static str,
    pub lifetime: Duration,
}

/// The session's cookie.
pub const SESSION_COOKIE: CookieSpec = CookieSpec {
    name: std::borrow::Cow::Borrowed(COOKIE),
    path: "/",
    lifetime: SESSION_LIFETIME,
};

/// The cookie that binds the sign-in through the identity provider whose
/// `state` hashes to `state_hash` to the browser that began it, for as long
/// as the sign-in may take. One per sign-in, so that two begun in two tabs
/// do not overwrite each other's.
pub fn sso_cookie(state_hash: &str) -> CookieSpec {
    CookieSpec {
        name: format!("assay_sso_{}", &state_hash[..state_hash.len().min(16)]).into(),
        path: "/signin/sso",
        lifetime: SSO_SIGN_IN_LIFETIME,
    }
}

/// How long a sign-in at the identity provider may take.
pub const SSO_SIGN_IN_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl CookieSpec {
    /// The `Set-Cookie` value that sets it to `value`.
    pub fn set(&self, value: &str, secure: bool) -> String {
        self.header(value, self.lifetime.as_secs(), secure)
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear(&self, secure: bool) -> String {
        self.header("", 0, secure)
    }

    fn header(&self, value: &str, max_age: u64, secure: bool) -> String {
        format!(
            "{}={value}; Path={}; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            self.name,
            self.path,
            if secure { "; Secure" } else { "" }
        )
    }
}

/// Failed sign-ins per client address, in this replica.
#[derive(Default)]
pub struct Lockout {
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Lockout {
    /// How long `ip` must still wait, if it is locked out.
    pub fn locked(&self, ip: IpAddr) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent = failures.entry(ip).or_default();
        recent.retain(|at| at.elapsed() < LOCKOUT);
        (recent.len() >= MAX_FAILURES)
            .then(|| LOCKOUT.saturating_sub(recent.last().map_or(LOCKOUT, Instant::elapsed)))
    }

    /// Notes a failed sign-in from `ip`; whether it locks `ip` out now.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let recent = failures.entry(ip).or_default();
        recent.retain(|at| at.elapsed() < LOCKOUT);
        recent.push(Instant::now());
        let locks_out = recent.len() == MAX_FAILURES;
        // Bounded memory: at most a few entries per address.
        if recent.len() > MAX_FAILURES {
            recent.remove(0);
        }
        if failures.len() > 10_000 {
            failures.retain(|_, v| v.last().is_some_and(|at| at.elapsed() < LOCKOUT));
        }
        locks_out
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// A signed-in operator, with the address they came from. Extracting it
/// from a request without a valid session redirects to the sign-in page,
/// back to where they were going.
pub struct Operator(pub DashboardSession, pub Option<String>);

pub struct SignInFirst(String);

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to(&format!(
            "/signin?next={}",
            percent_encoding::utf8_percent_encode(&self.0, percent_encoding::NON_ALPHANUMERIC)
        ))
        .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Operator
where
    AppState: FromRef<S>,
{
    type Rejection = SignInFirst;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let here = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let Some(value) = cookie(&parts.headers, COOKIE) else {
            return Err(SignInFirst(here));
        };
        let address = state.client_of_request(parts);
        match state.store.session(&hash(&value), crate::now()).await {
            Ok(Some(session)) => Ok(Operator(session, address)),
            Ok(None) => Err(SignInFirst(here)),
            Err(e) => {
                tracing::error!(error = %e, "reading a dashboard session failed");
                Err(SignInFirst(here))
            }
        }
    }
}

/// Where to go after signing in: only a path on this site, else `/`. The
/// path is printable ASCII without spaces (a browser drops tabs and line
/// breaks, so `/\t/evil.example` would read as `//evil.example`, another
/// host; and such bytes cannot go in a `Location` header), begins with one
/// `/` and holds no `\` (which browsers read as `/`).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.len() <= 2048
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/incidents?status=open")),
            "/incidents?status=open"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        for hostile in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\nSet-Cookie: a=b",
            "/\u{0}",
            "/ /evil.example",
            "/caf\u{e9}",
            "/x\u{7f}",
        ] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(
            safe_next(Some("/runs/default/evt_1?x=%2F%2F")),
            "/runs/default/evt_1?x=%2F%2F"
        );
    }

    #[test]
    fn repeated_failures_lock_an_address_out() {
        let lockout = Lockout::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            lockout.failed(ip);
        }
        assert!(lockout.locked(ip).is_none());
        assert!(
            lockout.failed(ip),
            "the failure that locks the address out says so"
        );
        assert!(lockout.locked(ip).is_some());
        assert!(
            lockout.locked("127.0.0.2".parse().unwrap()).is_none(),
            "per address"
        );
        lockout.succeeded(ip);
        assert!(lockout.locked(ip).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; assay_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "assay_sso"), None);
    }
}
