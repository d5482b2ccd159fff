//! Alert channels per project (`[[projects.<name>.channels]]` and the
//! contract's `ASSAY_SLACK_WEBHOOK_URL`, `ASSAY_SMTP_URL`, ... variables) and
//! the process-wide alert settings, validated with the rest of the
//! configuration so that a bad channel fails `assay check-config`, not the
//! first incident.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::RetryPolicy;
use super::templates::Templates;
use crate::settings::{
    CredentialUrl, FALLBACK_DURATION, REDACTED, Scalar, Secret, TextOrList, parse_duration,
    shown_url, text, whole_number,
};

/// The variables that make a project's channels (see [`with_env_channels`]).
pub const VARIABLES: [&str; 6] = [
    "ASSAY_SLACK_WEBHOOK_URL",
    "ASSAY_SMTP_URL",
    "ASSAY_ALERT_EMAIL_FROM",
    "ASSAY_ALERT_EMAIL_TO",
    "ASSAY_ALERT_WEBHOOK_URL",
    "ASSAY_ALERT_WEBHOOK_SECRET",
];

/// Where a channel sends.
#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// A Slack incoming webhook; its URL is a secret (it embeds the token).
    Slack { url: Secret },
    /// Email over SMTP. `smtp://host:port` plain, `?tls=required` for
    /// STARTTLS, `smtps://` for TLS; user and password in the URL.
    Email {
        smtp_url: Secret,
        from: String,
        to: Vec<String>,
    },
    /// A signed outbound webhook (Standard Webhooks).
    Webhook { url: String, secret: Secret },
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Email { .. } => "email",
            ChannelKind::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Unique within the project; deliveries name it.
    pub name: String,
    pub kind: ChannelKind,
    /// Kept for failure drills: it gets drill alerts only, and a project
    /// with such channels sends its drill alerts nowhere else.
    pub drill_only: bool,
}

/// A channel as the file or the variables give it; [`load_channels`]
/// checks it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table of channel settings")]
pub struct RawChannel {
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub kind: Option<String>,
    /// A Slack URL embeds its token, so every channel's URL is read as a
    /// secret; a webhook's is shown without user info or query string.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub smtp_url: Option<CredentialUrl>,
    #[serde(default, deserialize_with = "text")]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<TextOrList>,
    /// Only for failure drills.
    #[serde(default)]
    pub drill: Option<bool>,
}

impl Serialize for RawChannel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: &'a Option<String>,
            kind: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            url: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: &'a Option<Secret>,
            #[serde(skip_serializing_if = "Option::is_none")]
            smtp_url: &'a Option<CredentialUrl>,
            #[serde(skip_serializing_if = "Option::is_none")]
            from: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            to: &'a Option<TextOrList>,
            #[serde(skip_serializing_if = "Option::is_none")]
            drill: &'a Option<bool>,
        }
        let url = self.url.as_ref().map(|url| match self.kind.as_deref() {
            Some("webhook") => shown_url(url.expose()),
            _ => REDACTED.to_owned(),
        });
        Shown {
            name: &self.name,
            kind: &self.kind,
            url,
            secret: &self.secret,
            smtp_url: &self.smtp_url,
            from: &self.from,
            to: &self.to,
            drill: &self.drill,
        }
        .serialize(s)
    }
}

/// The process-wide alert settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Where the dashboard is reached, for links in alerts.
    pub public_url: String,
    pub templates: Arc<Templates>,
    pub retry: RetryPolicy,
    /// How often an open, unacknowledged incident is alerted again; `None`:
    /// never.
    pub reminder_interval: Option<Duration>,
    pub group_threshold: usize,
    /// The time one send may take.
    pub timeout: Duration,
}

