//! What the client subcommands (`hutch sessions`, `hutch exec`, `hutch shell`) share: where
//! the server is and who is asking, and how a failure is told to the user.
//!
//! A failure is one line on standard error. The two a new user meets first, a server that
//! cannot be reached and a token it refuses, are told as one sentence naming the URL and
//! what to check, instead of the chain of transport errors beneath them.

use std::process::ExitCode;

use anyhow::Context;
use hutch_client::{ClientError, HutchClient};

/// Where the server is and who is asking.
#[derive(clap::Args, Debug)]
pub(crate) struct Connection {
    /// The server's URL, with or without the API's `/v1`.
    #[arg(
        long,
        global = true,
        env = "HUTCH_URL",
        default_value = "http://127.0.0.1:7420"
    )]
    pub(crate) url: String,
    /// A bearer token (see `hutch token`).
    #[arg(long, global = true, env = "HUTCH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl Connection {
    /// A client of the server.
    pub(crate) fn client(&self) -> anyhow::Result<HutchClient> {
        let token = self.token.as_deref().context(
            "no token: set HUTCH_TOKEN or pass --token (`hutch token --sub TENANT` on the server \
             mints one)",
        )?;
        HutchClient::new(&self.url, token).context("creating the client")
    }
}

/// Runs a client subcommand of the server at `server` to its exit code; a failure prints
/// its cause (see [`explain`]) and exits with `failure`.
pub(crate) fn block_on(
    server: &str,
    work: impl std::future::Future<Output = anyhow::Result<u8>>,
    failure: u8,
) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("hutch: {}", explain(server, &error));
            ExitCode::from(failure)
        }
    }
}

/// The message for a failed subcommand of the server at `server`: for an unreachable server
/// or a refused token, what to check; otherwise the error with its causes.
pub(crate) fn explain(server: &str, error: &anyhow::Error) -> String {
    let client_error = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>());
    match client_error {
        Some(ClientError::Connect { url, reason }) => format!(
            "cannot reach the hutch server at {url} ({reason}): is `hutch serve` running \
             there, and is HUTCH_URL (or --url) right?"
        ),
        Some(ClientError::Api { status, body }) if status.as_u16() == 401 => format!(
            "the hutch server at {server} refused the token ({}): is HUTCH_TOKEN (or --token) \
             a current token of this server? `hutch token --sub TENANT` on the server mints \
             one",
            body.error.message
        ),
        _ => format!("{error:#}"),
    }
}
