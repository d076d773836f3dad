//! Ferry's persistent state behind one [`Store`] trait.
//!
//! Owns: the `Store` trait and its record types (tenants, connector secret hashes, token signing keys), the
//! SQLite implementation ([`SqliteStore`], the embedded default), the PostgreSQL implementation
//! ([`PostgresStore`], shared by a cluster), the one resolver from a database URL to a store ([`open_url`]), the
//! versioned migrations of every backend (`migrations/<backend>/`), and a backend-independent conformance suite
//! ([`conformance`], compiled for this crate's tests and behind the `conformance` feature) that every
//! implementation must pass.
//! Does not own: hashing or checking secrets, generating keys, issuing tokens (all in `ferry-auth`); where the
//! URL comes from (configuration, in `ferry-config`).
#![forbid(unsafe_code)]

mod error;
mod postgres;
mod resolve;
mod sqlite;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_proto::TenantName;

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use resolve::{open_url, ACCEPTED_SCHEMES};
pub use sqlite::SqliteStore;

/// The file name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "ferry.db";

/// A tenant: the unit that owns connectors, targets and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: TenantName,
    /// Unix seconds.
    pub created_at: i64,
}

/// One connector secret of a tenant, stored only as an argon2 PHC hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Opaque id, unique across tenants; used to revoke the secret.
    pub id: String,
    pub tenant: TenantName,
    /// PHC string (never the plain secret).
    pub hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the secret is refused from this instant on.
    pub expires_at: Option<i64>,
    /// Unix seconds; set once when the secret is revoked.
    pub revoked_at: Option<i64>,
}

/// A key that signs the tokens of the built-in token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id, carried in the `kid` header of every token it signs.
    pub kid: String,
    /// JOSE algorithm name, e.g. `EdDSA`.
    pub algorithm: String,
    /// The private key as a PKCS#8 document.
    pub private_der: Vec<u8>,
    /// The raw public key (32 bytes for Ed25519).
    pub public_key: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_der", &"***")
            .field("public_key", &self.public_key)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Ferry's persistent state. Every method is one atomic operation; implementations must be safe to use from
/// several processes on the same database at once.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create a tenant; [`StoreError::AlreadyExists`] if it is present.
    async fn create_tenant(&self, name: &TenantName) -> Result<Tenant, StoreError>;
    async fn get_tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError>;
    /// All tenants, ordered by name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Delete a tenant and all its secrets; `false` if it did not exist.
    async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError>;

    /// Store a secret hash for a tenant; [`StoreError::NotFound`] if the tenant does not exist.
    async fn add_secret(
        &self,
        tenant: &TenantName,
        hash: &str,
        expires_at: Option<i64>,
    ) -> Result<SecretRecord, StoreError>;
    /// Secrets of the tenant that are neither revoked nor expired at `now` (unix seconds), newest first. Empty
    /// for an unknown tenant.
    async fn active_secrets(
        &self,
        tenant: &TenantName,
        now: i64,
    ) -> Result<Vec<SecretRecord>, StoreError>;
    /// Revoke one secret of the tenant; `false` if no such unrevoked secret exists.
    async fn revoke_secret(&self, tenant: &TenantName, id: &str) -> Result<bool, StoreError>;

    /// All signing keys, newest first (ties broken by `kid`, descending, so every reader agrees).
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Add a signing key (key rotation); [`StoreError::AlreadyExists`] if the kid is taken.
    async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError>;
    /// Add `key` only if the store holds no signing key at all, atomically, so that processes racing on their
    /// first start agree on one key. `true` if it was added.
    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError>;
}

/// The current time in unix seconds, as every store timestamp is written.
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
