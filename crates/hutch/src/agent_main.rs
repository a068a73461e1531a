//! `hutch-agent`: the agent alone, PID 1 of every sandbox, built beside `hutch` by the same
//! `cargo build -p hutch`.
//!
//! `hutch agent` does the same job, but its executable holds the whole server (HTTP server,
//! stores, object storage, MCP, the console's assets), and the loader fixes up the pointers of
//! a position-independent executable at its random address in every process that runs it: a
//! few MiB of private memory in every idle session. This executable holds only the agent, so
//! it has a fraction of those pages. `hutch serve` runs it when it lies beside the server's own
//! executable and reports the server's agent build id; otherwise sandboxes run `hutch agent`.
//!
//! Arguments: none (run by the runtime as PID 1 of a new sandbox; by hand it refuses to start,
//! as `hutch agent` does), `--container [--listen ADDR:PORT]` (a container's main process, as
//! `hutch agent --container`), `--build-id` (print the id of the sources it was built from and
//! exit), or `--version`.

use std::process::ExitCode;

mod agent;

fn main() -> ExitCode {
    // A process's shepherd in container mode (see hutch_sandbox::shepherd).
    if let Some(pid) = hutch_sandbox::shepherd::requested() {
        hutch_sandbox::shepherd::run(pid);
    }
    let mut args = std::env::args_os().skip(1);
    let (first, second, third, fourth) = (args.next(), args.next(), args.next(), args.next());
    let Some(first) = first else {
        return agent::main();
    };
    if first == "--container" && fourth.is_none() {
        match (
            second.as_ref().and_then(|a| a.to_str()),
            third.as_ref().and_then(|a| a.to_str()),
        ) {
            (None, None) => {
                return agent::container_main(hutch_sandbox::container::LISTEN_DEFAULT);
            }
            (Some("--listen"), Some(listen)) => return agent::container_main(listen),
            _ => {}
        }
    }
    match (first.to_str(), second) {
        (Some("--build-id"), None) => {
            println!("{}", agent::BUILD_ID);
            ExitCode::SUCCESS
        }
        (Some("--version" | "-V"), None) => {
            println!("hutch-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: hutch-agent [--container [--listen ADDR:PORT] | --build-id | --version]\n\
                 (hutch serve runs it as PID 1 of each sandbox; it is not meant to be run by hand)"
            );
            ExitCode::from(2)
        }
    }
}
