//! Checks of everything a client controls, against the bounds in [`hutch_api::limits`].
//!
//! Each check is a pure function that either returns the value to use (with defaults filled
//! in) or an [`ApiError::InvalidRequest`] naming the field. Nothing here does I/O.

use std::collections::BTreeMap;

use hutch_api::limits::{
    CONTEXT_SYNCS_MAX, PATH_MAX_BYTES, STORAGE_CONTEXT_NAME_MAX_BYTES, SYNC_GLOB_MAX_BYTES,
    SYNC_GLOBS_MAX,
};
use hutch_api::limits::{
    CPUS_RANGE, DEFAULT_CPUS, DEFAULT_MEMORY_MB, DEFAULT_PIDS, DISK_MB_RANGE, LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX, MEMORY_MB_RANGE, METADATA_MAX_ENTRIES, METADATA_MAX_KEY_BYTES,
    METADATA_MAX_VALUE_BYTES, PIDS_RANGE, TTL_DEFAULT_SECS, TTL_MAX_SECS, TTL_MIN_SECS,
};
use hutch_api::{
    AutoPause, ContextSync, CreateSessionRequest, CreateStorageContextRequest, NetworkPolicy,
    Resources, ResourcesRequest, SessionStatus, SyncRequest, TaskType, UpdateSessionRequest,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;

/// The embedded image: a read-only view of the host's system directories.
pub(crate) const DEFAULT_IMAGE: &str = "default";

/// Longest `image` a session may name (an OCI reference's own bound).
pub(crate) const IMAGE_NAME_MAX_BYTES: usize = hutch_image::reference::MAX_REFERENCE_LEN;

/// A create request that passed every check, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewSession {
    /// Time to live, in seconds.
    pub(crate) ttl_secs: u64,
    /// Image name.
    pub(crate) image: String,
    /// Labels.
    pub(crate) metadata: BTreeMap<String, String>,
    /// Granted limits.
    pub(crate) resources: Resources,
    /// Environment of every process in the session.
    pub(crate) env: BTreeMap<String, String>,
    /// Storage contexts bound to paths.
    pub(crate) context_syncs: Vec<ContextSync>,
    /// Network egress as asked for (checked); the server's default when absent.
    pub(crate) network: Option<NetworkPolicy>,
    /// Auto-pause as asked for (checked); the server's default when absent.
    pub(crate) auto_pause: Option<AutoPause>,
}

/// An update request that passed every check.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SessionChanges {
    /// New time to live, counted from now.
    pub(crate) ttl_secs: Option<u64>,
    /// New labels, replacing the old.
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    /// New network policy (checked).
    pub(crate) network: Option<NetworkPolicy>,
}

/// Checks `POST /v1/sessions` and fills in defaults.
pub(crate) fn create(req: CreateSessionRequest) -> Result<NewSession, ApiError> {
    let ttl_secs = ttl(req.ttl.unwrap_or(TTL_DEFAULT_SECS))?;
    let image = req.image.unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    // Whether an OCI reference or snapshot of this name exists is up to the image store.
    if image.is_empty()
        || image.len() > IMAGE_NAME_MAX_BYTES
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid(
            "image",
            format!(
                "image must be `default`, an OCI reference or a snapshot's name: 1 to {IMAGE_NAME_MAX_BYTES} bytes without spaces or control characters"
            ),
        ));
    }
    let metadata = req.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let env = req.env.unwrap_or_default();
    hutch_api::env::check("env", &env)?;
    let resources = resources(req.resources.unwrap_or_default())?;
    let mut context_syncs = req.context_syncs.unwrap_or_default();
    check_context_syncs(&mut context_syncs)?;
    let network = req.network.map(network).transpose()?;
    let auto_pause = req.auto_pause.map(auto_pause).transpose()?;
    Ok(NewSession {
        ttl_secs,
        image,
        metadata,
        resources,
        env,
        context_syncs,
        network,
        auto_pause,
    })
}

/// Shortest `autoPause.idleSeconds`.
pub(crate) const AUTO_PAUSE_IDLE_MIN_SECS: u64 = 10;
/// Longest `autoPause.idleSeconds` (the longest TTL).
pub(crate) const AUTO_PAUSE_IDLE_MAX_SECS: u64 = 28_800;