/// The process-wide alert settings as the layers give them (their keys are
/// the top level's `public_url`, `alert_templates_dir`, `alert_retry_*`,
/// ...).
#[derive(Debug, Clone, Default)]
pub struct RawAlerts {
    pub public_url: Option<String>,
    pub templates_dir: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub give_up_after: Option<String>,
    pub reminder_interval: Option<String>,
    pub group_threshold: Option<Scalar>,
    pub timeout: Option<String>,
}

impl AlertSettings {
    /// Checks the settings (the templates included); problems go to
    /// `errors`. `bind` gives the dashboard's address when no public URL is
    /// set.
    pub fn load(raw: RawAlerts, bind: &str, errors: &mut Vec<String>) -> AlertSettings {
        // `None` when unset or bad (and reported): how two durations
        // relate is checked only when both are good, so that one bad value
        // is one problem.
        let mut duration = |name: &str, key: &str, value: Option<String>| {
            value.and_then(|text| parse_duration(&format!("{name} / {key}"), &text, errors))
        };
        let initial = duration(
            "ASSAY_ALERT_RETRY_INITIAL",
            "alert_retry_initial",
            raw.retry_initial,
        );
        let max = duration("ASSAY_ALERT_RETRY_MAX", "alert_retry_max", raw.retry_max);
        let give_up_after = duration(
            "ASSAY_ALERT_GIVE_UP_AFTER",
            "alert_give_up_after",
            raw.give_up_after,
        );
        let timeout = duration("ASSAY_ALERT_TIMEOUT", "alert_timeout", raw.timeout);
        let reminder_interval = match raw.reminder_interval {
            None => None,
            Some(text) if matches!(text.trim(), "" | "off" | "never") => None,
            Some(text) => duration(
                "ASSAY_ALERT_REMINDER_INTERVAL",
                "alert_reminder_interval",
                Some(text),
            ),
        };
        if let (Some(initial), Some(max)) = (initial, max)
            && max < initial
        {
            errors
                .push("ASSAY_ALERT_RETRY_MAX is shorter than ASSAY_ALERT_RETRY_INITIAL".to_owned());
        }
        if let (Some(initial), Some(give_up_after)) = (initial, give_up_after)
            && give_up_after < initial
        {
            errors.push(
                "ASSAY_ALERT_GIVE_UP_AFTER is shorter than ASSAY_ALERT_RETRY_INITIAL: a failed send would never be retried"
                    .to_owned(),
            );
        }
        let retry = RetryPolicy {
            initial: initial.unwrap_or(FALLBACK_DURATION),
            max: max.unwrap_or(FALLBACK_DURATION),
            give_up_after: give_up_after.unwrap_or(FALLBACK_DURATION),
        };
        let timeout = timeout.unwrap_or(FALLBACK_DURATION);
        let group_threshold = whole_number(
            "ASSAY_ALERT_GROUP_THRESHOLD / alert_group_threshold",
            raw.group_threshold.as_ref(),
            2..=usize::MAX,
            5,
            errors,
        );
        let public_url = match raw.public_url {
            Some(text) => match http_url("ASSAY_PUBLIC_URL", &text) {
                Ok(url) => url.as_str().trim_end_matches('/').to_owned(),
                Err(e) => {
                    errors.push(e);
                    String::new()
                }
            },
            None => format!("http://{bind}"),
        };
        let templates =
            match Templates::load(raw.templates_dir.as_deref().map(std::path::Path::new)) {
                Ok(templates) => templates,
                Err(problems) => {
                    errors.extend(problems);
                    Templates::load(None)
                        .unwrap_or_else(|_| unreachable!("the built-in templates compile"))
                }
            };
        AlertSettings {
            public_url,
            templates: Arc::new(templates),
            retry,
            reminder_interval,
            group_threshold,
            timeout,
        }
    }
}

fn http_url(what: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{what}: not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{what}: must be an http or https URL"));
    }
    Ok(url)
}

fn mailbox(what: &str, text: &str) -> Result<String, String> {
    lettre::message::Mailbox::from_str(text.trim())
        .map(|_| text.trim().to_owned())
        .map_err(|e| format!("{what}: `{}` is not an email address: {e}", text.trim()))
}

