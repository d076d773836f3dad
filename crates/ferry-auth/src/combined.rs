//! The verifier of a node with both the built-in issuer and an external provider: each token goes to the
//! verifier of the issuer its (unverified) `iss` names, which then checks everything, `iss` included.

use std::sync::Arc;

use crate::{AuthError, Claims, TokenVerifier};

/// Routes tokens by `iss` to one of several verifiers.
pub struct CombinedVerifier {
    /// (issuer, verifier) pairs, tried by exact `iss` match.
    verifiers: Vec<(String, Arc<dyn TokenVerifier>)>,
}

impl std::fmt::Debug for CombinedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CombinedVerifier")
            .field(
                "issuers",
                &self.verifiers.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CombinedVerifier {
    /// An empty verifier (refuses every token until verifiers are added).
    pub fn new() -> Self {
        CombinedVerifier {
            verifiers: Vec::new(),
        }
    }

    /// Send tokens whose `iss` is `issuer` to `verifier`.
    pub fn with(mut self, issuer: impl Into<String>, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.verifiers.push((issuer.into(), verifier));
        self
    }

    fn pick(&self, token: &str) -> Result<&Arc<dyn TokenVerifier>, AuthError> {
        let iss = ferry_token::unverified_issuer(token)?;
        self.verifiers
            .iter()
            .find(|(issuer, _)| *issuer == iss)
            .map(|(_, v)| v)
            .ok_or(AuthError::WrongIssuer)
    }
}

impl Default for CombinedVerifier {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl TokenVerifier for CombinedVerifier {
    fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.pick(token)?.verify(token)
    }

    async fn verify_async(&self, token: &str) -> Result<Claims, AuthError> {
        self.pick(token)?.verify_async(token).await
    }

    async fn verify_client(&self, token: &str) -> Result<Claims, AuthError> {
        self.pick(token)?.verify_client(token).await
    }
}
