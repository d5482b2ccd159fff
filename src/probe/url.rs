//! The probe's URL: a handlebars template over a run's ids, each value
//! percent-encoded so that an id cannot change the path or the host.

use handlebars::Handlebars;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// The fields a probe URL template may use.
pub const TEMPLATE_FIELDS: [&str; 4] = ["customer_id", "subscription_id", "event_id", "project"];

/// Values put into a URL path are percent-encoded, so that an id cannot
/// change the path (`../admin`) or the host.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Renders a probe URL template; `value` gives each field's raw value, or
/// `None` when the run has none (a customer-level event has no
/// subscription): a template that needs a missing field does not render.
pub fn render_url(
    template: &str,
    value: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    let mut data = serde_json::Map::new();
    let mut missing = Vec::new();
    for field in TEMPLATE_FIELDS {
        match value(field) {
            // `.` and `..` would survive encoding and move up the path.
            Some(raw) if !raw.is_empty() && raw != "." && raw != ".." => {
                let encoded = utf8_percent_encode(&raw, PATH_VALUE).to_string();
                data.insert(field.to_owned(), Value::String(encoded));
            }
            _ => missing.push(field),
        }
    }
    registry.render_template(template, &data).map_err(|e| {
        match missing.iter().find(|field| template.contains(**field)) {
            Some(field) => format!("the run has no usable {field} for the probe URL"),
            None => format!("the URL template does not render: {e}"),
        }
    })
}

/// The names a template's `{{...}}` expressions give, as written.
fn named_fields(template: &str) -> impl Iterator<Item = &str> {
    template
        .split("{{")
        .skip(1)
        .filter_map(|rest| rest.split("}}").next())
        .map(|inner| inner.trim_matches(['{', '}', '~']).trim())
}

/// The URL rendered with harmless sample values, to validate a template.
/// A field a run does not have is named, with the one likely meant.
pub fn sample_url(template: &str) -> Result<url::Url, String> {
    if let Some(name) = named_fields(template).find(|name| {
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !TEMPLATE_FIELDS.contains(name)
    }) {
        return Err(format!(
            "the URL template names `{name}`, which a run does not have (it may name {}){}",
            TEMPLATE_FIELDS.join(", "),
            crate::settings::suggestion(name, TEMPLATE_FIELDS)
        ));
    }
    let rendered = render_url(template, &|field| Some(format!("sample_{field}")))?;
    let url = url::Url::parse(&rendered).map_err(|e| format!("`{rendered}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{rendered}` is not http or https"));
    }
    if url.host_str().is_none() {
        return Err(format!("`{rendered}` has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(value: &'static str) -> impl Fn(&str) -> Option<String> {
        move |_| Some(value.to_owned())
    }

    #[test]
    fn ids_cannot_change_the_path_or_host() {
        let url = render_url(
            "http://app:3000/access/{{customer_id}}",
            &all("../admin?x=1#"),
        )
        .unwrap();
        assert_eq!(url, "http://app:3000/access/..%2Fadmin%3Fx%3D1%23");
        let url = render_url("http://{{customer_id}}.app/x", &all("evil.com/")).unwrap();
        assert_eq!(url, "http://evil.com%2F.app/x");
        assert!(render_url("http://app/access/{{customer_id}}", &all("..")).is_err());
    }

    #[test]
    fn unknown_or_missing_fields_are_refused() {
        assert!(render_url("http://app/{{plan}}", &all("x")).is_err());
        let no_subscription = |f: &str| (f != "subscription_id").then(|| "x".to_owned());
        let err = render_url("http://app/s/{{subscription_id}}", &no_subscription).unwrap_err();
        assert_eq!(
            err,
            "the run has no usable subscription_id for the probe URL"
        );
        assert!(render_url("http://app/c/{{customer_id}}", &no_subscription).is_ok());
    }

    #[test]
    fn a_mistyped_field_is_named_with_the_one_meant() {
        let err = sample_url("http://app/access/{{ customer_idd }}").unwrap_err();
        assert_eq!(
            err,
            "the URL template names `customer_idd`, which a run does not have (it may name customer_id, subscription_id, event_id, project); did you mean `customer_id`?"
        );
        assert!(!err.contains("Some("), "no library text: {err}");
        assert!(sample_url("http://app/access/{{customer_id}}").is_ok());
    }
}
