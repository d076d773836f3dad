//! Fuzz target `tokens`: bearer tokens as Ferry reads them (`ferry-token`), against a fixed set of Ed25519 keys.
//!
//! The first byte picks a mode:
//! - 0, raw: the rest is an `Authorization` header value; its bearer token (or, without one, the text itself) is
//!   checked by the built-in rules (two key sets: `k1`+`k2`, and `k1` alone) and the provider rules, for both
//!   purposes. Nothing panics; the header parse is what RFC 6750 says; a token that passes is signed, over its
//!   exact first two parts, by the key its `kid` names (checked here with `ring`, not with `jsonwebtoken`), and
//!   what the verifier returns is what its payload says and obeys every rule.
//! - 1, structured: the rest chooses a header (algorithm, `kid`, signing key) and each claim (right, wrong, of
//!   the wrong type, absent…); the token is signed with the real keys and the decision must be the one the rules
//!   below give: accepted exactly when no rule is broken, else refused with the error of one broken rule.
//! - 2 and 3, signed payload: the rest is the payload, byte for byte, signed with `k1` (2: built-in, 3: provider);
//!   when it passes, it is a JSON object that obeys every rule.
//! - 4, JWKS: the rest is a JWKS document; reading it never panics.
//!
//! The rules, as `ferry-token` documents them (built-in; the provider's differences in brackets): `alg` EdDSA
//! [RS256, PS256, ES256 or EdDSA, and the JWK's own `alg` when it pins one]; the key the `kid` names, or the only
//! key when there is no `kid`; `iss` the issuer, a string; `aud` the audience, or an array of strings holding
//! it; `exp` an integer [a number] no older than the 30 s leeway; `nbf`, when present and not null, a number no
//! further ahead than the leeway; `sub` a string [when present]; `tenant` [the tenant claim] a valid tenant
//! name; `scope` [`scope` or `scp`] a string [or array] holding `tunnel` for a tunnel (any for a client); `sid`
//! a string when present.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferry_proto::TenantName;
use ferry_token::{
    bearer_token, bearer_token_in, unverified_issuer, Claims, KeyRef, KeySet, ProviderKeys,
    ProviderRules, Purpose, TokenError, TokenRules, BUILTIN_ALGORITHM, DEFAULT_AUDIENCE,
    DEFAULT_ISSUER, LEEWAY, TUNNEL_SCOPE,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde_json::{json, Map, Value};

use crate::input::Input;

/// The external provider's issuer.
const PROVIDER: &str = "https://idp.example";
/// The claim naming the tenant in the provider's tokens.
const TENANT_CLAIM: &str = "client_id";

/// A fixed Ed25519 key.
struct Key {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl Key {
    /// The key of a 32-byte seed (a PKCS#8 v1 document, RFC 8410).
    fn from_seed(seed: u8) -> Self {
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend([seed; 32]);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).expect("a fixed Ed25519 key");
        Key { pkcs8, pair }
    }

    fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn key_ref<'a>(&'a self, kid: &'a str) -> KeyRef<'a> {
        KeyRef {
            kid,
            algorithm: BUILTIN_ALGORITHM,
            private_der: &self.pkcs8,
            public_key: self.public(),
        }
    }
}

/// The keys and rules every input is checked against.
struct Fixture {
    /// `k1`, `k2`: the set's keys; `k3`: a key of nobody Ferry trusts.
    keys: [Key; 3],
    /// `k1` (newest) and `k2`.
    both: KeySet,
    /// `k1` alone: a token without `kid` is checked with it.
    single: KeySet,
    rules: TokenRules,
    /// `p1` is `k1` pinned to EdDSA, `p2` is `k2` without `alg`.
    provider_keys: ProviderKeys,
    provider: ProviderRules,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = [Key::from_seed(1), Key::from_seed(2), Key::from_seed(3)];
        let both = KeySet::new([keys[0].key_ref("k1"), keys[1].key_ref("k2")]);
        let single = KeySet::new([keys[0].key_ref("k1")]);
        let jwk = |kid: &str, key: &Key| {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(key.public())})
        };
        let mut p1 = jwk("p1", &keys[0]);
        p1["alg"] = json!("EdDSA");
        let provider_keys = ProviderKeys::from_jwks(&json!({"keys": [p1, jwk("p2", &keys[1])]}));
        Fixture {
            keys,
            both,
            single,
            rules: TokenRules::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE),
            provider_keys,
            provider: ProviderRules::new(PROVIDER, TENANT_CLAIM, Some(TUNNEL_SCOPE.to_owned())),
        }
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Run the target on one input.
pub fn tokens(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => raw(rest),
        1 => structured(&mut Input::new(rest)),
        2 => signed_payload(rest, false),
        3 => signed_payload(rest, true),
        _ => {
            if let Ok(jwks) = serde_json::from_slice::<Value>(rest) {
                let keys = ProviderKeys::from_jwks(&jwks);
                let _ = (keys.is_empty(), keys.kids());
            }
        }
    }
}

