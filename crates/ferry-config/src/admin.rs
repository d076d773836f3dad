//! The `[server.admin]` section: the management API's own listener.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

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
    /// A dashboard session ends after this long without a request. Default `30m`.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// A dashboard session ends this long after sign-in, however much it is used. Default `12h`.
    #[serde(with = "humantime_serde")]
    pub session_max_age: Duration,
    /// Sign-in attempts allowed per account per minute (any address), then 429; at least 1. Default 5.
    pub sign_in_attempts_per_account: u32,
    /// Sign-in attempts allowed per client address per minute (any account), then 429; at least 1. Default 20.
    pub sign_in_attempts_per_address: u32,
    /// How long the audit log keeps an entry; the worker deletes older ones. Default `90d`.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_size: 1024 * 1024,
            metrics_max_tenants: 1000,
            session_idle_timeout: Duration::from_secs(30 * 60),
            session_max_age: Duration::from_secs(12 * 3600),
            sign_in_attempts_per_account: 5,
            sign_in_attempts_per_address: 20,
            audit_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

impl AdminSettings {
    /// Checks that need more than one field; errors name the key.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let bad =
            |key: &str, message: &str| Err((format!("server.admin.{key}"), message.to_owned()));
        if self.session_idle_timeout < Duration::from_secs(1) {
            return bad("session_idle_timeout", "must be at least 1s");
        }
        if self.session_max_age < self.session_idle_timeout {
            return bad(
                "session_max_age",
                "must not be shorter than session_idle_timeout",
            );
        }
        if self.sign_in_attempts_per_account == 0 {
            return bad("sign_in_attempts_per_account", "must be at least 1");
        }
        if self.sign_in_attempts_per_address == 0 {
            return bad("sign_in_attempts_per_address", "must be at least 1");
        }
        if self.audit_retention < Duration::from_secs(3600) {
            return bad("audit_retention", "must be at least 1h");
        }
        Ok(())
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
        assert_eq!(c.server.admin.session_idle_timeout.as_secs(), 1800);
        assert_eq!(c.server.admin.session_max_age.as_secs(), 12 * 3600);
        assert_eq!(c.server.admin.audit_retention.as_secs(), 90 * 86_400);

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

    #[test]
    fn session_keys_are_checked() {
        let e = load(
            None,
            vec![],
            vec![
                Override::new("server.admin.session_idle_timeout", "2h"),
                Override::new("server.admin.session_max_age", "1h"),
            ],
        )
        .expect_err("max age below idle");
        assert!(
            e.to_string().contains("server.admin.session_max_age"),
            "{e}"
        );
        let e = load(
            None,
            vec![],
            vec![Override::new(
                "server.admin.sign_in_attempts_per_account",
                0i64,
            )],
        )
        .expect_err("zero attempts");
        assert!(
            e.to_string()
                .contains("server.admin.sign_in_attempts_per_account"),
            "{e}"
        );
    }
}
