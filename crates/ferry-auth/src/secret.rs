//! Connector secrets: generated once, shown once, stored only as argon2id hashes, checked off the async threads.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use ferry_proto::TenantName;
use ferry_store::{unix_now, SecretRecord, Store, Tenant};
use rand::RngCore as _;

use crate::AuthError;

/// Every generated secret starts with this, so a leaked one is easy to recognise (and to scan for).
pub const SECRET_PREFIX: &str = "fsec_";

/// A new connector secret: 32 random bytes, base64url without padding, prefixed with [`SECRET_PREFIX`].
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut secret = String::with_capacity(SECRET_PREFIX.len() + 43);
    secret.push_str(SECRET_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut secret);
    secret
}

/// Hash a secret with argon2id (default parameters, random salt) into a PHC string. Slow on purpose: call it
/// from `tokio::task::spawn_blocking` in async code.
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(AuthError::Hash)?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(AuthError::Hash)
}

/// Whether `secret` matches the PHC string `phc` (false for a malformed `phc`). Slow on purpose: call it from
/// `tokio::task::spawn_blocking` in async code.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash that matches no secret, verified against when there is nothing real to compare with, so that an
/// unknown tenant costs as much time as a wrong secret.
fn decoy_hash() -> Option<&'static str> {
    static DECOY: OnceLock<Option<String>> = OnceLock::new();
    DECOY
        .get_or_init(|| hash_secret(&generate_secret()).ok())
        .as_deref()
}

/// Spend one argon2 verification for nothing (blocking).
pub(crate) fn burn_one_verify(secret: &str) {
    if let Some(decoy) = decoy_hash() {
        let _ = verify_secret(secret, decoy);
    }
}

/// Spend one argon2 verification for nothing, off the async threads.
pub(crate) async fn burn_one_verify_async(secret: &str) -> Result<(), AuthError> {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || burn_one_verify(&secret))
        .await
        .map_err(AuthError::Task)
}

/// Whether `secret` matches one of the tenant's active (unrevoked, unexpired) secrets. An unknown tenant, or one
/// without active secrets, answers `false` after the same work as a wrong secret. Runs argon2 on the blocking
/// pool.
pub async fn check_client_secret(
    store: &dyn Store,
    tenant: &TenantName,
    secret: &str,
) -> Result<bool, AuthError> {
    Ok(matching_secret(store, tenant, secret).await?.is_some())
}

/// The id of the tenant's active secret that `secret` matches, if any (see [`check_client_secret`]).
pub async fn matching_secret(
    store: &dyn Store,
    tenant: &TenantName,
    secret: &str,
) -> Result<Option<String>, AuthError> {
    let records: Vec<(String, String)> = store
        .active_secrets(tenant, unix_now())
        .await?
        .into_iter()
        .map(|record| (record.id, record.hash))
        .collect();
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || {
        if records.is_empty() {
            burn_one_verify(&secret);
            None
        } else {
            records
                .into_iter()
                .find(|(_, hash)| verify_secret(&secret, hash))
                .map(|(id, _)| id)
        }
    })
    .await
    .map_err(AuthError::Task)
}

async fn hash_off_thread(secret: &str) -> Result<String, AuthError> {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || hash_secret(&secret))
        .await
        .map_err(AuthError::Task)?
}

/// Give a tenant one more secret (rotation), valid until `expires_at` (unix seconds) if set. Returns the record
/// and the plain secret, which is shown once and never stored.
pub async fn add_client_secret(
    store: &dyn Store,
    tenant: &TenantName,
    expires_at: Option<i64>,
) -> Result<(SecretRecord, String), AuthError> {
    let secret = generate_secret();
    let hash = hash_off_thread(&secret).await?;
    let record = store.add_secret(tenant, &hash, expires_at).await?;
    Ok((record, secret))
}

/// Create a tenant with a first secret. Returns the tenant and the plain secret, which is shown once and never
/// stored. Fails with [`ferry_store::StoreError::AlreadyExists`] (inside [`AuthError::Store`]) if the tenant
/// exists.
pub async fn create_tenant(
    store: &dyn Store,
    name: &TenantName,
) -> Result<(Tenant, String), AuthError> {
    let secret = generate_secret();
    let hash = hash_off_thread(&secret).await?;
    let tenant = store
        .create_tenant(name, &ferry_store::TenantFields::default())
        .await?;
    if let Err(error) = store.add_secret(name, &hash, None).await {
        // Do not leave a tenant behind that nobody can authenticate as.
        if let Err(cleanup) = store.delete_tenant(name).await {
            tracing::warn!(tenant = %name, error = %cleanup, "removing a half-created tenant failed");
        }
        return Err(error.into());
    }
    Ok((tenant, secret))
}

#[cfg(test)]
mod tests {
    use ferry_store::{SqliteStore, StoreError};

    use super::*;

    #[test]
    fn generated_secrets_have_the_documented_shape() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let body = a.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(body.len(), 43);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .expect("base64url");
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn hash_and_verify() {
        let secret = generate_secret();
        let phc = hash_secret(&secret).expect("hash");
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains(&secret));
        assert!(verify_secret(&secret, &phc));
        assert!(!verify_secret("fsec_wrong", &phc));
        assert!(!verify_secret(&secret, "not a phc string"));
        // Salted: the same secret hashes differently each time.
        assert_ne!(phc, hash_secret(&secret).expect("hash again"));
    }

    #[tokio::test]
    async fn create_tenant_and_check_secrets() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let name = TenantName::new("demo").expect("name");
        let (tenant, secret) = create_tenant(&store, &name).await.expect("create");
        assert_eq!(tenant.name, name);
        assert!(check_client_secret(&store, &name, &secret)
            .await
            .expect("check"));
        assert!(!check_client_secret(&store, &name, "fsec_nope")
            .await
            .expect("check wrong"));

        let err = create_tenant(&store, &name).await.expect_err("duplicate");
        assert!(
            matches!(err, AuthError::Store(StoreError::AlreadyExists { .. })),
            "{err:?}"
        );

        // A second secret works too; revoking the first leaves only the second.
        let (record, second) = add_client_secret(&store, &name, None).await.expect("add");
        assert!(check_client_secret(&store, &name, &second)
            .await
            .expect("check 2"));
        let first_id = store
            .active_secrets(&name, unix_now())
            .await
            .expect("active")
            .into_iter()
            .find(|s| s.id != record.id)
            .expect("first secret")
            .id;
        assert!(store.revoke_secret(&name, &first_id).await.expect("revoke"));
        assert!(!check_client_secret(&store, &name, &secret)
            .await
            .expect("revoked"));
        assert!(check_client_secret(&store, &name, &second)
            .await
            .expect("still"));

        let unknown = TenantName::new("nobody").expect("name");
        assert!(!check_client_secret(&store, &unknown, &secret)
            .await
            .expect("unknown tenant"));
    }
}
