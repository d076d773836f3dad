//! The authentication error type. Messages of the token variants are safe to show a client: they never
//! contain a secret, a token or a claim value. The token variants are `ferry_token::TokenError`'s, one for one
//! (`From`), kept here so that callers match on one type.

use ferry_store::StoreError;
use ferry_token::TokenError;

/// Why an authentication operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token's `exp` (plus the leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not match the token (forged or altered).
    #[error("token signature is invalid")]
    BadSignature,
    /// The token names a signing key (`kid`) this node does not know.
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The token is signed with an algorithm other than EdDSA.
    #[error("token algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The token's `aud` is not this service.
    #[error("token is meant for another audience")]
    WrongAudience,
    /// The token's `iss` is not the expected issuer.
    #[error("token is from an unexpected issuer")]
    WrongIssuer,
    /// The token does not grant the `tunnel` scope.
    #[error("token does not grant the tunnel scope")]
    MissingScope,
    /// The token cannot be read (not a JWT, bad encoding, a required claim missing or invalid).
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// Hashing a secret failed.
    #[error("hashing a secret failed")]
    Hash(#[source] argon2::password_hash::Error),
    /// A signing key could not be generated, read or used.
    #[error("signing key is unusable: {0}")]
    Key(String),
    /// Signing a token failed.
    #[error("signing a token failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An external OpenID Connect provider could not be reached or answered something unusable.
    #[error("identity provider: {0}")]
    Provider(String),
    /// A configuration value cannot be used (the message names its key).
    #[error("{0}")]
    Config(String),
    /// A blocking task (argon2) panicked or was cancelled.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl AuthError {
    /// Whether the error is a refused token (the client's fault, answered with 401), as opposed to a failure of
    /// Ferry or its store.
    pub fn is_token_rejection(&self) -> bool {
        matches!(
            self,
            AuthError::Expired
                | AuthError::NotYetValid
                | AuthError::BadSignature
                | AuthError::UnknownKey
                | AuthError::UnsupportedAlgorithm
                | AuthError::WrongAudience
                | AuthError::WrongIssuer
                | AuthError::MissingScope
                | AuthError::Malformed(_)
        )
    }
}

impl From<TokenError> for AuthError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Expired => AuthError::Expired,
            TokenError::NotYetValid => AuthError::NotYetValid,
            TokenError::BadSignature => AuthError::BadSignature,
            TokenError::UnknownKey => AuthError::UnknownKey,
            TokenError::UnsupportedAlgorithm => AuthError::UnsupportedAlgorithm,
            TokenError::WrongAudience => AuthError::WrongAudience,
            TokenError::WrongIssuer => AuthError::WrongIssuer,
            TokenError::MissingScope => AuthError::MissingScope,
            TokenError::Malformed(what) => AuthError::Malformed(what),
            TokenError::Key(message) => AuthError::Key(message),
            TokenError::Sign(error) => AuthError::Sign(error),
        }
    }
}
