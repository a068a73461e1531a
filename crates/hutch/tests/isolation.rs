//! What code inside a session can see and do: it must not reach the host or other sessions.
//! Each test tries to break one isolation promise through the public API.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use common::{TestServer, can_run_sandboxes, session, sh};

#[tokio::test]
async fn a_session_has_its_own_pid_namespace_hostname_and_only_loopback() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let ps = sh(&client, &s, "ps -e -o pid=,comm=").await;
    let procs: Vec<&str> = ps.stdout.lines().map(str::trim).collect();
    assert!(
        procs.contains(&"1 hutch-agent"),
        "the agent is PID 1: {procs:?}"
    );
    assert!(
        procs.len() <= 4,
        "only the agent, the shell and ps are visible: {procs:?}"
    );

    let hostname = sh(&client, &s, "hostname").await.stdout;
    assert_eq!(hostname.trim(), &s.session_id.simple().to_string()[..12]);

    let interfaces = sh(
        &client,
        &s,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await
    .stdout;
    assert_eq!(interfaces.trim(), "lo");
    let out = sh(
        &client,
        &s,
        "bash -c 'exec 3<>/dev/tcp/10.0.2.2/53' 2>&1; bash -c 'exec 3<>/dev/tcp/1.1.1.1/53' 2>&1",
    )
    .await;
    assert_eq!(
        out.stdout
            .matches("connect: Network is unreachable")
            .count(),
        2,
        "no route out of the session: {out:?}"
    );
}

#[tokio::test]
async fn root_inside_is_an_unprivileged_user_outside() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let id = sh(&client, &s, "id -u").await.stdout;
    assert_eq!(id.trim(), "0");
    let map = sh(&client, &s, "cat /proc/self/uid_map").await.stdout;
    let fields: Vec<u64> = map.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields[0], 0, "root inside…");
    assert!(
        fields[1] >= 100_000,
        "…is a high, unprivileged uid outside: {map}"
    );
    let view = common::host_view(&client, &s).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", view.agent_pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        !uid_line.contains("\t0\t"),
        "the agent runs as a non-root host uid: {uid_line}"
    );

    // Root inside has no power over the host's kernel or mounts.
    let mount = sh(&client, &s, "mount -t tmpfs none /mnt 2>&1; echo rc=$?")
        .await
        .stdout;
    assert!(
        mount.contains("rc=") && !mount.contains("rc=0"),
        "mount is refused: {mount}"
    );
    let unshare = sh(&client, &s, "unshare -U true 2>&1; echo rc=$?")
        .await
        .stdout;
    assert!(
        !unshare.contains("rc=0"),
        "new namespaces are refused: {unshare}"
    );
    // No device node can be made (sessions have no `devices` cgroup of their own: a user
    // namespace's root has no CAP_MKNOD over the host's devices), not even in a tmpfs.
    let mknod = sh(
        &client,
        &s,
        "for d in /tmp /dev/shm /workspace; do mknod $d/hd b 8 0 2>&1; echo rc=$?; mknod $d/mem c 1 1 2>&1; echo rc=$?; done",
    )
    .await
    .stdout;
    assert_eq!(mknod.matches("rc=").count(), 6, "{mknod}");
    assert!(!mknod.contains("rc=0"), "mknod is refused: {mknod}");
    let caps = sh(&client, &s, "grep CapBnd /proc/self/status")
        .await
        .stdout;
    let bound = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(
        bound & (1 << 21),
        0,
        "no CAP_SYS_ADMIN in the bounding set: {caps}"
    );
    let seccomp = sh(&client, &s, "grep Seccomp: /proc/self/status")
        .await
        .stdout;
    assert!(
        seccomp.contains('2'),
        "commands run under a seccomp filter: {seccomp}"
    );
    let nnp = sh(&client, &s, "grep NoNewPrivs /proc/self/status")
        .await
        .stdout;
    assert!(nnp.contains('1'), "{nnp}");
}

#[tokio::test]
async fn host_secrets_and_the_data_dir_are_invisible() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let listing = sh(&client, &s, "ls -A /root /home; echo ---; ls /etc")
        .await
        .stdout;
    let (homes, etc) = listing.split_once("---").unwrap();
    assert!(
        homes
            .trim()
            .lines()
            .all(|l| l.ends_with(':') || l.is_empty()),
        "empty homes: {homes}"
    );
    for secret in ["shadow", "gshadow", "ssh", "machine-id", "sudoers"] {
        assert!(
            !etc.lines().any(|l| l.trim() == secret),
            "/etc/{secret} must not be visible"
        );
    }
    let passwd = sh(&client, &s, "cat /etc/passwd").await.stdout;
    assert!(!passwd.contains("/home/"), "no host users: {passwd}");

    let data_dir = server.data_dir().display().to_string();
    let probe = sh(
        &client,
        &s,
        &format!("ls {data_dir} 2>&1; cat /proc/1/root/etc/shadow 2>&1; ls /proc/1/fd 2>&1"),
    )
    .await;
    assert!(
        probe.stdout.contains("No such file"),
        "the data dir does not exist inside: {probe:?}"
    );
    assert!(!probe.stdout.contains("root:"), "{probe:?}");
    assert!(
        probe.stdout.contains("Permission denied"),
        "the agent's descriptors are out of reach: {probe:?}"
    );

    let kernel = sh(
        &client,
        &s,
        "head -c 16 /proc/kcore | wc -c; cat /proc/keys | wc -c",
    )
    .await
    .stdout;
    assert_eq!(
        kernel.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "masked kernel files read empty"
    );
}

#[tokio::test]
async fn writes_to_system_dirs_stay_in_the_session() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let a = session(&client).await;
    let b = session(&client).await;

    let marker = format!("hutch-probe-{}", a.session_id.simple());
    let out = sh(
        &client,
        &a,
        &format!("echo x > /usr/{marker} 2>&1; echo rc=$?; echo secret > /workspace/{marker}"),
    )
    .await;
    assert!(out.stdout.contains("rc="), "{out:?}");
    assert!(
        !std::path::Path::new("/usr").join(&marker).exists(),
        "the host's /usr is untouched"
    );

    let seen_by_b = sh(
        &client,
        &b,
        &format!("ls /usr/{marker} /workspace/{marker} /tmp 2>&1"),
    )
    .await
    .stdout;
    assert!(
        seen_by_b.matches("No such file").count() == 2,
        "b sees nothing of a: {seen_by_b}"
    );
    let seen_by_a = sh(&client, &a, &format!("cat /workspace/{marker}"))
        .await
        .stdout;
    assert_eq!(seen_by_a.trim(), "secret");
}
