//! The configuration as the layers give it, before it is checked: every key
//! a file may hold (an unknown one is refused with its name), every value
//! as written. Serialised, it is what `assay check-config` prints: secrets
//! show themselves redacted.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::alert::settings::RawChannel;
use crate::drill::settings::RawDrill;
use crate::probe::settings::RawProbe;
use crate::settings::{CredentialUrl, Scalar, Secret, TextOrList, TextOrTable, text};
use crate::watch::settings::RawWatch;

/// The process-wide settings. A project's table is read on its own, over
/// `project_defaults` ([`RawProject`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of settings")]
pub(super) struct RawGlobal {
    #[serde(default, deserialize_with = "text")]
    pub bind: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub metrics_bind: Option<String>,
    /// A list, or the comma-separated text of ASSAY_TRUSTED_PROXIES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<TextOrList>,
    #[serde(default)]
    pub database_url: Option<CredentialUrl>,
    #[serde(default)]
    pub database_max_connections: Option<Scalar>,
    #[serde(default, deserialize_with = "text")]
    pub database_statement_timeout: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub lease_duration: Option<String>,
    #[serde(default)]
    pub admin_token: Option<Secret>,
    #[serde(default, deserialize_with = "text")]
    pub sweep_schedule: Option<String>,
    #[serde(default)]
    pub sweep_batch_size: Option<Scalar>,
    #[serde(default)]
    pub probe_concurrency: Option<Scalar>,
    #[serde(default, deserialize_with = "text")]
    pub probe_poll_interval: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub public_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_templates_dir: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_retry_initial: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_retry_max: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_give_up_after: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_reminder_interval: Option<String>,
    #[serde(default)]
    pub alert_group_threshold: Option<Scalar>,
    #[serde(default, deserialize_with = "text")]
    pub alert_timeout: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub alert_poll_interval: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub watch_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<RawOperator>,
    #[serde(default, skip_serializing_if = "RawSso::is_unset")]
    pub sso: RawSso,
    /// Read with each project, which it stands beneath.
    #[serde(default, skip_serializing, rename = "project_defaults")]
    pub _project_defaults: Option<IgnoredAny>,
    /// Only the names: each project is read on its own.
    #[serde(default, skip_serializing)]
    pub projects: BTreeMap<String, IgnoredAny>,
}

/// A named dashboard operator: only the SHA-256 of their token is kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with an operator's name, token_sha256 or email, and optional role and projects"
)]
pub(super) struct RawOperator {
    pub name: String,
    /// How they sign in: a token, whose SHA-256 this is...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<Secret>,
    /// ...or through the identity provider, with this verified email.
    #[serde(default, deserialize_with = "text")]
    pub email: Option<String>,
    /// `viewer`, `responder` (the default) or `admin`, in every project...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// ...but those named here, each with its own role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, String>,
}

/// Single sign-on through the team's OpenID Connect provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of single sign-on settings")]
pub(super) struct RawSso {
    #[serde(default, deserialize_with = "text")]
    pub issuer: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub client_id: Option<String>,
    /// May name variables as `${NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    #[serde(default, deserialize_with = "text")]
    pub provider_name: Option<String>,
    /// A list, or the comma-separated text of ASSAY_SSO_SCOPES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<TextOrList>,
    #[serde(default, deserialize_with = "text")]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub require_verified_email: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<RawGroupRule>,
}

impl RawSso {
    /// Nothing set: single sign-on is off.
    pub fn is_unset(&self) -> bool {
        self.issuer.is_none()
            && self.client_id.is_none()
            && self.client_secret.is_none()
            && self.provider_name.is_none()
            && self.scopes.is_none()
            && self.groups_claim.is_none()
            && self.require_verified_email.is_none()
            && self.groups.is_empty()
    }
}

/// A group of the identity provider's and the roles its members have.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with a group, and a role or projects"
)]
pub(super) struct RawGroupRule {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, String>,
}

/// One project's table, over `project_defaults`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of project settings")]
pub(super) struct RawProject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_webhook_secret: Option<TextOrList<Secret>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sha256: Option<Secret>,
    /// A table, or the `KEY=plan,...` text of ASSAY_PLAN_MAP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_map: Option<TextOrTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_priority: Option<TextOrList>,
    #[serde(default, deserialize_with = "text")]
    pub deadline_reconciled: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub deadline_access_asserted: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub grace_period: Option<String>,
    #[serde(default)]
    pub paused_keeps_access: Option<Scalar>,
    #[serde(default, skip_serializing_if = "RawProbe::is_unset")]
    pub probe: RawProbe,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<RawChannel>,
    #[serde(default)]
    pub drill: RawDrill,
    #[serde(default)]
    pub watch: RawWatch,
}

/// What `assay check-config` prints: the settings in effect, every layer
/// applied, secrets redacted.
#[derive(Serialize)]
pub(super) struct Shown<'a> {
    #[serde(flatten)]
    pub global: &'a RawGlobal,
    pub projects: &'a BTreeMap<String, RawProject>,
}
