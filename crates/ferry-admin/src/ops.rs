//! The management operations themselves, on a [`Store`], with their validation and change notifications:
//! what the HTTP handlers call, and what the command line calls directly in its local mode.

use std::sync::Arc;

use ferry_proto::{TenantName, TenantSettings};
use ferry_store::{unix_now, AdminKey, Store, StoreError, TenantFields, LATENCY_BUCKETS_MS};

use crate::accounts::tenant_scope;
use crate::auth::{generate_admin_key, hash_admin_key, Caller};
use crate::error::ApiError;
use crate::model::*;
use crate::notify::{ChangeNotifier, ClusterView, GatewayView, NoopNotifier};

/// The management operations on one store.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    notifier: Arc<dyn ChangeNotifier>,
    cluster: Option<Arc<dyn ClusterView>>,
    gateway: Option<Arc<dyn GatewayView>>,
    /// Whether this node records requests (`server.relay.request_log`), when known.
    request_log: Option<bool>,
    /// Who the operations act for: what they may see and change, and the actor of the audit log.
    pub(crate) caller: Caller,
}

impl Admin {
    /// Operations on `store` that tell nobody about changes (see [`Admin::with_notifier`]).
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            notifier: Arc::new(NoopNotifier),
            cluster: None,
            gateway: None,
            request_log: None,
            caller: Caller::local(),
        }
    }

    /// The same operations acting for `caller`: only what its role and tenant scope allow, audited under its
    /// subject. [`Admin::new`] acts as [`Caller::local`] (an admin: the command line on the store).
    pub fn acting_as(&self, caller: Caller) -> Self {
        Self {
            caller,
            ..self.clone()
        }
    }

    /// Who the operations act for.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Say in request log pages whether this node records requests (`recording`).
    pub fn with_request_log(mut self, recording: bool) -> Self {
        self.request_log = Some(recording);
        self
    }

    /// Answer the nodes endpoint and live connections from `view` (presence) instead of the store.
    pub fn with_cluster_view(mut self, view: Arc<dyn ClusterView>) -> Self {
        self.cluster = Some(view);
        self
    }

    /// Answer the gateway endpoint from `view` (this node's edge gateway).
    pub fn with_gateway_view(mut self, view: Arc<dyn GatewayView>) -> Self {
        self.gateway = Some(view);
        self
    }

    /// Tell `notifier` after each successful change.
    pub fn with_notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = notifier;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub async fn list_tenants(&self, query: &TenantListQuery) -> Result<TenantPage, ApiError> {
        let limit = limit(query.limit)?;
        let after = cursor("after", query.after.as_deref())?;
        let filter = cursor("filter", query.filter.as_deref())?;
        if let Some(scope) = self.scope() {
            return self.scoped_tenants(scope, after, filter, limit).await;
        }
        let page = self
            .store
            .list_tenants(&ferry_store::TenantQuery {
                filter: filter.filter(|f| !f.is_empty()).map(str::to_owned),
                after: after.map(str::to_owned),
                limit,
            })
            .await?;
        Ok(TenantPage {
            items: page.items.into_iter().map(TenantView::from).collect(),
            next: page.next,
        })
    }

    pub async fn get_tenant(&self, name: &str) -> Result<TenantView, ApiError> {
        let name = path_tenant(name)?;
        self.see(&name)?;
        Ok(self.load_tenant(&name).await?.into())
    }

    pub async fn create_tenant(&self, request: &TenantCreate) -> Result<TenantCreated, ApiError> {
        self.may_change()?;
        let name = TenantName::new(request.name.as_str())
            .map_err(|e| ApiError::invalid(format!("name: {e}")))?;
        if !self.caller.sees_tenant(&name) {
            return Err(ApiError::forbidden(
                "an operator may create only the tenants of its scope",
            ));
        }
        let display_name = display_name(request.display_name.as_deref())?.unwrap_or_default();
        let description = description(request.description.as_deref())?.unwrap_or_default();
        let settings = match &request.settings {
            Some(s) => validate_settings(s)?,
            None => TenantSettings::default(),
        };
        let fields = TenantFields {
            display_name: display_name.to_owned(),
            description: description.to_owned(),
            settings,
        };
        let tenant = self
            .store
            .create_tenant(&name, &fields)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => {
                    ApiError::conflict(format!("tenant {name} already exists"))
                }
                other => other.into(),
            })?;
        let (record, secret) = match ferry_auth::add_client_secret(self.store.as_ref(), &name, None)
            .await
        {
            Ok(created) => created,
            Err(error) => {
                // Do not leave a tenant behind that nobody can authenticate as.
                if let Err(cleanup) = self.store.delete_tenant(&name).await {
                    tracing::warn!(tenant = %name, error = %cleanup, "removing a half-created tenant failed");
                }
                return Err(error.into());
            }
        };
        self.notifier.tenant_changed(&name);
        self.audit(
            "tenant.create",
            name.as_str(),
            serde_json::json!({
                "display_name": tenant.display_name,
                "settings": Settings::from(tenant.settings.clone()),
                "secret_id": record.id,
            }),
        )
        .await;
        Ok(TenantCreated {
            tenant: tenant.into(),
            secret: SecretCreated {
                id: record.id,
                tenant: name.to_string(),
                secret,
                created_at: record.created_at,
                expires_at: record.expires_at,
            },
        })
    }

    pub async fn update_tenant(
        &self,
        name: &str,
        request: &TenantUpdate,
    ) -> Result<TenantView, ApiError> {
        self.may_change()?;
        let name = path_tenant(name)?;
        self.see(&name)?;
        let display_name = display_name(request.display_name.as_deref())?;
        let description = description(request.description.as_deref())?;
        let patch = request
            .settings
            .as_ref()
            .map(|s| TenantSettings::from(s.clone()));
        let current = self.load_tenant(&name).await?;
        let settings = match patch {
            Some(patch) => validate_settings(&current.settings.merged(&patch).into())?,
            None => current.settings,
        };
        let fields = TenantFields {
            display_name: display_name.map_or(current.display_name, str::to_owned),
            description: description.map_or(current.description, str::to_owned),
            settings,
        };
        let tenant = self.replace(&name, &fields).await?;
        self.audit(
            "tenant.update",
            name.as_str(),
            serde_json::json!({
                "display_name": request.display_name,
                "description": request.description.as_ref().map(|_| "(changed)"),
                "settings": request.settings,
            }),
        )
        .await;
        Ok(tenant.into())
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<(), ApiError> {
        self.may_change()?;
        let name = path_tenant(name)?;
        self.see(&name)?;
        if !self.store.delete_tenant(&name).await? {
            return Err(unknown_tenant(&name));
        }
        self.notifier.tenant_deleted(&name);
        self.audit("tenant.delete", name.as_str(), serde_json::json!({}))
            .await;
        Ok(())
    }

    pub async fn get_settings(&self, name: &str) -> Result<Settings, ApiError> {
        let name = path_tenant(name)?;
        self.see(&name)?;
        Ok(self.load_tenant(&name).await?.settings.into())
    }

    /// Replace the tenant's settings as a whole.
    pub async fn put_settings(
        &self,
        name: &str,
        settings: &Settings,
    ) -> Result<Settings, ApiError> {
        self.may_change()?;
        let name = path_tenant(name)?;
        self.see(&name)?;
        let settings = validate_settings(settings)?;
        let current = self.load_tenant(&name).await?;
        let fields = TenantFields {
            display_name: current.display_name,
            description: current.description,
            settings,
        };
        let now: Settings = self.replace(&name, &fields).await?.settings.into();
        self.audit("settings.replace", name.as_str(), serde_json::json!(now))
            .await;
        Ok(now)
    }

    /// Merge: the fields `patch` sets replace the tenant's, the others stay.
    pub async fn patch_settings(&self, name: &str, patch: &Settings) -> Result<Settings, ApiError> {
        self.may_change()?;
        let name = path_tenant(name)?;
        self.see(&name)?;
        let current = self.load_tenant(&name).await?;
        let merged = current
            .settings
            .merged(&TenantSettings::from(patch.clone()));
        let settings = validate_settings(&merged.into())?;
        let fields = TenantFields {
            display_name: current.display_name,
            description: current.description,
            settings,
        };
        let now: Settings = self.replace(&name, &fields).await?.settings.into();
        self.audit("settings.update", name.as_str(), serde_json::json!(patch))
            .await;
        Ok(now)
    }

    pub async fn create_secret(
        &self,
        tenant: &str,
        request: &SecretCreate,
    ) -> Result<SecretCreated, ApiError> {
        self.may_change()?;
        let name = path_tenant(tenant)?;
        self.see(&name)?;
        if let Some(at) = request.expires_at {
            if at <= unix_now() || at > MAX_TIMESTAMP {
                return Err(ApiError::invalid(
                    "expires_at: must be a unix time in the future (seconds, before year 10000)",
                ));
            }
        }
        // Check first: hashing is slow on purpose, and an unknown tenant should not cost it.
        self.load_tenant(&name).await?;
        let (record, secret) =
            ferry_auth::add_client_secret(self.store.as_ref(), &name, request.expires_at)
                .await
                .map_err(|e| match e {
                    ferry_auth::AuthError::Store(StoreError::NotFound { .. }) => {
                        unknown_tenant(&name)
                    }
                    other => other.into(),
                })?;
        self.audit(
            "secret.create",
            &format!("{name}/{}", record.id),
            serde_json::json!({ "expires_at": record.expires_at }),
        )
        .await;
        Ok(SecretCreated {
            id: record.id,
            tenant: name.to_string(),
            secret,
            created_at: record.created_at,
            expires_at: record.expires_at,
        })
    }

    pub async fn list_secrets(&self, tenant: &str) -> Result<SecretList, ApiError> {
        let name = path_tenant(tenant)?;
        self.see(&name)?;
        self.load_tenant(&name).await?;
        let now = unix_now();
        let items = self
            .store
            .list_secrets(&name)
            .await?
            .into_iter()
            .map(|r| SecretView::new(r, now))
            .collect();
        Ok(SecretList { items })
    }

    pub async fn revoke_secret(&self, tenant: &str, id: &str) -> Result<(), ApiError> {
        self.may_change()?;
        let name = path_tenant(tenant)?;
        self.see(&name)?;
        let id = path_id("secret id", id)?;
        self.load_tenant(&name).await?;
        if !self.store.revoke_secret(&name, id).await? {
            return Err(ApiError::not_found(format!(
                "tenant {name} has no unrevoked secret {id}"
            )));
        }
        self.notifier.secret_revoked(&name, id);
        self.audit(
            "secret.revoke",
            &format!("{name}/{id}"),
            serde_json::json!({}),
        )
        .await;
        Ok(())
    }

    pub async fn list_connections(
        &self,
        query: &ConnectionQuery,
    ) -> Result<ConnectionPage, ApiError> {
        let limit = limit(query.limit)?;
        let tenant = query_tenant(query.tenant.as_deref())?;
        let before = cursor("before", query.before.as_deref())?;
        if let (Some(view), true) = (&self.cluster, query.live.unwrap_or(false)) {
            let mut all = view.live_connections();
            all.retain(|c| self.sees_tenant_named(&c.tenant));
            return live_page(all, tenant.as_ref(), before, limit);
        }
        if let Some(scope) = self.scope() {
            let tenants = match &tenant {
                Some(t) if scope.contains(t) => vec![t.clone()],
                Some(_) => Vec::new(),
                None => scope.to_vec(),
            };
            return self
                .scoped_connections(tenants, query.live.unwrap_or(false), before, limit)
                .await;
        }
        let page = self
            .store
            .list_connections(&ferry_store::ConnectionQuery {
                tenant,
                live_only: query.live.unwrap_or(false),
                before: before.map(str::to_owned),
                limit,
            })
            .await?;
        Ok(ConnectionPage {
            items: page.items.into_iter().map(ConnectionView::from).collect(),
            next: page.next,
        })
    }

    pub async fn list_nodes(&self) -> Result<NodeList, ApiError> {
        if let Some(view) = &self.cluster {
            return Ok(NodeList {
                items: view.nodes(),
            });
        }
        let items = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .map(NodeView::from)
            .collect();
        Ok(NodeList { items })
    }

    /// This node's gateway: routes and upstream pools with their servers' health. Every role may read it (it
    /// holds no tenant's data beyond the names routes send to, and no secrets).
    pub fn gateway(&self) -> GatewayReport {
        match &self.gateway {
            Some(view) => view.gateway(),
            None => GatewayReport::default(),
        }
    }

    pub async fn stats(&self, query: &StatsQuery) -> Result<StatsReport, ApiError> {
        let tenant = query_tenant(query.tenant.as_deref())?;
        let to = query.to.unwrap_or_else(unix_now);
        let from = query.from.unwrap_or(to.saturating_sub(3600));
        for (key, value) in [("from", from), ("to", to)] {
            if !(0..=MAX_TIMESTAMP).contains(&value) {
                return Err(ApiError::bad_request(format!(
                    "{key}: must be unix seconds between 0 and {MAX_TIMESTAMP}"
                )));
            }
        }
        if from > to || to - from > MAX_STATS_WINDOW {
            return Err(ApiError::bad_request(format!(
                "from..to: from must not be after to, and the window at most {MAX_STATS_WINDOW} seconds"
            )));
        }
        let rows = match (self.scope(), &tenant) {
            (None, _) => self.store.stats(tenant.as_ref(), from, to).await?,
            (Some(scope), Some(t)) if !scope.contains(t) => Vec::new(),
            (Some(_), Some(t)) => self.store.stats(Some(t), from, to).await?,
            (Some(scope), None) => {
                let mut rows = Vec::new();
                for t in scope {
                    rows.extend(self.store.stats(Some(t), from, to).await?);
                }
                rows.sort_by(|a, b| (a.minute, &a.tenant).cmp(&(b.minute, &b.tenant)));
                rows
            }
        };
        let mut minutes: Vec<StatsBucket> = Vec::new();
        let mut totals = StatsBucket {
            minute: from,
            latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ..StatsBucket::default()
        };
        let mut classes = [0u64; 5];
        let mut minute_classes: Vec<[u64; 5]> = Vec::new();
        for row in rows {
            if minutes.last().is_none_or(|m| m.minute != row.minute) {
                minutes.push(StatsBucket {
                    minute: row.minute,
                    latency_buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
                    ..StatsBucket::default()
                });
                minute_classes.push([0; 5]);
            }
            let (Some(m), Some(mc)) = (minutes.last_mut(), minute_classes.last_mut()) else {
                continue;
            };
            for bucket in [&mut *m, &mut totals] {
                bucket.requests = bucket.requests.saturating_add(row.requests);
                bucket.bytes_in = bucket.bytes_in.saturating_add(row.bytes_in);
                bucket.bytes_out = bucket.bytes_out.saturating_add(row.bytes_out);
                for (sum, n) in bucket.latency_buckets.iter_mut().zip(row.latency_buckets) {
                    *sum = sum.saturating_add(n);
                }
            }
            for (i, n) in row.status_classes.into_iter().enumerate() {
                mc[i] = mc[i].saturating_add(n);
                classes[i] = classes[i].saturating_add(n);
            }
        }
        for (m, c) in minutes.iter_mut().zip(minute_classes) {
            m.status_classes = StatusClasses::from_array(c);
            m.p50_ms = percentile(&m.latency_buckets, 50);
            m.p99_ms = percentile(&m.latency_buckets, 99);
        }
        totals.status_classes = StatusClasses::from_array(classes);
        totals.p50_ms = percentile(&totals.latency_buckets, 50);
        totals.p99_ms = percentile(&totals.latency_buckets, 99);
        Ok(StatsReport {
            tenant: tenant.map(|t| t.to_string()),
            from,
            to,
            latency_bounds_ms: latency_bounds(),
            minutes,
            totals,
        })
    }

    pub async fn request_log(&self, query: &RequestLogQuery) -> Result<RequestLogPage, ApiError> {
        let limit = limit(query.limit)?;
        let tenant = query_tenant(query.tenant.as_deref())?;
        if query.before.is_some_and(|b| b < 0) {
            return Err(ApiError::bad_request("before: must not be negative"));
        }
        let entries = match (self.scope(), &tenant) {
            (None, _) => {
                self.store
                    .request_log(tenant.as_ref(), query.before, limit)
                    .await?
            }
            (Some(scope), Some(t)) if !scope.contains(t) => Vec::new(),
            (Some(_), Some(t)) => self.store.request_log(Some(t), query.before, limit).await?,
            (Some(scope), None) => {
                let mut entries = Vec::new();
                for t in scope {
                    entries.extend(self.store.request_log(Some(t), query.before, limit).await?);
                }
                entries.sort_by_key(|e| std::cmp::Reverse(e.id));
                entries.truncate(limit as usize);
                entries
            }
        };
        let items: Vec<RequestLogView> = entries.into_iter().map(RequestLogView::from).collect();
        let next = if items.len() >= limit as usize {
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(RequestLogPage {
            items,
            next,
            recording: self.request_log,
        })
    }

    pub async fn create_admin_key(
        &self,
        request: &AdminKeyCreate,
    ) -> Result<AdminKeyCreated, ApiError> {
        self.only_admin("manage admin keys")?;
        let name = request.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_KEY_NAME
            || name.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(format!(
                "name: 1 to {MAX_KEY_NAME} characters without control characters"
            )));
        }
        let role = request.role.unwrap_or(RoleName::Admin);
        let tenants = tenant_scope(role, request.tenants.as_deref())?;
        let key = generate_admin_key();
        let record = AdminKey {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.to_owned(),
            sha256: hash_admin_key(&key),
            created_at: unix_now(),
            revoked_at: None,
            role: role.into(),
            tenants,
        };
        self.store.add_admin_key(&record).await?;
        tracing::info!(id = %record.id, name = %record.name, role = %role, "admin key created");
        let tenants: Vec<String> = record.tenants.iter().map(ToString::to_string).collect();
        self.audit(
            "admin_key.create",
            &record.id,
            serde_json::json!({ "name": record.name, "role": role, "tenants": tenants }),
        )
        .await;
        Ok(AdminKeyCreated {
            id: record.id,
            name: record.name,
            key,
            created_at: record.created_at,
            role,
            tenants,
        })
    }

    pub async fn list_admin_keys(&self) -> Result<AdminKeyList, ApiError> {
        self.only_admin("see admin keys")?;
        let items = self
            .store
            .list_admin_keys()
            .await?
            .into_iter()
            .map(AdminKeyView::from)
            .collect();
        Ok(AdminKeyList { items })
    }

    pub async fn revoke_admin_key(&self, id: &str) -> Result<(), ApiError> {
        self.only_admin("manage admin keys")?;
        let id = path_id("admin key id", id)?;
        if !self.store.revoke_admin_key(id).await? {
            return Err(ApiError::not_found(format!("no unrevoked admin key {id}")));
        }
        tracing::info!(id, "admin key revoked");
        self.audit("admin_key.revoke", id, serde_json::json!({}))
            .await;
        Ok(())
    }

    async fn load_tenant(&self, name: &TenantName) -> Result<ferry_store::Tenant, ApiError> {
        self.store
            .get_tenant(name)
            .await?
            .ok_or_else(|| unknown_tenant(name))
    }

    async fn replace(
        &self,
        name: &TenantName,
        fields: &TenantFields,
    ) -> Result<ferry_store::Tenant, ApiError> {
        let tenant = self
            .store
            .update_tenant(name, fields)
            .await?
            .ok_or_else(|| unknown_tenant(name))?;
        self.notifier.tenant_changed(name);
        Ok(tenant)
    }
}