/// Which rule a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Algorithm,
    Key,
    Signature,
    Malformed,
    Expired,
    NotYet,
    Issuer,
    Audience,
    Scope,
}

fn rule_of(error: &TokenError) -> Rule {
    match error {
        TokenError::Expired => Rule::Expired,
        TokenError::NotYetValid => Rule::NotYet,
        TokenError::BadSignature => Rule::Signature,
        TokenError::UnknownKey => Rule::Key,
        TokenError::UnsupportedAlgorithm => Rule::Algorithm,
        TokenError::WrongAudience => Rule::Audience,
        TokenError::WrongIssuer => Rule::Issuer,
        TokenError::MissingScope => Rule::Scope,
        TokenError::Malformed(_) => Rule::Malformed,
        TokenError::Key(_) | TokenError::Sign(_) => {
            panic!("checking a token failed as if signing: {error:?}")
        }
    }
}

/// Built-in tokens or the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Builtin,
    Provider,
}

/// An `exp` as a NumericDate (RFC 7519 §2) that fits Ferry's seconds: a whole number of seconds (built-in
/// tokens), or any number from 0 to `u64::MAX`, rounded (a provider's); `None` for anything else.
fn expiry(value: &Value, kind: Kind) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64().filter(|_| kind == Kind::Provider)?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
}

/// A JSON number as a NumericDate (RFC 7519 §2): a number of seconds, rounded; `None` for anything else.
/// Negative numbers are dates before 1970 (`Some(0)` is as good: long past), huge ones far ahead.
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    if value.as_i64().is_some() {
        return Some(0);
    }
    let f = value.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    Some(if f <= 0.0 {
        0
    } else if f >= u64::MAX as f64 {
        u64::MAX
    } else {
        f.round() as u64
    })
}

