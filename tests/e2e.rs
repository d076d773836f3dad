//! Ferry's end-to-end tests: each module is one area, and every test starts real `ferry` processes
//! (`CARGO_BIN_EXE_ferry`) on loopback. One test binary for all of them: each binary links the whole dependency
//! graph, and eighteen links were a large part of CI's time.

mod common;

mod accounts;
mod admin_api;
mod auth_oidc;
mod cli;
mod cluster;
mod dashboard;
mod gateway_access_log;
mod gateway_body_timeout;
mod gateway_failover;
mod gateway_grpc;
mod gateway_listeners;
mod gateway_ocsp;
mod gateway_reload;
mod gateway_routing;
mod gateway_tls;
mod hardening;
mod metrics;
mod oidc_sign_in;
mod otel_tracing;
mod probe;
mod proxy;
mod relay_auth_tls;
mod relay_basics;
mod relay_errors;
mod relay_failover;
mod relay_lifecycle;
mod relay_streaming;
mod relay_upgrades;
mod soak;
mod tenant_control;
