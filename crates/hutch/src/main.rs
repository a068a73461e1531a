//! `hutch`: one binary, three roles.
//!
//! - `hutch serve` runs the control plane (the API, the store, the reaper) and the linux
//!   runtime;
//! - `hutch agent` is PID 1 inside every sandbox, started by the runtime, never by users;
//! - client subcommands (`hutch token`, `hutch bench`) talk to or prepare for a server.
//!
//! This crate only wires the libraries together and maps errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;

/// A self-hosted sandbox server for running untrusted code.
#[derive(Parser, Debug)]
#[command(name = "hutch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run inside a sandbox as its PID 1 (started by `hutch serve`, not by hand).
    #[command(hide = true)]
    Agent,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent => agent::main(),
    }
}
