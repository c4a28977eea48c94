//! OTLP traces (`tracing.otlp_endpoint`): the spans `verify`, `user_data`, `authorize` and
//! `forward`, children of the caller's W3C `traceparent`, exported over OTLP/HTTP (protobuf) by a
//! batch processor on its own thread. Unset, nothing here exists: the decision checks one `None`.
//!
//! The opentelemetry API is used directly rather than through `tracing` spans: a `tracing` layer
//! would make every `tracing` span of the process pay for OpenTelemetry, and the log format would
//! see these spans too.

use crate::config::{KeyError, TracingConfig};
use crate::error::Reject;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// A span that ends when dropped.
pub type Span = opentelemetry_sdk::trace::Span;

impl Telemetry {
    /// The exporter to `{otlp_endpoint}/v1/traces`. The batch processor reads the standard
    /// `OTEL_BSP_*` variables (schedule delay, queue and batch sizes).
    pub fn install(config: &TracingConfig) -> Result<Self, KeyError> {
        let base = config.otlp_endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(KeyError::new(
                "tracing.otlp_endpoint",
                "must be an http:// or https:// URL (the OTLP/HTTP base, e.g. http://collector:4318)",
            ));
        }
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}/v1/traces"))
            .build()
            .map_err(|e| {
                KeyError::new(
                    "tracing.otlp_endpoint",
                    format!("cannot build the OTLP exporter: {e}"),
                )
            })?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("claimgate");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The caller's trace context (`traceparent`/`tracestate`); an absent or malformed one
    /// gives an empty context, so the spans start a new trace.
    pub fn parent(&self, headers: &HeaderMap) -> Context {
        self.propagator.extract(&Headers(headers))
    }

    pub fn start(&self, name: &'static str, parent: &Context) -> Span {
        self.tracer.start_with_context(name, parent)
    }

    /// Sets `traceparent` (and `tracestate`) on the forwarded request to `span`, so the
    /// upstream continues the trace under claimgate's `forward` span.
    pub fn inject(&self, span: &Span, parent: &Context, headers: &mut HeaderMap) {
        let cx = parent.with_remote_span_context(span.span_context().clone());
        self.propagator
            .inject_context(&cx, &mut HeadersMut(headers));
    }

    /// Sends what is still queued; called once at exit.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "OTLP trace export did not finish at shutdown");
        }
    }
}

/// Ends a step's span (if any), marked failed with the reason code on a refusal.
pub fn traced<T>(span: Option<Span>, result: Result<T, Reject>) -> Result<T, Reject> {
    if let (Some(mut span), Err(reject)) = (span, &result) {
        fail(&mut span, reject.code());
    }
    result
}

/// Marks a span failed with the reason code.
pub fn fail(span: &mut Span, reason: &'static str) {
    span.set_attribute(KeyValue::new("claimgate.reason", reason));
    span.set_status(Status::error(reason));
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
