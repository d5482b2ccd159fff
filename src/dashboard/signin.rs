//! Signing in and out: with an operator's token, or through the team's
//! OpenID Connect provider (`sso`). Each way ends the same, in a session
//! stored with the audit entry of its sign-in. A wrong token is recorded
//! with why, as is every refusal of a sign-in begun at the provider and
//! come back.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Operator, SESSION_COOKIE};
use super::sso::SsoError;
use super::{CsrfForm, Dashboard, PageError, PageResult, check_csrf};
use crate::access::{Actor, ActorKind, AuditAction, AuditEntry};
use crate::store::{DashboardSession, SsoSignIn};

/// Where the identity provider sends the browser back.
pub const SSO_CALLBACK: &str = "/signin/sso/callback";

/// Sign-ins one client may begin at the identity provider: a burst of 10,
/// then one every 6 seconds.
pub const SSO_STARTS: governor::Quota =
    governor::Quota::per_minute(std::num::NonZeroU32::new(10).unwrap());
/// ...and all clients together: a burst of 120, then two a second.
pub const SSO_STARTS_ALL: governor::Quota =
    governor::Quota::per_minute(std::num::NonZeroU32::new(120).unwrap());

#[derive(Deserialize, Default)]
pub(super) struct SignInQuery {
    next: Option<String>,
}

impl Dashboard {
    /// The sign-in page, with `error` (and its status) if there is one.
    fn signin_form(&self, next: &str, error: Option<(StatusCode, String)>) -> Response {
        let config = &self.app.config;
        let tokens =
            config.admin_token.is_some() || config.operators.iter().any(|o| o.token.is_some());
        let sso = config.sso.as_ref().map(|s| s.provider_name.clone());
        let mut context = json!({
            "title": "Sign in",
            "next": next,
            "sso": sso,
            "tokens": tokens || sso.is_none(),
        });
        let status = error.as_ref().map_or(StatusCode::OK, |(status, _)| *status);
        if let Some((_, message)) = error {
            context["error"] = json!(message);
        }
        let mut response = self.render("signin", None, context);
        if response.status().is_success() {
            *response.status_mut() = status;
        }
        response
    }

    /// Records a failed sign-in by `name` (or nobody known) from `client`.
    async fn record_failure(
        &self,
        name: &str,
        client: IpAddr,
        detail: Value,
    ) -> Result<(), PageError> {
        let entry = sign_in_entry(name, client, AuditAction::SignInFailed, Some(detail));
        Ok(self.app.store.record(&entry).await?)
    }

