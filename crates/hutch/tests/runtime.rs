//! The linux runtime on its own, without the HTTP server: the warm pool, building on demand,
//! the agent's socket, teardown and sweeping. Needs root.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use hutch_sandbox::linux::{AgentProgram, LinuxConfig, LinuxRuntime};
use hutch_sandbox::{OciImage, Runtime, SandboxError, SandboxImage, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The lean agent built beside `hutch`.
fn lean_agent() -> AgentProgram {
    AgentProgram::lean(PathBuf::from(env!("CARGO_BIN_EXE_hutch-agent")))
}

fn runtime(warm_pool: usize) -> (LinuxRuntime, tempfile::TempDir) {
    runtime_with(warm_pool, lean_agent())
}

fn runtime_with(warm_pool: usize, agent: AgentProgram) -> (LinuxRuntime, tempfile::TempDir) {
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
    config.agent = agent;
    config.warm_pool = warm_pool;
    let runtime = LinuxRuntime::new(config).unwrap();
    (runtime, data)
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        id: uuid::Uuid::now_v7(),
        hostname: "rt-test".into(),
        image: SandboxImage::Default,
        resources: hutch_api::Resources::default(),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        network: None,
    }
}

/// Posts a command to the sandbox's agent over its unix socket, speaking HTTP/1.1 by hand.
async fn run(runtime: &LinuxRuntime, id: uuid::Uuid, command: &str) -> serde_json::Value {
    let body = serde_json::json!({ "command": command }).to_string();
    let mut stream = runtime.connect(id).await.unwrap();
    let request = format!(
        "POST /commands HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[tokio::test]
async fn pooled_and_on_demand_sandboxes_run_commands_and_leave_nothing() {
    if !common::can_run_sandboxes() {
        return;
    }
    // Both agent programs: `hutch agent`, and the lean `hutch-agent`.
    let hutch = AgentProgram::hutch(PathBuf::from(env!("CARGO_BIN_EXE_hutch")));
    for (warm_pool, agent, cmdline) in [
        (0, hutch.clone(), "hutch agent"),
        (2, hutch, "hutch agent"),
        (0, lean_agent(), "hutch-agent"),
        (2, lean_agent(), "hutch-agent"),
    ] {
        let (runtime, data) = runtime_with(warm_pool, agent);
        runtime.start_pool();
        let spec = spec();
        let record = runtime.create(&spec).await.unwrap();
        assert_eq!(record.id, spec.id);

        let out = run(
            &runtime,
            spec.id,
            "echo $GREETING; hostname; tr '\\0' ' ' < /proc/1/cmdline",
        )
        .await;
        assert_eq!(
            out["stdout"],
            format!("hi\nrt-test\n{cmdline} "),
            "the claim's environment and host name reach commands; PID 1 is the agent"
        );

        let sandbox_dir = data
            .path()
            .join("sandboxes")
            .join(record.sandbox_id.to_string());
        assert!(sandbox_dir.exists());
        runtime.destroy(&record).await.unwrap();
        assert!(!sandbox_dir.exists());
        assert!(matches!(
            runtime.connect(spec.id).await,
            Err(SandboxError::Gone(_))
        ));
        runtime
            .destroy(&record)
            .await
            .expect("destroying twice is fine");
        assert!(
            runtime.sweep(&HashSet::new()).await.unwrap().is_empty(),
            "nothing unaccounted for"
        );
        runtime.shutdown(true).await;
    }
}

fn run_ok(command: &mut std::process::Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}: {status}");
}

/// An OCI image of `count` layers unpacked by hand under `dir`, owned by the sandbox's root:
/// the bottom layer holds a static busybox (`/bin/sh`), layer `i` a file `/layers/<i>`, and the
/// top layer deletes the file of layer 0 with a whiteout (a 0/0 character device).
fn layered_image(dir: &std::path::Path, count: usize) -> OciImage {
    use std::os::unix::fs::PermissionsExt;
    let busybox = std::path::Path::new("/bin/busybox");
    let mut layers = Vec::new();
    for i in 0..count {
        // Long directory names: the option string of so many layers would not fit in a page.
        let root = dir.join(format!("layer-{i:04}-{}", "x".repeat(60)));
        std::fs::create_dir_all(root.join("layers")).unwrap();
        std::fs::write(
            root.join("layers").join(i.to_string()),
            format!("layer {i}\n"),
        )
        .unwrap();
        if i == 0 {
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
            std::fs::set_permissions(
                root.join("bin/busybox"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            for applet in ["sh", "cat", "ls", "id", "pwd"] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        if i == count - 1 {
            run_ok(
                std::process::Command::new("mknod")
                    .arg(root.join("layers/0"))
                    .args(["c", "0", "0"]),
            );
        }
        run_ok(
            std::process::Command::new("chown")
                .args(["-R", "1000000000:1000000000"])
                .arg(&root),
        );
        layers.push(root);
    }
    layers.reverse();
    OciImage {
        key: format!("sha256:test-{count}"),
        name: format!("layered:{count}"),
        layers,
        env: vec!["PATH=/bin".into(), "FROM_IMAGE=yes".into()],
        working_dir: None,
        user: None,
        hold: None,
        warm: true,
    }
}

#[tokio::test]
async fn an_oci_image_of_many_layers_is_the_whole_root() {
    if !common::can_run_sandboxes() || !std::path::Path::new("/bin/busybox").exists() {
        return;
    }
    let (runtime, data) = runtime(0);
    let image = layered_image(&data.path().join("layers"), 120);
    let spec = SandboxSpec {
        image: SandboxImage::Oci(image),
        ..spec()
    };
    runtime.create(&spec).await.unwrap();

    let out = run(
        &runtime,
        spec.id,
        "cat /layers/1 /layers/119; ls /layers | wc -l; ls /layers/0 2>&1; echo $FROM_IMAGE $GREETING; pwd; ls -d /proc/1 /dev/null /workspace /tmp /etc/hosts; ls /usr 2>&1",
    )
    .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(out["exitCode"], 1, "{out}");
    assert!(stdout.starts_with("layer 1\nlayer 119\n"), "{stdout}");
    assert!(
        stdout.contains("\n119\n"),
        "layer 0's file is whited out: {stdout}"
    );
    assert!(
        stdout.contains("yes hi\n/workspace\n"),
        "image env, session env, default cwd: {stdout}"
    );
    assert!(stdout.contains("/etc/hosts"), "{stdout}");
    assert!(!stdout.contains("bin\nlib"), "no host /usr: {stdout}");
    runtime.shutdown(true).await;
}

#[test]
fn the_agent_refuses_to_run_outside_a_sandbox() {
    // Run by hand on the host, `hutch agent` (or `hutch-agent`) must not remount anything: it
    // is not PID 1 of a new user namespace, so it stops before touching a mount.
    for (program, args) in [
        (env!("CARGO_BIN_EXE_hutch"), &["agent"][..]),
        (env!("CARGO_BIN_EXE_hutch-agent"), &[][..]),
    ] {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(70), "{program}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not started by the hutch runtime"),
            "{program}"
        );
    }
}

#[test]
fn the_lean_agent_answers_the_build_id_of_hutch() {
    // `hutch serve` runs the `hutch-agent` beside it only when it answers the same build id:
    // cargo builds both from one source tree, so they match.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hutch-agent"))
        .arg("--build-id")
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(id.starts_with(env!("CARGO_PKG_VERSION")), "{id}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hutch-agent"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Two runtimes (as two servers would) on one data directory, each building sandboxes at
/// the same time: no two sandboxes get one host id range, each sandbox answers through the
/// runtime that did not build it, and is torn down by it, which frees its range for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_on_one_data_dir_never_give_one_id_range_twice() {
    use std::os::unix::fs::MetadataExt;
    if !common::can_run_sandboxes() {
        return;
    }
    const EACH: usize = 4;
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let start = || {
        let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
        config.agent = lean_agent();
        config.warm_pool = 0;
        LinuxRuntime::new(config).unwrap()
    };
    let runtimes = [start(), start()];
    let mut creating = tokio::task::JoinSet::new();
    for (which, runtime) in runtimes.iter().enumerate() {
        for _ in 0..EACH {
            let runtime = runtime.clone();
            creating.spawn(async move { (which, runtime.create(&spec()).await.unwrap()) });
        }
    }
    let created = creating.join_all().await;
    let leases = data.path().join("leases/uids");
    let mut owners = HashSet::new();
    for (_, record) in &created {
        for runtime in &runtimes {
            assert_eq!(run(runtime, record.id, "echo up").await["stdout"], "up\n");
        }
        let dir = data
            .path()
            .join("sandboxes")
            .join(record.sandbox_id.to_string());
        let owner = std::fs::metadata(&dir).unwrap().uid();
        assert!(owners.insert(owner), "range {owner} given twice");
        let slot =
            (owner - hutch_sandbox::linux::DEFAULT_UID_BASE) / hutch_sandbox::linux::UID_COUNT - 1;
        assert_eq!(
            std::fs::read_to_string(leases.join(slot.to_string())).unwrap(),
            record.sandbox_id.to_string(),
            "the slot file names the sandbox"
        );
    }
    assert_eq!(owners.len(), 2 * EACH);
    for (which, record) in &created {
        runtimes[1 - which].destroy(record).await.unwrap();
        for runtime in &runtimes {
            assert!(matches!(
                runtime.connect(record.id).await,
                Err(SandboxError::Gone(_))
            ));
        }
    }
    assert_eq!(
        std::fs::read_dir(data.path().join("sessions"))
            .unwrap()
            .count(),
        0,
        "no session link is left"
    );
    let left: Vec<_> = std::fs::read_dir(&leases).unwrap().flatten().collect();
    assert!(left.is_empty(), "every range freed: {left:?}");
    for runtime in &runtimes {
        assert!(runtime.sweep(&HashSet::new()).await.unwrap().is_empty());
        runtime.shutdown(true).await;
    }
}

/// The start-up sweep of a second runtime on one data directory leaves alone everything a
/// live runtime keeps there: its sessions' sandboxes and its warm pool.
/// A sweep run while the runtime serves (as live replicas run one after another server
/// process died) spares the runtime's own sandboxes, though told of no session: one whose
/// session the caller has not recorded yet (a create that just finished) keeps running. Its
/// runtime names itself, and no process on the data directory has died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_while_serving_spares_the_runtimes_own_sandboxes() {
    if !common::can_run_sandboxes() {
        return;
    }
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
    config.agent = lean_agent();
    config.warm_pool = 0;
    let runtime = LinuxRuntime::new(config).unwrap();
    assert!(runtime.process_id().is_some());
    assert!(runtime.dead_processes().is_empty());
    let session = runtime.create(&spec()).await.unwrap();
    assert!(
        runtime.sweep(&HashSet::new()).await.unwrap().is_empty(),
        "nothing of its own is swept"
    );
    assert_eq!(run(&runtime, session.id, "echo up").await["stdout"], "up\n");
    runtime.shutdown(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_leaves_alone_what_another_live_runtime_keeps() {
    if !common::can_run_sandboxes() {
        return;
    }
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let start = |warm_pool| {
        let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
        config.agent = lean_agent();
        config.warm_pool = warm_pool;
        LinuxRuntime::new(config).unwrap()
    };
    let count = |sub: &str| std::fs::read_dir(data.path().join(sub)).unwrap().count();
    let a = start(1);
    a.start_pool();
    let session = a.create(&spec()).await.unwrap();
    // The pool refills in the background: wait (bounded) for its sandbox.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count("sandboxes") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never refilled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let b = start(0);
    assert!(
        b.sweep(&HashSet::new()).await.unwrap().is_empty(),
        "nothing of a live runtime is swept"
    );
    assert_eq!(count("sandboxes"), 2);
    assert_eq!(run(&a, session.id, "echo up").await["stdout"], "up\n");
    a.shutdown(true).await;
    assert!(b.sweep(&HashSet::new()).await.unwrap().is_empty());
    assert_eq!(count("sandboxes"), 0, "a's shutdown removed its sandboxes");
    assert_eq!(count("leases/uids"), 0, "and freed their ranges");
    b.shutdown(true).await;
}
