//! The importer on representative nginx configurations (tests/fixtures, each saying at its top what it stands
//! for): the key parts of each translation, its report, and that every output is a configuration Ferry accepts.

use ferry_config::{AccessLog, Balance, ClientAuth, Config, RouteConfig, StickyCookieConfig};
use ferry_nginx::{import_file, to_toml, without_host_files, Imported};
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
    "listeners.conf",
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
/// as the same configuration, and whose gateway section compiles (the gateway's own check at start; the files and
/// directories it names left out, as they live on the nginx host).
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
        let gateway = without_host_files(&loaded.gateway);
        let names = ferry_edge::ListenerNames::of_config(&loaded.server);
        ferry_edge::Gateway::validate_on(&gateway, &names)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
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
    assert_eq!(c.gateway.routes.len(), 3, "{:?}", c.gateway.routes);
    // `alias` in a prefix location: the files under the prefix, the prefix stripped
    for (name, dir) in [
        ("shop.example.com/static/", "/srv/shop/staticfiles"),
        ("shop.example.com/media/", "/srv/shop/media"),
    ] {
        let files = route(c, name);
        assert_eq!(files.static_dir, Some(PathBuf::from(dir)), "{name}");
        assert!(files.strip_prefix && files.compress, "{name}");
        assert!(files.upstream.is_none());
    }
    // Mozilla's generator's two suites, after the TLS 1.3 suites OpenSSL keeps under nginx
    assert_eq!(
        c.gateway.tls.cipher_suites,
        [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS13_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ]
    );
    assert!(c.gateway.tls.protocols.is_empty(), "both: Ferry's default");
    let app = route(c, "shop.example.com/");
    assert!(app.compress, "gzip on in http");
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
    assert_eq!(c.gateway.access_log, AccessLog::Combined);
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
            "django.conf:29 keepalive [not needed]",
            "django.conf:52 expires [not translated]",
            "django.conf:63 proxy_set_header X-Forwarded-For [not needed]",
            "django.conf:64 proxy_set_header X-Forwarded-Proto [not needed]",
            "django.conf:65 proxy_redirect [not needed]",
            "django.conf:70 location = /50x.html [not needed]",
            "ssl-params.conf:2 ssl_protocols [not needed]",
            "ssl-params.conf:3 ssl_prefer_server_ciphers [not needed]",
            "ssl-params.conf:5 ssl_session_cache [not needed]",
            "ssl-params.conf:6 ssl_session_timeout [not needed]",
        ]
    );
    // ssl_stapling on without a file: Ferry fetches the responses
    assert!(c.gateway.tls.ocsp_stapling);
}

#[test]
fn kubernetes_ingress_like_multi_host_tls() {
    let i = import("ingress.conf");
    let c = &i.config;
    // the default_server's certificate is the default; the other hosts get theirs by SNI
    assert_eq!(
        c.server.tls_cert.as_deref(),
        Some(std::path::Path::new("/etc/ingress/default-api/tls.crt"))
    );
    let sni: Vec<(Vec<String>, String)> = c
        .gateway
        .tls
        .certificates
        .iter()
        .map(|s| (s.hosts.clone(), s.cert.display().to_string()))
        .collect();
    assert_eq!(
        sni,
        [
            (
                vec!["www.example.com".to_owned(), "example.com".to_owned()],
                "/etc/ingress/default-web/tls.crt".to_owned()
            ),
            (
                vec![
                    "apps.example.com".to_owned(),
                    "*.apps.example.com".to_owned()
                ],
                "/etc/ingress/apps/tls.crt".to_owned()
            ),
        ]
    );
    assert!(c
        .server
        .listeners
        .iter()
        .any(|l| l.listen.to_string() == "[::]:443" && l.tls));
    assert_eq!(
        c.server
            .listeners
            .iter()
            .filter(|l| l.redirect_to_https)
            .count(),
        2
    );
    let api = &c.gateway.upstreams["default-api-8080"];
    assert_eq!(api.balance, Balance::LeastRequests);
    assert_eq!(api.servers[0].weight, 3);
    assert_eq!(api.servers[0].max_conns, Some(100));
    assert!(api.servers[2].backup);
    assert_eq!(
        (api.connect_timeout, api.header_timeout),
        (secs(5), secs(60))
    );
    let web = &c.gateway.upstreams["default-web-80"];
    assert_eq!(
        (web.balance, web.hash_on.as_deref()),
        (Balance::Hash, Some("client_ip"))
    );
    assert_eq!(web.servers.len(), 2, "the server marked down is left out");
    let apps = &c.gateway.upstreams["tenants-apps-80"];
    assert_eq!(apps.hash_on.as_deref(), Some("header:x-tenant"));
    let v1 = route(c, "api.example.com/v1/");
    assert_eq!(v1.path.as_deref(), Some("/v1/"));
    assert_eq!(v1.replace_prefix.as_deref(), Some("/api/v1/"));
    assert_eq!(
        route(c, "apps.example.com/").upstream_host.as_deref(),
        Some("upstream")
    );
    assert_eq!(c.gateway.access_log, AccessLog::Custom);
    assert!(c
        .gateway
        .access_log_format
        .as_deref()
        .is_some_and(|f| f.ends_with("$upstream_addr $upstream_response_time $request_id")));
    assert_eq!(
        report(&i),
        [
            "ingress.conf:18 server 10.244.2.11:80 [approximated]",
            "ingress.conf:37 http2 [not needed]",
            "ingress.conf:44 proxy_set_header X-Request-ID [not translated]",
            "ingress.conf:45 proxy_set_header X-Forwarded-Host [not needed]",
            "ingress.conf:48 proxy_send_timeout [approximated]",
            "ingress.conf:49 proxy_next_upstream [not needed]",
            "ingress.conf:50 proxy_next_upstream_tries [not translated]",
            "ingress.conf:79 proxy_next_upstream [approximated]",
        ]
    );
    let why = &i.report.notes[2].why;
    assert!(why.contains("$req_id"), "{why}");
}

