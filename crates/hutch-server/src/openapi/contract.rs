//! The control plane's layer of the document: what no route annotation says because the
//! server, not the route, does it.
//!
//! - The session's agent describes its own routes (`hutch_agent::openapi`, at `/commands`,
//!   `/files`, …); [`nest_agent_routes`] publishes them under `/v1/sessions/{id}`, with the
//!   session id and the bearer token the control plane asks for before it relays.
//! - [`Contract`] adds, in one place: the bearer scheme; the responses every route inside a
//!   session shares (400, 401, 404, 409, 429, 500, 502: what the control plane may answer
//!   before it relays); the 414 and 431 of the request-head bounds; the `X-Request-Id`
//!   header on every request and response; and the `RateLimit-*` headers of the rate-limited
//!   routes.

use hutch_api::CommandRequest;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Header, HeaderBuilder, OpenApi, Ref, RefOr, Required, Response};
use utoipa::{Modify, ToResponse, ToSchema};

use super::{
    BEARER, BadRequest, Conflict, HeadersTooLarge, Internal, RateLimited, SandboxTimeout,
    SandboxUnavailable, SessionNotFound, Unauthorized, UriTooLong,
};
use crate::ratelimit::DOCUMENTED_HEADERS;

/// Where a session's agent routes are published: this prefix, then the agent's own path.
const SESSION_PREFIX: &str = "/v1/sessions/{id}";
/// Name of the `X-Request-Id` parameter and header components.
const REQUEST_ID_COMPONENT: &str = "RequestId";

/// Adds the agent's routes to `openapi` under [`SESSION_PREFIX`], each with the session id
/// parameter and the bearer token, and the agent's schemas and responses.
pub(super) fn nest_agent_routes(openapi: OpenApi, mut agent: OpenApi) -> OpenApi {
    for item in agent.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            operation
                .parameters
                .get_or_insert_with(Vec::new)
                .insert(0, RefOr::T(session_id_parameter()));
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        }
    }
    openapi.nest(SESSION_PREFIX, agent)
}

/// The `{id}` path parameter of every route inside a session.
fn session_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The session id."))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
            Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Uuid,
            )),
        )))
        .build()
}

/// `#/components/headers/{name}`.
fn header_ref(name: &str) -> RefOr<Header> {
    RefOr::Ref(Ref::new(format!("#/components/headers/{name}")))
}

/// `#/components/parameters/{name}`.
fn parameter_ref(name: &str) -> String {
    format!("#/components/parameters/{name}")
}

/// The optional `X-Request-Id` request header.
fn request_id_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "An id for this request, 1 to 128 bytes, echoed in the response and logged with \
             the request; a new UUID is made when it is missing or out of bounds.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128)),
        ))
        .build()
}

/// The `X-Request-Id` response header.
fn request_id_header() -> Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(
            "The request's id: the client's `X-Request-Id`, or a new UUID.",
        ))
        .build()
}

/// A header holding a whole number of at least 0, described by `description`.
fn count_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .description(Some(description))
        .build()
}

/// The `Retry-After` header of a refusal by the rate limit.
fn retry_after_header() -> Header {
    count_header("Seconds until a request is allowed again (rate limits only).")
}

/// Name of the header component of the rate-limit header `name` (`RateLimit-Limit` →
/// `RateLimitLimit`).
fn rate_limit_component(name: &str) -> String {
    name.replace('-', "")
}

/// Adds to `headers` references to the rate-limit headers, in both spellings.
fn add_rate_limit_headers(headers: &mut std::collections::BTreeMap<String, RefOr<Header>>) {
    for (name, _) in DOCUMENTED_HEADERS {
        let component = rate_limit_component(name);
        headers.insert(name.to_owned(), header_ref(&component));
        headers.insert(format!("X-{name}"), header_ref(&component));
    }
}

/// Whether `operation` carries `tag`.
fn has_tag(operation: &Operation, tag: &str) -> bool {
    operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == tag))
}

/// Whether `operation` needs the bearer token, and so is rate limited: the rate limit is
/// charged to the token's tenant. The MCP endpoint is not: each API call of its tools is.
fn rate_limited(operation: &Operation) -> bool {
    operation
        .security
        .as_ref()
        .is_some_and(|reqs| !reqs.is_empty())
        && !has_tag(operation, "mcp")
}