/// One page of live connections from presence, in the store's order (newest first by `connected_at`, then id)
/// and with the store's cursor form (`CONNECTED_AT:ID`).
fn live_page(
    mut all: Vec<ConnectionView>,
    tenant: Option<&TenantName>,
    before: Option<&str>,
    limit: u32,
) -> Result<ConnectionPage, ApiError> {
    let limit = match limit {
        0 => ferry_store::DEFAULT_PAGE_LIMIT,
        n => n.min(ferry_store::MAX_PAGE_LIMIT),
    } as usize;
    let before = match before {
        None => None,
        Some(c) => {
            let (at, id) = c
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| ApiError::invalid("before: not a cursor of this list"))?;
            Some((at, id))
        }
    };
    all.retain(|c| tenant.is_none_or(|t| c.tenant == t.as_str()));
    all.sort_by(|a, b| (b.connected_at, b.id.as_str()).cmp(&(a.connected_at, a.id.as_str())));
    if let Some((at, id)) = &before {
        all.retain(|c| (c.connected_at, c.id.as_str()) < (*at, id.as_str()));
    }
    let more = all.len() > limit;
    all.truncate(limit);
    let next = more
        .then(|| all.last().map(|c| format!("{}:{}", c.connected_at, c.id)))
        .flatten();
    Ok(ConnectionPage { items: all, next })
}