/// The rules `claims` break, for a token of `kind` presented for `purpose` at `now`.
fn broken_rules(claims: &Value, kind: Kind, purpose: Purpose, now: u64) -> BTreeSet<Rule> {
    let mut broken = BTreeSet::new();
    let Some(map) = claims.as_object() else {
        broken.insert(Rule::Malformed);
        return broken;
    };
    let present = |name: &str| map.get(name).filter(|v| !v.is_null());
    let leeway = LEEWAY.as_secs();
    let issuer = match kind {
        Kind::Builtin => DEFAULT_ISSUER,
        Kind::Provider => PROVIDER,
    };
    match present("iss") {
        Some(Value::String(iss)) if iss == issuer => {}
        Some(Value::String(_)) => {
            broken.insert(Rule::Issuer);
        }
        _ => {
            broken.insert(Rule::Malformed);
        }
    }
    match present("aud") {
        Some(Value::String(aud)) if aud == DEFAULT_AUDIENCE => {}
        Some(Value::String(_)) => {
            broken.insert(Rule::Audience);
        }
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            if !list.iter().any(|a| a == DEFAULT_AUDIENCE) {
                broken.insert(Rule::Audience);
            }
        }
        _ => {
            broken.insert(Rule::Malformed);
        }
    }
    match present("exp").and_then(|v| expiry(v, kind)) {
        Some(exp) if exp < now.saturating_sub(leeway) => {
            broken.insert(Rule::Expired);
        }
        Some(_) => {}
        None => {
            broken.insert(Rule::Malformed);
            // a built-in token's `exp` with a fraction is malformed, and may be past as well
            let past = present("exp")
                .and_then(|v| expiry(v, Kind::Provider))
                .is_some_and(|exp| exp < now.saturating_sub(leeway));
            if past {
                broken.insert(Rule::Expired);
            }
        }
    }
    if let Some(nbf) = present("nbf") {
        match numeric_date(nbf) {
            Some(nbf) if nbf > now.saturating_add(leeway) => {
                broken.insert(Rule::NotYet);
            }
            Some(_) => {}
            None => {
                broken.insert(Rule::Malformed);
            }
        }
    }
    let tenant = match kind {
        Kind::Builtin => present("tenant"),
        Kind::Provider => ferry_token::claim_at(claims, TENANT_CLAIM).filter(|v| !v.is_null()),
    };
    let valid_tenant = tenant
        .and_then(Value::as_str)
        .is_some_and(|t| TenantName::new(t).is_ok());
    if !valid_tenant {
        broken.insert(Rule::Malformed);
    }
    // `sub`, when present, is a string (RFC 7519 §4.1.2); built-in tokens must have one
    let sub = present("sub");
    if sub.is_some_and(|s| !s.is_string()) || (kind == Kind::Builtin && sub.is_none()) {
        broken.insert(Rule::Malformed);
    }
    let scope = match kind {
        Kind::Builtin => {
            if present("sid").is_some_and(|s| !s.is_string()) {
                broken.insert(Rule::Malformed);
            }
            match present("scope") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    broken.insert(Rule::Malformed);
                    String::new()
                }
            }
        }
        Kind::Provider => ferry_token::scopes(claims),
    };
    if purpose == Purpose::Tunnel && !scope.split(' ').any(|s| s == TUNNEL_SCOPE) {
        broken.insert(Rule::Scope);
    }
    broken
}

/// What an accepted token's [`Claims`] must say, from its payload.
fn check_claims(got: &Claims, claims: &Value, kind: Kind) {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let tenant = match kind {
        Kind::Builtin => text("tenant"),
        Kind::Provider => ferry_token::claim_at(claims, TENANT_CLAIM).and_then(Value::as_str),
    };
    assert_eq!(Some(got.tenant.as_str()), tenant, "tenant");
    match kind {
        Kind::Builtin => {
            assert_eq!(Some(got.issuer.as_str()), text("iss"), "issuer");
            assert_eq!(
                Some(got.exp),
                claims.get("exp").and_then(Value::as_u64),
                "exp"
            );
            assert_eq!(got.scope, text("scope").unwrap_or_default(), "scope");
            assert_eq!(got.secret_id.as_deref(), text("sid"), "sid");
        }
        Kind::Provider => {
            assert_eq!(got.issuer, PROVIDER, "issuer");
            let exp = claims.get("exp").and_then(|v| expiry(v, kind));
            assert_eq!(Some(got.exp), exp, "exp");
            assert_eq!(got.scope, ferry_token::scopes(claims), "scope");
            assert_eq!(got.secret_id, None, "sid");
        }
    }
}

/// The parts of a compact JWT, when it has exactly three.
fn parts(token: &str) -> Option<(&str, &str, &str)> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) => Some((h, p, s)),
        _ => None,
    }
}

fn json_part(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Whether `token` carries a valid Ed25519 signature by `public` over its first two parts, checked with `ring`.
fn signed_by(token: &str, public: &[u8]) -> bool {
    let Some((header, payload, signature)) = parts(token) else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, public)
        .verify(format!("{header}.{payload}").as_bytes(), &signature)
        .is_ok()
}

