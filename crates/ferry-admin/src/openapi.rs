//! The OpenAPI 3 document: the operations come from the handlers' `#[utoipa::path]` attributes; this module adds
//! the title, the three security schemes (bearer, `X-Api-Key`, the session cookie) one of which is required by every operation, and the error
//! responses every operation may give.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder, SecurityRequirement};
use utoipa::OpenApi as _;

use crate::error::ErrorBody;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Ferry management API",
        description = "Tenants, connector secrets, settings, connections, nodes, statistics, request log and admin keys of a Ferry node. Authenticate with an admin key (`Authorization: Bearer fadm_…` or `X-Api-Key: fadm_…`), an OIDC token of the configured provider (its claims map to a role), or a session cookie from `POST /api/v1/session` or from signing in through the provider (`GET /api/v1/session/oidc`) (changes made with it carry its CSRF token in `X-CSRF-Token`). Each caller has a role: `admin` (everything), `operator` (only the tenants of its scope; others answer 404), `viewer` (read only)."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "tenants", description = "Tenants and their first secret"),
        (name = "secrets", description = "A tenant's connector secrets"),
        (name = "settings", description = "A tenant's settings, pushed to its connectors"),
        (name = "observe", description = "Connections, nodes, the gateway, statistics and the request log"),
        (name = "admin-keys", description = "Keys of this API"),
        (name = "users", description = "Operator accounts (admins only)"),
        (name = "audit", description = "Who changed what, when (admins only)"),
        (name = "session", description = "Signing in with a name and password or through the OpenID Connect provider, who am I, signing out")
    )
)]
struct ApiDoc;

/// The errors any operation may answer, with their descriptions.
const COMMON_ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "The request cannot be read (query, path or JSON syntax)",
    ),
    ("401", "No credential, or not a valid admin key or token"),
    (
        "403",
        "A valid token whose claims map to no role, a role that may not do this, or a change made with a session without its CSRF token",
    ),
    ("413", "The body is larger than the admin listener accepts"),
    ("415", "The body is not JSON"),
    ("422", "A value is not acceptable"),
    (
        "500",
        "An unexpected failure (code `internal`); the node's log says more",
    ),
    (
        "503",
        "The store is unavailable for now (code `store_unavailable`); retry later",
    ),
];

/// The base document (info, tags, shared schemas, security) before the routes add their paths.
pub(crate) fn base() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An admin key (fadm_…) or an OIDC access token whose claims map to a role",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "An admin key (fadm_…)",
        ))),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            "ferry_session",
            "The session cookie set by POST /api/v1/session; changes need X-CSRF-Token too",
        ))),
    );
    // Any scheme will do.
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::new("api_key", Vec::<String>::new()),
        SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    doc
}

/// Add the common error responses to every operation that does not document them itself.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_common_errors(operation);
        }
    }
    doc
}

fn add_common_errors(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    for (status, description) in COMMON_ERRORS {
        if !has_body && matches!(*status, "413" | "415") {
            continue;
        }
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}
