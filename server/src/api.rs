//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the response types, served at `/v1/openapi.json`.

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::Shared;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ChittySync",
        description = "Registries kept identical everywhere they live: read and write them with a bearer token. Every write is signed by the token's own key."
    ),
    paths(
        crate::ops::health,
        crate::ops::ready,
        crate::ops::metrics,
        crate::registries::list,
        crate::registries::show,
        crate::records::list,
        crate::records::create,
        crate::records::show,
        crate::records::replace,
        crate::records::patch,
        crate::records::remove,
        crate::records::show_by,
        crate::records::upsert_by,
        crate::records::patch_by,
        crate::history::audit,
        crate::history::conflicts,
        crate::history::resolve,
        crate::history::status,
        crate::history::journal,
        crate::mirrors::list,
        crate::mirrors::show,
        crate::mirrors::plan,
        crate::mirrors::run,
    ),
    modifiers(&BearerToken),
    tags(
        (name = "registries", description = "The registries a token may use"),
        (name = "records", description = "Records: list, read, write, upsert by a unique field"),
        (name = "history", description = "Audit log, conflicts, attestation status, journal"),
        (name = "mirrors", description = "Mirror bindings: schedules, runs, plans"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/openapi.json", get(|| async { axum::Json(document()) }))
}