/// An accepted token of `kind`: signed by the key its header names, its claims obey the rules (at `before` or
/// `after`, the moments around the check) and are what the verifier returned.
fn check_accepted(
    token: &str,
    got: &Claims,
    kind: Kind,
    purpose: Purpose,
    single: bool,
    before: u64,
    after: u64,
) {
    let f = fixture();
    let (header, payload, _) =
        parts(token).unwrap_or_else(|| panic!("accepted {token:?}: not 3 parts"));
    let header = json_part(header).unwrap_or_else(|| panic!("accepted {token:?}: header"));
    let claims = json_part(payload).unwrap_or_else(|| panic!("accepted {token:?}: payload"));
    assert_eq!(header["alg"], "EdDSA", "accepted {token:?}: alg");
    let key = match (kind, header.get("kid").and_then(Value::as_str)) {
        (Kind::Builtin, Some("k1")) | (Kind::Provider, Some("p1")) => &f.keys[0],
        (Kind::Builtin, Some("k2")) if !single => &f.keys[1],
        (Kind::Provider, Some("p2")) => &f.keys[1],
        (Kind::Builtin, None) if single && header.get("kid").is_none_or(Value::is_null) => {
            &f.keys[0]
        }
        (_, kid) => panic!("accepted {token:?} with kid {kid:?}"),
    };
    assert!(
        signed_by(token, key.public()),
        "accepted an unsigned token: {token:?}"
    );
    let broken = broken_rules(&claims, kind, purpose, before);
    let broken_after = broken_rules(&claims, kind, purpose, after);
    assert!(
        broken.is_empty() || broken_after.is_empty(),
        "accepted {token:?} ({claims}) breaking {broken:?}"
    );
    check_claims(got, &claims, kind);
}

/// Check `token` everywhere; accepted tokens are checked by [`check_accepted`].
fn check_everywhere(token: &str) {
    let f = fixture();
    let _ = unverified_issuer(token);
    for purpose in [Purpose::Tunnel, Purpose::Client] {
        let before = now_secs();
        let results = [
            (f.rules.check(&f.both, token, purpose), Kind::Builtin, false),
            (
                f.rules.check(&f.single, token, purpose),
                Kind::Builtin,
                true,
            ),
            (
                f.provider
                    .decode(&f.provider_keys, token, DEFAULT_AUDIENCE)
                    .and_then(|claims| f.provider.claims(&claims, purpose)),
                Kind::Provider,
                false,
            ),
        ];
        let after = now_secs();
        for (result, kind, single) in results {
            match result {
                Ok(claims) => check_accepted(token, &claims, kind, purpose, single, before, after),
                Err(error) => assert!(error.is_rejection(), "{error:?}"),
            }
        }
    }
}

/// Mode 0: an `Authorization` header value.
fn raw(data: &[u8]) {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        let token = bearer_token_in(&headers);
        match std::str::from_utf8(data) {
            Ok(text)
                if data
                    .iter()
                    .all(|&b| b == b'\t' || (b' '..0x7f).contains(&b)) =>
            {
                assert_eq!(token, bearer_token(text));
            }
            _ => assert_eq!(
                token, None,
                "a token from a header that is not visible ASCII"
            ),
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let token = bearer_token(text);
    if let Some(token) = token {
        // RFC 6750 §2.1: "Bearer" (any case), one space, the credentials.
        let value = text.trim();
        let scheme = value.get(..7).unwrap_or_default();
        assert!(scheme.eq_ignore_ascii_case("bearer "), "{text:?}");
        assert_eq!(Some(token), value.get(7..).map(str::trim), "{text:?}");
        assert!(!token.is_empty());
    }
    check_everywhere(token.unwrap_or(text));
}

/// A compact JWT of `header` and raw `payload`, signed with `ring` (Ed25519) or HMAC-SHA256 (the algorithm
/// confusion: `k1`'s public key as the secret), or not at all (`alg: none`).
fn sign_raw(header: &Value, payload: &[u8], signer: Signer) -> String {
    let f = fixture();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = match signer {
        Signer::Ed25519(i) => f.keys[i].pair.sign(message.as_bytes()).as_ref().to_vec(),
        Signer::Hmac => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, f.keys[0].public());
            ring::hmac::sign(&key, message.as_bytes()).as_ref().to_vec()
        }
        Signer::Unsigned => Vec::new(),
    };
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    /// One of the fixed keys (index).
    Ed25519(usize),
    Hmac,
    Unsigned,
}

