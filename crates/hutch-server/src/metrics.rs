//! Prometheus metrics of the control plane, rendered by `GET /metrics`.
//!
//! Each [`Server`](crate::Server) owns one [`Metrics`]: a `PrometheusRecorder` that is never
//! installed as the process's global recorder. Metrics are recorded through
//! [`metrics::with_local_recorder`], so several servers in one process (as in the tests) keep
//! separate series and never fight over the global slot. Histogram samples are folded into
//! their buckets by [`upkeep_forever`] every [`UPKEEP_INTERVAL`], and at each scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `hutch_sessions` | gauge | `state`: `CREATING`, `RUNNING`, `PAUSED`, `DELETING` |
//! | `hutch_http_request_duration_seconds` | histogram | `method`, `route`, `status_class` |
//! | `hutch_error_responses_total` | counter | `code` |
//! | `hutch_command_executions_total` | counter | none |
//! | `hutch_agent_connections_total` | counter | `reused`: `true`, `false` |
//! | `hutch_sandbox_create_duration_seconds` | histogram | `outcome`: `ok`, `error` |
//! | `hutch_session_network_bytes_total` | counter | `session`, `direction`: `out`, `in` |
//! | `hutch_session_network_connections_total` | counter | `session` |
//! | `hutch_session_network_denied_total` | counter | `session` |
//! | `hutch_session_port_requests_total` | counter | `session` |
//! | `hutch_session_port_refused_total` | counter | `session` |
//! | `hutch_session_port_bytes_total` | counter | `session`, `direction`: `in`, `out` |
//! | `hutch_session_port_connections` | gauge | `session` |
//! | `hutch_session_memory_bytes` | gauge | `session` |
//! | `hutch_session_cpu_seconds_total` | counter | `session` |
//! | `hutch_session_pids` | gauge | `session` |
//!
//! Every label value comes from a closed set, whatever the client sends: methods outside the
//! standard ones are `other`, routes are the router's templates (never ids), paths no route
//! matched are `unmatched`, and error codes are [`ErrorCode`] names. Nothing names a tenant.
//! The per-session series (network, port and usage counters) are the exception that names
//! sessions: one series per live (networked) session (bounded by `--max-sessions`), read from
//! the kernel's counters at each scrape and gone with the session; the port counters are
//! counted by the relay (`ports::traffic`) and dropped at the first scrape after the session is
//! gone.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hutch_api::{ErrorCode, SessionStatus};
use hutch_sandbox::{
    AgentConnection, Deaths, NetworkCounters, Runtime, SandboxError, SandboxRecord, SandboxSpec,
};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::ports::traffic::PortCounters;

/// Sessions by state (gauge), counted from the store at each scrape.
pub(crate) const SESSIONS: &str = "hutch_sessions";
/// Time from a request's arrival to its response head (histogram).
pub(crate) const HTTP_REQUEST_DURATION: &str = "hutch_http_request_duration_seconds";
/// Error responses by error code (counter).
pub(crate) const ERROR_RESPONSES: &str = "hutch_error_responses_total";
/// Command requests relayed to a session's agent (counter).
pub(crate) const COMMAND_EXECUTIONS: &str = "hutch_command_executions_total";
/// Connections the relay used for requests to agents: opened, or reused from the pool
/// (counter).
pub(crate) const AGENT_CONNECTIONS: &str = "hutch_agent_connections_total";
/// Time the runtime took to hand out a sandbox, warm or built on the spot (histogram).
pub(crate) const SANDBOX_CREATE_DURATION: &str = "hutch_sandbox_create_duration_seconds";

/// The `Content-Type` of the Prometheus text exposition format.
pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into their buckets between scrapes, so that memory
/// does not grow with the number of requests when nobody scrapes.
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Buckets of request latency, in seconds: from a millisecond to a command's longest timeout.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];
/// Buckets of sandbox creation latency, in seconds: from a warm claim to the start timeout.
const CREATE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route template of the relay to agents.
pub(crate) const PROXY_ROUTE: &str = "/v1/sessions/{id}/{*rest}";
/// First segments of the agent's routes, each its own `route` label value
/// (`/v1/sessions/{id}/commands`); any other path under the relay keeps [`PROXY_ROUTE`].
/// Extend it as the agent grows routes.
const AGENT_ROUTES: &[&str] = &["commands", "health", "interpreter"];

