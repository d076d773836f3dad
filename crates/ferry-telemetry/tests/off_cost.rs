//! With tracing off (no `otlp_endpoint`), what each request hop does for tracing allocates nothing: no span is
//! made, no context extracted, no header written. Counted with a global allocator wrapper, under the subscriber
//! a node runs with.

use ferry_config::{LogSettings, TelemetrySettings};
use http::{HeaderMap, HeaderValue};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn one_request(headers: &mut HeaderMap) {
    let span = ferry_telemetry::request_span!(
        "relay.request",
        otel.kind = "server",
        request_id = "0123456789abcdef0123456789abcdef",
        tenant = "demo",
    );
    ferry_telemetry::trace::continue_from(&span, headers);
    ferry_telemetry::trace::inject(&span, headers);
    let _entered = span.enter();
}

#[test]
fn tracing_off_allocates_nothing_per_request() {
    let _telemetry = ferry_telemetry::init(&LogSettings::default(), &TelemetrySettings::default())
        .expect("the subscriber installs");
    assert!(!ferry_telemetry::trace::enabled());
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", HeaderValue::from_static(PARENT));
    one_request(&mut headers); // callsites register once

    let region = Region::new(GLOBAL);
    for _ in 0..1000 {
        one_request(&mut headers);
    }
    let off = region.change();
    assert_eq!(off.allocations, 0, "tracing off: {off:?}");
    assert_eq!(
        headers["traceparent"], PARENT,
        "the incoming header is untouched"
    );

    // the measure can see a span: one made under the same subscriber allocates (its formatted fields)
    let region = Region::new(GLOBAL);
    for _ in 0..10 {
        let span = tracing::info_span!("relay.request", request_id = "0123456789abcdef");
        let _entered = span.enter();
    }
    let on = region.change();
    assert!(on.allocations > 0, "a real span: {on:?}");
}
