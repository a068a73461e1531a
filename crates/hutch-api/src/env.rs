//! The check of environment variables a client sends, shared by the control plane (a
//! session's `env`) and the agent (a command's, a process's or an interpreter context's), so
//! that every route refuses the same variables with the same message.

use std::collections::BTreeMap;
use std::fmt;

use crate::limits::{ENV_MAX_ENTRIES, ENV_MAX_KEY_BYTES, ENV_MAX_VALUE_BYTES};

/// An environment refused by [`check`]: the request field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEnv {
    /// The request field that holds the environment (`env`, `envs`).
    pub field: &'static str,
    /// What is wrong, for the client.
    pub message: String,
}

impl fmt::Display for InvalidEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidEnv {}

/// Checks the environment held in request field `field`: at most [`ENV_MAX_ENTRIES`]
/// variables, each name 1 to [`ENV_MAX_KEY_BYTES`] bytes with no `=` or NUL, each value at
/// most [`ENV_MAX_VALUE_BYTES`] bytes with no NUL.
pub fn check(field: &'static str, env: &BTreeMap<String, String>) -> Result<(), InvalidEnv> {
    let refuse = |message: String| Err(InvalidEnv { field, message });
    if env.len() > ENV_MAX_ENTRIES {
        return refuse(format!(
            "{field} has {} entries; at most {ENV_MAX_ENTRIES} are allowed",
            env.len()
        ));
    }
    for (name, value) in env {
        if name.is_empty() || name.len() > ENV_MAX_KEY_BYTES || name.contains(['=', '\0']) {
            return refuse(format!(
                "{field} name {name:?} must be 1 to {ENV_MAX_KEY_BYTES} bytes with no '=' or NUL"
            ));
        }
        if value.len() > ENV_MAX_VALUE_BYTES || value.contains('\0') {
            return refuse(format!(
                "{field} value of {name:?} must be at most {ENV_MAX_VALUE_BYTES} bytes with no NUL"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ordinary_variables_pass() {
        assert_eq!(
            check("env", &env(&[("PATH", "/bin"), ("EMPTY", "")])),
            Ok(())
        );
        let at_limits = env(&[(
            &"N".repeat(ENV_MAX_KEY_BYTES),
            &"v".repeat(ENV_MAX_VALUE_BYTES),
        )]);
        assert_eq!(check("env", &at_limits), Ok(()));
    }

    #[test]
    fn bad_names_and_values_are_refused_naming_the_field() {
        for bad in [
            env(&[("", "x")]),
            env(&[("A=B", "x")]),
            env(&[("A\0", "x")]),
            env(&[(&"N".repeat(ENV_MAX_KEY_BYTES + 1), "x")]),
            env(&[("A", "x\0y")]),
            env(&[("A", &"v".repeat(ENV_MAX_VALUE_BYTES + 1))]),
        ] {
            let err = check("envs", &bad).unwrap_err();
            assert_eq!(err.field, "envs");
            assert!(err.message.starts_with("envs "), "{err}");
        }
    }

    #[test]
    fn too_many_variables_are_refused() {
        let many: BTreeMap<String, String> = (0..=ENV_MAX_ENTRIES)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        let err = check("env", &many).unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "env has {} entries; at most {ENV_MAX_ENTRIES} are allowed",
                ENV_MAX_ENTRIES + 1
            )
        );
    }
}
