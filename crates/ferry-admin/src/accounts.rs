//! Who may do what, operator accounts and the audit log: the role and tenant-scope checks every operation makes
//! for its [`Caller`](crate::Caller), the account operations (`/api/v1/users`), and the audit log's writing and
//! reading (`/api/v1/audit`).
//!
//! The rules: an `admin` may do everything; an `operator` sees and changes only the tenants of its scope (any
//! other tenant answers 404 as if it did not exist, and lists leave them out) and nothing of users, admin keys or
//! the audit log (403); a `viewer` reads what an admin reads but users, admin keys and the audit log, and changes
//! nothing (403).

use ferry_proto::TenantName;
use ferry_store::{unix_now, AuditEntry, AuditQuery, Role, UserRecord};

use crate::error::ApiError;
use crate::model::*;
use crate::ops::{cursor, limit, unknown_tenant, Admin};

impl Admin {
    /// An operator's tenants; `None` for the roles that see every tenant.
    pub(crate) fn scope(&self) -> Option<&[TenantName]> {
        (self.caller.role == Role::Operator).then_some(self.caller.tenants.as_slice())
    }

    /// 404, as for a tenant that does not exist, when the caller may not see `name`.
    pub(crate) fn see(&self, name: &TenantName) -> Result<(), ApiError> {
        if self.caller.sees_tenant(name) {
            Ok(())
        } else {
            Err(unknown_tenant(name))
        }
    }

    pub(crate) fn sees_tenant_named(&self, name: &str) -> bool {
        self.scope()
            .is_none_or(|scope| scope.iter().any(|t| t.as_str() == name))
    }

    /// 403 for a viewer.
    pub(crate) fn may_change(&self) -> Result<(), ApiError> {
        if self.caller.role == Role::Viewer {
            return Err(ApiError::forbidden("a viewer cannot change anything"));
        }
        Ok(())
    }

