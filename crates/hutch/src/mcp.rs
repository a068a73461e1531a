//! `hutch mcp`: the MCP server on standard input and output, for desktop agents that start
//! their MCP servers as programs. Its tools call the server at `HUTCH_URL` with `HUTCH_TOKEN`
//! through the Rust client; `hutch serve` itself answers the same tools at `POST /v1/mcp`.

use std::process::ExitCode;
use std::sync::Arc;

use hutch_mcp::ClientBackend;

use crate::connection::{Connection, block_on};

/// `hutch mcp`.
#[derive(clap::Args, Debug)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    connection: Connection,
}

/// Serves MCP on stdio until the client closes it. Standard output carries only the
/// protocol; anything said to the user goes to standard error.
pub(crate) fn main(args: McpArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), 1)
}

async fn run(args: McpArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    // A server not up yet is no reason to stop: each tool call says it, and works once the
    // server is there.
    if let Err(error) = client.health().await {
        eprintln!(
            "hutch mcp: the server at {} does not answer yet ({error}); serving anyway",
            client.base_url()
        );
    }
    hutch_mcp::serve_stdio(Arc::new(ClientBackend::new(client))).await?;
    Ok(0)
}
