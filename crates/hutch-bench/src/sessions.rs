//! The sessions scenario: create → run `true` → delete, one after another.

use std::time::{Duration, Instant};

use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_client::HutchClient;

use crate::{BenchError, Samples};

/// Latencies of the whole cycle and of each step.
#[derive(Debug, Default)]
pub struct SessionsReport {
    /// create → run → delete.
    pub cycle: Samples,
    /// `POST /v1/sessions`.
    pub create: Samples,
    /// `POST /v1/sessions/{id}/commands` running `true`.
    pub run: Samples,
    /// `DELETE /v1/sessions/{id}`.
    pub delete: Samples,
}

/// Runs `warmup` unmeasured cycles, then `iterations` measured ones, on the `default` image.
pub async fn run(
    client: &HutchClient,
    warmup: usize,
    iterations: usize,
) -> Result<SessionsReport, BenchError> {
    run_on(client, None, warmup, iterations).await
}

/// As [`run`], with sessions on `image` (`None`: the server's default).
pub async fn run_on(
    client: &HutchClient,
    image: Option<&str>,
    warmup: usize,
    iterations: usize,
) -> Result<SessionsReport, BenchError> {
    let create = CreateSessionRequest {
        image: image.map(str::to_owned),
        ..CreateSessionRequest::default()
    };
    let mut report = SessionsReport::default();
    for i in 0..warmup + iterations {
        let step = cycle(client, &create).await?;
        if i >= warmup {
            report.push(step);
        }
    }
    Ok(report)
}

/// The latencies of one cycle: create, run, delete.
#[derive(Debug, Clone, Copy)]
pub struct Cycle {
    /// `POST /v1/sessions`.
    pub create: Duration,
    /// `POST /v1/sessions/{id}/commands` running `true`.
    pub run: Duration,
    /// `DELETE /v1/sessions/{id}`.
    pub delete: Duration,
}

impl SessionsReport {
    /// Adds one cycle's latencies.
    pub fn push(&mut self, cycle: Cycle) {
        self.cycle.push(cycle.create + cycle.run + cycle.delete);
        self.create.push(cycle.create);
        self.run.push(cycle.run);
        self.delete.push(cycle.delete);
    }
}

/// One cycle: creates a session with `create`, runs `true` in it, deletes it.
pub async fn cycle(
    client: &HutchClient,
    create: &CreateSessionRequest,
) -> Result<Cycle, BenchError> {
    cycle_across([client, client, client], create).await
}

/// [`cycle`] with each request sent through its own client (replicas of one service): the
/// create through the first, the command through the second, the delete through the third.
pub async fn cycle_across(
    [client, runner, deleter]: [&HutchClient; 3],
    create: &CreateSessionRequest,
) -> Result<Cycle, BenchError> {
    let command = CommandRequest {
        argv: Some(vec!["true".into()]),
        ..CommandRequest::default()
    };
    let start = Instant::now();
    let session = client
        .create_session(create)
        .await
        .map_err(|source| BenchError::Api {
            step: "create",
            source,
        })?;
    let created = Instant::now();
    let result = runner
        .run_command(session.session_id, &command)
        .await
        .map_err(|source| BenchError::Api {
            step: "run",
            source,
        })?;
    let ran = Instant::now();
    deleter
        .delete_session(session.session_id)
        .await
        .map_err(|source| BenchError::Api {
            step: "delete",
            source,
        })?;
    let done = Instant::now();
    if result.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "`true` exited with {}",
            result.exit_code
        )));
    }
    Ok(Cycle {
        create: created - start,
        run: ran - created,
        delete: done - ran,
    })
}
