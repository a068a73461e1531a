//! `hutch`: one binary, three roles.
//!
//! - `hutch serve` runs the control plane (the API, the store, the reaper) and the linux
//!   runtime;
//! - `hutch agent` is PID 1 inside every sandbox, started by the runtime, never by users
//!   (unless the lean `hutch-agent` built beside it, `agent_main.rs`, does that job);
//! - client subcommands (`hutch token`, `hutch console-link`, `hutch bench`) prepare for or
//!   measure a server;
//!   `hutch sessions` creates, lists, pauses, resumes and deletes sessions, `hutch run` runs a
//!   command in a session of its own, `hutch exec` and `hutch shell` run commands and
//!   terminals in one, `hutch cp` copies files in and out, `hutch ps` and `hutch logs` show
//!   its processes, `hutch contexts` manages storage contexts, `hutch image` pulls, imports,
//!   lists and deletes images; `hutch completions` prints shell completions.
//!
//! This crate only wires the libraries together and maps errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod agent;
mod agent_program;
mod bench;
mod bench_agent;
mod bench_clients;
mod bench_idle;
mod bench_images;
mod bench_interpreter;
mod bench_kube;
mod bench_network;
mod bench_soak;
mod bench_store;
mod connection;
mod console_link;
mod contexts;
mod cp;
mod duration;
mod exec;
mod images;
mod mcp;
mod processes;
mod progress;
mod run;
mod serve;
mod serve_kube;
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
    /// Apply the sessions store's pending migrations (SQLite or `--store postgres://…`), and
    /// exit.
    Migrate(serve::MigrateArgs),
    /// Mint a bearer token with the server's secret.
    Token(token::TokenArgs),
    /// Print a one-time login link of the web console (`/console/`), signed with the
    /// server's secret.
    ConsoleLink(console_link::ConsoleLinkArgs),
    /// Measure hutch beside a peer in the same run.
    Bench(bench::BenchArgs),
    /// Create, list, show, pause, resume and delete sessions.
    Sessions(sessions::SessionsArgs),
    /// Run a command in a new session, streaming its output, then delete the session; exits
    /// with the command's exit code.
    Run(Box<run::RunArgs>),
    /// Run a command in a session, streaming its output; exits with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive terminal in a session.
    Shell(shell::ShellArgs),
    /// Copy a file or directory into or out of a session (`SESSION:PATH`).
    Cp(cp::CpArgs),
    /// List a session's processes.
    Ps(processes::PsArgs),
    /// Print a process's output (`--follow`: until it exits).
    Logs(processes::LogsArgs),
    /// Create, list, delete and sync storage contexts.
    Contexts(contexts::ContextsArgs),
    /// Pull, import, list and delete the server's images.
    Image(images::ImageArgs),
    /// Print shell completions: `hutch completions bash > /etc/bash_completion.d/hutch`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Serve MCP (Model Context Protocol) on stdin/stdout, calling the server at HUTCH_URL.
    Mcp(mcp::McpArgs),
    /// Run inside a sandbox as its PID 1 (started by `hutch serve`, not by hand); with
    /// `--container`, as a pod's main process serving on TCP.
    #[command(hide = true)]
    Agent(AgentArgs),
}

/// `hutch agent`'s options.
#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// Run as a container's main process: configuration from `HUTCH_SESSION_*`, the
    /// credential from `HUTCH_AGENT_TOKEN_FILE` or `HUTCH_AGENT_TOKEN`, serving on TCP.
    #[arg(long)]
    container: bool,
    /// The address to listen on in container mode (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", requires = "container", default_value = hutch_sandbox::container::LISTEN_DEFAULT)]
    listen: String,
}

fn main() -> ExitCode {
    // A process's shepherd in container mode (see hutch_sandbox::shepherd).
    if let Some(pid) = hutch_sandbox::shepherd::requested() {
        hutch_sandbox::shepherd::run(pid);
    }
    // The agent (one per session, exactly `hutch agent`) skips clap: building the whole
    // command tree to parse one word leaves freed memory behind in every session.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "agent") && args.next().is_none() {
        return agent::main();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) if args.container => return agent::container_main(&args.listen),
        Command::Agent(_) => return agent::main(),
        Command::Sessions(args) => return sessions::main(args),
        Command::Exec(args) => return exec::main(args),
        Command::Shell(args) => return shell::main(args),
        Command::Run(args) => return run::main(*args),
        Command::Cp(args) => return cp::main(args),
        Command::Ps(args) => return processes::ps_main(args),
        Command::Logs(args) => return processes::logs_main(args),
        Command::Contexts(args) => return contexts::main(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hutch", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Image(args) => return images::main(args),
        Command::Mcp(args) => return mcp::main(args),
        Command::Serve(args) => serve::main(*args),
        Command::Token(args) => token::main(args),
        Command::Migrate(args) => serve::migrate_main(args),
        Command::ConsoleLink(args) => console_link::main(args),
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