pub(crate) fn unknown_tenant(name: &TenantName) -> ApiError {
    ApiError::not_found(format!("no tenant {name}"))
}

/// A tenant name taken from the path: 400 if it cannot be one.
fn path_tenant(name: &str) -> Result<TenantName, ApiError> {
    TenantName::new(name).map_err(|e| ApiError::bad_request(format!("tenant: {e}")))
}

/// A tenant name taken from the query string.
fn query_tenant(name: Option<&str>) -> Result<Option<TenantName>, ApiError> {
    name.map(|n| TenantName::new(n).map_err(|e| ApiError::bad_request(format!("tenant: {e}"))))
        .transpose()
}

/// An opaque id from the path: printable ASCII, at most 128 long.
pub(crate) fn path_id<'a>(what: &str, id: &'a str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(format!(
            "{what}: 1 to 128 printable ASCII characters"
        )));
    }
    Ok(id)
}

/// A page size: default [`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`].
pub(crate) fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(format!(
            "limit: must be 1 to {MAX_LIMIT}"
        ))),
    }
}

/// A cursor or filter from the query string: at most 256 bytes, no control characters.
pub(crate) fn cursor<'a>(key: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.len() > 256 || v.chars().any(char::is_control) => Err(ApiError::bad_request(
            format!("{key}: at most 256 bytes without control characters"),
        )),
        other => Ok(other),
    }
}