/// Checks `autoPause`.
pub(crate) fn auto_pause(auto: AutoPause) -> Result<AutoPause, ApiError> {
    if !(AUTO_PAUSE_IDLE_MIN_SECS..=AUTO_PAUSE_IDLE_MAX_SECS).contains(&auto.idle_seconds) {
        return Err(ApiError::invalid(
            "autoPause.idleSeconds",
            format!(
                "autoPause.idleSeconds must be between {AUTO_PAUSE_IDLE_MIN_SECS} and \
                 {AUTO_PAUSE_IDLE_MAX_SECS}, got {}",
                auto.idle_seconds
            ),
        ));
    }
    Ok(auto)
}

/// Checks `PATCH /v1/sessions/{id}`.
pub(crate) fn update(req: UpdateSessionRequest) -> Result<SessionChanges, ApiError> {
    let ttl_secs = req.ttl.map(ttl).transpose()?;
    if let Some(metadata) = &req.metadata {
        check_metadata(metadata)?;
    }
    Ok(SessionChanges {
        ttl_secs,
        metadata: req.metadata,
        network: req.network.map(network).transpose()?,
    })
}

/// Checks a network policy's lists (the operator's ceiling is checked by the sessions).
pub(crate) fn network(policy: NetworkPolicy) -> Result<NetworkPolicy, ApiError> {
    policy
        .parse()
        .map_err(|message| ApiError::invalid("network", message))?;
    Ok(policy)
}

/// Checks a time to live in seconds.
pub(crate) fn ttl(secs: u64) -> Result<u64, ApiError> {
    if (TTL_MIN_SECS..=TTL_MAX_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(ApiError::invalid(
            "ttl",
            format!("ttl must be between {TTL_MIN_SECS} and {TTL_MAX_SECS} seconds, got {secs}"),
        ))
    }
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > METADATA_MAX_ENTRIES {
        return Err(ApiError::invalid(
            "metadata",
            format!(
                "metadata has {} entries; at most {METADATA_MAX_ENTRIES} are allowed",
                metadata.len()
            ),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.len() > METADATA_MAX_KEY_BYTES {
            return Err(ApiError::invalid(
                "metadata",
                format!("metadata key {key:?} must be 1 to {METADATA_MAX_KEY_BYTES} bytes long"),
            ));
        }
        if value.len() > METADATA_MAX_VALUE_BYTES {
            return Err(ApiError::invalid(
                "metadata",
                format!(
                    "metadata value of {key:?} is {} bytes; at most {METADATA_MAX_VALUE_BYTES} are allowed",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

fn resources(req: ResourcesRequest) -> Result<Resources, ApiError> {
    let cpus = req.cpus.unwrap_or(DEFAULT_CPUS);
    if !(cpus.is_finite() && cpus >= CPUS_RANGE.0 && cpus <= CPUS_RANGE.1) {
        return Err(ApiError::invalid(
            "resources.cpus",
            format!(
                "resources.cpus must be between {} and {}, got {cpus}",
                CPUS_RANGE.0, CPUS_RANGE.1
            ),
        ));
    }
    let memory_mb = in_range(
        "resources.memoryMb",
        req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
        MEMORY_MB_RANGE,
    )?;
    let pids = in_range(
        "resources.pids",
        req.pids.unwrap_or(DEFAULT_PIDS),
        PIDS_RANGE,
    )?;
    let disk_mb = req
        .disk_mb
        .map(|mb| in_range("resources.diskMb", mb, DISK_MB_RANGE))
        .transpose()?;
    Ok(Resources {
        cpus,
        memory_mb,
        pids,
        disk_mb,
    })
}

fn in_range(field: &str, value: u64, (min, max): (u64, u64)) -> Result<u64, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} must be between {min} and {max}, got {value}"),
        ))
    }
}

/// One page of a listing: `?limit=&offset=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// Page size, 1..=100.
    pub(crate) limit: u32,
    /// How many to skip.
    pub(crate) offset: u64,
}

/// The query of a list route, as sent; [`page`] checks it. Other parameters are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    /// Page size.
    limit: Option<String>,
    /// How many to skip.
    offset: Option<String>,
}

/// The query of `GET /v1/sessions`, as sent; [`session_list`] checks it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SessionListQuery {
    /// Page size.
    limit: Option<String>,
    /// How many to skip.
    offset: Option<String>,
    /// Only sessions in this state.
    status: Option<String>,
}

