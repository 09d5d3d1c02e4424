//! The OpenAPI 3.1 document, generated from the route table and the
//! types' `ToSchema` derives: nothing in it is written by hand, so it
//! cannot describe a route or a field the daemon does not have.
//!
//! Every operation lists its 200 answer and the error answers it can give,
//! each with the [`ErrorBody`] schema:
//!
//! | status | when | on which routes |
//! |---|---|---|
//! | 400 | `invalid`, `out_of_range` | a body, a query or a numeric path segment |
//! | 401 | `unauthorized` | all, on TCP only |
//! | 404 | `not_found` | a path naming something |
//! | 409 | a tracking refusal, `tracking` says why | `/v1/machines/{machine}/…` |
//! | 423 | `frozen`, `busy` | `/v1/machines/{machine}/…` |
//! | 500 | `io`, `error`, `panic` | all |
//! | 503 | `unavailable` | a disk's routes |

use crate::routes::Payload;
use crate::routes::{Body, Method, Route, ROUTES};
use crate::types::ErrorBody;
use utoipa::openapi::content::Content;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, RefOr, Required,
    ResponseBuilder,
};

/// The security scheme's name in the document.
pub const BEARER: &str = "bearer";

const JSON: &str = "application/json";

/// The API's OpenAPI document.
pub fn openapi() -> OpenApi {
    let mut paths = Paths::new();
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    Payload::of::<ErrorBody>().component_schemas(&mut schemas);
    for route in ROUTES {
        if let Some(p) = route.body.payload() {
            p.component_schemas(&mut schemas);
        }
        route.response.component_schemas(&mut schemas);
        paths.add_path_operation(
            route.path,
            vec![http_method(route.method)],
            operation(route),
        );
    }
    let bearer = SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "the daemon's token (`<home>/api.token` or --token-file); \
                 required on TCP, not on the unix socket",
            ))
            .build(),
    );
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(BEARER, bearer)
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("refpoint management API")
                .version("1")
                .description(Some(
                    "HTTP/JSON on $REFPOINT_HOME/api.sock (unix socket, no token); on TCP \
                     (--api-listen) only with TLS and `Authorization: Bearer <token>`. \
                     Errors answer with an ErrorBody; HTTP 409 always means a tracking \
                     refusal (take a full backup).",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        // No requirement (the unix socket) or the bearer token (TCP).
        .security(Some([
            SecurityRequirement::default(),
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
        ]))
        .build()
}

fn http_method(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::Get,
        Method::Post => HttpMethod::Post,
        Method::Delete => HttpMethod::Delete,
    }
}

fn operation(route: &Route) -> OperationBuilder {
    let mut op = OperationBuilder::new()
        .operation_id(Some(route.operation_id))
        .summary(Some(route.summary));
    for name in route.path_params() {
        let (description, ty) = Route::describe_param(name);
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(ty))),
        );
    }
    if let Some(q) = &route.query {
        op = op.parameters(Some(q.parameters()));
    }
    let (payload, required) = match &route.body {
        Body::None => (None, Required::False),
        Body::Optional(p) => (Some(p), Required::False),
        Body::Required(p) => (Some(p), Required::True),
    };
    if let Some(p) = payload {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(JSON, Content::new(Some(p.schema())))
                .required(Some(required))
                .build(),
        ));
    }
    op = op.response(
        "200",
        ResponseBuilder::new()
            .description(route.response_description)
            .content(JSON, Content::new(Some(route.response.schema()))),
    );
    for (status, description) in error_answers(route) {
        op = op.response(
            status.to_string(),
            ResponseBuilder::new().description(description).content(
                JSON,
                Content::new(Some(Payload::of::<ErrorBody>().schema())),
            ),
        );
    }
    op
}

/// The error statuses a route can answer with (see the module doc).
pub(crate) fn error_answers(route: &Route) -> Vec<(u16, &'static str)> {
    let params: Vec<&str> = route.path_params().collect();
    let numeric = params
        .iter()
        .any(|p| Route::describe_param(p).1 == Type::Integer);
    let on_machine = route.path.starts_with("/v1/machines/{machine}");
    let mut out = Vec::new();
    if route.body.payload().is_some() || route.query.is_some() || numeric {
        out.push((400, "invalid request (`invalid`, `out_of_range`)"));
    }
    out.push((
        401,
        "on TCP: no valid `Authorization: Bearer <token>` (`unauthorized`)",
    ));
    if !params.is_empty() {
        out.push((
            404,
            "no such machine, disk, checkpoint or job (`not_found`)",
        ));
    }
    if on_machine {
        out.push((
            409,
            "tracking cannot answer (`tracking` says why); fall back to a full backup",
        ));
        out.push((
            423,
            "the file is frozen by a checkpoint, or the machine is busy (`frozen`, `busy`)",
        ));
    }
    out.push((500, "the operation failed (`io`, `error`, `panic`)"));
    if params.contains(&"disk") {
        out.push((503, "the disk is not open in the daemon (`unavailable`)"));
    }
    out
}
