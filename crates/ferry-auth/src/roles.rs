//! How an OpenID Connect provider's claims map to a management API role ([`RoleRules`]): values of the roles
//! claim (`admin_role`, `[[server.auth.oidc.role_mapping]]`) give `admin`, `operator` or `viewer`; of several
//! matches the strongest role wins; an operator's tenants are those of every matching operator entry plus the
//! values of `tenants_claim`. One set of rules for bearer tokens on the management API and for signing in to
//! the dashboard. No I/O.

use ferry_proto::TenantName;
use ferry_store::Role;
use serde_json::Value;

use crate::AuthError;

/// One mapping entry: a value of the roles claim and what it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEntry {
    pub value: String,
    pub role: Role,
    /// An operator's tenants (empty for the other roles).
    pub tenants: Vec<TenantName>,
}

/// The role a set of claims maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRole {
    pub role: Role,
    /// An operator's tenants, sorted and without repeats (empty for the other roles).
    pub tenants: Vec<TenantName>,
}

/// The mapping of claims to management API roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRules {
    /// Dotted path of the claim holding the roles (`roles`, `realm_access.roles` for Keycloak, `groups`).
    pub roles_claim: String,
    pub entries: Vec<RoleEntry>,
    /// Dotted path of a claim listing an operator's tenants.
    pub tenants_claim: Option<String>,
}

impl Default for RoleRules {
    fn default() -> Self {
        Self {
            roles_claim: "roles".to_owned(),
            entries: Vec::new(),
            tenants_claim: None,
        }
    }
}

/// The strings of a claim: an array of strings, or one space-separated string.
fn strings_at<'v>(claims: &'v Value, path: &str) -> Vec<&'v str> {
    match ferry_token::claim_at(claims, path) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(text)) => text.split(' ').filter(|s| !s.is_empty()).collect(),
        _ => Vec::new(),
    }
}

fn strength(role: Role) -> u8 {
    match role {
        Role::Admin => 3,
        Role::Operator => 2,
        Role::Viewer => 1,
    }
}

