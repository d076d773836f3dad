//! Ferry's authentication of connectors.
//!
//! Owns: connector secrets (generation, argon2id hashing, checking against the store off the async threads),
//! tenant creation with its first secret, the built-in OAuth 2 client-credentials token endpoint
//! ([`TokenIssuer::client_credentials`], RFC 6749 §4.4 as `docs/protocol.md` §1 describes it), the Ed25519
//! signing key kept in the store, and token verification behind the [`TokenVerifier`] trait.
//! Does not own: HTTP serving (the caller passes the header values and body in and writes the [`TokenReply`]
//! out), persistence (`ferry-store`), external OpenID Connect providers and management API keys (later).
#![forbid(unsafe_code)]

mod endpoint;
mod error;
mod secret;
mod token;

pub use endpoint::TokenReply;
pub use error::AuthError;
pub use secret::{
    add_client_secret, check_client_secret, create_tenant, generate_secret, hash_secret,
    verify_secret, SECRET_PREFIX,
};
pub use token::{
    BuiltinVerifier, Claims, IssuedToken, IssuerSettings, TokenIssuer, TokenVerifier,
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, DEFAULT_TTL, LEEWAY, TUNNEL_SCOPE,
};
