//! `hutch`: one binary, three roles.
//!
//! - `hutch serve` runs the control plane (the API, the store, the reaper) and the linux
//!   runtime;
//! - `hutch agent` is PID 1 inside every sandbox, started by the runtime, never by users;
//! - client subcommands (`hutch token`, `hutch bench`) prepare for or measure a server;
//!   `hutch sessions` creates, lists and deletes sessions, `hutch exec` and `hutch shell` run
//!   commands and terminals in one, `hutch image` pulls, imports, lists and deletes images.
//!
//! This crate only wires the libraries together and maps errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod bench_images;
mod bench_interpreter;
mod connection;
mod duration;
mod exec;
mod images;
mod mcp;
mod serve;
mod serve_network;
mod sessions;
mod shell;
mod token;

/// A self-hosted sandbox server for running untrusted code.
#[derive(Parser, Debug)]
#[command(name = "hutch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (control plane and linux runtime); needs root.
    Serve(Box<serve::ServeArgs>),
    /// Mint a bearer token with the server's secret.
    Token(token::TokenArgs),
    /// Measure hutch beside a peer in the same run.
    Bench(bench::BenchArgs),
    /// Create, list, show and delete sessions.
    Sessions(sessions::SessionsArgs),
    /// Run a command in a session, streaming its output; exits with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive terminal in a session.
    Shell(shell::ShellArgs),
    /// Pull, import, list and delete the server's images.
    Image(images::ImageArgs),
    /// Serve MCP (Model Context Protocol) on stdin/stdout, calling the server at HUTCH_URL.
    Mcp(mcp::McpArgs),
    /// Run inside a sandbox as its PID 1 (started by `hutch serve`, not by hand).
    #[command(hide = true)]
    Agent,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent => return agent::main(),
        Command::Sessions(args) => return sessions::main(args),
        Command::Exec(args) => return exec::main(args),
        Command::Shell(args) => return shell::main(args),
        Command::Image(args) => return images::main(args),
        Command::Mcp(args) => return mcp::main(args),
        Command::Serve(args) => serve::main(*args),
        Command::Token(args) => token::main(args),
        Command::Bench(args) => bench::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hutch: {error:#}");
            ExitCode::FAILURE
        }
    }
}
