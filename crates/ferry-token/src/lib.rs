//! Ferry's bearer tokens as data, without I/O and without the store, so that everything that reads a token an
//! untrusted client sent can be tested and fuzzed on its own (`crates/ferry-fuzzing`, target `tokens`).
//!
//! Owns: the `Authorization: Bearer` header ([`bearer_token`]); the built-in issuer's EdDSA key set
//! ([`KeySet`]: verifying keys by `kid`, the signer, JWKS) and its rules ([`TokenRules`]: algorithm, key,
//! signature, `iss`, `aud`, `exp`, `nbf`, `sub`, the scope a [`Purpose`] needs, the tenant) with signing
//! ([`KeySet::issue`]); the rules for tokens of an external OpenID Connect provider ([`ProviderKeys`] read from a
//! JWKS document, [`ProviderRules`]: accepted algorithms, the tenant claim at a dotted path, scopes, roles); the
//! unverified `iss` that picks a verifier ([`unverified_issuer`]); the typed rejection ([`TokenError`]).
//! Does not own: where keys come from and when they are re-read, rotation, fetching a provider's documents, the
//! token endpoint (`ferry-auth`, which builds its verifiers on this crate and re-exports what callers need).
#![forbid(unsafe_code)]

mod bearer;
mod builtin;
mod dates;
mod error;
mod peek;
mod provider;

use std::time::Duration;

use ferry_proto::TenantName;

pub use bearer::{bearer_token, bearer_token_in};
pub use builtin::{check_key_pair, KeyRef, KeySet, NewToken, TokenRules};
pub use error::TokenError;
pub use jsonwebtoken::Algorithm;
pub use peek::unverified_issuer;
pub use provider::{claim_at, has_role, scopes, ProviderKeys, ProviderRules, ACCEPTED_ALGORITHMS};

/// The `iss` of tokens when the configuration names none.
pub const DEFAULT_ISSUER: &str = "ferry";
/// The `aud` of tunnel tokens.
pub const DEFAULT_AUDIENCE: &str = "ferry-tunnel";
/// The scope a client of the relay asks for (`scope=relay`) to get a token for a tenant that requires client
/// authentication: such a token opens no tunnel.
pub const RELAY_SCOPE: &str = "relay";
/// The scope a tunnel token must carry.
pub const TUNNEL_SCOPE: &str = "tunnel";
/// The scope of the tokens nodes of one cluster present to each other on the node link (`/_ferry/link`). Only a
/// node issues it (the token endpoint grants `tunnel` and `relay` only), and a token carrying it is good for
/// nothing else: no tunnel, no client of a tenant.
pub const NODE_SCOPE: &str = "node";
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The JOSE name of the only algorithm the built-in issuer signs and accepts.
pub const BUILTIN_ALGORITHM: &str = "EdDSA";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub tenant: TenantName,
    /// Space-separated scopes; contains `tunnel` when checked for [`Purpose::Tunnel`].
    pub scope: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    pub issuer: String,
    /// The connector secret that obtained the token (the `sid` claim of built-in tokens): when that secret is
    /// revoked, tunnels opened with the token can be closed. `None` for tokens of external providers.
    pub secret_id: Option<String>,
}

/// What a token is presented for, which decides whether it needs the tunnel scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Opening a tunnel (`/_ferry/tunnel`): the token must carry the tunnel scope.
    Tunnel,
    /// Calling the relay as a client of a tenant that requires client authentication: any scope but `node`.
    Client,
    /// A node of the cluster calling another on the node link: the token must carry the node scope.
    Node,
}