/// Checks the query of `GET /v1/sessions`: its page, and the state to keep (all when absent).
pub(crate) fn session_list(
    query: SessionListQuery,
) -> Result<(Page, Option<SessionStatus>), ApiError> {
    let page = page(PageQuery {
        limit: query.limit,
        offset: query.offset,
    })?;
    let status = query
        .status
        .map(|status| {
            SessionStatus::parse(&status).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!(
                        "status must be one of CREATING, RUNNING, PAUSED, DELETING, got {status:?}"
                    ),
                )
            })
        })
        .transpose()?;
    Ok((page, status))
}

/// Checks `limit` and `offset` of a list route.
pub(crate) fn page(query: PageQuery) -> Result<Page, ApiError> {
    let integer = |key: &str, value: Option<String>, default: i64| match value {
        None => Ok(default),
        Some(value) => value.parse::<i64>().map_err(|_| {
            ApiError::invalid(key, format!("{key} must be an integer, got {value:?}"))
        }),
    };
    let limit = integer("limit", query.limit, i64::from(LIST_LIMIT_DEFAULT))?;
    let offset = integer("offset", query.offset, 0)?;
    let max = i64::from(LIST_LIMIT_MAX);
    let limit = u32::try_from(limit)
        .ok()
        .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {max}, got {limit}"),
            )
        })?;
    let offset = u64::try_from(offset).map_err(|_| {
        ApiError::invalid("offset", format!("offset must be 0 or more, got {offset}"))
    })?;
    Ok(Page { limit, offset })
}

/// The query of `DELETE /v1/sessions/{id}`, as sent.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeleteQuery {
    /// Whether to upload the bound storage contexts first (default true).
    upload: Option<String>,
}

/// Checks the query of `DELETE /v1/sessions/{id}`; returns whether to upload first.
pub(crate) fn delete(query: DeleteQuery) -> Result<bool, ApiError> {
    flag("upload", query.upload.as_deref(), true)
}

/// A boolean query parameter (`true`, `1`, `false` or `0`), `default` when absent.
fn flag(name: &str, value: Option<&str>, default: bool) -> Result<bool, ApiError> {
    match value {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(raw) => Err(ApiError::invalid(
            name,
            format!("{name} must be true or false, got {raw:?}"),
        )),
    }
}

/// Checks `POST /v1/contexts`; returns the name.
pub(crate) fn storage_context(req: CreateStorageContextRequest) -> Result<String, ApiError> {
    let name = req.name;
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if name.is_empty() || name.len() > STORAGE_CONTEXT_NAME_MAX_BYTES || !valid_chars {
        return Err(ApiError::invalid(
            "name",
            format!(
                "name must be 1 to {STORAGE_CONTEXT_NAME_MAX_BYTES} letters, digits, '.', '_' or '-', got {name:?}"
            ),
        ));
    }
    Ok(name)
}

/// Checks an absolute path inside a sandbox: no NUL, no `..`, bounded; returns it without a
/// trailing slash.
pub(crate) fn sandbox_dir(field: &str, path: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::invalid(
            field,
            format!("{field} must be an absolute directory path {why}, got {path:?}"),
        ))
    };
    if !path.starts_with('/') {
        return refuse("(starting with '/')");
    }
    if path.len() > PATH_MAX_BYTES || path.contains('\0') {
        return refuse(&format!("of at most {PATH_MAX_BYTES} bytes with no NUL"));
    }
    if path.split('/').any(|part| part == "..") {
        return refuse("without '..'");
    }
    // Compared and stored in one spelling: `/./proc` is `/proc`, `/a//b/` is `/a/b`.
    let normal: String = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .flat_map(|part| ["/", part])
        .collect();
    if normal.is_empty() {
        return refuse("other than '/'");
    }
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|kernel| nested(kernel, &normal))
    {
        return refuse("outside /proc, /sys and /dev (which the file API does not touch)");
    }
    Ok(normal)
}

