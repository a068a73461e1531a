//! Path strings of the file API: validated and cleaned before anything touches the disk.
//!
//! A path is absolute, or relative to `/workspace`. Cleaning is lexical: `.` and empty
//! components go, `..` removes the component before it and stops at `/`. The result is only a
//! name for the kernel to resolve *inside the sandbox root* (see [`super::fsys`]); cleaning is
//! not what confines it.

use std::ffi::CString;

use hutch_api::limits::{FILES_NAME_MAX_BYTES, FILES_PATH_MAX_COMPONENTS, PATH_MAX_BYTES};

use crate::error::AgentError;

/// Directory relative paths start from.
pub(crate) const BASE_DIR: &str = "/workspace";

/// A validated, cleaned sandbox path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SandboxPath {
    /// Components below `/`; empty for `/` itself.
    parts: Vec<String>,
}

impl SandboxPath {
    /// Validates `raw` (the value of request field `field`) and cleans it.
    pub(crate) fn parse(field: &'static str, raw: &str) -> Result<SandboxPath, AgentError> {
        if raw.is_empty() {
            return Err(AgentError::invalid(
                field,
                format!("{field} must not be empty"),
            ));
        }
        if raw.len() > PATH_MAX_BYTES {
            return Err(AgentError::invalid(
                field,
                format!("{field} is longer than {PATH_MAX_BYTES} bytes"),
            ));
        }
        if raw.contains('\0') {
            return Err(AgentError::invalid(field, format!("{field} contains NUL")));
        }
        let joined;
        let full = if raw.starts_with('/') {
            raw
        } else {
            joined = format!("{BASE_DIR}/{raw}");
            &joined
        };
        let mut parts: Vec<String> = Vec::new();
        let mut count = 0usize;
        for part in full.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => {
                    if name.len() > FILES_NAME_MAX_BYTES {
                        return Err(AgentError::invalid(
                            field,
                            format!("{field} has a name longer than {FILES_NAME_MAX_BYTES} bytes"),
                        ));
                    }
                    parts.push(name.to_owned());
                }
            }
            count += 1;
            if count > FILES_PATH_MAX_COMPONENTS + 2 {
                return Err(AgentError::invalid(
                    field,
                    format!("{field} has more than {FILES_PATH_MAX_COMPONENTS} components"),
                ));
            }
        }
        Ok(SandboxPath { parts })
    }

    /// Whether this is `/`.
    pub(crate) fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The path relative to the root, for `openat2` (`.` for the root).
    pub(crate) fn relative(&self) -> CString {
        let s = if self.parts.is_empty() {
            ".".to_owned()
        } else {
            self.parts.join("/")
        };
        CString::new(s).unwrap_or_else(|_| c".".to_owned())
    }

    /// The parent directory and the last name; `None` for `/`.
    pub(crate) fn split(&self) -> Option<(SandboxPath, CString)> {
        let (last, parent) = self.parts.split_last()?;
        let name = CString::new(last.as_str()).ok()?;
        Some((
            SandboxPath {
                parts: parent.to_vec(),
            },
            name,
        ))
    }

    /// The last name (empty for `/`).
    pub(crate) fn name(&self) -> &str {
        self.parts.last().map(String::as_str).unwrap_or("")
    }

    /// This path with `name` appended (a single validated name).
    pub(crate) fn child(&self, name: &str) -> SandboxPath {
        let mut parts = self.parts.clone();
        parts.push(name.to_owned());
        SandboxPath { parts }
    }

    /// Whether `self` is `other` or lies below it.
    pub(crate) fn starts_with(&self, other: &SandboxPath) -> bool {
        self.parts.starts_with(&other.parts)
    }

    /// The components below `/`.
    pub(crate) fn parts(&self) -> &[String] {
        &self.parts
    }
}

impl std::fmt::Display for SandboxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.parts.join("/"))
    }
}

/// Parses an octal mode string (`"644"`, `"0644"`, `"0o644"`) of request field `field`;
/// only permission bits and the sticky bit are accepted (no set-user-id or set-group-id).
pub(crate) fn parse_mode(
    field: &'static str,
    raw: Option<&str>,
    default: u32,
) -> Result<u32, AgentError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let digits = raw.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode & !0o1777 == 0 && !digits.is_empty() => Ok(mode),
        _ => Err(AgentError::invalid(
            field,
            format!(
                "{field} must be octal permission bits such as 0644 (at most 1777), got {raw:?}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        SandboxPath::parse("path", s).unwrap().to_string()
    }

    #[test]
    fn paths_are_cleaned_and_never_climb_above_root() {
        assert_eq!(p("/"), "/");
        assert_eq!(p("a/b"), "/workspace/a/b");
        assert_eq!(p("../../../../etc/passwd"), "/etc/passwd");
        assert_eq!(p("/a/./b//c/.."), "/a/b");
        assert_eq!(p("/.."), "/");
    }

    #[test]
    fn bad_paths_name_the_field() {
        for bad in ["", "a\0b"] {
            let err = SandboxPath::parse("from", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    AgentError::Invalid {
                        field: Some("from"),
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let long = "a/".repeat(PATH_MAX_BYTES);
        assert!(SandboxPath::parse("path", &long).is_err());
        let many = "a/".repeat(FILES_PATH_MAX_COMPONENTS + 5);
        assert!(SandboxPath::parse("path", &many).is_err());
        let wide = "x".repeat(FILES_NAME_MAX_BYTES + 1);
        assert!(SandboxPath::parse("path", &wide).is_err());
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("mode", Some("0755"), 0).unwrap(), 0o755);
        assert_eq!(parse_mode("mode", Some("600"), 0).unwrap(), 0o600);
        assert_eq!(parse_mode("mode", None, 0o644).unwrap(), 0o644);
        assert!(parse_mode("mode", Some("4755"), 0).is_err());
        assert!(parse_mode("mode", Some("9"), 0).is_err());
    }
}
