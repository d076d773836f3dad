//! A read-only picture of the gateway in force: its routes (what each matches and does) and its upstream pools
//! with each server's health and counters, taken from the table at the moment of the call. The management API
//! shows it (through a small trait of `ferry-admin` that the app implements with [`crate::Gateway`]); nothing here
//! changes the gateway.

use crate::gateway::Gateway;
use crate::pool::{Pool, Protocol};
use crate::route::{Action, Route};
use std::time::Instant;

/// How a route's path matches (`path`, `path_exact` or `path_regex`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathKind {
    /// On segment boundaries; `/` matches everything.
    #[default]
    Prefix,
    Exact,
    Regex,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Prefix => "prefix",
            PathKind::Exact => "exact",
            PathKind::Regex => "regex",
        }
    }
}

/// One route as configured, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSnapshot {
    pub name: String,
    /// Empty: any host.
    pub hosts: Vec<String>,
    pub path_kind: PathKind,
    /// The prefix, exact path or regular expression.
    pub path: String,
    /// Empty: any method.
    pub methods: Vec<String>,
    /// `upstream`, `relay`, `redirect` or `respond`.
    pub action: &'static str,
    /// The upstream's name, `tenant/target`, the redirect's location, or the fixed response's status.
    pub target: String,
}

/// How a server stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHealth {
    /// Takes requests.
    Live,
    /// Out after `max_fails` transport failures in a row, until `fail_timeout` passes.
    Ejected,
    /// Failing its active health checks.
    Unhealthy,
}

impl ServerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerHealth::Live => "live",
            ServerHealth::Ejected => "ejected",
            ServerHealth::Unhealthy => "unhealthy",
        }
    }
}

/// One server of a pool with its live counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// `scheme://host:port`.
    pub url: String,
    pub weight: u32,
    pub backup: bool,
    /// `None`: no limit.
    pub max_conns: Option<usize>,
    pub health: ServerHealth,
    pub in_flight: usize,
    /// Requests sent (each try counts) and transport failures since the pool was made.
    pub requests: u64,
    pub failures: u64,
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub name: String,
    /// `http`, `https` or `h2c`.
    pub protocol: &'static str,
    /// Whether active health checks run (otherwise passive ejection alone judges the servers).
    pub health_checks: bool,
    pub servers: Vec<ServerSnapshot>,
}

/// The gateway's routes in file order and its pools by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySnapshot {
    pub routes: Vec<RouteSnapshot>,
    pub upstreams: Vec<PoolSnapshot>,
}

impl Gateway {
    /// The routes and pools in force now, with each server's health and counters.
    pub fn snapshot(&self) -> GatewaySnapshot {
        let table = self.current();
        let routes = table.routes.iter().map(route).collect();
        let mut upstreams: Vec<PoolSnapshot> = table.pools.values().map(|(_, p)| pool(p)).collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        GatewaySnapshot { routes, upstreams }
    }
}

fn route(r: &Route) -> RouteSnapshot {
    let (action, target) = match &r.action {
        Action::Upstream(name) => ("upstream", name.clone()),
        Action::Relay { tenant, target } => ("relay", format!("{tenant}/{target}")),
        Action::Redirect { to, status, .. } => ("redirect", format!("{} {to}", status.as_u16())),
        Action::Respond { status, .. } => ("respond", status.as_u16().to_string()),
        Action::Static(dir) => ("static", dir.display().to_string()),
    };
    let summary = &r.extra.summary;
    RouteSnapshot {
        name: r.name.clone(),
        hosts: summary.hosts.clone(),
        path_kind: summary.path_kind,
        path: r.path().to_owned(),
        methods: summary.methods.clone(),
        action,
        target,
    }
}