/// Every session state, for the `state` label.
const STATES: [SessionStatus; 4] = [
    SessionStatus::Creating,
    SessionStatus::Running,
    SessionStatus::Paused,
    SessionStatus::Deleting,
];

/// The server's metrics: a recorder of its own and a handle to render it.
#[derive(Clone)]
pub(crate) struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, described, with the unlabelled and per-state series at zero.
    pub(crate) fn new() -> Metrics {
        Metrics::for_replica(None)
    }

    /// [`Metrics::new`], with every series labelled `replica="<name>"` when a name is given
    /// (`--replica`: tells apart the servers that share one store).
    pub(crate) fn for_replica(replica: Option<&str>) -> Metrics {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION.into()), HTTP_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(SANDBOX_CREATE_DURATION.into()),
                    CREATE_BUCKETS,
                )
            })
            .unwrap_or_else(|err| {
                // Only empty bucket lists fail; the constants above are not empty.
                tracing::error!(error = %err, "metrics buckets refused; histograms become summaries");
                PrometheusBuilder::new()
            });
        let builder = match replica {
            Some(name) => builder.add_global_label("replica", name),
            None => builder,
        };
        let recorder = Arc::new(builder.build_recorder());
        let handle = recorder.handle();
        let this = Metrics { recorder, handle };
        this.with(|| {
            describe_gauge!(SESSIONS, "Sessions in the store, by state.");
            describe_histogram!(
                HTTP_REQUEST_DURATION,
                Unit::Seconds,
                "Time from a request's arrival to its response head, by method, route template and status class."
            );
            describe_counter!(ERROR_RESPONSES, "Error responses, by error code.");
            describe_counter!(
                COMMAND_EXECUTIONS,
                "Command requests relayed to a session's agent."
            );
            describe_counter!(
                AGENT_CONNECTIONS,
                "Connections the relay used for requests to agents: opened (reused=false) or kept from an earlier request (reused=true)."
            );
            describe_histogram!(
                SANDBOX_CREATE_DURATION,
                Unit::Seconds,
                "Time the runtime took to hand out a sandbox for a new session, by outcome."
            );
            counter!(COMMAND_EXECUTIONS).increment(0);
            for reused in ["true", "false"] {
                counter!(AGENT_CONNECTIONS, "reused" => reused).increment(0);
            }
            for state in STATES {
                gauge!(SESSIONS, "state" => state.as_str()).set(0.0);
            }
        });
        this
    }

    /// Runs `f` with this server's recorder as the thread's recorder.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), f)
    }

    /// Records one answered request.
    pub(crate) fn observe_request(
        &self,
        method: &'static str,
        route: Cow<'static, str>,
        status_class: &'static str,
        elapsed: Duration,
    ) {
        self.with(|| {
            histogram!(
                HTTP_REQUEST_DURATION,
                "method" => method,
                "route" => route,
                "status_class" => status_class
            )
            .record(elapsed.as_secs_f64());
        });
    }

    /// Counts one error response.
    pub(crate) fn count_error(&self, code: ErrorCode) {
        self.with(|| counter!(ERROR_RESPONSES, "code" => code.as_str()).increment(1));
    }

    /// Counts one command relayed to an agent.
    pub(crate) fn count_execution(&self) {
        self.with(|| counter!(COMMAND_EXECUTIONS).increment(1));
    }

    /// Counts a connection the relay used for a request to an agent: opened, or `reused`.
    pub(crate) fn count_agent_connection(&self, reused: bool) {
        let reused = if reused { "true" } else { "false" };
        self.with(|| counter!(AGENT_CONNECTIONS, "reused" => reused).increment(1));
    }

    /// Records how long the runtime took to create a sandbox, and whether it succeeded.
    pub(crate) fn observe_sandbox_create(&self, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.with(|| {
            histogram!(SANDBOX_CREATE_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
        });
    }

    /// Sets the sessions gauge; a state missing from `counts` is zero.
    pub(crate) fn set_sessions(&self, counts: &[(SessionStatus, u64)]) {
        self.with(|| {
            for state in STATES {
                let n = counts
                    .iter()
                    .filter(|(s, _)| *s == state)
                    .map(|(_, n)| *n)
                    .sum::<u64>();
                gauge!(SESSIONS, "state" => state.as_str()).set(n as f64);
            }
        });
    }

    /// Folds pending histogram samples into their buckets.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Every series in the Prometheus text format.
    pub(crate) fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Runs [`Metrics::upkeep`] every [`UPKEEP_INTERVAL`].
pub(crate) async fn upkeep_forever(metrics: Metrics) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        metrics.upkeep();
    }
}

