//! Which program every sandbox runs as its agent: the lean `hutch-agent` lying beside this
//! executable, when it is there, safe to run and built from the same sources, else this very
//! executable as `hutch agent` (the same agent, at a few MiB more private memory per session:
//! see `agent_main.rs`).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_sandbox::linux::AgentProgram;

/// The lean agent's file name, looked for in the directory of the running `hutch`.
pub(crate) const LEAN_AGENT: &str = "hutch-agent";

/// How long `hutch-agent --build-id` may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest answer to `--build-id` that is read.
const ANSWER_MAX_BYTES: u64 = 256;

/// Why the file beside `hutch` is not run as the agent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotLean {
    /// There is none.
    #[error("there is no {} beside it", LEAN_AGENT)]
    Absent,
    /// It is not a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// Someone other than the owner of `hutch` owns it.
    #[error("{path} belongs to uid {found}, and hutch to uid {expected}")]
    Owner {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// Its group or other users may change it.
    #[error("{path} is writable by its group or by others (mode {mode:o})")]
    Writable { path: PathBuf, mode: u32 },
    /// It could not be asked for its build id.
    #[error("running {path} --build-id: {source}")]
    Ask {
        path: PathBuf,
        source: std::io::Error,
    },
    /// It did not answer in time.
    #[error("{0} --build-id did not answer within {ASK_TIMEOUT:?}")]
    Timeout(PathBuf),
    /// It answered, but was built from other sources than this server.
    #[error("{path} was built from other sources (build id {found:?}, this server's {expected:?})")]
    OtherBuild {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// The agent program of a server whose executable is `exe`, logging the choice.
pub(crate) fn choose(exe: &Path) -> AgentProgram {
    let lean = exe.with_file_name(LEAN_AGENT);
    match check_lean(exe, &lean, crate::agent::BUILD_ID) {
        Ok(()) => {
            tracing::info!(agent = %lean.display(), "sandboxes run the lean agent");
            AgentProgram::lean(lean)
        }
        Err(NotLean::Absent) => {
            tracing::info!(
                "no {LEAN_AGENT} beside {}: sandboxes run `hutch agent`, which costs more memory per session (see docs/operations.md)",
                exe.display()
            );
            AgentProgram::hutch(exe.to_owned())
        }
        Err(why) => {
            tracing::warn!(reason = %why, "not running the {LEAN_AGENT} beside hutch: sandboxes run `hutch agent`");
            AgentProgram::hutch(exe.to_owned())
        }
    }
}

/// Whether `lean` may run as the agent of the server `exe`, whose agent build id is
/// `build_id`: a regular file of the same owner as `exe`, not writable by group or others,
/// that answers `--build-id` with `build_id`.
pub(crate) fn check_lean(exe: &Path, lean: &Path, build_id: &str) -> Result<(), NotLean> {
    let meta = match std::fs::metadata(lean) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotLean::Absent),
        Err(source) => {
            return Err(NotLean::Ask {
                path: lean.to_owned(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(NotLean::NotAFile(lean.to_owned()));
    }
    let owner = std::fs::metadata(exe)
        .map_err(|source| NotLean::Ask {
            path: exe.to_owned(),
            source,
        })?
        .uid();
    if meta.uid() != owner {
        return Err(NotLean::Owner {
            path: lean.to_owned(),
            found: meta.uid(),
            expected: owner,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(NotLean::Writable {
            path: lean.to_owned(),
            mode,
        });
    }
    let found = ask_build_id(lean)?;
    if found != build_id {
        return Err(NotLean::OtherBuild {
            path: lean.to_owned(),
            found,
            expected: build_id.to_owned(),
        });
    }
    Ok(())
}

/// Runs `lean --build-id` (no environment, no input) and returns its first line, waiting at
/// most [`ASK_TIMEOUT`].
fn ask_build_id(lean: &Path) -> Result<String, NotLean> {
    let ask = |source| NotLean::Ask {
        path: lean.to_owned(),
        source,
    };
    let mut child = Command::new(lean)
        .arg("--build-id")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(ask)?;
    let Some(stdout) = child.stdout.take() else {
        return Err(ask(std::io::Error::other("no stdout")));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = stdout
            .take(ANSWER_MAX_BYTES)
            .read_to_string(&mut answer)
            .map(|_| answer);
        let _ = tx.send(read);
    });
    let read = match rx.recv_timeout(ASK_TIMEOUT) {
        Ok(read) => read,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NotLean::Timeout(lean.to_owned()));
        }
    };
    let status = child.wait().map_err(ask)?;
    let answer = read.map_err(ask)?;
    if !status.success() {
        return Err(ask(std::io::Error::other(format!(
            "it exited with {status}"
        ))));
    }
    Ok(answer.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A directory holding a `hutch` stand-in and, when `script` is given, a `hutch-agent`
    /// shell script of that body.
    fn dir_with(script: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hutch");
        std::fs::write(&exe, "").unwrap();
        let lean = dir.path().join(LEAN_AGENT);
        if let Some(script) = script {
            std::fs::write(&lean, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&lean, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        (dir, exe, lean)
    }

    /// [`check_lean`], again while the script is busy: another test's process may have been
    /// forked while this one's script was open for writing, and holds it until it execs
    /// (`ETXTBSY`), which takes moments.
    fn check(exe: &Path, lean: &Path, build_id: &str) -> Result<(), NotLean> {
        for _ in 0..100 {
            match check_lean(exe, lean, build_id) {
                Err(NotLean::Ask { source, .. })
                    if source.kind() == std::io::ErrorKind::ExecutableFileBusy =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
        check_lean(exe, lean, build_id)
    }

    #[test]
    fn the_lean_agent_runs_only_when_it_was_built_from_the_same_sources() {
        let (_dir, exe, lean) = dir_with(Some("echo 0.1.0-00aa"));
        check(&exe, &lean, "0.1.0-00aa").unwrap();
        let other = check(&exe, &lean, "0.1.0-00bb").unwrap_err();
        assert!(matches!(other, NotLean::OtherBuild { .. }), "{other}");
    }

    #[test]
    fn no_lean_agent_means_hutch_agent() {
        let (_dir, exe, lean) = dir_with(None);
        assert!(matches!(check(&exe, &lean, "x"), Err(NotLean::Absent)));
        assert_eq!(choose(&exe), AgentProgram::hutch(exe));
    }

    #[test]
    fn a_lean_agent_others_may_change_is_not_run() {
        let (_dir, exe, lean) = dir_with(Some("echo id"));
        std::fs::set_permissions(&lean, std::fs::Permissions::from_mode(0o775)).unwrap();
        let refused = check(&exe, &lean, "id").unwrap_err();
        assert!(matches!(refused, NotLean::Writable { .. }), "{refused}");
        std::fs::remove_file(&lean).unwrap();
        std::fs::create_dir(&lean).unwrap();
        let refused = check(&exe, &lean, "id").unwrap_err();
        assert!(matches!(refused, NotLean::NotAFile(_)), "{refused}");
    }

    #[test]
    fn a_lean_agent_that_fails_is_not_run() {
        let (_dir, exe, lean) = dir_with(Some("echo id; exit 3"));
        let refused = check(&exe, &lean, "id").unwrap_err();
        assert!(matches!(refused, NotLean::Ask { .. }), "{refused}");
        assert_eq!(choose(&exe), AgentProgram::hutch(exe));
    }
}