fn pool(p: &Pool) -> PoolSnapshot {
    let now = Instant::now();
    PoolSnapshot {
        name: p.name.clone(),
        protocol: match p.protocol {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::H2c => "h2c",
        },
        health_checks: p.health.is_some(),
        servers: p
            .servers()
            .iter()
            .map(|s| ServerSnapshot {
                url: format!("{}://{}", s.scheme, s.authority),
                weight: s.weight,
                backup: s.backup,
                max_conns: s.max_conns(),
                health: if !s.is_healthy() {
                    ServerHealth::Unhealthy
                } else if s.is_ejected(now) {
                    ServerHealth::Ejected
                } else {
                    ServerHealth::Live
                },
                in_flight: s.inflight(),
                requests: s.requests(),
                failures: s.failures(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::RelayFuture;
    use ferry_config::{GatewayConfig, RouteConfig, UpstreamConfig, UpstreamServer};
    use ferry_http::RequestBody;
    use http::Request;
    use std::sync::Arc;

    struct NoRelay;
    impl crate::RelayBackend for NoRelay {
        fn relay(&self, _: &str, _: &str, _: Request<RequestBody>) -> RelayFuture {
            Box::pin(async { http::Response::new(ferry_http::empty()) })
        }
    }

    #[tokio::test]
    async fn snapshot_shows_routes_in_order_and_pools_with_their_servers() {
        let config = GatewayConfig {
            routes: vec![
                RouteConfig {
                    name: Some("shop".into()),
                    hosts: vec!["shop.example.com".into()],
                    path: Some("/cart".into()),
                    methods: vec!["get".into()],
                    upstream: Some("web".into()),
                    ..RouteConfig::default()
                },
                RouteConfig {
                    path_exact: Some("/login".into()),
                    relay: Some("acme/app".into()),
                    ..RouteConfig::default()
                },
            ],
            upstreams: [(
                "web".to_owned(),
                UpstreamConfig {
                    servers: vec![
                        UpstreamServer {
                            url: "http://127.0.0.1:9".into(),
                            weight: 1,
                            backup: false,
                            max_conns: None,
                        },
                        UpstreamServer {
                            url: "http://127.0.0.1:10".into(),
                            weight: 1,
                            backup: true,
                            max_conns: Some(7),
                        },
                    ],
                    ..UpstreamConfig::default()
                },
            )]
            .into_iter()
            .collect(),
            ..GatewayConfig::default()
        };
        let gateway = Gateway::new(&config, Arc::new(NoRelay)).expect("gateway");
        let s = gateway.snapshot();
        assert_eq!(s.routes.len(), 2);
        let shop = &s.routes[0];
        assert_eq!(shop.name, "shop");
        assert_eq!(shop.hosts, ["shop.example.com"]);
        assert_eq!(
            (shop.path_kind, shop.path.as_str()),
            (PathKind::Prefix, "/cart")
        );
        assert_eq!(shop.methods, ["GET"]);
        assert_eq!((shop.action, shop.target.as_str()), ("upstream", "web"));
        let login = &s.routes[1];
        assert_eq!(login.name, "route-1");
        assert_eq!(
            (login.path_kind, login.path.as_str()),
            (PathKind::Exact, "/login")
        );
        assert_eq!((login.action, login.target.as_str()), ("relay", "acme/app"));
        assert_eq!(s.upstreams.len(), 1);
        let web = &s.upstreams[0];
        assert_eq!(
            (web.name.as_str(), web.protocol, web.health_checks),
            ("web", "http", false)
        );
        assert_eq!(web.servers.len(), 2);
        assert_eq!(web.servers[0].url, "http://127.0.0.1:9");
        assert_eq!(web.servers[0].health, ServerHealth::Live);
        assert_eq!(
            (web.servers[0].backup, web.servers[0].max_conns),
            (false, None)
        );
        assert_eq!(
            (web.servers[1].backup, web.servers[1].max_conns),
            (true, Some(7))
        );
        assert_eq!((web.servers[1].requests, web.servers[1].failures), (0, 0));
    }
}
