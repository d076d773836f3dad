//! Ferry's authentication of connectors and admins.
//!
//! Owns: connector secrets (generation, argon2id hashing, checking against the store off the async threads),
//! tenant creation with its first secret, the built-in OAuth 2 client-credentials token endpoint
//! ([`TokenIssuer::client_credentials`], RFC 6749 §4.4 as `docs/protocol.md` §1 describes it) with limits on
//! repeated failures, the Ed25519 signing keys kept in the store and the decisions about them
//! ([`maintain_signing_keys`], run by the cluster's worker or a node on its own), the discovery and JWKS
//! documents, token verification behind the [`TokenVerifier`] trait (built-in, external OpenID Connect, or
//! both via [`CombinedVerifier`]), the mapping of the provider's claims to management API roles
//! ([`RoleRules`]) for its bearer tokens ([`AdminCheck`]) and for dashboard sign-in through it (authorization
//! code flow with PKCE, [`OidcSignIn`]).
//! What a token is and how it is checked, without the store (the bearer header, key sets, claims), is
//! `ferry-token`, re-exported here where callers need it. Does not own: HTTP serving (the caller passes the
//! header values and body in and writes the [`TokenReply`] out), persistence (`ferry-store`), management API
//! keys (`ferry-admin`).
#![forbid(unsafe_code)]

mod combined;
mod discovery;
mod endpoint;
mod error;
mod limit;
mod node;
mod oidc;
mod roles;
mod secret;
mod sign_in;
mod token;

pub use combined::CombinedVerifier;
pub use discovery::{WellKnown, JWKS_PATH, OPENID_CONFIGURATION_PATH};
pub use endpoint::TokenReply;
pub use error::AuthError;
pub use ferry_token::{bearer_token, bearer_token_in, Purpose, TokenError};
pub use limit::{FailureLimiter, Limited, RateLimitSettings};
pub use node::{issuer_settings, oidc_settings, KeyDuty, NodeAuth};
pub use oidc::{
    claim_at, AdminCheck, AdminDecision, OidcSettings, OidcVerifier, ProviderEndpoints,
    ACCEPTED_ALGORITHMS, DISCOVERY_PATH,
};
pub use roles::{MappedRole, RoleEntry, RoleRules};
pub use secret::{
    add_client_secret, check_client_secret, create_tenant, generate_secret, hash_secret,
    matching_secret, verify_secret, SECRET_PREFIX,
};
pub use sign_in::{
    pkce_challenge, sign_in_settings, OidcSignIn, SignInError, SignInSettings, SignInStart,
    SignedIn, STATE_TTL,
};
pub use token::{
    maintain_signing_keys, BackgroundTask, BuiltinVerifier, Claims, IssuedToken, IssuerSettings,
    KeyMaintenance, Rotation, TokenIssuer, TokenVerifier, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
    DEFAULT_KEY_REFRESH, DEFAULT_TTL, LEEWAY, NODE_SCOPE, NODE_TOKEN_TTL, RELAY_SCOPE,
    TUNNEL_SCOPE,
};