    /// 403 for every role but admin.
    pub(crate) fn only_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.caller.role != Role::Admin {
            return Err(ApiError::forbidden(format!("only an admin may {what}")));
        }
        Ok(())
    }

    /// Record a change made by the caller. The change is done already: a failure to record it is logged, not
    /// answered.
    pub(crate) async fn audit(&self, action: &str, object: &str, detail: serde_json::Value) {
        let entry = AuditEntry {
            id: 0,
            at: unix_now(),
            actor: self.caller.subject.clone(),
            action: action.to_owned(),
            object: object.to_owned(),
            detail: detail.to_string(),
        };
        if let Err(error) = self.store().append_audit(&entry).await {
            tracing::error!(%error, action, object, actor = %entry.actor, "writing the audit log failed");
        }
    }

    /// The tenant list of an operator: its tenants that exist, by name, after `after`, matching `filter`.
    pub(crate) async fn scoped_tenants(
        &self,
        scope: &[TenantName],
        after: Option<&str>,
        filter: Option<&str>,
        limit: u32,
    ) -> Result<TenantPage, ApiError> {
        let mut names: Vec<&TenantName> = scope
            .iter()
            .filter(|t| after.is_none_or(|a| t.as_str() > a))
            .collect();
        names.sort();
        names.dedup();
        let filter = filter
            .filter(|f| !f.is_empty())
            .map(str::to_ascii_lowercase);
        let mut items = Vec::new();
        let mut more = false;
        for name in names {
            let Some(t) = self.store().get_tenant(name).await? else {
                continue;
            };
            if let Some(f) = &filter {
                if !t.name.as_str().contains(f.as_str())
                    && !t.display_name.to_ascii_lowercase().contains(f.as_str())
                {
                    continue;
                }
            }
            if items.len() == limit as usize {
                more = true;
                break;
            }
            items.push(TenantView::from(t));
        }
        let next = if more {
            items.last().map(|t: &TenantView| t.name.clone())
        } else {
            None
        };
        Ok(TenantPage { items, next })
    }

    /// Connections of several tenants as one page, in the store's order and with its cursor.
    pub(crate) async fn scoped_connections(
        &self,
        tenants: Vec<TenantName>,
        live_only: bool,
        before: Option<&str>,
        limit: u32,
    ) -> Result<ConnectionPage, ApiError> {
        let mut all = Vec::new();
        for tenant in tenants {
            let page = self
                .store()
                .list_connections(&ferry_store::ConnectionQuery {
                    tenant: Some(tenant),
                    live_only,
                    before: before.map(str::to_owned),
                    limit,
                })
                .await?;
            all.extend(page.items.into_iter().map(ConnectionView::from));
        }
        all.sort_by(|a, b| (b.connected_at, b.id.as_str()).cmp(&(a.connected_at, a.id.as_str())));
        let more = all.len() > limit as usize;
        all.truncate(limit as usize);
        let next = more
            .then(|| all.last().map(|c| format!("{}:{}", c.connected_at, c.id)))
            .flatten();
        Ok(ConnectionPage { items: all, next })
    }

    pub async fn create_user(&self, request: &UserCreate) -> Result<UserCreated, ApiError> {
        self.only_admin("manage users")?;
        let name = user_name(&request.name)?;
        let tenants = tenant_scope(request.role, request.tenants.as_deref())?;
        let (password, generated) = match &request.password {
            Some(p) => (check_password(p)?.to_owned(), false),
            None => (generate_password(), true),
        };
        let hash = ferry_auth::hash_secret(&password)?;
        let record = UserRecord {
            name: name.to_owned(),
            password_hash: Some(hash),
            role: request.role.into(),
            tenants,
            disabled: false,
            created_at: unix_now(),
            last_sign_in_at: None,
        };
        self.store().create_user(&record).await?;
        tracing::info!(user = name, role = %request.role, "user created");
        let user = UserView::from(record);
        self.audit(
            "user.create",
            name,
            serde_json::json!({ "role": user.role, "tenants": user.tenants }),
        )
        .await;
        Ok(UserCreated {
            user,
            password: generated.then_some(password),
        })
    }

    pub async fn list_users(&self) -> Result<UserList, ApiError> {
        self.only_admin("see users")?;
        let items = self
            .store()
            .list_users()
            .await?
            .into_iter()
            .map(UserView::from)
            .collect();
        Ok(UserList { items })
    }

    pub async fn get_user(&self, name: &str) -> Result<UserView, ApiError> {
        self.only_admin("see users")?;
        let name = user_name(name)?;
        self.store()
            .get_user(name)
            .await?
            .map(UserView::from)
            .ok_or_else(|| unknown_user(name))
    }

    /// Disable (ending its sessions) or enable an account.
    pub async fn set_user_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<UserView, ApiError> {
        self.only_admin("manage users")?;
        let name = user_name(name)?;
        if !self.store().set_user_disabled(name, disabled).await? {
            return Err(unknown_user(name));
        }
        let action = if disabled {
            "user.disable"
        } else {
            "user.enable"
        };
        self.audit(action, name, serde_json::json!({})).await;
        self.get_user(name).await
    }

    pub async fn delete_user(&self, name: &str) -> Result<(), ApiError> {
        self.only_admin("manage users")?;
        let name = user_name(name)?;
        if !self.store().delete_user(name).await? {
            return Err(unknown_user(name));
        }
        self.audit("user.delete", name, serde_json::json!({})).await;
        Ok(())
    }

    /// Set a new password (generated when `request` has none), ending the account's sessions.
    pub async fn set_password(
        &self,
        name: &str,
        request: &PasswordChange,
    ) -> Result<PasswordChanged, ApiError> {
        self.only_admin("manage users")?;
        let name = user_name(name)?;
        let (password, generated) = match &request.password {
            Some(p) => (check_password(p)?.to_owned(), false),
            None => (generate_password(), true),
        };
        if self.store().get_user(name).await?.is_none() {
            return Err(unknown_user(name));
        }
        let hash = ferry_auth::hash_secret(&password)?;
        if !self.store().set_user_password(name, Some(&hash)).await? {
            return Err(unknown_user(name));
        }
        self.audit("user.passwd", name, serde_json::json!({})).await;
        Ok(PasswordChanged {
            password: generated.then_some(password),
        })
    }

    pub async fn audit_log(&self, query: &AuditLogQuery) -> Result<AuditPage, ApiError> {
        self.only_admin("read the audit log")?;
        let limit = limit(query.limit)?;
        let actor = cursor("actor", query.actor.as_deref())?;
        let action = cursor("action", query.action.as_deref())?;
        for (key, value) in [
            ("from", query.from),
            ("to", query.to),
            ("before", query.before),
        ] {
            if value.is_some_and(|v| !(0..=MAX_TIMESTAMP).contains(&v)) {
                return Err(ApiError::bad_request(format!(
                    "{key}: must be 0 to {MAX_TIMESTAMP}"
                )));
            }
        }
        let items: Vec<AuditView> = self
            .store()
            .audit_log(&AuditQuery {
                from: query.from,
                to: query.to,
                actor: actor.map(str::to_owned),
                action: action.map(str::to_owned),
                before_id: query.before,
                limit,
            })
            .await?
            .into_iter()
            .map(AuditView::from)
            .collect();
        let next = if items.len() >= limit as usize {
            items.last().map(|e| e.id)
        } else {
            None
        };
        Ok(AuditPage { items, next })
    }
}

/// A tenant scope as given for `role`: names (checked, deduplicated) for an operator, nothing for the others.
pub(crate) fn tenant_scope(
    role: RoleName,
    tenants: Option<&[String]>,
) -> Result<Vec<TenantName>, ApiError> {
    let tenants = tenants.unwrap_or_default();
    if role != RoleName::Operator {
        if !tenants.is_empty() {
            return Err(ApiError::invalid(
                "tenants: only an operator has a tenant scope (admins and viewers see every tenant)",
            ));
        }
        return Ok(Vec::new());
    }
    if tenants.len() > 1000 {
        return Err(ApiError::invalid("tenants: at most 1000"));
    }
    let mut names = tenants
        .iter()
        .map(|t| {
            TenantName::new(t.as_str()).map_err(|e| ApiError::invalid(format!("tenants: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// A user name from a body or a path (one rule, 422 for both): 1 to 64 of letters, digits, `.`, `_`, `@`, `-`,
/// starting with a letter or digit.
pub(crate) fn user_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::invalid(
            "name: 1 to 64 of letters, digits, '.', '_', '@', '-', starting with a letter or digit",
        ))
    }
}

fn check_password(password: &str) -> Result<&str, ApiError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        return Err(ApiError::invalid(format!(
            "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    Ok(password)
}

/// A new random password: 24 characters of base64url (18 random bytes).
pub fn generate_password() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unknown_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user {name}"))
}
