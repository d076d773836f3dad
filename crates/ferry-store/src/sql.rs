//! The [`Store`](crate::Store) methods whose SQL is the same on every backend, written once.
//!
//! Owns: [`impl_store!`], which implements `Store` for a backend's store type, and the fixed statements it uses.
//! SQLite and PostgreSQL accept the same SQL for all but a few operations (both take `$n` parameters, `ON
//! CONFLICT` upserts, `RETURNING`, row values); those few are hooks that each backend implements as inherent
//! methods of its store type, with its own SQL:
//!
//! - `write_transaction(&self, context) -> Result<Transaction<'static, DB>, StoreError>`: a transaction for a
//!   multi-statement write (SQLite takes the write lock at its start, so that no other process slips in);
//! - `signing_keys_transaction(&self, context) -> Result<Transaction<'static, DB>, StoreError>`: a transaction in
//!   which no other one can add a signing key, for [`Store::add_first_signing_key`];
//! - `expire_stale_nodes(&self, before) -> Result<u64, StoreError>`: [`Store::expire_nodes`];
//! - `expire_silent(&self, before) -> Result<ExpiredNodes, StoreError>`: [`Store::expire_silent_nodes`];
//! - `stats_transaction(&self, context)`: a transaction for [`Store::put_stats`] that a roll-up cannot
//!   interleave with;
//! - `stats_rollup_transaction(&self, context)`: a transaction for one minute of [`Store::roll_up_stats`] in
//!   which no other transaction writes statistics (readers go on).
//!
//! The macro's third argument is the backend's SQL expression for the current time in unix milliseconds, one
//! value for the whole statement (the lease times).
//!
//! The store type must have a `pool: sqlx::Pool<DB>` field. Reading records out of rows, paging and the dynamic
//! list queries live in [`crate::rows`].
//!
//! [`Store`]: crate::Store
//! [`Store::add_first_signing_key`]: crate::Store::add_first_signing_key
//! [`Store::expire_nodes`]: crate::Store::expire_nodes
//! [`Store::expire_silent_nodes`]: crate::Store::expire_silent_nodes
//! [`Store::put_stats`]: crate::Store::put_stats
//! [`Store::roll_up_stats`]: crate::Store::roll_up_stats

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use crate::SigningKey;

/// `INSERT` one node's counts of one tenant and minute, replacing what the node wrote before, unless the tenant's
/// minute has been rolled up (it has a row of node `''`). Binds: tenant, minute, node, requests, bytes in, bytes
/// out, the five status classes, the latency histogram text.
pub(crate) const STATS_UPSERT: &str = "INSERT INTO stats \
     (tenant, minute, node, requests, bytes_in, bytes_out, \
     status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, latency) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
     WHERE NOT EXISTS (SELECT 1 FROM stats WHERE tenant = $1 AND minute = $2 AND node = '') \
     ON CONFLICT (tenant, minute, node) DO UPDATE SET requests = excluded.requests, \
     bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, \
     status_1xx = excluded.status_1xx, status_2xx = excluded.status_2xx, \
     status_3xx = excluded.status_3xx, status_4xx = excluded.status_4xx, \
     status_5xx = excluded.status_5xx, latency = excluded.latency";

/// `INSERT` a roll-up row (binds as [`STATS_UPSERT`], with node `''`) where the minute's rows were deleted.
pub(crate) const STATS_INSERT: &str = "INSERT INTO stats \
     (tenant, minute, node, requests, bytes_in, bytes_out, \
     status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, latency) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// The oldest minute before `$1` that still has per-node statistics rows (`NULL`: none); uses the partial index
/// `stats_node_rows`.
pub(crate) const STATS_OLDEST_UNROLLED: &str =
    "SELECT MIN(minute) FROM stats WHERE node <> '' AND minute < $1";

/// `INSERT` a signing key; binds as [`bind_signing_key`].
pub(crate) const SIGNING_KEY_INSERT: &str = "INSERT INTO signing_keys \
     (kid, algorithm, private_der, public_key, created_at) VALUES ($1, $2, $3, $4, $5)";