#[test]
fn websocket_and_sse_chat() {
    let i = import("chat.conf");
    let c = &i.config;
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert!(c.server.listeners.is_empty() && c.server.tls_cert.is_none());
    let chat = &c.gateway.upstreams["chat"];
    assert_eq!(chat.balance, Balance::Hash);
    assert_eq!(chat.servers[0].url, "http://chat-1.internal:3000");
    assert_eq!(
        (chat.header_timeout, chat.idle_timeout),
        (secs(3600), secs(3600))
    );
    let ws = route(c, "chat.example.com/socket.io/");
    assert!(
        ws.request_headers.is_empty(),
        "upgrade headers are Ferry's own"
    );
    assert_eq!(ws.upstream_host.as_deref(), Some("$host"));
    let health = route(c, "chat.example.com=/health");
    assert_eq!(health.path_exact.as_deref(), Some("/health"));
    assert_eq!(
        health.respond.as_ref().map(|r| (r.status, r.body.as_str())),
        Some((200, "ok"))
    );
    assert_eq!(
        route(c, "chat.example.com/").upstream.as_deref(),
        Some("127.0.0.1-5000")
    );
    assert_eq!(
        report(&i),
        [
            "chat.conf:5 map $http_upgrade [not needed]",
            "chat.conf:22 proxy_http_version [not needed]",
            "chat.conf:23 proxy_set_header Upgrade [not needed]",
            "chat.conf:24 proxy_set_header Connection [not needed]",
            "chat.conf:31 proxy_set_header Connection [not needed]",
            "chat.conf:32 proxy_http_version [not needed]",
            "chat.conf:33 proxy_buffering [not needed]",
            "chat.conf:34 proxy_cache [not translated]",
            "chat.conf:35 chunked_transfer_encoding [not needed]",
        ]
    );
    assert!(i.report.notes[2].why.contains("WebSocket"));
}

#[test]
fn grpc_front() {
    let i = import("grpc.conf");
    let c = &i.config;
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:1443");
    assert!(c.server.tls_cert.is_some());
    let rg = &c.gateway.upstreams["routeguide"];
    assert_eq!(rg.servers[1].url, "h2c://10.0.0.11:10001");
    assert_eq!(rg.header_timeout, secs(300));
    assert_eq!(
        c.gateway.upstreams["helloworld"].servers[0].url,
        "https://10.0.0.20:50051"
    );
    assert_eq!(
        c.gateway.upstreams["10.0.0.30-50051"].servers[0].url,
        "h2c://10.0.0.30:50051"
    );
    let r = route(c, "*/routeguide.RouteGuide/");
    assert!(r.hosts.is_empty());
    assert_eq!(r.request_headers.set["X-Real-IP"], "$remote_addr");
    assert_eq!(
        c.gateway.routes.len(),
        3,
        "the internal error location is no route"
    );
    assert_eq!(
        report(&i),
        [
            "grpc.conf:22 error_page [not translated]",
            "grpc.conf:31 location = /error502grpc [not translated]",
        ]
    );
}

