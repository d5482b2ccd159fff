//! The primitives every section of the configuration is read with: values
//! that must never be shown (and show themselves redacted when the
//! effective settings are printed), lists and tables that a variable writes
//! as text, and the checks that report a bad value with the variable and
//! key it came from. Each subsystem's settings module validates its own
//! section with these; [`crate::config`] layers the sources and assembles
//! the sections.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a secret shows instead of itself.
pub const REDACTED: &str = "[redacted]";

/// A value that must never be printed or logged. It serialises as
/// [`REDACTED`], so the printed settings are derived from the values read.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// An API key as we keep it: only its SHA-256, compared in constant time.
/// API keys are long random tokens, so a fast hash is enough; what matters is
/// that the key itself is not kept in memory or printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    pub fn of(key: &str) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_hex(hex_digest: &str) -> Option<ApiKeyHash> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        Some(ApiKeyHash(bytes.try_into().ok()?))
    }

    pub fn matches(&self, presented: &str) -> bool {
        bool::from(ApiKeyHash::of(presented).0.ct_eq(&self.0))
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[sha256 redacted]")
    }
}

/// A URL that may carry a password (a database's, an SMTP server's): it
/// serialises with the password replaced.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(String);

impl CredentialUrl {
    pub fn new(value: impl Into<String>) -> CredentialUrl {
        CredentialUrl(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for CredentialUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// A URL with any password replaced, whether it is written before the host
/// or as a `password` query parameter (sqlx reads both).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL: its query, which may name a password, is not shown.
        return match url.split_once('?') {
            Some((before, _)) => format!("{}?[redacted]", without_userinfo(before)),
            None => without_userinfo(url),
        };
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "redacted".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// A URL as it may be stored and shown: without query string or user info,
/// where a token could hide.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => without_userinfo(url.split(['?', '#']).next().unwrap_or_default()),
    }
}

/// Text that does not parse as a URL, for a message: what would be its
/// user info (a password, a token) is replaced, as far as it can be told.
fn without_userinfo(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    match text[start..].rfind('@') {
        Some(at) => format!("{}redacted@{}", &text[..start], &text[start + at + 1..]),
        None => text.to_owned(),
    }
}

/// A URL that is shown without what could be a token in it (user info, a
/// query string), as [`shown_url`] does.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ShownUrl(String);

impl ShownUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ShownUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown_url(&self.0))
    }
}

impl Serialize for ShownUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&shown_url(&self.0))
    }
}

/// A single value as a file writes it (a number, a boolean, a string) or
/// as a variable does (always text): checked by the setting that reads it,
/// so that every bad value is reported, not only the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    /// The value as text: the variable's, or what the file wrote.
    pub fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Text(t) => t.trim().to_owned(),
        }
    }
}

/// A whole number in `range`, or `default` when unset; a bad value is
/// reported as `what` and `default` stands in.
pub fn whole_number<T>(
    what: &str,
    value: Option<&Scalar>,
    range: std::ops::RangeInclusive<T>,
    default: T,
    errors: &mut Vec<String>,
) -> T
where
    T: Copy + PartialOrd + TryFrom<i64> + fmt::Display + std::str::FromStr,
{
    let Some(value) = value else {
        return default;
    };
    let parsed = match value {
        Scalar::Int(n) => T::try_from(*n).ok(),
        Scalar::Text(t) => t.trim().parse::<T>().ok(),
        _ => None,
    };
    match parsed.filter(|n| range.contains(n)) {
        Some(n) => n,
        None => {
            // An end no one writes (a type's maximum) goes unsaid.
            let end = range.end().to_string();
            errors.push(if end.len() > 12 {
                format!(
                    "{what}: must be a whole number of at least {}",
                    range.start()
                )
            } else {
                format!(
                    "{what}: must be a whole number from {} to {end}",
                    range.start()
                )
            });
            default
        }
    }
}

