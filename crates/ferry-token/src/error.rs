//! Why a token was refused, or could not be made. The messages of the rejections are safe to show a client: they
//! never contain a secret, a token or a claim value.

use jsonwebtoken::errors::ErrorKind;

/// Why a token was refused ([`TokenError::is_rejection`]), or why signing one failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token's `exp` (plus the leeway) has passed.
    #[error("token has expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not match the token (forged or altered).
    #[error("token signature is invalid")]
    BadSignature,
    /// The token names a signing key (`kid`) that is not known.
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The token is signed with an algorithm that is not accepted.
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
    /// A signing key could not be read or used.
    #[error("signing key is unusable: {0}")]
    Key(String),
    /// Signing a token failed.
    #[error("signing a token failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl TokenError {
    /// Whether the error is a refused token (the client's fault, answered with 401), as opposed to a key that
    /// cannot sign.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, TokenError::Key(_) | TokenError::Sign(_))
    }
}

/// The rejection a `jsonwebtoken` error stands for.
pub(crate) fn from_jwt(error: &jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenError::UnsupportedAlgorithm,
        ErrorKind::MissingRequiredClaim(_) => TokenError::Malformed("a required claim is missing"),
        ErrorKind::InvalidToken => TokenError::Malformed("not a JWT"),
        ErrorKind::Base64(_) => TokenError::Malformed("bad base64url encoding"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            TokenError::Malformed("bad JSON in header or claims")
        }
        _ => TokenError::BadSignature,
    }
}