#[test]
fn central_nginx_with_client_certificates() {
    let i = import("central.conf");
    let c = &i.config;
    assert_eq!(c.gateway.tls.client_auth, ClientAuth::Optional);
    assert_eq!(
        c.gateway.tls.client_ca.as_deref(),
        Some(std::path::Path::new("/etc/nginx/clients-ca.pem"))
    );
    let tls = &c.gateway.tls;
    assert_eq!(
        tls.client_crl,
        [PathBuf::from("/etc/nginx/clients-ca.crl.pem")]
    );
    assert_eq!(tls.verify_depth, Some(2));
    assert!(tls.protocols.is_empty());
    // Mozilla's intermediate list without its two DHE suites, after the TLS 1.3 ones
    assert_eq!(tls.cipher_suites.len(), 3 + 6, "{:?}", tls.cipher_suites);
    assert_eq!(
        tls.cipher_suites[3],
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    );
    // the portal's certificate is the default one, stapled from its file
    assert_eq!(
        tls.ocsp_response,
        Some(PathBuf::from("/etc/nginx/portal.ocsp.der"))
    );
    // the admin server requires certificates of its own CA: its SNI entry says so, the listener stays optional
    assert_eq!(tls.certificates.len(), 1);
    let admin = &tls.certificates[0];
    assert_eq!(admin.hosts, ["admin.corp.example"]);
    assert_eq!(admin.client_auth, Some(ClientAuth::Required));
    assert_eq!(
        admin.client_ca,
        Some(PathBuf::from("/etc/nginx/staff-ca.pem"))
    );
    assert_eq!(admin.ocsp_response, None, "stapling on without a file");
    assert!(tls.ocsp_stapling, "its responses are fetched");
    assert!(c.server.listeners.iter().all(|l| l.redirect_to_https));
    assert!(!route(c, "admin.corp.example/").require_client_cert);
    assert!(!route(c, "portal.corp.example/").require_client_cert);
    // mutual TLS towards billing, with buffered bodies under nginx's 8m limit
    let billing = route(c, "portal.corp.example/billing/");
    assert!(billing.buffer_request_body);
    assert_eq!(billing.max_body_size, Some(8 * 1024 * 1024));
    let pool = &c.gateway.upstreams["billing.internal-8443"];
    assert_eq!(pool.servers[0].url, "https://billing.internal:8443");
    assert_eq!(
        (
            pool.client_cert.as_deref(),
            pool.client_key.as_deref(),
            pool.ca_file.as_deref()
        ),
        (
            Some(std::path::Path::new("/etc/nginx/gateway-client.pem")),
            Some(std::path::Path::new("/etc/nginx/gateway-client.key")),
            Some(std::path::Path::new("/etc/nginx/internal-ca.pem"))
        )
    );
    // gzip in one location only
    assert!(route(c, "portal.corp.example/api/").compress);
    assert!(!route(c, "portal.corp.example/").compress);
    // the `if ($ssl_client_verify != SUCCESS) { return 403; }` check
    let reports = route(c, "portal.corp.example/reports/");
    assert!(reports.require_client_cert);
    assert_eq!(
        reports.replace_prefix.as_deref(),
        Some("/internal/reports/")
    );
    let portal = route(c, "portal.corp.example/");
    assert_eq!(portal.client_cert_header_names["serial"], "X-Client-Serial");
    assert_eq!(portal.request_headers.set["X-Real-IP"], "$remote_addr");
    assert_eq!(portal.response_headers.add["X-Frame-Options"], "DENY");
    let api = route(c, "portal.corp.example/api/");
    let limit = api.rate_limit.as_ref().expect("limit_req");
    assert_eq!(
        (limit.requests, limit.burst, limit.by.as_str()),
        (20, Some(60), "client_ip")
    );
    assert_eq!(
        route(c, "portal.corp.example/grpc.health.v1.Health/")
            .upstream
            .as_deref(),
        Some("10.1.3.10-50051")
    );
    let ui = &c.gateway.upstreams["ui"];
    let Some(StickyCookieConfig::Full(sticky)) = &ui.sticky_cookie else {
        panic!("sticky cookie: {:?}", ui.sticky_cookie)
    };
    assert_eq!(sticky.name, "srv_id");
    assert_eq!(sticky.max_age, Some(secs(3600)));
    assert_eq!((sticky.secure.as_str(), sticky.http_only), ("always", true));
    assert_eq!(c.gateway.upstreams["events"].idle_timeout, secs(3600));
    assert_eq!(c.gateway.access_log, AccessLog::Custom);
    assert!(c
        .gateway
        .access_log_format
        .as_deref()
        .is_some_and(|f| f.contains("\"$ssl_client_s_dn\"")));
    assert_eq!(
        report(&i),
        [
            "central.conf:29 ssl_verify_client optional [approximated]",
            "central.conf:32 ssl_protocols [not needed]",
            "central.conf:33 ssl_ciphers [approximated]",
            "central.conf:51 proxy_set_header X-SSL-Client-Verify [not needed]",
            "central.conf:52 proxy_set_header X-SSL-Client-S-DN [not needed]",
            "central.conf:62 limit_req [approximated]",
            "central.conf:64 gzip_min_length [approximated]",
            "central.conf:76 proxy_http_version [not needed]",
            "central.conf:77 proxy_set_header Upgrade [not needed]",
            "central.conf:78 proxy_set_header Connection [not needed]",
            "central.conf:102 proxy_set_header X-SSL-Client-S-DN [not needed]",
        ]
    );
}