/// Builds one channel from its parts, checking each; problems go to `errors`.
fn channel(
    what: &str,
    name: String,
    kind: &str,
    parts: RawChannel,
    errors: &mut Vec<String>,
) -> Option<ChannelConfig> {
    let what = format!("{what}: channel `{name}`");
    let drill_only = parts.drill.unwrap_or(false);
    let mut fail = |msg: String| {
        errors.push(msg);
        None
    };
    let kind = match kind {
        "slack" => {
            let Some(url) = parts.url else {
                return fail(format!(
                    "{what}: a slack channel needs `url` (ASSAY_SLACK_WEBHOOK_URL)"
                ));
            };
            if let Err(e) = http_url(&what, url.expose()) {
                return fail(e);
            }
            ChannelKind::Slack { url }
        }
        "email" => {
            let (Some(smtp_url), Some(from), Some(to)) = (parts.smtp_url, parts.from, parts.to)
            else {
                return fail(format!(
                    "{what}: an email channel needs `smtp_url`, `from` and `to` (ASSAY_SMTP_URL, ASSAY_ALERT_EMAIL_FROM, ASSAY_ALERT_EMAIL_TO)"
                ));
            };
            if let Err(e) =
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(smtp_url.expose())
            {
                // The error may quote the URL, which may hold a password.
                let _ = e;
                return fail(format!(
                    "{what}: smtp_url must be smtp://HOST:PORT (add ?tls=required for STARTTLS) or smtps://HOST:PORT"
                ));
            }
            let from = match mailbox(&what, &from) {
                Ok(from) => from,
                Err(e) => return fail(e),
            };
            let to: Vec<String> = to
                .items()
                .into_iter()
                .filter(|t| !t.trim().is_empty())
                .collect();
            if to.is_empty() {
                return fail(format!("{what}: `to` lists no address"));
            }
            let mut checked = Vec::new();
            for address in to {
                match mailbox(&what, &address) {
                    Ok(a) => checked.push(a),
                    Err(e) => return fail(e),
                }
            }
            ChannelKind::Email {
                smtp_url: Secret::new(smtp_url.expose()),
                from,
                to: checked,
            }
        }
        "webhook" => {
            let (Some(url), Some(secret)) = (parts.url, parts.secret) else {
                return fail(format!(
                    "{what}: a webhook channel needs `url` and `secret` (ASSAY_ALERT_WEBHOOK_URL, ASSAY_ALERT_WEBHOOK_SECRET)"
                ));
            };
            if let Err(e) = http_url(&what, url.expose()) {
                return fail(e);
            }
            if !secret.expose().starts_with("whsec_")
                || standardwebhooks::Webhook::new(secret.expose()).is_err()
            {
                return fail(format!(
                    "{what}: the secret must be `whsec_` followed by base64, as Standard Webhooks secrets are"
                ));
            }
            ChannelKind::Webhook {
                url: url.expose().trim().to_owned(),
                secret,
            }
        }
        other => {
            return fail(format!(
                "{what}: unknown kind `{other}`; expected slack, email or webhook"
            ));
        }
    };
    Some(ChannelConfig {
        name,
        kind,
        drill_only,
    })
}