/// A boolean (`true`, `false`, or as a variable writes it, `1`/`0`,
/// `yes`/`no`), or `default` when unset.
pub fn boolean(
    what: &str,
    value: Option<&Scalar>,
    default: bool,
    errors: &mut Vec<String>,
) -> bool {
    match value {
        None => default,
        Some(Scalar::Bool(b)) => *b,
        Some(other) => match other.text().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            text => {
                errors.push(format!("{what}: `{text}` is not true or false"));
                default
            }
        },
    }
}

/// A duration as humantime writes it (`90s`, `5m`, `1h`), above zero.
pub fn parse_duration(what: &str, text: &str, errors: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => {
            errors.push(format!("{what}: must be longer than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            let why = match e {
                humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                    ": a number needs its unit".to_owned()
                }
                humantime::DurationError::UnknownUnit { unit, .. } => {
                    format!(": `{unit}` is not a unit")
                }
                humantime::DurationError::NumberOverflow => ": too long or too fine".to_owned(),
                _ => String::new(),
            };
            errors.push(format!(
                "{what}: `{text}` is not a duration{why}; use e.g. `500ms`, `90s`, `5m`, `1h`, `7d`"
            ));
            None
        }
    }
}

/// The candidate closest to `found`, when one is close enough to be what
/// was meant: a mistyped key, variable or template field.
pub fn did_you_mean<'a>(
    found: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(found, candidate), candidate))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// `; did you mean `x`?` when a candidate is close to `found`, else nothing.
pub fn suggestion<'a>(found: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(found, candidates)
        .map(|name| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

/// What a duration setting that is unset or bad (and reported) stands at
/// while loading goes on to find every other problem: the configuration is
/// refused, so it is never used.
pub const FALLBACK_DURATION: Duration = Duration::from_secs(1);

/// The duration `text` gives, or `default`'s when it is unset or bad (a bad
/// one is reported), so that loading goes on and every problem is found.
pub fn duration_or(
    what: &str,
    text: Option<&str>,
    default: &str,
    errors: &mut Vec<String>,
) -> Duration {
    let fallback = || humantime::parse_duration(default).unwrap_or_default();
    match text {
        Some(text) => parse_duration(what, text, errors).unwrap_or_else(fallback),
        None => fallback(),
    }
}

/// The non-empty, trimmed entries of a comma-separated list.
pub fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A list, written as a TOML array or as the comma-separated text a
/// variable holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextOrList<T = String> {
    Text(T),
    List(Vec<T>),
}

impl TextOrList<String> {
    /// The entries: the text split at commas, or the array's items.
    pub fn items(&self) -> Vec<String> {
        match self {
            TextOrList::Text(text) => comma_list(text),
            TextOrList::List(list) => list.clone(),
        }
    }
}

impl TextOrList<Secret> {
    /// The secrets, each array item split at commas too.
    pub fn secrets(&self) -> Vec<Secret> {
        let parts: Vec<&Secret> = match self {
            TextOrList::Text(one) => vec![one],
            TextOrList::List(list) => list.iter().collect(),
        };
        parts
            .into_iter()
            .flat_map(|s| comma_list(s.expose()))
            .map(Secret::new)
            .collect()
    }
}

/// A table, or the `KEY=value,...` text a variable holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextOrTable<T = String> {
    Text(T),
    Table(BTreeMap<String, T>),
}

/// Reads a string that must be one; a number or a boolean where text is
/// wanted is read as its text.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.text()))
}