impl RoleRules {
    /// The rules of a `[server.auth.oidc]` section: `admin_role` as one admin entry, then `role_mapping`. A
    /// role or tenant name that is not valid is an error naming its key.
    pub fn from_config(oidc: &ferry_config::OidcSettings) -> Result<Self, AuthError> {
        let mut entries = Vec::new();
        if let Some(admin) = oidc.admin_role.as_deref().filter(|r| !r.trim().is_empty()) {
            entries.push(RoleEntry {
                value: admin.to_owned(),
                role: Role::Admin,
                tenants: Vec::new(),
            });
        }
        for (i, entry) in oidc.role_mapping.iter().enumerate() {
            let key = format!("server.auth.oidc.role_mapping[{i}]");
            let role: Role = entry
                .role
                .parse()
                .map_err(|e| AuthError::Config(format!("{key}.role: {e}")))?;
            let tenants = entry
                .tenants
                .iter()
                .map(|t| {
                    TenantName::new(t.as_str())
                        .map_err(|e| AuthError::Config(format!("{key}.tenants: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(RoleEntry {
                value: entry.value.clone(),
                role,
                tenants,
            });
        }
        Ok(Self {
            roles_claim: oidc.roles_claim.clone(),
            entries,
            tenants_claim: oidc.tenants_claim.clone().filter(|c| !c.trim().is_empty()),
        })
    }

    /// Whether no value maps to a role (then the provider's tokens reach nothing of the management API).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role `claims` map to, or `None` when no value of the roles claim is mapped. Tenant names in
    /// `tenants_claim` that are not valid names are left out.
    pub fn map(&self, claims: &Value) -> Option<MappedRole> {
        let values = strings_at(claims, &self.roles_claim);
        let matching: Vec<&RoleEntry> = self
            .entries
            .iter()
            .filter(|e| values.contains(&e.value.as_str()))
            .collect();
        let role = matching
            .iter()
            .map(|e| e.role)
            .max_by_key(|r| strength(*r))?;
        let mut tenants = Vec::new();
        if role == Role::Operator {
            tenants.extend(
                matching
                    .iter()
                    .filter(|e| e.role == Role::Operator)
                    .flat_map(|e| e.tenants.iter().cloned()),
            );
            if let Some(claim) = &self.tenants_claim {
                tenants.extend(
                    strings_at(claims, claim)
                        .into_iter()
                        .filter_map(|t| TenantName::new(t).ok()),
                );
            }
            tenants.sort();
            tenants.dedup();
        }
        Some(MappedRole { role, tenants })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> RoleRules {
        let oidc = ferry_config::OidcSettings {
            issuer: "https://sso.example.com".to_owned(),
            admin_role: Some("ferry-admin".to_owned()),
            roles_claim: "realm_access.roles".to_owned(),
            tenants_claim: Some("ferry_tenants".to_owned()),
            role_mapping: vec![
                ferry_config::RoleMapping {
                    value: "team-a".to_owned(),
                    role: "operator".to_owned(),
                    tenants: vec!["alpha".to_owned(), "beta".to_owned()],
                },
                ferry_config::RoleMapping {
                    value: "team-b".to_owned(),
                    role: "operator".to_owned(),
                    tenants: vec!["beta".to_owned(), "gamma".to_owned()],
                },
                ferry_config::RoleMapping {
                    value: "readers".to_owned(),
                    role: "viewer".to_owned(),
                    tenants: vec![],
                },
            ],
            ..ferry_config::OidcSettings::default()
        };
        RoleRules::from_config(&oidc).expect("rules")
    }

    fn names(tenants: &[TenantName]) -> Vec<&str> {
        tenants.iter().map(TenantName::as_str).collect()
    }

    #[test]
    fn the_strongest_matching_role_wins() {
        let rules = rules();
        let roles = |v: Value| json!({"realm_access": {"roles": v}});
        let admin = rules
            .map(&roles(json!(["readers", "ferry-admin", "team-a"])))
            .expect("admin");
        assert_eq!(admin.role, Role::Admin);
        assert!(admin.tenants.is_empty());
        let viewer = rules.map(&roles(json!("other readers"))).expect("viewer");
        assert_eq!(viewer.role, Role::Viewer);
        assert!(viewer.tenants.is_empty());
        assert_eq!(rules.map(&roles(json!(["other"]))), None);
        assert_eq!(
            rules.map(&json!({"roles": ["ferry-admin"]})),
            None,
            "wrong path"
        );
        assert_eq!(rules.map(&json!({})), None);
    }

    #[test]
    fn operators_get_the_tenants_of_every_match_and_of_the_claim() {
        let rules = rules();
        let op = rules
            .map(&json!({
                "realm_access": {"roles": ["team-a", "team-b", "readers"]},
                "ferry_tenants": ["delta", "Not A Name", "alpha"]
            }))
            .expect("operator");
        assert_eq!(op.role, Role::Operator);
        assert_eq!(names(&op.tenants), ["alpha", "beta", "delta", "gamma"]);
        let only_claim = rules
            .map(&json!({
                "realm_access": {"roles": ["team-b"]},
                "ferry_tenants": "omega"
            }))
            .expect("operator");
        assert_eq!(names(&only_claim.tenants), ["beta", "gamma", "omega"]);
    }

    #[test]
    fn bad_config_names_its_key() {
        let oidc = ferry_config::OidcSettings {
            role_mapping: vec![ferry_config::RoleMapping {
                value: "x".to_owned(),
                role: "operator".to_owned(),
                tenants: vec!["NOT valid!".to_owned()],
            }],
            ..ferry_config::OidcSettings::default()
        };
        let e = RoleRules::from_config(&oidc).expect_err("bad tenant");
        assert!(
            e.to_string()
                .contains("server.auth.oidc.role_mapping[0].tenants"),
            "{e}"
        );
        assert!(
            RoleRules::from_config(&ferry_config::OidcSettings::default())
                .expect("empty")
                .is_empty()
        );
    }
}
