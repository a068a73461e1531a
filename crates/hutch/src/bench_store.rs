//! `hutch bench sessions --store postgres`: create → run `true` → delete on a server whose
//! store is SQLite beside one whose store is PostgreSQL, and beside two replicas on that
//! PostgreSQL sharing one data directory, in one run.
//!
//! Every server runs at once, and the cycles alternate between them (one on SQLite, one on
//! PostgreSQL, one on the replicas, and so on), so that the load of this busy machine weighs
//! on all alike. The replicas are reached round-robin: a cycle's create and delete go to one,
//! its command to the other, and the next cycle starts on the other. The
//! PostgreSQL is a scratch cluster the benchmark starts (as the tests do: `initdb` in a
//! temporary directory, a Unix socket, durability off since nothing outlives the run), or the
//! one at the URL given.

use anyhow::Context;
use hutch_api::CreateSessionRequest;
use hutch_bench::server::ServerProcess;
use hutch_bench::sessions::{SessionsReport, cycle, cycle_across};
use hutch_bench::stats::ms;
use hutch_client::HutchClient;
use hutch_server::ScratchPostgres;

use crate::bench::{BenchArgs, load, row};

/// How far PostgreSQL's p50 may be above SQLite's.
const TARGET: std::time::Duration = std::time::Duration::from_millis(2);

/// Starts a server with `extra` arguments; its client.
fn server(args: &BenchArgs, extra: &[&str]) -> anyhow::Result<(ServerProcess, HutchClient)> {
    let binary = std::env::current_exe().context("finding the hutch binary")?;
    let server = ServerProcess::start_with(&binary, args.warm_pool, extra)?;
    let client = HutchClient::new(&server.url, &server.token).context("creating the client")?;
    Ok((server, client))
}

/// Runs the scenario; `store` is `postgres` (a scratch cluster) or a `postgres://` URL.
pub(crate) async fn run(args: &BenchArgs, store: &str) -> anyhow::Result<()> {
    let scratch = if store == "postgres" {
        let cluster = tokio::task::spawn_blocking(ScratchPostgres::start)
            .await
            .context("starting PostgreSQL")?
            .map_err(|e| anyhow::anyhow!("starting a scratch PostgreSQL: {e}"))?;
        Some(cluster)
    } else {
        None
    };
    let url = match &scratch {
        Some(cluster) => cluster.url("postgres"),
        None => store.to_owned(),
    };
    let shown = hutch_server::StoreLocation::postgres(&url)?.display();
    let (_sqlite_server, sqlite) = server(args, &[])?;
    let (_postgres_server, postgres) = server(args, &["--store", &url])?;
    // Two replicas on one data directory, on the same database (each replica acts only on
    // its own rows and those of dead replicas: the single server's are left alone).
    let (first_server, first) = server(args, &["--store", &url, "--replica", "r1"])?;
    let binary = std::env::current_exe().context("finding the hutch binary")?;
    let second_server = ServerProcess::start_in(
        &binary,
        args.warm_pool,
        first_server.data_dir().to_owned(),
        &["--store", &url, "--replica", "r2"],
    )?;
    let second =
        HutchClient::new(&second_server.url, &first_server.token).context("creating the client")?;
    sqlite
        .health()
        .await
        .context("reaching the SQLite server")?;
    postgres
        .health()
        .await
        .context("reaching the PostgreSQL server")?;
    for replica in [&first, &second] {
        replica
            .health()
            .await
            .context("reaching a PostgreSQL replica")?;
    }

    println!(
        "scenario: create session → run `true` → delete session, SQLite beside PostgreSQL, and 2 PostgreSQL replicas on one data directory (round-robin)"
    );
    println!(
        "iterations: {} per store, alternating (after {} warm-up), warm pool: {}",
        args.iterations, args.warmup, args.warm_pool
    );
    println!(
        "PostgreSQL: {shown}{}",
        if scratch.is_some() {
            " (a scratch cluster: fsync=off, synchronous_commit=off)"
        } else {
            ""
        }
    );
    let load_before = load();
    let create = CreateSessionRequest::default();
    let (mut on_sqlite, mut on_postgres, mut on_replicas) = (
        SessionsReport::default(),
        SessionsReport::default(),
        SessionsReport::default(),
    );
    for i in 0..args.warmup + args.iterations {
        let a = cycle(&sqlite, &create).await?;
        let b = cycle(&postgres, &create).await?;
        let (one, other) = if i % 2 == 0 {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let c = cycle_across([one, other, one], &create).await?;
        if i >= args.warmup {
            on_sqlite.push(a);
            on_postgres.push(b);
            on_replicas.push(c);
        }
    }
    println!("load average: {load_before} before, {} after", load());
    println!();
    println!("{:<40} {:>12} {:>12}", "", "p50", "p99");
    for (name, report) in [
        ("SQLite", &on_sqlite),
        ("PostgreSQL", &on_postgres),
        ("2 replicas", &on_replicas),
    ] {
        row(&format!("{name}: create → run → delete"), &report.cycle);
        row("  create", &report.create);
        row("  run `true`", &report.run);
        row("  delete", &report.delete);
    }
    let (a, b) = (on_sqlite.cycle.p50(), on_postgres.cycle.p50());
    let slower = b.saturating_sub(a);
    println!(
        "\nPostgreSQL - SQLite at p50: {}{}",
        if b < a { "-" } else { "" },
        ms(if b < a { a - b } else { slower })
    );
    let c = on_replicas.cycle.p50();
    println!(
        "PostgreSQL with 2 replicas - SQLite at p50: {}{}",
        if c < a { "-" } else { "" },
        ms(a.abs_diff(c))
    );
    if args.quick {
        println!("quick mode: too few iterations to compare with the target (≤ 2 ms)");
        return Ok(());
    }
    let verdict = if slower <= TARGET { "met" } else { "missed" };
    println!("target: PostgreSQL p50 within 2 ms of SQLite: {verdict}");
    Ok(())
}