/// `INSERT` a signing key only while the newest key is the one whose kid is bound sixth (`NULL`: only into an empty
/// table); binds as [`bind_signing_key`], then that kid. Atomic only in the transaction of the backend's
/// `signing_keys_transaction`.
pub(crate) const SIGNING_KEY_INSERT_AFTER: &str = "INSERT INTO signing_keys \
     (kid, algorithm, private_der, public_key, created_at) \
     SELECT $1, $2, $3, $4, $5 WHERE (SELECT kid FROM signing_keys \
     ORDER BY created_at DESC, kid DESC LIMIT 1) IS NOT DISTINCT FROM $6";

/// Bind the values of [`SIGNING_KEY_INSERT`] and [`SIGNING_KEY_INSERT_AFTER`] (without its sixth).
pub(crate) fn bind_signing_key<'q, DB>(
    query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    key: &'q SigningKey,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    i64: Encode<'q, DB> + Type<DB>,
{
    query
        .bind(key.kid.as_str())
        .bind(key.algorithm.as_str())
        .bind(key.private_der.as_slice())
        .bind(key.public_key.as_slice())
        .bind(key.created_at)
}

/// A lease's time to live in milliseconds as the databases take it: capped far below what would overflow when
/// added to the current time.
pub(crate) fn lease_ttl_ms(ttl: std::time::Duration) -> i64 {
    const MAX_TTL_MS: i64 = i64::MAX / 4;
    i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS))
}

/// Refuse an empty lease name or holder.
pub(crate) fn check_lease_names(name: &str, holder: &str) -> Result<(), crate::StoreError> {
    if name.is_empty() || holder.is_empty() {
        return Err(crate::StoreError::InvalidInput {
            reason: "a lease needs a name and a holder".to_owned(),
        });
    }
    Ok(())
}

/// `INSERT` one request log entry (the database assigns the id).
pub(crate) const LOG_INSERT: &str =
    "INSERT INTO request_log (tenant, at_ms, request_id, method, target, path, \
     status, duration_ms, bytes_in, bytes_out, client_addr) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Implement [`Store`](crate::Store) for `$store`, a store on the sqlx backend `$db` (see the module docs for what