/// Modes 2 and 3: `payload` signed with `k1` under its kid; one that passes obeys the rules.
fn signed_payload(payload: &[u8], provider: bool) {
    let kid = if provider { "p1" } else { "k1" };
    let token = sign_raw(
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        payload,
        Signer::Ed25519(0),
    );
    check_everywhere(&token);
}

/// The claim values mode 1 chooses from: index 0 is the right value, so that an input of zeros is a valid token.
fn claim_value(input: &mut Input<'_>, name: &str, now: u64, issuer: &str) -> Option<Value> {
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    let offset = |input: &mut Input<'_>| -> i64 {
        let offsets = [60, -60, 0, -29, -31, 29, 31, 3600, -3600, 1_000_000_000];
        input.pick(&offsets).copied().unwrap_or(0)
    };
    let choices = input.small(16);
    let value = match (name, choices) {
        (_, 15) => return None,
        (_, 14) => Value::Null,
        (_, 13) => json!(7),
        (_, 12) => json!(true),
        (_, 11) => json!({"a": 1}),
        ("iss", 0) => json!(issuer),
        ("iss", 1) => json!("mallory"),
        ("iss", 2) => json!(issuer.to_uppercase()),
        ("iss", 3) => json!([issuer]),
        ("iss", 4) => json!(["mallory", issuer]),
        ("iss", _) => json!(""),
        ("aud", 0) => json!(DEFAULT_AUDIENCE),
        ("aud", 1) => json!("ferry-admin"),
        ("aud", 2) => json!(["other", DEFAULT_AUDIENCE]),
        ("aud", 3) => json!([]),
        ("aud", 4) => json!(["other"]),
        ("aud", 5) => json!([5, DEFAULT_AUDIENCE]),
        ("aud", _) => json!(format!("{DEFAULT_AUDIENCE} ")),
        ("exp", 0) => json!(now + 600),
        ("exp", 1) => json!(now_i + offset(input)),
        ("exp", 2) => json!(now as f64 + 600.25),
        ("exp", 3) => json!((now + 600).to_string()),
        ("exp", 4) => json!(u64::MAX),
        ("exp", 5) => json!(-5),
        ("exp", 6) => json!(now as f64 - 3600.25),
        ("exp", _) => json!(1e300),
        ("nbf", 0) => return None,
        ("nbf", 1) => json!(now_i + offset(input)),
        ("nbf", 2) => json!(now as f64 + 3600.25),
        ("nbf", 3) => json!((now + 3600).to_string()),
        ("nbf", 4) => json!(1e300),
        ("nbf", 5) => json!(-1),
        ("nbf", 6) => json!(now as f64 - 3600.25),
        ("nbf", _) => json!(now - 5),
        ("sub" | "tenant" | "client_id", 0) => json!("demo"),
        ("sub" | "tenant" | "client_id", 1) => json!("Not/Valid"),
        ("sub" | "tenant" | "client_id", 2) => json!(""),
        ("sub" | "tenant" | "client_id", 3) => json!("x".repeat(64)),
        ("sub" | "tenant" | "client_id", 4) => json!(["demo"]),
        ("sub" | "tenant" | "client_id", _) => json!("other-tenant"),
        ("scope" | "scp", 0) => json!(TUNNEL_SCOPE),
        ("scope" | "scp", 1) => json!("relay"),
        ("scope" | "scp", 2) => json!("relay tunnel"),
        ("scope" | "scp", 3) => json!("Tunnel"),
        ("scope" | "scp", 4) => json!(["openid", TUNNEL_SCOPE]),
        ("scope" | "scp", 5) => json!("tunnels"),
        ("scope" | "scp", 6) => json!(" tunnel "),
        ("scope" | "scp", _) => json!(""),
        ("sid", 0) => return None,
        ("sid", 1) => json!("secret-1"),
        (_, _) => json!("x"),
    };
    Some(value)
}