/// Adds what the annotations do not say (see the module's documentation).
pub(super) struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT signed with the server's secret: `sub` names the tenant, `exp` \
                         is required, `admin: true` sees every tenant's sessions. Mint one \
                         with `hutch token --sub TENANT`.",
                    ))
                    .build(),
            ),
        );
        if let Some(derived) = components.schemas.remove(CommandRequest::name().as_ref()) {
            components.schemas.insert(
                CommandRequest::name().into_owned(),
                command_request_schema(derived),
            );
        }
        hutch_api::variants::name_tagged_variants(components);
        components.parameters.insert(
            REQUEST_ID_COMPONENT.to_owned(),
            RefOr::T(request_id_parameter()),
        );
        components.headers.insert(
            REQUEST_ID_COMPONENT.to_owned(),
            RefOr::T(request_id_header()),
        );
        for (name, description) in DOCUMENTED_HEADERS {
            components.headers.insert(
                rate_limit_component(name),
                RefOr::T(count_header(description)),
            );
        }
        for (name, response) in components.responses.iter_mut() {
            if let RefOr::T(response) = response {
                add_control_plane_headers(name, response);
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let in_session = path.starts_with(&format!("{SESSION_PREFIX}/"));
            for operation in operations_mut(item) {
                add_control_plane_layer(operation, in_session);
            }
        }
    }
}

/// The headers the control plane adds to the shared response `name`: `X-Request-Id` on each;
/// on a refusal by the rate limit, `Retry-After` and the rate-limit headers.
fn add_control_plane_headers(name: &str, response: &mut Response) {
    response
        .headers
        .insert("X-Request-Id".to_owned(), header_ref(REQUEST_ID_COMPONENT));
    if name == RateLimited::response().0 {
        response
            .headers
            .insert("Retry-After".to_owned(), RefOr::T(retry_after_header()));
        add_rate_limit_headers(&mut response.headers);
    }
}

/// What the control plane adds to one operation.
fn add_control_plane_layer(operation: &mut Operation, in_session: bool) {
    let mut shared = Vec::new();
    // Every route inside a session may answer what the control plane answers before it
    // relays: a malformed id, a missing token, another tenant's or a missing session, one not
    // RUNNING, a rate limit, an unreachable or unanswering sandbox.
    if in_session {
        shared.extend([
            ("400", BadRequest::response().0),
            ("401", Unauthorized::response().0),
            ("404", SessionNotFound::response().0),
            ("409", Conflict::response().0),
            ("429", RateLimited::response().0),
            ("500", Internal::response().0),
            ("502", SandboxUnavailable::response().0),
            ("504", SandboxTimeout::response().0),
        ]);
    }
    // Every route bounds the request head before anything else.
    shared.extend([
        ("414", UriTooLong::response().0),
        ("431", HeadersTooLarge::response().0),
    ]);
    for (status, name) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
    // The control plane reads an empty body as `{}`, so its bodies are optional.
    let own_route = has_tag(operation, "sessions") || has_tag(operation, "storage contexts");
    if let (true, Some(RefOr::T(body))) = (own_route, operation.request_body.as_mut()) {
        body.required = Some(Required::False);
    }
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::Ref(Ref::new(parameter_ref(REQUEST_ID_COMPONENT))));
    let limited = rate_limited(operation);
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .insert("X-Request-Id".to_owned(), header_ref(REQUEST_ID_COMPONENT));
            if limited {
                add_rate_limit_headers(&mut response.headers);
            }
        }
    }
}

/// `CommandRequest` as derived, plus what the derive cannot say: exactly one of `command`
/// and `argv` is given, and not `null`.
fn command_request_schema(derived: RefOr<Schema>) -> RefOr<Schema> {
    let given = |field: &str, ty: Type| {
        ObjectBuilder::new()
            .property(field, ObjectBuilder::new().schema_type(ty))
            .required(field)
    };
    AllOfBuilder::new()
        .item(derived)
        .item(
            OneOfBuilder::new()
                .description(Some(
                    "Exactly one of `command` and `argv` is given, and not null.",
                ))
                .item(given("command", Type::String))
                .item(given("argv", Type::Array)),
        )
        .into()
}

/// Every operation of a path item.
pub(super) fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}
