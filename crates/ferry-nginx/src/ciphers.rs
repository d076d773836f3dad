//! nginx's `ssl_ciphers` (an OpenSSL cipher string) as Ferry's `[gateway.tls] cipher_suites`.
//!
//! Only names written out are carried over: OpenSSL's keywords (`HIGH`, `EECDH+AESGCM`, `!aNULL`, `@STRENGTH`)
//! depend on the OpenSSL build and are not expanded. OpenSSL's cipher string chooses TLS 1.2 suites only (TLS 1.3
//! suites are set apart and stay OpenSSL's defaults under nginx), so a list that keeps any TLS 1.2 suite starts
//! with the three TLS 1.3 suites, in OpenSSL's default order, as rustls would otherwise offer no TLS 1.3 at all.

/// The TLS 1.2 suites Ferry (rustls) has: OpenSSL's name, and the IANA name Ferry lists it under.
const TLS12: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The TLS 1.3 suites in OpenSSL's default order: OpenSSL's name, and Ferry's (rustls's) IANA name.
const TLS13: &[(&str, &str)] = &[
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
];

/// What became of a cipher string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ciphers {
    /// `cipher_suites` as Ferry takes them, in order of preference; empty: rustls's defaults.
    pub suites: Vec<String>,
    /// Names written out that Ferry (rustls) does not have (CBC, DHE, RSA key exchange, 3DES…): left out.
    pub unsupported: Vec<String>,
    /// OpenSSL keywords and operators, not expanded.
    pub keywords: Vec<String>,
    /// TLS 1.3 names, which OpenSSL's cipher string does not choose: left out (TLS 1.3 keeps its defaults).
    pub tls13: Vec<String>,
}

impl Ciphers {
    /// Whether the list says exactly what nginx's does.
    pub fn exact(&self) -> bool {
        self.unsupported.is_empty() && self.keywords.is_empty() && self.tls13.is_empty()
    }

    /// Why the translation differs, for the report (empty when [`Ciphers::exact`]).
    pub fn why(&self) -> String {
        let mut parts = Vec::new();
        if !self.unsupported.is_empty() {
            parts.push(format!(
                "left out, as Ferry (rustls) does not have them: {}",
                self.unsupported.join(", ")
            ));
        }
        if !self.keywords.is_empty() {
            parts.push(format!(
                "OpenSSL keywords are not expanded: {}",
                self.keywords.join(", ")
            ));
        }
        if !self.tls13.is_empty() {
            parts.push(format!(
                "TLS 1.3 names are not chosen by ssl_ciphers (OpenSSL keeps its TLS 1.3 defaults): {}",
                self.tls13.join(", ")
            ));
        }
        if !parts.is_empty() && self.suites.is_empty() {
            parts.push(
                "no suite Ferry has is named, so cipher_suites is left to rustls's defaults (TLS 1.3, and \
                 ECDHE with AES-GCM or ChaCha20 for TLS 1.2)"
                    .to_owned(),
            );
        }
        parts.join("; ")
    }
}

/// Map an OpenSSL cipher string (`ECDHE-RSA-AES128-GCM-SHA256:!aNULL`, items split by `:`, `,` or spaces).
pub fn map_ciphers(spec: &str) -> Ciphers {
    let mut out = Ciphers::default();
    let mut chosen: Vec<&'static str> = Vec::new();
    let mut banned: Vec<&'static str> = Vec::new();
    for item in spec
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let (op, name) = match item.chars().next() {
            Some(c @ ('!' | '-' | '+')) => (Some(c), &item[1..]),
            _ => (None, item),
        };
        let tls12 = TLS12
            .iter()
            .find(|(o, i)| o.eq_ignore_ascii_case(name) || i.eq_ignore_ascii_case(name))
            .map(|(_, iana)| *iana);
        let is_tls13 = TLS13
            .iter()
            .any(|(o, i)| o.eq_ignore_ascii_case(name) || i.eq_ignore_ascii_case(name));
        match (op, tls12) {
            (None, Some(iana)) => {
                if !chosen.contains(&iana) && !banned.contains(&iana) {
                    chosen.push(iana);
                }
            }
            (Some('!'), Some(iana)) => {
                chosen.retain(|c| *c != iana);
                banned.push(iana);
            }
            (Some('-'), Some(iana)) => chosen.retain(|c| *c != iana),
            (None, None) if is_tls13 => out.tls13.push(item.to_owned()),
            (None, None) if is_suite_name(name) => out.unsupported.push(item.to_owned()),
            // an operator on a name Ferry has not chosen changes nothing
            (Some(_), None) if is_suite_name(name) => {}
            _ => out.keywords.push(item.to_owned()),
        }
    }
    if !chosen.is_empty() {
        out.suites = TLS13
            .iter()
            .map(|(_, iana)| *iana)
            .chain(chosen)
            .map(str::to_owned)
            .collect();
    }
    out
}

