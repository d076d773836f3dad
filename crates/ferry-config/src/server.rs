//! The `[server]` section: listeners, data directory, relay and tunnel settings.

use crate::{AuthSettings, Secret};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of `ferry serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener (relay, token endpoint, tunnel, health). Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// More public listeners beside `listen` (`[[server.listeners]]`): plain HTTP on port 80 that redirects to
    /// HTTPS, an IPv6 address beside an IPv4 one. Each serves what `listen` serves, unless it redirects; a named
    /// one also serves the routes limited to it (`listeners = ["NAME"]` on a route). `listen` itself is named
    /// [`MAIN_LISTENER`].
    pub listeners: Vec<ExtraListener>,
    /// `listen` sits behind an L4 load balancer that starts every connection with a PROXY protocol header (v1 or
    /// v2: HAProxy, AWS NLB, GCP): the client's address is taken from it, and a connection without one is
    /// closed. Default false.
    pub proxy_protocol: bool,
    /// With `tls_cert`: `listen` serves HTTP/3 too, on the same port over UDP, and tells clients so in an
    /// `Alt-Svc` header (nginx's `listen … quic` with `add_header Alt-Svc`). Needs TLSv1.3. Default false.
    pub http3: bool,
    /// Where the embedded store keeps its files. Default `./ferry-data`.
    pub data_dir: PathBuf,
    /// The store's database: `sqlite://PATH`, `sqlite::memory:`, `postgres://…` or `postgresql://…`. Default
    /// (unset): the SQLite file `ferry.db` in `data_dir`. A `Secret`, as the URL may carry a password.
    pub database_url: Option<Secret>,
    /// PEM certificate chain; with `tls_key`, the public listener speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests before it cuts them.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// At shutdown, how long the node keeps serving after `/readyz` turned 503, so that load balancers stop
    /// sending to it before it stops accepting. Default 0 (set it to the load balancer's check interval).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub http: HttpSettings,
    pub relay: RelaySettings,
    pub tunnel: TunnelSettings,
    pub auth: AuthSettings,
    /// The management API's listener (`[server.admin]`).
    pub admin: crate::AdminSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listeners: Vec::new(),
            proxy_protocol: false,
            http3: false,
            data_dir: PathBuf::from("ferry-data"),
            database_url: None,
            tls_cert: None,
            tls_key: None,
            drain_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::ZERO,
            http: HttpSettings::default(),
            relay: RelaySettings::default(),
            tunnel: TunnelSettings::default(),
            auth: AuthSettings::default(),
            admin: crate::AdminSettings::default(),
        }
    }
}

/// The name of the main public listener (`server.listen`) in a route's `listeners`.
pub const MAIN_LISTENER: &str = "main";

impl ServerConfig {
    /// The names routes may give in `listeners`: [`MAIN_LISTENER`] (`server.listen`), then each named
    /// `[[server.listeners]]` entry's, in order.
    pub fn listener_names(&self) -> Vec<&str> {
        std::iter::once(MAIN_LISTENER)
            .chain(self.listeners.iter().filter_map(|l| l.name.as_deref()))
            .collect()
    }