/// The channels the contract's variables make for the project they
/// configure: named `slack`, `email` and `webhook`, each replacing a
/// channel of that name from the file.
pub fn with_env_channels(
    mut channels: Vec<RawChannel>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Vec<RawChannel> {
    let made = |kind: &str| RawChannel {
        name: Some(kind.to_owned()),
        kind: Some(kind.to_owned()),
        ..RawChannel::default()
    };
    let mut from_env = Vec::new();
    if let Some(url) = var("ASSAY_SLACK_WEBHOOK_URL") {
        from_env.push(RawChannel {
            url: Some(Secret::new(url)),
            ..made("slack")
        });
    }
    let email = [
        "ASSAY_SMTP_URL",
        "ASSAY_ALERT_EMAIL_FROM",
        "ASSAY_ALERT_EMAIL_TO",
    ];
    if email.iter().any(|v| var(v).is_some()) {
        from_env.push(RawChannel {
            smtp_url: var("ASSAY_SMTP_URL").map(CredentialUrl::new),
            from: var("ASSAY_ALERT_EMAIL_FROM"),
            to: var("ASSAY_ALERT_EMAIL_TO").map(TextOrList::Text),
            ..made("email")
        });
    }
    let url = var("ASSAY_ALERT_WEBHOOK_URL");
    let secret = var("ASSAY_ALERT_WEBHOOK_SECRET");
    if url.is_some() || secret.is_some() {
        from_env.push(RawChannel {
            url: url.map(Secret::new),
            secret: secret.map(Secret::new),
            ..made("webhook")
        });
    }
    for channel in from_env {
        channels.retain(|c| c.name.as_ref().or(c.kind.as_ref()) != channel.name.as_ref());
        channels.push(channel);
    }
    channels
}

/// Checks one project's channels; problems go to `errors`, prefixed with
/// `what`. A channel without a name is named after its kind.
pub fn load_channels(
    what: &str,
    raw: Vec<RawChannel>,
    errors: &mut Vec<String>,
) -> Vec<ChannelConfig> {
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for mut entry in raw {
        let kind = entry.kind.take().unwrap_or_default();
        let name = entry.name.take().unwrap_or_else(|| kind.clone());
        if channels.iter().any(|c| c.name == name) {
            errors.push(format!(
                "{what}: two channels are named `{name}`; give each a `name`"
            ));
            continue;
        }
        channels.extend(channel(what, name, &kind, entry, errors));
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Vec<RawChannel>, env: &[(&str, &str)]) -> (Vec<ChannelConfig>, Vec<String>) {
        let mut errors = Vec::new();
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let channels = load_channels("project `p`", with_env_channels(file, &var), &mut errors);
        (channels, errors)
    }

    #[test]
    fn the_contract_variables_make_three_channels() {
        let (channels, errors) = load(
            Vec::new(),
            &[
                ("ASSAY_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack"),
                ("ASSAY_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("ASSAY_ALERT_EMAIL_FROM", "assay@example.com"),
                (
                    "ASSAY_ALERT_EMAIL_TO",
                    "oncall@example.com, billing@example.com",
                ),
                ("ASSAY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
                (
                    "ASSAY_ALERT_WEBHOOK_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
            ],
        );
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["slack", "email", "webhook"]);
        let ChannelKind::Email { to, .. } = &channels[1].kind else {
            panic!("not email");
        };
        assert_eq!(to, &["oncall@example.com", "billing@example.com"]);
    }

    #[test]
    fn every_bad_channel_is_reported() {
        let (channels, errors) = load(
            vec![
                RawChannel {
                    kind: Some("pager".into()),
                    ..RawChannel::default()
                },
                RawChannel {
                    kind: Some("email".into()),
                    smtp_url: Some(CredentialUrl::new("ftp://mail")),
                    from: Some("assay@example.com".into()),
                    to: Some(TextOrList::Text("x".into())),
                    ..RawChannel::default()
                },
            ],
            &[
                ("ASSAY_SLACK_WEBHOOK_URL", "not a url"),
                ("ASSAY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
                ("ASSAY_ALERT_WEBHOOK_SECRET", "hunter2"),
            ],
        );
        assert!(channels.is_empty());
        let all = errors.join("\n");
        for part in [
            "unknown kind `pager`",
            "smtp_url must be",
            "not a URL",
            "whsec_",
        ] {
            assert!(all.contains(part), "{part}: {all}");
        }
        assert!(!all.contains("hunter2"), "a secret in an error: {all}");
    }
}
