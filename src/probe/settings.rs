//! The probe's settings, per project: `[projects.<name>.probe]` over
//! `[project_defaults.probe]`, with the `ASSAY_PROBE_<KEY>` variables over
//! both for the project they configure, checked as a whole like the rest
//! of the configuration.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ProbeSchedule;
use super::url::sample_url;
use crate::run::ProbeStart;
use crate::settings::{
    FALLBACK_DURATION, Scalar, Secret, TextOrList, TextOrTable, expand_variables, parse_duration,
    text, whole_number,
};

/// The keys of a project's probe table; each has the variable
/// `ASSAY_PROBE_<KEY>`.
pub const KEYS: [&str; 17] = [
    "url",
    "method",
    "headers",
    "plan_pointer",
    "features_pointer",
    "deploy_sha_header",
    "deploy_sha_pointer",
    "allow_hosts",
    "start",
    "interval",
    "max_interval",
    "resolve_window",
    "timeout",
    "connect_timeout",
    "max_body_bytes",
    "host_concurrency",
    "host_rate",
];

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
    /// A handlebars template over [`super::url::TEMPLATE_FIELDS`].
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

/// A project's probe table as the layers give it; [`ProbeConfig::load`]
/// checks it. The defaults layer fills every key but `url` and the optional
/// ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of probe settings")]
pub struct RawProbe {
    #[serde(default, deserialize_with = "text")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub method: Option<String>,
    /// A table, or the `Name=value,...` text of ASSAY_PROBE_HEADERS; the
    /// values may name variables and are never shown.
    #[serde(default)]
    pub headers: Option<TextOrTable<Secret>>,
    #[serde(default, deserialize_with = "text")]
    pub plan_pointer: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub features_pointer: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub deploy_sha_header: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub deploy_sha_pointer: Option<String>,
    #[serde(default)]
    pub allow_hosts: Option<TextOrList>,
    #[serde(default, deserialize_with = "text")]
    pub start: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub interval: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub max_interval: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub resolve_window: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub max_body_bytes: Option<Scalar>,
    #[serde(default)]
    pub host_concurrency: Option<Scalar>,
    #[serde(default)]
    pub host_rate: Option<Scalar>,
}

impl RawProbe {
    /// No URL: the project is not probed (and its table is not shown).
    pub fn is_unset(&self) -> bool {
        self.url.is_none()
    }
}

