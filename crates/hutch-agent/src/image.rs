//! What the agent knows of the image its sandbox runs: its name, the default working
//! directory, the user commands run as, and which language programs it has.
//!
//! The agent never loads anything from the image itself (it is a static part of the host's
//! binary, exec'd before the root changed). User names are resolved from the image's own
//! `/etc/passwd` and `/etc/group`, read as plain files: no NSS module of the image is loaded.

use std::path::Path;

use hutch_sandbox::process::find_program;

use crate::error::AgentError;

/// The working directory of commands and contexts when neither the request nor the image
/// names one.
pub(crate) const DEFAULT_CWD: &str = "/workspace";

/// The user processes run as, resolved inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    /// User id.
    pub(crate) uid: u32,
    /// Primary group id.
    pub(crate) gid: u32,
    /// The user's name, when `/etc/passwd` has it.
    pub(crate) name: Option<String>,
    /// The user's home directory, when `/etc/passwd` has it.
    pub(crate) home: Option<String>,
}

/// The image as the agent's handlers see it.
#[derive(Debug)]
pub(crate) struct Image {
    /// Its name, for messages (`busybox:latest`).
    pub(crate) name: String,
    /// The default working directory.
    pub(crate) cwd: String,
    /// The user to run as (`None`: root), or why the image's `User` cannot be resolved.
    user: Result<Option<RunAs>, String>,
}

impl Image {
    /// The image `name` with its `WorkingDir` and `User` (resolved against the sandbox's
    /// `/etc/passwd` and `/etc/group`). A sandbox hutch built maps only
    /// [`hutch_sandbox::linux::UID_COUNT`] ids; a container (`any_id`) has them all.
    pub(crate) fn new(
        name: Option<String>,
        working_dir: Option<String>,
        user: Option<&str>,
        any_id: bool,
    ) -> Image {
        let user = match user.filter(|u| !u.is_empty()) {
            None => Ok(None),
            Some(user) => resolve_user(user, &read("/etc/passwd"), &read("/etc/group"))
                .and_then(|run_as| {
                    if any_id {
                        Ok(run_as)
                    } else {
                        within_sandbox_ids(user, run_as)
                    }
                })
                .map(Some),
        };
        Image {
            name: name.unwrap_or_else(|| "default".to_owned()),
            cwd: working_dir
                .filter(|dir| dir.starts_with('/'))
                .unwrap_or_else(|| DEFAULT_CWD.to_owned()),
            user,
        }
    }

    /// The ids processes start with (`None`: root), or a 400 naming the unresolvable user.
    pub(crate) fn user_ids(&self) -> Result<Option<(u32, u32)>, AgentError> {
        match &self.user {
            Ok(user) => Ok(user.as_ref().map(|u| (u.uid, u.gid))),
            Err(message) => Err(AgentError::invalid("user", message.clone())),
        }
    }

    /// The resolved user, if the image names one that resolves.
    pub(crate) fn user(&self) -> Option<&RunAs> {
        self.user.as_ref().ok().and_then(Option::as_ref)
    }

    /// Fails with `language_unavailable` when `program` is not on `path` in this image.
    pub(crate) fn require(&self, program: &str, path: &str) -> Result<(), AgentError> {
        if find_program(program, path).is_some_and(|p| Path::new(&p).exists()) {
            return Ok(());
        }
        Err(AgentError::LanguageUnavailable {
            image: self.name.clone(),
            program: program.to_owned(),
        })
    }
}

/// A file of the image, empty when it cannot be read.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The user this process runs as (its effective uid, from `/proc/self/status`), with its name
/// and home when `/etc/passwd` has them.
pub(crate) fn current_user() -> Option<RunAs> {
    let status = read("/proc/self/status");
    let ids = |prefix: &str| -> Option<u32> {
        let line = status.lines().find_map(|l| l.strip_prefix(prefix))?;
        // Real, effective, saved, file system: the effective one.
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let (uid, gid) = (ids("Uid:")?, ids("Gid:")?);
    Some(
        resolve_user(&uid.to_string(), &read("/etc/passwd"), "").unwrap_or(RunAs {
            uid,
            gid,
            name: None,
            home: None,
        }),
    )
}

/// The program that runs `language` (`python` → `python3`, `javascript` → `node`, `bash`).
pub(crate) fn program_of(language: &str) -> &'static str {
    match language {
        "javascript" => "node",
        "bash" => "bash",
        _ => "python3",
    }
}

/// Resolves a Docker-style `User` (`name`, `uid`, `name:group`, `uid:gid`, and mixes) against
/// the text of `/etc/passwd` and `/etc/group`. A numeric user missing from `passwd` runs with
/// gid 0, as Docker does; a name missing from it is an error.
pub(crate) fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<RunAs, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // name:x:uid:gid:gecos:home:shell
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4)
        .collect();
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => entries.iter().find(|f| f[2].parse() == Ok(uid)),
        Err(_) => entries.iter().find(|f| f[0] == user_part),
    };
    let (uid, mut gid, name, home) = match (entry, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("the image's /etc/passwd has a bad uid for {user_part}"))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0].to_owned()),
            f.get(5).map(|h| (*h).to_owned()).filter(|h| !h.is_empty()),
        ),
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => {
            return Err(format!(
                "the image's user {user_part:?} is not in its /etc/passwd"
            ));
        }
    };
    if let Some(group_part) = group_part {
        gid = match group_part.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .map(|line| line.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == group_part)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("the image's group {group_part:?} is not in its /etc/group")
                })?,
        };
    }
    Ok(RunAs {
        uid,
        gid,
        name,
        home,
    })
}

/// `run_as`, the image's `user`, if it has ids a sandbox hutch built maps.
fn within_sandbox_ids(user: &str, run_as: RunAs) -> Result<RunAs, String> {
    let count = hutch_sandbox::linux::UID_COUNT;
    if run_as.uid >= count || run_as.gid >= count {
        return Err(format!(
            "the image's user {user} maps outside the sandbox's {count} ids"
        ));
    }
    Ok(run_as)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn names_and_numbers_resolve_from_the_images_files() {
        let app = resolve_user("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1001));
        assert_eq!(app.home.as_deref(), Some("/home/app"));
        let by_uid = resolve_user("1000", PASSWD, GROUP).unwrap();
        assert_eq!(by_uid.name.as_deref(), Some("app"));
        let with_group = resolve_user("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!((with_group.uid, with_group.gid), (1000, 50));
        let numeric = resolve_user("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((numeric.uid, numeric.gid, numeric.name), (4242, 4343, None));
    }

    #[test]
    fn unknown_names_and_ids_outside_the_sandbox_are_refused() {
        assert!(
            resolve_user("nobody-here", PASSWD, GROUP)
                .unwrap_err()
                .contains("nobody-here")
        );
        assert!(
            resolve_user("app:wheel", PASSWD, GROUP)
                .unwrap_err()
                .contains("wheel")
        );
        let far = resolve_user("70000", PASSWD, GROUP).unwrap();
        assert!(
            within_sandbox_ids("70000", far.clone())
                .unwrap_err()
                .contains("outside")
        );
        assert_eq!(
            Image::new(None, None, Some("70000"), true).user(),
            Some(&far),
            "a container has every id"
        );
    }
}