/// Checks `contextSyncs`: bounded, absolute distinct paths none inside another, valid globs;
/// each path is left in its normal spelling (see [`sandbox_dir`]).
fn check_context_syncs(syncs: &mut [ContextSync]) -> Result<(), ApiError> {
    if syncs.len() > CONTEXT_SYNCS_MAX {
        return Err(ApiError::invalid(
            "contextSyncs",
            format!(
                "contextSyncs has {} entries; at most {CONTEXT_SYNCS_MAX} are allowed",
                syncs.len()
            ),
        ));
    }
    let mut paths: Vec<String> = Vec::new();
    for i in 0..syncs.len() {
        let field = format!("contextSyncs[{i}].path");
        let path = sandbox_dir(&field, &syncs[i].path)?;
        syncs[i].path.clone_from(&path);
        let sync = &syncs[i];
        // Bound twice, its two uploads would each replace the other's content.
        if syncs[..i].iter().any(|s| s.context_id == sync.context_id) {
            return Err(ApiError::invalid(
                &format!("contextSyncs[{i}].contextId"),
                format!(
                    "storage context {} is bound by another entry: a context binds one path",
                    sync.context_id
                ),
            ));
        }
        if let Some(other) = paths.iter().find(|p| nested(p, &path) || nested(&path, p)) {
            return Err(ApiError::invalid(
                &field,
                format!("{path:?} overlaps {other:?}, bound by another entry"),
            ));
        }
        paths.push(path);
        for (list, globs) in [
            ("include", &sync.policy.include),
            ("exclude", &sync.policy.exclude),
        ] {
            let field = format!("contextSyncs[{i}].policy.{list}");
            if globs.len() > SYNC_GLOBS_MAX || globs.iter().any(|g| g.len() > SYNC_GLOB_MAX_BYTES) {
                return Err(ApiError::invalid(
                    &field,
                    format!(
                        "{field} may hold at most {SYNC_GLOBS_MAX} globs of at most {SYNC_GLOB_MAX_BYTES} bytes"
                    ),
                ));
            }
        }
        crate::storage::archive::PathFilter::new(&sync.policy.include, &sync.policy.exclude)
            .map_err(|e| ApiError::invalid(&format!("contextSyncs[{i}].policy"), e))?;
    }
    Ok(())
}

/// Whether `inner` is `outer` or lies inside it.
fn nested(outer: &str, inner: &str) -> bool {
    inner == outer || inner.starts_with(&format!("{outer}/"))
}

/// A sync request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncTarget {
    /// Only this context.
    pub(crate) context_id: Option<Uuid>,
    /// Only this path.
    pub(crate) path: Option<String>,
    /// Direction.
    pub(crate) mode: TaskType,
}

/// Checks `POST /v1/sessions/{id}/context/sync`.
pub(crate) fn sync(req: SyncRequest) -> Result<SyncTarget, ApiError> {
    let path = req.path.map(|p| sandbox_dir("path", &p)).transpose()?;
    Ok(SyncTarget {
        context_id: req.context_id,
        path,
        mode: req.mode.unwrap_or(TaskType::Upload),
    })
}

/// The query of `GET /v1/sessions/{id}/context/info`, as sent; [`info_filter`] checks it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InfoQuery {
    /// Only the tasks of this storage context.
    context_id: Option<String>,
    /// Only the tasks of this path.
    path: Option<String>,
    /// Only uploads or only downloads.
    task_type: Option<String>,
}

