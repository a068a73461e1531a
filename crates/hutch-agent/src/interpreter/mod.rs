//! Interpreter contexts: long-lived python, javascript or bash workers with their own state,
//! cwd and environment.
//!
//! A context owns at most one [`worker::Worker`] at a time. Executions of one context run one
//! after another in arrival order (a fair lock is the queue, at most
//! [`INTERPRETER_QUEUE_MAX`] waiting); different contexts run in parallel. An execution runs
//! in a task of its own, so a client that goes away does not stop it: its output is dropped,
//! its history entry kept. A worker that exits, crashes or has to be killed leaves the context
//! inactive, and the next execution starts a fresh one. The `default` context is started when
//! the agent starts, used when an execution names none, and cannot be deleted.
//!
//! While the session is paused, the `default` context's worker is stopped if no code ever ran
//! in it ([`park_unused_default`]): it holds no state, and a paused session then costs only
//! its agent. The resume starts it again ([`unpark_default`]), as the agent's start does; the
//! context keeps its id, settings and (empty) history. A context that ran code keeps its
//! worker, frozen with the rest of the session.

mod compiled;
mod execute;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod history;
mod libraries;
pub(crate) mod routes;
mod source;
mod worker;

pub(crate) use compiled::CompiledPython;
pub use compiled::{PYTHON_COMPILED_MAX_BYTES, compile_python_worker};
pub(crate) use libraries::with_libraries_on_python_path;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hutch_api::interpreter::DEFAULT_CONTEXT_ID;
use hutch_api::limits::{
    CONTEXTS_MAX, INTERPRETER_HISTORY_DEFAULT, INTERPRETER_HISTORY_MAX,
    INTERPRETER_MEMORY_MB_RANGE, INTERPRETER_TIMEOUT_DEFAULT_SECS, INTERPRETER_TIMEOUT_MAX_SECS,
    PATH_MAX_BYTES,
};
use hutch_api::{Context as ContextInfo, CreateContextRequest, HistoryEntry};

use crate::Agent;
use crate::error::AgentError;

/// All contexts of the session.
pub(crate) struct Interpreters {
    contexts: Mutex<BTreeMap<String, Arc<Context>>>,
    next_cgroup: AtomicU64,
    /// What all the contexts' histories weigh (see [`history`]).
    history_bytes: Arc<AtomicUsize>,
}

/// The settings a context was created with.
#[derive(Debug, Clone)]
struct Config {
    cwd: String,
    language: String,
    kernel: String,
    env: BTreeMap<String, String>,
    timeout: f64,
    memory_mb: Option<u64>,
    history_size: usize,
}

/// One context.
pub(crate) struct Context {
    id: String,
    config: Config,
    created_at: time::OffsetDateTime,
    /// The worker; holding the lock is holding the context's turn to run.
    slot: tokio::sync::Mutex<Option<worker::Worker>>,
    /// The current worker's handle, reachable while an execution holds `slot`.
    handle: Mutex<Option<Arc<worker::WorkerHandle>>>,
    /// The kernel the current worker reported.
    kernel: Mutex<String>,
    active: AtomicBool,
    /// An execution is running.
    running: AtomicBool,
    /// The interrupt verb was used during the running execution.
    interrupted: AtomicBool,
    /// The context was deleted or restarted while an execution ran.
    killed: AtomicBool,
    /// Executions waiting for their turn.
    waiting: AtomicUsize,
    /// An execution has run (or is about to run) code in it: its worker holds state.
    used: AtomicBool,
    /// Its unused worker was stopped for a pause, to be started again at the resume.
    parked: AtomicBool,
    history: history::History,
}

impl Interpreters {
    /// The registry with the `default` context (not started yet, see [`prewarm`]), working
    /// in `cwd`.
    pub(crate) fn new(cwd: &str) -> Interpreters {
        let history_bytes = Arc::new(AtomicUsize::new(0));
        let default = Context::new(
            DEFAULT_CONTEXT_ID.to_owned(),
            Config {
                cwd: cwd.to_owned(),
                language: "python".to_owned(),
                kernel: "auto".to_owned(),
                env: BTreeMap::new(),
                timeout: INTERPRETER_TIMEOUT_DEFAULT_SECS,
                memory_mb: None,
                history_size: INTERPRETER_HISTORY_DEFAULT,
            },
            Arc::clone(&history_bytes),
        );
        Interpreters {
            contexts: Mutex::new(BTreeMap::from([(
                DEFAULT_CONTEXT_ID.to_owned(),
                Arc::new(default),
            )])),
            next_cgroup: AtomicU64::new(1),
            history_bytes,
        }
    }

