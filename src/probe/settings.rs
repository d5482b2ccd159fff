//! The probe's settings, per project, from `[projects.<name>.probe]` and the
//! `ASSAY_PROBE_*` variables, validated as a whole like the rest of the
//! configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::ProbeSchedule;
use crate::config::Secret;
use crate::run::ProbeStart;

pub const DEFAULT_PLAN_POINTER: &str = "/plan";
pub const DEFAULT_DEPLOY_SHA_HEADER: &str = "x-deploy-sha";

/// The variables that configure one project's probe.
pub const VARIABLES: [&str; 17] = [
    "ASSAY_PROBE_URL",
    "ASSAY_PROBE_METHOD",
    "ASSAY_PROBE_HEADERS",
    "ASSAY_PROBE_PLAN_POINTER",
    "ASSAY_PROBE_FEATURES_POINTER",
    "ASSAY_PROBE_DEPLOY_SHA_HEADER",
    "ASSAY_PROBE_DEPLOY_SHA_POINTER",
    "ASSAY_PROBE_ALLOW_HOSTS",
    "ASSAY_PROBE_START",
    "ASSAY_PROBE_INTERVAL",
    "ASSAY_PROBE_MAX_INTERVAL",
    "ASSAY_PROBE_RESOLVE_WINDOW",
    "ASSAY_PROBE_TIMEOUT",
    "ASSAY_PROBE_CONNECT_TIMEOUT",
    "ASSAY_PROBE_MAX_BODY_BYTES",
    "ASSAY_PROBE_HOST_CONCURRENCY",
    "ASSAY_PROBE_HOST_RATE",
];

/// The fields a probe URL template may use.
pub const TEMPLATE_FIELDS: [&str; 4] = ["customer_id", "subscription_id", "event_id", "project"];

/// Where probes may go. The URL's host must be a listed name or an address
/// inside a listed network. Every address a name resolves to must be inside
/// a listed network when any is listed; with names only, it must at least not
/// be link-local (cloud metadata), unspecified, multicast or broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    pub names: Vec<String>,
    pub networks: Vec<IpNet>,
}

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                list.networks.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                list.networks.push(IpNet::from(ip));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.names.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "`{entry}` is neither a host name nor an IP network"
                ));
            }
        }
        Ok(list)
    }

    /// Whether a URL naming `host` may be requested at all.
    pub fn allows_host(&self, host: &url::Host<&str>) -> bool {
        match host {
            url::Host::Domain(name) => self.names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            url::Host::Ipv4(ip) => self.allows_address(IpAddr::V4(*ip), true),
            url::Host::Ipv6(ip) => self.allows_address(IpAddr::V6(*ip), true),
        }
    }

    /// Whether a connection to `ip` is allowed. `literal`: the URL named the
    /// address itself, so it must be inside a listed network.
    pub fn allows_address(&self, ip: IpAddr, literal: bool) -> bool {
        // `::ffff:169.254.169.254` is 169.254.169.254.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.networks.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        if literal || !self.networks.is_empty() {
            return false;
        }
        let dangerous = match ip {
            IpAddr::V4(v4) => {
                v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                let [first, second, ..] = v6.segments();
                v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xffc0) == 0xfe80
                    // AWS's IPv6 instance metadata, fd00:ec2::254.
                    || (first == 0xfd00 && second == 0x0ec2)
            }
        };
        !dangerous
    }
}

#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// A handlebars template over [`TEMPLATE_FIELDS`].
    pub url_template: String,
    pub method: String,
    /// Header values, expanded from `${VAR}` at start-up; never printed or
    /// stored.
    pub headers: Vec<(String, Secret)>,
    pub plan_pointer: String,
    pub features_pointer: Option<String>,
    pub deploy_sha_header: String,
    pub deploy_sha_pointer: Option<String>,
    pub allow: AllowList,
    pub start: ProbeStart,
    pub schedule: ProbeSchedule,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    /// Probes in flight to one host at once.
    pub host_concurrency: usize,
    /// Probes started per second to one host, evenly spaced.
    pub host_rate: u32,
}