/// Checks the filter of `GET /v1/sessions/{id}/context/info`; an empty value filters nothing.
pub(crate) fn info_filter(query: InfoQuery) -> Result<crate::store::TaskFilter, ApiError> {
    let given = |value: Option<String>| value.filter(|v| !v.is_empty());
    let context_id = given(query.context_id)
        .map(|value| {
            Uuid::parse_str(&value).map_err(|_| {
                ApiError::invalid(
                    "contextId",
                    format!("contextId must be a UUID, got {value:?}"),
                )
            })
        })
        .transpose()?;
    let path = given(query.path)
        .map(|value| sandbox_dir("path", &value))
        .transpose()?;
    let task_type = given(query.task_type)
        .map(|value| {
            TaskType::parse(&value).ok_or_else(|| {
                ApiError::invalid(
                    "taskType",
                    format!("taskType must be upload or download, got {value:?}"),
                )
            })
        })
        .transpose()?;
    Ok(crate::store::TaskFilter {
        context_id,
        path,
        task_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query string parsed as the server's `Query` extractor parses it.
    pub(super) fn query<T: serde::de::DeserializeOwned>(query: &str) -> T {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::try_from_uri(&uri).unwrap().0
    }

    fn field(err: ApiError) -> String {
        match err {
            ApiError::InvalidRequest {
                field: Some(field), ..
            } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let new = create(CreateSessionRequest::default()).unwrap();
        assert_eq!(new.ttl_secs, TTL_DEFAULT_SECS);
        assert_eq!(new.image, "default");
        assert_eq!(new.resources, Resources::default());
        assert!(new.metadata.is_empty() && new.env.is_empty());
    }

    #[test]
    fn ttl_bounds() {
        assert!(ttl(60).is_ok());
        assert!(ttl(28_800).is_ok());
        assert_eq!(field(ttl(59).unwrap_err()), "ttl");
        assert_eq!(field(ttl(28_801).unwrap_err()), "ttl");
    }

    #[test]
    fn image_names_are_bounded_and_left_to_the_image_store() {
        let named = |image: &str| CreateSessionRequest {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(create(named("python:3.11")).unwrap().image, "python:3.11");
        for bad in [
            "",
            "python 3",
            "a\nb",
            &"x".repeat(IMAGE_NAME_MAX_BYTES + 1),
        ] {
            assert_eq!(field(create(named(bad)).unwrap_err()), "image", "{bad:?}");
        }
    }

    #[test]
    fn metadata_bounds() {
        let many: BTreeMap<_, _> = (0..=METADATA_MAX_ENTRIES)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let req = CreateSessionRequest {
            metadata: Some(many),
            ..Default::default()
        };
        assert_eq!(field(create(req).unwrap_err()), "metadata");
        let long_value = BTreeMap::from([("k".to_owned(), "v".repeat(1025))]);
        let req = UpdateSessionRequest {
            metadata: Some(long_value),
            ttl: None,
            network: None,
        };
        assert_eq!(field(update(req).unwrap_err()), "metadata");
    }

    #[test]
    fn network_lists_are_checked_on_create_and_update() {
        let bad = hutch_api::NetworkPolicy {
            egress: hutch_api::Egress::Allow,
            allow: vec!["fd00:ec2::254".into()],
            deny: vec![],
        };
        let req = CreateSessionRequest {
            network: Some(bad.clone()),
            ..Default::default()
        };
        assert_eq!(field(create(req).unwrap_err()), "network");
        let req = UpdateSessionRequest {
            network: Some(bad),
            ..Default::default()
        };
        assert_eq!(field(update(req).unwrap_err()), "network");
    }

    #[test]
    fn env_names_are_checked() {
        let env = BTreeMap::from([("A=B".to_owned(), "x".to_owned())]);
        let req = CreateSessionRequest {
            env: Some(env),
            ..Default::default()
        };
        assert_eq!(field(create(req).unwrap_err()), "env");
    }

    #[test]
    fn resource_ranges() {
        let bad = [
            (
                ResourcesRequest {
                    cpus: Some(0.01),
                    ..Default::default()
                },
                "resources.cpus",
            ),
            (
                ResourcesRequest {
                    cpus: Some(f64::NAN),
                    ..Default::default()
                },
                "resources.cpus",
            ),
            (
                ResourcesRequest {
                    memory_mb: Some(1),
                    ..Default::default()
                },
                "resources.memoryMb",
            ),
            (
                ResourcesRequest {
                    pids: Some(1_000_000),
                    ..Default::default()
                },
                "resources.pids",
            ),
        ];
        for (req, name) in bad {
            assert_eq!(field(resources(req).unwrap_err()), name);
        }
        let ok = resources(ResourcesRequest {
            cpus: Some(0.5),
            memory_mb: Some(256),
            pids: None,
            disk_mb: Some(1024),
        })
        .unwrap();
        assert_eq!(ok.pids, DEFAULT_PIDS);
        assert_eq!(ok.disk_mb, Some(1024));
        let err = resources(ResourcesRequest {
            disk_mb: Some(DISK_MB_RANGE.0 - 1),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(field(err), "resources.diskMb");
    }

    #[test]
    fn pages() {
        assert_eq!(
            page(query("")).unwrap(),
            Page {
                limit: 20,
                offset: 0
            }
        );
        assert_eq!(
            page(query("limit=5&offset=10&x=y")).unwrap(),
            Page {
                limit: 5,
                offset: 10
            }
        );
        assert_eq!(field(page(query("limit=0")).unwrap_err()), "limit");
        assert_eq!(field(page(query("limit=101")).unwrap_err()), "limit");
        assert_eq!(field(page(query("limit=abc")).unwrap_err()), "limit");
        assert_eq!(field(page(query("offset=-1")).unwrap_err()), "offset");
    }
}

#[cfg(test)]
mod storage_tests {
    use super::tests::query;
    use super::*;
    use hutch_api::SyncPolicy;

    /// A binding of a context of its own at `path`.
    fn sync_at(path: &str) -> ContextSync {
        ContextSync {
            context_id: Uuid::now_v7(),
            path: path.to_owned(),
            policy: SyncPolicy::default(),
        }
    }

    #[test]
    fn context_names_are_checked() {
        let ok = CreateStorageContextRequest {
            name: "project-1.cache_x".to_owned(),
        };
        assert!(storage_context(ok).is_ok());
        for bad in ["", "a/b", "../x", "spa ce", &"x".repeat(129)] {
            let req = CreateStorageContextRequest {
                name: bad.to_owned(),
            };
            assert!(storage_context(req).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sync_paths_are_absolute_distinct_and_not_nested() {
        let mut good = [sync_at("/workspace/a"), sync_at("/./workspace//b/./")];
        assert!(check_context_syncs(&mut good).is_ok());
        assert_eq!(good[1].path, "/workspace/b", "kept in its normal spelling");
        for mut bad in [
            vec![sync_at("relative")],
            vec![sync_at("/")],
            vec![sync_at("//./")],
            vec![sync_at("/workspace/../etc")],
            vec![sync_at("/workspace/a"), sync_at("/workspace/a/")],
            vec![sync_at("/workspace"), sync_at("/workspace/a")],
            vec![sync_at("/workspace/o"), sync_at("/workspace//o/i")],
            vec![sync_at("/./workspace/n"), sync_at("/workspace/n/m")],
            vec![sync_at("/proc")],
            vec![sync_at("/./proc")],
            vec![sync_at("//proc/x")],
            vec![sync_at("/dev/shm/x")],
            vec![sync_at("/./dev/shm")],
            vec![sync_at("/sys/")],
        ] {
            assert!(check_context_syncs(&mut bad).is_err(), "{bad:?}");
        }
        // One context at two paths: each upload would replace the other's content.
        let procs = sync_at("/procs");
        let twice = ContextSync {
            context_id: procs.context_id,
            ..sync_at("/device")
        };
        assert!(check_context_syncs(&mut [procs.clone(), twice]).is_err());
        assert!(check_context_syncs(&mut [procs, sync_at("/device")]).is_ok());
        let mut too_many: Vec<ContextSync> = (0..9).map(|i| sync_at(&format!("/d{i}"))).collect();
        assert!(check_context_syncs(&mut too_many).is_err());
        let mut bad_glob = sync_at("/w");
        bad_glob.policy.include = vec!["a[".to_owned()];
        assert!(check_context_syncs(&mut [bad_glob]).is_err());
    }

    #[test]
    fn info_filters_parse() {
        let id = Uuid::now_v7();
        let filter = info_filter(query(&format!(
            "contextId={id}&path=%2Fworkspace%2Fdata&taskType=upload"
        )))
        .unwrap();
        assert_eq!(filter.context_id, Some(id));
        assert_eq!(filter.path.as_deref(), Some("/workspace/data"));
        assert_eq!(filter.task_type, Some(TaskType::Upload));
        assert!(info_filter(query("taskType=sideways")).is_err());
        assert!(info_filter(query("contextId=nope")).is_err());
        assert_eq!(
            info_filter(query("path=&taskType=")).unwrap(),
            crate::store::TaskFilter::default()
        );
    }
}