fn display_name(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_DISPLAY_NAME || v.chars().any(char::is_control) => {
            Err(ApiError::invalid(format!(
                "display_name: at most {MAX_DISPLAY_NAME} characters without control characters"
            )))
        }
        other => Ok(other),
    }
}

fn description(value: Option<&str>) -> Result<Option<&str>, ApiError> {
    match value {
        Some(v)
            if v.chars().count() > MAX_DESCRIPTION
                || v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')) =>
        {
            Err(ApiError::invalid(format!(
                "description: at most {MAX_DESCRIPTION} characters, no control characters but newline and tab"
            )))
        }
        other => Ok(other),
    }
}

/// Check every set field's range and that the reconnect delays are in order.
pub fn validate_settings(s: &Settings) -> Result<TenantSettings, ApiError> {
    let durations = [
        ("keepalive_interval_ms", s.keepalive_interval_ms),
        ("reconnect_min_delay_ms", s.reconnect_min_delay_ms),
        ("reconnect_max_delay_ms", s.reconnect_max_delay_ms),
        ("target_response_timeout_ms", s.target_response_timeout_ms),
        ("request_expiration_ms", s.request_expiration_ms),
    ];
    for (key, value) in durations {
        if value.is_some_and(|v| !(1..=MAX_DURATION_MS).contains(&v)) {
            return Err(ApiError::invalid(format!(
                "settings.{key}: must be 1 to {MAX_DURATION_MS} milliseconds"
            )));
        }
    }
    if s.max_concurrent_requests
        .is_some_and(|v| v > MAX_CONCURRENT_SETTING)
    {
        return Err(ApiError::invalid(format!(
            "settings.max_concurrent_requests: at most {MAX_CONCURRENT_SETTING}"
        )));
    }
    if s.max_body_size.is_some_and(|v| v > MAX_BODY_SIZE_SETTING) {
        return Err(ApiError::invalid(format!(
            "settings.max_body_size: at most {MAX_BODY_SIZE_SETTING}"
        )));
    }
    if let (Some(min), Some(max)) = (s.reconnect_min_delay_ms, s.reconnect_max_delay_ms) {
        if min > max {
            return Err(ApiError::invalid(
                "settings.reconnect_min_delay_ms: must not be above reconnect_max_delay_ms",
            ));
        }
    }
    Ok(s.clone().into())
}