    /// Keeps `entry` in `ctx`'s history; when the session's histories weigh too much even
    /// with `ctx` down to it, the other contexts' oldest entries go, one context at a time.
    fn record(&self, ctx: &Context, entry: HistoryEntry) {
        if ctx.config.history_size == 0 || !ctx.history.push(entry, ctx.config.history_size) {
            return;
        }
        let others: Vec<Arc<Context>> = self
            .lock()
            .values()
            .filter(|other| other.id != ctx.id)
            .cloned()
            .collect();
        for other in others {
            while other.history.trim_one() {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Context>>> {
        self.contexts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A context by id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Context>> {
        self.lock().get(id).cloned()
    }

    fn get_or_404(&self, id: &str) -> Result<Arc<Context>, AgentError> {
        self.get(id)
            .ok_or_else(|| AgentError::ContextNotFound(id.to_owned()))
    }
}

/// How long after the agent starts the `default` context's worker is started, so that it
/// does not compete with the session's first requests for CPU, and a session that lives only
/// for one quick command never starts it.
const PREWARM_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Starts the `default` context's worker in the background (unless an execution started it
/// first).
pub(crate) fn prewarm(agent: &Arc<Agent>) {
    let agent = Arc::clone(agent);
    tokio::spawn(async move {
        tokio::time::sleep(PREWARM_DELAY).await;
        start_default(&agent).await;
    });
}

/// Starts the `default` context's worker unless a live one is there, then gives back what the
/// allocator freed on the way: the agent's start is over (its root file system built, the
/// worker started), or a resume restarted the worker, and an idle session should not keep it.
async fn start_default(agent: &Arc<Agent>) {
    if let Some(ctx) = agent.interpreters.get(DEFAULT_CONTEXT_ID) {
        let mut slot = ctx.slot.lock().await;
        if let Err(e) = ctx.ensure_worker(agent, &mut slot).await {
            tracing::warn!(error = %e, "the default interpreter context did not start");
        }
    }
    give_back_memory();
}

/// Gives back what the agent holds but no longer uses: the allocator's free pages, and the
/// stack pages below this call (the start goes deeper than serving ever does again).
fn give_back_memory() {
    hutch_sys::heap::give_back_stack();
    hutch_sys::heap::give_back_free();
}

/// How long a pause waits for the stopped worker of the `default` context to exit.
const PARK_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A pause begins: stops the `default` context's worker if no code ever ran in it and nothing
/// is starting or using it now, and waits (at most [`PARK_EXIT_WAIT`]) until it has exited,
/// so that its memory is free before the session is frozen. A context that ran code, or one
/// whose worker is busy, is left as it is.
pub(crate) async fn park_unused_default(agent: &Agent) {
    let Some(ctx) = agent.interpreters.get(DEFAULT_CONTEXT_ID) else {
        return;
    };
    // Holding the slot keeps executions out; one that holds it, or waits for it, uses the
    // context.
    let Ok(mut slot) = ctx.slot.try_lock() else {
        return;
    };
    if ctx.used.load(Ordering::SeqCst) || ctx.waiting.load(Ordering::SeqCst) > 0 {
        return;
    }
    let Some(mut worker) = slot.take() else {
        return;
    };
    ctx.worker_gone(&mut slot);
    ctx.parked.store(true, Ordering::SeqCst);
    if !worker.exited {
        worker.handle.kill();
        let exited = tokio::time::timeout(PARK_EXIT_WAIT, async {
            while let Some(event) = worker.events.recv().await {
                if let worker::Event::Exited(_) = event {
                    return true;
                }
            }
            false
        })
        .await;
        worker.exited = exited.unwrap_or(false);
        if !worker.exited {
            tracing::warn!("the stopped default interpreter worker did not exit in time");
        }
    }
    // Its cgroup goes with it; the agent's buffers for it too.
    drop(worker);
    drop(slot);
    give_back_memory();
}

/// The pause ended: starts the `default` context's worker again in the background if
/// [`park_unused_default`] stopped it. An execution that comes first starts it itself.
pub(crate) fn unpark_default(agent: &Arc<Agent>) {
    let Some(ctx) = agent.interpreters.get(DEFAULT_CONTEXT_ID) else {
        return;
    };
    if ctx.parked.swap(false, Ordering::SeqCst) {
        let agent = Arc::clone(agent);
        tokio::spawn(async move { start_default(&agent).await });
    }
}

impl Context {
    fn new(id: String, config: Config, history_bytes: Arc<AtomicUsize>) -> Context {
        Context {
            id,
            // `auto` runs plain Python until a cell needs IPython.
            kernel: Mutex::new(match config.kernel.as_str() {
                "auto" => "python".to_owned(),
                k => k.to_owned(),
            }),
            config,
            created_at: {
                // Millisecond precision, like the rest of the API.
                let now = time::OffsetDateTime::now_utc();
                now.replace_millisecond(now.millisecond()).unwrap_or(now)
            },
            slot: tokio::sync::Mutex::new(None),
            handle: Mutex::new(None),
            active: AtomicBool::new(false),
            running: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            history: history::History::new(history_bytes),
        }
    }

    /// Its public description.
    pub(crate) fn info(&self) -> ContextInfo {
        // An idle worker that died shows as inactive at once.
        if let Ok(mut slot) = self.slot.try_lock()
            && let Some(worker) = slot.as_mut()
        {
            while let Ok(event) = worker.events.try_recv() {
                if let worker::Event::Exited(_) = event {
                    worker.exited = true;
                }
            }
            if worker.exited {
                self.worker_gone(&mut slot);
            }
        }
        ContextInfo {
            id: self.id.clone(),
            cwd: self.config.cwd.clone(),
            language: self.config.language.clone(),
            kernel: self
                .kernel
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            created_at: self.created_at,
            active: self.active.load(Ordering::SeqCst),
            timeout: self.config.timeout,
            memory_mb: self.config.memory_mb,
            history_size: self.config.history_size,
        }
    }

    fn current_handle(&self) -> Option<Arc<worker::WorkerHandle>> {
        self.handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a worker into `slot` unless a live one is there.
    async fn ensure_worker(
        &self,
        agent: &Agent,
        slot: &mut Option<worker::Worker>,
    ) -> Result<(), String> {
        if let Some(worker) = slot.as_mut() {
            // A worker that died while idle left its exit in the channel (and whatever it
            // printed between executions, which belongs to no execution).
            while let Ok(event) = worker.events.try_recv() {
                if let worker::Event::Exited(_) = event {
                    worker.exited = true;
                }
            }
            if !worker.exited {
                return Ok(());
            }
        }
        *slot = None;
        let n = agent
            .interpreters
            .next_cgroup
            .fetch_add(1, Ordering::Relaxed);
        let mut env: BTreeMap<String, String> = agent.base_env.clone();
        env.extend(self.config.env.clone());
        let spec = worker::WorkerSpec {
            cgroup_name: format!("ctx-{n}"),
            language: &self.config.language,
            kernel: &self.config.kernel,
            cwd: &self.config.cwd,
            env: env.into_iter().collect(),
            memory_mb: self.config.memory_mb,
        };
        let worker = worker::Worker::start(agent, spec).await?;
        self.set_kernel(&worker.kernel);
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&worker.handle));
        self.active.store(true, Ordering::SeqCst);
        *slot = Some(worker);
        Ok(())
    }

    /// Records the kernel the worker reported (at `ready`, or when a cell switched it).
    fn set_kernel(&self, kernel: &str) {
        kernel.clone_into(&mut self.kernel.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Forgets a worker that ended or was killed.
    fn worker_gone(&self, slot: &mut Option<worker::Worker>) {
        *slot = None;
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.active.store(false, Ordering::SeqCst);
    }
}

fn validate_timeout(field: &'static str, timeout: f64) -> Result<(), AgentError> {
    if timeout > 0.0 && timeout <= INTERPRETER_TIMEOUT_MAX_SECS {
        Ok(())
    } else {
        Err(AgentError::invalid(
            field,
            format!("{field} must be in (0, {INTERPRETER_TIMEOUT_MAX_SECS}] seconds"),
        ))
    }
}

/// The smallest `memoryMb` a javascript context takes.
const JAVASCRIPT_MEMORY_MB_MIN: u64 = 64;

fn validate_create(req: CreateContextRequest, default_cwd: &str) -> Result<Config, AgentError> {
    let language = req.language.unwrap_or_else(|| "python".to_owned());
    let kernel = match (language.as_str(), req.kernel.as_deref()) {
        ("python", None | Some("auto")) => "auto",
        ("python", Some("ipython")) => "ipython",
        ("python", Some("python")) => "python",
        ("javascript", None | Some("node")) => "node",
        ("bash", None | Some("bash")) => "bash",
        ("python" | "javascript" | "bash", Some(k)) => {
            let choices = match language.as_str() {
                "python" => "\"auto\", \"ipython\" or \"python\"",
                "javascript" => "\"node\"",
                _ => "\"bash\"",
            };
            return Err(AgentError::invalid(
                "kernel",
                format!("Unsupported kernel {k:?} for {language}: use {choices}"),
            ));
        }
        (other, _) => {
            return Err(AgentError::invalid(
                "language",
                format!(
                    "Unsupported language {other:?}: use \"python\", \"javascript\" or \"bash\""
                ),
            ));
        }
    };
    let cwd = req.cwd.unwrap_or_else(|| default_cwd.to_owned());
    if !cwd.starts_with('/') || cwd.len() > PATH_MAX_BYTES || cwd.contains('\0') {
        return Err(AgentError::invalid("cwd", "cwd must be an absolute path"));
    }
    let env = req.env.unwrap_or_default();
    hutch_api::env::check("env", &env)?;
    let timeout = req.timeout.unwrap_or(INTERPRETER_TIMEOUT_DEFAULT_SECS);
    validate_timeout("timeout", timeout)?;
    let (lo, hi) = INTERPRETER_MEMORY_MB_RANGE;
    if let Some(mb) = req.memory_mb
        && !(lo..=hi).contains(&mb)
    {
        return Err(AgentError::invalid(
            "memoryMb",
            format!("memoryMb must be in [{lo}, {hi}]"),
        ));
    }
    if let Some(mb) = req.memory_mb
        && language == "javascript"
        && mb < JAVASCRIPT_MEMORY_MB_MIN
    {
        // Node does not start in less: under a data limit it hangs instead of failing.
        return Err(AgentError::invalid(
            "memoryMb",
            format!(
                "a javascript context needs memoryMb of at least {JAVASCRIPT_MEMORY_MB_MIN} (node does not start in less)"
            ),
        ));
    }
    let history_size = req.history_size.unwrap_or(INTERPRETER_HISTORY_DEFAULT);
    if history_size > INTERPRETER_HISTORY_MAX {
        return Err(AgentError::invalid(
            "historySize",
            format!("historySize must be at most {INTERPRETER_HISTORY_MAX}"),
        ));
    }
    Ok(Config {
        cwd,
        language,
        kernel: kernel.to_owned(),
        env,
        timeout,
        memory_mb: req.memory_mb,
        history_size,
    })
}

/// Fails with `language_unavailable` when the image has no program for `language` on the
/// `PATH` its worker would get (the session's, or `env`'s own).
fn require_language(
    agent: &Agent,
    language: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), AgentError> {
    let path = env
        .get("PATH")
        .or_else(|| agent.base_env.get("PATH"))
        .map_or("", String::as_str);
    agent
        .image
        .require(crate::image::program_of(language), path)
}

/// Fails with `language_unavailable` when the image lacks the program of context `id`'s
/// language (an unknown context passes: the execution reports it). A context whose worker
/// runs passes without a look: the execution needs no program started, and the look (a
/// search of `PATH`, five system calls) would be paid by every execution.
pub(crate) fn require_context_language(agent: &Agent, id: &str) -> Result<(), AgentError> {
    match agent.interpreters.get(id) {
        Some(ctx) if ctx.active.load(Ordering::SeqCst) => Ok(()),
        Some(ctx) => require_language(agent, &ctx.config.language, &ctx.config.env),
        None => Ok(()),
    }
}

/// Creates a context and starts its worker.
pub(crate) async fn create(
    agent: &Arc<Agent>,
    req: CreateContextRequest,
) -> Result<ContextInfo, AgentError> {
    let config = validate_create(req, &agent.image.cwd)?;
    require_language(agent, &config.language, &config.env)?;
    std::fs::create_dir_all(&config.cwd).map_err(|e| {
        AgentError::invalid("cwd", format!("cannot create cwd {}: {e}", config.cwd))
    })?;
    let id = uuid::Uuid::now_v7().to_string();
    let ctx = Arc::new(Context::new(
        id.clone(),
        config,
        Arc::clone(&agent.interpreters.history_bytes),
    ));
    {
        let mut contexts = agent.interpreters.lock();
        if contexts.len() > CONTEXTS_MAX {
            return Err(AgentError::Conflict(format!(
                "this session already has {CONTEXTS_MAX} contexts, its maximum; delete one first"
            )));
        }
        contexts.insert(id.clone(), Arc::clone(&ctx));
    }
    let mut slot = ctx.slot.lock().await;
    if let Err(e) = ctx.ensure_worker(agent, &mut slot).await {
        drop(slot);
        agent.interpreters.lock().remove(&id);
        return Err(AgentError::invalid("language", e));
    }
    drop(slot);
    Ok(ctx.info())
}

/// The created contexts, oldest first.
pub(crate) fn list(agent: &Agent) -> Vec<ContextInfo> {
    let mut all: Vec<ContextInfo> = agent
        .interpreters
        .lock()
        .values()
        .filter(|c| c.id != DEFAULT_CONTEXT_ID)
        .map(|c| c.info())
        .collect();
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    all
}

/// One context.
pub(crate) fn get(agent: &Agent, id: &str) -> Result<ContextInfo, AgentError> {
    Ok(agent.interpreters.get_or_404(id)?.info())
}

/// Deletes a context and kills its worker.
pub(crate) fn delete(agent: &Agent, id: &str) -> Result<(), AgentError> {
    if id == DEFAULT_CONTEXT_ID {
        return Err(AgentError::invalid(
            "contextId",
            "Cannot delete default context",
        ));
    }
    let ctx = agent
        .interpreters
        .lock()
        .remove(id)
        .ok_or_else(|| AgentError::ContextNotFound(id.to_owned()))?;
    ctx.killed.store(true, Ordering::SeqCst);
    if let Some(handle) = ctx.current_handle() {
        handle.kill();
    }
    Ok(())
}

/// Interrupts the running execution, if any.
pub(crate) fn interrupt(agent: &Agent, id: &str) -> Result<bool, AgentError> {
    let ctx = agent.interpreters.get_or_404(id)?;
    if !ctx.running.load(Ordering::SeqCst) {
        return Ok(false);
    }
    let Some(handle) = ctx.current_handle() else {
        return Ok(false);
    };
    ctx.interrupted.store(true, Ordering::SeqCst);
    handle.interrupt();
    Ok(true)
}

/// Kills the context's worker (ending a running execution) and starts a fresh one.
pub(crate) async fn restart(agent: &Arc<Agent>, id: &str) -> Result<ContextInfo, AgentError> {
    let ctx = agent.interpreters.get_or_404(id)?;
    if let Some(handle) = ctx.current_handle() {
        if ctx.running.load(Ordering::SeqCst) {
            ctx.killed.store(true, Ordering::SeqCst);
        }
        handle.kill();
    }
    let mut slot = ctx.slot.lock().await;
    ctx.killed.store(false, Ordering::SeqCst);
    ctx.worker_gone(&mut slot);
    ctx.ensure_worker(agent, &mut slot)
        .await
        .map_err(|e| AgentError::Conflict(format!("the context could not restart: {e}")))?;
    drop(slot);
    Ok(ctx.info())
}

/// The last `limit` executions, newest last.
pub(crate) fn history(
    agent: &Agent,
    id: &str,
    limit: Option<usize>,
) -> Result<Vec<HistoryEntry>, AgentError> {
    let ctx = agent.interpreters.get_or_404(id)?;
    Ok(ctx.history.newest(limit))
}

pub(crate) use execute::{execute, validate_execute};