/// Replaces every `${VAR}` with the variable's value, so that a token or
/// secret comes from the environment and never from the file.
pub fn expand_variables(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialise_redacted_and_urls_without_credentials() {
        #[derive(Serialize)]
        struct Shown {
            token: Secret,
            db: CredentialUrl,
            hook: ShownUrl,
        }
        let shown = Shown {
            token: Secret::new("hunter2"),
            db: CredentialUrl::new("postgres://assay:hunter2@db:5432/assay"),
            hook: ShownUrl("https://user:pw@ops.example/assay?token=hunter2".into()),
        };
        let text = toml::to_string(&shown).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
        assert!(text.contains("token = \"[redacted]\""), "{text}");
        assert!(
            text.contains("postgres://assay:redacted@db:5432/assay"),
            "{text}"
        );
        assert!(text.contains("https://ops.example/assay"), "{text}");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), REDACTED);
    }

    #[test]
    fn a_near_miss_is_suggested_and_a_stranger_is_not() {
        let keys = [
            "deadline_reconciled",
            "deadline_access_asserted",
            "grace_period",
        ];
        assert_eq!(
            did_you_mean("deadline_reconcild", keys),
            Some("deadline_reconciled")
        );
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(
            suggestion("grace_periods", keys),
            "; did you mean `grace_period`?"
        );
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://assay:hunter2@db:5432/assay"),
            "postgres://assay:redacted@db:5432/assay"
        );
        assert_eq!(redact_url("sqlite://assay.db"), "sqlite://assay.db");
        let query = redact_url("postgres://db/assay?user=a&password=hunter2&sslmode=require");
        assert!(!query.contains("hunter2"), "{query}");
        assert!(query.contains("sslmode=require"), "{query}");
        // A URL that does not parse still loses its password.
        let broken = redact_url("postgres://assay:hunter2@db:notaport/assay");
        assert_eq!(broken, "postgres://redacted@db:notaport/assay");
        let broken = redact_url("postgres://assay@db:54x2/assay?password=hunter2");
        assert_eq!(broken, "postgres://redacted@db:54x2/assay?[redacted]");
    }

    #[test]
    fn shown_urls_hide_what_could_be_a_token() {
        assert_eq!(
            shown_url("http://user:pw@app:3000/access/cus_1?token=s3cret#x"),
            "http://app:3000/access/cus_1"
        );
        assert_eq!(shown_url("not a url?token=s3cret"), "not a url");
        assert_eq!(shown_url("ftp:/x:s3cret@ host"), "redacted@ host");
    }

    #[test]
    fn scalars_from_a_file_or_a_variable_are_checked_alike() {
        let mut errors = Vec::new();
        let from_file = Scalar::Int(12);
        let from_env = Scalar::Text(" 12 ".into());
        assert_eq!(
            whole_number("n", Some(&from_file), 1..=20u32, 5, &mut errors),
            12
        );
        assert_eq!(
            whole_number("n", Some(&from_env), 1..=20u32, 5, &mut errors),
            12
        );
        assert!(errors.is_empty());
        assert_eq!(
            whole_number("N / n", Some(&Scalar::Int(0)), 1..=20u32, 5, &mut errors),
            5
        );
        assert!(!boolean(
            "b",
            Some(&Scalar::Text("maybe".into())),
            false,
            &mut errors
        ));
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("N / n: must be a whole number from 1 to 20"));
        assert!(boolean(
            "b",
            Some(&Scalar::Text("yes".into())),
            false,
            &mut errors
        ));
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_text() {
        let text = TextOrList::Text("a, b,,c".to_owned());
        assert_eq!(text.items(), ["a", "b", "c"]);
        let secrets =
            TextOrList::List(vec![Secret::new("whsec_a,whsec_b"), Secret::new("whsec_c")]);
        let all: Vec<String> = secrets
            .secrets()
            .iter()
            .map(|s| s.expose().to_owned())
            .collect();
        assert_eq!(all, ["whsec_a", "whsec_b", "whsec_c"]);
    }

    #[test]
    fn variables_are_expanded_from_the_environment() {
        let env = |name: &str| (name == "APP_TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(
            expand_variables("Bearer ${APP_TOKEN}", &env),
            Ok("Bearer s3cret".into())
        );
        assert!(
            expand_variables("Bearer ${MISSING}", &env)
                .unwrap_err()
                .contains("MISSING")
        );
        assert!(expand_variables("Bearer ${APP_TOKEN", &env).is_err());
    }
}
