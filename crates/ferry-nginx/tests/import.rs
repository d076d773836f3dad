//! The importer on representative nginx configurations (tests/fixtures, each saying at its top what it stands
//! for): the key parts of each translation, its report, and that every output is a configuration Ferry accepts.

use ferry_config::{Balance, ClientAuth, Config, RouteConfig};
use ferry_nginx::{import_file, to_toml, Imported};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn import(name: &str) -> Imported {
    import_file(&fixture(name)).expect("the fixture parses")
}

/// The report as `file:line directive [kind]`, file names without their directory.
fn report(i: &Imported) -> Vec<String> {
    i.report
        .notes
        .iter()
        .map(|n| {
            let file =
                n.at.file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
            format!("{file}:{} {} [{}]", n.at.line, n.directive, n.kind.as_str())
        })
        .collect()
}

const FIXTURES: &[&str] = &[
    "django.conf",
    "ingress.conf",
    "chat.conf",
    "grpc.conf",
    "central.conf",
    "spa.conf",
];

fn route<'c>(c: &'c Config, name: &str) -> &'c RouteConfig {
    c.gateway
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

/// The output of every fixture is a configuration Ferry loads (`ferry config check`'s validation), reads back
/// as the same configuration, and whose gateway section compiles (the gateway's own check at start; error pages
/// left out, as their files live on the nginx host).
#[test]
fn every_fixture_translates_to_a_configuration_ferry_accepts() {
    for name in FIXTURES {
        let i = import(name);
        let text = to_toml(&i.config, name).expect("serialises");
        let loaded =
            ferry_config::load_text(&text, name).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(
            loaded.gateway, i.config.gateway,
            "{name}: read back the same"
        );
        assert_eq!(loaded.server.listeners, i.config.server.listeners, "{name}");
        assert_eq!(loaded.server.listen, i.config.server.listen, "{name}");
        assert_eq!(loaded.server.tls_cert, i.config.server.tls_cert, "{name}");
        let mut gateway = loaded.gateway.clone();
        gateway
            .routes
            .iter_mut()
            .for_each(|r| r.error_pages.clear());
        ferry_edge::Gateway::validate(&gateway).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert!(!i.config.gateway.routes.is_empty(), "{name}: some routes");
    }
}

#[test]
fn django_behind_nginx() {
    let i = import("django.conf");
    let c = &i.config;
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:443");
    let listeners: Vec<(String, bool, bool)> = c
        .server
        .listeners
        .iter()
        .map(|l| (l.listen.to_string(), l.tls, l.redirect_to_https))
        .collect();
    assert_eq!(
        listeners,
        [
            ("0.0.0.0:80".into(), false, true),
            ("[::]:80".into(), false, true),
            ("[::]:443".into(), true, false),
        ]
    );
    assert_eq!(
        c.server.tls_cert.as_deref(),
        Some(std::path::Path::new(
            "/etc/letsencrypt/live/shop.example.com/fullchain.pem"
        ))
    );
    assert_eq!(c.gateway.routes.len(), 1, "{:?}", c.gateway.routes);
    let app = route(c, "shop.example.com/");
    assert_eq!(app.hosts, ["shop.example.com", "www.shop.example.com"]);
    assert_eq!(app.upstream.as_deref(), Some("django"));
    assert_eq!(app.upstream_host.as_deref(), Some("$host"));
    assert_eq!(app.request_headers.set["X-Real-IP"], "$remote_addr");
    assert_eq!(app.max_body_size, Some(20 * 1024 * 1024));
    assert_eq!(
        app.hsts.as_deref(),
        Some("max-age=63072000; includeSubDomains")
    );
    assert_eq!(
        app.error_pages["503"],
        PathBuf::from("/usr/share/nginx/html/50x.html")
    );
    let pool = &c.gateway.upstreams["django"];
    assert_eq!(pool.servers.len(), 2);
    assert_eq!((pool.max_fails, pool.fail_timeout), (2, secs(30)));
    assert_eq!(
        (pool.header_timeout, pool.idle_timeout),
        (secs(120), secs(120))
    );
    assert_eq!(c.gateway.access_log, ferry_config::AccessLog::Combined);
    assert_eq!(
        report(&i),
        [
            "django.conf:5 user [not needed]",
            "django.conf:6 worker_processes [not needed]",
            "django.conf:7 pid [not needed]",
            "django.conf:10 worker_connections [not needed]",
            "django.conf:14 sendfile [not needed]",
            "django.conf:15 tcp_nopush [not needed]",
            "django.conf:16 types_hash_max_size [not needed]",
            "django.conf:17 server_tokens [not needed]",
            "django.conf:18 default_type [not needed]",
            "django.conf:21 error_log [not translated]",
            "django.conf:23 gzip [not translated]",
            "django.conf:24 gzip_types [not translated]",
            "django.conf:29 keepalive [not needed]",
            "django.conf:50 location /static/ [not translated]",
            "django.conf:51 alias [not translated]",
            "django.conf:52 expires [not translated]",
            "django.conf:55 location /media/ [not translated]",
            "django.conf:56 alias [not translated]",
            "django.conf:63 proxy_set_header X-Forwarded-For [not needed]",
            "django.conf:64 proxy_set_header X-Forwarded-Proto [not needed]",
            "django.conf:65 proxy_redirect [not needed]",
            "django.conf:70 location = [not needed]",
            "ssl-params.conf:2 ssl_protocols [not needed]",
            "ssl-params.conf:3 ssl_prefer_server_ciphers [not needed]",
            "ssl-params.conf:4 ssl_ciphers [not translated]",
            "ssl-params.conf:5 ssl_session_cache [not needed]",
            "ssl-params.conf:6 ssl_session_timeout [not needed]",
            "ssl-params.conf:7 ssl_stapling [not translated]",
        ]
    );
}