impl ProbeConfig {
    /// Checks one project's probe table; `None` when it sets no URL (the
    /// project is not probed). `process_env` gives the variables that
    /// header values name. Problems go to `errors`, prefixed with `what`.
    pub fn load(
        what: &str,
        raw: RawProbe,
        process_env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> Option<ProbeConfig> {
        let url_template = raw.url?;
        let mut error = |msg: String| errors.push(format!("{what}: {msg}"));

        let sample = match sample_url(&url_template) {
            Ok(url) => Some(url),
            Err(e) => {
                error(format!("ASSAY_PROBE_URL / probe.url: {e}"));
                None
            }
        };
        let method = raw.method.unwrap_or_default().to_ascii_uppercase();
        // The answer's body carries the plan, so HEAD cannot serve.
        if !matches!(method.as_str(), "GET" | "POST") {
            error(format!(
                "ASSAY_PROBE_METHOD / probe.method: `{method}` is not GET or POST"
            ));
        }
        // `Name=value,...`: a value with a comma needs the file's table.
        let header_entries: Vec<(String, String)> = match raw.headers {
            Some(TextOrTable::Text(text)) => text
                .expose()
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .enumerate()
                .filter_map(|(i, e)| match e.split_once('=') {
                    Some((k, v)) => Some((k.trim().to_owned(), v.trim().to_owned())),
                    // Not quoted: the entry may be a secret without its name.
                    None => {
                        error(format!(
                            "ASSAY_PROBE_HEADERS: entry #{} is not `Name=value`",
                            i + 1
                        ));
                        None
                    }
                })
                .collect(),
            Some(TextOrTable::Table(table)) => table
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_owned()))
                .collect(),
            None => Vec::new(),
        };
        let mut headers = Vec::new();
        for (name, value) in header_entries {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                error(format!("probe header `{name}` is not a valid header name"));
                continue;
            }
            match expand_variables(&value, process_env) {
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
        let plan_pointer =
            pointer("ASSAY_PROBE_PLAN_POINTER", raw.plan_pointer, &mut error).unwrap_or_default();
        let features_pointer = pointer(
            "ASSAY_PROBE_FEATURES_POINTER",
            raw.features_pointer,
            &mut error,
        );
        let deploy_sha_pointer = pointer(
            "ASSAY_PROBE_DEPLOY_SHA_POINTER",
            raw.deploy_sha_pointer,
            &mut error,
        );
        let deploy_sha_header = raw
            .deploy_sha_header
            .unwrap_or_default()
            .to_ascii_lowercase();

        let allow_entries = match raw.allow_hosts {
            Some(list) => list.items(),
            // By default, only the host the URL names.
            None => sample
                .as_ref()
                .and_then(|u| u.host_str())
                .map(|h| vec![h.trim_matches(['[', ']']).to_owned()])
                .unwrap_or_default(),
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

        let start = raw
            .start
            .map(|s| s.parse::<ProbeStart>())
            .transpose()
            .unwrap_or_else(|e| {
                error(format!("ASSAY_PROBE_START / probe.start: {e}"));
                None
            })
            .unwrap_or(ProbeStart::Open);
        let mut problems = Vec::new();
        // `None` when bad (and reported): how two durations relate is
        // checked only when both are good, so that one bad value is one
        // problem.
        let mut duration = |name: &str, key: &str, value: Option<String>| {
            value.and_then(|text| {
                parse_duration(&format!("{name} / probe.{key}"), &text, &mut problems)
            })
        };
        let initial = duration("ASSAY_PROBE_INTERVAL", "interval", raw.interval);
        let max = duration("ASSAY_PROBE_MAX_INTERVAL", "max_interval", raw.max_interval);
        let resolve_window = duration(
            "ASSAY_PROBE_RESOLVE_WINDOW",
            "resolve_window",
            raw.resolve_window,
        );
        let timeout = duration("ASSAY_PROBE_TIMEOUT", "timeout", raw.timeout);
        let connect_timeout = duration(
            "ASSAY_PROBE_CONNECT_TIMEOUT",
            "connect_timeout",
            raw.connect_timeout,
        );
        let max_body_bytes = whole_number(
            "ASSAY_PROBE_MAX_BODY_BYTES / probe.max_body_bytes",
            raw.max_body_bytes.as_ref(),
            1..=16 * 1024 * 1024,
            64 * 1024,
            &mut problems,
        );
        let host_concurrency = whole_number(
            "ASSAY_PROBE_HOST_CONCURRENCY / probe.host_concurrency",
            raw.host_concurrency.as_ref(),
            1..=1024,
            4,
            &mut problems,
        );
        let host_rate = whole_number(
            "ASSAY_PROBE_HOST_RATE / probe.host_rate",
            raw.host_rate.as_ref(),
            1..=10_000,
            50,
            &mut problems,
        );
        for problem in problems {
            error(problem);
        }
        if let (Some(initial), Some(max)) = (initial, max)
            && max < initial
        {
            error(format!(
                "ASSAY_PROBE_MAX_INTERVAL ({}) is shorter than ASSAY_PROBE_INTERVAL ({})",
                crate::time::written(max),
                crate::time::written(initial)
            ));
        }
        if let (Some(max), Some(resolve_window)) = (max, resolve_window)
            && resolve_window < max
        {
            error(format!(
                "ASSAY_PROBE_RESOLVE_WINDOW ({}) is shorter than ASSAY_PROBE_MAX_INTERVAL ({}): a failed run would not be probed again",
                crate::time::written(resolve_window),
                crate::time::written(max)
            ));
        }
        if let (Some(timeout), Some(connect_timeout)) = (timeout, connect_timeout)
            && connect_timeout > timeout
        {
            error(format!(
                "ASSAY_PROBE_CONNECT_TIMEOUT ({}) is longer than ASSAY_PROBE_TIMEOUT ({}), which bounds the whole probe",
                crate::time::written(connect_timeout),
                crate::time::written(timeout)
            ));
        }
        let [initial, max, resolve_window, timeout, connect_timeout] =
            [initial, max, resolve_window, timeout, connect_timeout]
                .map(|d| d.unwrap_or(FALLBACK_DURATION));
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
                lead: timeout,
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
}
