//! Alert channels per project (`[[projects.<name>.channels]]` and the
//! contract's `ASSAY_SLACK_WEBHOOK_URL`, `ASSAY_SMTP_URL`, ... variables) and
//! the process-wide alert settings, validated with the rest of the
//! configuration so that a bad channel fails `assay check-config`, not the
//! first incident.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::RetryPolicy;
use super::templates::Templates;
use crate::config::Secret;
use crate::probe::settings::OneOrMany;

/// The variables that configure one project's channels.
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileChannel {
    name: Option<String>,
    kind: String,
    url: Option<String>,
    secret: Option<String>,
    smtp_url: Option<String>,
    from: Option<String>,
    to: Option<OneOrMany>,
    /// Only for failure drills.
    drill: Option<bool>,
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

/// The process-wide alert settings as the file gives them.
#[derive(Debug, Default)]
pub(crate) struct FileAlerts {
    pub public_url: Option<String>,
    pub templates_dir: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub give_up_after: Option<String>,
    pub reminder_interval: Option<String>,
    pub group_threshold: Option<usize>,
    pub timeout: Option<String>,
}

impl AlertSettings {
    /// Reads and checks the settings (the templates included); problems go
    /// to `errors`. `bind` gives the dashboard's address when no public URL
    /// is set.
    pub(crate) fn load(
        file: FileAlerts,
        env: &dyn Fn(&str) -> Option<String>,
        bind: &str,
        errors: &mut Vec<String>,
    ) -> AlertSettings {
        let setting = |name: &str, file: Option<String>| env(name).or(file);
        let mut duration = |name: &str, file: Option<String>, default: &str| {
            let text = setting(name, file).unwrap_or_else(|| default.to_owned());
            match humantime::parse_duration(text.trim()) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    errors.push(format!(
                        "{name}: `{text}` is not a duration above zero, e.g. `5s`"
                    ));
                    humantime::parse_duration(default).unwrap_or_default()
                }
            }
        };
        let retry = RetryPolicy {
            initial: duration("ASSAY_ALERT_RETRY_INITIAL", file.retry_initial, "5s"),
            max: duration("ASSAY_ALERT_RETRY_MAX", file.retry_max, "10m"),
            give_up_after: duration("ASSAY_ALERT_GIVE_UP_AFTER", file.give_up_after, "24h"),
        };
        let timeout = duration("ASSAY_ALERT_TIMEOUT", file.timeout, "10s");
        let reminder_interval =
            match setting("ASSAY_ALERT_REMINDER_INTERVAL", file.reminder_interval) {
                None => None,
                Some(text) if matches!(text.trim(), "" | "off" | "never") => None,
                Some(text) => Some(duration("ASSAY_ALERT_REMINDER_INTERVAL", Some(text), "1h")),
            };
        if retry.max < retry.initial {
            errors
                .push("ASSAY_ALERT_RETRY_MAX is shorter than ASSAY_ALERT_RETRY_INITIAL".to_owned());
        }
        if retry.give_up_after < retry.initial {
            errors.push(
                "ASSAY_ALERT_GIVE_UP_AFTER is shorter than ASSAY_ALERT_RETRY_INITIAL: a failed send would never be retried"
                    .to_owned(),
            );
        }
        let group_threshold = match env("ASSAY_ALERT_GROUP_THRESHOLD") {
            Some(text) => text.trim().parse::<usize>().ok(),
            None => Some(file.group_threshold.unwrap_or(5)),
        }
        .filter(|n| *n >= 2)
        .unwrap_or_else(|| {
            errors.push(
                "ASSAY_ALERT_GROUP_THRESHOLD: must be a whole number of at least 2".to_owned(),
            );
            5
        });
        let public_url = match setting("ASSAY_PUBLIC_URL", file.public_url) {
            Some(text) => match http_url("ASSAY_PUBLIC_URL", &text) {
                Ok(url) => url.as_str().trim_end_matches('/').to_owned(),
                Err(e) => {
                    errors.push(e);
                    String::new()
                }
            },
            None => format!("http://{bind}"),
        };
        let dir = setting("ASSAY_ALERT_TEMPLATES_DIR", file.templates_dir);
        let templates = match Templates::load(dir.as_deref().map(std::path::Path::new)) {
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
    parts: FileChannel,
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
            if let Err(e) = http_url(&what, &url) {
                return fail(e);
            }
            ChannelKind::Slack {
                url: Secret::new(url),
            }
        }
        "email" => {
            let (Some(smtp_url), Some(from), Some(to)) = (parts.smtp_url, parts.from, parts.to)
            else {
                return fail(format!(
                    "{what}: an email channel needs `smtp_url`, `from` and `to` (ASSAY_SMTP_URL, ASSAY_ALERT_EMAIL_FROM, ASSAY_ALERT_EMAIL_TO)"
                ));
            };
            if let Err(e) =
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(&smtp_url)
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
                .into_list()
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
                smtp_url: Secret::new(smtp_url),
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
            if let Err(e) = http_url(&what, &url) {
                return fail(e);
            }
            if !secret.starts_with("whsec_") || standardwebhooks::Webhook::new(&secret).is_err() {
                return fail(format!(
                    "{what}: the secret must be `whsec_` followed by base64, as Standard Webhooks secrets are"
                ));
            }
            ChannelKind::Webhook {
                url: url.trim().to_owned(),
                secret: Secret::new(secret),
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

/// One project's channels: the file's, then the ones the contract's
/// variables make (named `slack`, `email` and `webhook`, replacing a file
/// channel of that name).
pub(crate) fn load_channels(
    what: &str,
    file: Vec<FileChannel>,
    var: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) -> Vec<ChannelConfig> {
    let mut channels: Vec<ChannelConfig> = Vec::new();
    for mut entry in file {
        let kind = std::mem::take(&mut entry.kind);
        let name = entry.name.take().unwrap_or_else(|| kind.clone());
        if channels.iter().any(|c| c.name == name) {
            errors.push(format!(
                "{what}: two channels are named `{name}`; give each a `name`"
            ));
            continue;
        }
        channels.extend(channel(what, name, &kind, entry, errors));
    }
    let from_env = [
        (
            "slack",
            FileChannel {
                url: var("ASSAY_SLACK_WEBHOOK_URL"),
                ..FileChannel::default()
            },
            var("ASSAY_SLACK_WEBHOOK_URL").is_some(),
        ),
        (
            "email",
            FileChannel {
                smtp_url: var("ASSAY_SMTP_URL"),
                from: var("ASSAY_ALERT_EMAIL_FROM"),
                to: var("ASSAY_ALERT_EMAIL_TO").map(OneOrMany::One),
                ..FileChannel::default()
            },
            [
                "ASSAY_SMTP_URL",
                "ASSAY_ALERT_EMAIL_FROM",
                "ASSAY_ALERT_EMAIL_TO",
            ]
            .iter()
            .any(|v| var(v).is_some()),
        ),
        (
            "webhook",
            FileChannel {
                url: var("ASSAY_ALERT_WEBHOOK_URL"),
                secret: var("ASSAY_ALERT_WEBHOOK_SECRET"),
                ..FileChannel::default()
            },
            var("ASSAY_ALERT_WEBHOOK_URL").is_some() || var("ASSAY_ALERT_WEBHOOK_SECRET").is_some(),
        ),
    ];
    for (kind, parts, set) in from_env {
        if set && let Some(made) = channel(what, kind.to_owned(), kind, parts, errors) {
            channels.retain(|c| c.name != kind);
            channels.push(made);
        }
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Vec<FileChannel>, env: &[(&str, &str)]) -> (Vec<ChannelConfig>, Vec<String>) {
        let mut errors = Vec::new();
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let channels = load_channels("project `p`", file, &var, &mut errors);
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
                FileChannel {
                    kind: "pager".into(),
                    ..FileChannel::default()
                },
                FileChannel {
                    kind: "email".into(),
                    smtp_url: Some("ftp://mail".into()),
                    from: Some("assay@example.com".into()),
                    to: Some(OneOrMany::One("x".into())),
                    ..FileChannel::default()
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