/// `GET /metrics`: every series in the Prometheus text format, with the sessions gauge counted
/// from the store now.
pub(crate) async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state
        .sessions
        .store
        .count_by_status()
        .await
        .map_err(|err| ApiError::Internal(Box::new(err)))?;
    state.metrics.set_sessions(&counts);
    let mut text = state.metrics.render();
    let sessions = Arc::clone(&state.sessions);
    let (network, usage) = tokio::task::spawn_blocking(move || {
        (sessions.network_counters(), sessions.runtime().all_stats())
    })
    .await
    .unwrap_or_default();
    text.push_str(&render_network(&network));
    let mut ports = state.ports.counters();
    for id in ports.keys().copied().collect::<Vec<_>>() {
        if matches!(state.sessions.store.get(id).await, Ok(None)) {
            state.ports.forget(id);
            ports.remove(&id);
        }
    }
    text.push_str(&render_ports(&ports));
    text.push_str(&render_usage(&usage));
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response())
}

/// One series of a per-session family: its extra labels (each followed by a comma) and how to
/// read its value.
type Series<C> = (&'static str, fn(&C) -> u64);

/// A family of per-session series: name, help, type, series.
type Family<'a, C> = (&'static str, &'static str, &'static str, &'a [Series<C>]);

/// The per-session network counters in the text exposition format.
fn render_network(counters: &HashMap<Uuid, NetworkCounters>) -> String {
    let families: [Family<NetworkCounters>; 3] = [
        (
            "hutch_session_network_bytes_total",
            "Bytes a networked session sent (out) and received (in).",
            "counter",
            &[
                ("direction=\"out\",", |c| c.bytes_out),
                ("direction=\"in\",", |c| c.bytes_in),
            ],
        ),
        (
            "hutch_session_network_connections_total",
            "Connections a networked session opened.",
            "counter",
            &[("", |c| c.connections)],
        ),
        (
            "hutch_session_network_denied_total",
            "Packets of a networked session its policy or the always-denied destinations refused.",
            "counter",
            &[("", |c| c.denied)],
        ),
    ];
    render_per_session(counters, &families)
}

/// The per-session counters of ports reached from outside in the text exposition format.
fn render_ports(counters: &HashMap<Uuid, PortCounters>) -> String {
    let families: [Family<PortCounters>; 4] = [
        (
            "hutch_session_port_requests_total",
            "Requests and WebSockets relayed to a session's ports from outside.",
            "counter",
            &[("", |c| c.requests)],
        ),
        (
            "hutch_session_port_refused_total",
            "Requests to a session's ports refused because it had its most connections open.",
            "counter",
            &[("", |c| c.refused)],
        ),
        (
            "hutch_session_port_bytes_total",
            "Bytes relayed into a session's ports (in) and back from its apps (out).",
            "counter",
            &[
                ("direction=\"in\",", |c| c.bytes_in),
                ("direction=\"out\",", |c| c.bytes_out),
            ],
        ),
        (
            "hutch_session_port_connections",
            "Connections relayed into a session's ports now.",
            "gauge",
            &[("", |c| c.open)],
        ),
    ];
    render_per_session(counters, &families)
}

/// `families` of one series per session of `counters`, sorted by session; nothing without
/// sessions.
fn render_per_session<C>(counters: &HashMap<Uuid, C>, families: &[Family<C>]) -> String {
    use std::fmt::Write as _;
    let mut sorted: Vec<_> = counters.iter().collect();
    sorted.sort_by_key(|(id, _)| **id);
    let mut out = String::new();
    if sorted.is_empty() {
        return out;
    }
    for (name, help, kind, series) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, c) in &sorted {
            for (labels, value) in series.iter() {
                let _ = writeln!(out, "{name}{{{labels}session=\"{id}\"}} {}", value(c));
            }
        }
    }
    out
}