/// A string, or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_list(self) -> Vec<String> {
        match self {
            OneOrMany::One(text) => text.split(',').map(|s| s.trim().to_owned()).collect(),
            OneOrMany::Many(list) => list,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileProbe {
    url: Option<String>,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    plan_pointer: Option<String>,
    features_pointer: Option<String>,
    deploy_sha_header: Option<String>,
    deploy_sha_pointer: Option<String>,
    allow_hosts: Option<OneOrMany>,
    start: Option<String>,
    interval: Option<String>,
    max_interval: Option<String>,
    resolve_window: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    max_body_bytes: Option<usize>,
    host_concurrency: Option<usize>,
    host_rate: Option<usize>,
}

/// Replaces every `${VAR}` with the variable's value, so that a token comes
/// from the environment and never from the file.
fn expand(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("an unclosed `${`")?;
        let var = &after[..end];
        out.push_str(&env(var).ok_or(format!("`${{{var}}}` is not set"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The URL rendered with harmless sample values, to validate a template.
pub fn sample_url(template: &str) -> Result<url::Url, String> {
    let rendered = super::client::render_url(template, &|field| Some(format!("sample_{field}")))?;
    let url = url::Url::parse(&rendered).map_err(|e| format!("`{rendered}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{rendered}` is not http or https"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{rendered}` has no host"));
    }
    Ok(url)
}

impl ProbeConfig {
    /// Reads one project's probe settings; `None` when no URL is set (the
    /// project is not probed). Problems go to `errors`, prefixed with `what`.
    pub(crate) fn load(
        what: &str,
        file: Option<FileProbe>,
        var: &dyn Fn(&str) -> Option<String>,
        process_env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<ProbeConfig> {
        let mut f = file.unwrap_or_default();
        let setting = |name: &str, file: Option<String>| var(name).or(file);
        let url_template = setting("ASSAY_PROBE_URL", f.url.take())?;
        let mut error = |msg: String| errors.push(format!("{what}: {msg}"));

        let sample = match sample_url(&url_template) {
            Ok(url) => Some(url),
            Err(e) => {
                error(format!("ASSAY_PROBE_URL / probe.url: {e}"));
                None
            }
        };
        let method = setting("ASSAY_PROBE_METHOD", f.method.take())
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        // The answer's body carries the plan, so HEAD cannot serve.
        if !matches!(method.as_str(), "GET" | "POST") {
            error(format!(
                "ASSAY_PROBE_METHOD / probe.method: `{method}` is not GET or POST"
            ));
        }
        // `Name=value,...`: a value with a comma needs the file's table.
        let header_entries: Vec<(String, String)> = match var("ASSAY_PROBE_HEADERS") {
            Some(text) => text
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .filter_map(|e| match e.split_once('=') {
                    Some((k, v)) => Some((k.trim().to_owned(), v.trim().to_owned())),
                    None => {
                        error(format!(
                            "ASSAY_PROBE_HEADERS: `{}` is not `Name=value`",
                            e.trim()
                        ));
                        None
                    }
                })
                .collect(),
            None => f.headers.take().unwrap_or_default().into_iter().collect(),
        };
        let mut headers = Vec::new();
        for (name, value) in header_entries {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                error(format!("probe header `{name}` is not a valid header name"));
                continue;
            }
            match expand(&value, process_env) {
                Ok(v) if reqwest::header::HeaderValue::from_str(&v).is_ok() => {
                    headers.push((name, Secret::new(v)));
                }
                Ok(_) => error(format!(
                    "probe header `{name}`: the value is not a valid header value"
                )),
                Err(e) => error(format!("probe header `{name}`: {e}")),
            }
        }
        let pointer = |name: &str, value: Option<String>, error: &mut dyn FnMut(String)| {
            let value = value?;
            if !value.is_empty() && !value.starts_with('/') {
                error(format!(
                    "{name}: `{value}` is not a JSON pointer (it starts with `/`)"
                ));
            }
            Some(value)
        };
        let plan_pointer = pointer(
            "ASSAY_PROBE_PLAN_POINTER",
            setting("ASSAY_PROBE_PLAN_POINTER", f.plan_pointer.take()),
            &mut error,
        )
        .unwrap_or_else(|| DEFAULT_PLAN_POINTER.into());
        let features_pointer = pointer(
            "ASSAY_PROBE_FEATURES_POINTER",
            setting("ASSAY_PROBE_FEATURES_POINTER", f.features_pointer.take()),
            &mut error,
        );
        let deploy_sha_pointer = pointer(
            "ASSAY_PROBE_DEPLOY_SHA_POINTER",
            setting(
                "ASSAY_PROBE_DEPLOY_SHA_POINTER",
                f.deploy_sha_pointer.take(),
            ),
            &mut error,
        );
        let deploy_sha_header =
            setting("ASSAY_PROBE_DEPLOY_SHA_HEADER", f.deploy_sha_header.take())
                .unwrap_or_else(|| DEFAULT_DEPLOY_SHA_HEADER.into())
                .to_ascii_lowercase();

        let allow_entries = match var("ASSAY_PROBE_ALLOW_HOSTS") {
            Some(text) => OneOrMany::One(text).into_list(),
            None => match f.allow_hosts.take() {
                Some(list) => list.into_list(),
                // By default, only the host the URL names.
                None => sample
                    .as_ref()
                    .and_then(|u| u.host_str())
                    .map(|h| vec![h.trim_matches(['[', ']']).to_owned()])
                    .unwrap_or_default(),
            },
        };
        let allow = AllowList::parse(&allow_entries).unwrap_or_else(|e| {
            error(format!("ASSAY_PROBE_ALLOW_HOSTS / probe.allow_hosts: {e}"));
            AllowList::default()
        });
        if let Some(host) = sample.as_ref().and_then(|u| u.host())
            && !allow.allows_host(&host)
        {
            error(format!(
                "the probe URL's host `{host}` is not in ASSAY_PROBE_ALLOW_HOSTS"
            ));
        }

        let start = setting("ASSAY_PROBE_START", f.start.take())
            .map(|s| s.parse::<ProbeStart>())
            .transpose()
            .unwrap_or_else(|e| {
                error(format!("ASSAY_PROBE_START / probe.start: {e}"));
                None
            })
            .unwrap_or(ProbeStart::Open);
        // The variable, else the file's value, else the default.
        let mut duration = |name: &str, file: Option<String>, default: &str| {
            let text = setting(name, file).unwrap_or_else(|| default.to_owned());
            match humantime::parse_duration(text.trim()) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    error(format!(
                        "{name}: `{text}` is not a duration above zero, e.g. `5s`"
                    ));
                    humantime::parse_duration(default).unwrap_or_default()
                }
            }
        };
        let initial = duration("ASSAY_PROBE_INTERVAL", f.interval.take(), "5s");
        let max = duration("ASSAY_PROBE_MAX_INTERVAL", f.max_interval.take(), "1m");
        let resolve_window = duration("ASSAY_PROBE_RESOLVE_WINDOW", f.resolve_window.take(), "24h");
        let timeout = duration("ASSAY_PROBE_TIMEOUT", f.timeout.take(), "5s");
        let connect_timeout = duration(
            "ASSAY_PROBE_CONNECT_TIMEOUT",
            f.connect_timeout.take(),
            "2s",
        );
        let mut count =
            |name: &str, value: Option<String>, file: Option<usize>, default: usize, max: usize| {
                let parsed = match value {
                    Some(text) => text.trim().parse::<usize>().ok(),
                    None => Some(file.unwrap_or(default)),
                };
                match parsed.filter(|n| (1..=max).contains(n)) {
                    Some(n) => n,
                    None => {
                        error(format!("{name}: must be a whole number from 1 to {max}"));
                        default
                    }
                }
            };
        let max_body_bytes = count(
            "ASSAY_PROBE_MAX_BODY_BYTES",
            var("ASSAY_PROBE_MAX_BODY_BYTES"),
            f.max_body_bytes,
            64 * 1024,
            16 * 1024 * 1024,
        );
        let host_concurrency = count(
            "ASSAY_PROBE_HOST_CONCURRENCY",
            var("ASSAY_PROBE_HOST_CONCURRENCY"),
            f.host_concurrency,
            4,
            1024,
        );
        let host_rate = count(
            "ASSAY_PROBE_HOST_RATE",
            var("ASSAY_PROBE_HOST_RATE"),
            f.host_rate,
            50,
            10_000,
        ) as u32;
        if max < initial {
            error(format!(
                "ASSAY_PROBE_MAX_INTERVAL ({}) is shorter than ASSAY_PROBE_INTERVAL ({})",
                humantime::format_duration(max),
                humantime::format_duration(initial)
            ));
        }
        if resolve_window < max {
            error(format!(
                "ASSAY_PROBE_RESOLVE_WINDOW ({}) is shorter than ASSAY_PROBE_MAX_INTERVAL ({}): a failed run would not be probed again",
                humantime::format_duration(resolve_window),
                humantime::format_duration(max)
            ));
        }
        if connect_timeout > timeout {
            error(format!(
                "ASSAY_PROBE_CONNECT_TIMEOUT ({}) is longer than ASSAY_PROBE_TIMEOUT ({}), which bounds the whole probe",
                humantime::format_duration(connect_timeout),
                humantime::format_duration(timeout)
            ));
        }
        Some(ProbeConfig {
            url_template,
            method,
            headers,
            plan_pointer,
            features_pointer,
            deploy_sha_header,
            deploy_sha_pointer,
            allow,
            start,
            schedule: ProbeSchedule {
                initial,
                max,
                resolve_window,
            },
            connect_timeout,
            timeout,
            max_body_bytes,
            host_concurrency,
            host_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_match_and_networks_bound_resolved_addresses() {
        let names = AllowList::parse(&["App.Internal".into()]).unwrap();
        assert!(names.allows_host(&url::Host::Domain("app.internal")));
        assert!(!names.allows_host(&url::Host::Domain("evil.example")));
        assert!(!names.allows_host(&url::Host::Ipv4("127.0.0.1".parse().unwrap())));
        assert!(names.allows_address("10.0.0.7".parse().unwrap(), false));
        assert!(
            !names.allows_address("169.254.169.254".parse().unwrap(), false),
            "metadata"
        );
        assert!(!names.allows_address("0.0.0.0".parse().unwrap(), false));
        assert!(!names.allows_address("::ffff:169.254.169.254".parse().unwrap(), false));
        assert!(!names.allows_address("fd00:ec2::254".parse().unwrap(), false));
        assert!(!names.allows_address("fe80::1".parse().unwrap(), false));

        let nets = AllowList::parse(&["localhost".into(), "127.0.0.2/32".into()]).unwrap();
        assert!(nets.allows_address("127.0.0.2".parse().unwrap(), false));
        assert!(!nets.allows_address("127.0.0.1".parse().unwrap(), false));
        assert!(AllowList::parse(&["bad host!".into()]).is_err());
    }

    #[test]
    fn header_values_come_from_the_environment() {
        let env = |name: &str| (name == "APP_TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            expand("Bearer ${APP_TOKEN}", &env),
            Ok("Bearer s3cret".into())
        );
        assert!(
            expand("Bearer ${MISSING}", &env)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(expand("Bearer ${APP_TOKEN", &env).is_err());
    }
}