#[test]
fn single_page_app_and_api_with_rewrites() {
    let i = import("spa.conf");
    let c = &i.config;
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:80");
    // `rewrite ^/api/(.*)$ /$1 break` in `location /api/`: a regex route with the rewrite beside the prefix one
    let api_re = route(c, "app.example.org~^/api/(.*)$");
    assert_eq!(api_re.path_regex.as_deref(), Some("^/api/(.*)$"));
    assert_eq!(api_re.rewrite.as_deref(), Some("/$1"));
    assert_eq!(api_re.upstream.as_deref(), Some("127.0.0.1-4000"));
    assert!(route(c, "app.example.org/api/").rewrite.is_none());
    assert_eq!(
        route(c, "app.example.org/v1/").replace_prefix.as_deref(),
        Some("/v2/")
    );
    let avatar = route(c, r"app.example.org~^/users/(\d+)/avatar$");
    assert_eq!(avatar.rewrite.as_deref(), Some("/avatars/$1.png"));
    assert_eq!(
        route(c, "app.example.org=/login").path_exact.as_deref(),
        Some("/login")
    );
    let docs = route(c, "app.example.org=/docs")
        .redirect
        .as_ref()
        .expect("redirect");
    assert_eq!(
        (docs.to.as_str(), docs.status, docs.keep_path),
        ("https://docs.example.org/", 301, false)
    );
    let about = route(c, "app.example.org~^/about$")
        .redirect
        .as_ref()
        .expect("redirect");
    assert_eq!((about.to.as_str(), about.status), ("/company", 301));
    let gone = route(c, "app.example.org/legacy/")
        .respond
        .as_ref()
        .expect("respond");
    assert_eq!((gone.status, gone.body.as_str()), (410, "gone\n"));
    // the SPA's files: served from the server's root, paths that name no file answered with its index.html
    // (`try_files $uri $uri/ /index.html`), as are the assets of the regex location and of `try_files $uri =404`
    // (without a fallback); compressed for gzip_types, which always has text/html
    assert_eq!(
        route(c, "app.example.org/").static_fallback.as_deref(),
        Some("index.html")
    );
    assert_eq!(route(c, "app.example.org/assets/").static_fallback, None);
    assert_eq!(
        route(c, "app.example.org/").compress_types,
        [
            "text/html",
            "text/css",
            "application/javascript",
            "image/svg+xml"
        ]
    );
    for name in [
        "app.example.org/",
        r"app.example.org~(?i)\.(?:js|css|png|svg|woff2)$",
        "app.example.org/assets/",
    ] {
        let files = route(c, name);
        assert_eq!(
            files.static_dir,
            Some(PathBuf::from("/var/www/app/dist")),
            "{name}"
        );
        assert!(!files.strip_prefix, "{name}: root keeps the path");
        assert!(files.compress, "{name}");
        assert_eq!(files.response_headers.add["X-Frame-Options"], "SAMEORIGIN");
    }
    // nginx buffers uploads up to 100m, and so does Ferry: up to 512k in memory, a larger one in a file of the
    // directory nginx names (its levels are not needed)
    let upload = route(c, "app.example.org/api/upload");
    assert!(upload.buffer_request_body);
    assert_eq!(upload.max_body_size, Some(100 * 1024 * 1024));
    assert_eq!(c.gateway.body_buffer_memory, Some(512 * 1024));
    assert_eq!(
        c.gateway.body_buffer_dir,
        Some(PathBuf::from("/var/cache/nginx/client_temp"))
    );
    assert!(
        route(c, "app.example.org=/docs").redirect.is_some()
            && !route(c, "app.example.org=/docs").compress,
        "redirects are not compressed"
    );
    let login = route(c, "app.example.org=/login");
    assert!(login.compress, "gzip on in the server");
    assert_eq!(login.response_headers.remove, ["X-Powered-By"]);
    assert_eq!(login.response_headers.add["X-Frame-Options"], "SAMEORIGIN");
    assert_eq!(
        report(&i),
        [
            "spa.conf:11 index [not needed]",
            "spa.conf:16 add_header X-Content-Type-Options [approximated]",
            "spa.conf:19 rewrite [not translated]",
            "spa.conf:20 rewrite [approximated]",
            "spa.conf:26 expires [not translated]",
            "spa.conf:36 proxy_set_header X-User [not translated]",
            "spa.conf:43 client_body_temp_path [approximated]",
            "spa.conf:61 location ^~ /downloads/ [approximated]",
        ]
    );
    let temp = &i.report.notes[6].why;
    assert!(
        temp.contains("must exist") && temp.contains("levels (1 2) are not needed"),
        "{temp}"
    );
}