/// The upper bound (ms) of the bucket holding the `pct`th percentile; `None` without requests or when it lies
/// beyond the last bound.
pub fn percentile(buckets: &[u64], pct: u64) -> Option<u64> {
    let total: u128 = buckets.iter().map(|&n| u128::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = (total * u128::from(pct)).div_ceil(100).max(1);
    let mut seen: u128 = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += u128::from(n);
        if seen >= rank {
            return LATENCY_BUCKETS_MS.get(i).copied();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_buckets() {
        let mut b = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
        assert_eq!(percentile(&b, 50), None);
        b[0] = 50; // <= 1 ms
        b[3] = 49; // <= 10 ms
        b[6] = 1; // <= 100 ms
        assert_eq!(percentile(&b, 50), Some(1));
        assert_eq!(percentile(&b, 99), Some(10));
        assert_eq!(percentile(&b, 100), Some(100));
        let mut slow = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
        slow[LATENCY_BUCKETS_MS.len()] = 3;
        assert_eq!(percentile(&slow, 50), None);
    }

    #[test]
    fn settings_ranges_and_order() {
        assert!(validate_settings(&Settings::default()).is_ok());
        let bad = Settings {
            keepalive_interval_ms: Some(0),
            ..Settings::default()
        };
        assert_eq!(
            validate_settings(&bad).expect_err("zero").status,
            http::StatusCode::UNPROCESSABLE_ENTITY
        );
        let unordered = Settings {
            reconnect_min_delay_ms: Some(10),
            reconnect_max_delay_ms: Some(5),
            ..Settings::default()
        };
        assert!(validate_settings(&unordered).is_err());
        let big = Settings {
            max_body_size: Some(u64::MAX),
            ..Settings::default()
        };
        assert!(validate_settings(&big).is_err());
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(None).expect("default"), DEFAULT_LIMIT);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
        assert!(cursor("after", Some("a\0b")).is_err());
        assert!(path_id("id", "a b").is_err());
        assert!(path_tenant("Nope").is_err());
    }
}
