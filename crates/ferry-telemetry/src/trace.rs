//! Request spans and the W3C trace context (`traceparent`, `tracestate`) they continue and pass on.
//!
//! Every helper here is a no-op while tracing is off: [`request_span!`](crate::request_span) gives
//! `Span::none()` (no span is registered, nothing is allocated), and [`continue_from`] and [`inject`] return at
//! once, so a request costs one relaxed atomic load more than without tracing.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor-specific trace state, passed on with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once by [`crate::init`]).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A request span at INFO named `$name` with a `trace_id` field (recorded by [`continue_from`]) and the given
/// fields; `Span::none()` while tracing is off. `otel.kind = "server"` or `"client"` sets the span's kind.
#[macro_export]
macro_rules! request_span {
    ($name:literal, $($fields:tt)*) => {
        if $crate::trace::enabled() {
            ::tracing::info_span!($name, trace_id = ::tracing::field::Empty, $($fields)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Make the trace context in `headers` (a `traceparent`, with its `tracestate`) the parent of `span`, which
/// starts a trace of its own when there is none, and record the span's `trace_id`. Call it before the span is
/// first entered.
pub fn continue_from(span: &Span, headers: &HeaderMap) {
    if !enabled() || span.is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        // only fails when the span was entered already or the layer is missing: then it keeps its own trace
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Put `span`'s trace context into `headers` as `traceparent` (and `tracestate`), replacing any there, so that
/// the next hop's span is its child.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if !enabled() || span.is_none() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_means_no_span_and_no_header() {
        assert!(!enabled());
        let span = crate::request_span!("test.request", request_id = "r1");
        assert!(span.is_none());
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        continue_from(&span, &headers);
        inject(&span, &mut headers);
        assert_eq!(
            headers[TRACEPARENT], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "untouched while tracing is off"
        );
    }
}