/// Shapes the fixtures do not cover, written inline.
/// A server block per port: the ACME challenges on the port-80 listener that redirects the rest, the application
/// on 443 and the internal port's routes each limited to their own listeners, named for it.
#[test]
fn server_blocks_of_one_listen_become_routes_of_their_listeners() {
    let i = import("listeners.conf");
    let c = &i.config;
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:443");
    let listeners: Vec<(Option<&str>, String, bool, bool)> = c
        .server
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_deref(),
                l.listen.to_string(),
                l.tls,
                l.redirect_to_https,
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            (Some("http-80"), "0.0.0.0:80".into(), false, true),
            (Some("http-80-v6"), "[::]:80".into(), false, true),
            (Some("https-443"), "[::]:443".into(), true, false),
            (Some("http-8081"), "10.0.0.5:8081".into(), false, false),
        ]
    );
    let on = |name: &str| route(c, name).listeners.clone();
    // the challenges answer on port 80 only, before its redirect
    let acme = route(c, "*/.well-known/acme-challenge/");
    assert_eq!(acme.static_dir, Some(PathBuf::from("/var/www/letsencrypt")));
    assert_eq!(acme.listeners, ["http-80", "http-80-v6"]);
    // the application's server on both 443 addresses: main and the IPv6 one
    assert_eq!(on("example.com/"), ["main", "https-443"]);
    assert_eq!(on("example.com/admin/"), ["main", "https-443"]);
    assert_eq!(
        route(c, "example.com/admin/")
            .respond
            .as_ref()
            .map(|r| r.status),
        Some(404)
    );
    // the internal port's routes exist there only
    for name in ["*/admin/", "*=/status", "*/"] {
        assert_eq!(on(name), ["http-8081"], "{name}");
    }
    assert_eq!(route(c, "*/admin/").upstream.as_deref(), Some("admin"));
    assert_eq!(c.gateway.routes.len(), 6, "{:?}", c.gateway.routes);
    assert!(i.report.notes.is_empty(), "{:?}", i.report.lines());
    // the output names its listeners and their routes
    let text = to_toml(c, "listeners.conf").expect("serialises");
    assert!(
        text.contains("[[server.listeners]]\nlisten = \"10.0.0.5:8081\"\nname = \"http-8081\""),
        "{text}"
    );
    assert!(text.contains("listeners = [\"http-8081\"]"), "{text}");

    // a redirect that shares port 80 with a server that does not redirect: a route per name on port 80, beside
    // that server's routes; the TLS server's routes are limited to 443
    let parse = |text: &str| {
        ferry_nginx::translate(&ferry_nginx::parse_str(text, "t.conf").expect("parses"))
    };
    let i = parse(
        "server { listen 80; server_name a.example www.a.example; return 301 https://$host$request_uri; }\n\
         server { listen 80; server_name b.example; location / { proxy_pass http://b:1; } }\n\
         server { listen 443 ssl; server_name a.example; ssl_certificate /a.pem; ssl_certificate_key /a.key; \
         location / { proxy_pass http://a:1; } }",
    );
    let c = &i.config;
    assert!(i.report.notes.is_empty(), "{:?}", i.report.lines());
    assert!(!c.server.listeners[0].redirect_to_https);
    let redirects: Vec<(&[String], &str, u16, &[String])> = c
        .gateway
        .routes
        .iter()
        .filter_map(|r| {
            let d = r.redirect.as_ref()?;
            Some((&r.hosts[..], d.to.as_str(), d.status, &r.listeners[..]))
        })
        .collect();
    let port_80 = vec!["http-80".to_owned()];
    assert_eq!(
        redirects,
        [
            (
                &["a.example".to_owned()][..],
                "https://a.example",
                301,
                &port_80[..]
            ),
            (
                &["www.a.example".to_owned()][..],
                "https://www.a.example",
                301,
                &port_80[..]
            ),
        ]
    );
    assert_eq!(route(c, "b.example/").listeners, port_80);
    assert_eq!(route(c, "a.example/").listeners, ["main"]);
    // without exact names the redirect still cannot be a route: reported
    let i = parse(
        "server { listen 80; return 301 https://$host$request_uri; }\n\
         server { listen 80; server_name b.example; location / { proxy_pass http://b:1; } }\n\
         server { listen 443 ssl; server_name a.example; ssl_certificate /a.pem; ssl_certificate_key /a.key; \
         location / { proxy_pass http://a:1; } }",
    );
    assert_eq!(i.report.notes.len(), 1, "{:?}", i.report.lines());
    assert!(
        i.report.lines()[0].starts_with("t.conf:1: return: not translated"),
        "{:?}",
        i.report.lines()
    );
}