    /// Stores a session for `operator` with the audit entry of its
    /// sign-in, and sends the browser on to `next` with its cookie.
    async fn open_session(
        &self,
        operator: String,
        sso_groups: Option<Vec<String>>,
        signed_in: AuditEntry,
        next: &str,
        secure: bool,
        also: Option<String>,
    ) -> PageResult {
        let value = auth::random_token();
        let now = crate::now();
        let session = DashboardSession {
            id_hash: auth::hash(&value),
            operator,
            sso_groups,
            csrf_token: auth::random_token(),
            created_at: now,
            expires_at: now
                + chrono::Duration::from_std(auth::SESSION_LIFETIME).unwrap_or_default(),
        };
        self.app.store.create_session(&session, &signed_in).await?;
        let mut response = Redirect::to(next).into_response();
        let headers = response.headers_mut();
        for cookie in std::iter::once(SESSION_COOKIE.set(&value, secure)).chain(also) {
            if let Ok(value) = header::HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        Ok(response)
    }

    /// The address the provider sends the browser back to.
    fn sso_redirect(&self) -> String {
        format!("{}{SSO_CALLBACK}", self.app.config.alerts.public_url)
    }
}

/// Who tried, as the audit log names them: the operator signed in, or
/// nobody known; never the token itself.
fn sign_in_entry(
    name: &str,
    client: IpAddr,
    action: AuditAction,
    detail: Option<Value>,
) -> AuditEntry {
    let actor = Actor {
        kind: ActorKind::Operator,
        name: name.to_owned(),
        address: Some(client.to_string()),
    };
    AuditEntry::new(None, &actor, action, None, crate::now()).changed(None, detail)
}

/// Who an unsuccessful sign-in is recorded as.
const UNKNOWN: &str = "(unknown)";

pub(super) async fn signin_page(
    State(d): State<Dashboard>,
    Query(q): Query<SignInQuery>,
) -> Response {
    d.signin_form(&auth::safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn signin(
    State(d): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> PageResult {
    let next = auth::safe_next(form.next.as_deref());
    let client = d.app.client_of(peer.ip(), &headers);
    // A locked-out client's tries are refused unrecorded: the audit log
    // holds the failures that locked it out, not one row per request.
    if let Some(wait) = d.lockout.locked(client) {
        let message = format!(
            "Too many failed sign-ins from your address. Try again in {} minutes.",
            wait.as_secs().div_ceil(60)
        );
        return Ok(d.signin_form(&next, Some((StatusCode::TOO_MANY_REQUESTS, message))));
    }
    let Some(operator) = d.app.config.operator_for_token(&form.token) else {
        let locked_out = d.lockout.failed(client);
        tracing::warn!(%client, "a dashboard sign-in failed");
        let reason = if locked_out {
            "wrong token; the client is now locked out"
        } else {
            "wrong token"
        };
        d.record_failure(UNKNOWN, client, json!({ "reason": reason }))
            .await?;
        let message = if d.app.config.has_sign_in() {
            "That token is not right."
        } else {
            "Sign-in is off: set ASSAY_ADMIN_TOKEN or list operators in the config file."
        };
        return Ok(d.signin_form(&next, Some((StatusCode::UNAUTHORIZED, message.to_owned()))));
    };
    d.lockout.succeeded(client);
    let signed_in = sign_in_entry(&operator, client, AuditAction::SignedIn, None);
    d.open_session(operator, None, signed_in, &next, d.secure(&headers), None)
        .await
}

pub(super) async fn signout(
    State(d): State<Dashboard>,
    operator: Operator,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    check_csrf(&operator, &form)?;
    d.app.store.delete_session(&operator.0.id_hash).await?;
    Ok((
        [(header::SET_COOKIE, SESSION_COOKIE.clear(d.secure(&headers)))],
        Redirect::to("/signin"),
    )
        .into_response())
}

fn sso_off() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Single sign-on is not configured here",
    )
}

/// The key a client's sign-ins are paced by: its address, or for IPv6 its
/// /64, which one host commonly holds whole.
fn pacing_key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        other => other,
    }
}