/// Whether an item names one suite (`AES128-SHA`, `TLS_RSA_WITH_AES_128_CBC_SHA`) rather than a keyword
/// (`HIGH`, `AESGCM`, `EECDH+AESGCM`, `@STRENGTH`).
fn is_suite_name(name: &str) -> bool {
    !name.contains('+')
        && !name.starts_with('@')
        && (name.contains('-') || name.to_ascii_uppercase().starts_with("TLS_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS13_DEFAULTS: [&str; 3] = [
        "TLS13_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256",
        "TLS13_AES_128_GCM_SHA256",
    ];

    #[test]
    fn supported_names_map_to_iana_after_the_tls13_defaults() {
        let c = map_ciphers("ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305");
        assert!(c.exact(), "{c:?}");
        assert_eq!(c.why(), "");
        assert_eq!(&c.suites[..3], TLS13_DEFAULTS);
        assert_eq!(
            &c.suites[3..],
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
    }

    #[test]
    fn every_supported_openssl_name_is_known_and_iana_names_are_taken_too() {
        for (openssl, iana) in TLS12 {
            assert_eq!(map_ciphers(openssl).suites[3], *iana);
            assert_eq!(map_ciphers(&iana.to_ascii_lowercase()).suites[3], *iana);
        }
    }

    #[test]
    fn mozilla_intermediate_drops_the_dhe_suites() {
        let c = map_ciphers(
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
             ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
             DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305",
        );
        assert_eq!(c.suites.len(), 3 + 6);
        assert_eq!(
            c.unsupported,
            [
                "DHE-RSA-AES128-GCM-SHA256",
                "DHE-RSA-AES256-GCM-SHA384",
                "DHE-RSA-CHACHA20-POLY1305"
            ]
        );
        assert!(c.keywords.is_empty());
        assert!(c.why().contains("DHE-RSA-AES128-GCM-SHA256"), "{}", c.why());
    }

    #[test]
    fn keywords_are_reported_and_exclusions_apply_to_named_suites() {
        let c = map_ciphers(
            "EECDH+AESGCM ECDHE-RSA-AES128-GCM-SHA256,AES128-SHA:!aNULL:!MD5:@STRENGTH:-ECDHE-RSA-AES128-GCM-SHA256",
        );
        assert!(c.suites.is_empty(), "{c:?}");
        assert_eq!(c.unsupported, ["AES128-SHA"]);
        assert_eq!(c.keywords, ["EECDH+AESGCM", "!aNULL", "!MD5", "@STRENGTH"]);
        assert!(c.why().contains("rustls's defaults"), "{}", c.why());
        // `!` bans a suite for good, `-` only until it is named again
        let c = map_ciphers("!ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
        assert!(c.suites.is_empty());
        let c = map_ciphers("-ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(c.suites.len(), 4);
    }

    #[test]
    fn keyword_only_strings_leave_the_defaults() {
        let c = map_ciphers("HIGH:!aNULL:!MD5");
        assert!(c.suites.is_empty());
        assert!(!c.exact());
        assert_eq!(c.keywords, ["HIGH", "!aNULL", "!MD5"]);
    }

    #[test]
    fn tls13_names_are_not_chosen_by_the_cipher_string() {
        let c = map_ciphers("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(c.tls13, ["TLS_AES_128_GCM_SHA256"]);
        assert_eq!(
            c.suites.len(),
            4,
            "the TLS 1.3 defaults stay, in OpenSSL's order"
        );
        assert_eq!(&c.suites[..3], TLS13_DEFAULTS);
    }
}