#[test]
fn smaller_cases() {
    let parse = |text: &str| {
        ferry_nginx::translate(&ferry_nginx::parse_str(text, "t.conf").expect("parses"))
    };
    // a PCRE regex Rust's regex cannot take is reported, not written
    let i =
        parse("http { server { listen 80; location ~ ^/(?!admin) { proxy_pass http://a:1; } } }");
    assert!(i.config.gateway.routes.is_empty());
    assert!(
        i.report.lines()[0].contains("does not compile"),
        "{:?}",
        i.report.lines()
    );
    // upstream weights without a balancing directive: weighted
    let i = parse("http { upstream u { server a:1 weight=5; server b:1; } server { location / { proxy_pass http://u; } } }");
    assert_eq!(i.config.gateway.upstreams["u"].balance, Balance::Weighted);
    assert_eq!(
        i.config.server.listen.to_string(),
        "0.0.0.0:80",
        "nginx's default listen"
    );
    // an https:// proxy_pass to an upstream block also used over http gets a pool of its own
    let i = parse("http { upstream u { server a:1; } server { location / { proxy_pass http://u; } location /s/ { proxy_pass https://u; } } }");
    let pools: Vec<&String> = i.config.gateway.upstreams.keys().collect();
    assert_eq!(pools, ["u", "u-https"]);
    assert_eq!(
        i.config.gateway.upstreams["u-https"].servers[0].url,
        "https://a:1"
    );
    // a redirect to a fixed host per server name, and a variable the redirect cannot hold
    let i = parse("http { server { server_name a.example b.example; location /x { return 302 https://$host/new; } location /y { return 302 https://$http_x; } } }");
    let r: Vec<(Vec<String>, String)> = i
        .config
        .gateway
        .routes
        .iter()
        .map(|r| {
            (
                r.hosts.clone(),
                r.redirect
                    .as_ref()
                    .map(|r| r.to.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        r,
        [
            (
                vec!["a.example".to_owned()],
                "https://a.example/new".to_owned()
            ),
            (
                vec!["b.example".to_owned()],
                "https://b.example/new".to_owned()
            ),
        ]
    );
    assert!(
        i.report.lines()[0].contains("t.conf:1: return: not translated"),
        "{:?}",
        i.report.lines()
    );
    // a site file (sites-available/default): servers and upstreams at the top, no http block
    let i = parse(
        "upstream u { server a:1; }\nserver { listen 8080; location / { proxy_pass http://u; } }\n",
    );
    assert_eq!(i.config.gateway.routes[0].upstream.as_deref(), Some("u"));
    assert_eq!(i.config.server.listen.to_string(), "0.0.0.0:8080");
    assert!(i.report.notes.is_empty(), "{:?}", i.report.lines());
    // behind an L4 balancer: the PROXY protocol on the listeners that ask for it
    let i = parse(
        "server { listen 80 proxy_protocol; listen 8080; location / { proxy_pass http://a:1; } }",
    );
    assert!(i.config.server.proxy_protocol);
    assert!(!i.config.server.listeners[0].proxy_protocol);
    assert!(i.report.notes.is_empty(), "{:?}", i.report.lines());
    // a directive nobody knows is still reported
    let i = parse("http { frobnicate on; }");
    assert_eq!(i.report.lines(), ["t.conf:1: frobnicate: not translated: Ferry has no equivalent (or it is not used where it is written)"]);
}

/// The newer gateway keys on shapes the fixtures do not cover, written inline.
#[test]
fn tls_files_buffering_and_compression_in_smaller_cases() {
    let parse = |text: &str| {
        ferry_nginx::translate(&ferry_nginx::parse_str(text, "t.conf").expect("parses"))
    };
    let tls = "listen 443 ssl; ssl_certificate /c.pem; ssl_certificate_key /c.key;";
    // old protocols are dropped (reported); keywords alone leave rustls's suites; a depth of 0 is refused
    let i = parse(&format!(
        "server {{ {tls} ssl_protocols TLSv1 TLSv1.1 TLSv1.2; ssl_ciphers HIGH:!aNULL:!MD5; \
         ssl_verify_depth 0; location / {{ proxy_pass http://a:1; }} }}"
    ));
    assert_eq!(i.config.gateway.tls.protocols, ["TLSv1.2"]);
    assert!(i.config.gateway.tls.cipher_suites.is_empty());
    assert_eq!(i.config.gateway.tls.verify_depth, None);
    assert_eq!(
        report(&i),
        [
            "t.conf:1 ssl_ciphers [approximated]",
            "t.conf:1 ssl_protocols [approximated]",
            "t.conf:1 ssl_verify_depth [not translated]",
        ]
    );
    // stapling from a file; a plain server under the same `ssl_stapling on` needs none
    let i = parse(&format!(
        "ssl_stapling on;\nserver {{ {tls} ssl_stapling_file /c.ocsp; location / {{ proxy_pass http://a:1; }} }}\n\
         server {{ listen 80; server_name plain.example; location / {{ proxy_pass http://a:1; }} }}"
    ));
    assert_eq!(
        i.config.gateway.tls.ocsp_response,
        Some(PathBuf::from("/c.ocsp"))
    );
    assert!(
        !i.report.lines().iter().any(|l| l.contains("ssl_stapling")),
        "{:?}",
        i.report.lines()
    );
    // stapling without a file: Ferry fetches the responses, from nginx's responder when one is set
    let i = parse(&format!(
        "ssl_stapling on;\nssl_stapling_responder http://ocsp.example:8080/;\n\
         server {{ {tls} location / {{ proxy_pass http://a:1; }} }}"
    ));
    assert!(i.config.gateway.tls.ocsp_stapling);
    assert_eq!(
        i.config.gateway.tls.ocsp_responder.as_deref(),
        Some("http://ocsp.example:8080/")
    );
    assert_eq!(i.config.gateway.tls.ocsp_response, None);
    assert!(
        !i.report.lines().iter().any(|l| l.contains("ssl_stapling")),
        "{:?}",
        i.report.lines()
    );
    // the listener has one cipher list: another server's different one is reported
    let i = parse(&format!(
        "server {{ {tls} server_name a; ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256; location / {{ proxy_pass http://a:1; }} }}\n\
         server {{ {tls} server_name b; ssl_ciphers ECDHE-RSA-AES256-GCM-SHA384; location / {{ proxy_pass http://a:1; }} }}"
    ));
    assert_eq!(
        i.config.gateway.tls.cipher_suites[3],
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    );
    assert_eq!(report(&i), ["t.conf:2 ssl_ciphers [approximated]"]);
    // a server sharing the default certificate with client settings of its own gets an SNI entry with that
    // certificate; one without names cannot, and its routes require a certificate instead
    let i = parse(&format!(
        "ssl_client_certificate /ca.pem;\n\
         server {{ {tls} server_name open.example; location / {{ proxy_pass http://a:1; }} }}\n\
         server {{ {tls} server_name mtls.example; ssl_verify_client on; location / {{ proxy_pass http://a:1; }} }}\n\
         server {{ {tls} ssl_verify_client on; location /x {{ proxy_pass http://a:1; }} }}"
    ));
    let t = &i.config.gateway.tls;
    assert_eq!(t.client_auth, ClientAuth::Off);
    assert_eq!(t.certificates.len(), 1);
    assert_eq!(t.certificates[0].hosts, ["mtls.example"]);
    assert_eq!(t.certificates[0].cert, PathBuf::from("/c.pem"));
    assert_eq!(t.certificates[0].client_auth, Some(ClientAuth::Required));
    assert_eq!(t.certificates[0].client_ca, Some(PathBuf::from("/ca.pem")));
    assert!(!route(&i.config, "*/x").require_client_cert);
    assert_eq!(report(&i), ["t.conf:4 ssl_verify_client [not translated]"]);
    let i = parse(&format!(
        "ssl_client_certificate /ca.pem;\n\
         server {{ {tls} server_name open.example; ssl_verify_client optional_no_ca; location / {{ proxy_pass http://a:1; }} }}\n\
         server {{ {tls} ssl_verify_client on; location /x {{ proxy_pass http://a:1; }} }}"
    ));
    assert_eq!(i.config.gateway.tls.client_auth, ClientAuth::OptionalNoCa);
    assert!(route(&i.config, "*/x").require_client_cert);
    assert_eq!(report(&i), ["t.conf:3 ssl_verify_client [approximated]"]);
    // a client certificate towards a plain upstream has no TLS to go in; half a pair is reported
    let i = parse(
        "server {\nlocation /a { proxy_pass http://a:1; proxy_ssl_certificate /g.pem; proxy_ssl_certificate_key /g.key; }\n\
         location /b { proxy_pass https://b:1; proxy_ssl_certificate_key /h.key; } }",
    );
    assert_eq!(i.config.gateway.upstreams["a-1"].client_cert, None);
    assert_eq!(i.config.gateway.upstreams["b-1"].client_key, None);
    assert_eq!(
        report(&i),
        [
            "t.conf:2 proxy_ssl_certificate [not needed]",
            "t.conf:2 proxy_ssl_certificate_key [not needed]",
            "t.conf:3 proxy_ssl_certificate_key [not translated]",
        ]
    );
    // buffering: on under nginx's limit, or Ferry's default one (100 MiB) where nginx has none of its own, however
    // large; off is Ferry's default; unlimited streams (buffering needs a limit)
    let i = parse(
        "server {\nlocation /a { proxy_pass http://a:1; proxy_request_buffering on; }\n\
         location /b { proxy_pass http://a:1; proxy_request_buffering off; }\n\
         location /c { proxy_pass http://a:1; proxy_request_buffering on; client_max_body_size 0; }\n\
         location /d { proxy_pass http://a:1; proxy_request_buffering on; client_max_body_size 4g; } }",
    );
    let a = route(&i.config, "*/a");
    assert!(a.buffer_request_body);
    assert_eq!(a.max_body_size, None, "Ferry's default limit");
    assert!(!route(&i.config, "*/b").buffer_request_body);
    assert!(!route(&i.config, "*/c").buffer_request_body);
    let d = route(&i.config, "*/d");
    assert!(d.buffer_request_body);
    assert_eq!(d.max_body_size, Some(4 << 30));
    assert_eq!(
        report(&i),
        [
            "t.conf:3 proxy_request_buffering [not needed]",
            "t.conf:4 proxy_request_buffering [approximated]",
        ]
    );
    let why = &i.report.notes[1].why;
    assert!(why.contains("needs max_body_size, not 0"), "{why}");
    assert!(
        !i.report.lines().iter().any(|l| l.contains("64")),
        "{:?}",
        i.report.lines()
    );
    // with nginx's limit 0 in http, only a route's own limit lets it buffer
    let i = parse(
        "http { client_max_body_size 0; server {\n\
         location /a { proxy_pass http://a:1; proxy_request_buffering on; }\n\
         location /b { proxy_pass http://a:1; proxy_request_buffering on; client_max_body_size 1m; } } }",
    );
    assert!(!route(&i.config, "*/a").buffer_request_body);
    assert!(route(&i.config, "*/b").buffer_request_body);
    assert_eq!(
        report(&i),
        ["t.conf:2 proxy_request_buffering [approximated]"]
    );
    // client_body_buffer_size and client_body_temp_path: one each for the whole gateway, the http level's; the
    // same value elsewhere is used, a different one reported; levels are not needed
    let i = parse(
        "http {\nclient_body_buffer_size 16k;\nclient_body_temp_path /var/lib/nginx/body 1 2;\nserver {\n\
         client_body_buffer_size 16k;\n\
         location /up { proxy_pass http://a:1; proxy_request_buffering on;\n\
         client_body_buffer_size 1m;\nclient_body_temp_path /srv/big;\n}\n\
         location /x { proxy_pass http://a:1; client_body_temp_path /var/lib/nginx/body; } } }",
    );
    assert_eq!(i.config.gateway.body_buffer_memory, Some(16 * 1024));
    assert_eq!(
        i.config.gateway.body_buffer_dir,
        Some(PathBuf::from("/var/lib/nginx/body"))
    );
    assert!(route(&i.config, "*/up").buffer_request_body);
    assert_eq!(
        report(&i),
        [
            "t.conf:3 client_body_temp_path [approximated]",
            "t.conf:7 client_body_buffer_size [approximated]",
            "t.conf:8 client_body_temp_path [approximated]",
        ]
    );
    let lines = i.report.lines();
    for expected in [
        "t.conf:3: client_body_temp_path: approximated: request bodies larger than body_buffer_memory go to \
         files in /var/lib/nginx/body, which must exist where Ferry runs (checked at load; nginx creates it, Ferry \
         does not); the levels (1 2) are not needed",
        "t.conf:7: client_body_buffer_size: approximated: Ferry holds one body_buffer_memory for the whole \
         gateway ([gateway]): 16k from t.conf:2 is kept, not this 1m",
        "t.conf:8: client_body_temp_path: approximated: Ferry has one body_buffer_dir for the whole gateway \
         ([gateway]): /var/lib/nginx/body from t.conf:3 is kept, not /srv/big",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(expected)), "{expected}: {lines:?}");
    }
    // without an http-level one: the only (or agreeing) value, else the largest size and the first directory;
    // a relative directory (under nginx's prefix) and a size that is none are reported
    let i = parse(
        "server {\nlocation /a { proxy_pass http://a:1; client_body_buffer_size 128k; }\n\
         location /b { proxy_pass http://a:1; client_body_buffer_size 2m; client_body_temp_path /tmp/b; }\n\
         location /c { proxy_pass http://a:1; client_body_buffer_size 2M; client_body_temp_path client_body_temp; }\n\
         location /d { proxy_pass http://a:1; client_body_buffer_size lots; } }",
    );
    assert_eq!(i.config.gateway.body_buffer_memory, Some(2 * 1024 * 1024));
    assert_eq!(
        i.config.gateway.body_buffer_dir,
        Some(PathBuf::from("/tmp/b"))
    );
    assert_eq!(
        report(&i),
        [
            "t.conf:2 client_body_buffer_size [approximated]",
            "t.conf:3 client_body_temp_path [approximated]",
            "t.conf:4 client_body_temp_path [not translated]",
            "t.conf:5 client_body_buffer_size [not translated]",
        ]
    );
    let i = parse("server { location / { proxy_pass http://a:1; client_body_buffer_size 64k; } }");
    assert_eq!(i.config.gateway.body_buffer_memory, Some(64 * 1024));
    assert!(i.report.notes.is_empty(), "{:?}", i.report.lines());
    // static locations that are not translated: a named fallback, alias with a regex, a relative root
    let i = parse(
        "server { root /srv/www; location / { try_files $uri @app; } location @app { proxy_pass http://a:1; } \
         location ~ ^/i/(.*)$ { alias /srv/img/$1; } location /rel/ { root html; } \
         location /x/ { root /srv/x; try_files $uri $uri.html =404; gzip on; brotli on; } }",
    );
    let names: Vec<&str> = i
        .config
        .gateway
        .routes
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect();
    assert_eq!(names, ["*/x/"]);
    let x = route(&i.config, "*/x/");
    assert_eq!(x.static_dir, Some(PathBuf::from("/srv/x")));
    assert!(x.compress);
    let lines = i.report.lines();
    for expected in [
        "location /: not translated: try_files falls back to a named location",
        "location ~ ^/i/(.*)$: not translated: alias outside a prefix location",
        "location /rel/: not translated: the directory is relative",
        "try_files: approximated: Ferry serves the file at the path or a directory's index.html: $uri.html is not tried",
    ] {
        assert!(lines.iter().any(|l| l.contains(expected)), "{expected}: {lines:?}");
    }
    // the output stays loadable and, without the host's files, compiles
    let i = parse(
        "client_body_temp_path /nonexistent/body; client_body_buffer_size 8k;\n\
         server { location /a { proxy_pass https://a:1; proxy_ssl_certificate /g.pem; \
         proxy_ssl_certificate_key /g.key; proxy_request_buffering on; } location /s/ { alias /nonexistent/s/; } }",
    );
    assert!(route(&i.config, "*/a").buffer_request_body);
    let toml = to_toml(&i.config, "t.conf").expect("serialises");
    let loaded = ferry_config::load_text(&toml, "t.toml").expect("loads");
    ferry_edge::Gateway::validate(&without_host_files(&loaded.gateway))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(
        ferry_edge::Gateway::validate(&loaded.gateway).is_err(),
        "the files are checked where they are"
    );
}

#[test]
fn http3_from_quic_listens() {
    let i = import("http3.conf");
    let c = &i.config;
    // `listen … quic` beside `listen … ssl` on the same address: that TLS listener serves HTTP/3
    assert_eq!(c.server.listen, "0.0.0.0:443".parse().expect("addr"));
    assert!(c.server.http3);
    let extra: Vec<(String, bool, bool)> = c
        .server
        .listeners
        .iter()
        .map(|l| (l.listen.to_string(), l.tls, l.http3))
        .collect();
    assert_eq!(extra, [("[::]:8443".to_owned(), true, true)]);
    let report = report(&i);
    assert!(
        report
            .iter()
            .any(|n| n.contains("listen 0.0.0.0:9443") && n.contains("not translated")),
        "a quic listen without its TLS twin is reported: {report:#?}"
    );
    assert!(
        !report.iter().any(|n| n.contains("listen 443")),
        "{report:#?}"
    );
}
