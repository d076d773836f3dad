//! The node's `/metrics` (docs/metrics.md): one prometheus-client registry that every part of the node registers
//! into once at start, rendered at each scrape; and the token endpoint's results, counted here where the
//! endpoint's answer is turned into a response.

use ferry_metrics::prometheus_client::metrics::counter::Counter;
use ferry_metrics::prometheus_client::metrics::family::Family;
use ferry_metrics::prometheus_client::registry::Registry;
use ferry_metrics::Labels;

/// The results of `POST /oauth/token`, as the `result` label, and the statuses they stand for.
const RESULTS: [(&str, u16); 6] = [
    ("issued", 200),
    ("invalid_request", 400),
    ("invalid_client", 401),
    ("rate_limited", 429),
    ("unavailable", 503),
    ("error", 500),
];

/// Token endpoint results (`ferry_token_requests_total{result}`).
pub(crate) struct TokenMetrics {
    family: Family<Labels, Counter>,
    results: Vec<Counter>,
}

impl Default for TokenMetrics {
    fn default() -> Self {
        let family = Family::<Labels, Counter>::default();
        let results = RESULTS
            .iter()
            .map(|(r, _)| family.get_or_create_owned(&vec![("result", (*r).to_owned())]))
            .collect();
        Self { family, results }
    }
}

impl TokenMetrics {
    /// Count one answer by its status (any other 4xx is `invalid_request`, any other 5xx `error`).
    pub fn answered(&self, status: u16) {
        let i = RESULTS
            .iter()
            .position(|(_, s)| *s == status)
            .unwrap_or(if status < 500 { 1 } else { 5 });
        if let Some(c) = self.results.get(i) {
            c.inc();
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferry_token_requests",
            "Answers of the built-in token endpoint (POST /oauth/token), by result.",
            self.family.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_results_by_status() {
        let t = TokenMetrics::default();
        t.answered(200);
        t.answered(401);
        t.answered(403);
        t.answered(502);
        let mut r = Registry::default();
        t.register(&mut r);
        let text = ferry_metrics::render(&r);
        assert!(
            text.contains("ferry_token_requests_total{result=\"issued\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_token_requests_total{result=\"invalid_client\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_token_requests_total{result=\"invalid_request\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_token_requests_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ferry_token_requests_total{result=\"rate_limited\"} 0"),
            "{text}"
        );
    }
}
