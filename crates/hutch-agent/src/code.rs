//! Stateless code runs: `POST /code` runs a snippet in a fresh process and answers like a
//! one-shot command.
//!
//! `python` runs `python3 -c CODE`, `javascript` `node -e CODE`, `bash` `bash -c CODE`, each
//! in the session's default working directory with the session's environment and the
//! request's `env` over it. Nothing survives between runs (for state, use interpreter
//! contexts); the run is a one-shot command in every other respect: its own cgroup, the
//! timeout kills its whole tree, and it holds one of the session's concurrent-command permits.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use hutch_api::limits::COMMANDS_CONCURRENT_MAX;
use hutch_api::processes::CODE_LANGUAGES;
use hutch_api::responses::{DiskFull, LanguageUnavailable, PayloadTooLarge};
use hutch_api::{CodeRequest, CommandRequest, CommandResult};

use crate::Agent;
use crate::api::read_json;
use crate::error::AgentError;

/// The command a code request runs.
fn command_of(req: CodeRequest) -> Result<CommandRequest, AgentError> {
    let Some((_, program, flag)) = CODE_LANGUAGES
        .iter()
        .find(|(name, _, _)| *name == req.language)
    else {
        return Err(AgentError::invalid(
            "language",
            format!(
                "language must be one of python, javascript, bash; got {:?}",
                req.language
            ),
        ));
    };
    if req.code.contains('\0') {
        return Err(AgentError::invalid("code", "code may not contain NUL"));
    }
    // The source is one argument of the interpreter, joined to its flag (`--eval=…`) so that
    // a source starting with `-` is not read as an option.
    let max = hutch_api::limits::COMMAND_ARG_MAX_BYTES - flag.len();
    if req.code.len() > max {
        return Err(AgentError::invalid(
            "code",
            format!(
                "code is longer than {max} bytes, Linux's bound on one argument; write a longer program to a file and run it"
            ),
        ));
    }
    let argv = match *program {
        // `bash -c` reads options up to `--`.
        "bash" => vec![
            (*program).to_owned(),
            "-c".to_owned(),
            "--".to_owned(),
            req.code,
        ],
        _ => vec![(*program).to_owned(), format!("{flag}{}", req.code)],
    };
    Ok(CommandRequest {
        argv: Some(argv),
        timeout: req.timeout,
        env: req.env,
        ..CommandRequest::default()
    })
}

/// Runs a snippet in a fresh process: `python` (`python3 -c`), `javascript` (`node -e`) or
/// `bash` (`bash -c`), answered like a one-shot command. Nothing survives between runs.
#[utoipa::path(
    post,
    path = "/code",
    operation_id = "runCode",
    tag = "processes",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The code ran (whatever its exit status)",
            body = CommandResult),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = LanguageUnavailable),
        (status = 507, response = DiskFull),
    )
)]
pub(crate) async fn run(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Json<CommandResult>, AgentError> {
    let Ok(_permit) = Arc::clone(&agent.commands).try_acquire_owned() else {
        return Err(AgentError::Busy {
            limit: COMMANDS_CONCURRENT_MAX,
        });
    };
    let code: CodeRequest = read_json(req.into_body()).await?;
    let command = command_of(code)?;
    if let Some(program) = command.argv.as_ref().and_then(|argv| argv.first()) {
        let path = command
            .env
            .as_ref()
            .and_then(|env| env.get("PATH"))
            .or_else(|| agent.base_env.get("PATH"))
            .map_or("", String::as_str);
        agent.image.require(program, path)?;
    }
    crate::commands::run(&agent, command).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_language_runs_its_interpreter() {
        for (language, program) in [
            ("python", "python3"),
            ("javascript", "node"),
            ("bash", "bash"),
        ] {
            let command = command_of(CodeRequest {
                language: language.into(),
                code: "x".into(),
                ..CodeRequest::default()
            })
            .unwrap();
            assert_eq!(command.argv.unwrap()[0], program);
        }
    }

    #[test]
    fn an_unknown_language_names_the_field() {
        let err = command_of(CodeRequest {
            language: "cobol".into(),
            code: "x".into(),
            ..CodeRequest::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                AgentError::Invalid {
                    field: Some("language"),
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
