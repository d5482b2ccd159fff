//! Logs, and traces over OTLP.
//!
//! Logs go to stderr (`ASSAY_LOG` filters them, `ASSAY_LOG_FORMAT=json`
//! makes them JSON lines). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the
//! same `tracing` spans are exported as OpenTelemetry traces; the standard
//! `OTEL_*` variables apply (`OTEL_EXPORTER_OTLP_PROTOCOL` `http/protobuf`,
//! the default, or `http/json`; `OTEL_EXPORTER_OTLP_HEADERS`;
//! `OTEL_SERVICE_NAME`, default `assay`). An incoming W3C `traceparent`
//! (an app's SDK call, say) makes Assay's span a child of the caller's, so
//! the app's trace shows what Assay did with the call.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes the traces still buffered when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("assay: flushing traces at exit failed: {e}");
        }
    }
}

/// Sets up logging, and trace export when `env` asks for it. Problems with
/// the exporter are reported and leave logging in place: telemetry never
/// stops Assay from starting.
pub fn init(env: &dyn Fn(&str) -> Option<String>) -> Telemetry {
    let filter = env("ASSAY_LOG")
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = env("ASSAY_LOG_FORMAT").is_some_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into log files.
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let provider = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .filter(|e| !e.trim().is_empty())
        .and_then(|_| match exporter(env) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("assay: traces will not be exported: {e}");
                None
            }
        });
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("assay"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    Telemetry { provider }
}

use tracing_subscriber::Layer as _;

fn exporter(env: &dyn Fn(&str) -> Option<String>) -> Result<SdkTracerProvider, String> {
    // The exporter's HTTP client is reqwest's, built without a TLS provider
    // of its own.
    crate::install_crypto_provider();
    // The endpoint, protocol, headers and timeout come from the OTEL_*
    // variables, read by the exporter itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "assay".to_owned());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The span of one HTTP request, a child of the caller's trace when the
/// request carries a W3C `traceparent`.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// The trace id of a request's W3C `traceparent`, if it has a valid one:
/// hex, as W3C writes it. Read from the header itself, so that a run's
/// timeline links to the caller's trace whether or not Assay exports its
/// own spans.
pub fn trace_id(headers: &axum::http::HeaderMap) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers));
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_a_valid_traceparent_only() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(trace_id(&headers), None);
        headers.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(trace_id(&headers), None);
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&headers).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }
}
