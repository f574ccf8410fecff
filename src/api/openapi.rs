//! `/openapi.json`: the OpenAPI document utoipa derives from the handlers' own
//! annotations and types (no hand-written spec).

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(title = "lethe", description = "Retires user accounts across systems; Mork-compatible pull and acknowledge."),
    paths(
        super::mork::list_users,
        super::mork::get_user,
        super::mork::get_status,
        super::mork::patch_status,
        super::tasks::create,
        super::tasks::options,
        super::tasks::status,
        super::retirements::open,
        super::retirements::list,
        super::retirements::one,
        super::retirements::resume,
        super::retirements::abort,
        super::retirements::stats,
        super::audit::audit,
        super::activity::report,
        super::heartbeat,
        super::lbheartbeat,
        super::healthz,
        super::ready,
        super::metrics,
    ),
    modifiers(&KeyScheme)
)]
pub struct ApiDoc;

/// Declares the `X-API-Key` header the keyed routes name as `api_key` (and the bearer
/// form of the same key).
struct KeyScheme;

impl utoipa::Modify for KeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        // The same key as `Authorization: Bearer`.
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`.
pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
