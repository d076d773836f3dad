//! The `[server.admin]` section: the management API's own listener.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The admin listener, serving the management API (`/api/v1/…`). Kept apart from the public listener; bind it
/// to loopback or a private interface.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Serve the management API at all. Default `true`.
    pub enabled: bool,
    /// Address of the admin listener. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Largest request body accepted by the management API, in bytes. Default 1 MiB.
    pub max_body_size: usize,
    /// Most tenants with metric series of their own at `/metrics` (docs/metrics.md); later tenants are counted
    /// under `tenant="_other"`. Default 1000.
    pub metrics_max_tenants: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_size: 1024 * 1024,
            metrics_max_tenants: 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load, Override};

    #[test]
    fn admin_defaults_and_overrides() {
        let c = load(None, Vec::new(), vec![]).expect("defaults");
        assert!(c.server.admin.enabled);
        assert_eq!(c.server.admin.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.server.admin.max_body_size, 1024 * 1024);
        assert_eq!(c.server.admin.metrics_max_tenants, 1000);

        let env = vec![
            ("FERRY_ADMIN_LISTEN".to_owned(), "127.0.0.1:9".to_owned()),
            ("FERRY_ADMIN_ENABLED".to_owned(), "false".to_owned()),
            ("FERRY_METRICS_MAX_TENANTS".to_owned(), "5".to_owned()),
        ];
        let c = load(None, env, vec![]).expect("env");
        assert_eq!(c.server.admin.metrics_max_tenants, 5);
        assert_eq!(c.server.admin.listen.to_string(), "127.0.0.1:9");
        assert!(!c.server.admin.enabled);

        let c = load(
            None,
            vec![("FERRY_ADMIN_LISTEN".to_owned(), "127.0.0.1:9".to_owned())],
            vec![Override::new("server.admin.listen", "127.0.0.1:0")],
        )
        .expect("flag");
        assert_eq!(c.server.admin.listen.port(), 0);

        let e = load(
            None,
            vec![("FERRY_ADMIN_LISTEN".to_owned(), "nowhere".to_owned())],
            vec![],
        )
        .expect_err("bad address");
        assert!(e.to_string().contains("server.admin.listen"), "{e}");
    }
}
