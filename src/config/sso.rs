//! The `[sso]` table (single sign-on through the team's OpenID Connect
//! provider) and the roles that operators and the provider's groups are
//! given, checked.

use std::collections::BTreeMap;

use super::raw::RawSso;
use crate::access::Role;
use crate::access::sso::{GroupRule, Roles, Rules};
use crate::settings::{Secret, boolean, expand_variables};

/// The keys of `[sso]` that a variable sets: each has `ASSAY_SSO_<KEY>`.
pub(super) const KEYS: [&str; 7] = [
    "issuer",
    "client_id",
    "client_secret",
    "provider_name",
    "scopes",
    "groups_claim",
    "require_verified_email",
];

/// How operators sign in through the identity provider.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    /// The provider's issuer, exactly as its ID tokens give `iss`; its
    /// metadata is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// `None` for a public client (PKCE alone).
    pub client_secret: Option<Secret>,
    /// What the sign-in button calls the provider.
    pub provider_name: String,
    /// Asked for beside `openid`.
    pub scopes: Vec<String>,
    /// The ID token's claim that lists the groups.
    pub groups_claim: String,
    /// An email identifies an operator only if the provider marks it
    /// verified; off, also if the provider says nothing either way.
    pub require_verified_email: bool,
    pub groups: Vec<GroupRule>,
}

impl SsoSettings {
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            groups: &self.groups,
            require_verified_email: self.require_verified_email,
        }
    }
}

/// The roles `role` (in every project, `default` when not given) and
/// `projects` (each project's own) give, for `what`; `None` after reporting
/// a bad role or an unknown project.
pub(super) fn roles(
    what: &str,
    role: Option<&str>,
    projects: &BTreeMap<String, String>,
    default: Option<Role>,
    known_projects: &dyn Fn(&str) -> bool,
    errors: &mut Vec<String>,
) -> Option<Roles> {
    let before = errors.len();
    let parse = |text: &str, errors: &mut Vec<String>| {
        text.trim()
            .parse::<Role>()
            .map_err(|e| errors.push(format!("{what}: {e}")))
            .ok()
    };
    let everywhere = match role {
        Some(text) => parse(text, errors),
        None => default,
    };
    let mut own = BTreeMap::new();
    for (project, text) in projects {
        if !known_projects(project) {
            errors.push(format!("{what}: no project `{project}` to give a role in"));
        } else if let Some(role) = parse(text, errors) {
            own.insert(project.clone(), role);
        }
    }
    (errors.len() == before).then_some(Roles {
        everywhere,
        projects: own,
    })
}

/// The checked `[sso]` table; `None` when single sign-on is off or after
/// reporting what is wrong with it.
pub(super) fn load(
    raw: &RawSso,
    known_projects: &dyn Fn(&str) -> bool,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Option<SsoSettings> {
    if raw.is_unset() {
        return None;
    }
    let before = errors.len();
    let issuer = raw.issuer.as_deref().map(str::trim).unwrap_or_default();
    if issuer.is_empty() {
        errors.push(
            "ASSAY_SSO_ISSUER / sso.issuer: single sign-on needs the provider's issuer URL"
                .to_owned(),
        );
    } else if let Err(e) = check_issuer(issuer) {
        errors.push(format!("ASSAY_SSO_ISSUER / sso.issuer: `{issuer}` {e}"));
    }
    let client_id = raw.client_id.as_deref().map(str::trim).unwrap_or_default();
    if client_id.is_empty() {
        errors.push(
            "ASSAY_SSO_CLIENT_ID / sso.client_id: single sign-on needs the client id the provider gave Assay"
                .to_owned(),
        );
    }
    let client_secret = raw.client_secret.as_ref().and_then(|secret| {
        expand_variables(secret.expose(), env)
            .map_err(|e| errors.push(format!("ASSAY_SSO_CLIENT_SECRET / sso.client_secret: {e}")))
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new)
    });
    let mut scopes: Vec<String> = raw
        .scopes
        .as_ref()
        .map_or_else(|| vec!["email".to_owned()], |s| s.items());
    scopes.retain(|s| s != "openid");
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
    {
        errors.push(format!(
            "ASSAY_SSO_SCOPES / sso.scopes: `{bad}` is not a scope name"
        ));
    }
    let groups_claim = raw
        .groups_claim
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or("groups")
        .to_owned();
    let mut groups = Vec::new();
    for (i, rule) in raw.groups.iter().enumerate() {
        let group = rule.group.trim();
        let what = format!("sso.groups.{i} (`{group}`)");
        if group.is_empty() {
            errors.push(format!("sso.groups.{i}: `group` is empty"));
            continue;
        }
        if rule.role.is_none() && rule.projects.is_empty() {
            errors.push(format!(
                "{what}: give a `role`, or `projects` with a role in each, or the group gives nothing"
            ));
            continue;
        }
        if let Some(roles) = roles(
            &what,
            rule.role.as_deref(),
            &rule.projects,
            None,
            known_projects,
            errors,
        ) {
            groups.push(GroupRule {
                group: group.to_owned(),
                roles,
            });
        }
    }
    let provider_name = raw
        .provider_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("single sign-on")
        .to_owned();
    let require_verified_email = boolean(
        "ASSAY_SSO_REQUIRE_VERIFIED_EMAIL / sso.require_verified_email",
        raw.require_verified_email.as_ref(),
        true,
        errors,
    );
    (errors.len() == before).then(|| SsoSettings {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret,
        provider_name,
        scopes,
        groups_claim,
        require_verified_email,
        groups,
    })
}

/// An issuer is an `https` URL without query or fragment; `http` only for
/// a provider on this machine's loopback (a test's, a developer's).
fn check_issuer(issuer: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(issuer).map_err(|_| "is not a URL")?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must use https (http only for a provider on loopback)"),
        _ => Err("must be an https URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_but_on_loopback() {
        assert!(check_issuer("https://login.example.com").is_ok());
        assert!(check_issuer("https://login.example.com/tenant/v2.0").is_ok());
        assert!(check_issuer("http://127.0.0.1:4000").is_ok());
        assert!(check_issuer("http://localhost:4000").is_ok());
        assert!(check_issuer("http://login.example.com").is_err());
        assert!(check_issuer("https://login.example.com/?a=b").is_err());
        assert!(check_issuer("ftp://login.example.com").is_err());
        assert!(check_issuer("login.example.com").is_err());
    }
}