/// The claims of a mode-1 token, for `issuer` (built-in or provider).
fn claims_from(input: &mut Input<'_>, now: u64, issuer: &str) -> Value {
    let mut claims = Map::new();
    for name in [
        "iss",
        "aud",
        "exp",
        "nbf",
        "sub",
        "tenant",
        "client_id",
        "scope",
        "scp",
        "sid",
        "iat",
        "jti",
    ] {
        // `scp` and the ignored claims are absent unless chosen
        let absent_by_default = matches!(name, "scp" | "iat" | "jti");
        if absent_by_default && !input.bool() {
            continue;
        }
        if let Some(value) = claim_value(input, name, now, issuer) {
            claims.insert(name.to_owned(), value);
        }
    }
    Value::Object(claims)
}

/// The rule the header breaks, for a token of `kind` checked with `set_kids` (builtin) or the provider's keys.
fn header_rule(signer: Signer, kid: Option<&str>, kind: Kind, set_kids: &[&str]) -> Option<Rule> {
    if !matches!(signer, Signer::Ed25519(_)) {
        return Some(Rule::Algorithm);
    }
    let key = match (kind, kid) {
        (Kind::Builtin, Some(kid)) => match set_kids.iter().position(|k| *k == kid) {
            Some(i) => i,
            None => return Some(Rule::Key),
        },
        (Kind::Builtin, None) if set_kids.len() == 1 => 0,
        (Kind::Provider, Some("p1")) => 0,
        (Kind::Provider, Some("p2")) => 1,
        _ => return Some(Rule::Key),
    };
    (signer != Signer::Ed25519(key)).then_some(Rule::Signature)
}

/// Mode 1: a header and claims chosen by the input, signed, and the decision compared with the rules.
fn structured(input: &mut Input<'_>) {
    let f = fixture();
    let signer = match input.small(8) {
        0..=3 => Signer::Ed25519(0),
        4 => Signer::Ed25519(1),
        5 => Signer::Ed25519(2),
        6 => Signer::Hmac,
        _ => Signer::Unsigned,
    };
    let kid_choice = input.small(4);
    let now = now_secs();
    for kind in [Kind::Builtin, Kind::Provider] {
        let (issuer, kids) = match kind {
            Kind::Builtin => (DEFAULT_ISSUER, ["k1", "k2", "k3"]),
            Kind::Provider => (PROVIDER, ["p1", "p2", "p3"]),
        };
        let kid = kids.get(kid_choice).copied();
        let claims = claims_from(input, now, issuer);
        let alg = match signer {
            Signer::Ed25519(_) => "EdDSA",
            Signer::Hmac => "HS256",
            Signer::Unsigned => "none",
        };
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let token = sign_raw(&header, claims.to_string().as_bytes(), signer);
        for purpose in [Purpose::Tunnel, Purpose::Client] {
            let checks: Vec<(Result<Claims, TokenError>, Vec<&str>)> = match kind {
                Kind::Builtin => vec![
                    (f.rules.check(&f.both, &token, purpose), vec!["k1", "k2"]),
                    (f.rules.check(&f.single, &token, purpose), vec!["k1"]),
                ],
                Kind::Provider => vec![(
                    f.provider
                        .decode(&f.provider_keys, &token, DEFAULT_AUDIENCE)
                        .and_then(|c| f.provider.claims(&c, purpose)),
                    Vec::new(),
                )],
            };
            let after = now_secs();
            for (result, set_kids) in checks {
                let expected = match header_rule(signer, kid, kind, &set_kids) {
                    Some(rule) => Some(BTreeSet::from([rule])),
                    None => {
                        let broken = broken_rules(&claims, kind, purpose, now);
                        if broken != broken_rules(&claims, kind, purpose, after) {
                            // a second ticked across a boundary: either decision is right
                            continue;
                        }
                        (!broken.is_empty()).then_some(broken)
                    }
                };
                match (result, expected) {
                    (Ok(got), None) => check_claims(&got, &claims, kind),
                    (Ok(_), Some(broken)) => {
                        panic!(
                            "{kind:?} {purpose:?}: accepted {header} {claims} breaking {broken:?}"
                        )
                    }
                    (Err(error), None) => {
                        panic!("{kind:?} {purpose:?}: refused {header} {claims}: {error:?}")
                    }
                    (Err(error), Some(broken)) => {
                        let rule = rule_of(&error);
                        // `alg: none` is not even a known algorithm: a malformed header
                        let none = signer == Signer::Unsigned && rule == Rule::Malformed;
                        assert!(
                            broken.contains(&rule) || (none && broken.contains(&Rule::Algorithm)),
                            "{kind:?} {purpose:?}: {header} {claims} refused with {error:?}, but it breaks {broken:?}"
                        );
                    }
                }
            }
        }
    }
}