/// Sends the browser to the identity provider, remembering the sign-in
/// (its `state`, nonce and PKCE verifier) until it comes back. Paced per
/// client and in all: each stores a row and may ask the provider.
pub(super) async fn sso_begin(
    State(d): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<SignInQuery>,
) -> PageResult {
    let settings = d.app.config.sso.as_ref().ok_or_else(sso_off)?;
    let next = auth::safe_next(q.next.as_deref());
    let client = d.app.client_of(peer.ip(), &headers);
    if d.sso_starts.len() > 10_000 {
        d.sso_starts.retain_recent();
    }
    if d.sso_starts.check_key(&pacing_key(client)).is_err() || d.sso_starts_all.check().is_err() {
        let message = "Too many sign-ins begun. Try again in a minute.";
        return Ok(d.signin_form(
            &next,
            Some((StatusCode::TOO_MANY_REQUESTS, message.to_owned())),
        ));
    }
    let started = match d.sso.start(settings, &d.sso_redirect()).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "starting a single sign-on failed");
            return Ok(d.signin_form(
                &next,
                Some((
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{} cannot be reached; try again, or sign in with a token.",
                        settings.provider_name
                    ),
                )),
            ));
        }
    };
    let browser = auth::random_token();
    let now = crate::now();
    let state_hash = auth::hash(&started.state);
    let cookie = auth::sso_cookie(&state_hash);
    let sign_in = SsoSignIn {
        state_hash,
        browser_hash: auth::hash(&browser),
        nonce: started.nonce,
        pkce_verifier: started.pkce_verifier,
        next,
        created_at: now,
        expires_at: now
            + chrono::Duration::from_std(auth::SSO_SIGN_IN_LIFETIME).unwrap_or_default(),
    };
    d.app.store.begin_sso_sign_in(&sign_in).await?;
    Ok((
        [(header::SET_COOKIE, cookie.set(&browser, d.secure(&headers)))],
        Redirect::to(started.url.as_str()),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the identity provider sends the browser back: the sign-in is
/// taken (once) by its `state` and this browser's cookie for it, its code
/// exchanged and its ID token verified, and the identity mapped to an
/// operator. A `state` that finds no sign-in begun by this browser is
/// refused unrecorded (anyone can make one up, and the audit log is not
/// theirs to fill); every refusal of a sign-in that was begun is recorded
/// with why.
pub(super) async fn sso_callback(
    State(d): State<Dashboard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> PageResult {
    let settings = d.app.config.sso.as_ref().ok_or_else(sso_off)?;
    let client = d.app.client_of(peer.ip(), &headers);
    let secure = d.secure(&headers);
    let again = "This sign-in has expired, was already used, or was begun in another browser. Sign in again.";
    let unknown = || d.signin_form("/", Some((StatusCode::BAD_REQUEST, again.to_owned())));
    let Some(state) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Ok(unknown());
    };
    let state_hash = auth::hash(state);
    let cookie = auth::sso_cookie(&state_hash);
    let Some(browser) = auth::cookie(&headers, &cookie.name) else {
        return Ok(unknown());
    };
    let Some(sign_in) = d
        .app
        .store
        .take_sso_sign_in(&state_hash, &auth::hash(&browser), crate::now())
        .await?
    else {
        return Ok(unknown());
    };
    // Every refusal from here: recorded, told, and this sign-in's cookie
    // gone.
    let refuse_as =
        async |name: &str, status: StatusCode, detail: Value, message: String| -> PageResult {
            tracing::warn!(%client, reason = %detail["reason"], "a single sign-on failed");
            d.record_failure(name, client, detail).await?;
            let mut page = d.signin_form(&sign_in.next, Some((status, message)));
            if let Ok(clear) = header::HeaderValue::from_str(&cookie.clear(secure)) {
                page.headers_mut().append(header::SET_COOKIE, clear);
            }
            Ok(page)
        };
    let refuse = async |status: StatusCode, reason: String, message: String| {
        refuse_as(
            UNKNOWN,
            status,
            json!({ "via": "sso", "reason": reason }),
            message,
        )
        .await
    };
    if let Some(error) = &q.error {
        let why = match &q.error_description {
            Some(description) => format!("{error}: {description}"),
            None => error.clone(),
        };
        let why: String = why.chars().filter(|c| !c.is_control()).take(300).collect();
        return refuse(
            StatusCode::UNAUTHORIZED,
            format!("the identity provider refused: {why}"),
            format!("{} did not sign you in ({why}).", settings.provider_name),
        )
        .await;
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "no code".into(),
            "The identity provider sent no sign-in code. Sign in again.".into(),
        )
        .await;
    };
    let identity = match d
        .sso
        .finish(
            settings,
            &d.sso_redirect(),
            code,
            &sign_in.nonce,
            &sign_in.pkce_verifier,
        )
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            let (status, message) = match &e {
                SsoError::Unavailable(_) => (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{} did not answer as expected; try again.",
                        settings.provider_name
                    ),
                ),
                SsoError::Refused(_) | SsoError::BadToken(_) => (
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "{} did not prove who you are; sign in again.",
                        settings.provider_name
                    ),
                ),
            };
            return refuse(status, e.to_string(), message).await;
        }
    };
    let who = json!({
        "via": "sso",
        "subject": identity.subject,
        "email": identity.email,
        "email_verified": identity.email_verified,
        "groups": identity.groups,
    });
    let signed_in_as = match d.app.config.sso_sign_in(&identity) {
        Ok(signed_in_as) => signed_in_as,
        Err(refusal) => {
            let name = identity.name(&settings.rules());
            let detail = json!({ "via": "sso", "reason": refusal.to_string(), "identity": who });
            let message = format!("You cannot sign in to Assay: {refusal}.");
            return refuse_as(&name, StatusCode::FORBIDDEN, detail, message).await;
        }
    };
    let mut detail = who;
    let groups = signed_in_as.groups.map(|(groups, roles)| {
        detail["roles"] = json!(roles);
        groups
    });
    let signed_in = sign_in_entry(
        &signed_in_as.operator,
        client,
        AuditAction::SignedIn,
        Some(detail),
    );
    d.open_session(
        signed_in_as.operator,
        groups,
        signed_in,
        &sign_in.next,
        secure,
        Some(cookie.clear(secure)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_ins_are_paced_per_ipv4_address_and_per_ipv6_64() {
        let key = |text: &str| pacing_key(text.parse().unwrap());
        assert_eq!(key("203.0.113.7"), key("203.0.113.7"));
        assert_ne!(key("203.0.113.7"), key("203.0.113.8"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.7"), key("::ffff:203.0.113.7"));
        assert_ne!(key("::ffff:203.0.113.7"), key("::ffff:203.0.113.8"));
    }
}