/// The per-session usage series in the text exposition format.
fn render_usage(usage: &HashMap<Uuid, hutch_api::SessionStats>) -> String {
    use std::fmt::Write as _;
    type Series = fn(&hutch_api::SessionStats) -> String;
    let families: [(&str, &str, &str, Series); 3] = [
        (
            "hutch_session_memory_bytes",
            "gauge",
            "Memory charged to a session's cgroup.",
            |s| s.memory_bytes.to_string(),
        ),
        (
            "hutch_session_cpu_seconds_total",
            "counter",
            "CPU time a session's processes used.",
            |s| s.cpu_seconds.to_string(),
        ),
        (
            "hutch_session_pids",
            "gauge",
            "Processes and threads alive in a session.",
            |s| s.pids.to_string(),
        ),
    ];
    let mut sorted: Vec<_> = usage.iter().collect();
    sorted.sort_by_key(|(id, _)| **id);
    let mut out = String::new();
    if sorted.is_empty() {
        return out;
    }
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (id, stats) in &sorted {
            let _ = writeln!(out, "{name}{{session=\"{id}\"}} {}", value(stats));
        }
    }
    out
}

/// Middleware: times every request and counts error responses by code.
///
/// It sits inside the router's layers, so the matched route template is known.
pub(crate) async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = route_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        req.uri().path(),
    );
    let response = next.run(req).await;
    let status = response.status();
    metrics.observe_request(method, route, status_class(status), started.elapsed());
    if (status.is_client_error() || status.is_server_error())
        && let Some(code) = error_code(response.headers())
    {
        metrics.count_error(code);
    }
    response
}

/// The `method` label: a standard method's name, or `other`.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The `route` label: the matched template, with the relay's known agent routes spelled out;
/// `unmatched` when no route matched.
pub(crate) fn route_label(matched: Option<&str>, path: &str) -> Cow<'static, str> {
    match matched {
        None => Cow::Borrowed("unmatched"),
        Some(PROXY_ROUTE) => match agent_route(path) {
            Some(route) => Cow::Owned(format!("/v1/sessions/{{id}}/{route}")),
            None => Cow::Borrowed(PROXY_ROUTE),
        },
        Some(template) => Cow::Owned(template.to_owned()),
    }
}

/// The agent route a relayed path goes to (`commands` for `/v1/sessions/x/commands/...`),
/// when it is one of [`AGENT_ROUTES`].
pub(crate) fn agent_route(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/v1/sessions/")?;
    let (_id, rest) = rest.split_once('/')?;
    let first = rest.split('/').next().unwrap_or_default();
    AGENT_ROUTES.iter().copied().find(|route| *route == first)
}

/// Whether a relayed request runs a command.
pub(crate) fn is_command(method: &Method, path: &str) -> bool {
    *method == Method::POST && agent_route(path) == Some("commands")
}

/// The `status_class` label: `2xx`, `4xx` and so on.
pub(crate) fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The error code an error response names in its [`hutch_api::error::ERROR_CODE_HEADER`]
/// header. The control plane sets it on each of its errors, and so does each agent; an error
/// response without it, or with a value that is not a known code, is not counted.
pub(crate) fn error_code(headers: &HeaderMap) -> Option<ErrorCode> {
    let value = headers
        .get(hutch_api::error::ERROR_CODE_HEADER)?
        .to_str()
        .ok()?;
    serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
}

/// A [`Runtime`] that times [`Runtime::create`] into [`SANDBOX_CREATE_DURATION`] and passes
/// every call through.
pub(crate) struct MeteredRuntime {
    inner: Arc<dyn Runtime>,
    metrics: Metrics,
}

impl MeteredRuntime {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Runtime>, metrics: Metrics) -> MeteredRuntime {
        MeteredRuntime { inner, metrics }
    }
}

