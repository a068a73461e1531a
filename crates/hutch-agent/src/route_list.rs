//! One list of documented routes, built two ways: into the router the agent serves, or into
//! its OpenAPI document.
//!
//! Every documented handler carries a `#[utoipa::path]` annotation, and each module lists its
//! handlers once, with [`route!`]. Built [`Build::Served`], the list becomes a plain router:
//! each handler at the path and methods its annotation names, and nothing else. Built
//! [`Build::Documented`], it becomes utoipa's `OpenApiRouter`, which builds each handler's
//! whole description (summaries, parameters, response schemas) as it adds the route.
//!
//! Why two: every sandbox's agent builds its router at start, and the description is built
//! of many short-lived strings and maps. Built beside the routes and dropped again, it left
//! the routes scattered across the agent's heap, in pages that `malloc_trim` cannot give
//! back, in every idle session (see the operations guide, *Idle sessions and density*). The
//! document is built only where it is read: by [`crate::openapi`], for the control plane's
//! published API.

use std::sync::Arc;

use axum::Router;
use utoipa::openapi::HttpMethod;
use utoipa_axum::router::OpenApiRouter;

use crate::Agent;

/// What a route list is built into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// The router the agent serves, without any description.
    Served,
    /// The OpenAPI document of the routes.
    Documented,
}

/// A route list being built (see the module's documentation).
pub(crate) enum RouteList {
    /// Built [`Build::Served`]: the router, and each path with its methods, as added.
    Served(Router<Arc<Agent>>, Vec<(String, Vec<HttpMethod>)>),
    /// Built [`Build::Documented`] (boxed: a document is large, a list to serve small).
    Documented(Box<OpenApiRouter<Arc<Agent>>>),
}

impl RouteList {
    /// An empty list, built as `build` says.
    pub(crate) fn new(build: Build) -> Self {
        match build {
            Build::Served => Self::Served(Router::new(), Vec::new()),
            Build::Documented => Self::Documented(Box::new(OpenApiRouter::new())),
        }
    }

    /// An empty list whose document, when built, starts from `doc()` (its info and
    /// components).
    pub(crate) fn with_openapi(
        build: Build,
        doc: impl FnOnce() -> utoipa::openapi::OpenApi,
    ) -> Self {
        match build {
            Build::Served => Self::Served(Router::new(), Vec::new()),
            Build::Documented => Self::Documented(Box::new(OpenApiRouter::with_openapi(doc()))),
        }
    }

    /// Adds the routes of `other`, built the same way (the callers pass one [`Build`] down).
    pub(crate) fn merge(self, other: RouteList) -> Self {
        match (self, other) {
            (Self::Served(a, mut paths), Self::Served(b, more)) => {
                paths.extend(more);
                Self::Served(a.merge(b), paths)
            }
            (Self::Documented(a), Self::Documented(b)) => Self::Documented(Box::new(a.merge(*b))),
            // Built two ways after all: served, not described.
            (Self::Served(a, paths), Self::Documented(b)) => {
                Self::Served(a.merge(b.split_for_parts().0), paths)
            }
            (Self::Documented(a), Self::Served(b, paths)) => {
                Self::Served(a.split_for_parts().0.merge(b), paths)
            }
        }
    }

    /// Each path with its methods, in the order they were added (none when built
    /// [`Build::Documented`], whose document lists them).
    #[cfg(test)]
    pub(crate) fn served_paths(&self) -> &[(String, Vec<HttpMethod>)] {
        match self {
            Self::Served(_, paths) => paths,
            Self::Documented(_) => &[],
        }
    }

    /// The router to serve.
    pub(crate) fn into_router(self) -> Router<Arc<Agent>> {
        match self {
            Self::Served(router, _) => router,
            Self::Documented(router) => router.split_for_parts().0,
        }
    }

    /// The OpenAPI document (without paths for a list built [`Build::Served`]).
    pub(crate) fn into_openapi(self) -> utoipa::openapi::OpenApi {
        match self {
            Self::Served(..) => utoipa::openapi::OpenApi::default(),
            Self::Documented(router) => router.into_openapi(),
        }
    }
}

/// `route!(routes, handler, …)` adds documented handlers that share one path to `routes` (a
/// [`RouteList`] variable): each at the path and methods of its `#[utoipa::path]` annotation,
/// with its whole description only when the list is built [`Build::Documented`].
macro_rules! route {
    // Each handler as the identifiers of its path: utoipa's macro takes a path apart, which it
    // cannot do with a `$handler:path` handed on.
    ($routes:ident, $($($handler:ident)::+),+ $(,)?) => {
        $routes = match $routes {
            $crate::route_list::RouteList::Served(mut router, mut paths) => {
                $(
                    let path = utoipa_axum::routes!(@path [path()] of $($handler)::+);
                    let methods = utoipa_axum::routes!(@path [methods()] of $($handler)::+);
                    router = router.route(&path, {
                        use utoipa_axum::PathItemExt as _;
                        methods.iter().fold(axum::routing::MethodRouter::new(), |router, method| {
                            router.on(method.to_method_filter(), $($handler)::+)
                        })
                    });
                    paths.push((path, methods));
                )+
                $crate::route_list::RouteList::Served(router, paths)
            }
            $crate::route_list::RouteList::Documented(router) => $crate::route_list::RouteList::Documented(
                Box::new(router.routes(utoipa_axum::routes!($($($handler)::+),+))),
            ),
        };
    };
}

pub(crate) use route;
