//! Building a sandbox up to `built`: its directories, cgroups, socket and pipes, the `clone3`
//! into new namespaces, and the release of the child once its maps are written.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hutch_api::Resources;
use uuid::Uuid;

use super::{LinuxRuntime, UID_COUNT, image, io, sys_err};
use crate::init::{self, InitConfig, OverlayMount};
use crate::sys::{self, ChildFd};
use crate::{SandboxError, SandboxImage};

/// A built sandbox that no session has claimed yet.
pub(super) struct Embryo {
    pub(super) id: Uuid,
    pub(super) spawned: sys::Spawned,
    pub(super) claim: OwnedFd,
    pub(super) status: OwnedFd,
    /// The network slot it was wired with ahead of its session, if it was (see
    /// [`super::network::Network::prewire`]).
    pub(super) wired: Option<super::network::Slot>,
}

impl LinuxRuntime {
    /// Builds the directories and init configuration of a sandbox whose root maps to host id
    /// `owner` (the first of its range).
    fn prepare(
        &self,
        id: Uuid,
        disk_mb: Option<u64>,
        image: &SandboxImage,
        owner: u32,
    ) -> Result<InitConfig, SandboxError> {
        let dir = self.sandbox_dir(id);
        let rootfs = dir.join("rootfs");
        // With a quota, the writable layers live on the session's own disk: its subvolume of
        // the disk pool, or a file system of its own.
        let layers = match disk_mb {
            Some(mb) => self.inner.disks.create(&dir, id, mb, owner)?,
            None => dir.clone(),
        };
        let mut overlays = Vec::new();
        let mut layer =
            |name: &str, target: PathBuf, lower: Vec<PathBuf>| -> Result<(), SandboxError> {
                let upper = layers.join("upper").join(name);
                let work = layers.join("work").join(name);
                for d in [&upper, &work] {
                    fs::create_dir_all(d).map_err(io("create", d))?;
                }
                overlays.push(OverlayMount {
                    target,
                    lower,
                    upper,
                    work,
                });
                Ok(())
            };
        let built_on = match image {
            SandboxImage::Default => {
                let default = &self.inner.image;
                layer("root", "/".into(), vec![default.skeleton.clone()])?;
                for host_dir in &default.overlay_dirs {
                    let name = host_dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("dir")
                        .to_owned();
                    layer(&name, host_dir.clone(), vec![host_dir.clone()])?;
                }
                default.skeleton.as_path()
            }
            SandboxImage::Oci(oci) => {
                // hutch's mount points above the image, its fallback /etc below: one overlay,
                // no host directory in it.
                let helpers = &self.inner.oci_layers;
                let mut lower = Vec::with_capacity(oci.layers.len() + 2);
                lower.push(helpers.top.clone());
                lower.extend(oci.layers.iter().cloned());
                lower.push(helpers.base.clone());
                layer("root", "/".into(), lower)?;
                helpers.dir()
            }
        };
        fs::create_dir_all(&rootfs).map_err(io("create", &rootfs))?;
        image::mark_in_use(&dir, built_on).map_err(io("mark the image in", &dir))?;
        let mut owned = walk_dirs(&dir);
        if !layers.starts_with(&dir) {
            owned.extend(walk_dirs(&layers));
        }
        for path in owned {
            sys::lchown(&path, owner, owner).map_err(io("chown", &path))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", &dir))?;
        Ok(InitConfig {
            rootfs,
            overlays,
            has_cgroup_dir: false,
            has_memory_events: false,
            tmpfs_mb: disk_mb,
            user_cgroup_tasks: 0,
            seccomp_allow: self.inner.config.seccomp_allow.clone(),
            idmapped: Vec::new(),
            has_python_compiled: false,
        })
    }

    /// The directories of `data_dir` that hold lower layers of `overlays` (the top-level
    /// directory of each lower below it), with a detached copy of each whose owners show in
    /// the range starting at `owner`. Lower layers elsewhere (the host's `/usr`) are owned by
    /// host users no sandbox maps and stay as they are.
    fn idmapped_layers(
        &self,
        overlays: &[OverlayMount],
        owner: u32,
    ) -> Result<Vec<(PathBuf, OwnedFd)>, SandboxError> {
        let data = &self.inner.config.data_dir;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for lower in overlays.iter().flat_map(|o| &o.lower) {
            if let Ok(rest) = lower.strip_prefix(data)
                && let Some(top) = rest.components().next()
            {
                let dir = data.join(top);
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        if dirs.len() > init::IDMAPPED_FDS.len() {
            return Err(SandboxError::InvalidSpec(format!(
                "lower layers in {} directories of the data directory, at most {} supported",
                dirs.len(),
                init::IDMAPPED_FDS.len()
            )));
        }
        let userns = self.inner.ids.idmap(owner)?;
        dirs.into_iter()
            .map(|dir| {
                let tree = hutch_sys::idmap::idmapped_tree(&dir, userns.as_fd())
                    .map_err(io("idmap", &dir))?;
                Ok((dir, tree))
            })
            .collect()
    }

    /// Builds sandbox `id` on `image` up to `built` (blocking: run off the async threads).
    pub(super) fn build(
        &self,
        id: Uuid,
        resources: &Resources,
        image: &SandboxImage,
    ) -> Result<Embryo, SandboxError> {
        let inner = &self.inner;
        // Before anything of it exists: no other server's sweep takes it for a leftover.
        inner.keeper.keep(id)?;
        // Freed by the teardown that follows any failure from here on.
        let (owner, lease) = inner.ids.allocate(id)?;
        let mut config = self.prepare(id, resources.disk_mb, image, owner)?;
        // The sandbox's directory exists: it keeps the range taken in every process's eyes.
        drop(lease);
        let idmapped = self.idmapped_layers(&config.overlays, owner)?;
        config.idmapped = idmapped.iter().map(|(dir, _)| dir.clone()).collect();
        let cgroup = inner.cgroups.create(id, resources, owner)?;
        config.has_cgroup_dir = cgroup.v2_fd.is_some();
        config.has_memory_events = cgroup.memory_events.is_some();
        config.user_cgroup_tasks = cgroup.user_tasks.len();
        // Compiled for the default image's interpreter: of no use to another image's.
        let python_compiled = match image {
            SandboxImage::Default => inner.python_compiled.as_ref(),
            SandboxImage::Oci(_) => None,
        };
        config.has_python_compiled = python_compiled.is_some();

        let socket = self.socket_path(id);
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(io("bind", &socket))?;

        let (config_r, config_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let (status_r, status_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let (go_r, go_w) = sys::pipe().map_err(sys_err("pipe"))?;
        let mut json =
            serde_json::to_vec(&config).map_err(|e| SandboxError::InvalidSpec(e.to_string()))?;
        json.push(b'\n');
        // The pipe buffer holds the whole config (grown past its 64 KiB for images with many
        // layers), so this does not block.
        if json.len() > 60 * 1024 {
            sys::set_pipe_size(&config_w, json.len() + 4096)
                .map_err(sys_err("grow config pipe"))?;
        }
        (&fs::File::from(config_w.try_clone().map_err(sys_err("dup"))?))
            .write_all(&json)
            .map_err(sys_err("write init config"))?;

        let high = |fd: &OwnedFd| sys::dup_above(fd.as_raw_fd(), 100).map_err(sys_err("dup"));
        let dev_null = sys::open(Path::new("/dev/null"), libc::O_RDWR)
            .map_err(io("open", Path::new("/dev/null")))?;
        // The agent's own warnings and errors; removed with the sandbox.
        let log_path = self.sandbox_dir(id).join("agent.log");
        let log: OwnedFd = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io("open", &log_path))?
            .into();
        let sources = [
            (high(&dev_null)?, 0),
            (high(&log)?, 1),
            (high(&log)?, 2),
            (high(&config_r)?, init::CONFIG_FD),
            (high(&status_w)?, init::STATUS_FD),
            (
                sys::dup_above(listener.as_raw_fd(), 100).map_err(sys_err("dup"))?,
                init::LISTENER_FD,
            ),
            (high(&go_r)?, init::GO_FD),
        ];
        let cgroup_src = cgroup.v2_fd.as_ref().map(high).transpose()?;
        let events_src = cgroup.memory_events.as_ref().map(high).transpose()?;
        let tasks_src: Vec<OwnedFd> = cgroup
            .user_tasks
            .iter()
            .map(high)
            .collect::<Result<_, _>>()?;
        let idmapped_src: Vec<OwnedFd> = idmapped
            .iter()
            .map(|(_, tree)| high(tree))
            .collect::<Result<_, _>>()?;
        let python_src = python_compiled.map(high).transpose()?;
        let mut fds: Vec<ChildFd> = sources
            .iter()
            .map(|(fd, target)| ChildFd {
                source: fd.as_raw_fd(),
                target: *target,
            })
            .collect();
        for (fd, target) in [
            (&cgroup_src, init::CGROUP_FD),
            (&events_src, init::MEMORY_EVENTS_FD),
            (&python_src, init::PYTHON_COMPILED_FD),
        ] {
            if let Some(fd) = fd {
                fds.push(ChildFd {
                    source: fd.as_raw_fd(),
                    target,
                });
            }
        }
        for (fd, target) in tasks_src
            .iter()
            .zip(init::USER_CGROUP_TASKS_FDS)
            .chain(idmapped_src.iter().zip(init::IDMAPPED_FDS))
        {
            fds.push(ChildFd {
                source: fd.as_raw_fd(),
                target,
            });
        }
        // No CLONE_NEWNS: the agent makes its mount namespace itself (see `init::set_up`).
        let flags = (libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS) as u64;
        let spawned = sys::spawn_into_namespaces(
            flags,
            cgroup.spawn_fd.as_ref().map(|fd| fd.as_raw_fd()),
            inner.agent_exe.as_raw_fd(),
            &inner.agent_argv,
            &fds,
            init::GO_FD,
        )
        .map_err(sys_err("start sandbox"))?;
        drop((
            sources,
            cgroup_src,
            events_src,
            python_src,
            tasks_src,
            idmapped_src,
            idmapped,
            config_r,
            status_w,
            go_r,
            listener,
            dev_null,
            log,
        ));

        let release = || -> Result<(), SandboxError> {
            let map = format!("0 {owner} {UID_COUNT}\n");
            for file in ["uid_map", "gid_map"] {
                let path = PathBuf::from(format!("/proc/{}/{file}", spawned.pid));
                fs::write(&path, &map).map_err(io("write", &path))?;
            }
            inner.cgroups.attach_v1(&cgroup, spawned.pid)?;
            // The agent should outlive the code it runs when memory runs out; what it starts
            // gets a score of 0 again. Lowering a score needs CAP_SYS_RESOURCE, which some
            // hosts withhold even from root: then the OOM killer still picks the largest
            // process, which is not the agent.
            let path = PathBuf::from(format!("/proc/{}/oom_score_adj", spawned.pid));
            if let Err(e) = fs::write(&path, "-998") {
                tracing::debug!(error = %e, "cannot shield the agent from the OOM killer");
            }
            fs::File::from(go_w)
                .write_all(b"g")
                .map_err(sys_err("release sandbox"))?;
            match read_status_line(&status_r, inner.config.start_timeout) {
                Ok(line) if line == "built" => {
                    Ok(inner
                        .cgroups
                        .settle_agent(&cgroup, spawned.pid, resources)?)
                }
                Ok(line) => Err(SandboxError::Start { id, reason: line }),
                Err(reason) => Err(SandboxError::Start { id, reason }),
            }
        };
        if let Err(e) = release() {
            let _ = sys::pidfd_send_signal(spawned.pidfd.as_raw_fd(), libc::SIGKILL);
            sys::wait_blocking(spawned.pid);
            return Err(e);
        }
        Ok(Embryo {
            id,
            spawned,
            claim: config_w,
            status: status_r,
            wired: None,
        })
    }
}

/// Reads one status line from the sandbox's init, waiting at most `timeout`.
pub(super) fn read_status_line(status: &OwnedFd, timeout: Duration) -> Result<String, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("the sandbox did not report within {timeout:?}"));
        }
        let mut pfd = libc::pollfd {
            fd: status.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(format!(
                "waiting for the sandbox: {}",
                std::io::Error::last_os_error()
            ));
        }
        if rc <= 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a local buffer from a descriptor we own.
        match unsafe { libc::read(status.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } {
            1 if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            1 => line.push(byte[0]),
            0 if line.is_empty() => return Err("the sandbox exited before reporting".into()),
            0 => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("reading the sandbox's status: {err}"));
                }
            }
        }
    }
}

/// `dir` and every directory below it.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}