#[async_trait]
impl Runtime for MeteredRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        let started = Instant::now();
        let result = self.inner.create(spec).await;
        self.metrics
            .observe_sandbox_create(result.is_ok(), started.elapsed());
        result
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        self.inner.destroy(record).await
    }

    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        self.inner.adopt(record).await
    }

    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        self.inner.sweep(known).await
    }

    fn process_id(&self) -> Option<String> {
        self.inner.process_id()
    }

    fn dead_processes(&self) -> Vec<String> {
        self.inner.dead_processes()
    }

    fn reaches(&self, record: &SandboxRecord) -> bool {
        self.inner.reaches(record)
    }

    async fn replicas(&self, me: &str, live: &[String]) {
        self.inner.replicas(me, live).await;
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        self.inner.connect(id).await
    }

    fn deaths(&self) -> Deaths {
        self.inner.deaths()
    }

    async fn set_network(
        &self,
        record: &SandboxRecord,
        policy: &hutch_api::NetworkPolicy,
    ) -> Result<(), SandboxError> {
        self.inner.set_network(record, policy).await
    }

    fn network_counters(&self) -> HashMap<Uuid, NetworkCounters> {
        self.inner.network_counters()
    }

    async fn set_deadline(
        &self,
        id: Uuid,
        deadline: std::time::SystemTime,
    ) -> Result<(), SandboxError> {
        self.inner.set_deadline(id, deadline).await
    }

    async fn snapshot(
        &self,
        record: &SandboxRecord,
        into: &std::path::Path,
    ) -> Result<hutch_sandbox::SnapshotReport, SandboxError> {
        self.inner.snapshot(record, into).await
    }

    async fn forget_image(&self, key: &str) {
        self.inner.forget_image(key).await;
    }

    fn can_pause(&self) -> bool {
        self.inner.can_pause()
    }

    async fn set_frozen(&self, record: &SandboxRecord, frozen: bool) -> Result<(), SandboxError> {
        self.inner.set_frozen(record, frozen).await
    }

    fn stats(&self, record: &SandboxRecord) -> Result<hutch_api::SessionStats, SandboxError> {
        self.inner.stats(record)
    }

    fn all_stats(&self) -> HashMap<Uuid, hutch_api::SessionStats> {
        self.inner.all_stats()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    #[test]
    fn network_counters_are_one_series_per_session_and_nothing_without_sessions() {
        assert_eq!(render_network(&HashMap::new()), "");
        let id = Uuid::nil();
        let counters = NetworkCounters {
            bytes_out: 10,
            bytes_in: 20,
            connections: 3,
            denied: 4,
        };
        let text = render_network(&HashMap::from([(id, counters)]));
        for line in [
            format!("hutch_session_network_bytes_total{{direction=\"out\",session=\"{id}\"}} 10"),
            format!("hutch_session_network_bytes_total{{direction=\"in\",session=\"{id}\"}} 20"),
            format!("hutch_session_network_connections_total{{session=\"{id}\"}} 3"),
            format!("hutch_session_network_denied_total{{session=\"{id}\"}} 4"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn port_counters_are_one_series_per_session() {
        assert_eq!(render_ports(&HashMap::new()), "");
        let id = Uuid::nil();
        let counters = PortCounters {
            requests: 5,
            refused: 1,
            bytes_in: 300,
            bytes_out: 4000,
            open: 2,
        };
        let text = render_ports(&HashMap::from([(id, counters)]));
        for line in [
            format!("hutch_session_port_requests_total{{session=\"{id}\"}} 5"),
            format!("hutch_session_port_refused_total{{session=\"{id}\"}} 1"),
            format!("hutch_session_port_bytes_total{{direction=\"in\",session=\"{id}\"}} 300"),
            format!("hutch_session_port_bytes_total{{direction=\"out\",session=\"{id}\"}} 4000"),
            format!("hutch_session_port_connections{{session=\"{id}\"}} 2"),
            "# TYPE hutch_session_port_connections gauge".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    use super::*;

    /// The value of the series `name{labels}` in `text`, if present.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, rest) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if series_name != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
                all.then(|| value.parse().ok()).flatten()
            })
    }

    #[test]
    fn fresh_metrics_render_zeroes_and_help() {
        let m = Metrics::new();
        let text = m.render();
        assert_eq!(sample(&text, COMMAND_EXECUTIONS, &[]), Some(0.0), "{text}");
        for state in ["CREATING", "RUNNING", "PAUSED", "DELETING"] {
            assert_eq!(
                sample(&text, SESSIONS, &[("state", state)]),
                Some(0.0),
                "{text}"
            );
        }
        assert!(text.contains("# TYPE hutch_sessions gauge"), "{text}");
        assert!(
            text.contains("# HELP hutch_command_executions_total"),
            "{text}"
        );
    }

    #[test]
    fn requests_become_histogram_buckets() {
        let m = Metrics::new();
        for ms in [2, 20, 200] {
            m.observe_request(
                "GET",
                Cow::Borrowed("/v1/sessions/{id}"),
                "2xx",
                Duration::from_millis(ms),
            );
        }
        let text = m.render();
        let labels = [
            ("method", "GET"),
            ("route", "/v1/sessions/{id}"),
            ("status_class", "2xx"),
        ];
        let name = format!("{HTTP_REQUEST_DURATION}_count");
        assert_eq!(sample(&text, &name, &labels), Some(3.0), "{text}");
        let sum = sample(&text, &format!("{HTTP_REQUEST_DURATION}_sum"), &labels).unwrap();
        assert!((sum - 0.222).abs() < 1e-9, "{sum}");
        let mut le = labels.to_vec();
        le.push(("le", "0.025"));
        assert_eq!(
            sample(&text, &format!("{HTTP_REQUEST_DURATION}_bucket"), &le),
            Some(2.0),
            "{text}"
        );
    }

    #[test]
    fn counters_gauges_and_create_latency() {
        let m = Metrics::new();
        m.count_execution();
        m.count_execution();
        m.count_error(ErrorCode::RateLimited);
        m.observe_sandbox_create(true, Duration::from_millis(3));
        m.observe_sandbox_create(false, Duration::from_millis(30));
        m.set_sessions(&[(SessionStatus::Running, 5), (SessionStatus::Creating, 1)]);
        let text = m.render();
        assert_eq!(sample(&text, COMMAND_EXECUTIONS, &[]), Some(2.0));
        assert_eq!(
            sample(&text, ERROR_RESPONSES, &[("code", "rate_limited")]),
            Some(1.0)
        );
        for outcome in ["ok", "error"] {
            assert_eq!(
                sample(
                    &text,
                    &format!("{SANDBOX_CREATE_DURATION}_count"),
                    &[("outcome", outcome)]
                ),
                Some(1.0),
                "{text}"
            );
        }
        assert_eq!(sample(&text, SESSIONS, &[("state", "RUNNING")]), Some(5.0));
        assert_eq!(sample(&text, SESSIONS, &[("state", "CREATING")]), Some(1.0));
        assert_eq!(sample(&text, SESSIONS, &[("state", "DELETING")]), Some(0.0));
        m.set_sessions(&[]);
        assert_eq!(
            sample(&m.render(), SESSIONS, &[("state", "RUNNING")]),
            Some(0.0)
        );
    }

    #[test]
    fn two_servers_keep_separate_series() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.count_execution();
        assert_eq!(sample(&a.render(), COMMAND_EXECUTIONS, &[]), Some(1.0));
        assert_eq!(sample(&b.render(), COMMAND_EXECUTIONS, &[]), Some(0.0));
    }

    #[test]
    fn a_named_replica_labels_every_series() {
        let m = Metrics::for_replica(Some("a"));
        m.count_execution();
        let text = m.render();
        assert_eq!(
            sample(&text, COMMAND_EXECUTIONS, &[("replica", "a")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, SESSIONS, &[("replica", "a"), ("state", "RUNNING")]),
            Some(0.0)
        );
    }

    #[test]
    fn labels_come_from_closed_sets() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(route_label(None, "/anything/at/all"), "unmatched");
        assert_eq!(
            route_label(Some("/v1/sessions/{id}"), "/v1/sessions/0191"),
            "/v1/sessions/{id}"
        );
        assert_eq!(
            route_label(Some(PROXY_ROUTE), "/v1/sessions/0191/commands"),
            "/v1/sessions/{id}/commands"
        );
        assert_eq!(
            route_label(Some(PROXY_ROUTE), "/v1/sessions/0191/commands/x/y"),
            "/v1/sessions/{id}/commands"
        );
        assert_eq!(
            route_label(Some(PROXY_ROUTE), "/v1/sessions/0191/interpreter/execute"),
            "/v1/sessions/{id}/interpreter"
        );
        assert_eq!(
            route_label(Some(PROXY_ROUTE), "/v1/sessions/0191/random-1234"),
            PROXY_ROUTE
        );
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(
            status_class(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "4xx"
        );
        assert_eq!(status_class(StatusCode::BAD_GATEWAY), "5xx");
    }

    #[test]
    fn command_requests_are_posts_to_commands() {
        assert!(is_command(&Method::POST, "/v1/sessions/0191/commands"));
        assert!(!is_command(&Method::GET, "/v1/sessions/0191/commands"));
        assert!(!is_command(&Method::POST, "/v1/sessions/0191/health"));
        assert!(!is_command(&Method::POST, "/v1/sessions/0191"));
    }

    #[test]
    fn error_codes_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(error_code(&headers), None);
        headers.insert(
            hutch_api::error::ERROR_CODE_HEADER,
            HeaderValue::from_static("headers_too_large"),
        );
        assert_eq!(error_code(&headers), Some(ErrorCode::HeadersTooLarge));
        headers.insert(
            hutch_api::error::ERROR_CODE_HEADER,
            HeaderValue::from_static("made_up_code"),
        );
        assert_eq!(error_code(&headers), None);
    }
}