/// The seeds of `fuzz/corpus/tokens/`: valid tokens of both kinds (expiring in 2100), as headers and payloads,
/// forged and altered ones, structured cases, a JWKS.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let year_2100 = 4_102_444_800_u64;
    let builtin = json!({"iss": DEFAULT_ISSUER, "sub": "demo", "tenant": "demo", "aud": DEFAULT_AUDIENCE,
        "iat": 1_700_000_000, "exp": year_2100, "scope": "tunnel", "jti": "j", "sid": "s1"});
    let provider = json!({"iss": PROVIDER, "aud": [DEFAULT_AUDIENCE], "exp": year_2100,
        "client_id": "demo", "scp": ["openid", "tunnel"], "sub": "svc"});
    let eddsa = |kid: &str| json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let header = |token: String| {
        let mut v = vec![0u8];
        v.extend(format!("Bearer {token}").into_bytes());
        v
    };
    let with_mode = |mode: u8, bytes: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        v
    };
    let valid = sign_raw(
        &eddsa("k1"),
        builtin.to_string().as_bytes(),
        Signer::Ed25519(0),
    );
    let forged = sign_raw(
        &eddsa("k1"),
        builtin.to_string().as_bytes(),
        Signer::Ed25519(2),
    );
    let no_kid = sign_raw(
        &json!({"alg": "EdDSA"}),
        builtin.to_string().as_bytes(),
        Signer::Ed25519(0),
    );
    let hmac = sign_raw(
        &json!({"alg": "HS256", "kid": "k1"}),
        builtin.to_string().as_bytes(),
        Signer::Hmac,
    );
    let external = sign_raw(
        &eddsa("p2"),
        provider.to_string().as_bytes(),
        Signer::Ed25519(1),
    );
    vec![
        ("builtin-valid", header(valid.clone())),
        ("builtin-no-kid", header(no_kid)),
        ("builtin-forged", header(forged)),
        ("builtin-hmac-confusion", header(hmac)),
        ("builtin-altered", header(valid.replacen('.', ".e30", 1))),
        ("provider-valid", header(external)),
        ("lowercase-scheme", with_mode(0, format!("  bearer   {valid} ").as_bytes())),
        ("basic-scheme", with_mode(0, b"Basic ZGVtbzpzZWNyZXQ=")),
        ("structured-valid", with_mode(1, &[0; 40])),
        ("structured-mixed", with_mode(1, &[0, 1, 3, 2, 7, 1, 4, 9, 0, 13, 2, 5, 1, 0, 6, 3, 8, 0, 2, 1])),
        ("payload-builtin", with_mode(2, builtin.to_string().as_bytes())),
        ("payload-provider", with_mode(3, provider.to_string().as_bytes())),
        (
            "jwks",
            with_mode(
                4,
                br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r","alg":"RS256"},{"kty":"EC","crv":"P-256","x":"AA","y":"AA"},{"kty":"oct","k":"AA"}]}"#,
            ),
        ),
    ]
}