    /// The checks of `[[server.listeners]]`' names: each a name ([`check_listener_name`]), none twice and none
    /// [`MAIN_LISTENER`]. `(key, message)` naming the entry's `name`.
    pub fn check_listener_names(&self) -> Result<(), (String, String)> {
        for (i, l) in self.listeners.iter().enumerate() {
            let Some(name) = &l.name else { continue };
            let key = format!("server.listeners[{i}].name");
            check_listener_name(name).map_err(|m| (key.clone(), m))?;
            if name == MAIN_LISTENER {
                return Err((
                    key,
                    format!("{name:?} is the name of server.listen (the main listener)"),
                ));
            }
            if let Some(j) = self.listeners[..i]
                .iter()
                .position(|o| o.name.as_deref() == Some(name))
            {
                return Err((
                    key,
                    format!("{name:?} is already the name of server.listeners[{j}]"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` may name a listener: 1 to 64 characters, letters, digits, `-`, `_` and `.`.
pub fn check_listener_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "{name:?} is not a listener name (1 to 64 letters, digits, -, _ or .)"
        )),
    }
}

/// One more public listener (`[[server.listeners]]`).
///
/// A TLS listener (`tls = true`) serves `server.tls_cert`/`tls_key` and `[gateway.tls]` unless it sets TLS keys of
/// its own (`cert`/`key`, `certificates`, `client_auth`, `client_ca`, `client_crl`, `verify_depth`, `protocols`,
/// `cipher_suites`, `ocsp_response`): each one set replaces `[gateway.tls]`'s (or `server.tls_cert`/`tls_key`'s)
/// for this listener only, and the keys left unset are `[gateway.tls]`'s, as nginx's `ssl_*` directives of a
/// `server` block override those of `http`. [`ExtraListener::tls_settings`] merges them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// Its name, for routes limited to some listeners (`listeners = ["internal"]` on a route, as nginx's `server`
    /// blocks of one `listen`). Unique; `main` is `server.listen`'s. Unset: no route can be limited to it (it
    /// serves the routes without `listeners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its address: `0.0.0.0:80`, `[::]:443`.
    pub listen: SocketAddr,
    /// Speak TLS with the certificates of `tls_cert`/`tls_key` and `[gateway.tls]`, or the listener's own TLS
    /// keys below. Default false.
    #[serde(default)]
    pub tls: bool,
    /// Answer every request with `308 Permanent Redirect` to the same host and path over `https://` (nginx's
    /// `return 308 https://$host$request_uri`). Default false.
    #[serde(default)]
    pub redirect_to_https: bool,
    /// The port of that `https://` URL (left out when 443). Default 443.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// Connections start with a PROXY protocol header naming the client (as `server.proxy_protocol`). Default
    /// false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With `tls`: serve HTTP/3 too, on the same port over UDP, and tell clients so in an `Alt-Svc` header.
    /// Needs TLSv1.3 among the listener's protocols. Set when the listener is added: a reload that changes it
    /// is refused (restart to change it). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http3: bool,
    /// With `tls`: this listener's default certificate (PEM chain), instead of `server.tls_cert` (nginx's
    /// `ssl_certificate` in the listener's `server`). Needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// With `cert`: its PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// With `cert`: a DER OCSP response stapled to it (unset: none; `[gateway.tls].ocsp_response` belongs to
    /// `server.tls_cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_response: Option<PathBuf>,
    /// With `tls`: the certificates by SNI name of this listener, instead of `[[gateway.tls.certificates]]`
    /// (`[]`: none, only the default certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<crate::SniCertificate>>,
    /// With `tls`: client certificates on this listener (`off`, `optional`, `optional_no_ca`, `required`),
    /// instead of `[gateway.tls].client_auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<crate::ClientAuth>,
    /// With `tls`: the PEM CA bundle this listener verifies client certificates against, instead of
    /// `[gateway.tls].client_ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With `tls`: PEM CRLs of this listener, instead of `[gateway.tls].client_crl` (`[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_crl: Option<Vec<PathBuf>>,
    /// With `tls`: the client chain's depth limit of this listener, instead of `[gateway.tls].verify_depth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_depth: Option<u8>,
    /// With `tls`: the TLS versions of this listener, instead of `[gateway.tls].protocols`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// With `tls`: the cipher suites of this listener, instead of `[gateway.tls].cipher_suites`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suites: Option<Vec<String>>,
    /// This listener's cap on its open connections, instead of `server.http.max_connections` (each listener
    /// counts its own connections). At least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// This listener's cap on open connections from one address (0: no cap), instead of
    /// `server.http.max_connections_per_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
}

impl Default for ExtraListener {
    /// A plain listener on `0.0.0.0:0` with every setting at its default.
    fn default() -> Self {
        Self {
            name: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            tls: false,
            redirect_to_https: false,
            https_port: default_https_port(),
            proxy_protocol: false,
            http3: false,
            cert: None,
            key: None,
            ocsp_response: None,
            certificates: None,
            client_auth: None,
            client_ca: None,
            client_crl: None,
            verify_depth: None,
            protocols: None,
            cipher_suites: None,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

impl ExtraListener {
    /// The TLS keys of its own this listener sets, by name, in file order.
    pub fn own_tls_keys(&self) -> Vec<&'static str> {
        [
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("ocsp_response", self.ocsp_response.is_some()),
            ("certificates", self.certificates.is_some()),
            ("client_auth", self.client_auth.is_some()),
            ("client_ca", self.client_ca.is_some()),
            ("client_crl", self.client_crl.is_some()),
            ("verify_depth", self.verify_depth.is_some()),
            ("protocols", self.protocols.is_some()),
            ("cipher_suites", self.cipher_suites.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// Whether this is a TLS listener with settings of its own (then it gets a TLS configuration of its own;
    /// else it shares the main listener's).
    pub fn has_own_tls(&self) -> bool {
        self.tls && !self.own_tls_keys().is_empty()
    }

    /// This listener's own default certificate and key, when it sets them.
    pub fn own_certificate(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }

    /// `[gateway.tls]` with this listener's own keys put over it: what its TLS configuration is built from (the
    /// default certificate aside: [`ExtraListener::own_certificate`], else `server.tls_cert`). With its own
    /// `cert`, `ocsp_response` is the listener's (or none).
    pub fn tls_settings(&self, base: &crate::GatewayTls) -> crate::GatewayTls {
        let mut tls = base.clone();
        if let Some(v) = &self.certificates {
            tls.certificates = v.clone();
        }
        if let Some(v) = self.client_auth {
            tls.client_auth = v;
        }
        if let Some(v) = &self.client_ca {
            tls.client_ca = Some(v.clone());
        }
        if let Some(v) = &self.client_crl {
            tls.client_crl = v.clone();
        }
        if let Some(v) = self.verify_depth {
            tls.verify_depth = Some(v);
        }
        if let Some(v) = &self.protocols {
            tls.protocols = v.clone();
        }
        if let Some(v) = &self.cipher_suites {
            tls.cipher_suites = v.clone();
        }
        if self.cert.is_some() || self.ocsp_response.is_some() {
            tls.ocsp_response = self.ocsp_response.clone();
        }
        tls
    }

    /// The checks of one entry that need no file: `(key, message)` naming the key under
    /// `server.listeners[index]`. `base` is `[gateway.tls]`; `server_tls` whether `server.tls_cert` is set.
    pub fn validate(
        &self,
        index: usize,
        base: &crate::GatewayTls,
        server_tls: bool,
    ) -> Result<(), (String, String)> {
        let key = |field: &str| format!("server.listeners[{index}].{field}");
        if !self.tls {
            if let Some(first) = self.own_tls_keys().first() {
                return Err((
                    key(first),
                    "is a TLS setting: this listener needs tls = true for it".to_owned(),
                ));
            }
        }
        if self.http3 && !self.tls {
            return Err((
                key("http3"),
                "HTTP/3 is served on TLS listeners only: set tls = true".to_owned(),
            ));
        }
        if self.tls && self.redirect_to_https {
            return Err((
                key("redirect_to_https"),
                "is for plain-HTTP listeners (this one has tls = true)".to_owned(),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            let missing = if self.cert.is_some() { "key" } else { "cert" };
            return Err((
                key(missing),
                "cert and key go together (the listener's own certificate)".to_owned(),
            ));
        }
        if self.ocsp_response.is_some() && self.cert.is_none() {
            return Err((
                key("ocsp_response"),
                "is stapled to the listener's own certificate: set cert and key too (the main certificate's is [gateway.tls].ocsp_response)".to_owned(),
            ));
        }
        if self.tls && !server_tls && self.cert.is_none() {
            return Err((
                key("tls"),
                "needs server.tls_cert and server.tls_key (the certificates every TLS listener serves), or cert and key of its own".to_owned(),
            ));
        }
        if self.verify_depth == Some(0) {
            return Err((key("verify_depth"), "must be at least 1".to_owned()));
        }
        if self.max_connections == Some(0) {
            return Err((
                key("max_connections"),
                "must be at least 1 (leave it out for server.http.max_connections)".to_owned(),
            ));
        }
        if self.tls {
            let merged = self.tls_settings(base);
            if merged.client_auth != crate::ClientAuth::Off && merged.client_ca.is_none() {
                let which = if self.client_auth.is_some() {
                    "client_ca"
                } else {
                    "client_auth"
                };
                return Err((
                    key(which),
                    "client certificates need a CA bundle: set client_ca on this listener or in [gateway.tls]".to_owned(),
                ));
            }
            for (j, c) in self.certificates.iter().flatten().enumerate() {
                if c.hosts.is_empty() {
                    return Err((
                        key(&format!("certificates[{j}].hosts")),
                        "names no host".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn default_https_port() -> u16 {
    443
}

/// Limits of the client-facing HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_size: usize,
    /// How long a client may take to send its request head: the first from the connection's start (after TLS),
    /// a later one from its first byte. Then the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An HTTP/1.1 connection waiting for its next request, or an HTTP/2 connection without open streams, is
    /// closed after this (nginx's `keepalive_timeout`).
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Open client connections of the public listener at most; the newest beyond gets 503 and is closed. 0:
    /// half the open-file limit the process got at start.
    pub max_connections: usize,
    /// Open client connections from one address at most (0: no cap); behind a load balancer set 0.
    pub max_connections_per_ip: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            max_header_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 0,
            max_connections_per_ip: 1024,
        }
    }
}

/// How the relay treats requests (the same for every tenant in this release).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// With no connector of the tenant online, how long a request waits for one before 503.
    #[serde(with = "humantime_serde")]
    pub connector_wait: Duration,
    /// The longest a request may wait for its response to start, from arrival; then 504 `request_expired`.
    #[serde(with = "humantime_serde")]
    pub request_expiration: Duration,
    /// Per-tenant cap on requests in flight; beyond it, 429 `tenant_busy` with `Retry-After: 1`. 0: no cap.
    pub max_concurrent_requests: usize,
    /// Largest request body accepted, in bytes; larger gets 413. 0: no limit.
    pub max_body_size: u64,
    /// Keep a log of every relayed request in the store (readable through the management API).
    pub request_log: bool,
    /// How long request log entries are kept.
    #[serde(with = "humantime_serde")]
    pub request_log_retention: Duration,
    /// How long closed connections and per-minute statistics are kept.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
    /// Let `%2F` and `%5C` through in relayed paths (default: refused with 400 `path_escape`).
    pub allow_encoded_slashes: bool,
    /// The `Upgrade` protocols relayed (as an extended CONNECT); a request asking for another is relayed as an
    /// ordinary request without its `Upgrade`. Default `["websocket"]`; `h2c` is never upgraded to.
    pub upgrades: Vec<String>,
    /// The listeners whose `/relay/…` paths reach the relay, by name (`main` is `server.listen`; see
    /// [`ExtraListener::name`]); on the others those paths are left to the gateway's routes (else 404). Empty
    /// (the default): every listener. Resolved at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            connector_wait: Duration::from_secs(5),
            request_expiration: Duration::from_secs(120),
            max_concurrent_requests: 1000,
            max_body_size: 0,
            request_log: false,
            request_log_retention: Duration::from_secs(7 * 24 * 3600),
            history_retention: Duration::from_secs(30 * 24 * 3600),
            allow_encoded_slashes: false,
            upgrades: vec!["websocket".to_owned()],
            listeners: Vec::new(),
        }
    }
}

/// The server side of connector tunnels.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelSettings {
    /// Interval of HTTP/2 PINGs on each tunnel.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A tunnel whose PING is not answered within this is closed.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// The listeners that take connectors' tunnels, by name (`main` is `server.listen`; see
    /// [`ExtraListener::name`]): a port of their own for connectors, say. On the others the tunnel path answers
    /// 404. Empty (the default): every listener. Resolved at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
}

impl Default for TunnelSettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            listeners: Vec::new(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter (`info`, `ferry_relay=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Plain,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientAuth, GatewayTls};

    fn listener(text: &str) -> ExtraListener {
        toml::from_str(&format!("listen = \"127.0.0.1:0\"\n{text}")).expect("parses")
    }

    fn refusal(l: &ExtraListener, base: &GatewayTls, server_tls: bool) -> (String, String) {
        l.validate(2, base, server_tls).expect_err("refused")
    }

    #[test]
    fn own_tls_keys_parse_and_merge_over_gateway_tls() {
        let l = listener(
            r#"
            tls = true
            cert = "/etc/ssl/partner.pem"
            key = "/etc/ssl/partner.key"
            client_auth = "required"
            client_ca = "/etc/ssl/partners-ca.pem"
            client_crl = []
            verify_depth = 2
            protocols = ["TLSv1.3"]
            max_connections = 100
            certificates = [{ hosts = ["b2b.example.com"], cert = "/b.pem", key = "/b.key" }]
            "#,
        );
        assert!(l.has_own_tls());
        assert_eq!(
            l.own_certificate().map(|(c, _)| c.clone()),
            Some(PathBuf::from("/etc/ssl/partner.pem"))
        );
        let base = GatewayTls {
            client_auth: ClientAuth::Optional,
            client_ca: Some("/etc/ssl/staff-ca.pem".into()),
            client_crl: vec!["/etc/ssl/staff.crl".into()],
            cipher_suites: vec!["TLS13_AES_128_GCM_SHA256".into()],
            ocsp_response: Some("/etc/ssl/main.ocsp".into()),
            ..GatewayTls::default()
        };
        let merged = l.tls_settings(&base);
        assert_eq!(merged.client_auth, ClientAuth::Required);
        assert_eq!(
            merged.client_ca,
            Some(PathBuf::from("/etc/ssl/partners-ca.pem"))
        );
        assert!(merged.client_crl.is_empty(), "[] clears the list");
        assert_eq!(merged.verify_depth, Some(2));
        assert_eq!(merged.protocols, vec!["TLSv1.3"]);
        assert_eq!(merged.certificates.len(), 1);
        // unset keys are [gateway.tls]'s; the main certificate's OCSP response is not stapled to another one
        assert_eq!(merged.cipher_suites, base.cipher_suites);
        assert_eq!(merged.reload_interval, base.reload_interval);
        assert_eq!(merged.ocsp_response, None);
        assert_eq!(l.validate(0, &base, true), Ok(()));
        assert_eq!(l.validate(0, &base, false), Ok(()), "its own certificate");

        // a listener without keys of its own is [gateway.tls] as it is
        let shared = listener("tls = true");
        assert!(!shared.has_own_tls());
        assert_eq!(shared.tls_settings(&base), base);
    }

    #[test]
    fn tls_keys_without_tls_are_refused_naming_the_key() {
        let base = GatewayTls::default();
        for (text, key) in [
            ("client_ca = \"/ca.pem\"", "client_ca"),
            ("cert = \"/c.pem\"\nkey = \"/k.pem\"", "cert"),
            ("protocols = [\"TLSv1.3\"]", "protocols"),
            ("certificates = []", "certificates"),
            ("verify_depth = 1", "verify_depth"),
        ] {
            let (path, message) = refusal(&listener(text), &base, true);
            assert_eq!(path, format!("server.listeners[2].{key}"), "{text}");
            assert!(message.contains("tls = true"), "{message}");
        }
        // connection caps are not TLS settings
        assert_eq!(
            listener("max_connections = 5\nmax_connections_per_ip = 0").validate(0, &base, false),
            Ok(())
        );
    }

    #[test]
    fn inconsistent_listener_tls_is_refused_naming_the_key() {
        let base = GatewayTls::default();
        let cases = [
            ("tls = true\ncert = \"/c.pem\"", "key", true),
            ("tls = true\nkey = \"/k.pem\"", "cert", true),
            (
                "tls = true\nocsp_response = \"/o.der\"",
                "ocsp_response",
                true,
            ),
            ("tls = true", "tls", false),
            ("tls = true\nclient_ca = \"/ca.pem\"", "tls", false),
            ("tls = true\nclient_auth = \"required\"", "client_ca", true),
            ("tls = true\nverify_depth = 0", "verify_depth", true),
            ("max_connections = 0", "max_connections", true),
            (
                "tls = true\nredirect_to_https = true",
                "redirect_to_https",
                true,
            ),
            (
                "tls = true\ncertificates = [{ hosts = [], cert = \"/c\", key = \"/k\" }]",
                "certificates[0].hosts",
                true,
            ),
        ];
        for (text, key, server_tls) in cases {
            let (path, _) = refusal(&listener(text), &base, server_tls);
            assert_eq!(path, format!("server.listeners[2].{key}"), "{text}");
        }
        // client_auth inherited from [gateway.tls] with a CA of its own there is fine
        let base = GatewayTls {
            client_auth: ClientAuth::Required,
            client_ca: Some("/ca.pem".into()),
            ..GatewayTls::default()
        };
        assert_eq!(
            listener("tls = true\nverify_depth = 1").validate(0, &base, true),
            Ok(())
        );
    }

    #[test]
    fn unknown_listener_keys_are_refused() {
        let err =
            toml::from_str::<ExtraListener>("listen = \"127.0.0.1:0\"\nssl_certificate = \"/c\"")
                .expect_err("unknown key");
        assert!(err.to_string().contains("ssl_certificate"), "{err}");
        let err = toml::from_str::<ExtraListener>(
            "listen = \"127.0.0.1:0\"\ntls = true\ncertificates = [{ hosts = [\"a\"], cert = \"/c\", key = \"/k\", ca = \"/x\" }]",
        )
        .expect_err("unknown key");
        assert!(err.to_string().contains("ca"), "{err}");
    }

    #[test]
    fn a_plain_listener_prints_without_its_unset_keys() {
        let text = toml::to_string(&listener("")).expect("prints");
        assert!(!text.contains("client_ca"), "{text}");
        let back: ExtraListener = toml::from_str(&text).expect("reads back");
        assert_eq!(back, listener(""));
    }
}