/// `$store` must provide).
macro_rules! impl_store {
    ($store:ty, $db:ty, $now_ms:literal) => {
        const _: () = {
            use $crate::rows::{
                admin_key_from_row, connection_from_row, connections_page, connections_query,
                db_count, histogram_text, is_foreign_key_violation, is_unique_violation,
                key_from_row, lease_from_row, log_entry_from_row, node_from_row,
                request_log_query, revoked_from_row, rows, secret_from_row, settings_text,
                stats_from_row, stats_query, sum_stats, tenant_from_row, tenants_page,
                tenants_query, Columns, ADMIN_KEY_COLUMNS, CONNECTION_COLUMNS, LEASE_COLUMNS,
                NODE_COLUMNS, SECRET_COLUMNS, STATUS_COLUMNS, TENANT_COLUMNS,
            };
            use $crate::rows::{
                audit_from_row, audit_query, session_from_row, tenant_list_text, user_from_row,
                SESSION_COLUMNS, USER_COLUMNS,
            };
            use $crate::sql::{
                bind_signing_key, check_lease_names, lease_ttl_ms, LOG_INSERT, SIGNING_KEY_INSERT,
                SIGNING_KEY_INSERT_AFTER, STATS_INSERT, STATS_OLDEST_UNROLLED, STATS_UPSERT,
            };
            use $crate::{
                unix_now, AdminKey, AuditEntry, AuditQuery, ConnectionQuery, ConnectionRecord,
                ExpiredNodes, Lease, NodeRecord, Page, RequestLogEntry, Role, SecretRecord,
                SessionRecord, SigningKey, StatsRecord, StatsRollUp, StoreError, Tenant,
                TenantFields, TenantQuery, UserRecord, ROLLUP_NODE,
            };
            use ferry_proto::TenantName;

            /// Bind the values of [`STATS_UPSERT`].
            fn bind_stats<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                node: &'q str,
                record: &'q StatsRecord,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                let mut query = query
                    .bind(record.tenant.as_str())
                    .bind(record.minute)
                    .bind(node)
                    .bind(db_count(record.requests))
                    .bind(db_count(record.bytes_in))
                    .bind(db_count(record.bytes_out));
                for count in record.status_classes {
                    query = query.bind(db_count(count));
                }
                query.bind(histogram_text(&record.latency_buckets))
            }

            /// Bind the values of [`LOG_INSERT`].
            fn bind_log_entry<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                entry: &'q RequestLogEntry,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                query
                    .bind(entry.tenant.as_str())
                    .bind(entry.at_ms)
                    .bind(&entry.request_id)
                    .bind(&entry.method)
                    .bind(&entry.target)
                    .bind(&entry.path)
                    .bind(i64::from(entry.status))
                    .bind(db_count(entry.duration_ms))
                    .bind(db_count(entry.bytes_in))
                    .bind(db_count(entry.bytes_out))
                    .bind(&entry.client_addr)
            }

            #[async_trait::async_trait]
            impl $crate::Store for $store {
                async fn create_tenant(
                    &self,
                    name: &TenantName,
                    fields: &TenantFields,
                ) -> Result<Tenant, StoreError> {
                    let created_at = unix_now();
                    let result = sqlx::query(
                        "INSERT INTO tenants \
                         (name, display_name, description, settings, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(name.as_str())
                    .bind(&fields.display_name)
                    .bind(&fields.description)
                    .bind(settings_text(&fields.settings)?)
                    .bind(created_at)
                    .execute(&self.pool)
                    .await;
                    match result {
                        Ok(_) => Ok(Tenant {
                            name: name.clone(),
                            display_name: fields.display_name.clone(),
                            description: fields.description.clone(),
                            settings: fields.settings.clone(),
                            created_at,
                            updated_at: created_at,
                        }),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "tenant",
                            name: name.to_string(),
                        }),
                        Err(e) => Err(StoreError::db("creating a tenant")(e)),
                    }
                }

                async fn get_tenant(
                    &self,
                    name: &TenantName,
                ) -> Result<Option<Tenant>, StoreError> {
                    sqlx::query(&format!(
                        "SELECT {TENANT_COLUMNS} FROM tenants WHERE name = $1"
                    ))
                    .bind(name.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("reading a tenant"))?
                    .as_ref()
                    .map(tenant_from_row)
                    .transpose()
                }

                async fn update_tenant(
                    &self,
                    name: &TenantName,
                    fields: &TenantFields,
                ) -> Result<Option<Tenant>, StoreError> {
                    sqlx::query(&format!(
                        "UPDATE tenants SET display_name = $1, description = $2, settings = $3, \
                         updated_at = CASE WHEN $4 > updated_at THEN $4 ELSE updated_at + 1 END \
                         WHERE name = $5 RETURNING {TENANT_COLUMNS}"
                    ))
                    .bind(&fields.display_name)
                    .bind(&fields.description)
                    .bind(settings_text(&fields.settings)?)
                    .bind(unix_now())
                    .bind(name.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("updating a tenant"))?
                    .as_ref()
                    .map(tenant_from_row)
                    .transpose()
                }

                async fn list_tenants(
                    &self,
                    query: &TenantQuery,
                ) -> Result<Page<Tenant>, StoreError> {
                    let mut list = tenants_query::<$db>(query);
                    let items = list
                        .builder
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db("listing tenants"))?;
                    Ok(tenants_page(rows(items, tenant_from_row)?, list.limit))
                }

                async fn delete_tenant(&self, name: &TenantName) -> Result<bool, StoreError> {
                    const CONTEXT: &str = "deleting a tenant";
                    let mut tx = self.write_transaction(CONTEXT).await?;
                    sqlx::query("DELETE FROM connections WHERE tenant = $1")
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    // Secrets go with the tenant through `ON DELETE CASCADE`.
                    let done = sqlx::query("DELETE FROM tenants WHERE name = $1")
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn add_secret(
                    &self,
                    tenant: &TenantName,
                    hash: &str,
                    expires_at: Option<i64>,
                ) -> Result<SecretRecord, StoreError> {
                    let record = SecretRecord {
                        id: uuid::Uuid::new_v4().simple().to_string(),
                        tenant: tenant.clone(),
                        hash: hash.to_owned(),
                        created_at: unix_now(),
                        expires_at,
                        revoked_at: None,
                    };
                    let result = sqlx::query(
                    "INSERT INTO secrets (id, tenant, hash, created_at, expires_at, revoked_at) \
                     VALUES ($1, $2, $3, $4, $5, NULL)",
                )
                .bind(&record.id)
                .bind(record.tenant.as_str())
                .bind(&record.hash)
                .bind(record.created_at)
                .bind(record.expires_at)
                .execute(&self.pool)
                .await;
                    match result {
                        Ok(_) => Ok(record),
                        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound {
                            kind: "tenant",
                            name: tenant.to_string(),
                        }),
                        Err(e) => Err(StoreError::db("adding a secret")(e)),
                    }
                }

                async fn active_secrets(
                    &self,
                    tenant: &TenantName,
                    now: i64,
                ) -> Result<Vec<SecretRecord>, StoreError> {
                    let found = sqlx::query(&format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets \
                         WHERE tenant = $1 AND revoked_at IS NULL \
                         AND (expires_at IS NULL OR expires_at > $2) \
                         ORDER BY created_at DESC, id DESC"
                    ))
                    .bind(tenant.as_str())
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db("reading active secrets"))?;
                    rows(found, secret_from_row)
                }

                async fn revoke_secret(
                    &self,
                    tenant: &TenantName,
                    id: &str,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE secrets SET revoked_at = $1 \
                         WHERE tenant = $2 AND id = $3 AND revoked_at IS NULL",
                    )
                    .bind(unix_now())
                    .bind(tenant.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("revoking a secret"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn list_secrets(
                    &self,
                    tenant: &TenantName,
                ) -> Result<Vec<SecretRecord>, StoreError> {
                    let found = sqlx::query(&format!(
                        "SELECT {SECRET_COLUMNS} FROM secrets WHERE tenant = $1 \
                         ORDER BY created_at DESC, id DESC"
                    ))
                    .bind(tenant.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db("listing secrets"))?;
                    rows(found, secret_from_row)
                }

                async fn secrets_revoked_since(
                    &self,
                    since: i64,
                ) -> Result<Vec<(TenantName, String)>, StoreError> {
                    let found = sqlx::query(
                    "SELECT tenant, id FROM secrets WHERE revoked_at >= $1 ORDER BY revoked_at, id",
                )
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("reading revoked secrets"))?;
                    rows(found, revoked_from_row)
                }

                async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
                    let found = sqlx::query(
                    "SELECT kid, algorithm, private_der, public_key, created_at FROM signing_keys \
                     ORDER BY created_at DESC, kid DESC",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("reading signing keys"))?;
                    rows(found, key_from_row)
                }

                async fn add_signing_key(&self, key: &SigningKey) -> Result<(), StoreError> {
                    let result = bind_signing_key(sqlx::query(SIGNING_KEY_INSERT), key)
                        .execute(&self.pool)
                        .await;
                    match result {
                        Ok(_) => Ok(()),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "signing key",
                            name: key.kid.clone(),
                        }),
                        Err(e) => Err(StoreError::db("adding a signing key")(e)),
                    }
                }

                async fn add_first_signing_key(
                    &self,
                    key: &SigningKey,
                ) -> Result<bool, StoreError> {
                    self.add_signing_key_after(None, key).await
                }

                async fn add_signing_key_after(
                    &self,
                    newest: Option<&str>,
                    key: &SigningKey,
                ) -> Result<bool, StoreError> {
                    const CONTEXT: &str = "adding a signing key after the newest";
                    let mut tx = self.signing_keys_transaction(CONTEXT).await?;
                    let result = bind_signing_key(sqlx::query(SIGNING_KEY_INSERT_AFTER), key)
                        .bind(newest)
                        .execute(&mut *tx)
                        .await;
                    let done = match result {
                        Ok(done) => done,
                        Err(e) if is_unique_violation(&e) => {
                            return Err(StoreError::AlreadyExists {
                                kind: "signing key",
                                name: key.kid.clone(),
                            })
                        }
                        Err(e) => return Err(StoreError::db(CONTEXT)(e)),
                    };
                    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn remove_signing_key(&self, kid: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                        .bind(kid)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("removing a signing key"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn add_admin_key(&self, key: &AdminKey) -> Result<(), StoreError> {
                    let result = sqlx::query(
                        "INSERT INTO admin_keys \
                         (id, name, sha256, created_at, revoked_at, role, tenants) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&key.id)
                    .bind(&key.name)
                    .bind(&key.sha256)
                    .bind(key.created_at)
                    .bind(key.revoked_at)
                    .bind(key.role.as_str())
                    .bind(tenant_list_text(&key.tenants))
                    .execute(&self.pool)
                    .await;
                    match result {
                        Ok(_) => Ok(()),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "admin key",
                            name: key.id.clone(),
                        }),
                        Err(e) => Err(StoreError::db("adding an admin key")(e)),
                    }
                }

                async fn admin_key_by_hash(
                    &self,
                    sha256: &str,
                ) -> Result<Option<AdminKey>, StoreError> {
                    sqlx::query(&format!(
                        "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys \
                         WHERE sha256 = $1 AND revoked_at IS NULL"
                    ))
                    .bind(sha256)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("looking up an admin key"))?
                    .as_ref()
                    .map(admin_key_from_row)
                    .transpose()
                }

                async fn list_admin_keys(&self) -> Result<Vec<AdminKey>, StoreError> {
                    let found = sqlx::query(&format!(
                    "SELECT {ADMIN_KEY_COLUMNS} FROM admin_keys ORDER BY created_at DESC, id DESC"
                ))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::db("listing admin keys"))?;
                    rows(found, admin_key_from_row)
                }

                async fn revoke_admin_key(&self, id: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                    "UPDATE admin_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(unix_now())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(StoreError::db("revoking an admin key"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn record_connection(
                    &self,
                    connection: &ConnectionRecord,
                ) -> Result<(), StoreError> {
                    let result = sqlx::query(&format!(
                        "INSERT INTO connections ({CONNECTION_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(&connection.id)
                    .bind(connection.tenant.as_str())
                    .bind(&connection.connector_id)
                    .bind(&connection.node)
                    .bind(&connection.remote_addr)
                    .bind(connection.connected_at)
                    .bind(connection.disconnected_at)
                    .execute(&self.pool)
                    .await;
                    match result {
                        Ok(_) => Ok(()),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "connection",
                            name: connection.id.clone(),
                        }),
                        Err(e) => Err(StoreError::db("recording a connection")(e)),
                    }
                }

                async fn record_disconnection(&self, id: &str, at: i64) -> Result<(), StoreError> {
                    sqlx::query(
                        "UPDATE connections SET disconnected_at = $1 \
                         WHERE id = $2 AND disconnected_at IS NULL",
                    )
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("recording a disconnection"))?;
                    Ok(())
                }

                async fn list_connections(
                    &self,
                    query: &ConnectionQuery,
                ) -> Result<Page<ConnectionRecord>, StoreError> {
                    let mut list = connections_query::<$db>(query)?;
                    let found = list
                        .builder
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db("listing connections"))?;
                    Ok(connections_page(
                        rows(found, connection_from_row)?,
                        list.limit,
                    ))
                }

                async fn heartbeat_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
                    sqlx::query(&format!(
                        "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                         version = excluded.version, \
                         started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
                         roles = excluded.roles"
                    ))
                    .bind(&node.id)
                    .bind(&node.address)
                    .bind(&node.version)
                    .bind(node.started_at)
                    .bind(node.heartbeat_at)
                    .bind(&node.roles)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("recording a node heartbeat"))?;
                    Ok(())
                }

                async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
                    let found =
                        sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(StoreError::db("listing nodes"))?;
                    rows(found, node_from_row)
                }

                async fn expire_nodes(&self, before: i64) -> Result<u64, StoreError> {
                    self.expire_stale_nodes(before).await
                }

                async fn expire_silent_nodes(
                    &self,
                    before: i64,
                ) -> Result<ExpiredNodes, StoreError> {
                    self.expire_silent(before).await
                }

                async fn put_stats(
                    &self,
                    node: &str,
                    records: &[StatsRecord],
                ) -> Result<(), StoreError> {
                    const CONTEXT: &str = "writing statistics";
                    if node == ROLLUP_NODE {
                        return Err(StoreError::InvalidInput {
                            reason: "statistics need a node id (the empty one is the roll-up's)"
                                .to_owned(),
                        });
                    }
                    if records.is_empty() {
                        return Ok(());
                    }
                    // One order for every writer, so that concurrent transactions lock rows in the same order. The sort is
                    // stable: of two records of one tenant and minute, the later one is written last and wins.
                    let mut records: Vec<&StatsRecord> = records.iter().collect();
                    records.sort_by(|a, b| (&a.tenant, a.minute).cmp(&(&b.tenant, b.minute)));
                    let mut tx = self.stats_transaction(CONTEXT).await?;
                    for record in records {
                        bind_stats(sqlx::query(STATS_UPSERT), node, record)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db(CONTEXT))?;
                    }
                    tx.commit().await.map_err(StoreError::db(CONTEXT))
                }

                async fn stats(
                    &self,
                    tenant: Option<&TenantName>,
                    from: i64,
                    to: i64,
                ) -> Result<Vec<StatsRecord>, StoreError> {
                    let found = stats_query::<$db>(tenant, from, to)
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db("reading statistics"))?;
                    Ok(sum_stats(rows(found, stats_from_row)?))
                }

                async fn roll_up_stats(
                    &self,
                    before: i64,
                    max_minutes: u32,
                ) -> Result<StatsRollUp, StoreError> {
                    const CONTEXT: &str = "rolling statistics up";
                    let oldest = |before: i64| {
                        sqlx::query_scalar::<$db, Option<i64>>(STATS_OLDEST_UNROLLED).bind(before)
                    };
                    let mut done = StatsRollUp::default();
                    // Looked up without a lock first: most runs find nothing to do and take no lock at all.
                    if oldest(before)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(StoreError::db(CONTEXT))?
                        .is_none()
                    {
                        return Ok(done);
                    }
                    while done.minutes < u64::from(max_minutes) {
                        let mut tx = self.stats_rollup_transaction(CONTEXT).await?;
                        let Some(minute) = oldest(before)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(StoreError::db(CONTEXT))?
                        else {
                            tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                            return Ok(done);
                        };
                        // Every row of the minute, roll-up rows of earlier runs too (a late first write of a
                        // tenant's minute adds a node row beside them); ordered for `sum_stats`.
                        let found = sqlx::query(&format!(
                            "SELECT tenant, minute, node, requests, bytes_in, bytes_out, {}, latency \
                             FROM stats WHERE minute = $1 ORDER BY tenant",
                            STATUS_COLUMNS.join(", ")
                        ))
                        .bind(minute)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                        let mut merged = 0u64;
                        for row in &found {
                            if row.text("stats", "node")? != ROLLUP_NODE {
                                merged += 1;
                            }
                        }
                        let summed = sum_stats(rows(found, stats_from_row)?);
                        sqlx::query("DELETE FROM stats WHERE minute = $1")
                            .bind(minute)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db(CONTEXT))?;
                        for record in &summed {
                            bind_stats(sqlx::query(STATS_INSERT), ROLLUP_NODE, record)
                                .execute(&mut *tx)
                                .await
                                .map_err(StoreError::db(CONTEXT))?;
                        }
                        tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                        done.minutes += 1;
                        done.rows_merged += merged;
                    }
                    done.more = oldest(before)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(StoreError::db(CONTEXT))?
                        .is_some();
                    Ok(done)
                }

                async fn append_request_log(
                    &self,
                    entries: &[RequestLogEntry],
                ) -> Result<(), StoreError> {
                    const CONTEXT: &str = "appending to the request log";
                    if entries.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.write_transaction(CONTEXT).await?;
                    for entry in entries {
                        bind_log_entry(sqlx::query(LOG_INSERT), entry)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db(CONTEXT))?;
                    }
                    tx.commit().await.map_err(StoreError::db(CONTEXT))
                }

                async fn request_log(
                    &self,
                    tenant: Option<&TenantName>,
                    before_id: Option<i64>,
                    limit: u32,
                ) -> Result<Vec<RequestLogEntry>, StoreError> {
                    let found = request_log_query::<$db>(tenant, before_id, limit)
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db("reading the request log"))?;
                    rows(found, log_entry_from_row)
                }

                async fn prune_request_log(&self, before_ms: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query("DELETE FROM request_log WHERE at_ms < $1")
                        .bind(before_ms)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("pruning the request log"))?;
                    Ok(done.rows_affected())
                }

                async fn prune_history(&self, before: i64) -> Result<u64, StoreError> {
                    let connections = sqlx::query(
                        "DELETE FROM connections WHERE disconnected_at IS NOT NULL AND disconnected_at < $1",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("pruning the connection history"))?;
                    let stats = sqlx::query("DELETE FROM stats WHERE minute < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("pruning statistics"))?;
                    Ok(connections.rows_affected() + stats.rows_affected())
                }

                async fn acquire_lease(
                    &self,
                    name: &str,
                    holder: &str,
                    ttl: std::time::Duration,
                ) -> Result<Lease, StoreError> {
                    check_lease_names(name, holder)?;
                    // Every SET expression reads the row as it was before the statement, and the time is one
                    // value for the whole statement. Live and someone else's: unchanged. Live and the caller's:
                    // renewed (same term). Lapsed: the caller's, in a new term.
                    sqlx::query(concat!(
                        "INSERT INTO leases (name, holder, term, acquired_at_ms, expires_at_ms) \
                         VALUES ($1, $2, 1, ", $now_ms, ", ", $now_ms, " + $3) \
                         ON CONFLICT (name) DO UPDATE SET \
                         holder = CASE WHEN leases.expires_at_ms > ", $now_ms, " \
                             THEN leases.holder ELSE excluded.holder END, \
                         term = CASE WHEN leases.expires_at_ms > ", $now_ms, " \
                             THEN leases.term ELSE leases.term + 1 END, \
                         acquired_at_ms = CASE WHEN leases.expires_at_ms > ", $now_ms, " \
                             THEN leases.acquired_at_ms ELSE excluded.acquired_at_ms END, \
                         expires_at_ms = CASE WHEN leases.expires_at_ms > ", $now_ms, " \
                             AND leases.holder <> excluded.holder \
                             THEN leases.expires_at_ms ELSE excluded.expires_at_ms END \
                         RETURNING name, holder, term, acquired_at_ms, expires_at_ms"
                    ))
                    .bind(name)
                    .bind(holder)
                    .bind(lease_ttl_ms(ttl))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::db("acquiring a lease"))
                    .and_then(|row| lease_from_row(&row))
                }

                async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
                    check_lease_names(name, holder)?;
                    let done = sqlx::query(concat!(
                        "UPDATE leases SET expires_at_ms = ", $now_ms, " \
                         WHERE name = $1 AND holder = $2 AND expires_at_ms > ", $now_ms
                    ))
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("releasing a lease"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
                    sqlx::query(&format!(
                        "SELECT {LEASE_COLUMNS} FROM leases WHERE name = $1 AND expires_at_ms > {}",
                        $now_ms
                    ))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("reading a lease"))?
                    .as_ref()
                    .map(lease_from_row)
                    .transpose()
                }
                async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
                    let result = sqlx::query(&format!(
                        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(&user.name)
                    .bind(user.password_hash.as_deref())
                    .bind(user.role.as_str())
                    .bind(tenant_list_text(&user.tenants))
                    .bind(i64::from(user.disabled))
                    .bind(user.created_at)
                    .bind(user.last_sign_in_at)
                    .execute(&self.pool)
                    .await;
                    match result {
                        Ok(_) => Ok(()),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "user",
                            name: user.name.clone(),
                        }),
                        Err(e) => Err(StoreError::db("creating a user")(e)),
                    }
                }

                async fn get_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
                    sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(StoreError::db("reading a user"))?
                        .as_ref()
                        .map(user_from_row)
                        .transpose()
                }

                async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
                    let found =
                        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(StoreError::db("listing users"))?;
                    rows(found, user_from_row)
                }

                async fn set_user_disabled(
                    &self,
                    name: &str,
                    disabled: bool,
                ) -> Result<bool, StoreError> {
                    const CONTEXT: &str = "disabling or enabling a user";
                    let mut tx = self.write_transaction(CONTEXT).await?;
                    let done = sqlx::query("UPDATE users SET disabled = $1 WHERE name = $2")
                        .bind(i64::from(disabled))
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    if disabled {
                        sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                            .bind(name)
                            .execute(&mut *tx)
                            .await
                            .map_err(StoreError::db(CONTEXT))?;
                    }
                    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn set_user_password(
                    &self,
                    name: &str,
                    password_hash: Option<&str>,
                ) -> Result<bool, StoreError> {
                    const CONTEXT: &str = "changing a user's password";
                    let mut tx = self.write_transaction(CONTEXT).await?;
                    let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
                        .bind(password_hash)
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn set_user_role(
                    &self,
                    name: &str,
                    role: Role,
                    tenants: &[TenantName],
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query("UPDATE users SET role = $1, tenants = $2 WHERE name = $3")
                        .bind(role.as_str())
                        .bind(tenant_list_text(tenants))
                        .bind(name)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("changing a user's role"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn record_sign_in(&self, name: &str, at: i64) -> Result<bool, StoreError> {
                    let done = sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE name = $2")
                        .bind(at)
                        .bind(name)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("recording a sign-in"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
                    const CONTEXT: &str = "deleting a user";
                    let mut tx = self.write_transaction(CONTEXT).await?;
                    sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    let done = sqlx::query("DELETE FROM users WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::db(CONTEXT))?;
                    tx.commit().await.map_err(StoreError::db(CONTEXT))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
                    let result = sqlx::query(&format!(
                        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .bind(&session.id_sha256)
                    .bind(&session.user)
                    .bind(&session.csrf_token)
                    .bind(session.created_at)
                    .bind(session.last_seen_at)
                    .bind(session.idle_expires_at)
                    .bind(session.expires_at)
                    .execute(&self.pool)
                    .await;
                    match result {
                        Ok(_) => Ok(()),
                        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                            kind: "session",
                            name: "(hash)".to_owned(),
                        }),
                        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound {
                            kind: "user",
                            name: session.user.clone(),
                        }),
                        Err(e) => Err(StoreError::db("creating a session")(e)),
                    }
                }

                async fn session(
                    &self,
                    id_sha256: &str,
                    now: i64,
                ) -> Result<Option<SessionRecord>, StoreError> {
                    sqlx::query(&format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions \
                         WHERE id_sha256 = $1 AND idle_expires_at > $2 AND expires_at > $2"
                    ))
                    .bind(id_sha256)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::db("reading a session"))?
                    .as_ref()
                    .map(session_from_row)
                    .transpose()
                }

                async fn touch_session(
                    &self,
                    id_sha256: &str,
                    now: i64,
                    idle_expires_at: i64,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE sessions SET last_seen_at = $1, idle_expires_at = \
                         CASE WHEN $2 < expires_at THEN $2 ELSE expires_at END \
                         WHERE id_sha256 = $3 AND idle_expires_at > $1 AND expires_at > $1",
                    )
                    .bind(now)
                    .bind(idle_expires_at)
                    .bind(id_sha256)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("refreshing a session"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError> {
                    let done = sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1")
                        .bind(id_sha256)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("ending a session"))?;
                    Ok(done.rows_affected() > 0)
                }

                async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query(
                        "DELETE FROM sessions WHERE idle_expires_at <= $1 OR expires_at <= $1",
                    )
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::db("deleting expired sessions"))?;
                    Ok(done.rows_affected())
                }

                async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
                    sqlx::query_scalar::<$db, i64>(
                        "INSERT INTO audit_log (at, actor, action, object, detail) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    )
                    .bind(entry.at)
                    .bind(&entry.actor)
                    .bind(&entry.action)
                    .bind(&entry.object)
                    .bind(&entry.detail)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::db("appending to the audit log"))
                }

                async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
                    let found = audit_query::<$db>(query)
                        .build()
                        .fetch_all(&self.pool)
                        .await
                        .map_err(StoreError::db("reading the audit log"))?;
                    rows(found, audit_from_row)
                }

                async fn prune_audit(&self, before: i64) -> Result<u64, StoreError> {
                    let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await
                        .map_err(StoreError::db("pruning the audit log"))?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(crate) use impl_store;
